"""Inference: padding/cropping, known-region clamp, TTA, AMP, tiling equivalence on real photos (a toy
net, a toy GroupNorm net and the real AlphaGAN with BatchNorm and GroupNorm), trimap-free two-pass,
folder prediction (resumable, failures reported), model loading."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from mattingkit.errors import RunStateError, UsageError
from mattingkit.infer import (
    WINDOW_FLOOR,
    InferenceInputError,
    infer_settings,
    padding,
    predict,
    predict_folder,
    predict_passes,
    resolve_context,
)
from mattingkit.io import read_alpha, read_image, read_trimap, to_uint8, write_png
from mattingkit.tiling import TilingError, TilingInfo, blend_width, core_window, global_modules, tile_spans


# --------------------------------------------------------------------------------------------
# Small real models
# --------------------------------------------------------------------------------------------
class SmallConvNet(nn.Module):
    """A randomly initialised (seeded) fully-convolutional net: 3x3 convs, one stride-2 stage and a
    bilinear upsample, ReLU, sigmoid. Local receptive field (radius measured in the test)."""

    def __init__(self, seed: int = 0, width: int = 16):
        super().__init__()
        self.c1 = nn.Conv2d(4, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(width, width, 3, padding=1)
        self.c4 = nn.Conv2d(width, 1, 3, padding=1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in (self.c1, self.c2, self.c3, self.c4):
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, image, trimap):
        self.calls += 1
        self.shapes.append(tuple(image.shape))
        x = torch.cat([image * 4 - 2, trimap * 4 - 2], 1)
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return {"alpha": torch.sigmoid(4 * self.c4(x))}


class ChannelMean(nn.Module):
    """Pointwise: alpha = mean colour. Any crop/pad offset shows up as a mismatch."""

    def forward(self, image, trimap):
        return {"alpha": image.mean(1, keepdim=True)}


class ModeRecorder(nn.Module):
    """Records whether it ran in training mode and with gradients enabled."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, image, trimap):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return {"alpha": torch.sigmoid(self.conv(image))}


def receptive_radius(model: nn.Module, size: int = 128) -> int:
    """Largest |offset| of an input pixel with a non-zero gradient on a centre output pixel."""
    g = torch.Generator().manual_seed(1)
    r = 0
    for cy, cx in [(64, 64), (65, 63), (63, 66)]:
        image = torch.rand((1, 3, size, size), generator=g).requires_grad_(True)
        trimap = torch.full((1, 1, size, size), 0.5, requires_grad=True)
        out = model(image, trimap)["alpha"]
        out[0, 0, cy, cx].backward()
        grad = image.grad.abs().sum(1)[0] + trimap.grad.abs()[0, 0]
        ys, xs = torch.nonzero(grad > 0, as_tuple=True)
        r = max(r, int((ys - cy).abs().max()), int((xs - cx).abs().max()))
    return r


def _rng_image(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Padding, cropping, clamping, TTA, AMP, modes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(1, 1), (33, 47), (64, 64), (5, 130), (97, 31)])
def test_output_is_exact_input_size_and_pointwise_aligned(h, w):
    img = _rng_image(h, w)
    a = predict(ChannelMean(), img)
    assert a.shape == (h, w) and a.dtype == np.float32
    np.testing.assert_allclose(a, img.mean(2), atol=1e-6)


def test_model_sees_multiples_of_32_with_margin():
    net = SmallConvNet()
    predict(net, _rng_image(33, 47), pad_margin=16)
    (shape,) = net.shapes
    assert shape[2] % 32 == 0 and shape[3] % 32 == 0
    assert shape[2] >= 33 + 32 and shape[3] >= 47 + 32
    assert padding(33, 47, 16) == (16, shape[2] - 33 - 16, 16, shape[3] - 47 - 16)


def test_known_regions_clamped_unknown_untouched():
    img = _rng_image(40, 50, seed=3)
    tri = np.full((40, 50), 0.5, np.float32)
    tri[:10] = 0
    tri[-10:] = 1
    a = predict(ChannelMean(), img, tri)
    assert (a[:10] == 0).all() and (a[-10:] == 1).all()
    np.testing.assert_allclose(a[10:-10], img[10:-10].mean(2), atol=1e-6)


def test_tta_flip_is_mean_of_prediction_and_flipped_prediction():
    net = SmallConvNet(seed=5)
    img = _rng_image(45, 70, seed=2)
    plain = predict(net, img)
    flipped = predict(net, img[:, ::-1].copy())[:, ::-1]
    assert np.abs(plain - flipped).max() > 1e-3  # the net is not flip-symmetric: the test can fail
    tta = predict(net, img, tta_flip=True)
    np.testing.assert_allclose(tta, 0.5 * (plain + flipped), atol=1e-5)


def test_amp_bf16_runs_on_cpu_and_is_close():
    net = SmallConvNet(seed=1)
    img = _rng_image(64, 64)
    full = predict(net, img, amp="off")
    half = predict(net, img, amp="bf16")
    assert half.dtype == np.float32
    assert np.abs(full - half).max() < 0.05
    assert predict(net, img, amp="auto").tobytes() == full.tobytes()  # auto = off on CPU


def test_eval_mode_and_no_grad_inside_mode_restored_after():
    m = ModeRecorder().train()
    predict(m, _rng_image(20, 20))
    assert m.seen == [(False, False)]
    assert m.training


def test_input_errors_are_clear():
    net = ChannelMean()
    with pytest.raises(InferenceInputError, match="uint8"):
        predict(net, np.zeros((8, 8, 3), np.int16))
    with pytest.raises(InferenceInputError, match="0..255"):
        predict(net, np.full((8, 8, 3), 200.0, np.float32))
    with pytest.raises(InferenceInputError, match="HxWx3"):
        predict(net, np.zeros((8, 8), np.float32))
    with pytest.raises(InferenceInputError, match="does not match"):
        predict(net, np.zeros((8, 8, 3), np.float32), np.zeros((8, 9), np.float32))
    with pytest.raises(InferenceInputError, match="0, 0.5 or 1"):
        predict(net, np.zeros((8, 8, 3), np.float32), np.full((8, 8), 0.3, np.float32))
    with pytest.raises(UsageError, match="amp"):
        predict(net, np.zeros((8, 8, 3), np.float32), amp="fp8")


def test_wrong_model_output_shape_is_an_error():
    class Bad(nn.Module):
        def forward(self, image, trimap):
            return {"alpha": image[:, :1, ::2, ::2]}

    with pytest.raises(RuntimeError, match="shape"):
        predict(Bad(), _rng_image(32, 32))


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------
def test_core_window_never_zero_and_neighbours_sum_to_one():
    for length, tile, context in [(640, 384, 64), (1664, 1280, 544), (4160, 1792, 544), (192, 96, 32)]:
        spans = tile_spans(length, tile, context)
        blend = blend_width(context)
        total = np.zeros(length)
        for sp in spans:
            w = core_window(sp, length, blend)
            assert w.min() >= WINDOW_FLOOR * (1 - 1e-6) and w.max() <= 1.0
            assert len(w) == sp.stop - sp.start
            core = w[sp.core_start - sp.start:sp.core_stop - sp.start]
            assert core.min() >= 0.5  # the owner has weight >= 1/2 on its whole core
            total[sp.start:sp.stop] += w - WINDOW_FLOOR
        # the raised cosines of two neighbours add up to one across each boundary (minus the floors)
        np.testing.assert_allclose(total, 1 - WINDOW_FLOOR, atol=1e-5)


def test_tile_spans_partition_on_the_grid_and_hold_their_context():
    for length, tile, context in [(2048, 1024, 128), (4160, 1792, 544), (576, 256, 64), (256, 256, 64),
                                  (1664, 1472, 544), (4160, 2048, 0)]:
        spans = tile_spans(length, tile, context)
        assert spans[0].core_start == 0 and spans[-1].core_stop == length
        for a, b in zip(spans, spans[1:]):
            assert a.core_stop == b.core_start                       # cores partition the axis
        for sp in spans:
            assert sp.start % 32 == 0 and sp.core_start % 32 == 0 and sp.stop - sp.start <= tile
            assert sp.start == max(0, sp.core_start - context) and sp.stop == min(length, sp.core_stop + context)
    assert len(tile_spans(4160, 1792, 544)) == 5
    with pytest.raises(TilingError, match="cannot hold its context"):
        tile_spans(2048, 1024, 512)


def test_tiling_is_used_above_the_budget_and_all_known_tiles_are_skipped():
    net = SmallConvNet()
    img = _rng_image(300, 300)
    tri = np.zeros((300, 300), np.float32)
    tri[140:160, 140:160] = 0.5         # unknown only in the centre
    tri[:, 200:] = 1.0
    info = TilingInfo()
    a = predict(net, img, tri, pixel_budget=10_000, tile_size=128, tile_overlap=32, tiling_info=info)
    n_tiles = len(tile_spans(384, 128, 32)) ** 2
    assert info.tiles == n_tiles and 0 < net.calls == info.tiles_run < n_tiles
    assert info.stats_passes == 0 and info.global_ops == 0  # no global op: no statistics pass
    assert (a[:, 200:] == 1).all() and (a[:140, :200] == 0).all()
    net.calls = 0
    full = predict(net, img, tri)
    assert net.calls == 1
    assert np.abs(full - a).max() <= 1 / 255


def _real_models_available() -> bool:
    try:
        from mattingkit.models import build_model  # noqa: F401
    except ImportError:
        return False
    return True


def test_tile_context_auto_and_impossible_tiles():
    assert resolve_context(SmallConvNet(), "auto") == 128           # no declaration: DEFAULT_CONTEXT
    assert resolve_context(SmallConvNet(), 40) == 64                 # rounded up to the 32-grid
    with pytest.raises(InferenceInputError, match="cannot hold"):
        predict(SmallConvNet(), _rng_image(100, 100), pixel_budget=1000, tile_size=64, tile_overlap=32)
    with pytest.raises(InferenceInputError, match="'auto'"):
        predict(SmallConvNet(), _rng_image(10, 10), tile_overlap="big")
    if _real_models_available():
        from mattingkit.config import ModelConfig
        from mattingkit.models import build_model

        for os_ in (8, 16):   # widest ASPP tap = 288 px at both output strides, + 256 px margin
            m = build_model(ModelConfig(backbone="resnet18", pretrained=False, output_stride=os_))
            assert m.infer_geometry.tile_context == 544 and resolve_context(m, "auto") == 544
        assert resolve_context(build_model(ModelConfig(name="dim", backbone="vgg16_bn", pretrained=False)),
                               "auto") == 224


@pytest.mark.shared
def test_tiled_equals_untiled_on_real_photos(alphamatting_dev):
    """|tiled - untiled| <= 1/255 when the receptive-field radius <= context - blend (the documented
    guarantee), with and without trimap, with TTA; and visibly worse without context (the test can fail)."""
    net = SmallConvNet(seed=0)
    radius = receptive_radius(net)
    context = 64
    assert 2 <= radius <= context - blend_width(context), radius
    worst = 0.0
    for name in ["GT01", "GT03", "GT05"]:
        img = read_image(alphamatting_dev / "image" / f"{name}.png")
        tri = read_trimap(alphamatting_dev / "trimap" / f"{name}.png")
        for t in (None, tri):
            untiled = predict(net, img, t)
            info = TilingInfo()
            tiled = predict(net, img, t, pixel_budget=100_000, tile_size=384, tile_overlap=context,
                            tiling_info=info)
            assert info.tiles >= 6
            assert tiled.shape == untiled.shape == img.shape[:2]
            assert untiled.std() > 0.02  # a real, non-constant prediction
            worst = max(worst, float(np.abs(tiled - untiled).max()))
        tta_u = predict(net, img, tri, tta_flip=True)
        tta_t = predict(net, img, tri, tta_flip=True, pixel_budget=100_000, tile_size=384, tile_overlap=context)
        worst = max(worst, float(np.abs(tta_t - tta_u).max()))
    assert worst <= 1 / 255, worst
    img = read_image(alphamatting_dev / "image" / "GT01.png")
    seams = np.abs(predict(net, img, pixel_budget=100_000, tile_size=256, tile_overlap=0) - predict(net, img))
    assert seams.max() > 1 / 255


class ToyGroupNormNet(nn.Module):
    """Seeded conv-GroupNorm-ReLU stack (6 GroupNorms, one stride-2 stage) with a global-average-pooled
    context branch (like ASPP image pooling): small receptive field, but 7 global operations."""

    def __init__(self, depth: int = 6, width: int = 16, seed: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 4
        for i in range(depth):
            layers += [nn.Conv2d(cin, width, 3, padding=1, stride=2 if i == 2 else 1), nn.GroupNorm(4, width),
                       nn.ReLU(inplace=True)]
            cin = width
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(2 * width, 1, 3, padding=1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, image, trimap):
        x = self.body(torch.cat([image, trimap], 1))
        x = torch.cat([x, self.pool(x).expand_as(x)], 1)
        return {"alpha": torch.sigmoid(nn.functional.interpolate(self.head(x), scale_factor=2, mode="bilinear"))}


@pytest.mark.shared
def test_whole_image_statistics_make_a_groupnorm_net_tile_exactly(alphamatting_dev):
    """GroupNorm statistics and global pooling see the whole image through the injected statistics:
    exact after one recording pass per global op; tile-local statistics (0 passes) or too few passes
    are far off, and a single tile covering the image is bit-identical to the untiled run."""
    net = ToyGroupNormNet().eval()
    assert len(global_modules(net)) == 7
    crop = (slice(100, 400), slice(150, 650))   # 300x500 px of the photo around the subject
    img = read_image(alphamatting_dev / "image" / "GT02.png")[crop]
    tri = read_trimap(alphamatting_dev / "trimap" / "GT02.png")[crop]
    unknown = tri == 0.5
    untiled = predict(net, img, tri)
    assert untiled[unknown].std() > 0.02 and unknown.mean() > 0.1
    kw = dict(pixel_budget=10_000, tile_size=256, tile_overlap=64)
    errors = {}
    for passes in (0, 3, "auto"):
        info = TilingInfo()
        tiled = predict(net, img, tri, tile_stats_passes=passes, tiling_info=info, **kw)
        errors[passes] = float(np.abs(tiled - untiled)[unknown].max())
        assert info.stats_passes == (7 if passes == "auto" else passes) and info.tiles >= 6
        assert info.exact_stats == (passes == "auto") and info.exact_ops == info.stats_passes
    assert errors["auto"] <= 1 / 255, errors
    assert errors[0] > 0.05 and errors[3] > 0.02, errors
    one = predict(net, img, tri, pixel_budget=1000, tile_size=1024, tile_overlap=64)
    np.testing.assert_array_equal(one, untiled)


def _photo_strips(root: Path, names=("GT02", "GT04"), top: int = 150, height: int = 256):
    """Rows ``top:top+height`` of real photos side by side (1600 px wide): wide enough to need several
    tiles with AlphaGAN's 544 px context, without resampling the photos."""
    imgs = [read_image(root / "image" / f"{n}.png")[top:top + height] for n in names]
    tris = [read_trimap(root / "trimap" / f"{n}.png")[top:top + height] for n in names]
    return np.ascontiguousarray(np.concatenate(imgs, 1)), np.ascontiguousarray(np.concatenate(tris, 1))


def _alphagan(config: str, *overrides: str):
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    torch.manual_seed(0)  # build_model initialises from torch's default generator
    return build_model(load_config(config, ["model.pretrained=false", *overrides]).model).eval()


@pytest.mark.shared
@pytest.mark.skipif(not _real_models_available(), reason="mattingkit.models not available yet")
def test_real_alphagan_batchnorm_tiles_like_untiled(alphamatting_dev):
    """The real AlphaGAN generator (default config with resnet18: OS8, BatchNorm, random init) on real
    photos: with the model's own context (tile_overlap="auto", 544 px) and the injected whole-image
    ASPP image pooling, max |tiled - untiled| <= 1/255 over the unknown region; without the injection
    (tile_stats_passes=0) it is far off."""
    model = _alphagan("default", "model.backbone=resnet18")
    img, tri = _photo_strips(alphamatting_dev)
    unknown = tri == 0.5
    untiled = predict(model, img, tri)
    assert untiled[unknown].std() > 0.1
    kw = dict(pixel_budget=100_000, tile_size=1472)
    info = TilingInfo()
    tiled = predict(model, img, tri, tiling_info=info, **kw)
    assert info.tiles == 2 and info.context == 544 and info.stats_passes == 1 and info.exact_stats
    diff = np.abs(tiled - untiled)[unknown]
    assert diff.max() <= 1 / 255, diff.max()
    assert (tiled[tri == 0] == 0).all() and (tiled[tri == 1] == 1).all()
    local = predict(model, img, tri, tile_stats_passes=0, **kw)
    assert np.abs(local - untiled)[unknown].max() > 0.1


@pytest.mark.shared
@pytest.mark.skipif(not _real_models_available(), reason="mattingkit.models not available yet")
def test_real_alphagan_groupnorm_demo_tiles_like_untiled(alphamatting_dev, capsys):
    """The demo-config AlphaGAN (resnet18, OS16, GroupNorm everywhere: 34 global ops, random init):
    one recording pass per GroupNorm/pooling makes max |tiled - untiled| <= 1/255 on real photos;
    tile-local statistics are far off. (~12 s on 2 idle CPU cores: 34 partial passes over 2 tiles.)"""
    model = _alphagan("demo")
    img, tri = _photo_strips(alphamatting_dev, top=200, height=128)
    unknown = tri == 0.5
    untiled = predict(model, img, tri)
    assert untiled[unknown].std() > 0.1
    kw = dict(pixel_budget=100_000, tile_size=1472)
    info = TilingInfo()
    tiled = predict(model, img, tri, tiling_info=info, **kw)
    assert info.tiles == 2 and info.context == 544 and info.global_ops == 34
    assert info.stats_passes == 34 and info.exact_stats
    diff = np.abs(tiled - untiled)[unknown]
    local = np.abs(predict(model, img, tri, tile_stats_passes=0, **kw) - untiled)[unknown]
    with capsys.disabled():
        print(f"\nAlphaGAN demo (GN) tiled vs untiled, unknown region: exact statistics max {diff.max():.5f}, "
              f"tile-local max {local.max():.3f}")
    assert diff.max() <= 1 / 255, diff.max()
    assert local.max() > 0.1


# --------------------------------------------------------------------------------------------
# Two-pass (trimap-free)
# --------------------------------------------------------------------------------------------
def test_two_pass_uses_trimap_from_coarse_mask():
    trimap_mod = pytest.importorskip("mattingkit.trimap")
    if not hasattr(trimap_mod, "trimap_from_mask"):
        pytest.skip("mattingkit.trimap.trimap_from_mask not available yet")
    from mattingkit.config import TrimapConfig

    img = np.zeros((96, 128, 3), np.float32)
    img[30:70, 40:90] = 1.0        # a bright object: ChannelMean gives a binary coarse alpha
    refine = SmallConvNet(seed=2)
    cfg = TrimapConfig(fg_threshold=0.9, bg_threshold=0.1, mask_band=6)
    out = predict_passes(refine, img, two_pass=True, coarse_model=ChannelMean(), trimap_cfg=cfg)
    np.testing.assert_allclose(out["coarse"], img.mean(2), atol=1e-6)
    expected_tri = trimap_mod.trimap_from_mask(out["coarse"], fg_threshold=0.9, bg_threshold=0.1, band=6)
    np.testing.assert_array_equal(out["trimap"], expected_tri)
    assert (out["trimap"] == 0.5).any() and (out["trimap"] == 1).any() and (out["trimap"] == 0).any()
    # pass 2 == a plain refinement with that trimap
    np.testing.assert_allclose(out["alpha"], predict(refine, img, expected_tri), atol=1e-6)
    assert predict(refine, img, two_pass=True, coarse_model=ChannelMean(), trimap_cfg=cfg).tobytes() == \
        out["alpha"].tobytes()
    with pytest.raises(InferenceInputError, match="trimap-free"):
        predict(refine, img, expected_tri, two_pass=True)


# --------------------------------------------------------------------------------------------
# infer.max_side: the long side the model sees
# --------------------------------------------------------------------------------------------
class _SizeSpy(nn.Module):
    """Alpha = mean colour; records the (padded) input sizes it was given."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, image, trimap):
        self.sizes.append(tuple(image.shape[-2:]))
        return {"alpha": image.mean(1, keepdim=True)}


def test_max_side_predicts_on_a_downscaled_copy_and_returns_the_full_size(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((300, 200, 3)).astype(np.float32)
    tri = np.full((300, 200), 0.5, np.float32)
    tri[:20] = 0
    tri[-20:] = 1
    spy = _SizeSpy()
    a = predict(spy, img, tri, max_side=96, pad_margin=0)
    assert a.shape == (300, 200) and a.dtype == np.float32
    assert spy.sizes == [(96, 64)]                         # the model saw the capped copy, not 300 x 200
    # against an independent resize (PIL: antialiased bilinear down, bilinear up)
    small = np.stack([np.asarray(Image.fromarray(img[..., c]).resize((64, 96), Image.BILINEAR)) for c in range(3)], 2)
    ref = np.asarray(Image.fromarray(small.mean(2)).resize((200, 300), Image.BILINEAR))
    inner = (slice(30, -30), slice(10, -10))                # away from the borders and the known bands
    assert np.abs(a[inner] - ref[inner]).max() < 0.02, np.abs(a[inner] - ref[inner]).max()
    assert (a[:20] == 0).all() and (a[-20:] == 1).all()     # known pixels exact at full size
    # an image already within max_side is predicted as it is; a uint8 trimap takes the same clamp
    img_small = img[:90, :60]
    np.testing.assert_array_equal(predict(spy, img_small, max_side=96), predict(spy, img_small))
    np.testing.assert_array_equal(predict(spy, img, (tri * 255).round().astype(np.uint8), max_side=96, pad_margin=0), a)
    # two passes at max_side: both passes capped, the stages at full size
    spy.sizes.clear()
    out = predict_passes(spy, img, two_pass=True, max_side=96, pad_margin=0)
    assert spy.sizes == [(96, 64), (96, 64)] and {k: v.shape for k, v in out.items()} == \
        {"alpha": (300, 200), "coarse": (300, 200), "trimap": (300, 200)}
    # bad input is refused as without max_side: 0..255 floats, a side that is not a positive integer
    with pytest.raises(InferenceInputError, match=r"\[0, 1\]"):
        predict(spy, img * 255, max_side=96)
    for bad in (0, -5, "96", 96.5, True):
        with pytest.raises(InferenceInputError, match="max_side"):
            predict(spy, img, max_side=bad)
    # the folder path and the producer record carry it
    write_png(tmp_path / "in" / "0001.png", img)
    rep = predict_folder(spy, tmp_path / "in", tmp_path / "out", max_side=96, verbose=False)
    assert read_alpha(tmp_path / "out" / "0001.png").shape == (300, 200), rep
    rec = json.loads((tmp_path / "out" / "_source.json").read_text())
    assert rec["settings"]["max_side"] == 96


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def _make_folder(root: Path, names=("0001", "0010", "abc"), h=40, w=56) -> dict[str, np.ndarray]:
    images = {}
    for i, n in enumerate(names):
        img = _rng_image(h, w + 8 * i, seed=i)
        write_png(root / f"{n}.png", img)
        images[n] = read_image(root / f"{n}.png")
    return images


def test_predict_folder_writes_rounded_pngs_resumes_and_reports_failures(tmp_path, capsys):
    src, out = tmp_path / "images", tmp_path / "out"
    images = _make_folder(src)
    (src / "0005.png").write_bytes((src / "0001.png").read_bytes()[:60])   # truncated
    net = SmallConvNet(seed=3)
    rep = predict_folder(net, src, out, headless=True)
    assert sorted(rep.written) == ["0001", "0010", "abc"] and rep.skipped == []
    assert len(rep.failed) == 1 and "0005.png" in rep.failed[0][0] and "truncated" in rep.failed[0][1]
    assert "FAILED" in capsys.readouterr().out
    for n, img in images.items():
        on_disk = np.asarray(Image.open(out / f"{n}.png"))
        assert on_disk.dtype == np.uint8 and on_disk.shape == img.shape[:2]
        np.testing.assert_array_equal(on_disk, to_uint8(predict(net, img)))
    # resume: a half-finished run left a temp file and lost one output
    (out / "0010.png").unlink()
    (out / ".0010.png.abcd.tmp").write_bytes(b"\x89PNG partial")
    (out / "abc.png").write_bytes(b"\x89PNG\r\n\x1a\n")   # corrupt: does not count as done
    net.calls = 0
    rep2 = predict_folder(net, src, out, headless=True, verbose=False)
    assert rep2.skipped == ["0001"] and sorted(rep2.written) == ["0010", "abc"] and len(rep2.failed) == 1
    assert net.calls == 2
    for n in ("0010", "abc"):
        np.testing.assert_array_equal(to_uint8(read_alpha(out / f"{n}.png")), to_uint8(predict(net, images[n])))


class NeedsLargeInputs(nn.Module):
    """A real failure inside the model: a 64x64 max-pool raises for inputs smaller than 64 px (as with
    pad_margin=0 on tiny images)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, image, trimap):
        context = nn.functional.max_pool2d(image, 64).mean()
        return {"alpha": torch.sigmoid(self.conv(image) + context)}


def test_predict_folder_records_model_errors_and_continues(tmp_path, capsys):
    src, out = tmp_path / "images", tmp_path / "out"
    write_png(src / "a_big.png", _rng_image(70, 90, seed=1))
    write_png(src / "b_tiny.png", _rng_image(20, 30, seed=2))      # padded to 32x32: the pool raises
    write_png(src / "c_big.png", _rng_image(64, 64, seed=3))
    net = NeedsLargeInputs()
    with pytest.raises(RuntimeError):
        predict(net, read_image(src / "b_tiny.png"), pad_margin=0)
    rep = predict_folder(net, src, out, headless=True, pad_margin=0)
    assert rep.written == ["a_big", "c_big"] and not rep.ok
    (name, reason), = rep.failed
    assert name.endswith("b_tiny.png") and reason.startswith("RuntimeError") and len(reason) > 20
    assert not (out / "b_tiny.png").exists() and (out / "c_big.png").exists()
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "b_tiny.png" in printed and "1 failed" in printed
    # the next run retries only the failed file (it fails again; the others are already done)
    rep2 = predict_folder(net, src, out, headless=True, verbose=False, pad_margin=0)
    assert rep2.skipped == ["a_big", "c_big"] and len(rep2.failed) == 1 and rep2.written == []


def test_predict_folder_with_trimaps_and_dataframe_keeps_string_stems(tmp_path):
    src, tris, out = tmp_path / "images", tmp_path / "trimaps", tmp_path / "out"
    images = _make_folder(src, names=("0001", "0002"))
    tri = np.full(images["0001"].shape[:2], 0.5, np.float32)
    tri[:, :10] = 0
    write_png(tris / "0001.png", tri)
    rep = predict_folder(ChannelMean(), src, out, trimap_dir=tris, headless=True, verbose=False)
    assert rep.written == ["0001"] and "no trimap" in rep.failed[0][1]
    assert (read_alpha(out / "0001.png")[:, :10] == 0).all()
    df = pd.DataFrame({"id": ["0002"], "image": [str(src / "0002.png")], "trimap": [""]})
    with pytest.raises(RunStateError, match="trimaps: True -> False"):   # trimap-free into a trimap folder
        predict_folder(ChannelMean(), df, out, headless=True, verbose=False)
    out = tmp_path / "out2"
    rep = predict_folder(ChannelMean(), df, out, headless=True, verbose=False)
    assert rep.written == ["0002"] and (out / "0002.png").exists()
    np.testing.assert_allclose(read_alpha(out / "0002.png"), images["0002"].mean(2), atol=0.5 / 255 + 1e-6)


def test_predict_folder_rgba_cutouts(tmp_path):
    fg_mod = pytest.importorskip("mattingkit.data.foreground")
    if not hasattr(fg_mod, "estimate_foreground"):
        pytest.skip("estimate_foreground not available yet")
    src, out = tmp_path / "images", tmp_path / "out"
    _make_folder(src, names=("0001",))
    rep = predict_folder(ChannelMean(), src, out, write_rgba=True, headless=True, verbose=False)
    assert rep.written == ["0001"]
    rgba = Image.open(out / "rgba" / "0001.png")
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba)[:, :, 3], np.asarray(Image.open(out / "0001.png")))
    # resume: alpha exists, cut-out missing -> only the cut-out is made
    (out / "rgba" / "0001.png").unlink()
    # (another model under the same declared producer: its alpha would differ, so it must not run)
    rep = predict_folder(SmallConvNet(), src, out, write_rgba=True, headless=True, verbose=False, producer=rep.producer)
    assert rep.written == ["0001"] and (out / "rgba" / "0001.png").exists()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "rgba" / "0001.png"))[:, :, 3],
                                  np.asarray(Image.open(out / "0001.png")))


def test_infer_config_drives_predict():
    from mattingkit.config import InferConfig, load_config

    assert infer_settings(load_config("demo")).tile_overlap == "auto"
    assert infer_settings(None) == InferConfig()                  # the defaults live in InferConfig only
    cfg = load_config("demo", ["infer.tile_size=96", "infer.pixel_budget=1000", "infer.tile_overlap=32",
                               "infer.tile_stats_passes=0"])
    s = infer_settings(cfg)
    assert isinstance(s, InferConfig) and s.tile_size == 96 and s.tile_overlap == 32 and s.tile_stats_passes == 0
    net = SmallConvNet()
    predict(net, _rng_image(100, 100), infer_cfg=cfg.infer)   # padded to 192: 4 x 4 tiles of 96 (32-px cores + context)
    assert net.calls == 16 and all(s[2] == 96 and s[3] == 96 for s in net.shapes)
    with pytest.raises(InferenceInputError, match="unknown inference setting"):
        predict(net, _rng_image(8, 8), infer_cfg=cfg, tile_sise=64)
    with pytest.raises(InferenceInputError, match="tile_overlap"):
        infer_settings(cfg, tile_overlap="wide")


def test_predict_folder_takes_defaults_from_infer_cfg(tmp_path):
    from mattingkit.config import InferConfig

    src = tmp_path / "images"
    images = _make_folder(src, names=("0001",), h=100, w=100)
    net = SmallConvNet()
    cfg = InferConfig(tile_size=96, pixel_budget=1000, tile_overlap=32, tta_flip=True)
    rep = predict_folder(net, src, tmp_path / "a", infer_cfg=cfg, headless=True, verbose=False)
    assert rep.written == ["0001"] and net.calls > 2 and {s[2] for s in net.shapes} == {96}
    expected = predict(net, images["0001"], tile_size=96, pixel_budget=1000, tile_overlap=32, tta_flip=True)
    np.testing.assert_array_equal(read_alpha(tmp_path / "a" / "0001.png"), read_alpha(
        write_png(tmp_path / "expected.png", expected)))
    net.shapes.clear()
    predict_folder(net, src, tmp_path / "b", infer_cfg=cfg, tile_size=128, headless=True, verbose=False)
    assert {s[2] for s in net.shapes} == {128}     # explicit keyword arguments win


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _checkpoint_api_available() -> bool:
    try:
        from mattingkit.checkpoint import load_generator  # noqa: F401
        from mattingkit.models import build_model  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _checkpoint_api_available(), reason="mattingkit.checkpoint / models not available yet")
def test_load_model_from_best_pt_and_export(tmp_path):
    from mattingkit import checkpoint
    from mattingkit.config import load_config
    from mattingkit.infer import load_model
    from mattingkit.models import build_model

    cfg = load_config("demo")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    state = {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "step": 5,
             "generator": model.state_dict(), "config": cfg.to_dict()}
    best = checkpoint.save_checkpoint(state, tmp_path / "best.pt")
    img = _rng_image(64, 96)
    tri = np.full((64, 96), 0.5, np.float32)
    tri[:8] = 0
    expected = predict(model, img, tri)
    loaded, cfg2 = load_model(best)
    assert not loaded.training and cfg2.model.backbone == cfg.model.backbone
    np.testing.assert_array_equal(predict(loaded, img, tri), expected)
    export = checkpoint.export_inference(best, tmp_path / "export.pt", half=False)
    loaded2, _ = load_model(export)
    np.testing.assert_array_equal(predict(loaded2, img, tri), expected)


# --------------------------------------------------------------------------------------------
# uint8 inputs, device-side pre/post-processing
# --------------------------------------------------------------------------------------------
def _host_reference(net, img, tri, margin=32):
    """predict() as it was before the device-side path: NumPy reflect padding, crop and clamp on the host."""
    h, w = img.shape[:2]
    top, bottom, left, right = padding(h, w, margin)
    t = np.full((h, w), 0.5, np.float32) if tri is None else tri
    ip = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    tp = np.pad(t, ((top, bottom), (left, right)), mode="reflect")
    with torch.no_grad():
        a = net.eval()(torch.from_numpy(ip.transpose(2, 0, 1).copy())[None],
                       torch.from_numpy(tp)[None, None])["alpha"][0, 0].clamp(0, 1).numpy()
    a = a[top:top + h, left:left + w].copy()
    if tri is not None:
        a[tri == 0], a[tri == 1] = 0.0, 1.0
    return a


def test_uint8_and_float_inputs_match_the_host_path_on_real_photos(alphamatting_dev):
    from mattingkit.io import read_image_uint8

    net = SmallConvNet(seed=2)
    for name in ["GT02", "GT04"]:
        u8 = read_image_uint8(alphamatting_dev / "image" / f"{name}.png")
        tri = read_trimap(alphamatting_dev / "trimap" / f"{name}.png")
        tri_u8 = to_uint8(tri)
        ref = _host_reference(net, read_image(alphamatting_dev / "image" / f"{name}.png"), tri)
        for image, t in ((u8, tri), (u8, tri_u8), (u8.astype(np.float32) / np.float32(255), tri)):
            a = predict(net, image, t)
            assert a.shape == ref.shape and a.dtype == np.float32 and a.flags.c_contiguous
            assert np.abs(a - ref).max() <= 1 / 255
        assert np.abs(predict(net, u8) - _host_reference(net, u8 / np.float32(255), None)).max() <= 1 / 255


@pytest.mark.parametrize("h,w,margin", [(1, 1, 32), (5, 130, 32), (40, 33, 0), (70, 90, 16)])
def test_device_padding_is_numpy_reflect(h, w, margin):
    img = (np.random.default_rng(h).random((h, w, 3)) * 255).astype(np.uint8)
    net = SmallConvNet(seed=1)
    np.testing.assert_allclose(predict(net, img, pad_margin=margin),
                               _host_reference(net, img / np.float32(255), None, margin), atol=1e-6)


# --------------------------------------------------------------------------------------------
# The producer rule (issue 16), OOM retry (issue 12), baselines and the pipelined folder (issue 13)
# --------------------------------------------------------------------------------------------
def _checkpoints(tmp_path, seeds=(0, 1), overrides=("model.use_trimap=false",)):
    """Demo checkpoints of two seeds (trimap-free by default: these folders have no trimaps)."""
    from mattingkit import checkpoint
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    cfg = load_config("demo", list(overrides))
    paths = []
    for seed in seeds:
        torch.manual_seed(seed)
        state = {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "step": 5,
                 "generator": build_model(cfg.model).eval().state_dict(), "config": cfg.to_dict()}
        paths.append(checkpoint.save_checkpoint(state, tmp_path / f"ckpt{seed}" / "best.pt"))
    return cfg, paths


def test_a_second_checkpoint_into_a_filled_folder_is_refused_force_rewrites_same_resumes(tmp_path):
    from mattingkit.infer import predictor_for

    cfg, (a, b) = _checkpoints(tmp_path)
    src, out = tmp_path / "images", tmp_path / "out"
    _make_folder(src, h=64, w=64)
    model_a, prod_a = predictor_for(a)
    model_b, prod_b = predictor_for(b)
    assert prod_a["sha256"] != prod_b["sha256"] and model_a.mattingkit_cfg.model.name == cfg.model.name
    rep = predict_folder(model_a, src, out, producer=prod_a, headless=True, verbose=False)
    assert len(rep.written) == 3
    a_mattes = {p.name: p.read_bytes() for p in out.glob("*.png")}
    with pytest.raises(RunStateError, match=r"checkpoint .*ckpt0.*force=True"):
        predict_folder(model_b, src, out, producer=prod_b, headless=True, verbose=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == a_mattes     # untouched
    # without an explicit producer the weights identify the model: the same refusal
    with pytest.raises(RunStateError):
        predict_folder(model_b, src, out, headless=True, verbose=False)
    # the same producer resumes
    (out / "abc.png").unlink()
    rep = predict_folder(model_a, src, out, producer=prod_a, headless=True, verbose=False)
    assert rep.written == ["abc"] and len(rep.skipped) == 2
    # other settings = another producer
    with pytest.raises(RunStateError, match="tta_flip: False -> True"):
        predict_folder(model_a, src, out, producer=prod_a, tta_flip=True, headless=True, verbose=False)
    # force: B's mattes replace A's, and B's record is kept
    rep = predict_folder(model_b, src, out, producer=prod_b, force=True, headless=True, verbose=False)
    assert len(rep.written) == 3 and rep.skipped == []
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} != a_mattes
    rep = predict_folder(model_b, src, out, producer=prod_b, headless=True, verbose=False)
    assert rep.written == [] and len(rep.skipped) == 3


def test_force_replaces_the_cut_outs_in_a_custom_rgba_dir_too(tmp_path):
    """RGBA cut-outs written elsewhere (rgba_dir) belong to the mattes' producer: another model's run
    with force rewrites them instead of keeping the first model's as finished."""
    from mattingkit.infer import predictor_for

    _, (a, b) = _checkpoints(tmp_path)
    src, out, rgba = tmp_path / "images", tmp_path / "out", tmp_path / "cutouts"
    _make_folder(src, h=64, w=64)
    model_a, prod_a = predictor_for(a)
    model_b, prod_b = predictor_for(b)
    kw = dict(write_rgba=True, rgba_dir=rgba, headless=True, verbose=False)
    predict_folder(model_a, src, out, producer=prod_a, **kw)
    a_rgba = {p.name: p.read_bytes() for p in rgba.glob("*.png")}
    assert len(a_rgba) == 3 and not (out / "rgba").exists()
    rep = predict_folder(model_b, src, out, producer=prod_b, force=True, **kw)
    assert len(rep.written) == 3
    b_rgba = {p.name: p.read_bytes() for p in rgba.glob("*.png")}
    assert b_rgba.keys() == a_rgba.keys() and all(b_rgba[k] != a_rgba[k] for k in a_rgba)


def test_predict_split_goes_through_the_rule_and_replaces_another_producer(tmp_path):
    from mattingkit.infer import PRODUCER_FILE, predict_split

    cfg, (a, b) = _checkpoints(tmp_path)
    src, out = tmp_path / "images", tmp_path / "pred"
    _make_folder(src, names=("0001", "0002"), h=64, w=64)
    r1 = predict_split(a, src, out, cfg, headless=True, verbose=False)
    assert len(r1.report.written) == 2
    assert predict_split(a, src, out, cfg, headless=True, verbose=False).report.skipped == ["0001", "0002"]
    r3 = predict_split(b, src, out, cfg, headless=True, verbose=False)   # a cache: replaced, not refused
    assert len(r3.report.written) == 2
    import json
    assert json.loads((out / PRODUCER_FILE).read_text())["checkpoint"] == str(Path(b).resolve())


def test_baselines_through_predict_folder_and_predict_split(tmp_path):
    from mattingkit.baselines import BaselinePredictor
    from mattingkit.config import load_config
    from mattingkit.infer import predict_split, predictor_for

    src, tris, out = tmp_path / "images", tmp_path / "trimaps", tmp_path / "out"
    images = _make_folder(src, names=("0001", "0002"), h=40, w=40)
    for n, img in images.items():
        tri = np.full(img.shape[:2], 0.5, np.float32)
        tri[:8], tri[-8:] = 0, 1
        write_png(tris / f"{n}.png", tri)
    model, producer = predictor_for("trimap")
    rep = predict_folder(model, src, out, tris, producer=producer, headless=True, verbose=False)
    assert rep.written == ["0001", "0002"] and rep.producer["method"] == "trimap"
    with pytest.raises(RunStateError, match="baseline 'trimap'"):
        predict_folder(BaselinePredictor("knn"), src, out, tris, headless=True, verbose=False)
    small = BaselinePredictor("closed_form", max_pixels=500)
    rep = predict_folder(small, src, tmp_path / "cf", tris, headless=True, verbose=False)
    assert rep.ok and len(rep.notes) == 2 and all("downscaled" in n for n in rep.notes)
    df = pd.DataFrame({"id": ["0001", "0002"], "image": [str(src / "0001.png"), str(src / "0002.png")],
                       "trimap": [str(tris / "0001.png"), str(tris / "0002.png")]})
    res = predict_split(None, df, tmp_path / "split", load_config("demo"), method="trimap", headless=True,
                        verbose=False)
    assert res.method == "trimap" and res.report.written == ["0001", "0002"] and res.with_trimap
    np.testing.assert_array_equal(read_alpha(tmp_path / "split" / "0001.png"), read_alpha(out / "0001.png"))


def test_oom_ladder_keeps_half_of_each_tile_and_bounds_the_work():
    from mattingkit.tiling import MAX_TILED_WORK, min_tile, oom_ladder, tiled_work

    for hp, wp, tile, ctx in [(2176, 2176, 1792, 128), (4160, 4160, 1792, 64), (640, 864, 864, 32), (384, 480, 480, 0)]:
        ladder = oom_ladder(hp, wp, tile, ctx)
        assert ladder == sorted(ladder, reverse=True) and all(t < tile for t in ladder)
        for t in ladder:
            assert t - 2 * ctx >= t / 2 and t >= min_tile(ctx)                # at least half of each tile usable
            assert tiled_work(hp, wp, t, ctx) <= MAX_TILED_WORK
    # the case of issue 21: 2112^2 (padded 2176) with AlphaGAN's 544 px context: 1184 px tiles keep a
    # 96 px core (~75x the work); the ladder offers no such tile, so the retry goes straight to downscaling
    assert tiled_work(2176, 2176, 1184, 544) > 20 and oom_ladder(2176, 2176, 1792, 544) == []


class OomAbove(nn.Module):
    """Raises the real CUDA out-of-memory error for inputs above ``limit`` pixels (as a GPU would)."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.conv = limit, nn.Conv2d(3, 1, 1)

    def forward(self, image, trimap):
        if image.shape[-2] * image.shape[-1] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"alpha": torch.sigmoid(self.conv(image))}


def test_out_of_memory_on_one_image_retries_it_tiled_with_a_note(tmp_path):
    src, out = tmp_path / "images", tmp_path / "out"
    write_png(src / "big.png", _rng_image(300, 400, seed=1))
    write_png(src / "small.png", _rng_image(40, 40, seed=2))
    net = OomAbove(limit=256 * 256)
    rep = predict_folder(net, src, out, tile_overlap=0, headless=True, verbose=False)
    assert rep.ok and rep.written == ["big", "small"]
    assert len(rep.notes) == 1 and "big: out of memory" in rep.notes[0] and "tile_size=" in rep.notes[0]
    ref = OomAbove(10 ** 9)
    ref.conv.load_state_dict(net.conv.state_dict())
    np.testing.assert_allclose(read_alpha(out / "big.png"), predict(ref, read_image(src / "big.png")),
                               atol=0.5 / 255 + 1e-6)
    # an image that cannot fit at any tile nor downscaled: a per-image failure with the reason
    rep = predict_folder(OomAbove(limit=10), src, tmp_path / "out2", tile_overlap=0, headless=True, verbose=False)
    assert [Path(p).name for p, _ in rep.failed] == ["big.png", "small.png"] and "downscaled below" in rep.failed[0][1]


class CountingOom(OomAbove):
    """:class:`OomAbove` that counts the pixels of every forward it completes."""

    def __init__(self, limit):
        super().__init__(limit)
        self.pixels = 0

    def forward(self, image, trimap):
        out = super().forward(image, trimap)
        self.pixels += image.shape[-2] * image.shape[-1]
        return out


@pytest.mark.parametrize("limit, context, how", [(300 * 300, 32, "tiled at tile_size=288"),
                                                 (150 * 150, 96, "DOWNSCALED to")])
def test_out_of_memory_ladder_finishes_within_4x_the_work_then_downscales(tmp_path, limit, context, how):
    import json

    from mattingkit.infer import padding

    src, out = tmp_path / "images", tmp_path / "out"
    yy, xx = np.mgrid[0:600, 0:800] / 100.0
    smooth = np.stack([np.sin(yy) * 0.4 + 0.5, np.cos(xx) * 0.4 + 0.5, np.sin(xx + yy) * 0.4 + 0.5], -1)
    write_png(src / "big.png", smooth.astype(np.float32))
    tri = np.full((600, 800), 0.5, np.float32)
    tri[:50] = 0
    write_png(tmp_path / "tri" / "big.png", tri)
    net = CountingOom(limit)
    rep = predict_folder(net, src, out, tmp_path / "tri", tile_overlap=context, headless=True, verbose=False)
    assert rep.ok and rep.written == ["big"] and len(rep.notes) == 1 and how in rep.notes[0]
    t, b, left, r = padding(600, 800)
    assert net.pixels <= 4 * (600 + t + b) * (800 + left + r)               # never more than 4x the untiled work
    assert json.loads((out / "_source.json").read_text())["notes"] == rep.notes   # recorded with the folder
    alpha = read_alpha(out / "big.png")
    assert alpha.shape == (600, 800) and alpha[:50].max() == 0              # full size, known region clamped
    ref = OomAbove(10 ** 9)
    ref.conv.load_state_dict(net.conv.state_dict())
    full = predict(ref, read_image(src / "big.png"), tri)
    err = np.abs(alpha - full)[80:]                                      # away from the trimap edge
    assert err.max() <= (0.5 / 255 + 1e-6 if "tiled" in how else 0.02)  # a smooth photo: downscaling loses little


def test_batched_folder_equals_one_by_one_in_order_with_a_bad_file(tmp_path):
    src = tmp_path / "images"
    for i in range(7):
        write_png(src / f"{i:04d}.png", _rng_image(64, 64, seed=i) if i != 4 else _rng_image(48, 64, seed=i))
    (src / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    net = SmallConvNet(seed=4)
    one = predict_folder(net, src, tmp_path / "one", headless=True, verbose=False)
    net.shapes.clear()
    many = predict_folder(net, src, tmp_path / "many", batch_size=3, headless=True, verbose=False)
    assert many.written == one.written == ["0000", "0001", "0003", "0004", "0005", "0006"]
    assert [Path(p).name for p, _ in many.failed] == ["0002.png"]
    assert max(s[0] for s in net.shapes) == 3       # batched forwards happened
    for stem in one.written:
        assert np.abs(read_alpha(tmp_path / "one" / f"{stem}.png").astype(np.float32)
                      - read_alpha(tmp_path / "many" / f"{stem}.png")).max() <= 1 / 255 + 1e-6


def test_ctrl_c_in_the_pipeline_leaves_no_partial_png_and_resumes(tmp_path):
    src, out = tmp_path / "images", tmp_path / "out"
    for i in range(6):
        write_png(src / f"{i:04d}.png", _rng_image(32, 32, seed=i))

    class Interrupt(ChannelMean):
        calls = 0

        def forward(self, image, trimap):
            Interrupt.calls += 1
            if Interrupt.calls == 4:
                raise KeyboardInterrupt
            return super().forward(image, trimap)

    with pytest.raises(KeyboardInterrupt):
        predict_folder(Interrupt(), src, out, headless=True, verbose=False)
    done = sorted(p.name for p in out.glob("*.png"))
    assert done == ["0000.png", "0001.png", "0002.png"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for p in out.glob("*.png"):
        read_alpha(p)      # whole, readable files
    rep = predict_folder(Interrupt(), src, out, headless=True, verbose=False)
    assert rep.skipped == ["0000", "0001", "0002"] and rep.written == ["0003", "0004", "0005"]


# --------------------------------------------------------------------------------------------
# One device plan for every prediction path (issue 21)
# --------------------------------------------------------------------------------------------
def _demo_checkpoint(tmp_path, overrides=()):
    from mattingkit import checkpoint
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    cfg = load_config("demo", list(overrides))
    torch.manual_seed(0)
    state = {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "step": 5,
             "generator": build_model(cfg.model).eval().state_dict(), "config": cfg.to_dict()}
    return checkpoint.save_checkpoint(state, tmp_path / "best.pt")


def test_gpu_recipe_checkpoint_without_a_gpu_stops_as_training_does_unless_cpu(tmp_path, monkeypatch):
    from gpusim import simulate

    from mattingkit import cli
    from mattingkit.device import require_gpu
    from mattingkit.errors import DeviceError
    from mattingkit.infer import load_model, predict_split

    simulate(monkeypatch, None)                                              # a runtime that lost its GPU
    best = _demo_checkpoint(tmp_path, ["run.require_gpu=true", "run.name=big"])
    with pytest.raises(DeviceError) as e:
        load_model(best)                                                     # default: auto
    with pytest.raises(DeviceError) as e_train:
        require_gpu(torch.device("cpu"), True, recipe="big")
    assert str(e.value) == str(e_train.value)                                # the same message as training
    model, _ = load_model(best, device="cpu")                                # deliberate: allowed
    assert next(model.parameters()).device.type == "cpu"
    src = tmp_path / "img"
    write_png(src / "a.png", _rng_image(40, 40, seed=1))
    assert cli.main(["predict", str(best), str(src), str(tmp_path / "o1")]) == 5          # DeviceError: exit 5
    assert cli.main(["predict", str(best), str(src), str(tmp_path / "o2"), "--device", "cpu", "--two-pass"]) == 0
    from mattingkit.config import load_config

    with pytest.raises(DeviceError):                                         # the run's own device rule too
        predict_split(best, src, tmp_path / "o3", load_config("demo", ["run.require_gpu=true"]), verbose=False)


def test_predict_device_defaults_to_auto_and_picks_a_simulated_gpu(monkeypatch, capsys):
    from gpusim import simulate

    from mattingkit import cli
    from mattingkit.config import load_config
    from mattingkit.infer.core import inference_plan

    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert "--device DEVICE" in capsys.readouterr().out
    assert cli.build_parser().parse_args(["predict", "a", "b", "c"]).device == "auto"
    simulate(monkeypatch, "T4")
    plan = inference_plan(None, "auto", cfg=load_config("default"))         # a GPU recipe on a GPU runtime
    assert plan.device.type == "cuda" and plan.amp_dtype == torch.float16     # T4: fp16 autocast, one plan
    assert inference_plan("cpu", "auto", cfg=load_config("default")).device.type == "cpu"


def test_autocast_is_applied_through_the_plan(monkeypatch):
    from mattingkit.device import DevicePlan

    seen = []

    class Probe(nn.Module):
        def forward(self, image, trimap):
            seen.append(torch.is_autocast_enabled("cpu"))
            return {"alpha": image.mean(1, keepdim=True)}

    calls = []
    real = DevicePlan.autocast
    monkeypatch.setattr(DevicePlan, "autocast", lambda self: calls.append(self.amp_dtype) or real(self))
    predict(Probe(), _rng_image(40, 40), amp="bf16")
    predict(Probe(), _rng_image(40, 40))
    assert calls == [torch.bfloat16, None] and seen == [True, False]


def test_a_trimap_model_without_trimaps_is_refused_saying_how(tmp_path, capsys):
    from mattingkit import cli

    _, (a,) = _checkpoints(tmp_path, seeds=(0,), overrides=())             # the demo recipe: trained with trimaps
    src = tmp_path / "images"
    _make_folder(src, h=64, w=64)
    assert cli.main(["predict", str(a), str(src), str(tmp_path / "o")]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in ("--trimaps DIR", "--two-pass", "model.use_trimap: false"))
    assert not list((tmp_path / "o").glob("*.png"))
    assert cli.main(["predict", str(a), str(src), str(tmp_path / "o"), "--two-pass"]) == 0   # the documented way
    rec = json.loads((tmp_path / "o" / "_source.json").read_text())
    assert rec["settings"]["two_pass"] is True and rec["settings"]["trimaps"] is False

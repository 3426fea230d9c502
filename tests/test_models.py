"""Models: shapes, gradients, output strides, norms, autocast, channels_last, weight loading, registry."""
import contextlib
import time
import warnings

import pytest
import torch
import torchvision

from mattingkit.config import ModelConfig
from mattingkit.models import (
    MODELS,
    AlphaGANGenerator,
    DIMMatting,
    PatchGANDiscriminator,
    PretrainedWeightsWarning,
    U2NetP,
    build_discriminator,
    build_model,
    count_parameters,
)
from mattingkit.models.common import group_count, unpool
from mattingkit.models.dim import vgg16_bn_features


def inputs(n=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    trimap = torch.full((n, 1, h, w), 0.5)
    trimap[..., : w // 4] = 0.0
    trimap[..., -(w // 4):] = 1.0
    return image, trimap


def small(**kw):
    base = dict(name="alphagan", backbone="resnet18", pretrained=False, output_stride=8, norm="bn")
    base.update(kw)
    return ModelConfig(**base)


def check_forward_backward(model, image, trimap):
    model.train()
    out = model(image, trimap)
    alpha = out["alpha"]
    assert alpha.shape == (image.shape[0], 1, *image.shape[2:])
    assert alpha.dtype == torch.float32
    assert 0.0 <= alpha.min().item() and alpha.max().item() <= 1.0
    ((alpha - alpha.detach() * 0.5) ** 2).mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    nonzero = sum(int(p.grad.abs().sum() > 0) for _, p in trainable)
    assert nonzero > 0.8 * len(trainable)
    return out


# ------------------------------------------------------------------------------------ AlphaGAN
@pytest.mark.parametrize("output_stride,norm,size", [(8, "bn", (64, 64)), (16, "bn", (96, 64)),
                                                     (8, "gn", (64, 96))])
def test_alphagan_resnet18_shapes_gradients_output_stride(output_stride, norm, size):
    model = build_model(small(output_stride=output_stride, norm=norm))
    image, trimap = inputs(2, *size)
    feats = model.encoder(torch.cat([image, trimap], 1))
    assert feats["out"].shape[-2:] == (size[0] // output_stride, size[1] // output_stride)
    assert feats["stem"].shape[-2:] == (size[0] // 2, size[1] // 2)
    assert feats["layer1"].shape[-2:] == (size[0] // 4, size[1] // 4)
    check_forward_backward(model, image, trimap)
    norms = {type(m) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))}
    assert norms == ({torch.nn.BatchNorm2d} if norm == "bn" else {torch.nn.GroupNorm})
    assert model.aspp_rates == ([12, 24, 36] if output_stride == 8 else [6, 12, 18])


def test_alphagan_resnet18_dilation_matches_torchvision_rule():
    model = build_model(small(output_stride=8))
    enc = model.encoder
    assert enc.layer3[0].conv1.stride == (1, 1) and enc.layer3[0].conv1.dilation == (1, 1)
    assert enc.layer3[1].conv2.dilation == (2, 2)
    assert enc.layer4[0].conv1.dilation == (2, 2) and enc.layer4[1].conv2.dilation == (4, 4)
    assert enc.layer4[0].downsample[0].stride == (1, 1)


def test_alphagan_resnet50_construction_and_forward():
    model = build_model(small(backbone="resnet50", output_stride=8)).eval()
    n = count_parameters(model)
    assert 35e6 < n < 45e6  # ResNet-50 trunk (23.5 M) + ASPP at 2048 channels + decoder
    assert model.encoder.layer4[1].conv2.dilation == (4, 4)
    assert model.encoder.layer3[1].conv2.dilation == (2, 2)
    image, trimap = inputs(1, 64, 64)
    with torch.inference_mode():
        feats = model.encoder(torch.cat([image, trimap], 1))
        alpha = model(image, trimap)["alpha"]
    assert feats["out"].shape == (1, 2048, 8, 8)
    assert alpha.shape == (1, 1, 64, 64)


def test_alphagan_trimap_free_uses_all_unknown_trimap():
    model = build_model(small(use_trimap=False, output_stride=16)).eval()
    image, trimap = inputs(1, 64, 64)
    with torch.inference_mode():
        free = model(image, None)["alpha"]
        ignored = model(image, trimap)["alpha"]
    trimap_model = build_model(small(output_stride=16)).eval()
    trimap_model.load_state_dict(model.state_dict())
    with torch.inference_mode():
        explicit = trimap_model(image, torch.full_like(trimap, 0.5))["alpha"]
        with_trimap = trimap_model(image, trimap)["alpha"]
    assert torch.equal(free, ignored) and torch.allclose(free, explicit, atol=1e-6)
    assert not torch.allclose(free, with_trimap, atol=1e-6)
    with pytest.raises(ValueError, match="needs a trimap"):
        trimap_model(image, None)


def test_input_checks():
    model = build_model(small(output_stride=16))
    image, trimap = inputs(1, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(image[..., :48], trimap[..., :48])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.cat([image, trimap], 1), trimap)
    with pytest.raises(ValueError, match="trimap must be"):
        model(image, trimap[:, :, :32])


# ------------------------------------------------------------------------------------ autocast / channels_last
def _models_for_numerics():
    return {
        "alphagan": build_model(small(output_stride=8)),
        "dim": build_model(ModelConfig(name="dim", backbone="vgg16_bn", pretrained=False)),
        "u2netp": build_model(ModelConfig(name="u2netp", pretrained=False)),
    }


@pytest.fixture(scope="module")
def numerics_models():
    torch.manual_seed(0)
    return _models_for_numerics()


@pytest.mark.parametrize("name", ["alphagan", "dim", "u2netp"])
def test_bf16_autocast_forward(numerics_models, name):
    model = numerics_models[name].eval()
    image, trimap = inputs(2, 64, 96)
    with torch.inference_mode():
        ref = model(image, trimap)["alpha"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(image, trimap)
    assert out["alpha"].dtype == torch.float32 and out["alpha"].shape == (2, 1, 64, 96)
    assert torch.isfinite(out["alpha"]).all()
    assert (out["alpha"] - ref).abs().mean().item() < 0.05


@pytest.mark.parametrize("name", ["alphagan", "dim", "u2netp"])
def test_channels_last_matches_contiguous(numerics_models, name):
    model = numerics_models[name].eval()
    image, trimap = inputs(2, 64, 64)
    with torch.inference_mode():
        ref = model(image, trimap)["alpha"]
        model.to(memory_format=torch.channels_last)
        try:
            out = model(image.to(memory_format=torch.channels_last),
                        trimap.to(memory_format=torch.channels_last))["alpha"]
        finally:
            model.to(memory_format=torch.contiguous_format)
    assert torch.allclose(out, ref, atol=1e-4)


def test_channels_last_training_step_alphagan_gn_os16():
    model = build_model(small(output_stride=16, norm="gn")).to(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    image, trimap = inputs(2, 64, 64)
    feats = model.encoder(torch.cat([image, trimap], 1))
    assert feats["out"].shape[-2:] == (4, 4)
    check_forward_backward(model, image.to(memory_format=torch.channels_last), trimap)


# ------------------------------------------------------------------------------------ weights
def test_resnet18_weights_from_local_state_dict(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsWarning)
        model = build_model(small(pretrained=True, weights_path=str(path)))
    conv1 = model.encoder.conv1.weight
    assert conv1.shape == (64, 4, 7, 7)
    assert torch.equal(conv1[:, :3], reference.conv1.weight)
    assert conv1[:, 3].abs().max().item() == 0.0
    assert torch.equal(model.encoder.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.encoder.bn1.running_mean, reference.bn1.running_mean)
    # GroupNorm variant keeps the pretrained convs and copies BN's affine parameters
    gn = build_model(small(pretrained=True, weights_path=str(path), norm="gn"))
    assert torch.equal(gn.encoder.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert isinstance(gn.encoder.bn1, torch.nn.GroupNorm)
    assert torch.equal(gn.encoder.bn1.weight, reference.bn1.weight)
    # without pretrained weights the trimap filters are not zero
    assert build_model(small()).encoder.conv1.weight[:, 3].abs().sum().item() > 0


def test_weights_of_the_wrong_architecture_raise(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match="does not match"):
        build_model(small(pretrained=True, weights_path=str(path)))


def test_missing_weights_path_warns_and_falls_back(tmp_path):
    with pytest.warns(PretrainedWeightsWarning, match="does not exist"):
        model = build_model(small(pretrained=True, weights_path=str(tmp_path / "nope.pth")))
    assert model.encoder.pretrained_loaded is False


def test_pretrained_offline_falls_back_quickly_with_one_warning(tmp_path, monkeypatch):
    # an empty hub cache and an unreachable proxy: the real download path fails fast
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY", "MATTINGKIT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(small(pretrained=True))
    elapsed = time.monotonic() - start
    ours = [w for w in caught if issubclass(w.category, PretrainedWeightsWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "random initialisation" in str(ours[0].message) and "weights_path" in str(ours[0].message)
    assert model.encoder.pretrained_loaded is False
    assert elapsed < 15.0


def test_offline_env_var_skips_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MATTINGKIT_OFFLINE", "1")
    with pytest.warns(PretrainedWeightsWarning, match="MATTINGKIT_OFFLINE"):
        build_model(small(pretrained=True, output_stride=16))


def test_hub_cache_is_used_without_network(tmp_path, monkeypatch):
    """A file in torch hub's cache under torchvision's name is loaded (offline)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MATTINGKIT_OFFLINE", "1")
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), cache / url.rsplit("/", 1)[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsWarning)
        model = build_model(small(pretrained=True, output_stride=16))
    assert torch.equal(model.encoder.conv1.weight[:, :3], reference.conv1.weight)


# ------------------------------------------------------------------------------------ DIM
def test_dim_stages_shapes_and_gradients():
    cfg = ModelConfig(name="dim", backbone="vgg16_bn", pretrained=False, dim_stage="joint")
    model = build_model(cfg)
    image, trimap = inputs(2, 64, 64)
    out = check_forward_backward(model, image, trimap)
    assert out["alpha_raw"].shape == (2, 1, 64, 64) and len(out["aux_alphas"]) == 1
    # the zero-initialised residual head: refined == raw at the start
    assert torch.allclose(out["alpha"], out["alpha_raw"], atol=1e-6)
    assert model.refine.delta.weight.grad.abs().sum() > 0

    model.zero_grad(set_to_none=True)
    model.set_stage("encoder_decoder")
    out = model(image, trimap)
    assert out["alpha"] is out["alpha_raw"] and out["aux_alphas"] == []
    out["alpha"].mean().backward()
    assert all(p.grad is None for p in model.refine.parameters())

    model.zero_grad(set_to_none=True)
    model.set_stage("refinement")
    model.train()
    assert not model.encoder.training and not model.decoder.training and model.refine.training
    assert all(not p.requires_grad for p in model.encoder_decoder_parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model.refine)
    out = model(image, trimap)
    assert out["aux_alphas"] == []
    (out["alpha"] - 0.3).pow(2).mean().backward()
    assert model.refine.delta.weight.grad is not None
    with pytest.raises(ValueError, match="dim_stage"):
        model.set_stage("everything")


def test_dim_encoder_output_and_backbone_check():
    with pytest.raises(ValueError, match="vgg16_bn"):
        build_model(ModelConfig(name="dim", backbone="resnet50", pretrained=False))
    model = DIMMatting(stage="encoder_decoder", norm="gn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    image, trimap = inputs(1, 64, 64)
    x, skips = model.encoder(torch.cat([image, trimap], 1))
    assert x.shape == (1, 512, 2, 2) and [tuple(s) for _, s in skips] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]


def test_dim_vgg_weights_from_local_state_dict(tmp_path):
    features = vgg16_bn_features()
    path = tmp_path / "vgg16_bn.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    model = build_model(ModelConfig(name="dim", backbone="vgg16_bn", pretrained=True, weights_path=str(path)))
    first = model.encoder.stages[0][0].weight
    assert first.shape == (64, 4, 3, 3)
    assert torch.equal(first[:, :3], features[0].weight) and first[:, 3].abs().max().item() == 0.0
    assert torch.equal(model.encoder.stages[4][6].weight, features[40].weight)  # conv5_3


# ------------------------------------------------------------------------------------ U²-Net-P
def test_u2netp_parameters_outputs_and_gradients():
    model = build_model(ModelConfig(name="u2netp", pretrained=False))
    assert isinstance(model, U2NetP)
    assert abs(count_parameters(model) - 1.131e6) < 0.01e6  # the paper's 1.13 M (4.7 MB)
    image, trimap = inputs(2, 64, 96)
    out = check_forward_backward(model, image, None)
    assert len(out["side_outputs"]) == 6
    assert all(s.shape == (2, 1, 64, 96) and s.dtype == torch.float32 for s in out["side_outputs"])
    assert out["aux_alphas"] is out["side_outputs"]
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(image, None)["alpha"], model(image, trimap)["alpha"])


def test_u2netp_weights_path_round_trip_and_warning(tmp_path):
    torch.manual_seed(0)
    source = U2NetP().eval()
    path = tmp_path / "u2netp.pth"
    torch.save(source.state_dict(), path)
    loaded = build_model(ModelConfig(name="u2netp", pretrained=True, weights_path=str(path))).eval()
    image, _ = inputs(1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(image)["alpha"], source(image)["alpha"])
    with pytest.warns(PretrainedWeightsWarning, match="u2netp"):
        build_model(ModelConfig(name="u2netp", pretrained=True))
    with pytest.warns(PretrainedWeightsWarning, match="ignored because model.pretrained=false"):
        ignored = build_model(ModelConfig(name="u2netp", pretrained=False, weights_path=str(path)))
    assert not torch.equal(ignored.side1.weight, source.side1.weight)


# ------------------------------------------------------------------------------------ PatchGAN
@pytest.mark.parametrize("layers,channels,spectral", [(3, 16, False), (2, 8, True), (1, 8, False)])
def test_patchgan_shapes_and_gradients(layers, channels, spectral):
    cfg = ModelConfig(disc_layers=layers, disc_channels=channels, disc_spectral_norm=spectral)
    d = build_discriminator(cfg)
    assert isinstance(d, PatchGANDiscriminator)
    x = torch.rand(2, 4, 64, 96, requires_grad=True)
    logits = d(x)
    h, w = 64 // 2 ** layers - 2, 96 // 2 ** layers - 2
    assert logits.shape == (2, 1, h, w)
    logits.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in d.parameters())
    has_sn = any("parametrizations" in n for n, _ in d.named_parameters())
    assert has_sn == spectral
    if spectral:
        assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in d.modules())
    with pytest.raises(ValueError, match="at least"):
        d(torch.rand(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        d(torch.rand(1, 3, 64, 64))


# ------------------------------------------------------------------------------------ unpooling
def test_unpool_is_the_transpose_of_max_pooling():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 8, 16, 12, generator=g, requires_grad=True)
    pooled, idx = torch.nn.functional.max_pool2d(src, 3, 2, 1, return_indices=True)
    x = torch.rand(pooled.shape, generator=g)
    (pooled * x).sum().backward()  # d/dsrc = x scattered (and summed) back to the argmax positions
    with deterministic(True), warnings.catch_warnings():
        warnings.simplefilter("error")  # no nondeterminism error or warning, unlike F.max_unpool2d
        out = unpool(x, idx, src.shape[-2:], 3, 2, 1)
    assert torch.allclose(out, src.grad)
    cl = unpool(x.contiguous(memory_format=torch.channels_last), idx, src.shape[-2:], 3, 2, 1)
    assert torch.allclose(cl, out)
    # without overlapping windows it is F.max_unpool2d
    p2, i2 = torch.nn.functional.max_pool2d(src.detach(), 2, 2, return_indices=True)
    with deterministic(False):
        reference = torch.nn.functional.max_unpool2d(p2, i2, 2, 2, output_size=src.shape[-2:])
    assert torch.equal(unpool(p2, i2, src.shape[-2:], 2, 2), reference)


@contextlib.contextmanager
def deterministic(mode: bool):
    """Set torch's deterministic-algorithms mode for a block, restoring mode *and* warn_only after."""
    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(mode)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)


# ------------------------------------------------------------------------------------ registry
def test_registry_and_helpers():
    assert set(MODELS) == {"alphagan", "dim", "u2netp"}
    with pytest.raises(ValueError, match="alphagan, dim, u2netp"):
        build_model(ModelConfig(name="modnet"))
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        build_model(small(backbone="resnet101"))
    with pytest.raises(ValueError, match="output_stride"):
        build_model(small(output_stride=32))
    with pytest.raises(ValueError, match="norm"):
        build_model(small(norm="ln"))
    lin = torch.nn.Linear(3, 2)
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 8 and count_parameters(lin, trainable_only=True) == 6
    assert [group_count(c) for c in (64, 48, 16, 3, 1)] == [32, 24, 16, 3, 1]
    assert isinstance(build_model(small()), AlphaGANGenerator)


# --------------------------------------------------------------------------------------------
# model.guide: a classical solve as input, a residual as output
# --------------------------------------------------------------------------------------------
def _soft_edge(n=2, h=64, w=64):
    """Images with a soft vertical edge between two colours, the exact alpha and a trimap."""
    ramp = torch.clamp((torch.arange(w, dtype=torch.float32) - w / 2) / 12 + 0.5, 0, 1)
    alpha = ramp.expand(n, 1, h, w).clone()
    fg = torch.tensor([0.9, 0.3, 0.1]).view(1, 3, 1, 1)
    bg = torch.tensor([0.1, 0.4, 0.8]).view(1, 3, 1, 1)
    image = alpha * fg + (1 - alpha) * bg + 0.02 * torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))
    trimap = torch.where(alpha == 0, 0.0, torch.where(alpha == 1, 1.0, 0.5))
    trimap[..., w // 2 - 14: w // 2 + 14] = 0.5   # a wider unknown band than the edge
    return image.clamp(0, 1), alpha, trimap


def test_guided_alphagan_starts_as_its_solver_and_learns_a_residual():
    import numpy as np

    from mattingkit.baselines import predict_baseline
    from mattingkit.models.alphagan import guides

    torch.manual_seed(0)
    g = build_model(small(guide="closed_form", norm="gn", output_stride=16))
    plain = build_model(small(norm="gn", output_stride=16))
    # the solver is not a parameter: the state dict differs from the plain model's only in conv1's 5th channel
    assert g.state_dict().keys() == plain.state_dict().keys()
    assert g.encoder.conv1.weight.shape[1] == 5 and plain.encoder.conv1.weight.shape[1] == 4
    image, gt, trimap = _soft_edge()
    guide = guides(g, image, trimap)   # the input, solved once on the host (forward never solves)
    out = g(image, trimap, guide=guide)
    # untrained, the model *is* closed-form matting
    cf = predict_baseline("closed_form", image[0].permute(1, 2, 0).numpy(), trimap[0, 0].numpy())
    assert torch.equal(out["alpha"], out["guide"])
    assert np.allclose(out["guide"][0, 0].numpy(), cf, atol=1e-6)
    # a target the solver cannot know (the edge moved 6 px): a few steps halve the error, the residual learns
    gt = torch.roll(gt, 6, dims=-1)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    unknown = trimap == 0.5
    err0 = (out["alpha"] - gt)[unknown].abs().mean().item()
    for _ in range(20):
        opt.zero_grad()
        a = g(image, trimap, guide=guide)["alpha"]
        loss = (a - gt)[unknown].abs().mean()
        loss.backward()
        opt.step()
    assert g.encoder.conv1.weight.grad[:, 4].abs().sum() > 0     # the guide channel is used
    assert loss.item() < 0.5 * err0


def test_guide_is_an_alphagan_option_only():
    from mattingkit.config import ConfigError, load_config
    from mattingkit.errors import UsageError

    with pytest.raises(UsageError, match="alphagan option"):
        build_model(ModelConfig(name="u2netp", pretrained=False, guide="closed_form"))
    from mattingkit.choices import config_problems

    with pytest.raises(ConfigError, match="model.guide='cf': choose none, closed_form, knn"):
        load_config("demo", ["model.guide=cf"], check=config_problems)

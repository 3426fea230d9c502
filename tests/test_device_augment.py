"""data.augment_on=device: the worker ships uint8 patches + drawn parameters; the batched torch
transforms match the CPU reference (mattingkit.data.augment) on CPU tensors; the RAM cache."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mattingkit.config import AugmentConfig, DataConfig, TrimapConfig
from mattingkit.data import augment as A
from mattingkit.data import device_augment as D
from mattingkit.data.datasets import TrainDataset, batch_to_float, worker_init_fn
from mattingkit.io import write_png
from mattingkit.trimap import trimap_erode_dilate, trimap_erode_dilate_batch

U = 1 / 255


def _smooth(r, h, w):
    small = r.random((max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _ramp_alpha(h, w):
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
    return np.clip((min(h, w) * 0.3 - d) / 4 + 0.5, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def smooth_set(tmp_path_factory):
    """Smooth foregrounds / backgrounds (photo-like: no pixel-level noise), soft round alphas."""
    root = tmp_path_factory.mktemp("dev_aug")
    r = np.random.default_rng(0)
    rows = []
    for i in range(4):
        h, w = 120 + 10 * i, 150 - 5 * i
        write_png(root / f"fg{i}.png", _smooth(r, h, w))
        write_png(root / f"a{i}.png", _ramp_alpha(h, w))
        rows.append({"id": str(i), "fg": str(root / f"fg{i}.png"), "alpha": str(root / f"a{i}.png"), "image": ""})
    bgs = []
    for j in range(3):
        p = root / f"bg{j}.png"
        write_png(p, _smooth(r, 100 + 20 * j, 160))
        bgs.append(p)
    return {"root": root, "rows": rows, "bgs": bgs}


def _ds(s, aug, crop=64, size=64, patch_scale=3.0, **kw):
    ds = TrainDataset(s["rows"], s["bgs"], DataConfig(crop_sizes=[crop], image_size=size, foreground="given"),
                      TrimapConfig(kernel_range=[1, 9]), aug, epoch_len=12, **kw)
    ds.device_plan = D.build_device_plan(ds.data_cfg, ds.trimap_cfg, aug, True, patch_scale=patch_scale)
    return ds


def _diffs(ds, n=12):
    """Max |device - cpu| per key over n items (in 1/255), and the share of differing trimap pixels."""
    out = {k: 0.0 for k in ("image", "alpha", "fg", "bg")}
    tri = 0.0
    for i in range(n):
        cpu = ds.sample(i)
        dev = D.augment_batch(D.collate_items([ds.device_item(i)]))
        for k in out:
            d = np.abs(dev[k][0].numpy().transpose(1, 2, 0).squeeze() - cpu[k])
            if k == "fg":
                d = d * cpu["alpha"][..., None]        # fg is undefined where alpha = 0
            out[k] = max(out[k], float(d.max()) * 255)
        tri = max(tri, float((dev["trimap"][0, 0].numpy() != cpu["trimap"]).mean()))
        assert torch.equal(dev["unknown"], (dev["trimap"] == 0.5).float())
    return out, tri


# --------------------------------------------------------------------------------------------
# One transform at a time against the CPU reference
# --------------------------------------------------------------------------------------------
def test_warp_batch_matches_cv2_warp_on_smooth_images():
    r = np.random.default_rng(1)
    src = np.rint(_smooth(r, 60, 80) * 255).astype(np.uint8)
    for angle, scale, flip in ((0, 1, False), (12, 1.1, True), (-15, 0.85, False)):
        m = A.translation(-10, -12) @ A.affine_matrix((60, 80), angle, scale, 5, flip)
        ref = A.to_float(A.warp(src, m, (32, 40), "linear", "reflect"))
        part, inv = D.layer_patch([(src, "reflect")], m, (32, 40), 128)
        t = torch.from_numpy(np.ascontiguousarray(part.transpose(2, 0, 1)))[None]
        out = D.warp_batch(t, torch.from_numpy(inv)[None], (32, 40))[0].numpy().transpose(1, 2, 0)
        assert np.abs(out - ref).max() <= U + 1e-6
        # 8-bit sources resample to multiples of 1/255, as on the CPU
        assert np.allclose(out * 255, np.rint(out * 255), atol=1e-4)


def test_integer_crops_are_exact_copies():
    src = np.random.default_rng(2).integers(0, 256, (1, 3, 20, 20), dtype=np.uint8)
    inv = torch.tensor([[[1.0, 0, 5], [0, 1.0, 3]]], dtype=torch.float64)
    assert torch.equal((D.warp_batch(torch.from_numpy(src), inv, (10, 12)) * 255).round().byte(),
                       torch.from_numpy(src[:, :, 3:13, 5:17]))


def test_merge_foregrounds_matches_cpu():
    r = np.random.default_rng(3)
    f1, f2 = r.random((16, 16, 3)).astype(np.float32), r.random((16, 16, 3)).astype(np.float32)
    a1, a2 = r.random((16, 16)).astype(np.float32), r.random((16, 16)).astype(np.float32)
    a1[:4] = 0
    a2[:2] = 0
    fg, a = A.merge_foregrounds(f1.copy(), a1.copy(), f2.copy(), a2.copy())
    t = lambda x: torch.from_numpy(x.transpose(2, 0, 1) if x.ndim == 3 else x[None])[None]  # noqa: E731
    tfg, ta = D.merge_foregrounds(t(f1), t(a1), t(f2), t(a2))
    assert np.abs(tfg[0].numpy().transpose(1, 2, 0) - fg).max() < 1e-5
    assert np.abs(ta[0, 0].numpy() - a).max() < 1e-6


@pytest.mark.parametrize("params", [(0.0, 1.0, 1.0), (10.0, 1.3, 0.8), (-10.0, 0.7, 1.2), (170.0, 1.0, 1.0)])
def test_hsv_jitter_matches_cv2(params):
    r = np.random.default_rng(4)
    img = r.random((24, 24, 3)).astype(np.float32)
    img[0, :3] = [0.5, 0.5, 0.5]                       # grey (s = 0)
    img[1, :3] = [0, 0, 0]
    ref = A.hsv_jitter(img, *params)
    out = D.hsv_jitter(torch.from_numpy(img.transpose(2, 0, 1))[None], *(torch.tensor([p]) for p in params))
    assert np.abs(out[0].numpy().transpose(1, 2, 0) - ref).max() < 1e-4


def test_composite_matches_cpu():
    r = np.random.default_rng(5)
    fg, bg, a = (r.random((8, 8, 3)).astype(np.float32), r.random((8, 8, 3)).astype(np.float32),
                 r.random((8, 8)).astype(np.float32))
    ref = A.Composite()({"fg": fg, "bg": bg, "alpha": a}, None)["image"]
    t = lambda x: torch.from_numpy(x.transpose(2, 0, 1) if x.ndim == 3 else x[None])[None]  # noqa: E731
    assert np.abs(D.composite(t(fg), t(bg), t(a))[0].numpy().transpose(1, 2, 0) - ref).max() < 1e-6


@pytest.mark.parametrize("iterations", [1, 2])
def test_erode_dilate_trimap_is_exact(iterations):
    alphas = [np.zeros((40, 50), np.float32) for _ in range(3)]
    alphas[0][5:30, 8:45] = 1
    alphas[0][5:30, 7] = 0.5
    alphas[1][:, :20] = 1                              # touching the border: not eroded from outside
    alphas[2][:] = _ramp_alpha(40, 50)
    rngs = [np.random.default_rng(10 + i) for i in range(3)]
    ks = [tuple(int(k) for k in np.random.default_rng(10 + i).integers(1, 14, size=2)) for i in range(3)]
    refs = [trimap_erode_dilate(a, g, (1, 13), iterations) for a, g in zip(alphas, rngs)]
    batch = torch.from_numpy(np.stack(alphas)[:, None])
    k = torch.tensor(ks)
    out = trimap_erode_dilate_batch(batch, k[:, 0], k[:, 1], iterations)
    for i in range(3):
        assert np.array_equal(out[i, 0].numpy(), refs[i])


# --------------------------------------------------------------------------------------------
# Whole samples: the device path against TrainDataset.sample (same seeds)
# --------------------------------------------------------------------------------------------
def test_axis_aligned_samples_match_within_one_level(smooth_set):
    """No affine, crop = output size: every operation is the same on both paths."""
    diffs, tri = _diffs(_ds(smooth_set, AugmentConfig(affine=False)))
    assert max(diffs.values()) <= 1.0 + 1e-3, diffs
    assert tri == 0.0


def test_affine_samples_match_where_no_area_shrink(smooth_set):
    """Rotation / shear / flip / enlarging, no shrink past 1.25x: the same operations; bilinear
    coordinate rounding (cv2 1/32 px) is the only difference (documented in device_augment)."""
    diffs, tri = _diffs(_ds(smooth_set, AugmentConfig(scale=[1.0, 1.25], two_fg_prob=0.5)))
    assert diffs["alpha"] <= 1.0 + 1e-3 and diffs["fg"] <= 2.0 and diffs["image"] <= 2.0, diffs
    assert tri <= 0.002


def test_area_shrink_and_resize_differ_but_stay_close(smooth_set):
    """Crop 96 -> 64 (1.5x shrink, area on both paths, in a different order) and the default
    augmentation with a second foreground: documented differences, bounded."""
    diffs, tri = _diffs(_ds(smooth_set, AugmentConfig(two_fg_prob=0.5), crop=96, patch_scale=1.5))
    assert diffs["alpha"] <= 32 and diffs["image"] <= 32, diffs
    assert tri <= 0.03


def test_parameters_do_not_depend_on_workers(smooth_set):
    ds = _ds(smooth_set, AugmentConfig(), augment_on="device")

    def run(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, worker_init_fn=worker_init_fn)
        return [batch_to_float(b) for b in loader]

    b0, b2 = run(0), run(2)
    assert len(b0) == 3
    for x, y in zip(b0, b2):
        assert x["id"] == y["id"]
        for k in ("image", "alpha", "trimap", "fg", "bg", "unknown"):
            assert torch.equal(x[k], y[k])
            assert x[k].dtype == torch.float32 and x[k].shape[-2:] == (64, 64)


def test_unsupported_configs_stay_on_the_cpu():
    aug, band = AugmentConfig(), TrimapConfig(method="band")
    assert D.resolve_augment_on("auto", "cuda", band, aug) == "cpu"
    assert D.resolve_augment_on("auto", "cuda", TrimapConfig(), AugmentConfig(densify=0.5)) == "cpu"
    assert D.resolve_augment_on("auto", "cuda", TrimapConfig(), aug) == "device"
    assert D.resolve_augment_on("cpu", "cuda", TrimapConfig(), aug) == "cpu"
    with pytest.raises(ValueError, match="band"):
        D.resolve_augment_on("device", "cuda", band, aug)
    with pytest.raises(ValueError, match="augment_on"):
        D.resolve_augment_on("gpu", "cuda", TrimapConfig(), aug)


def test_trimap_dropout_and_no_background(smooth_set):
    ds = TrainDataset(smooth_set["rows"], [], DataConfig(crop_sizes=[48], image_size=32, foreground="given"),
                      TrimapConfig(kernel_range=[1, 5]), AugmentConfig(trimap_dropout=1.0), epoch_len=4,
                      augment_on="device")
    b = batch_to_float(torch.utils.data.default_collate([ds[i] for i in range(4)]))
    assert torch.equal(b["image"], b["fg"]) and torch.equal(b["bg"], b["fg"])
    assert bool((b["trimap"] == 0.5).all())


# --------------------------------------------------------------------------------------------
# RAM cache
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_ram_cache_reads_no_file_and_gives_the_same_samples(smooth_set, tmp_path, augment_on):
    root = tmp_path / "copy"
    shutil.copytree(smooth_set["root"], root)
    rows = [{k: v.replace(str(smooth_set["root"]), str(root)) for k, v in r.items()} for r in smooth_set["rows"]]
    bgs = [root / p.name for p in smooth_set["bgs"]]
    make = lambda: TrainDataset(rows, bgs, DataConfig(crop_sizes=[48], image_size=32, foreground="given"),  # noqa: E731
                                TrimapConfig(kernel_range=[1, 5]), AugmentConfig(), epoch_len=8, compact=True,
                                augment_on=augment_on)
    ref = [make()[i] for i in range(8)]
    ds = make()
    report = ds.fill_cache()
    fg_bytes = sum(np.prod(s) for s in [(120 + 10 * i) * (150 - 5 * i) * 4 for i in range(4)])
    assert report["foregrounds"] == 4 and report["foreground_bytes"] == fg_bytes
    assert report["backgrounds"] == 3 and report["background_bytes"] == sum(100 * 160 * 3 + 20 * j * 160 * 3
                                                                             for j in range(3))
    assert report["total_bytes"] == report["foreground_bytes"] + report["background_bytes"]
    shutil.rmtree(root)                                 # no file left: everything comes from RAM
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn)
    got = [it for b in loader for it in _split(b)]
    for x, y in zip(ref, got):
        for k, v in x.items():
            assert torch.equal(v, y[k]) if isinstance(v, torch.Tensor) else v == y[k]


def _split(batch):
    n = len(batch["id"])
    return [{k: (v[i] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()} for i in range(n)]


def test_ram_cache_budget(smooth_set):
    ds = TrainDataset(smooth_set["rows"], smooth_set["bgs"], DataConfig(crop_sizes=[48], image_size=32,
                      foreground="given"), TrimapConfig(), AugmentConfig())
    fg_only = ds.fill_cache(max_bytes=310_000)
    assert fg_only["backgrounds"] == 0 and fg_only["backgrounds_not_cached"] == 3
    with pytest.raises(MemoryError, match="max_bytes"):
        TrainDataset(smooth_set["rows"], [], DataConfig(foreground="given"), TrimapConfig(),
                     AugmentConfig()).fill_cache(max_bytes=1000)


# --------------------------------------------------------------------------------------------
# No host syncs: the device augmentation of real batches waits for nothing on the device
# --------------------------------------------------------------------------------------------
class _HostSyncs(TorchDispatchMode):
    """Counts the operations that make the host wait for the device: scalar reads (``int`` / ``bool`` /
    ``.item()`` / ``.tolist()`` of a tensor: ``aten._local_scalar_dense``), data-dependent shapes
    (``nonzero``, boolean-mask indexing) and copies from another device to the CPU. On CPU tensors they
    cost nothing, but each is a sync on a GPU, so they are counted here, where they run."""

    SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "item")

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        to_cpu = name in ("_to_copy", "copy_") and isinstance(out, torch.Tensor) and out.device.type == "cpu" \
            and isinstance(args[-1 if name == "copy_" else 0], torch.Tensor) \
            and args[-1 if name == "copy_" else 0].device.type != "cpu"
        if name in self.SYNC_OPS or to_cpu or (name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])):
            self.calls[name] = self.calls.get(name, 0) + 1
        return out


@pytest.fixture(scope="module")
def demo_device_set(tmp_path_factory):
    """The demo data's training set with data.augment_on=device, two foregrounds and trimap dropout on."""
    from mattingkit.config import load_config
    from mattingkit.data.datasets import build_datasets
    from mattingkit.data.layouts import build_manifest
    from mattingkit.data.synthetic import make_demo_data

    root = tmp_path_factory.mktemp("demo_sync")
    make_demo_data(root / "demo", seed=0, n_aim=6, n_backgrounds=3, n_comp_train=1, n_comp_test=1)
    cfg = load_config("demo", {"run.data_root": str(root), "data.foreground": "photo", "data.augment_on": "device",
                               "trimap.method": "erode_dilate", "augment.densify": 0.0, "augment.two_fg_prob": 0.5,
                               "augment.trimap_dropout": 0.5, "data.crop_sizes": [64, 96], "data.image_size": 64})
    build_manifest(cfg, root / "manifest.csv")
    train_ds, _ = build_datasets(cfg, root / "manifest.csv")
    assert train_ds.augment_on == "device"
    return train_ds


def test_device_augmentation_of_demo_batches_never_syncs_the_host(demo_device_set):
    """The Trainer's to_device (move + batch_to_float -> augment_batch) over real demo batches: no scalar read,
    no data-dependent shape, no copy back to the CPU -- 0 per batch (was ~40: out_size, the any() flags and a
    bool() per kernel row in the dilation)."""
    from torch.utils.data import default_collate

    from mattingkit.train.stream import to_device

    ds = demo_device_set
    batches = [default_collate([ds[(epoch, i % len(ds))] for i in range(4)]) for epoch in range(3)]
    assert any(bool(b["trimap_drop"].any()) for b in batches) and any(bool(b["has_fg2"].any()) for b in batches)
    for batch in batches:
        with _HostSyncs() as syncs:
            out = to_device(batch, torch.device("cpu"))
        assert syncs.calls == {}, syncs.calls
        assert out["image"].shape == (4, 3, 64, 64) and set(out["trimap"].unique().tolist()) <= {0.0, 0.5, 1.0}
        # the same batch as rendered item by item (the sync-free path changes no value)
        one = [D.augment_batch({k: v[i] for k, v in batch.items()}) for i in range(4)]
        for i in range(4):
            for k in ("image", "alpha", "trimap", "fg", "bg"):
                assert torch.equal(out[k][i], one[i][k]), k

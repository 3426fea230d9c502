"""Torch datasets: online composition (train), fixed evaluation, competition test, build_datasets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mattingkit.config import AugmentConfig, DataConfig, TrimapConfig, load_config
from mattingkit.data.compact import quantise, to_compact_item
from mattingkit.data.datasets import (
    EvalDataset,
    TestDataset,
    TrainDataset,
    batch_to_float,
    build_datasets,
    collate,
    plan_sample,
    sample_rng,
    worker_init_fn,
)
from mattingkit.io import read_alpha, read_image, read_trimap, write_png

KEYS = {"image", "alpha", "trimap", "fg", "bg", "unknown", "id"}


# --------------------------------------------------------------------------------------------
# A tiny dataset on disk
# --------------------------------------------------------------------------------------------
def _alpha(h, w, seed):
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, rad = h / 2 + r.uniform(-5, 5), w / 2 + r.uniform(-5, 5), min(h, w) * r.uniform(0.25, 0.35)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((rad - d) / 3 + 0.5, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    r = np.random.default_rng(0)
    rows = []
    for i in range(4):
        h, w = 70 + 10 * i, 90 - 5 * i
        a = _alpha(h, w, i)
        fg = r.random((h, w, 3)).astype(np.float32)
        bg0 = r.random((h, w, 3)).astype(np.float32)
        photo = a[..., None] * fg + (1 - a[..., None]) * bg0
        paths = {k: root / k / f"{i:04d}.png" for k in ("fg", "alpha", "image", "trimap")}
        write_png(paths["fg"], fg)
        write_png(paths["alpha"], a)
        write_png(paths["image"], photo)
        t = np.where(a >= 1, 1.0, np.where(a <= 0, 0.0, 0.5)).astype(np.float32)
        write_png(paths["trimap"], t)
        rows.append({"id": f"{i:04d}", **{k: str(p) for k, p in paths.items()}, "bg": "", "split": "train"})
    bgs = []
    for j in range(3):
        p = root / "bgs" / ("sub" if j else "") / f"bg{j}.png"
        write_png(p, r.random((60 + 20 * j, 100, 3)).astype(np.float32))
        bgs.append(p)
    return {"root": root, "df": pd.DataFrame(rows), "bgs": bgs}


def _train(tiny, **kw):
    data = kw.pop("data", DataConfig(crop_sizes=[48, 64], image_size=32, foreground="given"))
    aug = kw.pop("aug", AugmentConfig())
    return TrainDataset(tiny["df"], tiny["bgs"], data, TrimapConfig(kernel_range=[1, 5]), aug, **kw)


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in KEYS - {"id"}) and a["id"] == b["id"]


# --------------------------------------------------------------------------------------------
# The 8-bit training readers give exactly the float readers' values
# --------------------------------------------------------------------------------------------
def test_uint8_readers_match_the_float_readers(tmp_path):
    from PIL import Image

    from mattingkit.io import read_alpha_uint8, read_image_uint8

    r = np.random.default_rng(0)
    rgb8 = r.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    files = {"rgb.png": Image.fromarray(rgb8), "gray.png": Image.fromarray(rgb8[..., 0]),
             "rgba.png": Image.fromarray(np.dstack([rgb8, rgb8[..., 1]])),
             "pal.png": Image.fromarray(rgb8).quantize(16), "photo.jpg": Image.fromarray(rgb8)}
    for name, im in files.items():
        im.save(tmp_path / name)
        p = tmp_path / name
        assert np.array_equal(read_image_uint8(p) / np.float32(255), read_image(p)), name
        assert np.array_equal(read_alpha_uint8(p) / np.float32(255), read_alpha(p)), name
        assert read_image_uint8(p).dtype == np.uint8 and read_image_uint8(p).shape == (12, 10, 3)
    deep = (r.random((6, 7)) * 65535).astype(np.uint16)
    import cv2

    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert np.array_equal(read_alpha_uint8(tmp_path / "deep.png"), np.rint(read_alpha(tmp_path / "deep.png") * 255))
    with pytest.raises(ValueError, match="missing.png"):
        read_image_uint8(tmp_path / "missing.png")


# --------------------------------------------------------------------------------------------
# Seeding and plans
# --------------------------------------------------------------------------------------------
def test_sample_rng_depends_on_seed_epoch_and_index():
    draws = {(s, e, i): sample_rng(s, e, i).random() for s in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(set(draws.values())) == 8
    assert sample_rng(3, 4, 5).random() == sample_rng(3, 4, 5).random()
    with pytest.raises(ValueError, match="index"):
        sample_rng(0, 0, -1)


def test_plan_sample_two_foreground_probability():
    plans = [plan_sample(sample_rng(0, 0, i), i, n_fg=5, n_bg=3, two_fg_prob=0.5) for i in range(400)]
    with_two = [p for p in plans if p.fg2 is not None]
    assert 150 < len(with_two) < 250
    assert all(p.fg2 != p.fg and 0 <= p.fg2 < 5 for p in with_two)
    assert all(p.fg == i % 5 and 0 <= p.bg < 3 for i, p in enumerate(plans))
    assert all(plan_sample(sample_rng(0, 0, i), i, 5, 3, 0.0).fg2 is None for i in range(50))
    assert all(plan_sample(sample_rng(0, 0, i), i, 5, 3, 1.0).fg2 is not None for i in range(50))
    assert plan_sample(sample_rng(0, 0, 1), 1, 5, 0, 1.0).fg2 is None  # no backgrounds: no second fg


# --------------------------------------------------------------------------------------------
# TrainDataset
# --------------------------------------------------------------------------------------------
def test_train_item_layout_and_values(tiny):
    ds = _train(tiny)
    assert len(ds) == 4
    for i in range(len(ds)):
        it = ds[i]
        assert set(it) == KEYS and it["id"] == tiny["df"]["id"][i]
        assert it["image"].shape == it["fg"].shape == it["bg"].shape == (3, 32, 32)
        assert it["alpha"].shape == it["trimap"].shape == it["unknown"].shape == (1, 32, 32)
        for k in KEYS - {"id"}:
            assert it[k].dtype == torch.float32 and it[k].min() >= 0 and it[k].max() <= 1
        assert set(torch.unique(it["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
        assert torch.equal(it["unknown"], (it["trimap"] == 0.5).float())
        a = it["alpha"]
        assert torch.allclose(it["image"], a * it["fg"] + (1 - a) * it["bg"], atol=1e-5)
        assert ((a > 0) & (a < 1)).any()                # cropped around the soft edge


def test_train_same_index_same_sample_different_index_or_epoch_differs(tiny):
    ds = _train(tiny, epoch_len=12)
    assert _same(ds[5], ds[5])
    assert not torch.equal(ds[5]["image"], ds[9]["image"])      # same foreground (5 % 4 == 9 % 4)
    e0 = ds[5]
    ds.set_epoch(3)
    e3 = ds[5]
    assert not torch.equal(e0["image"], e3["image"])
    assert _same(e3, ds[(3, 5)]) and _same(e0, ds[(0, 5)])
    other = _train(tiny, epoch_len=12, seed=1)
    assert not torch.equal(other[5]["image"], e0["image"])
    with pytest.raises(IndexError):
        ds[12]


def test_train_files_for_follows_the_plan(tiny):
    ds = _train(tiny, aug=AugmentConfig(two_fg_prob=1.0))
    files = ds.files_for(2)
    assert [r for r, _ in files] == ["image", "alpha", "image", "alpha", "image"]
    assert files[0][1] == tiny["df"]["fg"][2] and files[1][1] == tiny["df"]["alpha"][2]
    assert files[2][1] != files[0][1] and files[-1][1] in {str(p) for p in tiny["bgs"]}
    assert [r for r, _ in _train(tiny, aug=AugmentConfig(two_fg_prob=0.0)).files_for(2)] == ["image", "alpha", "image"]


def test_dataloader_workers_give_the_same_samples(tiny):
    ds = _train(tiny, epoch_len=8)

    def run(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, worker_init_fn=worker_init_fn)
        return list(loader)

    b0, b2 = run(0), run(2)
    assert len(b0) == len(b2) == 3
    for x, y in zip(b0, b2):
        assert x["id"] == y["id"] and isinstance(x["id"][0], str)
        for k in KEYS - {"id"}:
            assert torch.equal(x[k], y[k])


def test_foreground_modes(tiny, tmp_path):
    df = tiny["df"].copy()
    data = DataConfig(crop_sizes=[48], image_size=32, foreground="given")
    with pytest.raises(ValueError, match="no fg file"):
        TrainDataset(df.assign(fg=""), tiny["bgs"], data, TrimapConfig(), AugmentConfig())
    with pytest.raises(ValueError, match="fg_cache"):
        TrainDataset(df.assign(fg=""), tiny["bgs"], DataConfig(foreground="estimate"), TrimapConfig(),
                     AugmentConfig())
    with pytest.raises(ValueError, match="data.foreground"):
        TrainDataset(df, tiny["bgs"], DataConfig(foreground="magic"), TrimapConfig(), AugmentConfig())
    photo = TrainDataset(df, tiny["bgs"], DataConfig(crop_sizes=[48], image_size=32, foreground="photo"),
                         TrimapConfig(), AugmentConfig(two_fg_prob=0.0))
    assert photo.files_for(1)[0] == ("image", df["image"][1])

    from mattingkit.data.foreground import ForegroundCache

    cache = ForegroundCache(tmp_path / "fg_cache")
    est = TrainDataset(df.assign(fg=""), tiny["bgs"], DataConfig(crop_sizes=[48], image_size=32, foreground="estimate"),
                       TrimapConfig(), AugmentConfig(two_fg_prob=0.0), fg_cache=cache)
    it = est[0]
    assert (tmp_path / "fg_cache" / "0000.png").exists()
    assert it["fg"].shape == (3, 32, 32)


def test_no_background_pool_uses_the_photo(tiny):
    data = DataConfig(crop_sizes=[48], image_size=40, foreground="photo")
    ds = TrainDataset(tiny["df"], [], data, TrimapConfig(), AugmentConfig(trimap_dropout=1.0, densify=0.5))
    it = ds[0]
    assert torch.equal(it["image"], it["fg"]) and torch.equal(it["image"], it["bg"])
    assert torch.all(it["trimap"] == 0.5) and torch.all(it["unknown"] == 1)
    assert it["alpha"].min() > 0.05                     # densified target


def test_bad_file_names_the_file(tiny, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    df = tiny["df"].copy()
    df.loc[0, "fg"] = str(bad)
    ds = TrainDataset(df, tiny["bgs"], DataConfig(crop_sizes=[48], image_size=32, foreground="given"),
                      TrimapConfig(), AugmentConfig(two_fg_prob=0.0))
    with pytest.raises(ValueError, match="broken.png"):
        ds[0]


# --------------------------------------------------------------------------------------------
# Compact transport: 8/16-bit items from the workers, float32 batches after batch_to_float
# --------------------------------------------------------------------------------------------
def test_quantise_rounds_to_nearest_never_truncates():
    x = (np.arange(256, dtype=np.float32) + np.float32(0.7)) / np.float32(255)     # k + 0.7 -> k + 1
    assert np.array_equal(quantise(np.minimum(x, 1), 255)[:255], np.arange(1, 256))
    v = np.random.default_rng(0).random((50, 60, 3)).astype(np.float32)
    assert np.array_equal(quantise(v, 255), np.rint(v * np.float32(255)).astype(np.uint8))
    a = np.random.default_rng(1).random((40, 30)).astype(np.float32)
    q = quantise(a, 65535, np.uint16)
    assert q.dtype == np.uint16 and np.abs(q / np.float32(65535) - a).max() <= 0.5 / 65535 + 1e-7
    assert quantise(np.array([-0.2, 1.3], np.float32), 255).tolist() == [0, 255]   # clipped, not wrapped
    exact = np.arange(256, dtype=np.uint8) / np.float32(255)                        # 8-bit data: exact
    assert np.array_equal(quantise(exact, 255), np.arange(256))


def test_compact_items_convert_to_the_float_items(tiny):
    aug = AugmentConfig(two_fg_prob=0.5)
    flt, cpt = _train(tiny, aug=aug, epoch_len=8), _train(tiny, aug=aug, epoch_len=8, compact=True)
    for i in range(8):
        f, c = flt[i], cpt[i]
        assert c["image"].dtype == c["fg"].dtype == c["bg"].dtype == c["trimap"].dtype == torch.uint8
        assert c["alpha"].dtype == torch.uint16 and "unknown" not in c and c["id"] == f["id"]
        nbytes = sum(v.numel() * v.element_size() for v in c.values() if isinstance(v, torch.Tensor))
        assert nbytes * 4 == sum(v.numel() * 4 for k, v in f.items() if k != "id")   # 12 bytes per pixel, not 48
        g = batch_to_float(c)
        assert set(g) == KEYS and all(g[k].dtype == torch.float32 and g[k].shape == f[k].shape for k in KEYS - {"id"})
        for k in ("image", "fg", "bg"):
            assert (g[k] - f[k]).abs().max() <= 0.5 / 255 + 1e-6, k
        assert torch.equal(g["bg"], f["bg"])                       # 8-bit data comes back bit-exact
        assert (g["alpha"] - f["alpha"]).abs().max() <= 0.5 / 65535 + 1e-7
        assert torch.equal(g["trimap"], f["trimap"]) and torch.equal(g["unknown"], f["unknown"])
        a = g["alpha"]                                             # the documented composition error bound
        assert (g["image"] - (a * g["fg"] + (1 - a) * g["bg"])).abs().max() <= 1 / 255 + 1e-5
    assert np.array_equal(flt.sample(3)["image"], cpt.sample(3)["image"])     # the same (float) samples


def test_compact_batches_through_dataloader_workers_and_to_device(tiny):
    from mattingkit.train import to_device

    cpt, flt = _train(tiny, epoch_len=6, compact=True), _train(tiny, epoch_len=6)
    loader = torch.utils.data.DataLoader(cpt, batch_size=3, num_workers=2, worker_init_fn=worker_init_fn)
    for b, ref in zip(loader, torch.utils.data.DataLoader(flt, batch_size=3)):
        assert b["alpha"].dtype == torch.uint16 and b["image"].shape == (3, 3, 32, 32)
        g = to_device(b, torch.device("cpu"))                      # the Trainer's conversion
        assert all(g[k].dtype == torch.float32 for k in KEYS - {"id"}) and g["id"] == ref["id"]
        assert torch.equal(g["trimap"], ref["trimap"]) and torch.equal(g["unknown"], ref["unknown"])
        assert (g["image"] - ref["image"]).abs().max() <= 0.5 / 255 + 1e-6
        # converting a batch equals converting its items
        one = batch_to_float({k: v[1] if isinstance(v, torch.Tensor) else v for k, v in b.items()})
        assert torch.equal(one["image"], g["image"][1]) and torch.equal(one["alpha"], g["alpha"][1])


def test_batch_to_float_is_a_no_op_on_float_batches_and_checks_trimaps(tiny):
    it = _train(tiny)[0]
    out = batch_to_float(it)
    assert out is not it and all(out[k] is it[k] for k in it)
    s = _train(tiny).sample(0)
    c = to_compact_item(s)
    assert set(c["trimap"].unique().tolist()) == {0, 128, 255} and c["trimap"].dtype == torch.uint8
    with pytest.raises(TypeError, match="trimap"):
        batch_to_float({"trimap": torch.zeros(1, 2, 2, dtype=torch.int32)})


# --------------------------------------------------------------------------------------------
# EvalDataset / TestDataset / collate
# --------------------------------------------------------------------------------------------
def test_eval_real_images_with_given_trimaps(tiny):
    ds = EvalDataset(tiny["df"])
    it = ds[1]
    row = tiny["df"].iloc[1]
    h, w = read_alpha(row["alpha"]).shape
    assert it["orig_size"] == (h, w) and it["image"].shape == (3, h, w)
    assert torch.equal(it["alpha"][0], torch.from_numpy(read_alpha(row["alpha"])))
    assert torch.equal(it["trimap"][0], torch.from_numpy(read_trimap(row["trimap"])))
    assert torch.equal(it["image"], torch.from_numpy(read_image(row["image"])).permute(2, 0, 1))
    assert torch.equal(it["fg"], it["image"]) and torch.equal(it["bg"], it["image"])
    assert _same(it, ds[1])


def test_eval_composites_are_fixed_and_capped(tiny):
    df = tiny["df"].assign(image="", trimap="")
    ds = EvalDataset(df, tiny["bgs"], TrimapConfig(), seed=0, max_side=50)
    a, b = ds[2], ds[2]
    assert _same(a, b)
    h, w = a["orig_size"]
    assert (h, w) == read_alpha(df["alpha"][2]).shape
    H, W = a["image"].shape[1:]
    assert max(H, W) == 50 and abs(H / W - h / w) < 0.05
    assert set(torch.unique(a["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
    al = a["alpha"]
    assert torch.allclose(a["image"], al * a["fg"] + (1 - al) * a["bg"], atol=1e-5)
    assert not torch.equal(ds[0]["bg"][:, :10, :10], ds[1]["bg"][:, :10, :10])   # bg by index


def test_eval_trimap_free_is_all_unknown(tiny):
    it = EvalDataset(tiny["df"], trimap_free=True)[0]
    assert torch.all(it["trimap"] == 0.5) and torch.all(it["unknown"] == 1)


def test_eval_needs_a_background_for_foregrounds(tiny):
    with pytest.raises(ValueError, match="background"):
        EvalDataset(tiny["df"].assign(image=""))


def test_test_dataset_keeps_string_stems(tmp_path, tiny):
    for stem in ("0001", "0010", "0100"):
        write_png(tmp_path / f"{stem}.png", np.full((20, 30, 3), 0.5, np.float32))
    ds = TestDataset(tmp_path)
    assert [ds[i]["id"] for i in range(3)] == ["0001", "0010", "0100"]
    it = ds[0]
    assert set(it) == {"image", "id", "orig_size"} and it["orig_size"] == (20, 30) and it["image"].shape == (3, 20, 30)
    capped = TestDataset(tmp_path, max_side=15)[0]
    assert capped["image"].shape == (3, 10, 15) and capped["orig_size"] == (20, 30)
    from_df = TestDataset(tiny["df"])
    assert from_df[0]["id"] == "0000"
    batch = collate([ds[0], ds[1]])
    assert batch["id"] == ["0001", "0010"] and batch["orig_size"] == [(20, 30), (20, 30)]
    assert batch["image"].shape == (2, 3, 20, 30)
    with pytest.raises(FileNotFoundError):
        TestDataset(tmp_path / "nope")


# --------------------------------------------------------------------------------------------
# End to end on the demo data and on the real alphamatting photos
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from mattingkit.data.synthetic import make_demo_data

    data_root = tmp_path_factory.mktemp("data")
    make_demo_data(data_root / "demo", seed=0)
    return data_root


def test_build_datasets_on_demo_data(demo_root, tmp_path):
    from mattingkit.data.layouts import build_manifest

    cfg = load_config("demo", {"run.data_root": str(demo_root), "data.crop_sizes": [64, 96], "data.image_size": 64})
    manifest = tmp_path / "manifest.csv"
    build_manifest(cfg, manifest)
    train_ds, val_ds = build_datasets(cfg, manifest)
    assert len(train_ds) > 0 and len(val_ds) > 0
    loader = torch.utils.data.DataLoader(train_ds, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert train_ds.compact and batch["image"].dtype == torch.uint8 and "unknown" not in batch
    batch = batch_to_float(batch)
    assert batch["image"].shape == (2, 3, 64, 64) and batch["alpha"].shape == (2, 1, 64, 64)
    assert all(batch[k].dtype == torch.float32 for k in KEYS - {"id"})
    assert all(isinstance(i, str) for i in batch["id"])
    assert (tmp_path / "fg_cache").is_dir()              # foregrounds estimated beside the manifest
    v = val_ds[0]
    h, w = v["orig_size"]
    assert max(v["image"].shape[1:]) <= cfg.data.val_max_side
    assert set(torch.unique(v["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
    assert v["alpha"].shape[1:] == v["image"].shape[1:]


def test_build_datasets_device_augmentation_and_ram_cache_on_demo_data(demo_root, tmp_path):
    """data.augment_on=device + data.cache=ram through build_datasets: workers send device items
    (estimated float foregrounds go as uint8), batch_to_float (the Trainer's to_device) renders them."""
    from mattingkit.data.layouts import build_manifest

    cfg = load_config("demo", {"run.data_root": str(demo_root), "data.crop_sizes": [64, 96], "data.image_size": 64,
                               "data.augment_on": "device", "data.cache": "ram", "trimap.method": "erode_dilate",
                               "augment.densify": 0.0})
    manifest = tmp_path / "manifest.csv"
    build_manifest(cfg, manifest)
    train_ds, _ = build_datasets(cfg, manifest)
    assert train_ds.augment_on == "device" and train_ds.cache_report["foregrounds"] == len(train_ds.rows)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=2, collate_fn=collate, num_workers=2,
                                         worker_init_fn=worker_init_fn)
    raw = next(iter(loader))
    assert raw["fg_src"].dtype == torch.uint8 and "image" not in raw
    batch = batch_to_float(raw)
    assert batch["image"].shape == (2, 3, 64, 64) and batch["trimap"].shape == (2, 1, 64, 64)
    assert all(batch[k].dtype == torch.float32 for k in KEYS - {"id"})
    assert set(torch.unique(batch["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
    assert load_config("demo").data.augment_on == "auto"


def test_ram_cache_filled_once_is_shared_with_a_forked_rank(demo_root, tmp_path, monkeypatch):
    """data.cache=ram: the notebook fills the cache while building the datasets (launch_notebook's
    prepare_foregrounds); a rank forked after that (notebook_launcher forks) builds its datasets and finds
    every source decoded already: it reads no file, and its items are the parent's."""
    import multiprocessing

    from mattingkit.data import datasets as DS
    from mattingkit.data.layouts import build_manifest

    cfg = load_config("demo", {"run.data_root": str(demo_root), "data.foreground": "photo", "data.cache": "ram",
                               "data.crop_sizes": [64], "data.image_size": 64, "run.device": "cpu"})
    manifest = tmp_path / "manifest.csv"
    build_manifest(cfg, manifest)
    reads: list[str] = []
    for name in ("read_image_uint8", "read_alpha_uint8"):
        real = getattr(DS, name)
        monkeypatch.setattr(DS, name, lambda path, _real=real: reads.append(str(path)) or _real(path))
    parent, _ = build_datasets(cfg, manifest)
    n_files = 2 * len(parent.rows) + len(parent.backgrounds)
    assert len(reads) == len(set(reads)) == n_files                 # each file read once, in the parent
    expected = parent[3]

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def rank():
        reads.clear()
        train_ds, _ = build_datasets(cfg, manifest)           # what each rank's Trainer does
        item = train_ds[3]
        queue.put((list(reads), train_ds.cache_report, {k: v.numpy() for k, v in item.items()
                                                         if isinstance(v, torch.Tensor)}))

    child = ctx.Process(target=rank)
    child.start()
    child_reads, report, item = queue.get(timeout=300)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert child_reads == [], child_reads[:5]
    assert report["shared"] == len(parent.rows) + len(parent.backgrounds) == report["foregrounds"] + report["backgrounds"]
    for k, v in item.items():
        assert np.array_equal(v, expected[k].numpy()), k


def test_build_datasets_competition_recipe_on_demo_data(demo_root, tmp_path):
    from mattingkit.data.layouts import build_manifest

    cfg = load_config("ecom", {"run.data_root": str(demo_root), "data.root": "demo/competition",
                               "data.crop_sizes": [96], "data.image_size": 64})
    manifest = tmp_path / "manifest.csv"
    build_manifest(cfg, manifest)
    train_ds, val_ds = build_datasets(cfg, manifest)
    it = batch_to_float(train_ds[0])                      # training items travel compact
    assert torch.equal(it["image"], it["fg"]) and torch.all(it["trimap"] == 0.5)
    assert it["alpha"].min() > 0                          # densified (data is already soft too)
    assert len(val_ds) >= 1
    assert torch.all(val_ds[0]["trimap"] == 0.5)          # trimap-free model: whole-image metrics


@pytest.mark.shared
def test_alphamatting_dev_as_eval_set(alphamatting_dev):
    from mattingkit.data.layouts import scan

    rows = scan("alphamatting", alphamatting_dev)
    assert len(rows) == 5
    ds = EvalDataset(rows, max_side=400)
    for i in range(len(ds)):
        it = ds[i]
        h, w = it["orig_size"]
        assert max(h, w) == 800
        H, W = it["image"].shape[1:]
        assert max(H, W) == 400 and abs(H / W - h / w) < 0.01
        assert set(torch.unique(it["trimap"]).tolist()) == {0.0, 0.5, 1.0}
        assert torch.equal(it["unknown"], (it["trimap"] == 0.5).float())
        # the capped alpha is the area-average of the full one (2x2 blocks when the size halves)
        full = read_alpha(rows["alpha"][i])
        if h % 2 == 0 and w % 2 == 0:
            ref = full.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            assert np.allclose(it["alpha"][0].numpy(), ref, atol=1e-5)


@pytest.mark.shared
def test_build_datasets_with_eval_root(alphamatting_dev, demo_root, tmp_path):
    from mattingkit.data.layouts import build_manifest

    cfg = load_config("demo", {"run.data_root": str(demo_root), "data.eval_root": str(alphamatting_dev),
                               "data.val_max_side": 256})
    manifest = tmp_path / "manifest.csv"
    build_manifest(cfg, manifest)
    _, val_ds = build_datasets(cfg, manifest)
    assert len(val_ds) == 5 and val_ds[0]["id"] == "GT01"
    assert max(val_ds[0]["image"].shape[1:]) == 256

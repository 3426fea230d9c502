"""The photo-like synthetic data of the cpu recipe (mattingkit.data.photoreal) and the cpu config.

Small sizes only (under a minute in all): sizes, value ranges, trimap band widths, determinism,
caching, the layout the trainer reads, and that the ``cpu`` config loads and builds its model.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mattingkit.data import photoreal as P
from mattingkit.io import read_alpha, read_image, read_trimap

SMALL = (256, 320)


def _band_width(trimap: np.ndarray) -> np.ndarray:
    """Per unknown pixel: distance to definite fg + distance to definite bg (the band's full width)."""
    fg = (trimap == 255).astype(np.uint8)
    bg = (trimap == 0).astype(np.uint8)
    d = cv2.distanceTransform(1 - fg, cv2.DIST_L2, 5) + cv2.distanceTransform(1 - bg, cv2.DIST_L2, 5)
    return d[trimap == 128]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pr") / "photoreal"
    return root, P.make_photoreal_data(root, seed=3, n_fg=3, n_backgrounds=2, long_side=SMALL)


def test_item_sizes_ranges_and_truth():
    it = P.make_photoreal_item(0, 1, long_side=SMALL)
    h, w = it["alpha"].shape
    assert SMALL[0] <= max(h, w) <= SMALL[1] and 0.6 * max(h, w) - 1 <= min(h, w)
    assert it["fg"].shape == it["bg"].shape == it["photo"].shape == (h, w, 3)
    assert it["alpha"].dtype == it["fg"].dtype == it["trimap"].dtype == np.uint8
    assert 0 <= it["photo"].min() and it["photo"].max() <= 1
    a = it["alpha"]
    assert (a == 255).any() and (a == 0).any() and ((a > 0) & (a < 255)).any()
    # the photo is the composite of the truth (plus a little sensor noise)
    af = a.astype(np.float32)[..., None] / 255
    comp = it["fg"] / 255.0 * af + it["bg"] / 255.0 * (1 - af)
    assert np.abs(comp - it["photo"]).mean() < 0.02
    # every soft pixel is unknown; definite regions agree with alpha
    t = it["trimap"]
    assert set(np.unique(t).tolist()) <= {0, 128, 255}
    assert (t[(a > 0) & (a < 255)] == 128).all()
    assert (a[t == 255] == 255).all() and (a[t == 0] == 0).all()


def test_default_scale_and_real_width_bands():
    """At the default scale: 0.5-1.4 Mpx, and unknown bands as wide as real Trimap1 bands (17-114 px median)."""
    it = P.make_photoreal_item(0, 0)
    h, w = it["alpha"].shape
    assert 800 <= max(h, w) <= 1200 and 0.35e6 <= h * w <= 1.45e6
    widths = _band_width(it["trimap"])
    assert 16 <= np.median(widths) <= 200
    assert 0.02 < (it["trimap"] == 128).mean() < 0.6


def test_deterministic_for_a_seed():
    a, b = P.make_photoreal_item(5, 2, long_side=SMALL), P.make_photoreal_item(5, 2, long_side=SMALL)
    for k in ("fg", "bg", "alpha", "trimap"):
        assert np.array_equal(a[k], b[k]), k
    c = P.make_photoreal_item(6, 2, long_side=SMALL)
    assert not np.array_equal(a["alpha"], c["alpha"]) or not np.array_equal(a["bg"], c["bg"])


def test_background_and_foreground_functions():
    rng = np.random.default_rng(0)
    bg = P.make_photoreal_background(rng, 90, 120)
    assert bg.shape == (90, 120, 3) and bg.dtype == np.float32 and 0 <= bg.min() and bg.max() <= 1
    assert bg.std() > 0.01  # not flat
    fg, a = P.make_photoreal_foreground(np.random.default_rng(2), 200, 160)
    assert fg.shape == (200, 160, 3) and a.shape == (200, 160)
    assert 0 <= a.min() and a.max() <= 1 and 0 <= fg.min() and fg.max() <= 1


def _closed_form_bias(n: int = 8, long_side=(400, 400)) -> float:
    """Mean over items of (truth - closed-form) on the pixels closed-form calls soft."""
    from mattingkit.baselines import predict_baseline

    out = []
    for i in range(n):
        it = P.make_photoreal_item(0, i, long_side=long_side)
        tri = np.where(it["trimap"] == 128, 0.5, it["trimap"] / 255.0)
        cf = predict_baseline("closed_form", it["photo"], tri)
        soft = (tri == 0.5) & (cf > 0.02) & (cf < 0.98)
        out.append(float((it["alpha"] / 255.0 - cf)[soft].mean()))
    return float(np.mean(out))


def test_hair_core_makes_closed_form_as_unbiased_as_on_real_photos(monkeypatch):
    """Closed-form matting must be wrong on this data the way it is on photographs, or a model that
    refines it (the cpu recipe) learns corrections that photographs do not need. On the five
    alphamatting photos its soft pixels are unbiased (truth - closed-form: +0.01); without the
    hair-coloured core under hair and fur (version 1) it read the strands as background: measured
    +0.10 here (+0.18 at full size), +0.04 with the core."""
    with_core = _closed_form_bias()
    monkeypatch.setattr(P, "HAIR_CORE", (0.0, 0.0))
    without = _closed_form_bias()
    assert with_core < 0.06 and without > 0.08 and without - with_core > 0.04, (with_core, without)


def test_layout_cache_and_trainer_reads_it(data):
    root, s = data
    assert s["created"] and s["counts"] == {"fg": 3, "backgrounds": 2}
    stems = sorted(p.stem for p in (root / "aim500" / "original").glob("*.jpg"))
    assert stems == ["pr_000", "pr_001", "pr_002"]
    for sub in ("aim500/mask", "aim500/trimap", "truth/fg", "truth/alpha", "truth/bg", "truth/trimaps"):
        assert sorted(p.stem for p in (root / sub).glob("*.png")) == stems, sub
    img = read_image(root / "aim500" / "original" / "pr_000.jpg")
    assert img.shape[:2] == read_alpha(root / "aim500" / "mask" / "pr_000.png").shape
    assert set(np.unique(read_trimap(root / "aim500" / "trimap" / "pr_000.png")).tolist()) <= {0.0, 0.5, 1.0}
    marker = json.loads((root / "photoreal.json").read_text())
    assert marker["version"] == P.PHOTOREAL_VERSION and marker["seed"] == 3
    # cached: the same call writes nothing; another option does
    again = P.make_photoreal_data(root, seed=3, n_fg=3, n_backgrounds=2, long_side=SMALL)
    assert again["created"] is False
    # the layouts the trainer scans
    from mattingkit.data.layouts import scan

    adobe = scan("adobe", root / "truth")
    assert len(adobe) == 3 and (adobe["fg"] != "").all() and (adobe["bg"] != "").all()
    assert len(scan("aim500", root / "aim500")) == 3


def test_train_dataset_on_photoreal(data, tmp_path):
    """The cpu recipe's data settings produce training items from the generated data."""
    from mattingkit.config import load_config
    from mattingkit.data.datasets import build_datasets
    from mattingkit.data.layouts import build_manifest

    root, _ = data
    cfg = load_config("cpu", [f"data.root={root / 'truth'}", f"data.backgrounds={root / 'backgrounds'}",
                              "data.val_fraction=0.0", "data.crop_sizes=[160]", "data.image_size=160"])
    build_manifest(cfg, tmp_path / "m.csv")
    train_ds, _ = build_datasets(cfg, tmp_path / "m.csv", compact=False)
    item = train_ds[0]
    assert item["image"].shape == (3, 160, 160) and set(np.unique(item["trimap"].numpy())) <= {0.0, 0.5, 1.0}


def test_cpu_config_loads_and_builds():
    import torch

    from mattingkit.config import load_config
    from mattingkit.models import build_model
    from mattingkit.models.alphagan import guides

    cfg = load_config("cpu")
    assert cfg.data.crop_sizes == [cfg.data.image_size]  # native-scale crops: the photos are evaluated unresized
    assert cfg.trimap.band_width >= 40 and cfg.train.use_gan is False
    assert cfg.model.pretrained is False and cfg.run.device == "cpu"
    assert cfg.data.root.startswith("photoreal") and cfg.data.eval_root is None
    assert cfg.model.guide == "closed_form"
    g = build_model(cfg.model)
    img, tri = torch.rand(1, 3, 64, 64), torch.full((1, 1, 64, 64), 0.5)
    out = g(img, tri, guide=guides(g, img, tri))
    assert out["alpha"].shape == (1, 1, 64, 64)
    assert torch.equal(out["alpha"], out["guide"]) and (out["guide"] == 0.5).all()  # untrained: the solver

"""The embedded demo dataset (mattingkit.data.synthetic): layouts, matting realism, truth, determinism.

The full default dataset is written once per module (its generation time is printed: run with -s);
the checks read it back through mattingkit.io like the real loaders do.
"""
from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mattingkit.compose import composite
from mattingkit.data import synthetic as S
from mattingkit.data.drawing import layer_gradient
from mattingkit.io import png_bytes, read_alpha, read_image, read_trimap

COUNTS = {"aim500": 24, "backgrounds": 16, "competition_train": 8, "competition_test": 4}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    t0 = time.perf_counter()
    summary = S.make_demo_data(root, seed=0)
    elapsed = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"\nmake_demo_data(seed=0, default counts): {elapsed:.2f} s, {size_mb:.1f} MB on disk")
    assert elapsed < 60, f"demo data took {elapsed:.1f} s (budget 30 s on 2 cores)"
    assert size_mb < 25
    return root, summary


def _stems(folder: Path, ext: str) -> list[str]:
    files = sorted(folder.iterdir())
    assert files, f"{folder} is empty"
    assert all(p.suffix == ext for p in files), [p.name for p in files if p.suffix != ext]
    return [p.stem for p in files]


def _aim_items(root: Path):
    for p in sorted((root / "aim500" / "mask").glob("*.png")):
        yield p.stem, read_alpha(p)


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------
def test_layout_files_and_stems(demo):
    root, summary = demo
    assert summary["created"] is True and summary["seed"] == 0 and summary["counts"] == COUNTS
    assert Path(summary["root"]) == root
    aim = root / "aim500"
    names = _stems(aim / "original", ".jpg")
    assert names == [f"demo_{i:03d}" for i in range(24)]
    for folder in (aim / "mask", aim / "trimap", root / "truth" / "fg", root / "truth" / "bg"):
        assert _stems(folder, ".png") == names, folder

    bgs = sorted(p for p in (root / "backgrounds").rglob("*") if p.is_file())
    assert len(bgs) == 16
    assert {p.suffix for p in bgs} == {".jpg", ".png"}
    depth = max(len(p.relative_to(root / "backgrounds").parts) for p in bgs)
    assert len({p.parent for p in bgs}) >= 3 and depth >= 3  # nested folders
    sizes = [Image.open(p).size for p in bgs]
    assert all(200 <= w <= 640 and 200 <= h <= 640 for w, h in sizes)
    assert len(set(sizes)) > 8

    train = root / "competition" / "train_dataset"
    stems = _stems(train / "images", ".jpg")
    assert stems == [f"{i:04d}" for i in range(1, 9)]
    assert _stems(train / "masks", ".png") == stems
    test_stems = _stems(root / "competition" / "test_dataset" / "orig_1024", ".png")
    assert test_stems == ["0001", "0002", "0003", "0004"]

    marker = json.loads((root / "demo.json").read_text())
    assert marker["seed"] == 0 and marker["counts"] == COUNTS and marker["version"] == S.DEMO_VERSION
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"demo.json"}
    assert set(marker["files"]) == on_disk
    assert not [p for p in root.rglob(".*")], "temporary files left behind"


def test_aim_files_decode_with_matching_sizes(demo):
    root, _ = demo
    shapes = []
    for name, alpha in _aim_items(root):
        photo = read_image(root / "aim500" / "original" / f"{name}.jpg")
        trimap = read_trimap(root / "aim500" / "trimap" / f"{name}.png")
        fg = read_image(root / "truth" / "fg" / f"{name}.png")
        bg = read_image(root / "truth" / "bg" / f"{name}.png")
        h, w = alpha.shape
        assert 192 <= h <= 320 and 192 <= w <= 320
        assert photo.shape == fg.shape == bg.shape == (h, w, 3)
        assert trimap.shape == (h, w) and set(np.unique(trimap).tolist()) == {0.0, 0.5, 1.0}
        shapes.append((h, w))
        with Image.open(root / "aim500" / "mask" / f"{name}.png") as im:
            assert im.mode == "L"
    assert sum(h != w for h, w in shapes) > len(shapes) // 2, "sizes should vary, not all square"


def test_trimap_unknown_covers_every_soft_pixel(demo):
    root, _ = demo
    for name, alpha in _aim_items(root):
        tri = read_trimap(root / "aim500" / "trimap" / f"{name}.png")
        soft = (alpha > 0) & (alpha < 1)
        assert np.all(tri[soft] == 0.5), name
        assert np.all(alpha[tri == 1] == 1) and np.all(alpha[tri == 0] == 0), name
        # a few px of dilation beyond the soft pixels, but not a trimap that is all unknown
        extra = (tri == 0.5) & ~soft
        assert extra.sum() > 0.2 * soft.sum() and (tri == 0.5).mean() < 0.8, name


# ------------------------------------------------------------------------------------------------
# matting realism
# ------------------------------------------------------------------------------------------------
def _opening_loss(alpha: np.ndarray) -> float:
    """Share of alpha mass removed by a 3x3 grey opening: thin (1-2 px) structures vanish under it."""
    opened = cv2.morphologyEx(alpha, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return float((alpha - opened).sum() / alpha.sum())


def _hole_ring_alpha(alpha: np.ndarray, min_area: int = 20) -> float:
    """Largest mean alpha around an enclosed alpha==0 region (0 when there is none): a hole in an
    opaque object has ~1 around it; gaps between hair strands have much less."""
    zero = (alpha == 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(zero, connectivity=4)
    best = 0.0
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if x == 0 or y == 0 or x + w == alpha.shape[1] or y + h == alpha.shape[0] or area < min_area:
            continue
        comp = (labels == i).astype(np.uint8)
        ring = cv2.dilate(comp, np.ones((9, 9), np.uint8)).astype(bool) & ~cv2.dilate(
            comp, np.ones((3, 3), np.uint8)).astype(bool)
        best = max(best, float(alpha[ring].mean()))
    return best


def _wide_semi_transparent(alpha: np.ndarray) -> int:
    """Pixels of 0.25<alpha<0.75 regions that survive a 5x5 erosion (edges and strands do not)."""
    mid = ((alpha > 0.25) & (alpha < 0.75)).astype(np.uint8)
    return int(cv2.erode(mid, np.ones((5, 5), np.uint8)).sum())


def test_checks_reject_a_plain_blob():
    """The realism measures below are not trivially true: a feathered disc fails all of them."""
    disc = np.zeros((256, 256), np.float32)
    cv2.circle(disc, (128, 128), 80, 1.0, -1, cv2.LINE_AA)
    disc = np.rint(cv2.GaussianBlur(disc, (0, 0), 1.5) * 255) / 255
    assert _opening_loss(disc) < 0.002
    assert _hole_ring_alpha(disc) == 0.0
    assert _wide_semi_transparent(disc) == 0


def test_soft_alpha_strands_veil_and_holes(demo):
    root, _ = demo
    for name, alpha in _aim_items(root):
        obj = alpha > 0
        soft_share = float(((alpha > 0) & (alpha < 1)).sum() / obj.sum())
        assert 0.03 < soft_share < 0.9, (name, soft_share)
        assert 0.05 < obj.mean() < 0.9, name
        assert _opening_loss(alpha) > 0.012, (name, "no thin strands")
        assert _hole_ring_alpha(alpha) > 0.75, (name, "no hole inside the object")
        assert _wide_semi_transparent(alpha) >= 50, (name, "no semi-transparent region")
        # partial alpha on the strands themselves (not only 0/1 lines)
        thin = alpha - cv2.morphologyEx(alpha, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        vals = alpha[thin > 0.1]
        assert ((vals > 0.05) & (vals < 0.95)).mean() > 0.5, name


def test_original_is_the_composite_of_the_truth(demo):
    root, _ = demo
    for name, alpha in _aim_items(root):
        photo = read_image(root / "aim500" / "original" / f"{name}.jpg")
        fg = read_image(root / "truth" / "fg" / f"{name}.png")
        bg = read_image(root / "truth" / "bg" / f"{name}.png")
        err = np.abs(photo - composite(fg, bg, alpha)) * 255
        assert err.mean() < 4.0 and np.percentile(err, 99) < 20, (name, err.mean())
        # the wrong background would not fit: the check can fail
        other = np.roll(bg, 50, axis=1)
        assert (np.abs(photo - composite(fg, other, alpha)) * 255).mean() > 3 * err.mean()
        # foreground estimation has work to do: fg differs from the photo where alpha is soft
        soft = (alpha > 0.1) & (alpha < 0.9)
        assert float(np.abs(fg - photo)[soft].mean()) > 0.03, name


# ------------------------------------------------------------------------------------------------
# competition
# ------------------------------------------------------------------------------------------------
def test_competition_images_and_density_masks(demo):
    root, _ = demo
    train = root / "competition" / "train_dataset"
    for p in sorted((train / "masks").glob("*.png")):
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (1024, 1024)
        m = np.rint(read_alpha(p) * 255)
        assert read_image(train / "images" / f"{p.stem}.jpg").shape == (1024, 1024, 3)
        bg_level = np.median(m)
        assert 26 <= bg_level <= 40, (p.name, bg_level)  # background about 28-35 grey
        assert (m < 20).mean() < 0.001  # never a clean 0 background
        obj = m > 60
        assert 0.03 < obj.mean() < 0.7
        grey = ((m > 60) & (m < 230)).sum() / obj.sum()
        assert grey > 0.2, (p.name, grey)  # grey tones inside, not a binary cut-out
    for p in sorted((root / "competition" / "test_dataset" / "orig_1024").glob("*.png")):
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == (1024, 1024)


def test_sample_submission_format(demo):
    root, _ = demo
    csv = root / "competition" / "sample_submission.csv"
    raw = csv.read_bytes()
    assert raw.startswith(b"filename,image_utf\n") and b"\r" not in raw and not raw.startswith(b"\xef\xbb\xbf")
    df = pd.read_csv(csv, dtype=str)
    assert list(df.columns) == ["filename", "image_utf"]
    test_stems = sorted(p.stem for p in (root / "competition" / "test_dataset" / "orig_1024").glob("*.png"))
    assert df["filename"].tolist() == test_stems
    assert df["filename"].str.fullmatch(r"\d{4}").all()
    for s in df["image_utf"]:
        data = base64.b64decode(s, validate=True)
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and im.mode == "L" and im.size == (1024, 1024)
        arr = np.asarray(im)
        assert png_bytes(arr) == data  # Pillow's default writer, as the organisers'
        assert 26 <= np.median(arr) <= 40


def test_background_level_matches_the_real_example(demo, ecom_example):
    """Our competition masks' background grey sits where the organisers' example has it."""
    root, _ = demo
    real = pd.read_csv(ecom_example, dtype=str)
    real_levels = [np.median(np.asarray(Image.open(io.BytesIO(base64.b64decode(s))))) for s in real["image_utf"]]
    ours = [np.median(np.rint(read_alpha(p) * 255)) for p in
            sorted((root / "competition" / "train_dataset" / "masks").glob("*.png"))]
    assert abs(np.mean(ours) - np.mean(real_levels)) < 10, (ours, real_levels)


# ------------------------------------------------------------------------------------------------
# determinism, marker, arguments
# ------------------------------------------------------------------------------------------------
def test_determinism_same_seed_same_bytes(demo, tmp_path):
    root, _ = demo
    small = dict(n_aim=3, n_backgrounds=2, n_comp_train=1, n_comp_test=1)
    other = S.make_demo_data(tmp_path / "a", seed=0, **small)
    assert other["created"]
    # every item has its own generator, so the first items equal those of the full dataset
    written = json.loads((tmp_path / "a" / "demo.json").read_text())["files"]
    for rel in written:
        if rel.endswith(".csv"):
            continue
        assert (tmp_path / "a" / rel).read_bytes() == (root / rel).read_bytes(), rel
    # another seed gives other data
    S.make_demo_data(tmp_path / "b", seed=1, **small)
    for rel in ("aim500/mask/demo_000.png", "competition/train_dataset/masks/0001.png"):
        assert (tmp_path / "b" / rel).read_bytes() != (root / rel).read_bytes(), rel


def test_second_call_is_a_noop_force_and_stale_files(tmp_path):
    small = dict(n_aim=3, n_backgrounds=2, n_comp_train=1, n_comp_test=1)
    first = S.make_demo_data(tmp_path, seed=2, **small)
    mask = tmp_path / "aim500" / "mask" / "demo_002.png"
    stamp = mask.stat().st_mtime_ns
    again = S.make_demo_data(tmp_path, seed=2, **small)
    assert first["created"] and not again["created"] and mask.stat().st_mtime_ns == stamp
    forced = S.make_demo_data(tmp_path, seed=2, force=True, **small)
    assert forced["created"] and mask.stat().st_mtime_ns != stamp
    # a missing file makes the marker stale: the data is written again
    mask.unlink()
    assert S.make_demo_data(tmp_path, seed=2, **small)["created"] and mask.exists()
    # fewer items: files of the old run that are not written again are removed, others kept
    keep = tmp_path / "mine.txt"
    keep.write_text("not ours")
    S.make_demo_data(tmp_path, seed=2, **dict(small, n_aim=2))
    assert not mask.exists() and (tmp_path / "aim500" / "mask" / "demo_001.png").exists() and keep.exists()


def test_default_root_follows_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MATTINGKIT_DATA_ROOT", str(tmp_path))
    s = S.make_demo_data(n_aim=1, n_backgrounds=1, n_comp_train=1, n_comp_test=1)
    assert Path(s["root"]) == tmp_path / "demo" and (tmp_path / "demo" / "demo.json").exists()


@pytest.mark.parametrize("kwargs", [dict(seed=-1), dict(n_aim=0), dict(n_comp_test=1.5), dict(seed="0")])
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        S.make_demo_data(tmp_path, **kwargs)
    assert not (tmp_path / "demo.json").exists()


# ------------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------------
def test_pure_generators_deterministic_and_in_range():
    fg1, a1 = S.make_foreground(np.random.default_rng(7), 200, 240)
    fg2, a2 = S.make_foreground(np.random.default_rng(7), 200, 240)
    fg3, a3 = S.make_foreground(np.random.default_rng(8), 200, 240)
    assert np.array_equal(a1, a2) and np.array_equal(fg1, fg2) and not np.array_equal(a1, a3)
    assert fg1.shape == (200, 240, 3) and a1.shape == (200, 240)
    assert fg1.dtype == a1.dtype == np.float32
    assert 0 <= a1.min() and a1.max() <= 1 and 0 <= fg1.min() and fg1.max() <= 1
    # several distinct colours on the foreground
    assert fg1[a1 == 1].std(axis=0).mean() > 0.03

    bg = S.make_background(np.random.default_rng(3), 150, 170)
    assert bg.shape == (150, 170, 3) and bg.dtype == np.float32 and 0 <= bg.min() and bg.max() <= 1
    assert np.array_equal(bg, S.make_background(np.random.default_rng(3), 150, 170))
    # busy: edges survive a slight blur (which removes grain); a plain gradient has none
    def edge_share(img):
        gy, gx = np.gradient(cv2.GaussianBlur(img, (0, 0), 1.0).mean(axis=2))
        return float((np.hypot(gx, gy) > 0.02).mean())

    assert edge_share(layer_gradient(np.random.default_rng(0), 150, 170)) == 0.0
    shares = [edge_share(S.make_background(np.random.default_rng(s), 150, 170)) for s in range(10)]
    assert min(shares) > 0.02 and np.mean(shares) > 0.1, shares

    mask, cov = S.make_dense_alpha(np.random.default_rng(4), 256, 256)
    assert mask.shape == cov.shape == (256, 256) and mask.dtype == np.float32
    assert cov[mask < 0.15].max() < 0.1 and cov.max() > 0.8  # the photo shows the product where the mask does
    assert 26 <= np.median(mask[cov == 0]) * 255 <= 40


def test_trimap_from_alpha8_and_input_checks():
    a8 = np.zeros((20, 20), np.uint8)
    a8[5:15, 5:15] = 255
    a8[10, 10] = 100
    tri = S.trimap_from_alpha8(a8, 2)
    assert tri[10, 10] == 0.5 and tri[5, 5] == 0.5 and tri[0, 0] == 0 and tri[4, 10] == 0.5
    assert tri[12, 7] == 1 and tri[2, 2] == 0  # known fg and bg outside the band
    with pytest.raises(ValueError):
        S.trimap_from_alpha8(a8.astype(np.float32), 2)
    with pytest.raises(ValueError, match="at least"):
        S.make_foreground(np.random.default_rng(0), 10, 100)
    with pytest.raises(TypeError, match="Generator"):
        S.make_background(0, 32, 32)

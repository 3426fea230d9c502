"""Dataset layouts, validation (all problems in one report), group split, manifests, build_manifest."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mattingkit.data import layouts as L
from mattingkit.data.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest
from mattingkit.io import png_bytes, write_png


# ------------------------------------------------------------------------------------------
# builders
# ------------------------------------------------------------------------------------------
def rgb(h=12, w=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def alpha(h=12, w=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed + 100).random((h, w)).astype(np.float32)


def trimap(h=12, w=16, unknown=True) -> np.ndarray:
    t = np.zeros((h, w), np.float32)
    t[h // 2:, :] = 1.0
    if unknown:
        t[h // 2 - 2: h // 2 + 2, :] = 0.5
    return t


def write_jpeg(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(arr * 255).astype(np.uint8)).save(path, quality=95)
    return path


def make_aim500(root: Path) -> dict[str, str]:
    """An AIM-500-style folder with 3 good items and one item per kind of problem.

    Returns {id: expected problem kind} for the bad ones.
    """
    for i, stem in enumerate(["0001", "0002", "0010"]):  # good, zero-padded stems
        write_jpeg(root / "original" / f"{stem}.jpg", rgb(seed=i))
        write_png(root / "mask" / f"{stem}.png", alpha(seed=i))
        write_png(root / "trimap" / f"{stem}.png", trimap())
    bad = {}
    # 0-byte original
    (root / "original" / "empty.jpg").write_bytes(b"")
    write_png(root / "mask" / "empty.png", alpha())
    write_png(root / "trimap" / "empty.png", trimap())
    bad["empty"] = L.EMPTY_FILE
    # truncated PNG alpha (header intact, data cut)
    write_jpeg(root / "original" / "trunc.jpg", rgb())
    full = png_bytes(alpha(seed=5))
    (root / "mask" / "trunc.png").write_bytes(full[: len(full) // 2])
    write_png(root / "trimap" / "trunc.png", trimap())
    bad["trunc"] = L.TRUNCATED
    # size mismatch: alpha smaller than the photo
    write_jpeg(root / "original" / "size.jpg", rgb())
    write_png(root / "mask" / "size.png", alpha(h=6, w=8))
    write_png(root / "trimap" / "size.png", trimap())
    bad["size"] = L.SIZE_MISMATCH
    # missing partner: photo without mask, and a mask without photo
    write_jpeg(root / "original" / "lonely.jpg", rgb())
    write_png(root / "trimap" / "lonely.png", trimap())
    bad["lonely"] = L.MISSING_PARTNER
    write_png(root / "mask" / "orphan.png", alpha())
    write_png(root / "trimap" / "orphan.png", trimap())
    bad["orphan"] = L.MISSING_PARTNER
    # trimap without unknown region (pixel check)
    write_jpeg(root / "original" / "notri.jpg", rgb())
    write_png(root / "mask" / "notri.png", alpha())
    write_png(root / "trimap" / "notri.png", trimap(unknown=False))
    bad["notri"] = L.TRIMAP_NO_UNKNOWN
    # RGB alpha whose channels differ (pixel check)
    write_jpeg(root / "original" / "rgbalpha.jpg", rgb())
    write_png(root / "mask" / "rgbalpha.png", rgb(seed=9))
    write_png(root / "trimap" / "rgbalpha.png", trimap())
    bad["rgbalpha"] = L.ALPHA_NOT_SINGLE
    # not an image at all
    (root / "original" / "junk.png").write_bytes(b"this is not a png" * 20)
    write_png(root / "mask" / "junk.png", alpha())
    write_png(root / "trimap" / "junk.png", trimap())
    bad["junk"] = L.UNREADABLE
    # duplicate id: two originals with the same stem
    write_jpeg(root / "original" / "dup.jpg", rgb())
    write_png(root / "original" / "dup.png", rgb())
    write_png(root / "mask" / "dup.png", alpha())
    write_png(root / "trimap" / "dup.png", trimap())
    bad["dup"] = L.DUPLICATE_ID
    return bad


# ------------------------------------------------------------------------------------------
# validation: every problem in one report
# ------------------------------------------------------------------------------------------
def test_validate_reports_every_problem_at_once(tmp_path: Path):
    root = tmp_path / "aim"
    bad = make_aim500(root)
    df = L.scan_aim500(root)
    assert list(df.columns) == MANIFEST_COLUMNS
    assert {"0001", "0002", "0010"} <= set(df["id"])  # stems preserved as strings
    report = L.validate(df, check_pixels=True)
    kinds_by_id: dict[str, set[str]] = {}
    for p in report.problems:
        kinds_by_id.setdefault(p.id, set()).add(p.kind)
    for item, kind in bad.items():
        assert kind in kinds_by_id.get(item, set()), (item, kinds_by_id.get(item))
    assert set(kinds_by_id) == set(bad)  # no false alarms on the good items
    # duplicates: the first stays (if otherwise fine), later ones are excluded
    assert sorted(report.good_df["id"]) == ["0001", "0002", "0010", "dup"]
    assert report.n_items == len(df) and report.n_bad == len(df) - 4
    for kind in set(bad.values()):
        assert report.counts[kind] >= 1
    good = report.good_df.set_index("id")
    assert (good.loc["0001", "width"], good.loc["0001", "height"]) == (16, 12)
    text = report.summary()
    for kind in set(bad.values()):
        assert kind in text
    csv = report.to_csv(tmp_path / "problems.csv")
    back = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert len(back) == len(report.problems) and set(back["kind"]) == set(report.counts)


def test_header_mode_skips_pixel_checks_but_catches_truncation(tmp_path: Path):
    root = tmp_path / "aim"
    make_aim500(root)
    report = L.validate(L.scan_aim500(root), check_pixels=False)
    kinds = {p.id: p.kind for p in report.problems}
    assert kinds["trunc"] == L.TRUNCATED  # found from the missing PNG end chunk, without decoding
    assert "notri" not in kinds and "rgbalpha" not in kinds
    assert not report.check_pixels


def test_truncated_jpeg_detected_in_header_mode(tmp_path: Path):
    p = write_jpeg(tmp_path / "im" / "a.jpg", rgb(64, 64))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    write_png(tmp_path / "gt" / "a.png", alpha(64, 64))
    report = L.validate(L.scan_folder(tmp_path))
    assert [p.kind for p in report.problems] == [L.TRUNCATED]


def test_rgba_cutout_alpha_is_fine_and_gray_rgb_alpha_is_fine(tmp_path: Path):
    a = alpha()
    rgba = np.dstack([rgb(), a])  # a cut-out PNG: the matte is the alpha channel
    write_png(tmp_path / "im" / "x.png", rgb())
    write_png(tmp_path / "gt" / "x.png", rgba)
    write_png(tmp_path / "im" / "y.png", rgb())
    write_png(tmp_path / "gt" / "y.png", np.dstack([a, a, a]))  # RGB with equal channels
    report = L.validate(L.scan_folder(tmp_path), check_pixels=True)
    assert report.ok, report.summary()


def test_auto_pixel_checks_for_small_sets(tmp_path: Path):
    root = tmp_path / "aim"
    make_aim500(root)
    report = L.validate(L.scan_aim500(root), check_pixels=None)
    assert report.check_pixels and L.TRIMAP_NO_UNKNOWN in report.counts


def test_validate_survives_10000_files_with_bad_ones(tmp_path: Path):
    root = tmp_path / "big"
    for d in ("original", "mask", "trimap"):
        (root / d).mkdir(parents=True)
    img, a, t = png_bytes(rgb(8, 8)), png_bytes(alpha(8, 8)), png_bytes(trimap(8, 8))
    src = {"original": root / "src_img.png", "mask": root / "src_a.png", "trimap": root / "src_t.png"}
    for key, data in (("original", img), ("mask", a), ("trimap", t)):
        src[key].write_bytes(data)
    n = 3334
    for i in range(n):
        for d, s in src.items():
            os.link(s, root / d / f"{i:05d}.png")
    # a handful of bad files among them
    for i in (17, 2500):
        os.unlink(root / "mask" / f"{i:05d}.png")
        (root / "mask" / f"{i:05d}.png").write_bytes(b"")
    os.unlink(root / "original" / "03000.png")
    (root / "original" / "03000.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    os.unlink(root / "trimap" / "00042.png")
    df = L.scan_aim500(root)
    assert len(df) == n
    report = L.validate(df, show_progress=False)
    assert sorted(report.bad_ids) == ["00017", "00042", "02500", "03000"]
    assert report.counts == {L.EMPTY_FILE: 2, L.MISSING_PARTNER: 1, L.UNREADABLE: 1}
    assert report.n_good == n - 4


def test_validate_explicit_required_roles(tmp_path: Path):
    write_png(tmp_path / "im" / "a.png", rgb())
    write_png(tmp_path / "gt" / "a.png", alpha())
    df = L.scan_folder(tmp_path)
    assert L.validate(df).ok
    r = L.validate(df, required=["image", "alpha", "trimap"])
    assert r.counts == {L.MISSING_PARTNER: 1}


# ------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------
def test_scan_competition_nested_and_test(tmp_path: Path):
    top = tmp_path / "ecom" / "extra-top-folder"  # a zip's own top folder
    for stem in ("0001", "0002", "0100"):
        write_jpeg(top / "train_dataset" / "images" / f"{stem}.jpg", rgb())
        write_png(top / "train_dataset" / "masks" / f"{stem}.png", alpha())
    for stem in ("0001", "0007"):
        write_png(top / "test_dataset" / "orig_1024" / f"{stem}.png", rgb())
    df = L.scan_competition(tmp_path / "ecom")
    assert df["id"].tolist() == ["0001", "0002", "0100"]
    assert (df["source"] == "competition").all() and (df["trimap"] == "").all()
    assert L.validate(df).ok
    test = L.scan_competition_test(tmp_path / "ecom")
    assert test["id"].tolist() == ["0001", "0007"] and (test["split"] == "test").all()
    assert (test["alpha"] == "").all() and (test["source"] == "competition_test").all()
    assert L.validate(test).ok
    assert L.scan("competition_test", tmp_path / "ecom")["id"].tolist() == ["0001", "0007"]


@pytest.mark.parametrize("img_dir,mask_dir", [("orig_1024", "mask_1024"), ("image", "alphas"), ("Images", "Masks")])
def test_scan_competition_folder_aliases(tmp_path: Path, img_dir: str, mask_dir: str):
    write_jpeg(tmp_path / "train_dataset" / img_dir / "0003.jpg", rgb())
    write_png(tmp_path / "train_dataset" / mask_dir / "0003.png", alpha())
    df = L.scan_competition(tmp_path)
    assert df["id"].tolist() == ["0003"] and df.loc[0, "alpha"].endswith("0003.png")


def test_scan_adobe_with_bg_names_and_test_split(tmp_path: Path):
    train = tmp_path / "Training_set" / "Adobe-licensed images"
    for name in ("cat", "dog", "unlisted"):
        write_png(train / "fg" / f"{name}.png", rgb())
        write_png(train / "alpha" / f"{name}.png", alpha())
    (tmp_path / "Training_set" / "training_fg_names.txt").write_text("cat.png\ndog.png\n")
    test = tmp_path / "Test_set" / "Adobe-licensed images"
    write_png(test / "fg" / "bird.png", rgb())
    write_png(test / "alpha" / "bird.png", alpha())
    write_png(test / "bg" / "bird.png", rgb(20, 30))  # bg may differ in size
    write_png(test / "trimaps" / "bird.png", trimap())
    df = L.scan_adobe(tmp_path)
    assert sorted(df["id"]) == ["bird", "cat", "dog"]
    rows = df.set_index("id")
    assert rows.loc["bird", "split"] == "test" and rows.loc["cat", "split"] == ""
    assert rows.loc["bird", "bg"].endswith("bird.png") and rows.loc["bird", "trimap"]
    assert (df["image"] == "").all() and (df["source"] == "adobe").all()
    report = L.validate(df)
    assert report.ok, report.summary()
    assert set(report.good_df["width"]) == {16}  # from fg (no image)
    assert len(L.scan_adobe(tmp_path, use_names_lists=False)) == 4


def test_scan_folder_dis5k_and_explicit(tmp_path: Path):
    for stem in ("a", "b"):
        write_jpeg(tmp_path / "DIS-TR" / "im" / f"{stem}.jpg", rgb())
        write_png(tmp_path / "DIS-TR" / "gt" / f"{stem}.png", alpha())
    df = L.scan_folder(tmp_path)
    assert df["id"].tolist() == ["a", "b"] and (df["source"] == "folder").all()
    df2 = L.scan_folder(tmp_path, image_dir="DIS-TR/im", alpha_dir=tmp_path / "DIS-TR" / "gt")
    assert df2[["id", "image", "alpha"]].equals(df[["id", "image", "alpha"]])
    with pytest.raises(FileNotFoundError):
        L.scan_folder(tmp_path, image_dir="nope", alpha_dir="DIS-TR/gt")


def test_scan_group_regex(tmp_path: Path):
    for stem in ("lamp_0", "lamp_1", "vase_0"):
        write_png(tmp_path / "im" / f"{stem}.png", rgb())
        write_png(tmp_path / "gt" / f"{stem}.png", alpha())
    df = L.scan("folder", tmp_path, group_regex=r"^(.*)_\d+$")
    assert df["group"].tolist() == ["lamp", "lamp", "vase"]


def test_scan_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="demo-data"):
        L.scan_aim500(tmp_path / "missing")
    with pytest.raises(ValueError, match="valid layouts"):
        L.scan("bogus", tmp_path)
    assert len(L.scan_aim500(tmp_path)) == 0


def test_list_backgrounds(tmp_path: Path):
    write_jpeg(tmp_path / "bg" / "a" / "x.jpg", rgb())
    write_png(tmp_path / "bg" / "b" / "c" / "y.png", rgb())
    (tmp_path / "bg" / "notes.txt").write_text("not an image")
    (tmp_path / "bg" / ".hidden.png").write_bytes(png_bytes(rgb()))
    got = L.list_backgrounds(tmp_path / "bg")
    assert [p.name for p in got] == ["x.jpg", "y.png"]
    with pytest.raises(ValueError, match="at least 3"):
        L.list_backgrounds(tmp_path / "bg", min_count=3)
    with pytest.raises(FileNotFoundError):
        L.list_backgrounds(tmp_path / "nope")


@pytest.mark.shared
def test_scan_alphamatting_real_data(alphamatting_dev: Path):
    df = L.scan_alphamatting(alphamatting_dev)
    assert df["id"].tolist() == ["GT01", "GT02", "GT03", "GT04", "GT05"]
    assert all(df[c].str.len().gt(0).all() for c in ("image", "alpha", "trimap"))
    report = L.validate(df, check_pixels=True)
    assert report.ok, report.summary()
    for row in report.good_df.itertuples():
        with Image.open(row.image) as im:
            assert (row.width, row.height) == im.size


def test_demo_data_scans_clean(tmp_path: Path):
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    if not hasattr(synthetic, "make_demo_data"):
        pytest.skip("make_demo_data not available yet")
    root = tmp_path / "demo"
    synthetic.make_demo_data(root, seed=0)
    df = L.scan("synthetic", root)
    assert len(df) > 0 and (df["source"] == "aim500").all()
    report = L.validate(df, check_pixels=True)
    assert report.ok, report.summary()
    comp = L.scan_competition(root / "competition")
    assert len(comp) > 0 and comp["id"].str.fullmatch(r"\d+").all()
    assert L.validate(comp).ok
    test = L.scan_competition_test(root / "competition")
    assert len(test) > 0
    assert len(L.list_backgrounds(root / "backgrounds")) > 0


# ------------------------------------------------------------------------------------------
# split
# ------------------------------------------------------------------------------------------
def _groups_df(groups: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{i:04d}" for i in range(len(groups))], "group": groups, "split": ""})


def test_split_by_group_no_leak_deterministic():
    rng = np.random.default_rng(3)
    groups = [f"g{int(k)}" for k in rng.integers(0, 40, size=300)]
    df = _groups_df(groups)
    a = L.split_by_group(df, 0.2, seed=1)
    b = L.split_by_group(df, 0.2, seed=1)
    assert a["split"].tolist() == b["split"].tolist()
    assert a.groupby("group")["split"].nunique().max() == 1
    share = (a["split"] == "val").mean()
    assert 0.1 < share < 0.3
    c = L.split_by_group(df, 0.2, seed=2)
    assert c["split"].tolist() != a["split"].tolist()


def test_split_edge_cases():
    one_val = L.split_by_group(_groups_df(["a", "b", "c"]), 0.01, seed=0)
    assert (one_val["split"] == "val").sum() == 1  # at least one val item when possible
    single = L.split_by_group(_groups_df(["a", "a"]), 0.5, seed=0)
    assert (single["split"] == "train").all()  # one group cannot be in both
    none = L.split_by_group(_groups_df(["a", "b"]), 0.0, seed=0)
    assert (none["split"] == "train").all()
    df = _groups_df(["a", "b", "c", "d"])
    df.loc[0, "split"] = "test"
    out = L.split_by_group(df, 0.5, seed=0)
    assert out.loc[0, "split"] == "test" and set(out["split"][1:]) == {"train", "val"}
    empty_groups = pd.DataFrame({"id": ["x", "y", "z"], "group": ["", "", ""]})
    assert (L.split_by_group(empty_groups, 0.34, seed=0)["split"] == "val").sum() == 1  # group = id
    with pytest.raises(ValueError):
        L.split_by_group(df, 1.0, seed=0)


# ------------------------------------------------------------------------------------------
# manifest
# ------------------------------------------------------------------------------------------
def test_manifest_roundtrip_relative_and_absolute(tmp_path: Path):
    inside = tmp_path / "ds" / "im" / "0001.jpg"
    outside = tmp_path.parent / "elsewhere" / "0001.png"
    rows = [{"id": "0001", "image": str(inside), "alpha": str(outside), "group": "0001",
             "source": "folder", "split": "val", "width": 16, "height": 12, "extra": "kept"}]
    path = write_manifest(rows, tmp_path / "ds" / "manifest.csv")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(raw.columns) == MANIFEST_COLUMNS + ["extra"]
    assert raw.loc[0, "image"] == "im/0001.jpg"  # relative below the manifest folder
    assert raw.loc[0, "alpha"] == str(outside)  # absolute elsewhere
    back = read_manifest(path)
    assert back.loc[0, "id"] == "0001" and back.loc[0, "image"] == str(inside)
    assert back.loc[0, "trimap"] == "" and back["width"].dtype.kind == "i" and back.loc[0, "height"] == 12
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temp files left


def test_read_manifest_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "none.csv")
    p = tmp_path / "m.csv"
    p.write_text("id,image\n1,a.png\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_manifest(p)
    write_manifest([{"id": "a"}], p)
    text = p.read_text().replace(",0,0", ",wide,0")
    p.write_text(text)
    with pytest.raises(ValueError, match="width"):
        read_manifest(p)


# ------------------------------------------------------------------------------------------
# build_manifest
# ------------------------------------------------------------------------------------------
def test_build_manifest_from_config(tmp_path: Path):
    from mattingkit.config import load_config

    bad = make_aim500(tmp_path / "data" / "aim500")
    cfg = load_config("aim500", {"run.data_root": str(tmp_path / "data"), "data.val_fraction": 0.34,
                                 "data.check_pixels": True})
    out = tmp_path / "data" / "manifests" / "aim.csv"
    df, report = L.build_manifest(cfg, out)
    assert out.exists() and L.problems_path_for(out).exists()
    back = read_manifest(out)
    assert back["id"].tolist() == df["id"].tolist() == sorted(["0001", "0002", "0010", "dup"])
    assert set(back["split"]) == {"train", "val"}
    probs = pd.read_csv(L.problems_path_for(out), dtype=str)
    assert set(probs["id"]) == set(bad)
    assert (back["width"] == 16).all()
    # default output location under the data root
    df2, _ = L.build_manifest(cfg)
    assert (tmp_path / "data" / "manifests" / "aim500-aim500.csv").exists() and len(df2) == len(df)


def test_build_manifest_nothing_valid(tmp_path: Path):
    from mattingkit.config import load_config

    (tmp_path / "aim500" / "original").mkdir(parents=True)
    (tmp_path / "aim500" / "mask").mkdir(parents=True)
    (tmp_path / "aim500" / "original" / "a.jpg").write_bytes(b"")
    cfg = load_config("aim500", {"run.data_root": str(tmp_path)})
    with pytest.raises(ValueError, match="no valid items"):
        L.build_manifest(cfg, tmp_path / "m.csv")
    assert L.problems_path_for(tmp_path / "m.csv").exists() and not (tmp_path / "m.csv").exists()
    cfg2 = load_config("aim500", {"run.data_root": str(tmp_path / "void")})
    with pytest.raises(FileNotFoundError):
        L.build_manifest(cfg2, tmp_path / "m2.csv")

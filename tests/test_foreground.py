"""Foreground estimation and its on-disk cache.

The main claim: re-compositing an *estimated* foreground onto a new background is closer to the
true composite than re-compositing the photo. Checked on synthetic cases built here (known fg, bg1,
bg2), on the demo data when ``mattingkit.data.synthetic`` exists, and the cache on a real photo.
"""
from __future__ import annotations

import doctest
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mattingkit.data.foreground as fg_mod
from mattingkit.compose import composite
from mattingkit.data.foreground import (
    ForegroundCache,
    default_cache_dir,
    estimate_foreground,
    precompute,
)
from mattingkit.data.manifest import read_manifest, write_manifest
from mattingkit.io import read_alpha, read_image, write_png

METHODS = ["pymatting", "ml"]


# --------------------------------------------------------------------------------------------
# A synthetic case with a known foreground
# --------------------------------------------------------------------------------------------
def synthetic_case(seed: int, n: int = 96):
    """Textured fg, a disk alpha with a wide soft rim and thin soft strands, two backgrounds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    c1, c2 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    t = (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * (xx + 0.6 * yy) + rng.uniform(0, 2 * np.pi)))[..., None]
    fg = (t * c1 + (1 - t) * c2).astype(np.float32)
    r = np.hypot(yy - 0.5, xx - 0.5)
    alpha = np.clip((0.32 - r) / 0.12, 0, 1)
    strands = (np.cos(9 * np.arctan2(yy - 0.5, xx - 0.5)) > 0.8) & (r < 0.45)
    alpha = np.maximum(alpha, 0.6 * strands * np.clip((0.45 - r) / 0.2, 0, 1))
    alpha = (np.rint(alpha * 255) / 255).astype(np.float32)
    bg1 = (rng.uniform(0, 1, 3) * (0.5 + 0.5 * yy[..., None])).astype(np.float32)
    bg2 = (rng.uniform(0, 1, 3) * (0.5 + 0.5 * xx[..., None])).astype(np.float32)
    photo = composite(fg, bg1, alpha).astype(np.float32)
    return fg, alpha, bg1, bg2, photo


def recomposite_errors(est_fg, photo, fg, alpha, bg2):
    """MSE over the soft region of composite(est_fg, bg2) and composite(photo, bg2) vs the truth."""
    soft = (alpha > 0) & (alpha < 1)
    truth = composite(fg, bg2, alpha)
    err_est = float(np.mean((composite(est_fg, bg2, alpha) - truth)[soft] ** 2))
    err_photo = float(np.mean((composite(photo, bg2, alpha) - truth)[soft] ** 2))
    return err_est, err_photo


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimated_foreground_recomposites_better_than_the_photo(method, seed):
    fg, alpha, bg1, bg2, photo = synthetic_case(seed)
    est = estimate_foreground(photo, alpha, method=method)
    assert est.dtype == np.float32 and est.shape == photo.shape
    assert est.min() >= 0.0 and est.max() <= 1.0
    err_est, err_photo = recomposite_errors(est, photo, fg, alpha, bg2)
    assert err_photo > 1e-4          # the case is not trivial: bg1 bleeds visibly into the photo
    assert err_est < 0.5 * err_photo, (err_est, err_photo)


@pytest.mark.parametrize("method", METHODS)
def test_background_estimate_reconstructs_the_photo(method):
    fg, alpha, bg1, bg2, photo = synthetic_case(3)
    F, B = estimate_foreground(photo, alpha, method=method, return_background=True)
    recon = composite(F, B, alpha)
    assert float(np.abs(recon - photo).mean()) < 2e-3
    soft = (alpha > 0.05) & (alpha < 0.95)
    # B in the soft region is closer to the true bg1 than the photo is
    assert np.mean((B - bg1)[soft] ** 2) < 0.5 * np.mean((photo - bg1)[soft] ** 2)


def test_known_region_is_the_photo_exactly():
    fg, alpha, bg1, bg2, photo = synthetic_case(4)
    for method in METHODS:
        F, B = estimate_foreground(photo, alpha, method=method, return_background=True)
        np.testing.assert_array_equal(F[alpha == 1], photo[alpha == 1])
        np.testing.assert_array_equal(B[alpha == 0], photo[alpha == 0])


def test_numpy_port_agrees_with_pymatting():
    fg, alpha, bg1, bg2, photo = synthetic_case(5, n=128)
    a = estimate_foreground(photo, alpha, method="pymatting")
    b = estimate_foreground(photo, alpha, method="ml")
    weighted = np.abs(a - b) * alpha[..., None]     # F only matters in proportion to alpha
    assert float(weighted.mean()) < 2e-3
    ea, _ = recomposite_errors(a, photo, fg, alpha, bg2)
    eb, _ = recomposite_errors(b, photo, fg, alpha, bg2)
    assert eb < 1.5 * ea + 1e-5 and ea < 1.5 * eb + 1e-5


def _estimate_in_child(queue):
    fg, alpha, bg1, bg2, photo = synthetic_case(6, n=48)
    queue.put(estimate_foreground(photo, alpha, method="ml").tobytes())


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork start method")
def test_default_method_works_in_a_forked_worker_after_use_in_the_parent():
    """DataLoader workers are forked from a process that may already have estimated foregrounds."""
    fg, alpha, bg1, bg2, photo = synthetic_case(6, n=48)
    expected = estimate_foreground(photo, alpha, method="ml")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_estimate_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert got == expected.tobytes()


def test_accepts_uint8_and_tiny_images():
    img = np.full((1, 1, 3), 128, np.uint8)
    for method in METHODS:
        out = estimate_foreground(img, np.array([[255]], np.uint8), method=method)
        assert out.shape == (1, 1, 3) and abs(float(out[0, 0, 0]) - 128 / 255) < 1e-6
        out = estimate_foreground(np.zeros((2, 3, 3), np.float32), np.full((2, 3), 0.5, np.float32), method=method)
        assert out.shape == (2, 3, 3)


def test_input_checks():
    img = np.zeros((8, 8, 3), np.float32)
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="differ in size"):
        estimate_foreground(img, np.zeros((8, 9), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        estimate_foreground(img[..., 0], a)
    with pytest.raises(ValueError, match="NaN"):
        estimate_foreground(img, np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate_foreground(img + 2, a)
    with pytest.raises(TypeError, match="dtype"):
        estimate_foreground(img.astype(np.int32), a)
    with pytest.raises(ValueError, match="unknown foreground method"):
        estimate_foreground(img, a, method="magic")
    with pytest.raises(TypeError, match="unknown foreground estimation option"):
        estimate_foreground(img, a, regularisation=1e-3)
    with pytest.raises(ValueError, match="regularization must be a finite number > 0"):
        estimate_foreground(img, a, regularization=0)
    with pytest.raises(ValueError, match="n_big_iterations must be an integer"):
        ForegroundCache("/tmp/x", n_big_iterations=1.5)
    with pytest.raises(ValueError, match="cache file name"):
        ForegroundCache("/tmp/x").path("../escape")


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
def write_case(folder: Path, name: str, seed: int, n: int = 64) -> tuple[Path, Path]:
    _, alpha, _, _, photo = synthetic_case(seed, n)
    return write_png(folder / f"{name}.png", photo), write_png(folder / f"{name}_a.png", alpha)


def test_cache_roundtrip_and_reuse(tmp_path):
    im, al = write_case(tmp_path, "s", 0)
    cache = ForegroundCache(tmp_path / "cache", method="ml")
    assert not cache.is_cached("s", im, al)
    first = cache.get("s", im, al)
    png, sidecar = tmp_path / "cache" / "s.png", tmp_path / "cache" / "s.json"
    assert png.exists() and sidecar.exists()
    meta = json.loads(sidecar.read_text())
    assert meta["method"] == "ml" and meta["shape"] == [64, 64]
    # what get() returned is exactly what is on disk, and equals a direct estimate up to 8 bits
    np.testing.assert_array_equal(first, read_image(png))
    direct = estimate_foreground(read_image(im), read_alpha(al), method="ml")
    assert np.abs(first - direct).max() <= 0.5 / 255 + 1e-6
    # second get loads: the files are not rewritten
    stamp = png.stat().st_mtime_ns, sidecar.stat().st_mtime_ns
    assert cache.is_cached("s", im, al)
    np.testing.assert_array_equal(cache.get("s", im, al), first)
    assert (png.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == stamp
    # a cache with other options does not reuse the entry
    assert not ForegroundCache(tmp_path / "cache", method="ml", regularization=1e-3).is_cached("s", im, al)
    assert not ForegroundCache(tmp_path / "cache", method="pymatting").is_cached("s", im, al)


def test_cache_invalidation_on_changed_source(tmp_path):
    im, al = write_case(tmp_path, "s", 0)
    cache = ForegroundCache(tmp_path / "cache", method="ml")
    first = cache.get("s", im, al)
    # touched (new mtime) but identical content: still valid, recognised by hash, new mtime recorded
    os.utime(al, ns=(1_000_000_000, 1_000_000_000))
    assert cache.is_cached("s", im, al)
    assert json.loads((tmp_path / "cache" / "s.json").read_text())["alpha"]["mtime_ns"] == 1_000_000_000
    # changed content: recomputed, even when the old mtime is restored (the size differs)
    alpha2 = np.ascontiguousarray(read_alpha(al)[:, ::-1])
    write_png(al, alpha2)
    assert al.stat().st_size != json.loads((tmp_path / "cache" / "s.json").read_text())["alpha"]["size"]
    os.utime(al, ns=(1_000_000_000, 1_000_000_000))
    assert not cache.is_cached("s", im, al)
    second = cache.get("s", im, al)
    assert np.abs(second - first).max() > 0.05
    assert cache.is_cached("s", im, al)
    # a changed photo too
    write_png(im, np.clip(read_image(im) * 0.5, 0, 1))
    assert not cache.is_cached("s", im, al)


def test_unwritable_cache_still_returns_the_foreground(tmp_path):
    im, al = write_case(tmp_path, "s", 0)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    cache = ForegroundCache(blocker / "cache", method="ml")   # cannot be created
    with pytest.warns(RuntimeWarning, match="cannot write the foreground cache"):
        fg = cache.get("s", im, al)
    expected = ForegroundCache(tmp_path / "ok", method="ml").get("s", im, al)
    np.testing.assert_array_equal(fg, expected)


@pytest.mark.parametrize("damage", ["truncate_png", "garbage_json", "delete_png", "swap_png"])
def test_damaged_entries_are_recomputed(tmp_path, damage):
    im, al = write_case(tmp_path, "s", 0)
    im2, al2 = write_case(tmp_path, "t", 1)
    cache = ForegroundCache(tmp_path / "cache", method="ml")
    good = cache.get("s", im, al)
    other = cache.get("t", im2, al2)
    png = cache.path("s")
    if damage == "truncate_png":
        png.write_bytes(png.read_bytes()[:100])
    elif damage == "garbage_json":
        png.with_suffix(".json").write_text("{not json")
    elif damage == "delete_png":
        png.unlink()
    else:  # a PNG from another writer under this entry's sidecar
        png.write_bytes(cache.path("t").read_bytes())
    assert not cache.is_cached("s", im, al)
    np.testing.assert_array_equal(cache.get("s", im, al), good)
    assert cache.is_cached("s", im, al)
    assert not np.array_equal(good, other)


RACE_WORKER = """
import sys, time, numpy as np
from pathlib import Path
from mattingkit.data.foreground import ForegroundCache
cache_dir, im, al, go, out = map(Path, sys.argv[1:])
cache = ForegroundCache(cache_dir, method="ml")
out.with_suffix(".ready").touch()
while not go.exists():
    time.sleep(0.001)
missed = not cache.is_cached("s", im, al)
fg = cache.get("s", im, al)
np.save(out, fg)
print("missed" if missed else "hit")
"""


def test_concurrent_writers_in_two_processes(tmp_path):
    """Two DataLoader-like worker processes asking for the same missing entry at the same moment:
    both get the same foreground, the entry ends up valid and no temp files are left behind."""
    im, al = write_case(tmp_path, "s", 2, n=192)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", RACE_WORKER, str(tmp_path / "cache"), str(im), str(al),
                               str(go), str(tmp_path / f"out{i}.npy")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"out{i}.ready").exists() for i in range(2)):  # both imported
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "worker did not start"
        time.sleep(0.01)
    go.touch()  # release both at once
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr
    print("worker cache lookups:", [o[0].strip() for o in outs])  # normally both "missed"
    results = [np.load(tmp_path / f"out{i}.npy") for i in range(2)]
    np.testing.assert_array_equal(results[0], results[1])
    cache = ForegroundCache(tmp_path / "cache", method="ml")
    assert cache.is_cached("s", im, al)
    np.testing.assert_array_equal(cache.get("s", im, al), results[0])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["s.json", "s.png"]


def test_concurrent_threads(tmp_path):
    im, al = write_case(tmp_path, "s", 2)
    cache = ForegroundCache(tmp_path / "cache", method="ml")
    barrier = threading.Barrier(4)
    out: list[bytes] = []

    def run():
        barrier.wait(timeout=30)
        out.append(cache.get("s", im, al).tobytes())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == 4 and len(set(out)) == 1
    assert cache.is_cached("s", im, al)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["s.json", "s.png"]


# --------------------------------------------------------------------------------------------
# precompute over a manifest
# --------------------------------------------------------------------------------------------
def test_precompute_collects_errors_and_skips_cached(tmp_path, capsys):
    data = tmp_path / "data"
    rows = []
    for i in range(3):
        im, al = write_case(data, f"ok{i}", i, n=48)
        rows.append({"id": f"ok{i}", "image": str(im), "alpha": str(al)})
    im0 = rows[0]["image"]
    (data / "empty.png").write_bytes(b"")
    small = write_png(data / "small_a.png", np.ones((10, 10), np.float32))
    rows += [
        {"id": "missing", "image": str(data / "nope.png"), "alpha": rows[0]["alpha"]},
        {"id": "empty", "image": str(data / "empty.png"), "alpha": rows[0]["alpha"]},
        {"id": "mismatch", "image": im0, "alpha": str(small)},
        {"id": "ok0", "image": im0, "alpha": rows[0]["alpha"]},       # duplicate id
        {"id": "given", "image": im0, "alpha": rows[0]["alpha"], "fg": im0},
        {"id": "test_only", "image": im0, "alpha": ""},
    ]
    for r in rows:
        r.setdefault("fg", "")
        r.update(source="folder", split="train", group=r["id"])
    manifest = write_manifest(pd.DataFrame(rows), tmp_path / "manifest.csv")
    df = read_manifest(manifest)
    cache_dir = default_cache_dir(manifest)
    assert cache_dir == tmp_path.resolve() / "fg_cache"

    report = precompute(df, cache_dir, progress=True, method="ml")
    printed = capsys.readouterr().out
    assert sorted(report.computed) == ["ok0", "ok1", "ok2"]
    assert report.cached == []
    assert report.skipped == {"given": "foreground given", "test_only": "no alpha"}
    assert set(report.errors) == {"missing", "empty", "mismatch", "ok0"}
    assert "file not found" in report.errors["missing"] and "nope.png" in report.errors["missing"]
    assert "0 bytes" in report.errors["empty"]
    assert "small_a.png" in report.errors["mismatch"] and "10x10" in report.errors["mismatch"]
    assert "duplicate id" in report.errors["ok0"]
    assert not report.ok and report.total == len(rows)
    for sid in report.errors:   # the errors are listed at the end of the printed output
        assert f"{sid}: " in printed.split("foreground cache:")[-1]

    again = precompute(df, cache_dir, progress=False, method="ml")
    assert again.computed == [] and sorted(again.cached) == ["ok0", "ok1", "ok2"]
    # the cached foregrounds are what ForegroundCache.get returns
    cache = ForegroundCache(cache_dir, method="ml")
    fg1 = cache.get("ok1", rows[1]["image"], rows[1]["alpha"])
    np.testing.assert_array_equal(fg1, read_image(cache_dir / "ok1.png"))


def test_docstring_examples():
    failures, _ = doctest.testmod(fg_mod, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# --------------------------------------------------------------------------------------------
# Real photo (alphamatting.com), downscaled
# --------------------------------------------------------------------------------------------
def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    x = x[:h, :w]
    return x.reshape(h // f, f, w // f, f, *x.shape[2:]).mean(axis=(1, 3))


@pytest.mark.shared
@pytest.mark.parametrize("method", METHODS)
def test_real_photo_cache_roundtrip(alphamatting_dev, tmp_path, method):
    image = _block_mean(read_image(alphamatting_dev / "image" / "GT04.png"), 4)
    alpha = _block_mean(read_alpha(alphamatting_dev / "alpha" / "GT04.png"), 4)
    im, al = write_png(tmp_path / "GT04.png", image), write_png(tmp_path / "GT04_a.png", alpha)
    image, alpha = read_image(im), read_alpha(al)         # the 8-bit versions the cache sees
    assert (alpha == 1).sum() > 1000 and ((alpha > 0) & (alpha < 1)).sum() > 1000

    cache = ForegroundCache(tmp_path / "cache", method=method)
    fg = cache.get("GT04", im, al)
    assert fg.shape == image.shape and fg.dtype == np.float32
    assert cache.is_cached("GT04", im, al)
    np.testing.assert_array_equal(cache.get("GT04", im, al), fg)
    # where alpha == 1 the foreground is the photo (within 8-bit rounding)
    assert np.abs(fg[alpha == 1] - image[alpha == 1]).max() <= 0.5 / 255 + 1e-6
    # in the soft region it is a plausible fg: the photo is reproduced with some background
    _, B = estimate_foreground(image, alpha, method=method, return_background=True)
    soft = (alpha > 0) & (alpha < 1)
    recon = composite(fg, B, alpha)
    assert float(np.abs(recon - image)[soft].mean()) < 4 / 255


# --------------------------------------------------------------------------------------------
# Demo data (mattingkit.data.synthetic), when that module exists
# --------------------------------------------------------------------------------------------
def test_demo_data_recomposition(tmp_path):
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    root = tmp_path / "demo"
    synthetic.make_demo_data(root, seed=0)
    names = sorted(p.stem for p in (root / "truth" / "fg").glob("*.png"))[:3]
    assert names, "demo data has no truth/fg"
    ratios = []
    for i, name in enumerate(names):
        originals = list((root / "aim500" / "original").glob(f"{name}.*"))
        assert len(originals) == 1
        photo = read_image(originals[0])
        alpha = read_alpha(root / "aim500" / "mask" / f"{name}.png")
        fg = read_image(root / "truth" / "fg" / f"{name}.png")
        bg2 = read_image(root / "truth" / "bg" / f"{names[(i + 1) % len(names)]}.png")
        if bg2.shape != photo.shape or len(names) == 1:
            bg2 = np.broadcast_to(np.float32([0.1, 0.8, 0.3]), photo.shape)
        est = estimate_foreground(photo, alpha, method="pymatting")
        err_est, err_photo = recomposite_errors(est, photo, fg, alpha, bg2)
        ratios.append(err_est / err_photo)
    # JPEG noise in the originals limits the gain; on average the estimate must still win clearly
    assert float(np.mean(ratios)) < 0.7, ratios

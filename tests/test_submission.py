"""Submission CSV: round trip against the organisers' example, build details, and every validator fault."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mattingkit.io import png_bytes, read_alpha, to_uint8, write_png
from mattingkit.submission import (
    SubmissionError,
    build_submission,
    decode_submission,
    expected_names,
    validate_submission,
)

SIZE = 32  # small PNGs keep the fault tests fast; the example round trip uses the real 1024x1024


def _alpha(seed: int, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(0.5 + 0.4 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + 0.05 * rng.random((h, w)), 0, 1
                   ).astype(np.float32)


@pytest.fixture
def preds(tmp_path) -> Path:
    d = tmp_path / "alphas"
    for i, name in enumerate(["0001", "0002", "0010"]):
        write_png(d / f"{name}.png", _alpha(i))
    return d


def _b64_png(array) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def _write_csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _good_rows(names=("0001", "0002", "0010")) -> list[tuple[str, str]]:
    return [(n, _b64_png(_alpha(i))) for i, n in enumerate(names)]


def _csv_text(rows, header="filename,image_utf", nl="\n") -> str:
    return nl.join([header] + [f"{a},{b}" for a, b in rows]) + nl


def _sample(tmp_path, names=("0001", "0002", "0010")) -> Path:
    return _write_csv(tmp_path / "sample.csv", _csv_text([(n, _b64_png(np.zeros((SIZE, SIZE)))) for n in names]))


# --------------------------------------------------------------------------------------------
# The organisers' example
# --------------------------------------------------------------------------------------------
def test_round_trip_against_organisers_example(ecom_example, tmp_path):
    original = pd.read_csv(ecom_example, dtype=str)
    assert validate_submission(ecom_example, sample_csv=ecom_example).ok
    paths = decode_submission(ecom_example, tmp_path / "decoded")
    assert [p.stem for p in paths] == original["filename"].tolist() == ["0001", "0002"]
    for p, b64 in zip(paths, original["image_utf"]):
        raw = base64.b64decode(b64, validate=True)
        theirs = np.asarray(Image.open(io.BytesIO(raw)))
        ours = png_bytes(read_alpha(p))                      # decode -> float -> our writer
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(ours))), theirs)   # identical pixels
        assert len(ours) == len(raw)                         # Pillow reproduces their byte length
    out = tmp_path / "ours.csv"
    rep = build_submission(tmp_path / "decoded", out, sample_csv=ecom_example, size=1024, verbose=False)
    assert rep.rows == 2 and rep.file_size == out.stat().st_size and not rep.resized
    assert out.read_bytes() == ecom_example.read_bytes()     # byte-identical CSV
    assert validate_submission(out, sample_csv=ecom_example).ok
    back = pd.read_csv(out, dtype=str)
    assert back.columns.tolist() == ["filename", "image_utf"]
    pd.testing.assert_frame_equal(back, original)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------
def test_build_format_order_and_values(preds, tmp_path, capsys):
    sample = _sample(tmp_path, names=("0010", "0001", "0002"))
    out = tmp_path / "sub" / "submission.csv"
    rep = build_submission(preds, out, sample_csv=sample, size=SIZE)
    assert f"{out.stat().st_size} bytes" in capsys.readouterr().out
    raw = out.read_bytes()
    assert raw.startswith(b"filename,image_utf\n") and b"\r" not in raw and not raw.startswith(b"\xef\xbb\xbf")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 4
    df = pd.read_csv(out, dtype=str)
    assert df["filename"].tolist() == ["0010", "0001", "0002"]          # sample order, zeros kept
    for name, b64 in zip(df["filename"], df["image_utf"]):
        im = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        assert im.format == "PNG" and im.mode == "L" and im.size == (SIZE, SIZE)
        np.testing.assert_array_equal(np.asarray(im), to_uint8(read_alpha(preds / f"{name}.png")))
    assert rep.rows == 3 and validate_submission(out, sample_csv=sample, size=SIZE).ok
    assert not list(out.parent.glob(".*.tmp"))


def test_build_without_sample_sorts_stems_and_resizes_to_test_size(preds, tmp_path):
    test_dir = tmp_path / "test"
    for name in ["0001", "0002", "0010"]:
        write_png(test_dir / f"{name}.png", np.zeros((24, 40, 3), np.float32))  # 40x24 test images
    for i, name in enumerate(["0001", "0010"]):
        write_png(preds / f"{name}.png", _alpha(i, 24, 40))
    write_png(preds / "0002.png", _alpha(5, 48, 80))                            # 2x too large, same aspect
    out = tmp_path / "s.csv"
    rep = build_submission(preds, out, test_dir=test_dir, verbose=False)
    assert pd.read_csv(out, dtype=str)["filename"].tolist() == ["0001", "0002", "0010"]
    assert rep.resized == ["0002: 80x48 -> 40x24"]
    assert validate_submission(out, test_dir=test_dir).ok
    decoded = decode_submission(out, tmp_path / "dec")
    big = read_alpha(preds / "0002.png")                                        # the 8-bit prediction
    area = big.reshape(24, 2, 40, 2).mean(axis=(1, 3))                         # independent 2x2 box mean
    assert np.abs(read_alpha(decoded[1]) - area).max() <= 0.5 / 255 + 1e-6


def test_build_missing_prediction_is_an_error_and_keeps_old_csv(preds, tmp_path):
    out = _write_csv(tmp_path / "s.csv", "old content\n")
    sample = _sample(tmp_path, names=("0001", "0002", "0003", "0004"))
    with pytest.raises(SubmissionError, match=r"2 of 4 predictions missing.*'0003', '0004'"):
        build_submission(preds, out, sample_csv=sample, size=SIZE, verbose=False)
    (preds / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")   # fails mid-stream
    with pytest.raises(Exception, match="0002.png"):
        build_submission(preds, out, size=SIZE, verbose=False)
    assert out.read_text() == "old content\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_expected_names_keep_zero_padding(tmp_path):
    sample = _sample(tmp_path, names=("0001", "0100"))
    assert expected_names(sample_csv=sample)[0] == ["0001", "0100"]


# --------------------------------------------------------------------------------------------
# Validator faults, one at a time, then all at once
# --------------------------------------------------------------------------------------------
def _check(tmp_path, text, expect: str, **kw):
    path = _write_csv(tmp_path / "bad.csv", text)
    rep = validate_submission(path, sample_csv=kw.pop("sample", _sample(tmp_path)), size=SIZE, **kw)
    assert not rep.ok, rep.summary()
    assert any(expect in p for p in rep.problems), rep.summary()
    assert "INVALID" in rep.summary()
    return rep


def test_valid_baseline_passes(tmp_path):
    path = _write_csv(tmp_path / "ok.csv", _csv_text(_good_rows()))
    rep = validate_submission(path, sample_csv=_sample(tmp_path), size=SIZE)
    assert rep.ok and rep.rows == 3 and rep.problems == [], rep.summary()


def test_wrong_header(tmp_path):
    _check(tmp_path, _csv_text(_good_rows(), header="id,image"), "header is 'id,image'")
    rows = _good_rows()
    rep = _check(tmp_path, _csv_text(rows[1:], header=",".join(rows[0])), "missing header row")
    assert rep.rows == 3 and len(rep.problems) == 1, rep.summary()   # the first line was checked as data


def test_extra_index_column(tmp_path):
    df = pd.DataFrame(_good_rows(), columns=["filename", "image_utf"])
    path = tmp_path / "idx.csv"
    df.to_csv(path)   # the classic mistake: index=True
    rep = _check(tmp_path, path.read_bytes(), "extra index column")
    assert len(rep.problems) == 1, rep.summary()   # the rest is still checked and fine


def test_missing_row(tmp_path):
    _check(tmp_path, _csv_text(_good_rows()[:2]), "missing row(s) for 1 name(s)")


def test_duplicate_row(tmp_path):
    rows = _good_rows()
    _check(tmp_path, _csv_text(rows + [rows[0]]), "duplicate filename(s): '0001'")


def test_non_png_payload(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(to_uint8(_alpha(0))).save(buf, format="JPEG")
    rows = _good_rows()
    rows[1] = (rows[1][0], base64.b64encode(buf.getvalue()).decode())
    _check(tmp_path, _csv_text(rows), "payload is not a PNG (JPEG")


def test_wrong_size(tmp_path):
    rows = _good_rows()
    rows[0] = (rows[0][0], _b64_png(_alpha(0, SIZE, SIZE * 2)))
    _check(tmp_path, _csv_text(rows), f"PNG size {SIZE * 2}x{SIZE}, want {SIZE}x{SIZE}")


def test_rgb_instead_of_gray(tmp_path):
    rows = _good_rows()
    rows[2] = (rows[2][0], _b64_png(np.repeat(_alpha(2)[:, :, None], 3, axis=2)))
    _check(tmp_path, _csv_text(rows), "RGB instead of grayscale")


def test_invalid_base64(tmp_path):
    rows = _good_rows()
    rows[0] = (rows[0][0], rows[0][1][:-3] + "*!")
    _check(tmp_path, _csv_text(rows), "invalid base64")
    rows = _good_rows()
    rows[0] = (rows[0][0], rows[0][1].rstrip("=")[:-1])   # padding stripped: wrong length
    _check(tmp_path, _csv_text(rows), "invalid base64")


def test_data_uri_prefix(tmp_path):
    rows = _good_rows()
    rows[0] = (rows[0][0], "data:image/png;base64," + rows[0][1])
    text = "filename,image_utf\n" + "\n".join(f'{a},"{b}"' if b.startswith("data:") else f"{a},{b}"
                                              for a, b in rows) + "\n"
    rep = _check(tmp_path, text, "data: URI prefix")
    assert len(rep.problems) == 1   # the PNG behind the prefix is fine


def test_leading_zeros_lost(tmp_path, preds):
    good = tmp_path / "good.csv"
    build_submission(preds, good, size=SIZE, verbose=False)
    df = pd.read_csv(good)              # the mistake: no dtype=str -> 1, 2, 10
    mangled = tmp_path / "mangled.csv"
    df.to_csv(mangled, index=False)
    rep = _check(tmp_path, mangled.read_bytes(), "lost their leading zeros")
    assert "'1' (want '0001')" in " ".join(rep.problems) and "'10' (want '0010')" in " ".join(rep.problems)


def test_crlf_and_bom(tmp_path):
    _check(tmp_path, _csv_text(_good_rows(), nl="\r\n"), "CRLF line endings")
    _check(tmp_path, b"\xef\xbb\xbf" + _csv_text(_good_rows()).encode(), "BOM")


def test_against_test_dir(tmp_path):
    test_dir = tmp_path / "test"
    for n in ["0001", "0002", "0010", "0011"]:
        write_png(test_dir / f"{n}.png", np.zeros((SIZE, SIZE, 3), np.float32))
    path = _write_csv(tmp_path / "s.csv", _csv_text(_good_rows()))
    rep = validate_submission(path, test_dir=test_dir)
    assert not rep.ok and any("want 4" in p for p in rep.problems) and any("'0011'" in p for p in rep.problems)


def test_all_problems_reported_at_once(tmp_path):
    rows = _good_rows() + [("0002", _b64_png(_alpha(1))), ("extra", _b64_png(_alpha(3)))]
    rows[0] = ("1", rows[0][1])                                            # lost zeros
    rows[1] = (rows[1][0], _b64_png(np.repeat(_alpha(1)[:, :, None], 3, 2)))  # RGB
    rows[2] = (rows[2][0], "not*base64")                                   # invalid
    text = b"\xef\xbb\xbf" + _csv_text(rows, nl="\r\n").encode()
    path = _write_csv(tmp_path / "many.csv", text)
    rep = validate_submission(path, sample_csv=_sample(tmp_path), size=SIZE)
    joined = "\n".join(rep.problems)
    for expect in ["BOM", "CRLF", "RGB instead of grayscale", "invalid base64", "duplicate filename(s): '0002'",
                   "lost their leading zeros", "unexpected filename(s)", "'extra'", "rows, want 3"]:
        assert expect in joined, rep.summary()


def test_decode_refuses_unsafe_names(tmp_path):
    rows = [("../evil", _b64_png(_alpha(0))), ("0001", _b64_png(_alpha(1)))]
    path = _write_csv(tmp_path / "s.csv", _csv_text(rows))
    with pytest.warns(UserWarning, match="unsafe"):
        out = decode_submission(path, tmp_path / "dec")
    assert [p.name for p in out] == ["0001.png"] and not (tmp_path / "evil.png").exists()


def test_built_csv_has_the_usual_mode(preds, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "sub.csv"
        build_submission(preds, out, size=16, verbose=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# --------------------------------------------------------------------------------------------
# issue 16: colour photos are not alphas; validate says when it could not check names
# --------------------------------------------------------------------------------------------
def _photos(folder: Path, names=("0001", "0002", "0010")) -> Path:
    rng = np.random.default_rng(5)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    return folder


def test_build_refuses_colour_photos_naming_every_file(tmp_path):
    photos = _photos(tmp_path)
    (tmp_path / "0002.png").unlink()
    Image.fromarray(np.repeat(to_uint8(_alpha(1))[:, :, None], 3, 2)).save(tmp_path / "0002.png")  # gray as RGB
    out = tmp_path / "out" / "sub.csv"
    with pytest.raises(SubmissionError) as e:
        build_submission(photos, out, size=SIZE, verbose=False)
    msg = str(e.value)
    assert "0001.png" in msg and "0010.png" in msg and "0002.png" not in msg
    assert "not an alpha matte" in msg and "2 of 3 rows" in msg
    assert not out.exists()


def test_build_accepts_gray_stored_as_rgb(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    gray = to_uint8(_alpha(3))
    Image.fromarray(np.repeat(gray[:, :, None], 3, 2)).save(d / "0001.png")
    out = tmp_path / "sub.csv"
    build_submission(d, out, size=SIZE, verbose=False)
    df = pd.read_csv(out, dtype=str)
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(df["image_utf"][0]))))
    assert np.array_equal(back, gray)


def test_validate_without_expected_names_says_names_were_not_checked(tmp_path):
    p = _write_csv(tmp_path / "s.csv", _csv_text(_good_rows(("1", "2", "10"))))
    rep = validate_submission(p, size=SIZE)
    assert rep.ok  # the format is fine ...
    text = rep.summary()
    assert "filenames not checked" in text and "--sample" in text and "--test-dir" in text
    assert "different lengths" in text  # ... but 1, 2, 10 look like lost zero padding
    checked = validate_submission(p, size=SIZE, sample_csv=_sample(tmp_path, ("1", "2", "10")))
    assert "not checked" not in checked.summary()


def _cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mattingkit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_cli_submit_refuses_photos_and_validate_reports_unchecked_names(tmp_path, preds):
    (tmp_path / "photos").mkdir()
    photos = _photos(tmp_path / "photos")
    r = _cli("submit", photos, tmp_path / "photo.csv", "--size", SIZE)
    assert r.returncode != 0 and not (tmp_path / "photo.csv").exists()
    assert "0001.png" in r.stderr and "0010.png" in r.stderr and "not an alpha matte" in r.stderr
    r = _cli("submit", preds, tmp_path / "ok.csv", "--size", SIZE)
    assert r.returncode == 0, r.stderr
    r = _cli("validate", tmp_path / "ok.csv", "--size", SIZE)
    assert r.returncode == 0 and "filenames not checked" in r.stdout


# ---------------------------------------------------------------------------------------------
# issue 24: a submission never changes a matte's aspect ratio; --size/--test-dir conflict; submit and
# validate agree on sizes
# ---------------------------------------------------------------------------------------------
def test_a_matte_of_another_aspect_ratio_is_refused_never_stretched(tmp_path):
    d = tmp_path / "preds"
    write_png(d / "a.png", _alpha(0, 497 // 8, 800 // 8))   # 100x62
    write_png(d / "b.png", _alpha(1, 16, 16))
    with pytest.raises(SubmissionError, match=r"a\.png: 100x62 cannot become 32x32 \(size 32\).*aspect ratio"):
        build_submission(d, tmp_path / "s.csv", size=SIZE, verbose=False)
    assert not (tmp_path / "s.csv").exists()
    test_dir = tmp_path / "test"
    write_png(test_dir / "a.png", np.zeros((62, 100, 3), np.float32))
    write_png(test_dir / "b.png", np.zeros((20, 40, 3), np.float32))
    with pytest.raises(SubmissionError, match=r"b\.png: 16x16 cannot become 40x20 \(its test image"):
        build_submission(d, tmp_path / "s.csv", test_dir=test_dir, verbose=False)
    rep = build_submission(d, tmp_path / "own.csv", verbose=False)        # no size: each matte's own
    assert not rep.resized and validate_submission(tmp_path / "own.csv").ok
    sizes = [Image.open(p).size for p in decode_submission(tmp_path / "own.csv", tmp_path / "dec")]
    assert sizes == [(100, 62), (16, 16)]


def test_cli_submit_and_validate_agree_on_sizes_and_refuse_conflicting_options(preds, tmp_path):
    test_dir = tmp_path / "test"
    for name in ("0001", "0002", "0010"):
        write_png(test_dir / f"{name}.png", np.zeros((SIZE, SIZE, 3), np.float32))
    for cmd in (("submit", preds, tmp_path / "x.csv"), ("validate", tmp_path / "x.csv")):
        r = _cli(*cmd, "--size", 16, "--test-dir", test_dir)
        assert r.returncode == 2 and "--size and --test-dir" in r.stderr, r.stderr
    assert not (tmp_path / "x.csv").exists()
    r = _cli("submit", preds, tmp_path / "half.csv", "--size", 16)        # 32x32 -> 16x16: same aspect
    assert r.returncode == 0 and "resized 3 prediction(s)" in r.stdout, r.stderr
    assert _cli("validate", tmp_path / "half.csv").returncode == 0       # no 1024 assumed
    assert _cli("validate", tmp_path / "half.csv", "--size", 16).returncode == 0
    wrong = _cli("validate", tmp_path / "half.csv", "--size", SIZE)
    assert wrong.returncode == 1 and "PNG size 16x16, want 32x32" in wrong.stdout

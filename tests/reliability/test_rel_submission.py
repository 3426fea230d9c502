"""Submission faults: every way a competition CSV goes wrong is caught by validate_submission, one
faulty file per fault (each reported, nothing else claimed), plus one file with many faults at once.

The good rows come from the real builder (build_submission on real predictions); each faulty file
changes one thing in that file's bytes.
"""
from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mattingkit.io import png_bytes, write_png
from mattingkit.submission import build_submission, validate_submission

pytestmark = pytest.mark.reliability

SIZE = 16
NAMES = ["0001", "0002", "0010", "0100"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(sample_csv, rows): a real build of 4 predictions + the organisers'-style sample CSV."""
    d = tmp_path_factory.mktemp("sub")
    rng = np.random.default_rng(0)
    for n in NAMES:
        write_png(d / "alpha" / f"{n}.png", rng.random((SIZE, SIZE)).astype(np.float32))
    sample = d / "sample_submission.csv"
    sample.write_text("filename,image_utf\n" + "".join(f"{n},\n" for n in NAMES))
    good = d / "good.csv"
    build_submission(d / "alpha", good, sample_csv=sample, size=SIZE, verbose=False)
    lines = good.read_text().splitlines()
    assert lines[0] == "filename,image_utf"
    rows = [tuple(line.split(",")) for line in lines[1:]]
    assert [r[0] for r in rows] == NAMES
    return sample, rows


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _img(mode: str, size=(SIZE, SIZE), fmt="PNG") -> bytes:
    arr = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    im = Image.fromarray(arr, "RGBA").convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _csv(rows, header="filename,image_utf", eol="\n", bom=False) -> bytes:
    """A CSV as a csv/pandas writer would produce it (a field holding a comma is quoted)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=eol)
    writer.writerow(header.split(","))
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def _faults(rows) -> dict[str, tuple[bytes, list[str]]]:
    """fault -> (file bytes, the problems it must produce: one substring each, and nothing else)."""
    r = list(rows)
    one = r[0][0]
    good_png = base64.b64decode(r[0][1])
    return {
        "wrong_header": (_csv(r, header="file,image"), ["header is 'file,image'"]),
        "extra_index_column": (_csv([(str(i), *row) for i, row in enumerate(r)], header=",filename,image_utf"),
                               ["extra index column"]),
        "missing_row": (_csv(r[:-1]), ["3 rows, want 4", "missing row(s) for 1 name(s)"]),
        "duplicate_row": (_csv(r + [r[1]]), ["5 rows, want 4", "duplicate filename(s): '0002'"]),
        "non_png_payload": (_csv([(one, _b64(_img("L", fmt="JPEG")))] + r[1:]), ["payload is not a PNG (JPEG"]),
        "wrong_size": (_csv([(one, _b64(_img("L", size=(SIZE, SIZE // 2))))] + r[1:]),
                       [f"PNG size {SIZE}x{SIZE // 2}, want {SIZE}x{SIZE}"]),
        "rgb_instead_of_gray": (_csv([(one, _b64(_img("RGB")))] + r[1:]), ["RGB instead of grayscale"]),
        "rgba_instead_of_gray": (_csv([(one, _b64(_img("RGBA")))] + r[1:]), ["RGBA instead of grayscale"]),
        "invalid_base64_chars": (_csv([(one, r[0][1][:40] + "!!$$" + r[0][1][44:])] + r[1:]), ["invalid base64"]),
        "invalid_base64_padding": (_csv([(one, r[0][1].rstrip("=") + "A")] + r[1:]), ["invalid base64"]),
        "data_uri_prefix": (_csv([(one, "data:image/png;base64," + r[0][1])] + r[1:]), ["data: URI prefix"]),
        "data_uri_unquoted": ((("filename,image_utf\n" + "\n".join(f"{n},data:image/png;base64,{p}" if n == one
                                                                 else f"{n},{p}" for n, p in r) + "\n").encode()),
                              ["data: URI prefix"]),
        "lost_leading_zeros": (_csv([("1", r[0][1])] + r[1:]),
                               ["lost their leading zeros", "missing row(s) for 1 name(s)"]),
        "truncated_png": (_csv([(one, _b64(good_png[: len(good_png) // 2]))] + r[1:]), ["PNG does not decode"]),
        "empty_payload": (_csv([(one, "")] + r[1:]), ["empty image_utf"]),
        "crlf": (_csv(r, eol="\r\n"), ["CRLF line endings"]),
        "bom": (_csv(r, bom=True), ["BOM"]),
    }


def test_each_fault_is_reported_and_nothing_else(base, tmp_path):
    sample, rows = base
    good = tmp_path / "good.csv"
    good.write_bytes(_csv(rows))
    rep = validate_submission(good, sample_csv=sample, size=SIZE)
    assert rep.ok and rep.rows == 4, rep.summary()               # the control passes
    failures = []
    for fault, (data, wanted) in _faults(rows).items():
        path = tmp_path / f"{fault}.csv"
        path.write_bytes(data)
        rep = validate_submission(path, sample_csv=sample, size=SIZE)
        if rep.ok:
            failures.append(f"{fault}: not detected")
            continue
        for w in wanted:
            if not any(w in p for p in rep.problems):
                failures.append(f"{fault}: no problem mentions {w!r}: {rep.problems}")
        extra = [p for p in rep.problems if not any(w in p for w in wanted)]
        if extra:
            failures.append(f"{fault}: unrelated problems claimed: {extra}")
        if fault not in ("wrong_header", "extra_index_column", "missing_row", "duplicate_row", "crlf", "bom",
                         "lost_leading_zeros") and not any("'0001'" in p for p in rep.problems):
            failures.append(f"{fault}: the faulty row is not named: {rep.problems}")
    assert not failures, "\n".join(failures)


def test_one_file_with_many_faults_reports_them_all_at_once(base, tmp_path):
    sample, rows = base
    r = list(rows)
    bad_rows = [
        ("0", "1", "data:image/png;base64," + r[0][1]),          # data: prefix (row 0001 kept)
        ("1", r[1][0], _b64(_img("RGB"))),                       # RGB
        ("2", r[2][0], _b64(_img("L", size=(8, 8)))),           # wrong size
        ("3", r[3][0], r[3][1][:-4] + "@@@@"),                   # invalid base64
        ("4", r[3][0], r[3][1]),                                 # duplicate of 0100
    ]
    path = tmp_path / "many.csv"
    path.write_bytes(_csv(bad_rows, header=",filename,image_utf", eol="\r\n", bom=True))
    rep = validate_submission(path, sample_csv=sample, size=SIZE)
    text = "\n".join(rep.problems)
    for want in ("BOM", "CRLF", "extra index column", "data: URI prefix", "RGB instead of grayscale",
                 "PNG size 8x8", "invalid base64", "duplicate filename(s): '0100'", "lost their leading zeros",
                 "'1' (want '0001')", "missing row(s) for 1 name(s)", "5 rows, want 4"):
        assert want in text, f"{want!r} not reported:\n{rep.summary()}"
    assert len(rep.problems) == 11, rep.summary()


def test_builder_output_is_the_organisers_format(base, tmp_path):
    """The builder's own file passes, byte-level: LF, no BOM, exact header, zero-padded stems."""
    sample, rows = base
    data = _csv(rows)
    assert b"\r" not in data and not data.startswith(b"\xef\xbb\xbf")
    for _name, payload in rows:
        png = base64.b64decode(payload, validate=True)
        im = Image.open(io.BytesIO(png))
        assert im.mode == "L" and im.size == (SIZE, SIZE) and png == png_bytes(np.asarray(im))
    assert Path(sample).read_text().splitlines()[1:] == [f"{n}," for n in NAMES]


def test_builder_refuses_photos_in_place_of_predictions(base, tmp_path):
    """Issue 16: the test photos passed as predictions were taken as alphas (their red channel) and the
    CSV validated. Every colour file is named; gray stored as RGB stays accepted."""
    from mattingkit.submission import SubmissionError

    sample, _ = base
    rng = np.random.default_rng(2)
    for i, n in enumerate(NAMES):
        if i == 1:
            g = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
            Image.fromarray(np.dstack([g, g, g])).save(tmp_path / f"{n}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / f"{n}.jpg")
    out = tmp_path / "out.csv"
    with pytest.raises(SubmissionError) as e:
        build_submission(tmp_path, out, sample_csv=sample, size=SIZE, verbose=False)
    named = [n for n in NAMES if f"{n}.jpg" in str(e.value)]
    assert named == [NAMES[0], NAMES[2], NAMES[3]] and not out.exists()

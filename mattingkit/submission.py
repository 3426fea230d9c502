"""Competition submission CSV: build, validate and decode (the ecom.tech alpha-matting format).

The organisers' format (``example_submission.csv``), which :func:`build_submission` writes exactly:

- header ``filename,image_utf``; LF line endings; UTF-8 without BOM; no index column;
- ``filename``: the test image's stem as a string (zero padding kept: ``0001``);
- ``image_utf``: standard base64 (``=`` padded, no ``data:`` prefix) of the PNG bytes;
- the PNG: 8-bit grayscale (mode ``L``) at the test image's size (1024x1024), written by Pillow's
  default PNG writer (:func:`mattingkit.io.png_bytes`), which reproduces the organisers' bytes. A matte
  is resized to that size only when its aspect ratio is the same: it is never stretched.

Read a submission back with ``pandas.read_csv(path, dtype=str)`` — without ``dtype=str`` pandas
turns ``0001`` into the integer 1.

Example:
    >>> import tempfile, numpy as np
    >>> from mattingkit.io import write_png
    >>> d = tempfile.mkdtemp()
    >>> _ = write_png(f"{d}/alpha/0001.png", np.full((16, 16), 0.5, np.float32))
    >>> rep = build_submission(f"{d}/alpha", f"{d}/sub.csv", size=16, verbose=False)
    >>> validate_submission(f"{d}/sub.csv", size=16).ok
    True
    >>> open(f"{d}/sub.csv").read(24)
    'filename,image_utf\\n0001,'
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import io as _io
import os
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputNotFoundError, MattingKitError
from .io import (
    ImageReadError,
    atomic_write_bytes,
    image_size,
    list_images,
    mkstemp_usual_mode,
    png_bytes,
    printable,
    read_alpha,
)

HEADER = ("filename", "image_utf")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOM = b"\xef\xbb\xbf"
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


class SubmissionError(MattingKitError, ValueError):
    """A submission cannot be built (missing predictions, bad inputs); the message lists what is wrong."""


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
def _stems(folder: Path) -> dict[str, Path]:
    """stem -> file for the images directly in ``folder``; two files with one stem is an error."""
    out: dict[str, Path] = {}
    for p in list_images(folder, recursive=False):
        if p.stem in out:
            raise SubmissionError(f"{folder}: two files share the stem {p.stem!r} ({out[p.stem].name}, {p.name})")
        out[p.stem] = p
    return out


def _sample_names(sample_csv: str | os.PathLike) -> list[str]:
    import pandas as pd

    path = Path(sample_csv)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: sample submission not found")
    df = pd.read_csv(path, dtype=str, usecols=lambda c: c == "filename", keep_default_na=False)
    if "filename" not in df.columns:
        raise SubmissionError(f"{path}: no 'filename' column in the sample submission")
    return df["filename"].tolist()


def expected_names(sample_csv: str | os.PathLike | None = None,
                   test_dir: str | os.PathLike | None = None) -> tuple[list[str] | None, str]:
    """The expected ``filename`` values, in order, and where they came from (sample CSV > test folder).

    Example:
        >>> expected_names()
        (None, 'none')
    """
    if sample_csv is not None:
        return _sample_names(sample_csv), f"sample submission {Path(sample_csv).name}"
    if test_dir is not None:
        return sorted(_stems(Path(test_dir))), f"test folder {test_dir}"
    return None, "none"


@contextlib.contextmanager
def _big_csv_fields():
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------
@dataclass
class SubmissionReport:
    """What :func:`build_submission` wrote."""

    path: Path
    rows: int
    file_size: int
    order: str                                         # where the row order came from
    resized: list[str] = field(default_factory=list)   # "stem: WxH -> WxH"

    def summary(self) -> str:
        s = (f"wrote {self.path} — {self.rows} rows, {_human(self.file_size)} ({self.file_size} bytes); "
             f"order: {self.order}")
        if self.resized:
            s += f"\n  resized {len(self.resized)} prediction(s) to the test size: " + "; ".join(self.resized[:5])
            if len(self.resized) > 5:
                s += f"; ... (+{len(self.resized) - 5})"
        return printable(s)


def _resize(alpha: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    shrink = w <= alpha.shape[1] and h <= alpha.shape[0]
    return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def encode_alpha(alpha: np.ndarray) -> str:
    """The ``image_utf`` cell of one alpha: standard base64 of its 8-bit gray PNG (:func:`mattingkit.io.png_bytes`).

    Example:
        >>> encode_alpha(np.zeros((2, 2), np.float32))[:8]
        'iVBORw0K'
    """
    return base64.b64encode(png_bytes(alpha)).decode("ascii")


def submission_csv(rows) -> bytes:
    """The bytes of a submission CSV of in-memory ``(name, alpha)`` rows, in the given order, in the format
    :func:`build_submission` writes (for a generated submission such as the demo data's sample).

    Example:
        >>> submission_csv([("0001", np.zeros((2, 2), np.float32))])[:24]
        b'filename,image_utf\\n0001,'
    """
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for name, alpha in rows:
        writer.writerow([name, encode_alpha(alpha)])
    return buf.getvalue().encode("utf-8")


def same_aspect(have: tuple[int, int], want: tuple[int, int]) -> bool:
    """Whether a ``have`` (W, H) image scales to ``want`` (W, H) without changing its aspect ratio (within
    a pixel of rounding).

    Example:
        >>> same_aspect((512, 512), (1024, 1024)), same_aspect((800, 497), (1024, 1024))
        (True, False)
    """
    (pw, ph), (w, h) = have, want
    return abs(pw * h - ph * w) <= max(w, h, pw, ph)


def build_submission(alpha_dir: str | os.PathLike, out_csv: str | os.PathLike, *,  # noqa: PLR0915 - the CSV's checks and rows in one pass over the folder
                     sample_csv: str | os.PathLike | None = None, test_dir: str | os.PathLike | None = None,
                     size: int | None = None, headless: bool | None = None, verbose: bool = True) -> SubmissionReport:
    """Write the submission CSV from predicted alphas ``alpha_dir/<stem>.png``.

    Rows follow the sample submission (``sample_csv``), else the sorted stems of ``test_dir``, else the
    sorted stems in ``alpha_dir``. Each PNG is 8-bit gray at the test image's size (from ``test_dir``; else
    ``size x size``; else the prediction's own size); a prediction of another size with the same aspect
    ratio is resized (area when shrinking, bilinear when enlarging) and listed in the report; one of
    another aspect ratio is a problem (a matte is never stretched). A missing prediction is an error listing every missing stem;
    unreadable predictions (and file names that are not valid UTF-8) are all collected and reported
    together in one :class:`SubmissionError`. Rows are streamed to a temp file that is renamed into
    place (never a partial CSV; nothing is written when any row fails).

    Example:
        >>> import tempfile, numpy as np
        >>> from mattingkit.io import write_png
        >>> d = tempfile.mkdtemp()
        >>> _ = write_png(f"{d}/a/0002.png", np.zeros((8, 8), np.float32))
        >>> build_submission(f"{d}/a", f"{d}/s.csv", size=8, verbose=False).rows
        1
    """
    from .progress import progress

    alpha_dir = Path(alpha_dir)
    if not alpha_dir.is_dir():
        raise InputNotFoundError(f"{alpha_dir}: predictions folder not found")
    preds = _stems(alpha_dir)
    names, order = expected_names(sample_csv, test_dir)
    if names is None:
        names, order = sorted(preds), f"sorted stems of {alpha_dir}"
    if not names:
        raise SubmissionError(f"nothing to write: no names from {order}")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise SubmissionError(f"{order} lists names more than once: {dupes[:10]}")
    missing = [n for n in names if n not in preds]
    if missing:
        raise SubmissionError(f"{len(missing)} of {len(names)} predictions missing in {alpha_dir} "
                              f"(expected names from {order}): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    tests = _stems(Path(test_dir)) if test_dir is not None else {}
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    resized: list[str] = []
    problems: list[str] = []   # every unusable row, reported together at the end (no CSV then)
    fd, tmp = mkstemp_usual_mode(out_csv)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(HEADER)
            rows = progress(names, desc="submission", headless=headless, unit="row") if verbose else names
            for name in rows:
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    problems.append(f"{preds[name]}: file name is not valid UTF-8, so it cannot be a "
                                    "filename in the CSV; rename the file")
                    continue
                try:
                    alpha = read_alpha(preds[name], strict=True)  # a colour photo is not an alpha
                    if name in tests:
                        (w, h), source = image_size(tests[name]), f"its test image {tests[name]}"
                    elif test_dir is not None:
                        raise SubmissionError(f"{name}: no test image with this stem in {test_dir}")
                    else:
                        (w, h), source = ((size, size), f"size {size}") if size else (alpha.shape[::-1], "")
                    if not same_aspect(alpha.shape[::-1], (w, h)):
                        fix = ("is this the prediction of that image?" if name in tests else
                               "give the test images (--test-dir) for their sizes, or no size to keep the matte's")
                        raise SubmissionError(
                            f"{preds[name]}: {alpha.shape[1]}x{alpha.shape[0]} cannot become {w}x{h} ({source}) "
                            f"without changing its aspect ratio, and a matte is never stretched; {fix}")
                except (ImageReadError, SubmissionError) as e:
                    problems.append(str(e))
                    continue
                if problems:
                    continue  # no CSV will be written: only look for further problems
                if alpha.shape != (h, w):
                    resized.append(f"{name}: {alpha.shape[1]}x{alpha.shape[0]} -> {w}x{h}")
                    alpha = _resize(alpha, w, h)
                writer.writerow([name, encode_alpha(alpha)])
            if problems:
                raise SubmissionError(printable(
                    f"{len(problems)} of {len(names)} rows cannot be written; no submission written:\n  "
                    + "\n  ".join(problems)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_csv)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    report = SubmissionReport(path=out_csv, rows=len(names), file_size=out_csv.stat().st_size, order=order,
                              resized=resized)
    if verbose:
        print(report.summary())
    return report


# --------------------------------------------------------------------------------------------
# Validate
# --------------------------------------------------------------------------------------------
@dataclass
class SubmissionCheck:
    """Every problem found in a submission at once. ``ok`` is True when ``problems`` is empty."""

    path: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    file_size: int = 0
    unchecked: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "OK" if self.ok else "INVALID"
        if self.ok and self.unchecked:
            verdict = "OK as far as checked"
        head = (f"{self.path}: {verdict} — {self.rows} rows, {_human(self.file_size)}, "
                f"{len(self.problems)} problem(s), {len(self.warnings)} warning(s)")
        lines = ([head] + [f"  PROBLEM {p}" for p in self.problems] + [f"  warning {w}" for w in self.warnings]
                 + [f"  not checked: {u}" for u in self.unchecked])
        return printable("\n".join(lines))


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _decode_payload(payload: str) -> tuple[bytes | None, list[str]]:
    """Strictly decode one ``image_utf`` cell: (PNG bytes or None, fault kinds)."""
    faults = []
    if payload.startswith("data:"):
        faults.append("data: URI prefix (write plain base64)")
        payload = payload.split(",", 1)[1] if "," in payload else ""
    if payload != payload.strip():
        faults.append("leading/trailing whitespace in the base64")
        payload = payload.strip()
    if not payload:
        return None, faults + ["empty image_utf"]
    if not _B64_RE.match(payload) or len(payload) % 4:
        bad = sorted(set(re.sub(r"[A-Za-z0-9+/=]", "", payload)))[:5]
        why = f"characters {bad} outside the standard alphabet" if bad else "bad length or padding"
        return None, faults + [f"invalid base64 ({why})"]
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        return None, faults + [f"invalid base64 ({e})"]
    return data, faults


def _check_png(data: bytes, want: tuple[int, int] | None) -> tuple[list[str], list[str]]:
    """(problems, warnings) for decoded image bytes; ``want`` = (width, height)."""
    if not data.startswith(PNG_SIGNATURE):
        kind = ("JPEG" if data[:3] == b"\xff\xd8\xff" else "WebP" if data[8:12] == b"WEBP"
                else "not an image" if data[:4] != b"GIF8" else "GIF")
        return [f"payload is not a PNG ({kind}; starts with {data[:8]!r})"], []
    try:
        with Image.open(_io.BytesIO(data)) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
            arr = np.asarray(im) if mode == "L" else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return [f"PNG does not decode ({e})"], []
    problems, warns = [], []
    if mode != "L":
        what = {"RGB": "RGB instead of grayscale", "RGBA": "RGBA instead of grayscale",
                "LA": "gray+alpha instead of plain grayscale", "P": "palette instead of grayscale",
                "I;16": "16-bit instead of 8-bit", "I": "32-bit integer instead of 8-bit",
                "1": "1-bit instead of 8-bit"}.get(mode, f"mode {mode}")
        problems.append(f"PNG is {what} (want 8-bit grayscale, mode L)")
    if want is not None and (w, h) != want:
        problems.append(f"PNG size {w}x{h}, want {want[0]}x{want[1]}")
    if arr is not None and arr.size and arr.min() == arr.max():
        warns.append(f"constant mask (every pixel {int(arr.min())})")
    return problems, warns


def _iter_rows(path: Path) -> Iterator[list[str]]:
    with _big_csv_fields(), open(path, encoding="utf-8-sig", newline="", errors="strict") as f:
        yield from csv.reader(f)


def _lost_zeros(name: str, expected: set[str]) -> str | None:
    """The expected name that ``name`` is a mangled form of (``1`` / ``1.0`` for ``0001``), if any."""
    key = name.strip()
    with contextlib.suppress(ValueError):
        if re.fullmatch(r"[+-]?\d+(\.0+)?", key):
            key = str(int(float(key)))
    for e in expected:
        if e != name and e.isdigit() and e.lstrip("0") == key.lstrip("0") and len(e) > len(key.lstrip("0")):
            return e
    return None


def _check_bytes(path: Path, report: SubmissionCheck) -> None:
    """Bytes-level checks, streamed: BOM, CRLF / bare CR, final newline."""
    crlf = bare_cr = 0
    with open(path, "rb") as f:
        first = f.read(3)
        if first == BOM:
            report.problems.append("starts with a UTF-8 BOM (write UTF-8 without BOM)")
        f.seek(0)
        prev_cr = False
        last = b""
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crlf += chunk.count(b"\r\n") + (1 if prev_cr and chunk[:1] == b"\n" else 0)
            bare_cr += chunk.count(b"\r")
            prev_cr = chunk[-1:] == b"\r"
            last = chunk[-1:]
        bare_cr -= crlf
    if crlf:
        report.problems.append(f"CRLF line endings ({crlf} lines; the format uses LF)")
    if bare_cr > 0:
        report.problems.append(f"{bare_cr} bare carriage return(s) (\\r)")
    if last != b"\n":
        report.warnings.append("no newline at the end of the file")


def _expected(report: SubmissionCheck, test_dir: str | os.PathLike | None, sample_csv: str | os.PathLike | None,
              size: int | None):
    """Expected names (with their source) and a ``want_size(name)`` lookup of each test image's size."""
    try:
        expected, source = expected_names(sample_csv, test_dir)
    except (SubmissionError, FileNotFoundError, ValueError) as e:
        report.problems.append(f"cannot read the expected names: {e}")
        expected, source = None, "none"
    tests: dict[str, Path] = {}
    if test_dir is not None:
        try:
            tests = _stems(Path(test_dir))
        except (SubmissionError, FileNotFoundError) as e:
            report.problems.append(f"cannot read the test folder: {e}")

    def want_size(name: str) -> tuple[int, int] | None:
        if name in tests:
            try:
                return image_size(tests[name])
            except ImageReadError:
                return None
        return (size, size) if size else None

    return expected, source, want_size


def _read_header(path: Path, rows: Iterator[list[str]], header: list[str], report: SubmissionCheck):
    """Check the header row; return ``(rows, first_line, name_col, data_col, width)`` for the data rows."""
    name_col, data_col, width = 0, 1, 2
    first_line = 2
    if tuple(header) != HEADER:
        lowered = [h.strip().lower() for h in header]
        if len(header) == 3 and lowered[1:] == list(HEADER) and lowered[0] in ("", "unnamed: 0", "index"):
            report.problems.append(f"extra index column {header[0]!r} before filename,image_utf "
                                   "(write the CSV with index=False)")
            name_col, data_col, width = 1, 2, 3
        elif len(header) == 2 and len(header[1]) > 100 and _B64_RE.match(header[1].strip()):
            report.problems.append(f"missing header row (want {','.join(HEADER)})")
            rows.close()
            rows, first_line = _iter_rows(path), 1   # the first line is data: read it again
        else:
            report.problems.append(f"header is {','.join(header)!r}, want exactly {','.join(HEADER)!r}")
            if "filename" in lowered and "image_utf" in lowered:
                name_col, data_col = lowered.index("filename"), lowered.index("image_utf")
                width = len(header)
    return rows, first_line, name_col, data_col, width


def _check_row(i: int, row: list[str], name_col: int, data_col: int, width: int, want_size,
               names: list[str], faults: dict[str, list[str]], warns: dict[str, list[str]]) -> None:
    """Check one data row (columns, name, payload decode, PNG size/mode), collecting faults by kind."""
    if row in ([], [""]):
        faults.setdefault("blank line", []).append(f"line {i}")
        return
    if (len(row) == width + 1 and data_col == width - 1 and row[data_col].startswith("data:")
            and "," not in row[data_col]):
        row = row[:data_col] + [row[data_col] + "," + row[data_col + 1]]  # an unquoted data: URI
    if len(row) != width:
        faults.setdefault(f"wrong number of columns (want {width})", []).append(f"line {i}")
        if len(row) <= max(name_col, data_col):
            return
    name, payload = row[name_col], row[data_col]
    names.append(name)
    if not name.strip():
        faults.setdefault("empty filename", []).append(f"line {i}")
    data, kinds = _decode_payload(payload)
    for k in kinds:
        faults.setdefault(k, []).append(name)
    if data is None:
        return
    probs, ws = _check_png(data, want_size(name))
    for k in probs:
        faults.setdefault(k, []).append(name)
    for k in ws:
        warns.setdefault(k, []).append(name)


def _check_rows(path: Path, report: SubmissionCheck, want_size) -> list[str] | None:
    """Header and rows; return the row names, or None when there is no header row at all."""
    faults: dict[str, list[str]] = {}   # fault message -> row names
    warns: dict[str, list[str]] = {}
    names: list[str] = []
    try:
        rows = _iter_rows(path)
        header = next(rows, None)
        if header is None:
            report.problems.append("no header row")
            return None
        rows, first_line, name_col, data_col, width = _read_header(path, rows, header, report)
        for i, row in enumerate(rows, start=first_line):
            _check_row(i, row, name_col, data_col, width, want_size, names, faults, warns)
    except UnicodeDecodeError as e:
        report.problems.append(f"not valid UTF-8 ({e})")
    except csv.Error as e:
        report.problems.append(f"not a parseable CSV ({e})")
    report.rows = len(names)

    for kind, where in faults.items():
        report.problems.append(f"{kind}: {len(where)} row(s): {_listing(where)}")
    for kind, where in warns.items():
        report.warnings.append(f"{kind}: {len(where)} row(s): {_listing(where)}")
    return names


def _check_unchecked_names(names: list[str], report: SubmissionCheck, size: int | None) -> None:
    """No expected names: say so, and flag numeric stems of mixed lengths (lost zero padding)."""
    report.unchecked.append(
        "filenames not checked against the test set (no --sample or --test-dir given): missing, extra or "
        "renamed rows (e.g. stems that lost their leading zeros) would pass; "
        + (f"sizes were checked against {size}x{size}" if size else "sizes were not checked (no --size)"))
    digits = sorted({len(n) for n in names if n.isdigit()})
    if len(digits) > 1:
        short = next(n for n in names if n.isdigit() and len(n) == digits[0])
        long_ = next(n for n in names if n.isdigit() and len(n) == digits[-1])
        report.warnings.append(f"numeric filenames of different lengths ({short!r}, {long_!r}): if the test "
                               "images are zero-padded (0001), the padding was lost (read stems with dtype=str)")


def _check_expected_names(names: list[str], expected: list[str], source: str, dupes: list[str],
                          report: SubmissionCheck) -> None:
    """Row names vs the expected ones: count, lost leading zeros, extra, missing, order."""
    exp_set, got_set = set(expected), set(names)
    if len(names) != len(expected):
        report.problems.append(f"{len(names)} rows, want {len(expected)} (from {source})")
    extra = [n for n in dict.fromkeys(names) if n not in exp_set]
    zeros = {n: _lost_zeros(n, exp_set) for n in extra}
    lost = [f"{n!r} (want {e!r})" for n, e in zeros.items() if e is not None]
    if lost:
        report.problems.append(f"filename(s) lost their leading zeros (read/write stems as strings, "
                               f"dtype=str): {', '.join(lost[:8])}{' ...' if len(lost) > 8 else ''}")
    really_extra = [n for n in extra if zeros[n] is None]
    if really_extra:
        report.problems.append(f"unexpected filename(s) not in {source}: {_listing(really_extra)}")
    matched_by_zeros = {e for e in zeros.values() if e is not None}
    missing = [n for n in expected if n not in got_set]
    if missing:
        report.problems.append(f"missing row(s) for {len(missing)} name(s) from {source}: {_listing(missing)}"
                               + (" (some only as zero-stripped names, see above)"
                                  if matched_by_zeros & set(missing) else ""))
    if not dupes and not missing and not extra and names != [n for n in expected if n in got_set]:
        report.warnings.append(f"rows are not in the order of {source}")


def _check_names(names: list[str], expected: list[str] | None, source: str, report: SubmissionCheck,
                 size: int | None) -> None:
    """Duplicates, then the names against the test set (or a note that they were not checked)."""
    counts = Counter(names)
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        report.problems.append(f"duplicate filename(s): {_listing(dupes)}")
    if expected is None and source == "none":
        _check_unchecked_names(names, report, size)
    if expected is not None:
        _check_expected_names(names, expected, source, dupes, report)


def validate_submission(csv_path: str | os.PathLike, *, test_dir: str | os.PathLike | None = None,
                        sample_csv: str | os.PathLike | None = None, size: int | None = None) -> SubmissionCheck:
    """Check a submission CSV against the organisers' format and report ALL problems at once.

    Checks: UTF-8 without BOM, LF line endings, the exact header ``filename,image_utf`` (and spots an
    extra index column), row count and names against ``test_dir`` or ``sample_csv`` (missing, extra,
    duplicate, stems that lost leading zeros), and that every row decodes (strict base64, no ``data:``
    prefix) to a PNG, 8-bit grayscale (mode L), of the test image's size (``size x size`` when no
    ``test_dir``; no size check without either: the builder writes the predictions' own sizes then, so
    the two agree). Returns a :class:`SubmissionCheck` (``.ok``, ``.problems``, ``.summary()``).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "bad.csv")
        >>> _ = open(p, "w").write("id,image\\n1,xyz\\n")
        >>> rep = validate_submission(p)
        >>> rep.ok, len(rep.problems) >= 2
        (False, True)
    """
    path = Path(csv_path)
    report = SubmissionCheck(path=path)
    if not path.is_file():
        report.problems.append("file not found")
        return report
    report.file_size = path.stat().st_size
    if report.file_size == 0:
        report.problems.append("empty file (0 bytes)")
        return report
    _check_bytes(path, report)
    expected, source, want_size = _expected(report, test_dir, sample_csv, size)
    names = _check_rows(path, report, want_size)
    if names is None:
        return report
    _check_names(names, expected, source, report, size)
    return report


# --------------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"^[^/\\\x00]+$")


def decode_submission(csv_path: str | os.PathLike, out_dir: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Write every row's PNG (the first ``limit`` good ones when given) to ``out_dir/<filename>.png`` (to
    inspect a submission); returns the paths.

    Rows that do not decode to a PNG, and unsafe file names (path separators, ``.``/``..``), are
    skipped with a warning.

    Example:
        >>> import tempfile, numpy as np
        >>> from mattingkit.io import write_png
        >>> d = tempfile.mkdtemp()
        >>> _ = write_png(f"{d}/a/0003.png", np.ones((4, 4), np.float32))
        >>> _ = build_submission(f"{d}/a", f"{d}/s.csv", size=4, verbose=False)
        >>> [p.name for p in decode_submission(f"{d}/s.csv", f"{d}/decoded")]
        ['0003.png']
    """
    path = Path(csv_path)
    out = Path(out_dir)
    written: list[Path] = []
    bad: list[str] = []
    rows = _iter_rows(path)
    header = next(rows, None)
    if header is None:
        raise SubmissionError(f"{path}: empty CSV")
    lowered = [h.strip().lower() for h in header]
    if "filename" in lowered and "image_utf" in lowered:
        name_col, data_col = lowered.index("filename"), lowered.index("image_utf")
    else:
        raise SubmissionError(f"{path}: header {header} has no filename/image_utf columns")
    for row in rows:
        if limit is not None and len(written) >= limit:
            break
        if len(row) <= max(name_col, data_col):
            continue
        name, payload = row[name_col], row[data_col]
        if not _SAFE_NAME.match(name) or name in (".", ".."):
            bad.append(f"{name!r} (unsafe file name)")
            continue
        data, _ = _decode_payload(payload)
        if data is None or not data.startswith(PNG_SIGNATURE):
            bad.append(f"{name!r} (not base64 PNG)")
            continue
        written.append(atomic_write_bytes(out / f"{name}.png", data))
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} row(s): {', '.join(bad[:10])}", stacklevel=2)
    return written


__all__ = ["HEADER", "SubmissionError", "SubmissionReport", "SubmissionCheck", "build_submission",
           "decode_submission", "expected_names", "validate_submission"]

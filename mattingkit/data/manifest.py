"""The manifest CSV: one row per training / evaluation item, the hand-off from data scanning to datasets.

Columns, in this order (see docs/CONTRACTS.md): ``id, image, alpha, trimap, fg, bg, group, source,
split, width, height``. Extra columns are kept after these.

- ``id`` is a string, always (``"0001"`` stays ``"0001"``).
- The five path columns hold an empty string when the file is absent. On disk a path is stored
  relative to the manifest's folder when the file lies below it (the folder can then be moved or
  zipped), else absolute. :func:`read_manifest` returns absolute paths.
- ``width``/``height`` are of ``image`` (or ``fg``/``alpha`` when there is no image), from the file
  header; :func:`mattingkit.data.layouts.validate` fills them in.
- The file is UTF-8. A file name that is not valid UTF-8 (possible on Linux: Python holds it with
  surrogate escapes) is written as its original bytes and read back to the same ``str``
  (``surrogateescape``), so such files stay usable instead of breaking the whole manifest.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = write_manifest([{"id": "0001", "image": os.path.join(d, "im", "0001.jpg"), "width": 4,
    ...                      "height": 3}], os.path.join(d, "manifest.csv"))
    >>> open(p).read().splitlines()[1]
    '0001,im/0001.jpg,,,,,,,,4,3'
    >>> df = read_manifest(p)
    >>> df.loc[0, "id"], df.loc[0, "image"] == os.path.join(d, "im", "0001.jpg"), int(df.loc[0, "width"])
    ('0001', True, 4)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from ..io import atomic_write_bytes

MANIFEST_COLUMNS = ["id", "image", "alpha", "trimap", "fg", "bg", "group", "source", "split",
                    "width", "height"]
PATH_COLUMNS = ["image", "alpha", "trimap", "fg", "bg"]
INT_COLUMNS = ["width", "height"]
SPLITS = ("train", "val", "test", "")
#: How manifest / problem CSVs encode file names that are not valid UTF-8 (their original bytes).
CSV_ERRORS = "surrogateescape"

PathLike = str | os.PathLike


def empty_manifest() -> pd.DataFrame:
    """A manifest with the standard columns and no rows."""
    df = pd.DataFrame({c: pd.Series(dtype=str) for c in MANIFEST_COLUMNS})
    for c in INT_COLUMNS:
        df[c] = df[c].astype("int64")
    return df


def normalize(rows: pd.DataFrame | Iterable[Mapping] | None) -> pd.DataFrame:
    """Rows (a DataFrame or a list of dicts) -> a DataFrame with every standard column, in order.

    Missing columns become ``""`` (``0`` for width/height); ids and paths become strings; extra
    columns are kept after the standard ones.

    Example:
        >>> df = normalize([{"id": 7, "note": "x"}])
        >>> list(df.columns)[-3:], df.loc[0, "id"], df.loc[0, "image"], int(df.loc[0, "width"])
        (['width', 'height', 'note'], '7', '', 0)
    """
    if rows is None:
        return empty_manifest()
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if len(df) == 0 and len(df.columns) == 0:
        return empty_manifest()
    df = df.reset_index(drop=True)
    for c in MANIFEST_COLUMNS:
        if c not in df.columns:
            df[c] = 0 if c in INT_COLUMNS else ""
    for c in MANIFEST_COLUMNS:
        if c in INT_COLUMNS:
            vals = pd.to_numeric(df[c].replace("", 0), errors="coerce")
            if vals.isna().any():
                bad = df.loc[vals.isna(), c].iloc[0]
                raise ValueError(f"manifest column {c!r} must hold integers, got {bad!r}")
            df[c] = vals.astype("int64")
        else:
            df[c] = df[c].map(_as_str)
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[MANIFEST_COLUMNS + extra]


def _as_str(v) -> str:
    if v is None:
        return ""
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def _relativize(value: str, folder: str) -> str:
    if not value:
        return ""
    p = os.path.abspath(value)
    try:
        if os.path.commonpath([p, folder]) == folder:
            return Path(os.path.relpath(p, folder)).as_posix()
    except ValueError:  # different drives (Windows)
        pass
    return p


def write_manifest(rows: pd.DataFrame | Iterable[Mapping], path: PathLike) -> Path:
    """Write manifest rows to ``path`` atomically; paths below the manifest folder become relative.

    Relative paths in ``rows`` are taken relative to the current working directory.

    Example:
        >>> import tempfile, os
        >>> p = write_manifest([{"id": "a", "alpha": "/elsewhere/a.png"}],
        ...                    os.path.join(tempfile.mkdtemp(), "m.csv"))
        >>> read_manifest(p).loc[0, "alpha"]
        '/elsewhere/a.png'
    """
    path = Path(path)
    df = normalize(rows)
    folder = os.path.abspath(path.parent)
    for c in PATH_COLUMNS:
        df[c] = df[c].map(lambda v: _relativize(v, folder))
    text = df.to_csv(index=False, lineterminator="\n")
    return atomic_write_bytes(path, text.encode("utf-8", CSV_ERRORS))


def read_manifest(path: PathLike) -> pd.DataFrame:
    """Read a manifest CSV: ids and paths as strings (paths absolute), width/height as ints.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file for a missing file or a column.

    Example:
        >>> import tempfile, os
        >>> p = write_manifest([{"id": "0001", "split": "val"}], os.path.join(tempfile.mkdtemp(), "m.csv"))
        >>> df = read_manifest(p); (df.loc[0, "id"], df.loc[0, "split"], df["width"].dtype.name)
        ('0001', 'val', 'int64')
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (build it with build_manifest / notebook 01)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8",
                         encoding_errors=CSV_ERRORS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable manifest CSV ({e})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {', '.join(missing)}; expected "
                         f"{', '.join(MANIFEST_COLUMNS)}")
    try:
        df = normalize(df)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    folder = os.path.abspath(path.parent)
    for c in PATH_COLUMNS:
        df[c] = df[c].map(lambda v: "" if not v else os.path.normpath(os.path.join(folder, v)))
    return df

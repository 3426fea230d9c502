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

from ..errors import InputDataError, InputNotFoundError
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
        raise InputNotFoundError(f"{path}: manifest not found (build it with build_manifest / notebook 01)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8",
                         encoding_errors=CSV_ERRORS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputDataError(f"{path}: not a readable manifest CSV ({e})") from None
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


def pick_rows(df: pd.DataFrame, n: int, prefer: str = "val") -> pd.DataFrame:
    """Up to ``n`` rows, the ``prefer`` split first, in manifest order (deterministic).

    Example:
        >>> df = normalize([{"id": "a", "split": "train"}, {"id": "b", "split": "val"}])
        >>> pick_rows(df, 2)["id"].tolist(), len(pick_rows(df, 0))
        (['b', 'a'], 0)
    """
    if n <= 0 or len(df) == 0:
        return df.iloc[:0]
    first = df[df["split"] == prefer]
    return pd.concat([first, df[df["split"] != prefer]]).iloc[:n]


def load_row(row: Mapping) -> dict:
    """The arrays of one manifest row (a dict or a DataFrame row), at full resolution: ``id``, ``image``
    (float32 RGB: the ``image`` file, else ``fg``; an alpha-only row shows its alpha), ``alpha``,
    ``trimap`` and ``pred`` (a prediction, when the row has that key) as float32 ``HxW``; ``None`` for
    what the row lacks. Cells hold paths (read with :mod:`mattingkit.io`) or arrays (passed through).
    The one loader of the previews and inspectors.

    Example:
        >>> import numpy as np
        >>> r = load_row({"id": 7, "alpha": np.ones((2, 3), np.float32)})
        >>> r["id"], r["image"].shape, r["trimap"], r["pred"]
        ('7', (2, 3, 3), None, None)
    """
    import numpy as np

    from ..io import read_alpha, read_image, read_trimap

    def get(key, reader):
        v = row.get(key)
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and np.isnan(v)):
            return None
        return reader(v) if isinstance(v, (str, os.PathLike)) else np.asarray(v)

    image = get("image", read_image)
    if image is None:
        image = get("fg", read_image)
    alpha = get("alpha", read_alpha)
    if image is None and alpha is not None:  # alpha-only sample: show the alpha as the image
        image = np.repeat(alpha[:, :, None] if alpha.ndim == 2 else alpha, 3, axis=2)
    return {"id": str(row.get("id", "")), "image": image, "alpha": alpha, "trimap": get("trimap", read_trimap),
            "pred": get("pred", read_alpha)}

"""Dataset layouts on disk -> manifest rows; validation of every file; group-aware train/val split.

Each ``scan_<layout>(root, ...)`` lists files only (fast, no image reads) and returns a DataFrame of
manifest rows (columns in :data:`mattingkit.data.manifest.MANIFEST_COLUMNS`). Files are paired by
stem, kept as a string (``"0001"`` stays ``"0001"``). A stem found in one folder but not in its
partner folder still gets a row, with the partner empty, so :func:`validate` reports it (nothing is
dropped silently). A zip's extra top folder is tolerated: the layout's folders are searched a few
levels down.

=============  ==================================================================================
layout         folders (first match wins; names are case-insensitive)
=============  ==================================================================================
aim500         ``original/`` (or image/) + ``mask/`` (or alpha/) + ``trimap/``
adobe          every folder holding ``fg/`` + ``alpha/`` (+ optional ``bg/``, ``trimaps/``); an
               ``*fg_names.txt`` list beside them restricts the foregrounds; ``test`` in the path ->
               split ``test``
competition    ``train_dataset/{images|orig|orig_1024|image}`` + ``{masks|mask|alpha|alphas|mask_1024}``
competition_test  ``test_dataset/orig_1024`` (RGB only, split ``test``)
alphamatting   ``image/`` (or input*/) + ``alpha/`` (or gt*/) + ``trimap/`` (or trimap1/, Trimap1/)
folder         ``{im|image|images|img|imgs}/`` + ``{gt|alpha|mask|masks|alphas|matte}/`` (+ ``trimap/``),
               e.g. DIS5K's ``im/`` + ``gt/``; or explicit image_dir/alpha_dir (:func:`layout_hint`)
synthetic      the demo data: ``<root>/aim500`` scanned as aim500
=============  ==================================================================================

:func:`validate` reads every file header (no pixel decode) and collects *all* problems at once;
with ``check_pixels=True`` it also decodes pixels (trimap values / empty unknown region, RGB alphas
whose channels differ, any corruption past the header). Bad items are excluded from
``report.good_df`` and listed in ``report.problems``.

Example:
    >>> import tempfile, os, numpy as np
    >>> from mattingkit.io import write_png
    >>> root = tempfile.mkdtemp()
    >>> for d in ("im", "gt"):
    ...     _ = write_png(os.path.join(root, d, "0001.png"), np.zeros((4, 6), np.float32))
    >>> rows = scan("folder", root)
    >>> report = validate(rows)
    >>> g = report.good_df
    >>> g.loc[0, "id"], int(g.loc[0, "width"]), int(g.loc[0, "height"]), report.problems
    ('0001', 6, 4, [])
"""
from __future__ import annotations

import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from .. import env
from ..errors import InputNotFoundError
from ..io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    atomic_write_bytes,
    image_size,
    list_images,
    printable,
    read_image,
    read_rgba,
    read_trimap,
)
from .manifest import CSV_ERRORS, MANIFEST_COLUMNS, PATH_COLUMNS, normalize, write_manifest

PathLike = str | os.PathLike

LAYOUTS = ("aim500", "adobe", "competition", "competition_test", "alphamatting", "folder", "synthetic")

# Folder aliases per role (lower-case); the first existing one is used.
AIM500_DIRS = {"image": ("original", "originals", "image", "images"),
               "alpha": ("mask", "masks", "alpha", "matte"),
               "trimap": ("trimap", "trimaps")}
COMPETITION_IMAGE_DIRS = ("images", "orig", "orig_1024", "image", "imgs")
COMPETITION_MASK_DIRS = ("masks", "mask", "alpha", "alphas", "mask_1024", "mattes")
COMPETITION_TEST_DIRS = ("orig_1024", "images", "orig", "image")
ALPHAMATTING_DIRS = {"image": ("image", "images", "input", "input_training_lowres", "input_training_highres",
                               "input_lowres", "input_highres"),
                     "alpha": ("alpha", "gt", "gt_training_lowres", "gt_training_highres", "alphas"),
                     "trimap": ("trimap", "trimap1", "trimaps", "trimap_training_lowres/trimap1",
                                "trimap_training_highres/trimap1", "trimap_lowres/trimap1")}
FOLDER_DIRS = {"image": ("im", "image", "images", "img", "imgs"),
               "alpha": ("gt", "alpha", "mask", "masks", "alphas", "matte")}
FOLDER_TRIMAP_DIRS = ("trimap", "trimaps")
ADOBE_ALPHA_DIRS = ("alpha", "alphas")
ADOBE_TRIMAP_DIRS = ("trimaps", "trimap")

# Roles that every item of a source must have; other roles are expected when any item of the same
# dataset folder has them (e.g. if some AIM-500 items have trimaps, all should).
REQUIRED_ROLES = {
    "aim500": ("image", "alpha"),
    "adobe": ("fg", "alpha"),
    "competition": ("image", "alpha"),
    "alphamatting": ("image", "alpha"),
    "folder": ("image", "alpha"),
    "competition_test": ("image",),
}
#: Roles whose size must equal the item's reference size (bg may legitimately differ: it is resized).
SIZE_ROLES = ("image", "fg", "alpha", "trimap")

# Problem kinds (the text before ':' in a problem message).
MISSING_PARTNER = "missing partner"
MISSING_FILE = "missing file"
EMPTY_FILE = "empty file"
TRUNCATED = "truncated"
UNREADABLE = "unreadable"
SIZE_MISMATCH = "size mismatch"
DUPLICATE_ID = "duplicate id"
TRIMAP_NO_UNKNOWN = "trimap without unknown"
BAD_TRIMAP = "bad trimap"
ALPHA_NOT_SINGLE = "alpha not single-channel"

#: Pixel checks run automatically (``check_pixels=None``) for datasets up to this many items.
AUTO_PIXEL_CHECK_MAX_ITEMS = 1000


# --------------------------------------------------------------------------------------------
# Folder helpers
# --------------------------------------------------------------------------------------------
def _child(root: Path, names: Sequence[str]) -> Path | None:
    """The first existing sub-folder of ``root`` named like one of ``names`` (case-insensitive;
    a name may be a nested path like ``a/b``)."""
    if not root.is_dir():
        return None
    for name in names:
        cur: Path | None = root
        for part in name.split("/"):
            cur = _child_exact(cur, part) if cur is not None else None
        if cur is not None:
            return cur
    return None


def _child_exact(root: Path, name: str) -> Path | None:
    p = root / name
    if p.is_dir():
        return p
    try:
        for e in os.scandir(root):
            if e.name.lower() == name.lower() and e.is_dir():
                return Path(e.path)
    except OSError:
        return None
    return None


def _search(root: Path, predicate: Callable[[Path], bool], max_depth: int = 3) -> list[Path]:
    """Folders under ``root`` (breadth-first, up to ``max_depth`` levels, root included) satisfying
    ``predicate``; a match is not searched further."""
    found: list[Path] = []
    level = [root]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            if predicate(d):
                found.append(d)
                continue
            try:
                nxt.extend(sorted(Path(e.path) for e in os.scandir(d)
                                  if e.is_dir() and not e.name.startswith((".", "__"))))
            except OSError:
                pass
        level = nxt
        if not level:
            break
    return found


def _require_dir(root: PathLike, layout: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputNotFoundError(
            f"{root}: dataset folder not found (layout {layout!r}). Download it with notebook 01 / "
            "`mattingkit download` (mattingkit.kaggle), or make the demo data with `mattingkit demo-data`.")
    return root


def _files_by_stem(folder: Path | None) -> dict[str, list[Path]]:
    """Image files directly in ``folder`` grouped by stem (hidden files skipped)."""
    out: dict[str, list[Path]] = {}
    if folder is None:
        return out
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        if e.name.startswith(".") or not e.is_file():
            continue
        p = Path(e.path)
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            out.setdefault(p.stem, []).append(p)
    return out


def _group_of(item_id: str, group_regex: str | None) -> str:
    if not group_regex:
        return item_id
    m = re.search(group_regex, item_id)
    if not m:
        return item_id
    return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)


def _pair(dirs: Mapping[str, Path | None], primary: str, source: str, split: str = "",
          group_regex: str | None = None, only: set[str] | None = None) -> list[dict]:
    """Rows pairing files by stem across role folders; a stem missing in a folder leaves that role ''."""
    files = {role: _files_by_stem(d) for role, d in dirs.items() if d is not None}
    stems = sorted(set().union(*[set(f) for f in files.values()])) if files else []
    rows = []
    for stem in stems:
        if only is not None and stem not in only:
            continue
        lists = {role: f.get(stem, []) for role, f in files.items()}
        n = max(1, max(len(v) for v in lists.values()))
        for i in range(n):  # several files with one stem -> several rows -> "duplicate id"
            row = {c: "" for c in MANIFEST_COLUMNS}
            row.update(id=stem, group=_group_of(stem, group_regex), source=source, split=split,
                       width=0, height=0)
            for role, v in lists.items():
                row[role] = str(v[min(i, len(v) - 1)]) if v else ""
            rows.append(row)
    return rows


def _frame(rows: list[dict]) -> pd.DataFrame:
    return normalize(rows)


# --------------------------------------------------------------------------------------------
# Layout scanners
# --------------------------------------------------------------------------------------------
def scan_aim500(root: PathLike, split: str = "", group_regex: str | None = None,
                source: str = "aim500") -> pd.DataFrame:
    """AIM-500 style: ``original/`` (photos) + ``mask/`` (alphas) + ``trimap/``.

    Example:
        >>> import tempfile
        >>> len(scan_aim500(tempfile.mkdtemp()))  # no original/ + mask/ folders: no rows
        0
    """
    root = _require_dir(root, "aim500")
    found = _search(root, lambda d: _child(d, AIM500_DIRS["image"]) is not None
                    and _child(d, AIM500_DIRS["alpha"]) is not None)
    rows: list[dict] = []
    for base in found[:1] or []:
        dirs = {role: _child(base, names) for role, names in AIM500_DIRS.items()}
        rows += _pair(dirs, "image", source, split, group_regex)
    return _frame(rows)


def _names_filter(base: Path, root: Path) -> set[str] | None:
    """Union of ``*fg_names.txt`` lists found in ``base`` or up to two levels above it (within root)."""
    names: set[str] = set()
    found = False
    cur = base
    for _ in range(3):
        for f in sorted(cur.glob("*fg_names.txt")):
            found = True
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line:
                    names.add(Path(line).stem)
        if cur == root or cur.parent == cur:
            break
        cur = cur.parent
    return names if found else None


def scan_adobe(root: PathLike, split: str = "", group_regex: str | None = None,
               use_names_lists: bool = True) -> pd.DataFrame:
    """Adobe Composition-1k / DIM style: every folder with ``fg/`` + ``alpha/`` (+ ``bg/``, ``trimaps/``).

    Foregrounds are the primary files (there is no photo: ``image`` stays empty). A folder whose
    path (below ``root``) contains ``test`` gets split ``test``. ``*fg_names.txt`` lists next to
    the folders restrict the foregrounds to the listed names when ``use_names_lists``.
    """
    root = _require_dir(root, "adobe")
    found = _search(root, lambda d: _child(d, ("fg",)) is not None
                    and _child(d, ADOBE_ALPHA_DIRS) is not None, max_depth=4)
    rows: list[dict] = []
    for base in found:
        dirs = {"fg": _child(base, ("fg",)), "alpha": _child(base, ADOBE_ALPHA_DIRS),
                "bg": _child(base, ("bg",)), "trimap": _child(base, ADOBE_TRIMAP_DIRS)}
        rel = base.relative_to(root).as_posix().lower() if base != root else ""
        s = "test" if "test" in rel else split
        only = _names_filter(base, root) if use_names_lists else None
        rows += _pair(dirs, "fg", "adobe", s, group_regex, only)
    return _frame(rows)


def _competition_train_dir(root: Path) -> Path | None:
    def is_train(d: Path) -> bool:
        return (_child(d, COMPETITION_IMAGE_DIRS) is not None
                and _child(d, COMPETITION_MASK_DIRS) is not None)

    for d in _search(root, lambda d: d.name.lower() == "train_dataset", max_depth=3):
        if is_train(d):
            return d
    found = _search(root, is_train, max_depth=2)
    return found[0] if found else None


def scan_competition(root: PathLike, split: str = "", group_regex: str | None = None) -> pd.DataFrame:
    """The ecom.tech competition's training pairs: ``train_dataset/images/NNNN.jpg`` + ``masks/NNNN.png``.

    Stems stay strings (``"0001"``). Use :func:`scan_competition_test` for the test images.
    """
    root = _require_dir(root, "competition")
    train = _competition_train_dir(root)
    if train is None:
        return _frame([])
    dirs = {"image": _child(train, COMPETITION_IMAGE_DIRS), "alpha": _child(train, COMPETITION_MASK_DIRS)}
    return _frame(_pair(dirs, "image", "competition", split, group_regex))


def competition_test_dir(root: PathLike) -> Path | None:
    """The competition's test image folder (``test_dataset/orig_1024``) under ``root``, if any."""
    root = Path(root)
    for d in _search(root, lambda d: d.name.lower() == "test_dataset", max_depth=3):
        sub = _child(d, COMPETITION_TEST_DIRS)
        if sub is not None:
            return sub
    return None


def scan_competition_test(root: PathLike) -> pd.DataFrame:
    """Test images of the competition (RGB only): ``test_dataset/orig_1024/NNNN.png`` -> rows with
    split ``test`` and source ``competition_test``. ``root`` may also be the image folder itself."""
    root = _require_dir(root, "competition_test")
    folder = competition_test_dir(root)
    if folder is None:
        folder = root
    return _frame(_pair({"image": folder}, "image", "competition_test", "test"))


def scan_alphamatting(root: PathLike, split: str = "", group_regex: str | None = None) -> pd.DataFrame:
    """alphamatting.com style: ``image/`` + ``alpha/`` (or ``gt/``) + ``trimap/`` (or ``trimap1/``)."""
    root = _require_dir(root, "alphamatting")
    found = _search(root, lambda d: _child(d, ALPHAMATTING_DIRS["image"]) is not None
                    and _child(d, ALPHAMATTING_DIRS["alpha"]) is not None)
    if not found:
        return _frame([])
    base = found[0]
    dirs = {role: _child(base, names) for role, names in ALPHAMATTING_DIRS.items()}
    return _frame(_pair(dirs, "image", "alphamatting", split, group_regex))


def _resolve_sub(root: Path, d: PathLike | None) -> Path | None:
    if d is None:
        return None
    p = Path(d)
    p = p if p.is_absolute() else root / p
    if not p.is_dir():
        raise InputNotFoundError(f"{p}: folder not found")
    return p


def scan_folder(root: PathLike, image_dir: PathLike | None = None, alpha_dir: PathLike | None = None,
                trimap_dir: PathLike | None = None, split: str = "", group_regex: str | None = None
                ) -> pd.DataFrame:
    """Generic pairs: ``im/`` + ``gt/`` (DIS5K style), ``image/`` + ``alpha/``, or explicit folders
    (relative to ``root`` unless absolute)."""
    root = _require_dir(root, "folder")
    if image_dir is not None or alpha_dir is not None:
        dirs = {"image": _resolve_sub(root, image_dir), "alpha": _resolve_sub(root, alpha_dir),
                "trimap": _resolve_sub(root, trimap_dir)}
    else:
        found = _search(root, lambda d: _child(d, FOLDER_DIRS["image"]) is not None
                        and _child(d, FOLDER_DIRS["alpha"]) is not None)
        if not found:
            return _frame([])
        base = found[0]
        dirs = {"image": _child(base, FOLDER_DIRS["image"]), "alpha": _child(base, FOLDER_DIRS["alpha"]),
                "trimap": _resolve_sub(root, trimap_dir) or _child(base, FOLDER_TRIMAP_DIRS)}
    return _frame(_pair(dirs, "image", "folder", split, group_regex))


def scan(layout: str, root: PathLike, **kwargs) -> pd.DataFrame:
    """Dispatch to ``scan_<layout>``; ``synthetic`` is the demo data (``<root>/aim500``, AIM-500 style).

    Example:
        >>> scan("nope", ".")
        Traceback (most recent call last):
        ...
        ValueError: unknown dataset layout 'nope'; valid layouts: aim500, adobe, competition, competition_test, alphamatting, folder, synthetic
    """
    if layout == "synthetic":
        root = Path(root)
        sub = root / "aim500"
        return scan_aim500(sub if sub.is_dir() else root, **kwargs)
    fns = {"aim500": scan_aim500, "adobe": scan_adobe, "competition": scan_competition,
           "competition_test": scan_competition_test, "alphamatting": scan_alphamatting,
           "folder": scan_folder}
    if layout not in fns:
        raise ValueError(f"unknown dataset layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    if layout == "competition_test":
        kwargs.pop("group_regex", None)
        kwargs.pop("split", None)
    return fns[layout](root, **kwargs)


class BackgroundsError(InputNotFoundError):
    """The background pool (``data.backgrounds``) is missing or empty; the message says how to fix it.
    Also a ``FileNotFoundError`` and a ``ValueError`` (what the two cases raised before)."""


_BACKGROUNDS_FIX = ("put background images there, point data.backgrounds at a folder of images "
                    "(--set data.backgrounds=/path/to/backgrounds; a relative path is under the data root), "
                    "or set data.backgrounds=null to train on the photos without new backgrounds")


def list_backgrounds(folder: PathLike, min_count: int = 1) -> list[Path]:
    """Background images under ``folder`` (recursive, sorted, hidden files skipped).

    Raises :class:`BackgroundsError` (a ``FileNotFoundError`` / ``ValueError``) when the folder is
    missing or holds fewer than ``min_count`` images, saying how to point ``data.backgrounds`` elsewhere.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BackgroundsError(f"{folder}: background folder not found (data.backgrounds); {_BACKGROUNDS_FIX}")
    found = list_images(folder, recursive=True)
    if len(found) < min_count:
        raise BackgroundsError(f"{folder}: {len(found)} background images found, need at least {min_count} "
                               f"(extensions: {', '.join(IMAGE_EXTENSIONS)}); {_BACKGROUNDS_FIX}")
    return found


def check_backgrounds(cfg, environ: Mapping[str, str] | None = None) -> list[Path] | None:
    """The background images ``cfg.data.backgrounds`` names (``None`` when it is null: no pool), or a
    :class:`BackgroundsError` saying how to fix it. Call it before any work (the run's first step),
    not when training starts.

    Example:
        >>> from mattingkit.config import load_config
        >>> check_backgrounds(load_config("ecom")) is None
        True
    """
    value = cfg.data.backgrounds
    if not value:
        return None
    folder = resolve_data_path(value, cfg, environ)
    try:
        return list_backgrounds(folder)
    except BackgroundsError as e:
        raise BackgroundsError(f"data.backgrounds={value!r}: {e}") from None


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
class Problem(NamedTuple):
    """One problem with one item: ``(id, file, problem)``; ``problem`` reads ``"<kind>: <detail>"``."""

    id: str
    file: str
    problem: str

    @property
    def kind(self) -> str:
        return self.problem.split(":", 1)[0]


@dataclass
class ValidationReport:
    """All problems found by :func:`validate`; ``good_df`` holds the items without any."""

    good_df: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    n_items: int = 0
    check_pixels: bool = False
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    @property
    def bad_ids(self) -> list[str]:
        return sorted({p.id for p in self.problems})

    @property
    def n_good(self) -> int:
        return len(self.good_df)

    @property
    def n_bad(self) -> int:
        return self.n_items - self.n_good

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, max_lines: int = 10) -> str:
        mode = "headers + pixels" if self.check_pixels else "headers only"
        lines = [f"validated {self.n_items} items ({mode}, {self.seconds:.1f} s): {self.n_good} good, "
                 f"{self.n_bad} excluded, {len(self.problems)} problems"]
        for kind, n in self.counts.items():
            lines.append(f"  {kind}: {n}")
        for p in self.problems[:max_lines]:
            lines.append(f"  - {p.id}: {p.problem} [{p.file}]")
        if len(self.problems) > max_lines:
            lines.append(f"  ... and {len(self.problems) - max_lines} more (report.to_csv(path) lists all)")
        return printable("\n".join(lines))

    def __str__(self) -> str:
        return self.summary()

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([(p.id, p.file, p.kind, p.problem) for p in self.problems],
                            columns=["id", "file", "kind", "problem"], dtype=str)

    def to_csv(self, path: PathLike) -> Path:
        """Write all problems as CSV (``id, file, kind, problem``), atomically (header only if none)."""
        text = self.to_frame().to_csv(index=False, lineterminator="\n")
        return atomic_write_bytes(path, text.encode("utf-8", CSV_ERRORS))  # non-UTF-8 names: their bytes


_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def _has_end_marker(path: str) -> bool | None:
    """PNG: an IEND chunk; JPEG: an EOI marker. None for other formats. Reads the tail (4 KB), and
    the whole file only when the tail lacks it (trailers after the end marker are legal)."""
    ext = os.path.splitext(path)[1].lower()
    marker = _PNG_END if ext == ".png" else _JPEG_END if ext in (".jpg", ".jpeg") else None
    if marker is None:
        return None
    with open(path, "rb") as f:
        head = f.read(8)
        if ext == ".png" and head != b"\x89PNG\r\n\x1a\n":
            return None  # a mis-named file: the header reader judges it
        if ext != ".png" and head[:2] != b"\xff\xd8":
            return None
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        if marker in f.read():
            return True
        f.seek(0)
        return marker in f.read()


def _read_error_kind(e: ImageReadError) -> str:
    r = e.reason
    if r.startswith("file not found"):
        return MISSING_FILE
    if r.startswith("empty file"):
        return EMPTY_FILE
    if "truncated" in r:
        return TRUNCATED
    if "ambiguous trimap" in r:
        return BAD_TRIMAP
    return UNREADABLE


def _check_file(role: str, path: str, check_pixels: bool) -> tuple[tuple[int, int] | None, list[str]]:
    """(size or None, problem messages) for one file."""
    problems: list[str] = []
    try:
        size = image_size(path)
        if not check_pixels:
            end = _has_end_marker(path)
            if end is False:
                problems.append(f"{TRUNCATED}: {role} file ends before its end marker (incomplete download?)")
        else:
            if role == "trimap":
                tri = read_trimap(path)
                if not np.any(tri == 0.5):
                    problems.append(f"{TRIMAP_NO_UNKNOWN}: trimap has no unknown (128) pixels")
            elif role == "alpha":
                rgba = read_rgba(path)
                if rgba[:, :, 3].min() >= 1.0:  # the matte is in the colour channels
                    rgb = rgba[:, :, :3]
                    diff = np.maximum(np.abs(rgb[..., 0] - rgb[..., 1]), np.abs(rgb[..., 1] - rgb[..., 2]))
                    bad = diff > 16 / 255
                    if bad.mean() > 0.001:
                        problems.append(
                            f"{ALPHA_NOT_SINGLE}: RGB alpha whose channels differ (by up to "
                            f"{int(round(float(diff.max()) * 255))} levels on {100 * bad.mean():.1f}% of pixels)")
            else:
                read_image(path)
        return size, problems
    except ImageReadError as e:
        return None, [f"{_read_error_kind(e)}: {role}: {e.reason}"]
    except MemoryError:
        return None, [f"{UNREADABLE}: {role}: out of memory while decoding"]
    except Exception as e:  # never let one odd file stop a 10,000-file scan
        return None, [f"{UNREADABLE}: {role}: {type(e).__name__}: {e}"]


def _expected_roles(df: pd.DataFrame, required: Mapping[str, Sequence[str]] | Sequence[str] | None
                    ) -> list[set[str]]:
    """Per row, the roles it must have."""
    if required is not None and not isinstance(required, Mapping):
        req = set(required)
        return [req for _ in range(len(df))]
    table = dict(REQUIRED_ROLES)
    if required is not None:
        table.update({k: tuple(v) for k, v in required.items()})
    # dataset unit = (source, grandparent folder of the first file) -> roles any of its items has
    units: list[tuple[str, str]] = []
    for row in df.itertuples(index=False):
        first = next((getattr(row, c) for c in ("image", "fg", "alpha", "trimap", "bg") if getattr(row, c)), "")
        units.append((row.source, str(Path(first).parent.parent) if first else ""))
    present: dict[tuple[str, str], set[str]] = {}
    for unit, row in zip(units, df.itertuples(index=False)):
        present.setdefault(unit, set()).update(c for c in PATH_COLUMNS if getattr(row, c))
    out = []
    for unit, row in zip(units, df.itertuples(index=False)):
        out.append(set(table.get(row.source, ())) | present.get(unit, set()))
    return out


def _check_row(row: dict, expected: set[str], check_pixels: bool) -> tuple[list[Problem], int, int]:
    item = row["id"]
    problems: list[Problem] = []
    present = [c for c in PATH_COLUMNS if row[c]]
    anchor = next((row[c] for c in ("image", "fg", "alpha", "trimap", "bg") if row[c]), "")
    for role in PATH_COLUMNS:
        if role in expected and not row[role]:
            problems.append(Problem(item, anchor, f"{MISSING_PARTNER}: no {role} file for this item"))
    sizes: dict[str, tuple[int, int]] = {}
    for role in present:
        size, msgs = _check_file(role, row[role], check_pixels)
        problems += [Problem(item, row[role], m) for m in msgs]
        if size is not None:
            sizes[role] = size
    ref_role = next((r for r in ("image", "fg", "alpha") if r in sizes), None)
    w = h = 0
    if ref_role is not None:
        w, h = sizes[ref_role]
        for role in SIZE_ROLES:
            if role != ref_role and role in sizes and sizes[role] != (w, h):
                ow, oh = sizes[role]
                problems.append(Problem(item, row[role], f"{SIZE_MISMATCH}: {ref_role} is {w}x{h}, "
                                                         f"{role} is {ow}x{oh}"))
    return problems, w, h


def validate(df: pd.DataFrame | Iterable[Mapping], check_pixels: bool | None = False,
             required: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
             workers: int = 8, show_progress: bool | None = None) -> ValidationReport:
    """Check every file of every item and report all problems at once.

    Header checks (always): file present, not 0 bytes, readable header, PNG/JPEG end marker present
    (truncation), sizes of image / fg / alpha / trimap equal, every expected partner present (the
    roles in :data:`REQUIRED_ROLES` for the item's source, plus any role that another item of the
    same dataset folder has), ids unique (later duplicates are excluded). Pixel checks
    (``check_pixels=True``; ``None`` = only for up to :data:`AUTO_PIXEL_CHECK_MAX_ITEMS` items):
    full decode, trimap values near 0/128/255 with a non-empty unknown region, alpha single-channel
    (an RGB alpha whose channels differ is a problem; an RGBA cut-out uses its alpha channel).

    Returns a :class:`ValidationReport`; ``report.good_df`` has ``width``/``height`` filled in.

    Example:
        >>> import tempfile, os, numpy as np
        >>> from mattingkit.io import write_png
        >>> d = tempfile.mkdtemp()
        >>> a = write_png(os.path.join(d, "a.png"), np.zeros((4, 4), np.float32))
        >>> r = validate([{"id": "x", "image": a, "alpha": os.path.join(d, "nope.png"), "source": "folder"}])
        >>> r.n_good, r.counts
        (0, {'missing file': 1})
    """
    t0 = time.perf_counter()
    df = normalize(df)
    n = len(df)
    if check_pixels is None:
        check_pixels = n <= AUTO_PIXEL_CHECK_MAX_ITEMS
    expected = _expected_roles(df, required)
    records = df.to_dict("records")
    bad = np.zeros(n, dtype=bool)
    problems_per_row: list[list[Problem]] = [[] for _ in range(n)]
    first_row: dict[str, int] = {}
    for i, r in enumerate(records):
        if r["id"] in first_row:
            j = first_row[r["id"]]
            anchor = next((r[c] for c in PATH_COLUMNS if r[c]), "")
            other = next((records[j][c] for c in PATH_COLUMNS if records[j][c]), "")
            problems_per_row[i].append(Problem(r["id"], anchor, f"{DUPLICATE_ID}: same id as {other}"))
        else:
            first_row[r["id"]] = i
        if not r["id"]:
            problems_per_row[i].append(Problem("", next((r[c] for c in PATH_COLUMNS if r[c]), ""),
                                               f"{MISSING_FILE}: item without an id"))

    def work(i: int):
        return _check_row(records[i], expected[i], bool(check_pixels))

    if show_progress is None:
        show_progress = n >= 2000
    widths = np.zeros(n, dtype=np.int64)
    heights = np.zeros(n, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        results: Iterable = ex.map(work, range(n))
        if show_progress:
            from ..progress import progress

            results = progress(results, total=n, desc="validate")
        for i, (probs, w, h) in enumerate(results):
            problems_per_row[i] += probs
            widths[i], heights[i] = w, h
    problems = [p for ps in problems_per_row for p in ps]
    for i, ps in enumerate(problems_per_row):
        bad[i] = bool(ps)
    good = df.copy()
    good["width"], good["height"] = widths, heights
    good = good.loc[~bad].reset_index(drop=True)
    return ValidationReport(good_df=good, problems=problems, n_items=n, check_pixels=bool(check_pixels),
                            seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Split and build
# --------------------------------------------------------------------------------------------
def split_by_group(df: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Assign ``split`` = train / val by group (no group in both), deterministically from ``seed``.

    Rows already marked ``test`` keep it. Groups are shuffled with ``np.random.default_rng(seed)``
    and moved to val until about ``val_fraction`` of the items are there; with a positive fraction
    and at least two groups, val gets at least one group and train keeps at least one.

    Example:
        >>> d = pd.DataFrame({"id": list("abcdef"), "group": ["g1", "g1", "g2", "g3", "g4", "g5"]})
        >>> out = split_by_group(d, 0.2, seed=0)
        >>> sorted(out["split"].unique()), int(out.groupby("group")["split"].nunique().max())
        (['train', 'val'], 1)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = df.copy().reset_index(drop=True)
    if "split" not in out.columns:
        out["split"] = ""
    out["split"] = out["split"].fillna("").astype(str)
    groups = out["group"].fillna("").astype(str) if "group" in out.columns else out["id"].astype(str)
    groups = groups.where(groups != "", out["id"].astype(str))
    mask = out["split"] != "test"
    out.loc[mask, "split"] = "train"
    sizes = groups[mask].value_counts()
    names = sorted(sizes.index.tolist())
    if val_fraction <= 0 or len(names) < 2:
        return out
    rng = np.random.default_rng(seed)
    order = [names[k] for k in rng.permutation(len(names))]
    target = val_fraction * int(mask.sum())
    val: list[str] = []
    count = 0
    for g in order[:-1]:  # the last group always stays in train
        if val and count + sizes[g] / 2 > target:
            break
        val.append(g)
        count += int(sizes[g])
        if count >= target:
            break
    out.loc[mask & groups.isin(val), "split"] = "val"
    return out


def data_root_for(cfg, environ: Mapping[str, str] | None = None) -> Path:
    """``cfg.run.data_root`` or :func:`mattingkit.env.data_root` (:func:`mattingkit.env.data_root_for`)."""
    return env.data_root_for(cfg, environ)


def resolve_data_path(path: PathLike, cfg=None, environ: Mapping[str, str] | None = None) -> Path:
    """A dataset path from the config: absolute as is; else below the data root, or — on Kaggle —
    an attached input (``/kaggle/input/<name>`` or ``/kaggle/input/*/<name>``) when that exists.

    Example:
        >>> str(resolve_data_path("/abs/x"))
        '/abs/x'
    """
    p = Path(path)
    if p.is_absolute():
        return p
    local = data_root_for(cfg, environ) / p
    if local.exists():
        return local
    for base in env.input_roots(environ):
        if base.name == p.name and len(p.parts) == 1:
            return base
        if (base / p).exists():
            return base / p
    return local


def problems_path_for(manifest_path: PathLike) -> Path:
    """Where :func:`build_manifest` writes the problems CSV: ``NAME.problems.csv`` beside the manifest."""
    p = Path(manifest_path)
    return p.with_name(p.stem + ".problems.csv")


def build_manifest(cfg, out_path: PathLike | None = None, environ: Mapping[str, str] | None = None
                   ) -> tuple[pd.DataFrame, ValidationReport]:
    """Scan ``cfg.data.root`` with ``cfg.data.layout``, validate, split by group, write the manifest.

    The problems CSV is written beside the manifest (:func:`problems_path_for`), even when empty.
    ``out_path`` defaults to ``cfg.data.manifest`` or ``<data_root>/manifests/<layout>-<root>.csv``.
    Raises ``ValueError`` (with the report summary) when no item survives validation.

    Example (the demo data; see mattingkit.data.synthetic):
        >>> # cfg = load_config("demo"); df, report = build_manifest(cfg); print(report.summary())
    """
    d = cfg.data
    root = resolve_data_path(d.root, cfg, environ)
    if out_path is None:
        if d.manifest:
            out_path = resolve_data_path(d.manifest, cfg, environ)
        else:
            out_path = data_root_for(cfg, environ) / "manifests" / f"{d.layout}-{Path(d.root).name}.csv"
    out_path = Path(out_path)
    rows = scan(d.layout, root, group_regex=getattr(d, "group_regex", None))
    if len(rows) == 0:
        raise ValueError(f"{root}: no items found for layout {d.layout!r}; expected folders: "
                         f"{layout_hint(d.layout)}")
    report = validate(rows, check_pixels=getattr(d, "check_pixels", None))
    report.to_csv(problems_path_for(out_path))
    if report.n_good == 0:
        raise ValueError(f"{root}: no valid items ({problems_path_for(out_path)} lists the problems)\n"
                         + report.summary())
    df = split_by_group(report.good_df, d.val_fraction, cfg.run.seed)
    write_manifest(df, out_path)
    return df, report


def _any(names: Sequence[str]) -> str:
    return names[0] + "/" if len(names) == 1 else "{" + "|".join(names) + "}/"


def layout_hint(layout: str) -> str:
    """The folder names ``scan(layout, ...)`` recognises, written from the same tables it searches.

    Example:
        >>> layout_hint("folder")
        '{im|image|images|img|imgs}/ + {gt|alpha|mask|masks|alphas|matte}/ (+ optional {trimap|trimaps}/), side by side, files paired by stem'
    """
    a, m = AIM500_DIRS, ALPHAMATTING_DIRS
    return {
        "aim500": f"{_any(a['image'])} + {_any(a['alpha'])} (+ optional {_any(a['trimap'])}), files paired by stem",
        "synthetic": "aim500/ holding the aim500 folders (run `mattingkit demo-data`)",
        "adobe": f"fg/ + {_any(ADOBE_ALPHA_DIRS)} (+ optional bg/, {_any(ADOBE_TRIMAP_DIRS)}) in any folder "
                 "up to 4 levels down",
        "competition": f"train_dataset/{_any(COMPETITION_IMAGE_DIRS)} + train_dataset/{_any(COMPETITION_MASK_DIRS)}",
        "competition_test": f"test_dataset/{_any(COMPETITION_TEST_DIRS)}",
        "alphamatting": f"{_any(m['image'])} + {_any(m['alpha'])} (+ optional {_any(m['trimap'])})",
        "folder": f"{_any(FOLDER_DIRS['image'])} + {_any(FOLDER_DIRS['alpha'])} (+ optional "
                  f"{_any(FOLDER_TRIMAP_DIRS)}), side by side, files paired by stem",
    }.get(layout, "see mattingkit.data.layouts")

"""Torch datasets: online composition for training, fixed full-resolution evaluation, competition test.

Every item is a dict of float32 CHW tensors -- ``image`` (in [0, 1], not normalised), ``alpha``,
``trimap`` ({0, .5, 1}), ``fg``, ``bg``, ``unknown`` (trimap == .5) -- plus ``id`` (str); eval and test
items also carry ``orig_size`` ``(H, W)`` of the source image. The default DataLoader collate works
(ids become a list of str); :func:`collate` also keeps ``orig_size`` as a list of tuples.

Compact transport (``TrainDataset(compact=True)``, what :func:`build_datasets` makes for training;
:mod:`mattingkit.data.compact`):
the DataLoader workers send each training item as 8/16-bit tensors -- ``image`` / ``fg`` / ``bg``
uint8 (``rint(x * 255)``), ``alpha`` uint16 (``rint(a * 65535)``), ``trimap`` uint8 0 / 128 / 255 and
no ``unknown`` -- 3.1 MB instead of 12.6 MB per 512x512 item, which is what a DataLoader spends its
time on when two workers and the training process share two cores (``benchmarks/data_pipeline.py``).
The training process converts the batch with :func:`batch_to_float` after moving it to the device
(the Trainer does it in ``to_device``; on a GPU this also cuts the host-to-device copy by 4x) and
gets the float32 batch of the package convention. Everything is computed in float32 in the worker
(the image is composited from the float fg / bg / alpha) and each array is rounded once at the end:
the largest errors are 0.5/255 (~0.002) for image / fg / bg, 0.5/65535 (~7.6e-6) for alpha and none
for the trimap; ``bg`` and anything else that is still 8-bit data (exact multiples of 1/255) comes
back bit-exact. So ``image`` differs from ``alpha * fg + (1 - alpha) * bg`` of the converted batch by
at most 1/255 + 7.6e-6 (~0.0039) -- the composition loss sees at most that noise floor, the same
as for any 8-bit photo.

Device augmentation (``TrainDataset(augment_on="device")``, ``data.augment_on``): the workers only
decode (or take from the RAM cache), decide the geometry and draw the parameters, and send uint8
source patches + the parameters (:mod:`mattingkit.data.device_augment`); :func:`batch_to_float`
recognises such a batch and renders it with ``device_augment.augment_batch`` on the batch's device,
giving the same float32 batch dict. RAM cache (``data.cache: ram``): :meth:`TrainDataset.fill_cache`
decodes every foreground + alpha (and the backgrounds, budget permitting) once, before the workers
fork -- and once per machine: ``accelerate.notebook_launcher``'s ranks, forked from the notebook that
filled it, reuse it without reading a file.

Reproducibility: every random choice of training item ``index`` in epoch ``e`` comes from
``np.random.default_rng(SeedSequence([seed, e, index]))`` (:func:`sample_rng`), so the stream is the
same for any ``num_workers`` and any order of access, and resumes exactly (``set_epoch``; an index
may also be given as ``(epoch, index)``).

Example:
    >>> import tempfile, pandas as pd
    >>> from pathlib import Path
    >>> from mattingkit.io import write_png
    >>> from mattingkit.config import DataConfig, TrimapConfig, AugmentConfig
    >>> d = Path(tempfile.mkdtemp())
    >>> a = np.zeros((64, 64), np.float32); a[16:48, 16:48] = 1; a[16:48, 15] = 0.5
    >>> _ = write_png(d / "fg.png", np.full((64, 64, 3), 0.9, np.float32)); _ = write_png(d / "a.png", a)
    >>> _ = write_png(d / "bg.png", np.zeros((50, 80, 3), np.float32))
    >>> df = pd.DataFrame([{"id": "x", "fg": str(d / "fg.png"), "alpha": str(d / "a.png"), "image": ""}])
    >>> ds = TrainDataset(df, [d / "bg.png"], DataConfig(crop_sizes=[32], image_size=32, foreground="given"),
    ...                   TrimapConfig(), AugmentConfig(two_fg_prob=0.0))
    >>> item = ds[0]
    >>> item["image"].shape, item["alpha"].shape, item["id"]
    (torch.Size([3, 32, 32]), torch.Size([1, 32, 32]), 'x')
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..io import (
    ImageReadError,
    capped_size,
    list_images,
    read_alpha,
    read_alpha_uint8,
    read_image,
    read_image_uint8,
    read_trimap,
)
from ..models import alphagan
from ..names import CACHE_MODES, FOREGROUND_MODES  # the choices, torch-free for the config check
from ..trimap import random_trimap
from .augment import (
    Composite,
    CoverBackground,
    Render,
    build_train_pipeline,
    check_augment_config,
    resize_image,
    to_float,
)
from .compact import compact_to_float, to_compact_item
from .device_augment import augment_batch, build_device_plan, guide_reason, is_device_batch, worker_item

if TYPE_CHECKING:  # pragma: no cover
    from ..config import AugmentConfig, Config, DataConfig, TrimapConfig
    from .foreground import ForegroundCache

PathLike = str | os.PathLike
TENSOR_KEYS = ("image", "alpha", "trimap", "fg", "bg", "unknown")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training item: ``default_rng(SeedSequence([seed, epoch, index]))``.

    Example:
        >>> sample_rng(0, 1, 2).random() == sample_rng(0, 1, 2).random() != sample_rng(0, 1, 3).random()
        True
    """
    for name, v in (("seed", seed), ("epoch", epoch), ("index", index)):
        if int(v) < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


#: glibc ``mallopt`` parameters and the values :func:`keep_heap_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_MMAP_THRESHOLD = 64 << 20
HEAP_TRIM_THRESHOLD = 512 << 20


def keep_heap_memory() -> bool:
    """Let glibc's allocator reuse freed memory instead of returning it to the OS (Linux only).

    By default every array above 128 KiB is a fresh ``mmap`` that is unmapped when freed, so each
    sample's megabytes of images are page-faulted in again (tens of ms per sample on virtual
    machines). Raising the mmap threshold (to 64 MiB) and the trim threshold (to 512 MiB) keeps
    them on the heap, at the price of up to that much idle memory per process. Returns whether it
    applied (False on other C libraries)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up: one thread each for OpenCV and torch (the workers are the
    parallelism; nested thread pools only oversubscribe the cores) and :func:`keep_heap_memory`.
    No random state is touched: every random choice is seeded per item."""
    import cv2

    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    keep_heap_memory()


def _chw(x: np.ndarray) -> torch.Tensor:
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(x[None]))
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def batch_to_float(batch: dict[str, Any]) -> dict[str, Any]:
    """A compact batch or item (:func:`~mattingkit.data.compact.to_compact_item`, collated or not) -> the
    float32 form (:func:`~mattingkit.data.compact.compact_to_float`); a device-augment batch is rendered
    by :func:`~mattingkit.data.device_augment.augment_batch` on its device. Float batches pass through.

    Example:
        >>> from mattingkit.data.compact import compact_to_float
        >>> b = {"alpha": torch.tensor([[[[0, 65535]]]], dtype=torch.uint16), "id": ["a"]}
        >>> batch_to_float(b)["alpha"].equal(compact_to_float(b)["alpha"])   # a host batch: compact rules
        True
    """
    if is_device_batch(batch):  # data.augment_on=device: render on the batch's device
        return augment_batch(batch)
    return compact_to_float(batch)


def to_item(sample: dict[str, Any], compact: bool = False) -> dict[str, Any]:
    """A finished numpy sample -> the batch-dict item (CHW float32 tensors, ``unknown`` added), or
    with ``compact=True`` the compact item of :func:`to_compact_item`.

    Example:
        >>> s = {k: np.zeros((4, 5, 3), np.float32) for k in ("image", "fg", "bg")}
        >>> s.update(alpha=np.zeros((4, 5), np.float32), trimap=np.full((4, 5), .5, np.float32), id="a")
        >>> it = to_item(s); it["unknown"].shape, float(it["unknown"].min()), it["id"]
        (torch.Size([1, 4, 5]), 1.0, 'a')
    """
    if compact:
        return to_compact_item(sample)
    out: dict[str, Any] = {}
    for k in ("image", "alpha", "trimap", "fg", "bg", "guide"):
        if k in sample or k != "guide":
            out[k] = _chw(sample[k])
    out["unknown"] = (out["trimap"] == 0.5).to(torch.float32)
    out["id"] = str(sample["id"])
    if "orig_size" in sample:
        out["orig_size"] = tuple(int(v) for v in sample["orig_size"])
    return out


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; ``id`` -> list of str, ``orig_size`` -> list of ``(H, W)`` tuples.

    Example:
        >>> b = collate([{"alpha": torch.zeros(1, 2, 2), "id": "0001", "orig_size": (2, 2)}] * 2)
        >>> tuple(b["alpha"].shape), b["id"], b["orig_size"]
        ((2, 1, 2, 2), ['0001', '0001'], [(2, 2), (2, 2)])
    """
    if not batch:
        raise ValueError("collate: empty batch")
    out: dict[str, Any] = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif k == "id":
            out[k] = [str(v) for v in vals]
        elif k == "orig_size":
            out[k] = [tuple(int(x) for x in v) for v in vals]
        else:
            out[k] = vals
    return out


def _cell(row: dict, key: str) -> str:
    v = row.get(key, "")
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v).strip()


def _records(df: pd.DataFrame | Iterable[dict] | None) -> list[dict]:
    if df is None:
        return []
    rows = df.to_dict("records") if isinstance(df, pd.DataFrame) else [dict(r) for r in df]
    for r in rows:
        r["id"] = _cell(r, "id")
    return rows


def _same_size(a: np.ndarray, b: np.ndarray, path_a: str, path_b: str) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise ImageReadError(path_b, f"is {b.shape[1]}x{b.shape[0]} but {path_a} is {a.shape[1]}x{a.shape[0]} "
                             "(width x height); they must match")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplePlan:
    """Which files one training item uses: row indices of the foreground(s), background index."""

    fg: int
    fg2: int | None
    bg: int | None


def plan_sample(rng: np.random.Generator, index: int, n_fg: int, n_bg: int, two_fg_prob: float) -> SamplePlan:
    """Draw the sources of item ``index``: foreground ``index % n_fg``, a random background, and with
    probability ``two_fg_prob`` (when there are backgrounds and two foregrounds) a second, different
    foreground. Always the first draws of the item's generator.

    Example:
        >>> p = plan_sample(np.random.default_rng(0), 7, n_fg=5, n_bg=3, two_fg_prob=0.0)
        >>> p.fg, p.fg2, 0 <= p.bg < 3
        (2, None, True)
    """
    fg = int(index) % n_fg
    bg = int(rng.integers(n_bg)) if n_bg > 0 else None
    fg2 = None
    if two_fg_prob > 0 and n_bg > 0 and n_fg > 1 and rng.random() < two_fg_prob:
        fg2 = int(rng.integers(n_fg - 1))
        fg2 += fg2 >= fg
    return SamplePlan(fg, fg2, bg)


#: The decoded sources of the last :meth:`TrainDataset.fill_cache` in this process, by
#: :meth:`TrainDataset.cache_key`: a process forked after the fill finds them here (read-only arrays,
#: shared copy-on-write) instead of decoding every file again.
_FILLED: dict[tuple, tuple[dict, dict]] = {}


class TrainDataset(torch.utils.data.Dataset):
    """Online composition: a foreground and its alpha over a random background, augmented and
    cropped by :func:`mattingkit.data.augment.build_train_pipeline`, with a trimap made after the crop.

    Foreground colours (``data_cfg.foreground``): ``"given"`` -- the manifest's ``fg`` file;
    ``"estimate"`` -- the ``fg`` file when the row has one, else ``fg_cache`` (a
    :class:`~mattingkit.data.foreground.ForegroundCache`) estimates it from ``image`` + ``alpha``
    once; ``"photo"`` -- the photo itself. With no ``backgrounds`` the item is the (augmented) photo
    itself: ``image == fg == bg`` (the trimap-free competition recipe).

    ``len`` is ``epoch_len`` (default: the number of rows); item ``i`` uses row ``i % rows``.

    ``compact=True``: ``[i]`` returns the compact transport form (uint8 / uint16 tensors, see the
    module docstring; :func:`build_datasets` turns it on for training) and the consumer converts
    batches with :func:`batch_to_float`; ``False`` (default here): float32 items. The samples are
    the same (:meth:`sample` is float either way).

    ``augment_on="device"``: ``[i]`` returns :meth:`device_item` (uint8 source patches and the drawn
    parameters; :func:`batch_to_float` renders the collated batch on its device); ``"cpu"`` (default):
    as above. Resolve ``data.augment_on: auto`` with
    :func:`mattingkit.data.device_augment.resolve_augment_on` (:func:`build_datasets` does).
    :meth:`fill_cache` holds the decoded sources in RAM (``data.cache: ram``).
    """

    def __init__(self, df: pd.DataFrame | Iterable[dict], backgrounds: Sequence[PathLike] | None,
                 data_cfg: "DataConfig", trimap_cfg: "TrimapConfig", augment_cfg: "AugmentConfig",
                 seed: int = 0, fg_cache: "ForegroundCache | None" = None, epoch_len: int | None = None,
                 compact: bool = False, augment_on: str = "cpu", guide: str = "none"):
        self.rows = _records(df)
        if not self.rows:
            raise ValueError("TrainDataset: the training set is empty (no manifest rows with split 'train'?)")
        mode = data_cfg.foreground
        if mode not in FOREGROUND_MODES:
            raise ValueError(f"data.foreground must be one of {', '.join(FOREGROUND_MODES)}, got {mode!r}")
        self.data_cfg, self.trimap_cfg, self.augment_cfg = data_cfg, trimap_cfg, augment_cfg
        check_augment_config(augment_cfg)
        self.mode = mode
        self.fg_cache = fg_cache
        for i, r in enumerate(self.rows):
            self._check_row(i, r)
        self.backgrounds = [str(p) for p in (backgrounds or [])]
        self.seed = int(seed)
        self.epoch = 0
        self.compact = bool(compact)
        if epoch_len is not None and int(epoch_len) < 1:
            raise ValueError(f"epoch_len must be >= 1, got {epoch_len}")
        self.epoch_len = int(epoch_len) if epoch_len is not None else len(self.rows)
        # compact items send the 8-bit background as rendered (no float round trip)
        self.pipeline = build_train_pipeline(data_cfg, trimap_cfg, augment_cfg,
                                             has_background=bool(self.backgrounds),
                                             keep_8bit=("bg",) if self.compact else ())
        if augment_on not in ("cpu", "device"):
            raise ValueError(f"augment_on must be 'cpu' or 'device' (resolve 'auto' with "
                             f"device_augment.resolve_augment_on), got {augment_on!r}")
        self.augment_on = augment_on
        reason = guide_reason(guide)
        if augment_on == "device" and reason:
            raise ValueError(f"augment_on='device' cannot train {reason}; use 'cpu'")
        #: ``model.guide``: each finished crop gets a ``guide`` (its classical solve, in the worker)
        self.guide = guide
        self.device_plan = None
        self.cache_report: dict[str, Any] | None = None
        if augment_on == "device":
            self.device_plan = build_device_plan(data_cfg, trimap_cfg, augment_cfg,
                                                 has_background=bool(self.backgrounds))
        #: decoded sources held in RAM (:meth:`fill_cache`): row index -> (fg, alpha), bg index -> bg
        self._ram_fg: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._ram_bg: dict[int, np.ndarray] = {}

    def _check_row(self, i: int, r: dict) -> None:
        where = f"manifest row {i} (id {r['id']!r})"
        if not _cell(r, "alpha"):
            raise ValueError(f"{where} has no alpha file")
        if self.mode == "given" and not _cell(r, "fg"):
            raise ValueError(f"{where} has no fg file but data.foreground='given' (use 'estimate' or 'photo')")
        if self.mode == "photo" and not _cell(r, "image"):
            raise ValueError(f"{where} has no image file but data.foreground='photo'")
        if self.mode == "estimate" and not _cell(r, "fg"):
            if not _cell(r, "image"):
                raise ValueError(f"{where} has neither an fg nor an image file")
            if self.fg_cache is None:
                raise ValueError(f"{where} needs an estimated foreground but no fg_cache was given "
                                 "(pass ForegroundCache(...), or data.foreground='photo')")

    def __len__(self) -> int:
        return self.epoch_len

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sample stream ``[i]`` returns (the epoch is part of every item's seed)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    # sources ---------------------------------------------------------------------------------
    def _key(self, key: int | tuple[int, int]) -> tuple[int, int]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        return int(epoch), index

    def _plan(self, rng: np.random.Generator, index: int) -> SamplePlan:
        return plan_sample(rng, index, len(self.rows), len(self.backgrounds), self.augment_cfg.two_fg_prob)

    def _fg_path(self, r: dict) -> str:
        if self.mode == "photo":
            return _cell(r, "image")
        return _cell(r, "fg") or _cell(r, "image")

    def files_for(self, key: int | tuple[int, int]) -> list[tuple[str, str]]:
        """The files item ``key`` reads, in order, as ``(reader, path)`` pairs (reader ``"image"`` or
        ``"alpha"``): foreground, alpha, [second foreground, its alpha], [background].

        For ``foreground="estimate"`` rows without an fg file the foreground entry is the photo (the
        cache entry is read in its place).
        """
        epoch, index = self._key(key)
        plan = self._plan(sample_rng(self.seed, epoch, index), index)
        out = []
        for ri in (plan.fg, plan.fg2):
            if ri is not None:
                out += [("image", self._fg_path(self.rows[ri])), ("alpha", _cell(self.rows[ri], "alpha"))]
        if plan.bg is not None:
            out.append(("image", self.backgrounds[plan.bg]))
        return out

    @staticmethod
    def read_file(reader: str, path: str) -> np.ndarray:
        """The training readers: 8-bit, as decoded (:func:`mattingkit.io.read_image_uint8` /
        :func:`~mattingkit.io.read_alpha_uint8`); only the crop is converted to float later."""
        return read_alpha_uint8(path) if reader == "alpha" else read_image_uint8(path)

    def load_foreground(self, row_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(fg, alpha)`` of one manifest row as decoded (uint8; a cached estimate is float32),
        checked to be the same size. From the RAM cache when :meth:`fill_cache` holds it."""
        hit = self._ram_fg.get(row_index)
        if hit is not None:
            return hit
        r = self.rows[row_index]
        alpha_path = _cell(r, "alpha")
        alpha = self.read_file("alpha", alpha_path)
        if self.mode == "estimate" and not _cell(r, "fg"):
            fg = self.fg_cache.get(r["id"], _cell(r, "image"), alpha_path)
            fg_path = str(self.fg_cache.path(r["id"]))
        else:
            fg_path = self._fg_path(r)
            fg = self.read_file("image", fg_path)
        _same_size(fg, alpha, fg_path, alpha_path)
        return fg, alpha

    def load_background(self, bg_index: int) -> np.ndarray:
        """Background ``bg_index`` as decoded (uint8), from the RAM cache when it holds it."""
        hit = self._ram_bg.get(bg_index)
        return hit if hit is not None else self.read_file("image", self.backgrounds[bg_index])

    def fill_cache(self, backgrounds: bool = True, max_bytes: int | None = None) -> dict[str, Any]:
        """Decode every foreground + alpha (and, when ``backgrounds`` and they fit in what is left of
        ``max_bytes``, every background) once into RAM (``data.cache: ram``). Call it before the
        DataLoader forks its workers: they share the arrays copy-on-write (the arrays are read-only;
        nothing writes to them, so the pages stay shared). Later items read no file at all for
        what is cached. Returns the memory accounting: counts and bytes of foregrounds (fg + alpha)
        and backgrounds, and the total.

        Filled once per machine: the arrays are also kept for this process (the last fill only), so a
        process forked after it -- ``accelerate.notebook_launcher``'s ranks, forked from the notebook that
        filled the cache while building the datasets -- finds the same sources here and reads no file
        again (``report["shared"]``: how many foregrounds + backgrounds came from the earlier fill). Nothing here touches
        CUDA, so filling before the fork is fork-safe.

        Raises ``MemoryError`` when the foregrounds alone exceed ``max_bytes``."""
        import time

        t0 = time.perf_counter()
        key = self.cache_key()
        shared = 0
        if key in _FILLED:                       # filled before this process was forked (or earlier here)
            fg_done, bg_done = _FILLED[key]
            shared = len(fg_done) + len(bg_done)
            self._ram_fg.update(fg_done)
            self._ram_bg.update(bg_done if backgrounds else {})
        fg_bytes = 0
        for i in range(len(self.rows)):
            if i not in self._ram_fg:
                fg, alpha = self.load_foreground(i)
                for x in (fg, alpha):
                    x.setflags(write=False)
                self._ram_fg[i] = (fg, alpha)
            fg_bytes += sum(x.nbytes for x in self._ram_fg[i])
            if max_bytes is not None and fg_bytes > max_bytes:
                raise MemoryError(f"data.cache=ram: the foregrounds need more than max_bytes={max_bytes} "
                                  f"({fg_bytes} bytes after {i + 1} of {len(self.rows)} rows)")
        bg_bytes, skipped = 0, 0
        if backgrounds:
            for j, path in enumerate(self.backgrounds):
                bg = self._ram_bg.get(j)
                if bg is None:
                    bg = self.read_file("image", path)
                if max_bytes is not None and fg_bytes + bg_bytes + bg.nbytes > max_bytes:
                    skipped = len(self.backgrounds) - j     # the rest is read from disk as before
                    for k in range(j, len(self.backgrounds)):
                        self._ram_bg.pop(k, None)
                    break
                bg.setflags(write=False)
                self._ram_bg[j] = bg
                bg_bytes += bg.nbytes
        _FILLED.clear()                          # keep the last fill only (its arrays, shared with self)
        _FILLED[key] = (dict(self._ram_fg), dict(self._ram_bg))
        return {"foregrounds": len(self._ram_fg), "foreground_bytes": fg_bytes,
                "backgrounds": len(self._ram_bg), "background_bytes": bg_bytes,
                "backgrounds_not_cached": skipped if backgrounds else len(self.backgrounds),
                "total_bytes": fg_bytes + bg_bytes, "shared": shared,
                "seconds": round(time.perf_counter() - t0, 3)}

    def cache_key(self) -> tuple:
        """What :meth:`fill_cache` reads, as a hashable key: the foreground mode, every row's files, the
        backgrounds and the estimated-foreground cache folder. Two datasets with the same key hold the same
        decoded sources."""
        rows = tuple((r["id"], _cell(r, "fg"), _cell(r, "image"), _cell(r, "alpha")) for r in self.rows)
        fg_dir = str(self.fg_cache.cache_dir) if self.fg_cache is not None else None
        return self.mode, rows, tuple(self.backgrounds), fg_dir

    def clear_cache(self) -> None:
        """Drop the RAM cache (:meth:`fill_cache`), this dataset's and the process's copy of it."""
        self._ram_fg.clear()
        self._ram_bg.clear()
        _FILLED.pop(self.cache_key(), None)

    # items -----------------------------------------------------------------------------------
    def sample(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``key`` as a numpy sample dict (HxWxC float32 arrays; for viewers and tests)."""
        s = self._sample(key)
        for k, v in s.items():
            if isinstance(v, np.ndarray) and v.dtype == np.uint8:
                s[k] = to_float(v)     # the 8-bit background of a compact dataset
        s["unknown"] = (s["trimap"] == 0.5).astype(np.float32)
        return s

    def _sources(self, key: int | tuple[int, int]) -> tuple[dict[str, Any], np.random.Generator]:
        """The decoded sources of item ``key`` and its generator, positioned after the source plan."""
        epoch, index = self._key(key)
        rng = sample_rng(self.seed, epoch, index)
        plan = self._plan(rng, index)
        fg, alpha = self.load_foreground(plan.fg)
        s: dict[str, Any] = {"id": self.rows[plan.fg]["id"], "fg": fg, "alpha": alpha}
        if plan.fg2 is not None:
            s["fg2"], s["alpha2"] = self.load_foreground(plan.fg2)
        if plan.bg is not None:
            s["bg"] = self.load_background(plan.bg)
        return s, rng

    def _sample(self, key: int | tuple[int, int]) -> dict[str, Any]:
        s, rng = self._sources(key)
        s = self.pipeline(s, rng)
        if self.guide != "none":   # a guided model's input, solved here (in the worker) once per crop
            s["guide"] = alphagan.solve_guide(self.guide, s["image"], s["trimap"])
        return s

    def device_item(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``key`` for the device path (:func:`mattingkit.data.device_augment.worker_item`):
        uint8 source patches + the drawn parameters; :func:`batch_to_float` (or
        ``device_augment.augment_batch``) renders the collated batch on the device. Works whatever
        ``augment_on`` (for comparisons); needs a supported config."""
        if self.device_plan is None:
            self.device_plan = build_device_plan(self.data_cfg, self.trimap_cfg, self.augment_cfg,
                                                 has_background=bool(self.backgrounds))
        s, rng = self._sources(key)
        return worker_item(s, rng, self.device_plan)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if self.augment_on == "device":
            return self.device_item(key)
        if self.compact:
            return to_compact_item(self._sample(key))
        return to_item(self.sample(key))


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
class EvalDataset(torch.utils.data.Dataset):
    """Fixed, deterministic evaluation items at full resolution (batch size 1).

    Per manifest row:
    - ``image`` + ``alpha`` (real photos): the photo, its alpha and its ``trimap`` file when given
      (else a trimap drawn from the alpha with a generator seeded by ``(seed, index)``);
      ``fg`` and ``bg`` are the photo itself.
    - ``fg`` + ``alpha`` (no photo): composited over the row's ``bg`` file, else background
      ``index % len(backgrounds)``, scaled to cover and centred.
    ``max_side`` caps the long side (aspect kept; images / alphas area-resized, trimaps nearest);
    ``orig_size`` is the size before capping; a capped item also carries ``alpha_full`` and ``trimap_full``
    (the ground truth at ``orig_size``: its trimap file, else the drawn trimap upsampled nearest), so that
    validation measures against full-resolution ground truth like notebook 04. ``trimap_free=True`` gives
    all-unknown trimaps (the metrics then cover the whole image).
    """

    def __init__(self, df: pd.DataFrame | Iterable[dict], backgrounds: Sequence[PathLike] | None = None,
                 trimap_cfg: "TrimapConfig | None" = None, seed: int = 0, max_side: int | None = None,
                 trimap_free: bool = False):
        from ..config import TrimapConfig

        self.rows = _records(df)
        self.backgrounds = [str(p) for p in (backgrounds or [])]
        self.trimap_cfg = trimap_cfg or TrimapConfig()
        self.seed = int(seed)
        self.max_side = int(max_side) if max_side else None
        self.trimap_free = bool(trimap_free)
        for i, r in enumerate(self.rows):
            where = f"manifest row {i} (id {r['id']!r})"
            if not _cell(r, "alpha"):
                raise ValueError(f"{where} has no alpha file")
            if not _cell(r, "image") and not _cell(r, "fg"):
                raise ValueError(f"{where} has neither an image nor an fg file")
            if not _cell(r, "image") and not _cell(r, "bg") and not self.backgrounds:
                raise ValueError(f"{where} is a foreground without a bg file and there is no background pool")

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, index: int) -> dict[str, Any]:
        """Item ``index`` as a numpy sample dict."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        r = self.rows[index]
        alpha_path = _cell(r, "alpha")
        alpha = read_alpha(alpha_path)
        h, w = alpha.shape
        out_hw = capped_size(h, w, self.max_side)
        s: dict[str, Any] = {"id": r["id"], "alpha": alpha, "orig_size": (h, w)}
        if _cell(r, "trimap") and not self.trimap_free:
            s["trimap"] = read_trimap(_cell(r, "trimap"))
            _same_size(alpha, s["trimap"], alpha_path, _cell(r, "trimap"))
        full_trimap = s.get("trimap")
        if _cell(r, "image"):
            s["image"] = read_image(_cell(r, "image"))
            _same_size(alpha, s["image"], alpha_path, _cell(r, "image"))
            s = Render(out_hw)(s)
            s["fg"], s["bg"] = s["image"], s["image"].copy()
        else:
            s["fg"] = read_image(_cell(r, "fg"))
            _same_size(alpha, s["fg"], alpha_path, _cell(r, "fg"))
            s["bg"] = read_image(_cell(r, "bg") or self.backgrounds[index % len(self.backgrounds)])
            s = CoverBackground(random=False)(s, None)
            s = Render(out_hw)(s)
            s = Composite()(s)
        if self.trimap_free:
            s["trimap"] = np.full(out_hw, 0.5, np.float32)
        elif "trimap" not in s:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED, index]))
            s["trimap"] = random_trimap(s["alpha"], rng, self.trimap_cfg)
        s["unknown"] = (s["trimap"] == 0.5).astype(np.float32)
        if tuple(out_hw) != (h, w):  # capped: keep the full-resolution ground truth beside it
            s["alpha_full"] = alpha
            if full_trimap is None:
                yi = (np.arange(h) * out_hw[0] // h).clip(0, out_hw[0] - 1)
                xi = (np.arange(w) * out_hw[1] // w).clip(0, out_hw[1] - 1)
                full_trimap = s["trimap"][yi[:, None], xi[None, :]]
            s["trimap_full"] = full_trimap
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.sample(index)
        item = to_item(s)
        for k in ("alpha_full", "trimap_full"):
            if k in s:
                item[k] = _chw(s[k])
        return item


class TestDataset(torch.utils.data.Dataset):
    """Test images, RGB only: ``{"image", "id", "orig_size"}``; ids are file stems kept as strings
    (``"0001"`` stays ``"0001"``). Give a folder (its images, sorted, not recursive) or a manifest
    DataFrame (its ``image`` column). ``max_side`` optionally caps the long side."""

    __test__ = False  # not a pytest class

    def __init__(self, folder_or_df: PathLike | pd.DataFrame, max_side: int | None = None):
        if isinstance(folder_or_df, pd.DataFrame):
            rows = _records(folder_or_df)
            self.items = []
            for i, r in enumerate(rows):
                if not _cell(r, "image"):
                    raise ValueError(f"manifest row {i} (id {r['id']!r}) has no image file")
                self.items.append((r["id"] or Path(_cell(r, "image")).stem, _cell(r, "image")))
        else:
            folder = Path(folder_or_df)
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: test image folder not found")
            files = list_images(folder, recursive=False)
            if not files:
                raise ValueError(f"{folder}: no test images found")
            self.items = [(p.stem, str(p)) for p in files]
        ids = [i for i, _ in self.items]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate test ids (file stems): {', '.join(dup[:5])}")
        self.max_side = int(max_side) if max_side else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sid, path = self.items[index]
        image = read_image(path)
        h, w = image.shape[:2]
        out_hw = capped_size(h, w, self.max_side)
        if out_hw != (h, w):
            image = resize_image(image, out_hw)
        return {"image": _chw(image), "id": str(sid), "orig_size": (h, w)}


# --------------------------------------------------------------------------------------------
# From a config
# --------------------------------------------------------------------------------------------
def find_eval_rows(root: Path) -> pd.DataFrame:
    """The rows (``id``, ``image``, ``alpha``, ``trimap``) of the evaluation set in ``root``: the first of
    the alphamatting, aim500 and folder layouts that finds items (``data.eval_root``)."""
    from .layouts import scan

    for layout in ("alphamatting", "aim500", "folder"):
        try:
            rows = scan(layout, root)
        except (FileNotFoundError, ValueError):
            continue
        if len(rows):
            return rows
    raise ValueError(f"{root}: data.eval_root holds no evaluation set (tried the alphamatting, aim500 "
                     "and folder layouts: image/ + alpha/ (+ trimap/))")


def build_datasets(cfg: "Config", manifest_path: PathLike, fg_cache_dir: PathLike | None = None,
                   compact: bool = True) -> tuple[TrainDataset, EvalDataset]:
    """``(train_ds, val_ds)`` from a config and a manifest (its ``split`` column).

    The training set sends compact items (``compact=True``, the default here: convert batches with
    :func:`batch_to_float`, as the Trainer does); ``compact=False`` gives float32 items. The
    validation set always gives float32 items.

    Backgrounds come from ``cfg.data.backgrounds`` (relative to the data root; None = no pool: the
    photos themselves are the training images). With ``cfg.data.foreground == "estimate"``, rows
    without an fg file use a :class:`~mattingkit.data.foreground.ForegroundCache` in ``fg_cache_dir``
    (default: ``fg_cache/`` beside the manifest). The validation set is the ``val`` rows, or the
    images under ``cfg.data.eval_root`` when set; it is evaluated at full resolution capped at
    ``cfg.data.val_max_side``, with all-unknown trimaps when ``cfg.model.use_trimap`` is off.

    ``cfg.data.augment_on`` (resolved by :func:`mattingkit.data.device_augment.resolve_augment_on`
    against ``run.device``): ``device`` makes the training items device-augment items, which
    :func:`batch_to_float` renders on the device (the Trainer's ``to_device``); ``cpu`` keeps the
    compact items. ``cfg.data.cache == "ram"`` fills :meth:`TrainDataset.fill_cache` here, before any
    DataLoader forks (its report is ``train_ds.cache_report``).

    Example:
        >>> # train_ds, val_ds = build_datasets(load_config("demo"), "runs/demo/manifest.csv")
    """
    from .layouts import list_backgrounds, resolve_data_path
    from .manifest import read_manifest

    d = cfg.data
    df = read_manifest(manifest_path)
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    if len(train_df) == 0:
        raise ValueError(f"{manifest_path}: no rows with split 'train' (splits found: "
                         f"{', '.join(sorted(set(df['split']))) or 'none'})")
    backgrounds: list[Path] = []
    if d.backgrounds:
        backgrounds = list_backgrounds(resolve_data_path(d.backgrounds, cfg))
    fg_cache = None
    if d.foreground == "estimate":
        from .foreground import ForegroundCache, default_cache_dir

        fg_cache = ForegroundCache(fg_cache_dir or default_cache_dir(manifest_path))
    augment_on = "cpu"
    if compact:  # only the compact form renders on a device: nothing else asks for one (fork-safe)
        from ..device import resolve_device
        from .device_augment import resolve_augment_on

        augment_on = resolve_augment_on(getattr(d, "augment_on", "auto"), resolve_device(cfg.run.device),
                                        cfg.trimap, cfg.augment, guide=cfg.model.guide)
    train_ds = TrainDataset(train_df, backgrounds, d, cfg.trimap, cfg.augment, seed=cfg.run.seed,
                            fg_cache=fg_cache, compact=compact, augment_on=augment_on, guide=cfg.model.guide)
    cache = getattr(d, "cache", "none")
    if cache not in CACHE_MODES:
        raise ValueError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
    if cache == "ram":
        train_ds.cache_report = train_ds.fill_cache()
    if d.eval_root:
        val_df = find_eval_rows(resolve_data_path(d.eval_root, cfg))
    else:
        val_df = df[df["split"] == "val"].reset_index(drop=True)
    val_ds = EvalDataset(val_df, backgrounds, cfg.trimap, seed=cfg.run.seed, max_side=d.val_max_side,
                         trimap_free=not cfg.model.use_trimap)
    return train_ds, val_ds

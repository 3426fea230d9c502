"""Matting metrics: the official Deep Image Matting SAD / MSE / Grad / Conn, and the competition MSE.

The four trimap metrics reproduce the official MATLAB evaluation code of Deep Image Matting
(Xu et al. 2017: ``compute_sad_loss.m``, ``compute_mse_loss.m``, ``compute_gradient_loss.m``,
``compute_connectivity_error.m`` and the ``gaussgradient`` helper) as it runs under GNU Octave 7.3
with its image package, including its single-precision steps:

- every prediction / ground truth is first made 8-bit (``np.rint(x * 255)``, exactly what the uint8
  PNGs the official code reads would hold); uint8 arrays are taken as they are;
- only pixels where the trimap is 128 (0.5) count;
- SAD = sum |p - g| / 255 / 1000; MSE = mean ((p - g) / 255)^2 (not scaled);
- Grad = sum (|grad p| - |grad g|)^2 / 1000 after ``mat2gray`` and a Gaussian-derivative filter,
  sigma 1.4 (9x9 kernel, replicate border);
- Conn = connectivity error with thresholds 0:0.1:1, theta 0.15 and 4-connectivity, / 1000;
- sums are float32 and sequential, column by column and then over the column sums, as Octave's
  ``sum(sum(x))`` on a single matrix computes them. The results match Octave to about 1e-7
  relative (see ``tests/test_metrics.py``, which checks them against values computed by Octave).

Empty unknown region: when the trimap has no 128 pixel every metric is ``0.0`` and an
:class:`EmptyUnknownWarning` is emitted (the official MSE would be 0/0 = NaN).

Example:
    >>> import numpy as np
    >>> gt = np.zeros((4, 4), np.float32); gt[:, 2:] = 1
    >>> tri = np.full((4, 4), 0.5, np.float32)
    >>> m = compute_metrics(gt, gt, tri)
    >>> sorted(m.items())
    [('conn', 0.0), ('grad', 0.0), ('mse', 0.0), ('sad', 0.0)]
    >>> round(sad(np.clip(gt + 0.2, 0, 1), gt, tri), 6)   # 8 pixels off by 51/255 = 0.2
    0.0016
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from . import io as mio
from .errors import InputNotFoundError

__all__ = [
    "METRICS",
    "EmptyUnknownWarning",
    "sad",
    "mse",
    "grad",
    "conn",
    "competition_mse",
    "compute_metrics",
    "evaluate_folder",
    "evaluate_triples",
    "mean_table",
    "format_table",
]

#: The official trimap metrics, in their usual order.
METRICS = ("sad", "mse", "grad", "conn")
#: Every metric name :func:`compute_metrics` and :func:`evaluate_folder` accept.
ALL_METRICS = METRICS + ("competition_mse",)

_F32 = np.float32
# Octave's ``0:0.1:1`` is computed as base + i * increment (the last element clipped to the limit).
_CONN_THRESHOLDS = tuple(min(i * 0.1, 1.0) for i in range(11))
_CONN_THETA = 0.15
_GRAD_SIGMA = 1.4


class EmptyUnknownWarning(UserWarning):
    """The trimap has no unknown (128) pixel, so the trimap metrics are defined as 0."""


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------
def _as_2d(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a single-channel HxW array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return a


def _levels(a, name: str) -> np.ndarray:
    """8-bit levels 0..255 as float64: uint8 as is, float [0,1] -> np.rint(x * 255)."""
    a = _as_2d(a, name)
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if a.dtype == bool:
        return a.astype(np.float64) * 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name}: expected float values in [0, 1] or uint8, got dtype {a.dtype}")
    lo, hi = float(a.min()), float(a.max())  # NaN propagates into min / max
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{name} contains NaN or infinite values")
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}]; expected float values in [0, 1] "
            "(pass uint8 for 0-255 data)"
        )
    out = a.astype(np.float64) * 255.0
    if lo < 0 or hi > 1:
        np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out)


def _unknown_mask(trimap, name: str = "trimap") -> np.ndarray:
    """Boolean mask of trimap == 128 (uint8) / == 0.5 (float, 8-bit equivalent)."""
    return _levels(trimap, name) == 128.0


def _prepare(pred, gt, trimap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = _levels(pred, "pred")
    g = _levels(gt, "gt")
    u = _unknown_mask(trimap)
    if p.shape != g.shape or p.shape != u.shape:
        raise ValueError(
            f"shape mismatch: pred {p.shape}, gt {g.shape}, trimap {u.shape} (all must be the same HxW)"
        )
    return p, g, u


def _warn_empty(u: np.ndarray, stacklevel: int = 4) -> bool:
    if u.any():
        return False
    warnings.warn(
        "the trimap has no unknown (128 / 0.5) pixel; the trimap metrics are defined as 0 here",
        EmptyUnknownWarning,
        stacklevel=stacklevel,
    )
    return True


def _public(fn, pred, gt, trimap) -> float:
    p, g, u = _prepare(pred, gt, trimap)
    if _warn_empty(u):
        return 0.0
    return fn(p, g, u)


def _octave_sum2(x: np.ndarray) -> np.float32:
    """``sum(sum(x))`` of a single matrix as Octave computes it.

    Octave sums each column sequentially in float32, then the row of column sums sequentially.
    An HxW NumPy array is the MATLAB matrix itself, so the column sums are built by adding the
    rows one after the other (``np.sum`` would use pairwise summation and differ in the last
    bits, ~1e-6 relative on a real image).
    """
    x = np.asarray(x, dtype=_F32)
    cols = x[0].copy()
    for row in x[1:]:
        cols += row
    total = _F32(0)
    for c in cols.tolist():
        total = _F32(total + _F32(c))
    return total


# --------------------------------------------------------------------------------------------
# The official metrics
# --------------------------------------------------------------------------------------------
def sad(pred, gt, trimap) -> float:
    """Sum of absolute differences over the unknown region, / 1000 (official ``compute_sad_loss``).

    ``pred``, ``gt``: HxW float in [0, 1] or uint8; ``trimap``: HxW float {0, .5, 1} or uint8 0/128/255.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((10, 10), np.float32); t = np.full((10, 10), .5, np.float32)
        >>> round(sad(np.full((10, 10), 1.0), g, t), 6)
        0.1
    """
    return _public(_sad, pred, gt, trimap)


def _sad(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    err = np.abs(p - g).astype(_F32) / _F32(255)
    return float(_octave_sum2(err * u.astype(_F32)) / _F32(1000))


def mse(pred, gt, trimap) -> float:
    """Mean squared error of ``(p - g) / 255`` over the unknown region (official ``compute_mse_loss``).

    Not scaled (papers often report it x1000).

    Example:
        >>> import numpy as np
        >>> g = np.zeros((10, 10), np.float32); t = np.full((10, 10), .5, np.float32)
        >>> round(mse(np.full((10, 10), 0.2), g, t), 6)
        0.04
    """
    return _public(_mse, pred, gt, trimap)


def _mse(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    err = (p - g).astype(_F32) / _F32(255)
    m = u.astype(_F32)
    return float(_octave_sum2(err * err * m) / _octave_sum2(m))


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))


def _dgaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    return -x * _gaussian(x, sigma) / sigma**2


def gaussgradient_kernels(sigma: float = _GRAD_SIGMA) -> tuple[np.ndarray, np.ndarray, float]:
    """The separable factors of the official ``gaussgradient`` kernel ``hx``.

    Returns ``(g, dg, norm)`` with ``hx = np.outer(g, dg) / norm`` (Gaussian down the rows,
    its derivative along the columns; ``hy = hx.T``), half size
    ``ceil(sigma * sqrt(-2 * log(sqrt(2 pi) * sigma * 0.01)))`` (4 for sigma 1.4).

    Example:
        >>> g, dg, n = gaussgradient_kernels(1.4)
        >>> g.shape, round(float(np.sum(np.outer(g, dg) ** 2) / n**2), 12)
        ((9,), 1.0)
    """
    epsilon = 1e-2
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g, dg = _gaussian(x, sigma), _dgaussian(x, sigma)
    norm = math.sqrt(float(np.sum(np.abs(np.outer(g, dg)) ** 2)))
    return g, dg, norm


def _mat2gray(a: np.ndarray) -> np.ndarray:
    """Octave's ``mat2gray(A)``: (A - min) / (max - min) in float64 (constant A: clipped to [0, 1])."""
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        return np.clip(a, 0.0, 1.0)
    return (1.0 / (hi - lo)) * (a - lo)


def _gradient_magnitude(a: np.ndarray, sigma: float = _GRAD_SIGMA) -> np.ndarray:
    """``sqrt(gx^2 + gy^2)`` of the official ``gaussgradient`` (imfilter 'replicate', 'conv')."""
    if float(a.min()) == float(a.max()):
        return np.zeros_like(a)
    g, dg, norm = gaussgradient_kernels(sigma)
    # hx = outer(g, dg) / norm: Gaussian along axis 0, derivative along axis 1; hy = hx.T.
    gx = ndimage.convolve1d(ndimage.convolve1d(a, g, axis=0, mode="nearest"), dg / norm, axis=1,
                            mode="nearest")
    gy = ndimage.convolve1d(ndimage.convolve1d(a, dg / norm, axis=0, mode="nearest"), g, axis=1,
                            mode="nearest")
    return np.sqrt(gx * gx + gy * gy)


def grad(pred, gt, trimap) -> float:
    """Gradient error over the unknown region, / 1000 (official ``compute_gradient_loss``).

    Both mattes go through ``mat2gray`` (min-max over the whole image), a Gaussian-derivative
    filter with sigma 1.4, and the squared difference of gradient magnitudes is summed.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((16, 16), np.float32); g[:, 8:] = 1; t = np.full((16, 16), .5, np.float32)
        >>> grad(g, g, t), grad(g, g.T, t) > 0
        (0.0, True)
    """
    return _public(_grad, pred, gt, trimap)


def _grad(p: np.ndarray, g: np.ndarray, u: np.ndarray) -> float:
    pa = _gradient_magnitude(_mat2gray(p)).astype(_F32)
    ta = _gradient_magnitude(_mat2gray(g)).astype(_F32)
    d = pa - ta
    return float(_octave_sum2(d * d * u.astype(_F32)) / _F32(1000))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (ties: the lowest label).

    ``mask`` is given transposed (MATLAB's column-major order is NumPy's row-major order of the
    transpose): Octave's ``bwconncomp`` numbers components by their first pixel in column-major
    order and ``max`` returns the first of equal sizes. An empty mask gives an empty component
    (where the official code stops with an "invalid empty index list" error).
    """
    labels, n = ndimage.label(mask)  # default structure = 4-connectivity in 2-D
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


# Single(k) / 255 for every 8-bit level k, and, per threshold, the first level that reaches it
# (``pred >= thr`` compares the single value with the double threshold, exactly, in double).
_LEVEL_VALUES = np.arange(256, dtype=_F32) / _F32(255)
_CONN_FIRST_LEVEL = tuple(
    int(np.searchsorted(_LEVEL_VALUES.astype(np.float64), t, side="left")) for t in _CONN_THRESHOLDS
)


def conn(pred, gt, trimap) -> float:
    """Connectivity error over the unknown region, / 1000 (official ``compute_connectivity_error``).

    Thresholds 0:0.1:1, theta 0.15, 4-connectivity; mattes scaled by ``single(x) / 255``.
    Where no pixel reaches a threshold in both mattes the official code fails ("invalid empty
    index list"); here that threshold's largest component is simply empty.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((8, 8), np.float32); g[2:6, 2:6] = 1; t = np.full((8, 8), .5, np.float32)
        >>> p = g.copy(); p[0, 0] = 1   # an isolated speck, disconnected from the matte
        >>> conn(g, g, t), round(conn(p, g, t), 9)   # float32 results, like the official code
        (0.0, 0.001)
    """
    return _public(_conn, pred, gt, trimap)


def _conn(p8: np.ndarray, g8: np.ndarray, u: np.ndarray) -> float:
    # Work on the transposes (C order = MATLAB's column order) so labels and sums run in
    # MATLAB's element order; (p >= t) & (g >= t) is min(p, g) >= t on the 8-bit levels.
    pk = np.ascontiguousarray(p8.T).astype(np.uint8)
    gk = np.ascontiguousarray(g8.T).astype(np.uint8)
    both = np.minimum(pk, gk)
    # index of the threshold each pixel's round-down value comes from; -1 = not set yet
    l_idx = np.full(both.shape, -1, np.int8)
    unset = np.ones(both.shape, bool)
    for i in range(1, len(_CONN_THRESHOLDS)):
        omega = _largest_component(both >= _CONN_FIRST_LEVEL[i])
        newly = unset & ~omega
        l_idx[newly] = i - 1
        unset &= omega
    # back to the original layout for the per-pixel maths and the column-wise sum
    l_values = np.array(_CONN_THRESHOLDS + (1.0,), np.float64).astype(_F32)  # index -1 -> 1.0
    l32 = l_values[np.ascontiguousarray(l_idx.T)]
    p = _LEVEL_VALUES[p8.astype(np.uint8)]
    g = _LEVEL_VALUES[g8.astype(np.uint8)]
    pd_ = p - l32
    gd = g - l32
    # float32 >= 0.15: no value lies within 1e-3 of theta, so single vs double makes no difference
    p_phi = _F32(1) - pd_ * (pd_ >= _CONN_THETA).astype(_F32)
    g_phi = _F32(1) - gd * (gd >= _CONN_THETA).astype(_F32)
    err = np.abs(p_phi - g_phi) * u.astype(_F32)
    return float(_octave_sum2(err) / _F32(1000))


def competition_mse(pred, gt, scale: str = "01", quantize: bool = True) -> float:
    """Whole-image mean squared error (the ecom.tech competition metric), in float64.

    ``scale="01"``: on [0, 1] values; ``scale="255"``: on 0-255 values (= 65025 x the former).
    ``quantize=True`` (default) first makes both 8-bit like the submitted PNGs; ``False`` uses
    float inputs as they are (uint8 inputs are always /255).

    Example:
        >>> import numpy as np
        >>> competition_mse(np.full((2, 2), 0.2), np.zeros((2, 2))), competition_mse(
        ...     np.full((2, 2), 0.2), np.zeros((2, 2)), scale="255")
        (0.04, 2601.0)
    """
    if scale not in ("01", "255"):
        raise ValueError(f"scale must be '01' or '255', got {scale!r}")

    def _vals255(a, name):
        a2 = _as_2d(a, name)
        levels = _levels(a2, name)  # also validates dtype / range / finiteness
        if quantize or a2.dtype in (np.uint8, bool):
            return levels
        return np.clip(a2.astype(np.float64), 0.0, 1.0) * 255.0

    p, g = _vals255(pred, "pred"), _vals255(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape}, gt {g.shape}")
    return _competition_mse(p, g, scale)


def _competition_mse(p255: np.ndarray, g255: np.ndarray, scale: str) -> float:
    d = p255 - g255
    m = float(np.mean(d * d))
    return m if scale == "255" else m / 65025.0


def compute_metrics(pred, gt, trimap=None, metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Several metrics at once: ``{"sad", "mse", "grad", "conn"}`` by default.

    ``metrics`` may also name ``"competition_mse"`` (whole image, [0,1] scale). ``trimap=None``
    makes the whole image unknown (competition style).

    Example:
        >>> import numpy as np
        >>> a = np.zeros((8, 8), np.float32)
        >>> compute_metrics(a, a, metrics=("sad", "competition_mse"))
        {'sad': 0.0, 'competition_mse': 0.0}
    """
    metrics = _check_metric_names(metrics)
    if trimap is None:
        trimap = np.full(np.shape(_as_2d(gt, "gt")), 128, np.uint8)
    p, g, u = _prepare(pred, gt, trimap)
    empty = any(m in _FUNCS for m in metrics) and _warn_empty(u, stacklevel=3)
    out: dict[str, float] = {}
    for name in metrics:
        if name == "competition_mse":
            out[name] = _competition_mse(p, g, "01")
        else:
            out[name] = 0.0 if empty else _FUNCS[name](p, g, u)
    return out


_FUNCS = {"sad": _sad, "mse": _mse, "grad": _grad, "conn": _conn}


def _check_metric_names(metrics: Iterable[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad or not metrics:
        raise ValueError(f"unknown metric(s) {bad or metrics}; choose from {ALL_METRICS}")
    return metrics


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def _index_by_stem(folder: Path, errors: list[dict], role: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    dupes: dict[str, list[Path]] = {}
    for p in mio.list_images(folder, recursive=False):
        if p.stem in out:
            dupes.setdefault(p.stem, [out[p.stem]]).append(p)
        else:
            out[p.stem] = p
    for stem, paths in dupes.items():
        del out[stem]
        errors.append({"image": stem, "file": str(paths[0]), "kind": "duplicate",
                       "reason": f"several {role} files share this stem: "
                                 + ", ".join(q.name for q in paths)})
    return out


def evaluate_folder(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    trimap_dir: str | os.PathLike | None = None,
    out_csv: str | os.PathLike | None = None,
    metrics: Sequence[str] = METRICS,
    progress: bool = False,
) -> pd.DataFrame:
    """Evaluate every prediction in ``pred_dir`` against the same-stem ground truth in ``gt_dir``.

    Returns one row per evaluated image (column ``image`` = file stem, a string, then one column
    per metric), sorted by stem. Files are matched by stem (``0001.png`` <-> ``0001.jpg``).
    ``trimap_dir=None`` counts the whole image as unknown (competition style). The matched files go
    through :func:`evaluate_triples`; a ground truth without prediction (or trimap), a prediction
    without ground truth and several files sharing a stem are problems too.

    Nothing stops the loop halfway: a ground truth without prediction, a prediction without
    ground truth, an unreadable file or a size mismatch is collected in
    ``df.attrs["errors"]`` (list of dicts ``image, file, reason``) and reported once at the end
    with a ``UserWarning``. Each problem has a ``kind``: ``missing`` (no prediction, ground truth or
    trimap for a stem), ``duplicate``, ``unreadable`` (not an image, or a colour photo where an alpha
    belongs: predictions and ground truths go through the same strict alpha reader the submission
    uses), ``invalid`` (e.g. a size mismatch) or ``note`` (evaluated, with a remark).
    ``df.attrs["mean"]`` holds the mean of each metric over the evaluated images, ``attrs["n_expected"]``
    how many ground truths there were ("4 of 5 evaluated"). With ``out_csv`` the per-image table is
    written atomically (same columns).

    Example:
        >>> import tempfile, numpy as np
        >>> from mattingkit.io import write_png
        >>> d = Path(tempfile.mkdtemp()); a = np.zeros((8, 8), np.float32); a[:, 4:] = 1
        >>> _ = write_png(d / "gt" / "x.png", a); _ = write_png(d / "pred" / "x.png", a)
        >>> df = evaluate_folder(d / "pred", d / "gt", metrics=("sad", "mse"))
        >>> df.to_dict("records"), df.attrs["errors"]
        ([{'image': 'x', 'sad': 0.0, 'mse': 0.0}], [])
    """
    metrics = _check_metric_names(metrics)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, role in ((pred_dir, "prediction"), (gt_dir, "ground-truth"), (trimap_dir, "trimap")):
        if d is not None and not Path(d).is_dir():
            raise InputNotFoundError(f"{d}: {role} folder not found")
    errors: list[dict] = []
    preds = _index_by_stem(pred_dir, errors, "prediction")
    gts = _index_by_stem(gt_dir, errors, "ground-truth")
    expected = len({p.stem for p in mio.list_images(gt_dir, recursive=False)})   # duplicates counted once
    tris = _index_by_stem(Path(trimap_dir), errors, "trimap") if trimap_dir is not None else None
    dup_stems = {e["image"] for e in errors}

    for stem in sorted(set(preds) - set(gts) - dup_stems):
        errors.append({"image": stem, "file": str(preds[stem]), "kind": "missing",
                       "reason": f"no ground truth with this stem in {gt_dir}"})
    triples = []
    for stem in sorted(set(gts) - dup_stems):
        if stem not in preds:
            errors.append({"image": stem, "file": str(gts[stem]), "kind": "missing",
                           "reason": f"no prediction with this stem in {pred_dir}"})
        elif tris is not None and stem not in tris:
            errors.append({"image": stem, "file": str(gts[stem]), "kind": "missing",
                           "reason": f"no trimap with this stem in {trimap_dir}"})
        else:
            triples.append((stem, preds[stem], gts[stem], tris[stem] if tris is not None else None))
    df = evaluate_triples(triples, out_csv=out_csv, metrics=metrics, progress=progress, errors=errors)
    df.attrs["n_expected"] = expected
    return df


def evaluate_triples(
    triples: Iterable[tuple[str, str | os.PathLike, str | os.PathLike, str | os.PathLike | None]],
    out_csv: str | os.PathLike | None = None,
    metrics: Sequence[str] = METRICS,
    progress: bool = False,
    errors: list[dict] | None = None,
    warn: bool = True,
) -> pd.DataFrame:
    """Evaluate explicit ``(id, prediction, ground truth, trimap or None)`` file triples (e.g. a manifest's
    rows and their predictions: no copying or renaming to match stems). The table, ``attrs`` and
    ``out_csv`` are those of :func:`evaluate_folder`, in the order given; a trimap of ``None`` counts
    the whole image. Problems (``errors``, given ones first) are collected, never raised; ``warn``:
    report them once with a ``UserWarning`` (callers that print :func:`format_table` pass False).

    Example:
        >>> import tempfile, numpy as np
        >>> from mattingkit.io import write_png
        >>> d = Path(tempfile.mkdtemp()); a = np.zeros((8, 8), np.float32); a[:, 4:] = 1
        >>> p, g = write_png(d / "p.png", a), write_png(d / "gt_0007.png", 1 - a)
        >>> df = evaluate_triples([("0007", p, g, None), ("0008", d / "none.png", g, None)], warn=False,
        ...                       metrics=("mse",))
        >>> df.to_dict("records"), len(df.attrs["errors"])
        ([{'image': '0007', 'mse': 1.0}], 1)
    """
    metrics = _check_metric_names(metrics)
    errors = list(errors or [])
    iterator: Iterable = list(triples)
    if progress:
        from .progress import progress as _progress

        iterator = _progress(iterator, desc="evaluate")
    rows = []
    for stem, pred_path, gt_path, tri_path in iterator:
        row = _evaluate_one(str(stem), pred_path, gt_path, tri_path, metrics, errors)
        if row is not None:
            rows.append(row)

    df = pd.DataFrame(rows, columns=["image", *metrics])
    df["image"] = df["image"].astype(str)
    df.attrs["errors"] = errors
    df.attrs["mean"] = {m: (float(df[m].mean()) if len(df) else float("nan")) for m in metrics}
    df.attrs["n_images"] = len(df)
    df.attrs["n_expected"] = len(rows) + sum(e.get("kind") != "note" for e in errors)
    if out_csv is not None:
        text = df.to_csv(index=False, float_format="%.10g")  # a non-UTF-8 file stem keeps its bytes:
        mio.atomic_write_bytes(out_csv, text.encode("utf-8", "surrogateescape"))  # never a crash here
    if errors and warn:
        lines = "\n".join(f"  {e['image']}: {e['file']}: {e['reason']}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        warnings.warn(f"evaluate: {len(errors)} problem(s), {len(df)} image(s) evaluated:\n"
                      f"{lines}{more}", UserWarning, stacklevel=3)
    return df


def _evaluate_one(stem: str, pred_path, gt_path, tri_path, metrics: Sequence[str], errors: list[dict]) -> dict | None:
    """One triple's metrics row, or None with the problem appended to ``errors``."""
    current = pred_path
    try:
        pred = mio.read_alpha(current, strict=True)   # a photo is not a prediction (as in submissions)
        current = gt_path
        gt = mio.read_alpha(current, strict=True)
        if tri_path is not None:
            current = tri_path
            trimap = mio.read_trimap(current)
        else:
            trimap = np.full(gt.shape, 0.5, np.float32)
        if not (pred.shape == gt.shape == trimap.shape):
            given_trimap = f", trimap {trimap.shape[::-1]}" if tri_path is not None else ""
            raise ValueError(f"size mismatch: prediction {pred.shape[::-1]}, ground truth "
                             f"{gt.shape[::-1]}{given_trimap} (WxH)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyUnknownWarning)
            values = compute_metrics(pred, gt, trimap, metrics)
        if not (trimap == 0.5).any() and set(metrics) & set(METRICS):
            errors.append({"image": stem, "file": str(current), "kind": "note",
                           "reason": "the trimap has no unknown (128) pixel: its trimap metrics are counted as 0"})
    except mio.ImageReadError as e:
        errors.append({"image": stem, "file": e.path, "kind": "unreadable", "reason": e.reason})
        return None
    except (ValueError, TypeError, OSError, MemoryError) as e:
        errors.append({"image": stem, "file": str(current), "kind": "invalid", "reason": str(e)})
        return None
    return {"image": stem, **values}


def mean_table(df: pd.DataFrame) -> pd.DataFrame:
    """One-row table: the mean of each metric column over the images of ``df``, plus ``n``.

    Example:
        >>> mean_table(pd.DataFrame({"image": ["a", "b"], "sad": [1.0, 3.0]})).to_dict("records")
        [{'n': 2, 'sad': 2.0}]
    """
    cols = [c for c in df.columns if c in ALL_METRICS]
    row = {"n": int(len(df))}
    row.update({c: float(df[c].mean()) if len(df) else float("nan") for c in cols})
    return pd.DataFrame([row])


def format_table(df: pd.DataFrame, digits: int = 4, max_problems: int = 50) -> str:
    """Text for printing: the mean of each metric (and how many images), then any problems
    (from ``df.attrs["errors"]``, at most ``max_problems`` of them listed).

    Example:
        >>> print(format_table(pd.DataFrame({"image": ["a", "b"], "sad": [1.0, 3.0], "mse": [.01, .03]})))
        images  sad     mse
        2       2.0000  0.0200
    """
    mt = mean_table(df)
    cols = [c for c in mt.columns if c != "n"]
    header = ["images"] + cols
    values = [str(int(mt["n"].iloc[0]))] + [
        f"{mt[c].iloc[0]:.{digits}f}" if np.isfinite(mt[c].iloc[0]) else "nan" for c in cols]
    widths = [max(len(h), len(v)) for h, v in zip(header, values)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()]
    errors: list[Mapping] = df.attrs.get("errors", []) if hasattr(df, "attrs") else []
    expected = df.attrs.get("n_expected") if hasattr(df, "attrs") else None
    if expected is not None and expected != len(df):
        lines.append(f"{len(df)} of {expected} evaluated")
    if errors:
        lines.append(f"{len(errors)} problem(s):")
        lines += [f"  {e['image']}: {e['file']}: {e['reason']}" for e in errors[:max_problems]]
        if len(errors) > max_problems:
            lines.append(f"  ... and {len(errors) - max_problems} more")
    return mio.printable("\n".join(lines))

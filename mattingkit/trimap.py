"""Trimap synthesis: NumPy in, NumPy out -- and one strategy table, :data:`METHODS`.

A trimap is float32 ``HxW`` with exactly three values: 0 (definite background), 0.5 (unknown) and
1 (definite foreground). The ways to make one:

- :func:`trimap_erode_dilate` -- the Deep Image Matting training recipe: erode the opaque region and
  dilate the non-transparent region with random elliptical kernels; its batched torch twin
  (:func:`trimap_erode_dilate_batch`, exact on binary masks) renders it on the training device.
- :func:`trimap_band` -- a band of exact Euclidean width around the soft pixels and the fg/bg edge,
  from distance transforms, so its cost does not depend on the width.
- :func:`trimap_from_mask` -- from a coarse or binary mask (thresholds + band), e.g. a first-pass
  prediction turned into a trimap for a second, refining pass.
- ``mixed`` (training only) -- ``band`` or ``erode_dilate``, drawn per sample.

:data:`METHODS` holds, per method name, everything about it in one :class:`TrimapMethod` entry: its
NumPy implementation and defaults, how a ``TrimapConfig`` gives its parameters, its training-time
parameter sampling, its validation, and its torch twin where one exists (mmagic's pattern). Every
consumer dispatches through it: :func:`make_trimap` / :func:`config_trimaps` (notebook 02, the
inspector widget), :func:`random_trimap` (CPU training augmentation), the device augmentation
(:mod:`mattingkit.data.device_augment`: the worker draws with the entry, the device renders with its
twin), and the config's choices (:data:`TRIMAP_METHODS`, :func:`check_config`). Adding a method is
adding one entry. torch is imported inside the torch twins only, so the config check
(:mod:`mattingkit.choices`) reads this table without importing torch.

"Definite" means exact: a trimap made from an alpha marks foreground only where alpha == 1 and
background only where alpha == 0 (for 8-bit alphas: 255 and 0 exactly), and every 0 < alpha < 1
pixel is unknown.

Example:
    >>> import numpy as np
    >>> alpha = np.zeros((9, 9), np.float32); alpha[:, :4] = 1; alpha[:, 4] = 0.5
    >>> trimap_band(alpha, 1)[0].tolist()
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
    >>> TRIMAP_METHODS, TRIMAP_BUILDERS
    (('erode_dilate', 'band', 'mixed'), ('erode_dilate', 'band', 'from_mask'))
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .config import TrimapConfig

BG, UNKNOWN, FG = 0.0, 0.5, 1.0


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _as_matte(array: np.ndarray, name: str) -> np.ndarray:
    """Check an alpha/mask and return it as float32 ``HxW`` in [0, 1] (bool and uint8 accepted)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW array (or HxWx1), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if a.dtype == bool:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be float in [0, 1], uint8 or bool, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
                         "(clip it first, or divide 8-bit values by 255)")
    return a.astype(np.float32, copy=False)


def _check_rng(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def _check_width(width: float, name: str) -> float:
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not np.isfinite(width) or width < 0:
        raise ValueError(f"{name} must be a finite number of pixels >= 0, got {width!r}")
    return float(width)


def _check_kernel_range(kernel_range) -> tuple[int, int]:
    try:
        lo, hi = (int(k) for k in kernel_range)
        ok = all(float(k) == int(k) for k in kernel_range)
    except (TypeError, ValueError):
        ok = False
    if not ok or lo < 1 or hi < lo:
        raise ValueError(f"kernel_range must be two integers (min, max) with 1 <= min <= max, got {kernel_range!r}")
    return lo, hi


def _compose(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Trimap from two disjoint boolean masks; everything else is unknown."""
    trimap = np.full(fg.shape, UNKNOWN, np.float32)
    trimap[fg] = FG
    trimap[bg] = BG
    return trimap


# --------------------------------------------------------------------------------------------
# (a) Deep Image Matting: erode / dilate
# --------------------------------------------------------------------------------------------
def ellipse_kernel(size: int) -> np.ndarray:
    """An elliptical ``size x size`` structuring element (uint8) that always contains its anchor.

    The anchor (centre) pixel is set so that erosion never grows a region and dilation never
    shrinks one, for even sizes too.

    Example:
        >>> ellipse_kernel(3).tolist()
        [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    k[size // 2, size // 2] = 1
    return k


def draw_kernels(rng: np.random.Generator, kernel_range: tuple[int, int]) -> np.ndarray:
    """The two kernel sizes of one erode/dilate trimap (erosion, dilation), uniform in ``kernel_range``
    (both ends included): int64 array of 2. The one draw both :func:`trimap_erode_dilate` and the
    device path's worker make, so an item has the same kernels whichever path renders it.

    Example:
        >>> draw_kernels(np.random.default_rng(0), (5, 5)).tolist()
        [5, 5]
    """
    lo, hi = kernel_range
    return rng.integers(lo, hi + 1, size=2)


def trimap_erode_dilate(alpha: np.ndarray, rng: np.random.Generator,
                        kernel_range: tuple[int, int] = (1, 30), iterations: int = 1) -> np.ndarray:
    """The Deep Image Matting trimap: fg = erode(alpha == 1), bg = not dilate(alpha > 0).

    Two kernel sizes are drawn independently from ``rng``, uniformly in ``kernel_range`` (both ends
    included): one for the erosion of the opaque region, one for the dilation of the non-transparent
    region. A size ``k`` is an elliptical ``k x k`` element (it moves the edge by about ``k // 2`` px
    per iteration; ``k = 1`` leaves it in place, so the unknown region is exactly the soft pixels).

    Guarantees: definite fg ⊆ {alpha == 1}, definite bg ⊆ {alpha == 0}, every 0 < alpha < 1 pixel
    is unknown, and the same ``rng`` state gives the same trimap.

    Example:
        >>> a = np.zeros((32, 32), np.float32); a[8:24, 8:24] = 1
        >>> t = trimap_erode_dilate(a, np.random.default_rng(0), kernel_range=(5, 5))
        >>> int((t == 1).sum()), int((t == 0.5).sum())   # 12x12 left; 20x20 minus rounded corners
        (144, 248)
    """
    a = _as_matte(alpha, "alpha")
    rng = _check_rng(rng)
    lo, hi = _check_kernel_range(kernel_range)
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    k_erode, k_dilate = (int(k) for k in draw_kernels(rng, (lo, hi)))
    opaque = (a >= 1.0).astype(np.uint8)
    visible = (a > 0.0).astype(np.uint8)
    # Outside the image counts as "keep" (OpenCV's default border): an object touching the border
    # is not eroded from the border side.
    fg = cv2.erode(opaque, ellipse_kernel(k_erode), iterations=int(iterations)).astype(bool)
    grown = cv2.dilate(visible, ellipse_kernel(k_dilate), iterations=int(iterations)).astype(bool)
    return _compose(fg, ~grown)


# --------------------------------------------------------------------------------------------
# (a') its batched torch twin (the device augmentation): exact on binary masks
# --------------------------------------------------------------------------------------------
def _host_sizes(sizes: Any) -> np.ndarray:
    """Kernel sizes as a host int64 array: a list / NumPy array as given; a tensor is read (a sync when it
    lives on a GPU: pass host values, as the device augmentation does)."""
    if hasattr(sizes, "detach"):   # a tensor
        sizes = sizes.detach().cpu().numpy()
    return np.asarray(sizes, np.int64).reshape(-1)


def ellipse_runs(sizes: Any, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample i's :func:`ellipse_kernel` of ``sizes[i]`` as horizontal runs: for
    each row offset ``dy`` in ``[-radius, radius]`` (relative to the anchor) the column offsets
    ``lo[i, dy]``, ``hi[i, dy]`` of the row's one contiguous run (an ellipse is convex; the anchor
    row is full), ``lo > hi`` for an empty row. int64 (N, 2 radius + 1) host arrays each.

    Example:
        >>> lo, hi = ellipse_runs([3], 1)
        >>> lo.tolist(), hi.tolist()
        ([[0, -1, 0]], [[0, 1, 0]])
    """
    sizes = _host_sizes(sizes)
    n, k = len(sizes), 2 * radius + 1
    lo = np.ones((n, k), np.int64)
    hi = np.zeros((n, k), np.int64)
    for i, size in enumerate(sizes.tolist()):
        e = ellipse_kernel(int(size))
        a = int(size) // 2
        for r in range(e.shape[0]):
            cols = np.flatnonzero(e[r])
            if len(cols):
                if cols[-1] - cols[0] + 1 != len(cols):
                    raise ValueError(f"ellipse kernel {size}: row {r} is not one run")
                lo[i, r - a + radius], hi[i, r - a + radius] = cols[0] - a, cols[-1] - a
    return lo, hi


def dilate_batch(mask: torch.Tensor, sizes: Any, iterations: int = 1) -> torch.Tensor:
    """Binary dilation of (N, 1, H, W) masks, sample i with the elliptical kernel of ``sizes[i]``
    (cv2.dilate with :func:`ellipse_kernel`, outside counting as empty; exact).

    Per kernel row offset ``dy``: a horizontal window OR from a row-wise prefix sum (two gathers),
    shifted by ``dy`` -- about 2 x kernel-height passes over the batch whatever the kernel sizes
    (a grouped convolution with 31 x 31 kernels is orders of magnitude slower on a CPU). The kernel
    sizes are host values (a list or NumPy array): the runs, the radius and which rows are empty are
    decided on the host, so nothing waits for the device."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = mask.shape
    dev = mask.device
    sizes = _host_sizes(sizes)
    radius = int(sizes.max()) // 2
    lo_h, hi_h = ellipse_runs(sizes, radius)
    lo, hi = (torch.from_numpy(t).to(dev, non_blocking=True) for t in (lo_h, hi_h))
    xs = torch.arange(w, device=dev).view(1, 1, w)
    x = mask.view(n, h, w)
    for _ in range(int(iterations)):
        cs = F.pad(x.to(torch.float32).cumsum(-1), (1, 0))           # cs[..., j] = sum of x[..., :j]
        out = torch.zeros((n, h, w), dtype=torch.bool, device=dev)
        for j in range(2 * radius + 1):
            dy = j - radius
            if (lo_h[:, j] > hi_h[:, j]).all():
                continue
            right = (xs + hi[:, j].view(n, 1, 1) + 1).clamp_(0, w).expand(n, h, w)
            left = (xs + lo[:, j].view(n, 1, 1)).clamp_(0, w).expand(n, h, w)
            row = (cs.gather(-1, right) - cs.gather(-1, left)) > 0.5
            row &= (lo[:, j] <= hi[:, j]).view(n, 1, 1)
            # out(y, x) |= row(y + dy, x)
            if dy >= 0:
                out[:, :h - dy] |= row[:, dy:]
            else:
                out[:, -dy:] |= row[:, :h + dy]
        x = out
    return x.view(n, 1, h, w)


def trimap_erode_dilate_batch(alpha: torch.Tensor, k_erode: Any, k_dilate: Any, iterations: int = 1) -> torch.Tensor:
    """Batched :func:`trimap_erode_dilate` (its torch twin) with given kernel sizes (N,; host values):
    fg = erode(alpha == 1) (outside counts as opaque), bg = not dilate(alpha > 0); float {0, .5, 1}.
    Both in one :func:`dilate_batch` call (erode(m) = not dilate(not m), the outside then empty).

    Example:
        >>> import torch
        >>> a = torch.zeros(1, 1, 7, 7); a[..., 2:5, 2:5] = 1
        >>> t = trimap_erode_dilate_batch(a, [3], [3])
        >>> int((t == 1).sum()), int((t == 0.5).sum())
        (1, 20)
    """
    import torch

    n = alpha.shape[0]
    sizes = np.concatenate((_host_sizes(k_erode), _host_sizes(k_dilate)))
    both = dilate_batch(torch.cat((alpha < 1.0, alpha > 0.0)), sizes, iterations)
    fg, grown = ~both[:n], both[n:]
    half = torch.full_like(alpha, 0.5)
    return torch.where(fg, torch.ones_like(alpha), torch.where(grown, half, torch.zeros_like(alpha)))


# --------------------------------------------------------------------------------------------
# (b) distance-transform band
# --------------------------------------------------------------------------------------------
def distance_to(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (float32, px) from every pixel to the nearest ``True`` pixel of ``mask``.

    Linear time (OpenCV's ``DIST_L2`` with ``DIST_MASK_PRECISE``, Felzenszwalb-Huttenlocher), so the
    cost does not depend on how far the distances reach. ``inf`` everywhere when ``mask`` is empty.

    Example:
        >>> distance_to(np.array([[1, 0, 0, 0]], bool)).tolist()
        [[0.0, 1.0, 2.0, 3.0]]
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _band_trimap(fg: np.ndarray, bg: np.ndarray, width: float) -> np.ndarray:
    """Unknown = the pixels in neither mask, plus every pixel within ``width`` of them or of the
    fg/bg edge. Three distance transforms whatever the width."""
    soft = ~(fg | bg)
    # float32 distances carry ~1e-7 relative rounding; the tolerance keeps integer distances
    # (straight edges) on the inclusive side without admitting the next possible value sqrt(w^2+1).
    limit = width * (1.0 + 1e-6) + 1e-6
    unknown = soft | (distance_to(soft) <= limit)
    if fg.any() and bg.any():
        # A hard edge lies half-way between an fg pixel and its bg neighbour: the distance from a
        # pixel to the edge is the distance to the nearest pixel of the other class minus 0.5.
        to_edge = np.where(fg, distance_to(bg), distance_to(fg)) - 0.5
        unknown |= ~soft & (to_edge <= limit)
    return _compose(fg & ~unknown, bg & ~unknown)


def trimap_band(alpha: np.ndarray, width: float) -> np.ndarray:
    """Unknown = every 0 < alpha < 1 pixel and every pixel within Euclidean distance ``width`` of one
    or of an alpha = 0 / alpha = 1 edge; the rest is fg (alpha == 1) or bg (alpha == 0).

    Distances are between pixel centres; a hard edge lies half-way between its two pixels. So the
    band reaches exactly ``width`` px beyond the soft pixels on each side of a straight soft edge,
    and covers exactly ``width`` px on each side of a straight hard edge (2 * width in all); on
    curves it is within a pixel of that. ``width=0`` marks only the soft pixels. The cost does not
    grow with ``width`` (a fixed number of linear-time distance transforms).

    Example:
        >>> a = np.zeros((1, 10), np.float32); a[0, :5] = 1            # a hard edge
        >>> trimap_band(a, 2)[0].tolist()
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
    """
    a = _as_matte(alpha, "alpha")
    width = _check_width(width, "width")
    return _band_trimap(a >= 1.0, a <= 0.0, width)


# --------------------------------------------------------------------------------------------
# (c) from a coarse mask
# --------------------------------------------------------------------------------------------
def trimap_from_mask(mask: np.ndarray, fg_threshold: float = 0.95, bg_threshold: float = 0.05,
                     band: float = 15) -> np.ndarray:
    """Trimap from a coarse or binary mask: fg where ``mask >= fg_threshold``, bg where
    ``mask <= bg_threshold``, unknown in between and within ``band`` px of that middle region or of
    the fg/bg edge (as :func:`trimap_band`).

    Used for trimap-free inference: a first-pass alpha becomes the trimap of a refining pass.
    ``trimap_from_mask(a, 1.0, 0.0, w)`` equals ``trimap_band(a, w)``.

    Example:
        >>> m = np.zeros((1, 8), np.float32); m[0, :4] = 0.98; m[0, 4] = 0.5
        >>> trimap_from_mask(m, band=1)[0].tolist()
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0]
    """
    m = _as_matte(mask, "mask")
    band = _check_width(band, "band")
    for name, t in (("fg_threshold", fg_threshold), ("bg_threshold", bg_threshold)):
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 <= t <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {t!r}")
    if not bg_threshold < fg_threshold:
        raise ValueError(f"bg_threshold ({bg_threshold}) must be below fg_threshold ({fg_threshold})")
    return _band_trimap(m >= fg_threshold, m <= bg_threshold, band)


# --------------------------------------------------------------------------------------------
# The strategy table: method name -> everything about it
# --------------------------------------------------------------------------------------------
def _kernel_problems(kernel_range: Any, iterations: Any, prefix: str = "") -> list[str]:
    problems = []
    try:
        _check_kernel_range(kernel_range)
    except ValueError as e:
        problems.append(prefix + str(e))
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        problems.append(f"{prefix}iterations must be an integer >= 1, got {iterations!r}")
    return problems


def _band_width_problems(cfg: "TrimapConfig") -> list[str]:
    lo, hi = int(cfg.band_width_min), int(cfg.band_width)
    if lo < 0 or hi < lo:
        return [f"need 0 <= trimap.band_width_min <= trimap.band_width, got {lo} and {hi}"]
    return []


def _mixed_problems(cfg: "TrimapConfig") -> list[str]:
    p = float(getattr(cfg, "mixed_band_prob", 0.5))
    if not 0.0 <= p <= 1.0:
        return [f"trimap.mixed_band_prob must be in [0, 1], got {p}"]
    return []


def _mask_problems(cfg: "TrimapConfig") -> list[str]:
    problems = []
    for name, t in (("fg_threshold", cfg.fg_threshold), ("bg_threshold", cfg.bg_threshold)):
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 <= t <= 1.0:
            problems.append(f"trimap.{name} must be a number in [0, 1], got {t!r}")
    if not problems and not cfg.bg_threshold < cfg.fg_threshold:
        problems.append(f"trimap.bg_threshold ({cfg.bg_threshold}) must be below trimap.fg_threshold "
                        f"({cfg.fg_threshold})")
    return problems


def _raise(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


def _sample_erode_dilate(rng: np.random.Generator, cfg: "TrimapConfig") -> tuple[str, dict]:
    return "erode_dilate", METHODS["erode_dilate"].from_config(cfg)


def _sample_band(rng: np.random.Generator, cfg: "TrimapConfig") -> tuple[str, dict]:
    _raise(_band_width_problems(cfg))
    return "band", {"band": int(rng.integers(int(cfg.band_width_min), int(cfg.band_width) + 1))}


def _sample_mixed(rng: np.random.Generator, cfg: "TrimapConfig") -> tuple[str, dict]:
    _raise(_mixed_problems(cfg))
    method = "band" if rng.random() < float(getattr(cfg, "mixed_band_prob", 0.5)) else "erode_dilate"
    return METHODS[method].sample(rng, cfg)


@dataclass(frozen=True)
class TrimapMethod:
    """Everything about one way to make a trimap: one entry of :data:`METHODS`.

    - ``defaults``: the parameters of ``build`` and their defaults (what :func:`make_trimap` takes).
    - ``build(alpha, rng, **params)``: the NumPy implementation (None: a training-time choice between
      other methods, e.g. ``mixed``).
    - ``from_config(cfg)``: ``build``'s parameters from a :class:`~mattingkit.config.TrimapConfig`
      (:func:`config_trimaps`, the inspector widget).
    - ``sample(rng, cfg)``: the training-time draw (:func:`random_trimap`, the device worker): which
      buildable method and its parameters; the draws come in a fixed order. None: not a
      ``trimap.method`` choice (``from_mask`` is for inference).
    - ``check(cfg)``: every problem with a config's values for this method (:func:`check_config`).
    - ``draw(rng, params)``: the per-item random values ``build`` draws from ``rng`` (for the torch
      twin, drawn in the same order as ``build``), a small int64 array.
    - ``torch_twin(alpha, drawn, params)``: the batched torch twin on (N, 1, H, W) alphas with the drawn values
      stacked (N, ...) as a host array (so the device never has to be read back); None where the method
      stays on the CPU, ``cpu_only`` saying why.
    """

    defaults: Mapping[str, Any]
    build: Callable[..., np.ndarray] | None
    from_config: Callable[["TrimapConfig"], dict] | None
    sample: Callable[[np.random.Generator, "TrimapConfig"], tuple[str, dict]] | None
    check: Callable[["TrimapConfig"], list[str]]
    draw: Callable[[np.random.Generator, dict], np.ndarray] | None = None
    torch_twin: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor] | None = None
    cpu_only: str = ""


#: Every trimap method by name (see :class:`TrimapMethod`). Order matters: it is the order of the choices.
METHODS: dict[str, TrimapMethod] = {
    "erode_dilate": TrimapMethod(
        defaults={"kernel_range": (10, 10), "iterations": 1},
        build=lambda a, rng, kernel_range, iterations: trimap_erode_dilate(a, rng, tuple(kernel_range), iterations),
        from_config=lambda cfg: {"kernel_range": tuple(cfg.kernel_range), "iterations": cfg.iterations},
        sample=_sample_erode_dilate,
        check=lambda cfg: _kernel_problems(cfg.kernel_range, cfg.iterations, "trimap."),
        draw=lambda rng, p: draw_kernels(rng, _check_kernel_range(p["kernel_range"])).astype(np.int64),
        torch_twin=lambda alpha, k, p: trimap_erode_dilate_batch(alpha, np.asarray(k)[:, 0], np.asarray(k)[:, 1],
                                                                 int(p["iterations"])),
    ),
    "band": TrimapMethod(
        defaults={"band": 10},
        build=lambda a, rng, band: trimap_band(a, band),
        from_config=lambda cfg: {"band": cfg.band_width},
        sample=_sample_band,
        check=_band_width_problems,
        cpu_only="distance transforms stay on the CPU",
    ),
    "from_mask": TrimapMethod(
        defaults={"fg_threshold": 0.95, "bg_threshold": 0.05, "band": 10},
        build=lambda a, rng, fg_threshold, bg_threshold, band: trimap_from_mask(a, fg_threshold, bg_threshold, band),
        from_config=lambda cfg: {"fg_threshold": cfg.fg_threshold, "bg_threshold": cfg.bg_threshold,
                                 "band": cfg.mask_band},
        sample=None,
        check=_mask_problems,
        cpu_only="distance transforms stay on the CPU",
    ),
    "mixed": TrimapMethod(
        defaults={},
        build=None,
        from_config=None,
        sample=_sample_mixed,
        check=lambda cfg: (_mixed_problems(cfg) + _band_width_problems(cfg)
                           + _kernel_problems(cfg.kernel_range, cfg.iterations, "trimap.")),
        cpu_only="distance transforms stay on the CPU",
    ),
}
#: The ``trimap.method`` choices (training): the methods with a ``sample``.
TRIMAP_METHODS = tuple(m for m, e in METHODS.items() if e.sample is not None)
#: The methods that make a trimap from an alpha (or coarse mask) directly: :func:`make_trimap`, the inspector.
TRIMAP_BUILDERS = tuple(m for m, e in METHODS.items() if e.build is not None)
_PARAMS = {k for e in METHODS.values() for k in e.defaults}


def _method(name: str, choices: tuple[str, ...]) -> TrimapMethod:
    if name not in choices:
        raise ValueError(f"unknown trimap method {name!r}; choose one of {', '.join(choices)}")
    return METHODS[name]


def check_config(cfg: "TrimapConfig") -> list[str]:
    """Every problem with a ``TrimapConfig`` for training (its ``method`` and that method's values), at once.

    Example:
        >>> from mattingkit.config import TrimapConfig
        >>> check_config(TrimapConfig())
        []
        >>> check_config(TrimapConfig(method="band", band_width_min=8, band_width=4))
        ['need 0 <= trimap.band_width_min <= trimap.band_width, got 8 and 4']
    """
    if cfg.method not in TRIMAP_METHODS:
        return [f"trimap.method={cfg.method!r}: choose one of {', '.join(TRIMAP_METHODS)}"]
    return METHODS[cfg.method].check(cfg)


def make_trimap(alpha: np.ndarray, method: str, *, rng: np.random.Generator | None = None, **params) -> np.ndarray:
    """One trimap of ``alpha`` by ``method`` (one of :data:`TRIMAP_BUILDERS`) with explicit parameters
    (each method's ``defaults`` in :data:`METHODS`: ``kernel_range=(10, 10)``, ``iterations=1``,
    ``band=10``, ``fg_threshold=0.95``, ``bg_threshold=0.05``; parameters of the other methods are
    ignored); ``rng`` defaults to ``default_rng(0)``.

    Example:
        >>> a = np.zeros((1, 10), np.float32); a[0, :5] = 1
        >>> make_trimap(a, "band", band=2)[0].tolist()
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
    """
    entry = _method(method, TRIMAP_BUILDERS)
    unknown = set(params) - _PARAMS
    if unknown:
        raise TypeError(f"make_trimap: unknown parameter(s) {sorted(unknown)}")
    p = {k: params.get(k, v) for k, v in entry.defaults.items()}
    return entry.build(alpha, np.random.default_rng(0) if rng is None else rng, **p)


def config_trimaps(alpha: np.ndarray, cfg: "TrimapConfig", seed: int = 0,
                   methods: tuple[str, ...] = TRIMAP_BUILDERS) -> dict[str, np.ndarray]:
    """Each method's trimap with the config's parameters (the entry's ``from_config``): ``erode_dilate``
    (random kernels in ``kernel_range``, seeded), ``band`` (``band_width``) and ``from_mask``
    (``fg_threshold`` / ``bg_threshold`` / ``mask_band``).

    Example:
        >>> from mattingkit.config import TrimapConfig
        >>> a = np.zeros((40, 40), np.float32); a[10:30, 10:30] = 1
        >>> sorted(config_trimaps(a, TrimapConfig()))
        ['band', 'erode_dilate', 'from_mask']
    """
    return {m: make_trimap(alpha, m, rng=np.random.default_rng(seed), **_method(m, TRIMAP_BUILDERS).from_config(cfg))
            for m in methods}


# --------------------------------------------------------------------------------------------
# Training-time sampling and statistics
# --------------------------------------------------------------------------------------------
def random_trimap(alpha: np.ndarray, rng: np.random.Generator, cfg: "TrimapConfig") -> np.ndarray:
    """A random training trimap per ``cfg.method``, through the entry's ``sample`` in :data:`METHODS`:

    - ``erode_dilate``: :func:`trimap_erode_dilate` with ``cfg.kernel_range`` and ``cfg.iterations``.
    - ``band``: :func:`trimap_band` with a width drawn uniformly from
      ``[cfg.band_width_min, cfg.band_width]`` (integers, both ends included).
    - ``mixed``: ``band`` with probability ``cfg.mixed_band_prob``, else ``erode_dilate``.

    Example:
        >>> from mattingkit.config import TrimapConfig
        >>> a = np.zeros((64, 64), np.float32); a[8:56, 8:56] = 1
        >>> t = random_trimap(a, np.random.default_rng(0), TrimapConfig(method="band"))
        >>> sorted(np.unique(t).tolist())
        [0.0, 0.5, 1.0]
    """
    rng = _check_rng(rng)
    method, params = _method(cfg.method, TRIMAP_METHODS).sample(rng, cfg)
    return make_trimap(alpha, method, rng=rng, **params)


def unknown_share(trimap: np.ndarray) -> float:
    """Fraction of unknown pixels (value 0.5; 128 for a uint8 trimap).

    Example:
        >>> unknown_share(np.array([[0, 0.5], [0.5, 1]], np.float32))
        0.5
    """
    t = np.asarray(trimap)
    if t.size == 0:
        raise ValueError(f"trimap is empty (shape {t.shape})")
    level = 128 if t.dtype == np.uint8 else UNKNOWN
    return float(np.count_nonzero(t == level)) / t.size

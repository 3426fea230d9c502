"""Trimap synthesis: NumPy in, NumPy out.

A trimap is float32 ``HxW`` with exactly three values: 0 (definite background), 0.5 (unknown) and
1 (definite foreground). Three ways to make one:

- :func:`trimap_erode_dilate` -- the Deep Image Matting training recipe: erode the opaque region and
  dilate the non-transparent region with random elliptical kernels.
- :func:`trimap_band` -- a band of exact Euclidean width around the soft pixels and the fg/bg edge,
  from distance transforms, so its cost does not depend on the width.
- :func:`trimap_from_mask` -- from a coarse or binary mask (thresholds + band), e.g. a first-pass
  prediction turned into a trimap for a second, refining pass.

:func:`random_trimap` picks one of the first two per :class:`~mattingkit.config.TrimapConfig`.

"Definite" means exact: a trimap made from an alpha marks foreground only where alpha == 1 and
background only where alpha == 0 (for 8-bit alphas: 255 and 0 exactly), and every 0 < alpha < 1
pixel is unknown.

Example:
    >>> import numpy as np
    >>> alpha = np.zeros((9, 9), np.float32); alpha[:, :4] = 1; alpha[:, 4] = 0.5
    >>> trimap_band(alpha, 1)[0].tolist()
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
"""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrimapConfig

BG, UNKNOWN, FG = 0.0, 0.5, 1.0
TRIMAP_METHODS = ("erode_dilate", "band", "mixed")


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
    k_erode, k_dilate = (int(k) for k in rng.integers(lo, hi + 1, size=2))
    opaque = (a >= 1.0).astype(np.uint8)
    visible = (a > 0.0).astype(np.uint8)
    # Outside the image counts as "keep" (OpenCV's default border): an object touching the border
    # is not eroded from the border side.
    fg = cv2.erode(opaque, ellipse_kernel(k_erode), iterations=int(iterations)).astype(bool)
    grown = cv2.dilate(visible, ellipse_kernel(k_dilate), iterations=int(iterations)).astype(bool)
    return _compose(fg, ~grown)


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
# One dispatch: method name -> builder
# --------------------------------------------------------------------------------------------
#: Every way to make a trimap from an alpha (or a coarse mask), by name. Each builder takes the alpha and
#: keyword parameters (the ones it does not use are ignored): ``rng`` and ``kernel_range`` /
#: ``iterations`` (erode_dilate), ``band`` (band: the band width; from_mask: its band),
#: ``fg_threshold`` / ``bg_threshold`` (from_mask).
TRIMAP_BUILDERS = {
    "erode_dilate": lambda a, p: trimap_erode_dilate(a, p["rng"], tuple(p["kernel_range"]), p["iterations"]),
    "band": lambda a, p: trimap_band(a, p["band"]),
    "from_mask": lambda a, p: trimap_from_mask(a, p["fg_threshold"], p["bg_threshold"], p["band"]),
}
_BUILD_DEFAULTS = {"kernel_range": (10, 10), "iterations": 1, "band": 10, "fg_threshold": 0.95,
                   "bg_threshold": 0.05}


def make_trimap(alpha: np.ndarray, method: str, *, rng: np.random.Generator | None = None, **params) -> np.ndarray:
    """One trimap of ``alpha`` by ``method`` (a key of :data:`TRIMAP_BUILDERS`) with explicit parameters
    (defaults: ``kernel_range=(10, 10)``, ``iterations=1``, ``band=10``, ``fg_threshold=0.95``,
    ``bg_threshold=0.05``); ``rng`` defaults to ``default_rng(0)``.

    Example:
        >>> a = np.zeros((1, 10), np.float32); a[0, :5] = 1
        >>> make_trimap(a, "band", band=2)[0].tolist()
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
    """
    if method not in TRIMAP_BUILDERS:
        raise ValueError(f"unknown trimap method {method!r}; choose one of {', '.join(TRIMAP_BUILDERS)}")
    unknown = set(params) - set(_BUILD_DEFAULTS)
    if unknown:
        raise TypeError(f"make_trimap: unknown parameter(s) {sorted(unknown)}")
    p = {**_BUILD_DEFAULTS, **params, "rng": np.random.default_rng(0) if rng is None else rng}
    return TRIMAP_BUILDERS[method](alpha, p)


def config_params(cfg: "TrimapConfig") -> dict:
    """The :func:`make_trimap` parameters of a ``TrimapConfig`` (``band`` = ``band_width`` for the band
    method, ``mask_band`` for from_mask: see :func:`config_trimaps`)."""
    return {"kernel_range": tuple(cfg.kernel_range), "iterations": cfg.iterations, "band": cfg.band_width,
            "fg_threshold": cfg.fg_threshold, "bg_threshold": cfg.bg_threshold}


def config_trimaps(alpha: np.ndarray, cfg: "TrimapConfig", seed: int = 0,
                   methods: tuple[str, ...] = tuple(TRIMAP_BUILDERS)) -> dict[str, np.ndarray]:
    """Each method's trimap with the config's parameters: ``erode_dilate`` (random kernels in
    ``kernel_range``, seeded), ``band`` (``band_width``) and ``from_mask`` (``fg_threshold`` /
    ``bg_threshold`` / ``mask_band``).

    Example:
        >>> from mattingkit.config import TrimapConfig
        >>> a = np.zeros((40, 40), np.float32); a[10:30, 10:30] = 1
        >>> sorted(config_trimaps(a, TrimapConfig()))
        ['band', 'erode_dilate', 'from_mask']
    """
    p = config_params(cfg)
    return {m: make_trimap(alpha, m, rng=np.random.default_rng(seed),
                           **dict(p, band=cfg.mask_band if m == "from_mask" else cfg.band_width))
            for m in methods}


# --------------------------------------------------------------------------------------------
# Training-time sampling and statistics
# --------------------------------------------------------------------------------------------
def random_trimap(alpha: np.ndarray, rng: np.random.Generator, cfg: "TrimapConfig") -> np.ndarray:
    """A random training trimap per ``cfg.method``.

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
    method = cfg.method
    if method not in TRIMAP_METHODS:
        raise ValueError(f"unknown trimap method {method!r}; choose one of {', '.join(TRIMAP_METHODS)}")
    if method == "mixed":
        p = float(getattr(cfg, "mixed_band_prob", 0.5))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"trimap.mixed_band_prob must be in [0, 1], got {p}")
        method = "band" if rng.random() < p else "erode_dilate"
    params = config_params(cfg)
    if method == "band":
        lo, hi = int(cfg.band_width_min), int(cfg.band_width)
        if lo < 0 or hi < lo:
            raise ValueError(f"need 0 <= trimap.band_width_min <= trimap.band_width, got {lo} and {hi}")
        params["band"] = int(rng.integers(lo, hi + 1))
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

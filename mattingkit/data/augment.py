"""Training-time augmentation: small single-purpose transforms on a sample dict (mmagic style).

A *sample* is a dict of numpy arrays -- ``fg`` / ``bg`` / ``image`` ``HxWx3``, ``alpha`` ``HxW``,
``trimap`` ``HxW`` in {0, .5, 1} (and, for a two-foreground sample, ``fg2`` / ``alpha2``) -- plus
non-array entries such as ``id``. Source arrays may be float32 in [0, 1] or uint8 (as decoded,
:func:`mattingkit.io.read_image_uint8`); :class:`Render` outputs float32 in [0, 1], so only the
crop is ever converted to float. Every transform is a callable ``t(sample, rng) -> sample`` taking
an explicit :class:`numpy.random.Generator`; none touches global random state.

Crop first, then compute
------------------------
The geometric transforms do not move pixels. They compose 3x3 matrices in ``sample["geometry"]``
(a :class:`Geometry`): one per layer (``fg`` for fg/alpha/image/trimap, ``fg2`` for the second
foreground, ``bg``), mapping that layer's source pixels to the *canvas* (the foreground's frame),
and a crop *window* on the canvas. :class:`Render` then makes every output pixel with one warp per
array (a foreground and its alpha share one 4-channel warp), straight from the decoded source into
the output size -- affine, two-foreground resize, background cover, crop and resize in a single
resampling, and only for the pixels that end up in the crop. The colour and compositing transforms
that follow run on the small crop. Beyond decoding the files, a 512 crop from a 1024x1024
foreground costs several times less CPU this way than in the classic "convert, warp, jitter,
composite the full image, then crop" order (``benchmarks/data_pipeline.py``).

The training order (:func:`build_train_pipeline`)::

    RandomAffine -> CropAroundUnknown -> CoverBackground -> Render        (geometry, one warp)
    -> MergeForegrounds -> HSVJitter -> Composite                          (colour, on the crop)
    -> GenerateTrimap -> TrimapDropout -> Densify                           (targets)

The float half of this (the warp, the colour work, compositing and the erode/dilate trimap) also
exists batched in torch for the training device: :mod:`mattingkit.data.device_augment`
(``data.augment_on``), which documents where the two differ.

Resampling: images and alphas bilinear (area-averaged when shrinking by more than 1.25x; alias-free
up to 4x), trimaps nearest -- never bilinear. Outside the source, alpha is 0 and the foreground is
reflected (or 0, ``AugmentConfig.pad``).

Example:
    >>> from mattingkit.config import DataConfig, TrimapConfig, AugmentConfig
    >>> rng = np.random.default_rng(0)
    >>> alpha = np.zeros((200, 300), np.float32); alpha[50:150, 80:220] = 1; alpha[50:150, 79] = 0.5
    >>> sample = {"fg": np.full((200, 300, 3), 0.8, np.float32), "alpha": alpha,
    ...           "bg": np.zeros((120, 160, 3), np.float32)}
    >>> pipe = build_train_pipeline(DataConfig(crop_sizes=[96], image_size=64), TrimapConfig(), AugmentConfig())
    >>> out = pipe(sample, rng)
    >>> out["image"].shape, out["alpha"].shape, sorted(set(np.unique(out["trimap"])) - {0.0, 0.5, 1.0})
    ((64, 64, 3), (64, 64), [])
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from ..compose import composite
from ..trimap import random_trimap

if TYPE_CHECKING:  # pragma: no cover
    from ..config import AugmentConfig, DataConfig, TrimapConfig

Sample = dict[str, Any]

#: Which geometric layer each array follows.
LAYERS = {"fg": "fg", "alpha": "fg", "image": "fg", "trimap": "fg", "fg2": "fg2", "alpha2": "fg2", "bg": "bg"}
ALPHA_KEYS = ("alpha", "alpha2")
PAD_MODES = ("reflect", "zero")
#: Alpha values this close to 0 or 1 after resampling are snapped to it (float interpolation of an
#: all-opaque neighbourhood can give 0.99999994, which would turn definite fg into unknown).
SNAP = 1e-4
#: Shrinking by more than this factor goes through an area-averaging resize (no aliasing).
AREA_ABOVE = 1.25
MAX_SUPERSAMPLE = 4.0
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def check_prob(p: Any, name: str) -> float:
    """``p`` as a float when it is a probability in [0, 1], else ``ValueError`` naming ``name``.

    Example:
        >>> check_prob(0.25, "augment.densify")
        0.25
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(r: Any, name: str, low: float = 0.0) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers [min, max], got {r!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < low or b < a:
        raise ValueError(f"{name} must be [min, max] with {low} <= min <= max, got {r!r}")
    return a, b


def _check_image(x: Any, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"{name} must be a float32 HxWx3 array, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    return x.astype(np.float32, copy=False)


def _check_matte(x: Any, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError(f"{name} must be a float32 HxW array, got {getattr(x, 'shape', type(x).__name__)}")
    return x.astype(np.float32, copy=False)


def check_augment_config(cfg: "AugmentConfig") -> None:
    """Raise ``ValueError`` naming the key when an :class:`~mattingkit.config.AugmentConfig` value is invalid.

    Example:
        >>> from mattingkit.config import AugmentConfig
        >>> check_augment_config(AugmentConfig(two_fg_prob=1.5))
        Traceback (most recent call last):
        ...
        ValueError: augment.two_fg_prob must be a probability in [0, 1], got 1.5
    """
    if cfg.rotation < 0 or cfg.rotation > 180:
        raise ValueError(f"augment.rotation must be in [0, 180] degrees, got {cfg.rotation}")
    _check_range(cfg.scale, "augment.scale", low=1e-3)
    if not 0 <= cfg.shear < 80:
        raise ValueError(f"augment.shear must be in [0, 80) degrees, got {cfg.shear}")
    if not 0 <= cfg.hue <= 180:
        raise ValueError(f"augment.hue must be in [0, 180] degrees, got {cfg.hue}")
    _check_range(cfg.saturation, "augment.saturation")
    _check_range(cfg.value, "augment.value")
    if cfg.pad not in PAD_MODES:
        raise ValueError(f"augment.pad must be one of {', '.join(PAD_MODES)}, got {cfg.pad!r}")
    check_prob(cfg.two_fg_prob, "augment.two_fg_prob")
    check_prob(cfg.trimap_dropout, "augment.trimap_dropout")
    check_prob(cfg.densify, "augment.densify")


# --------------------------------------------------------------------------------------------
# Geometry: 3x3 matrices on pixel-centre coordinates (x right, y down)
# --------------------------------------------------------------------------------------------
def translation(ty: float, tx: float) -> np.ndarray:
    """The 3x3 matrix moving a point by ``(ty, tx)``.

    Example:
        >>> (translation(2, 3) @ [0, 0, 1]).tolist()
        [3.0, 2.0, 1.0]
    """
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def scale_matrix(sy: float, sx: float) -> np.ndarray:
    """Resizing by ``(sy, sx)`` with pixel-centre alignment (as ``cv2.resize``): ``x' = (x + .5) sx - .5``.

    Example:
        >>> (scale_matrix(2, 2) @ [-0.5, -0.5, 1]).tolist()   # the image corner stays the corner
        [-0.5, -0.5, 1.0]
    """
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def resize_matrix(src_hw: Sequence[int], dst_hw: Sequence[int]) -> np.ndarray:
    """The matrix of resizing an ``src_hw`` image to ``dst_hw`` (pixel-centre aligned)."""
    return scale_matrix(dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1])


def affine_matrix(shape: Sequence[int], angle: float = 0.0, scale: float = 1.0, shear: float = 0.0,
                  flip: bool = False) -> np.ndarray:
    """Rotation (degrees, counter-clockwise on screen), isotropic scale, horizontal shear (degrees)
    and horizontal flip, about the centre of an image of ``shape`` (H, W).

    Example:
        >>> m = affine_matrix((5, 5), flip=True)
        >>> (m @ [0, 2, 1]).round(6).tolist()             # left edge -> right edge
        [4.0, 2.0, 1.0]
    """
    h, w = shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    sh = np.array([[1.0, math.tan(math.radians(shear)), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sc = np.diag([scale, scale, 1.0])
    fl = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    return translation(cy, cx) @ rot @ sh @ sc @ fl @ translation(-cy, -cx)


def random_affine_matrix(shape: Sequence[int], rng: np.random.Generator, rotation: float = 15.0,
                         scale: Sequence[float] = (0.8, 1.25), shear: float = 10.0,
                         flip: bool = True) -> np.ndarray:
    """A random :func:`affine_matrix`: angle in ``[-rotation, rotation]``, scale log-uniform in
    ``scale``, shear in ``[-shear, shear]``, flip with probability 1/2 (when ``flip``).

    Always draws four numbers from ``rng`` (the stream does not depend on the options).

    Example:
        >>> m = random_affine_matrix((64, 64), np.random.default_rng(0), rotation=0, scale=(1, 1), shear=0, flip=False)
        >>> np.allclose(m, np.eye(3))
        True
    """
    rng = _check_rng(rng)
    s0, s1 = _check_range(scale, "scale", low=1e-3)
    u = rng.random(4)
    angle = (2 * u[0] - 1) * rotation
    s = math.exp(math.log(s0) + u[1] * (math.log(s1) - math.log(s0)))
    sh = (2 * u[2] - 1) * shear
    return affine_matrix(shape, angle, s, sh, bool(flip and u[3] < 0.5))


def border_mode(mode: str) -> int:
    """The OpenCV border flag of a border name: ``"zero"``, ``"reflect"`` (BORDER_REFLECT_101) or ``"replicate"``.

    Example:
        >>> border_mode("zero") == cv2.BORDER_CONSTANT
        True
    """
    return {"zero": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101,
            "replicate": cv2.BORDER_REPLICATE}[mode]


def _near_int(v: float) -> bool:
    return abs(v - round(v)) < 1e-6


def sample_region(m: np.ndarray, out_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)``: the source pixels an ``out_hw`` output samples through ``m`` (bilinear),
    with a 2-pixel margin; may reach outside the source.

    Example:
        >>> sample_region(translation(-3, -4), (4, 4))        # a 4x4 crop at (y 3, x 4)
        (0, 1, 10, 11)
    """
    oh, ow = out_hw
    inv = np.linalg.inv(m)
    xs, ys, _ = inv @ np.array([[-0.5, ow - 0.5, -0.5, ow - 0.5], [-0.5, -0.5, oh - 0.5, oh - 0.5], [1, 1, 1, 1]])
    return math.floor(ys.min()) - 2, math.floor(xs.min()) - 2, math.ceil(ys.max()) + 3, math.ceil(xs.max()) + 3


def cut_part(src: np.ndarray, region: tuple[int, int, int, int], bmode: int) -> np.ndarray | None:
    """``src`` over ``region`` (y0, x0, y1, x1), the part outside ``src`` filled as a warp with
    border ``bmode`` would read it (``cv2.copyMakeBorder``: zeros, or reflected / replicated about
    the source's own edges). None when that cannot be done from the part alone (no overlap, or a
    reflection reaching past the part's far side).

    Example:
        >>> cut_part(np.arange(4, dtype=np.uint8).reshape(1, 4), (0, -1, 1, 3), cv2.BORDER_CONSTANT).tolist()
        [[0, 0, 1, 2]]
    """
    y0, x0, y1, x1 = region
    h, w = src.shape[:2]
    iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if iy0 >= iy1 or ix0 >= ix1:
        return None
    top, bottom, left, right = iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1
    part = src[iy0:iy1, ix0:ix1]
    if not (top or bottom or left or right):
        return part
    if bmode != cv2.BORDER_CONSTANT and (max(top, bottom) >= iy1 - iy0 or max(left, right) >= ix1 - ix0):
        return None
    return cv2.copyMakeBorder(part, top, bottom, left, right, bmode, value=0)


def warp(src: np.ndarray, matrix: np.ndarray, out_hw: Sequence[int], interp: str = "linear",
         border: str = "zero") -> np.ndarray:
    """Resample ``src`` into an ``out_hw`` array through ``matrix`` (3x3, source -> output pixels).

    - ``interp="nearest"`` for trimaps / labels (values are only ever copied), ``"linear"`` for
      images and alphas; shrinking by more than 1.25x warps to an intermediate size and
      area-averages down (``cv2.INTER_AREA``), so thin structures do not alias.
    - ``border``: ``"zero"``, ``"reflect"`` or ``"replicate"`` for pixels outside ``src``.
    - An axis-aligned crop and/or resize that stays inside ``src`` is done by slicing and
      ``cv2.resize`` (exact copies for a plain crop).

    Example:
        >>> a = np.arange(16, dtype=np.float32).reshape(4, 4)
        >>> warp(a, translation(-1, -2), (2, 2)).tolist()      # the crop starting at row 1, col 2
        [[6.0, 7.0], [10.0, 11.0]]
    """
    if interp not in ("linear", "nearest"):
        raise ValueError(f"interp must be 'linear' or 'nearest', got {interp!r}")
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"output size must be positive, got {out_hw}")
    m = np.asarray(matrix, np.float64)
    h, w = src.shape[:2]
    if m[0, 1] == 0 and m[1, 0] == 0 and m[0, 0] > 0 and m[1, 1] > 0:
        sx, sy = m[0, 0], m[1, 1]
        x0, y0 = (-0.5 - m[0, 2]) / sx + 0.5, (-0.5 - m[1, 2]) / sy + 0.5
        ws, hs = ow / sx, oh / sy
        if all(_near_int(v) for v in (x0, y0, ws, hs)):
            x0, y0, ws, hs = int(round(x0)), int(round(y0)), int(round(ws)), int(round(hs))
            if x0 >= 0 and y0 >= 0 and x0 + ws <= w and y0 + hs <= h:
                crop = src[y0:y0 + hs, x0:x0 + ws]
                if (hs, ws) == (oh, ow):
                    return crop.copy()
                if interp == "nearest":
                    flag = _NEAREST
                else:
                    flag = cv2.INTER_AREA if (hs > oh or ws > ow) else cv2.INTER_LINEAR
                return cv2.resize(crop, (ow, oh), interpolation=flag)
    bmode = border_mode(border)
    if interp == "nearest":
        return cv2.warpAffine(src, m[:2], (ow, oh), flags=cv2.INTER_NEAREST, borderMode=bmode, borderValue=0)
    # Only the source region the output samples from (with a margin) is touched: warp from that
    # view, padded as the border mode would pad it where it sticks out (see cut_part).
    region = sample_region(m, (oh, ow))
    ry0, rx0, ry1, rx1 = region
    if (rx1 - rx0) * (ry1 - ry0) < h * w:
        part = cut_part(src, region, bmode)
        if part is not None:
            src, m = part, m @ translation(ry0, rx0)
    # OpenCV's bilinear warp has a vectorised 4-channel path but not a 3-channel one: an RGB
    # uint8 source warps faster as RGBA (the conversion is cheap at 1 byte per sample)
    rgb = src.ndim == 3 and src.shape[2] == 3 and src.dtype == np.uint8
    if rgb:
        src = cv2.cvtColor(src, cv2.COLOR_RGB2RGBA)
    det = abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])
    shrink = 1.0 / math.sqrt(det) if det > 0 else 1.0
    if shrink > AREA_ABOVE:
        k = min(shrink, MAX_SUPERSAMPLE)
        mh, mw = max(1, round(oh * k)), max(1, round(ow * k))
        mid = cv2.warpAffine(src, (scale_matrix(mh / oh, mw / ow) @ m)[:2], (mw, mh), flags=cv2.INTER_LINEAR,
                             borderMode=bmode, borderValue=0)
        out = cv2.resize(mid, (ow, oh), interpolation=cv2.INTER_AREA)
    else:
        out = cv2.warpAffine(src, m[:2], (ow, oh), flags=cv2.INTER_LINEAR, borderMode=bmode, borderValue=0)
    return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB) if rgb else out


def warp_with_alpha(rgb: np.ndarray, alpha: np.ndarray, matrix: np.ndarray, out_hw: Sequence[int],
                    border: str = "reflect") -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`warp` (linear) of an ``HxWx3`` uint8 image (``border`` outside it) and its ``HxW``
    uint8 alpha (zero outside) as one 4-channel warp: the same values as the two warps, for about
    the cost of one. The region the output samples is cut out of each and padded per its own
    border mode first. Returns ``(rgb_out, alpha_out)`` (uint8), or None when the inputs are not
    such a pair, the region is not smaller than the source or its padding cannot be made from it
    (then warp them separately).

    Example:
        >>> rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        >>> a = rgb[..., 0].copy(); m = affine_matrix((40, 40), angle=10) @ translation(-10, -10)
        >>> f, fa = warp_with_alpha(rgb, a, m, (16, 16))
        >>> np.array_equal(f, warp(rgb, m, (16, 16))) and np.array_equal(fa, warp(a, m, (16, 16)))
        True
    """
    if not (rgb.dtype == alpha.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
            and alpha.shape == rgb.shape[:2]):
        return None
    oh, ow = int(out_hw[0]), int(out_hw[1])
    m = np.asarray(matrix, np.float64)
    try:
        region = sample_region(m, (oh, ow))
    except np.linalg.LinAlgError:
        return None
    if (region[2] - region[0]) * (region[3] - region[1]) >= alpha.size:
        return None                                 # (as warp(): no cut when the region is not smaller)
    rgb_part = cut_part(rgb, region, border_mode(border))
    a_part = cut_part(alpha, region, cv2.BORDER_CONSTANT)
    if rgb_part is None or a_part is None:
        return None
    # (cvtColor + insertChannel, and back with cvtColor + extractChannel: several times faster than
    # cv2.merge of a 3- and a 1-channel array, or numpy on the strided channel views)
    rgba = cv2.insertChannel(a_part, cv2.cvtColor(rgb_part, cv2.COLOR_RGB2RGBA), 3)
    out = warp(rgba, m @ translation(region[0], region[1]), (oh, ow), "linear", "zero")
    return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB), cv2.extractChannel(out, 3)


def resize_image(image: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Resize an image or alpha (area when shrinking, bilinear when enlarging).

    Example:
        >>> resize_image(np.ones((8, 6), np.float32), (4, 3)).shape
        (4, 3)
    """
    return warp(image, resize_matrix(image.shape[:2], out_hw), out_hw, "linear")


def resize_trimap(trimap: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Resize a trimap with nearest neighbour: the values stay exactly {0, 0.5, 1}.

    Example:
        >>> t = np.array([[0, 0.5], [0.5, 1]], np.float32)
        >>> resize_trimap(t, (4, 4))[::2, ::2].tolist()
        [[0.0, 0.5], [0.5, 1.0]]
    """
    return warp(trimap, resize_matrix(trimap.shape[:2], out_hw), out_hw, "nearest")


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (exactly as :mod:`mattingkit.io` divides: ``x / 255``); float32 as is.

    Example:
        >>> to_float(np.array([0, 128, 255], np.uint8)).tolist() == [0.0, np.float32(128) / 255, 1.0]
        True
    """
    if x.dtype == np.uint8:
        return np.divide(x, np.float32(255.0), dtype=np.float32)
    return x.astype(np.float32, copy=False)


def snap_alpha(alpha: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and snap values within 1e-4 of 0 or 1 to it (in place; returns ``alpha``)."""
    np.clip(alpha, 0.0, 1.0, out=alpha)
    alpha[alpha < SNAP] = 0.0
    alpha[alpha > 1.0 - SNAP] = 1.0
    return alpha


@dataclass
class Geometry:
    """Pending geometry of a sample: ``canvas`` (H, W) of the foreground frame, a 3x3 ``matrices``
    entry per layer (source pixels -> canvas pixels), and the crop ``window`` (y0, x0, h, w) on the
    canvas (None = the whole canvas)."""

    canvas: tuple[int, int]
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    window: tuple[int, int, int, int] | None = None


def geometry(sample: Sample) -> Geometry:
    """The sample's :class:`Geometry`, created on first use: the canvas is the shape of ``alpha``
    (else ``fg`` / ``image``); ``fg`` maps identically; ``fg2`` is resized onto the canvas."""
    g = sample.get("geometry")
    if g is None:
        ref = next((sample[k] for k in ("alpha", "fg", "image") if isinstance(sample.get(k), np.ndarray)), None)
        if ref is None:
            raise ValueError("sample has no alpha, fg or image array to define the canvas")
        canvas = (int(ref.shape[0]), int(ref.shape[1]))
        g = Geometry(canvas, {"fg": np.eye(3)})
        second = sample.get("alpha2", sample.get("fg2"))
        if isinstance(second, np.ndarray):
            g.matrices["fg2"] = resize_matrix(second.shape[:2], canvas)
        sample["geometry"] = g
    return g


# --------------------------------------------------------------------------------------------
# Pure pixel functions
# --------------------------------------------------------------------------------------------
def _channels(x: np.ndarray, n: int) -> np.ndarray:
    """An ``HxW`` array repeated into ``HxWxn``: numpy multiplies same-shape arrays several times
    faster than it broadcasts an ``HxWx1`` operand over a short channel axis (same values)."""
    if n == 1:
        return x[..., None]
    return cv2.merge([x] * n) if n <= 4 else np.repeat(x[..., None], n, axis=2)


def merge_foregrounds(fg1: np.ndarray, alpha1: np.ndarray, fg2: np.ndarray, alpha2: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Put foreground 1 in front of foreground 2: ``alpha = 1 - (1 - a1)(1 - a2)`` and
    ``fg = (a1 fg1 + (1 - a1) a2 fg2) / alpha`` (``fg1`` where ``alpha == 0``), so that compositing
    the result over any background equals compositing fg2 and then fg1 over it.

    Example:
        >>> fg, a = merge_foregrounds(np.full((1, 1, 3), 1.0, np.float32), np.full((1, 1), .5, np.float32),
        ...                           np.zeros((1, 1, 3), np.float32), np.full((1, 1), .5, np.float32))
        >>> float(a[0, 0]), round(float(fg[0, 0, 0]), 6)     # 1-(.5)(.5); (.5*1 + .5*.5*0)/.75
        (0.75, 0.666667)
    """
    fg1, fg2 = _check_image(fg1, "fg1"), _check_image(fg2, "fg2")
    a1, a2 = _check_matte(alpha1, "alpha1"), _check_matte(alpha2, "alpha2")
    if not (fg1.shape == fg2.shape and a1.shape == a2.shape == fg1.shape[:2]):
        raise ValueError(f"shapes differ: fg1 {fg1.shape}, alpha1 {a1.shape}, fg2 {fg2.shape}, alpha2 {a2.shape}")
    w2 = (1.0 - a1) * a2
    alpha = a1 + w2                                  # == 1 - (1 - a1)(1 - a2)
    # fg = c1 fg1 + c2 fg2 with c1 = a1 / alpha, c2 = w2 / alpha, c1 + c2 = 1 (c2 = 0 where alpha = 0)
    c2 = np.divide(w2, alpha, out=np.zeros_like(alpha), where=alpha > 0)
    fg = fg2 - fg1
    fg *= _channels(c2, fg.shape[2])
    fg += fg1
    np.clip(fg, 0.0, 1.0, out=fg)
    return fg, np.clip(alpha, 0.0, 1.0, out=alpha)


def hsv_jitter(image: np.ndarray, hue_shift: float = 0.0, saturation: float = 1.0,
               value: float = 1.0) -> np.ndarray:
    """Shift the hue by ``hue_shift`` degrees and scale saturation and value; the result stays in [0, 1].

    Example:
        >>> red = np.zeros((1, 1, 3), np.float32); red[..., 0] = 1
        >>> hsv_jitter(red, hue_shift=120).round(4).tolist()   # red -> green
        [[[0.0, 1.0, 0.0]]]
    """
    img = np.ascontiguousarray(_check_image(image, "image"))
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))   # float: H in [0, 360), S, V in [0, 1]
    if hue_shift:
        h += np.float32(hue_shift % 360.0)
        np.subtract(h, np.float32(360.0), out=h, where=h >= 360.0)
    if saturation != 1.0:
        s *= np.float32(saturation)
        np.minimum(s, 1.0, out=s)
    if value != 1.0:
        v *= np.float32(value)
        np.minimum(v, 1.0, out=v)
    out = cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)
    return np.clip(out, 0.0, 1.0, out=out)


def soft_alpha_mask(alpha: np.ndarray) -> np.ndarray:
    """Where a trimap made from ``alpha`` is surely unknown: the soft pixels (0 < alpha < 1); for a
    hard (binary) alpha, the object's boundary pixels. Empty when alpha is all 0 or all 1.
    ``alpha`` may be float in [0, 1] or uint8 (255 = opaque).

    Example:
        >>> a = np.zeros((5, 5), np.float32); a[1:4, 1:4] = 1
        >>> int(soft_alpha_mask(a).sum())                   # the 8 boundary pixels of the 3x3 square
        8
    """
    if not isinstance(alpha, np.ndarray) or alpha.ndim != 2:
        raise ValueError(f"alpha must be an HxW array, got {getattr(alpha, 'shape', type(alpha).__name__)}")
    full = 255 if alpha.dtype == np.uint8 else 1.0
    soft = (alpha > 0) & (alpha < full)
    if soft.any():
        return soft
    inside = (alpha >= full).view(np.uint8)
    if not inside.any() or inside.all():
        return np.zeros(alpha.shape, bool)
    return (inside - cv2.erode(inside, np.ones((3, 3), np.uint8))).astype(bool)


def unknown_point(alpha: np.ndarray, rng: np.random.Generator, matrix: np.ndarray | None = None,
                  canvas: Sequence[int] | None = None, max_tries: int = 8) -> tuple[float, float] | None:
    """A random pixel of :func:`soft_alpha_mask`, mapped through ``matrix`` to the canvas: ``(y, x)``,
    or None when there is none (or none of ``max_tries`` draws lands inside the canvas).

    Example:
        >>> a = np.zeros((9, 9), np.float32); a[4, 6] = 0.5
        >>> unknown_point(a, np.random.default_rng(0))
        (4.0, 6.0)
    """
    rng = _check_rng(rng)
    mask = soft_alpha_mask(alpha)
    # the k-th unknown pixel in row-major order without listing them all: per-row counts
    rows = cv2.reduce(mask.view(np.uint8), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)
    ends = np.cumsum(rows)
    total = int(ends[-1])
    if total == 0:
        return None
    h, w = mask.shape
    ch, cw = canvas if canvas is not None else (h, w)
    m = np.eye(3) if matrix is None else np.asarray(matrix, np.float64)
    for _ in range(max_tries):
        k = int(rng.integers(total))
        y = int(np.searchsorted(ends, k, side="right"))
        x = int(np.flatnonzero(mask[y])[k - (ends[y] - rows[y])])
        px, py, _ = m @ (x, y, 1.0)
        if -0.5 <= py < ch - 0.5 and -0.5 <= px < cw - 0.5:
            return float(py), float(px)
    return None


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def _lowpass(x: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian blur computed at reduced resolution (cheap whatever ``sigma``)."""
    h, w = x.shape[:2]
    f = max(1, int(sigma // 4))
    if f == 1:
        return _gauss(x, sigma)
    small = cv2.resize(x, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = _gauss(small, sigma / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def densify(alpha: np.ndarray, image: np.ndarray, strength: float, rng: np.random.Generator,
            background: Sequence[float] = (28 / 255, 35 / 255)) -> np.ndarray:
    """Turn a hard cut-out alpha into a soft, density-like mask (the ecom.tech competition's style).

    ``dense = b + (1 - b) * blur(alpha * interior)`` where ``b`` is a grey background level drawn in
    ``background`` (the organisers' masks sit at 28-35/255 outside objects) and ``interior`` is a
    density inside the object made of a low-frequency luminance term (the object's local brightness
    relative to its brightest part, over a random floor) plus multi-scale difference-of-Gaussians
    texture of the image; a small random blur softens the outline. The result is
    ``(1 - strength) * alpha + strength * dense``; ``strength == 0`` returns ``alpha`` itself
    (bit-exact, no random numbers drawn).

    Example:
        >>> a = np.zeros((64, 64), np.float32); a[16:48, 16:48] = 1
        >>> im = np.random.default_rng(1).random((64, 64, 3)).astype(np.float32)
        >>> densify(a, im, 0.0, np.random.default_rng(0)) is a
        True
        >>> d = densify(a, im, 1.0, np.random.default_rng(0))
        >>> bool(28 / 255 - 1e-6 <= d[0, 0] <= 35 / 255 + 1e-6), bool(d[32, 32] > d[0, 0])
        (True, True)
    """
    s = check_prob(strength, "strength")
    if s == 0.0:
        return alpha
    rng = _check_rng(rng)
    a = _check_matte(alpha, "alpha")
    im = _check_image(image, "image")
    if im.shape[:2] != a.shape:
        raise ValueError(f"image {im.shape} and alpha {a.shape} differ in size")
    b0, b1 = _check_range(background, "background")
    h, w = a.shape
    unit = max(h, w) / 512.0
    u = rng.random(6)
    lum = np.ascontiguousarray(im @ LUMA, dtype=np.float32)
    # low-frequency luminance inside the object (normalised convolution: the bg does not leak in)
    sig_low = unit * (12.0 + 12.0 * u[0])
    num = _lowpass(lum * a, sig_low)
    den = _lowpass(a, sig_low)
    low = num / np.maximum(den, 1e-3)
    inside = a > 0.5
    top = float(low[inside].max()) if inside.any() else float(low.max(initial=0.0))
    low = np.clip(low / max(top, 1e-3), 0.0, 1.0)
    # multi-scale band-pass texture
    tex = np.zeros_like(lum)
    for k in (1.0, 2.0, 4.0):
        sk = max(0.5, k * unit)
        tex += np.abs(_gauss(lum, sk) - _gauss(lum, 2 * sk))
    ref = float(tex[inside].mean()) if inside.any() else float(tex.mean())
    tex = np.clip(tex / max(3.0 * ref, 1e-4), 0.0, 1.0)
    floor = 0.35 + 0.3 * u[1]
    gain = 0.1 + 0.2 * u[2]
    interior = np.clip(floor + (1.0 - floor) * low + gain * tex, 0.0, 1.0)
    obj = _gauss(a * interior, max(0.5, unit * (1.0 + 2.0 * u[3])))
    level = b0 + (b1 - b0) * u[4]
    dense = level + (1.0 - level) * obj
    out = (1.0 - s) * a + s * dense
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Transforms (callables on a sample dict)
# --------------------------------------------------------------------------------------------
class Transform:
    """Base: ``t(sample, rng) -> sample``. Transforms may modify the dict in place and return it."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order (``None`` entries are skipped).

    Example:
        >>> Compose([None, TrimapDropout(1.0)])({"trimap": np.zeros((2, 2), np.float32)},
        ...                                     np.random.default_rng(0))["trimap"].tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """

    def __init__(self, transforms: Iterable[Callable | None]):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _check_rng(rng)
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([\n" + "".join(f"  {t!r},\n" for t in self.transforms) + "])"


class RandomAffine(Transform):
    """Random rotation / scale / shear / horizontal flip of the foreground (and fg2, with the same
    matrix), about the canvas centre. Lazy: composes into the geometry; :class:`Render` warps
    (bilinear; zero alpha outside the source).

    Example:
        >>> s = RandomAffine(rotation=0, scale=(2, 2), shear=0, flip=False)(
        ...     {"alpha": np.zeros((8, 8), np.float32)}, np.random.default_rng(0))
        >>> np.allclose(s["geometry"].matrices["fg"][:2, :2], 2 * np.eye(2))
        True
    """

    def __init__(self, rotation: float = 15.0, scale: Sequence[float] = (0.8, 1.25), shear: float = 10.0,
                 flip: bool = True):
        self.rotation, self.scale, self.shear, self.flip = float(rotation), tuple(scale), float(shear), bool(flip)
        _check_range(self.scale, "scale", low=1e-3)

    @classmethod
    def from_config(cls, cfg: "AugmentConfig") -> "RandomAffine":
        if not cfg.affine:
            return cls(rotation=0.0, scale=(1.0, 1.0), shear=0.0, flip=cfg.flip)
        return cls(cfg.rotation, tuple(cfg.scale), cfg.shear, cfg.flip)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        g = geometry(sample)
        m = random_affine_matrix(g.canvas, rng, self.rotation, self.scale, self.shear, self.flip)
        for layer in ("fg", "fg2"):
            if layer in g.matrices:
                g.matrices[layer] = m @ g.matrices[layer]
        return sample


def _start(n: int, c: int, rng: np.random.Generator) -> int:
    """Random window start along one axis (centred, with padding, when the canvas is smaller)."""
    return int(rng.integers(0, n - c + 1)) if n >= c else (n - c) // 2


class CropAroundUnknown(Transform):
    """Choose a square crop window of a random size from ``crop_sizes``, centred on a random
    unknown pixel (see :func:`soft_alpha_mask`) of the (transformed) foreground, shifted to stay inside
    the canvas when it fits. No unknown pixel -> a random crop (centred with padding when the
    canvas is smaller than the crop). Lazy: only records the window.

    Example:
        >>> a = np.zeros((100, 100), np.float32); a[90, 10] = 0.5
        >>> s = CropAroundUnknown([32])({"alpha": a}, np.random.default_rng(0))
        >>> s["geometry"].window                             # pixel (90, 10) lies inside
        (68, 0, 32, 32)
    """

    def __init__(self, crop_sizes: Sequence[int]):
        sizes = [int(c) for c in crop_sizes]
        if not sizes or any(c < 1 for c in sizes):
            raise ValueError(f"crop_sizes must be a non-empty list of positive sizes, got {crop_sizes!r}")
        self.crop_sizes = sizes

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        g = geometry(sample)
        h, w = g.canvas
        c = self.crop_sizes[int(rng.integers(len(self.crop_sizes)))]
        src = sample.get("alpha")
        point = None
        if isinstance(src, np.ndarray):
            point = unknown_point(src, rng, g.matrices["fg"], g.canvas)
        if point is None:
            y0, x0 = _start(h, c, rng), _start(w, c, rng)
        else:
            cy, cx = int(round(point[0])), int(round(point[1]))
            y0 = min(max(cy - c // 2, min(0, h - c)), max(0, h - c))
            x0 = min(max(cx - c // 2, min(0, w - c)), max(0, w - c))
        g.window = (y0, x0, c, c)
        return sample


class CoverBackground(Transform):
    """Scale the background (keeping its aspect) to cover the foreground canvas -- and the crop
    window, if it sticks out -- and place it at a random offset (``random=False``: centred). Lazy.

    Example:
        >>> s = {"alpha": np.zeros((10, 20), np.float32), "bg": np.zeros((5, 5, 3), np.float32)}
        >>> m = CoverBackground(random=False)(s, np.random.default_rng(0))["geometry"].matrices["bg"]
        >>> float(m[0, 0])                                   # 5 px -> 20 px wide
        4.0
    """

    def __init__(self, random: bool = True):
        self.random = bool(random)

    def __call__(self, sample: Sample, rng: np.random.Generator | None) -> Sample:
        bg = sample.get("bg")
        if not isinstance(bg, np.ndarray):
            return sample
        g = geometry(sample)
        h, w = g.canvas
        y0, x0, y1, x1 = 0, 0, h, w
        if g.window is not None:
            wy, wx, wh, ww = g.window
            y0, x0, y1, x1 = min(0, wy), min(0, wx), max(h, wy + wh), max(w, wx + ww)
        rh, rw = y1 - y0, x1 - x0
        hb, wb = bg.shape[:2]
        s = max(rh / hb, rw / wb)
        free_y, free_x = max(0.0, hb * s - rh), max(0.0, wb * s - rw)
        if self.random:
            u = _check_rng(rng).random(2)
            oy, ox = round(u[0] * free_y), round(u[1] * free_x)
        else:
            oy, ox = round(free_y / 2), round(free_x / 2)
        g.matrices["bg"] = translation(y0 - oy, x0 - ox) @ scale_matrix(s, s)
        return sample


class Render(Transform):
    """Materialise the geometry: warp every array of the sample from its source into the crop
    window, resized to ``out_size`` (an int for a square, ``(H, W)``, or None for the window's own
    size). Trimaps nearest, images / alphas bilinear-or-area; alpha 0 outside the source,
    foreground reflected (``pad="reflect"``) or 0 (``pad="zero"``). uint8 sources are warped as
    uint8 and only the output converted (:func:`to_float`); every output is float32, except the
    keys in ``keep_8bit`` (only ``("bg",)``), which stay uint8 when their source is (the compact
    training items send them as they are; :class:`Composite` converts them for the formula). Alphas
    are snapped (:func:`snap_alpha`). A background without a placement is centred (:class:`CoverBackground`).

    Example:
        >>> a = np.zeros((40, 40), np.float32); a[10:30, 10:30] = 1
        >>> Render(20)({"alpha": a}, None)["alpha"].shape
        (20, 20)
    """

    def __init__(self, out_size: int | Sequence[int] | None = None, pad: str = "reflect",
                 keep_8bit: Sequence[str] = ()):
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
        if set(keep_8bit) - {"bg"}:   # the colour transforms after Render need a float fg
            raise ValueError(f"keep_8bit may only hold 'bg', got {tuple(keep_8bit)}")
        self.out_size = out_size
        self.pad = pad
        self.keep_8bit = tuple(keep_8bit)

    def _out_hw(self, window_hw: tuple[int, int]) -> tuple[int, int]:
        if self.out_size is None:
            return window_hw
        if isinstance(self.out_size, numbers.Integral):
            return int(self.out_size), int(self.out_size)
        oh, ow = self.out_size
        return int(oh), int(ow)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        g = geometry(sample)
        if isinstance(sample.get("bg"), np.ndarray) and "bg" not in g.matrices:
            CoverBackground(random=False)(sample, None)
        sample.pop("geometry")
        y0, x0, h, w = g.window if g.window is not None else (0, 0, *g.canvas)
        oh, ow = self._out_hw((h, w))
        view = scale_matrix(oh / h, ow / w) @ translation(-y0, -x0)
        done = set()
        for rgb_key, a_key in (("fg", "alpha"), ("fg2", "alpha2")):   # a foreground and its alpha in one warp
            rgb, a = sample.get(rgb_key), sample.get(a_key)
            if isinstance(rgb, np.ndarray) and isinstance(a, np.ndarray) and LAYERS[rgb_key] in g.matrices:
                pair = warp_with_alpha(rgb, a, view @ g.matrices[LAYERS[rgb_key]], (oh, ow), self.pad)
                if pair is not None:
                    sample[rgb_key], sample[a_key] = to_float(pair[0]), to_float(pair[1])
                    done.update((rgb_key, a_key))
        for key, layer in LAYERS.items():
            src = sample.get(key)
            if not isinstance(src, np.ndarray) or key in done:
                continue
            if layer not in g.matrices:
                raise ValueError(f"no geometry for layer {layer!r} (array {key!r})")
            m = view @ g.matrices[layer]
            if key == "trimap":
                if src.dtype == np.uint8:
                    raise ValueError("trimap must be float {0, 0.5, 1} (mattingkit.io.read_trimap), not uint8")
                sample[key] = warp(src, m, (oh, ow), "nearest", "zero").astype(np.float32, copy=False)
            elif key in ALPHA_KEYS:
                out = to_float(warp(src, m, (oh, ow), "linear", "zero"))
                # 8-bit sources resample to exact multiples of 1/255: nothing to snap
                sample[key] = out if src.dtype == np.uint8 else snap_alpha(out)
            else:
                border = "reflect" if key == "bg" else self.pad
                out = warp(src, m, (oh, ow), "linear", border)
                sample[key] = out if key in self.keep_8bit else to_float(out)
        return sample


class MergeForegrounds(Transform):
    """Two-foreground composite (:func:`merge_foregrounds`): fg/alpha in front of fg2/alpha2, which
    are then removed. A no-op without ``fg2``. (Whether a sample gets a second foreground, with
    probability ``AugmentConfig.two_fg_prob``, is decided when it is loaded.)"""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if "fg2" not in sample:
            return sample
        if "geometry" in sample:
            raise ValueError("MergeForegrounds runs after Render")
        fg2, a2 = sample.pop("fg2"), sample.pop("alpha2")
        sample["fg"], sample["alpha"] = merge_foregrounds(sample["fg"], sample["alpha"], fg2, a2)
        return sample


class HSVJitter(Transform):
    """Random hue shift in ``[-hue, hue]`` degrees and saturation / value scaling in the given ranges
    (:func:`hsv_jitter`), the same for every key in ``keys``.

    Example:
        >>> s = HSVJitter(hue=0, saturation=(1, 1), value=(1, 1))({"fg": np.full((2, 2, 3), .3, np.float32)},
        ...                                                      np.random.default_rng(0))
        >>> np.allclose(s["fg"], 0.3, atol=1e-6)
        True
    """

    def __init__(self, hue: float = 10.0, saturation: Sequence[float] = (0.7, 1.3),
                 value: Sequence[float] = (0.8, 1.2), keys: Sequence[str] = ("fg",)):
        self.hue = float(hue)
        self.saturation = _check_range(saturation, "saturation")
        self.value = _check_range(value, "value")
        self.keys = tuple(keys)

    @classmethod
    def from_config(cls, cfg: "AugmentConfig") -> "HSVJitter":
        return cls(cfg.hue, tuple(cfg.saturation), tuple(cfg.value))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        u = _check_rng(rng).random(3)
        dh = (2 * u[0] - 1) * self.hue
        s = self.saturation[0] + u[1] * (self.saturation[1] - self.saturation[0])
        v = self.value[0] + u[2] * (self.value[1] - self.value[0])
        for k in self.keys:
            if isinstance(sample.get(k), np.ndarray):
                sample[k] = hsv_jitter(sample[k], dh, s, v)
        return sample


class Composite(Transform):
    """``image = alpha * fg + (1 - alpha) * bg`` (:func:`mattingkit.compose.composite`). Without a
    background (a dataset of real photos and no background pool) ``fg`` is the photo: ``bg`` and
    ``image`` become copies of it, which keeps the formula exact."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        fg, alpha = sample["fg"], sample["alpha"]
        if not isinstance(sample.get("bg"), np.ndarray):
            sample["bg"] = fg.copy()
            sample["image"] = fg.copy()
            return sample
        bg = to_float(sample["bg"])          # a uint8 bg (Render keep_8bit) stays uint8 in the sample
        if fg.ndim == 3 and fg.shape == bg.shape and alpha.shape == fg.shape[:2] and fg.flags.c_contiguous \
                and bg.flags.c_contiguous and fg.dtype == bg.dtype == alpha.dtype == np.float32:
            # the same formula, element by element, on the interleaved HxWx3 values seen as
            # Hx3Wx1 (alpha repeated per channel): several times faster than broadcasting HxW alpha
            h, w, c = fg.shape
            image = composite(fg.reshape(h, w * c, 1), bg.reshape(h, w * c, 1),
                              _channels(alpha, c).reshape(h, w * c, 1)).reshape(h, w, c)
        else:
            image = composite(fg, bg, alpha).astype(np.float32, copy=False)
        sample["image"] = np.clip(image, 0.0, 1.0, out=image)
        return sample


class GenerateTrimap(Transform):
    """A fresh random trimap from the (cropped) alpha: :func:`mattingkit.trimap.random_trimap` (the
    method's entry in :data:`mattingkit.trimap.METHODS` draws its parameters)."""

    def __init__(self, trimap_cfg: "TrimapConfig"):
        self.trimap_cfg = trimap_cfg

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample["trimap"] = random_trimap(sample["alpha"], rng, self.trimap_cfg)
        return sample


class TrimapDropout(Transform):
    """With probability ``p``, replace the trimap by an all-unknown one (trimap-free training)."""

    def __init__(self, p: float):
        self.p = check_prob(p, "p")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.p > 0 and _check_rng(rng).random() < self.p:
            sample["trimap"] = np.full(sample["trimap"].shape, 0.5, np.float32)
        return sample


class Densify(Transform):
    """Replace ``alpha`` by :func:`densify` of it (a no-op at ``strength == 0``). Runs after the
    composite and trimap: the *input* is the usual composite, the *target* becomes density-like."""

    def __init__(self, strength: float):
        self.strength = check_prob(strength, "strength")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.strength > 0:
            ref = sample.get("image", sample.get("fg"))
            sample["alpha"] = densify(sample["alpha"], ref, self.strength, rng)
        return sample


def build_train_pipeline(data_cfg: "DataConfig", trimap_cfg: "TrimapConfig", augment_cfg: "AugmentConfig",
                         has_background: bool = True, keep_8bit: Sequence[str] = ()) -> Compose:
    """The training transforms for a config (see the module docstring for the order).

    ``has_background=False`` (real photos, no background pool): no background is placed; the
    (jittered) photo becomes ``image``, ``fg`` and ``bg`` (see :class:`Composite`).
    ``keep_8bit=("bg",)``: an 8-bit background stays uint8 (:class:`Render`; the compact training items).

    Example:
        >>> from mattingkit.config import DataConfig, TrimapConfig, AugmentConfig
        >>> p = build_train_pipeline(DataConfig(), TrimapConfig(), AugmentConfig(hsv_jitter=False))
        >>> [type(t).__name__ for t in p.transforms][:4]
        ['RandomAffine', 'CropAroundUnknown', 'CoverBackground', 'Render']
    """
    check_augment_config(augment_cfg)
    size = int(data_cfg.image_size)
    if size < 1:
        raise ValueError(f"data.image_size must be positive, got {size}")
    return Compose([
        RandomAffine.from_config(augment_cfg),
        CropAroundUnknown(data_cfg.crop_sizes),
        CoverBackground() if has_background else None,
        Render(size, pad=augment_cfg.pad, keep_8bit=keep_8bit),
        MergeForegrounds(),
        HSVJitter.from_config(augment_cfg) if augment_cfg.hsv_jitter else None,
        Composite(),
        GenerateTrimap(trimap_cfg),
        TrimapDropout(augment_cfg.trimap_dropout),
        Densify(augment_cfg.densify),
    ])

"""Training augmentation split in two: the worker cuts uint8 source patches and draws the random
parameters; the training device does the float work on the whole batch (``data.augment_on: device``).

Worker side (:func:`worker_item`, called by :class:`~mattingkit.data.datasets.TrainDataset` for
every item): the geometry of the CPU pipeline (:mod:`mattingkit.data.augment`: ``RandomAffine ->
CropAroundUnknown -> CoverBackground``) is decided exactly as there, from the same generator, and the
remaining random draws are made in the same order (HSV jitter amounts, trimap kernel sizes, trimap
dropout), so an item has the same parameters whichever path renders it. No pixel is resampled: each
layer ships the uint8 part of its decoded source that the output samples (``fg``+``alpha`` as one
4-channel patch, the second foreground likewise, the background), placed top-left in a fixed-size
zero patch so the default collate stacks them, plus the 2x3 matrix from output pixels to patch
pixels. A part larger than the patch, or one shrunk by more than ``augment.AREA_ABOVE`` (1.25x, where
the CPU path area-averages), is first area-resized on the CPU (``cv2.INTER_AREA``, uint8) -- the only
resampling left in the worker.

Device side (:func:`augment_batch`, called on the moved batch): one ``grid_sample`` per layer kind
for the whole batch (affine, flip, crop and resize to ``image_size`` at once), the two-foreground
merge, HSV jitter, compositing and the trimap (the method's torch twin in :data:`mattingkit.trimap.METHODS`:
erode/dilate with each sample's elliptical kernels, exact on binary masks), trimap dropout; it returns the float32 batch dict of
:func:`~mattingkit.data.compact.compact_to_float` (``image``, ``alpha``, ``trimap``, ``fg``, ``bg``,
``unknown``, ``id``). :func:`~mattingkit.data.datasets.batch_to_float` dispatches to it when it sees
such a batch, so the Trainer's ``to_device`` needs no change. Nothing there waits for the device: the
output size, which steps run and the trimap kernels come from the item's host values (:data:`HOST_KEY`, a
JSON string the DataLoader's collate keeps as Python values), never from reading a device tensor back
(``tests/test_device_augment.py`` counts 0 scalar reads per batch; there were 34).

Where the two paths differ (same seeds, CPU tensors; measured on smooth photo-like 120-150 px
sources at 64 px output, ``tests/test_device_augment.py`` bounds each case):

- same operations, within 1/255: no affine and crop = output size (max 1.0/255 in every array,
  identical trimaps; only the two-foreground and background resizes interpolate).
- bilinear warps: ``cv2.warpAffine`` quantises source coordinates to 1/32 px and weights to fixed
  point; ``grid_sample`` is exact float. Both round 8-bit sources to multiples of 1/255 after the
  warp. With rotation / shear / flip / enlarging (no shrink past 1.25x): alpha within 1/255,
  fg x alpha and image within 1.35/255 (2.6/255 on pixel-level noise), identical trimaps in the
  tests. Axis-aligned integer crops are identical (bilinear at integer positions copies).
- an axis-aligned enlarging window inside the source (crop 48 -> 64): the CPU path takes
  ``cv2.resize``, which replicates the source's edge pixel where a warp reflects it: up to 5/255 in
  bg / image along the source's edge (mean 0.2/255).
- shrinking by more than 1.25x (crop larger than ``image_size``, or a source part larger than
  ``PATCH_SCALE`` x the output): the CPU warps to a supersampled size and area-averages down; here
  the source part is area-averaged first (in the worker), then warped. Both alias-free; up to
  20/255 in alpha and 15/255 in image at single pixels (mean 0.5-1.3/255), < 2% of trimap pixels
  differ (an alpha that is 0 or 1 on one path and 1/255 or 254/255 on the other).
- the merged foreground of a two-foreground sample is ``(a1 fg1 + (1 - a1) a2 fg2) / alpha``: where
  alpha is a few /255 the division magnifies the above; compare ``fg * alpha`` (what compositing uses).
- a float32 estimated foreground (``ForegroundCache``) is sent as uint8 (``rint(x * 255)``, <= 0.5/255).
- the result is float32 straight from the device; the CPU path's compact transport rounds image /
  fg / bg to 1/255 and alpha to 1/65535 on the way.
- not supported (``resolve_augment_on`` keeps ``auto`` on the CPU, ``device`` raises): trimap
  methods ``band`` / ``mixed`` (distance transforms), ``augment.densify > 0`` and a guided model
  (``model.guide``: its solve needs the finished crop in the worker).

Example:
    >>> rng = np.random.default_rng(0)
    >>> src = torch.from_numpy(rng.integers(0, 256, (1, 4, 16, 16), dtype=np.uint8))
    >>> inv = torch.tensor([[[1.0, 0, 4], [0, 1.0, 2]]], dtype=torch.float64)   # a crop at (y 2, x 4)
    >>> out = warp_batch(src, inv, (8, 8))
    >>> torch.equal(out * 255, src[:, :, 2:10, 4:12].float())
    True
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .. import compose
from ..names import AUGMENT_ON  # the choices, torch-free for the config check
from ..trimap import METHODS, check_config
from . import augment as A
from .compact import quantise

if TYPE_CHECKING:  # pragma: no cover
    from ..config import AugmentConfig, DataConfig, TrimapConfig

#: Patch side per output side for the foreground layers (room for a rotated, sheared, 1.25x-shrunk
#: window of the default augmentation without a CPU pre-shrink) and for the background (axis-aligned).
PATCH_SCALE = 1.5
BG_PATCH_SCALE = 1.25
FLT_EPSILON = float(np.finfo(np.float32).eps)
#: cv2's HSV -> RGB sector table (which of v, p, q, t each of R, G, B takes, per hue sector).
_R_IDX, _G_IDX, _B_IDX = (0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2)
#: Tensor keys of a device-augment item / batch (besides ``id`` and :data:`HOST_KEY`).
ITEM_KEYS = ("fg_src", "fg2_src", "bg_src", "warp", "has_fg2", "has_bg", "hsv_on", "hsv", "trimap_drop")
#: The item's host-side values (a JSON string, so the DataLoader's collate keeps it a Python value): the
#: output size, the per-item flags, the trimap method with its parameters and drawn values. The device side
#: decides sizes, branches and kernels from these, never by reading a device tensor (no host sync).
HOST_KEY = "host"


# --------------------------------------------------------------------------------------------
# Which path
# --------------------------------------------------------------------------------------------
def guide_reason(guide: str = "none") -> str | None:
    """Why a guided model (``model.guide``) cannot train on device-augmented crops (None without a guide):
    its guide is solved on the host from the finished crop, which only exists on the device there.

    Example:
        >>> guide_reason("none") is None, guide_reason("closed_form").split(":")[0]
        (True, "model.guide='closed_form'")
    """
    if guide in (None, "none"):
        return None
    return (f"model.guide={guide!r}: its classical solve runs per crop in the CPU data workers, and with "
            "data.augment_on=device the crop is composited on the GPU")


def unsupported_reason(trimap_cfg: "TrimapConfig", augment_cfg: "AugmentConfig", guide: str = "none") -> str | None:
    """Why the device path cannot render this config (None when it can); ``guide``: ``model.guide``.

    Example:
        >>> from mattingkit.config import TrimapConfig, AugmentConfig
        >>> unsupported_reason(TrimapConfig(), AugmentConfig()) is None
        True
        >>> unsupported_reason(TrimapConfig(method="band"), AugmentConfig())
        "trimap.method='band' (distance transforms stay on the CPU)"
    """
    entry = METHODS.get(trimap_cfg.method)
    if entry is None or entry.torch_twin is None:
        return f"trimap.method={trimap_cfg.method!r} ({entry.cpu_only if entry else 'not a trimap method'})"
    if augment_cfg.densify > 0:
        return "augment.densify > 0 (stays on the CPU)"
    return guide_reason(guide)


def resolve_augment_on(setting: str, device: torch.device | str | None, trimap_cfg: "TrimapConfig",
                       augment_cfg: "AugmentConfig", guide: str = "none") -> str:
    """``data.augment_on`` -> ``"cpu"`` or ``"device"``: ``auto`` is ``device`` when training on a
    GPU and the config is supported (:func:`unsupported_reason`; a guided model is not), else ``cpu``;
    ``device`` with an unsupported config raises ``ValueError``.

    Example:
        >>> from mattingkit.config import TrimapConfig, AugmentConfig
        >>> resolve_augment_on("auto", "cpu", TrimapConfig(), AugmentConfig())
        'cpu'
        >>> resolve_augment_on("device", "cpu", TrimapConfig(), AugmentConfig())
        'device'
        >>> resolve_augment_on("auto", "cuda", TrimapConfig(), AugmentConfig(), guide="closed_form")
        'cpu'
    """
    if setting not in AUGMENT_ON:
        raise ValueError(f"data.augment_on must be one of {', '.join(AUGMENT_ON)}, got {setting!r}")
    reason = unsupported_reason(trimap_cfg, augment_cfg, guide)
    if setting == "device" and reason:
        raise ValueError(f"data.augment_on='device' cannot render {reason}; use 'auto' or 'cpu'")
    if setting == "auto":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return "device" if dev.type == "cuda" and reason is None else "cpu"
    return setting


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------
@dataclass
class DevicePlan:
    """What the worker needs to prepare a device-augment item (:func:`build_device_plan`)."""

    out_size: int
    patch: int
    bg_patch: int
    pad: str
    affine: A.RandomAffine
    crop: A.CropAroundUnknown
    cover: bool
    hsv: A.HSVJitter | None
    trimap: "TrimapConfig"
    dropout: float


def _ceil8(x: float) -> int:
    return int(math.ceil(x / 8.0) * 8)


def build_device_plan(data_cfg: "DataConfig", trimap_cfg: "TrimapConfig", augment_cfg: "AugmentConfig",
                      has_background: bool = True, patch_scale: float = PATCH_SCALE) -> DevicePlan:
    """The worker-side plan of a config (raises ``ValueError`` when it is not supported).

    Example:
        >>> from mattingkit.config import DataConfig, TrimapConfig, AugmentConfig
        >>> p = build_device_plan(DataConfig(image_size=320), TrimapConfig(), AugmentConfig())
        >>> p.patch, p.bg_patch, p.trimap.kernel_range
        (480, 408, [1, 30])
    """
    A.check_augment_config(augment_cfg)
    reason = unsupported_reason(trimap_cfg, augment_cfg)
    if reason:
        raise ValueError(f"the device augmentation cannot render {reason}")
    problems = check_config(trimap_cfg)
    if problems:
        raise ValueError("; ".join(problems))
    size = int(data_cfg.image_size)
    return DevicePlan(out_size=size, patch=_ceil8(size * patch_scale), bg_patch=_ceil8(size * BG_PATCH_SCALE + 8),
                      pad=augment_cfg.pad, affine=A.RandomAffine.from_config(augment_cfg),
                      crop=A.CropAroundUnknown(data_cfg.crop_sizes), cover=bool(has_background),
                      hsv=A.HSVJitter.from_config(augment_cfg) if augment_cfg.hsv_jitter else None,
                      trimap=trimap_cfg,
                      dropout=A.check_prob(augment_cfg.trimap_dropout, "trimap_dropout"))


def _reflect101(idx: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def cut_region(src: np.ndarray, region: tuple[int, int, int, int], border: str) -> np.ndarray:
    """``src`` over ``region`` (y0, x0, y1, x1), outside filled as a warp with ``border`` (``"zero"`` or
    ``"reflect"``, OpenCV's BORDER_REFLECT_101) reads it; any region, any distance from ``src``.

    Example:
        >>> a = np.arange(4, dtype=np.uint8).reshape(1, 4)
        >>> cut_region(a, (0, -2, 1, 6), "reflect").tolist(), cut_region(a, (0, -2, 1, 6), "zero").tolist()
        ([[2, 1, 0, 1, 2, 3, 2, 1]], [[0, 0, 0, 1, 2, 3, 0, 0]])
    """
    part = A.cut_part(src, region, A.border_mode(border))
    if part is not None:
        return part
    y0, x0, y1, x1 = region
    h, w = src.shape[:2]
    ys, xs = np.arange(y0, y1), np.arange(x0, x1)
    if border == "zero":
        out = np.zeros((y1 - y0, x1 - x0) + src.shape[2:], src.dtype)
        iy, ix = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
        if iy.any() and ix.any():
            out[np.ix_(iy, ix)] = src[np.ix_(ys[iy], xs[ix])]
        return out
    return src[np.ix_(_reflect101(ys, h), _reflect101(xs, w))]


def layer_patch(arrays: Sequence[tuple[np.ndarray, str]], m: np.ndarray, out_hw: Sequence[int], patch: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 part of one layer's sources (``(array, border)`` pairs of the same size, stacked as
    channels) that an ``out_hw`` output samples through ``m`` (source -> output pixels), and the 2x3
    matrix from output pixels to that part's pixels. Area-resized first (``cv2.INTER_AREA``) when
    ``m`` shrinks by more than ``augment.AREA_ABOVE`` or the part exceeds ``patch`` on a side.

    Example:
        >>> a = np.arange(100, dtype=np.uint8).reshape(10, 10)
        >>> part, inv = layer_patch([(a, "zero")], A.translation(-3, -4), (4, 4), 16)
        >>> part.shape, inv.tolist()                     # a bilinear margin around the 4x4 window
        ((10, 10, 1), [[1.0, 0.0, 3.0], [0.0, 1.0, 3.0]])
    """
    m = np.asarray(m, np.float64)
    oh, ow = int(out_hw[0]), int(out_hw[1])
    region = A.sample_region(m, (oh, ow))
    y0, x0, y1, x1 = region
    rh, rw = y1 - y0, x1 - x0
    parts = []
    for a, border in arrays:
        p = cut_region(a, region, border)
        parts.append(p[..., None] if p.ndim == 2 else p)
    part = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    to_part = A.translation(-y0, -x0)
    det = abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])
    shrink = 1.0 / math.sqrt(det) if det > 0 else 1.0
    f = max(shrink if shrink > A.AREA_ABOVE else 1.0, rh / patch, rw / patch)
    if f > 1.0:
        nh, nw = min(patch, max(1, math.ceil(rh / f))), min(patch, max(1, math.ceil(rw / f)))
        c = part.shape[2]
        part = cv2.resize(np.ascontiguousarray(part), (nw, nh), interpolation=cv2.INTER_AREA)
        part = part.reshape(nh, nw, c)
        to_part = A.resize_matrix((rh, rw), (nh, nw)) @ to_part
    inv = to_part @ np.linalg.inv(m)
    return part, inv[:2]


def _placed(part: np.ndarray, size: int, channels: int) -> torch.Tensor:
    out = torch.zeros((channels, size, size), dtype=torch.uint8)
    if part is not None:
        h, w = part.shape[:2]
        out[:, :h, :w] = torch.from_numpy(np.ascontiguousarray(part.transpose(2, 0, 1)))
    return out


def _u8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    return quantise(np.asarray(x, np.float32), 255, np.uint8)


def worker_item(sample: dict[str, Any], rng: np.random.Generator, plan: DevicePlan) -> dict[str, Any]:
    """A loaded sample (``fg`` / ``alpha`` [/ ``fg2`` / ``alpha2``] [/ ``bg``] as decoded, ``id``) ->
    a device-augment item: uint8 source patches, their matrices and the drawn parameters as small
    tensors (keys :data:`ITEM_KEYS` + ``id``). ``rng`` continues the item's generator after the
    source plan, exactly as the CPU pipeline would use it.

    Example:
        >>> from mattingkit.config import DataConfig, TrimapConfig, AugmentConfig
        >>> plan = build_device_plan(DataConfig(crop_sizes=[24], image_size=16), TrimapConfig(), AugmentConfig())
        >>> a = np.zeros((40, 40), np.uint8); a[10:30, 10:30] = 255; a[10:30, 9] = 128
        >>> s = {"id": "x", "fg": np.full((40, 40, 3), 200, np.uint8), "alpha": a, "bg": np.zeros((30, 50, 3), np.uint8)}
        >>> it = worker_item(s, np.random.default_rng(0), plan)
        >>> tuple(it["fg_src"].shape), tuple(it["bg_src"].shape), bool(it["has_fg2"]), tuple(it["warp"].shape)
        ((4, 24, 24), (3, 32, 32), False, (3, 2, 3))
        >>> b = augment_batch(collate_items([it]))
        >>> tuple(b["image"].shape), sorted(set(b["trimap"].unique().tolist()) - {0.0, 0.5, 1.0})
        ((1, 3, 16, 16), [])
    """
    s = {k: sample[k] for k in ("fg", "alpha", "fg2", "alpha2", "bg") if isinstance(sample.get(k), np.ndarray)}
    plan.affine(s, rng)
    plan.crop(s, rng)
    if plan.cover and "bg" in s:
        A.CoverBackground()(s, rng)
    g = s.pop("geometry")
    if "bg" in s and "bg" not in g.matrices:
        s["geometry"] = g
        A.CoverBackground(random=False)(s, None)
        g = s.pop("geometry")
    y0, x0, h, w = g.window if g.window is not None else (0, 0, *g.canvas)
    S = plan.out_size
    view = A.scale_matrix(S / h, S / w) @ A.translation(-y0, -x0)
    warp = np.zeros((3, 2, 3), np.float64)
    item: dict[str, Any] = {}
    for i, (rgb_key, a_key) in enumerate((("fg", "alpha"), ("fg2", "alpha2"))):
        part = None
        if rgb_key in s:
            alpha = s[a_key] if s[a_key].dtype == np.uint8 else _u8(s[a_key])
            part, warp[i] = layer_patch([(_u8(s[rgb_key]), plan.pad), (alpha, "zero")],
                                        view @ g.matrices[rgb_key], (S, S), plan.patch)
        item[f"{rgb_key}_src"] = _placed(part, plan.patch, 4)
    part = None
    if "bg" in s:
        part, warp[2] = layer_patch([(_u8(s["bg"]), "reflect")], view @ g.matrices["bg"], (S, S), plan.bg_patch)
    item["bg_src"] = _placed(part, plan.bg_patch, 3)
    item["warp"] = torch.from_numpy(warp)
    item["has_fg2"] = torch.tensor("fg2" in s)
    item["has_bg"] = torch.tensor("bg" in s)
    host: dict[str, Any] = {"size": S, "fg2": "fg2" in s, "bg": "bg" in s, "hsv": plan.hsv is not None}
    # the remaining draws, in the CPU pipeline's order: HSVJitter, GenerateTrimap, TrimapDropout
    hsv = (0.0, 1.0, 1.0)
    if plan.hsv is not None:
        u = rng.random(3)
        j = plan.hsv
        hsv = ((2 * u[0] - 1) * j.hue, j.saturation[0] + u[1] * (j.saturation[1] - j.saturation[0]),
               j.value[0] + u[2] * (j.value[1] - j.value[0]))
    item["hsv_on"] = torch.tensor(plan.hsv is not None)
    item["hsv"] = torch.tensor(hsv, dtype=torch.float64)
    method, params = METHODS[plan.trimap.method].sample(rng, plan.trimap)   # the trimap's draws (trimap.METHODS)
    host.update(trimap=method, params=params, drawn=METHODS[method].draw(rng, params).tolist())
    drop = bool(plan.dropout > 0 and rng.random() < plan.dropout)
    item["trimap_drop"] = torch.tensor(drop)
    item[HOST_KEY] = json.dumps(dict(host, drop=drop), separators=(",", ":"))
    item["id"] = str(sample["id"])
    return item


def collate_items(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack device-augment items as the default DataLoader collate does (for tests and tools)."""
    out: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in ITEM_KEYS}
    out[HOST_KEY] = [it[HOST_KEY] for it in items]
    out["id"] = [it["id"] for it in items]
    return out


def is_device_batch(batch: Any) -> bool:
    """Whether ``batch`` is a device-augment item or batch (:func:`worker_item`)."""
    return isinstance(batch, dict) and "fg_src" in batch and "warp" in batch


# --------------------------------------------------------------------------------------------
# Device side: one function per transform, batched (N, C, H, W)
# --------------------------------------------------------------------------------------------
def warp_batch(src: torch.Tensor, inv: torch.Tensor, out_hw: Sequence[int], round8: bool = True) -> torch.Tensor:
    """Bilinear resampling of a batch: output pixel ``(x, y)`` reads ``src`` at ``inv @ (x, y, 1)``
    (per-sample 2x3 matrices, pixel-centre coordinates, zeros outside), one ``grid_sample``.

    ``src`` uint8 -> float32 in [0, 1], rounded to multiples of 1/255 when ``round8`` (as a uint8
    ``cv2.warpAffine`` + ``x / 255``); a float ``src`` is resampled as is.
    """
    n, c, h, w = src.shape
    oh, ow = int(out_hw[0]), int(out_hw[1])
    dev = src.device
    inv = inv.to(dev, torch.float64) if dev.type != "mps" else inv.to(dev, torch.float32)
    xs = torch.arange(ow, device=dev, dtype=inv.dtype).view(1, 1, ow)
    ys = torch.arange(oh, device=dev, dtype=inv.dtype).view(1, oh, 1)
    gx = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
    gy = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    grid = torch.stack(((2 * gx + 1) / w - 1, (2 * gy + 1) / h - 1), dim=-1).to(torch.float32)
    is8 = src.dtype == torch.uint8
    out = F.grid_sample(src.to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if is8:
        if round8:
            out.round_()
        out.clamp_(0, 255).div_(255.0)
    return out


def merge_foregrounds(fg1: torch.Tensor, a1: torch.Tensor, fg2: torch.Tensor, a2: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`mattingkit.data.augment.merge_foregrounds` (fg1 in front of fg2)."""
    w2 = (1.0 - a1) * a2
    alpha = a1 + w2
    c2 = torch.where(alpha > 0, w2 / torch.where(alpha > 0, alpha, torch.ones_like(alpha)), torch.zeros_like(alpha))
    fg = ((fg2 - fg1) * c2 + fg1).clamp_(0.0, 1.0)
    return fg, alpha.clamp_(0.0, 1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(..., COLOR_RGB2HSV)`` on float (N, 3, H, W): H in [0, 360), S, V in [0, 1]."""
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    diff = v - vmin
    s = diff / (v.abs() + FLT_EPSILON)
    d = 60.0 / (diff + FLT_EPSILON)
    h = torch.where(v == r, (g - b) * d, torch.where(v == g, (b - r) * d + 120.0, (r - g) * d + 240.0))
    h = torch.where(h < 0, h + 360.0, h)
    return torch.stack((h, s, v), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(..., COLOR_HSV2RGB)`` on float (N, 3, H, W) with H in degrees, in the
    closed form ``c_n = v - v s clip(min(k, 4 - k), 0, 1)``, ``k = (n + h / 60) mod 6`` (n = 5, 3, 1
    for R, G, B): the same piecewise-linear function as cv2's sector table (to float rounding)."""
    h, s, v = x.unbind(1)
    h6 = h * (1.0 / 60.0)
    vs = v * s
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        out.append(v - vs * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(out, dim=1)


def hsv_jitter(image: torch.Tensor, hue_shift: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor
               ) -> torch.Tensor:
    """Batched :func:`mattingkit.data.augment.hsv_jitter`: per-sample hue shift (degrees) and
    saturation / value scales (tensors of shape (N,)); the result is clipped to [0, 1]."""
    hsv = rgb_to_hsv(image)
    h, s, v = hsv.unbind(1)
    shape = (-1, 1, 1)
    h = h + torch.remainder(hue_shift.to(h.dtype), 360.0).view(shape)
    h = torch.where(h >= 360.0, h - 360.0, h)
    s = torch.minimum(s * saturation.to(s.dtype).view(shape), torch.ones_like(s))
    v = torch.minimum(v * value.to(v.dtype).view(shape), torch.ones_like(v))
    return hsv_to_rgb(torch.stack((h, s, v), dim=1)).clamp_(0.0, 1.0)


def composite(fg: torch.Tensor, bg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha * fg + (1 - alpha) * bg`` clipped to [0, 1] (:func:`mattingkit.compose.composite`)."""
    return compose.composite(fg, bg, alpha).clamp_(0.0, 1.0)


def host_values(batch: dict[str, Any]) -> dict[str, Any]:
    """The host-side values of a collated device-augment batch (:data:`HOST_KEY`), read from the Python
    strings that came with it: ``size`` and the trimap ``method`` / ``params`` (the same for every
    item), ``drawn`` (N, ...) int64, and ``fg2`` / ``bg`` / ``hsv`` / ``drop``: whether any item has it.

    Example:
        >>> h = '{"size":8,"fg2":false,"bg":true,"hsv":false,"drop":true,"trimap":"erode_dilate",' \\
        ...     '"params":{"kernel_range":[1,3],"iterations":1},"drawn":[3,1]}'
        >>> v = host_values({"host": [h, h]}); v["size"], v["bg"], v["fg2"], v["drawn"].tolist()
        (8, True, False, [[3, 1], [3, 1]])
    """
    items = [json.loads(h) for h in batch[HOST_KEY]]
    first = items[0]
    for key in ("size", "trimap", "params"):
        if any(it[key] != first[key] for it in items):
            raise ValueError(f"device-augment batch: items differ in {key!r} (one dataset's items per batch)")
    out = {k: first[k] for k in ("size", "trimap", "params")}
    out.update({k: any(it[k] for it in items) for k in ("fg2", "bg", "hsv", "drop")})
    out["drawn"] = np.asarray([it["drawn"] for it in items], np.int64)
    return out


def augment_batch(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """A collated device-augment batch (:func:`worker_item`) -> the float32 training batch:
    ``image``, ``alpha``, ``trimap``, ``fg``, ``bg``, ``unknown`` (N, C, S, S) and ``id``, on ``device``
    (default: where the batch is). Other non-tensor entries are kept. A single (uncollated) item
    gives unbatched (C, S, S) tensors.

    Never waits for the device: the output size, which steps run (a second foreground, HSV jitter, a
    background, trimap dropout in any item) and the trimap kernels come from the batch's host values
    (:func:`host_values`); per-item choices are ``torch.where`` masks on the device."""
    if batch["fg_src"].ndim == 3:
        one = augment_batch(collate_items([batch]), device)
        return {k: (v[0] if isinstance(v, torch.Tensor) else v[0] if k == "id" else v) for k, v in one.items()}
    dev = torch.device(device) if device is not None else batch["fg_src"].device
    b = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    n = b["fg_src"].shape[0]
    host = host_values(batch)
    S = host["size"]
    warp = b["warp"]
    has_fg2, has_bg = b["has_fg2"].bool().view(n, 1, 1, 1), b["has_bg"].bool().view(n, 1, 1, 1)
    # the two foreground layers in one grid_sample
    fgs = warp_batch(torch.cat((b["fg_src"], b["fg2_src"])), torch.cat((warp[:, 0], warp[:, 1])), (S, S))
    fg, alpha = fgs[:n, :3], fgs[:n, 3:]
    if host["fg2"]:
        mfg, ma = merge_foregrounds(fg, alpha, fgs[n:, :3], fgs[n:, 3:])
        fg, alpha = torch.where(has_fg2, mfg, fg), torch.where(has_fg2, ma, alpha)
    hsv_on = b["hsv_on"].bool().view(n, 1, 1, 1)
    if host["hsv"]:
        p = b["hsv"]
        fg = torch.where(hsv_on, hsv_jitter(fg, p[:, 0], p[:, 1], p[:, 2]), fg)
    if host["bg"]:
        bg = warp_batch(b["bg_src"], warp[:, 2], (S, S))
        bg = torch.where(has_bg, bg, fg)
        image = torch.where(has_bg, composite(fg, bg, alpha), fg)
    else:
        bg, image = fg.clone(), fg.clone()
    trimap = METHODS[host["trimap"]].torch_twin(alpha, host["drawn"], host["params"])
    if host["drop"]:
        drop = b["trimap_drop"].bool().view(n, 1, 1, 1)
        trimap = torch.where(drop, torch.full_like(trimap, 0.5), trimap)
    out = {k: v for k, v in batch.items() if k not in ITEM_KEYS + (HOST_KEY,) and not isinstance(v, torch.Tensor)}
    out.update(image=image, alpha=alpha, trimap=trimap, fg=fg, bg=bg, unknown=(trimap == 0.5).to(torch.float32))
    return out

"""Inference core: one image to an alpha matte — settings, padding, the forward (with flip TTA, under the
device plan's autocast), tiling above the pixel budget and the trimap-free two passes.

:func:`predict` takes NumPy in and gives NumPy out (image RGB ``HxWx3``, uint8 0..255 or float32 in
[0, 1]; trimap ``HxW``, float32 in {0, .5, 1} or uint8 {0, 128, 255}, or ``None``; alpha float32
``HxW``). The inputs go to the device as they are (uint8 ships a quarter of the bytes) and padding,
normalisation, the known-region clamp and the crop run there. Every setting is a field of one typed
:class:`~mattingkit.config.InferConfig` (the defaults live there only), normalised once at the entry
(:func:`infer_settings`) together with the device plan (:class:`~mattingkit.device.DevicePlan`); the
settled path (:func:`run_passes`, :func:`predict_batch`) is what :mod:`mattingkit.infer.folder` calls.
The model's geometry (pad multiple, tile context) is the :class:`~mattingkit.tiling.InferGeometry` it
declares.

Example:
    >>> import numpy as np, torch
    >>> class Gray(torch.nn.Module):          # a "model": alpha = mean colour
    ...     def forward(self, image, trimap):
    ...         return {"alpha": image.mean(1, keepdim=True)}
    >>> float(predict(Gray(), np.full((50, 70, 3), 0.25, np.float32))[0, 0])
    0.25
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import device as devmod
from ..config import InferConfig
from ..device import HOST, DevicePlan, cudnn_benchmark, exact_numerics
from ..errors import InputDataError
from ..io import capped_size
from ..models.alphagan import guide_method, guides
from ..tiling import GRID, TilingInfo, geometry_of, min_tile, tiled_predict
from ..trimap import trimap_from_mask

#: The default :class:`~mattingkit.tiling.InferGeometry` pad multiple (models downsample by up to 32).
PAD_MULTIPLE = GRID


class InferenceInputError(InputDataError):
    """An input to inference is wrong (shape, range, missing trimap); the message says which."""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def infer_settings(cfg: Any = None, **overrides: Any) -> InferConfig:
    """The inference settings: an ``InferConfig`` (or a whole ``Config``'s ``infer``; ``None``: the
    defaults) with ``overrides`` (field names) replacing single fields; checked.

    Example:
        >>> from mattingkit.config import load_config
        >>> s = infer_settings(load_config("demo"), tta_flip=True)
        >>> s.tile_overlap, s.tta_flip
        ('auto', True)
    """
    base = getattr(cfg, "infer", cfg)
    if base is None:
        base = InferConfig()
    elif not isinstance(base, InferConfig):
        raise InferenceInputError(f"inference settings must be an InferConfig or a Config, got {type(cfg).__name__}")
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise InferenceInputError(f"unknown inference setting(s) {unknown}; InferConfig has {sorted(_FIELDS)}")
    s = dataclasses.replace(base, **overrides) if overrides else base
    _check_settings(s)
    return s


_FIELDS = {f.name for f in dataclasses.fields(InferConfig)}


def _check_settings(s: InferConfig) -> None:
    for name in ("tile_overlap", "tile_stats_passes"):
        v = getattr(s, name)
        if isinstance(v, str) and v != "auto":
            raise InferenceInputError(f"{name} must be a number or 'auto', got {v!r}")
    if (s.pixel_budget < 1 or s.tile_size < 1 or s.pad_margin < 0 or int(s.batch_size) < 1
            or (not isinstance(s.tile_stats_passes, str) and s.tile_stats_passes < 0)
            or (not isinstance(s.tile_overlap, str) and s.tile_overlap < 0)):
        raise InferenceInputError("pixel_budget, tile_size and batch_size must be >= 1, tile_overlap, tile_stats_passes and "
                                  "pad_margin >= 0")
    if s.max_side is not None and (not isinstance(s.max_side, (int, np.integer)) or isinstance(s.max_side, bool)
                                   or s.max_side < 1):
        raise InferenceInputError(f"max_side must be a side >= 1 px or None (full size), got {s.max_side!r}")


def check_image(image: Any) -> np.ndarray:
    """Shape and dtype checks only (cheap): uint8 or float ``HxWx3``; the value checks of a float image
    run on the device (:func:`_to_device`)."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InferenceInputError(f"image must be an HxWx3 RGB array, got shape {a.shape}")
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise InferenceInputError(f"image must be uint8 (0..255) or float32 in [0, 1], got dtype {a.dtype}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise InferenceInputError(f"image is empty (shape {a.shape})")
    return a


def check_trimap(trimap: Any, shape: tuple[int, int]) -> np.ndarray:
    """Shape check only (the values are checked on the device by :func:`_trimap_to_device`)."""
    t = np.asarray(trimap)
    if t.ndim == 3 and t.shape[2] == 1:
        t = t[:, :, 0]
    if t.shape != shape:
        raise InferenceInputError(f"trimap shape {t.shape} does not match the image's {shape}")
    if t.dtype != np.uint8 and not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)
                                    or t.dtype == bool):
        raise InferenceInputError(f"trimap must be float in {{0, .5, 1}} or uint8 {{0, 128, 255}}, got {t.dtype}")
    return t


def padding(h: int, w: int, margin: int | None = None, multiple: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)``: ``margin`` (default ``infer.pad_margin``) on each side, the rest at
    the bottom/right to a multiple (the model's ``InferGeometry.pad_multiple``).

    Example:
        >>> padding(100, 64, margin=0)
        (0, 28, 0, 0)
        >>> padding(100, 64, margin=16)
        (16, 44, 16, 16)
    """
    margin = InferConfig.pad_margin if margin is None else int(margin)
    hp = -(-(h + 2 * margin) // multiple) * multiple
    wp = -(-(w + 2 * margin) // multiple) * multiple
    return margin, hp - h - margin, margin, wp - w - margin


def resolve_context(model: nn.Module, tile_overlap: int | str = "auto") -> int:
    """Context (px, a multiple of the model's pad multiple) each tile sees beyond its core: ``tile_overlap``
    when it is a number, else (``"auto"``) the ``tile_context`` of the model's
    :class:`~mattingkit.tiling.InferGeometry` (default :data:`~mattingkit.tiling.DEFAULT_CONTEXT`).

    Example:
        >>> resolve_context(torch.nn.Identity(), 40), resolve_context(torch.nn.Identity(), "auto")
        (64, 128)
    """
    if isinstance(tile_overlap, str):
        if tile_overlap != "auto":
            raise InferenceInputError(f"tile_overlap must be a number of pixels or 'auto', got {tile_overlap!r}")
        ctx = int(geometry_of(model).tile_context)
    else:
        ctx = int(tile_overlap)
    if ctx < 0:
        raise InferenceInputError(f"tile_overlap must be >= 0, got {ctx}")
    grid = geometry_of(model).pad_multiple
    return -(-ctx // grid) * grid


def _check_tile_fits(tile: int, context: int, grid: int) -> None:
    if tile < min_tile(context, grid):
        raise InferenceInputError(
            f"tile_size {tile} cannot hold the tiling context of {context} px on both sides (needs >= "
            f"{min_tile(context, grid)}): raise infer.tile_size or lower infer.tile_overlap")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """The model in eval mode inside the block; its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None


def _forward(model: nn.Module, image: torch.Tensor, trimap: torch.Tensor, plan: DevicePlan,
             tta_flip: bool, guide: torch.Tensor | None = None) -> torch.Tensor:
    """Run the model on one padded (1,3,H,W) image under the plan's autocast: float32 (1,1,H,W) alpha in [0, 1].
    ``guide``: a guided model's guide input for this image (flipped with it for the TTA view)."""

    def once(img: torch.Tensor, tri: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        with plan.autocast():
            out = model(img, tri) if g is None else model(img, tri, guide=g)
        alpha = out["alpha"] if isinstance(out, dict) else out
        if not isinstance(alpha, torch.Tensor) or alpha.shape != (img.shape[0], 1, *img.shape[2:]):
            got = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
            raise RuntimeError(f"the model returned alpha of shape {got}, expected "
                               f"{(img.shape[0], 1, *img.shape[2:])}")
        return alpha.float()

    alpha = once(image, trimap, guide)
    if tta_flip:
        flipped = None if guide is None else guide.flip(-1)
        alpha = 0.5 * (alpha + once(image.flip(-1), trimap.flip(-1), flipped).flip(-1))
    return alpha.clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------
def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory (read only here: a read-only array needs no copy)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(a))


def _image_to_device(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``HxWx3`` uint8 or float NumPy -> ``(3, H, W)`` tensor on ``device`` in its own dtype (uint8 ships
    4x fewer bytes; nothing full-size is made on the host). Float values are checked there."""
    t = _as_tensor(image).to(device, non_blocking=True)
    if t.dtype != torch.uint8:
        t = t.float()
        lo, hi = torch.aminmax(t)
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InferenceInputError("image contains NaN or infinite values")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InferenceInputError(f"image values must be in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                                      "(did you pass 0..255 as float? pass uint8 instead)")
    return t.permute(2, 0, 1)


def _trimap_to_device(trimap: np.ndarray, device: torch.device) -> torch.Tensor:
    """``HxW`` trimap (float {0, .5, 1} or uint8 {0, 128, 255}) -> float32 ``(H, W)`` in {0, .5, 1} on ``device``."""
    t = _as_tensor(trimap).to(device, non_blocking=True)
    if t.dtype == torch.uint8:
        q = t.float().div_(127.5).round_().mul_(0.5)   # 0, 127/128, 255 -> 0, .5, 1
        bad = (t.float() - q * 255).abs() > 1
    else:
        t = t.float()
        q = (t * 2).round_().mul_(0.5)
        lo, hi = torch.aminmax(q)
        if float(lo) >= 0 and float(hi) <= 1 and torch.equal(q, t):   # the usual case: one cheap check
            return q
        bad = ~(((t - q).abs() <= 1e-5) & (q >= 0) & (q <= 1))
    if bool(bad.any()):
        raise InferenceInputError(f"trimap values must be 0, 0.5 or 1 (got e.g. {t[bad].unique()[:5].tolist()}; "
                                  "read trimaps with mattingkit.io.read_trimap)")
    return q


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices that reflect-pad a length-``n`` axis exactly as ``np.pad(mode="reflect")`` (any width)."""
    return torch.from_numpy(np.pad(np.arange(n), (before, after), mode="reflect")).to(device)


def _pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad the last two axes of ``x`` by ``(top, bottom, left, right)`` on its device."""
    top, bottom, left, right = pads
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w and x.is_floating_point():
        return torch.nn.functional.pad(x[None] if x.ndim == 3 else x, (left, right, top, bottom),
                                       mode="reflect").reshape(*x.shape[:-2], h + top + bottom, w + left + right)
    x = x.index_select(-2, _reflect_index(h, top, bottom, x.device))
    return x.index_select(-1, _reflect_index(w, left, right, x.device))


def _fill_reflect(out: torch.Tensor, pads: tuple[int, int, int, int]) -> None:
    """Reflect-pad in place: ``out``'s centre holds the image; its borders get ``np.pad(mode="reflect")``'s
    values (rows first, then columns over the full height, as NumPy does). Needs each pad < the size."""
    top, bottom, left, right = pads
    hp, wp = out.shape[-2:]
    h0, h1, w0, w1 = top, hp - bottom, left, wp - right
    if top:
        out[..., :top, w0:w1] = out[..., h0 + 1:h0 + 1 + top, w0:w1].flip(-2)
    if bottom:
        out[..., h1:, w0:w1] = out[..., h1 - 1 - bottom:h1 - 1, w0:w1].flip(-2)
    if left:
        out[..., :, :left] = out[..., :, w0 + 1:w0 + 1 + left].flip(-1)
    if right:
        out[..., :, w1:] = out[..., :, w1 - 1 - right:w1 - 1].flip(-1)


def _prepare(images: list[np.ndarray], trimaps: list[np.ndarray | None], s: InferConfig, device: torch.device,
             multiple: int):
    """Same-size images (+ trimaps) -> padded float ``(N,3,Hp,Wp)`` in [0,1], ``(N,1,Hp,Wp)`` trimaps and
    the unpadded ``(N,H,W)`` trimaps (``None`` when none was given), all on ``device``; and the padding."""
    h, w = images[0].shape[:2]
    pads = padding(h, w, int(s.pad_margin), multiple)
    n = len(images)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    img_t = torch.empty((n, 3, hp, wp), dtype=torch.float32, device=device)
    top, bottom, left, right = pads
    fits = max(top, bottom) < h and max(left, right) < w
    for i, im in enumerate(images):
        x = _image_to_device(im, device)   # (3, H, W) view of the HxWx3 input, uint8 or float
        if fits:   # one converting copy into the centre, normalise it, reflect the borders in place
            centre = img_t[i, :, top:top + h, left:left + w]
            centre.copy_(x)
            centre.div_(255.0) if x.dtype == torch.uint8 else centre.clamp_(0.0, 1.0)
            _fill_reflect(img_t[i], pads)
        else:      # tiny images (pad >= size): NumPy's repeated reflection by index
            img_t[i].copy_(_pad(x, pads))
            img_t[i].div_(255.0) if x.dtype == torch.uint8 else img_t[i].clamp_(0.0, 1.0)
    known = None
    if trimaps[0] is None:
        tri_t = torch.full((n, 1, hp, wp), 0.5, dtype=torch.float32, device=device)
    else:
        qs = [_trimap_to_device(t, device) for t in trimaps]
        known = qs[0][None] if n == 1 else torch.stack(qs)
        tri_t = _pad(known, pads)[:, None]
    return img_t, tri_t, known, pads


class GuideMemo:
    """The guides a guided model's predictions solved (:func:`~mattingkit.models.alphagan.guides`, seconds
    per image), kept on the host for the retries of the same images: :mod:`mattingkit.infer.folder` holds
    one for a batch and its out-of-memory retries (tiled, one by one), so every try of an image reuses the
    first try's solve. A guide is reused only for the same method and padding and an image and trimap of
    the same values, exactly the inputs it was solved from, so a retry's alpha is unchanged; other inputs
    (a downscaled retry's smaller image, two-pass's coarse and refining trimaps) are solved and kept too.
    Nothing global: it lives as long as its holder (one batch of the folder).

    Example:
        >>> memo, im = GuideMemo(), np.zeros((4, 4, 3), np.uint8)
        >>> memo.put("closed_form", im, None, (0, 0, 0, 0), torch.zeros(1, 4, 4))
        >>> memo.get("closed_form", im.copy(), None, (0, 0, 0, 0)).shape   # the same values: reused
        torch.Size([1, 4, 4])
        >>> memo.get("closed_form", im, None, (2, 2, 2, 2)) is None         # another padding: solve it
        True
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, tuple[int, ...], np.ndarray, np.ndarray | None, torch.Tensor]] = []

    @staticmethod
    def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
        if a is None or b is None:
            return a is b
        return a is b or (a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b))

    def get(self, method: str, image: np.ndarray, trimap: np.ndarray | None,
            pads: tuple[int, int, int, int]) -> torch.Tensor | None:
        """The ``(1, Hp, Wp)`` host guide kept for these inputs, or ``None``."""
        for m, p, im, tri, guide in self._entries:
            if m == method and p == tuple(pads) and self._same(im, image) and self._same(tri, trimap):
                return guide
        return None

    def put(self, method: str, image: np.ndarray, trimap: np.ndarray | None, pads: tuple[int, int, int, int],
            guide: torch.Tensor) -> None:
        """Keep ``guide`` (``(1, Hp, Wp)``, on the host) for these inputs (held by reference, not copied)."""
        self._entries.append((method, tuple(pads), image, trimap, guide))


def _guides(model: nn.Module, img_t: torch.Tensor, tri_t: torch.Tensor, images: list[np.ndarray],
            trimaps: list[np.ndarray | None], pads: tuple[int, int, int, int],
            memo: GuideMemo | None) -> torch.Tensor | None:
    """A guided model's guides for the padded batch on its device: one host solve per image
    (:func:`~mattingkit.models.alphagan.guides`), or the one ``memo`` kept from an earlier try."""
    method = guide_method(model)
    if method is None or memo is None:
        return guides(model, img_t, tri_t)
    out = []
    for i, (im, tri) in enumerate(zip(images, trimaps)):
        g = memo.get(method, im, tri, pads)
        if g is None:
            g = guides(model, img_t[i:i + 1], tri_t[i:i + 1])[0]
            memo.put(method, im, tri, pads, g.cpu())   # on the host: the retries need the device's memory
        out.append(g.to(img_t.device))
    return torch.stack(out)


def predict_batch(model: nn.Module, images: list[np.ndarray], trimaps: list[np.ndarray | None], s: InferConfig,
                  plan: DevicePlan, tiling_info: TilingInfo | None = None, *,
                  guide_memo: GuideMemo | None = None) -> list[np.ndarray]:
    """One pass over same-size checked images (+ trimaps or ``None``) with settled settings ``s`` and
    ``plan``: pad, normalise, forward (tiled above the pixel budget, one image at a time), crop and clamp
    on the plan's device, the model in eval mode under ``inference_mode``; one float32 ``HxW`` copy per
    image comes back to the host. ``guide_memo``: a guided model's solves kept for retries (:class:`GuideMemo`)."""
    h, w = images[0].shape[:2]
    if s.max_side and max(h, w) > s.max_side:   # the model sees the long side at max_side
        return _at_max_side(model, images, trimaps, s, plan, tiling_info, guide_memo)
    with torch.inference_mode(), cudnn_benchmark(False), eval_mode(model):   # full-res shapes: no autotune
        return _predict_batch(model, images, trimaps, s, plan, tiling_info, guide_memo)


def resize_inputs(image: np.ndarray, trimap: np.ndarray | None, size: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (uint8 or float) as float32 in [0, 1] resized to ``size`` (h, w; bilinear with antialiasing)
    and ``trimap`` nearest (values kept in {0, .5, 1}): the inputs of a prediction made smaller.

    Example:
        >>> im, tri = resize_inputs(np.full((40, 60, 3), 255, np.uint8), np.full((40, 60), 128, np.uint8), (20, 30))
        >>> im.shape, float(im.max()), tri.shape, sorted(set(tri.ravel().tolist()))
        ((20, 30, 3), 1.0, (20, 30), [0.5])
    """
    f = torch.nn.functional
    x = _image_to_device(np.asarray(image), HOST)   # float values checked as every image is
    x = (x.float() / 255 if x.dtype == torch.uint8 else x.float())[None]
    small = f.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0].permute(1, 2, 0)
    tri = None
    if trimap is not None:
        t = _trimap_to_device(np.asarray(trimap), HOST)[None, None]
        tri = f.interpolate(t, size=size, mode="nearest-exact")[0, 0].numpy()
    return small.clamp(0, 1).contiguous().numpy(), tri


def restore_alpha(alpha: np.ndarray, hw: tuple[int, int], trimap: np.ndarray | None = None) -> np.ndarray:
    """A prediction made at a smaller size, back at its image's size ``hw``: bilinear, clipped to [0, 1],
    and the full-size ``trimap``'s known pixels exact (when given).

    Example:
        >>> restore_alpha(np.array([[0.0, 1.0]], np.float32), (2, 4)).round(2).tolist()
        [[0.0, 0.25, 0.75, 1.0], [0.0, 0.25, 0.75, 1.0]]
    """
    t = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
    up = torch.nn.functional.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)[0, 0]
    up = up.clamp(0, 1).numpy()
    if trimap is not None:   # the known-region clamp at full size (values checked as every trimap is)
        known = _trimap_to_device(np.asarray(trimap), HOST).numpy()
        up = np.where(known == 0.5, up, known).astype(np.float32)
    return up


def _at_max_side(model: nn.Module, images: list[np.ndarray], trimaps: list[np.ndarray | None], s: InferConfig,
                 plan: DevicePlan, tiling_info: TilingInfo | None, guide_memo: GuideMemo | None) -> list[np.ndarray]:
    """``infer.max_side``: predict on downscaled copies (:func:`resize_inputs`), the alphas brought back by
    :func:`restore_alpha`."""
    h, w = images[0].shape[:2]
    small = [resize_inputs(im, t, capped_size(h, w, int(s.max_side))) for im, t in zip(images, trimaps)]
    alphas = predict_batch(model, [im for im, _ in small], [t for _, t in small],
                           dataclasses.replace(s, max_side=None), plan, tiling_info, guide_memo=guide_memo)
    return [restore_alpha(a, (h, w), t) for a, t in zip(alphas, trimaps)]


def _predict_batch(model: nn.Module, images: list[np.ndarray], trimaps: list[np.ndarray | None], s: InferConfig,
                   plan: DevicePlan, tiling_info: TilingInfo | None, guide_memo: GuideMemo | None) -> list[np.ndarray]:
    h, w = images[0].shape[:2]
    device = plan.device
    geom = geometry_of(model)
    img_t, tri_t, known, pads = _prepare(images, trimaps, s, device, geom.pad_multiple)
    top, left = pads[0], pads[2]
    # a guided model's input: one host solve per padded image, reused by the flip, every tile and retry
    guide_t = _guides(model, img_t, tri_t, images, trimaps, pads, guide_memo)
    if h * w <= s.pixel_budget:
        alpha_p = _forward(model, img_t, tri_t, plan, s.tta_flip, guide_t)[:, 0]
    else:
        with exact_numerics(device.type == "cuda"):
            alpha_p = torch.stack([_tiled(model, img_t[i:i + 1], tri_t[i:i + 1], s, plan, tiling_info,
                                          None if guide_t is None else guide_t[i:i + 1])
                                   for i in range(len(images))])   # blended on the host: clamp there
        known = None if known is None else known.to(alpha_p.device)
    del img_t, tri_t, guide_t
    alpha = alpha_p[:, top:top + h, left:left + w]
    if alpha.shape[-2:] != (h, w):  # the contract: exactly the input size
        raise RuntimeError(f"internal error: cropped alpha {tuple(alpha.shape[-2:])} != input {(h, w)}")
    if known is not None:
        alpha = torch.where(known == 0.5, alpha, known)   # the known-region clamp
    return list(alpha.contiguous().cpu().numpy())


def _tiled(model: nn.Module, img_t: torch.Tensor, tri_t: torch.Tensor, s: InferConfig, plan: DevicePlan,
           tiling_info: TilingInfo | None, guide_t: torch.Tensor | None = None) -> torch.Tensor:
    """The padded image through :func:`mattingkit.tiling.tiled_predict` (each TTA view with its own
    whole-image statistics): ``(Hp, Wp)`` alpha on the CPU. A guided model's ``guide_t`` (solved once on
    the whole image) is flipped with its view and cropped with every tile."""
    hp, wp = tri_t.shape[-2:]
    grid = geometry_of(model).pad_multiple
    tile = max(grid, -(-int(s.tile_size) // grid) * grid)
    context = resolve_context(model, s.tile_overlap)
    if hp > tile or wp > tile:
        _check_tile_fits(tile, context, grid)
    stats_passes = None if isinstance(s.tile_stats_passes, str) else int(s.tile_stats_passes)
    info = TilingInfo()
    variants = (False, True) if s.tta_flip else (False,)
    alpha_p = torch.zeros((hp, wp), dtype=torch.float32)
    for flip in variants:
        img_v, tri_v = (img_t.flip(-1), tri_t.flip(-1)) if flip else (img_t, tri_t)
        guide_v = guide_t.flip(-1) if flip and guide_t is not None else guide_t
        a = tiled_predict(lambda i, t, g=None: _forward(model, i, t, plan, False, g), model, img_v, tri_v,
                          tile=tile, context=context, device=plan.device, max_stats_passes=stats_passes, info=info,
                          guide=guide_v)
        alpha_p += a.flip(-1) if flip else a
        del img_v, tri_v, guide_v
    alpha_p /= len(variants)
    if tiling_info is not None:
        tiling_info.__dict__.update(info.__dict__)
    return alpha_p


def run_passes(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None, s: InferConfig, plan: DevicePlan, *,
               trimap_cfg: Any = None, coarse_model: nn.Module | None = None,
               tiling_info: TilingInfo | None = None, guide_memo: GuideMemo | None = None) -> dict[str, np.ndarray]:
    """:func:`predict_passes` with settled settings ``s`` (:func:`infer_settings`) and ``plan`` (the model
    already on its device): the path every prediction takes once its entry has normalised them.
    ``guide_memo`` (:class:`GuideMemo`): a guided model's solves kept across the tries of one image; each
    of two passes has its own trimap, so its own solve (pass 1's all-unknown trimap: the solver's constant)."""
    img = check_image(image)
    h, w = img.shape[:2]
    tri = None if trimap is None else check_trimap(trimap, (h, w))
    kw = dict(s=s, plan=plan, tiling_info=tiling_info, guide_memo=guide_memo)
    if not s.two_pass:
        return {"alpha": predict_batch(model, [img], [tri], **kw)[0]}
    if tri is not None:
        raise InferenceInputError("two_pass is trimap-free prediction: pass trimap=None (or two_pass=False "
                                  "to refine with the given trimap)")
    first = coarse_model if coarse_model is not None else model
    coarse = predict_batch(first, [img], [None], **kw)[0]
    tkw = {}
    if trimap_cfg is not None:
        tkw = dict(fg_threshold=trimap_cfg.fg_threshold, bg_threshold=trimap_cfg.bg_threshold,
                   band=trimap_cfg.mask_band)
    tri2 = np.asarray(trimap_from_mask(coarse, **tkw), np.float32)
    alpha = predict_batch(model, [img], [check_trimap(tri2, (h, w))], **kw)[0]
    return {"alpha": alpha, "coarse": coarse, "trimap": tri2}


def inference_plan(device: str | torch.device | DevicePlan | None, amp: str | bool | None, *models: nn.Module | None,
                   cfg: Any = None) -> DevicePlan:
    """The :class:`~mattingkit.device.DevicePlan` of a prediction with ``amp``, decided the way training
    decides it (:func:`mattingkit.device.plan`) when the run's ``Config`` is known: a GPU recipe
    (``run.require_gpu``) on a machine without a GPU stops with training's message unless ``device`` is
    ``cpu``. ``device``: ``auto``, ``cpu``, ``cuda[:N]`` or a plan; ``None``: ``cfg.run.device``, else
    where the first model is (``auto`` for a model without parameters). The ``models`` (None skipped)
    must already be on the plan's device.

    Example:
        >>> inference_plan(None, "auto", torch.nn.Conv2d(1, 1, 1)).device.type   # where the model is
        'cpu'
    """
    if isinstance(device, DevicePlan):
        plan = device
    elif cfg is not None and hasattr(cfg, "run"):
        if device is not None:
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=str(device)))
        plan = devmod.plan(cfg, amp=amp)
    else:
        if device is None:
            first = next((m for m in models if m is not None), None)
            device = (_model_device(first) if first is not None else None) or "auto"
        plan = DevicePlan.for_inference(device, amp)
    for m in models:
        md = None if m is None else _model_device(m)
        if md is not None and md.type != plan.device.type:
            raise InferenceInputError(f"the model is on {md} but device={plan.device}; move it with "
                                      f"model.to({str(plan.device)!r})")
    return plan


def predict_passes(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None = None, *,
                   infer_cfg: Any = None, device: str | torch.device | None = None, trimap_cfg: Any = None,
                   coarse_model: nn.Module | None = None, tiling_info: TilingInfo | None = None,
                   **settings: Any) -> dict[str, np.ndarray]:
    """Like :func:`predict`, returning every stage: ``{"alpha"}`` plus, when ``two_pass``,
    ``{"coarse", "trimap"}`` (pass-1 alpha and the trimap synthesised from it).

    Example:
        >>> import numpy as np, torch
        >>> class Gray(torch.nn.Module):
        ...     def forward(self, image, trimap):
        ...         return {"alpha": image.mean(1, keepdim=True)}
        >>> out = predict_passes(Gray(), np.zeros((40, 40, 3), np.float32), two_pass=True)
        >>> sorted(out), float(out["trimap"].max())
        (['alpha', 'coarse', 'trimap'], 0.0)
    """
    if not isinstance(model, nn.Module):
        raise InferenceInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    s = infer_settings(infer_cfg, **settings)
    if trimap_cfg is None:
        trimap_cfg = getattr(infer_cfg, "trimap", None)
    plan = inference_plan(device, s.amp, model, coarse_model, cfg=infer_cfg)
    return run_passes(model, image, trimap, s, plan, trimap_cfg=trimap_cfg, coarse_model=coarse_model,
                      tiling_info=tiling_info)


def predict(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None = None, *, infer_cfg: Any = None,
            device: str | torch.device | None = None, trimap_cfg: Any = None, coarse_model: nn.Module | None = None,
            tiling_info: TilingInfo | None = None, **settings: Any) -> np.ndarray:
    """Alpha matte (float32 ``HxW`` in [0, 1]) for one image.

    ``image`` RGB ``HxWx3``: uint8 (0..255, as decoded; the cheapest input) or float in [0, 1];
    ``trimap`` ``HxW`` float in {0, .5, 1} or uint8 {0, 128, 255}, or ``None`` (all unknown). Both go to
    ``device`` unconverted; padding, normalisation, the clamp and the crop run there (under
    ``cudnn.benchmark`` off; tiled prediction under :func:`mattingkit.device.exact_numerics`).
    ``infer_cfg``: an :class:`~mattingkit.config.InferConfig` or a whole ``Config`` (then its ``trimap``
    section is the default ``trimap_cfg``); ``None`` = the defaults. Keyword ``settings`` (InferConfig
    field names: ``tta_flip``, ``amp``, ``pixel_budget``, ``tile_size``, ``tile_overlap``,
    ``tile_stats_passes``, ``pad_margin``, ``two_pass``, ``max_side``) replace single fields. ``trimap_cfg`` (a
    ``TrimapConfig``) sets the pass-2 trimap thresholds and band for ``two_pass``. ``device``: default
    where the model is; with a whole ``Config`` its ``run.device`` and GPU rule (:func:`inference_plan`).
    The model must already be on ``device``; it is run in eval mode and its mode is restored after. ``tiling_info``
    (a :class:`mattingkit.tiling.TilingInfo`) is filled in with what tiling did. See docs/inference.md.

    Example:
        >>> import numpy as np, torch
        >>> net = torch.nn.Conv2d(4, 1, 3, padding=1)
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.conv = net
        ...     def forward(self, image, trimap):
        ...         return {"alpha": torch.sigmoid(self.conv(torch.cat([image, trimap], 1)))}
        >>> tri = np.full((33, 47), 0.5, np.float32); tri[:5] = 0
        >>> a = predict(Net(), np.random.default_rng(0).random((33, 47, 3), np.float32), tri, tta_flip=True)
        >>> a.shape, float(a[:5].max())
        ((33, 47), 0.0)
        >>> u8 = (np.random.default_rng(0).random((33, 47, 3)) * 255).astype(np.uint8)
        >>> bool(np.abs(predict(Net(), u8) - predict(Net(), u8 / np.float32(255))).max() < 1e-6)
        True
    """
    return predict_passes(model, image, trimap, infer_cfg=infer_cfg, device=device, trimap_cfg=trimap_cfg,
                          coarse_model=coarse_model, tiling_info=tiling_info, **settings)["alpha"]


__all__ = [
    "GuideMemo", "InferenceInputError", "PAD_MULTIPLE", "check_image", "check_trimap", "eval_mode", "infer_settings",
    "inference_plan", "padding", "predict", "predict_batch", "predict_passes", "resolve_context", "run_passes",
    "resize_inputs", "restore_alpha",
]

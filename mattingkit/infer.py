"""Inference: one image (:func:`predict`) or a folder (:func:`predict_folder`) to alpha mattes, and the
prediction of a run's split with its cache (:func:`predict_split`, notebooks 04 and 05).

:func:`predict` takes NumPy in and gives NumPy out (image RGB ``HxWx3``, uint8 0..255 or float32 in
[0, 1]; trimap ``HxW``, float32 in {0, .5, 1} or uint8 {0, 128, 255}, or ``None``; alpha float32
``HxW``). The inputs go to the device as they are (uint8 ships a quarter of the bytes) and padding,
normalisation, the known-region clamp and the crop run there. Every setting is a field of one
typed :class:`~mattingkit.config.InferConfig` (the defaults live there only), passed down as it is:
reflect padding (``pad_margin`` on every side, then to a multiple of 32), the known-region clamp,
flip TTA, AMP (one resolver, :func:`mattingkit.device.resolve_amp`), tiling above ``pixel_budget``
(:mod:`mattingkit.tiling`) and trimap-free two-pass prediction. docs/inference.md explains each, with
the measurements behind the tiling defaults.

Example:
    >>> import numpy as np, torch
    >>> class Gray(torch.nn.Module):          # a "model": alpha = mean colour
    ...     def forward(self, image, trimap):
    ...         return {"alpha": image.mean(1, keepdim=True)}
    >>> img = np.full((50, 70, 3), 0.25, np.float32)
    >>> a = predict(Gray(), img)
    >>> a.shape, a.dtype, float(a[0, 0])
    ((50, 70), dtype('float32'), 0.25)
    >>> round(float(predict(Gray(), np.full((50, 70, 3), 51, np.uint8))[0, 0]), 6)   # uint8: 51 / 255
    0.2
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import InferConfig
from .device import (
    cudnn_benchmark,
    exact_numerics,
    free_cuda_memory,
    is_oom,
    resolve_amp,
    resolve_device,
    smaller_tile,
)
from .errors import InputDataError, InputNotFoundError
from .io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    image_size,
    list_images,
    printable,
    read_alpha,
    read_image,
    read_trimap,
    write_png,
)
from .tiling import GRID, WINDOW_FLOOR, TilingInfo, core_window, tile_spans, tiled_predict

#: Models downsample by up to this factor: padded sizes and tile origins are multiples of it.
PAD_MULTIPLE = GRID
#: Tiling context for ``tile_overlap="auto"`` when the model declares no ``tile_context``.
DEFAULT_CONTEXT = 128

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


def _check_image(image: Any) -> np.ndarray:
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


def _check_trimap(trimap: Any, shape: tuple[int, int]) -> np.ndarray:
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


def padding(h: int, w: int, margin: int = 32, multiple: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)``: ``margin`` on each side, the rest at the bottom/right to a multiple.

    Example:
        >>> padding(100, 64, margin=0)
        (0, 28, 0, 0)
        >>> padding(100, 64, margin=16)
        (16, 44, 16, 16)
    """
    hp = -(-(h + 2 * margin) // multiple) * multiple
    wp = -(-(w + 2 * margin) // multiple) * multiple
    return margin, hp - h - margin, margin, wp - w - margin


def resolve_context(model: nn.Module, tile_overlap: int | str = "auto") -> int:
    """Context (px, a multiple of 32) each tile sees beyond its core: ``tile_overlap`` when it is a
    number, else (``"auto"``) the model's ``tile_context`` attribute, else :data:`DEFAULT_CONTEXT`.

    Example:
        >>> resolve_context(torch.nn.Identity(), 40), resolve_context(torch.nn.Identity(), "auto")
        (64, 128)
    """
    if isinstance(tile_overlap, str):
        if tile_overlap != "auto":
            raise InferenceInputError(f"tile_overlap must be a number of pixels or 'auto', got {tile_overlap!r}")
        inner = getattr(model, "module", model)   # DataParallel / DDP wrappers
        ctx = getattr(inner, "tile_context", None)
        ctx = DEFAULT_CONTEXT if ctx is None else int(ctx)
    else:
        ctx = int(tile_overlap)
    if ctx < 0:
        raise InferenceInputError(f"tile_overlap must be >= 0, got {ctx}")
    return -(-ctx // PAD_MULTIPLE) * PAD_MULTIPLE


def _check_tile_fits(tile: int, context: int) -> None:
    if tile < 2 * context + PAD_MULTIPLE:
        raise InferenceInputError(
            f"tile_size {tile} cannot hold the tiling context of {context} px on both sides (needs >= "
            f"{2 * context + PAD_MULTIPLE}): raise infer.tile_size or lower infer.tile_overlap")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
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


def _forward(model: nn.Module, image: torch.Tensor, trimap: torch.Tensor, amp_dtype: torch.dtype | None,
             tta_flip: bool) -> torch.Tensor:
    """Run the model on one padded (1,3,H,W) image: float32 (1,1,H,W) alpha in [0, 1]."""

    def once(img: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        ctx = (torch.autocast(device_type=img.device.type, dtype=amp_dtype) if amp_dtype is not None
               else contextlib.nullcontext())
        with ctx:
            out = model(img, tri)
        alpha = out["alpha"] if isinstance(out, dict) else out
        if not isinstance(alpha, torch.Tensor) or alpha.shape != (img.shape[0], 1, *img.shape[2:]):
            got = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
            raise RuntimeError(f"the model returned alpha of shape {got}, expected "
                               f"{(img.shape[0], 1, *img.shape[2:])}")
        return alpha.float()

    alpha = once(image, trimap)
    if tta_flip:
        alpha = 0.5 * (alpha + once(image.flip(-1), trimap.flip(-1)).flip(-1))
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


def _prepare(images: list[np.ndarray], trimaps: list[np.ndarray | None], s: InferConfig, device: torch.device):
    """Same-size images (+ trimaps) -> padded float ``(N,3,Hp,Wp)`` in [0,1], ``(N,1,Hp,Wp)`` trimaps and
    the unpadded ``(N,H,W)`` trimaps (``None`` when none was given), all on ``device``; and the padding."""
    h, w = images[0].shape[:2]
    pads = padding(h, w, int(s.pad_margin))
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


def _predict_batch(model: nn.Module, images: list[np.ndarray], trimaps: list[np.ndarray | None], s: InferConfig, *,
                   device: torch.device, amp_dtype: torch.dtype | None,
                   tiling_info: TilingInfo | None = None) -> list[np.ndarray]:
    """One pass over same-size images: pad, normalise, forward (tiled above the pixel budget, one image
    at a time), crop and clamp on ``device``; one float32 ``HxW`` copy per image comes back to the host."""
    h, w = images[0].shape[:2]
    img_t, tri_t, known, (top, _, left, _) = _prepare(images, trimaps, s, device)
    if h * w <= s.pixel_budget:
        alpha_p = _forward(model, img_t, tri_t, amp_dtype, s.tta_flip)[:, 0]
    else:
        with exact_numerics(device.type == "cuda"):
            alpha_p = torch.stack([_tiled(model, img_t[i:i + 1], tri_t[i:i + 1], s, device, amp_dtype, tiling_info)
                                   for i in range(len(images))])   # blended on the host: clamp there
        known = None if known is None else known.to(alpha_p.device)
    del img_t, tri_t
    alpha = alpha_p[:, top:top + h, left:left + w]
    if alpha.shape[-2:] != (h, w):  # the contract: exactly the input size
        raise RuntimeError(f"internal error: cropped alpha {tuple(alpha.shape[-2:])} != input {(h, w)}")
    if known is not None:
        alpha = torch.where(known == 0.5, alpha, known)   # the known-region clamp
    return list(alpha.contiguous().cpu().numpy())


def _predict_single_pass(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None, s: InferConfig, *,
                         device: torch.device, amp_dtype: torch.dtype | None,
                         tiling_info: TilingInfo | None = None) -> np.ndarray:
    return _predict_batch(model, [image], [trimap], s, device=device, amp_dtype=amp_dtype,
                          tiling_info=tiling_info)[0]


def _tiled(model: nn.Module, img_t: torch.Tensor, tri_t: torch.Tensor, s: InferConfig, device: torch.device,
           amp_dtype: torch.dtype | None, tiling_info: TilingInfo | None) -> torch.Tensor:
    """The padded image through :func:`mattingkit.tiling.tiled_predict` (each TTA view with its own
    whole-image statistics): ``(Hp, Wp)`` alpha on the CPU."""
    hp, wp = tri_t.shape[-2:]
    tile = max(PAD_MULTIPLE, -(-int(s.tile_size) // PAD_MULTIPLE) * PAD_MULTIPLE)
    context = resolve_context(model, s.tile_overlap)
    if hp > tile or wp > tile:
        _check_tile_fits(tile, context)
    stats_passes = None if isinstance(s.tile_stats_passes, str) else int(s.tile_stats_passes)
    info = TilingInfo()
    variants = (False, True) if s.tta_flip else (False,)
    alpha_p = torch.zeros((hp, wp), dtype=torch.float32)
    for flip in variants:
        img_v, tri_v = (img_t.flip(-1), tri_t.flip(-1)) if flip else (img_t, tri_t)
        a = tiled_predict(lambda i, t: _forward(model, i, t, amp_dtype, False), model, img_v, tri_v,
                          tile=tile, context=context, device=device, max_stats_passes=stats_passes, info=info)
        alpha_p += a.flip(-1) if flip else a
        del img_v, tri_v
    alpha_p /= len(variants)
    if tiling_info is not None:
        tiling_info.__dict__.update(info.__dict__)
    return alpha_p


def predict_passes(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None = None, *,
                   infer_cfg: Any = None, device: str | torch.device = "cpu", trimap_cfg: Any = None,
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
    img = _check_image(image)
    h, w = img.shape[:2]
    tri = None if trimap is None else _check_trimap(trimap, (h, w))
    dev = resolve_device(device)
    kw = dict(device=dev, amp_dtype=resolve_amp(s.amp, dev), tiling_info=tiling_info)
    for m in (model, coarse_model):
        md = None if m is None else _model_device(m)
        if md is not None and md.type != dev.type:
            raise InferenceInputError(f"the model is on {md} but device={dev}; move it with model.to({str(dev)!r})")

    with torch.inference_mode(), cudnn_benchmark(False):   # full-res shapes: no autotune per new shape
        if not s.two_pass:
            with _eval_mode(model):
                return {"alpha": _predict_single_pass(model, img, tri, s, **kw)}
        if tri is not None:
            raise InferenceInputError("two_pass is trimap-free prediction: pass trimap=None (or two_pass=False "
                                      "to refine with the given trimap)")
        from .trimap import trimap_from_mask

        first = coarse_model if coarse_model is not None else model
        with _eval_mode(first):
            coarse = _predict_single_pass(first, img, None, s, **kw)
        tkw = {}
        if trimap_cfg is not None:
            tkw = dict(fg_threshold=trimap_cfg.fg_threshold, bg_threshold=trimap_cfg.bg_threshold,
                       band=trimap_cfg.mask_band)
        tri2 = np.asarray(trimap_from_mask(coarse, **tkw), np.float32)
        with _eval_mode(model):
            alpha = _predict_single_pass(model, img, _check_trimap(tri2, (h, w)), s, **kw)
        return {"alpha": alpha, "coarse": coarse, "trimap": tri2}


def predict(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None = None, *, infer_cfg: Any = None,
            device: str | torch.device = "cpu", trimap_cfg: Any = None, coarse_model: nn.Module | None = None,
            tiling_info: TilingInfo | None = None, **settings: Any) -> np.ndarray:
    """Alpha matte (float32 ``HxW`` in [0, 1]) for one image.

    ``image`` RGB ``HxWx3``: uint8 (0..255, as decoded; the cheapest input) or float in [0, 1];
    ``trimap`` ``HxW`` float in {0, .5, 1} or uint8 {0, 128, 255}, or ``None`` (all unknown). Both go to
    ``device`` unconverted; padding, normalisation, the clamp and the crop run there (under
    ``cudnn.benchmark`` off; tiled prediction under :func:`mattingkit.device.exact_numerics`).
    ``infer_cfg``: an :class:`~mattingkit.config.InferConfig` or a whole ``Config`` (then its ``trimap``
    section is the default ``trimap_cfg``); ``None`` = the defaults. Keyword ``settings`` (InferConfig
    field names: ``tta_flip``, ``amp``, ``pixel_budget``, ``tile_size``, ``tile_overlap``,
    ``tile_stats_passes``, ``pad_margin``, ``two_pass``) replace single fields. ``trimap_cfg`` (a
    ``TrimapConfig``) sets the pass-2 trimap thresholds and band for ``two_pass``. The model must
    already be on ``device``; it is run in eval mode and its mode is restored after. ``tiling_info``
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


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
#: The producer record of a folder of predictions (what made its PNGs; :func:`claim_prediction_dir`).
PRODUCER_FILE = "_source.json"
#: InferConfig fields that do not change a predicted alpha (left out of the producer record).
_NOT_IN_KEY = {"write_rgba", "batch_size"}


@dataclass
class PredictReport:
    """What :func:`predict_folder` did: stems written, skipped (already done) and failed (with reasons);
    ``notes`` (e.g. an image retried with smaller tiles after running out of GPU memory, a baseline's
    downscaled solve) and the ``producer`` recorded in the folder."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (input path or stem, reason)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    producer: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"predict_folder -> {self.out_dir}: {len(self.written)} written, {len(self.skipped)} already done, "
                 f"{len(self.failed)} failed, {self.seconds:.1f}s"]
        lines += [f"  note: {n}" for n in self.notes]
        for name, reason in self.failed:
            lines.append(f"  FAILED {name}: {reason}")
        return printable("\n".join(lines))  # file names that are not UTF-8 must not crash the print


def _checkpoint_sha256(ckpt: Path) -> str:
    from .checkpoint import file_sha256, sidecar_path

    try:
        digest = json.loads(sidecar_path(ckpt).read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError):
        digest = None
    return digest or file_sha256(ckpt)


def _output_settings(settings: InferConfig | None) -> dict[str, Any]:
    s = settings if settings is not None else InferConfig()
    return {k: v for k, v in sorted(dataclasses.asdict(s).items()) if k not in _NOT_IN_KEY}


def model_producer(checkpoint: str | os.PathLike, settings: InferConfig | None = None) -> dict[str, Any]:
    """The producer of predictions made with the model of ``checkpoint``: its path and SHA-256 (from its
    sidecar, else hashed), plus the output-changing ``settings`` when given (:func:`predict_folder`
    records the settings it actually used in any case).

    Example:
        >>> model_producer("runs/demo/checkpoints/best.pt")["sha256"]  # doctest: +SKIP
        '3f5c...'
    """
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise InputNotFoundError(f"{ckpt}: checkpoint not found")
    rec: dict[str, Any] = {"checkpoint": str(ckpt.resolve()), "sha256": _checkpoint_sha256(ckpt)}
    if settings is not None:
        rec["settings"] = _output_settings(settings)
    return rec


def baseline_producer(method: str, settings: InferConfig | None = None, max_pixels: int | None = None) -> dict[str, Any]:
    """The producer of predictions made by a classical method (:mod:`mattingkit.baselines`).

    Example:
        >>> baseline_producer("closed_form")
        {'method': 'closed_form', 'max_pixels': None}
    """
    from .baselines import METHODS

    if method not in METHODS:
        raise InferenceInputError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    rec: dict[str, Any] = {"method": method, "max_pixels": max_pixels}
    if settings is not None:
        rec["settings"] = _output_settings(settings)
    return rec


def module_producer(model: nn.Module) -> dict[str, Any]:
    """The producer of a model given as an object: a baseline's method, else the class and a SHA-256 of
    its parameters and buffers (two different checkpoints of one architecture differ).

    Example:
        >>> module_producer(torch.nn.Identity())["model"]
        'torch.nn.modules.linear.Identity'
    """
    from .baselines import BaselinePredictor

    if isinstance(model, BaselinePredictor):
        return baseline_producer(model.method, max_pixels=model.max_pixels)
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.cpu().contiguous().numpy().tobytes() if t.numel() else b"")
    cls = type(getattr(model, "module", model))
    return {"model": f"{cls.__module__}.{cls.__qualname__}", "weights_sha256": h.hexdigest()}


def _record(producer: dict[str, Any], settings: InferConfig, with_trimap: bool) -> dict[str, Any]:
    """What :data:`PRODUCER_FILE` holds: the producer with the settings actually used and whether trimaps were."""
    rec = {k: v for k, v in producer.items() if k != "settings"}
    rec["settings"] = {**_output_settings(settings), "trimaps": bool(with_trimap)}
    return json.loads(json.dumps(rec, default=str))   # as it reads back from the file


def _describe(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "an unknown producer (no " + PRODUCER_FILE + ")"
    if "method" in rec:
        who = f"baseline {rec['method']!r}"
    elif "checkpoint" in rec:
        who = f"checkpoint {rec['checkpoint']} (sha256 {str(rec.get('sha256'))[:12]})"
    else:
        who = f"model {rec.get('model')} (weights sha256 {str(rec.get('weights_sha256'))[:12]})"
    return who


def claim_prediction_dir(out_dir: str | os.PathLike, record: dict[str, Any], *, force: bool = False,
                         replace_other: bool = False, rgba_dir: str | os.PathLike | None = None) -> str:
    """The one rule for a folder of predictions, keyed by who made them (``record``, see
    :func:`predict_folder`). Returns what happens: ``"new"`` (empty folder), ``"resume"`` (same producer:
    finished PNGs are kept), ``"fresh"`` (``force``, or ``replace_other`` and another producer: its PNGs
    are deleted). Another producer without either → :class:`~mattingkit.errors.RunStateError` naming it.
    The RGBA cut-outs in ``out_dir/rgba`` -- or in ``rgba_dir`` when they are written elsewhere -- belong
    to the same record and go with the mattes.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> claim_prediction_dir(d, {"method": "knn"}), claim_prediction_dir(d, {"method": "knn"})
        ('new', 'resume')
        >>> claim_prediction_dir(d, {"method": "closed_form"}, force=True)
        'fresh'
    """
    from .errors import RunStateError
    from .io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / PRODUCER_FILE
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    rgba = Path(rgba_dir) if rgba_dir is not None else out / "rgba"
    pngs = list(out.glob("*.png")) + list(rgba.glob("*.png"))
    if old == record and not force:
        return "resume"
    if not pngs and not force:
        atomic_write_text(marker, json.dumps(record, indent=1))
        return "new" if old is None else "fresh"
    if not (force or replace_other):
        what = ""
        if old is not None and {k: v for k, v in old.items() if k != "settings"} == \
                {k: v for k, v in record.items() if k != "settings"}:
            diff = sorted(k for k in set(old.get("settings", {})) | set(record.get("settings", {}))
                          if old.get("settings", {}).get(k) != record.get("settings", {}).get(k))
            was, now = old.get("settings", {}), record.get("settings", {})
            what = " with other settings (" + ", ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in diff) + ")"
        raise RunStateError(
            f"{out} holds {len(pngs)} predictions made by {_describe(old)}{what}; this run is "
            f"{_describe(record)}. Resuming would mix the two. Choose another output folder, or pass "
            "force=True (CLI: --force) to delete those PNGs and start afresh.")
    for p in pngs:
        p.unlink()
    atomic_write_text(marker, json.dumps(record, indent=1))
    return "fresh"


def _find_by_stem(folder: Path, stem: str) -> Path | None:
    for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def _items(images: Any) -> list[tuple[str, Path, Path | None]]:
    """``(stem, image_path, trimap_path_or_None)`` from a folder, a manifest DataFrame or a list of paths."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(images, pd.DataFrame):
        if "image" not in images.columns:
            raise InferenceInputError(f"the DataFrame needs an 'image' column (has {list(images.columns)})")
        out = []
        for _, row in images.iterrows():
            img = str(row["image"])
            stem = str(row["id"]) if "id" in images.columns and str(row["id"]) not in ("", "nan") else Path(img).stem
            tri = row.get("trimap", "")
            tri = Path(str(tri)) if isinstance(tri, str) and tri.strip() and tri != "nan" else None
            out.append((stem, Path(img), tri))
        return out
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise InputNotFoundError(f"{folder}: image folder not found")
        found = list_images(folder, recursive=False)
        if not found:   # "0 written" would read as success
            raise InputDataError(f"{folder}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return [(p.stem, p, None) for p in found]
    return [(Path(p).stem, Path(p), None) for p in images]


def _done(path: Path) -> bool:
    """A finished output: exists and has a readable image header (writes are atomic, so no partial PNGs)."""
    if not path.is_file():
        return False
    try:
        image_size(path)
        return True
    except ImageReadError:
        return False


@dataclass
class _Job:
    """One image of :func:`predict_folder` on its way through the pipeline."""

    stem: str
    img_path: Path
    tri_path: Path | None
    out_path: Path
    rgba_path: Path | None      # cut-out to write, or None
    alpha_done: bool            # the alpha exists (only the cut-out is missing)
    image: np.ndarray | None = None
    trimap: np.ndarray | None = None
    alpha: np.ndarray | None = None


def _load(job: _Job) -> _Job:
    """Read and decode one job's inputs (in a reader thread): uint8 image, trimap, existing alpha."""
    from .io import read_image_uint8

    job.image = read_image_uint8(job.img_path)
    shape = job.image.shape[:2]
    if job.alpha_done:
        job.alpha = read_alpha(job.out_path)
        if job.alpha.shape != shape:
            raise InferenceInputError(f"existing {job.out_path.name} is {job.alpha.shape}, image is {shape}")
    elif job.tri_path is not None:
        job.trimap = read_trimap(job.tri_path)
        if job.trimap.shape != shape:
            raise InferenceInputError(f"trimap {job.tri_path} is {job.trimap.shape[1]}x{job.trimap.shape[0]}, "
                                      f"image is {shape[1]}x{shape[0]}")
    return job


def _save(job: _Job) -> None:
    """Encode and write one job's outputs atomically (in a writer thread)."""
    if not job.alpha_done:
        write_png(job.out_path, job.alpha)
    if job.rgba_path is not None:
        from .data.foreground import estimate_foreground

        image = job.image.astype(np.float32) / np.float32(255)
        fg = np.clip(np.asarray(estimate_foreground(image, job.alpha), np.float32), 0, 1)
        write_png(job.rgba_path, np.concatenate([fg, job.alpha[:, :, None]], axis=2))


def _predict_with_oom_retry(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None, s: InferConfig,
                            device: torch.device, trimap_cfg: Any, notes: list[str], name: str) -> np.ndarray:
    """:func:`predict`; after an out-of-memory error, again with tiling at ever smaller tiles
    (:func:`mattingkit.device.smaller_tile`), noted in ``notes``."""
    try:
        return predict(model, image, trimap, infer_cfg=s, device=device, trimap_cfg=trimap_cfg)
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
    # out of the except block: the error's traceback (and the activations it holds) is gone
    free_cuda_memory()
    context = resolve_context(model, s.tile_overlap)
    h, w = image.shape[:2]
    top, bottom, left, right = padding(h, w, int(s.pad_margin))
    tile = min(int(s.tile_size), max(h + top + bottom, w + left + right))
    while True:
        tile = smaller_tile(tile, context, PAD_MULTIPLE)
        if tile is None:
            raise RuntimeError(f"out of memory ({first}), and the tile cannot shrink below what holds the "
                               f"model's context of {context} px: lower infer.tile_overlap or predict on the CPU")
        try:
            alpha = predict(model, image, trimap, infer_cfg=dataclasses.replace(s, pixel_budget=1, tile_size=tile),
                            device=device, trimap_cfg=trimap_cfg)
        except Exception as e:  # noqa: BLE001
            if not is_oom(e):
                raise
            alpha = None
        if alpha is not None:
            notes.append(f"{name}: out of memory ({first}); predicted tiled at tile_size={tile}")
            return alpha
        free_cuda_memory()


def _predict_jobs(model: nn.Module, jobs: list[_Job], s: InferConfig, device: torch.device, trimap_cfg: Any,
                  report: PredictReport) -> list[_Job]:
    """Alphas for loaded jobs of one size: one batched forward when it fits, else one by one (with the
    out-of-memory retry). Returns the jobs that got an alpha; failures go into ``report``."""
    if len(jobs) > 1:
        try:
            with torch.inference_mode(), cudnn_benchmark(False), _eval_mode(model):
                alphas = _predict_batch(model, [j.image for j in jobs], [j.trimap for j in jobs], s,
                                        device=device, amp_dtype=resolve_amp(s.amp, device))
            for j, a in zip(jobs, alphas):
                j.alpha = a
            return jobs
        except Exception as e:  # noqa: BLE001 - retried one by one: the failing image gets the blame
            if is_oom(e):
                report.notes.append(f"batch of {len(jobs)} ran out of memory; predicted one by one")
        free_cuda_memory()
    done = []
    for j in jobs:
        try:
            j.alpha = _predict_with_oom_retry(model, j.image, j.trimap, s, device, trimap_cfg, report.notes, j.stem)
        except (ImageReadError, InferenceInputError) as e:
            report.failed.append((str(j.img_path), str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - a model error on one image must not stop the folder
            report.failed.append((str(j.img_path), f"{type(e).__name__}: {e}"))
            continue
        done.append(j)
    return done


def predict_folder(model: nn.Module, images: Any, out_dir: str | os.PathLike,
                   trimap_dir: str | os.PathLike | None = None, *, infer_cfg: Any = None,
                   device: str | torch.device | None = None, trimap_cfg: Any = None, skip_existing: bool = True,
                   rgba_dir: str | os.PathLike | None = None, headless: bool | None = None, verbose: bool = True,
                   producer: dict[str, Any] | None = None, force: bool = False, **settings: Any) -> PredictReport:
    """Predict every image of a folder (or manifest DataFrame with ``id``/``image``[/``trimap``] columns,
    or list of paths) to ``out_dir/<stem>.png`` (8-bit, rounded). Returns a :class:`PredictReport`.

    - Settings: ``infer_cfg`` (an ``InferConfig`` or a whole ``Config``, whose ``run.device`` and
      ``trimap`` then are the defaults of ``device`` and ``trimap_cfg``) with keyword ``settings``
      replacing single fields (as :func:`predict`); ``write_rgba`` and ``batch_size`` are among them.
      A :class:`~mattingkit.baselines.BaselinePredictor` gets its ``PREDICT_KWARGS`` (no padding,
      tiling or TTA) unless ``settings`` say otherwise; its notes go into the report.
    - Producer rule: ``out_dir/_source.json`` records what made the folder's PNGs — ``producer``
      (:func:`model_producer` of a checkpoint, :func:`baseline_producer` of a method; default
      :func:`module_producer` of ``model``) plus the settings that change pixels and whether trimaps
      were given. The same producer resumes; another producer is refused
      (:class:`~mattingkit.errors.RunStateError` saying who made the folder) unless ``force=True``,
      which deletes the folder's PNGs and starts afresh (``skip_existing=False`` does too).
    - Trimaps: ``trimap_dir/<stem>.<ext>`` when ``trimap_dir`` is given, else the DataFrame's ``trimap``
      column, else none (trimap-free). A missing trimap in ``trimap_dir`` is a per-image failure.
    - Resumable: with ``skip_existing`` an image whose output exists (and, with ``write_rgba``, whose
      cut-out exists) is skipped. Writes are atomic, so an interrupted run never leaves a partial PNG.
    - Pipelined: reader threads decode ahead (uint8), the model runs (``batch_size`` consecutive
      same-size images in one forward), writer threads encode and write; bounded queues keep memory flat.
    - Unreadable inputs, and any error raised while predicting or writing one image (e.g. inside the
      model), are recorded per file (name + error) and reported at the end; the loop continues. Out of
      GPU memory on one image → that image again, tiled at smaller tiles (a note in the report).
      ``KeyboardInterrupt`` stops the run (finished predictions already handed to the writers are written).
    - ``write_rgba``: also ``rgba_dir/<stem>.png`` (default ``out_dir/rgba``), RGBA with foreground
      colours from :func:`mattingkit.data.foreground.estimate_foreground`.

    Example:
        >>> import tempfile, numpy as np, torch
        >>> from mattingkit.io import write_png
        >>> class Gray(torch.nn.Module):
        ...     def forward(self, image, trimap):
        ...         return {"alpha": image.mean(1, keepdim=True)}
        >>> src = tempfile.mkdtemp(); _ = write_png(f"{src}/0007.png", np.full((8, 8, 3), .5, np.float32))
        >>> rep = predict_folder(Gray(), src, tempfile.mkdtemp(), verbose=False, headless=True)
        >>> rep.written
        ['0007']
    """
    t0 = time.monotonic()
    from .baselines import BaselinePredictor

    if isinstance(model, BaselinePredictor):
        settings = {**BaselinePredictor.PREDICT_KWARGS, **settings}
        notes_before = len(model.notes)
    s = infer_settings(infer_cfg, **settings)
    if device is None:
        device = getattr(getattr(infer_cfg, "run", None), "device", "cpu")
    if trimap_cfg is None:
        trimap_cfg = getattr(infer_cfg, "trimap", None)
    out_dir = Path(out_dir)
    rgba_root = Path(rgba_dir) if rgba_dir is not None else out_dir / "rgba"
    tri_root = _trimap_folder(trimap_dir, s)
    items = _items(images)
    with_trimap = tri_root is not None or any(t is not None for _, _, t in items)
    record = _record(producer if producer is not None else module_producer(model), s, with_trimap)
    claim_prediction_dir(out_dir, record, force=force, replace_other=not skip_existing, rgba_dir=rgba_root)
    report = PredictReport(out_dir=out_dir, producer=record)
    try:
        _run_folder(model, items, out_dir, rgba_root, tri_root, s, resolve_device(device), trimap_cfg,
                    skip_existing, report, headless, verbose)
    finally:
        if isinstance(model, BaselinePredictor):
            report.notes.extend(model.notes[notes_before:])
        report.seconds = time.monotonic() - t0
    if verbose:
        print(report.summary())
    return report


def _plan_jobs(items: list, out_dir: Path, rgba_root: Path, tri_root: Path | None, s: InferConfig,
               skip_existing: bool, report: PredictReport) -> list[_Job]:
    """The jobs of :func:`predict_folder`, in input order: duplicates, finished outputs (resume) and
    missing trimaps are recorded in ``report`` and left out."""
    seen: dict[str, Path] = {}
    jobs: list[_Job] = []
    for stem, img_path, tri_path in items:
        if stem in seen:
            report.failed.append((str(img_path), f"duplicate stem {stem!r} (also {seen[stem].name}); not written"))
            continue
        seen[stem] = img_path
        out_path, rgba_path = out_dir / f"{stem}.png", rgba_root / f"{stem}.png"
        alpha_done = skip_existing and _done(out_path)
        rgba_needed = s.write_rgba and not (skip_existing and _done(rgba_path))
        if alpha_done and not rgba_needed:
            report.skipped.append(stem)
            continue
        if tri_root is not None and not alpha_done:
            tri_path = _find_by_stem(tri_root, stem)
            if tri_path is None:
                report.failed.append((str(img_path), f"no trimap named {stem}.* in {tri_root}"))
                continue
        jobs.append(_Job(stem, img_path, tri_path, out_path, rgba_path if rgba_needed else None, alpha_done))
    return jobs


class _FolderPipeline:
    """Readers ahead (bounded queue of loads), the model in order (batches of one size), writers behind
    (bounded queue of saves). :meth:`close` always runs: started writes finish, so Ctrl-C leaves no
    partial PNG."""

    def __init__(self, model: nn.Module, jobs: list[_Job], s: InferConfig, device: torch.device, trimap_cfg: Any,
                 report: PredictReport, batch: int) -> None:
        import collections
        from concurrent.futures import ThreadPoolExecutor

        self.model, self.s, self.device, self.trimap_cfg, self.report = model, s, device, trimap_cfg, report
        self.batch = batch
        self.ahead, self.behind = 2 * batch + 2, 2 * batch + 2          # bounded queues: memory stays flat
        self.readers, self.writers = ThreadPoolExecutor(2, "mk-read"), ThreadPoolExecutor(2, "mk-write")
        self.loads: collections.deque = collections.deque()
        self.saves: collections.deque = collections.deque()
        self.todo = iter(jobs)

    # -- reader stage ------------------------------------------------------------------------
    def refill(self) -> None:
        while len(self.loads) < self.ahead:
            job = next(self.todo, None)
            if job is None:
                return
            self.loads.append((job, self.readers.submit(_load, job)))

    def next_loaded(self) -> _Job | None:
        """The next job in order, loaded; None (recorded as failed) when its inputs cannot be read."""
        job, fut = self.loads.popleft()
        self.refill()
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - unreadable input: recorded, the loop continues
            reason = str(e) if isinstance(e, (ImageReadError, InferenceInputError)) else f"{type(e).__name__}: {e}"
            self.report.failed.append((str(job.img_path), reason))
            return None
        return job

    # -- predict stage -----------------------------------------------------------------------
    def flush(self, group: list[_Job]) -> None:
        predicted = _predict_jobs(self.model, [j for j in group if not j.alpha_done], self.s, self.device,
                                  self.trimap_cfg, self.report)
        ok = set(map(id, predicted))
        for j in group:
            if j.alpha_done or id(j) in ok:
                self.saves.append((j, self.writers.submit(_save, j)))
        self.drain(self.behind)

    # -- writer stage ------------------------------------------------------------------------
    def drain(self, keep: int) -> None:
        while len(self.saves) > keep:
            job, fut = self.saves.popleft()
            try:
                fut.result()
                self.report.written.append(job.stem)
            except Exception as e:  # noqa: BLE001 - a write error on one image must not stop the folder
                self.report.failed.append((str(job.img_path), f"{type(e).__name__}: {e}"))

    def run(self, it: Any) -> None:
        """Read, batch, predict and write every job; ``it`` (or None) is ticked once per job read."""
        self.refill()
        group: list[_Job] = []
        while self.loads:
            job = self.next_loaded()
            if it is not None:
                next(it, None)
            if job is None:
                continue
            if job.alpha_done or (group and (len(group) >= self.batch or job.image.shape != group[0].image.shape)):
                self.flush(group)
                group = []
            if job.alpha_done:
                self.flush([job])
            else:
                group.append(job)
        self.flush(group)
        self.drain(0)

    def close(self) -> None:
        for _, fut in self.loads:
            fut.cancel()
        self.readers.shutdown(wait=True, cancel_futures=True)
        self.writers.shutdown(wait=True)       # started writes finish (atomically); Ctrl-C leaves no partial PNG


def _run_folder(model: nn.Module, items: list, out_dir: Path, rgba_root: Path, tri_root: Path | None,
                s: InferConfig, device: torch.device, trimap_cfg: Any, skip_existing: bool, report: PredictReport,
                headless: bool | None, verbose: bool) -> None:
    """The pipeline of :func:`predict_folder`: readers ahead, the model in order, writers behind."""
    from .progress import progress

    batch = max(1, int(getattr(s, "batch_size", 1))) if not s.two_pass else 1
    jobs = _plan_jobs(items, out_dir, rgba_root, tri_root, s, skip_existing, report)
    pipe = _FolderPipeline(model, jobs, s, device, trimap_cfg, report, batch)
    bar = progress(range(len(jobs)), desc="predict", headless=headless, unit="img") if verbose and jobs else None
    it = iter(bar) if bar is not None else None
    try:
        pipe.run(it)
    finally:
        pipe.close()
        if it is not None:
            next(it, None)
            if hasattr(bar, "close"):
                bar.close()
    order = {j.stem: i for i, j in enumerate(jobs)}
    report.written.sort(key=order.get)


def _trimap_folder(trimap_dir: str | os.PathLike | None, s: InferConfig) -> Path | None:
    if trimap_dir is None:
        return None
    if not Path(trimap_dir).is_dir():
        raise InputNotFoundError(f"{trimap_dir}: trimap folder not found")
    if s.two_pass:
        raise InferenceInputError("two_pass is trimap-free: do not pass trimap_dir with two_pass=True")
    return Path(trimap_dir)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """Load a generator for inference from ``best.pt`` / ``last.pt`` or the inference-only export.

    Returns ``(model, cfg)`` — the model on ``device`` in eval mode and the run's config (its
    ``cfg.infer`` holds the run's inference settings). Delegates to
    :func:`mattingkit.checkpoint.load_generator` (``torch.load(weights_only=True)``).

    Example:
        >>> model, cfg = load_model("runs/demo/checkpoints/best.pt")  # doctest: +SKIP
    """
    from .checkpoint import load_generator

    if not Path(path).exists():
        raise InputNotFoundError(f"{path}: checkpoint not found")
    dev = resolve_device(device)
    model, cfg = load_generator(path, dev)
    model.eval()
    return model, cfg


# --------------------------------------------------------------------------------------------
# A run's split: notebooks 04 (validation images) and 05 (competition test images)
# --------------------------------------------------------------------------------------------


@dataclass
class SplitPrediction:
    """What :func:`predict_split` did: the folder, the per-image report, the checkpoint (or baseline
    ``method``), the effective settings (``two_pass`` decided) and whether the items' trimaps were used."""

    out_dir: Path
    report: PredictReport
    checkpoint: Path | None
    settings: InferConfig
    with_trimap: bool
    method: str | None = None


def producer_key(checkpoint: str | os.PathLike, settings: InferConfig, with_trimap: bool) -> dict[str, Any]:
    """The :data:`PRODUCER_FILE` record of predictions by ``checkpoint`` with ``settings``: the checkpoint
    (path and SHA-256) and every setting that changes a pixel (what :func:`predict_folder` records)."""
    return _record(model_producer(checkpoint), settings, with_trimap)


def fresh_prediction_dir(out_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """``out_dir`` for predictions of the producer ``key`` used as a cache: PNGs another producer made are
    removed, so an interrupted run resumes but a new model (or new settings) never reuses stale
    predictions (:func:`claim_prediction_dir` with ``replace_other``)."""
    claim_prediction_dir(out_dir, key, replace_other=True)
    return Path(out_dir)


def predictor_for(method_or_checkpoint: str | os.PathLike, cfg: Any = None,
                  device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, producer)`` for :func:`predict_folder` from a baseline method name
    (:data:`mattingkit.baselines.METHODS`: a :class:`~mattingkit.baselines.BaselinePredictor`, which
    predict_folder runs with its ``PREDICT_KWARGS``) or a checkpoint path (the model on ``device``, default
    ``cfg.run.device`` or ``"cpu"``). The checkpoint's run config (``None`` for a method) is
    ``model.mattingkit_cfg`` (its ``infer`` and ``trimap`` sections are the checkpoint's settings).

    Example:
        >>> model, producer = predictor_for("closed_form")
        >>> type(model).__name__, producer["method"]
        ('BaselinePredictor', 'closed_form')
    """
    from .baselines import METHODS, BaselinePredictor

    if device is None:
        device = getattr(getattr(cfg, "run", None), "device", "cpu")
    name = str(method_or_checkpoint)
    if name in METHODS and not Path(name).is_file():
        model = BaselinePredictor(name)
        model.mattingkit_cfg = None
        return model, baseline_producer(name, max_pixels=model.max_pixels)
    model, mcfg = load_model(name, device=device)
    model.mattingkit_cfg = mcfg
    return model, model_producer(name)


def predict_split(checkpoint: str | os.PathLike | None, images: Any, out_dir: str | os.PathLike, cfg: Any, *,
                  headless: bool | None = None, verbose: bool = True, method: str | None = None,
                  force: bool = False) -> SplitPrediction:
    """Predict a run's split with the model of ``checkpoint`` (or the classical ``method``, with
    ``checkpoint=None``) into ``out_dir``: the one path of notebooks 04 and 05.

    ``images``: a manifest DataFrame (``id``, ``image``[, ``trimap``]) or a folder. ``cfg``: the run's
    ``Config`` (``infer`` settings, ``trimap`` thresholds, ``run.device``). A model trained with trimaps
    gets the items' trimaps when every item has one; otherwise prediction is trimap-free: two passes
    for a trimap model, ``infer.two_pass`` for a trimap-free one. A method needs every item's trimap.
    The folder is a cache under :func:`predict_folder`'s producer rule, except that another producer's
    PNGs are replaced rather than refused (``force`` replaces even the same producer's).
    """
    import pandas as pd

    from .baselines import BaselinePredictor

    if (checkpoint is None) == (method is None):
        raise InferenceInputError("predict_split needs a checkpoint or method=, not both")
    is_rows = isinstance(images, pd.DataFrame)
    has_trimaps = is_rows and "trimap" in images.columns and len(images) > 0 and bool((images["trimap"] != "").all())
    if method is not None:
        model, producer = predictor_for(method)
        if not has_trimaps:
            raise InferenceInputError(f"method {method!r} needs a trimap for every image (a 'trimap' column)")
        use_trimap, with_trimap = True, True
        settings = infer_settings(cfg, **BaselinePredictor.PREDICT_KWARGS, two_pass=False)
    else:
        model, mcfg = load_model(checkpoint, device=cfg.run.device)
        producer = model_producer(checkpoint)
        use_trimap = bool(getattr(mcfg.model, "use_trimap", True)) if mcfg is not None else True
        with_trimap = use_trimap and has_trimaps
        settings = infer_settings(cfg, two_pass=False if with_trimap else (use_trimap or bool(cfg.infer.two_pass)))
    if is_rows:
        images = images[["id", "image"] + (["trimap"] if with_trimap else [])]
    record = _record(producer, settings, with_trimap)
    claim_prediction_dir(out_dir, record, force=force, replace_other=True)
    report = predict_folder(model, images, out_dir, infer_cfg=settings, device=cfg.run.device, trimap_cfg=cfg.trimap,
                            headless=headless, verbose=verbose, producer=producer)
    return SplitPrediction(out_dir=Path(out_dir), report=report,
                           checkpoint=None if checkpoint is None else Path(checkpoint), settings=settings,
                           with_trimap=with_trimap, method=method)


def downscaled_copy(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, max_side: int) -> Path:
    """PNG copies of the images of ``src_dir`` with the long side capped at ``max_side`` (same stems),
    for quick low-resolution predictions; images already small enough are copied as PNG too."""
    from .viz import fit_side

    dst = Path(dst_dir)
    for p in list_images(src_dir, recursive=False):
        out = dst / f"{p.stem}.png"
        if not out.exists():
            write_png(out, np.clip(fit_side(read_image(p), max_side), 0, 1))
    return dst


__all__ = [
    "InferenceInputError", "PredictReport", "SplitPrediction", "TilingInfo", "core_window", "downscaled_copy",
    "PRODUCER_FILE", "baseline_producer", "claim_prediction_dir", "model_producer", "module_producer",
    "predictor_for", "fresh_prediction_dir", "infer_settings", "load_model", "padding", "predict", "predict_folder",
    "predict_passes", "predict_split", "producer_key", "resolve_amp", "resolve_context", "resolve_device",
    "tile_spans", "DEFAULT_CONTEXT", "PAD_MULTIPLE", "WINDOW_FLOOR",
]

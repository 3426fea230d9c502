"""Classical (training-free) matting baselines beside the learned models.

Methods (:data:`METHODS`), each ``(image float64 HxWx3 in [0, 1], trimap float64 HxW in {0, .5, 1}) -> alpha``:

- ``closed_form``: Levin et al. closed-form matting (pymatting's ``estimate_alpha_cf``);
- ``knn``: KNN matting (pymatting's ``estimate_alpha_knn``; about 10x slower than closed_form);
- ``trimap``: the trimap itself as the alpha (unknown -> 0.5): the floor every method must beat.

:func:`predict_baseline` is the one entry point: it validates the inputs, solves only the bounding box of
the unknown region (plus a margin of known pixels; exact for closed_form, whose windows reach 2 px), and
clamps the known regions to the trimap. The sparse solvers grow faster than the pixels solved (closed_form
on a 2-core CPU: 512² 5.8 s, 1000² 17 s and ~1.1 GB above the process's own memory; ``python
benchmarks/guide_solve.py``, docs/training.md), so above ``max_pixels`` the box is **downscaled**
(area interpolation; a low-res pixel is known only when every pixel under it is), solved, upsampled
bilinearly, and the known regions are put back exactly. Each time that happens a note says so
(``BaselineResult.notes`` / the ``notes`` list you pass): print it and keep it in the folder report.

:class:`BaselinePredictor` is a ``torch.nn.Module`` with a model's call signature
(``forward(image (N,3,H,W), trimap (N,1,H,W)) -> {"alpha": (N,1,H,W)}``), so
:func:`mattingkit.infer.predict` / ``predict_folder`` can run a baseline where a checkpoint would go;
pass ``**BaselinePredictor.PREDICT_KWARGS`` (no padding, no tiling: the baseline scales itself).

Example:
    >>> import numpy as np
    >>> tri = np.zeros((20, 20), np.float32); tri[5:15, 5:15] = 0.5; tri[8:12, 8:12] = 1
    >>> img = np.repeat(tri[..., None], 3, axis=2)
    >>> a = predict_baseline("trimap", img, tri)
    >>> a.dtype, float(a[10, 10]), float(a[6, 6]), float(a[0, 0])
    (dtype('float32'), 1.0, 0.5, 0.0)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import UsageError
from .names import BASELINES, check_keys
from .tiling import InferGeometry

#: Solve at most this many pixels (of the unknown region's bounding box) at full resolution; above, downscale.
DEFAULT_MAX_PIXELS = 1_000_000
#: Known pixels kept around the unknown region's bounding box (closed_form's windows reach 2 px).
BOX_MARGIN = 8


def _closed_form(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    from pymatting import estimate_alpha_cf  # lazy: numba compiles on first import

    return estimate_alpha_cf(image, trimap)


def _knn(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    from pymatting import estimate_alpha_knn

    return estimate_alpha_knn(image, trimap)


def _trimap(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    return trimap.copy()


#: name -> solver ``(image float64 HxWx3, trimap float64 HxW) -> alpha HxW`` (unclamped).
METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "closed_form": _closed_form,
    "knn": _knn,
    "trimap": _trimap,
}
check_keys("predict --method", METHODS, BASELINES)   # `mattingkit predict --help` lists them without torch
#: Methods whose cost grows with the solved area (the others are never downscaled).
SOLVERS = ("closed_form", "knn")


@dataclass
class BaselineResult:
    """What :func:`run_baseline` did: the alpha, the scale it was solved at (1.0 = full resolution), notes."""

    alpha: np.ndarray
    method: str
    scale: float = 1.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"unknown baseline method {method!r}; valid methods: {', '.join(METHODS)}")
    return method


def _check_inputs(image, trimap) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image)
    tri = np.asarray(trimap)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UsageError(f"baseline image must be HxWx3 RGB, got shape {img.shape}")
    if tri.ndim == 3 and tri.shape[2] == 1:
        tri = tri[..., 0]
    if tri.shape != img.shape[:2]:
        raise UsageError(f"trimap is {tri.shape}, image is {img.shape[:2]}: they must have the same size")
    img = img.astype(np.float64)
    if img.size and (img.min() < 0 or img.max() > 1):
        raise UsageError("baseline image must be float in [0, 1] (divide 8-bit images by 255)")
    tri = tri.astype(np.float64)
    tri = np.where(tri <= 0.25, 0.0, np.where(tri >= 0.75, 1.0, 0.5))  # {0, .5, 1}, as the metrics read it
    return img, tri


def _unknown_box(unknown: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows = np.flatnonzero(unknown.any(axis=1))
    cols = np.flatnonzero(unknown.any(axis=0))
    h, w = unknown.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def _downscale(img: np.ndarray, tri: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = tri.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    fg = cv2.resize((tri == 1).astype(np.float64), size, interpolation=cv2.INTER_AREA)
    bg = cv2.resize((tri == 0).astype(np.float64), size, interpolation=cv2.INTER_AREA)
    small_tri = np.full(fg.shape, 0.5)
    small_tri[fg >= 1 - 1e-9] = 1.0   # known only where every full-res pixel under it is known
    small_tri[bg >= 1 - 1e-9] = 0.0
    return np.clip(small, 0, 1), small_tri


#: What pymatting prints (to stdout) when its incomplete-Cholesky preconditioner fails; it then solves
#: without it. Kept as one note instead of a screenful in the middle of a training log.
PRECONDITIONER_NOTE = ("pymatting: the incomplete-Cholesky preconditioner failed on an ill-conditioned "
                       "matting Laplacian; solved without it (slower, same answer)")


def _solve(method: str, img: np.ndarray, tri: np.ndarray, notes: list[str]) -> np.ndarray:
    """The solver on a (box of a) trimap that has unknown pixels. With only one kind of known pixel
    the minimiser is that constant (the matting Laplacian's null space holds the constants), which
    pymatting refuses to compute: return it. pymatting's printed warnings become ``notes``."""
    import contextlib
    import io

    has_fg, has_bg = bool((tri == 1).any()), bool((tri == 0).any())
    if not (has_fg and has_bg):
        return np.where(tri == 0.5, 1.0 if has_fg else 0.0 if has_bg else 0.5, tri)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        alpha = METHODS[method](np.ascontiguousarray(img), np.ascontiguousarray(tri))
    text = printed.getvalue()
    if "PERFORMANCE WARNING" in text:
        notes.append(PRECONDITIONER_NOTE)
    elif text.strip():
        notes.append(f"{method}: " + " ".join(text.split()))
    return alpha


def run_baseline(method: str, image, trimap, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 margin: int = BOX_MARGIN, strict: bool = True) -> BaselineResult:
    """Like :func:`predict_baseline`, returning a :class:`BaselineResult` (alpha, scale, seconds, notes).
    ``strict=False`` returns an all-unknown trimap's 0.5 instead of refusing it (a guided model's crops).

    Example:
        >>> import numpy as np
        >>> tri = np.zeros((64, 64), np.float32); tri[16:48, 16:48] = 0.5; tri[24:40, 24:40] = 1
        >>> r = run_baseline("closed_form", np.repeat(tri[..., None], 3, 2), tri, max_pixels=400)
        >>> r.alpha.shape, r.scale < 1, "downscaled" in r.notes[0]
        ((64, 64), True, True)
    """
    t0 = time.perf_counter()
    _check_method(method)
    img, tri = _check_inputs(image, trimap)
    unknown = tri == 0.5
    result = BaselineResult(alpha=tri.astype(np.float32), method=method)
    if method in SOLVERS and unknown.any():
        if strict and not (tri != 0.5).any():
            raise UsageError(f"{method} needs a trimap with known pixels (0 = background, 1 = foreground); "
                             f"this one is all unknown (a trimap-free input?)")
        ys, xs = _unknown_box(unknown, margin)
        box_img, box_tri = img[ys, xs], tri[ys, xs]
        bh, bw = box_tri.shape
        scale = 1.0
        if max_pixels is not None and bh * bw > max_pixels:
            scale = math.sqrt(max_pixels / (bh * bw))
            box_img, box_tri = _downscale(box_img, box_tri, scale)
        if (box_tri == 0.5).any():
            box_alpha = _solve(method, box_img, box_tri, result.notes)
        else:
            box_alpha = box_tri
        box_alpha = np.nan_to_num(np.asarray(box_alpha, np.float64), nan=0.5)
        if scale != 1.0:
            import cv2

            box_alpha = cv2.resize(box_alpha, (bw, bh), interpolation=cv2.INTER_LINEAR)
            sh, sw = box_tri.shape
            result.notes.append(
                f"{method}: unknown-region box {bw}x{bh} = {bw * bh} px > max_pixels={max_pixels}: downscaled "
                f"{scale:.3f}x, solved at {sw}x{sh}, alpha upsampled bilinearly; known regions exact")
        result.scale = scale
        alpha = tri.copy()
        alpha[ys, xs] = box_alpha
        result.alpha = alpha.astype(np.float32)
    alpha = np.clip(result.alpha, 0.0, 1.0)
    alpha[tri == 0] = 0.0
    alpha[tri == 1] = 1.0
    result.alpha = alpha.astype(np.float32)
    result.seconds = time.perf_counter() - t0
    return result


def predict_baseline(method: str, image, trimap, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     margin: int = BOX_MARGIN, notes: list[str] | None = None) -> np.ndarray:
    """Alpha (float32 HxW in [0, 1]) of a classical ``method`` (see :data:`METHODS`) for one image.

    ``image`` float RGB HxWx3 in [0, 1]; ``trimap`` HxW in {0, .5, 1}. Known regions are exactly the
    trimap's. Above ``max_pixels`` (of the unknown region's bounding box) the solve is downscaled
    (``None``: never); what was done is appended to ``notes`` when given.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> gt = np.clip(np.linspace(-0.5, 1.5, 48), 0, 1)[None, :].repeat(32, 0).astype(np.float32)
        >>> fg, bg = np.array([0.9, 0.2, 0.1]), np.array([0.1, 0.3, 0.8])
        >>> img = gt[..., None] * fg + (1 - gt[..., None]) * bg
        >>> tri = np.where(gt == 0, 0.0, np.where(gt == 1, 1.0, 0.5)).astype(np.float32)
        >>> cf = predict_baseline("closed_form", img, tri)
        >>> bool(np.abs(cf - gt).mean() < 0.01), bool(np.abs(tri - gt).mean() > 0.05)
        (True, True)
    """
    result = run_baseline(method, image, trimap, max_pixels=max_pixels, margin=margin)
    if notes is not None:
        notes.extend(result.notes)
    return result.alpha


class BaselinePredictor(nn.Module):
    """A classical method with a model's call signature, for :func:`mattingkit.infer.predict` /
    ``predict_folder``: ``forward(image (N,3,H,W) in [0,1], trimap (N,1,H,W)) -> {"alpha": (N,1,H,W)}``.

    Has no parameters (runs on CPU; inputs on another device are moved back). Notes from downscaled
    solves collect in ``self.notes`` (one per image that needed it); ``self.seconds`` sums solve times.
    Call predict with ``**BaselinePredictor.PREDICT_KWARGS``: no reflect padding (it would add pixels to
    solve), no tiling (the baseline downscales on its own), no flip TTA (it would solve twice).

    Example:
        >>> import numpy as np
        >>> from mattingkit.infer import predict
        >>> tri = np.zeros((40, 40), np.float32); tri[10:30, 10:30] = 0.5; tri[15:25, 15:25] = 1
        >>> img = np.repeat(tri[..., None], 3, 2)
        >>> bp = BaselinePredictor("trimap")
        >>> a = predict(bp, img, tri, **BaselinePredictor.PREDICT_KWARGS)
        >>> a.shape, float(a[12, 12]), bp.method
        ((40, 40), 0.5, 'trimap')
    """

    PREDICT_KWARGS = {"pad_margin": 0, "pixel_budget": 1 << 62, "tta_flip": False, "amp": "off"}
    #: no receptive-field limit (a global solve): tiling would change the result
    infer_geometry = InferGeometry(tile_context=1 << 30)

    def __init__(self, method: str = "closed_form", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 margin: int = BOX_MARGIN, strict: bool = True):
        super().__init__()
        self.method = _check_method(method)
        self.max_pixels = max_pixels
        self.margin = margin
        self.strict = strict
        self.notes: list[str] = []
        self.seconds = 0.0

    def extra_repr(self) -> str:
        return f"method={self.method!r}, max_pixels={self.max_pixels}"

    def forward(self, image: torch.Tensor, trimap: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3 or trimap.ndim != 4 or trimap.shape[1] != 1:
            raise UsageError(f"BaselinePredictor expects image (N,3,H,W) and trimap (N,1,H,W), got "
                             f"{tuple(image.shape)} and {tuple(trimap.shape)}")
        imgs = image.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        tris = trimap.detach().float().cpu()[:, 0].numpy()
        out = []
        for img, tri in zip(imgs, tris):
            r = run_baseline(self.method, img, tri, max_pixels=self.max_pixels, margin=self.margin,
                             strict=self.strict)
            self.notes.extend(n for n in r.notes if n != PRECONDITIONER_NOTE or n not in self.notes)  # once
            self.seconds += r.seconds
            out.append(torch.from_numpy(r.alpha))
        alpha = torch.stack(out)[:, None].to(device=image.device, dtype=torch.float32)
        return {"alpha": alpha}


__all__ = ["BaselinePredictor", "BaselineResult", "DEFAULT_MAX_PIXELS", "METHODS", "predict_baseline",
           "run_baseline"]

"""The compact transport form of a training item: 8/16-bit tensors from the workers, float32 on the device.

A DataLoader worker sends each finished training item as ``image`` / ``fg`` / ``bg`` uint8
(``rint(x * 255)``), ``alpha`` uint16 (``rint(a * 65535)``) and ``trimap`` uint8 0 / 128 / 255, CHW,
without ``unknown`` -- 3.1 MB instead of 12.6 MB per 512x512 item (:func:`to_compact_item`). The
training process turns a batch of them back into the package's float32 convention after moving it to
the device (:func:`compact_to_float`, through :func:`mattingkit.data.datasets.batch_to_float`). The
largest rounding errors are 0.5/255 for image / fg / bg and 0.5/65535 for alpha, none for the trimap.

This module sits below :mod:`~mattingkit.data.device_augment` and :mod:`~mattingkit.data.datasets`
(both use :func:`quantise`), so the two need not import each other.

Example:
    >>> s = {k: np.full((4, 5, 3), 0.5, np.float32) for k in ("image", "fg", "bg")}
    >>> s.update(alpha=np.full((4, 5), 0.25, np.float32), trimap=np.full((4, 5), .5, np.float32), id="a")
    >>> f = compact_to_float(to_compact_item(s))
    >>> f["image"].dtype, round(float(f["alpha"][0, 0, 0]), 5), float(f["unknown"].min())
    (torch.float32, 0.25, 1.0)
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

#: Compact transport: the integer scale of each array (``x_int = rint(x * scale)``) and its dtype.
#: (``guide``, a guided model's classical solve of the crop, only when ``model.guide`` is set: as alpha.)
COMPACT_SCALE = {"image": 255, "fg": 255, "bg": 255, "alpha": 65535, "trimap": 255, "guide": 65535}
COMPACT_DTYPE = {"image": np.uint8, "fg": np.uint8, "bg": np.uint8, "alpha": np.uint16, "trimap": np.uint8,
                 "guide": np.uint16}
#: The uint8 code of an unknown trimap pixel in a compact item (0.5 -> 128, as trimap PNGs on disk).
TRIMAP_UNKNOWN_CODE = 128



def quantise(x: np.ndarray, scale: int, dtype: Any = np.uint8) -> np.ndarray:
    """``rint(x * scale)`` as ``dtype``, clipped to ``[0, scale]``: float in [0, 1] -> 8/16-bit
    (round half to even, never truncation; the error is at most ``0.5 / scale``).

    Example:
        >>> quantise(np.array([0.0, 0.5, 0.999, 1.0], np.float32), 255).tolist()
        [0, 128, 255, 255]
    """
    if scale == 255 and np.dtype(dtype) == np.uint8 and x.dtype == np.float32 and x.ndim in (2, 3) \
            and x.shape[-1] <= 4 and float(x.min()) >= 0:
        # OpenCV's saturating conversion in one pass, without temporaries: x * 255 in float32, then
        # round half to even (cvRound) -- the same values as below (tests/test_datasets.py checks it)
        return cv2.convertScaleAbs(x, alpha=255)
    y = np.multiply(x, np.float32(scale), dtype=np.float32)
    np.rint(y, out=y)
    np.clip(y, np.float32(0), np.float32(scale), out=y)   # (float32 bounds: numpy's fast path)
    return y.astype(dtype)


def _chw_int(x: np.ndarray) -> torch.Tensor:
    if x.ndim == 2:
        return torch.from_numpy(x[None])
    # per-channel planes (cv2.split) are faster than numpy's strided transpose copy
    return torch.from_numpy(np.stack(cv2.split(x)) if x.shape[2] <= 4 else np.ascontiguousarray(x.transpose(2, 0, 1)))


def to_compact_item(sample: dict[str, Any]) -> dict[str, Any]:
    """A finished numpy sample -> a compact item: ``image`` / ``fg`` / ``bg`` uint8, ``alpha``
    uint16, ``trimap`` uint8 (0 / 128 / 255), a guided model's ``guide`` uint16 (as alpha), CHW, no ``unknown`` (see the module docstring);
    :func:`compact_to_float` turns it (or a batch of them) into the float32 form of
    :func:`mattingkit.data.datasets.to_item`.

    Example:
        >>> s = {k: np.full((4, 5, 3), 0.5, np.float32) for k in ("image", "fg", "bg")}
        >>> s.update(alpha=np.full((4, 5), 0.25, np.float32), trimap=np.full((4, 5), .5, np.float32), id="a")
        >>> it = to_compact_item(s); it["image"].dtype, it["alpha"].dtype, int(it["trimap"][0, 0, 0])
        (torch.uint8, torch.uint16, 128)
        >>> f = compact_to_float(it); round(float(f["alpha"][0, 0, 0]), 5), float(f["unknown"].min()), f["id"]
        (0.25, 1.0, 'a')
    """
    out: dict[str, Any] = {}
    for k in ("image", "alpha", "trimap", "fg", "bg", "guide"):
        if k == "guide" and k not in sample:
            continue
        x = sample[k]
        if x.dtype != COMPACT_DTYPE[k]:
            x = quantise(x, COMPACT_SCALE[k], COMPACT_DTYPE[k])
        out[k] = _chw_int(x)
    out["id"] = str(sample["id"])
    if "orig_size" in sample:
        out["orig_size"] = tuple(int(v) for v in sample["orig_size"])
    return out


def compact_to_float(batch: dict[str, Any]) -> dict[str, Any]:
    """A compact batch or item (:func:`to_compact_item`, collated or not) -> the float32 form:
    ``image`` / ``fg`` / ``bg`` ``x / 255``, ``alpha`` and ``guide`` ``x / 65535`` (uint16; ``x / 255`` if uint8),
    ``trimap`` 0 / 128 / 255 -> 0 / 0.5 / 1, ``unknown`` added (``trimap == 0.5``). Float tensors
    pass through untouched, so this is a no-op on float batches (any device; run it after the move
    to the device: the copy is then 4x smaller). Returns a new dict; other entries are shared.

    Example:
        >>> b = {"image": torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8),
        ...      "trimap": torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8), "id": ["a"]}
        >>> f = compact_to_float(b)
        >>> f["image"].dtype, f["trimap"].flatten().tolist(), f["unknown"].flatten().tolist()
        (torch.float32, [0.0, 0.5, 1.0], [0.0, 1.0, 0.0])
        >>> compact_to_float(f)["image"] is f["image"]
        True
    """
    out = dict(batch)
    for k in ("image", "fg", "bg", "alpha", "guide"):
        v = out.get(k)
        if isinstance(v, torch.Tensor) and not v.is_floating_point():
            scale = 65535.0 if v.dtype == torch.uint16 else 255.0
            # (a float32 copy divided in place: correctly rounded, the same values as numpy's x / 255
            # in mattingkit.io; torch's mixed-dtype v.div(255.0) is ~20x slower on CPU)
            out[k] = v.to(torch.float32).div_(scale)
    t = out.get("trimap")
    if isinstance(t, torch.Tensor) and not t.is_floating_point():
        if t.dtype != torch.uint8:
            raise TypeError(f"compact_to_float: a compact trimap must be uint8 0/128/255, got {t.dtype}")
        tri = t.to(torch.float32).div_(127.5).round_().mul_(0.5)   # 0 / 128 / 255 -> 0 / 1 / 2 -> 0 / .5 / 1
        out["trimap"] = tri
        out["unknown"] = torch.eq(tri, 0.5, out=torch.empty_like(tri))
    return out

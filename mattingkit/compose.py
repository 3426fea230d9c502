"""The one composition formula: ``I = alpha * F + (1 - alpha) * B``.

Everything in mattingkit that makes an image from a foreground, a background and an alpha (online
training composition, the composition loss, the discriminator's real and fake inputs, RGBA cut-outs,
figures) goes through :func:`composite`, so there is exactly one place that defines it.

Two array flavours are accepted, never mixed:

- numpy, channels last: ``fg``/``bg`` ``(H, W, 3)`` (or anything broadcastable to it, e.g. a colour
  ``(3,)``), ``alpha`` ``(H, W)`` or ``(H, W, 1)``; float arrays in [0, 1].
- torch, channels first: ``fg``/``bg`` ``(N, 3, H, W)`` (or broadcastable, e.g. ``(1, 3, 1, 1)``),
  ``alpha`` ``(N, 1, H, W)``; float tensors in [0, 1]. Differentiable in all three inputs.

The formula is applied as is: no clipping, no rounding, no dtype change beyond normal promotion. torch is
imported for tensors only, so this module (and :mod:`mattingkit.data.augment`, whose choices the config
check reads) imports without it.

Example:
    >>> import numpy as np
    >>> fg = np.ones((2, 2, 3), np.float32); bg = np.zeros((2, 2, 3), np.float32)
    >>> alpha = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    >>> composite(fg, bg, alpha)[..., 0].tolist()
    [[0.0, 0.25], [0.5, 1.0]]
"""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")

__all__ = ["composite"]


def _check_float(name: str, x: np.ndarray | torch.Tensor) -> None:
    if not isinstance(x, np.ndarray):
        if not x.is_floating_point():
            raise TypeError(f"composite: {name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    elif not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"composite: {name} must be a float array in [0, 1], got dtype {x.dtype} "
            "(convert 8-bit data with x.astype(np.float32) / 255)"
        )


def _composite_numpy(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    if alpha.ndim == 2:
        alpha = alpha[..., None]
    if alpha.ndim != 3 or alpha.shape[-1] != 1:
        raise ValueError(
            f"composite: numpy alpha must be (H, W) or (H, W, 1), got shape {tuple(alpha.shape)}"
        )
    for name, x in (("fg", fg), ("bg", bg)):
        if x.ndim == 0 or x.shape[-1] not in (1, 3):
            raise ValueError(
                f"composite: numpy {name} must be channels-last (H, W, 3) or a colour (3,), "
                f"got shape {tuple(x.shape)}"
            )
    try:
        shape = np.broadcast_shapes(fg.shape, bg.shape, alpha.shape)
    except ValueError:
        raise ValueError(
            f"composite: shapes do not match: fg {tuple(fg.shape)}, bg {tuple(bg.shape)}, "
            f"alpha {tuple(alpha.shape)}"
        ) from None
    if shape[:2] != alpha.shape[:2]:
        raise ValueError(
            f"composite: fg {tuple(fg.shape)} / bg {tuple(bg.shape)} are larger than "
            f"alpha {tuple(alpha.shape)}"
        )
    return alpha * fg + (1.0 - alpha) * bg


def _composite_torch(fg: torch.Tensor, bg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    import torch

    if alpha.ndim != 4 or alpha.shape[1] != 1:
        raise ValueError(f"composite: torch alpha must be (N, 1, H, W), got shape {tuple(alpha.shape)}")
    for name, x in (("fg", fg), ("bg", bg)):
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"composite: torch {name} must be (N, 3, H, W) (or broadcastable like (1, 3, 1, 1)), "
                f"got shape {tuple(x.shape)}"
            )
    try:
        shape = torch.broadcast_shapes(fg.shape, bg.shape, alpha.shape)
    except RuntimeError:
        raise ValueError(
            f"composite: shapes do not match: fg {tuple(fg.shape)}, bg {tuple(bg.shape)}, "
            f"alpha {tuple(alpha.shape)}"
        ) from None
    if shape[0] != alpha.shape[0] or shape[2:] != alpha.shape[2:]:
        raise ValueError(
            f"composite: fg {tuple(fg.shape)} / bg {tuple(bg.shape)} are larger than "
            f"alpha {tuple(alpha.shape)}"
        )
    return alpha * fg + (1.0 - alpha) * bg


def composite(fg: ArrayT, bg: ArrayT, alpha: ArrayT) -> ArrayT:
    """Return ``alpha * fg + (1 - alpha) * bg`` for numpy (HxWx3) or torch (Nx3xHxW) inputs.

    Args:
        fg: foreground colours, float in [0, 1]: numpy ``(H, W, 3)`` / torch ``(N, 3, H, W)``,
            or anything broadcastable to that (a single colour, a batch of one).
        bg: background colours, same rules as ``fg``.
        alpha: opacity in [0, 1]: numpy ``(H, W)`` or ``(H, W, 1)`` / torch ``(N, 1, H, W)``.

    Returns:
        The composite, numpy ``(H, W, 3)`` or torch ``(N, 3, H, W)``.

    Raises:
        TypeError: the inputs mix numpy and torch, or are not floating point.
        ValueError: the shapes do not fit together (the message lists them).

    Example:
        >>> import torch
        >>> fg = torch.ones(1, 3, 1, 2); bg = torch.zeros(1, 3, 1, 2)
        >>> composite(fg, bg, torch.tensor([[[[0.25, 1.0]]]]))[0, 0].tolist()
        [[0.25, 1.0]]
    """
    kinds = {type(x) for x in (fg, bg, alpha)}
    if all(isinstance(x, np.ndarray) for x in (fg, bg, alpha)):
        for name, x in (("fg", fg), ("bg", bg), ("alpha", alpha)):
            _check_float(name, x)
        return _composite_numpy(fg, bg, alpha)
    import torch

    if all(isinstance(x, torch.Tensor) for x in (fg, bg, alpha)):
        for name, x in (("fg", fg), ("bg", bg), ("alpha", alpha)):
            _check_float(name, x)
        return _composite_torch(fg, bg, alpha)
    names = ", ".join(sorted(k.__module__ + "." + k.__name__ for k in kinds))
    raise TypeError(f"composite: fg, bg and alpha must all be numpy arrays or all torch tensors, got {names}")

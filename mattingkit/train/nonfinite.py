"""Non-finite (NaN/inf) training steps -- a non-finite loss, or (without fp16's GradScaler, which checks
them itself) a non-finite gradient: skipped on the device, counted on the device, read at log and
checkpoint steps only (no host sync per step); ``train.max_nonfinite`` in a row stop the run.

Example:
    >>> import torch
    >>> bad = BadSteps(torch.device("cpu"), limit=2)
    >>> for ok in (True, False, False, True):
    ...     bad.update(torch.tensor(ok))
    >>> bad.sync(); bad.total, bad.in_a_row     # (a checkpoint's read)
    (2, 0)
    >>> bad.check(step=4)                       # (a log step's: 2 in a row since the last check)
    Traceback (most recent call last):
    mattingkit.train.nonfinite.NonFiniteLossError: 2 non-finite losses in a row (step 4, 2 in total): ...
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import MattingKitError


class NonFiniteLossError(MattingKitError, RuntimeError):
    """Too many non-finite (NaN/inf) losses in a row: the run stops instead of training on garbage."""


class BadSteps:
    """The counts of skipped (non-finite) steps: device tensors updated every step, host numbers
    (``in_a_row``, ``total``) refreshed by :meth:`sync`."""

    def __init__(self, device: torch.device, limit: int):
        self.limit = int(limit)
        self.in_a_row = 0
        self.total = 0

        def zero() -> torch.Tensor:
            return torch.zeros((), dtype=torch.int64, device=device)

        self._run, self._run_max, self._total = zero(), zero(), zero()  # now, its peak since the read, since the read

    def update(self, finite: torch.Tensor) -> None:
        """Count one step (``finite``: a device bool); nothing waits for the device."""
        bad = (~finite).to(torch.int64)
        self._run = (self._run + 1) * bad
        self._run_max = torch.maximum(self._run_max, self._run)
        self._total = self._total + bad

    def sync(self) -> None:
        """Read the device counters into ``total`` / ``in_a_row`` (a host sync: at log / checkpoint time only)."""
        self.total += int(self._total)
        self.in_a_row = int(self._run)
        self._total.zero_()

    def check(self, step: int) -> None:
        """``limit`` non-finite steps in a row since the last check stop the run (:class:`NonFiniteLossError`)."""
        self.sync()
        peak = int(self._run_max)
        self._run_max.copy_(self._run)
        if peak >= self.limit:
            raise NonFiniteLossError(
                f"{peak} non-finite losses in a row (step {step}, {self.total} in total): stopping. Lower "
                f"train.lr_g / lr_d, set train.grad_clip, use train.amp=off or bf16, or check the data "
                f"(train.max_nonfinite={self.limit}).")

    def state_dict(self) -> dict:
        self.sync()
        return {"in_a_row": self.in_a_row, "total": self.total}

    def load_state_dict(self, state: Mapping) -> None:
        """A resumed run continues its counts."""
        self.in_a_row, self.total = int(state.get("in_a_row", 0)), int(state.get("total", 0))
        self._run.fill_(self.in_a_row)


def grads_finite(opt: torch.optim.Optimizer) -> torch.Tensor:
    """A device bool: every gradient of ``opt``'s parameters is finite (the largest magnitude is; NaN
    propagates through the max). A loss can be finite while its gradients are not (an overflow in a
    backward pass); without a GradScaler nothing else would catch it before the optimiser step.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([1.0, float("inf")])
        >>> bool(grads_finite(torch.optim.Adam([p])))
        False
    """
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    return torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")))


def step_unless_nonfinite(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, finite: torch.Tensor,
                          grad_clip: float | None = None) -> None:
    """Clip (``grad_clip``), then step unless ``finite`` (a device bool) is False, without waiting for the
    device: a fused optimiser skips on the device (``found_inf``); fp16's GradScaler skips non-finite
    gradients itself; any other optimiser falls back to reading the flag.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
        >>> opt = torch.optim.Adam([p], lr=0.1, fused=True)
        >>> step_unless_nonfinite(opt, torch.amp.GradScaler("cpu", enabled=False), torch.tensor(False))
        >>> p.tolist()                                              # skipped on the device
        [1.0, 1.0]
    """
    if grad_clip:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)
    if scaler.is_enabled():
        scaler.step(opt)
        scaler.update()
    elif opt.defaults.get("fused"):
        opt.found_inf = (~finite).to(torch.float32).reshape(())
        try:
            opt.step()
        finally:
            del opt.found_inf
    elif bool(finite):
        opt.step()


__all__ = ["BadSteps", "NonFiniteLossError", "grads_finite", "step_unless_nonfinite"]

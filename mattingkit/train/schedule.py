"""Learning-rate schedules stepped per iteration: warm-up x (constant | cosine | cyclic | plateau)."""
from __future__ import annotations

import math
from typing import Mapping

import torch

from ..config import BEST_MODES, SCHEDULES, ConfigError  # the one table config.py checks against


class LRSchedule:
    """Sets ``lr`` of every param group of ``optimizer`` from the iteration number.

    ``lr(it) = base_lr x warmup(it) x shape(it) x plateau_scale``; only the plateau part has state
    (:meth:`state_dict`), everything else is a pure function of ``it``.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> s = LRSchedule(opt, 1.0, total_steps=100, schedule="cosine", warmup_steps=10, min_lr_ratio=0.0)
        >>> [round(s.lr_at(i), 3) for i in (0, 9, 10, 55, 99)]
        [0.1, 1.0, 1.0, 0.5, 0.0]
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, base_lr: float, total_steps: int,
                 schedule: str = "cosine", warmup_steps: int = 0, min_lr_ratio: float = 0.01,
                 cycle_steps: int = 2000, plateau_patience: int = 3, plateau_factor: float = 0.5,
                 mode: str = "min"):
        if schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule={schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
        if mode not in BEST_MODES:
            raise ConfigError(f"train.best_mode={mode!r}; choose min or max")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total = max(1, int(total_steps))
        self.schedule = schedule
        self.warmup = max(0, int(warmup_steps))
        self.min_ratio = float(min_lr_ratio)
        self.cycle = max(2, int(cycle_steps))
        self.patience = int(plateau_patience)
        self.factor = float(plateau_factor)
        self.mode = mode
        self.scale = 1.0          # plateau multiplier
        self.best: float | None = None
        self.bad = 0

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer | None, base_lr: float, t) -> "LRSchedule":
        """The schedule ``train`` settings (``t``, a TrainConfig) describe, for one optimiser."""
        return cls(optimizer, base_lr, total_steps=t.steps, schedule=t.schedule, warmup_steps=t.warmup_steps,
                   min_lr_ratio=t.min_lr_ratio, cycle_steps=t.cycle_steps, plateau_patience=t.plateau_patience,
                   plateau_factor=t.plateau_factor, mode=t.best_mode)

    def lr_at(self, it: int) -> float:
        lr = self.base_lr
        if self.warmup and it < self.warmup:
            lr *= (it + 1) / self.warmup
        if self.schedule == "cosine":
            span = max(1, self.total - self.warmup)
            p = min(1.0, max(0.0, (it - self.warmup) / span))
            lr *= self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        elif self.schedule == "cyclic":
            pos = (it % self.cycle) / self.cycle
            tri = 1.0 - abs(2.0 * pos - 1.0)  # 0 -> 1 -> 0 over one cycle
            lr *= self.min_ratio + (1 - self.min_ratio) * tri
        elif self.schedule == "plateau":
            lr *= max(self.scale, self.min_ratio)
        return lr

    def step(self, it: int) -> float:
        """Set the learning rate for iteration ``it`` (0-based); returns it."""
        lr = self.lr_at(it)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return lr

    def observe(self, value: float) -> bool:
        """Feed one validation value (plateau schedule); returns True when the lr was reduced."""
        if self.schedule != "plateau" or value is None or not math.isfinite(value):
            return False
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.bad = float(value), 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.scale *= self.factor
            self.bad = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: Mapping) -> None:
        self.scale = float(state.get("scale", 1.0))
        self.best = state.get("best")
        self.bad = int(state.get("bad", 0))


__all__ = ["BEST_MODES", "LRSchedule", "SCHEDULES"]

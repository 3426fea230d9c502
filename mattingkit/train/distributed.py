"""Single-process or multi-process (HF Accelerate, PyTorch DDP underneath) training: the few collective
operations the trainer needs."""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ..device import HOST


class Dist:
    """The few distributed operations the trainer needs; plain single-process versions unless
    ``WORLD_SIZE`` > 1, in which case an :class:`accelerate.Accelerator` does the work."""

    def __init__(self, device: str = "auto", find_unused_parameters: bool = False,
                 timeout_s: float | None = None):
        self.accelerator = None
        self.timeout = None
        world = int(os.environ.get("WORLD_SIZE", "1"))
        want_cpu = device == HOST.type or (device == "auto" and not torch.cuda.is_available())
        if world > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

            from ..device import dist_timeout

            # An explicit process-group timeout (train.dist_timeout_s): NCCL's 600 s default is shorter
            # than some one-rank set-up work while the others wait at a barrier.
            self.timeout = dist_timeout(timeout_s)
            self.accelerator = Accelerator(
                cpu=want_cpu, mixed_precision="no",
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters),
                                 InitProcessGroupKwargs(timeout=self.timeout)],
            )
            self.device = torch.device(self.accelerator.device.type) if want_cpu else self.accelerator.device
            self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        else:
            self.device = HOST if want_cpu else torch.device("cuda" if device == "auto" else device)
            self.rank, self.world = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.accelerator is None:
            return model.to(self.device)
        return self.accelerator.prepare_model(model)

    def no_sync(self, model: nn.Module, skip: bool):
        if self.accelerator is None or not skip or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator is None:
            return values
        import torch.distributed as tdist

        t = values.to(self.device).clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        if self.accelerator is None:
            return bool(flag)
        return bool(self.sum(torch.tensor([float(flag)], dtype=torch.float64)).item() > 0)

    def broadcast_flag(self, flag: bool) -> bool:
        """The main process's decision, on every process."""
        if self.accelerator is None:
            return bool(flag)
        return bool(self.sum(torch.tensor([float(flag) if self.is_main else 0.0], dtype=torch.float64)).item())

    def main_says(self, flag: bool, may_wait: bool) -> bool:
        """The main process's ``flag`` on every process (:meth:`broadcast_flag`); with several processes that
        is an all-reduce the host waits for, so only where ``may_wait`` (a log step), else False.

        Example:
            >>> Dist("cpu").main_says(True, may_wait=False)   # one process: nothing to wait for
            True
        """
        if self.accelerator is not None and not may_wait:
            return False
        return self.broadcast_flag(flag)

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


__all__ = ["Dist"]

"""The training data stream: deterministic global batches of ``(epoch, index)`` pairs sharded over
processes, the dataset wrapper that serves them, and the move of a batch to the device."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch

from ..config import ConfigError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a permutation of ``range(n)`` from (seed, epoch) only."""
    return np.random.default_rng([int(seed), int(epoch), 0x6D6B]).permutation(n)


class BatchStream:
    """Endless batches of ``(epoch, index)`` pairs, deterministic in (seed, position), sharded by rank.

    The stream is the concatenation of per-epoch permutations cut into *global* batches of
    ``batch_size * world_size`` items; process ``rank`` gets slice ``rank`` of each global batch.
    ``start`` (in global batches) resumes mid-epoch without replaying anything.

    Example:
        >>> s = iter(BatchStream(5, batch_size=2, seed=0))
        >>> [len(next(s)) for _ in range(3)], next(s)[0][0]   # epochs roll over inside batches
        ([2, 2, 2], 1)
    """

    def __init__(self, n: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0,
                 start: int = 0):
        if n < 1:
            raise ValueError("the training set is empty: no samples to train on")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.n, self.b, self.seed = n, batch_size, seed
        self.world, self.rank, self.start = world_size, rank, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gb = self.b * self.world
        k = self.start
        cache: dict[int, np.ndarray] = {}
        while True:
            lo = k * gb + self.rank * self.b
            items = []
            for j in range(lo, lo + self.b):
                epoch, pos = divmod(j, self.n)
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = epoch_permutation(self.n, self.seed, epoch)
                items.append((epoch, int(cache[epoch][pos])))
            yield items
            k += 1


class EpochIndexed(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` calls ``set_epoch(epoch)`` (if any) then ``[index]``."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._epoch = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._epoch = epoch
        return self.dataset[index]


def make_loader(dataset, cfg, rank: int, world: int, step: int, num_workers: int,
                pin_memory: bool) -> Iterator[dict]:
    """The training batches from step ``step`` on: a DataLoader over :class:`BatchStream` (``accum_steps``
    micro-batches per step), with its own generator (creating the iterator must not consume the global
    RNG: exact resume).

    Example:
        >>> from mattingkit.config import load_config
        >>> cfg = load_config("demo", ["data.batch_size=2"])
        >>> batch = next(make_loader([{"x": i} for i in range(5)], cfg, 0, 1, step=0, num_workers=0,
        ...                          pin_memory=False))
        >>> batch["x"].shape
        torch.Size([2])
    """
    stream = BatchStream(len(dataset), cfg.data.batch_size, cfg.run.seed, world, rank,
                         start=step * cfg.train.accum_steps)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        try:
            from ..data.datasets import worker_init_fn

            kwargs["worker_init_fn"] = worker_init_fn
        except ImportError:
            pass
        kwargs["prefetch_factor"] = 2
    gen = torch.Generator().manual_seed(cfg.run.seed + 1000003 * rank)
    loader = torch.utils.data.DataLoader(EpochIndexed(dataset), batch_sampler=stream, num_workers=num_workers,
                                         pin_memory=pin_memory, generator=gen, **kwargs)
    return iter(loader)


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict:
    """A batch dict on ``device``: tensors moved, compact (uint8/uint16) training batches converted to
    float32 there (device-side augmentation renders them there too), then 4-D float tensors made
    ``channels_last`` when asked (after rendering: the rendered batch is what the model sees)."""
    from ..data.datasets import batch_to_float

    out = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    out = batch_to_float(out)
    if channels_last:
        out = {k: (v.contiguous(memory_format=torch.channels_last)
                   if isinstance(v, torch.Tensor) and v.ndim == 4 and v.is_floating_point() else v)
               for k, v in out.items()}
    return out

__all__ = ["BatchStream", "EpochIndexed", "epoch_permutation", "make_loader", "to_device"]

"""The GAN trainer: one readable file. G (matting network) + optional D (PatchGAN), per-iteration schedules,
AMP, validation with the official metrics, TensorBoard + JSONL logging, atomic checkpoints, auto-resume,
and multi-process training through HF Accelerate (PyTorch DDP underneath).

The recipe (AlphaGAN, Lutz et al. 2018; every number is a config key, see ``mattingkit/config.py``)
-------------------------------------------------------------------------------------------------
One iteration (``train.steps`` of them; the schedules step per iteration, not per epoch)::

    for each of train.accum_steps micro-batches (a batch dict, see CONTRACTS.md):
        out = G(image, trimap)                                    # {"alpha": (N,1,H,W), ...}
        if GAN is on (train.use_gan and step >= train.g_warmup_steps):
            real, fake = discriminator_inputs(batch, out["alpha"])  # cat(composite RGB, trimap)
            terms = matting_loss(out, batch, cfg.loss, fake_logits=D(fake))   # D frozen here
        else:
            terms = matting_loss(out, batch, cfg.loss)             # alpha, comp, grad, ...
        backward(terms["total"] / accum_steps)                    # weighted sum, loss.gan x gan
        if GAN is on and step % train.d_every == 0:                # D step on detached fakes
            d_real, d_fake = D(cat[real, fake.detach()]).split()    # one forward (DDP-friendly;
                                                                    # a BatchNorm D sees both halves)
            backward(gan_loss_d(d_real, d_fake)["total"] / accum_steps)
    if every loss was finite: clip grads (train.grad_clip), step G (and D); else skip + count
    lr(step) = warm-up (train.warmup_steps, linear) x schedule (constant | cosine | cyclic | plateau)

- Loss weights: ``loss.alpha``, ``loss.comp``, ... inside :func:`mattingkit.losses.matting_loss`;
  ``loss.gan`` scales the generator's adversarial term; ``loss.gan_type`` = bce | lsgan | hinge.
- Optimisers: Adam or AdamW (``train.optimizer``), ``train.betas`` (0.5, 0.999 as in AlphaGAN),
  separate ``lr_g`` / ``lr_d``; only parameters with ``requires_grad`` are optimised.
- Schedules (``train.schedule``): ``cosine`` to ``min_lr_ratio`` x lr; ``cyclic`` triangular between
  ``min_lr_ratio`` x lr and lr with period ``cycle_steps`` (A6l9/AlphaGAN-Image-Matting); ``plateau``
  multiplies the lr by ``plateau_factor`` after ``plateau_patience`` validations without improvement
  of ``best_metric`` (the U²-Net-P competition entry); ``constant``.
- AMP (``train.amp``): ``auto`` = bf16 on GPUs that support it, else fp16 with a GradScaler; off on
  CPU (bf16 on CPU is 3-4x slower). ``train.channels_last`` for tensor-core GPUs.
- Non-finite loss: the step is skipped (no optimiser update) and counted; ``train.max_nonfinite``
  in a row stops the run with :class:`NonFiniteLossError`.
- Validation every ``train.val_every`` steps on the evaluation set, full resolution: reflect-padded
  to a multiple of 32, cropped back; SAD / MSE / Grad / Conn (official protocol) + competition MSE.
  ``best.pt`` follows ``train.best_metric`` / ``train.best_mode``.
- Determinism (CPU): same seed and config -> identical loss history. Model init is seeded; the data
  stream is a function of (seed, epoch, index); ``run.deterministic`` turns on
  ``torch.use_deterministic_algorithms``. Resuming restores weights, optimisers, schedules, scalers,
  RNG states and the data position, so an interrupted-and-resumed run continues exactly.

DIM's three stages are three shipped configs, each run starting from the previous one's ``best.pt``
(``train.init_from``, looked up below the runs root)::

    python -m mattingkit.train --config dim_encoder_decoder   # stage 1: encoder-decoder, alpha + comp
    python -m mattingkit.train --config dim_refinement        # stage 2: refinement head, the rest frozen
    python -m mattingkit.train --config dim_joint             # stage 3: everything, fine-tuned together

(each stage keeps the weights of the previous one; the stage's frozen parts get no optimiser state,
and DDP is told about DIM's unused refinement head in the first stage.)

Run folder ``runs/NAME/``: ``config.yaml`` (resolved), ``manifest.csv``, ``metrics.jsonl`` (one JSON
record per log / validation), ``train_summary.json`` (final + best validation; ``metrics.json`` is left to
the notebooks' sections), ``checkpoints/{last,best}.pt``
(+ ``.json`` sidecars, see :mod:`mattingkit.checkpoint`), ``tb/`` (TensorBoard).

Multi-process: from a shell ``accelerate launch --num_processes 2 -m mattingkit.train --config ecom
--name NAME`` (add ``--cpu`` to try it on a CPU machine), or :func:`launch_notebook` (Kaggle's
2xT4). ``data.batch_size`` is per process; each global batch is cut into per-rank slices, so 2
processes x batch 4 follow the same data as 1 process x batch 8. Only the main process logs and
writes files. ``model.sync_bn`` converts BatchNorm to SyncBatchNorm.

Example:
    >>> from mattingkit.config import load_config
    >>> cfg = load_config("demo", ["train.steps=10"])          # doctest: +SKIP
    >>> summary = train(cfg, fresh=True)                       # doctest: +SKIP
    >>> summary["best"]["value"]                               # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import MattingKitError
from . import __version__
from . import checkpoint as ckpt
from .config import Config, ConfigError, from_dict, load_config, apply_overrides, save_config
from .device import resolve_amp
from .run import default_run_dir, read_history, save_run_config

BEST_MODES = ("min", "max")
SCHEDULES = ("constant", "cosine", "cyclic", "plateau")
VAL_METRICS = ("sad", "mse", "grad", "conn", "competition_mse")
#: The trainer's own summary in the run folder (``metrics.json`` belongs to the notebooks' sections).
SUMMARY_FILE = "train_summary.json"


class NonFiniteLossError(MattingKitError, RuntimeError):
    """Too many non-finite (NaN/inf) losses in a row: the run stops instead of training on garbage."""


# ============================================================================================
# Learning-rate schedule: warm-up x (constant | cosine | cyclic | plateau), stepped per iteration
# ============================================================================================
class LRSchedule:
    """Sets ``lr`` of every param group of ``optimizer`` from the iteration number.

    ``lr(it) = base_lr x warmup(it) x shape(it) x plateau_scale``; only the plateau part has state
    (:meth:`state_dict`), everything else is a pure function of ``it``.

    Example:
        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
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


# ============================================================================================
# Data: a deterministic stream of global batches, sharded over processes
# ============================================================================================
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


def pad_to_multiple(x: torch.Tensor, multiple: int = 32) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad an NCHW tensor on the bottom/right to a multiple of ``multiple``; returns (padded, (H, W)).

    Falls back to replicate padding where the image is too small to reflect.

    Example:
        >>> y, hw = pad_to_multiple(torch.rand(1, 3, 33, 64)); tuple(y.shape[-2:]), hw
        ((64, 64), (33, 64))
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


# ============================================================================================
# Process / device set-up (single process, or Accelerate when launched with several)
# ============================================================================================
class Dist:
    """The few distributed operations the trainer needs; plain single-process versions unless
    ``WORLD_SIZE`` > 1, in which case an :class:`accelerate.Accelerator` does the work."""

    def __init__(self, device: str = "auto", find_unused_parameters: bool = False):
        self.accelerator = None
        world = int(os.environ.get("WORLD_SIZE", "1"))
        want_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        if world > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            self.accelerator = Accelerator(
                cpu=want_cpu, mixed_precision="no",
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
            )
            self.device = torch.device(self.accelerator.device.type) if want_cpu else self.accelerator.device
            self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        else:
            self.device = torch.device("cpu" if want_cpu else ("cuda" if device == "auto" else device))
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

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    from .data.datasets import batch_to_float  # compact (uint8/uint16) training batches -> float32, on the device
    return batch_to_float(out)


def _optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    kind = cfg.optimizer.lower()
    if kind not in ("adam", "adamw"):
        raise ConfigError(f"train.optimizer={cfg.optimizer!r}; choose adam or adamw")
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def _check_cfg(cfg: Config) -> None:
    t = cfg.train
    if t.best_metric not in VAL_METRICS:
        raise ConfigError(f"train.best_metric={t.best_metric!r}; choose one of {', '.join(VAL_METRICS)}")
    if t.best_mode not in BEST_MODES:
        raise ConfigError(f"train.best_mode={t.best_mode!r}; choose min or max")
    for key in ("steps", "accum_steps", "d_every", "log_every", "image_every", "val_every", "ckpt_every",
                "max_nonfinite"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    name = cfg.run.name
    if not name or any(c in name for c in ':/\\') or name in (".", ".."):
        raise ConfigError(f"run.name={name!r} must be a plain folder name (no ':', '/' or '\\')")


def resolve_init_from(cfg: Config) -> Path:
    """``train.init_from`` as a path: absolute, or relative to the working directory when it exists
    there, else below the runs root (so ``dim_encoder_decoder/checkpoints/best.pt`` finds the previous
    DIM stage wherever runs live: ``runs/``, Drive on Colab, ``/kaggle/working/runs``).

    Example:
        >>> from mattingkit.config import load_config
        >>> str(resolve_init_from(load_config("dim_refinement", ["train.init_from=/abs/best.pt"])))
        '/abs/best.pt'
    """
    from .run import runs_root

    p = Path(str(cfg.train.init_from)).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = runs_root(cfg)
    below = root / p
    if not below.exists() and not p.parent.exists():
        raise FileNotFoundError(f"train.init_from: {p} not found (looked in {Path.cwd()} and in the runs root "
                                f"{root}); train the previous stage first or give an absolute path")
    return below


def build_data(cfg: Config, run_dir: Path, is_main: bool = True, barrier: Callable[[], None] = lambda: None,
               world: int = 1):
    """(train_ds, val_ds) from the config: the manifest (cfg.data.manifest, or scanned into
    ``run_dir/manifest.csv`` by the main process; the demo data is generated when missing) ->
    :func:`mattingkit.data.datasets.build_datasets`. With several processes the main one also fills
    the foreground cache before the others start."""
    from .data.datasets import build_datasets
    from .run import ensure_manifest, manifest_path

    # the main process scans the manifest (and makes the demo data) when the run has none yet
    manifest = ensure_manifest(cfg, run_dir) if is_main else manifest_path(cfg, run_dir)
    if world > 1 and is_main and cfg.data.foreground == "estimate":
        # Estimate the foreground colours once, here, rather than in every process at the same time.
        from .data.manifest import read_manifest

        train_ds, _ = build_datasets(cfg, manifest)
        if getattr(train_ds, "fg_cache", None) is not None:
            df = read_manifest(manifest)
            train_ds.fg_cache.precompute(df[df["split"] == "train"], progress=False)
    barrier()
    return build_datasets(cfg, manifest)


# ============================================================================================
# The trainer
# ============================================================================================
class Trainer:
    """Holds G, D, optimisers, schedules, scalers, data and logging for one run folder.

    ``model`` / ``discriminator`` / ``train_dataset`` / ``val_dataset`` may be given (tests, notebooks
    experimenting with a custom module); otherwise they are built from ``cfg``. ``loss_fn`` likewise
    defaults to :func:`mattingkit.losses.matting_loss`.

    Example (given demo data):
        >>> trainer = Trainer(load_config("demo", ["train.steps=20"]), fresh=True)   # doctest: +SKIP
        >>> summary = trainer.fit()                                                 # doctest: +SKIP
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike | None = None, fresh: bool = False, *,
                 model: nn.Module | None = None, discriminator: nn.Module | None = None,
                 train_dataset=None, val_dataset=None, loss_fn: Callable | None = None,
                 headless: bool | None = None):
        _check_cfg(cfg)
        self.cfg = cfg
        self.headless = headless
        t = cfg.train
        # DIM's first stage leaves its refinement head without gradients: DDP must be told.
        unused = t.find_unused_parameters or (cfg.model.name == "dim" and cfg.model.dim_stage == "encoder_decoder")
        self.dist = Dist(cfg.run.device, find_unused_parameters=unused)
        self.device = self.dist.device
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.history_path = self.run_dir / "metrics.jsonl"
        self.written: list[str] = []  # files this process wrote (the multi-process test checks it)

        self._det_before = (torch.are_deterministic_algorithms_enabled(),
                            torch.is_deterministic_algorithms_warn_only_enabled())
        if cfg.run.deterministic:  # process-wide: restored by close()
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            ckpt.cleanup_temp_files(self.ckpt_dir)
            if fresh or not t.resume:
                self._clear_previous_run()
        self.dist.barrier()

        # ---- data
        if train_dataset is None:
            train_dataset, built_val = build_data(cfg, self.run_dir, self.dist.is_main, self.dist.barrier,
                                                  self.dist.world)
            val_dataset = built_val if val_dataset is None else val_dataset
        self.train_ds, self.val_ds = train_dataset, val_dataset

        # ---- models (seeded init: same seed -> same weights)
        torch.manual_seed(cfg.run.seed)
        if model is None:
            from .models import build_model

            model = build_model(cfg.model)
        self.use_gan = bool(t.use_gan)
        if discriminator is None and self.use_gan:
            from .models import build_discriminator

            discriminator = build_discriminator(cfg.model)
        if not self.use_gan:
            discriminator = None
        if self.dist.world > 1 and cfg.model.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            if discriminator is not None:
                discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
            if discriminator is not None:
                discriminator = discriminator.to(memory_format=torch.channels_last)
        if loss_fn is None:
            from .losses import matting_loss as loss_fn
        self.loss_fn = loss_fn

        # ---- state (possibly restored below)
        self.step = 0
        self.best: dict[str, Any] = {"metric": t.best_metric, "mode": t.best_mode, "value": None, "step": None,
                                     "metrics": None}
        self.last_val: dict[str, float] | None = None
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.resumed_from: str | None = None

        resume_state = None
        last, best = self.ckpt_dir / ckpt.LAST, self.ckpt_dir / ckpt.BEST
        if t.resume and not fresh and (last.exists() or best.exists()):
            # Both hold the full state: continue from the newer one (best.pt is newer when a validation
            # improved after the last ckpt_every step, or when the run died before its first last.pt).
            first, other = (last, best) if _sidecar_step(last) >= _sidecar_step(best) else (best, last)
            if first == best:
                note = f"{last.name} is absent" if not last.exists() else f"{best.name} is newer"
            resume_state = ckpt.load_checkpoint(first, fallback=other if other.exists() else None)
            if first == best and "_fallback_from" not in resume_state:
                resume_state["_resume_note"] = note
        elif self.dist.is_main:
            # Starting at step 0: records of an earlier attempt that never reached a checkpoint go.
            self._clear_previous_run()
        if resume_state is None and t.init_from:
            init_path = resolve_init_from(cfg)
            init = ckpt.load_checkpoint(init_path)
            missing, unexpected = _load_matching(model, init["generator"])
            if self.dist.is_main:
                print(f"initialised G from {init_path} ({len(missing)} tensors kept their init)", flush=True)

        if resume_state is not None:
            # Weights are loaded before optimisers are built and before DDP wrapping.
            try:
                model.load_state_dict(_float_state(resume_state["generator"]))
                if discriminator is not None and resume_state.get("discriminator") is not None:
                    discriminator.load_state_dict(resume_state["discriminator"])
            except RuntimeError as e:
                raise ckpt.CheckpointError(
                    resume_state.get("_path", last),
                    "its weights do not fit the configured model (did a model.* setting change since it was "
                    f"written?). Start over with fresh=True / --fresh, or use another run name. {e}") from None

        self.G = self.dist.wrap(model)
        self.D = self.dist.wrap(discriminator) if discriminator is not None else None
        self.opt_g = _optimizer(ckpt.unwrap(self.G).parameters(), t, t.lr_g)
        self.opt_d = _optimizer(ckpt.unwrap(self.D).parameters(), t, t.lr_d) if self.D is not None else None
        sched = dict(total_steps=t.steps, schedule=t.schedule, warmup_steps=t.warmup_steps,
                     min_lr_ratio=t.min_lr_ratio, cycle_steps=t.cycle_steps, plateau_patience=t.plateau_patience,
                     plateau_factor=t.plateau_factor, mode=t.best_mode)
        self.sched_g = LRSchedule(self.opt_g, t.lr_g, **sched)
        self.sched_d = LRSchedule(self.opt_d, t.lr_d, **sched)
        self.amp_dtype = resolve_amp(t.amp, self.device)
        use_scaler = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

        if resume_state is not None:
            self._restore(resume_state)

        self._writer = None
        self._loader_iter = None
        self._committing = False
        self._window: dict[str, float] = {}  # loss sums since the last log record
        self._window_n = 0
        self._val_grid: list = []
        self._t0 = time.monotonic()

    # ---------------------------------------------------------------------------------------
    # files
    def _clear_previous_run(self) -> None:
        """fresh=True: forget an earlier run in the same folder (checkpoints, loss history, TensorBoard
        events; train_summary.json is rewritten at the end, config.yaml at the start, manifest.csv is kept)."""
        for name in (ckpt.LAST, ckpt.BEST):
            for p in (self.ckpt_dir / name, ckpt.sidecar_path(self.ckpt_dir / name)):
                if p.exists():
                    p.unlink()
        if self.history_path.exists():
            self.history_path.unlink()
        tb = self.run_dir / "tb"
        if tb.is_dir():
            for p in tb.glob("events.out.tfevents.*"):
                p.unlink()

    def _log_record(self, record: Mapping[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()
        self._wrote(self.history_path)

    def _wrote(self, path: Path) -> None:
        s = str(path)
        if s not in self.written:
            self.written.append(s)

    @property
    def writer(self):
        """TensorBoard SummaryWriter (main process, when ``train.tensorboard``), created on first use."""
        if self._writer is None and self.dist.is_main and self.cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), flush_secs=30)
            self._wrote(self.run_dir / "tb")
        return self._writer

    # ---------------------------------------------------------------------------------------
    # checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimisers, schedules, scalers, RNG, counters."""
        g, d = ckpt.unwrap(self.G), ckpt.unwrap(self.D) if self.D is not None else None
        return {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "version": __version__,
            "step": self.step,
            "epoch": (self.step * self.cfg.train.accum_steps * self.cfg.data.batch_size * self.dist.world)
                     // max(1, len(self.train_ds)),
            "best": dict(self.best),
            "last_val": self.last_val,
            "nonfinite": {"in_a_row": self.nonfinite_in_a_row, "total": self.nonfinite_total},
            "generator": g.state_dict(),
            "discriminator": d.state_dict() if d is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": ckpt.rng_state(),
            "world_size": self.dist.world,
            "config": self.cfg.to_dict(),
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.best.update({k: v for k, v in (state.get("best") or {}).items() if k in ("value", "step", "metrics")})
        if (state.get("best") or {}).get("metric") not in (None, self.cfg.train.best_metric):
            self.best.update(value=None, step=None, metrics=None)  # a different metric: start over
        self.last_val = state.get("last_val")
        nf = state.get("nonfinite") or {}
        self.nonfinite_in_a_row = int(nf.get("in_a_row", 0))
        self.nonfinite_total = int(nf.get("total", 0))
        self.opt_g.load_state_dict(state["opt_g"])
        if self.opt_d is not None and state.get("opt_d") is not None:
            self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state.get("sched_g") or {})
        self.sched_d.load_state_dict(state.get("sched_d") or {})
        if state.get("scaler_g"):
            self.scaler_g.load_state_dict(state["scaler_g"])
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])
        if state.get("rng") is not None:
            ckpt.set_rng_state(state["rng"])
        self.resumed_from = state.get("_path")
        if state.get("world_size", self.dist.world) != self.dist.world and self.dist.is_main:
            warnings.warn(f"resuming a run made with {state.get('world_size')} processes on {self.dist.world}: "
                          "the data order after the resume point differs", stacklevel=2)
        if self.dist.is_main:
            self._truncate_history(self.step)
            src = state.get("_path")
            if state.get("_fallback_from"):
                src = f"{src} ({state['_fallback_from']} was unreadable)"
            elif state.get("_resume_note"):
                src = f"{src} ({state['_resume_note']})"
            print(f"resuming from {src} at step {self.step}", flush=True)

    def _truncate_history(self, step: int) -> None:
        """Drop history records written after the checkpoint we resume from (they will be redone)."""
        if not self.history_path.exists():
            return
        keep = [rec for rec in read_history(self.history_path) if rec.get("step", 0) <= step]
        from .io import atomic_write_text

        atomic_write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in keep))

    def save(self, which: Iterable[str] = (ckpt.LAST,)) -> list[Path]:
        """Write ``last.pt`` and/or ``best.pt`` (main process only; a no-op elsewhere)."""
        if not self.dist.is_main:
            return []
        state = self.state_dict()
        out = []
        for name in which:
            path = ckpt.save_checkpoint(state, self.ckpt_dir / name)
            self._wrote(path)
            self._wrote(ckpt.sidecar_path(path))
            out.append(path)
        return out

    # ---------------------------------------------------------------------------------------
    # data
    def _loader(self) -> Iterator[dict]:
        d = self.cfg.data
        start = self.step * self.cfg.train.accum_steps
        stream = BatchStream(len(self.train_ds), d.batch_size, self.cfg.run.seed, self.dist.world, self.dist.rank,
                             start=start)
        kwargs = {}
        if d.num_workers > 0:
            try:
                from .data.datasets import worker_init_fn

                kwargs["worker_init_fn"] = worker_init_fn
            except ImportError:
                pass
            kwargs["prefetch_factor"] = 2
        # Own generator: creating the iterator must not consume the global RNG (exact resume).
        gen = torch.Generator().manual_seed(self.cfg.run.seed + 1000003 * self.dist.rank)
        loader = torch.utils.data.DataLoader(
            EpochIndexed(self.train_ds), batch_sampler=stream, num_workers=d.num_workers,
            pin_memory=self.device.type == "cuda", generator=gen, **kwargs)
        return iter(loader)

    def next_batch(self) -> dict:
        if self._loader_iter is None:
            self._loader_iter = self._loader()
        return to_device(next(self._loader_iter), self.device, self.cfg.train.channels_last)

    def close(self) -> None:
        """Stop data workers and flush TensorBoard."""
        self._loader_iter = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.cfg.run.deterministic:
            torch.use_deterministic_algorithms(self._det_before[0], warn_only=self._det_before[1])

    # ---------------------------------------------------------------------------------------
    # one iteration
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> dict[str, float] | None:
        """One iteration (``accum_steps`` micro-batches). Returns the loss terms, or None when skipped."""
        from .losses import discriminator_inputs, gan_loss_d

        cfg, t = self.cfg, self.cfg.train
        it = self.step
        lr_g = self.sched_g.step(it)
        lr_d = self.sched_d.step(it) if self.opt_d is not None else 0.0
        gan_on = self.D is not None and it >= t.g_warmup_steps
        d_update = gan_on and it % t.d_every == 0
        self.G.train()
        if self.D is not None:
            self.D.train()
        d_raw = ckpt.unwrap(self.D) if self.D is not None else None
        self.opt_g.zero_grad(set_to_none=True)
        if d_update:
            self.opt_d.zero_grad(set_to_none=True)

        sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for micro in range(t.accum_steps):
            batch = self.next_batch()
            last_micro = micro == t.accum_steps - 1
            with self.dist.no_sync(self.G, skip=not last_micro):
                with self._autocast():
                    out = self.G(batch["image"], batch["trimap"])
                    if gan_on:
                        real, fake = discriminator_inputs(batch, out["alpha"])
                        for p in d_raw.parameters():  # D is a fixed critic in the G step
                            p.requires_grad_(False)
                        fake_logits = d_raw(fake)
                        for p in d_raw.parameters():
                            p.requires_grad_(True)
                        terms = dict(self.loss_fn(out, batch, cfg.loss, fake_logits=fake_logits))
                    else:
                        terms = dict(self.loss_fn(out, batch, cfg.loss))
                    total = terms["total"]  # weighted sum, loss.gan x gan included
                self.scaler_g.scale(total.float() / t.accum_steps).backward()
            finite &= torch.isfinite(total.detach()).all()
            if d_update:
                with self.dist.no_sync(self.D, skip=not last_micro):
                    with self._autocast():
                        n = real.shape[0]
                        logits = self.D(torch.cat([real, fake.detach()], dim=0))
                        d_real, d_fake = logits[:n], logits[n:]
                        d_terms = gan_loss_d(d_real, d_fake, cfg.loss.gan_type)
                        d_total = d_terms["total"]
                    self.scaler_d.scale(d_total.float() / t.accum_steps).backward()
                finite &= torch.isfinite(d_total.detach()).all()
                terms["d_total"] = d_total
                terms.update({k: v for k, v in d_terms.items() if k != "total"})  # d_real, d_fake
                terms["d_real_mean"] = d_real.detach().float().mean()
                terms["d_fake_mean"] = d_fake.detach().float().mean()
            for k, v in terms.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    v = v.detach().float() / t.accum_steps
                    sums[k] = sums[k] + v if k in sums else v

        bad = self.dist.any(not bool(finite.item()))
        if bad:
            self.opt_g.zero_grad(set_to_none=True)
            if self.opt_d is not None:
                self.opt_d.zero_grad(set_to_none=True)
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            self.step += 1
            if self.nonfinite_in_a_row >= t.max_nonfinite:
                raise NonFiniteLossError(
                    f"{self.nonfinite_in_a_row} non-finite losses in a row (step {self.step}, "
                    f"{self.nonfinite_total} in total): stopping. Lower train.lr_g / lr_d, set train.grad_clip, "
                    f"use train.amp=off or bf16, or check the data (train.max_nonfinite={t.max_nonfinite}).")
            return None
        self.nonfinite_in_a_row = 0
        self._committing = True  # an interrupt from here to the end of the step leaves no clean state
        self._optimizer_step(self.G, self.opt_g, self.scaler_g)
        if d_update:
            self._optimizer_step(self.D, self.opt_d, self.scaler_d)
        self.step += 1
        self._committing = False
        out_terms = {k: float(v) for k, v in sums.items()}
        out_terms["lr_g"] = lr_g
        if self.opt_d is not None:
            out_terms["lr_d"] = lr_d
        self._last_batch, self._last_pred = batch, out["alpha"].detach()
        return out_terms

    def _optimizer_step(self, model, opt, scaler) -> None:
        if self.cfg.train.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                           self.cfg.train.grad_clip)
        scaler.step(opt)
        scaler.update()

    # ---------------------------------------------------------------------------------------
    # validation
    @torch.no_grad()
    def validate(self, max_images: int | None = None) -> dict[str, float] | None:
        """Full-resolution validation on the evaluation set (sharded over processes).

        Returns mean ``sad, mse, grad, conn, competition_mse`` (+ ``n``), or None without an eval set.
        """
        from .metrics import EmptyUnknownWarning, competition_mse, compute_metrics

        if self.val_ds is None or len(self.val_ds) == 0:
            return None
        limit = len(self.val_ds)
        for cap in (self.cfg.data.val_limit, max_images):
            if cap is not None:
                limit = min(limit, int(cap))
        g = ckpt.unwrap(self.G)
        was_training = g.training
        g.eval()
        sums = torch.zeros(6, dtype=torch.float64)
        grid_items = []
        for i in range(self.dist.rank, limit, self.dist.world):
            item = {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else [v]) for k, v in self.val_ds[i].items()}
            batch = to_device(item, self.device, self.cfg.train.channels_last)
            image, (h, w) = pad_to_multiple(batch["image"])
            trimap, _ = pad_to_multiple(batch["trimap"])
            with self._autocast():
                pred = g(image, trimap)["alpha"][..., :h, :w].float().clamp(0, 1)
            p = pred[0, 0].cpu().numpy()
            gt = batch["alpha"][0, 0].float().cpu().numpy()
            tri = batch["trimap"][0, 0].float().cpu().numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyUnknownWarning)
                m = compute_metrics(p, gt, tri)
            cm = competition_mse(p, gt)
            sums += torch.tensor([1.0, m["sad"], m["mse"], m["grad"], m["conn"], cm], dtype=torch.float64)
            if len(grid_items) < 4:
                grid_items.append((batch["image"][0].float().cpu(), batch["trimap"][0, 0].float().cpu(),
                                   batch["alpha"][0, 0].float().cpu(), pred[0, 0].cpu()))
        if was_training:
            g.train()
        sums = self.dist.sum(sums).cpu()
        n = int(sums[0].item())
        if n == 0:
            return None
        result = {k: float(sums[j + 1] / n) for j, k in enumerate(VAL_METRICS)}
        result["n"] = n
        self._val_grid = grid_items
        return result

    def _after_validation(self, result: dict[str, float]) -> bool:
        """Log, update best / plateau; returns True when this is a new best."""
        t = self.cfg.train
        self.last_val = result
        value = result[t.best_metric]
        best = self.best["value"]
        improved = best is None or (value < best if t.best_mode == "min" else value > best)
        if improved:
            self.best.update(value=value, step=self.step, metrics=dict(result))
        self.sched_g.observe(value)
        self.sched_d.observe(value)
        self._log_record({"step": self.step, "phase": "val", **result, "best": self.best["value"],
                          "time": round(time.monotonic() - self._t0, 3)})
        w = self.writer
        if w is not None:
            for k, v in result.items():
                w.add_scalar(f"val/{k}", v, self.step)
            if getattr(self, "_val_grid", None):
                from .viz import make_grid

                img, tri, gt, pred = (list(x) for x in zip(*self._val_grid))
                grid = make_grid(img, tri, gt, pred)
                w.add_image("val/image_trimap_gt_pred_error", grid, self.step, dataformats="HWC")
        return improved

    # ---------------------------------------------------------------------------------------
    # the loop
    def fit(self, until: int | None = None) -> dict:
        """Train to ``train.steps`` (or stop after step ``until``: a session budget) and return a summary.

        The run can be interrupted at any point (Ctrl-C saves ``last.pt``) and continued by calling
        :func:`train` / ``Trainer(...).fit()`` again on the same folder.
        """
        from .progress import progress

        cfg, t = self.cfg, self.cfg.train
        end = t.steps if until is None else min(t.steps, int(until))
        if cfg.run.deterministic:  # (again: close() restores the process-wide setting)
            torch.use_deterministic_algorithms(True, warn_only=True)
        if self.dist.is_main:
            save_run_config(cfg, self.run_dir)   # a no-op when the run folder already holds this config
            self._wrote(self.run_dir / "config.yaml")
        deadline = None if t.time_limit_min is None else self._t0 + 60.0 * t.time_limit_min
        if self.step == 0 and t.val_at_start and self.val_ds is not None:
            res = self.validate()
            if res is not None and self._after_validation(res):
                self.save((ckpt.BEST,))
        bar = None
        if self.dist.is_main:
            bar = progress(total=max(0, end - self.step), desc=f"train {cfg.run.name}", headless=self.headless)
        stopped = "done"
        t_start, step_start = time.monotonic(), self.step
        try:
            while self.step < end:
                terms = self.train_step()
                if bar is not None:
                    bar.update(1)
                self.after_step(terms, end, bar)
                if deadline is not None and self.dist.broadcast_flag(time.monotonic() > deadline):
                    if self.step % t.ckpt_every != 0 and self.step != end:
                        self.save((ckpt.LAST,))
                    stopped = "time_limit"
                    break
        except KeyboardInterrupt:
            if self._committing:
                print(f"\ninterrupted while updating weights: keeping the previous last.pt", flush=True)
            else:
                if self.dist.is_main:
                    print(f"\ninterrupted at step {self.step}: saving last.pt", flush=True)
                self.save((ckpt.LAST,))
            raise
        finally:
            if bar is not None:
                bar.close()
            self.close()
        elapsed = time.monotonic() - t_start
        if stopped == "done" and self.step < t.steps:
            stopped = "until"
        summary = self._summary(stopped, elapsed, self.step - step_start)
        if self.dist.is_main:
            from .io import atomic_write_text

            atomic_write_text(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=1, default=str))
            self._wrote(self.run_dir / SUMMARY_FILE)
        self.dist.barrier()
        return summary

    def after_step(self, terms: dict[str, float] | None, end: int, bar=None) -> None:
        """The periodic work after each iteration: log (every ``log_every``), image grid
        (``image_every``), validation + best.pt (``val_every`` and the last step), last.pt
        (``ckpt_every`` and the end of the session)."""
        t, step = self.cfg.train, self.step
        if terms is not None:
            for k, v in terms.items():
                self._window[k] = self._window.get(k, 0.0) + v
            self._window_n += 1
        if step % t.log_every == 0 or step == end:
            self._log_train(self._window, self._window_n, bar)
            self._window, self._window_n = {}, 0
        if step % t.image_every == 0 and terms is not None and self.writer is not None:
            from .viz import make_grid

            b = self._last_batch
            grid = make_grid(b["image"], b["trimap"], b["alpha"], self._last_pred)
            self.writer.add_image("train/image_trimap_gt_pred_error", grid, step, dataformats="HWC")
        new_best = False
        if step % t.val_every == 0 or step == t.steps:
            res = self.validate()
            if res is not None:
                new_best = self._after_validation(res)
                if bar is not None:
                    bar.write(f"step {step}: val {t.best_metric}={res[t.best_metric]:.4g} "
                              f"(best {self.best['value']:.4g} @ {self.best['step']})")
        if new_best:
            self.save((ckpt.BEST,))
        if step % t.ckpt_every == 0 or step == end:
            self.save((ckpt.LAST,))

    def _log_train(self, window: dict[str, float], n: int, bar) -> None:
        rec: dict[str, Any] = {"step": self.step, "phase": "train"}
        if self.dist.world > 1 and window:  # the mean over processes (every rank has the same keys)
            keys = sorted(window)
            avg = self.dist.sum(torch.tensor([window[k] for k in keys], dtype=torch.float64)) / self.dist.world
            window = dict(zip(keys, avg.cpu().tolist()))
        if n:
            rec.update({k: v / n for k, v in window.items()})
        rec["nonfinite_total"] = self.nonfinite_total
        rec["time"] = round(time.monotonic() - self._t0, 3)
        self._log_record(rec)
        w = self.writer
        if w is not None and n:
            for k, v in rec.items():
                if k in ("step", "phase", "time"):
                    continue
                if k.startswith("lr_"):
                    w.add_scalar(f"lr/{k[3:]}", v, self.step)
                elif k.startswith("d_"):
                    w.add_scalar(f"train_d/{k[2:]}", v, self.step)
                else:
                    w.add_scalar(f"train/{k}", v, self.step)
        if bar is not None and n and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=rec.get("total", float("nan")), lr=rec.get("lr_g", 0.0), refresh=False)

    def _summary(self, stopped: str, elapsed: float, steps_done: int) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "name": self.cfg.run.name,
            "step": self.step,
            "steps": self.cfg.train.steps,
            "stopped": stopped,
            "resumed_from": self.resumed_from,
            "best": {k: self.best[k] for k in ("metric", "mode", "value", "step", "metrics")},
            "final": self.last_val,
            "nonfinite_total": self.nonfinite_total,
            "elapsed_s": round(elapsed, 3),
            "steps_per_s": round(steps_done / elapsed, 4) if elapsed > 0 and steps_done else None,
            "world_size": self.dist.world,
            "checkpoints": {n: str(self.ckpt_dir / n) for n in (ckpt.LAST, ckpt.BEST)
                            if (self.ckpt_dir / n).exists()},
            "version": __version__,
        }


def _sidecar_step(path: Path) -> int:
    """The step a checkpoint's sidecar records (-1 when absent); 0 for a file without a sidecar."""
    if not path.exists():
        return -1
    try:
        return int(json.loads(ckpt.sidecar_path(path).read_text(encoding="utf-8")).get("step") or 0)
    except (OSError, ValueError, TypeError):
        return 0


def _float_state(state: Mapping[str, torch.Tensor]) -> dict:
    return {k: (v.float() if torch.is_floating_point(v) and v.dtype == torch.float16 else v)
            for k, v in state.items()}


def _load_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load the tensors whose name and shape match; returns (missing, unexpected) names."""
    own = model.state_dict()
    take = {k: v.to(own[k].dtype) for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return [k for k in own if k not in take], [k for k in state if k not in own]


# ============================================================================================
# Entry points
# ============================================================================================
def train(cfg: Config, run_dir: str | os.PathLike | None = None, fresh: bool = False, **kwargs) -> dict:
    """Train (or continue training) the run described by ``cfg``; returns the summary dict
    (also written to ``run_dir/train_summary.json``). Keyword arguments go to :class:`Trainer`.

    Example (given demo data): ``train(load_config("demo"), fresh=True)["best"]``
    """
    trainer = Trainer(cfg, run_dir=run_dir, fresh=fresh, **kwargs)
    return trainer.fit()


def _notebook_worker(cfg_dict: dict, run_dir: str | None, fresh: bool, trainer_kwargs: dict) -> None:
    train(from_dict(cfg_dict), run_dir=run_dir, fresh=fresh, **trainer_kwargs)


def launch_notebook(cfg: Config, num_processes: int = 2, run_dir: str | os.PathLike | None = None,
                    fresh: bool = False, use_port: str | int = 29500, **trainer_kwargs) -> dict:
    """Multi-GPU training from a notebook (Kaggle's 2xT4) through ``accelerate.notebook_launcher``.

    Call it before anything touches CUDA in the notebook: Accelerate forks the kernel, one process per
    device (on a CPU-only machine: CPU processes talking gloo). ``trainer_kwargs`` go to
    :class:`Trainer` in every process (forked, so they need not be picklable). Returns the summary the
    main process wrote to ``run_dir/train_summary.json``.

    Example (Kaggle, 2 GPUs): ``launch_notebook(load_config("ecom"), num_processes=2)``
    """
    from accelerate import notebook_launcher

    rd = str(run_dir) if run_dir is not None else str(default_run_dir(cfg))
    notebook_launcher(_notebook_worker, args=(cfg.to_dict(), rd, fresh, trainer_kwargs),
                      num_processes=num_processes, use_port=str(use_port))
    return json.loads((Path(rd) / SUMMARY_FILE).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    """``python -m mattingkit.train --config demo --set train.steps=10 --name X [--fresh]``."""
    p = argparse.ArgumentParser(prog="mattingkit train", description="Train a matting model (G + optional D).")
    p.add_argument("--config", default="demo", help="shipped config name or a YAML path (default: demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, e.g. --set train.steps=10")
    p.add_argument("--name", default=None, help="run name (folder under the runs root)")
    p.add_argument("--run-dir", default=None, help="explicit run folder (default: RUNS_ROOT/NAME)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming from last.pt")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.name:
            cfg = apply_overrides(cfg, {"run.name": args.name})
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    summary = train(cfg, run_dir=args.run_dir, fresh=args.fresh)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary["best"]
        print(f"run {summary['run_dir']}: step {summary['step']}/{summary['steps']} ({summary['stopped']}); "
              f"best {best['metric']}={best['value']} at step {best['step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

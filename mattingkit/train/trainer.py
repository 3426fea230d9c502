"""The trainer: G (matting network) + optional D (PatchGAN) over one run folder. The recipe, schedules,
resuming and multi-process training are described in docs/training.md."""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .. import __version__
from .. import checkpoint as ckpt
from .. import device as devmod
from ..config import Config
from ..errors import MattingKitError
from ..io import atomic_write_text
from ..run import HISTORY_FILE, HistoryLog, default_run_dir, read_history, save_run_config
from ..runlock import RunLock
from .distributed import Dist
from .schedule import LRSchedule
from .setup import (
    VAL_METRICS,
    build_data,
    check_config,
    load_matching,
    load_resumed_weights,
    make_optimizer,
    pick_resume_state,
    resolve_init_from,
)
from .stream import BatchStream, EpochIndexed, to_device
from .validation import validate_model

#: run folder -> the Trainer of this process holding its lock
_HOLDERS: dict[str, "weakref.ref[Trainer]"] = {}

#: The trainer's own summary in the run folder (``metrics.json`` belongs to the notebooks' sections).
SUMMARY_FILE = "train_summary.json"


class NonFiniteLossError(MattingKitError, RuntimeError):
    """Too many non-finite (NaN/inf) losses in a row: the run stops instead of training on garbage."""


class Trainer:
    """Holds G, D, optimisers, schedules, scalers, data and logging for one run folder.

    ``model`` / ``discriminator`` / ``train_dataset`` / ``val_dataset`` may be given (tests, notebooks
    experimenting with a custom module); otherwise they are built from ``cfg``. ``loss_fn`` likewise
    defaults to :func:`mattingkit.losses.matting_loss`. ``__init__`` is a list of named phases, each a
    short method below.

    Example (given demo data):
        >>> trainer = Trainer(load_config("demo", ["train.steps=20"]), fresh=True)   # doctest: +SKIP
        >>> summary = trainer.fit()                                                 # doctest: +SKIP
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike | None = None, fresh: bool = False, *,
                 model: nn.Module | None = None, discriminator: nn.Module | None = None,
                 train_dataset=None, val_dataset=None, loss_fn: Callable | None = None,
                 headless: bool | None = None, force: bool = False):
        check_config(cfg)
        self.cfg, self.headless, self.force = cfg, headless, bool(force)
        self.lock: RunLock | None = None
        self._init_distributed()
        self._init_run_folder(run_dir, fresh)
        try:
            self._init_determinism()
            self._init_datasets(train_dataset, val_dataset)
            model, discriminator = self._init_models(model, discriminator, loss_fn)
            self._init_state()
            resume_state = self._init_starting_weights(model, discriminator, fresh)
            self._init_optimizers(model, discriminator)
            if resume_state is not None:
                self._restore(resume_state)
            self._init_logging()
        except BaseException:
            self._release_lock()
            raise

    # ---------------------------------------------------------------------------------------
    # set-up phases
    def _init_distributed(self) -> None:
        """One process, or one of several (Accelerate); DIM's first stage leaves its refinement head
        without gradients, which DDP must be told."""
        cfg = self.cfg
        unused = cfg.train.find_unused_parameters or (cfg.model.name == "dim"
                                                      and cfg.model.dim_stage == "encoder_decoder")
        # One decision for the run (device.plan): device, AMP dtype, GradScaler (fp16 only), channels_last,
        # loader workers; refuses an unsupported GPU, and a missing one when run.require_gpu (unless
        # run.device=cpu was chosen deliberately).
        self.plan = devmod.plan(cfg)
        self.dist = Dist(cfg.run.device, find_unused_parameters=unused, timeout_s=cfg.train.dist_timeout_s)
        self.device = self.plan.device if self.dist.world == 1 else self.dist.device
        self.amp_dtype, self.channels_last = self.plan.amp_dtype, self.plan.channels_last
        self.num_workers = self.plan.num_workers

    def _init_run_folder(self, run_dir: str | os.PathLike | None, fresh: bool) -> None:
        """Paths; the main process creates the folders, removes stale temporary files and, for a fresh
        start, an earlier run's records."""
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(self.cfg)
        self.ckpt_dir, self.mirror_dir = checkpoint_dirs(self.cfg, self.run_dir)
        # Drive: history and lock beside the local checkpoints, copied to the run folder (rationed, tolerant)
        self.mirror = ckpt.RunMirror.for_config(self.cfg, self.run_dir, self.ckpt_dir, self.mirror_dir, (HISTORY_FILE,))
        self.history_path = self.mirror.local(HISTORY_FILE)
        self.history = HistoryLog(self.history_path)
        self.written: list[str] = []  # files this process wrote (the multi-process test checks it)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # One process per run folder (a second trainer here refuses, naming the holder; force takes over)
            self._supersede_idle_trainer()
            self.lock = RunLock.for_config(self.run_dir, self.cfg, force=self.force, local_dir=self.mirror.local_dir).acquire()
            _HOLDERS[str(self.run_dir.resolve())] = weakref.ref(self)
            if self.lock.note:
                print(f"run lock: {self.lock.note}", flush=True)
            try:
                for folder in (self.ckpt_dir, self.mirror_dir):
                    if folder is not None:
                        folder.mkdir(parents=True, exist_ok=True)
                        ckpt.cleanup_temp_files(folder)
                if fresh or not self.cfg.train.resume:
                    self._clear_previous_run()
                elif self.mirror_dir is not None:  # resuming: the newest valid copy of either place wins
                    for name, what in self.mirror.restore().items():
                        print(f"checkpoint {name}: {what}", flush=True)
            except BaseException:
                self._release_lock()
                raise
        self.dist.barrier()

    def _supersede_idle_trainer(self) -> None:
        """A Trainer object of this process on the same run folder that is not fitting (a notebook cell run
        again while the earlier object is still referenced) gives its lock up: its next checkpoint would then
        raise instead of racing. One that is fitting keeps it (this one is refused)."""
        ref = _HOLDERS.get(str(self.run_dir.resolve()))
        old = ref() if ref is not None else None
        if old is not None and old is not self and not getattr(old, "_fitting", False):
            old._release_lock()

    def _init_determinism(self) -> None:
        """``run.deterministic``: deterministic algorithms, process-wide (restored by :meth:`close`).
        cudnn.benchmark is not set process-wide: each training step turns it on (fixed-shape crops, CUDA,
        not deterministic) and restores it; validation runs with it off (:func:`mattingkit.device.cudnn_benchmark`)."""
        self._det_before = (torch.are_deterministic_algorithms_enabled(),
                            torch.is_deterministic_algorithms_warn_only_enabled())
        self._benchmark_before = torch.backends.cudnn.benchmark
        self._train_benchmark = self.device.type == "cuda" and not self.cfg.run.deterministic
        if self.cfg.run.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _init_datasets(self, train_dataset, val_dataset) -> None:
        """The given datasets, else the config's (:func:`mattingkit.train.setup.build_data`)."""
        if train_dataset is None:
            train_dataset, built_val = build_data(self.cfg, self.run_dir, self.dist.is_main, self.dist.barrier,
                                                  self.dist.world)
            val_dataset = built_val if val_dataset is None else val_dataset
        self.train_ds, self.val_ds = train_dataset, val_dataset

    def _init_models(self, model, discriminator, loss_fn) -> tuple[nn.Module, nn.Module | None]:
        """G and D (seeded init: same seed -> same weights), SyncBatchNorm / channels_last as configured,
        and the loss function."""
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(cfg.run.seed)
        if model is None:
            from ..models import build_model

            model = build_model(cfg.model)
        self.use_gan = bool(t.use_gan)
        if discriminator is None and self.use_gan:
            from ..models import build_discriminator

            discriminator = build_discriminator(cfg.model)
        if not self.use_gan:
            discriminator = None
        convert = []
        if self.dist.world > 1 and cfg.model.sync_bn:
            convert.append(nn.SyncBatchNorm.convert_sync_batchnorm)
        if self.channels_last:
            convert.append(lambda m: m.to(memory_format=torch.channels_last))
        for fn in convert:
            model = fn(model)
            discriminator = fn(discriminator) if discriminator is not None else None
        if loss_fn is None:
            from ..losses import matting_loss as loss_fn
        self.loss_fn = loss_fn
        return model, discriminator

    def _init_state(self) -> None:
        """Counters and records at step 0 (a resumed checkpoint overwrites them in :meth:`_restore`)."""
        t = self.cfg.train
        self.step = 0
        self.best: dict[str, Any] = {"metric": t.best_metric, "mode": t.best_mode, "value": None, "step": None,
                                     "metrics": None}
        self.last_val: dict[str, float] | None = None
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.resumed_from: str | None = None

    def _init_starting_weights(self, model: nn.Module, discriminator: nn.Module | None, fresh: bool) -> dict | None:
        """Resume from the run's newer checkpoint (weights loaded here, before optimisers and DDP
        wrapping; the rest in :meth:`_restore`), else start from ``train.init_from`` when set. Returns
        the resumed state (or None)."""
        t = self.cfg.train
        state = pick_resume_state(self.ckpt_dir) if t.resume and not fresh else None
        if state is None and self.dist.is_main:
            # Starting at step 0: records of an earlier attempt that never reached a checkpoint go.
            self._clear_previous_run()
        if state is None and t.init_from:
            init_path = resolve_init_from(self.cfg)
            missing, _ = load_matching(model, ckpt.load_checkpoint(init_path)["generator"])
            if self.dist.is_main:
                print(f"initialised G from {init_path} ({len(missing)} tensors kept their init)", flush=True)
        if state is not None:
            load_resumed_weights(model, discriminator, state)
        return state

    def _init_optimizers(self, model: nn.Module, discriminator: nn.Module | None) -> None:
        """Wrap the models (DDP), then optimisers, schedules, AMP and gradient scalers."""
        t = self.cfg.train
        self.G = self.dist.wrap(model)
        self.D = self.dist.wrap(discriminator) if discriminator is not None else None
        self.opt_g = make_optimizer(ckpt.unwrap(self.G).parameters(), t, t.lr_g)
        self.opt_d = make_optimizer(ckpt.unwrap(self.D).parameters(), t, t.lr_d) if self.D is not None else None
        sched = dict(total_steps=t.steps, schedule=t.schedule, warmup_steps=t.warmup_steps,
                     min_lr_ratio=t.min_lr_ratio, cycle_steps=t.cycle_steps, plateau_patience=t.plateau_patience,
                     plateau_factor=t.plateau_factor, mode=t.best_mode)
        self.sched_g = LRSchedule(self.opt_g, t.lr_g, **sched)
        self.sched_d = LRSchedule(self.opt_d, t.lr_d, **sched)
        use_scaler = self.plan.grad_scaler  # fp16 only
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

    def _init_logging(self) -> None:
        """TensorBoard (on first use), the data iterator (on first batch), the loss window and the clock."""
        self._writer = None
        self._loader_iter = None
        self._committing = False
        # Loss sums since the last log record, kept on the device (no host sync per step): converted to
        # numbers only when a record is written (log_every). Non-finite steps add nothing and are counted
        # on the device too.
        self._window: dict[str, torch.Tensor] = {}
        self._window_n = torch.zeros((), dtype=torch.float64, device=self.device)
        self._window_lr: dict[str, float] = {}
        self._nf_run = torch.zeros((), dtype=torch.int64, device=self.device)      # non-finite in a row, now
        self._nf_run_max = torch.zeros((), dtype=torch.int64, device=self.device)  # ... its peak since the log
        self._nf_total = torch.zeros((), dtype=torch.int64, device=self.device)    # ... since the last sync
        self._nf_run += self.nonfinite_in_a_row  # (a resumed run continues its count)
        self._val_grid: list = []
        self._t0 = time.monotonic()

    # ---------------------------------------------------------------------------------------
    # files
    def _clear_previous_run(self) -> None:
        """fresh=True: forget an earlier run in the same folder (checkpoints, loss history, TensorBoard
        events; train_summary.json is rewritten at the end, config.yaml at the start, manifest.csv is kept)."""
        for folder in (self.ckpt_dir, self.mirror_dir):
            for name in (ckpt.LAST, ckpt.BEST):
                if folder is None:
                    continue
                for p in (folder / name, ckpt.sidecar_path(folder / name)):
                    if p.exists():
                        p.unlink()
        for p in {self.history_path, self.run_dir / HISTORY_FILE}:
            p.unlink(missing_ok=True)
        tb = self.run_dir / "tb"
        if tb.is_dir():
            for p in tb.glob("events.out.tfevents.*"):
                p.unlink()

    def _log_record(self, record: Mapping[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.history.append(record)   # a failing file system: retried, then kept for the next record
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
        self._sync_nonfinite()
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
        atomic_write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in keep))

    def save(self, which: Iterable[str] = (ckpt.LAST,)) -> list[Path]:
        """Write ``last.pt`` and/or ``best.pt`` (main process only; a no-op elsewhere)."""
        if not self.dist.is_main:
            return []
        state = self.state_dict()
        out = []
        for name in which:
            path = ckpt.save_checkpoint(state, self.ckpt_dir / name)   # local disk first
            for p in (path, ckpt.sidecar_path(path)):
                self._wrote(p)
            out.append(path)
        if self.lock is not None:
            self.lock.heartbeat()  # after the local save; raises when another process took the run folder over
        for p in self.mirror.saved(which):   # the Drive copies that are due (run.mirror_every_min)
            self._wrote(p)
        return out

    # ---------------------------------------------------------------------------------------
    # data
    def _loader(self) -> Iterator[dict]:
        d = self.cfg.data
        start = self.step * self.cfg.train.accum_steps
        stream = BatchStream(len(self.train_ds), d.batch_size, self.cfg.run.seed, self.dist.world, self.dist.rank,
                             start=start)
        kwargs = {}
        if self.num_workers > 0:
            try:
                from ..data.datasets import worker_init_fn

                kwargs["worker_init_fn"] = worker_init_fn
            except ImportError:
                pass
            kwargs["prefetch_factor"] = 2
        # Own generator: creating the iterator must not consume the global RNG (exact resume).
        gen = torch.Generator().manual_seed(self.cfg.run.seed + 1000003 * self.dist.rank)
        loader = torch.utils.data.DataLoader(
            EpochIndexed(self.train_ds), batch_sampler=stream, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", generator=gen, **kwargs)
        return iter(loader)

    def next_batch(self) -> dict:
        if self._loader_iter is None:
            self._loader_iter = self._loader()
        return to_device(next(self._loader_iter), self.device, self.channels_last)

    def close(self) -> None:
        """Stop data workers, flush TensorBoard, restore the process-wide flags, release the run lock."""
        self._loader_iter = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.cfg.run.deterministic:
            torch.use_deterministic_algorithms(self._det_before[0], warn_only=self._det_before[1])
        torch.backends.cudnn.benchmark = self._benchmark_before
        if self.dist.is_main:
            for p in self.mirror.flush(self.lock):   # what the Drive copy still lacks (not after a take-over)
                self._wrote(p)
        self._release_lock()

    def _release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __del__(self):  # a Trainer dropped without close() (e.g. never fitted) frees its run folder
        try:
            self._release_lock()
        except Exception:
            pass

    # ---------------------------------------------------------------------------------------
    # one iteration
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> dict[str, Any] | None:
        """One iteration (``accum_steps`` micro-batches). Returns the loss terms as detached device tensors
        (plus ``lr_g`` / ``lr_d`` floats, and ``_finite``, a device bool); nothing here waits for the device
        (no ``.item()``): a non-finite step is skipped on the device (fused optimisers' ``found_inf``) and
        counted; the counts are read when a record is written (:meth:`after_step`)."""
        t = self.cfg.train
        it = self.step
        lr_g = self.sched_g.step(it)
        lr_d = self.sched_d.step(it) if self.opt_d is not None else 0.0
        gan_on = self.D is not None and it >= t.g_warmup_steps
        d_update = gan_on and it % t.d_every == 0
        self.G.train()
        if self.D is not None:
            self.D.train()
        self.opt_g.zero_grad(set_to_none=True)
        if d_update:
            self.opt_d.zero_grad(set_to_none=True)

        sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        with devmod.cudnn_benchmark(self._train_benchmark):  # fixed-shape crops: autotune pays here
            for micro in range(t.accum_steps):
                batch = self.next_batch()
                terms, ok, pred = self._micro_step(batch, micro == t.accum_steps - 1, gan_on, d_update)
                finite &= ok
                for k, v in terms.items():
                    if isinstance(v, torch.Tensor) and v.numel() == 1:
                        v = v.detach().float().reshape(()) / t.accum_steps
                        sums[k] = sums[k] + v if k in sums else v
            # every process skips when any has a non-finite loss (one all-reduce, no host sync)
            finite = self.dist.sum((~finite).to(torch.float32).reshape(1)).reshape(()) == 0
            self._committing = True  # an interrupt from here to the end of the step leaves no clean state
            self._optimizer_step(self.G, self.opt_g, self.scaler_g, finite)
            if d_update:
                self._optimizer_step(self.D, self.opt_d, self.scaler_d, finite)
        bad = (~finite).to(torch.int64)
        self._nf_run = (self._nf_run + 1) * bad
        self._nf_run_max = torch.maximum(self._nf_run_max, self._nf_run)
        self._nf_total = self._nf_total + bad
        self.step += 1
        self._committing = False
        out_terms: dict[str, Any] = dict(sums)
        out_terms["_finite"] = finite
        out_terms["lr_g"] = lr_g
        if self.opt_d is not None:
            out_terms["lr_d"] = lr_d
        self._last_batch, self._last_pred = batch, pred
        return out_terms

    def _micro_step(self, batch: dict, last_micro: bool, gan_on: bool, d_update: bool
                    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Forward + backward of one micro-batch: G's loss terms (adversarial with a frozen D when the GAN
        is on), then D's on detached fakes (one forward over real and fake, DDP- and BatchNorm-friendly).
        Returns (terms, all finite, G's alpha)."""
        from ..losses import discriminator_inputs, gan_loss_d

        cfg, t = self.cfg, self.cfg.train
        d_raw = ckpt.unwrap(self.D) if self.D is not None else None
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
        finite = torch.isfinite(total.detach()).all()
        if d_update:
            with self.dist.no_sync(self.D, skip=not last_micro):
                with self._autocast():
                    n = real.shape[0]
                    logits = self.D(torch.cat([real, fake.detach()], dim=0))
                    d_real, d_fake = logits[:n], logits[n:]
                    d_terms = gan_loss_d(d_real, d_fake, cfg.loss.gan_type)
                    d_total = d_terms["total"]
                self.scaler_d.scale(d_total.float() / t.accum_steps).backward()
            finite = finite & torch.isfinite(d_total.detach()).all()
            terms["d_total"] = d_total
            terms.update({k: v for k, v in d_terms.items() if k != "total"})  # d_real, d_fake
            terms["d_real_mean"] = d_real.detach().float().mean()
            terms["d_fake_mean"] = d_fake.detach().float().mean()
            terms["d_accuracy"] = d_accuracy(d_real, d_fake, cfg.loss.gan_type)
        return terms, finite, out["alpha"].detach()

    def _sync_nonfinite(self) -> int:
        """Read the device-side non-finite counters (a host sync: at log / checkpoint time only); returns
        the longest run of non-finite steps in a row since the last read."""
        peak = int(self._nf_run_max)
        self.nonfinite_total += int(self._nf_total)
        self.nonfinite_in_a_row = int(self._nf_run)
        self._nf_total.zero_()
        self._nf_run_max.copy_(self._nf_run)
        return peak

    def _check_nonfinite(self) -> None:
        """``train.max_nonfinite`` non-finite losses in a row stop the run (checked when the counters are read)."""
        t = self.cfg.train
        peak = self._sync_nonfinite()
        if peak >= t.max_nonfinite:
            raise NonFiniteLossError(
                f"{peak} non-finite losses in a row (step {self.step}, "
                f"{self.nonfinite_total} in total): stopping. Lower train.lr_g / lr_d, set train.grad_clip, "
                f"use train.amp=off or bf16, or check the data (train.max_nonfinite={t.max_nonfinite}).")

    def _optimizer_step(self, model, opt, scaler, finite: torch.Tensor) -> None:
        """Clip, then step unless ``finite`` (a device bool) is False, without waiting for the device: a
        fused optimiser skips on the device (``found_inf``); fp16's GradScaler skips non-finite gradients
        itself; any other optimiser falls back to reading the flag."""
        if self.cfg.train.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                           self.cfg.train.grad_clip)
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

    # ---------------------------------------------------------------------------------------
    # validation
    def validate(self, max_images: int | None = None) -> dict[str, float] | None:
        """Full-resolution validation on the evaluation set (sharded over processes), predicted through
        :func:`mattingkit.infer.predict` with the run's ``infer`` settings: the protocol notebook 04
        reports. Returns mean ``sad, mse, grad, conn, competition_mse`` (+ ``n``), or None without an
        evaluation set."""
        if self.val_ds is None or len(self.val_ds) == 0:
            return None
        limit = len(self.val_ds)
        for cap in (self.cfg.data.val_limit, max_images):
            if cap is not None:
                limit = min(limit, int(cap))
        with devmod.cudnn_benchmark(False):  # full-resolution images of many shapes: no autotune per shape
            sums, grid = validate_model(ckpt.unwrap(self.G), self.val_ds, self.cfg, self.device, limit=limit,
                                        rank=self.dist.rank, world=self.dist.world)
        sums = self.dist.sum(sums).cpu()
        n = int(sums[0].item())
        if n == 0:
            return None
        result = {k: float(sums[j + 1] / n) for j, k in enumerate(VAL_METRICS)}
        result["n"] = n
        self._val_grid = grid
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
                from ..viz import make_grid

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
        from ..progress import progress

        cfg, t = self.cfg, self.cfg.train
        end = t.steps if until is None else min(t.steps, int(until))
        if self.dist.is_main and self.lock is None:  # closed earlier (a second fit()) or superseded
            self._supersede_idle_trainer()
            self.lock = RunLock.for_config(self.run_dir, self.cfg, force=self.force, local_dir=self.mirror.local_dir).acquire()
            _HOLDERS[str(self.run_dir.resolve())] = weakref.ref(self)
        self._fitting = True
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
                try:
                    terms = self.train_step()
                except Exception as e:
                    if not devmod.is_oom(e):
                        raise
                    self._oom = True  # no checkpoint of a half-done step: the last one stays as it was
                    devmod.free_cuda_memory()
                    raise devmod.training_oom_error(e, cfg, self.amp_dtype, self.device, self.channels_last) from None
                if bar is not None:
                    bar.update(1)
                self.after_step(terms, end, bar)
                if deadline is not None and self.dist.broadcast_flag(time.monotonic() > deadline):
                    if self.step % t.ckpt_every != 0 and self.step != end:
                        self.save((ckpt.LAST,))
                    stopped = "time_limit"
                    break
        except KeyboardInterrupt:
            if self._committing or getattr(self, "_oom", False):
                print("\ninterrupted while updating weights: keeping the previous last.pt", flush=True)
            else:
                if self.dist.is_main:
                    print(f"\ninterrupted at step {self.step}: saving last.pt", flush=True)
                self.save((ckpt.LAST,))
            raise
        finally:
            self._fitting = False
            if bar is not None:
                bar.close()
            self.close()
        elapsed = time.monotonic() - t_start
        if stopped == "done" and self.step < t.steps:
            stopped = "until"
        summary = self._summary(stopped, elapsed, self.step - step_start)
        if self.dist.is_main:
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
            ok = terms.get("_finite")
            ok = torch.ones((), dtype=torch.bool, device=self.device) if ok is None else ok
            for k, v in terms.items():
                if k == "_finite":
                    continue
                if isinstance(v, torch.Tensor):  # device tensors: a skipped step adds nothing (no sync)
                    v = torch.where(ok, v.detach().to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                                    device=v.device))
                    self._window[k] = self._window[k] + v if k in self._window else v
                else:
                    self._window_lr[k] = v
            self._window_n = self._window_n + ok.to(torch.float64)
        if step % t.log_every == 0 or step == end:
            self._check_nonfinite()
            n = int(self._window_n)  # the one host sync of the window
            window = {k: float(v) for k, v in self._window.items()} if n else {}
            window.update({k: v * n for k, v in self._window_lr.items()} if n else {})
            self._log_train(window, n, bar)
            self._window, self._window_lr = {}, {}
            self._window_n = torch.zeros((), dtype=torch.float64, device=self.device)
        if step % t.image_every == 0 and terms is not None and self.writer is not None:
            from ..viz import make_grid

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

    @property
    def _ckpt_home(self) -> Path:
        """The run folder's checkpoints (the Drive copy when writing locally and mirroring)."""
        return self.mirror_dir if self.mirror_dir is not None else self.ckpt_dir

    def _summary(self, stopped: str, elapsed: float, steps_done: int) -> dict:
        self._sync_nonfinite()
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
            "checkpoints": {n: str(self._ckpt_home / n) for n in (ckpt.LAST, ckpt.BEST)
                            if (self._ckpt_home / n).exists()},
            "version": __version__,
        }


def d_accuracy(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """:func:`mattingkit.losses.discriminator_accuracy` as a device tensor (no host sync per step): per-image
    verdicts (PatchGAN maps averaged), threshold 0 (bce / hinge) or 0.5 (lsgan).

    Example:
        >>> from mattingkit.losses import discriminator_accuracy
        >>> r, f = torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -0.5])
        >>> float(d_accuracy(r, f)) == discriminator_accuracy(r, f)
        True
    """
    t = 0.5 if kind == "lsgan" else 0.0

    def verdicts(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        return x.reshape(x.shape[0], -1).mean(1) if x.ndim > 1 else x

    return 0.5 * ((verdicts(d_real) > t).float().mean() + (verdicts(d_fake) < t).float().mean())


def checkpoint_dirs(cfg: Config, run_dir: Path) -> tuple[Path, Path | None]:
    """``(where checkpoints are written, where they are mirrored or None)`` from ``run.checkpoint_local_dir``:
    ``null`` -> the run folder's ``checkpoints``, no mirror; a path -> ``PATH/<run folder name>`` on local
    disk, mirrored to the run folder's ``checkpoints``; ``auto`` -> that under the temp folder when the run
    folder is on a mounted Google Drive (each replaced Drive file goes to Drive's trash and counts against
    the quota; the FUSE mount may refuse fsync), else no mirror.

    Example:
        >>> from mattingkit.config import load_config
        >>> checkpoint_dirs(load_config("demo", ["run.checkpoint_local_dir=/local"]), Path("/drive/runs/x"))
        (PosixPath('/local/x'), PosixPath('/drive/runs/x/checkpoints'))
        >>> checkpoint_dirs(load_config("demo", ["run.checkpoint_local_dir=null"]), Path("/r/x"))
        (PosixPath('/r/x/checkpoints'), None)
    """
    home = run_dir / "checkpoints"
    spec = getattr(cfg.run, "checkpoint_local_dir", "auto")
    if spec in (None, "", "null", "none"):
        return home, None
    if spec == "auto":
        if not on_drive(run_dir):
            return home, None
        import tempfile

        spec = Path(tempfile.gettempdir()) / "mattingkit_checkpoints"
    local = Path(str(spec)).expanduser() / run_dir.name
    if local.resolve() == home.resolve():
        return home, None
    return local, home


def on_drive(path: Path) -> bool:
    """Whether ``path`` lies on a mounted Google Drive (:data:`mattingkit.env.COLAB_DRIVE`)."""
    from .. import env

    drive = Path(env.COLAB_DRIVE)
    if not env.drive_mounted():
        return False
    try:
        Path(path).resolve().relative_to(drive.resolve())
        return True
    except ValueError:
        return False


__all__ = ["NonFiniteLossError", "SUMMARY_FILE", "Trainer", "checkpoint_dirs", "d_accuracy", "on_drive"]

"""The trainer: G (matting network) + optional D (PatchGAN), one step, validation and the loop. The run
folder, lock and checkpoint state are :mod:`~mattingkit.train.session`'s, the records :mod:`~mattingkit.train.log`'s;
the recipe, resuming and multi-process training are described in docs/training.md."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import device as devmod
from ..config import Config
from ..errors import Interrupted, RunStateError
from .distributed import Dist
from .log import TrainLog, run_summary
from .nonfinite import BadSteps, grads_finite, step_unless_nonfinite
from .schedule import LRSchedule
from .session import Session, restore_training_state, training_state
from .setup import (
    build_data,
    build_models,
    check_config,
    load_matching,
    load_resumed_weights,
    make_optimizer,
    resolve_init_from,
)
from .stream import make_loader, to_device
from .validation import validate


class Trainer:
    """Holds G, D, optimisers, schedules, scalers and data for one run folder (:class:`Session`) and its
    records (:class:`TrainLog`).

    ``model`` / ``discriminator`` / ``train_dataset`` / ``val_dataset`` may be given (tests, notebooks
    experimenting with a custom module); otherwise they are built from ``cfg``. ``loss_fn`` likewise
    defaults to :func:`mattingkit.losses.matting_loss`. ``__init__`` is a list of named phases.

    Example (given demo data):
        >>> trainer = Trainer(load_config("demo", ["train.steps=20"]), fresh=True)   # doctest: +SKIP
        >>> summary = trainer.fit()                                                 # doctest: +SKIP
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike | None = None, fresh: bool = False, *,
                 model: nn.Module | None = None, discriminator: nn.Module | None = None,
                 train_dataset=None, val_dataset=None, loss_fn: Callable | None = None,
                 headless: bool | None = None, force: bool = False):
        check_config(cfg)
        self.cfg, self.headless = cfg, headless
        self._init_distributed()
        self.session = Session(cfg, run_dir, self.dist, force)
        self.run_dir = self.session.run_dir
        self.session.open(fresh)
        try:
            self._init_determinism()
            self._init_datasets(train_dataset, val_dataset)
            model, discriminator = self._init_models(model, discriminator, loss_fn)
            self._init_state()
            resume_state = self._init_starting_weights(model, discriminator, fresh)
            self._init_optimizers(model, discriminator)
            if resume_state is not None:
                restore_training_state(self, resume_state)
            self.log = TrainLog(cfg, self.session, self.device)
        except BaseException:
            self.session.release()
            self.free()
            raise

    # ---------------------------------------------------------------------------------------
    # set-up phases
    def _init_distributed(self) -> None:
        """One process, or one of several (Accelerate); the device plan (:func:`mattingkit.device.plan`:
        device, AMP dtype, GradScaler for fp16 only, channels_last, loader workers; it refuses an
        unsupported GPU, and a missing one when ``run.require_gpu``). DIM's first stage leaves its
        refinement head without gradients, which DDP must be told."""
        cfg = self.cfg
        unused = cfg.train.find_unused_parameters or (cfg.model.name == "dim"
                                                      and cfg.model.dim_stage == "encoder_decoder")
        self.plan = devmod.plan(cfg)
        self.dist = Dist(cfg.run.device, find_unused_parameters=unused, timeout_s=cfg.train.dist_timeout_s)
        self.device = self.plan.device if self.dist.world == 1 else self.dist.device
        self.amp_dtype, self.channels_last = self.plan.amp_dtype, self.plan.channels_last
        self.num_workers = self.plan.num_workers

    def _init_determinism(self) -> None:
        """``run.deterministic``: deterministic algorithms, process-wide (restored by :meth:`close`).
        cudnn.benchmark is not set process-wide: each training step turns it on (fixed-shape crops, CUDA,
        not deterministic) and restores it; validation runs with it off (:func:`mattingkit.device.cudnn_benchmark`)."""
        self._det_before = (torch.are_deterministic_algorithms_enabled(),
                            torch.is_deterministic_algorithms_warn_only_enabled())
        self._benchmark_before = torch.backends.cudnn.benchmark
        self.train_benchmark = self.device.type == "cuda" and not self.cfg.run.deterministic
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
        """G and D (:func:`mattingkit.train.setup.build_models`) and the loss function."""
        model, discriminator = build_models(self.cfg, model, discriminator, channels_last=self.channels_last,
                                            sync_bn=self.dist.world > 1 and self.cfg.model.sync_bn)
        if loss_fn is None:
            from ..losses import matting_loss as loss_fn
        self.loss_fn = loss_fn
        return model, discriminator

    def _init_state(self) -> None:
        """Counters and records at step 0 (a resumed checkpoint overwrites them)."""
        t = self.cfg.train
        self.step = 0
        self.best: dict[str, Any] = {"metric": t.best_metric, "mode": t.best_mode, "value": None, "step": None,
                                     "metrics": None}
        self.last_val: dict[str, float] | None = None
        self.bad_steps = BadSteps(self.device, t.max_nonfinite)
        self.resumed_from: str | None = None
        self._loader_iter = None
        self._committing = False  # True while the weights are being updated (an interrupt keeps last.pt)
        self._val_grid: list = []

    def _init_starting_weights(self, model: nn.Module, discriminator: nn.Module | None, fresh: bool) -> dict | None:
        """Resume from the run's newer checkpoint (weights loaded here, before optimisers and DDP
        wrapping; the rest after), else start from ``train.init_from`` when set. Returns the resumed state."""
        state = self.session.resume_state(fresh)
        if state is None and self.cfg.train.init_from:
            init_path = resolve_init_from(self.cfg)
            missing, _ = load_matching(model, ckpt.load_checkpoint(init_path)["generator"])
            if self.dist.is_main:
                print(f"initialised G from {init_path} ({len(missing)} tensors kept their init)", flush=True)
        if state is not None:
            load_resumed_weights(model, discriminator, state)
        return state

    def _init_optimizers(self, model: nn.Module, discriminator: nn.Module | None) -> None:
        """Wrap the models (DDP), then optimisers, schedules and gradient scalers (fp16 only)."""
        t = self.cfg.train
        self.G = self.dist.wrap(model)
        self.D = self.dist.wrap(discriminator) if discriminator is not None else None
        self.opt_g = make_optimizer(ckpt.unwrap(self.G).parameters(), t, t.lr_g)
        self.opt_d = make_optimizer(ckpt.unwrap(self.D).parameters(), t, t.lr_d) if self.D is not None else None
        self.sched_g = LRSchedule.from_config(self.opt_g, t.lr_g, t)
        self.sched_d = LRSchedule.from_config(self.opt_d, t.lr_d, t)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=self.plan.grad_scaler)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=self.plan.grad_scaler)

    # ---------------------------------------------------------------------------------------
    # state, data, the end (and after a failure)
    def state_dict(self) -> dict:
        """Everything a checkpoint holds (:func:`mattingkit.train.session.training_state`)."""
        return training_state(self)

    def save(self, which: Iterable[str] = (ckpt.LAST,)) -> list:
        """Write ``last.pt`` and/or ``best.pt`` (main process only; a no-op elsewhere)."""
        return self.session.save(self.state_dict(), which) if self.dist.is_main else []

    def next_batch(self) -> dict:
        if self._loader_iter is None:
            self._loader_iter = make_loader(self.train_ds, self.cfg, self.dist.rank, self.dist.world, self.step,
                                            self.num_workers, pin_memory=self.device.type == "cuda")
        return to_device(next(self._loader_iter), self.device, self.channels_last)

    def close(self) -> None:
        """Stop data workers, flush TensorBoard, restore the process-wide flags, release the run lock."""
        self._loader_iter = None
        self.log.close()
        if self.cfg.run.deterministic:
            torch.use_deterministic_algorithms(self._det_before[0], warn_only=self._det_before[1])
        torch.backends.cudnn.benchmark = self._benchmark_before
        self.session.flush()
        self.session.release()

    def free(self) -> None:
        """Drop what holds device memory (models, optimisers, schedules, scalers, the last batch) and empty
        the device cache. A failed fit does it: the notebook keeps this object alive through the traceback,
        and a retry (a smaller batch, say) must find the device empty. A freed Trainer cannot fit again."""
        for name in ("G", "D", "opt_g", "opt_d", "sched_g", "sched_d", "scaler_g", "scaler_d", "last_batch", "last_pred"):
            setattr(self, name, None)
        self._val_grid, self._loader_iter = [], None
        devmod.free_cuda_memory()

    # ---------------------------------------------------------------------------------------
    # one iteration
    def _autocast(self):  # the plan's AMP (DevicePlan.autocast: the one place autocast is applied)
        return self.plan.autocast()

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
        with devmod.cudnn_benchmark(self.train_benchmark):  # fixed-shape crops: autotune pays here
            for micro in range(t.accum_steps):
                batch = self.next_batch()
                terms, ok, pred = self._micro_step(batch, micro == t.accum_steps - 1, gan_on, d_update)
                finite &= ok
                for k, v in terms.items():
                    if isinstance(v, torch.Tensor) and v.numel() == 1:
                        v = v.detach().float().reshape(()) / t.accum_steps
                        sums[k] = sums[k] + v if k in sums else v
            if not self.scaler_g.is_enabled():  # (fp16's GradScaler checks the gradients itself)
                finite &= grads_finite(self.opt_g) & (grads_finite(self.opt_d) if d_update else True)
            # every process skips when any has a non-finite loss or gradient (one all-reduce, no host sync)
            finite = self.dist.sum((~finite).to(torch.float32).reshape(1)).reshape(()) == 0
            self._committing = True  # an interrupt from here to the end of the step leaves no clean state
            step_unless_nonfinite(self.opt_g, self.scaler_g, finite, t.grad_clip)
            if d_update:
                step_unless_nonfinite(self.opt_d, self.scaler_d, finite, t.grad_clip)
        self.bad_steps.update(finite)
        self.step += 1
        self._committing = False
        out_terms: dict[str, Any] = {**sums, "_finite": finite, "lr_g": lr_g}
        if self.opt_d is not None:
            out_terms["lr_d"] = lr_d
        self.last_batch, self.last_pred = batch, pred
        return out_terms

    def _micro_step(self, batch: dict, last_micro: bool, gan_on: bool, d_update: bool
                    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Forward + backward of one micro-batch: G's loss terms (adversarial with a frozen D when the GAN
        is on), then D's on detached fakes (one forward over real and fake, DDP- and BatchNorm-friendly).
        Returns (terms, all finite, G's alpha)."""
        from ..losses import d_accuracy, discriminator_inputs, gan_loss_d

        cfg, t = self.cfg, self.cfg.train
        d_raw = ckpt.unwrap(self.D) if self.D is not None else None
        with self.dist.no_sync(self.G, skip=not last_micro):
            with self._autocast():
                guide = batch.get("guide")   # a guided model's input, solved per crop in the data workers
                out = (self.G(batch["image"], batch["trimap"]) if guide is None
                       else self.G(batch["image"], batch["trimap"], guide=guide))
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

    # ---------------------------------------------------------------------------------------
    # validation
    def validate(self, max_images: int | None = None) -> dict[str, float] | None:
        """Full-resolution validation on the evaluation set (sharded over processes), predicted through
        :func:`mattingkit.infer.predict` with the run's ``infer`` settings: the protocol notebook 04
        reports. Returns mean ``sad, mse, grad, conn, competition_mse`` (+ ``n``), or None without an
        evaluation set."""
        result, self._val_grid = validate(ckpt.unwrap(self.G), self.val_ds, self.cfg, self.device, self.dist,
                                          max_images)
        return result

    def after_validation(self, result: dict[str, float]) -> bool:
        """Record a validation, update the best and the plateau schedules; True when this is a new best."""
        t = self.cfg.train
        self.last_val = result
        value, best = result[t.best_metric], self.best["value"]
        improved = best is None or (value < best if t.best_mode == "min" else value > best)
        if improved:
            self.best.update(value=value, step=self.step, metrics=dict(result))
        self.sched_g.observe(value)
        self.sched_d.observe(value)
        self.log.write_val(self.step, result, self.best, self._val_grid)
        return improved

    # ---------------------------------------------------------------------------------------
    # the loop
    def fit(self, until: int | None = None) -> dict:
        """Train to ``train.steps`` (or stop after step ``until``: a session budget) and return a summary.

        The run can be interrupted at any point (Ctrl-C saves ``last.pt``) and continued by calling
        :func:`train` / ``Trainer(...).fit()`` again on the same folder. Any exception out of it frees this
        Trainer (:meth:`free`): continue with a new one.
        """
        t = self.cfg.train
        end = t.steps if until is None else min(t.steps, int(until))
        if self.G is None:
            raise RunStateError("this Trainer was freed after an error (its models and optimisers are gone): "
                                "create a new one, e.g. train(cfg) again, to continue from the last checkpoint")
        self.session.ensure_lock()  # (closed earlier by a first fit(), or superseded)
        self.session.fitting = True
        if self.cfg.run.deterministic:  # (again: close() restores the process-wide setting)
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.session.save_config()
        deadline = None if t.time_limit_min is None else self.log.t0 + 60.0 * t.time_limit_min
        stopped, t_start, step_start, failed = "done", time.monotonic(), self.step, True
        try:
            if self.step == 0 and t.val_at_start:
                self._validate_and_keep_best()
            self.log.start_progress(self.step, end, self.headless)
            while self.step < end:
                terms = self._oom_checked(self.train_step)
                self.log.tick()
                self.after_step(terms, end)
                if deadline is not None and self.dist.main_says(time.monotonic() > deadline,
                                                                 self.step % t.log_every == 0):
                    if self.step % t.ckpt_every != 0 and self.step != end:
                        self.save((ckpt.LAST,))
                    stopped = "time_limit"
                    break
            failed = False
        except KeyboardInterrupt:
            if self._committing:
                kept = "interrupted while updating weights: the previous last.pt is kept"
            else:
                self.save((ckpt.LAST,))
                kept = f"interrupted at step {self.step}: last.pt saved"
            raise Interrupted(f"{kept}; run the same command to continue") from None
        finally:
            self.session.fitting = False
            self.close()
            if failed:  # any exception: what holds device memory goes (the lock went in close())
                self.free()
        stopped = "until" if stopped == "done" and self.step < t.steps else stopped
        summary = run_summary(self, stopped, time.monotonic() - t_start, self.step - step_start)
        self.session.write_summary(summary)
        self.dist.barrier()
        return summary

    def after_step(self, terms: dict[str, Any] | None, end: int) -> None:
        """The periodic work after each iteration: log (every ``log_every``), image grid
        (``image_every``), validation + best.pt (``val_every`` and the last step), last.pt
        (``ckpt_every`` and the end of the session)."""
        t, step = self.cfg.train, self.step
        if terms is not None:
            self.log.add(terms)
        if step % t.log_every == 0 or step == end:
            self.bad_steps.check(step)
            self.log.write_train(step, self.bad_steps.total)
        if step % t.image_every == 0 and terms is not None:
            self.log.train_images(step, self.last_batch, self.last_pred)
        if step % t.val_every == 0 or step == t.steps:
            self._validate_and_keep_best()
        if step % t.ckpt_every == 0 or step == end:
            self.save((ckpt.LAST,))

    def _validate_and_keep_best(self) -> None:
        res = self._oom_checked(self.validate, validating=True)
        if res is not None and self.after_validation(res):
            self.save((ckpt.BEST,))

    def _oom_checked(self, fn: Callable[[], Any], validating: bool = False) -> Any:
        """``fn()``; a device out-of-memory error becomes the kit's message naming what to change, raised
        outside the handler (so the failed step's tensors are not kept alive by the original error)."""
        try:
            return fn()
        except Exception as e:
            if not devmod.is_oom(e):
                raise
            err = devmod.training_oom_error(e, self.cfg, self.amp_dtype, self.device, self.channels_last, validating)
        raise err


__all__ = ["Trainer"]

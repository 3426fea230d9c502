"""The run folder a training owns: its paths, its lock, the records an earlier attempt left, and the state
a checkpoint holds.

One :class:`Session` per :class:`~mattingkit.train.Trainer`. The main process creates the folders, takes the
run lock (one process per run folder: a second trainer is refused, naming the holder; ``force`` takes
over), clears an earlier run's records for a fresh start or brings the newest valid Drive copies back for
a resume, appends the loss history (``metrics.jsonl``) and writes the checkpoints (heartbeat after the
local save) and the summary. With a Drive run folder (``run.checkpoint_local_dir``) the checkpoints, the
history and the lock live on local disk and :class:`~mattingkit.checkpoint.RunMirror` copies them to the
run folder, rationed (``run.mirror_every_min``) and tolerant of Drive hiccups. :func:`training_state` / :func:`restore_training_state` are everything a checkpoint holds and
how a resume puts it back, so that a resumed run continues exactly.

Example:
    >>> import tempfile
    >>> from mattingkit.config import load_config
    >>> from mattingkit.train.distributed import Dist
    >>> s = Session(load_config("demo"), Path(tempfile.mkdtemp()) / "run", Dist("cpu"))
    >>> s.open(fresh=True); (s.run_dir / "run.lock").exists(), s.ckpt_dir.name
    (True, 'checkpoints')
    >>> s.release(); (s.run_dir / "run.lock").exists()
    False
"""
from __future__ import annotations

import json
import os
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import __version__, drive
from .. import checkpoint as ckpt
from ..config import Config
from ..run import HISTORY_FILE, HistoryLog, default_run_dir, read_history, save_run_config
from ..runlock import RunLock
from .distributed import Dist
from .setup import load_optimizer_state

#: The trainer's own summary in the run folder (``metrics.json`` belongs to the notebooks' sections).
SUMMARY_FILE = "train_summary.json"

#: run folder -> the Session of this process holding its lock
_HOLDERS: dict[str, "weakref.ref[Session]"] = {}


class Session:
    """The run folder of one training: ``run_dir``, ``ckpt_dir`` / ``mirror_dir``
    (:func:`mattingkit.checkpoint.checkpoint_dirs`), ``history_path``, the lock, and ``written`` (the files
    this process wrote: the multi-process test checks that only the main process writes)."""

    def __init__(self, cfg: Config, run_dir: str | os.PathLike | None, dist: Dist, force: bool = False):
        self.cfg, self.dist, self.force = cfg, dist, bool(force)
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
        self.ckpt_dir, self.mirror_dir = ckpt.checkpoint_dirs(cfg, self.run_dir)
        # Drive: history and lock beside the local checkpoints, copied to the run folder (rationed, tolerant)
        self.mirror = ckpt.RunMirror.for_config(cfg, self.run_dir, self.ckpt_dir, self.mirror_dir, (HISTORY_FILE,))
        self.history_path = self.mirror.local(HISTORY_FILE)
        self.history = HistoryLog(self.history_path)
        self.written: list[str] = []
        self.lock: RunLock | None = None
        self.fitting = False  # a fitting session keeps its lock when a second one opens in this process

    def open(self, fresh: bool) -> None:
        """The main process creates the folders, takes the lock, removes stale temporary files and, for a
        fresh start, an earlier run's records; resuming, the newest valid copy of either place wins."""
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.acquire()
            try:
                for folder in (self.ckpt_dir, self.mirror_dir):
                    if folder is not None:
                        folder.mkdir(parents=True, exist_ok=True)
                        ckpt.cleanup_temp_files(folder)
                if fresh or not self.cfg.train.resume:
                    self.clear_previous_run()
                elif self.mirror_dir is not None:  # resuming: the newest valid copy of either place wins
                    for name, what in self.mirror.restore().items():
                        print(f"checkpoint {name}: {what}", flush=True)
            except BaseException:
                self.release()
                raise
        self.dist.barrier()

    # ---------------------------------------------------------------------------------------
    # the lock: one process per run folder
    def acquire(self) -> None:
        """Take the run lock (main process). A Session of this process on the same run folder that is not
        fitting (a notebook cell run again while the earlier Trainer is still referenced) gives its lock up
        first: its next fit would then be refused instead of racing. One that is fitting keeps it."""
        key = str(self.run_dir.resolve())
        ref = _HOLDERS.get(key)
        old = ref() if ref is not None else None
        if old is not None and old is not self and not old.fitting:
            old.release()
        self.lock = RunLock.for_config(self.run_dir, self.cfg, force=self.force,
                                       local_dir=self.mirror.local_dir).acquire()
        _HOLDERS[key] = weakref.ref(self)
        if self.lock.note:
            print(f"run lock: {self.lock.note}", flush=True)

    def ensure_lock(self) -> None:
        """Take the lock again when it was released (a second fit(), or superseded)."""
        if self.dist.is_main and self.lock is None:
            self.acquire()

    def flush(self) -> None:
        """The end of a session (main process): what the Drive copy still lacks is copied (not after a
        take-over: the run folder is then another process's)."""
        if self.dist.is_main:
            for p in self.mirror.flush(self.lock):
                self.wrote(p)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __del__(self):  # a Trainer dropped without close() (e.g. never fitted) frees its run folder
        try:
            self.release()
        except Exception:
            pass

    # ---------------------------------------------------------------------------------------
    # files
    def wrote(self, path: Path) -> None:
        s = str(path)
        if s not in self.written:
            self.written.append(s)

    def clear_previous_run(self) -> None:
        """Forget an earlier run in the same folder (checkpoints, loss history, TensorBoard events;
        train_summary.json is rewritten at the end, config.yaml at the start, manifest.csv is kept)."""
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

    def append_history(self, record: Mapping[str, Any]) -> None:
        """One JSON line in ``metrics.jsonl`` (main process only)."""
        if not self.dist.is_main:
            return
        self.history.append(record)   # a failing file system: retried, then kept for the next record
        self.wrote(self.history_path)

    def truncate_history(self, step: int) -> None:
        """Drop history records written after the checkpoint we resume from (they will be redone)."""
        if not self.history_path.exists():
            return
        keep = [rec for rec in read_history(self.history_path) if rec.get("step", 0) <= step]
        drive.write_text(self.history_path, "".join(json.dumps(r) + "\n" for r in keep))

    def save_config(self) -> None:
        """``config.yaml`` (a no-op when the run folder already holds this config; main process)."""
        if self.dist.is_main:
            save_run_config(self.cfg, self.run_dir)
            self.wrote(self.run_dir / "config.yaml")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if self.dist.is_main:
            drive.write_text(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=1, default=str))
            self.wrote(self.run_dir / SUMMARY_FILE)

    # ---------------------------------------------------------------------------------------
    # checkpoints
    @property
    def ckpt_home(self) -> Path:
        """The run folder's checkpoints (the Drive copy when writing locally and mirroring)."""
        return self.mirror_dir if self.mirror_dir is not None else self.ckpt_dir

    def resume_state(self, fresh: bool) -> dict | None:
        """The state to continue from (:func:`mattingkit.checkpoint.pick_resume_state`), or None; starting
        at step 0, the records of an earlier attempt that never reached a checkpoint go."""
        state = ckpt.pick_resume_state(self.ckpt_dir) if self.cfg.train.resume and not fresh else None
        if state is None and self.dist.is_main:
            self.clear_previous_run()
        return state

    def save(self, state: Mapping[str, Any], which: Iterable[str]) -> list[Path]:
        """Write ``state`` as each of ``which`` (``last.pt`` / ``best.pt``) on local disk; then the lock's
        heartbeat (it raises when another process took the run folder over) and the Drive copies that are
        due (:meth:`~mattingkit.checkpoint.RunMirror.saved`)."""
        out = []
        for name in which:
            path = ckpt.save_checkpoint(state, self.ckpt_dir / name)   # local disk first
            for p in (path, ckpt.sidecar_path(path)):
                self.wrote(p)
            out.append(path)
        if self.lock is not None:
            self.lock.heartbeat()
        for p in self.mirror.saved(which):
            self.wrote(p)
        return out


# --------------------------------------------------------------------------------------------
# What a checkpoint holds, and how a resume puts it back
# --------------------------------------------------------------------------------------------
def training_state(tr: Any) -> dict:  # tr: the Trainer (not imported: it imports this module)
    """Everything needed to continue exactly: weights, optimisers, schedules, scalers, RNG, counters."""
    g, d = ckpt.unwrap(tr.G), ckpt.unwrap(tr.D) if tr.D is not None else None
    return {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        "version": __version__,
        "step": tr.step,
        "epoch": (tr.step * tr.cfg.train.accum_steps * tr.cfg.data.batch_size * tr.dist.world)
                 // max(1, len(tr.train_ds)),
        "best": dict(tr.best),
        "last_val": tr.last_val,
        "nonfinite": tr.bad_steps.state_dict(),
        "generator": g.state_dict(),
        "discriminator": d.state_dict() if d is not None else None,
        "opt_g": tr.opt_g.state_dict(),
        "opt_d": tr.opt_d.state_dict() if tr.opt_d is not None else None,
        "sched_g": tr.sched_g.state_dict(),
        "sched_d": tr.sched_d.state_dict(),
        "scaler_g": tr.scaler_g.state_dict(),
        "scaler_d": tr.scaler_d.state_dict(),
        "rng": ckpt.rng_state(),
        "world_size": tr.dist.world,
        "config": tr.cfg.to_dict(),
    }


def restore_training_state(tr: Any, state: Mapping[str, Any]) -> None:
    """Put a resumed checkpoint's counters, records, optimisers, schedules, scalers and RNG back (its
    weights were loaded before the models were wrapped); history written after it is dropped."""
    tr.step = int(state["step"])
    tr.best.update({k: v for k, v in (state.get("best") or {}).items() if k in ("value", "step", "metrics")})
    if (state.get("best") or {}).get("metric") not in (None, tr.cfg.train.best_metric):
        tr.best.update(value=None, step=None, metrics=None)  # a different metric: start over
    tr.last_val = state.get("last_val")
    tr.bad_steps.load_state_dict(state.get("nonfinite") or {})
    load_optimizer_state(tr.opt_g, state["opt_g"])
    if tr.opt_d is not None and state.get("opt_d") is not None:
        load_optimizer_state(tr.opt_d, state["opt_d"])
    tr.sched_g.load_state_dict(state.get("sched_g") or {})
    tr.sched_d.load_state_dict(state.get("sched_d") or {})
    if state.get("scaler_g"):
        tr.scaler_g.load_state_dict(state["scaler_g"])
    if state.get("scaler_d"):
        tr.scaler_d.load_state_dict(state["scaler_d"])
    if state.get("rng") is not None:
        ckpt.set_rng_state(state["rng"])
    tr.resumed_from = state.get("_path")
    if state.get("world_size", tr.dist.world) != tr.dist.world and tr.dist.is_main:
        warnings.warn(f"resuming a run made with {state.get('world_size')} processes on {tr.dist.world}: "
                      "the data order after the resume point differs", stacklevel=3)
    if tr.dist.is_main:
        tr.session.truncate_history(tr.step)
        src = state.get("_path")
        if state.get("_fallback_from"):
            src = f"{src} ({state['_fallback_from']} was unreadable)"
        elif state.get("_resume_note"):
            src = f"{src} ({state['_resume_note']})"
        print(f"resuming from step {tr.step}: {src}", flush=True)


__all__ = ["SUMMARY_FILE", "Session", "restore_training_state", "training_state"]

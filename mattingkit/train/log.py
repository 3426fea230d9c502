"""What a training run records: the loss window (kept on the device between records), the JSON-lines
history (``metrics.jsonl``), TensorBoard scalars and image grids, the progress shown while it runs, and
the summary the run ends with (``train_summary.json``).

Progress: in a live notebook or a terminal, a tqdm bar (loss in its postfix) with a line per validation;
headless (``mattingkit run``'s papermill kernels, a pipe, CI), a line per record -- step/total, elapsed,
ETA, loss (:func:`progress_line`) -- and one per validation, which ``mattingkit run`` relays to the console.

Loss sums since the last record stay device tensors, so a step waits for nothing; they become numbers
only when a record is written (every ``train.log_every`` steps), as a mean over the steps that were not
skipped and, with several processes, over the processes.

Example:
    >>> import tempfile, torch
    >>> from mattingkit.config import load_config
    >>> from mattingkit.train.distributed import Dist
    >>> from mattingkit.train.session import Session
    >>> cfg = load_config("demo", ["train.tensorboard=false"])
    >>> session = Session(cfg, Path(tempfile.mkdtemp()), Dist("cpu"))
    >>> log = TrainLog(cfg, session, torch.device("cpu"))
    >>> log.add({"total": torch.tensor(2.0), "_finite": torch.tensor(True), "lr_g": 1e-3})
    >>> log.add({"total": torch.tensor(4.0), "_finite": torch.tensor(True), "lr_g": 1e-3})
    >>> log.write_train(step=2, nonfinite_total=0)["total"]
    3.0
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import __version__
from .. import checkpoint as ckpt
from ..config import Config
from .session import Session


class TrainLog:
    """The records of one run folder (main process writes; every process takes part in the means)."""

    def __init__(self, cfg: Config, session: Session, device: torch.device):
        self.cfg, self.session, self.dist, self.device = cfg, session, session.dist, device
        self._writer = None
        self._window: dict[str, torch.Tensor] = {}
        self._window_n = torch.zeros((), dtype=torch.float64, device=device)
        self._window_lr: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.bar = None
        self.lines = False  # headless: a printed line per record instead of a bar
        self._span = (0, 0, self.t0)  # this session's (first step, last step, start time)

    @property
    def writer(self):
        """TensorBoard SummaryWriter (main process, when ``train.tensorboard``), created on first use."""
        if self._writer is None and self.dist.is_main and self.cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.session.run_dir / "tb"), flush_secs=30)
            self.session.wrote(self.session.run_dir / "tb")
        return self._writer

    def start_progress(self, step: int, end: int, headless: bool | None = None) -> None:
        """Progress from ``step`` to ``end`` (main process): a bar, or headless a line per record."""
        from .. import env
        from ..progress import progress

        self._span = (step, end, time.monotonic())
        if not self.dist.is_main:
            return
        self.lines = env.is_headless() if headless is None else bool(headless)
        if not self.lines:
            self.bar = progress(total=max(0, end - step), desc=f"train {self.cfg.run.name}", headless=False)

    def say(self, line: str) -> None:
        """A line on the console (main process), above the bar when there is one."""
        if self.bar is not None:
            self.bar.write(line)
        elif self.dist.is_main:
            print(line, flush=True)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add(self, terms: Mapping[str, Any]) -> None:
        """Add one step's terms to the window: device tensors (a skipped step, ``_finite`` False, adds
        nothing; no host sync) and learning-rate floats."""
        ok = terms.get("_finite")
        ok = torch.ones((), dtype=torch.bool, device=self.device) if ok is None else ok
        for k, v in terms.items():
            if k == "_finite":
                continue
            if isinstance(v, torch.Tensor):
                v = torch.where(ok, v.detach().to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                                device=v.device))
                self._window[k] = self._window[k] + v if k in self._window else v
            else:
                self._window_lr[k] = v
        self._window_n = self._window_n + ok.to(torch.float64)

    def write_train(self, step: int, nonfinite_total: int) -> dict[str, Any]:
        """Read the window (the one host sync of it), write its record, start a new window."""
        n = int(self._window_n)
        window = {k: float(v) for k, v in self._window.items()} if n else {}
        window.update({k: v * n for k, v in self._window_lr.items()} if n else {})
        self._window, self._window_lr = {}, {}
        self._window_n = torch.zeros((), dtype=torch.float64, device=self.device)
        return self.train_record(step, window, n, nonfinite_total)

    def train_record(self, step: int, window: Mapping[str, float], n: int, nonfinite_total: int) -> dict[str, Any]:
        """The record of ``n`` steps whose terms sum to ``window``: averaged over processes, appended to
        the history, sent to TensorBoard and the progress bar. Returns the record."""
        rec: dict[str, Any] = {"step": step, "phase": "train"}
        if self.dist.world > 1 and window:  # the mean over processes (every rank has the same keys)
            keys = sorted(window)
            avg = self.dist.sum(torch.tensor([window[k] for k in keys], dtype=torch.float64)) / self.dist.world
            window = dict(zip(keys, avg.cpu().tolist()))
        if n:
            rec.update({k: v / n for k, v in window.items()})
        rec["nonfinite_total"] = nonfinite_total
        rec["time"] = self.elapsed()
        self.session.append_history(rec)
        w = self.writer
        if w is not None and n:
            for k, v in rec.items():
                if k in ("step", "phase", "time"):
                    continue
                if k.startswith("lr_"):
                    w.add_scalar(f"lr/{k[3:]}", v, step)
                elif k.startswith("d_"):
                    w.add_scalar(f"train_d/{k[2:]}", v, step)
                else:
                    w.add_scalar(f"train/{k}", v, step)
        if self.bar is not None and n and hasattr(self.bar, "set_postfix"):
            self.bar.set_postfix(loss=rec.get("total", float("nan")), lr=rec.get("lr_g", 0.0), refresh=False)
        if self.lines:
            first, end, start = self._span
            self.say(progress_line(self.cfg.run.name, step, end, step - first, time.monotonic() - start,
                                   rec.get("total") if n else None))
        return rec

    def write_val(self, step: int, result: Mapping[str, float], best: Mapping[str, Any], grid: list | None) -> None:
        """A validation's record, its line under the progress bar, its TensorBoard scalars and picture
        (``grid``: (image, trimap, gt, pred)); ``best``: the trainer's best record after it."""
        self.session.append_history({"step": step, "phase": "val", **result, "best": best["value"],
                                     "time": self.elapsed()})
        if self.bar is not None or self.lines:
            metric = best["metric"]
            self.say(f"train {self.cfg.run.name}: step {step}: val {metric}={result[metric]:.4g} "
                     f"(best {best['value']:.4g} at step {best['step']})")
        w = self.writer
        if w is not None:
            for k, v in result.items():
                w.add_scalar(f"val/{k}", v, step)
            if grid:
                from ..viz import make_grid

                img, tri, gt, pred = (list(x) for x in zip(*grid))
                w.add_image("val/image_trimap_gt_pred_error", make_grid(img, tri, gt, pred), step, dataformats="HWC")

    def train_images(self, step: int, batch: Mapping[str, Any], pred: torch.Tensor) -> None:
        """TensorBoard picture of a training batch: image, trimap, ground truth, prediction, error."""
        if self.writer is None:
            return
        from ..viz import make_grid

        grid = make_grid(batch["image"], batch["trimap"], batch["alpha"], pred)
        self.writer.add_image("train/image_trimap_gt_pred_error", grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(name: str, step: int, end: int, done: int, elapsed: float, loss: float | None) -> str:
    """One headless progress line: ``done`` steps of this session took ``elapsed`` seconds, so the steps
    left to ``end`` take about that rate (the ETA); ``loss`` is the record's mean total loss (None: every
    step of the record was skipped as non-finite).

    Example:
        >>> progress_line("demo", 50, 200, 50, 45.0, 0.1234)
        'train demo: step 50/200 (25%), 0:00:45 elapsed, ETA 0:02:15, loss 0.1234'
    """
    eta = _clock(elapsed / done * (end - step)) if done > 0 else "?"
    pct = f" ({100 * step // end}%)" if end else ""
    lost = "skipped (non-finite)" if loss is None else f"{loss:.4g}"
    return f"train {name}: step {step}/{end}{pct}, {_clock(elapsed)} elapsed, ETA {eta}, loss {lost}"


def run_summary(tr: Any, stopped: str, elapsed: float, steps_done: int) -> dict:
    """The run's summary (``train_summary.json``, :func:`mattingkit.train.train`'s return value)."""
    tr.bad_steps.sync()
    home: Path = tr.session.ckpt_home
    return {
        "run_dir": str(tr.run_dir),
        "name": tr.cfg.run.name,
        "step": tr.step,
        "steps": tr.cfg.train.steps,
        "stopped": stopped,
        "resumed_from": tr.resumed_from,
        "best": {k: tr.best[k] for k in ("metric", "mode", "value", "step", "metrics")},
        "final": tr.last_val,
        "nonfinite_total": tr.bad_steps.total,
        "elapsed_s": round(elapsed, 3),
        "steps_per_s": round(steps_done / elapsed, 4) if elapsed > 0 and steps_done else None,
        "world_size": tr.dist.world,
        "checkpoints": {n: str(home / n) for n in (ckpt.LAST, ckpt.BEST) if (home / n).exists()},
        "version": __version__,
    }


__all__ = ["TrainLog", "progress_line", "run_summary"]

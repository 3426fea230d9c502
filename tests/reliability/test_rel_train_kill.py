"""SIGKILL during training: the real CLI (``python -m mattingkit train``) on demo data, killed at 10
random points (seeded) and resumed each time; compared with the same run left alone.

Promises checked at every kill: the next start resumes from the last checkpoint that was complete
at the kill (verified, no fallback), loses at most one checkpoint interval, and leaves no temp files
behind. At the end the continued loss history (metrics.jsonl, every record but its wall-clock
``time``) and the final weights equal the uninterrupted run exactly (CPU, run.deterministic=true).

Budget: the demo recipe (GAN on after 4 steps) with the U²-Net-P generator instead of AlphaGAN's
ResNet (a 16 MB checkpoint instead of 200 MB), 32 px crops, batch 2, 36 steps, a checkpoint every
3 steps; one compute thread per process (the reference run shares the machine with the kill sequence).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from relkit import subprocess_env

from mattingkit import checkpoint as ckpt
from mattingkit.train import read_history

pytestmark = pytest.mark.reliability

STEPS = 36
CKPT_EVERY = 3
KILLS = 10
SEED = 20250101
TIMEOUT = 600  # seconds for one segment to reach its kill point on a busy machine


def _overrides(data: Path) -> list[str]:
    sets = {
        "model.name": "u2netp", "train.steps": STEPS, "train.ckpt_every": CKPT_EVERY, "train.log_every": 1,
        "train.val_every": 1000, "train.image_every": 1000, "train.warmup_steps": 2, "train.g_warmup_steps": 4,
        "train.tensorboard": "false", "run.deterministic": "true", "run.data_root": str(data),
        "data.root": str(data / "demo" / "aim500"), "data.backgrounds": str(data / "demo" / "backgrounds"),
        "data.image_size": 32, "data.crop_sizes": "[32,48]", "data.batch_size": 2, "data.num_workers": 0,
        "data.val_limit": 1, "data.val_max_side": 64,
    }
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


class Run:
    """One ``python -m mattingkit train`` process with its output collected by a thread."""

    def __init__(self, run_dir: Path, data: Path, fresh: bool = False):
        cmd = [sys.executable, "-m", "mattingkit", "train", "--config", "demo", "--name", run_dir.name,
               "--run-dir", str(run_dir), *_overrides(data)] + (["--fresh"] if fresh else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=subprocess_env(), start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)   # the process and any child it may have
        self.proc.wait(timeout=60)
        self._t.join(timeout=10)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._t.join(timeout=10)
        return rc


def _history(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    return read_history(p) if p.exists() else []


def _max_train_step(run_dir: Path) -> int:
    return max((r["step"] for r in _history(run_dir) if r.get("phase") == "train"), default=0)


def _wait_until(pred, run: Run, what: str, timeout: float = TIMEOUT, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if run.proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {run.proc.returncode}) before {what}:\n{run.output[-3000:]}")
        if time.monotonic() > deadline:
            run.kill()
            raise AssertionError(f"timed out waiting for {what}:\n{run.output[-3000:]}")
        time.sleep(poll)


def _ckpt_tmp_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return [p for p in folder.glob(".*.tmp")] if folder.is_dir() else []


def _no_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.mark.slow
def test_sigkill_at_10_random_points_then_resume_equals_the_uninterrupted_run(tmp_path):
    from mattingkit.data.synthetic import make_demo_data

    data = tmp_path / "data"
    make_demo_data(data / "demo", seed=0, n_aim=6, n_backgrounds=3, n_comp_train=1, n_comp_test=1)
    reference = Run(tmp_path / "reference", data, fresh=True)   # runs alongside the kill sequence
    started = [reference]
    try:
        rng = np.random.default_rng(SEED)
        run_dir = tmp_path / "killed"
        resume_from = 0
        log = []
        t_start = time.monotonic()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for k in range(KILLS):
            t_seg = time.monotonic()
            run = Run(run_dir, data, fresh=(k == 0))
            started.append(run)
            if k > 0:   # the resume line names the last complete checkpoint, no fallback
                _wait_until(lambda: any(ln.startswith("resuming from") for ln in run.lines), run,  # noqa: B023
                            "the resume line")
                line = next(ln for ln in run.lines if ln.startswith("resuming from"))
                assert line == f"resuming from step {resume_from}: {run_dir / 'checkpoints' / 'last.pt'}", line
                assert not _ckpt_tmp_files(run_dir), "temp files of the killed write were not cleaned up"
            lo = max(resume_from + 1, CKPT_EVERY + 1)               # first kill: after the first checkpoint
            target = int(min(lo + rng.integers(0, 2 * CKPT_EVERY), STEPS - 8))   # never near the natural end
            mode = "checkpoint_write" if k in (2, 6) else "random_delay"
            if mode == "checkpoint_write":  # the moment the next last.pt's bytes start streaming
                _wait_until(lambda: _max_train_step(run_dir) >= target and any(  # noqa: B023 - called at once
                    p.name.startswith(".last.pt.") for p in _ckpt_tmp_files(run_dir)), run, "a checkpoint write",
                    poll=0.0005)
            else:
                _wait_until(lambda: _max_train_step(run_dir) >= target, run, f"step {target}")  # noqa: B023
                time.sleep(float(rng.uniform(0.0, 0.6)))
            run.kill()
            reached = _max_train_step(run_dir)
            state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")   # verified; raises if broken
            assert "_fallback_from" not in state
            lost = reached - state["step"]
            log.append(dict(kill=k, mode=mode, target=target, reached=reached, last_pt=state["step"], lost=lost,
                            tmp=len(_ckpt_tmp_files(run_dir)), seconds=round(time.monotonic() - t_seg, 1)))
            assert state["step"] % CKPT_EVERY == 0 and state["step"] >= resume_from, log[-1]
            assert 0 <= lost <= CKPT_EVERY, f"lost more than one checkpoint interval: {log[-1]}"
            resume_from = state["step"]

        final = Run(run_dir, data)
        started.append(final)
        assert final.wait(TIMEOUT) == 0, final.output[-3000:]
        assert f"resuming from step {resume_from}:" in final.output
        assert reference.wait(TIMEOUT) == 0, reference.output[-3000:]
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        print("\n".join(str(e) for e in log))
        cpu_s = cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        print(f"wall {time.monotonic() - t_start:.0f} s, CPU of the 12 training processes {cpu_s:.0f} s")
    finally:  # never leave a training process behind when an assertion fails
        for r in started:
            if r.proc.poll() is None:
                r.kill()

    assert any(e["mode"] == "checkpoint_write" and e["tmp"] for e in log), "no kill landed inside a write"
    got, want = _no_time(_history(run_dir)), _no_time(_history(tmp_path / "reference"))
    assert [r["step"] for r in got if r["phase"] == "train"] == list(range(1, STEPS + 1))
    assert got == want, "the resumed loss history differs from the uninterrupted run"
    a = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    for part in ("generator", "discriminator"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][n], b[part][n]) for n in a[part]), part


def test_killed_before_the_first_checkpoint_restarts_with_a_clean_history(tmp_path):
    """What SIGKILL leaves when it strikes before the first last.pt (e.g. a Colab disconnect in the
    first minutes): the loss records of steps 1-2 and no checkpoint, the last record torn in half.
    The restart begins at step 0, so its history must not hold steps 1-2 twice (nor lose a record
    glued to the torn line)."""
    from relkit import tiny_trainer

    run = tmp_path / "run"
    over = {"train.ckpt_every": 100, "train.val_every": 100, "train.steps": 4}
    tiny_trainer(run, **over).fit(until=2)
    for p in (run / "checkpoints").iterdir():       # the killed process never reached a checkpoint
        p.unlink()
    hist = run / "metrics.jsonl"
    hist.write_bytes(hist.read_bytes() + b'{"step": 3, "phase": "tr')   # killed mid-append
    tiny_trainer(run, **over).fit()
    steps = [r["step"] for r in read_history(hist) if r["phase"] == "train"]
    assert steps == [1, 2, 3, 4], steps

"""Ctrl-C in the console (issue 24): one line saying what was kept, exit 130, no traceback, and the same
command continues. Real subprocesses, sent SIGINT to their process group (what a terminal's Ctrl-C does)
once the work has started (watched in the run folder); real training, real papermill kernels."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mattingkit import run

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="SIGINT to a process group")]

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
#: Small budgets on top of the smoke ones (a loaded 2-core machine trains the demo model at ~0.1 step/s).
FAST = {"train.steps": STEPS, "train.log_every": 1, "train.val_at_start": False, "train.val_every": 100,
        "data.batch_size": 2, "data.val_limit": 1, "run.device": "cpu"}
LINE = "interrupted at step {}: last.pt saved; run the same command to continue"


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    tmp = tmp_path_factory.mktemp("interrupt")
    synthetic.make_demo_data(tmp / "data" / "demo", seed=0)
    return {"data": tmp / "data", "runs": tmp / "runs", "tmp": tmp}


def _env(roots) -> dict[str, str]:
    env = dict(os.environ, MATTINGKIT_DATA_ROOT=str(roots["data"]), MATTINGKIT_RUNS_ROOT=str(roots["runs"]),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MATTINGKIT_HEADLESS", None)
    return env


def _mattingkit(args, roots, until=None, timeout=420) -> tuple[int, str, str]:
    """Run ``mattingkit ARGS`` in a session of its own; when ``until()`` becomes true, press Ctrl-C."""
    out, err = roots["tmp"] / "out.txt", roots["tmp"] / "err.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "mattingkit.cli", *args], cwd=REPO, env=_env(roots),
                                stdout=fo, stderr=fe, start_new_session=True)
        t0 = time.monotonic()
        try:
            if until is not None:
                while not until():
                    assert proc.poll() is None, f"finished before the interrupt: {err.read_text()[-2000:]}"
                    assert time.monotonic() - t0 < timeout, "the work never started"
                    time.sleep(0.2)
                os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return rc, out.read_text(), err.read_text()


def _trained(run_dir: Path):
    """True once the training loop has logged step 2 (past the step-0 validation and the first log's imports)."""
    path = run_dir / run.HISTORY_FILE
    return lambda: path.exists() and any(r.get("step", 0) >= 2 for r in run.read_history(path))


def _smoke_sets(**extra) -> list[str]:
    sets = {**run.SMOKE_OVERRIDES, **FAST, **extra}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v) if isinstance(v, bool) else v}")]


def _one_line(rc, out, err, command) -> str:
    text = out + err
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text and "ZMQError" not in text, text[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"mattingkit {command}: interrupted"), err[-2000:]
    return line.split(": ", 1)[1]


def _last_step(run_dir: Path) -> int:
    return json.loads((run_dir / "checkpoints" / "last.pt.json").read_text())["step"]


@pytest.fixture(scope="module")
def interrupted_train(roots):
    """`mattingkit train` interrupted once training logged its first record, then run again."""
    rd = roots["runs"] / "tr"
    args = ["train", "--config", "demo", "--name", "tr", *_smoke_sets()]
    first = _mattingkit(args, roots, until=_trained(rd))
    step = _last_step(rd)
    second = _mattingkit(args, roots)
    return rd, first, step, second


def test_train_ctrl_c_is_one_line_and_the_same_command_continues(interrupted_train):
    rd, (rc, out, err), step, (rc2, out2, err2) = interrupted_train
    assert _one_line(rc, out, err, "train") == LINE.format(step)
    assert 0 < step < STEPS
    assert rc2 == 0, err2[-3000:]
    summary = json.loads((rd / "train_summary.json").read_text())
    assert summary["step"] == STEPS and summary["resumed_from"]


def test_predict_ctrl_c_is_one_line_and_the_same_command_continues(interrupted_train, roots):
    rd = interrupted_train[0]
    images = roots["data"] / "demo" / "competition" / "test_dataset" / "orig_1024"
    out_dir = roots["tmp"] / "pred"
    args = ["predict", str(rd / "checkpoints" / "last.pt"), str(images), str(out_dir), "--two-pass"]
    rc, out, err = _mattingkit(args, roots, until=lambda: any(out_dir.glob("*.png")))
    assert "interrupted" in _one_line(rc, out, err, "predict")
    done = {p.name for p in out_dir.glob("*.png")}
    assert 0 < len(done) < len(list(images.iterdir()))
    rc, out, err = _mattingkit(args, roots)
    assert rc == 0, err[-3000:]
    assert {p.name for p in out_dir.glob("*.png")} == {p.with_suffix(".png").name for p in images.iterdir()}


def test_run_ctrl_c_reaches_the_kernel_one_line_and_the_same_command_continues(roots):
    rd = roots["runs"] / "nb"
    args = ["run", "--config", "demo", "--name", "nb", "--smoke", "--notebooks", "01", "03", *_smoke_sets()]
    rc, out, err = _mattingkit(args, roots, until=_trained(rd))
    line = _one_line(rc, out, err, "run")
    step = _last_step(rd)
    assert line == LINE.format(step) and 0 < step < STEPS
    rc, out, err = _mattingkit(args, roots)
    assert rc == 0, (out + err)[-3000:]
    summary = json.loads((rd / "train_summary.json").read_text())
    assert summary["step"] == STEPS and summary["resumed_from"]


def test_sweep_ctrl_c_is_one_line_and_a_rerun_continues(roots):
    grid = roots["tmp"] / "grid.yaml"
    overrides = ", ".join(f"{k}={json.dumps(v)}" for k, v in FAST.items())
    grid.write_text(f"name: sw\nconfig: demo\nsmoke: true\nnotebooks: ['03']\n"
                    f"overrides: [{overrides}]\ngrid:\n  train.lr_g: [0.001]\n")
    rd = roots["runs"] / "sw" / "00_lr_g=0.001"
    rc, out, err = _mattingkit(["sweep", str(grid)], roots, until=_trained(rd))
    step = _last_step(rd)
    assert _one_line(rc, out, err, "sweep") == \
        f"{LINE.format(step)} (sweep point 00_lr_g=0.001; finished points are skipped)"
    rc, out, err = _mattingkit(["sweep", str(grid)], roots)
    assert rc == 0, (out + err)[-3000:]
    assert json.loads((rd / "train_summary.json").read_text())["step"] == STEPS

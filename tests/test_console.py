"""Training is not silent on the console: ``mattingkit train`` and ``mattingkit run`` (papermill kernels)
stream a line per ``train.log_every`` (step/total, elapsed, ETA, loss) and one per validation, and say
"resuming from step N" when a run continues. The real demo recipe with tiny budgets."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY = ["data.batch_size=2", "train.log_every=2", "train.val_every=4", "train.ckpt_every=4", "train.val_at_start=false",
        "train.tensorboard=false", "data.val_limit=2", "data.num_workers=0"]
LINE = re.compile(r"train (\S+): step (\d+)/(\d+) \(\d+%\), \d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d, loss [0-9.e-]+$")


def _train(run_dir: Path, data_root: Path, steps: int) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    sets = [a for s in [f"run.data_root={data_root}", f"train.steps={steps}", *TINY] for a in ("--set", s)]
    res = subprocess.run([sys.executable, "-m", "mattingkit", "train", "--config", "demo", "--run-dir", str(run_dir),
                          *sets], capture_output=True, text=True, env=env, timeout=600)  # (a pipe: headless)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_train_streams_progress_and_says_where_it_resumes(tmp_path, demo_data_root):
    out = _train(tmp_path / "demo", demo_data_root, steps=4)
    lines = [m.groups() for m in map(LINE.match, out.splitlines()) if m]
    assert lines == [("demo", "2", "4"), ("demo", "4", "4")], out
    assert re.search(r"^train demo: step 4: val sad=[0-9.]+ \(best [0-9.]+ at step 4\)$", out, re.M), out
    assert "resuming" not in out
    out = _train(tmp_path / "demo", demo_data_root, steps=6)  # more steps on the same run: it continues
    assert re.search(r"^resuming from step 4: .*last\.pt", out, re.M), out
    assert [m.groups()[1:] for m in map(LINE.match, out.splitlines()) if m] == [("6", "6")], out


def test_mattingkit_run_relays_the_training_lines(tmp_path, demo_data_root, capsys):
    from mattingkit.runner import run_pipeline

    res = run_pipeline("demo", [f"run.data_root={demo_data_root}", "train.steps=4", *TINY], name="relay",
                       runs_root=tmp_path / "runs", notebooks=["03"])
    assert res.ok, res.summary()
    out = capsys.readouterr().out
    relayed = [ln for ln in out.splitlines() if ln.startswith("[relay] ")]
    assert any(LINE.match(ln[len("[relay] "):]) and "step 4/4" in ln for ln in relayed), out
    assert any(re.match(r"\[relay\] train relay: step 4: val sad=", ln) for ln in relayed), out

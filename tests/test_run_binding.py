"""A run folder is bound to the config it trained with (issue 24, item 1).

The reproduction: a finished demo run, then `mattingkit run ... --set train.lr_g=5e-4 --notebooks 01 03`
used to rewrite config.yaml to the new lr, "resume" the finished checkpoint without training and keep the
old checkpoints, metrics.json sections, predictions and CSV. Now the change is refused with the difference
and the two ways out; keys that are safe on resume are accepted and logged; a section of metrics.json whose
inputs changed is removed until its notebook redoes it. The same rule holds for `mattingkit train` and for
`run.prepare_run` (notebook use). Real demo config, smoke budgets, real papermill kernels, real training.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mattingkit import run
from mattingkit.cli import main
from mattingkit.errors import RunStateError


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    root = tmp_path_factory.mktemp("binding_data")
    synthetic.make_demo_data(root / "demo", seed=0)
    return root


def _saved(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _sha(path: Path) -> str:
    return json.loads(Path(f"{path}.json").read_text())["sha256"]


@pytest.mark.slow
def test_stale_run_reproduction_is_refused_and_the_ways_out_work(tmp_path, demo_root, capsys):
    runs = tmp_path / "runs"
    base = ["run", "--config", "demo", "--name", "demo", "--smoke", "--runs-root", str(runs),
            "--set", f"run.data_root={demo_root}", "--set", "run.device=cpu"]
    assert main(base + ["--notebooks", "01", "03", "04"]) == 0
    rd = runs / "demo"
    metrics = run.read_metrics(rd)
    assert {"01_data_download", "03_train_gan", "04_inference"} <= set(metrics)
    last, best = rd / "checkpoints" / "last.pt", rd / "checkpoints" / "best.pt"
    before = (_sha(last), _sha(best), (rd / "config.yaml").read_text())
    assert _saved(rd)["train"]["lr_g"] == 1e-3
    capsys.readouterr()

    # the reproduction: a changed learning rate on the trained folder
    assert main(base + ["--set", "train.lr_g=5e-4", "--notebooks", "01", "03"]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr_g: 0.001 -> 0.0005" in err
    assert "--fresh" in err and "--name" in err
    assert (_sha(last), _sha(best), (rd / "config.yaml").read_text()) == before    # nothing claimed, nothing lost
    assert run.read_metrics(rd) == metrics

    # notebook use (run.prepare_run) and `mattingkit train`: the same rule
    with pytest.raises(RunStateError, match=r"train\.lr_g: 0\.001 -> 0\.0005"):
        run.prepare_run("demo", [f"run.data_root={demo_root}", "run.device=cpu", "train.lr_g=5e-4"], "demo", runs,
                        smoke=True)
    train = ["train", "--config", str(rd / "config.yaml"), "--run-dir", str(rd)]
    assert main(train + ["--set", "train.lr_g=5e-4"]) == 6
    assert "train.lr_g: 0.001 -> 0.0005" in capsys.readouterr().err
    assert (rd / "config.yaml").read_text() == before[2]

    # a key safe on resume: accepted, logged, training continues, and the 04 numbers of the old
    # checkpoint leave metrics.json (with their CSV) until notebook 04 runs again
    steps = _saved(rd)["train"]["steps"]
    assert main(train + ["--set", f"train.steps={steps + 2}"]) == 0
    assert _saved(rd)["train"]["steps"] == steps + 2 and _saved(rd)["train"]["lr_g"] == 1e-3
    history = [json.loads(line) for line in (rd / run.CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert history[-1]["event"] == "changed" and history[-1]["changes"] == {"train.steps": [steps, steps + 2]}
    summary = json.loads((rd / "train_summary.json").read_text())
    assert summary["step"] == steps + 2 and _sha(last) != before[0]
    now = run.read_metrics(rd)
    assert "04_inference" not in now and "03_train_gan" not in now and "01_data_download" in now
    assert not list(rd.glob("metrics_*.csv"))

    # --fresh: starts over with the new learning rate; nothing of the old run stays
    capsys.readouterr()
    assert main(base + ["--set", "train.lr_g=5e-4", "--set", f"train.steps={steps}", "--fresh",
                        "--notebooks", "01", "03"]) == 0
    assert _saved(rd)["train"]["lr_g"] == 5e-4
    summary = json.loads((rd / "train_summary.json").read_text())
    assert summary["step"] == steps and summary.get("resumed_from") in (None, "")
    assert not (rd / "predictions").exists() and "04_inference" not in run.read_metrics(rd)
    history = [json.loads(line) for line in (rd / run.CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert history[-1]["event"] == "fresh" and history[-1]["changes"]["train.lr_g"] == [1e-3, 5e-4]
    assert run.read_metrics(rd)["03_train_gan"]["step"] == steps


def test_every_config_key_is_classified_by_the_one_table():
    """Each table entry names a real key or section; unlisted keys change training (refused)."""
    from mattingkit.config import Config

    keys = run.flatten(Config().to_dict())
    sections = {k.split(".")[0] for k in keys}
    for entry, notebook in run.RESUME_SAFE.items():
        assert entry in keys or entry in sections, entry
        assert notebook in (None, "01", "02", "03", "04", "05")
    assert run.resume_rule("infer.tta_flip") == (True, "04")
    assert not run.resume_rule("model.backbone")[0] and not run.resume_rule("train.lr_g")[0]


def test_a_changed_key_before_any_output_is_accepted_and_logged(tmp_path):
    ctx = run.prepare_run("demo", ["train.lr_g=1e-4"], "early", tmp_path)
    again = run.prepare_run("demo", ["train.lr_g=2e-4"], "early", tmp_path)   # nothing made yet: accepted
    assert _saved(again.run_dir)["train"]["lr_g"] == 2e-4
    history = [json.loads(line) for line in (ctx.run_dir / run.CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert [h["event"] for h in history] == ["created", "changed"]


def test_the_effective_batch_may_change_on_resume_not_the_batch_alone(tmp_path):
    """An out-of-memory retry follows the message's advice (half the batch, twice the accumulation): the
    effective batch stays, so a trained folder accepts it and logs it; the batch alone is refused."""
    ctx = run.prepare_run("demo", ["data.batch_size=4"], "fit", tmp_path)
    (ctx.run_dir / run.HISTORY_FILE).write_text("{}\n")                      # the run has trained
    with pytest.raises(RunStateError, match=r"data.batch_size: 4 -> 2"):
        run.prepare_run("demo", ["data.batch_size=2"], "fit", tmp_path)
    again = run.prepare_run("demo", ["data.batch_size=2", "train.accum_steps=2", "train.amp=off"], "fit", tmp_path)
    assert _saved(again.run_dir)["data"]["batch_size"] == 2 and _saved(again.run_dir)["train"]["accum_steps"] == 2
    history = [json.loads(line) for line in (ctx.run_dir / run.CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert history[-1]["event"] == "changed" and history[-1]["changes"]["data.batch_size"] == [4, 2]

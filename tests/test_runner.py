"""The headless runner: run folders, metrics.json, papermill failure reporting, sweeps.

Failure tests run the real notebooks (copies in a temp folder) through real papermill kernels.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from mattingkit import runner
from mattingkit.run import SMOKE_OVERRIDES, prepare_run, read_metrics, update_metrics
from mattingkit.runner import SweepResult, point_name, run_pipeline, run_sweep, strip_ansi, sweep_points

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


# ------------------------------------------------------------------------------------------------
# pure parts
# ------------------------------------------------------------------------------------------------
def test_sweep_points_cartesian_and_names():
    pts = sweep_points({"train.lr_g": [1e-4, 2e-4], "model.norm": ["bn", "gn"]})
    assert len(pts) == 4 and pts[1] == {"train.lr_g": 1e-4, "model.norm": "gn"}
    names = [point_name(i, p) for i, p in enumerate(pts)]
    assert len(set(names)) == 4 and names[0] == "00_lr_g=0.0001_norm=bn"
    assert all("/" not in n and ":" not in n for n in names)
    with pytest.raises(ValueError, match="non-empty list"):
        sweep_points({"train.lr_g": []})


def test_sweep_runs_keep_their_csv_in_the_run_folder():
    assert runner.sweep_parameters({"grid": {}}) == {"copy_submission": False}
    assert runner.sweep_parameters({"parameters": {"copy_submission": True}}) == {"copy_submission": True}
    assert runner.sweep_parameters({"notebooks": ["01", "04"], "parameters": {"n_preview": 2}}) == {"n_preview": 2}
    spec = yaml.safe_load((NOTEBOOKS / "sweeps" / "demo_grid.yaml").read_text())
    assert len(sweep_points(spec["grid"])) == 4 and spec["smoke"] is True
    assert runner.sweep_parameters(spec)["copy_submission"] is False


def test_select_notebooks_by_prefix_or_number():
    assert runner.select_notebooks(None) == runner.NOTEBOOKS
    assert runner.select_notebooks(["03", 1]) == ["01_data_download", "03_train_gan"]   # YAML reads 01 as 1
    with pytest.raises(ValueError, match="unknown notebook"):
        runner.select_notebooks(["09"])


def test_prepare_run_smoke_then_user_overrides(tmp_path):
    ctx = prepare_run("demo", ["train.steps=7"], run_name="a b:c", runs_root=tmp_path, smoke=True)
    assert ctx.run_dir == tmp_path / "a_b_c" and ctx.cfg.run.name == "a_b_c"
    assert ctx.cfg.train.steps == 7                                   # the user's override wins
    assert ctx.cfg.train.val_every == SMOKE_OVERRIDES["train.val_every"] and ctx.cfg.run.smoke
    saved = yaml.safe_load((ctx.run_dir / "config.yaml").read_text())
    assert saved["train"]["steps"] == 7 and saved["run"]["name"] == "a_b_c"
    # what every notebook of `mattingkit run` does: load the saved file (smoke budgets are not re-applied
    # over the user's overrides) and leave it as it is
    mtime = (ctx.run_dir / "config.yaml").stat().st_mtime_ns
    again = prepare_run(ctx.path("config.yaml"), [], run_name="a_b_c", runs_root=tmp_path, smoke=True)
    assert again.cfg == ctx.cfg and (ctx.run_dir / "config.yaml").stat().st_mtime_ns == mtime


def test_runs_root_from_the_config(tmp_path):
    ctx = prepare_run("demo", [f"run.runs_root={tmp_path / 'cfg_root'}"], run_name="r")
    assert ctx.run_dir == tmp_path / "cfg_root" / "r"
    assert prepare_run("demo", [f"run.runs_root={tmp_path}"], "r", runs_root=tmp_path / "x").run_dir.parent == \
        tmp_path / "x"                                                # an explicit argument wins


def test_update_metrics_merges_sections(tmp_path):
    update_metrics(tmp_path, "01_data_download", {"items": np.int64(5), "root": tmp_path})
    update_metrics(tmp_path, "04_inference", {"sad": np.float32(1.5)})
    update_metrics(tmp_path, "01_data_download", {"problems": 0})
    m = read_metrics(tmp_path)
    assert m == {"01_data_download": {"items": 5, "root": str(tmp_path), "problems": 0}, "04_inference": {"sad": 1.5}}
    assert runner.flatten(m)["04_inference.sad"] == 1.5


def test_strip_ansi_and_failure_summary(tmp_path):
    assert strip_ansi("\x1b[0;31mValueError\x1b[0m: x") == "ValueError: x"
    res = runner.PipelineResult(ok=False, run_dir=tmp_path / "r", failed_notebook="02_trimap_synthesis.ipynb",
                                failed_cell=5, error="ValueError: boom", failed_source="a = f()\nb = 2",
                                traceback="Cell In[5], line 1\n----> 1 a = f()\nValueError: boom")
    text = res.summary()
    assert "FAILED in 02_trimap_synthesis.ipynb, cell In [5]: ValueError: boom" in text
    assert "cell source: a = f() ..." in text and "----> 1 a = f()" in text
    assert str(tmp_path / "r" / "notebooks" / "02_trimap_synthesis.ipynb") in text


def test_sweep_tables_markdown_and_plot(tmp_path):
    rows = [{"run": "00_a", "train.lr_g": 1e-4, "status": "ok", "04_inference.sad": 3.0},
            {"run": "01_b", "train.lr_g": 2e-4, "status": "failed: 03 In [7]: ValueError: a|b\nc",
             "04_inference.sad": float("nan")},
            {"run": "02_c", "train.lr_g": 5e-4, "status": "skipped (done)", "04_inference.sad": 1.0}]
    res = SweepResult(ok=False, sweep_dir=tmp_path, rows=rows)
    runner._write_sweep_tables(res, "04_inference.sad", "min", ["train.lr_g"])
    df = pd.read_csv(res.results_csv)
    assert df["run"].tolist() == ["00_a", "01_b", "02_c"]
    md = res.results_md.read_text().splitlines()
    assert "`04_inference.sad` (lower is better" in md[0] and "4 significant digits" in md[0]
    assert md[2] == "| run | train.lr_g | status | 04_inference.sad |"
    assert [ln.split("|")[1].strip() for ln in md[4:]] == ["02_c", "00_a", "01_b"]   # best first, NaN last
    assert "a\\|b c" in md[-1] and len(md) == 7                                        # one line per row
    assert res.plot is not None and res.plot.stat().st_size > 1000


def test_sweep_tables_round_to_4_significant_digits_and_say_higher_is_better(tmp_path):
    rows = [{"run": "00_a", "model.norm": "bn", "status": "ok", "03_train_gan.best_value": 0.123456789},
            {"run": "01_b", "model.norm": "gn", "status": "ok", "03_train_gan.best_value": 12345.678}]
    res = SweepResult(ok=True, sweep_dir=tmp_path, rows=rows)
    runner._write_sweep_tables(res, "03_train_gan.best_value", "max", ["model.norm"])
    md = res.results_md.read_text()
    assert "higher is better" in md and "| 1.235e+04 |" in md and "| 0.1235 |" in md
    assert "0.123456789" not in res.results_csv.read_text() and "0.1235" in res.results_csv.read_text()
    assert md.index("01_b") < md.index("00_a")   # best (highest) first


def test_sweep_grid_is_checked_before_anything_runs_or_is_written(tmp_path, monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: bad\nconfig: demo\nmetric: 04_inference.sda\n"
                    "grid:\n  train.lr: [1.0e-4]\n  train.amp: [off, bf17]\n")
    monkeypatch.setattr(runner, "run_pipeline", lambda *a, **k: pytest.fail("a point ran"))
    with pytest.raises(ValueError) as ei:
        run_sweep(grid, runs_root=tmp_path / "runs")
    text = str(ei.value)
    assert "3 problems" in text and "train.lr" in text and "bf17" in text and "04_inference.sda" in text
    assert "'off'" not in text                        # load_yaml: off is the string 'off', a valid choice
    assert not (tmp_path / "runs").exists()
    grid.write_text("name: bad\ngrid: {train.steps: [1]}\nmode: best\nmetrc: x\n")
    with pytest.raises(ValueError, match="metrc.*mode 'best'"):
        run_sweep(grid, runs_root=tmp_path / "runs")
    grid.write_text("name: bad\nnotebooks: ['01']\nparameters: {n_previe: 1, n_show: 2}\ngrid: {train.steps: [1]}\n")
    with pytest.raises(ValueError, match=r"n_previe \(did you mean n_preview\?\), n_show are declared by none"):
        run_sweep(grid, runs_root=tmp_path / "runs")    # every unknown name at once, no point run
    assert not (tmp_path / "runs").exists()
    # a common parameter through `parameters` would override the run's own value behind its config
    grid.write_text("name: bad\nnotebooks: ['01']\nparameters: {config: ecom, smoke: true, n_previe: 1}\n"
                    "grid: {train.steps: [1]}\n")
    with pytest.raises(ValueError) as ei:
        run_sweep(grid, runs_root=tmp_path / "runs")
    assert "parameter config is set by --config" in str(ei.value) and "parameter smoke is set by --smoke" in \
        str(ei.value) and "n_previe (did you mean n_preview?)" in str(ei.value)
    assert not (tmp_path / "runs").exists()


def test_refused_run_writes_nothing(tmp_path, capsys):
    """A misspelled --param, a bad override or a missing background folder: refused before the run
    folder (or its config.yaml) exists."""
    from mattingkit.cli import main

    runs = tmp_path / "runs"
    base = ["run", "--config", "demo", "--runs-root", str(runs), "--set", f"run.data_root={tmp_path / 'data'}"]
    assert main(base + ["--param", "n_previeww=3", "--name", "x"]) == 2
    assert "n_previeww" in capsys.readouterr().err
    assert main(base + ["--set", "run.device=gpu", "--name", "x"]) == 2
    assert "run.device" in capsys.readouterr().err
    (tmp_path / "data" / "mine").mkdir(parents=True)
    assert main(["run", "--config", "demo", "--runs-root", str(runs), "--set", "data.root=mine",
                 "--set", f"run.data_root={tmp_path / 'data'}", "--set", "data.backgrounds=no_bgs",
                 "--name", "x"]) == 4   # an input-data error
    assert "data.backgrounds" in capsys.readouterr().err
    assert not runs.exists()


def test_run_takes_a_live_lock_over_only_with_force(tmp_path, monkeypatch):
    import json as _json
    import socket

    from mattingkit.errors import RunStateError
    from mattingkit.runlock import LOCK_NAME

    run_dir = tmp_path / "runs" / "locked"
    run_dir.mkdir(parents=True)
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "pid_start": None, "started": 1.0,
              "heartbeat": 9e12, "token": "t"}
    (run_dir / LOCK_NAME).write_text(_json.dumps(holder))
    monkeypatch.setattr(runner, "check_run_inputs", lambda cfg, quiet=False: None)
    monkeypatch.setattr(runner, "_save_doctor", lambda *a: None)
    with pytest.raises(RunStateError):
        run_pipeline("demo", name="locked", runs_root=tmp_path / "runs", notebooks=["01"], quiet=True)
    assert not (run_dir / "config.yaml").exists()
    monkeypatch.setattr(runner, "notebook_parameters", lambda path: ["config"])
    import papermill as pm

    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: None)
    res = run_pipeline("demo", name="locked", runs_root=tmp_path / "runs", notebooks=["01"], quiet=True, force=True)
    assert res.ok and not (run_dir / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------------
# failure reporting through real papermill kernels
# ------------------------------------------------------------------------------------------------
def _copy_notebooks(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in NOTEBOOKS.glob("0*.ipynb"):
        shutil.copy(p, dst / p.name)
    return dst


def test_failing_notebook_stops_the_run_and_names_notebook_cell_and_error(tmp_path, capsys):
    nb_dir = _copy_notebooks(tmp_path / "nbs")
    path = nb_dir / "01_data_download.ipynb"
    nb = nbformat.read(path, as_version=4)
    ctx_index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "run.prepare_run" in c.source)
    nb.cells.insert(ctx_index + 1, nbformat.v4.new_code_cell(
        "def check(n):\n    raise RuntimeError(f'deliberate failure {n}')\ncheck(42)"))
    nbformat.write(nb, path)

    res = run_pipeline("demo", [f"run.data_root={tmp_path / 'data'}"], name="fails", runs_root=tmp_path / "runs",
                       notebooks=["01", "02"], notebooks_dir=nb_dir)
    assert not res.ok and res.executed == []
    assert res.failed_notebook == "01_data_download.ipynb"
    assert res.error == "RuntimeError: deliberate failure 42"
    # "In [N]" is the failing cell's execution count in the executed notebook
    out_nb = nbformat.read(res.output_notebook, as_version=4)
    ours = next(c for c in out_nb.cells if "check(42)" in c.source)
    assert res.failed_cell == ours.execution_count >= 4 and "check(42)" in res.failed_source
    assert "deliberate failure 42" in res.traceback and "\x1b[" not in res.traceback
    err = capsys.readouterr().err
    assert f"FAILED in 01_data_download.ipynb, cell In [{ours.execution_count}]: RuntimeError: deliberate failure 42" in err
    assert "check(42)" in err
    errors = [o for c in out_nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0]["evalue"] == "deliberate failure 42"
    assert not (res.run_dir / "notebooks" / "02_trimap_synthesis.ipynb").exists()   # stopped at the failure
    assert not (res.run_dir / runner.DONE_MARKER).exists()


def test_missing_dataset_folder_is_refused_before_the_run_starts(tmp_path, capsys):
    from mattingkit.cli import main

    missing = tmp_path / "no_such_dataset"
    code = main(["run", "--config", "demo", "--set", f"data.root={missing}", "--name", "bad", "--runs-root",
                 str(tmp_path / "runs"), "--set", f"run.data_root={tmp_path / 'data'}", "--notebooks", "01"])
    assert code == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "dataset folder not found" in err
    assert not (tmp_path / "runs").exists()


def test_missing_data_root_reads_the_same_from_the_cli_and_from_python(tmp_path, capsys):
    """One rule (run.data_root_problem) behind ``mattingkit config`` and a run started from Python."""
    from mattingkit.cli import main
    from mattingkit.errors import InputNotFoundError

    overrides = ["data.layout=folder", f"data.root={tmp_path / 'no_such_dataset'}",
                 f"run.data_root={tmp_path / 'data'}"]
    assert main(["config", *[w for o in overrides for w in ("--set", o)]]) == 4
    cli_line = capsys.readouterr().err.strip().removeprefix("mattingkit config: ")
    with pytest.raises(InputNotFoundError) as e:
        run_pipeline("demo", overrides, name="bad", runs_root=tmp_path / "runs", notebooks=["01"])
    assert cli_line == str(e.value) and "dataset folder not found" in cli_line
    assert not (tmp_path / "runs").exists()


def test_bad_override_fails_in_the_notebook_with_a_clear_message(tmp_path, capsys):
    """An error only a notebook can find (here: a dataset folder without a single image pair) names the
    notebook, the cell and the error."""
    from mattingkit.cli import main

    empty = tmp_path / "empty_dataset"
    empty.mkdir()
    code = main(["run", "--config", "demo", "--set", f"data.root={empty}", "--name", "bad", "--runs-root",
                 str(tmp_path / "runs"), "--set", f"run.data_root={tmp_path / 'data'}", "--notebooks", "01"])
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED in 01_data_download.ipynb, cell In [" in err and str(empty) in err


def test_unknown_notebook_parameter_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="declared by none"):
        run_pipeline("demo", name="x", runs_root=tmp_path, notebooks=["01"], parameters={"n_show": 2})


def test_parse_params_yaml_values_and_clear_errors():
    from mattingkit.cli import parse_params

    assert parse_params(["n_preview=2", "download=false", "out=/tmp/a=b", "empty="]) == {
        "n_preview": 2, "download": False, "out": "/tmp/a=b", "empty": ""}
    for bad in ["n_preview", "=3", "two words=1", "x=[1, 2"]:
        with pytest.raises(ValueError, match="--param"):
            parse_params([bad])


def test_cli_run_passes_param_to_the_notebook(tmp_path, demo_data_root, capsys):
    """``mattingkit run --param`` reaches the notebook's parameters through real papermill; an unknown
    name is refused before anything runs."""
    from mattingkit.cli import main

    common = ["run", "--config", "demo", "--smoke", "--set", f"run.data_root={demo_data_root}",
              "--runs-root", str(tmp_path / "runs"), "--notebooks", "01"]
    rc = main(common + ["--name", "p", "--param", "n_preview=1", "--param", "download=false"])
    assert rc == 0
    out_nb = nbformat.read(tmp_path / "runs" / "p" / runner.NOTEBOOK_DIR_NAME / "01_data_download.ipynb", 4)
    injected = [c.source for c in out_nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n_preview = 1" in injected[0] and "download = False" in injected[0]
    doctor = json.loads((tmp_path / "runs" / "p" / runner.DOCTOR_FILE).read_text())
    assert doctor["device"]["type"] == "cpu" and doctor["config"]["name"] == "p"
    capsys.readouterr()
    assert main(common + ["--name", "q", "--param", "n_show=1"]) == 2
    assert "n_show" in capsys.readouterr().err
    assert main(common + ["--name", "q", "--param", "n_show"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "q" / runner.NOTEBOOK_DIR_NAME / "01_data_download.ipynb").exists()


# ------------------------------------------------------------------------------------------------
# sweep: 2x2 smoke grid, one failing point, re-run skips finished points
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_sweep_continues_past_a_failure_and_skips_finished_runs(tmp_path, demo_data_root):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "g",
        "config": "demo",
        "smoke": True,
        # band trimaps draw a width in [band_width_min, band_width]: min 8 > max 4 fails in training
        "overrides": [f"run.data_root={demo_data_root}", "trimap.method=band", "train.steps=6",
                      "train.val_every=3", "train.ckpt_every=3", "train.log_every=3", "train.image_every=3"],
        "notebooks": ["01", "02", "03", "04"],          # 05 is covered by the smoke pipeline test
        "metric": "04_inference.sad",
        "mode": "min",
        "grid": {"trimap.band_width": [4, 10], "trimap.band_width_min": [2, 8]},
    }))
    res = run_sweep(grid, runs_root=tmp_path / "runs")
    status = {r["run"]: r["status"] for r in res.rows}
    assert list(status) == ["00_band_width=4_band_width_min=2", "01_band_width=4_band_width_min=8",
                            "02_band_width=10_band_width_min=2", "03_band_width=10_band_width_min=8"]
    assert not res.ok
    failed = [k for k, v in status.items() if v != "ok"]
    assert failed == ["01_band_width=4_band_width_min=8"], status
    assert "03_train_gan" in status[failed[0]]
    for name in status:
        if name not in failed:
            m = read_metrics(res.sweep_dir / name)
            assert set(runner.NOTEBOOKS[:4]) <= set(m), name
            assert m["03_train_gan"]["step"] == 6
            assert (res.sweep_dir / name / runner.DONE_MARKER).exists()
    df = pd.read_csv(res.results_csv)
    assert len(df) == 4 and df["04_inference.sad"].notna().sum() == 3
    md = res.results_md.read_text()
    assert md.count("\n") == 8 and "failed" in md and "lower is better" in md
    assert res.plot.exists()

    # re-run: the three finished points are skipped, the failed one is tried again (and fails again)
    mtimes = {n: (res.sweep_dir / n / "metrics.json").stat().st_mtime for n in status if n not in failed}
    again = run_sweep(grid, runs_root=tmp_path / "runs")
    status2 = {r["run"]: r["status"] for r in again.rows}
    assert [status2[n] for n in mtimes] == ["skipped (done)"] * 3
    assert status2[failed[0]].startswith("failed")
    assert {n: (res.sweep_dir / n / "metrics.json").stat().st_mtime for n in mtimes} == mtimes
    df2 = pd.read_csv(again.results_csv)
    assert df2["04_inference.sad"].notna().sum() == 3     # metrics of skipped runs are still tabulated


# ------------------------------------------------------------------------------------------------
# submissions: one file per run name; a smoke run never replaces a full run's file
# ------------------------------------------------------------------------------------------------
def test_submission_destination_follows_the_run_name(tmp_path, monkeypatch):
    from mattingkit import env
    from mattingkit.config import load_config
    from mattingkit.run import prepare_run, submission_destination

    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("KAGGLE_URL_BASE", raising=False)
    monkeypatch.setattr(env, "detect_platform", lambda *a, **k: "local")
    monkeypatch.setattr(env, "repo_root", lambda *a, **k: tmp_path)
    runs = tmp_path / "runs"
    full = prepare_run("demo", run_name="demo", runs_root=runs)
    smoke = prepare_run("demo", run_name="ux_smoke", runs_root=runs, smoke=True)
    smoke_demo = prepare_run("demo", run_name="demo", runs_root=tmp_path / "other", smoke=True)
    dest = {c.name + str(c.cfg.run.smoke): submission_destination(c.cfg, c.run_dir) for c in (full, smoke, smoke_demo)}
    assert dest["demoFalse"] == tmp_path / "submissions" / "demo.csv"          # a run named demo
    assert dest["ux_smokeTrue"] == tmp_path / "submissions" / "ux_smoke.smoke.csv"
    assert dest["demoTrue"] == tmp_path / "submissions" / "demo.smoke.csv"     # never demo.csv
    assert len(set(dest.values())) == 3
    from mattingkit.config import available_configs

    for name in available_configs():                                           # shipped configs set no name
        assert load_config(name).submission.name == "submission", name
    mine = load_config("demo", ["submission.name=final_v2"])
    assert submission_destination(mine, runs / "whatever").name == "final_v2.csv"   # an explicit name wins
    monkeypatch.setattr(env, "detect_platform", lambda *a, **k: "kaggle")
    assert submission_destination(full.cfg, full.run_dir) == env.KAGGLE_WORKING / "submission.csv"
    assert submission_destination(smoke.cfg, smoke.run_dir) == env.KAGGLE_WORKING / "submission.smoke.csv"

"""The five notebooks: stored without outputs, thin, parametrised; and a real smoke run of all five
through papermill kernels on the demo data (in temp folders), checking what each one leaves behind."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from mattingkit import runner

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = runner.NOTEBOOKS
COMMON = list(runner.COMMON_PARAMETERS)
MAX_STREAM_LINES = 60           # per code cell of an executed notebook
FAKE_SECRETS = {"KAGGLE_KEY": "mk-fake-key-6d1f0c2a9e7b44", "KAGGLE_API_TOKEN": "KGAT_fake_token_93ab71c0de55",
                "KAGGLE_USERNAME": "mk-fake-user-0c1d"}


def _nb(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


# ------------------------------------------------------------------------------------------------
# static checks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs(name):
    nb = _nb(name)
    nbformat.validate(nb)
    for c in _code(nb):
        assert c.outputs == [] and c.execution_count is None, f"{name}: a code cell has outputs: {c.source[:60]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_structure_setup_parameters_context(name):
    import papermill as pm

    code = _code(_nb(name))
    setup, params, ctx = code[0], code[1], code[2]
    assert "env.setup_notebook(" in setup.source           # the platform work is the package's
    assert setup.source.index("import mattingkit") < setup.source.index("from mattingkit")  # install first
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [params]
    declared = list(pm.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb")))
    assert declared[:len(COMMON)] == COMMON                # papermill can parse every knob
    assert "run.prepare_run(config, overrides, run_name, runs_root, smoke)" in ctx.source
    for key in ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "token", "password"):
        assert key.lower() not in params.source.lower()    # never a credential as a parameter


@pytest.mark.parametrize("name", NAMES)
def test_cells_are_thin_and_explained(name):
    nb = _nb(name)
    code = _code(nb)
    for c in code[2:]:                                     # after the set-up and parameters cells
        assert len(c.source.strip().splitlines()) <= 6, f"{name}: a fat cell:\n{c.source}"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {name[:2]}")


def test_setup_cells_are_identical():
    cells = {name: (_code(_nb(name))[0].source, nb_md) for name in NAMES
             for nb_md in [next(c.source for c in _nb(name).cells if c.source.startswith("## 0. Set-up"))]}
    assert len(set(cells.values())) == 1, "the five set-up cells (and their explanations) differ"


def _run_setup_cell(environ: dict, fake_colab: bool, kit_missing: bool = False) -> subprocess.CompletedProcess:
    """Execute notebook 01's set-up cell in a fresh interpreter; with ``fake_colab`` a stand-in
    ``google.colab`` module records drive mounts and serves one secret (Colab cannot run here)."""
    setup = _code(_nb(NAMES[0]))[0].source
    prelude = textwrap.dedent("""
        import json, os, subprocess, sys, types
        calls = []
        def _pip(*a, **k):  # "installs" the kit: it becomes importable again
            calls.append(("pip", a[0][-1]))
            sys.modules.pop("mattingkit", None)
        subprocess.check_call = _pip
        if MISSING:
            sys.modules["mattingkit"] = None   # import mattingkit -> ImportError
        if FAKE:
            colab = types.ModuleType("google.colab")
            colab.drive = types.SimpleNamespace(mount=lambda p: calls.append(("mount", p)))
            class _Secrets:
                @staticmethod
                def get(name):
                    if name == "KAGGLE_KEY":
                        return "  colab-secret-value  "
                    raise KeyError(name)
            colab.userdata = _Secrets
            sys.modules["google"] = types.ModuleType("google")
            sys.modules["google.colab"] = colab
        os.chdir = lambda p: calls.append(("chdir", p))
    """).replace("FAKE", str(fake_colab)).replace("MISSING", str(kit_missing))
    epilogue = "\nprint('CALLS=' + json.dumps(calls)); print('KEY=' + str(os.environ.get('KAGGLE_KEY') == 'colab-secret-value'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLAB", "KAGGLE", "MATTINGKIT_HEADLESS"))}
    env.update(environ)
    return subprocess.run([sys.executable, "-c", prelude + setup + epilogue], env=env, capture_output=True,
                          text=True, timeout=60)


def test_setup_cell_is_a_noop_locally_and_headless():
    local = _run_setup_cell({}, fake_colab=False)
    assert local.returncode == 0, local.stderr
    assert "platform: local" in local.stdout and "CALLS=[]" in local.stdout
    headless_colab = _run_setup_cell({"COLAB_RELEASE_TAG": "x", "MATTINGKIT_HEADLESS": "1"}, fake_colab=True)
    assert headless_colab.returncode == 0, headless_colab.stderr
    assert "platform: colab" in headless_colab.stdout and "CALLS=[]" in headless_colab.stdout
    assert "KEY=False" in headless_colab.stdout


@pytest.mark.parametrize("environ", [{}, {"COLAB_RELEASE_TAG": "r"}, {"COLAB_GPU": ""}, {"COLAB_GPU": "1"},
                                     {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, {"KAGGLE_URL_BASE": "https://k"},
                                     {"KAGGLE_KERNEL_RUN_TYPE": ""}])
def test_setup_cell_detects_platforms_as_env_does(environ):
    """Before the kit is installed the cell decides alone whether to install it: exactly where
    env.detect_platform sees Colab or Kaggle (the cell then prints the package's answer)."""
    from mattingkit import env

    expected = env.detect_platform(environ)
    res = _run_setup_cell(environ, fake_colab=True, kit_missing=True)
    if expected == "local":
        assert res.returncode != 0 and "Error" in res.stderr and "CALLS" not in res.stdout
    else:
        assert res.returncode == 0, res.stderr
        assert f"platform: {expected}" in res.stdout and '["pip", "mattingkit @ git+' in res.stdout


def test_setup_cell_on_colab_mounts_drive_and_copies_secrets_silently():
    res = _run_setup_cell({"COLAB_RELEASE_TAG": "release-x"}, fake_colab=True)
    assert res.returncode == 0, res.stderr
    assert 'CALLS=[["mount", "/content/drive"]]' in res.stdout   # the kit is importable here: no pip
    assert "KEY=True" in res.stdout                               # stripped and put into os.environ
    assert "colab-secret-value" not in res.stdout + res.stderr


# ------------------------------------------------------------------------------------------------
# smoke run of all five notebooks (real papermill, real kernels)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, demo_data_root):
    """One smoke run of 01 -> 05 with fake Kaggle credentials in the environment."""
    tmp = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    for k, v in FAKE_SECRETS.items():
        mp.setenv(k, v)
    try:
        res = runner.run_pipeline("demo", [f"run.data_root={demo_data_root}"], name="smoke", smoke=True,
                                  runs_root=tmp / "runs", parameters={"submission_dir": str(tmp / "submissions")})
    finally:
        mp.undo()
    return res, tmp


def test_smoke_pipeline_runs_all_five(smoke_run):
    res, tmp = smoke_run
    assert res.ok, res.summary()
    assert res.executed == NAMES
    for name in NAMES:
        assert (res.run_dir / "notebooks" / f"{name}.ipynb").exists()
    assert (res.run_dir / runner.DONE_MARKER).exists()
    for f in ("config.yaml", "manifest.csv", "data_report.md", "data_samples.png", "trimap_previews.png",
              "metrics.jsonl", "curves.png", "comparison.png", "submission.csv", "submission_preview.png",
              "submission_validation.txt",
              "checkpoints/last.pt"):
        assert (res.run_dir / f).exists(), f
    assert any((res.run_dir / "tb").glob("events.out.tfevents.*"))
    assert any((res.run_dir / "predictions" / "val").glob("*.png"))


def test_smoke_metrics_sections(smoke_run):
    res, _ = smoke_run
    m = runner.read_metrics(res.run_dir)
    assert set(NAMES) <= set(m)
    data, trimaps, train, infer, sub = (m[n] for n in NAMES)
    manifest = pd.read_csv(res.run_dir / "manifest.csv", dtype=str)
    assert data["items"] == len(manifest) > 0 and sum(data["splits"].values()) == len(manifest)
    assert set(trimaps["unknown_share"]) >= {"erode_dilate", "band", "from_mask"}
    assert all(0 < v < 1 for v in trimaps["unknown_share"].values())
    assert train["step"] == train["steps"] == 12
    assert infer["evaluated"] >= 1 and all(infer[k] is not None and infer[k] >= 0 for k in ("sad", "mse", "grad", "conn"))
    per_image = pd.read_csv(res.run_dir / "metrics_val.csv", dtype={"image": str})
    assert infer["sad"] == pytest.approx(per_image["sad"].mean(), rel=1e-5)
    assert sub["valid"] is True and sub["rows"] > 0 and sub["two_pass"] is True


def test_smoke_submission_validates(smoke_run, demo_data_root):
    from mattingkit.submission import validate_submission

    res, tmp = smoke_run
    final = tmp / "submissions" / "smoke.smoke.csv"   # a smoke run never replaces a full run's file
    assert final.exists() and final.read_bytes() == (res.run_dir / "submission.csv").read_bytes()
    test_dir = demo_data_root / "demo" / "competition" / "test_dataset" / "orig_1024"
    rep = validate_submission(final, test_dir=test_dir,
                              sample_csv=demo_data_root / "demo" / "competition" / "sample_submission.csv")
    assert rep.ok, rep.summary()
    assert rep.rows == len(list(test_dir.iterdir()))


def test_smoke_output_notebooks_are_readable(smoke_run):
    res, _ = smoke_run
    for name in NAMES:
        nb = nbformat.read(res.run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "smoke = True" in injected[0].source
        for c in _code(nb):
            assert not any(o.output_type == "error" for o in c.outputs)
            lines = sum(len(o.get("text", "").splitlines()) for o in c.outputs if o.output_type == "stream")
            assert lines < MAX_STREAM_LINES, f"{name}: {lines} lines of output in cell {c.source[:50]!r}"
            text = "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
            assert "\r" not in text                                # no carriage-return progress bars
    train_nb = nbformat.read(res.run_dir / "notebooks" / "03_train_gan.ipynb", as_version=4)
    train_text = "".join(o.get("text", "") for c in _code(train_nb) for o in c.outputs)
    assert "train smoke: step 12/12 (100%)" in train_text         # headless: a line per log record
    trimap_nb = nbformat.read(res.run_dir / "notebooks" / "02_trimap_synthesis.ipynb", as_version=4)
    last = _code(trimap_nb)[-1]
    assert "trimap_inspector" in last.source
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in last.outputs)


def test_no_credential_in_any_output(smoke_run):
    res, tmp = smoke_run
    secrets = [v.encode() for v in FAKE_SECRETS.values()]
    checked = 0
    for root in (res.run_dir, tmp / "submissions"):
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                checked += 1
                for s in secrets:
                    assert s not in data, f"a credential leaked into {p}"
    assert checked > 20


def test_notebook_03_prints_the_drive_trash_warning_only_for_a_run_folder_on_drive(monkeypatch, tmp_path, capsys):
    import types

    from mattingkit import env, pipeline
    from mattingkit.config import load_config

    ctx = types.SimpleNamespace(cfg=load_config("demo"), run_dir=tmp_path / "runs" / "demo")
    pipeline.drive_space(ctx)
    local = capsys.readouterr().out
    assert "trash" not in local and "Drive" not in local and str(ctx.run_dir) in local
    monkeypatch.setattr(env, "detect_platform", lambda *a, **k: "colab")
    monkeypatch.setattr(env, "drive_mounted", lambda: True)
    monkeypatch.setattr(env, "COLAB_DRIVE", tmp_path / "drive" / "MyDrive")
    pipeline.drive_space(ctx)                      # Drive mounted, the run folder on the local disk: no Drive words
    assert "trash" not in capsys.readouterr().out
    on_drive = types.SimpleNamespace(cfg=ctx.cfg, run_dir=tmp_path / "drive" / "MyDrive" / "mattingkit" / "runs" / "demo")
    pipeline.drive_space(on_drive)
    assert "Drive's trash" in capsys.readouterr().out


def test_setup_and_parameters_cells_name_the_repository_once_and_every_shipped_config():
    from mattingkit.config import available_configs

    for name in NAMES:
        setup, params = _code(_nb(name))[:2]
        assert "[lab]" not in setup.source                # Colab and Kaggle have their own Jupyter
        assert "mattingkit set-repo" in setup.source        # one command sets REPO_URL everywhere
        comment = params.source.splitlines()[0]
        for cfg in available_configs():
            assert (cfg if not cfg.startswith("dim_") else "dim_*") in comment, (name, cfg)


def test_set_repo_rewrites_readme_and_notebooks_together(tmp_path):
    import shutil

    from mattingkit import env

    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks", ignore=shutil.ignore_patterns("sweeps"))
    changed = env.set_repository("me/mykit", tmp_path)
    assert {p.name for p in changed} == {"README.md"} | {f"{n}.ipynb" for n in NAMES}
    readme = (tmp_path / "README.md").read_text()
    assert "github.com/OWNER/mattingkit" not in readme and readme.count("github/me/mykit/blob/main/notebooks") == 5
    assert 'git+https://github.com/me/mykit"' in readme
    for name in NAMES:
        nb = nbformat.read(tmp_path / "notebooks" / f"{name}.ipynb", as_version=4)
        assert 'REPO_URL = "https://github.com/me/mykit"' in _code(nb)[0].source
        assert all(c.outputs == [] for c in _code(nb))
    env.set_repository("you/other", tmp_path)                 # and again, from the new one
    assert (tmp_path / "README.md").read_text().count("github/you/other/blob/main/notebooks") == 5

"""`mattingkit kaggle push / status / pull / wheel` and `sweep --on kaggle`, end to end: the real ``kaggle``
client (in ``python -m mattingkit`` subprocesses, unpatched) against the fake Kaggle of
tests/kaggle_fake_server.py on 127.0.0.1, and the pushed driver notebook run here with papermill the way
Kaggle would run it (installing the kit from the wheel the client uploaded, offline).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mattingkit import kaggle
from mattingkit.runner import point_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kaggle_fake_server import USER, FakeKaggle, closed_port  # noqa: E402

pytest.importorskip("kaggle")

REPO = Path(__file__).resolve().parents[1]
TOKEN = "KTOKEN_m4n5b6v7c8x9z0"
KEY = "KKEY_q1w2e3r4t5y6u7"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One fake Kaggle for the module, a HOME without credentials, and a runs root."""
    root = tmp_path_factory.mktemp("kaggle_world")
    (root / "home").mkdir()
    with FakeKaggle(tokens=(TOKEN,), keys=(KEY,)) as fk:
        yield {"fk": fk, "root": root, "runs": root / "runs"}


def mk(world, *args, token: str | None = TOKEN, key: str | None = None, cwd=None, env_extra=None,
       timeout=300) -> subprocess.CompletedProcess:
    """``python -m mattingkit ARGS`` with the kaggle client pointed at the fake server."""
    base = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env = world["fk"].client_env(base, str(world["root"] / "home"), token=token, key=key)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "mattingkit", *map(str, args)], cwd=cwd or world["root"],
                          env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    err = res.stderr.strip()
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


# ------------------------------------------------------------------------------------------------
# the kernel folder: --dry-run, nothing pushed
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """In-process CLI calls: a HOME of their own and every request sent to a closed port."""
    for k in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(k, f"http://127.0.0.1:{closed_port()}")


def test_dry_run_writes_the_kernel_folder_with_the_travelling_config(no_network, monkeypatch, tmp_path, capsys):
    from mattingkit import cli

    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("base: demo\ntrain:\n  steps: 5\n")
    code = cli.main(["kaggle", "push", "--config", str(cfg), "--set", "train.lr_g=2e-4", "--param", "n_preview=1",
                     "--name", "dry one", "--smoke", "--no-internet", "--dry-run", str(tmp_path / "k")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == sorted([kaggle.DRIVER_NOTEBOOK, kaggle.KERNEL_METADATA])
    md = json.loads((tmp_path / "k" / kaggle.KERNEL_METADATA).read_text())
    assert md["id"] == f"{USER}/mattingkit-dry-one" and md["title"] == "mattingkit-dry-one"
    assert (md["enable_internet"], md["enable_gpu"], md["machine_shape"]) == (False, True, "NvidiaTeslaT4")
    assert md["dataset_sources"] == [f"{USER}/mattingkit-wheel"] and md["code_file"] == kaggle.DRIVER_NOTEBOOK
    nb = json.loads((tmp_path / "k" / kaggle.DRIVER_NOTEBOOK).read_text())
    ns: dict = {}
    exec(nb["cells"][1]["source"], ns)                 # the parameters cell
    assert (ns["run_name"], ns["config"], ns["config_text"]) == ("dry_one", "mine.yaml", cfg.read_text())
    assert ns["overrides"] == ["train.lr_g=2e-4"] and ns["params"] == ["n_preview=1"] and ns["smoke"] is True
    assert ns["install"] == "wheel"
    text = (tmp_path / "k" / kaggle.KERNEL_METADATA).read_text() + (tmp_path / "k" / kaggle.DRIVER_NOTEBOOK).read_text()
    assert KEY not in text + capsys.readouterr().out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home" / ".kaggle").exists()   # no push record


def test_config_errors_and_the_p100_caveat_stop_before_any_push(no_network, monkeypatch, tmp_path, capsys):
    from mattingkit import cli

    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)     # a push would get as far as the (closed) network
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: other.yaml\n")      # a base that does not travel
    (tmp_path / "other.yaml").write_text("base: demo\n")
    cases = [(["--set", "train.stepz=3"], "train.stepz"), (["--accelerator", "p100"], "sm_60"),
             (["--config", str(bad)], "other.yaml")]
    for extra, needle in cases:
        code = cli.main(["kaggle", "push", "--name", "x", "--repo", "u", "--runs-root", str(tmp_path / "r"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert cli.main(["kaggle", "push", "--name", "x"]) == 2                   # internet on, no --repo
    assert "--repo" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unknown_notebook_parameters_are_refused_before_any_push(world, tmp_path):
    """`kaggle push --param` and a sweep file's `parameters` are checked here against the notebooks the run
    selects, as `mattingkit run` checks them: every unknown name in one line, exit 2, no request to Kaggle
    (the fake server sees none) and nothing written."""
    fk = world["fk"]
    runs = tmp_path / "runs"
    push = ["kaggle", "push", "--config", "demo", "--smoke", "--repo", "https://example.org/mk.git",
            "--runs-root", runs, "--name", "badparam"]
    start = len(fk.requests)
    err = one_line_error(mk(world, *push, "--param", "n_previe=1", "--param", "n_preview=2", "--param", "n_shw=3"),
                         2, "n_previe", "did you mean n_preview?", "n_shw", "declared by none")
    assert "'n_preview'" not in err.split("declared")[0]             # a known name is not reported
    # n_show is notebook 05's: with --notebooks 01 04 it is declared by none of the selected ones
    one_line_error(mk(world, *push, "--notebooks", "01", "04", "--param", "n_show=2"), 2, "n_show", "04_inference")
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: badsweep\nconfig: demo\nsmoke: true\nnotebooks: ['01', '04']\n"
                    "parameters: {n_preview: 1, real_limt: 2, n_show: 1}\ngrid:\n  train.lr_g: [1.0e-4, 2.0e-4]\n")
    sweep = mk(world, "sweep", grid, "--on", "kaggle", "--poll", "0.05", "--repo", "https://example.org/mk.git",
               "--runs-root", runs)
    one_line_error(sweep, 2, "real_limt", "did you mean real_limit?", "n_show")
    assert fk.requests[start:] == [] and not runs.exists()


# ------------------------------------------------------------------------------------------------
# errors: one line, non-zero exit
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kernel_errors_are_one_line(world, tmp_path):
    fk = world["fk"]
    runs = tmp_path / "runs"
    push = ["kaggle", "push", "--config", "demo", "--smoke", "--repo", "https://example.org/mk.git",
            "--runs-root", runs]
    one_line_error(mk(world, *push, "--name", "nocred", token=None), 3, "No Kaggle credentials")
    one_line_error(mk(world, *push, "--name", "x", "--kernel", "someone/else-kernel"), 3, "belongs to")
    nowheel = mk(world, *push, "--name", "nw", "--no-internet", "--wheel-dataset", f"{USER}/no-such-wheel")
    one_line_error(nowheel, 3, f"{USER}/no-such-wheel", "mattingkit kaggle wheel")
    fk.others.add("mattingkit-taken")
    one_line_error(mk(world, *push, "--name", "taken"), 3, "another account", "HTTP 403")
    fk.mode = "quota"
    try:
        one_line_error(mk(world, *push, "--name", "q1"), 3, "GPU quota")
    finally:
        fk.mode = ""
    off = mk(world, *push, "--name", "off", env_extra={"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}"})
    one_line_error(off, 3, "Cannot reach Kaggle")
    # a kernel that errored: status and pull say so with its log's tail
    fk.kernel_plan(f"{USER}/mattingkit-boom", ["RUNNING", "ERROR"], failure="Notebook exited with an error",
                   log=json.dumps([{"stream_name": "stderr", "time": 1.0,
                                    "data": "Traceback ...\nRuntimeError: mattingkit run boom failed (exit 1)\n"}]))
    assert mk(world, *push, "--name", "boom").returncode == 0
    assert "is running" in mk(world, "kaggle", "status", "boom", "--runs-root", runs).stdout
    st = mk(world, "kaggle", "status", "boom", "--runs-root", runs)
    assert st.returncode == 1 and "is error" in st.stdout and "RuntimeError: mattingkit run boom failed" in st.stdout
    one_line_error(mk(world, "kaggle", "pull", "boom", "--runs-root", runs), 1, "failed", "RuntimeError: mattingkit run boom")
    one_line_error(mk(world, "kaggle", "status", "never", "--runs-root", runs), 2, "no kernel was pushed")
    assert not (runs / "boom").exists()


# ------------------------------------------------------------------------------------------------
# wheel -> no-internet push -> the pushed driver run here (papermill, offline) -> status -> pull
# ------------------------------------------------------------------------------------------------
def driver_python(tmp: Path) -> Path:
    """A throwaway venv that sees the shared venv's packages but not mattingkit (the driver installs it)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    shared = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "papermill").is_dir())
    overlay = tmp / "deps"
    overlay.mkdir()
    for entry in shared.iterdir():
        if not entry.name.startswith(("mattingkit", "__editable__")) and entry.suffix != ".pth":
            (overlay / entry.name).symlink_to(entry.resolve())
    (site / "shared-deps.pth").write_text(f"{overlay}\n")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def kernel_run(world):
    """`kaggle wheel` (twice: create, then version), `kaggle push --no-internet --name e2e`, then the pushed
    notebook run with papermill on the wheel and notebooks the client uploaded, as Kaggle would run it."""
    fk, root = world["fk"], world["root"]
    first = mk(world, "kaggle", "wheel")
    assert first.returncode == 0, first.stderr
    again = mk(world, "kaggle", "wheel", "--notes", "v2")
    assert again.returncode == 0 and "new version of" in again.stdout
    push = mk(world, "kaggle", "push", "--config", "demo", "--smoke", "--set", "train.steps=2",
              "--set", "run.device=cpu", "--param", "n_preview=1", "--name", "e2e", "--no-internet",
              "--runs-root", world["runs"])
    assert push.returncode == 0, push.stderr
    # what Kaggle would mount: the wheel dataset's files, the pushed notebook
    ds = root / "input" / "mattingkit-wheel"
    ds.mkdir(parents=True)
    for name, data in fk.datasets[f"{USER}/mattingkit-wheel"][-1].items():
        (ds / name).write_bytes(data)
    body = fk.bodies("SaveKernel")[-1]
    nb = root / "pushed.ipynb"
    nb.write_text(body["text"])
    py = driver_python(root)
    local = {"wheel_glob": str(root / "input" / "**" / "mattingkit-*.whl"), "src_dir": str(root / "src"),
             "runs_root": str(root / "working" / "runs"), "data_root": str(root / "data")}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("KAGGLE_", "JUPYTER"))}
    env.update(HOME=str(root / "home"), PATH=f"{py.parent}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1",
               MATTINGKIT_KERNEL="python3")
    res = subprocess.run([str(py), "-m", "papermill", str(nb), str(root / "pushed.out.ipynb"), "-k", "python3",
                          "-y", json.dumps(local)], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return {"first": first, "again": again, "push": push, "body": body, "venv": py.parent.parent,
            "run_dir": root / "working" / "runs" / "e2e", "out_nb": root / "pushed.out.ipynb"}


@pytest.mark.slow
def test_wheel_dataset_and_no_internet_push_install_the_kit_from_it(world, kernel_run):
    fk = world["fk"]
    versions = fk.datasets[f"{USER}/mattingkit-wheel"]
    assert len(versions) == 2     # created, then versioned
    names = sorted(versions[-1])
    assert [n for n in names if n.endswith(".whl")] == ["mattingkit-0.1.0-py3-none-any.whl"]
    assert sorted(n for n in names if n.endswith(".ipynb")) == sorted(p.name for p in (REPO / "notebooks").glob("0*.ipynb"))
    assert fk.calls("CreateDataset") and fk.calls("CreateDatasetVersion")
    body = kernel_run["body"]
    assert body["enableInternet"] is False and f"{USER}/mattingkit-wheel" in body["datasetDataSources"]
    assert body["slug"] == f"{USER}/mattingkit-e2e" and body["kernelType"] == "notebook"
    assert body["machineShape"] == "NvidiaTeslaT4" and body["enableGpu"] is True
    assert f"https://www.kaggle.com/code/{USER}/mattingkit-e2e" in kernel_run["push"].stdout
    # the driver installed the kit from the uploaded wheel, into its own environment, and ran the run
    installed = list((kernel_run["venv"] / "lib").glob("python*/site-packages/mattingkit/kaggle.py"))
    assert installed, "the driver did not install the wheel"
    run_dir = kernel_run["run_dir"]
    assert (run_dir / "DONE").exists() and (run_dir / "submission.csv").exists() and (run_dir / "doctor.json").exists()
    assert sorted(p.name for p in (run_dir / "notebooks").glob("*.ipynb"))[0] == "01_data_download.ipynb"
    out = kernel_run["out_nb"].read_text()
    assert "5 notebooks ok" in out and "--no-index" in out


@pytest.mark.slow
def test_push_status_pull_end_to_end(world, kernel_run, tmp_path):
    from mattingkit.run import read_metrics, summary_table

    fk, runs = world["fk"], world["runs"]
    src = kernel_run["run_dir"]
    outputs = {f"runs/e2e/{p.relative_to(src).as_posix()}": p.read_bytes() for p in src.rglob("*") if p.is_file()}
    outputs["data/demo/x.png"] = b"not pulled: outside runs/e2e"
    fk.kernel_plan(f"{USER}/mattingkit-e2e", ["QUEUED", "RUNNING", "COMPLETE"], outputs=outputs, log="all good")
    fk.kernels.setdefault(f"{USER}/mattingkit-e2e", [kernel_run["body"]])
    assert "is queued" in mk(world, "kaggle", "status", "e2e", "--runs-root", runs).stdout
    early = mk(world, "kaggle", "pull", "e2e", "--runs-root", runs)     # running: nothing pulled yet
    one_line_error(early, 6, "is running", "not complete")
    assert not (runs / "e2e").exists()
    st = mk(world, "kaggle", "status", "e2e", "--runs-root", runs)
    assert st.returncode == 0 and "is complete" in st.stdout
    pulled = mk(world, "kaggle", "pull", "e2e", "--runs-root", runs)
    assert pulled.returncode == 0, pulled.stderr
    got = runs / "e2e"
    assert read_metrics(got) == read_metrics(src) and summary_table(got) == summary_table(src)
    assert (got / "submission.csv").read_bytes() == (src / "submission.csv").read_bytes()
    assert not (got / "checkpoints").exists() and (src / "checkpoints").is_dir()
    source = json.loads((got / kaggle.SOURCE_FILE).read_text())
    assert source["kernel"] == f"{USER}/mattingkit-e2e" and source["version"] == 1
    assert fk.bodies("ListKernelSessionOutput")[-1] == {"userName": USER, "kernelSlug": "mattingkit-e2e",
                                                         "pageSize": 100}
    # --checkpoints: the same kernel may replace its own folder
    again = mk(world, "kaggle", "pull", "e2e", "--checkpoints", "--runs-root", runs)
    assert again.returncode == 0 and (got / "checkpoints" / "best.pt").is_file()
    # the producer rule: a folder holding a local run is never mixed with a kernel's output
    local = runs / "mine"
    local.mkdir()
    (local / "config.yaml").write_text("local run\n")
    (runs / kaggle.PUSH_RECORDS / "mine.json").write_text(json.dumps({"kernel": f"{USER}/mattingkit-e2e"}))
    one_line_error(mk(world, "kaggle", "pull", "mine", "--runs-root", runs), 6, "holds a run made here")
    assert (local / "config.yaml").read_text() == "local run\n" and len(list(local.iterdir())) == 1
    # a pulled run's CSV is submitted as a local one: `submit --csv` and notebook 05's cell
    sub = mk(world, "submit", "--csv", got / "submission.csv", "--kaggle", "ecom-test", "-m", "pulled e2e")
    assert sub.returncode == 0 and "scored 0.04321" in sub.stdout, sub.stderr[-2000:]
    assert fk.submissions[-1]["data"] == (got / "submission.csv").read_bytes()
    cell = ("from mattingkit import pipeline, run\n"
            f"ctx = run.prepare_run({str(got / 'config.yaml')!r}, run_name='e2e', runs_root={str(runs)!r})\n"
            "pipeline.kaggle_submit(ctx, 'ecom-test', 'from notebook 05')\n")
    nb05 = subprocess.run(
        [sys.executable, "-c", cell], capture_output=True, text=True, timeout=300,
        env=fk.client_env(dict(os.environ, PYTHONPATH=str(REPO)), str(world["root"] / "home"), token=TOKEN))
    assert nb05.returncode == 0 and "scored 0.04321" in nb05.stdout, nb05.stderr[-2000:]
    assert fk.submissions[-1]["description"] == "from notebook 05"
    assert read_metrics(got)["05_submission"]["kaggle"]["public_score"] == "0.04321"


@pytest.mark.slow
def test_internet_on_driver_installs_the_kit_from_the_repository(world, tmp_path):
    """The pushed notebook of an internet-on kernel, run here: clones the repository (this checkout's HEAD,
    by file URL), installs it, runs notebook 01 of the run."""
    fk = world["fk"]
    push = mk(world, "kaggle", "push", "--config", "demo", "--smoke", "--set", "run.device=cpu", "--notebooks", "01",
              "--param", "n_preview=1", "--name", "fromrepo", "--repo", REPO.as_uri(), "--runs-root", tmp_path / "runs")
    assert push.returncode == 0, push.stderr
    body = fk.bodies("SaveKernel")[-1]
    assert body["slug"] == f"{USER}/mattingkit-fromrepo" and body["enableInternet"] is True
    assert "datasetDataSources" not in body      # no wheel dataset: the kit comes from the repository
    nb = tmp_path / "pushed.ipynb"
    nb.write_text(body["text"])
    py = driver_python(tmp_path)
    local = {"src_dir": str(tmp_path / "src"), "runs_root": str(tmp_path / "working" / "runs"),
             "data_root": str(tmp_path / "data")}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("KAGGLE_", "JUPYTER"))}
    env.update(HOME=str(tmp_path), PATH=f"{py.parent}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1")
    res = subprocess.run([str(py), "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), "-k", "python3",
                          "-y", json.dumps(local)], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    out = (tmp_path / "out.ipynb").read_text()
    assert "git clone --depth 1" in out and "1 notebooks ok" in out
    assert list((py.parent.parent / "lib").glob("python*/site-packages/mattingkit/kaggle.py"))
    run_dir = tmp_path / "working" / "runs" / "fromrepo"
    assert (run_dir / "DONE").exists() and (run_dir / "notebooks" / "01_data_download.ipynb").exists()


def test_pull_refuses_an_output_name_that_leaves_the_run_folder(world, tmp_path):
    fk, runs = world["fk"], tmp_path / "runs"
    fk.kernel_plan(f"{USER}/mattingkit-evil", ["COMPLETE"],
                   outputs={"runs/evil/metrics.json": b"{}", "runs/evil/../../escape.txt": b"outside"})
    assert mk(world, "kaggle", "push", "--config", "demo", "--name", "evil", "--repo", "u",
              "--runs-root", runs).returncode == 0
    one_line_error(mk(world, "kaggle", "pull", "evil", "--runs-root", runs), 3, "unsafe file name")
    assert not (runs / "evil").exists() and not (tmp_path / "escape.txt").exists()
    assert [p.name for p in runs.iterdir()] == [kaggle.PUSH_RECORDS]     # no staging folder left behind


# ------------------------------------------------------------------------------------------------
# sweep --on kaggle: three kernels, one failing, results table, re-run skips what was pulled
# ------------------------------------------------------------------------------------------------
def test_sweep_on_kaggle_three_points_one_failing(world, tmp_path):
    fk = world["fk"]
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: ksweep\nconfig: demo\nsmoke: true\nmetric: 04_inference.sad\nmode: min\n"
                    "grid:\n  train.lr_g: [1.0e-4, 2.0e-4, 5.0e-4]\n")
    names = [point_name(i, {"train.lr_g": v}) for i, v in enumerate([1e-4, 2e-4, 5e-4])]
    sads = {names[0]: 7.5, names[2]: 3.25}
    for run in names:
        ref = f"{USER}/{kaggle.kernel_slug('ksweep ' + run)}"
        if run in sads:
            out = {f"runs/{run}/metrics.json": json.dumps({"04_inference": {"sad": sads[run]}}).encode(),
                   f"runs/{run}/DONE": b"{}", f"runs/{run}/config.yaml": b"run: {}\n"}
            fk.kernel_plan(ref, ["QUEUED", "RUNNING", "COMPLETE"], outputs=out)
        else:
            fk.kernel_plan(ref, ["RUNNING", "ERROR"], failure="exited with an error",
                           log="step 1\nTraceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    before = len(fk.bodies("SaveKernel"))
    res = mk(world, "sweep", grid, "--on", "kaggle", "--max-parallel", "2", "--poll", "0.05",
             "--repo", "https://example.org/mk.git", "--runs-root", tmp_path / "runs")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "RuntimeError: CUDA out of memory" in res.stdout     # the failed point's log tail
    pushed = fk.bodies("SaveKernel")[before:]
    assert sorted(b["slug"] for b in pushed) == sorted(f"{USER}/{kaggle.kernel_slug('ksweep ' + n)}" for n in names)
    import pandas as pd

    df = pd.read_csv(tmp_path / "runs" / "ksweep" / "results.csv").set_index("run")
    assert df.loc[names[0], "status"] == "ok" and df.loc[names[2], "status"] == "ok"
    assert df.loc[names[1], "status"].startswith("failed: kernel") and "CUDA out of memory" in df.loc[names[1], "status"]
    assert df.loc[names[0], "04_inference.sad"] == 7.5 and df.loc[names[2], "04_inference.sad"] == 3.25
    md = (tmp_path / "runs" / "ksweep" / "results.md").read_text()
    assert md.index(names[2]) < md.index(names[0])       # best (lowest SAD) first
    assert (tmp_path / "runs" / "ksweep" / "results.png").exists()
    # re-run: the two pulled points are skipped, only the failed one is pushed again
    n = len(fk.bodies("SaveKernel"))
    again = mk(world, "sweep", grid, "--on", "kaggle", "--poll", "0.05", "--repo", "https://example.org/mk.git",
               "--runs-root", tmp_path / "runs")
    assert again.returncode == 1
    assert [b["slug"] for b in fk.bodies("SaveKernel")[n:]] == [f"{USER}/{kaggle.kernel_slug('ksweep ' + names[1])}"]
    df2 = pd.read_csv(tmp_path / "runs" / "ksweep" / "results.csv").set_index("run")
    assert df2.loc[names[0], "status"] == "skipped (pulled)" and df2.loc[names[0], "04_inference.sad"] == 7.5


def test_sweep_on_kaggle_never_runs_more_than_max_parallel(world, tmp_path):
    fk = world["fk"]
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: par\nconfig: demo\ngrid:\n  train.lr_g: [1.0e-4, 2.0e-4, 3.0e-4]\n")
    names = [point_name(i, {"train.lr_g": v}) for i, v in enumerate([1e-4, 2e-4, 3e-4])]
    for run in names:
        fk.kernel_plan(f"{USER}/{kaggle.kernel_slug('par ' + run)}", ["RUNNING", "RUNNING", "COMPLETE"],
                       outputs={f"runs/{run}/DONE": b"{}", f"runs/{run}/metrics.json": b"{}"})
    start = len(fk.requests)
    res = mk(world, "sweep", grid, "--on", "kaggle", "--max-parallel", "1", "--poll", "0.05",
             "--repo", "https://example.org/mk.git", "--runs-root", tmp_path / "runs")
    assert res.returncode == 0, res.stderr[-2000:]
    seq = [c for c in fk.calls()[start:] if c in ("SaveKernel", "ListKernelSessionOutput")]
    # one at a time: each push is followed by that kernel's pull before the next push
    assert seq == ["SaveKernel", "ListKernelSessionOutput"] * 3

"""Headless runs of the numbered notebooks with papermill, and batch sweeps.

- :func:`run_pipeline` prepares the run folder (:func:`mattingkit.run.prepare_run`: ``config.yaml``
  written once), then executes ``01 -> 05`` through papermill, every notebook loading that saved config;
  it stops at the first failure and prints the failing notebook, cell and error.
- :func:`run_sweep` runs a grid of parameter sets (one run folder each; finished runs are skipped on a
  re-run; a failed run does not stop the sweep) and writes ``results.csv``, ``results.md`` and a plot.

Credentials are never papermill parameters: notebooks read them from the environment.

Example:
    >>> from mattingkit.runner import sweep_points
    >>> sweep_points({"train.lr_g": [1e-4, 2e-4], "model.norm": ["bn", "gn"]})[:2]
    [{'train.lr_g': 0.0001, 'model.norm': 'bn'}, {'train.lr_g': 0.0001, 'model.norm': 'gn'}]
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import drive, env
from .choices import validate_grid
from .config import DEFAULT_CONFIG, Config
from .errors import InputNotFoundError, Interrupted, UsageError
from .progress import LineRelay
from .run import (
    CONFIG_FILE,
    flatten,
    generated_source,
    prepare_run,
    read_metrics,
    resolve_config,
    resolve_run,
    safe_name,
)
from .run import runs_root as resolve_runs_root

DOCTOR_FILE = "doctor.json"

NOTEBOOK_DIR_NAME = "notebooks"
NOTEBOOKS = ["01_data_download", "02_trimap_synthesis", "03_train_gan", "04_inference", "05_submission"]
DONE_MARKER = "DONE"


def repo_notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the checkout (the kit is installed editable from the repo)."""
    root = env.repo_root()
    candidates = [root / NOTEBOOK_DIR_NAME] if root else []
    candidates.append(Path.cwd() / NOTEBOOK_DIR_NAME)
    for c in candidates:
        if c.is_dir():
            return c
    raise InputNotFoundError("cannot find the notebooks/ folder; run from the mattingkit repository checkout")


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (IPython tracebacks carry them).

    Example:
        >>> strip_ansi("\x1b[31mValueError\x1b[39m: boom")
        'ValueError: boom'
    """
    return _ANSI.sub("", text)


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did. On failure: the notebook, the cell (``In [N]`` of the executed
    notebook and its first source line), the error and the tail of its traceback."""

    ok: bool
    run_dir: Path
    executed: list[str] = field(default_factory=list)
    failed_notebook: str | None = None
    failed_cell: int | None = None          # execution count (``In [N]``) in the executed notebook
    failed_cell_index: int | None = None    # 0-based cell index in the executed notebook
    failed_source: str | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: str | None = None          # Ctrl-C: the one line saying what was kept

    @property
    def output_notebook(self) -> Path | None:
        return self.run_dir / NOTEBOOK_DIR_NAME / self.failed_notebook if self.failed_notebook else None

    def summary(self) -> str:
        if self.interrupted:
            return f"run {self.run_dir.name}: {self.interrupted}"
        if self.ok:
            line = f"run {self.run_dir.name}: {len(self.executed)} notebooks ok in {self.seconds:.0f}s -> {self.run_dir}"
            figures = run_figures(self.run_dir)
            return line + (f"\n  {figures}" if figures else "")
        where = f"cell In [{self.failed_cell}]" if self.failed_cell is not None else "kernel start-up"
        lines = [f"run {self.run_dir.name}: FAILED in {self.failed_notebook}, {where}: {self.error}"]
        if self.failed_source:
            src = self.failed_source.strip().splitlines()
            lines.append("  cell source: " + (src[0] if src else "") + (" ..." if len(src) > 1 else ""))
        if self.traceback:
            tb = [ln for ln in self.traceback.splitlines() if ln.strip()]
            lines.append("  traceback (last lines):")
            lines += ["    " + ln for ln in tb[-12:]]
        lines.append(f"  executed notebook (with the error): {self.output_notebook}")
        return "\n".join(lines)


def run_figures(run_dir: str | os.PathLike) -> str:
    """The run's headline figures in one line (what the README quotes for the demo): validation
    ``best_metric`` at the first validation and at the best step (``metrics.jsonl``), and notebook 04's
    SAD on the same images (``metrics.json``). Empty when the run has none of them.

    Example:
        >>> import tempfile
        >>> from mattingkit.run import update_metrics
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "metrics.jsonl").write_text('{"step": 0, "phase": "val", "sad": 9.1, "best": 9.1}\\n'
        ...                                      '{"step": 50, "phase": "val", "sad": 4.25, "best": 4.25}\\n')
        >>> _ = update_metrics(d, "04_inference", {"sad": 4.25, "images": 6, "split": "val"})
        >>> run_figures(d)
        'validation sad 9.1 (step 0) -> 4.25 (best, step 50); notebook 04: SAD 4.25 on 6 val images'
    """
    from .run import HISTORY_FILE, read_history

    run_dir = Path(run_dir)
    parts = []
    hist = run_dir / HISTORY_FILE
    vals = [r for r in read_history(hist) if r.get("phase") == "val"] if hist.exists() else []
    if vals:
        metric = next((k for k in ("sad", "mse", "grad", "conn", "competition_mse") if k in vals[0]), None)
        if metric is not None:
            best = min(vals, key=lambda r: r.get(metric, float("inf")))
            parts.append(f"validation {metric} {vals[0][metric]:.4g} (step {vals[0]['step']}) -> "
                         f"{best[metric]:.4g} (best, step {best['step']})")
    nb04 = read_metrics(run_dir).get(NOTEBOOKS[3], {})
    if isinstance(nb04, dict) and nb04.get("sad") is not None:
        parts.append(f"notebook 04: SAD {nb04['sad']:.4g} on {nb04.get('images')} {nb04.get('split', 'val')} images")
    return "; ".join(parts)


def select_notebooks(notebooks: Iterable[str] | None) -> list[str]:
    if not notebooks:
        return list(NOTEBOOKS)
    chosen = []
    for want in notebooks:
        if isinstance(want, int) and not isinstance(want, bool):  # YAML reads 01 as 1
            want = f"{want:02d}"
        match = [n for n in NOTEBOOKS if n == want or n.startswith(str(want))]
        if not match:
            raise UsageError(f"unknown notebook {want!r}; choose from {', '.join(NOTEBOOKS)}")
        chosen += [m for m in match if m not in chosen]
    return [n for n in NOTEBOOKS if n in chosen]


#: Parameters every notebook declares (the rest are notebook-specific, see each ``parameters`` cell), each
#: with the option (CLI; a sweep file's key) that sets it: never a ``--param``, which would override the
#: run's own value behind its config.
COMMON_SET_BY = {"config": "--config (a sweep file: config:)", "overrides": "--set (a sweep file: overrides:)",
                 "run_name": "--name (a sweep file: name:)", "runs_root": "--runs-root",
                 "smoke": "--smoke (a sweep file: smoke:)"}
COMMON_PARAMETERS = tuple(COMMON_SET_BY)


def notebook_parameters(path: str | os.PathLike) -> list[str]:
    """Names declared in a notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill as pm

    return list(pm.inspect_notebook(str(path)))


def check_notebook_parameters(names: Iterable[str], notebooks: Iterable[str] | None = None,
                              notebooks_dir: str | os.PathLike | None = None) -> dict[str, set[str]]:
    """The names each selected notebook declares (``{notebook: names}``, from this checkout's notebooks),
    once every one of ``names`` is declared by one of them. The one check of notebook parameters, made
    before anything is written or pushed by ``mattingkit run --param``, ``kaggle push --param`` and a sweep
    file's ``parameters`` (local or ``--on kaggle``): the names none declares are one
    :class:`~mattingkit.errors.UsageError` listing them all, each with its closest declared name.

    Example:
        >>> sorted(check_notebook_parameters(["n_preview"], ["01"])["01_data_download"])[:3]
        ['check_network', 'config', 'download']
        >>> check_notebook_parameters(["n_previe", "n_show"], ["01"])
        Traceback (most recent call last):
        ...
        mattingkit.errors.UsageError: parameter(s) n_previe (did you mean n_preview?), n_show are declared by none of the notebooks 01_data_download (theirs: check_network, download, n_preview)
        >>> check_notebook_parameters(["config"], ["01"])
        Traceback (most recent call last):
        ...
        mattingkit.errors.UsageError: parameter config is set by --config (a sweep file: config:), not as a notebook parameter
    """
    import difflib

    src_dir = Path(notebooks_dir) if notebooks_dir else repo_notebooks_dir()
    selected = select_notebooks(notebooks)
    declared = {nb: set(notebook_parameters(src_dir / f"{nb}.ipynb")) for nb in selected}
    names = set(names)
    common = sorted(names & set(COMMON_PARAMETERS))
    unknown = sorted(k for k in names - set(common) if not any(k in d for d in declared.values()))
    problems = [f"parameter {k} is set by {COMMON_SET_BY[k]}, not as a notebook parameter" for k in common]
    if unknown:
        theirs = sorted(set().union(*declared.values()) - set(COMMON_PARAMETERS))
        said = []
        for k in unknown:
            close = difflib.get_close_matches(k, theirs, n=1, cutoff=0.6)
            said.append(f"{k} (did you mean {close[0]}?)" if close else k)
        problems.append(f"parameter(s) {', '.join(said)} are declared by none of the notebooks "
                        f"{', '.join(selected)} (theirs: {', '.join(theirs) or 'none'})")
    if problems:
        raise UsageError("; ".join(problems))
    return declared


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables for the kernels papermill starts (they inherit ``os.environ``)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_pipeline(config: str | os.PathLike | Config = DEFAULT_CONFIG, overrides: Iterable[str] | None = None,
                 name: str | None = None, smoke: bool = False, runs_root: str | os.PathLike | None = None,
                 notebooks: Iterable[str] | None = None, kernel_name: str | None = None,
                 notebooks_dir: str | os.PathLike | None = None, quiet: bool = False,
                 parameters: Mapping[str, Any] | None = None, cell_timeout: int | None = None,
                 force: bool = False, fresh: bool = False) -> PipelineResult:
    """Execute the numbered notebooks with papermill into ``runs/NAME/notebooks/``.

    Stops at the first failing notebook and prints which notebook, which cell and the error (the
    executed notebook, kept in the run folder, shows the full traceback).
    Parameters passed to every notebook: ``config``, ``overrides``, ``run_name``, ``runs_root``, ``smoke``;
    ``parameters`` adds notebook-specific ones (e.g. ``{"submission_dir": "/tmp/x"}``), each passed only
    to the notebooks that declare it (a name no selected notebook declares is an error).
    The kernels run with ``MATTINGKIT_HEADLESS=1`` (plain-text progress) and inherit the environment,
    so credentials come from environment variables, never from parameters.

    Nothing is written before the arguments are checked: the config and overrides (``load_config``),
    the notebook parameters (names no notebook declares: :func:`check_notebook_parameters`), the background folder
    (:func:`mattingkit.data.layouts.check_backgrounds`) and the run lock (another live process on this
    run folder -> :class:`~mattingkit.errors.RunStateError`; ``force`` takes the lock over, and is
    passed on as the ``force`` parameter to the notebooks that declare it). The run folder then gets
    ``config.yaml`` and ``doctor.json`` (:func:`mattingkit.doctor.doctor`: what this machine gives the run).

    The run folder is bound to its config (:func:`mattingkit.run.save_run_config`): on an existing run a
    changed key that changes training is a :class:`~mattingkit.errors.RunStateError` naming each
    difference; keys safe on resume are accepted and logged. ``fresh`` removes the folder's outputs and
    starts over (and is passed on as the ``fresh`` parameter to the notebooks that declare it).

    Example:
        >>> res = run_pipeline("demo", ["train.steps=20"], name="quick")   # doctest: +SKIP
        >>> res.ok, res.executed                                           # doctest: +SKIP
    """
    import papermill as pm

    overrides = list(overrides or [])
    cfg, run_dir = resolve_run(config, overrides, name, runs_root, smoke)   # raises before any write
    src_dir = (Path(notebooks_dir) if notebooks_dir else repo_notebooks_dir()).resolve()
    selected = select_notebooks(notebooks)
    extra = dict(parameters or {})
    declared = check_notebook_parameters(extra, selected, src_dir)
    if force:
        extra.setdefault("force", True)
    if fresh:
        extra.setdefault("fresh", True)
    check_run_inputs(cfg, quiet=quiet)
    check_lock(cfg, run_dir, force, quiet)
    ctx = prepare_run(config, overrides, run_name=name, runs_root=runs_root, smoke=smoke, fresh=fresh)
    _save_doctor(ctx.cfg, ctx.run_dir, quiet)
    out_dir = ctx.run_dir / NOTEBOOK_DIR_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.run_dir / DONE_MARKER).unlink(missing_ok=True)
    common = {  # every notebook loads the run's saved config.yaml (already resolved: no overrides)
        "config": str(ctx.path(CONFIG_FILE).resolve()),
        "overrides": [],
        "run_name": ctx.name,
        "runs_root": str(ctx.run_dir.parent.resolve()),
        "smoke": bool(ctx.cfg.run.smoke),
    }
    result = PipelineResult(ok=True, run_dir=ctx.run_dir)
    t0 = time.monotonic()
    # Headless progress in the kernels; the same data root as this process (relative roots resolved).
    kernel_env = {"MATTINGKIT_HEADLESS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("MATTINGKIT_DATA_ROOT", "MATTINGKIT_RUNS_ROOT"):
        if os.environ.get(var):
            kernel_env[var] = str(Path(os.environ[var]).resolve())
    with _environ(**kernel_env), _forward_interrupt() as interrupts:
        for nb in selected:
            src = src_dir / f"{nb}.ipynb"
            dst = out_dir / f"{nb}.ipynb"
            params = dict(common, **{k: v for k, v in extra.items() if k in declared[nb]})
            if force and nb.startswith("03") and "force" not in declared[nb] and not quiet:
                print(f"[{ctx.name}] note: {nb} declares no `force` parameter; the run lock was taken over "
                      f"before it started", flush=True)
            if not quiet:
                print(f"[{ctx.name}] {nb} ...", flush=True)
            t1 = time.monotonic()
            try:
                pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel_name or _kernel_name(),
                                    cwd=str(src_dir), progress_bar=False, log_output=False, report_mode=False,
                                    stdout_file=None if quiet else LineRelay(f"[{ctx.name}] "),  # (the console)
                                    request_save_on_cell_execute=True, execution_timeout=cell_timeout,
                                    extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no TCP chatter
            except Exception as e:  # papermill's PapermillExecutionError or a kernel/start-up failure
                _record_failure(result, f"{nb}.ipynb", e)
                result.timings[nb] = round(time.monotonic() - t1, 1)
                if interrupts or getattr(e, "ename", None) in ("Interrupted", "KeyboardInterrupt"):
                    result.interrupted = _interrupted_line(e, nb)   # Ctrl-C reached the kernel: no traceback
                elif not quiet:
                    print(result.summary(), file=sys.stderr, flush=True)
                break
            result.executed.append(nb)
            result.timings[nb] = round(time.monotonic() - t1, 1)
            if not quiet:
                print(f"[{ctx.name}] {nb} ok ({result.timings[nb]:.0f}s)", flush=True)
            if interrupts:   # Ctrl-C between cells or notebooks: stop after the finished one
                result.ok, result.interrupted = False, (f"interrupted after {nb} (finished and kept); "
                                                        f"run the same command to continue")
                break
    result.seconds = time.monotonic() - t0
    if result.ok:
        drive.write_text(ctx.run_dir / DONE_MARKER, json.dumps({"notebooks": result.executed,
                                                               "seconds": round(result.seconds, 1),
                                                               "timings": result.timings}))
        if not quiet:
            print(result.summary(), flush=True)
    return result


@contextlib.contextmanager
def _forward_interrupt():
    """While notebooks run, Ctrl-C goes to the kernel (papermill starts it in a session of its own, so the
    terminal's SIGINT reaches only this process): the kernel's code stops as it would in Jupyter (the
    trainer saves ``last.pt``) and papermill returns the cell's error. Yields the list of interrupts
    received; a second Ctrl-C, or one while no kernel runs, stops this process at once. Without psutil, or off the main thread, Ctrl-C
    behaves as usual."""
    import signal
    import threading

    received: list[float] = []
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is None or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(time.monotonic())
        kernels = 0
        for child in psutil.Process().children():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(child.pid) == child.pid:   # a kernel: the leader of its own session
                    os.killpg(child.pid, signal.SIGINT)
                    kernels += 1
        if not kernels:   # no kernel running (starting up, between notebooks): stop here
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted_line(error: Exception, notebook: str) -> str:
    """The kernel's own one line (the trainer's :class:`~mattingkit.errors.Interrupted`: the step and
    what was saved), else which notebook was stopped."""
    if getattr(error, "ename", None) == "Interrupted" and getattr(error, "evalue", None):
        return strip_ansi(str(error.evalue)).strip()
    return f"interrupted in {notebook} (the notebooks before it are kept); run the same command to continue"


def check_run_inputs(cfg: Config, quiet: bool = False) -> None:
    """What a run checks before it writes anything (after the config itself): the dataset folder
    (``data.root``, unless notebook 01 downloads it or ``data.manifest`` lists the files) and the
    background pool (``data.backgrounds``). The demo data, backgrounds included, is made first when the
    config uses it and it is missing."""
    from .data.layouts import check_backgrounds
    from .run import DEMO_DIR, data_root, data_root_problem, ensure_data

    if generated_source(cfg) is not None:
        ensure_data(cfg, download=False)
    elif _under(cfg.data.backgrounds, DEMO_DIR):   # the demo backgrounds with data of one's own
        from .data.synthetic import make_demo_data

        make_demo_data(data_root(cfg) / DEMO_DIR, seed=0)
    problem = data_root_problem(cfg)
    if problem:
        raise InputNotFoundError(problem)
    check_backgrounds(cfg)


def _under(value: Any, folder: str) -> bool:
    return bool(value) and not Path(str(value)).is_absolute() and Path(str(value)).parts[:1] == (folder,)


def check_lock(cfg: Config, run_dir: Path, force: bool, quiet: bool) -> None:
    """Refuse a run folder another live process holds (``force``: take its lock over)."""
    from .runlock import RunLock, read_lock

    if not run_dir.is_dir() or read_lock(run_dir) is None:
        return
    lock = RunLock.for_config(run_dir, cfg, force=force)
    with lock:
        if lock.note and not quiet:
            print(f"[{run_dir.name}] {lock.note}", flush=True)


def _save_doctor(cfg: Config, run_dir: Path, quiet: bool) -> Path | None:
    """``run_dir/doctor.json``: the doctor report for this run's config (never stops the run)."""
    try:
        from .doctor import doctor, to_json

        return drive.write_text(run_dir / DOCTOR_FILE, to_json(doctor(cfg, timeout=2.0)))
    except Exception as e:  # noqa: BLE001 - a report, not a precondition
        if not quiet:
            print(f"[{run_dir.name}] doctor report not saved: {type(e).__name__}: {e}", flush=True)
        return None


def _record_failure(result: PipelineResult, notebook: str, e: Exception) -> None:
    """Fill in ``result`` from papermill's error: the notebook, the cell, the error and its traceback."""
    result.ok = False
    result.failed_notebook = notebook
    result.failed_cell = getattr(e, "exec_count", None)
    result.failed_cell_index = getattr(e, "cell_index", None)
    result.failed_source = getattr(e, "source", None)
    ename = getattr(e, "ename", None) or type(e).__name__
    evalue = getattr(e, "evalue", None)
    if evalue is None:
        evalue = str(e)
    result.error = strip_ansi(f"{ename}: {evalue}".strip())
    tb = getattr(e, "traceback", None)
    if tb:
        result.traceback = strip_ansi("\n".join(tb))


def _kernel_name() -> str:
    """The Jupyter kernel of this interpreter (ipykernel installs ``python3`` into sys.prefix)."""
    return os.environ.get("MATTINGKIT_KERNEL", "python3")


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------
def sweep_points(grid: Mapping[str, list]) -> list[dict[str, Any]]:
    """The cartesian product of a ``{key: [values]}`` grid, in a stable order."""
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise UsageError(f"sweep grid entry {k!r} must be a non-empty list of values")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(index: int, point: Mapping[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in point.items()]
    return safe_name(f"{index:02d}_" + "_".join(parts))


@dataclass
class SweepResult:
    ok: bool
    sweep_dir: Path
    rows: list[dict[str, Any]]
    results_csv: Path | None = None
    results_md: Path | None = None
    plot: Path | None = None


def sweep_parameters(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook parameters of a sweep's runs: the spec's ``parameters``, and ``copy_submission=False``
    when notebook 05 runs (a sweep's CSVs stay in their run folders) unless the spec says otherwise.

    Example:
        >>> sweep_parameters({"grid": {}}), sweep_parameters({"notebooks": ["01"], "parameters": {"n_preview": 2}})
        ({'copy_submission': False}, {'n_preview': 2})
    """
    params = dict(spec.get("parameters") or {})
    if any(n.startswith("05") for n in select_notebooks(spec.get("notebooks"))):
        params.setdefault("copy_submission", False)
    return params


SWEEP_KEYS = ("name", "config", "smoke", "overrides", "notebooks", "metric", "mode", "grid", "parameters")


def load_sweep(grid_yaml: str | os.PathLike) -> dict[str, Any]:
    """A sweep file read with :func:`mattingkit.config.load_yaml` (only true/false are booleans, so
    ``amp: [off, bf16]`` stays strings); unknown top-level keys, a missing ``grid`` or a ``mode`` other
    than min/max are one :class:`~mattingkit.errors.UsageError` listing them all."""
    from .config import load_yaml

    path = Path(grid_yaml)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: sweep file not found")
    spec = load_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec, Mapping):
        raise UsageError(f"{path}: a sweep file is a mapping (name, config, grid, ...), got {type(spec).__name__}")
    problems = []
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        problems.append(f"unknown sweep keys {unknown} (valid: {', '.join(SWEEP_KEYS)})")
    if "grid" not in spec:
        problems.append("a sweep needs a 'grid' mapping of section.key: [values]")
    if spec.get("mode", "min") not in ("min", "max"):
        problems.append(f"mode {spec.get('mode')!r}: choose min (lower is better) or max (higher is better)")
    if problems:
        raise UsageError(f"{path}: " + "; ".join(problems))
    return dict(spec)


def run_sweep(grid_yaml: str | os.PathLike, runs_root: str | os.PathLike | None = None,
              quiet: bool = False) -> SweepResult:
    """Run every point of a sweep file; skip finished runs; continue past failures; tabulate metrics.

    The whole file is checked before the first point runs and before anything is written
    (:func:`load_sweep`, then :func:`mattingkit.choices.validate_grid`: every misspelled grid key, wrong
    value or unknown ``metric`` in one error; then the background folder).

    Each point is a run folder ``runs_root/<sweep name>/<NN_key=value_...>/``; a folder with a ``DONE``
    marker (all its notebooks succeeded) is skipped on a re-run. The submission CSV of a sweep run stays
    in its run folder (``copy_submission=False``) unless ``parameters`` say otherwise. Writes
    ``results.csv`` (every flattened metric), ``results.md`` (the grid keys, status and main metric)
    and ``results.png`` (the main metric per run).

    The YAML file::

        name: lr_norm              # sweep folder under runs_root
        config: demo               # base config
        smoke: true                # optional
        overrides: [train.steps=20]
        notebooks: ["01", "02", "03", "04"]   # optional subset
        metric: 04_inference.sad   # main metric (a flattened key of metrics.json)
        mode: min
        parameters: {n_preview: 2}  # optional notebook-specific parameters
        grid:
          train.lr_g: [1.0e-4, 5.0e-4]
          model.norm: [bn, gn]
    """
    spec, name, config = _read_sweep(grid_yaml)
    base = resolve_config(config, list(spec.get("overrides") or []), bool(spec.get("smoke", False)))
    check_run_inputs(base, quiet=quiet)
    params = sweep_parameters(spec)
    sweep_dir = resolve_runs_root(base, runs_root) / name   # honours the base config's run.runs_root
    sweep_dir.mkdir(parents=True, exist_ok=True)
    statuses = {}
    for i, point in enumerate(sweep_points(spec["grid"])):
        run_name = point_name(i, point)
        run_dir = sweep_dir / run_name
        status = "skipped (done)"
        if not (run_dir / DONE_MARKER).exists():
            overrides = list(spec.get("overrides") or []) + [f"{k}={json.dumps(v)}" for k, v in point.items()]
            try:
                res = run_pipeline(config, overrides, name=run_name, runs_root=sweep_dir,
                                   smoke=bool(spec.get("smoke", False)), notebooks=spec.get("notebooks"),
                                   quiet=quiet, parameters=params)
                if res.interrupted:   # Ctrl-C stops the sweep; a re-run skips the finished points
                    raise Interrupted(f"{res.interrupted} (sweep point {run_name}; finished points are skipped)")
                status = "ok" if res.ok else (f"failed: {res.failed_notebook} In [{res.failed_cell}]: "
                                              f"{res.error}")
            except Exception as e:  # a broken point never stops the sweep
                status = f"failed: {type(e).__name__}: {e}"
                if not quiet:
                    traceback.print_exc()
        statuses[run_name] = status
    return _sweep_result(spec, sweep_dir, statuses, f"sweep {name}", quiet)


def _read_sweep(grid_yaml: str | os.PathLike) -> tuple[dict[str, Any], str, str]:
    """A sweep file read and checked for both sweeps (local and Kaggle): its spec (:func:`load_sweep`, the
    grid validated against the base config, the ``parameters`` against the notebooks:
    :func:`check_notebook_parameters`), the sweep folder's name and the base config (a config file
    named relative to the sweep file resolved against it)."""
    spec = load_sweep(grid_yaml)
    name = safe_name(spec.get("name") or Path(grid_yaml).stem)
    config = spec.get("config", DEFAULT_CONFIG)
    cfg_path = Path(grid_yaml).parent / str(config)
    if Path(str(config)).suffix and not Path(str(config)).is_absolute() and cfg_path.exists():
        config = str(cfg_path.resolve())  # a config file named relative to the sweep file
    validate_grid(spec["grid"], metric=spec.get("metric"), config=config, overrides=list(spec.get("overrides") or []))
    check_notebook_parameters(sweep_parameters(spec), spec.get("notebooks"))
    return spec, name, config


def _sweep_result(spec: Mapping[str, Any], sweep_dir: Path, statuses: Mapping[str, str], label: str,
                  quiet: bool) -> SweepResult:
    """Both sweeps' table: a row per grid point (its status, ``failed: not run`` when it has none, then the
    numbers of its ``metrics.json``), ``results.csv/.md/.png`` written, one summary line."""
    rows = []
    for i, point in enumerate(sweep_points(spec["grid"])):
        run_name = point_name(i, point)
        row = {"run": run_name, **point, "status": statuses.get(run_name, "failed: not run")}
        row.update({k: v for k, v in flatten(read_metrics(sweep_dir / run_name)).items()
                    if isinstance(v, (int, float, str))})
        rows.append(row)
    result = SweepResult(ok=all(r["status"] == "ok" or r["status"].startswith("skipped") for r in rows),
                         sweep_dir=sweep_dir, rows=rows)
    _write_sweep_tables(result, spec.get("metric"), spec.get("mode", "min"), list(spec["grid"]))
    if not quiet:
        print(f"{label}: {sum(r['status'].startswith('failed') for r in rows)} failed of {len(rows)}; "
              f"results: {result.results_csv}", flush=True)
    return result


def round_sig(v: Any, digits: int = 4) -> Any:
    """A float rounded to ``digits`` significant digits (other values unchanged).

    Example:
        >>> round_sig(12.34567), round_sig(0.000123456), round_sig(3), round_sig("ok")
        (12.35, 0.0001235, 3, 'ok')
    """
    if isinstance(v, float) and v == v and v not in (float("inf"), float("-inf")) and v != 0:
        return float(f"{v:.{digits}g}")
    return v


def _write_sweep_tables(result: SweepResult, metric: str | None, mode: str, keys: list[str]) -> None:
    import pandas as pd

    df = pd.DataFrame(result.rows)
    result.results_csv = result.sweep_dir / "results.csv"
    drive.write_text(result.results_csv, df.map(round_sig).to_csv(index=False))
    cols = ["run", *keys, "status"] + ([metric] if metric and metric in df.columns else [])
    view = df[cols].copy()
    if metric and metric in df.columns:
        view = view.sort_values(metric, ascending=(mode == "min"), na_position="last")
    better = "lower" if mode == "min" else "higher"
    head = (f"Sweep `{result.sweep_dir.name}`: main metric `{metric}` ({better} is better; best first). "
            if metric else f"Sweep `{result.sweep_dir.name}` (no `metric:` given). ")
    lines = [head + "Numbers rounded to 4 significant digits; every metric is in results.csv.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in view.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    result.results_md = result.sweep_dir / "results.md"
    drive.write_text(result.results_md, "\n".join(lines) + "\n")
    if metric and metric in df.columns and df[metric].notna().any():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(df) + 2), 3.2))
        vals = pd.to_numeric(df[metric], errors="coerce")
        ax.bar(range(len(df)), vals.fillna(0), color=["C0" if s == "ok" or s.startswith("skipped") else "C3"
                                                        for s in df["status"]])
        ax.set_xticks(range(len(df)), df["run"], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(metric)
        ax.set_title(f"{result.sweep_dir.name}: {metric} ({better} is better)")
        fig.tight_layout()
        result.plot = result.sweep_dir / "results.png"
        fig.savefig(result.plot, dpi=100)
        plt.close(fig)


def _fmt(v: Any) -> str:
    """A results-table cell: :func:`mattingkit.run.fmt_value`, on one line, Markdown-safe."""
    from .run import fmt_value

    text = " ".join(fmt_value(v).split())  # one line per table row
    return text.replace("|", "\\|")[:160]


# --------------------------------------------------------------------------------------------
# Sweeps on Kaggle: one kernel per grid point
# --------------------------------------------------------------------------------------------
_KERNEL_STOPPED = ("error", "cancel_acknowledged", "cancel_requested")


def run_sweep_on_kaggle(grid_yaml: str | os.PathLike, runs_root: str | os.PathLike | None = None, *,  # noqa: PLR0915 - the push / follow / pull loop of one sweep, read as one piece
                        max_parallel: int = 2, poll_s: float = 30.0, quiet: bool = False, sleep=time.sleep,
                        **kernel: Any) -> SweepResult:
    """:func:`run_sweep` with every point run as its own Kaggle kernel (:mod:`mattingkit.kaggle`): pushed up
    to ``max_parallel`` at a time, followed every ``poll_s`` seconds, pulled into the same
    ``runs_root/<sweep>/<point>/`` folders, then the same ``results.csv/.md/.png``.

    The sweep file is checked as for a local sweep before anything is pushed. A point already pulled
    (``DONE`` + ``kaggle_source.json``) is skipped; one pushed earlier and still queued or running is
    followed rather than pushed again. A kernel that fails is reported with its log's tail and the others
    go on. ``kernel`` holds the kernel settings (``accelerator``, ``internet``, ``repo_url``, ``repo_ref``,
    ``wheel_dataset``). Each kernel's slug is ``mattingkit-<sweep>-<point>``.
    """
    from collections import deque

    from . import kaggle
    from .errors import MattingKitError
    from .run import resolve_run

    if int(max_parallel) < 1:
        raise UsageError(f"--max-parallel must be at least 1, got {max_parallel}")
    spec, name, config = _read_sweep(grid_yaml)
    base_overrides = list(spec.get("overrides") or [])
    smoke = bool(spec.get("smoke", False))
    base = resolve_config(config, base_overrides, smoke)
    params = [f"{k}={json.dumps(v)}" for k, v in sweep_parameters(spec).items()]
    sweep_dir = resolve_runs_root(base, runs_root) / name
    points = sweep_points(spec["grid"])
    notebooks = select_notebooks(spec.get("notebooks")) if spec.get("notebooks") else None
    kernels = {}   # run name -> KernelRun, every point checked before the first push
    for i, point in enumerate(points):
        run_name = point_name(i, point)
        overrides = base_overrides + [f"{k}={json.dumps(v)}" for k, v in point.items()]
        cfg, _ = resolve_run(config, overrides, run_name, sweep_dir, smoke)
        kr = kaggle.kernel_run_from_config(cfg, str(config), run_name, overrides=overrides, params=params,
                                           smoke=smoke, notebooks=notebooks,
                                           slug=kaggle.kernel_slug(f"{name} {run_name}"), **kernel)
        kaggle.check_travelling_config(kr, overrides)
        kernels[run_name] = kr
    sweep_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    queue, active = deque(), set()
    for run_name in kernels:
        run_dir = sweep_dir / run_name
        if (run_dir / DONE_MARKER).exists() and (run_dir / kaggle.SOURCE_FILE).exists():
            status[run_name] = "skipped (pulled)"
        elif (sweep_dir / kaggle.PUSH_RECORDS / f"{run_name}.json").exists() and \
                kaggle.kernel_status(run_name, sweep_dir, with_log=False).status not in _KERNEL_STOPPED:
            active.add(run_name)     # pushed by an earlier call: follow it
        else:
            queue.append(run_name)
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    while queue or active:
        while queue and len(active) < int(max_parallel):
            run_name = queue.popleft()
            try:
                kaggle.push_kernel(kernels[run_name], sweep_dir, quiet=quiet)
                active.add(run_name)
            except kaggle.KernelError as e:
                if e.kind in ("no_credentials", "auth", "offline"):
                    raise
                status[run_name] = f"failed: push: {e}"
                say(f"[{run_name}] {status[run_name]}")
        if not active:
            break
        sleep(poll_s)
        for run_name in sorted(active):
            try:
                st = kaggle.kernel_status(run_name, sweep_dir)
            except kaggle.KernelError as e:
                if e.kind in ("no_credentials", "auth", "offline"):
                    raise
                status[run_name] = f"failed: status: {e}"
                active.discard(run_name)
                continue
            if st.status == "complete":
                try:
                    kaggle.pull_kernel(run_name, sweep_dir, quiet=quiet)
                    status[run_name] = "ok"
                except MattingKitError as e:
                    status[run_name] = f"failed: pull: {e}"
            elif st.status in _KERNEL_STOPPED:
                last = st.log_tail.splitlines()[-1] if st.log_tail else st.failure
                status[run_name] = f"failed: kernel {st.ref} {st.status}: {last}"
                say(f"[{run_name}] kernel {st.ref} {st.status}; log (last lines):\n{st.log_tail}")
            else:
                continue
            active.discard(run_name)
            say(f"[{run_name}] {status[run_name]}")
    return _sweep_result(spec, sweep_dir, status, f"sweep {name} on Kaggle", quiet)

"""The run folder: where a run's roots, config, manifest and records are resolved, once.

A run is one folder ``<runs root>/NAME/`` holding the resolved ``config.yaml``, ``manifest.csv``,
``metrics.json`` (one section per notebook), the trainer's ``metrics.jsonl`` history, checkpoints and
predictions. Everything that decides *where* something is lives here:

- roots: :func:`data_root` and :func:`runs_root` (``run.data_root`` / ``run.runs_root`` in the config, else
  the platform's: Drive on Colab, ``/kaggle/working`` on Kaggle; see :mod:`mattingkit.env`), and
  :func:`data_path` for a dataset path of the config (attached Kaggle inputs are used in place);
- :func:`prepare_run` resolves a config (name + dotted overrides + smoke budgets), creates the folder and
  writes ``config.yaml`` -- once: reopening the run with the same config leaves the file alone, and
  ``mattingkit run`` hands every notebook the saved file;
- :func:`ensure_data` (demo data generated on first use, configured Kaggle sources) and
  :func:`ensure_manifest` / :func:`load_manifest` (``data.manifest``, else ``manifest.csv`` scanned into
  the run folder when missing);
- :func:`read_metrics` / :func:`update_metrics` (``metrics.json``), :func:`read_history` and
  :class:`HistoryLog` (``metrics.jsonl``: appends that survive a Google Drive hiccup).

Example:
    >>> import tempfile
    >>> ctx = prepare_run("demo", ["train.steps=5"], run_name="x", runs_root=tempfile.mkdtemp())
    >>> ctx.cfg.train.steps, (ctx.run_dir / "config.yaml").exists()
    (5, True)
"""
from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import drive, env
from .config import Config, apply_overrides, load_config, to_yaml
from .io import atomic_write_text

PathLike = str | os.PathLike

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "metrics.jsonl"
MANIFEST_FILE = "manifest.csv"
#: ``data.root`` below this folder of the data root means the embedded demo data (made on first use).
DEMO_DIR = "demo"

#: Budgets applied on top of any config when ``smoke=True`` (CI: every notebook in a minute or two).
SMOKE_OVERRIDES: dict[str, Any] = {
    "run.smoke": True,
    "train.steps": 12,
    "train.warmup_steps": 2,
    "train.g_warmup_steps": 4,
    "train.log_every": 2,
    "train.image_every": 6,
    "train.val_every": 6,
    "train.ckpt_every": 6,
    "data.num_workers": 0,
    "data.val_limit": 2,
}


# --------------------------------------------------------------------------------------------
# Roots and paths
# --------------------------------------------------------------------------------------------
def data_root(cfg: Config | None = None) -> Path:
    """Where datasets are downloaded / generated: ``run.data_root``, else the platform's."""
    return env.data_root_for(cfg)


def runs_root(cfg: Config | None = None, explicit: PathLike | None = None) -> Path:
    """Where run folders live: ``explicit``, else ``run.runs_root``, else the platform's."""
    return env.runs_root_for(cfg, explicit)


def default_run_dir(cfg: Config) -> Path:
    """``<runs root>/<run.name>``."""
    return runs_root(cfg) / cfg.run.name


def data_path(cfg: Config, rel: PathLike | None) -> Path | None:
    """A dataset path of the config (``data.root``, ``submission.test_dir``, ...): absolute as is, else
    below the data root, or an attached Kaggle input of that name; ``None`` for an empty setting."""
    if not rel:
        return None
    from .data.layouts import resolve_data_path

    return resolve_data_path(rel, cfg)


def safe_name(text: str) -> str:
    """A folder name that is safe on Drive/Windows/Kaggle: no colons, slashes or spaces.

    Example:
        >>> safe_name("lr=1e-4 / bn:gn")
        'lr=1e-4_bn_gn'
    """
    s = re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("._")
    return s[:120] or "run"


# --------------------------------------------------------------------------------------------
# The run folder and its config
# --------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """A prepared run: its config, its folder and the data root its relative dataset paths are under."""

    cfg: Config
    run_dir: Path
    data_root: Path

    @property
    def name(self) -> str:
        return self.run_dir.name

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)


def resolve_config(config: PathLike | Config, overrides: Iterable[str] | Mapping[str, Any] | None = None,
                   smoke: bool = False) -> Config:
    """Config name/path/object + dotted overrides; ``smoke`` applies :data:`SMOKE_OVERRIDES` first (not
    again to a config that already is a smoke config: ``run.smoke`` true, e.g. a smoke run's saved file).

    Example:
        >>> cfg = resolve_config("demo", ["train.steps=7"], smoke=True)
        >>> cfg.train.steps, cfg.train.val_every, resolve_config(cfg, smoke=True).train.steps
        (7, 6, 7)
    """
    cfg = config.copy() if isinstance(config, Config) else load_config(config)
    if smoke and not cfg.run.smoke:
        cfg = apply_overrides(cfg, SMOKE_OVERRIDES)
    return apply_overrides(cfg, overrides) if overrides else cfg


def save_run_config(cfg: Config, run_dir: PathLike) -> bool:
    """Write ``run_dir/config.yaml`` unless it already holds exactly this config; True when written."""
    path = Path(run_dir) / CONFIG_FILE
    text = to_yaml(cfg)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    atomic_write_text(path, text)
    return True


def resolve_run(config: PathLike | Config = "demo", overrides: Iterable[str] | Mapping[str, Any] | None = None,
                run_name: str | None = None, runs_root: PathLike | None = None,
                smoke: bool = False) -> tuple[Config, Path]:
    """``(config, run folder)`` of a run, resolved and checked, **nothing written** (a refused config
    or override raises before any folder exists).

    Example:
        >>> cfg, run_dir = resolve_run("demo", run_name="not made", runs_root="/nonexistent/runs")
        >>> cfg.run.name, run_dir, run_dir.exists()
        ('not_made', PosixPath('/nonexistent/runs/not_made'), False)
    """
    cfg = resolve_config(config, overrides, smoke)
    name = safe_name(run_name or cfg.run.name)
    if name != cfg.run.name:
        cfg = apply_overrides(cfg, {"run.name": name})
    return cfg, _runs_root(cfg, runs_root) / name


def prepare_run(config: PathLike | Config = "demo", overrides: Iterable[str] | Mapping[str, Any] | None = None,
                run_name: str | None = None, runs_root: PathLike | None = None, smoke: bool = False,
                save: bool = True) -> RunContext:
    """Resolve the config and create the run folder ``runs_root/run_name``; save ``config.yaml`` there
    (only when it changes). What every notebook calls after its ``parameters`` cell; ``mattingkit run``
    passes the run's saved ``config.yaml`` as ``config``, so the notebooks load it instead of resolving
    the config again.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> ctx = prepare_run("demo", ["train.steps=5"], run_name="a b", runs_root=root)
        >>> again = prepare_run(ctx.path("config.yaml"), run_name="a_b", runs_root=root)
        >>> ctx.name, again.cfg == ctx.cfg
        ('a_b', True)
    """
    cfg, run_dir = resolve_run(config, overrides, run_name, runs_root, smoke)
    run_dir.mkdir(parents=True, exist_ok=True)
    if save:
        save_run_config(cfg, run_dir)
    return RunContext(cfg=cfg, run_dir=run_dir, data_root=data_root(cfg))


_runs_root = runs_root  # prepare_run's parameter shadows the function


# --------------------------------------------------------------------------------------------
# Data and manifest
# --------------------------------------------------------------------------------------------
def is_demo_config(cfg: Config) -> bool:
    """True when the config's dataset lives in the embedded demo data (``data.root`` = ``demo/...``).

    Example:
        >>> from mattingkit.config import load_config
        >>> is_demo_config(load_config("demo")), is_demo_config(load_config("ecom"))
        (True, False)
    """
    root = Path(cfg.data.root)
    return not root.is_absolute() and root.parts[:1] == (DEMO_DIR,)


#: Data the kit generates itself, by the first folder of ``data.root``: folder -> (module, function(root, seed)).
GENERATED_DATA = {DEMO_DIR: (".data.synthetic", "make_demo_data"),
                  "photoreal": (".data.photoreal", "make_photoreal_data")}


def generated_source(cfg: Config) -> str | None:
    """The generated dataset a config trains on (``demo``, ``photoreal``), or ``None`` for real data.

    Example:
        >>> from mattingkit.config import load_config
        >>> [generated_source(load_config(name)) for name in ("demo", "cpu", "ecom")]
        ['demo', 'photoreal', None]
    """
    root = Path(cfg.data.root)
    if root.is_absolute() or not root.parts or root.parts[0] not in GENERATED_DATA:
        return None
    return root.parts[0]


def ensure_data(cfg: Config, download: bool = True) -> dict[str, str]:
    """Make the config's data available: the demo data is generated when the config points at it and
    it is missing (likewise the photo-like data of the ``cpu`` recipe, :data:`GENERATED_DATA`); Kaggle sources (``data.kaggle_competition`` / ``kaggle_datasets``) are used from
    ``/kaggle/input`` or downloaded (credentials from the environment) when ``download``.

    Returns ``{what: folder}`` for what it made available.
    """
    source = generated_source(cfg)
    if source is not None:
        module, function = GENERATED_DATA[source]
        make = getattr(importlib.import_module(module, __package__), function)
        root = data_root(cfg) / source
        summary = make(root, seed=0)  # a no-op when already there (checked by its marker)
        if summary.get("created"):
            print(f"{source} data written to {root} ({summary.get('seconds', 0):.1f}s): {summary.get('counts')}")
        return {source: str(root)}
    if download and (cfg.data.kaggle_competition or cfg.data.kaggle_datasets):
        from .data.download import ensure_config_data

        return {k: str(v) for k, v in ensure_config_data(cfg).items()}
    return {}


def manifest_path(cfg: Config, run_dir: PathLike) -> Path:
    """``data.manifest`` (resolved like every dataset path) when set, else ``run_dir/manifest.csv``."""
    return data_path(cfg, cfg.data.manifest) if cfg.data.manifest else Path(run_dir) / MANIFEST_FILE


def ensure_manifest(cfg: Config, run_dir: PathLike, download: bool = False) -> Path:
    """The run's manifest path; when the run scans its own (no ``data.manifest``) and it is missing,
    the data is made available (:func:`ensure_data`) and scanned into it."""
    path = manifest_path(cfg, run_dir)
    if not cfg.data.manifest and not path.exists():
        from .data.layouts import build_manifest

        ensure_data(cfg, download=download)
        build_manifest(cfg, path)
    return path


def load_manifest(cfg: Config, run_dir: PathLike, download: bool = True):
    """The run's manifest as a DataFrame (:func:`ensure_manifest`, then read)."""
    from .data.manifest import read_manifest

    return read_manifest(ensure_manifest(cfg, run_dir, download=download))


def build_run_manifest(cfg: Config, run_dir: PathLike):
    """``(manifest, validation report)`` of the run, written to ``run_dir/manifest.csv``: the given
    ``data.manifest`` validated and copied, else the dataset layout scanned and validated."""
    from .data.layouts import build_manifest, validate
    from .data.manifest import read_manifest, write_manifest

    out = Path(run_dir) / MANIFEST_FILE
    if not cfg.data.manifest:
        return build_manifest(cfg, out)
    given = read_manifest(data_path(cfg, cfg.data.manifest))
    report = validate(given, check_pixels=cfg.data.check_pixels)
    write_manifest(given, out)
    return given, report


def scan_test_images(cfg: Config):
    """The competition test images (``submission.test_dir``) as manifest rows, or None without them."""
    test_dir = data_path(cfg, cfg.submission.test_dir)
    if test_dir is None or not test_dir.is_dir():
        return None
    from .data.layouts import scan_competition_test

    return scan_competition_test(test_dir)


def count_backgrounds(cfg: Config) -> int | None:
    """Images in the background pool (``data.backgrounds``); None when none is configured or found."""
    folder = data_path(cfg, cfg.data.backgrounds)
    if folder is None or not folder.is_dir():
        return None
    from .data.layouts import list_backgrounds

    try:
        return len(list_backgrounds(folder))
    except ValueError:  # fewer than the minimum
        return 0


# --------------------------------------------------------------------------------------------
# Records: metrics.json (one section per notebook) and metrics.jsonl (the training history)
# --------------------------------------------------------------------------------------------
def read_metrics(run_dir: PathLike) -> dict[str, Any]:
    """``run_dir/metrics.json`` as a dict (empty when absent)."""
    p = Path(run_dir) / METRICS_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def update_metrics(run_dir: PathLike, section: str, values: Mapping[str, Any]) -> Path:
    """Merge ``values`` into ``run_dir/metrics.json`` under ``section`` (atomic write).

    Example:
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp(); _ = update_metrics(d, "04", {"sad": np.float32(1.5)})
        >>> read_metrics(d)
        {'04': {'sad': 1.5}}
    """
    data = read_metrics(run_dir)
    data.setdefault(section, {}).update(jsonable(values))
    return atomic_write_text(Path(run_dir) / METRICS_FILE, json.dumps(data, indent=2, sort_keys=True))


def jsonable(x: Any) -> Any:
    """Mappings, sequences, paths and NumPy scalars -> plain JSON values."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        try:
            return x.item()
        except (ValueError, TypeError):
            pass
    return x


def read_history(path: PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a torn last line from a crash is ignored).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "m.jsonl"; _ = p.write_text('{"step": 1}\\n{"st')
        >>> read_history(p)
        [{'step': 1}]
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class HistoryLog:
    """Appends records to a ``metrics.jsonl``, one JSON line each, tolerant of a flaky file system.

    A failing append (a Google Drive hiccup) is retried (:func:`mattingkit.drive.retry`); when it still
    fails the record waits in memory, one :class:`~mattingkit.drive.DriveWarning` is given, and the waiting
    records are written, in order, with the next append that works. A line torn by a failed append is
    closed first, so it stays one unreadable line that :func:`read_history` skips.

    Example:
        >>> import tempfile
        >>> log = HistoryLog(Path(tempfile.mkdtemp()) / "metrics.jsonl")
        >>> log.append({"step": 1}), log.append({"step": 2, "loss": float("nan")})
        (True, True)
        >>> [r["step"] for r in read_history(log.path)]
        [1, 2]
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.pending: list[str] = []
        self.trouble = drive.Trouble()
        self._maybe_torn = False

    def append(self, record: Mapping[str, Any]) -> bool:
        """Append ``record``; False when it (and the records before it that failed) waits in memory."""
        self.pending.append(json.dumps(record, allow_nan=True) + "\n")
        try:
            drive.retry(self._write, "".join(self.pending))
        except OSError as e:
            self.trouble.failed("history", e, f"appending to {self.path}",
                                f"{len(self.pending)} record(s) wait in memory and are written with the next one")
            return False
        self.pending.clear()
        self.trouble.ok("history", f"appending to {self.path}")
        return True

    def _write(self, text: str) -> None:
        prefix = "\n" if self._maybe_torn else ""
        self._maybe_torn = True
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(prefix + text)
            f.flush()
        self._maybe_torn = False


# --------------------------------------------------------------------------------------------
# Files of a run: checkpoints, the submission's destination, a summary of metrics.json
# --------------------------------------------------------------------------------------------
def find_checkpoint(run_dir: PathLike, which: str = "best") -> Path:
    """``"best"`` (``last.pt`` when no validation produced a best), ``"last"``, or a path (relative to
    the run folder or absolute); a missing file is an :class:`~mattingkit.errors.InputNotFoundError`."""
    from .errors import InputNotFoundError

    ck = Path(run_dir) / "checkpoints"
    if which in ("best", "last"):
        p = ck / f"{which}.pt"
        if which == "best" and not p.exists() and (ck / "last.pt").exists():
            print("no best.pt (no validation yet): using last.pt")
            p = ck / "last.pt"
    else:
        p = Path(which)
        if not p.is_absolute():
            p = Path(run_dir) / p
    if not p.exists():
        raise InputNotFoundError(f"{p}: checkpoint not found (train first: notebook 03, or set `checkpoint`)")
    return p


#: ``submission.name``'s default: "not set", the run's name is used instead.
DEFAULT_SUBMISSION_NAME = "submission"
#: Suffix of a smoke run's submission file (a smoke run never overwrites a full run's CSV).
SMOKE_SUFFIX = ".smoke"


def submission_name(cfg: Config, run_dir: PathLike | None = None) -> str:
    """The file stem of a run's published CSV: ``submission.name`` when the user set it, else the run's
    name (its folder); ``<stem>.smoke`` for a smoke run, so a smoke run never replaces a full run's file.

    Example:
        >>> from mattingkit.config import load_config
        >>> submission_name(load_config("demo"), "runs/ux_smoke")
        'ux_smoke'
        >>> submission_name(load_config("demo", ["run.smoke=true"]), "runs/demo")
        'demo.smoke'
        >>> submission_name(load_config("demo", ["submission.name=mine"]), "runs/x")
        'mine'
    """
    name = cfg.submission.name
    if not name or name == DEFAULT_SUBMISSION_NAME:
        name = Path(run_dir).name if run_dir else cfg.run.name
    return safe_name(name) + (SMOKE_SUFFIX if cfg.run.smoke else "")


def submission_destination(cfg: Config, run_dir: PathLike, submission_dir: PathLike | None = None) -> Path:
    """Where the final CSV is published (the run folder always keeps its own ``submission.csv``):
    ``submission_dir/<name>.csv`` when given; on Kaggle ``/kaggle/working/submission.csv`` (the name
    Kaggle expects; ``submission.smoke.csv`` for a smoke run); else ``<repo>/submissions/<name>.csv``
    (without a checkout: ``submissions/`` beside the runs root), ``<name>`` from :func:`submission_name`
    (the run's name unless ``submission.name`` is set; ``.smoke`` added for smoke runs).

    Example:
        >>> from mattingkit.config import load_config
        >>> submission_destination(load_config("demo"), "runs/ux_smoke", "/tmp/subs").as_posix()
        '/tmp/subs/ux_smoke.csv'
    """
    name = f"{submission_name(cfg, run_dir)}.csv"
    if submission_dir:
        return Path(submission_dir) / name
    if env.detect_platform() == "kaggle":
        return env.KAGGLE_WORKING / ("submission" + (SMOKE_SUFFIX if cfg.run.smoke else "") + ".csv")
    root = env.repo_root()
    return (root / "submissions" / name) if root else Path(run_dir).parent.parent / "submissions" / name


def metrics_summary(run_dir: PathLike, per_section: int = 8) -> str:
    """A short text table of every section's headline numbers from ``metrics.json``.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); _ = update_metrics(d, "04_inference", {"sad": 12.3456, "images": 2})
        >>> print(metrics_summary(d))
        04_inference: images=2, sad=12.35
    """
    out = []
    for section, vals in read_metrics(run_dir).items():
        if isinstance(vals, dict):
            keys = [k for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out.append(f"{section}: " + ", ".join(f"{k}={vals[k]:.4g}" if isinstance(vals[k], float)
                                                  else f"{k}={vals[k]}" for k in keys[:per_section]))
    return "\n".join(out)


__all__ = [
    "CONFIG_FILE", "DEMO_DIR", "HistoryLog", "build_run_manifest", "count_backgrounds", "scan_test_images", "HISTORY_FILE", "METRICS_FILE", "RunContext", "SMOKE_OVERRIDES", "data_path",
    "data_root", "default_run_dir", "ensure_data", "ensure_manifest", "find_checkpoint", "is_demo_config",
    "jsonable", "load_manifest", "manifest_path", "metrics_summary", "prepare_run", "read_history",
    "read_metrics", "resolve_config", "resolve_run", "runs_root", "safe_name", "save_run_config",
    "submission_destination", "submission_name",
    "update_metrics",
]

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
- a run folder is bound to its config (:func:`save_run_config`): a key that changes training is refused
  once the folder holds outputs (``fresh`` starts over), the keys of :data:`RESUME_SAFE` (more steps,
  intervals, inference settings) are accepted and logged in ``config_history.jsonl``, and a
  ``metrics.json`` section whose inputs changed is removed until its notebook redoes it;
- :func:`ensure_data` (demo data generated on first use, configured Kaggle sources) and
  :func:`ensure_manifest` / :func:`load_manifest` (``data.manifest``, else ``manifest.csv`` scanned into
  the run folder when missing);
- :func:`read_metrics` / :func:`update_metrics` (``metrics.json``), :func:`read_history` and
  :class:`HistoryLog` (``metrics.jsonl``: appends that survive a Google Drive hiccup). The folder's records
  are read and written through :mod:`mattingkit.drive`'s retries; a read that keeps failing raises, naming
  the file, and is never taken for a missing file (which would make valid records look stale).

Example:
    >>> import tempfile
    >>> ctx = prepare_run("demo", ["train.steps=5"], run_name="x", runs_root=tempfile.mkdtemp())
    >>> ctx.cfg.train.steps, (ctx.run_dir / "config.yaml").exists()
    (5, True)
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import drive, env
from .config import DEFAULT_CONFIG, Config, apply_overrides, load_config, to_yaml

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
    from .choices import config_problems  # every key's choices, one floor up (imports the owners' tables)

    cfg = config.copy() if isinstance(config, Config) else load_config(config, check=config_problems)
    if smoke and not cfg.run.smoke:
        cfg = apply_overrides(cfg, SMOKE_OVERRIDES, check=config_problems)
    return apply_overrides(cfg, overrides or {}, check=config_problems)


#: The one table of what may change in a run folder that already holds outputs: a config key (or a whole
#: section) that is safe to change when a run continues -> the first notebook whose records it changes
#: (``None``: none; it says where or how fast the run works, not what it computes). A key not listed
#: changes training itself: a run folder with outputs refuses it (:func:`save_run_config`), because its
#: checkpoints, records and predictions were made with the old value.
RESUME_SAFE: dict[str, str | None] = {
    "run.name": None, "run.runs_root": None, "run.data_root": None, "run.device": None,
    "run.require_gpu": None, "run.lock_stale_s": None, "run.checkpoint_local_dir": None,
    "data.num_workers": None, "data.cache": None, "data.check_pixels": None,
    "train.steps": "03",             # more steps: training continues from last.pt
    "train.time_limit_min": "03",    # a session budget
    "train.log_every": "03", "train.image_every": "03", "train.val_every": "03", "train.ckpt_every": "03",
    "train.tensorboard": "03", "train.max_nonfinite": "03", "train.val_at_start": None,
    "train.dist_timeout_s": None,
    "train.amp": "03", "train.channels_last": "03",   # how training fits the device (an OOM's advice)
    "infer": "04",                   # inference settings: notebook 04 and 05 redo their predictions
    "submission": "05",
}
#: Keys that may change together on resume when their product stays: the effective batch (an OOM's advice,
#: :func:`mattingkit.device.oom_message`: halve the batch, double the accumulation).
EFFECTIVE_BATCH = ("data.batch_size", "train.accum_steps")
CONFIG_HISTORY_FILE = "config_history.jsonl"
#: The inputs each notebook section of ``metrics.json`` was computed from (see :func:`update_metrics`).
RECORD_INPUTS_FILE = "metrics_inputs.json"
#: What a fresh start removes from a run folder (names or patterns); every one of them was made under
#: the folder's config, so any of them present (but the executed notebooks and the DONE marker of
#: ``mattingkit run``) binds the folder to ``config.yaml``.
RUN_OUTPUTS = ("checkpoints", "tb", "predictions", "inputs", "decoded", "fg_cache", METRICS_FILE,
               RECORD_INPUTS_FILE, HISTORY_FILE, "train_summary.json", "manifest*.csv",
               "data_report.md", "*.png", "metrics_*.csv", "submission.csv", "submission_validation.txt",
               "notebooks", "DONE")
_NOT_BINDING = ("notebooks", "DONE")
#: Files in the run folder that hold a notebook section's numbers: removed with a stale section.
SECTION_FILES: dict[str, tuple[str, ...]] = {
    "03": ("curves.png",),
    "04": ("metrics_*.csv", "comparison.png", "real_comparison.png"),
    "05": ("submission.csv", "submission_validation.txt", "submission_preview.png", "decoded"),
}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b": value}``.

    Example:
        >>> flatten({"train": {"lr_g": 1e-3, "betas": [0.5, 0.9]}})
        {'train.lr_g': 0.001, 'train.betas': [0.5, 0.9]}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def resume_rule(key: str) -> tuple[bool, str | None]:
    """``(safe to change on resume, first notebook it changes)`` for a dotted key (:data:`RESUME_SAFE`).

    Example:
        >>> resume_rule("train.steps"), resume_rule("infer.tta_flip"), resume_rule("train.lr_g")
        ((True, '03'), (True, '04'), (False, None))
    """
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        k = ".".join(parts[:i])
        if k in RESUME_SAFE:
            return True, RESUME_SAFE[k]
    return False, None


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every dotted key whose value differs.

    Example:
        >>> from mattingkit.config import load_config
        >>> config_changes(load_config("demo"), load_config("demo", ["train.lr_g=5e-4"]))
        {'train.lr_g': (0.001, 0.0005)}
    """
    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _read_record(path: Path, read: Callable[[Path], Any] | None = None) -> Any:
    """``read(path)`` (default: the file's text) of a record of the run folder, or None when the file does
    not exist. The folder may be on Google Drive: a transient error is retried (:func:`mattingkit.drive.retry`)
    and a read that keeps failing raises a :class:`~mattingkit.errors.RunStateError` naming the file, never
    taken for a missing file (that would drop valid records: :func:`prune_stale_records`)."""
    def once(p: Path) -> Any:
        text = p.read_text(encoding="utf-8")   # missing or failing raises here: no is_file() probe (newer
        return text if read is None else read(p)   # Pythons answer False for any OSError)

    try:
        return drive.retry(once, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        from .errors import RunStateError

        why = (f", also after {len(drive.RETRY_DELAYS_S)} retries (a Google Drive hiccup? Run the same command "
               "again when the mount answers)" if drive.is_transient(e) else "")
        raise RunStateError(f"{path}: could not be read ({type(e).__name__}: {e.strerror or e}){why}; not taken "
                            "for a missing file, so no record was removed") from e


def saved_config(run_dir: PathLike) -> Config | None:
    """The run folder's ``config.yaml`` (None when there is none; a read that keeps failing raises)."""
    return _read_record(Path(run_dir) / CONFIG_FILE, load_config)


def _present(run_dir: Path, patterns: Iterable[str]) -> list[Path]:
    return sorted({p for pattern in patterns for p in run_dir.glob(pattern)})


def run_outputs(run_dir: PathLike) -> list[Path]:
    """The outputs in a run folder that bind it to its config (:data:`RUN_OUTPUTS`)."""
    return _present(Path(run_dir), [p for p in RUN_OUTPUTS if p not in _NOT_BINDING])


def _remove(paths: Iterable[Path]) -> list[str]:
    import shutil

    removed = []
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(p.name)
    return removed


def clear_run_outputs(run_dir: PathLike) -> list[str]:
    """Remove what a run made in its folder (:data:`RUN_OUTPUTS`; ``config.yaml``, its history, the lock
    and ``doctor.json`` stay); returns the names removed."""
    return _remove(_present(Path(run_dir), RUN_OUTPUTS))


def _fmt_change(key: str, old: Any, new: Any) -> str:
    return f"{key}: {old!r} -> {new!r}" if isinstance(old, str) or isinstance(new, str) else f"{key}: {old} -> {new}"


def _append_history(run_dir: Path, event: str, changes: Mapping[str, tuple[Any, Any]], **extra: Any) -> None:
    import time

    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event,
              "changes": {k: [old, new] for k, (old, new) in changes.items()}, **extra}
    line = json.dumps(jsonable(record)) + "\n"

    def append() -> None:
        with open(run_dir / CONFIG_HISTORY_FILE, "a", encoding="utf-8") as f:
            f.write(line)

    drive.retry(append)


def save_run_config(cfg: Config, run_dir: PathLike, fresh: bool = False) -> bool:
    """Write ``run_dir/config.yaml``, keeping the run folder true to it; True when written.

    A run folder is bound to the config it was made with. Against the saved ``config.yaml``:

    - no change: nothing is written;
    - only keys of :data:`RESUME_SAFE` changed (more steps, a time limit, intervals, inference and
      submission settings): the file is rewritten, the change appended to ``config_history.jsonl``,
      and the ``metrics.json`` sections that depended on the old values are removed until their
      notebook runs again (:func:`prune_stale_records`);
    - another key changed while the folder holds outputs (:func:`run_outputs`): a
      :class:`~mattingkit.errors.RunStateError` listing each difference (``key: old -> new``) and the
      two ways out: ``fresh`` (``--fresh``), which removes the outputs (:func:`clear_run_outputs`)
      and starts over, or another run name.

    Example:
        >>> import tempfile
        >>> from mattingkit.config import load_config
        >>> d = Path(tempfile.mkdtemp())
        >>> save_run_config(load_config("demo"), d), save_run_config(load_config("demo"), d)
        (True, False)
        >>> _ = (d / "metrics.jsonl").write_text("{}")      # the run has trained: bound to its config
        >>> save_run_config(load_config("demo", ["train.steps=5000"]), d)     # more steps: accepted
        True
        >>> save_run_config(load_config("demo", ["train.lr_g=5e-4", "train.steps=5000"]), d)
        Traceback (most recent call last):
        ...
        mattingkit.errors.RunStateError: ...: train.lr_g: 0.001 -> 0.0005 ...
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    text = to_yaml(cfg)
    on_disk = _read_record(path)
    same = on_disk == text
    old = saved_config(run_dir) if on_disk is not None else None
    changes = config_changes(old, cfg) if old is not None else {}
    if fresh:
        removed = clear_run_outputs(run_dir)
        if removed or changes:
            _append_history(run_dir, "fresh", changes, removed=removed)
            print(f"{run_dir.name}: started over (removed {', '.join(removed) or 'nothing'})", flush=True)
    elif same:
        return False
    elif old is not None:
        refused = {k: v for k, v in changes.items() if not resume_rule(k)[0]}
        b, a = EFFECTIVE_BATCH
        if b in refused and old.data.batch_size * old.train.accum_steps == cfg.data.batch_size * cfg.train.accum_steps:
            refused = {k: v for k, v in refused.items() if k not in EFFECTIVE_BATCH}   # the same effective batch
        if refused and run_outputs(run_dir):
            raise _refusal(run_dir, refused)
        if changes:
            _append_history(run_dir, "changed", changes)
    else:
        _append_history(run_dir, "created", {})
    if same:
        return False
    drive.write_text(path, text)   # the run folder may be on Drive: transient errors retried
    prune_stale_records(run_dir)
    return True


def _refusal(run_dir: Path, refused: Mapping[str, tuple[Any, Any]]):
    from .errors import RunStateError

    diff = "; ".join(_fmt_change(k, *v) for k, v in refused.items())
    return RunStateError(
        f"{run_dir} holds a run made with another config: {diff} (each changes training, and this folder "
        f"has its checkpoints/records). Start over with --fresh (notebooks: run.prepare_run(..., fresh=True)), "
        f"which removes the old outputs, or use a new run name (--name). Safe to change on resume: "
        f"{', '.join(RESUME_SAFE)}")


def resolve_run(config: PathLike | Config = DEFAULT_CONFIG, overrides: Iterable[str] | Mapping[str, Any] | None = None,
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


def prepare_run(config: PathLike | Config = DEFAULT_CONFIG, overrides: Iterable[str] | Mapping[str, Any] | None = None,
                run_name: str | None = None, runs_root: PathLike | None = None, smoke: bool = False,
                save: bool = True, fresh: bool = False) -> RunContext:
    """Resolve the config and create the run folder ``runs_root/run_name``; save ``config.yaml`` there
    (only when it changes; :func:`save_run_config`: a folder that holds outputs refuses a change that
    changes training, ``fresh=True`` removes its outputs and starts over). What every notebook calls
    after its ``parameters`` cell; ``mattingkit run`` passes the run's saved ``config.yaml`` as
    ``config``, so the notebooks load it instead of resolving the config again.

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
        save_run_config(cfg, run_dir, fresh=fresh)
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


#: Data the kit generates itself, by the first folder of ``data.root`` (each made by ``_make_generated``).
GENERATED_DATA = (DEMO_DIR, "photoreal")


def _make_generated(source: str, root: PathLike) -> dict:
    """Write the generated dataset ``source`` (:data:`GENERATED_DATA`) into ``root``; a no-op when there."""
    if source == "photoreal":
        from .data.photoreal import make_photoreal_data as make
    else:
        from .data.synthetic import make_demo_data as make
    return make(root, seed=0)


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


def data_root_problem(cfg: Config) -> str | None:
    """The one line saying ``data.root`` is missing, or ``None`` when the folder is there or need not be
    yet: the kit generates it (:func:`generated_source`), notebook 01 downloads it (``data.kaggle_*``) or
    ``data.manifest`` lists the files. ``mattingkit config/run/train`` and a run started from Python ask
    this one rule.

    Example:
        >>> from mattingkit.config import load_config
        >>> data_root_problem(load_config("demo")) is None
        True
        >>> data_root_problem(load_config("demo", ["data.root=/nonexistent/set"])).split(" (")[0]
        "data.root='/nonexistent/set': /nonexistent/set: dataset folder not found"
    """
    if generated_source(cfg) is not None or cfg.data.manifest or cfg.data.kaggle_competition \
            or cfg.data.kaggle_datasets:
        return None
    root = data_path(cfg, cfg.data.root)
    if root is None or root.is_dir():
        return None
    return (f"data.root={cfg.data.root!r}: {root}: dataset folder not found (layout {cfg.data.layout!r}); "
            f"put the data there, point data.root at it (relative paths are under the data root "
            f"{data_root(cfg)}), or make the demo data with `mattingkit demo-data`")


def ensure_data(cfg: Config, download: bool = True) -> dict[str, str]:
    """Make the config's data available: the demo data is generated when the config points at it and
    it is missing (likewise the photo-like data of the ``cpu`` recipe, :data:`GENERATED_DATA`); Kaggle sources (``data.kaggle_competition`` / ``kaggle_datasets``) are used from
    ``/kaggle/input`` or downloaded (credentials from the environment) when ``download``.

    Returns ``{what: folder}`` for what it made available.
    """
    source = generated_source(cfg)
    if source is not None:
        root = data_root(cfg) / source
        summary = _make_generated(source, root)  # a no-op when already there (checked by its marker)
        if summary.get("created"):
            print(f"{source} data written to {root} ({summary.get('seconds', 0):.1f}s): {summary.get('counts')}")
        return {source: str(root)}
    if download and (cfg.data.kaggle_competition or cfg.data.kaggle_datasets):
        from .kaggle import ensure_config_data

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
    """``run_dir/metrics.json`` as a dict (empty when absent; a read that keeps failing raises)."""
    text = _read_record(Path(run_dir) / METRICS_FILE)
    return json.loads(text) if text is not None else {}


def _section_notebook(section: str) -> str | None:
    m = re.match(r"(\d\d)_", section)
    return m.group(1) if m else None


def section_inputs(run_dir: PathLike, section: str) -> dict[str, Any] | None:
    """What a notebook section of ``metrics.json`` is computed from, beyond the keys a run folder never
    changes: the values of the :data:`RESUME_SAFE` keys up to its notebook, and from notebook 03 on the
    SHA-256 of ``checkpoints/{last,best}.pt`` (their sidecars; None for a missing or unparsable one). None
    for a section that is not a notebook's (``NN_...``) or a folder without ``config.yaml``. A file that
    cannot be read (after the Drive retries) raises: an unknown input is not a changed one."""
    nb = _section_notebook(section)
    cfg = saved_config(run_dir) if nb else None
    if cfg is None:
        return None
    inputs: dict[str, Any] = {}
    for key, value in flatten(cfg.to_dict()).items():
        safe, first = resume_rule(key)
        if safe and first is not None and first <= nb:
            inputs[key] = value
    if nb >= "03":
        for name in ("last.pt", "best.pt"):
            text = _read_record(Path(run_dir) / "checkpoints" / f"{name}.json")
            try:
                inputs[f"checkpoints/{name}"] = json.loads(text).get("sha256") if text is not None else None
            except (ValueError, AttributeError):   # a sidecar that does not verify: no checkpoint to tie to
                inputs[f"checkpoints/{name}"] = None
    return jsonable(inputs)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON record of the run folder; {} when missing or unparsable (a read that keeps failing raises)."""
    text = _read_record(path)
    try:
        return json.loads(text) if text is not None else {}
    except ValueError:
        return {}


def prune_stale_records(run_dir: PathLike, quiet: bool = False) -> list[str]:
    """Remove each ``metrics.json`` section whose inputs changed since it was written (a safe config
    change, a checkpoint trained further or started over) together with its files
    (:data:`SECTION_FILES`): a run folder never shows numbers of a model or settings it no longer has.
    The section comes back when its notebook runs again. Returns the sections removed."""
    run_dir = Path(run_dir)
    recorded = _read_json(run_dir / RECORD_INPUTS_FILE)
    data = read_metrics(run_dir)
    stale = [s for s, was in recorded.items() if s in data and was != section_inputs(run_dir, s)]
    if not stale:
        return []
    for section in stale:
        data.pop(section, None)
        recorded.pop(section, None)
        _remove(_present(run_dir, SECTION_FILES.get(_section_notebook(section) or "", ())))
    drive.write_text(run_dir / METRICS_FILE, json.dumps(data, indent=2, sort_keys=True))
    drive.write_text(run_dir / RECORD_INPUTS_FILE, json.dumps(recorded, indent=1, sort_keys=True))
    if not quiet:
        print(f"{run_dir.name}: removed the records of {', '.join(stale)} from metrics.json (made from an "
              f"earlier checkpoint or settings); run those notebooks again to redo them", flush=True)
    return stale


def update_metrics(run_dir: PathLike, section: str, values: Mapping[str, Any]) -> Path:
    """Merge ``values`` into ``run_dir/metrics.json`` under ``section`` (atomic write, retried on a Drive hiccup).

    A notebook section (``NN_name``) records its inputs (:func:`section_inputs`, in
    ``metrics_inputs.json``): values written under other inputs are replaced, not merged, and every
    other section whose inputs changed is removed (:func:`prune_stale_records`).

    Example:
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp(); _ = update_metrics(d, "04", {"sad": np.float32(1.5)})
        >>> read_metrics(d)
        {'04': {'sad': 1.5}}
    """
    run_dir = Path(run_dir)
    inputs = section_inputs(run_dir, section)
    recorded = _read_json(run_dir / RECORD_INPUTS_FILE)
    data = read_metrics(run_dir)
    if inputs is not None and recorded.get(section) != inputs:
        data.pop(section, None)   # made from other inputs: redone, not merged
    data.setdefault(section, {}).update(jsonable(values))
    out = drive.write_text(run_dir / METRICS_FILE, json.dumps(data, indent=2, sort_keys=True))
    if inputs is not None:
        recorded[section] = inputs
        drive.write_text(run_dir / RECORD_INPUTS_FILE, json.dumps(recorded, indent=1, sort_keys=True))
    prune_stale_records(run_dir)
    return out


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
# Files of a run: the submission's destination, a summary of metrics.json
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# The run at a glance: one headline line per notebook section of metrics.json
# --------------------------------------------------------------------------------------------
#: The ``metrics.json`` section of each notebook.
NB_DATA, NB_TRIMAP, NB_TRAIN, NB_INFER, NB_SUBMIT = ("01_data_download", "02_trimap_synthesis", "03_train_gan",
                                                      "04_inference", "05_submission")


def round4(v: Any) -> Any:
    """A float rounded to 4 significant digits (None for NaN / inf); other values as they are.

    Example:
        >>> round4(12.34567), round4(float("inf")), round4("x")
        (12.35, None, 'x')
    """
    if isinstance(v, float) or type(v).__module__ == "numpy" and "float" in type(v).__name__:
        return float(f"{float(v):.4g}") if math.isfinite(v) else None
    return v


def fmt_value(v: Any) -> str:
    """A value as the run's tables print it: floats to 4 significant digits, others as ``str``.

    Example:
        >>> fmt_value(3.14159), fmt_value(float("nan")), fmt_value(None), fmt_value(7)
        ('3.142', 'nan', 'None', '7')
    """
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float) or type(v).__module__ == "numpy" and "float" in type(v).__name__:
        return f"{float(v):.4g}" if math.isfinite(v) else "nan"
    return str(v)


def _headline(section: str, vals: dict[str, Any]) -> list[str]:
    """The few numbers that say how a notebook went (its headline first)."""
    if section == NB_DATA:
        splits = vals.get("splits") or {}
        out = [f"items={fmt_value(vals.get('items'))}"] + [f"{k}={v}" for k, v in splits.items()]
        if vals.get("test_images") is not None:
            out.append(f"test images={vals['test_images']}")
        if "doctor_ok" in vals:
            out.append("doctor ok" if vals["doctor_ok"] else f"doctor: {len(vals.get('doctor_problems') or [])} "
                       "problem(s)")
        return out
    if section == NB_TRIMAP:
        shares = vals.get("unknown_share") or {}
        return ["unknown share: " + ", ".join(f"{k}={fmt_value(v)}" for k, v in shares.items())] if shares else []
    if section == NB_TRAIN:
        best = vals.get("best") or {}
        out = []
        if best.get("value") is not None:
            out.append(f"best val {best.get('metric', 'metric')}={fmt_value(best['value'])} at step {best.get('step')}")
        out += [f"steps={vals.get('step')}/{vals.get('steps')}", f"stopped={vals.get('stopped')}"]
        if vals.get("steps_per_s") is not None:
            out.append(f"steps/s={fmt_value(vals['steps_per_s'])}")
        return out
    if section == NB_INFER:
        names = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn"}
        out = [f"{n}={fmt_value(vals[k])}" for k, n in names.items() if k in vals]
        out.append(f"images={vals.get('images')} ({vals.get('split', 'val')})")
        real = vals.get("real_set") or {}
        table = real.get("table") or {}
        for name, row in sorted(table.items(), key=lambda kv: kv[0] != "model"):
            out.append(f"real {row.get('method', name)} SAD={fmt_value(row.get('sad'))}")
        return out
    if section == NB_SUBMIT:
        out = [f"rows={vals.get('rows')}", f"valid={vals.get('valid')}",
               f"csv={vals.get('csv') or vals.get('run_csv')}"]
        k = vals.get("kaggle") or {}
        if k:
            out.append(f"kaggle {k.get('competition')}: {k.get('status')}, public score {k.get('public_score')}")
        return out
    keys = [k for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [f"{k}={fmt_value(vals[k])}" for k in keys[:8]]


def summary_table(ctx: RunContext | PathLike) -> str:
    """The run at a glance: one line per notebook of ``metrics.json`` with its headline numbers first
    (SAD / MSE / Grad / Conn for 04 and the real-set rows, the best validation value and its step for 03,
    rows and validity for 05), numbers rounded to 4 significant digits; all four matting metrics are
    errors: lower is better.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = update_metrics(d, NB_INFER, {"conn": 1.0, "images": 2, "sad": 12.34567, "mse": 0.0123456})
        >>> _ = update_metrics(d, NB_TRAIN, {"best": {"metric": "sad", "value": 3.14159, "step": 40},
        ...                                      "step": 50, "steps": 50, "stopped": "done"})
        >>> print(summary_table(d))
        03_train_gan: best val sad=3.142 at step 40, steps=50/50, stopped=done
        04_inference: SAD=12.35, MSE=0.01235, Conn=1, images=2 (val)
        (matting errors SAD / MSE / Grad / Conn: lower is better)
    """
    run_dir = ctx.run_dir if isinstance(ctx, RunContext) else Path(ctx)
    lines = [f"{section}: " + ", ".join(_headline(section, vals))
             for section, vals in sorted(read_metrics(run_dir).items()) if isinstance(vals, dict)]
    return "\n".join(lines + ["(matting errors SAD / MSE / Grad / Conn: lower is better)"])


__all__ = [
    "CONFIG_FILE", "CONFIG_HISTORY_FILE", "RECORD_INPUTS_FILE", "RESUME_SAFE", "RUN_OUTPUTS", "SECTION_FILES",
    "clear_run_outputs", "config_changes", "flatten", "prune_stale_records", "resume_rule", "run_outputs",
    "saved_config", "section_inputs", "DEMO_DIR", "build_run_manifest", "count_backgrounds", "scan_test_images",
    "HISTORY_FILE", "HistoryLog", "METRICS_FILE", "RunContext", "SMOKE_OVERRIDES", "data_path",
    "data_root", "default_run_dir", "ensure_data", "ensure_manifest", "is_demo_config",
    "jsonable", "load_manifest", "manifest_path", "prepare_run", "read_history",
    "read_metrics", "resolve_config", "resolve_run", "runs_root", "safe_name", "save_run_config",
    "submission_destination", "submission_name",
    "update_metrics", "NB_DATA", "NB_TRIMAP", "NB_TRAIN", "NB_INFER", "NB_SUBMIT", "fmt_value", "round4",
    "summary_table",
]

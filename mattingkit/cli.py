"""The ``mattingkit`` command. Each subcommand is a thin wrapper over a package function.

Run ``mattingkit --help`` or ``mattingkit COMMAND --help``. The kit's own errors
(:class:`mattingkit.errors.MattingKitError`) are caught once, in :func:`main`: one line on stderr,
``mattingkit COMMAND: message``, and the error's exit code (:data:`EXIT_CODES`); anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import MattingKitError, UsageError
from .names import BASELINES  # baselines.METHODS' names: `predict --help` imports no torch

#: Exit codes of ``mattingkit`` (each :class:`~mattingkit.errors.MattingKitError` subclass carries one).
EXIT_CODES = {
    0: "success",
    1: "the work ran and found problems (a failed notebook, an invalid or rejected submission, failed images, "
       "an evaluation problem, a doctor PROBLEM)",
    2: "usage or configuration error",
    3: "download or network error",
    4: "input data error (a missing or unreadable file or folder the command was given)",
    5: "device error (no GPU, unsupported GPU, out of memory)",
    6: "checkpoint or run-folder error (corrupt, locked, disk full)",
    130: "interrupted (Ctrl-C): the state was saved; run the same command to continue",
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    from .config import DEFAULT_CONFIG, available_configs  # light: the shipped list is the configs folder

    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"shipped config name ({', '.join(available_configs())}) "
                   f"or a YAML path starting with `base: NAME` (default: {DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, e.g. --set train.lr_g=2e-4")


def _load(args, paths: bool = False):
    """The command's config, every problem at once: keys, types, ranges, every key's choices and, with
    ``paths`` (``config``, ``run``, ``train``), the data the config names. Config problems raise
    :class:`~mattingkit.config.ConfigError` (exit 2) listing the missing paths too; missing paths alone
    raise :class:`~mattingkit.errors.InputNotFoundError` (exit 4)."""
    from .choices import config_problems  # every key's choices (the owners' tables)
    from .config import ConfigError, apply_overrides, load_with_problems
    from .errors import InputNotFoundError

    cfg, problems = load_with_problems(args.config, args.overrides, check=config_problems)
    if getattr(args, "name", None) and not problems:
        cfg = apply_overrides(cfg, {"run.name": args.name}, check=config_problems)
    missing = path_problems(cfg) if paths else []
    if problems:
        raise ConfigError(_listed(problems + missing))
    if missing:
        raise InputNotFoundError(_listed(missing))
    return cfg


def _listed(problems: list[str]) -> str:
    """One problem as it is; several under a count (``3 problems:`` then one a line)."""
    return problems[0] if len(problems) == 1 else "\n".join([f"{len(problems)} problems:", *problems])


def path_problems(cfg) -> list[str]:
    """The folders a config names that must exist before a run starts, one line each: ``data.root``
    (unless the kit generates it or notebook 01 downloads it, or ``data.manifest`` lists the files),
    ``data.eval_root``, ``data.backgrounds`` (the layouts' own check), ``model.weights_path`` and
    ``train.init_from``.

    Example:
        >>> from mattingkit.config import load_config
        >>> path_problems(load_config("demo", ["model.weights_path=/nonexistent/w.pth"]))
        ["model.weights_path='/nonexistent/w.pth': file not found"]
    """
    from .data.layouts import check_backgrounds
    from .run import DEMO_DIR, data_path, data_root_problem, generated_source

    problems = [p for p in [data_root_problem(cfg)] if p]
    made = generated_source(cfg) is not None
    downloads = cfg.data.kaggle_competition or cfg.data.kaggle_datasets
    eval_root = data_path(cfg, cfg.data.eval_root)
    if eval_root is not None and not eval_root.is_dir():
        problems.append(f"data.eval_root={cfg.data.eval_root!r}: {eval_root}: folder not found")
    demo_pool = Path(str(cfg.data.backgrounds or "")).parts[:1] == (DEMO_DIR,)   # made with the demo data
    if cfg.data.backgrounds and not (made or downloads or demo_pool):
        try:
            check_backgrounds(cfg)
        except MattingKitError as e:
            problems.append(str(e))
    for key, value in (("model.weights_path", cfg.model.weights_path), ("train.init_from", cfg.train.init_from)):
        if value and not Path(value).expanduser().exists():
            problems.append(f"{key}={value!r}: file not found")
    return problems


# --------------------------------------------------------------------------------------------
def cmd_demo_data(args) -> int:
    from .data.synthetic import make_demo_data

    summary = make_demo_data(args.root, seed=args.seed, force=args.force)
    print(f"demo data in {summary['root']} (seed {summary['seed']})")
    return 0


def cmd_config(args) -> int:
    from .config import to_yaml

    print(to_yaml(_load(args, paths=True)), end="")
    return 0


def cmd_run(args) -> int:
    from .runner import run_pipeline

    _load(args, paths=True)   # every config and data-path problem at once, before the run folder is touched
    result = run_pipeline(args.config, overrides=args.overrides, name=args.name, smoke=args.smoke,
                          runs_root=args.runs_root, notebooks=args.notebooks, parameters=parse_params(args.params),
                          force=args.force, fresh=args.fresh)
    if result.interrupted:
        from .errors import Interrupted

        raise Interrupted(result.interrupted)
    return 0 if result.ok else 1


def parse_params(items: list[str] | None) -> dict:
    """``["n_preview=2", "tta=true"]`` -> ``{"n_preview": 2, "tta": True}`` (values parsed as YAML).

    Example:
        >>> parse_params(["n_preview=2", "out_dir=/tmp/x", "names=[a, b]"])
        {'n_preview': 2, 'out_dir': '/tmp/x', 'names': ['a', 'b']}
    """
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--param expects NAME=VALUE with a Python identifier as NAME, got {item!r}")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise UsageError(f"--param {key}: value {value!r} is not valid YAML ({e.__class__.__name__})") from None
    return out


def cmd_sweep(args) -> int:
    from .runner import run_sweep

    if args.on == "kaggle":
        return _sweep_on_kaggle(args)
    result = run_sweep(args.grid, runs_root=args.runs_root)
    return 0 if result.ok else 1


def cmd_train(args) -> int:
    from .run import default_run_dir, prune_stale_records, save_run_config
    from .runner import check_lock
    from .train import train_and_report

    cfg = _load(args, paths=True)
    run_dir = args.run_dir or default_run_dir(cfg)
    check_lock(cfg, run_dir, force=args.force, quiet=False)   # --fresh never clears a folder another process trains in
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, run_dir, fresh=args.fresh)   # the folder's config: a change to training is refused
    try:
        train_and_report(cfg, run_dir=run_dir, fresh=args.fresh, force=args.force)
    finally:
        prune_stale_records(run_dir)   # notebook records of the checkpoints before this session go
    return 0


def cmd_evaluate(args) -> int:
    from .metrics import evaluate_folder, format_table

    with warnings.catch_warnings():  # the problems are printed below, once: no UserWarning besides
        warnings.simplefilter("ignore", UserWarning)
        df = evaluate_folder(args.pred_dir, args.gt_dir, args.trimap_dir, out_csv=args.out)
    errors = df.attrs.get("errors", [])
    if len(df) == 0:
        lines = format_table(df).splitlines()[2:]   # the problems, without a row of NaN means
        print("\n".join(lines) if lines else f"no predictions in {args.pred_dir}")
        reason = (f"{len(errors)} problem(s) above" if errors else
                  f"no prediction matches a ground truth in {args.gt_dir} by file stem")
        print(f"mattingkit evaluate: nothing was evaluated ({reason})", file=sys.stderr)
        return 1
    print(format_table(df))
    if args.out:
        print(f"per-image metrics: {args.out}")
    missing = [e for e in errors if e.get("kind") == "missing"]
    failing = [e for e in errors if e.get("kind") not in ("note", "missing")]
    if failing or (missing and not args.allow_missing):
        what = ", ".join(filter(None, [f"{len(failing)} unusable file(s)" if failing else "",
                                       f"{len(missing)} missing file(s)" if missing else ""]))
        hint = "" if args.allow_missing or not missing else "; --allow-missing accepts missing files"
        print(f"mattingkit evaluate: {len(df)} of {df.attrs.get('n_expected', len(df))} evaluated, "
              f"{what} (listed above){hint}", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args) -> int:
    from . import infer

    paths = list(args.paths)
    if args.method:
        if len(paths) != 2:
            raise UsageError(f"with --method give IMAGES OUT (no checkpoint), got {len(paths)} path(s)")
        if args.trimaps is None:
            raise UsageError(f"--method {args.method} needs --trimaps TRIMAPS (a folder of trimaps named like "
                             f"the images): the classical solvers need the known foreground/background")
        if args.tta or args.two_pass:
            raise UsageError("--tta / --two-pass apply to models; the classical methods solve once, with the trimap")
        source, (images, out) = args.method, map(Path, paths)
    elif len(paths) != 3:
        raise UsageError(f"give CHECKPOINT IMAGES OUT (or --method METHOD IMAGES OUT), got {len(paths)} path(s)")
    else:
        source, images, out = map(Path, paths)
    model, producer = infer.predictor_for(source, device=None if args.method else args.device)
    cfg = model.mattingkit_cfg
    flags = {k: v for k, v in (("tta_flip", args.tta), ("two_pass", args.two_pass), ("write_rgba", args.rgba))
             if v is not None}  # given flags override the checkpoint's infer settings; absent ones keep them
    settings = infer.infer_settings(cfg.infer if cfg is not None else None, **flags)
    report = infer.predict_folder(model, images, out, trimap_dir=args.trimaps, infer_cfg=settings,
                                  device=None if args.method else args.device,
                                  trimap_cfg=cfg.trimap if cfg is not None else None,
                                  producer=producer, force=args.force)
    for note in dict.fromkeys(report.notes):   # e.g. "downscaled to ... for the solve"; an OOM retry
        print(f"note: {note}")
    return 0 if not report.failed else 1


def cmd_submit(args) -> int:
    from .submission import build_submission, validate_submission

    _one_size_source(args)
    if args.kaggle and not args.message:
        raise UsageError("--kaggle needs -m/--message MESSAGE (the submission's description on Kaggle)")
    if args.message and not args.kaggle:
        raise UsageError("-m/--message is the Kaggle description: give --kaggle COMPETITION too")
    if args.csv is not None:
        if args.alpha_dir is not None or args.out is not None:
            raise UsageError("give either --csv FILE (an existing CSV) or ALPHA_DIR OUT (build one), not both")
        if not args.kaggle:
            raise UsageError("--csv FILE uploads an existing CSV: give --kaggle COMPETITION -m MESSAGE")
        csv = args.csv
        if not csv.is_file():
            from .errors import InputNotFoundError

            raise InputNotFoundError(f"{csv}: submission CSV not found")
    else:
        if args.alpha_dir is None or args.out is None:
            raise UsageError("give ALPHA_DIR OUT (build the CSV from alpha PNGs) or --csv FILE (upload one)")
        report = build_submission(args.alpha_dir, args.out, sample_csv=args.sample, test_dir=args.test_dir,
                                  size=args.size)
        if not getattr(report, "ok", True):
            return 1
        csv = args.out
    if not args.kaggle:
        return 0
    check = validate_submission(csv, test_dir=args.test_dir, sample_csv=args.sample, size=args.size)
    print(check.summary())
    if not check.ok:
        print(f"mattingkit submit: {csv} does not validate; not uploaded", file=sys.stderr)
        return 1
    from .kaggle import submit_to_kaggle

    result = submit_to_kaggle(csv, args.kaggle, args.message, poll=args.wait, timeout_s=args.wait_timeout,
                              interval_s=args.poll_interval, quiet=False)  # prints progress and the score
    if not args.wait:
        print(result)
    return 0


def _one_size_source(args) -> None:
    """``--size`` and ``--test-dir`` both say the PNGs' size: one of them, never both silently."""
    if args.size is not None and args.test_dir is not None:
        raise UsageError("--size and --test-dir both set the PNG size (--test-dir: each test image's own "
                         "size); give one of them")


def cmd_validate(args) -> int:
    from .submission import validate_submission

    _one_size_source(args)
    report = validate_submission(args.csv, test_dir=args.test_dir, sample_csv=args.sample, size=args.size)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_decode(args) -> int:
    from .submission import decode_submission

    paths = decode_submission(args.csv, args.out)
    print(f"decoded {len(paths)} PNGs into {args.out}")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import doctor, format_report, to_json

    rep = doctor(_load(args), probe=not args.no_probe)
    print(to_json(rep) if args.json else format_report(rep))
    return 0 if rep["ok"] else 1   # a PROBLEM is not a pass


def cmd_download(args) -> int:
    if args.what == "alphamatting":
        return _download_alphamatting(args)
    if args.what not in (None, "kaggle"):
        raise UsageError(f"unknown source {args.what!r}: choose kaggle (the default) or alphamatting")
    from .config import apply_overrides
    from .kaggle import ensure_config_data

    cfg = _load(args)
    upd = {}
    if args.competition:
        upd["data.kaggle_competition"] = args.competition
    if args.dataset:
        upd["data.kaggle_datasets"] = list(args.dataset)
    if args.data_root:
        upd["run.data_root"] = str(args.data_root)
    cfg = apply_overrides(cfg, upd) if upd else cfg
    if not cfg.data.kaggle_competition and not cfg.data.kaggle_datasets:
        raise UsageError(
            f"the config {args.config!r} names no Kaggle competition or dataset: set data.kaggle_competition to "
            "the competition's slug, the last part of its URL (kaggle.com/competitions/SLUG), in the config or "
            "with --competition SLUG; datasets: data.kaggle_datasets or --dataset OWNER/NAME[:FOLDER]")
    for slug, folder in ensure_config_data(cfg).items():  # DownloadError: redacted, says what to do (exit 3)
        print(f"{slug}: {folder}")
    return 0


def _download_alphamatting(args) -> int:
    from .data.download import download_alphamatting
    from .run import data_root

    if args.competition or args.dataset:
        raise UsageError("--competition / --dataset are for Kaggle sources, not `download alphamatting`")
    cfg = _load(args)   # for data.trimap_set and run.data_root
    trimap_set = args.trimap_set or cfg.data.trimap_set
    dest = args.dest
    if dest is None:
        dest = (args.data_root or data_root(cfg)) / "alphamatting"
    folder = download_alphamatting(dest, trimap_set=trimap_set, base_url=args.url, force=args.force, quiet=False)
    print(f"alphamatting ({trimap_set}): {folder}")
    return 0


def cmd_set_repo(args) -> int:
    from .env import set_repository

    changed = set_repository(args.slug, args.root)
    print("\n".join(f"{p}: now github.com/{args.slug}" for p in changed) or f"already github.com/{args.slug}")
    return 0


def cmd_manifest(args) -> int:
    from .data.layouts import build_manifest

    cfg = _load(args)
    df, report = build_manifest(cfg, args.out)
    print(report.summary())
    print(f"manifest: {args.out} ({len(df)} items)")
    return 0


# --------------------------------------------------------------------------------------------
# mattingkit kaggle push / status / pull / wheel, and sweep --on kaggle (mattingkit.kaggle)
# --------------------------------------------------------------------------------------------
def cmd_kaggle(args) -> int:
    return args.kaggle_func(args)


def _kernel_settings(args) -> dict:
    import os

    from .kaggle import REPO_URL_ENV

    return {"accelerator": args.accelerator, "internet": args.internet, "wheel_dataset": args.wheel_dataset,
            "repo_url": args.repo or os.environ.get(REPO_URL_ENV) or None, "repo_ref": args.ref}


def _kaggle_push(args) -> int:
    from . import kaggle
    from .run import resolve_run, runs_root
    from .runner import check_notebook_parameters

    cfg, run_dir = resolve_run(args.config, args.overrides, args.name, None, args.smoke)   # config errors: no push
    check_notebook_parameters(parse_params(args.params), args.notebooks)   # as `mattingkit run` checks them
    kr = kaggle.kernel_run_from_config(cfg, args.config, run_dir.name, overrides=list(args.overrides),
                                       params=list(args.params), smoke=args.smoke, notebooks=args.notebooks,
                                       **_kernel_settings(args))
    kaggle.check_travelling_config(kr, args.overrides)
    kaggle.push_kernel(kr, runs_root(cfg, args.runs_root), kernel=args.kernel, dry_run=args.dry_run)
    return 0


def _kaggle_status(args) -> int:
    from .kaggle import kernel_status
    from .run import runs_root

    state = kernel_status(args.run, runs_root(None, args.runs_root))
    print(state)
    return 1 if state.status == "error" else 0


def _kaggle_pull(args) -> int:
    from .kaggle import pull_kernel
    from .run import runs_root

    pull_kernel(args.run, runs_root(None, args.runs_root), checkpoints=args.checkpoints)
    return 0


def _kaggle_wheel(args) -> int:
    from .kaggle import publish_wheel

    publish_wheel(args.dataset, args.notes)
    return 0


def _sweep_on_kaggle(args) -> int:
    from .runner import run_sweep_on_kaggle

    result = run_sweep_on_kaggle(args.grid, runs_root=args.runs_root, max_parallel=args.max_parallel,
                                 poll_s=args.poll, **_kernel_settings(args))
    return 0 if result.ok else 1


def _add_kernel_args(p: argparse.ArgumentParser) -> None:
    from .kaggle import ACCELERATORS

    p.add_argument("--accelerator", choices=list(ACCELERATORS), default="t4x2",
                   help="the kernel's accelerator (default t4x2; p100 needs run.device=cpu: recent torch builds "
                        "lack sm_60; none: CPU)")
    p.add_argument("--internet", action=argparse.BooleanOptionalAction, default=True,
                   help="internet on (default): the kernel installs the kit from its repository (--repo); "
                        "--no-internet: from the wheel dataset (`mattingkit kaggle wheel`)")
    p.add_argument("--repo", default=None, help="git URL of the kit's repository (default: $MATTINGKIT_REPO_URL)")
    p.add_argument("--ref", default=None, help="branch or tag of --repo to install (default: its default branch)")
    p.add_argument("--wheel-dataset", default=None, metavar="OWNER/SLUG",
                   help="the wheel dataset of --no-internet kernels (default: YOU/mattingkit-wheel)")


def _add_kaggle_parsers(sub) -> None:
    """`mattingkit kaggle push|status|pull|wheel` (one block, added to the command table)."""
    kp = sub.add_parser(
        "kaggle", help="run on Kaggle's GPUs from here: push a run as a kernel, follow it, pull its results",
        description="push writes a kernel folder (kernel-metadata.json + one driver notebook) and pushes it with "
                    "the kaggle client; the kernel installs the kit, runs `mattingkit run` and leaves "
                    "runs/RUN/ in its output. status follows it; pull downloads runs/RUN/ here. Credentials as "
                    "for `mattingkit download`, never printed. See docs/kaggle.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mattingkit kaggle push --config demo --smoke --name k1 --repo https://github.com/me/mattingkit\n"
               "  mattingkit kaggle status k1\n  mattingkit kaggle pull k1")
    ks = kp.add_subparsers(dest="kaggle_command", metavar="ACTION", required=True)
    p = ks.add_parser("push", help="push a run as a Kaggle kernel (validated here first; prints its URL)")
    _add_config_args(p)
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="a notebook parameter passed to `mattingkit run --param`, repeatable; checked here "
                        "(an unknown name: nothing is pushed)")
    p.add_argument("--name", required=True, help="run name: runs/NAME/ in the kernel's output and here")
    p.add_argument("--smoke", action="store_true", help="tiny budgets everywhere")
    p.add_argument("--notebooks", nargs="*", default=None, help="subset, e.g. 01 02 (default: all five)")
    _add_kernel_args(p)
    p.add_argument("--kernel", default=None, metavar="OWNER/SLUG",
                   help="the kernel's id (default: YOU/mattingkit-NAME)")
    p.add_argument("--dry-run", type=Path, default=None, metavar="DIR",
                   help="write the kernel folder to DIR and push nothing")
    p.add_argument("--runs-root", type=Path, default=None, help="where the push is recorded and pulled to")
    p.set_defaults(kaggle_func=_kaggle_push)
    p = ks.add_parser("status", help="queued / running / complete / error (with the log's tail) of RUN's kernel")
    p.add_argument("run")
    p.add_argument("--runs-root", type=Path, default=None)
    p.set_defaults(kaggle_func=_kaggle_status)
    p = ks.add_parser("pull", help="download RUN's kernel output into runs/RUN/ (records kernel and version)")
    p.add_argument("run")
    p.add_argument("--checkpoints", action="store_true", help="also download runs/RUN/checkpoints/")
    p.add_argument("--runs-root", type=Path, default=None)
    p.set_defaults(kaggle_func=_kaggle_pull)
    p = ks.add_parser("wheel", help="build the kit's wheel and create/version the private dataset holding it")
    p.add_argument("--dataset", default=None, metavar="OWNER/SLUG", help="default: YOU/mattingkit-wheel")
    p.add_argument("--notes", default="mattingkit wheel", help="the version's notes")
    p.set_defaults(kaggle_func=_kaggle_wheel)
    kp.set_defaults(func=cmd_kaggle)


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one argparse tree: every command's options side by side
    """The parser of every subcommand (declarative: one block per command, longer than 80 lines for
    that reason only)."""
    ap = argparse.ArgumentParser(
        prog="mattingkit",
        description="Natural image matting experiment kit: data, trimaps, AlphaGAN/DIM/U2-Net-P training, "
                    "official metrics, inference and Kaggle submissions.",
        epilog="exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
               + "\nErrors are one line on stderr: 'mattingkit COMMAND: message'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"mattingkit {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo-data", help="write the embedded demo dataset (deterministic from a seed)")
    p.add_argument("--root", type=Path, default=None, help="output folder (default: <data_root>/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rewrite even if present")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("config", help="print the resolved config as YAML")
    _add_config_args(p)
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("run", help="run notebooks 01 -> 05 headless with papermill into runs/NAME/")
    _add_config_args(p)
    p.add_argument("--name", default=None, help="run name (default: the config's run.name)")
    p.add_argument("--smoke", action="store_true", help="tiny budgets everywhere (minutes on CPU)")
    p.add_argument("--runs-root", type=Path, default=None)
    p.add_argument("--notebooks", nargs="*", default=None, help="subset, e.g. 01 02 (default: all five)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="a notebook-specific parameter (see the notebooks' parameters cells), value as YAML; "
                        "repeatable, e.g. --param n_preview=2")
    p.add_argument("--force", action="store_true",
                   help="take the run folder's lock over even if another process seems to hold it")
    p.add_argument("--fresh", action="store_true",
                   help="start the run over: remove its checkpoints, records and predictions first (needed to "
                        "change a key that changes training in an existing run; a new --name is the other way)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run a grid of parameter sets (grid.yaml), one run folder each")
    p.add_argument("grid", type=Path, help="sweep YAML: name, config, base overrides, grid of key: [values]")
    p.add_argument("--runs-root", type=Path, default=None)
    p.add_argument("--on", choices=["local", "kaggle"], default="local",
                   help="kaggle: one Kaggle kernel per point, pushed, followed and pulled (see `kaggle push`)")
    p.add_argument("--max-parallel", type=int, default=2, help="--on kaggle: kernels running at once (default 2)")
    p.add_argument("--poll", type=float, default=30.0, help="--on kaggle: seconds between status checks")
    _add_kernel_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("train", help="train a model (multi-GPU: `accelerate launch -m mattingkit train ARGS`, "
                                     "the same arguments)")
    _add_config_args(p)
    p.add_argument("--name", default=None, help="run name (folder under the runs root)")
    p.add_argument("--run-dir", type=Path, default=None, help="explicit run folder (default: RUNS_ROOT/NAME)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: remove the run folder's checkpoints, records and predictions first "
                        "(needed to change a key that changes training in an existing run)")
    p.add_argument("--force", action="store_true",
                   help="take the run folder's lock over even if another process seems to hold it")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="SAD/MSE/Grad/Conn (official DIM protocol) for a folder of predictions",
                       description="Mean SAD/MSE/Grad/Conn of the predictions against same-stem ground truths; "
                                   "predictions and ground truths are read as the submission reads them (a "
                                   "colour photo is refused). Each problem (missing file, photo, size "
                                   "mismatch) is listed once and exits 1; --allow-missing lets missing files "
                                   "pass (the table says 'N of M evaluated').")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("gt_dir", type=Path)
    p.add_argument("trimap_dir", type=Path, nargs="?", default=None,
                   help="trimaps (0/128/255); omitted: whole image counts (competition style)")
    p.add_argument("--out", type=Path, default=None, help="per-image CSV")
    p.add_argument("--allow-missing", action="store_true",
                   help="a ground truth without prediction (or trimap) is listed but does not fail (exit 0)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict", help="predict alpha PNGs for a folder of images (a checkpoint, or a classical --method)",
        usage="mattingkit predict [options] CHECKPOINT IMAGES OUT\n"
              "       mattingkit predict --method METHOD IMAGES OUT --trimaps TRIMAPS [options]",
        description="Writes OUT/<stem>.png for every image. Resumable: a re-run skips images already "
                    "predicted; --force predicts every image again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mattingkit predict runs/demo/checkpoints/best.pt data/photos preds --trimaps data/trimaps\n"
               "  mattingkit predict --method closed_form data/photos preds_cf --trimaps data/trimaps")
    p.add_argument("paths", nargs="+", metavar="PATH", help="CHECKPOINT IMAGES OUT, or IMAGES OUT with --method")
    p.add_argument("--method", choices=BASELINES, default=None, metavar="METHOD",
                   help="a classical method instead of a checkpoint: %(choices)s (needs --trimaps; large unknown "
                        "regions are solved downscaled, and a note says so)")
    p.add_argument("--trimaps", type=Path, default=None, help="trimap folder (matching stems)")
    p.add_argument("--device", default="auto",
                   help="auto (default: the GPU when one is visible), cpu, cuda or cuda:N. A GPU recipe's checkpoint "
                        "(run.require_gpu) on a machine without a GPU stops, as training does, unless --device cpu")
    p.add_argument("--force", action="store_true",
                   help="predict every image again (default: resume, skipping images already in OUT)")
    # None = not given: the checkpoint's infer.* settings stand; --x / --no-x override them
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal-flip test-time augmentation (default: the checkpoint's infer.tta_flip)")
    p.add_argument("--two-pass", action=argparse.BooleanOptionalAction, default=None,
                   help="trimap-free: coarse pass -> trimap -> refine (default: the checkpoint's infer.two_pass)")
    p.add_argument("--rgba", action=argparse.BooleanOptionalAction, default=None,
                   help="also write RGBA cut-outs (default: the checkpoint's infer.write_rgba)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "submit", help="build the competition CSV (filename,image_utf) from alpha PNGs; --kaggle uploads it",
        usage="mattingkit submit ALPHA_DIR OUT [--test-dir DIR] [--sample CSV] [--kaggle COMPETITION -m MESSAGE]\n"
              "       mattingkit submit --csv FILE --kaggle COMPETITION -m MESSAGE",
        description="Build the CSV from ALPHA_DIR/<stem>.png into OUT. With --kaggle the CSV (built, or an "
                    "existing one given with --csv) is validated, uploaded with the kaggle client and the "
                    "public score is printed when Kaggle has scored it. Credentials as for `mattingkit "
                    "download` (KAGGLE_API_TOKEN, KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle); never printed. "
                    "A rejected submission prints Kaggle's reason and exits 1; network / credential / "
                    "rules problems exit 3.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mattingkit submit preds submissions/mine.csv --test-dir data/ecom/test_dataset/orig_1024\n"
               "  mattingkit submit preds submissions/mine.csv --kaggle my-competition -m \"resnet50, 20k steps\"\n"
               "  mattingkit submit --csv submissions/demo_ecom.csv --kaggle my-competition -m \"demo\"")
    p.add_argument("alpha_dir", type=Path, nargs="?", default=None)
    p.add_argument("out", type=Path, nargs="?", default=None)
    p.add_argument("--csv", type=Path, default=None, help="an existing submission CSV to upload (with --kaggle)")
    p.add_argument("--sample", type=Path, default=None, help="sample_submission.csv (row order)")
    p.add_argument("--test-dir", type=Path, default=None, help="test images (names and sizes)")
    p.add_argument("--size", type=int, default=None,
                   help="PNG side without --test-dir (default: each prediction's own size); a matte of another "
                        "aspect ratio is refused, never stretched")
    p.add_argument("--kaggle", metavar="COMPETITION", default=None, help="upload to this competition (its slug)")
    p.add_argument("-m", "--message", default=None, help="the submission's description on Kaggle")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the public score (default); --no-wait returns after the upload")
    p.add_argument("--wait-timeout", type=float, default=900.0, help="seconds to wait for the score (default 900)")
    p.add_argument("--poll-interval", type=float, default=15.0, help="seconds between score checks (default 15)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("validate", help="check a submission CSV; reports every problem at once")
    p.add_argument("csv", type=Path)
    p.add_argument("--sample", type=Path, default=None)
    p.add_argument("--test-dir", type=Path, default=None, help="test images (names and sizes)")
    p.add_argument("--size", type=int, default=None,
                   help="PNG side to check without --test-dir (default: sizes not checked; as `submit --size`)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("decode", help="decode a submission CSV back into PNGs")
    p.add_argument("csv", type=Path)
    p.add_argument("out", type=Path)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "download", help="download data into data/: Kaggle competitions / datasets, or the alphamatting.com set",
        usage="mattingkit download [kaggle] [--competition SLUG] [--dataset OWNER/NAME[:FOLDER]] [--config NAME]\n"
              "       mattingkit download alphamatting [--dest DIR] [--trimap-set Trimap1|Trimap2] [--url URL]",
        description="kaggle (default): the config's (or the given) competition files and datasets, "
                    "credentials from the environment. alphamatting: the alphamatting.com low-res training "
                    "set (27 photos, ground-truth alphas, Trimap1 and Trimap2) into the `alphamatting` "
                    "layout (default <data root>/alphamatting; use it with data.eval_root).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=["kaggle", "alphamatting"], default=None,
                   help="what to download (default: kaggle)")
    _add_config_args(p)
    p.add_argument("--competition", default=None, help="competition slug (default: the config's)")
    p.add_argument("--dataset", action="append", default=None, help="owner/name[:folder], repeatable")
    p.add_argument("--data-root", type=Path, default=None, help="default: the platform's data root")
    p.add_argument("--dest", type=Path, default=None, help="alphamatting: target folder "
                   "(default: <data root>/alphamatting)")
    p.add_argument("--trimap-set", choices=["Trimap1", "Trimap2"], default=None,
                   help="alphamatting: which trimaps become trimap/ (default: the config's data.trimap_set, "
                        "else Trimap1)")
    p.add_argument("--url", default=None, help="alphamatting: base URL of the zips (default: "
                   "$MATTINGKIT_ALPHAMATTING_URL, else http://www.alphamatting.com/datasets/zip/)")
    p.add_argument("--force", action="store_true", help="alphamatting: download again even if present")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("doctor", help="what this machine gives a run: platform, GPU, AMP, workers, roots, "
                                      "credentials (source only), ImageNet weights",
                       description="Check the machine before a long run. The same dict comes from "
                                   "mattingkit.doctor.doctor(cfg); `mattingkit run` saves it as doctor.json "
                                   "in the run folder.")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    p.add_argument("--no-probe", action="store_true", help="do not try to reach the ImageNet weights URL")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("set-repo", help="point the README's Colab badges and install line and the notebooks' "
                                        "set-up cells at your copy of the repository")
    p.add_argument("slug", metavar="OWNER/NAME", help="your GitHub repository, as in github.com/OWNER/NAME")
    p.add_argument("--root", type=Path, default=None, help="the checkout (default: the one this kit runs from)")
    p.set_defaults(func=cmd_set_repo)

    p = sub.add_parser("manifest", help="scan a dataset layout, validate every file, write a manifest CSV")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_manifest)
    _add_kaggle_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():   # a warning is one line too, not "file.py:576: UserWarning" + source
            warnings.showwarning = lambda message, *_, **__: print(
                f"mattingkit {args.command}: warning: {_one_line(message)}", file=sys.stderr)
            return int(args.func(args) or 0)
    except MattingKitError as e:
        print(f"mattingkit {args.command}: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:   # Ctrl-C: one line saying what was kept, no traceback
        print(f"\nmattingkit {args.command}: {interrupted_message(e)}", file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT


#: Exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED_EXIT = 130


def interrupted_message(error: BaseException) -> str:
    """The one line after Ctrl-C: the kit's own (:class:`~mattingkit.errors.Interrupted`: what was
    saved), else a general one (what finished stays: predictions written, notebooks done).

    Example:
        >>> from mattingkit.errors import Interrupted
        >>> interrupted_message(Interrupted("interrupted at step 7: last.pt saved; run the same command to continue"))
        'interrupted at step 7: last.pt saved; run the same command to continue'
        >>> interrupted_message(KeyboardInterrupt())
        'interrupted: what was written is kept; run the same command to continue'
    """
    from .errors import Interrupted

    if isinstance(error, Interrupted) and str(error):
        return _one_line(error)
    return "interrupted: what was written is kept; run the same command to continue"


#: ``force=True (CLI: --force)`` in a message (the errors module's convention) -> ``--force`` on the CLI.
_KEYWORD_AND_FLAG = re.compile(r"\b\w+=\S+ \(CLI: (--[\w-]+(?: \w+)?)\)")


def _one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with ' | '), options named by their flag.

    Example:
        >>> _one_line(ValueError("in use: pass force=True (CLI: --force) to start afresh."))
        'in use: pass --force to start afresh.'
    """
    text = _KEYWORD_AND_FLAG.sub(r"\1", str(error))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):   # a heading ("3 problems:") runs into its list
        return f"{lines[0]} {' | '.join(lines[1:])}"
    return " | ".join(lines) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())

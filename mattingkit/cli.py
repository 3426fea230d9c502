"""The ``mattingkit`` command. Each subcommand is a thin wrapper over a package function.

Run ``mattingkit --help`` or ``mattingkit COMMAND --help``. The kit's own errors
(:class:`mattingkit.errors.MattingKitError`) are caught once, in :func:`main`: one line on stderr,
``mattingkit COMMAND: message``, and the error's exit code (:data:`EXIT_CODES`); anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import MattingKitError, UsageError

#: Exit codes of ``mattingkit`` (each :class:`~mattingkit.errors.MattingKitError` subclass carries one).
EXIT_CODES = {
    0: "success",
    1: "the work ran and found problems (a failed notebook, an invalid submission, failed images)",
    2: "usage or configuration error",
    3: "download or network error",
    4: "input data error (a missing or unreadable file or folder the command was given)",
    5: "device error (no GPU, unsupported GPU, out of memory)",
    6: "checkpoint or run-folder error (corrupt, locked, disk full)",
}


def _add_config_args(p: argparse.ArgumentParser, default: str = "demo") -> None:
    from .config import available_configs  # light: the shipped list is the configs folder

    p.add_argument("--config", default=default, help=f"shipped config name ({', '.join(available_configs())}) "
                   f"or a YAML path starting with `base: NAME` (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, e.g. --set train.lr_g=2e-4")


def _load(args):
    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "name", None):
        from .config import apply_overrides

        cfg = apply_overrides(cfg, {"run.name": args.name})
    return cfg


# --------------------------------------------------------------------------------------------
def cmd_demo_data(args) -> int:
    from .data.synthetic import make_demo_data

    summary = make_demo_data(args.root, seed=args.seed, force=args.force)
    print(f"demo data in {summary['root']} (seed {summary['seed']})")
    return 0


def cmd_config(args) -> int:
    from .config import to_yaml

    print(to_yaml(_load(args)), end="")
    return 0


def cmd_run(args) -> int:
    from .runner import run_pipeline

    result = run_pipeline(args.config, overrides=args.overrides, name=args.name, smoke=args.smoke,
                          runs_root=args.runs_root, notebooks=args.notebooks, parameters=parse_params(args.params))
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

    result = run_sweep(args.grid, runs_root=args.runs_root)
    return 0 if result.ok else 1


def cmd_train(args) -> int:
    from .train import train_and_report

    train_and_report(_load(args), run_dir=args.run_dir, fresh=args.fresh)
    return 0


def cmd_evaluate(args) -> int:
    from .metrics import evaluate_folder, format_table

    df = evaluate_folder(args.pred_dir, args.gt_dir, args.trimap_dir, out_csv=args.out)
    print(format_table(df))
    if args.out:
        print(f"per-image metrics: {args.out}")
    return 0


def cmd_predict(args) -> int:
    from .infer import infer_settings, load_model, predict_folder

    model, cfg = load_model(args.checkpoint, device=args.device)
    flags = {k: v for k, v in (("tta_flip", args.tta), ("two_pass", args.two_pass), ("write_rgba", args.rgba))
             if v is not None}  # given flags override the checkpoint's infer settings; absent ones keep them
    settings = infer_settings(cfg.infer if cfg is not None else None, **flags)
    report = predict_folder(model, args.images, args.out, trimap_dir=args.trimaps, infer_cfg=settings,
                            device=args.device, trimap_cfg=cfg.trimap if cfg is not None else None)
    return 0 if not report.failed else 1


def cmd_submit(args) -> int:
    from .submission import build_submission

    report = build_submission(args.alpha_dir, args.out, sample_csv=args.sample, test_dir=args.test_dir,
                              size=args.size)
    return 0 if getattr(report, "ok", True) else 1


def cmd_validate(args) -> int:
    from .submission import validate_submission

    report = validate_submission(args.csv, test_dir=args.test_dir, sample_csv=args.sample, size=args.size)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_decode(args) -> int:
    from .submission import decode_submission

    paths = decode_submission(args.csv, args.out)
    print(f"decoded {len(paths)} PNGs into {args.out}")
    return 0


def cmd_download(args) -> int:
    from .config import apply_overrides
    from .data.download import ensure_config_data

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
        raise UsageError("nothing to download: give --competition SLUG and/or --dataset owner/name[:folder]")
    for slug, folder in ensure_config_data(cfg).items():  # DownloadError: redacted, says what to do (exit 3)
        print(f"{slug}: {folder}")
    return 0


def cmd_manifest(args) -> int:
    from .data.layouts import build_manifest

    cfg = _load(args)
    df, report = build_manifest(cfg, args.out)
    print(report.summary())
    print(f"manifest: {args.out} ({len(df)} items)")
    return 0


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
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
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run a grid of parameter sets (grid.yaml), one run folder each")
    p.add_argument("grid", type=Path, help="sweep YAML: name, config, base overrides, grid of key: [values]")
    p.add_argument("--runs-root", type=Path, default=None)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("train", help="train a model (multi-GPU: `accelerate launch -m mattingkit.train ARGS`, "
                                     "the same arguments)")
    _add_config_args(p)
    p.add_argument("--name", default=None, help="run name (folder under the runs root)")
    p.add_argument("--run-dir", type=Path, default=None, help="explicit run folder (default: RUNS_ROOT/NAME)")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints/last.pt and start over")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="SAD/MSE/Grad/Conn (official DIM protocol) for a folder of predictions")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("gt_dir", type=Path)
    p.add_argument("trimap_dir", type=Path, nargs="?", default=None,
                   help="trimaps (0/128/255); omitted: whole image counts (competition style)")
    p.add_argument("--out", type=Path, default=None, help="per-image CSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict alpha PNGs for a folder of images")
    p.add_argument("checkpoint", type=Path, help="best.pt / last.pt or an inference export")
    p.add_argument("images", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--trimaps", type=Path, default=None, help="trimap folder (matching stems)")
    p.add_argument("--device", default="cpu")
    # None = not given: the checkpoint's infer.* settings stand; --x / --no-x override them
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal-flip test-time augmentation (default: the checkpoint's infer.tta_flip)")
    p.add_argument("--two-pass", action=argparse.BooleanOptionalAction, default=None,
                   help="trimap-free: coarse pass -> trimap -> refine (default: the checkpoint's infer.two_pass)")
    p.add_argument("--rgba", action=argparse.BooleanOptionalAction, default=None,
                   help="also write RGBA cut-outs (default: the checkpoint's infer.write_rgba)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("submit", help="build the competition CSV (filename,image_utf) from alpha PNGs")
    p.add_argument("alpha_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--sample", type=Path, default=None, help="sample_submission.csv (row order)")
    p.add_argument("--test-dir", type=Path, default=None, help="test images (names and sizes)")
    p.add_argument("--size", type=int, default=1024)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("validate", help="check a submission CSV; reports every problem at once")
    p.add_argument("csv", type=Path)
    p.add_argument("--sample", type=Path, default=None)
    p.add_argument("--test-dir", type=Path, default=None)
    p.add_argument("--size", type=int, default=1024)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("decode", help="decode a submission CSV back into PNGs")
    p.add_argument("csv", type=Path)
    p.add_argument("out", type=Path)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("download", help="download Kaggle competition files / datasets into data/")
    _add_config_args(p, default="ecom")
    p.add_argument("--competition", default=None, help="competition slug (default: the config's)")
    p.add_argument("--dataset", action="append", default=None, help="owner/name[:folder], repeatable")
    p.add_argument("--data-root", type=Path, default=None, help="default: the platform's data root")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("manifest", help="scan a dataset layout, validate every file, write a manifest CSV")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_manifest)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MattingKitError as e:
        print(f"mattingkit {args.command}: {_one_line(e)}", file=sys.stderr)
        return e.exit_code


def _one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with ' | ')."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return " | ".join(lines) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())

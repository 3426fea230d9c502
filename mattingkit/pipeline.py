"""The steps behind the five notebooks: one short function per notebook step, orchestrating the package.

Each step takes the :class:`~mattingkit.run.RunContext` from :func:`mattingkit.run.prepare_run`, writes its
outputs into the run folder, records what it measured in ``metrics.json`` (one section per notebook,
:func:`mattingkit.run.update_metrics`) and returns that dict. The work itself is the package's: the run
folder (:mod:`mattingkit.run`), inference and its cache (:func:`mattingkit.infer.predict_split`), the
official metrics (:func:`mattingkit.metrics.evaluate_triples`), pictures (:mod:`mattingkit.viz`: every saved
figure has a title, column headers and row labels, or labelled axes).

=====================  ==========================================================================
notebook               step(s)
=====================  ==========================================================================
01_data_download       :func:`doctor_report` (first: this machine); :func:`prepare_data` -> ``manifest.csv``
                       (+ ``manifest_test.csv``),
                       ``data_report.md``, ``data_samples.png``
02_trimap_synthesis    :func:`trimap_previews` -> ``trimap_previews.png``;
                       :func:`trimap_inspector` (the interactive widget)
03_train_gan           :func:`drive_space` (before training); :func:`train_model` -> ``checkpoints/``,
                       ``tb/``, ``metrics.jsonl``, ``curves.png``
04_inference           :func:`run_inference` -> ``predictions/val/``, ``metrics_val.csv``,
                       ``comparison.png``; :func:`evaluate_real_set` (``data.eval_root``: model vs
                       closed-form vs trimap-as-alpha) -> ``metrics_real.csv``, ``real_comparison.png``;
                       :func:`alpha_inspector`
05_submission          :func:`make_submission` -> ``predictions/test/``, ``submission.csv`` (+ the copy
                       in ``submissions/NAME.csv`` or ``/kaggle/working/submission.csv``),
                       ``submission_validation.txt``, ``submission_preview.png``; :func:`kaggle_submit`;
                       :func:`summary_table` (the run at a glance)
=====================  ==========================================================================

Example (the whole demo, headless; what ``mattingkit run --config demo`` does through the notebooks):
    >>> from mattingkit import pipeline, run                           # doctest: +SKIP
    >>> ctx = run.prepare_run("demo", ["train.steps=20"], "try")        # doctest: +SKIP
    >>> pipeline.prepare_data(ctx); pipeline.train_model(ctx)          # doctest: +SKIP
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import drive, env, evaluation, run
from .evaluation import evaluate_real_set, real_set_rows, real_set_table  # notebook 04 (real photos)
from .io import atomic_write_bytes, png_bytes
from .run import NB_DATA, NB_INFER, NB_SUBMIT, NB_TRAIN, NB_TRIMAP, RunContext, update_metrics
from .viz import show

PathLike = str | os.PathLike

PREVIEW_SIDE = 192
#: Smoke runs predict the (1024x1024) competition test images at this long side (then resize back).
SMOKE_MAX_SIDE = 256


# --------------------------------------------------------------------------------------------
# Small helpers (also used by the notebooks)
# --------------------------------------------------------------------------------------------
def save_png(path: PathLike, array: np.ndarray) -> Path:
    """Write a preview picture (uint8 / float RGB) atomically; returns the path."""
    return atomic_write_bytes(path, png_bytes(array))


def _seconds(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def _manifest(ctx: RunContext):  # the run's manifest (written by notebook 01; scanned now when missing)
    return run.load_manifest(ctx.cfg, ctx.run_dir)


# --------------------------------------------------------------------------------------------
# 01: data
# --------------------------------------------------------------------------------------------
def doctor_report(ctx: RunContext, probe: bool = True) -> dict[str, Any]:
    """Notebook 01, first: what this run gets on this machine (:func:`mattingkit.doctor.doctor` for the
    run's config: device, AMP, versions, roots and free space, credentials found or not, ImageNet
    weights), printed as :func:`mattingkit.doctor.format_report`; ``probe=False`` skips the network probe.
    Records ``doctor_ok`` and ``doctor_problems`` in the 01 section; returns the doctor dict."""
    from .doctor import doctor, format_report

    rep = doctor(ctx.cfg, probe=probe)
    print(format_report(rep))
    update_metrics(ctx.run_dir, NB_DATA, {"doctor_ok": bool(rep["ok"]), "doctor_problems": list(rep["problems"])})
    return rep


def ensure_data(ctx: RunContext, download: bool = True) -> dict[str, str]:
    """Notebook 01: make the config's data available (:func:`mattingkit.run.ensure_data`)."""
    return run.ensure_data(ctx.cfg, download=download)


def prepare_data(ctx: RunContext, n_preview: int = 4, download: bool = True) -> dict[str, Any]:
    """Notebook 01: data available -> ``manifest.csv`` (validated, split by foreground identity),
    ``manifest_test.csv`` (competition test images, when configured), ``data_report.md`` and
    ``data_samples.png`` (``n_preview`` samples; none for 0) in the run folder. Returns (and records) counts, sizes and problems.
    """
    from .data.manifest import pick_rows, write_manifest
    from .data.report import data_report_md, data_summary
    from .viz import manifest_figure, save_figure

    t0 = time.monotonic()
    cfg = ctx.cfg
    made = run.ensure_data(cfg, download=download)
    df, report = run.build_run_manifest(cfg, ctx.run_dir)
    print(report.summary())
    test = run.scan_test_images(cfg)
    if test is not None and len(test):
        write_manifest(test, ctx.path("manifest_test.csv"))
    values: dict[str, Any] = {
        "layout": cfg.data.layout, "data_root": str(run.data_path(cfg, cfg.data.root)),
        "manifest": str(ctx.path(run.MANIFEST_FILE)), **data_summary(df, report),
        "backgrounds": run.count_backgrounds(cfg), "test_images": None if test is None else int(len(test)),
        "made_available": made,
    }
    if n_preview > 0:   # n_preview=0: no figure
        note = "a plain mid-gray trimap: the dataset has none for that item (training synthesises trimaps)"
        save_figure(manifest_figure(pick_rows(df, n_preview, prefer="train"), f"Data samples ({cfg.data.layout} "
                                    "layout)", max_side=PREVIEW_SIDE, footnote=note), ctx.path("data_samples.png"))
    values["seconds"] = _seconds(t0)
    drive.write_text(ctx.path("data_report.md"), data_report_md(values, report))
    update_metrics(ctx.run_dir, NB_DATA, values)
    return values


# --------------------------------------------------------------------------------------------
# 02: trimaps
# --------------------------------------------------------------------------------------------
def trimap_previews(ctx: RunContext, n_samples: int = 4, max_side: int = PREVIEW_SIDE) -> dict[str, Any]:
    """Notebook 02: for ``n_samples`` items, ``image | erode_dilate | band | from_mask (| dataset trimap)``
    overlays -> ``trimap_previews.png``; records the mean unknown share and time of each method."""
    from .data.manifest import load_row, pick_rows
    from .trimap import TRIMAP_BUILDERS, config_trimaps, unknown_share
    from .viz import save_figure, trimap_methods_figure
    from .widgets import trimap_overlay

    t0 = time.monotonic()
    cfg = ctx.cfg
    shares: dict[str, list[float]] = {}
    ms: dict[str, list[float]] = {}
    items = []
    records = [r for r in pick_rows(_manifest(ctx), n_samples).to_dict("records") if r.get("alpha")]
    with_dataset = bool(records) and all(r.get("trimap") for r in records)
    for i, r in enumerate(records):
        s = load_row(r)
        if s["alpha"] is None:
            continue
        tris = {}
        for name in TRIMAP_BUILDERS:
            t1 = time.perf_counter()
            tris[name] = config_trimaps(s["alpha"], cfg.trimap, seed=cfg.run.seed + i, methods=(name,))[name]
            ms.setdefault(name, []).append(1000 * (time.perf_counter() - t1))
        if with_dataset:
            tris["dataset"] = s["trimap"] if s["trimap"].shape == s["alpha"].shape else np.full_like(s["alpha"], .5)
        for name, tri in tris.items():
            shares.setdefault(name, []).append(unknown_share(tri))
        items.append((str(r["id"]), s["image"], tris))
    if not items:
        raise ValueError("no item with an alpha matte to preview")
    fig = trimap_methods_figure(items, {k: float(np.mean(v)) for k, v in shares.items()}, cfg.trimap.method, max_side,
                                trimap_overlay)
    save_figure(fig, ctx.path("trimap_previews.png"))
    t = cfg.trimap
    values = {
        "samples": len(items), "columns": ["image", *shares],
        "unknown_share": {k: round(float(np.mean(v)), 5) for k, v in shares.items()},
        "ms_per_trimap": {k: round(float(np.mean(v)), 2) for k, v in ms.items()},
        "config": {"method": t.method, "kernel_range": list(t.kernel_range), "band_width": t.band_width,
                   "mask_band": t.mask_band},
        "seconds": _seconds(t0),
    }
    update_metrics(ctx.run_dir, NB_TRIMAP, values)
    return values


def trimap_inspector(ctx: RunContext, limit: int = 50, **kwargs):
    """Notebook 02: the interactive :class:`~mattingkit.widgets.TrimapInspector` over the run's
    manifest (validation items first), starting from the config's trimap settings."""
    from .data.manifest import pick_rows
    from .widgets import TrimapInspector

    df = _manifest(ctx)
    kwargs.setdefault("cfg", ctx.cfg)
    return TrimapInspector(pick_rows(df[df["alpha"] != ""], limit), **kwargs)


# --------------------------------------------------------------------------------------------
# 03: training
# --------------------------------------------------------------------------------------------
def drive_space(ctx: RunContext) -> dict[str, Any]:
    """Notebook 03, before training: what a run folder on Drive (:func:`mattingkit.env.on_drive`) writes there,
    trash included, beside its free space (:func:`mattingkit.checkpoint.drive_space_needed`), else the local peak."""
    from .checkpoint import drive_space_needed

    need = drive_space_needed(ctx.cfg, ctx.run_dir)
    print(need["message"] if env.on_drive(ctx.run_dir) else   # Drive's quota and trash: only there
          f"Checkpoints need about {need['peak_bytes'] / 1e9:.2f} GB in {ctx.run_dir} while one is replaced.")
    return need


def train_model(ctx: RunContext, fresh: bool = False, num_processes: int = 1) -> dict[str, Any]:
    """Notebook 03: :func:`mattingkit.train.train` in the run folder (resumes from ``last.pt`` when
    present; ``fresh`` starts over), then ``curves.png``. ``num_processes > 1``: multi-GPU through
    :func:`mattingkit.train.launch_notebook`. The other notebooks' sections of ``metrics.json`` are
    kept; the trainer's summary becomes the ``03_train_gan`` section.
    """
    from .train import launch_notebook, train

    t0 = time.monotonic()
    if num_processes > 1:
        summary = launch_notebook(ctx.cfg, num_processes=num_processes, run_dir=ctx.run_dir, fresh=fresh)
    else:
        summary = train(ctx.cfg, ctx.run_dir, fresh=fresh)
    curves = _plot_curves(ctx)
    keys = ("step", "steps", "stopped", "best", "final", "elapsed_s", "steps_per_s", "resumed_from",
            "nonfinite_total", "checkpoints")
    values = {**{k: summary.get(k) for k in keys}, "curves": str(curves) if curves else None,
              "seconds": _seconds(t0)}
    update_metrics(ctx.run_dir, NB_TRAIN, values)  # the trainer's own summary is train_summary.json
    return values


def _plot_curves(ctx: RunContext) -> Path | None:
    from .viz import plot_history, save_figure

    hist = ctx.path(run.HISTORY_FILE)
    return save_figure(plot_history(hist), ctx.path("curves.png")) if hist.exists() else None


def show_tensorboard(ctx: RunContext) -> None:
    """Start TensorBoard on the run's ``tb/`` inside a live notebook (nothing in headless runs)."""
    if env.is_headless() or not env.in_notebook():
        print(f"TensorBoard logs: {ctx.path('tb')}  (tensorboard --logdir {ctx.path('tb')})")
        return
    from IPython import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "tensorboard")
    ip.run_line_magic("tensorboard", f"--logdir {ctx.path('tb')}")


# --------------------------------------------------------------------------------------------
# 04: inference + metrics
# --------------------------------------------------------------------------------------------
def checkpoint_path(ctx: RunContext, which: str = "best") -> Path:
    """The run's checkpoint (:func:`mattingkit.checkpoint.find_checkpoint`: ``best`` falls back to ``last``)."""
    from .checkpoint import find_checkpoint

    return find_checkpoint(ctx.run_dir, which)


def load_model(ctx: RunContext, checkpoint: str = "best"):
    """``(model, cfg)`` from the run's checkpoint on the config's device (see :func:`checkpoint_path`)."""
    from .infer import load_model as _load

    return _load(checkpoint_path(ctx, checkpoint), device=ctx.cfg.run.device)


def _split_rows(df, split: str, limit: int | None):
    rows = df[df["split"] == split]
    if len(rows) == 0:
        print(f"no {split!r} items in the manifest: using all {len(df)} items")
        rows = df
    return rows.iloc[:limit] if limit else rows


def run_inference(ctx: RunContext, checkpoint: str = "best", limit: int | None = None, n_preview: int = 4,
                  split: str = "val") -> dict[str, Any]:
    """Notebook 04: predict the ``split`` items (with their trimaps for trimap models) into
    ``predictions/<split>/`` (:func:`mattingkit.infer.predict_split`); with ground truth, the official
    SAD/MSE/Grad/Conn per image (``metrics_<split>.csv``) and their means; ``comparison.png``
    (image | trimap | GT | prediction | error). ``limit`` defaults to ``data.val_limit``.
    """
    from .infer import predict_split

    t0 = time.monotonic()
    rows = _split_rows(_manifest(ctx), split, ctx.cfg.data.val_limit if limit is None else limit)
    res = predict_split(checkpoint_path(ctx, checkpoint), rows, ctx.path("predictions", split), ctx.cfg)
    values = evaluation.evaluate_split(ctx, rows, res, split, n_preview)
    values["seconds"] = _seconds(t0)
    update_metrics(ctx.run_dir, NB_INFER, values)
    return values


def alpha_inspector(ctx: RunContext, split: str = "val", limit: int | None = 50, **kwargs):
    """Notebook 04: the interactive :class:`~mattingkit.widgets.AlphaInspector` over the predictions
    of :func:`run_inference` (per-image official metrics, sorted by error)."""
    from .widgets import AlphaInspector

    df = _manifest(ctx)
    rows = df[df["split"] == split] if (df["split"] == split).any() else df
    return AlphaInspector.from_predictions(rows, ctx.path("predictions", split), limit=limit, **kwargs)


# --------------------------------------------------------------------------------------------
# 05: submission
# --------------------------------------------------------------------------------------------
def submission_destination(ctx: RunContext, submission_dir: PathLike | None = None) -> Path:
    """Where the final CSV goes (:func:`mattingkit.run.submission_destination`)."""
    return run.submission_destination(ctx.cfg, ctx.run_dir, submission_dir)


def _test_inputs(ctx: RunContext) -> tuple[Path, Path | None]:
    """(test image folder, sample CSV or None) of the config; the folder must exist."""
    from .errors import InputNotFoundError

    cfg = ctx.cfg
    test_dir = run.data_path(cfg, cfg.submission.test_dir)
    if test_dir is None or not test_dir.is_dir():
        raise InputNotFoundError(f"test images not found: submission.test_dir={cfg.submission.test_dir!r} "
                                 f"(resolved: {test_dir}); run notebook 01 or set submission.test_dir")
    sample = run.data_path(cfg, cfg.submission.sample_csv)
    if sample is not None and not sample.is_file():
        print(f"sample submission {sample} not found: rows follow the sorted test stems")
        sample = None
    return test_dir, sample


def make_submission(ctx: RunContext, checkpoint: str = "best", n_show: int = 3,
                    submission_dir: PathLike | None = None, copy: bool = True,
                    max_side: int | None = None) -> dict[str, Any]:
    """Notebook 05: predict the competition test images (trimap-free: two passes for trimap models,
    one for trimap-free models; :func:`mattingkit.infer.predict_split`) into ``predictions/test/``, write
    ``submission.csv`` in the run folder, validate it, copy it to :func:`submission_destination` (when
    ``copy``), and draw ``submission_preview.png`` (test image | decoded CSV alpha) for the first
    ``n_show`` rows.

    ``max_side``: predict on copies downscaled to this long side; the alphas are resized back to the
    test size when the CSV is built (quick CPU previews; smoke runs: :data:`SMOKE_MAX_SIDE`). The model's own
    ``infer.max_side`` applies on top (recorded as ``infer_max_side``).
    """
    from .infer import downscaled_copy, predict_split
    from .infer.cache import publish, split_dir
    from .submission import SubmissionError, build_submission, validate_submission
    from .viz import save_figure, submission_figure

    t0 = time.monotonic()
    cfg = ctx.cfg
    test_dir, sample = _test_inputs(ctx)
    if max_side is None and cfg.run.smoke:
        max_side = SMOKE_MAX_SIDE
    inputs = downscaled_copy(test_dir, split_dir(ctx.path("inputs"), "test", max_side), max_side) if max_side else test_dir
    res = predict_split(checkpoint_path(ctx, checkpoint), inputs, split_dir(ctx.path("predictions"), "test", max_side), cfg)
    if res.report.failed:
        raise SubmissionError(f"{len(res.report.failed)} test image(s) failed:\n{res.report.summary()}")
    run_csv = ctx.path("submission.csv")
    built = build_submission(res.out_dir, run_csv, sample_csv=sample, test_dir=test_dir, size=cfg.submission.size)
    check = validate_submission(run_csv, test_dir=test_dir, sample_csv=sample, size=cfg.submission.size)
    print(check.summary())
    drive.write_text(ctx.path("submission_validation.txt"), check.summary() + "\n")
    final = publish(run_csv, submission_destination(ctx, submission_dir)) if copy else None
    if final:
        print(f"submission: {final}")
    print(f"predicted by {res.describe()}")
    fig = submission_figure(run_csv, test_dir, ctx.path("decoded"), n_show, made_by=res.describe())
    if fig is not None:
        save_figure(fig, ctx.path("submission_preview.png"))
    values = {"test_dir": str(test_dir), "rows": built.rows, "file_size": built.file_size, "order": built.order,
              "resized": len(built.resized), "valid": bool(check.ok), "problems": list(check.problems),
              "warnings": list(check.warnings), "two_pass": res.settings.two_pass, "max_side": max_side,
              "infer_max_side": res.settings.max_side, "made_by": res.describe(),
              "checkpoint": str(res.checkpoint), "run_csv": str(run_csv), "csv": str(final) if final else None,
              "predict_seconds": round(res.report.seconds, 2), "seconds": _seconds(t0)}
    update_metrics(ctx.run_dir, NB_SUBMIT, values)
    if not check.ok:
        raise SubmissionError(f"the submission does not validate:\n{check.summary()}")
    return values


def kaggle_submit(ctx: RunContext, competition: str, message: str, csv: PathLike | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """Notebook 05: upload the run's submission (``csv``, default the run folder's ``submission.csv``) to
    the Kaggle ``competition`` with ``message`` (:func:`mattingkit.kaggle.submit_to_kaggle`:
    credentials from the environment, never printed), wait for the public score and print its line.
    Records ``kaggle`` (competition, status, scores) in the 05 section. ``kwargs`` go to
    ``submit_to_kaggle`` (``poll``, ``timeout_s``, ...)."""
    from . import kaggle

    path = Path(csv) if csv is not None else ctx.path("submission.csv")
    result = kaggle.submit_to_kaggle(path, competition, message, **kwargs)
    print(result)
    values = {"competition": result.competition, "file": str(path), "message": result.message,
              "status": result.status, "public_score": result.public_score,
              "private_score": result.private_score, "url": result.url}
    update_metrics(ctx.run_dir, NB_SUBMIT, {"kaggle": values})
    return values


def summary_table(ctx: RunContext | PathLike) -> str:
    """Notebook 05, last: the run at a glance (:func:`mattingkit.run.summary_table`)."""
    return run.summary_table(ctx)


__all__ = [
    "alpha_inspector", "checkpoint_path", "doctor_report", "drive_space", "ensure_data", "evaluate_real_set",
    "kaggle_submit", "load_model", "make_submission", "prepare_data", "real_set_rows", "real_set_table",
    "run_inference", "save_png", "show", "show_tensorboard", "submission_destination", "summary_table",
    "train_model", "trimap_inspector", "trimap_previews",
]

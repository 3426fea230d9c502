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
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import env, run
from .io import atomic_write_bytes, atomic_write_text, png_bytes
from .run import RunContext, update_metrics

PathLike = str | os.PathLike

NB_DATA, NB_TRIMAP, NB_TRAIN, NB_INFER, NB_SUBMIT = ("01_data_download", "02_trimap_synthesis", "03_train_gan",
                                                      "04_inference", "05_submission")
PREVIEW_SIDE = 192
#: Smoke runs predict the (1024x1024) competition test images at this long side (then resize back).
SMOKE_MAX_SIDE = 256


# --------------------------------------------------------------------------------------------
# Small helpers (also used by the notebooks)
# --------------------------------------------------------------------------------------------
def show(what: Any, width: int | None = None) -> None:
    """Display a PNG file / PNG bytes / image array in a notebook; print the path elsewhere.

    Example: ``pipeline.show(ctx.path("data_samples.png"))``
    """
    if not env.in_notebook():
        if isinstance(what, (str, os.PathLike)):
            print(f"[image] {what}")
        return
    from IPython.display import Image, display

    if isinstance(what, (str, os.PathLike)):
        display(Image(filename=str(what), width=width))
    elif isinstance(what, (bytes, bytearray)):
        display(Image(data=bytes(what), width=width))
    else:
        display(Image(data=png_bytes(np.asarray(what)), width=width))


def save_png(path: PathLike, array: np.ndarray) -> Path:
    """Write a preview picture (uint8 / float RGB) atomically; returns the path."""
    return atomic_write_bytes(path, png_bytes(array))


def _seconds(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def _manifest(ctx: RunContext):
    """The run's manifest (written by notebook 01; scanned now when missing)."""
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
    ``data_samples.png`` in the run folder. Returns (and records) counts, sizes and problems.
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
    fig = manifest_figure(pick_rows(df, n_preview, prefer="train"), f"Data samples ({cfg.data.layout} layout)",
                          max_side=PREVIEW_SIDE, footnote="a plain mid-gray trimap: the dataset has none for that "
                          "item (training synthesises trimaps)")
    save_figure(fig, ctx.path("data_samples.png"))
    values["seconds"] = _seconds(t0)
    atomic_write_text(ctx.path("data_report.md"), data_report_md(values, report))
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
    from .viz import fit_side, grid_figure, save_figure
    from .widgets import trimap_overlay

    t0 = time.monotonic()
    cfg = ctx.cfg
    shares: dict[str, list[float]] = {}
    ms: dict[str, list[float]] = {}
    rows, labels = [], []
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
        rows.append([fit_side(s["image"], max_side)]
                    + [fit_side(trimap_overlay(s["image"], t), max_side) for t in tris.values()])
        labels.append(str(r["id"]))
    if not rows:
        raise ValueError("no item with an alpha matte to preview")
    cols = ["image"] + [f"{k} ({100 * np.mean(v):.0f}% unknown)" for k, v in shares.items()]
    fig = grid_figure(rows, cols, f"Trimap methods (configured: {cfg.trimap.method})", row_labels=labels,
                      footnote="background dimmed, unknown band tinted, foreground as is; "
                               "% unknown = mean share of unknown pixels")
    save_figure(fig, ctx.path("trimap_previews.png"))
    t = cfg.trimap
    values = {
        "samples": len(rows), "columns": ["image", *shares],
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
    """Notebook 03, before training: how much space the run's checkpoints need (on Google Drive when
    the run folder is there; :func:`mattingkit.checkpoint.drive_space_needed`). Prints its message."""
    from .checkpoint import drive_space_needed

    need = drive_space_needed(ctx.cfg)
    if env.detect_platform() == "colab" and env.drive_mounted():   # Drive's quota and trash: only there
        print(need["message"])
    else:
        print(f"Checkpoints need about {need['peak_bytes'] / 1e9:.2f} GB in {ctx.run_dir} while one is replaced.")
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
    hist = ctx.path(run.HISTORY_FILE)
    if not hist.exists():
        return None
    import matplotlib.pyplot as plt

    from .viz import plot_history

    plt.close(plot_history(hist, ctx.path("curves.png")))
    return ctx.path("curves.png")


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
    """The run's checkpoint (:func:`mattingkit.run.find_checkpoint`: ``best`` falls back to ``last``)."""
    return run.find_checkpoint(ctx.run_dir, which)


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
    from .metrics import evaluate_triples, format_table
    from .viz import manifest_figure, save_figure

    t0 = time.monotonic()
    rows = _split_rows(_manifest(ctx), split, ctx.cfg.data.val_limit if limit is None else limit)
    res = predict_split(checkpoint_path(ctx, checkpoint), rows, ctx.path("predictions", split), ctx.cfg)
    rep = res.report
    values: dict[str, Any] = {"checkpoint": str(res.checkpoint), "split": split, "images": len(rows),
                              "written": len(rep.written), "skipped": len(rep.skipped), "failed": len(rep.failed),
                              "with_trimap": res.with_trimap, "predict_seconds": round(rep.seconds, 2)}
    if bool((rows["alpha"] != "").all()):
        triples = [(r["id"], res.out_dir / f"{r['id']}.png", r["alpha"], r["trimap"] if res.with_trimap else None)
                   for r in rows.to_dict("records")]
        table = evaluate_triples(triples, out_csv=ctx.path(f"metrics_{split}.csv"), warn=False)
        print(format_table(table))
        values.update({k: (round(v, 6) if np.isfinite(v) else None) for k, v in table.attrs["mean"].items()})
        values.update(evaluated=int(len(table)), eval_problems=len(table.attrs["errors"]),
                      trimap_region="unknown" if res.with_trimap else "whole image")
    try:
        sad = f", mean SAD {values['sad']:.4g}" if values.get("sad") is not None else ""
        fig = manifest_figure(rows.iloc[:n_preview], f"Predictions on the {split} split{sad}",
                              ("image", "trimap", "alpha", "pred", "error"), PREVIEW_SIDE, pred_dir=res.out_dir,
                              footnote=f"checkpoint {res.checkpoint.name}; "
                                       f"{'dataset trimaps' if res.with_trimap else 'trimap-free prediction'}")
        values["comparison"] = str(save_figure(fig, ctx.path("comparison.png")))
    except ValueError:  # no prediction to show
        pass
    values["seconds"] = _seconds(t0)
    update_metrics(ctx.run_dir, NB_INFER, values)
    return values


#: The classical rows of the real-set table (:mod:`mattingkit.baselines` methods) and their labels.
REAL_BASELINES = ("closed_form", "trimap")
METHOD_LABELS = {"model": "model", "closed_form": "closed-form", "knn": "KNN", "trimap": "trimap-as-alpha"}


def real_set_rows(ctx: RunContext, limit: int | None = None):
    """The manifest rows (``id``, ``image``, ``alpha``, ``trimap``) of the config's real evaluation set
    ``data.eval_root`` (alphamatting, aim500 or folder layout: the trainer's finder), or None when none
    is configured. Rows without a trimap are left out (the official metrics need one)."""
    from .data.datasets import _find_eval_rows

    if not ctx.cfg.data.eval_root:
        return None
    rows = _find_eval_rows(run.data_path(ctx.cfg, ctx.cfg.data.eval_root))
    rows = rows[(rows["alpha"] != "") & (rows["trimap"] != "")].reset_index(drop=True)
    if len(rows) == 0:
        raise ValueError(f"data.eval_root={ctx.cfg.data.eval_root!r}: no image with both an alpha and a trimap")
    return rows.iloc[:limit] if limit else rows


def _predict_baseline(rows, out_dir: Path, method: str, max_pixels: int | None):
    """Predict ``rows`` with a classical method into ``out_dir``, cached per producer (``_source.json``)."""
    from .baselines import BaselinePredictor
    from .errors import RunStateError
    from .infer import predict_folder

    model = BaselinePredictor(method, max_pixels=max_pixels)
    items = rows[["id", "image", "trimap"]]
    try:   # the same producer resumes (the folder is keyed by the eval set); another one is replaced
        report = predict_folder(model, items, out_dir, device="cpu", verbose=False)
    except RunStateError:
        report = predict_folder(model, items, out_dir, device="cpu", verbose=False, force=True)
    out = Path(out_dir)
    return out, report, model.notes


def evaluate_real_set(ctx: RunContext, checkpoint: str = "best", limit: int | None = None,
                      methods: tuple[str, ...] = REAL_BASELINES, n_preview: int = 3,
                      max_pixels: int | None = None) -> dict[str, Any] | None:
    """Notebook 04: the model beside classical baselines on the real set of ``data.eval_root`` (None when
    none is configured). Predicts every photo with the run's checkpoint (its trimaps for trimap models,
    :func:`mattingkit.infer.predict_split`) and with each of ``methods`` (closed-form matting, the
    trimap itself as alpha, ...; ``max_pixels``: their downscale threshold), each into its own cached
    folder under ``predictions/real/<eval root name>-<hash>/``; scores all of them with the official
    SAD / MSE / Grad / Conn on
    the same images and the unknown region of the same trimaps (``metrics_real.csv``: one row per
    method and image) and draws ``real_comparison.png``. Records the table under ``real_set`` in the 04
    section and returns it.
    """
    from .baselines import DEFAULT_MAX_PIXELS
    from .infer import predict_split
    from .metrics import METRICS, evaluate_triples

    t0 = time.monotonic()
    rows = real_set_rows(ctx, limit)
    if rows is None:
        print("no real evaluation set configured (data.eval_root): skipped")
        return None
    import hashlib

    root = run.data_path(ctx.cfg, ctx.cfg.data.eval_root).resolve()
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    base = ctx.path("predictions", "real", f"{run.safe_name(root.name)}-{tag}")
    res = predict_split(checkpoint_path(ctx, checkpoint), rows, base / "model", ctx.cfg, verbose=False)
    dirs, notes = {"model": res.out_dir}, []
    failed = {"model": len(res.report.failed)}
    for m in methods:
        out, rep, n = _predict_baseline(rows, base / m, m,
                                        DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
        dirs[m], failed[m] = out, len(rep.failed)
        notes += [f"{METHOD_LABELS.get(m, m)}: {t}" for t in n]
    tables, per_image = {}, []
    for name, d in dirs.items():
        triples = [(r["id"], d / f"{r['id']}.png", r["alpha"], r["trimap"]) for r in rows.to_dict("records")]
        t = evaluate_triples(triples, warn=False)
        tables[name] = {"method": METHOD_LABELS.get(name, name), "images": int(len(t)),
                        **{k: _round4(t.attrs["mean"].get(k)) for k in METRICS}}
        per_image.append(t.assign(method=METHOD_LABELS.get(name, name)))
        if len(t) < len(rows):
            first = (t.attrs["errors"] or [{}])[0]
            notes.append(f"{METHOD_LABELS.get(name, name)}: {len(rows) - len(t)} of {len(rows)} photo(s) not "
                         f"evaluated (first problem: {first})")
    import pandas as pd

    csv = pd.concat(per_image, ignore_index=True)[["method", "image", *METRICS]]
    atomic_write_text(ctx.path("metrics_real.csv"), csv.to_csv(index=False))
    table = pd.DataFrame(list(tables.values())).set_index("method")
    print(f"real set: {len(rows)} photos from {ctx.cfg.data.eval_root} (official metrics on the trimaps' "
          f"unknown region; lower is better)\n{table.to_string()}")
    for n in notes:
        print(f"note: {n}")
    values = {"root": str(ctx.cfg.data.eval_root), "images": int(len(rows)), "checkpoint": str(res.checkpoint),
              "model_trimaps": res.with_trimap, "table": tables, "failed": failed, "notes": notes,
              "folders": {k: str(v) for k, v in dirs.items()},
              "csv": str(ctx.path("metrics_real.csv"))}
    values["comparison"] = str(_real_comparison(ctx, rows.iloc[:n_preview], dirs, tables))
    values["seconds"] = _seconds(t0)
    update_metrics(ctx.run_dir, NB_INFER, {"real_set": values})
    return values


def real_set_table(values: dict[str, Any] | None):
    """The real-set table of :func:`evaluate_real_set` as a DataFrame (method rows, metric columns)."""
    import pandas as pd

    if not values:
        return None
    return pd.DataFrame(list(values["table"].values())).set_index("method")


def _real_comparison(ctx: RunContext, rows, dirs: dict[str, Path], tables: dict[str, dict]) -> Path:
    """``real_comparison.png``: image | trimap | ground truth | each method's prediction | model error."""
    from .data.manifest import load_row
    from .io import read_alpha
    from .viz import fit_nearest, fit_side, grid_figure, save_figure

    grid, labels = [], []
    for r in rows.to_dict("records"):
        s = load_row(r)
        preds = {n: read_alpha(d / f"{r['id']}.png") for n, d in dirs.items() if (d / f"{r['id']}.png").exists()}
        err = np.clip(np.abs(preds["model"] - s["alpha"]) * 2, 0, 1) if "model" in preds else np.zeros_like(s["alpha"])
        grid.append([fit_side(s["image"], PREVIEW_SIDE), fit_nearest(s["trimap"], PREVIEW_SIDE),
                     fit_side(s["alpha"], PREVIEW_SIDE)] + [fit_side(preds.get(n, np.zeros_like(s["alpha"])),
                                                                     PREVIEW_SIDE) for n in dirs]
                    + [fit_side(err, PREVIEW_SIDE)])
        labels.append(str(r["id"]))
    cols = (["image", "trimap", "ground truth"]
            + [f"{METHOD_LABELS.get(n, n)}\nSAD {_fmt(tables[n]['sad'])}" for n in dirs] + ["|error| of model"])
    fig = grid_figure(grid, cols, f"Real photos ({ctx.cfg.data.eval_root}): model vs classical baselines",
                      row_labels=labels, footnote="SAD = mean over all evaluated photos (official metric, "
                      "unknown region; lower is better); error white at >= 0.5")
    return save_figure(fig, ctx.path("real_comparison.png"))


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


def _publish(src: Path, final: Path) -> Path:
    """Copy ``src`` to ``final`` atomically (a temporary file renamed into place)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, final)
    print(f"submission: {final}")
    return final


def _submission_preview(ctx: RunContext, csv_path: Path, test_dir: Path, n_show: int) -> None:
    """``submission_preview.png``: the first ``n_show`` rows decoded from the CSV beside their test images."""
    from .submission import decode_submission
    from .viz import manifest_figure, save_figure

    decoded = decode_submission(csv_path, ctx.path("decoded"), limit=n_show)
    rows = [{"id": p.stem, "alpha": str(p),
             "image": str(next(iter(sorted(test_dir.glob(f"{p.stem}.*"))), ""))} for p in decoded]
    if rows:
        fig = manifest_figure(rows, f"Submission preview: first {len(rows)} rows of {csv_path.name}",
                              ("image", "alpha"), 256, footnote="alpha = the PNG decoded from the CSV's image_utf")
        fig.axes[1].set_title("alpha decoded from the CSV", fontsize=9)
        save_figure(fig, ctx.path("submission_preview.png"))


def make_submission(ctx: RunContext, checkpoint: str = "best", n_show: int = 3,
                    submission_dir: PathLike | None = None, copy: bool = True,
                    max_side: int | None = None) -> dict[str, Any]:
    """Notebook 05: predict the competition test images (trimap-free: two passes for trimap models,
    one for trimap-free models; :func:`mattingkit.infer.predict_split`) into ``predictions/test/``, write
    ``submission.csv`` in the run folder, validate it, copy it to :func:`submission_destination` (when
    ``copy``), and draw ``submission_preview.png`` (test image | decoded CSV alpha) for the first
    ``n_show`` rows.

    ``max_side``: predict on copies downscaled to this long side; the alphas are resized back to the
    test size when the CSV is built (quick CPU previews). Smoke runs use :data:`SMOKE_MAX_SIDE` unless given.
    """
    from .infer import downscaled_copy, predict_split
    from .submission import SubmissionError, build_submission, validate_submission

    t0 = time.monotonic()
    cfg = ctx.cfg
    test_dir, sample = _test_inputs(ctx)
    if max_side is None and cfg.run.smoke:
        max_side = SMOKE_MAX_SIDE
    inputs = downscaled_copy(test_dir, ctx.path("inputs", f"test_{max_side}"), max_side) if max_side else test_dir
    res = predict_split(checkpoint_path(ctx, checkpoint), inputs,
                        ctx.path("predictions", f"test_{max_side}" if max_side else "test"), cfg)
    if res.report.failed:
        raise SubmissionError(f"{len(res.report.failed)} test image(s) failed:\n{res.report.summary()}")
    run_csv = ctx.path("submission.csv")
    built = build_submission(res.out_dir, run_csv, sample_csv=sample, test_dir=test_dir, size=cfg.submission.size)
    check = validate_submission(run_csv, test_dir=test_dir, sample_csv=sample, size=cfg.submission.size)
    print(check.summary())
    atomic_write_text(ctx.path("submission_validation.txt"), check.summary() + "\n")
    final = _publish(run_csv, submission_destination(ctx, submission_dir)) if copy else None
    _submission_preview(ctx, run_csv, test_dir, n_show)
    values = {"test_dir": str(test_dir), "rows": built.rows, "file_size": built.file_size, "order": built.order,
              "resized": len(built.resized), "valid": bool(check.ok), "problems": list(check.problems),
              "warnings": list(check.warnings), "two_pass": res.settings.two_pass, "max_side": max_side,
              "checkpoint": str(res.checkpoint), "run_csv": str(run_csv), "csv": str(final) if final else None,
              "predict_seconds": round(res.report.seconds, 2), "seconds": _seconds(t0)}
    update_metrics(ctx.run_dir, NB_SUBMIT, values)
    if not check.ok:
        raise SubmissionError(f"the submission does not validate:\n{check.summary()}")
    return values


def kaggle_submit(ctx: RunContext, competition: str, message: str, csv: PathLike | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """Notebook 05: upload the run's submission (``csv``, default the run folder's ``submission.csv``) to
    the Kaggle ``competition`` with ``message`` (:func:`mattingkit.data.download.submit_to_kaggle`:
    credentials from the environment, never printed), wait for the public score and print its line.
    Records ``kaggle`` (competition, status, scores) in the 05 section. ``kwargs`` go to
    ``submit_to_kaggle`` (``poll``, ``timeout_s``, ...)."""
    from .data import download

    path = Path(csv) if csv is not None else ctx.path("submission.csv")
    result = download.submit_to_kaggle(path, competition, message, **kwargs)
    print(result)
    values = {"competition": result.competition, "file": str(path), "message": result.message,
              "status": result.status, "public_score": result.public_score,
              "private_score": result.private_score, "url": result.url}
    update_metrics(ctx.run_dir, NB_SUBMIT, {"kaggle": values})
    return values


def _round4(v: Any) -> Any:
    """A float rounded to 4 significant digits (None for NaN / inf); other values as they are."""
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.4g}") if np.isfinite(v) else None
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}" if np.isfinite(v) else "nan"
    return str(v)


def _headline(section: str, vals: dict[str, Any]) -> list[str]:
    """The few numbers that say how a notebook went (its headline first)."""
    if section == NB_DATA:
        splits = vals.get("splits") or {}
        out = [f"items={_fmt(vals.get('items'))}"] + [f"{k}={v}" for k, v in splits.items()]
        if vals.get("test_images") is not None:
            out.append(f"test images={vals['test_images']}")
        if "doctor_ok" in vals:
            out.append("doctor ok" if vals["doctor_ok"] else f"doctor: {len(vals.get('doctor_problems') or [])} "
                       "problem(s)")
        return out
    if section == NB_TRIMAP:
        shares = vals.get("unknown_share") or {}
        return ["unknown share: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shares.items())] if shares else []
    if section == NB_TRAIN:
        best = vals.get("best") or {}
        out = []
        if best.get("value") is not None:
            out.append(f"best val {best.get('metric', 'metric')}={_fmt(best['value'])} at step {best.get('step')}")
        out += [f"steps={vals.get('step')}/{vals.get('steps')}", f"stopped={vals.get('stopped')}"]
        if vals.get("steps_per_s") is not None:
            out.append(f"steps/s={_fmt(vals['steps_per_s'])}")
        return out
    if section == NB_INFER:
        names = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn"}
        out = [f"{n}={_fmt(vals[k])}" for k, n in names.items() if k in vals]
        out.append(f"images={vals.get('images')} ({vals.get('split', 'val')})")
        real = vals.get("real_set") or {}
        table = real.get("table") or {}
        for name, row in sorted(table.items(), key=lambda kv: kv[0] != "model"):
            out.append(f"real {row.get('method', name)} SAD={_fmt(row.get('sad'))}")
        return out
    if section == NB_SUBMIT:
        out = [f"rows={vals.get('rows')}", f"valid={vals.get('valid')}",
               f"csv={vals.get('csv') or vals.get('run_csv')}"]
        k = vals.get("kaggle") or {}
        if k:
            out.append(f"kaggle {k.get('competition')}: {k.get('status')}, public score {k.get('public_score')}")
        return out
    keys = [k for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [f"{k}={_fmt(vals[k])}" for k in keys[:8]]


def summary_table(ctx: RunContext | PathLike) -> str:
    """The run at a glance: one line per notebook of ``metrics.json`` with its headline numbers first
    (SAD / MSE / Grad / Conn for 04 and the real-set rows, the best validation value and its step for 03,
    rows and validity for 05), numbers rounded to 4 significant digits; all four matting metrics are
    errors: lower is better.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = run.update_metrics(d, NB_INFER, {"conn": 1.0, "images": 2, "sad": 12.34567, "mse": 0.0123456})
        >>> _ = run.update_metrics(d, NB_TRAIN, {"best": {"metric": "sad", "value": 3.14159, "step": 40},
        ...                                      "step": 50, "steps": 50, "stopped": "done"})
        >>> print(summary_table(d))
        03_train_gan: best val sad=3.142 at step 40, steps=50/50, stopped=done
        04_inference: SAD=12.35, MSE=0.01235, Conn=1, images=2 (val)
        (matting errors SAD / MSE / Grad / Conn: lower is better)
    """
    run_dir = ctx.run_dir if isinstance(ctx, RunContext) else Path(ctx)
    lines = [f"{section}: " + ", ".join(_headline(section, vals))
             for section, vals in sorted(run.read_metrics(run_dir).items()) if isinstance(vals, dict)]
    return "\n".join(lines + ["(matting errors SAD / MSE / Grad / Conn: lower is better)"])


__all__ = [
    "alpha_inspector", "checkpoint_path", "doctor_report", "drive_space", "ensure_data", "evaluate_real_set",
    "kaggle_submit", "load_model", "make_submission", "prepare_data", "real_set_rows", "real_set_table",
    "run_inference", "save_png", "show", "show_tensorboard", "submission_destination", "summary_table",
    "train_model", "trimap_inspector", "trimap_previews",
]

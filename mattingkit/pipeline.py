"""The steps behind the five notebooks, one function per notebook step, so every cell stays a few lines.

Each step takes the :class:`~mattingkit.runner.RunContext` from :func:`mattingkit.runner.prepare_run`,
writes its outputs into the run folder, records what it measured in ``metrics.json`` (one section per
notebook, :func:`mattingkit.runner.update_metrics`) and returns that dict.

=====================  ==========================================================================
notebook               step(s)
=====================  ==========================================================================
01_data_download       :func:`prepare_data` -> ``manifest.csv`` (+ ``manifest_test.csv``),
                       ``data_report.md``, ``data_samples.png``
02_trimap_synthesis    :func:`trimap_previews` -> ``trimap_previews.png``;
                       :func:`trimap_inspector` (the interactive widget)
03_train_gan           :func:`train_model` -> ``checkpoints/``, ``tb/``, ``metrics.jsonl``, ``curves.png``
04_inference           :func:`run_inference` -> ``predictions/val/``, ``metrics_val.csv``,
                       ``comparison.png``; :func:`alpha_inspector`
05_submission          :func:`make_submission` -> ``predictions/test/``, ``submission.csv`` (+ the copy
                       in ``submissions/NAME.csv`` or ``/kaggle/working/submission.csv``),
                       ``submission_validation.txt``, ``submission_preview.png``
=====================  ==========================================================================

Example (the whole demo, headless; what ``mattingkit run --config demo`` does through the notebooks):
    >>> from mattingkit import pipeline, runner                        # doctest: +SKIP
    >>> ctx = runner.prepare_run("demo", ["train.steps=20"], "try")    # doctest: +SKIP
    >>> pipeline.prepare_data(ctx); pipeline.train_model(ctx)          # doctest: +SKIP
"""
from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import env
from .io import atomic_write_bytes, atomic_write_text, png_bytes, read_alpha, read_image
from .run import RunContext, read_metrics, update_metrics

PathLike = str | os.PathLike

NB_DATA, NB_TRIMAP, NB_TRAIN, NB_INFER, NB_SUBMIT = ("01_data_download", "02_trimap_synthesis", "03_train_gan",
                                                      "04_inference", "05_submission")
DEMO_DIR = "demo"
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


def is_demo_config(cfg) -> bool:
    """True when the config's dataset lives in the embedded demo data (``data.root`` = ``demo/...``).

    Example:
        >>> from mattingkit.config import load_config
        >>> is_demo_config(load_config("demo")), is_demo_config(load_config("ecom"))
        (True, False)
    """
    root = Path(cfg.data.root)
    return not root.is_absolute() and root.parts[:1] == (DEMO_DIR,)


def _data_path(ctx: RunContext, rel: str | None) -> Path | None:
    if not rel:
        return None
    from .data.layouts import resolve_data_path

    return resolve_data_path(rel, ctx.cfg)


def _manifest(ctx: RunContext):
    """The run's manifest (written by notebook 01; scanned now when missing)."""
    from .data.manifest import read_manifest

    path = _data_path(ctx, ctx.cfg.data.manifest) if ctx.cfg.data.manifest else ctx.path("manifest.csv")
    if not path.exists():
        from .data.layouts import build_manifest

        ensure_data(ctx)
        build_manifest(ctx.cfg, path)
    return read_manifest(path)


def _pick(df, n: int, prefer: str = "val"):
    """Up to ``n`` rows, the ``prefer`` split first, in manifest order (deterministic)."""
    if n <= 0 or len(df) == 0:
        return df.iloc[:0]
    first = df[df["split"] == prefer]
    rest = df[df["split"] != prefer]
    import pandas as pd

    return pd.concat([first, rest]).iloc[:n]


def _load_row(row, max_side: int | None = None) -> dict[str, Any]:
    from .widgets import _Source

    return _Source(str(row["id"]), row.get("image") or row.get("fg") or None, row.get("alpha") or None,
                   row.get("trimap") or None).load(max_side)


def _seconds(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


# --------------------------------------------------------------------------------------------
# 01: data
# --------------------------------------------------------------------------------------------
def ensure_data(ctx: RunContext, download: bool = True) -> dict[str, str]:
    """Make the config's data available: the demo data is generated when the config points at it and
    it is missing; Kaggle sources (``data.kaggle_competition`` / ``kaggle_datasets``) are used from
    ``/kaggle/input`` or downloaded (credentials from the environment) when ``download``.

    Returns ``{what: folder}`` for what it made available.
    """
    cfg = ctx.cfg
    out: dict[str, str] = {}
    if is_demo_config(cfg):
        from .data.synthetic import make_demo_data

        demo_root = ctx.data_root / DEMO_DIR
        summary = make_demo_data(demo_root, seed=0)  # a no-op when already there (checked by its marker)
        if summary.get("created"):
            print(f"demo data written to {demo_root} ({summary.get('seconds', 0):.1f}s): {summary.get('counts')}")
        out["demo"] = str(demo_root)
        return out
    if download and (cfg.data.kaggle_competition or cfg.data.kaggle_datasets):
        from .data.download import ensure_config_data

        out.update({k: str(v) for k, v in ensure_config_data(cfg).items()})
    return out


def _test_rows(ctx: RunContext):
    test_dir = _data_path(ctx, ctx.cfg.submission.test_dir)
    if test_dir is None or not test_dir.is_dir():
        return None
    from .data.layouts import scan_competition_test

    return scan_competition_test(test_dir)


def _size_stats(df) -> dict[str, Any]:
    if len(df) == 0:
        return {}
    w, h = df["width"].astype(int), df["height"].astype(int)
    return {"width_min": int(w.min()), "width_median": float(w.median()), "width_max": int(w.max()),
            "height_min": int(h.min()), "height_median": float(h.median()), "height_max": int(h.max())}


def data_sample_grid(df, n: int = 4, max_side: int = PREVIEW_SIDE) -> np.ndarray:
    """``image | alpha | trimap`` rows for the first ``n`` manifest rows (uint8 RGB); a missing trimap
    is drawn mid-gray."""
    from .widgets import fit_side, hstack, vstack

    rows = []
    for _, r in _pick(df, n, prefer="train").iterrows():
        s = _load_row(r, max_side=max(512, max_side))
        img = s["image"]
        alpha = s["alpha"] if s["alpha"] is not None else np.zeros(img.shape[:2], np.float32)
        tri = s["trimap"] if s["trimap"] is not None else np.full(img.shape[:2], 0.5, np.float32)
        rows.append(hstack([fit_side(x, max_side) for x in (img, alpha, tri)]))
    if not rows:
        raise ValueError("no manifest rows to preview")
    return vstack(rows)


def prepare_data(ctx: RunContext, n_preview: int = 4, download: bool = True) -> dict[str, Any]:
    """Notebook 01: data available -> ``manifest.csv`` (validated, split by foreground identity),
    ``manifest_test.csv`` (competition test images, when configured), ``data_report.md`` and
    ``data_samples.png`` in the run folder. Returns (and records) counts, sizes and problems.
    """
    from .data.layouts import build_manifest, list_backgrounds
    from .data.manifest import write_manifest

    t0 = time.monotonic()
    cfg = ctx.cfg
    made = ensure_data(ctx, download=download)
    manifest_path = ctx.path("manifest.csv")
    if cfg.data.manifest:  # an explicit manifest: validated and used as it is (a copy kept in the run)
        from .data.layouts import validate
        from .data.manifest import read_manifest

        given = read_manifest(_data_path(ctx, cfg.data.manifest))
        report = validate(given, check_pixels=cfg.data.check_pixels)
        df = given
        write_manifest(given, manifest_path)
    else:
        df, report = build_manifest(cfg, manifest_path)
    print(report.summary())
    test = _test_rows(ctx)
    if test is not None and len(test):
        write_manifest(test, ctx.path("manifest_test.csv"))
    n_bg = None
    bg_dir = _data_path(ctx, cfg.data.backgrounds)
    if bg_dir is not None and bg_dir.is_dir():
        try:
            n_bg = len(list_backgrounds(bg_dir))
        except ValueError:
            n_bg = 0
    splits = {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()}
    sources = {str(k): int(v) for k, v in df["source"].value_counts().sort_index().items()}
    values: dict[str, Any] = {
        "layout": cfg.data.layout, "data_root": str(_data_path(ctx, cfg.data.root)), "manifest": str(manifest_path),
        "items": int(len(df)), "splits": splits, "sources": sources, "groups": int(df["group"].nunique()),
        "with_trimap": int((df["trimap"] != "").sum()), "excluded": int(report.n_bad),
        "problems": int(len(report.problems)), "problem_kinds": report.counts,
        "backgrounds": n_bg, "test_images": None if test is None else int(len(test)),
        "sizes": _size_stats(df), "made_available": made,
    }
    grid = data_sample_grid(df, n_preview)
    save_png(ctx.path("data_samples.png"), grid)
    values["seconds"] = _seconds(t0)
    atomic_write_text(ctx.path("data_report.md"), _data_report_md(values, report))
    update_metrics(ctx.run_dir, NB_DATA, values)
    return values


def _data_report_md(v: dict[str, Any], report) -> str:
    lines = [f"# Data report — {v['layout']} ({v['data_root']})", "",
             f"- items: **{v['items']}** ({', '.join(f'{k}: {n}' for k, n in v['splits'].items())}), "
             f"{v['groups']} foreground groups, {v['with_trimap']} with a trimap",
             f"- excluded: {v['excluded']} item(s), {v['problems']} problem(s)"
             + (f" ({', '.join(f'{k}: {n}' for k, n in v['problem_kinds'].items())})" if v["problems"] else ""),
             f"- backgrounds: {v['backgrounds'] if v['backgrounds'] is not None else 'none configured'}",
             f"- competition test images: {v['test_images'] if v['test_images'] is not None else 'none configured'}"]
    s = v["sizes"]
    if s:
        lines.append(f"- image sizes: width {s['width_min']}–{s['width_max']} (median {s['width_median']:g}), "
                     f"height {s['height_min']}–{s['height_max']} (median {s['height_median']:g})")
    if report.problems:
        lines += ["", "| id | problem | file |", "|---|---|---|"]
        lines += [f"| {p.id} | {p.problem} | {p.file} |" for p in report.problems[:50]]
        if len(report.problems) > 50:
            lines.append(f"\n... and {len(report.problems) - 50} more (see the .problems.csv beside the manifest)")
    lines += ["", "![samples](data_samples.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 02: trimaps
# --------------------------------------------------------------------------------------------
def trimap_methods(alpha: np.ndarray, cfg, seed: int = 0) -> dict[str, np.ndarray]:
    """The three synthesis methods with the config's parameters: ``erode_dilate`` (random kernels in
    ``trimap.kernel_range``, seeded), ``band`` (``trimap.band_width``) and ``from_mask``
    (``trimap.fg_threshold`` / ``bg_threshold`` / ``mask_band``).

    Example:
        >>> from mattingkit.config import load_config
        >>> a = np.zeros((40, 40), np.float32); a[10:30, 10:30] = 1
        >>> sorted(trimap_methods(a, load_config("demo")))
        ['band', 'erode_dilate', 'from_mask']
    """
    from .trimap import trimap_band, trimap_erode_dilate, trimap_from_mask

    t = cfg.trimap
    return {
        "erode_dilate": trimap_erode_dilate(alpha, np.random.default_rng(seed), tuple(t.kernel_range), t.iterations),
        "band": trimap_band(alpha, t.band_width),
        "from_mask": trimap_from_mask(alpha, t.fg_threshold, t.bg_threshold, t.mask_band),
    }


def trimap_previews(ctx: RunContext, n_samples: int = 4, max_side: int = PREVIEW_SIDE) -> dict[str, Any]:
    """Notebook 02: for ``n_samples`` items, ``image | erode_dilate | band | from_mask (| dataset trimap)``
    overlays -> ``trimap_previews.png``; records the mean unknown share and time of each method."""
    from .trimap import unknown_share
    from .widgets import fit_side, hstack, trimap_overlay, vstack

    t0 = time.monotonic()
    df = _manifest(ctx)
    shares: dict[str, list[float]] = {}
    ms: dict[str, list[float]] = {}
    rows = []
    for i, (_, r) in enumerate(_pick(df, n_samples).iterrows()):
        s = _load_row(r)
        if s["alpha"] is None:
            continue
        img, alpha = s["image"], s["alpha"]
        tris = {}
        for name in ("erode_dilate", "band", "from_mask"):
            t1 = time.perf_counter()
            tris[name] = trimap_methods(alpha, ctx.cfg, seed=ctx.cfg.run.seed + i)[name]
            ms.setdefault(name, []).append(1000 * (time.perf_counter() - t1))
        if s["trimap"] is not None and s["trimap"].shape == alpha.shape:
            tris["dataset"] = s["trimap"]
        for name, tri in tris.items():
            shares.setdefault(name, []).append(unknown_share(tri))
        panels = [fit_side(img, max_side)] + [fit_side(trimap_overlay(img, t), max_side) for t in tris.values()]
        rows.append(hstack(panels))
    if not rows:
        raise ValueError("no item with an alpha matte to preview")
    save_png(ctx.path("trimap_previews.png"), vstack(rows))
    values = {
        "samples": len(rows), "columns": ["image", *shares],
        "unknown_share": {k: round(float(np.mean(v)), 5) for k, v in shares.items()},
        "ms_per_trimap": {k: round(float(np.mean(v)), 2) for k, v in ms.items()},
        "config": {"method": ctx.cfg.trimap.method, "kernel_range": list(ctx.cfg.trimap.kernel_range),
                   "band_width": ctx.cfg.trimap.band_width, "mask_band": ctx.cfg.trimap.mask_band},
        "seconds": _seconds(t0),
    }
    update_metrics(ctx.run_dir, NB_TRIMAP, values)
    return values


def trimap_inspector(ctx: RunContext, limit: int = 50, **kwargs):
    """Notebook 02: the interactive :class:`~mattingkit.widgets.TrimapInspector` over the run's
    manifest (validation items first), starting from the config's trimap settings."""
    from .widgets import TrimapInspector

    df = _manifest(ctx)
    df = _pick(df[df["alpha"] != ""], limit)
    kwargs.setdefault("cfg", ctx.cfg)
    return TrimapInspector(df, **kwargs)


# --------------------------------------------------------------------------------------------
# 03: training
# --------------------------------------------------------------------------------------------
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
    values = {
        "step": summary.get("step"), "steps": summary.get("steps"), "stopped": summary.get("stopped"),
        "best": summary.get("best"), "final": summary.get("final"), "elapsed_s": summary.get("elapsed_s"),
        "steps_per_s": summary.get("steps_per_s"), "resumed_from": summary.get("resumed_from"),
        "nonfinite_total": summary.get("nonfinite_total"), "checkpoints": summary.get("checkpoints"),
        "curves": str(curves) if curves else None, "seconds": _seconds(t0),
    }
    update_metrics(ctx.run_dir, NB_TRAIN, values)  # the trainer's own summary is train_summary.json
    return values


def _plot_curves(ctx: RunContext) -> Path | None:
    hist = ctx.path("metrics.jsonl")
    if not hist.exists():
        return None
    import matplotlib.pyplot as plt

    from .viz import plot_history

    fig = plot_history(hist, ctx.path("curves.png"))
    plt.close(fig)
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
    """``"best"`` (falls back to ``last.pt`` when no validation produced a best), ``"last"``, or a
    path (relative to the run folder or absolute)."""
    ck = ctx.path("checkpoints")
    if which in ("best", "last"):
        p = ck / f"{which}.pt"
        if which == "best" and not p.exists() and (ck / "last.pt").exists():
            print("no best.pt (no validation yet): using last.pt")
            p = ck / "last.pt"
    else:
        p = Path(which)
        if not p.is_absolute():
            p = ctx.run_dir / p
    if not p.exists():
        raise FileNotFoundError(f"{p}: checkpoint not found (train first: notebook 03, or set `checkpoint`)")
    return p


def load_model(ctx: RunContext, checkpoint: str = "best"):
    """``(model, cfg)`` from the run's checkpoint on the config's device (see :func:`checkpoint_path`)."""
    from .infer import load_model as _load

    return _load(checkpoint_path(ctx, checkpoint), device=ctx.cfg.run.device)


def _fresh_prediction_dir(pred_dir: Path, ckpt: Path, settings: dict[str, Any]) -> Path:
    """``pred_dir`` for predictions of ``ckpt`` with ``settings``: PNGs made by another checkpoint
    (or other settings) are removed, so an interrupted run resumes but a new model never reuses stale
    predictions. The identity (checkpoint digest from its sidecar, else size + mtime) is kept in
    ``pred_dir/_source.json``."""
    from .checkpoint import sidecar_path

    try:
        digest = json.loads(sidecar_path(ckpt).read_text()).get("sha256")
    except (OSError, ValueError):
        digest = None
    st = ckpt.stat()
    source = {"checkpoint": str(ckpt.resolve()), "sha256": digest or f"{st.st_size}-{st.st_mtime_ns}",
              "settings": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                           for k, v in sorted(settings.items()) if k != "trimap_cfg"}}
    marker = pred_dir / "_source.json"
    try:
        same = json.loads(marker.read_text()) == source
    except (OSError, ValueError):
        same = False
    if not same:
        for p in list(pred_dir.glob("*.png")) + list(pred_dir.glob("rgba/*.png")):
            p.unlink()
        atomic_write_text(marker, json.dumps(source, indent=1))
    return pred_dir


def _copy_by_stem(rows, column: str, dest: Path) -> Path:
    """Copy ``rows[column]`` files to ``dest/<id><suffix>`` (evaluate_folder matches by stem)."""
    dest.mkdir(parents=True, exist_ok=True)
    for _, r in rows.iterrows():
        src = Path(r[column])
        target = dest / f"{r['id']}{src.suffix.lower()}"
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, target)
    return dest


def run_inference(ctx: RunContext, checkpoint: str = "best", limit: int | None = None, n_preview: int = 4,
                  split: str = "val") -> dict[str, Any]:
    """Notebook 04: predict the ``split`` items (with their trimaps for trimap models) into
    ``predictions/<split>/``; with ground truth, the official SAD/MSE/Grad/Conn per image
    (``metrics_<split>.csv``) and their means; ``comparison.png`` (image | trimap | GT | prediction |
    error). ``limit`` defaults to ``data.val_limit``.
    """
    from .infer import infer_kwargs, predict_folder
    from .metrics import evaluate_folder, format_table
    from .viz import make_grid

    t0 = time.monotonic()
    df = _manifest(ctx)
    rows = df[df["split"] == split]
    if len(rows) == 0:
        print(f"no {split!r} items in the manifest: using all {len(df)} items")
        rows = df
    limit = ctx.cfg.data.val_limit if limit is None else limit
    if limit:
        rows = rows.iloc[:limit]
    ckpt = checkpoint_path(ctx, checkpoint)
    model, mcfg = load_model(ctx, str(ckpt))
    use_trimap = bool(getattr(mcfg.model, "use_trimap", True)) if mcfg is not None else True
    with_trimap = use_trimap and bool((rows["trimap"] != "").all())
    items = rows[["id", "image"] + (["trimap"] if with_trimap else [])]
    kw = infer_kwargs(ctx.cfg)
    kw["two_pass"] = False if with_trimap else bool(kw.get("two_pass"))
    pred_dir = _fresh_prediction_dir(ctx.path("predictions", split), ckpt, kw)
    rep = predict_folder(model, items, pred_dir, **kw)
    values: dict[str, Any] = {"checkpoint": str(ckpt), "split": split,
                              "images": len(rows), "written": len(rep.written), "skipped": len(rep.skipped),
                              "failed": len(rep.failed), "with_trimap": with_trimap,
                              "predict_seconds": round(rep.seconds, 2)}
    has_gt = bool((rows["alpha"] != "").all())
    table = None
    if has_gt:
        gt_dir = _copy_by_stem(rows, "alpha", ctx.path("eval", split, "alpha"))
        tri_dir = _copy_by_stem(rows, "trimap", ctx.path("eval", split, "trimap")) if with_trimap else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            table = evaluate_folder(pred_dir, gt_dir, tri_dir, out_csv=ctx.path(f"metrics_{split}.csv"))
        print(format_table(table))
        values.update({k: (round(v, 6) if np.isfinite(v) else None) for k, v in table.attrs["mean"].items()})
        values["evaluated"] = int(len(table))
        values["eval_problems"] = len(table.attrs.get("errors", []))
        values["trimap_region"] = "unknown" if with_trimap else "whole image"
    # comparison grid
    ims, tris, gts, preds = [], [], [], []
    for _, r in rows.iloc[:n_preview].iterrows():
        p = pred_dir / f"{r['id']}.png"
        if not p.exists():
            continue
        s = _load_row(r)
        ims.append(s["image"])
        pred = read_alpha(p)
        tris.append(s["trimap"] if s["trimap"] is not None else np.full(pred.shape, 0.5, np.float32))
        gts.append(s["alpha"] if s["alpha"] is not None else np.zeros_like(pred))
        preds.append(pred)
    if ims:
        grid = make_grid(ims, tris, gts, preds, max_items=n_preview, max_side=PREVIEW_SIDE)
        save_png(ctx.path("comparison.png"), grid)
        values["comparison"] = str(ctx.path("comparison.png"))
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
    """Where the final CSV goes: ``submission_dir/<submission.name>.csv`` when given; on Kaggle
    ``/kaggle/working/submission.csv``; else ``<repo>/submissions/<submission.name>.csv`` (without a
    checkout: ``submissions/`` beside the runs root)."""
    name = f"{ctx.cfg.submission.name}.csv"
    if submission_dir:
        return Path(submission_dir) / name
    if env.detect_platform() == "kaggle":
        return env.KAGGLE_WORKING / "submission.csv"
    root = env.repo_root()
    return (root / "submissions" / name) if root else ctx.run_dir.parent.parent / "submissions" / name


def _first_rows(csv_path: Path, n: int) -> list[tuple[str, bytes]]:
    csv.field_size_limit(2**31 - 1)
    out = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)
        for row in reader:
            if len(out) >= n:
                break
            if len(row) >= 2:
                out.append((row[0], base64.b64decode(row[1])))
    return out


def downscaled_copy(src_dir: PathLike, dst_dir: PathLike, max_side: int) -> Path:
    """PNG copies of the images of ``src_dir`` with the long side capped at ``max_side`` (same stems),
    for quick low-resolution predictions; images already small enough are copied as PNG too."""
    from .io import list_images, write_png
    from .widgets import fit_side

    dst = Path(dst_dir)
    for p in list_images(src_dir, recursive=False):
        out = dst / f"{p.stem}.png"
        if not out.exists():
            write_png(out, np.clip(fit_side(read_image(p), max_side), 0, 1))
    return dst


def make_submission(ctx: RunContext, checkpoint: str = "best", n_show: int = 3,
                    submission_dir: PathLike | None = None, copy: bool = True,
                    max_side: int | None = None) -> dict[str, Any]:
    """Notebook 05: predict the competition test images (trimap-free: two passes for trimap models,
    one for trimap-free models) into ``predictions/test/``, write ``submission.csv`` in the run
    folder, validate it, copy it to :func:`submission_destination` (when ``copy``), and draw
    ``submission_preview.png`` (test image | decoded CSV alpha) for the first ``n_show`` rows.

    ``max_side``: predict on copies downscaled to this long side; the alphas are resized back to the
    test size when the CSV is built (quick CPU previews). Smoke runs use
    :data:`SMOKE_MAX_SIDE` unless given.
    """
    from .infer import infer_kwargs, predict_folder
    from .submission import build_submission, validate_submission
    from .widgets import fit_side, hstack, vstack

    t0 = time.monotonic()
    cfg = ctx.cfg
    test_dir = _data_path(ctx, cfg.submission.test_dir)
    if test_dir is None or not test_dir.is_dir():
        raise FileNotFoundError(f"test images not found: submission.test_dir={cfg.submission.test_dir!r} "
                                f"(resolved: {test_dir}); run notebook 01 or set submission.test_dir")
    sample = _data_path(ctx, cfg.submission.sample_csv)
    if sample is not None and not sample.is_file():
        print(f"sample submission {sample} not found: rows follow the sorted test stems")
        sample = None
    ckpt = checkpoint_path(ctx, checkpoint)
    model, mcfg = load_model(ctx, str(ckpt))
    use_trimap = bool(getattr(mcfg.model, "use_trimap", True)) if mcfg is not None else True
    kw = infer_kwargs(cfg)
    kw["two_pass"] = True if use_trimap else bool(kw.get("two_pass"))
    if max_side is None and cfg.run.smoke:
        max_side = SMOKE_MAX_SIDE
    inputs = downscaled_copy(test_dir, ctx.path("inputs", f"test_{max_side}"), max_side) if max_side else test_dir
    pred_dir = ctx.path("predictions", "test" if not max_side else f"test_{max_side}")
    pred_dir = _fresh_prediction_dir(pred_dir, ckpt, kw)
    rep = predict_folder(model, inputs, pred_dir, **kw)
    if rep.failed:
        raise RuntimeError(f"{len(rep.failed)} test image(s) failed:\n{rep.summary()}")
    run_csv = ctx.path("submission.csv")
    built = build_submission(pred_dir, run_csv, sample_csv=sample, test_dir=test_dir, size=cfg.submission.size)
    check = validate_submission(run_csv, test_dir=test_dir, sample_csv=sample, size=cfg.submission.size)
    print(check.summary())
    atomic_write_text(ctx.path("submission_validation.txt"), check.summary() + "\n")
    final = None
    if copy:
        final = submission_destination(ctx, submission_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.copyfile(run_csv, tmp)
        os.replace(tmp, final)
        print(f"submission: {final}")
    # a few decoded rows next to their test images
    shown = []
    for name, data in _first_rows(run_csv, n_show):
        png = atomic_write_bytes(ctx.path("decoded", f"{name}.png"), data)
        alpha = read_alpha(png)
        test_img = next((p for p in sorted(test_dir.glob(f"{name}.*"))), None)
        img = read_image(test_img) if test_img is not None else np.repeat(alpha[:, :, None], 3, 2)
        shown.append(hstack([fit_side(img, 256), fit_side(alpha, 256)]))
    if shown:
        save_png(ctx.path("submission_preview.png"), vstack(shown))
    values = {"test_dir": str(test_dir), "rows": built.rows, "file_size": built.file_size, "order": built.order,
              "resized": len(built.resized), "valid": bool(check.ok), "problems": list(check.problems),
              "warnings": list(check.warnings), "two_pass": kw["two_pass"], "max_side": max_side,
              "checkpoint": str(ckpt),
              "run_csv": str(run_csv),
              "csv": str(final) if final else None, "predict_seconds": round(rep.seconds, 2),
              "seconds": _seconds(t0)}
    update_metrics(ctx.run_dir, NB_SUBMIT, values)
    if not check.ok:
        raise RuntimeError(f"the submission does not validate:\n{check.summary()}")
    return values


def summary_table(ctx: RunContext) -> str:
    """A short text table of every notebook's headline numbers from ``metrics.json``."""
    m = read_metrics(ctx.run_dir)
    out = []
    for section, vals in m.items():
        if isinstance(vals, dict):
            keys = [k for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:8]
            out.append(f"{section}: " + ", ".join(f"{k}={vals[k]:.4g}" if isinstance(vals[k], float)
                                                  else f"{k}={vals[k]}" for k in keys))
    return "\n".join(out)


__all__ = [
    "alpha_inspector", "checkpoint_path", "data_sample_grid", "ensure_data", "is_demo_config", "load_model",
    "make_submission", "prepare_data", "run_inference", "save_png", "show", "show_tensorboard",
    "submission_destination", "summary_table", "train_model", "trimap_inspector", "trimap_methods",
    "trimap_previews",
]

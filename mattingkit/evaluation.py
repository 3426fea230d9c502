"""Evaluation (notebook 04): a run's predicted split scored against its ground truth
(:func:`evaluate_split`), and the run's model beside classical baselines on real photos
(:func:`evaluate_real_set`).

The photos of ``data.eval_root`` (alphamatting, aim500 or folder layout) are predicted with the run's
checkpoint (its trimaps for trimap models, :func:`mattingkit.infer.predict_split`) and with classical
methods (closed-form matting, the trimap itself as alpha; :mod:`mattingkit.baselines`), each into its own
cached folder (:mod:`mattingkit.infer.cache`), then scored with the official SAD / MSE / Grad / Conn on the
same images and the unknown region of the same trimaps (:func:`mattingkit.metrics.evaluate_triples`).

Example:
    >>> from mattingkit import run                                    # doctest: +SKIP
    >>> ctx = run.prepare_run("demo", ["data.eval_root=/data/alphamatting"], "try")   # doctest: +SKIP
    >>> evaluate_real_set(ctx)["table"]["model"]["sad"]               # doctest: +SKIP
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import drive, run
from .run import NB_INFER, RunContext, round4, update_metrics

#: The classical rows of the real-set table (:mod:`mattingkit.baselines` methods) and their labels.
REAL_BASELINES = ("closed_form", "trimap")
METHOD_LABELS = {"model": "model", "closed_form": "closed-form", "knn": "KNN", "trimap": "trimap-as-alpha"}
PREVIEW_SIDE = 192


def real_set_rows(ctx: RunContext, limit: int | None = None):
    """The manifest rows (``id``, ``image``, ``alpha``, ``trimap``) of the config's real evaluation set
    ``data.eval_root`` (:func:`mattingkit.data.datasets.find_eval_rows`, the trainer's finder), or None
    when none is configured. Rows without a trimap are left out (the official metrics need one)."""
    from .data.datasets import find_eval_rows

    if not ctx.cfg.data.eval_root:
        return None
    rows = find_eval_rows(run.data_path(ctx.cfg, ctx.cfg.data.eval_root))
    rows = rows[(rows["alpha"] != "") & (rows["trimap"] != "")].reset_index(drop=True)
    if len(rows) == 0:
        raise ValueError(f"data.eval_root={ctx.cfg.data.eval_root!r}: no image with both an alpha and a trimap")
    return rows.iloc[:limit] if limit else rows


def real_set_table(values: dict[str, Any] | None):
    """The real-set table of :func:`evaluate_real_set` as a DataFrame (method rows, metric columns)."""
    import pandas as pd

    if not values:
        return None
    return pd.DataFrame(list(values["table"].values())).set_index("method")


def _predict_baseline(rows, out_dir: Path, method: str, max_pixels: int | None):
    """Predict ``rows`` with a classical method into the cache folder ``out_dir`` (another producer's
    PNGs are replaced, the same producer resumes)."""
    from .baselines import BaselinePredictor
    from .infer import predict_folder

    model = BaselinePredictor(method, max_pixels=max_pixels)
    report = predict_folder(model, rows[["id", "image", "trimap"]], out_dir, verbose=False,
                            replace_other=True)
    return Path(out_dir), report, model.notes


def _score(rows, dirs: dict[str, Path]):
    """Official metrics of each folder of ``dirs`` on ``rows``: (table per method, per-image frame, notes)."""
    import pandas as pd

    from .metrics import METRICS, evaluate_triples

    tables, per_image, notes = {}, [], []
    for name, d in dirs.items():
        label = METHOD_LABELS.get(name, name)
        triples = [(r["id"], d / f"{r['id']}.png", r["alpha"], r["trimap"]) for r in rows.to_dict("records")]
        t = evaluate_triples(triples, warn=False)
        tables[name] = {"method": label, "images": int(len(t)), **{k: round4(t.attrs["mean"].get(k)) for k in METRICS}}
        per_image.append(t.assign(method=label))
        if len(t) < len(rows):
            first = (t.attrs["errors"] or [{}])[0]
            notes.append(f"{label}: {len(rows) - len(t)} of {len(rows)} photo(s) not evaluated (first problem: {first})")
    return tables, pd.concat(per_image, ignore_index=True)[["method", "image", *METRICS]], notes


def evaluate_split(ctx: RunContext, rows, res, split: str, n_preview: int = 4) -> dict[str, Any]:
    """What a run's prediction of ``split`` (``res``: :func:`mattingkit.infer.predict_split` of ``rows``)
    measured: counts and, with ground truth, the official SAD/MSE/Grad/Conn per image
    (``metrics_<split>.csv``) and their means; ``comparison.png`` (image | trimap | GT | prediction | error)."""
    import numpy as np

    from .metrics import evaluate_triples, format_table
    from .viz import manifest_figure, save_figure

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
    return values


def evaluate_real_set(ctx: RunContext, checkpoint: str = "best", limit: int | None = None,
                      methods: tuple[str, ...] = REAL_BASELINES, n_preview: int = 3,
                      max_pixels: int | None = None) -> dict[str, Any] | None:
    """The model beside classical baselines on the real set of ``data.eval_root`` (None when none is
    configured). Predicts every photo with the run's checkpoint and with each of ``methods``
    (``max_pixels``: their downscale threshold), each into its own cached folder under
    ``predictions/real/<eval root name>-<tag>/``; scores all of them (``metrics_real.csv``: one row per
    method and image) and draws ``real_comparison.png``. Records the table under ``real_set`` in the 04
    section and returns it.
    """
    from .baselines import DEFAULT_MAX_PIXELS
    from .checkpoint import find_checkpoint
    from .infer import predict_split
    from .infer.cache import source_tag
    from .viz import comparison_figure, save_figure

    t0 = time.monotonic()
    rows = real_set_rows(ctx, limit)
    if rows is None:
        print("no real evaluation set configured (data.eval_root): skipped")
        return None
    root = run.data_path(ctx.cfg, ctx.cfg.data.eval_root).resolve()
    base = ctx.path("predictions", "real", f"{run.safe_name(root.name)}-{source_tag(root)}")
    res = predict_split(find_checkpoint(ctx.run_dir, checkpoint), rows, base / "model", ctx.cfg, verbose=False)
    dirs, notes, failed = {"model": res.out_dir}, [], {"model": len(res.report.failed)}
    for m in methods:
        out, rep, n = _predict_baseline(rows, base / m, m, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
        dirs[m], failed[m] = out, len(rep.failed)
        notes += [f"{METHOD_LABELS.get(m, m)}: {t}" for t in n]
    tables, csv, score_notes = _score(rows, dirs)
    notes += score_notes
    drive.write_text(ctx.path("metrics_real.csv"), csv.to_csv(index=False))
    print(f"real set: {len(rows)} photos from {ctx.cfg.data.eval_root} (official metrics on the trimaps' "
          f"unknown region; lower is better)\n{real_set_table({'table': tables}).to_string()}")
    for n in notes:
        print(f"note: {n}")
    titles = {n: f"{METHOD_LABELS.get(n, n)}\nSAD {run.fmt_value(tables[n]['sad'])}" for n in dirs}
    fig = comparison_figure(rows.iloc[:n_preview], dirs, titles, f"Real photos ({ctx.cfg.data.eval_root}): model vs "
                            "classical baselines", PREVIEW_SIDE, footnote="SAD = mean over all evaluated photos "
                            "(official metric, unknown region; lower is better); error white at >= 0.5")
    values = {"root": str(ctx.cfg.data.eval_root), "images": int(len(rows)), "checkpoint": str(res.checkpoint),
              "model_trimaps": res.with_trimap, "table": tables, "failed": failed, "notes": notes,
              "folders": {k: str(v) for k, v in dirs.items()}, "csv": str(ctx.path("metrics_real.csv")),
              "comparison": str(save_figure(fig, ctx.path("real_comparison.png"))),
              "seconds": round(time.monotonic() - t0, 2)}
    update_metrics(ctx.run_dir, NB_INFER, {"real_set": values})
    return values


__all__ = ["METHOD_LABELS", "REAL_BASELINES", "evaluate_real_set", "evaluate_split", "real_set_rows", "real_set_table"]

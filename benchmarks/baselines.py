"""Classical baselines on real photos: closed-form, KNN and trimap-as-alpha with the official metrics.

Runs :func:`mattingkit.baselines.run_baseline` for every method on every image of an ``alphamatting``
layout folder (default: ``../shared/data/alphamatting_dev``, 5 alphamatting.com photos with their
Trimap1) and scores it with :func:`mattingkit.metrics.compute_metrics` (SAD / MSE / Grad / Conn on the
unknown region, alphamatting.com conventions). Writes per-image rows, means and solve seconds as JSON to
``benchmarks/results/baselines.json`` and prints a table.

    PYTHONPATH=. python benchmarks/baselines.py [--root DIR] [--methods closed_form knn trimap]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from mattingkit.baselines import DEFAULT_MAX_PIXELS, METHODS, run_baseline
from mattingkit.data.layouts import scan_alphamatting
from mattingkit.io import read_alpha, read_image, read_trimap
from mattingkit.metrics import METRICS, compute_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "alphamatting_dev"


def run(root: Path, methods: list[str], max_pixels: int | None) -> dict:
    rows = scan_alphamatting(root)
    if rows.empty:
        raise SystemExit(f"{root}: no alphamatting images found")
    per_image = []
    for _, row in rows.iterrows():
        image, gt, tri = read_image(row["image"]), read_alpha(row["alpha"]), read_trimap(row["trimap"])
        for m in methods:
            r = run_baseline(m, image, tri, max_pixels=max_pixels)
            scores = compute_metrics(r.alpha, gt, tri)
            per_image.append({"image": row["id"], "method": m, **{k: float(v) for k, v in scores.items()},
                              "seconds": round(r.seconds, 3), "scale": r.scale, "notes": r.notes,
                              "size": f"{image.shape[1]}x{image.shape[0]}",
                              "unknown_share": float((tri == 0.5).mean())})
            print(f"{row['id']} {m:12s} " + " ".join(f"{k}={scores[k]:.4g}" for k in METRICS)
                  + f" ({r.seconds:.2f}s)", flush=True)
    means = {}
    for m in methods:
        sel = [r for r in per_image if r["method"] == m]
        means[m] = {k: float(np.mean([r[k] for r in sel])) for k in (*METRICS, "seconds")}
    return {"root": str(root), "images": len(rows), "max_pixels": max_pixels, "methods": methods,
            "mean": means, "per_image": per_image, "python": platform.python_version(),
            "machine": platform.machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "baselines.json")
    args = ap.parse_args(argv)
    res = run(args.root, args.methods, args.max_pixels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"\nmean over {res['images']} images ({args.root}):")
    print(f"{'method':12s} " + " ".join(f"{k:>8s}" for k in (*METRICS, "seconds")))
    for m, v in res["mean"].items():
        print(f"{m:12s} " + " ".join(f"{v[k]:8.4f}" for k in (*METRICS, "seconds")))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

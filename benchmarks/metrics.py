"""Speed of the official matting metrics: seconds per megapixel, on the real alphamatting photos.

Times each metric (sad, mse, grad, conn), ``compute_metrics`` (all four, inputs converted once)
and ``evaluate_folder`` (PNG reading included) over the five alphamatting.com photos GT01..GT05
with their blurred predictions; reports the median over ``--repeats`` runs of
(total seconds / total megapixels). Also times one larger image (GT01 upscaled ``--big`` times) to
show that the cost per megapixel holds at full resolution. Prints a table and writes
``benchmarks/results/metrics.json``.

Usage:
    .venv/bin/python benchmarks/metrics.py [--repeats 5] [--big 3] [--data ../shared/data/alphamatting_dev]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mattingkit import metrics as M  # noqa: E402
from mattingkit.io import atomic_write_text, read_alpha, read_trimap  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "alphamatting_dev"


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``repeats`` calls after a warm-up.

    CPU time of this process is the main figure: it is what the metric costs, and it is much
    less disturbed than wall time when other jobs share the machine (the code is single-threaded).
    """
    fn()  # warm-up
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big", type=int, default=3, help="upscale factor of the large-image check (0 = skip)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "metrics.json")
    args = ap.parse_args(argv)
    if not (args.data / "alpha").is_dir():
        print(f"no data at {args.data} (expected alpha/, trimap/, pred_blur/)", file=sys.stderr)
        return {}

    stems = sorted(p.stem for p in (args.data / "alpha").glob("*.png"))
    items = [(read_alpha(args.data / "pred_blur" / f"{s}.png"), read_alpha(args.data / "alpha" / f"{s}.png"),
              read_trimap(args.data / "trimap" / f"{s}.png")) for s in stems]
    mpx = sum(g.size for _, g, _ in items) / 1e6
    unknown = float(np.mean([np.mean(t == 0.5) for _, _, t in items]))

    funcs = {"sad": M.sad, "mse": M.mse, "grad": M.grad, "conn": M.conn,
             "compute_metrics": M.compute_metrics, "competition_mse": lambda p, g, t: M.competition_mse(p, g)}
    results: dict[str, float] = {}
    wall: dict[str, float] = {}
    for name, fn in funcs.items():
        cpu_s, wall_s = _time(lambda fn=fn: [fn(p, g, t) for p, g, t in items], args.repeats)
        results[name], wall[name] = cpu_s / mpx, wall_s / mpx

    def _folder():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            M.evaluate_folder(args.data / "pred_blur", args.data / "alpha", args.data / "trimap")

    cpu_s, wall_s = _time(_folder, args.repeats)
    results["evaluate_folder"], wall["evaluate_folder"] = cpu_s / mpx, wall_s / mpx

    big = {}
    if args.big > 1:
        p, g, t = (np.kron(a, np.ones((args.big, args.big), np.float32)) for a in items[0])
        big_mpx = g.size / 1e6
        cpu_s, wall_s = _time(lambda: M.compute_metrics(p, g, t), max(1, args.repeats // 2))
        big = {"shape": list(g.shape), "megapixels": big_mpx,
               "compute_metrics_cpu_s_per_mpx": cpu_s / big_mpx,
               "compute_metrics_wall_s_per_mpx": wall_s / big_mpx}

    report = {
        "what": "seconds per megapixel (median of repeats) on the alphamatting.com photos GT01..GT05, "
                "pred_blur predictions",
        "images": stems, "megapixels": mpx, "unknown_share": unknown, "repeats": args.repeats,
        "cpu_seconds_per_megapixel": results, "wall_seconds_per_megapixel": wall,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "large_image": big,
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    print(f"{len(stems)} images, {mpx:.2f} Mpx, unknown share {unknown:.1%}, median of {args.repeats}")
    print(f"{'metric':<18}{'CPU s/Mpx':>10}{'wall s/Mpx':>11}")
    for k, v in results.items():
        print(f"{k:<18}{v:>10.4f}{wall[k]:>11.4f}")
    if big:
        print(f"large image {big['shape'][1]}x{big['shape'][0]} ({big['megapixels']:.1f} Mpx): "
              f"compute_metrics {big['compute_metrics_cpu_s_per_mpx']:.4f} CPU s / Mpx")
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return report


if __name__ == "__main__":
    main()

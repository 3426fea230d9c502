"""What one guide costs: the closed-form solve of a guided model (``model.guide``) at 256², 512², 1024².

A guided model's guide is :func:`mattingkit.models.alphagan.solve_guide` (pymatting's closed-form
matting of the unknown region's bounding box, downscaled above ``baselines.DEFAULT_MAX_PIXELS`` = 1 Mpx:
a 1024² box is solved at 1000²). Each size runs in its own fresh process (so its peak resident memory
is its own): a photo-like input (textured foreground and background, a soft-edged wavy blob with a wide
unknown band: ~46% of the pixels unknown, the unknown box covers most of the image), one untimed warm-up solve
at 64², then ``--repeats`` timed solves; the median seconds and the process's peak RSS (``ru_maxrss``,
with the RSS after imports for reference) are reported. Sizes whose first solve exceeds
``--max-seconds`` stop there (reported as such).

Run: ``python benchmarks/guide_solve.py`` (writes benchmarks/results/guide_solve.json; ``--sizes 256 512``).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def photo_like(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An ``size``² float32 RGB image (textured blob over a textured background) and its trimap."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = np.hypot(yy - 0.5, xx - 0.5) + 0.03 * np.sin(40 * np.arctan2(yy - 0.5, xx - 0.5))
    alpha = np.clip((0.3 - r) / 0.04 + 0.5, 0, 1).astype(np.float32)

    def texture(base):
        noise = cv2.GaussianBlur(rng.random((size, size, 3), dtype=np.float32), (0, 0), size / 64)
        return np.clip(np.asarray(base, np.float32) + 0.6 * (noise - noise.mean()), 0, 1)

    fg, bg = texture([0.8, 0.5, 0.3]), texture([0.2, 0.4, 0.7])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    trimap = np.where(alpha > 0.99, 1.0, np.where(alpha < 0.01, 0.0, 0.5)).astype(np.float32)
    band = cv2.dilate((trimap == 0.5).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, size // 16))
    trimap[band > 0] = 0.5
    return image.astype(np.float32), trimap


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def one_size(size: int, repeats: int, max_seconds: float) -> dict:
    """Runs in the child process: the timings and peak RSS of one size."""
    from mattingkit.models.alphagan import solve_guide

    img, tri = photo_like(size)
    small_img, small_tri = photo_like(64)
    solve_guide("closed_form", small_img, small_tri)   # warm-up: imports, numba compilation
    rss_imports = _rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        solve_guide("closed_form", img, tri)
        times.append(time.perf_counter() - t0)
        if times[0] > max_seconds:
            break
    return {"size": size, "unknown_fraction": round(float((tri == 0.5).mean()), 3), "seconds": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3), "peak_rss_mb": round(_rss_mb()),
            "rss_after_imports_mb": round(rss_imports), "stopped_early": len(times) < repeats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop a size after a first solve this slow")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "guide_solve.json"))
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one_size(args.child, args.repeats, args.max_seconds)))
        return
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--repeats", str(args.repeats),
               "--max-seconds", str(args.max_seconds)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size}²: median {row['median_s']} s over {len(row['seconds'])} solves, peak RSS "
              f"{row['peak_rss_mb']} MB (after imports {row['rss_after_imports_mb']} MB)", flush=True)
    import os

    result = {"benchmark": "guide_solve", "method": "closed_form", "cpus": os.cpu_count(),
              "load_avg_1min": round(os.getloadavg()[0], 2), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

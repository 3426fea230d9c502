"""Parameter counts and CPU forward times of the mattingkit models.

For each model: parameters, and the median wall time of a batch-1 forward pass under
``torch.inference_mode()`` in eval mode at 320x320 and 1024x1024 (one untimed warm-up run first).
Prints a table and writes ``benchmarks/results/models.json``.

Usage:
    .venv/bin/python benchmarks/models.py                 # all models, 320 and 1024, 3 runs each
    .venv/bin/python benchmarks/models.py --sizes 320 --runs 5 --models u2netp dim
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mattingkit.config import ModelConfig  # noqa: E402
from mattingkit.models import build_discriminator, build_model, count_parameters  # noqa: E402

SPECS: dict[str, dict] = {
    "alphagan_resnet50_os8": dict(name="alphagan", backbone="resnet50", output_stride=8),
    "alphagan_resnet18_os8": dict(name="alphagan", backbone="resnet18", output_stride=8),
    "alphagan_resnet18_os16_gn": dict(name="alphagan", backbone="resnet18", output_stride=16, norm="gn"),
    "dim_vgg16_bn": dict(name="dim", backbone="vgg16_bn", dim_stage="joint"),
    "u2netp": dict(name="u2netp"),
    "patchgan_64x3": dict(name="patchgan", disc_channels=64, disc_layers=3),
}


def build(spec: dict) -> tuple[torch.nn.Module, bool]:
    """(model, is_discriminator) for a SPECS entry, random init (no downloads)."""
    spec = dict(spec)
    name = spec.pop("name")
    if name == "patchgan":
        return build_discriminator(ModelConfig(pretrained=False, **spec)), True
    return build_model(ModelConfig(name=name, pretrained=False, **spec)), False


def time_forward(model: torch.nn.Module, is_disc: bool, size: int, runs: int, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    if is_disc:
        args = (torch.rand(1, 4, size, size, generator=g),)
    else:
        trimap = torch.full((1, 1, size, size), 0.5)
        args = (torch.rand(1, 3, size, size, generator=g), trimap)
    times = []
    with torch.inference_mode():
        model(*args)  # warm-up (allocator, oneDNN primitive cache)
        for _ in range(runs):
            start = time.perf_counter()
            model(*args)
            times.append(time.perf_counter() - start)
    return times


def _cells(row: dict, sizes: list[int]) -> str:
    return "  ".join(f"{row[f'forward_s_{s}']:>11.3f} {row[f'min_s_{s}']:>9.3f}" for s in sizes)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 1024])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "models.json")
    args = ap.parse_args(argv)

    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for key in args.models:
        torch.manual_seed(0)
        model, is_disc = build(SPECS[key])
        model.eval()
        row = {"model": key, "config": SPECS[key], "parameters": count_parameters(model)}
        for size in args.sizes:
            times = time_forward(model, is_disc, size, args.runs)
            row[f"forward_s_{size}"] = round(statistics.median(times), 4)
            row[f"min_s_{size}"] = round(min(times), 4)
            row[f"runs_s_{size}"] = [round(t, 4) for t in times]
        rows.append(row)
        print(f"{key:<28} {row['parameters'] / 1e6:>8.2f} M  {_cells(row, args.sizes)}", flush=True)
        del model

    result = {
        "what": "batch-1 CPU forward, eval + torch.inference_mode, seconds (median and min of runs)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "runs": args.runs,
        "sizes": args.sizes,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)

    header = f"{'model':<28} {'params':>10}  " + "  ".join(
        f"{f'{s}² median':>11} {f'{s}² min':>9}" for s in args.sizes)
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        print(f"{row['model']:<28} {row['parameters'] / 1e6:>8.2f} M  {_cells(row, args.sizes)}")
    print("(seconds per batch-1 forward; the machine's load average is in the JSON)")
    print(f"\nwritten {args.out}")
    return result


if __name__ == "__main__":
    main()

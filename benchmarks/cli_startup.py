"""Start-up time of the ``mattingkit`` command: ``--help``, ``predict --help``, ``config`` and ``validate``, beside
``import torch``.

Each command runs in a fresh Python process (``python -m mattingkit ...``), ``--repeats`` times; the median
wall time is reported, with the median of a bare ``python -c pass`` (the interpreter's own start) and of
``python -c "import torch"`` measured in the same run, so the figures read as ratios on a loaded machine.
Goal (issue 24): ``--help``, ``validate`` and ``config`` each under 1 s and under the cost of importing torch
(none of them imports torch: ``config`` checks every key's choices against tables that import without it,
see :mod:`mattingkit.names`).
Prints a table and writes ``benchmarks/results/cli_startup.json``.

Usage:
    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _median_s(argv: list[str], repeats: int, env: dict, cwd: Path) -> float:
    """Median wall seconds of ``repeats`` fresh processes (one warm-up run first: the page cache)."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        if r.returncode not in (0, 1):
            raise RuntimeError(f"{argv}: exit {r.returncode}: {r.stderr[-500:]}")
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cli_startup.json")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO), MATTINGKIT_HEADLESS="1")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "s.csv"
        csv.write_text("filename,image_utf\n", encoding="utf-8")
        cases = {
            "python -c pass": ["-c", "pass"],
            "import torch": ["-c", "import torch"],
            "mattingkit --help": ["-m", "mattingkit", "--help"],
            "mattingkit predict --help": ["-m", "mattingkit", "predict", "--help"],
            "mattingkit validate": ["-m", "mattingkit", "validate", str(csv)],
            "mattingkit config": ["-m", "mattingkit", "config"],
        }
        seconds = {name: _median_s(cmd, args.repeats, env, Path(tmp)) for name, cmd in cases.items()}
    torch_s = seconds["import torch"]
    res = {"repeats": args.repeats, "python": platform.python_version(), "cpus": os.cpu_count(),
           "median_s": {k: round(v, 3) for k, v in seconds.items()},
           "ratio_to_import_torch": {k: round(v / torch_s, 2) for k, v in seconds.items()}}
    width = max(map(len, seconds))
    for name, s in seconds.items():
        print(f"{name:<{width}}  {s:6.2f} s  ({s / torch_s:.2f}x import torch)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()

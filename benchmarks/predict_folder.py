"""Folder-prediction benchmark (issue 13, not a test): does inference run at the model's speed?

Two figures, side by side in one process, medians:

- ``vs forward bound: R x`` — images/s of :func:`mattingkit.infer.predict_folder` over a folder of 1024²
  PNGs (decode, predict, encode, atomic write; pipelined) divided by 1 / (the same model's raw forward at
  the same padded size on the same device). Goal >= 0.9 on CPU. Model: the demo model (``--models
  demo default`` adds the default one), random init, trimap-free.
- ``host overhead: N ms`` — ``predict()`` minus the raw forward at the padded size, with a 1x1
  convolution at 1024² (so the host work shows), median of ``--reps`` (>= 9) each; for a uint8 image (the
  folder's path), a float32 image, and — ``before`` — the code at ``--before-rev`` (default b93511c,
  loaded from git) on the float32 image. Goal <= 10 ms on this CPU (about 30 ms before).

On a GPU it also prints ``predict()/forward`` of the real model at 1024² (goal <= 1.15).

Usage::

    .venv/bin/python benchmarks/predict_folder.py             # -> benchmarks/results/predict_folder.json
    .venv/bin/python benchmarks/predict_folder.py --models demo default --images 8 --reps 11
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "alphamatting_dev"
RESULTS = REPO / "benchmarks" / "results" / "predict_folder.json"
sys.path.insert(0, str(REPO))

from mattingkit import infer  # noqa: E402 - after the sys.path line: runs from a checkout
from mattingkit.device import DevicePlan, resolve_device  # noqa: E402
from mattingkit.io import read_image_uint8, write_png  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def photo(size: int, seed: int) -> np.ndarray:
    """A real photo (GT0x resized) when ../shared is there, else a smooth random image; uint8."""
    from PIL import Image

    names = sorted((SHARED / "image").glob("GT*.png")) if SHARED.is_dir() else []
    if names:
        img = Image.fromarray(read_image_uint8(names[seed % len(names)])).resize((size, size), Image.BILINEAR)
        return np.asarray(img)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 32, size // 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))


def old_infer(rev: str):
    """mattingkit/infer.py at ``rev`` (from git), imported beside today's package (same helpers)."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:mattingkit/infer.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "infer_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("mattingkit._infer_before", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "mattingkit"
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class Conv1x1(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, image, trimap):
        return {"alpha": torch.sigmoid(self.conv(image))}


def host_overhead(device: torch.device, reps: int, before_rev: str | None, size: int = 1024) -> dict:
    net = Conv1x1().to(device).eval()
    u8 = photo(size, 0)
    f32 = u8.astype(np.float32) / np.float32(255)
    tri = np.full((size, size), 0.5, np.float32)
    tri[:64], tri[-64:] = 0, 1
    top, bottom, left, right = infer.padding(size, size, 32)
    x = torch.rand(1, 3, size + top + bottom, size + left + right, device=device)
    t = torch.full((1, 1, x.shape[2], x.shape[3]), 0.5, device=device)
    old = old_infer(before_rev) if before_rev else None
    cases = {"forward": lambda: net(x, t),
             "uint8": lambda: infer.predict(net, u8, tri, device=device),
             "float32": lambda: infer.predict(net, f32, tri, device=device)}
    if old is not None:
        cases["before_float32"] = lambda: old.predict(net, f32, tri, device=device)
    times = {k: [] for k in cases}
    with torch.inference_mode():
        for fn in cases.values():
            fn()   # warm-up
        for _ in range(reps):          # interleaved: the same load for every case
            for k, fn in cases.items():
                times[k].append(timed(fn, device))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    out = {"size": size, "reps": reps, "median_ms": med,
           "host_overhead_ms": {k: med[k] - med["forward"] for k in cases if k != "forward"}}
    return out


def folder_vs_forward(name: str, device: torch.device, n_images: int, reps: int, batch_size: int,
                      size: int = 1024) -> dict:
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    cfg = load_config({"demo": "demo", "default": "default"}[name])
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    top, bottom, left, right = infer.padding(size, size, 32)
    x = torch.rand(batch_size, 3, size + top + bottom, size + left + right, device=device)
    t = torch.full((batch_size, 1, x.shape[2], x.shape[3]), 0.5, device=device)
    root = Path(tempfile.mkdtemp())
    for i in range(n_images):
        write_png(root / "images" / f"{i:04d}.png", photo(size, i))
    with torch.inference_mode():
        model(x, t)   # warm-up
    fwd, folder = [], []
    for r in range(reps):
        with torch.inference_mode():
            fwd.append(timed(lambda: model(x, t), device) / batch_size)
        out = root / f"out{r}"
        rep = infer.predict_folder(model, root / "images", out, device=device, verbose=False, headless=True,
                                   amp="off", batch_size=batch_size)
        assert rep.ok and len(rep.written) == n_images, rep.summary()
        folder.append(rep.seconds / n_images)
    f, p = statistics.median(fwd), statistics.median(folder)
    return {"model": name, "images": n_images, "size": size, "batch_size": batch_size, "reps": reps,
            "forward_s_per_image": f, "folder_s_per_image": p, "forward_images_per_s": 1 / f,
            "folder_images_per_s": 1 / p, "vs_forward_bound": f / p}


def gpu_predict_vs_forward(device: torch.device, reps: int, size: int = 1024) -> dict:
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    cfg = load_config("default")
    model = build_model(cfg.model).to(device).eval()
    u8 = photo(size, 0)
    top, bottom, left, right = infer.padding(size, size, 32)
    res = {}
    for amp in ("off", "auto"):
        plan = DevicePlan.for_inference(device, amp)   # the kit's one AMP decision and autocast
        x = torch.rand(1, 3, size + top + bottom, size + left + right, device=device)
        t = torch.full((1, 1, x.shape[2], x.shape[3]), 0.5, device=device)

        def fwd(x=x, t=t, plan=plan):
            with plan.autocast():
                model(x, t)

        def pred(amp=amp):
            infer.predict(model, u8, device=device, amp=amp)

        with torch.inference_mode():
            fwd()
            pred()
            f = statistics.median(timed(fwd, device) for _ in range(reps))
        p = statistics.median(timed(pred, device) for _ in range(reps))
        res[amp] = {"forward_ms": f * 1000, "predict_ms": p * 1000, "ratio": p / f}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["demo"], choices=["demo", "default"])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--folder-reps", type=int, default=3)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--before-rev", default="b93511c", help="git revision for the 'before' host overhead ('' = skip)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    load = os.getloadavg()
    result = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load {load}")
    ho = host_overhead(device, args.reps, args.before_rev or None)
    result["host_overhead"] = ho
    for k, v in ho["host_overhead_ms"].items():
        print(f"host overhead: {v:.1f} ms  ({k}; predict {ho['median_ms'][k]:.1f} ms, forward "
              f"{ho['median_ms']['forward']:.1f} ms, 1x1 conv at {ho['size']}², median of {ho['reps']})")
    result["folders"] = []
    for name in args.models:
        r = folder_vs_forward(name, device, args.images, args.folder_reps, args.batch_size)
        result["folders"].append(r)
        print(f"{name}: predict_folder {r['folder_images_per_s']:.3f} img/s, forward bound "
              f"{r['forward_images_per_s']:.3f} img/s at {r['size']}² (batch {r['batch_size']}): "
              f"vs forward bound: {r['vs_forward_bound']:.2f} x")
    if device.type == "cuda":
        g = gpu_predict_vs_forward(device, args.reps)
        result["gpu_predict_vs_forward"] = g
        for amp, v in g.items():
            print(f"default model, amp {amp}: predict {v['predict_ms']:.1f} ms / forward {v['forward_ms']:.1f} ms "
                  f"= {v['ratio']:.2f}")
    result["loadavg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

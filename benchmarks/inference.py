"""Inference benchmark (not a test): seconds and peak RSS per method, side by side, on one input.

Cases (each in a fresh subprocess, so ``resource.getrusage`` peak RSS belongs to that case alone):

- ``default``   AlphaGAN ResNet-50, output stride 8 (the default config), random init, 1024x1024, CPU
- ``demo``      AlphaGAN ResNet-18 as in ``configs/demo.yaml``, random init, 1024x1024, CPU
- ``pymatting`` closed-form matting (``pymatting.estimate_alpha_cf``) on the same image and trimap
- ``vitmatte``  ViTMatte-S architecture from ``transformers`` (random init, timing only; skipped when
  ``transformers`` is not importable — it is not a mattingkit dependency)
- ``tiled4k``   a 4096x4096 image through :func:`mattingkit.infer.predict` with tiling (default model,
  default tile size / overlap / pixel budget), which must stay within 6 GB peak RSS

The input is a real photo (alphamatting.com GT01 from ``../shared/data`` beside the repo) resized to the
benchmark size with its trimap (nearest), or a synthetic image with a band trimap when that is absent.
Model timings exclude construction and a small warm-up run; they are one timed call (2 CPU cores here).

Usage::

    .venv/bin/python benchmarks/inference.py                 # all cases -> benchmarks/results/inference.json
    .venv/bin/python benchmarks/inference.py --cases demo pymatting   # re-run some, keep the others
    .venv/bin/python benchmarks/inference.py --case demo     # one case in this process (prints JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "alphamatting_dev"
RESULTS = REPO / "benchmarks" / "results" / "inference.json"
CASES = ["default", "demo", "pymatting", "vitmatte", "tiled4k"]
RSS_LIMIT_4K_GB = 6.0

sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def make_input(size: int):
    """(image HxWx3 float32, trimap HxW in {0,.5,1}, source description) at ``size`` x ``size``."""
    import cv2
    import numpy as np

    from mattingkit.io import read_image, read_trimap

    img_path, tri_path = SHARED / "image" / "GT01.png", SHARED / "trimap" / "GT01.png"
    if img_path.exists() and tri_path.exists():
        img = cv2.resize(read_image(img_path), (size, size), interpolation=cv2.INTER_CUBIC)
        tri = cv2.resize(read_trimap(tri_path), (size, size), interpolation=cv2.INTER_NEAREST)
        return np.clip(img, 0, 1).astype(np.float32), tri.astype(np.float32), f"alphamatting GT01 resized to {size}^2"
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(8 * xx) * np.cos(6 * yy)], axis=2).astype(np.float32)
    r = np.hypot(xx - 0.5, yy - 0.5)
    tri = np.where(r < 0.25, 1.0, 0.0).astype(np.float32)
    tri[np.abs(r - 0.25) < 0.03] = 0.5
    return img, tri, f"synthetic {size}^2 (shared data absent)"


def _model(config: str):
    import torch

    from mattingkit.config import load_config
    from mattingkit.models import build_model

    torch.manual_seed(0)
    cfg = load_config(config, ["model.pretrained=false"])
    return build_model(cfg.model).eval(), cfg


def _time_predict(model, img, tri, **kw) -> float:
    import numpy as np

    from mattingkit.infer import predict

    predict(model, np.ascontiguousarray(img[:256, :256]), np.ascontiguousarray(tri[:256, :256]))  # warm-up
    t0 = time.perf_counter()
    alpha = predict(model, img, tri, **kw)
    seconds = time.perf_counter() - t0
    assert alpha.shape == tri.shape and np.isfinite(alpha).all()
    return seconds


def run_case(name: str, size: int) -> dict:
    """Run one case in this process; returns its measurements."""
    import numpy as np
    import torch

    out: dict = {"case": name, "threads": torch.get_num_threads()}
    if name == "tiled4k":
        size = 4096
    img, tri, source = make_input(size)
    out.update(size=f"{size}x{size}", input=source, unknown_share=round(float((tri == 0.5).mean()), 4))
    if name in ("default", "demo"):
        model, cfg = _model("default" if name == "default" else "demo")
        out["model"] = f"alphagan {cfg.model.backbone} OS{cfg.model.output_stride} norm={cfg.model.norm}"
        out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        out["seconds"] = _time_predict(model, img, tri)
    elif name == "tiled4k":
        from mattingkit.config import InferConfig
        from mattingkit.infer import padding, tile_starts

        model, cfg = _model("default")
        icfg = InferConfig()
        out["model"] = f"alphagan {cfg.model.backbone} OS{cfg.model.output_stride} norm={cfg.model.norm}"
        calls = []
        model.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
        out["seconds"] = _time_predict(model, img, tri, pixel_budget=icfg.pixel_budget,
                                       tile_size=icfg.tile_size, tile_overlap=icfg.tile_overlap)
        t, b, l, r = padding(size, size, icfg.pad_margin)
        n = len(tile_starts(size + t + b, icfg.tile_size, icfg.tile_overlap))
        out["tiles_total"] = n * n
        out["tiles_run"] = sum(1 for c in calls if c[2] == icfg.tile_size)
        out["tiling"] = f"tile {icfg.tile_size}, overlap {icfg.tile_overlap}, budget {icfg.pixel_budget} px"
    elif name == "pymatting":
        from pymatting import estimate_alpha_cf

        estimate_alpha_cf(img[::8, ::8].astype(np.float64), tri[::8, ::8].astype(np.float64))  # warm-up (numba)
        t0 = time.perf_counter()
        alpha = estimate_alpha_cf(img.astype(np.float64), tri.astype(np.float64))
        out["seconds"] = time.perf_counter() - t0
        out["model"] = "pymatting.estimate_alpha_cf (closed-form, CG)"
        assert alpha.shape == tri.shape
    elif name == "vitmatte":
        try:
            from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting
        except ImportError as e:
            return {"case": name, "skipped": f"transformers not importable ({e})"}
        torch.manual_seed(0)
        backbone = VitDetConfig(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, num_channels=4,
            image_size=512, pretrain_image_size=224, patch_size=16, use_absolute_position_embeddings=True,
            use_relative_position_embeddings=True, window_size=14,
            window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10], residual_block_indices=[2, 5, 8, 11],
            out_features=["stage12"],
        )
        model = VitMatteForImageMatting(VitMatteConfig(backbone_config=backbone, hidden_size=384, convstream_hidden_sizes=[48, 96, 192],
                                                         fusion_hidden_sizes=[256, 128, 64, 32])).eval()
        out["model"] = "ViTMatte-S (transformers VitMatteForImageMatting, random init)"
        out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
        x = torch.cat([(torch.from_numpy(img.transpose(2, 0, 1))[None] - mean) / 0.5,
                       torch.from_numpy(tri)[None, None]], 1)
        with torch.inference_mode():
            model(pixel_values=x[:, :, :256, :256])  # warm-up
            t0 = time.perf_counter()
            alphas = model(pixel_values=x).alphas
            out["seconds"] = time.perf_counter() - t0
        assert alphas.shape[-2:] == (size, size)
    else:
        raise SystemExit(f"unknown case {name!r}; choose from {CASES}")
    out["seconds"] = round(out["seconds"], 2)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def run_subprocess(name: str, size: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name, "--size", str(size)]
    env = dict(os.environ, MATTINGKIT_OFFLINE="1", MATTINGKIT_HEADLESS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"case": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:], "wall_seconds": wall}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(wall, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", help="run one case in this process and print its JSON")
    ap.add_argument("--cases", nargs="*", default=CASES, help=f"cases to run (default: all of {CASES})")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--fresh", action="store_true", help="do not merge with the cases already in --out")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.size)))
        return 0

    results: dict = {}
    if not args.fresh and Path(args.out).exists():   # re-running some cases keeps the others' figures
        try:
            results = {k: v for k, v in json.loads(Path(args.out).read_text())["results"].items() if k in CASES}
        except (ValueError, KeyError):
            results = {}
    for name in args.cases:
        print(f"running {name} ...", flush=True)
        results[name] = r = run_subprocess(name, args.size)
        print("   ", json.dumps(r), flush=True)

    def sec(n):
        r = results.get(n, {})
        return r.get("seconds")

    ratios = {}
    for a, b in [("default", "demo"), ("pymatting", "demo"), ("pymatting", "default"), ("vitmatte", "demo"),
                 ("vitmatte", "default"), ("tiled4k", "default")]:
        if sec(a) and sec(b):
            ratios[f"{a}/{b}"] = round(sec(a) / sec(b), 2)
    checks = {}
    if "peak_rss_mb" in results.get("tiled4k", {}):
        checks["tiled4k_peak_rss_within_6GB"] = results["tiled4k"]["peak_rss_mb"] <= RSS_LIMIT_4K_GB * 1024

    print(f"\n{'case':10s} {'size':>10s} {'seconds':>9s} {'peak RSS MB':>12s}  model")
    for name in [c for c in CASES if c in results]:
        r = results[name]
        if "seconds" in r:
            print(f"{name:10s} {r['size']:>10s} {r['seconds']:9.2f} {r['peak_rss_mb']:12.0f}  {r.get('model', '')}")
        else:
            print(f"{name:10s} {'-':>10s} {'-':>9s} {'-':>12s}  {r.get('skipped') or r.get('error')}")
    print("ratios (seconds):", ", ".join(f"{k} = {v}x" for k, v in ratios.items()))
    if checks:
        print("checks:", checks)

    import torch

    payload = {
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "results": results, "ratios": ratios, "checks": checks,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    from mattingkit.io import atomic_write_text

    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

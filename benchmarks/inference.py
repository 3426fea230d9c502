"""Inference benchmark (not a test): seconds and peak RSS per method, side by side, on one input.

Cases (each in a fresh subprocess, so ``resource.getrusage`` peak RSS belongs to that case alone):

- ``default``   AlphaGAN ResNet-50, output stride 8 (the default config), random init, 1024x1024, CPU
- ``demo``      AlphaGAN ResNet-18 as in ``configs/demo.yaml``, random init, 1024x1024, CPU
- ``pymatting`` closed-form matting (``pymatting.estimate_alpha_cf``) on the same image and trimap
- ``vitmatte``  ViTMatte-S architecture from ``transformers`` (random init, timing only; skipped when
  ``transformers`` is not importable — it is not a mattingkit dependency)
- ``tiled4k``   a 4096x4096 image through :func:`mattingkit.infer.predict` with tiling (default model,
  default tile size / context / pixel budget), which must stay within 6 GB peak RSS
- ``context``   (not run by default) tiling error vs context on the real photos: for AlphaGAN
  resnet18 OS16 GN (demo), resnet18 OS8 BN, resnet50 OS8 BN (default) and DIM, all random init, the
  untiled prediction vs a tile cut 64 px from the left edge with the exact whole-image statistics
  injected; max |diff| over the unknown region at >= d px from the cut, d = 0..768. Picks
  ``tile_context``. ``--models`` / ``--photos`` narrow it.

The input is a real photo (alphamatting.com GT01 from ``../shared/data`` beside the repo) resized to the
benchmark size with its trimap (nearest), or a synthetic image with a band trimap when that is absent.
Model timings exclude construction and a small warm-up run; they are one timed call (2 CPU cores here).

Usage::

    .venv/bin/python benchmarks/inference.py                 # all cases -> benchmarks/results/inference.json
    .venv/bin/python benchmarks/inference.py --cases demo pymatting   # re-run some, keep the others
    .venv/bin/python benchmarks/inference.py --case demo     # one case in this process (prints JSON)
    .venv/bin/python benchmarks/inference.py --cases context --models demo bn18 --photos GT02 GT04
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
EXTRA_CASES = ["context"]
CONTEXT_MODELS = {   # name -> (config, overrides)
    "demo": ("demo", []),
    "bn18": ("default", ["model.backbone=resnet18"]),
    "bn50": ("default", []),
    "dim": ("default", ["model.name=dim", "model.backbone=vgg16_bn"]),
}
CONTEXT_DISTANCES = list(range(0, 800, 32))
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


def context_profile(model_name: str, photo: str, cut: int = 64) -> dict:
    """Max |untiled - tile| over the unknown region at >= d px from a tile's cut edge (exact statistics)."""
    import numpy as np
    import torch

    from mattingkit.config import load_config
    from mattingkit.infer import padding
    from mattingkit.io import read_image, read_trimap
    from mattingkit.models import build_model
    from mattingkit.tiling import GlobalContext, geometry_of

    config, overrides = CONTEXT_MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(load_config(config, ["model.pretrained=false", *overrides]).model).eval()
    img, tri = read_image(SHARED / "image" / f"{photo}.png"), read_trimap(SHARED / "trimap" / f"{photo}.png")
    t, b, left, r = padding(*tri.shape, 32)
    img_p = np.pad(img, ((t, b), (left, r), (0, 0)), mode="reflect")
    tri_p = np.pad(tri, ((t, b), (left, r)), mode="reflect")
    x = torch.from_numpy(np.ascontiguousarray(img_p.transpose(2, 0, 1)))[None]
    m = torch.from_numpy(np.ascontiguousarray(tri_p))[None, None]
    hp, wp = tri_p.shape
    with torch.inference_mode(), GlobalContext(model) as gc:
        gc.record, gc.stop_at_frontier = True, False   # untiled: local statistics are the whole-image ones
        gc.start_tile((0, hp, 0, wp), (hp, wp))
        full = model(x, m)["alpha"][0, 0]
        gc.inject.update(gc.finish_pass())
        gc.record = False
        gc.start_tile((0, hp, 0, 0), (hp, wp - cut))
        tile = model(x[..., cut:], m[..., cut:])["alpha"][0, 0]
    unknown = torch.from_numpy(tri_p[:, cut:] == 0.5)
    err = torch.where(unknown, (tile - full[:, cut:]).abs(), torch.zeros(())).amax(0).numpy()
    dist = np.arange(err.shape[0])
    return {"model": model_name, "photo": photo, "tile_context": geometry_of(model).tile_context,
            "alpha_std_unknown": round(float(full[unknown.nonzero(as_tuple=True)[0],
                                                  unknown.nonzero(as_tuple=True)[1] + cut].std()), 3),
            "max_err_beyond": {d: round(float(err[dist >= d].max()), 5) for d in CONTEXT_DISTANCES
                               if (dist >= d).any()}}


def run_case(name: str, size: int) -> dict:  # noqa: PLR0915 - one benchmark case measured side by side
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
        from mattingkit.infer import padding, resolve_context
        from mattingkit.tiling import TilingInfo

        model, cfg = _model("default")
        icfg = InferConfig()
        out["model"] = f"alphagan {cfg.model.backbone} OS{cfg.model.output_stride} norm={cfg.model.norm}"
        calls = []
        model.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
        info = TilingInfo()
        out["seconds"] = _time_predict(model, img, tri, pixel_budget=icfg.pixel_budget, tile_size=icfg.tile_size,
                                       tile_overlap=icfg.tile_overlap, tile_stats_passes=icfg.tile_stats_passes,
                                       tiling_info=info)
        t, b, _, _ = padding(size, size, icfg.pad_margin)
        out["tiles_total"] = info.tiles
        out["tiles_run"] = info.tiles_run
        out["stats_passes"] = info.stats_passes
        out["global_ops"] = info.global_ops
        out["exact_stats"] = info.exact_stats
        out["largest_tile"] = max(c[2] * c[3] for c in calls[1:]) if len(calls) > 1 else None
        out["tiling"] = (f"tile_size {icfg.tile_size}, context {resolve_context(model, icfg.tile_overlap)} px "
                         f"(tile_overlap={icfg.tile_overlap!r}), blend {info.blend}, budget {icfg.pixel_budget} px, "
                         f"padded {size + t + b}^2")
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
    ap.add_argument("--models", nargs="*", default=list(CONTEXT_MODELS), help="context case: models")
    ap.add_argument("--photos", nargs="*", default=["GT02", "GT04"], help="context case: photos")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.size)))
        return 0
    if "context" in args.cases:
        rows = [context_profile(m, p) for m in args.models for p in args.photos]
        ds = [0, 256, 384, 416, 448, 480, 512, 544, 576]
        print(f"{'model':6s} {'photo':5s} " + " ".join(f"{'>=' + str(d):>8s}" for d in ds))
        for r in rows:
            print(f"{r['model']:6s} {r['photo']:5s} " + " ".join(f"{r['max_err_beyond'].get(d, 0):8.4f}" for d in ds))
        out = Path(args.out).with_name("tiling_context.json")
        from mattingkit.io import atomic_write_text

        atomic_write_text(out, json.dumps({"command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]),
                                           "rows": rows}, indent=2) + "\n")
        print(f"wrote {out}")
        args.cases = [c for c in args.cases if c != "context"]
        if not args.cases:
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

"""GPU check: one script, within ``--budget-s`` (default 300 s: 5 minutes on a Colab T4), one JSON object of
what the kit does on this machine.

Sections (each runs on its own: a failure or an out-of-memory is recorded under that section and the
rest still run; each one's time is printed and kept as ``section_s``; a section whose expected time
(:data:`EXPECTED_S`) no longer fits the budget is skipped, saying so):

- ``doctor``      :func:`mattingkit.doctor.doctor` (platform, GPU, arch list, AMP choice, roots...);
- ``demo``        the demo recipe on the device: steps/s after warm-up, validation SAD before and after;
- ``fp16_resume`` ``train.amp=fp16`` + GradScaler for 60 steps, then a new trainer resumes to 90 (scale kept);
- ``default``     the default recipe (ResNet-50 OS8 BN + PatchGAN, random init, 320 px crops) at batch 1 and
  16, AMP auto vs off: steps/s after warm-up and peak GPU memory;
- ``infer1024``   a 1024x1024 image: :func:`mattingkit.infer.predict` vs the raw forward, fp32 and AMP;
- ``tiled4096``   a 4096x4096 image tiled (time, peak GPU memory); tiled vs untiled at the largest side an
  untiled prediction fits in the free GPU memory (memory per megapixel measured on the device at 512 px;
  untiled 4096² needs ~25 GB, more than a 15 GB T4): time, peak memory, max |diff| on the unknown region
  in float32 -- and with TF32 on, only where TF32 exists (capability 8.0 and up).

The training sections use the loader workers a run would use (``data.num_workers: auto`` through the
device plan, :func:`mattingkit.device.resolve_num_workers`) and report them.

``--quick`` runs every section on the CPU with tiny sizes in seconds (tests/test_gpu_check.py runs it).

Run:  python benchmarks/gpu_check.py [--quick] [--budget-s 300] [--out benchmarks/results/gpu_check.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mattingkit import device as dv  # noqa: E402
from mattingkit.config import load_config  # noqa: E402
from mattingkit.doctor import doctor  # noqa: E402
from mattingkit.infer import predict  # noqa: E402
from mattingkit.models import build_model  # noqa: E402
from mattingkit.train import Trainer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "gpu_check.json"

#: sizes per mode: (full GPU check, --quick CPU check)
SIZES = {
    "demo_steps": (200, 2), "demo_warmup": (10, 1),
    "fp16_steps": (60, 2), "fp16_resume_to": (90, 3),
    "default_batches": ((1, 16), (2,)), "default_image": (320, 32), "default_backbone": ("resnet50", "resnet18"),
    "default_warmup": (5, 1), "default_timed": (15, 1),
    "infer_side": (1024, 96), "infer_repeats": (5, 1),
    "tiled_side": (4096, 160), "tiled_tile": (1792, 128), "tiled_budget": (2048 * 2048, 128 * 128),
    "tiled_overlap": ("auto", 32),
}
#: Expected seconds per section (a Colab T4: estimates that sum to 270 s; --quick: measured on a busy 2-CPU
#: machine): a section is skipped when the time spent so far plus this exceeds --budget-s.
EXPECTED_S = {"doctor": (10, 2), "demo": (60, 70), "fp16_resume": (30, 90), "default": (60, 90),
              "infer1024": (20, 40), "tiled4096": (90, 80)}
SECTIONS = list(EXPECTED_S)
#: Memory of an untiled float32 prediction of the default model per megapixel, measured on the CPU
#: (the device measures its own at 512 px); the untiled side is chosen to use at most this share of free memory.
UNTILED_GB_PER_MPX = 1.5
UNTILED_FREE_SHARE = 0.7
#: --quick: a smaller demo dataset and tiny crops, no foreground estimation (seconds on a busy CPU)
QUICK_DATA = dict(n_aim=8, n_backgrounds=4, n_comp_train=2, n_comp_test=1)
QUICK_OVERRIDES = ["data.image_size=32", "data.crop_sizes=[32, 48]", "data.batch_size=2", "data.val_max_side=64",
                   "data.val_limit=1", "data.foreground=photo"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)


def _section(out: dict, name: str, fn: Callable[[], Any], budget: tuple[float, float, float] | None = None) -> None:
    """Run one section into ``out[name]``; ``budget`` = (start time, --budget-s, expected seconds): skip the
    section (saying so) when it would end past the budget."""
    if budget is not None:
        start, limit, expected = budget
        left = limit - (time.perf_counter() - start)
        if expected > left:
            out[name] = {"skipped": f"expected to take ~{expected:g} s and {max(0.0, left):.0f} s of "
                                    f"--budget-s={limit:g} are left", "section_s": 0.0}
            print(f"[gpu_check] {name}: skipped ({out[name]['skipped']})", file=sys.stderr, flush=True)
            return
    t0 = time.perf_counter()
    try:
        out[name] = fn()
    except Exception as e:  # noqa: BLE001 - every section reports for itself
        out[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500],
                     "oom": dv.is_oom(e), "traceback": traceback.format_exc(limit=4)}
        dv.free_cuda_memory()
    took = round(time.perf_counter() - t0, 2)   # one reading: the JSON and the printed line agree
    if isinstance(out[name], dict):
        out[name]["section_s"] = took
    print(f"[gpu_check] {name}: {took:.1f} s", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Training sections (Trainer: __init__, train_step, after_step, validate, fit, close)
# --------------------------------------------------------------------------------------------
def _demo_overrides(data_root: Path, device: str, run_dir: Path, quick: bool) -> list[str]:
    # data.num_workers stays `auto`: the workers a run would use (device.plan -> resolve_num_workers)
    return [f"run.data_root={data_root}", f"run.device={device}", f"run.runs_root={run_dir.parent}",
            f"run.name={run_dir.name}", "train.tensorboard=false",
            *(QUICK_OVERRIDES if quick else [])]


def _timed_steps(trainer: Trainer, warmup: int, timed: int) -> float:
    """Steps/s of the real training step (events off) after ``warmup`` steps."""
    t = trainer.cfg.train
    for k in ("log_every", "image_every", "val_every", "ckpt_every"):
        setattr(t, k, 10 ** 9)
    end = 10 ** 9
    for _ in range(warmup):
        trainer.after_step(trainer.train_step(), end)
    _sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(timed):
        trainer.after_step(trainer.train_step(), end)
    _sync(trainer.device)
    return round(timed / (time.perf_counter() - t0), 3)


def demo_section(data_root: Path, device: str, work: Path, quick: bool) -> dict:
    i = int(quick)
    steps, warm = SIZES["demo_steps"][i], SIZES["demo_warmup"][i]
    run = work / "demo"
    over = _demo_overrides(data_root, device, run, quick) + [
        f"train.steps={steps}", f"train.val_every={max(2, steps // 4)}", f"train.ckpt_every={steps}"]
    trainer = Trainer(load_config("demo", over), run_dir=run, fresh=True, headless=True)
    try:
        summary = trainer.fit()
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        sads = [r["sad"] for r in history if r.get("kind", r.get("split")) in ("val", None) and "sad" in r]
        speed = _timed_steps(trainer, warm, max(1, steps // 4))
        return {"steps": summary["step"], "elapsed_s": summary["elapsed_s"], "fit_steps_per_s": summary["steps_per_s"],
                "steps_per_s_after_warmup": speed, "val_sad_first": sads[0] if sads else None,
                "val_sad_last": (summary.get("final") or {}).get("sad"), "amp": str(trainer.amp_dtype),
                "device": str(trainer.device), "num_workers": trainer.num_workers}
    finally:
        trainer.close()


def fp16_resume_section(data_root: Path, device: str, work: Path, quick: bool) -> dict:
    i = int(quick)
    first, to = SIZES["fp16_steps"][i], SIZES["fp16_resume_to"][i]
    run = work / "fp16"
    over = _demo_overrides(data_root, device, run, quick) + ["train.amp=fp16", f"train.ckpt_every={first}",
                                                       f"train.val_every={10 ** 6}", "train.val_at_start=false"]
    a = Trainer(load_config("demo", over + [f"train.steps={first}"]), run_dir=run, fresh=True, headless=True)
    try:
        s1 = a.fit()
        scale1 = float(a.scaler_g.get_scale()) if a.scaler_g.is_enabled() else None
    finally:
        a.close()
    b = Trainer(load_config("demo", over + [f"train.steps={to}"]), run_dir=run, headless=True)
    try:
        start = b.step
        scale_resumed = float(b.scaler_g.get_scale()) if b.scaler_g.is_enabled() else None
        s2 = b.fit()
    finally:
        b.close()
    return {"first_step": s1["step"], "scale_saved": scale1, "resumed_from": s2["resumed_from"], "resumed_at": start,
            "scale_resumed": scale_resumed, "final_step": s2["step"], "nonfinite": s2["nonfinite_total"],
            "grad_scaler": scale1 is not None, "num_workers": b.num_workers}


def default_section(data_root: Path, device: str, work: Path, quick: bool) -> dict:
    i = int(quick)
    res = []
    for batch in SIZES["default_batches"][i]:
        for amp in ("auto", "off"):
            run = work / f"default_b{batch}_{amp}"
            over = _demo_overrides(data_root, device, run, quick) + [
                "data.layout=aim500", "data.root=demo/aim500", "data.backgrounds=demo/backgrounds",
                "data.crop_sizes=[64, 96, 128]" if not quick else "data.crop_sizes=[32, 48]",
                f"data.image_size={SIZES['default_image'][i]}", f"data.batch_size={batch}", "data.val_limit=1", f"model.backbone={SIZES['default_backbone'][i]}", "model.pretrained=false",
                f"train.amp={amp}", "train.g_warmup_steps=0", "train.warmup_steps=1", "train.val_at_start=false"]
            row: dict[str, Any] = {"batch_size": batch, "amp": amp}
            trainer = None
            try:
                trainer = Trainer(load_config("default", over), run_dir=run, fresh=True, headless=True)
                dev = trainer.device
                _reset_peak(dev)
                row["steps_per_s_after_warmup"] = _timed_steps(trainer, SIZES["default_warmup"][i],
                                                               SIZES["default_timed"][i])
                row.update(peak_gb=_peak_gb(dev), amp_dtype=str(trainer.amp_dtype), num_workers=trainer.num_workers,
                           channels_last=getattr(trainer, "channels_last", trainer.cfg.train.channels_last))
            except Exception as e:  # noqa: BLE001 - an OOM at batch 16 on a small GPU is a result
                row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300],
                           oom=dv.is_oom(e))
            finally:
                if trainer is not None:
                    trainer.close()
                del trainer
                dv.free_cuda_memory()
            res.append(row)
    return {"model": f"alphagan/{SIZES['default_backbone'][i]}", "image_size": SIZES["default_image"][i], "runs": res}


# --------------------------------------------------------------------------------------------
# Inference sections (build_model, predict)
# --------------------------------------------------------------------------------------------
def _image(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.random((side, side, 3), dtype=np.float32)
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(yy - side / 2, xx - side / 2)
    tri = np.where(r < side * 0.3, 1.0, 0.0).astype(np.float32)
    tri[np.abs(r - side * 0.3) < max(8, side // 32)] = 0.5
    return img, tri


def _default_model(device: torch.device, quick: bool) -> torch.nn.Module:
    cfg = load_config("default", ["model.pretrained=false", f"model.backbone={SIZES['default_backbone'][int(quick)]}"])
    torch.manual_seed(0)
    return build_model(cfg.model).to(device).eval()


def _time(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    out = fn()                       # warm-up (allocator, cuDNN plans)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats, out


def infer_section(device: torch.device, quick: bool) -> dict:
    i = int(quick)
    side, reps = SIZES["infer_side"][i], SIZES["infer_repeats"][i]
    model = _default_model(device, quick)
    img, tri = _image(side)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].to(device)
    t = torch.from_numpy(tri)[None, None].to(device)
    rows = []
    for amp in ("off", "auto"):
        plan = dv.DevicePlan.for_inference(device, amp)   # the kit's one AMP decision and autocast
        dtype = plan.amp_dtype

        def raw(plan=plan):
            with torch.inference_mode(), plan.autocast():
                return model(x, t)["alpha"]

        with dv.cudnn_benchmark(False):
            _reset_peak(device)
            raw_s, _ = _time(raw, device, reps)
            raw_peak = _peak_gb(device)
            _reset_peak(device)
            pred_s, _ = _time(lambda amp=amp: predict(model, img, tri, device=device, amp=amp), device, reps)
            pred_peak = _peak_gb(device)
        rows.append({"amp": amp, "dtype": str(dtype), "raw_forward_s": round(raw_s, 4), "predict_s": round(pred_s, 4),
                     "predict_overhead": round(pred_s / raw_s - 1, 3), "raw_peak_gb": raw_peak,
                     "predict_peak_gb": pred_peak})
    return {"side": side, "model": "alphagan default recipe, random init", "runs": rows}


def _untiled_gb_per_mpx(model: torch.nn.Module, device: torch.device, quick: bool) -> tuple[float, str]:
    """GB of GPU memory an untiled float32 prediction takes per megapixel: measured on a GPU (512 px),
    else the figure measured on the CPU."""
    if device.type != "cuda":
        return UNTILED_GB_PER_MPX, "measured on the CPU (issue 21)"
    side = 512
    img, tri = _image(side, seed=2)
    dv.free_cuda_memory()
    _reset_peak(device)
    base = torch.cuda.memory_allocated(device)
    with dv.exact_numerics(), dv.cudnn_benchmark(False):
        predict(model, img, tri, device=device, amp="off", pixel_budget=side * side + 1)
    _sync(device)
    used = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 30
    return used / (side * side / 1e6), f"measured here at {side}x{side}"


def untiled_side(free_gb: float | None, gb_per_mpx: float, cap: int, grid: int = 32) -> int:
    """The largest side (a multiple of ``grid``, at most ``cap``) whose untiled prediction uses at most
    :data:`UNTILED_FREE_SHARE` of ``free_gb`` (``None``: no limit known -> ``cap``).

    Example (a 15 GB T4 with 14.5 GB free, 1.5 GB per megapixel): ``untiled_side(14.5, 1.5, 4096)`` -> 2592
    """
    if free_gb is None:
        return cap
    mpx = UNTILED_FREE_SHARE * free_gb / gb_per_mpx
    return max(grid, min(cap, int((mpx * 1e6) ** 0.5) // grid * grid))


def _predict_row(row: dict, key: str, model, img, tri, device, **kw) -> np.ndarray | None:
    _reset_peak(device)
    try:
        _sync(device)
        t0 = time.perf_counter()
        out = predict(model, img, tri, device=device, amp="off", **kw)
        _sync(device)
        row[f"{key}_s"] = round(time.perf_counter() - t0, 3)
        row[f"{key}_peak_gb"] = _peak_gb(device)
        return out
    except Exception as e:  # noqa: BLE001 - an OOM is a result
        row[f"{key}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        row[f"{key}_oom"] = dv.is_oom(e)
        dv.free_cuda_memory()
        return None


def tiled_section(device: torch.device, quick: bool) -> dict:
    i = int(quick)
    side, tile, budget = SIZES["tiled_side"][i], SIZES["tiled_tile"][i], SIZES["tiled_budget"][i]
    overlap = SIZES["tiled_overlap"][i]
    model = _default_model(device, quick)
    tiled_kw = {"pixel_budget": budget, "tile_size": tile, "tile_overlap": overlap}
    per_mpx, how = _untiled_gb_per_mpx(model, device, quick)
    free = torch.cuda.mem_get_info(device)[0] / 2 ** 30 if device.type == "cuda" else None
    fit = untiled_side(free, per_mpx, side)
    cap = dv.capability(device) if device.type == "cuda" else None
    tf32_exists = cap is not None and cap >= (8, 0)
    res: dict[str, Any] = {
        "side": side, "tile_size": tile, "tile_overlap": overlap, "model": "alphagan default recipe, random init",
        "untiled_gb_per_mpx": round(per_mpx, 3), "untiled_gb_per_mpx_from": how,
        "free_gb": None if free is None else round(free, 2), "untiled_side": fit,
        "tf32": "compared" if tf32_exists else (f"no TF32 on this device ({'capability %d.%d' % cap if cap else device.type}"
                                                "): float32 only"),
    }
    if fit < side:   # the full size tiled only: untiled it does not fit
        full: dict[str, Any] = {"untiled": f"not run: needs ~{per_mpx * side * side / 1e6:.1f} GB, {free:.1f} GB free"}
        img, tri = _image(side, seed=1)
        with dv.exact_numerics(), dv.cudnn_benchmark(False):
            _predict_row(full, "tiled", model, img, tri, device, **tiled_kw)
        res["full"] = full
        dv.free_cuda_memory()
    img, tri = _image(fit, seed=1)
    unknown = tri == 0.5
    rows = []
    for tf32 in [False] + ([True] if tf32_exists else []):   # TF32 only where it exists (Ampere and later)
        row: dict[str, Any] = {"side": fit, "tf32": tf32}
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        try:
            with dv.exact_numerics(enabled=not tf32), dv.cudnn_benchmark(False):
                if tf32:
                    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
                outs = {"untiled": _predict_row(row, "untiled", model, img, tri, device, pixel_budget=fit * fit + 1),
                        "tiled": _predict_row(row, "tiled", model, img, tri, device, **tiled_kw)}
                if all(o is not None for o in outs.values()):
                    diff = np.abs(outs["tiled"] - outs["untiled"])[unknown]
                    row["max_abs_diff_unknown"] = float(diff.max())
                    row["mean_abs_diff_unknown"] = float(diff.mean())
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        rows.append(row)
        dv.free_cuda_memory()
    res["runs"] = rows
    return res


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes on the CPU, seconds (the test runs this)")
    p.add_argument("--device", default=None, help="default: cuda, or cpu with --quick")
    p.add_argument("--sections", nargs="*", default=SECTIONS, choices=SECTIONS)
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="skip (saying so) a section that would end after this many seconds (default 300)")
    p.add_argument("--data-root", default=None, help="where to write/find the demo data (default: a temp folder)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    device_spec = args.device or ("cpu" if args.quick else "cuda")
    device = dv.resolve_device(device_spec)
    t_start = time.perf_counter()
    warnings.simplefilter("ignore")
    result: dict[str, Any] = {"benchmark": "gpu_check", "quick": args.quick, "device": str(device),
                              "budget_s": args.budget_s, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "num_workers": dv.resolve_num_workers("auto"),
                              "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None
                                                                                      else sys.argv[1:])}
    torch.manual_seed(0)
    sections: dict[str, Callable[[], Any]] = {}
    # stdout carries the JSON alone: what the trainer prints (progress, "resuming from") goes to stderr
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        data_root = Path(args.data_root) if args.data_root else work / "data"
        if {"demo", "fp16_resume", "default"} & set(args.sections):
            from mattingkit.data.synthetic import make_demo_data

            make_demo_data(data_root / "demo", seed=0, **(QUICK_DATA if args.quick else {}))
        cfg = load_config("default", [f"run.device={device_spec}"])
        sections = {"doctor": lambda: doctor(cfg, probe=not args.quick),
                    "demo": lambda: demo_section(data_root, device_spec, work, args.quick),
                    "fp16_resume": lambda: fp16_resume_section(data_root, device_spec, work, args.quick),
                    "default": lambda: default_section(data_root, device_spec, work, args.quick),
                    "infer1024": lambda: infer_section(device, args.quick),
                    "tiled4096": lambda: tiled_section(device, args.quick)}
        for name in SECTIONS:
            if name in args.sections:
                _section(result, name, sections[name], (t_start, args.budget_s, EXPECTED_S[name][int(args.quick)]))
    result["section_s"] = {k: result[k].get("section_s") for k in SECTIONS if isinstance(result.get(k), dict)}
    result["skipped"] = [k for k in SECTIONS if isinstance(result.get(k), dict) and "skipped" in result[k]]
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    print("[gpu_check] times: " + ", ".join(f"{k} {'skipped' if k in result['skipped'] else f'{v:.1f} s'}"
                                            for k, v in result["section_s"].items())
          + f"; total {result['total_s']:.1f} s of --budget-s={args.budget_s:g}", file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1, default=str)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    failed = [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

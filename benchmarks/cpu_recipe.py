"""The ``cpu`` recipe on real photos: train it on the photo-like synthetic data, evaluate on real
alphamatting.com photos with their trimaps beside closed-form matting and the trimap itself.

Steps (one run, one table):

1. make the data: :func:`mattingkit.data.photoreal.make_photoreal_data` under ``<data_root>/photoreal``
   (cached on disk by seed/options: a no-op the second time);
2. train ``configs/cpu.yaml`` (GAN off, its default) and, with ``--gan``, the same recipe with the GAN
   term on (``train.use_gan=true``) -- or take given checkpoints (``--checkpoint``, ``--gan-checkpoint``);
   the CPU time of each training (user + sys of this process, i.e. both cores) and its wall time
   are recorded;
3. optionally (``--demo``) train the ``demo`` config for its steps (``make demo``'s recipe);
4. evaluate every model on the photos of ``--eval`` (default ``../shared/data/alphamatting_dev``,
   alphamatting layout: image/ + alpha/ + trimap/) at full resolution with the official metrics
   (:func:`mattingkit.metrics.compute_metrics`: SAD / MSE / Grad / Conn over the trimap's unknown
   region), beside closed-form matting (pymatting ``estimate_alpha_cf``) and trimap-as-alpha
   (unknown -> 0.5) on the same photos;
5. print the table and write ``benchmarks/results/cpu_recipe.json``.

The models' predictions keep the trimap's known pixels (fg = 1, bg = 0), as inference does; the
metrics only look at the unknown region anyway.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/cpu_recipe.py --gan --demo
    PYTHONPATH=. .venv/bin/python benchmarks/cpu_recipe.py --checkpoint runs/cpu/checkpoints/best.pt

``--set key=value`` overrides the cpu config (e.g. ``--set train.steps=100``); ``--runs-root`` /
``--data-root`` choose where runs and data go (default: the kit's).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mattingkit.config import load_config  # noqa: E402

DEFAULT_EVAL = REPO.parent / "shared" / "data" / "alphamatting_dev"
RESULTS = REPO / "benchmarks" / "results" / "cpu_recipe.json"


def cpu_seconds() -> float:
    """user + sys CPU seconds of this process (all threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def base_overrides(args) -> list[str]:
    out = []
    if args.data_root:
        out.append(f"run.data_root={args.data_root}")
    if args.runs_root:
        out.append(f"run.runs_root={args.runs_root}")
    return out


def ensure_data(cfg) -> dict:
    """The photo-like data the cpu recipe trains on (made once, then cached)."""
    from mattingkit.data.layouts import data_root_for
    from mattingkit.data.photoreal import make_photoreal_data

    return make_photoreal_data(data_root_for(cfg) / "photoreal", seed=0)


def train_recipe(config: str, overrides: list[str], name: str, eval_root: Path | None) -> dict:
    """Train one config in a fresh run folder; returns the checkpoint path, CPU/wall time and summary."""
    from mattingkit.train import train

    ov = list(overrides) + [f"run.name={name}"]
    if eval_root is not None:  # validate on the real photos during training (monitoring only)
        ov.append(f"data.eval_root={eval_root}")
    cfg = load_config(config, ov)
    if config == "cpu" or Path(cfg.data.root).parts[:1] == ("photoreal",):
        ensure_data(cfg)
    load0 = loadavg()
    c0, t0 = cpu_seconds(), time.monotonic()
    summary = train(cfg, fresh=True, headless=True)
    cpu, wall = cpu_seconds() - c0, time.monotonic() - t0
    from mattingkit.train import default_run_dir

    run_dir = default_run_dir(cfg)
    rec = {"config": config, "overrides": ov, "run_dir": str(run_dir), "cpu_min": round(cpu / 60, 2),
           "wall_min": round(wall / 60, 2), "steps": summary.get("step", summary.get("steps")),
           "load_before": load0, "load_after": loadavg(), "summary": summary,
           "checkpoint": str(run_dir / "checkpoints" / "last.pt")}
    (run_dir / "cpu_time.json").write_text(json.dumps(rec, indent=1, default=str))
    print(f"[{name}] trained: {rec['cpu_min']} CPU min, {rec['wall_min']} wall min", flush=True)
    return rec


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
def load_eval_set(root: Path) -> list[dict]:
    from mattingkit.io import read_alpha, read_image, read_trimap

    items = []
    for img in sorted((root / "image").glob("*.png")):
        items.append({"id": img.stem, "image": read_image(img), "alpha": read_alpha(root / "alpha" / img.name),
                      "trimap": read_trimap(root / "trimap" / img.name)})
    if not items:
        raise SystemExit(f"{root}: no image/*.png (expected the alphamatting layout: image/ alpha/ trimap/)")
    return items


def predict_model(checkpoint: str | Path, items: list[dict]) -> tuple[list[np.ndarray], float]:
    """Full-resolution predictions of a checkpoint through :func:`mattingkit.infer.predict` with the
    run's inference settings (which keep the trimap's known pixels); returns (preds, CPU s)."""
    from mattingkit.infer import load_model, predict

    model, cfg = load_model(checkpoint)
    preds = []
    c0 = cpu_seconds()
    for it in items:
        preds.append(predict(model, it["image"], it["trimap"], infer_cfg=cfg))
    return preds, cpu_seconds() - c0


def predict_closed_form(items: list[dict]) -> tuple[list[np.ndarray], float]:
    """The kit's closed-form baseline (:func:`mattingkit.baselines.predict_baseline`) on each photo."""
    from mattingkit.baselines import predict_baseline

    preds = []
    c0 = cpu_seconds()
    for it in items:
        preds.append(predict_baseline("closed_form", it["image"], it["trimap"]))
    return preds, cpu_seconds() - c0


def predict_trimap(items: list[dict]) -> tuple[list[np.ndarray], float]:
    return [it["trimap"].astype(np.float32) for it in items], 0.0  # unknown is already 0.5


def score(preds: list[np.ndarray], items: list[dict]) -> dict:
    from mattingkit.metrics import compute_metrics

    per = {}
    for p, it in zip(preds, items):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = compute_metrics(p, it["alpha"], it["trimap"])
        per[it["id"]] = {k: round(float(v), 4) for k, v in m.items()}
    mean = {k: round(float(np.mean([v[k] for v in per.values()])), 4) for k in ("sad", "mse", "grad", "conn")}
    return {"mean": mean, "per_image": per}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - a benchmark's script: measure side by side, print, write JSON
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--eval", type=Path, default=DEFAULT_EVAL, help="real photos (alphamatting layout)")
    p.add_argument("--checkpoint", help="evaluate this cpu-recipe checkpoint instead of training")
    p.add_argument("--gan", action="store_true", help="also train (or --gan-checkpoint) the recipe with the GAN on")
    p.add_argument("--gan-checkpoint", help="evaluate this GAN-on checkpoint instead of training it")
    p.add_argument("--demo", action="store_true", help="also train and evaluate the demo config (make demo)")
    p.add_argument("--demo-checkpoint", help="evaluate this demo checkpoint instead of training it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="cpu config overrides")
    p.add_argument("--data-root")
    p.add_argument("--runs-root")
    p.add_argument("--no-val", action="store_true", help="do not validate on --eval during training")
    p.add_argument("--train-only", action="store_true", help="train (the cpu recipe) and stop")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    eval_root = None if args.no_val else args.eval.resolve()
    common = base_overrides(args)
    trained: dict[str, dict] = {}
    models: dict[str, str] = {}
    if args.checkpoint:
        models["cpu recipe (GAN off)"] = args.checkpoint
    else:
        trained["cpu recipe (GAN off)"] = train_recipe("cpu", common + args.set, "cpu", eval_root)
        models["cpu recipe (GAN off)"] = trained["cpu recipe (GAN off)"]["checkpoint"]
    if args.train_only:
        return 0
    if args.gan or args.gan_checkpoint:
        if args.gan_checkpoint:
            models["cpu recipe (GAN on)"] = args.gan_checkpoint
        else:
            rec = train_recipe("cpu", common + args.set + ["train.use_gan=true"], "cpu_gan", eval_root)
            trained["cpu recipe (GAN on)"], models["cpu recipe (GAN on)"] = rec, rec["checkpoint"]
    if args.demo or args.demo_checkpoint:
        if args.demo_checkpoint:
            models["demo recipe"] = args.demo_checkpoint
        else:
            rec = train_recipe("demo", common, "demo_real", None)
            trained["demo recipe"], models["demo recipe"] = rec, rec["checkpoint"]

    items = load_eval_set(args.eval)
    rows: dict[str, dict] = {}
    for name, path in models.items():
        preds, cpu = predict_model(path, items)
        rows[name] = {**score(preds, items), "checkpoint": str(path), "predict_cpu_s": round(cpu, 1)}
        if name in trained:
            rows[name]["train_cpu_min"] = trained[name]["cpu_min"]
            rows[name]["train_wall_min"] = trained[name]["wall_min"]
        else:  # a given checkpoint: its run folder may hold the record of its training
            rec = Path(path).parent.parent / "cpu_time.json"
            if rec.is_file():
                r = json.loads(rec.read_text())
                rows[name]["train_cpu_min"], rows[name]["train_wall_min"] = r["cpu_min"], r["wall_min"]
    preds, cpu = predict_closed_form(items)
    rows["closed-form (pymatting)"] = {**score(preds, items), "predict_cpu_s": round(cpu, 1)}
    preds, _ = predict_trimap(items)
    rows["trimap as alpha"] = score(preds, items)

    print(f"\n{len(items)} photos from {args.eval} (full resolution, official metrics over the unknown region)")
    print(f"{'method':<26}{'SAD':>8}{'MSE':>9}{'Grad':>8}{'Conn':>8}{'train CPU min':>15}")
    for name, r in rows.items():
        m = r["mean"]
        tcpu = r.get("train_cpu_min")
        print(f"{name:<26}{m['sad']:>8.2f}{m['mse']:>9.4f}{m['grad']:>8.2f}{m['conn']:>8.2f}"
              f"{'' if tcpu is None else tcpu:>15}")
    out = {"eval": str(args.eval), "n_images": len(items), "rows": rows,
           "trainings": {k: {kk: v[kk] for kk in ("config", "overrides", "cpu_min", "wall_min", "steps",
                                                 "load_before", "load_after")} for k, v in trained.items()},
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": loadavg()},
           "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Trimap-free prediction quality on the demo's competition test images: what notebook 05 submits.

The competition test images have no trimaps. Each ``--checkpoint`` predicts them the way notebook 05 does
(a model trained with trimaps: two passes, coarse pass with an all-unknown trimap, a trimap from it, a
refining pass, beside the single all-unknown pass; a trimap-free model: one pass, at its ``infer.max_side``),
scored against the true masks (the demo's ``competition/sample_submission.csv`` holds them) beside constant
mattes (0, 0.5, 1) and the best constant per image (its median: an oracle no predictor can know).
Whole-image SAD (competition style) at the test size (1024 px), mean per image, measured side by side in one
run. JSON to ``benchmarks/results/trimapless.json``.

    PYTHONPATH=. python benchmarks/trimapless.py --demo data/demo \\
        --checkpoint runs/demo/checkpoints/best.pt runs/demo_ecom/checkpoints/best.pt
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from mattingkit.infer import load_model, predict_passes
from mattingkit.io import read_alpha, read_image_uint8
from mattingkit.submission import decode_submission

REPO = Path(__file__).resolve().parents[1]


def _sad(a: np.ndarray, b: np.ndarray | float) -> float:
    return float(np.abs(a - b).sum()) / 1000


def run(checkpoints: list[Path], demo: Path) -> dict:
    comp = demo / "competition"
    truth = {p.stem: read_alpha(p) for p in decode_submission(comp / "sample_submission.csv", tempfile.mkdtemp())}
    images = {stem: read_image_uint8(comp / "test_dataset" / "orig_1024" / f"{stem}.png") for stem in truth}
    sad: dict[str, list[float]] = {f"constant_{c:g}": [_sad(g, c) for g in truth.values()] for c in (0.0, 0.5, 1.0)}
    sad["best_constant_per_image (oracle)"] = [_sad(g, float(np.median(g))) for g in truth.values()]
    models = {}
    for ckpt in checkpoints:
        model, cfg = load_model(ckpt, device="cpu")
        name = f"{Path(ckpt).parent.parent.name}/{Path(ckpt).name}"
        models[name] = {"use_trimap": bool(cfg.model.use_trimap), "max_side": cfg.infer.max_side}
        modes = {"two_pass": True, "one_pass_all_unknown": False} if cfg.model.use_trimap else {"one_pass": False}
        for mode, two in modes.items():
            sad[f"{name} {mode}"] = [_sad(predict_passes(model, images[s], infer_cfg=cfg, two_pass=two)["alpha"], g)
                                     for s, g in truth.items()]
    return {"images": len(truth), "side": int(next(iter(truth.values())).shape[0]), "models": models,
            "mean_sad": {k: round(float(np.mean(v)), 1) for k, v in sad.items()},
            "per_image_sad": {k: [round(x, 1) for x in v] for k, v in sad.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    ap.add_argument("--demo", type=Path, required=True, help="the demo data root (holds competition/)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = run(args.checkpoint, args.demo)
    for k, v in out["mean_sad"].items():
        print(f"{v:8.1f}  {k}")
    res = REPO / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "trimapless.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

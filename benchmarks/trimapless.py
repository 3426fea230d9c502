"""Trimap-free prediction quality: what notebook 05 submits for a model trained with trimaps.

The competition test images have no trimaps, so a model trained with trimaps predicts them in two passes
(coarse pass with an all-unknown trimap, a trimap from it, a refining pass; ``infer.two_pass``). This
script scores that path, and the single all-unknown pass it replaces, against the true mattes of the
demo's test images (the demo's ``competition/sample_submission.csv`` holds them) beside constant mattes
(0, 0.5, 1): whole-image SAD (competition style), mean per image, at ``--side`` px. JSON to
``benchmarks/results/trimapless.json``.

    PYTHONPATH=. python benchmarks/trimapless.py --checkpoint runs/demo/checkpoints/best.pt --demo data/demo
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mattingkit.infer import load_model, predict_passes
from mattingkit.io import read_alpha, read_image_uint8
from mattingkit.submission import decode_submission

REPO = Path(__file__).resolve().parents[1]


def _resize(a: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((side, side), Image.BILINEAR))


def run(checkpoint: Path, demo: Path, side: int) -> dict:
    model, cfg = load_model(checkpoint, device="cpu")
    comp = demo / "competition"
    truth = {p.stem: read_alpha(p) for p in decode_submission(comp / "sample_submission.csv", tempfile.mkdtemp())}
    sad = {"two_pass": [], "one_pass_all_unknown": [], "constant_0": [], "constant_0.5": [], "constant_1": []}
    for stem, gt in truth.items():
        img = _resize(read_image_uint8(comp / "test_dataset" / "orig_1024" / f"{stem}.png"), side)
        g = _resize((gt * 255).round().astype(np.uint8), side).astype(np.float32) / 255
        for key, two in (("two_pass", True), ("one_pass_all_unknown", False)):
            alpha = predict_passes(model, img, infer_cfg=cfg, two_pass=two)["alpha"]
            sad[key].append(float(np.abs(alpha - g).sum()) / 1000)
        for c in (0.0, 0.5, 1.0):
            sad[f"constant_{c:g}"].append(float(np.abs(c - g).sum()) / 1000)
    return {"checkpoint": str(checkpoint), "images": len(truth), "side": side,
            "use_trimap": bool(cfg.model.use_trimap),
            "mean_sad": {k: round(float(np.mean(v)), 2) for k, v in sad.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--demo", type=Path, required=True, help="the demo data root (holds competition/)")
    ap.add_argument("--side", type=int, default=256, help="predict and score at this side (smoke runs: 256)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = run(args.checkpoint, args.demo, args.side)
    print(json.dumps(out, indent=1))
    res = REPO / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "trimapless.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Training's validation and notebook 04 measure the same thing (issue 24, item 3).

docs/training.md says validation uses "the protocol of notebook 04"; on the demo they reported SAD 5.320 and
5.422 for the same best.pt and the same 6 images, because validation capped every image at
``data.val_max_side`` (256 px; the demo photos are up to 306 px) and upsampled its prediction, while notebook 04
predicts at full resolution. Same checkpoint, same images: the same numbers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mattingkit import checkpoint, pipeline, run
from mattingkit.data.datasets import build_datasets
from mattingkit.models import build_model
from mattingkit.train.validation import validate_model


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    tmp = tmp_path_factory.mktemp("protocol")
    synthetic.make_demo_data(tmp / "data" / "demo", seed=0)
    ctx = run.prepare_run("demo", [f"run.data_root={tmp / 'data'}", "run.device=cpu"], "proto", tmp / "runs")
    run.build_run_manifest(ctx.cfg, ctx.run_dir)
    torch.manual_seed(0)
    model = build_model(ctx.cfg.model).eval()
    state = {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "step": 1,
             "generator": model.state_dict(), "config": ctx.cfg.to_dict()}
    checkpoint.save_checkpoint(state, ctx.path("checkpoints", "best.pt"))
    return ctx, model


def test_validation_and_notebook_04_give_the_same_sad_on_the_same_checkpoint_and_images(demo_run):
    ctx, model = demo_run
    _, val_ds = build_datasets(ctx.cfg, run.manifest_path(ctx.cfg, ctx.run_dir), compact=False)
    n = len(val_ds)
    sums, _ = validate_model(model, val_ds, ctx.cfg, torch.device("cpu"), limit=n)
    val = {name: float(sums[i] / sums[0]) for i, name in enumerate(("sad", "mse", "grad", "conn"), start=1)}
    nb04 = pipeline.run_inference(ctx, limit=n, n_preview=0)
    assert nb04["images"] == n == int(sums[0]) == 6 and nb04["with_trimap"]
    heights = [int(item["orig_size"][0]) for item in (val_ds[i] for i in range(n))]
    assert max(heights) > 256                      # images the old 256 px cap reached
    for name in ("sad", "mse", "grad", "conn"):
        assert nb04[name] == pytest.approx(val[name], rel=1e-6, abs=1e-9), (name, nb04[name], val[name])
    assert np.isfinite(val["sad"]) and val["sad"] > 0

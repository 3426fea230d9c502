"""The trainer's mechanics on a tiny real model and dataset (fast), and the CPU demo recipe (slow).

The tiny dataset draws every sample from (seed, epoch, index) like the real TrainDataset; its
trimaps are all-unknown, so per-batch loss means are plain pixel means and gradient accumulation /
batch splitting are exactly comparable.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import TinyD, TinyG
from torch import nn

from mattingkit import checkpoint as ckpt
from mattingkit.config import load_config
from mattingkit.run import read_history
from mattingkit.train import BatchStream, LRSchedule, NonFiniteLossError, Trainer, epoch_permutation


# --------------------------------------------------------------------------------------------
# tiny real model + data
# --------------------------------------------------------------------------------------------
class TinySet(torch.utils.data.Dataset):
    def __init__(self, n=12, size=(32, 32), seed=0, nan_items=(), all_nan=False, crash_at_call=None,
                 fixed_epoch=None, known_border=False):
        self.n, self.size, self.seed = n, size, seed
        self.nan_items, self.all_nan = set(nan_items), all_nan
        self.crash_at_call, self.calls = crash_at_call, 0
        self.epoch = 0 if fixed_epoch is None else fixed_epoch
        self.fixed = fixed_epoch is not None
        self.known_border = known_border

    def set_epoch(self, epoch):
        if not self.fixed:
            self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        if self.crash_at_call is not None and self.calls >= self.crash_at_call:
            raise RuntimeError("simulated crash")
        rng = np.random.default_rng([self.seed, self.epoch, i])
        h, w = self.size if not callable(self.size) else self.size(i)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.35) * min(h, w)
        alpha = np.clip((r - np.hypot(yy - cy, xx - cx)) / 3.0 + 0.5, 0, 1).astype(np.float32)
        fg = (rng.uniform(0, 1, (3, 1, 1)) + 0.1 * rng.standard_normal((3, h, w))).clip(0, 1).astype(np.float32)
        bg = (rng.uniform(0, 1, (3, 1, 1)) + 0.1 * rng.standard_normal((3, h, w))).clip(0, 1).astype(np.float32)
        image = alpha * fg + (1 - alpha) * bg
        image[0] = alpha  # the red channel carries the answer (oracle tests; learnable quickly)
        trimap = np.full((1, h, w), 0.5, np.float32)
        if self.known_border:
            trimap[:, :, :3] = alpha[None, :, :3].round()
        if self.all_nan or (self.epoch, i) in self.nan_items:
            image = image * np.nan
        t = torch.from_numpy
        return {"image": t(np.ascontiguousarray(image)), "alpha": t(alpha[None]), "trimap": t(trimap),
                "fg": t(fg), "bg": t(bg), "unknown": t((trimap == 0.5).astype(np.float32)), "id": f"{i:04d}"}


class Oracle(nn.Module):
    """alpha = red channel x s (s = 1: perfect on TinySet)."""

    def __init__(self, s=1.0):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))

    def forward(self, image, trimap):
        return {"alpha": (image[:, :1] * self.s).clamp(0, 1)}


def tiny_cfg(**over):
    base = {
        "run.device": "cpu", "run.seed": 0, "run.deterministic": True, "run.name": "tiny",
        "data.batch_size": 4, "data.num_workers": 0,
        "train.steps": 12, "train.lr_g": 1e-2, "train.lr_d": 1e-2, "train.warmup_steps": 3,
        "train.g_warmup_steps": 4, "train.d_every": 2, "train.log_every": 1, "train.image_every": 1000,
        "train.val_every": 6, "train.ckpt_every": 4, "train.tensorboard": False, "train.amp": "off",
        "loss.gan": 0.1,
    }
    base.update(over)
    return load_config("default", base)


def tiny_trainer(tmp_path, name="run", cfg=None, train_ds=None, val_ds=None, model=None, **kw):
    cfg = cfg or tiny_cfg()
    torch.manual_seed(cfg.run.seed)  # TinyG's init is seeded too (the Trainer seeds before building its own)
    model = model or TinyG()
    disc = TinyD() if cfg.train.use_gan else None
    return Trainer(cfg, run_dir=tmp_path / name, model=model, discriminator=disc,
                   train_dataset=train_ds or TinySet(), val_dataset=val_ds or TinySet(n=3, fixed_epoch=0),
                   headless=True, **kw)


def train_records(run_dir):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_history(Path(run_dir) / "metrics.jsonl")
            if r["phase"] == "train"]


# --------------------------------------------------------------------------------------------
# pure pieces
# --------------------------------------------------------------------------------------------
def test_lr_schedules():
    def mk(kind, **kw):
        return LRSchedule(None, 1.0, total_steps=110, schedule=kind, warmup_steps=10, min_lr_ratio=0.1,
                          cycle_steps=40, **kw)

    s = mk("cosine")
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(4) == pytest.approx(0.5)  # linear warm-up
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5)          # half way: mean of max and floor
    assert s.lr_at(110) == pytest.approx(0.1) and s.lr_at(500) == pytest.approx(0.1)
    c = mk("cyclic")
    assert c.lr_at(40) == pytest.approx(0.1) and c.lr_at(60) == pytest.approx(1.0)  # base -> peak
    assert c.lr_at(50) == pytest.approx(0.55) and c.lr_at(80) == pytest.approx(0.1)
    assert mk("constant").lr_at(200) == 1.0
    p = mk("plateau", plateau_patience=2, plateau_factor=0.5)
    assert [p.observe(v) for v in (5.0, 4.0, 4.5, 4.2, 3.0, 3.5, 3.5)] == [False, False, False, True, False,
                                                                          False, True]
    assert p.lr_at(50) == pytest.approx(0.25)
    q = mk("plateau", mode="max", plateau_patience=1)
    q.load_state_dict(p.state_dict())
    assert q.lr_at(50) == pytest.approx(0.25)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=5.0)
    LRSchedule(opt, 2.0, 100, "constant", warmup_steps=4).step(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)


def test_batch_stream_epochs_shards_and_resume():
    n, b = 10, 3
    it = iter(BatchStream(n, b, seed=5))
    flat = [x for _ in range(10) for x in next(it)]  # 30 items = 3 epochs
    for e in range(3):
        part = flat[e * n:(e + 1) * n]
        assert {x[0] for x in part} == {e}
        assert sorted(x[1] for x in part) == list(range(n))  # every sample once per epoch
        assert [x[1] for x in part] == epoch_permutation(n, 5, e).tolist()
    assert flat[:10] != flat[10:20]
    # two ranks with batch 3 see exactly the global batches of one process with batch 6
    single = iter(BatchStream(n, 2 * b, seed=5))
    r0, r1 = iter(BatchStream(n, b, 5, world_size=2, rank=0)), iter(BatchStream(n, b, 5, world_size=2, rank=1))
    for _ in range(7):
        assert next(single) == next(r0) + next(r1)
    # resuming at batch k continues the same stream
    again = iter(BatchStream(n, b, seed=5, start=4))
    assert [x for _ in range(6) for x in next(again)] == flat[12:30]


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def test_run_folder_contents_and_learning(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 20, "train.val_every": 10, "train.ckpt_every": 10, "train.tensorboard": True,
                      "train.image_every": 10, "train.val_at_start": True})
    tr = tiny_trainer(tmp_path, cfg=cfg)
    summary = tr.fit()
    run = tmp_path / "run"
    assert summary["step"] == 20 and summary["stopped"] == "done"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "best.pt.json", "last.pt",
                                                                      "last.pt.json"]
    last = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 20 and last["config"]["train"]["steps"] == 20
    for key in ("generator", "discriminator", "opt_g", "opt_d", "sched_g", "scaler_g", "rng", "best"):
        assert last[key] is not None
    assert load_config(run / "config.yaml").train.steps == 20
    recs = read_history(run / "metrics.jsonl")
    vals = [r for r in recs if r["phase"] == "val"]
    assert [r["step"] for r in vals] == [0, 10, 20]
    trains = [r for r in recs if r["phase"] == "train"]
    assert [r["step"] for r in trains] == list(range(1, 21))
    assert {"total", "alpha", "comp", "lr_g", "lr_d"} <= set(trains[0])
    assert "gan" not in trains[3] and {"gan", "d_total", "d_real_mean", "d_fake_mean"} <= set(trains[4])
    assert vals[-1]["sad"] < 0.7 * vals[0]["sad"]  # it learns
    metrics = json.loads((run / "train_summary.json").read_text())
    best = min(vals, key=lambda r: r["sad"])
    assert metrics["best"]["value"] == pytest.approx(best["sad"]) and metrics["best"]["step"] == best["step"]
    assert ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    assert metrics["final"]["sad"] == pytest.approx(vals[-1]["sad"])
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    assert {"train/total", "train/alpha", "lr/g", "lr/d", "train_d/real_mean", "val/sad"} <= set(tags["scalars"])
    assert {"train/image_trimap_gt_pred_error", "val/image_trimap_gt_pred_error"} <= set(tags["images"])
    from mattingkit.viz import plot_history

    fig = plot_history(run / "metrics.jsonl", tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]  # losses, lr, (discriminator), one panel per val metric
    assert titles[:2] == ["training losses", "learning rate"] and "validation SAD" in titles
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_deterministic_history(tmp_path):
    a = tiny_trainer(tmp_path, "a")
    a.fit()
    b = tiny_trainer(tmp_path, "b")
    b.fit()
    ra, rb = train_records(tmp_path / "a"), train_records(tmp_path / "b")
    assert len(ra) == 12 and ra == rb
    c = tiny_trainer(tmp_path, "c", cfg=tiny_cfg(**{"run.seed": 1}), train_ds=TinySet(seed=1))
    c.fit()
    assert train_records(tmp_path / "c") != ra


def _weights(run_dir):
    return ckpt.load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_equals_uninterrupted(tmp_path, accum):
    cfg = tiny_cfg(**{"train.steps": 12, "train.accum_steps": accum, "train.ckpt_every": 5,
                      "train.schedule": "cosine", "train.val_every": 5})
    tiny_trainer(tmp_path, "full", cfg=cfg).fit()
    # session 1 stops after step 7 (a time budget), session 2 resumes from last.pt
    s1 = tiny_trainer(tmp_path, "split", cfg=cfg).fit(until=7)
    assert s1["stopped"] == "until" and s1["step"] == 7
    s2 = tiny_trainer(tmp_path, "split", cfg=cfg)
    assert s2.step == 7 and s2.resumed_from.endswith("last.pt")
    summary = s2.fit()
    assert summary["step"] == 12
    full, split = train_records(tmp_path / "full"), train_records(tmp_path / "split")
    assert [r["step"] for r in split] == list(range(1, 13))
    assert split == full  # every loss term and lr, exactly
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    for part in ("generator", "discriminator"):
        for k in wa[part]:
            assert torch.equal(wa[part][k], wb[part][k]), (part, k)


@pytest.mark.parametrize("written_fused, resumed_fused", [(False, True), (True, False)])
def test_resume_across_fused_and_plain_adam(tmp_path, monkeypatch, written_fused, resumed_fused):
    """A checkpoint records whether its Adam was fused (a CPU runtime or an older torch: not); the resuming
    process keeps its own kernel choice (a plain state resumed into a fused Adam used to fail at its first
    step: "Expected grad_scale and found_inf to be None"), and continues the run as if uninterrupted."""
    import mattingkit.train.setup as setup

    cfg = tiny_cfg(**{"train.steps": 8, "train.ckpt_every": 4, "train.val_every": 100, "train.g_warmup_steps": 0,
                      "train.d_every": 1})
    tiny_trainer(tmp_path, "full", cfg=cfg).fit()
    monkeypatch.setattr(setup, "fused_supported", lambda params: written_fused)
    tiny_trainer(tmp_path, cfg=cfg).fit(until=4)
    written = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["opt_g"]["param_groups"][0]
    assert bool(written["fused"]) == written_fused
    monkeypatch.setattr(setup, "fused_supported", lambda params: resumed_fused)
    tr = tiny_trainer(tmp_path, cfg=cfg)
    assert tr.step == 4
    assert [bool(g["fused"]) for g in tr.opt_g.param_groups + tr.opt_d.param_groups] == [resumed_fused] * 2
    tr.fit()
    full, resumed = train_records(tmp_path / "full"), train_records(tmp_path / "run")
    assert [r["step"] for r in resumed] == list(range(1, 9)) and resumed[:4] == full[:4]
    for a, b in zip(full[4:], resumed[4:]):  # fused and plain kernels round differently, nothing more
        assert b["total"] == pytest.approx(a["total"], rel=1e-4) and b["d_total"] == pytest.approx(a["d_total"], rel=1e-4)


def test_resume_after_crash_truncates_history(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 12, "train.ckpt_every": 4, "train.val_every": 100})
    tiny_trainer(tmp_path, "full", cfg=cfg).fit()
    # the data loader dies during step 7 (4 items per step): last.pt is from step 4, history has 1..6
    crashing = TinySet(crash_at_call=6 * 4 + 1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_trainer(tmp_path, "crash", cfg=cfg, train_ds=crashing).fit()
    assert max(r["step"] for r in train_records(tmp_path / "crash")) == 6
    t2 = tiny_trainer(tmp_path, "crash", cfg=cfg)
    assert t2.step == 4
    t2.fit()
    assert train_records(tmp_path / "crash") == train_records(tmp_path / "full")


def test_corrupt_last_falls_back_to_best_and_fresh_starts_over(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 12, "train.val_every": 6, "train.ckpt_every": 12})
    tiny_trainer(tmp_path, cfg=cfg).fit()
    run = tmp_path / "run"
    best_step = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["step"]
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="falling back"):
        t = tiny_trainer(tmp_path, cfg=cfg)
    assert t.step == best_step
    fresh = tiny_trainer(tmp_path, cfg=cfg, fresh=True)
    assert fresh.step == 0 and not last.exists() and not (run / "metrics.jsonl").exists()


def test_nonfinite_steps_are_skipped_then_stop(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 9, "train.max_nonfinite": 3, "train.use_gan": False})
    # epoch 0 is 3 batches of 4: poison one sample of the second batch
    second = epoch_permutation(12, 0, 0)[4:8]
    tr = tiny_trainer(tmp_path, "skip", cfg=cfg, train_ds=TinySet(nan_items={(0, int(second[1]))}))
    summary = tr.fit()
    recs = train_records(tmp_path / "skip")
    assert summary["nonfinite_total"] == 1
    assert "total" not in recs[1] and recs[1]["nonfinite_total"] == 1  # step 2 skipped
    assert all(math.isfinite(r["total"]) for r in recs if "total" in r)
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())
    model = TinyG()
    bad = tiny_trainer(tmp_path, "stop", cfg=cfg, train_ds=TinySet(all_nan=True), model=model)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        bad.fit()
    assert bad.step == 3 and bad.G is None  # (a failed fit frees the trainer)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no update happened


def test_nonfinite_run_ended_before_a_checkpoint_still_stops_at_the_log_step(tmp_path):
    """Steps 1-2 non-finite, step 3 fine, a checkpoint at step 3 reads the counters: the log step (4) still
    sees the 2 in a row."""
    cfg = tiny_cfg(**{"train.steps": 8, "train.max_nonfinite": 2, "train.use_gan": False, "train.log_every": 4,
                      "train.ckpt_every": 3, "train.val_every": 100})
    order = epoch_permutation(12, 0, 0)
    nan = {(0, int(order[0])), (0, int(order[4]))}  # a sample of the first and of the second batch
    tr = tiny_trainer(tmp_path, cfg=cfg, train_ds=TinySet(nan_items=nan))
    with pytest.raises(NonFiniteLossError, match="2 non-finite losses in a row \\(step 4, 2 in total\\)"):
        tr.fit()


class InfGrad(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (an overflow in a backward pass, the loss finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("inf"))


class InfGradAt(TinyG):
    """TinyG whose ``at``-th training forward gets an infinite gradient."""

    def __init__(self, at):
        super().__init__()
        self.calls, self.at = 0, at

    def forward(self, image, trimap):
        out = super().forward(image, trimap)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = {"alpha": InfGrad.apply(out["alpha"])}
        return out


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_nonfinite_gradient_with_a_finite_loss_is_skipped(tmp_path, amp):
    """The fused (float32 / bf16) path checks the gradients as well as the loss: an infinite gradient skips
    the step (counted), the weights stay finite."""
    cfg = tiny_cfg(**{"train.steps": 4, "train.use_gan": False, "train.val_every": 100, "train.amp": amp,
                      "run.deterministic": False})
    tr = tiny_trainer(tmp_path, cfg=cfg, model=InfGradAt(2))
    summary = tr.fit()
    recs = train_records(tmp_path / "run")
    assert math.isfinite(recs[0]["total"]) and "total" not in recs[1] and recs[1]["nonfinite_total"] == 1
    assert summary["nonfinite_total"] == 1 and summary["step"] == 4
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())


def test_gradient_accumulation_matches_bigger_batch(tmp_path):
    over = {"train.steps": 5, "train.use_gan": False, "train.val_every": 100, "run.deterministic": False}
    big = tiny_trainer(tmp_path, "big", cfg=tiny_cfg(**over, **{"data.batch_size": 4}))
    big.fit()
    acc = tiny_trainer(tmp_path, "acc", cfg=tiny_cfg(**over, **{"data.batch_size": 2, "train.accum_steps": 2}))
    acc.fit()
    for a, b in zip(big.G.parameters(), acc.G.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ra, rb = train_records(tmp_path / "big"), train_records(tmp_path / "acc")
    assert [r["total"] for r in ra] == pytest.approx([r["total"] for r in rb], rel=1e-5)


def test_validation_full_resolution_with_padding(tmp_path):
    def sizes(i):
        return [(37, 53), (64, 40), (45, 45)][i]

    val = TinySet(n=3, size=sizes, fixed_epoch=0, known_border=True)
    perfect = tiny_trainer(tmp_path, "oracle", model=Oracle(1.0), val_ds=val,
                           cfg=tiny_cfg(**{"train.use_gan": False}))
    res = perfect.validate()
    assert res["n"] == 3
    assert res["sad"] == 0 and res["mse"] == 0 and res["grad"] == 0 and res["conn"] == 0
    assert res["competition_mse"] == 0
    zero = tiny_trainer(tmp_path, "zero", model=Oracle(0.0), val_ds=val, cfg=tiny_cfg(**{"train.use_gan": False}))
    res0 = zero.validate()
    sads, cmses = [], []
    for i in range(3):
        item = val[i]
        g8 = np.rint(item["alpha"][0].numpy() * 255) / 255
        unknown = item["trimap"][0].numpy() == 0.5
        sads.append(g8[unknown].sum() / 1000)
        cmses.append((g8 ** 2).mean())
    assert res0["sad"] == pytest.approx(np.mean(sads), rel=1e-5)
    assert res0["competition_mse"] == pytest.approx(np.mean(cmses), rel=1e-5)
    assert zero.validate(max_images=1)["n"] == 1


def test_validation_predicts_like_notebook_04(tmp_path):
    """Validation goes through infer.predict with the run's infer settings (reflect padding on every
    side, known-region clamp): its metrics are those of the predictions notebook 04 would write."""
    from mattingkit.infer import predict
    from mattingkit.metrics import competition_mse, compute_metrics

    val = TinySet(n=2, size=lambda i: [(37, 53), (45, 45)][i], fixed_epoch=0, known_border=True)
    cfg = tiny_cfg(**{"train.use_gan": False, "infer.pad_margin": 16})
    tr = tiny_trainer(tmp_path, cfg=cfg, val_ds=val)
    res = tr.validate()
    sads, cmses = [], []
    for i in range(2):
        item = val[i]
        image, tri, gt = item["image"].permute(1, 2, 0).numpy(), item["trimap"][0].numpy(), item["alpha"][0].numpy()
        pred = predict(tr.G, image, tri, infer_cfg=cfg.infer)
        sads.append(compute_metrics(pred, gt, tri)["sad"])
        cmses.append(competition_mse(pred, gt))
    assert res["sad"] == pytest.approx(np.mean(sads), rel=1e-6)
    assert res["competition_mse"] == pytest.approx(np.mean(cmses), rel=1e-6)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu(tmp_path, amp):
    cfg = tiny_cfg(**{"train.steps": 3, "train.amp": amp, "train.g_warmup_steps": 1, "train.d_every": 1,
                      "run.deterministic": False, "train.channels_last": True})
    tr = tiny_trainer(tmp_path, amp, cfg=cfg)
    tr.fit()
    recs = train_records(tmp_path / amp)
    assert len(recs) == 3 and all(math.isfinite(r["total"]) for r in recs)
    state = ckpt.load_checkpoint(tmp_path / amp / "checkpoints" / "last.pt")
    assert bool(state["scaler_g"]) == (amp == "fp16")  # a GradScaler only for fp16


def test_time_limit_stops_and_saves(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 100000, "train.time_limit_min": 0.02, "train.ckpt_every": 100000,
                      "train.val_every": 100000, "train.log_every": 100000})
    t0 = time.monotonic()
    summary = tiny_trainer(tmp_path, cfg=cfg).fit()
    assert summary["stopped"] == "time_limit" and time.monotonic() - t0 < 30
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == summary["step"] > 0


def test_init_from_loads_generator_weights(tmp_path):
    src = tiny_trainer(tmp_path, "src", cfg=tiny_cfg(**{"train.steps": 3}))
    src.fit()
    cfg = tiny_cfg(**{"train.init_from": str(tmp_path / "src" / "checkpoints" / "last.pt"), "run.seed": 7})
    dst = tiny_trainer(tmp_path, "dst", cfg=cfg)
    for a, b in zip(src.G.parameters(), dst.G.parameters()):
        assert torch.equal(a, b)
    assert dst.step == 0


def test_bad_config_is_refused(tmp_path):
    from mattingkit.config import ConfigError

    with pytest.raises(ConfigError, match="best_metric"):
        tiny_trainer(tmp_path, cfg=tiny_cfg(**{"train.best_metric": "iou"}))
    with pytest.raises(ConfigError, match="run.name"):
        Trainer(tiny_cfg(**{"run.name": "a:b"}), model=TinyG(), train_dataset=TinySet(), headless=True)


# --------------------------------------------------------------------------------------------
# the CPU demo recipe, end to end through the command-line entry point (real models and data)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_recipe_learns(tmp_path, monkeypatch):
    from mattingkit.cli import main

    monkeypatch.setenv("MATTINGKIT_DATA_ROOT", str(tmp_path / "data"))  # demo data made on first use
    run = tmp_path / "demo"
    steps = 100  # half the recipe's budget (the full one: see the report / benchmarks)
    rc = main(["train", "--config", "demo", "--run-dir", str(run), "--set", f"train.steps={steps}",
               "--set", f"train.val_every={steps}", "--set", "train.tensorboard=false"])
    assert rc == 0
    assert (tmp_path / "data" / "demo" / "demo.json").exists() and (run / "manifest.csv").exists()
    vals = [r for r in read_history(run / "metrics.jsonl") if r["phase"] == "val"]
    assert [r["step"] for r in vals] == [0, steps] and vals[0]["n"] == 6
    untrained, trained = vals[0]["sad"], vals[-1]["sad"]
    print(f"demo recipe at {steps} steps: val SAD {untrained:.3f} (untrained) -> {trained:.3f}")
    assert trained <= 0.7 * untrained, (untrained, trained)  # >= 30% better than the untrained model
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["best"]["step"] == steps and summary["final"]["sad"] == pytest.approx(trained)
    model, cfg = ckpt.load_generator(run / "checkpoints" / "best.pt")
    assert cfg.model.backbone == "resnet18" and not model.training


def test_killed_before_first_checkpoint_restarts_clean(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 6, "train.ckpt_every": 100, "train.val_every": 100})
    tiny_trainer(tmp_path, "full", cfg=cfg).fit()
    run = tmp_path / "run"
    crashing = TinySet(crash_at_call=3 * 4 + 1)  # dies in step 4, before any checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_trainer(tmp_path, cfg=cfg, train_ds=crashing).fit()
    hist = run / "metrics.jsonl"
    hist.write_bytes(hist.read_bytes() + b'{"step": 4, "phase": "tr')  # and the last append was torn
    again = tiny_trainer(tmp_path, cfg=cfg)
    assert again.step == 0
    again.fit()
    assert train_records(run) == train_records(tmp_path / "full")


def test_best_pt_without_last_pt_is_resumed(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 8, "train.ckpt_every": 100, "train.val_every": 4})
    tiny_trainer(tmp_path, "full", cfg=cfg).fit()
    crashing = TinySet(crash_at_call=6 * 4 + 1)  # dies in step 7: best.pt from step 4, no last.pt yet
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_trainer(tmp_path, cfg=cfg, train_ds=crashing).fit()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    again = tiny_trainer(tmp_path, cfg=cfg)
    assert again.step == 4 and again.resumed_from.endswith("best.pt")
    again.fit()
    assert train_records(tmp_path / "run") == train_records(tmp_path / "full")


def test_newer_best_pt_is_resumed(tmp_path):
    cfg = tiny_cfg(**{"train.steps": 12, "train.ckpt_every": 4, "train.val_every": 6})
    tiny_trainer(tmp_path, "full", cfg=cfg).fit()
    crashing = TinySet(crash_at_call=7 * 4 + 1)  # dies in step 8: last.pt from step 4, best.pt from step 6
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_trainer(tmp_path, cfg=cfg, train_ds=crashing).fit()
    again = tiny_trainer(tmp_path, cfg=cfg)
    assert again.step == 6 and again.resumed_from.endswith("best.pt")
    again.fit()
    assert train_records(tmp_path / "run") == train_records(tmp_path / "full")


def test_dim_three_stage_configs_chain_through_the_runs_root(tmp_path):
    """The shipped DIM stage configs on the real DIM model: stage 2 starts from stage 1's best.pt (found
    below the runs root) and trains only the refinement head; stage 3 starts from stage 2 and trains all."""
    over = {"run.device": "cpu", "run.seed": 0, "run.runs_root": str(tmp_path), "model.pretrained": False,
            "data.batch_size": 2, "data.num_workers": 0, "train.steps": 2, "train.val_every": 2,
            "train.ckpt_every": 2, "train.log_every": 1, "train.tensorboard": False, "train.amp": "off",
            "train.lr_g": 1e-3}

    def run(name):
        cfg = load_config(name, over)
        tr = Trainer(cfg, train_dataset=TinySet(n=4), val_dataset=TinySet(n=2, fixed_epoch=0), headless=True)
        start = {k: v.detach().clone() for k, v in tr.G.state_dict().items()}
        tr.fit()
        assert (tmp_path / name / "checkpoints" / "best.pt").exists()
        return cfg, start, {k: v.detach().clone() for k, v in tr.G.state_dict().items()}

    def changed(a, b, prefix):
        keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point() and "running" not in k]
        assert keys, prefix
        return {k for k in keys if not torch.equal(a[k], b[k])}

    cfg1, start1, end1 = run("dim_encoder_decoder")
    assert cfg1.model.dim_stage == "encoder_decoder" and not cfg1.train.use_gan
    assert changed(start1, end1, "encoder") and not changed(start1, end1, "refine")
    best1 = ckpt.load_checkpoint(tmp_path / "dim_encoder_decoder" / "checkpoints" / "best.pt")["generator"]

    cfg2, start2, end2 = run("dim_refinement")
    assert all(torch.equal(start2[k], best1[k].to(start2[k].dtype)) for k in best1)  # initialised from stage 1
    assert not changed(start2, end2, "encoder") and not changed(start2, end2, "decoder")
    assert changed(start2, end2, "refine")  # only the refinement head learns
    cfg3, start3, end3 = run("dim_joint")
    assert all(torch.equal(start3[k], end2[k]) for k in end2 if k.startswith("refine"))
    assert changed(start3, end3, "encoder") and changed(start3, end3, "refine")

    missing = load_config("dim_refinement", {**over, "run.runs_root": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="init_from"):
        Trainer(missing, train_dataset=TinySet(n=4), headless=True)


# --------------------------------------------------------------------------------------------
# the GPU habitat (issue 12) and one process per run folder (issue 16), simulated on CPU
# --------------------------------------------------------------------------------------------
def test_recipe_needing_a_gpu_stops_at_once_without_one(tmp_path, monkeypatch):
    from gpusim import simulate

    from mattingkit.errors import DeviceError

    simulate(monkeypatch, None)
    cfg = load_config("default", ["run.device=auto"])
    with pytest.raises(DeviceError, match="needs a GPU.*run.device=cpu"):
        Trainer(cfg, run_dir=tmp_path / "r", model=TinyG(), train_dataset=TinySet(), val_dataset=None)
    assert not (tmp_path / "r").exists()  # stopped before anything was written
    # run.device=cpu chosen deliberately: allowed (the plan says cpu, AMP off, no channels_last)
    tr = tiny_trainer(tmp_path, cfg=tiny_cfg(**{"data.num_workers": "auto", "train.channels_last": "auto",
                                                "train.amp": "auto"}))
    assert tr.device.type == "cpu" and tr.amp_dtype is None and not tr.channels_last
    assert tr.num_workers >= 0 and not tr.plan.grad_scaler
    tr.close()


def test_cudnn_benchmark_only_in_training_steps_and_restored(tmp_path, monkeypatch):
    import mattingkit.train.validation as validation_mod

    seen = {"train": set(), "val": set()}

    class Probe(TinyG):
        def forward(self, image, trimap):
            seen["train" if self.training else "val"].add(torch.backends.cudnn.benchmark)
            return super().forward(image, trimap)

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        tr = tiny_trainer(tmp_path, cfg=tiny_cfg(**{"train.steps": 6, "train.use_gan": False}), model=Probe())
        tr.train_benchmark = True  # what a CUDA device gets (this CPU run stands in for it)
        orig = validation_mod.validate_model
        monkeypatch.setattr(validation_mod, "validate_model", lambda m, *a, **k: (
            seen["val"].add(torch.backends.cudnn.benchmark), orig(m, *a, **k))[1])
        tr.fit()
        assert seen["train"] == {True} and seen["val"] == {False}
        assert torch.backends.cudnn.benchmark is False  # restored after the run
    finally:
        torch.backends.cudnn.benchmark = before


def test_no_host_sync_between_log_steps(tmp_path, monkeypatch):
    cfg = tiny_cfg(**{"train.steps": 8, "train.log_every": 4, "train.val_every": 100, "train.ckpt_every": 100,
                      "train.g_warmup_steps": 0, "train.d_every": 1})
    tr = tiny_trainer(tmp_path, cfg=cfg)
    calls = []
    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    for _ in range(3):  # steps 1..3: no record, no checkpoint
        terms = tr.train_step()
        calls.clear()  # (the data pipeline may look at numbers; the step's own work is below)
        tr.after_step(terms, cfg.train.steps)
        assert calls == [], calls
    calls.clear()
    terms = tr.train_step()
    tr.after_step(terms, cfg.train.steps)  # step 4: the record reads the window (a few syncs)
    assert calls
    monkeypatch.undo()
    rec = train_records(tmp_path / "run")[-1]
    assert rec["step"] == 4 and math.isfinite(rec["total"]) and 0.0 <= rec["d_accuracy"] <= 1.0
    tr.close()


class OOMAt(TinyG):
    """TinyG that runs out of device memory: at its ``at``-th training forward, or on any input larger than
    ``max_pixels`` (validation's full-resolution images), with ``error``'s kind of exception."""

    def __init__(self, at=None, max_pixels=None, error=torch.cuda.OutOfMemoryError):
        super().__init__()
        self.calls, self.at, self.max_pixels, self.error = 0, at, max_pixels, error

    def forward(self, image, trimap):
        self.calls += self.training
        if (self.training and self.calls == self.at) or (self.max_pixels and image[0, 0].numel() > self.max_pixels):
            if self.error is torch.cuda.OutOfMemoryError:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
        return super().forward(image, trimap)


def test_training_oom_gives_a_clear_message_keeps_the_checkpoint_and_frees_the_trainer(tmp_path):
    import gc
    import weakref

    from mattingkit.device import OutOfMemory

    cfg = tiny_cfg(**{"train.steps": 8, "train.ckpt_every": 2, "train.val_every": 100})
    model = OOMAt(at=4)
    alive = weakref.ref(model)
    tr = tiny_trainer(tmp_path, cfg=cfg, model=model)
    del model
    with pytest.raises(OutOfMemory) as err:
        tr.fit()
    msg = str(err.value)
    assert "data.batch_size=4" in msg and "train.amp=off" in msg and "crop" in msg and "halve the batch" in msg
    ck = tmp_path / "run" / "checkpoints"
    assert ckpt.load_checkpoint(ck / "last.pt")["step"] == 2  # the last good one, nothing half-written
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt", "last.pt.json"]
    assert not (tmp_path / "run" / "run.lock").exists()  # released
    gc.collect()
    assert alive() is None  # the model (and what its step held) is gone, though the notebook keeps `tr` and `err`
    from mattingkit.errors import RunStateError

    with pytest.raises(RunStateError, match="freed after an error"):
        tr.fit()
    retry = tiny_trainer(tmp_path, cfg=tiny_cfg(**{"train.steps": 8, "train.ckpt_every": 2, "train.val_every": 100,
                                                    "data.batch_size": 2, "train.accum_steps": 2}))
    assert retry.step == 2 and retry.fit()["step"] == 8   # the retry the message advises: half the batch, x2 accum


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_validation_oom_gives_a_clear_message(tmp_path, error):
    """Validation predicts full-resolution images: running out of memory there (CUDA's error, or cuDNN's
    failed workspace allocation) is the kit's OutOfMemory naming validation's settings."""
    from mattingkit.device import OutOfMemory

    cfg = tiny_cfg(**{"train.steps": 4, "train.ckpt_every": 2, "train.val_every": 4, "train.use_gan": False})
    val = TinySet(n=2, size=(64, 64), fixed_epoch=0)
    tr = tiny_trainer(tmp_path, cfg=cfg, model=OOMAt(max_pixels=48 * 48, error=error), val_ds=val)
    with pytest.raises(OutOfMemory) as err:
        tr.fit()
    msg = str(err.value)
    assert "validating" in msg and "data.val_max_side=" in msg and "infer.tile_size=" in msg
    assert ("CUDNN_STATUS_ALLOC_FAILED" in msg) == (error is RuntimeError)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert not (tmp_path / "run" / "run.lock").exists() and tr.G is None


def test_checkpoints_written_locally_and_mirrored_to_drive(tmp_path, monkeypatch):
    import mattingkit.env as env
    from mattingkit.checkpoint import checkpoint_dirs

    drive = tmp_path / "drive"
    monkeypatch.setattr(env, "COLAB_DRIVE", drive)
    drive.mkdir()
    run = drive / "mattingkit" / "runs" / "run"
    local, mirror = checkpoint_dirs(tiny_cfg(), run)  # auto: on Drive -> local disk + mirror
    assert mirror == run / "checkpoints" and not str(local).startswith(str(drive))
    cfg = tiny_cfg(**{"train.steps": 8, "train.val_every": 4, "run.checkpoint_local_dir": str(tmp_path / "local")})
    tr = Trainer(cfg, run_dir=run, model=TinyG(), discriminator=TinyD(), train_dataset=TinySet(),
                 val_dataset=TinySet(n=3, fixed_epoch=0), headless=True)
    summary = tr.fit(until=4)
    names = ["best.pt", "best.pt.json", "last.pt", "last.pt.json"]
    loc = tmp_path / "local" / "run"
    assert sorted(p.name for p in loc.iterdir()) == names + ["metrics.jsonl"]  # the history beside them ...
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names  # exactly best/last in both
    assert (run / "metrics.jsonl").read_bytes() == (loc / "metrics.jsonl").read_bytes()  # ... and mirrored
    assert summary["checkpoints"]["last.pt"] == str(run / "checkpoints" / "last.pt")
    # a fresh VM: the local disk is empty; resuming brings the Drive copies back (newest valid wins)
    for p in loc.iterdir():
        p.unlink()
    tr2 = Trainer(cfg, run_dir=run, model=TinyG(), discriminator=TinyD(), train_dataset=TinySet(),
                  val_dataset=TinySet(n=3, fixed_epoch=0), headless=True)
    assert tr2.step == 4 and (loc / "last.pt").exists()
    tr2.fit()
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8
    assert ckpt.load_checkpoint(loc / "last.pt")["step"] == 8


_HOLDER = """
import sys, torch
sys.path[:0] = [{tests!r}]
torch.set_num_threads(1)
from test_train import tiny_cfg, tiny_trainer
from pathlib import Path
tr = tiny_trainer(Path({root!r}), "run", cfg=tiny_cfg(**{{"train.steps": 2}}))
print("ready", flush=True)
sys.stdin.readline()
tr.fit()
"""


def test_second_trainer_on_one_run_folder_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    from mattingkit.errors import RunStateError

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _HOLDER.format(tests=tests, root=str(tmp_path))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(RunStateError, match=f"in use by host .* pid {child.pid}"):
            tiny_trainer(tmp_path, cfg=tiny_cfg(**{"train.steps": 2}))
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(120) == 0
    finally:
        if child.poll() is None:
            child.kill()
    recs = train_records(tmp_path / "run")
    assert [r["step"] for r in recs] == [1, 2]  # one writer
    tiny_trainer(tmp_path, cfg=tiny_cfg(**{"train.steps": 2}), force=True).close()  # the holder is gone


def _eval_files(tmp_path, n=2, hw=(96, 72)):
    from PIL import Image

    rows = []
    for i in range(n):
        h, w = hw
        yy, xx = np.mgrid[0:h, 0:w]
        alpha = np.clip((min(h, w) * 0.3 - np.hypot(yy - h / 2 - i, xx - w / 2)) / 4 + 0.5, 0, 1)
        a8 = np.rint(alpha * 255).astype(np.uint8)
        img = np.stack([a8, np.full_like(a8, 90), np.full_like(a8, 30 + 50 * i)], -1)
        tri = np.where(alpha >= 1, 255, np.where(alpha <= 0, 0, 128)).astype(np.uint8)
        tri[abs(np.hypot(yy - h / 2 - i, xx - w / 2) - min(h, w) * 0.3) < 6] = 128
        paths = {k: tmp_path / f"{k}_{i}.png" for k in ("image", "alpha", "trimap")}
        Image.fromarray(img).save(paths["image"])
        Image.fromarray(a8).save(paths["alpha"])
        Image.fromarray(tri).save(paths["trimap"])
        rows.append({"id": f"{i:04d}", **{k: str(v) for k, v in paths.items()}})
    return rows


def test_val_sad_agrees_with_full_resolution_evaluation(tmp_path):
    """Issue 16: training's "val sad" and notebook 04's number on the same images agree; with
    data.val_max_side capping an image, validation still measures at full resolution."""
    import pandas as pd

    from mattingkit.data.datasets import EvalDataset
    from mattingkit.infer import predict
    from mattingkit.io import read_alpha, read_image, read_trimap
    from mattingkit.metrics import compute_metrics

    rows = _eval_files(tmp_path)
    df = pd.DataFrame(rows)
    cfg = tiny_cfg(**{"train.use_gan": False})
    results = {}
    for cap in (None, 48):
        tr = tiny_trainer(tmp_path, f"cap{cap}", cfg=cfg, model=Oracle(0.5), val_ds=EvalDataset(df, max_side=cap))
        results[cap] = tr.validate()
        tr.close()
    # notebook 04's definition: predict the full-resolution image, metrics against the files
    sads = []
    for r in rows:
        image, gt, tri = read_image(r["image"]), read_alpha(r["alpha"]), read_trimap(r["trimap"])
        pred = predict(Oracle(0.5), image, tri, infer_cfg=cfg.infer)
        sads.append(compute_metrics(pred, gt, tri)["sad"])
    assert results[None]["sad"] == pytest.approx(np.mean(sads), rel=1e-6)
    # capped (96 -> 48: a quarter of the pixels): the same definition, so the same magnitude, not ~1/4
    assert results[48]["sad"] == pytest.approx(results[None]["sad"], rel=0.15)


# --------------------------------------------------------------------------------------------
# Host syncs inside a training step (issue 21): counted at the dispatcher, on the real demo recipe
# --------------------------------------------------------------------------------------------
class HostSyncs(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every op that makes the host wait for the device: a scalar read (``.item()``, ``bool()``,
    ``int()``, ``float()``, ``.tolist()``), an op whose output size depends on the data (``nonzero``, boolean
    indexing, ``masked_select``, ``unique``), and a copy from a device to the CPU."""

    DATA_DEPENDENT = ("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim",
                      "unique_consecutive", "repeat_interleave")

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in self.DATA_DEPENDENT:
            self.ops.append(name)
        elif name in ("_to_copy", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            dst = kwargs.get("device", args[0].device if name == "copy_" else src.device)
            if isinstance(src, torch.Tensor) and src.device.type != "cpu" and torch.device(dst).type == "cpu":
                self.ops.append(f"{name} to cpu")
        return func(*args, **kwargs)


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_training_steps_make_no_host_sync(tmp_path, augment_on, demo_data_root):
    """The demo recipe's real model, losses, GAN and data (workers decode; ``augment_on`` decides where the
    float augmentation runs): steps that neither log, validate nor checkpoint never wait for the device."""
    cfg = load_config("demo", {
        "run.device": "cpu", "run.data_root": str(demo_data_root), "data.augment_on": augment_on,
        "data.batch_size": 2, "data.num_workers": 1, "train.amp": "off", "train.g_warmup_steps": 0,
        "train.d_every": 1, "train.val_at_start": False, "train.tensorboard": False, "train.log_every": 100,
        "train.image_every": 100, "train.val_every": 100, "train.ckpt_every": 100, "train.steps": 100})
    tr = Trainer(cfg, run_dir=tmp_path / "run", headless=True)
    try:
        tr.after_step(tr.train_step(), cfg.train.steps)  # step 1: the loader starts
        per_step = []
        for _ in range(3):
            with HostSyncs() as seen:
                tr.after_step(tr.train_step(), cfg.train.steps)
            per_step.append(seen.ops)
        assert per_step == [[], [], []]
        assert tr.opt_d is not None and tr.opt_g.defaults["fused"]  # the GAN step and the fused path ran
    finally:
        tr.close()

"""Trainer overhead: steps/s of ``mattingkit.train.Trainer`` vs a bare loop doing the same work.

Both sides run the same model, discriminator, losses, optimisers and data (the demo config by
default, D on from the first step): forward G, D on the fake, ``matting_loss`` with the GAN term,
backward, D step on ``cat(real, fake)``, grad clipping, optimiser steps. The bare loop has nothing
else; the trainer side runs the real ``Trainer.train_step`` + ``Trainer.after_step`` (the body of
``fit``): schedules, finiteness checks, loss bookkeeping, JSONL/TensorBoard logging, image grids,
validation and checkpoints at the configured intervals (TrainConfig defaults unless ``--set``).

Blocks of ``--block`` steps alternate bare / trainer (``--repeats`` pairs, after a warm-up), so
both sides see the same machine load; the per-step overhead is the median over pairs of
``trainer block time / bare block time``. During the blocks the periodic events are switched off;
each event (a log record, an image grid, a validation, a last.pt checkpoint) is timed separately
through the real methods and amortised at its default interval:

    overhead = median pair ratio - 1
               + (t_log/log_every + t_image/image_every + t_val/val_every + t_ckpt/ckpt_every) / bare step

Run:  .venv/bin/python benchmarks/train_step.py [--config demo] [--block 50] [--repeats 5]
Writes benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mattingkit import checkpoint as ckpt  # noqa: E402
from mattingkit.config import TrainConfig, load_config  # noqa: E402
from mattingkit.losses import discriminator_inputs, gan_loss_d, matting_loss  # noqa: E402
from mattingkit.train import Trainer, to_device  # noqa: E402


class BareLoop:
    """The same forward/backward/optimiser work with nothing around it."""

    def __init__(self, trainer: Trainer):
        cfg = trainer.cfg
        self.cfg = cfg
        self.G = copy.deepcopy(ckpt.unwrap(trainer.G))
        self.D = copy.deepcopy(ckpt.unwrap(trainer.D))
        t = cfg.train
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=tuple(t.betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=tuple(t.betas))
        loader = torch.utils.data.DataLoader(trainer.train_ds, batch_size=cfg.data.batch_size, shuffle=True,
                                             drop_last=True, num_workers=trainer.num_workers,
                                             generator=torch.Generator().manual_seed(0),
                                             persistent_workers=trainer.num_workers > 0)
        self.loader = loader
        self.it = iter(loader)
        self.device = trainer.device

    def batch(self):
        try:
            b = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            b = next(self.it)
        return to_device(b, self.device)

    def step(self):
        cfg = self.cfg
        b = self.batch()
        self.opt_g.zero_grad(set_to_none=True)
        guide = b.get("guide")   # a guided model's input (model.guide), solved in the data workers
        out = self.G(b["image"], b["trimap"]) if guide is None else self.G(b["image"], b["trimap"], guide=guide)
        real, fake = discriminator_inputs(b, out["alpha"])
        terms = matting_loss(out, b, cfg.loss, fake_logits=self.D(fake))
        terms["total"].backward()
        self.opt_d.zero_grad(set_to_none=True)  # drop D grads from the G pass
        n = real.shape[0]
        logits = self.D(torch.cat([real, fake.detach()]))
        gan_loss_d(logits[:n], logits[n:], cfg.loss.gan_type)["total"].backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.G.parameters(), cfg.train.grad_clip)
            torch.nn.utils.clip_grad_norm_(self.D.parameters(), cfg.train.grad_clip)
        self.opt_g.step()
        self.opt_d.step()


def _timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="demo")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--block", type=int, default=5, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--event-repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_step.json"))
    args = p.parse_args(argv)

    defaults = TrainConfig()
    over = {  # default intervals (the demo config shortens them for its 300-step run), D from step 0
        "train.log_every": defaults.log_every, "train.image_every": defaults.image_every,
        "train.val_every": defaults.val_every, "train.ckpt_every": defaults.ckpt_every,
        "train.g_warmup_steps": 0, "train.d_every": 1, "train.steps": 10 ** 9, "run.name": "bench-train-step",
    }
    cfg = load_config(args.config, over)
    if args.overrides:
        from mattingkit.config import apply_overrides

        cfg = apply_overrides(cfg, args.overrides)
    t = cfg.train
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, run_dir=Path(tmp) / "run", fresh=True, headless=True)
        bare = BareLoop(trainer)
        end = t.steps

        def trainer_step():
            trainer.after_step(trainer.train_step(), end)

        # warm-up (allocator, oneDNN primitives, data workers)
        _timed(bare.step, 3)
        _timed(trainer_step, 3)
        intervals = {k: getattr(t, k) for k in ("log_every", "image_every", "val_every", "ckpt_every")}
        for k in intervals:  # events off inside the blocks (timed and amortised below)
            setattr(t, k, 10 ** 9)
        bare_times, trainer_times = [], []
        for r in range(args.repeats):
            bare_times.append(_timed(bare.step, args.block))
            trainer_times.append(_timed(trainer_step, args.block))
            if (r + 1) % max(1, args.repeats // 8) == 0:
                print(f"pair {r + 1}/{args.repeats}: bare {1 / bare_times[-1]:.3f} steps/s, "
                      f"trainer {1 / trainer_times[-1]:.3f} steps/s", flush=True)
        for k, v in intervals.items():
            setattr(t, k, v)

        # rarer events, timed through the real methods
        def val_event():
            res = trainer.validate()
            if res is not None:
                trainer.after_validation(res)

        def image_event():
            trainer.log.train_images(trainer.step, trainer.last_batch, trainer.last_pred)

        def log_event():
            trainer.log.train_record(trainer.step, {"total": 1.0, "alpha": 0.5, "comp": 0.5, "lr_g": 1e-3}, 1, 0)

        log_s = statistics.median(_timed(log_event, 1) for _ in range(args.event_repeats))
        val_s = statistics.median(_timed(val_event, 1) for _ in range(args.event_repeats))
        ckpt_s = statistics.median(_timed(lambda: trainer.save((ckpt.LAST,)), 1) for _ in range(args.event_repeats))
        image_s = statistics.median(_timed(image_event, 1) for _ in range(args.event_repeats))
        ckpt_mb = (trainer.session.ckpt_dir / ckpt.LAST).stat().st_size / 2 ** 20
        n_val = trainer.last_val["n"] if trainer.last_val else 0
        trainer.close()

    bare_s, trainer_s = statistics.median(bare_times), statistics.median(trainer_times)
    pair_ratio = statistics.median(tr / b for tr, b in zip(trainer_times, bare_times))
    amortised = (log_s / t.log_every + image_s / t.image_every + val_s / t.val_every
                 + ckpt_s / t.ckpt_every)
    overhead = pair_ratio - 1 + amortised / bare_s
    result = {
        "benchmark": "train_step",
        "command": "python benchmarks/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": args.config,
        "model": f"{cfg.model.name}/{cfg.model.backbone}", "image_size": cfg.data.image_size,
        "batch_size": cfg.data.batch_size, "device": str(trainer.device),
        "block_steps": args.block, "repeats": args.repeats,
        "bare_steps_per_s": {"median": 1 / bare_s, "all": [1 / x for x in bare_times]},
        "trainer_steps_per_s": {"median": 1 / trainer_s, "all": [1 / x for x in trainer_times]},
        "median_pair_ratio_trainer_time_over_bare": pair_ratio,
        "ratio_of_medians_bare_over_trainer_speed": bare_s / trainer_s,
        "ratio_of_totals_bare_over_trainer_speed": sum(bare_times) / sum(trainer_times),
        "events_s": {"log_record": log_s, "validation": val_s, "validation_images": n_val, "checkpoint_last": ckpt_s,
                     "checkpoint_mb": round(ckpt_mb, 1), "image_grid": image_s},
        "intervals": {"log_every": t.log_every, "image_every": t.image_every, "val_every": t.val_every,
                      "ckpt_every": t.ckpt_every},
        "amortised_event_s_per_step": amortised,
        "overhead_fraction": overhead,
        "overhead_ok": overhead <= 0.10,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("bare_steps_per_s", "trainer_steps_per_s", "events_s",
                                             "overhead_fraction")}, indent=1))
    print(f"trainer/bare time ratio (median of pairs) {pair_ratio:.3f}; overhead at default intervals "
          f"{100 * overhead:.1f}% -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Multi-process training on CPU: 2 real gloo processes through the real Trainer (Accelerate + DDP).

After K steps the weights equal a single-process run with the same global batch (float tolerance),
both ranks hold identical weights, and only the main process wrote files.

This file is also the worker script: ``python -m torch.distributed.run --nproc_per_node 2
tests/test_ddp.py worker OUT RUN_DIR`` (and ``... notebook OUT RUN_DIR`` for the notebook launcher).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import TinyD, TinyG

REPO = Path(__file__).resolve().parents[1]
STEPS, PER_RANK_BATCH = 6, 2


# ---- tiny real model + data (all-unknown trimaps: per-rank loss means average to the global mean)
class TinySet(torch.utils.data.Dataset):
    def __init__(self, n=10, size=32, seed=0, fixed_epoch=None):
        self.n, self.size, self.seed = n, size, seed
        self.epoch, self.fixed = (fixed_epoch or 0), fixed_epoch is not None

    def set_epoch(self, epoch):
        if not self.fixed:
            self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        s = self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        r = rng.uniform(6, 11)
        alpha = np.clip((r - np.hypot(yy - rng.uniform(10, 22), xx - rng.uniform(10, 22))) / 3 + 0.5, 0, 1)
        fg = rng.uniform(0, 1, (3, s, s)).astype(np.float32)
        bg = rng.uniform(0, 1, (3, s, s)).astype(np.float32)
        image = (alpha * fg + (1 - alpha) * bg).astype(np.float32)
        tri = np.full((1, s, s), 0.5, np.float32)
        t = torch.from_numpy
        return {"image": t(image), "alpha": t(alpha[None].astype(np.float32)), "trimap": t(tri), "fg": t(fg),
                "bg": t(bg), "unknown": t(np.ones_like(tri)), "id": str(i)}


def make_cfg(batch_size: int, name: str = "ddp"):
    from mattingkit.config import load_config

    return load_config("default", {
        "run.device": "cpu", "run.seed": 0, "run.name": name, "data.batch_size": batch_size,
        "data.num_workers": 0, "train.steps": STEPS, "train.lr_g": 1e-2, "train.lr_d": 1e-2,
        "train.warmup_steps": 2, "train.g_warmup_steps": 2, "train.d_every": 1, "train.accum_steps": 2,
        "train.log_every": 2, "train.val_every": 3, "train.ckpt_every": 2, "train.image_every": 3,
        "train.tensorboard": True, "train.amp": "off", "loss.gan": 0.1, "train.dist_timeout_s": 1234,
        "train.time_limit_min": 600,  # never reached; asked at log steps only (an all-reduce the host waits for)
    })


def make_trainer_kwargs():
    torch.manual_seed(0)
    return dict(model=TinyG(), discriminator=TinyD(), train_dataset=TinySet(),
                val_dataset=TinySet(n=3, fixed_epoch=0), headless=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               MATTINGKIT_HEADLESS="1", CUDA_VISIBLE_DEVICES="")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _single(tmp_path: Path) -> dict:
    from mattingkit.train import Trainer

    tr = Trainer(make_cfg(2 * PER_RANK_BATCH, "single"), run_dir=tmp_path / "single", **make_trainer_kwargs())
    tr.fit()
    return {k: v.detach().clone() for k, v in tr.G.state_dict().items()}


def _check(tmp_path: Path, out: Path, run_dir: Path, single_g: dict) -> None:
    from mattingkit import checkpoint as ckpt
    from mattingkit.train import read_history

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert [r["timeout_s"] for r in reports] == [1234, 1234]  # train.dist_timeout_s given to the process group
    assert reports[1]["written"] == [] and len(reports[0]["written"]) >= 4  # only the main process wrote
    assert [r["time_limit_checks"] for r in reports] == [STEPS // 2] * 2  # at log steps 2, 4, 6 only
    g0, g1 = (torch.load(out / f"rank{r}_g.pt", weights_only=True) for r in (0, 1))
    last = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step"] == STEPS and last["world_size"] == 2
    for k, v in single_g.items():
        assert torch.equal(g0[k], g1[k]), k  # DDP keeps the replicas identical
        torch.testing.assert_close(last["generator"][k], v, rtol=1e-4, atol=1e-5)  # = single process
    # one history, no duplicate lines from a second writer
    recs = read_history(run_dir / "metrics.jsonl")
    single = read_history(tmp_path / "single" / "metrics.jsonl")
    assert [(r["phase"], r["step"]) for r in recs] == [(r["phase"], r["step"]) for r in single]
    for a, b in zip(recs, single):
        if a["phase"] == "train":
            assert a["total"] == pytest.approx(b["total"], rel=1e-4)
        else:  # validation is sharded over the ranks and summed: same means
            assert a["n"] == b["n"] == 3 and a["sad"] == pytest.approx(b["sad"], rel=1e-4)
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["best.pt", "best.pt.json", "last.pt", "last.pt.json"]
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    single_g = _single(tmp_path)
    out, run_dir = tmp_path / "out", tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).resolve()), "worker", str(out), str(run_dir)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check(tmp_path, out, run_dir, single_g)


@pytest.mark.slow
def test_notebook_launcher_two_processes(tmp_path):
    single_g = _single(tmp_path)
    out, run_dir = tmp_path / "out", tmp_path / "nb"
    out.mkdir()
    cmd = [sys.executable, str(Path(__file__).resolve()), "notebook", str(out), str(run_dir), str(_free_port())]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check(tmp_path, out, run_dir, single_g)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == STEPS


# ---- worker side ------------------------------------------------------------------------------
TIME_LIMIT_CHECKS: list[int] = []  # this process's time-limit decisions (each one an all-reduce)


def _count_time_limit_checks() -> None:
    from mattingkit.train.distributed import Dist

    original = Dist.broadcast_flag

    def counted(self, flag):
        TIME_LIMIT_CHECKS.append(1)
        return original(self, flag)

    Dist.broadcast_flag = counted


def _report(trainer, out: Path) -> None:
    r = trainer.dist.rank
    torch.save({k: v.detach().cpu() for k, v in trainer.G.module.state_dict().items()}, out / f"rank{r}_g.pt")
    (out / f"rank{r}.json").write_text(json.dumps({"rank": r, "world": trainer.dist.world,
                                                   "written": trainer.session.written,
                                                   "time_limit_checks": len(TIME_LIMIT_CHECKS),
                                                   "timeout_s": trainer.dist.timeout.total_seconds()}))


def _worker(out: Path, run_dir: Path) -> None:
    from mattingkit.train import Trainer

    _count_time_limit_checks()
    tr = Trainer(make_cfg(PER_RANK_BATCH), run_dir=run_dir, **make_trainer_kwargs())
    tr.fit()
    _report(tr, out)


def _notebook(out: Path, run_dir: Path, port: str) -> None:
    from mattingkit import train as mtrain

    original_fit = mtrain.Trainer.fit

    def fit_and_report(self, *a, **kw):  # record what each rank wrote, after the real fit
        result = original_fit(self, *a, **kw)
        _report(self, out)
        return result

    mtrain.Trainer.fit = fit_and_report
    _count_time_limit_checks()  # (the ranks are forked from here)
    summary = mtrain.launch_notebook(make_cfg(PER_RANK_BATCH), num_processes=2, run_dir=run_dir, use_port=port,
                                     **make_trainer_kwargs())
    (out / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    mode, out_dir, run = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "worker":
        _worker(out_dir, run)
    elif mode == "notebook":
        _notebook(out_dir, run, sys.argv[4])

"""Nothing touches CUDA in the notebook process before ``accelerate.notebook_launcher`` forks the ranks.

Notebook 03's path -- ``env.setup_notebook`` -> ``run.prepare_run`` -> ``pipeline.show_tensorboard`` ->
``pipeline.drive_space`` -> ``pipeline.train_model(ctx, num_processes=2)`` -- with the launcher replaced by one that really forks. After any CUDA query in the parent
(even a bare ``torch.cuda.is_available()``) a forked child is in a "bad fork": every rank dies at its first
CUDA call ("Cannot re-initialize CUDA in forked subprocess"). The demo config runs in a fresh interpreter (a
new kernel) with the real ``torch.cuda``; the GPU recipes run on a simulated GPU (tests/gpusim.py) with
demo-sized data, counting every CUDA query the parent makes before the launch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

#: A notebook kernel running notebook 03's cells, the launcher replaced by a real fork that reports.
_KERNEL = """
import json, os, sys
import accelerate, torch
from mattingkit import env, pipeline, run

def forking_launcher(function, args=(), num_processes=None, **kwargs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a rank: what its first CUDA call would find
        os.write(w, b"1" if torch.cuda._is_in_bad_fork() else b"0")
        os._exit(0)
    os.close(w)
    flag = os.read(r, 1)
    os.waitpid(pid, 0)
    print("REPORT " + json.dumps({"bad_fork": flag == b"1", "num_processes": num_processes}), flush=True)
    sys.exit(0)

accelerate.notebook_launcher = forking_launcher
if sys.argv[3] == "query-first":
    torch.cuda.is_available()  # the control: what the kit must not do
env.setup_notebook(mount_drive=True)  # the notebook's cells, in order
ctx = run.prepare_run("demo", ["run.data_root=" + sys.argv[2], "train.steps=2"], "fork", sys.argv[1])
pipeline.show_tensorboard(ctx)
pipeline.drive_space(ctx)
pipeline.train_model(ctx, num_processes=2)
"""


def _kernel(tmp_path: Path, data_root: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", _KERNEL, str(tmp_path / "runs"), str(data_root), mode],
                         capture_output=True, text=True, env=env, timeout=600)
    reports = [ln for ln in res.stdout.splitlines() if ln.startswith("REPORT ")]
    assert res.returncode == 0 and reports, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(reports[-1][len("REPORT "):])


def test_demo_notebook_03_forks_clean_ranks(tmp_path, demo_data_root):
    control = _kernel(tmp_path, demo_data_root, "query-first")
    assert control["bad_fork"] is True  # the check sees a CUDA query in the parent
    report = _kernel(tmp_path, demo_data_root, "as-notebook")
    assert report == {"bad_fork": False, "num_processes": 2}


#: What asks the CUDA driver (and poisons a later fork), as the kit could call it.
CUDA_QUERIES = ("is_available", "device_count", "get_device_capability", "get_device_properties",
                "get_device_name", "get_arch_list", "current_device", "set_device", "init", "is_bf16_supported",
                "mem_get_info", "memory_allocated", "max_memory_allocated", "empty_cache", "synchronize",
                "get_rng_state_all", "set_rng_state_all")


class Launched(Exception):
    pass


def _demo_sized(config: str, data_root: Path) -> list[str]:
    """The recipe's settings on the demo data (its layouts: AIM-500 with backgrounds, the competition's)."""
    data = (["data.layout=competition", "data.root=demo/competition"] if config == "ecom" else
            ["data.layout=aim500", "data.root=demo/aim500", "data.backgrounds=demo/backgrounds"])
    return [f"run.data_root={data_root}", "data.kaggle_datasets=[]", "data.val_fraction=0.25", *data]


@pytest.mark.parametrize("config", ["default", "aim500", "ecom"])
def test_gpu_recipes_query_no_cuda_before_the_launch(config, tmp_path, monkeypatch, demo_data_root):
    import accelerate
    from gpusim import simulate

    from mattingkit import pipeline, run

    simulate(monkeypatch, "T4", count=2)  # Kaggle's 2xT4
    calls: list[str] = []
    for name in CUDA_QUERIES:
        fn = getattr(torch.cuda, name, None)
        if callable(fn):
            monkeypatch.setattr(torch.cuda, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))
    launched: dict = {}

    def launcher(function, args=(), num_processes=None, **kwargs):
        launched.update(calls_before=list(calls), num_processes=num_processes)
        raise Launched

    monkeypatch.setattr(accelerate, "notebook_launcher", launcher)
    ctx = run.prepare_run(config, _demo_sized(config, demo_data_root), "fork", tmp_path / "runs")
    pipeline.drive_space(ctx)
    with pytest.raises(Launched):
        pipeline.train_model(ctx, num_processes=2)
    assert launched == {"calls_before": [], "num_processes": 2}
    if ctx.cfg.data.foreground == "estimate":  # the foregrounds were estimated before the launch, on the CPU
        assert list((ctx.run_dir / "fg_cache").glob("*.png"))

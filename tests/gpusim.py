"""Simulated GPUs for CPU tests: monkeypatch what :mod:`mattingkit.device` reads from ``torch.cuda``.

``simulate(monkeypatch, "T4")`` makes torch report one Tesla T4 (compute capability 7.5, 15 GB) under a
recent CUDA build's arch list; ``simulate(monkeypatch, None)`` makes it report no GPU.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

#: torch 2.9+ cu12.8/13.0 wheels (no sm_60/sm_70: no P100/V100 kernels; no sm_89: the L4 runs sm_86 cubins)
RECENT_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
#: torch 2.3-2.6 cu121 wheels (what older Colab/Kaggle images ship)
CU121_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]

GPUS = {  # name -> (torch.cuda.get_device_name, capability, memory GiB)
    "P100": ("Tesla P100-PCIE-16GB", (6, 0), 16.0),
    "V100": ("Tesla V100-SXM2-16GB", (7, 0), 16.0),
    "T4": ("Tesla T4", (7, 5), 15.0),
    "A100": ("NVIDIA A100-SXM4-40GB", (8, 0), 40.0),
    "L4": ("NVIDIA L4", (8, 9), 22.5),
    "H100": ("NVIDIA H100 80GB HBM3", (9, 0), 80.0),
}


def simulate(monkeypatch, gpu: str | None, archs: list[str] | None = None, count: int = 1) -> None:
    """Make ``torch.cuda`` report ``count`` copies of ``gpu`` (a key of :data:`GPUS`), or none."""
    if gpu is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
        return
    name, cap, mem = GPUS[gpu]
    props = SimpleNamespace(name=name, major=cap[0], minor=cap[1], total_memory=int(mem * 2 ** 30),
                            multi_processor_count=40)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(RECENT_ARCHS if archs is None else archs))
    monkeypatch.setattr(torch.version, "cuda", "13.0")

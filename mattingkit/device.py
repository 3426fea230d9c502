"""Device decisions, each made once: which device, which autocast dtype, channels_last, loader workers.

Training, validation, inference, ``mattingkit doctor`` and the GPU check all ask these functions, so a T4
user gets the same answer everywhere: fp16 + GradScaler on GPUs below compute capability 8.0 (T4 7.5,
V100 7.0, P100 6.0 — ``torch.cuda.is_bf16_supported()`` counts *emulated* bf16 there, which gets no tensor
cores for convolutions), bf16 from 8.0 (A100, L4, H100), AMP off on CPU. A GPU that the installed torch has
no kernels for (Kaggle's P100 under a recent CUDA build) and a missing GPU where a recipe needs one are
refused at start with one message that says what to do, never discovered inside step 1 or silently run on
the CPU. Every function reads ``torch.cuda`` at call time, so tests simulate devices by monkeypatching it.

Example:
    >>> import torch
    >>> from mattingkit.device import resolve_amp, resolve_channels_last, resolve_device
    >>> dev = resolve_device("cpu")
    >>> resolve_amp("auto", dev) is None, resolve_channels_last("auto", dev, None)
    (True, False)
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch

from .errors import DeviceError, UsageError

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
BF16_MIN_CAPABILITY = (8, 0)           # tensor-core bf16 (Ampere and newer)
CHANNELS_LAST_MIN_CAPABILITY = (7, 0)  # tensor cores (Volta and newer)
MAX_AUTO_WORKERS = 8
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask when the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` as written.

    Example:
        >>> resolve_device("cpu").type
        'cpu'
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        mattingkit.errors.UsageError: run.device='gpu': choose auto, cpu, cuda, cuda:N
    """
    if isinstance(spec, torch.device):
        return spec
    spec = "auto" if spec is None else str(spec)
    if not _DEVICE_RE.match(spec):
        raise UsageError(f"run.device={spec!r}: choose auto, cpu, cuda, cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"run.device={spec!r} but no CUDA GPU is visible to torch {torch.__version__}. "
                          "On Colab: Runtime > Change runtime type > T4 GPU; on Kaggle: Settings > Accelerator > "
                          "GPU T4 x2; or set run.device=cpu deliberately.")
    return torch.device(spec)


def capability(device: torch.device) -> tuple[int, int] | None:
    """Compute capability of a CUDA device, ``None`` for anything else."""
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def arch_supported(device: torch.device) -> bool:
    """Whether the installed torch was built with kernels for this GPU (``sm_XY`` or a ``compute_XY``
    PTX at or below it in ``torch.cuda.get_arch_list()``). CPU is always supported."""
    cap = capability(device)
    if cap is None:
        return True
    archs = torch.cuda.get_arch_list() or []
    if not archs:  # builds that do not say: assume yes
        return True
    sm = cap[0] * 10 + cap[1]
    for a in archs:
        kind, _, num = a.partition("_")
        if not num.isdigit():
            continue
        if kind == "sm" and int(num) == sm:
            return True
        if kind == "compute" and int(num) <= sm:  # PTX is JIT-compiled forward
            return True
    return False


def check_device(device: torch.device) -> None:
    """Refuse a GPU the torch build cannot run, with one message naming the GPU, the build and the way out.

    Example:
        >>> check_device(torch.device("cpu"))  # nothing to say
    """
    if arch_supported(device):
        return
    name = torch.cuda.get_device_name(device)
    cap = capability(device)
    archs = " ".join(torch.cuda.get_arch_list())
    raise DeviceError(
        f"{name} (compute capability {cap[0]}.{cap[1]}) is not supported by the installed torch "
        f"{torch.__version__} (CUDA {torch.version.cuda}; built for {archs}). "
        "On Kaggle pick the 'GPU T4 x2' accelerator, install a torch build that includes "
        f"sm_{cap[0]}{cap[1]}, or set run.device=cpu.")


def require_gpu(device: torch.device, required: bool, recipe: str = "this recipe") -> None:
    """Stop at once when a GPU-sized recipe would run on the CPU (a Colab runtime that lost its GPU).

    Example:
        >>> require_gpu(torch.device("cpu"), required=False)  # the demo and cpu recipes
        >>> require_gpu(torch.device("cpu"), required=True, recipe="default")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mattingkit.errors.DeviceError: default needs a GPU (run.require_gpu=true) but none is visible. ...
    """
    if not required or device.type == "cuda":
        return
    raise DeviceError(
        f"{recipe} needs a GPU (run.require_gpu=true) but none is visible. On Colab: Runtime > Change "
        "runtime type > T4 GPU (after a disconnect, reconnect to a GPU runtime); on Kaggle: Settings > "
        "Accelerator > GPU. To train on the CPU deliberately (about 100x slower) set run.device=cpu, or use "
        "the demo or cpu config.")


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` / ``infer.amp`` on ``device`` (``None`` = full float32).

    ``auto``: CPU -> off; CUDA capability >= 8.0 -> bf16; below -> fp16 (use a GradScaler to train).

    Example:
        >>> resolve_amp("auto", torch.device("cpu")) is None
        True
        >>> resolve_amp("fp16", torch.device("cpu"))
        torch.float16
    """
    if amp is False or amp is None:
        amp = "off"
    if amp not in AMP_CHOICES:
        raise UsageError(f"amp={amp!r}: choose {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    cap = capability(device)
    if cap is None:
        return None
    return torch.bfloat16 if cap >= BF16_MIN_CAPABILITY else torch.float16


def amp_reason(amp: str, device: torch.device) -> str:
    """One line saying why :func:`resolve_amp` chose what it chose (for doctor and the logs)."""
    dtype = resolve_amp(amp, device)
    name = {None: "off (float32)", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[dtype]
    if amp != "auto":
        return f"{name}: set explicitly (amp={amp})"
    cap = capability(device)
    if cap is None:
        return f"{name}: AMP is a GPU default; on {device.type} float32 is faster"
    cmp = ">=" if cap >= BF16_MIN_CAPABILITY else "<"
    return f"{name}: compute capability {cap[0]}.{cap[1]} {cmp} 8.0"


def needs_grad_scaler(amp_dtype: torch.dtype | None) -> bool:
    """fp16 training needs loss scaling; bf16 and float32 do not."""
    return amp_dtype == torch.float16


def resolve_channels_last(spec: str | bool, device: torch.device, amp_dtype: torch.dtype | None) -> bool:
    """``auto``: on for CUDA + AMP at capability >= 7.0 (tensor cores), off otherwise; a bool as given.

    Example:
        >>> resolve_channels_last("auto", torch.device("cpu"), None)
        False
        >>> resolve_channels_last(True, torch.device("cpu"), None)
        True
    """
    if isinstance(spec, bool):
        return spec
    if spec != "auto":
        raise UsageError(f"train.channels_last={spec!r}: choose auto, true or false")
    cap = capability(device)
    return cap is not None and amp_dtype is not None and cap >= CHANNELS_LAST_MIN_CAPABILITY


def resolve_num_workers(spec: int | str) -> int:
    """``data.num_workers``: ``auto`` = min(8, CPUs), 0 on a single CPU; an int as given.

    Example:
        >>> resolve_num_workers(3)
        3
        >>> 0 <= resolve_num_workers("auto") <= 8
        True
    """
    if isinstance(spec, bool) or not (spec == "auto" or isinstance(spec, int)):
        raise UsageError(f"data.num_workers={spec!r}: choose auto or a whole number >= 0")
    if spec == "auto":
        n = cpu_count()
        return 0 if n <= 1 else min(MAX_AUTO_WORKERS, n)
    if spec < 0:
        raise UsageError(f"data.num_workers={spec}: must be >= 0")
    return int(spec)


def device_facts(device: torch.device) -> dict[str, Any]:
    """What doctor and the GPU check report about a device (name, capability, memory, arch support)."""
    facts: dict[str, Any] = {"device": str(device), "type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        cap = capability(device)
        facts.update(name=torch.cuda.get_device_name(device), capability=f"{cap[0]}.{cap[1]}",
                     memory_gb=round(props.total_memory / 2**30, 1), count=torch.cuda.device_count(),
                     arch_list=list(torch.cuda.get_arch_list()), arch_supported=arch_supported(device))
    return facts


__all__ = [
    "AMP_CHOICES", "amp_reason", "arch_supported", "capability", "check_device", "cpu_count", "device_facts",
    "needs_grad_scaler", "require_gpu", "resolve_amp", "resolve_channels_last", "resolve_device",
    "resolve_num_workers",
]

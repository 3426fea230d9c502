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

import contextlib
import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

from .errors import DeviceError, UsageError
from .names import AMP_CHOICES, DEVICE_CHOICES, DEVICE_RE  # the choices, torch-free for the config check

BF16_MIN_CAPABILITY = (8, 0)           # tensor-core bf16 (Ampere and newer)
CHANNELS_LAST_MIN_CAPABILITY = (7, 0)  # tensor cores (Volta and newer)
MAX_AUTO_WORKERS = 8
DEFAULT_DIST_TIMEOUT_S = 1800.0        # train.dist_timeout_s default
#: The host: where files are decoded, classical solves run and checkpoints are loaded before moving
#: (the one CPU device literal of the kit).
HOST = torch.device("cpu")


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
    if not DEVICE_RE.match(spec):
        raise UsageError(f"run.device={spec!r}: choose {DEVICE_CHOICES}")
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


def _arch_numbers(kind: str) -> list[int]:
    """``sm`` / ``compute`` numbers in ``torch.cuda.get_arch_list()`` (``sm_86`` -> 86; ``sm_90a`` skipped:
    arch-specific cubins run on that exact GPU only and always come with the plain ``sm_90``)."""
    out = []
    for a in torch.cuda.get_arch_list() or []:
        k, _, num = str(a).partition("_")
        if k == kind and num.isdigit():
            out.append(int(num))
    return out


def arch_supported(device: torch.device) -> bool:
    """Whether the installed torch has kernels this GPU can run. CPU is always supported.

    CUDA's rules: a cubin built for ``sm_XY`` runs on every GPU of the same major ``X`` with minor >= ``Y``
    (so an L4, 8.9, runs the ``sm_86`` cubins of a build that lists no ``sm_89``; a T4, 7.5, runs
    ``sm_70``); a ``compute_XY`` PTX is JIT-compiled for any GPU at or above ``X.Y``. A P100 (6.0) under a
    build listing ``sm_70`` and up has neither.
    """
    cap = capability(device)
    if cap is None:
        return True
    if not torch.cuda.get_arch_list():  # builds that do not say: assume yes
        return True
    major, minor = cap
    if any(sm // 10 == major and sm % 10 <= minor for sm in _arch_numbers("sm")):
        return True
    return any(ptx <= major * 10 + minor for ptx in _arch_numbers("compute"))


def check_device(device: torch.device) -> None:
    """Refuse a GPU the torch build cannot run, with one message naming the GPU, the build and the way out.

    Example:
        >>> check_device(torch.device("cpu"))  # nothing to say
    """
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"run.device={device} but only {torch.cuda.device_count()} GPU(s) are visible "
                          f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1}); use run.device=auto or cuda:0.")
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
        "--config demo.")


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` / ``infer.amp`` on ``device`` (``None`` = full float32).

    ``auto``: CPU -> off; CUDA capability >= 8.0 -> bf16; below -> fp16 (use a GradScaler to train). An
    explicit ``bf16`` below 8.0 is honoured with a warning saying why it is a poor choice there.

    Example:
        >>> resolve_amp("auto", torch.device("cpu")) is None
        True
        >>> resolve_amp("fp16", torch.device("cpu"))
        torch.float16
    """
    if amp is False or amp is None:
        amp = "off"
    elif amp is True:
        amp = "auto"
    if amp not in AMP_CHOICES:
        raise UsageError(f"amp={amp!r}: choose {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None
    if amp == "bf16":
        note = _emulated_bf16(device)
        if note:
            warnings.warn(f"amp=bf16 {note}", stacklevel=2)
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    cap = capability(device)
    if cap is None:
        return None
    return torch.bfloat16 if cap >= BF16_MIN_CAPABILITY else torch.float16


def _emulated_bf16(device: torch.device) -> str | None:
    """Why bf16 is a poor choice on ``device`` (a GPU below capability 8.0), or None."""
    cap = capability(device)
    if cap is None or cap >= BF16_MIN_CAPABILITY:
        return None
    return (f"on compute capability {cap[0]}.{cap[1]} < 8.0: bf16 is emulated there, without tensor cores "
            "(slow); amp=auto picks fp16 + GradScaler")


def amp_reason(amp: str, device: torch.device) -> str:
    """One line saying why :func:`resolve_amp` chose what it chose (for doctor and the logs).

    Example:
        >>> amp_reason("auto", torch.device("cpu"))
        'off (float32): AMP is a GPU default; on cpu float32 is faster'
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the reason says it)
        dtype = resolve_amp(amp, device)
    amp = {False: "off", None: "off", True: "auto"}.get(amp, amp) if not isinstance(amp, str) else amp
    name = {None: "off (float32)", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[dtype]
    if amp != "auto":
        note = _emulated_bf16(device) if dtype == torch.bfloat16 else None
        return f"{name}: set explicitly (amp={amp})" + (f"; {note}" if note else "")
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


def resolve_num_workers(spec: int | str, local_world_size: int | None = None) -> int:
    """``data.num_workers`` of one training process: ``auto`` = min(8, this process's share of the CPUs),
    0 when that share is a single CPU; an int as given.

    The share is ``CPUs // local_world_size``: the processes training on this machine split its CPUs (on
    Kaggle's 2xT4, 4 vCPUs, each of the 2 ranks gets 2 workers, not 8 workers for 4 CPUs).
    ``local_world_size`` defaults to the launcher's environment: ``LOCAL_WORLD_SIZE`` (torchrun,
    ``accelerate launch``), else ``NPROC`` (``accelerate.notebook_launcher``: processes per node),
    else ``WORLD_SIZE`` (one machine), else 1.

    Example:
        >>> resolve_num_workers(3)
        3
        >>> 0 <= resolve_num_workers("auto") <= 8
        True
        >>> resolve_num_workers("auto", local_world_size=cpu_count())      # one CPU per process: no workers
        0
    """
    if isinstance(spec, bool) or not (spec == "auto" or isinstance(spec, int)):
        raise UsageError(f"data.num_workers={spec!r}: choose auto or a whole number >= 0")
    if spec == "auto":
        if local_world_size is None:
            env = next((os.environ[k] for k in ("LOCAL_WORLD_SIZE", "NPROC", "WORLD_SIZE") if os.environ.get(k)), "1")
            try:
                local_world_size = int(env)
            except ValueError:
                local_world_size = 1
        n = cpu_count() // max(1, int(local_world_size))
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


# --------------------------------------------------------------------------------------------
# One call for a run: every decision above, from the config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DevicePlan:
    """What a run will use, decided once from the config (:func:`plan`); ``as_dict`` is JSON-ready."""

    device: torch.device
    amp_dtype: torch.dtype | None
    grad_scaler: bool
    channels_last: bool
    num_workers: int
    amp_reason: str

    @property
    def amp_name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def as_dict(self) -> dict[str, Any]:
        return {"device": str(self.device), "amp": self.amp_name, "grad_scaler": self.grad_scaler,
                "channels_last": self.channels_last, "num_workers": self.num_workers,
                "amp_reason": self.amp_reason}

    def autocast(self) -> contextlib.AbstractContextManager:
        """The plan's mixed precision as a context (a no-op without AMP): the one place autocast is applied.

        Example:
            >>> p = DevicePlan.for_inference("cpu", amp="bf16")
            >>> with p.autocast():
            ...     torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype
            torch.bfloat16
        """
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @classmethod
    def for_inference(cls, device: str | torch.device | None = "auto", amp: str | bool | None = "auto") -> DevicePlan:
        """The plan of a prediction on ``device`` with ``infer.amp``-style ``amp`` (no scaler, workers or
        channels_last; :func:`plan` does the same from a whole config).

        Example:
            >>> DevicePlan.for_inference("cpu").as_dict()["amp"]
            'off'
        """
        dev = resolve_device(device)
        dtype = resolve_amp(amp, dev)
        return cls(device=dev, amp_dtype=dtype, grad_scaler=False, channels_last=False, num_workers=0,
                   amp_reason=amp_reason(amp, dev))

    @classmethod
    def host(cls) -> DevicePlan:
        """The plan of host-side work (the classical solvers of :mod:`mattingkit.baselines`): the CPU, float32.

        Example:
            >>> DevicePlan.host().device.type
            'cpu'
        """
        return cls.for_inference("cpu", amp="off")


def plan(cfg: Any, *, amp: str | bool | None = None, check: bool = True, require: bool | None = None) -> DevicePlan:
    """Resolve ``run.device``, ``train.amp`` (or ``amp``), ``train.channels_last`` and ``data.num_workers``
    of a :class:`~mattingkit.config.Config`; with ``check``, refuse an unsupported GPU
    (:func:`check_device`) and a missing one when ``run.require_gpu`` (unless ``run.device=cpu`` was
    asked for deliberately; ``require`` overrides ``run.require_gpu``). Inference passes
    ``amp=cfg.infer.amp, require=False`` (predicting on a CPU is slow, not wrong).

    Example:
        >>> from mattingkit.config import load_config
        >>> p = plan(load_config("demo", ["run.device=cpu", "data.num_workers=0"]))
        >>> p.as_dict()["amp"], p.grad_scaler, p.channels_last, p.num_workers
        ('off', False, False, 0)
    """
    run, train = cfg.run, cfg.train
    device = resolve_device(run.device)
    if check:
        check_device(device)
        deliberate_cpu = str(run.device) == "cpu"
        required = bool(getattr(run, "require_gpu", False)) if require is None else bool(require)
        require_gpu(device, required and not deliberate_cpu, recipe=run.name)
    amp = train.amp if amp is None else amp
    dtype = resolve_amp(amp, device)
    return DevicePlan(device=device, amp_dtype=dtype, grad_scaler=needs_grad_scaler(dtype),
                      channels_last=resolve_channels_last(getattr(train, "channels_last", "auto"), device, dtype),
                      num_workers=resolve_num_workers(cfg.data.num_workers), amp_reason=amp_reason(amp, device))


def dist_timeout(seconds: float | int | None) -> datetime.timedelta:
    """``train.dist_timeout_s`` as the ``timeout`` of ``torch.distributed.init_process_group`` (accelerate:
    ``InitProcessGroupKwargs(timeout=dist_timeout(cfg.train.dist_timeout_s))``). NCCL's 600 s default is
    shorter than rank 0 estimating foregrounds on AIM-500-sized data while the others wait at a barrier.

    Example:
        >>> dist_timeout(1800)
        datetime.timedelta(seconds=1800)
    """
    if seconds is None:
        seconds = DEFAULT_DIST_TIMEOUT_S
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise UsageError(f"train.dist_timeout_s={seconds!r}: must be a number of seconds > 0")
    return datetime.timedelta(seconds=float(seconds))


# --------------------------------------------------------------------------------------------
# Numerics and autotuning flags (process-wide, so always set-and-restore)
# --------------------------------------------------------------------------------------------
def _flags() -> dict[str, bool]:
    return {"matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic)}


def _set_flags(f: Mapping[str, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = f["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = f["cudnn_tf32"]
    torch.backends.cudnn.benchmark = f["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = f["cudnn_deterministic"]


@contextlib.contextmanager
def exact_numerics(enabled: bool = True) -> Iterator[None]:
    """Full float32 where a result is promised to match another (tiled vs untiled, the GPU check's
    agreement figures): TF32 off for matmuls and cuDNN convolutions (TF32 keeps 10 mantissa bits, and
    different tile shapes get different kernels, so rounding differs between tiles and the whole image),
    cudnn.benchmark off and cudnn.deterministic on (one algorithm per shape, no autotune workspaces).
    Everything is restored on exit. ``enabled=False`` changes nothing.

    Example:
        >>> before = torch.backends.cudnn.allow_tf32
        >>> with exact_numerics():
        ...     torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
        (False, False)
        >>> torch.backends.cudnn.allow_tf32 == before
        True
    """
    if not enabled:
        yield
        return
    saved = _flags()
    _set_flags({"matmul_tf32": False, "cudnn_tf32": False, "cudnn_benchmark": False, "cudnn_deterministic": True})
    try:
        yield
    finally:
        _set_flags(saved)


@contextlib.contextmanager
def cudnn_benchmark(flag: bool) -> Iterator[None]:
    """Set ``torch.backends.cudnn.benchmark`` for a block and restore it after: on for fixed-shape
    training crops, off for validation and inference (each new full-resolution shape pays an autotune,
    about 1 s on an H200, and may keep a large workspace).

    Example:
        >>> before = torch.backends.cudnn.benchmark
        >>> with cudnn_benchmark(not before):
        ...     torch.backends.cudnn.benchmark != before
        True
        >>> torch.backends.cudnn.benchmark == before
        True
    """
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(flag)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


# --------------------------------------------------------------------------------------------
# Out of memory
# --------------------------------------------------------------------------------------------
def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or MPS / CPU allocator) out-of-memory error: ``torch.cuda.OutOfMemoryError``, or a
    ``RuntimeError`` whose message says "out of memory" or is a CUDA library's failed allocation (cuDNN's
    and cuBLAS's ``..._STATUS_ALLOC_FAILED``, cuFFT's ``CUFFT_ALLOC_FAILED``: their workspaces come from the
    same memory).

    Example:
        >>> is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")), is_oom(ValueError("x"))
        (True, False)
        >>> is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
        True
    """
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in msg.lower() or "ALLOC_FAILED" in msg)


class OutOfMemory(DeviceError):
    """Training (or its validation) ran out of GPU memory; the message names the settings and what to change."""


def oom_message(*, batch_size: int, crop_size: int, amp: str, model: str, device: torch.device | str = "cuda",
                channels_last: bool | None = None, accum_steps: int = 1, detail: str = "",
                validation: tuple[int, int, str] | None = None) -> str:
    """The training out-of-memory message: what was running and what to change, most effective first.
    ``validation``: ``(data.val_max_side, infer.tile_size, infer.amp)`` when it happened while validating
    (full-resolution images through inference's path).

    Example:
        >>> print(oom_message(batch_size=16, crop_size=512, amp="off", model="alphagan/resnet50"))  # doctest: +ELLIPSIS
        Out of GPU memory on cuda training alphagan/resnet50 at data.batch_size=16, crop 512x512, train.amp=off. ...
        >>> print(oom_message(batch_size=16, crop_size=512, amp="off", model="alphagan/resnet50",
        ...                   validation=(1024, 1792, "off")))  # doctest: +ELLIPSIS
        Out of GPU memory on cuda validating alphagan/resnet50 at data.val_max_side=1024, infer.tile_size=1792, ...
    """
    det = f" ({detail})" if detail else ""
    kept = " The last checkpoint is intact (checkpoints are written whole or not at all). To fit: "
    restart = "restart the runtime so nothing else holds GPU memory (another notebook, an earlier model)"
    if validation is not None:
        side, tile, infer_amp = validation
        tips = [f"cap the validation images (data.val_max_side={max(256, side // 2)})",
                f"predict them in smaller tiles (infer.tile_size={max(256, tile // 2 // 32 * 32)})"]
        if infer_amp in ("off", "none", None, False):
            tips.append("validate in mixed precision (infer.amp=auto)")
        return (f"Out of GPU memory on {device} validating {model} at data.val_max_side={side}, "
                f"infer.tile_size={tile}, infer.amp={infer_amp}{det}." + kept + "; ".join(tips + [restart]) + ".")
    tips = []
    if batch_size > 1:
        tips.append(f"halve the batch (data.batch_size={max(1, batch_size // 2)}, and "
                    f"train.accum_steps={max(1, accum_steps) * 2} to keep the effective batch)")
    if amp in ("off", "none", None, False):
        tips.append("turn mixed precision on (train.amp=auto: about half the activation memory)")
    if crop_size > 320:
        tips.append(f"train on smaller crops (data.image_size={max(320, (crop_size // 2) // 32 * 32)})")
    tips.append("pick a smaller model (model.backbone=resnet34 or resnet18, or model.output_stride=16)")
    tips.append(restart)
    cl = "" if channels_last is None else f", channels_last={'on' if channels_last else 'off'}"
    return (f"Out of GPU memory on {device} training {model} at data.batch_size={batch_size}, crop "
            f"{crop_size}x{crop_size}, train.amp={amp}{cl}{det}." + kept + "; ".join(tips) + ".")


def training_oom_error(exc: BaseException, cfg: Any, amp_dtype: torch.dtype | None = None,
                       device: torch.device | str = "cuda", channels_last: bool | None = None,
                       validating: bool = False) -> OutOfMemory:
    """Turn an out-of-memory exception in training (``validating``: in its validation) into
    :class:`OutOfMemory` (raise it outside the ``except`` block, so that nothing keeps the failed step's
    tensors alive).

    Example:
        >>> from mattingkit.config import load_config
        >>> err = training_oom_error(RuntimeError("CUDA out of memory"), load_config("default"))
        >>> err.exit_code, "data.batch_size=1" in str(err)
        (5, True)
    """
    asked = {False: "off", True: "auto"}.get(cfg.train.amp, cfg.train.amp) if isinstance(cfg.train.amp, bool) \
        else cfg.train.amp
    amp = {None: asked, torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, str(amp_dtype))
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return OutOfMemory(oom_message(batch_size=cfg.data.batch_size, crop_size=cfg.data.image_size, amp=amp,
                                   model=f"{cfg.model.name}/{cfg.model.backbone}", device=device,
                                   channels_last=channels_last, accum_steps=cfg.train.accum_steps, detail=first,
                                   validation=(cfg.data.val_max_side, cfg.infer.tile_size, str(cfg.infer.amp))
                                   if validating else None))


def free_cuda_memory() -> None:
    """Release what an out-of-memory attempt left in PyTorch's CUDA cache (no-op without a GPU)."""
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


__all__ = [
    "AMP_CHOICES", "DevicePlan", "OutOfMemory", "cudnn_benchmark", "dist_timeout", "exact_numerics",
    "free_cuda_memory", "is_oom", "oom_message", "plan", "training_oom_error", "amp_reason", "arch_supported", "capability", "check_device", "cpu_count", "device_facts",
    "needs_grad_scaler", "require_gpu", "resolve_amp", "resolve_channels_last", "resolve_device",
    "resolve_num_workers",
]

"""What the trainer builds before its first step: a checked config, the datasets, optimisers, and the weights
it starts from (``train.init_from``, a resumed checkpoint)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import BEST_MODES, OPTIMIZERS, Config, ConfigError
from ..errors import InputNotFoundError

VAL_METRICS = ("sad", "mse", "grad", "conn", "competition_mse")


def check_config(cfg: Config) -> None:
    """Refuse training settings the trainer cannot run (one message naming the key)."""
    t = cfg.train
    if t.best_metric not in VAL_METRICS:
        raise ConfigError(f"train.best_metric={t.best_metric!r}; choose one of {', '.join(VAL_METRICS)}")
    if t.best_mode not in BEST_MODES:
        raise ConfigError(f"train.best_mode={t.best_mode!r}; choose min or max")
    for key in ("steps", "accum_steps", "d_every", "log_every", "image_every", "val_every", "ckpt_every",
                "max_nonfinite"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    name = cfg.run.name
    if not name or any(c in name for c in ':/\\') or name in (".", ".."):
        raise ConfigError(f"run.name={name!r} must be a plain folder name (no ':', '/' or '\\')")


def build_models(cfg: Config, model: nn.Module | None, discriminator: nn.Module | None, sync_bn: bool = False,
                 channels_last: bool = False) -> tuple[nn.Module, nn.Module | None]:
    """G and D (D only when ``train.use_gan``): the given modules, else the config's, built after seeding
    with ``run.seed`` (same seed, same weights); SyncBatchNorm (``sync_bn``: several processes and
    ``model.sync_bn``) and channels_last memory as asked.

    Example:
        >>> from mattingkit.config import load_config
        >>> g, d = build_models(load_config("demo", ["train.use_gan=false"]), nn.Conv2d(4, 1, 3), None)
        >>> type(g).__name__, d
        ('Conv2d', None)
    """
    torch.manual_seed(cfg.run.seed)
    from ..models import build_discriminator, build_model

    model = build_model(cfg.model) if model is None else model
    if not cfg.train.use_gan:
        discriminator = None
    elif discriminator is None:
        discriminator = build_discriminator(cfg.model)
    convert = [nn.SyncBatchNorm.convert_sync_batchnorm] if sync_bn else []
    if channels_last:
        convert.append(lambda m: m.to(memory_format=torch.channels_last))
    for fn in convert:
        model = fn(model)
        discriminator = fn(discriminator) if discriminator is not None else None
    return model, discriminator


def make_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    """Adam or AdamW (``train.optimizer``) over the parameters that require gradients."""
    params = [p for p in params if p.requires_grad]
    kind = cfg.optimizer.lower()
    if kind not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={cfg.optimizer!r}; choose adam or adamw")
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    # Fused kernels skip a step on the device when told to (``found_inf``): the trainer skips a
    # non-finite step without waiting for the device. Other devices fall back to the default kernels.
    fused = fused_supported(params)
    return cls(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
               **({"fused": True} if fused else {}))


def fused_supported(params) -> bool:
    """Whether torch has fused Adam kernels for every one of ``params`` (their devices and dtypes).

    Example:
        >>> fused_supported([torch.nn.Parameter(torch.zeros(2))]), fused_supported([])
        (True, False)
    """
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:
        return False
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


def resolve_init_from(cfg: Config) -> Path:
    """``train.init_from`` as a path: absolute, or relative to the working directory when it exists
    there, else below the runs root (so ``dim_encoder_decoder/checkpoints/best.pt`` finds the previous
    DIM stage wherever runs live: ``runs/``, Drive on Colab, ``/kaggle/working/runs``).

    Example:
        >>> from mattingkit.config import load_config
        >>> str(resolve_init_from(load_config("dim_refinement", ["train.init_from=/abs/best.pt"])))
        '/abs/best.pt'
    """
    from ..run import runs_root

    p = Path(str(cfg.train.init_from)).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = runs_root(cfg)
    below = root / p
    if not below.exists() and not p.parent.exists():
        raise InputNotFoundError(f"train.init_from: {p} not found (looked in {Path.cwd()} and in the runs root "
                                 f"{root}); train the previous stage first or give an absolute path")
    return below


def build_data(cfg: Config, run_dir: Path, is_main: bool = True, barrier: Callable[[], None] = lambda: None,
               world: int = 1):
    """(train_ds, val_ds) from the config: the manifest (cfg.data.manifest, or scanned into
    ``run_dir/manifest.csv`` by the main process; the demo data is generated when missing) ->
    :func:`mattingkit.data.datasets.build_datasets`. With several processes the main one also fills
    the foreground cache before the others start."""
    from ..data.datasets import build_datasets
    from ..run import ensure_manifest, manifest_path

    # the main process scans the manifest (and makes the demo data) when the run has none yet
    manifest = ensure_manifest(cfg, run_dir) if is_main else manifest_path(cfg, run_dir)
    if world > 1 and is_main:
        # Estimate the foreground colours once, here, rather than in every process at the same time.
        fill_foreground_cache(cfg, manifest)
    barrier()
    return build_datasets(cfg, manifest)


def fill_foreground_cache(cfg: Config, manifest: Path) -> None:
    """Estimate the training rows' foreground colours into the manifest's cache
    (:func:`mattingkit.data.foreground.default_cache_dir`, what :func:`~mattingkit.data.datasets.build_datasets`
    reads) when ``data.foreground=estimate``: on the CPU, nothing else built (no device is asked, so a
    notebook can still fork its ranks afterwards). A no-op for other foreground settings."""
    if cfg.data.foreground != "estimate":
        return
    from ..data.foreground import ForegroundCache, default_cache_dir
    from ..data.manifest import read_manifest

    df = read_manifest(manifest)
    ForegroundCache(default_cache_dir(manifest)).precompute(df[df["split"] == "train"], progress=False)


# --------------------------------------------------------------------------------------------
# Starting weights
# --------------------------------------------------------------------------------------------
def load_optimizer_state(opt: torch.optim.Optimizer, state: Mapping) -> None:
    """Load a checkpoint's optimiser state into ``opt``, keeping ``opt``'s own kernel choice: a checkpoint
    records whether its optimiser was fused (a CPU runtime, an older torch: not fused), and
    ``Optimizer.load_state_dict`` would bring that flag back while :func:`make_optimizer` decided for this
    process (a non-fused state resumed into a fused Adam then fails at its first step: "Expected
    grad_scale and found_inf to be None"). The flag is set before loading, so the step counters are also
    placed where this kernel wants them.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> plain, fused = torch.optim.Adam([p], fused=False), torch.optim.Adam([p], fused=True)
        >>> load_optimizer_state(fused, plain.state_dict()); fused.param_groups[0]["fused"]
        True
    """
    fused = opt.defaults.get("fused")
    groups = [{**g, "fused": fused} if "fused" in opt.defaults else g for g in state["param_groups"]]
    opt.load_state_dict({**state, "param_groups": groups})


def float_state(state: Mapping[str, torch.Tensor]) -> dict:
    """A state dict with float16 tensors made float32 (inference exports may be half precision)."""
    return {k: (v.float() if torch.is_floating_point(v) and v.dtype == torch.float16 else v)
            for k, v in state.items()}


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load the tensors whose name and shape match; returns (missing, unexpected) names."""
    own = model.state_dict()
    take = {k: v.to(own[k].dtype) for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return [k for k in own if k not in take], [k for k in state if k not in own]


def load_resumed_weights(model: nn.Module, discriminator: nn.Module | None, state: Mapping) -> None:
    """Put a resumed checkpoint's weights into the (not yet wrapped) models; a clear error when they do
    not fit the configured model."""
    try:
        model.load_state_dict(float_state(state["generator"]))
        if discriminator is not None and state.get("discriminator") is not None:
            discriminator.load_state_dict(state["discriminator"])
    except RuntimeError as e:
        raise ckpt.CheckpointError(
            state.get("_path", "checkpoint"),
            "its weights do not fit the configured model (did a model.* setting change since it was "
            f"written?). Start over with fresh=True / --fresh, or use another run name. {e}") from None


__all__ = ["VAL_METRICS", "build_data", "build_models", "check_config", "fill_foreground_cache", "float_state", "fused_supported",
           "load_matching", "load_optimizer_state", "load_resumed_weights", "make_optimizer", "resolve_init_from"]

"""Typed configuration: YAML files -> a tree of dataclasses, with dotted overrides.

One config tree drives everything (data, trimaps, augmentation, model, losses, training, inference,
submission). The dataclass defaults below are the paper-style AlphaGAN recipe; the YAML files in
``mattingkit/configs/`` only state what they change.

A YAML file of your own should start with ``base: NAME`` (a shipped config: ``demo``, ``default``,
``ecom``, ``aim500``, ... or a path to another YAML file): every key it does not state comes from that
config. Without ``base:`` every key left out takes the dataclass default below — ResNet-50, 100,000
steps and a ``bg20k`` background folder (a missing one is an error naming ``data.backgrounds``).

Checked when loaded (:func:`load_config`, :func:`apply_overrides`), every problem at once: an unknown key
or a wrong type names the key and lists the valid ones; an enumerated key names the value and its choices.
config.py imports nothing above it: it checks the choices it owns (:data:`ENUMS`); the choices of keys a
module dispatches on (``model.name``, ``data.layout``, ``run.device``, ...) are checked one floor up by
:mod:`mattingkit.choices`, whose ``config_problems`` the entry points pass as ``check=``. YAML is read with YAML 1.2 booleans
(:func:`load_yaml`): ``amp: off`` is the string ``"off"``; only true/false are booleans.

Example:
    >>> from mattingkit.config import load_config
    >>> cfg = load_config("demo", overrides=["train.lr_g=2e-4", "model.backbone=resnet18"])
    >>> cfg.train.lr_g
    0.0002
    >>> cfg.model.backbone
    'resnet18'
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .errors import UsageError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: The config every entry point uses when none is named (CLI commands, :func:`load_config`, doctor): the
#: demo recipe runs anywhere (CPU, offline) in minutes.
DEFAULT_CONFIG = "demo"


class ConfigError(UsageError):
    """A configuration key or value is wrong; the message names the key and the valid choices."""


# --------------------------------------------------------------------------------------------
# The tree. Keep field comments short: they are the config reference the README points to.
# --------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    name: str = "run"                 # run folder name under runs_root
    seed: int = 0                     # every random choice derives from this
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    require_gpu: bool = True          # stop at start when no GPU is visible (false: demo / cpu recipes)
    runs_root: str | None = None      # default: mattingkit.env.runs_root()
    data_root: str | None = None      # default: mattingkit.env.data_root()
    smoke: bool = False               # tiny budgets everywhere (CI / quick checks)
    deterministic: bool = False       # torch deterministic algorithms (CPU tests)
    lock_stale_s: float = 900.0       # run-folder lock from another host is stale after this heartbeat age
    checkpoint_local_dir: str | None = "auto"  # auto: write checkpoints on local disk and mirror them to a Drive run folder | null: in the run folder | PATH
    mirror_every_min: float = 120.0   # mirrored run folder (Drive): at most one checkpoint copy per this many minutes (best.pt when it improved, else last.pt; both at the end); each replaced copy goes to Drive's trash; 0 = every checkpoint


@dataclass
class DataConfig:
    layout: str = "aim500"            # synthetic | competition | aim500 | adobe | alphamatting | folder
    root: str = "aim500"              # dataset folder, relative to data_root unless absolute
    backgrounds: str | None = "bg20k"  # background pool folder (relative to data_root unless absolute)
    eval_root: str | None = None      # optional separate evaluation set (alphamatting layout etc.)
    trimap_set: str = "Trimap1"       # alphamatting download: which trimaps become trimap/ (Trimap1 | Trimap2)
    manifest: str | None = None       # explicit manifest CSV; default: written by the scan step
    val_fraction: float = 0.1         # split by foreground identity
    foreground: str = "estimate"      # estimate (cached) | given (dataset has fg) | photo (use the photo)
    crop_sizes: list[int] = field(default_factory=lambda: [320, 480, 640])
    image_size: int = 320             # crops are resized to this (multiple of 32)
    batch_size: int = 8
    num_workers: int | str = "auto"   # loader workers; auto = min(8, CPUs), 0 on one CPU
    augment_on: str = "auto"          # auto | cpu | device: float augmentation on the training device (auto = on a GPU)
    cache: str = "none"               # none | ram: decode foregrounds + alphas (+ backgrounds) once, before workers fork
    val_max_side: int = 1024          # full-resolution evaluation, capped on the long side
    val_limit: int | None = None      # evaluate at most this many images (None = all)
    kaggle_competition: str | None = None   # competition slug for download
    kaggle_datasets: list[str] = field(default_factory=list)  # "owner/name" or "owner/name:folder" slugs
    group_regex: str | None = None    # foreground identity from the id (1st capture group); None = id
    check_pixels: bool | None = None  # validation decodes pixels (trimap/alpha checks); None = if <= 1000 items


@dataclass
class TrimapConfig:
    method: str = "erode_dilate"      # erode_dilate (DIM recipe) | band (distance transform) | mixed
    kernel_range: list[int] = field(default_factory=lambda: [1, 30])   # elliptical kernel size
    iterations: int = 1               # erode/dilate iterations per application
    band_width: int = 10              # px, for method=band (random in [band_width_min, band_width])
    band_width_min: int = 5
    fg_threshold: float = 0.95        # from-mask thresholds (trimap-free second pass)
    bg_threshold: float = 0.05
    mask_band: int = 15               # px of unknown around the mask edge
    mixed_band_prob: float = 0.5      # method=mixed: probability of band, else erode_dilate


@dataclass
class AugmentConfig:
    affine: bool = True               # random rotation/scale/shear/flip of the foreground
    rotation: float = 15.0            # degrees
    scale: list[float] = field(default_factory=lambda: [0.8, 1.25])
    shear: float = 10.0               # degrees
    flip: bool = True
    hsv_jitter: bool = True
    hue: float = 10.0                 # max hue shift, degrees (HSV jitter of the foreground)
    saturation: list[float] = field(default_factory=lambda: [0.7, 1.3])  # saturation scale range
    value: list[float] = field(default_factory=lambda: [0.8, 1.2])       # brightness scale range
    pad: str = "reflect"              # reflect | zero: foreground padding when the crop leaves the image
    two_fg_prob: float = 0.5          # composite two foregrounds (alpha = 1-(1-a1)(1-a2))
    trimap_dropout: float = 0.0       # probability of an all-unknown trimap (trimap-free training)
    densify: float = 0.0              # competition-style dense alpha strength; 0 = off


@dataclass
class ModelConfig:
    name: str = "alphagan"            # alphagan | dim | u2netp
    backbone: str = "resnet50"        # resnet18 | resnet34 | resnet50 (alphagan); vgg16_bn (dim)
    pretrained: bool = True           # ImageNet weights when available (offline -> random init + message)
    weights_path: str | None = None   # local torchvision backbone state dict (alphagan/dim); u2netp: full u2netp.pth
    output_stride: int = 8            # 8 or 16
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18])  # at output stride 16; doubled at 8
    norm: str = "bn"                  # bn | gn
    use_trimap: bool = True           # False: trimap-free (the trimap input is ignored / all-unknown)
    guide: str = "none"               # none | closed_form | knn (alphagan): refine a classical solve (CPU)
    dim_stage: str = "joint"          # encoder_decoder | refinement | joint (DIM only)
    disc_channels: int = 64           # PatchGAN width
    disc_layers: int = 3              # PatchGAN depth
    disc_spectral_norm: bool = False
    sync_bn: bool = False             # convert BatchNorm to SyncBatchNorm under multi-process training


@dataclass
class LossConfig:
    alpha: float = 0.5                # alpha-prediction loss weight
    comp: float = 0.5                 # composition loss weight
    gan: float = 1.0                  # generator adversarial weight (when train.use_gan)
    gan_type: str = "bce"             # bce | lsgan | hinge
    grad: float = 0.0                 # gradient loss weight
    laplacian: float = 0.0            # Laplacian-pyramid loss weight
    eps: float = 1e-6                 # Charbonnier epsilon
    region: str = "unknown"           # unknown | all (trimap-free recipes use all)
    # competition (trimap-free) MSE family
    mse: float = 0.0
    thin_mse: float = 0.0
    bg_penalty: float = 0.0
    grad_mse: float = 0.0
    aux: float = 1.0                  # deep supervision: same pixel terms on DIM alpha_raw / U2-Net side outputs


@dataclass
class TrainConfig:
    steps: int = 100000               # optimizer steps (iterations)
    optimizer: str = "adam"           # adam | adamw
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    schedule: str = "cosine"          # constant | cosine | cyclic | plateau
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.01        # cosine floor / cyclic base as a fraction of lr
    cycle_steps: int = 2000           # cyclic schedule period
    plateau_patience: int = 3         # validations without improvement before reducing (plateau)
    plateau_factor: float = 0.5
    use_gan: bool = True
    g_warmup_steps: int = 1000        # generator-only steps before D switches on
    d_every: int = 1                  # update D every N batches
    grad_clip: float | None = 1.0     # max grad norm (None = off)
    accum_steps: int = 1              # gradient accumulation
    amp: str | bool = "auto"          # auto (capability >= 8.0: bf16; other GPUs: fp16 + GradScaler; CPU: off) | off | bf16 | fp16 (YAML reads off as false)
    channels_last: bool | str = "auto"  # auto = on for CUDA + AMP at compute capability >= 7.0
    max_nonfinite: int = 10           # stop after this many non-finite losses in a row
    log_every: int = 50
    image_every: int = 500
    val_every: int = 2000
    ckpt_every: int = 1000
    best_metric: str = "sad"          # sad | mse | grad | conn | competition_mse
    best_mode: str = "min"            # min | max
    resume: bool = True               # continue from runs/NAME/checkpoints/last.pt when present
    init_from: str | None = None      # fresh runs: initialise G from this checkpoint/export (DIM stages)
    val_at_start: bool = False        # validate the untrained model at step 0 (a baseline point)
    time_limit_min: float | None = None  # stop cleanly (saving last.pt) after this many minutes
    tensorboard: bool = True          # write TensorBoard events to runs/NAME/tb
    find_unused_parameters: bool = False  # DDP: set when some G parameters get no gradient
    dist_timeout_s: float = 1800.0    # multi-GPU process-group timeout (NCCL default 600 s is too short)


@dataclass
class InferConfig:
    pixel_budget: int = 2048 * 2048   # above this, overlapped tiling
    tile_size: int = 1792             # largest tile side (px); 4096^2 with the default model stays < 6 GB RSS
    tile_overlap: int | str = "auto"  # context px around each tile's core; auto = the model's InferGeometry.tile_context
    tile_stats_passes: int | str = "auto"  # whole-image statistics passes: auto = exact (1 per GroupNorm/pool)
    pad_margin: int = 32              # reflect padding on every side before rounding up to a multiple of 32
    tta_flip: bool = False
    two_pass: bool = False            # trimap-free: coarse pass -> trimap from mask -> refine
    amp: str | bool = "auto"          # as train.amp
    write_rgba: bool = False          # also write RGBA cut-outs with estimated foreground colours
    batch_size: int = 1               # predict_folder: consecutive same-size images per forward
    max_side: int | None = None       # the long side the model sees (downscaled, antialiased; alpha resized back); null: full size


@dataclass
class SubmissionConfig:
    size: int | None = 1024           # PNG side without test_dir (the competition's 1024x1024); null: each matte's own size; another aspect ratio is refused, never stretched
    sample_csv: str | None = None     # organisers' sample submission (row order); else sorted stems
    test_dir: str | None = None       # test images folder (relative to data_root unless absolute)
    name: str = "submission"          # submissions/NAME.csv


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trimap: TrimapConfig = field(default_factory=TrimapConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> "Config":
        return from_dict(self.to_dict())


# --------------------------------------------------------------------------------------------
# Enumerated keys that config.py owns. The choices of keys whose values a module dispatches on (model.name,
# data.layout, loss.gan_type, run.device, ...) are that module's table (or, for a module that imports torch,
# its names in mattingkit.names), checked one floor up, in mattingkit.choices (config.py imports nothing above it).
# --------------------------------------------------------------------------------------------
SCHEDULES = ("constant", "cosine", "cyclic", "plateau")   # train.schedule (the trainer's LRSchedule)
OPTIMIZERS = ("adam", "adamw")                          # train.optimizer
BEST_MODES = ("min", "max")                             # train.best_mode
NORMS = ("bn", "gn")                                    # model.norm (models.common.make_norm)
OUTPUT_STRIDES = (8, 16)                                # model.output_stride (alphagan)

#: ``section.key`` -> choices, for the keys config.py owns (the rest: :data:`mattingkit.choices.ENUMS`).
ENUMS: dict[str, tuple] = {
    "model.norm": NORMS,
    "model.output_stride": OUTPUT_STRIDES,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "train.best_mode": BEST_MODES,
}
#: keys that take "auto" or a number (what the number counts, for the message).
AUTO_OR_NUMBER = {"infer.tile_overlap": "a number of pixels", "infer.tile_stats_passes": "a number of passes"}

#: ``section.key`` -> (lowest, highest, lowest allowed?): a number outside is refused (None: unbounded;
#: a ``None`` value means "off" where the key allows it). Counts of steps and items start at 1.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "run.lock_stale_s": (0, None, False),
    "data.val_fraction": (0, 1, True),
    "data.image_size": (1, None, True),
    "data.batch_size": (1, None, True),
    "data.val_max_side": (1, None, True),
    "data.val_limit": (1, None, True),
    "infer.max_side": (1, None, True),
    "trimap.iterations": (1, None, True),
    "trimap.band_width": (1, None, True),
    "trimap.band_width_min": (0, None, True),
    "trimap.fg_threshold": (0, 1, True),
    "trimap.bg_threshold": (0, 1, True),
    "trimap.mask_band": (0, None, True),
    "trimap.mixed_band_prob": (0, 1, True),
    "augment.two_fg_prob": (0, 1, True),
    "augment.trimap_dropout": (0, 1, True),
    "augment.densify": (0, None, True),
    "model.disc_channels": (1, None, True),
    "model.disc_layers": (1, None, True),
    **{f"loss.{k}": (0, None, True) for k in ("alpha", "comp", "gan", "grad", "laplacian", "mse", "thin_mse",
                                             "bg_penalty", "grad_mse", "aux")},
    "loss.eps": (0, None, False),
    "train.steps": (1, None, True),
    "train.lr_g": (0, None, True),    # 0: frozen (a check that a step changes nothing)
    "train.lr_d": (0, None, True),
    "train.weight_decay": (0, None, True),
    "train.warmup_steps": (0, None, True),
    "train.min_lr_ratio": (0, 1, True),
    "train.cycle_steps": (1, None, True),
    "train.plateau_patience": (0, None, True),
    "train.plateau_factor": (0, 1, False),
    "train.g_warmup_steps": (0, None, True),
    "train.d_every": (1, None, True),
    "train.grad_clip": (0, None, False),
    "train.accum_steps": (1, None, True),
    "train.max_nonfinite": (1, None, True),
    "train.log_every": (1, None, True),
    "train.image_every": (1, None, True),
    "train.val_every": (1, None, True),
    "train.ckpt_every": (1, None, True),
    "train.time_limit_min": (0, None, False),
    "train.dist_timeout_s": (0, None, False),
    "infer.pixel_budget": (1, None, True),
    "infer.tile_size": (1, None, True),
    "infer.pad_margin": (0, None, True),
    "infer.batch_size": (1, None, True),
    "submission.size": (1, None, True),
}


def get_value(cfg: "Config", key: str) -> Any:
    """The value of a dotted ``section.key`` of ``cfg``.

    Example:
        >>> get_value(Config(), "train.schedule")
        'cosine'
    """
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _not_one_of(value: Any, options: tuple) -> str | None:
    return None if value in options else f"choose {', '.join(map(str, options))}"


def _out_of_range(value: Any, bounds: tuple[float | None, float | None, bool]) -> str | None:
    low, high, closed = bounds
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None   # None (off) / "auto": the type check and choices decide
    below = low is not None and (value < low if closed else value <= low)
    if not below and (high is None or value <= high):
        return None
    if high is None:
        return f"must be {'>=' if closed else '>'} {low}"
    return f"must be in {'[' if closed else '('}{low}, {high}]"


def _not_auto_or_number(value: Any, what: str) -> str | None:
    return f"choose auto or {what}" if isinstance(value, str) and value != "auto" else None


def _table_problems(cfg: "Config", table: Mapping[str, Any], rule: Callable[[Any, Any], str | None]) -> list[str]:
    """``section.key=value: why`` for each key of ``table`` whose value ``rule(value, table[key])`` refuses."""
    problems = []
    for key, entry in table.items():
        value = get_value(cfg, key)
        why = rule(value, entry)
        if why:
            problems.append(f"{key}={value!r}: {why}")
    return problems


def choice_problems(cfg: "Config", enums: Mapping[str, tuple]) -> list[str]:
    """Every key of ``enums`` (``section.key`` -> choices) whose value in ``cfg`` is not one of its choices.

    Example:
        >>> cfg = Config(); cfg.train.schedule = "linear"
        >>> choice_problems(cfg, ENUMS)
        ["train.schedule='linear': choose constant, cosine, cyclic, plateau"]
    """
    return _table_problems(cfg, enums, _not_one_of)


def config_problems(cfg: "Config") -> list[str]:
    """Every value of ``cfg`` that config.py itself can refuse (its own choices, :data:`RANGES`,
    :data:`AUTO_OR_NUMBER`), one line each. :func:`mattingkit.choices.config_problems` adds the choices of
    the modules that dispatch on a value.

    Example:
        >>> cfg = load_config("demo")
        >>> cfg.model.norm = "ln"; cfg.train.lr_g = -5.0
        >>> config_problems(cfg)
        ["model.norm='ln': choose bn, gn", 'train.lr_g=-5.0: must be >= 0']
    """
    return (_table_problems(cfg, ENUMS, _not_one_of) + _table_problems(cfg, RANGES, _out_of_range)
            + _table_problems(cfg, AUTO_OR_NUMBER, _not_auto_or_number))


def check_config(cfg: "Config", problems: Callable[["Config"], list[str]] | None = None) -> "Config":
    """Raise :class:`ConfigError` listing every problem ``problems(cfg)`` finds (default:
    :func:`config_problems`), one line each; return ``cfg``."""
    found = (problems or config_problems)(cfg)
    if found:
        raise ConfigError("\n".join(found))
    return cfg


# --------------------------------------------------------------------------------------------
# Type checking / coercion
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow the lossless int -> float promotion."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, names: list[str], where: str) -> str:
    """``unknown key 'train.lr_gg' in train; did you mean train.lr_g?`` (no close name: the valid keys)."""
    prefix, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} in {where}; did you mean {'.'.join(filter(None, [prefix, close[0]]))}?"
    return f"unknown key {key!r} in {where}; valid keys: {', '.join(names)}"


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    """``cls`` from ``data``; each unknown key or wrong value is appended to ``problems`` (the default
    stands in for it), so one pass finds every mistake."""
    if not isinstance(data, Mapping):
        problems.append(f"{prefix or 'config'}: expected a mapping, got {data!r}")
        return cls()
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    problems += [_unknown_key(".".join(filter(None, [prefix, str(k)])), names, prefix or "config")
                 for k in data if k not in names]
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp = hints[name]
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name] or {}, key, problems)
            continue
        try:
            kwargs[name] = _coerce(data[name], tp, key)
        except ConfigError as e:
            problems.append(str(e))
    return cls(**kwargs)


def build_config(data: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """A :class:`Config` from a (possibly partial) nested mapping and every problem of its keys and types
    (a wrong value is replaced by its default in the returned config).

    Example:
        >>> cfg, problems = build_config({"train": {"stpes": 5, "lr_g": "fast"}})
        >>> problems[0]
        "unknown key 'train.stpes' in train; did you mean train.steps?"
        >>> problems[1], cfg.train.lr_g
        ("train.lr_g: expected a number, got 'fast'", 0.0002)
    """
    problems: list[str] = []
    return _build(Config, data or {}, "", problems), problems


def from_dict(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from a (possibly partial) nested mapping, checking every key and type
    (:class:`ConfigError` lists every problem)."""
    cfg, problems = build_config(data)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def _merge(base: dict, upd: Mapping) -> dict:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class _SafeLoaderYaml12(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false (any case) are booleans.

    YAML 1.1 also reads yes/no/on/off as booleans, so ``amp: off`` became ``False`` and failed as
    "expected a string"; here those words stay the strings that were written, and a boolean key given
    ``yes`` says "expected true/false" instead of silently taking it.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_SafeLoaderYaml12.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoaderYaml12.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str) -> Any:
    """Parse YAML text as the kit does everywhere: safe, and only true/false are booleans.

    Example:
        >>> load_yaml("amp: off\\nuse_gan: false\\nname: yes")
        {'amp': 'off', 'use_gan': False, 'name': 'yes'}
    """
    return yaml.load(text, Loader=_SafeLoaderYaml12)  # noqa: S506 - a SafeLoader subclass


def _parse_value(text: str) -> Any:
    """Parse the right-hand side of ``key=value`` as YAML (so 2e-4, true, [1,2], null work)."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "2e-4" as a string; accept it as a number.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn ``["train.lr_g=2e-4", ...]`` or ``{"train.lr_g": 2e-4}`` into a nested dict."""
    if not overrides:
        return {}
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = [(str(k), v) for k, v in overrides.items()]
    else:
        for text in overrides:
            if "=" not in text:
                raise ConfigError(f"override {text!r} must look like section.key=value")
            k, v = text.split("=", 1)
            items.append((k.strip(), _parse_value(v.strip())))
    nested: dict[str, Any] = {}
    for key, value in items:
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            sections = ", ".join(f.name for f in dataclasses.fields(Config))
            raise ConfigError(f"override key {key!r} must be section.key (sections: {sections})")
        nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


def available_configs() -> list[str]:
    """Names of the configs shipped with the package (``default``, ``demo``, ``ecom``, ``aim500``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read_yaml(name_or_path: str | os.PathLike) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown config {str(name_or_path)!r}; shipped configs: {', '.join(available_configs())} "
                "(or pass a path to a .yaml file)"
            )
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    if base:
        parent = _read_yaml(base if Path(str(base)).suffix else base)
        data = _merge(parent, data)
    return data


def load_with_problems(
    name_or_path: str | os.PathLike = DEFAULT_CONFIG,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    check: Callable[[Config], list[str]] | None = None,
) -> tuple[Config, list[str]]:
    """:func:`load_config` without raising: the config (a wrong value replaced by its default) and every
    problem of its keys, types and values (``check``, default :func:`config_problems`), one line each. A
    file that cannot be read or parsed still raises.

    Example:
        >>> cfg, problems = load_with_problems("demo", ["data.batch_size=-1", "train.steps=0"])
        >>> problems
        ['data.batch_size=-1: must be >= 1', 'train.steps=0: must be >= 1']
    """
    cfg, problems = build_config(_merge(_read_yaml(name_or_path), parse_overrides(overrides)))
    return cfg, list(dict.fromkeys(problems + (check or config_problems)(cfg)))


def load_config(
    name_or_path: str | os.PathLike = DEFAULT_CONFIG,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    check: Callable[[Config], list[str]] | None = None,
) -> Config:
    """Load a shipped config by name (or a YAML path) and apply dotted overrides.

    A YAML file may say ``base: demo`` to start from another config. Keys, types, ranges and the values
    ``check`` refuses (default :func:`config_problems`; pass :func:`mattingkit.choices.config_problems` to
    check every key's choices) are checked at once: :class:`ConfigError` lists every problem, one a line.

    Example:
        >>> cfg = load_config("demo", {"train.steps": 10})
        >>> cfg.train.steps
        10
    """
    cfg, problems = load_with_problems(name_or_path, overrides, check)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def apply_overrides(cfg: Config, overrides: Iterable[str] | Mapping[str, Any] | None,
                    check: Callable[[Config], list[str]] | None = None) -> Config:
    """Return a new config with dotted overrides applied (the input is not modified), checked as
    :func:`load_config` checks."""
    new, problems = build_config(_merge(cfg.to_dict(), parse_overrides(overrides)))
    problems = list(dict.fromkeys(problems + (check or config_problems)(new)))
    if problems:
        raise ConfigError("\n".join(problems))
    return new


# --------------------------------------------------------------------------------------------
# Sweep grids: every point checked before the first one runs
# --------------------------------------------------------------------------------------------
#: ``metrics.json`` keys a sweep's ``metric:`` may name, per notebook section (fnmatch patterns).
SWEEP_METRICS: dict[str, tuple[str, ...]] = {
    "01_data_download": ("items", "groups", "with_trimap", "excluded", "problems", "backgrounds", "test_images",
                         "seconds", "splits.*", "sources.*", "sizes.*"),
    "02_trimap_synthesis": ("samples", "seconds", "unknown_share.*", "ms_per_trimap.*"),
    "03_train_gan": ("step", "steps", "best.value", "best.step", "final.*", "elapsed_s", "steps_per_s",
                     "nonfinite_total", "seconds"),
    "04_inference": ("sad", "mse", "grad", "conn", "competition_mse", "images", "written", "skipped", "failed",
                     "evaluated", "eval_problems", "predict_seconds", "seconds"),
    "05_submission": ("rows", "file_size", "resized", "predict_seconds", "seconds"),
}


def _metric_problem(metric: Any) -> str | None:
    known = [f"{sec}.{k}" for sec, keys in SWEEP_METRICS.items() for k in keys]
    text = str(metric)
    if isinstance(metric, str) and any(fnmatch.fnmatchcase(text, k) for k in known):
        return None
    close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
    section = text.split(".", 1)[0]
    where = (f"{section}: {', '.join(SWEEP_METRICS[section])}" if section in SWEEP_METRICS
             else f"sections: {', '.join(SWEEP_METRICS)}")
    hint = f"did you mean {close[0]}? " if close else ""
    return f"metric {metric!r} is not a key a run writes to metrics.json; {hint}({where})"


def _key_problem(key: Any) -> str | None:
    parts = str(key).split(".")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    if len(parts) != 2 or not all(parts):
        return f"grid key {key!r} must be section.key (sections: {', '.join(sections)})"
    if parts[0] not in sections:
        close = difflib.get_close_matches(parts[0], list(sections), n=1)
        hint = f"; did you mean {close[0]}.{parts[1]}?" if close else f" (sections: {', '.join(sections)})"
        return f"unknown key {key!r}{hint}"
    names = [f.name for f in dataclasses.fields(_hints(Config)[parts[0]])]
    if parts[1] not in names:
        close = difflib.get_close_matches(parts[1], names, n=1)
        hint = (f"; did you mean {parts[0]}.{close[0]}?" if close
                else f"; valid keys in {parts[0]}: {', '.join(names)}")
        return f"unknown key {key!r}{hint}"
    return None


def grid_problems(grid: Any, metric: Any = None, config: str | os.PathLike = DEFAULT_CONFIG,
                  overrides: Iterable[str] | Mapping[str, Any] | None = None,
                  check: Callable[["Config"], list[str]] = config_problems) -> list[str]:
    """Every problem of a sweep grid at once: keys, each value (type, and what ``check`` refuses, against
    ``config`` + ``overrides``), and ``metric``. An empty list means every point will load.
    :func:`mattingkit.choices.grid_problems` checks every key's choices.

    Example:
        >>> grid_problems({"train.lr_g": [1e-4], "train.schedule": ["cosine", "cosin"]}, metric="04_inference.sad")
        ["train.schedule='cosin': choose constant, cosine, cyclic, plateau"]
    """
    problems: list[str] = []
    try:
        base = _merge(_read_yaml(config), parse_overrides(overrides))
        base_problems = set(check(from_dict(base)))
    except ConfigError as e:
        return [f"the sweep's config / overrides: {e}"]
    problems.extend(sorted(base_problems))
    if not isinstance(grid, Mapping) or not grid:
        problems.append(f"grid must be a non-empty mapping of section.key: [values], got {grid!r}")
        grid = {}
    for key, values in grid.items():
        problem = _key_problem(key)
        if problem:
            problems.append(problem)
            continue
        if not isinstance(values, (list, tuple)) or not values:
            problems.append(f"grid entry {key!r} must be a non-empty list of values, got {values!r}")
            continue
        section, name = str(key).split(".")
        for value in values:
            try:
                cfg = from_dict(_merge(base, {section: {name: value}}))
            except ConfigError as e:
                problems.append(str(e))
                continue
            problems.extend(p for p in check(cfg) if p not in base_problems)
    if metric is not None:
        problem = _metric_problem(metric)
        if problem:
            problems.append(problem)
    return list(dict.fromkeys(problems))


def validate_grid(grid: Any, metric: Any = None, config: str | os.PathLike = DEFAULT_CONFIG,
                  overrides: Iterable[str] | Mapping[str, Any] | None = None,
                  check: Callable[["Config"], list[str]] = config_problems) -> None:
    """Raise :class:`ConfigError` listing every problem of a sweep grid (see :func:`grid_problems`).

    Call it before the sweep's first point (load the sweep file with :func:`load_yaml` so that
    ``amp: [off, bf16]`` stays strings).

    Example:
        >>> validate_grid({"train.lr": [1e-4]})
        Traceback (most recent call last):
        ...
        mattingkit.config.ConfigError: sweep grid: 1 problem:
          unknown key 'train.lr'; did you mean train.lr_g?
    """
    problems = grid_problems(grid, metric=metric, config=config, overrides=overrides, check=check)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"sweep grid: {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n{lines}")


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML (atomically)."""
    from .io import atomic_write_bytes

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)

"""Every enumerated config key checked against the table of the module that dispatches on it.

config.py builds and type-checks the tree and owns a few choices itself (schedules, optimisers, ...); the
valid values of ``data.layout``, ``trimap.method``, ``augment.pad`` and ``train.best_metric`` are the public
tables of the modules that use them (``data.layouts.LAYOUTS``, ``trimap.METHODS``, ...); the modules that
need torch to be imported (``models``, ``losses``, ``device``, ``data.datasets``, ``data.device_augment``)
take the names of their choices from :mod:`mattingkit.names` and check their tables against them at import.
This module sits one floor above those owners and config.py, imports their tables (none imports torch:
``mattingkit config`` starts in well under a second), and checks a whole :class:`~mattingkit.config.Config`
against them, every problem at once. The entry points (the CLI, :func:`mattingkit.run.resolve_config`,
sweeps) check here.

Example:
    >>> from mattingkit.config import load_config
    >>> cfg = load_config("demo"); cfg.trimap.method = "erode"
    >>> config_problems(cfg)
    ["trimap.method='erode': choose erode_dilate, band, mixed"]
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from . import config as _config
from . import names
from .config import DEFAULT_CONFIG, Config, ConfigError
from .data.augment import PAD_MODES
from .data.layouts import LAYOUTS
from .metrics import ALL_METRICS
from .names import DEVICE_CHOICES, DEVICE_RE
from .trimap import TRIMAP_METHODS

#: ``section.key`` -> choices, every enumerated key (those config.py owns included). Keys whose choices
#: depend on another value (model.backbone, run.device) are checked in :func:`config_problems` beside it.
ENUMS: dict[str, tuple] = {
    "data.layout": tuple(LAYOUTS),
    "data.foreground": names.FOREGROUND_MODES,
    "data.augment_on": names.AUGMENT_ON,
    "data.cache": names.CACHE_MODES,
    "trimap.method": tuple(TRIMAP_METHODS),
    "augment.pad": tuple(PAD_MODES),
    "model.name": names.MODELS,
    "model.norm": _config.NORMS,
    "model.output_stride": _config.OUTPUT_STRIDES,
    "model.dim_stage": names.STAGES,
    "model.guide": names.GUIDES,
    "loss.gan_type": names.GAN_KINDS,
    "loss.region": names.REGIONS,
    "train.optimizer": _config.OPTIMIZERS,
    "train.schedule": _config.SCHEDULES,
    "train.amp": names.AMP_CHOICES,
    "train.best_metric": tuple(ALL_METRICS),
    "train.best_mode": _config.BEST_MODES,
    "infer.amp": names.AMP_CHOICES,
}
#: model.name -> its backbones (a model not listed takes no backbone: model.backbone is ignored).
BACKBONES: dict[str, tuple] = names.BACKBONES


def enum_choices(key: str, model_name: str | None = None) -> tuple:
    """The valid values of an enumerated ``section.key`` (``model.backbone``: of ``model_name``, or of all).

    Example:
        >>> enum_choices("train.schedule")
        ('constant', 'cosine', 'cyclic', 'plateau')
        >>> enum_choices("model.backbone", "dim")
        ('vgg16_bn',)
    """
    if key == "model.backbone":
        names = [model_name] if model_name else list(BACKBONES)
        return tuple(b for n in names for b in BACKBONES.get(n, ()))
    if key not in ENUMS:
        raise KeyError(f"{key} is not an enumerated key")
    return ENUMS[key]


def config_problems(cfg: Config) -> list[str]:
    """Every value of ``cfg`` that is not one of its choices (and config.py's own checks), one line each.

    Example:
        >>> from mattingkit.config import load_config
        >>> cfg = load_config("demo")
        >>> cfg.run.device = "gpu"
        >>> config_problems(cfg)
        ["run.device='gpu': choose auto, cpu, cuda, cuda:N"]
    """
    problems = []
    if not DEVICE_RE.match(str(cfg.run.device)):
        problems.append(f"run.device={cfg.run.device!r}: choose {DEVICE_CHOICES}")
    problems += _config.choice_problems(cfg, ENUMS)
    name = cfg.model.name
    if name in BACKBONES and cfg.model.backbone not in BACKBONES[name]:
        problems.append(f"model.backbone={cfg.model.backbone!r}: choose "
                        f"{', '.join(BACKBONES[name])} (model.name={name})")
    if cfg.data.augment_on == "device" and cfg.model.guide != "none":   # only this pair imports torch here
        from .data.device_augment import guide_reason

        if guide_reason(cfg.model.guide):
            problems.append(f"data.augment_on='device' cannot train {guide_reason(cfg.model.guide)}; use auto or cpu")
    return list(dict.fromkeys(problems + _config.config_problems(cfg)))


def check_config(cfg: Config) -> Config:
    """Raise :class:`~mattingkit.config.ConfigError` listing every problem of :func:`config_problems`
    (one line each); return ``cfg``.

    Example:
        >>> from mattingkit.config import load_config
        >>> check_config(load_config("demo")).model.name
        'alphagan'
    """
    return _config.check_config(cfg, config_problems)


def grid_problems(grid: Any, metric: Any = None, config: str | os.PathLike = DEFAULT_CONFIG,
                  overrides: Iterable[str] | Mapping[str, Any] | None = None) -> list[str]:
    """Every problem of a sweep grid at once (:func:`mattingkit.config.grid_problems`), every key's choices
    checked.

    Example:
        >>> grid_problems({"train.lr_g": [1e-4], "trimap.method": ["band", "bnad"]}, metric="04_inference.sad")
        ["trimap.method='bnad': choose erode_dilate, band, mixed"]
    """
    return _config.grid_problems(grid, metric=metric, config=config, overrides=overrides, check=config_problems)


def validate_grid(grid: Any, metric: Any = None, config: str | os.PathLike = DEFAULT_CONFIG,
                  overrides: Iterable[str] | Mapping[str, Any] | None = None) -> None:
    """Raise :class:`~mattingkit.config.ConfigError` listing every problem of a sweep grid (see
    :func:`grid_problems`); call it before the sweep's first point.

    Example:
        >>> validate_grid({"trimap.method": ["band"]})
    """
    _config.validate_grid(grid, metric=metric, config=config, overrides=overrides, check=config_problems)


__all__ = ["BACKBONES", "ENUMS", "ConfigError", "check_config", "config_problems", "enum_choices",
           "grid_problems", "validate_grid"]

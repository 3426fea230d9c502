"""The names of the choices that torch-bound modules dispatch on, in one table that imports nothing.

``mattingkit config`` checks every enumerated key of a config (:mod:`mattingkit.choices`) and must start in
under a second, so it cannot import torch (about 1 s alone). The modules that act on ``run.device``,
``train.amp``, ``loss.gan_type``, ``model.name``, ``data.foreground``, ... need torch to be imported, so
the names of their choices live here, at the bottom floor, and each of those modules takes its names from
here: :mod:`mattingkit.device`, :mod:`mattingkit.losses`, :mod:`mattingkit.models` (and its alphagan and
dim), :mod:`mattingkit.data.datasets`, :mod:`mattingkit.data.device_augment`, :mod:`mattingkit.baselines`
(``mattingkit predict --help`` lists its methods). A module whose dispatch is a table (``models.MODELS``,
``baselines.METHODS``, alphagan's guide solvers) checks at import that the table's keys are these names
(:func:`check_keys`), so the two cannot drift: a name added on one side only stops the import.

Owners that import without torch keep their own tables (``trimap.METHODS``, ``data.layouts.LAYOUTS``,
``data.augment.PAD_MODES``, ``metrics.ALL_METRICS``, config.py's own choices).

Example:
    >>> check_keys("model.name", {"alphagan": 1, "dim": 2, "u2netp": 3}, MODELS)
    >>> check_keys("model.name", {"alphagan": 1, "modnet": 2}, MODELS)
    Traceback (most recent call last):
    ...
    RuntimeError: model.name: the table's keys (alphagan, modnet) are not the names in mattingkit.names (alphagan, dim, u2netp)
"""
from __future__ import annotations

import re
from typing import Iterable

#: ``run.device`` (:func:`mattingkit.device.resolve_device`): the specs accepted, and how a message lists them.
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
#: ``train.amp``, ``infer.amp`` (:func:`mattingkit.device.resolve_amp`).
AMP_CHOICES = ("auto", "off", "bf16", "fp16")
#: ``loss.gan_type`` and ``loss.region`` (:mod:`mattingkit.losses`).
GAN_KINDS = ("bce", "lsgan", "hinge")
REGIONS = ("unknown", "all")
#: ``model.name``: the keys of :data:`mattingkit.models.MODELS`, in its order.
MODELS = ("alphagan", "dim", "u2netp")
#: ``model.backbone`` per ``model.name`` (a model not listed takes no backbone).
BACKBONES = {"alphagan": ("resnet18", "resnet34", "resnet50"), "dim": ("vgg16_bn",)}
#: ``model.guide`` (alphagan): no guide, or one of the classical solvers (:data:`mattingkit.baselines.SOLVERS`).
GUIDES = ("none", "closed_form", "knn")
#: ``model.dim_stage`` (:meth:`mattingkit.models.dim.DIMMatting.set_stage`).
STAGES = ("encoder_decoder", "refinement", "joint")
#: ``data.foreground`` and ``data.cache`` (:mod:`mattingkit.data.datasets`).
FOREGROUND_MODES = ("estimate", "given", "photo")
CACHE_MODES = ("none", "ram")
#: ``data.augment_on`` (:func:`mattingkit.data.device_augment.resolve_augment_on`).
AUGMENT_ON = ("auto", "cpu", "device")
#: ``mattingkit predict --method``: the keys of :data:`mattingkit.baselines.METHODS`, in its order.
BASELINES = ("closed_form", "knn", "trimap")


def check_keys(key: str, table: Iterable[str], names: tuple) -> None:
    """Raise ``RuntimeError`` unless ``table`` (a dispatch table or its keys) holds exactly ``names``, in order;
    owners call it at import, so a choice added on one side only stops the import (``key``: the config key
    or option whose choices these are, for the message).

    Example:
        >>> check_keys("model.guide", ("none", "closed_form", "knn"), GUIDES)
    """
    keys = tuple(table)
    if keys != tuple(names):
        raise RuntimeError(f"{key}: the table's keys ({', '.join(map(str, keys))}) are not the names in "
                           f"mattingkit.names ({', '.join(map(str, names))})")


__all__ = ["AMP_CHOICES", "AUGMENT_ON", "BACKBONES", "BASELINES", "CACHE_MODES", "DEVICE_CHOICES", "DEVICE_RE",
           "FOREGROUND_MODES", "GAN_KINDS", "GUIDES", "MODELS", "REGIONS", "STAGES", "check_keys"]

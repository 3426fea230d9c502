"""Matting models behind one interface and a registry.

Every model is called as ``model(image, trimap) -> dict`` with ``image`` (N, 3, H, W) in [0, 1]
(not normalised: each model applies ImageNet normalisation itself), ``trimap`` (N, 1, H, W) in
{0, 0.5, 1} or ``None`` for trimap-free models, H and W multiples of 32. The dict always holds
``alpha`` (N, 1, H, W) float32 in [0, 1], plus named auxiliary outputs:

=========  ===============================================  ==========================================
name       class                                            extra outputs
=========  ===============================================  ==========================================
alphagan   :class:`~.alphagan.AlphaGANGenerator`            ``guide`` (with ``model.guide``)
dim        :class:`~.dim.DIMMatting`                        ``alpha_raw``, ``aux_alphas``
u2netp     :class:`~.u2net.U2NetP`                          ``side_outputs``, ``aux_alphas``
=========  ===============================================  ==========================================

``aux_alphas`` (a list, possibly empty) names the extra alphas :func:`mattingkit.losses.matting_loss`
deep-supervises with weight ``loss.aux``. The discriminator (:class:`~.alphagan.PatchGANDiscriminator`)
takes ``cat(composite RGB, trimap)`` and returns patch logits. Training logic lives in
``mattingkit.train``, never in the model classes.

Example:
    >>> import torch
    >>> from mattingkit.config import ModelConfig
    >>> cfg = ModelConfig(name="u2netp", pretrained=False)
    >>> model = build_model(cfg).eval()
    >>> model(torch.rand(1, 3, 64, 64), None)["alpha"].shape
    torch.Size([1, 1, 64, 64])
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

from torch import nn

from .. import names
from ..errors import UsageError
from .alphagan import AlphaGANGenerator, PatchGANDiscriminator
from .common import PretrainedWeightsWarning, count_parameters
from .dim import DIMMatting
from .u2net import U2NetP

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ModelConfig

MODELS: dict[str, Callable[["ModelConfig"], nn.Module]] = {
    "alphagan": AlphaGANGenerator.from_config,
    "dim": DIMMatting.from_config,
    "u2netp": U2NetP.from_config,
}
names.check_keys("model.name", MODELS, names.MODELS)   # the config check reads the names without torch

TRIMAP_FREE = frozenset({"u2netp"})  # models that never look at the trimap


def build_model(cfg: "ModelConfig") -> nn.Module:
    """Build the generator / matting network named by ``cfg.name`` (see :data:`MODELS`).

    Example:
        >>> from mattingkit.config import ModelConfig
        >>> m = build_model(ModelConfig(name="alphagan", backbone="resnet18", pretrained=False))
        >>> type(m).__name__
        'AlphaGANGenerator'
    """
    try:
        factory = MODELS[cfg.name]
    except KeyError:
        raise ValueError(f"model.name={cfg.name!r} is unknown; choose one of {', '.join(MODELS)}") from None
    if cfg.guide != "none" and cfg.name != "alphagan":
        raise UsageError(f"model.guide={cfg.guide!r} is an alphagan option; model.name={cfg.name!r} takes "
                         "model.guide=none")
    if cfg.guide != "none" and not cfg.use_trimap:
        raise UsageError(f"model.guide={cfg.guide!r} needs a trimap: with model.use_trimap=false every pixel is "
                         "unknown and the classical solve is a constant 0.5; use model.guide=none")
    if cfg.weights_path and not cfg.pretrained:
        warnings.warn(f"model.weights_path={cfg.weights_path!r} is ignored because model.pretrained=false",
                      PretrainedWeightsWarning, stacklevel=2)
    return factory(cfg)


def build_discriminator(cfg: "ModelConfig") -> PatchGANDiscriminator:
    """The PatchGAN discriminator (4-channel input: composite RGB + trimap) for GAN training.

    Example:
        >>> import torch
        >>> from mattingkit.config import ModelConfig
        >>> d = build_discriminator(ModelConfig(disc_channels=8, disc_layers=2))
        >>> d(torch.rand(1, 4, 64, 64)).shape
        torch.Size([1, 1, 14, 14])
    """
    return PatchGANDiscriminator.from_config(cfg)


__all__ = [
    "MODELS", "TRIMAP_FREE", "build_model", "build_discriminator", "count_parameters",
    "AlphaGANGenerator", "PatchGANDiscriminator", "DIMMatting", "U2NetP", "PretrainedWeightsWarning",
]

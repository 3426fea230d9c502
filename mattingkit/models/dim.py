"""Deep Image Matting (Xu, Price, Cohen & Huang, CVPR 2017), as in hudengjunai/Deep-Image-Matting.

::

    image (N,3,H,W) ──normalise──┐
    trimap (N,1,H,W) ────────────┴─cat─> VGG16-bn conv1..conv5, each stage ending in a 2x2 max-pool
        that keeps its indices ─> conv6 (3x3 + 1x1, 512) ─> decoder: 5 x (max-unpool with the matching
        indices -> 5x5 conv) 512, 256, 128, 64, 64 ─> 5x5 conv -> raw alpha logits
    refinement head: cat(normalised RGB, raw alpha) ─> 3 x (3x3 conv 64 + norm + ReLU) ─> 3x3 conv
        -> delta;  refined alpha = sigmoid(raw logits + delta)

Choices where the paper and the reference code leave room:

- conv6 is hudengjunai's "transMap" (3x3 then 1x1, 512 channels, BN + ReLU), the decoder convs are
  5x5 with norm + ReLU as in the paper; the last decoder stage has 64 channels (the paper's
  ``deconv1``), followed by the 5x5 raw-alpha prediction.
- The refinement stage is residual in logit space: its last conv is zero-initialised, so at the
  start of the refinement stage the refined alpha equals the raw alpha exactly.
- ``model.dim_stage``: ``encoder_decoder`` returns ``alpha = alpha_raw`` and skips the head;
  ``refinement`` freezes the encoder-decoder (no gradients, BatchNorm kept in eval mode even under
  ``model.train()``) and returns the refined alpha; ``joint`` trains everything and returns the
  refined alpha. :meth:`DIMMatting.set_stage` switches stage on a built model.
- ``aux_alphas`` lists the auxiliary alphas the loss should also supervise (``[alpha_raw]`` in the
  joint stage, nothing otherwise).
- ImageNet VGG16-bn weights are optional exactly like the ResNet ones (``model.weights_path`` or
  torchvision's weights API, one warning and random init when unavailable); the trimap filters of
  the first conv start at zero when they are loaded. The decoder is always freshly initialised.
- ``model.norm=gn`` swaps every BatchNorm for GroupNorm (pretrained BN affine parameters copied).

Example:
    >>> import torch
    >>> from mattingkit.config import ModelConfig
    >>> m = DIMMatting.from_config(ModelConfig(name="dim", backbone="vgg16_bn", pretrained=False))
    >>> out = m(torch.rand(1, 3, 64, 64), torch.full((1, 1, 64, 64), 0.5))
    >>> sorted(out)
    ['alpha', 'alpha_raw', 'aux_alphas']
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torchvision
from torch import nn

from ..names import BACKBONES, STAGES  # the choices, torch-free for the config check
from ..tiling import InferGeometry
from .common import (
    ImageNetNormalize,
    alpha_from_logits,
    conv_norm_act,
    convert_bn_to_gn,
    expand_input_channels,
    init_weights,
    load_matching,
    prepare_inputs,
    torchvision_state_dict,
    unpool,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ModelConfig

VGG16_STAGES = (2, 2, 3, 3, 3)  # convs per stage
VGG16_WIDTHS = (64, 128, 256, 512, 512)


def vgg16_bn_features() -> nn.Sequential:
    """torchvision's ``vgg16_bn().features`` (same parameter names), without building the classifier."""
    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)


class VGGEncoder(nn.Module):
    """VGG16-bn conv stages with index-keeping 2x2 max-pools; ``forward`` -> (x, [(indices, size)])."""

    def __init__(self, in_channels: int = 4, pretrained: bool = False,
                 weights_path: str | None = None) -> None:
        super().__init__()
        features = vgg16_bn_features()
        self.pretrained_loaded = False
        if pretrained:
            sd = torchvision_state_dict("vgg16_bn", weights_path)
            if sd is not None:
                feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
                other = [k for k in sd if not k.startswith(("features.", "classifier."))]
                if other:
                    raise ValueError(f"ImageNet weights for vgg16_bn{f' ({weights_path})' if weights_path else ''} "
                                     f"do not look like a torchvision VGG state dict: unexpected {other[:5]}")
                load_matching(features, feats, source="ImageNet weights for vgg16_bn"
                              + (f" ({weights_path})" if weights_path else ""))
                self.pretrained_loaded = True
        if not self.pretrained_loaded:
            init_weights(features)
        layers = [m for m in features if not isinstance(m, nn.MaxPool2d)]
        layers[0] = expand_input_channels(layers[0], in_channels, zero_new=self.pretrained_loaded)
        stages, i = [], 0
        for n in VGG16_STAGES:
            stages.append(nn.Sequential(*layers[i:i + 3 * n]))  # conv, bn, relu per conv
            i += 3 * n
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Size]]]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            skips.append((idx, size))
        return x, skips


class DIMDecoder(nn.Module):
    """conv6 + five unpool/5x5-conv stages + raw alpha logits."""

    def __init__(self, norm: str = "bn") -> None:
        super().__init__()
        self.conv6 = nn.Sequential(conv_norm_act(512, 512, 3, norm), conv_norm_act(512, 512, 1, norm))
        widths = (512, 512, 256, 128, 64, 64)  # input of deconv5, outputs of deconv5..deconv1
        self.deconvs = nn.ModuleList(conv_norm_act(widths[i], widths[i + 1], 5, norm) for i in range(5))
        self.raw = nn.Conv2d(64, 1, 5, padding=2)
        init_weights(self)

    def forward(self, x: torch.Tensor, skips: list[tuple[torch.Tensor, torch.Size]]) -> torch.Tensor:
        x = self.conv6(x)
        for deconv, (idx, size) in zip(self.deconvs, reversed(skips)):
            x = unpool(x, idx, size, kernel_size=2, stride=2)
            x = deconv(x)
        return self.raw(x)


class RefinementHead(nn.Module):
    """cat(normalised RGB, raw alpha) -> 3 conv layers -> a residual on the raw logits."""

    def __init__(self, norm: str = "bn", channels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(4, channels, 3, norm), conv_norm_act(channels, channels, 3, norm),
                                  conv_norm_act(channels, channels, 3, norm))
        self.delta = nn.Conv2d(channels, 1, 3, padding=1)
        init_weights(self)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, rgb: torch.Tensor, raw_alpha: torch.Tensor) -> torch.Tensor:
        return self.delta(self.body(torch.cat([rgb, raw_alpha.to(rgb.dtype)], dim=1)))


class DIMMatting(nn.Module):
    """DIM: ``model(image, trimap) -> {"alpha", "alpha_raw", "aux_alphas"}`` (alphas float32, N,1,H,W)."""

    #: Context (px) a tile needs around the pixels it predicts for tiled == untiled inference
    #: (mattingkit.infer, tile_overlap="auto"); measured on alphamatting.com photos (random init):
    #: the error falls below 1/255 at 160 px.
    infer_geometry = InferGeometry(tile_context=224)

    def __init__(self, stage: str = "joint", norm: str = "bn", use_trimap: bool = True,
                 pretrained: bool = False, weights_path: str | None = None) -> None:
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"model.norm must be 'bn' or 'gn', got {norm!r}")
        self.use_trimap = use_trimap
        self.normalize = ImageNetNormalize()
        self.encoder = VGGEncoder(4, pretrained=pretrained, weights_path=weights_path)
        self.decoder = DIMDecoder(norm)
        self.refine = RefinementHead(norm)
        if norm == "gn":
            convert_bn_to_gn(self)
        self.stage = "joint"
        self.set_stage(stage)

    @classmethod
    def from_config(cls, cfg: "ModelConfig") -> "DIMMatting":
        if cfg.backbone not in BACKBONES["dim"]:
            raise ValueError(f"model.backbone={cfg.backbone!r} is not available for dim; "
                             f"set model.backbone={BACKBONES['dim'][0]}")
        return cls(stage=cfg.dim_stage, norm=cfg.norm, use_trimap=cfg.use_trimap,
                   pretrained=cfg.pretrained, weights_path=cfg.weights_path)

    def encoder_decoder_parameters(self):
        """Parameters of the first stage (encoder + decoder), e.g. for a separate optimiser group."""
        yield from self.encoder.parameters()
        yield from self.decoder.parameters()

    def set_stage(self, stage: str) -> "DIMMatting":
        """Switch training stage (``encoder_decoder`` | ``refinement`` | ``joint``); returns self."""
        if stage not in STAGES:
            raise ValueError(f"model.dim_stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.stage = stage
        frozen = stage == "refinement"
        for p in self.encoder_decoder_parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "DIMMatting":
        super().train(mode)
        if self.stage == "refinement":  # frozen first stage: keep BatchNorm statistics fixed
            self.encoder.eval()
            self.decoder.eval()
        return self

    def forward(self, image: torch.Tensor, trimap: torch.Tensor | None = None) -> dict:
        image, trimap = prepare_inputs(image, trimap, model="dim", use_trimap=self.use_trimap)
        rgb = self.normalize(image)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage != "refinement"):
            x, skips = self.encoder(torch.cat([rgb, trimap], dim=1))
            raw_logits = self.decoder(x, skips)
        alpha_raw = alpha_from_logits(raw_logits)
        if self.stage == "encoder_decoder":
            return {"alpha": alpha_raw, "alpha_raw": alpha_raw, "aux_alphas": []}
        logits = raw_logits.float() + self.refine(rgb, alpha_raw).float()
        alpha = torch.sigmoid(logits)
        aux = [alpha_raw] if self.stage == "joint" else []
        return {"alpha": alpha, "alpha_raw": alpha_raw, "aux_alphas": aux}

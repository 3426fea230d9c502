"""U²-Net-P (Qin et al., Pattern Recognition 2020), the 1.1 M-parameter variant.

The trimap-free model of the ecom.tech competition entry DEsterossa/Ecom_CV: a U-Net of U-Nets.
Every stage is a *residual U-block* RSU-L (an L-level little U-Net whose output is added to its
input projection); the two deepest stages are RSU-4F, which replace pooling with dilation.
With 16 mid / 64 output channels everywhere this is U²-Net-P (about 1.13 M parameters).

::

    image ─norm─> RSU7 ─pool─> RSU6 ─pool─> RSU5 ─pool─> RSU4 ─pool─> RSU4F ─pool─> RSU4F
                   │            │            │            │            │              │
    side1 <─ RSU7d <─ RSU6d <─ RSU5d <─ RSU4d <─ RSU4Fd <──────────────────── (upsampled)
    six 3x3 side convs -> logits upsampled to H x W -> 1x1 fuse conv over the 6 -> fused logits

- Module and parameter names follow the authors' code (``stage1``, ``rebnconvin``, ``conv_s1``,
  ``bn_s1``, ``side1``, ``outconv``...), so their released ``u2netp.pth`` loads with
  ``model.pretrained=true model.weights_path=u2netp.pth`` (there is no ImageNet backbone to download:
  ``pretrained=true`` without a path only warns).
- Input is ImageNet-normalised inside the model, as in the authors' data pipeline; the trimap is
  ignored (pass ``None``).
- Output: ``alpha`` = sigmoid of the fused map, ``side_outputs`` = the six sigmoid side maps
  (all float32, (N, 1, H, W)), ``aux_alphas`` = the side outputs, for deep supervision.
- Pooling is 2x2 with ``ceil_mode`` as upstream, so any size works; the package's inputs are
  multiples of 32 anyway. ``model.norm=gn`` swaps BatchNorm for GroupNorm. The deepest maps are
  H/32 (and H/64 inside RSU-7), so training with BatchNorm at batch size 1 needs H, W >= 64.

Example:
    >>> import torch
    >>> m = U2NetP()
    >>> out = m(torch.rand(1, 3, 64, 64))
    >>> tuple(out["alpha"].shape), len(out["side_outputs"])
    ((1, 1, 64, 64), 6)
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import (
    ImageNetNormalize,
    PretrainedWeightsWarning,
    alpha_from_logits,
    load_matching,
    load_state_dict_file,
    make_norm,
    prepare_inputs,
    upsample_to,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ModelConfig


class REBNCONV(nn.Module):
    """3x3 conv (dilation ``dirate``) -> norm -> ReLU (upstream names: conv_s1, bn_s1, relu_s1)."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1, norm: str = "bn") -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = make_norm(norm, out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block RSU-L (``height`` = L) or, with ``dilated=True``, RSU-LF (no pooling).

    RSU-L: ``rebnconvin``, encoder ``rebnconv1..L-1`` with a 2x2 pool after each but the last,
    ``rebnconvL`` (dilation 2), decoder ``rebnconv{L-1..1}d``; output = decoder + input projection.
    RSU-4F: dilations 1, 2, 4, 8 in the encoder and 4, 2, 1 in the decoder, no resampling.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False,
                 norm: str = "bn") -> None:
        super().__init__()
        self.height, self.dilated = height, dilated
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1, norm)
        rates = [2 ** i for i in range(height)] if dilated else [1] * (height - 1) + [2]
        for i in range(1, height + 1):
            setattr(self, f"rebnconv{i}", REBNCONV(out_ch if i == 1 else mid_ch, mid_ch, rates[i - 1], norm))
        for i in range(height - 1, 0, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(mid_ch * 2, out_ch if i == 1 else mid_ch, rates[i - 1], norm))
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        feats, hx = [], hxin
        for i in range(1, self.height):
            hx = getattr(self, f"rebnconv{i}")(hx)
            feats.append(hx)
            if not self.dilated and i < self.height - 1:
                hx = self.pool(hx)
        hx = getattr(self, f"rebnconv{self.height}")(hx)
        for i in range(self.height - 1, 0, -1):
            skip = feats[i - 1]
            hx = getattr(self, f"rebnconv{i}d")(torch.cat([upsample_to(hx, skip), skip], dim=1))
        return hx + hxin


class U2NetP(nn.Module):
    """U²-Net-P: ``model(image, trimap=None) -> {"alpha", "side_outputs", "aux_alphas"}``."""

    def __init__(self, in_ch: int = 3, mid_ch: int = 16, ch: int = 64, norm: str = "bn") -> None:
        super().__init__()
        self.normalize = ImageNetNormalize()
        self.stage1 = RSU(7, in_ch, mid_ch, ch, norm=norm)
        self.stage2 = RSU(6, ch, mid_ch, ch, norm=norm)
        self.stage3 = RSU(5, ch, mid_ch, ch, norm=norm)
        self.stage4 = RSU(4, ch, mid_ch, ch, norm=norm)
        self.stage5 = RSU(4, ch, mid_ch, ch, dilated=True, norm=norm)
        self.stage6 = RSU(4, ch, mid_ch, ch, dilated=True, norm=norm)
        self.stage5d = RSU(4, 2 * ch, mid_ch, ch, dilated=True, norm=norm)
        self.stage4d = RSU(4, 2 * ch, mid_ch, ch, norm=norm)
        self.stage3d = RSU(5, 2 * ch, mid_ch, ch, norm=norm)
        self.stage2d = RSU(6, 2 * ch, mid_ch, ch, norm=norm)
        self.stage1d = RSU(7, 2 * ch, mid_ch, ch, norm=norm)
        for i in range(1, 7):
            setattr(self, f"side{i}", nn.Conv2d(ch, 1, 3, padding=1))
        self.outconv = nn.Conv2d(6, 1, 1)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    @classmethod
    def from_config(cls, cfg: "ModelConfig") -> "U2NetP":
        model = cls(norm=cfg.norm)
        if not cfg.pretrained:
            return model
        if cfg.weights_path:
            sd = load_state_dict_file(cfg.weights_path) if _exists(cfg.weights_path) else None
            if sd is None:
                warnings.warn(f"model.weights_path {cfg.weights_path!r} does not exist; u2netp starts "
                              "from random initialisation", PretrainedWeightsWarning, stacklevel=2)
            else:
                load_matching(model, sd, source=f"U²-Net-P weights {cfg.weights_path}")
        else:
            warnings.warn("u2netp has no ImageNet backbone to download; it starts from random "
                          "initialisation (set model.pretrained=false to silence this, or "
                          "model.weights_path to the authors' u2netp.pth)", PretrainedWeightsWarning,
                          stacklevel=2)
        return model

    def forward(self, image: torch.Tensor, trimap: torch.Tensor | None = None) -> dict:
        image, _ = prepare_inputs(image, None, model="u2netp", use_trimap=False)
        x = self.normalize(image)
        hx1 = self.stage1(x)
        hx2 = self.stage2(self.pool(hx1))
        hx3 = self.stage3(self.pool(hx2))
        hx4 = self.stage4(self.pool(hx3))
        hx5 = self.stage5(self.pool(hx4))
        hx6 = self.stage6(self.pool(hx5))
        hx5d = self.stage5d(torch.cat([upsample_to(hx6, hx5), hx5], dim=1))
        hx4d = self.stage4d(torch.cat([upsample_to(hx5d, hx4), hx4], dim=1))
        hx3d = self.stage3d(torch.cat([upsample_to(hx4d, hx3), hx3], dim=1))
        hx2d = self.stage2d(torch.cat([upsample_to(hx3d, hx2), hx2], dim=1))
        hx1d = self.stage1d(torch.cat([upsample_to(hx2d, hx1), hx1], dim=1))
        sides = [upsample_to(getattr(self, f"side{i}")(h), image)
                 for i, h in enumerate((hx1d, hx2d, hx3d, hx4d, hx5d, hx6), start=1)]
        fused = self.outconv(torch.cat(sides, dim=1))
        side_alphas = [alpha_from_logits(s) for s in sides]
        return {"alpha": alpha_from_logits(fused), "side_outputs": side_alphas, "aux_alphas": side_alphas}


def _exists(path: str) -> bool:
    return Path(path).expanduser().is_file()

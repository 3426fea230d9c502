"""AlphaGAN (Lutz, Amplianitis & Smolić, BMVC 2018): the generator and a PatchGAN discriminator.

Generator = ResNet encoder (4-channel input: ImageNet-normalised RGB + trimap) with dilated last
blocks -> ASPP -> a small decoder with skip connections, max-unpooling and an RGB shortcut ->
sigmoid alpha. Discriminator = a PatchGAN over (composite RGB, trimap).

::

    image (N,3,H,W) [0,1] ──normalise──┐
    trimap (N,1,H,W) {0,.5,1} ─────────┴─cat─> conv1/2 ─> stem (H/2, 64) ─maxpool(idx)─> layer1 (H/4)
        ─> layer2 (H/8) ─> layer3, layer4 (dilated: H/8 at OS8, H/16 at OS16) ─> ASPP (256)
    decoder: up to H/4 ⊕ 1x1(layer1) ─> 2 convs ─> max-unpool with the stem's pool indices (H/2)
             ⊕ 1x1(stem) ─> 2 convs ─> bilinear x2 (H) ⊕ normalised RGB ─> 3 convs ─> sigmoid

Where the paper is ambiguous, this implementation chooses:

- **Encoder input**: RGB is ImageNet-normalised inside the model; the trimap channel is fed as is
  ({0, 0.5, 1}). When ImageNet weights are loaded the 4th-channel filters of conv1 start at zero
  (the network initially behaves like the pretrained RGB model); with random init they are
  Kaiming-initialised like the rest.
- **Dilation**: output stride 8 dilates layer3 (2) and layer4 (4); output stride 16 dilates layer4
  (2), exactly torchvision's ``replace_stride_with_dilation`` for Bottleneck ResNets. For the
  BasicBlock ResNets (18/34), which torchvision refuses to dilate, the same rule is applied by hand:
  the first block of a dilated stage keeps the previous dilation (and loses its stride), later
  blocks use the new one. The weights are unchanged, so ImageNet state dicts load the same way.
- **ASPP**: DeepLabv3-style, 1x1 + three 3x3 atrous branches (``model.aspp_rates`` at OS16,
  doubled at OS8) + image pooling, 256 channels, no dropout. The image-pooling branch has a bias and
  no norm layer, so batch size 1 trains with BatchNorm.
- **Decoder**: the paper describes skip connections from early encoder stages, unpooling with the
  encoder's max-pool indices and feeding the RGB image before the final convolutions, without all
  widths. We use: ASPP output bilinearly upsampled to H/4, concatenated with a 48-channel 1x1
  projection of layer1 (DeepLabv3+ style), two 3x3 convs (256 -> 64); max-unpooling with the stem
  max-pool indices to H/2, concatenated with a 32-channel projection of the stem, two 3x3 convs (64);
  bilinear x2 to full resolution, concatenated with the normalised RGB image, 3x3 convs 32 -> 32 -> 1.
- **Unpooling**: the stem's 3x3 / stride-2 max-pool has overlapping windows, so two pooled cells can
  point at the same pixel. We unpool with the exact transpose of max-pooling (values summed there;
  :func:`mattingkit.models.common.unpool`, torch's max-pool backward kernel), which works under
  ``torch.use_deterministic_algorithms``; ``F.max_unpool2d`` keeps an arbitrary one and is flagged
  nondeterministic.
- **Norm**: ``bn`` (BatchNorm) or ``gn`` (GroupNorm, largest divisor of C that is <= 32 groups),
  applied everywhere, including inside the encoder (pretrained BN scale/shift are copied into GN).
- **Output**: sigmoid computed in float32, so ``alpha`` is float32 even under autocast. Known trimap
  regions are *not* overwritten here (that is the loss's / inference's job).
- **Guide** (``model.guide``, not in the paper; the ``cpu`` recipe's): with ``closed_form`` (or
  ``knn``) the model takes the classical matting of its input as an **input**,
  ``forward(image, trimap, guide)`` (:func:`solve_guide`: :func:`mattingkit.baselines.run_baseline` on
  the host), feeds it to the encoder as a 5th channel and predicts a **residual**:
  ``alpha = clamp(guide + head(x), 0, 1)`` with the head initialised to zero, so an untrained guided
  model *is* the classical solver and training learns only where it is wrong. The output dict then also
  holds ``guide``. ``forward`` never solves: the data workers solve each training crop
  (:mod:`mattingkit.data.datasets`) and :mod:`mattingkit.infer` solves each image once, at full
  resolution (the flip TTA flips it; every tile and statistics pass crops it). The solve is global and
  grows faster than the pixels: measured on a loaded 2-core CPU 256² 1.5 s, 512² 5.8 s (1.1 GB peak
  RSS), 1024² 17 s (1.9 GB) (``PYTHONPATH=. python benchmarks/guide_solve.py``; docs/training.md).
- **Discriminator**: pix2pix's NLayerDiscriminator: 4x4 convs, stride 2 for ``disc_layers`` layers
  (width doubling up to 8x ``disc_channels``), then two stride-1 4x4 convs to one logit map;
  LeakyReLU 0.2; norm after every conv but the first and the last (``model.norm``); with
  ``disc_spectral_norm`` every conv is spectrally normalised and the norm layers are dropped. The
  4 input channels (composite RGB in [0, 1], trimap) are mapped to [-1, 1].

Example:
    >>> import torch
    >>> from mattingkit.config import ModelConfig
    >>> g = AlphaGANGenerator.from_config(ModelConfig(backbone="resnet18", pretrained=False))
    >>> out = g(torch.rand(1, 3, 64, 64), torch.full((1, 1, 64, 64), 0.5))
    >>> tuple(out["alpha"].shape)
    (1, 1, 64, 64)
    >>> cf = AlphaGANGenerator.from_config(ModelConfig(backbone="resnet18", pretrained=False, guide="closed_form"))
    >>> img, tri = torch.rand(1, 3, 64, 64), torch.full((1, 1, 64, 64), 0.5)
    >>> out = cf(img, tri, guide=guides(cf, img, tri))   # untrained: the solver's alpha (all unknown: 0.5)
    >>> float(out["alpha"].mean().detach()), guide_method(cf)
    (0.5, 'closed_form')
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torchvision
from torch import nn

from ..baselines import SOLVERS, run_baseline
from ..names import BACKBONES, GUIDES, check_keys
from ..tiling import InferGeometry
from .common import (
    ImageNetNormalize,
    alpha_from_logits,
    conv_norm_act,
    convert_bn_to_gn,
    expand_input_channels,
    init_weights,
    load_matching,
    make_norm,
    prepare_inputs,
    torchvision_state_dict,
    unpool,
    upsample_to,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ModelConfig

#: ``model.backbone`` choices: torchvision's constructors of these names.
RESNETS = BACKBONES["alphagan"]
# model.guide (GUIDES): no guide, or a classical solver of mattingkit.baselines.SOLVERS
check_keys("model.guide", ("none", *SOLVERS), GUIDES)
#: Encoder + decoder margin added to the widest ASPP tap for the generator's tile context.
TILE_CONTEXT_MARGIN = 256


def solve_guide(method: str, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """The guide of a ``model.guide=method`` model for one image, solved on the host: float32 ``HxW`` alpha
    of the classical ``method`` (:func:`mattingkit.baselines.run_baseline`; an all-unknown trimap gives
    0.5). ``image`` float ``HxWx3`` in [0, 1], ``trimap`` ``HxW`` in {0, .5, 1}. The one place a guide is
    computed: the data workers call it per training crop, :func:`guides` per predicted image.

    Example:
        >>> tri = np.zeros((32, 32), np.float32); tri[:, 8:24] = 0.5; tri[:, 24:] = 1
        >>> g = solve_guide("closed_form", np.repeat(tri[..., None], 3, 2), tri)
        >>> g.shape, g.dtype, float(g[0, 0]), float(g[0, 31])
        ((32, 32), dtype('float32'), 0.0, 1.0)
    """
    return run_baseline(method, image, trimap, strict=False).alpha


def guide_method(model: nn.Module) -> str | None:
    """The classical method a model wants as its guide input (through DataParallel / DDP / compile
    wrappers), ``None`` for a model without one.

    Example:
        >>> guide_method(torch.nn.Identity()) is None
        True
    """
    method = getattr(_unwrapped(model), "guide", None)
    return method if isinstance(method, str) and method != "none" else None


def _unwrapped(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def guides(model: nn.Module, image: torch.Tensor, trimap: torch.Tensor | None) -> torch.Tensor | None:
    """The guide input of ``model`` for a batch: ``(N,1,H,W)`` float32 on ``image``'s device, one
    :func:`solve_guide` per image on the host (``None`` when the model takes no guide). ``image``
    (N,3,H,W) in [0, 1]; ``trimap`` (N,1,H,W) (``None``: all unknown).
    """
    method = guide_method(model)
    if method is None:
        return None
    if trimap is None:
        trimap = image.new_full((image.shape[0], 1, *image.shape[2:]), 0.5)
    imgs = image.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    tris = trimap.detach().float()[:, 0].cpu().numpy()
    out = [torch.from_numpy(solve_guide(method, im, tr)) for im, tr in zip(imgs, tris)]
    return torch.stack(out)[:, None].to(image.device)


def _dilate_basic_layer(layer: nn.Sequential, previous: int, dilation: int) -> None:
    """Turn a strided BasicBlock stage into a dilated one (what torchvision does for Bottleneck)."""
    for i, block in enumerate(layer):
        d = previous if i == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.stride = (1, 1)
            conv.dilation = (d, d)
            conv.padding = (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        block.stride = 1


class ResNetEncoder(nn.Module):
    """torchvision ResNet with an N-channel conv1, dilated last stages and pool indices.

    ``forward`` returns a dict: ``stem`` (H/2, 64 ch), ``indices`` (stem max-pool indices),
    ``layer1`` (H/4), ``out`` (H/output_stride).
    """

    def __init__(self, arch: str = "resnet50", output_stride: int = 8, norm: str = "bn",
                 in_channels: int = 4, pretrained: bool = False,
                 weights_path: str | None = None) -> None:
        super().__init__()
        if arch not in RESNETS:
            raise ValueError(f"model.backbone must be one of {', '.join(RESNETS)} for alphagan, got {arch!r}")
        if output_stride not in (8, 16):
            raise ValueError(f"model.output_stride must be 8 or 16, got {output_stride}")
        bottleneck = arch == "resnet50"
        ctor = getattr(torchvision.models, arch)
        if bottleneck:
            net = ctor(weights=None, replace_stride_with_dilation=[False, output_stride == 8, True])
        else:
            net = ctor(weights=None)
        self.pretrained_loaded = False
        if pretrained:
            sd = torchvision_state_dict(arch, weights_path)
            if sd is not None:
                load_matching(net, sd, source=f"ImageNet weights for {arch}"
                              + (f" ({weights_path})" if weights_path else ""),
                              ignore_prefixes=("fc.",))
                self.pretrained_loaded = True
        if not bottleneck:
            if output_stride == 8:
                _dilate_basic_layer(net.layer3, 1, 2)
                _dilate_basic_layer(net.layer4, 2, 4)
            else:
                _dilate_basic_layer(net.layer4, 1, 2)
        self.conv1 = expand_input_channels(net.conv1, in_channels, zero_new=self.pretrained_loaded)
        self.bn1, self.relu = net.bn1, net.relu
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, return_indices=True)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stem_channels = 64
        self.skip_channels = 256 if bottleneck else 64
        self.out_channels = 2048 if bottleneck else 512
        self.output_stride = output_stride
        if norm == "gn":
            convert_bn_to_gn(self)
        elif norm != "bn":
            raise ValueError(f"model.norm must be 'bn' or 'gn', got {norm!r}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        pooled, indices = self.maxpool(stem)
        l1 = self.layer1(pooled)
        out = self.layer4(self.layer3(self.layer2(l1)))
        return {"stem": stem, "indices": indices, "layer1": l1, "out": out}


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): 1x1, atrous 3x3 per rate, image pooling."""

    def __init__(self, in_channels: int, rates: Sequence[int], channels: int = 256,
                 norm: str = "bn") -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_norm_act(in_channels, channels, 1, norm)]
            + [conv_norm_act(in_channels, channels, 3, norm, dilation=int(r)) for r in rates]
        )
        # No norm layer on the 1x1 pooled map: BatchNorm cannot normalise one value per channel.
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1, bias=True), nn.ReLU(inplace=True)
        )
        self.project = conv_norm_act(channels * (len(rates) + 2), channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x)
        outs.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]).to(outs[0].dtype))
        return self.project(torch.cat(outs, dim=1))


class AlphaGANGenerator(nn.Module):
    """AlphaGAN generator: ``model(image, trimap) -> {"alpha": (N,1,H,W) float32 in [0,1]}``."""

    def __init__(self, backbone: str = "resnet50", output_stride: int = 8,
                 aspp_rates: Sequence[int] = (6, 12, 18), norm: str = "bn", use_trimap: bool = True,
                 pretrained: bool = False, weights_path: str | None = None, guide: str = "none") -> None:
        super().__init__()
        if guide not in GUIDES:
            raise ValueError(f"model.guide must be one of {', '.join(GUIDES)}, got {guide!r}")
        self.use_trimap = use_trimap
        #: the classical method whose alpha this model takes as its ``guide`` input (:func:`solve_guide`)
        self.guide = guide
        self.normalize = ImageNetNormalize()
        self.encoder = ResNetEncoder(backbone, output_stride, norm, in_channels=4 + (guide != "none"),
                                     pretrained=pretrained, weights_path=weights_path)
        scale = 2 if output_stride == 8 else 1
        self.aspp_rates = [int(r) * scale for r in aspp_rates]
        #: Context (px) a tile needs around the pixels it predicts for tiled == untiled inference
        #: (mattingkit.infer, tile_overlap="auto"): the widest ASPP tap (rate x stride = 288 px by
        #: default) plus an encoder/decoder margin; measured on alphamatting.com photos (random init,
        #: resnet18/50, OS8/16) the error falls below 1/255 at 480 px, see tests/test_infer.py.
        self.infer_geometry = InferGeometry(
            tile_context=max(self.aspp_rates, default=0) * output_stride + TILE_CONTEXT_MARGIN)
        enc = self.encoder
        self.aspp = ASPP(enc.out_channels, self.aspp_rates, 256, norm)
        self.skip4 = conv_norm_act(enc.skip_channels, 48, 1, norm)
        self.dec4 = nn.Sequential(conv_norm_act(256 + 48, 256, 3, norm),
                                  conv_norm_act(256, enc.stem_channels, 3, norm))
        self.skip2 = conv_norm_act(enc.stem_channels, 32, 1, norm)
        self.dec2 = nn.Sequential(conv_norm_act(enc.stem_channels + 32, 64, 3, norm),
                                  conv_norm_act(64, 64, 3, norm))
        self.dec1 = nn.Sequential(conv_norm_act(64 + 3, 32, 3, norm), conv_norm_act(32, 32, 3, norm))
        self.head = nn.Conv2d(32, 1, 3, padding=1)
        for m in (self.aspp, self.skip4, self.dec4, self.skip2, self.dec2, self.dec1, self.head):
            init_weights(m)
        if guide != "none":  # start as the classical solver: a zero residual
            nn.init.zeros_(self.head.weight)

    @classmethod
    def from_config(cls, cfg: "ModelConfig") -> "AlphaGANGenerator":
        return cls(backbone=cfg.backbone, output_stride=cfg.output_stride, aspp_rates=cfg.aspp_rates,
                   norm=cfg.norm, use_trimap=cfg.use_trimap, pretrained=cfg.pretrained,
                   weights_path=cfg.weights_path, guide=cfg.guide)

    def forward(self, image: torch.Tensor, trimap: torch.Tensor | None = None,
                guide: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        image, trimap = prepare_inputs(image, trimap, model="alphagan", use_trimap=self.use_trimap)
        rgb = self.normalize(image)
        inputs = [rgb, trimap]
        if self.guide != "none":
            if guide is None:
                raise ValueError(
                    f"alphagan with model.guide={self.guide}: forward needs guide= (N,1,H,W), the {self.guide} "
                    "alpha of its input, computed on the host by mattingkit.models.alphagan.solve_guide: "
                    "mattingkit.infer does it once per image, the data workers once per training crop")
            if guide.shape != trimap.shape:
                raise ValueError(f"alphagan: guide must be (N, 1, H, W) = {tuple(trimap.shape)}, "
                                 f"got {tuple(guide.shape)}")
            guide = guide.float()
            inputs.append(guide.to(rgb.dtype))
        feats = self.encoder(torch.cat(inputs, dim=1))
        x = upsample_to(self.aspp(feats["out"]), feats["layer1"])
        x = self.dec4(torch.cat([x, self.skip4(feats["layer1"])], dim=1))
        stem = feats["stem"]
        x = unpool(x, feats["indices"], stem.shape[-2:], kernel_size=3, stride=2, padding=1)
        x = self.dec2(torch.cat([x, self.skip2(stem)], dim=1))
        x = upsample_to(x, image)
        x = self.dec1(torch.cat([x, rgb.to(x.dtype)], dim=1))
        if self.guide != "none":
            return {"alpha": (guide + self.head(x).float()).clamp(0, 1), "guide": guide}
        return {"alpha": alpha_from_logits(self.head(x))}


class PatchGANDiscriminator(nn.Module):
    """PatchGAN over ``cat(composite RGB, trimap)`` -> a logit map (N, 1, h, w)."""

    def __init__(self, in_channels: int = 4, channels: int = 64, layers: int = 3, norm: str = "bn",
                 spectral_norm: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"model.disc_layers must be >= 1, got {layers}")
        if channels < 1:
            raise ValueError(f"model.disc_channels must be >= 1, got {channels}")
        self.in_channels, self.layers = in_channels, layers
        use_norm = "none" if spectral_norm else norm
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)

        def block(cin: int, cout: int, stride: int, normed: bool) -> list[nn.Module]:
            conv = sn(nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=not normed or spectral_norm))
            mods: list[nn.Module] = [conv]
            if normed:
                mods.append(make_norm(use_norm, cout))
            mods.append(nn.LeakyReLU(0.2, inplace=True))
            return mods

        mods = block(in_channels, channels, 2, normed=False)
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2 ** n, 8)
            mods += block(channels * prev, channels * mult, 2, normed=True)
        prev, mult = mult, min(2 ** layers, 8)
        mods += block(channels * prev, channels * mult, 1, normed=True)
        mods.append(sn(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not spectral_norm:
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg: "ModelConfig") -> "PatchGANDiscriminator":
        return cls(in_channels=4, channels=cfg.disc_channels, layers=cfg.disc_layers, norm=cfg.norm,
                   spectral_norm=cfg.disc_spectral_norm)

    def min_size(self) -> int:
        """The smallest input side that still gives a non-empty logit map."""
        return 3 * 2 ** self.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchGAN: input must be (N, {self.in_channels}, H, W) = cat(composite RGB, "
                             f"trimap), got {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_size():
            raise ValueError(f"PatchGAN with {self.layers} layers needs inputs of at least "
                             f"{self.min_size()}x{self.min_size()}, got {x.shape[2]}x{x.shape[3]}")
        return self.net(x * 2.0 - 1.0)

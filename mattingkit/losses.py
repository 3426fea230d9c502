"""Matting losses as small pure functions, combined by :func:`matting_loss` into named terms.

Term functions take float tensors (N, C, H, W) and return a scalar tensor; :func:`matting_loss` and
:func:`gan_loss_d` return a ``dict[str, Tensor]`` of *unweighted* named terms plus ``"total"``
(the weighted sum that is back-propagated). Everything is computed in float32 with autocast disabled,
so the losses behave the same under bf16/fp16 training.

Regions. ``region="unknown"`` averages over the trimap's unknown pixels (trimap == 0.5), normalised
by their count (a crop without unknown pixels gives 0, not NaN); ``region="all"`` (trimap-free
recipes) averages over every pixel. Multi-channel errors (composition) are averaged over channels,
then over the region's pixels. The gradient and Laplacian terms look at neighbourhoods, so with
``region="unknown"`` they are computed on :func:`replace_known` versions of prediction and ground
truth (alpha = trimap where the trimap is known): no gradient ever reaches known pixels.

The formulas:

- Charbonnier ``rho(d) = sqrt(d^2 + eps^2)`` (``loss.eps``, default 1e-6), alpha-prediction loss
  ``mean_region rho(a_pred - a_gt)`` (DIM / AlphaGAN).
- Composition loss ``mean_region mean_c rho(C(a_pred) - C(a_gt))`` with
  ``C(a) = compose.composite(F, B, a)``: the target is the composite of the batch's own F and B
  with the true alpha — the very image the discriminator sees as "real".
- Gradient loss ``mean_region |Sx(a_pred) - Sx(a_gt)| + |Sy(a_pred) - Sy(a_gt)|`` with Sobel
  kernels scaled by 1/8 (a unit ramp has gradient 1).
- Laplacian loss ``sum_{i=0..4} 2^i * |L_i(a_pred) - L_i(a_gt)|_1 / n_i`` over a 5-level
  Laplacian pyramid (5x5 binomial Gaussian, reflect padding; 4 band-pass levels + the low-pass
  residual), ``n_i`` the region's pixel count at level i (FBA / GCA style).
- Competition (trimap-free) family, after DEsterossa/Ecom_CV: plain MSE; thin-structure MSE
  weighted by ``1 + 4 * thin`` where ``thin = obj - erode(obj, 5x5)``, ``obj = a_gt > 0.1`` (pixels
  within two of an object boundary: thin parts vanish entirely under erosion); background penalty
  ``mean_bg e^2 + 2 * mean_bg relu(e - 0.02)``, ``e = a_pred - a_gt``, over ``bg = a_gt <= 0.05``
  (fog on the background; ``e`` is the prediction itself where gt is 0, and a perfect prediction
  costs 0);
  gradient-weighted MSE with weight ``1 + 4 * clamp(2 |S(a_gt)|, 0, 1)`` (a hard
  edge pixel gets weight 5).
- GAN losses (``bce`` | ``lsgan`` | ``hinge``) on logit maps; the discriminator loss is
  ``0.5 * (real term + fake term)`` for all kinds.

Example:
    >>> import torch
    >>> from mattingkit.config import LossConfig
    >>> gt = torch.zeros(1, 1, 8, 8); trimap = torch.full_like(gt, 0.5)
    >>> pred = {"alpha": gt + 0.1}
    >>> terms = matting_loss(pred, {"alpha": gt, "trimap": trimap}, LossConfig(comp=0.0))
    >>> round(terms["alpha"].item(), 4), round(terms["total"].item(), 4)
    (0.1, 0.05)
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F

from .compose import composite
from .device import HOST
from .names import GAN_KINDS, REGIONS  # the choices, torch-free for the config check

if TYPE_CHECKING:  # pragma: no cover
    from .config import LossConfig

__all__ = [
    "charbonnier", "unknown_mask", "region_mask", "masked_mean", "replace_known", "alpha_loss",
    "composition_loss", "sobel", "gradient_loss", "laplacian_pyramid", "laplacian_loss", "mse_loss",
    "thin_map", "thin_mse_loss", "bg_penalty_loss", "grad_mse_loss", "gan_loss_g", "gan_loss_d",
    "d_accuracy", "discriminator_accuracy", "discriminator_inputs", "matting_loss",
]


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype != torch.float32 else x


def _fp32_region(x: torch.Tensor):
    """Disable autocast for the loss maths (convs in Sobel / pyramids must stay float32)."""
    device = x.device.type
    try:
        enabled = torch.is_autocast_enabled(device)
    except TypeError:  # torch < 2.4: no device argument
        enabled = torch.is_autocast_cpu_enabled() if device == HOST.type else torch.is_autocast_enabled()
    if enabled:
        return torch.autocast(device_type=device, enabled=False)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------
def charbonnier(diff: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Elementwise ``sqrt(diff^2 + eps^2)``, a smooth L1.

    Example:
        >>> charbonnier(torch.tensor([0.0, 3.0]), eps=4.0).tolist()
        [4.0, 5.0]
    """
    return torch.sqrt(diff * diff + eps * eps)


def unknown_mask(trimap: torch.Tensor) -> torch.Tensor:
    """Float mask (same shape) of the unknown region, trimap == 0.5 (tolerant to rounding).

    Example:
        >>> unknown_mask(torch.tensor([0.0, 0.5, 1.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    return ((trimap > 0.25) & (trimap < 0.75)).to(torch.float32)


def region_mask(batch: Mapping[str, torch.Tensor], region: str) -> torch.Tensor:
    """(N, 1, H, W) float mask: ``unknown`` (batch["unknown"] or from batch["trimap"]) or ``all``.

    Example:
        >>> b = {"alpha": torch.zeros(1, 1, 1, 3), "trimap": torch.tensor([[[[0.0, 0.5, 1.0]]]])}
        >>> region_mask(b, "unknown").flatten().tolist(), region_mask(b, "all").flatten().tolist()
        ([0.0, 1.0, 0.0], [1.0, 1.0, 1.0])
    """
    if region not in REGIONS:
        raise ValueError(f"loss.region must be one of {', '.join(REGIONS)}, got {region!r}")
    alpha = batch["alpha"]
    if region == "all":
        return torch.ones_like(alpha, dtype=torch.float32)
    if batch.get("unknown") is not None:
        return _f32(batch["unknown"])
    if batch.get("trimap") is None:
        raise ValueError("loss.region='unknown' needs batch['trimap'] (or batch['unknown']); "
                         "use loss.region=all for trimap-free training")
    return unknown_mask(batch["trimap"])


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sum(values * mask) / (sum(mask) * C)``: per-pixel mean over channels, then over the mask.

    ``mask`` is (N, 1, H, W) (binary or soft weights); ``None`` means every pixel. An empty mask
    gives 0.

    Example:
        >>> v = torch.tensor([[[[1.0, 3.0]]]]); m = torch.tensor([[[[0.0, 1.0]]]])
        >>> masked_mean(v, m).item()
        3.0
    """
    if mask is None:
        return values.mean()
    c = values.shape[1]
    return (values * mask).sum() / (mask.sum() * c).clamp_min(1e-8)


def replace_known(alpha: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """``alpha`` inside the unknown region, the trimap value (0 or 1) where the trimap is known.

    Example:
        >>> replace_known(torch.tensor([0.3, 0.3, 0.3]), torch.tensor([0.0, 0.5, 1.0])).tolist()
        [0.0, 0.30000001192092896, 1.0]
    """
    return torch.where(unknown_mask(trimap) > 0, alpha, trimap.to(alpha.dtype))


# --------------------------------------------------------------------------------------------
# Alpha / composition
# --------------------------------------------------------------------------------------------
def alpha_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, mask: torch.Tensor | None = None,
               eps: float = 1e-6) -> torch.Tensor:
    """Charbonnier alpha-prediction loss averaged over ``mask``.

    Example:
        >>> gt = torch.zeros(1, 1, 2, 2)
        >>> round(alpha_loss(gt + 0.3, gt, eps=0.4).item(), 6)
        0.5
    """
    with _fp32_region(alpha_pred):
        return masked_mean(charbonnier(_f32(alpha_pred) - _f32(alpha_gt), eps), mask)


def composition_loss(alpha_pred: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor,
                     alpha_gt: torch.Tensor, mask: torch.Tensor | None = None,
                     eps: float = 1e-6) -> torch.Tensor:
    """Charbonnier distance between ``composite(fg, bg, alpha_pred)`` and ``composite(fg, bg, alpha_gt)``.

    Example:
        >>> fg = torch.ones(1, 3, 2, 2); bg = torch.zeros(1, 3, 2, 2); gt = torch.zeros(1, 1, 2, 2)
        >>> round(composition_loss(gt + 0.3, fg, bg, gt, eps=0.4).item(), 6)
        0.5
    """
    with _fp32_region(alpha_pred):
        fg, bg = _f32(fg), _f32(bg)
        diff = composite(fg, bg, _f32(alpha_pred)) - composite(fg, bg, _f32(alpha_gt))
        return masked_mean(charbonnier(diff, eps), mask)


# --------------------------------------------------------------------------------------------
# Gradient / Laplacian
# --------------------------------------------------------------------------------------------
def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel x / y derivatives of a (N, C, H, W) tensor, kernels / 8, replicate padding.

    Example:
        >>> ramp = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5)
        >>> sobel(ramp)[0][0, 0, 2].tolist()
        [0.5, 1.0, 1.0, 1.0, 0.5]
    """
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device) / 8.0
    k = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    n, c, h, w = x.shape
    xp = F.pad(_f32(x).reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(xp, k).reshape(n, c, 2, h, w)
    return g[:, :, 0], g[:, :, 1]


def gradient_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between Sobel gradients, averaged over ``mask``.

    Example:
        >>> ramp = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5) * 0.1
        >>> round(gradient_loss(ramp, torch.zeros_like(ramp)).item(), 6)  # 0.1 inside, 0.05 at 2 edges
        0.08
    """
    with _fp32_region(alpha_pred):
        px, py = sobel(alpha_pred)
        gx, gy = sobel(alpha_gt)
        return masked_mean((px - gx).abs() + (py - gy).abs(), mask)


def _gauss(x: torch.Tensor) -> torch.Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16.0
    k = (k1[:, None] * k1[None, :]).view(1, 1, 5, 5)
    n, c, h, w = x.shape
    mode = "reflect" if min(h, w) > 2 else "replicate"
    xp = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode=mode)
    return F.conv2d(xp, k).reshape(n, c, h, w)


def laplacian_pyramid(x: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
    """``levels`` tensors: ``levels - 1`` band-pass images (fine to coarse) + the low-pass residual.

    Odd sizes are padded (replicate) to even before each reduction. Expanding the residual and adding
    the bands back level by level reconstructs ``x`` exactly.

    Example:
        >>> [tuple(p.shape[-2:]) for p in laplacian_pyramid(torch.rand(1, 1, 32, 48), 3)]
        [(32, 48), (16, 24), (8, 12)]
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    pyramid, cur = [], _f32(x)
    for _ in range(levels - 1):
        h, w = cur.shape[-2:]
        if h % 2 or w % 2:
            cur = F.pad(cur, (0, w % 2, 0, h % 2), mode="replicate")
        down = _gauss(cur)[..., ::2, ::2]
        up = torch.zeros_like(cur)
        up[..., ::2, ::2] = down * 4.0
        pyramid.append(cur - _gauss(up))
        cur = down
    pyramid.append(cur)
    return pyramid


def laplacian_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, mask: torch.Tensor | None = None,
                   levels: int = 5) -> torch.Tensor:
    """``sum_i 2^i * sum|L_i(pred) - L_i(gt)| / n_i``, ``n_i`` = region pixels at level i's scale.

    With ``mask=None`` every pixel counts (each level is a plain mean). Pass :func:`replace_known`
    inputs when only the unknown region should matter.

    Example:
        >>> gt = torch.zeros(1, 1, 32, 32)
        >>> round(laplacian_loss(gt + 0.01, gt).item(), 6)  # a constant offset: residual only, 2^4 * 0.01
        0.16
    """
    with _fp32_region(alpha_pred):
        diff = _f32(alpha_pred) - _f32(alpha_gt)
        n0 = diff.new_tensor(float(diff[:, :1].numel())) if mask is None else _f32(mask).sum()
        full = diff.shape[-2] * diff.shape[-1]
        total = diff.new_zeros(())
        for i, band in enumerate(laplacian_pyramid(diff, levels)):
            n_i = (n0 * (band.shape[-2] * band.shape[-1] / full) * diff.shape[1]).clamp_min(1e-8)
            total = total + (2.0 ** i) * band.abs().sum() / n_i
        return total


# --------------------------------------------------------------------------------------------
# Competition (trimap-free) MSE family
# --------------------------------------------------------------------------------------------
def mse_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over ``mask`` (the competition metric, on [0, 1] alphas).

    Example:
        >>> round(mse_loss(torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2)).item(), 6)
        0.25
    """
    with _fp32_region(alpha_pred):
        return masked_mean((_f32(alpha_pred) - _f32(alpha_gt)) ** 2, mask)


def thin_map(alpha_gt: torch.Tensor, kernel: int = 5, threshold: float = 0.1) -> torch.Tensor:
    """Object pixels that a ``kernel`` x ``kernel`` erosion removes: boundaries and thin structures.

    Example:
        >>> a = torch.zeros(1, 1, 9, 9); a[..., 4, :] = 1.0      # a one-pixel line
        >>> thin_map(a).sum().item()                            # all 9 line pixels are "thin"
        9.0
    """
    obj = (_f32(alpha_gt) > threshold).float()
    core = -F.max_pool2d(-obj, kernel, stride=1, padding=kernel // 2)
    return obj - core


def _weighted_mse(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, weight: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
    w = weight if mask is None else weight * mask
    return masked_mean((_f32(alpha_pred) - _f32(alpha_gt)) ** 2, w)


def thin_mse_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, mask: torch.Tensor | None = None,
                  thin_weight: float = 4.0, kernel: int = 5, threshold: float = 0.1) -> torch.Tensor:
    """MSE weighted by ``1 + thin_weight * thin_map(alpha_gt)`` (normalised by the weight sum).

    Example:
        >>> gt = torch.zeros(1, 1, 9, 9); gt[..., 4, :] = 1.0
        >>> round(thin_mse_loss(torch.zeros_like(gt), gt).item(), 6)  # 5*9 / (81 + 4*9)
        0.384615
    """
    with _fp32_region(alpha_pred):
        weight = 1.0 + thin_weight * thin_map(alpha_gt, kernel, threshold)
        return _weighted_mse(alpha_pred, alpha_gt, weight, mask)


def bg_penalty_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, mask: torch.Tensor | None = None,
                    bg_threshold: float = 0.05, margin: float = 0.02) -> torch.Tensor:
    """Fog on the background: ``mean_bg e^2 + 2 * mean_bg relu(e - margin)``, ``e = pred - gt``.

    ``bg = gt <= bg_threshold``; where gt is exactly 0 (almost all background) ``e`` is the
    prediction itself, and a perfect prediction costs nothing.

    Example:
        >>> gt = torch.zeros(1, 1, 2, 2)
        >>> round(bg_penalty_loss(gt + 0.1, gt).item(), 6)   # 0.01 + 2 * 0.08
        0.17
    """
    with _fp32_region(alpha_pred):
        bg = (_f32(alpha_gt) <= bg_threshold).float()
        if mask is not None:
            bg = bg * mask
        e = _f32(alpha_pred) - _f32(alpha_gt)
        return masked_mean(e * e, bg) + 2.0 * masked_mean(F.relu(e - margin), bg)


def grad_mse_loss(alpha_pred: torch.Tensor, alpha_gt: torch.Tensor, mask: torch.Tensor | None = None,
                  gain: float = 4.0) -> torch.Tensor:
    """MSE weighted by ``1 + gain * clamp(2 * |Sobel(alpha_gt)|, 0, 1)`` (edges count more).

    Example:
        >>> gt = torch.zeros(1, 1, 4, 4); gt[..., 2:] = 1.0   # a vertical step: columns 1, 2 are edge
        >>> round(grad_mse_loss(torch.zeros_like(gt), gt).item(), 6)  # (4*5 + 4*1) / (8*5 + 8*1)
        0.5
    """
    with _fp32_region(alpha_pred):
        gx, gy = sobel(alpha_gt)
        mag = torch.sqrt(gx * gx + gy * gy)
        weight = 1.0 + gain * (2.0 * mag).clamp(0.0, 1.0)
        return _weighted_mse(alpha_pred, alpha_gt, weight, mask)


# --------------------------------------------------------------------------------------------
# GAN
# --------------------------------------------------------------------------------------------
def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"loss.gan_type must be one of {', '.join(GAN_KINDS)}, got {kind!r}")


def gan_loss_g(fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Generator adversarial loss on the discriminator's logits for fake images.

    bce: ``BCE(fake, 1)``; lsgan: ``mean((fake - 1)^2)``; hinge: ``-mean(fake)``.

    Example:
        >>> round(gan_loss_g(torch.zeros(1, 1, 2, 2), "bce").item(), 6)  # log 2
        0.693147
    """
    _check_kind(kind)
    with _fp32_region(fake_logits):
        f = _f32(fake_logits)
        if kind == "bce":
            return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
        if kind == "lsgan":
            return ((f - 1.0) ** 2).mean()
        return -f.mean()


def gan_loss_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "bce") -> dict[str, torch.Tensor]:
    """Discriminator loss: ``{"d_real", "d_fake", "total" = 0.5 * (d_real + d_fake)}``.

    bce: ``BCE(real, 1)``, ``BCE(fake, 0)``; lsgan: ``mean((real - 1)^2)``, ``mean(fake^2)``;
    hinge: ``mean(relu(1 - real))``, ``mean(relu(1 + fake))``. Pass ``fake_logits`` computed from a
    detached fake input.

    Example:
        >>> d = gan_loss_d(torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -2.0), "hinge")
        >>> d["total"].item()
        0.0
    """
    _check_kind(kind)
    with _fp32_region(real_logits):
        r, f = _f32(real_logits), _f32(fake_logits)
        if kind == "bce":
            lr = F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
            lf = F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
        elif kind == "lsgan":
            lr, lf = ((r - 1.0) ** 2).mean(), (f ** 2).mean()
        else:
            lr, lf = F.relu(1.0 - r).mean(), F.relu(1.0 + f).mean()
        return {"d_real": lr, "d_fake": lf, "total": 0.5 * (lr + lf)}


def discriminator_accuracy(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor, kind: str = "bce") -> float:
    """How often D tells real from fake: ``0.5 * (share of real images judged real + share of fake images
    judged fake)``; 0.5 is chance, 1.0 a perfect critic. Logged beside D's losses: losses near ln 2 with
    accuracy near 0.5 mean D has learned nothing.

    PatchGAN logit maps ``(N, 1, h, w)`` are averaged per image first (the image's verdict): patches
    that see only known trimap regions are identical in the real and the fake input, so a per-patch
    count could never exceed 0.5 + half the share of patches that see the unknown band. 1-D inputs are
    counted element by element. The threshold is where ``kind``'s loss puts the boundary: 0 for bce /
    hinge, 0.5 for lsgan (targets 1 and 0).

    Example:
        >>> discriminator_accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -0.5]))
        0.75
        >>> real = torch.tensor([[[[3.0, -1.0]]]])   # one image, two patches: mean 1.0 -> real
        >>> discriminator_accuracy(real, -real, "hinge"), discriminator_accuracy(real, real, "lsgan")
        (1.0, 0.5)
    """
    return float(d_accuracy(d_real_logits, d_fake_logits, kind))


def d_accuracy(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """:func:`discriminator_accuracy` as a tensor on the logits' device: the trainer logs it every step
    without waiting for the device.

    Example:
        >>> d_accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -0.5]))
        tensor(0.7500)
    """
    _check_kind(kind)
    t = 0.5 if kind == "lsgan" else 0.0

    def verdicts(x: torch.Tensor) -> torch.Tensor:
        x = _f32(x.detach())
        return x.reshape(x.shape[0], -1).mean(1) if x.ndim > 1 else x

    r, f = verdicts(d_real_logits), verdicts(d_fake_logits)
    if r.numel() == 0 or f.numel() == 0:
        raise ValueError("discriminator_accuracy needs non-empty real and fake logits")
    return 0.5 * ((r > t).float().mean() + (f < t).float().mean())


def discriminator_inputs(batch: Mapping[str, torch.Tensor], alpha_pred: torch.Tensor,
                         known_from_trimap: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's ``(real, fake)`` inputs, each ``cat(composite(F, B, alpha), trimap)``.

    ``real`` composes the batch's foreground and background with the ground-truth alpha, ``fake``
    with the predicted one (known trimap regions taken from the trimap when ``known_from_trimap``).
    Both use :func:`mattingkit.compose.composite`, so a perfect prediction gives identical inputs —
    unlike multiplying the foreground by the *true* alpha in the fake image, which leaks the answer.

    Example:
        >>> n = torch.zeros(1, 1, 4, 4)
        >>> b = {"fg": torch.ones(1, 3, 4, 4), "bg": torch.zeros(1, 3, 4, 4), "alpha": n + 0.5,
        ...      "trimap": n + 0.5}
        >>> real, fake = discriminator_inputs(b, n + 0.5)
        >>> bool(torch.equal(real, fake)), tuple(real.shape)
        (True, (1, 4, 4, 4))
    """
    for key in ("fg", "bg", "alpha", "trimap"):
        if batch.get(key) is None:
            raise ValueError(f"discriminator_inputs needs batch[{key!r}]")
    trimap = _f32(batch["trimap"])
    fg, bg = _f32(batch["fg"]), _f32(batch["bg"])
    alpha = _f32(alpha_pred)
    if known_from_trimap:
        alpha = replace_known(alpha, trimap)
    real = torch.cat([composite(fg, bg, _f32(batch["alpha"])), trimap], dim=1)
    fake = torch.cat([composite(fg, bg, alpha), trimap], dim=1)
    return real, fake


# --------------------------------------------------------------------------------------------
# The combination
# --------------------------------------------------------------------------------------------
PIXEL_TERMS = ("alpha", "comp", "mse", "thin_mse", "bg_penalty", "grad_mse")


def _pixel_terms(alpha: torch.Tensor, batch: Mapping[str, torch.Tensor], cfg: "LossConfig",
                 mask: torch.Tensor) -> dict[str, torch.Tensor]:
    gt = _f32(batch["alpha"])
    out: dict[str, torch.Tensor] = {}
    if cfg.alpha:
        out["alpha"] = alpha_loss(alpha, gt, mask, cfg.eps)
    if cfg.comp:
        if batch.get("fg") is None or batch.get("bg") is None:
            raise ValueError("loss.comp > 0 needs batch['fg'] and batch['bg']; set loss.comp=0 for "
                             "data without foreground/background layers")
        out["comp"] = composition_loss(alpha, batch["fg"], batch["bg"], gt, mask, cfg.eps)
    if cfg.mse:
        out["mse"] = mse_loss(alpha, gt, mask)
    if cfg.thin_mse:
        out["thin_mse"] = thin_mse_loss(alpha, gt, mask)
    if cfg.bg_penalty:
        out["bg_penalty"] = bg_penalty_loss(alpha, gt, mask)
    if cfg.grad_mse:
        out["grad_mse"] = grad_mse_loss(alpha, gt, mask)
    return out


def matting_loss(pred: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], cfg: "LossConfig",
                 fake_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every loss term ``cfg`` enables, unweighted, plus ``"total"`` = the weighted sum.

    Terms (present when their weight in ``cfg`` is non-zero): ``alpha``, ``comp``, ``grad``,
    ``laplacian``, ``mse``, ``thin_mse``, ``bg_penalty``, ``grad_mse``; ``aux`` (weight
    ``cfg.aux``): the weighted pixel terms (alpha, comp and the MSE family) averaged over the
    model's ``pred["aux_alphas"]`` (DIM's raw alpha, U²-Net's side outputs); ``gan`` (weight
    ``cfg.gan``) when ``fake_logits`` — the discriminator's logits on the fake input, *not*
    detached — is given.

    Args:
        pred: the model's output dict (``alpha``, optionally ``aux_alphas``).
        batch: the batch dict (``alpha``; ``trimap``/``unknown`` for region=unknown; ``fg``/``bg``
            for the composition loss).
        cfg: the :class:`mattingkit.config.LossConfig`.
        fake_logits: optional discriminator logits for the generator's adversarial term.

    Example:
        >>> import torch
        >>> from mattingkit.config import LossConfig
        >>> gt = torch.zeros(1, 1, 8, 8)
        >>> t = matting_loss({"alpha": gt + 0.5}, {"alpha": gt}, LossConfig(region="all", alpha=0,
        ...                  comp=0, mse=1.0))
        >>> sorted(t), t["total"].item()
        (['mse', 'total'], 0.25)
    """
    if cfg.gan_type not in GAN_KINDS:
        raise ValueError(f"loss.gan_type must be one of {', '.join(GAN_KINDS)}, got {cfg.gan_type!r}")
    if "alpha" not in pred:
        raise ValueError("matting_loss: pred must hold 'alpha' (the model's output dict)")
    if batch.get("alpha") is None:
        raise ValueError("matting_loss: batch must hold 'alpha' (the ground truth)")
    alpha = pred["alpha"]
    if alpha.shape != batch["alpha"].shape:
        raise ValueError(f"matting_loss: predicted alpha {tuple(alpha.shape)} and ground truth "
                         f"{tuple(batch['alpha'].shape)} differ in shape")
    with _fp32_region(alpha):
        mask = region_mask(batch, cfg.region)
        terms = _pixel_terms(alpha, batch, cfg, mask)
        weights = {name: float(getattr(cfg, name)) for name in PIXEL_TERMS}

        if cfg.grad or cfg.laplacian:
            gt = _f32(batch["alpha"])
            a = _f32(alpha)
            if cfg.region == "unknown":
                trimap = batch.get("trimap")
                if trimap is None:  # only the unknown mask is known: build a trimap-like map from it
                    trimap = torch.where(mask > 0, torch.full_like(gt, 0.5), (gt > 0.5).float())
                a, gt = replace_known(a, trimap), replace_known(gt, trimap)
            if cfg.grad:
                terms["grad"] = gradient_loss(a, gt, mask)
                weights["grad"] = float(cfg.grad)
            if cfg.laplacian:
                terms["laplacian"] = laplacian_loss(a, gt, None if cfg.region == "all" else mask)
                weights["laplacian"] = float(cfg.laplacian)

        aux_alphas: Sequence[torch.Tensor] = pred.get("aux_alphas") or []
        if cfg.aux and aux_alphas:
            aux_total = alpha.new_zeros((), dtype=torch.float32)
            for a in aux_alphas:
                sub = _pixel_terms(a, batch, cfg, mask)
                aux_total = aux_total + sum(weights[k] * v for k, v in sub.items())
            terms["aux"] = aux_total / len(aux_alphas)
            weights["aux"] = float(cfg.aux)

        if fake_logits is not None and cfg.gan:
            terms["gan"] = gan_loss_g(fake_logits, cfg.gan_type)
            weights["gan"] = float(cfg.gan)

        if not terms:
            raise ValueError("matting_loss: every loss weight is zero; enable at least one of "
                             "loss.alpha, comp, grad, laplacian, mse, thin_mse, bg_penalty, grad_mse")
        total = sum(weights[k] * v for k, v in terms.items())
        terms["total"] = total
    return terms

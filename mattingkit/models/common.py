"""Building blocks shared by the matting models: normalisation, norms, input checks, weight loading.

Pretrained ImageNet weights are always optional. :func:`torchvision_state_dict` looks, in order, at

1. ``weights_path`` (a torchvision state dict saved with ``torch.save(model.state_dict(), path)``,
   loaded with ``weights_only=True``),
2. torch hub's cache (``$TORCH_HOME/hub/checkpoints``), where torchvision keeps what it downloaded,
3. a download through torchvision's weights API, after a short reachability probe (a HEAD request
   in a daemon thread, bounded even when DNS hangs).

When none of them works the model keeps its random initialisation and one
:class:`PretrainedWeightsWarning` says why and how to fix it. Set ``MATTINGKIT_OFFLINE=1`` to skip
the network step entirely.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 8, 3)
    >>> expand_input_channels(conv, 4, zero_new=True).weight[:, 3].abs().sum().item()
    0.0
"""
from __future__ import annotations

import os
import socket
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..device import HOST

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PROBE_TIMEOUT = 4.0        # seconds for the reachability probe of the weights URL
DOWNLOAD_TIMEOUT = 30.0    # socket timeout while downloading (per blocking operation, not in total)


class PretrainedWeightsWarning(UserWarning):
    """Pretrained weights were requested but could not be loaded; the model uses random init."""


# --------------------------------------------------------------------------------------------
# Small modules
# --------------------------------------------------------------------------------------------
class ImageNetNormalize(nn.Module):
    """``(x - mean) / std`` with ImageNet statistics; input (N, 3, H, W) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest divisor of ``channels`` that is at most ``max_groups`` (GroupNorm groups).

    Example:
        >>> group_count(64), group_count(48), group_count(3)
        (32, 24, 3)
    """
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def make_norm(kind: str, channels: int) -> nn.Module:
    """``bn`` -> BatchNorm2d, ``gn`` -> GroupNorm(group_count(channels)), ``none`` -> Identity.

    Example:
        >>> make_norm("gn", 64).num_groups, type(make_norm("bn", 64)).__name__
        (32, 'BatchNorm2d')
    """
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.norm must be 'bn' or 'gn', got {kind!r}")


def conv_norm_act(cin: int, cout: int, k: int = 3, norm: str = "bn", dilation: int = 1,
                  stride: int = 1) -> nn.Sequential:
    """Conv (no bias) -> norm -> ReLU, 'same' padding for odd ``k``.

    Example:
        >>> conv_norm_act(4, 8, 3, "bn", dilation=2)(torch.rand(2, 4, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


def convert_bn_to_gn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` (in place) by a GroupNorm with the same affine parameters.

    The BN scale/shift are copied so pretrained weights still give a sensible start; running
    statistics have no GroupNorm equivalent and are dropped.

    Example:
        >>> gn = convert_bn_to_gn(nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16)))[1]
        >>> type(gn).__name__, gn.num_groups
        ('GroupNorm', 16)
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            gn = nn.GroupNorm(group_count(child.num_features), child.num_features, eps=child.eps,
                              affine=True)
            if child.affine:
                with torch.no_grad():
                    gn.weight.copy_(child.weight)
                    gn.bias.copy_(child.bias)
            gn.to(device=child.weight.device if child.affine else None)
            setattr(module, name, gn)
        else:
            convert_bn_to_gn(child)
    return module


def expand_input_channels(conv: nn.Conv2d, in_channels: int, zero_new: bool) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs; the existing filters are kept.

    ``zero_new=True`` sets the added input filters to zero (so pretrained RGB behaviour is unchanged
    at the start); otherwise they get the default Kaiming initialisation of a fresh conv.
    """
    if in_channels < conv.in_channels:
        raise ValueError(f"cannot shrink a conv from {conv.in_channels} to {in_channels} inputs")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight[:, : conv.in_channels].copy_(conv.weight)
        if zero_new:
            new.weight[:, conv.in_channels:].zero_()
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def upsample_to(x: torch.Tensor, ref: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``ref`` (a tensor or an (H, W) pair).

    Example:
        >>> upsample_to(torch.rand(1, 2, 4, 4), (8, 6)).shape
        torch.Size([1, 2, 8, 6])
    """
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(ref)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def unpool(x: torch.Tensor, indices: torch.Tensor, size: torch.Size | tuple[int, int], kernel_size: int,
           stride: int, padding: int = 0) -> torch.Tensor:
    """Max-unpooling as the exact transpose of max-pooling (deterministic, autocast/channels_last safe).

    Each pooled value goes back to the input position its window's maximum came from. Where
    overlapping windows (e.g. a 3x3 / stride-2 pool) picked the same position, the values are
    *summed* — ``F.max_unpool2d`` would keep an arbitrary one, and torch flags it nondeterministic
    (an error or warning under ``torch.use_deterministic_algorithms``).
    Without overlap (2x2 / stride 2) the result equals ``F.max_unpool2d``.

    Example:
        >>> src = torch.tensor([[[[1.0, 5.0], [3.0, 2.0]]]])
        >>> pooled, idx = F.max_pool2d(src, 2, 2, return_indices=True)
        >>> unpool(pooled * 10, idx, src.shape[-2:], 2, 2).tolist()
        [[[[0.0, 50.0], [0.0, 0.0]]]]
    """
    n, c = x.shape[:2]
    like = x.new_empty((n, c, *size))  # only its shape / dtype are used by the kernel
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        like = like.contiguous(memory_format=torch.channels_last)
    return torch.ops.aten.max_pool2d_with_indices_backward(
        x, like, [kernel_size] * 2, [stride] * 2, [padding] * 2, [1, 1], False, indices)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def prepare_inputs(image: torch.Tensor, trimap: torch.Tensor | None, *, model: str,
                   use_trimap: bool, multiple: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check ``image`` (N,3,H,W) / ``trimap`` (N,1,H,W) and return them, the trimap resolved.

    With ``use_trimap=False`` the trimap is replaced by all-unknown 0.5 (whatever was passed);
    with ``use_trimap=True`` a missing trimap is an error.

    Example:
        >>> _, t = prepare_inputs(torch.rand(1, 3, 32, 64), None, model="demo", use_trimap=False)
        >>> t.shape, t.unique().tolist()
        (torch.Size([1, 1, 32, 64]), [0.5])
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{model}: image must be a (N, 3, H, W) tensor in [0, 1], got {shape}")
    n, _, h, w = image.shape
    if h % multiple or w % multiple:
        raise ValueError(
            f"{model}: image height and width must be multiples of {multiple}, got {h}x{w} "
            "(pad the input, as mattingkit.infer does, and crop the output)"
        )
    if not use_trimap:
        return image, image.new_full((n, 1, h, w), 0.5)
    if trimap is None:
        raise ValueError(f"{model}: this model needs a trimap (set model.use_trimap=false for "
                         "trimap-free use)")
    if trimap.ndim != 4 or trimap.shape[1] != 1 or trimap.shape[0] != n or trimap.shape[2:] != image.shape[2:]:
        raise ValueError(f"{model}: trimap must be (N, 1, H, W) = ({n}, 1, {h}, {w}), "
                         f"got {tuple(trimap.shape)}")
    return image, trimap.to(image.dtype)


def alpha_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid in float32 (autocast may hand us bf16/fp16 logits; alphas stay float32)."""
    return torch.sigmoid(logits.float())


# --------------------------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------------------------
def _warn(message: str) -> None:
    warnings.warn(message, PretrainedWeightsWarning, stacklevel=3)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors)")
    out = {}
    for k, v in obj.items():
        k = str(k)
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (weights_only=True, onto the CPU).

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``;
    ``module.`` prefixes (DataParallel) are removed.

    Example:
        >>> sd = load_state_dict_file("resnet18.pth")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=HOST, weights_only=True)
    except Exception as e:  # noqa: BLE001 - the message names the file
        raise ValueError(f"{path}: could not load a state dict ({type(e).__name__}: {e})") from None
    return _unwrap_state_dict(obj, path)


def probe_url(url: str, timeout: float) -> str | None:
    """None when ``url`` answers within ``timeout`` seconds, else a short reason."""
    result: dict[str, str] = {}

    def run() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered (some CDNs refuse HEAD): reachable, let the download decide
        except Exception as e:  # noqa: BLE001 - any other failure means "not reachable"
            result["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=run, daemon=True, name="mattingkit-weights-probe")
    t.start()
    t.join(timeout + 1.0)
    if t.is_alive():
        return f"no answer within {timeout:.0f} s"
    return result.get("error")


def weights_cache_file(url: str) -> Path:
    """Where torch.hub keeps the download of ``url`` (doctor checks it without downloading).

    Example:
        >>> weights_cache_file("https://x.org/w/resnet18-f37072fd.pth").name
        'resnet18-f37072fd.pth'
    """
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def torchvision_state_dict(arch: str, weights_path: str | os.PathLike | None = None,
                           ) -> dict[str, torch.Tensor] | None:
    """ImageNet weights for a torchvision ``arch`` (``resnet50``, ``vgg16_bn``...), or None + a warning.

    Never hangs offline: the network step is guarded by a short probe. A ``weights_path`` that
    exists but is not a loadable state dict raises ``ValueError`` (that is a user error, not a
    connectivity problem).

    Example:
        >>> sd = torchvision_state_dict("resnet18", "resnet18.pth")  # doctest: +SKIP
        >>> sd["conv1.weight"].shape  # doctest: +SKIP
        torch.Size([64, 3, 7, 7])
    """
    hint = (f"To use ImageNet weights offline, save them once where there is internet "
            f"(torch.save(torchvision.models.{arch}(weights='DEFAULT').state_dict(), '{arch}.pth')) "
            f"and set model.weights_path to that file.")
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            _warn(f"model.weights_path {str(path)!r} does not exist; {arch} starts from random "
                  f"initialisation. {hint}")
            return None
        return load_state_dict_file(path)

    import torchvision

    try:
        url = torchvision.models.get_model_weights(arch).DEFAULT.url
    except Exception as e:  # noqa: BLE001
        _warn(f"torchvision has no ImageNet weights for {arch!r} ({e}); random initialisation.")
        return None
    cached = weights_cache_file(url)
    if cached.is_file():
        try:
            return load_state_dict_file(cached)
        except ValueError as e:
            _warn(f"the cached weights {cached} are unreadable ({e}); delete the file to re-download. "
                  f"{arch} starts from random initialisation.")
            return None
    if os.environ.get("MATTINGKIT_OFFLINE", "").strip() not in ("", "0", "false", "False"):
        _warn(f"MATTINGKIT_OFFLINE is set and {cached} is not cached; {arch} starts from random "
              f"initialisation. {hint}")
        return None
    reason = probe_url(url, PROBE_TIMEOUT)
    if reason is not None:
        _warn(f"could not reach {url} ({reason}); {arch} starts from random initialisation. {hint}")
        return None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        sd = torch.hub.load_state_dict_from_url(url, map_location=HOST, progress=True,
                                                check_hash=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - network/disk/hash errors all mean "no weights"
        _warn(f"downloading {url} failed ({type(e).__name__}: {e}); {arch} starts from random "
              f"initialisation. {hint}")
        return None
    finally:
        socket.setdefaulttimeout(old)
    return _unwrap_state_dict(sd, cached)


def load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str,
                  ignore_prefixes: Iterable[str] = ()) -> None:
    """Load ``state_dict`` into ``module``; keys under ``ignore_prefixes`` may be absent or extra.

    Anything else missing, unexpected or of the wrong shape raises ``ValueError`` naming ``source``.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> load_matching(a, b.state_dict(), source="b"); torch.equal(a.weight, b.weight)
        True
    """
    ignore = tuple(ignore_prefixes)
    own = module.state_dict()
    sd = {k: v for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    missing = [k for k in own if k not in sd and not (ignore and k.startswith(ignore))]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in sd
             if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:3]}")
        raise ValueError(f"{source} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(sd, strict=False)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), unit norms: for the layers we add on top of backbones.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)); init_weights(m)
        >>> m[0].bias.abs().sum().item(), m[1].weight.tolist()
        (0.0, [1.0, 1.0, 1.0, 1.0])
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``).

    Example:
        >>> count_parameters(torch.nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


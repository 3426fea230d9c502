"""Overlapped tiling that reproduces the untiled prediction: core/context layout + whole-image statistics.

Used by :mod:`mattingkit.infer` when an image is above the pixel budget. Two things make a tile's
output differ from the same pixels of an untiled run: too little context (each tile is its 32-px-grid
*core* plus ``context`` px, neighbours cross-fading with a window never below :data:`WINDOW_FLOOR`), and
global operations (GroupNorm, ``AdaptiveAvg/MaxPool2d(1)``), which get whole-image statistics recorded
over the cores one op per pass and injected by forward hooks (:class:`GlobalContext`). docs/inference.md
describes the procedure and its measurements.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8),
    ...                           torch.nn.Conv2d(8, 1, 1))
    >>> x = torch.rand(1, 3, 192, 160)
    >>> run = lambda img, tri: net(img)
    >>> tiled = tiled_predict(run, net, x, torch.full((1, 1, 192, 160), 0.5), tile=128, context=32)
    >>> bool((tiled - net(x)[0, 0]).abs().max() < 1e-3)   # floor-weighted tile edges: <= ~1e-4 x |output|
    True
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .errors import UsageError

#: Tile origins and core boundaries are multiples of this (models downsample by up to 32).
GRID = 32
#: Smallest blending weight: the window never reaches zero, so the normalisation never divides by 0.
WINDOW_FLOOR = 1e-4
#: Half-width of the cross-fade band between neighbouring cores: ``min(context // 4, MAX_BLEND)``.
MAX_BLEND = 32
#: An out-of-memory retry never costs more than this many times the untiled work (:func:`oom_ladder`).
MAX_TILED_WORK = 4.0
#: Context (px) a tile sees around its core when the model declares no :class:`InferGeometry`.
DEFAULT_CONTEXT = 128


class _StopForward(BaseException):
    """Raised by a hook to end a recording forward after the last global op (nothing later is needed).
    A BaseException, so a model's own ``except Exception`` cannot swallow it."""


class TilingError(UsageError):
    """A tiling parameter is impossible (e.g. the tile cannot hold its context); the message says why."""


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """One tile along one axis: the model sees ``[start, stop)``, the tile owns ``[core_start, core_stop)``."""

    start: int
    stop: int
    core_start: int
    core_stop: int


@dataclass(frozen=True)
class InferGeometry:
    """A model's inference geometry, declared with the model (as mmagic's ``test_cfg``): a model class
    or instance sets ``infer_geometry = InferGeometry(...)`` and :mod:`mattingkit.infer` reads it
    (:func:`geometry_of`). ``pad_multiple``: the model's largest downsampling (a multiple of :data:`GRID`);
    padded sizes and tile origins are multiples of it. ``tile_context``: px a tile needs around the
    pixels it predicts for tiled == untiled (the receptive field that matters).

    Example:
        >>> geometry_of(torch.nn.Identity())
        InferGeometry(pad_multiple=32, tile_context=128)
    """

    pad_multiple: int = GRID
    tile_context: int = DEFAULT_CONTEXT


def geometry_of(model: nn.Module) -> InferGeometry:
    """The :class:`InferGeometry` ``model`` declares (through DataParallel / DDP wrappers), else the default."""
    inner = getattr(model, "module", model)
    geom = getattr(inner, "infer_geometry", None)
    return geom if isinstance(geom, InferGeometry) else InferGeometry()


def min_tile(context: int, grid: int = GRID) -> int:
    """The smallest tile that holds ``context`` px on both sides of a one-``grid`` core: the one tile floor.

    Example:
        >>> min_tile(128), min_tile(0)
        (288, 32)
    """
    return 2 * int(context) + grid


def tiled_work(height: int, width: int, tile: int, context: int, grid: int = GRID) -> float:
    """Pixels the model sees tiling a padded ``height x width`` image at ``tile`` with ``context``, per
    pass, over the untiled pixels (1.0 = no overhead; each tile's context is seen twice or more).

    Example:
        >>> tiled_work(640, 640, 640, 64), round(tiled_work(640, 640, 384, 64), 2)
        (1.0, 1.44)
    """
    rows = sum(s.stop - s.start for s in tile_spans(height, tile, context, grid))
    cols = sum(s.stop - s.start for s in tile_spans(width, tile, context, grid))
    return rows * cols / (height * width)


def oom_ladder(height: int, width: int, tile: int, context: int, grid: int = GRID,
               max_work: float = MAX_TILED_WORK) -> list[int]:
    """The tile sizes to retry a padded ``height x width`` image with after running out of memory at
    ``tile`` (largest first, each about half the memory of the one before): only tiles that keep at
    least half of each side as core (``tile >= 4 * context``) and cost at most ``max_work`` times the
    untiled work (:func:`tiled_work`). Empty: no tiling helps; predict downscaled instead.

    Example:
        >>> oom_ladder(2048, 2048, 1792, 64)
        [1248, 864, 608, 416, 288]
        >>> oom_ladder(2176, 2176, 1792, 544)        # AlphaGAN's 544 px context: tiles would be mostly context
        []
    """
    floor = max(min_tile(context, grid), 4 * int(context), 4 * grid)
    out: list[int] = []
    t = min(int(tile), max(height, width))
    while True:
        t = int(t / 2 ** 0.5) // grid * grid
        if t < floor or tiled_work(height, width, t, context, grid) > max_work:
            return out
        out.append(t)


def blend_width(context: int) -> int:
    """Half-width of the cross-fade band for a given ``context``: ``min(context // 4, MAX_BLEND)``.

    Example:
        >>> blend_width(64), blend_width(384), blend_width(0)
        (16, 32, 0)
    """
    return min(int(context) // 4, MAX_BLEND)


def tile_spans(length: int, tile: int, context: int, grid: int = GRID) -> list[Span]:
    """Cut ``[0, length)`` into cores on the ``grid`` and tiles of at most ``tile`` px around them.

    The cores partition ``[0, length)`` (boundaries on the grid); each tile is its core plus
    ``context`` px on each side, clipped to ``[0, length)``, so it never exceeds ``tile``. Core
    sizes are balanced; the fewest tiles that fit are used. ``length``, ``tile`` and ``context``
    must be multiples of ``grid`` and ``tile >= 2 * context + grid`` (or ``length <= tile``).

    Example:
        >>> [(s.start, s.stop, s.core_start, s.core_stop) for s in tile_spans(640, 384, 64)]
        [(0, 384, 0, 320), (256, 640, 320, 640)]
        >>> len(tile_spans(4160, 2048, 384)), len(tile_spans(256, 256, 64))
        (3, 1)
    """
    for name, v in (("length", length), ("tile", tile), ("context", context)):
        if v < 0 or v % grid:
            raise TilingError(f"{name} must be a non-negative multiple of {grid}, got {v}")
    if length <= tile:
        return [Span(0, length, 0, length)]
    if tile < min_tile(context, grid):
        raise TilingError(f"tile size {tile} cannot hold its context: it needs at least 2 x context ({context}) "
                          f"+ {grid} = {min_tile(context, grid)} px (raise infer.tile_size or lower infer.tile_overlap)")
    cells = length // grid
    n = 2
    while True:
        # border cores get one context more than interior ones: equal tile sizes
        inner = (length - 2 * context) / n
        bounds = [0] + [int(round((context + inner * i) / grid)) * grid for i in range(1, n)] + [length]
        bounds = sorted(set(min(max(b, 0), length) for b in bounds))
        spans = [Span(max(0, a - context), min(length, b + context), a, b) for a, b in zip(bounds, bounds[1:])]
        if all(s.stop - s.start <= tile for s in spans) and len(spans) == n:
            return spans
        n += 1
        if n > cells:  # cannot happen for valid inputs; guards the loop
            raise TilingError(f"no tiling of {length} px with tile {tile} and context {context}")


def core_window(span: Span, length: int, blend: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """1-D blending weights over ``span`` (tile coordinates): 1 on the core, a raised-cosine cross-fade
    over ``[boundary - blend, boundary + blend]`` at each core boundary that has a neighbour, and
    ``floor`` beyond; never below ``floor``. Neighbours' weights sum to 1 (+ floor) across a boundary.

    Example:
        >>> s = tile_spans(640, 384, 64)
        >>> w0, w1 = core_window(s[0], 640, 16), core_window(s[1], 640, 16)
        >>> float(w0[0]), round(float(w0[-1]), 6), round(float(w0[320 - 1] + w1[320 - 256 - 1]), 4)
        (1.0, 0.0001, 1.0001)
    """
    x = np.arange(span.start, span.stop, dtype=np.float64) + 0.5   # pixel centres, image coordinates
    w = np.ones_like(x)

    def rise(d: np.ndarray) -> np.ndarray:  # 0 at d <= -blend, 1 at d >= blend
        if blend <= 0:
            return (d > 0).astype(np.float64)
        t = np.clip((d + blend) / (2 * blend), 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * t)

    if span.core_start > 0:
        w = np.minimum(w, rise(x - span.core_start))
    if span.core_stop < length:
        w = np.minimum(w, rise(span.core_stop - x))
    return (floor + (1.0 - floor) * w).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Whole-image statistics for global operations
# --------------------------------------------------------------------------------------------
def _is_global(m: nn.Module) -> bool:
    if isinstance(m, nn.GroupNorm):
        return True
    if isinstance(m, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
        return not (m.track_running_stats and not m.training)   # eval + running stats = local
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return True
    return False


def _pool_is_global_one(m: nn.Module) -> bool:
    size = m.output_size
    size = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
    return all(s == 1 for s in size)


def global_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` whose output depends on the whole input (by type): GroupNorm,
    InstanceNorm without running statistics, AdaptiveAvg/MaxPool2d. BatchNorm in eval mode is local.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GroupNorm(2, 8), nn.AdaptiveAvgPool2d(1))
        >>> [type(m).__name__ for _, m in global_modules(net.eval())]
        ['GroupNorm', 'AdaptiveAvgPool2d']
    """
    return [(n, m) for n, m in model.named_modules() if _is_global(m)]


class _Stat:
    """Running whole-image statistic of one module: Welford/Chan merge in float64."""

    def __init__(self, kind: str):
        self.kind = kind            # "norm" (per-group mean/var), "avg", "max" (per channel)
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, groups: int) -> None:
        # Reductions over a strided view of the core: no copy of the slice (a float32 one only under AMP).
        n, c = x.shape[:2]
        if x.dtype != torch.float32:
            x = x.float()
        dims = tuple(range(2, x.ndim))
        if self.kind == "norm":
            xg = x.unflatten(1, (groups, c // groups))
            cnt = xg[0, 0].numel()
            var, mean = torch.var_mean(xg, dim=tuple(range(2, xg.ndim)), unbiased=False)
            mean, m2 = mean.double(), var.double() * cnt
        else:
            cnt = x[0, 0].numel()
            if self.kind == "max":
                mx = x.amax(dim=dims).double()
                self.mean = mx if self.mean is None else torch.maximum(self.mean, mx)
                self.count += cnt
                return
            mean, m2 = x.mean(dim=dims).double(), None
        if cnt == 0:
            return
        if self.mean is None:
            self.count, self.mean, self.m2 = cnt, mean, m2
            return
        tot = self.count + cnt
        delta = mean - self.mean
        self.mean = self.mean + delta * (cnt / tot)
        if m2 is not None:
            self.m2 = self.m2 + m2 + delta * delta * (self.count * cnt / tot)
        self.count = tot

    def value(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        var = None if self.m2 is None else self.m2 / max(self.count, 1)
        return self.mean, var


def _groups(m: nn.Module, channels: int) -> int:
    if isinstance(m, nn.GroupNorm):
        return m.num_groups
    return channels  # InstanceNorm: one group per channel


class GlobalContext:
    """Forward hooks that record whole-image statistics over tile cores and inject them into tiles.

    Use as a context manager around the tile forwards (hooks are removed on exit). Per tile, set
    :attr:`core` (core rectangle ``(y0, y1, x0, x1)`` in tile pixels) and :attr:`tile_shape`;
    ``record`` accumulates into :attr:`recording`; ``inject`` (a dict module -> (mean, var)) makes the
    hooks return outputs computed with those statistics.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
        >>> with GlobalContext(net) as gc:
        ...     len(gc.modules)
        1
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = [m for _, m in global_modules(model)]
        self.unsupported = [n for n, m in global_modules(model)
                            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and not _pool_is_global_one(m)]
        self.record = False
        #: module -> whole-image (mean, var) known to be exact; injected into every tile
        self.inject: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.recording: dict[nn.Module, _Stat] = {}
        #: end a recording forward at the first op without a known statistic (tiles). False: record
        #: every op and keep the local outputs (exact when the "tile" is the whole image).
        self.stop_at_frontier = True
        self.core: tuple[int, int, int, int] | None = None
        self.tile_shape: tuple[int, int] | None = None
        self._handles: list = []

    def __enter__(self) -> "GlobalContext":
        for m in self.modules:
            if m in self.unsupported:
                continue
            self._handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def start_tile(self, core: tuple[int, int, int, int], tile_shape: tuple[int, int]) -> None:
        self.core, self.tile_shape = core, tile_shape

    def _core_of(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self.tile_shape
        h, w = x.shape[-2:]
        if th % h or tw % w:
            raise TilingError(f"a global op sees a {h}x{w} map from a {th}x{tw} tile: not an integer stride, "
                              "cannot map the tile's core onto it")
        sy, sx = th // h, tw // w
        y0, y1, x0, x1 = self.core
        if y0 % sy or y1 % sy or x0 % sx or x1 % sx:
            raise TilingError(f"core {self.core} is not on the stride-{sy}x{sx} grid of a global op")
        return x[..., y0 // sy:y1 // sy, x0 // sx:x1 // sx]

    @staticmethod
    def _kind(m: nn.Module) -> str:
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return "avg"
        if isinstance(m, nn.AdaptiveMaxPool2d):
            return "max"
        return "norm"

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor):
        x = inputs[0]
        if module in self.inject:
            return self._replace(module, x, output)
        if self.record:
            # The first global op without an exact statistic: everything before it was injected exact,
            # so its core sums add up to the whole-image ones. Nothing after it can be exact in this
            # pass, so the forward ends here.
            kind = self._kind(module)
            stat = self.recording.setdefault(module, _Stat(kind))
            stat.add(self._core_of(x), _groups(module, x.shape[1]) if kind == "norm" else 1)
            if self.stop_at_frontier:
                raise _StopForward
        return None   # tile-local (statistics not known)

    def _replace(self, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        mean, var = self.inject[module]
        n, c = x.shape[:2]
        kind = self._kind(module)
        if kind in ("avg", "max"):
            return mean.to(output.dtype).reshape(n, c, *output.shape[2:])
        g = _groups(module, c)
        rstd = torch.rsqrt(var + module.eps).float()                      # (n, g)
        scale = rstd.repeat_interleave(c // g, dim=1)                     # (n, c)
        shift = -mean.float().repeat_interleave(c // g, dim=1) * scale
        if getattr(module, "affine", False) and module.weight is not None:
            shift = shift * module.weight.float() + module.bias.float()
            scale = scale * module.weight.float()
        shape = (n, c) + (1,) * (x.ndim - 2)
        if output.dtype == torch.float32 and output.shape == x.shape:
            # in place in the module's own (discarded) output: no new full-size tensors per global op
            return output.copy_(x).mul_(scale.reshape(shape)).add_(shift.reshape(shape))
        return (x.float() * scale.reshape(shape) + shift.reshape(shape)).to(output.dtype)

    def finish_pass(self) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]]:
        """The whole-image statistics completed by this recording pass (now exact); resets the recording."""
        stats = {m: st.value() for m, st in self.recording.items()}
        self.recording = {}
        return stats


# --------------------------------------------------------------------------------------------
# Tiled prediction
# --------------------------------------------------------------------------------------------
@dataclass
class TilingInfo:
    """What :func:`tiled_predict` did (for tests and benchmarks)."""

    tiles: int = 0                 # tiles in the layout
    tiles_run: int = 0             # tiles run in the final pass
    stats_passes: int = 0          # recording passes over every tile
    global_ops: int = 0            # global modules found
    exact_ops: int = 0             # global modules given exact whole-image statistics
    exact_stats: bool = True       # every global module got them (False: some ran tile-local)
    context: int = 0
    blend: int = 0


def _tiles(spans_y: list[Span], spans_x: list[Span]) -> Iterator[tuple[Span, Span]]:
    for sy in spans_y:
        for sx in spans_x:
            yield sy, sx


def tiled_predict(run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], model: nn.Module,
                  image: torch.Tensor, trimap: torch.Tensor, *, tile: int, context: int,
                  device: torch.device | str | None = None, max_stats_passes: int | None = None,
                  info: TilingInfo | None = None, guide: torch.Tensor | None = None) -> torch.Tensor:
    """Tiled ``run(image_tile, trimap_tile) -> (1,1,h,w) alpha`` over a padded ``(1,3,H,W)`` image.
    With a ``guide`` (a guided model's ``(1,1,H,W)`` input, computed once for the whole image) the call is
    ``run(image_tile, trimap_tile, guide_tile)``, the guide cropped with the same spans in every pass.

    ``model`` is the module whose global operations get whole-image statistics (``run`` calls it).
    ``H``, ``W``, ``tile`` and ``context`` must be multiples of :data:`GRID`. ``max_stats_passes=0``
    turns whole-image statistics off (global ops see only their tile). Returns the blended
    ``(H, W)`` float32 alpha on the CPU; pixels of skipped (all-known) tiles take the trimap's value.
    See the module docstring for the procedure. ``info`` (a :class:`TilingInfo`) is filled in.

    Example:
        >>> net = nn.Conv2d(3, 1, 3, padding=1)
        >>> x, t = torch.rand(1, 3, 96, 96), torch.full((1, 1, 96, 96), 0.5)
        >>> out = tiled_predict(lambda i, _: net(i), net, x, t, tile=64, context=0)
        >>> tuple(out.shape)
        (96, 96)
    """
    info = info if info is not None else TilingInfo()
    device = image.device if device is None else device
    _, _, hp, wp = image.shape
    spans_y, spans_x = tile_spans(hp, tile, context), tile_spans(wp, tile, context)
    blend = blend_width(context)
    info.tiles, info.context, info.blend = len(spans_y) * len(spans_x), context, blend
    info.stats_passes = info.tiles_run = 0
    unknown = trimap[0, 0] == 0.5

    def forward(sy: Span, sx: Span) -> torch.Tensor | None:
        sl = (slice(None), slice(None), slice(sy.start, sy.stop), slice(sx.start, sx.stop))
        gc.start_tile((sy.core_start - sy.start, sy.core_stop - sy.start,
                       sx.core_start - sx.start, sx.core_stop - sx.start), (sy.stop - sy.start, sx.stop - sx.start))
        try:
            if guide is None:
                return run(image[sl].to(device), trimap[sl].to(device))
            return run(image[sl].to(device), trimap[sl].to(device), guide[sl].to(device))
        except _StopForward as stop:
            stop.__traceback__ = None     # its frames hold the tile's activations: drop them now
            return None

    with GlobalContext(model) as gc:
        info.global_ops = len(gc.modules)
        if gc.unsupported:
            warnings.warn(f"tiling: {', '.join(gc.unsupported)} pool to a size other than 1; their whole-image "
                          "output cannot be injected, so tiled results only approximate untiled ones", stacklevel=3)
        multi = info.tiles > 1
        todo = len(gc.modules) - len(gc.unsupported)
        limit = todo if max_stats_passes is None else min(int(max_stats_passes), todo)
        if multi:
            gc.record = True
            while info.stats_passes < limit:
                for sy, sx in _tiles(spans_y, spans_x):
                    forward(sy, sx)
                new = gc.finish_pass()
                info.stats_passes += 1
                if not new:          # every remaining global op is unreachable / unsupported
                    break
                gc.inject.update(new)
            info.exact_ops = len(gc.inject)
            info.exact_stats = len(gc.inject) == len(gc.modules)
        gc.record = False
        acc = torch.zeros((hp, wp), dtype=torch.float32)
        wsum = torch.zeros((hp, wp), dtype=torch.float32)
        for sy, sx in _tiles(spans_y, spans_x):
            if not bool(unknown[sy.start:sy.stop, sx.start:sx.stop].any()):
                continue  # all known: filled from the trimap below
            out = forward(sy, sx)
            a = out[0, 0].float().cpu()
            del out                        # the tile's device output: freed before the next tile runs
            wy = torch.from_numpy(core_window(sy, hp, blend))
            wx = torch.from_numpy(core_window(sx, wp, blend))
            weight = wy[:, None] * wx[None, :]
            acc[sy.start:sy.stop, sx.start:sx.stop] += a * weight
            wsum[sy.start:sy.stop, sx.start:sx.stop] += weight
            info.tiles_run += 1
    out = torch.where(wsum > 0, acc / wsum.clamp_min(1e-12), trimap[0, 0].float().cpu())
    return out


__all__ = [
    "DEFAULT_CONTEXT", "GRID", "MAX_BLEND", "WINDOW_FLOOR", "GlobalContext", "InferGeometry", "Span", "TilingError",
    "TilingInfo", "blend_width", "core_window", "geometry_of", "global_modules", "MAX_TILED_WORK", "min_tile", "oom_ladder",
    "tiled_work",
    "tile_spans", "tiled_predict",
]

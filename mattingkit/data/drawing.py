"""Procedural drawing: the building blocks of the two synthetic-data generators.

:mod:`mattingkit.data.synthetic` (the demo set) and :mod:`mattingkit.data.photoreal` (the ``cpu``
recipe's photo-like set) draw their pictures from the same primitives: per-item generators seeded by
``(seed, stream, index)``, value noise, random palettes, texture layers (noise, stripes, gradients,
checkers, shapes), object textures, smooth star-shaped outlines, anti-aliased hair strands and JPEG
encoding. They live here, public, so both generators use them without reaching into each other.
Every function takes an explicit :class:`numpy.random.Generator` and draws from it in a fixed order:
the data a seed gives is defined by that order (the demo data is checked byte for byte), so never
reorder the draws of a function here.

Example:
    >>> rng = item_rng(0, 1, 0)
    >>> tex = texture(rng, 32, 32)
    >>> tex.shape, tex.dtype, bool(0 <= tex.min() and tex.max() <= 1)
    ((32, 32, 3), dtype('float32'), True)
"""
from __future__ import annotations

import io as _io

import cv2
import numpy as np
from PIL import Image

from ..io import to_uint8

JPEG_QUALITY = 92


# --------------------------------------------------------------------------------------------
# Generators and checks
# --------------------------------------------------------------------------------------------
def item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """An independent generator per (seed, stream, item): items do not depend on each other's draws.

    Example:
        >>> item_rng(0, 1, 2).random() == item_rng(0, 1, 2).random()
        True
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, index]))


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}")
    return rng


# --------------------------------------------------------------------------------------------
# Texture building blocks (all vectorised numpy / cv2, float32 in [0, 1])
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Texture building blocks (all vectorised numpy / cv2, float32 in [0, 1])
# --------------------------------------------------------------------------------------------
def fractal_noise(rng: np.random.Generator, h: int, w: int, channels: int = 1, base: int = 3,
                   octaves: int = 5, persistence: float = 0.55) -> np.ndarray:
    """Sum of upsampled random grids (value noise), normalised to [0, 1] per channel.

    Example:
        >>> n = fractal_noise(np.random.default_rng(0), 32, 48)
        >>> n.shape, float(n.min()), float(n.max())
        ((32, 48), 0.0, 1.0)
    """
    out = np.zeros((h, w, channels), np.float32)
    amp = 1.0
    long_side = max(h, w)
    for o in range(octaves):
        s = base * 2 ** o
        gh, gw = max(2, round(s * h / long_side)), max(2, round(s * w / long_side))
        if gh > h or gw > w:
            break
        grid = rng.random((gh, gw, channels), dtype=np.float32)
        up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        out += amp * up.reshape(h, w, channels)
        amp *= persistence
    lo = out.min(axis=(0, 1), keepdims=True)
    hi = out.max(axis=(0, 1), keepdims=True)
    out = (out - lo) / np.maximum(hi - lo, 1e-6)
    return out[:, :, 0] if channels == 1 else out


def random_colors(rng: np.random.Generator, n: int, sat=(0.3, 1.0), val=(0.15, 1.0)) -> np.ndarray:
    """``n`` random RGB colours (float32, n x 3) from HSV ranges."""
    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(*sat, n) * 255, rng.uniform(*val, n) * 255], 1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return rgb.astype(np.float32) / 255.0


def colormap(values: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Map HxW values in [0,1] through a piecewise-linear palette (k x 3) -> HxWx3."""
    xs = np.linspace(0.0, 1.0, len(colors))
    return np.stack([np.interp(values, xs, colors[:, c]) for c in range(3)], -1).astype(np.float32)


def coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y, x


def layer_noise(rng, h, w) -> np.ndarray:
    n = fractal_noise(rng, h, w, 1, base=int(rng.integers(2, 6)), octaves=int(rng.integers(4, 7)),
                       persistence=float(rng.uniform(0.45, 0.7)))
    return colormap(n, random_colors(rng, int(rng.integers(2, 5))))


def layer_stripes(rng, h, w) -> np.ndarray:
    y, x = coords(h, w)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 40)
    warp = (fractal_noise(rng, h, w, 1, base=2, octaves=3) - 0.5) * rng.uniform(0, 3 * period)
    u = (x * np.cos(theta) + y * np.sin(theta) + warp) / period
    s = np.sin(2 * np.pi * u)
    hardness = rng.uniform(1, 6)  # 1: sinusoid, large: square wave with soft (anti-aliased) steps
    v = np.clip(0.5 + 0.5 * s * hardness, 0, 1)
    c = random_colors(rng, 2)
    return (c[0] * v[..., None] + c[1] * (1 - v[..., None])).astype(np.float32)


def layer_gradient(rng, h, w) -> np.ndarray:
    y, x = coords(h, w)
    theta = rng.uniform(0, 2 * np.pi)
    u = x * np.cos(theta) + y * np.sin(theta)
    u = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    return colormap(u, random_colors(rng, int(rng.integers(2, 4))))


def layer_checker(rng, h, w) -> np.ndarray:
    y, x = coords(h, w)
    theta = rng.uniform(0, np.pi / 2)
    cell = rng.uniform(8, 48)
    u = (x * np.cos(theta) + y * np.sin(theta)) / cell
    v = (-x * np.sin(theta) + y * np.cos(theta)) / cell
    m = (np.sin(np.pi * u) * np.sin(np.pi * v) > 0).astype(np.float32)
    m = cv2.GaussianBlur(m, (0, 0), 0.7)
    c = random_colors(rng, 2)
    return (c[0] * m[..., None] + c[1] * (1 - m[..., None])).astype(np.float32)


def layer_shapes(rng, h, w, base: np.ndarray | None = None) -> np.ndarray:
    """Random filled circles, rectangles, polygons and lines (anti-aliased), over ``base``."""
    canvas = to_uint8(base if base is not None else layer_gradient(rng, h, w)).copy()
    n = int(rng.integers(12, 40))
    colors = (random_colors(rng, n) * 255).astype(int)
    size = max(h, w)
    for i in range(n):
        col = tuple(int(c) for c in colors[i])
        kind = rng.integers(0, 4)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.uniform(0.02, 0.15) * size) + 1
        if kind == 0:
            cv2.circle(canvas, (cx, cy), r, col, -1, cv2.LINE_AA)
        elif kind == 1:
            box = ((cx, cy), (2 * r * rng.uniform(0.5, 1.5), 2 * r * rng.uniform(0.3, 1.5)), rng.uniform(0, 180))
            cv2.fillPoly(canvas, [np.round(cv2.boxPoints(box)).astype(np.int32)], col, cv2.LINE_AA)
        elif kind == 2:
            k = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rr = r * rng.uniform(0.5, 1.2, k)
            pts = np.stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(canvas, [pts], col, cv2.LINE_AA)
        else:
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(canvas, (cx, cy), (x2, y2), col, int(rng.integers(1, 6)), cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


LAYERS = (layer_noise, layer_stripes, layer_gradient, layer_checker, layer_shapes)


# --------------------------------------------------------------------------------------------
# Objects: textures, outlines, strands; encoding
# --------------------------------------------------------------------------------------------
def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A colourful object texture (cloth, skin, print): noise palette + optional stripes + shading."""
    tex = layer_noise(rng, h, w)
    if rng.random() < 0.6:
        m = np.clip((fractal_noise(rng, h, w, 1, base=2, octaves=3) - 0.5) * 6 + 0.5, 0, 1)[..., None]
        tex = tex * (1 - m) + LAYERS[int(rng.integers(1, 4))](rng, h, w) * m
    y, x = coords(h, w)
    theta = rng.uniform(0, 2 * np.pi)
    shade = x * np.cos(theta) + y * np.sin(theta)
    shade = (shade - shade.min()) / max(float(shade.max() - shade.min()), 1e-6)
    tex = tex * (rng.uniform(0.6, 0.85) + rng.uniform(0.15, 0.4) * shade[..., None])
    return np.clip(tex, 0, 1).astype(np.float32)


def radial_shape(rng: np.random.Generator, n: int = 256):
    """A smooth star-shaped outline: r(theta) = 1 + sum_k a_k cos(k theta + phi_k), min radius >= 0.5."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ks = np.arange(1, 7)
    a = rng.uniform(0, 0.16, len(ks)) / np.sqrt(ks)
    a *= min(1.0, 0.45 / a.sum())
    phi = rng.uniform(0, 2 * np.pi, len(ks))
    r = 1 + (a[:, None] * np.cos(ks[:, None] * theta[None] + phi[:, None])).sum(0)
    return theta, r, float(r.min())


def draw_strands(rng, hr_shape, roots, directions, lengths, scale) -> np.ndarray:
    """Draw curved strands on a hi-res canvas; returns uint8 coverage (max over strands)."""
    n = len(roots)
    k = 10  # points per strand
    curv = rng.uniform(-0.2, 0.2, n)[:, None]
    dtheta = curv + rng.normal(0, 0.09, (n, k - 1))
    ang = directions[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(dtheta, 1)], 1)[:, :-1]
    step = (lengths / (k - 1))[:, None]
    dx = np.concatenate([np.zeros((n, 1)), np.cumsum(step * np.cos(ang), 1)], 1)
    dy = np.concatenate([np.zeros((n, 1)), np.cumsum(step * np.sin(ang), 1)], 1)
    pts = np.stack([roots[:, 0:1] + dx, roots[:, 1:2] + dy], -1)  # n x k x 2 (hi-res px)
    shift = 2
    ipts = np.round(pts * (1 << shift)).astype(np.int32)
    value = rng.uniform(0.45, 1.0, n)
    tip_fade = rng.uniform(0.35, 0.75, n)
    thick = rng.choice([max(1, scale // 2), scale, scale + scale // 2], n, p=[0.3, 0.5, 0.2])
    half = k // 2 + 1
    # group strands by (quantised intensity, thickness): one polylines call per group, max-combined
    canvas = np.zeros(hr_shape, np.uint8)
    levels = np.linspace(0.3, 1.0, 7)
    for part, vals in (("root", value), ("tip", value * tip_fade)):
        seg = ipts[:, :half] if part == "root" else ipts[:, half - 1:]
        q = np.clip(np.searchsorted(levels, vals), 0, len(levels) - 1)
        for qi in np.unique(q):
            for t in np.unique(thick):
                sel = (q == qi) & (thick == t)
                if not sel.any():
                    continue
                layer = np.zeros(hr_shape, np.uint8)
                cv2.polylines(layer, list(seg[sel]), False, int(round(255 * levels[qi])), int(t),
                              cv2.LINE_AA, shift)
                np.maximum(canvas, layer, out=canvas)
    return canvas


def jpeg_bytes(rgb: np.ndarray, subsampling: int = 0) -> bytes:
    """JPEG bytes of a float RGB image at :data:`JPEG_QUALITY` (``subsampling``: PIL's chroma subsampling,
    0 = 4:4:4, 2 = 4:2:0).

    Example:
        >>> jpeg_bytes(np.zeros((8, 8, 3), np.float32))[:2]
        b'\\xff\\xd8'
    """
    buf = _io.BytesIO()
    Image.fromarray(to_uint8(rgb), "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=subsampling)
    return buf.getvalue()

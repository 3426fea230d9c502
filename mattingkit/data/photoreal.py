"""Photo-like synthetic matting data: the training set of the ``cpu`` recipe (made to transfer to photographs).

The demo generator (:mod:`mattingkit.data.synthetic`) makes small (~0.06 Mpx), busy, flat-lit pictures
with thin unknown bands: enough to exercise the code, too far from a photograph to learn matting that
transfers. This module makes data at the scale and look of real matting photos (alphamatting.com,
AIM-500), from a seed, on the CPU, in about a second per item:

- **scale**: 0.5-1 Mpx images (long side 800-1200 px), objects filling about half the frame;
- **foregrounds** (:func:`make_photoreal_foreground`): a shaded body (smooth outline, rounded
  "3-D" shading, directional light, a smooth texture), optionally a torso running off the bottom
  edge; a hair mass whose alpha is built from thousands of overlapping anti-aliased strands (dense
  and nearly opaque at the roots, single strands at the tips) over a soft sub-pixel "cloud"; short
  fur all around; a semi-transparent veil; motion/defocus-feathered parts of the outline; holes;
- **backgrounds** (:func:`make_photoreal_background`): smooth colour gradients, multi-scale noise,
  blurred shapes and an occasional sharp busy texture, vignetting, and a random defocus blur;
- **photographic effects**: foreground colour *spill* (the object's edge colours pulled towards the
  background colour behind them, as light wraps around real hair), sensor noise and JPEG on the
  photo only;
- **trimaps** as wide as real ones: unknown bands (:func:`mattingkit.trimap.trimap_band`) 8-60 px on
  each side of the soft region (at a long side of 1000 px) -- on the five alphamatting photos of ``../shared`` the Trimap1 band
  between definite fg and bg is 17-114 px wide (median per photo).

:func:`make_photoreal_data` writes the demo data's layout (see :mod:`mattingkit.data.synthetic`)::

    <root>/aim500/original/pr_000.jpg   the photo  alpha*fg + (1-alpha)*bg (+ noise), JPEG q92
    <root>/aim500/mask/pr_000.png       alpha (8-bit gray)
    <root>/aim500/trimap/pr_000.png     a real-width trimap 0/128/255
    <root>/truth/fg/pr_000.png          the foreground colours (spill included)
    <root>/truth/alpha/pr_000.png       the alpha again: ``truth/`` is an ``adobe`` layout (fg/ + alpha/ + bg/)
    <root>/truth/bg/pr_000.png          the background the photo was made from
    <root>/backgrounds/bg_000.jpg       background pool (different pictures from the truth backgrounds)
    <root>/photoreal.json               marker: version, seed, options, files

So a config reads it either as ``layout: aim500`` (photos; foregrounds estimated) or, as the ``cpu``
recipe does, ``layout: adobe`` on ``<root>/truth`` with ``foreground: given`` (the exact colours, no
estimation pass) and ``backgrounds: <root>/backgrounds``. The files are cached: a second call with the
same seed and options (and the same :data:`PHOTOREAL_VERSION`) writes nothing.

Example:
    >>> import tempfile
    >>> s = make_photoreal_data(tempfile.mkdtemp(), seed=0, n_fg=1, n_backgrounds=1, long_side=(160, 160))
    >>> s["counts"], s["created"]
    ({'fg': 1, 'backgrounds': 1}, True)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from .. import env
from ..io import atomic_write_bytes, atomic_write_text, png_bytes, to_uint8
from ..trimap import trimap_band
from .drawing import (
    check_rng,
    coords,
    draw_strands,
    fractal_noise,
    item_rng,
    jpeg_bytes,
    radial_shape,
    random_colors,
    texture,
)
from .synthetic import make_background

__all__ = ["PHOTOREAL_VERSION", "make_photoreal_background", "make_photoreal_foreground", "make_photoreal_item",
           "make_photoreal_data", "photoreal_trimap"]

#: Bump when the generator changes what it writes (an old marker then no longer counts as a no-op).
PHOTOREAL_VERSION = 2
MARKER = "photoreal.json"
#: trimap half-width range (px at a long side of 1000 px, scaled with the image) of the written trimaps:
#: real Trimap1 bands are 17-114 px wide in all (median per photo, long side 800)
BAND_RANGE = (8, 60)
#: Strength of the colour spill (fraction of the background colour in the outermost edge colours).
SPILL_RANGE = (0.1, 0.45)
#: Depth of the opaque hair-coloured core under a hair mass / fur, in hair-mass thicknesses (see
#: :func:`make_photoreal_foreground`); ``(0, 0)`` is version 1's data, where hair colours exist only in
#: the soft strands, every one of them unknown, and closed-form reads them as background.
HAIR_CORE = (1.0, 2.5)

# streams of the per-item generators (never reorder: they define the data for a seed)
_STREAM_FG, _STREAM_POOL = 11, 12
_SS = 2  # supersampling of the drawn outlines and strands


def _size(rng: np.random.Generator, long_side: tuple[int, int]) -> tuple[int, int]:
    """(h, w): long side in ``long_side``, aspect 0.6-1 (portrait or landscape)."""
    lo, hi = int(long_side[0]), int(long_side[1])
    if lo < 32 or hi < lo:
        raise ValueError(f"long_side must be (lo, hi) with 32 <= lo <= hi, got {long_side!r}")
    L = int(rng.integers(lo, hi + 1))
    s = max(32, int(round(L * rng.uniform(0.6, 1.0))))
    return (L, s) if rng.random() < 0.4 else (s, L)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int = 3, channels: int = 3) -> np.ndarray:
    """A smooth colour field: a few random colours on a coarse grid, bicubically upsampled."""
    gh, gw = max(2, cells), max(2, int(round(cells * w / max(h, 1))))
    grid = random_colors(rng, gh * gw, sat=(0.05, 0.6), val=(0.15, 0.95)).reshape(gh, gw, 3)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out[..., :channels], 0, 1).astype(np.float32)


def _odd(x: float) -> int:
    k = max(1, int(round(x)))
    return k + 1 - k % 2


def _defocus(img: np.ndarray, radius: float) -> np.ndarray:
    """Lens-like defocus: a disc (box of a blurred disc) kernel of ``radius`` px; no-op below 0.7 px."""
    if radius < 0.7:
        return img
    k = _odd(2 * radius + 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)).astype(np.float32)
    disc = cv2.GaussianBlur(disc, (0, 0), 0.5)
    disc /= disc.sum()
    return cv2.filter2D(img, -1, disc, borderType=cv2.BORDER_REFLECT)


# --------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------
def make_photoreal_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like background, float32 ``h x w x 3`` in [0, 1].

    Smooth gradients + multi-scale noise + blurred shapes (sometimes a sharp busy texture), lit by a
    broad light gradient and vignetting, then defocused by a random disc blur (0-12 px).

    Example:
        >>> bg = make_photoreal_background(np.random.default_rng(0), 120, 160)
        >>> bg.shape, bg.dtype, bool(bg.min() >= 0 and bg.max() <= 1)
        ((120, 160, 3), dtype('float32'), True)
    """
    rng = check_rng(rng)
    h, w = int(h), int(w)
    img = _smooth_field(rng, h, w, cells=int(rng.integers(2, 5)))
    # multi-scale noise (colour and luminance)
    amp = rng.uniform(0.05, 0.3)
    img = img + amp * (fractal_noise(rng, h, w, 3, base=int(rng.integers(2, 6)), octaves=6) - 0.5)
    # shapes: ellipses, rectangles, thin lines (furniture, leaves, edges of things), drawn at a low res
    small = max(1, int(round(max(h, w) / 400)))
    sh, sw = max(8, h // small), max(8, w // small)
    layer = np.zeros((sh, sw, 3), np.float32)
    cover = np.zeros((sh, sw), np.float32)
    n_shapes = int(rng.integers(4, 30))
    cols = random_colors(rng, n_shapes, sat=(0.05, 0.8), val=(0.1, 1.0))
    for i in range(n_shapes):
        m = np.zeros((sh, sw), np.uint8)
        kind = rng.random()
        cx, cy = int(rng.integers(0, sw)), int(rng.integers(0, sh))
        if kind < 0.5:
            axes = (int(rng.uniform(0.02, 0.3) * sw), int(rng.uniform(0.02, 0.3) * sh))
            cv2.ellipse(m, (cx, cy), axes, rng.uniform(0, 180), 0, 360, 1, -1, cv2.LINE_AA)
        elif kind < 0.8:
            x2, y2 = cx + int(rng.uniform(0.05, 0.5) * sw), cy + int(rng.uniform(0.05, 0.5) * sh)
            cv2.rectangle(m, (cx, cy), (x2, y2), 1, -1, cv2.LINE_AA)
        else:
            x2, y2 = int(rng.integers(0, sw)), int(rng.integers(0, sh))
            cv2.line(m, (cx, cy), (x2, y2), 1, int(rng.integers(1, 6)), cv2.LINE_AA)
        mf = m.astype(np.float32) * rng.uniform(0.5, 1.0)
        layer = layer * (1 - mf[..., None]) + cols[i] * mf[..., None]
        cover = np.maximum(cover, mf)
    layer = cv2.resize(layer, (w, h), interpolation=cv2.INTER_LINEAR)
    cover = cv2.resize(cover, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    shade = 0.6 + 0.4 * fractal_noise(rng, h, w, 1, base=2, octaves=2)[..., None]
    img = img * (1 - cover) + layer * shade * cover
    if rng.random() < 0.3:  # a sharp, busy texture (foliage, print, brick): the demo generator's
        tex = make_background(rng, max(32, h // 2), max(32, w // 2))
        tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
        m = np.clip((fractal_noise(rng, h, w, 1, base=2, octaves=3) - 0.45) * 5, 0, 1)[..., None]
        img = img * (1 - m) + tex * m
    # lighting: a broad directional gradient and vignetting
    y, x = coords(h, w)
    y, x = y / max(h - 1, 1), x / max(w - 1, 1)
    th = rng.uniform(0, 2 * np.pi)
    grad = (x * np.cos(th) + y * np.sin(th))
    grad = (grad - grad.min()) / max(float(np.ptp(grad)), 1e-6)
    r2 = ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    light = (rng.uniform(0.6, 0.9) + rng.uniform(0.1, 0.5) * grad) * (1 - rng.uniform(0, 0.6) * r2)
    img = img * light[..., None].astype(np.float32)
    img = _defocus(np.clip(img, 0, 1).astype(np.float32), rng.choice([0.0, rng.uniform(1, 4), rng.uniform(4, 12)],
                                                                  p=[0.25, 0.35, 0.4]))
    return np.clip(img, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Foregrounds
# --------------------------------------------------------------------------------------------
def _strand_layers(rng, shape, roots, dirs, lengths, scale, groups: int = 4) -> np.ndarray:
    """Hair coverage that *accumulates*: strands are split into ``groups`` layers (each drawn with
    max), the layers are combined as ``1 - prod(1 - layer)`` -- overlapping strands get denser."""
    out = np.ones(shape, np.float32)
    idx = rng.permutation(len(roots))
    for part in np.array_split(idx, groups):
        if len(part) == 0:
            continue
        cov = draw_strands(rng, shape, roots[part], dirs[part], lengths[part], scale).astype(np.float32) / 255.0
        out *= 1 - cov
    return 1 - out


def _fg_body(rng: np.random.Generator, h: int, w: int):
    """The body: a smooth outline, sometimes a torso running off the bottom edge. Returns
    ``(body, body_bin, dist_in, dist_out, cx, cy)`` (centre in supersampled pixels)."""
    S = _SS
    H, W = h * S, w * S
    m = min(h, w)
    theta, rad, rmin = radial_shape(rng)
    r0 = rng.uniform(0.22, 0.34) * m * S
    sx, sy = rng.uniform(0.8, 1.2), rng.uniform(0.85, 1.3)
    rot = rng.uniform(-0.4, 0.4)
    cx = W / 2 + rng.uniform(-0.12, 0.12) * W
    cy = H * rng.uniform(0.38, 0.55)
    cr, sr = np.cos(rot), np.sin(rot)

    def to_xy(t, rr):
        ex, ey = rr * sx * np.cos(t), rr * sy * np.sin(t)
        return np.stack([cx + ex * cr - ey * sr, cy + ex * sr + ey * cr], -1)

    body_hr = np.zeros((H, W), np.uint8)
    cv2.fillPoly(body_hr, [np.round(to_xy(theta, r0 * rad)).astype(np.int32)], 255, cv2.LINE_AA)
    if rng.random() < 0.6:  # torso / stem / base to the bottom edge
        half = r0 * rng.uniform(0.7, 1.4)
        top = cy + r0 * rng.uniform(0.2, 0.8)
        pts = np.array([[cx - half * 0.6, top], [cx + half * 0.6, top], [cx + half * 1.4, H + 4],
                        [cx - half * 1.4, H + 4]])
        cv2.fillPoly(body_hr, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
        cv2.ellipse(body_hr, (int(cx), int(top)), (int(half * 0.6), int(half * 0.3)), 0, 0, 360, 255, -1,
                    cv2.LINE_AA)
    body = cv2.resize(body_hr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    body_bin = body > 0.5
    dist_in = cv2.distanceTransform(body_bin.astype(np.uint8), cv2.DIST_L2, 3)
    dist_out = cv2.distanceTransform((~body_bin).astype(np.uint8), cv2.DIST_L2, 3)
    return body, body_bin, dist_in, dist_out, cx, cy


def _fg_feather(rng: np.random.Generator, body: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sometimes feather parts of the outline (motion blur / defocus / fuzzy material)."""
    if rng.random() < 0.6:
        soft = cv2.GaussianBlur(body, (0, 0), rng.uniform(1.0, 4.0))
        mix = np.clip((fractal_noise(rng, h, w, 1, base=2, octaves=3) - 0.5) * 4 + 0.5, 0, 1)
        body = mix * soft + (1 - mix) * body
    return body


def _fg_holes(rng: np.random.Generator, body: np.ndarray, dist_in: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sometimes cut one or two elliptic holes well inside the body."""
    m = min(h, w)
    if rng.random() < 0.3:
        holes = np.zeros((h, w), np.uint8)
        inner = np.argwhere(dist_in > 0.08 * m)
        for _ in range(int(rng.integers(1, 3))):
            if len(inner) == 0:
                break
            yx = inner[int(rng.integers(0, len(inner)))]
            ax = int(rng.uniform(0.02, 0.06) * m) + 2
            cv2.ellipse(holes, (int(yx[1]), int(yx[0])), (ax, int(ax * rng.uniform(0.5, 1))), rng.uniform(0, 180),
                        0, 360, 255, -1, cv2.LINE_AA)
        body = body * (1 - holes.astype(np.float32) / 255.0)
    return body


def _fg_hair_mass(rng: np.random.Generator, contour: np.ndarray, cx: float, cy: float, thick: float,
                  dist_out: np.ndarray, hair: np.ndarray, h: int, w: int) -> np.ndarray:
    """A hair mass over an arc of the outline: accumulated strands plus a sub-pixel cloud."""
    S = _SS
    H, W = h * S, w * S
    ang = np.arctan2(contour[:, 0] - cy / S, contour[:, 1] - cx / S)
    centre, span = rng.uniform(-np.pi, 0) if rng.random() < 0.7 else rng.uniform(-np.pi, np.pi), \
        rng.uniform(0.8, 2.6)
    sel = np.abs(np.angle(np.exp(1j * (ang - centre)))) < span / 2
    pts = contour[sel]
    if len(pts):
        n = int(np.clip(rng.uniform(6, 16) * len(pts) * thick / 40, 300, 5000))
        pick = pts[rng.integers(0, len(pts), n)].astype(np.float64)
        out_ang = np.arctan2(pick[:, 0] - cy / S, pick[:, 1] - cx / S)
        back = rng.uniform(0, 0.5, n) * thick
        roots = np.stack([(pick[:, 1] - back * np.cos(out_ang)) * S, (pick[:, 0] - back * np.sin(out_ang)) * S], 1)
        dirs = out_ang + rng.normal(0, 0.45, n)
        lengths = rng.uniform(0.5, 1.6, n) * thick * S
        hair = np.maximum(hair, cv2.resize(_strand_layers(rng, (H, W), roots, dirs, lengths, S), (w, h),
                                           interpolation=cv2.INTER_AREA))
        # sub-pixel hair: a soft cloud decaying away from the body, over the same arc
        arc = np.zeros((h, w), np.uint8)
        arc[pts[:, 0], pts[:, 1]] = 1
        near = cv2.distanceTransform(1 - arc, cv2.DIST_L2, 3)
        cloud = np.clip(1 - near / max(thick * rng.uniform(0.6, 1.2), 1), 0, 1) ** rng.uniform(1, 3)
        cloud *= rng.uniform(0.2, 0.8) * fractal_noise(rng, h, w, 1, base=6, octaves=5)
        hair = 1 - (1 - hair) * (1 - cloud * (dist_out > 0))
    return hair


def _fg_fur(rng: np.random.Generator, contour: np.ndarray, cx: float, cy: float, hair: np.ndarray,
            h: int, w: int) -> np.ndarray:
    """Short fur strands all around the outline."""
    S = _SS
    H, W = h * S, w * S
    m = min(h, w)
    n = int(np.clip(len(contour) * rng.uniform(1.5, 4), 300, 8000))
    pick = contour[rng.integers(0, len(contour), n)].astype(np.float64)
    out_ang = np.arctan2(pick[:, 0] - cy / S, pick[:, 1] - cx / S)
    roots = np.stack([pick[:, 1] * S, pick[:, 0] * S], 1)
    dirs = out_ang + rng.normal(0, 0.6, n)
    lengths = rng.uniform(0.005, 0.035, n) * m * S
    return np.maximum(hair, cv2.resize(_strand_layers(rng, (H, W), roots, dirs, lengths, S, groups=3), (w, h),
                                       interpolation=cv2.INTER_AREA))


def _fg_veil(rng: np.random.Generator, contour: np.ndarray, alpha: np.ndarray, h: int, w: int):
    """Sometimes a semi-transparent veil (fabric, glass) straddling the outline. Returns ``(alpha, veil)``."""
    m = min(h, w)
    veil = np.zeros((h, w), np.float32)
    if len(contour) and rng.random() < 0.35:
        yx = contour[int(rng.integers(0, len(contour)))]
        v = np.zeros((h, w), np.uint8)
        cv2.ellipse(v, (int(yx[1]), int(yx[0])), (int(rng.uniform(0.06, 0.18) * m), int(rng.uniform(0.04, 0.12) * m)),
                    rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
        veil = cv2.GaussianBlur(v.astype(np.float32) / 255.0, (0, 0), rng.uniform(0.5, 3))
        t = rng.uniform(0.2, 0.6) + 0.2 * (fractal_noise(rng, h, w, 1, base=4, octaves=4) - 0.5)
        alpha = alpha * (1 - veil) + veil * np.maximum(alpha, t)
    return alpha, veil


def _fg_body_colour(rng: np.random.Generator, dist_in: np.ndarray, h: int, w: int):
    """Body colours: a smooth texture with rounded shading and directional light. Returns ``(body_col, light)``."""
    m = min(h, w)
    sm = max(32, m // 4)
    tex = cv2.resize(texture(rng, sm, max(32, int(sm * w / h))), (w, h), interpolation=cv2.INTER_CUBIC)
    tex = tex * (0.75 + 0.25 * fractal_noise(rng, h, w, 1, base=8, octaves=5)[..., None])
    R = max(float(dist_in.max()), 1.0)
    round_shade = np.sqrt(np.clip(dist_in / (0.35 * R), 0, 1))
    y, x = coords(h, w)
    th = rng.uniform(0, 2 * np.pi)
    light = x * np.cos(th) + y * np.sin(th)
    light = (light - light.min()) / max(float(np.ptp(light)), 1e-6)
    shade = (rng.uniform(0.45, 0.7) + 0.3 * round_shade + rng.uniform(0.1, 0.4) * light)[..., None]
    return np.clip(tex * shade, 0, 1), light


def _fg_hair_colour(rng: np.random.Generator, light: np.ndarray, h: int, w: int) -> np.ndarray:
    """Hair colour: dark / brown / blond / grey families, per-strand streaks and highlights."""
    fam = rng.integers(0, 4)
    base = {0: (0.08, 0.06, 0.05), 1: (0.35, 0.22, 0.12), 2: (0.8, 0.65, 0.4), 3: (0.6, 0.6, 0.62)}[int(fam)]
    base = np.clip(np.array(base) * rng.uniform(0.7, 1.3, 3), 0, 1).astype(np.float32)
    if rng.random() < 0.25:
        base = random_colors(rng, 1, sat=(0.2, 0.8), val=(0.2, 0.9))[0]
    streak = fractal_noise(rng, h, w, 1, base=16, octaves=3)
    return base * (0.6 + 0.8 * streak[..., None]) * (0.7 + 0.5 * light[..., None])


def make_photoreal_foreground(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like matting foreground ``(fg, alpha)``: float32 ``h x w x 3`` and ``h x w`` in [0, 1].

    ``fg`` is defined everywhere (hair colour beyond the body), shaded and lit; ``alpha`` has a
    large opaque body, a hair mass or fur with accumulated strand coverage, and sometimes a veil
    (alpha 0.2-0.7), feathered (motion/defocus) outline parts and holes. Under hair or fur the body's
    rim (:data:`HAIR_CORE` hair-mass thicknesses deep) is hair-coloured and opaque, like a head of hair:
    so a trimap's definite foreground holds hair colours, as on real photos. Without that core
    (version 1) closed-form matting underestimated the soft pixels by 0.18 on average (real photos:
    0.01) and a model refining it learned to add alpha that real photos do not have.

    Example:
        >>> fg, a = make_photoreal_foreground(np.random.default_rng(1), 160, 128)
        >>> fg.shape, a.shape, bool(((a > 0) & (a < 1)).any()), bool((a == 1).any())
        ((160, 128, 3), (160, 128), True, True)
    """
    rng = check_rng(rng)
    h, w = int(h), int(w)
    m = min(h, w)
    body, body_bin, dist_in, dist_out, cx, cy = _fg_body(rng, h, w)
    body = _fg_feather(rng, body, h, w)
    body = _fg_holes(rng, body, dist_in, h, w)

    # --- hair mass and/or fur ---
    alpha = body.copy()
    contour = np.argwhere((dist_in > 0) & (dist_in <= 1.5))  # inner boundary pixels (y, x)
    kind = rng.choice(["hair", "fur", "both", "none"], p=[0.45, 0.2, 0.2, 0.15])
    hair = np.zeros((h, w), np.float32)
    thick = rng.uniform(0.03, 0.14) * m   # hair mass thickness (px)
    if len(contour) and kind in ("hair", "both"):
        hair = _fg_hair_mass(rng, contour, cx, cy, thick, dist_out, hair, h, w)
    if len(contour) and kind in ("fur", "both"):
        hair = _fg_fur(rng, contour, cx, cy, hair, h, w)
    alpha = 1 - (1 - alpha) * (1 - hair)

    alpha, veil = _fg_veil(rng, contour, alpha, h, w)
    alpha = np.clip(alpha, 0, 1).astype(np.float32)
    alpha[alpha < 1.0 / 255] = 0.0
    alpha[alpha > 254.0 / 255] = 1.0

    # --- colours ---
    body_col, light = _fg_body_colour(rng, dist_in, h, w)
    hair_col = _fg_hair_colour(rng, light, h, w)
    if kind == "none":
        wb = np.clip(dist_in / 3.0, 0, 1)[..., None]
    else:
        # a head of hair / a pelt is opaque and hair-coloured inside, under its loose strands: paint the
        # body's rim under the hair with the hair colour, so the trimap's definite foreground holds hair
        # colours too (as real Trimap1s do; without it closed-form takes the hair for background)
        near_hair = cv2.distanceTransform((hair < 0.05).astype(np.uint8), cv2.DIST_L2, 3)
        core = (body_bin > 0) & (near_hair < thick * rng.uniform(*HAIR_CORE))
        wb = cv2.GaussianBlur(((body_bin > 0) & ~core).astype(np.float32), (0, 0), 2.0)[..., None]
    fg = body_col * wb + hair_col * (1 - wb) if kind != "none" else body_col
    if veil.any():
        vc = random_colors(rng, 1, sat=(0.0, 0.4), val=(0.6, 1.0))[0]
        fg = fg * (1 - veil[..., None]) + (0.7 * vc + 0.3 * fg) * veil[..., None]
    return np.clip(fg, 0, 1).astype(np.float32), alpha


def photoreal_trimap(alpha: np.ndarray, width: int) -> np.ndarray:
    """A real-width trimap (uint8 0 / 128 / 255) of ``alpha`` (float in [0, 1]): every soft pixel and
    every pixel within ``width`` px of one or of a hard edge is unknown (:func:`mattingkit.trimap.trimap_band`).

    Example:
        >>> a = np.zeros((1, 10), np.float32); a[0, :5] = 1
        >>> photoreal_trimap(a, 2)[0].tolist()
        [255, 255, 255, 128, 128, 128, 128, 0, 0, 0]
    """
    t = trimap_band(np.asarray(alpha, np.float32), int(width))
    return np.where(t == 1.0, 255, np.where(t == 0.5, 128, 0)).astype(np.uint8)


def make_photoreal_item(seed: int, i: int, long_side: tuple[int, int] = (800, 1200)) -> dict:
    """Item ``i`` of seed ``seed``: uint8 ``fg``, ``bg``, ``alpha``, ``photo``, ``trimap`` arrays.

    The photo is the composite of the spilled foreground over the background, with sensor noise
    (JPEG comes when it is written). Items are independent of each other (one generator per item).

    Example:
        >>> it = make_photoreal_item(0, 0, long_side=(128, 128))
        >>> max(it["photo"].shape[:2]), it["alpha"].dtype.name, sorted(np.unique(it["trimap"]).tolist())
        (128, 'uint8', [0, 128, 255])
    """
    rng = item_rng(seed, _STREAM_FG, i)
    h, w = _size(rng, long_side)
    fg, alpha = make_photoreal_foreground(rng, h, w)
    bg = make_photoreal_background(rng, h, w)
    # colour spill: the edge colours of the object pulled towards the (blurred) background behind them
    sp = rng.uniform(*SPILL_RANGE)
    reach = rng.uniform(3, 12) * max(h, w) / 800
    halo = 1 - cv2.GaussianBlur(alpha, (0, 0), reach)  # ~1 far outside, ~0 deep inside
    bg_blur = cv2.GaussianBlur(bg, (0, 0), reach * 2)
    k = (sp * np.clip(halo * 2, 0, 1))[..., None]
    fg = np.clip(fg * (1 - k) + bg_blur * k, 0, 1).astype(np.float32)
    fg8, bg8, a8 = to_uint8(fg), to_uint8(bg), to_uint8(alpha)
    a = a8.astype(np.float32)[..., None] / 255
    photo = fg8.astype(np.float32) / 255 * a + bg8.astype(np.float32) / 255 * (1 - a)
    photo = photo + rng.normal(0, rng.uniform(0.002, 0.012), photo.shape).astype(np.float32)
    band = int(rng.integers(BAND_RANGE[0], BAND_RANGE[1] + 1)) * max(h, w) / 1000  # scales with the image
    trimap = photoreal_trimap(a8.astype(np.float32) / 255, max(1, int(round(band))))
    return {"fg": fg8, "bg": bg8, "alpha": a8, "photo": np.clip(photo, 0, 1), "trimap": trimap}


def _pool_item(seed: int, i: int, long_side: tuple[int, int]) -> np.ndarray:
    rng = item_rng(seed, _STREAM_POOL, i)
    h, w = _size(rng, long_side)
    return make_photoreal_background(rng, h, w)


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_photoreal_data(root: str | Path | None = None, seed: int = 0, n_fg: int = 48, n_backgrounds: int = 48,
                        long_side: tuple[int, int] = (800, 1200), force: bool = False,
                        progress: bool = False) -> dict:
    """Write the photo-like dataset under ``root`` (default ``<data_root>/photoreal``); see the module
    docstring for the layout. Cached: when ``root/photoreal.json`` records the same version, seed and
    options and its files exist, nothing is written (``created`` False) unless ``force``.

    Returns ``{"root", "seed", "version", "counts", "options", "created", "seconds", "paths"}``;
    ``paths["truth"]`` is the adobe-layout folder and ``paths["backgrounds"]`` the pool.
    """
    t0 = time.perf_counter()
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"make_photoreal_data: seed must be an integer >= 0, got {seed!r}")
    for name, v in (("n_fg", n_fg), ("n_backgrounds", n_backgrounds)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"make_photoreal_data: {name} must be an integer >= 1, got {v!r}")
    seed = int(seed)
    counts = {"fg": int(n_fg), "backgrounds": int(n_backgrounds)}
    options = {"long_side": [int(long_side[0]), int(long_side[1])]}
    root = Path(root) if root is not None else env.data_root() / "photoreal"
    paths = {"aim500": str(root / "aim500"), "truth": str(root / "truth"), "backgrounds": str(root / "backgrounds"),
             "marker": str(root / MARKER)}

    def summary(created: bool) -> dict:
        return {"root": str(root), "seed": seed, "version": PHOTOREAL_VERSION, "counts": counts, "options": options,
                "created": created, "seconds": round(time.perf_counter() - t0, 3), "paths": paths}

    old = _read_marker(root)
    if (not force and old is not None and old.get("version") == PHOTOREAL_VERSION and old.get("seed") == seed
            and old.get("counts") == counts and old.get("options") == options
            and all((root / f).is_file() for f in old.get("files", []))):
        return summary(False)
    root.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def put(rel: str, data: bytes) -> None:
        atomic_write_bytes(root / rel, data)
        written.append(rel)

    ls = tuple(options["long_side"])
    for i in range(counts["fg"]):
        name = f"pr_{i:03d}"
        it = make_photoreal_item(seed, i, ls)
        put(f"aim500/original/{name}.jpg", jpeg_bytes(it["photo"]))
        put(f"aim500/mask/{name}.png", png_bytes(it["alpha"]))
        put(f"aim500/trimap/{name}.png", png_bytes(it["trimap"]))
        put(f"truth/fg/{name}.png", png_bytes(it["fg"]))
        put(f"truth/alpha/{name}.png", png_bytes(it["alpha"]))
        put(f"truth/bg/{name}.png", png_bytes(it["bg"]))
        put(f"truth/trimaps/{name}.png", png_bytes(it["trimap"]))
        if progress:
            print(f"photoreal: {i + 1}/{counts['fg']} foregrounds", flush=True)
    for i in range(counts["backgrounds"]):
        put(f"backgrounds/bg_{i:03d}.jpg", jpeg_bytes(_pool_item(seed, i, ls), subsampling=2))
    if old is not None:  # drop files an older marker listed that this run did not write again
        keep = set(written)
        for rel in old.get("files", []):
            p = root / rel
            if rel not in keep and ".." not in Path(rel).parts and p.is_file():
                p.unlink()
    marker = {"version": PHOTOREAL_VERSION, "seed": seed, "counts": counts, "options": options,
              "generator": __name__, "files": written}
    atomic_write_text(root / MARKER, json.dumps(marker, indent=1) + "\n")
    return summary(True)

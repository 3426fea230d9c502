"""The embedded demo dataset: synthetic matting data written in the real on-disk layouts.

Everything here is generated from a seed, on the CPU, in a few seconds, so the notebooks, the CLI and
the tests can run end to end without any download. The pictures are built to look like matting data,
not like blobs:

- foregrounds (:func:`make_foreground`) have anti-aliased and feathered edges, hundreds of curved
  1-2 px hair-like strands with partial alpha at their borders, a semi-transparent "veil / glass"
  region (alpha about 0.3-0.7), holes (alpha 0 inside the object), and multi-colour textures;
- backgrounds (:func:`make_background`) are busy: fractal noise, warped stripes, gradients, random
  shapes, checkers;
- competition masks (:func:`make_dense_alpha`) are soft and density-like, as in the ecom.tech
  competition (background about 28-35 grey, grey tones inside the products).

:func:`make_demo_data` writes (see docs/CONTRACTS.md, "Demo data on disk")::

    <root>/aim500/original/demo_000.jpg   composite photo  alpha*fg + (1-alpha)*bg  (JPEG q92)
    <root>/aim500/mask/demo_000.png       alpha (8-bit gray)
    <root>/aim500/trimap/demo_000.png     trimap 0/128/255 (unknown covers every 0<alpha<1 pixel)
    <root>/truth/fg/demo_000.png          the clean foreground colours
    <root>/truth/bg/demo_000.png          the background the photo was made from
    <root>/backgrounds/**.{jpg,png}       background pool: nested folders, mixed formats, varied sizes
    <root>/competition/train_dataset/images/0001.jpg + masks/0001.png
    <root>/competition/test_dataset/orig_1024/0001.png     RGB 1024x1024
    <root>/competition/sample_submission.csv               filename,image_utf (base64 8-bit gray PNG)
    <root>/demo.json                                       marker: seed, counts, files

The original is exactly the composite of the 8-bit truth files (``to_uint8(composite(fg8/255,
bg8/255, a8/255))``) before JPEG encoding. The sample submission holds the demo test images' own
density masks, so scoring it against itself gives MSE 0.

Example:
    >>> import tempfile
    >>> s = make_demo_data(tempfile.mkdtemp(), seed=0, n_aim=2, n_backgrounds=2, n_comp_train=1,
    ...                    n_comp_test=1)
    >>> s["counts"]["aim500"], s["created"]
    (2, True)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from .. import env
from ..compose import composite
from ..io import atomic_write_bytes, atomic_write_text, png_bytes, to_uint8
from ..submission import submission_csv
from .drawing import (
    LAYERS,
    check_rng,
    colormap,
    coords,
    draw_strands,
    fractal_noise,
    item_rng,
    jpeg_bytes,
    layer_shapes,
    radial_shape,
    random_colors,
    texture,
)

__all__ = [
    "DEMO_VERSION",
    "make_background",
    "make_foreground",
    "make_dense_alpha",
    "trimap_from_alpha8",
    "make_demo_data",
]

#: Bump when the generator changes what it writes (an old marker then no longer counts as a no-op).
DEMO_VERSION = 1
MARKER = "demo.json"
COMP_SIZE = 1024

# streams of the per-item generators (never reorder: they define the data for a seed)
_STREAM_AIM, _STREAM_BG_POOL, _STREAM_COMP_TRAIN, _STREAM_COMP_TEST = 1, 2, 3, 4
_SS = 4  # supersampling factor for anti-aliased drawing


def _check_size(h: int, w: int, minimum: int = 8) -> tuple[int, int]:
    h, w = int(h), int(w)
    if h < minimum or w < minimum:
        raise ValueError(f"image size must be at least {minimum}x{minimum} pixels, got h={h}, w={w}")
    return h, w




# --------------------------------------------------------------------------------------------
# Public pure generators
# --------------------------------------------------------------------------------------------
def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A busy, textured background: float32 RGB ``h x w x 3`` in [0, 1].

    Two or three layers (fractal noise, warped stripes, gradients, checkers, random shapes) blended
    through soft noise masks, plus fine grain. Deterministic given the generator's state.

    Example:
        >>> bg = make_background(np.random.default_rng(0), 64, 96)
        >>> bg.shape, bg.dtype, bool(bg.std() > 0.02)
        ((64, 96, 3), dtype('float32'), True)
    """
    rng = check_rng(rng)
    h, w = _check_size(h, w)
    order = list(rng.permutation(len(LAYERS))[: int(rng.integers(2, 4))])
    if not {1, 3, 4} & set(order):  # always at least one crisp layer: stripes, checker or shapes
        order.append(int(rng.choice([1, 3, 4])))
    out = LAYERS[order[0]](rng, h, w)
    for k in order[1:]:
        layer = LAYERS[k](rng, h, w) if LAYERS[k] is not layer_shapes else layer_shapes(rng, h, w, out)
        m = fractal_noise(rng, h, w, 1, base=int(rng.integers(2, 5)), octaves=4)
        edge = rng.uniform(0.05, 0.3)  # soft or crisp transitions between layers
        m = np.clip((m - 0.5) / edge + 0.5, 0, 1)[..., None]
        out = out * (1 - m) + layer * m
    out = out + rng.normal(0, rng.uniform(0.0, 0.025), (h, w, 1)).astype(np.float32)  # sensor grain
    return np.clip(out, 0, 1).astype(np.float32)


def make_foreground(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: PLR0915 - one random draw order: a split would change the demo data's bytes
    """A synthetic matting foreground: ``(fg, alpha)``, float32 ``h x w x 3`` and ``h x w`` in [0, 1].

    The object is a smooth random outline drawn 4x supersampled (anti-aliased edges), partly
    feathered; it has 1-3 holes (alpha 0 inside), a semi-transparent veil / glass region (alpha about
    0.3-0.7, partly outside the body), and 150-600 curved 0.5-1.5 px hair strands with partial alpha
    along one or more border arcs (or all around: fur). ``fg`` is defined everywhere: a multi-colour
    texture on the body, a separate hair colour, a tinted veil colour.

    One function on purpose (about 90 lines): its draws are one random sequence that the embedded demo
    data reproduces byte for byte; the steps are marked by comments in draw order.

    Example:
        >>> fg, a = make_foreground(np.random.default_rng(0), 96, 128)
        >>> fg.shape, a.shape, bool(((a > 0) & (a < 1)).any()), bool((a == 1).any())
        ((96, 128, 3), (96, 128), True, True)
    """
    rng = check_rng(rng)
    h, w = _check_size(h, w, 32)
    S = _SS
    H, W = h * S, w * S
    m = min(h, w)

    # --- body outline (hi-res coordinates) ---
    theta, rad, rmin = radial_shape(rng)
    r0 = rng.uniform(0.24, 0.32) * m * S
    sx, sy = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.25)
    rot = rng.uniform(0, 2 * np.pi)
    cx = W / 2 + rng.uniform(-0.1, 0.1) * w * S
    cy = H / 2 + rng.uniform(-0.1, 0.1) * h * S
    cr, sr = np.cos(rot), np.sin(rot)

    def to_xy(t, rr):
        ex, ey = rr * sx * np.cos(t), rr * sy * np.sin(t)
        return np.stack([cx + ex * cr - ey * sr, cy + ex * sr + ey * cr], -1)

    body_hr = np.zeros((H, W), np.uint8)
    cv2.fillPoly(body_hr, [np.round(to_xy(theta, r0 * rad)).astype(np.int32)], 255, cv2.LINE_AA)
    if rng.random() < 0.5:  # a second lobe (head / handle / arm)
        ta = rng.uniform(0, 2 * np.pi)
        c2 = to_xy(np.array([ta]), np.array([r0 * rmin * 0.9]))[0]
        axes = (int(r0 * rng.uniform(0.3, 0.5)), int(r0 * rng.uniform(0.3, 0.5)))
        cv2.ellipse(body_hr, (int(c2[0]), int(c2[1])), axes, float(np.degrees(ta)), 0, 360, 255, -1, cv2.LINE_AA)
    body = cv2.resize(body_hr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    # --- holes: well inside the body, on the side away from the veil ---
    theta_veil = rng.uniform(0, 2 * np.pi)
    holes_hr = np.zeros((H, W), np.uint8)
    n_holes = int(rng.integers(1, 4))
    inner = r0 * rmin * min(sx, sy)  # radius of a disc surely inside the body
    for _ in range(n_holes):
        t = theta_veil + np.pi + rng.uniform(-1.0, 1.0)
        d = rng.uniform(0.1, 0.4) * inner / max(sx, sy)  # outline coordinates: |image offset| <= 0.4 inner
        hc = to_xy(np.array([t]), np.array([d]))[0]
        ax = max(rng.uniform(0.1, 0.24) * inner, 5.0 * S)
        ay = max(ax * rng.uniform(0.5, 1.0), 3.0 * S)
        cv2.ellipse(holes_hr, (int(hc[0]), int(hc[1])), (int(ax), int(ay)), rng.uniform(0, 180), 0, 360, 255,
                    -1, cv2.LINE_AA)
    holes = cv2.resize(holes_hr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    # --- feathering on part of the border (motion blur / defocus / fuzzy material) ---
    soft = cv2.GaussianBlur(body, (0, 0), rng.uniform(0.8, 2.2))
    mix = np.clip((fractal_noise(rng, h, w, 1, base=2, octaves=3) - 0.5) * 4 + 0.5, 0, 1)
    body_f = mix * soft + (1 - mix) * body

    # --- semi-transparent veil / glass region straddling the border ---
    veil_hr = np.zeros((H, W), np.uint8)
    vc = to_xy(np.array([theta_veil]), np.array([r0 * rmin * rng.uniform(0.85, 1.05)]))[0]
    va = (int(r0 * rng.uniform(0.28, 0.42)), int(r0 * rng.uniform(0.18, 0.32)))
    cv2.ellipse(veil_hr, (int(vc[0]), int(vc[1])), va, float(np.degrees(theta_veil)) + rng.uniform(-30, 30),
                0, 360, 255, -1, cv2.LINE_AA)
    g = cv2.resize(veil_hr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 2.0))
    t_map = rng.uniform(0.38, 0.62) + 0.16 * (fractal_noise(rng, h, w, 1, base=3, octaves=3) - 0.5)
    alpha = body_f * (1 - g) + g * t_map
    alpha = alpha * (1 - holes)

    # --- hair strands along border arcs ---
    n_strands = int(rng.integers(150, 600))
    if rng.random() < 0.3:  # fur all around
        ts = rng.uniform(0, 2 * np.pi, n_strands)
    else:
        n_arcs = int(rng.integers(1, 4))
        centers = theta_veil + np.pi / 2 + rng.uniform(-0.6, 0.6, n_arcs) + np.arange(n_arcs) * np.pi / 2
        spans = rng.uniform(0.5, 1.6, n_arcs)
        which = rng.integers(0, n_arcs, n_strands)
        ts = centers[which] + rng.uniform(-0.5, 0.5, n_strands) * spans[which]
    r_at = np.interp(np.mod(ts, 2 * np.pi), theta, rad, period=2 * np.pi)
    roots = to_xy(ts, r0 * r_at * rng.uniform(0.82, 0.97, n_strands))
    outward = np.arctan2(roots[:, 1] - cy, roots[:, 0] - cx)
    dirs = outward + rng.normal(0, 0.35, n_strands)
    lengths = rng.uniform(0.06, 0.26, n_strands) * m * S
    hair_hr = draw_strands(rng, (H, W), roots, dirs, lengths, S)
    hair = cv2.resize(hair_hr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    alpha = np.clip(np.maximum(alpha, hair), 0, 1).astype(np.float32)

    # --- colours ---
    tex = texture(rng, h, w)
    hair_base = random_colors(rng, 2, sat=(0.2, 0.9), val=(0.2, 1.0))
    hair_col = colormap(fractal_noise(rng, h, w, 1, base=4, octaves=3), hair_base)
    veil_col = random_colors(rng, 1, sat=(0.0, 0.5), val=(0.7, 1.0))[0]
    wb = cv2.GaussianBlur(body, (0, 0), 1.0)[..., None]
    fg = tex * wb + hair_col * (1 - wb)
    fg = fg * (1 - g[..., None]) + (0.75 * veil_col + 0.25 * fg) * g[..., None]
    return np.clip(fg, 0, 1).astype(np.float32), alpha


def make_dense_alpha(rng: np.random.Generator, h: int = COMP_SIZE, w: int = COMP_SIZE
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A competition-style soft, density-like mask and the object opacity it was made from.

    Returns ``(mask, coverage)``, float32 ``h x w`` in [0, 1]. ``mask`` looks like the ecom.tech
    masks: background about 28-35 grey (of 255) with slow variation, products in grey tones (labels
    and transparent parts darker, rims brighter), soft blurred edges, sometimes a thin hook.
    ``coverage`` (0 on the background) is the opacity used to composite the product photo.

    Example:
        >>> mask, cov = make_dense_alpha(np.random.default_rng(0), 128, 128)
        >>> 25 <= round(float(np.median(mask[:8, :8])) * 255) <= 45, float(cov.max()) > 0.5
        (True, True)
    """
    rng = check_rng(rng)
    h, w = _check_size(h, w, 32)
    m = min(h, w)
    cov = np.zeros((h, w), np.float32)
    dens = np.zeros((h, w), np.float32)
    n_obj = 1 if rng.random() < 0.6 else 2
    for i in range(n_obj):
        shape = np.zeros((h, w), np.uint8)
        scale = rng.uniform(0.45, 0.75) if i == 0 else rng.uniform(0.2, 0.35)
        cx = w * (0.5 + rng.uniform(-0.1, 0.1)) if i == 0 else w * rng.uniform(0.15, 0.85)
        cy = h * (0.55 + rng.uniform(-0.1, 0.1)) if i == 0 else h * rng.uniform(0.15, 0.3)
        half_w, half_h = scale * m * rng.uniform(0.25, 0.45), scale * m * rng.uniform(0.35, 0.5)
        kind = rng.integers(0, 4)
        if kind == 0:  # box / package with rounded corners
            rr = int(min(half_w, half_h) * rng.uniform(0.05, 0.3))
            x0, y0, x1, y1 = int(cx - half_w), int(cy - half_h), int(cx + half_w), int(cy + half_h)
            cv2.rectangle(shape, (x0 + rr, y0), (x1 - rr, y1), 255, -1)
            cv2.rectangle(shape, (x0, y0 + rr), (x1, y1 - rr), 255, -1)
            for px, py in ((x0 + rr, y0 + rr), (x1 - rr, y0 + rr), (x0 + rr, y1 - rr), (x1 - rr, y1 - rr)):
                cv2.circle(shape, (px, py), rr, 255, -1, cv2.LINE_AA)
        elif kind == 1:  # bottle: body + neck + cap
            cv2.ellipse(shape, (int(cx), int(cy + half_h * 0.2)), (int(half_w * 0.8), int(half_h * 0.8)), 0, 0,
                        360, 255, -1, cv2.LINE_AA)
            nw = half_w * rng.uniform(0.2, 0.35)
            cv2.rectangle(shape, (int(cx - nw), int(cy - half_h)), (int(cx + nw), int(cy)), 255, -1)
        elif kind == 2:  # toy / figure: star-shaped outline with spikes
            theta, rad, _ = radial_shape(rng, 512)
            spikes = 1 + 0.12 * np.maximum(0, np.sin(theta * rng.integers(8, 20))) ** 4
            pts = np.stack([cx + half_w * 1.2 * rad * spikes * np.cos(theta),
                            cy + half_h * rad * spikes * np.sin(theta)], 1)
            cv2.fillPoly(shape, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
        else:  # bag / blister pack with a hanging hook
            cv2.rectangle(shape, (int(cx - half_w), int(cy - half_h * 0.8)), (int(cx + half_w), int(cy + half_h)),
                          255, -1)
            hook_r = int(max(6, half_w * 0.12))
            hx, hy = int(cx), int(cy - half_h * 0.8 - hook_r * 1.6)
            cv2.ellipse(shape, (hx, hy), (hook_r, hook_r), 0, 180, 450, 255, max(3, m // 150), cv2.LINE_AA)
            cv2.line(shape, (hx, hy + hook_r), (hx, int(cy - half_h * 0.8)), 255, max(3, m // 150), cv2.LINE_AA)
        s = shape.astype(np.float32) / 255.0
        # grey tones inside: base density, slow variation, darker labels / windows, brighter rim
        d = rng.uniform(0.6, 0.92) + 0.2 * (fractal_noise(rng, h, w, 1, base=3, octaves=4) - 0.5)
        for _ in range(int(rng.integers(1, 5))):
            lw, lh = half_w * rng.uniform(0.2, 0.8), half_h * rng.uniform(0.08, 0.4)
            lx, ly = cx + rng.uniform(-0.5, 0.5) * half_w, cy + rng.uniform(-0.6, 0.6) * half_h
            lab = np.zeros((h, w), np.uint8)
            cv2.rectangle(lab, (int(lx - lw), int(ly - lh)), (int(lx + lw), int(ly + lh)), 255, -1)
            lab_f = cv2.GaussianBlur(lab.astype(np.float32) / 255.0, (0, 0), 3)
            d = d * (1 - lab_f) + rng.uniform(0.3, 0.65) * lab_f
        rim = np.clip(s - cv2.GaussianBlur(s, (0, 0), max(2.0, m / 80)), 0, 1) * 2.5
        d = np.clip(d + rim, 0, 1)
        dens = dens * (1 - s) + d * s
        cov = np.maximum(cov, s)
    sigma = rng.uniform(1.5, 4.0) * m / 1024 * 2
    obj = cv2.GaussianBlur(cov * dens, (0, 0), sigma)
    opacity = cv2.GaussianBlur(cov * np.clip(0.35 + 0.75 * dens, 0, 1), (0, 0), sigma)
    floor = rng.uniform(28, 35) / 255 + (fractal_noise(rng, h, w, 1, base=2, octaves=4) - 0.5) * rng.uniform(
        4, 9) / 255
    floor = floor + rng.normal(0, 0.8 / 255, (h, w)).astype(np.float32)
    mask = np.clip(floor + (1 - floor) * obj, 0, 1).astype(np.float32)
    return mask, np.clip(opacity, 0, 1).astype(np.float32)


def _studio_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A light e-commerce backdrop: soft gradient, vignette, slight tint."""
    y, x = coords(h, w)
    base = rng.uniform(0.75, 0.97)
    tint = random_colors(rng, 1, sat=(0.0, 0.25), val=(0.8, 1.0))[0]
    r2 = ((x / w - 0.5) ** 2 + (y / h - 0.5) ** 2) * 2
    lum = base - rng.uniform(0.05, 0.25) * r2 + rng.uniform(-0.08, 0.08) * (y / h - 0.5)
    return np.clip(lum[..., None] * tint / tint.max(), 0, 1).astype(np.float32)


def trimap_from_alpha8(alpha8: np.ndarray, radius: int) -> np.ndarray:
    """Trimap {0, 0.5, 1} from an 8-bit alpha: unknown covers every 0<alpha<255 pixel and every
    0/255 boundary, dilated by ``radius`` px (elliptical kernel); the rest is fg (255) or bg (0).

    Example:
        >>> a8 = np.zeros((9, 9), np.uint8); a8[3:6, 3:6] = 255; a8[4, 4] = 128
        >>> t = trimap_from_alpha8(a8, 1)
        >>> float(t[4, 4]), float(t[0, 0])
        (0.5, 0.0)
    """
    a8 = np.asarray(alpha8)
    if a8.dtype != np.uint8 or a8.ndim != 2:
        raise ValueError(f"alpha8 must be a 2-D uint8 array, got {a8.dtype} {a8.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    fg = (a8 == 255).astype(np.uint8)
    seed = ((a8 > 0) & (a8 < 255)).astype(np.uint8)
    seed |= cv2.dilate(fg, np.ones((3, 3), np.uint8)) & (a8 == 0)  # hard 0->255 steps
    if radius > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        unknown = cv2.dilate(seed, k).astype(bool)
    else:
        unknown = seed.astype(bool)
    tri = np.where(unknown, 0.5, np.where(fg.astype(bool), 1.0, 0.0))
    return tri.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------
def _aim_item(seed: int, i: int) -> dict:
    rng = item_rng(seed, _STREAM_AIM, i)
    h, w = int(rng.integers(192, 321)), int(rng.integers(192, 321))
    fg, alpha = make_foreground(rng, h, w)
    bg = make_background(rng, h, w)
    fg8, bg8, a8 = to_uint8(fg), to_uint8(bg), to_uint8(alpha)  # compose what the PNGs hold, exactly
    photo = composite(fg8.astype(np.float32) / 255, bg8.astype(np.float32) / 255, a8.astype(np.float32) / 255)
    trimap = trimap_from_alpha8(a8, int(rng.integers(2, 6)))
    return {"fg": fg8, "bg": bg8, "alpha": a8, "photo": photo, "trimap": trimap}


def _bg_pool_item(seed: int, i: int) -> tuple[str, bytes]:
    rng = item_rng(seed, _STREAM_BG_POOL, i)
    h, w = int(rng.integers(200, 641)), int(rng.integers(200, 641))
    img = make_background(rng, h, w)
    folders = ("textures", "textures/fine", "scenes", "scenes/indoor/2024")
    folder = folders[(i // 2) % len(folders)]  # each folder gets a .jpg and a .png
    if i % 2 == 0:
        return f"{folder}/bg_{i:03d}.jpg", jpeg_bytes(img, subsampling=2)
    return f"{folder}/bg_{i:03d}.png", png_bytes(img)


def _comp_item(seed: int, stream: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = item_rng(seed, stream, i)
    mask, cov = make_dense_alpha(rng, COMP_SIZE, COMP_SIZE)
    small = 256  # textures are made small and upsampled: products are smooth, and it is fast
    tex = cv2.resize(texture(rng, small, small), (COMP_SIZE, COMP_SIZE), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.65:
        bg = _studio_background(rng, COMP_SIZE, COMP_SIZE)
    else:
        bg = cv2.resize(make_background(rng, small, small), (COMP_SIZE, COMP_SIZE), interpolation=cv2.INTER_CUBIC)
    photo = composite(np.clip(tex, 0, 1), np.clip(bg, 0, 1), cov)
    return photo, mask


def _counts(n_aim, n_backgrounds, n_comp_train, n_comp_test) -> dict:
    counts = {"aim500": n_aim, "backgrounds": n_backgrounds, "competition_train": n_comp_train,
              "competition_test": n_comp_test}
    for k, v in counts.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"make_demo_data: {k} count must be an integer >= 1, got {v!r}")
    return {k: int(v) for k, v in counts.items()}


def _summary(root: Path, seed: int, counts: dict, created: bool, seconds: float) -> dict:
    comp = root / "competition"
    return {
        "root": str(root),
        "seed": seed,
        "version": DEMO_VERSION,
        "counts": dict(counts),
        "created": created,
        "seconds": round(seconds, 3),
        "paths": {
            "aim500": str(root / "aim500"),
            "truth_fg": str(root / "truth" / "fg"),
            "truth_bg": str(root / "truth" / "bg"),
            "backgrounds": str(root / "backgrounds"),
            "competition": str(comp),
            "competition_test": str(comp / "test_dataset" / "orig_1024"),
            "sample_submission": str(comp / "sample_submission.csv"),
            "marker": str(root / MARKER),
        },
    }


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_demo_data(root: str | Path | None = None, seed: int = 0, n_aim: int = 24, n_backgrounds: int = 16,
                   n_comp_train: int = 8, n_comp_test: int = 4, force: bool = False) -> dict:
    """Write the demo dataset under ``root`` (default ``<data_root>/demo``) and return a summary.

    Deterministic: the same seed and counts give byte-identical files. When ``root/demo.json``
    says the same seed, counts and generator version and all its files exist, nothing is written
    (``created`` is False) unless ``force``. Every file is written atomically; the marker last, so
    an interrupted run is redone next time. Files listed by an older marker and not written again
    (e.g. after lowering a count) are removed; nothing else is deleted.

    Returns ``{"root", "seed", "version", "counts", "created", "seconds", "paths": {...}}``.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> a = make_demo_data(d, seed=1, n_aim=1, n_backgrounds=1, n_comp_train=1, n_comp_test=1)
        >>> b = make_demo_data(d, seed=1, n_aim=1, n_backgrounds=1, n_comp_train=1, n_comp_test=1)
        >>> a["created"], b["created"], sorted(b["paths"])[:3]
        (True, False, ['aim500', 'backgrounds', 'competition'])
    """
    t0 = time.perf_counter()
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"make_demo_data: seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    counts = _counts(n_aim, n_backgrounds, n_comp_train, n_comp_test)
    root = Path(root) if root is not None else env.data_root() / "demo"
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"make_demo_data: {root} exists and is not a folder")

    old = _read_marker(root)
    if (not force and old is not None and old.get("version") == DEMO_VERSION and old.get("seed") == seed
            and old.get("counts") == counts and all((root / f).is_file() for f in old.get("files", []))):
        return _summary(root, seed, counts, False, time.perf_counter() - t0)

    root.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: bytes) -> str:
        atomic_write_bytes(root / rel, data)
        return rel

    def aim_task(i: int) -> list[str]:
        name = f"demo_{i:03d}"
        item = _aim_item(seed, i)
        return [put(f"aim500/original/{name}.jpg", jpeg_bytes(item["photo"])),
                put(f"aim500/mask/{name}.png", png_bytes(item["alpha"])),
                put(f"aim500/trimap/{name}.png", png_bytes(item["trimap"])),
                put(f"truth/fg/{name}.png", png_bytes(item["fg"])),
                put(f"truth/bg/{name}.png", png_bytes(item["bg"]))]

    def bg_task(i: int) -> list[str]:
        rel, data = _bg_pool_item(seed, i)
        return [put(f"backgrounds/{rel}", data)]

    def train_task(i: int) -> list[str]:
        stem = f"{i + 1:04d}"
        photo, mask = _comp_item(seed, _STREAM_COMP_TRAIN, i)
        return [put(f"competition/train_dataset/images/{stem}.jpg", jpeg_bytes(photo, subsampling=2)),
                put(f"competition/train_dataset/masks/{stem}.png", png_bytes(mask))]

    def test_task(i: int) -> tuple[list[str], tuple[str, np.ndarray]]:
        stem = f"{i + 1:04d}"
        photo, mask = _comp_item(seed, _STREAM_COMP_TEST, i)
        rel = put(f"competition/test_dataset/orig_1024/{stem}.png", png_bytes(photo))
        return [rel], (stem, mask)

    # Items are independent (one generator per item): a smaller count gives the same first files.
    # (A thread pool was measured: no gain on 2 busy cores, so items are made one after another.)
    test_results = [test_task(i) for i in range(counts["competition_test"])]
    written = [rel for i in range(counts["competition_train"]) for rel in train_task(i)]
    written += [rel for i in range(counts["aim500"]) for rel in aim_task(i)]
    written += [rel for i in range(counts["backgrounds"]) for rel in bg_task(i)]
    written += [rel for files, _ in test_results for rel in files]
    sample = submission_csv(row for _, row in test_results)   # the test masks themselves: MSE 0
    written.append(put("competition/sample_submission.csv", sample))

    # drop files an older marker listed that this run did not write again (only those)
    if old is not None:
        keep = set(written)
        for rel in old.get("files", []):
            p = root / rel
            if rel not in keep and ".." not in Path(rel).parts and p.is_file():
                p.unlink()

    seconds = time.perf_counter() - t0
    marker = {"version": DEMO_VERSION, "seed": seed, "counts": counts, "generator": __name__,
              "files": written}
    atomic_write_text(root / MARKER, json.dumps(marker, indent=1) + "\n")
    return _summary(root, seed, counts, True, seconds)

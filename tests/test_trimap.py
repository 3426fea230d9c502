"""Trimap synthesis: exact properties on random soft blobs (hypothesis) and real alphas.

Band widths are checked against an independent brute-force distance computation (small images) and
against SciPy's exact EDT (real alphas), and measured directly on straight edges and disks.
"""
from __future__ import annotations

import doctest
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import mattingkit.trimap as trimap_mod
from mattingkit.config import TrimapConfig
from mattingkit.io import read_alpha
from mattingkit.trimap import (
    random_trimap,
    trimap_band,
    trimap_erode_dilate,
    trimap_from_mask,
    unknown_share,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alphamatting_dev"
REAL_ALPHAS = sorted((SHARED / "alpha").glob("*.png")) if (SHARED / "alpha").is_dir() else []

SETTINGS = settings(max_examples=25, deadline=None)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def soft_blobs(seed: int, h: int, w: int, softness: float) -> np.ndarray:
    """Random blobs with soft edges (a ramp ``softness`` field units wide; 0 = hard), 8-bit quantised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.full((h, w), -np.inf, np.float32)   # > 0 inside a blob, < 0 outside
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.1, 0.4) * min(h, w)
        field = np.maximum(field, 1.0 - np.hypot(yy - cy, xx - cx) / r)
    if softness <= 0:
        alpha = (field > 0.0).astype(np.float32)
    else:
        alpha = np.clip(field / softness + 0.5, 0.0, 1.0)
    if rng.random() < 0.5:  # a hard-edged rectangle too, so hard fg/bg edges always occur
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        alpha[y0:y0 + h // 3, x0:x0 + w // 3] = 1.0
    return (np.rint(alpha * 255.0) / 255.0).astype(np.float32)  # as read from an 8-bit PNG


alphas = st.builds(
    soft_blobs,
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(32, 96),
    w=st.integers(32, 96),
    softness=st.sampled_from([0.0, 0.05, 0.2, 0.6]),
)


def brute_force_band(alpha: np.ndarray, width: float) -> np.ndarray:
    """Unknown mask by definition: OR of the target masks shifted by every integer offset (dy, dx)
    with dy^2 + dx^2 <= radius^2 (exact integer geometry, no distance transform)."""
    fg, bg = alpha == 1.0, alpha == 0.0
    soft = ~(fg | bg)
    h, w = alpha.shape

    def within(targets: np.ndarray, radius: float) -> np.ndarray:
        out = np.zeros_like(targets)
        r = int(np.floor(radius))
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx > radius * radius or abs(dy) >= h or abs(dx) >= w:
                    continue
                # out[y, x] |= targets[y + dy, x + dx]
                out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] |= \
                    targets[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        return out

    unknown = soft | within(soft, width)
    # hard edge half-way between pixels: distance to the edge = distance to the other class - 0.5
    unknown |= fg & within(bg, width + 0.5)
    unknown |= bg & within(fg, width + 0.5)
    return unknown


def assert_valid(trimap: np.ndarray, alpha: np.ndarray, all_soft_unknown: bool = True) -> None:
    assert trimap.dtype == np.float32
    assert trimap.shape == alpha.shape
    assert set(np.unique(trimap).tolist()) <= {0.0, 0.5, 1.0}
    assert np.all(alpha[trimap == 1.0] == 1.0), "definite fg outside alpha == 1"
    assert np.all(alpha[trimap == 0.0] == 0.0), "definite bg outside alpha == 0"
    if all_soft_unknown:
        soft = (alpha > 0) & (alpha < 1)
        assert np.all(trimap[soft] == 0.5), "a 0 < alpha < 1 pixel is not unknown"


def scipy_band(alpha: np.ndarray, width: float) -> np.ndarray:
    """The band definition with SciPy's exact float64 EDT (a different algorithm from OpenCV's)."""
    fg, bg = alpha == 1.0, alpha == 0.0
    soft = ~(fg | bg)
    unknown = soft.copy()
    if soft.any():
        unknown |= ndimage.distance_transform_edt(~soft) <= width
    if fg.any() and bg.any():
        unknown |= fg & (ndimage.distance_transform_edt(~bg) - 0.5 <= width)
        unknown |= bg & (ndimage.distance_transform_edt(~fg) - 0.5 <= width)
    return unknown


# --------------------------------------------------------------------------------------------
# Property tests on random soft blobs
# --------------------------------------------------------------------------------------------
@SETTINGS
@given(alpha=alphas, seed=st.integers(0, 2**31 - 1), k_lo=st.integers(1, 12), k_span=st.integers(0, 12),
       iterations=st.integers(1, 2))
def test_erode_dilate_properties(alpha, seed, k_lo, k_span, iterations):
    kr = (k_lo, k_lo + k_span)
    t = trimap_erode_dilate(alpha, np.random.default_rng(seed), kernel_range=kr, iterations=iterations)
    assert_valid(t, alpha)
    again = trimap_erode_dilate(alpha, np.random.default_rng(seed), kernel_range=kr, iterations=iterations)
    np.testing.assert_array_equal(t, again)
    # fg only shrinks, the non-transparent region only grows
    assert np.all((t == 1) <= (alpha == 1))
    assert np.all((alpha > 0) <= (t > 0))


@SETTINGS
@given(alpha=alphas, width=st.integers(0, 20))
def test_band_matches_brute_force_definition(alpha, width):
    t = trimap_band(alpha, width)
    assert_valid(t, alpha)
    np.testing.assert_array_equal(t == 0.5, brute_force_band(alpha, width))
    np.testing.assert_array_equal(t, trimap_band(alpha, width))


@SETTINGS
@given(alpha=alphas, width=st.integers(0, 48).map(lambda q: q / 4))   # quarter-pixel widths
def test_band_fractional_width_matches_scipy(alpha, width):
    t = trimap_band(alpha, width)
    assert_valid(t, alpha)
    np.testing.assert_array_equal(t == 0.5, scipy_band(alpha, width))


@SETTINGS
@given(alpha=alphas, band=st.integers(0, 15),
       thresholds=st.tuples(st.floats(0.0, 0.45), st.floats(0.55, 1.0)))
def test_from_mask_properties(alpha, band, thresholds):
    lo, hi = thresholds
    t = trimap_from_mask(alpha, fg_threshold=hi, bg_threshold=lo, band=band)
    assert t.dtype == np.float32 and set(np.unique(t).tolist()) <= {0.0, 0.5, 1.0}
    assert np.all(alpha[t == 1] >= hi)
    assert np.all(alpha[t == 0] <= lo)
    assert np.all(t[(alpha > lo) & (alpha < hi)] == 0.5)
    # the band is the same construction as trimap_band on the thresholded mask
    three = np.where(alpha >= hi, 1.0, np.where(alpha <= lo, 0.0, 0.5)).astype(np.float32)
    np.testing.assert_array_equal(t == 0.5, brute_force_band(three, band))


@SETTINGS
@given(alpha=alphas, width=st.integers(0, 15))
def test_from_mask_with_exact_thresholds_is_band(alpha, width):
    np.testing.assert_array_equal(trimap_from_mask(alpha, 1.0, 0.0, band=width), trimap_band(alpha, width))


@SETTINGS
@given(alpha=alphas, seed=st.integers(0, 2**31 - 1), method=st.sampled_from(["erode_dilate", "band", "mixed"]))
def test_random_trimap_properties(alpha, seed, method):
    cfg = TrimapConfig(method=method, kernel_range=[1, 15], band_width_min=0, band_width=12)
    t = random_trimap(alpha, np.random.default_rng(seed), cfg)
    assert_valid(t, alpha)
    np.testing.assert_array_equal(t, random_trimap(alpha, np.random.default_rng(seed), cfg))


# --------------------------------------------------------------------------------------------
# Exact geometry: kernel sizes and band widths measured on straight edges and disks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 5, 9, 15])
def test_erode_dilate_kernel_size_moves_straight_edges_by_half_the_kernel(k):
    alpha = np.zeros((80, 80), np.float32)
    alpha[20:60, 20:60] = 1.0
    t = trimap_erode_dilate(alpha, np.random.default_rng(0), kernel_range=(k, k))
    r = k // 2
    ys, xs = np.nonzero(t == 1)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20 + r, 59 - r, 20 + r, 59 - r)
    ys, xs = np.nonzero(t > 0)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20 - r, 59 + r, 20 - r, 59 + r)


def test_erode_dilate_draws_two_independent_sizes_from_rng():
    alpha = np.zeros((96, 96), np.float32)
    alpha[24:72, 24:72] = 1.0
    pairs = []
    for seed in range(40):
        t = trimap_erode_dilate(alpha, np.random.default_rng(seed), kernel_range=(1, 21))
        pairs.append((int(np.nonzero(t == 1)[0].min()) - 24, 24 - int(np.nonzero(t > 0)[0].min())))
    shrink, grow = {p[0] for p in pairs}, {p[1] for p in pairs}
    assert len(shrink) > 4 and len(grow) > 4           # sizes vary with the seed
    assert sum(s != g for s, g in pairs) > 20          # erode and dilate sizes drawn separately
    assert min(shrink) >= 0 and max(shrink) <= 10      # within kernel_range // 2
    assert min(grow) >= 0 and max(grow) <= 10


def test_erode_dilate_kernel_one_marks_exactly_the_soft_pixels():
    alpha = soft_blobs(3, 64, 64, 0.3)
    t = trimap_erode_dilate(alpha, np.random.default_rng(0), kernel_range=(1, 1))
    np.testing.assert_array_equal(t == 0.5, (alpha > 0) & (alpha < 1))


@pytest.mark.parametrize("width", [0, 1, 4, 10, 23])
def test_band_width_on_straight_edges(width):
    n = 120
    hard = np.zeros((8, n), np.float32)
    hard[:, :60] = 1.0
    unk = np.nonzero((trimap_band(hard, width) == 0.5)[0])[0]
    if width == 0:
        assert unk.size == 0
    else:  # exactly `width` columns on each side of the edge between columns 59 and 60
        assert (unk.min(), unk.max()) == (60 - width, 59 + width)
        assert unk.size == 2 * width

    soft = np.zeros((8, n), np.float32)
    soft[:, :50] = 1.0
    soft[:, 50:70] = np.linspace(1, 0, 22)[1:-1]     # 20 soft columns 50..69
    unk = np.nonzero((trimap_band(soft, width) == 0.5)[0])[0]
    assert (unk.min(), unk.max()) == (50 - width, 69 + width)
    assert unk.size == 20 + 2 * width

    horizontal = trimap_band(np.ascontiguousarray(soft.T), width)
    np.testing.assert_array_equal(horizontal, trimap_band(soft, width).T)


@pytest.mark.parametrize("width", [1, 3, 7, 12, 20])
@pytest.mark.parametrize("soft_ring", [0.0, 6.0])
def test_band_width_on_disks_within_one_pixel(width, soft_ring):
    n, radius = 161, 45.0
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    r = np.hypot(yy - n // 2 + 0.3, xx - n // 2 - 0.2)  # off-grid centre
    if soft_ring == 0:
        alpha = (r <= radius).astype(np.float32)
        inner = outer = radius
    else:
        alpha = np.clip((radius + soft_ring / 2 - r) / soft_ring, 0, 1)
        alpha = (np.rint(alpha * 255) / 255).astype(np.float32)
        soft = (alpha > 0) & (alpha < 1)
        inner, outer = r[soft].min(), r[soft].max()
    unknown = trimap_band(alpha, width) == 0.5
    # measured band: how far the unknown region reaches inside and outside the edge / soft ring
    reach_in = inner - r[unknown].min()
    reach_out = r[unknown].max() - outer
    assert abs(reach_in - width) <= 1.0 and abs(reach_out - width) <= 1.0, (reach_in, reach_out)
    # and the band is a clean annulus: no hole, nothing outside
    assert np.all(unknown[(r >= inner - width + 1) & (r <= outer + width - 1)])
    assert not np.any(unknown[(r < inner - width - 1) | (r > outer + width + 1)])


def test_band_uses_a_fixed_number_of_distance_transforms(monkeypatch):
    """The cost of trimap_band does not depend on the width: the same few linear-time distance
    transforms whatever the width, and no morphology (whose cost grows with the kernel)."""
    calls = {"dt": 0, "morph": 0}
    real_dt = cv2.distanceTransform

    def counting_dt(*args, **kwargs):
        calls["dt"] += 1
        return real_dt(*args, **kwargs)

    def no_morphology(*args, **kwargs):
        calls["morph"] += 1
        raise AssertionError("trimap_band must not use morphology")

    monkeypatch.setattr(trimap_mod.cv2, "distanceTransform", counting_dt)
    for name in ("erode", "dilate", "morphologyEx"):
        monkeypatch.setattr(trimap_mod.cv2, name, no_morphology)
    alpha = soft_blobs(1, 96, 96, 0.2)
    alpha[10:30, 10:30] = 1.0
    counts = []
    for width in (1, 5, 80, 500):
        calls["dt"] = 0
        trimap_band(alpha, width)
        counts.append(calls["dt"])
    assert counts == [3, 3, 3, 3] and calls["morph"] == 0


# --------------------------------------------------------------------------------------------
# Edge cases and input checks
# --------------------------------------------------------------------------------------------
def test_uniform_alphas_have_no_unknown():
    for value, level in ((1.0, 1.0), (0.0, 0.0)):
        a = np.full((20, 30), value, np.float32)
        for t in (trimap_band(a, 10), trimap_erode_dilate(a, np.random.default_rng(0)),
                  trimap_from_mask(a)):
            assert np.all(t == level)
            assert unknown_share(t) == 0.0


def test_all_soft_alpha_is_all_unknown():
    a = np.full((16, 16), 0.3, np.float32)
    assert np.all(trimap_band(a, 0) == 0.5)
    assert np.all(trimap_erode_dilate(a, np.random.default_rng(0)) == 0.5)


def test_accepts_uint8_bool_and_hxwx1():
    a = np.zeros((32, 32), np.uint8)
    a[8:24, 8:24] = 255
    a[8:24, 23] = 128
    f = a.astype(np.float32) / 255
    np.testing.assert_array_equal(trimap_band(a, 3), trimap_band(f, 3))
    np.testing.assert_array_equal(trimap_band(f[:, :, None], 3), trimap_band(f, 3))
    np.testing.assert_array_equal(trimap_from_mask(a > 127, band=2), trimap_from_mask((a > 127) * 1.0, band=2))


def test_unknown_share():
    t = np.array([[0, 0.5, 0.5, 1]], np.float32)
    assert unknown_share(t) == 0.5
    assert unknown_share(np.array([[0, 128, 255, 255]], np.uint8)) == 0.25


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4, 3), np.float32), "2-D"),
    (np.zeros((0, 5), np.float32), "empty"),
    (np.full((4, 4), np.nan, np.float32), "NaN"),
    (np.full((4, 4), 1.5, np.float32), r"\[0, 1\]"),
    (np.zeros((4, 4), np.int64), "dtype"),
])
def test_bad_alpha_raises_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        trimap_band(bad, 3)
    with pytest.raises((ValueError, TypeError), match=match):
        trimap_erode_dilate(bad, np.random.default_rng(0))


def test_bad_parameters_raise_clear_errors():
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(TypeError, match="Generator"):
        trimap_erode_dilate(a, 0)
    with pytest.raises(ValueError, match="kernel_range"):
        trimap_erode_dilate(a, np.random.default_rng(0), kernel_range=(0, 3))
    with pytest.raises(ValueError, match="kernel_range"):
        trimap_erode_dilate(a, np.random.default_rng(0), kernel_range=(5, 3))
    with pytest.raises(ValueError, match="iterations"):
        trimap_erode_dilate(a, np.random.default_rng(0), iterations=0)
    with pytest.raises(ValueError, match="width"):
        trimap_band(a, -1)
    with pytest.raises(ValueError, match="must be below"):
        trimap_from_mask(a, fg_threshold=0.3, bg_threshold=0.5)
    with pytest.raises(ValueError, match="unknown trimap method"):
        random_trimap(a, np.random.default_rng(0), TrimapConfig(method="nope"))


def test_mixed_uses_both_methods():
    """method=mixed yields band trimaps (a hard edge gets exactly 2*w unknown columns) and
    erode/dilate ones, in proportions following mixed_band_prob."""
    a = np.zeros((4, 100), np.float32)
    a[:, :50] = 1.0
    cfg = TrimapConfig(method="mixed", kernel_range=[1, 1], band_width_min=3, band_width=3, mixed_band_prob=0.3)
    rng = np.random.default_rng(0)
    n_band = sum(unknown_share(random_trimap(a, rng, cfg)) > 0 for _ in range(200))
    assert 40 <= n_band <= 80   # ~60 expected; kernel 1 gives no unknown on a hard edge


def test_docstring_examples():
    failures, _ = doctest.testmod(trimap_mod, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# --------------------------------------------------------------------------------------------
# Real alphas (alphamatting.com GT01..GT05), skipped when ../shared is absent
# --------------------------------------------------------------------------------------------
@pytest.mark.shared
@pytest.mark.skipif(not REAL_ALPHAS, reason="../shared/data/alphamatting_dev not available")
@pytest.mark.parametrize("path", REAL_ALPHAS, ids=lambda p: p.stem)
def test_real_alphas(path):
    alpha = read_alpha(path)
    assert alpha.max() == 1.0 and alpha.min() == 0.0   # 255 -> exactly 1, 0 -> exactly 0
    for width in (0, 5, 17):
        t = trimap_band(alpha, width)
        assert_valid(t, alpha)
        np.testing.assert_array_equal(t == 0.5, scipy_band(alpha, width))
    for seed in (0, 1):
        t = trimap_erode_dilate(alpha, np.random.default_rng(seed))
        assert_valid(t, alpha)
        np.testing.assert_array_equal(t, trimap_erode_dilate(alpha, np.random.default_rng(seed)))
    for method in ("erode_dilate", "band", "mixed"):
        t = random_trimap(alpha, np.random.default_rng(7), TrimapConfig(method=method))
        assert_valid(t, alpha)
        assert 0.0 < unknown_share(t) < 1.0
    coarse = cv2.GaussianBlur(alpha, (0, 0), 3)
    t = trimap_from_mask(coarse)
    assert np.all(coarse[t == 1] >= 0.95) and np.all(coarse[t == 0] <= 0.05)


# --------------------------------------------------------------------------------------------
# The strategy table
# --------------------------------------------------------------------------------------------
def test_the_choices_are_read_off_the_table():
    m = trimap_mod.METHODS
    assert trimap_mod.TRIMAP_METHODS == tuple(k for k in m if m[k].sample is not None) == ("erode_dilate", "band",
                                                                                           "mixed")
    assert trimap_mod.TRIMAP_BUILDERS == ("erode_dilate", "band", "from_mask")
    for name, entry in m.items():     # a method without a torch twin says why
        assert (entry.torch_twin is not None) or entry.cpu_only, name


def test_check_config_reports_every_problem_at_once():
    assert trimap_mod.check_config(TrimapConfig()) == []
    bad = TrimapConfig(method="mixed", mixed_band_prob=1.5, band_width_min=8, band_width=4, kernel_range=[0, 3],
                       iterations=0)
    problems = trimap_mod.check_config(bad)
    assert len(problems) == 4, problems
    assert [w for w in ("mixed_band_prob", "band_width_min", "kernel_range", "iterations")
            if any(w in p for p in problems)] == ["mixed_band_prob", "band_width_min", "kernel_range", "iterations"]
    assert "choose one of erode_dilate, band, mixed" in trimap_mod.check_config(TrimapConfig(method="nope"))[0]
    with pytest.raises(ValueError, match="mixed_band_prob"):   # the same check stops a training draw
        random_trimap(np.zeros((8, 8), np.float32), np.random.default_rng(0), bad)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_twin_on_the_entry_draw_equals_the_numpy_build(seed):
    """The device path draws with the entry (``sample`` then ``draw``) and renders with its torch twin: the
    same draws from the same generator as the NumPy build, the same trimap."""
    cfg = TrimapConfig(kernel_range=[1, 21], iterations=2)
    alpha = np.zeros((48, 40), np.float32)
    alpha[10:40, 8:30] = 1
    alpha[10:40, 7] = 0.5
    entry = trimap_mod.METHODS[cfg.method]
    rng = np.random.default_rng(seed)
    method, params = entry.sample(rng, cfg)
    drawn = trimap_mod.METHODS[method].draw(rng, params)
    twin = trimap_mod.METHODS[method].torch_twin(torch.from_numpy(alpha)[None, None],
                                                 drawn[None], params)
    np.testing.assert_array_equal(twin[0, 0].numpy(), random_trimap(alpha, np.random.default_rng(seed), cfg))

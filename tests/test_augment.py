"""Unit tests of the training transforms in mattingkit.data.augment (small arrays, no files)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mattingkit.config import AugmentConfig, DataConfig, TrimapConfig
from mattingkit.data import augment as A


def rng(seed=0):
    return np.random.default_rng(seed)


def disk_alpha(h=120, w=160, cy=60, cx=80, r=35, soft=True):
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    if soft:
        return np.clip((r - d) / 4 + 0.5, 0, 1).astype(np.float32)   # a 4-px soft edge
    return (d <= r).astype(np.float32)


def textured(h, w, seed=1):
    return rng(seed).random((h, w, 3)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# warp / resize
# --------------------------------------------------------------------------------------------
def test_warp_integer_crop_is_an_exact_copy():
    src = textured(30, 40)
    out = A.warp(src, A.translation(-5, -7), (10, 12))
    assert np.array_equal(out, src[5:15, 7:19])


def test_warp_downscale_is_area_average():
    src = textured(64, 64)
    out = A.warp(src, A.resize_matrix((64, 64), (16, 16)), (16, 16))
    expected = src.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    assert np.allclose(out, expected, atol=1e-5)


def test_warp_general_matches_opencv_and_pads_with_zero():
    src = textured(50, 50)
    m = A.affine_matrix((50, 50), angle=30)
    out = A.warp(src, m, (50, 50), "linear", "zero")
    ref = cv2.warpAffine(src, m[:2], (50, 50), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert np.allclose(out, ref)
    assert np.all(out[0, 0] == 0)           # the rotated-away corner is padding


def test_warp_strong_shrink_does_not_alias():
    # 1-px stripes, rotated and shrunk 4x: point sampling every 4 px would give a beat pattern of
    # 0s and 1s; area averaging gives ~0.5 everywhere
    src = np.zeros((256, 256), np.float32)
    src[:, ::2] = 1
    m = A.scale_matrix(1 / 4, 1 / 4) @ A.affine_matrix((256, 256), angle=3)
    out = A.warp(src, m, (64, 64), "linear", "reflect")
    naive = cv2.warpAffine(src, m[:2], (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    assert float(naive[16:48, 16:48].std()) > 0.2          # what plain bilinear warping does
    assert abs(float(out[16:48, 16:48].mean()) - 0.5) < 0.05
    assert float(out[16:48, 16:48].std()) < 0.05


@pytest.mark.parametrize("out_hw", [(7, 9), (33, 50), (64, 64), (100, 31)])
def test_resize_trimap_keeps_exact_values(out_hw):
    t = np.full((40, 50), 0.5, np.float32)
    t[:10] = 0
    t[30:] = 1
    out = A.resize_trimap(t, out_hw)
    assert out.shape == out_hw
    assert set(np.unique(out).tolist()) <= {0.0, 0.5, 1.0}
    assert {0.0, 0.5, 1.0} <= set(np.unique(out).tolist()) or min(out_hw) < 10


def test_render_resamples_trimap_nearest_under_rotation():
    t = np.zeros((80, 80), np.float32)
    t[20:60, 20:60] = 0.5
    t[30:50, 30:50] = 1
    s = {"alpha": np.zeros((80, 80), np.float32), "trimap": t}
    s = A.RandomAffine(rotation=40, scale=(0.7, 1.3), shear=10)(s, rng(3))
    s = A.Render((57, 43))(s)
    assert s["trimap"].shape == (57, 43)
    assert set(np.unique(s["trimap"]).tolist()) == {0.0, 0.5, 1.0}


def test_resize_image_enlarges_bilinear():
    a = np.array([[0, 1]], np.float32)
    out = A.resize_image(a, (1, 4))
    assert np.allclose(out, cv2.resize(a, (4, 1), interpolation=cv2.INTER_LINEAR))


# --------------------------------------------------------------------------------------------
# affine
# --------------------------------------------------------------------------------------------
def test_affine_matrix_flip_rotation_scale():
    m = A.affine_matrix((10, 20), flip=True)
    assert np.allclose(m @ [0, 3, 1], [19, 3, 1])
    r = A.affine_matrix((11, 11), angle=90)          # about the centre (5, 5)
    x, y, _ = r @ [10, 5, 1]                           # the right-middle pixel ...
    assert np.allclose((x, y), (5, 0))                 # ... goes to the top-middle (counter-clockwise)
    s = A.affine_matrix((11, 11), scale=2)
    assert np.allclose(s @ [5, 5, 1], [5, 5, 1]) and np.allclose(s @ [6, 5, 1], [7, 5, 1])


def test_random_affine_matrix_ranges_and_determinism():
    m1 = A.random_affine_matrix((64, 64), rng(5), rotation=20, scale=(0.5, 2), shear=0, flip=False)
    m2 = A.random_affine_matrix((64, 64), rng(5), rotation=20, scale=(0.5, 2), shear=0, flip=False)
    assert np.array_equal(m1, m2)
    for seed in range(30):
        m = A.random_affine_matrix((64, 64), rng(seed), rotation=20, scale=(0.5, 2), shear=0, flip=False)
        sc = np.sqrt(abs(np.linalg.det(m[:2, :2])))
        angle = np.degrees(np.arctan2(m[0, 1], m[0, 0]))
        assert 0.5 - 1e-9 <= sc <= 2 + 1e-9 and abs(angle) <= 20 + 1e-9
    flips = [np.linalg.det(A.random_affine_matrix((8, 8), rng(s), 0, (1, 1), 0, True)[:2, :2]) < 0
             for s in range(200)]
    assert 60 < sum(flips) < 140


def test_random_affine_lazy_equals_full_warp_then_crop():
    alpha = disk_alpha(100, 100, 50, 50, 30)
    fg = textured(100, 100)
    s = {"alpha": alpha, "fg": fg}
    s = A.RandomAffine(rotation=25, scale=(1.1, 1.1), shear=5, flip=True)(s, rng(2))
    m = s["geometry"].matrices["fg"].copy()
    s["geometry"].window = (20, 30, 40, 40)
    out = A.Render(None, pad="zero")(s)
    full_a = cv2.warpAffine(alpha, m[:2], (100, 100), flags=cv2.INTER_LINEAR)
    full_fg = cv2.warpAffine(fg, m[:2], (100, 100), flags=cv2.INTER_LINEAR)
    # equal up to OpenCV's 1/32-px quantisation of sample positions
    for got, ref in ((out["alpha"], A.snap_alpha(full_a[20:60, 30:70].copy())), (out["fg"], full_fg[20:60, 30:70])):
        assert np.abs(got - ref).max() < 0.02 and np.abs(got - ref).mean() < 1e-3


def test_affine_border_is_zero_alpha():
    s = {"alpha": np.ones((60, 60), np.float32), "fg": textured(60, 60)}
    s = A.RandomAffine(rotation=0, scale=(1, 1), shear=0, flip=False)(s, rng(0))
    s["geometry"].matrices["fg"] = A.affine_matrix((60, 60), angle=45)
    out = A.Render(None)(s)
    assert out["alpha"][0, 0] == 0 and out["alpha"][30, 30] == 1
    assert out["fg"][0, 0].max() > 0                   # fg is reflected, not black, outside


def test_affine_off_in_config_keeps_only_flip():
    t = A.RandomAffine.from_config(AugmentConfig(affine=False, flip=True))
    dets = set()
    for seed in range(20):
        s = t({"alpha": np.zeros((9, 9), np.float32)}, rng(seed))
        m = s["geometry"].matrices["fg"]
        assert np.allclose(np.abs(m[:2, :2]), np.eye(2))
        dets.add(round(np.linalg.det(m[:2, :2])))
    assert dets == {-1, 1}


# --------------------------------------------------------------------------------------------
# HSV jitter
# --------------------------------------------------------------------------------------------
def test_hsv_identity_and_value_scaling():
    img = textured(16, 16)
    assert np.allclose(A.hsv_jitter(img, 0, 1, 1), img, atol=1e-5)
    half = A.hsv_jitter(img, 0, 1, 0.5)
    assert np.allclose(half.max(axis=2), img.max(axis=2) * 0.5, atol=1e-5)


def test_hsv_hue_and_saturation():
    red = np.zeros((1, 1, 3), np.float32)
    red[..., 0] = 1
    assert np.allclose(A.hsv_jitter(red, 120), [[[0, 1, 0]]], atol=1e-5)
    assert np.allclose(A.hsv_jitter(red, -120), [[[0, 0, 1]]], atol=1e-5)
    grey = A.hsv_jitter(textured(8, 8), 0, 0.0, 1)
    assert np.allclose(grey[..., 0], grey[..., 1], atol=1e-6) and np.allclose(grey[..., 1], grey[..., 2], atol=1e-6)


def test_hsv_stays_in_range_for_extreme_settings():
    img = textured(32, 32)
    out = A.hsv_jitter(img, 170, 3.0, 3.0)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_hsv_jitter_transform_is_seeded_and_within_ranges():
    img = textured(8, 8)
    t = A.HSVJitter(hue=0, saturation=(1, 1), value=(0.5, 0.6))
    o1 = t({"fg": img}, rng(1))["fg"]
    o2 = t({"fg": img}, rng(1))["fg"]
    assert np.array_equal(o1, o2)
    ratio = o1.max(axis=2) / img.max(axis=2)
    assert np.all(ratio > 0.5 - 1e-4) and np.all(ratio < 0.6 + 1e-4)


# --------------------------------------------------------------------------------------------
# two foregrounds
# --------------------------------------------------------------------------------------------
def test_merge_foregrounds_hand_values():
    fg1 = np.array([[[1.0, 0.0, 0.2]]], np.float32)
    fg2 = np.array([[[0.0, 1.0, 0.6]]], np.float32)
    a1 = np.array([[0.5]], np.float32)
    a2 = np.array([[0.4]], np.float32)
    fg, a = A.merge_foregrounds(fg1, a1, fg2, a2)
    # alpha = 1 - 0.5 * 0.6 = 0.7; fg = (0.5 fg1 + 0.5 * 0.4 fg2) / 0.7
    assert np.isclose(a[0, 0], 0.7)
    assert np.allclose(fg[0, 0], [0.5 / 0.7, 0.2 / 0.7, (0.1 + 0.12) / 0.7], atol=1e-6)


def test_merge_foregrounds_equals_layered_compositing():
    r = rng(4)
    fg1, fg2, bg = (r.random((20, 20, 3)).astype(np.float32) for _ in range(3))
    a1, a2 = (r.random((20, 20)).astype(np.float32) for _ in range(2))
    a1[:5] = 0
    a2[:3] = 0                                            # both transparent: alpha 0 there
    fg, a = A.merge_foregrounds(fg1, a1, fg2, a2)
    layered = a1[..., None] * fg1 + (1 - a1[..., None]) * (a2[..., None] * fg2 + (1 - a2[..., None]) * bg)
    assert np.allclose(a[..., None] * fg + (1 - a[..., None]) * bg, layered, atol=1e-5)
    assert np.all(a[:3] == 0) and np.array_equal(fg[:3], fg1[:3])
    assert fg.min() >= 0 and fg.max() <= 1


def test_merge_transform_after_render_resizes_second_foreground():
    s = {"fg": np.ones((40, 60, 3), np.float32), "alpha": np.zeros((40, 60), np.float32),
         "fg2": np.zeros((20, 30, 3), np.float32), "alpha2": np.ones((20, 30), np.float32)}
    s = A.Render(None)(s)
    s = A.MergeForegrounds()(s, rng())
    assert "fg2" not in s and s["alpha"].shape == (40, 60)
    assert np.all(s["alpha"] == 1) and np.allclose(s["fg"], 0)


# --------------------------------------------------------------------------------------------
# background cover
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bg_hw", [(30, 200), (300, 20), (50, 50), (1000, 1000)])
def test_cover_background_keeps_aspect_and_covers(bg_hw):
    s = {"alpha": np.zeros((60, 90), np.float32), "bg": np.zeros((*bg_hw, 3), np.float32)}
    s = A.CropAroundUnknown([120])(s, rng(0))           # window larger than the canvas
    s = A.CoverBackground()(s, rng(1))
    g = s["geometry"]
    m = g.matrices["bg"]
    assert np.isclose(m[0, 0], m[1, 1]) and m[0, 1] == 0  # aspect kept
    inv = np.linalg.inv(m)
    y0, x0, h, w = g.window
    for cy in (min(0, y0) - 0.5, max(60, y0 + h) - 0.5):
        for cx in (min(0, x0) - 0.5, max(90, x0 + w) - 0.5):
            bx, by, _ = inv @ [cx, cy, 1]
            assert -0.5 - 1e-6 <= bx <= bg_hw[1] - 0.5 + 1e-6 and -0.5 - 1e-6 <= by <= bg_hw[0] - 0.5 + 1e-6


def test_cover_background_random_offset_depends_on_rng():
    bg = textured(100, 400)
    offsets = set()
    for seed in range(10):
        s = A.CoverBackground()({"alpha": np.zeros((50, 50), np.float32), "bg": bg}, rng(seed))
        offsets.add(float(s["geometry"].matrices["bg"][0, 2]))
    assert len(offsets) > 5


# --------------------------------------------------------------------------------------------
# crop around an unknown pixel
# --------------------------------------------------------------------------------------------
def test_crop_contains_an_unknown_pixel():
    alpha = np.zeros((300, 400), np.float32)
    alpha[250:290, 20:40] = 1
    alpha[250:290, 19] = 0.5                              # a thin soft edge near a corner
    for seed in range(20):
        s = A.CropAroundUnknown([64, 96])({"alpha": alpha, "fg": textured(300, 400)}, rng(seed))
        y0, x0, h, w = s["geometry"].window
        assert 0 <= y0 <= 300 - h and 0 <= x0 <= 400 - w
        out = A.Render(48)(s)
        assert np.any((out["alpha"] > 0) & (out["alpha"] < 1))


def test_crop_on_hard_alpha_uses_the_edge():
    alpha = np.zeros((200, 200), np.float32)
    alpha[120:180, 120:180] = 1
    for seed in range(10):
        s = A.CropAroundUnknown([40])({"alpha": alpha}, rng(seed))
        out = A.Render(None)(s)["alpha"]
        assert (out == 1).any() and (out == 0).any()


def test_crop_follows_the_affine_transform():
    alpha = np.zeros((200, 200), np.float32)
    alpha[10:30, 10:30] = 1
    alpha[10:30, 30] = 0.5
    s = {"alpha": alpha}
    s = A.RandomAffine(rotation=0, scale=(1, 1), shear=0, flip=False)(s, rng(0))
    s["geometry"].matrices["fg"] = A.affine_matrix((200, 200), flip=True)   # the object moves right
    s = A.CropAroundUnknown([32])(s, rng(1))
    out = A.Render(None)(s)["alpha"]
    assert np.any((out > 0) & (out < 1))


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_crop_without_unknown_pixel_falls_back_to_random_crop(value):
    alpha = np.full((100, 120), value, np.float32)
    windows = set()
    for seed in range(10):
        s = A.CropAroundUnknown([32])({"alpha": alpha}, rng(seed))
        y0, x0, h, w = s["geometry"].window
        assert (h, w) == (32, 32) and 0 <= y0 <= 68 and 0 <= x0 <= 88
        windows.add((y0, x0))
        assert np.all(A.Render(None)(s)["alpha"] == value)
    assert len(windows) > 5


def test_crop_larger_than_image_pads_zero_alpha_and_reflects_fg():
    alpha = np.zeros((40, 30), np.float32)
    alpha[10:30, 10:20] = 1
    fg = textured(40, 30)
    s = A.CropAroundUnknown([100])({"alpha": alpha, "fg": fg}, rng(0))
    y0, x0, h, w = s["geometry"].window
    assert (h, w) == (100, 100) and y0 <= 0 and x0 <= 0 and y0 + 100 >= 40 and x0 + 100 >= 30
    out = A.Render(None, pad="reflect")(dict(s, geometry=s["geometry"]))
    assert out["alpha"].shape == (100, 100) and out["fg"].shape == (100, 100, 3)
    assert out["alpha"].sum() == alpha.sum()              # the object is all there, padding is 0
    inside = (slice(-y0, -y0 + 40), slice(-x0, -x0 + 30))
    assert np.array_equal(out["fg"][inside], fg)
    assert out["fg"][0, 0].max() > 0                      # reflected
    s = A.CropAroundUnknown([100])({"alpha": alpha, "fg": fg}, rng(0))
    out0 = A.Render(None, pad="zero")(s)
    assert np.all(out0["fg"][0, 0] == 0) and np.array_equal(out0["fg"][inside], fg)


def test_crop_sizes_are_drawn_from_the_list():
    seen = set()
    for seed in range(30):
        s = A.CropAroundUnknown([320, 480, 640])({"alpha": disk_alpha()}, rng(seed))
        seen.add(s["geometry"].window[2])
    assert seen == {320, 480, 640}


# --------------------------------------------------------------------------------------------
# composite, trimap, dropout
# --------------------------------------------------------------------------------------------
def test_composite_formula_and_photo_mode():
    fg, bg = textured(10, 10, 1), textured(10, 10, 2)
    a = rng(3).random((10, 10)).astype(np.float32)
    s = A.Composite()({"fg": fg, "bg": bg, "alpha": a})
    assert np.allclose(s["image"], a[..., None] * fg + (1 - a[..., None]) * bg, atol=1e-6)
    s = A.Composite()({"fg": fg, "alpha": a})
    assert np.array_equal(s["image"], fg) and np.array_equal(s["bg"], fg)


def test_trimap_is_generated_after_the_crop():
    cfg = DataConfig(crop_sizes=[80], image_size=64)
    pipe = A.build_train_pipeline(cfg, TrimapConfig(method="band", band_width=4, band_width_min=4),
                                  AugmentConfig(hsv_jitter=False))
    s = pipe({"fg": textured(200, 200), "alpha": disk_alpha(200, 200, 100, 100, 60, soft=False),
              "bg": textured(100, 150, 5)}, rng(0))
    t, a = s["trimap"], s["alpha"]
    assert t.shape == a.shape == (64, 64)
    assert set(np.unique(t).tolist()) <= {0.0, 0.5, 1.0}
    assert np.all(a[t == 1] == 1) and np.all(a[t == 0] == 0)
    assert np.all(t[(a > 0) & (a < 1)] == 0.5)


def test_trimap_dropout():
    t = np.zeros((4, 4), np.float32)
    assert np.all(A.TrimapDropout(1.0)({"trimap": t.copy()}, rng())["trimap"] == 0.5)
    assert np.all(A.TrimapDropout(0.0)({"trimap": t.copy()}, rng())["trimap"] == 0)
    hits = sum(bool(np.all(A.TrimapDropout(0.3)({"trimap": t.copy()}, rng(s))["trimap"] == 0.5)) for s in range(400))
    assert 80 < hits < 160


# --------------------------------------------------------------------------------------------
# densify
# --------------------------------------------------------------------------------------------
def _object_and_image(n=128):
    a = np.zeros((n, n), np.float32)
    a[32:96, 32:96] = 1
    im = np.full((n, n, 3), 0.5, np.float32)
    im[32:96, 32:64] = 0.9                                 # a bright half and ...
    im[32:96, 64:96] = 0.2                                 # ... a dark half of the object
    im[32:96, 32:96] += 0.1 * rng(9).standard_normal((64, 64, 1)).astype(np.float32)
    return a, np.clip(im, 0, 1)


def test_densify_zero_is_identity():
    a, im = _object_and_image()
    out = A.densify(a, im, 0.0, rng())
    assert out is a
    s = A.Densify(0.0)({"alpha": a, "image": im}, rng())
    assert s["alpha"] is a


def test_densify_full_strength_looks_like_the_competition_masks():
    a, im = _object_and_image()
    d = A.densify(a, im, 1.0, rng(0))
    assert d.dtype == np.float32 and d.shape == a.shape and d.min() >= 0 and d.max() <= 1
    far = d[:16, :16]
    assert np.all(far >= 28 / 255 - 1e-6) and np.all(far <= 35 / 255 + 1e-6)
    assert np.ptp(far) < 1e-6                                # a flat grey background
    bright, dark = d[40:88, 40:56].mean(), d[40:88, 72:88].mean()
    assert bright > dark > far.mean()                       # grey tones inside follow the luminance
    assert d[40:88, 40:88].std() > 0.01                     # texture inside the object
    assert np.array_equal(d, A.densify(a, im, 1.0, rng(0)))  # seeded


def test_densify_strength_blends_linearly():
    a, im = _object_and_image()
    full = A.densify(a, im, 1.0, rng(3))
    half = A.densify(a, im, 0.5, rng(3))
    assert np.allclose(half, 0.5 * a + 0.5 * full, atol=1e-6)


def test_densify_checks_inputs():
    a, im = _object_and_image()
    with pytest.raises(ValueError, match="strength"):
        A.densify(a, im, 1.5, rng())
    with pytest.raises(ValueError, match="differ"):
        A.densify(a, im[:10], 1.0, rng())


# --------------------------------------------------------------------------------------------
# the whole training pipeline
# --------------------------------------------------------------------------------------------
def _sample():
    return {"id": "x", "fg": textured(150, 180), "alpha": disk_alpha(150, 180, 75, 90, 50),
            "fg2": textured(90, 60, 7), "alpha2": disk_alpha(90, 60, 45, 30, 20), "bg": textured(200, 120, 8)}


def test_pipeline_output_shapes_ranges_and_composite():
    pipe = A.build_train_pipeline(DataConfig(crop_sizes=[64, 96, 128], image_size=64), TrimapConfig(),
                                  AugmentConfig(two_fg_prob=1.0))
    for seed in range(5):
        s = pipe(_sample(), rng(seed))
        assert set(s) == {"id", "fg", "alpha", "bg", "image", "trimap"}
        for k in ("fg", "bg", "image"):
            assert s[k].shape == (64, 64, 3) and s[k].dtype == np.float32
            assert s[k].min() >= 0 and s[k].max() <= 1
        assert s["alpha"].shape == s["trimap"].shape == (64, 64)
        assert set(np.unique(s["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
        a = s["alpha"][..., None]
        assert np.allclose(s["image"], a * s["fg"] + (1 - a) * s["bg"], atol=1e-5)


def test_pipeline_same_seed_same_sample_different_seed_different():
    pipe = A.build_train_pipeline(DataConfig(crop_sizes=[64], image_size=48), TrimapConfig(), AugmentConfig())
    s1, s2, s3 = pipe(_sample(), rng(11)), pipe(_sample(), rng(11)), pipe(_sample(), rng(12))
    for k in ("image", "alpha", "trimap", "fg", "bg"):
        assert np.array_equal(s1[k], s2[k])
    assert not np.array_equal(s1["image"], s3["image"])


def test_pipeline_competition_recipe_without_backgrounds():
    aug = AugmentConfig(two_fg_prob=0.0, trimap_dropout=1.0, densify=0.5)
    pipe = A.build_train_pipeline(DataConfig(crop_sizes=[96], image_size=64), TrimapConfig(), aug,
                                  has_background=False)
    s = {"id": "p", "fg": textured(120, 120), "alpha": disk_alpha(120, 120, 60, 60, 40, soft=False)}
    s = pipe(s, rng(0))
    assert np.array_equal(s["image"], s["fg"]) and np.array_equal(s["bg"], s["fg"])
    assert np.all(s["trimap"] == 0.5)
    assert s["alpha"].min() > 0.05                      # densified: grey background level


def test_check_augment_config_names_the_key():
    for kw, key in [({"pad": "wrap"}, "augment.pad"), ({"scale": [1.2, 0.8]}, "augment.scale"),
                    ({"densify": -0.1}, "augment.densify"), ({"saturation": [1]}, "augment.saturation")]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            A.check_augment_config(AugmentConfig(**kw))


def test_transforms_require_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        A.Compose([A.TrimapDropout(0.5)])({"trimap": np.zeros((2, 2), np.float32)}, 0)


def test_uint8_sources_render_like_float_sources():
    r = rng(6)
    fg8 = r.integers(0, 256, (90, 110, 3), dtype=np.uint8)
    bg8 = r.integers(0, 256, (70, 140, 3), dtype=np.uint8)
    a8 = np.rint(disk_alpha(90, 110, 45, 55, 30) * 255).astype(np.uint8)
    pipe = A.Compose([A.RandomAffine(rotation=20, scale=(0.8, 1.2), shear=5), A.CropAroundUnknown([64]),
                      A.CoverBackground(), A.Render(48)])
    s8 = pipe({"fg": fg8, "alpha": a8, "bg": bg8}, rng(1))
    sf = pipe({"fg": fg8 / np.float32(255), "alpha": a8 / np.float32(255), "bg": bg8 / np.float32(255)}, rng(1))
    for k in ("fg", "alpha", "bg"):
        assert s8[k].dtype == np.float32
        assert np.abs(s8[k] - sf[k]).max() <= 1.5 / 255        # 8-bit rounding of the interpolated values
    # definite foreground stays exactly 1; 8-bit rounding may add pixels that interpolate to >= 254.5
    assert np.all(s8["alpha"][sf["alpha"] == 1] == 1)
    assert np.all(sf["alpha"][s8["alpha"] == 1] >= 254.5 / 255 - 1e-4)
    assert ((s8["alpha"] > 0) & (s8["alpha"] < 1)).any()


# --------------------------------------------------------------------------------------------
# fast paths give the same values as the plain formulas
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shrink", [1.0, 2.0])
def test_warp_with_alpha_equals_two_warps_inside_and_declines_outside(shrink):
    r = rng(7)
    rgb = r.integers(0, 256, (120, 130, 3), dtype=np.uint8)
    a = r.integers(0, 256, (120, 130), dtype=np.uint8)
    out = (32, 32)
    m = A.scale_matrix(1 / shrink, 1 / shrink) @ A.affine_matrix((120, 130), angle=17, shear=5) \
        @ A.translation(-30, -35)
    pair = A.warp_with_alpha(rgb, a, m, out)
    assert pair is not None
    assert np.array_equal(pair[0], A.warp(rgb, m, out, "linear", "reflect"))
    assert np.array_equal(pair[1], A.warp(a, m, out, "linear", "zero"))
    # a window reaching past the source: each is padded per its own border mode (fg reflected, alpha 0)
    past = A.translation(-90, -5) @ A.affine_matrix((120, 130), angle=30)
    pair = A.warp_with_alpha(rgb, a, past, out)
    assert np.array_equal(pair[0], A.warp(rgb, past, out, "linear", "reflect"))
    assert np.array_equal(pair[1], A.warp(a, past, out, "linear", "zero"))
    assert pair[1][-1, 0] == 0 and pair[0][-1, 0].any()                   # a corner outside the source
    # declines: a reflection wider than the part of the source in view; no overlap; not an 8-bit pair
    assert A.warp_with_alpha(rgb, a, A.translation(110, 0), (40, 40)) is None
    assert A.warp_with_alpha(rgb, a, A.translation(500, 500), (40, 40), "zero") is None
    assert A.warp_with_alpha(rgb / np.float32(255), a, m, out) is None


def test_render_of_foreground_pairs_matches_separate_warps():
    r = rng(8)
    fg8 = r.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    a8 = np.rint(disk_alpha(300, 320, 150, 160, 60) * 255).astype(np.uint8)
    fg28 = r.integers(0, 256, (250, 260, 3), dtype=np.uint8)
    a28 = np.rint(disk_alpha(250, 260, 125, 130, 50) * 255).astype(np.uint8)
    pipe = A.Compose([A.RandomAffine(rotation=15, scale=(0.8, 1.25), shear=10), A.CropAroundUnknown([64, 96]),
                      A.Render(48)])
    for seed in range(3):
        fused = pipe({"fg": fg8, "alpha": a8, "fg2": fg28, "alpha2": a28}, rng(seed))
        # the same geometry, each array rendered on its own (a foreground without its alpha is never fused)
        g = A.Compose(pipe.transforms[:2])({"fg": fg8, "alpha": a8, "fg2": fg28, "alpha2": a28}, rng(seed))["geometry"]
        view = A.scale_matrix(48 / g.window[2], 48 / g.window[3]) @ A.translation(-g.window[0], -g.window[1])
        assert A.warp_with_alpha(fg8, a8, view @ g.matrices["fg"], (48, 48)) is not None     # the fused path ran
        for key, src in (("fg", fg8), ("alpha", a8), ("fg2", fg28), ("alpha2", a28)):
            alone = A.Render(48)({key: src, "geometry": A.Geometry(g.canvas, dict(g.matrices), g.window)}, None)[key]
            assert np.array_equal(fused[key], alone), key


def test_composite_fast_path_is_exactly_the_formula():
    fg, bg = textured(37, 29, 1), textured(37, 29, 2)
    a = rng(4).random((37, 29)).astype(np.float32)
    a[:5] = 0
    a[-5:] = 1
    from mattingkit.compose import composite

    image = A.Composite()({"fg": fg, "bg": bg, "alpha": a})["image"]
    assert np.array_equal(image, np.clip(composite(fg, bg, a), 0, 1))        # bit-exact, not just close
    odd = A.Composite()({"fg": fg[:, ::2], "bg": bg[:, ::2], "alpha": a[:, ::2].copy()})["image"]  # strided
    assert np.array_equal(odd, np.clip(composite(fg[:, ::2], bg[:, ::2], a[:, ::2]), 0, 1))


def test_merge_foregrounds_equals_the_broadcast_formula():
    fg1, fg2 = textured(21, 17, 1), textured(21, 17, 2)
    a1, a2 = rng(5).random((21, 17)).astype(np.float32), rng(6).random((21, 17)).astype(np.float32)
    a1[0], a2[0] = 0, 0                                          # alpha == 0: fg1 kept
    fg, alpha = A.merge_foregrounds(fg1, a1, fg2, a2)
    w2 = (1 - a1) * a2
    ref_a = a1 + w2
    c2 = np.divide(w2, ref_a, out=np.zeros_like(ref_a), where=ref_a > 0)
    assert np.array_equal(alpha, np.clip(ref_a, 0, 1))
    assert np.array_equal(fg, np.clip((fg2 - fg1) * c2[..., None] + fg1, 0, 1))
    assert np.array_equal(fg[0], fg1[0])


def test_render_keep_8bit_background_and_composite():
    r = rng(9)
    fg8 = r.integers(0, 256, (90, 110, 3), dtype=np.uint8)
    bg8 = r.integers(0, 256, (70, 140, 3), dtype=np.uint8)
    a8 = np.rint(disk_alpha(90, 110, 45, 55, 30) * 255).astype(np.uint8)
    head = [A.RandomAffine(rotation=20, scale=(0.8, 1.2), shear=5), A.CropAroundUnknown([64]), A.CoverBackground()]
    tail = [A.HSVJitter(), A.Composite()]
    kept = A.Compose(head + [A.Render(48, keep_8bit=("bg",))] + tail)({"fg": fg8, "alpha": a8, "bg": bg8}, rng(3))
    ref = A.Compose(head + [A.Render(48)] + tail)({"fg": fg8, "alpha": a8, "bg": bg8}, rng(3))
    assert kept["bg"].dtype == np.uint8 and ref["bg"].dtype == np.float32
    assert np.array_equal(A.to_float(kept["bg"]), ref["bg"])
    assert np.array_equal(kept["image"], ref["image"]) and np.array_equal(kept["fg"], ref["fg"])
    with pytest.raises(ValueError, match="keep_8bit"):
        A.Render(48, keep_8bit=("fg",))


@pytest.mark.parametrize("border", ["reflect", "zero", "replicate"])
def test_warp_of_a_window_past_the_edge_matches_the_full_warp(border):
    # warp() cuts the sampled region out of the source and pads it as the border mode would; the
    # result is OpenCV's warp of the whole source up to its fixed-point coordinate rounding (+-1 in
    # 8-bit), and the padding is the right one (a wrong reflection would differ by far more)
    r = rng(10)
    src = r.integers(0, 256, (140, 150, 3), dtype=np.uint8)
    bmode = {"reflect": cv2.BORDER_REFLECT_101, "zero": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}[border]
    for angle, ty, tx in ((12, 10, -20), (-8, -40, -110), (20, -100, -40)):   # past the top, right, bottom
        m = A.translation(ty, tx) @ A.affine_matrix((140, 150), angle=angle)
        out = A.warp(src, m, (64, 64), "linear", border)
        ref = cv2.warpAffine(src, m[:2], (64, 64), flags=cv2.INTER_LINEAR, borderMode=bmode, borderValue=0)
        assert np.abs(out.astype(int) - ref).max() <= 1
        a = src[..., 0].copy()
        pair = A.warp_with_alpha(src, a, m, (64, 64), border)
        assert pair is not None
        assert np.array_equal(pair[0], out) and np.array_equal(pair[1], A.warp(a, m, (64, 64), "linear", "zero"))
    # mostly outside: a reflection wider than the part in view cannot be cut out; warp() falls back
    m = A.translation(120, 130) @ A.affine_matrix((140, 150), angle=5)
    ref = cv2.warpAffine(src, m[:2], (64, 64), flags=cv2.INTER_LINEAR, borderMode=bmode, borderValue=0)
    assert np.abs(A.warp(src, m, (64, 64), "linear", border).astype(int) - ref).max() <= 1

"""Inspectors and their pure render functions, without a kernel: build the widget, move a control by
setting ``.value``, check the rendered PNG and the numbers it shows."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mattingkit.io import write_png
from mattingkit.metrics import compute_metrics
from mattingkit.trimap import TRIMAP_BUILDERS, trimap_band, trimap_erode_dilate, trimap_from_mask, unknown_share
from mattingkit.widgets import (
    BG_DIM,
    UNKNOWN_TINT,
    AlphaInspector,
    TrimapInspector,
    alpha_view,
    error_heatmap,
    fit_side,
    hstack,
    metrics_frame,
    trimap_overlay,
    trimap_view,
    vstack,
)


def _disc(h=60, w=80, r=18, soft=3):
    """A disc alpha with a soft edge ``soft`` px wide."""
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(yy - h / 2, xx - w / 2)
    return np.clip((r + soft / 2 - d) / soft, 0, 1).astype(np.float32)


def _image(h=60, w=80, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ------------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------------
def test_inspector_trimaps_come_from_the_trimap_table():
    """The inspector's slider values become trimap.make_trimap's parameters: the same trimaps as the
    trimap module's own functions, for every method of the table."""
    a = _disc()
    ins = TrimapInspector([("x", np.zeros(a.shape + (3,), np.float32), a)], method="erode_dilate", kernel=7,
                          iterations=2, band=4, fg_threshold=0.9, bg_threshold=0.1, seed=3, max_side=max(a.shape))
    ref = trimap_erode_dilate(a, np.random.default_rng(3), kernel_range=(7, 7), iterations=2)
    np.testing.assert_array_equal(ins.trimap, ref)
    assert ins.method.options == TRIMAP_BUILDERS
    ins.method.value = "band"
    np.testing.assert_array_equal(ins.trimap, trimap_band(a, 4))
    ins.method.value = "from_mask"
    np.testing.assert_array_equal(ins.trimap, trimap_from_mask(a, 0.9, 0.1, 4))
    with pytest.raises(ValueError, match="unknown trimap method"):
        TrimapInspector([("x", np.zeros(a.shape + (3,), np.float32), a)], method="nope")


def test_trimap_overlay_colours_each_region():
    img = np.full((1, 3, 3), 0.6, np.float32)
    out = trimap_overlay(img, np.array([[0.0, 0.5, 1.0]], np.float32), tint=0.5)
    np.testing.assert_allclose(out[0, 0], 0.6 * BG_DIM, atol=1e-6)                       # bg dimmed
    np.testing.assert_allclose(out[0, 1], 0.5 * 0.6 + 0.5 * np.array(UNKNOWN_TINT), atol=1e-6)
    np.testing.assert_allclose(out[0, 2], 0.6, atol=1e-6)                                # fg unchanged
    with pytest.raises(ValueError, match="differ in size"):
        trimap_overlay(img, np.zeros((2, 3), np.float32))


def test_trimap_view_layout_and_content():
    img, a = _image(), _disc()
    tri = trimap_band(a, 4)
    v = trimap_view(img, a, tri, max_side=40, gap=2)
    assert v.dtype == np.uint8 and v.shape == (30, 40 * 3 + 4, 3)
    # middle panel is the alpha (gray): its centre is white, its corner black
    mid = v[:, 42:82]
    assert mid[15, 20].tolist() == [255, 255, 255] and mid[0, 0].tolist() == [0, 0, 0]
    # the gaps are white
    assert (v[:, 40:42] == 255).all()


def test_fit_side_never_upscales_and_keeps_aspect():
    a = np.zeros((30, 90), np.float32)
    assert fit_side(a, 45).shape == (15, 45)
    assert fit_side(a, 500).shape == (30, 90)


def test_hstack_vstack_shapes():
    row = hstack([np.zeros((10, 10, 3)), np.zeros((20, 10))], gap=3)
    assert row.shape == (10, 10 + 3 + 5, 3)
    grid = vstack([row, np.zeros((5, 4, 3), np.uint8)], gap=1)
    assert grid.shape == (16, 18, 3) and (grid[11:, 4:] == 255).all()


def test_error_heatmap_is_monotone_and_dims_known_pixels():
    gt = np.zeros((1, 5), np.float32)
    pred = np.array([[0.0, 0.1, 0.2, 0.4, 0.9]], np.float32)
    h = error_heatmap(pred, gt, vmax=0.5)
    brightness = h[0].sum(axis=1)
    assert np.all(np.diff(brightness) > 0)
    tri = np.array([[0.5, 0.5, 0.5, 0.5, 0.0]], np.float32)
    hd = error_heatmap(pred, gt, vmax=0.5, trimap=tri)
    np.testing.assert_allclose(hd[0, 4], h[0, 4] / 3, rtol=1e-6)
    np.testing.assert_allclose(hd[0, :4], h[0, :4])


def test_alpha_view_panels():
    gt = _disc()
    pred = np.clip(gt + 0.3, 0, 1)
    v = alpha_view(_image(), gt, pred, gap=0, max_side=80)
    assert v.shape == (60, 320, 3)
    # the error panel is darkest where pred == gt (far corners: both 0 there... pred = 0.3) -> use the centre
    err = v[:, 240:]
    assert err[30, 40].sum() < err[0, 0].sum()          # centre: gt=1, pred=1 -> no error


def test_metrics_frame_uses_official_metrics():
    gt = _disc()
    pred = np.clip(gt * 0.8, 0, 1)
    tri = trimap_band(gt, 3)
    df = metrics_frame([{"id": "a", "alpha": gt, "pred": pred, "trimap": tri}, {"id": "b", "alpha": gt, "pred": gt}])
    ref = compute_metrics(pred, gt, tri)
    assert df.loc[0, "id"] == "a"
    for k, v in ref.items():
        assert df.loc[0, k] == pytest.approx(v)
    assert (df.loc[1, ["sad", "mse", "grad", "conn"]] == 0).all()


# ------------------------------------------------------------------------------------------------
# trimap inspector
# ------------------------------------------------------------------------------------------------
def test_trimap_inspector_updates_on_slider_changes():
    samples = [("disc", _image(), _disc()), ("small", _image(seed=1), _disc(r=10))]
    ins = TrimapInspector(samples, method="band", band=2, max_side=None)
    png0, share0 = ins.image.value, ins.share
    assert share0 == pytest.approx(unknown_share(trimap_band(_disc(), 2)))
    assert "disc" in ins.info.value and f"{100 * share0:.1f}%" in ins.info.value

    ins.band.value = 8                                     # a wider band -> more unknown, new picture
    assert ins.share == pytest.approx(unknown_share(trimap_band(_disc(), 8)))
    assert ins.share > share0 and ins.image.value != png0
    np.testing.assert_array_equal(_decode(ins.image.value), trimap_view(_image(), _disc(), ins.trimap))

    ins.method.value = "erode_dilate"
    ins.kernel.value = 15
    ref = trimap_erode_dilate(_disc(), np.random.default_rng(0), kernel_range=(15, 15))
    np.testing.assert_array_equal(ins.trimap, ref)
    assert ins.band.disabled and not ins.kernel.disabled

    ins.sample.value = 1
    assert "small" in ins.info.value
    assert ins.share == pytest.approx(unknown_share(ref_small := trimap_erode_dilate(
        _disc(r=10), np.random.default_rng(0), kernel_range=(15, 15))))
    assert ref_small.shape == (60, 80)


def test_trimap_inspector_from_manifest_and_config(tmp_path):
    import pandas as pd

    from mattingkit.config import load_config

    a = _disc(120, 160, r=40)
    write_png(tmp_path / "im.png", _image(120, 160))
    write_png(tmp_path / "al.png", a)
    df = pd.DataFrame([{"id": "0001", "image": str(tmp_path / "im.png"), "alpha": str(tmp_path / "al.png"),
                        "trimap": ""}, {"id": "noalpha", "image": str(tmp_path / "im.png"), "alpha": ""}])
    cfg = load_config("demo", ["trimap.method=band", "trimap.band_width=6"])
    ins = TrimapInspector(df, cfg=cfg, max_side=80)
    assert len(ins.sources) == 1                            # rows without alpha are left out
    assert ins.method.value == "band" and ins.band.value == 6
    assert ins.trimap.shape == (60, 80)                    # loaded at max_side
    from mattingkit.io import read_alpha

    small = fit_side(read_alpha(tmp_path / "al.png"), 80)
    assert ins.share == pytest.approx(unknown_share(trimap_band(small, 6)))
    first = ins.image.value
    ins.method.value = "from_mask"                          # thresholds 0.95 / 0.05 from the config
    np.testing.assert_array_equal(ins.trimap, trimap_from_mask(small, 0.95, 0.05, 6))
    assert ins.image.value != first


def test_trimap_inspector_shows_errors_in_the_widget():
    ins = TrimapInspector([("bad", np.zeros((10, 12, 3)), np.zeros((10, 11), np.float32))])
    assert "differ" in ins.info.value


# ------------------------------------------------------------------------------------------------
# alpha inspector
# ------------------------------------------------------------------------------------------------
def _alpha_items():
    gt = _disc()
    tri = trimap_band(gt, 4)
    preds = {"good": gt, "medium": np.clip(gt * 0.9, 0, 1), "bad": 1 - gt}
    return [{"id": k, "image": _image(), "alpha": gt, "pred": p, "trimap": tri} for k, p in preds.items()]


def test_alpha_inspector_sorts_by_error_and_renders():
    ins = AlphaInspector(_alpha_items())
    assert ins.order_ids == ["bad", "medium", "good"] and ins.current == "bad"
    png_bad = ins.image.value
    ins.rank.value = 2
    assert ins.current == "good" and ins.image.value != png_bad
    good = next(it for it in _alpha_items() if it["id"] == "good")
    np.testing.assert_array_equal(_decode(ins.image.value),
                                  alpha_view(good["image"], good["alpha"], good["pred"], good["trimap"]))
    ins.order.value = "best first"                         # resets to rank 0: the best one
    assert ins.rank.value == 0 and ins.current == "good"
    ins.sort_by.value = "mse"
    assert ins.order_ids[0] == "good"
    sad_bad = ins.table.set_index("id").loc["bad", "sad"]
    it = _alpha_items()[2]
    assert sad_bad == pytest.approx(compute_metrics(it["pred"], it["alpha"], it["trimap"])["sad"])
    assert "<table>" in ins.table_html.value and "bad" in ins.table_html.value


def test_alpha_inspector_from_prediction_folder(tmp_path):
    import pandas as pd

    gt = _disc()
    rows = []
    for sid, pred in (("0001", gt), ("0002", 1 - gt), ("0003", None)):
        write_png(tmp_path / "img" / f"{sid}.png", _image())
        write_png(tmp_path / "gt" / f"{sid}.png", gt)
        if pred is not None:
            write_png(tmp_path / "pred" / f"{sid}.png", pred)
        rows.append({"id": sid, "image": str(tmp_path / "img" / f"{sid}.png"),
                     "alpha": str(tmp_path / "gt" / f"{sid}.png"), "trimap": ""})
    ins = AlphaInspector.from_predictions(pd.DataFrame(rows), tmp_path / "pred")
    assert ins.order_ids == ["0002", "0001"]               # 0003 has no prediction
    with pytest.raises(ValueError, match="no item"):
        AlphaInspector.from_predictions(pd.DataFrame(rows), tmp_path / "nothing-here")

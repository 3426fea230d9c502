"""Tests for mattingkit.metrics: the official DIM SAD / MSE / Grad / Conn and evaluate_folder."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mattingkit import metrics as M
from mattingkit.io import read_alpha, read_trimap, write_png


def _matte(h=40, w=56, seed=0) -> np.ndarray:
    """A smooth soft matte with fully opaque / transparent parts, float32 k/255 values."""
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random((h, w)), 3)
    a = np.clip((a - a.mean()) / a.std() * 0.6 + 0.5, 0, 1)
    return (np.rint(a * 255) / 255).astype(np.float32)


def _trimap(alpha: np.ndarray) -> np.ndarray:
    t = np.full(alpha.shape, 0.5, np.float32)
    t[alpha == 0] = 0
    t[alpha == 1] = 1
    return t


# --------------------------------------------------------------------------------------------
# Against the official MATLAB code (run under GNU Octave 7.3 + image 2.14)
# --------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_matches_official_metrics_csv(alphamatting_dev):
    """All 20 x 4 values of official_metrics.csv (the official .m files run under GNU Octave 7.3)."""
    SHARED = alphamatting_dev
    ref = pd.read_csv(SHARED / "official_metrics.csv", dtype={"image": str})
    assert len(ref) == 20
    worst = dict.fromkeys(M.METRICS, 0.0)
    for r in ref.itertuples():
        gt = read_alpha(SHARED / "alpha" / f"{r.image}.png")
        tri = read_trimap(SHARED / "trimap" / f"{r.image}.png")
        pred = tri if r.prediction == "tri" else read_alpha(
            SHARED / f"pred_{r.prediction}" / f"{r.image}.png")
        got = M.compute_metrics(pred, gt, tri)
        # the same through uint8 inputs: identical, not merely close
        got8 = M.compute_metrics(*(np.rint(x * 255).astype(np.uint8) for x in (pred, gt, tri)))
        assert got8 == got
        for m in M.METRICS:
            worst[m] = max(worst[m], abs(got[m] - getattr(r, m)) / abs(getattr(r, m)))
    # The CSV holds 10 significant digits of Octave's float32 results; the port is exact.
    assert max(worst.values()) < 1e-7, worst


def _octave_cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cases = {}
    # two equal 2x2 blobs: the column-major tie-break picks the bottom-left one
    g = np.zeros((8, 8), np.uint8)
    g[0:2, 5:7] = 255
    g[5:7, 1:3] = 255
    p = g.copy()
    p[0:2, 5:7] = 153
    p[5:7, 1:3] = 204
    p[7, 7] = g[7, 7] = 255  # a lone pixel reaching 1.0 in both (the official code needs one)
    cases["ties"] = (p, g, np.full((8, 8), 128, np.uint8))
    i, j = np.indices((13, 17))
    p = ((i * 7 + j * 13) % 256).astype(np.uint8)
    p[i * 17 + j > 150] = 255
    g = ((i * 31 + j * 5 + 100) % 256).astype(np.uint8)
    g[(i + 2 * j) % 5 == 0] = 255
    p[0, 0] = g[0, 0] = 255
    t = np.where((i + j) % 3 == 0, 0, np.where((i * j) % 7 == 1, 255, 128)).astype(np.uint8)
    cases["levels"] = (p, g, t)
    i, j = np.indices((20, 33))
    g = np.clip((j - 10) * 20 + np.sin(i) * 30, 0, 255).round().astype(np.uint8)
    p = np.clip((j - 11) * 17 + np.cos(i * 1.3) * 40, 0, 255).round().astype(np.uint8)
    t = np.where((j > 6) & (j < 26), 128, np.where(j <= 6, 0, 255)).astype(np.uint8)
    cases["ramp"] = (p, g, t)
    return cases


# sad, mse, grad/1000, conn/1000 printed with %.10g by the official .m files under GNU Octave 7.3
# with image 2.14 (Debian bookworm), for the arrays built in _octave_cases().
OCTAVE_VALUES = {
    "ties": (0.002400000114, 0.01250000112, 0.005852267612, 0.002399999881),
    "levels": (0.04447451234, 0.1775330305, 0.04945993051, 0.0484098047),
    "ramp": (0.04631372914, 0.0285197217, 0.01593510248, 0.04716470838),
}


@pytest.mark.parametrize("name", sorted(OCTAVE_VALUES))
def test_matches_octave_on_tricky_cases(name):
    p, g, t = _octave_cases()[name]
    got = M.compute_metrics(p, g, t)
    for m, want in zip(M.METRICS, OCTAVE_VALUES[name]):
        assert got[m] == pytest.approx(want, rel=1e-8, abs=0), m


def test_conn_tie_break_by_hand():
    # Blob A (top right, pred 0.6) and blob B (bottom left, pred 0.8) have 4 pixels each, gt 1.
    # Octave's bwconncomp numbers B first (column-major) and max() keeps the first of equal
    # sizes, so B is "the" component up to 0.8: A gets round-down 0 -> |phi| diff 0.4 x 4,
    # B gets 0.8 -> diff 0.2 x 4; total 2.4 / 1000. Picking A instead would give 3.2 / 1000.
    p, g, t = _octave_cases()["ties"]
    assert M.conn(p, g, t) == pytest.approx(2.4e-3, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Hand-checkable properties
# --------------------------------------------------------------------------------------------
def test_perfect_prediction_is_zero():
    a = _matte()
    assert M.compute_metrics(a, a, _trimap(a)) == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_constant_offset_known_sad_mse_and_zero_grad():
    g8 = np.rint(_matte() * 200).astype(np.uint8)  # values 0..200, so +30 never clips
    p8 = g8 + np.uint8(30)
    t = np.full(g8.shape, 128, np.uint8)
    t[:5] = 0
    n = int((t == 128).sum())
    assert M.sad(p8, g8, t) == pytest.approx(n * 30 / 255 / 1000, rel=1e-6)
    assert M.mse(p8, g8, t) == pytest.approx((30 / 255) ** 2, rel=1e-6)
    # mat2gray removes the offset exactly, so the gradient error vanishes
    assert M.grad(p8, g8, t) == 0.0


def test_only_unknown_pixels_count():
    g = _matte()
    t = _trimap(g)
    p = g.copy()
    p[t != 0.5] = 1 - p[t != 0.5]  # wrong everywhere outside the unknown region ...
    assert M.sad(p, g, t) == 0.0 and M.mse(p, g, t) == 0.0
    p2 = g.copy()
    ys, xs = np.nonzero(t == 0.5)
    p2[ys[0], xs[0]] = np.float32(min(1.0, g[ys[0], xs[0]] + 0.5))
    assert M.sad(p2, g, t) > 0  # ... but one unknown pixel does


def test_symmetric_in_pred_and_gt():
    a, b = _matte(seed=1), _matte(seed=2)
    t = np.full(a.shape, 0.5, np.float32)
    assert M.compute_metrics(a, b, t) == M.compute_metrics(b, a, t)


def test_uint8_and_float_inputs_equal():
    a, b = _matte(seed=3), _matte(seed=4)
    t = _trimap(a)
    as8 = lambda x: np.rint(x * 255).astype(np.uint8)  # noqa: E731
    assert M.compute_metrics(a, b, t) == M.compute_metrics(as8(a), as8(b), as8(t))
    # float64 and HxWx1 are accepted too; off-grid floats are rounded to 8 bits first
    assert M.compute_metrics(a.astype(np.float64)[..., None], b, t) == M.compute_metrics(a, b, t)
    assert M.sad(a + 0.0004, b, t) == M.sad(a, b, t)


def test_worse_predictions_score_worse():
    g = _matte(seed=5)
    t = _trimap(g)
    blur1 = ndimage.gaussian_filter(g, 1)
    blur4 = ndimage.gaussian_filter(g, 4)
    m1, m4 = M.compute_metrics(blur1, g, t), M.compute_metrics(blur4, g, t)
    assert all(m4[k] > m1[k] > 0 for k in M.METRICS)


def test_conn_isolated_speck():
    g = np.zeros((8, 8), np.float32)
    g[2:6, 2:6] = 1
    p = g.copy()
    p[0, 0] = 1
    t = np.full((8, 8), 0.5, np.float32)
    # the speck never joins the main component: round-down 0, phi 0 vs the gt's 1
    assert M.conn(p, g, t) == pytest.approx(1 / 1000)
    t[0, 0] = 0
    assert M.conn(p, g, t) == 0.0


def test_octave_sum_is_sequential_float32():
    x = np.array([[1e8, 1e8], [1, 4], [1, 4], [1, 4]], np.float32)
    # column 0: 1e8 + 1 + 1 + 1 stays 1e8 in float32 (ulp 8); column 1: 1e8 + 4 -> 1e8 + 8 ...
    col0 = np.float32(1e8)
    for v in (1, 1, 1):
        col0 = np.float32(col0 + np.float32(v))
    col1 = np.float32(1e8)
    for v in (4, 4, 4):
        col1 = np.float32(col1 + np.float32(v))
    assert M._octave_sum2(x) == np.float32(col0 + col1)
    assert M._octave_sum2(x) != np.float32(np.sum(x.astype(np.float64)))


def test_gaussgradient_kernel_matches_official_loop():
    g, dg, norm = M.gaussgradient_kernels(1.4)
    assert g.shape == (9,)  # halfsize = ceil(1.4 * sqrt(-2 log(sqrt(2 pi) 1.4 0.01))) = 4
    sigma = 1.4
    hx = np.zeros((9, 9))
    for i in range(9):  # the official double loop, literally
        for j in range(9):
            u = (i - 4, j - 4)
            gauss = np.exp(-u[0] ** 2 / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
            dgauss = -u[1] * np.exp(-u[1] ** 2 / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi)) / sigma**2
            hx[i, j] = gauss * dgauss
    hx /= np.sqrt(np.sum(np.abs(hx) * np.abs(hx)))
    np.testing.assert_allclose(np.outer(g, dg) / norm, hx, rtol=1e-14, atol=1e-17)
    # the separable filtering equals imfilter(..., 'replicate', 'conv') with the 2-D kernel
    img = _matte(23, 31, seed=6).astype(np.float64)
    gx2 = ndimage.convolve(img, hx, mode="nearest")
    gy2 = ndimage.convolve(img, hx.T, mode="nearest")
    np.testing.assert_allclose(M._gradient_magnitude(img), np.hypot(gx2, gy2), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def test_shape_and_value_errors():
    a = _matte()
    t = _trimap(a)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.sad(a[:-1], a, t)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.compute_metrics(a, a, t[:, :-2])
    with pytest.raises(ValueError, match="single-channel"):
        M.grad(np.stack([a] * 3, -1), a, t)
    with pytest.raises(ValueError, match=r"expected float values in \[0, 1\]"):
        M.mse(a * 255, a, t)
    with pytest.raises(ValueError, match="NaN"):
        M.conn(np.where(a > 0.5, np.nan, a), a, t)
    with pytest.raises(TypeError, match="dtype int16"):
        M.sad(a.astype(np.int16), a, t)
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute_metrics(a, a, t, metrics=("sad", "iou"))
    with pytest.raises(ValueError, match="scale"):
        M.competition_mse(a, a, scale="100")


def test_empty_unknown_region_gives_zeros_and_a_warning():
    a, b = _matte(seed=7), _matte(seed=8)
    t = np.ones(a.shape, np.float32)
    with pytest.warns(M.EmptyUnknownWarning):
        out = M.compute_metrics(a, b, t)
    assert out == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}
    with pytest.warns(M.EmptyUnknownWarning):
        assert M.mse(a, b, t) == 0.0


def test_competition_mse():
    p = np.full((4, 6), 0.2, np.float32)
    g = np.zeros((4, 6), np.float32)
    g[0, 0] = 1.0
    # 23 pixels off by 51/255 = 0.2, one off by 0.8
    want = (23 * 0.2**2 + 0.8**2) / 24
    assert M.competition_mse(p, g) == pytest.approx(want, rel=1e-12)
    assert M.competition_mse(p, g, scale="255") == pytest.approx(want * 255**2, rel=1e-12)
    assert M.compute_metrics(p, g, metrics=["competition_mse"])["competition_mse"] == pytest.approx(want)
    # quantize=False uses the floats as they are
    assert M.competition_mse(p + 0.001, g, quantize=False) != M.competition_mse(p + 0.001, g)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def _folder_fixture(root: Path):
    gts = {s: _matte(24, 30, seed=i) for i, s in enumerate(["0001", "0002", "0003", "0004"])}
    preds = {s: ndimage.gaussian_filter(a, 1 + i) for i, (s, a) in enumerate(gts.items())}
    for s, a in gts.items():
        write_png(root / "gt" / f"{s}.png", a)
        write_png(root / "tri" / f"{s}.png", _trimap(a))
    write_png(root / "pred" / "0001.png", preds["0001"])
    write_png(root / "pred" / "0002.png", np.stack([preds["0002"]] * 3, -1))  # RGB is fine
    (root / "pred" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # corrupt
    # 0004: no prediction; 0099: a prediction without ground truth
    write_png(root / "pred" / "0099.png", preds["0004"])
    return gts, preds


def test_evaluate_folder_reports_problems_at_the_end(tmp_path):
    gts, preds = _folder_fixture(tmp_path)
    out_csv = tmp_path / "out" / "metrics.csv"
    with pytest.warns(UserWarning, match="3 problem") as rec:
        df = M.evaluate_folder(tmp_path / "pred", tmp_path / "gt", tmp_path / "tri", out_csv=out_csv)
    assert len([w for w in rec if "problem" in str(w.message)]) == 1
    assert df["image"].tolist() == ["0001", "0002"]
    for s in ("0001", "0002"):
        pred = read_alpha(tmp_path / "pred" / f"{s}.png")
        want = M.compute_metrics(pred, read_alpha(tmp_path / "gt" / f"{s}.png"),
                                 read_trimap(tmp_path / "tri" / f"{s}.png"))
        assert df.set_index("image").loc[s].to_dict() == pytest.approx(want, rel=1e-12)
    problems = {e["image"]: e["reason"] for e in df.attrs["errors"]}
    assert set(problems) == {"0003", "0004", "0099"}
    assert "corrupt" in problems["0003"] or "not an image" in problems["0003"]
    assert "no prediction" in problems["0004"]
    assert "no ground truth" in problems["0099"]
    assert df.attrs["mean"]["sad"] == pytest.approx(df["sad"].mean())
    # the CSV: per-image rows, stems kept as strings
    back = pd.read_csv(out_csv, dtype={"image": str})
    assert back["image"].tolist() == ["0001", "0002"]
    np.testing.assert_allclose(back["conn"], df["conn"], rtol=1e-9)
    assert not list(out_csv.parent.glob(".*.tmp"))
    text = M.format_table(df)
    assert f"{df['sad'].mean():.4f}" in text and "3 problem(s)" in text and "0003" in text


def test_evaluate_folder_without_trimaps_is_whole_image(tmp_path):
    gts, preds = _folder_fixture(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = M.evaluate_folder(tmp_path / "pred", tmp_path / "gt",
                               metrics=("sad", "mse", "competition_mse"))
    pred = read_alpha(tmp_path / "pred" / "0001.png")
    gt = read_alpha(tmp_path / "gt" / "0001.png")
    row = df.set_index("image").loc["0001"]
    assert row["sad"] == pytest.approx(np.abs(np.rint(pred * 255) - np.rint(gt * 255)).sum() / 255 / 1000,
                                       rel=1e-5)
    # with every pixel unknown the official MSE is the whole-image MSE
    assert row["mse"] == pytest.approx(row["competition_mse"], rel=1e-5)


def test_evaluate_folder_missing_folder_is_an_immediate_error(tmp_path):
    (tmp_path / "gt").mkdir()
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        M.evaluate_folder(tmp_path / "nope", tmp_path / "gt")


def test_format_table_plain():
    df = pd.DataFrame({"image": ["a", "b"], "sad": [1.0, 2.0], "conn": [3.0, 5.0]})
    lines = M.format_table(df).splitlines()
    assert lines[0].split() == ["images", "sad", "conn"]
    assert lines[1].split() == ["2", "1.5000", "4.0000"]


def test_evaluate_folder_reads_predictions_and_truths_strictly_and_counts_expected(tmp_path):
    """A colour photo where a prediction belongs is a problem (as in the submission), not its red channel."""
    a = np.zeros((8, 8), np.float32)
    a[:, 4:] = 1
    photo = np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    for stem in ("a", "b", "c"):
        write_png(tmp_path / "gt" / f"{stem}.png", a)
    write_png(tmp_path / "pred" / "a.png", np.repeat(a[..., None], 3, axis=2))   # gray stored as RGB: fine
    write_png(tmp_path / "pred" / "b.png", photo)
    with pytest.warns(UserWarning):
        df = M.evaluate_folder(tmp_path / "pred", tmp_path / "gt", metrics=("sad",))
    kinds = {e["image"]: e["kind"] for e in df.attrs["errors"]}
    assert df["image"].tolist() == ["a"] and kinds == {"b": "unreadable", "c": "missing"}
    assert df.attrs["n_expected"] == 3 and "1 of 3 evaluated" in M.format_table(df)

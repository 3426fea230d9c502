"""Figures a user reads without the code: titled grids with column headers and row labels, training
curves with labelled axes and one panel per validation metric, rendered to real PNGs."""
from __future__ import annotations

import numpy as np
import pytest

from mattingkit import viz
from mattingkit.io import read_image, write_png


def _item(tmp_path, name: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    a = np.zeros((24, 32), np.float32)
    a[6:18, 8:24] = 1
    write_png(tmp_path / f"{name}_img.png", rng.random((24, 32, 3)).astype(np.float32))
    write_png(tmp_path / f"{name}_a.png", a)
    write_png(tmp_path / "pred" / f"{name}.png", np.clip(a + 0.2 * rng.random(a.shape), 0, 1).astype(np.float32))
    return {"id": name, "image": str(tmp_path / f"{name}_img.png"), "alpha": str(tmp_path / f"{name}_a.png"),
            "trimap": ""}


def test_grid_figure_titles_labels_and_png(tmp_path):
    rows = [[np.zeros((10, 20, 3)), np.full((10, 20), 0.5)], [np.ones((10, 20, 3)), np.zeros((10, 20))]]
    fig = viz.grid_figure(rows, ["image", "alpha"], "A grid", row_labels=["a", "b"], footnote="note")
    assert fig._suptitle.get_text() == "A grid"
    assert [ax.get_title() for ax in fig.axes] == ["image", "alpha", "", ""]
    assert [fig.axes[i].get_ylabel() for i in (0, 2)] == ["a", "b"]
    assert any(t.get_text() == "note" for t in fig.texts)
    out = viz.save_figure(fig, tmp_path / "g.png")
    img = read_image(out)
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0     # a real picture, not blank


def test_grid_figure_rejects_wrong_header_count():
    with pytest.raises(ValueError, match="column titles"):
        viz.grid_figure([[np.zeros((4, 4))]], ["a", "b"], "t")


def test_comparison_figure_columns_from_files(tmp_path):
    rows = [_item(tmp_path, "x1", 0), _item(tmp_path, "x2", 1)]
    fig = viz.manifest_figure(rows, "Predictions", ("image", "trimap", "alpha", "pred", "error"),
                              pred_dir=tmp_path / "pred")
    heads = [ax.get_title() for ax in fig.axes][:5]
    assert heads == ["image", "trimap", "ground truth", "prediction", "|error| (white: >= 0.5)"]
    assert [fig.axes[i].get_ylabel() for i in (0, 5)] == ["x1", "x2"]
    viz.save_figure(fig, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # the untitled array montage (widgets, TensorBoard) is built from the same panels
    assert viz.manifest_grid(rows, 192, ("image", "alpha")).shape[0] == 24 * 2 + viz.GAP


def test_plot_history_panels_labels_and_log_scale(tmp_path):
    recs = [{"step": s, "phase": "train", "total": 1 / s, "alpha": 2 / s, "d_real_mean": -0.1 * s,
             "lr_g": 1e-3, "lr_d": 1e-4} for s in range(1, 6)]
    recs += [{"step": s, "phase": "val", "sad": 10.0 / s, "mse": 0.1 / s, "grad": 3.0, "conn": 9.0 / s, "n": 2}
             for s in (2, 4)]
    fig = viz.plot_history(recs, tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training losses", "learning rate", "discriminator", "validation SAD", "validation MSE",
                      "validation Grad", "validation Conn"]
    assert all(ax.get_ylabel() and ax.get_xlabel() == "step" for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_ylabel() == "loss (log scale)"
    assert fig.axes[2].get_yscale() == "linear"                 # negative logits are not a loss
    assert fig.axes[3].get_ylabel() == "SAD (/1000), lower is better"
    assert fig._suptitle.get_text() == "Training curves"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_history_linear_when_a_loss_is_not_positive():
    recs = [{"step": s, "phase": "train", "total": 1.0 - s} for s in range(3)]
    fig = viz.plot_history(recs)
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylabel() == "loss"
    assert fig.axes[2].get_title() == "validation (no records yet)"

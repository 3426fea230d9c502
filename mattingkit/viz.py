"""Small matplotlib / NumPy pictures: training curves and image / trimap / GT / prediction / error grids.

Pure functions: arrays and history records in, a figure or an array out (matplotlib with the Agg
backend when no display is available; nothing is shown unless you ask). The montage helpers
(:func:`hstack`, :func:`vstack`, with :func:`mattingkit.io.fit_side`) are the ones every picture of the kit is built with:
notebook previews, the inspectors' views and the TensorBoard grids (:func:`make_grid`).

Example:
    >>> import numpy as np
    >>> g = make_grid(np.zeros((2, 3, 8, 8)), np.full((2, 1, 8, 8), .5), np.ones((2, 1, 8, 8)), np.zeros((2, 1, 8, 8)))
    >>> g.shape, g.dtype
    ((16, 40, 3), dtype('float32'))
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import fit_side, to_uint8

PathLike = str | os.PathLike
#: Pixels between the panels of a montage (:func:`hstack`, :func:`vstack`).
GAP = 4


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _samples(x: Any, kind: str) -> list[np.ndarray]:
    """A batch (N,C,H,W) / (N,H,W) or a list of per-sample arrays -> list of HxWx3 (image) or HxW.

    Batches are NCHW (the package convention); list items may be CHW or HWC.
    """
    batched = not isinstance(x, (list, tuple))
    items = list(_np(x)) if batched else list(x)
    out = []
    for a in items:
        a = _np(a)
        if kind == "image":
            if a.ndim == 2:
                a = a[:, :, None]
            elif a.ndim == 3 and (batched or a.shape[-1] not in (1, 3)):
                a = np.moveaxis(a, 0, -1)
            if a.ndim != 3 or a.shape[-1] not in (1, 3):
                raise ValueError(f"make_grid: expected RGB images, got shape {a.shape}")
            if a.shape[-1] == 1:
                a = np.repeat(a, 3, axis=-1)
        else:
            a = np.squeeze(a)
            if a.ndim != 2:
                raise ValueError(f"make_grid: expected single-channel {kind} maps, got shape {a.shape}")
        out.append(np.clip(a, 0.0, 1.0).astype(np.float32))
    return out


def make_grid(image, trimap, alpha, pred, max_items: int = 4, max_side: int = 256) -> np.ndarray:
    """Rows of ``image | trimap | ground truth | prediction | |error|`` as one float32 HxWx3 array in [0,1].

    Each argument is a batch (tensor or array, NCHW / N1HW / NHW) or a list of per-sample arrays
    (sizes may differ: every tile is resized to the first sample's size, capped at ``max_side``).
    The error tile is ``|pred - alpha|`` scaled so that an error of 0.5 is white. Built with
    :func:`hstack` / :func:`vstack` (no gaps), so it holds 8-bit levels.

    Example:
        >>> g = make_grid([np.zeros((4, 6, 3))], [np.zeros((4, 6))], [np.ones((4, 6))], [np.ones((4, 6))])
        >>> g.shape, float(g[:, 24:].max())     # no error -> black error tile
        ((4, 30, 3), 0.0)
    """
    imgs = _samples(image, "image")[:max_items]
    tris = _samples(trimap, "trimap")[:max_items]
    gts = _samples(alpha, "alpha")[:max_items]
    preds = _samples(pred, "prediction")[:max_items]
    n = min(len(imgs), len(tris), len(gts), len(preds))
    if n == 0:
        raise ValueError("make_grid: nothing to show (empty inputs)")
    h, w = imgs[0].shape[:2]
    scale = min(1.0, max_side / max(h, w))
    hw = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    rows = []
    for i in range(n):
        gt, pr = gts[i], preds[i]
        err = np.clip(np.abs(pr - gt) * 2.0, 0, 1) if pr.shape == gt.shape else np.zeros_like(gt)
        rows.append(hstack([resize_to(t, hw) for t in (imgs[i], tris[i], gt, pr, err)], gap=0))
    return vstack(rows, gap=0).astype(np.float32) / 255.0


def _f32(a: Any, name: str) -> np.ndarray:
    """float32 (uint8 scaled to [0, 1]); an empty array is an error naming ``name``."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    a = a.astype(np.float32, copy=False)
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return a


def as_rgb(a: Any, name: str) -> np.ndarray:
    """HxW / HxWx1 / HxWx3 (float [0,1] or uint8) -> float32 HxWx3."""
    a = _f32(a, name)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"{name}: expected HxW or HxWx3, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.clip(a, 0.0, 1.0)


def as_map(a: Any, name: str) -> np.ndarray:
    """HxW / HxWx1 (float [0,1] or uint8) -> float32 HxW."""
    a = _f32(a, name)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a single-channel HxW map, got shape {a.shape}")
    return a


def resize_to(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``a`` resized to ``hw`` = (H, W) (area interpolation down, bilinear up); unchanged when it fits.

    Example:
        >>> resize_to(np.zeros((10, 20), np.float32), (5, 10)).shape
        (5, 10)
    """
    if a.shape[:2] == tuple(hw):
        return a
    import cv2

    return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if a.shape[0] > hw[0] else cv2.INTER_LINEAR)


def fit_nearest(array: np.ndarray, max_side: int | None) -> np.ndarray:
    """Like :func:`fit_side` but nearest-neighbour, so a trimap keeps its three values."""
    return fit_side(array, max_side, nearest=True)


def hstack(panels: Sequence[np.ndarray], gap: int = GAP, fill: float = 1.0) -> np.ndarray:
    """Panels (HxW or HxWx3, float [0,1] or uint8) side by side with ``gap`` px of ``fill`` between
    them; every panel is resized to the first one's height. Returns uint8 HxWx3.

    Example:
        >>> hstack([np.zeros((4, 5)), np.ones((8, 2, 3))], gap=1).shape   # 8x2 -> 4x1
        (4, 7, 3)
    """
    if not panels:
        raise ValueError("hstack: no panels")
    import cv2

    rgb = [as_rgb(p, f"panel {i}") for i, p in enumerate(panels)]
    h = rgb[0].shape[0]
    out = []
    for i, p in enumerate(rgb):
        if p.shape[0] != h:
            w = max(1, round(p.shape[1] * h / p.shape[0]))
            p = cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA if p.shape[0] > h else cv2.INTER_LINEAR)
        if i and gap:
            out.append(np.full((h, gap, 3), fill, np.float32))
        out.append(p)
    return to_uint8(np.concatenate(out, axis=1))


def vstack(rows: Sequence[np.ndarray], gap: int = GAP, fill: float = 1.0) -> np.ndarray:
    """Rows (uint8 or float RGB) one above the other, padded on the right to the widest. uint8 out.

    Example:
        >>> vstack([np.zeros((2, 3, 3), np.uint8), np.zeros((2, 5, 3), np.uint8)], gap=1).shape
        (5, 5, 3)
    """
    if not rows:
        raise ValueError("vstack: no rows")
    rgb = [to_uint8(as_rgb(r, f"row {i}")) for i, r in enumerate(rows)]
    width = max(r.shape[1] for r in rgb)
    fill8 = int(round(fill * 255))
    out = []
    for i, r in enumerate(rgb):
        if i and gap:
            out.append(np.full((gap, width, 3), fill8, np.uint8))
        if r.shape[1] < width:
            r = np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), fill8, np.uint8)], axis=1)
        out.append(r)
    return np.concatenate(out, axis=0)


#: Column headers of the manifest columns in titled figures (:func:`manifest_figure`).
COLUMN_TITLES = {"image": "image", "alpha": "ground truth", "trimap": "trimap", "pred": "prediction",
                 "error": "|error| (white: >= 0.5)"}


def manifest_panels(rows, max_side: int = 192, columns: Sequence[str] = ("image", "alpha", "trimap"),
                    pred_dir: PathLike | None = None) -> list[tuple[str, list[np.ndarray]]]:
    """``[(id, [panel per column])]`` for manifest rows (:func:`mattingkit.data.manifest.load_row`), each
    panel fitted to ``max_side``. A missing alpha is drawn black, a missing trimap mid-gray; ``"pred"``
    is ``pred_dir/<id>.png`` and ``"error"`` ``|pred - alpha|`` (0.5 and above white), rows without a
    prediction being left out when they are asked for; rows without an image are left out.

    Example:
        >>> a = np.zeros((20, 30), np.float32); a[5:15, 5:25] = 1
        >>> [(i, [p.shape for p in ps]) for i, ps in manifest_panels([{"id": "x", "image": np.zeros((20, 30, 3)),
        ...                                                             "alpha": a}], 10, ("image", "alpha"))]
        [('x', [(7, 10, 3), (7, 10)])]
    """
    from .data.manifest import load_row

    records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    out = []
    for r in records:
        if pred_dir is not None:
            p = Path(pred_dir) / f"{r['id']}.png"
            if not p.exists():
                continue
            r = dict(r, pred=str(p))
        s = load_row(r)
        if s["image"] is None:
            continue
        shape = s["image"].shape[:2]
        s["alpha"] = s["alpha"] if s["alpha"] is not None else np.zeros(shape, np.float32)
        s["trimap"] = s["trimap"] if s["trimap"] is not None else np.full(shape, 0.5, np.float32)
        if s.get("pred") is not None:
            s["error"] = np.clip(np.abs(s["pred"] - s["alpha"]) * 2.0, 0, 1)
        out.append((str(r.get("id", len(out))), [fit_side(s[c], max_side) for c in columns]))
    return out


def manifest_grid(rows, max_side: int = 192, columns: Sequence[str] = ("image", "alpha", "trimap"),
                  pred_dir: PathLike | None = None) -> np.ndarray:
    """One untitled montage row per manifest row (:func:`manifest_panels`) as a uint8 RGB array (the
    widgets' and TensorBoard's kind of picture; saved figures use :func:`manifest_figure`).

    Example:
        >>> a = np.zeros((20, 30), np.float32); a[5:15, 5:25] = 1
        >>> manifest_grid([{"id": "x", "image": np.zeros((20, 30, 3), np.float32), "alpha": a}], 10).shape
        (7, 38, 3)
    """
    out = [hstack(panels) for _, panels in manifest_panels(rows, max_side, columns, pred_dir)]
    if not out:
        raise ValueError("manifest_grid: no rows to show")
    return vstack(out)


def _pyplot():
    import matplotlib

    if not os.environ.get("DISPLAY") and "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid_figure(rows: Sequence[Sequence[np.ndarray]], columns: Sequence[str], title: str,
                row_labels: Sequence[str] | None = None, panel_inches: float = 2.4, footnote: str | None = None):
    """The one titled-montage helper: a matplotlib Figure with one image panel per cell, ``columns`` as the
    headers of the top row, ``row_labels`` (e.g. image ids and their SAD) beside the first column,
    ``title`` above all and an optional ``footnote`` below. Panels are HxW maps (drawn gray, 0 black,
    1 white) or HxWx3 images, float [0, 1] or uint8; save with :func:`save_figure`.

    Example:
        >>> fig = grid_figure([[np.zeros((4, 6, 3)), np.ones((4, 6))]], ["image", "alpha"], "Two panels",
        ...                   row_labels=["item 1"])
        >>> fig._suptitle.get_text(), [ax.get_title() for ax in fig.axes], fig.axes[0].get_ylabel()
        ('Two panels', ['image', 'alpha'], 'item 1')
    """
    rows = [list(r) for r in rows]
    if not rows or not any(rows):
        raise ValueError("grid_figure: nothing to show")
    n_cols = max(len(r) for r in rows)
    if len(columns) != n_cols:
        raise ValueError(f"grid_figure: {len(columns)} column titles for {n_cols} columns")
    plt = _pyplot()
    first = as_rgb(rows[0][0], "panel 0")
    aspect = first.shape[0] / max(1, first.shape[1])
    fig, axes = plt.subplots(len(rows), n_cols, squeeze=False,
                             figsize=(n_cols * panel_inches, len(rows) * panel_inches * aspect + 0.9))
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(as_rgb(row[j], f"panel {i},{j}"), vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
            if j == 0 and row_labels is not None and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
    fig.suptitle(title, fontsize=11)
    if footnote:
        fig.text(0.5, 0.005, footnote, ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03 if footnote else 0, 1, 1))
    return fig


def manifest_figure(rows, title: str, columns: Sequence[str] = ("image", "alpha", "trimap"),
                    max_side: int = 192, pred_dir: PathLike | None = None, footnote: str | None = None):
    """:func:`manifest_panels` as a titled :func:`grid_figure`: column headers from :data:`COLUMN_TITLES`,
    the item ids as row labels.

    Example:
        >>> a = np.zeros((20, 30), np.float32); a[5:15, 5:25] = 1
        >>> fig = manifest_figure([{"id": "x", "image": np.zeros((20, 30, 3)), "alpha": a}], "Samples")
        >>> [ax.get_title() for ax in fig.axes], fig.axes[0].get_ylabel()
        (['image', 'ground truth', 'trimap'], 'x')
    """
    items = manifest_panels(rows, max_side, columns, pred_dir)
    if not items:
        raise ValueError("manifest_figure: no rows to show")
    return grid_figure([p for _, p in items], [COLUMN_TITLES.get(c, c) for c in columns], title,
                       row_labels=[i for i, _ in items], footnote=footnote)


def comparison_figure(rows, pred_dirs: dict[str, PathLike], column_titles: dict[str, str], title: str,
                      max_side: int = 192, footnote: str | None = None, error_of: str = "model"):
    """image | trimap | ground truth | one prediction per folder of ``pred_dirs`` | ``|error|`` of
    ``error_of`` (white at >= 0.5), one row per manifest row (``id``, ``image``, ``alpha``, ``trimap``);
    ``column_titles`` head the prediction columns (a missing prediction is drawn black).

    Example:
        >>> import tempfile
        >>> from mattingkit.io import write_png
        >>> d = Path(tempfile.mkdtemp()); a = np.zeros((20, 30), np.float32); a[5:15, 5:25] = 1
        >>> _ = write_png(d / "x.png", a)
        >>> row = {"id": "x", "image": np.zeros((20, 30, 3)), "alpha": a, "trimap": np.full_like(a, .5)}
        >>> fig = comparison_figure([row], {"model": d}, {"model": "model"}, "Real photos")
        >>> [ax.get_title() for ax in fig.axes]
        ['image', 'trimap', 'ground truth', 'model', '|error| of model']
    """
    from .data.manifest import load_row
    from .io import read_alpha

    grid, labels = [], []
    for r in (rows.to_dict("records") if hasattr(rows, "to_dict") else rows):
        s = load_row(r)
        preds = {n: read_alpha(Path(d) / f"{r['id']}.png") for n, d in pred_dirs.items()
                 if (Path(d) / f"{r['id']}.png").exists()}
        blank = np.zeros_like(s["alpha"])
        err = np.clip(np.abs(preds[error_of] - s["alpha"]) * 2, 0, 1) if error_of in preds else blank
        grid.append([fit_side(s["image"], max_side), fit_nearest(s["trimap"], max_side), fit_side(s["alpha"], max_side)]
                    + [fit_side(preds.get(n, blank), max_side) for n in pred_dirs] + [fit_side(err, max_side)])
        labels.append(str(r["id"]))
    cols = ["image", "trimap", "ground truth"] + [column_titles.get(n, n) for n in pred_dirs] + [f"|error| of {error_of}"]
    return grid_figure(grid, cols, title, row_labels=labels, footnote=footnote)


def submission_figure(csv_path: PathLike, test_dir: PathLike, decoded_dir: PathLike, n_show: int,
                      made_by: str | None = None):
    """The first ``n_show`` rows of a submission CSV decoded into ``decoded_dir`` beside their test images
    (:func:`mattingkit.submission.decode_submission`), titled with ``made_by`` (which model and mode made
    the mattes); ``None`` when the CSV has no rows."""
    from .submission import decode_submission

    decoded = decode_submission(csv_path, decoded_dir, limit=n_show)
    rows = [{"id": p.stem, "alpha": str(p),
             "image": str(next(iter(sorted(Path(test_dir).glob(f"{p.stem}.*"))), ""))} for p in decoded]
    if not rows:
        return None
    title = f"Submission preview: first {len(rows)} rows of {Path(csv_path).name}" + (f"\n{made_by}" if made_by else "")
    fig = manifest_figure(rows, title,
                          ("image", "alpha"), 256, footnote="alpha = the PNG decoded from the CSV's image_utf")
    fig.axes[1].set_title("alpha decoded from the CSV", fontsize=9)
    return fig


def show(what: Any, width: int | None = None) -> None:
    """Display a PNG file / PNG bytes / image array in a notebook; print the path elsewhere.

    Example: ``viz.show(ctx.path("data_samples.png"))`` (notebooks: ``pipeline.show``)
    """
    from . import env

    if not env.in_notebook():
        if isinstance(what, (str, os.PathLike)):
            print(f"[image] {what}")
        return
    from IPython.display import Image, display

    if isinstance(what, (str, os.PathLike)):
        display(Image(filename=str(what), width=width))
    elif isinstance(what, (bytes, bytearray)):
        display(Image(data=bytes(what), width=width))
    else:
        from .io import png_bytes

        display(Image(data=png_bytes(np.asarray(what)), width=width))

def save_figure(fig, path: PathLike, dpi: int = 100, close: bool = True) -> Path:
    """Write a matplotlib Figure as a PNG atomically (and close it); returns the path."""
    import io

    from .io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _load_history(history_or_jsonl) -> list[dict]:
    if isinstance(history_or_jsonl, (str, os.PathLike)):
        from .run import read_history

        return read_history(history_or_jsonl)
    if hasattr(history_or_jsonl, "to_dict"):  # a DataFrame
        return history_or_jsonl.to_dict("records")
    return [dict(r) for r in history_or_jsonl]


_SKIP = {"step", "phase", "time", "n", "best", "nonfinite_total"}


#: Axis labels of the validation metrics (official matting metrics; lower is better for all four).
METRIC_LABELS = {"sad": "SAD (/1000)", "mse": "MSE", "grad": "Grad (/1000)", "conn": "Conn (/1000)",
                 "competition_mse": "whole-image MSE"}
_METRIC_TITLES = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn", "competition_mse": "competition MSE"}


def plot_history(history_or_jsonl, out_png: PathLike | None = None, keys: Sequence[str] | None = None):  # noqa: PLR0915 - one figure: a panel per metric, built in place
    """Plot training curves from a run's ``metrics.jsonl`` (path) or its records (list of dicts).

    Panels: training losses (log scale when all are positive), learning rates, the discriminator's mean
    logits / accuracy (when logged), then one panel per validation metric (lower is better), each with a
    title and labelled axes. Returns the matplotlib
    Figure; with ``out_png`` also saves it there (atomically).

    Example:
        >>> recs = [{"step": s, "phase": "train", "total": 1 / s, "lr_g": 1e-3} for s in range(1, 5)]
        >>> recs += [{"step": 4, "phase": "val", "sad": 3.0, "mse": 0.1}]
        >>> fig = plot_history(recs); [ax.get_title() for ax in fig.axes]
        ['training losses', 'learning rate', 'validation SAD', 'validation MSE']
        >>> fig.axes[0].get_yscale(), fig.axes[0].get_ylabel(), fig.axes[2].get_xlabel()
        ('log', 'loss (log scale)', 'step')
    """
    plt = _pyplot()
    recs = _load_history(history_or_jsonl)
    train = [r for r in recs if r.get("phase", "train") == "train"]
    val = [r for r in recs if r.get("phase") == "val"]

    def series(rows: list[dict], key: str):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))
               and not isinstance(r.get(key), bool) and np.isfinite(r[key])]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    train_keys = sorted({k for r in train for k in r if k not in _SKIP and not k.startswith("lr_")})
    if keys is not None:
        train_keys = [k for k in train_keys if k in keys]
    # discriminator diagnostics (mean logits, accuracy) are not losses: their own linear panel
    d_keys = [k for k in train_keys if k.endswith("_mean") or "acc" in k]
    train_keys = [k for k in train_keys if k not in d_keys]
    lr_keys = sorted({k for r in train for k in r if k.startswith("lr_")})
    order = list(METRIC_LABELS)
    val_keys = sorted({k for r in val for k in r if k not in _SKIP},
                      key=lambda k: (order.index(k) if k in order else len(order), k))
    n = 2 + bool(d_keys) + max(1, len(val_keys))
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.4 * nrows + 0.4), squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        fig.delaxes(extra)
    axes = axes[:n]
    if d_keys:
        ax = axes.pop(2)
        for k in d_keys:
            s = series(train, k)
            if s:
                ax.plot(*s, label=k.removeprefix("d_"), lw=0.9)
        ax.set_title("discriminator")
        ax.set_ylabel("mean logit / accuracy")
        ax.legend(fontsize=7)
        axes.append(ax)  # labelled below with the others
    ax = axes[0]
    curves = {k: series(train, k) for k in train_keys}
    curves = {k: s for k, s in curves.items() if s}
    for k, s in curves.items():
        ax.plot(*s, label=k, lw=1.2 if k == "total" else 0.8)
    log = bool(curves) and all(v > 0 for s in curves.values() for v in s[1])
    ax.set_yscale("log" if log else "linear")
    ax.set_title("training losses")
    ax.set_ylabel("loss (log scale)" if log else "loss")
    if curves:
        ax.legend(fontsize=7)
    ax = axes[1]
    for k in lr_keys:
        s = series(train, k)
        if s:
            ax.plot(*s, label={"lr_g": "generator", "lr_d": "discriminator"}.get(k, k[3:]))
    ax.set_title("learning rate")
    ax.set_ylabel("learning rate")
    if lr_keys:
        ax.legend(fontsize=7)
    for ax, k in zip(axes[2:2 + max(1, len(val_keys))], val_keys or [None]):
        if k is None:
            ax.set_title("validation (no records yet)")
            ax.set_ylabel("metric")
            continue
        s = series(val, k)
        if s:
            ax.plot(*s, marker="o", label=k)
        ax.set_title(f"validation {_METRIC_TITLES.get(k, k)}")
        ax.set_ylabel(METRIC_LABELS.get(k, k) + ", lower is better" * (k in METRIC_LABELS))
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves", fontsize=11)
    fig.tight_layout()
    if out_png is not None:
        save_figure(fig, out_png, close=False)
    return fig


def trimap_methods_figure(items: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]], shares: dict[str, float],
                          configured: str, max_side: int, overlay):
    """Notebook 02's montage: per item ``(label, image, {method: trimap})`` the image and each trimap drawn
    by ``overlay(image, trimap)`` (:func:`mattingkit.widgets.trimap_overlay`), headed by the method and
    its mean unknown share (``shares``)."""
    rows = [[fit_side(img, max_side)] + [fit_side(overlay(img, t), max_side) for t in tris.values()]
            for _, img, tris in items]
    cols = ["image"] + [f"{k} ({100 * v:.0f}% unknown)" for k, v in shares.items()]
    return grid_figure(rows, cols, f"Trimap methods (configured: {configured})", row_labels=[i[0] for i in items],
                       footnote="background dimmed, unknown band tinted, foreground as is; "
                                "% unknown = mean share of unknown pixels")

"""Small matplotlib / NumPy pictures: training curves and image / trimap / GT / prediction / error grids.

Pure functions: arrays and history records in, a figure or an array out (matplotlib with the Agg
backend when no display is available; nothing is shown unless you ask).

Example:
    >>> import numpy as np
    >>> g = make_grid(np.zeros((2, 3, 8, 8)), np.full((2, 1, 8, 8), .5), np.ones((2, 1, 8, 8)), np.zeros((2, 1, 8, 8)))
    >>> g.shape, g.dtype
    ((16, 40, 3), dtype('float32'))
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

PathLike = str | os.PathLike


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


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if a.shape[:2] == hw:
        return a
    import cv2

    return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if a.shape[0] > hw[0] else cv2.INTER_LINEAR)


def make_grid(image, trimap, alpha, pred, max_items: int = 4, max_side: int = 256) -> np.ndarray:
    """Rows of ``image | trimap | ground truth | prediction | |error|`` as one float32 HxWx3 array in [0,1].

    Each argument is a batch (tensor or array, NCHW / N1HW / NHW) or a list of per-sample arrays
    (sizes may differ: every tile is resized to the first sample's size, capped at ``max_side``).
    The error tile is ``|pred - alpha|`` scaled so that an error of 0.5 is white.

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
        tiles = [imgs[i]] + [np.repeat(m[:, :, None], 3, axis=2) for m in (tris[i], gt, pr, err)]
        rows.append(np.concatenate([_resize(t, hw) for t in tiles], axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)


def _load_history(history_or_jsonl) -> list[dict]:
    if isinstance(history_or_jsonl, (str, os.PathLike)):
        from .run import read_history

        return read_history(history_or_jsonl)
    if hasattr(history_or_jsonl, "to_dict"):  # a DataFrame
        return history_or_jsonl.to_dict("records")
    return [dict(r) for r in history_or_jsonl]


_SKIP = {"step", "phase", "time", "n", "best", "nonfinite_total"}


def plot_history(history_or_jsonl, out_png: PathLike | None = None, keys: Sequence[str] | None = None):
    """Plot training curves from a run's ``metrics.jsonl`` (path) or its records (list of dicts).

    Three panels: training losses (log scale), learning rates, validation metrics. Returns the
    matplotlib Figure; with ``out_png`` also saves it there (atomically).

    Example:
        >>> recs = [{"step": s, "phase": "train", "total": 1 / s, "lr_g": 1e-3} for s in range(1, 5)]
        >>> recs += [{"step": 4, "phase": "val", "sad": 3.0}]
        >>> fig = plot_history(recs); len(fig.axes)
        3
    """
    import matplotlib

    if not os.environ.get("DISPLAY") and "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = _load_history(history_or_jsonl)
    train = [r for r in recs if r.get("phase", "train") == "train"]
    val = [r for r in recs if r.get("phase") == "val"]

    def series(rows: list[dict], key: str):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))
               and r.get(key) is not None and np.isfinite(r[key])]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    train_keys = sorted({k for r in train for k in r if k not in _SKIP and not k.startswith("lr_")})
    if keys is not None:
        train_keys = [k for k in train_keys if k in keys]
    lr_keys = sorted({k for r in train for k in r if k.startswith("lr_")})
    val_keys = sorted({k for r in val for k in r if k not in _SKIP})

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for k in train_keys:
        s = series(train, k)
        if s:
            positive = all(v > 0 for v in s[1])
            ax.plot(*s, label=k, lw=1.2 if k == "total" else 0.8)
            if not positive:
                ax.set_yscale("linear")
    if train_keys and all(all(v > 0 for v in (series(train, k) or ([], [1]))[1]) for k in train_keys):
        ax.set_yscale("log")
    ax.set_title("training losses")
    ax.set_xlabel("step")
    if train_keys:
        ax.legend(fontsize=7)
    ax = axes[1]
    for k in lr_keys:
        s = series(train, k)
        if s:
            ax.plot(*s, label=k[3:])
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    if lr_keys:
        ax.legend(fontsize=7)
    ax = axes[2]
    for k in val_keys:
        s = series(val, k)
        if s:
            ax.plot(*s, marker="o", label=k)
    ax.set_title("validation")
    ax.set_xlabel("step")
    if val_keys:
        ax.legend(fontsize=7)
    fig.tight_layout()
    if out_png is not None:
        import io

        from .io import atomic_write_bytes

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write_bytes(out_png, buf.getvalue())
    return fig

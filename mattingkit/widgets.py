"""Interactive inspectors (core ipywidgets only) over pure render functions.

Everything that draws is a pure function, arrays in and a ``uint8`` RGB array out, so it is tested
without a kernel; the inspectors only wire sliders to those functions and show the result as PNG
bytes in an ``ipywidgets.Image``. They work in JupyterLab, Colab and Kaggle (no third-party widget
packages) and are harmless in headless papermill runs (the output cell holds a static widget view).

- :class:`TrimapInspector` -- browse samples, pick a trimap method (``erode_dilate`` / ``band`` /
  ``from_mask``) and its kernel / iterations / band with sliders; see image, alpha and the trimap
  overlay, and the unknown-region share, update live.
- :class:`AlphaInspector` -- image, ground truth, prediction and error heat map with the per-image
  official SAD / MSE / Grad / Conn (:mod:`mattingkit.metrics`), sorted by any of them.

The trimaps come from :func:`mattingkit.trimap.make_trimap` (the strategy table
:data:`mattingkit.trimap.METHODS`): the inspector only turns its slider values into that function's
parameters (:meth:`TrimapInspector.params`). Pure functions: :func:`trimap_overlay`, :func:`trimap_view`,
:func:`error_heatmap`, :func:`alpha_view`, :func:`hstack`, :func:`fit_side`, :func:`metrics_frame`.

Example:
    >>> import numpy as np
    >>> img = np.zeros((20, 30, 3), np.float32); alpha = np.zeros((20, 30), np.float32)
    >>> alpha[5:15, 8:22] = 1
    >>> from mattingkit.trimap import make_trimap
    >>> tri = make_trimap(alpha, "band", band=2)
    >>> view = trimap_view(img, alpha, tri, max_side=64)
    >>> view.dtype, view.shape[0]
    (dtype('uint8'), 20)
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data.manifest import load_row
from .io import fit_side, png_bytes
from .metrics import METRICS, compute_metrics
from .trimap import TRIMAP_BUILDERS, make_trimap, unknown_share
from .viz import GAP, hstack, vstack
from .viz import as_map as _as_map
from .viz import as_rgb as _as_rgb
from .viz import fit_nearest as _fit_nearest

PathLike = str | os.PathLike

#: Colour of the unknown region in trimap overlays (RGB in [0, 1]).
UNKNOWN_TINT = (1.0, 0.15, 0.55)
#: Factor applied to the definite-background region in trimap overlays.
BG_DIM = 0.3


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------
def trimap_overlay(image: np.ndarray, trimap: np.ndarray, tint: float = 0.55) -> np.ndarray:
    """The image with the trimap drawn on it: background dimmed (x ``BG_DIM``), unknown tinted
    (``UNKNOWN_TINT`` at opacity ``tint``), foreground unchanged. float32 HxWx3 in [0, 1].

    Example:
        >>> img = np.full((1, 3, 3), 0.5, np.float32)
        >>> [round(float(v), 3) for v in trimap_overlay(img, np.array([[0, .5, 1]], np.float32))[0, :, 0]]
        [0.15, 0.775, 0.5]
    """
    img = _as_rgb(image, "image")
    tri = _as_map(trimap, "trimap")
    if tri.shape != img.shape[:2]:
        raise ValueError(f"trimap {tri.shape} and image {img.shape[:2]} differ in size")
    out = img.copy()
    bg = tri < 0.25
    unknown = (tri >= 0.25) & (tri <= 0.75)
    out[bg] *= BG_DIM
    out[unknown] = (1.0 - tint) * out[unknown] + tint * np.asarray(UNKNOWN_TINT, np.float32)
    return out


def trimap_view(image: np.ndarray, alpha: np.ndarray, trimap: np.ndarray, max_side: int = 256,
                gap: int = GAP) -> np.ndarray:
    """``image | alpha | trimap overlay`` side by side, each at most ``max_side`` px. uint8 HxWx3.

    Example:
        >>> v = trimap_view(np.zeros((10, 10, 3)), np.zeros((10, 10)), np.full((10, 10), .5), gap=2)
        >>> v.shape
        (10, 34, 3)
    """
    img = _as_rgb(image, "image")
    a = _as_map(alpha, "alpha")
    tri = _as_map(trimap, "trimap")
    if not (img.shape[:2] == a.shape == tri.shape):
        raise ValueError(f"sizes differ: image {img.shape[:2]}, alpha {a.shape}, trimap {tri.shape}")
    overlay = trimap_overlay(img, tri)
    return hstack([fit_side(img, max_side), fit_side(a, max_side), fit_side(overlay, max_side)], gap=gap)


_LUT: np.ndarray | None = None


def _inferno() -> np.ndarray:
    global _LUT
    if _LUT is None:
        import matplotlib

        _LUT = np.asarray(matplotlib.colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3], np.float32)
    return _LUT


def error_heatmap(pred: np.ndarray, gt: np.ndarray, vmax: float = 0.5, trimap: np.ndarray | None = None
                  ) -> np.ndarray:
    """``|pred - gt|`` through the *inferno* colour map, ``vmax`` and above at the top colour.
    With a trimap, pixels outside the unknown region are shown at a third of their brightness (the
    official metrics ignore them). float32 HxWx3 in [0, 1].

    Example:
        >>> h = error_heatmap(np.zeros((2, 2)), np.array([[0, .25], [.5, 1.]]))
        >>> bool(h[0, 0].sum() < h[0, 1].sum() < h[1, 0].sum()), bool(np.allclose(h[1, 0], h[1, 1]))
        (True, True)
    """
    p, g = _as_map(pred, "pred"), _as_map(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    if vmax <= 0:
        raise ValueError(f"vmax must be > 0, got {vmax}")
    idx = np.rint(np.clip(np.abs(p - g) / vmax, 0.0, 1.0) * 255).astype(np.intp)
    out = _inferno()[idx]
    if trimap is not None:
        tri = _as_map(trimap, "trimap")
        if tri.shape != p.shape:
            raise ValueError(f"trimap {tri.shape} and prediction {p.shape} differ in size")
        known = (tri < 0.25) | (tri > 0.75)
        out[known] *= 1.0 / 3.0
    return out


def alpha_view(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, trimap: np.ndarray | None = None,
               max_side: int = 256, vmax: float = 0.5, gap: int = GAP) -> np.ndarray:
    """``image | ground truth | prediction | error heat map`` side by side. uint8 HxWx3.

    Example:
        >>> v = alpha_view(np.zeros((8, 8, 3)), np.zeros((8, 8)), np.ones((8, 8)), gap=0)
        >>> v.shape, int(v[0, 31].sum()) > int(v[0, 0].sum())
        ((8, 32, 3), True)
    """
    img = _as_rgb(image, "image")
    g, p = _as_map(gt, "gt"), _as_map(pred, "pred")
    if not (img.shape[:2] == g.shape == p.shape):
        raise ValueError(f"sizes differ: image {img.shape[:2]}, gt {g.shape}, prediction {p.shape}")
    heat = error_heatmap(p, g, vmax=vmax, trimap=trimap)
    return hstack([fit_side(x, max_side) for x in (img, g, p, heat)], gap=gap)


def metrics_frame(items: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS):
    """Per-image official metrics for ``items`` (dicts with ``id``, ``alpha`` (GT), ``pred`` and an
    optional ``trimap``; no trimap = the whole image counts). A DataFrame ``id, sad, mse, grad, conn``.

    Example:
        >>> gt = np.zeros((6, 6), np.float32); gt[:, 3:] = 1
        >>> df = metrics_frame([{"id": "a", "alpha": gt, "pred": gt}, {"id": "b", "alpha": gt, "pred": 1 - gt}])
        >>> [round(v, 6) for v in df["sad"]]     # 36 pixels off by 1, / 1000
        [0.0, 0.036]
    """
    import warnings

    import pandas as pd

    from .metrics import EmptyUnknownWarning

    rows = []
    for it in items:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyUnknownWarning)
            m = compute_metrics(it["pred"], it["alpha"], it.get("trimap"), metrics)
        rows.append({"id": str(it["id"]), **m})
    return pd.DataFrame(rows, columns=["id", *metrics])


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """One sample: arrays given directly, or paths read on first use."""

    id: str
    image: Any = None
    alpha: Any = None
    trimap: Any = None
    pred: Any = None

    def load(self, max_side: int | None) -> dict[str, np.ndarray | str | None]:
        """The sample's arrays (:func:`mattingkit.data.manifest.load_row`), each fitted to ``max_side``."""
        r = load_row({"id": self.id, "image": self.image, "alpha": self.alpha, "trimap": self.trimap,
                      "pred": self.pred})
        fit = {k: (None if r[k] is None else fit_side(r[k], max_side)) for k in ("image", "alpha", "pred")}
        return {"id": self.id, "image": None if fit["image"] is None else _as_rgb(fit["image"], f"{self.id} image"),
                "alpha": None if fit["alpha"] is None else _as_map(fit["alpha"], f"{self.id} alpha"),
                "trimap": None if r["trimap"] is None else _fit_nearest(r["trimap"], max_side),
                "pred": fit["pred"]}


def _sources(samples: Any, pred_dir: PathLike | None = None) -> list[_Source]:
    """Manifest (DataFrame or CSV path) rows, or a sequence of dicts / ``(id, image, alpha)`` tuples."""
    import pandas as pd

    if isinstance(samples, (str, os.PathLike)):
        from .data.manifest import read_manifest

        samples = read_manifest(samples)
    out: list[_Source] = []
    if isinstance(samples, pd.DataFrame):
        for i, row in enumerate(samples.to_dict("records")):
            sid = str(row.get("id", i))
            image = row.get("image") or row.get("fg") or None
            pred = None
            if pred_dir is not None:
                p = Path(pred_dir) / f"{sid}.png"
                pred = str(p) if p.is_file() else None
            out.append(_Source(sid, image, row.get("alpha") or None, row.get("trimap") or None, pred))
        return out
    for i, s in enumerate(samples):
        if isinstance(s, Mapping):
            out.append(_Source(str(s.get("id", i)), s.get("image"), s.get("alpha"), s.get("trimap"), s.get("pred")))
        else:
            sid, image, alpha = s
            out.append(_Source(str(sid), image, alpha))
    return out


def _widgets():
    import ipywidgets

    return ipywidgets


# --------------------------------------------------------------------------------------------
# Trimap inspector
# --------------------------------------------------------------------------------------------
class TrimapInspector:
    """Browse samples and tune a trimap method with sliders; the preview updates live.

    ``samples``: a manifest (DataFrame or CSV path; rows need an ``alpha``), or a list of dicts
    ``{"id", "image", "alpha"}`` / tuples ``(id, image, alpha)`` holding arrays or paths. Images are
    loaded on first view, downscaled to ``max_side`` (the slider pixels are pixels of that size).

    Attributes: ``widget`` (the ``VBox`` to display), ``image`` (the preview ``ipywidgets.Image``),
    ``info`` (HTML: id, size, unknown share), the controls ``sample``, ``method``, ``kernel``,
    ``iterations``, ``band``, ``seed``; ``trimap`` (the current trimap array) and ``share`` (its
    unknown fraction). Setting any control's ``.value`` re-renders.

    Example:
        >>> a = np.zeros((40, 40), np.float32); a[10:30, 10:30] = 1
        >>> ins = TrimapInspector([("x", np.zeros((40, 40, 3)), a)], method="band", band=2)
        >>> before = ins.share; ins.band.value = 6; ins.share > before
        True
    """

    def __init__(self, samples: Any, method: str = "erode_dilate", kernel: int = 10, iterations: int = 1,
                 band: int = 10, fg_threshold: float = 0.95, bg_threshold: float = 0.05, seed: int = 0,
                 max_side: int = 512, view_side: int = 256, cfg: Any = None):
        if cfg is not None:  # start from a TrimapConfig's values
            t = getattr(cfg, "trimap", cfg)
            kernel = int(round(sum(t.kernel_range) / 2))
            iterations, band = int(t.iterations), int(t.band_width)
            fg_threshold, bg_threshold = float(t.fg_threshold), float(t.bg_threshold)
            if t.method in TRIMAP_BUILDERS:
                method = t.method
        if method not in TRIMAP_BUILDERS:
            raise ValueError(f"unknown trimap method {method!r}; choose one of {', '.join(TRIMAP_BUILDERS)}")
        self.sources = [s for s in _sources(samples) if s.alpha is not None]
        if not self.sources:
            raise ValueError("TrimapInspector: no sample with an alpha matte to show")
        self.max_side, self.view_side = max_side, view_side
        self._cache: dict[int, dict] = {}
        w = _widgets()
        slider = dict(continuous_update=False, style={"description_width": "80px"},
                      layout=w.Layout(width="420px"))
        self.sample = w.IntSlider(value=0, min=0, max=len(self.sources) - 1, description="sample", **slider)
        self.method = w.ToggleButtons(options=list(TRIMAP_BUILDERS), value=method, description="method",
                                      style={"description_width": "80px", "button_width": "110px"})
        self.kernel = w.IntSlider(value=int(kernel), min=1, max=61, description="kernel px", **slider)
        self.iterations = w.IntSlider(value=int(iterations), min=1, max=5, description="iterations", **slider)
        self.band = w.IntSlider(value=int(band), min=0, max=60, description="band px", **slider)
        self.fg_threshold = w.FloatSlider(value=fg_threshold, min=0.5, max=1.0, step=0.01,
                                          description="fg ≥", **slider)
        self.bg_threshold = w.FloatSlider(value=bg_threshold, min=0.0, max=0.5, step=0.01,
                                          description="bg ≤", **slider)
        self.seed = w.IntText(value=int(seed), description="seed", layout=w.Layout(width="200px"),
                              style={"description_width": "80px"})
        self.image = w.Image(format="png")
        self.info = w.HTML()
        self.controls = [self.sample, self.method, self.kernel, self.iterations, self.band, self.fg_threshold,
                         self.bg_threshold, self.seed]
        self.widget = w.VBox([self.sample, self.method, w.HBox([w.VBox([self.kernel, self.iterations]),
                                                                 w.VBox([self.band, self.fg_threshold,
                                                                         self.bg_threshold])]),
                              self.info, self.image])
        self.widget.add_class("mattingkit-trimap-inspector")
        self.trimap: np.ndarray | None = None
        self.share: float = float("nan")
        self.renders = 0
        for c in self.controls:
            c.observe(self._on_change, names="value")
        self.update()

    def _load(self, index: int) -> dict:
        if index not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[index] = self.sources[index].load(self.max_side)
        return self._cache[index]

    def params(self) -> dict[str, Any]:
        """The current method and its parameters: keyword arguments of :func:`mattingkit.trimap.make_trimap`
        (``erode_dilate`` with both kernels = the ``kernel`` slider, so the seed does not matter)."""
        k = int(self.kernel.value)
        return {"method": self.method.value, "kernel_range": (k, k), "iterations": int(self.iterations.value),
                "band": self.band.value, "fg_threshold": self.fg_threshold.value,
                "bg_threshold": self.bg_threshold.value, "rng": np.random.default_rng(self.seed.value)}

    def _on_change(self, change) -> None:
        self.update()

    def render(self) -> np.ndarray:
        """Compute the trimap for the current controls; return the preview (uint8 HxWx3)."""
        s = self._load(self.sample.value)
        p = self.params()
        if s["alpha"].shape != s["image"].shape[:2]:
            raise ValueError(f"{s['id']}: image {s['image'].shape[:2]} and alpha {s['alpha'].shape} differ")
        self.trimap = make_trimap(_as_map(s["alpha"], "alpha"), **p)
        self.share = unknown_share(self.trimap)
        return trimap_view(s["image"], s["alpha"], self.trimap, max_side=self.view_side)

    def update(self) -> None:
        m = self.method.value
        self.kernel.disabled = self.iterations.disabled = m != "erode_dilate"
        self.band.disabled = m == "erode_dilate"
        self.fg_threshold.disabled = self.bg_threshold.disabled = m != "from_mask"
        self.seed.disabled = True  # fixed kernels: the draw does not depend on the seed
        try:
            view = self.render()
        except Exception as e:  # show the problem in the widget instead of a traceback in a callback
            self.info.value = f"<b style='color:#b00'>{html.escape(type(e).__name__)}: {html.escape(str(e))}</b>"
            return
        s = self._load(self.sample.value)
        h, w = s["alpha"].shape
        self.image.value = png_bytes(view)
        self.image.width = str(view.shape[1])  # natural size: no browser up-scaling
        self.renders += 1
        self.info.value = (f"<b>{html.escape(s['id'])}</b> ({w}x{h}) — {html.escape(m)}: unknown "
                           f"<b>{100 * self.share:.1f}%</b> of the pixels &nbsp; "
                           f"<span style='color:#666'>image | alpha | trimap (bg dimmed, unknown tinted)</span>")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


# --------------------------------------------------------------------------------------------
# Alpha inspector
# --------------------------------------------------------------------------------------------
class AlphaInspector:
    """Image, ground truth, prediction and error heat map, with the per-image official metrics;
    browse the images sorted by any metric (worst first by default).

    ``items``: dicts ``{"id", "image", "alpha" (GT), "pred", "trimap" (optional)}`` of arrays or
    paths; or use :meth:`from_predictions` with a manifest and a prediction folder. Metrics are
    computed at full resolution when the inspector is built (``table``: DataFrame); the views are
    downscaled to ``view_side``.

    Attributes: ``widget``, ``image``, ``info``, ``table_html``, controls ``sort_by``, ``order``,
    ``rank``; ``order_ids`` (the ids in display order) and ``current`` (the id shown).

    Example:
        >>> gt = np.zeros((16, 16), np.float32); gt[:, 8:] = 1
        >>> items = [{"id": "good", "image": np.zeros((16, 16, 3)), "alpha": gt, "pred": gt},
        ...          {"id": "bad", "image": np.zeros((16, 16, 3)), "alpha": gt, "pred": 1 - gt}]
        >>> ins = AlphaInspector(items)
        >>> ins.current, ins.order_ids
        ('bad', ['bad', 'good'])
    """

    def __init__(self, items: Any, sort_by: str = "sad", worst_first: bool = True, max_side: int | None = None,
                 view_side: int = 256, metrics: Sequence[str] = METRICS, vmax: float = 0.5):
        if sort_by not in metrics:
            raise ValueError(f"sort_by={sort_by!r}; choose one of {', '.join(metrics)}")
        self.view_side, self.vmax = view_side, vmax
        self.metrics = tuple(metrics)
        # Metrics at full resolution (or ``max_side``), one item at a time; keep only small views.
        self.items, rows = [], []
        for src in _sources(items):
            it = src.load(max_side)
            if it["alpha"] is None or it["pred"] is None:
                continue
            if it["pred"].shape != it["alpha"].shape:
                raise ValueError(f"{it['id']}: prediction {it['pred'].shape} and ground truth "
                                 f"{it['alpha'].shape} differ in size")
            rows.append(metrics_frame([it], self.metrics))
            small = {"id": it["id"], "trimap": None if it["trimap"] is None else _fit_nearest(it["trimap"], view_side)}
            small.update({k: fit_side(it[k], view_side) for k in ("image", "alpha", "pred")})
            self.items.append(small)
        if not self.items:
            raise ValueError("AlphaInspector: no item has both a ground truth and a prediction")
        import pandas as pd

        self.table = pd.concat(rows, ignore_index=True)
        self._by_id = {it["id"]: it for it in self.items}
        w = _widgets()
        self.sort_by = w.Dropdown(options=list(self.metrics), value=sort_by, description="sort by",
                                  layout=w.Layout(width="200px"))
        self.order = w.ToggleButtons(options=["worst first", "best first"],
                                     value="worst first" if worst_first else "best first")
        self.rank = w.IntSlider(value=0, min=0, max=len(self.items) - 1, description="rank",
                                continuous_update=False, layout=w.Layout(width="420px"))
        self.image = w.Image(format="png")
        self.info = w.HTML()
        self.table_html = w.HTML()
        self.widget = w.VBox([w.HBox([self.sort_by, self.order]), self.rank, self.info, self.image,
                              self.table_html])
        self.widget.add_class("mattingkit-alpha-inspector")
        self.order_ids: list[str] = []
        self.current: str | None = None
        for c in (self.sort_by, self.order):
            c.observe(self._on_sort, names="value")
        self.rank.observe(lambda change: self.update(), names="value")
        self._sort()
        self.update()

    @classmethod
    def from_predictions(cls, manifest: Any, pred_dir: PathLike, limit: int | None = 50, **kwargs) -> "AlphaInspector":
        """Items from manifest rows (``id``, ``image``, ``alpha``, ``trimap``) whose prediction
        ``pred_dir/<id>.png`` exists (at most ``limit`` of them)."""
        srcs = [s for s in _sources(manifest, pred_dir=pred_dir) if s.pred is not None and s.alpha is not None]
        if limit is not None:
            srcs = srcs[:limit]
        return cls([{"id": s.id, "image": s.image, "alpha": s.alpha, "trimap": s.trimap, "pred": s.pred}
                    for s in srcs], **kwargs)

    def _sort(self) -> None:
        key = self.sort_by.value
        worst_first = self.order.value == "worst first"
        df = self.table.sort_values([key, "id"], ascending=[not worst_first, True], kind="stable")
        self.order_ids = df["id"].tolist()

    def _on_sort(self, change) -> None:
        self._sort()
        if self.rank.value != 0:
            self.rank.value = 0  # triggers update()
        else:
            self.update()

    def render(self) -> np.ndarray:
        it = self._by_id[self.order_ids[self.rank.value]]
        self.current = it["id"]
        return alpha_view(it["image"], it["alpha"], it["pred"], it["trimap"], max_side=self.view_side,
                          vmax=self.vmax)

    def update(self) -> None:
        view = self.render()
        self.image.value = png_bytes(view)
        self.image.width = str(view.shape[1])
        row = self.table.set_index("id").loc[self.current]
        vals = " &nbsp; ".join(f"{m.upper()} <b>{row[m]:.4g}</b>" for m in self.metrics)
        self.info.value = (f"<b>{html.escape(self.current)}</b> (rank {self.rank.value + 1}/{len(self.items)}) "
                           f"&nbsp; {vals} &nbsp; <span style='color:#666'>image | GT | prediction | "
                           f"|error| (≥ {self.vmax:g} brightest)</span>")
        self.table_html.value = self._table(max_rows=12)

    def _table(self, max_rows: int) -> str:
        df = self.table.set_index("id").loc[self.order_ids]
        head = "".join(f"<th style='padding:0 8px'>{m}</th>" for m in ("id",) + self.metrics)
        rows = []
        for sid, r in list(df.iterrows())[:max_rows]:
            style = " style='background:#ffe9a8'" if sid == self.current else ""
            cells = "".join(f"<td style='padding:0 8px;text-align:right'>{r[m]:.4g}</td>" for m in self.metrics)
            rows.append(f"<tr{style}><td style='padding:0 8px'>{html.escape(sid)}</td>{cells}</tr>")
        more = f"<div style='color:#666'>... {len(df) - max_rows} more</div>" if len(df) > max_rows else ""
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def trimap_inspector(samples: Any, **kwargs) -> TrimapInspector:
    """Shortcut for :class:`TrimapInspector` (display the returned object in a notebook)."""
    return TrimapInspector(samples, **kwargs)


def alpha_inspector(manifest: Any, pred_dir: PathLike, **kwargs) -> AlphaInspector:
    """Shortcut for :meth:`AlphaInspector.from_predictions`."""
    return AlphaInspector.from_predictions(manifest, pred_dir, **kwargs)


__all__ = [
    "AlphaInspector", "TrimapInspector", "alpha_inspector", "alpha_view", "error_heatmap",
    "fit_side", "hstack", "metrics_frame", "trimap_inspector", "trimap_overlay", "trimap_view",
    "vstack",
]

"""Folders of images to folders of alpha PNGs, resumably: :func:`predict_folder` (a pipeline of reader
threads, the model, writer threads; per-image failures reported; a smaller-tile retry after running out of
GPU memory), :func:`load_model` / :func:`predictor_for` (a checkpoint or a classical method) and
:func:`predict_split` (a run's split, notebooks 04 and 05).

Settings and the device plan are normalised once at each entry (:func:`predict_folder`,
:func:`predict_split`) and handed down settled to :func:`mattingkit.infer.core.run_passes`; the folder's
producer rule is :mod:`mattingkit.infer.cache`'s. A classical method (:func:`predictor_for`) goes through
the same pipeline as a model; here the trimap as the alpha (a model's example: :func:`predict_folder`).

Example:
    >>> import tempfile, numpy as np
    >>> from mattingkit.io import read_alpha, write_png
    >>> images, trimaps, out = tempfile.mkdtemp(), tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> _ = write_png(f"{images}/a.png", np.full((4, 4, 3), .5, np.float32))
    >>> _ = write_png(f"{trimaps}/a.png", np.eye(4, dtype=np.float32))
    >>> model, producer = predictor_for("trimap")
    >>> predict_folder(model, images, out, trimaps, producer=producer, verbose=False).written
    ['a']
    >>> bool((read_alpha(f"{out}/a.png") == np.eye(4)).all())
    True
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import InferConfig
from ..device import DevicePlan, free_cuda_memory, is_oom
from ..errors import InputDataError, InputNotFoundError
from ..io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    image_size,
    list_images,
    printable,
    read_alpha,
    read_image,
    read_trimap,
    write_png,
)
from ..tiling import geometry_of, oom_ladder
from .cache import add_notes, baseline_producer, claim_prediction_dir, model_producer, module_producer, producer_record
from .core import (
    GuideMemo,
    InferenceInputError,
    infer_settings,
    inference_plan,
    padding,
    predict_batch,
    resize_inputs,
    resolve_context,
    restore_alpha,
    run_passes,
)


@dataclass
class PredictReport:
    """What :func:`predict_folder` did: stems written, skipped (already done) and failed (with reasons);
    ``notes`` (e.g. an image retried with smaller tiles after running out of GPU memory, a baseline's
    downscaled solve) and the ``producer`` recorded in the folder."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (input path or stem, reason)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    producer: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"predict_folder -> {self.out_dir}: {len(self.written)} written, {len(self.skipped)} already done, "
                 f"{len(self.failed)} failed, {self.seconds:.1f}s"]
        lines += [f"  note: {n}" for n in self.notes]
        for name, reason in self.failed:
            lines.append(f"  FAILED {name}: {reason}")
        return printable("\n".join(lines))  # file names that are not UTF-8 must not crash the print


def _find_by_stem(folder: Path, stem: str) -> Path | None:
    for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def _items(images: Any) -> list[tuple[str, Path, Path | None]]:
    """``(stem, image_path, trimap_path_or_None)`` from a folder, a manifest DataFrame or a list of paths."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(images, pd.DataFrame):
        if "image" not in images.columns:
            raise InferenceInputError(f"the DataFrame needs an 'image' column (has {list(images.columns)})")
        out = []
        for _, row in images.iterrows():
            img = str(row["image"])
            stem = str(row["id"]) if "id" in images.columns and str(row["id"]) not in ("", "nan") else Path(img).stem
            tri = row.get("trimap", "")
            tri = Path(str(tri)) if isinstance(tri, str) and tri.strip() and tri != "nan" else None
            out.append((stem, Path(img), tri))
        return out
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise InputNotFoundError(f"{folder}: image folder not found")
        found = list_images(folder, recursive=False)
        if not found:   # "0 written" would read as success
            raise InputDataError(f"{folder}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return [(p.stem, p, None) for p in found]
    return [(Path(p).stem, Path(p), None) for p in images]


def _done(path: Path) -> bool:
    """A finished output: exists and has a readable image header (writes are atomic, so no partial PNGs)."""
    if not path.is_file():
        return False
    try:
        image_size(path)
        return True
    except ImageReadError:
        return False


@dataclass
class _Job:
    """One image of :func:`predict_folder` on its way through the pipeline."""

    stem: str
    img_path: Path
    tri_path: Path | None
    out_path: Path
    rgba_path: Path | None      # cut-out to write, or None
    alpha_done: bool            # the alpha exists (only the cut-out is missing)
    image: np.ndarray | None = None
    trimap: np.ndarray | None = None
    alpha: np.ndarray | None = None


def _load(job: _Job) -> _Job:
    """Read and decode one job's inputs (in a reader thread): uint8 image, trimap, existing alpha."""
    from ..io import read_image_uint8

    job.image = read_image_uint8(job.img_path)
    shape = job.image.shape[:2]
    if job.alpha_done:
        job.alpha = read_alpha(job.out_path)
        if job.alpha.shape != shape:
            raise InferenceInputError(f"existing {job.out_path.name} is {job.alpha.shape}, image is {shape}")
    elif job.tri_path is not None:
        job.trimap = read_trimap(job.tri_path)
        if job.trimap.shape != shape:
            raise InferenceInputError(f"trimap {job.tri_path} is {job.trimap.shape[1]}x{job.trimap.shape[0]}, "
                                      f"image is {shape[1]}x{shape[0]}")
    return job


def _save(job: _Job) -> None:
    """Encode and write one job's outputs atomically (in a writer thread)."""
    if not job.alpha_done:
        write_png(job.out_path, job.alpha)
    if job.rgba_path is not None:
        from ..data.foreground import estimate_foreground

        image = job.image.astype(np.float32) / np.float32(255)
        fg = np.clip(np.asarray(estimate_foreground(image, job.alpha), np.float32), 0, 1)
        write_png(job.rgba_path, np.concatenate([fg, job.alpha[:, :, None]], axis=2))


#: Why :func:`predict_folder` refuses a model trained with trimaps given no trimaps and one pass.
TRIMAP_MODEL_WITHOUT_TRIMAPS = (
    "this model was trained with trimaps (model.use_trimap: true) and no trimaps were given: its single pass "
    "would see an all-unknown trimap and predict noise. Give the trimaps (--trimaps DIR; Python: trimap_dir=), "
    "or predict trimap-free in two passes (--two-pass; two_pass=True: a coarse pass, a trimap from it, a "
    "refining pass), or train a trimap-free model (model.use_trimap: false, as base: ecom does)")
#: A downscaled retry after running out of memory stops below this long side (px).
MIN_DOWNSCALED_SIDE = 64


def _attempt(fn, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None after an out-of-memory error (its memory released)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
    free_cuda_memory()   # out of the except block: the error's traceback (and its activations) is gone
    return None


def _downscaled(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None, s: InferConfig, plan: DevicePlan,
                trimap_cfg: Any, size: tuple[int, int]) -> np.ndarray:
    """The alpha of ``image`` predicted untiled at ``size`` (h, w; :func:`~mattingkit.infer.core.resize_inputs`),
    brought back by :func:`~mattingkit.infer.core.restore_alpha` (the full-size trimap's known pixels exact).
    A guided model's guide is solved here at ``size``, once per try: the guide of the smaller image, as a
    prediction at that size has always had (a resized full-size solve is a different input, so a different
    alpha), and each try halves the pixels, so all of them together cost about one full-size solve."""
    small, tri = resize_inputs(image, trimap, size)
    s_small = dataclasses.replace(s, pixel_budget=max(int(s.pixel_budget), size[0] * size[1]))
    alpha = run_passes(model, small, tri, s_small, plan, trimap_cfg=trimap_cfg)["alpha"]
    return restore_alpha(alpha, image.shape[:2], trimap)


def _predict_with_oom_retry(model: nn.Module, image: np.ndarray, trimap: np.ndarray | None, s: InferConfig,
                            plan: DevicePlan, trimap_cfg: Any, notes: list[str], name: str,
                            guide_memo: GuideMemo) -> np.ndarray:
    """:func:`~mattingkit.infer.core.run_passes`; after an out-of-memory error, again tiled down the
    :func:`mattingkit.tiling.oom_ladder` (at least half of each tile usable, at most
    :data:`~mattingkit.tiling.MAX_TILED_WORK` times the untiled work), then downscaled (half the pixels
    each try) and upsampled back. What it took is noted in ``notes``. A guided model's full-size tries
    share one solve through ``guide_memo`` (the same padded image and trimap each time)."""
    try:
        return run_passes(model, image, trimap, s, plan, trimap_cfg=trimap_cfg, guide_memo=guide_memo)["alpha"]
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
    free_cuda_memory()
    context, grid = resolve_context(model, s.tile_overlap), geometry_of(model).pad_multiple
    h, w = image.shape[:2]
    pads = padding(h, w, int(s.pad_margin), grid)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    tile = min(int(s.tile_size), max(hp, wp)) if h * w > s.pixel_budget else max(hp, wp)
    for t in oom_ladder(hp, wp, tile, context, grid):
        tiled = dataclasses.replace(s, pixel_budget=1, tile_size=t)
        out = _attempt(run_passes, model, image, trimap, tiled, plan, trimap_cfg=trimap_cfg, guide_memo=guide_memo)
        if out is not None:
            notes.append(f"{name}: out of memory ({first}); predicted tiled at tile_size={t}")
            return out["alpha"]
        tile = t
    area = min(tile * tile, hp * wp)
    while True:
        area //= 2
        size = _fit_area(h, w, area, pads, grid)
        if max(size) < MIN_DOWNSCALED_SIDE:
            raise RuntimeError(f"out of memory ({first}), tiled down to tile_size={tile} and downscaled below "
                               f"{MIN_DOWNSCALED_SIDE} px: free GPU memory, or predict on the CPU (--device cpu)")
        alpha = _attempt(_downscaled, model, image, trimap, s, plan, trimap_cfg, size)
        if alpha is not None:
            notes.append(f"{name}: out of memory ({first}); predicted DOWNSCALED to {size[1]}x{size[0]} "
                         f"(from {w}x{h}) and upsampled: a lower-resolution matte")
            return alpha


def _fit_area(h: int, w: int, area: int, pads: tuple[int, int, int, int], grid: int) -> tuple[int, int]:
    """The largest ``(h', w')`` of the image's aspect whose padded size holds at most ``area`` pixels."""
    scale = (area / ((h + pads[0] + pads[1]) * (w + pads[2] + pads[3]))) ** 0.5
    while True:
        nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
        p = padding(nh, nw, pads[0], grid)
        if (nh + p[0] + p[1]) * (nw + p[2] + p[3]) <= area or (nh, nw) == (1, 1):
            return nh, nw
        scale *= 0.9


def _predict_jobs(model: nn.Module, jobs: list[_Job], s: InferConfig, plan: DevicePlan, trimap_cfg: Any,
                  report: PredictReport) -> list[_Job]:
    """Alphas for loaded jobs of one size: one batched forward when it fits, else one by one (with the
    out-of-memory retry). Returns the jobs that got an alpha; failures go into ``report``. A guided model
    solves each image's guide once for all these tries (:class:`~mattingkit.infer.core.GuideMemo`, kept
    for this batch only)."""
    memo = GuideMemo()
    if len(jobs) > 1:
        try:
            alphas = predict_batch(model, [j.image for j in jobs], [j.trimap for j in jobs], s, plan, guide_memo=memo)
            for j, a in zip(jobs, alphas):
                j.alpha = a
            return jobs
        except Exception as e:  # noqa: BLE001 - retried one by one: the failing image gets the blame
            if is_oom(e):
                report.notes.append(f"batch of {len(jobs)} ran out of memory; predicted one by one")
        free_cuda_memory()
    done = []
    for j in jobs:
        try:
            j.alpha = _predict_with_oom_retry(model, j.image, j.trimap, s, plan, trimap_cfg, report.notes, j.stem,
                                              memo)
        except (ImageReadError, InferenceInputError) as e:
            report.failed.append((str(j.img_path), str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - a model error on one image must not stop the folder
            report.failed.append((str(j.img_path), f"{type(e).__name__}: {e}"))
            continue
        done.append(j)
    return done


def predict_folder(model: nn.Module, images: Any, out_dir: str | os.PathLike,
                   trimap_dir: str | os.PathLike | None = None, *, infer_cfg: Any = None,
                   device: str | torch.device | None = None, trimap_cfg: Any = None, skip_existing: bool = True,
                   rgba_dir: str | os.PathLike | None = None, headless: bool | None = None, verbose: bool = True,
                   producer: dict[str, Any] | None = None, force: bool = False, replace_other: bool = False,
                   **settings: Any) -> PredictReport:
    """Predict every image of a folder (or manifest DataFrame with ``id``/``image``[/``trimap``] columns,
    or list of paths) to ``out_dir/<stem>.png`` (8-bit, rounded). Returns a :class:`PredictReport`.

    - Settings: ``infer_cfg`` (an ``InferConfig`` or a whole ``Config``, whose ``run.device`` and
      ``trimap`` then are the defaults of ``device`` and ``trimap_cfg``) with keyword ``settings``
      replacing single fields (as :func:`predict`); ``write_rgba`` and ``batch_size`` are among them.
      A :class:`~mattingkit.baselines.BaselinePredictor` gets its ``PREDICT_KWARGS`` (no padding,
      tiling or TTA) unless ``settings`` say otherwise; its notes go into the report.
    - Producer rule: ``out_dir/_source.json`` records what made the folder's PNGs — ``producer``
      (:func:`model_producer` of a checkpoint, :func:`baseline_producer` of a method; default
      :func:`module_producer` of ``model``) plus the settings that change pixels and whether trimaps
      were given. The same producer resumes; another producer is refused
      (:class:`~mattingkit.errors.RunStateError` saying who made the folder) unless ``force=True``,
      which deletes the folder's PNGs and starts afresh, or ``replace_other=True`` (a cache: another
      producer's PNGs are replaced; ``skip_existing=False`` does the same); the rule is
      :func:`mattingkit.infer.cache.claim_prediction_dir`.
    - Trimaps: ``trimap_dir/<stem>.<ext>`` when ``trimap_dir`` is given, else the DataFrame's ``trimap``
      column, else none (trimap-free). A missing trimap in ``trimap_dir`` is a per-image failure. A
      model trained with trimaps (``use_trimap``) given none is refused unless ``two_pass``
      (:data:`TRIMAP_MODEL_WITHOUT_TRIMAPS` says the ways out).
    - Resumable: with ``skip_existing`` an image whose output exists (and, with ``write_rgba``, whose
      cut-out exists) is skipped. Writes are atomic, so an interrupted run never leaves a partial PNG.
    - Pipelined: reader threads decode ahead (uint8), the model runs (``batch_size`` consecutive
      same-size images in one forward), writer threads encode and write; bounded queues keep memory flat.
    - Unreadable inputs, and any error raised while predicting or writing one image (e.g. inside the
      model), are recorded per file (name + error) and reported at the end; the loop continues. Out of
      GPU memory on one image → that image again down :func:`mattingkit.tiling.oom_ladder` (tiles at
      least half core, at most 4x the untiled work), then downscaled and upsampled back; a note in the
      report and in ``_source.json``.
      ``KeyboardInterrupt`` stops the run (finished predictions already handed to the writers are written).
    - ``write_rgba``: also ``rgba_dir/<stem>.png`` (default ``out_dir/rgba``), RGBA with foreground
      colours from :func:`mattingkit.data.foreground.estimate_foreground`.

    Example:
        >>> import tempfile, numpy as np, torch
        >>> from mattingkit.io import write_png
        >>> class Gray(torch.nn.Module):
        ...     def forward(self, image, trimap):
        ...         return {"alpha": image.mean(1, keepdim=True)}
        >>> src = tempfile.mkdtemp(); _ = write_png(f"{src}/0007.png", np.full((8, 8, 3), .5, np.float32))
        >>> rep = predict_folder(Gray(), src, tempfile.mkdtemp(), verbose=False, headless=True)
        >>> rep.written
        ['0007']
    """
    t0 = time.monotonic()
    from ..baselines import BaselinePredictor

    if isinstance(model, BaselinePredictor):
        settings = {**BaselinePredictor.PREDICT_KWARGS, **settings}
    s = infer_settings(infer_cfg, **settings)          # the settings and the device plan: once, here
    run_cfg = infer_cfg if hasattr(infer_cfg, "run") else getattr(model, "mattingkit_cfg", None)
    if isinstance(model, BaselinePredictor) and device is None:
        plan = DevicePlan.host()                        # a classical solve runs on the host
    else:
        plan = inference_plan(device, s.amp, model, cfg=run_cfg)
    if trimap_cfg is None:
        trimap_cfg = getattr(infer_cfg, "trimap", None)
    return _predict_folder(model, _items(images), Path(out_dir), trimap_dir, s, plan, trimap_cfg,
                           producer=producer, skip_existing=skip_existing, rgba_dir=rgba_dir, headless=headless,
                           verbose=verbose, force=force, replace_other=replace_other or not skip_existing, t0=t0)


def _predict_folder(model: nn.Module, items: list, out_dir: Path, trimap_dir: str | os.PathLike | None,
                    s: InferConfig, plan: DevicePlan, trimap_cfg: Any, *, producer: dict[str, Any] | None,
                    skip_existing: bool, rgba_dir: str | os.PathLike | None, headless: bool | None, verbose: bool,
                    force: bool, replace_other: bool, t0: float) -> PredictReport:
    """:func:`predict_folder` with settled settings and plan: claim the folder, run the pipeline, report."""
    from ..baselines import BaselinePredictor

    notes_before = len(model.notes) if isinstance(model, BaselinePredictor) else 0
    rgba_root = Path(rgba_dir) if rgba_dir is not None else out_dir / "rgba"
    tri_root = _trimap_folder(trimap_dir, s)
    with_trimap = tri_root is not None or any(t is not None for _, _, t in items)
    if not with_trimap and not s.two_pass and bool(getattr(getattr(model, "module", model), "use_trimap", False)):
        raise InferenceInputError(TRIMAP_MODEL_WITHOUT_TRIMAPS)
    record = producer_record(producer if producer is not None else module_producer(model), s, with_trimap)
    claim_prediction_dir(out_dir, record, force=force, replace_other=replace_other, rgba_dir=rgba_root)
    report = PredictReport(out_dir=out_dir, producer=record)
    try:
        _run_folder(model, items, out_dir, rgba_root, tri_root, s, plan, trimap_cfg, skip_existing, report,
                    headless, verbose)
    finally:
        if isinstance(model, BaselinePredictor):
            report.notes.extend(model.notes[notes_before:])
        if report.notes:
            add_notes(out_dir, report.notes)
        report.seconds = time.monotonic() - t0
    if verbose:
        print(report.summary())
    return report


def _plan_jobs(items: list, out_dir: Path, rgba_root: Path, tri_root: Path | None, s: InferConfig,
               skip_existing: bool, report: PredictReport) -> list[_Job]:
    """The jobs of :func:`predict_folder`, in input order: duplicates, finished outputs (resume) and
    missing trimaps are recorded in ``report`` and left out."""
    seen: dict[str, Path] = {}
    jobs: list[_Job] = []
    for stem, img_path, tri_path in items:
        if stem in seen:
            report.failed.append((str(img_path), f"duplicate stem {stem!r} (also {seen[stem].name}); not written"))
            continue
        seen[stem] = img_path
        out_path, rgba_path = out_dir / f"{stem}.png", rgba_root / f"{stem}.png"
        alpha_done = skip_existing and _done(out_path)
        rgba_needed = s.write_rgba and not (skip_existing and _done(rgba_path))
        if alpha_done and not rgba_needed:
            report.skipped.append(stem)
            continue
        if tri_root is not None and not alpha_done:
            tri_path = _find_by_stem(tri_root, stem)
            if tri_path is None:
                report.failed.append((str(img_path), f"no trimap named {stem}.* in {tri_root}"))
                continue
        jobs.append(_Job(stem, img_path, tri_path, out_path, rgba_path if rgba_needed else None, alpha_done))
    return jobs


class _FolderPipeline:
    """Readers ahead (bounded queue of loads), the model in order (batches of one size), writers behind
    (bounded queue of saves). :meth:`close` always runs: started writes finish, so Ctrl-C leaves no
    partial PNG."""

    def __init__(self, model: nn.Module, jobs: list[_Job], s: InferConfig, plan: DevicePlan, trimap_cfg: Any,
                 report: PredictReport, batch: int) -> None:
        import collections
        from concurrent.futures import ThreadPoolExecutor

        self.model, self.s, self.plan, self.trimap_cfg, self.report = model, s, plan, trimap_cfg, report
        self.batch = batch
        self.ahead, self.behind = 2 * batch + 2, 2 * batch + 2          # bounded queues: memory stays flat
        self.readers, self.writers = ThreadPoolExecutor(2, "mk-read"), ThreadPoolExecutor(2, "mk-write")
        self.loads: collections.deque = collections.deque()
        self.saves: collections.deque = collections.deque()
        self.todo = iter(jobs)

    # -- reader stage ------------------------------------------------------------------------
    def refill(self) -> None:
        while len(self.loads) < self.ahead:
            job = next(self.todo, None)
            if job is None:
                return
            self.loads.append((job, self.readers.submit(_load, job)))

    def next_loaded(self) -> _Job | None:
        """The next job in order, loaded; None (recorded as failed) when its inputs cannot be read."""
        job, fut = self.loads.popleft()
        self.refill()
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - unreadable input: recorded, the loop continues
            reason = str(e) if isinstance(e, (ImageReadError, InferenceInputError)) else f"{type(e).__name__}: {e}"
            self.report.failed.append((str(job.img_path), reason))
            return None
        return job

    # -- predict stage -----------------------------------------------------------------------
    def flush(self, group: list[_Job]) -> None:
        predicted = _predict_jobs(self.model, [j for j in group if not j.alpha_done], self.s, self.plan,
                                  self.trimap_cfg, self.report)
        ok = set(map(id, predicted))
        for j in group:
            if j.alpha_done or id(j) in ok:
                self.saves.append((j, self.writers.submit(_save, j)))
        self.drain(self.behind)

    # -- writer stage ------------------------------------------------------------------------
    def drain(self, keep: int) -> None:
        while len(self.saves) > keep:
            job, fut = self.saves.popleft()
            try:
                fut.result()
                self.report.written.append(job.stem)
            except Exception as e:  # noqa: BLE001 - a write error on one image must not stop the folder
                self.report.failed.append((str(job.img_path), f"{type(e).__name__}: {e}"))

    def run(self, it: Any) -> None:
        """Read, batch, predict and write every job; ``it`` (or None) is ticked once per job read."""
        self.refill()
        group: list[_Job] = []
        while self.loads:
            job = self.next_loaded()
            if it is not None:
                next(it, None)
            if job is None:
                continue
            if job.alpha_done or (group and (len(group) >= self.batch or job.image.shape != group[0].image.shape)):
                self.flush(group)
                group = []
            if job.alpha_done:
                self.flush([job])
            else:
                group.append(job)
        self.flush(group)
        self.drain(0)

    def close(self) -> None:
        for _, fut in self.loads:
            fut.cancel()
        self.readers.shutdown(wait=True, cancel_futures=True)
        self.writers.shutdown(wait=True)       # started writes finish (atomically); Ctrl-C leaves no partial PNG


def _run_folder(model: nn.Module, items: list, out_dir: Path, rgba_root: Path, tri_root: Path | None,
                s: InferConfig, plan: DevicePlan, trimap_cfg: Any, skip_existing: bool, report: PredictReport,
                headless: bool | None, verbose: bool) -> None:
    """The pipeline of :func:`predict_folder`: readers ahead, the model in order, writers behind."""
    from ..progress import progress

    batch = max(1, int(getattr(s, "batch_size", 1))) if not s.two_pass else 1
    jobs = _plan_jobs(items, out_dir, rgba_root, tri_root, s, skip_existing, report)
    pipe = _FolderPipeline(model, jobs, s, plan, trimap_cfg, report, batch)
    bar = progress(range(len(jobs)), desc="predict", headless=headless, unit="img") if verbose and jobs else None
    it = iter(bar) if bar is not None else None
    try:
        pipe.run(it)
    finally:
        pipe.close()
        if it is not None:
            next(it, None)
            if hasattr(bar, "close"):
                bar.close()
    order = {j.stem: i for i, j in enumerate(jobs)}
    report.written.sort(key=order.get)


def _trimap_folder(trimap_dir: str | os.PathLike | None, s: InferConfig) -> Path | None:
    if trimap_dir is None:
        return None
    if not Path(trimap_dir).is_dir():
        raise InputNotFoundError(f"{trimap_dir}: trimap folder not found")
    if s.two_pass:
        raise InferenceInputError("two_pass is trimap-free: do not pass trimap_dir with two_pass=True")
    return Path(trimap_dir)


def load_model(path: str | os.PathLike, device: str | torch.device | None = "auto") -> tuple[nn.Module, Any]:
    """Load a generator for inference from ``best.pt`` / ``last.pt`` or the inference-only export.

    Returns ``(model, cfg)`` — the model on ``device`` in eval mode and the run's config (its
    ``cfg.infer`` holds the run's inference settings). ``device``: ``auto`` (the GPU when one is
    visible), ``cpu``, ``cuda[:N]``, or ``None`` (the checkpoint's ``run.device``); decided as training
    decides (:func:`mattingkit.infer.core.inference_plan`): a GPU recipe's checkpoint (``run.require_gpu``)
    on a machine without a GPU stops with training's message unless ``device="cpu"``. Delegates to
    :func:`mattingkit.checkpoint.load_generator` (``torch.load(weights_only=True)``).

    Example:
        >>> model, cfg = load_model("runs/demo/checkpoints/best.pt")  # doctest: +SKIP
    """
    from ..checkpoint import load_generator

    if not Path(path).exists():
        raise InputNotFoundError(f"{path}: checkpoint not found")
    model, cfg = load_generator(path)                  # on the host first: its config decides the device
    plan = inference_plan(device, cfg.infer.amp, cfg=cfg)
    return model.to(plan.device).eval(), cfg


# --------------------------------------------------------------------------------------------
# A run's split: notebooks 04 (validation images) and 05 (competition test images)
# --------------------------------------------------------------------------------------------


@dataclass
class SplitPrediction:
    """What :func:`predict_split` did: the folder, the per-image report, the checkpoint (or baseline
    ``method``), the effective settings (``two_pass`` decided) and whether the items' trimaps were used."""

    out_dir: Path
    report: PredictReport
    checkpoint: Path | None
    settings: InferConfig
    with_trimap: bool
    method: str | None = None

    def describe(self) -> str:
        """Which model and mode made the predictions, in words (figure titles, the console).

        Example:
            >>> from mattingkit.config import InferConfig
            >>> SplitPrediction(Path("p"), None, Path("best.pt"), InferConfig(two_pass=True), False).describe()
            'checkpoint best.pt, trimap-free in two passes (coarse pass -> trimap from it -> refining pass)'
        """
        who = f"baseline {self.method}" if self.method else f"checkpoint {self.checkpoint.name}"
        side = f" at a long side of {self.settings.max_side} px" if self.settings.max_side else ""
        if self.with_trimap:
            return f"{who}, with the items' trimaps{side}"
        if self.settings.two_pass:
            return f"{who}, trimap-free in two passes (coarse pass -> trimap from it -> refining pass){side}"
        return f"{who}, a trimap-free model in one pass{side}"


def predictor_for(method_or_checkpoint: str | os.PathLike, cfg: Any = None,
                  device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, producer)`` for :func:`predict_folder` from a baseline method name
    (:data:`mattingkit.baselines.METHODS`: a :class:`~mattingkit.baselines.BaselinePredictor`, which
    predict_folder runs with its ``PREDICT_KWARGS``, on the host) or a checkpoint path (the model on
    ``device``, default ``cfg.run.device``, else ``auto``; :func:`load_model`). The checkpoint's run config (``None`` for a method) is
    ``model.mattingkit_cfg`` (its ``infer`` and ``trimap`` sections are the checkpoint's settings).

    Example:
        >>> model, producer = predictor_for("closed_form")
        >>> type(model).__name__, producer["method"]
        ('BaselinePredictor', 'closed_form')
    """
    from ..baselines import METHODS, BaselinePredictor

    if device is None:
        device = getattr(getattr(cfg, "run", None), "device", "auto")
    name = str(method_or_checkpoint)
    if name in METHODS and not Path(name).is_file():
        model = BaselinePredictor(name)
        model.mattingkit_cfg = None
        return model, baseline_producer(name, max_pixels=model.max_pixels)
    model, mcfg = load_model(name, device=device)
    model.mattingkit_cfg = mcfg
    return model, model_producer(name)


def predict_split(checkpoint: str | os.PathLike | None, images: Any, out_dir: str | os.PathLike, cfg: Any, *,
                  headless: bool | None = None, verbose: bool = True, method: str | None = None,
                  force: bool = False) -> SplitPrediction:
    """Predict a run's split with the model of ``checkpoint`` (or the classical ``method``, with
    ``checkpoint=None``) into ``out_dir``: the one path of notebooks 04 and 05.

    ``images``: a manifest DataFrame (``id``, ``image``[, ``trimap``]) or a folder. ``cfg``: the run's
    ``Config`` (``infer`` settings, ``trimap`` thresholds, ``run.device``). A model trained with trimaps
    gets the items' trimaps when every item has one; otherwise prediction is trimap-free: two passes
    for a trimap model, ``infer.two_pass`` for a trimap-free one. A method needs every item's trimap.
    The folder is a cache under :func:`predict_folder`'s producer rule, except that another producer's
    PNGs are replaced rather than refused (``force`` replaces even the same producer's).
    """
    import pandas as pd

    from ..baselines import BaselinePredictor

    if (checkpoint is None) == (method is None):
        raise InferenceInputError("predict_split needs a checkpoint or method=, not both")
    is_rows = isinstance(images, pd.DataFrame)
    has_trimaps = is_rows and "trimap" in images.columns and len(images) > 0 and bool((images["trimap"] != "").all())
    if method is not None:
        model, producer = predictor_for(method)
        if not has_trimaps:
            raise InferenceInputError(f"method {method!r} needs a trimap for every image (a 'trimap' column)")
        use_trimap, with_trimap = True, True
        settings = infer_settings(cfg, **BaselinePredictor.PREDICT_KWARGS, two_pass=False)
    else:
        model, mcfg = load_model(checkpoint, device=cfg.run.device)
        producer = model_producer(checkpoint)
        use_trimap = bool(getattr(mcfg.model, "use_trimap", True)) if mcfg is not None else True
        with_trimap = use_trimap and has_trimaps
        settings = infer_settings(cfg, two_pass=False if with_trimap else (use_trimap or bool(cfg.infer.two_pass)))
    if is_rows:
        images = images[["id", "image"] + (["trimap"] if with_trimap else [])]
    plan = DevicePlan.host() if method is not None else inference_plan(cfg.run.device, settings.amp, model, cfg=cfg)
    report = _predict_folder(model, _items(images), Path(out_dir), None, settings, plan, cfg.trimap, producer=producer,
                             skip_existing=True, rgba_dir=None, headless=headless, verbose=verbose, force=force,
                             replace_other=True, t0=time.monotonic())
    return SplitPrediction(out_dir=Path(out_dir), report=report,
                           checkpoint=None if checkpoint is None else Path(checkpoint), settings=settings,
                           with_trimap=with_trimap, method=method)


def downscaled_copy(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, max_side: int) -> Path:
    """PNG copies of the images of ``src_dir`` with the long side capped at ``max_side`` (same stems),
    for quick low-resolution predictions; images already small enough are copied as PNG too."""
    from ..io import fit_side

    dst = Path(dst_dir)
    for p in list_images(src_dir, recursive=False):
        out = dst / f"{p.stem}.png"
        if not out.exists():
            write_png(out, np.clip(fit_side(read_image(p), max_side), 0, 1))
    return dst


__all__ = ["PredictReport", "SplitPrediction", "downscaled_copy", "load_model", "predict_folder", "predict_split",
           "predictor_for"]

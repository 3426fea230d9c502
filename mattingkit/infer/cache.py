"""The prediction cache: who made a folder of predictions, and the one refuse / replace / resume rule.

A folder of alpha PNGs records its producer in ``_source.json`` (:data:`PRODUCER_FILE`): the checkpoint
(path and SHA-256) or classical method, the settings that change a pixel and whether trimaps were given
(:func:`producer_record`). :func:`claim_prediction_dir` is the one rule every prediction path follows:
the same producer resumes, another producer is refused (a user's folder) or replaced (a run's cache,
``replace_other``), ``force`` starts afresh. The run's cache folders are named here too
(:func:`split_dir`, :func:`source_tag`), and :func:`publish` copies a finished file into place.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> rec = producer_record(baseline_producer("knn"), InferConfig(), with_trimap=True)
    >>> claim_prediction_dir(d, rec), claim_prediction_dir(d, rec)
    ('new', 'resume')
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import InferConfig
from ..errors import InputNotFoundError, RunStateError
from ..io import atomic_write_text
from .core import InferenceInputError

#: The producer record of a folder of predictions (what made its PNGs; :func:`claim_prediction_dir`).
PRODUCER_FILE = "_source.json"
#: InferConfig fields that do not change a predicted alpha (left out of the producer record).
_NOT_IN_KEY = {"write_rgba", "batch_size"}


def _checkpoint_sha256(ckpt: Path) -> str:
    from ..checkpoint import file_sha256, sidecar_path

    try:
        digest = json.loads(sidecar_path(ckpt).read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError):
        digest = None
    return digest or file_sha256(ckpt)


def _output_settings(settings: InferConfig | None) -> dict[str, Any]:
    s = settings if settings is not None else InferConfig()
    return {k: v for k, v in sorted(dataclasses.asdict(s).items()) if k not in _NOT_IN_KEY}


def model_producer(checkpoint: str | os.PathLike, settings: InferConfig | None = None) -> dict[str, Any]:
    """The producer of predictions made with the model of ``checkpoint``: its path and SHA-256 (from its
    sidecar, else hashed), plus the output-changing ``settings`` when given (:func:`predict_folder`
    records the settings it actually used in any case).

    Example:
        >>> model_producer("runs/demo/checkpoints/best.pt")["sha256"]  # doctest: +SKIP
        '3f5c...'
    """
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise InputNotFoundError(f"{ckpt}: checkpoint not found")
    rec: dict[str, Any] = {"checkpoint": str(ckpt.resolve()), "sha256": _checkpoint_sha256(ckpt)}
    if settings is not None:
        rec["settings"] = _output_settings(settings)
    return rec


def baseline_producer(method: str, settings: InferConfig | None = None, max_pixels: int | None = None) -> dict[str, Any]:
    """The producer of predictions made by a classical method (:mod:`mattingkit.baselines`).

    Example:
        >>> baseline_producer("closed_form")
        {'method': 'closed_form', 'max_pixels': None}
    """
    from ..baselines import METHODS

    if method not in METHODS:
        raise InferenceInputError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    rec: dict[str, Any] = {"method": method, "max_pixels": max_pixels}
    if settings is not None:
        rec["settings"] = _output_settings(settings)
    return rec


def module_producer(model: nn.Module) -> dict[str, Any]:
    """The producer of a model given as an object: a baseline's method, else the class and a SHA-256 of
    its parameters and buffers (two different checkpoints of one architecture differ).

    Example:
        >>> module_producer(torch.nn.Identity())["model"]
        'torch.nn.modules.linear.Identity'
    """
    from ..baselines import BaselinePredictor

    if isinstance(model, BaselinePredictor):
        return baseline_producer(model.method, max_pixels=model.max_pixels)
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.cpu().contiguous().numpy().tobytes() if t.numel() else b"")
    cls = type(getattr(model, "module", model))
    return {"model": f"{cls.__module__}.{cls.__qualname__}", "weights_sha256": h.hexdigest()}


def producer_record(producer: dict[str, Any], settings: InferConfig, with_trimap: bool) -> dict[str, Any]:
    """What :data:`PRODUCER_FILE` holds: the producer with the settings actually used and whether trimaps were.

    Example:
        >>> producer_record({"method": "knn"}, InferConfig(), True)["settings"]["trimaps"]
        True
    """
    rec = {k: v for k, v in producer.items() if k != "settings"}
    rec["settings"] = {**_output_settings(settings), "trimaps": bool(with_trimap)}
    return json.loads(json.dumps(rec, default=str))   # as it reads back from the file


def _describe(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "an unknown producer (no " + PRODUCER_FILE + ")"
    if "method" in rec:
        who = f"baseline {rec['method']!r}"
    elif "checkpoint" in rec:
        who = f"checkpoint {rec['checkpoint']} (sha256 {str(rec.get('sha256'))[:12]})"
    else:
        who = f"model {rec.get('model')} (weights sha256 {str(rec.get('weights_sha256'))[:12]})"
    return who


def claim_prediction_dir(out_dir: str | os.PathLike, record: dict[str, Any], *, force: bool = False,
                         replace_other: bool = False, rgba_dir: str | os.PathLike | None = None) -> str:
    """The one rule for a folder of predictions, keyed by who made them (``record``: :func:`producer_record`).
    A user's folder refuses another producer; a run's cache (``replace_other``: notebooks 04 and 05)
    replaces it. Returns what happens: ``"new"`` (empty folder), ``"resume"`` (same producer:
    finished PNGs are kept), ``"fresh"`` (``force``, or ``replace_other`` and another producer: its PNGs
    are deleted). Another producer without either → :class:`~mattingkit.errors.RunStateError` naming it.
    The RGBA cut-outs in ``out_dir/rgba`` -- or in ``rgba_dir`` when they are written elsewhere -- belong
    to the same record and go with the mattes.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> claim_prediction_dir(d, {"method": "knn"}), claim_prediction_dir(d, {"method": "knn"})
        ('new', 'resume')
        >>> claim_prediction_dir(d, {"method": "closed_form"}, force=True)
        'fresh'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / PRODUCER_FILE
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict):
        old = {k: v for k, v in old.items() if k != "notes"}   # how PNGs were made, not who made them
    rgba = Path(rgba_dir) if rgba_dir is not None else out / "rgba"
    pngs = list(out.glob("*.png")) + list(rgba.glob("*.png"))
    if old == record and not force:
        return "resume"
    if not pngs and not force:
        atomic_write_text(marker, json.dumps(record, indent=1))
        return "new" if old is None else "fresh"
    if not (force or replace_other):
        what = ""
        if old is not None and {k: v for k, v in old.items() if k != "settings"} == \
                {k: v for k, v in record.items() if k != "settings"}:
            diff = sorted(k for k in set(old.get("settings", {})) | set(record.get("settings", {}))
                          if old.get("settings", {}).get(k) != record.get("settings", {}).get(k))
            was, now = old.get("settings", {}), record.get("settings", {})
            what = " with other settings (" + ", ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in diff) + ")"
        raise RunStateError(
            f"{out} holds {len(pngs)} predictions made by {_describe(old)}{what}; this run is "
            f"{_describe(record)}. Resuming would mix the two. Choose another output folder, or pass "
            "force=True (CLI: --force) to delete those PNGs and start afresh.")
    for p in pngs:
        p.unlink()
    atomic_write_text(marker, json.dumps(record, indent=1))
    return "fresh"


def add_notes(out_dir: str | os.PathLike, notes: list[str]) -> None:
    """Append ``notes`` (e.g. an image predicted downscaled after running out of GPU memory) to the
    ``notes`` of the folder's :data:`PRODUCER_FILE`: they say how some PNGs were made, not who made
    them, so :func:`claim_prediction_dir` ignores them; a fresh start drops them with the PNGs.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); _ = claim_prediction_dir(d, {"method": "knn"})
        >>> add_notes(d, ["a: downscaled"]); claim_prediction_dir(d, {"method": "knn"})
        'resume'
        >>> json.loads((Path(d) / PRODUCER_FILE).read_text())["notes"]
        ['a: downscaled']
    """
    marker = Path(out_dir) / PRODUCER_FILE
    rec = json.loads(marker.read_text(encoding="utf-8"))
    rec["notes"] = list(dict.fromkeys([*rec.get("notes", []), *notes]))
    atomic_write_text(marker, json.dumps(rec, indent=1))


def split_dir(predictions: str | os.PathLike, split: str, max_side: int | None = None) -> Path:
    """The cache folder of a run's ``split`` under ``predictions`` (``<split>``, or ``<split>_<max_side>`` for
    predictions made on copies downscaled to ``max_side``).

    Example:
        >>> split_dir("runs/x/predictions", "test", 256).as_posix()
        'runs/x/predictions/test_256'
    """
    return Path(predictions) / (f"{split}_{max_side}" if max_side else split)


def source_tag(folder: str | os.PathLike) -> str:
    """Eight hex digits naming a source folder by its resolved path: part of a cache folder's name, so
    predictions of another evaluation set never share a cache.

    Example:
        >>> len(source_tag("/data/alphamatting")), source_tag("/a") == source_tag("/b")
        (8, False)
    """
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:8]


def publish(src: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Copy ``src`` to ``final`` atomically (a temporary file renamed into place); returns ``final``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "a.csv").write_text("x")
        >>> publish(d / "a.csv", d / "out" / "b.csv").read_text()
        'x'
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, final)
    return final


__all__ = [
    "PRODUCER_FILE", "add_notes", "baseline_producer", "claim_prediction_dir", "model_producer", "module_producer", "producer_record",
    "publish", "source_tag", "split_dir",
]

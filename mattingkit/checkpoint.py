"""Checkpoints made for Google Drive and Kaggle: two files, atomic writes, verified loads, safe unpickling.

A run keeps exactly two training checkpoints in ``runs/NAME/checkpoints/``:

- ``last.pt``  written every ``train.ckpt_every`` steps and at the end (what auto-resume continues from);
- ``best.pt``  written when the validation metric (``train.best_metric``, ``train.best_mode``) improves.

Each ``X.pt`` has a sidecar ``X.pt.json`` with its size and SHA-256. Writing goes through a temp file in
the same folder (flush + fsync + ``os.replace``), so a crash mid-write leaves the previous file intact;
the sidecar also remembers the previous file's digest, so a crash between the two renames is harmless.
Loading checks the digest (a mismatch raises :class:`CheckpointError` naming the file) and always uses
``torch.load(..., weights_only=True)``: a checkpoint holds only tensors and plain Python values (RNG
states included), so a malicious pickle is refused before anything in it runs.

File names have no colons, no symlinks are made and nothing is renamed over a folder, so the
checkpoint folder may be a mounted Google Drive folder.

``export_inference`` writes a small inference-only file (generator weights, optionally fp16, + config +
version); :func:`load_generator` loads either kind in one call.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = save_checkpoint({"step": 3, "w": torch.ones(2)}, d / "last.pt")
    >>> load_checkpoint(d / "last.pt")["step"]
    3
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import RunStateError
from . import __version__

PathLike = str | os.PathLike

FORMAT = "mattingkit-checkpoint"
EXPORT_FORMAT = "mattingkit-inference"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(RunStateError):
    """A checkpoint file is missing, truncated, corrupt, tampered with or not a mattingkit checkpoint."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------------------------
# Atomic write + sidecar
# --------------------------------------------------------------------------------------------
def sidecar_path(path: PathLike) -> Path:
    """``last.pt`` -> ``last.pt.json`` (size + SHA-256 of the checkpoint file)."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _read_sidecar(path: Path) -> dict | None:
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fsync_dir(folder: Path) -> None:
    # Make the renames durable where the platform allows it (not on Windows, nor on some FUSE mounts).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes | None, writer=None, before_replace=None) -> tuple[int, str]:
    """Write bytes (or call ``writer(fileobj)``) to a temp file beside ``path``; fsync; os.replace.

    Returns (size, sha256) of what was written. ``before_replace(tmp_path)`` runs after the fsync and
    before the rename (used to write the sidecar first, and by tests to simulate a crash).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            f = _HashingWriter(raw)
            if writer is not None:
                writer(f)
            else:
                f.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        if before_replace is not None:
            before_replace(tmp, f.size, f.hexdigest())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return f.size, f.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what passes through (torch.save writes here)."""

    def __init__(self, raw):
        super().__init__()
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = self.raw.write(b)
        self.sha.update(memoryview(b)[:n] if n is not None else b)
        self.size += n if n is not None else len(b)
        return n if n is not None else len(b)

    def flush(self) -> None:
        self.raw.flush()

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


#: Test hook: called with the temp file path after the checkpoint bytes are on disk, before the
#: rename. The killed-writer test sets it to a function that SIGKILLs the process.
_BEFORE_REPLACE_HOOK = None


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> Path:
    """Atomically write ``state`` with ``torch.save`` to ``path`` and its ``.json`` sidecar.

    ``state`` must hold only tensors and plain Python values (dict/list/tuple/str/int/float/bool/None)
    so that it loads with ``weights_only=True``; this is checked before anything is written.

    Order: temp file (fsync) -> sidecar listing the new digest *and* the previous one -> rename. A crash
    at any point leaves ``path`` loadable (old or new content) and verifiable.

    Example:
        >>> import tempfile
        >>> p = save_checkpoint({"step": 1}, Path(tempfile.mkdtemp()) / "last.pt")
        >>> sorted(x.name for x in p.parent.iterdir())
        ['last.pt', 'last.pt.json']
    """
    path = Path(path)
    if ":" in path.name:
        raise ValueError(f"{path}: checkpoint file names must not contain ':' (Google Drive / Windows)")
    _check_plain(state, "state")
    previous = _current_digest(path)

    def before_replace(tmp: Path, size: int, digest: str) -> None:
        meta = {
            "file": path.name,
            "size": size,
            "sha256": digest,
            "previous": previous,  # the content still under `path` until the rename below
            "step": state.get("step") if isinstance(state, Mapping) else None,
            "version": __version__,
            "written": time.strftime("%Y-%m-%dT%H-%M-%S"),
        }
        _write_atomic(sidecar_path(path), json.dumps(meta, indent=1).encode("utf-8"))
        if _BEFORE_REPLACE_HOOK is not None:
            _BEFORE_REPLACE_HOOK(tmp)

    _write_atomic(path, None, writer=lambda f: torch.save(dict(state), f), before_replace=before_replace)
    # The rename succeeded: drop the "previous" entry so only the current digest verifies.
    meta = _read_sidecar(path) or {}
    if meta.get("previous") is not None:
        meta["previous"] = None
        _write_atomic(sidecar_path(path), json.dumps(meta, indent=1).encode("utf-8"))
    return path


def _current_digest(path: Path) -> dict | None:
    """Size and SHA-256 of what is under ``path`` now (None when nothing is).

    After a clean save the sidecar says it (``previous`` is None only once the rename is done), so
    the file is not re-read; after an interrupted save, or without a sidecar, the file is hashed.
    """
    if not path.exists():
        return None
    size = path.stat().st_size
    meta = _read_sidecar(path)
    if meta is not None and meta.get("previous") is None and meta.get("size") == size and meta.get("sha256"):
        return {"size": size, "sha256": meta["sha256"]}
    return {"size": size, "sha256": file_sha256(path)}


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str/int (weights_only loading would refuse it)")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: {type(obj).__name__} cannot be stored in a checkpoint (only tensors and plain Python "
        "values load with weights_only=True)"
    )


def verify_checkpoint(path: PathLike) -> dict:
    """Check ``path`` against its sidecar; return the sidecar dict. Raises :class:`CheckpointError`.

    A missing sidecar is allowed (a copied or exported-elsewhere file): returns ``{}`` with a warning.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "checkpoint file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "empty file (0 bytes): the write was interrupted")
    meta = _read_sidecar(path)
    if meta is None:
        if sidecar_path(path).exists():
            raise CheckpointError(path, f"sidecar {sidecar_path(path).name} is unreadable; cannot verify")
        warnings.warn(f"{path}: no {sidecar_path(path).name} sidecar; loading without integrity check",
                      stacklevel=3)
        return {}
    candidates = [meta] + ([meta["previous"]] if isinstance(meta.get("previous"), dict) else [])
    sizes = [c.get("size") for c in candidates]
    if size not in sizes:
        raise CheckpointError(
            path, f"size {size} bytes does not match the sidecar ({meta.get('size')} bytes): truncated or "
                  "replaced after it was written")
    digest = file_sha256(path)
    if digest not in [c.get("sha256") for c in candidates]:
        raise CheckpointError(path, "SHA-256 does not match the sidecar: the file is corrupt or was modified")
    return meta


def _torch_load(path: Path, map_location) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            path, "refused: the file contains Python objects that are not plain data (only tensors and "
                  f"plain values are loaded, weights_only=True): {str(e).splitlines()[0]}") from None
    except Exception as e:  # truncated zip, bad magic number, ...
        raise CheckpointError(path, f"cannot be read by torch.load (truncated or corrupt?): {e}") from None


def load_checkpoint(path: PathLike, fallback: PathLike | None = None, map_location: Any = "cpu",
                    verify: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (verified, ``weights_only=True``).

    If ``path`` is missing, corrupt, truncated or refused and ``fallback`` is given (typically the
    sibling ``best.pt``), warn and load the fallback instead; otherwise raise :class:`CheckpointError`.
    The loaded dict gets ``"_path"`` = the file actually loaded.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 7}, d / "best.pt")
        >>> _ = (d / "last.pt").write_bytes(b"garbage")
        >>> import warnings; warnings.simplefilter("ignore")
        >>> load_checkpoint(d / "last.pt", fallback=d / "best.pt")["step"]
        7
    """
    path = Path(path)
    try:
        if verify:
            verify_checkpoint(path)
        state = _torch_load(path, map_location)
        if not isinstance(state, dict):
            raise CheckpointError(path, f"expected a dict, found {type(state).__name__}")
    except CheckpointError as err:
        if fallback is None or Path(fallback) == path:
            raise
        warnings.warn(f"{err}; falling back to {fallback}", stacklevel=2)
        state = load_checkpoint(fallback, None, map_location, verify)
        state["_fallback_from"] = str(path)
        return state
    state["_path"] = str(path)
    return state


def cleanup_temp_files(folder: PathLike) -> list[Path]:
    """Remove temp files left by interrupted writes (``.last.pt.*.tmp`` etc.) in ``folder``."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            if p.is_file() and any(p.name.startswith(f".{n}") for n in (LAST, BEST)):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


# --------------------------------------------------------------------------------------------
# RNG state as plain data (weights_only-loadable)
# --------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Python, NumPy (legacy global), torch CPU and CUDA RNG states as tensors / plain values.

    Example:
        >>> s = rng_state(); a = torch.rand(1); set_rng_state(s); bool(torch.rand(1) == a)
        True
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [int(version), torch.tensor(internal, dtype=torch.int64),
                   None if gauss is None else float(gauss)],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()), int(pos),
                  int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu().to(torch.uint8) for t in cuda])


# --------------------------------------------------------------------------------------------
# Inference export / loading
# --------------------------------------------------------------------------------------------
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def export_inference(ckpt_path: PathLike, out_path: PathLike, half: bool = True) -> Path:
    """Write a small inference-only file from a training checkpoint: generator weights (fp16 when
    ``half``) + config + version + step/best. Loadable with :func:`load_generator`.

    Example (given a run): ``export_inference("runs/demo/checkpoints/best.pt", "demo_infer.pt")``
    """
    state = load_checkpoint(ckpt_path)
    if state.get("format") not in (FORMAT, EXPORT_FORMAT) or "generator" not in state:
        raise CheckpointError(ckpt_path, "not a mattingkit checkpoint (no 'generator' weights)")
    weights = {}
    for k, v in state["generator"].items():
        weights[k] = v.half() if (half and torch.is_floating_point(v)) else v
    out = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "config": state["config"],
        "generator": weights,
        "step": state.get("step"),
        "best": state.get("best"),
        "source": Path(ckpt_path).name,
    }
    return save_checkpoint(out, out_path)


def load_generator(path: PathLike, device: str | torch.device = "cpu"):
    """Load a generator ready for inference from ``best.pt`` / ``last.pt`` or an export.

    Returns ``(model, cfg)``: the model in eval mode, float32, on ``device``; ``cfg`` the run's
    :class:`~mattingkit.config.Config`. No pretrained backbone is downloaded (weights come from the file).

    Example (given a run): ``model, cfg = load_generator("runs/demo/checkpoints/best.pt")``
    """
    from .config import from_dict
    from .models import build_model

    state = load_checkpoint(path)
    if state.get("format") not in (FORMAT, EXPORT_FORMAT) or "generator" not in state:
        raise CheckpointError(path, "not a mattingkit checkpoint (no 'generator' weights)")
    cfg = from_dict(state["config"])
    model_cfg = from_dict(state["config"]).model
    model_cfg.pretrained = False
    model_cfg.weights_path = None
    model = build_model(model_cfg)
    weights = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in state["generator"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(path, f"generator weights do not fit the model in its config: {e}") from None
    model = model.float().to(device).eval()
    return model, cfg

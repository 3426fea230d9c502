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
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from . import __version__, drive, env
from .device import HOST
from .errors import RunStateError
from .io import mkstemp_usual_mode

PathLike = str | os.PathLike

FORMAT = "mattingkit-checkpoint"
EXPORT_FORMAT = "mattingkit-inference"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


class CheckpointWriteError(RunStateError):
    """A checkpoint could not be written (disk or Drive full, rename refused); the previous one is intact."""


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


def _write_atomic(path: Path, data: bytes | None, writer=None, before_replace=None) -> tuple[int, str]:
    """Write bytes (or call ``writer(fileobj)``) to a temp file beside ``path``; fsync; os.replace.

    Returns (size, sha256) of what was written. ``before_replace(tmp_path)`` runs after the fsync and
    before the rename (used to write the sidecar first, and by tests to simulate a crash).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = mkstemp_usual_mode(path)   # 0644 under the usual umask, not mkstemp's 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            f = _HashingWriter(raw)
            try:
                if writer is not None:
                    writer(f)
                else:
                    f.write(data)
            except Exception as e:
                # torch.save reports a failed write (disk full) as a RuntimeError from its zip writer:
                # surface the OSError underneath so the caller can say what happened.
                if f.error is not None and not isinstance(e, OSError):
                    raise f.error from e
                raise
            raw.flush()
            drive.fsync_tolerant(raw.fileno())  # refused on Drive: the sidecar's SHA-256 still checks
        if before_replace is not None:
            before_replace(tmp, f.size, f.hexdigest())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    drive.fsync_dir(path.parent)
    return f.size, f.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what passes through (torch.save writes here)."""

    def __init__(self, raw):
        super().__init__()
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            n = self.raw.write(b)
        except OSError as e:
            self.error = e
            raise
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


def save_checkpoint(state: Mapping[str, Any], path: PathLike, mirror_dir: PathLike | None = None,
                    mirror_required: bool = False) -> Path:
    """Atomically write ``state`` with ``torch.save`` to ``path`` and its ``.json`` sidecar.

    ``state`` must hold only tensors and plain Python values (dict/list/tuple/str/int/float/bool/None)
    so that it loads with ``weights_only=True``; this is checked before anything is written.

    Order: temp file (fsync) -> sidecar listing the new digest *and* the previous one -> rename. A crash
    at any point leaves ``path`` loadable (old or new content) and verifiable. A full disk raises
    :class:`CheckpointWriteError` (the previous checkpoint is left as it was).

    ``mirror_dir`` (e.g. the run's folder on a mounted Google Drive): after the local write, copy the file
    and its sidecar there the same way (:func:`mirror_checkpoint`). A failed mirror warns and the local
    checkpoint stands, unless ``mirror_required``.

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
    meta = {"step": state.get("step") if isinstance(state, Mapping) else None, "version": __version__,
            "written": time.strftime("%Y-%m-%dT%H-%M-%S"), "written_ns": time.time_ns()}
    _publish(path, lambda f: torch.save(dict(state), f), meta, what="checkpoint")
    if mirror_dir is not None:
        mirror_checkpoint(path, mirror_dir, required=mirror_required)
    return path


def _publish(path: Path, writer, meta: Mapping[str, Any], what: str, expect_sha256: str | None = None,
             source: Path | None = None) -> None:
    """Write ``writer(fileobj)``'s bytes to ``path`` with the sidecar protocol (see :func:`save_checkpoint`).
    ``expect_sha256`` (a copy of ``source``): bytes with another digest are refused before anything is
    renamed (:class:`CheckpointError` naming ``source``)."""
    previous = _current_digest(path)
    old_side = _read_sidecar(path) if path.exists() else None
    old_side_bytes = None
    if old_side is not None:
        try:
            old_side_bytes = sidecar_path(path).read_bytes()
        except OSError:
            pass
        if previous is not None:
            previous.update({k: old_side.get(k) for k in ("step", "written_ns") if k in old_side})
    wrote_sidecar = []

    def before_replace(tmp: Path, size: int, digest: str) -> None:
        if expect_sha256 is not None and digest != expect_sha256:
            raise CheckpointError(source or path, f"the copy to {path} does not match the SHA-256 in its "
                                  "sidecar (the bytes read differ from the bytes written: a Google Drive read "
                                  "error, or the file changed while it was copied); refused")
        side = {"file": path.name, "size": size, "sha256": digest,
                "previous": previous}  # the content still under `path` until the rename below
        side.update(meta)
        _write_atomic(sidecar_path(path), json.dumps(side, indent=1).encode("utf-8"))
        wrote_sidecar.append(True)
        if _BEFORE_REPLACE_HOOK is not None:
            _BEFORE_REPLACE_HOOK(tmp)

    try:
        _write_atomic(path, None, writer=writer, before_replace=before_replace)
    except OSError as e:
        if wrote_sidecar and old_side_bytes is not None:   # the rename failed: the old sidecar again
            try:
                _write_atomic(sidecar_path(path), old_side_bytes)
            except OSError:
                pass   # the new sidecar lists the old digest under "previous": still verifiable
        raise _write_error(path, e, what, old_side) from None
    # The rename succeeded: drop the "previous" entry so only the current digest verifies. If this
    # small write fails (disk full), the sidecar with both digests still verifies the new file.
    side = _read_sidecar(path) or {}
    if side.get("previous") is not None:
        side["previous"] = None
        try:
            _write_atomic(sidecar_path(path), json.dumps(side, indent=1).encode("utf-8"))
        except OSError:
            pass


def _gb(n: int | float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.1f} MB"


def _write_error(path: Path, err: OSError, what: str, prev: dict | None) -> CheckpointWriteError:
    """The message for a failed checkpoint write: what happened, that the previous file is intact, what to do."""
    try:
        there = path.exists()
    except OSError:   # the folder itself cannot be read now (a Drive hiccup)
        there = True
    kept = (f"the previous {path.name} (step {prev.get('step')}) is intact" if prev and there
            else f"no earlier {path.name} was there" if not there else f"the previous {path.name} is intact")
    if err.errno in drive.NO_SPACE:
        need = (prev or {}).get("size")
        msg = (f"{what} {path}: no space left on the device ({_gb(drive.free_bytes(path.parent))} free, the checkpoint "
               f"needs about {_gb(need)}); {kept}. Free space in {path.parent} (on Google Drive: empty the "
               "trash, which counts against the quota) and run again to resume.")
    else:
        msg = f"{what} {path}: could not be written ({type(err).__name__}: {err}); {kept}."
    e = CheckpointWriteError(msg)
    e.errno = err.errno
    return e


class MirrorWarning(UserWarning):
    """A checkpoint could not be copied to its mirror folder (the local checkpoint is fine)."""


def mirror_checkpoint(path: PathLike, mirror_dir: PathLike, required: bool = False) -> Path | None:
    """Copy a verified local checkpoint and its sidecar into ``mirror_dir`` (same name): temp file, then
    rename; the mirrored sidecar carries the same size/SHA-256/step, so the mirror verifies on its own.
    A refused fsync is tolerated. On failure the mirror keeps its previous copy (still verifiable) and a
    :class:`MirrorWarning` is issued, or :class:`CheckpointWriteError` raised when ``required``.
    Returns the mirrored path, or None when it failed.

    Example:
        >>> import tempfile
        >>> a, b = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 5}, a / "last.pt", mirror_dir=b)
        >>> load_checkpoint(b / "last.pt")["step"], sorted(p.name for p in b.iterdir())
        (5, ['last.pt', 'last.pt.json'])
    """
    path, mirror_dir = Path(path), Path(mirror_dir)
    target = mirror_dir / path.name
    if target.resolve() == path.resolve():
        return target

    def attempt() -> None:
        mirror_dir.mkdir(parents=True, exist_ok=True)
        cleanup_temp_files(mirror_dir)
        _copy_checked(path, target, what="mirror copy")

    try:
        drive.retry(attempt)   # a Drive hiccup (EIO, ENOTCONN, ...) is tried again a few times
    except (CheckpointWriteError, CheckpointError, OSError) as e:
        if required:
            raise (e if isinstance(e, (CheckpointWriteError, CheckpointError))
                   else _write_error(target, e, "mirror copy", None)) from None
        warnings.warn(f"{e} The local checkpoint {path} is complete; the mirror will be retried at the next "
                      "checkpoint.", MirrorWarning, stacklevel=3)
        return None
    return target


def _copy_checked(src: Path, dst: Path, what: str) -> None:
    """Copy a checkpoint and its sidecar: the bytes written must have the digest of ``src``'s sidecar
    (:class:`CheckpointError` otherwise, and ``dst`` is left as it was)."""
    meta = _read_sidecar(src) or {}
    extra = {k: v for k, v in meta.items() if k not in ("file", "size", "sha256", "previous")}
    prev = meta.get("previous")
    expect = meta.get("sha256")
    if isinstance(prev, dict) and src.stat().st_size == prev.get("size") != meta.get("size"):
        expect = prev.get("sha256")   # an interrupted save left the previous file in place
        extra.update({k: prev[k] for k in ("step", "written_ns") if k in prev})

    def copy(f) -> None:
        with open(src, "rb") as fsrc:
            shutil.copyfileobj(fsrc, f, 8 << 20)

    _publish(dst, copy, extra, what=what, expect_sha256=expect, source=src)


def _newness(path: Path) -> tuple[int, int]:
    """(step, write time) of what is under ``path`` now, from its sidecar (the ``previous`` entry when an
    interrupted save left the old file in place)."""
    meta = _read_sidecar(path) or {}
    prev = meta.get("previous")
    if isinstance(prev, dict) and path.exists() and path.stat().st_size == prev.get("size") != meta.get("size"):
        meta = prev
    try:
        step = int(meta.get("step") or 0)
    except (TypeError, ValueError):
        step = 0
    try:
        ns = int(meta.get("written_ns") or 0)
    except (TypeError, ValueError):
        ns = 0
    return step, ns


def _valid(path: Path) -> str | None:
    """None when ``path`` verifies against its sidecar (a sidecar is required here), else why not."""
    if not path.is_file():
        return "absent"
    if _read_sidecar(path) is None:
        return "no sidecar"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verify_checkpoint(path)
    except CheckpointError as e:
        return e.reason
    return None


def sync_from_mirror(ckpt_dir: PathLike, mirror_dir: PathLike | None) -> dict[str, str]:
    """Before resuming: for ``last.pt`` and ``best.pt``, make the local copy the newest *valid* one of the
    two places. A mirror copy that is newer (higher step, then later write) than the local one, or valid
    where the local one is missing or corrupt, is copied into ``ckpt_dir``; a valid local one that the
    mirror lacks (or holds older/corrupt) is mirrored. Returns ``{name: what happened}``.

    A fresh Colab VM has an empty local disk: this is what brings the Drive copies back.

    Example:
        >>> import tempfile
        >>> local, drive = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 9}, drive / "last.pt")
        >>> sync_from_mirror(local, drive)["last.pt"]
        'copied from the mirror (step 9)'
        >>> load_checkpoint(local / "last.pt")["step"]
        9
    """
    out: dict[str, str] = {}
    if mirror_dir is None:
        return out
    ckpt_dir, mirror_dir = Path(ckpt_dir), Path(mirror_dir)
    if ckpt_dir.resolve() == mirror_dir.resolve():
        return out
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cleanup_temp_files(ckpt_dir)
    if mirror_dir.is_dir():
        cleanup_temp_files(mirror_dir)
    for name in (LAST, BEST):
        local, remote = ckpt_dir / name, mirror_dir / name
        bad_local, bad_remote = _valid(local), _valid(remote)
        if bad_remote is None and (bad_local is not None or _newness(remote) > _newness(local)):
            try:
                drive.retry(_copy_checked, remote, local, what="checkpoint")
                out[name] = f"copied from the mirror (step {_newness(remote)[0]})"
                continue
            except (CheckpointError, OSError) as e:   # the bytes read from Drive are not what its sidecar says
                why = e.reason if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
                warnings.warn(f"{remote}: {why}; resuming from the next valid checkpoint instead",
                              drive.DriveWarning, stacklevel=2)
                # the Drive copy may be fine (a read error): it is neither used nor overwritten
                out[name] = (f"kept the local copy (step {_newness(local)[0]}); the mirror's copy was refused"
                             if bad_local is None else f"none valid (local: {bad_local}; mirror: refused)")
                continue
        if bad_local is None and (bad_remote is not None or _newness(local) > _newness(remote)):
            ok = mirror_checkpoint(local, mirror_dir)
            out[name] = "mirrored the local copy" if ok is not None else "local copy kept (mirroring failed)"
        elif bad_local is None:
            out[name] = "up to date"
        else:
            out[name] = f"none valid (local: {bad_local}; mirror: {bad_remote})"
    return out


#: Colab's longest session: what the Drive estimate assumes when ``train.time_limit_min`` is not set.
SESSION_HOURS = 12.0
#: Bytes of one ``metrics.jsonl`` record, at most (a train record with every GAN term; validation records).
HISTORY_RECORD_BYTES = 512


class RunMirror:
    """What of a run goes to its folder on Google Drive, and when (checkpoints written on local disk and
    mirrored, ``run.checkpoint_local_dir``; ``mirror_dir`` None: a no-op, the run folder is the only place).

    Every file replaced or deleted through Colab's Drive mount goes to Drive's trash and counts against the
    quota, and a training checkpoint is large (0.51 GB for the default recipe), so copies are rationed: at
    most one checkpoint copy every ``every_min`` minutes (``run.mirror_every_min``) -- ``best.pt`` when it
    improved since its last copy, else ``last.pt`` (both are resume points: the newest valid one wins) --
    and, when a session ends (done, time limit, Ctrl-C, an error), every checkpoint not yet copied. The
    small ``files`` (the history ``metrics.jsonl``) are written beside the local checkpoints and copied to
    the run folder with each checkpoint copy. A failing Drive is retried, then warned about once
    (:class:`mattingkit.drive.Trouble`); what was not copied stays pending for the next occasion.

    Example:
        >>> import tempfile
        >>> run, local = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
        >>> m = RunMirror(run, local, run / "checkpoints", every_min=0, files=("metrics.jsonl",))
        >>> _ = m.local("metrics.jsonl").write_text('{"step": 1}\\n')
        >>> _ = save_checkpoint({"step": 1}, local / LAST)
        >>> [p.relative_to(run).as_posix() for p in m.saved([LAST])]
        ['checkpoints/last.pt', 'checkpoints/last.pt.json', 'metrics.jsonl']
    """

    def __init__(self, run_dir: PathLike, ckpt_dir: PathLike, mirror_dir: PathLike | None, every_min: float = 120.0,
                 files: Iterable[str] = (), clock=time.monotonic) -> None:
        self.run_dir, self.ckpt_dir = Path(run_dir), Path(ckpt_dir)
        self.mirror_dir = Path(mirror_dir) if mirror_dir is not None else None
        self.every_s = 60.0 * float(every_min or 0)
        self.files = tuple(files)
        self.clock = clock
        self.pending: set[str] = set()
        self.copies = 0               # checkpoint copies made (each one replaced file in Drive's trash)
        self.trouble = drive.Trouble()
        self.stopped = False          # the run lock was taken over: the run folder is another process's now
        self._last = clock()          # the session starts the clock: the first copy is due after every_min

    @classmethod
    def for_config(cls, cfg: Any, run_dir: PathLike, ckpt_dir: PathLike, mirror_dir: PathLike | None,
                   files: Iterable[str] = ()) -> "RunMirror":
        """The mirror of a run with ``cfg.run.mirror_every_min``."""
        return cls(run_dir, ckpt_dir, mirror_dir, getattr(cfg.run, "mirror_every_min", 120.0), files)

    @property
    def local_dir(self) -> Path | None:
        """The local checkpoint folder when mirroring (the run lock lives there), else None."""
        return self.ckpt_dir if self.mirror_dir is not None else None

    def local(self, name: str) -> Path:
        """Where the run's file ``name`` is written: beside the local checkpoints when mirroring, else in
        the run folder."""
        return (self.ckpt_dir if self.mirror_dir is not None else self.run_dir) / name

    def restore(self) -> dict[str, str]:
        """Before resuming: the newest valid checkpoints of both places (:func:`sync_from_mirror`), and the
        run folder's ``files`` copied to local disk where it lacks them (a fresh VM). Returns what was done
        (nothing for what was up to date or absent in both places)."""
        if self.mirror_dir is None:
            return {}
        out = {k: v for k, v in sync_from_mirror(self.ckpt_dir, self.mirror_dir).items()
               if v != "up to date" and "local: absent; mirror: absent" not in v}
        for name in self.files:
            src, dst = self.run_dir / name, self.local(name)
            try:
                if not dst.exists() and src.exists():
                    drive.copy_file(src, dst)
                    out[name] = "copied from the run folder"
            except OSError as e:
                self.trouble.failed(name, e, f"copying {src} to {dst}", "it starts empty here")
        return out

    def saved(self, names: Iterable[str]) -> list[Path]:
        """After the local save of the checkpoints ``names``: copy what is due. Returns the files written."""
        if self.mirror_dir is None or self.stopped:
            return []
        self.pending.update(names)
        if self.every_s > 0 and self.clock() - self._last < self.every_s:
            return []
        if self.every_s > 0:
            due = [BEST] if BEST in self.pending else [LAST] if LAST in self.pending else []
        else:
            due = list(self.pending)
        return self._copy(due)

    def flush(self, lock: Any = None) -> list[Path]:
        """The end of a session: copy every checkpoint not yet copied, and the files -- unless ``lock`` was
        taken over by another process (``lock.lost``): then its run folder is not ours to write."""
        self.stopped = self.stopped or getattr(lock, "lost", False)
        if self.mirror_dir is None or self.stopped:
            return []
        return self._copy(list(self.pending), final=True)

    def _copy(self, names: Iterable[str], final: bool = False) -> list[Path]:
        out: list[Path] = []
        ok = True
        for name in (BEST, LAST):
            if name not in names:
                continue
            try:
                target = mirror_checkpoint(self.ckpt_dir / name, self.mirror_dir, required=True)
            except (CheckpointWriteError, CheckpointError) as e:
                ok = False
                self.trouble.failed("checkpoint", e, f"copying {name} to {self.mirror_dir}",
                                    f"the local {self.ckpt_dir / name} is complete; the copy is made at the next "
                                    "occasion")
                continue
            self.pending.discard(name)
            self.copies += 1
            out += [target, sidecar_path(target)]
            self.trouble.ok("checkpoint", f"copying checkpoints to {self.mirror_dir}")
        for name in self.files:
            src = self.local(name)
            if not src.exists():
                continue
            try:
                out.append(drive.copy_file(src, self.run_dir / name))
                self.trouble.ok(name, f"copying {name} to {self.run_dir}")
            except OSError as e:
                ok = False
                self.trouble.failed(name, e, f"copying {src} to {self.run_dir / name}",
                                    "it is complete locally; the copy is made at the next occasion")
        if ok and not final:
            self._last = self.clock()
        return out


# --------------------------------------------------------------------------------------------
# Which checkpoint: where a run's are written, which one a resume continues, which one predicts
# (every such choice is made here; the trainer, the pipeline and the CLI ask)
# --------------------------------------------------------------------------------------------
def newest_valid(candidates: Iterable[PathLike]) -> Path | None:
    """The newest checkpoint among ``candidates`` that verifies (step, then write time; the first listed
    wins a tie), or None. Used to pick between ``last.pt`` / ``best.pt`` in the local and mirror folders.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 4}, d / "last.pt"); _ = save_checkpoint({"step": 6}, d / "best.pt")
        >>> newest_valid([d / "last.pt", d / "best.pt"]).name
        'best.pt'
    """
    best: tuple[tuple[int, int], int, Path] | None = None
    for i, c in enumerate(Path(c) for c in candidates):
        if _valid(c) is not None:
            continue
        key = (_newness(c), -i)
        if best is None or key > (best[0], best[1]):
            best = (key[0], key[1], c)
    return None if best is None else best[2]


def checkpoint_dirs(cfg: Any, run_dir: PathLike) -> tuple[Path, Path | None]:
    """``(where checkpoints are written, where they are mirrored or None)`` from ``run.checkpoint_local_dir``:
    ``null`` -> the run folder's ``checkpoints``, no mirror; a path -> ``PATH/<run folder name>`` on local
    disk, mirrored to the run folder's ``checkpoints``; ``auto`` -> that under the temp folder when the run
    folder is on a mounted Google Drive (each replaced Drive file goes to Drive's trash and counts against
    the quota; the FUSE mount may refuse fsync), else no mirror.

    Example:
        >>> from mattingkit.config import load_config
        >>> checkpoint_dirs(load_config("demo", ["run.checkpoint_local_dir=/local"]), Path("/drive/runs/x"))
        (PosixPath('/local/x'), PosixPath('/drive/runs/x/checkpoints'))
        >>> checkpoint_dirs(load_config("demo", ["run.checkpoint_local_dir=null"]), Path("/r/x"))
        (PosixPath('/r/x/checkpoints'), None)
    """
    run_dir = Path(run_dir)
    home = run_dir / "checkpoints"
    spec = getattr(cfg.run, "checkpoint_local_dir", "auto")
    if spec in (None, "", "null", "none"):
        return home, None
    if spec == "auto":
        if not env.on_drive(run_dir):
            return home, None
        import tempfile

        spec = Path(tempfile.gettempdir()) / "mattingkit_checkpoints"
    local = Path(str(spec)).expanduser() / run_dir.name
    if local.resolve() == home.resolve():
        return home, None
    return local, home


def pick_resume_state(ckpt_dir: PathLike) -> dict | None:
    """The full training state to continue from: the newer (by the step its sidecar records) of ``last.pt``
    and ``best.pt`` (best.pt is newer when a validation improved after the last ``ckpt_every`` step, or when
    the run died before its first last.pt; last.pt wins a tie), the other one as the fallback when the first
    is unreadable; None without either.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 4}, d / LAST); _ = save_checkpoint({"step": 6}, d / BEST)
        >>> state = pick_resume_state(d)
        >>> state["step"], state["_resume_note"]
        (6, 'best.pt is newer')
    """
    last, best = Path(ckpt_dir) / LAST, Path(ckpt_dir) / BEST
    if not (last.exists() or best.exists()):
        return None

    def step(p: Path) -> int:
        return _newness(p)[0] if p.exists() else -1

    first, other = (last, best) if step(last) >= step(best) else (best, last)
    state = load_checkpoint(first, fallback=other if other.exists() else None)
    if first == best and "_fallback_from" not in state:
        state["_resume_note"] = f"{last.name} is absent" if not last.exists() else f"{best.name} is newer"
    return state


def find_checkpoint(run_dir: PathLike, which: str = "best") -> Path:
    """The checkpoint a run predicts with: ``"best"`` (``last.pt`` when no validation produced a best),
    ``"last"``, or a path (relative to the run folder or absolute); a missing file is an
    :class:`~mattingkit.errors.InputNotFoundError`.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 2}, run / "checkpoints" / LAST)
        >>> find_checkpoint(run, "best").name
        no best.pt (no validation yet): using last.pt
        'last.pt'
    """
    from .errors import InputNotFoundError

    ck = Path(run_dir) / "checkpoints"
    if which in ("best", "last"):
        p = ck / f"{which}.pt"
        if which == "best" and not p.exists() and (ck / LAST).exists():
            print("no best.pt (no validation yet): using last.pt")
            p = ck / LAST
    else:
        p = Path(which)
        if not p.is_absolute():
            p = Path(run_dir) / p
    if not p.exists():
        raise InputNotFoundError(f"{p}: checkpoint not found (train first: notebook 03, or set `checkpoint`)")
    return p


# --------------------------------------------------------------------------------------------
# How big a checkpoint is, and how much room a run needs
# --------------------------------------------------------------------------------------------
def estimate_checkpoint_bytes(cfg: Any) -> int:
    """About how many bytes one training checkpoint of ``cfg`` takes: float32 weights + two Adam moments
    for the generator (and the discriminator when ``train.use_gan``), plus buffers. The models are built on
    PyTorch's ``meta`` device: nothing is allocated or downloaded.

    Example:
        >>> from mattingkit.config import load_config
        >>> round(estimate_checkpoint_bytes(load_config("default")) / 1e9, 2)   # ResNet-50 G + PatchGAN D
        0.51
    """
    import copy as _copy

    from .models import build_discriminator, build_model

    mcfg = _copy.deepcopy(cfg.model)
    mcfg.pretrained, mcfg.weights_path = False, None
    modules = []
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        modules.append(build_model(mcfg))
        if getattr(cfg.train, "use_gan", False):
            modules.append(build_discriminator(mcfg))
    total = 0
    for m in modules:
        params = sum(p.numel() * p.element_size() for p in m.parameters())
        buffers = sum(b.numel() * b.element_size() for b in m.buffers())
        total += 3 * params + buffers        # weights + Adam exp_avg + exp_avg_sq
    return int(total + 256 * 1024)           # schedules, RNG states, config, zip headers


def drive_space_needed(cfg: Any, run_dir: PathLike | None = None, hours: float | None = None) -> dict[str, Any]:
    """What a run writes to Google Drive, the trash included (notebook 03 prints it before training).

    ``steady_bytes`` = ``best.pt`` + ``last.pt`` (2 x a checkpoint); ``peak_bytes`` adds the temp copy
    that exists while one is being replaced. Each replaced copy goes to Drive's trash and counts against
    the quota until it is emptied, so what counts is everything written: ``run_bytes`` over a session of
    ``hours`` (``train.time_limit_min``, else Colab's longest session, :data:`SESSION_HOURS`). With the
    checkpoints mirrored (:class:`RunMirror`) that is one copy per ``run.mirror_every_min`` (capped by the
    run's checkpoints) plus ``best.pt`` and ``last.pt`` at the end, and the history with each copy;
    written straight to the run folder (``run.checkpoint_local_dir=null``), every checkpoint and every
    improved ``best.pt``. ``free_bytes``: free where ``run_dir`` is (None when not given or unknown).

    Example:
        >>> from mattingkit.config import load_config
        >>> need = drive_space_needed(load_config("default"))
        >>> need["steady_bytes"] == 2 * need["checkpoint_bytes"], need["message"][:31]
        (True, 'Checkpoints on Drive need about')
        >>> need["copies"], round(need["run_bytes"] / 1e9, 1)     # 12 h, one copy per 120 min + 2 at the end
        (8, 4.1)
    """
    one = estimate_checkpoint_bytes(cfg)
    t, r = cfg.train, cfg.run
    hours = float(hours if hours is not None else (t.time_limit_min / 60 if t.time_limit_min else SESSION_HOURS))
    steps = int(getattr(t, "steps", 0) or 0)
    saves = steps // t.ckpt_every if t.ckpt_every else 0
    validations = steps // t.val_every if t.val_every else 0
    history = (steps // max(1, t.log_every) + validations) * HISTORY_RECORD_BYTES
    every = float(getattr(r, "mirror_every_min", 0) or 0)
    mirrored = getattr(r, "checkpoint_local_dir", "auto") not in (None, "", "null", "none")
    if mirrored and every > 0:
        copies = min(int(hours * 60 // every), saves) + 2
        how = (f"one every run.mirror_every_min={every:g} min -- best.pt when it improved, else last.pt -- "
               "and both at the end")
    else:
        copies = saves + validations + 1
        how = (f"every checkpoint (train.ckpt_every={t.ckpt_every}) and every improved best.pt, over the whole run "
               "(set run.mirror_every_min to ration the copies)" if mirrored else
               f"every checkpoint (train.ckpt_every={t.ckpt_every}) and every improved best.pt, over the whole run "
               "(run.checkpoint_local_dir=null; auto writes them locally and rations the Drive copies)")
    run_bytes = copies * one + (copies - 1) * history
    free = drive.free_bytes(run_dir) if run_dir is not None else None
    msg = (f"Checkpoints on Drive need about {_gb(2 * one)} (best.pt + last.pt, {_gb(one)} each) and "
           f"{_gb(3 * one)} while one is being replaced. A {hours:g} h session writes at most {_gb(run_bytes)} "
           f"there, trash included: {copies} checkpoint copies ({how}) + the history. Each replaced copy goes "
           "to Drive's trash, which counts against the 15 GB free quota until you empty it."
           + (f" Free there now: {_gb(free)}." if free is not None else ""))
    return {"checkpoint_bytes": one, "steady_bytes": 2 * one, "peak_bytes": 3 * one, "copies": copies,
            "hours": hours, "run_bytes": run_bytes, "free_bytes": free, "message": msg}


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


def load_checkpoint(path: PathLike, fallback: PathLike | None = None, map_location: Any = HOST,
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


def load_generator(path: PathLike, device: str | torch.device = HOST):
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

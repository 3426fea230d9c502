"""Tolerant file operations for a run folder on a mounted Google Drive: bounded retries, then one warning.

Colab's Drive mount is a FUSE file system that hiccups: for a few seconds (sometimes minutes) reads and
writes fail with ``EIO``, ``ENOTCONN`` ("Transport endpoint is not connected"), ``ETIMEDOUT`` or
``ESTALE``, and ``fsync`` may be refused outright. A training run must not stop for that. The rules,
written once here and used by the run lock (:mod:`mattingkit.runlock`), the checkpoint mirror
(:mod:`mattingkit.checkpoint`) and the history (:class:`mattingkit.run.HistoryLog`):

- :func:`retry` repeats an operation that failed with a *transient* ``OSError`` (:func:`is_transient`)
  after :data:`RETRY_DELAYS_S` (a few seconds in all), then lets the last error through;
- :class:`Trouble` turns what still fails into a single :class:`DriveWarning` per kind of operation
  (not one per checkpoint), and says once when it works again;
- :func:`fsync_tolerant` is the one fsync of the kit: a mount that refuses fsync is tolerated (the
  checkpoint sidecar's SHA-256 catches a file that did not arrive whole); lost data (``ENOSPC``,
  ``EDQUOT``, ``EIO``) raises;
- :func:`copy_file` copies a small file (the history, the lock) atomically: temp name, then rename;
  :func:`write_text` writes one (the run folder's ``config.yaml``, ``metrics.json``, ``DONE``), both retried.

Example:
    >>> import errno, tempfile
    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
    ...     return "ok"
    >>> retry(flaky, delays=(0, 0, 0)), len(calls)
    ('ok', 3)
"""
from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
PathLike = str | os.PathLike

#: errno values of a mount that is briefly unavailable (worth trying again).
TRANSIENT_ERRNOS = frozenset(getattr(errno, n) for n in (
    "EIO", "ENOTCONN", "ETIMEDOUT", "ESTALE", "EAGAIN", "EBUSY", "EINTR", "ECONNRESET", "ECONNABORTED",
    "EHOSTDOWN", "ENETDOWN", "ENETUNREACH", "ECOMM", "EREMOTEIO") if hasattr(errno, n))
#: errno values that mean the bytes did not reach the disk: never tolerated from fsync.
NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
DATA_LOST = NO_SPACE | {errno.EIO}
#: waits between attempts: 4 attempts, 7.5 s of waiting at most, then the caller degrades.
RETRY_DELAYS_S: tuple[float, ...] = (0.5, 2.0, 5.0)


class DriveWarning(UserWarning):
    """A file operation on the run folder (Google Drive) kept failing; the run goes on without it."""


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` is an error a flaky mount gives for a while (worth a retry): an ``OSError``, or one of
    the kit's errors wrapping it (``err.errno``), with an errno of :data:`TRANSIENT_ERRNOS`.

    Example:
        >>> is_transient(OSError(errno.ENOTCONN, "x")), is_transient(OSError(errno.ENOSPC, "x"))
        (True, False)
    """
    return not isinstance(err, FileNotFoundError) and getattr(err, "errno", None) in TRANSIENT_ERRNOS


def retry(fn: Callable[..., T], *args, delays: Iterable[float] | None = None, **kwargs) -> T:
    """``fn(*args, **kwargs)``, tried again after each of ``delays`` (default :data:`RETRY_DELAYS_S`)
    while it fails with a transient error (:func:`is_transient`); any other error, or the last transient
    one, is raised.
    """
    waits = list(RETRY_DELAYS_S if delays is None else delays)
    for wait in [*waits, None]:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if wait is None or not is_transient(e):
                raise
        time.sleep(wait)
    raise AssertionError("unreachable")


class Trouble:
    """One warning per kind of failing operation until it works again (then one line saying so).

    Example:
        >>> t = Trouble()
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     t.failed("mirror", OSError(5, "Input/output error"), "copying last.pt to Drive")
        ...     t.failed("mirror", OSError(5, "Input/output error"), "copying last.pt to Drive")
        >>> len(w), t.failing
        (1, {'mirror'})
        >>> t.ok("mirror", "Drive mirror")
        Drive mirror works again
    """

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.count = 0  # failures seen (after retries)

    def failed(self, key: str, err: BaseException, doing: str, then: str = "the run goes on") -> None:
        self.count += 1
        if key in self.failing:
            return
        self.failing.add(key)
        warnings.warn(f"{doing} failed ({type(err).__name__}: {err}); {then}. (Google Drive hiccup? This is "
                      "said once; it is retried at the next occasion.)", DriveWarning, stacklevel=3)

    def ok(self, key: str, what: str) -> None:
        if key in self.failing:
            self.failing.discard(key)
            print(f"{what} works again", flush=True)


def fsync_tolerant(fd: int) -> None:
    """fsync, tolerating a mount that refuses it (Google Drive's FUSE mount, some network file systems);
    out of space and I/O errors (the data did not arrive) raise.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     fsync_tolerant(f.fileno())
    """
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in DATA_LOST:
            raise


def fsync_dir(folder: PathLike) -> None:
    """Make renames in ``folder`` durable where the platform allows it (not on Windows, nor on some FUSE
    mounts: every error is ignored)."""
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


def free_bytes(folder: PathLike) -> int | None:
    """Free bytes where ``folder`` is (its nearest existing parent); None when nothing answers. On a
    mounted Google Drive this is what is left of the account's quota.

    Example:
        >>> free_bytes("/") > 0
        True
    """
    p = Path(folder)
    for q in [p, *p.parents]:
        try:
            return shutil.disk_usage(q).free
        except OSError:
            continue
    return None


def write_file(path: PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temp name beside it (tolerant fsync, rename); one attempt."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fsync_tolerant(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text(path: PathLike, text: str) -> Path:
    """Write a small text file of a run folder (``config.yaml``, ``metrics.json``, a summary) atomically,
    retrying transient errors: :func:`write_file` (temp name, tolerant fsync, rename; the usual mode
    0666 & ~umask) under :func:`retry`. What still fails raises.

    Example:
        >>> import tempfile
        >>> write_text(Path(tempfile.mkdtemp()) / "run" / "metrics.json", "{}").read_text()
        '{}'
    """
    path = Path(path)

    def once() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, text.encode("utf-8"), mode=0o666)

    retry(once)
    return path


def copy_file(src: PathLike, dst: PathLike) -> Path:
    """Copy a small file (the history, the lock) to ``dst`` atomically, retrying transient errors.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "a.jsonl").write_text('{"step": 1}\\n')
        >>> copy_file(d / "a.jsonl", d / "sub" / "b.jsonl").read_text()
        '{"step": 1}\\n'
    """
    src, dst = Path(src), Path(dst)

    def once() -> None:
        data = src.read_bytes()
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_file(dst, data)

    retry(once)
    return dst


__all__ = ["DATA_LOST", "DriveWarning", "NO_SPACE", "RETRY_DELAYS_S", "TRANSIENT_ERRNOS", "Trouble", "copy_file",
           "free_bytes", "fsync_dir", "fsync_tolerant", "is_transient", "retry", "write_file", "write_text"]

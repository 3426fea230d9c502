"""One process per run folder: a lock file beside the run's checkpoints, copied to the run folder on Drive.

Two trainers on one run folder (a notebook run twice, a sweep beside a manual run with the same name)
would both append to ``metrics.jsonl`` and race on the checkpoints. :class:`RunLock` prevents that: it
creates ``run.lock`` with ``O_EXCL`` (only one creator wins) holding the holder's host, pid, start time
and a heartbeat that the trainer refreshes after each local checkpoint (:meth:`RunLock.heartbeat`).
A lock is *stale*, and is taken over, when

- its host is this host and its pid is gone (or is another process now: the pid's start time differs), or
- its host is another host (a restarted Colab VM writing to the same Drive folder) and its heartbeat is
  older than ``stale_s`` (``run.lock_stale_s``, default 900 s);

otherwise a second holder gets a :class:`~mattingkit.errors.RunStateError` (exit code 6) naming the
holder and saying that ``--force`` takes the lock over. ``force=True`` takes it over regardless; the old
holder's next :meth:`~RunLock.heartbeat` then raises, so it stops instead of racing. The lock is released
when the ``with`` block ends (or :meth:`~RunLock.release`); a released lock leaves no file behind.

When the checkpoints are written on local disk and mirrored to a run folder on Google Drive
(``run.checkpoint_local_dir``), the lock lives beside the local checkpoints (``mirror_dir=`` the Drive run
folder) and a copy of it is kept in the Drive run folder, where another VM sees it. The Drive copy is
tolerant (:mod:`mattingkit.drive`): transient errors are retried, and one that persists gives a single
:class:`~mattingkit.drive.DriveWarning` and is tried again at the next heartbeat. Only a lock file that is
*read* and names another holder means "taken over"; an unreadable or missing Drive copy is written again.

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> with RunLock(run) as lock:
    ...     read_lock(run)["pid"] == os.getpid()
    ...     lock.heartbeat()
    True
    >>> read_lock(run) is None
    True
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import drive
from .errors import RunStateError

LOCK_NAME = "run.lock"
DEFAULT_STALE_S = 900.0
#: A lock file that cannot be parsed (a writer died between create and write) is stale after this long.
UNREADABLE_GRACE_S = 10.0

_HELD_HERE: set[str] = set()  # tokens of the locks this process holds (a second RunLock here is refused)


def _pid_start(pid: int) -> str | None:
    """The process start time (clock ticks since boot, ``/proc/PID/stat`` field 22) where Linux has it:
    tells a live pid from a later process that reused the number."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown"


def _read(folder: Path) -> dict[str, Any] | None:
    """Like :func:`read_lock`, but a read that fails raises its ``OSError`` (a Drive hiccup is not "unlocked")."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def read_lock(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The lock's contents (``host``, ``pid``, ``started``, ``heartbeat`` epoch seconds, ``token``), ``None``
    when the folder is not locked, ``{}`` when the file is there but unreadable."""
    try:
        return _read(Path(run_dir))
    except OSError:
        return {}


class RunLock:
    """The lock of one run folder; a context manager (see the module docstring).

    ``run_dir``: where the lock file is (beside the checkpoints); ``mirror_dir``: a folder that gets a copy
    (the run folder on Google Drive when the checkpoints are written locally), or None.
    ``stale_s``: a lock from another host whose heartbeat is older than this is stale.
    ``force``: take the lock over even when its holder looks alive.
    After :meth:`acquire`, ``note`` says whether a stale or live lock was taken over (empty otherwise);
    ``lost`` is True once a heartbeat found the lock taken over.
    """

    def __init__(self, run_dir: str | os.PathLike, stale_s: float = DEFAULT_STALE_S, force: bool = False,
                 host: str | None = None, mirror_dir: str | os.PathLike | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.mirror_dir = Path(mirror_dir) if mirror_dir is not None else None
        if self.mirror_dir is not None and self.mirror_dir.resolve() == self.run_dir.resolve():
            self.mirror_dir = None
        self.stale_s = float(stale_s)
        self.force = bool(force)
        self.host = host or socket.gethostname()
        self.pid = os.getpid()
        self.token = uuid.uuid4().hex
        self.started: float | None = None
        self.note = ""
        self.lost = False
        self.trouble = drive.Trouble()

    @classmethod
    def for_config(cls, run_dir: str | os.PathLike, cfg: Any, force: bool = False,
                   local_dir: str | os.PathLike | None = None) -> "RunLock":
        """A lock with ``cfg.run.lock_stale_s`` as the stale time; with ``local_dir`` (where the checkpoints
        are written when they are mirrored to ``run_dir``) the lock is there and ``run_dir`` has a copy."""
        stale = getattr(cfg.run, "lock_stale_s", DEFAULT_STALE_S)
        if local_dir is None:
            return cls(run_dir, stale_s=stale, force=force)
        return cls(local_dir, stale_s=stale, force=force, mirror_dir=run_dir)

    # ----------------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self.token in _HELD_HERE

    def _payload(self, heartbeat: float) -> bytes:
        return json.dumps({
            "host": self.host, "pid": self.pid, "pid_start": _pid_start(self.pid), "started": self.started,
            "heartbeat": heartbeat, "token": self.token,
            "started_utc": _when(self.started), "heartbeat_utc": _when(heartbeat),
        }, indent=1).encode("utf-8")

    def _create(self, folder: Path) -> bool:
        """Create the lock file in ``folder`` exclusively; False when it already exists."""
        try:
            fd = os.open(folder / LOCK_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        if self.started is None:
            self.started = time.time()
        try:
            os.write(fd, self._payload(self.started))
            drive.fsync_tolerant(fd)
        except OSError:
            os.close(fd)
            (folder / LOCK_NAME).unlink(missing_ok=True)  # not half a lock: a retry starts clean
            raise
        os.close(fd)
        return True

    def stale_reason(self, info: dict[str, Any] | None, now: float | None = None,
                     path: Path | None = None) -> str | None:
        """Why the lock ``info`` (read from ``path``, default the lock file) is stale (``None``: its holder
        looks alive)."""
        now = time.time() if now is None else now
        if info is None:
            return "no lock"
        if not info or "pid" not in info:
            try:
                age = now - (path or self.path).stat().st_mtime
            except FileNotFoundError:
                return "no lock"
            return f"an unreadable lock file {age:.0f} s old" if age > UNREADABLE_GRACE_S else None
        if info.get("token") in _HELD_HERE:
            return None  # another RunLock of this very process
        try:
            pid, beat = int(info["pid"]), float(info.get("heartbeat") or 0)
        except (TypeError, ValueError):
            return "a lock file with a malformed pid or heartbeat"
        if info.get("host") == self.host:
            if not _pid_alive(pid):
                return f"its process {pid} on this host is gone"
            start = info.get("pid_start")
            if start is not None and _pid_start(pid) not in (None, start):
                return f"pid {pid} on this host is now another process"
            if pid == self.pid:
                return "it was left behind by this process"
            return None
        if now - beat > self.stale_s:
            return f"its heartbeat is {now - beat:.0f} s old (> run.lock_stale_s={self.stale_s:g})"
        return None

    def _describe(self, info: dict[str, Any], now: float) -> str:
        if not info:
            return "an unreadable lock file (being written?)"
        beat = info.get("heartbeat")
        try:
            ago = f"{now - float(beat):.0f} s ago"
        except (TypeError, ValueError):
            ago = "never"
        return (f"host {info.get('host')!r} pid {info.get('pid')} (started {_when(info.get('started'))}, "
                f"last heartbeat {ago})")

    def _remove_if(self, folder: Path, info: dict[str, Any]) -> None:
        """Remove ``folder``'s lock file if it still is ``info`` (rename first, so two takers cannot both win)."""
        path = folder / LOCK_NAME
        aside = path.with_name(f".{LOCK_NAME}.{self.token}.old")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            moved = {}
        if info and moved.get("token") != info.get("token"):
            # We moved a lock someone else created in between: put it back unless yet another appeared.
            try:
                os.link(aside, path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def _acquire_in(self, folder: Path) -> None:
        """Take ``folder``'s lock file or raise :class:`RunStateError` naming its holder (``OSError`` when the
        folder cannot be read or written)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        for _ in range(5):
            if self._create(folder):
                return
            info = _read(folder)
            if info is None:
                continue  # released in between: try again
            now = time.time()
            reason = self.stale_reason(info, now, path)
            if reason is None and not self.force:
                raise RunStateError(
                    f"run folder {self.mirror_dir or self.run_dir} is in use by {self._describe(info, now)}; a "
                    f"second process here would mix its metrics and checkpoints. Wait for it to finish, use "
                    f"another run name, or pass --force (force=True) to take the lock over if that process is "
                    f"gone (lock file: {path})")
            self.note = (f"took over a stale lock ({reason}) from {self._describe(info, now)}" if reason
                         else f"took over the lock of {self._describe(info, now)} (--force)")
            self._remove_if(folder, info)
        raise RunStateError(f"could not take the lock {path}: other processes keep taking it")

    def acquire(self) -> "RunLock":
        """Take the lock (and its copy in ``mirror_dir``) or raise :class:`RunStateError` naming its holder;
        returns ``self``. A mirror folder that stays unreachable gives one warning (the lock holds locally)."""
        drive.retry(self._acquire_in, self.run_dir)
        _HELD_HERE.add(self.token)
        if self.mirror_dir is not None:
            try:
                drive.retry(self._acquire_in, self.mirror_dir)
            except RunStateError:
                self.release()
                raise
            except OSError as e:
                self.trouble.failed("mirror", e, f"taking the run lock's copy in {self.mirror_dir}",
                                    "the lock holds on this machine; its copy is written at the next heartbeat")
        return self

    def _taken_over(self, info: dict[str, Any] | None) -> RunStateError:
        self.lost = True
        who = self._describe(info, time.time()) if info else "nobody (the lock file is gone)"
        return RunStateError(f"the lock of {self.mirror_dir or self.run_dir} was taken over by {who}; stopping so "
                             "that two processes do not write one run folder")

    def _write(self, folder: Path, payload: bytes) -> None:
        drive.write_file(folder / LOCK_NAME, payload)

    def heartbeat(self) -> None:
        """Refresh the heartbeat here and in the mirror folder (the trainer calls this after each local
        checkpoint). Raises :class:`RunStateError` when a lock file that names another holder is read (the
        lock was taken over: stop, do not race it); a Drive copy that cannot be read or written is retried,
        then warned about once, never taken for a take-over."""
        try:
            info = drive.retry(_read, self.run_dir)
        except OSError as e:
            self.trouble.failed("lock", e, f"reading the run lock {self.path}")
            return
        if not info or info.get("token") != self.token:
            raise self._taken_over(info)
        payload = self._payload(time.time())
        try:
            drive.retry(self._write, self.run_dir, payload)
            self.trouble.ok("lock", f"the run lock {self.path}")
        except OSError as e:
            self.trouble.failed("lock", e, f"refreshing the run lock {self.path}")
        if self.mirror_dir is not None:
            self._beat_mirror(payload)

    def _beat_mirror(self, payload: bytes) -> None:
        folder = self.mirror_dir
        try:
            info = drive.retry(_read, folder)
            if info and "pid" in info and info.get("token") != self.token:
                raise self._taken_over(info)
            folder.mkdir(parents=True, exist_ok=True)
            drive.retry(self._write, folder, payload)   # also when missing or torn: this process holds the lock
        except OSError as e:
            self.trouble.failed("mirror", e, f"refreshing the run lock's copy {folder / LOCK_NAME}")
            return
        self.trouble.ok("mirror", f"the run lock's copy {folder / LOCK_NAME}")

    def release(self) -> None:
        """Remove the lock (and its copy) if this object still holds it (a lock taken over by ``--force`` is
        left alone; a Drive copy that cannot be removed now goes stale)."""
        _HELD_HERE.discard(self.token)
        for folder in (self.run_dir, self.mirror_dir):
            if folder is None:
                continue
            try:
                info = drive.retry(_read, folder)
                if info and info.get("token") == self.token:
                    drive.retry(self._remove_if, folder, info)
            except OSError as e:
                self.trouble.failed("release", e, f"removing the run lock {folder / LOCK_NAME}",
                                    "it goes stale (see run.lock_stale_s)")

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["DEFAULT_STALE_S", "LOCK_NAME", "RunLock", "read_lock"]

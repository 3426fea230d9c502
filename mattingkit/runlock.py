"""One process per run folder: a lock file beside the run's files (on Drive when the run folder is there).

Two trainers on one run folder (a notebook run twice, a sweep beside a manual run with the same name)
would both append to ``metrics.jsonl`` and race on the checkpoints. :class:`RunLock` prevents that: it
creates ``RUN_DIR/run.lock`` with ``O_EXCL`` (only one creator wins) holding the holder's host, pid,
start time and a heartbeat that the trainer refreshes at each checkpoint interval
(:meth:`RunLock.heartbeat`). A lock is *stale*, and is taken over, when

- its host is this host and its pid is gone (or is another process now: the pid's start time differs), or
- its host is another host (a restarted Colab VM writing to the same Drive folder) and its heartbeat is
  older than ``stale_s`` (``run.lock_stale_s``, default 900 s);

otherwise a second holder gets a :class:`~mattingkit.errors.RunStateError` (exit code 6) naming the
holder and saying that ``--force`` takes the lock over. ``force=True`` takes it over regardless; the old
holder's next :meth:`~RunLock.heartbeat` then raises, so it stops instead of racing. The lock is released
when the ``with`` block ends (or :meth:`~RunLock.release`); a released lock leaves no file behind.

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


def read_lock(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The lock's contents (``host``, ``pid``, ``started``, ``heartbeat`` epoch seconds, ``token``), ``None``
    when the folder is not locked, ``{}`` when the file is there but unreadable."""
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


class RunLock:
    """The lock of one run folder; a context manager (see the module docstring).

    ``stale_s``: a lock from another host whose heartbeat is older than this is stale.
    ``force``: take the lock over even when its holder looks alive.
    After :meth:`acquire`, ``note`` says whether a stale or live lock was taken over (empty otherwise).
    """

    def __init__(self, run_dir: str | os.PathLike, stale_s: float = DEFAULT_STALE_S, force: bool = False,
                 host: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.stale_s = float(stale_s)
        self.force = bool(force)
        self.host = host or socket.gethostname()
        self.pid = os.getpid()
        self.token = uuid.uuid4().hex
        self.started: float | None = None
        self.note = ""

    @classmethod
    def for_config(cls, run_dir: str | os.PathLike, cfg: Any, force: bool = False) -> "RunLock":
        """A lock with ``cfg.run.lock_stale_s`` as the stale time."""
        return cls(run_dir, stale_s=getattr(cfg.run, "lock_stale_s", DEFAULT_STALE_S), force=force)

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

    def _create(self) -> bool:
        """Create the lock file exclusively; False when it already exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        self.started = time.time()
        try:
            os.write(fd, self._payload(self.started))
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def stale_reason(self, info: dict[str, Any] | None, now: float | None = None) -> str | None:
        """Why the lock ``info`` is stale (``None``: its holder looks alive)."""
        now = time.time() if now is None else now
        if info is None:
            return "no lock"
        if not info or "pid" not in info:
            try:
                age = now - self.path.stat().st_mtime
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

    def _remove_if(self, info: dict[str, Any]) -> None:
        """Remove the lock file if it still is ``info`` (rename first, so two takers cannot both win)."""
        aside = self.path.with_name(f".{LOCK_NAME}.{self.token}.old")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            moved = {}
        if info and moved.get("token") != info.get("token"):
            # We moved a lock someone else created in between: put it back unless yet another appeared.
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunStateError` naming its holder; returns ``self``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                _HELD_HERE.add(self.token)
                return self
            info = read_lock(self.path.parent)
            if info is None:
                continue  # released in between: try again
            now = time.time()
            reason = self.stale_reason(info, now)
            if reason is None and not self.force:
                raise RunStateError(
                    f"run folder {self.run_dir} is in use by {self._describe(info, now)}; a second process "
                    f"here would mix its metrics and checkpoints. Wait for it to finish, use another run name, "
                    f"or pass --force (force=True) to take the lock over if that process is gone "
                    f"(lock file: {self.path})")
            self.note = (f"took over a stale lock ({reason}) from {self._describe(info, now)}" if reason
                         else f"took over the lock of {self._describe(info, now)} (--force)")
            self._remove_if(info)
        raise RunStateError(f"could not take the lock {self.path}: other processes keep taking it")

    def heartbeat(self) -> None:
        """Refresh the heartbeat (the trainer calls this at each checkpoint interval). Raises
        :class:`RunStateError` when another process has taken the lock over (stop, do not race it)."""
        info = read_lock(self.run_dir)
        if not info or info.get("token") != self.token:
            who = self._describe(info, time.time()) if info else "nobody (the lock file is gone)"
            raise RunStateError(f"the lock of {self.run_dir} was taken over by {who}; stopping so that two "
                                "processes do not write one run folder")
        tmp = self.path.with_name(f".{LOCK_NAME}.{self.token}.tmp")
        tmp.write_bytes(self._payload(time.time()))
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Remove the lock if this object still holds it (a lock taken over by ``--force`` is left alone)."""
        _HELD_HERE.discard(self.token)
        info = read_lock(self.run_dir)
        if info and info.get("token") == self.token:
            self._remove_if(info)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["DEFAULT_STALE_S", "LOCK_NAME", "RunLock", "read_lock"]

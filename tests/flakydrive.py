"""A stand-in Google Drive: a real folder whose file operations fail like Colab's FUSE mount on a bad day.

``FlakyDrive(root)`` patches the Python entry points the kit's file I/O goes through (``open``/``io.open``,
``os.open``, ``os.replace``, ``os.rename``, ``os.link``, ``os.stat``, ``os.unlink``, ``os.mkdir``) so that
an operation on a path under ``root`` raises ``OSError(ENOTCONN)`` ("Transport endpoint is not connected",
what a dropped Drive mount gives):

- ``fail_next(n)``: the next ``n`` operations under ``root`` fail, then it works again; ``fail_next(n, only=f)``
  counts only the operations on a path ``p`` with ``f(p)`` (e.g. the temp files of atomic writes);
- ``down_when = callable``: every operation fails while ``callable()`` is true (a mount that is gone for a
  while, e.g. ``lambda: 2 <= trainer.step < 6``), ``down()`` / ``up()`` for a plain switch;
- ``corrupt_reads(path, after=k)``: from the ``k+1``-th opening of ``path`` for reading on, the bytes read
  have one byte flipped (a read that returns the wrong data); ``clean_reads()`` ends that.

Everything else (paths outside ``root``) is untouched. ``failures`` counts the operations that failed.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path


class _Flipped(io.BufferedReader):
    """A binary reader whose byte at ``at`` (file offset) reads flipped."""

    def __init__(self, raw, at: int):
        super().__init__(raw)
        self._at = at

    def read(self, n=-1):
        pos = self.tell()
        data = super().read(n)
        if pos <= self._at < pos + len(data):
            b = bytearray(data)
            b[self._at - pos] ^= 0xFF
            data = bytes(b)
        return data

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)


class FlakyDrive:
    def __init__(self, root: Path, monkeypatch):
        Path(root).mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        self.to_fail = 0
        self.only = None
        self.down_when = None
        self.is_down = False
        self.failures = 0
        self._corrupt: dict[Path, list[int]] = {}   # path -> [openings allowed clean, openings seen]
        real = {"open": builtins.open, "os_open": os.open, "replace": os.replace, "rename": os.rename,
                "link": os.link, "stat": os.stat, "unlink": os.unlink, "mkdir": os.mkdir}
        self._real = real

        def guarded(name, *path_args):
            fn = real[name]

            def wrapper(*args, **kwargs):
                for i in path_args:
                    if i < len(args):
                        self._check(args[i])
                return fn(*args, **kwargs)
            return wrapper

        def fake_open(file, mode="r", *args, **kwargs):
            self._check(file)
            f = real["open"](file, mode, *args, **kwargs)
            p = self._under(file)
            if p is not None and p in self._corrupt and "r" in mode and "b" in mode and "+" not in mode:
                allowed, seen = self._corrupt[p]
                self._corrupt[p][1] += 1
                if seen >= allowed:
                    size = os.fstat(f.fileno()).st_size
                    f.close()
                    return _Flipped(io.FileIO(file, "rb"), size // 2)
            return f

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", guarded("os_open", 0))
        monkeypatch.setattr(os, "replace", guarded("replace", 0, 1))
        monkeypatch.setattr(os, "rename", guarded("rename", 0, 1))
        monkeypatch.setattr(os, "link", guarded("link", 0, 1))
        monkeypatch.setattr(os, "stat", guarded("stat", 0))
        monkeypatch.setattr(os, "unlink", guarded("unlink", 0))
        monkeypatch.setattr(os, "mkdir", guarded("mkdir", 0))

    # ---------------------------------------------------------------------------------------
    def fail_next(self, n: int, only=None) -> None:
        self.to_fail, self.only = n, only

    def down(self) -> None:
        self.is_down = True

    def up(self) -> None:
        self.is_down = False
        self.down_when = None

    def corrupt_reads(self, path: Path, after: int = 0) -> None:
        self._corrupt[self._under(path)] = [after, 0]

    def clean_reads(self) -> None:
        self._corrupt.clear()

    # ---------------------------------------------------------------------------------------
    def _under(self, path) -> Path | None:
        if isinstance(path, int):
            return None
        try:
            a = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return None
        a = os.path.join(os.path.realpath(os.path.dirname(a)), os.path.basename(a))  # lstat only: not patched
        root = str(self.root)
        return Path(a) if a == root or a.startswith(root + os.sep) else None

    def _check(self, path) -> None:
        p = self._under(path)
        if p is None:
            return
        failing = self.is_down or (self.down_when is not None and self.down_when())
        if not failing and self.to_fail > 0 and (self.only is None or self.only(p)):
            self.to_fail -= 1
            failing = True
        if failing:
            self.failures += 1
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected", str(path))

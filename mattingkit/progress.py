"""Progress bars that behave in notebooks, terminals and headless (papermill) runs.

- In a live notebook: tqdm's widget bar.
- In a terminal: tqdm's text bar.
- Headless (papermill, CI, no TTY): a few plain-text lines (about ``lines`` of them per loop), never
  a frozen widget or thousands of carriage-return updates in the output notebook.

Example:
    >>> from mattingkit.progress import progress
    >>> total = 0
    >>> import os
    >>> for i in progress(range(3), desc="demo", headless=True, file=open(os.devnull, "w")):
    ...     total += i
    >>> total
    3
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from . import env

T = TypeVar("T")


class PlainProgress:
    """A minimal tqdm-compatible progress reporter printing at most ~``lines`` lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 lines: int = 10, file=None, unit: str = "it", **_: object):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.file = file if file is not None else sys.stdout
        self.lines = max(1, lines)
        self.start = time.monotonic()
        self.postfix = ""
        self._next_report = self._step()
        self._closed = False
        self._last_print = -1

    def _step(self) -> int:
        if self.total:
            return max(1, -(-self.total // self.lines))
        return 1 << 62  # unknown total: print only at close

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("PlainProgress without an iterable is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True):
        self.desc = desc or ""

    def _print(self):
        if self._last_print == self.n:
            return
        self._last_print = self.n
        elapsed = time.monotonic() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        frac = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" {100 * self.n / self.total:3.0f}%" if self.total else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc + ': ' if self.desc else ''}{frac}{pct} {elapsed:.1f}s {rate:.2f}{self.unit}/s{post}",
              file=self.file, flush=True)

    def update(self, n: int = 1):
        self.n += n
        if self.n >= self._next_report:
            self._print()
            while self._next_report <= self.n:
                self._next_report += self._step()

    def refresh(self):
        pass

    def write(self, s: str):
        print(s, file=self.file, flush=True)

    def close(self):
        if not self._closed:
            self._closed = True
            self._print()


def progress(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "",
             headless: bool | None = None, lines: int = 10, **kwargs) -> Iterable[T]:
    """A progress bar suited to where the code runs (see module docstring). tqdm keyword args pass through."""
    if headless is None:
        headless = env.is_headless()
    if headless:
        return PlainProgress(iterable, total=total, desc=desc, lines=lines, **kwargs)  # type: ignore[return-value]
    if env.in_notebook():
        from tqdm.notebook import tqdm as tqdm_nb

        return tqdm_nb(iterable, total=total, desc=desc, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, **kwargs)


class LineRelay:
    """A write-only text stream that prints each complete line with ``prefix`` (``file``: sys.stdout at the
    time of writing). ``mattingkit run`` gives it to papermill as ``stdout_file``: what a headless notebook
    prints (training progress included) reaches the console as it comes.

    Example:
        >>> relay = LineRelay("[demo] ")
        >>> _ = relay.write("train demo: step 2/4"); _ = relay.write(" ...\\nhalf")
        [demo] train demo: step 2/4 ...
    """

    def __init__(self, prefix: str = "", file=None):
        self.prefix, self.file, self._part = prefix, file, ""

    def write(self, text: str) -> int:
        *lines, self._part = (self._part + text).split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1]  # (a carriage-return progress update: its last state)
            if line.strip():
                print(self.prefix + line, file=self.file or sys.stdout, flush=True)
        return len(text)

    def flush(self) -> None:
        pass

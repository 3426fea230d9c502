"""The kit's own errors: one base class, one exit code per kind, mapped once in the CLI.

Every error the kit raises on purpose (a wrong config value, a bad input file, a checkpoint that fails its
check, no GPU where a recipe needs one) derives from :class:`MattingKitError`. Its message is written for the
user: one line (or a few) that names the file or key and says what to do. ``mattingkit`` prints it without a
traceback and exits with the class's ``exit_code``; anything else is a bug and keeps its traceback.
A message that names an option writes it as the Python keyword followed by its flag,
``force=True (CLI: --force)``; on the command line the CLI prints the flag alone (``--force``).

Exit codes (documented in ``mattingkit --help``): 0 ok, 1 the work ran and found problems (failed notebook,
invalid submission, an evaluation problem, a doctor PROBLEM), 2 usage or config error, 3 download / network, 4 input data,
5 device (no GPU, unsupported GPU, out of memory), 6 checkpoint or run folder (corrupt, locked, disk full).

Example:
    >>> from mattingkit.errors import MattingKitError, DeviceError
    >>> issubclass(DeviceError, MattingKitError), DeviceError.exit_code
    (True, 5)
"""
from __future__ import annotations


class MattingKitError(Exception):
    """Base of the kit's own errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(MattingKitError, ValueError):
    """Wrong arguments or configuration values."""

    exit_code = 2


class InputDataError(MattingKitError, ValueError):
    """An input file or folder is missing or wrong (the message names it)."""

    exit_code = 4


class InputNotFoundError(InputDataError, FileNotFoundError):
    """A file or folder the user named (argument or config value) does not exist."""


class DeviceError(MattingKitError, RuntimeError):
    """The device cannot run this: no GPU where one is required, a GPU the torch build has no kernels for,
    or out of memory (the message says what to change)."""

    exit_code = 5


class RunStateError(MattingKitError, RuntimeError):
    """A checkpoint, lock or run folder is in a state the kit refuses to work from."""

    exit_code = 6


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the work was left in a state to continue from; the message says what was kept and how
    to continue (``mattingkit`` prints it as its one line and exits 130). A ``KeyboardInterrupt``, so no
    ``except Exception`` swallows it.

    Example:
        >>> issubclass(Interrupted, KeyboardInterrupt), Interrupted.exit_code
        (True, 130)
    """

    exit_code = 130


__all__ = ["DeviceError", "InputDataError", "InputNotFoundError", "Interrupted", "MattingKitError", "RunStateError",
           "UsageError"]

"""Where am I running? Colab, Kaggle or a local machine — and where do data and runs live there.

Detection uses only environment variables and well-known paths, so it also works inside papermill
child kernels (which inherit the parent's environment).

- Colab: ``COLAB_RELEASE_TAG`` (or ``COLAB_GPU``) set, or ``/var/colab/hostname`` exists.
- Kaggle: ``KAGGLE_KERNEL_RUN_TYPE`` set, or ``/kaggle/working`` exists.
- Otherwise local.

Roots (each overridable by ``MATTINGKIT_DATA_ROOT`` / ``MATTINGKIT_RUNS_ROOT`` or the config):

=========  ==================================  ==============================================
platform   data root                           runs root
=========  ==================================  ==============================================
local      ``<repo>/data`` (or ``./data``)     ``<repo>/runs`` (or ``./runs``)
colab      ``/content/data``                   ``/content/drive/MyDrive/mattingkit/runs`` when
                                               Drive is mounted, else ``/content/runs``
kaggle     ``/kaggle/working/data`` (written);  ``/kaggle/working/runs``
           read-only sources in ``/kaggle/input``
=========  ==================================  ==============================================

Example:
    >>> from mattingkit import env
    >>> env.detect_platform({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    'kaggle'
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping

COLAB_DRIVE = Path("/content/drive/MyDrive")
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _exists(path: str | Path) -> bool:
    try:
        return Path(path).exists()
    except OSError:
        return False


def detect_platform(environ: Mapping[str, str] | None = None, check_paths: bool = True) -> str:
    """Return ``"colab"``, ``"kaggle"`` or ``"local"``.

    Example:
        >>> detect_platform({"COLAB_RELEASE_TAG": "release-colab_20260101"}, check_paths=False)
        'colab'
    """
    e = _env(environ)
    if e.get("COLAB_RELEASE_TAG") or "COLAB_GPU" in e:
        return "colab"
    if e.get("KAGGLE_KERNEL_RUN_TYPE") or e.get("KAGGLE_URL_BASE"):
        return "kaggle"
    if check_paths:
        if _exists("/var/colab/hostname"):
            return "colab"
        if _exists(KAGGLE_WORKING):
            return "kaggle"
    return "local"


def repo_root() -> Path | None:
    """The checkout this package runs from (a folder with pyproject.toml above the package), if any."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else None


def drive_mounted() -> bool:
    return _exists(COLAB_DRIVE)


def on_drive(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies on a mounted Google Drive (:data:`COLAB_DRIVE`): the one rule behind the
    checkpoint mirror's ``auto`` and doctor's roots.

    Example:
        >>> on_drive("/tmp")   # (no Drive mounted here)
        False
    """
    if not drive_mounted():
        return False
    try:
        Path(path).resolve().relative_to(Path(COLAB_DRIVE).resolve())
        return True
    except (ValueError, OSError):
        return False


def _platform_root(kind: str, environ: Mapping[str, str] | None, platform: str | None) -> Path:
    """The one platform switch for ``kind`` (``data`` | ``runs``): ``MATTINGKIT_<KIND>_ROOT``, else the
    platform's folder (the table in the module docstring)."""
    given = _env(environ).get(f"MATTINGKIT_{kind.upper()}_ROOT")
    if given:
        return Path(given)
    platform = platform or detect_platform(environ)
    if platform == "kaggle":
        return KAGGLE_WORKING / kind
    if platform == "colab":
        on_drive = kind == "runs" and drive_mounted()   # checkpoints survive a disconnect
        return COLAB_DRIVE / "mattingkit" / kind if on_drive else Path("/content") / kind
    return (repo_root() or Path.cwd()) / kind


def data_root(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Folder where datasets are downloaded / generated (writable).

    Example:
        >>> str(data_root({"MATTINGKIT_DATA_ROOT": "/tmp/d"}))
        '/tmp/d'
    """
    return _platform_root("data", environ, platform)


def runs_root(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Folder where run folders (checkpoints, logs, predictions) are written.

    On Colab with Google Drive mounted this is on Drive, so checkpoints survive a disconnect.

    Example:
        >>> str(runs_root({"MATTINGKIT_RUNS_ROOT": "/tmp/r"}))
        '/tmp/r'
    """
    return _platform_root("runs", environ, platform)


def data_root_for(cfg=None, environ: Mapping[str, str] | None = None) -> Path:
    """The data root of a config: ``cfg.run.data_root`` when set, else :func:`data_root` (the platform's).
    The one rule every module uses (datasets, downloads, demo data, run folders).

    Example:
        >>> from mattingkit.config import load_config
        >>> str(data_root_for(load_config("demo", ["run.data_root=/d"])))
        '/d'
    """
    given = getattr(getattr(cfg, "run", None), "data_root", None)
    return Path(given) if given else data_root(environ)


def runs_root_for(cfg=None, explicit: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """The runs root: ``explicit`` (a caller's argument) when given, else ``cfg.run.runs_root``, else
    :func:`runs_root` (the platform's: Drive on Colab, ``/kaggle/working/runs`` on Kaggle).

    Example:
        >>> from mattingkit.config import load_config
        >>> cfg = load_config("demo", ["run.runs_root=/r"])
        >>> str(runs_root_for(cfg)), str(runs_root_for(cfg, "/x"))
        ('/r', '/x')
    """
    if explicit:
        return Path(explicit)
    given = getattr(getattr(cfg, "run", None), "runs_root", None)
    return Path(given) if given else runs_root(environ)


#: The files that name the repository the hosted notebooks install from (README badges and install line,
#: the notebooks' set-up cells); :func:`set_repository` rewrites them together.
REPOSITORY_FILES = ("README.md", "notebooks/0*.ipynb")
_INSTALL_LINE = re.compile(r'git\+https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?"')


def set_repository(slug: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Point the README's Colab badges and install line and the five notebooks' ``REPO_URL`` at the GitHub
    repository ``slug`` (``OWNER/NAME``, your copy) in the checkout ``root``; returns the files changed.
    The one command behind ``mattingkit set-repo`` (notebooks stay without outputs: only text changes).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "README.md").write_text('pip install "mattingkit @ git+https://github.com/OWNER/mattingkit"')
        >>> [p.name for p in set_repository("me/mk", d)], (d / "README.md").read_text()
        (['README.md'], 'pip install "mattingkit @ git+https://github.com/me/mk"')
    """
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", slug):
        from .errors import UsageError

        raise UsageError(f"give the repository as OWNER/NAME (as in github.com/OWNER/NAME), got {slug!r}")
    root = Path(root) if root is not None else repo_root()
    readme = (root / "README.md") if root is not None else None
    if readme is None or not readme.is_file():
        from .errors import InputNotFoundError

        raise InputNotFoundError(f"{root}: not a mattingkit checkout (no README.md): run this in your clone")
    found = _INSTALL_LINE.search(readme.read_text(encoding="utf-8"))
    old = found.group(1) if found else "OWNER/mattingkit"
    changed = []
    for pattern in REPOSITORY_FILES:
        for path in sorted(root.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            new = re.sub(rf"(github\.com/|colab\.research\.google\.com/github/){re.escape(old)}\b",
                         lambda m: m.group(1) + slug, text)
            if new != text:
                path.write_text(new, encoding="utf-8")
                changed.append(path)
    return changed


def input_roots(environ: Mapping[str, str] | None = None, platform: str | None = None) -> list[Path]:
    """Read-only places where datasets may already be (Kaggle's attached inputs), searched before downloading."""
    platform = platform or detect_platform(environ)
    if platform == "kaggle" and _exists(KAGGLE_INPUT):
        return sorted(p for p in KAGGLE_INPUT.iterdir() if p.is_dir())
    return []


def in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (including a papermill child kernel)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:
        return False
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def is_headless(environ: Mapping[str, str] | None = None) -> bool:
    """True when nobody watches a live widget: papermill runs, CI, plain scripts without a TTY.

    ``MATTINGKIT_HEADLESS=1/0`` forces the answer. Papermill sets ``PAPERMILL_EXECUTION=1`` only if
    asked, so our runner exports ``MATTINGKIT_HEADLESS=1`` for the kernels it starts.
    """
    e = _env(environ)
    forced = e.get("MATTINGKIT_HEADLESS")
    if forced is not None and forced != "":
        return forced.lower() not in ("0", "false", "no")
    if e.get("PAPERMILL_EXECUTION") or e.get("CI"):
        return True
    if in_notebook():
        return False
    try:
        return not sys.stderr.isatty()
    except Exception:
        return True


#: Colab secrets copied into the environment by :func:`setup_notebook` (papermill kernels inherit it).
KAGGLE_SECRET_NAMES = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")


def setup_notebook(mount_drive: bool = True, environ: Mapping[str, str] | None = None) -> str:
    """What every notebook's set-up cell does once the kit is importable; returns the platform.

    Nothing locally or in headless runs (``MATTINGKIT_HEADLESS=1``, which ``mattingkit run`` sets for the
    kernels it starts). On Colab: mount Google Drive (``mount_drive``: run folders and
    checkpoints survive a disconnect) and copy the Kaggle token from Colab *Secrets*
    (:data:`KAGGLE_SECRET_NAMES`) into environment variables, without printing it. On Kaggle: work in
    ``/kaggle/working``. Prints one line: the platform and whether the run is headless.

    Example:
        >>> setup_notebook(environ={"MATTINGKIT_HEADLESS": "1"})
        platform: local | headless: True
        'local'
    """
    platform = detect_platform(environ)
    headless = _env(environ).get("MATTINGKIT_HEADLESS") == "1"   # set by ``mattingkit run`` for its kernels
    if not headless and platform == "colab":
        if mount_drive:
            from google.colab import drive

            drive.mount(str(COLAB_DRIVE.parent))
        from google.colab import userdata

        for name in KAGGLE_SECRET_NAMES:
            try:
                value = userdata.get(name)
            except Exception:  # noqa: BLE001 - secret not defined or access not granted
                value = None
            if value:
                os.environ[name] = value.strip()
    elif not headless and platform == "kaggle":
        os.chdir(str(KAGGLE_WORKING))
    print(f"platform: {platform} | headless: {headless}")
    return platform


def summary(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small dict describing the environment (safe to log: no secrets)."""
    p = detect_platform(environ)
    return {
        "platform": p,
        "data_root": str(data_root(environ, p)),
        "runs_root": str(runs_root(environ, p)),
        "headless": str(is_headless(environ)),
        "python": sys.version.split()[0],
    }

"""Downloads that are not Kaggle's: the alphamatting.com training set (:func:`download_alphamatting`),
fetched with :func:`fetch_url`, and the error every download raises (:class:`DownloadError`, shared with
:mod:`mattingkit.kaggle`, which holds everything that talks to Kaggle: credentials, competition and
dataset downloads, submissions, kernels).

Errors
------
Failures raise :class:`DownloadError` with ``kind`` in ``offline`` (no network: use
``mattingkit demo-data`` / ``make demo``), ``not_found``, ``forbidden``, ``rate_limited``, ``server``,
``bad_archive`` (an unsafe or unusable archive, rejected) and ``other`` (Kaggle adds its own kinds,
see :mod:`mattingkit.kaggle`).

Files
-----
A download goes to a hidden ``.partial-NAME`` folder first and is renamed into place only when
complete; archives are extracted with :func:`mattingkit.data.archive.extract_archive` (safe, atomic,
idempotent).

Example:
    >>> alphamatting_url(environ={})
    'http://www.alphamatting.com/datasets/zip/'
    >>> default_dest("alphamatting", "/tmp/am", None)
    PosixPath('/tmp/am')
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping

from .. import env
from ..errors import MattingKitError
from .archive import ArchiveError, extract_archive

log = logging.getLogger(__name__)

DEMO_HINT = ("Without network access, use the embedded demo data instead: `mattingkit demo-data` "
             "(or `make demo` for the whole pipeline) and `--config demo`.")

PathLike = str | os.PathLike


class DownloadError(MattingKitError, RuntimeError):
    """A download failed; ``kind`` says why (see module docstring). The message holds no secret."""

    exit_code = 3

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def drop_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is empty (a download's leftover partial or archive folder)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def default_dest(name: str, dest: PathLike | None, environ: Mapping[str, str] | None) -> Path:
    """Where a download named ``name`` goes: ``dest``, else ``<data_root>/<name>``."""
    return Path(dest) if dest is not None else env.data_root(environ) / name


# --------------------------------------------------------------------------------------------
# alphamatting.com: the low-res training set (27 photos, GT alphas, Trimap1 + Trimap2)
# --------------------------------------------------------------------------------------------
ALPHAMATTING_URL = "http://www.alphamatting.com/datasets/zip/"
#: Environment variable overriding :data:`ALPHAMATTING_URL` (a mirror, or a local test server).
ALPHAMATTING_URL_ENV = "MATTINGKIT_ALPHAMATTING_URL"
ALPHAMATTING_ZIPS = {"image": "input_training_lowres.zip", "alpha": "gt_training_lowres.zip",
                     "trimap": "trimap_training_lowres.zip"}
TRIMAP_SETS = ("Trimap1", "Trimap2")
ALPHAMATTING_MARKER = "alphamatting.json"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def alphamatting_url(base_url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The base URL the alphamatting zips are fetched from: ``base_url``, else ``$MATTINGKIT_ALPHAMATTING_URL``,
    else :data:`ALPHAMATTING_URL`; always ending in ``/``.

    Example:
        >>> alphamatting_url(environ={})
        'http://www.alphamatting.com/datasets/zip/'
        >>> alphamatting_url(environ={"MATTINGKIT_ALPHAMATTING_URL": "http://127.0.0.1:8000/zip"})
        'http://127.0.0.1:8000/zip/'
    """
    url = base_url or _env(environ).get(ALPHAMATTING_URL_ENV) or ALPHAMATTING_URL
    return url if url.endswith("/") else url + "/"


def normalize_trimap_set(name: str) -> str:
    """``"trimap2"`` / ``"Trimap2"`` / ``"2"`` -> ``"Trimap2"``; anything else is a :class:`UsageError`.

    Example:
        >>> normalize_trimap_set("trimap2"), normalize_trimap_set(1)
        ('Trimap2', 'Trimap1')
    """
    from ..errors import UsageError

    key = str(name).strip().lower().removeprefix("trimap")
    for s in TRIMAP_SETS:
        if key == s.lower().removeprefix("trimap"):
            return s
    raise UsageError(f"data.trimap_set must be one of {', '.join(TRIMAP_SETS)}, got {name!r}")


def _web_offline_message(url: str, detail: str = "", folder: Path | None = None) -> str:
    said = f" ({detail.strip()[:200]})" if detail and detail.strip() else ""
    where = str(folder) if folder is not None else "the downloads folder"
    return (f"Cannot reach {url} to download the alphamatting.com training set: no network connection{said}. "
            f"Download the three zips ({', '.join(ALPHAMATTING_ZIPS.values())}) by hand into {where} "
            f"and run this again, or set {ALPHAMATTING_URL_ENV} to a reachable mirror. {DEMO_HINT}")


def fetch_url(url: str, target: PathLike, *, timeout: float = 60.0, what: str = "file") -> Path:
    """Download ``url`` to ``target`` safely: into ``<target's folder>/.partial-NAME`` first, renamed to
    ``target`` only when complete (length checked against Content-Length). No retries: a network failure
    raises :class:`DownloadError` kind ``offline`` at once; HTTP errors map to ``not_found`` / ``server`` /
    ``forbidden`` / ``other``. Returns ``target``.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); src = os.path.join(d, "a.bin"); _ = open(src, "wb").write(b"abc")
        >>> fetch_url("file://" + src, os.path.join(d, "got", "a.bin")).read_bytes()
        b'abc'
    """
    import socket
    import urllib.error
    import urllib.request

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".partial-{target.name}"
    partial.mkdir(exist_ok=True)
    tmp = partial / target.name
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "mattingkit"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as f:
            expected = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            n = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                n += len(chunk)
        if expected and expected.isdigit() and int(expected) != n:
            raise DownloadError("server", f"{url}: the download stopped after {n} of {expected} bytes; run it again.")
    except DownloadError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except urllib.error.HTTPError as e:
        shutil.rmtree(partial, ignore_errors=True)
        code = int(e.code)
        kind = ("not_found" if code == 404 else "forbidden" if code in (401, 403) else
                "rate_limited" if code == 429 else "server" if 500 <= code < 600 else "other")
        raise DownloadError(kind, f"Downloading {what} from {url} failed with HTTP {code} ({e.reason}).") from None
    except (urllib.error.URLError, OSError, socket.timeout, ValueError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        reason = getattr(e, "reason", e)
        if isinstance(e, ValueError) and not isinstance(e, OSError):
            raise DownloadError("other", f"Cannot download {what}: bad URL {url!r} ({e}).") from None
        raise DownloadError("offline", _web_offline_message(url, type(reason).__name__ + f": {reason}",
                                                            target.parent)) from None
    os.replace(tmp, target)
    shutil.rmtree(partial, ignore_errors=True)
    return target


def _image_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")}


def _richest_folder(root: Path) -> Path | None:
    """The folder under ``root`` (itself included) holding the most image files."""
    best, count = None, 0
    for d in [root] + sorted(p for p in root.rglob("*") if p.is_dir()):
        n = len(_image_files(d))
        if n > count:
            best, count = d, n
    return best


def _trimap_set_folders(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        for s in TRIMAP_SETS:
            if d.name.lower() == s.lower() and s not in out and _image_files(d):
                out[s] = d
    return out


def _select_trimap_set(dest: Path, trimap_set: str) -> None:
    """Make ``dest/trimap/`` a copy of ``dest/trimap_sets/<trimap_set>/`` (atomic swap)."""
    src = dest / "trimap_sets" / trimap_set
    if not src.is_dir():
        raise DownloadError("other", f"{dest}: no {trimap_set} trimaps (trimap_sets/{trimap_set} is missing); "
                            f"download again with force=True.")
    tmp = dest / ".trimap.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dest / ".trimap.old"
    shutil.rmtree(old, ignore_errors=True)
    if (dest / "trimap").exists():
        os.replace(dest / "trimap", old)
    os.replace(tmp, dest / "trimap")
    shutil.rmtree(old, ignore_errors=True)
    marker = json.loads((dest / ALPHAMATTING_MARKER).read_text(encoding="utf-8"))
    marker["trimap_set"] = trimap_set
    from ..io import atomic_write_text

    atomic_write_text(dest / ALPHAMATTING_MARKER, json.dumps(marker, indent=1))


def _alphamatting_complete(dest: Path) -> dict | None:
    try:
        marker = json.loads((dest / ALPHAMATTING_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    stems = marker.get("stems") or []
    for sub in ("image", "alpha", "trimap"):
        if not (dest / sub).is_dir() or set(_image_files(dest / sub)) != set(stems):
            return None
    return marker


def download_alphamatting(dest: PathLike | None = None, *, trimap_set: str = "Trimap1",  # noqa: PLR0915 - the download's steps in order (fetch, verify, extract, pair), each a few lines
                          base_url: str | None = None, archive_dir: PathLike | None = None,
                          keep_archives: bool = False, force: bool = False, timeout: float = 60.0,
                          environ: Mapping[str, str] | None = None, quiet: bool = True) -> Path:
    """The alphamatting.com low-res training set in the ``alphamatting`` layout; returns ``dest``.

    Fetches ``input_training_lowres.zip``, ``gt_training_lowres.zip`` and ``trimap_training_lowres.zip``
    from :func:`alphamatting_url` (``base_url`` / ``$MATTINGKIT_ALPHAMATTING_URL`` / alphamatting.com)
    with :func:`fetch_url` (temp name, then rename) into ``archive_dir`` (default ``downloads/`` beside
    ``dest``), extracts each with :func:`mattingkit.data.archive.extract_archive` (safe: a zip-slip or
    link member is rejected) and arranges ``dest`` (default ``<data_root>/alphamatting``) as::

        image/GT01.png ...  alpha/GT01.png ...  trimap/GT01.png ... (the chosen set)
        trimap_sets/Trimap1/  trimap_sets/Trimap2/  alphamatting.json (marker)

    so :func:`mattingkit.data.layouts.scan_alphamatting` reads it. ``trimap_set`` (``data.trimap_set``)
    picks which trimaps become ``trimap/``. A second call finds the marker and touches no network; one
    with the other ``trimap_set`` only swaps ``trimap/`` (no network). Zips already in ``archive_dir``
    are used without downloading; they are deleted after extraction unless ``keep_archives``.
    Raises :class:`DownloadError` (``offline`` at once when the site cannot be reached; ``bad_archive``
    for an unsafe or unusable zip, which is deleted).

    Example (needs network; tests use a local server):
        >>> # download_alphamatting("data/alphamatting", trimap_set="Trimap2")
    """
    trimap_set = normalize_trimap_set(trimap_set)
    dest = default_dest("alphamatting", dest, environ)
    if not force:
        marker = _alphamatting_complete(dest)
        if marker is not None:
            if marker.get("trimap_set") != trimap_set:
                _select_trimap_set(dest, trimap_set)
                log.info("alphamatting: switched %s/trimap to %s", dest, trimap_set)
            else:
                log.info("alphamatting already in %s (%s)", dest, trimap_set)
            return dest
    archive_dir = Path(archive_dir) if archive_dir is not None else dest.parent / "downloads"
    base = alphamatting_url(base_url, environ)
    zips: dict[str, Path] = {}
    for role, name in ALPHAMATTING_ZIPS.items():
        path = archive_dir / name
        if force or not path.is_file():
            if not quiet:
                print(f"downloading {base}{name}")
            fetch_url(base + name, path, timeout=timeout, what=f"alphamatting {name}")
        zips[role] = path
    staging = archive_dir / ".extract-alphamatting"
    try:
        found: dict[str, Path | None] = {}
        for role, path in zips.items():
            try:
                extract_archive(path, staging / role, overwrite=True)
            except ArchiveError as e:
                path.unlink(missing_ok=True)  # untrusted and unusable: fetch it again next time
                raise DownloadError("bad_archive", f"the alphamatting archive {path.name} was rejected and "
                                    f"deleted: {e}") from None
            found[role] = _richest_folder(staging / role) if role != "trimap" else None
        images = _image_files(found["image"]) if found["image"] else {}
        alphas = _image_files(found["alpha"]) if found["alpha"] else {}
        sets = _trimap_set_folders(staging / "trimap")
        if not images or not alphas:
            raise DownloadError("bad_archive", f"the alphamatting zips hold no images ({len(images)}) or no "
                                f"alphas ({len(alphas)}): is {base} the right URL?")
        if trimap_set not in sets:
            raise DownloadError("bad_archive", f"{ALPHAMATTING_ZIPS['trimap']} holds no {trimap_set}/ folder "
                                f"(found: {', '.join(sets) or 'none'}).")
        stems = sorted(set(images) & set(alphas))
        if not stems:
            raise DownloadError("bad_archive", "no image of the alphamatting zips has a GT alpha with the same name")
        tmp = dest.parent / f".{dest.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for sub, files in (("image", images), ("alpha", alphas)):
            (tmp / sub).mkdir(parents=True)
            for s in stems:
                os.replace(files[s], tmp / sub / files[s].name)
        for s, folder in sets.items():
            (tmp / "trimap_sets" / s).mkdir(parents=True)
            for stem, p in _image_files(folder).items():
                if stem in stems:
                    os.replace(p, tmp / "trimap_sets" / s / p.name)
        missing = sorted(set(stems) - set(_image_files(tmp / "trimap_sets" / trimap_set)))
        if missing:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DownloadError("bad_archive", f"{trimap_set} lacks trimaps for {', '.join(missing[:5])}")
        from ..io import atomic_write_text

        atomic_write_text(tmp / ALPHAMATTING_MARKER, json.dumps(
            {"source": base, "zips": list(ALPHAMATTING_ZIPS.values()), "trimap_set": trimap_set,
             "trimap_sets": sorted(sets), "stems": stems}, indent=1))
        shutil.copytree(tmp / "trimap_sets" / trimap_set, tmp / "trimap")
        if dest.exists():
            if not (dest / ALPHAMATTING_MARKER).is_file() and any(dest.iterdir()):
                shutil.rmtree(tmp, ignore_errors=True)
                raise DownloadError("other", f"{dest} exists and is not an alphamatting download: move it away "
                                    f"or choose another destination.")
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archives:
        for p in zips.values():
            p.unlink(missing_ok=True)
        drop_if_empty(archive_dir)
    log.info("alphamatting: %d photos in %s (trimaps: %s)", len(stems), dest, trimap_set)
    return dest

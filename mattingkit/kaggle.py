"""Everything that talks to Kaggle: credentials, competition and dataset downloads (the engine behind
notebook 01), submissions with their public score, and runs on Kaggle's GPUs from your own machine:
:func:`push_kernel` (a kernel folder: ``kernel-metadata.json`` + one driver notebook that installs the kit and
runs ``mattingkit run``), :func:`kernel_status`, :func:`pull_kernel` (the kernel's ``runs/RUN/`` into
``runs/RUN/`` here, with the producer rule) and :func:`publish_wheel` (the kit's wheel as a private dataset,
for internet-off kernels); docs/kaggle.md describes the kernel folder. (The alphamatting.com fetch and the
shared :class:`~mattingkit.data.download.DownloadError` live in :mod:`mattingkit.data.download`; the sweep
across kernels is :func:`mattingkit.runner.run_sweep_on_kaggle`.)

Credentials
-----------
The ``kaggle`` package (2.x) looks for credentials in this order; :func:`find_credentials` reports
*which* one it would use (never the value):

1. inside a Kaggle notebook: the notebook's own token file (``KAGGLE_API_V1_TOKEN``);
2. ``KAGGLE_API_TOKEN`` environment variable (the token itself, or a path to a file holding it);
3. ``~/.kaggle/access_token`` (or ``access_token.txt``);
4. legacy API key: ``KAGGLE_USERNAME`` + ``KAGGLE_KEY`` environment variables and/or ``kaggle.json``
   (in ``KAGGLE_CONFIG_DIR``, ``~/.kaggle`` or ``~/.config/kaggle``);
5. OAuth credentials from ``kaggle auth login`` (``~/.kaggle/credentials.json``).

Create a token at https://www.kaggle.com/settings/api.

**Colab**: store ``KAGGLE_API_TOKEN`` (or ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``) as Colab secrets
and call :func:`load_colab_secrets` in the notebook: it copies them into environment variables.
Colab secrets (``google.colab.userdata``) can only be read by the notebook the user is looking at;
they do **not** work inside papermill child kernels. A pipeline run (``mattingkit run``) inherits
the parent's environment variables, so load the secrets in the parent notebook first. Never pass a
credential as a papermill parameter (parameters are written into the output notebooks).

Secrecy
-------
No credential value is ever printed, logged, written to a file or put into an exception. Everything
the ``kaggle`` package prints is captured and passed through :func:`redact`; its loggers get a
redacting filter while we call it; every error message is redacted too.

Errors
------
Failures raise :class:`DownloadError` with ``kind`` in ``no_credentials``, ``auth`` (401),
``rules`` (403 on a competition: accept the rules at
``https://www.kaggle.com/competitions/<slug>/rules``), ``forbidden``, ``not_found``,
``rate_limited``, ``server``, ``offline`` (no network: use ``mattingkit demo-data`` / ``make demo``),
``bad_archive`` (an unsafe or unusable archive, rejected) and ``other``. :func:`explain_http_error` is the pure status -> message mapping.
Submissions raise :class:`SubmitError`, kernels and the wheel dataset :class:`KernelError` (``owner``,
``quota``, ``errored`` with the log's tail, ``running``, ``no_wheel``, ...); every message is one line.

Files
-----
Downloads go to ``<data_root>/downloads/.partial-NAME/`` first and are renamed into
``<data_root>/downloads/`` only when complete (a partial download stays in the hidden folder, where
the ``kaggle`` client can resume it). Archives are then extracted with
:func:`mattingkit.data.archive.extract_archive` (safe, atomic, idempotent) into the destination.
On Kaggle, an attached input under ``/kaggle/input`` that matches the slug is used in place.

Example:
    >>> info = find_credentials(environ={}, home="/nonexistent")
    >>> info.found, info.source
    (False, None)
    >>> redact("token=abc123XYZ", ["abc123XYZ"])
    'token=***'
    >>> kernel_metadata(KernelRun("quick", "demo", smoke=True, repo_url="https://x/mk.git"), "me")["id"]
    'me/mattingkit-quick'
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from . import env
from .config import DEFAULT_CONFIG
from .data.archive import ArchiveError, extract_archive, is_archive, read_marker
from .data.download import DEMO_HINT, DownloadError, default_dest, drop_if_empty

log = logging.getLogger(__name__)

RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api"
COLAB_HINT = ("On Colab: add KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY) as Colab secrets "
              "(the key icon), then run the notebook cell calling "
              "mattingkit.kaggle.load_colab_secrets(). Colab secrets cannot be read inside "
              "papermill child kernels: load them in the parent notebook before a pipeline run.")
_KAGGLE_LOGGERS = ("kaggle", "kaggle.api.kaggle_api_extended", "kagglesdk", "kagglesdk.kaggle_env",
                   "urllib3.connectionpool", "requests")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CredentialInfo:
    """Which credential source the kaggle client would use. Holds no secret value.

    ``kind``: ``access_token``, ``legacy_key``, ``oauth`` or None. ``note`` explains a source that
    was found but is unusable (e.g. a malformed kaggle.json).
    """

    source: str | None = None
    kind: str | None = None
    note: str = ""

    @property
    def found(self) -> bool:
        return self.source is not None

    def __str__(self) -> str:
        if not self.found:
            return "no Kaggle credentials found" + (f" ({self.note})" if self.note else "")
        return f"Kaggle credentials: {self.source}"


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _home(home: PathLike | None) -> Path:
    return Path(home) if home is not None else Path(os.path.expanduser("~"))


def _read_text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


def _is_path_value(value: str) -> bool:
    try:
        return len(value) < 4096 and Path(value).is_file()
    except (OSError, ValueError):
        return False


def _config_dir(e: Mapping[str, str], home: Path) -> Path:
    if e.get("KAGGLE_CONFIG_DIR"):
        return Path(e["KAGGLE_CONFIG_DIR"])
    d = home / ".kaggle"
    if sys.platform.startswith("linux") and not d.exists():
        return Path(e.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return d


def _kaggle_json(e: Mapping[str, str], home: Path) -> tuple[Path, dict | None, str]:
    path = _config_dir(e, home) / "kaggle.json"
    if not path.is_file():
        return path, None, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path, None, f"{path} is not valid JSON"
    if not isinstance(data, dict):
        return path, None, f"{path} is not a JSON object"
    return path, data, ""


def _in_kaggle_notebook(e: Mapping[str, str]) -> bool:
    return bool(e.get("KAGGLE_KERNEL_RUN_TYPE")) and bool(e.get("KAGGLE_DATA_PROXY_URL"))


def find_credentials(environ: Mapping[str, str] | None = None, home: PathLike | None = None
                     ) -> CredentialInfo:
    """Which Kaggle credential source is available (same order as the kaggle client), never the value.

    Example:
        >>> find_credentials({"KAGGLE_API_TOKEN": "x" * 32}, home="/nonexistent").source
        'KAGGLE_API_TOKEN environment variable'
        >>> find_credentials({"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k" * 32}, home="/nonexistent").kind
        'legacy_key'
    """
    e = _env(environ)
    h = _home(home)
    if _in_kaggle_notebook(e) and e.get("KAGGLE_API_V1_TOKEN") and _read_text(Path(e["KAGGLE_API_V1_TOKEN"])):
        return CredentialInfo("Kaggle notebook token (KAGGLE_API_V1_TOKEN)", "access_token")
    tok = e.get("KAGGLE_API_TOKEN")
    if tok:
        if _is_path_value(tok):
            if _read_text(Path(tok)):
                return CredentialInfo("KAGGLE_API_TOKEN environment variable (token file)", "access_token")
        else:
            return CredentialInfo("KAGGLE_API_TOKEN environment variable", "access_token")
    for name in ("access_token", "access_token.txt"):
        p = h / ".kaggle" / name
        if _read_text(p):
            return CredentialInfo(f"~/.kaggle/{name} file", "access_token")
    path, data, note = _kaggle_json(e, h)
    user = e.get("KAGGLE_USERNAME") or (data or {}).get("username")
    key = e.get("KAGGLE_KEY") or (data or {}).get("key")
    if user and key:
        from_env = [n for n in ("KAGGLE_USERNAME", "KAGGLE_KEY") if e.get(n)]
        if len(from_env) == 2:
            src = "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
        elif from_env:
            src = f"{path} + {from_env[0]} environment variable"
        else:
            src = f"kaggle.json ({path})"
        return CredentialInfo(src, "legacy_key")
    if data is not None and not note:
        note = f"{path} lacks 'username' and/or 'key'"
    elif (e.get("KAGGLE_USERNAME") or e.get("KAGGLE_KEY")) and not note:
        note = "KAGGLE_USERNAME and KAGGLE_KEY must both be set"
    creds = h / ".kaggle" / "credentials.json"
    if creds.is_file():
        return CredentialInfo("OAuth login (~/.kaggle/credentials.json)", "oauth", note)
    return CredentialInfo(None, None, note)


def secret_values(environ: Mapping[str, str] | None = None, home: PathLike | None = None) -> list[str]:
    """Every credential value we can find (for :func:`redact`), including the HTTP Basic-auth form."""
    e = _env(environ)
    h = _home(home)
    out: list[str] = []
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_KEY", "KAGGLE_IAP_TOKEN"):
        v = e.get(name)
        if v:
            out.append(v)
            if name == "KAGGLE_API_TOKEN" and _is_path_value(v):
                out.append(_read_text(Path(v)) or "")
    if e.get("KAGGLE_API_V1_TOKEN"):
        out.append(_read_text(Path(e["KAGGLE_API_V1_TOKEN"])) or "")
    for name in ("access_token", "access_token.txt"):
        out.append(_read_text(h / ".kaggle" / name) or "")
    _, data, _ = _kaggle_json(e, h)
    user = e.get("KAGGLE_USERNAME") or (data or {}).get("username") or ""
    keys = [e.get("KAGGLE_KEY") or "", str((data or {}).get("key") or "")]
    out += keys
    for k in keys:
        if user and k:
            out.append(base64.b64encode(f"{user}:{k}".encode()).decode())
    try:
        creds = json.loads((h / ".kaggle" / "credentials.json").read_text(encoding="utf-8"))
        if isinstance(creds, dict):
            out += [str(v) for k, v in creds.items() if "token" in k.lower() and v]
    except (OSError, ValueError):
        pass
    return sorted({s for s in out if s and len(s) >= 4}, key=len, reverse=True)


_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)\s+[A-Za-z0-9+/=._~-]+")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and any ``Authorization: Basic/Bearer ...`` value) in ``text`` with ``***``.

    Example:
        >>> redact("Authorization: Bearer abc.def and key s3cr3t!", ["s3cr3t!"])
        'Authorization: Bearer *** and key ***'
    """
    text = str(text)
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, "***")
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)} ***", text)


def load_colab_secrets(names: Iterable[str] = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")
                       ) -> list[str]:
    """In Colab, copy the named Colab secrets into environment variables; returns the names set.

    Does nothing outside Colab (returns ``[]``). Not usable inside papermill child kernels (Colab
    secrets need the notebook front end): call it in the notebook you are looking at, before a
    pipeline run, which inherits the environment.
    """
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except Exception:
        return []
    loaded = []
    for name in names:
        try:
            value = userdata.get(name)
        except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException ...
            continue
        if value:
            os.environ[name] = str(value).strip()
            loaded.append(name)
    return loaded


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def explain_http_error(status: int, slug: str, what: str = "competition", source: str | None = None,
                       detail: str = "") -> tuple[str, str]:
    """``(kind, message)`` for an HTTP status from Kaggle. Pure; ``detail`` must already be redacted.

    Example:
        >>> kind, msg = explain_http_error(403, "some-comp")
        >>> kind, "https://www.kaggle.com/competitions/some-comp/rules" in msg
        ('rules', True)
    """
    src = source or "the credentials found"
    said = f" (Kaggle said: {detail.strip()[:300]})" if detail and detail.strip() else ""
    label = f"{what} '{slug}'"
    if status == 401:
        return "auth", (f"Kaggle rejected the credentials from {src} (HTTP 401){said}. The token or key "
                        f"is wrong, expired or revoked: create a new one at {TOKEN_URL}.")
    if status == 403 and what == "competition":
        return "rules", (f"Kaggle refused access to {label} (HTTP 403){said}. Most likely the competition "
                         f"rules have not been accepted: open {RULES_URL.format(slug=slug)} , click "
                         f"'I Understand and Accept' with the account of {src}, then run this again.")
    if status == 403:
        return "forbidden", (f"Kaggle refused access to {label} (HTTP 403){said}: it may be private or "
                             f"need terms accepted on its page (https://www.kaggle.com/datasets/{slug}).")
    if status == 404:
        where = (f"https://www.kaggle.com/competitions/{slug}" if what == "competition"
                 else f"https://www.kaggle.com/datasets/{slug}")
        return "not_found", f"{label} was not found on Kaggle (HTTP 404){said}. Check the slug: {where}"
    if status == 429:
        return "rate_limited", f"Kaggle is rate-limiting requests (HTTP 429){said}; wait a few minutes and retry."
    if 500 <= status < 600:
        return "server", f"Kaggle server error (HTTP {status}){said} while downloading {label}; retry later."
    return "other", f"Downloading {label} failed with HTTP {status}{said}."


def offline_message(slug: str, what: str = "competition", detail: str = "") -> str:
    """The message for a network failure (no DNS, no route, refused connection, timeout)."""
    said = f" ({detail.strip()[:200]})" if detail and detail.strip() else ""
    return (f"Cannot reach Kaggle to download {what} '{slug}': no network connection{said}. "
            f"{DEMO_HINT}")


def no_credentials_message(info: CredentialInfo, environ: Mapping[str, str] | None = None,
                           purpose: str = "download") -> str:
    """What to do without Kaggle credentials; ``purpose="submit"`` offers no demo data in their place."""
    msg = ("No Kaggle credentials found" + (f" ({info.note})" if info.note else "") +
           f". Create an API token at {TOKEN_URL} and either set the environment variable "
           "KAGGLE_API_TOKEN, or save it to ~/.kaggle/access_token (legacy: kaggle.json with "
           "username/key, or KAGGLE_USERNAME + KAGGLE_KEY). ")
    if env.detect_platform(environ) == "colab":
        msg += COLAB_HINT + " "
    if purpose == "submit":
        return msg + "The CSV is unchanged: submit it again once the credentials are set."
    return msg + DEMO_HINT


_OFFLINE_TEXT = ("Name or service not known", "Temporary failure in name resolution", "Failed to resolve",
                 "nodename nor servname", "Network is unreachable", "Connection refused",
                 "Max retries exceeded", "timed out", "No route to host", "getaddrinfo failed")


def _status_of(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    code = getattr(resp, "status_code", None)
    return int(code) if isinstance(code, int) else None


def explain_exception(exc: BaseException, slug: str, what: str, info: CredentialInfo,
                      secrets: Iterable[str]) -> DownloadError:
    """Turn an exception from kaggle / requests into a :class:`DownloadError` (message redacted)."""
    secrets = list(secrets)
    if isinstance(exc, DownloadError):
        return DownloadError(exc.kind, redact(str(exc), secrets))
    detail = redact(str(exc), secrets)
    status = _status_of(exc)
    if status is not None:
        kind, msg = explain_http_error(status, slug, what, info.source, detail)
        return DownloadError(kind, msg)
    try:
        import requests

        net_errors: tuple[type[BaseException], ...] = (requests.exceptions.ConnectionError,
                                                       requests.exceptions.Timeout)
    except Exception:  # pragma: no cover - requests is a kaggle dependency
        net_errors = ()
    if isinstance(exc, net_errors + (ConnectionError, TimeoutError)) or any(
            t in str(exc) for t in _OFFLINE_TEXT):
        return DownloadError("offline", offline_message(slug, what, type(exc).__name__))
    return DownloadError("other", f"Downloading {what} '{slug}' failed: {type(exc).__name__}: {detail}")


# --------------------------------------------------------------------------------------------
# Calling the kaggle package, safely
# --------------------------------------------------------------------------------------------
class _RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        record.msg = redact(msg, self.secrets)
        record.args = None
        return True


@contextlib.contextmanager
def _guarded(secrets: list[str], quiet: bool):
    """Capture everything printed by the kaggle client, redact it; redact its log records."""
    buf = io.StringIO()
    filt = _RedactFilter(secrets)
    loggers = [logging.getLogger(n) for n in _KAGGLE_LOGGERS]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)
        text = redact(buf.getvalue(), secrets).strip()
        if text:
            log.info("kaggle: %s", text)
            if not quiet:
                print(text)


def _kaggle_api(secrets: list[str], quiet: bool):
    """Import the kaggle package lazily (its import may print or exit without credentials)."""
    try:
        with _guarded(secrets, quiet):
            from kaggle.api.kaggle_api_extended import KaggleApi  # noqa: PLC0415
    except SystemExit:
        raise DownloadError("no_credentials", "the kaggle package exited while importing "
                            "(no usable credentials?)") from None
    except ImportError as e:
        raise DownloadError("other", f"the kaggle package is not installed ({e}); pip install kaggle") from None
    api = KaggleApi()
    # Verbose mode would print request headers (credentials): never allow it.
    api.args = [a for a in getattr(api, "args", []) if a not in ("-v", "--verbose")]
    return api


def _authenticate(api, secrets: list[str], quiet: bool, info: CredentialInfo) -> None:
    try:
        with _guarded(secrets, quiet):
            api.authenticate()
    except SystemExit:
        raise DownloadError("auth", f"Kaggle did not accept the credentials from {info.source} "
                            f"(an invalid or expired token?). Create a new token at {TOKEN_URL}.") from None


def _move_complete(partial: Path, target_dir: Path) -> list[Path]:
    """Rename finished downloads from the hidden partial folder into ``target_dir``."""
    out = []
    for p in sorted(partial.iterdir()):
        if p.is_file() and not p.name.endswith(".kaggle-partial"):
            final = target_dir / p.name
            os.replace(p, final)
            out.append(final)
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _download(what: str, slug: str, archive_dir: Path, quiet: bool) -> list[Path]:
    info = find_credentials()
    secrets = secret_values()
    if not info.found:
        raise DownloadError("no_credentials", no_credentials_message(info))
    log.info("downloading %s %s (credentials: %s)", what, slug, info.source)
    archive_dir.mkdir(parents=True, exist_ok=True)
    partial = archive_dir / f".partial-{slug.replace('/', '__')}"
    partial.mkdir(exist_ok=True)
    try:
        api = _kaggle_api(secrets, quiet)
        _authenticate(api, secrets, quiet, info)
        with _guarded(secrets, quiet):
            if what == "competition":
                api.competition_download_files(slug, path=str(partial), force=False, quiet=True)
            else:
                api.dataset_download_files(slug, path=str(partial), force=False, quiet=True, unzip=False)
    except DownloadError as e:
        drop_if_empty(partial)
        raise DownloadError(e.kind, redact(str(e), secrets)) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - mapped to a clear message below
        drop_if_empty(partial)  # a partial file stays (hidden) so the next call can resume it
        raise explain_exception(e, slug, what, info, secrets) from None
    files = _move_complete(partial, archive_dir)
    if not files:
        raise DownloadError("other", f"Kaggle returned no file for {what} '{slug}'.")
    return files


def _place(files: list[Path], dest: Path, keep_archive: bool) -> Path:
    """Extract archives into ``dest`` (safely, once); move other files into it."""
    for f in files:
        if is_archive(f):
            report = extract_archive(f, dest, overwrite=False)
            log.info("%s", report.summary())
            if not keep_archive:
                f.unlink(missing_ok=True)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest / f.name)
    return dest


def _already_there(dest: Path, archive_name: str) -> bool:
    marker = read_marker(dest)
    return bool(marker) and marker.get("archive") == archive_name


def download_competition(slug: str, dest: PathLike | None = None, *, archive_dir: PathLike | None = None,
                         extract: bool = True, keep_archive: bool = False, force: bool = False,
                         quiet: bool = True) -> Path:
    """Download all files of competition ``slug`` and extract them into ``dest``; returns ``dest``.

    ``dest`` defaults to ``<data_root>/<slug>``; the zip is saved in ``archive_dir`` (default
    ``downloads/`` beside ``dest``, i.e. ``<data_root>/downloads``) via a hidden partial folder, and deleted after extraction unless
    ``keep_archive``. A second call finds the extraction marker and does nothing (``force`` redoes it).
    Raises :class:`DownloadError` (403: accept the rules; 401: bad credentials; offline: demo data).

    Example (needs network + credentials):
        >>> # download_competition("some-competition", "data/ecom")
    """
    return _download_and_place("competition", slug, slug, dest, archive_dir, extract, keep_archive,
                               force, quiet)


def download_dataset(slug: str, dest: PathLike | None = None, *, archive_dir: PathLike | None = None,
                     extract: bool = True, keep_archive: bool = False, force: bool = False,
                     quiet: bool = True) -> Path:
    """Download Kaggle dataset ``owner/name`` and extract it into ``dest`` (default ``<data_root>/name``).

    Same behaviour as :func:`download_competition`.

    Example (needs network + credentials):
        >>> # download_dataset("owner/aim-500", "data/aim500")
    """
    if slug.count("/") < 1:
        raise ValueError(f"dataset slug must look like owner/name, got {slug!r}")
    name = slug.split("/")[1]
    return _download_and_place("dataset", slug, name, dest, archive_dir, extract, keep_archive, force, quiet)


def _download_and_place(what: str, slug: str, name: str, dest, archive_dir, extract: bool,
                        keep_archive: bool, force: bool, quiet: bool) -> Path:
    dest = default_dest(name, dest, None)
    archive_dir = Path(archive_dir) if archive_dir is not None else dest.parent / "downloads"
    archive_name = f"{name}.zip"
    if not force and extract and _already_there(dest, archive_name):
        log.info("%s %s already extracted in %s", what, slug, dest)
        return dest
    existing = archive_dir / archive_name
    files = [existing] if existing.is_file() and not force else _download(what, slug, archive_dir, quiet)
    if not extract:
        return files[0] if len(files) == 1 else archive_dir
    try:
        return _place(files, dest, keep_archive)
    except ArchiveError as e:
        raise DownloadError("other", f"the downloaded {what} '{slug}' could not be extracted: {e}") from None


def find_attached_input(slug: str, roots: Iterable[PathLike] | None = None,
                        environ: Mapping[str, str] | None = None) -> Path | None:
    """On Kaggle: the attached input folder for ``slug`` (``/kaggle/input/<name>``,
    ``/kaggle/input/<anything>/<name>`` or ``.../<owner>/<name>``), else None.

    Example:
        >>> find_attached_input("owner/aim-500", roots=[]) is None
        True
    """
    name = slug.rstrip("/").split("/")[-1]
    owner = slug.split("/")[0] if "/" in slug else None
    bases = [Path(r) for r in (env.input_roots(environ) if roots is None else roots)]
    for base in bases:
        if base.name == name and base.is_dir():
            return base
    for base in bases:
        for cand in ([base / name] + ([base / owner / name] if owner else [])):
            if cand.is_dir():
                return cand
    return None


def ensure_dataset(slug: str, dest: PathLike | None = None, *, competition: bool = False,
                   roots: Iterable[PathLike] | None = None, environ: Mapping[str, str] | None = None,
                   **kwargs) -> Path:
    """The folder holding ``slug``: an attached Kaggle input (used in place), an existing local copy,
    or a fresh download (:func:`download_competition` / :func:`download_dataset`, ``kwargs`` passed on).

    An existing local copy is a folder with an extraction marker or any content.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); open(os.path.join(d, "x.png"), "w").close()
        >>> ensure_dataset("owner/name", d, roots=[]) == Path(d)
        True
    """
    attached = find_attached_input(slug, roots, environ)
    if attached is not None:
        log.info("using attached input %s for %s (no download)", attached, slug)
        return attached
    name = slug if competition else slug.split("/")[-1]
    target = default_dest(name, dest, environ)
    if target.is_dir() and (read_marker(target) or any(target.iterdir())) and not kwargs.get("force"):
        return target
    fn = download_competition if competition else download_dataset
    return fn(slug, target, **kwargs)


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``"owner/name"`` -> ``("owner/name", "name")``; ``"owner/name:folder"`` -> ``("owner/name", "folder")``.

    Example:
        >>> parse_dataset_spec("someone/aim-500:aim500")
        ('someone/aim-500', 'aim500')
    """
    slug, _, folder = spec.partition(":")
    slug = slug.strip()
    if slug.count("/") != 1 or not all(slug.split("/")):
        raise ValueError(f"dataset spec must be 'owner/name' or 'owner/name:folder', got {spec!r}")
    return slug, (folder.strip() or slug.split("/")[1])


def ensure_config_data(cfg, environ: Mapping[str, str] | None = None, **kwargs) -> dict[str, Path]:
    """Make the data named by ``cfg.data.kaggle_competition`` / ``kaggle_datasets`` available.

    The competition goes to ``cfg.data.root`` when the layout is ``competition`` (else
    ``<data_root>/<slug>``); each dataset to ``<data_root>/<folder>``. Returns ``{slug: folder}``.
    """
    root = env.data_root_for(cfg, environ)
    out: dict[str, Path] = {}
    d = cfg.data
    if d.kaggle_competition:
        rel = Path(d.root) if d.layout == "competition" else Path(d.kaggle_competition)
        dest = rel if rel.is_absolute() else root / rel
        out[d.kaggle_competition] = ensure_dataset(d.kaggle_competition, dest, competition=True,
                                                   environ=environ, **kwargs)
    for spec in d.kaggle_datasets:
        slug, folder = parse_dataset_spec(spec)
        dest = Path(folder) if Path(folder).is_absolute() else root / folder
        out[slug] = ensure_dataset(slug, dest, environ=environ, **kwargs)
    return out


# --------------------------------------------------------------------------------------------
# Kaggle submissions: upload a CSV, poll for the public score
# --------------------------------------------------------------------------------------------
SUBMISSIONS_URL = "https://www.kaggle.com/competitions/{slug}/submissions"


class SubmitError(DownloadError):
    """A Kaggle submission failed. ``kind`` as :class:`DownloadError`'s plus ``rejected`` (Kaggle refused
    the file or scoring failed: the message quotes Kaggle's reason; exit code 1) and ``upload_failed``."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message)
        if kind == "rejected":
            self.exit_code = 1


@dataclass
class SubmissionResult:
    """One submission as Kaggle reports it. ``status``: ``complete`` | ``pending`` (still scoring when
    polling stopped, or ``poll=False``). Scores are Kaggle's strings (``None`` until scored)."""

    competition: str
    file_name: str
    message: str
    status: str
    ref: int | None = None
    public_score: str | None = None
    private_score: str | None = None
    server_message: str = ""
    seconds: float = 0.0

    @property
    def url(self) -> str:
        return SUBMISSIONS_URL.format(slug=self.competition)

    def __str__(self) -> str:
        if self.status == "complete":
            score = self.public_score if self.public_score not in (None, "") else "(no public score)"
            return f"Kaggle {self.competition}: {self.file_name} scored {score} (public leaderboard)"
        return (f"Kaggle {self.competition}: {self.file_name} submitted, still being scored after "
                f"{self.seconds:.0f}s; see {self.url}")


def _client_error(cls: type[DownloadError], exc: BaseException, ref: str, doing: str, what: str,
                  info: CredentialInfo, secrets: list[str], by_status, unchanged: str) -> DownloadError:
    """The frame of every mapping of a kaggle client exception to one of the kit's errors (``cls``): the
    kit's own errors keep their kind (message redacted); ``by_status(status, detail, said)`` (``status``
    None without an HTTP answer; ``said`` quotes Kaggle) gives the action's own error or None; no network
    is ``offline`` (``unchanged`` says what was left as it was); anything else takes
    :func:`explain_exception`'s kind. ``doing`` reads in "Could not {doing} '{ref}'"."""
    if isinstance(exc, DownloadError):
        return cls(exc.kind, redact(str(exc), secrets))
    detail = redact(str(exc), secrets).strip()
    said = f" (Kaggle said: {detail[:500]})" if detail else ""
    mapped = by_status(_status_of(exc), detail, said)
    if mapped is not None:
        return mapped
    err = explain_exception(exc, ref, what, info, secrets)
    if err.kind == "offline":
        return cls("offline", f"Cannot reach Kaggle to {doing} '{ref}': no network connection "
                   f"({type(exc).__name__}). {unchanged}")
    return cls(err.kind, f"Could not {doing} '{ref}': {type(exc).__name__}: {detail}")


def _submit_error(exc: BaseException, slug: str, info: CredentialInfo, secrets: list[str]) -> SubmitError:
    """Map an exception from the kaggle client during a submission to a :class:`SubmitError`."""
    def by_status(status: int | None, detail: str, said: str) -> SubmitError | None:
        if status in (401, 403, 404, 429):
            kind, msg = explain_http_error(status, slug, "competition", info.source, detail)
            return SubmitError(kind, msg + (" (or it no longer accepts submissions)" if status == 404 else ""))
        if status is not None and 400 <= status < 500:
            return SubmitError("rejected", f"Kaggle rejected the submission to '{slug}' (HTTP {status}){said}.")
        if status is not None:
            return SubmitError("server", f"Kaggle server error (HTTP {status}){said} while submitting to '{slug}'; "
                               f"retry later (check {SUBMISSIONS_URL.format(slug=slug)} first: it may have arrived).")
        return None

    return _client_error(SubmitError, exc, slug, "submit to", "competition", info, secrets, by_status,
                         "The CSV is unchanged; submit it when online.")


def _status_name(status) -> str:
    name = getattr(status, "name", status)
    return str(name or "").upper().removeprefix("SUBMISSION_STATUS_")


def _find_submission(subs, ref: int | None, file_name: str, message: str):
    subs = [s for s in (subs or []) if s is not None]
    if ref:
        for s in subs:
            if getattr(s, "ref", None) == ref:
                return s
    for s in subs:  # newest first (the list is sorted by date)
        if getattr(s, "file_name", None) == file_name and (getattr(s, "description", None) or "") == (message or ""):
            return s
    return None


def submit_to_kaggle(csv_path: PathLike, competition: str, message: str, *, poll: bool = True,
                     timeout_s: float = 900.0, interval_s: float = 15.0, quiet: bool = False,
                     sleep=None) -> SubmissionResult:
    """Upload an existing submission CSV to ``competition`` with the kaggle client and (``poll``) wait for
    its public score; returns a :class:`SubmissionResult` (``status="pending"`` if still scoring after
    ``timeout_s``; polled every ``interval_s``). Prints progress and the score unless ``quiet``.

    Credentials as for downloads (:func:`find_credentials`; never printed: the client's output and
    logs are redacted). Raises :class:`SubmitError`: ``rejected`` with Kaggle's reason (a bad file at
    upload, or scoring ended in error), ``rules`` (accept the competition rules), ``auth``,
    ``not_found``, ``offline``, ``no_credentials``, ``upload_failed``.

    Example (needs network + credentials; tests use a local fake Kaggle):
        >>> # submit_to_kaggle("submissions/sub.csv", "some-competition", "resnet50, 20k steps")
    """
    import time as _time

    sleep = sleep or _time.sleep
    csv = Path(csv_path)
    if not csv.is_file() or csv.stat().st_size == 0:
        from .errors import InputDataError

        raise InputDataError(f"{csv}: submission CSV not found or empty (build it with `mattingkit submit`)")
    if not competition or "/" in competition:
        from .errors import UsageError

        raise UsageError(f"competition must be a Kaggle competition slug, got {competition!r}")
    info = find_credentials()
    secrets = secret_values()
    if not info.found:
        raise SubmitError("no_credentials", no_credentials_message(info, purpose="submit"))
    say = (lambda text: None) if quiet else (lambda text: print(redact(text, secrets), flush=True))
    t0 = _time.monotonic()
    try:
        api = _kaggle_api(secrets, True)
        _authenticate(api, secrets, True, info)
        with _guarded(secrets, True):
            resp = api.competition_submit(str(csv), message, competition, quiet=True)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - mapped to a clear message
        raise _submit_error(e, competition, info, secrets) from None
    server_message = redact(str(getattr(resp, "message", "") or ""), secrets)
    if server_message == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", object()):
        raise SubmitError("upload_failed", f"Uploading {csv.name} to '{competition}' failed (Kaggle's upload "
                          f"server did not accept the file); run it again.")
    ref = getattr(resp, "ref", None) or None
    result = SubmissionResult(competition, csv.name, message, "pending", ref=ref, server_message=server_message)
    say(f"Submitted {csv.name} to {competition} ({info.source}): {server_message or 'ok'}")
    if not poll:
        result.seconds = _time.monotonic() - t0
        return result
    deadline = t0 + float(timeout_s)
    while True:
        try:
            with _guarded(secrets, True):
                subs = api.competition_submissions(competition)
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise _submit_error(e, competition, info, secrets) from None
        sub = _find_submission(subs, ref, csv.name, message)
        status = _status_name(getattr(sub, "status", "PENDING")) if sub is not None else "PENDING"
        result.seconds = _time.monotonic() - t0
        if sub is not None and status == "COMPLETE":
            result.status = "complete"
            result.ref = getattr(sub, "ref", None) or ref
            result.public_score = getattr(sub, "public_score", None) or None
            result.private_score = getattr(sub, "private_score", None) or None
            say(str(result))
            return result
        if sub is not None and status == "ERROR":
            reason = redact(str(getattr(sub, "error_description", "") or "no reason given"), secrets)
            raise SubmitError("rejected", f"Kaggle could not score {csv.name} for '{competition}': {reason}. "
                              f"Check the file with `mattingkit submit` validation; details at {result.url}")
        if _time.monotonic() + interval_s > deadline:
            say(str(result))
            return result
        say(f"waiting for the score ({result.seconds:.0f}s)...")
        sleep(interval_s)


# --------------------------------------------------------------------------------------------
# Kernels: push a run to a Kaggle GPU, follow it, pull its results; the wheel dataset
# --------------------------------------------------------------------------------------------
KERNEL_METADATA = "kernel-metadata.json"
DRIVER_NOTEBOOK = "mattingkit-run.ipynb"
KERNEL_URL = "https://www.kaggle.com/code/{ref}"
#: ``--accelerator`` names -> Kaggle's ``machine_shape`` (``none``: no GPU). T4 x2 is Kaggle's two-T4 machine.
ACCELERATORS = {"t4x2": "NvidiaTeslaT4", "p100": "NvidiaTeslaP100", "none": None}
WHEEL_DATASET = "mattingkit-wheel"
#: Where push records live, under the runs root: ``<runs root>/.kaggle-kernels/<run>.json``.
PUSH_RECORDS = ".kaggle-kernels"
#: In a pulled run folder: which kernel (and version) produced it.
SOURCE_FILE = "kaggle_source.json"
#: The kernel's own folders: runs in its output, data and the kit's sources outside it.
KERNEL_RUNS_ROOT = "/kaggle/working/runs"
KERNEL_DATA_ROOT = "/tmp/mattingkit-data"
KERNEL_SRC_DIR = "/tmp/mattingkit"
KERNEL_WHEEL_GLOB = "/kaggle/input/**/mattingkit-*.whl"
REPO_URL_ENV = "MATTINGKIT_REPO_URL"
P100_NOTE = ("Kaggle's P100 (compute capability 6.0) has no kernels in recent torch builds (no sm_60): "
             "the run would stop at start. Use --accelerator t4x2, or --set run.device=cpu deliberately.")
_KERNEL_STATES = ("queued", "running", "complete", "error", "cancel_requested", "cancel_acknowledged",
                  "new_script")


class KernelError(DownloadError):
    """A kernel push / status / pull / wheel failed. ``kind``: ``no_credentials``, ``auth``, ``offline``,
    ``owner`` (the slug belongs to another account), ``quota`` (GPU quota used up), ``errored`` (the kernel
    ran and failed: the message ends with its log's tail; exit 1), ``running`` (not finished yet; exit 6),
    ``not_found``, ``no_wheel``, ``rejected``, ``server``, ``other``."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message)
        if kind == "errored":
            self.exit_code = 1
        elif kind == "running":
            self.exit_code = 6


def kernel_slug(run_name: str, prefix: str = "mattingkit") -> str:
    """The kernel slug of a run: lower-case words joined by ``-``, at most 50 characters (Kaggle's rule;
    the kernel's title is the slug itself, so the two always agree).

    Example:
        >>> kernel_slug("00_lr_g=0.0001_norm=bn")
        'mattingkit-00-lr-g-0-0001-norm-bn'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", f"{prefix} {run_name}".lower()).strip("-")
    return slug[:50].strip("-")


def _redacted_api(quiet: bool = True):
    """``(api, info, secrets, user)``: the kaggle client authenticated with the credentials found."""
    info = find_credentials()
    secrets = secret_values()
    if not info.found:
        raise KernelError("no_credentials", no_credentials_message(info))
    api = _kaggle_api(secrets, quiet)
    _authenticate(api, secrets, quiet, info)
    user = str(api.config_values.get(api.CONFIG_NAME_USER) or "")
    return api, info, secrets, user


def _kernel_error(exc: BaseException, ref: str, action: str, info: CredentialInfo, secrets: list[str]) -> KernelError:
    """Map an exception from the kaggle client during ``action`` on kernel/dataset ``ref``."""
    def by_status(status: int | None, detail: str, said: str) -> KernelError | None:
        if status == 401:
            return KernelError("auth", explain_http_error(401, ref, source=info.source, detail=detail)[1])
        if status == 403 or "was denied" in detail:
            owner = ref.split("/")[0]
            return KernelError("owner", f"Kaggle refused to {action} '{ref}' (HTTP 403){said}: the slug belongs "
                               f"to another account than '{owner}' (or is private to it). Pick another --name or "
                               f"--kernel.")
        if status == 404:
            return KernelError("not_found", f"'{ref}' was not found on Kaggle (HTTP 404){said}.")
        if status == 429 or "quota" in detail.lower():
            return KernelError("quota", _quota_message(detail))
        if status is not None and status >= 500:
            return KernelError("server", f"Kaggle server error (HTTP {status}){said} while trying to {action} "
                               f"'{ref}'; retry later.")
        return None

    return _client_error(KernelError, exc, ref, action, "kernel", info, secrets, by_status,
                         "Nothing was changed on Kaggle; run it again when online.")


def _quota_message(detail: str) -> str:
    return (f"Kaggle's weekly GPU quota is used up (Kaggle said: {detail.strip()[:300]}). Wait for it to refill "
            f"(https://www.kaggle.com/settings), or push with --accelerator none (CPU).")


@dataclass
class KernelRun:
    """What a kernel runs: the run name, the config (a shipped name, or a YAML file's name and text that
    travel inside the driver), the overrides / notebook parameters as given on the command line, and
    the kernel's settings (accelerator, internet, data sources, how the kit is installed)."""

    run_name: str
    config: str = DEFAULT_CONFIG
    config_text: str | None = None
    overrides: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    smoke: bool = False
    notebooks: list[str] | None = None
    accelerator: str = "t4x2"
    internet: bool = True
    competition: str | None = None
    datasets: list[str] = field(default_factory=list)
    wheel_dataset: str | None = None
    repo_url: str | None = None
    repo_ref: str | None = None
    slug: str | None = None          # the kernel's slug (default: kernel_slug(run_name))

    def install(self) -> str:
        return "repo" if self.internet else "wheel"


def kernel_run_from_config(cfg, config: str, run_name: str, **kwargs) -> KernelRun:
    """A :class:`KernelRun` for a resolved config ``cfg`` (checked by the caller): the config travels as
    its name when it is shipped, else as the YAML file's text; the config's Kaggle competition and
    datasets become the kernel's sources; the P100 caveat is checked here.

    Example:
        >>> from mattingkit.config import load_config
        >>> cfg = load_config("demo", {"data.kaggle_competition": "some-comp", "data.kaggle_datasets": ["o/d:x"]})
        >>> kr = kernel_run_from_config(cfg, "demo", "e1", accelerator="t4x2")
        >>> kr.config, kr.competition, kr.datasets, kr.config_text
        ('demo', 'some-comp', ['o/d'], None)
    """
    from .config import available_configs
    from .errors import UsageError

    accelerator = kwargs.get("accelerator", "t4x2")
    if accelerator not in ACCELERATORS:
        raise UsageError(f"--accelerator {accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
    if accelerator == "p100" and str(cfg.run.device) != "cpu":
        raise UsageError(P100_NOTE)
    text = None
    if config not in available_configs():
        path = Path(config)
        text = path.read_text(encoding="utf-8")
        config = path.name
    datasets = [parse_dataset_spec(s)[0] for s in cfg.data.kaggle_datasets]
    return KernelRun(run_name=run_name, config=config, config_text=text,
                     competition=cfg.data.kaggle_competition or None, datasets=datasets, **kwargs)


def check_travelling_config(kr: KernelRun, overrides: Iterable[str] = ()) -> None:
    """Load the config the kernel will load (the file's text alone, in an empty folder) with the same
    overrides: a ``base:`` that names another local file, or any other config error, stops the push here.

    Example:
        >>> check_travelling_config(KernelRun("x", "demo"), ["train.steps=5"])
    """
    import tempfile

    from .config import load_config

    if kr.config_text is None:
        load_config(kr.config, list(overrides))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / kr.config
        path.write_text(kr.config_text, encoding="utf-8")
        cwd = os.getcwd()
        os.chdir(tmp)   # a relative `base: other.yaml` resolves as it would in the kernel: not at all
        try:
            load_config(str(path), list(overrides))
        finally:
            os.chdir(cwd)


def kernel_metadata(kr: KernelRun, owner: str, slug: str | None = None) -> dict:
    """The ``kernel-metadata.json`` of a run's kernel (see docs/kaggle.md for each field).

    Example:
        >>> md = kernel_metadata(KernelRun("demo1", internet=False, wheel_dataset="me/mattingkit-wheel"), "me")
        >>> md["id"], md["enable_internet"], md["dataset_sources"], md["machine_shape"]
        ('me/mattingkit-demo1', False, ['me/mattingkit-wheel'], 'NvidiaTeslaT4')
    """
    slug = slug or kr.slug or kernel_slug(kr.run_name)
    sources = list(kr.datasets)
    if not kr.internet:
        sources.append(kr.wheel_dataset or f"{owner}/{WHEEL_DATASET}")
    shape = ACCELERATORS[kr.accelerator]
    md = {"id": f"{owner}/{slug}", "title": slug, "code_file": DRIVER_NOTEBOOK, "language": "python",
          "kernel_type": "notebook", "is_private": True, "enable_gpu": shape is not None and "Tpu" not in shape,
          "enable_tpu": False, "enable_internet": bool(kr.internet), "dataset_sources": sources,
          "competition_sources": [kr.competition] if kr.competition else [], "kernel_sources": [],
          "model_sources": []}
    if shape:
        md["machine_shape"] = shape
    return md


def driver_parameters(kr: KernelRun) -> dict:
    """The driver notebook's parameters (its ``parameters`` cell). Nothing secret: names, overrides and
    paths only; credentials are never needed inside the kernel (its data comes as attached sources)."""
    return {"run_name": kr.run_name, "config": kr.config, "config_text": kr.config_text or "",
            "overrides": list(kr.overrides), "params": list(kr.params), "smoke": bool(kr.smoke),
            "notebooks": list(kr.notebooks or []), "install": kr.install(),
            "repo_url": kr.repo_url or "", "repo_ref": kr.repo_ref or "", "wheel_glob": KERNEL_WHEEL_GLOB,
            "src_dir": KERNEL_SRC_DIR, "runs_root": KERNEL_RUNS_ROOT, "data_root": KERNEL_DATA_ROOT}


_DRIVER_CELLS = [
    ("markdown", "# mattingkit run `{run_name}` on a Kaggle kernel\n\nWritten by `mattingkit kaggle push`: installs "
                 "the kit, runs `mattingkit run` (notebooks 01 -> 05) and leaves `runs/{run_name}/` in the output. "
                 "Pull it with `mattingkit kaggle pull {run_name}`."),
    ("parameters", None),
    ("code", """import glob, os, shutil, subprocess, sys
from pathlib import Path

def sh(*cmd, cwd=None, env=None):  # run a command, its output in this notebook (and the kernel's log)
    print("$", " ".join(map(str, cmd)), flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="", flush=True)
    return proc.wait()"""),
    ("code", """src = Path(src_dir)  # the kit's notebooks/ (and the config) live here, outside the output
shutil.rmtree(src, ignore_errors=True)
if install == "repo":   # internet on: the repository
    assert sh("git", "clone", "--depth", "1", *(["--branch", repo_ref] if repo_ref else []), repo_url, src) == 0
    assert sh(sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", src) == 0
elif install == "wheel":   # internet off: the wheel dataset attached as a source
    wheel = sorted(glob.glob(wheel_glob, recursive=True))[-1]
    assert sh(sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
              os.path.dirname(wheel), wheel) == 0
    (src / "notebooks").mkdir(parents=True)
    for nb in glob.glob(os.path.join(os.path.dirname(wheel), "0*.ipynb")):
        shutil.copy(nb, src / "notebooks")"""),
    ("code", """cfg = config
if config_text:  # the user's own YAML travels inside this notebook
    cfg = str(src / config)
    Path(cfg).write_text(config_text, encoding="utf-8")
cmd = [sys.executable, "-m", "mattingkit", "run", "--config", cfg, "--name", run_name, "--runs-root", runs_root]
cmd += [a for o in overrides for a in ("--set", o)] + [a for p in params for a in ("--param", p)]
cmd += (["--smoke"] if smoke else []) + (["--notebooks", *notebooks] if notebooks else [])
rc = sh(*cmd, cwd=src, env=dict(os.environ, MATTINGKIT_DATA_ROOT=data_root))"""),
    ("code", """run_dir = Path(runs_root) / run_name
print("output:", run_dir, sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else "(none)")
if rc != 0:
    raise RuntimeError(f"mattingkit run {run_name} failed (exit {rc}): see the lines above")"""),
]


def driver_notebook(kr: KernelRun) -> dict:
    """The kernel's one notebook (nbformat 4 JSON, no outputs): a parameters cell, then install the kit,
    run ``mattingkit run`` with the same config, overrides, parameters and name, list the output. Runs
    headless under papermill too (tests/test_kaggle_kernels.py runs it here).

    Example:
        >>> nb = driver_notebook(KernelRun("demo1"))
        >>> nb["cells"][1]["metadata"]["tags"], "mattingkit" in nb["cells"][4]["source"]
        (['parameters'], True)
    """
    params = driver_parameters(kr)
    cells = []
    for i, (kind, text) in enumerate(_DRIVER_CELLS):
        cell = {"id": f"cell-{i}", "cell_type": "markdown" if kind == "markdown" else "code", "metadata": {}}
        if kind == "markdown":
            cell["source"] = text.format(**params)
        else:
            if kind == "parameters":   # strings and lists of strings as JSON, which Python reads alike
                text = "\n".join(f"{k} = {v!r}" if isinstance(v, bool) else f"{k} = {json.dumps(v)}"
                                 for k, v in params.items())
                cell["metadata"] = {"tags": ["parameters"]}
            cell.update(source=text, outputs=[], execution_count=None)
        cells.append(cell)
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"}}}


def write_kernel_folder(kr: KernelRun, folder: PathLike, owner: str, slug: str | None = None) -> Path:
    """Write ``kernel-metadata.json`` and the driver notebook into ``folder`` (what ``kaggle kernels push``
    reads); returns the folder."""
    from .io import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / KERNEL_METADATA, json.dumps(kernel_metadata(kr, owner, slug), indent=1) + "\n")
    atomic_write_text(folder / DRIVER_NOTEBOOK, json.dumps(driver_notebook(kr), indent=1) + "\n")
    return folder


@dataclass
class PushResult:
    run: str
    ref: str
    url: str
    version: int | None
    folder: Path | None = None

    def __str__(self) -> str:
        v = f" version {self.version}" if self.version else ""
        return f"pushed {self.run} as kernel {self.ref}{v}: {self.url}"


def _local_user() -> str:
    """The Kaggle user name known without network (legacy key), for a dry run's ``id``."""
    e = os.environ
    _, data, _ = _kaggle_json(e, _home(None))
    return e.get("KAGGLE_USERNAME") or str((data or {}).get("username") or "") or "YOUR_KAGGLE_USERNAME"


def push_kernel(kr: KernelRun, runs_root: PathLike, *, kernel: str | None = None, dry_run: PathLike | None = None,
                quiet: bool = False) -> PushResult:
    """Write the kernel folder and push it with the kaggle client (``dry_run``: write it to that folder and
    push nothing). Records the push in ``<runs_root>/.kaggle-kernels/<run>.json`` (kernel, version, URL)
    for :func:`kernel_status` and :func:`pull_kernel`. Raises :class:`KernelError`.

    Example (needs credentials; tests use the fake Kaggle of tests/kaggle_fake_server.py):
        >>> # push_kernel(KernelRun("demo1", "demo", smoke=True), "runs")
    """
    import tempfile

    from .errors import UsageError
    from .io import atomic_write_text

    if kr.internet and not kr.repo_url:
        raise UsageError(f"an internet-on kernel installs the kit from its repository: give --repo URL (or set "
                         f"{REPO_URL_ENV}), or push with --no-internet after `mattingkit kaggle wheel`")
    owner_given, _, slug_given = (kernel or "").partition("/")
    if kernel and (not slug_given or "/" in slug_given):
        raise UsageError(f"--kernel must be OWNER/SLUG, got {kernel!r}")
    if dry_run is not None:
        folder = write_kernel_folder(kr, dry_run, owner_given or _local_user(), slug_given or None)
        md = json.loads((folder / KERNEL_METADATA).read_text(encoding="utf-8"))
        if not quiet:
            print(f"kernel folder written to {folder} (nothing pushed): {KERNEL_METADATA}, {DRIVER_NOTEBOOK}")
        return PushResult(kr.run_name, md["id"], KERNEL_URL.format(ref=md["id"]), None, folder)
    info = find_credentials()
    secrets = secret_values()
    slug = slug_given or kr.slug or kernel_slug(kr.run_name)
    ref = kernel or slug
    try:
        api, info, secrets, user = _redacted_api()
        if owner_given and owner_given != user:
            raise KernelError("owner", f"--kernel {kernel}: the slug belongs to '{owner_given}', but the "
                              f"credentials ({info.source}) are '{user}'s; push under your own account.")
        ref = f"{user}/{slug}"
        if not kr.internet:
            wheel = kr.wheel_dataset or f"{user}/{WHEEL_DATASET}"
            if not _dataset_exists(api, wheel, secrets):
                raise KernelError("no_wheel", f"an internet-off kernel installs the kit from the dataset {wheel}, "
                                  f"which does not exist yet: run `mattingkit kaggle wheel` first.")
        with tempfile.TemporaryDirectory() as tmp:
            write_kernel_folder(kr, tmp, user, slug)
            with _guarded(secrets, True):
                resp = api.kernels_push(tmp)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - mapped to a clear message
        raise _kernel_error(e, ref, "push the kernel", info, secrets) from None
    error = redact(str(getattr(resp, "error", "") or ""), secrets)
    if error:
        kind = "quota" if "quota" in error.lower() else "rejected"
        raise KernelError(kind, _quota_message(error) if kind == "quota" else
                          f"Kaggle rejected the kernel {ref}: {error}")
    bad = [s for name in ("invalid_dataset_sources", "invalid_competition_sources")
           for s in (getattr(resp, name, None) or [])]
    url = str(getattr(resp, "url", "") or KERNEL_URL.format(ref=ref))
    result = PushResult(kr.run_name, ref, url, getattr(resp, "version_number", None) or None)
    record = {"run": kr.run_name, "kernel": ref, "url": url, "version": result.version,
              "accelerator": kr.accelerator, "internet": kr.internet, "config": kr.config,
              "overrides": kr.overrides, "params": kr.params, "smoke": kr.smoke}
    atomic_write_text(Path(runs_root) / PUSH_RECORDS / f"{kr.run_name}.json", json.dumps(record, indent=1))
    if not quiet:
        print(result)
        if bad:
            print(f"note: Kaggle did not attach these sources: {', '.join(map(str, bad))}")
    return result


def _dataset_exists(api, ref: str, secrets: list[str]) -> bool:
    try:
        with _guarded(secrets, True):
            api.dataset_status(ref)
    except Exception as e:  # noqa: BLE001 - 404: absent; anything else is a real error
        if _status_of(e) == 404:
            return False
        raise
    return True


def push_record(run_name: str, runs_root: PathLike) -> dict:
    """The record :func:`push_kernel` left for ``run_name`` (a :class:`~mattingkit.errors.UsageError` if none)."""
    from .errors import UsageError

    path = Path(runs_root) / PUSH_RECORDS / f"{run_name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"no kernel was pushed for run '{run_name}' from here ({path} is missing): "
                         f"push it with `mattingkit kaggle push --name {run_name}`") from None


@dataclass
class KernelStatus:
    run: str
    ref: str
    status: str          # queued | running | complete | error | cancel_* | new_script
    failure: str = ""
    log_tail: str = ""

    def __str__(self) -> str:
        line = f"{self.run}: kernel {self.ref} is {self.status}"
        if self.failure:
            line += f" ({self.failure})"
        return line + (f"\nlog (last lines):\n{self.log_tail}" if self.log_tail else "")


def log_tail(log: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a kernel log (Kaggle's log is a JSON list of ``{stream_name, time,
    data}`` records, or plain text).

    Example:
        >>> log_tail('[{"stream_name": "stdout", "time": 1.0, "data": "a\\\\nb\\\\n"}]', 1)
        'b'
    """
    text = log or ""
    try:
        records = json.loads(text)
        if isinstance(records, list):
            text = "".join(str(r.get("data", "")) for r in records if isinstance(r, dict))
    except ValueError:
        pass
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def _session_output(api, ref: str, page_token: str | None = None):
    from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

    owner, slug = ref.split("/", 1)
    with api.build_kaggle_client() as kaggle:
        request = ApiListKernelSessionOutputRequest()
        request.user_name = owner
        request.kernel_slug = slug
        request.page_size = 100
        if page_token:
            request.page_token = page_token
        return kaggle.kernels.kernels_api_client.list_kernel_session_output(request)


def kernel_status(run_name: str, runs_root: PathLike, *, with_log: bool = True) -> KernelStatus:
    """The state of the kernel pushed for ``run_name`` (``queued`` / ``running`` / ``complete`` / ``error``),
    with the tail of its log when it errored. Raises :class:`KernelError`."""
    rec = push_record(run_name, runs_root)
    ref = rec["kernel"]
    info = find_credentials()
    secrets = secret_values()
    try:
        api, info, secrets, _ = _redacted_api()
        with _guarded(secrets, True):
            resp = api.kernels_status(ref)
            state = _state_name(getattr(resp, "status", ""))
            failure = redact(str(getattr(resp, "failure_message", "") or ""), secrets)
            tail = ""
            if state == "error" and with_log:
                tail = redact(log_tail(str(_session_output(api, ref).log or "")), secrets)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise _kernel_error(e, ref, "read the status of", info, secrets) from None
    return KernelStatus(run_name, ref, state, failure, tail)


def _state_name(status) -> str:
    name = str(getattr(status, "name", status) or "").lower().removeprefix("kernel_worker_status_")
    return name if name in _KERNEL_STATES else (name or "unknown")


def _safe_relative(name: str) -> Path | None:
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        return None
    return p


@dataclass
class PullResult:
    run: str
    ref: str
    version: int | None
    run_dir: Path
    files: list[str]

    def __str__(self) -> str:
        return f"pulled {len(self.files)} files of kernel {self.ref} into {self.run_dir}"


def check_producer(run_dir: Path, ref: str) -> None:
    """Refuse to pull kernel ``ref`` into a run folder that holds a different run (a local run, or the
    output of another kernel): the producer rule the prediction folders follow."""
    from .errors import RunStateError

    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    try:
        source = json.loads((run_dir / SOURCE_FILE).read_text(encoding="utf-8")).get("kernel")
    except (OSError, ValueError):
        source = None
    if source != ref:
        held = f"the output of kernel {source}" if source else "a run made here (no kaggle_source.json)"
        raise RunStateError(f"{run_dir} holds {held}, not kernel {ref}'s: pull into another run name, or move "
                            f"that folder away first")


def pull_kernel(run_name: str, runs_root: PathLike, *, checkpoints: bool = False, quiet: bool = False) -> PullResult:
    """Download the finished kernel's ``runs/<run>/`` output into ``<runs_root>/<run>/`` (``checkpoints/``
    only with ``checkpoints``), recording which kernel and version produced it in ``kaggle_source.json``.
    A re-pull of the same kernel replaces the folder; one holding another run is refused
    (:func:`check_producer`). Files land in a hidden staging folder first, each name checked (no absolute
    path, no ``..``), then the folder is swapped in. Raises :class:`KernelError` (``running``: not
    finished; ``errored``: with the log's tail)."""
    import requests

    from .io import atomic_write_text

    runs_root = Path(runs_root)
    rec = push_record(run_name, runs_root)
    ref = rec["kernel"]
    run_dir = runs_root / run_name
    check_producer(run_dir, ref)
    state = kernel_status(run_name, runs_root)
    if state.status == "error":
        raise KernelError("errored", f"kernel {ref} failed{f' ({state.failure})' if state.failure else ''}; "
                          f"log (last lines): " + " | ".join(state.log_tail.splitlines()[-8:]))
    if state.status != "complete":
        raise KernelError("running", f"kernel {ref} is {state.status}, not complete yet: "
                          f"`mattingkit kaggle status {run_name}`, then pull again")
    info = find_credentials()
    secrets = secret_values()
    prefix = f"runs/{run_name}/"
    staging = runs_root / f".pull-{run_name}"
    shutil.rmtree(staging, ignore_errors=True)
    got: list[str] = []
    try:
        api, info, secrets, _ = _redacted_api()
        token = None
        while True:
            with _guarded(secrets, True):
                resp = _session_output(api, ref, token)
            for item in resp.files or []:
                name = str(item.file_name or "")
                if not name.startswith(prefix):
                    continue
                rel = _safe_relative(name[len(prefix):])
                if rel is None:
                    raise KernelError("rejected", f"kernel {ref}'s output holds an unsafe file name {name!r}; "
                                      f"nothing was pulled")
                if rel.parts[0] == "checkpoints" and not checkpoints:
                    continue
                r = requests.get(item.url, timeout=120)
                r.raise_for_status()
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(r.content)
                got.append(rel.as_posix())
            token = getattr(resp, "next_page_token", None)
            if not token:
                break
    except (Exception, SystemExit) as e:  # noqa: BLE001
        shutil.rmtree(staging, ignore_errors=True)
        raise _kernel_error(e, ref, "pull the output of", info, secrets) from None
    if not got:
        shutil.rmtree(staging, ignore_errors=True)
        raise KernelError("not_found", f"kernel {ref} finished but its output holds no {prefix} folder: did "
                          f"`mattingkit run` start? (`mattingkit kaggle status {run_name}`)")
    atomic_write_text(staging / SOURCE_FILE, json.dumps(
        {"kernel": ref, "version": rec.get("version"), "url": rec.get("url"), "run": run_name,
         "checkpoints": checkpoints, "files": len(got)}, indent=1))
    old = runs_root / f".pull-{run_name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(staging, run_dir)
    shutil.rmtree(old, ignore_errors=True)
    result = PullResult(run_name, ref, rec.get("version"), run_dir, sorted(got))
    if not quiet:
        print(result)
    return result


# --------------------------------------------------------------------------------------------
# The wheel dataset (internet-off kernels install the kit from it)
# --------------------------------------------------------------------------------------------
def build_wheel(out_dir: PathLike) -> Path:
    """Build the kit's wheel from the checkout into ``out_dir`` (offline: ``pip wheel --no-deps
    --no-build-isolation`` on a copy of the sources, so the checkout gets no build/ folder); returns it."""
    import subprocess
    import tempfile

    from .errors import UsageError

    repo = env.repo_root()
    if repo is None:
        raise UsageError("`mattingkit kaggle wheel` builds from the repository checkout: run it there")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(repo / "mattingkit", src / "mattingkit",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (repo / name).is_file():
                shutil.copy(repo / name, src / name)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "-w", str(out_dir), str(src)], capture_output=True, text=True)
    wheels = sorted(out_dir.glob("mattingkit-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise KernelError("other", f"building the wheel failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return wheels[-1]


def publish_wheel(dataset: str | None = None, notes: str = "mattingkit wheel", quiet: bool = False) -> str:
    """Build the wheel (:func:`build_wheel`) and create (first time) or version the private dataset
    ``dataset`` (default ``<user>/mattingkit-wheel``) holding it and the five notebooks; returns its ref."""
    import tempfile

    info = find_credentials()
    secrets = secret_values()
    ref = dataset or WHEEL_DATASET
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wheel = build_wheel(folder)
        for nb in sorted((env.repo_root() / "notebooks").glob("0*.ipynb")):  # `mattingkit run` needs them
            shutil.copy(nb, folder / nb.name)
        try:
            api, info, secrets, user = _redacted_api()
            ref = dataset or f"{user}/{WHEEL_DATASET}"
            (folder / "dataset-metadata.json").write_text(json.dumps(
                {"id": ref, "title": "mattingkit wheel", "licenses": [{"name": "other"}]}), encoding="utf-8")
            exists = _dataset_exists(api, ref, secrets)
            with _guarded(secrets, True):
                if exists:
                    resp = api.dataset_create_version(str(folder), notes, quiet=True, dir_mode="skip")
                else:
                    resp = api.dataset_create_new(str(folder), public=False, quiet=True, dir_mode="skip")
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise _kernel_error(e, ref, "publish the wheel dataset", info, secrets) from None
    error = redact(str(getattr(resp, "error", "") or ""), secrets)
    if error:
        raise KernelError("rejected", f"Kaggle rejected the dataset {ref}: {error}")
    if not quiet:
        print(f"{'new version of' if exists else 'created'} private dataset {ref} with {wheel.name}: "
              f"{getattr(resp, 'url', '') or 'https://www.kaggle.com/datasets/' + ref}")
    return ref

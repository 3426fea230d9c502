"""Kaggle downloads (competition files and datasets), Kaggle submissions and the alphamatting.com
training set — the engine behind notebook 01.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .. import env
from ..errors import MattingKitError
from .archive import ArchiveError, extract_archive, is_archive, read_marker

log = logging.getLogger(__name__)

RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api"
DEMO_HINT = ("Without network access, use the embedded demo data instead: `mattingkit demo-data` "
             "(or `make demo` for the whole pipeline) and `--config demo`.")
COLAB_HINT = ("On Colab: add KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY) as Colab secrets "
              "(the key icon), then run the notebook cell calling "
              "mattingkit.data.download.load_colab_secrets(). Colab secrets cannot be read inside "
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
class DownloadError(MattingKitError, RuntimeError):
    """A download failed; ``kind`` says why (see module docstring). The message holds no secret."""

    exit_code = 3

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


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


def _drop_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


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
        _drop_if_empty(partial)
        raise DownloadError(e.kind, redact(str(e), secrets)) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - mapped to a clear message below
        _drop_if_empty(partial)  # a partial file stays (hidden) so the next call can resume it
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


def _default_dest(name: str, dest: PathLike | None, environ: Mapping[str, str] | None) -> Path:
    return Path(dest) if dest is not None else env.data_root(environ) / name


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
    dest = _default_dest(name, dest, None)
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
    target = _default_dest(name, dest, environ)
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


def download_alphamatting(dest: PathLike | None = None, *, trimap_set: str = "Trimap1",
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
    dest = _default_dest("alphamatting", dest, environ)
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
        _drop_if_empty(archive_dir)
    log.info("alphamatting: %d photos in %s (trimaps: %s)", len(stems), dest, trimap_set)
    return dest


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


def _submit_error(exc: BaseException, slug: str, info: CredentialInfo, secrets: list[str]) -> SubmitError:
    """Map an exception from the kaggle client during a submission to a :class:`SubmitError`."""
    if isinstance(exc, DownloadError):
        return SubmitError(exc.kind, redact(str(exc), secrets))
    detail = redact(str(exc), secrets)
    status = _status_of(exc)
    said = f" (Kaggle said: {detail.strip()[:500]})" if detail.strip() else ""
    if status is not None:
        if status in (401, 429) or (status in (403, 404)):
            kind, msg = explain_http_error(status, slug, "competition", info.source, detail)
            if status == 404:
                msg += " (or it no longer accepts submissions)"
            return SubmitError(kind, msg)
        if 400 <= status < 500:
            return SubmitError("rejected", f"Kaggle rejected the submission to '{slug}' (HTTP {status}){said}.")
        return SubmitError("server", f"Kaggle server error (HTTP {status}){said} while submitting to '{slug}'; "
                           f"retry later (check {SUBMISSIONS_URL.format(slug=slug)} first: it may have arrived).")
    err = explain_exception(exc, slug, "competition", info, secrets)
    if err.kind == "offline":
        return SubmitError("offline", f"Cannot reach Kaggle to submit to '{slug}': no network connection "
                           f"({type(exc).__name__}). The CSV is unchanged; submit it when online.")
    return SubmitError(err.kind, f"Submitting to '{slug}' failed: {type(exc).__name__}: {detail}")


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
        from ..errors import InputDataError

        raise InputDataError(f"{csv}: submission CSV not found or empty (build it with `mattingkit submit`)")
    if not competition or "/" in competition:
        from ..errors import UsageError

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

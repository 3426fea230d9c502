"""Safe, idempotent extraction of zip and tar archives (tar, tar.gz / tgz, tar.bz2, tar.xz).

Downloaded archives are untrusted input. :func:`extract_archive` never lets a member escape the
destination folder and never leaves a half-extracted folder behind:

- **Names**: absolute paths (``/x``, ``\\x``, ``C:x``), ``..`` components (``/`` and ``\\`` both count
  as separators), NUL bytes and empty names are rejected.
- **Member types**: regular files and folders only. *All* links are rejected — symbolic links and
  hard links alike, wherever they point — because a link that is harmless on its own can redirect a
  later member out of the folder. ``links="skip"`` leaves them out instead (listed in the report).
  Device files, FIFOs and other special members are always rejected.
- **Bombs**: at most ``max_members`` members; the sum of the declared sizes and the bytes actually
  written while streaming are both capped by ``max_total_bytes``; a member that yields more bytes
  than it declared is rejected; the compression ratio (per zip member, and for the archive as a
  whole) may not exceed ``max_ratio`` once more than ``ratio_floor`` bytes are involved; overlapping
  zip entries (the "overlapped files" zip bomb) are rejected.
- **Nothing outside, nothing partial**: members are written into a hidden temp sibling folder
  (``.NAME.partial-XXXX`` beside ``dest``) which is renamed to ``dest`` only when everything went
  well; on any error it is deleted. File modes, owners and timestamps from the archive are not
  applied (no setuid surprises).
- **Idempotent**: a marker ``dest/.mattingkit-extracted.json`` records the archive's name, size and
  mtime; a second call with the same archive does nothing (``report.skipped`` is True).

Every rejection raises :class:`ArchiveError`, whose message names the archive and the offending member.

Example:
    >>> import tempfile, zipfile, os
    >>> d = tempfile.mkdtemp()
    >>> with zipfile.ZipFile(os.path.join(d, "a.zip"), "w") as z:
    ...     z.writestr("data/x.txt", "hello")
    >>> r = extract_archive(os.path.join(d, "a.zip"), os.path.join(d, "out"))
    >>> r.files, open(os.path.join(d, "out", "data", "x.txt")).read()
    (1, 'hello')
    >>> extract_archive(os.path.join(d, "a.zip"), os.path.join(d, "out")).skipped
    True
"""
from __future__ import annotations

import json
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import InputDataError

MARKER_NAME = ".mattingkit-extracted.json"
#: Default caps. Real image datasets compress about 1:1; deflate itself cannot exceed ~1032:1.
DEFAULT_MAX_MEMBERS = 200_000
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024**3
DEFAULT_MAX_RATIO = 200.0
DEFAULT_RATIO_FLOOR = 1024**2  # ratios are only judged once this many bytes are involved
_CHUNK = 1024**2
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

PathLike = str | os.PathLike


class ArchiveError(InputDataError):
    """An archive was rejected or could not be read; the message names the archive (and member)."""

    def __init__(self, archive: PathLike, reason: str, member: str | None = None):
        self.archive = str(archive)
        self.member = member
        self.reason = reason
        where = f"{self.archive}" + (f" (member {member!r})" if member is not None else "")
        super().__init__(f"{where}: {reason}")


@dataclass
class ExtractReport:
    """What :func:`extract_archive` did."""

    archive: Path
    dest: Path
    kind: str = ""                   # "zip" or "tar"
    files: int = 0
    dirs: int = 0
    bytes_written: int = 0
    skipped: bool = False            # True: already extracted (marker matched), nothing done
    skipped_links: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"{self.archive.name}: already extracted in {self.dest} (nothing to do)"
        s = (f"{self.archive.name}: {self.files} files, {self.dirs} folders, "
             f"{self.bytes_written / 1e6:.1f} MB -> {self.dest} in {self.seconds:.1f} s")
        if self.skipped_links:
            s += f"; {len(self.skipped_links)} links skipped"
        return s


def is_archive(path: PathLike) -> bool:
    """True if ``path`` is a file whose name ends with a supported archive suffix.

    Example:
        >>> is_archive("x.tar.gz"), is_archive("x.png")
        (True, False)
    """
    name = Path(path).name.lower()
    return name.endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: PathLike) -> str:
    """The archive's name without its archive suffix (``data.tar.gz`` -> ``data``).

    Example:
        >>> archive_stem("/x/aim-500.tar.gz")
        'aim-500'
    """
    name = Path(path).name
    for suf in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def _fingerprint(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_marker(dest: PathLike) -> dict | None:
    """The extraction marker in ``dest`` (a dict), or None when absent or unreadable."""
    p = Path(dest) / MARKER_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_extracted(archive: PathLike, dest: PathLike) -> bool:
    """True when ``dest`` holds a complete extraction of this very archive (same name, size, mtime)."""
    marker = read_marker(dest)
    if not marker:
        return False
    try:
        fp = _fingerprint(Path(archive))
    except OSError:
        return False
    return all(marker.get(k) == v for k, v in fp.items())


def safe_member_path(name: str) -> PurePosixPath:
    """Validate an archive member name and return it as a relative POSIX path.

    Raises ``ValueError`` (with the reason) for absolute paths, drive letters, ``..`` components,
    NUL bytes and empty names. ``\\`` counts as a separator too.

    Example:
        >>> str(safe_member_path("./a//b/c.png"))
        'a/b/c.png'
        >>> safe_member_path("../evil")
        Traceback (most recent call last):
        ...
        ValueError: path contains a '..' component
    """
    if "\x00" in name:
        raise ValueError("name contains a NUL byte")
    unified = name.replace("\\", "/")
    if unified.startswith("/"):
        raise ValueError("absolute path")
    if len(unified) >= 2 and unified[1] == ":" and unified[0].isalpha():
        raise ValueError("path starts with a drive letter")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError("path contains a '..' component")
    if not parts:
        raise ValueError("empty member name")
    return PurePosixPath(*parts)


class _Limits:
    """Running totals checked against the caps while streaming."""

    def __init__(self, archive: Path, max_members: int, max_total_bytes: int, max_ratio: float,
                 ratio_floor: int):
        self.archive = archive
        self.archive_size = max(archive.stat().st_size, 1)
        self.max_members = max_members
        self.max_total_bytes = max_total_bytes
        self.max_ratio = max_ratio
        self.ratio_floor = ratio_floor
        self.members = 0
        self.declared = 0
        self.written = 0

    def fail(self, reason: str, member: str | None = None):
        raise ArchiveError(self.archive, reason, member)

    def count_member(self, name: str) -> None:
        self.members += 1
        if self.members > self.max_members:
            self.fail(f"too many members (more than max_members={self.max_members})", name)

    def declare(self, name: str, size: int) -> None:
        if size < 0:
            self.fail(f"negative declared size {size}", name)
        self.declared += size
        if self.declared > self.max_total_bytes:
            self.fail(f"declared uncompressed size exceeds max_total_bytes={self.max_total_bytes} "
                      f"({self.declared} bytes declared so far)", name)

    def add_written(self, name: str, n: int) -> None:
        self.written += n
        if self.written > self.max_total_bytes:
            self.fail(f"more than max_total_bytes={self.max_total_bytes} bytes of output", name)
        if self.written > self.ratio_floor and self.written > self.max_ratio * self.archive_size:
            self.fail(f"archive expands more than max_ratio={self.max_ratio:g} times its size "
                      f"({self.written} bytes from a {self.archive_size}-byte archive); a compression "
                      "bomb? Raise max_ratio if this archive is trusted", name)


def _write_stream(src, target: Path, name: str, declared: int, limits: _Limits,
                  compressed: int | None) -> int:
    """Copy ``src`` to ``target`` in chunks, enforcing the declared size and the ratio limits."""
    n = 0
    with open(target, "xb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > declared:
                limits.fail(f"member yields more bytes than its declared size {declared}", name)
            if (compressed is not None and n > limits.ratio_floor
                    and n > limits.max_ratio * max(compressed, 1)):
                limits.fail(f"member compression ratio exceeds max_ratio={limits.max_ratio:g} "
                            f"({n} bytes from {compressed} compressed); a compression bomb? "
                            "Raise max_ratio if this archive is trusted", name)
            limits.add_written(name, len(chunk))
            out.write(chunk)
    if n != declared:
        limits.fail(f"member is truncated ({n} of {declared} declared bytes)", name)
    return n


def _prepare_target(root: Path, rel: PurePosixPath, archive: Path, name: str) -> Path:
    target = root.joinpath(*rel.parts)
    # Belt and braces: lexical containment (no links are ever created, so this is exact).
    if os.path.commonpath([os.path.abspath(target), os.path.abspath(root)]) != os.path.abspath(root):
        raise ArchiveError(archive, "path escapes the destination", name)
    return target


def _mkdirs(path: Path, archive: Path, name: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArchiveError(archive, "a file and a folder with the same path", name) from None


def _extract_zip(archive: Path, root: Path, report: ExtractReport, limits: _Limits, links: str) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(archive, f"not a valid zip file ({e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            limits.fail(f"too many members ({len(infos)} > max_members={limits.max_members})")
        # Overlapping entries: each member's data must end before the next local header starts.
        by_offset = sorted(infos, key=lambda i: i.header_offset)
        for a, b in zip(by_offset, by_offset[1:]):
            if b.header_offset < a.header_offset + 30 + a.compress_size:
                limits.fail("overlapping zip entries (a zip bomb construction)", b.filename)
        plan = []
        for info in infos:
            name = info.filename
            try:
                rel = safe_member_path(name)
            except ValueError as e:
                limits.fail(f"unsafe member name: {e}", name)
            mode = (info.external_attr >> 16) & 0xFFFF
            ftype = stat.S_IFMT(mode)
            if ftype == stat.S_IFLNK:
                if links == "skip":
                    report.skipped_links.append(name)
                    continue
                limits.fail("symbolic link (links are not allowed in archives)", name)
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                limits.fail("special file (device, FIFO or socket) is not allowed", name)
            if info.flag_bits & 0x1:
                limits.fail("encrypted member (password-protected zips are not supported)", name)
            is_dir = info.is_dir() or ftype == stat.S_IFDIR
            if not is_dir:
                limits.declare(name, info.file_size)
                if (info.file_size > limits.ratio_floor
                        and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
                    limits.fail(f"declared compression ratio exceeds max_ratio={limits.max_ratio:g} "
                                f"({info.file_size} bytes from {info.compress_size}); a compression "
                                "bomb? Raise max_ratio if this archive is trusted", name)
            plan.append((info, rel, is_dir))
        for info, rel, is_dir in plan:
            name = info.filename
            limits.count_member(name)
            target = _prepare_target(root, rel, archive, name)
            if is_dir:
                _mkdirs(target, archive, name)
                report.dirs += 1
                continue
            _mkdirs(target.parent, archive, name)
            if target.exists():
                target.unlink()  # a repeated name: the later member wins, as with unzip
            try:
                with zf.open(info) as src:
                    _write_stream(src, target, name, info.file_size, limits, info.compress_size)
            except ArchiveError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
                raise ArchiveError(archive, f"corrupt or unsupported member ({e})", name) from None
            except IsADirectoryError:
                raise ArchiveError(archive, "a file and a folder with the same path", name) from None
            except OSError as e:  # disk full, permissions
                raise ArchiveError(archive, f"cannot write ({e.strerror or e})", name) from None
            report.files += 1


def _extract_tar(archive: Path, root: Path, report: ExtractReport, limits: _Limits, links: str) -> None:
    try:
        tf = tarfile.open(archive, mode="r|*")
    except (tarfile.TarError, OSError) as e:
        raise ArchiveError(archive, f"not a valid tar archive ({e})") from None
    name = None  # the member being read when the archive turns out corrupt or truncated
    try:
        with tf:
            for m in tf:
                name = m.name
                limits.count_member(name)
                try:
                    rel = safe_member_path(name)
                except ValueError as e:
                    limits.fail(f"unsafe member name: {e}", name)
                if m.issym() or m.islnk():
                    kind = "symbolic link" if m.issym() else "hard link"
                    if links == "skip":
                        report.skipped_links.append(name)
                        continue
                    limits.fail(f"{kind} to {m.linkname!r} (links are not allowed in archives)", name)
                if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                    limits.fail("special file (device or FIFO) is not allowed", name)
                if m.type in (tarfile.GNUTYPE_SPARSE,) or m.issparse():
                    limits.fail("sparse member is not supported", name)
                target = _prepare_target(root, rel, archive, name)
                if m.isdir():
                    _mkdirs(target, archive, name)
                    report.dirs += 1
                    continue
                if not m.isfile():
                    limits.fail(f"unsupported member type {m.type!r}", name)
                limits.declare(name, m.size)
                _mkdirs(target.parent, archive, name)
                if target.is_dir():
                    limits.fail("a file and a folder with the same path", name)
                if target.exists():
                    target.unlink()
                src = tf.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    limits.fail("member has no data", name)
                _write_stream(src, target, name, m.size, limits, None)
                report.files += 1
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise ArchiveError(archive, f"corrupt or truncated tar archive ({e})", name) from None
    except OSError as e:  # gzip.BadGzipFile, or the disk (full, permissions)
        detail = e.strerror if e.errno is not None else str(e)
        raise ArchiveError(archive, f"cannot extract: corrupt archive or disk problem ({detail})", name) from None


def _detect_kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except (OSError, tarfile.TarError):
        pass
    raise ArchiveError(archive, "not a zip or tar archive (supported: " + ", ".join(ARCHIVE_SUFFIXES) + ")")


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def extract_archive(
    archive: PathLike,
    dest: PathLike,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
    ratio_floor: int = DEFAULT_RATIO_FLOOR,
    links: str = "reject",
    overwrite: bool = False,
) -> ExtractReport:
    """Extract a zip / tar archive into ``dest`` safely, atomically and only once.

    ``dest`` must not exist, be empty, or hold an earlier extraction made by this function (its
    marker file); anything else is an error unless ``overwrite=True`` (then the old folder is
    replaced once the new extraction is complete). ``links``: ``"reject"`` (default) or ``"skip"``.

    Example:
        >>> import tempfile, tarfile, io, os
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "t.tar.gz")
        >>> with tarfile.open(p, "w:gz") as t:
        ...     info = tarfile.TarInfo("../evil.txt"); info.size = 1
        ...     t.addfile(info, io.BytesIO(b"x"))
        >>> try:
        ...     extract_archive(p, os.path.join(d, "out"))
        ... except ArchiveError as e:
        ...     print(e.member, "|", e.reason, "|", os.path.exists(os.path.join(d, "out")))
        ../evil.txt | unsafe member name: path contains a '..' component | False
    """
    archive = Path(archive)
    dest = Path(dest)
    if links not in ("reject", "skip"):
        raise ValueError(f"links must be 'reject' or 'skip', got {links!r}")
    if not archive.is_file():
        raise ArchiveError(archive, "archive file not found")
    report = ExtractReport(archive=archive, dest=dest)
    if dest.is_dir() and is_extracted(archive, dest):
        report.skipped = True
        report.kind = str(read_marker(dest).get("kind", ""))
        return report
    if dest.exists() and not dest.is_dir():
        raise ArchiveError(archive, f"destination {dest} exists and is not a folder")
    replace_old = False
    if dest.is_dir() and any(dest.iterdir()):
        if read_marker(dest) is None and not overwrite:
            raise ArchiveError(archive, f"destination {dest} is not empty and was not extracted by "
                               "mattingkit; choose another folder or pass overwrite=True")
        replace_old = True  # an older extraction of ours (or overwrite=True): replace when done

    t0 = time.perf_counter()
    kind = _detect_kind(archive)
    report.kind = kind
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the final folder should be an ordinary one
        limits = _Limits(archive, max_members, max_total_bytes, max_ratio, ratio_floor)
        if kind == "zip":
            _extract_zip(archive, tmp, report, limits, links)
        else:
            _extract_tar(archive, tmp, report, limits, links)
        report.bytes_written = limits.written
        marker = {**_fingerprint(archive), "kind": kind, "files": report.files, "dirs": report.dirs,
                  "bytes": report.bytes_written, "skipped_links": report.skipped_links[:100],
                  "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if dest.is_dir():
            if replace_old:
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
                os.replace(dest, old / dest.name)
                os.replace(tmp, dest)
                _rmtree(old)
            else:
                dest.rmdir()  # empty
                os.replace(tmp, dest)
        else:
            os.replace(tmp, dest)
    except BaseException:
        _rmtree(tmp)
        raise
    report.seconds = time.perf_counter() - t0
    return report

"""Safe archive extraction: malicious archives are rejected, nothing lands outside, no partial target."""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from mattingkit.data.archive import (
    MARKER_NAME,
    ArchiveError,
    extract_archive,
    is_extracted,
    safe_member_path,
)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def add_tar_bytes(t: tarfile.TarFile, name: str, data: bytes, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    t.addfile(info, io.BytesIO(data))


def add_tar_special(t: tarfile.TarFile, name: str, type_: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    t.addfile(info)


def assert_rejected(archive: Path, dest: Path, work: Path, member_part: str, **kw) -> ArchiveError:
    """Extraction fails naming archive + member; the work folder is unchanged (no partial, no outside)."""
    before = snapshot(work)
    with pytest.raises(ArchiveError) as ei:
        extract_archive(archive, dest, **kw)
    err = ei.value
    assert archive.name in str(err)
    assert member_part in str(err), str(err)
    assert not dest.exists(), "a rejected extraction must not leave the target folder"
    assert snapshot(work) == before, f"files appeared: {snapshot(work) - before}"
    return err


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A nested work folder, so '../..' escapes still land inside tmp_path where we can look."""
    w = tmp_path / "a" / "b"
    w.mkdir(parents=True)
    return w


# ------------------------------------------------------------------------------------------
# good archives
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz"])
def test_good_archive_extracted_once_then_noop(work: Path, fmt: str):
    files = {"ds/images/0001.jpg": os.urandom(3000), "ds/masks/0001.png": b"m" * 10, "top.txt": b"hi"}
    arc = work / f"good.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("ds/", "")
            for n, d in files.items():
                z.writestr(n, d)
    else:
        mode = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[fmt]
        with tarfile.open(arc, mode) as t:
            for n, d in files.items():
                add_tar_bytes(t, n, d, mode=0o4755)  # setuid bit in the archive must not be applied
    dest = work / "out"
    r = extract_archive(arc, dest)
    assert not r.skipped and r.files == 3 and r.bytes_written == sum(map(len, files.values()))
    for n, d in files.items():
        assert (dest / n).read_bytes() == d
        assert not (dest / n).stat().st_mode & stat.S_ISUID
    marker = json.loads((dest / MARKER_NAME).read_text())
    assert marker["archive"] == arc.name and marker["size"] == arc.stat().st_size
    assert is_extracted(arc, dest)
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []  # no temp leftovers

    # second run: nothing is touched (a local edit survives)
    (dest / "top.txt").write_bytes(b"edited")
    r2 = extract_archive(arc, dest)
    assert r2.skipped and r2.files == 0
    assert (dest / "top.txt").read_bytes() == b"edited"


def test_changed_archive_is_reextracted(work: Path):
    arc = work / "d.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("x.txt", "one")
    dest = work / "out"
    extract_archive(arc, dest)
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("y.txt", "two, longer")
    os.utime(arc, ns=(1, 10**18))  # make the fingerprint surely differ
    r = extract_archive(arc, dest)
    assert not r.skipped
    assert (dest / "y.txt").read_text() == "two, longer"
    assert not (dest / "x.txt").exists()  # the old extraction was replaced, not merged
    assert {p.name for p in work.iterdir()} == {"d.zip", "out"}  # no temp or old-copy leftovers


def test_foreign_nonempty_destination_refused_unless_overwrite(work: Path):
    arc = work / "d.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("x.txt", "new")
    dest = work / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("user data")
    with pytest.raises(ArchiveError, match="not empty"):
        extract_archive(arc, dest)
    assert (dest / "mine.txt").read_text() == "user data"
    extract_archive(arc, dest, overwrite=True)
    assert (dest / "x.txt").read_text() == "new" and not (dest / "mine.txt").exists()


def test_links_skip_mode_lists_them(work: Path):
    arc = work / "l.tar"
    with tarfile.open(arc, "w") as t:
        add_tar_bytes(t, "ok.txt", b"fine")
        add_tar_special(t, "link", tarfile.SYMTYPE, "ok.txt")
    r = extract_archive(arc, work / "out", links="skip")
    assert r.skipped_links == ["link"] and r.files == 1
    assert not (work / "out" / "link").exists() and not (work / "out" / "link").is_symlink()


# ------------------------------------------------------------------------------------------
# malicious archives
# ------------------------------------------------------------------------------------------
def test_zip_slip_rejected(work: Path):
    arc = work / "slip.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("fine.txt", "ok")
        z.writestr("../../evil.txt", "pwned")
    assert_rejected(arc, work / "out", work.parents[1], "../../evil.txt")
    assert not (work.parents[1] / "evil.txt").exists()


def test_zip_backslash_slip_rejected(work: Path):
    arc = work / "slip.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("..\\..\\evil.txt", "pwned")
    assert_rejected(arc, work / "out", work.parents[1], "evil.txt")


def test_tar_slip_rejected(work: Path):
    arc = work / "slip.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        add_tar_bytes(t, "fine.txt", b"ok")
        add_tar_bytes(t, "sub/../../../evil.txt", b"pwned")
    assert_rejected(arc, work / "out", work.parents[1], "evil.txt")


def test_absolute_paths_rejected(work: Path, tmp_path: Path):
    target = tmp_path / "abs_evil.txt"
    arc = work / "abs.tar"
    with tarfile.open(arc, "w") as t:
        add_tar_bytes(t, str(target), b"pwned")
    assert_rejected(arc, work / "out", tmp_path, "abs_evil.txt")
    arcz = work / "abs.zip"
    with zipfile.ZipFile(arcz, "w") as z:
        # zipfile strips a leading '/' when writing, so write the raw name through a ZipInfo
        info = zipfile.ZipInfo("placeholder")
        z.writestr(info, "pwned")
    raw = arcz.read_bytes().replace(b"placeholder", b"/tmp/abs_xy")  # same length (11 bytes)
    arcz.write_bytes(raw)
    assert_rejected(arcz, work / "out", tmp_path, "/tmp/abs_xy")
    assert not target.exists()


def test_tar_symlink_outside_rejected(work: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    arc = work / "sym.tar"
    with tarfile.open(arc, "w") as t:
        add_tar_special(t, "link", tarfile.SYMTYPE, str(outside))
        add_tar_bytes(t, "link/evil.txt", b"pwned")  # would be written through the link
    assert_rejected(arc, work / "out", tmp_path, "link")
    assert list(outside.iterdir()) == []


def test_tar_hardlink_outside_rejected(work: Path, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    arc = work / "hard.tar"
    with tarfile.open(arc, "w") as t:
        add_tar_special(t, "copy.txt", tarfile.LNKTYPE, "../../../secret.txt")
    err = assert_rejected(arc, work / "out", tmp_path, "copy.txt")
    assert "hard link" in str(err)
    assert secret.read_text() == "secret"


def test_zip_symlink_rejected(work: Path):
    arc = work / "sym.zip"
    with zipfile.ZipFile(arc, "w") as z:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    err = assert_rejected(arc, work / "out", work, "link")
    assert "symbolic link" in str(err)


def test_device_file_rejected(work: Path):
    arc = work / "dev.tar"
    with tarfile.open(arc, "w") as t:
        add_tar_special(t, "null", tarfile.CHRTYPE)
    assert "special file" in str(assert_rejected(arc, work / "out", work, "null"))
    arcf = work / "fifo.tar"
    with tarfile.open(arcf, "w") as t:
        add_tar_special(t, "pipe", tarfile.FIFOTYPE)
    assert_rejected(arcf, work / "out", work, "pipe")


def _patch_zip_sizes(path: Path, name: bytes, new_size: int) -> None:
    """Rewrite the uncompressed size of member ``name`` in both its local and central headers."""
    raw = bytearray(path.read_bytes())
    # local file header: signature PK\x03\x04, uncompressed size at offset 22
    lh = raw.find(b"PK\x03\x04")
    assert raw[lh + 30: lh + 30 + len(name)] == name
    struct.pack_into("<I", raw, lh + 22, new_size)
    # central directory header: signature PK\x01\x02, uncompressed size at offset 24
    cd = raw.find(b"PK\x01\x02")
    assert raw[cd + 46: cd + 46 + len(name)] == name
    struct.pack_into("<I", raw, cd + 24, new_size)
    path.write_bytes(bytes(raw))


def test_zip_huge_declared_size_rejected_before_writing(work: Path):
    arc = work / "huge.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.bin", b"\0" * 1000)
    _patch_zip_sizes(arc, b"big.bin", 0xFFFFFF00)  # declares ~4.3 GB
    err = assert_rejected(arc, work / "out", work, "big.bin")
    assert "declared" in str(err)
    # and with a lower total cap, the declared-total check names it too
    err = assert_rejected(arc, work / "out", work, "big.bin", max_ratio=1e12, max_total_bytes=10**9)
    assert "max_total_bytes" in str(err)


def test_zip_size_lie_smaller_than_data_rejected(work: Path):
    arc = work / "lie.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.bin", os.urandom(5000))
    _patch_zip_sizes(arc, b"a.bin", 100)
    assert_rejected(arc, work / "out", work, "a.bin")


def test_too_many_members_rejected(work: Path):
    arc = work / "many.zip"
    with zipfile.ZipFile(arc, "w") as z:
        for i in range(30):
            z.writestr(f"f{i}.txt", "x")
    err = assert_rejected(arc, work / "out", work, "", max_members=20)
    assert "too many members" in str(err)
    arct = work / "many.tar"
    with tarfile.open(arct, "w") as t:
        for i in range(30):
            add_tar_bytes(t, f"f{i}.txt", b"x")
    err = assert_rejected(arct, work / "out", work, "f20.txt", max_members=20)
    assert "too many members" in str(err)


def test_real_high_ratio_zip_rejected_with_defaults(work: Path):
    arc = work / "bomb.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "innocent")
        z.writestr("zeros.bin", b"\0" * (20 * 1024**2))  # 20 MB -> ~20 KB, ratio ~1000
    ratio = (20 * 1024**2) / zipfile.ZipFile(arc).getinfo("zeros.bin").compress_size
    assert ratio > 500  # the file really is bomb-like
    err = assert_rejected(arc, work / "out", work, "zeros.bin")
    assert "ratio" in str(err)


def test_high_ratio_tar_rejected_while_streaming(work: Path):
    arc = work / "bomb.tar.bz2"
    with tarfile.open(arc, "w:bz2") as t:
        add_tar_bytes(t, "ok.txt", b"fine")
        add_tar_bytes(t, "zeros.bin", b"\0" * (8 * 1024**2))
    assert arc.stat().st_size < 8 * 1024**2 / 1000
    err = assert_rejected(arc, work / "out", work, "zeros.bin")
    assert "max_ratio" in str(err)
    # the same archive is fine when the caller trusts it (and the output is correct)
    r = extract_archive(arc, work / "out", max_ratio=1e9)
    assert r.files == 2 and (work / "out" / "zeros.bin").stat().st_size == 8 * 1024**2


def test_total_bytes_cap_while_streaming(work: Path):
    arc = work / "big.tar"
    with tarfile.open(arc, "w") as t:
        for i in range(5):
            add_tar_bytes(t, f"f{i}.bin", os.urandom(4000))
    err = assert_rejected(arc, work / "out", work, "f2.bin", max_total_bytes=10_000)
    assert "max_total_bytes" in str(err)


def test_corrupt_archives_rejected(work: Path):
    good = work / "g.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.bin", os.urandom(20000))
    bad = work / "truncated.zip"
    bad.write_bytes(good.read_bytes()[:8000])
    assert_rejected(bad, work / "out", work, "")
    junk = work / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive at all" * 10)
    assert "not a zip or tar" in str(assert_rejected(junk, work / "out", work, ""))
    tgz = work / "t.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        add_tar_bytes(t, "a.bin", os.urandom(50000))
    cut = work / "cut.tar.gz"
    cut.write_bytes(tgz.read_bytes()[:20000])
    assert_rejected(cut, work / "out", work, "")


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/x", "C:\\x", "..\\x", "", "./", "a\x00b"])
def test_safe_member_path_rejects(name: str):
    with pytest.raises(ValueError):
        safe_member_path(name)


def test_safe_member_path_normalises():
    assert str(safe_member_path("./a//b/./c.png")) == "a/b/c.png"
    assert str(safe_member_path("a\\b.png")) == "a/b.png"

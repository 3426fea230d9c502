"""Hostile archives against mattingkit.data.archive.extract_archive (and the download path that uses it).

Every archive here is built byte by byte in a temp folder. For each one the whole temp tree is
snapshotted (content digests, link counts and modes included) before and after: a rejection must
name the archive and the member, create nothing, modify nothing (a hard link written *through* would
change an outside file's digest), and leave neither the target nor a ``.partial-`` folder behind.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from relkit import tree_diff, tree_state

from mattingkit.data.archive import MARKER_NAME, ArchiveError, extract_archive

pytestmark = pytest.mark.reliability


# ------------------------------------------------------------------------------------------
# builders
# ------------------------------------------------------------------------------------------
def _tar(path: Path, members: list[tuple], fmt=tarfile.GNU_FORMAT, mode: str = "w") -> Path:
    """members: (name, data) regular files; (name, data, {attr: value}) with TarInfo attributes (e.g.
    pax_headers); (name, TYPE, linkname) with a tarfile type constant for links and special files."""
    with tarfile.open(path, mode, format=fmt) as t:
        for m in members:
            info = tarfile.TarInfo(m[0])
            if len(m) == 3 and isinstance(m[2], str):      # link / special member
                info.type, info.linkname = m[1], m[2]
                t.addfile(info)
                continue
            for k, v in (m[2] if len(m) == 3 else {}).items():
                setattr(info, k, v)
            info.size = len(m[1])
            t.addfile(info, io.BytesIO(m[1]))
    return path


def _zip(path: Path, members: list[tuple], compression=zipfile.ZIP_DEFLATED) -> Path:
    """members: (name, bytes) or (name, bytes, unix_mode) — a mode with S_IFLNK makes a symlink entry."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for m in members:
            info = zipfile.ZipInfo(m[0])
            info.compress_type = compression
            if len(m) == 3:
                info.create_system = 3
                info.external_attr = m[2] << 16
            z.writestr(info, m[1])
    return path


def _patch_zip_sizes(data: bytes, file_size: int) -> bytes:
    """Rewrite the declared uncompressed size of every entry (local headers and central directory)."""
    out = bytearray(data)
    pos = 0
    while (pos := out.find(b"PK\x03\x04", pos)) != -1:
        struct.pack_into("<I", out, pos + 22, file_size)
        pos += 4
    pos = 0
    while (pos := out.find(b"PK\x01\x02", pos)) != -1:
        struct.pack_into("<I", out, pos + 24, file_size)
        pos += 4
    return bytes(out)


def _overlapping_zip(path: Path, n_aliases: int = 5) -> Path:
    """The "overlapped files" bomb: several central-directory entries pointing at one compressed blob."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("k0", b"\0" * 200_000)
    data = buf.getvalue()
    eocd = data.rfind(b"PK\x05\x06")
    cd_size, cd_off = struct.unpack_from("<II", data, eocd + 12)
    entry = data[cd_off:cd_off + cd_size]
    entries = [entry] + [entry.replace(b"k0", f"k{i}".encode(), 1) for i in range(1, n_aliases)]
    cd = b"".join(entries)
    tail = bytearray(data[eocd:])
    struct.pack_into("<HHII", tail, 8, len(entries), len(entries), len(cd), cd_off)
    path.write_bytes(data[:cd_off] + cd + bytes(tail))
    return path


def _targz_bomb(path: Path, megabytes: int) -> Path:
    """A real tar.gz compression bomb: ``megabytes`` MB of zeros compress ~1000:1."""
    import gzip

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("zeros.bin")
        info.size = megabytes * 1024 * 1024
        t.addfile(info, io.BytesIO(b"\0" * info.size))
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    return path


@pytest.fixture
def arena(tmp_path: Path):
    """``(work, outside)``: the archives and targets live in work = tmp/a/b; ``outside`` = tmp/outside
    holds a victim file; '../..' escapes still land inside tmp_path where the snapshot sees them."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original content")
    return work, outside


def _hostile(work: Path, outside: Path) -> dict[str, tuple[Path, str, dict]]:
    """name -> (archive, text the error must contain, extra kwargs)."""
    W = work
    out_abs = str(outside / "abs_pwned.txt")
    victim = str(outside / "victim.txt")
    rel_victim = os.path.relpath(victim, W / "dest")
    big = b"\0" * (8 * 1024 * 1024)
    c = {}
    # --- zip-slip and absolute paths
    c["zip_dotdot"] = (_zip(W / "dotdot.zip", [("ok.txt", b"ok"), ("../../../outside/zs.txt", b"x")]), "..", {})
    c["zip_dotdot_middle"] = (_zip(W / "mid.zip", [("a/b/../../../../zs2.txt", b"x")]), "..", {})
    c["zip_backslash"] = (_zip(W / "bs.zip", [("..\\..\\..\\outside\\bs.txt", b"x")]), "..", {})
    c["zip_absolute"] = (_zip(W / "abs.zip", [(out_abs, b"x")]), "absolute", {})
    c["zip_drive"] = (_zip(W / "drive.zip", [("C:\\Windows\\x.txt", b"x")]), "drive letter", {})
    c["tar_dotdot"] = (_tar(W / "dotdot.tar", [("ok.txt", b"ok"), ("../../../outside/ts.txt", b"x")]), "..", {})
    c["tar_absolute"] = (_tar(W / "abs.tar.gz", [(out_abs, b"x")], mode="w:gz"), "absolute", {})
    c["tar_pax_path"] = (_tar(W / "pax.tar", [("innocent.txt", b"x", {"pax_headers": {"path": "../../px.txt"}})],
                              fmt=tarfile.PAX_FORMAT), "..", {})
    c["tar_gnu_longname"] = (_tar(W / "long.tar.bz2", [("d" * 120 + "/../../../../../ln.txt", b"x")], mode="w:bz2"),
                             "..", {})
    # --- links pointing outside (and the write-through that would follow them)
    c["tar_symlink_out"] = (_tar(W / "sl.tar", [("sl", tarfile.SYMTYPE, str(outside)), ("sl/pwned.txt", b"x")]),
                            "symbolic link", {})
    c["tar_symlink_rel"] = (_tar(W / "slr.tar.xz", [("up", tarfile.SYMTYPE, "../../.."), ("up/outside/p.txt", b"x")],
                                 mode="w:xz"), "symbolic link", {})
    c["tar_hardlink_abs"] = (_tar(W / "hl.tar", [("hl", tarfile.LNKTYPE, victim), ("hl", b"pwned")]),
                             "hard link", {})
    c["tar_hardlink_rel"] = (_tar(W / "hlr.tar", [("hl", tarfile.LNKTYPE, rel_victim), ("hl", b"pwned")]),
                             "hard link", {})
    c["zip_symlink_out"] = (_zip(W / "sl.zip", [("sl", str(outside).encode(), stat.S_IFLNK | 0o777),
                                                 ("sl/pwned.txt", b"x")]), "symbolic link", {})
    c["tar_fifo"] = (_tar(W / "fifo.tar", [("pipe", tarfile.FIFOTYPE, "")]), "special file", {})
    # --- bombs
    forged = io.BytesIO()
    with zipfile.ZipFile(forged, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("huge.bin", big)
    (W / "forged.zip").write_bytes(_patch_zip_sizes(forged.getvalue(), 0xFFFF_FFF0))  # "4 GB" declared
    c["zip_declared_4gb"] = (W / "forged.zip", "compression ratio", {})
    c["zip_declared_over_cap"] = (W / "forged.zip", "max_total_bytes", {"max_total_bytes": 1024**3})
    c["zip_real_bomb"] = (_zip(W / "bomb.zip", [("zeros.bin", big)]), "ratio", {})
    c["zip_overlapping"] = (_overlapping_zip(W / "overlap.zip"), "overlap", {})
    c["targz_real_bomb"] = (_targz_bomb(W / "bomb.tar.gz", 8), "max_ratio", {})
    lie = io.BytesIO()
    with zipfile.ZipFile(lie, "w", zipfile.ZIP_STORED) as z:
        z.writestr("lie.bin", b"A" * 5000)
    (W / "lie.zip").write_bytes(_patch_zip_sizes(lie.getvalue(), 10))  # declares 10 bytes, holds 5000
    c["zip_size_lie"] = (W / "lie.zip", "lie.bin", {})
    tar_huge = io.BytesIO()
    with tarfile.open(fileobj=tar_huge, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("huge.bin")
        info.size = 7 * 1024**3                       # declared, never provided
        t.addfile(info)                                # header only: the archive ends early
    (W / "huge.tar").write_bytes(tar_huge.getvalue())
    c["tar_declared_over_cap"] = (W / "huge.tar", "max_total_bytes", {"max_total_bytes": 1024**3})
    c["tar_declared_truncated"] = (W / "huge.tar", "huge.bin", {})
    # --- too many members
    many = [(f"f{i:03d}.txt", b"x") for i in range(60)]
    c["zip_too_many"] = (_zip(W / "many.zip", many), "too many members", {"max_members": 50})
    c["tar_too_many"] = (_tar(W / "many.tar.gz", many, mode="w:gz"), "too many members", {"max_members": 50})
    return c


# ------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------
def test_every_hostile_archive_is_rejected_cleanly(arena):
    """One arena, ~28 hostile archives: each rejected with a message naming archive (and member),
    nothing written or modified anywhere, no target and no partial folder left."""
    work, outside = arena
    root = work.parent.parent
    cases = _hostile(work, outside)
    failures = []
    for name, (archive, expect, kw) in cases.items():
        dest = work / "dest"
        before = tree_state(root)
        try:
            extract_archive(archive, dest, **kw)
        except ArchiveError as e:
            msg = str(e)
            if archive.name not in msg or expect not in msg:
                failures.append(f"{name}: unclear message {msg!r} (want {expect!r})")
        except Exception as e:  # noqa: BLE001 - anything but ArchiveError is a failure to report
            failures.append(f"{name}: {type(e).__name__} instead of ArchiveError: {e}")
        else:
            failures.append(f"{name}: was extracted")
        after = tree_state(root)
        if after != before:
            failures.append(f"{name}: the tree changed: {tree_diff(before, after)}")
        if dest.exists():
            failures.append(f"{name}: target folder left behind")
    assert (outside / "victim.txt").read_text() == "original content"
    assert not failures, "\n".join(failures)


def test_member_named_in_the_error(arena):
    work, outside = arena
    a = _zip(work / "x.zip", [("fine.txt", b"1"), ("sub/../../evil.txt", b"2")])
    with pytest.raises(ArchiveError) as ei:
        extract_archive(a, work / "dest")
    assert ei.value.member == "sub/../../evil.txt" and "'sub/../../evil.txt'" in str(ei.value)


def test_failed_reextraction_keeps_the_previous_extraction_intact(arena):
    """A good extraction, then a hostile archive into the same target: the old content survives
    byte for byte (the new one is built beside it and swapped in only on success)."""
    work, outside = arena
    good = _zip(work / "good.zip", [("data/a.txt", b"alpha"), ("data/b.txt", b"beta")])
    dest = work / "dest"
    extract_archive(good, dest)
    cases = _hostile(work, outside)
    before = tree_state(work.parent.parent)  # the hostile archives now exist too
    for name in ("tar_hardlink_abs", "zip_real_bomb", "zip_dotdot", "tar_too_many"):
        archive, expect, kw = cases[name]
        with pytest.raises(ArchiveError):
            extract_archive(archive, dest, overwrite=True, **kw)
        assert tree_state(work.parent.parent) == before, name
    assert (dest / "data" / "a.txt").read_bytes() == b"alpha"
    assert (dest / MARKER_NAME).exists()


def test_download_path_rejects_a_hostile_archive(arena, monkeypatch):
    """The Kaggle download step extracts through the same code: a hostile archive already in the
    downloads folder (e.g. a poisoned mirror) becomes a DownloadError naming the member, with no target."""
    from mattingkit import kaggle as dl

    work, outside = arena
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(work / "home"))
    downloads = work / "data" / "downloads"
    downloads.mkdir(parents=True)
    _zip(downloads / "comp.zip", [("train_dataset/images/0001.jpg", b"x"), ("../../../../outside/p.txt", b"x")])
    before = tree_state(work.parent.parent)
    with pytest.raises(dl.DownloadError) as ei:
        dl.download_competition("comp", work / "data" / "comp")
    assert "../../../../outside/p.txt" in str(ei.value) and "comp.zip" in str(ei.value)
    assert tree_state(work.parent.parent) == before
    assert not (work / "data" / "comp").exists()


def test_many_small_members_within_limits_are_fine(arena):
    """The limits do not misfire: 60 members under max_members=60, ratio ~1 data, all extracted."""
    work, _ = arena
    rng = __import__("numpy").random.default_rng(0)
    members = [(f"d{i % 3}/f{i:03d}.bin", rng.integers(0, 256, 3000, dtype="uint8").tobytes()) for i in range(60)]
    a = _zip(work / "ok.zip", members)
    rep = extract_archive(a, work / "dest", max_members=60)
    assert rep.files == 60
    for name, data in members:
        assert (work / "dest" / name).read_bytes() == data

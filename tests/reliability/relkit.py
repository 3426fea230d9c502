"""Helpers shared by the reliability suite: file-tree snapshots, secret encodings, hostile files.

Plain functions (no fixtures) so each test file can import what it needs: ``from relkit import ...``
(pytest puts this folder on ``sys.path``).
"""
from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import struct
import sys
import urllib.parse
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


# --------------------------------------------------------------------------------------------
# File trees
# --------------------------------------------------------------------------------------------
def tree_state(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Every entry under ``root`` (symlinks not followed): relative path -> (kind, content digest / link
    target, mode). Two snapshots are equal only when nothing was created, removed or modified."""
    out: dict[str, tuple] = {}
    skip_s = tuple(str(s) for s in skip)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if str(p).startswith(skip_s):
                continue
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode & 0o7777, st.st_nlink)
    return out


def tree_diff(before: dict, after: dict) -> str:
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"new={new[:10]} gone={gone[:10]} changed={changed[:10]}"


# --------------------------------------------------------------------------------------------
# Secrets: every way a value could be written
# --------------------------------------------------------------------------------------------
def b64_fragments(secret: bytes) -> set[bytes]:
    """The base64 text that ``secret`` produces wherever it sits inside a longer base64-encoded blob:
    for each of the 3 byte alignments, only the characters fully determined by the secret's bytes."""
    out = set()
    n = len(secret)
    for k in range(3):
        for alphabet in (base64.b64encode, base64.urlsafe_b64encode):
            enc = alphabet(b"\0" * k + secret)
            lo = math.ceil(8 * k / 6)
            hi = (8 * (k + n)) // 6
            frag = enc[lo:hi]
            if len(frag) >= 8:
                out.add(frag)
    return out


def secret_forms(secret: str, user: str | None = None) -> dict[str, bytes]:
    """Byte patterns to search for: raw, URL-encoded (quote / quote_plus), base64 at every alignment
    (standard and URL-safe alphabets), hex, UTF-16, JSON-escaped, and the HTTP Basic-auth value when a
    user name is given."""
    raw = secret.encode()
    forms = {"raw": raw, "url": urllib.parse.quote(secret, safe="").encode(),
             "url_plus": urllib.parse.quote_plus(secret).encode(), "hex": raw.hex().encode(),
             "utf16": secret.encode("utf-16-le")}
    for i, frag in enumerate(sorted(b64_fragments(raw))):
        forms[f"base64_{i}"] = frag
    if user is not None:
        basic = f"{user}:{secret}".encode()
        forms["basic_auth"] = base64.b64encode(basic)
        for i, frag in enumerate(sorted(b64_fragments(basic))):
            forms[f"basic_{i}"] = frag
    return forms


def scan_for_secrets(files: list[Path], secrets: dict[str, str], user: str | None = None) -> list[str]:
    """``"file: secret-name as form"`` for every occurrence of any form of any secret in ``files``."""
    patterns = [(name, form, pat) for name, value in secrets.items()
                for form, pat in secret_forms(value, user).items()]
    hits = []
    for f in files:
        data = f.read_bytes()
        low = data.lower()
        for name, form, pat in patterns:
            if pat in data or (form.startswith(("url", "hex")) and pat.lower() in low):
                hits.append(f"{f}: {name} as {form}")
    return sorted(set(hits))


# --------------------------------------------------------------------------------------------
# Hand-made image files
# --------------------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A complete-looking PNG (IHDR, one small IDAT, IEND) that *declares* ``width x height`` 8-bit gray
    pixels; only a few bytes of pixel data exist, so nothing big is ever allocated by writing it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 256)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bytes(rgb8: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb8).save(buf, "JPEG", **kw)
    return buf.getvalue()


def pil_bytes(img, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child Pythons: the repo importable, headless, CPU only, no Kaggle variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(PYTHONPATH=str(REPO), MATTINGKIT_HEADLESS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env

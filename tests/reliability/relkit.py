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
    """The environment for child Pythons: the repo importable, headless, CPU only, no Kaggle variables,
    one compute thread (the children run tiny tensors, often two at once: spinning OpenMP threads
    on a busy 2-core machine made them 4x slower)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(PYTHONPATH=str(REPO), MATTINGKIT_HEADLESS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# A tiny real Trainer (in-process, seconds): a 2-layer conv generator on synthetic 32x32 items
# --------------------------------------------------------------------------------------------
import torch  # noqa: E402

# The generator is the trainer tests' (tests/tinymodels.py). Only this process builds it (the children of
# the suite run `python -m mattingkit` or their own scripts), and under pytest tests/ is on sys.path
# already (tests/conftest.py's folder); appended here for a relkit imported some other way.
if str(REPO / "tests") not in sys.path:
    sys.path.append(str(REPO / "tests"))
from tinymodels import TinyG  # noqa: E402


class TinySet(torch.utils.data.Dataset):
    def __init__(self, n=8, seed=0):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        h = w = 32
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        alpha = np.clip((10 - np.hypot(yy - 16, xx - rng.uniform(10, 22))) / 3 + 0.5, 0, 1).astype(np.float32)
        fg, bg = (rng.random((3, h, w), dtype=np.float32) for _ in range(2))
        image = alpha * fg + (1 - alpha) * bg
        trimap = np.full((1, h, w), 0.5, np.float32)
        t = torch.from_numpy
        return {"image": t(image), "alpha": t(alpha[None]), "trimap": t(trimap), "fg": t(fg), "bg": t(bg),
                "unknown": t(np.ones((1, h, w), np.float32)), "id": f"{i:04d}"}


def tiny_trainer(run_dir: Path, **over):
    from mattingkit.config import load_config
    from mattingkit.train import Trainer

    base = {"run.device": "cpu", "run.deterministic": True, "run.name": "tiny", "data.batch_size": 2,
            "data.num_workers": 0, "train.steps": 6, "train.warmup_steps": 1, "train.use_gan": False,
            "train.log_every": 1, "train.image_every": 1000, "train.val_every": 2, "train.ckpt_every": 3,
            "train.tensorboard": False, "train.amp": "off", "train.lr_g": 1e-3}
    base.update(over)
    cfg = load_config("default", base)
    torch.manual_seed(0)
    return Trainer(cfg, run_dir=run_dir, model=TinyG(), train_dataset=TinySet(), val_dataset=TinySet(2, 1),
                   headless=True)

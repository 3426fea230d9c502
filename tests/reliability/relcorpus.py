"""The bad-inputs corpus: one AIM-500-style folder (original/ + mask/ + trimap/) in which every item
but ``good`` has one thing wrong (or merely unusual but valid) in one of its files.

``make_corpus(root)`` writes it and returns ``{stem: Item}``; ``Item.bad`` names the role whose file is
broken and ``Item.kind`` the validation problem kind expected for it (None for valid input).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from relkit import jpeg_bytes, pil_bytes, png_declaring

from mattingkit.io import png_bytes

H, W = 24, 32
NON_UTF8 = os.fsdecode(b"caf\xe9_\xff")  # not valid UTF-8: surrogate-escaped in Python


@dataclass
class Item:
    stem: str
    files: dict[str, Path]            # role -> path ("image", "alpha", "trimap")
    bad: str | None = None            # the role whose file is unreadable / inconsistent
    kind: str | None = None           # expected layouts.validate problem kind (None: valid input)
    io_error: str | None = None       # expected text in mattingkit.io's ImageReadError (None: reads)


def _photo(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, 0.5 + 0 * xx], -1)
    return np.clip(base * 255 + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _alpha(h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.clip((min(h, w) * 0.35 - np.hypot(yy - h / 2, xx - w / 2)) / 3 + 0.5, 0, 1).astype(np.float32)


def _trimap(alpha: np.ndarray) -> np.ndarray:
    t = np.full(alpha.shape, 0.5, np.float32)
    t[alpha <= 0.0] = 0.0
    t[alpha >= 1.0] = 1.0
    return t


def make_corpus(root: Path, seed: int = 0) -> dict[str, Item]:
    rng = np.random.default_rng(seed)
    dirs = {"image": root / "original", "alpha": root / "mask", "trimap": root / "trimap"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    items: dict[str, Item] = {}

    def add(stem, image=None, alpha=None, trimap=None, ext=None, bad=None, kind=None, io_error=None):
        """image/alpha/trimap: bytes for that file, or None for the default good one."""
        photo = _photo(rng)
        a = _alpha()
        default = {"image": png_bytes(photo), "alpha": png_bytes(a), "trimap": png_bytes(_trimap(a))}
        given = {"image": image, "alpha": alpha, "trimap": trimap}
        files = {}
        for role, d in dirs.items():
            suffix = (ext or {}).get(role, ".png")
            p = d / f"{stem}{suffix}"
            p.write_bytes(given[role] if given[role] is not None else default[role])
            files[role] = p
        items[stem] = Item(stem, files, bad, kind, io_error)

    good_png = png_bytes(_photo(rng))
    good_jpg = jpeg_bytes(_photo(rng), quality=90)
    add("good")
    add("zero_bytes", image=b"", bad="image", kind="empty file", io_error="empty file (0 bytes)")
    add("trunc_png", image=good_png[: len(good_png) // 2], bad="image", kind="truncated", io_error="truncated")
    sos = good_jpg.index(b"\xff\xda")                 # cut inside the entropy-coded data, as a broken
    add("trunc_jpg", image=good_jpg[: (sos + len(good_jpg)) // 2], ext={"image": ".jpg"}, bad="image",  # download
        kind="truncated", io_error="truncated")
    ok16, png16 = cv2.imencode(".png", (_photo(rng)[:, :, ::-1].astype(np.uint16) * 257))
    ok16a, alpha16 = cv2.imencode(".png", np.rint(_alpha() * 65535).astype(np.uint16))
    assert ok16 and ok16a
    add("png16", image=png16.tobytes(), alpha=alpha16.tobytes())
    rgba = np.dstack([_photo(rng), np.full((H, W), 200, np.uint8)])
    cutout = np.dstack([_photo(rng), np.rint(_alpha() * 255).astype(np.uint8)])
    add("rgba", image=pil_bytes(Image.fromarray(rgba, "RGBA")), alpha=pil_bytes(Image.fromarray(cutout, "RGBA")))
    add("gray", image=pil_bytes(Image.fromarray(_photo(rng)).convert("L")))
    tri8 = np.rint(_trimap(_alpha()) * 255).astype(np.uint8)
    pal_tri = Image.fromarray(tri8).convert("P", palette=Image.Palette.ADAPTIVE, colors=3)
    add("palette", image=pil_bytes(Image.fromarray(_photo(rng)).convert("P", palette=Image.Palette.ADAPTIVE,
                                                                        colors=32)),
        trimap=pil_bytes(pal_tri))
    add("cmyk", image=pil_bytes(Image.fromarray(_photo(rng)).convert("CMYK"), "JPEG", quality=95),
        ext={"image": ".jpg"})
    exif = Image.Exif()
    exif[0x0112] = 6                                  # stored W x H transposed, displayed H x W
    stored = np.ascontiguousarray(np.rot90(_photo(rng), 1))  # rotating 90 CW for display restores it
    add("exif", image=pil_bytes(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()),
        ext={"image": ".jpg"})
    add("size_mismatch", alpha=png_bytes(_alpha(20, 30)), bad="alpha", kind="size mismatch")
    add("trimap_mismatch", trimap=png_bytes(_trimap(_alpha(20, 30))), bad="trimap", kind="size mismatch")
    odd = np.rint(_trimap(_alpha()) * 255).astype(np.uint8)
    odd[odd == 128] = 64
    odd[:4, :] = 192
    add("trimap_values", trimap=pil_bytes(Image.fromarray(odd)), bad="trimap", kind="bad trimap",
        io_error="ambiguous trimap")
    add("trimap_no_unknown", trimap=png_bytes((_alpha() > 0.5).astype(np.float32)), bad="trimap",
        kind="trimap without unknown")
    add("huge_decl", image=png_declaring(20000, 20000), bad="image", kind="unreadable", io_error="too large")
    add("not_image", image=b"this is a text file, not a picture\n" * 20, bad="image", kind="unreadable",
        io_error="not an image")
    add(NON_UTF8)
    return items

"""Image I/O: the only place where bytes on disk become arrays and back.

Inside the package every image is float32 RGB ``HxWx3`` in [0, 1], every alpha float32 ``HxW`` in
[0, 1], every trimap float32 ``HxW`` with values {0, 0.5, 1}. On disk alphas and trimaps are 8-bit
PNG (trimap 0/128/255), written with rounding (``np.rint``), never truncation.

Readers accept PNG / JPEG / WebP / BMP / TIFF, 8- or 16-bit, gray, RGB, RGBA, palette and CMYK, and
apply EXIF orientation. Every failure raises :class:`ImageReadError`, whose message names the file
and says what is wrong (missing, 0 bytes, truncated, not an image, too large, ambiguous trimap).

Example:
    >>> import numpy as np, tempfile, os
    >>> from mattingkit.io import write_png, read_alpha
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> _ = write_png(p, np.full((4, 5), 0.5, np.float32))
    >>> read_alpha(p).shape, float(read_alpha(p)[0, 0])
    ((4, 5), 0.501960813999176)
"""
from __future__ import annotations

import io as _io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputDataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Largest image (in pixels) the readers accept; larger declared sizes are refused before decoding.
MAX_PIXELS = 16384 * 16384 // 2

PathLike = str | os.PathLike


class ImageReadError(InputDataError):
    """An image file could not be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def printable(text: str) -> str:
    """``text`` safe to print or log anywhere: a file name that is not valid UTF-8 (held by Python with
    surrogate escapes) shows its odd bytes as ``\\xNN`` instead of crashing a UTF-8 console or kernel.

    Example:
        >>> printable(os.fsdecode(b"caf\\xe9.png"))
        'caf\\\\xe9.png'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting and restoring it
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: ``0o666`` less the umask (0644 under umask 022).

    Example:
        >>> file_mode() == 0o666 & ~current_umask()
        True
    """
    return 0o666 & ~current_umask()


def mkstemp_usual_mode(path: PathLike) -> tuple[int, str]:
    """A temp file beside ``path`` for an atomic write, with :func:`file_mode` instead of mkstemp's 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
    except (AttributeError, OSError):  # pragma: no cover - Windows / file systems without modes
        pass
    return fd, tmp


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, then ``os.replace``.

    A crash mid-write leaves the previous file (if any) intact and no partial file under ``path``. The
    file gets the usual mode (0644 under umask 022), folders 0755.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_usual_mode(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float [0,1] -> uint8 with rounding (``np.rint``) and clipping; uint8 passes through.

    Example:
        >>> to_uint8(np.array([0.0, 0.5, 0.999, 1.2])).tolist()
        [0, 128, 255, 255]
    """
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"expected float values in [0,1] or uint8, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError("array contains NaN or infinite values")
    return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _to_pil(array: np.ndarray) -> Image.Image:
    a = to_uint8(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(a))  # L, RGB or RGBA from the shape
    raise ValueError(f"cannot write an array of shape {a.shape} as PNG (want HxW, HxWx3 or HxWx4)")


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an array as PNG bytes (8-bit; gray for HxW, RGB/RGBA for HxWx3/4), Pillow's default writer.

    Example:
        >>> png_bytes(np.zeros((2, 2), np.float32))[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    buf = _io.BytesIO()
    _to_pil(array).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: PathLike, array: np.ndarray) -> Path:
    """Write ``array`` (float [0,1] or uint8) as an 8-bit PNG, atomically. Trimaps become 0/128/255.

    Example:
        >>> import tempfile, os
        >>> p = write_png(os.path.join(tempfile.mkdtemp(), "t.png"), np.array([[0, .5, 1]], np.float32))
        >>> np.asarray(Image.open(p)).tolist()
        [[0, 128, 255]]
    """
    return atomic_write_bytes(path, png_bytes(array))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _read_bytes(path: PathLike) -> bytes:
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "file not found")
    if p.is_dir():
        raise ImageReadError(p, "is a folder, not an image file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageReadError(p, f"cannot be read ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(p, "empty file (0 bytes)")
    return data


def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        return data[24]
    return None


def _open(path: PathLike, data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(_io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageReadError(path, f"image too large ({w}x{h} = {w * h / 1e6:.0f} Mpx; limit "
                                     f"{MAX_PIXELS / 1e6:.0f} Mpx)")
            im.load()
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image, or an unsupported format") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"truncated or corrupt image data ({e})") from None
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # a broken EXIF block should not make a good image unreadable
        return im


def _decode(path: PathLike) -> tuple[np.ndarray, bool]:
    """Decode to float32 HxWxC in [0,1] (C in 1, 2, 3, 4) and say whether the last channel is alpha."""
    data = _read_bytes(path)
    if _png_bit_depth(data) == 16:
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageReadError(path, "truncated or corrupt 16-bit PNG")
        arr = arr.astype(np.float32) / 65535.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
        elif arr.shape[2] == 3:
            arr = arr[:, :, ::-1]
        elif arr.shape[2] == 4:
            arr = arr[:, :, [2, 1, 0, 3]]
        return np.ascontiguousarray(arr), arr.shape[2] in (2, 4)
    im = _open(path, data)
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im, dtype=np.float32)[:, :, None] / 65535.0
        return arr, False
    if mode == "I":
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if a.max(initial=0) > 255 else 255.0
        return (a / scale).astype(np.float32)[:, :, None], False
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if a.max(initial=0) > 1.0:
            a = a / 255.0
        return np.clip(a, 0, 1)[:, :, None], False
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, im.mode in ("LA", "RGBA")


def read_image(path: PathLike) -> np.ndarray:
    """Read any common image as float32 RGB ``HxWx3`` in [0, 1] (alpha, if any, is dropped).

    Example:
        >>> import tempfile, os
        >>> p = write_png(os.path.join(tempfile.mkdtemp(), "g.png"), np.zeros((3, 2), np.float32))
        >>> read_image(p).shape
        (3, 2, 3)
    """
    arr, has_alpha = _decode(path)
    color = arr[:, :, :-1] if has_alpha else arr
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    return np.ascontiguousarray(color, dtype=np.float32)


def read_rgba(path: PathLike) -> np.ndarray:
    """Read an image as float32 RGBA ``HxWx4`` (alpha 1 where the file has none)."""
    arr, has_alpha = _decode(path)
    color = arr[:, :, :-1] if has_alpha else arr
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    alpha = arr[:, :, -1:] if has_alpha else np.ones_like(arr[:, :, :1])
    return np.ascontiguousarray(np.concatenate([color, alpha], axis=2), dtype=np.float32)


def read_alpha(path: PathLike, channel: str = "auto", strict: bool = False) -> np.ndarray:
    """Read an alpha matte as float32 ``HxW`` in [0, 1].

    ``channel``: ``"auto"`` (gray as is; RGB: first channel; RGBA: the alpha channel when it is not
    all opaque, else the first channel), ``"first"`` or ``"alpha"`` (the alpha channel; error if none).
    ``strict=True`` (submissions, evaluation of predictions): when the matte would come from the colour
    channels, they must be equal (a gray image stored as RGB); a colour image — a photo passed where
    predictions belong — is an :class:`ImageReadError` instead of its red channel.

    Example:
        >>> import tempfile, os
        >>> p = write_png(os.path.join(tempfile.mkdtemp(), "a.png"), np.ones((2, 2, 3), np.float32))
        >>> read_alpha(p).shape
        (2, 2)
    """
    _check_channel(channel)
    arr, has_alpha = _decode(path)
    return np.ascontiguousarray(_matte_channel(arr, has_alpha, channel, 1.0, path, strict), dtype=np.float32)


def _check_channel(channel: str) -> None:
    if channel not in ("auto", "first", "alpha"):
        raise ValueError(f"channel must be 'auto', 'first' or 'alpha', got {channel!r}")


#: Largest difference between the colour channels of a "gray stored as RGB" matte, as a fraction of
#: full scale (a gray JPEG's decoder can leave +-1 levels between channels).
GRAY_TOLERANCE = 2 / 255


def _matte_channel(arr: np.ndarray, has_alpha: bool, channel: str, opaque: float, path: PathLike,
                   strict: bool = False) -> np.ndarray:
    """The matte plane of a decoded ``HxWxC`` array for :func:`read_alpha` / :func:`read_alpha_uint8`:
    the alpha channel (``"alpha"``, or ``"auto"`` when it is not fully ``opaque``), else the first
    (``strict``: only when the colour channels are equal)."""
    if channel == "alpha":
        if not has_alpha:
            raise ImageReadError(path, "has no alpha channel (asked for channel='alpha')")
        return arr[:, :, -1]
    if channel == "auto" and has_alpha and arr[:, :, -1].min() < opaque:
        return arr[:, :, -1]
    colour = arr.shape[2] - (1 if has_alpha else 0)
    if strict and colour >= 3:
        c = arr[:, :, :3]
        spread = float((c.max(axis=2).astype(np.float32) - c.min(axis=2)).max(initial=0)) / opaque
        if spread > GRAY_TOLERANCE:
            raise ImageReadError(path, f"is a colour image (its R, G and B channels differ by up to "
                                       f"{spread * 255:.0f}/255), not an alpha matte; expected a grayscale "
                                       "PNG of predicted alpha (is this a photo instead of a prediction?)")
    return arr[:, :, 0]


#: JPEG-ish tolerance: a trimap pixel within this many 8-bit levels of 0/128/255 snaps to it.
TRIMAP_TOLERANCE = 40
#: At most this share of pixels may be ambiguous (snapped to the nearest level) before it is an error.
TRIMAP_MAX_AMBIGUOUS = 0.001


def trimap_from_uint8(values: np.ndarray, path: PathLike = "<array>") -> np.ndarray:
    """Map 8-bit trimap values to {0, 0.5, 1}; tolerant of JPEG-ish noise, an error when ambiguous."""
    v = np.asarray(values).astype(np.int16)
    levels = np.array([0, 128, 255], np.int16)
    dist = np.abs(v[..., None] - levels)
    nearest = dist.argmin(axis=-1)
    far = dist.min(axis=-1) > TRIMAP_TOLERANCE
    n_far = int(far.sum())
    if n_far > TRIMAP_MAX_AMBIGUOUS * v.size:
        examples = sorted(set(np.unique(v[far]).tolist()))[:8]
        raise ImageReadError(
            path,
            f"ambiguous trimap: {n_far} pixels ({100 * n_far / v.size:.2f}%) are not near 0/128/255 "
            f"(e.g. values {examples}); expected a trimap with values 0, 128, 255",
        )
    return (nearest.astype(np.float32) * 0.5).astype(np.float32)


def read_trimap(path: PathLike) -> np.ndarray:
    """Read a trimap as float32 ``HxW`` with values {0, 0.5, 1} (0=bg, 0.5=unknown, 1=fg).

    Accepts gray, palette or RGB trimaps with values near 0/128/255 (JPEG noise tolerated).

    Example:
        >>> import tempfile, os
        >>> p = write_png(os.path.join(tempfile.mkdtemp(), "t.png"), np.array([[0, .5, 1]], np.float32))
        >>> read_trimap(p).tolist()
        [[0.0, 0.5, 1.0]]
    """
    arr, _ = _decode(path)
    gray8 = np.rint(arr[:, :, 0] * 255.0)
    return trimap_from_uint8(gray8, path)


# --------------------------------------------------------------------------------------------
# 8-bit readers: the same decoding without the float conversion, for pipelines that crop first
# (mattingkit.data.datasets converts only the crop to float; the full-image conversion costs more
# than the PNG/JPEG decode itself for large backgrounds).
# --------------------------------------------------------------------------------------------
def _decode_uint8(path: PathLike) -> tuple[np.ndarray, bool]:
    """Like ``_decode`` but uint8 (16-bit / integer / float files: rounded from the float decode)."""
    data = _read_bytes(path)
    if _png_bit_depth(data) != 16:
        im = _open(path, data)
        if im.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode == "1":
                im = im.convert("L")
            elif im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGB")
            arr = np.asarray(im)
            return (arr[:, :, None] if arr.ndim == 2 else arr), im.mode in ("LA", "RGBA")
    arr, has_alpha = _decode(path)
    return to_uint8(arr), has_alpha


def read_image_uint8(path: PathLike) -> np.ndarray:
    """:func:`read_image` without the float conversion: uint8 RGB ``HxWx3``
    (``read_image(p) == read_image_uint8(p) / np.float32(255)`` for 8-bit files).

    Example:
        >>> import tempfile, os
        >>> p = write_png(os.path.join(tempfile.mkdtemp(), "g.png"), np.full((3, 2), 0.5, np.float32))
        >>> a = read_image_uint8(p); a.shape, a.dtype.name, int(a[0, 0, 0])
        ((3, 2, 3), 'uint8', 128)
    """
    arr, has_alpha = _decode_uint8(path)
    color = arr[:, :, :-1] if has_alpha else arr
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    return np.ascontiguousarray(color)


def read_alpha_uint8(path: PathLike, channel: str = "auto", strict: bool = False) -> np.ndarray:
    """:func:`read_alpha` without the float conversion: uint8 ``HxW`` (same channel and ``strict`` rules).

    Example:
        >>> import tempfile, os
        >>> p = write_png(os.path.join(tempfile.mkdtemp(), "a.png"), np.ones((2, 2), np.float32))
        >>> read_alpha_uint8(p).tolist()
        [[255, 255], [255, 255]]
    """
    _check_channel(channel)
    arr, has_alpha = _decode_uint8(path)
    return np.ascontiguousarray(_matte_channel(arr, has_alpha, channel, 255, path, strict))


def image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header, after EXIF orientation, without decoding pixels.

    Example:
        >>> import tempfile, os
        >>> image_size(write_png(os.path.join(tempfile.mkdtemp(), "s.png"), np.zeros((3, 5), np.float32)))
        (5, 3)
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "file not found")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                try:
                    orientation = im.getexif().get(0x0112, 1)
                except Exception:
                    orientation = 1
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image, or an unsupported format") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(p, f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(p, f"unreadable image header ({e})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def list_images(folder: PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted; hidden files skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in it
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def fit_side(array: np.ndarray, max_side: int | None, nearest: bool = False) -> np.ndarray:
    """Downscale (area interpolation; ``nearest`` for label maps) so that the long side is at most
    ``max_side``; never upscales.

    Example:
        >>> fit_side(np.zeros((100, 50), np.float32), 20).shape
        (20, 10)
    """
    a = np.asarray(array)
    h, w = capped_size(a.shape[0], a.shape[1], max_side)
    if (h, w) == a.shape[:2]:
        return a
    import cv2

    return cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def capped_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """``(h, w)`` scaled so that the long side is at most ``max_side`` (aspect kept, never up, each side >= 1;
    ``None``: as it is). The one rule for every capped side (pictures, capped datasets, ``infer.max_side``).

    Example:
        >>> capped_size(300, 200, 96), capped_size(50, 40, 96), capped_size(50, 40, None)
        ((96, 64), (50, 40), (50, 40))
    """
    if not max_side or max(h, w) <= max_side:
        return h, w
    k = max_side / max(h, w)
    return max(1, round(h * k)), max(1, round(w * k))

"""Image I/O on every listed file kind, real files from ../shared, and clear errors naming the file."""
import io as _io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from mattingkit.io import (
    ImageReadError,
    image_size,
    list_images,
    png_bytes,
    read_alpha,
    read_image,
    read_rgba,
    read_trimap,
    to_uint8,
    trimap_from_uint8,
    write_png,
)

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rounding_not_truncation(tmp_path):
    a = np.array([[0.0, 0.5 / 255, 1.6 / 255, 254.5 / 255, 1.0]], np.float32)
    p = write_png(tmp_path / "r.png", a)
    got = np.asarray(Image.open(p))
    assert got.tolist() == [[0, 0, 2, 254, 255]]  # rint: 0.5 -> 0 (even), 1.6 -> 2; truncation would give 1
    assert to_uint8(np.array([0.999])).tolist() == [255]


def test_write_read_roundtrip_exact_for_8bit_values(tmp_path):
    a = np.arange(256, dtype=np.float32).reshape(16, 16) / 255
    p = write_png(tmp_path / "a.png", a)
    np.testing.assert_array_equal(read_alpha(p), a)
    rgb = RGB8.astype(np.float32) / 255
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "c.png", rgb)), rgb)


@pytest.mark.parametrize("kind", ["png_rgb", "png_gray", "png_rgba", "png_palette", "png_la", "jpeg", "webp",
                                  "bmp", "tiff", "png16_gray", "png16_rgb", "jpeg_cmyk", "png_1bit"])
def test_read_image_every_kind(tmp_path, kind):
    p = tmp_path / f"x.{ 'png' if kind.startswith('png') else kind.split('_')[0] }"
    im = Image.fromarray(RGB8)
    if kind == "png_rgb":
        _save(im, p)
    elif kind == "png_gray":
        _save(im.convert("L"), p)
    elif kind == "png_rgba":
        _save(im.convert("RGBA"), p)
    elif kind == "png_palette":
        _save(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), p)
    elif kind == "png_la":
        _save(im.convert("LA"), p)
    elif kind == "png_1bit":
        _save(im.convert("1"), p)
    elif kind == "jpeg":
        _save(im, p, quality=95)
    elif kind == "webp":
        _save(im, p, lossless=True)
    elif kind == "bmp":
        _save(im, p)
    elif kind == "tiff":
        _save(im, p)
    elif kind == "jpeg_cmyk":
        _save(im.convert("CMYK"), p, quality=95)
    elif kind == "png16_gray":
        cv2.imwrite(str(p), (RGB8[:, :, 0].astype(np.uint16) * 257))
    elif kind == "png16_rgb":
        cv2.imwrite(str(p), (RGB8[:, :, ::-1].astype(np.uint16) * 257))
    out = read_image(p)
    assert out.shape == (7, 5, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    if kind in ("png_rgb", "png_rgba", "webp", "bmp", "tiff", "png16_rgb"):
        np.testing.assert_allclose(out, RGB8 / 255.0, atol=1e-6)
    if kind == "png16_gray":
        np.testing.assert_allclose(out[:, :, 1], RGB8[:, :, 0] / 255.0, atol=1e-6)
    if kind in ("jpeg", "jpeg_cmyk"):
        assert np.abs(out - RGB8 / 255.0).mean() < 0.15


def test_16bit_png_keeps_precision(tmp_path):
    v = np.array([[0, 1, 32768, 65535]], np.uint16)
    p = tmp_path / "p16.png"
    cv2.imwrite(str(p), v)
    np.testing.assert_allclose(read_alpha(p), v / 65535.0, atol=1e-7)


def test_exif_rotated_jpeg(tmp_path):
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes())
    assert read_image(p).shape == (20, 10, 3)
    assert image_size(p) == (10, 20)


def test_read_alpha_channels(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 10
    rgba[..., 3] = 200
    p = tmp_path / "cut.png"
    Image.fromarray(rgba).save(p)
    assert read_alpha(p)[0, 0] == pytest.approx(200 / 255)
    assert read_alpha(p, channel="first")[0, 0] == pytest.approx(10 / 255)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 77
    q = tmp_path / "a3.png"
    Image.fromarray(rgb).save(q)
    assert read_alpha(q)[0, 0] == pytest.approx(77 / 255)
    with pytest.raises(ImageReadError, match="no alpha channel"):
        read_alpha(q, channel="alpha")


def test_trimap_palette_and_jpeg_noise(tmp_path):
    t = np.zeros((40, 40), np.uint8)
    t[10:30, 10:30] = 128
    t[15:25, 15:25] = 255
    pal = Image.fromarray(t).convert("P")
    p = tmp_path / "tri_p.png"
    pal.save(p)
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(read_trimap(p), t / 255.0 * 0 + (t == 128) * 0.5 + (t == 255) * 1.0)
    j = tmp_path / "tri.jpg"
    Image.fromarray(t).save(j, quality=90)
    got = read_trimap(j)
    assert set(np.unique(got)) <= {0.0, 0.5, 1.0}
    assert (got == (t == 128) * 0.5 + (t == 255)).mean() > 0.99


def test_trimap_ambiguous_is_an_error(tmp_path):
    g = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (8, 1))  # a gradient is not a trimap
    p = write_png(tmp_path / "grad.png", g)
    with pytest.raises(ImageReadError, match=r"grad\.png: ambiguous trimap"):
        read_trimap(p)
    assert trimap_from_uint8(np.array([0, 3, 125, 131, 252, 255])).tolist() == [0, 0, .5, .5, 1, 1]


def test_real_files_from_shared(alphamatting_dev):
    for name in ["GT01", "GT05"]:
        img = read_image(alphamatting_dev / "image" / f"{name}.png")
        alpha = read_alpha(alphamatting_dev / "alpha" / f"{name}.png")
        tri = read_trimap(alphamatting_dev / "trimap" / f"{name}.png")
        assert img.shape[:2] == alpha.shape == tri.shape
        assert max(img.shape[:2]) == 800
        assert set(np.unique(tri)) == {0.0, 0.5, 1.0}
        assert 0 < (alpha[tri == 0.5] > 0).mean() < 1
        raw = np.asarray(Image.open(alphamatting_dev / "alpha" / f"{name}.png"))
        np.testing.assert_array_equal(to_uint8(alpha), raw)
        assert image_size(alphamatting_dev / "image" / f"{name}.png") == (img.shape[1], img.shape[0])


def _png_with_declared_size(w, h) -> bytes:
    raw = png_bytes(np.zeros((1, 1), np.float32))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


@pytest.mark.parametrize("case,match", [
    ("missing", "file not found"),
    ("empty", r"empty file \(0 bytes\)"),
    ("truncated_png", "truncated or corrupt"),
    ("truncated_jpeg", "truncated or corrupt"),
    ("not_an_image", "not an image"),
    ("huge", "too large"),
    ("folder", "is a folder"),
])
def test_errors_name_the_file_and_the_problem(tmp_path, case, match):
    p = tmp_path / f"bad_{case}.png"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated_png":
        p.write_bytes(png_bytes(RGB8.astype(np.float32) / 255)[:60])
    elif case == "truncated_jpeg":
        p = tmp_path / "bad.jpg"
        buf = _io.BytesIO()
        Image.fromarray(np.tile(RGB8, (20, 20, 1))).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif case == "not_an_image":
        p.write_text("this is a text file with an image extension")
    elif case == "huge":
        p.write_bytes(_png_with_declared_size(20000, 20000))
    elif case == "folder":
        p.mkdir()
    with pytest.raises(ImageReadError, match=match) as e:
        read_image(p)
    assert str(p) in str(e.value)


def test_non_utf8_file_name(tmp_path):
    import os

    name = os.fsdecode(b"caf\xe9-\xff.png")  # not valid UTF-8: surrogate-escaped
    p = tmp_path / name
    write_png(p, np.ones((3, 3), np.float32))
    assert read_alpha(p).min() == 1.0
    assert p in list_images(tmp_path)


def test_list_images_recursive_and_sorted(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for rel in ["z.JPG", "b/a.png", "b/c/x.webp", "notes.txt", ".hidden.png"]:
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["b/a.png", "b/c/x.webp", "z.JPG"]
    assert read_rgba(write_png(tmp_path / "k.png", np.zeros((2, 2, 3), np.float32))).shape == (2, 2, 4)


# ---------------------------------------------------------------------------------------------
# issue 16: output files get the usual 0644 / 0755 under the user's umask (not mkstemp's 0600)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                        (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    import stat

    from mattingkit.io import atomic_write_text

    old = os.umask(umask)
    try:
        p = atomic_write_text(tmp_path / "new" / "a.txt", "x")
        write_png(tmp_path / "img" / "i.png", np.zeros((4, 4, 3), np.uint8))
        write_png(tmp_path / "i.png", np.zeros((4, 4), np.uint8))
        atomic_write_text(p, "again")  # replacing keeps the usual mode too
    finally:
        os.umask(old)
    for f in (p, tmp_path / "img" / "i.png", tmp_path / "i.png"):
        assert stat.S_IMODE(f.stat().st_mode) == file_mode, f
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == dir_mode


# ---------------------------------------------------------------------------------------------
# issue 16: strict alpha reading refuses colour images (a photo is not a matte)
# ---------------------------------------------------------------------------------------------
def test_read_alpha_strict_refuses_colour_but_takes_gray_stored_as_rgb(tmp_path):
    from mattingkit.io import read_alpha_uint8

    gray = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    colour = _save(Image.fromarray(RGB8), tmp_path / "photo.png")
    gray_rgb = _save(Image.fromarray(np.repeat(gray[:, :, None], 3, 2)), tmp_path / "gray_rgb.png")
    plain = _save(Image.fromarray(gray), tmp_path / "gray.png")
    cutout = np.dstack([RGB8[:6, :5], gray])  # an RGBA cut-out: its alpha channel is the matte
    rgba = _save(Image.fromarray(cutout, "RGBA"), tmp_path / "cutout.png")
    for read in (read_alpha, read_alpha_uint8):
        with pytest.raises(ImageReadError, match=r"photo\.png: .*colour image.*not an alpha matte"):
            read(colour, strict=True)
        read(colour)  # the lenient default keeps its documented behaviour (first channel)
    assert np.array_equal(read_alpha_uint8(gray_rgb, strict=True), gray)
    assert np.array_equal(read_alpha_uint8(plain, strict=True), gray)
    assert np.array_equal(read_alpha_uint8(rgba, strict=True), gray)

"""load_image / load_image_bytes: every odd file a beginner's folder can contain.

All test files are generated here with PIL/numpy (no binary fixtures in the repo).
"""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data import images
from tl_core.data.images import (
    MAX_PIXELS,
    SUPPORTED_EXTENSIONS,
    fix_for_reason,
    heic_supported,
    load_image,
    load_image_bytes,
)
from tl_core.errors import ImageLoadError, TransferLabError


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _reason(path_or_bytes, **kw) -> str:
    with pytest.raises(ImageLoadError) as info:
        if isinstance(path_or_bytes, (bytes, bytearray)):
            load_image_bytes(bytes(path_or_bytes), **kw)
        else:
            load_image(path_or_bytes, **kw)
    err = info.value
    assert isinstance(err, TransferLabError)
    assert err.reason and err.reason in str(err)
    return err.reason


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR claims ``width`` x ``height`` (CRC fixed up)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


# ---------------------------------------------------------------- refusals with a reason


def test_supported_extensions_and_limit():
    for ext in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"):
        assert ext in SUPPORTED_EXTENSIONS
    assert (".heic" in SUPPORTED_EXTENSIONS) == heic_supported()
    assert MAX_PIXELS == 60_000_000


def test_zero_byte_file(tmp_path):
    p = _write(tmp_path / "empty.jpg", b"")
    assert _reason(p) == "empty file (0 bytes)"
    assert _reason(b"") == "empty file (0 bytes)"
    assert "copy" in fix_for_reason("empty file (0 bytes)").lower()


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG", quality=90)
    p = _write(tmp_path / "half.jpg", data[: len(data) // 2])
    assert _reason(p) == "file is truncated or corrupt"


def test_truncated_png(tmp_path):
    data = _encode(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG")
    p = _write(tmp_path / "cut.png", data[:60])
    assert _reason(p) == "file is truncated or corrupt"


def test_text_file_named_jpg(tmp_path):
    p = _write(tmp_path / "notes.jpg", "These are my notes about cats.\nLine two, é.\n".encode())
    reason = _reason(p)
    assert reason.startswith("not an image") and "text" in reason
    assert "remove" in fix_for_reason(reason).lower()


def test_pdf_bytes_named_png(tmp_path):
    p = _write(tmp_path / "scan.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    assert _reason(p) == "not an image (the content is a PDF document)"


def test_zip_bytes_named_jpg(tmp_path):
    p = _write(tmp_path / "pics.jpg", b"PK\x03\x04" + b"\x00" * 60)
    assert "zip" in _reason(p)


def test_unknown_binary(tmp_path):
    junk = bytes(range(1, 32)) * 10
    # named like a picture: most likely a damaged one
    assert _reason(_write(tmp_path / "x.png", junk)) == "file is truncated or corrupt"
    # anything else: say it is not a picture
    assert _reason(_write(tmp_path / "x.dat", junk)) == "not an image (the content is unrecognised binary data)"
    assert _reason(junk) == "not an image (the content is unrecognised binary data)"


@pytest.mark.parametrize("fmt,ext", [("PPM", ".ppm"), ("TGA", ".tga"), ("PCX", ".pcx")])
def test_unsupported_format(tmp_path, fmt, ext):
    p = _write(tmp_path / f"pic{ext}", _encode(Image.new("RGB", (8, 8), (200, 0, 0)), fmt))
    reason = _reason(p)
    assert reason.startswith("unsupported format"), reason
    assert "JPEG or PNG" in fix_for_reason(reason)


def test_svg_is_unsupported(tmp_path):
    p = _write(tmp_path / "logo.png", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    assert _reason(p).startswith("unsupported format (SVG")


def test_missing_file_and_folder(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "file not found"
    (tmp_path / "dir.jpg").mkdir()
    assert _reason(tmp_path / "dir.jpg").startswith("not an image")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    p = _write(tmp_path / "bomb.png", _png_with_size(20000, 20000))
    assert p.stat().st_size < 100
    start = time.perf_counter()
    reason = _reason(p)
    assert time.perf_counter() - start < 1.0
    assert reason == "too large: 20000 x 20000 pixels is over the 60 megapixel limit"
    assert "shrink" in fix_for_reason(reason).lower()


def test_just_over_the_limit_is_refused_even_below_pillows_own_limit(tmp_path):
    # 8000 x 8000 = 64 MP: Pillow alone would only warn; we refuse (header only, so fast).
    p = _write(tmp_path / "big.png", _png_with_size(8000, 8000))
    assert _reason(p).startswith("too large: 8000 x 8000 pixels")


def test_large_legal_image_is_downscaled(tmp_path):
    im = Image.new("RGB", (6000, 4000), (30, 60, 90))
    p = _write(tmp_path / "big.jpg", _encode(im, "JPEG", quality=80))
    out = load_image(p)
    assert out.mode == "RGB" and max(out.size) == 2048
    assert abs(out.size[0] / out.size[1] - 1.5) < 0.01
    small = load_image(p, max_side=300)
    assert max(small.size) == 300
    px = np.asarray(small).reshape(-1, 3).mean(axis=0)
    assert np.allclose(px, (30, 60, 90), atol=3)


def test_max_side_none_keeps_size(tmp_path):
    p = _write(tmp_path / "a.png", _encode(Image.new("RGB", (3000, 20), (1, 2, 3)), "PNG"))
    assert load_image(p, max_side=None).size == (3000, 20)
    assert load_image(p).size == (2048, 14)


# ---------------------------------------------------------------- colour modes -> RGB


def test_palette_with_transparency_goes_on_white(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 1), 1)
    p = _write(tmp_path / "pal.png", _encode(im, "PNG", transparency=0))
    out = load_image(p)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent black -> white
    assert out.getpixel((1, 1)) == (255, 0, 0)


def test_palette_without_transparency(tmp_path):
    im = Image.new("RGB", (8, 8), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = load_image(_write(tmp_path / "pal.gif", _encode(im, "GIF")))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 128, 255)


def test_grayscale_L(tmp_path):
    out = load_image(_write(tmp_path / "l.png", _encode(Image.new("L", (5, 5), 77), "PNG")))
    assert out.mode == "RGB" and out.getpixel((2, 2)) == (77, 77, 77)


def test_grayscale_with_alpha_LA(tmp_path):
    im = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    im.putpixel((0, 0), (50, 255))
    out = load_image(_write(tmp_path / "la.png", _encode(im, "PNG")))
    assert out.getpixel((0, 0)) == (50, 50, 50)
    assert out.getpixel((3, 3)) == (255, 255, 255)


def test_rgba_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    im.putpixel((0, 0), (0, 0, 255, 255))
    im.putpixel((1, 0), (255, 0, 0, 128))  # half-transparent red over white -> pink
    out = load_image(_write(tmp_path / "rgba.png", _encode(im, "PNG")))
    assert out.getpixel((3, 3)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)
    r, g, b = out.getpixel((1, 0))
    assert r == 255 and 120 <= g <= 135 and 120 <= b <= 135


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.zeros((2, 3), dtype=np.uint16)
    arr[0] = [0, 32768, 65535]
    arr[1] = [257, 1000, 50000]
    im = Image.fromarray(arr)
    assert im.mode.startswith("I;16")
    p = _write(tmp_path / "deep.png", _encode(im, "PNG"))
    assert Image.open(p).mode in ("I;16", "I")  # really stored as 16 bit
    out = np.asarray(load_image(p))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0, 0] == 0
    assert out[0, 1, 0] in (127, 128)
    assert out[0, 2, 0] == 255
    assert out[1, 0, 0] == 1
    assert out[1, 2, 0] == round(50000 / 257)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16_bit_tiff(tmp_path):
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    p = _write(tmp_path / "deep.tif", _encode(Image.fromarray(arr), "TIFF"))
    out = load_image(p)
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)


def test_float_tiff(tmp_path):
    arr = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    out = np.asarray(load_image(_write(tmp_path / "f.tif", _encode(Image.fromarray(arr, "F"), "TIFF"))))
    assert out[0, 0, 0] == 0 and out[3, 3, 0] == 255


def test_bilevel(tmp_path):
    im = Image.new("1", (4, 4), 1)
    out = load_image(_write(tmp_path / "bw.png", _encode(im, "PNG")))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    p = _write(tmp_path / "print.jpg", _encode(im, "JPEG", quality=95))
    assert Image.open(p).mode == "CMYK"
    out = load_image(p)
    r, g, b = out.getpixel((8, 8))
    assert out.mode == "RGB" and r > 230 and g < 30 and b < 30


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    p = _write(tmp_path / "phone.jpg", _encode(im, "JPEG", exif=exif, quality=95))
    out = load_image(p)
    assert out.size == (20, 40)
    top = out.getpixel((10, 5))
    bottom = out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert "exif" not in out.info  # no stale orientation left to be applied twice


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_broken_exif_does_not_make_image_unreadable(tmp_path):
    data = bytearray(_encode(Image.new("RGB", (8, 8), (9, 9, 9)), "JPEG"))
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 8) + b"Exif\x00\x00" + b"MM\x00*\xff\xff\xff\xff"
    data[2:2] = app1
    out = load_image(_write(tmp_path / "odd.jpg", bytes(data)))
    assert out.size == (8, 8)


# ---------------------------------------------------------------- formats


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_image(p)
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 0, 0)


def test_tiff_first_page(tmp_path):
    pages = [Image.new("RGB", (10, 10), c) for c in ((0, 0, 255), (0, 255, 0))]
    p = tmp_path / "multi.tiff"
    pages[0].save(p, save_all=True, append_images=pages[1:])
    assert load_image(p).getpixel((5, 5)) == (0, 0, 255)


@pytest.mark.parametrize("fmt,ext", [("WEBP", ".webp"), ("BMP", ".bmp"), ("PNG", ".png"), ("JPEG", ".jpeg")])
def test_common_formats_load(tmp_path, fmt, ext):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    p = _write(tmp_path / f"a{ext}", _encode(Image.new("RGB", (12, 9), (10, 200, 30)), fmt, **kw))
    out = load_image(p)
    assert out.mode == "RGB" and out.size == (12, 9)
    assert np.allclose(out.getpixel((6, 4)), (10, 200, 30), atol=4)


def test_misnamed_extension_still_loads(tmp_path):
    p = _write(tmp_path / "photo.jpg", _encode(Image.new("RGB", (5, 5), (1, 2, 3)), "PNG"))
    assert load_image(p).getpixel((0, 0)) == (1, 2, 3)


def test_load_image_bytes_same_rules():
    data = _encode(Image.new("RGBA", (3, 3), (0, 0, 0, 0)), "PNG")
    out = load_image_bytes(data, "x.png")
    assert out.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ImageLoadError) as info:
        load_image_bytes(b"hello", name="upload/cat.jpg")
    assert info.value.path == "upload/cat.jpg" and info.value.reason.startswith("not an image")
    assert _reason(_png_with_size(30000, 3000)).startswith("too large: 30000 x 3000")


# ---------------------------------------------------------------- HEIC


HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def test_heic_without_pillow_heif(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "heic_supported", lambda: False)
    p = _write(tmp_path / "IMG_0001.HEIC", HEIC_HEAD)
    reason = _reason(p)
    assert reason == "HEIC photo but pillow-heif is not installed (pip install pillow-heif)"
    assert "pillow-heif" in fix_for_reason(reason)
    # recognised by content too, whatever the name says
    assert _reason(HEIC_HEAD, name="photo.jpg").startswith("HEIC photo")


def test_heic_named_file_with_jpeg_content_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "heic_supported", lambda: False)
    p = _write(tmp_path / "IMG.heic", _encode(Image.new("RGB", (4, 4), (5, 5, 5)), "JPEG"))
    assert load_image(p).size == (4, 4)


def test_heic_broken_with_pillow_heif_reports_corrupt(tmp_path, monkeypatch):
    # Pretend support is present: a HEIC header with nothing behind it is then "corrupt",
    # not "install pillow-heif" (the install advice would not help).
    monkeypatch.setattr(images, "heic_supported", lambda: True)
    monkeypatch.setattr(images, "_allowed_formats", lambda: images._ALLOWED_FORMATS)
    assert _reason(HEIC_HEAD, name="a.heic") == "file is truncated or corrupt"


def test_heic_with_pillow_heif_installed(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    assert heic_supported() and ".heic" in SUPPORTED_EXTENSIONS
    p = tmp_path / "IMG_0002.HEIC"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(p, "HEIF", quality=90)
    out = load_image(p)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert np.allclose(out.getpixel((10, 10)), (200, 30, 30), atol=8)

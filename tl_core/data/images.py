"""Open any picture a beginner might drop in, or say in a few words why not.

Everything else in Transfer Lab reads pixels through :func:`load_image` /
:func:`load_image_bytes`, so this is the one place that has to cope with the odd files
real folders contain: phone photos stored sideways with an EXIF rotation flag, PNGs with
transparency, 16-bit scans, CMYK JPEGs from print shops, GIFs, TIFFs, HEIC photos from
iPhones, 0-byte files left by interrupted copies, text files renamed to ``.jpg`` and
deliberately hostile "decompression bombs". The output is always a plain 8-bit RGB image,
and every failure is an :class:`~tl_core.errors.ImageLoadError` whose ``reason`` a
non-expert can act on (see :func:`fix_for_reason` for the matching advice).

Security notes: only a short list of common decoders is ever allowed to decode (fewer
parsers, fewer surprises), and the pixel count is read from the header and refused
*before* any pixel memory is allocated.
"""
from __future__ import annotations

import errno
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from tl_core.errors import ImageLoadError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "HEIC_EXTENSIONS",
    "KNOWN_UNSUPPORTED_IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "heic_supported",
    "load_image",
    "load_image_bytes",
    "fix_for_reason",
]

#: Refuse anything bigger than this many pixels (60 megapixels: larger than any phone
#: photo, far smaller than what it takes to exhaust memory with a crafted header).
MAX_PIXELS: int = 60_000_000

HEIC_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})

_BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

#: Picture formats people do drop in but that this app does not decode; the folder scan
#: names them so the user knows to convert them instead of wondering where they went.
KNOWN_UNSUPPORTED_IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".avif", ".svg", ".psd", ".ico", ".jxl", ".jp2", ".j2k", ".tga", ".ppm", ".pgm", ".pbm",
    ".pcx", ".eps", ".raw", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf",
    ".xcf", ".jfif",
})

# Pillow decoders we allow. MPO is what Pillow calls JPEGs from cameras that embed a second
# picture; DIB is BMP without its file header.
_ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "GIF", "TIFF")

# What ImageOps.exif_transpose does, keyed by the EXIF Orientation value. We apply it
# ourselves at the end (after downscaling) because the orientation must be read before the
# image is converted, and rotating a small image is cheaper than rotating a big one.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

REASON_EMPTY = "empty file (0 bytes)"
REASON_CORRUPT = "file is truncated or corrupt"
REASON_HEIC = "HEIC photo but pillow-heif is not installed (pip install pillow-heif)"
REASON_NOT_FOUND = "file not found"
REASON_LINK_LOOP = "shortcut loop: it leads back to itself, not to a picture"
REASON_PATH_TOO_LONG = "path too long for this computer"


@lru_cache(maxsize=1)
def _register_heif() -> bool:
    try:
        import pillow_heif  # type: ignore[import-not-found]
    except Exception:  # not installed, or a broken native library: treat as absent
        return False
    try:
        pillow_heif.register_heif_opener()
    except Exception:
        return False
    return True


def heic_supported() -> bool:
    """True when the optional ``pillow-heif`` package is importable (iPhone HEIC photos).

    It is optional because it ships a large native library; without it HEIC files are still
    recognised and reported with the one-line install command.
    """
    return _register_heif()


SUPPORTED_EXTENSIONS: frozenset[str] = _BASE_EXTENSIONS | (HEIC_EXTENSIONS if heic_supported() else frozenset())


# --------------------------------------------------------------------------------------
# Content sniffing: say what a file *is* when it is not a picture we can read.
# --------------------------------------------------------------------------------------

_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"heif"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"qt  ", b"M4V ", b"M4A ", b"3gp4", b"3gp5", b"dash"}


def _sniff(head: bytes) -> tuple[str, str]:
    """Classify the first bytes of a file.

    Returns ``(kind, description)`` where kind is ``"image"`` (a format we decode),
    ``"heic"``, ``"unsupported"`` (a picture format we do not decode), ``"other"`` (not a
    picture at all) or ``"unknown"``.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image", "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WebP"
    if head[:2] == b"BM" and len(head) >= 18:
        return "image", "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return "heic", "HEIC"
        if brand in (b"avif", b"avis"):
            return "unsupported", "AVIF"
        if brand in (b"crx ",):
            return "unsupported", "Canon RAW"
        if brand in _VIDEO_BRANDS or brand.startswith(b"3g"):
            return "other", "a video"
        if head[4:12] == b"ftypJXL ":
            return "unsupported", "JPEG XL"
        return "other", "a video or other media file"
    if head.startswith(b"\x00\x00\x00\x0cJXL ") or head.startswith(b"\xff\x0a"):
        return "unsupported", "JPEG XL"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "unsupported", "JPEG 2000"
    if head.startswith(b"8BPS"):
        return "unsupported", "Photoshop PSD"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(head) >= 10 \
            and 1 <= int.from_bytes(head[4:6], "little") <= 256 and head[9] == 0:
        return "unsupported", "Windows icon"
    if head.startswith(b"gimp xcf"):
        return "unsupported", "GIMP XCF"
    if head.startswith(b"%PDF"):
        return "other", "a PDF document"
    if head.startswith(b"%!PS"):
        return "unsupported", "PostScript/EPS"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "other", "a zip archive or Office document"
    if head.startswith(b"\x1f\x8b"):
        return "other", "a gzip archive"
    if head.startswith(b"Rar!\x1a\x07"):
        return "other", "a RAR archive"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "other", "a 7-Zip archive"
    if head.startswith(b"BZh"):
        return "other", "a bzip2 archive"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "other", "an xz archive"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "other", "audio"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "other", "a video"
    if head.startswith(b"ID3") or head.startswith(b"OggS") or head.startswith(b"fLaC"):
        return "other", "audio"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "other", "a video"
    if head.startswith(b"MZ") or head.startswith(b"\x7fELF") or head[:4] in (b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return "other", "a program"
    if head.startswith(b"SQLite format 3"):
        return "other", "a database"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "unsupported", "PPM/PGM"
    text = _as_text(head)
    if text is not None:
        low = text.lstrip("\ufeff \t\r\n").lower()
        if "<svg" in low:
            return "unsupported", "SVG drawing"
        if low.startswith("<!doctype html") or low.startswith("<html") or "<html" in low[:300]:
            return "other", "a web page (HTML)"
        if low.startswith("{") or low.startswith("["):
            return "other", "text (JSON)"
        return "other", "text"
    return "unknown", "unrecognised binary data"


def _as_text(head: bytes) -> str | None:
    """Decode ``head`` as text if it plausibly is text (UTF-8/UTF-16 or plain ASCII)."""
    if not head:
        return None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return head[: len(head) // 2 * 2].decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # a multi-byte char cut off at the end is fine
            return None
        text = head[: err.start].decode("utf-8")
    if not text:
        return None
    bad = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n\f")
    return text if bad == 0 else None


# the start of an ImageLoadError reason -> what the user can do about it
_FIXES: tuple[tuple[str, str], ...] = (
    ("empty file", "The file has no content, probably from an interrupted copy or download. Copy the picture "
                   "again or delete it."),
    ("file is truncated", "Open it in an image viewer: if it does not show completely, download or copy it again, "
                          "or delete it."),
    ("heic", "Install HEIC support with 'pip install pillow-heif', or export the photos as JPEG (on iPhone: "
             "Settings > Camera > Formats > Most Compatible)."),
    ("not an image", "Remove this file from the image folder (or replace it with the real picture)."),
    ("unsupported format", "Open it in an image editor and save it as JPEG or PNG."),
    ("too large", "Shrink it in an image editor (for example to 4000 x 3000 pixels); the model only looks at small "
                  "versions anyway."),
    ("file not found", "The file was moved or deleted after the folder was scanned; scan the folder again."),
    ("shortcut loop", "Delete the shortcut, or replace it with the real picture."),
    ("path too long", "Move the picture into a folder with a shorter path (fewer or shorter folder names)."),
    ("cannot read", "Check that you have permission to read the file and that the disk is still connected."),
)


def fix_for_reason(reason: str) -> str:
    """Concrete advice for an :class:`ImageLoadError` reason, for reports shown to users."""
    r = reason.lower()
    return next((fix for start, fix in _FIXES if r.startswith(start)),
                "Open the file in an image viewer; if it does not show, delete it or replace it.")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _allowed_formats() -> tuple[str, ...]:
    if heic_supported():
        return _ALLOWED_FORMATS + ("HEIF",)
    return _ALLOWED_FORMATS


def _open_header(fp: IO[bytes], name: str, formats: tuple[str, ...]) -> Image.Image | None:
    """Parse the header with one of ``formats`` without decoding pixels.

    This mirrors what ``Image.open(fp, formats=...)`` does, but without Pillow's own
    decompression-bomb check, which raises before the size is known to us and would let
    us say neither the real size nor our (stricter) limit.
    """
    Image.preinit()
    fp.seek(0)
    prefix = fp.read(16)
    for fmt in formats:
        if fmt not in Image.OPEN:
            Image.init()
        if fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        try:
            ok = True if accept is None else accept(prefix)
            if not ok or isinstance(ok, str):
                continue
            fp.seek(0)
            return factory(fp, name)
        except ImageLoadError:
            raise
        except Exception:  # this format's parser rejected the header: try the next one
            continue
    return None


def _identify_any_format(fp: IO[bytes]) -> str | None:
    """Name the format of a file we will not decode (header only), for a helpful message."""
    try:
        fp.seek(0)
        with Image.open(fp) as im:
            return str(im.format or "") or None
    except BaseException as err:  # noqa: BLE001 - purely informative, never fatal
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return None


def _scale_to_uint8(arr: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Map integer/float samples to 0..255 by scaling (not clipping), rounding to nearest."""
    a = arr.astype(np.float64, copy=False)
    if full_scale is None:
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0.0 and hi <= 1.0 and arr.dtype.kind == "f":
            lo, hi = 0.0, 1.0
        elif lo >= 0.0 and hi <= 255.0 and arr.dtype.kind != "f":
            lo, hi = 0.0, 255.0
        elif lo >= 0.0 and hi <= 65535.0:
            lo, hi = 0.0, 65535.0
        a = (np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / max(hi - lo, 1e-12))
    else:
        a = a * (255.0 / full_scale)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _white_background(im: Image.Image) -> Image.Image:
    """Composite an image with alpha onto white: transparent areas in logos and cut-outs
    are white in every viewer people use, not black (what dropping alpha would give)."""
    rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a person would expect it to look."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I;16S"):
        arr = np.asarray(im)
        gray = _scale_to_uint8(arr, 65535.0 if arr.dtype.kind == "u" else None)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("I", "F", "I;32", "F;32"):
        gray = _scale_to_uint8(np.asarray(im), None)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    ):
        if mode in ("RGBa", "La"):  # premultiplied alpha: let Pillow un-premultiply first
            im = im.convert("RGBA")
        return _white_background(im)
    if mode == "RGB":
        return im.copy()
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")  # L, P, CMYK, YCbCr, RGBX, HSV ... (ValueError if impossible)


def _decode(fp: IO[bytes], name: str, size: int, ext: str, max_side: int | None) -> Image.Image:
    """Shared body of :func:`load_image` and :func:`load_image_bytes`."""
    if size == 0:
        raise ImageLoadError(name, REASON_EMPTY)
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be a positive number of pixels or None")
    fp.seek(0)
    head = fp.read(512)
    kind, what = _sniff(head)

    if kind == "heic" or (kind == "unknown" and ext in HEIC_EXTENSIONS):
        if not heic_supported():
            raise ImageLoadError(name, REASON_HEIC)
    elif kind == "unsupported":
        raise ImageLoadError(name, f"unsupported format ({what}); save it as JPEG or PNG")
    elif kind == "other":
        raise ImageLoadError(name, f"not an image (the content is {what})")

    im = _open_header(fp, name, _allowed_formats())
    if im is None:
        if kind in ("image", "heic"):
            raise ImageLoadError(name, REASON_CORRUPT)
        other = _identify_any_format(fp)
        if other:
            raise ImageLoadError(name, f"unsupported format ({other}); save it as JPEG or PNG")
        if ext in _BASE_EXTENSIONS or ext in HEIC_EXTENSIONS:
            # Named like a picture but with a header nothing recognises: far more often a
            # damaged picture than some other kind of file.
            raise ImageLoadError(name, REASON_CORRUPT)
        raise ImageLoadError(name, "not an image (the content is unrecognised binary data)")

    try:
        width, height = im.size
        if width < 1 or height < 1:
            raise ImageLoadError(name, REASON_CORRUPT)
        if width * height > MAX_PIXELS:
            raise ImageLoadError(
                name,
                f"too large: {width} x {height} pixels is over the {MAX_PIXELS // 1_000_000} megapixel limit",
            )
        if max_side is not None and im.format in ("JPEG", "MPO") and max(width, height) > max_side:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 48 MP photo then needs a
            # fraction of the memory and time. The result is still >= max_side.
            im.draft(None, (max_side, max_side))
        im.load()
        try:  # read after load(): some formats (PNG) only find their EXIF block while decoding
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # broken EXIF must not make a good picture unreadable
            orientation = 1
        out = _to_rgb(im)
        if max_side is not None and max(out.size) > max_side:
            out.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
        method = _ORIENTATION_TRANSPOSE.get(orientation)
        if method is not None:
            out = out.transpose(method)
        if out.mode != "RGB":  # defensive: every path above should already give RGB
            out = out.convert("RGB")
        out.info.clear()  # no stale EXIF/ICC claiming a rotation or colour space we already applied
        return out
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(name, "too large: not enough memory to open it") from None
    except Image.DecompressionBombError:
        raise ImageLoadError(
            name, f"too large: it unpacks to more than the {MAX_PIXELS // 1_000_000} megapixel limit"
        ) from None
    except ValueError as err:
        if "conversion" in str(err).lower():
            raise ImageLoadError(name, f"unsupported format (colour mode {im.mode}); save it as JPEG or PNG") from None
        raise ImageLoadError(name, REASON_CORRUPT) from None
    except Exception:  # Pillow raises OSError, SyntaxError, struct.error, IndexError ... on bad data
        raise ImageLoadError(name, REASON_CORRUPT) from None
    finally:
        try:
            im.close()
        except Exception:
            pass


def _open_failure(err: OSError) -> str:
    """The reason a file could not be opened, in the words :func:`fix_for_reason` knows (the
    system's "Too many levels of symbolic links" does not say what to do)."""
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return REASON_NOT_FOUND
    if err.errno == errno.ELOOP:
        return REASON_LINK_LOOP
    if err.errno == errno.ENAMETOOLONG:
        return REASON_PATH_TOO_LONG
    return f"cannot read the file ({err.strerror or err})"


def load_image(path: str | Path, max_side: int | None = 2048) -> Image.Image:
    """Open ``path`` as an RGB image, upright, at most ``max_side`` pixels on its long side.

    ``max_side=None`` keeps the full size. Raises :class:`ImageLoadError` with a short,
    plain ``reason`` for anything that is not a readable picture.
    """
    name = os.fspath(path)
    p = Path(name)
    try:
        if p.is_dir():
            raise ImageLoadError(name, "not an image (it is a folder)")
        size = p.stat().st_size
        f = open(p, "rb")
    except ImageLoadError:
        raise
    except OSError as err:
        raise ImageLoadError(name, _open_failure(err)) from None
    with f:
        try:
            return _decode(f, name, size, p.suffix.lower(), max_side)
        except ImageLoadError:
            raise
        except OSError as err:  # the disk went away in the middle of reading
            raise ImageLoadError(name, f"cannot read the file ({err.strerror or err})") from None


def load_image_bytes(data: bytes, name: str = "upload", max_side: int | None = 2048) -> Image.Image:
    """Same as :func:`load_image` for bytes that came from an upload (``name`` is only used
    in messages and to recognise a ``.heic`` name)."""
    buf = io.BytesIO(bytes(data))
    return _decode(buf, name, len(buf.getbuffer()), os.path.splitext(str(name))[1].lower(), max_side)

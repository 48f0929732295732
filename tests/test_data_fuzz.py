"""Property-based fuzzing of everything that reads untrusted bytes.

Mutated images through load_image_bytes and mutated zips through extract_zip: the only
exception allowed out is the documented one (ImageLoadError / UploadError), every case is
either loaded or reported, and a refused zip leaves nothing behind. Examples are bounded so
the file runs in well under a minute on two cores.
"""
from __future__ import annotations

import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tl_core.data.images import load_image_bytes
from tl_core.data.uploads import UploadReport, extract_zip, sanitize_relpath
from tl_core.errors import ImageLoadError, UploadError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=False, print_blob=True)


def _picture(size=(24, 16)) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize(size)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _bases() -> dict[str, bytes]:
    pic = _picture()
    rgba = pic.convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [pic, pic.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return {
        "png": _encode(rgba, "PNG"),
        "png16": _encode(Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000), "PNG"),
        "png_palette": _encode(pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG", transparency=0),
        "jpeg": _encode(pic, "JPEG", quality=85, exif=exif),
        "jpeg_progressive": _encode(pic, "JPEG", quality=70, progressive=True),
        "gif": gif.getvalue(),
    }


BASES = _bases()


@st.composite
def mutated(draw, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["set", "set", "flip", "insert", "delete", "header"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:  # headers (sizes, chunk lengths) are where parsers get hurt: hit them more often
            hp = draw(st.integers(0, min(64, len(data) - 1)))
            data[hp] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(st.sampled_from(sorted(BASES)).flatmap(lambda k: mutated(BASES[k])))
def test_mutated_images_load_or_report(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF etc.; not our concern here
        try:
            im = load_image_bytes(data, name="fuzz.png", max_side=256)
        except ImageLoadError as err:
            assert isinstance(err.reason, str) and err.reason
            assert err.path == "fuzz.png"
            return
    assert im.mode == "RGB"
    assert 1 <= im.size[0] <= 256 and 1 <= im.size[1] <= 256
    im.tobytes()  # pixels really there


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    try:
        load_image_bytes(data)
    except ImageLoadError as err:
        assert err.reason


def _base_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pets/", b"")
        zf.writestr(zipfile.ZipInfo("pets/cat/1.png"), BASES["png"], compress_type=zipfile.ZIP_STORED)
        zf.writestr("pets/cat/2.jpg", BASES["jpeg"], compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("pets/dog/3.gif", BASES["gif"], compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("pets/dog/notes.txt", b"woof " * 200, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("__MACOSX/pets/._1.png", b"junk")
    return buf.getvalue()


BASE_ZIP = _base_zip()


def _tree_inside(folder: Path, root: Path) -> bool:
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                return False
            if os.path.commonpath([os.path.realpath(p), real_root]) != real_root:
                return False
    return True


@FUZZ
@given(mutated(BASE_ZIP))
def test_mutated_zips_extract_or_report(data):
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "box"
        box.mkdir()
        dest = box / "upload"
        try:
            report = extract_zip(io.BytesIO(data), dest, max_total_bytes=5_000_000)
        except UploadError as err:
            assert str(err) and "\n" not in str(err)
            assert list(box.iterdir()) == []  # nothing kept, no staging folder left behind
            return
        assert isinstance(report, UploadReport)
        assert report.saved and all(Path(p).is_file() for p in report.saved)
        assert Path(report.dest).is_dir() and _tree_inside(dest, dest)
        assert all(p.message and p.kind for p in report.skipped)
        assert [p.name for p in box.iterdir()] == ["upload"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.lists(st.sampled_from(["a", "b", ".", "..", "/", "\\", ":", "C:", " ", "\x00", "\n", "é", "CON", "\u202e"]),
             max_size=12).map("".join),
    st.text(max_size=40),
))
def test_sanitize_relpath_never_escapes(name):
    rel = sanitize_relpath(name)
    if rel is None:
        return
    assert isinstance(rel, PurePosixPath) and not rel.is_absolute()
    assert ".." not in rel.parts and "" not in rel.parts and "." not in rel.parts
    assert not any(ord(ch) < 32 for ch in str(rel))
    base = "/base/dir"
    assert os.path.normpath(os.path.join(base, *rel.parts)).startswith(base + os.sep)

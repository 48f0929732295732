"""Browser uploads and zip extraction: hostile names, zip bombs, and never touching what exists.

All archives are built in memory here, some with hand-patched headers.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from tl_core.data.scan import scan_folder
from tl_core.data.uploads import UploadReport, extract_zip, sanitize_relpath, save_uploaded_files
from tl_core.errors import TransferLabError, UploadError


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((32, 32))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


def make_zip(entries, compression=zipfile.ZIP_DEFLATED, level: int | None = None) -> bytes:
    """``entries``: (name or ZipInfo, bytes). Names are written verbatim (no sanitising)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression, compresslevel=level) as zf:
        for name, data in entries:
            if isinstance(name, zipfile.ZipInfo):
                zf.writestr(name, data)
            else:
                info = zipfile.ZipInfo(name)
                info.compress_type = compression
                zf.writestr(info, data)
    return buf.getvalue()


def pets_entries(n: int = 3) -> list[tuple[str, bytes]]:
    return [(f"pets/{c}/{i}.jpg", jpeg(k * 100 + i)) for k, c in enumerate(("cat", "dog")) for i in range(n)]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder) + "/"] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = Path(p).read_bytes()
    return out


def no_partials(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name]


def patch_sizes(data: bytes, *, file_size: int | None = None, compress_size: int | None = None) -> bytes:
    """Rewrite the sizes of the first entry in both the local and the central header."""
    buf = bytearray(data)
    assert buf[:4] == b"PK\x03\x04"
    cd = buf.index(b"PK\x01\x02")
    if compress_size is not None:
        buf[18:22] = struct.pack("<I", compress_size)
        buf[cd + 20:cd + 24] = struct.pack("<I", compress_size)
    if file_size is not None:
        buf[22:26] = struct.pack("<I", file_size)
        buf[cd + 24:cd + 28] = struct.pack("<I", file_size)
    return bytes(buf)


# ====================================================================== sanitize_relpath


@pytest.mark.parametrize("name,expected", [
    ("cat/1.jpg", "cat/1.jpg"),
    ("cat\\sub\\1.jpg", "cat/sub/1.jpg"),
    ("./cat//1.jpg", "cat/1.jpg"),
    ("C:cat/1.jpg", "cat/1.jpg"),
    ("Chats noirs/été 1.png", "Chats noirs/été 1.png"),
    ("日本/写真.jpg", "日本/写真.jpg"),
    ("a..b/c..jpg", "a..b/c..jpg"),
    ("../evil.jpg", None),
    ("cat/../../evil.jpg", None),
    ("cat\\..\\..\\evil.jpg", None),
    ("/etc/passwd", None),
    ("\\\\server\\share\\x.jpg", None),
    ("C:\\Windows\\x.jpg", None),
    ("C:/Windows/x.jpg", None),
    ("a\x00b.jpg", None),
    ("cat/a\nb.jpg", None),
    ("cat/\x1b[31mred.jpg", None),
    ("photo\u202egpj.exe", None),
    ("", None),
    (".", None),
    ("./", None),
    ("//", None),
    ("cat/...", None),
    ("cat/CON.jpg", None),
])
def test_sanitize_relpath(name, expected):
    got = sanitize_relpath(name)
    if expected is None:
        assert got is None
    else:
        assert got == PurePosixPath(expected) and not got.is_absolute()


# ====================================================================== folder uploads


def test_dragged_folder_keeps_wrapper_and_points_dest_at_it(tmp_path):
    dest = tmp_path / "uploads" / "u1"
    report = save_uploaded_files(pets_entries(), dest)
    assert isinstance(report, UploadReport)
    assert report.dest == str(dest / "pets") and report.skipped == []
    assert len(report.saved) == 6 and all(Path(p).is_file() for p in report.saved)
    assert (dest / "pets" / "cat" / "0.jpg").read_bytes() == jpeg(0)
    assert scan_folder(report.dest).classes == ["cat", "dog"]
    assert no_partials(dest.parent)


def test_upload_without_wrapper(tmp_path):
    report = save_uploaded_files([("cat/1.jpg", b"a"), ("dog/2.jpg", b"b")], tmp_path / "u")
    assert report.dest == str(tmp_path / "u")


def test_upload_single_class_folder_is_not_entered(tmp_path):
    report = save_uploaded_files([("cat/1.jpg", b"a"), ("cat/2.jpg", b"b")], tmp_path / "u")
    assert report.dest == str(tmp_path / "u")  # "cat" is the class level, not a wrapper


def test_upload_hostile_names(tmp_path):
    dest = tmp_path / "box" / "u"
    files = pets_entries(1) + [
        ("../evil.jpg", b"x"), ("pets/../../evil2.jpg", b"x"), ("/etc/evil3.jpg", b"x"),
        ("C:\\Windows\\evil4.jpg", b"x"), ("pets/cat/a\x00b.jpg", b"x"),
        ("pets\\dog\\win.jpg", b"win"),  # backslashes: just a Windows-style name
        ("pets/.DS_Store", b"x"), ("__MACOSX/pets/._1.jpg", b"x"), ("pets/cat/Thumbs.db", b"x"),
    ]
    report = save_uploaded_files(files, dest)
    assert (dest / "pets" / "dog" / "win.jpg").read_bytes() == b"win"
    unsafe = [p for p in report.skipped if p.kind == "unsafe_name"]
    assert len(unsafe) == 5 and all(p.fix for p in unsafe)
    assert len(report.skipped) == 5  # hidden/system files are skipped silently
    assert "\x00" not in "".join(p.path + p.message for p in report.skipped)
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))
    assert not (dest / "pets" / ".DS_Store").exists() and not (dest / "__MACOSX").exists()


def test_upload_case_duplicates(tmp_path):
    report = save_uploaded_files([("a/X.jpg", b"1"), ("a/x.jpg", b"2"), ("b/y.jpg", b"3")], tmp_path / "u")
    assert [p.kind for p in report.skipped] == ["duplicate_name"]
    assert (tmp_path / "u" / "a" / "X.jpg").read_bytes() == b"1"


def test_upload_file_objects(tmp_path):
    already_read = io.BytesIO(b"hello")
    already_read.read()  # e.g. an upload widget's file that was previewed first
    report = save_uploaded_files([("a/1.jpg", already_read), ("b/2.jpg", bytearray(b"yo"))], tmp_path / "u")
    assert Path(report.saved[0]).read_bytes() == b"hello"
    assert Path(report.saved[1]).read_bytes() == b"yo"


def test_upload_too_many_files_keeps_nothing(tmp_path):
    dest = tmp_path / "u"
    with pytest.raises(UploadError, match="Too many files") as info:
        save_uploaded_files(((f"c{i % 2}/{i}.jpg", b"x") for i in range(50)), dest, max_files=10)
    assert isinstance(info.value, TransferLabError)
    assert not dest.exists() and no_partials(tmp_path)


def test_upload_too_many_bytes_keeps_nothing(tmp_path):
    with pytest.raises(UploadError, match="too big"):
        save_uploaded_files([("a/1.jpg", b"x" * 600), ("b/2.jpg", b"x" * 600)], tmp_path / "u", max_total_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_upload_nothing_saved(tmp_path):
    with pytest.raises(UploadError, match="Nothing could be saved"):
        save_uploaded_files([("../x.jpg", b"1"), (".DS_Store", b"2")], tmp_path / "u")
    assert list(tmp_path.iterdir()) == []


def test_upload_never_replaces_existing_files(tmp_path):
    dest = tmp_path / "u"
    (dest / "pets" / "cat").mkdir(parents=True)
    (dest / "pets" / "cat" / "0.jpg").write_bytes(b"mine")
    before = snapshot(dest)
    with pytest.raises(UploadError, match="already contains 'pets'"):
        save_uploaded_files(pets_entries(), dest)
    assert snapshot(dest) == before and no_partials(tmp_path)
    # a different top-level name is added next to what is there
    report = save_uploaded_files([("more/cat/9.jpg", b"n"), ("more/dog/9.jpg", b"m")], dest)
    assert report.dest == str(dest / "more")
    assert (dest / "pets" / "cat" / "0.jpg").read_bytes() == b"mine"


def test_upload_into_a_file_is_refused(tmp_path):
    (tmp_path / "u").write_text("x")
    with pytest.raises(UploadError, match="is a file"):
        save_uploaded_files([("a/1.jpg", b"1")], tmp_path / "u")


# ====================================================================== zip extraction


def test_zip_with_single_top_folder(tmp_path):
    data = make_zip([("pets/", b"")] + pets_entries() + [("pets/README.txt", b"hello")])
    report = extract_zip(io.BytesIO(data), tmp_path / "x")
    assert report.dest == str(tmp_path / "x" / "pets")
    assert len(report.saved) == 7 and report.skipped == []
    scan = scan_folder(report.dest)
    assert scan.classes == ["cat", "dog"] and len(scan.records) == 6
    assert no_partials(tmp_path)


def test_zip_from_path_without_wrapper(tmp_path):
    z = tmp_path / "data.zip"
    z.write_bytes(make_zip([(n.split("/", 1)[1], d) for n, d in pets_entries()], compression=zipfile.ZIP_STORED))
    report = extract_zip(z, tmp_path / "out")
    assert report.dest == str(tmp_path / "out")
    assert scan_folder(report.dest).classes == ["cat", "dog"]


def test_zip_hostile_entries_skipped(tmp_path):
    link = zipfile.ZipInfo("pets/cat/link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    nested = make_zip(pets_entries(1))
    data = make_zip(pets_entries(1) + [
        ("../evil.txt", b"evil"),
        ("pets/../../evil2.txt", b"evil"),
        ("/abs/evil3.txt", b"evil"),
        ("C:\\evil4.txt", b"evil"),
        (link, b"/etc/passwd"),
        ("pets/cat/more.zip", nested),
        ("pets/dog/old.tar.gz", b"\x1f\x8b" + b"\x00" * 20),
        ("__MACOSX/pets/cat/._0.jpg", b"junk"),
        ("pets/.hidden", b"junk"),
    ])
    dest = tmp_path / "box" / "x"
    report = extract_zip(io.BytesIO(data), dest)
    kinds = sorted(p.kind for p in report.skipped)
    # C:\evil4.txt is refused too: without its drive letter it is still an absolute path
    assert kinds == ["nested_archive", "nested_archive", "symlink"] + ["unsafe_name"] * 4
    assert report.dest == str(dest / "pets")
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))
    assert not (dest / "pets" / "cat" / "link.jpg").exists()
    assert not (dest / "__MACOSX").exists() and not (dest / "pets" / ".hidden").exists()
    assert all(p.message and p.fix for p in report.skipped)


def test_zip_too_many_entries(tmp_path):
    data = make_zip([(f"c{i % 2}/{i}.txt", b"x") for i in range(30)])
    with pytest.raises(UploadError, match="limit is 10"):
        extract_zip(io.BytesIO(data), tmp_path / "x", max_entries=10)
    assert list(tmp_path.iterdir()) == []


def test_zip_total_size_cap(tmp_path):
    rng = np.random.default_rng(0)
    data = make_zip([("a/1.bin", rng.bytes(3000)), ("b/2.bin", rng.bytes(3000))])
    with pytest.raises(UploadError, match="more than"):
        extract_zip(io.BytesIO(data), tmp_path / "x", max_total_bytes=5000)
    assert list(tmp_path.iterdir()) == []


def test_zip_bomb_ratio_cap(tmp_path):
    data = make_zip(pets_entries(1) + [("pets/cat/bomb.bmp", b"\x00" * (30 * 1024 * 1024))], level=9)
    assert len(data) < 200_000
    with pytest.raises(UploadError, match="zip bomb"):
        extract_zip(io.BytesIO(data), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_zip_bomb_with_lying_declared_size(tmp_path):
    """Header says 1000 bytes; 30 MB are really inside. Trusting the header is not an option."""
    honest = make_zip([("pets/cat/bomb.bmp", b"\x00" * (30 * 1024 * 1024))], level=9)
    lying = patch_sizes(honest, file_size=1000)
    assert zipfile.ZipFile(io.BytesIO(lying)).infolist()[0].file_size == 1000
    dest = tmp_path / "x"
    with pytest.raises(UploadError):
        extract_zip(io.BytesIO(lying), dest, max_total_bytes=2_000_000)
    assert not dest.exists() and no_partials(tmp_path)


def test_zip_bomb_with_lying_packed_size(tmp_path):
    """Header claims a huge packed size so the ratio looks harmless; the real archive is tiny."""
    honest = make_zip([("pets/cat/bomb.bmp", b"\x00" * (30 * 1024 * 1024))], level=9)
    lying = patch_sizes(honest, compress_size=25 * 1024 * 1024)
    with pytest.raises(UploadError, match="zip bomb"):
        extract_zip(io.BytesIO(lying), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_small_compressible_files_are_fine(tmp_path):
    data = make_zip([("a/blank.txt", b" " * 500_000), ("b/1.jpg", jpeg(1))], level=9)
    report = extract_zip(io.BytesIO(data), tmp_path / "x")
    assert len(report.saved) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty", "text"])
def test_corrupt_zip(tmp_path, damage):
    good = make_zip(pets_entries(2))
    if damage == "garbage":
        data = os.urandom(500)
    elif damage == "truncated":
        data = good[: len(good) // 2]
    elif damage == "flipped":  # damage the compressed data of the first entry
        buf = bytearray(good)
        start = 30 + len("pets/cat/0.jpg")
        for k in range(start + 10, start + 60):
            buf[k] ^= 0xA5
        data = bytes(buf)
    elif damage == "empty":
        data = b""
    else:
        data = b"this is not a zip at all\n" * 10
    with pytest.raises(UploadError) as info:
        extract_zip(io.BytesIO(data), tmp_path / "x")
    assert "zip" in str(info.value).lower() and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_zip_file(tmp_path):
    with pytest.raises(UploadError, match="not found"):
        extract_zip(tmp_path / "nope.zip", tmp_path / "x")


def test_failed_extraction_leaves_existing_dest_byte_identical(tmp_path):
    dest = tmp_path / "datasets"
    (dest / "old" / "cat").mkdir(parents=True)
    (dest / "old" / "cat" / "1.jpg").write_bytes(jpeg(7))
    (dest / "notes.txt").write_text("keep me")
    before = snapshot(dest)
    mtime = (dest / "notes.txt").stat().st_mtime_ns
    bomb = make_zip(pets_entries(2) + [("pets/cat/zz.bmp", b"\x00" * (30 * 1024 * 1024))], level=9)
    with pytest.raises(UploadError):
        extract_zip(io.BytesIO(bomb), dest)
    corrupt = bytearray(make_zip(pets_entries(2)))
    corrupt[60:120] = b"\x00" * 60
    with pytest.raises(UploadError):
        extract_zip(io.BytesIO(bytes(corrupt)), dest)
    clash = make_zip([("old/cat/1.jpg", b"replacement"), ("old/dog/1.jpg", b"x")])
    with pytest.raises(UploadError, match="already contains 'old'"):
        extract_zip(io.BytesIO(clash), dest)
    assert snapshot(dest) == before
    assert (dest / "notes.txt").stat().st_mtime_ns == mtime
    assert no_partials(tmp_path)
    # and a good zip with new names is added alongside, not over, the existing files
    report = extract_zip(io.BytesIO(make_zip(pets_entries(1))), dest)
    assert report.dest == str(dest / "pets")
    assert {k: v for k, v in snapshot(dest).items() if k in before} == before


def test_zip_encrypted_and_bzip2_entries_skipped(tmp_path):
    buf = bytearray(make_zip([("pets/cat/secret.jpg", b"x" * 10)] + pets_entries(1)))
    cd = buf.index(b"PK\x01\x02")
    buf[6] |= 0x1  # "encrypted" flag, local header
    buf[cd + 8] |= 0x1  # and central directory
    data = bytes(buf)
    report = extract_zip(io.BytesIO(data), tmp_path / "a")
    assert [p.kind for p in report.skipped] == ["encrypted"]
    bz = make_zip(pets_entries(1), compression=zipfile.ZIP_BZIP2)
    with pytest.raises(UploadError, match="Nothing could be saved"):
        extract_zip(io.BytesIO(bz), tmp_path / "b")


def test_zip_with_only_junk(tmp_path):
    data = make_zip([("__MACOSX/._a.jpg", b"x"), (".DS_Store", b"y")])
    with pytest.raises(UploadError, match="Nothing could be saved"):
        extract_zip(io.BytesIO(data), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []

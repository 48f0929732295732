"""Hardening of the data checks and zip uploads (issue 12, items 1 and 7).

Item 1: perceptual hashes of tiny pictures collide, so a close hash only proposes a pair; it is
confirmed on the pixels, and a group only holds pictures that are pairwise copies.
Item 7: hostile zips: many entries that each stay under the per-entry ratio rule, and a zip cut
short so that only the table of contents of a zip stored inside it is left.
"""
from __future__ import annotations

import io
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from tl_core.data.checks import NEAR_DUPLICATE_DISTANCE, check_dataset, near_pairs
from tl_core.data.sample import FASHION_CLASSES, fashion_mnist_available, load_fashion_mnist, write_fashion_mnist
from tl_core.data.uploads import extract_zip
from tl_core.errors import UploadError

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets"
COPY_KINDS = ("duplicate", "label_conflict", "leakage")


def copy_problems(report) -> Counter:
    return Counter(p.kind for p in report.problems if p.kind in COPY_KINDS)


def hash_distance(a: Image.Image, b: Image.Image) -> int:
    return int(imagehash.phash(a) - imagehash.phash(b))


def needs_fashion_mnist() -> None:
    if not fashion_mnist_available():
        pytest.fail("dataset-fashion-mnist is not installed; `make test` installs it")


def needs_pets() -> None:
    if not (PETS / "few").is_dir():
        pytest.skip(f"the pets photos are not at {PETS}")


def pet_photo(label: str = "cat", k: int = 0) -> Path:
    return sorted((PETS / "few" / "train" / label).iterdir())[k]


# ====================================================================== item 1: near copies


def look_alike_pairs(limit: int) -> list[tuple[int, int]]:
    """Disjoint pairs of Fashion-MNIST test pictures from different categories (sandal, sneaker,
    ankle boot) whose perceptual hashes collide although the pictures differ by at least 13/255
    on average (different items, not copies)."""
    images, labels = load_fashion_mnist("test")
    idx = np.concatenate([np.flatnonzero(labels == c)[:500] for c in (5, 7, 9)])
    hashes = np.array([int(str(imagehash.phash(Image.fromarray(images[i]))), 16) for i in idx], dtype=np.uint64)
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for a, b in near_pairs(hashes, NEAR_DUPLICATE_DISTANCE):
        i, j = int(idx[a]), int(idx[b])
        if labels[i] == labels[j] or i in used or j in used:
            continue
        if np.abs(images[i].astype(np.int16) - images[j].astype(np.int16)).mean() < 13:
            continue
        used |= {i, j}
        pairs.append((i, j))
        if len(pairs) == limit:
            break
    return pairs


def test_look_alike_fashion_mnist_pictures_with_colliding_hashes_are_not_copies(tmp_path):
    """Before: 'the same picture is in both ...' errors and train/val leakage for different items."""
    needs_fashion_mnist()
    images, labels = load_fashion_mnist("test")
    pairs = look_alike_pairs(limit=12)
    assert len(pairs) >= 8  # the hazard is real: hashes of these different pictures collide
    for k, (i, j) in enumerate(pairs):
        for side, n in (("train", i), ("val", j)):
            folder = tmp_path / side / FASHION_CLASSES[labels[n]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[n], mode="L").save(folder / f"{k}_{n}.png")
    report = check_dataset(tmp_path)
    assert len(report.readable) == 2 * len(pairs)
    assert copy_problems(report) == Counter()
    assert report.duplicate_groups == []


def test_fashion_mnist_folder_has_no_chained_copy_groups(tmp_path):
    """2,000 real 28x28 pictures. Before: 21 groups (the largest of 26 different pictures, which
    the split kept together) and 2 label conflicts."""
    needs_fashion_mnist()
    root = write_fashion_mnist(tmp_path / "fm", per_class=200, split="test")
    report = check_dataset(root)
    assert len(report.readable) == 2000
    kinds = copy_problems(report)
    assert kinds["label_conflict"] == 0 and kinds["leakage"] == 0
    assert max((len(g) for g in report.duplicate_groups), default=0) <= 2


def test_resaved_and_resized_photo_is_still_a_near_copy(tmp_path):
    needs_pets()
    src = pet_photo("cat")
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for k in range(1, 4):  # other, different photos
            shutil.copy(pet_photo(label, k), tmp_path / label)
    shutil.copy(src, tmp_path / "cat" / "original.jpg")
    photo = Image.open(src).convert("RGB")
    w, h = photo.size
    photo.save(tmp_path / "cat" / "resaved_q25.jpg", quality=25)
    photo.resize((w * 3 // 5, h * 3 // 5), Image.Resampling.BILINEAR).save(tmp_path / "dog" / "smaller_q50.jpg",
                                                                          quality=50)
    photo.resize((w // 3, h // 3), Image.Resampling.LANCZOS).save(tmp_path / "cat" / "thumb.png")
    photo.resize((w * 2, h * 2), Image.Resampling.BICUBIC).save(tmp_path / "cat" / "bigger_q80.jpg", quality=80)
    report = check_dataset(tmp_path)
    groups = [{report.readable[i].rel_path for i in g} for g in report.duplicate_groups]
    assert groups == [{"cat/original.jpg", "cat/resaved_q25.jpg", "dog/smaller_q50.jpg", "cat/thumb.png",
                       "cat/bigger_q80.jpg"}]
    (conflict,) = [p for p in report.problems if p.kind == "label_conflict"]
    assert "near-identical" in conflict.message and "'cat' and 'dog'" in conflict.message


def test_chain_of_look_alikes_is_not_one_group(tmp_path):
    """A slow fade: each frame is a near copy of the next, but the first and the third are not
    copies. Before: union-find chained all four frames into one 'same picture' group."""
    needs_pets()
    base = np.asarray(Image.open(pet_photo("dog")).convert("RGB"), dtype=np.int16)
    frames = [Image.fromarray(np.clip(base + 6 * k, 0, 255).astype(np.uint8)) for k in range(4)]
    for a, b in zip(frames, frames[1:]):
        assert hash_distance(a, b) <= NEAR_DUPLICATE_DISTANCE  # each step is a candidate pair
    (tmp_path / "dog").mkdir()
    (tmp_path / "cat").mkdir()
    for k, frame in enumerate(frames):
        frame.save(tmp_path / "dog" / f"frame{k}.png")
    for k in range(3):
        shutil.copy(pet_photo("cat", k), tmp_path / "cat")
    report = check_dataset(tmp_path)
    groups = [sorted(int(report.readable[i].rel_path[-5]) for i in g) for g in report.duplicate_groups]
    assert groups and all(len(g) == 2 and g[1] - g[0] == 1 for g in groups)  # only next-door frames


# ====================================================================== item 7: hostile zips


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((32, 32))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


def make_zip(entries, compression=zipfile.ZIP_DEFLATED, comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression, compresslevel=9 if compression else None) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        zf.comment = comment
    return buf.getvalue()


def pictures(n: int = 2, top: str = "pets") -> list[tuple[str, bytes]]:
    return [(f"{top}/{c}/{i}.jpg", jpeg(k * 100 + i)) for k, c in enumerate(("cat", "dog")) for i in range(n)]


def test_many_entries_of_exactly_one_mebibyte_of_zeros_are_a_bomb(tmp_path):
    """Each entry sits exactly at the per-entry rule's threshold; together they are a bomb.
    Before: a 68 KB zip wrote 63 MB (921x) and was accepted."""
    data = make_zip(pictures(1) + [(f"pets/cat/{k}.bmp", bytes(1 << 20)) for k in range(60)])
    assert len(data) < 100_000
    dest = tmp_path / "up"
    with pytest.raises(UploadError, match="zip bomb") as info:
        extract_zip(io.BytesIO(data), dest)
    assert "200 times" in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing kept, no partial folder


def test_every_small_entry_counts_toward_the_archive_ratio(tmp_path):
    data = make_zip([(f"pets/dog/{k}.bmp", bytes(100_000)) for k in range(300)])  # 30 MB from ~60 KB
    with pytest.raises(UploadError, match="zip bomb"):
        extract_zip(io.BytesIO(data), tmp_path / "up")
    assert list(tmp_path.iterdir()) == []


def test_ordinary_zips_still_unpack(tmp_path):
    """Pictures, a little compressible text, an archive comment, from a file or from memory."""
    data = make_zip(pictures(3) + [("pets/notes.txt", b"cats and dogs\n" * 40_000)], comment=b"made by hand")
    path = tmp_path / "pets.zip"
    path.write_bytes(data)
    assert len(extract_zip(path, tmp_path / "a").saved) == 7
    assert len(extract_zip(io.BytesIO(data), tmp_path / "b").saved) == 7


def outer_zip_with_inner_zip() -> tuple[bytes, int]:
    """A zip of pictures that also holds a (stored, uncompressed) zip; and where the inner zip ends."""
    inner = make_zip(pictures(2, top="evil"))
    outer = make_zip(pictures(2)[:2] + [("pets/more.zip", inner)] + pictures(2)[2:], compression=zipfile.ZIP_STORED)
    return outer, outer.index(inner) + len(inner)


@pytest.mark.parametrize("cut", ["at_inner_end", "inside_next_entry", "before_directory"])
def test_truncated_zip_does_not_unpack_the_zip_inside_it(tmp_path, cut):
    outer, inner_end = outer_zip_with_inner_zip()
    directory = zipfile.ZipFile(io.BytesIO(outer)).start_dir  # where the outer table of contents begins
    end = {"at_inner_end": inner_end, "inside_next_entry": inner_end + 40, "before_directory": directory - 5}[cut]
    damaged = outer[:end]
    # the hazard: Python's zipfile reads the inner zip's table of contents and calls it whole
    names = zipfile.ZipFile(io.BytesIO(damaged)).namelist()
    assert names and all(n.startswith("evil/") for n in names)
    with pytest.raises(UploadError, match="damaged or incomplete") as info:
        extract_zip(io.BytesIO(damaged), tmp_path / "up")
    assert "zip again" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert len(extract_zip(io.BytesIO(outer), tmp_path / "whole").saved) == 4  # the whole zip is fine


def test_zip_with_bytes_in_front_is_refused_as_damaged(tmp_path):
    """Data before the first entry means the file is not one plain zip (zipfile would skip it)."""
    path = tmp_path / "odd.zip"
    path.write_bytes(b"\x00" * 1000 + make_zip(pictures(2)))
    with pytest.raises(UploadError, match="damaged or incomplete"):
        extract_zip(path, tmp_path / "up")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.zip"]

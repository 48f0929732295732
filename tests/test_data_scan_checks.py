"""Folder scanning, dataset checks, the stratified split and prepare_dataset.

Every data set is generated into tmp_path with PIL/numpy.
"""
from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tl_core.config import DataConfig
from tl_core.data.checks import (
    IMBALANCE_WARN_RATIO,
    SEVERE_IMBALANCE_RATIO,
    CheckReport,
    check_dataset,
)
from tl_core.data.dataset import PreparedDataset, prepare_dataset
from tl_core.data.images import heic_supported
from tl_core.data.scan import DatasetScan, ImageRecord, Problem, scan_folder
from tl_core.data.split import Split, stratified_split
from tl_core.errors import DataError


def picture(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth random picture: distinct per seed, stable under re-encoding/resizing."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


_seed = iter(range(10_000, 1_000_000))


def img(path: Path, seed: int | None = None, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(next(_seed) if seed is None else seed).save(path, fmt, **kw)
    return path


def make_classes(root: Path, counts: dict[str, int], ext: str = ".png") -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img(root / name / f"{i}{ext}")
    return root


def kinds(problems: list[Problem]) -> Counter:
    return Counter(p.kind for p in problems)


def only(problems: list[Problem], kind: str) -> list[Problem]:
    return [p for p in problems if p.kind == kind]


# ====================================================================== scan: refusals


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(f)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="needs POSIX permissions, non-root")
def test_unreadable_root(tmp_path):
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0)
    try:
        with pytest.raises(DataError, match="cannot be read"):
            scan_folder(root)
    finally:
        root.chmod(0o755)


def test_empty_root_no_class_folders(tmp_path):
    with pytest.raises(DataError, match="no class folders: put images in one subfolder per category, e.g. cats/ and dogs/"):
        scan_folder(tmp_path)


def test_images_only_at_root(tmp_path):
    for i in range(3):
        img(tmp_path / f"{i}.jpg")
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    msg = str(info.value)
    assert "no class folders" in msg and "3 pictures are directly in" in msg and "cats/ and dogs/" in msg


def test_single_class(tmp_path):
    make_classes(tmp_path, {"cats": 4})
    with pytest.raises(DataError, match="need at least 2 categories") as info:
        scan_folder(tmp_path)
    assert "'cats'" in str(info.value)


def test_single_wrapper_folder_hint(tmp_path):
    make_classes(tmp_path / "pets", {"cat": 3, "dog": 3})
    with pytest.raises(DataError, match="need at least 2 categories") as info:
        scan_folder(tmp_path)
    assert "did you mean" in str(info.value) and str(tmp_path / "pets") in str(info.value)


def test_second_class_empty_is_named(tmp_path):
    make_classes(tmp_path, {"cats": 3, "dogs": 0})
    with pytest.raises(DataError, match="need at least 2 categories") as info:
        scan_folder(tmp_path)
    assert "'dogs'" in str(info.value) and "empty" in str(info.value)


def test_no_images_at_all(tmp_path):
    for c in ("cats", "dogs"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "notes.txt").write_text("hi")
    (tmp_path / "dogs" / "logo.svg").write_text("<svg/>")
    with pytest.raises(DataError, match="No pictures found") as info:
        scan_folder(tmp_path)
    assert "cannot read" in str(info.value)  # the SVG is mentioned with the fix


# ====================================================================== scan: structure


def test_basic_scan(tmp_path):
    make_classes(tmp_path, {"dogs": 5, "cats": 6})
    scan = scan_folder(tmp_path)
    assert isinstance(scan, DatasetScan)
    assert scan.classes == ["cats", "dogs"] and scan.layout == "classes"
    assert scan.counts() == {"cats": 6, "dogs": 5}
    assert scan.problems == []
    r = scan.records[0]
    assert isinstance(r, ImageRecord) and os.path.isabs(r.path) and r.label == "cats"
    assert r.rel_path == "cats/0.png" and r.split is None
    assert [x.label for x in scan.records] == ["cats"] * 6 + ["dogs"] * 5


def test_empty_class_folder(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5, "birds": 0})
    scan = scan_folder(tmp_path)
    assert scan.classes == ["cats", "dogs"]
    (p,) = only(scan.problems, "empty_class")
    assert "'birds'" in p.message and p.fix and p.severity == "warning"


def test_class_with_one_and_three_images(tmp_path):
    make_classes(tmp_path, {"one": 1, "three": 3, "many": 8})
    scan = scan_folder(tmp_path)
    (p1,) = only(scan.problems, "too_few_to_split")
    assert "'one'" in p1.message and p1.severity == "error"
    (p3,) = only(scan.problems, "too_few_images")
    assert "'three'" in p3.message and p3.severity == "warning" and "20" in p3.fix


def test_loose_file_next_to_class_folders(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    img(tmp_path / "stray.jpg")
    (tmp_path / "README.txt").write_text("my data")  # normal, not reported
    scan = scan_folder(tmp_path)
    (p,) = only(scan.problems, "loose_file")
    assert p.path.endswith("stray.jpg") and "category folder" in p.message and "Move" in p.fix
    assert len(scan.records) == 10
    assert not only(scan.problems, "not_image")


def test_unicode_and_spaces(tmp_path):
    img(tmp_path / "Chats noirs" / "été 1.png")
    img(tmp_path / "Chats noirs" / "日本 2.png")
    img(tmp_path / "chiens" / "a b.png")
    img(tmp_path / "chiens" / "c.png")
    scan = scan_folder(tmp_path)
    assert scan.classes == ["Chats noirs", "chiens"]
    assert {r.rel_path for r in scan.records} >= {"Chats noirs/été 1.png", "Chats noirs/日本 2.png"}
    assert all(Path(r.path).is_file() for r in scan.records)


def test_nfd_folder_name_is_normalised(tmp_path):
    nfd = unicodedata.normalize("NFD", "été")
    make_classes(tmp_path, {nfd: 2, "hiver": 2})
    scan = scan_folder(tmp_path)
    assert "été" in scan.classes  # NFC, as typed


def test_hidden_and_system_files_ignored(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    img(tmp_path / "cats" / ".hidden.jpg")
    img(tmp_path / "cats" / "._0.png")
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "cats" / "Thumbs.db").write_bytes(b"\x00")
    (tmp_path / "dogs" / "desktop.ini").write_text("[x]")
    img(tmp_path / "__MACOSX" / "cats" / "._0.png")
    img(tmp_path / ".ipynb_checkpoints" / "x.png")
    img(tmp_path / "cats" / ".ipynb_checkpoints" / "y.png")
    img(tmp_path / ".git" / "z.png")
    scan = scan_folder(tmp_path)
    assert scan.classes == ["cats", "dogs"]
    assert len(scan.records) == 10
    assert scan.problems == []


def test_nested_folders_belong_to_first_level(tmp_path):
    img(tmp_path / "cats" / "2021" / "beach" / "a.jpg")
    img(tmp_path / "cats" / "b.jpg")
    img(tmp_path / "dogs" / "x" / "c.jpg")
    img(tmp_path / "dogs" / "d.jpg")
    scan = scan_folder(tmp_path)
    assert scan.counts() == {"cats": 2, "dogs": 2}
    assert "cats/2021/beach/a.jpg" in {r.rel_path for r in scan.records}


def test_non_image_files_reported_not_fatal(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    (tmp_path / "cats" / "labels.csv").write_text("a,b")
    (tmp_path / "dogs" / "photo.psd").write_bytes(b"8BPS")
    scan = scan_folder(tmp_path)
    (n,) = only(scan.problems, "not_image")
    assert n.severity == "info" and n.path.endswith("labels.csv")
    (u,) = only(scan.problems, "unsupported_image")
    assert "JPEG or PNG" in u.fix


def test_many_non_images_grouped(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    for i in range(12):
        (tmp_path / "cats" / f"n{i}.txt").write_text("x")
    scan = scan_folder(tmp_path)
    (p,) = only(scan.problems, "not_image")
    assert p.message.startswith("12 files in 'cats'")


def test_train_val_layout_honoured(tmp_path):
    make_classes(tmp_path / "train", {"cat": 4, "dog": 4})
    make_classes(tmp_path / "validation", {"cat": 2, "dog": 2})
    make_classes(tmp_path / "test", {"cat": 1, "dog": 1})
    scan = scan_folder(tmp_path)
    assert scan.layout == "train_val"
    assert scan.classes == ["cat", "dog"]
    splits = Counter((r.split, r.label) for r in scan.records)
    assert splits == {("train", "cat"): 4, ("train", "dog"): 4, ("val", "cat"): 2, ("val", "dog"): 2,
                      ("test", "cat"): 1, ("test", "dog"): 1}
    assert {r.rel_path.split("/")[0] for r in scan.records} == {"train", "validation", "test"}


def test_classes_named_train_and_test_are_just_classes(tmp_path):
    make_classes(tmp_path, {"train": 3, "test": 3})  # pictures directly inside: these are classes
    scan = scan_folder(tmp_path)
    assert scan.layout == "classes" and scan.classes == ["test", "train"]


def test_train_val_layout_problems(tmp_path):
    make_classes(tmp_path / "train", {"cat": 4})
    make_classes(tmp_path / "val", {"cat": 2, "dog": 2})
    make_classes(tmp_path / "extra", {"cat": 1})
    scan = scan_folder(tmp_path)
    assert kinds(scan.problems)["missing_in_train"] == 1
    assert "'dog'" in only(scan.problems, "missing_in_train")[0].message
    assert kinds(scan.problems)["extra_folder"] == 1


def test_similar_class_names(tmp_path):
    make_classes(tmp_path, {"Cat": 3, "cat": 3, "dog": 3})
    if len(os.listdir(tmp_path)) < 3:
        pytest.skip("case-insensitive file system")
    scan = scan_folder(tmp_path)
    assert kinds(scan.problems)["similar_class_names"] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlinks_outside_root_not_followed(tmp_path):
    outside = make_classes(tmp_path / "outside", {"secret": 3})
    root = make_classes(tmp_path / "data", {"cats": 3, "dogs": 3})
    os.symlink(outside / "secret", root / "secret")  # a class folder that leaves the root
    os.symlink(outside / "secret" / "0.png", root / "cats" / "linked.png")
    os.symlink(root / "cats" / "0.png", root / "dogs" / "inside_link.png")  # inside: followed
    os.symlink(root, root / "cats" / "loop")  # a loop back to the root
    os.symlink(root / "cats", root / "cats" / "sub_loop")
    scan = scan_folder(root)
    assert scan.classes == ["cats", "dogs"]
    assert scan.counts() == {"cats": 3, "dogs": 4}
    assert kinds(scan.problems)["outside_link"] == 2


# ====================================================================== checks


def test_check_unreadable_files(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    (tmp_path / "cats" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dogs" / "fake.jpg").write_text("not a picture")
    seen = []
    report = check_dataset(tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert isinstance(report, CheckReport)
    assert len(report.scan.records) == 12 and len(report.readable) == 10
    assert report.counts == {"cats": 5, "dogs": 5}
    bad = {Path(p.path).name: p for p in only(report.problems, "unreadable")}
    assert "empty file (0 bytes)" in bad["empty.jpg"].message and bad["empty.jpg"].fix
    assert "not an image" in bad["fake.jpg"].message
    assert seen[0] == (0, 12) and seen[-1] == (12, 12) and len(seen) == 13
    assert report.duplicate_groups == []


def test_check_all_unreadable_in_a_class(tmp_path):
    make_classes(tmp_path, {"cats": 3})
    (tmp_path / "dogs").mkdir()
    for i in range(2):
        (tmp_path / "dogs" / f"{i}.jpg").write_bytes(b"")
    report = check_dataset(tmp_path)
    (p,) = only(report.problems, "no_readable_images")
    assert p.severity == "error" and "'dogs'" in p.message
    assert report.imbalance_ratio == 1.0


@pytest.mark.skipif(heic_supported(), reason="pillow-heif is installed")
def test_check_heic_without_pillow_heif(tmp_path):
    make_classes(tmp_path, {"cats": 3, "dogs": 3})
    (tmp_path / "cats" / "IMG_1.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 40)
    report = check_dataset(tmp_path)
    (p,) = only(report.problems, "unreadable")
    assert "pip install pillow-heif" in p.message and "pillow-heif" in p.fix


def test_exact_duplicate_within_class_is_info(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    (tmp_path / "cats" / "copy.png").write_bytes((tmp_path / "cats" / "1.png").read_bytes())
    report = check_dataset(tmp_path)
    (p,) = only(report.problems, "duplicate")
    assert p.severity == "info" and "exact copies" in p.message and "Harmless" in p.fix
    assert len(report.duplicate_groups) == 1
    names = {report.readable[i].rel_path for i in report.duplicate_groups[0]}
    assert names == {"cats/1.png", "cats/copy.png"}
    assert not only(report.problems, "label_conflict")


def test_same_picture_in_two_classes_is_label_conflict(tmp_path):
    make_classes(tmp_path, {"cat": 5, "dog": 5})
    (tmp_path / "dog" / "oops.png").write_bytes((tmp_path / "cat" / "2.png").read_bytes())
    report = check_dataset(tmp_path)
    (p,) = only(report.problems, "label_conflict")
    assert p.severity == "error"
    assert "the same picture is in both 'cat' and 'dog'" in p.message.lower()
    assert "cat/2.png" in p.message and "dog/oops.png" in p.message and p.fix


def test_near_duplicates_detected(tmp_path):
    make_classes(tmp_path, {"cats": 5, "dogs": 5})
    original = picture(424242, (200, 150))
    original.save(tmp_path / "cats" / "orig.png")
    original.save(tmp_path / "cats" / "resaved.jpg", quality=60)  # re-encoded
    original.resize((120, 90), Image.Resampling.LANCZOS).save(tmp_path / "dogs" / "small.png")  # resized
    report = check_dataset(tmp_path)
    groups = [{report.readable[i].rel_path for i in g} for g in report.duplicate_groups]
    assert {"cats/orig.png", "cats/resaved.jpg", "dogs/small.png"} in groups
    assert len(groups) == 1
    (p,) = only(report.problems, "label_conflict")
    assert "near-identical" in p.message
    exact_only = check_dataset(tmp_path, near_duplicates=False)
    assert exact_only.duplicate_groups == []


def test_flat_colours_are_not_near_duplicates(tmp_path):
    # phash ignores colour: solid red and solid blue hash alike. They are not copies.
    for c, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (32, 32), tuple(max(0, v - 10 * i) for v in rgb)).save(tmp_path / c / f"{i}.png")
    report = check_dataset(tmp_path)
    assert not only(report.problems, "label_conflict")


def test_leakage_across_user_split(tmp_path):
    make_classes(tmp_path / "train", {"cat": 4, "dog": 4})
    make_classes(tmp_path / "val", {"cat": 2, "dog": 2})
    (tmp_path / "val" / "cat" / "again.png").write_bytes((tmp_path / "train" / "cat" / "0.png").read_bytes())
    report = check_dataset(tmp_path)
    (p,) = only(report.problems, "leakage")
    assert "train/" in p.message and "val/" in p.message and p.fix
    assert kinds(report.problems)["duplicate"] == 1


def test_imbalance_warning_and_json(tmp_path):
    make_classes(tmp_path, {"big": 13, "small": 3, "mid": 6})
    report = check_dataset(tmp_path)
    assert report.imbalance_ratio == pytest.approx(13 / 3)
    (p,) = only(report.problems, "imbalance")
    assert p.severity == "warning" and "'big'" in p.message and "'small'" in p.message
    assert "'small'" in p.fix and "balance" in p.fix and "'mid'" not in p.fix
    data = report.to_dict()
    json.dumps(data)
    assert data["images"] == 22 and data["classes"] == ["big", "mid", "small"]
    assert data["counts"] == {"big": 13, "mid": 6, "small": 3}
    assert data["imbalance_ratio"] == pytest.approx(13 / 3) and data["duplicate_groups"] == 0
    assert {"kind", "path", "message", "fix", "severity"} <= set(data["problems"][0])


def test_severe_imbalance_and_no_warning_when_balanced(tmp_path):
    assert IMBALANCE_WARN_RATIO == 3.0 and SEVERE_IMBALANCE_RATIO == 10.0
    make_classes(tmp_path / "a", {"x": 22, "y": 2})
    assert "strong imbalance" in only(check_dataset(tmp_path / "a").problems, "imbalance")[0].message
    make_classes(tmp_path / "b", {"x": 6, "y": 2})  # ratio exactly 3: fine
    assert not only(check_dataset(tmp_path / "b").problems, "imbalance")


# ====================================================================== split


def test_split_counts_and_determinism():
    labels = [0] * 10 + [1] * 5 + [2] * 2 + [3]
    s = stratified_split(labels, 0.2, seed=1)
    assert isinstance(s, Split)
    assert sorted(s.train + s.val) == list(range(len(labels)))
    val_per = Counter(labels[i] for i in s.val)
    assert val_per == {0: 2, 1: 1, 2: 1}  # round(10*.2)=2, round(5*.2)=1, 2 images -> 1 each side
    assert 17 in s.train  # a class with one image trains
    assert stratified_split(labels, 0.2, seed=1) == s
    assert any(stratified_split(labels, 0.2, seed=k).val != s.val for k in range(2, 6))


def test_split_rounding_and_keeps_one_in_train():
    assert len(stratified_split([0] * 5, 0.5, 0).val) == 2  # round(2.5) == 2, as Python rounds
    assert len(stratified_split([0] * 7, 0.5, 0).val) == 4  # round(3.5) == 4
    assert len(stratified_split([0] * 5, 0.05, 0).val) == 1  # at least one to check on
    s = stratified_split([0, 0, 1, 1], 0.5, 3)
    assert len(s.val) == 2 and len(s.train) == 2


def test_split_keeps_groups_together():
    labels = [0] * 8 + [1] * 8
    groups = [-1] * 16
    for i in (0, 1, 2):
        groups[i] = 7  # three copies of one picture
    for seed in range(20):
        s = stratified_split(labels, 0.3, seed, groups=groups)
        sides = {("val" if i in s.val else "train") for i in (0, 1, 2)}
        assert len(sides) == 1
        assert Counter(labels[i] for i in s.val)[0] >= 1


def test_leakage_forced_split_keeps_conflicting_copies_together(tmp_path):
    """Duplicates across classes: the conflict is reported and the split never separates them."""
    make_classes(tmp_path, {"cat": 6, "dog": 6})
    for k in range(3):
        (tmp_path / "dog" / f"dup{k}.png").write_bytes((tmp_path / "cat" / f"{k}.png").read_bytes())
    report = check_dataset(tmp_path)
    assert kinds(report.problems)["label_conflict"] == 3
    assert len(report.duplicate_groups) == 3
    classes = report.scan.classes
    labels = [classes.index(r.label) for r in report.readable]
    groups = [-1] * len(labels)
    for gid, g in enumerate(report.duplicate_groups):
        for i in g:
            groups[i] = gid
    for seed in range(10):
        s = stratified_split(labels, 0.5, seed, groups=groups)
        for g in report.duplicate_groups:
            assert len({i in s.val for i in g}) == 1
        assert {labels[i] for i in s.val} == {0, 1} and {labels[i] for i in s.train} == {0, 1}


def test_split_validation():
    with pytest.raises(ValueError):
        stratified_split([0, 1], 1.0, 0)
    with pytest.raises(ValueError):
        stratified_split([0, 1], 0.2, 0, groups=[1])
    assert stratified_split([], 0.2, 0) == Split([], [])


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    frac=st.floats(0.05, 0.5),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_split_properties(labels, frac, seed, data):
    groups = data.draw(st.lists(st.integers(-1, 6), min_size=len(labels), max_size=len(labels)))
    s = stratified_split(labels, frac, seed, groups=groups)
    assert sorted(s.train + s.val) == list(range(len(labels)))
    assert s == stratified_split(labels, frac, seed, groups=groups)
    val = set(s.val)
    for g in set(groups) - {-1}:
        assert len({i in val for i, x in enumerate(groups) if x == g}) == 1
    n = Counter(labels)
    if all(x == -1 for x in groups):
        for c, k in n.items():
            v = sum(1 for i in s.val if labels[i] == c)
            if k == 1:
                assert v == 0
            else:
                assert 1 <= v <= k - 1 and v == min(max(1, int(round(k * frac))), k - 1)
    for c, k in n.items():  # whatever the groups, nothing is validated that has no training copy
        if k >= 1 and all(x == -1 for i, x in enumerate(groups) if labels[i] == c):
            assert any(labels[i] == c for i in s.train)


# ====================================================================== prepare_dataset


def test_prepare_dataset_classes_layout(tmp_path):
    make_classes(tmp_path, {"cats": 10, "dogs": 5})
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (tmp_path / "cats" / "copy.png").write_bytes((tmp_path / "cats" / "0.png").read_bytes())
    prepared = prepare_dataset(DataConfig(root=str(tmp_path), val_fraction=0.2, split_seed=3))
    assert isinstance(prepared, PreparedDataset)
    assert prepared.classes == ["cats", "dogs"]
    assert len(prepared.train) + len(prepared.val) == 16 and prepared.test == []
    assert all(not r.path.endswith("broken.jpg") for r in prepared.train + prepared.val)
    assert Counter(r.label for r in prepared.val) == {"cats": 2, "dogs": 1}
    val_paths = {r.rel_path for r in prepared.val}
    assert ("cats/0.png" in val_paths) == ("cats/copy.png" in val_paths)
    assert set(prepared.labels(prepared.train)) == {0, 1}
    again = prepare_dataset(DataConfig(root=str(tmp_path), val_fraction=0.2, split_seed=3))
    assert [r.path for r in again.val] == [r.path for r in prepared.val]


def test_prepare_dataset_user_split(tmp_path):
    make_classes(tmp_path / "train", {"cat": 4, "dog": 4})
    make_classes(tmp_path / "valid", {"cat": 2, "dog": 2})
    make_classes(tmp_path / "test", {"cat": 1, "dog": 2})
    prepared = prepare_dataset(DataConfig(root=str(tmp_path)))
    assert (len(prepared.train), len(prepared.val), len(prepared.test)) == (8, 4, 3)
    assert all(r.split == "train" for r in prepared.train)


def test_prepare_dataset_train_and_test_only_splits_train(tmp_path):
    make_classes(tmp_path / "train", {"cat": 5, "dog": 5})
    make_classes(tmp_path / "test", {"cat": 1, "dog": 1})
    prepared = prepare_dataset(DataConfig(root=str(tmp_path), val_fraction=0.2))
    assert len(prepared.val) == 2 and len(prepared.train) == 8 and len(prepared.test) == 2


def test_prepare_dataset_errors(tmp_path):
    make_classes(tmp_path / "a", {"cats": 3})
    (tmp_path / "a" / "dogs").mkdir()
    (tmp_path / "a" / "dogs" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="at least 2"):
        prepare_dataset(DataConfig(root=str(tmp_path / "a")))
    make_classes(tmp_path / "b", {"cats": 3, "dogs": 3})
    (tmp_path / "b" / "birds").mkdir()
    (tmp_path / "b" / "birds" / "x.jpg").write_text("text")
    with pytest.raises(DataError, match="'birds'"):
        prepare_dataset(DataConfig(root=str(tmp_path / "b")))
    make_classes(tmp_path / "c" / "train", {"cat": 3})
    make_classes(tmp_path / "c" / "val", {"cat": 1, "dog": 1})
    with pytest.raises(DataError, match="No training pictures for 'dog'"):
        prepare_dataset(DataConfig(root=str(tmp_path / "c")))
    make_classes(tmp_path / "d", {"cats": 1, "dogs": 1})
    with pytest.raises(DataError, match="aside"):
        prepare_dataset(DataConfig(root=str(tmp_path / "d")))


def test_prepare_dataset_test_root(tmp_path):
    root = make_classes(tmp_path / "data", {"cats": 5, "dogs": 5})
    test = make_classes(tmp_path / "test", {"cats": 2})  # a subset of the classes is fine
    (test / "cats" / "leak.png").write_bytes((root / "dogs" / "1.png").read_bytes())
    prepared = prepare_dataset(DataConfig(root=str(root), test_root=str(test)))
    assert len(prepared.test) == 3 and {r.label for r in prepared.test} == {"cats"}
    (leak,) = only(prepared.report.problems, "leakage")
    assert "leak.png" in leak.message and "dogs/1.png" in leak.message
    bad = make_classes(tmp_path / "test2", {"cats": 1, "horses": 1})
    with pytest.raises(DataError, match="'horses'"):
        prepare_dataset(DataConfig(root=str(root), test_root=str(bad)))

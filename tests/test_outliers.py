"""Odd pictures (issue 13): ``tl check`` flags pictures that look unlike the rest of their category,
on real photos (``../shared/datasets/pets``), with other-domain pictures injected.

Measured with these tests' pictures and tl_core.data.outliers' thresholds (offline EfficientNet-Lite0
features; 2 CPU cores):

* clean folders: pets few/train 1 flag in 80 pictures, few/test 3 in 400, a 1,000-picture slice of
  pets large 3, all of pets large 11 in 5,000 (0.2%); looked at, most are real oddities of the photo
  set (a rose drawing, a "PITS Project" logo, shelter flyers and logos, a man's portrait), the rest
  unusual photos (a cat in a tunnel, a dog in a washing machine). The bundled Fashion-MNIST sample:
  2 of 200; Fashion-MNIST 2,000 (10 classes): 18.
* injected: 10 odd pictures (2 placeholders, 2 screenshots, 2 Fashion-MNIST, 2 other photos, a cat
  in the dog folder, a dog in the cat folder) into the 400 clean pictures of few/test: 9 found (the
  cat filed as a dog was not), 3 flags on the clean pictures. One picture injected into random
  cat/dog folders of n pictures per category (pets large without its 25 oddest): placeholders found
  77% (n=8), 97% (n=20), 100% (n>=40); screenshots 62%, 96%, 100%; Fashion-MNIST 10%, 59%, 78% (n=40),
  100% (n=200); a cat among the dogs 41-57%. Flags on those clean folders: 0.05-0.1 per folder up to
  n=40, 0.25 per 400 pictures.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import tl_core
from tl_core.data import outliers
from tl_core.data.outliers import MIN_PICTURES, score_pictures
from tl_core.data.sample import fashion_mnist_available, load_fashion_mnist

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets"


@pytest.fixture(scope="module", autouse=True)
def _pets_photos():
    if not (PETS / "few").is_dir():
        pytest.skip(f"the pets photos are not at {PETS}")
    if not fashion_mnist_available():
        pytest.fail("dataset-fashion-mnist is not installed; `make test` installs it")


# -- odd pictures, drawn or borrowed -------------------------------------------------------------------

def placeholder_picture(size: tuple[int, int] = (180, 180), text: str = "image not found",
                        grey: int = 224) -> Image.Image:
    """What a broken download often leaves behind: light grey, a picture icon, "image not found"."""
    w, h = size
    im = Image.new("RGB", size, (grey, grey, grey))
    d = ImageDraw.Draw(im)
    d.rectangle([w * 0.3, h * 0.2, w * 0.7, h * 0.55], outline=(150, 150, 150), width=3)
    d.polygon([(w * 0.33, h * 0.52), (w * 0.45, h * 0.35), (w * 0.55, h * 0.47), (w * 0.6, h * 0.4),
               (w * 0.67, h * 0.52)], fill=(170, 170, 170))
    d.ellipse([w * 0.58, h * 0.25, w * 0.65, h * 0.32], fill=(170, 170, 170))
    d.text((w * 0.5, h * 0.7), text, fill=(110, 110, 110), anchor="mm", font=ImageFont.load_default(size=14))
    return im


def screenshot_picture(size: tuple[int, int] = (320, 200)) -> Image.Image:
    """A settings window: title bar, lines of text with check boxes, a button."""
    w, h = size
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w, 22], fill=(60, 90, 160))
    d.text((8, 5), "Settings - My App", fill="white")
    for i, y in enumerate(range(35, h - 30, 16)):
        d.text((12, y), f"Option {i + 1}: enable feature number {i * 7 % 13}", fill=(30, 30, 30))
        d.rectangle([w - 40, y, w - 28, y + 10], outline=(80, 80, 80))
    d.rounded_rectangle([w - 90, h - 26, w - 10, h - 6], 4, fill=(40, 120, 220))
    d.text((w - 70, h - 22), "Save", fill="white")
    return im


def fashion_picture(index: int) -> Image.Image:
    """A 28-pixel grey Fashion-MNIST picture (test split)."""
    images, _ = load_fashion_mnist("test")
    return Image.fromarray(images[index], mode="L")


def other_photo(name: str) -> Image.Image:
    """A real photo of something else (scikit-learn's sample pictures: a temple, a flower)."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def pets_copy(dest: Path, source: str, per_class: int | None = None) -> Path:
    """A copy of a pets folder (``few/train``...), optionally the first ``per_class`` of each."""
    for label in ("cat", "dog"):
        (dest / label).mkdir(parents=True, exist_ok=True)
        files = sorted((PETS / source / label).iterdir())
        for f in files[:per_class] if per_class else files:
            shutil.copy2(f, dest / label / f.name)
    return dest


def odd_found(report) -> dict[str, str]:
    """file name -> message of every picture flagged as odd."""
    return {Path(p.path).name: p.message for p in report.problems if p.kind == "outlier"}


# -- the check on real photos ----------------------------------------------------------------------

def test_placeholder_among_cats_is_flagged(tmp_path):
    root = pets_copy(tmp_path / "pets", "few/train")
    placeholder_picture().save(root / "cat" / "image-not-found.png")
    report = tl_core.check(root)
    (problem,) = [p for p in report.problems if Path(p.path).name == "image-not-found.png"]
    assert problem.kind == "outlier" and problem.severity == "warning"
    assert problem.path == str(root / "cat" / "image-not-found.png")
    assert problem.message.startswith("This picture looks unlike the other 'cat' pictures (")
    assert problem.message.endswith("Is it in the right folder?")
    assert "cat/image-not-found.png" in problem.fix and "move it out of the data folder" in problem.fix
    assert len(odd_found(report)) <= 3, odd_found(report)   # the placeholder and at most two real photos
    summary = report.to_dict()["odd_pictures"]
    assert summary["looked_for"] and summary["categories"] == ["cat", "dog"] and summary["found"] >= 1


def test_fashion_mnist_picture_among_dogs_is_flagged(tmp_path):
    root = pets_copy(tmp_path / "pets", "few/train")
    fashion_picture(1).save(root / "dog" / "pullover.png")
    found = odd_found(tl_core.check(root))
    assert "pullover.png" in found, found
    assert "unlike the other 'dog' pictures" in found["pullover.png"]


def test_clean_few_pets_get_at_most_a_few_flags():
    report = tl_core.check(PETS / "few" / "train")
    assert len(report.readable) == 80
    assert len(odd_found(report)) <= 2, odd_found(report)   # measured: 1 (dog/2099.jpg, a cat-like photo in a cage)


@pytest.mark.slow
def test_clean_large_slice_gets_at_most_a_few_flags(tmp_path):
    root = pets_copy(tmp_path / "pets", "large", per_class=500)
    report = tl_core.check(root)
    assert len(report.readable) == 1000
    assert len(odd_found(report)) <= 5, odd_found(report)   # measured: 3 in 1,000


@pytest.mark.slow
def test_ten_odd_pictures_in_four_hundred_clean_ones(tmp_path):
    root = pets_copy(tmp_path / "pets", "few/test")
    clean = {f.name for f in root.rglob("*.jpg")}
    placeholder_picture().save(root / "cat" / "odd-placeholder-1.png")
    placeholder_picture((300, 200), "Image not available", 240).save(root / "dog" / "odd-placeholder-2.jpg")
    screenshot_picture().save(root / "cat" / "odd-screenshot-1.png")
    screenshot_picture((180, 180)).save(root / "dog" / "odd-screenshot-2.jpg")
    fashion_picture(0).save(root / "dog" / "odd-fashion-1.png")
    fashion_picture(1).save(root / "cat" / "odd-fashion-2.png")
    other_photo("china.jpg").save(root / "cat" / "odd-temple.jpg")
    other_photo("flower.jpg").save(root / "dog" / "odd-flower.jpg")
    cat, dog = (sorted((PETS / "few" / "train" / label).iterdir())[0] for label in ("cat", "dog"))
    shutil.copy2(cat, root / "dog" / "odd-a-cat.jpg")
    shutil.copy2(dog, root / "cat" / "odd-a-dog.jpg")
    found = odd_found(tl_core.check(root))
    injected = {name for name in found if name.startswith("odd-")}
    false_flags = {name for name in found if name in clean}
    assert len(injected) >= 8, sorted(injected)        # measured: 9 of 10 (not the cat among dogs)
    assert len(false_flags) <= 4, sorted(false_flags)  # measured: 3 (a rose drawing, a logo, a cat in a tunnel)
    assert {"odd-placeholder-1.png", "odd-placeholder-2.jpg", "odd-screenshot-1.png"} <= injected


def test_tiny_categories_are_not_judged(tmp_path):
    root = pets_copy(tmp_path / "pets", "few/train")
    (root / "bird").mkdir()
    for i in range(MIN_PICTURES - 1):   # 7 pictures: too few to say what is typical
        fashion_picture(i).save(root / "bird" / f"{i}.png")
    report = tl_core.check(root)
    assert not [p for p in report.problems if p.kind == "outlier" and "/bird/" in p.path]
    assert report.odd.categories == ["cat", "dog"]
    assert "'bird'" in report.odd.note and f"fewer than {MIN_PICTURES} pictures" in report.odd.note


def test_only_tiny_categories_run_no_network(tmp_path, monkeypatch):
    root = pets_copy(tmp_path / "pets", "few/train", per_class=MIN_PICTURES - 1)
    monkeypatch.setattr("tl_core.results.picture_features.extractor", _no_network)
    seen = []
    report = tl_core.check(root, progress=lambda d, t: seen.append((d, t)))
    assert report.odd.categories == [] and "every category has fewer than" in report.odd.note
    assert seen[-1] == (14, 14)   # one step per picture opened: no network pass on the bar


def _no_network(*_args, **_kwargs):
    raise AssertionError("the network should not be loaded")


def test_outliers_false_skips_the_network(tmp_path, monkeypatch):
    root = pets_copy(tmp_path / "pets", "few/train")
    placeholder_picture().save(root / "cat" / "image-not-found.png")
    monkeypatch.setattr("tl_core.results.picture_features.extractor", _no_network)
    report = tl_core.check(root, outliers=False)
    assert not odd_found(report) and report.odd is None
    assert report.to_dict()["odd_pictures"]["looked_for"] is False


def test_unreadable_pictures_are_skipped_and_reported_once(tmp_path):
    root = pets_copy(tmp_path / "pets", "few/train")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "dog" / "empty.png").write_bytes(b"")
    placeholder_picture().save(root / "cat" / "image-not-found.png")
    report = tl_core.check(root)
    kinds = {Path(p.path).name: p.kind for p in report.problems}
    assert kinds["broken.jpg"] == "unreadable" and kinds["empty.png"] == "unreadable"
    assert kinds["image-not-found.png"] == "outlier"
    assert sum(1 for p in report.problems if Path(p.path).name == "broken.jpg") == 1


def test_second_check_reuses_the_features_and_the_bar_moves_forward(tmp_path):
    root = pets_copy(tmp_path / "pets", "few/train")
    placeholder_picture().save(root / "cat" / "image-not-found.png")
    seen: list[tuple[int, int]] = []
    first = tl_core.check(root, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 162) and seen[-1] == (162, 162)   # 81 opened, then 81 looked at
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    again = tl_core.check(root)
    assert again.odd.computed == 0   # every picture's features remembered by content
    assert odd_found(again) == odd_found(first)


def test_a_network_that_cannot_load_leaves_the_rest_of_the_check(tmp_path, monkeypatch):
    from tl_core.errors import WeightsError

    def no_weights(*_args, **_kwargs):
        raise WeightsError("No pretrained weights for this model were found on this computer.")

    root = pets_copy(tmp_path / "pets", "few/train", per_class=10)
    (root / "dog" / "empty.png").write_bytes(b"")
    monkeypatch.setattr("tl_core.results.picture_features.extractor", no_weights)
    report = tl_core.check(root)
    assert [p.kind for p in report.problems] == ["unreadable"]
    assert report.odd.note.startswith("Odd pictures were not looked for: No pretrained weights")


# -- the arithmetic on made-up features (fast, exact) ---------------------------------------------------

def _cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.3) -> np.ndarray:
    return np.abs(centre + spread * rng.standard_normal((n, centre.size)))


def test_scores_flag_a_far_picture_and_say_what_it_looks_like():
    rng = np.random.default_rng(0)
    a, b, far = (np.abs(rng.standard_normal(64)) * 3 for _ in range(3))
    x = np.vstack([_cluster(rng, a, 30), _cluster(rng, b, 30), far[None], _cluster(rng, b, 1)])
    labels = ["a"] * 30 + ["b"] * 30 + ["a", "a"]   # a stranger, then a 'b' filed under 'a'
    s = score_pictures(x, labels)
    assert s.flagged[60] and s.looks_like[60] is None
    assert s.flagged[61] and s.looks_like[61] == "b"
    assert s.flagged[:60].sum() == 0


def test_copies_of_an_odd_picture_do_not_vouch_for_each_other():
    rng = np.random.default_rng(1)
    a, far = (np.abs(rng.standard_normal(64)) * 3 for _ in range(2))
    x = np.vstack([_cluster(rng, a, 30), far[None], far[None], far[None]])   # the same file three times
    s = score_pictures(x, ["a"] * 33)
    assert s.flagged[30:].all() and not s.flagged[:30].any()


def test_small_categories_are_not_judged_and_flags_are_capped():
    rng = np.random.default_rng(2)
    a, b = (np.abs(rng.standard_normal(64)) * 3 for _ in range(2))
    small = np.abs(rng.standard_normal((MIN_PICTURES - 1, 64))) * 5   # scattered, but too few to judge
    s = score_pictures(np.vstack([_cluster(rng, a, 40), small]), ["a"] * 40 + ["tiny"] * (MIN_PICTURES - 1))
    assert not s.judged[40:].any() and not s.flagged[40:].any() and s.judged[:40].all()
    strangers = np.abs(rng.standard_normal((10, 64))) * 5           # 10 strangers in 110: at most 5 flagged
    s = score_pictures(np.vstack([_cluster(rng, a, 100), strangers]), ["a"] * 110)
    assert s.flagged.sum() == 5 and s.flagged[100:].sum() == 5


def test_odd_problem_words():
    odd = outliers.OddPictures(odd=[outliers.OddPicture("/d/cat/x.png", "cat/x.png", "cat", None, 2.0, 9.0),
                                    outliers.OddPicture("/d/dog/y.jpg", "dog/y.jpg", "dog", "cat", 1.5, 3.0)],
                               categories=["cat", "dog"])
    first, second = outliers.odd_problems(odd)
    assert first.message == ("This picture looks unlike the other 'cat' pictures (it looks like none of your "
                             "categories). Is it in the right folder?")
    assert second.message == ("This picture looks unlike the other 'dog' pictures (it looks more like the 'cat' "
                              "pictures). Is it in the right folder?")
    assert "move it to that folder" in second.fix and (first.kind, first.path) == ("outlier", "/d/cat/x.png")


# -- the Data page --------------------------------------------------------------------------------------

def test_data_page_shows_each_odd_picture_with_its_message(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = pets_copy(tmp_path / "pets", "few/train")
    placeholder_picture().save(root / "cat" / "image-not-found.png")
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    session = tmp_path / "workspace" / "sessions" / "odd-session"
    session.mkdir(parents=True)
    (session / "ui_state.json").write_text(json.dumps({
        "data_root": str(root), "data_source": "path", "val_fraction": 0.2, "model_name": None,
        "freeze": {"preset": "head", "frozen_groups": None, "layer_lr_decay": 1.0}, "train": {}, "run_dir": None}))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300)
    at.query_params["session"] = "odd-session"
    at.switch_page("pages/1_Data.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    boxes = [w.value for w in at.warning]
    (box,) = [b for b in boxes if "image-not-found.png" in b]
    assert "looks unlike the other 'cat' pictures" in box and "What to do" in box
    body = " ".join(m.value for m in at.markdown)
    assert "look unlike the rest of their category" in body or "looks unlike the rest of its category" in body
    assert len(at.get("image")) >= 2 * 6 + 1   # a row of examples per category, and the odd picture's thumbnail


def test_tl_check_lists_odd_pictures_and_can_skip_them(tmp_path):
    import os
    import subprocess
    import sys

    root = pets_copy(tmp_path / "pets", "few/train", per_class=20)
    placeholder_picture().save(root / "cat" / "image-not-found.png")

    def tl_check(*flags: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "tl_core", "check", str(root), *flags], capture_output=True,
                              text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr   # odd pictures are warnings, not errors
        assert "[warning] outlier:" in proc.stdout or "--no-outliers" in flags, proc.stdout
        return json.loads(proc.stdout.strip().splitlines()[-1])

    out = tl_check()
    odd = [p for p in out["problems"] if p["kind"] == "outlier"]
    assert any(p["path"].endswith("image-not-found.png") for p in odd), out["problems"]
    assert out["odd_pictures"]["looked_for"] and out["odd_pictures"]["categories"] == ["cat", "dog"]
    skipped = tl_check("--no-outliers")
    assert not [p for p in skipped["problems"] if p["kind"] == "outlier"]
    assert skipped["odd_pictures"]["looked_for"] is False

"""Likely label mistakes (issue 13): out-of-sample probabilities + confident learning, from a run folder.

Real photos: a copy of ``shared/datasets/pets/few/train`` (40 cats, 40 dogs) with one dog photo
copied into cat/. A tiny "classifier only" run (128 px, 2 epochs, seed 0) is trained once on it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.results import mistakes, picture_features

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets" / "few" / "train"
if not PETS.is_dir():   # a checkout beside shared/ (CI's clone) or the developers' /work/shared
    PETS = Path("/work/shared/datasets/pets/few/train")
PLANTED = "planted_dog.jpg"


def pets_with_a_planted_mistake(dest: Path) -> Path:
    """cat/ and dog/ from pets/few/train, plus a dog photo from pets/few/test (so not a copy of a
    training picture) filed in cat/ as ``planted_dog.jpg``."""
    if not PETS.is_dir():
        pytest.fail(f"the pets photos are missing ({PETS})")
    root = dest / "pets"
    for c in ("cat", "dog"):
        shutil.copytree(PETS / c, root / c)
    dog = sorted((PETS.parent / "test" / "dog").iterdir())[0]
    shutil.copy2(dog, root / "cat" / PLANTED)
    return root


def tiny_config(root: Path, preset: str = "head", epochs: int = 2, size: int = 128) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root)), model=ModelConfig(weights="offline", image_size=size),
                     freeze=FreezeConfig(preset=preset), train=TrainConfig(epochs=epochs, seed=0))


def train(config: RunConfig, runs: Path) -> Path:
    from tl_core.training.loop import train_run

    result = train_run(config, runs)
    assert result.status == "finished", result.message
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder with the planted mistake, a finished 'classifier only' run on it)."""
    base = tmp_path_factory.mktemp("mistakes")
    root = pets_with_a_planted_mistake(base)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TL_CACHE_DIR", str(base / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        run = train(tiny_config(root), base / "runs")
    return root, run


@pytest.fixture
def cache(planted, monkeypatch) -> Path:
    """The cache the planted run trained with (its feature cache is what the pass reuses)."""
    folder = planted[1].parents[1] / "cache"
    monkeypatch.setenv("TL_CACHE_DIR", str(folder))
    return folder


# -- the method on numbers ----------------------------------------------------------------------------

def _blobs(n_per_class: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 8, [3.0] * 8, [-3.0] * 8])
    x = np.concatenate([rng.normal(c, 1.0, size=(n_per_class, 8)) for c in centres])
    y = np.repeat(np.arange(3), n_per_class)
    return x, y


def test_probabilities_are_out_of_sample():
    """A point given the wrong label is not believed: its own fold never learned that label for it
    (a model fitted on all points, that point included, gives its wrong label far more)."""
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs()
    y_noisy = y.copy()
    y_noisy[5] = 1                       # a class-0 point labelled 1
    probs = mistakes.out_of_sample_probabilities(x, y_noisy, 3, seed=0)
    assert probs.shape == (90, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert probs[5].argmax() == 0 and probs[5, 1] < probs[5, 0]
    in_sample = LogisticRegression(max_iter=2000, C=100.0).fit(x, y_noisy).predict_proba(x)
    assert in_sample[5, 1] > probs[5, 1]
    again = mistakes.out_of_sample_probabilities(x, y_noisy, 3, seed=0)
    assert np.array_equal(probs, again)  # seeded folds: the same list every time


def test_confident_learning_ranks_the_flipped_labels_first():
    x, y = _blobs(40)
    flipped = [3, 50, 100]
    y_noisy = y.copy()
    y_noisy[3], y_noisy[50], y_noisy[100] = 2, 0, 1
    probs = mistakes.out_of_sample_probabilities(x, y_noisy, 3)
    ranked = mistakes.rank_label_issues(y_noisy, probs)
    assert set(ranked[:3]) == set(flipped)
    assert len(ranked) <= 6              # a handful, not a tenth of the pictures


def test_copies_of_one_picture_are_judged_together():
    """The same picture filed in two categories: with the copies in one fold, the copy in the right
    category is not accused because its twin taught the model the wrong label."""
    x, y = _blobs(30)
    x = np.vstack([x, x[7:8]])                 # a copy of a class-0 point...
    y_noisy = np.append(y, 1)                  # ...filed under class 1
    groups = [f"g{i}" for i in range(90)] + ["g7"]
    probs = mistakes.out_of_sample_probabilities(x, y_noisy, 3, seed=0, groups=groups)
    ranked = mistakes.rank_label_issues(y_noisy, probs)
    assert 90 in ranked[:2] and 7 not in ranked
    assert probs[7].argmax() == 0 and probs[90].argmax() == 0


def test_a_tiny_category_still_gets_probabilities():
    """A category with 2 pictures: 2 folds, and a fold whose learning part lacks it still sums to 1."""
    x, y = _blobs(20)
    keep = np.concatenate([np.arange(40), [40, 41]])
    probs = mistakes.out_of_sample_probabilities(x[keep], y[keep], 3)
    assert probs.shape == (42, 3) and np.allclose(probs.sum(axis=1), 1.0)


# -- real photos --------------------------------------------------------------------------------------

def test_the_planted_dog_in_cat_is_near_the_top(planted, cache):
    root, run = planted
    found = mistakes.find_label_issues(run)
    rank = found.rank_of(root / "cat" / PLANTED)
    assert rank is not None and rank <= 3, [(i.rel_path, i.suggested, i.confidence) for i in found.issues]
    top = found.issues[rank - 1]
    assert (top.label, top.suggested) == ("cat", "dog") and top.confidence > 0.5
    assert found.checked == 81 and found.folds == 5
    assert len(found.issues) <= 8        # precise: a handful of 81, not a tenth
    assert {i.side for i in found.issues} <= {"learn", "check"}


def test_saved_in_the_run_folder_and_read_back(planted, cache):
    root, run = planted
    found = mistakes.find_label_issues(run)
    assert (run / mistakes.ISSUES_FILE).is_file()
    assert not list(run.glob(f".{mistakes.ISSUES_FILE}.*"))       # written whole (no temporary file left)
    loaded = mistakes.load_label_issues(run)
    assert loaded is not None and loaded.issues == found.issues and loaded.classes == ["cat", "dog"]
    assert mistakes.label_issues_ready(run)
    weights = run / "model.safetensors"
    later = (run / mistakes.ISSUES_FILE).stat().st_mtime + 10
    os.utime(weights, (later, later))                            # trained again since: not ready
    try:
        assert not mistakes.label_issues_ready(run)
    finally:
        os.utime(weights, (later - 20, later - 20))
    (run / mistakes.ISSUES_FILE).write_text("{not json")
    assert mistakes.load_label_issues(run) is None               # damaged: made again, never a crash
    assert not mistakes.label_issues_ready(run)


def test_reuses_the_runs_cached_features_and_keeps_them_per_picture(planted, cache):
    """A 'classifier only' run cached exactly these features: the pass reads no picture through the
    network, and afterwards every picture's features are in the bank under its bytes."""
    root, run = planted
    ex = picture_features.extractor(RunConfig.load(run / "config.json"))
    bank_file = cache / picture_features.BANK_DIR / f"{ex.bank_key}.safetensors"
    bank_file.unlink(missing_ok=True)
    mistakes.find_label_issues(run)
    bank = picture_features.load_bank(ex)
    assert len(bank) == 81
    paths = [str(p) for p in sorted(root.rglob("*.jpg"))]
    got = picture_features.picture_features(ex, paths, bank=bank)
    assert got.computed == 0 and len(got.paths) == 81


def test_a_moved_picture_keeps_its_features(planted, cache, tmp_path):
    """Features are kept by the picture's bytes: a copy elsewhere (as after a move) is not computed again."""
    root, run = planted
    mistakes.find_label_issues(run)
    ex = picture_features.extractor(RunConfig.load(run / "config.json"))
    moved = tmp_path / "elsewhere.jpg"
    shutil.copy2(root / "cat" / PLANTED, moved)
    got = picture_features.picture_features(ex, [str(moved)])
    assert got.computed == 0 and got.paths == [str(moved)]


def test_a_data_folder_that_is_gone_is_a_plain_error(planted, cache, tmp_path):
    from tl_core.errors import TransferLabError

    _root, run = planted
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    cfg = (copy / "config.json").read_text().replace(str(_root), str(tmp_path / "gone"))
    (copy / "config.json").write_text(cfg)
    with pytest.raises(TransferLabError, match="does not exist"):
        mistakes.find_label_issues(copy)


@pytest.mark.slow
def test_a_fine_tuned_run_is_judged_on_the_pretrained_features_too(planted, tmp_path, monkeypatch):
    """A run that trained its last layers: its own features saw the labels, so the pass uses the
    pretrained network's; the planted dog is still near the top."""
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    root, _run = planted
    run = train(tiny_config(root, preset="last:1", epochs=1, size=96), tmp_path / "runs")
    found = mistakes.find_label_issues(run)
    rank = found.rank_of(root / "cat" / PLANTED)
    assert rank is not None and rank <= 3

"""The split actually used, said the same way everywhere: split_facts agrees with prepare_dataset for a
folder's own train/val and for a random share, runs record it, the model card and the screens state it."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

import tl_core
from tl_core.app import previews
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.dataset import prepare_dataset, recorded_split, split_facts
from tl_core.data.sample import sample_dir
from tl_core.data.split import describe_split, split_source
from tl_core.results.export import model_card
from tl_core.runs import RunFolder

CLASSES = ("bag", "sandal", "trouser")


def _pictures(label: str) -> list[Path]:
    return sorted((sample_dir() / label).iterdir())


def make_train_val(root: Path, n_train: int = 6, n_val: int = 4, classes=CLASSES,
                   val_classes=None) -> Path:
    """train/<class>/ with ``n_train`` and val/<class>/ with ``n_val`` real PNGs of the sample each."""
    for c in classes:
        files = _pictures(c)
        for split, chosen in (("train", files[:n_train]),
                              ("val", files[n_train:n_train + n_val] if c in (val_classes or classes) else [])):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, root / split / c / f.name)
    return root


def make_flat(root: Path, sizes: dict[str, int], copy_of_first: bool = False) -> Path:
    for c, n in sizes.items():
        (root / c).mkdir(parents=True)
        for f in _pictures(c)[:n]:
            shutil.copy(f, root / c / f.name)
    if copy_of_first:  # an exact copy: the split keeps both on the same side
        first = _pictures(next(iter(sizes)))[0]
        shutil.copy(first, root / next(iter(sizes)) / "copy_of_first.png")
    return root


def _per_class(prepared) -> dict[str, tuple[int, int]]:
    train, val = Counter(r.label for r in prepared.train), Counter(r.label for r in prepared.val)
    return {c: (train[c], val[c]) for c in prepared.classes}


# -- the function ----------------------------------------------------------------------------------

def test_train_val_folder_reports_its_own_val_and_exact_counts(tmp_path):
    root = make_train_val(tmp_path / "tv")
    for facts in (split_facts(DataConfig(root=str(root))),                       # names only
                  split_facts(DataConfig(root=str(root)), report=tl_core.check(root))):  # checked
        assert facts.kind == "folder" and facts.val_fraction is None and not facts.from_train
        assert facts.per_class == {c: (6, 4) for c in CLASSES}
        assert (facts.n_train, facts.n_val) == (18, 12)
        assert facts.describe() == "18 pictures to learn from, 12 to check with (the folder's own val/ folder)"
        assert facts.notes == []
    prepared = prepare_dataset(DataConfig(root=str(root), val_fraction=0.35))  # the share does not apply
    assert _per_class(prepared) == facts.per_class
    assert prepared.split.to_dict() == {"kind": "folder", "val_fraction": None, "from_train": False,
                                        "train": 18, "val": 12, "test": 0}


@pytest.mark.parametrize("val_fraction", [0.2, 0.35, 0.5])
def test_flat_folder_counts_equal_what_prepare_dataset_produces(tmp_path, val_fraction):
    root = make_flat(tmp_path / "flat", {"bag": 11, "sandal": 7, "trouser": 5}, copy_of_first=True)
    cfg = DataConfig(root=str(root), val_fraction=val_fraction, split_seed=3)
    prepared = prepare_dataset(cfg)
    facts = split_facts(cfg, report=tl_core.check(root))
    assert facts.kind == "random" and facts.val_fraction == val_fraction and facts.checked
    assert facts.per_class == _per_class(prepared)
    assert (facts.n_train, facts.n_val) == (len(prepared.train), len(prepared.val))
    assert prepared.split.per_class == facts.per_class
    pct = f"{100 * val_fraction:.3g}%"
    assert facts.describe() == (f"{len(prepared.train)} pictures to learn from, {len(prepared.val)} to check with "
                                f"({pct} kept aside at random)")


def test_flat_folder_names_only_matches_when_there_are_no_copies(tmp_path):
    root = make_flat(tmp_path / "flat", {"bag": 10, "sandal": 9, "trouser": 4})
    for val_fraction in (0.2, 0.45):
        cfg = DataConfig(root=str(root), val_fraction=val_fraction)
        assert split_facts(cfg).per_class == _per_class(prepare_dataset(cfg))


def test_words():
    assert split_source("folder") == "the folder's own val/ folder"
    assert split_source("random", 0.2) == "20% kept aside at random"
    assert split_source("random", 0.2, detailed=True) == "20% kept aside at random, per category, copies kept together"
    assert split_source("random", 0.125, from_train=True) == "12.5% of train/ kept aside at random"
    assert describe_split("folder", 245, 153) == \
        "245 pictures to learn from, 153 to check with (the folder's own val/ folder)"
    assert describe_split("random", 1600, 400, 0.2) == \
        "1,600 pictures to learn from, 400 to check with (20% kept aside at random)"


# -- bad input -------------------------------------------------------------------------------------

def test_val_folder_missing_a_category_is_explained(tmp_path):
    root = make_train_val(tmp_path / "tv", val_classes=("bag", "sandal"))
    facts = split_facts(DataConfig(root=str(root)))
    assert facts.kind == "folder"
    assert facts.per_class["trouser"] == (6, 0)
    assert any("'trouser' has no pictures in val/" in n and "val/trouser/" in n for n in facts.notes), facts.notes


def test_empty_val_folder_falls_back_to_a_share_of_train_and_says_so(tmp_path):
    root = make_train_val(tmp_path / "tv", n_val=0)  # val/<class>/ exist but are empty
    cfg = DataConfig(root=str(root), val_fraction=0.25)
    facts = split_facts(cfg)
    assert facts.kind == "random" and facts.from_train
    assert facts.per_class == _per_class(prepare_dataset(cfg))
    assert "(25% of train/ kept aside at random)" in facts.describe()
    assert any("no pictures in a val/ folder" in n for n in facts.notes), facts.notes

    bare = make_train_val(tmp_path / "bare", n_val=0)
    for c in CLASSES:
        (bare / "val" / c).rmdir()  # an empty val/ with nothing in it at all
    facts = split_facts(DataConfig(root=str(bare)))
    assert facts.kind == "random" and facts.from_train and facts.n_val == 3


def test_val_only_category_and_unusable_folder(tmp_path):
    root = make_train_val(tmp_path / "tv")
    (root / "val" / "t-shirt").mkdir()
    shutil.copy(_pictures("t-shirt")[0], root / "val" / "t-shirt" / "a.png")
    facts = split_facts(DataConfig(root=str(root)))
    assert facts.per_class["t-shirt"] == (0, 1)
    assert any("'t-shirt' has no pictures to learn from in train/" in n for n in facts.notes), facts.notes
    with pytest.raises(tl_core.DataError):
        split_facts(DataConfig(root=str(tmp_path / "missing")))
    # the caption helper never raises
    assert previews.split_words(tmp_path / "missing", 0.3) == "30% kept aside at random to check the model"
    assert previews.split_words(None, 0.2) == "20% kept aside at random to check the model"


# -- recorded in a run and stated in the model card ------------------------------------------------

@pytest.fixture(scope="module")
def train_val_run(tmp_path_factory):
    """A finished run (1 epoch, head) on a train/val folder: 6 train + 4 val pictures per category."""
    from tl_core.training.loop import train_run

    root = make_train_val(tmp_path_factory.mktemp("tv-data") / "clothes")
    config = RunConfig(data=DataConfig(root=str(root)), model=ModelConfig(weights="offline"),
                       freeze=FreezeConfig(preset="head"), train=TrainConfig(epochs=1, seed=0, batch_size=8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tl-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = train_run(config, tmp_path_factory.mktemp("tv-runs"))
    assert result.status == "finished", result.message
    return Path(result.run_dir)


def test_run_records_the_split_and_the_model_card_states_it(train_val_run):
    summary = RunFolder.open(train_val_run).summary()
    assert summary["split"] == {"kind": "folder", "val_fraction": None, "from_train": False,
                                "train": 18, "val": 12, "test": 0}
    card = model_card(train_val_run)
    assert "Split: 18 pictures to learn from, 12 to check with (the folder's own val/ folder)." in card
    assert "20%" not in card and "Validation share" not in card
    assert "| **Total** | 18 | 12 |" in card
    facts = previews.run_split(train_val_run)
    assert facts.kind == "folder" and (facts.n_train, facts.n_val) == (18, 12)


def test_old_run_without_split_entry_still_tells_the_truth(train_val_run, tmp_path):
    old = tmp_path / train_val_run.name
    shutil.copytree(train_val_run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["split"]
    (old / "summary.json").write_text(json.dumps(summary))
    card = model_card(old)  # the data folder still has its val/: said so
    assert "(the folder's own val/ folder)" in card and "20%" not in card

    facts = recorded_split({"counts": {"a": 8, "b": 4}, "val_counts": {"a": 2, "b": 1}},
                           DataConfig(root=str(tmp_path / "gone"), val_fraction=0.2))
    assert facts.kind == "random" and facts.describe() == \
        "12 pictures to learn from, 3 to check with (20% kept aside at random)"
    facts = recorded_split({"counts": {"a": 8, "b": 4}, "val_counts": {"a": 5, "b": 5}},
                           DataConfig(root=str(tmp_path / "gone"), val_fraction=0.2))
    assert facts.kind == "unknown" and "was not recorded" in facts.describe() and "20%" not in facts.describe()
    assert recorded_split({}, None) is None

"""Issue 12, items 2, 6, 8 and 9 (this slice: 2 and 9): full disks, data problems training must not hide, exit codes,
messages that mislead. Each test fails without its fix (the item is named in each test's docstring).

Full disks are real where this machine allows it (root: a small tmpfs), simulated otherwise.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.errors import DataError, ImageLoadError, WeightsError

MODEL = "tf_efficientnet_lite0"


# -- helpers ------------------------------------------------------------------------------------

def small_copy(dest: Path, classes=("bag", "sandal"), per_class: int = 12) -> Path:
    """A few categories of the bundled sample, ``per_class`` pictures each."""
    for c in classes:
        (dest / c).mkdir(parents=True)
        for src in sorted((sample_dir() / c).iterdir())[:per_class]:
            shutil.copy(src, dest / c / src.name)
    return dest


def config_for(root: Path, cache: Path | None = None, epochs: int = 1, weights: str = "offline",
               **train) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root)),
                     model=ModelConfig(MODEL, weights=weights, image_size=64),
                     freeze=FreezeConfig("head"),
                     train=TrainConfig(epochs=epochs, batch_size=16, cache_dir=str(cache) if cache else None,
                                       **train))


def warnings_of(run_dir: str | Path) -> dict[str, str]:
    events = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    return {e["kind"]: e["message"] for e in events if e["event"] == "on_warning"}


def files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _dirs, names in os.walk(root) for f in names)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs), unmounted afterwards; skipped where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# -- item 2: a full cache disk ----------------------------------------------------------------------

def test_a_full_feature_cache_disk_does_not_fail_training(tiny_disk, tmp_path):
    """Item 2 (real full disk): the frozen layers' output does not fit on the cache's disk; the run
    finishes anyway, says the cache was not kept, and leaves no temporary file there."""
    import tl_core

    result = tl_core.train(config_for(small_copy(tmp_path / "data"), cache=tiny_disk), runs_dir=tmp_path / "runs")
    assert result.status == "finished", result.message
    assert "could not be kept on disk" in warnings_of(result.run_dir)["cache_not_saved"]
    left = files_under(tiny_disk)   # the small validation set may fit: then as a whole file
    assert not [f for f in left if f.endswith(".tmp")], left
    for name in left:
        load_file(str(tiny_disk / name))


def _failing_save_file(written: list[str]):
    from safetensors import SafetensorError

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)   # half a file, as a write cut short leaves it
        written.append(filename)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    return save_file


def test_a_safetensors_write_error_keeps_no_cache_file(tmp_path, monkeypatch):
    """Item 2 (simulated, for machines without root): safetensors' own error is not an OSError."""
    import safetensors.torch

    from tl_core.training.features import save_cached_features

    written: list[str] = []
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(written))
    assert save_cached_features(tmp_path, "key", {"x": torch.zeros(3), "y": torch.zeros(3)}) is None
    assert written and files_under(tmp_path) == []


def test_offline_weights_on_a_full_disk_are_a_plain_error_without_a_partial_file(tiny_disk, monkeypatch):
    """Item 2 (real full disk): converting the bundled offline weights into a full cache."""
    from tl_core.models.offline import bundled_checkpoint_path, offline_weights_path

    if bundled_checkpoint_path(MODEL) is None:
        pytest.skip("the offline weights package is not installed")
    monkeypatch.setenv("TL_CACHE_DIR", str(tiny_disk))
    with pytest.raises(WeightsError, match="is full") as caught:
        offline_weights_path(MODEL)
    assert "TL_CACHE_DIR" in str(caught.value)
    assert files_under(tiny_disk) == []


def test_offline_weights_write_error_simulated(tmp_path, monkeypatch):
    """Item 2 (simulated): the same without a small disk."""
    import safetensors.torch

    from tl_core.models.offline import bundled_checkpoint_path, offline_weights_path

    if bundled_checkpoint_path(MODEL) is None:
        pytest.skip("the offline weights package is not installed")
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    written: list[str] = []
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(written))
    with pytest.raises(WeightsError, match="is full"):
        offline_weights_path(MODEL)
    assert written and files_under(tmp_path / "cache") == []


# -- item 9: messages that mislead ----------------------------------------------------------------

def test_a_shortcut_loop_is_called_a_loop(tmp_path):
    """Item 9: was "a shortcut to a file that no longer exists"."""
    from tl_core.data.images import load_image
    from tl_core.data.scan import scan_folder

    root = small_copy(tmp_path / "data", per_class=3)
    os.symlink("b.png", root / "bag" / "a.png")
    os.symlink("a.png", root / "bag" / "b.png")
    notes = {Path(p.path).name: p.message for p in scan_folder(root).problems if p.kind == "broken_link"}
    assert set(notes) == {"a.png", "b.png"}
    assert all("leads back to itself" in m and "no longer exists" not in m for m in notes.values())
    with pytest.raises(ImageLoadError, match="shortcut loop"):
        load_image(root / "bag" / "a.png")


def _deep_folder(parent: Path, total_chars: int = 5000) -> None:
    """Folders nested below ``parent`` until their path is longer than the system allows (made
    through folder handles: the full path cannot be used)."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        for i in range(total_chars // 200 + 1):
            name = f"{i:02d}" + "d" * 198
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def test_a_too_long_path_gets_a_short_message_that_says_so(tmp_path):
    """Item 9: a 17 KB message about being allowed to read the folder."""
    from tl_core.data.scan import scan_folder

    root = small_copy(tmp_path / "data", per_class=3)
    _deep_folder(root / "bag")
    (problem,) = [p for p in scan_folder(root).problems if p.kind == "unreadable_folder"]
    assert "too long" in problem.message and "allowed" not in problem.message + problem.fix
    assert len(problem.message) < 300
    with pytest.raises(DataError) as caught:
        scan_folder(tmp_path / ("x" * 300))
    assert "too long" in str(caught.value) and len(str(caught.value)) < 400


def test_an_unreadable_category_folder_is_reported_once(tmp_path, monkeypatch):
    """Item 9: "could not open the folder 'bees'" and then "the category folder 'bees' has no pictures"."""
    from tl_core.data.scan import scan_folder

    root = small_copy(tmp_path / "data", per_class=3)
    (root / "bees").mkdir()
    shutil.copy(sorted((root / "bag").iterdir())[0], root / "bees" / "a.png")
    real_scandir = os.scandir

    def scandir(path="."):   # what a folder without read permission does (root may read anything)
        if Path(path) == root / "bees":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    about_bees = [p for p in scan_folder(root).problems if "bees" in p.path]
    assert [p.kind for p in about_bees] == ["unreadable_folder"]
    assert "not allowed to open it" in about_bees[0].message


def test_random_bytes_in_a_pth_are_not_called_code(tmp_path):
    """Item 9: random bytes got "opening it would run Python code"."""
    from tl_core.models.weights import load_weights_file

    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"\x11" + bytes(random.Random(1).randrange(256) for _ in range(4096)))
    with pytest.raises(WeightsError) as caught:
        load_weights_file(junk)
    assert "is not a PyTorch weights file" in str(caught.value) and "Python code" not in str(caught.value)

    class Code:   # and a file that really asks for code is still called so
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": Code()}, tmp_path / "code.pth")
    with pytest.raises(WeightsError, match="would run Python code"):
        load_weights_file(tmp_path / "code.pth")


def test_nan_starting_weights_are_not_blamed_on_the_learning_rate(tmp_path):
    """Item 9: a weights file holding NaN failed with "the learning rate is probably too high"."""
    from safetensors.torch import save_file

    import tl_core
    from tl_core.models.offline import offline_weights_path

    source = offline_weights_path(MODEL)
    if source is None:
        pytest.skip("the offline weights package is not installed")
    weights = load_file(str(source))
    stem = next(k for k in weights if k.startswith("conv_stem"))
    weights[stem] = torch.full_like(weights[stem], float("nan"))
    save_file(weights, str(tmp_path / "nan.safetensors"))

    result = tl_core.train(config_for(small_copy(tmp_path / "data", per_class=6), weights=str(tmp_path / "nan.safetensors")),
                           runs_dir=tmp_path / "runs")
    assert result.status == "failed"
    assert "starting weights" in result.message and "NaN" in result.message
    assert "learning rate is not the cause" in result.message and "too high" not in result.message

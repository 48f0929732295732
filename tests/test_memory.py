"""Issue 16, "Memory that does not grow with the data": the mechanisms, checked deterministically
(no wall-clock or resident-memory thresholds; those are measured in bench/mem_bench.py).

- the frozen-prefix feature pass runs at most ``FEATURE_BATCH["cpu"]`` pictures' activations at once;
- a full fine-tune reads its decoded pictures from a memory-mapped cache file, keyed like the
  feature cache: a second run decodes nothing, a changed picture invalidates it, and a cache disk
  that is full falls back to memory with a plain warning and leaves no partial file;
- the pages of that file the loop has read are handed back as it goes.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import tl_core
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.training import decoded, prepare
from tl_core.training.callbacks import Callback

MODEL = "tf_efficientnet_lite0"


def small_copy(dest: Path, classes=("bag", "sandal"), per_class: int = 12) -> Path:
    for c in classes:
        (dest / c).mkdir(parents=True)
        for src in sorted((sample_dir() / c).iterdir())[:per_class]:
            shutil.copy(src, dest / c / src.name)
    return dest


def config_for(root: Path, cache: Path, freeze: str = "none", batch_size: int = 8, **train) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root)), model=ModelConfig(MODEL, weights="offline", image_size=64),
                     freeze=FreezeConfig(freeze),
                     train=TrainConfig(epochs=1, batch_size=batch_size, cache_dir=str(cache), device="cpu", **train))


def warnings_of(run_dir: str | Path) -> dict[str, str]:
    events = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    return {e["kind"]: e["message"] for e in events if e["event"] == "on_warning"}


class Inputs(Callback):
    """Looks at the prepared inputs as training starts."""

    def __init__(self):
        self.seen: dict = {}

    def on_fit_start(self, info):
        s = self.trainer.state
        self.seen = {"mode": s.mode, "train_x": s.train_x, "val_x": s.val_x, "pages": s.pages,
                     "train_file": mapped_file(s.train_x), "val_file": mapped_file(s.val_x)}


def mapped_file(t: torch.Tensor) -> str | None:
    """The file mapped at this tensor's memory (Linux's /proc/self/maps), None for ordinary memory."""
    addr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= addr < hi:
            return parts[5] if len(parts) == 6 and parts[5].startswith("/") else None
    return None


@pytest.fixture
def count_decodes(monkeypatch):
    calls: list[int] = []
    real = decoded.decode_records

    def counting(paths, *args, **kw):
        calls.append(len(paths))
        return real(paths, *args, **kw)
    monkeypatch.setattr(decoded, "decode_records", counting)
    monkeypatch.setattr(prepare, "decode_records", counting)
    return calls


needs_proc_maps = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")


# -- the feature pass ------------------------------------------------------------------------------

def test_the_feature_pass_runs_a_bounded_number_of_pictures_at_once(tmp_path, monkeypatch):
    """On a CPU at most FEATURE_BATCH["cpu"] pictures go through the frozen prefix together (their
    activations are the pass's memory), whatever the chunk of decoded pictures, and every picture
    goes through exactly once (plus the one-picture probe)."""
    batches: list[int] = []
    real = prepare.find_prefix_split

    def spying(model):
        split = real(model)
        inner = split.prefix

        def prefix(x):
            batches.append(int(x.shape[0]))
            return inner(x)
        split.prefix = prefix
        return split
    monkeypatch.setattr(prepare, "find_prefix_split", spying)
    monkeypatch.setattr(prepare, "STREAM_CHUNK", 20)
    root = small_copy(tmp_path / "data", per_class=20)
    result = tl_core.train(config_for(root, tmp_path / "cache", freeze="head"), runs_dir=tmp_path / "runs")
    assert result.status == "finished", result.message
    assert result.mode == "features"
    k = prepare.FEATURE_BATCH["cpu"]
    assert k <= 16
    assert max(batches) <= k, batches
    assert sum(batches) == 40 + 2, batches   # 40 pictures once, plus a one-picture probe per set (train, val)


def test_feature_batch_is_small_on_cpu_only():
    assert prepare.feature_batch(torch.device("cpu")) == prepare.FEATURE_BATCH["cpu"]
    assert prepare.feature_batch(torch.device("cuda")) == prepare.FEATURE_BATCH_DEFAULT


# -- decoded pictures on disk ------------------------------------------------------------------------

@needs_proc_maps
def test_a_full_fine_tune_reads_its_pictures_from_a_memory_mapped_cache(tmp_path, count_decodes):
    root = small_copy(tmp_path / "data")
    cache = tmp_path / "cache"
    look = Inputs()
    result = tl_core.train(config_for(root, cache), runs_dir=tmp_path / "runs", callbacks=[look])
    assert result.status == "finished", result.message
    assert look.seen["mode"] == "full"
    files = sorted(p.name for p in (cache / "decoded").iterdir())
    assert len([f for f in files if f.endswith(".u8")]) == 2 and len([f for f in files if f.endswith(".json")]) == 2
    assert not [f for f in files if f.endswith(".tmp")]
    for name in ("train_file", "val_file"):
        assert look.seen[name] is not None and look.seen[name].startswith(str(cache / "decoded")), look.seen[name]
    assert look.seen["train_x"].dtype == torch.uint8 and look.seen["train_x"].shape[1:] == (3, 64, 64)
    assert len(look.seen["pages"].maps) == 2
    assert sum(count_decodes) == 24   # decoded once, in chunks, into the file

    # the same pictures decoded in memory are the same bytes
    mem = decoded.decode_records([str(p) for p in sorted((root / "bag").iterdir())][:3], [0, 0, 0],
                                 _prep_of(result.run_dir))
    train_rows = {tuple(look.seen["train_x"][i].flatten()[:64].tolist()) for i in range(len(look.seen["train_x"]))}
    val_rows = {tuple(look.seen["val_x"][i].flatten()[:64].tolist()) for i in range(len(look.seen["val_x"]))}
    for row in mem.images:
        assert tuple(row.flatten()[:64].tolist()) in train_rows | val_rows


def _prep_of(run_dir):
    from tl_core.models.preprocess import Preprocessing

    return Preprocessing.from_dict(json.loads((Path(run_dir) / "preprocessing.json").read_text()))


def test_a_second_run_reuses_the_decoded_pictures_and_a_changed_picture_invalidates_them(tmp_path, count_decodes):
    root = small_copy(tmp_path / "data")
    cache = tmp_path / "cache"
    first = tl_core.train(config_for(root, cache), runs_dir=tmp_path / "runs")
    assert first.status == "finished", first.message
    assert sum(count_decodes) == 24
    before = {p.name: p.stat().st_ino for p in (cache / "decoded").glob("*.u8")}   # rewritten: a new file

    count_decodes.clear()
    look = Inputs()
    second = tl_core.train(config_for(root, cache, seed=1), runs_dir=tmp_path / "runs", callbacks=[look])
    assert second.status == "finished", second.message
    assert count_decodes == []                       # nothing decoded again
    assert {p.name: p.stat().st_ino for p in (cache / "decoded").glob("*.u8")} == before
    assert len(look.seen["pages"].maps) == 2

    changed = sorted((root / "sandal").iterdir())[0]
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = tl_core.train(config_for(root, cache), runs_dir=tmp_path / "runs")
    assert third.status == "finished", third.message
    assert sum(count_decodes) > 0                    # the set holding the changed picture is decoded again
    assert len(list((cache / "decoded").glob("*.u8"))) > len(before)


def test_a_damaged_decoded_cache_is_a_miss(tmp_path, count_decodes):
    root = small_copy(tmp_path / "data")
    cache = tmp_path / "cache"
    assert tl_core.train(config_for(root, cache), runs_dir=tmp_path / "runs").status == "finished"
    for f in (cache / "decoded").glob("*.u8"):
        with open(f, "r+b") as fh:
            fh.truncate(100)                         # cut short
    count_decodes.clear()
    result = tl_core.train(config_for(root, cache), runs_dir=tmp_path / "runs")
    assert result.status == "finished", result.message
    assert sum(count_decodes) == 24


def test_read_pages_are_handed_back_as_training_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded, "RELEASE_EVERY", 64 * 64 * 3 * 4)   # every 4 pictures read
    released: list[int] = []
    real = decoded.MappedRows.release

    def counting(self):
        released.append(1)
        real(self)
    monkeypatch.setattr(decoded.MappedRows, "release", counting)
    root = small_copy(tmp_path / "data")
    look = Inputs()
    result = tl_core.train(config_for(root, tmp_path / "cache"), runs_dir=tmp_path / "runs", callbacks=[look])
    assert result.status == "finished", result.message
    assert look.seen["pages"].releases >= 3
    assert released


def test_page_release_counts_bytes():
    class Fake:
        def __init__(self):
            self.n = 0

        def release(self):
            self.n += 1
    m = Fake()
    pr = decoded.PageRelease([m], every=100)
    pr.touched(60)
    assert m.n == 0
    pr.touched(60)
    assert m.n == 1 and pr.read == 0
    empty = decoded.PageRelease()
    empty.touched(10**12)                            # nothing mapped: nothing to do
    assert empty.releases == 0


def test_a_decoded_cache_that_cannot_be_written_falls_back_to_memory(tmp_path, monkeypatch):
    """Simulated full disk (any machine): the write fails at the end; the run trains from memory, says
    so in plain words, and leaves neither a partial file nor a temporary one."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(decoded.os, "fsync", full)
    root = small_copy(tmp_path / "data")
    cache = tmp_path / "cache"
    look = Inputs()
    result = tl_core.train(config_for(root, cache), runs_dir=tmp_path / "runs", callbacks=[look])
    assert result.status == "finished", result.message
    assert "decoded pictures could not be kept on disk" in warnings_of(result.run_dir)["cache_not_saved"]
    assert look.seen["pages"].maps == [] and look.seen["train_file"] is None
    assert [p for p in (cache / "decoded").iterdir()] == []


def test_a_full_decoded_cache_disk_falls_back_to_memory(tiny_disk, tmp_path):
    """Real full disk: 20 training pictures at 64 px are 240 KB, more than the 64 KiB disk holds."""
    root = small_copy(tmp_path / "data")
    result = tl_core.train(config_for(root, tiny_disk), runs_dir=tmp_path / "runs")
    assert result.status == "finished", result.message
    assert "decoded pictures could not be kept on disk" in warnings_of(result.run_dir)["cache_not_saved"]
    left = [str(p.relative_to(tiny_disk)) for p in tiny_disk.rglob("*") if p.is_file()]
    assert not [f for f in left if f.endswith(".tmp")], left
    for f in tiny_disk.rglob("*.u8"):                # the small validation set may fit: then whole
        assert f.with_suffix(".json").is_file()


def test_validation_and_calibration_of_a_full_fine_tune_run_a_bounded_number_of_pictures(tmp_path):
    """When the whole network runs without gradients (validation, the end-of-fit calibration), at most
    FEATURE_BATCH["cpu"] pictures go through it together, as in the feature pass."""
    seen: list[tuple[bool, int]] = []

    class Spy(Callback):
        def on_fit_start(self, info):
            # the first layer sees every picture, whichever way the network is called
            self.trainer.state.model.conv_stem.register_forward_pre_hook(
                lambda m, args: seen.append((m.training, int(args[0].shape[0]))))
    root = small_copy(tmp_path / "data", per_class=20)
    result = tl_core.train(config_for(root, tmp_path / "cache", batch_size=16), runs_dir=tmp_path / "runs",
                           callbacks=[Spy()])
    assert result.status == "finished", result.message
    no_grad = [n for training, n in seen if not training]
    assert no_grad and max(no_grad) <= prepare.FEATURE_BATCH["cpu"], seen
    assert sum(no_grad) >= 8 + 32 + 8   # validation (8 of 40), calibration (32 train + 8 val) at least
    assert max(n for training, n in seen if training) == 16

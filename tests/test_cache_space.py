"""The cache folder stays under its size limit, forgetting what was used least recently.

Small files with set clocks stand for cache entries in the unit tests; the end-to-end tests train
real runs on the bundled sample with a tiny limit and check that a second data set's decoded pictures
push out the first's, that a hit keeps an entry, and that what was just written is never removed.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


import pytest

from tl_core.cli import main
from tl_core.runtime import cache_space
from tl_core.runtime.cache_space import entries, limit_bytes, mark_used, trim, usage

HOUR = 3600


def key(c: str) -> str:
    """A cache key as Transfer Lab names its files: 32 hex digits."""
    return c * 32


def put(root: Path, kind: str, name: str, size: int, hours_ago: float) -> Path:
    path = root / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = time.time() - hours_ago * HOUR
    os.utime(path, (t, t))
    return path


def test_limit_comes_from_the_environment_and_a_typo_keeps_the_default(monkeypatch):
    monkeypatch.delenv(cache_space.LIMIT_ENV, raising=False)
    assert limit_bytes() == 10 * 1024**3
    monkeypatch.setenv(cache_space.LIMIT_ENV, "2.5")
    assert limit_bytes() == int(2.5 * 1024**3)
    for off in ("0", "0.0", "none", "None", "unlimited"):
        monkeypatch.setenv(cache_space.LIMIT_ENV, off)
        assert limit_bytes() is None
    for typo in ("ten", "-3", "nan", "inf", "-inf"):
        monkeypatch.setenv(cache_space.LIMIT_ENV, typo)
        assert limit_bytes() == 10 * 1024**3, typo


def test_least_recently_used_goes_first_and_pairs_go_together(tmp_path):
    old_u8 = put(tmp_path, "decoded", f"{key('a')}.u8", 400, hours_ago=5)
    old_json = put(tmp_path, "decoded", f"{key('a')}.json", 10, hours_ago=5)
    middle = put(tmp_path, "features", f"{key('b')}.safetensors", 300, hours_ago=3)
    newer = put(tmp_path, "picture-features", f"{key('c')}.safetensors", 300, hours_ago=2)
    weights = put(tmp_path, "weights", "tf_efficientnet_lite0.safetensors", 5000, hours_ago=100)
    timings = tmp_path / "timings.json"
    timings.write_text("{}")

    found = entries(tmp_path)
    assert [e.name for e in found] == [f"{key('a')}.json", f"{key('b')}.safetensors", f"{key('c')}.safetensors"]
    assert found[0].size == 410 and found[0].kind == "decoded" and len(found[0].files) == 2

    result = trim(tmp_path, limit=700)          # 1,010 bytes: the oldest (410) must go, then it fits
    assert [e.name for e in result.removed] == [f"{key('a')}.json"] and result.freed == 410 and result.left == 600
    assert not old_u8.exists() and not old_json.exists() and middle.exists() and newer.exists()
    assert weights.exists() and timings.exists()   # converted weights and timings are never trimmed

    mark_used(middle)                           # a hit: now the newest
    assert [e.name for e in trim(tmp_path, limit=300).removed] == [f"{key('c')}.safetensors"]
    assert middle.exists()


def test_recent_and_kept_files_stay_even_over_the_limit(tmp_path):
    recent = put(tmp_path, "decoded", f"{key('d')}.u8", 1000, hours_ago=0.05)   # a training reads it right now
    kept = put(tmp_path, "features", f"{key('e')}.safetensors", 1000, hours_ago=9)
    put(tmp_path, "features", f"{key('f')}.safetensors", 1000, hours_ago=8)
    result = trim(tmp_path, limit=10, keep=[kept])
    assert [e.name for e in result.removed] == [f"{key('f')}.safetensors"]
    assert recent.exists() and kept.exists() and result.left == 2000
    assert trim(tmp_path, limit=None).removed == []   # no limit: nothing goes


def test_half_written_files_stay_while_young_and_go_when_a_crash_left_them(tmp_path):
    writing = put(tmp_path, "features", f".{key('a')}.safetensors.k3j2.tmp", 100, hours_ago=1)
    crashed = put(tmp_path, "features", f".{key('b')}.safetensors.x9q1.tmp", 100, hours_ago=30)
    work = tmp_path / "bundles" / "tl-bundle-abc123"            # a bundle being made when the app crashed
    put(work.parent, work.name, "run-model.zip", 300, hours_ago=40)
    os.utime(work, (time.time() - 40 * HOUR,) * 2)
    making = tmp_path / "bundles" / "tl-bundle-def456"          # one being made now
    put(making.parent, making.name, "run-model.zip", 300, hours_ago=0)
    assert sorted(e.name for e in entries(tmp_path)) == sorted([crashed.name, work.name])
    trim(tmp_path, limit=0)
    assert writing.exists() and not crashed.exists() and not work.exists() and making.exists()


def test_files_the_app_did_not_name_are_never_touched(tmp_path):
    """A training's cache folder can be any folder (train.cache_dir): a user's own files in a
    features/ or bundles/ folder there are not cache, whatever their age."""
    mine = [put(tmp_path, "features", "my-thesis.safetensors", 5000, hours_ago=100),
            put(tmp_path, "bundles", "holiday.zip", 5000, hours_ago=100),
            put(tmp_path, "decoded", "notes.json", 50, hours_ago=100),
            put(tmp_path, "features", ".my-thesis.safetensors.x.tmp", 50, hours_ago=100)]
    ours = put(tmp_path, "bundles", "20261128-101500-tf_efficientnet_lite0-ab12-0123456789abcdef.zip", 100,
               hours_ago=100)
    assert [e.name for e in entries(tmp_path)] == [ours.name]
    assert [e.name for e in cache_space.clear(tmp_path).removed] == [ours.name]
    assert all(f.exists() for f in mine) and not ours.exists()


def test_a_file_that_cannot_be_removed_is_left_and_nothing_raises(tmp_path, monkeypatch):
    a = put(tmp_path, "bundles", f"run-a-{'a' * 16}.zip", 500, hours_ago=4)
    b = put(tmp_path, "bundles", f"run-b-{'b' * 16}.zip", 500, hours_ago=3)
    real_unlink = Path.unlink

    def refuse_a(self, missing_ok=False):
        if self.name == a.name:
            raise PermissionError(13, "in use", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse_a)
    result = trim(tmp_path, limit=100)
    assert [e.name for e in result.removed] == [b.name] and a.exists() and not b.exists()
    cache_space.after_write(tmp_path / "no such folder")   # never raises


def test_tl_cache_reports_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(cache_space.LIMIT_ENV, "1")
    put(tmp_path, "decoded", f"{key('a')}.u8", 2048, hours_ago=5)
    put(tmp_path, "decoded", f"{key('a')}.json", 10, hours_ago=5)
    busy = put(tmp_path, "features", f"{key('b')}.safetensors", 1024, hours_ago=0)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bytes"] == 3082 and report["limit_bytes"] == 1024**3 and report["entries"] == 2
    assert report["by_kind"]["decoded"] == 2058 and "decoded pictures" in out and "limit 1.0 GB" in out

    assert main(["cache", "--clear"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["removed"] == 1 and report["freed_bytes"] == 2058 and report["bytes"] == 1024
    assert busy.exists()   # used in the last minute: a training may be reading it


def age_past_recent(cache: Path) -> None:
    """Files used two hours ago: no longer protected as "in use right now"."""
    t = time.time() - 2 * HOUR
    for f in (cache / "decoded").iterdir():
        os.utime(f, (t, t))


@pytest.mark.slow   # three real trainings
def test_trainings_keep_the_cache_under_its_limit(tmp_path, monkeypatch):
    """Real runs on the bundled sample (every picture decoded into the cache: the whole model trains):
    with a limit smaller than two data sets' decoded pictures, the second training's pictures push out
    the first's, and the first data set trained again is a miss that decodes again (and still trains)."""
    import shutil

    from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.data.sample import sample_dir
    from tl_core.training.loop import train_run

    cache = tmp_path / "cache"
    monkeypatch.setenv("TL_CACHE_DIR", str(cache))
    two = tmp_path / "two"
    shutil.copytree(sample_dir(), two)
    for extra in sorted((two / "bag").iterdir())[:5]:   # another data set: another cache key
        extra.unlink()

    def train(root: Path) -> None:
        config = RunConfig(data=DataConfig(root=str(root)), model=ModelConfig(weights="offline", image_size=64),
                           freeze=FreezeConfig(preset="none"), train=TrainConfig(epochs=1, seed=0, batch_size=16))
        result = train_run(config, tmp_path / "runs")
        assert result.status == "finished", result.message

    def decoded() -> list[str]:
        return sorted(p.name for p in (cache / "decoded").glob("*.u8"))

    train(sample_dir())
    first = decoded()
    assert len(first) == 2   # training and validation pictures
    one_set = usage(cache).by_kind["decoded"]
    age_past_recent(cache)   # then allow a bit more than one set
    monkeypatch.setenv(cache_space.LIMIT_ENV, str(1.5 * one_set / 1024**3))
    train(two)
    second = [name for name in decoded() if name not in first]
    assert len(second) == 2 and set(first) - set(decoded())   # the first set's pictures made room
    assert usage(cache).by_kind["decoded"] <= 1.5 * one_set

    age_past_recent(cache)
    train(sample_dir())   # a miss now: decoded again, and kept (the second set's are older)
    assert set(first) <= set(decoded()) and usage(cache).by_kind["decoded"] <= 1.5 * one_set

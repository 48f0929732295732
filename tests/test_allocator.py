"""The CPU allocator tuning: freed training buffers are reused instead of re-mapped by the kernel."""
from __future__ import annotations

import platform
import resource
import threading

import pytest
import torch

from tl_core.runtime import allocator
from tl_core.runtime.allocator import training_allocator, tuning_active

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _faults_per_training_step(steps: int = 4) -> float:
    """Minor page faults per step of a tiny conv net whose activations (64 MiB each) are far above
    glibc's largest dynamic mmap threshold (32 MiB), like those of a real model at batch 32 on CPU.
    The first steps grow the heap; the count is taken over the last two."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 1, 1))
    x = torch.randn(8, 3, 256, 256)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    counts = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        opt.zero_grad(set_to_none=True)
        net(x).mean().backward()
        opt.step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sum(counts[-2:]) / 2


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's malloc only")
def test_freed_training_buffers_are_reused_not_remapped():
    default = _faults_per_training_step()
    if default < 1000:  # huge pages back the buffers: nothing to measure on this kernel
        pytest.skip(f"only {default} page faults per step by default (transparent huge pages)")
    with training_allocator() as tuned:
        assert tuned and tuning_active()
        tuned_faults = _faults_per_training_step()
    assert not tuning_active()
    # by default every 64 MiB activation is a fresh mapping the kernel zero-fills page by page;
    # tuned, the heap's pages are reused step after step
    assert tuned_faults < default / 4, (default, tuned_faults)
    # and the defaults are back afterwards
    assert _faults_per_training_step() > default / 2


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's malloc only")
def test_nested_and_concurrent_runs_share_the_tuning_until_the_last_ends():
    entered, release = threading.Event(), threading.Event()

    def other_training():
        with training_allocator():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other_training)
    t.start()
    assert entered.wait(10)
    with training_allocator() as tuned:
        assert tuned
        with training_allocator() as inner:
            assert inner and tuning_active()
        assert tuning_active()
    assert tuning_active()  # the other training still runs
    release.set()
    t.join(10)
    assert not tuning_active()


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("TL_MALLOC_TUNING", "0")
    with training_allocator() as tuned:
        assert tuned is False and not tuning_active()


def test_left_alone_off_glibc(monkeypatch):
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    with training_allocator() as tuned:
        assert tuned is False and not tuning_active()


def test_defaults_come_back_when_the_training_fails():
    with pytest.raises(RuntimeError):
        with training_allocator():
            raise RuntimeError("boom")
    assert not tuning_active()


def test_single_arena_is_read_from_either_environment_form(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert not allocator.single_arena()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    assert allocator.single_arena()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not allocator.single_arena()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1")
    assert allocator.single_arena()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=16")
    assert not allocator.single_arena()


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's malloc only")
def test_which_threads_the_setting_covers(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert not allocator.covers_this_thread()          # not active
    seen = {}
    with training_allocator():
        seen["main"] = allocator.covers_this_thread()
        t = threading.Thread(target=lambda: seen.update(thread=allocator.covers_this_thread()))
        t.start()
        t.join()
        monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
        t = threading.Thread(target=lambda: seen.update(one_arena=allocator.covers_this_thread()))
        t.start()
        t.join()
    assert seen == {"main": True, "thread": False, "one_arena": True}


BACKGROUND_THREAD_SCRIPT = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import test_allocator as t
from tl_core.runtime.allocator import training_allocator

def server_threads():  # like a web server's threads: they allocate, exit, leave their arenas behind
    junk = [bytearray(200_000) for _ in range(50)]
    time.sleep(0.1)

threads = [threading.Thread(target=server_threads) for _ in range(4)]
[x.start() for x in threads]
[x.join() for x in threads]
out = []
def train():
    with training_allocator():
        out.append(t._faults_per_training_step(steps=5))
worker = threading.Thread(target=train)
worker.start()
worker.join()
print(out[0])
"""


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's malloc only")
def test_app_started_with_one_arena_gets_the_setting_in_its_training_thread():
    """The app trains in a background thread; `make run` starts it with MALLOC_ARENA_MAX=1 so that
    thread allocates from the main arena, where the thresholds hold for blocks of any size."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests_dir = str(Path(__file__).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}

    def faults(extra: dict) -> float:
        out = subprocess.run([sys.executable, "-c", BACKGROUND_THREAD_SCRIPT, tests_dir], env={**env, **extra},
                             capture_output=True, text=True, timeout=120, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    default = faults({"TL_MALLOC_TUNING": "0"})
    if default < 1000:
        pytest.skip(f"only {default} page faults per step by default (transparent huge pages)")
    assert faults({"MALLOC_ARENA_MAX": "1"}) < default / 4
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "MALLOC_ARENA_MAX=1" in run_recipe and "streamlit run" in run_recipe

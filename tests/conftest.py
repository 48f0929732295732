"""Shared fixtures: every test runs offline, with caches and runs in temporary folders."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TL_OFFLINE", "1")
# as tl_core sets it for its users, before anything here loads PyTorch (see tl_core/__init__.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Runs and feature caches never leak between tests or into the repo; converted offline
    weights are shared across the session (converting is deterministic)."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TL_CACHE_DIR", str(base / "tl-cache"))
    monkeypatch.setenv("TL_RUNS_DIR", str(base / "runs-default"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    # the app measures models in a background thread: it must not go on into the next test
    # (it would time models under that test's settings and use its CPU)
    import sys

    timing = sys.modules.get("tl_core.app.timing")
    if timing is not None:
        timing.stop_background()
    aftercare = sys.modules.get("tl_core.app.aftercare")
    if aftercare is not None:  # a finished run's evaluation and bundle, started by a page
        aftercare.wait_all()


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


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """Fashion-MNIST, 4 classes x 15 images (real images, tiny)."""
    from tl_core.data.sample import fashion_mnist_available, write_fashion_mnist

    if not fashion_mnist_available():
        pytest.fail("dataset-fashion-mnist is not installed; `make test` installs it")
    root = tmp_path_factory.mktemp("fmnist_small")
    return write_fashion_mnist(root, per_class=15, classes=[0, 1, 7, 8])

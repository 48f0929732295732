"""The app's background timing queue (tl_core.app.timing): it pauses while the caller says it is
busy, and the measuring code it drives (tl_core.training.estimate) knows nothing of the app."""
from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

import tl_core
from tl_core.app import timing
from tl_core.training import estimate


@pytest.fixture
def queue(monkeypatch):
    """A fresh queue, fast polling and a fake measurement that records what it was asked."""
    monkeypatch.setattr(timing, "_STATE", timing._new_state())
    monkeypatch.setattr(timing, "POLL_SECONDS", 0.01)
    measured: list[str] = []

    def fake_measure_forward(name, image_size=None, device="auto", batch=None):
        if name == "broken":
            raise ValueError("cannot build it")
        measured.append(name)

    monkeypatch.setattr(estimate, "measure_forward", fake_measure_forward)
    return measured


def _worker() -> threading.Thread:
    thread = timing._STATE["thread"]
    assert isinstance(thread, threading.Thread)
    return thread


def test_worker_waits_while_busy_then_measures(queue):
    busy_now = threading.Event()
    busy_now.set()
    asked = threading.Event()

    def busy() -> bool:
        asked.set()
        return busy_now.is_set()

    assert timing.measure_forward_in_background(["a", "b"], busy=busy) == ["a", "b"]
    worker = _worker()
    for _ in range(5):  # the worker keeps asking, and measures nothing while busy
        asked.clear()
        assert asked.wait(timeout=30)
    assert queue == []
    assert timing.measure_forward_in_background(["a", "b"], busy=busy) == ["a", "b"]  # still waiting
    busy_now.clear()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert queue == ["a", "b"]  # once each, in order
    assert timing._STATE["thread"] is None and timing._STATE["queue"] == []


def test_failures_are_remembered_and_not_retried(queue):
    timing.measure_forward_in_background(["broken", "fine"], busy=lambda: 1 / 0)  # a broken check never blocks
    _worker().join(timeout=30)
    assert queue == ["fine"]
    assert timing.background_errors() == {"broken": "ValueError: cannot build it"}
    assert timing.measure_forward_in_background(["broken"]) == []
    assert timing._STATE["thread"] is None


def test_measured_models_are_not_queued(queue, monkeypatch):
    monkeypatch.setattr(estimate, "cached_forward", lambda name, *a, **k: object() if name == "done" else None)
    assert timing.measure_forward_in_background(["done"]) == []
    assert timing._STATE["thread"] is None and queue == []


def test_estimate_does_not_import_the_app():
    path = Path(tl_core.__file__).parent / "training" / "estimate.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert imported, "the check must see the module's imports"
    assert not [m for m in imported if m == "tl_core.app" or m.startswith("tl_core.app.")], imported
    assert not hasattr(estimate, "measure_forward_in_background") and not hasattr(estimate, "_training_now")

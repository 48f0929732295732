"""Background jobs: training runs in a thread owned by the process, one at a time, stoppable."""
import time

import pytest

from tl_core.app import jobs
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.runs import RunFolder


def _cfg(root, epochs):
    return RunConfig(data=DataConfig(root=str(root)), model=ModelConfig(weights="offline", image_size=48),
                     freeze=FreezeConfig("none"), train=TrainConfig(epochs=epochs, batch_size=8, log_every_steps=1))


def _wait(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_job_runs_in_background_and_stops(fmnist_small, tmp_path):
    job = jobs.start_training(_cfg(fmnist_small, epochs=50), runs_dir=tmp_path)
    try:
        assert jobs.active_job() is job and jobs.is_running(job.run_dir)
        with pytest.raises(TransferLabError, match="already training"):  # one job in line per person
            jobs.start_training(_cfg(fmnist_small, epochs=1), runs_dir=tmp_path)
        # a second reader (a refreshed page) sees the same live run from the folder alone
        assert _wait(lambda: any(e["event"] == "on_batch_end" for e in RunFolder(job.run_dir).events()))
        assert RunFolder(job.run_dir).status()["state"] == "running"
        assert jobs.stop_training(job.run_dir)
        job.thread.join(timeout=60)
        assert not job.thread.is_alive()
    finally:
        job.stop_event.set()
        job.thread.join(timeout=60)
    assert job.result.status == "stopped"
    assert RunFolder(job.run_dir).status()["state"] == "stopped"
    assert jobs.active_job() is None
    assert not jobs.stop_training(job.run_dir)
    events = [e["event"] for e in RunFolder(job.run_dir).events(("on_fit_start", "on_epoch_end", "on_warning",
                                                                   "on_fit_end"))]
    assert events[0] == "on_fit_start" and events[-1] == "on_fit_end"


def test_failed_job_is_reported_not_raised(tmp_path):
    job = jobs.start_training(_cfg(tmp_path / "missing", epochs=1), runs_dir=tmp_path)
    job.thread.join(timeout=60)
    assert job.result.status == "failed"
    assert RunFolder(job.run_dir).status()["state"] == "failed"

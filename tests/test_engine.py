"""The training loop on real (tiny) Fashion-MNIST folders with the bundled lite0 weights."""
import json
import math
import shutil
import threading
import time

import pytest
import torch

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.training.callbacks import Callback, diagnose
from tl_core.training.loop import train_run
from tl_core.training.schedules import lr_lambda
from tl_core.runs import RunFolder


def make_config(root, preset="head", epochs=3, size=64, **train):
    weights = "none" if preset == "scratch" else "offline"
    return RunConfig(data=DataConfig(root=str(root), val_fraction=0.25),
                     model=ModelConfig("tf_efficientnet_lite0", weights=weights, image_size=size),
                     freeze=FreezeConfig(preset), train=TrainConfig(epochs=epochs, batch_size=16, **train))


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, info): self.calls.append(("fit_start", info))
    def on_batch_end(self, step, logs): self.calls.append(("batch", step, logs))
    def on_epoch_end(self, epoch, logs): self.calls.append(("epoch", epoch, logs))
    def on_warning(self, kind, message): self.calls.append(("warning", kind, message))
    def on_fit_end(self, logs): self.calls.append(("fit_end", logs))

    def kinds(self):
        return [c[0] for c in self.calls]


def test_head_run_writes_complete_run_folder(fmnist_small, tmp_path):
    rec = Recorder()
    result = train_run(make_config(fmnist_small), runs_dir=tmp_path, callbacks=[rec])
    assert result.status == "finished", result.message
    assert result.mode == "features"
    kinds = rec.kinds()
    assert kinds[0] == "fit_start" and kinds[-1] == "fit_end" and kinds.count("epoch") == 3
    info = rec.calls[0][1]
    assert info["trainable_params"] == 1280 * 4 + 4 and info["boundary"] == "pre_logits"
    import platform

    from tl_core.runtime.allocator import tuning_active

    # trained under the CPU allocator setting (glibc only), restored afterwards
    assert info["allocator_tuned"] is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert not tuning_active()
    json.dumps(rec.calls)  # every payload is plain data
    run = RunFolder(result.run_dir)
    assert run.status()["state"] == "finished"
    assert run.labels() == ["bag", "sneaker", "t-shirt", "trouser"]
    assert run.preprocessing()["size"] == 64
    assert [e["epoch"] for e in run.epoch_logs()] == [1, 2, 3]
    logs = run.epoch_logs()[-1]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds",
                "images_per_sec", "eta_seconds"):
        assert key in logs and math.isfinite(logs[key])
    assert run.has_weights()
    summary = run.summary()
    assert summary["best_epoch"] == result.best_epoch and summary["counts"]["bag"] + summary["val_counts"]["bag"] == 15
    assert len(summary["val_records"]) == sum(summary["val_counts"].values()) == 4 * 4
    assert result.best_val_accuracy >= 0.5, "4 very different clothes classes are easy from ImageNet features"


def test_feature_cache_is_reused_and_gives_same_result(fmnist_small, tmp_path):
    first, second = Recorder(), Recorder()
    cache = str(tmp_path / "cache")
    r1 = train_run(make_config(fmnist_small, epochs=2, cache_dir=cache), runs_dir=tmp_path, callbacks=[first])
    r2 = train_run(make_config(fmnist_small, epochs=2, cache_dir=cache), runs_dir=tmp_path, callbacks=[second])
    assert first.calls[0][1]["feature_cache_hit"] is False
    assert second.calls[0][1]["feature_cache_hit"] is True
    assert [h["val_loss"] for h in r1.history] == pytest.approx([h["val_loss"] for h in r2.history], abs=1e-5)
    # a changed image invalidates the cache
    victim = next((fmnist_small / "bag").iterdir())
    data2 = tmp_path / "copy"
    shutil.copytree(fmnist_small, data2)
    third = Recorder()
    (data2 / "bag" / victim.name).write_bytes((data2 / "bag" / victim.name).read_bytes() + b"\0")
    train_run(make_config(data2, epochs=1, cache_dir=cache), runs_dir=tmp_path, callbacks=[third])
    assert third.calls[0][1]["feature_cache_hit"] is False
    assert victim.exists()


def test_stop_within_one_batch(fmnist_small, tmp_path):
    stop = threading.Event()

    class StopAfterFirstBatch(Recorder):
        def on_batch_end(self, step, logs):
            super().on_batch_end(step, logs)
            stop.set()

    rec = StopAfterFirstBatch()
    cfg = make_config(fmnist_small, preset="none", epochs=5, size=48, log_every_steps=1)
    result = train_run(cfg, runs_dir=tmp_path, callbacks=[rec], stop_event=stop)
    assert result.status == "stopped"
    assert rec.kinds().count("batch") == 1, "stop must take effect at the next batch"
    assert RunFolder(result.run_dir).status()["state"] == "stopped"
    assert "no model was saved" in result.message


def test_full_fine_tune_and_scratch_run(fmnist_small, tmp_path):
    for preset in ("last:1", "none", "scratch"):
        result = train_run(make_config(fmnist_small, preset=preset, epochs=2, size=48, augment="light",
                                       feature_cache=preset == "last:1"), runs_dir=tmp_path)
        assert result.status == "finished", (preset, result.message)
        assert result.mode == ("features" if preset == "last:1" else "full")
        assert RunFolder(result.run_dir).has_weights()


def test_bad_data_folder_fails_plainly(tmp_path):
    result = train_run(make_config(tmp_path / "nope"), runs_dir=tmp_path / "runs")
    assert result.status == "failed"
    assert "Traceback" not in result.message and result.message
    assert RunFolder(result.run_dir).status()["state"] == "failed"


def test_crash_mid_training_keeps_best_weights(fmnist_small, tmp_path):
    class Boom(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 2:
                raise RuntimeError("simulated crash")

    result = train_run(make_config(fmnist_small, epochs=4), runs_dir=tmp_path, callbacks=[Boom()])
    run = RunFolder(result.run_dir)
    assert result.status == "failed" and "simulated crash" in result.message
    assert run.status()["state"] == "failed"
    assert run.has_weights() and (run.path / "error.log").read_text().count("simulated crash")


def test_nan_loss_stops_with_advice(fmnist_small, tmp_path, monkeypatch):
    import tl_core.training.loop as engine

    real = engine.F.cross_entropy
    monkeypatch.setattr(engine.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    result = train_run(make_config(fmnist_small, epochs=1), runs_dir=tmp_path)
    assert result.status == "failed" and "NaN" in result.message and "learning rate" in result.message


def test_diagnose_warnings():
    base = {"train_accuracy": 0.5, "val_accuracy": 0.5}
    flat = [dict(base, train_loss=1.0, val_loss=1.0) for _ in range(3)]
    assert [k for k, _ in diagnose(flat)] == ["loss_not_falling"]
    over = [dict(train_loss=1.0 - 0.3 * i, val_loss=0.5 + 0.1 * i, train_accuracy=0.7 + 0.1 * i,
                 val_accuracy=0.6) for i in range(3)]
    assert [k for k, _ in diagnose(over)] == ["overfitting"]
    assert diagnose(over[:2]) == []


def test_lr_schedule_warms_up_then_decays():
    f = lr_lambda("cosine", total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0)
    assert f(55) < f(20) and f(100) == pytest.approx(0.01)
    assert lr_lambda("constant", 100, 0)(90) == 1.0


def test_imbalanced_data_gets_class_weights(fmnist_small, tmp_path):
    data = tmp_path / "imb"
    shutil.copytree(fmnist_small, data)
    for p in sorted((data / "bag").iterdir())[3:]:
        p.unlink()
    rec = Recorder()
    train_run(make_config(data, epochs=1), runs_dir=tmp_path, callbacks=[rec])
    info = rec.calls[0][1]
    assert info["balance"] == "weights" and info["imbalance_ratio"] >= 3
    end = rec.calls[-1][1]
    assert set(end["per_class_accuracy"]) == {"bag", "sneaker", "t-shirt", "trouser"}
    assert all(0 <= v <= 1 for v in end["per_class_accuracy"].values())

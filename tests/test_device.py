"""Device choice and the mixed-precision path.

CI has no GPU, so the CUDA branch of ``pick_device`` is exercised with PyTorch's CUDA queries
stubbed, and the engine's autocast/channels_last code is run for real on the CPU with bfloat16
(CPU autocast supports it): the same code the GPU runs, minus the GPU kernels.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from tl_core.runtime import device as device_mod
from tl_core.training import prepare
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.runtime.device import DeviceInfo, configure_threads, cpu_cores, pick_device
from tl_core.training.loop import train_run
from tl_core.errors import ConfigError


def test_cpu_is_chosen_without_a_gpu_and_amp_stays_off(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    dev = pick_device("auto", amp=True, channels_last=True)
    assert dev.device.type == "cpu" and dev.amp_dtype is None and dev.channels_last is False
    assert dev.to_dict() == {"device": "cpu", "name": f"CPU ({cpu_cores()} cores)", "amp_dtype": None,
                             "channels_last": False}


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_gets_bf16_where_supported_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    dev = pick_device("auto", amp=True, channels_last=True)
    assert dev.device.type == "cuda" and dev.amp_dtype == expected and dev.channels_last
    assert torch.backends.cudnn.benchmark is True
    assert dev.to_dict()["amp_dtype"] == str(expected).replace("torch.", "")
    assert pick_device("cuda", amp=False, channels_last=False).amp_dtype is None


def test_asking_for_a_missing_gpu_is_a_plain_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    with pytest.raises(ConfigError, match="no NVIDIA GPU"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="MPS"):
        pick_device("mps")


def test_threads_follow_the_cores():
    before = torch.get_num_threads()
    try:
        assert configure_threads(None) == cpu_cores() == torch.get_num_threads()
        assert configure_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("preset, mode", [("none", "full"), ("head", "features")])
def test_training_under_bf16_autocast_and_channels_last(fmnist_small, tmp_path, monkeypatch, preset, mode):
    """The GPU's mixed-precision path (autocast, logits cast back to float32 for the loss, bf16
    features in the cache, channels_last inputs) trains and evaluates without errors."""
    forced = DeviceInfo(torch.device("cpu"), "CPU with bf16 autocast (test)", torch.bfloat16, True)
    monkeypatch.setattr(prepare, "pick_device", lambda *a, **k: forced)
    config = RunConfig(data=DataConfig(root=str(fmnist_small), val_fraction=0.25),
                       model=ModelConfig("tf_efficientnet_lite0", weights="offline", image_size=48),
                       freeze=FreezeConfig(preset),
                       train=TrainConfig(epochs=2, batch_size=16, augment="light", cache_dir=str(tmp_path / "c")))
    result = train_run(config, runs_dir=tmp_path / "runs")
    assert result.status == "finished", result.message
    assert result.mode == mode
    assert len(result.history) == 2
    for logs in result.history:
        assert math.isfinite(logs["train_loss"]) and math.isfinite(logs["val_loss"])
    assert 0.0 <= result.best_val_accuracy <= 1.0


def test_openmp_threads_sleep_while_waiting_unless_the_user_says_otherwise():
    """Spinning OpenMP threads made training 2-5x slower on a busy 2-core machine (tl_core/__init__.py):
    importing tl_core sets OMP_WAIT_POLICY before PyTorch loads, and keeps a value the user set."""
    import subprocess
    import sys

    code = "import os, tl_core; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    assert subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                          text=True, check=True).stdout.strip() == "ACTIVE"

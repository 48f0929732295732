"""Pick the compute device and configure it for speed.

CUDA first, then Apple MPS, then CPU. On CPU we pin PyTorch's thread count to the physical cores
and never start extra worker processes: on a 2-core laptop, oversubscription (DataLoader workers
each spawning their own thread pools) is the most common reason training crawls.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tl_core.errors import ConfigError


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    name: str                      # "NVIDIA H100 80GB HBM3", "Apple MPS", "CPU (2 cores)"
    amp_dtype: torch.dtype | None  # bf16/fp16 on CUDA when AMP is on, else None
    channels_last: bool

    def to_dict(self) -> dict:
        return {"device": str(self.device), "name": self.name,
                "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
                "channels_last": self.channels_last}


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def describe_hardware() -> dict:
    """What the Home page shows: GPU name or CPU cores."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"kind": "cuda", "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                "cpu_cores": cpu_cores()}
    if mps_available():
        return {"kind": "mps", "name": "Apple GPU (MPS)", "cpu_cores": cpu_cores()}
    return {"kind": "cpu", "name": f"CPU ({cpu_cores()} cores)", "cpu_cores": cpu_cores()}


def configure_threads(num_threads: int | None = None) -> int:
    n = num_threads or cpu_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def pick_device(preference: str = "auto", amp: bool = True, channels_last: bool = True) -> DeviceInfo:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("You asked for the GPU (CUDA), but PyTorch sees no NVIDIA GPU here. Use 'auto' or 'cpu'.")
    if preference == "mps" and not mps_available():
        raise ConfigError("You asked for Apple's GPU (MPS), but it is not available here. Use 'auto' or 'cpu'.")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else None
        return DeviceInfo(torch.device("cuda"), torch.cuda.get_device_name(0), dtype, channels_last)
    if preference in ("auto", "mps") and mps_available():
        return DeviceInfo(torch.device("mps"), "Apple GPU (MPS)", None, False)
    return DeviceInfo(torch.device("cpu"), f"CPU ({cpu_cores()} cores)", None, False)

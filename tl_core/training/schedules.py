"""The optimizer and its learning-rate schedule: AdamW over the freeze plan's parameter groups,
stepped by a linear warm-up then a cosine (or linear, or constant) decay."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tl_core.config import RunConfig
from tl_core.models.freezing import FreezePlan, optimizer_param_groups
from tl_core.runtime.device import DeviceInfo


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the base LR at each optimizer step: linear warm-up, then cosine to 1%."""
    def fn(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        floor = 0.01
        if schedule == "onecycle":  # linear anneal after the warm-up peak
            return max(floor, 1.0 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


@dataclass
class Optimization:
    lr: float
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler     # loss scaling for float16 autocast; a pass-through otherwise


def make_optimization(model: nn.Module, plan: FreezePlan, config: RunConfig, dev: DeviceInfo,
                      steps_per_epoch: int) -> Optimization:
    tcfg = config.train
    lr = tcfg.resolved_lr(config.freeze.preset)
    groups = optimizer_param_groups(model, plan, lr, tcfg.weight_decay, config.freeze.layer_lr_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=dev.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(tcfg.schedule, steps_per_epoch * tcfg.epochs, int(tcfg.warmup_epochs * steps_per_epoch)))
    scaler = torch.amp.GradScaler("cuda", enabled=dev.amp_dtype == torch.float16)
    return Optimization(lr, optimizer, scheduler, scaler)

"""Augmentation on decoded uint8 batches, on whatever device the batch lives on.

Images are decoded once into memory, so augmentation cannot be a per-file PIL pipeline; it is
one batched affine warp (random resized crop, flip, small rotation) plus colour jitter, run on
the GPU when there is one. Crops are mild on purpose: small images (icons, scans, 28-pixel
Fashion-MNIST) lose their subject under ImageNet-style 8%-100% crops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEVELS = {
    # area scale range, max rotation (deg), flip prob, colour jitter
    "none": None,
    "light": {"scale": (0.75, 1.0), "ratio": (0.85, 1.18), "rotate": 0.0, "flip": 0.5, "jitter": 0.1},
    "strong": {"scale": (0.45, 1.0), "ratio": (0.75, 1.33), "rotate": 15.0, "flip": 0.5, "jitter": 0.25},
}


class BatchAugment:
    """Random resized crop + flip + rotation + brightness/contrast, batched."""

    def __init__(self, level: str, generator: torch.Generator | None = None):
        if level not in LEVELS:
            raise ValueError(f"unknown augmentation level {level!r}")
        self.params = LEVELS[level]
        self.generator = generator

    @property
    def enabled(self) -> bool:
        return self.params is not None

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (hi - lo) + lo

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """float (N,3,H,W) in [0,255] -> augmented float, same shape and device."""
        if self.params is None:
            return batch
        p = self.params
        n = batch.shape[0]
        area = self._uniform(n, *p["scale"])
        log_r = self._uniform(n, math.log(p["ratio"][0]), math.log(p["ratio"][1]))
        ratio = torch.exp(log_r)
        sx = torch.sqrt(area * ratio).clamp(max=1.0)
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        tx = (torch.rand(n, generator=self.generator) * 2 - 1) * (1 - sx)
        ty = (torch.rand(n, generator=self.generator) * 2 - 1) * (1 - sy)
        flip = torch.where(torch.rand(n, generator=self.generator) < p["flip"], -1.0, 1.0)
        angle = self._uniform(n, -p["rotate"], p["rotate"]) * math.pi / 180.0
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = sx * cos * flip
        theta[:, 0, 1] = -sin * sy
        theta[:, 1, 0] = sin * sx * flip
        theta[:, 1, 1] = sy * cos
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        theta = theta.to(batch.device, batch.dtype)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        j = p["jitter"]
        if j:
            bright = self._uniform(n, 1 - j, 1 + j).to(batch.device, batch.dtype).view(n, 1, 1, 1)
            contrast = self._uniform(n, 1 - j, 1 + j).to(batch.device, batch.dtype).view(n, 1, 1, 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = ((out - mean) * contrast + mean) * bright
            out = out.clamp(0, 255)
        return out

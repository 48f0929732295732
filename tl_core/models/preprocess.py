"""How an image becomes the model's input, in one place.

Training, evaluation, prediction, Grad-CAM and the exported ``predict.py`` must all see an image
the same way, otherwise the accuracy shown in the app is not the accuracy the user takes home.
The recipe comes from timm's data config for the model (size, mean, std, interpolation); we keep
the whole image (``crop_pct = 1``: resize the short side, centre-crop the square) because users'
photos are not ImageNet-centred and cropping 12% away can cut off what matters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torch import nn


@dataclass(frozen=True)
class Preprocessing:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = [3, self.size, self.size]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "bicubic"), crop_pct=float(d.get("crop_pct", 1.0)),
                   crop_mode=d.get("crop_mode", "center"))

    @classmethod
    def for_model(cls, model: nn.Module, image_size: int | None = None) -> "Preprocessing":
        cfg = resolve_data_config({}, model=model)
        size = int(image_size or cfg["input_size"][-1])
        return cls(size=size, mean=tuple(float(x) for x in cfg["mean"]), std=tuple(float(x) for x in cfg["std"]),
                   interpolation=cfg.get("interpolation", "bicubic") or "bicubic")

    def pil_transform(self):
        """timm's eval transform without ToTensor/Normalize: PIL in, PIL (size x size) out."""
        full = create_transform(input_size=(3, self.size, self.size), interpolation=self.interpolation,
                                crop_pct=self.crop_pct, crop_mode=self.crop_mode, mean=self.mean, std=self.std)
        from torchvision import transforms as T

        steps = [t for t in full.transforms if isinstance(t, (T.Resize, T.CenterCrop))]
        return T.Compose(steps)

    def to_uint8(self, image: Image.Image, pil_transform=None) -> torch.Tensor:
        """RGB PIL image -> uint8 tensor (3, size, size): the decode-once storage format."""
        out = (pil_transform or self.pil_transform())(image.convert("RGB"))
        arr = np.asarray(out, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def normalizer(self, device: torch.device | str = "cpu") -> "Normalizer":
        return Normalizer(self.mean, self.std, device)

    def to_input(self, images: list[Image.Image], device: torch.device | str = "cpu") -> torch.Tensor:
        """PIL images -> a normalised float batch ready for the model."""
        tf = self.pil_transform()
        batch = torch.stack([self.to_uint8(im, tf) for im in images])
        return self.normalizer(device)(batch.to(device))


class Normalizer:
    """uint8 (N,3,H,W) -> float normalised, on whatever device the batch lives on."""

    def __init__(self, mean, std, device="cpu"):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, 3, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, 3, 1, 1)

    def __call__(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.scale.device != batch.device:
            self.scale, self.shift = self.scale.to(batch.device), self.shift.to(batch.device)
        return (batch.to(dtype) * self.scale.to(dtype) - self.shift.to(dtype))

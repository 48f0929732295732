"""Load a trained run back into memory and classify images with it.

Used by ``tl predict``, ``tl evaluate``, the Try page, Grad-CAM and the exporters, so they all
see exactly the model and preprocessing the run saved.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from tl_core.errors import RunError
from tl_core.models.builder import build_network
from tl_core.models.preprocess import Preprocessing
from tl_core.runs import RunFolder


@dataclass
class LoadedModel:
    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    model_name: str
    device: torch.device

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (N, C) for RGB PIL images."""
        outs = []
        for i in range(0, len(images), batch_size):
            x = self.preprocessing.to_input(list(images[i:i + batch_size]), self.device)
            outs.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))

    @torch.inference_mode()
    def predict_uint8(self, batch: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Probabilities for already-decoded uint8 (N,3,S,S) tensors."""
        norm = self.preprocessing.normalizer(self.device)
        outs = []
        for i in range(0, len(batch), batch_size):
            x = norm(batch[i:i + batch_size].to(self.device))
            outs.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))

    def top_k(self, image: Image.Image, k: int = 5) -> list[dict]:
        probs = self.predict_proba([image])[0]
        k = min(k, len(self.classes))
        vals, idx = probs.topk(k)
        return [{"label": self.classes[i], "probability": float(v)} for v, i in zip(vals.tolist(), idx.tolist())]


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    run = RunFolder.open(run_dir)
    cfg = run.config()
    classes = run.labels()
    prep = Preprocessing.from_dict(run.preprocessing())
    model = build_network(cfg.model.name, len(classes))  # the bare architecture; the run's weights follow
    state = run.load_state_dict()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RunError(f"The weights in {run.path} do not match model {cfg.model.name}: {str(err)[:300]}") from None
    device = torch.device(device)
    model.to(device).eval()
    return LoadedModel(model, classes, prep, cfg.model.name, device)

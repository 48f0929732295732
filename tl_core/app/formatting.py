"""Numbers and settings in the words a beginner reads: "about 3 min", "5.3 M", "Train only the new
classifier", one line per run."""
from __future__ import annotations

import math
import time

from tl_core.config import parse_preset


def format_seconds(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "?"
    s = max(0.0, float(seconds))
    if s < 1:
        return "under a second"
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def format_params(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return f"{n:.0f}"


def preset_label(preset: str) -> str:
    kind, n = parse_preset(preset)
    return {"head": "Train only the new classifier (fast, best for small data)",
            "last": f"Also fine-tune the last {n} layer group{'s' if n != 1 else ''}",
            "none": "Fine-tune everything (slow, needs more images)",
            "scratch": "From scratch: no pretrained knowledge (for comparison)"}[kind]


def run_label(desc: dict) -> str:
    """One line for a run picker: when, which model, state, best accuracy."""
    when = desc.get("created_at")
    stamp = time.strftime("%d %b %H:%M", time.localtime(when)) if when else desc.get("run_id", "?")
    acc = desc.get("best_val_accuracy")
    acc_txt = f", best {acc:.0%}" if isinstance(acc, (int, float)) and acc >= 0 else ""
    return f"{stamp} · {desc.get('model', '?')} · {desc.get('state', '?')}{acc_txt}"

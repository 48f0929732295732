"""Numbers and settings in the words a beginner reads: "about 3 min", "5.3 M", "Train only the new
classifier", one line per run and one table row per run."""
from __future__ import annotations

import functools
import math
import re
import time
from pathlib import Path

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


def preset_short(preset: str | None, custom: bool = False) -> str:
    """A few words for a layer setting, for tables and labels: "new classifier only", "last 2 groups",
    "everything", "from scratch" (", custom" when the user ticked the groups by hand)."""
    try:
        kind, n = parse_preset(preset or "")
    except Exception:
        return str(preset or "?")
    words = {"head": "new classifier only",
             "last": "last group" if n == 1 else f"last {n} groups",
             "none": "everything",
             "scratch": "from scratch"}[kind]
    return f"{words}, custom" if custom and kind != "scratch" else words


@functools.lru_cache(maxsize=64)
def model_title(name: str | None) -> str:
    """The catalogue's friendly title ("EfficientNet-Lite0") for a timm name; the name itself when
    it is not in the catalogue."""
    if not name or name == "?":
        return "?"
    try:
        from tl_core.models.catalogue import model_title_of

        return model_title_of(name)
    except Exception:
        return str(name)


def format_when(timestamp: float | None) -> str:
    """"12 Mar 14:05" (local time); "?" when unknown."""
    if not isinstance(timestamp, (int, float)) or timestamp <= 0:
        return "?"
    return time.strftime("%d %b %H:%M", time.localtime(timestamp))


def format_accuracy(acc: float | None, checked: int | None = None) -> str:
    """``92.0%``; with the number of pictures it was checked on, also its 95% interval
    (``92.0% (80-97%)``), because 30 pictures cannot support one exact number."""
    if not (isinstance(acc, (int, float)) and not isinstance(acc, bool) and acc >= 0):
        return ""
    if isinstance(checked, int) and checked > 0:
        from tl_core.results.stats import accuracy_interval

        low, high = accuracy_interval(int(round(acc * checked)), checked)
        return f"{acc:.1%} ({low * 100:.0f}-{high * 100:.0f}%)"
    return f"{acc:.1%}"


def data_name(desc: dict) -> str:
    """The data folder's name (its last part) from a run description."""
    name = desc.get("data_name")
    if not name:
        data = desc.get("data")
        name = (Path(str(data)).name or str(data)) if data and data != "?" else "?"
    return str(name)


def split_short(desc: dict) -> str:
    """How the pictures to check with were chosen, in a few words ("own val/ folder", "20% held out");
    "" when not known."""
    kind, share = desc.get("split"), desc.get("val_fraction")
    if kind == "folder":
        return "own val/ folder"
    if kind == "random":
        return f"{share:.0%} held out" if isinstance(share, (int, float)) else "part held out"
    return ""


def run_label(desc: dict, details: bool = False) -> str:
    """One line that tells runs apart: the user's title, else data folder · model · layers; then
    the date ("cats · EfficientNet-Lite0 · new classifier only · 12 Mar 14:05"). ``details`` adds
    the state and the best validation accuracy (for run pickers)."""
    when = desc.get("created_at")
    stamp = format_when(when) if when else desc.get("run_id", "?")
    title = desc.get("title")
    if title:
        label = f"{title} · {stamp}"
    else:
        label = (f"{data_name(desc)} · {model_title(desc.get('model'))} · "
                 f"{preset_short(desc.get('preset'), bool(desc.get('custom_layers')))} · {stamp}")
    if details:
        acc = desc.get("best_val_accuracy")
        acc_txt = f", best {acc:.0%}" if isinstance(acc, (int, float)) and acc >= 0 else ""
        label += f" · {desc.get('state', '?')}{acc_txt}"
    return label


def format_epochs(desc: dict) -> str:
    """"3 / 10" (done / planned), "3" when the plan is unknown, "" when nothing is known."""
    done, planned = desc.get("epochs_done"), desc.get("epochs_planned")
    if done is None and planned is None:
        return ""
    return f"{done if done is not None else 0} / {planned}" if planned else str(done)


def run_row(desc: dict) -> dict:
    """One row of the runs table, in plain words."""
    took = desc.get("seconds")
    return {"When": format_when(desc.get("created_at")),
            "Title": desc.get("title") or data_name(desc),
            "Data": " · ".join(part for part in (data_name(desc), split_short(desc)) if part),
            "Model": model_title(desc.get("model")),
            "Layers": preset_short(desc.get("preset"), bool(desc.get("custom_layers"))),
            "Best accuracy": format_accuracy(desc.get("best_val_accuracy"), desc.get("val_images")),
            "Took": ("< 1 s" if took < 1 else format_seconds(took)) if took is not None else "",  # a narrow column
            "Epochs": format_epochs(desc),
            "State": "damaged" if desc.get("damaged") else (desc.get("state") or "?"),
            "Run folder": desc.get("run_id", "")}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#|<>~$:])")


def markdown_safe(text: str) -> str:
    """``text`` shown as typed inside Streamlit markdown (headings, captions): markdown, emoji
    shortcodes and LaTeX characters are escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


# -- plain words for what the pages show (the technical name goes in a tooltip) ---------------------

# Per-category scores: (plain column name, tooltip with the technical name).
SCORE_WORDS = {
    "precision": ("Right when it says so", "Precision: when the model says this category, how often it is right."),
    "recall": ("Pictures it found", "Recall: of the pictures of this category, how many the model found."),
    "f1": ("Overall score", "F1 score: one number that combines precision and recall; 1.0 is perfect."),
}


def group_title(name: str, label: str, description: str) -> str:
    """A layer group's name in plain words: "First layers", "Early layers 2", "New classifier".

    The words come from the group's own description ("Early layers: simple shapes…"), numbered
    with the technical stage number when several groups share them; the technical label
    ("Stage 2") stays for the tooltip."""
    if name == "classifier":
        return label or "New classifier"
    head = (description or "").split(":", 1)[0].strip() if ":" in (description or "") else ""
    if not head:
        return label or name
    if head.lower().startswith("the "):
        head = head[4:]
    head = head[:1].upper() + head[1:]
    number = name.rsplit("_", 1)[1] if name.startswith("stage_") and name.rsplit("_", 1)[1].isdigit() else ""
    return f"{head} {number}".strip()


def group_detail(description: str) -> str:
    """What a layer group does, without its plain name: "simple shapes and patterns." """
    text = description or ""
    if ":" in text:
        text = text.split(":", 1)[1].strip()
    return text[:1].upper() + text[1:] if text else ""

"""Source files Transfer Lab copies into exported bundles (read as text, never imported by tl_core)."""
from __future__ import annotations

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent


def template_text(name: str) -> str:
    """The text of one template file, e.g. ``template_text("predict.py")``."""
    return (TEMPLATES_DIR / name).read_text(encoding="utf-8")

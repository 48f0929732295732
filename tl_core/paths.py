"""Where Transfer Lab keeps caches (converted weights, feature caches)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TL_CACHE_DIR`` or ``~/.cache/transfer-lab``; created on first use."""
    root = Path(os.environ.get("TL_CACHE_DIR") or Path.home() / ".cache" / "transfer-lab").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root

"""Base models: finding, converting and loading them, and the tiny test fixtures."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """Where factinject keeps what it builds once per machine (fixtures, converted GGUFs):
    FACTINJECT_CACHE, else the XDG cache folder."""
    base = os.environ.get("FACTINJECT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "factinject")
    return Path(base).expanduser()

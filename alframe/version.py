"""alframe's version, and the commit of the checkout it runs from (recorded on every run, so a
results table can say what made it)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.2.0"


@functools.cache
def source_commit() -> str | None:
    """The git commit of the checkout alframe is imported from, with ``+dirty`` when tracked
    files differ from it; None outside a git checkout (an installed wheel) or without git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "alframe", "conf"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")

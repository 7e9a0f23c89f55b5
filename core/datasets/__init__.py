"""Readers of the public datasets' native layouts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def layout_root(root: Path, is_layout: Callable[[Path], bool]) -> Path:
    """The folder holding a layout: the one given, or the first folder one or two levels below it that is one (a
    download unpacked into its own folder, e.g. HuSHeM/01_Normal/…); the one given when none is."""
    root = Path(root)
    if not root.is_dir():
        return root
    below = [p for pattern in ("*", "*/*") for p in sorted(root.glob(pattern)) if p.is_dir()]
    return next((p for p in [root, *below] if is_layout(p)), root)

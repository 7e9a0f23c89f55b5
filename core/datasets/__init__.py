"""Readers of the public datasets' native layouts."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def layout_roots(root: Path, is_layout: Callable[[Path], bool]) -> list[Path]:
    """The folders holding a layout: the one given, or else every folder one level below it that is one, or else two
    levels below (a download unpacked into its own folder, e.g. HuSHeM/01_Normal/…; a folder of several sets, e.g.
    PCOSGen-train/ and PCOSGen-test/, or hushem/ beside mhsma/); [the one given] when none is."""
    root = Path(root)
    if not root.is_dir() or is_layout(root):
        return [root]
    for pattern in ("*", "*/*"):
        found = [p for p in sorted(root.glob(pattern)) if p.is_dir() and is_layout(p)]
        if found:
            return found
    return [root]


def layout_root(root: Path, is_layout: Callable[[Path], bool]) -> Path:
    """The first of layout_roots (for a reader of one set)."""
    return layout_roots(root, is_layout)[0]


def in_folder(path: Path, root: Path, folder: str) -> bool:
    """Whether `path` lies in a folder named `folder` (any case) below `root`: a set's own split (test/, valid/ …).
    Paths are compared as given, not resolved, so a linked file stays where the layout puts it."""
    try:
        parts = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).parts[:-1]
    except ValueError:  # not below root: none of its folders is the set's
        return False
    return folder.lower() in (p.lower() for p in parts)

"""PCOS ultrasound layouts: PCOSGen (class_label.csv or .xlsx + images/, optional neardup_groups.csv), class folders.

Labels are `healthy` / `pcos`; PCOSGen's `Healthy` column is 1 healthy, 0 unhealthy (= PCOS). Splits are by
video group (frames of one sweep: neardup_groups.csv joined wherever two frames correlate strongly), decided by a
stable hash of the group id, so the same group always lands in the same split on every machine.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..audit import connected_groups
from . import layout_roots

LABELS = ["healthy", "pcos"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
# class-folder names, compared lower-case without punctuation
FOLDER_LABELS = {
    **dict.fromkeys(["healthy", "normal", "notinfected", "noninfected", "nonpcos", "notpcos", "nopcos", "negative",
                     "control", "controls", "pcosnegative", "healthyovary", "normalovary"], "healthy"),
    **dict.fromkeys(["pcos", "infected", "unhealthy", "positive", "polycystic", "pcosovary", "pcospositive",
                     "polycysticovary", "polycysticovaries", "pco"], "pcos"),
}
SPLITS = ("train", "val", "heldout")
HELDOUT_PERCENT = 20  # of groups
VAL_PERCENT = 15  # of groups, the inner validation split used for early stopping and choosing a recipe
# frames of one scan: 64 px grey correlation (flip-aware) at or above this. Checked by eye on PCOSGen: pairs at
# 0.84-0.87 in different neardup_groups.csv groups are still frames of one sweep; whole-frame phash cannot tell
# scans apart (the sector shape dominates: median 4 bits to the nearest other group).
NEAR_CORRELATION = 0.85


@dataclass
class Item:
    path: Path
    label: str
    group: str
    name: str  # item id used in stores: path relative to the dataset root

    @property
    def split(self) -> str:
        return split_of(self.group)


def split_of(group: str) -> str:
    """Deterministic split of a near-duplicate group: heldout (20 %), val (15 %) or train, from a stable hash."""
    bucket = int(hashlib.sha256(f"pcos-group:{group}".encode()).hexdigest()[:8], 16) % 100
    if bucket < HELDOUT_PERCENT:
        return "heldout"
    if bucket < HELDOUT_PERCENT + VAL_PERCENT:
        return "val"
    return "train"


def label_table(root: Path) -> Path | None:
    """The table of imagePath, Healthy beside images/: class_label.csv here, class_label.xlsx as the challenge
    published it, or any other .csv / .xlsx with those two columns (any case)."""
    if not (root / "images").is_dir():
        return None
    tables = sorted(p for p in root.iterdir() if p.suffix.lower() in (".csv", ".xlsx") and p.is_file())
    tables.sort(key=lambda p: p.stem.lower() != "class_label")
    for table in tables:
        try:
            columns = _read_table(table, nrows=0).columns
        except (ValueError, OSError, UnicodeDecodeError):
            continue
        if {"imagepath", "healthy"} <= {str(c).strip().lower() for c in columns}:
            return table
    return None


def _read_table(path: Path, nrows: int | None = None) -> pd.DataFrame:
    table = (pd.read_excel(path, nrows=nrows) if path.suffix.lower() == ".xlsx" else pd.read_csv(path, nrows=nrows))
    table.columns = [str(c).strip().lower() for c in table.columns]
    return table


def is_pcosgen(root: Path) -> bool:
    return label_table(root) is not None


def folder_label(name: str) -> str | None:
    return FOLDER_LABELS.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def read_pcosgen(root: Path, missing: list[str] | None = None) -> list[Item]:
    """Items of a PCOSGen set; rows naming a file that is not there are left out and, with `missing`, listed."""
    table = label_table(root)
    labels = _read_table(table)
    groups_file = root / "neardup_groups.csv"
    groups = {}
    if groups_file.is_file():
        g = pd.read_csv(groups_file)
        groups = dict(zip(g["imagePath"], g["group_id"].astype(str)))
    items = []
    for path_name, healthy in zip(labels["imagepath"].astype(str), pd.to_numeric(labels["healthy"], errors="coerce")):
        path = root / "images" / path_name
        if not path.is_file() and (root / path_name).is_file():  # paths written as images/x.jpg
            path = root / path_name
        if not path.is_file() and missing is not None:
            missing.append(f"{table.name} names {path_name}, which is not in images/")
        if path.is_file() and healthy in (0, 1):  # rows without a 0/1 label are not part of the set
            items.append(Item(path, "healthy" if healthy == 1 else "pcos", groups.get(path_name, ""),
                              path.relative_to(root).as_posix()))
    return items


def read_class_folders(root: Path) -> list[Item]:
    """Every image below a folder named like a class (healthy/, pcos/, infected/, notinfected/ ...), any depth;
    the nearest such folder above an image gives its label (the root's own name counts last)."""
    items = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(root)
        names = [p.name for p in list(rel.parents)[:-1]] + [root.name]
        label = next((lab for lab in map(folder_label, names) if lab), None)
        if label:
            items.append(Item(path, label, "", str(rel)))
    return items


def read_dataset(root: Path, missing: list[str] | None = None) -> tuple[list[Item], str, dict]:
    """Items of a PCOSGen or class-per-folder root (exact duplicates handled, video groups assigned), the layout's
    name, and what was done to the items; `missing` collects table rows naming files that are not there."""
    roots = layout_roots(root, is_pcosgen)
    if is_pcosgen(roots[0]):  # several sets side by side (PCOSGen-train/, PCOSGen-test/) are pooled
        items, layout = [], "pcosgen"
        for set_root in roots:
            found = read_pcosgen(set_root, missing)
            if len(roots) > 1:  # names (and the table's groups) kept apart by the set's folder
                within = set_root.relative_to(root).as_posix()
                found = [replace(i, name=f"{within}/{i.name}", group=i.group and f"{within}/{i.group}") for i in found]
            items += found
    else:
        items, layout = read_class_folders(root), "class-per-folder"
    if items:
        items, info = drop_conflicting_duplicates(items)
        return items, layout, {**info, **assign_groups(items), "sets": len(roots) if layout == "pcosgen" else 1}
    raise ValueError(f"{root}: no PCOS layout found (expected class_label.csv + images/, or class folders such as "
                     "healthy/ and pcos/)")


def thumbnails(items: list[Item], size: int = 64) -> np.ndarray:
    """Each image as a zero-mean, unit-norm grey size x size vector (unreadable files: zeros)."""
    from ..imageio import ImageInputError, read_image

    out = np.zeros((len(items), size * size), np.float32)
    for k, item in enumerate(items):
        try:
            grey = cv2.cvtColor(read_image(item.path).pixels, cv2.COLOR_RGB2GRAY)
        except ImageInputError:
            continue
        v = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        v -= v.mean()
        out[k] = v / max(float(np.linalg.norm(v)), 1e-6)
    return out


def similarity(thumbs: np.ndarray, size: int = 64, chunk: int = 1024):
    """Yields (rows, correlation block) of every image against all, the better of as-is and left-right flipped."""
    flipped = thumbs.reshape(-1, size, size)[:, :, ::-1].reshape(len(thumbs), -1)
    for start in range(0, len(thumbs), chunk):
        block = thumbs[start:start + chunk]
        yield start, np.maximum(block @ thumbs.T, block @ flipped.T)


def assign_groups(items: list[Item], threshold: float = NEAR_CORRELATION) -> dict:
    """Merge items into video groups: the given groups (if any) joined wherever two frames correlate >= threshold.

    Returns how many given groups there were and how many merges the correlation added (the check of the file).
    """
    first: dict[str, int] = {}
    given_links = [(i, first.setdefault(item.group, i)) for i, item in enumerate(items) if item.group]
    given = len(first)
    linked_pairs = 0
    near_links = []
    for start, sim in similarity(thumbnails(items)):
        rows, cols = np.nonzero(sim >= threshold)
        for r, c in zip(rows + start, cols):
            if r < c:
                linked_pairs += items[r].group != items[c].group or not items[r].group
                near_links.append((int(r), int(c)))
    n_given_groups = len(connected_groups(len(items), given_links))
    groups = connected_groups(len(items), given_links + near_links)
    merges = n_given_groups - len(groups)
    for members in groups.values():
        group = f"v{items[min(members)].name}"  # named after its first item, whatever the union order
        for i in members:
            items[i].group = group
    return {"given_groups": given, "pairs_linked_across_given_groups": int(linked_pairs),
            "merges": merges, "video_groups": len({i.group for i in items}), "threshold": threshold}


def drop_conflicting_duplicates(items: list[Item]) -> tuple[list[Item], dict]:
    """Byte-identical files: keep one copy; drop every copy when the copies carry different labels."""
    by_digest: dict[str, list[Item]] = {}
    for item in items:
        by_digest.setdefault(hashlib.sha256(item.path.read_bytes()).hexdigest(), []).append(item)
    kept, conflicting, repeated = [], 0, 0
    for copies in by_digest.values():
        if len({c.label for c in copies}) > 1:
            conflicting += len(copies)
            continue
        repeated += len(copies) - 1
        kept.append(copies[0])
    return kept, {"dropped_conflicting_copies": conflicting, "dropped_repeated_copies": repeated}

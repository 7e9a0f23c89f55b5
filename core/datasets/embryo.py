"""Single-embryo image layouts for `embryo-grade`, read as one list of labelled items.

- Hung Vuong (Kaggle "World Championship 2023 – Embryo classification"): train.csv (Image,Class) + train/.
  D3_ = day 3 (cleavage stage); D5_ = day 5: good ones are blastocysts, poor ones mix poor blastocysts, morulae
  and arrested embryos, so their stage is unknown (None). Quality from Class (1 good, 0 not good).
- Gomez 2022 (core.datasets.gomez): a Gomez root (stage from the phase annotations: pronuclear and cleavage phases
  -> cleavage, tSB…tHB -> blastocyst, tM and unannotated frames left out) and the blastocyst-crops folder.
- Class per folder: cleavage/ and blastocyst/ (stage only).
A folder holding several of these (e.g. ../shared/data/timelapse) is read as their union.

Every item has a group (near-duplicate group, or embryo) so that splits never separate related images; the
held-out split is a stable hash of the group id.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..audit import connected_groups, hamming, phash_variants
from ..imageio import ImageInputError, read_image
from . import gomez

STAGES = ["cleavage", "blastocyst"]
QUALITIES = ["not_good", "good"]
HELDOUT_PERCENT = 15
# The first salt (of "embryo-grade:<k>:", k = 0, 1, ...) whose held-out Gomez set holds one complete cleavage
# sequence and one or two blastocyst-crop embryos, chosen from the embryo ids alone before any training.
SPLIT_SALT = "embryo-grade:26:"
NEAR_DUP_BITS = 8  # pHash Hamming distance (flips included) at or below which two images are one group
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass
class Item:
    path: Path
    name: str  # unique within a dataset, e.g. "hungvuong/D3_001.jpg"
    group: str
    source: str  # hungvuong | gomez | gomez-crops | folders
    stage: str | None = None
    quality: str | None = None
    day: str | None = None
    conflicts: tuple[str, ...] = ()  # outputs whose labels disagree within this item's duplicate group

    @property
    def split(self) -> str:
        return split_of(self.group)


def split_of(group: str) -> str:
    """'heldout' or 'train', fixed by the group id alone."""
    return "heldout" if zlib.crc32((SPLIT_SALT + group).encode()) % 100 < HELDOUT_PERCENT else "train"


def load_rgb(path: Path) -> np.ndarray:
    return read_image(path).pixels


# --- layouts ---------------------------------------------------------------------------------------------------

def hungvuong_splits(root: Path) -> list[str]:
    """Names X of each table X.csv (columns Image, Class) beside a folder X/: train.csv + train/ in the public set."""
    splits = []
    for table in sorted(root.glob("*.csv")):
        if (root / table.stem).is_dir():
            try:
                header = pd.read_csv(table, nrows=0).columns
            except (ValueError, UnicodeDecodeError):
                continue
            if {"image", "class"} <= {str(c).strip().lower() for c in header}:
                splits.append(table.stem)
    return splits


def is_hungvuong(root: Path) -> bool:
    return bool(hungvuong_splits(root))


def read_hungvuong(root: Path, missing: list[str] | None = None) -> list[Item]:
    """Items of a Hung Vuong set; rows naming a file that is not there are left out and, with `missing`, listed."""
    items = []
    for split in hungvuong_splits(root):
        table = pd.read_csv(root / f"{split}.csv")
        table.columns = [str(c).strip().lower() for c in table.columns]
        prefix = "hungvuong/" if split == "train" else f"hungvuong/{split}/"
        for image, cls in zip(table["image"].astype(str), pd.to_numeric(table["class"], errors="coerce")):
            path = root / split / image
            if not path.is_file() and (root / image).is_file():  # paths written as train/D3_001.jpg
                path, image = root / image, Path(image).name
            if not path.is_file() and missing is not None:
                missing.append(f"{split}.csv names {image}, which is not in {split}/")
            if not path.is_file() or cls not in (0, 1):  # a missing file, or a row without a 0/1 label
                continue
            day = image[:2].upper() if image[:2].upper() in ("D3", "D5") else None
            good = int(cls) == 1
            stage = "cleavage" if day == "D3" else ("blastocyst" if day == "D5" and good else None)
            items.append(Item(path, prefix + image, "", "hungvuong", stage, QUALITIES[good], day))
    _group_near_duplicates(items)
    return items


def _group_near_duplicates(items: list[Item]) -> None:
    """Union-find over pHash distance (flips included); group id = first member's name; outputs whose labels
    disagree inside a group are flagged on its members (their stage or quality is then neither trained nor scored).
    An unreadable image is a group of its own (the evaluation lists it as skipped)."""
    variants = [_phash_variants_or_none(it.path) for it in items]  # [0] is the image's own hash
    links = [(i, j) for i in range(len(items)) for j in range(i + 1, len(items))
             if variants[i] and variants[j] and min(hamming(variants[i][0], v) for v in variants[j]) <= NEAR_DUP_BITS]
    members = connected_groups(len(items), links)
    for idx in members.values():
        group = "hv:" + min(items[i].name for i in idx)
        conflicts = tuple(
            out for out in ("stage", "quality")
            if len({getattr(items[i], out) for i in idx if getattr(items[i], out) is not None}) > 1
        )
        for i in idx:
            items[i].group = group
            items[i].conflicts = conflicts


def _phash_variants_or_none(path: Path) -> list[int] | None:
    try:
        return phash_variants(load_rgb(path))
    except (ImageInputError, OSError):
        return None


def read_gomez(root: Path, every: int = 1) -> list[Item]:
    """Annotated frames of a Gomez root (every `every`-th frame of each embryo), grouped by embryo."""
    items = []
    for embryo in gomez.read_dataset(root):
        labelled = [f for f in embryo.frames if f.stage in ("pronuclear", "cleavage", "blastocyst")]
        for f in labelled[::every]:
            stage = "blastocyst" if f.stage == "blastocyst" else "cleavage"
            items.append(Item(f.path, f"gomez/{embryo.name}/{f.path.name}", f"gomez:{embryo.name}", "gomez", stage))
    return items


def read_gomez_crops(folder: Path, every: int = 1) -> list[Item]:
    items = []
    for embryo, paths in gomez.read_blastocyst_crops(folder).items():
        for p in paths[::every]:
            items.append(Item(p, f"gomez-crops/{p.name}", f"gomez:{embryo}", "gomez-crops", "blastocyst"))
    return items


def stage_folders(root: Path) -> list[tuple[str, Path]]:
    """(stage, folder) for each folder right below `root` named after a stage, in any case, plural or numbered
    ("Blastocysts/", "02_cleavage/"); not a folder that only mentions one ("gomez2022_blastocyst_crops/")."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = re.sub(r"^[\d\s._-]+", "", folder.name.lower()).removesuffix("s")
        if name in STAGES:
            found.append((name, folder))
    return found


def is_class_folders(root: Path) -> bool:
    return bool(stage_folders(root))


def read_class_folders(root: Path) -> list[Item]:
    """cleavage/ and blastocyst/ folders (any case, any depth below them). Images in a subfolder of a stage folder
    form one group (one embryo or patient, e.g. blastocyst/<embryo>/*.png); images lying loose are each their own."""
    items = []
    for stage, folder in stage_folders(root):
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                rel = p.relative_to(folder)
                name = f"{folder.name}/{rel}"
                group = f"folder:{rel.parts[0]}" if len(rel.parts) > 1 else f"file:{name}"
                items.append(Item(p, name, group, "folders", stage))
    return items


def read_any(root: Path, gomez_every: int = 1, missing: list[str] | None = None) -> tuple[list[Item], list[str]]:
    """Every labelled item under `root` and the layouts recognised there; ValueError if none. `missing` collects the
    table rows naming files that are not there."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if is_hungvuong(root):
        return read_hungvuong(root, missing), ["hungvuong"]
    if gomez.is_gomez_root(root):
        return read_gomez(root, gomez_every), ["gomez"]
    if gomez.read_blastocyst_crops(root):
        return read_gomez_crops(root, gomez_every), ["gomez-crops"]
    if is_class_folders(root):
        return read_class_folders(root), ["class-folders"]
    items, layouts = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            found, names = read_any(sub, gomez_every, missing)
        except ValueError:
            continue
        items += found
        layouts += [f"{sub.name}:{n}" for n in names]
    if not items:
        raise ValueError(
            f"{root}: no embryo layout found (expected train.csv + train/ (Hung Vuong), embryo_dataset/ + "
            "embryo_dataset_annotations/ (Gomez), E2_*_phase_split_*.jpeg crops, or cleavage/ and blastocyst/ folders)"
        )
    return items, layouts

"""Sperm layouts, read natively:

- HuSHeM and any class-per-folder set: <root>/<class folder>/*.bmp|png|jpg. Folder names containing normal,
  tapered, pyriform or amorphous give the `shape` label (HuSHeM: 01_Normal, 02_Tapered, 03_Pyriform,
  04_Amorphous); a folder named `abnormal` gives only `normal` = abnormal.
- MHSMA: x_64_<split>.npy (N, 64, 64 grey) + y_head_<split>.npy (0 normal, 1 abnormal).
- Sperm Parsing v2: annotations/<split>.json (COCO, one polygon per whole sperm, `parsing` = that instance's part
  map in <split>_parsing/: 0 bg, 1 vacuole, 2 acrosome, 3 nucleus, 4 midpiece, 5 tail) + <split>_img/.
  Head = vacuole ∪ acrosome ∪ nucleus of each instance.

The converter turns Sperm Parsing into per-image label maps (parts + head rims, for the head segmenter) and
instance maps, at a reduced scale, under data_prepared/sperm/.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..imageio import ImageInputError
from . import layout_root, layout_roots

IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SHAPES = ["normal", "tapered", "pyriform", "amorphous"]
NORMAL_LABELS = ["abnormal", "normal"]
OTHER_ABNORMAL_HEADS = ("small", "large", "macro", "micro", "round", "elongated", "double", "irregular")
PART_VALUES = {"vacuole": 1, "acrosome": 2, "nucleus": 3, "midpiece": 4, "tail": 5}
HEAD_PARTS = (1, 2, 3)
# label map classes of the segmenter: background, head parts, and the head's rim (separates touching heads)
SEG_CLASSES = ["background", "vacuole", "acrosome", "nucleus", "rim"]
RIM = 4
HELDOUT_FRACTION = 0.2


def heldout(key: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Deterministic held-out membership from a stable hash of the group id (image stem, head file name)."""
    digest = hashlib.sha1(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


# --- class-per-folder (HuSHeM) ---------------------------------------------------------------------

@dataclass
class HeadItem:
    path: Path
    shape: str | None  # one of SHAPES, or None where only normal/abnormal is known
    normal: str  # "normal" or "abnormal"


def folder_shape(name: str) -> tuple[str | None, str] | None:
    low = name.lower()
    if "abnormal" in low or re.search(r"(?:^|[^a-z])no[nt][\s_-]*normal", low):
        return None, "abnormal"
    for shape in SHAPES:
        if shape in low:
            return shape, "normal" if shape == "normal" else "abnormal"
    if re.search(rf"(?:^|[^a-z])(?:{'|'.join(OTHER_ABNORMAL_HEADS)})", low):  # e.g. SCIAN's 04-Small: no shape
        return None, "abnormal"
    return None


def is_class_folders(root: Path) -> bool:
    return root.is_dir() and any(d.is_dir() and folder_shape(d.name) for d in root.iterdir())


def read_class_folders(root: Path) -> list[HeadItem]:
    items = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        labels = folder_shape(d.name)
        if labels is None:
            continue
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                items.append(HeadItem(p, *labels))
    return items


def head_set_roots(root: Path) -> list[Path]:
    """The folders holding head class folders or MHSMA arrays (plain class folders one level up lost the normal/abnormal
    output; a folder holding hushem/ and mhsma/ gave HuSHeM alone)."""
    return layout_roots(root, lambda p: is_mhsma(p) or is_class_folders(p))


# --- MHSMA ----------------------------------------------------------------------------------------------

def mhsma_splits(root: Path) -> list[str]:
    return sorted(p.name[len("x_64_"):-4] for p in root.glob("x_64_*.npy")
                  if (root / f"y_head_{p.name[len('x_64_'):-4]}.npy").is_file())


def is_mhsma(root: Path) -> bool:
    return root.is_dir() and bool(mhsma_splits(root))


def read_mhsma(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64, 64) uint8 grey heads and y_head (0 normal, 1 abnormal)."""
    x = np.load(root / f"x_64_{split}.npy", allow_pickle=False)
    y = np.load(root / f"y_head_{split}.npy", allow_pickle=False).astype(int)
    if len(x) != len(y):
        raise ValueError(f"{root}: x_64_{split} has {len(x)} images but y_head_{split} {len(y)} labels")
    return x, y


# --- Sperm Parsing v2 ----------------------------------------------------------------------------------

@dataclass
class ParsingImage:
    path: Path
    height: int
    width: int
    parsings: list[Path] = field(default_factory=list)  # one part map per sperm instance

    @property
    def key(self) -> str:
        return self.path.stem


def parsing_splits(root: Path) -> list[str]:
    ann = root / "annotations"
    if not ann.is_dir():
        return []
    return sorted(p.stem for p in ann.glob("*.json") if (root / f"{p.stem}_img").is_dir())


def is_parsing_root(root: Path) -> bool:
    return root.is_dir() and bool(parsing_splits(root))


def read_parsing(root: Path, split: str) -> list[ParsingImage]:
    coco = json.loads((root / "annotations" / f"{split}.json").read_text())
    images = {im["id"]: ParsingImage(root / f"{split}_img" / im["file_name"], int(im["height"]), int(im["width"]))
              for im in coco["images"]}
    for a in coco["annotations"]:
        if a.get("parsing") and a["image_id"] in images:
            images[a["image_id"]].parsings.append(root / f"{split}_parsing" / a["parsing"])
    return sorted(images.values(), key=lambda im: im.path.name)


def instance_parts(image: ParsingImage) -> list[np.ndarray]:
    """Each instance's part map (H, W uint8) that contains a head; instances without head pixels are dropped."""
    maps = []
    for p in image.parsings:
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise ImageInputError(f"{p.name}: part map is missing or unreadable")
        if np.isin(m, HEAD_PARTS).any():
            maps.append(m)
    return maps


def head_masks(image: ParsingImage) -> list[np.ndarray]:
    return [np.isin(m, HEAD_PARTS) for m in instance_parts(image)]


def label_maps(part_maps: list[np.ndarray], shape: tuple[int, int], scale: float, rim_px: int = 1):
    """Part maps at full size -> (label map, instance map) at `scale`.

    Label map: SEG_CLASSES (head parts; RIM on each head's outer `rim_px` pixels and wherever two heads meet).
    Instance map: 0 background, k = k-th head (uint16).
    """
    h, w = int(round(shape[0] * scale)), int(round(shape[1] * scale))
    labels = np.zeros((h, w), np.uint8)
    instances = np.zeros((h, w), np.uint16)
    owners = np.zeros((h, w), np.uint8)
    kernel = np.ones((2 * rim_px + 1, 2 * rim_px + 1), np.uint8)
    for k, parts in enumerate(part_maps, start=1):
        head = np.where(np.isin(parts, HEAD_PARTS), parts, 0)
        small = cv2.resize(head, (w, h), interpolation=cv2.INTER_NEAREST)
        # the head's own shape resized smoothly, so thin heads survive the reduction
        mask = cv2.resize((head > 0).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
        if not mask.any():
            continue
        small = np.where(mask & (small == 0), 3, small)  # pixels only the smooth mask keeps: call them nucleus
        labels[mask] = small[mask]
        instances[mask] = k
        owners[mask] += 1
        rim = mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
        labels[rim] = RIM
    labels[owners > 1] = RIM
    return labels, instances


def prepare_segmentation(root: Path, out: Path, split: str, scale: float = 0.5, log=print) -> Path:
    """Convert one split to out/<split>/{images,labels,instances}/<stem>.png (skips files already converted)."""
    dest = out / split
    for sub in ("images", "labels", "instances"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    images = read_parsing(root, split)
    for i, image in enumerate(images):
        target = dest / "labels" / f"{image.key}.png"
        if target.is_file() and (dest / "instances" / f"{image.key}.png").is_file():
            continue
        bgr = cv2.imread(str(image.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{image.path}: image is missing or unreadable")
        labels, instances = label_maps(instance_parts(image), bgr.shape[:2], scale)
        small = cv2.resize(bgr, (labels.shape[1], labels.shape[0]), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(dest / "images" / f"{image.key}.png"), small)
        cv2.imwrite(str(dest / "instances" / f"{image.key}.png"), instances)
        cv2.imwrite(str(target), labels)
        if i % 100 == 0:
            log(f"converted {i + 1}/{len(images)} {split} images")
    return dest


def yolo_polygons(instances: np.ndarray) -> list[str]:
    """YOLO-seg label lines (class 0 = head, normalised polygon) from an instance map."""
    h, w = instances.shape
    lines = []
    for k in np.unique(instances[instances > 0]):
        contours, _ = cv2.findContours((instances == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        c = max(contours, key=cv2.contourArea).reshape(-1, 2)
        if len(c) < 3:
            continue
        lines.append("0 " + " ".join(f"{x / w:.5f} {y / h:.5f}" for x, y in c))
    return lines

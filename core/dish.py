"""Dish images: compose rendered dishes from real single-embryo images (training data for `embryo-dish`, with
exact boxes), detect the embryos in a dish with YOLO, and grade each one with `embryo-grade`.

No real dish images with boxes exist in ../shared/data, so the detector learns from composites: real embryo crops
(Hung Vuong colour photos, Gomez EmbryoScope frames) pasted into rendered well plates (round wells in a grid),
WOW-style microwell clusters or an open drop, with uneven light, vignetting, debris, scale, blur and noise.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from . import PROJECT_ROOT, WEIGHTS_DIR, registry
from .imageio import InputImage
from .results import Prediction
from .tasks.embryo import DISH_ID, GRADE_ID, crop_square, embryo_crop, locate_embryo

IMGSZ = 416
LAYOUTS = ("grid", "wow", "drop")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- composition --------------------------------------------------------------------------------------------

def embryo_patch(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """A square grey patch (size×size) centred on the embryo with its radius in patch pixels."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cx, cy, r = locate_embryo(grey)
    side = 2.6 * r
    return crop_square(grey, cx, cy, side, size), size / 2.6


def _well_centres(rng, layout: str, n: int, size: int) -> tuple[list[tuple[float, float]], float]:
    """Centres and radius of the wells (or free positions in an open drop) for `n` embryos."""
    if layout == "grid":
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        pitch = size * rng.uniform(0.85, 0.95) / max(cols, rows)
        off = (size - pitch * np.array([cols, rows])) / 2 + pitch / 2
        pts = [(off[0] + (i % cols) * pitch, off[1] + (i // cols) * pitch) for i in range(n)]
        return pts, pitch * rng.uniform(0.40, 0.47)
    if layout == "wow":  # hexagonal cluster of small microwells
        cols = int(np.ceil(np.sqrt(n * 1.2)))
        pitch = size * rng.uniform(0.6, 0.8) / cols
        pts = []
        for i in range(cols * cols):
            r_, c_ = divmod(i, cols)
            pts.append((size / 2 + (c_ - (cols - 1) / 2 + 0.5 * (r_ % 2) - 0.25) * pitch,
                        size / 2 + (r_ - (cols - 1) / 2) * pitch * 0.87))
        order = rng.permutation(len(pts))[:n]
        return [pts[i] for i in order], pitch * rng.uniform(0.40, 0.46)
    # open drop: random non-overlapping positions
    radius = size * rng.uniform(0.05, 0.09)
    pts: list[tuple[float, float]] = []
    for _ in range(400):
        if len(pts) == n:
            break
        p = rng.uniform(radius * 1.3, size - radius * 1.3, 2)
        if all(np.hypot(p[0] - q[0], p[1] - q[1]) > 2.3 * radius for q in pts):
            pts.append((float(p[0]), float(p[1])))
    return pts, radius


def compose_dish(embryos: list[np.ndarray], seed: int = 0, size: int = 640, layout: str | None = None,
                 colour: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste embryo images into a rendered dish. Returns (RGB uint8 image, boxes (N, 4) xyxy in pixels), one box
    per pasted embryo: the square around its zona (radius as located in the source image, scaled)."""
    rng = np.random.default_rng(seed)
    layout = layout or LAYOUTS[int(rng.integers(len(LAYOUTS)))]
    centres, well_r = _well_centres(rng, layout, len(embryos), size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    level = rng.uniform(120, 200)
    light = level + rng.uniform(10, 40) * np.cos((xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) / size * np.pi
                                              + rng.uniform(0, np.pi))
    vignette = 1 - rng.uniform(0.1, 0.5) * (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2)
    img = light * np.clip(vignette, 0.2, 1)
    if layout != "drop":  # well walls: dark ring with a bright inner rim, slightly darker floor
        for cx, cy in centres:
            d = np.hypot(xx - cx, yy - cy)
            img = np.where(d < well_r, img * rng.uniform(0.85, 1.0), img)
            img -= 55 * np.exp(-((d - well_r) / max(well_r * 0.06, 1.5)) ** 2)
            img += 35 * np.exp(-((d - well_r * 0.93) / max(well_r * 0.04, 1.0)) ** 2)
    for _ in range(int(rng.integers(0, 25))):  # debris: small dark specks and fibres
        p = rng.uniform(0, size, 2).astype(int)
        if rng.random() < 0.7:
            cv2.circle(img, (int(p[0]), int(p[1])), int(rng.integers(1, 5)), float(level * rng.uniform(0.3, 0.7)), -1)
        else:
            q = p + rng.normal(0, size * 0.03, 2).astype(int)
            cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), float(level * 0.5), 1)
    boxes = []
    for (cx, cy), emb in zip(centres, embryos):
        r = well_r * rng.uniform(0.55, 0.8) if layout != "drop" else well_r
        cx += rng.uniform(-0.15, 0.15) * (well_r - r) if layout != "drop" else 0
        cy += rng.uniform(-0.15, 0.15) * (well_r - r) if layout != "drop" else 0
        side = int(round(2.6 * r))
        patch, pr = embryo_patch(emb, side)
        patch = patch.astype(np.float32)
        # match the patch's surroundings to the local background, then blend with a soft disc
        ring = np.hypot(*np.mgrid[-side / 2:side / 2:complex(0, side), -side / 2:side / 2:complex(0, side)])
        bg = np.median(patch[ring > pr * 1.15]) if (ring > pr * 1.15).any() else patch.mean()
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        xs, ys = slice(max(x0, 0), min(x0 + side, size)), slice(max(y0, 0), min(y0 + side, size))
        region = img[ys, xs]
        sub = patch[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        alpha = np.clip((pr * 1.12 - ring[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]) / (pr * 0.1), 0, 1)
        local = np.median(region) if region.size else level
        img[ys, xs] = alpha * (sub - bg + local) + (1 - alpha) * region
        boxes.append([cx - r, cy - r, cx + r, cy + r])
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.6)) + rng.normal(0, rng.uniform(1, 6), img.shape)
    grey = np.uint8(np.clip(img, 0, 255))
    colour = rng.random() < 0.5 if colour is None else colour
    tint = np.array([1.0, rng.uniform(0.92, 1.0), rng.uniform(0.8, 0.98)]) if colour else np.ones(3)
    rgb = np.uint8(np.clip(grey[:, :, None] * tint, 0, 255))
    return rgb, np.clip(np.array(boxes, np.float32).reshape(-1, 4), 0, size)


# --- detection and grading ------------------------------------------------------------------------------------

def dish_crops(image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Each detected embryo cut out with margin, then normalised by the same embryo_crop as single images."""
    crops = []
    for x0, y0, x1, y1 in boxes:
        region = crop_square(image, (x0 + x1) / 2, (y0 + y1) / 2, 1.6 * max(x1 - x0, y1 - y0), 160)
        crops.append(embryo_crop(region)[0])
    return crops


def detect(image: np.ndarray, device: str | None = None, conf: float | None = None) -> dict:
    return registry.load(DISH_ID, device).predict([image], conf=conf)[0]


def grade_boxes(image: InputImage, boxes: np.ndarray, scores: np.ndarray, device: str | None = None,
                mode: str = "dish") -> list[Prediction]:
    """One Prediction per box, numbered left-to-right, top-to-bottom, ranked by P(good)."""
    grader = registry.load(GRADE_ID, device)
    order = sorted(range(len(boxes)), key=lambda i: (round(float(boxes[i][1] + boxes[i][3]) / 2 / 40),
                                                     float(boxes[i][0] + boxes[i][2]) / 2))
    boxes, scores = boxes[order], scores[order]
    crops = dish_crops(image.pixels, boxes)
    probs = grader.predict(crops) if crops else {}
    thresholds = {o: float(t) for o, t in (grader.card.get("thresholds") or {}).items()}
    preds = []
    for i, crop in enumerate(crops):
        p = Prediction(
            GRADE_ID, grader.card.version, f"{image.name} #{i + 1}", image.sha256,
            probabilities={o: dict(zip(grader.classes[o], map(float, probs[o][i]))) for o in grader.classes},
            thresholds=thresholds,
            extras={"mode": mode, "number": i + 1, "box": [round(float(v), 1) for v in boxes[i]],
                    "detection_confidence": round(float(scores[i]), 3)},
        )
        p.images["crop"] = crop
        preds.append(p)
    ranked = sorted(preds, key=lambda p: -p.probabilities["quality"]["good"])
    for rank, p in enumerate(ranked, 1):
        p.extras["rank"] = rank
    return preds


def grade_dish(image: InputImage, device: str | None = None, conf: float | None = None) -> Prediction:
    """The whole dish as one Prediction (for bench and the CLI): per-embryo rows in extras['embryos']."""
    t0 = time.perf_counter()
    found = detect(image.pixels, device, conf)
    t1 = time.perf_counter()
    embryos = grade_boxes(image, found["boxes"], found["scores"], device)
    t2 = time.perf_counter()
    card = registry.card(DISH_ID)
    return Prediction(DISH_ID, card.version, image.name, image.sha256,
                      extras={"n_embryos": len(embryos), "embryos": [e.flat() | e.extras for e in embryos]},
                      timings_ms={"detect": (t1 - t0) * 1000, "grade": (t2 - t1) * 1000})


# --- training data, training and evaluation of the detector -------------------------------------------------------

DISH_VERSION = "1.0.0"
DISH_EPOCHS = 12
N_TRAIN, N_VAL = 240, 40
SCALE = [0.33, 0.125, 256]  # YOLOv8 depth, width, max channels: a quarter of the width of yolov8n


def embryo_sources(data: Path) -> dict[str, list[Path]]:
    """Real single-embryo images per split (Hung Vuong groups, Gomez embryos) to paste into dishes."""
    from .embryo_training import collect

    out: dict[str, list[Path]] = {"train": [], "heldout": []}
    for it in collect(data):
        if it.source in ("hungvuong", "gomez"):
            out[it.split].append(it.path)
    return out


def prepare_dishes(data: Path, out: Path, seed: int = 0, n_train: int = N_TRAIN, n_val: int = N_VAL) -> Path:
    """Write composed dishes in the YOLO layout: out/{train,val}/{images,labels}, out/data.yaml. Validation dishes
    are composed from held-out embryos only, with other seeds."""
    from .datasets.embryo import load_rgb

    sources = embryo_sources(data)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 100_000)):
        paths = sources["train" if split == "train" else "heldout"]
        rng = np.random.default_rng(seed + offset)
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        cache: dict[Path, np.ndarray] = {}
        for k in range(n):
            layout = LAYOUTS[k % len(LAYOUTS)]
            count = int(rng.integers(1, 17)) if layout != "drop" else int(rng.integers(1, 9))
            chosen = [paths[i] for i in rng.choice(len(paths), count)]
            embryos = [cache.setdefault(p, load_rgb(p)) for p in chosen]
            img, boxes = compose_dish(embryos, seed=seed + offset + k, size=IMGSZ, layout=layout)
            name = f"dish_{split}_{k:04d}"
            cv2.imwrite(str(out / split / "images" / f"{name}.png"), img[:, :, ::-1])
            (out / split / "labels" / f"{name}.txt").write_text("".join(
                f"0 {(x0 + x1) / 2 / IMGSZ:.6f} {(y0 + y1) / 2 / IMGSZ:.6f} {(x1 - x0) / IMGSZ:.6f} {(y1 - y0) / IMGSZ:.6f}\n"
                for x0, y0, x1, y1 in boxes))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: train/images\nval: val/images\nnames:\n  0: embryo\n")
    return yaml_path


def model_yaml(out: Path) -> Path:
    """YOLOv8 detection architecture (from Ultralytics' own yolov8.yaml) at a smaller width, one class."""
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load("yolov8n.yaml")
    cfg.update(nc=1, scales={"t": SCALE})
    cfg.pop("scale", None)
    cfg.pop("yaml_file", None)
    path = out / "yolov8t-embryo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_dish(data: Path, device: str = "cpu", epochs: int | None = None, seed: int = 0) -> Path:
    import shutil

    import torch
    from ultralytics import YOLO

    torch.set_num_threads(2)
    epochs = epochs or DISH_EPOCHS
    out = PROJECT_ROOT / "data_prepared" / "embryo-dish"
    stamp = f"seed={seed} train={N_TRAIN} val={N_VAL} imgsz={IMGSZ} data={Path(data).resolve()}"
    if (out / "stamp.txt").is_file() and (out / "stamp.txt").read_text() == stamp:
        data_yaml = out / "data.yaml"  # composed before with the same settings (composition is deterministic)
    else:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        data_yaml = prepare_dishes(Path(data), out, seed)
        (out / "stamp.txt").write_text(stamp)
    log(f"composed dishes in {out}")
    net = YOLO(str(model_yaml(out)), task="detect")
    net.train(data=str(data_yaml), epochs=epochs, imgsz=IMGSZ, batch=16, workers=1, device=device, amp=False,
              plots=False, seed=seed, deterministic=True, project=str(out / "runs"), name="train", exist_ok=True,
              verbose=False, patience=epochs, close_mosaic=max(1, epochs // 5), cache=True)
    folder = WEIGHTS_DIR / DISH_ID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    shutil.copy(out / "runs" / "train" / "weights" / "last.pt", path)
    write_dish_card(folder, path, data, epochs, seed)
    return path


def write_dish_card(folder: Path, path: Path, data: Path, epochs: int, seed: int) -> None:
    import tomllib

    from .embryo_training import _rel
    from .registry import file_sha256, write_card

    card = {
        "id": DISH_ID,
        "title": "Embryo finder for dish and well images",
        "task": "embryo",
        "framework": "ultralytics",
        "yolo_task": "detect",
        "file": path.name,
        "version": DISH_VERSION,
        "train_command": f"python -m core train {DISH_ID} --data {_rel(data)} --seed {seed}"
                         + (f" --epochs {epochs}" if epochs != DISH_EPOCHS else ""),
        "classes": {"embryos": ["embryo"]},
        "input": {"size": [IMGSZ, IMGSZ], "channels": 3, "normalise": "unit"},
        "conf": 0.35,
        "max_det": 64,
        "architecture": f"YOLOv8 detection built from Ultralytics' yolov8.yaml at depth/width/max-channels {SCALE} "
                        "(a quarter of yolov8n's width), one class, trained from scratch (no hub weights)",
        "intended_use": "Research demonstration: finds each embryo in a multi-well dish, WOW microwell or open-drop "
                        "image so that embryo-grade can grade it.",
        "limitations": "Trained only on composites: real single-embryo images pasted into rendered dishes (no real "
                       "dish image with boxes was available). Real dishes with other well shapes, strong "
                       "reflections, touching embryos or heavy debris may be missed or double-counted; check the "
                       "numbered boxes before reading the table.",
        "data": [{"name": "Composite dishes rendered here (grid plates, WOW microwells, open drops; uneven light, "
                          "vignetting, debris, blur, noise, scale)",
                  "licence": "derived from the sources below",
                  "split": f"{N_TRAIN} training dishes from training-split embryos; {N_VAL} validation dishes from "
                           "held-out embryos (embryo-grade's split) with other seeds"},
                 {"name": "Hung Vuong day-3/day-5 embryos (pasted)", "licence": "competition data, research only",
                  "split": "embryo-grade's near-duplicate-group split"},
                 {"name": "Gomez 2022 EmbryoScope frames (pasted)", "licence": "CC BY 4.0",
                  "split": "by embryo"}],
    }
    old = folder / "card.toml"
    if old.is_file():
        prev = tomllib.loads(old.read_text())
        if prev.get("sha256") == file_sha256(path) and "metrics" in prev:
            card["metrics"] = prev["metrics"]
    write_card(folder, card)


def yolo_layout(path: Path) -> Path:
    """The images/ folder of a YOLO detection layout: PATH/images, or the val (else test) split of PATH/data.yaml."""
    import yaml

    path = Path(path)
    if (path / "images").is_dir():
        return path / "images"
    if (path / "data.yaml").is_file():
        cfg = yaml.safe_load((path / "data.yaml").read_text()) or {}
        base = Path(cfg.get("path") or path)
        base = base if base.is_absolute() else path / base
        for key in ("val", "test"):
            if cfg.get(key) and (base / cfg[key]).is_dir():
                return base / cfg[key]
    raise ValueError(f"{path}: not a YOLO detection layout (expected images/ and labels/, or data.yaml)")


def evaluate_dish(path: Path, name: str, device: str | None = None) -> dict:
    import tempfile

    import pandas as pd

    from .audit import phash
    from .evaluation import store

    images = yolo_layout(path)
    labels = images.parent / "labels"
    model = registry.load(DISH_ID, device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "data.yaml"
        cfg.write_text(f"path: {images.parent.resolve()}\ntrain: {images.name}\nval: {images.name}\nnames:\n  0: embryo\n")
        res = model.net.val(data=str(cfg), imgsz=IMGSZ, batch=8, device=model.device, plots=False, verbose=False,
                            workers=0, project=tmp, name="val", conf=0.001)
    rows = []
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    for p in files:
        img = cv2.imread(str(p))[:, :, ::-1]
        label = labels / f"{p.stem}.txt"
        n_true = len(label.read_text().split("\n")) - 1 if label.is_file() else 0
        found = model.predict([img])[0]
        rows.append({"item": p.name, "output": "embryos", "true": n_true, "pred": len(found["boxes"]),
                     "phash": f"{phash(img):016x}"})
    frame = pd.DataFrame(rows)
    metrics = {"embryos": {"map50": float(res.box.map50), "map50_95": float(res.box.map),
                           "precision": float(res.box.mp), "recall": float(res.box.mr),
                           "count_mae": float((frame["true"] - frame["pred"]).abs().mean()), "n_images": len(rows),
                           "n_boxes": int(frame["true"].sum())}}
    meta = {"data_path": str(Path(path).resolve()), "layout": "yolo-detection", "images": str(images),
            "imgsz": IMGSZ, "conf_for_counts": registry.card(DISH_ID).get("conf", 0.25)}
    return store(model.card, name, frame, metrics, meta)

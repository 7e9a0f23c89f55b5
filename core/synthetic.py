"""Small procedural images for every task, with their ground truth, so tests run without ../shared.

Each generator is deterministic for a given seed and returns (image uint8 RGB, truth dict).
"""
from __future__ import annotations

import cv2
import numpy as np


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _background(rng, size: int, level: int = 170, noise: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    shade = level + 20 * np.cos((xx + yy) / size * np.pi)  # uneven illumination
    return shade + rng.normal(0, noise, (size, size))


def embryo(stage: str = "cleavage", size: int = 256, seed: int = 0, grey: bool = False,
           field: int | None = None) -> tuple[np.ndarray, dict]:
    """A zona pellucida ring around either 2–8 cells (cleavage) or a cavity with an inner cell mass (blastocyst),
    drawn at the scale of a size-px close-up; `field`: the image is that much wider (a lower-magnification view)."""
    rng = _rng(seed)
    img = _background(rng, field or size)
    c = (field or size) // 2 + rng.integers(-size // 20, size // 20 + 1, 2)
    r = int(size * rng.uniform(0.30, 0.36))
    cv2.circle(img, (int(c[0]), int(c[1])), r, 110, thickness=max(3, size // 40))
    if stage == "cleavage":
        n = int(rng.integers(2, 9))
        for k in range(n):
            a = 2 * np.pi * k / n + rng.uniform(-0.2, 0.2)
            d = r * 0.45 if n > 1 else 0
            p = (int(c[0] + d * np.cos(a)), int(c[1] + d * np.sin(a)))
            cv2.circle(img, p, int(r * (0.55 if n <= 2 else 0.38)), 135, -1)
            cv2.circle(img, p, int(r * (0.55 if n <= 2 else 0.38)), 95, 2)
        truth = {"stage": "cleavage", "cells": n}
    else:
        cv2.circle(img, (int(c[0]), int(c[1])), int(r * 0.85), 200, -1)  # bright cavity
        cv2.circle(img, (int(c[0]), int(c[1])), int(r * 0.85), 100, 3)  # trophectoderm
        a = rng.uniform(0, 2 * np.pi)
        icm = (int(c[0] + r * 0.5 * np.cos(a)), int(c[1] + r * 0.5 * np.sin(a)))
        cv2.circle(img, icm, int(r * 0.3), 105, -1)
        truth = {"stage": "blastocyst", "icm": icm}
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 1.0)
    truth.update(center=(int(c[0]), int(c[1])), radius=r)
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    if not grey:
        rgb = np.clip(rgb * np.array([1.0, 0.95, 0.85]), 0, 255).astype(np.uint8)
    return rgb, truth


def sperm_field(n_heads: int = 5, size: tuple[int, int] = (512, 640), seed: int = 0,
                um_per_px: float = 0.1, head_um: tuple[float, float] = (4.5, 3.0)) -> tuple[np.ndarray, dict]:
    """Stained-looking sperm: elliptical heads of known size in µm (at `um_per_px`) with tails."""
    rng = _rng(seed)
    h, w = size
    img = np.stack([_background(rng, max(size), 225, 5)[:h, :w]] * 3, axis=2)
    heads = []
    a_px = head_um[0] / um_per_px / 2
    b_px = head_um[1] / um_per_px / 2
    placed: list[tuple[int, int]] = []
    for _ in range(200):
        if len(heads) == n_heads:
            break
        cx, cy = int(rng.integers(60, w - 60)), int(rng.integers(60, h - 60))
        if any((cx - x) ** 2 + (cy - y) ** 2 < (4 * a_px) ** 2 for x, y in placed):
            continue
        angle = float(rng.uniform(0, 180))
        t = np.deg2rad(angle)
        tail_end = (int(cx + 12 * a_px * np.cos(t)), int(cy + 12 * a_px * np.sin(t)))
        cv2.line(img, (cx, cy), tail_end, (150, 130, 170), 2)
        cv2.ellipse(img, (cx, cy), (int(round(a_px)), int(round(b_px))), angle, 0, 360, (90, 60, 140), -1)
        placed.append((cx, cy))
        heads.append({"center": (cx, cy), "angle": angle, "length_um": head_um[0], "width_um": head_um[1]})
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 0.8)
    return img, {"heads": heads, "um_per_px": um_per_px}


def sperm_head(kind: str = "normal", size: int = 131, seed: int = 0) -> tuple[np.ndarray, dict]:
    """One centred head crop: normal (oval), tapered (long and thin), pyriform (pear), amorphous (irregular)."""
    rng = _rng(seed)
    img = np.stack([_background(rng, size, 215, 5)] * 3, axis=2)
    c = size // 2
    colour = (95, 70, 150)
    if kind == "normal":
        cv2.ellipse(img, (c, c), (size // 7, size // 10), 0, 0, 360, colour, -1)
    elif kind == "tapered":
        cv2.ellipse(img, (c, c), (size // 5, size // 14), 0, 0, 360, colour, -1)
    elif kind == "pyriform":
        pts = np.array([[c - size // 6, c - size // 12], [c + size // 6, c - size // 20], [c + size // 6, c + size // 20],
                        [c - size // 6, c + size // 12]], np.int32)
        cv2.fillConvexPoly(img, pts, colour)
    else:
        pts = (c + rng.normal(0, size / 9, (7, 2))).astype(np.int32)
        cv2.fillPoly(img, [cv2.convexHull(pts)], colour)
    return cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 1.0), {"kind": kind}


def ovary(n_follicles: int = 14, size: int = 300, seed: int = 0, mm_per_px: float = 0.1,
          diameters_mm: tuple[float, float] = (2.5, 8.0)) -> tuple[np.ndarray, dict]:
    """A speckled ultrasound sector with an ovary holding dark round follicles of known diameter."""
    rng = _rng(seed)
    speckle = rng.rayleigh(1.0, (size, size))
    img = 60 * speckle / speckle.mean()
    yy, xx = np.mgrid[0:size, 0:size]
    c = np.array([size / 2, size / 2])
    ovary_r = size * 0.38
    inside = (xx - c[0]) ** 2 + ((yy - c[1]) * 1.2) ** 2 < ovary_r**2
    img[inside] *= 1.6
    follicles = []
    for _ in range(2000):
        if len(follicles) == n_follicles:
            break
        d_mm = float(rng.uniform(*diameters_mm))
        r_px = d_mm / mm_per_px / 2
        p = c + rng.uniform(-ovary_r * 0.8, ovary_r * 0.8, 2)
        if (p[0] - c[0]) ** 2 + ((p[1] - c[1]) * 1.2) ** 2 > (ovary_r - r_px) ** 2:
            continue
        if any(np.hypot(*(p - np.array(f["center"]))) < r_px + f["diameter_mm"] / mm_per_px / 2 + 2 for f in follicles):
            continue
        follicles.append({"center": (float(p[0]), float(p[1])), "diameter_mm": d_mm})
    for f in follicles:
        r_px = f["diameter_mm"] / mm_per_px / 2
        mask = (xx - f["center"][0]) ** 2 + (yy - f["center"][1]) ** 2 < r_px**2
        img[mask] = rng.normal(8, 3, mask.sum())
    sector = np.arctan2(xx - size / 2, yy + size * 0.1)
    img[np.abs(sector) > 0.75] = 0  # black outside the probe's sector
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 1.2)
    return np.repeat(img[:, :, None], 3, axis=2), {"follicles": follicles, "mm_per_px": mm_per_px}


def timelapse_sequence(n_frames: int = 24, size: int = 128, seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """Grey frames of one embryo going 1 -> 2 -> 4 -> 8 cells -> blastocyst, with the true coarse stage per frame."""
    stages, frames = [], []
    for i in range(n_frames):
        f = i / max(n_frames - 1, 1)
        if f < 0.15:
            stage, cells = "pronuclear", 1
        elif f < 0.7:
            stage, cells = "cleavage", 2 ** (1 + int((f - 0.15) / 0.55 * 3))
        elif f < 0.82:
            stage, cells = "morula", 16
        else:
            stage, cells = "blastocyst", 0
        rng = _rng(seed * 1000 + i)
        img = _background(rng, size, 150, 6)
        c, r = size // 2, int(size * 0.35)
        cv2.circle(img, (c, c), r, 90, 3)
        if stage == "blastocyst":
            cv2.circle(img, (c, c), int(r * 0.85), 190, -1)
            cv2.circle(img, (c + r // 2, c), int(r * 0.3), 95, -1)
        elif stage == "morula":
            cv2.circle(img, (c, c), int(r * 0.8), 110, -1)
        else:
            k = max(cells, 1)
            for j in range(k):
                a = 2 * np.pi * j / k
                d = 0 if k == 1 else r * 0.45
                cv2.circle(img, (int(c + d * np.cos(a)), int(c + d * np.sin(a))), int(r * (0.8 if k == 1 else 0.9 / np.sqrt(k))), 125, -1)
            if stage == "pronuclear":
                cv2.circle(img, (c - 6, c), 5, 100, -1)
                cv2.circle(img, (c + 6, c), 5, 100, -1)
        frames.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
        stages.append(stage)
    return frames, {"stages": stages}


def bright_spot(present: bool = True, size: int = 64, seed: int = 0, side: int | None = None) -> tuple[np.ndarray, dict]:
    """Textured grey field with a dim distractor square and, if `present`, one bright square: the class is decided
    by that square alone, so an explanation should point at truth["box"] (x0, y0, x1, y1)."""
    rng = _rng(seed)
    img = cv2.GaussianBlur(_background(rng, size, 100, 18), (0, 0), 1.0)
    side = side or max(4, size // 6)

    def square(level):
        x, y = (int(v) for v in rng.integers(2, size - side - 2, 2))
        img[y:y + side, x:x + side] = level + rng.normal(0, 4, (side, side))
        return x, y, x + side, y + side

    square(135)  # distractor: present in both classes
    box = square(235) if present else None
    rgb = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return rgb, {"spot": present, "box": box}


def evaluation_store(root, n: int = 40, seed: int = 0) -> dict:
    """A weights folder holding stored evaluations of every kind, for tests and demos of the Metrics and Confusion
    pages: `embryo-grade` (two outputs, a subgroup column, two evaluations of the same images, training hashes with
    planted leaks), `sperm-seg` (per-image Dice and counts) and `timelapse-stage` (per-frame rows, event times).
    The cards' model files are placeholders, not models. Images are written under root/_data/. Returns what was
    planted: {"leaked": [items also in training], "within": [item pairs duplicated inside the evaluation set]}."""
    import hashlib
    from pathlib import Path

    import pandas as pd
    from PIL import Image

    from . import audit, evaluation
    from .registry import Registry

    root = Path(root)
    rng = _rng(seed)

    def card(model_id, task, framework, classes):
        folder = root / model_id
        folder.mkdir(parents=True, exist_ok=True)
        blob = f"placeholder {model_id}".encode()
        (folder / "model.bin").write_bytes(blob)
        lines = [f'id = "{model_id}"', f'title = "{model_id} (synthetic test store)"', f'task = "{task}"',
                 f'framework = "{framework}"', 'file = "model.bin"', f'sha256 = "{hashlib.sha256(blob).hexdigest()}"',
                 'version = "0.0-synthetic"', 'train_command = "core.synthetic.evaluation_store"',
                 'data = [{ name = "synthetic", licence = "generated", split = "by seed" }]',
                 'intended_use = "tests only"', 'limitations = "not a model"', "", "[classes]"]
        lines += [f"{o} = [{', '.join(repr(lab).replace(chr(39), chr(34)) for lab in labels)}]" for o, labels in classes.items()]
        lines += ["", "[input]", "size = [64, 64]", "channels = 3", 'normalise = "unit"', ""]
        (folder / "card.toml").write_text("\n".join(lines))
        return Registry(root).card(model_id)

    def save(img, rel):
        path = root / "_data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        return path

    # --- embryo-grade: binary outputs, a subgroup, planted leaks ---------------------------------------------------
    grade = card("embryo-grade", "embryo", "keras", {"stage": ["cleavage", "blastocyst"], "quality": ["not_good", "good"]})
    items, images, stages = [], [], []
    for i in range(n):
        stage = "blastocyst" if i % 2 else "cleavage"
        img = _mottle(embryo(stage, size=96, seed=seed * 10_000 + i)[0], seed * 10_000 + i)
        if i == 3:  # a near-copy of item 2 inside the evaluation set (re-encoded)
            img = _jpeg(images[2], 70)
            stage = stages[2]
        items.append(str(save(img, f"heldout/{stage}/e{i:03d}.png")))
        images.append(img)
        stages.append(stage)
    train_imgs = [_mottle(embryo("blastocyst" if i % 2 else "cleavage", size=96, seed=seed * 10_000 + 5000 + i)[0],
                          seed * 10_000 + 5000 + i) for i in range(n)]
    train_imgs += [_jpeg(images[0][:, ::-1], 75), images[1].copy()]  # flipped + re-encoded, and exact
    audit.write_train_hashes(grade.folder, [f"train/t{i:03d}.png" for i in range(len(train_imgs))], train_imgs)
    y_stage = np.array([s == "blastocyst" for s in stages], dtype=int)
    y_quality = rng.integers(0, 2, n)
    scope = np.where(rng.random(n) < 0.5, "scope A", "scope B")
    hashes = [f"{audit.phash(im):016x}" for im in images]

    def probs(y, strength, noise):
        p = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, noise, len(y)))))
        return np.c_[1 - p, p]

    for name, strength in (("heldout", 2.0), ("heldout-v2", 1.0)):
        frames = [
            evaluation.predictions_frame(items, "stage", grade.classes["stage"], [stages[i] for i in range(n)],
                                         probs(y_stage, strength, 1.2), scope=scope, phash=hashes),
            evaluation.predictions_frame(items, "quality", grade.classes["quality"],
                                         [grade.classes["quality"][k] for k in y_quality],
                                         probs(y_quality, strength / 2, 1.2), scope=scope, phash=hashes),
        ]
        evaluation.evaluate_classifier_outputs(grade, name, frames, {
            "data_path": str(root / "_data" / "heldout"), "layout": "class-per-folder (synthetic)",
            "split": "heldout (synthetic)"})

    # --- sperm-seg: segmentation summaries ----------------------------------------------------------------------
    seg = card("sperm-seg", "sperm", "ultralytics", {"heads": ["head"]})
    m = 12
    true_counts = rng.integers(3, 9, m)
    pred_counts = true_counts + rng.integers(-1, 2, m)
    dice = np.clip(rng.normal(0.82, 0.06, m), 0, 1)
    seg_items = [str(save(sperm_field(int(true_counts[i]), size=(128, 160), seed=i, um_per_px=0.4)[0], f"seg/f{i:02d}.png"))
                 for i in range(m)]
    preds = pd.DataFrame({"item": seg_items, "output": "heads", "dice": dice, "count_true": true_counts,
                          "count_pred": pred_counts})
    metrics = {"heads": {"mask_map50": 0.71, "mask_map50_95": 0.38, "box_map50": 0.80, "mean_dice": float(dice.mean()),
                         "count_mae": float(np.abs(pred_counts - true_counts).mean())}}
    evaluation.store(seg, "heldout", preds, metrics, {"data_path": str(root / "_data" / "seg"), "split": "heldout"})

    # --- timelapse-stage: per-frame rows with an embryo column, event times -----------------------------------------
    tl = card("timelapse-stage", "timelapse", "torch", {"stage": ["pronuclear", "cleavage", "morula", "blastocyst"]})
    frames, events = [], {}
    for e in range(3):
        seq, truth = timelapse_sequence(16, size=64, seed=seed + e)
        labels = tl.classes["stage"]
        y = np.array([labels.index(s) for s in truth["stages"]])
        logits = rng.normal(0, 1, (len(y), 4))
        logits[np.arange(len(y)), y] += 2.0
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        paths = [str(save(f, f"timelapse/E{e}/RUN{k}.png")) for k, f in enumerate(seq)]
        frames.append(evaluation.predictions_frame(paths, "stage", labels, truth["stages"], p, embryo=f"E{e}"))
        first = {s: truth["stages"].index(s) for s in labels if s in truth["stages"]}
        events[f"E{e}"] = {"true_events": {"tM": first["morula"], "tSB": first["blastocyst"]},
                           "events": {"tM": first["morula"] + int(rng.integers(-1, 2)), "tSB": first["blastocyst"] + 1}}
    evaluation.evaluate_classifier_outputs(tl, "heldout", frames, {
        "data_path": str(root / "_data" / "timelapse"), "split": "heldout embryos", "events": events,
        "minutes_per_frame": 15.0, "division_bursts": {"sequences": 3, "divisions": 6, "divisions_with_a_burst": 5,
                                                       "bursts": 7, "bursts_at_a_division": 5, "tolerance_frames": 3}})
    return {"leaked": [items[0], items[1]], "within": [(items[2], items[3])]}


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The image after a JPEG round trip (a re-encoded copy)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _mottle(image: np.ndarray, seed: int, strength: float = 60.0) -> np.ndarray:
    """The image under a random smooth shading, so that distinct generated images have distinct perceptual hashes."""
    h, w = image.shape[:2]
    field = cv2.resize(_rng(seed).normal(0, 1, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(image.astype(np.float32) + strength * field[:, :, None], 0, 255).astype(np.uint8)


def embryo_dish(n_embryos: int = 16, size: int = 640, seed: int = 0, layout: str = "grid") -> tuple[np.ndarray, dict]:
    """A rendered dish holding `n_embryos` generated embryos (alternating stages), with each embryo's box (xyxy)."""
    from .dish import compose_dish

    stages = ["cleavage" if i % 2 else "blastocyst" for i in range(n_embryos)]
    embryos = [embryo(s, size=128, seed=seed * 100 + i, grey=True)[0] for i, s in enumerate(stages)]
    img, boxes = compose_dish(embryos, seed=seed, size=size, layout=layout, colour=False)
    return img, {"boxes": boxes.tolist(), "stages": stages}

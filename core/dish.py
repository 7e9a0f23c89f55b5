"""Dish images: compose training images for `embryo-dish` from real single-embryo images (with exact boxes), detect
the embryos in a dish with YOLO, and grade each one with `embryo-grade`.

No real dish images with boxes exist in ../shared/data, so the detector learns from three kinds of images built from
real single-embryo frames (Hung Vuong colour photos, Gomez EmbryoScope frames and blastocyst crops), each embryo's
box being its zona circle found by `zona_circle`:
- real frames, whole, at random scale, position, flip, exposure and colour (the detector must hold on them);
- mosaics of 2×2 or 3×3 real frames with thin dark borders, like a multi-well overview;
- rendered dishes: real embryos pasted with some of their surroundings into rendered well plates (round wells in a
  grid), WOW-style microwell clusters or an open drop, with uneven light, vignetting, debris, blur and noise.
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
from .tasks.embryo import (BOX_TO_RADIUS, DISH_ID, GRADE_ID, MIN_LOCATED, crop_square, embryo_crop, judged,
                           locate_embryo, looks_time_lapse)

IMGSZ = 416
LAYOUTS = ("grid", "wow", "drop")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- composition --------------------------------------------------------------------------------------------

# zona radius range per image source, as a fraction of the image's longer side (None: any embryo image)
ZONA_RANGE = {"hungvuong": (0.22, 0.6), "gomez": (0.14, 0.32), "gomez-crops": (0.28, 0.55), None: (0.12, 0.6)}
MIN_CONTRAST = 0.025  # below this detail contrast the circle is not trusted (empty well, embryo out of frame)


def zona_circle(image: np.ndarray, source: str | None = None) -> tuple[float, float, float, float]:
    """(cx, cy, r, contrast) of the embryo's outer (zona) circle in pixels: among Hough circles of a plausible
    radius for the source (and the classical locator's circle) the one whose inside is richest in fine detail
    compared with a ring just outside it. contrast < MIN_CONTRAST: no trustworthy embryo circle (nan if none)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    lo, hi = ZONA_RANGE[source]
    s = 256 / max(grey.shape)
    small = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    found = cv2.HoughCircles(cv2.GaussianBlur(small, (0, 0), 1.5), cv2.HOUGH_GRADIENT_ALT, 1.5, 5, param1=50,
                             param2=0.5, minRadius=int(lo * 256), maxRadius=int(hi * 256))
    cands = [] if found is None else [tuple(map(float, c)) for c in found[0][:20]]
    cx, cy, r = locate_embryo(grey)
    if lo * 256 <= r * s <= hi * 256:
        cands.append((cx * s, cy * s, r * s))
    g = small.astype(np.float32)
    detail = cv2.GaussianBlur(np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.5)) / (cv2.GaussianBlur(g, (0, 0), 8) + 16),
                              (0, 0), 1.0)
    yy, xx = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    best = (np.nan, cx, cy, r)
    for x, y, rr in cands:
        d = np.hypot(xx - x, yy - y)
        inside, ring = d < rr * 0.95, (d > rr * 1.08) & (d < rr * 1.35)
        if inside.sum() < 20 or ring.sum() < 20:
            continue
        score = float(detail[inside].mean() - detail[ring].mean())
        if not score <= best[0]:  # also replaces nan
            best = (score, x / s, y / s, rr / s)
    return best[1], best[2], best[3], best[0]


def embryo_patch(image: np.ndarray, size: int, circle=None) -> tuple[np.ndarray, float]:
    """A square grey patch (size×size) centred on the embryo with its radius in patch pixels."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cx, cy, r = (circle or zona_circle(grey))[:3]
    side = 2.6 * r
    return crop_square(grey, cx, cy, side, size), size / 2.6


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random exposure, gamma, blur, noise and colour (grey, tinted or as is) of an RGB uint8 image."""
    x = img.astype(np.float32) / 255.0
    if rng.random() < 0.4:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.3:
        x = x * np.array([1.0, rng.uniform(0.9, 1.05), rng.uniform(0.75, 1.05)], np.float32)
    x = np.power(np.clip(x * rng.uniform(0.7, 1.3) + rng.uniform(-0.12, 0.12), 0, 1), rng.uniform(0.7, 1.5))
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.4:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape).astype(np.float32)
    return np.uint8(np.clip(x * 255, 0, 255))


def _place(image: np.ndarray, circle, scale: float, centre: tuple[float, float], size: int, flip: bool,
           fill: float) -> tuple[np.ndarray, list[float]]:
    """The whole image scaled by `scale` (mirrored if flip) so that the embryo's centre lands on `centre` of a
    size×size canvas (outside the image: `fill`), and the embryo's box there (xyxy, clipped)."""
    cx, cy, r = circle[:3]
    sx = -scale if flip else scale
    m = np.float32([[sx, 0, centre[0] - sx * cx], [0, scale, centre[1] - scale * cy]])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(fill, fill, fill))
    rr = r * scale
    box = np.clip([centre[0] - rr, centre[1] - rr, centre[0] + rr, centre[1] + rr], 0, size).tolist()
    return out, box


def real_view(image: np.ndarray, circle, seed: int = 0, size: int = IMGSZ) -> tuple[np.ndarray, np.ndarray]:
    """A real single-embryo frame as a training image: the whole frame (not a cut-out) at its own framing or at a
    random scale and position, mirrored or not, with random exposure and colour. Returns (RGB, boxes (1, 4))."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    r = circle[2]
    if rng.random() < 0.4:  # the frame as it comes, filling the canvas
        scale = size / max(h, w) * rng.uniform(0.9, 1.1)
        centre = (circle[0] * scale + (size - w * scale) / 2, circle[1] * scale + (size - h * scale) / 2)
    else:
        scale = size * rng.uniform(0.08, 0.5) / r
        rr = r * scale
        lo, hi = min(0.8 * rr, size / 2), max(size - 0.8 * rr, size / 2)
        centre = (rng.uniform(lo, hi), rng.uniform(lo, hi))
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = float(np.median(edge)) if rng.random() < 0.6 else float(rng.uniform(0, 60))
    out, box = _place(image, circle, scale, centre, size, bool(rng.random() < 0.5), fill)
    return photometric(out, rng), np.array([box], np.float32)


def real_mosaic(frames: list[tuple[np.ndarray, tuple]], seed: int = 0, size: int = IMGSZ) -> tuple[np.ndarray, np.ndarray]:
    """k×k real frames side by side (k = sqrt(len(frames)): 4 or 9) with thin dark borders, like a multi-well
    overview; each tile is its frame, slightly zoomed towards the embryo. Returns (RGB, boxes (n, 4))."""
    rng = np.random.default_rng(seed)
    k = int(round(np.sqrt(len(frames))))
    assert k * k == len(frames), "frames must fill a square grid"
    border = int(rng.integers(1, 5))
    canvas = np.full((size, size, 3), int(rng.integers(0, 40)), np.uint8)
    cell = size / k
    inner = int(cell - border)
    boxes = []
    for i, (image, circle) in enumerate(frames):
        h, w = image.shape[:2]
        cx, cy, r = circle[:3]
        side = max(max(h, w) * rng.uniform(0.7, 1.0), 2.4 * r)
        t = rng.uniform(0, 1)  # window centre between the frame's centre and the embryo's
        wx, wy = w / 2 + t * (cx - w / 2), h / 2 + t * (cy - h / 2)
        tile = crop_square(image, wx, wy, side, inner)
        s = inner / side
        x0, y0 = int((i % k) * cell + border), int((i // k) * cell + border)
        canvas[y0:y0 + inner, x0:x0 + inner] = tile if tile.ndim == 3 else tile[:, :, None]
        ex, ey, er = x0 + inner / 2 + (cx - wx) * s, y0 + inner / 2 + (cy - wy) * s, r * s
        boxes.append([max(ex - er, x0), max(ey - er, y0), min(ex + er, x0 + inner), min(ey + er, y0 + inner)])
    return photometric(canvas, rng), np.array(boxes, np.float32)


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
                 colour: bool | None = None, circles: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste embryo images into a rendered dish. Returns (RGB uint8 image, boxes (N, 4) xyxy in pixels), one box
    per pasted embryo: the square around its zona (`circles`, else zona_circle of each image, scaled). Each
    embryo is pasted with some of its own surroundings (a soft disc of 1.1–1.3 zona radii)."""
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
    circles = circles or [None] * len(embryos)
    for (cx, cy), emb, circle in zip(centres, embryos, circles):
        r = well_r * rng.uniform(0.55, 0.8) if layout != "drop" else well_r
        cx += rng.uniform(-0.15, 0.15) * (well_r - r) if layout != "drop" else 0
        cy += rng.uniform(-0.15, 0.15) * (well_r - r) if layout != "drop" else 0
        side = int(round(2.6 * r))
        patch, pr = embryo_patch(emb, side, circle)
        reach = rng.uniform(1.1, 1.3)
        patch = patch.astype(np.float32)
        # match the patch's surroundings to the local background, then blend with a soft disc
        ring = np.hypot(*np.mgrid[-side / 2:side / 2:complex(0, side), -side / 2:side / 2:complex(0, side)])
        bg = np.median(patch[ring > pr * 1.15]) if (ring > pr * 1.15).any() else patch.mean()
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        xs, ys = slice(max(x0, 0), min(x0 + side, size)), slice(max(y0, 0), min(y0 + side, size))
        region = img[ys, xs]
        sub = patch[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        alpha = np.clip((pr * reach - ring[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]) / (pr * 0.1), 0, 1)
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

REGION_PX, REGION_MARGIN = 160, 1.6  # each box is cut out 1.6x its side, at 160 px, before the embryo is located


def locate_in_box(region: np.ndarray) -> tuple[float, float, float]:
    """The embryo in a box's cut-out (the box centred, REGION_MARGIN times its side): the classical circle, or the
    box's own circle where the classical one leaves the box or is under half its embryo's size (it found a well rim
    or a neighbour: an embryo of a generated dish was graded on blank well)."""
    box_r, centre = BOX_TO_RADIUS * REGION_PX / REGION_MARGIN, REGION_PX / 2
    cx, cy, r = locate_embryo(region)
    inside = np.hypot(cx - centre, cy - centre) <= box_r and r >= MIN_LOCATED * box_r
    return (cx, cy, r) if inside else (centre, centre, box_r)


def dish_crops(image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Each detected embryo cut out with margin, then normalised by the same embryo_crop as single images."""
    crops = []
    for x0, y0, x1, y1 in boxes:
        region = crop_square(image, (x0 + x1) / 2, (y0 + y1) / 2, REGION_MARGIN * max(x1 - x0, y1 - y0), REGION_PX)
        crops.append(embryo_crop(region, locate=locate_in_box)[0])
    return crops


NESTED = 0.6  # a box covering this much of a smaller, less confident box: the smaller one is dropped


def drop_nested(found: dict) -> dict:
    """Drop boxes that lie mostly inside a more confident box (a second box on the cells or the inner cell mass
    of the same embryo). Embryos never overlap that much, so YOLO's NMS (IoU 0.7) alone keeps such pairs."""
    boxes, scores = found["boxes"], found["scores"]
    keep: list[int] = []
    for i in np.argsort(-scores):
        x0, y0, x1, y1 = boxes[i]
        area = max((x1 - x0) * (y1 - y0), 1e-6)
        nested = False
        for j in keep:
            a = boxes[j]
            inter = max(0.0, min(x1, a[2]) - max(x0, a[0])) * max(0.0, min(y1, a[3]) - max(y0, a[1]))
            small = min(area, max((a[2] - a[0]) * (a[3] - a[1]), 1e-6))
            nested |= inter > NESTED * small
        if not nested:
            keep.append(int(i))
    keep.sort()
    return {k: v[keep] if isinstance(v, np.ndarray) and len(v) == len(boxes) else v for k, v in found.items()}


def detect(image: np.ndarray, device: str | None = None, conf: float | None = None) -> dict:
    return drop_nested(registry.load(DISH_ID, device).predict([image], conf=conf)[0])


def reading_order(boxes: np.ndarray) -> list[int]:
    """Box indices left to right, top to bottom: a new row starts where a centre lies more than half the median box
    height below the row's first (a fixed pixel band split rows whose boxes sat a few pixels apart)."""
    if not len(boxes):
        return []
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    gap = 0.5 * float(np.median(boxes[:, 3] - boxes[:, 1]))
    rows: list[list[int]] = []
    for i in np.argsort(cy, kind="stable"):
        if rows and cy[i] - cy[rows[-1][0]] <= gap:
            rows[-1].append(int(i))
        else:
            rows.append([int(i)])
    return [i for row in rows for i in sorted(row, key=lambda k: cx[k])]


def grade_boxes(image: InputImage, boxes: np.ndarray, scores: np.ndarray, device: str | None = None,
                mode: str = "dish") -> list[Prediction]:
    """One Prediction per box, numbered left-to-right, top-to-bottom (graded() adds caveats and ranks)."""
    grader = registry.load(GRADE_ID, device)
    order = reading_order(boxes)
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
    return preds


def graded(image: InputImage, boxes: np.ndarray, scores: np.ndarray, device: str | None = None,
           day: int | None = None) -> list[Prediction]:
    """Each embryo in the boxes graded, with what the page says beside its answers (embryo.judged), and ranked."""
    grey = looks_time_lapse(image.pixels)
    return rank([judged(p, grey, day) for p in grade_boxes(image, boxes, scores, device)], day)


RANKING = ("Ranked within this dish by the probability of good quality, among the embryos called blastocyst and not "
           "in doubt only (quality is not reliable for cleavage-stage embryos): not a selection ranking.")


def rank(preds: list[Prediction], day: int | None = None) -> list[Prediction]:
    """Rank by P(good) the embryos called blastocyst whose answers are not in doubt (no warning); the others, and
    every embryo on day 3 (when quality is not reliable), get no rank (None)."""
    called = [] if day == 3 else [p for p in preds if p.label("stage") == "blastocyst" and not p.extras.get("warnings")]
    order = {id(p): n for n, p in enumerate(sorted(called, key=lambda p: -p.probabilities["quality"]["good"]), 1)}
    for p in preds:
        p.extras["rank"] = order.get(id(p))
        p.extras.setdefault("caveats", {})["ranking"] = (
            RANKING if p.extras["rank"] is not None
            else "Not ranked: on day 3 the quality call is not reliable." if day == 3
            else "Not ranked: its answers are in doubt (see the warning)." if p.extras.get("warnings")
            else "Not ranked: called cleavage, whose quality call is not reliable.")
    return preds


def grade_dish(image: InputImage, device: str | None = None, conf: float | None = None,
               day: int | None = None) -> Prediction:
    """The whole dish as one Prediction (for Batch, bench and the CLI): per-embryo rows in extras['embryos']."""
    t0 = time.perf_counter()
    found = detect(image.pixels, device, conf)
    t1 = time.perf_counter()
    embryos = graded(image, found["boxes"], found["scores"], device, day)
    t2 = time.perf_counter()
    card = registry.card(DISH_ID)
    return Prediction(DISH_ID, card.version, image.name, image.sha256,
                      extras={"n_embryos": len(embryos), "culture_day": day,
                              "n_blastocysts": sum(e.label("stage") == "blastocyst" for e in embryos),
                              "n_ranked": sum(e.extras["rank"] is not None for e in embryos),
                              "embryos": [e.flat() | e.extras for e in embryos]},
                      timings_ms={"detect": (t1 - t0) * 1000, "grade": (t2 - t1) * 1000})


# --- training data, training and evaluation of the detector -------------------------------------------------------

DISH_VERSION = "2.0.0"
DISH_EPOCHS = 40
RECIPE = "real-frames-v2"  # bump when the composition changes: the cached training images are rebuilt
N_DISHES, N_REAL, N_MOSAICS, N_VAL = 160, 260, 100, 40
SCALE = [0.33, 0.125, 256]  # YOLOv8 depth, width, max channels: a quarter of the width of yolov8n
SOURCES = ("hungvuong", "gomez", "gomez-crops")

# held-out frames whose zona circle was wrong on the review contact sheet (left out of the real-frame test set):
# all 96 trusted Hung Vuong and 94 Gomez AA83-7 circles were right; these 3 of 67 EH309-8 crops circle the inner
# cell mass of a hatching blastocyst only
REVIEWED_OUT = {f"gomez-crops__E2_EH309-8_phase_split_{n}" for n in (120, 124, 135)}


def embryo_sources(data: Path) -> dict[str, list[tuple[Path, str]]]:
    """Real single-embryo images (path, source) per split (embryo-grade's split: Hung Vuong near-duplicate
    groups, Gomez embryos), to compose training images from (train) and to test on (heldout)."""
    from .embryo_training import collect

    out: dict[str, list[tuple[Path, str]]] = {"train": [], "heldout": []}
    for it in collect(data):
        if it.source in SOURCES:
            out[it.split].append((it.path, it.source))
    return out


def located(sources: list[tuple[Path, str]]) -> list[tuple[Path, np.ndarray, tuple]]:
    """(path, RGB image, zona circle) of each image whose circle is trusted (contrast >= MIN_CONTRAST)."""
    from .datasets.embryo import load_rgb

    out = []
    for path, source in sources:
        image = load_rgb(path)
        circle = zona_circle(image, source)
        if circle[3] >= MIN_CONTRAST:
            out.append((path, image, circle))
    return out


def _write(folder: Path, name: str, img: np.ndarray, boxes: np.ndarray) -> None:
    h, w = img.shape[:2]
    cv2.imwrite(str(folder / "images" / f"{name}.png"), img[:, :, ::-1])
    (folder / "labels" / f"{name}.txt").write_text("".join(
        f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n"
        for x0, y0, x1, y1 in boxes))


def prepare_dishes(data: Path, out: Path, seed: int = 0, n_dishes: int = N_DISHES, n_real: int = N_REAL,
                   n_mosaics: int = N_MOSAICS, n_val: int = N_VAL) -> Path:
    """Write the training images in the YOLO layout: out/{train,val}/{images,labels}, out/data.yaml. Training:
    rendered dishes, real frames and real-frame mosaics from training-split embryos; validation: rendered dishes
    from held-out embryos only, with other seeds."""
    sources = embryo_sources(data)
    for split in ("train", "val"):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
    for split, offset in (("train", 0), ("val", 100_000)):
        frames = located(sources["train" if split == "train" else "heldout"])
        log(f"{split}: {len(frames)} embryo images with a trusted zona circle")
        rng = np.random.default_rng(seed + offset)
        folder = out / split
        for k in range(n_dishes if split == "train" else n_val):
            layout = LAYOUTS[k % len(LAYOUTS)]
            count = int(rng.integers(1, 17)) if layout != "drop" else int(rng.integers(1, 9))
            chosen = [frames[i] for i in rng.choice(len(frames), count)]
            img, boxes = compose_dish([f[1] for f in chosen], seed=seed + offset + k, size=IMGSZ, layout=layout,
                                      circles=[f[2] for f in chosen])
            _write(folder, f"dish_{split}_{k:04d}", img, boxes)
        if split == "val":
            continue
        for k in range(n_real):
            _, image, circle = frames[int(rng.integers(len(frames)))]
            _write(folder, f"real_{k:04d}", *real_view(image, circle, seed=seed + 200_000 + k))
        for k in range(n_mosaics):
            n = 4 if k % 2 else 9
            chosen = [frames[i][1:] for i in rng.choice(len(frames), n, replace=False)]
            _write(folder, f"mosaic_{k:04d}", *real_mosaic(chosen, seed=seed + 300_000 + k))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: train/images\nval: val/images\nnames:\n  0: embryo\n")
    return yaml_path


def prepare_real_frames(data: Path, out: Path) -> dict[str, int]:
    """Test set of real single-embryo frames from held-out embryos only (Hung Vuong held-out groups, held-out
    Gomez embryos), in the YOLO layout out/{images,labels}; file names start with the source ("gomez__...").
    Boxes: the zona circle, trusted ones only, minus REVIEWED_OUT. Returns the number of frames per source."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    from .datasets.embryo import load_rgb

    counts: dict[str, int] = {}
    for path, source in embryo_sources(data)["heldout"]:
        name = f"{source}__{path.parent.name}__{path.stem}" if source == "gomez" else f"{source}__{path.stem}"
        if name in REVIEWED_OUT:
            continue
        image = load_rgb(path)
        cx, cy, r, contrast = zona_circle(image, source)
        if not contrast >= MIN_CONTRAST:
            continue
        h, w = image.shape[:2]
        _write(out, name, image, np.clip([[cx - r, cy - r, cx + r, cy + r]], 0, [w, h, w, h]))
        counts[source] = counts.get(source, 0) + 1
    return counts


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

    torch.set_num_threads(1)  # small model, small batches: one thread is nearly as fast and leaves a core free
    epochs = epochs or DISH_EPOCHS
    out = PROJECT_ROOT / "data_prepared" / "embryo-dish"
    stamp = (f"recipe={RECIPE} seed={seed} dishes={N_DISHES} real={N_REAL} mosaics={N_MOSAICS} val={N_VAL} "
             f"imgsz={IMGSZ} data={Path(data).resolve()}")
    if (out / "stamp.txt").is_file() and (out / "stamp.txt").read_text() == stamp:
        data_yaml = out / "data.yaml"  # composed before with the same settings (composition is deterministic)
    else:
        for sub in ("train", "val", "runs"):  # (other folders, e.g. an unshipped model kept there, stay)
            shutil.rmtree(out / sub, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        data_yaml = prepare_dishes(Path(data), out, seed)
        (out / "stamp.txt").write_text(stamp)
    log(f"composed dishes in {out}")
    net = YOLO(str(model_yaml(out)), task="detect")
    net.train(data=str(data_yaml), epochs=epochs, imgsz=IMGSZ, batch=16, workers=0, device=device, amp=False,
              plots=False, seed=seed, deterministic=True, project=str(out / "runs"), name="train", exist_ok=True,
              verbose=False, patience=epochs, mosaic=0.5, close_mosaic=max(1, epochs // 4), cache=True)
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
        # chosen after the held-out real-frame test (see README): on generated dishes and training-split real
        # frames every threshold from 0.35 to 0.55 counts equally well; on held-out EmbryoScope embryo AA83-7 a
        # fibre in the well's corner scores 0.35-0.50 and is counted as a second embryo below 0.5
        "conf": 0.5,
        "max_det": 64,
        "architecture": f"YOLOv8 detection built from Ultralytics' yolov8.yaml at depth/width/max-channels {SCALE} "
                        "(a quarter of yolov8n's width), one class, trained from scratch (no hub weights)",
        "intended_use": "Research demonstration: finds each embryo in a multi-well dish, WOW microwell or open-drop "
                        "image so that embryo-grade can grade it, and tells single-embryo images from dishes.",
        "limitations": "No real dish image with boxes was available: trained on real single-embryo frames (whole, "
                       "rescaled, mirrored, re-exposed), mosaics of such frames and real embryos pasted into "
                       "rendered dishes. All boxes, in training and in the real-frame test, are zona circles found by "
                       "a classical detector (Hough circles scored by fine detail; frames where it is unsure are "
                       "left out, and the test set's circles were checked by eye), not drawn by embryologists. Real "
                       "dishes with other well shapes, strong reflections, touching embryos or heavy debris may be "
                       "missed or double-counted; check the numbered boxes before reading the table. The "
                       "confidence threshold (0.5) was set after the held-out real-frame test (at 0.35 a fibre in "
                       "the corner of one EmbryoScope embryo's frames was counted as a second embryo), so the "
                       "exact-count rates below are slightly optimistic.",
        "data": [{"name": "Real single-embryo frames (Hung Vuong photos, Gomez EmbryoScope frames and blastocyst "
                          "crops): whole frames at random scale, position, mirroring, exposure and colour",
                  "licence": "derived from the sources below",
                  "split": f"{N_REAL} training images from training-split embryos only"},
                 {"name": "Mosaics of 2×2 and 3×3 real frames with thin dark borders (multi-well overview)",
                  "licence": "derived from the sources below",
                  "split": f"{N_MOSAICS} training images from training-split embryos only"},
                 {"name": "Composite dishes rendered here (grid plates, WOW microwells, open drops; real embryos "
                          "pasted with their surroundings; uneven light, vignetting, debris, blur, noise, scale)",
                  "licence": "derived from the sources below",
                  "split": f"{N_DISHES} training dishes from training-split embryos; {N_VAL} validation dishes "
                           "from held-out embryos (embryo-grade's split) with other seeds"},
                 {"name": "Hung Vuong day-3/day-5 embryos", "licence": "competition data, research only",
                  "split": "embryo-grade's near-duplicate-group split; held-out groups only in the tests"},
                 {"name": "Gomez 2022 EmbryoScope frames (every 3rd annotated frame) and blastocyst crops",
                  "licence": "CC BY 4.0",
                  "split": "by embryo (held out: AA83-7, EH309-8), only in the tests"}],
    }
    old = folder / "card.toml"
    if old.is_file():
        prev = tomllib.loads(old.read_text())
        if prev.get("sha256") == file_sha256(path) and "metrics" in prev:
            card["metrics"] = prev["metrics"]
    write_card(folder, card)


def fill_card_metrics(names: dict[str, str]) -> None:
    """Copy stored evaluations (weights/embryo-dish/eval/<name>, measured on this model file) into the card's
    [metrics."<label>"] tables, with the exact-count rate per source where the evaluation has one."""
    from .evaluation import copy_evaluations_to_card

    def table(name: str, metrics: dict) -> dict:
        m = metrics["embryos"]
        out = {k: round(m[k], 4) if isinstance(m[k], float) else m[k]
               for k in ("map50", "map50_95", "precision", "recall", "count_mae", "count_exact", "n_images",
                         "n_boxes") if k in m}
        for source, sm in (m.get("by_source") or {}).items():
            out[f"count_exact_{source}"] = round(sm["count_exact"], 4)
            out[f"n_images_{source}"] = sm["n_images"]
        return out

    copy_evaluations_to_card(DISH_ID, names, table)


YOLO_IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _yaml_folder(base: Path, entry) -> Path | None:
    """A data.yaml split entry as a folder, read as Ultralytics reads it (Roboflow writes '../valid/images')."""
    if not isinstance(entry, str):
        return None
    for text in (entry, entry.removeprefix("../")):
        if (base / text).is_dir():
            return base / text
    return None


def is_yolo_layout(path: Path) -> bool:
    return ((path / "images").is_dir() and (path / "labels").is_dir() or (path / "data.yaml").is_file()
            or any((path / s / "images").is_dir() for s in ("valid", "val", "test")))


def yolo_layout(path: Path, split: str | None = None) -> Path:
    """The images folder to score in a YOLO detection layout: PATH/images (its images/<split>/ with --split), else a
    data.yaml split (val, else test, or the one named), else a Roboflow export's <split>/images (valid, val, test)."""
    import yaml

    from .datasets import layout_root

    path = layout_root(path, is_yolo_layout)
    if (path / "images").is_dir():
        images = path / "images"
        if not split:
            return images
        if (images / split).is_dir():
            return images / split
        found = sorted(p.name for p in images.iterdir() if p.is_dir())
        raise ValueError(f"{images}: no split {split!r}" + (f"; found {', '.join(found)}" if found else
                                                             " (no split folders)"))
    cfg = {}
    if (path / "data.yaml").is_file():
        cfg = yaml.safe_load((path / "data.yaml").read_text()) or {}
    base = Path(cfg.get("path") or path)
    base = base if base.is_absolute() else path / base
    for key in [split] if split else ["val", "test"]:
        if cfg.get(key) and (folder := _yaml_folder(base, cfg[key])):
            return folder
    exports = [s for s in ([split] if split else ["valid", "val", "test"]) if (path / s / "images").is_dir()]
    if exports:
        return path / exports[0] / "images"
    if split:
        raise ValueError(f"{path}: no split {split!r} (neither in data.yaml nor a {split}/images folder)")
    raise ValueError(f"{path}: not a YOLO detection layout (expected images/ and labels/, data.yaml, or "
                     "valid/images and valid/labels)")


def _split_name(images: Path, root: Path) -> str:
    parts = [p for p in images.resolve().relative_to(root.resolve()).parts if p != "images"] \
        if images.resolve().is_relative_to(root.resolve()) else [images.name]
    return "/".join(parts) or "every image in the folder"


def evaluate_dish(path: Path, name: str, device: str | None = None, split: str | None = None) -> dict:
    import tempfile

    import pandas as pd
    from ultralytics.data.utils import img2label_paths

    from .audit import phash
    from .datasets.embryo import load_rgb
    from .evaluation import readable, store

    images = yolo_layout(path, split)
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in YOLO_IMAGE_TYPES)  # images/val/… too
    # Ultralytics leaves a labels cache beside the user's labels: remove it unless it was there before
    caches = {Path(img2label_paths([str(p)])[0]).parent.with_suffix(".cache") for p in files}
    caches = {c for c in caches if not c.exists()}
    model = registry.load(DISH_ID, device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "data.yaml"
        cfg.write_text(f"path: {images.parent.resolve()}\ntrain: {images.name}\nval: {images.name}\nnames:\n  0: embryo\n")
        res = model.net.val(data=str(cfg), imgsz=IMGSZ, batch=8, device=model.device, plots=False, verbose=False,
                            workers=0, project=tmp, name="val", conf=0.001)
    for cache in caches:
        cache.unlink(missing_ok=True)
    rows, skipped = [], []
    for start in range(0, len(files), 32):
        chunk, pixels, bad = readable(files[start:start + 32], load_rgb)
        skipped += bad
        for p, img, label in zip(chunk, pixels, map(Path, img2label_paths([str(p) for p in chunk]))):
            n_true = sum(1 for line in label.read_text().splitlines() if line.strip()) if label.is_file() else 0
            found = drop_nested(model.predict([img])[0])
            rows.append({"item": str(p.relative_to(images)), "output": "embryos", "true": n_true,
                         "pred": len(found["boxes"]), "source": p.name.split("__")[0] if "__" in p.name else "",
                         "phash": f"{phash(img):016x}"})
    if not rows:
        raise ValueError(f"{images}: no readable images" + (f" ({skipped[0]})" if skipped else ""))
    frame = pd.DataFrame(rows)
    metrics = {"embryos": {"map50": float(res.box.map50), "map50_95": float(res.box.map),
                           "precision": float(res.box.mp), "recall": float(res.box.mr),
                           "count_mae": float((frame["true"] - frame["pred"]).abs().mean()),
                           "count_exact": float((frame["true"] == frame["pred"]).mean()), "n_images": len(rows),
                           "n_boxes": int(frame["true"].sum())}}
    if (frame["source"] != "").any():  # file names "<source>__...": counts per source (e.g. the real-frame set)
        metrics["embryos"]["by_source"] = {
            src: {"n_images": len(g), "count_exact": float((g["true"] == g["pred"]).mean()),
                  "count_mae": float((g["true"] - g["pred"]).abs().mean())}
            for src, g in frame.groupby("source") if src}
    meta = {"data_path": str(Path(path).resolve()), "layout": "yolo-detection", "images": str(images),
            "split": _split_name(images, Path(path)),
            "imgsz": IMGSZ, "conf_for_counts": registry.card(DISH_ID).get("conf", 0.25), "skipped": skipped}
    return store(model.card, name, frame, metrics, meta)

"""What-if testing: pure image perturbations, canvas masks, occlusion maps, sensitivity curves, saved experiments.

Everything takes and returns uint8 RGB arrays and never changes its input. A what-if "edit" is a settings dict
(perturbation name -> value, plus how painted pixels are filled) and an optional painted mask; `apply_edit`
turns (original, settings, mask) into the edited image, the same way every time, so a saved experiment
reproduces exactly. Predictions are dicts {output: {label: probability}} ("Outputs").
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from .results import decide

Outputs = dict[str, dict[str, float]]
PredictBatch = Callable[[list[np.ndarray]], list[Outputs]]
Progress = Callable[[float], None] | None

NOISE_SEED = 1234  # noise and speckle are random but fixed, so an experiment reproduces


# --- perturbations (pure) -------------------------------------------------------------------------------------------
def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def brightness(image: np.ndarray, delta: float) -> np.ndarray:
    """Add `delta` grey levels (-255..255) to every pixel."""
    return _u8(image.astype(np.float32) + delta) if delta else image.copy()


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Stretch (>1) or flatten (<1) intensities around the image mean."""
    if factor == 1:
        return image.copy()
    x = image.astype(np.float32)
    return _u8(x.mean() + (x - x.mean()) * factor)


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """Gamma curve 255 * (x / 255) ** g: g < 1 lifts shadows, g > 1 darkens mid-tones."""
    if g == 1:
        return image.copy()
    lut = _u8(255.0 * (np.arange(256) / 255.0) ** g)
    return lut[image]


def gaussian_blur(image: np.ndarray, sigma_pct: float) -> np.ndarray:
    """Gaussian blur with sigma given in % of the image's shorter side (so it means the same at any size)."""
    sigma = sigma_pct / 100 * min(image.shape[:2])
    if sigma <= 0:
        return image.copy()
    return _blur(image, sigma)


def vignette(image: np.ndarray, corner_loss_pct: float) -> np.ndarray:
    """Light falling off from the centre (a microscope's vignetting): the corners keep 100 - corner_loss_pct % of
    their brightness, the centre all of it, smoothly (quadratic in the distance from the centre)."""
    if corner_loss_pct <= 0:
        return image.copy()
    h, w = image.shape[:2]
    v, u = (np.mgrid[:h, :w] + 0.5) / np.array([h, w])[:, None, None] - 0.5
    field = 1 - corner_loss_pct / 100 * (u ** 2 + v ** 2) / 0.5
    return _u8(image.astype(np.float32) * (field[..., None] if image.ndim == 3 else field))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a downscaled copy (same look, a fraction of the time)."""
    h, w = image.shape[:2]
    f = sigma / 4 if sigma > 8 else 1.0
    if f == 1.0:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    small = cv2.resize(image, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 4.0, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def noise(image: np.ndarray, sigma: float, seed: int = NOISE_SEED) -> np.ndarray:
    """Add Gaussian noise of `sigma` grey levels (fixed seed: the same noise every time)."""
    if sigma <= 0:
        return image.copy()
    n = np.random.default_rng(seed).normal(0, sigma, image.shape[:2])[..., None]
    return _u8(image.astype(np.float32) + n)


def speckle(image: np.ndarray, strength: float, seed: int = NOISE_SEED) -> np.ndarray:
    """Ultrasound-like multiplicative speckle: x * (1 + strength * n), n grainy unit-variance noise."""
    if strength <= 0:
        return image.copy()
    n = np.random.default_rng(seed).normal(0, 1, image.shape[:2]).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), 1.0)
    n /= max(float(n.std()), 1e-6)
    return _u8(image.astype(np.float32) * (1 + strength * n)[..., None])


def gain(image: np.ndarray, db: float) -> np.ndarray:
    """Ultrasound receiver gain: multiply intensities by 10 ** (dB / 20)."""
    return _u8(image.astype(np.float32) * 10 ** (db / 20)) if db else image.copy()


def _rotation_matrix(shape, degrees: float) -> np.ndarray:
    h, w = shape[:2]
    return cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)


def _zoom_matrix(shape, factor: float) -> np.ndarray:
    h, w = shape[:2]
    return cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, factor)


def _flip_matrix(shape, mode: str) -> np.ndarray:
    h, w = shape[:2]
    sx, tx = (-1.0, w - 1.0) if mode in ("horizontal", "both") else (1.0, 0.0)
    sy, ty = (-1.0, h - 1.0) if mode in ("vertical", "both") else (1.0, 0.0)
    return np.array([[sx, 0, tx], [0, sy, ty]], np.float64)


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre (counter-clockwise), same size, corners mirrored in; multiples of 360° are identity."""
    degrees = degrees % 360
    if degrees == 0:
        return image.copy()
    if degrees in (90, 180, 270) and image.shape[0] == image.shape[1]:
        return np.ascontiguousarray(np.rot90(image, int(degrees // 90)))  # exact for square images
    return _warp(image, _rotation_matrix(image.shape, degrees))


def flip(image: np.ndarray, mode: str) -> np.ndarray:
    """mode: "none", "horizontal" (left-right), "vertical" (up-down) or "both"."""
    if mode not in FLIP_MODES:
        raise ValueError(f"flip mode must be one of {FLIP_MODES}, not {mode!r}")
    out = image
    if mode in ("horizontal", "both"):
        out = out[:, ::-1]
    if mode in ("vertical", "both"):
        out = out[::-1]
    return out.copy()


def zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom about the centre: factor 2 crops the central half and enlarges it; < 1 shrinks, borders mirrored in."""
    if factor == 1:
        return image.copy()
    return _warp(image, _zoom_matrix(image.shape, factor))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at `quality` (1–100) and decode again."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


FLIP_MODES = ("none", "horizontal", "vertical", "both")


@dataclass(frozen=True)
class Perturbation:
    name: str
    label: str
    fn: Callable
    identity: float | str
    lo: float | None = None  # slider range (None for choices)
    hi: float | None = None
    step: float | None = None
    unit: str = ""
    ultrasound: bool = False  # shown only for ultrasound images
    choices: tuple = ()


# Order = order of application: geometry, then intensity (as acquired), then blur/noise, then compression.
PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in [
    Perturbation("rotation", "Rotation", rotate, 0, -180, 180, 5, "°"),
    Perturbation("zoom", "Zoom", zoom, 1.0, 0.5, 3.0, 0.05, "×"),
    Perturbation("flip", "Flip", flip, "none", choices=FLIP_MODES),
    Perturbation("gain", "Gain", gain, 0.0, -12.0, 12.0, 0.5, " dB", ultrasound=True),
    Perturbation("brightness", "Brightness", brightness, 0, -100, 100, 5, " levels"),
    Perturbation("contrast", "Contrast", contrast, 1.0, 0.25, 3.0, 0.05, "×"),
    Perturbation("gamma", "Gamma", gamma, 1.0, 0.3, 3.0, 0.05, ""),
    Perturbation("vignette", "Vignette (light lost in the corners, %)", vignette, 0, 0, 80, 5, "%"),
    Perturbation("blur", "Blur (σ, % of image size)", gaussian_blur, 0.0, 0.0, 5.0, 0.1, "%"),
    Perturbation("speckle", "Speckle", speckle, 0.0, 0.0, 1.0, 0.05, "", ultrasound=True),
    Perturbation("noise", "Noise (σ, grey levels)", noise, 0, 0, 60, 2, ""),
    Perturbation("jpeg", "JPEG quality (100 = not recompressed)", jpeg, 100, 5, 100, 5, ""),
]}
MASK_MODES = {
    "background": "Fill with surrounding background",
    "blur": "Blur",
    "mean": "Erase to image mean",
    "colour": "Paint a colour",
}
DEFAULT_SETTINGS: dict = {**{p.name: p.identity for p in PERTURBATIONS.values()},
                          "mask_mode": "background", "mask_colour": "#000000"}


def perturbations(ultrasound: bool = False) -> list[Perturbation]:
    return [p for p in PERTURBATIONS.values() if ultrasound or not p.ultrasound]


def changed(settings: dict) -> dict:
    """The perturbations in `settings` that differ from identity, in application order."""
    out = {}
    for name, p in PERTURBATIONS.items():
        value = settings.get(name, p.identity)
        if value != p.identity:
            out[name] = value
    return out


def describe(settings: dict) -> str:
    """Plain words for what was changed, e.g. "Rotation 90°, Brightness +20 levels"."""
    parts = []
    for name, value in changed(settings).items():
        p = PERTURBATIONS[name]
        label = p.label.split(" (")[0]
        if p.choices:
            parts.append(f"{label} {value}")
        elif name in ("brightness", "rotation", "gain"):
            parts.append(f"{label} {value:+g}{p.unit}")
        else:
            parts.append(f"{label} {value:g}{p.unit}")
    return ", ".join(parts)


def apply_perturbations(image: np.ndarray, settings: dict) -> np.ndarray:
    """Apply every non-identity perturbation in `settings`, in the fixed order of PERTURBATIONS."""
    out = image
    for name, value in changed(settings).items():
        out = PERTURBATIONS[name].fn(out, value)
    return out if out is not image else image.copy()


def perturbation_matrix(shape, settings: dict) -> np.ndarray:
    """The 2x3 affine map that the geometric perturbations (rotation, zoom, flip) apply to pixel coordinates."""
    m = np.eye(3)
    steps = {"rotation": lambda v: _rotation_matrix(shape, v % 360), "zoom": lambda v: _zoom_matrix(shape, v),
             "flip": lambda v: _flip_matrix(shape, v)}
    for name, value in changed(settings).items():
        if name in steps:
            m = np.vstack([steps[name](value), [0, 0, 1]]) @ m
    return m[:2]


# --- painted masks --------------------------------------------------------------------------------------------------
def canvas_mask(rgba: np.ndarray | None, shape) -> np.ndarray | None:
    """The painted pixels of a drawable-canvas RGBA image, as a bool mask at the image's (H, W); None if unpainted."""
    if rgba is None:
        return None
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or not rgba[:, :, 3].any():
        return None
    h, w = shape[:2]
    alpha = (rgba[:, :, 3] > 0).astype(np.uint8)
    return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def hex_colour(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour must look like #rrggbb, not {colour!r}")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))


def apply_mask(image: np.ndarray, mask: np.ndarray | None, mode: str = "background",
               colour: str = "#000000") -> np.ndarray:
    """Replace exactly the pixels where `mask` is True; every other pixel is left unchanged.

    mode: "background" (inpainted from the surrounding pixels, as if the painted object were absent), "blur",
    "mean" (the image's mean colour) or "colour" (`colour` as #rrggbb).
    """
    out = image.copy()
    if mask is None or not mask.any():
        return out
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask is {mask.shape}, image is {image.shape[:2]}")
    if mode == "background":
        fill = _inpaint(image, mask)
    elif mode == "blur":
        fill = _blur(image, max(2.0, 0.03 * min(image.shape[:2])))
    elif mode == "mean":
        fill = np.broadcast_to(_u8(image.reshape(-1, image.shape[2]).mean(axis=0)), image.shape)
    elif mode == "colour":
        fill = np.broadcast_to(np.array(hex_colour(colour), np.uint8), image.shape)
    else:
        raise ValueError(f"mask mode must be one of {list(MASK_MODES)}, not {mode!r}")
    out[mask] = fill[mask]
    return out


def _inpaint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Telea inpainting, done at ≤ 384 px on the long side for speed and enlarged back."""
    h, w = image.shape[:2]
    scale = min(1.0, 384 / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    m = cv2.dilate(m, np.ones((3, 3), np.uint8))  # include the anti-aliased rim of the stroke
    filled = cv2.inpaint(small, m * 255, 5, cv2.INPAINT_TELEA)
    return cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR) if scale < 1 else filled


def apply_edit(image: np.ndarray, settings: dict, mask: np.ndarray | None = None) -> np.ndarray:
    """The edited image: painted mask first (drawn on the original), then the perturbations."""
    painted = apply_mask(image, mask, settings.get("mask_mode", "background"), settings.get("mask_colour", "#000000"))
    return apply_perturbations(painted, settings)


# --- predictions ----------------------------------------------------------------------------------------------------
def outputs_from_arrays(probs: dict[str, np.ndarray], classes: dict[str, list[str]]) -> list[Outputs]:
    """A backend's {output: (N, n_labels)} as one {output: {label: probability}} per image."""
    n = len(next(iter(probs.values()))) if probs else 0
    return [{out: {lab: float(p[i, j]) for j, lab in enumerate(classes[out])} for out, p in probs.items()}
            for i in range(n)]


def model_predict_batch(model) -> PredictBatch:
    """A registry classifier as a batched what-if predictor."""
    return lambda images: outputs_from_arrays(model.predict(list(images)), model.classes)


def model_predict(model) -> Callable[[np.ndarray], Outputs]:
    batch = model_predict_batch(model)
    return lambda image: batch([image])[0]


def model_explain(model) -> Callable[[np.ndarray, str], np.ndarray | None]:
    """Grad-CAM of a registry model for the predicted label of one output; None where the backend cannot explain."""
    def explain(image, output):
        try:
            return model.explain(image, output)
        except NotImplementedError:
            return None
    return explain


def model_key(obj) -> str | None:
    """"id@version#sha" of a registry model found in a callable (bound method, closure or defaults), else None."""
    seen, todo = set(), [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        card = getattr(o, "card", None)
        if card is not None and hasattr(card, "sha256"):
            return f"{card.id}@{card.version}#{card.sha256[:12]}"
        if callable(o):
            todo += [getattr(o, "__self__", None), *(c.cell_contents for c in (getattr(o, "__closure__", None) or ())
                                                      if _filled(c))]
            todo += list(getattr(o, "__defaults__", None) or ())
    return None


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def predicted(outputs: Outputs, thresholds: dict[str, float] | None = None) -> dict[str, str]:
    """The label shown per output, decided as the task page decides it (the card's thresholds)."""
    return {out: decide(probs, (thresholds or {}).get(out)) for out, probs in outputs.items() if probs}


def compare(original: Outputs, modified: Outputs) -> pd.DataFrame:
    """One row per (output, label): original and modified probability and the change in percentage points."""
    rows = []
    for out, probs in original.items():
        for label, p in probs.items():
            q = modified.get(out, {}).get(label, float("nan"))
            rows.append({"output": out, "label": label, "original": p, "modified": q, "change_pts": 100 * (q - p)})
    return pd.DataFrame(rows, columns=["output", "label", "original", "modified", "change_pts"])


def _batches(images_fn: Callable[[int], np.ndarray], n: int, predict_batch: PredictBatch, batch_size: int,
             progress: Progress) -> list[Outputs]:
    results: list[Outputs] = []
    for start in range(0, n, batch_size):
        results += predict_batch([images_fn(i) for i in range(start, min(n, start + batch_size))])
        if progress:
            progress(min(n, start + batch_size) / n)
    return results


def batch_size_for(image: np.ndarray, budget_mb: int = 64) -> int:
    return int(np.clip(budget_mb * 2**20 // max(image.nbytes, 1), 1, 32))


# --- occlusion map --------------------------------------------------------------------------------------------------
@dataclass
class OcclusionMap:
    drop: dict[str, np.ndarray]  # per output: drop in the predicted label's probability (H, W), may be < 0
    labels: dict[str, str]  # per output: the label whose probability is followed
    base: Outputs
    patch: int
    stride: int
    n_patches: int
    max_drop: dict[str, float]  # per output: the largest drop caused by one patch

    def heat(self, output: str) -> np.ndarray:
        """The drop scaled to [0, 1] for display (rises are shown as 0)."""
        d = np.maximum(self.drop[output], 0)
        top = float(d.max())
        return d / top if top > 0 else d

    def peak(self, output: str) -> tuple[int, int, float]:
        """(row, col, mean drop there) where covering hurts the predicted label most."""
        d = self.drop[output]
        r, c = np.unravel_index(int(np.argmax(d)), d.shape)
        return int(r), int(c), float(d[r, c])


def occlusion_map(image: np.ndarray, predict_batch: PredictBatch, patch: int, stride: int | None = None,
                  fill: str = "mean", batch_size: int | None = None, progress: Progress = None,
                  thresholds: dict[str, float] | None = None) -> OcclusionMap:
    """Slide a `patch` x `patch` square (filled like a painted mask) over the image with `stride` (default
    patch / 2), predict every occluded copy in batches, and map how much each pixel's covering lowers the
    originally predicted label's probability (mean over the patches covering it)."""
    h, w = image.shape[:2]
    patch = int(np.clip(patch, 2, min(h, w)))
    stride = int(max(1, stride or patch // 2))
    ys = _positions(h, patch, stride)
    xs = _positions(w, patch, stride)
    grid = [(y, x) for y in ys for x in xs]
    fill_image = apply_mask(image, np.ones(image.shape[:2], bool), fill) if fill != "background" else None

    def occluded(i):
        y, x = grid[i]
        out = image.copy()
        if fill_image is None:
            m = np.zeros(image.shape[:2], bool)
            m[y:y + patch, x:x + patch] = True
            return apply_mask(image, m, "background")
        out[y:y + patch, x:x + patch] = fill_image[y:y + patch, x:x + patch]
        return out

    batch_size = batch_size or batch_size_for(image)
    base = predict_batch([image])[0]
    labels = predicted(base, thresholds)
    results = _batches(occluded, len(grid), predict_batch, batch_size, progress)
    drop, max_drop = {}, {}
    cover = np.zeros((h, w), np.float32)
    for y, x in grid:
        cover[y:y + patch, x:x + patch] += 1
    for out, label in labels.items():
        acc = np.zeros((h, w), np.float32)
        for (y, x), res in zip(grid, results):
            acc[y:y + patch, x:x + patch] += base[out][label] - res[out][label]
        drop[out] = acc / np.maximum(cover, 1)
        max_drop[out] = max(base[out][label] - res[out][label] for res in results)
    return OcclusionMap(drop, labels, base, patch, stride, len(grid), max_drop)


def _positions(size: int, patch: int, stride: int) -> list[int]:
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)  # cover the last rows/columns too
    return pos


# --- sensitivity curve ----------------------------------------------------------------------------------------------
def sweep_values(name: str, n: int = 21, lo: float | None = None, hi: float | None = None) -> list:
    """n evenly spaced values of one perturbation over [lo, hi] (default: its slider range); flip: every mode."""
    p = PERTURBATIONS[name]
    if p.choices:
        return list(p.choices)
    lo = p.lo if lo is None else lo
    hi = p.hi if hi is None else hi
    values = np.linspace(lo, hi, max(2, int(n)))
    return [int(round(v)) if name == "jpeg" else float(v) for v in values]


def sensitivity_curve(image: np.ndarray, predict_batch: PredictBatch, name: str, values: list,
                      settings: dict | None = None, batch_size: int | None = None,
                      progress: Progress = None) -> pd.DataFrame:
    """Probability of every label of every output as perturbation `name` takes each of `values`, the other
    settings held as in `settings`. Columns: value, output, label, probability."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    base = dict(settings or {})
    results = _batches(lambda i: apply_perturbations(image, {**base, name: values[i]}), len(values),
                       predict_batch, batch_size or batch_size_for(image), progress)
    rows = [{"value": v, "output": out, "label": lab, "probability": p}
            for v, res in zip(values, results) for out, probs in res.items() for lab, p in probs.items()]
    return pd.DataFrame(rows, columns=["value", "output", "label", "probability"])


# --- per-object comparison (e.g. sperm heads) -----------------------------------------------------------------------
def compare_objects(original: pd.DataFrame, modified: pd.DataFrame, shape, settings: dict,
                    max_distance: float | None = None) -> pd.DataFrame:
    """Match objects of the original and modified image by nearest centre (original centres mapped through the
    geometric perturbations) and list each original object with its match and whether its class changed.
    Needs columns x, y (centre, pixels) and class in both frames."""
    need = {"x", "y", "class"}
    if not need <= set(original.columns) or not need <= set(modified.columns):
        raise ValueError("both tables need columns x, y and class")
    max_distance = max_distance or 0.05 * max(shape[:2])
    m = perturbation_matrix(shape, settings)
    pts = original[["x", "y"]].to_numpy(float)
    mapped = pts @ m[:, :2].T + m[:, 2] if len(pts) else pts
    cand = modified[["x", "y"]].to_numpy(float)
    rows, used = [], set()
    for i, (px, py) in enumerate(mapped):
        j, dist = None, None
        if len(cand):
            d = np.hypot(cand[:, 0] - px, cand[:, 1] - py)
            d[list(used)] = np.inf
            k = int(np.argmin(d))
            if d[k] <= max_distance:
                j, dist = k, float(d[k])
                used.add(k)
        before = original["class"].iloc[i]
        after = modified["class"].iloc[j] if j is not None else None
        rows.append({"object": i + 1, "class_original": before,
                     "class_modified": after if j is not None else "not found",
                     "changed": j is None or after != before, "distance_px": dist})
    for k in sorted(set(range(len(cand))) - used):
        rows.append({"object": None, "class_original": "not present", "class_modified": modified["class"].iloc[k],
                     "changed": True, "distance_px": None})
    return pd.DataFrame(rows, columns=["object", "class_original", "class_modified", "changed", "distance_px"])


# --- experiments ----------------------------------------------------------------------------------------------------
class ExperimentError(ValueError):
    """A file that is not a what-if experiment this version can read; str(e) is meant for the user."""


@dataclass
class Experiment:
    original: np.ndarray
    settings: dict
    mask: np.ndarray | None = None
    edited: np.ndarray | None = None
    predictions: dict = field(default_factory=dict)  # {"original": Outputs, "modified": Outputs}
    drawing: dict | None = None  # the canvas's json_data, to redraw the strokes
    meta: dict = field(default_factory=dict)  # model key, version, image name, ...

    def reproduce(self) -> np.ndarray:
        return apply_edit(self.original, self.settings, self.mask)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image[:, :, ::-1] if image.ndim == 3 else image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _unpng(data: bytes, colour: bool = True) -> np.ndarray:
    from PIL import Image

    from .imageio import MAX_PIXELS

    try:  # the size from the header first: a 30 kB PNG can hold 20000 x 20000 pixels (18 GB decoded)
        w, h = Image.open(io.BytesIO(data)).size
    except Exception:  # noqa: BLE001 - any unreadable header
        raise ExperimentError("an image inside the experiment file cannot be decoded") from None
    if w * h > MAX_PIXELS:
        raise ExperimentError(f"an image inside the experiment file is {w}×{h} pixels, more than this tool accepts")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ExperimentError("an image inside the experiment file cannot be decoded")
    return np.ascontiguousarray(img[:, :, ::-1]) if colour else img


def save_experiment(exp: Experiment) -> bytes:
    """One .zip: settings.json, original.png, mask.png (if painted), edited.png, predictions.json, drawing.json."""
    edited = exp.edited if exp.edited is not None else exp.reproduce()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("settings.json", json.dumps({"format": "whatif-experiment/1", "settings": exp.settings,
                                                "meta": exp.meta}, indent=2, default=str))
        z.writestr("original.png", _png(exp.original))
        if exp.mask is not None and exp.mask.any():
            z.writestr("mask.png", _png(exp.mask.astype(np.uint8) * 255))
        z.writestr("edited.png", _png(edited))
        z.writestr("predictions.json", json.dumps(exp.predictions, indent=2))
        if exp.drawing:
            z.writestr("drawing.json", json.dumps(exp.drawing))
    return buf.getvalue()


def _valid_setting(name: str, value) -> bool:
    if name == "mask_mode":
        return value in MASK_MODES
    if name == "mask_colour":
        return isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value) is not None
    p = PERTURBATIONS[name]
    if p.choices:
        return value in p.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and p.lo <= value <= p.hi


def load_experiment(data: bytes) -> Experiment:
    """Read a file written by save_experiment; ExperimentError with a plain message for anything else."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ExperimentError("this is not a what-if experiment (.zip) file") from None
    with z:
        names = set(z.namelist())
        if not {"settings.json", "original.png"} <= names:
            raise ExperimentError("the file lacks settings.json or original.png: not a what-if experiment")
        try:
            head = json.loads(z.read("settings.json"))
            predictions = json.loads(z.read("predictions.json")) if "predictions.json" in names else {}
            drawing = json.loads(z.read("drawing.json")) if "drawing.json" in names else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ExperimentError("settings.json inside the experiment is not valid JSON") from None
        if not isinstance(head, dict) or not isinstance(head.get("settings"), dict):
            raise ExperimentError("settings.json holds no settings")
        unknown = set(head["settings"]) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ExperimentError(f"unknown settings in the experiment: {', '.join(sorted(unknown))}")
        bad = [f"{k} = {v!r}" for k, v in head["settings"].items() if not _valid_setting(k, v)]
        if bad:
            raise ExperimentError(f"settings out of range or of the wrong kind: {', '.join(bad)}")
        if drawing is not None and not (isinstance(drawing, dict) and isinstance(drawing.get("objects", []), list)):
            raise ExperimentError("drawing.json inside the experiment is not a canvas drawing")
        original = _unpng(z.read("original.png"))
        mask = _unpng(z.read("mask.png"), colour=False) > 127 if "mask.png" in names else None
        edited = _unpng(z.read("edited.png")) if "edited.png" in names else None
    if mask is not None and mask.shape != original.shape[:2]:
        raise ExperimentError("the mask inside the experiment does not match its image")
    return Experiment(original, {**DEFAULT_SETTINGS, **head["settings"]}, mask, edited, predictions, drawing,
                      head.get("meta") or {})

"""Input transforms declared as data in a card's [input] table and built here.

[input] keys: size = [H, W]; channels = 1 (grey) or 3 (RGB); normalise = "per_image" (zero mean, unit
variance per image), "unit" (x / 255) or "imagenet"-style {mean = [...], std = [...]} on the 0–1 scale;
optional centre_crop = f: the model reads only the central square of side f × the shorter side (whole-well
time-lapse frames, where the embryo sits in the middle); optional test_views = k: each image is read in the first k
of its 8 turns by 90° and mirror images and the probabilities are averaged (objects with no up or left).
"""
from __future__ import annotations

import cv2
import numpy as np


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HxW or HxWxC -> HxWxchannels."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[:, :, None]
    elif channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def normalise(x: np.ndarray, how) -> np.ndarray:
    """x: float32 NHWC on the 0–255 scale."""
    if how == "per_image":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = x.std(axis=(1, 2, 3), keepdims=True)
        return (x - mean) / np.maximum(std, 1.0)
    if how == "unit":
        return x / 255.0
    if isinstance(how, dict):
        mean = np.asarray(how["mean"], np.float32)
        std = np.asarray(how["std"], np.float32)
        return (x / 255.0 - mean) / std
    raise ValueError(f"unknown normalisation {how!r}")


def _centre_box(h: int, w: int, fraction: float) -> tuple[int, int, int]:
    """(y0, x0, side) of the central square of side fraction × the shorter side."""
    side = max(1, int(round(fraction * min(h, w))))
    return (h - side) // 2, (w - side) // 2, side


def centre_square(image: np.ndarray, fraction: float) -> np.ndarray:
    """The central square of side fraction × the shorter side."""
    y0, x0, side = _centre_box(*image.shape[:2], fraction)
    return image[y0:y0 + side, x0:x0 + side]


def heat_on_image(heat: np.ndarray, image_shape: tuple[int, ...], spec: dict) -> np.ndarray:
    """A heat map computed on the model's input placed back on the whole image: unchanged without centre_crop,
    else zero outside the central square the model read (returned at the image's size)."""
    fraction = spec.get("centre_crop")
    if not fraction:
        return heat
    h, w = image_shape[:2]
    y0, x0, side = _centre_box(h, w, fraction)
    full = np.zeros((h, w), np.float32)
    full[y0:y0 + side, x0:x0 + side] = cv2.resize(heat.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    return full


def prepare(images: list[np.ndarray], spec: dict) -> np.ndarray:
    """uint8 images of any size -> float32 NHWC batch as the card's model expects."""
    h, w = spec["size"]
    channels = int(spec.get("channels", 3))
    batch = np.empty((len(images), h, w, channels), np.float32)
    for i, image in enumerate(images):
        if spec.get("centre_crop"):
            image = centre_square(image, float(spec["centre_crop"]))
        image = to_channels(image, channels)
        interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR
        resized = cv2.resize(image, (w, h), interpolation=interp)
        batch[i] = resized.reshape(h, w, channels)
    return normalise(batch, spec.get("normalise", "unit"))


def dihedral_views(x: np.ndarray, k: int) -> list[np.ndarray]:
    """The first k of the 8 turns by 90° and mirror images of an (N, H, W, C) batch; the first is the batch itself."""
    turned = [np.rot90(x, r, axes=(1, 2)) for r in range(4)]
    return [np.ascontiguousarray(v) for v in (turned + [t[:, :, ::-1] for t in turned])[:k]]


def mean_over_views(predict, x: np.ndarray, k: int) -> dict:
    """predict(batch) -> {output: (N, n) probabilities}, run once on the first k dihedral views of the (N, H, W, C)
    batch x stacked together, averaged per image (card input.test_views)."""
    if k == 1:
        return predict(x)
    out = predict(np.concatenate(dihedral_views(x, k)))
    return {o: np.asarray(p).reshape(k, len(x), -1).mean(0) for o, p in out.items()}

"""Heat maps: Grad-CAM from features and gradients, and overlays of a map on an image."""
from __future__ import annotations

import cv2
import numpy as np


def gradcam_map(feats: np.ndarray, grads: np.ndarray, size, channels_last: bool = True) -> np.ndarray:
    """Grad-CAM from one image's feature maps and their gradients, upsampled to `size` (H, W), scaled to [0, 1]."""
    if not channels_last:
        feats, grads = np.moveaxis(feats, 0, -1), np.moveaxis(grads, 0, -1)
    weights = grads.mean(axis=(0, 1))
    cam = np.maximum((feats * weights).sum(axis=-1), 0).astype(np.float32)
    cam = cv2.resize(cam, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    top = float(cam.max())
    return cam / top if top > 0 else cam


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heat map (any size) over an RGB uint8 image with the jet colour map."""
    h, w = image.shape[:2]
    heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[:, :, ::-1]
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    return np.uint8(np.clip((1 - opacity) * rgb[:, :, :3] + opacity * colour, 0, 255))

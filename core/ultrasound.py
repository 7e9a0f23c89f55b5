"""What an ultrasound export looks like, and how to get at the picture inside it.

Exports carry black borders, a sector (fan) shape, burned-in text, calipers and coloured markers. `roi()` finds the
scanned region (largest bright-enough blob, holes filled so dark follicles stay inside), paints burned-in marks
over with the local median, and crops to the region; `looks_like_ultrasound()` gives reasons to doubt an input.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class ROI:
    grey: np.ndarray  # cropped, marks removed, uint8 H x W
    mask: np.ndarray  # scanned region within the crop (bool H x W)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image
    marks: np.ndarray  # burned-in marks found (bool, original size)

    @property
    def rgb(self) -> np.ndarray:
        return np.repeat(self.grey[:, :, None], 3, axis=2)


def to_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)


def burned_in_marks(image: np.ndarray) -> np.ndarray:
    """Text, calipers and markers: saturated colours other than the image's own tint, and small near-white strokes
    that stand out sharply from their surround."""
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2HSV)
    hue, sat, val = (hsv[:, :, i].astype(np.int16) for i in range(3))
    coloured = (sat > 90) & (val > 90)
    tinted = sat > 20
    if tinted.mean() > 0.2:  # a tinted grey image (blue, sepia): only hues far from the tint are marks
        tint = int(np.median(hue[tinted]))
        distance = np.abs(hue - tint)
        coloured &= np.minimum(distance, 180 - distance) > 15
    grey = to_grey(rgb)
    tophat = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)))
    strokes = ((grey > 235) & (tophat > 90)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    small = np.zeros(n, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= 80
    marks = (coloured | small[labels]).astype(np.uint8)
    return cv2.dilate(marks, np.ones((3, 3), np.uint8)).astype(bool)


def scan_mask(grey: np.ndarray) -> np.ndarray:
    """The scanned region: the largest blob of non-black pixels after closing, with its holes filled."""
    h, w = grey.shape
    smooth = cv2.medianBlur(grey, 5)
    k = max(3, (min(h, w) // 40) | 1)
    fg = cv2.morphologyEx((smooth > 12).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))  # drops text and thin lines on black
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.ones_like(grey, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == biggest).astype(np.uint8)
    if stats[biggest, cv2.CC_STAT_AREA] < 0.1 * h * w:
        return np.ones_like(grey, bool)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(blob)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled.astype(bool)


def roi(image: np.ndarray, pad: int = 2) -> ROI:
    """The scanned region of an ultrasound export: cropped, grey, with burned-in marks painted over."""
    grey = to_grey(image)
    marks = burned_in_marks(image)
    if marks.any():
        grey = cv2.inpaint(grey, marks.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    mask = scan_mask(grey)
    ys, xs = np.nonzero(mask)
    h, w = grey.shape
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + 1 + pad, w)
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + 1 + pad, h)
    return ROI(np.ascontiguousarray(grey[y0:y1, x0:x1]), mask[y0:y1, x0:x1], (x0, y0, x1, y1), marks)


TINT_SPREAD_DEG = 12.0  # one hue (a scanner's tinted grey map: 6° on PCOSGen's blue frames) vs several (Doppler, photos)


def hue_spread_deg(hues: np.ndarray) -> float:
    """Circular standard deviation, in degrees, of OpenCV hues (0-179)."""
    angles = hues.astype(np.float64) * np.pi / 90
    r = float(np.hypot(np.cos(angles).mean(), np.sin(angles).mean())) if hues.size else 1.0
    return float(np.degrees(np.sqrt(-2 * np.log(max(r, 1e-12)))))


def looks_like_ultrasound(image: np.ndarray) -> list[str]:
    """Reasons to doubt that the image is a B-mode ultrasound frame (empty list: nothing odd found)."""
    reasons = []
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    small = cv2.resize(np.ascontiguousarray(rgb[:, :, :3]), (128, 128), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    coloured = (hsv[:, :, 1] > 60) & (hsv[:, :, 2] > 60)
    colour_fraction = float(coloured.mean())
    if colour_fraction > 0.15 and hue_spread_deg(hsv[:, :, 0][coloured]) > TINT_SPREAD_DEG:
        reasons.append(f"{colour_fraction:.0%} of the image is strongly coloured; B-mode ultrasound is grey "
                       "(a colour Doppler overlay also triggers this)")
    grey = to_grey(small).astype(np.float32)
    if grey.mean() > 170:
        reasons.append("the image is mostly bright; ultrasound frames are mostly dark")
    texture = cv2.absdiff(grey, cv2.GaussianBlur(grey, (0, 0), 1.5))
    mask = grey > 20
    if mask.mean() < 0.1:
        reasons.append("the image is almost entirely black")
    elif float(texture[mask].mean()) < 2.0:
        reasons.append("the image lacks the grainy speckle texture of ultrasound")
    return reasons

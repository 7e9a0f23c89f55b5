"""Ultralytics YOLO detection and segmentation models (.pt built and trained here, never fetched).

predict() returns one dict per image: boxes (N, 4) xyxy in input pixels, scores (N,), labels (N,) indices into
the card's single output's labels, and masks (N, H, W) bool for segmentation models.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import PROJECT_ROOT  # noqa: F401  (core/__init__ sets YOLO_OFFLINE before ultralytics is imported)
from .base import Model, register


@register("ultralytics")
class YoloModel(Model):
    def __init__(self, card, path, device):
        super().__init__(card, path, device)
        from ultralytics import YOLO

        self.net = YOLO(str(path), task=card.get("yolo_task", "detect"))
        self.net.to(device)
        self._lock = threading.Lock()  # an Ultralytics predictor is not safe to share between threads

    def predict(self, images: list[np.ndarray], conf: float | None = None) -> list[dict]:
        size = self.card.input["size"]
        conf = self.card.get("conf", 0.25) if conf is None else conf
        bgr = [np.ascontiguousarray(im[:, :, ::-1]) if im.ndim == 3 else im for im in images]
        with self._lock:
            results = self.net.predict(
                bgr, imgsz=max(size), conf=conf, device=self.device, verbose=False,
                retina_masks=True, max_det=int(self.card.get("max_det", 300)),
            )
        out = []
        for r in results:
            item = {
                "boxes": r.boxes.xyxy.cpu().numpy().astype(np.float32),
                "scores": r.boxes.conf.cpu().numpy().astype(np.float32),
                "labels": r.boxes.cls.cpu().numpy().astype(int),
            }
            if r.masks is not None:
                item["masks"] = r.masks.data.cpu().numpy() > 0.5
            out.append(item)
        return out

    def predict_arrays(self, x):
        raise NotImplementedError("YOLO models take raw images: use predict()")

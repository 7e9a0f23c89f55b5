"""The model interface every backend implements."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..preprocess import mean_over_views, prepare

BACKENDS: dict[str, type["Model"]] = {}


def register(framework: str):
    def deco(cls):
        if framework in BACKENDS:
            raise KeyError(f"backend {framework!r} registered twice")
        BACKENDS[framework] = cls
        cls.framework = framework
        return cls

    return deco


def as_probabilities(raw: np.ndarray, n_labels: int) -> np.ndarray:
    """A model head's output as (N, n_labels) probabilities: one sigmoid unit becomes [1-p, p]."""
    raw = np.asarray(raw, np.float32).reshape(len(raw), -1)
    if raw.shape[1] == 1 and n_labels == 2:
        return np.concatenate([1.0 - raw, raw], axis=1)
    if raw.shape[1] != n_labels:
        raise ValueError(f"model output has {raw.shape[1]} values, card lists {n_labels} labels")
    return raw


class Model:
    """A loaded model: predict on a batch, class names, input spec, device.

    Classifier backends return {output: (N, n_labels) probabilities}; explain() returns a Grad-CAM map in [0, 1]
    at the model's input resolution. Detectors (ultralytics) return one dict of numpy arrays per image.
    """

    framework = "base"

    def __init__(self, card, path: Path, device: str):
        self.card = card
        self.path = path
        self.device = device

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def classes(self) -> dict[str, list[str]]:
        return self.card.classes

    @property
    def input_spec(self) -> dict:
        return self.card.input

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        return prepare(images, self.card.input)

    def features(self, images: list[np.ndarray], layer: str) -> np.ndarray:
        """(N, D) activations of a named layer on the images as prepared (one view), e.g. for a typicality check."""
        raise NotImplementedError(f"{self.framework} models give no layer features")

    def predict(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """uint8 images (any size) -> {output: (N, n_labels) probabilities}, averaged over the card's test_views."""
        return mean_over_views(self.predict_arrays, self.prepare(images), int(self.card.input.get("test_views", 1)))

    def predict_arrays(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def explain(self, image: np.ndarray, output: str, label: str | None = None) -> np.ndarray:
        """Grad-CAM heat map (H_in x W_in, 0–1) for one label of one output (default: the predicted one)."""
        raise NotImplementedError(f"{self.framework} models have no gradient explanation")

    def _outputs_dict(self, raw) -> dict[str, np.ndarray]:
        names = self.card.outputs
        if isinstance(raw, dict):
            raw = [raw[n] for n in names]
        elif not isinstance(raw, (list, tuple)):
            raw = [raw]
        if len(raw) != len(names):
            raise ValueError(f"{self.id}: model has {len(raw)} outputs, card lists {names}")
        return {n: as_probabilities(np.asarray(r), len(self.card.classes[n])) for n, r in zip(names, raw)}

"""Keras 3 models (.keras, legacy .h5) on TensorFlow, or on PyTorch with KERAS_BACKEND=torch.

A GPU host with PyTorch but no TensorFlow runs the same .keras files on the torch backend; the choice is made
once per process, before keras is first imported.
"""
from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from ..explain import gradcam_map
from ..preprocess import heat_on_image
from .base import Model, register

_setup_lock = threading.Lock()
_ready = False


def keras_backend() -> str:
    """The backend keras runs on in this process: the env var if set, else TensorFlow if installed, else torch."""
    if "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = "tensorflow" if importlib.util.find_spec("tensorflow") else "torch"
    return os.environ["KERAS_BACKEND"]


def import_keras():
    """Import keras once, with TensorFlow's GPU memory growth set before its first op."""
    global _ready
    with _setup_lock:
        if not _ready:
            if keras_backend() == "tensorflow":
                import tensorflow as tf

                for gpu in tf.config.list_physical_devices("GPU"):
                    tf.config.experimental.set_memory_growth(gpu, True)
            _ready = True
    import keras

    return keras


def _keras_device(device: str) -> str:
    if device == "cpu":
        return "cpu:0"
    index = device.split(":", 1)[1] if ":" in device else "0"
    return f"{'gpu' if keras_backend() == 'tensorflow' else 'cuda'}:{index}"


@register("keras")
class KerasModel(Model):
    def __init__(self, card, path, device):
        super().__init__(card, path, device)
        self.keras = import_keras()
        self.backend = keras_backend()
        self._kdevice = _keras_device(device)
        with self.keras.device(self._kdevice):
            self.net = self.keras.saving.load_model(path, compile=False)
        if self.backend == "tensorflow":
            import tensorflow as tf

            # eager model(x) is 5-15x slower on CPU than a compiled function
            self._forward = tf.function(lambda x: self.net(x, training=False), reduce_retracing=True)
        else:
            self._forward = None
        self._feature_nets: dict = {}

    def predict_arrays(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.keras.device(self._kdevice):
            if self._forward is not None:
                raw = self._forward(x)
            else:
                import torch

                with torch.no_grad():
                    raw = self.net(x, training=False)
        return self._outputs_dict(_to_numpy(raw))

    def features(self, images, layer):
        keras = self.keras
        if layer not in self._feature_nets:
            self._feature_nets[layer] = keras.Model(self.net.inputs, self.net.get_layer(layer).output)
        with keras.device(self._kdevice):
            out = self._feature_nets[layer]([self.prepare(images)], training=False)
        out = np.asarray(out.detach().cpu() if hasattr(out, "detach") else out, np.float32)
        return out.reshape(len(out), -1)

    def explain(self, image, output, label=None):
        layer_name = (self.card.get("explain") or {}).get("layer")
        if not layer_name:
            raise NotImplementedError(f"{self.id}: card names no [explain] layer")
        x = self.prepare([image])
        keras = self.keras
        # net.output keeps a multi-output model's dict by name; net.outputs is a list in Keras' own order
        # (alphabetical: quality before stage), which the card's order does not match
        sub = keras.Model(self.net.inputs, [self.net.get_layer(layer_name).output, self.net.output])
        out_index = self.card.outputs.index(output)
        labels = self.card.classes[output]
        with keras.device(self._kdevice):
            if self.backend == "tensorflow":
                import tensorflow as tf

                with tf.GradientTape() as tape:
                    feats, outs = sub(tf.constant(x), training=False)
                    score, idx = _score(outs, output, out_index, labels, label)
                grads = tape.gradient(score, feats)
                feats, grads = feats.numpy(), grads.numpy()
            else:
                import torch

                with torch.enable_grad():
                    feats, outs = sub(x, training=False)
                    score, idx = _score(outs, output, out_index, labels, label)
                    grads = torch.autograd.grad(score, feats)[0]
                feats, grads = feats.detach().cpu().numpy(), grads.detach().cpu().numpy()
        return heat_on_image(gradcam_map(feats[0], grads[0], self.card.input["size"]), image.shape, self.card.input)


def _score(outs, output, out_index, labels, label):
    """The scalar whose gradient Grad-CAM follows: probability of the label (a sigmoid unit's complement for 0)."""
    out = outs[output] if isinstance(outs, dict) else outs[out_index] if isinstance(outs, (list, tuple)) else outs
    probs = out[0]
    if probs.shape[-1] == 1:
        p = float(_to_numpy(probs)[0])
        want = labels.index(label) if label else int(p >= 0.5)
        return (probs[0] if want == 1 else 1 - probs[0]), want
    want = labels.index(label) if label else int(np.argmax(_to_numpy(probs)))
    return probs[want], want


def _to_numpy(raw):
    if isinstance(raw, dict):
        return {k: _to_numpy(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return [_to_numpy(r) for r in raw]
    if hasattr(raw, "detach"):
        return raw.detach().cpu().numpy()
    return np.asarray(raw)

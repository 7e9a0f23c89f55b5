"""PyTorch models: a state dict loaded with weights_only=True into an architecture named by the card
(`architecture = "module:function"`, `arch_kwargs = {...}`), or a TorchScript file (`format = "torchscript"`).
Models return probabilities (a tensor, or a tuple/dict in the card's output order), NCHW input."""
from __future__ import annotations

import importlib

import numpy as np
import torch

from ..explain import gradcam_map
from ..preprocess import heat_on_image
from .base import Model, register


def build_architecture(card) -> torch.nn.Module:
    module_name, func = card.get("architecture").split(":")
    if not module_name.startswith("core."):
        raise ValueError(f"{card.id}: architecture must live in this project's core package, not {module_name!r}")
    return getattr(importlib.import_module(module_name), func)(**card.get("arch_kwargs", {}))


@register("torch")
class TorchModel(Model):
    def __init__(self, card, path, device):
        super().__init__(card, path, device)
        if card.get("format") == "torchscript":
            self.net = torch.jit.load(str(path), map_location=device)
        else:
            self.net = build_architecture(card)
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        self.net.to(device).eval()

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self.device)

    def predict_arrays(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            raw = self.net(self._tensor(x))
        return self._outputs_dict(_to_numpy(raw))

    def explain(self, image, output, label=None):
        layer_name = (self.card.get("explain") or {}).get("layer")
        if not layer_name:
            raise NotImplementedError(f"{self.id}: card names no [explain] layer")
        layer = dict(self.net.named_modules())[layer_name]
        captured = {}
        handle = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("feats", o))
        try:
            with torch.enable_grad():
                raw = self.net(self._tensor(self.prepare([image])))
                outs = self._as_list(raw)
                probs = outs[self.card.outputs.index(output)][0]
                labels = self.card.classes[output]
                if probs.numel() == 1:
                    want = labels.index(label) if label else int(float(probs) >= 0.5)
                    score = probs.reshape(()) if want == 1 else 1 - probs.reshape(())
                else:
                    want = labels.index(label) if label else int(probs.argmax())
                    score = probs[want]
                grads = torch.autograd.grad(score, captured["feats"])[0]
        finally:
            handle.remove()
        feats = captured["feats"][0].detach().cpu().numpy()
        heat = gradcam_map(feats, grads[0].detach().cpu().numpy(), self.card.input["size"], channels_last=False)
        return heat_on_image(heat, image.shape, self.card.input)

    def _as_list(self, raw):
        if isinstance(raw, dict):
            return [raw[n] for n in self.card.outputs]
        return list(raw) if isinstance(raw, (list, tuple)) else [raw]


def _to_numpy(raw):
    if isinstance(raw, dict):
        return {k: v.detach().cpu().numpy() for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return [r.detach().cpu().numpy() for r in raw]
    return raw.detach().cpu().numpy()

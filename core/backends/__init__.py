"""Framework backends behind one interface. Each module registers its class in BACKENDS by framework name."""
from __future__ import annotations

import importlib

from .base import BACKENDS, Model, register

_MODULES = {"keras": ".keras", "torch": ".torch", "ultralytics": ".ultralytics"}


def backend_for(framework: str) -> type[Model]:
    if framework not in BACKENDS:
        if framework not in _MODULES:
            raise KeyError(f"No backend for framework {framework!r}; known: {', '.join(sorted(_MODULES))}")
        importlib.import_module(_MODULES[framework], __name__)
    return BACKENDS[framework]


__all__ = ["BACKENDS", "Model", "backend_for", "register"]

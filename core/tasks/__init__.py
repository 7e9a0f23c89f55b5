"""Per-task logic. Each model id belongs to one task module in this package, which provides:

  train(model_id, data: Path, device: str, epochs: int | None, seed: int) -> Path   (writes weights/<id>/)
  evaluate(model_id, path: Path, name: str, split: str | None, device: str) -> dict  (CLI JSON contract)
  predict_images(model_id, images: list[InputImage], device: str | None = None) -> list[Prediction]
  example_images(model_id, n: int) -> list[np.ndarray]   (generated inputs for bench and tests)
and optionally bench_case(model_id, device) -> dict(run_one, run_batch, batch) to override core.bench's default.
"""
from __future__ import annotations

import importlib
from types import ModuleType

TASK_OF_MODEL = {
    "embryo-grade": "embryo",
    "embryo-dish": "embryo",
    "sperm-seg": "sperm",
    "sperm-head": "sperm",
    "pcos": "pcos",
    "timelapse-stage": "timelapse",
}


def task_module(model_id: str) -> ModuleType:
    if model_id not in TASK_OF_MODEL:
        import difflib

        close = difflib.get_close_matches(model_id, TASK_OF_MODEL, n=3)
        raise KeyError(f"Unknown model id {model_id!r}." + (f" Did you mean: {', '.join(close)}?" if close else ""))
    return importlib.import_module(f"{__name__}.{TASK_OF_MODEL[model_id]}")

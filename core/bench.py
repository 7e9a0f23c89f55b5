"""Speed: cold load, warm per-input latency at batch 1 through the pages' path, batch throughput, and the seeds'
reference backbones (Keras ResNet101@224, InceptionV3@299, untrained) measured in the same run."""
from __future__ import annotations

import gc
import sys
import time

import numpy as np

from . import registry
from .device import describe, resolve

REFERENCES = {"resnet101_224": ("ResNet101", 224), "inceptionv3_299": ("InceptionV3", 299)}


def time_calls(fn, warmup: int = 2, min_reps: int = 10, budget_s: float = 8.0) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - start > budget_s * 3:
            break
    return times


def summarise(one_ms: list[float], batch_ms: list[float], batch: int) -> dict:
    return {
        "p50_ms": round(float(np.percentile(one_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(one_ms, 95)), 2),
        "batch": batch,
        "throughput_ips": round(batch / (float(np.median(batch_ms)) / 1000), 1),
        "reps": len(one_ms),
    }


def default_case(model_id: str, device: str, module) -> dict:
    from .imageio import InputImage

    batch = 16
    images = [InputImage(im, f"generated-{i}.png", "", 0, "PNG", "RGB", 8)
              for i, im in enumerate(module.example_images(model_id, batch))]
    return {
        "run_one": lambda: module.predict_images(model_id, images[:1], device=device),
        "run_batch": lambda: module.predict_images(model_id, images, device=device),
        "batch": batch,
    }


def bench_model(model_id: str, device: str) -> dict:
    from .tasks import task_module

    registry.REGISTRY.clear()
    gc.collect()
    t0 = time.perf_counter()
    registry.load(model_id, device)
    load_s = time.perf_counter() - t0
    module = task_module(model_id)
    case = module.bench_case(model_id, device) if hasattr(module, "bench_case") else default_case(model_id, device, module)
    one = time_calls(case["run_one"])
    many = time_calls(case["run_batch"], warmup=1, min_reps=3)
    return {"load_s": round(load_s, 3), **summarise(one, many, case["batch"]), **case.get("notes", {})}


def bench_reference(name: str, device: str) -> dict:
    from .backends.keras import _keras_device, import_keras, keras_backend

    keras = import_keras()
    arch, size = REFERENCES[name]
    with keras.device(_keras_device(device)):
        t0 = time.perf_counter()
        net = getattr(keras.applications, arch)(weights=None, input_shape=(size, size, 3), classes=2)
        load_s = time.perf_counter() - t0
        if keras_backend() == "tensorflow":
            import tensorflow as tf

            fwd = tf.function(lambda x: net(x, training=False), reduce_retracing=True)
        else:
            import torch

            def fwd(x):
                with torch.no_grad():
                    return net(x, training=False)

        batch = 8
        one = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
        many = np.repeat(one, batch, axis=0)
        t_one = time_calls(lambda: np.asarray(fwd(one)), min_reps=8, budget_s=5)
        t_many = time_calls(lambda: np.asarray(fwd(many)), warmup=1, min_reps=2, budget_s=5)
    del net
    gc.collect()
    return {"load_s": round(load_s, 3), **summarise(t_one, t_many, batch)}


def run(model_ids: list[str] | None, device: str | None, references: bool = True, log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    device = resolve(device)
    ids = model_ids or [c.id for c in registry.cards()]
    result = {"device": f"{device}: {describe(device)['name']}", "models": {}, "references": {}}
    if references:
        for ref in REFERENCES:
            log(f"bench reference {ref} on {device} …")
            result["references"][ref] = bench_reference(ref, device)
    for model_id in ids:
        log(f"bench {model_id} on {device} …")
        stats = bench_model(model_id, device)
        stats["vs"] = {ref: round(r["p50_ms"] / stats["p50_ms"], 2) for ref, r in result["references"].items()}
        result["models"][model_id] = stats
    return result

"""Which compute device to use, and what it is."""
from __future__ import annotations

import functools
import os
import platform

import psutil


@functools.cache
def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def best_device() -> str:
    """CUDA when present (and not disabled with REPRO_DEVICE=cpu), else CPU."""
    wanted = os.environ.get("REPRO_DEVICE", "").lower()
    if wanted in ("cpu", "cuda"):
        return "cuda" if wanted == "cuda" and cuda_available() else "cpu"
    return "cuda" if cuda_available() else "cpu"


def resolve(device: str | None) -> str:
    if device in (None, "", "auto"):
        return best_device()
    if device.startswith("cuda") and not cuda_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available on this machine.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"Unknown device {device!r}: use 'cpu' or 'cuda'.")
    return device


@functools.cache
def describe(device: str | None = None) -> dict:
    """Name and memory of the device, for the sidebar, the home page and bench output."""
    device = device or best_device()
    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(0)
        return {"device": "cuda", "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "device": "cpu",
        "name": f"{name} ({psutil.cpu_count(logical=True)} cores)",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }

"""Everything the dashboard does that can be tested without Streamlit (this package never imports it)."""
import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = Path(os.environ.get("REPRO_WEIGHTS_DIR", PROJECT_ROOT / "weights"))
DISCLAIMER = (
    "Research demonstration only, not a medical device. Outputs must not be used for diagnosis or "
    "treatment decisions; every figure names the data it was measured on."
)

# Ultralytics must never reach the network: set before it is first imported anywhere.
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(PROJECT_ROOT / ".ultralytics"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _TorchDynamoBeforeTensorflow(importlib.abc.MetaPathFinder):
    """TensorFlow 2.21 and torch 2.14 in one process: importing torch._dynamo (which torch.optim and Ultralytics
    pull in) *after* tensorflow segfaults; before it, both work. So the first import of tensorflow imports
    torch._dynamo first."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            sys.meta_path.remove(self)
            if importlib.util.find_spec("torch") is not None:
                import torch._dynamo  # noqa: F401
        return None


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _TorchDynamoBeforeTensorflow())

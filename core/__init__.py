"""Everything the dashboard does that can be tested without Streamlit (this package never imports it)."""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = Path(os.environ.get("REPRO_WEIGHTS_DIR", PROJECT_ROOT / "weights"))
DISCLAIMER = (
    "Research demonstration only, not a medical device. Outputs must not be used for diagnosis or "
    "treatment decisions; every figure names the data it was measured on."
)

# Ultralytics must never reach the network: set before it is first imported anywhere.
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_CONFIG_DIR", str(PROJECT_ROOT / ".ultralytics"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

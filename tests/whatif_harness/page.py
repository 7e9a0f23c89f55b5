"""A minimal page embedding the what-if panel, for its AppTest, browser test and latency benchmark.

With WHATIF_WEIGHTS set to a folder made by tests/whatif_harness/models.py it serves the registry model
WHATIF_MODEL (default whatif-keras) from there; without it, a fixed numpy stand-in that needs no training
(probability of "present" rises with the brightest 8x8 patch). Run with PYTHONPATH at the repository root.
"""
import os
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from core import synthetic
from core.registry import Registry
from core.results import Wording
from core.whatif import model_explain, model_predict, model_predict_batch
from ui.common import read_upload
from ui.whatif import whatif_panel

st.set_page_config(page_title="What-if harness", layout="wide")
st.title("What-if harness")


@st.cache_resource
def registry_model(root: str, model_id: str):
    return Registry(Path(root)).load(model_id)


def stand_in_predict(image):
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    peak = float(cv2.blur(grey, (8, 8)).max())
    p = 1 / (1 + np.exp(-(peak - 190) / 8))
    return {"spot": {"no_spot": 1 - p, "present": p}}  # an underscore, as real labels have ("not_good")


def stand_in_explain(image, output):
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    heat = np.maximum(cv2.blur(grey, (8, 8)) - 150, 0)
    return heat / max(float(heat.max()), 1.0)


upload = st.file_uploader("Image", type=["png", "jpg", "jpeg"], key="harness-upload")
image = read_upload(upload)
pixels = image.pixels if image is not None else synthetic.bright_spot(True, 192, seed=3, side=40)[0]
if st.session_state.get("harness-hide"):  # a run without the panel, as a page's run after a bad upload
    st.caption("The panel is hidden in this run.")
elif os.environ.get("WHATIF_WEIGHTS"):
    model = registry_model(os.environ["WHATIF_WEIGHTS"], os.environ.get("WHATIF_MODEL", "whatif-keras"))
    whatif_panel(pixels, model_predict(model), key="harness", explain=model_explain(model),
                 predict_batch=model_predict_batch(model), cache_key=f"{model.id}@{model.card.version}")
else:
    worded = Wording(titles={"spot": "Bright spot"}, labels={"spot": {"present": "spot present"}}, value="share")
    whatif_panel(pixels, stand_in_predict, key="harness", explain=stand_in_explain, cache_key="stand-in@1",
                 ultrasound=os.environ.get("WHATIF_ULTRASOUND") == "1",
                 wording=worded if os.environ.get("WHATIF_WORDING") == "1" else None,
                 thresholds={"spot": float(os.environ["WHATIF_THRESHOLD"])} if "WHATIF_THRESHOLD" in os.environ else None)

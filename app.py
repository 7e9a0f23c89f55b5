"""Entry point: navigation over app_pages/, and the chrome every page shares (disclaimer, device, loaded models)."""
import os
from pathlib import Path

import streamlit as st

from core import DISCLAIMER
from core.registry import REGISTRY
from ui.common import device_line
from ui.records import case_controls, require_login

ROOT = Path(__file__).parent
# (file, title, icon, section). A page appears only when its file exists, i.e. when its capability exists.
PAGES = [
    ("app_pages/home.py", "Home", ":material/home:", "Overview"),
    ("app_pages/embryo.py", "Embryo grading", ":material/egg:", "Tasks"),
    ("app_pages/sperm.py", "Sperm heads", ":material/biotech:", "Tasks"),
    ("app_pages/pcos.py", "PCOS ultrasound", ":material/radiology:", "Tasks"),
    ("app_pages/timelapse.py", "Time-lapse staging", ":material/timeline:", "Tasks"),
    ("app_pages/metrics.py", "Metrics", ":material/monitoring:", "Models"),
    ("app_pages/confusion.py", "Confusion matrices", ":material/grid_on:", "Models"),
    ("app_pages/batch.py", "Batch scoring", ":material/dataset:", "Records"),
    ("app_pages/history.py", "History", ":material/history:", "Records"),
]



@st.cache_resource
def preload_models() -> list[str]:
    """Warm the models named in REPRO_PRELOAD ("all" or comma-separated ids) once per server process."""
    wanted = os.environ.get("REPRO_PRELOAD", "").strip()
    ids = REGISTRY.ids() if wanted == "all" else [i.strip() for i in wanted.split(",") if i.strip()]
    REGISTRY.preload(ids)
    return ids


st.set_page_config(page_title="Reproductive-medicine image AI", page_icon=":material/biotech:", layout="wide")

sections: dict[str, list] = {}
for file, title, icon, section in PAGES:
    if (ROOT / file).is_file():
        sections.setdefault(section, []).append(st.Page(file, title=title, icon=icon, default=file == "app_pages/home.py"))
page = st.navigation(sections)

case_slot = st.sidebar.container()  # first: "set a case code in the sidebar" must find it without scrolling
with st.sidebar:
    st.caption(DISCLAIMER)
    st.caption(device_line())
require_login()  # a sign-in form and stop when .streamlit/secrets.toml configures users; nothing otherwise
preload_models()
with case_slot:
    case_controls()

page.run()

with st.sidebar:  # after the page ran, so a model it just loaded is listed
    loaded = REGISTRY.status()
    if loaded:
        st.caption("Loaded: " + ", ".join(f"{s.model_id} ({s.device})" for s in loaded))

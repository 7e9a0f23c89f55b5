import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from core import DISCLAIMER, metrics, registry
from ui.common import device_line, glossary

st.title("Reproductive-medicine image AI")
st.markdown(
    "This dashboard runs image models for embryo grading, sperm head morphology, PCOS ovarian ultrasound and "
    "time-lapse embryo staging, trained here on public datasets. Each model's measured metrics, confusion "
    "matrices and single-image what-if tests sit beside it, so you can judge how far to trust it."
)
st.warning(DISCLAIMER, icon=":material/medical_information:")
st.markdown(f"**{device_line()}**")

TASKS = [  # (page, label, icon, what it gives)
    ("app_pages/embryo.py", "Embryo grading", ":material/egg:",
     "Stage (cleavage or blastocyst) and quality from one embryo photo, or every embryo of a dish image."),
    ("app_pages/sperm.py", "Sperm heads", ":material/biotech:",
     "Every head of a stained field found and measured in µm against the WHO ranges; normal forms and head shape."),
    ("app_pages/pcos.py", "PCOS ultrasound", ":material/radiology:",
     "PCOS-likeness of an ovarian ultrasound frame, and its antral follicles counted and measured in mm."),
    ("app_pages/timelapse.py", "Time-lapse staging", ":material/timeline:",
     "A stage timeline and morphokinetic event times (t2 … tEB) from one embryo's time-lapse recording."),
]
st.subheader("Tasks")
for col, (file, label, icon, what) in zip([*st.columns(2), *st.columns(2)], TASKS):  # 2 × 2: names fit at 1024 px
    with col:
        try:
            st.page_link(file, label=f"**{label}**", icon=icon)
        except StreamlitAPIException:  # the page is not in the navigation (its file is missing, or Home runs alone)
            st.markdown(f"**{label}**")
        st.caption(what)

st.subheader("Registered models")
try:
    cards = registry.cards()
except registry.CardError as exc:
    st.error(f"A model card could not be read: {exc}")
    cards = []
if not cards:
    st.info("No models are installed in `weights/` yet. Train one with `python -m core train MODEL_ID --data PATH`.")
else:
    loaded = {s.model_id: s for s in registry.status()}
    headlines, details = [], []
    for c in cards:
        s = loaded.get(c.id)
        measured = metrics.headline(c)
        headlines.append({"model": f"{c.title} ({c.id})", "measured on": measured[0] if measured else "—",
                          "headline": measured[1] if measured else "—"})
        details.append({
            "model": c.id,
            "version": c.version,
            "status": f"loaded on {s.device} in {s.load_s:.2f} s" if s else "not loaded",
            "outputs": "; ".join(f"{o}: {' / '.join(labels)}" for o, labels in c.classes.items()),
            "framework": c.framework,
            "input": f"{c.input.get('size')} × {c.input.get('channels', 3)} ch",
        })
    st.table(pd.DataFrame(headlines).set_index("model"))
    st.caption("Headline figures are measured on each model's own held-out set, named beside them (data the shipped "
               "file was not trained on), balanced accuracy first. The cross-validations by fold models (HuSHeM for "
               "sperm-head, leave-one-embryo-out for timelapse-stage) and every other figure are on the Metrics page "
               "with their 95 % intervals and splits. Models load on first use and stay cached for every browser "
               "session.")
    with st.expander("Versions, status and inputs"):
        st.dataframe(pd.DataFrame(details), hide_index=True, width="stretch")
    glossary()

import pandas as pd
import streamlit as st

from core import DISCLAIMER, metrics, registry
from ui.common import device_line

st.title("Reproductive-medicine image AI")
st.markdown(
    "This dashboard runs image models for embryo grading, sperm head morphology, PCOS ovarian ultrasound and "
    "time-lapse embryo staging, trained here on public datasets. Each model's measured metrics, confusion "
    "matrices and single-image what-if tests sit beside it, so you can judge how far to trust it."
)
st.warning(DISCLAIMER, icon=":material/medical_information:")
st.markdown(f"**{device_line()}**")

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
    rows = []
    for c in cards:
        s = loaded.get(c.id)
        measured = metrics.headline(c)
        rows.append({
            "model": c.id,
            "measured on": measured[0] if measured else "—",
            "headline": measured[1] if measured else "—",
            "title": c.title,
            "version": c.version,
            "status": f"loaded on {s.device} in {s.load_s:.2f} s" if s else "not loaded",
            "outputs": "; ".join(f"{o}: {' / '.join(labels)}" for o, labels in c.classes.items()),
            "framework": c.framework,
            "input": f"{c.input.get('size')} × {c.input.get('channels', 3)} ch",
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"headline": st.column_config.TextColumn(width=560)})
    st.caption("Headline figures are on data the model was not trained on (cross-validation for sperm-head, "
               "leave-one-embryo-out for timelapse-stage); the Metrics page has every measured figure with its 95 % "
               "interval and the split it came from. Models load on first use and stay cached for every browser "
               "session.")

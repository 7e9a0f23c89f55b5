import pandas as pd
import streamlit as st

from core import DISCLAIMER, registry
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
        headline = next(iter(c.metrics.items()), None)
        rows.append({
            "model": c.id,
            "title": c.title,
            "framework": c.framework,
            "version": c.version,
            "outputs": "; ".join(f"{o}: {' / '.join(labels)}" for o, labels in c.classes.items()),
            "input": f"{c.input.get('size')} × {c.input.get('channels', 3)} ch",
            "measured on": headline[0] if headline else "—",
            "headline": ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in list(headline[1].items())[:3]) if headline else "—",
            "status": f"loaded on {s.device} in {s.load_s:.2f} s" if s else "not loaded",
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Models load on first use and stay cached for every browser session. Metrics pages show each "
               "figure with its confidence interval and the data split it came from.")

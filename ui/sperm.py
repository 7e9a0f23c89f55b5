"""The sperm pages' shared pieces: the calibration inputs and a field's (or several fields') shares of normal forms."""
import pandas as pd
import streamlit as st

from core import morphometry
from core.tasks.sperm import defect_counts

def field_settings(key: str, disabled: bool = False, where=st) -> tuple[float, bool]:
    """The µm per pixel and the acrosome criterion of a field (or of every field of a batch); `where`: a column."""
    um = where.number_input(
        "Calibration (µm per pixel)", min_value=morphometry.UM_PER_PX_RANGE[0], max_value=morphometry.UM_PER_PX_RANGE[1],
        value=morphometry.DEFAULT_UM_PER_PX, step=0.001,
        format="%.4f", key=f"{key}_um_per_px", disabled=disabled,
        help="Measure a stage micrometer with your microscope and camera: known length in µm divided by its length in "
             f"pixels. The default {morphometry.DEFAULT_UM_PER_PX} µm/pixel is an estimate for the Sperm Parsing v2 "
             "fields (1280×1024), not a calibration of yours.")
    acrosome = where.checkbox("Use acrosome criterion", value=False, disabled=disabled, key=f"{key}_acrosome",
                              help=morphometry.ACROSOME_NOTE)
    return um, acrosome


# the strict figure first: the classifier alone runs well above it (773 held-out Sperm Parsing heads at the default
# calibration: 47 % against 27 %)
SUMMARY_FIGURES = (("both", "Normal by both (strict)", "normal by the classifier and within the WHO head ranges, "
                                                       "as strict criteria count a head: any doubt is abnormal"),
                   ("who", "Within WHO ranges", "length, width, length/width and vacuoles inside the WHO ranges"),
                   ("classifier", "Normal (classifier)", "the head classifier's normal/abnormal call on the head "
                                                         "crop (it does not see size)"))
LIMIT_BADGES = {"below": ":red-badge[below {limit} %]", "at or above": ":green-badge[at or above {limit} %]",
                "too few heads to tell": ":gray-badge[too few heads to tell]",
                morphometry.UNDER_WHO_COUNT: f":gray-badge[not judged: under {morphometry.WHO_MIN_ASSESSED} heads]"}


def summary_view(summary: dict, rows: list[dict]) -> None:
    """Heads scored and the three shares of normal forms with their intervals, against the 4 % limit, and the defects
    counted (one field, or core.tasks.sperm.pooled_normal_forms of several, with all their heads' rows)."""
    limit = f"{morphometry.WHO_REFERENCE['normal_forms_lower_limit_pct']:.0f}"
    cols = st.columns(4)
    cols[0].metric("Heads scored", f"{summary['n_scored']} of {summary['n_heads']}",
                   help="Heads found" + (f" in {summary['n_fields']} fields" if "n_fields" in summary else "")
                        + "; those touching the image border (or not heads by your call) are not scored.")
    for col, (key, label, meaning) in zip(cols[1:], SUMMARY_FIGURES):
        if summary.get("n_called_by_reviewer") and key != "who":
            label, meaning = label.replace("classifier", "reviewed"), meaning + ", replaced by your calls where made"
        pct, interval = summary.get(f"pct_normal_{key}"), summary.get(f"ci95_normal_{key}")
        col.metric(label, "—" if pct is None else f"{pct:.0f} %", help=meaning.capitalize() + ".")
        if pct is not None and interval:
            col.markdown(LIMIT_BADGES[summary[f"vs_lower_limit_{key}"]].format(limit=limit)
                         + f"  \n95 % interval {interval[0]:.1f}–{interval[1]:.1f} %")  # as the badge judged it
    st.caption(f"Lower reference limit of normal forms: {limit} % (WHO 2021), for at least "
               f"{morphometry.WHO_MIN_ASSESSED} assessed spermatozoa: under that no badge judges it (pool fields: give "
               "them one case code here, or score them together in Batch scoring). A share is only known within its 95 % interval; from "
               f"{morphometry.WHO_MIN_ASSESSED} heads the badge says below or above the limit only when the whole "
               "interval is. All three figures judge the head "
               "alone (not the neck, midpiece or tail), so they can be higher than a full strict-criteria count. "
               "The classifier does not see head size (every crop is scaled to the head); the WHO ranges depend on "
               "the calibration" + (" and here include the acrosome" if summary["acrosome_criterion"] else "") + ".")
    defects = defect_counts(rows, bool(summary.get("acrosome_criterion")))
    if defects:
        with st.expander(f"Defects counted ({summary['n_scored']} scored heads)"):
            st.dataframe(pd.DataFrame(defects), hide_index=True, width="stretch")
            st.caption("A head can show several. The classifier's shapes are HuSHeM's classes (tapered, pyriform, "
                       "amorphous); the WHO departures depend on the calibration.")

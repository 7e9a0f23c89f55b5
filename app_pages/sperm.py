"""Sperm heads: every head of a stained field segmented, measured in µm against WHO ranges and classified; or one
head crop classified directly."""
import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core import morphometry, registry
from core.explain import overlay
from core.imageio import InputImage
from core.results import Prediction, Wording, csv_bytes
from core.tasks import sperm as task
from ui.common import (UPLOAD_TYPES, ask_to_start, card_expander, escape_markdown, is_handed, read_handed, read_upload,
                       training_notice, with_warning)
from ui.records import adopt, case_records, earlier_review, record_prediction, recorded_case
from ui.sperm import field_settings, summary_view

MODES = ["Auto (by image size)", "Full field", "Single head crop"]
SHOWN = {"head": "head", "class": "classifier", "reviewer": "your call", "p_normal": "P(normal)",  # verdicts first
         "outputs_disagree": "shape disagrees", "who_normal": "within WHO ranges",
         "at_border": "at border (not scored)", "who_outside": "outside WHO range", "shape": "shape",
         "length_um": "length (µm)", "width_um": "width (µm)", "ratio": "length/width", "area_um2": "area (µm²)",
         "perimeter_um": "perimeter (µm)", "ellipticity": "ellipticity", "acrosome_pct": "acrosome (% head)",
         "vacuole_count": "vacuoles", "vacuole_pct": "vacuoles (% head)"}

st.title("Sperm head morphology")
st.markdown(
    "Upload a **stained bright-field field** (e.g. Papanicolaou or Diff-Quik, 100× objective) to find every sperm "
    "head, measure it in micrometres against the WHO reference ranges and classify it; the page gives the "
    "share of normal forms by the classifier, by the WHO head ranges and by both, with their 95 % intervals. A "
    "**single-head crop** is classified (a stained one centred on its head first). Both are aids for your own "
    "reading of the slide."
)


def available(model_id: str) -> registry.Card | None:
    try:
        return registry.card(model_id)
    except (KeyError, registry.CardError):
        return None


SEG_CARD, HEAD_CARD = available(task.SEG), available(task.HEAD)
# the field what-if follows the classifier's share of normal forms among the scored heads, not a probability
FIELD_WORDING = Wording(titles={"normal_forms": "Scored heads"}, value="share of the scored heads",
                       labels={"normal_forms": {"normal": "called normal", "abnormal": "called abnormal"}})
if SEG_CARD is None and HEAD_CARD is None:
    st.warning("Neither sperm model is installed (`sperm-seg`, `sperm-head`). Train them with "
               "`python -m core train sperm-seg|sperm-head --data …`.", icon=":material/warning:")
    st.stop()


# --- inputs ---------------------------------------------------------------------------------------------------------
def input_ui() -> tuple[InputImage | None, bool, float, bool]:
    """The upload, whether it is read as one head crop, the calibration and the acrosome criterion."""
    left, right = st.columns([2, 1])
    with left:
        if is_handed("sperm"):
            image = read_handed()
        else:
            image = read_upload(st.file_uploader("Micrograph (field or single head)", type=UPLOAD_TYPES,
                                                 key="sperm_upload"))
    with right:
        mode = st.radio("Image type", MODES, key="sperm_mode",
                        help=f"Auto treats images up to {task.AUTO_CROP_MAX_SIDE} px on their long side as one "
                             "head crop, larger ones as a field.")
        single = mode == MODES[2] or (mode == MODES[0] and image is not None and task.is_single_head(image.pixels))
        um, acrosome = field_settings("sperm", disabled=single)
        if single:
            st.caption("Calibration and the acrosome criterion apply to whole fields: a single crop is classified, "
                       "not measured.")
    return image, single, um, acrosome


# --- the page's predictions (one place each) ------------------------------------------------------------------------
@st.cache_data(show_spinner="Finding heads…", max_entries=16)
def segmented(pixels_sha: str, version: str, _pixels: np.ndarray) -> list[dict]:
    return task.segment(registry.load(task.SEG), _pixels)


def heads_of(pixels: np.ndarray) -> list[dict]:
    """The field's heads, found once per distinct image (the page's, and the what-if's original and modified):
    they do not depend on the calibration or the acrosome criterion."""
    return segmented(hashlib.sha256(pixels.tobytes()).hexdigest(), SEG_CARD.version, pixels)


@st.cache_data(show_spinner="Measuring heads…", max_entries=32)
def analyse(sha: str, name: str, um_per_px: float, acrosome: bool, versions: str, _image: InputImage) -> Prediction:
    """A new calibration or criterion re-measures and re-classifies; the heads are found once per image."""
    return task.analyse_field(_image, um_per_px, acrosome_criterion=acrosome, heads=heads_of(_image.pixels))


@st.cache_data(show_spinner="Classifying the head…", max_entries=64)
def classify(sha: str, name: str, version: str, frame: bool, _image: InputImage) -> Prediction:
    return task.classify_heads([_image], frame=frame)[0]


@st.cache_data(show_spinner="Computing heat map…", max_entries=64)
def heat_map(sha: str, version: str, output: str, label: str, _pixels: np.ndarray) -> np.ndarray:
    return registry.load(task.HEAD).explain(_pixels, output, label)


# --- drawing --------------------------------------------------------------------------------------------------------
def probabilities_view(probs: dict[str, dict[str, float]], version: str) -> None:
    for output, p in probs.items():
        top = max(p, key=p.get)
        st.markdown(f"**{HEAD_CARD.wording.title(output)}:** {top} ({100 * p[top]:.1f} %)")
        st.dataframe(pd.DataFrame({"class": list(p), "probability (%)": [round(100 * v, 1) for v in p.values()]}),
                     hide_index=True, width="stretch")
    st.caption(f"{task.HEAD} v{version}")


def head_view(pixels: np.ndarray, sha: str, probs: dict, version: str, key: str) -> None:
    """A head crop, its class probabilities and a Grad-CAM heat map."""
    c1, c2, c3 = st.columns(3)
    c1.image(pixels, caption="The crop classified (read in grey at 64 px)", width="stretch")
    with c2:
        probabilities_view(probs, version)
    with c3:
        output = st.radio("Heat map for", list(probs), horizontal=True, key=f"{key}_heat_output",
                          format_func=HEAD_CARD.wording.title)
        shown = probs.get(output)
        label = max(shown, key=shown.get) if shown else None  # the answer shown (the views' average)
        try:
            heat = heat_map(sha, version, output, label, pixels)
            st.image(overlay(pixels, heat, 0.45), width="stretch",
                     caption=f"{HEAD_CARD.wording.title(output)}, Grad-CAM for “{label or 'the predicted class'}”: "
                             "red areas raised it most.")
        except Exception as exc:  # an explanation failure must not hide the result
            st.warning(f"No heat map for this crop: {exc}")


def single_head_ui(image: InputImage) -> None:
    if HEAD_CARD is None:
        st.warning("The head classifier `sperm-head` is not installed.", icon=":material/warning:")
        return
    frame = st.toggle("Centre on the head", value=task.should_frame(image.pixels),
                      key=f"sperm_frame_head_{image.sha256[:12]}",
                      help=f"Crop the upload around the head, {task.CROP_FACTOR} head lengths wide, as the classifier "
                           "learnt stained heads. Off by default for grey (unstained) crops, which it learnt as given "
                           "(MHSMA: re-framing them lowered accuracy).")
    try:
        task.refuse_blank_crop(image)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    pred = classify(image.sha256, image.name, HEAD_CARD.version, frame, image)
    for warning in pred.extras["warnings"]:
        st.warning(warning, icon=":material/warning:")
    crop = pred.images["crop"]
    head_view(crop, f"{image.sha256}-{frame}", pred.probabilities, pred.model_version, "single")
    seen = training_notice(HEAD_CARD, image)
    record_prediction(with_warning(pred, seen), "sperm", image=image,
                      revises=f"{image.sha256}@{image.name}@{HEAD_CARD.version}")  # the toggle revises it
    cv = HEAD_CARD.metrics.get("hushem/5fold-cv", {})
    mh = HEAD_CARD.metrics.get("mhsma/valid", {})
    if cv or mh:
        st.caption(f"Measured: HuSHeM 5-fold cross-validation (stained) shape accuracy "
                   f"{100 * cv.get('shape_accuracy', 0):.0f} %; MHSMA official validation split (unstained) "
                   f"normal/abnormal accuracy {100 * mh.get('accuracy', 0):.0f} %, but balanced accuracy "
                   f"{100 * mh.get('balanced_accuracy', 0):.0f} %: only {100 * mh.get('specificity', 0):.0f} % of "
                   "its abnormal heads were called abnormal.")
    with st.expander("What-if: change the crop and watch the answer move", expanded=is_handed("sperm")):
        from core.whatif import model_explain, model_predict
        from ui.whatif import whatif_panel

        model = registry.load(task.HEAD)
        whatif_panel(crop, model_predict(model), key="sperm-head-whatif", explain=model_explain(model),
                     cache_key=f"{HEAD_CARD.id}@{HEAD_CARD.version}", wording=HEAD_CARD.wording)


def histograms(table: pd.DataFrame) -> go.Figure:
    ref = morphometry.WHO_REFERENCE
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Length (µm)", "Width (µm)", "Length / width"))
    for i, (col, rng) in enumerate((("length_um", ref["length_um"]), ("width_um", ref["width_um"]),
                                    ("ratio", ref["ratio"])), start=1):
        fig.add_trace(go.Histogram(x=table[col], nbinsx=15, marker_color="#4477aa", showlegend=False), row=1, col=i)
        fig.add_vrect(x0=rng[0], x1=rng[1], fillcolor="green", opacity=0.12, line_width=0, row=1, col=i)
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), bargap=0.05)
    return fig


def review_ui(image: InputImage, rows: list[dict], calls: dict[int, str]) -> None:
    """The andrologist's own call on any head; it replaces the classifier's in every figure above (and the record)."""
    with st.expander("Review the heads: your call replaces the classifier's"):  # a fixed label: it stays open
        st.caption(f"{len(calls)} head{'s' if len(calls) != 1 else ''} called by you so far.")
        frame = pd.DataFrame({"head": [r["head"] for r in rows], "classifier": [r.get("class") for r in rows],
                              "shape": [r.get("shape") for r in rows],
                              "within WHO ranges": [r["who_normal"] for r in rows],
                              "your call": [calls.get(r["head"], "") for r in rows]})
        key = f"sperm_review_{image.sha256[:12]}"

        def keep_calls() -> None:
            for index, change in st.session_state[key]["edited_rows"].items():
                if "your call" in change:
                    head = int(frame["head"].iloc[int(index)])
                    if change["your call"]:
                        calls[head] = change["your call"]
                    else:
                        calls.pop(head, None)

        st.data_editor(frame, hide_index=True, width="stretch", key=key, on_change=keep_calls,
                       disabled=["head", "classifier", "shape", "within WHO ranges"],
                       column_config={"your call": st.column_config.SelectboxColumn(
                           options=["", *task.REVIEW_CALLS],
                           help="normal or abnormal replaces the classifier's call; “not a head” (debris, a cell, two "
                                "heads as one) leaves it out of every count. Empty: the classifier's call stands.")})
        st.caption("Your calls are kept for this image while the page is open (also when the calibration changes) "
                   "and saved with the record and its report.")


def case_tally(case: str) -> None:
    """The case's fields analysed so far (one record each, newest per image), pooled toward WHO's 200 heads, with
    the pooled result kept as one record of the case (revised as fields are added)."""
    fields = case_records(case, task.SEG, SEG_CARD.version, "heads")
    if len(fields) < 2:
        return
    pooled = task.pooled_prediction([Prediction(r.model_id, r.model_version, r.input_name, r.input_sha256,
                                                extras=r.summary) for r in reversed(fields)])
    x = pooled.extras
    st.markdown(f"**Case {escape_markdown(case)} so far: {x['n_scored']} scored heads over {x['n_fields']} fields** "
                f"(WHO asks for at least {morphometry.WHO_MIN_ASSESSED}).")
    with st.expander("The case's shares of normal forms, pooled over its fields"):
        calibrations = sorted({r.summary.get("um_per_px") for r in fields})
        if len(calibrations) > 1:
            st.warning(f"Its fields were measured at different calibrations ({', '.join(map(str, calibrations))} µm "
                       "per pixel): the WHO figures mix them.", icon=":material/straighten:")
        summary_view(x, [row for r in fields for row in r.summary["heads"]])
        st.caption(f"Fields: {x['fields_pooled']}. Each image counts once (its newest analysis); your calls on each "
                   "field are included.")
        record_prediction(pooled, "sperm", revises=f"case-pool@{case}@{SEG_CARD.version}")


def field_ui(image: InputImage, um: float, acrosome: bool) -> None:
    if SEG_CARD is None:
        st.warning("The head segmenter `sperm-seg` is not installed: upload a single-head crop instead.",
                   icon=":material/warning:")
        return
    versions = f"{SEG_CARD.version}/{HEAD_CARD.version if HEAD_CARD else '-'}"
    revises = f"{image.sha256}@{image.name}@{versions}"  # one record per field: calibration, criterion, calls revise it
    calls = st.session_state.setdefault(f"sperm_calls_{image.sha256[:12]}", {})  # the reviewer's, by head number
    if not calls and (earlier := earlier_review(image.sha256, task.SEG, SEG_CARD.version, "heads")):
        kept = {r["head"]: r["reviewer"] for r in earlier.summary["heads"] if r.get("reviewer")}
        st.info(f"This field was reviewed before: record #{earlier.id} of "
                f"{earlier.created_at.astimezone():%Y-%m-%d %H:%M} holds {len(kept)} call{'s' * (len(kept) != 1)} "
                "made there.", icon=":material/history:")

        def restore() -> None:
            calls.update(kept)
            adopt(earlier, "sperm", revises)  # its record goes on, in its case

        st.button("Restore those calls", key=f"sperm_restore_{image.sha256[:12]}", on_click=restore,
                  icon=":material/restore:")
    pred = analyse(image.sha256, image.name, um, acrosome, versions, image)
    if calls:  # the overlay is redrawn in the reviewed colours only when there is a call
        pred = task.reviewed(pred, calls, image.pixels, heads_of(image.pixels))
    rows, summary = pred.extras["heads"], pred.extras
    for warning in summary["warnings"]:  # before the figures it qualifies
        st.warning(f"{warning} (Calibration is beside the upload.)", icon=":material/straighten:")
    summary_view(summary, rows)
    seen = training_notice(SEG_CARD, image)
    record_id = record_prediction(with_warning(pred, seen), "sperm", image=image, revises=revises)
    if record_id is not None and (case := recorded_case(record_id)):
        case_tally(case)
    st.image(pred.images["overlay"], width="stretch",
             caption="Green: normal · red: abnormal (classifier, or your call) · blue: not classified · grey: not "
                     "scored (cut by the border, or not a head by your call). Numbers match the table. "
                     f"{task.SEG} v{pred.model_version}" + (f", {summary['head_model']}" if summary["head_model"] else ""))
    if not rows:
        st.info("No sperm heads were found. The segmenter was trained on stained bright-field fields; unstained, "
                "phase-contrast or very different magnifications may need another model.")
        return
    table = pd.DataFrame(rows)
    shown = table[[c for c in SHOWN if c in table and (c != "reviewer" or calls)]].rename(columns=SHOWN)
    if "P(normal)" in shown:
        shown["P(normal)"] = shown["P(normal)"] * 100  # as the head's own panel gives it
    st.subheader("Heads")
    table_key, pick_key = f"sperm_table_{image.sha256[:12]}", f"sperm_head_pick_{image.sha256[:12]}"

    def show_clicked_head() -> None:
        clicked = st.session_state[table_key].selection.rows
        if clicked:
            st.session_state[pick_key] = rows[clicked[0]]["head"]

    st.dataframe(shown, hide_index=True, width="stretch", on_select=show_clicked_head, selection_mode="single-row",
                 key=table_key, column_config={"P(normal)": st.column_config.NumberColumn(format="%.1f %%")})
    if HEAD_CARD is not None:
        review_ui(image, rows, calls)
    export = table.assign(image=image.name, um_per_px=um, acrosome_criterion=acrosome,
                          who_reference=morphometry.WHO_EDITION,
                          head_model=summary["head_model"], segmenter=f"{task.SEG} v{pred.model_version}")
    st.download_button("Download the table (CSV)", csv_bytes(export), mime="text/csv",
                       file_name=f"{image.name.rsplit('.', 1)[0]}_heads.csv", key="sperm_csv", on_click="ignore")
    scored = table[[task.is_scored(r) for r in rows]]  # not cut by the border, not "not a head" by your call
    st.plotly_chart(histograms(scored), width="stretch", key="sperm_hist")
    st.caption(f"Green bands: WHO reference ranges; the {len(scored)} scored heads (heads cut by the image border, "
               f"or not heads by your call, are left out). {morphometry.reference_text()} Sizes use {um:.4g} µm per "
               "pixel. " + task.measurement_note(SEG_CARD)
               + ("" if acrosome else morphometry.ACROSOME_NOTE))
    head = st.selectbox("Show head", [r["head"] for r in rows], key=pick_key, help="Or click a row of the table.")
    row = next(r for r in rows if r["head"] == head)
    crop = pred.images[f"head_{head}"]
    st.markdown(f"**Head {head}**: {row['length_um']:.2f} × {row['width_um']:.2f} µm, length/width {row['ratio']:.2f}, "
                f"area {row['area_um2']:.1f} µm², "
                + (f"{row['vacuole_count']} vacuole(s) · " if row.get("vacuole_count") is not None else "")
                + ("not scored (" + ("cut by the border" if row["at_border"] else "not a head by your call") + ")"
                   if not task.is_scored(row) else "within the WHO head ranges" if row["who_normal"]
                   else f"outside the WHO ranges: {row['who_outside']}")
                + (f" · your call: {row['reviewer']}" if row.get("reviewer") else ""))
    if "p_normal" in row:
        probs = {"normal": {"abnormal": 1 - row["p_normal"], "normal": row["p_normal"]},
                 "shape": {s: row[f"p_shape_{s}"] for s in task.ds.SHAPES}}
        for warning in task.output_warnings(probs):
            st.warning(warning, icon=":material/warning:")
        head_view(crop, f"{image.sha256}-{head}-{um}", probs, HEAD_CARD.version, "field")
    else:
        st.image(crop, caption=f"Head {head}", width=200)
    with st.expander("What-if: change the field and watch the heads move"):
        from ui.whatif import whatif_panel

        def predict(pixels):
            s = task.analyse_field(pixels, um, acrosome_criterion=acrosome, heads=heads_of(pixels)).extras
            p = (s["pct_normal_classifier"] or 0) / 100
            return {"normal_forms": {"abnormal": 1 - p, "normal": p}}

        def detail(pixels):
            return pd.DataFrame(task.analyse_field(pixels, um, acrosome_criterion=acrosome,
                                                   heads=heads_of(pixels)).extras["heads"])

        whatif_panel(image.pixels, predict, key="sperm-field-whatif", detail=detail,
                     cache_key=f"{task.SEG}@{versions}#{um}#{acrosome}", wording=FIELD_WORDING)


# --- page -----------------------------------------------------------------------------------------------------------
image, single, um, acrosome = input_ui()
if image is None:
    ask_to_start("Upload a field micrograph or a single-head crop to start.", "sperm_upload")
else:
    st.caption(f"Treated as {'a single-head crop' if single else 'a full field'} ({image.size[0]}×{image.size[1]} px).")
    if single:
        single_head_ui(image)
    else:
        field_ui(image, um, acrosome)
for card in (SEG_CARD, HEAD_CARD):
    if card is not None:
        card_expander(card)

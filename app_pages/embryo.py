"""Embryo grading: stage and quality of one embryo, or of every embryo in a dish image."""
import base64

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from core import dish, registry, synthetic
from core.explain import overlay
from core.imageio import InputImage, encode_png
from core.results import csv_bytes
from core.tasks import embryo as task
from ui.common import (ask_to_start, card_expander, escape_markdown, is_handed, kept_upload, model_unavailable,
                       read_handed, read_upload, set_aside, training_notice, with_warning)
from ui.records import move_notice, record_prediction, recorded_case

st.title("Embryo grading")
st.markdown(
    "Upload a bright-field or time-lapse image of **one embryo**, or of a **dish** holding several. The model "
    "suggests the developmental stage (cleavage or blastocyst) and whether the embryo looks good, with the "
    "probability of each and a heat map of the image regions that drove the call. It is a second opinion to "
    "compare with your own grading, not a selection tool."
)

if model_unavailable(task.GRADE_ID):
    st.stop()
GRADE_CARD = registry.card(task.GRADE_ID)
MODES = {"Automatic": "auto", "One embryo": "single", "Dish (several embryos)": "dish"}
EXAMPLES = {
    "Generated cleavage-stage embryo": lambda: synthetic.embryo("cleavage", size=160, seed=3, field=448)[0],
    "Generated blastocyst": lambda: synthetic.embryo("blastocyst", size=160, seed=4, field=448)[0],
    "Generated dish with 16 embryos": lambda: synthetic.embryo_dish(16, seed=7)[0],
}
LABELS = {"cleavage": "Cleavage", "blastocyst": "Blastocyst", "good": "Good", "not_good": "Not good"}


# --- inputs -------------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=len(EXAMPLES))
def example(name: str) -> np.ndarray:
    """Generated once per server (the dish takes about a second, which every rerun of the page paid)."""
    return EXAMPLES[name]()


def input_ui() -> InputImage | None:
    if is_handed("embryo"):
        return read_handed()
    source = st.radio("Image", ["Upload", "Generated example"], horizontal=True, key="embryo_source")
    if source == "Upload":
        upload = st.file_uploader("Embryo or dish image (PNG, JPEG, BMP, TIFF or DICOM)",
                                  type=["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"], key="embryo_upload")
        return read_upload(kept_upload("embryo_upload", upload))
    set_aside("embryo_upload")
    name = st.selectbox("Example", list(EXAMPLES), key="embryo_example")
    pixels = example(name)
    import hashlib

    return InputImage(pixels, f"{name}.png", hashlib.sha256(pixels.tobytes()).hexdigest(), pixels.nbytes, "PNG", "RGB", 8)


def mode_ui(image: InputImage | None) -> tuple[str, int | None]:
    """The mode and the culture day the user gives (asked again for each new image: it belongs to the embryo)."""
    ss = st.session_state
    if image is None:  # a day chosen before the next upload is for that one
        ss.pop("embryo_day_for", None)
    elif ss.setdefault("embryo_day_for", image.sha256) != image.sha256:  # another image in place of the last
        ss["embryo_day_for"] = image.sha256
        ss["embryo_day"] = "not given"
    help_text = ("Automatic: the dish detector looks for embryos; with more than one the image is treated as a dish. "
                 "Choose a mode yourself when the automatic choice is wrong.")
    left, right = st.columns(2)
    day_name = right.radio("Culture day", list(task.CULTURE_DAY_NAMES), horizontal=True, key="embryo_day",
                           help="The day you know. Day 3: the quality call is marked unreliable (as it tested) and a "
                                "'blastocyst' is questioned. Not given: the stage the model calls decides.")
    day = task.CULTURE_DAY_NAMES[day_name]
    if not task.dish_available():
        left.caption("Dish mode is unavailable: the dish detector (embryo-dish) is not installed.")
        return "single", day
    return MODES[left.radio("Mode", list(MODES), horizontal=True, key="embryo_mode", help=help_text)], day


# --- cached work (model objects are passed with a leading underscore: not hashed) -------------------------------------
@st.cache_data(show_spinner="Grading… (the first image after the server starts also loads the models: about 20 s)",
               max_entries=64)
def grade(sha: str, name: str, mode: str, day: int | None, version: str, _image: InputImage) -> list:
    return task.grade_image(_image, mode, day=day)


@st.cache_data(show_spinner="Computing heat map…", max_entries=64)
def heat_map(sha: str, output: str, label: str, version: str, _crop: np.ndarray) -> np.ndarray:
    return registry.load(task.GRADE_ID).explain(_crop, output, label)


# --- drawing --------------------------------------------------------------------------------------------------------
def pct(p: float) -> str:
    return f"{100 * p:.1f} %"


def outcome(pred, output: str) -> tuple[str, float]:
    label = pred.label(output)
    return LABELS.get(label, label), pred.probabilities[output][label]


def single_view(image: InputImage, pred) -> None:
    crop = pred.images["crop"]
    cx, cy = pred.extras["embryo_center"]
    r = pred.extras["embryo_radius"]
    located = image.pixels.copy()
    half = int(task.CROP_SIDE * r / 2)
    thick = max(2, int(max(located.shape[:2]) / 300))
    h, w = located.shape[:2]
    x0, y0, x1, y1 = int(cx) - half, int(cy) - half, int(cx) + half, int(cy) + half
    past_edge = x0 < 0 or y0 < 0 or x1 >= w or y1 >= h  # drawn where it lies inside the photo
    cv2.rectangle(located, (max(x0, 0), max(y0, 0)), (min(x1, w - 1), min(y1, h - 1)), (255, 140, 0), thick)
    warnings = pred.extras.get("warnings") or []
    for warning in warnings:
        st.warning(warning)
    caveats = pred.extras.get("caveats") or {}
    left, right = st.columns([3, 2])
    with right:
        for output, title in (("stage", "Stage"), ("quality", "Quality")):
            label, p = outcome(pred, output)
            st.markdown(f"**{title}**")
            if warnings or caveats.get(output):  # not a headline: the answer is in doubt
                st.markdown(f"{label} · {pct(p)} *(in doubt)*")
            else:
                st.markdown(f"### {label} · {pct(p)}")
            probs = pred.probabilities[output]
            st.caption(" · ".join(f"{LABELS.get(k, k)} {pct(v)}" for k, v in probs.items())
                       + f" — {GRADE_CARD.id} v{pred.model_version}")
            if caveats.get(output):
                st.caption(caveats[output])  # also in the record and its report
        st.caption("The percentages are the model's scores, not probabilities calibrated for your clinic; “good” is "
                   "the Hung Vuong clinic's own label (its criteria are not published), not a Gardner or Istanbul "
                   "grade.")
        if caveats.get("grey_frame"):
            st.info(caveats["grey_frame"], icon=":material/info:")
        st.caption("Area graded (orange box): the embryo is located automatically and a square around it is graded"
                   + (" (here the square runs past the photo's edge, where the edge pixels are repeated)."
                      if past_edge else "."))
        optics = task.optics_stage_accuracy(GRADE_CARD)
        if optics:
            st.caption(f"Stage was learned from two microscopes. On held-out photos its balanced accuracy was "
                       f"{pct(optics['original'])} as taken, {pct(optics['uneven-light'])} with the corners darkened "
                       f"and {pct(optics['relief'])} with relief shading as Hoffman modulation contrast shows "
                       "embryos: other optics can shift the call (Metrics page, optics evaluations).")
    with left:
        st.image(located, caption=image.name, width="stretch")
    st.subheader("What drove each answer")
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05, key="embryo_opacity")
    cols = st.columns(2)
    for col, output, title in zip(cols, ("stage", "quality"), ("Stage", "Quality")):
        with col:
            label, _ = outcome(pred, output)
            try:  # the map explains the answer shown (the views' average), not one view's own answer
                heat = heat_map(image.sha256, output, pred.label(output), pred.model_version, crop)
            except Exception as exc:  # an explanation failure must not hide the grading
                st.warning(f"No heat map for {title.lower()}: {exc}")
                continue
            st.image(overlay(crop, heat, opacity), caption=f"{title}: regions supporting “{label}” (Grad-CAM)",
                     width="stretch")
    st.caption("Red marks regions that raised the probability of the shown answer most (Grad-CAM). It shows where the "
               "model looked, not why, and can be wrong; a map lying mostly off the embryo is worth a second look "
               "at the answer.")


def in_table_order(pred) -> tuple:
    """Ranked blastocysts first, then the unranked embryos by number."""
    rank = pred.extras["rank"]
    return (rank is None, rank or 0, pred.extras["number"])


def thumbnail(crop: np.ndarray) -> str:
    small = cv2.resize(crop, (72, 72), interpolation=cv2.INTER_AREA)
    return "data:image/png;base64," + base64.b64encode(encode_png(small)).decode()


def dish_view(image: InputImage, preds: list) -> None:
    boxed = image.pixels.copy()
    scale = max(boxed.shape[:2]) / 640
    for p in preds:
        x0, y0, x1, y1 = map(int, p.extras["box"])
        colour = (120, 140, 170) if p.extras["rank"] is None else \
            (40, 200, 80) if p.label("quality") == "good" else (255, 150, 0)
        cv2.rectangle(boxed, (x0, y0), (x1, y1), colour, max(2, int(2 * scale)))
        cv2.putText(boxed, str(p.extras["number"]), (x0 + 3, y0 + int(18 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * scale, colour, max(1, int(2 * scale)), cv2.LINE_AA)
    doubted = [p for p in preds if p.extras["warnings"]]
    if doubted:  # e.g. a dark well around them: in doubt, and not ranked
        st.warning(f"Embryo{'s' if len(doubted) > 1 else ''} {', '.join(str(p.extras['number']) for p in doubted)}: "
                   f"{doubted[0].extras['warnings'][0]} Their answers are in doubt and they are not ranked.",
                   icon=":material/warning:")
    found = f"{len(preds)} embryo{'s' if len(preds) != 1 else ''} found"
    st.image(boxed, caption=f"{found} (ranked blastocysts: green graded good, orange not good; blue-grey: not "
                            "ranked, quality not reliable)", width="stretch")
    rows = []
    for p in sorted(preds, key=in_table_order):
        rows.append({
            "rank": "—" if p.extras["rank"] is None else str(p.extras["rank"]), "embryo": p.extras["number"],
            "image": thumbnail(p.images["crop"]),
            "stage": LABELS[p.label("stage")] + (" (in doubt)" if p.extras["warnings"] or p.extras["caveats"].get(
                "stage") else ""),
            "P(blastocyst)": round(100 * p.probabilities["stage"]["blastocyst"], 1),
            "quality": LABELS[p.label("quality")] + (" (in doubt)" if p.extras["warnings"] or p.extras["caveats"].get(
                "quality") else ""),
            "P(good)": round(100 * p.probabilities["quality"]["good"], 1),
            "detection": round(100 * p.extras["detection_confidence"], 1),
            "check": "; ".join(["dark surround"] * bool(p.extras["warnings"])
                               + ["day-3 blastocyst?"] * bool(p.extras["caveats"].get("stage"))),
        })
    table = pd.DataFrame(rows)
    st.dataframe(
        table, hide_index=True, width="stretch", row_height=76, height=38 + 76 * len(table),  # every row, no scroll
        column_config={
            "image": st.column_config.ImageColumn("embryo image"),
            "rank": st.column_config.TextColumn(help="Among the blastocysts of this dish not in doubt; — : not ranked"),
            "P(good)": st.column_config.NumberColumn(format="%.1f %%"),
            "P(blastocyst)": st.column_config.NumberColumn(format="%.1f %%"),
            "detection": st.column_config.NumberColumn("detection confidence", format="%.1f %%"),
        },
    )
    st.caption(f"Blastocysts first, ranked by the probability of good quality; embryos called cleavage follow, "
               f"unranked ({GRADE_CARD.id} v{preds[0].model_version}; embryos found by embryo-dish "
               f"v{registry.card(task.DISH_ID).version}). The numbers match the boxes on the image: check that each "
               "box holds one whole embryo before reading its row.")
    st.info(dish.RANKING + " Day-3 and day-5 quality are judged differently, and the "
            "percentages are the model's scores, not calibrated probabilities"
            + (" (and on a grey image like this one, quality was never tested at all)"
               if task.looks_time_lapse(image.pixels) else "")
            + ". The dish detector was checked on generated dishes and real single-embryo frames, not on real dishes.",
            icon=":material/info:")
    csv = pd.DataFrame([p.flat() | {k: p.extras[k] for k in ("number", "rank", "detection_confidence")}
                        | {"box_xyxy": " ".join(map(str, p.extras["box"]))} for p in sorted(preds, key=in_table_order)])
    st.download_button("Download table (CSV)", csv_bytes(csv),
                       f"{image.name.rsplit('.', 1)[0]}-embryos.csv", "text/csv", key="embryo_csv", on_click="ignore")


# --- page -----------------------------------------------------------------------------------------------------------
image = input_ui()
mode, day = mode_ui(image)
if image is None:
    ask_to_start("Upload an image or pick a generated example to start.", "embryo_upload")
else:
    try:
        preds = grade(image.sha256, image.name, mode, day, GRADE_CARD.version, image)
    except ValueError as exc:
        st.error(str(exc))
        preds = None
    if preds is not None and not preds:
        st.warning("No embryo was found in this image. If it shows a single embryo, choose “One embryo” as the mode.")
    elif preds and preds[0].extras.get("mode") == "dish":
        dish_view(image, preds)
    elif preds:
        single_view(image, preds[0])
    if preds and preds[0].extras.get("mode") != "dish":
        preds = [with_warning(preds[0], training_notice(GRADE_CARD, image))]
    if st.session_state.get("embryo_source") == "Generated example" and not is_handed("embryo"):
        st.caption("Generated examples are not saved to the case records.")
    elif preds:
        # one record per embryo of this image: a change of mode or culture day revises it
        ids = [record_prediction(p, "embryo", image=image, show=len(preds) == 1,
                                 revises=f"{image.sha256}@{image.name}@{GRADE_CARD.version}#{p.extras.get('number', 0)}")
               for p in preds]
        if len(preds) > 1 and None not in ids:
            code = recorded_case(ids[0])
            st.caption(f"{len(ids)} embryos saved as case records #{min(ids)}–#{max(ids)}"
                       + (f" for case **{escape_markdown(code)}**." if code else " (no case code: set one in the sidebar)."))
            move_notice(ids)
    if preds and preds[0].extras.get("mode") != "dish":
        with st.expander("What-if: change the image and watch the answers move", expanded=is_handed("embryo")):
            from ui.whatif import whatif_panel

            if preds[0].extras.get("warnings"):
                st.warning("The answers on this photo are in doubt (see the warning above), and so are these.",
                           icon=":material/warning:")

            whatif_panel(image.pixels, task.predict_outputs, key="embryo-whatif", explain=task.explain_on_image,
                         cache_key=f"{GRADE_CARD.id}@{GRADE_CARD.version}", wording=GRADE_CARD.wording,
                         thresholds=GRADE_CARD.get("thresholds"))
card_expander(GRADE_CARD)
if task.dish_available():
    card_expander(registry.card(task.DISH_ID))

"""PCOS ultrasound: how much a frame resembles PCOS-labelled frames, with a heat map, and an assistive follicle count
in millimetres against the diagnostic criteria."""
from functools import partial

import pandas as pd
import streamlit as st

from core import follicles as fol
from core import registry
from core.explain import overlay
from core.imageio import InputImage
from core.results import Prediction
from core.tasks import pcos as task
from ui.common import (UPLOAD_TYPES, ask_to_start, card_expander, is_handed, model_unavailable, read_handed, read_upload,
                       training_notice, with_warning)
from ui.records import record_prediction

st.title("PCOS ultrasound")
st.markdown(
    "Upload one frame of a transvaginal or transabdominal **ovarian ultrasound** (JPEG, PNG or DICOM). You get the "
    "probability that the frame resembles the PCOS-labelled frames the model learnt from, a heat map of what drove "
    "it, and the **antral follicles** found, measured in millimetres and counted against the diagnostic criteria. "
    "Both are aids for your own reading: PCOS remains a clinical diagnosis."
)
if model_unavailable(task.MODEL_ID):
    st.stop()
CARD = registry.card(task.MODEL_ID)


# --- inputs ---------------------------------------------------------------------------------------------------------
def input_ui() -> InputImage | None:
    if is_handed("pcos"):
        return read_handed()
    upload = st.file_uploader("Ovarian ultrasound frame", type=UPLOAD_TYPES, key="pcos_upload",
                              help="Burned-in text, calipers and black borders are ignored; DICOM pixel spacing is "
                                   "used for the follicle sizes.")
    return read_upload(upload)


@st.cache_data(show_spinner=False, max_entries=64)
def unusable(sha: str, name: str, _image: InputImage) -> str | None:
    """Why the frame cannot be analysed, or None (checked once per file, not on every rerun of the page)."""
    try:
        task.refuse_unusable(_image)
    except ValueError as exc:
        return str(exc)
    return None


if "pcos_mm_per_px" in st.session_state:  # kept through a run without the box (a bad upload in between)
    st.session_state["pcos_mm_per_px"] = st.session_state["pcos_mm_per_px"]


def calibration_ui(image: InputImage) -> tuple[float | None, bool]:
    """The calibration typed (None: DICOM spacing or the guess) and whether it was typed for a frame of another size
    and not confirmed for this one."""
    if image.pixel_spacing_mm:
        st.caption(f"Pixel size from the DICOM header: {image.pixel_spacing_mm[0]:.3f} × "
                   f"{image.pixel_spacing_mm[1]:.3f} mm.")
        return None, False
    guess = fol.default_mm_per_px(image.pixels.shape)
    size = f"{image.pixels.shape[1]} × {image.pixels.shape[0]}"
    held_for = st.session_state.get("pcos_calibrated_for")  # the frame sizes the calibration was typed or confirmed for
    if st.session_state.get("pcos_mm_per_px") is None:
        st.session_state.pop("pcos_calibrated_for", None)
    elif not held_for:
        st.session_state["pcos_calibrated_for"] = [size]
    questioned = bool(held_for) and size not in held_for and st.session_state.get("pcos_mm_per_px") is not None
    if questioned:
        warn, confirm = st.columns([4, 1], vertical_alignment="center")
        warn.warning(f"The calibration was entered for a frame of {held_for[0]} pixels; this one is {size}. Check that "
                     "it holds for this frame (same scanner, depth and zoom), or correct it: until then the criteria "
                     "are not judged.", icon=":material/straighten:")
        if confirm.button("It holds for this frame", key="pcos_calibration_holds", width="stretch"):
            st.session_state["pcos_calibrated_for"] = held_for + [size]
            st.rerun()
    typed = st.number_input(  # None (left empty): sizes use the guess and are labelled as not calibrated
        "Calibration (mm per pixel)", min_value=0.01, max_value=2.0, value=None, step=0.005, format="%.3f",
        key="pcos_mm_per_px", placeholder=f"not calibrated (guess: {guess:.3f})",
        on_change=lambda: st.session_state.pop("pcos_calibrated_for", None),  # typed now: for the frame on screen
        help="Divide a known distance on the image (scale bar or caliper, in mm) by its length in pixels. Left "
             f"empty, sizes assume the frame is {fol.DEFAULT_FIELD_MM:.0f} mm wide ({guess:.3f} mm per pixel here): "
             "a guess, so the criteria are not judged. The value stays for the next frame of the same scanner "
             "setting; clear it for another.")
    return typed, questioned


# --- cached work ----------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Analysing the frame…", max_entries=64)
def analyse(sha: str, name: str, mm_per_px: float | None, version: str, _image: InputImage) -> Prediction:
    """The page's one prediction: PCOS probability and the follicles found."""
    return task.predict_images(task.MODEL_ID, [_image], mm_per_px=mm_per_px)[0]


@st.cache_data(show_spinner="Computing heat map…", max_entries=64)
def heat_map(sha: str, version: str, _pixels) -> object:
    return task.heatmap(registry.load(task.MODEL_ID), _pixels)


# --- drawing --------------------------------------------------------------------------------------------------------
def classifier_view(image: InputImage, pred: Prediction) -> None:
    p = pred.probabilities[task.OUTPUT]["pcos"]
    threshold = pred.thresholds[task.OUTPUT]
    above = p >= threshold
    st.metric("Resemblance to PCOS-labelled frames", f"{100 * p:.1f} %",
              help=f"Probability from {CARD.id} v{pred.model_version}; decision threshold {100 * threshold:.1f} %.")
    reads = CARD.wording.says(task.OUTPUT, pred.label(task.OUTPUT))  # as History and reports word it
    st.markdown(f"**{'Above' if above else 'Below'} the decision threshold** of {100 * threshold:.1f} % "
                f"({CARD.id} v{pred.model_version}): resembles **{reads}**"
                + (", *in doubt, see the warning above*." if pred.extras["warnings"] else "."))
    held_out = next((m for k, m in CARD.metrics.items() if "heldout" in k), None)
    if held_out:
        st.caption(f"On held-out PCOSGen frames (video groups kept out of training, though some frames are close to "
                   "training frames of the same sweep: see Metrics, leakage audit; all from the one public set): "
                   f"balanced accuracy {100 * held_out['balanced_accuracy']:.0f} % "
                   "(the mean of sensitivity and specificity: most held-out frames are PCOS-labelled, so plain "
                   f"accuracy flatters), sensitivity "
                   f"{100 * held_out.get('sensitivity', float('nan')):.0f} %, specificity "
                   f"{100 * held_out.get('specificity', float('nan')):.0f} %, ROC-AUC {held_out['roc_auc']:.2f} "
                   f"(n = {held_out['n']}). Treat a single frame's answer with that in mind.")
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.4, 0.05, key="pcos_opacity")
    try:
        heat = heat_map(image.sha256, pred.model_version, image.pixels)
        st.image(overlay(image.pixels, heat, opacity), width="stretch",
                 caption="Grad-CAM: red areas raised the PCOS probability most. Only the scanned region is used; "
                         "text and borders are masked.")
    except Exception as exc:  # an explanation failure must not hide the result
        st.warning(f"No heat map for this image: {exc}")


def follicle_view(image: InputImage, pred: Prediction, size_questioned: bool) -> Prediction:
    """The follicle table, overlay and count; returns the prediction as the clinician reviewed it (unticked ones out).
    size_questioned: the calibration was typed for a frame of another size, so the criteria are not judged."""
    rows = pred.extras["follicles"]
    mm, source = pred.extras["mm_per_px"], pred.extras["mm_per_px_source"]
    st.caption(f"Sizes use {mm:.3f} mm per pixel ({source}).")
    if not rows:
        overlay_slot.image(image.pixels, width="stretch", caption=image.name)
        st.info("No follicle-like dark round regions were found in this frame.")
        return pred
    unticked_key = f"pcos_unticked_{image.sha256[:12]}"  # where the user unticked, kept across calibrations
    unticked_at = st.session_state.get(unticked_key, [])
    table = pd.DataFrame({"follicle": [r["id"] for r in rows],
                          "diameter (mm)": [r["diameter_mm"] for r in rows],
                          "2–9 mm": [r["in_2_9_mm"] for r in rows],
                          "counted": [r["in_2_9_mm"] and not near(r, unticked_at) for r in rows]})
    edited = st.data_editor(
        table, hide_index=True, width="stretch", key=f"pcos_follicles_{image.sha256[:12]}_{mm:.4f}",
        disabled=["follicle", "diameter (mm)", "2–9 mm"],
        column_config={"diameter (mm)": st.column_config.NumberColumn(format="%.1f"),
                       "counted": st.column_config.CheckboxColumn(
                           help="Untick a detection that is not a follicle; it leaves the count. Only follicles "
                                "of 2–9 mm count.")})
    review = task.reviewed(pred, image.pixels, set(edited.loc[edited["counted"], "follicle"].astype(int)),
                           size_questioned)
    unticked = set(review.extras["follicles_unticked"])
    # an untick stays until its follicle is ticked again, also while this calibration does not find it
    unseen = [pt for pt in unticked_at if not any(near(r, [pt]) for r in rows)]
    st.session_state[unticked_key] = unseen + [(r["x"], r["y"]) for r in rows if r["id"] in unticked]
    outside = edited.loc[edited["counted"] & ~edited["2–9 mm"], "follicle"].astype(int).tolist()
    if outside:
        st.warning(f"Follicle{'s' if len(outside) > 1 else ''} {', '.join(map(str, outside))} "
                   f"{'are' if len(outside) > 1 else 'is'} outside 2–9 mm and not counted: the criteria count "
                   "2–9 mm follicles only. If a size looks wrong, check the calibration.", icon=":material/info:")
    overlay_slot.image(review.images["follicles"], width="stretch",
                       caption="Green: counted · orange: outside 2–9 mm · grey: unticked. Numbers match the table.")
    n = review.extras["follicle_count_2_9mm"]
    st.metric("Follicles of 2–9 mm counted in this frame", n,
              help=f"{len(unticked)} of the finder's {n + len(unticked)} unticked by you." if unticked else None)
    if source == task.UNCALIBRATED:
        st.warning("Criteria not judged: the sizes, and so which follicles fall in 2–9 mm, rest on a guessed pixel "
                   "size. Enter the calibration above to judge them.", icon=":material/straighten:")
    elif size_questioned:
        st.warning("Criteria not judged: the calibration was entered for a frame of another size. Confirm above that "
                   "it holds for this frame, or correct it, to judge them.", icon=":material/straighten:")
    else:
        for c in fol.criteria(n):
            icon = ":material/check_circle:" if c["met"] else ":material/radio_button_unchecked:"
            st.markdown(f"{icon} {c['criterion']}: " + ("reached already in this one frame (the ovary holds at least "
                                                        "as many)" if c["met"] else "not reached in this frame (the "
                                                        "whole ovary may still reach it)")
                        + (f" · *within {fol.NEAR_THRESHOLD} of it: count by eye*" if c["close"] else ""))
        if any(c["close"] for c in fol.criteria(n)):
            st.caption(f"The finder's count moves with the image's gain: a 5 % brighter or darker copy of the frame "
                       f"changed it on {fol.GAIN_CHANGED} held-out PCOSGen frames, by up to {fol.NEAR_THRESHOLD} on "
                       "nearly all of them. So close to a "
                       "threshold, count the follicles on the image yourself before relying on the reading.")
        dominant = [r["id"] for r in rows if r["diameter_mm"] > fol.DOMINANT_MM and r["id"] not in unticked]
        if dominant:
            st.warning(f"Follicle{'s' if len(dominant) > 1 else ''} {', '.join(map(str, dominant))} "
                       f"{'are' if len(dominant) > 1 else 'is'} over {fol.DOMINANT_MM:g} mm: with a dominant follicle "
                       "(or a corpus luteum) Rotterdam 2003 advises repeating the scan in the next cycle before "
                       "judging the follicle number.", icon=":material/info:")
    st.caption("Follicle number is one way to see polycystic ovarian morphology (PCOM), itself one of the three "
               "Rotterdam features; an ovarian volume over 10 mL (10 mL or more in the 2018/2023 guideline) is the "
               "other (and the one to use on transabdominal or older scanners), and ultrasound is not advised for "
               "diagnosis within 8 years of menarche. The criteria count follicles across the whole ovary (every "
               "plane of a sweep), one ovary at a time: one frame shows one plane, so its count is a lower bound "
               "for that ovary. The saved record and its report keep your ticks.")
    return review


def near(row: dict, points: list, within_px: float = 3.0) -> bool:
    """A follicle found again where the user unticked one (its number can change with the calibration)."""
    return any(abs(row["x"] - x) <= within_px and abs(row["y"] - y) <= within_px for x, y in points)


def validation_note() -> None:
    with st.expander("How the follicle finder works and was checked"):
        st.markdown(
            "Classical image processing, no learning: the scanned region is found and burned-in marks are removed, "
            "the speckle is smoothed, regions much darker than the surrounding tissue are kept, touching follicles "
            "are separated, and only round, solid regions are kept; a region cut by the frame or the edge of the scan "
            "is left out (it is no whole follicle), and so is one found inside a larger one. Each diameter is the "
            "mean of the two axes of an ellipse fitted to the edge, placed half-way between the follicle's inside and "
            "the tissue around it.\n\n"
            "There are no follicle annotations in the public data, so it was checked in two ways: on **generated "
            "ovaries** with follicles of known number and size (the test suite requires the exact count and every "
            "diameter within 0.5 mm on each of them), and **by eye on real PCOSGen frames**, where it finds clear "
            "anechoic follicles well but also marks some dark shadows outside the ovary (untick them), and can miss "
            "follicles with faint walls or merge touching ones. Sizes are only as good as the calibration.")


# --- page -----------------------------------------------------------------------------------------------------------
image = input_ui()
if image is None:
    ask_to_start("Upload an ultrasound frame to start.", "pcos_upload")
elif problem := unusable(image.sha256, image.name, image):
    st.error(problem, icon=":material/error:")
else:
    mm_per_px, size_questioned = calibration_ui(image)
    pred = analyse(image.sha256, image.name, mm_per_px, CARD.version, image)
    for warning in pred.extras["warnings"]:
        st.warning(warning, icon=":material/warning:")
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("PCOS probability")
        classifier_view(image, pred)
    with right:
        st.subheader("Follicles")
        overlay_slot = st.empty()
        review = follicle_view(image, pred, size_questioned)
    validation_note()
    seen = training_notice(CARD, image)
    # one record per frame: a new calibration, like a tick, revises it
    record_prediction(with_warning(review, seen), "pcos", image=image,
                      revises=f"{image.sha256}@{image.name}@{CARD.version}")
    with st.expander("What-if: change the image and watch the answer move", expanded=is_handed("pcos")):
        from ui.whatif import whatif_panel

        whatif_panel(image.pixels, task.predict_outputs, key="pcos-whatif", explain=task.explain_on_image,
                     ultrasound=True, detail=partial(task.follicle_table, mm_per_px=pred.extras["mm_per_px"]),
                     cache_key=f"{CARD.id}@{CARD.version}#{pred.extras['mm_per_px']:.5f}", wording=CARD.wording,
                     thresholds=pred.thresholds)
card_expander(CARD)

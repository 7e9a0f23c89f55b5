"""Widgets every page uses: safe image upload, model card expander, device line."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core import device as devices
from core import registry
from core.imageio import IMAGE_SUFFIXES, ImageInputError, InputImage, read_image

UPLOAD_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)


def device_line() -> str:
    d = devices.describe()
    return f"Device: {d['device'].upper()} · {d['name']} · {d['memory_gb']} GB"


@dataclass(frozen=True)
class KeptUpload:
    """A file the user uploaded earlier, with the two attributes the pages read of a Streamlit upload."""
    name: str
    data: bytes
    file_id: str | None = None  # the upload it copies: copied once per upload, not on every rerun

    def getvalue(self) -> bytes:
        return self.data


def kept_upload(key: str, upload):
    """The uploader's file or, when the page stopped drawing the uploader meanwhile (another input was chosen, and
    Streamlit forgets the file of a widget it does not draw), the file last uploaded there. Call set_aside(key) on
    runs that do not draw the uploader."""
    ss = st.session_state
    if upload is not None:
        file_id = getattr(upload, "file_id", None)
        kept = ss.get(f"{key}-kept")
        if kept is None or file_id is None or kept.file_id != file_id:
            ss[f"{key}-kept"] = KeptUpload(upload.name, upload.getvalue(), file_id)
        ss[f"{key}-aside"] = False
        return upload
    kept = ss.get(f"{key}-kept")
    if kept is not None and ss.get(f"{key}-aside"):
        st.caption(f"Still using your last upload, {escape_markdown(kept.name)}: upload another file to replace it.")
        return kept
    ss.pop(f"{key}-kept", None)  # the user removed the file
    return None


def set_aside(key: str) -> None:
    """The uploader `key` is not drawn in this run: kept_upload brings its last file back when it is drawn again."""
    st.session_state[f"{key}-aside"] = True


HANDED = "handed_image"  # {"model", "path"}: an evaluation image the Confusion page opened on its task page


def hand_over(model_id: str, path: str, layout: dict | None = None) -> None:
    """layout: how the evaluation read its data (the time-lapse page pads crops as the evaluation did)."""
    st.session_state[HANDED] = {"model": model_id, "path": path, "layout": layout}


def is_handed(task: str) -> bool:
    """Whether the page of `task` is to show an evaluation image the Confusion page opened there."""
    from core.tasks import TASK_OF_MODEL

    handed = st.session_state.get(HANDED)
    return bool(handed) and TASK_OF_MODEL.get(handed["model"]) == task


def handed_path() -> Path:
    """The evaluation image the Confusion page opened on this page (instead of an upload), said so with a way back."""
    path = Path(st.session_state[HANDED]["path"])
    st.info(f"Opened from the Confusion matrices page: **{path.parent.name}/{path.name}**, an image of an evaluation, "
            "not a case: its results are not saved to the case records.", icon=":material/grid_on:")
    if st.button("Back to my images", key="handed-back", icon=":material/arrow_back:"):
        st.session_state.pop(HANDED)
        st.rerun()
    return path


def read_handed() -> InputImage | None:
    """The evaluation image handed to this page, read as an upload is (None, after saying why, when it cannot be)."""
    path = handed_path()
    try:
        return read_upload(KeptUpload(path.name, path.read_bytes()))
    except OSError as exc:
        st.error(f"{path}: cannot be read here ({exc.strerror or exc}).", icon=":material/error:")
        return None


MARKDOWN_SPECIAL = set("\\`*_[]<>!|~$:")  # mid-line: links, images, HTML, emphasis, code, maths, icons


def escape_markdown(text: str | None) -> str:
    """Typed or named by the user (a case code, a file name), as Markdown that shows it as written: never a link,
    an image or formatting."""
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in text or "")


def read_upload(upload) -> InputImage | None:
    """An uploaded file as an image, or None after showing the user why it cannot be used."""
    if upload is None:
        return None
    try:
        image = read_image(upload, name=upload.name)
    except ImageInputError as exc:
        st.error(escape_markdown(str(exc)), icon=":material/error:")
        return None
    for note in image.notes:
        st.info(escape_markdown(f"{image.name}: {note}."), icon=":material/info:")
    return image


def ask_to_start(message: str, upload_key: str) -> None:
    """The first-visit hint, left out while a refused upload is in place: the page said why it cannot be used."""
    if st.session_state.get(upload_key) is None:
        st.info(message, icon=":material/upload:")


def model_unavailable(model_id: str) -> bool:
    """Show a clear message when a page's model is not installed; True if the page should stop."""
    try:
        registry.card(model_id)
        return False
    except (KeyError, registry.CardError) as exc:
        st.warning(f"Model `{model_id}` is not available: {exc}", icon=":material/warning:")
        return True


def training_notice(card: registry.Card, image: InputImage) -> str | None:
    """Says (and returns, for the record) when the installed model trained on this very image (core.audit)."""
    from core.audit import training_note

    note = training_note(card, image.pixels)
    if note:
        st.info(note, icon=":material/school:")
    return note


def with_warning(pred, note: str | None):
    """The prediction with one more warning for its record and report (a copy: a cached result stays as it was)."""
    if not note:
        return pred
    import dataclasses

    return dataclasses.replace(pred, extras={**pred.extras, "warnings": [*pred.extras.get("warnings", []), note]})


def card_expander(card: registry.Card) -> None:
    with st.expander(f"Model card: {card.title} (v{card.version})"):
        st.markdown(f"**Intended use.** {card.intended_use}")
        st.markdown(f"**Limitations.** {card.limitations}")
        data = card.data if isinstance(card.data, list) else [card.data]
        st.markdown("**Training data.**\n" + "\n".join(f"- {_fmt(d)}" for d in data))
        if card.metrics:
            st.markdown("**Measured metrics** (each keyed by the data it was measured on):")
            for dataset, values in card.metrics.items():
                st.markdown(f"- `{dataset}`: " + ", ".join(f"{k} {_num(v)}" for k, v in values.items()))
        st.caption(f"File `{card.file}` · sha256 `{card.sha256[:16]}…` · framework {card.framework} · "
                   f"reproduce: `{card.train_command}`")


def _fmt(d) -> str:
    if isinstance(d, dict):
        return " · ".join(f"{k}: {v}" for k, v in d.items())
    return str(d)


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def burst_counts(check: dict) -> str:
    """How well bursts of change marked divisions, from a burst check (core.tasks.timelapse.burst_hits summed)."""
    return (f"{check['divisions_with_a_burst']} of {check['divisions']} divisions had a burst within "
            f"{check['tolerance_frames']} frames, and {check['bursts_at_a_division']} of {check['bursts']} bursts "
            "were at a division")


def bullet_list(lines: list[str], most: int) -> str:
    """Markdown bullets of the first `most` lines, and "…" when there are more."""
    return "\n".join(f"- {line}" for line in lines[:most]) + ("\n- …" if len(lines) > most else "")


GLOSSARY = {
    "Held-out": "images kept out of training (by patient, embryo or near-duplicate group), so the figures are "
                "measured on data the model never saw",
    "Sensitivity / specificity": "the share of true positives the model calls positive / of true negatives it calls "
                                 "negative, at the decision threshold shown",
    "Balanced accuracy": "the mean of sensitivity and specificity (of each label's recall): unlike plain accuracy it "
                         "does not flatter a model that always answers the commoner label",
    "ROC-AUC": "the chance that a random positive image scores higher than a random negative one (0.5 is chance, "
               "1 perfect); it does not depend on the threshold",
    "PR-AUC": "the area under the precision–recall curve; more telling than ROC-AUC when positives are rare",
    "ECE": "expected calibration error: how far the stated probabilities are from the observed frequencies "
           "(0 is perfectly calibrated)",
    "95 % interval": "the range the figure would likely fall in on another sample of the same kind (bootstrap, "
                     "resampling whole embryos or groups)",
    "Grad-CAM": "a heat map of the image regions whose features raised the shown answer most; where the model "
                "looked, not why",
    "Occlusion map": "each square covered in turn and the image re-scored: where covering lowers the answer most",
    "mAP50": "detection quality: average precision when a found box counts if it overlaps the true one by at least "
             "half (1.0 is perfect)",
    "Dice": "overlap of a predicted outline with the true one (1.0 is identical)",
    "Viterbi path": "the most likely sequence of stages that only moves forward in time, which removes "
                    "single-frame flicker",
    "Leave-one-embryo-out": "each embryo's sequence scored by a model trained without it",
    "Perceptual hash": "a 64-bit fingerprint of an image's coarse look, used to find copies and near-copies "
                       "between training and test sets",
}


def glossary() -> None:
    """The figures' and tools' names in plain words (Home and Metrics)."""
    with st.expander("What the figures and tools mean"):
        st.markdown("\n".join(f"- **{term}**: {meaning}." for term, meaning in GLOSSARY.items()))

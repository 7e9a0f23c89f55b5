"""Widgets every page uses: safe image upload, model card expander, device line."""
from __future__ import annotations

from dataclasses import dataclass

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
        st.caption(f"Still using your last upload, {kept.name}: upload another file to replace it.")
        return kept
    ss.pop(f"{key}-kept", None)  # the user removed the file
    return None


def set_aside(key: str) -> None:
    """The uploader `key` is not drawn in this run: kept_upload brings its last file back when it is drawn again."""
    st.session_state[f"{key}-aside"] = True


def read_upload(upload) -> InputImage | None:
    """An uploaded file as an image, or None after showing the user why it cannot be used."""
    if upload is None:
        return None
    try:
        image = read_image(upload, name=upload.name)
    except ImageInputError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    for note in image.notes:
        st.info(f"{image.name}: {note}.", icon=":material/info:")
    return image


def model_unavailable(model_id: str) -> bool:
    """Show a clear message when a page's model is not installed; True if the page should stop."""
    try:
        registry.card(model_id)
        return False
    except (KeyError, registry.CardError) as exc:
        st.warning(f"Model `{model_id}` is not available: {exc}", icon=":material/warning:")
        return True


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

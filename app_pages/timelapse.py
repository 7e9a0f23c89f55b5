"""Time-lapse staging: a stage timeline and morphokinetic event times from one embryo's video or frames."""
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core import registry, synthetic
from core.datasets.gomez import PHASES, STAGE_OF_PHASE, STAGES
from core.explain import overlay
from core.results import csv_bytes
from core.sequence import (DEFAULT_MINUTES, EVENTS, VIDEO_SUFFIXES, FrameSequence, SequenceInputError, folder_stamp,
                           read_folder, read_sequence)
from core.tasks import timelapse as task
from ui.common import (HANDED, bullet_list, burst_counts, card_expander, escape_markdown, handed_path, is_handed,
                       kept_upload, model_unavailable, set_aside)
from ui.records import adopt, current_user, earlier_review, may_read_server_files, record_prediction

st.title("Time-lapse staging")
st.markdown(
    "Give the time-lapse recording of **one embryo** (a video, a zip or folder of frames, or a Gomez-layout embryo "
    "folder). Every frame is classified into a developmental stage, the stages are put in biological order over "
    "time, and the morphokinetic events (t2, t3 … t9+, tM, tSB, tB, tEB) are timed. It is a draft to check "
    "against the frames, not an annotation you can use without review."
)
if model_unavailable(task.MODEL_ID):
    st.stop()
CARD = registry.card(task.MODEL_ID)
STAGE_COLOURS = {"pronuclear": "#9ecae1", "cleavage": "#3182bd", "morula": "#fdae6b", "blastocyst": "#e6550d"}
PER_FRAME = CARD.get("arch_kwargs", {}).get("temporal", "none") == "none"  # no sequence model before the decoding
STAGE_NAMES = {"pronuclear": "Pronuclear", "cleavage": "Cleavage", "morula": "Morula", "blastocyst": "Blastocyst"}


# --- inputs -------------------------------------------------------------------------------------------------------
# cache_resource, not cache_data: a sequence is up to ~1 GB of frames, and cache_data hands each rerun a fresh copy
# (RSS grew by about 1 GB per slider move on a 5000-frame video). The page only reads the cached sequence.
@st.cache_resource(show_spinner="Reading frames…", max_entries=2)
def read_upload_sequence(sha: str, name: str, _data: bytes) -> FrameSequence:
    return read_sequence(_data, name)


@st.cache_resource(show_spinner="Reading frames…", max_entries=2)
def read_local_folder(path: str, stamp: float, recording_of: str | None = None) -> FrameSequence:
    return read_folder(path, recording_of=recording_of)


@st.cache_resource(show_spinner="Padding the crops…", max_entries=2)
def padded_crops(key: str, _seq: FrameSequence) -> FrameSequence:
    """Each crop padded with its border level, so the model sees the embryo at the size it learnt from whole-well
    frames (it reads their central square)."""
    return replace(_seq, frames=[task.crop_as_well_frame(f) for f in _seq.frames], padded_as_crops=True)


def example_sequence() -> FrameSequence:
    frames, _ = synthetic.timelapse_sequence(60, size=160, seed=1)
    return FrameSequence(frames, [f"generated_RUN{i + 1}.png" for i in range(60)], "generated example",
                         "generated in time order")


REFUSED = "refused"  # input_ui's key when it said why the input cannot be used


def input_ui() -> tuple[FrameSequence | None, str]:
    """The sequence the user chose and its cache key; (None, "") before any input, (None, REFUSED) after saying why
    it cannot be used."""
    try:
        if is_handed("timelapse"):  # a frame of an evaluation: its whole recording, at that frame
            handed = st.session_state[HANDED]
            frame = handed_path()
            seq = read_local_folder(str(frame.parent), folder_stamp(frame.parent), frame.name)
            if not handed.get("shown"):  # once: later the slider and the toggle are the user's
                handed["shown"] = True
                st.session_state["tl_frame"] = seq.names.index(frame.name) if frame.name in seq.names else 0
                st.session_state["tl_crops"] = "crops" in (handed.get("layout") or {})  # padded, as it was evaluated
            if "crops" in (handed.get("layout") or {}):
                st.info("These are tight crops of one blastocyst, numbered by a running index, not by acquisition: "
                        "their stage is what was evaluated; the event times below mean nothing.", icon=":material/info:")
            return seq, f"{frame.parent}#{frame.name}"
        sources = ["Upload video or zip", "Local folder", "Generated example"]
        if not may_read_server_files(current_user()):  # a folder is read from the server's disk
            sources.remove("Local folder")
        source = st.radio("Input", sources, horizontal=True, key="tl_source")
        if source == "Upload video or zip":
            upload = st.file_uploader("Video (MP4, AVI, MOV …) or zip of frames (PNG, JPEG, TIFF, BMP)",
                                      type=sorted(x.lstrip(".") for x in VIDEO_SUFFIXES) + ["zip"], key="tl_upload")
            upload = kept_upload("tl_upload", upload)
            if upload is None:
                return None, ""
            data = upload.getvalue()
            sha = hashlib.sha256(data).hexdigest()
            return read_upload_sequence(sha, upload.name, data), sha
        set_aside("tl_upload")
        if source == "Local folder":
            if "tl_folder" not in st.session_state:  # the box is forgotten while another input is chosen: not the path
                st.session_state["tl_folder"] = st.session_state.get("tl_folder_kept", "")
            path = st.text_input("Folder of frames on this computer (e.g. …/embryo_dataset/AA83-7)", key="tl_folder").strip()
            st.session_state["tl_folder_kept"] = path
            if not path:
                return None, ""
            folder = Path(path).expanduser()
            if not folder.is_dir():
                st.error(escape_markdown(f"{folder}: no such folder on the machine running this app."),
                         icon=":material/error:")
                return None, REFUSED
            stamp = folder_stamp(folder)
            folder = folder.absolute()  # not resolved: a linked embryo folder's annotations sit beside the link
            return read_local_folder(str(folder), stamp), f"{folder}@{stamp}"
        st.info("A drawn, synthetic sequence to try the page with: the model was not made for it, so its stages "
                "and event times mean nothing biologically.", icon=":material/draw:")
        return example_sequence(), "generated-example"
    except SequenceInputError as exc:
        st.error(escape_markdown(str(exc)), icon=":material/error:")
        return None, REFUSED
    except OSError as exc:  # a folder of this machine that cannot be listed or read (e.g. /proc, no permission)
        st.error(escape_markdown(f"{exc.filename or 'The folder'}: cannot be read here ({exc.strerror or exc})."),
                 icon=":material/error:")
        return None, REFUSED


def describe_input(seq: FrameSequence) -> None:
    st.caption(f"{len(seq)} frame{'s' if len(seq) != 1 else ''} from {escape_markdown(Path(seq.source).name)} · "
               f"time order: {seq.order_rule}"
               + (" · phase annotations found: the true phases are drawn under the prediction" if seq.true_phases else ""))
    if seq.order_unknown:
        st.warning(task.ORDER_UNKNOWN, icon=":material/sort:")
    for note in seq.notes:
        st.info(note[0].upper() + note[1:] + ".", icon=":material/info:")
    if seq.time_table_problem:
        st.warning(seq.time_table_problem, icon=":material/schedule:")
    numbers = seq.frame_numbers
    if "RUN" in seq.order_rule and numbers and numbers[-1] - numbers[0] + 1 > len(numbers):
        missing = numbers[-1] - numbers[0] + 1 - len(numbers)
        st.caption(f"RUN numbers go from {numbers[0]} to {numbers[-1]}: {missing} acquisition"
                   f"{' is' if missing == 1 else 's are'} missing, so times follow the "
                   + ("time table" if seq.recorded_hours else "RUN numbers") + ", not the frame count.")
    if seq.skipped:
        st.warning(f"{len(seq.skipped)} item(s) could not be used and were left out; the other frames were staged:\n\n"
                   + bullet_list(seq.skipped, 8),
                   icon=":material/warning:")


# --- cached work (the progress bar is created inside, so a cache hit replays nothing stale) -------------------------
@st.cache_data(show_spinner=False, max_entries=8)
def stage_sequence(key: str, version: str, _seq: FrameSequence):
    bar = st.progress(0.0, text="Classifying frames…")
    pred = task.predict_sequence(task.MODEL_ID, _seq,
                                 progress=lambda done, total: bar.progress(done / total, text=f"Classified {done} of {total} frames"))
    bar.empty()
    return pred


@st.cache_data(show_spinner="Computing heat map…", max_entries=64)
def heat_map(key: str, frame: int, version: str, _image: np.ndarray) -> np.ndarray:
    return registry.load(task.MODEL_ID).explain(_image, "stage")


# --- drawing --------------------------------------------------------------------------------------------------------
def timeline(pred, frame: int) -> go.Figure:
    x = pred.extras
    hours = np.asarray(x["hours"])
    probs = np.asarray(x["stage_probs"])
    has_truth = "true_phase" in x
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.38, 0.13, 0.36, 0.13],
                        subplot_titles=("Stage probability of each frame" + ("" if PER_FRAME else " (in context of the sequence)"),
                                        "Stage: decoded in biological order" + (" vs annotation" if has_truth else ""),
                                        "Phase", "Change between frames: divisions show as bursts, and so does movement"))
    for i, s in enumerate(STAGES):
        fig.add_trace(go.Scatter(x=hours, y=100 * probs[:, i], name=STAGE_NAMES[s], stackgroup="p", mode="none",
                                 fillcolor=STAGE_COLOURS[s], hovertemplate="%{y:.1f} %"), row=1, col=1)
    strips = [("model", x["stage_decoded"])] + ([("annotation", [STAGE_OF_PHASE.get(p) if p else None
                                                                 for p in x["true_phase"]])] if has_truth else [])
    z = [[STAGES.index(s) if s else None for s in row] for _, row in strips]
    scale = [[i / 3, STAGE_COLOURS[s]] for i, s in enumerate(STAGES)]
    fig.add_trace(go.Heatmap(x=hours, y=[n for n, _ in strips], z=z, zmin=0, zmax=3, colorscale=scale, showscale=False,
                             customdata=[[STAGE_NAMES.get(s, "not annotated") if s else "not annotated" for s in row]
                                         for _, row in strips],
                             hovertemplate="%{y}: %{customdata}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(x=hours, y=x["phase_raw"], mode="markers", name="phase, frame by frame",
                             marker=dict(size=3, color="#bbbbbb")), row=3, col=1)
    if has_truth:
        fig.add_trace(go.Scatter(x=hours, y=[p if p else None for p in x["true_phase"]], mode="lines",
                                 name="annotated phase", line=dict(color="#31a354", width=7), opacity=0.45,
                                 connectgaps=False), row=3, col=1)
    fig.add_trace(go.Scatter(x=hours, y=x["phase_decoded"], mode="lines", name="phase, decoded",
                             line=dict(color="#08306b", width=2, shape="hv")), row=3, col=1)
    calls = [e for e in x["events"] if e.get("reviewed_hours") is not None]
    if calls:
        fig.add_trace(go.Scatter(x=[e["reviewed_hours"] for e in calls], y=[e["event"] for e in calls],
                                 mode="markers", name="event set by the reviewer",
                                 marker=dict(symbol="star", size=13, color="#31a354", line=dict(color="#005a32", width=1)),
                                 hovertemplate="%{y} set at %{x:.2f} h<extra></extra>"), row=3, col=1)
    fig.add_trace(go.Bar(x=hours, y=x["burst_strength"], name="burst of change",  # grey: below a burst's level
                         marker_color=["#de2d26" if b >= task.BURST else "#bdbdbd" for b in x["burst_strength"]],
                         hovertemplate="%{x:.1f} h: %{y:.2f}<extra></extra>"), row=4, col=1)
    fig.update_yaxes(title_text="%", range=[0, 100], row=1, col=1)
    fig.update_yaxes(range=[0, 1], tickvals=[0, 1], row=4, col=1)
    fig.update_yaxes(categoryorder="array", categoryarray=PHASES, tickmode="array", tickvals=PHASES, row=3, col=1)
    at_hours: dict[float, list[str]] = {}  # events seen as their own phase; several at one time share a label
    for ev in x["events"]:
        if ev.get("seen", True) and ev["hours"] is not None:  # not an event only the reviewer set
            at_hours.setdefault(ev["hours"], []).append(ev["event"] + ("?" if not ev.get("trained", True) else ""))
    for k, (h, names) in enumerate(sorted(at_hours.items())):
        fig.add_vline(x=h, line=dict(color="#444", width=1, dash="dot"))
        fig.add_annotation(x=h, y=1.06 + 0.035 * (k % 2), yref="paper", text="/".join(names), showarrow=False,
                           font=dict(size=10))
    fig.add_vline(x=hours[frame], line=dict(color="crimson", width=2))
    fig.update_xaxes(title_text=f"{time_unit(pred)[1]} ({timing_source(pred)})", row=4, col=1)
    fig.update_layout(height=740, margin=dict(t=100, b=40, l=60, r=20), legend=dict(orientation="h", y=-0.12))
    return fig




def time_unit(pred) -> tuple[str, str]:
    """Short and long names of the page's hours: after insemination when the first frame's time was given."""
    if pred.extras.get("time_zero") == "insemination":
        return "hpi", "hours after insemination"
    return "h from first frame", "hours from the first frame"


def timing_source(pred) -> str:
    x = pred.extras
    return (f"recorded times, {x['time_table']}" if x.get("minutes_per_frame") is None
            else f"{x['minutes_per_frame']:g} min between frames")


def review_calls(seq: FrameSequence) -> dict[str, int]:
    """The reviewer's frame for each event checked in this recording, kept per recording (its frames' sha256) for the
    session: the crops toggle, the timing or another embryo looked at in between do not lose them."""
    return st.session_state.setdefault(f"tl_calls_{seq.sha256[:16] or seq.source}", {})


def offer_earlier_review(seq: FrameSequence, calls: dict[str, int], revises: str) -> None:
    """Event frames set on this recording before (a reload forgets the session's), to restore in one click."""
    if calls or not seq.sha256 or not (earlier := earlier_review(
            seq.sha256, task.MODEL_ID, CARD.version, "events", called="reviewed_frame",
            matching={"padded_as_crops": seq.padded_as_crops})):  # that staging's record goes on
        return
    kept = {e["event"]: e["reviewed_frame"] for e in earlier.summary["events"] if e.get("reviewed_frame") is not None}
    st.info(f"This recording was reviewed before: record #{earlier.id} of {earlier.created_at.astimezone():%Y-%m-%d %H:%M} "
            f"holds your frames for {', '.join(kept)}.", icon=":material/history:")

    def restore() -> None:
        calls.update(kept)
        adopt(earlier, "timelapse", revises)  # its record goes on, in its case

    st.button("Restore those event frames", key=f"tl_restore_{seq.sha256[:16]}", on_click=restore,
              icon=":material/restore:")


def review_ui(seq: FrameSequence, pred, frame: int, calls: dict[str, int]) -> None:
    """Step through frames and set an event at the frame on screen (the list then moves on to the next event): the
    reviewer's time replaces the draft's in the headline, the intervals, the record and the report."""
    n_frames = len(seq)

    def step(by: int) -> None:
        st.session_state["tl_frame"] = min(max(st.session_state.get("tl_frame", 0) + by, 0), n_frames - 1)

    def put(event: str) -> None:
        calls[event] = frame
        if event != EVENTS[-1]:
            st.session_state["tl_review_event"] = EVENTS[EVENTS.index(event) + 1]

    back5, back, forward, forward5, which, setting, clear = st.columns([1, 1, 1, 1, 2, 2, 2],
                                                                       vertical_alignment="bottom")
    for column, by, label in ((back5, -5, "◀◀ 5"), (back, -1, "◀ 1"), (forward, 1, "1 ▶"), (forward5, 5, "5 ▶▶")):
        column.button(label, key=f"tl_step_{by}", on_click=step, args=(by,), width="stretch",
                      disabled=not 0 <= frame + (1 if by > 0 else -1) < n_frames,
                      help=f"{'Back' if by < 0 else 'On'} {abs(by)} frame{'s' * (abs(by) > 1)}")
    event = which.selectbox("Event", EVENTS, index=EVENTS.index("t2"), key="tl_review_event",
                            help="The first frame that shows the event (e.g. t2: the first frame with two cells).")
    setting.button(f"Set {event} at frame {frame}", key="tl_review_set", width="stretch", on_click=put, args=(event,))
    clear.button(f"Clear {event}" + (f" (frame {calls[event]})" if event in calls else ""), key="tl_review_clear",
                 width="stretch", disabled=event not in calls, on_click=lambda: calls.pop(event, None))
    checked = [e for e in pred.extras["events"] if e.get("reviewed_frame") is not None]
    if checked:
        st.caption("Set by you: " + ", ".join(
            f"{e['event']} at frame {e['reviewed_frame']} ({Path(seq.names[e['reviewed_frame']]).stem}, "
            f"{e['reviewed_hours']:.1f} {time_unit(pred)[0]})" for e in checked)
                   + ". Kept with this recording's record and its report.")
    out_of_order_warning(pred)


def out_of_order_warning(pred) -> None:
    if pred.extras.get("events_out_of_order"):
        st.warning(f"Event times out of biological order: {pred.extras['events_out_of_order']}. Check those frames "
                   "(Frame tab).", icon=":material/swap_vert:")


def frame_picker(n_frames: int, bursts: list[int]) -> int:
    """The frame slider, with buttons that jump to the previous / next burst of change (frames worth checking)."""
    def jump(step: int) -> None:
        now = st.session_state.get("tl_frame", 0)
        ahead = [b for b in bursts if b > now] if step > 0 else [b for b in bursts if b < now][::-1]
        if ahead:
            st.session_state["tl_frame"] = ahead[0]

    if n_frames == 1:
        st.caption("One frame: nothing to move through.")
        return 0
    slider, back, forward = st.columns([8, 1, 1], vertical_alignment="bottom")
    frame = slider.slider("Frame", 0, n_frames - 1, key="tl_frame")
    why = "a division, or blastomeres or the whole embryo moving"
    back.button("◀ burst", key="tl_prev_burst", on_click=jump, args=(-1,), disabled=not bursts, width="stretch",
                help=f"Go to the previous burst of change between frames ({why})")
    forward.button("burst ▶", key="tl_next_burst", on_click=jump, args=(1,), disabled=not bursts, width="stretch",
                   help=f"Go to the next burst of change between frames ({why})")
    return frame


def burst_note() -> str:
    text = ("Bottom: bursts of change between consecutive frames, to find frames worth checking: a cell division shows "
            "as a burst, but so do blastomeres shifting and the embryo moving")
    check = CARD.metrics.get("gomez2022/division-bursts")
    if check:
        text += f" (in {check['sequences']} annotated Gomez sequences, {burst_counts(check)})"
    return text + "."


def events_view(pred) -> None:
    unit = time_unit(pred)[0]
    table = task.events_table(pred)
    if table.empty:
        st.info("No stage transition was found in this sequence (every frame is in one phase).")
    else:
        first = [c for c in ("event", "frame", "frame_name", "hours", "reviewed_frame", "reviewed_hours",
                             "error_frames", "error_hours") if c in table]
        table = table[first + [c for c in table if c not in first]]  # the errors in sight, the long texts after
        shown = table.rename(columns={  # the file name carries the instrument's own number (e.g. RUN123)
            "frame": "frame (from 0)", "frame_name": "frame file", "hours": f"time ({unit})",
            "reviewed_frame": "your frame (from 0)", "reviewed_hours": f"your time ({unit})",
            "reading": "how to read it", "nearest_burst": "nearest burst (frame)",
            "true_frame": "annotated frame (from 0)", "true_hours": f"annotated time ({unit})",
            "error_frames": "draft's error (acquisitions, + = late)", "error_hours": "draft's error (h, + = late)"})
        if "reviewed_frame" in table:  # as text: "—" where no frame was set ("None" before)
            shown["your frame (from 0)"] = [str(f) if pd.notna(f) else "—" for f in table["reviewed_frame"]]
            shown[f"your time ({unit})"] = [f"{h:.2f}" if pd.notna(h) else "—" for h in table["reviewed_hours"]]
        text = shown.select_dtypes(include=["object", "str"]).columns
        shown[text] = shown[text].fillna("—")  # an event never reached has no frame file ("None" before)

        def go_to_event() -> None:
            rows = st.session_state["tl_events_table"].selection.rows
            frame = table["frame"].iloc[rows[0]] if rows else None
            if rows and pd.isna(frame) and "reviewed_frame" in table:  # an event only the reviewer set
                frame = table["reviewed_frame"].iloc[rows[0]]
            if frame is not None and not pd.isna(frame):
                st.session_state["tl_frame"] = int(frame)

        st.dataframe(shown, hide_index=True, width="stretch", on_select=go_to_event, selection_mode="single-row",
                     key="tl_events_table")
    intervals_view(pred)
    name = Path(pred.input_name).stem or "sequence"
    c1, c2, c3 = st.columns(3)
    csv = table.rename(columns={"hours": "hpi", "true_hours": "true_hpi", "reviewed_hours": "reviewed_hpi"}) \
        if unit == "hpi" else table  # not error_hours
    c1.download_button("Download events (CSV)", csv_bytes(csv), f"{name}-events.csv", "text/csv",
                       key="tl_events_csv", on_click="ignore")
    c2.download_button("Download intervals (CSV)", csv_bytes(pd.DataFrame(pred.extras["intervals"])),
                       f"{name}-intervals.csv", "text/csv", key="tl_intervals_csv", on_click="ignore")
    c3.download_button("Download every frame (CSV)", csv_bytes(task.timeline_table(pred)),
                       f"{name}-frames.csv", "text/csv", key="tl_frames_csv", on_click="ignore")
    runs = [m for k, m in CARD.metrics.items()  # the shipped recipe's folds and its reruns with other seeds
            if k.startswith("gomez2022/leave-one-embryo-out") and m.get("median_abs_error_frames_t2_t5") is not None]
    if runs:
        errors = sorted(m["median_abs_error_frames_t2_t5"] for m in runs)
        low, high = errors[0], errors[-1]
        spread = f"{low:g}" if low == high else f"{low:g} to {high:g}"
        hours = " to ".join(dict.fromkeys(f"{e * DEFAULT_MINUTES / 60:.1f}" for e in (low, high)))
        st.caption(f"How close to expect: on {runs[0]['folds']} complete Gomez sequences, each left out of training in "
                   f"turn, t2–t5 were off by a median of {spread} frames"
                   + (f" over {len(errors)} training runs with different seeds" if len(errors) > 1 else "")
                   + f" (about {hours} h at {DEFAULT_MINUTES:g} min per frame; a faster camera does not make the model "
                   "more exact in hours), and single events by many hours. Check every event on its frames.")
    st.caption("Click an event's row to move the frame slider to it. "
               "An event is the first frame decoded at that phase or later. A phase no frame was decoded as is "
               "marked skipped and shares the next event's time: check those frames before reading it as a direct "
               "cleavage. An event first seen after a gap (missing acquisitions, or a pause of the instrument in "
               "recorded times) happened between the frame before the gap and that frame: both times are given. "
               "Phases no training frame showed are marked as guesses (“?” on the chart). Events before the first "
               "frame are not listed. Nearest burst: the closest burst of change within "
               f"{task.NEAREST_BURST} frames of the event, a frame to look at when checking it.")


def intervals_view(pred) -> None:
    st.markdown("**Morphokinetic intervals**")
    rows = pd.DataFrame(pred.extras["intervals"]).reindex(columns=["interval", "meaning", "hours", "from"])
    rows["hours"] = [("—" if pd.isna(h) else f"{h:.2f}" + (" ⚠ negative: events out of order" if h < 0 else ""))
                     for h in rows["hours"]]
    st.dataframe(rows.rename(columns={"from": "times from"}), hide_index=True, width="stretch", key="tl_intervals")
    st.caption("Each interval uses the frames you set (Frame tab) where you set them, else the draft events. A draft "
               "event can be off by hours (see below), so a draft interval is only as good as both of its events: s2 "
               "and s3 are normally under a few hours, and only reviewed ones mean much. Nomenclature of Ciray et al. "
               "2014 (t5 − t2 as Meseguer et al. 2011).")


def frame_view(seq: FrameSequence, pred, key: str, frame: int) -> None:
    x = pred.extras
    image = seq.frames[frame]
    before, now = st.columns(2)
    if frame > 0:  # a division or a fading pronucleus is judged against the frame before
        before.image(seq.frames[frame - 1], width="stretch",
                     caption=f"Frame {frame - 1} (the one before) · {x['hours'][frame - 1]:.1f} {time_unit(pred)[0]}")
    now.image(image, caption=f"Frame {frame} · {x['hours'][frame]:.1f} {time_unit(pred)[0]} · {seq.names[frame]}",
              width="stretch")
    mid, right = st.columns(2)
    with mid:
        stage = x["stage_decoded"][frame]
        st.metric("Stage (decoded)", STAGE_NAMES[stage], help=f"{CARD.id} v{pred.model_version}")
        burst = float(x["burst_strength"][frame])
        st.caption(f"Phase: {x['phase_decoded'][frame]}"
                   + (f" · annotated: {x['true_phase'][frame] or 'not annotated'}" if "true_phase" in x else "")
                   + (f" · burst of change from the frame before ({burst:.2f})" if burst >= task.BURST else ""))
        probs = np.asarray(x["stage_probs"])[frame]
        st.dataframe(pd.DataFrame({"stage": [STAGE_NAMES[s] for s in STAGES],
                                   "probability": [f"{100 * p:.1f} %" for p in probs]}), hide_index=True, width="stretch")
        st.caption(("Probabilities of this frame alone (only the decoded paths use the whole sequence)" if PER_FRAME
                    else "Probabilities in the context of the sequence") + f", {CARD.id} v{pred.model_version}.")
    with right:
        try:
            heat = heat_map(key, frame, pred.model_version, image)
            crop = CARD.input.get("centre_crop")
            st.image(overlay(image, heat, 0.45), width="stretch",
                     caption="Heat map: regions driving this frame's stage (Grad-CAM of the per-frame encoder)"
                             + (f"; the model reads only the central {crop * 100:.0f} % square" if crop else ""))
        except Exception as exc:  # an explanation failure must not hide the timeline
            st.warning(f"No heat map for this frame: {exc}")


# --- page -----------------------------------------------------------------------------------------------------------
seq, key = input_ui()
recorded = seq is not None and seq.recorded_hours is not None and st.toggle(
    f"Use the recorded times ({escape_markdown(seq.time_table)})", value=True, key="tl_recorded",
    help="The instrument's own hours after insemination for each frame, read from the time table that came with the "
         "frames. Off: times are counted from the minutes between frames, which you give.")
if recorded:  # the boxes are not shown, their values are kept for when the table is turned off
    minutes = st.session_state.get("tl_minutes_kept", DEFAULT_MINUTES)
    first_hpi = st.session_state.get("tl_first_hpi_kept")
    steps = np.diff(seq.recorded_hours) * 60
    st.caption(f"Times are the instrument's hours after insemination: first frame at {seq.recorded_hours[0]:.2f} hpi, "
               f"{np.median(steps) if len(steps) else 0:.0f} min between frames as a rule"
               + (f" (from {steps.min():.0f} to {steps.max():.0f} min)" if len(steps) and steps.max() > steps.min()
                  else "") + ".")
else:
    for box, default in (("tl_minutes", DEFAULT_MINUTES), ("tl_first_hpi", None)):  # as last typed, also after
        if box not in st.session_state:  # the recorded times were used (a box not shown forgets its value)
            st.session_state[box] = st.session_state.get(f"{box}_kept", default)
    interval, start = st.columns(2)
    minutes = interval.number_input("Minutes between frames", min_value=0.5, max_value=240.0, step=0.5, key="tl_minutes",
                                    help=f"Between acquisitions; default {DEFAULT_MINUTES:g} min, a usual EmbryoScope "
                                         "interval. Event times in hours depend on it; frame numbers do not. A video "
                                         "that repeats each acquisition has its repeats merged first.")
    first_hpi = start.number_input("First frame at (hours after insemination)", min_value=0.0, max_value=200.0,
                                   value=None, step=0.25, key="tl_first_hpi",
                                   placeholder="not given: hours from the first frame",
                                   help="From the instrument's record of this embryo. Given, event times are in hours "
                                        "after insemination (hpi), the scale published timings use; left empty, they "
                                        "count from the first frame and cannot be compared with those.")
    st.session_state["tl_minutes_kept"], st.session_state["tl_first_hpi_kept"] = minutes, first_hpi
crops = st.toggle("Frames are crops around the embryo", key="tl_crops",
                  help="Whole-well EmbryoScope frames need nothing: the model reads their central "
                       f"{CARD.input.get('centre_crop', 1) * 100:.0f} % square, where the embryo sits. Frames cut "
                       "tightly around the embryo (such as the Gomez blastocyst crops) are padded with their border's "
                       "grey level first, so the embryo appears at the size the model learnt.")
if seq is None:
    if key != REFUSED:
        st.info("Upload a video or zip, " + ("give a local folder, " if may_read_server_files(current_user()) else "")
                + "or pick the generated example to start.",
                icon=":material/upload:")
else:
    describe_input(seq)
    if crops:
        seq, key = padded_crops(key, seq), f"{key}#crops"
    try:
        staged = stage_sequence(key, CARD.version, seq)
        calls = review_calls(seq)
        revises = f"{key}@{CARD.version}"  # one record per staging: re-timed and reviewed in place
        offer_earlier_review(seq, calls, revises)
        pred = task.reviewed(task.retimed(staged, float(minutes), first_hpi, recorded=recorded), calls)
    except (ValueError, RuntimeError) as exc:
        st.error(f"The sequence could not be staged: {exc}")
        pred = None
    if pred is not None:
        span_h = pred.extras["hours"][-1] - pred.extras["hours"][0]
        st.success(f"Last frame: **{STAGE_NAMES[pred.extras['current_stage']]}** · {len(seq)} "
                   f"frame{'s' if len(seq) != 1 else ''} over {span_h:.1f} h · staged in "
                   f"{pred.timings_ms['total'] / 1000:.1f} s ({CARD.id} v{pred.model_version})")
        headline = task.headline(pred, time_unit(pred)[0])
        if headline:  # the times most asked for, at the top; the Events tab has every event and how to read it
            st.markdown(headline)
        out_of_order_warning(pred)
        for warning in task.timing_warnings(pred.extras["hours"]):  # the input's own were said with it above
            st.warning(warning, icon=":material/schedule:")
        record_prediction(pred, "timelapse", revises=revises)
        frame = frame_picker(len(seq), task.burst_frames(pred.extras["burst_strength"]))
        st.caption(f"Frame {frame} (counted from 0) is **{escape_markdown(Path(seq.names[frame]).name)}**, "  # the file
                   f"at {pred.extras['hours'][frame]:.2f} {time_unit(pred)[0]}.")  # carries the instrument's RUN number
        st.plotly_chart(timeline(pred, frame), width="stretch", key="tl_timeline")
        st.caption("Top: probability of each stage at each frame. Middle: the stage path forced to move forward only "
                   "(Viterbi), which removes single-frame flickers. Phase: decoded the same way; grey dots "
                   "are the frame-by-frame answers" + (", the wide green line the annotation. " if "true_phase" in
                                                       pred.extras else ". ") + burst_note())
        tab_events, tab_frame, tab_whatif = st.tabs(  # keyed: a warning appearing above does not reset the tab
            ["Events", "Frame", "What-if on this frame"], key="tl_tabs", on_change="rerun",
            default="What-if on this frame" if is_handed("timelapse") else None)
        with tab_events:
            events_view(pred)
        with tab_frame:
            review_ui(seq, pred, frame, calls)
            frame_view(seq, pred, key, frame)
        with tab_whatif:
            from core.whatif import model_explain, model_predict
            from ui.whatif import whatif_panel

            model = registry.load(task.MODEL_ID)
            st.caption("The what-if tools read this frame alone" + (", as the probabilities above do." if PER_FRAME else
                       ", without the sequence context the probabilities above have."))
            whatif_panel(seq.frames[frame], model_predict(model), key="tl-whatif", explain=model_explain(model),
                         cache_key=f"{CARD.id}@{CARD.version}", wording=CARD.wording)
card_expander(CARD)

"""Time-lapse staging (`timelapse-stage`): a per-frame CNN encoder plus a temporal model over the whole sequence.

The card's outputs (`stage`, `phase`) are the encoder's per-frame heads, so Model.predict/explain work on one
frame (what-if, Grad-CAM). A sequence goes through `predict_sequence`: frames encoded in batches by the loaded
module's `embed`, then its temporal head (`sequence`; "none" passes the per-frame logits through, "gru"/"tcn" add a
learnt correction), then the left-to-right Viterbi of core.sequence and the event times.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import WEIGHTS_DIR, audit, registry
from ..datasets import gomez
from ..datasets.gomez import PHASES, STAGE_OF_PHASE, STAGES
from ..imageio import IMAGE_SUFFIXES
from ..preprocess import centre_square, normalise
from ..results import Prediction
from ..sequence import (DEFAULT_MINUTES, EVENTS, MAX_CULTURE_H, MIN_FRAME_SIDE, VIDEO_SUFFIXES, FrameSequence,
                        burst_strength, decode, event_frames, frame_change, interval_fields, read_sequence,
                        time_table_problem)

MODEL_ID = "timelapse-stage"
SIZE = 160  # 160 beat 112 on leave-one-embryo-out (median t2–t5 error 5.5 vs 32.5 frames; scripts/gpu_train.py)
LOAD = 200  # training images are kept at this size and warped to SIZE by the augmentation
WELL_FRACTION = 0.6  # the model reads the central 60 % of a whole-well frame, where the embryo sits (card: centre_crop)
CROP_FILL = 0.85  # an embryo crop (blastocyst crops, Hung Vuong) spans this much of the model's input
EMB = 96
BATCH = 64  # frames per encoder batch at inference
TEMPORALS = ("none", "gru", "tcn")  # sequence models compared on the leave-one-embryo-out folds
TEMPORAL = "none"  # shipped: per-frame probabilities straight to the Viterbi won on those folds (see the card)
HELDOUT_PERCENT = 30  # embryos whose stable hash falls below this are never trained on
MIN_SEQUENCE = 30  # embryos with fewer frames are sparse samples: evaluation only
MAX_TRAIN_FRAMES = 60_000  # the full public set (704 embryos) is subsampled in time to stay within memory
SWITCH_COST = 4.0  # Viterbi cost of one stage/phase change, log units
BURST = 0.5  # burst strength shown as a burst of change (page, events table, division_burst_check)
BURST_TOLERANCE = 3  # frames between a burst and an annotated division for either to count as found
NEAREST_BURST = 8  # the events table names the closest burst at most this many frames from each event
EPOCHS = 60  # encoder epochs (1024 frames each): 60 beat 30 on the leave-one-embryo-out folds
TEMPORAL_STEPS = 400  # training steps of the temporal head on frozen encoder embeddings
STAGE_IDX = np.array([STAGES.index(STAGE_OF_PHASE[p]) for p in PHASES])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- network ---------------------------------------------------------------------------------------------
def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TemporalConv(nn.Module):
    """Non-causal dilated residual 1-D convolutions (receptive field 63 frames)."""

    def __init__(self, width: int, dilations=(1, 2, 4, 8, 16)):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, width, 3, padding=d, dilation=d), nn.GELU(), nn.Dropout(0.1)) for d in dilations
        )

    def forward(self, h):  # (B, T, C)
        h = h.transpose(1, 2)
        for block in self.blocks:
            h = h + block(h)
        return h.transpose(1, 2)


class TemporalGRU(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.gru = nn.GRU(width, width // 2, batch_first=True, bidirectional=True)

    def forward(self, h):
        return self.gru(h)[0]


class TimelapseNet(nn.Module):
    def __init__(self, temporal: str = TEMPORAL, width: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(
            _conv(1, 16, 2), nn.MaxPool2d(2),  # 112 -> 56 -> 28
            _conv(16, 32), _conv(32, 32), nn.MaxPool2d(2),  # 14
            _conv(32, 64), _conv(64, 64), nn.MaxPool2d(2),  # 7
            _conv(64, EMB),  # index 8: Grad-CAM layer (7 x 7)
        )
        self.drop = nn.Dropout(0.3)
        self.stage_head = nn.Linear(EMB, len(STAGES))
        self.phase_head = nn.Linear(EMB, len(PHASES))
        self.temporal_kind = temporal
        if temporal != "none":
            self.project = nn.Sequential(nn.Dropout(0.2), nn.Linear(EMB + len(STAGES) + len(PHASES), width), nn.GELU())
            self.temporal = TemporalGRU(width) if temporal == "gru" else TemporalConv(width)
            self.delta = nn.Linear(width, len(STAGES) + len(PHASES))

    def embed(self, x):  # (N, 1, H, W) -> (N, EMB)
        return self.encoder(x).mean(dim=(2, 3))

    def frame_logits(self, e):
        e = self.drop(e)
        return self.stage_head(e), self.phase_head(e)

    def forward(self, x):
        s, p = self.frame_logits(self.embed(x))
        return torch.softmax(s, 1), torch.softmax(p, 1)

    def sequence_logits(self, e):  # (B, T, EMB) -> per-frame logits corrected by the temporal context, if any
        s, p = self.frame_logits(e)
        if self.temporal_kind == "none":
            return s, p
        h = self.temporal(self.project(torch.cat([e, s.detach(), p.detach()], dim=-1)))
        d = self.delta(h)
        return s + d[..., : len(STAGES)], p + d[..., len(STAGES):]

    def sequence(self, e):
        s, p = self.sequence_logits(e)
        return torch.softmax(s, -1), torch.softmax(p, -1)


def build_net(temporal: str = TEMPORAL, width: int = 64) -> TimelapseNet:
    return TimelapseNet(temporal, width)


# --- inference -------------------------------------------------------------------------------------------
def _tensor(model, x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(model.device)


def sequence_probabilities(model, frames: list[np.ndarray], progress=None, batch: int = BATCH):
    """(stage (T, 4), phase (T, 16)) probabilities of every frame, in context, and the (T,) burst strength of the
    change between the model's inputs; progress(done, total) per batch."""
    net = model.net
    embs, changes, last = [], [], None
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            x = model.prepare(frames[start:start + batch])
            embs.append(net.embed(_tensor(model, x)))
            change, last = frame_change(x, last)
            changes.append(change)
            if progress:
                progress(min(start + batch, len(frames)), len(frames))
        s, p = net.sequence(torch.cat(embs)[None])
    return s[0].cpu().numpy(), p[0].cpu().numpy(), burst_strength(np.concatenate(changes))


def predict_sequence(model_id: str, seq: FrameSequence, minutes_per_frame: float = DEFAULT_MINUTES,
                     device: str | None = None, progress=None, switch_cost: float = SWITCH_COST) -> Prediction:
    """One Prediction for a whole sequence: per-frame probabilities, raw and decoded stage/phase, event times."""
    model = registry.load(model_id, device)
    t0 = time.perf_counter()
    stage_p, phase_p, bursts = sequence_probabilities(model, seq.frames, progress)
    t1 = time.perf_counter()
    stage_dec, phase_dec = decode(stage_p, phase_p, switch_cost)
    untrained = set(model.card.get("untrained_phases", []))
    # seen: some frame is decoded as this very phase (else it was skipped and shares the next event's frame)
    events = [{"event": ev, "frame": f, "frame_name": seq.names[f], "seen": PHASES[phase_dec[f]] == ev,
               "trained": ev not in untrained} for ev, f in event_frames(phase_dec).items()]
    extras = {
        "n_frames": len(seq),
        "order_rule": seq.order_rule,
        "skipped": list(seq.skipped),
        "frame_names": list(seq.names),
        "acquisitions": acquisition_steps(seq),
        "stage_probs": stage_p.round(5),
        "phase_probs": phase_p.round(5),
        "stage_raw": [STAGES[i] for i in stage_p.argmax(1)],
        "stage_decoded": [STAGES[i] for i in stage_dec],
        "phase_raw": [PHASES[i] for i in phase_p.argmax(1)],
        "phase_decoded": [PHASES[i] for i in phase_dec],
        "burst_strength": bursts.round(3),
        "events": events,
        "current_stage": STAGES[stage_dec[-1]],
        "current_phase": PHASES[phase_dec[-1]],
        "input_warnings": input_warnings(seq),
        "padded_as_crops": seq.padded_as_crops,
    }
    if seq.recorded_hours is not None:
        extras["recorded_hours"] = np.asarray(seq.recorded_hours)
        extras["time_table"] = seq.time_table
    if seq.true_phases is not None:
        extras["true_phase"] = list(seq.true_phases)
        annotated = set(seq.true_phases)  # an event the annotator skipped (t2 straight to t4) has no annotated time
        extras["true_events"] = {e: f for e, f in event_frames([PHASES.index(p) if p else None
                                                                for p in seq.true_phases]).items() if e in annotated}
        steps = extras["acquisitions"]
        for e in events:  # for the record and its report: how far each event is from the annotation, in acquisitions
            if e["event"] in extras["true_events"]:
                e["annotated_frame"] = extras["true_events"][e["event"]]
                e["error_frames"] = int(steps[e["frame"]] - steps[e["annotated_frame"]])
    # no per-output probabilities: the result is the decoded timeline (the last frame's raw answer was recorded
    # as "the" stage, and disagreed with the page's decoded one)
    pred = Prediction(MODEL_ID, model.card.version, seq.source, seq.sha256, extras=extras,
                      timings_ms={"model": (t1 - t0) * 1000, "total": (time.perf_counter() - t0) * 1000})
    return retimed(pred, minutes_per_frame)


ORDER_UNKNOWN = ("The frames' names carry no frame numbers: they were put in name order, which may not be their time "
                 "order. If it is not, the timeline and every event are meaningless.")


def input_warnings(seq: FrameSequence) -> list[str]:
    """What the user must know of how the frames were read, kept with the record and its report."""
    damaged = [s for s in seq.skipped if "declares" in s]  # a cut video: times after the damage may be early
    warnings = [n[0].upper() + n[1:] + "." for n in seq.notes + damaged]
    if seq.order_unknown:
        warnings.append(ORDER_UNKNOWN)
    if seq.time_table_problem:
        warnings.append(seq.time_table_problem)
    if len(seq.skipped) > len(damaged):
        warnings.append(f"{len(seq.skipped) - len(damaged)} item(s) of the input could not be used and were left out.")
    return warnings


def acquisition_steps(seq: FrameSequence) -> np.ndarray:
    """Acquisitions since the first frame, per frame: from the RUN<k> numbers when every frame has one (a sampled
    or gappy Gomez sequence keeps its real times), else one per frame."""
    if seq.frame_numbers is not None:
        return np.asarray(seq.frame_numbers) - seq.frame_numbers[0]
    return np.arange(len(seq))


def retimed(pred: Prediction, minutes_per_frame: float, first_frame_hpi: float | None = None,
            recorded: bool = True) -> Prediction:
    """The prediction with hours for another timing (nothing is re-classified): the instrument's recorded hours
    after insemination when the input had a time table (and `recorded`), else frames `minutes_per_frame` apart, in
    hours after insemination when the first frame's is given, else from the first frame (`time_zero` says which)."""
    x = pred.extras
    steps = np.asarray(x["acquisitions"])
    if recorded and x.get("recorded_hours") is not None:
        hours = np.asarray(x["recorded_hours"], dtype=float).round(3)
        timing = {"minutes_per_frame": None, "time_zero": "insemination", "first_frame_hpi": float(hours[0]),
                  "timed_by": f"the time table {x['time_table']}"}
    else:
        hours = (steps * minutes_per_frame / 60.0 + (first_frame_hpi or 0.0)).round(3)
        timing = {"minutes_per_frame": float(minutes_per_frame), "first_frame_hpi": first_frame_hpi,
                  "time_zero": "first frame" if first_frame_hpi is None else "insemination",
                  "timed_by": "the minutes between frames"}
    x = {**x, **timing, "hours": hours, "warnings": list(x.get("input_warnings", [])) + timing_warnings(hours)}
    return replace(pred, extras=_with_events(x, x["events"]))


def reviewed(pred: Prediction, calls: dict[str, int | None]) -> Prediction:
    """The prediction with the reviewer's frame for some events ({event: frame from 0}; an event the decoding never
    reached is added with no draft frame); its hours follow the timing in force, and the intervals are worked out
    again. Calls replace earlier ones: an event left out has no reviewer's frame."""
    x = pred.extras
    calls = {e: int(f) for e, f in calls.items() if e in EVENTS and f is not None and 0 <= int(f) < len(x["hours"])}
    drafted = [{k: v for k, v in e.items() if k != "reviewed_frame"} for e in x["events"] if e["frame"] is not None]
    for e in drafted:
        if e["event"] in calls:
            e["reviewed_frame"] = calls[e["event"]]
    named = {e["event"] for e in drafted}
    rows = drafted + [{"event": e, "frame": None, "frame_name": None, "reviewed_frame": f}
                      for e, f in calls.items() if e not in named]
    return replace(pred, extras=_with_events(x, sorted(rows, key=lambda e: EVENTS.index(e["event"]))))


PAUSE_H = 1.0  # a step between recorded times this long (and 3 times the usual step) is a pause in the recording


def _with_events(x: dict, events: list[dict]) -> dict:
    """The extras with `events` timed at the hours in force, after the gaps in the recording, and the fields worked
    out from their times (interval_fields)."""
    hours, steps = np.asarray(x["hours"]), np.asarray(x["acquisitions"])
    gaps = np.r_[False, np.diff(steps) > 1]  # acquisitions missing
    if x.get("minutes_per_frame") is None and len(hours) > 2:  # recorded times: the instrument paused
        dt = np.diff(hours)
        gaps |= np.r_[False, dt >= max(PAUSE_H, 3 * float(np.median(dt)))]
    timed = [_timed(e, hours, gaps) for e in events]
    return {**x, "events": timed, **interval_fields(timed)}


def _timed(event: dict, hours: np.ndarray, gaps: np.ndarray) -> dict:
    """The event at its frame's hour; after a gap (missing acquisitions, or a pause in recorded times), also the hour
    of the frame before it (`after_hours`): the event happened between the two, not at the first frame that shows
    it. A reviewer's frame gets its hour too, and `reviewed_after_hours` after a gap."""
    timed = {k: v for k, v in event.items() if k not in ("after_hours", "reviewed_hours", "reviewed_after_hours")}
    for frame, at, after in ((event["frame"], "hours", "after_hours"),
                             (event.get("reviewed_frame"), "reviewed_hours", "reviewed_after_hours")):
        if frame is not None:
            timed[at] = float(hours[frame])
            if gaps[frame]:
                timed[after] = float(hours[frame - 1])
    timed.setdefault("hours", None)
    return timed


CLEAVAGES = ("t3", "t4", "t5", "t6", "t7", "t8", "t9+")  # a skipped one may be a direct cleavage
HEADLINE_EVENTS = ("t2", "t3", "t4", "t5", "t8", "tSB", "tB")


def headline(pred: Prediction, unit: str) -> str | None:
    """The times most asked for, in a line of Markdown (hours in `unit`): the reviewer's where set, else the draft's
    with its caveats; None when no such event was reached."""
    events = [e for e in pred.extras["events"] if e["event"] in HEADLINE_EVENTS]
    if not events:
        return None
    checked = [e for e in events if e.get("reviewed_hours") is not None]
    draft = [e for e in events if e not in checked and e["frame"] is not None]
    across_gap = [e for e in draft if e.get("after_hours") is not None]  # in a gap: seen or not, a range
    at: dict[str, list[dict]] = {}  # events in one gap share its range
    for e in draft:
        if e.get("seen", True) or e in across_gap:
            at.setdefault((f"{e['after_hours']:.1f}–" if e in across_gap else "") + f"{e['hours']:.1f} {unit}"
                          + (" (a gap in the recording)" if e in across_gap else ""), []).append(e)
    items = [(e, f"**{e['event']}** {e['reviewed_hours']:.1f} {unit} ✓") for e in checked]
    items += [(named[0], ", ".join(f"**{e['event']}**" for e in named) + f" {when}") for when, named in at.items()]
    times = [text for _, text in sorted(items, key=lambda item: EVENTS.index(item[0]["event"]))]
    skipped = [e["event"] for e in draft if not e.get("seen", True) and e not in across_gap]
    if skipped:
        times.append(f"{', '.join(skipped)} not seen (no frame decoded as {'it' if len(skipped) == 1 else 'them'}"
                     + (": check for a direct cleavage)" if any(e in CLEAVAGES for e in skipped) else ")"))
    if not times:
        return None
    if checked:
        return ("Event times (✓ set by the reviewer, the others drafts): " + " · ".join(times)
                + " (every event is in the Events tab below).")
    return ("Draft event times: " + " · ".join(times)
            + " (check each on its frames, and set the right frame in the Frame tab; every event is in the Events tab "
              "below).")


def timing_warnings(hours) -> list[str]:
    """What the page warns of the timing it was given (kept with the record too)."""
    span = float(hours[-1] - hours[0])
    if span <= MAX_CULTURE_H:
        return []
    return [f"{span:.0f} h is longer than embryo culture lasts (up to 7 days): check the minutes between frames. "
            "Event hours are wrong if it is not the interval between acquisitions."]


def timeline_table(pred: Prediction) -> pd.DataFrame:
    """Per-frame rows of a sequence prediction (for the page's table and CSV)."""
    x = pred.extras
    frame = pd.DataFrame({"frame": range(x["n_frames"]), "name": x["frame_names"], "hours": x["hours"],
                          "stage": x["stage_decoded"], "stage_raw": x["stage_raw"],
                          "phase": x["phase_decoded"], "phase_raw": x["phase_raw"],
                          "burst_strength": x["burst_strength"]})
    if "true_phase" in x:
        frame["true_phase"] = x["true_phase"]
    for i, s in enumerate(STAGES):
        frame[f"p_{s}"] = np.asarray(x["stage_probs"])[:, i].round(4)
    return frame


def burst_frames(strength) -> list[int]:
    """Frames whose change from the frame before is a burst (burst_strength >= BURST)."""
    return [int(i) for i in np.flatnonzero(np.asarray(strength) >= BURST)]


def nearest_burst(bursts: list[int], frame: int, within: int = NEAREST_BURST) -> int | None:
    near = [b for b in bursts if abs(b - frame) <= within]
    return min(near, key=lambda b: (abs(b - frame), b)) if near else None


def event_reading(event: dict) -> str:
    """How far an event's time can be read: the model's own caveats for it, or "" when there are none."""
    if event.get("frame") is None:
        return "not reached by the decoding; the reviewer's frame" if event.get("reviewed_frame") is not None \
            else "not reached (annotated only)"
    caveats = []
    if not event.get("seen", True):
        caveats.append("skipped: no frame of this phase; the next event's time")
    elif not event.get("trained", True):
        caveats.append("a guess: phase never in training")
    if event.get("after_hours") is not None:
        caveats.append(f"a gap in the recording before it: between {event['after_hours']:.1f} and {event['hours']:.1f} h")
    return "; ".join(caveats)


def events_table(pred: Prediction) -> pd.DataFrame:
    """One row per event the decoding reached (frame and hours, the reviewer's frame and hours where set, how far to
    read it, the nearest burst of change); with annotations, the true frame and hours, the errors, and rows for
    annotated events it never reached."""
    x = pred.extras
    rows = list(x["events"])
    true = x.get("true_events")
    if true is not None:
        reached = {e["event"] for e in rows}
        rows += [{"event": e, "frame": None, "frame_name": None, "hours": None} for e in true if e not in reached]
    reviewed = ["reviewed_frame", "reviewed_hours"] if any(e.get("reviewed_frame") is not None for e in rows) else []
    frame = pd.DataFrame(rows, columns=["event", "frame", "frame_name", "hours", *reviewed])
    for column in ("frame", *reviewed[:1]):
        frame[column] = frame[column].astype("Int64")
    frame["reading"] = [event_reading(e) if true is None or e["event"] in true or e.get("frame") is None
                        else "; ".join(filter(None, [event_reading(e), "not in the annotation (no error to give)"]))
                        for e in rows]
    bursts = burst_frames(x["burst_strength"])
    frame["nearest_burst"] = pd.array([None if pd.isna(f) else nearest_burst(bursts, int(f)) for f in frame["frame"]],
                                      dtype="Int64")
    if true is not None:
        hours = np.asarray(x["hours"])
        frame["true_frame"] = pd.array([true.get(e) for e in frame["event"]], dtype="Int64")
        frame["true_hours"] = [float(hours[true[e]]) if e in true else None for e in frame["event"]]
        steps = np.asarray(x["acquisitions"])  # frames of the camera: a sampled sequence's files are hours apart
        frame["error_frames"] = pd.array([None if pd.isna(f) or pd.isna(t) else int(steps[f] - steps[t])
                                          for f, t in zip(frame["frame"], frame["true_frame"])], dtype="Int64")
        frame["error_hours"] = (frame["hours"] - frame["true_hours"]).round(2)
    return frame


def predict_images(model_id: str, images, device: str | None = None, **timing) -> list[Prediction]:
    """Per-frame predictions (encoder heads only, no temporal context): one Prediction per image. The timing
    options of recordings (predict_recording) mean nothing for a frame alone."""
    from ..imageio import refuse_blank

    for im in images:  # a 1 × 1 image was "cleavage" without a word
        refuse_blank(im, MIN_FRAME_SIDE, "an embryo")
    model = registry.load(model_id, device)
    t0 = time.perf_counter()
    out = model.predict([im.pixels for im in images])
    ms = (time.perf_counter() - t0) * 1000 / max(len(images), 1)
    return [Prediction(model_id, model.card.version, im.name, im.sha256,
                       probabilities={o: dict(zip(model.classes[o], map(float, out[o][i]))) for o in out},
                       extras={"warnings": [FRAME_ALONE]}, timings_ms={"model": ms}) for i, im in enumerate(images)]


RECORDING_SUFFIXES = VIDEO_SUFFIXES | {".zip"}  # a file that holds a whole recording


def recordings(path: Path) -> list[Path] | None:
    """The recordings a `predict` input holds, each staged as one sequence, as the page stages it: a video or zip, a
    folder of frames, or a folder of such recordings (embryo folders, videos or zips; a Gomez root's embryo_dataset/:
    one per embryo); None for one frame."""
    path = Path(path)
    if path.is_dir():
        if gomez.is_gomez_root(path):
            path = path / "embryo_dataset"
        if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            return [path]
        inner = [p for p in sorted(path.iterdir()) if not p.name.startswith(".") and (
            p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())
            or p.is_file() and p.suffix.lower() in RECORDING_SUFFIXES)]
        return inner or [path]  # nothing to stage: read_sequence says why
    return [path] if path.suffix.lower() in RECORDING_SUFFIXES else None


def predict_recording(path: Path, device: str | None = None, minutes_per_frame: float | None = None,
                      first_frame_hpi: float | None = None) -> Prediction:
    """One recording staged as on the page: its time table's hours when it has one, else frames
    `minutes_per_frame` apart (default DEFAULT_MINUTES; from insemination when the first frame's hours are given)."""
    seq = read_sequence(path)
    pred = retimed(predict_sequence(MODEL_ID, seq, device=device), minutes_per_frame or DEFAULT_MINUTES,
                   first_frame_hpi)
    if seq.recorded_hours is not None and (minutes_per_frame, first_frame_hpi) != (None, None):
        pred.extras["warnings"].append(f"Timed by its time table {seq.time_table}: the minutes between frames and "
                                       "the first frame's hours given were not used.")
    return pred


FRAME_ALONE = ("One frame staged alone, without its recording: no forward-only decoding, and the model learnt "
               "EmbryoScope frames (a photo from another microscope may read as any stage). Stage a whole recording "
               "on the Time-lapse page.")


def example_images(model_id: str, n: int) -> list[np.ndarray]:
    from ..synthetic import timelapse_sequence

    return timelapse_sequence(n, size=SIZE)[0]


def bench_case(model_id: str, device: str) -> dict:
    """One input is a 300-frame sequence (every frame encoded, temporal head, Viterbi, events)."""
    frames = example_images(model_id, 300)
    seq = FrameSequence(frames, [f"f{i}" for i in range(300)], "generated", "generated")
    run = lambda: predict_sequence(model_id, seq, device=device)  # noqa: E731
    return {"run_one": run, "run_batch": run, "batch": 300, "notes": {"input": f"one 300-frame sequence, {SIZE} px"}}


# --- data ------------------------------------------------------------------------------------------------
def stable_bucket(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100


def is_heldout(name: str, n_frames: int) -> bool:
    """Never trained on: 30 % of embryos by a stable hash of their id, and sparse samples (< 30 frames)."""
    return stable_bucket(name) < HELDOUT_PERCENT or n_frames < MIN_SEQUENCE


def find_layouts(root: Path, depth: int = 3) -> dict[str, list[Path]]:
    """Gomez roots, blastocyst-crop folders and Hung Vuong folders found at or below `root`."""
    found = {"gomez": [], "crops": [], "hungvuong": []}

    def visit(p: Path, d: int):
        if gomez.is_gomez_root(p):
            found["gomez"].append(p)
            return
        if (p / "train.csv").is_file() and (p / "train").is_dir():
            found["hungvuong"].append(p)
            return
        if gomez.read_blastocyst_crops(p):
            found["crops"].append(p)
            return
        if d > 0:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                visit(child, d - 1)

    visit(Path(root), depth)
    return found


def _load_grey(path: Path, whole_well: bool, size: int | None = None) -> np.ndarray:
    """A training image at LOAD px: the central WELL_FRACTION of a whole-well frame (what the model reads of it at
    inference), or an embryo crop as it is."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read {path}")
    if whole_well:
        img = centre_square(img, WELL_FRACTION)
    size = size or LOAD
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def crop_as_well_frame(image: np.ndarray) -> np.ndarray:
    """An embryo crop padded with its border's level so that the model's centre crop shows it at CROP_FILL."""
    h, w = image.shape[:2]
    pad = int(round(max(h, w) * (1 / (CROP_FILL * WELL_FRACTION) - 1) / 2))
    edge = np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]), axis=0)
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=np.atleast_1d(edge).tolist())


def _phase_mask(phase: str | None, stage: str | None) -> np.ndarray:
    """Phases a label allows: the annotated one, or every phase of a stage-only label, or none."""
    if phase:
        return np.array([p == phase for p in PHASES])
    if stage:
        return np.array([STAGE_OF_PHASE[p] == stage for p in PHASES])
    return np.zeros(len(PHASES), bool)


@dataclass
class Pool:
    """Training/evaluation images (LOAD px grey) with their labels, and sequences as lists of indices."""
    images: list = field(default_factory=list)
    stage: list = field(default_factory=list)  # index or -1
    phase_mask: list = field(default_factory=list)
    zoomed: list = field(default_factory=list)  # True: crop around the embryo (crops, Hung Vuong)
    items: list = field(default_factory=list)
    paths: list = field(default_factory=list)  # the source files (training hashes are of these, as evaluated)
    groups: list = field(default_factory=list)
    sequences: dict = field(default_factory=dict)  # group -> indices in time order

    def add(self, path, img, stage, phase, zoomed, item, group):
        self.paths.append(path)
        self.images.append(img)
        self.stage.append(STAGES.index(stage) if stage else -1)
        self.phase_mask.append(_phase_mask(phase, stage))
        self.zoomed.append(zoomed)
        self.items.append(item)
        self.groups.append(group)
        return len(self.images) - 1


def load_pool(data: Path, want) -> Pool:
    """Everything under `data` whose (kind, group, n_frames) satisfies want(...)."""
    layouts = find_layouts(data)
    if not any(layouts.values()):
        raise FileNotFoundError(f"{data}: no Gomez layout (embryo_dataset/ + embryo_dataset_annotations/), "
                                "blastocyst crops or Hung Vuong train.csv found")
    pool = Pool()
    for root in layouts["gomez"]:
        embryos = gomez.read_dataset(root)
        total = sum(len(e.frames) for e in embryos)
        stride = max(1, math.ceil(total / MAX_TRAIN_FRAMES))
        for e in embryos:
            if not want("gomez", e.name, len(e.frames)):
                continue
            frames = e.frames[::stride] if len(e.frames) >= MIN_SEQUENCE else e.frames
            idx = [pool.add(f.path, _load_grey(f.path, True), f.stage, f.phase, False, f"{e.name}/{f.path.name}", e.name)
                   for f in frames]
            if len(e.frames) >= MIN_SEQUENCE:
                pool.sequences[e.name] = idx
        log(f"gomez {root}: {len(embryos)} embryos, time stride {stride}")
    for folder in layouts["crops"]:
        for name, paths in gomez.read_blastocyst_crops(folder).items():
            if not want("crops", name, len(paths)):
                continue
            paths = sorted(paths, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
            idx = [pool.add(p, _load_grey(p, False), "blastocyst", None, True, f"crops/{p.name}", name) for p in paths]
            pool.sequences[f"crops:{name}"] = idx
    for folder in layouts["hungvuong"]:
        labels = pd.read_csv(folder / "train.csv")
        for image, cls in zip(labels["Image"], labels["Class"]):
            stage = "cleavage" if image.startswith("D3_") else "blastocyst" if image.startswith("D5_") and cls == 1 else None
            path = folder / "train" / image
            if stage and want("hungvuong", image, 1) and path.is_file():
                pool.add(path, _load_grey(path, False), stage, None, True, f"hungvuong/{image}", f"hv:{image}")
    return pool


def augment(img: np.ndarray, zoomed: bool, rng: np.random.Generator, strong: bool = True) -> np.ndarray:
    """Random rotation, flip, zoom, shift and photometric change, LOAD px -> SIZE px (float32, 0–255)."""
    angle = rng.uniform(0, 360)
    zoom = CROP_FILL * rng.uniform(0.8, 1.15) if zoomed else rng.uniform(0.9, 1.3) if strong else rng.uniform(0.95, 1.1)
    c = LOAD / 2 + rng.uniform(-8, 8, 2) * (1 if strong else 0.5)
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, zoom * SIZE / LOAD)
    m[:, 2] += SIZE / 2 - c
    if zoomed:  # the crop sits on a flat background like the well around an embryo
        edge = float(np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])))
        out = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=edge)
    else:
        out = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.astype(np.float32)
    if strong:
        out = 255 * (out / 255) ** rng.uniform(0.7, 1.4)
        out = out * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
        if rng.random() < 0.3:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
        out = out + rng.normal(0, rng.uniform(0, 6), out.shape)
    return np.clip(out, 0, 255).astype(np.float32)


def plain(img: np.ndarray) -> np.ndarray:
    """What inference sees: the frame resized to SIZE."""
    return cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _batch(arrs: list[np.ndarray]) -> torch.Tensor:
    x = normalise(np.stack(arrs).astype(np.float32)[..., None], "per_image")
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _losses(stage_logits, phase_logits, stage_t, mask_t):
    """Cross-entropy on stage (ignore -1) + partial-label phase loss -log sum_{allowed} p."""
    loss = torch.zeros((), device=stage_logits.device)
    has_stage = stage_t >= 0
    if has_stage.any():
        loss = loss + nn.functional.cross_entropy(stage_logits[has_stage], stage_t[has_stage], label_smoothing=0.05)
    has_phase = mask_t.any(-1)
    if has_phase.any():
        logp = torch.log_softmax(phase_logits[has_phase], -1)
        allowed = torch.logsumexp(logp.masked_fill(~mask_t[has_phase], -1e9), -1)
        loss = loss - allowed.mean()
    return loss


def train_encoder(net: TimelapseNet, pool: Pool, epochs: int, seed: int, device: str) -> None:
    rng = np.random.default_rng(seed)
    usable = [i for i in range(len(pool.images)) if pool.stage[i] >= 0]
    keys = [PHASES[int(np.argmax(pool.phase_mask[i]))] if pool.phase_mask[i].sum() == 1 else f"s{pool.stage[i]}"
            for i in usable]
    counts = pd.Series(keys).value_counts()
    weights = np.array([1 / math.sqrt(counts[k]) for k in keys])
    weights /= weights.sum()
    per_epoch = min(len(usable), 1024) if len(usable) < 20_000 else 4096
    params = [p for n, p in net.named_parameters() if not n.startswith(("project", "temporal", "delta"))]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-3)
    batches = max(1, per_epoch // 64)  # a tiny training set still gets one batch per epoch
    steps = epochs * batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    stage_all = torch.tensor(pool.stage)
    mask_all = torch.tensor(np.stack(pool.phase_mask))
    net.train()
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for _ in range(batches):
            pick = rng.choice(usable, 64, p=weights)
            x = _batch([augment(pool.images[i], pool.zoomed[i], rng) for i in pick]).to(device)
            s, p = net.frame_logits(net.embed(x))
            loss = _losses(s, p, stage_all[pick].to(device), mask_all[pick].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        log(f"encoder epoch {epoch + 1}/{epochs} loss {total / batches:.3f} ({time.perf_counter() - t0:.0f}s)")
    net.eval()


@torch.no_grad()
def embed_pool(net, pool: Pool, indices, copies: int, seed: int, device: str) -> dict[int, torch.Tensor]:
    """Embeddings of the given images: copy 0 as inference sees them, further copies mildly augmented."""
    rng = np.random.default_rng(seed)
    net.eval()
    out = {}
    indices = list(indices)
    for start in range(0, len(indices), 128):
        chunk = indices[start:start + 128]
        views = []
        for c in range(copies):
            arrs = [plain(pool.images[i]) if c == 0 and not pool.zoomed[i]
                    else augment(pool.images[i], pool.zoomed[i], rng, strong=c > 1) for i in chunk]
            views.append(net.embed(_batch(arrs).to(device)))
        for k, i in enumerate(chunk):
            out[i] = torch.stack([v[k] for v in views])
    return out


def _sample_indices(n: int, length: int, rng, sparse: bool) -> np.ndarray:
    if sparse:  # a few frames spread over the sequence, as in sampled-frame sets
        return np.sort(rng.choice(n, size=length, replace=n < length))
    rate = min(math.exp(rng.uniform(math.log(0.5), math.log(4))), n / length)
    start = rng.uniform(0, max(n - rate * length, 0))
    return np.minimum((start + rate * np.arange(length)).astype(int), n - 1)


def train_temporal(net: TimelapseNet, pool: Pool, steps: int, seed: int, device: str) -> None:
    """Temporal head on frozen encoder embeddings: random windows at random frame rates, sparse samples, and early
    sequences followed by a blastocyst-crop sequence (teaches the late transition the complete sequences lack)."""
    rng = np.random.default_rng(seed + 1)
    torch.manual_seed(seed + 1)
    seqs = list(pool.sequences.values())
    early = [s for k, s in pool.sequences.items() if not k.startswith("crops:")]
    late = [s for k, s in pool.sequences.items() if k.startswith("crops:")]
    embs = torch.zeros(len(pool.images), 4, EMB)
    for i, e in embed_pool(net, pool, sorted({i for s in seqs for i in s}), copies=4, seed=seed, device=device).items():
        embs[i] = e.cpu()
    stage_all = torch.tensor(pool.stage)
    mask_all = torch.tensor(np.stack(pool.phase_mask))
    params = [p for n, p in net.named_parameters() if n.startswith(("project", "temporal", "delta"))]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    net.encoder.eval()
    for step in range(steps):
        sparse = rng.random() < 0.15
        length = int(rng.integers(6, 25)) if sparse else int(rng.integers(24, 193))
        batch_idx = []
        for _ in range(16):
            if early and late and rng.random() < 0.4:
                a, b = early[rng.integers(len(early))], late[rng.integers(len(late))]
                cut = int(rng.integers(len(a) // 2, len(a) + 1))
                src = a[:cut] + b
            else:
                src = seqs[rng.integers(len(seqs))]
            batch_idx.append([src[j] for j in _sample_indices(len(src), length, rng, sparse)])
        idx = torch.tensor(batch_idx)
        copy = torch.from_numpy(rng.integers(0, 4, idx.shape))
        e = embs[idx, copy]
        e = e + 0.1 * e.std() * torch.randn_like(e)
        s, p = net.sequence_logits(e.to(device))
        loss = _losses(s.reshape(-1, len(STAGES)), p.reshape(-1, len(PHASES)),
                       stage_all[idx].reshape(-1).to(device), mask_all[idx].reshape(-1, len(PHASES)).to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            log(f"temporal ({net.temporal_kind}) step {step + 1}/{steps} loss {float(loss.detach()):.3f}")
    net.eval()


def fit(pool: Pool, temporal: str, epochs: int, seed: int, device: str, temporal_steps: int = TEMPORAL_STEPS) -> TimelapseNet:
    torch.manual_seed(seed)
    net = build_net(temporal).to(device)
    train_encoder(net, pool, epochs, seed, device)
    if temporal != "none":
        train_temporal(net, pool, temporal_steps, seed, device)
    return net


# --- evaluation ------------------------------------------------------------------------------------------
@torch.no_grad()
def _pool_sequence_probs(net, pool: Pool, idx: list[int], device: str):
    net.eval()
    x = [plain(pool.images[i]) for i in idx]
    e = torch.cat([net.embed(_batch(x[s:s + BATCH]).to(device)) for s in range(0, len(x), BATCH)])
    frame_s, frame_p = (torch.softmax(t, 1).cpu().numpy() for t in net.frame_logits(e))
    seq_s, seq_p = (t[0].cpu().numpy() for t in net.sequence(e[None]))
    return frame_s, frame_p, seq_s, seq_p


def sequence_report(stage_true, phase_true, seq_s, seq_p, frame_s=None, frame_p=None) -> dict:
    """Accuracy of raw argmax vs Viterbi-decoded stage/phase on annotated frames, and event-frame errors."""
    dec_s, dec_p = decode(seq_s, seq_p, SWITCH_COST)
    st = np.asarray(stage_true)
    ph = np.asarray(phase_true)
    ok = st >= 0
    rep = {
        "n": int(ok.sum()),
        "stage_raw": float((seq_s.argmax(1)[ok] == st[ok]).mean()),
        "stage_viterbi": float((dec_s[ok] == st[ok]).mean()),
        "phase_raw": float((seq_p.argmax(1)[ok] == ph[ok]).mean()),
        "phase_viterbi": float((dec_p[ok] == ph[ok]).mean()),
    }
    if frame_s is not None:
        rep["stage_frame_only"] = float((frame_s.argmax(1)[ok] == st[ok]).mean())
        rep["phase_frame_only"] = float((frame_p.argmax(1)[ok] == ph[ok]).mean())
        fd_s, fd_p = decode(frame_s, frame_p, SWITCH_COST)
        rep["phase_frame_only_viterbi"] = float((fd_p[ok] == ph[ok]).mean())
    true_ev = event_frames([p if p >= 0 else None for p in ph])
    pred_ev = event_frames(dec_p)
    raw_ev = event_frames(np.maximum.accumulate(seq_p.argmax(1)))
    rep["event_errors"] = {e: (pred_ev[e] - f if e in pred_ev else None) for e, f in true_ev.items()}
    rep["event_errors_raw"] = {e: (raw_ev[e] - f if e in raw_ev else None) for e, f in true_ev.items()}
    return rep


def _phase_index(pool: Pool, i: int) -> int:
    m = pool.phase_mask[i]
    return int(np.argmax(m)) if m.sum() == 1 else -1


def leave_one_out(data: Path, out: str, epochs: int, seed: int, device: str, temporals=TEMPORALS) -> dict:
    """One leave-one-embryo-out fold: train on every other complete Gomez sequence, the crops the shipped model
    trains on and Hung Vuong, then score the left-out sequence with each temporal head on the fold's encoder."""
    fold = load_pool(data, lambda kind, name, n: kind == "hungvuong" or (kind == "gomez" and n >= MIN_SEQUENCE and name != out)
                     or (kind == "crops" and not is_heldout(name, n)))
    test = load_pool(data, lambda kind, name, n: kind == "gomez" and name == out)
    idx = test.sequences[out]
    st = [test.stage[i] for i in idx]
    ph = [_phase_index(test, i) for i in idx]
    torch.manual_seed(seed)
    net = build_net(temporals[0]).to(device)
    train_encoder(net, fold, epochs, seed, device)
    result = {}
    for kind in temporals:
        torch.manual_seed(seed)
        fresh = build_net(kind).to(device)
        fresh.load_state_dict({k: v for k, v in net.state_dict().items()
                               if not k.startswith(("project", "temporal", "delta"))}, strict=False)
        if kind != "none":
            train_temporal(fresh, fold, TEMPORAL_STEPS, seed, device)
        frame_s, frame_p, seq_s, seq_p = _pool_sequence_probs(fresh, test, idx, device)
        result[kind] = sequence_report(st, ph, seq_s, seq_p, frame_s, frame_p)
        log(f"LOEO {out} {kind}: {json.dumps(result[kind])}")
    result["settings"] = {"epochs": epochs, "temporal_steps": TEMPORAL_STEPS, "seed": seed}
    return result


def save_fold(folder: Path, embryo: str, result: dict) -> None:
    """A leave_one_out result as <folder>/<embryo>.json (loeo/, or loeo/seed<k>/ for a rerun with another seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{embryo}.json").write_text(json.dumps(result, indent=2))


def burst_hits(strength, phase_index) -> dict:
    """On one annotated sequence, from its first annotated frame to its last one of t2…t8: the divisions (a phase
    change that adds cells), those with a burst within BURST_TOLERANCE frames, the bursts, and those at a division."""
    cells = np.array([gomez.CELLS_OF_PHASE[p] for p in PHASES])
    phase = np.asarray(phase_index)
    known = np.flatnonzero(phase >= 0)
    counted = known[cells[phase[known]] <= 8]
    events, peaks = [], []
    if len(counted) >= 2:
        events = [t for a, t in zip(known[:-1], known[1:]) if cells[phase[t]] > cells[phase[a]] and t <= counted[-1]]
        peaks = [t for t in burst_frames(strength) if known[0] <= t <= counted[-1]]
    return {"divisions": len(events),
            "divisions_with_a_burst": sum(any(abs(p - e) <= BURST_TOLERANCE for p in peaks) for e in events),
            "bursts": len(peaks), "bursts_at_a_division": sum(any(abs(p - e) <= BURST_TOLERANCE for e in events) for p in peaks)}


def _sum_hits(hits: list[dict]) -> dict:
    return {"sequences": len(hits), **{k: sum(h[k] for h in hits) for k in hits[0]}, "burst_level": BURST,
            "tolerance_frames": BURST_TOLERANCE} if hits else {}


def division_burst_check(data: Path) -> dict:
    """How well bursts of change mark divisions (burst_hits) on every complete annotated Gomez sequence under data,
    no model involved."""
    pool = load_pool(data, lambda kind, name, n: kind == "gomez" and n >= MIN_SEQUENCE)
    hits = []
    for emb, idx in pool.sequences.items():
        x = _batch([plain(pool.images[i]) for i in idx]).numpy()[:, 0]
        hits.append(burst_hits(burst_strength(frame_change(x)[0]), [_phase_index(pool, i) for i in idx]))
    return {**_sum_hits(hits), "note": "no model: frame-to-frame change of the model's inputs; its constants (blur, "
                                       "BURST_Z) were set by looking at these same sequences"}


def summarise_loeo(result: dict, kind: str) -> dict:
    errs = [abs(v) for r in result.values() for e, v in r[kind]["event_errors"].items()
            if e in ("t2", "t3", "t4", "t5") and v is not None]
    errs_raw = [abs(v) for r in result.values() for e, v in r[kind]["event_errors_raw"].items()
                if e in ("t2", "t3", "t4", "t5") and v is not None]
    mean = lambda key: round(float(np.mean([r[kind][key] for r in result.values()])), 4)  # noqa: E731
    missed = sum(v is None for r in result.values() for e, v in r[kind]["event_errors"].items() if e in ("t2", "t3", "t4", "t5"))
    return {"folds": len(result), "median_abs_error_frames_t2_t5": float(np.median(errs)) if errs else None,
            "events_t2_t5_not_found": missed,
            "median_abs_error_frames_t2_t5_raw_argmax": float(np.median(errs_raw)) if errs_raw else None,
            "n_events": len(errs), "stage_accuracy_raw": mean("stage_raw"), "stage_accuracy_viterbi": mean("stage_viterbi"),
            "phase_accuracy_raw": mean("phase_raw"), "phase_accuracy_viterbi": mean("phase_viterbi")}


def evaluate(model_id: str, path: Path, name: str, split: str | None, device: str) -> dict:
    """Every embryo of a Gomez layout (or blastocyst-crop folder) as a sequence in frame order; annotated frames only."""
    from ..evaluation import evaluate_classifier_outputs, predictions_frame, readable, refreshes_card
    from ..imageio import read_image

    if split not in (None, "heldout", "train"):
        raise ValueError(f"unknown split {split!r}: use heldout or train")
    model = registry.load(model_id, device)
    layouts = find_layouts(path)
    if layouts["crops"] and not layouts["gomez"]:  # crops among class folders (Cleavage/, Blastocysts/): not ours
        stray = next((p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                      and not any(p.is_relative_to(c) for c in layouts["crops"])), None)
        if stray is not None:
            raise FileNotFoundError(f"{path}: images outside its blastocyst-crop folders (e.g. {stray.name}): not a "
                                    "Gomez crop layout")
    sequences = []  # (embryo, [paths], [phase or None], [stage or None], embryo crops?, [recorded hours or None])
    for root in layouts["gomez"]:
        for e in gomez.read_dataset(root):
            times = {f.number: f.hours for f in e.frames if f.hours is not None}
            problem = time_table_problem([f.number for f in e.frames], times) if times else None
            if problem:
                log(f"{e.name}: its time table was not used ({problem})")
            recorded = [f.hours for f in e.frames] if times and not problem else [None] * len(e.frames)
            sequences.append((e.name, [f.path for f in e.frames], [f.phase for f in e.frames], [f.stage for f in e.frames],
                              False, recorded))
    for folder in layouts["crops"]:
        for emb, paths in gomez.read_blastocyst_crops(folder).items():
            paths = sorted(paths, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
            sequences.append((emb, paths, [None] * len(paths), ["blastocyst"] * len(paths), True, [None] * len(paths)))
    if not sequences:
        raise FileNotFoundError(f"{path}: no Gomez layout (embryo_dataset/ + embryo_dataset_annotations/) "
                                "or blastocyst crops found")
    if split:
        sequences = [s for s in sequences if is_heldout(s[0], len(s[1])) == (split == "heldout")]
    frames_s, frames_p, reports, burst_checks, skipped = [], [], {}, [], []
    for emb, paths, phases, stages, crops, hours in sequences:
        frames, images, bad = readable(list(zip(paths, phases, stages, hours)), lambda frame: read_image(frame[0]).pixels)
        skipped += [f"{emb}/{msg}" for msg in bad]
        if not frames:
            continue
        paths, phases, stages, hours = map(list, zip(*frames))
        stage_p, phase_p, bursts = sequence_probabilities(model, [crop_as_well_frame(im) for im in images] if crops else images)
        dec_s, dec_p = decode(stage_p, phase_p, SWITCH_COST)
        keep = [i for i, s in enumerate(stages) if s]
        items = [f"{emb}/{paths[i].name}" for i in keep]
        hashes = [f"{audit.phash(images[i]):016x}" for i in keep]
        frames_s.append(predictions_frame(items, "stage", STAGES, [stages[i] for i in keep], stage_p[keep],
                                          embryo=emb, decoded=[STAGES[dec_s[i]] for i in keep], phash=hashes))
        pk = [i for i in keep if phases[i]]
        if pk:
            frames_p.append(predictions_frame([f"{emb}/{paths[i].name}" for i in pk], "phase", PHASES,
                                              [phases[i] for i in pk], phase_p[pk], embryo=emb,
                                              decoded=[PHASES[dec_p[i]] for i in pk],
                                              phash=[hashes[keep.index(i)] for i in pk]))
        if any(phases) and len(paths) >= MIN_SEQUENCE:  # a sparse sample's frames are hours apart: no event times
            true_index = [PHASES.index(p) if p else -1 for p in phases]
            reports[emb] = {"events": event_frames(dec_p),
                            "true_events": event_frames([i if i >= 0 else None for i in true_index])}
            if None not in hours:  # the instrument's time table: events in its hours after insemination
                reports[emb]["hours"] = {kind: {e: hours[f] for e, f in reports[emb][kind].items()}
                                         for kind in ("events", "true_events")}
            burst_checks.append(burst_hits(bursts, true_index))
        log(f"{emb}: {len(paths)} frames")
    if not frames_s:
        raise ValueError(f"{path}: no readable annotated frames" + (f" ({skipped[0]})" if skipped else ""))
    meta = {"data": str(path.resolve()), "layout": {k: [str(p) for p in v] for k, v in layouts.items() if v},
            "split": split or "all", "embryos": [s[0] for s in sequences], "skipped": skipped, "events": reports,
            "division_bursts": _sum_hits(burst_checks),
            "note": "each embryo is one sequence in frame order; probabilities are the sequence model's (the "
                    "encoder's per-frame ones when the card's temporal head is 'none'); "
                    "'decoded' is the left-to-right Viterbi path; unannotated frames are left out; blastocyst crops are "
                    "padded with their border level (crop_as_well_frame) so that the model's centre crop shows "
                    "them as it shows an embryo in a whole-well frame; event times and bursts only for sequences of "
                    f"{MIN_SEQUENCE} frames or more (a sparse sample's frames are hours apart)"}
    result = evaluate_classifier_outputs(model.card, name, frames_s + frames_p, meta)
    for frames, output in ((frames_s, "stage"), (frames_p, "phase")):
        if frames and output in result["metrics"]:
            rows = pd.concat(frames)
            result["metrics"][output]["accuracy_viterbi"] = float((rows["decoded"] == rows["true"]).mean())
            result["metrics"][output]["balanced_accuracy_viterbi"] = float(
                rows.assign(ok=rows["decoded"] == rows["true"]).groupby("true")["ok"].mean().mean())
    folder = model.card.folder / "eval" / result["dataset"]  # not `name`, where that is the card's and the data not
    (folder / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    key = f"{Path(path).resolve().name}/heldout"  # keyed by the data, as the card's tables are
    if split == "heldout" and refreshes_card(model.card, key, name, path):  # never training-fit figures
        _write_card_metrics(model.card.folder, key, result["metrics"], name)
    return result


# --- card ------------------------------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(round(v, 4) if isinstance(v, float) else v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dump_toml(card: dict) -> str:
    lines, tables = [], []
    for k, v in card.items():
        if isinstance(v, dict) and k in ("classes", "input", "explain", "arch_kwargs", "metrics", "notes"):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        if k == "metrics":
            for ds, vals in v.items():
                lines += ["", f"[metrics.{_toml_key(ds)}]"] + [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in vals.items()]
        elif isinstance(v, list):
            for entry in v:
                lines += ["", f"[[{k}]]"] + [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in entry.items()]
        else:
            lines += ["", f"[{k}]"] + [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in v.items()]
    return "\n".join(lines) + "\n"


def _write_card_metrics(folder: Path, key: str, metrics: dict, evaluation: str) -> None:
    import tomllib

    path = folder / "card.toml"
    card = tomllib.loads(path.read_text())
    table = {}
    for output, m in metrics.items():
        for k in ("accuracy", "accuracy_viterbi", "balanced_accuracy", "balanced_accuracy_viterbi", "f1"):
            if m.get(k) is not None:
                table[f"{output}_{k}"] = float(m[k])
        table[f"{output}_n"] = int(m["n"])
    card.setdefault("metrics", {})[key] = table | {"evaluation": evaluation}
    path.write_text(dump_toml(card))


# --- training --------------------------------------------------------------------------------------------
def train(model_id: str, data: Path, device: str, epochs: int | None, seed: int) -> Path:
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", 2)))
    torch.manual_seed(seed)
    np.random.seed(seed)
    epochs = epochs or EPOCHS
    t0 = time.perf_counter()
    pool = load_pool(data, lambda kind, name, n: kind == "hungvuong" or not is_heldout(name, n))
    log(f"training images: {len(pool.images)} from {len(set(pool.groups))} groups; sequences: {len(pool.sequences)}")
    net = fit(pool, TEMPORAL, epochs, seed, device)
    folder = WEIGHTS_DIR / model_id
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save(state, folder / "model.pt")
    same_data = set(audit.read_train_hashes(folder)["item"]) == set(pool.items)
    audit.write_train_hashes(folder, pool.items, [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in pool.paths])
    old = _read_card(folder) if same_data else {}  # figures measured for another training set do not carry over
    card = {
        "id": model_id,
        "title": "Time-lapse embryo staging (per-frame CNN"
                 + ("" if TEMPORAL == "none" else f" + {TEMPORAL.upper()} temporal head") + ", left-to-right Viterbi)",
        "task": "timelapse",
        "framework": "torch",
        "file": "model.pt",
        "sha256": registry.file_sha256(folder / "model.pt"),
        "version": "3.0",
        "architecture": "core.tasks.timelapse:build_net",
        "arch_kwargs": {"temporal": TEMPORAL},
        "classes": {"stage": STAGES, "phase": PHASES},
        "untrained_phases": untrained_phases(pool),
        "input": {"size": [SIZE, SIZE], "channels": 1, "normalise": "per_image", "centre_crop": WELL_FRACTION},
        "explain": {"layer": "encoder.8"},
        "train_command": f"python -m core train {model_id} --data {data} --seed {seed} --epochs {epochs}"
                         + (" --device cuda" if device.startswith("cuda") else ""),
        "data": data_description(data),
        "intended_use": (
            "Research demonstration: a draft stage timeline and morphokinetic event times (t2 … t9+, tM, tSB, tB, "
            "tEB) from a time-lapse sequence of one embryo, for an embryologist to check frame by frame."),
        "limitations": (
            f"{training_coverage(pool)} One EmbryoScope clinic, central focal plane, 500 px grey frames; the model reads the central "
            f"{WELL_FRACTION * 100:.0f} % of each frame (the embryo must sit near the middle of the well image); "
            "other instruments and magnifications are untested. Frames 15 min apart by default: event hours depend on the interval the "
            "user gives. Not a medical device."),
        "notes": {"temporal_comparison": "see [metrics.\"gomez2022/leave-one-embryo-out\"] (chosen head) and "
                                         "loeo/<embryo>.json (every compared head, every fold)",
                  "viterbi_switch_cost": SWITCH_COST, "train_seconds": round(time.perf_counter() - t0)},
        "metrics": old.get("metrics", {}),
    }
    (folder / "card.toml").write_text(dump_toml(card))
    if same_data:  # loeo/ holds folds of this training set's sequences
        loeo_summary_to_card(folder)
    else:
        log("new training set: the card's earlier figures and loeo/ folds are not carried over; run `python -m core "
            "evaluate` and the leave-one-embryo-out comparison again for this data")
    registry.REGISTRY.clear()
    for root in find_layouts(data)["gomez"] + find_layouts(data)["crops"]:
        try:
            evaluate(model_id, root, root.name, "heldout", device)
        except ValueError as exc:  # e.g. a small set whose every embryo trained the model
            log(f"no held-out evaluation of {root}: {exc}")
    return folder


def untrained_phases(pool: Pool) -> list[str]:
    """Phases no training frame was annotated with: their event times are guesses."""
    seen = {PHASES[k] for i in range(len(pool.images)) if (k := _phase_index(pool, i)) >= 0}
    return [p for p in PHASES if p not in seen]


def training_coverage(pool: Pool) -> str:
    """The card's account of what the training sequences showed: how many, and which phases never appeared."""
    unseen = untrained_phases(pool)
    sequences = [g for g in pool.sequences if not g.startswith("crops:")]
    text = (f"Trained on {len(sequences)} complete annotated time-lapse sequences ({', '.join(sequences[:5])}"
            f"{' …' if len(sequences) > 5 else ''}) plus the blastocyst crops and still images listed under data "
            f"({len(pool.images)} images).")
    if unseen:
        text += (f" No training frame was annotated {', '.join(unseen)}: those phases are guesses"
                 + (", and morula (tM) is essentially never predicted." if "tM" in unseen else "."))
    return text


def data_description(data: Path) -> list[dict]:
    """What the model was trained and held out on, per dataset (written into the card)."""
    layouts = find_layouts(data)
    split = (f"by embryo: held out when int(sha256(embryo id)[:8], 16) % 100 < {HELDOUT_PERCENT} or the embryo has "
             f"fewer than {MIN_SEQUENCE} frames; `evaluate --split heldout` selects exactly these embryos")
    out = []
    for root in layouts["gomez"]:
        embryos = [(e.name, len(e.frames)) for e in gomez.read_dataset(root)]
        train = [n for n, k in embryos if not is_heldout(n, k)]
        held = [n for n, k in embryos if is_heldout(n, k)]
        out.append({"dataset": f"Gomez et al. 2022 time-lapse, central focal plane ({root.name})", "licence": "CC BY 4.0",
                     "trained_on": f"{len(train)} embryos: " + ", ".join(train[:20]) + (" …" if len(train) > 20 else ""),
                     "held_out": f"{len(held)} embryos: " + ", ".join(held[:20]) + (" …" if len(held) > 20 else ""),
                     "labels": "16 annotated phases per frame; unannotated frames unused", "split": split})
    for folder in layouts["crops"]:
        groups = {n: len(v) for n, v in gomez.read_blastocyst_crops(folder).items()}
        out.append({"dataset": f"Gomez 2022 blastocyst crops ({folder.name})", "licence": "CC BY 4.0",
                     "trained_on": ", ".join(n for n, k in groups.items() if not is_heldout(n, k)),
                     "held_out": ", ".join(n for n, k in groups.items() if is_heldout(n, k)),
                     "labels": "stage only (blastocyst); phase trained as 'one of tSB/tB/tEB/tHB'", "split": split})
    for folder in layouts["hungvuong"]:
        out.append({"dataset": "Hung Vuong day-3 / day-5 images", "licence": "competition data, research only",
                     "trained_on": "all D3_ (cleavage) and good D5_ (blastocyst) images, per-frame encoder only",
                     "held_out": "none (not a time-lapse set; not used for any reported figure)"})
    return out


def _read_card(folder: Path) -> dict:
    import tomllib

    path = folder / "card.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def _loeo_folds(folder: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def loeo_summary_to_card(folder: Path = WEIGHTS_DIR / MODEL_ID) -> dict:
    """Merge the fold files in loeo/ into the card's leave-one-embryo-out table (shipped head) and return all; the
    shipped recipe's reruns with other seeds (loeo/seed<k>/) get a table each, to show how far the figures move."""
    folds = _loeo_folds(folder / "loeo")
    summary = {kind: summarise_loeo(folds, kind) for kind in TEMPORALS if folds and all(kind in f for f in folds.values())}
    if TEMPORAL in summary and (folder / "card.toml").is_file():
        card = _read_card(folder)
        metrics = card.setdefault("metrics", {})
        metrics["gomez2022/leave-one-embryo-out"] = {
            "sequences": ", ".join(folds), "temporal_head": TEMPORAL, **summary[TEMPORAL],
            "fold_training": "; ".join(sorted({json.dumps(f.get("settings", {})) for f in folds.values()}))}
        for other in summary.keys() - {TEMPORAL}:
            metrics[f"gomez2022/leave-one-embryo-out-{other}-head"] = summary[other]
        for seed_folder in sorted((folder / "loeo").glob("seed*")):
            reruns = _loeo_folds(seed_folder)
            if reruns and all(TEMPORAL in f for f in reruns.values()):
                metrics[f"gomez2022/leave-one-embryo-out/{seed_folder.name}"] = summarise_loeo(reruns, TEMPORAL)
        (folder / "card.toml").write_text(dump_toml(card))
    return summary


if __name__ == "__main__":  # python -m core.tasks.timelapse loeo DATA EMBRYO [EPOCHS [SEED]] | loeo-summary | bursts DATA
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", 2)))
    folder = WEIGHTS_DIR / MODEL_ID
    if len(sys.argv) >= 4 and sys.argv[1] == "loeo":
        seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        res = leave_one_out(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else EPOCHS, seed, "cpu")
        save_fold(folder / "loeo" / (f"seed{seed}" if seed else ""), sys.argv[3], res)
    elif sys.argv[1:2] == ["loeo-summary"]:
        print(json.dumps(loeo_summary_to_card(folder), indent=2))
    elif len(sys.argv) == 3 and sys.argv[1] == "bursts":
        card = _read_card(folder)
        card.setdefault("metrics", {})["gomez2022/division-bursts"] = division_burst_check(Path(sys.argv[2]))
        (folder / "card.toml").write_text(dump_toml(card))
        print(json.dumps(card["metrics"]["gomez2022/division-bursts"], indent=2))
    else:
        print(__doc__)

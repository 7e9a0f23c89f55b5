"""Time-lapse staging: frame order, readers, Viterbi decoding, events, the task on generated data, a regression floor."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core import synthetic
from core.datasets.gomez import PHASES, STAGES
from core.imageio import encode_png
from core.sequence import (SequenceInputError, burst_strength, decode, event_frames, folder_stamp, frame_change,
                           order_frames, read_folder, read_sequence, read_video, read_zip, viterbi_monotone)
from tests.conftest import shared_data, zip_of


# --- frame order ---------------------------------------------------------------------------------------------
def ordered(names):
    idx, rule, left_out = order_frames(names)
    assert not left_out
    return [names[i] for i in idx], rule


def test_order_run_numbers_beat_other_digits():
    names = ["D2013.01.28_S0717_I132_WELL7_RUN10.jpeg", "D2013.01.28_S0717_I132_WELL7_RUN9.jpeg",
             "D2013.01.28_S0717_I132_WELL7_RUN100.jpeg", "D2013.01.28_S0717_I132_WELL7_RUN1.jpeg"]
    out, rule = ordered(names)
    assert [n.split("RUN")[1] for n in out] == ["1.jpeg", "9.jpeg", "10.jpeg", "100.jpeg"]
    assert "RUN" in rule


def test_order_numbers_natural_not_lexicographic():
    out, rule = ordered(["frame10.png", "frame9.png", "frame_100.png", "frame1.png", "Frame2.png"])
    assert out == ["frame1.png", "Frame2.png", "frame9.png", "frame10.png", "frame_100.png"]
    assert "numbers" in rule


def test_order_number_before_suffix_and_folders_ignored():
    out, _ = ordered(["b/well2_t10.tif", "a/well2_t9.tif", "well2_t11.tif"])
    assert out == ["a/well2_t9.tif", "b/well2_t10.tif", "well2_t11.tif"]


def test_order_leaves_out_a_stray_unnumbered_name_and_breaks_run_ties_naturally():
    names = ["frame1.png", "frame2.png", "frame10.png", "cover.png"]
    idx, rule, left_out = order_frames(names)
    assert [names[i] for i in idx] == ["frame1.png", "frame2.png", "frame10.png"] and left_out == [3]
    assert "numbers" in rule
    out, _ = ordered(["RUN1_f10.png", "RUN1_f2.png", "RUN0_f30.png"])
    assert out == ["RUN0_f30.png", "RUN1_f2.png", "RUN1_f10.png"]
    assert ordered(["frame1²3.png", "frame2.png"])[0] == ["frame1²3.png", "frame2.png"]  # no int('²') crash


def test_order_falls_back_to_names_without_numbers():
    out, rule = ordered(["c.png", "A.png", "b.png", "x1.png"])
    assert out == ["A.png", "b.png", "c.png", "x1.png"]
    assert "name order" in rule


# --- Viterbi -------------------------------------------------------------------------------------------------
def brute_force(log_p, cost):
    t, k = log_p.shape
    best, arg = -np.inf, None
    for path in itertools.product(range(k), repeat=t):
        if any(b < a for a, b in zip(path, path[1:])):
            continue
        score = sum(log_p[i, s] for i, s in enumerate(path)) - cost * sum(b != a for a, b in zip(path, path[1:]))
        if score > best:
            best, arg = score, path
    return np.array(arg), best


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_finds_the_known_optimum(seed):
    rng = np.random.default_rng(seed)
    log_p = np.log(rng.dirichlet(np.ones(4), size=6))
    cost = [0.0, 0.7, 2.0][seed % 3]
    path = viterbi_monotone(log_p, cost)
    want, best = brute_force(log_p, cost)
    score = log_p[np.arange(6), path].sum() - cost * np.count_nonzero(np.diff(path))
    assert np.isclose(score, best)


def test_burst_strength_marks_the_burst_peak_only():
    rng = np.random.default_rng(0)
    changes = rng.uniform(0.09, 0.11, 60)
    changes[0] = 0.0
    changes[[29, 30, 31]] = [0.2, 0.4, 0.25]  # a division: a burst of change over three frames
    ev = burst_strength(changes)
    assert ev[30] == 1.0 and np.count_nonzero(ev >= 0.5) == 1
    assert not burst_strength(changes[:20]).any()  # too few frames to tell a burst from sampling
    doubled = np.ravel(np.column_stack([np.zeros(60), changes]))  # every frame shown twice: half the changes are 0
    assert np.flatnonzero(burst_strength(doubled) >= 0.5).tolist() == [61]
    still = np.full(60, 0.05) + rng.normal(0, 0.0005, 60)  # a still video: its noise and a faint flicker are no burst
    still[30] += 0.004
    assert not (burst_strength(still) >= 0.5).any()


def test_nearest_burst_to_an_event():
    from core.tasks.timelapse import NEAREST_BURST, burst_frames, nearest_burst

    bursts = burst_frames([0, 0.2, 0.5, 0, 0.9, 0, 0, 0, 0, 0, 0.7])
    assert bursts == [2, 4, 10]
    assert nearest_burst(bursts, 3) == 2  # a tie goes to the earlier burst
    assert nearest_burst(bursts, 9) == 10
    assert nearest_burst([0], NEAREST_BURST + 1) is None


def test_frame_change_is_the_same_in_one_batch_or_two():
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(7, 32, 32, 1)).astype(np.float32)
    whole, _ = frame_change(frames)
    first, last = frame_change(frames[:3])
    second, _ = frame_change(frames[3:], last)
    assert whole[0] == 0 and np.allclose(whole, np.concatenate([first, second]))


def test_viterbi_is_monotone_and_removes_flicker():
    truth = np.repeat([0, 1, 3], [10, 10, 10])
    probs = np.full((30, 4), 0.02)
    probs[np.arange(30), truth] = 0.94
    probs[15] = [0.9, 0.03, 0.03, 0.04]  # one frame that seems to go back
    probs[5] = [0.03, 0.03, 0.04, 0.9]  # one frame that seems to jump ahead
    raw = probs.argmax(1)
    path = viterbi_monotone(np.log(probs), 2.0)
    assert np.all(np.diff(path) >= 0)
    assert np.array_equal(path, truth) and not np.array_equal(raw, truth)


def test_viterbi_respects_allowed_mask():
    log_p = np.log(np.full((5, 3), 1 / 3))
    allowed = np.ones((5, 3), bool)
    allowed[:, 1] = False
    assert 1 not in viterbi_monotone(log_p, 1.0, allowed)


def test_decode_stage_and_phase_agree():
    rng = np.random.default_rng(0)
    stage_p = rng.dirichlet(np.ones(4), size=40)
    phase_p = rng.dirichlet(np.ones(16), size=40)
    s, p = decode(stage_p, phase_p)
    from core.datasets.gomez import STAGE_OF_PHASE

    assert all(STAGES[a] == STAGE_OF_PHASE[PHASES[b]] for a, b in zip(s, p))
    assert np.all(np.diff(s) >= 0) and np.all(np.diff(p) >= 0)


def test_event_frames_with_skips_and_unannotated():
    i = PHASES.index
    seq = [None, None, i("tPNa"), i("tPNa"), i("t2"), i("t2"), i("t4"), None, i("t5")]
    ev = event_frames(seq)
    assert ev["t2"] == 4 and ev["t3"] == 6 and ev["t4"] == 6 and ev["t5"] == 8
    assert "tPNa" not in ev  # already there at the first annotated frame
    assert "t6" not in ev


# --- readers -------------------------------------------------------------------------------------------------
def test_events_table_marks_skipped_guessed_and_missed_events_and_errors_in_hours():
    """A decoding straight from t2 to t5 gave t3 = t4 = t5 with nothing to say so (it reads as a direct cleavage);
    an annotated event the model never reached was not listed at all."""
    from core.results import Prediction
    from core.tasks import timelapse as task

    events = [{"event": "t2", "frame": 2, "frame_name": "f2", "seen": True, "trained": True},
              {"event": "t3", "frame": 5, "frame_name": "f5", "seen": False, "trained": True},
              {"event": "t4", "frame": 5, "frame_name": "f5", "seen": True, "trained": True},
              {"event": "tM", "frame": 7, "frame_name": "f7", "seen": True, "trained": False}]
    pred = Prediction("timelapse-stage", "3.0", "seq", extras={
        "events": events, "acquisitions": np.arange(10), "burst_strength": np.zeros(10),
        "true_events": {"t2": 3, "t3": 4, "t4": 5, "t5": 6}})
    table = task.events_table(task.retimed(pred, 30.0, first_frame_hpi=20.0)).set_index("event")
    assert table.loc["t3", "reading"].startswith("skipped") and table.loc["t4", "reading"] == ""
    assert table.loc["tM", "reading"].startswith("a guess")
    assert table.loc["t5", "reading"].startswith("not reached") and pd.isna(table.loc["t5", "frame"])
    assert table.loc["t2", "hours"] == 21.0 and table.loc["t2", "true_hours"] == 21.5
    assert table.loc["t2", "error_frames"] == -1 and table.loc["t2", "error_hours"] == -0.5
    gappy = replace(pred, extras={**pred.extras, "acquisitions": np.r_[0:5, 8:13]})  # 3 acquisitions lost after frame 4
    table = task.events_table(task.retimed(gappy, 30.0)).set_index("event")
    assert table.loc["t4", "reading"] == "a gap in the recording before it: between 2.0 and 4.0 h"  # frame 4 at 2 h, 5 at 4 h
    assert table.loc["t3", "reading"].startswith("skipped") and table.loc["t3", "reading"].endswith("and 4.0 h")
    assert table.loc["t2", "reading"] == ""
    assert table.loc["t3", "error_frames"] == 4  # files 5 and 4 are 4 acquisitions apart, not 1
    once = task.retimed(gappy, 30.0)
    unbroken = replace(once, extras={**once.extras, "acquisitions": np.arange(10)})
    assert all("after_hours" not in e for e in task.retimed(unbroken, 30.0).extras["events"])  # none left stale
    del pred.extras["true_events"]["t3"]  # the annotator went from t2 straight to t4: no t3 time to compare with
    table = task.events_table(task.retimed(pred, 30.0)).set_index("event")
    assert table.loc["t3", "reading"].endswith("not in the annotation (no error to give)")
    assert pd.isna(table.loc["t3", "error_frames"]) and table.loc["t4", "error_frames"] == 0


def test_the_reviewers_frames_time_the_events_and_the_intervals_and_follow_a_re_timing():
    """Draft events are checked by the embryologist: the frame they set for an event replaces the draft's time in the
    morphokinetic intervals; an interval is withheld where a draft event is skipped or after missing frames until
    reviewed; an event the decoding never reached can be set; a negative interval is said to be one."""
    from core.results import Prediction
    from core.tasks import timelapse as task

    events = [{"event": "t2", "frame": 2, "frame_name": "f2", "seen": True, "trained": True},
              {"event": "t3", "frame": 6, "frame_name": "f6", "seen": False, "trained": True},
              {"event": "t4", "frame": 6, "frame_name": "f6", "seen": True, "trained": True},
              {"event": "t5", "frame": 9, "frame_name": "f9", "seen": True, "trained": True}]
    pred = task.retimed(Prediction("timelapse-stage", "3.0", "seq", extras={
        "events": events, "acquisitions": np.arange(12), "burst_strength": np.zeros(12)}), 30.0)
    x = pred.extras
    assert x["t5_t2_h"] == 3.5 and x["cc2_h"] is None and x["s2_h"] is None and x["reviewed_events"] is None
    rows = {r["interval"]: r for r in x["intervals"]}
    assert rows["cc2 (t3 − t2)"]["from"] == "t3 was skipped by the decoding" and rows["t5 − t2"]["from"] == "draft"
    assert rows["s3 (t8 − t5)"]["from"] == "t8 not reached"
    checked = task.reviewed(pred, {"t3": 5, "t8": 11, "t2": 3})
    x = checked.extras
    assert x["cc2_h"] == 1.0 and x["s2_h"] == 0.5 and x["t5_t2_h"] == 3.0 and x["s3_h"] == 1.0
    assert x["reviewed_events"] == "t2, t3, t8"
    rows = {r["interval"]: r for r in x["intervals"]}
    assert rows["cc2 (t3 − t2)"]["from"] == "reviewed" and rows["s2 (t4 − t3)"]["from"] == "reviewed and draft"
    table = task.events_table(checked).set_index("event")
    assert table.loc["t8", "reading"] == "not reached by the decoding; the reviewer's frame"
    assert table.loc["t8", "reviewed_hours"] == 5.5 and pd.isna(table.loc["t4", "reviewed_frame"])
    assert task.headline(pred, "h").startswith("Draft event times: **t2** 1.0 h · **t4** 3.0 h · **t5** 4.5 h · t3 "
                                                "not seen (no frame decoded as it: check for a direct cleavage)")
    assert task.headline(checked, "h").startswith("Event times (✓ set by the reviewer, the others drafts): **t2** 1.5 h ✓"
                                                  " · **t3** 2.5 h ✓ · **t4** 3.0 h · **t5** 4.5 h · **t8** 5.5 h ✓ (")
    later = task.retimed(checked, 15.0, first_frame_hpi=20.0).extras  # the calls keep their frames, at the new times
    assert later["cc2_h"] == 0.5 and [e["reviewed_hours"] for e in later["events"] if e.get("reviewed_frame")] == [
        20.75, 21.25, 22.75]
    backwards = task.reviewed(pred, {"t3": 10}).extras  # after the draft t4 and t5
    assert backwards["s2_h"] == -2.0
    assert backwards["events_out_of_order"] == "t4 (3.0 h, draft) is before t3 (5.0 h, reviewed)"
    cleared = task.reviewed(checked, {}).extras
    assert cleared["cc2_h"] is None and [e["event"] for e in cleared["events"]] == ["t2", "t3", "t4", "t5"]
    # recorded times with a 6 h pause before frame 9 (RUN numbers unbroken): t5, first seen after it, is a range
    paused = [20 + 0.25 * k + (6 if k >= 9 else 0) for k in range(12)]
    timed = task.retimed(replace(pred, extras={**pred.extras, "recorded_hours": np.array(paused),
                                               "time_table": "E_timeElapsed.csv"}), 30.0).extras
    t5 = [e for e in timed["events"] if e["event"] == "t5"][0]
    assert t5["after_hours"] == 22.0 and t5["hours"] == 28.25 and timed["t5_t2_h"] is None
    assert "t5 came after a gap in the recording" in timed["events_withheld"]
    assert all("after_hours" not in e for e in timed["events"] if e["event"] != "t5")  # the usual steps are not gaps
    # the reviewer's first frame after the pause is as uncertain as the draft's: said so
    checked_in_gap = task.reviewed(replace(pred, extras=timed), {"t5": 9, "t4": None}).extras
    assert checked_in_gap["t5_t2_h"] == 7.75 and checked_in_gap["t5_t2_from"] == "reviewed after a gap and draft"
    assert checked_in_gap["reviewed_events"] == "t5"  # a call without a frame is no call


def test_frames_of_several_recordings_are_refused_but_time_stamps_and_a_stray_file_are_not(tmp_path):
    """The Gomez blastocyst-crop folder (6 embryos) was staged as one 152-hour embryo."""
    from core.sequence import read_folder, recordings

    frame = encode_png(np.full((40, 40, 3), 120, np.uint8))
    for embryo in ("EH315-3", "EH315-8"):
        for i in range(6):
            (tmp_path / f"E2_{embryo}_phase_split_{270 + i}.png").write_bytes(frame)
    with pytest.raises(SequenceInputError, match="2 recordings .*EH315-3.*EH315-8"):
        read_folder(tmp_path)
    stamps = [f"2024-05-01_{h:02d}-{m:02d}.png" for h in (10, 11) for m in range(0, 60, 10)]
    assert list(recordings(stamps).values()) == [12]
    assert sorted(recordings([f"embryo_RUN{i}.png" for i in range(8)] + ["cover.png"]).values()) == [1, 8]


def test_zip_with_non_images_keeps_good_frames():
    frames, _ = synthetic.timelapse_sequence(5, size=64)
    entries = {f"seq/frame{i * 5}.png": encode_png(f) for i, f in enumerate(frames)}
    entries["seq/notes.txt"] = b"hello"
    entries["seq/broken7.png"] = b"this is text, not a png"
    entries["__MACOSX/._frame0.png"] = b"junk"
    data = zip_of(entries)
    seq = read_sequence(data, "frames.zip")
    assert len(seq) == 5 and seq.sha256 == hashlib.sha256(data).hexdigest()  # for the record
    assert seq.names == [f"seq/frame{i * 5}.png" for i in range(5)]
    assert len(seq.skipped) == 2 and any("notes.txt" in s for s in seq.skipped)


def test_a_folder_of_embryo_folders_names_them(tmp_path):
    from core.sequence import read_folder

    for embryo in ("AA83-7", "AB028-6"):
        (tmp_path / embryo).mkdir()
        (tmp_path / embryo / "x_RUN1.png").write_bytes(encode_png(np.full((20, 20, 3), 90, np.uint8)))
    with pytest.raises(SequenceInputError, match=r"2 folders of frames inside \(AA83-7, AB028-6\)"):
        read_folder(tmp_path)


def test_frame_conversions_are_said_once_for_the_sequence():
    """16-bit or transparent frames were converted without a word (a single image says how it was converted)."""
    deep = [cv2.imencode(".png", (np.arange(1600).reshape(40, 40) * (20 + i)).astype(np.uint16))[1].tobytes()
            for i in range(4)]
    clear = np.zeros((40, 40, 4), np.uint8)
    clear[..., 3] = 128
    entries = {f"frame{i}.png": d for i, d in enumerate(deep)} | {"frame9.png": cv2.imencode(".png", clear)[1].tobytes()}
    seq = read_zip(zip_of(entries), "frames.zip")
    assert seq.notes == ["16-bit image scaled to 8-bit by its own range (4 of 5 frames)",
                         "transparency removed (see-through pixels shown on black) (1 of 5 frames)"]


def test_zip_of_two_folders_is_refused_and_a_stray_image_is_listed():
    frames, _ = synthetic.timelapse_sequence(4, size=64)
    two = {f"{plane}/frame{i}.png": encode_png(f) for plane in ("F0", "F15") for i, f in enumerate(frames)}
    with pytest.raises(SequenceInputError, match="2 folders"):
        read_zip(zip_of(two), "planes.zip")
    one = {f"frame{i}.png": encode_png(f) for i, f in enumerate(frames)} | {"cover.png": encode_png(frames[0])}
    seq = read_zip(zip_of(one), "frames.zip")
    assert seq.names == [f"frame{i}.png" for i in range(4)]
    assert len(seq.skipped) == 1 and "cover.png: no frame number" in seq.skipped[0]


def test_zipped_gomez_folder_brings_its_annotations():
    frames, _ = synthetic.timelapse_sequence(5, size=64)
    entries = {f"E1/E1_RUN{i + 3}.png": encode_png(f) for i, f in enumerate(frames)}
    entries["E1/E1_phases.csv"] = b"tPNa,3,4\nt2,5,7\n"
    seq = read_zip(zip_of(entries), "E1.zip")
    assert seq.frame_numbers == [3, 4, 5, 6, 7] and not seq.skipped
    assert seq.true_phases == ["tPNa", "tPNa", "t2", "t2", "t2"]


def test_folder_over_the_frame_limit_keeps_the_first_frames_in_time(tmp_path, monkeypatch):
    import core.sequence as sequence

    monkeypatch.setattr(sequence, "MAX_FRAMES", 3)
    frames, _ = synthetic.timelapse_sequence(5, size=64)
    for i, f in zip([10, 9, 2, 1, 3], frames):  # name order: frame1, frame10, frame2, frame3, frame9
        (tmp_path / f"frame{i}.png").write_bytes(encode_png(f))
    seq = read_folder(tmp_path)
    assert seq.names == ["frame1.png", "frame2.png", "frame3.png"]
    assert sorted(s.split(":")[0] for s in seq.skipped) == ["frame10.png", "frame9.png"]


def test_zip_without_images_is_a_clear_error():
    with pytest.raises(SequenceInputError, match="no readable image frames"):
        read_zip(zip_of({"a.txt": b"x"}), "bad.zip")
    with pytest.raises(SequenceInputError, match="not a readable zip"):
        read_sequence(b"PK\x03\x04garbage", "bad.zip")


def write_mp4(path, frames, fps=5):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_input_from_generated_mp4(tmp_path):
    frames, _ = synthetic.timelapse_sequence(12, size=96)
    write_mp4(tmp_path / "embryo.mp4", frames)
    seq = read_sequence(tmp_path / "embryo.mp4")
    assert len(seq) == 12 and seq.frames[0].shape == (96, 96, 3)
    assert abs(float(seq.frames[3].mean()) - float(frames[3].mean())) < 8  # lossy codec, same picture
    same = read_video((tmp_path / "embryo.mp4").read_bytes(), "embryo.mp4")
    assert len(same) == 12


def test_a_video_padded_to_a_frame_rate_is_one_frame_per_acquisition(tmp_path):
    """Exported at a playback rate, each acquisition is repeated: timed per video frame, every event would come
    three times too late. The repeats are merged, and a video of one frame per acquisition is left as it is."""
    frames, _ = synthetic.timelapse_sequence(30, size=96)
    write_mp4(tmp_path / "padded.mp4", [f for f in frames for _ in range(3)], fps=10)
    seq = read_video(tmp_path / "padded.mp4", "padded.mp4")
    assert len(seq) == 30 and "repeated about 3.0×" in seq.notes[0] and "30 acquisitions" in seq.notes[0]
    from core.tasks.timelapse import acquisition_steps

    assert list(acquisition_steps(seq)) == list(range(30))
    write_mp4(tmp_path / "plain.mp4", frames)
    plain = read_video(tmp_path / "plain.mp4", "plain.mp4")
    assert len(plain) == 30 and not plain.notes


def test_repeats_that_the_encoder_left_unequal_are_still_repeats():
    """An mp4 of Gomez AB028-6 (291 acquisitions) with each acquisition repeated 3× read as 301: from each key frame
    of the codec on, the repeats differ from the frame before by more than a tenth of a real change."""
    from core.sequence import distinct_frames

    rng = np.random.default_rng(0)
    acquisitions = [rng.random((24, 24)).astype(np.float32) for _ in range(40)]
    repeats = [4, 5] * 20
    starts = list(np.cumsum([0, *repeats[:-1]]))
    frames = [a.copy() for a, n in zip(acquisitions, repeats) for _ in range(n)]
    for key in range(6, len(frames), 12):  # the key frame and the repeats after it are re-encoded alike
        if key not in starts:
            shift = 0.5 * (rng.random((24, 24)) - 0.5)  # about a third of a real change
            for i in range(key, next(s for s in [*starts, len(frames)] if s > key)):
                frames[i] = frames[i] + shift
    assert distinct_frames(frames) == starts
    assert distinct_frames(acquisitions) == list(range(40))  # one frame per acquisition: nothing merged


def test_a_long_video_keeps_every_acquisition_or_is_sampled_over_its_whole_length_and_a_damaged_one_says_so(tmp_path):
    frames, _ = synthetic.timelapse_sequence(24, size=96)  # at 64 px the codec's own noise hides a few repeats
    write_mp4(tmp_path / "padded.mp4", [f for f in frames for _ in range(3)])  # 72 video frames, 24 acquisitions
    padded = read_video(tmp_path / "padded.mp4", "padded.mp4", max_frames=30)
    assert len(padded) == 24 and padded.frame_numbers is None and "merged into 24" in padded.notes[0]
    write_mp4(tmp_path / "long.mp4", frames)
    seq = read_video(tmp_path / "long.mp4", "long.mp4", max_frames=10)
    assert seq.frame_numbers == [0, 3, 6, 9, 12, 15, 18, 21] and "one in every 3" in seq.notes[0]
    from core.tasks.timelapse import acquisition_steps

    assert list(acquisition_steps(seq)) == seq.frame_numbers  # times follow the video frame numbers
    assert not seq.skipped  # the end of the recording is read, not cut off

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "m.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    data = (tmp_path / "m.avi").read_bytes()
    cut = read_video(data[: len(data) // 2], "cut.avi")
    assert len(cut) < 24 and any("declares 24 frames" in s for s in cut.skipped)


def test_corrupt_video_is_a_clear_error(tmp_path):
    frames, _ = synthetic.timelapse_sequence(6, size=64)
    write_mp4(tmp_path / "ok.mp4", frames)
    data = (tmp_path / "ok.mp4").read_bytes()
    with pytest.raises(SequenceInputError, match="video"):
        read_sequence(b"\x00\x01not a video at all" * 50, "broken.mp4")
    with pytest.raises(SequenceInputError):
        read_sequence(data[: len(data) // 8], "truncated.avi")


def gomez_layout(root: Path, phases: str, n_frames: int, size: int, time_table: str | None = None) -> Path:
    """A one-embryo Gomez layout below `root` (embryo E1, generated frames RUN1…, and the full set's time table when
    given); the embryo's frame folder."""
    frames_dir = root / "embryo_dataset" / "E1"
    frames_dir.mkdir(parents=True)
    (root / "embryo_dataset_annotations").mkdir()
    (root / "embryo_dataset_annotations" / "E1_phases.csv").write_text(phases)
    if time_table is not None:
        (root / "embryo_dataset_time_elapsed").mkdir()
        (root / "embryo_dataset_time_elapsed" / "E1_timeElapsed.csv").write_text(time_table)
    for i, f in enumerate(synthetic.timelapse_sequence(n_frames, size=size)[0]):
        cv2.imwrite(str(frames_dir / f"D2020_WELL1_RUN{i + 1}.jpeg"), f)
    return frames_dir


def test_gomez_folder_brings_annotations(tmp_path):
    seq = read_folder(gomez_layout(tmp_path, "tPNa,2,3\nt2,4,6\n", n_frames=6, size=64))
    assert seq.frame_numbers == [1, 2, 3, 4, 5, 6]
    assert seq.true_phases == [None, "tPNa", "tPNa", "t2", "t2", "t2"]

def test_gomez_time_table_gives_each_frame_its_recorded_hours(tmp_path):
    """The full Gomez set's embryo_dataset_time_elapsed/<embryo>_timeElapsed.csv: hours after insemination per RUN
    number, at uneven intervals (the instrument visits the other wells between acquisitions)."""
    table = "frame_index,time\n1,0.0\n2,18.9\n3,19.15\n4,19.6\n5,nan\n5,19.8\n6,20.3\n"
    seq = read_folder(gomez_layout(tmp_path, "tPNa,2,3\nt2,4,6\n", n_frames=6, size=64, time_table=table))
    assert seq.recorded_hours == [0.0, 18.9, 19.15, 19.6, 19.8, 20.3] and seq.time_table == "E1_timeElapsed.csv"
    assert not seq.skipped and not seq.notes
    frames_dir = tmp_path / "embryo_dataset" / "E1"
    shutil.copytree(frames_dir, tmp_path / "copy" / "E1")  # the same frames elsewhere: the same input (no file to hash)
    assert read_folder(tmp_path / "copy" / "E1").sha256 == seq.sha256 and len(seq.sha256) == 64
    os.utime(tmp_path / "embryo_dataset_time_elapsed" / "E1_timeElapsed.csv", (4e9, 4e9))  # a corrected table
    assert folder_stamp(frames_dir) == 4e9  # is read again, though no frame changed


def test_a_time_table_beside_zipped_frames_is_used_only_when_it_is_this_embryos_and_plausible():
    """A table that misses frames, is another embryo's, goes back or stands still, starts below 0 or is in minutes
    is not used, and the page says why (a table named for CF946-6 in AB028-6's folder was used without a word)."""
    frames, _ = synthetic.timelapse_sequence(4, size=64)
    entries = {f"E1/E1_RUN{i + 1}.png": encode_png(f) for i, f in enumerate(frames)}

    def read(table: bytes, name: str = "E1_timeElapsed.csv", frames=entries):
        return read_zip(zip_of(frames | {f"E1/{name}": table}))

    seq = read(b"frame_index,time\n1,25\n2,25.5\n3,26\n4,27\n")
    assert seq.recorded_hours == [25.0, 25.5, 26.0, 27.0] and not seq.skipped and not seq.time_table_problem
    for table, name, why in ((b"1,25\n2,25.5\n4,27\n", None, "it has no time for 1 of the 4 frames (e.g. RUN3)"),
                             (b"1,25\n2,25.5\n3,26\n4,27\n", "CF946-6_timeElapsed.csv",
                              "it is named for CF946-6, not for this embryo, E1"),
                             (b"1,25\n2,24\n3,26\n4,27\n", None, "do not increase from frame to frame (RUN1 at 25 h"),
                             (b"1,25\n2,25\n3,26\n4,27\n", None, "do not increase"),
                             (b"1,-1.9\n2,0.1\n3,0.4\n4,0.7\n", None, "negative hours (-1.9 h at RUN1)"),
                             (b"1,1500\n2,1515\n3,1530\n4,11000\n", None, "are they in minutes?"),
                             (b"1,0\n2,15\n3,30\n4,45\n", None, "15.0 h an acquisition: are they in minutes?")):
        seq = read(table, name or "E1_timeElapsed.csv")
        assert seq.recorded_hours is None and why in seq.time_table_problem, seq.time_table_problem
        assert seq.time_table_problem.endswith("Event times come from the minutes between frames.")
    unnumbered = {f"f{i}.png": encode_png(f) for i, f in enumerate(frames)} | {"frames_timeElapsed.csv": b"1,2\n"}
    assert "no RUN numbers" in read_zip(zip_of(unnumbered), "frames.zip").time_table_problem


def test_of_several_time_tables_beside_the_frames_the_embryos_own_is_read(tmp_path):
    frames, _ = synthetic.timelapse_sequence(3, size=64)
    (tmp_path / "E1").mkdir()
    for i, f in enumerate(frames):
        (tmp_path / "E1" / f"E1_RUN{i + 1}.png").write_bytes(encode_png(f))
    (tmp_path / "E1" / "A0_timeElapsed.csv").write_text("1,1\n2,2\n3,3\n")  # another embryo's, first by name
    (tmp_path / "E1" / "E1_timeElapsed.csv").write_text("1,30\n2,30.25\n3,30.5\n")
    seq = read_folder(tmp_path / "E1")
    assert seq.recorded_hours == [30.0, 30.25, 30.5] and not seq.skipped


def test_phase_table_with_header_quotes_and_a_broken_row(tmp_path):
    from core.datasets.gomez import read_phases

    table = tmp_path / "E1_phases.csv"
    table.write_text('phase,first,last\n"tPNa","3","5.0"\ntPNf,6,unknown\nt2,7,9\n')
    assert read_phases(table) == [("tPNa", 3, 5), ("t2", 7, 9)]



# --- the model (skips when the weights are not installed) ----------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from core import registry

    try:
        return registry.load("timelapse-stage", "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"timelapse-stage is not installed: {exc}")


def test_predict_sequence_shapes_and_monotone(model):
    from core.sequence import FrameSequence
    from core.tasks import timelapse as task

    frames, _ = synthetic.timelapse_sequence(40, size=128)
    calls = []
    seq = FrameSequence(frames, [f"f{i}" for i in range(40)], "gen", "gen")
    pred = task.predict_sequence("timelapse-stage", seq, 10.0, progress=lambda d, t: calls.append(d), )
    x = pred.extras
    assert np.asarray(x["stage_probs"]).shape == (40, 4) and np.asarray(x["phase_probs"]).shape == (40, 16)
    assert np.allclose(np.asarray(x["stage_probs"]).sum(1), 1, atol=1e-3)
    dec = [STAGES.index(s) for s in x["stage_decoded"]]
    assert np.all(np.diff(dec) >= 0)
    assert x["hours"][-1] == pytest.approx(39 * 10 / 60, abs=1e-3)
    assert calls and calls[-1] == 40
    assert set(task.timeline_table(pred).columns) >= {"frame", "hours", "stage", "phase", "p_blastocyst",
                                                      "burst_strength"}
    assert pred.summary()["model"] == "timelapse-stage"
    # the result is the decoded timeline: no last-frame raw answer to be recorded as "the" stage (it disagreed)
    assert pred.summary()["labels"] == {} and x["current_stage"] == x["stage_decoded"][-1]
    assert x["current_phase"] == x["phase_decoded"][-1] and x["warnings"] == []
    long = task.retimed(pred, 240.0)  # 39 frames at 4 h: 156 h, within culture; at 5 h: 195 h, not
    assert long.extras["warnings"] == [] and "longer than embryo culture" in task.retimed(pred, 300.0).extras["warnings"][0]


def test_recorded_hours_time_the_events_unless_the_user_turns_them_off(model):
    from core.sequence import FrameSequence
    from core.tasks import timelapse as task

    frames, _ = synthetic.timelapse_sequence(40, size=128)
    numbers = [1, 2, *range(5, 43)]  # RUN3 and RUN4 missing: a gap
    hours = [20.0 + 0.3 * n for n in numbers]
    seq = FrameSequence(frames, [f"E_RUN{n}.png" for n in numbers], "gen", "gen", frame_numbers=numbers,
                        recorded_hours=hours, time_table="E_timeElapsed.csv")
    pred = task.predict_sequence("timelapse-stage", seq, 10.0)
    x = pred.extras
    assert np.allclose(x["hours"], hours) and x["time_zero"] == "insemination" and x["minutes_per_frame"] is None
    assert x["timed_by"] == "the time table E_timeElapsed.csv" and x["first_frame_hpi"] == 20.3
    assert all(e["hours"] == pytest.approx(hours[e["frame"]]) for e in x["events"])
    by_interval = task.retimed(pred, 15.0, None, recorded=False).extras
    assert by_interval["hours"][-1] == pytest.approx(41 * 15 / 60) and by_interval["time_zero"] == "first frame"
    assert by_interval["minutes_per_frame"] == 15.0


def test_evaluate_gives_event_errors_in_the_recorded_hours_of_a_full_gomez_set(model, tmp_path):
    from core import metrics
    from core.tasks import timelapse as task

    hours = {n: 18.0 + 0.25 * n + (0.1 if n % 3 else 0.0) for n in range(1, 33)}  # uneven, as an instrument's
    table = "frame_index,time\n" + "".join(f"{n},{h}\n" for n, h in hours.items())
    gomez_layout(tmp_path, "tPNa,1,10\nt2,11,20\nt4,21,32\n", n_frames=32, size=96, time_table=table)
    name = "pytest-time-table"
    try:
        task.evaluate("timelapse-stage", tmp_path, name, None, "cpu")
        folder = model.card.folder / "eval" / name
        meta = json.loads((folder / "meta.json").read_text())
        events, note = metrics.event_table(folder, meta)
    finally:
        shutil.rmtree(model.card.folder / "eval" / name, ignore_errors=True)
    assert note == "hours after insemination from each embryo's time table"
    true = events.set_index("event")["true_h"]
    assert true["t2"] == pytest.approx(hours[11]) and true["t4"] == pytest.approx(hours[21])
    table = tmp_path / "embryo_dataset_time_elapsed" / "E1_timeElapsed.csv"  # in minutes: checked as the page does
    table.write_text("frame_index,time\n" + "".join(f"{n},{15 * n}\n" for n in range(1, 33)))
    try:
        task.evaluate("timelapse-stage", tmp_path, name, None, "cpu")
        meta = json.loads((model.card.folder / "eval" / name / "meta.json").read_text())
        assert metrics.event_table(model.card.folder / "eval" / name, meta)[1].startswith("frame numbers converted")
    finally:
        shutil.rmtree(model.card.folder / "eval" / name, ignore_errors=True)


def test_frames_without_numbers_and_a_damaged_input_are_warned_with_the_record():
    from core.sequence import FrameSequence
    from core.tasks import timelapse as task

    frames, _ = synthetic.timelapse_sequence(3, size=64)
    seq = FrameSequence(frames, ["a.png", "b.png", "c.png"], "x.zip", "file name order (no frame numbers found)",
                        skipped=["notes.txt: not an image file"], notes=["every frame: scaled to 8-bit"])
    warnings = task.input_warnings(seq)
    assert warnings[0] == "Every frame: scaled to 8-bit." and warnings[1] == task.ORDER_UNKNOWN
    assert warnings[2].startswith("1 item(s) of the input could not be used")


def test_predict_stages_each_recording_as_one_row_and_a_lone_frame_alone(model, tmp_path, monkeypatch, capfd):
    """`predict timelapse-stage embryo.mp4` answered "not a readable image", and a folder of an embryo's frames gave
    one row per frame, each staged alone. Now a video, zip or folder of frames is one embryo's recording, one row:
    its event times and intervals, as morphokinetic exports lay them out; a folder of embryo folders gives one each."""
    import io

    from core import records
    from core.__main__ import main
    from core.tasks import timelapse as task

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    frames, _ = synthetic.timelapse_sequence(40, size=128)
    for embryo in ("E1", "E2"):
        (tmp_path / "dataset" / embryo).mkdir(parents=True)
        for i, f in enumerate(frames):
            cv2.imwrite(str(tmp_path / "dataset" / embryo / f"{embryo}_RUN{i + 1}.png"), f)
    (tmp_path / "dataset" / "E2" / "E2_timeElapsed.csv").write_text(
        "frame_index,time\n" + "".join(f"{n},{20 + 0.3 * n}\n" for n in range(1, 41)))
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 40)
    lone = tmp_path / "dataset" / "E1" / "E1_RUN5.png"
    assert main(["predict", "timelapse-stage", str(tmp_path / "dataset"), str(tmp_path / "broken.mp4"), str(lone),
                 "--minutes-per-frame", "10", "--first-frame-hpi", "18"]) == 0
    table = pd.read_csv(io.StringIO(capfd.readouterr().out)).set_index("file")
    e1, e2 = table.loc[str(tmp_path / "dataset" / "E1")], table.loc[str(tmp_path / "dataset" / "E2")]
    assert e1["n_frames"] == 40 and e1["timed_by"] == "the minutes between frames" and e1["first_frame_hpi"] == 18
    assert e2["timed_by"] == "the time table E2_timeElapsed.csv" and e2["first_frame_hpi"] == 20.3
    staged = task.retimed(task.predict_sequence(task.MODEL_ID, read_folder(tmp_path / "dataset" / "E1")), 10.0, 18.0)
    times = {k: v for k, v in staged.extras.items() if k.endswith("_h") and v is not None}
    assert times and all(e1[k] == pytest.approx(v) for k, v in times.items())
    assert "video" in table.loc[str(tmp_path / "broken.mp4"), "error"]
    assert table.loc["E1_RUN5.png", "warnings"].startswith("One frame staged alone")
    assert {r.summary["input"] for r in records.query(task="timelapse")} >= {str(tmp_path / "dataset" / "E1")}
    assert main(["predict", "pcos", str(lone), "--minutes-per-frame", "10"]) == 2
    assert "the minutes between frames and the first frame's hours given were not used" in e2["warnings"]
    # a folder of zipped recordings, and a Gomez root, give one row per embryo too
    (tmp_path / "zips").mkdir()
    for embryo in ("E1", "E2"):
        shutil.make_archive(str(tmp_path / "zips" / embryo), "zip", tmp_path / "dataset", embryo)
    gomez_layout(tmp_path / "gomez", "tPNa,1,10\n", n_frames=32, size=96)
    assert task.recordings(tmp_path / "gomez") == [tmp_path / "gomez" / "embryo_dataset" / "E1"]
    assert main(["predict", "timelapse-stage", str(tmp_path / "zips")]) == 0
    assert list(pd.read_csv(io.StringIO(capfd.readouterr().out))["n_frames"]) == [40, 40]


def test_single_frame_predict_and_explain(model):
    frames, _ = synthetic.timelapse_sequence(3, size=128)
    out = model.predict(frames)
    assert out["stage"].shape == (3, 4) and out["phase"].shape == (3, 16)
    heat = model.explain(frames[0], "stage")
    assert 0 <= heat.min() and heat.max() <= 1
    if model.input_spec.get("centre_crop"):  # the heat map lies on the whole frame, zero outside what the model read
        assert heat.shape == frames[0].shape[:2] and heat[:5].max() == 0 and heat[:, :5].max() == 0
    else:
        assert heat.shape == tuple(model.input_spec["size"])


def test_model_reads_the_centre_of_a_whole_well_frame():
    from core.preprocess import heat_on_image, prepare

    frame = np.zeros((100, 120, 3), np.uint8)
    frame[25:75, 35:85] = 200  # the central square of side 0.5 × 100
    spec = {"size": [8, 8], "channels": 1, "normalise": "unit", "centre_crop": 0.5}
    assert np.allclose(prepare([frame], spec), 200 / 255, atol=1e-3)
    heat = heat_on_image(np.ones((8, 8), np.float32), frame.shape, spec)
    assert heat.shape == (100, 120) and heat[25:75, 35:85].min() == 1 and heat.sum() == 50 * 50
    assert heat_on_image(np.ones((8, 8)), frame.shape, {"size": [8, 8]}).shape == (8, 8)


def test_embryo_crop_padded_to_fill_the_models_view():
    from core.preprocess import centre_square
    from core.tasks import timelapse as task

    crop = np.full((200, 200), 90, np.uint8)
    cv2.circle(crop, (100, 100), 90, 200, -1)
    seen = centre_square(task.crop_as_well_frame(crop), task.WELL_FRACTION)
    assert seen.shape[0] == pytest.approx(200 / task.CROP_FILL, abs=2)
    assert seen[0, 0] == 90 and seen[seen.shape[0] // 2, seen.shape[1] // 2] == 200


def test_regression_floor_on_heldout_embryo(model):
    """AB028-6 is held out of training by the stable hash; a floor well below the measured figure."""
    from core.tasks import timelapse as task

    root = shared_data("timelapse", "gomez2022")
    seq = read_folder(root / "embryo_dataset" / "AB028-6")
    assert task.is_heldout("AB028-6", len(seq))
    pred = task.predict_sequence("timelapse-stage", seq)
    truth = [p for p in seq.true_phases]
    from core.datasets.gomez import STAGE_OF_PHASE

    ok = [STAGE_OF_PHASE[t] == s for t, s in zip(truth, pred.extras["stage_decoded"]) if t]
    assert np.mean(ok) >= 0.95  # measured 0.996 (2026-11-22, model 3.0)
    ev = pred.extras["events"]
    true_ev = pred.extras["true_events"]
    t2 = next(e["frame"] for e in ev if e["event"] == "t2")
    assert abs(t2 - true_ev["t2"]) <= 8  # measured 1 frame (target 2); t3 and t4 are 66 frames late, see the README
    bursts = np.asarray(pred.extras["burst_strength"])
    assert len(bursts) == len(seq)
    # the first division and the 4 -> 5 one each show as a burst within 3 frames (measured 1.0 and 0.88)
    assert bursts[true_ev["t2"] - 3:true_ev["t2"] + 4].max() >= 0.5
    assert bursts[true_ev["t5"] - 3:true_ev["t5"] + 4].max() >= 0.5


def test_train_command_writes_a_card_that_says_what_it_saw(tmp_path, monkeypatch):
    """A one-epoch run of the real train function on a generated one-embryo Gomez layout: the card names the data
    given, counts its sequences and unseen phases, and does not inherit figures measured for another training set."""
    import tomllib

    from core import registry
    from core.tasks import timelapse as task

    data = tmp_path / "data"
    gomez_layout(data, "tPNa,1,10\nt2,11,25\nt4,26,40\n", n_frames=40, size=96)
    weights = tmp_path / "weights"
    (weights / task.MODEL_ID).mkdir(parents=True)
    (weights / task.MODEL_ID / "card.toml").write_text('id = "timelapse-stage"\n[metrics."old/heldout"]\nstage_accuracy = 0.99\n')
    monkeypatch.setattr(task, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(registry.REGISTRY, "root", weights)
    monkeypatch.setattr(task, "MAX_TRAIN_FRAMES", 60_000)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    try:
        folder = task.train(task.MODEL_ID, data, "cpu", epochs=1, seed=0)
    finally:
        registry.REGISTRY.clear()
    card = tomllib.loads((folder / "card.toml").read_text())
    assert f"--data {data} " in card["train_command"]
    assert card["limitations"].startswith("Trained on 1 complete annotated time-lapse sequences (E1)")
    assert "tM" in card["limitations"] and "t3" in card["limitations"]  # phases no training frame was annotated
    assert "old/heldout" not in card.get("metrics", {})


def test_a_zip_bomb_entry_and_a_set_of_blank_frames_are_refused_without_unpacking(tmp_path):
    """A 2 MB zip holding one 2 GiB file took the server to 6 GB; 5000 black 2×2 frames were staged as 'cleavage'."""
    import zipfile

    from core import sequence

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("frame_RUN1.png", "w", force_zip64=True) as f:
            for _ in range(210):
                f.write(bytes(2**20))
        z.writestr("frame_RUN2.png", encode_png(synthetic.timelapse_sequence(1, size=64)[0][0]))
    seq = sequence.read_zip(bomb)
    assert len(seq) == 1 and any("unpacks to 210 MB" in s for s in seq.skipped)

    blank = tmp_path / "blank.zip"
    with zipfile.ZipFile(blank, "w") as z:
        for i in range(10):
            z.writestr(f"frame_RUN{i + 1}.png", encode_png(np.zeros((2, 2, 3), np.uint8)))
    with pytest.raises(sequence.SequenceInputError, match="none of its 10 frames shows anything"):
        sequence.read_zip(blank)


def test_one_recording_is_read_from_a_folder_holding_several(tmp_path):
    """The Confusion page opens a frame of the Gomez blastocyst crops, whose folder holds every embryo's crops."""
    from core.sequence import read_folder

    frames, _ = synthetic.timelapse_sequence(6, size=64, seed=2)
    for embryo in ("EA32-6", "EE656-3"):
        for i, f in enumerate(frames):
            (tmp_path / f"E2_{embryo}_phase_split_{10 + i}.png").write_bytes(encode_png(f))
    (tmp_path / "notes.txt").write_text("not a frame")
    seq = read_folder(tmp_path, recording_of="E2_EE656-3_phase_split_12.png")
    assert seq.names == [f"E2_EE656-3_phase_split_{10 + i}.png" for i in range(6)] and not seq.skipped

"""Time-lapse page: AppTest with a generated sequence folder and a bad folder; browser test with an MP4 and a corrupt video."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import pytest

from core import records, registry, synthetic
from tests.conftest import ROOT, assert_no_errors, wait_for_app

pytestmark = pytest.mark.skipif(
    "timelapse-stage" not in registry.REGISTRY.ids(), reason="timelapse-stage weights are not installed"
)


def write_frames(folder, n=16, size=128):
    folder.mkdir(parents=True, exist_ok=True)
    frames, _ = synthetic.timelapse_sequence(n, size=size)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"embryo_RUN{i + 1}.png"), f)
    return folder


def test_page_stages_a_local_folder(tmp_path):
    from streamlit.testing.v1 import AppTest

    folder = write_frames(tmp_path / "seq")
    (folder / "readme.txt").write_text("not a frame")
    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    assert not at.exception
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(folder)).run()
    assert not at.exception
    assert any("16 frames" in c.value for c in at.caption)
    assert any("readme.txt" in w.value for w in at.warning)  # the non-image is named, the frames still used
    assert any("Last frame" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) == 1
    at.slider(key="tl_frame").set_value(15).run()
    assert not at.exception


def test_page_gives_the_first_event_times_at_the_top():
    """The page's summary said only "Last frame: Cleavage"; t2–t5 were 1,500 px further down, in the Events tab."""
    from streamlit.testing.v1 import AppTest

    folder = ROOT.parent / "shared" / "data" / "timelapse" / "gomez2022" / "embryo_dataset" / "AB028-6"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here")
    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=180)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(folder)).run()
    assert not at.exception, at.exception
    events = at.dataframe[0].value.set_index("event")
    headline = next(m.value for m in at.markdown if m.value.startswith("Draft event times: "))
    assert f"**t2** {events.loc['t2', 'time (h from first frame)']:.1f} h from first frame" in headline
    # 10 frames sampled over 378 acquisitions: events fall in gaps, given as ranges, not as direct cleavages
    at.text_input(key="tl_folder").input(str(folder.parent / "CAV074-6")).run()
    headline = next(m.value for m in at.markdown if m.value.startswith("Draft event times: "))
    assert "(a gap in the recording)" in headline and "direct cleavage" not in headline, headline


def test_page_shorter_gappy_and_single_frame_sequences(tmp_path):
    """After frame 15 of a long sequence: a shorter one with missing RUNs (times follow the RUN numbers, a new interval
    re-times without re-classifying), then a one-frame folder (no slider to move)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(write_frames(tmp_path / "long"))).run()
    at.slider(key="tl_frame").set_value(15).run()
    gappy = write_frames(tmp_path / "gappy", n=8)
    for run in (4, 5, 6):  # RUN1-3 and RUN7-8 stay: 5 frames over 8 acquisitions
        (gappy / f"embryo_RUN{run}.png").unlink()
    at.text_input(key="tl_folder").input(str(gappy)).run()
    assert not at.exception
    assert any("3 acquisitions are missing" in c.value for c in at.caption)
    assert at.slider(key="tl_frame").value <= 4
    assert "over 1.8 h" in at.success[0].value  # RUN1 to RUN8 at 15 min, not 5 frames' 1.0 h
    staged = at.success[0].value.split("staged in")[1]
    at.number_input(key="tl_minutes").set_value(30.0).run()
    assert "over 3.5 h" in at.success[0].value
    assert at.success[0].value.split("staged in")[1] == staged  # the cached staging, re-timed
    single = write_frames(tmp_path / "single", n=1)
    at.text_input(key="tl_folder").input(str(single)).run()
    assert not at.exception
    assert any("Last frame" in s.value for s in at.success)


def test_page_counts_hours_after_insemination_and_keeps_the_folder_across_inputs(tmp_path):
    """Published timings are in hours after insemination: with the first frame's hpi, the events are on that scale.
    A folder path typed, then another input looked at, is still there on coming back."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    folder = str(write_frames(tmp_path / "seq", n=40))
    at.text_input(key="tl_folder").input(folder).run()
    events = at.dataframe[0].value
    assert "time (h from first frame)" in events.columns and not events.empty
    first = events["time (h from first frame)"].iloc[0]
    saved = records.query(task="timelapse")
    at.number_input(key="tl_first_hpi").set_value(20.0).run()
    assert not at.exception
    events = at.dataframe[0].value
    assert events["time (hpi)"].iloc[0] == pytest.approx(first + 20.0)
    now = records.query(task="timelapse")  # the record of this staging is re-timed, not saved again
    assert [r.id for r in now] == [r.id for r in saved]
    assert now[0].summary["events"][0]["hours"] == pytest.approx(first + 20.0)
    assert "over 9.8 h" in at.success[0].value  # the span, not the last frame's hpi
    at.radio(key="tl_source").set_value("Generated example").run()
    at.radio(key="tl_source").set_value("Local folder").run()
    assert at.text_input(key="tl_folder").value == folder and at.success


def test_page_times_the_events_by_the_time_table_that_came_with_the_frames(tmp_path):
    """A time table beside the frames (Gomez's <embryo>_timeElapsed.csv): the instrument's own hours after
    insemination, uneven between frames; the interval boxes are off until the user turns the table off."""
    from streamlit.testing.v1 import AppTest

    folder = write_frames(tmp_path / "seq", n=40)
    hours = {n: 22.0 + 0.2 * n + (0.05 if n % 2 else 0.0) for n in range(1, 41)}
    (folder / "seq_timeElapsed.csv").write_text("frame_index,time\n" + "".join(f"{n},{h}\n" for n, h in hours.items()))
    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(folder)).run()
    assert not at.exception and not at.warning  # the table is not 'an item that could not be used'
    assert at.toggle(key="tl_recorded").value and not [b for b in at.number_input if b.key == "tl_minutes"]
    assert any("first frame at 22.25 hpi, 9 min between frames as a rule (from 9 to 15 min)" in c.value
               for c in at.caption)
    events = at.dataframe[0].value
    frame = int(events["frame (from 0)"].iloc[0])
    assert events["time (hpi)"].iloc[0] == pytest.approx(hours[frame + 1])
    assert records.query(task="timelapse")[0].summary["timed_by"] == "the time table seq_timeElapsed.csv"
    at.toggle(key="tl_recorded").set_value(False).run()
    assert at.number_input(key="tl_minutes").value == 15
    assert at.dataframe[0].value["time (h from first frame)"].iloc[0] == pytest.approx(frame * 15 / 60)


def test_page_keeps_the_reviewers_event_frames_in_the_intervals_and_the_record(tmp_path):
    """The embryologist steps to the frame that shows an event and sets it: the headline, the events table, the
    intervals and the same record take the reviewer's time; a new sequence starts unreviewed."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(write_frames(tmp_path / "seq", n=40))).run()
    saved = records.query(task="timelapse")[0]
    at.slider(key="tl_frame").set_value(12).run()
    at.button(key="tl_step_5").click().run()
    at.button(key="tl_step_-5").click().run()
    at.button(key="tl_step_1").click().run()
    at.selectbox(key="tl_review_event").set_value("t3").run()
    at.button(key="tl_review_set").click().run()
    assert not at.exception
    assert at.selectbox(key="tl_review_event").value == "t4"  # on to the next event
    assert "**t3** 3.2 h from first frame ✓" in at.markdown[1].value  # frame 13 at 15 min per frame
    shown = [d.value for d in at.dataframe if "your frame (from 0)" in d.value.columns][0].set_index("event")
    assert shown.loc["t3", "your frame (from 0)"] == "13" and shown.loc["t4", "your frame (from 0)"] == "—"
    record = records.query(task="timelapse")[0]
    assert record.id == saved.id and record.summary["reviewed_events"] == "t3"
    assert {e["event"]: e.get("reviewed_frame") for e in record.summary["events"]}["t3"] == 13
    at.toggle(key="tl_crops").set_value(True).run()  # another staging: the calls stay with the recording
    at.toggle(key="tl_crops").set_value(False).run()
    assert records.get(saved.id).summary["reviewed_events"] == "t3"
    at.slider(key="tl_frame").set_value(2).run()
    at.selectbox(key="tl_review_event").set_value("t4").run()
    at.button(key="tl_review_set").click().run()  # t4 before t3: said
    assert "out of biological order: t4 (0.5 h, reviewed) is before t3 (3.2 h, reviewed)" in [
        w for w in at.warning if "biological" in w.value][-1].value
    assert records.get(saved.id).summary["events_out_of_order"].startswith("t4 (0.5 h, reviewed) is before t3")
    at.selectbox(key="tl_review_event").set_value("t3").run()
    at.button(key="tl_review_clear").click().run()
    assert records.get(saved.id).summary["reviewed_events"] == "t4"
    assert not [w for w in at.warning if "biological" in w.value]
    at.text_input(key="tl_folder").input(str(write_frames(tmp_path / "other", n=30))).run()
    assert records.query(task="timelapse")[0].summary["reviewed_events"] is None  # not carried to another embryo
    # a reload (a new session) offers the earlier record's frames back, and goes on in that record
    before = len(records.query(task="timelapse"))
    again = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    again.run()
    again.radio(key="tl_source").set_value("Local folder").run()
    again.text_input(key="tl_folder").input(str(tmp_path / "seq")).run()
    assert any("reviewed before" in i.value for i in again.info)
    again.button(key=[b.key for b in again.button if b.key.startswith("tl_restore_")][0]).click().run()
    # the uncropped staging's record, with t4 (the crops staging's record still held t3)
    assert any(c.value.startswith("Set by you: t4 at frame 2 ") for c in again.caption)
    assert len(records.query(task="timelapse")) == before  # that record goes on: the reload's own is gone
    again.selectbox(key="tl_review_event").set_value("t5").run()
    again.button(key="tl_review_set").click().run()
    assert records.get(saved.id).summary["reviewed_events"] == "t4, t5"


def test_page_pads_embryo_crops_when_told_they_are_crops(tmp_path):
    """Gomez blastocyst crops (held-out embryo EH309-8, all blastocyst) staged as they are: the model's centre square
    cuts the embryo and every frame read cleavage; padded as the model learnt them, the last frame is blastocyst."""
    import shutil

    from streamlit.testing.v1 import AppTest

    from tests.conftest import shared_data

    folder = tmp_path / "EH309-8"
    folder.mkdir()
    for f in shared_data("timelapse", "gomez2022_blastocyst_crops").glob("E2_EH309-8_*"):
        shutil.copy(f, folder)
    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(folder)).run()
    assert "Last frame: **Cleavage**" in at.success[0].value
    at.toggle(key="tl_crops").set_value(True).run()
    assert not at.exception
    assert "Last frame: **Blastocyst**" in at.success[0].value


def test_page_burst_buttons_jump_between_bursts(tmp_path):
    from streamlit.testing.v1 import AppTest

    from core.tasks import timelapse as task

    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(write_frames(tmp_path / "long", n=40))).run()
    assert not at.exception
    frames, _ = synthetic.timelapse_sequence(40, size=128)
    model = registry.load(task.MODEL_ID)
    bursts = task.burst_frames(task.burst_strength(task.frame_change(model.prepare(frames))[0]))
    assert len(bursts) >= 2  # the generated embryo changes abruptly at each new stage
    at.button(key="tl_next_burst").click().run()
    assert at.slider(key="tl_frame").value == bursts[0]
    at.button(key="tl_next_burst").click().run()
    at.button(key="tl_prev_burst").click().run()
    assert at.slider(key="tl_frame").value == bursts[0]
    at.slider(key="tl_frame").set_value(39).run()
    at.text_input(key="tl_folder").input(str(write_frames(tmp_path / "short", n=16))).run()  # slider past the end
    assert not at.exception
    assert at.slider(key="tl_frame").value <= 15
    assert at.button(key="tl_next_burst").disabled  # under 30 frames: no change signal


def test_page_reports_missing_folder(tmp_path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=60)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(tmp_path / "nope")).run()
    assert not at.exception
    assert any("no such folder" in e.value for e in at.error)
    assert not any("to start" in i.value for i in at.info)  # the refusal, not an invitation to start as well


def test_browser_video_and_corrupt_video(page, app_url, tmp_path):
    frames, _ = synthetic.timelapse_sequence(20, size=128)
    path = tmp_path / "embryo.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    page.goto(f"{app_url}/timelapse")
    wait_for_app(page, 180_000)
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text("Last frame", exact=False).wait_for(timeout=180_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    wait_for_app(page, 180_000)  # the heat map and what-if still run after the chart: upload the next file after them
    assert_no_errors(page)

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is text, not a video " * 40)
    page.locator('input[type="file"]').set_input_files(str(bad))
    page.get_by_text("not a readable video", exact=False).wait_for(timeout=120_000)
    wait_for_app(page)
    assert_no_errors(page)


def test_browser_zip_with_non_images(page, app_url, tmp_path):
    frames, _ = synthetic.timelapse_sequence(10, size=96)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, f in enumerate(frames):
            zf.writestr(f"frame{i}.png", cv2.imencode(".png", f)[1].tobytes())
        zf.writestr("notes.txt", "hello")
    path = tmp_path / "frames.zip"
    path.write_bytes(buf.getvalue())
    page.goto(f"{app_url}/timelapse")
    wait_for_app(page, 180_000)
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text("notes.txt", exact=False).wait_for(timeout=180_000)
    page.get_by_text("Last frame", exact=False).wait_for(timeout=90_000)
    wait_for_app(page, 180_000)
    assert_no_errors(page)


def test_browser_event_row_moves_the_frame_slider(page, app_url):
    """Clicking an event in the table shows that frame (real held-out embryo AB028-6, where events exist)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from core.sequence import read_folder
    from core.tasks import timelapse as task
    from tests.conftest import shared_data

    folder = shared_data("timelapse", "gomez2022") / "embryo_dataset" / "AB028-6"
    events = task.events_table(task.predict_sequence(task.MODEL_ID, read_folder(folder)))
    page.goto(f"{app_url}/timelapse")
    wait_for_app(page, 180_000)
    box = page.locator('input[aria-label^="Folder of frames"]')
    for _ in range(3):  # a click that lands while the page is still wiring its widgets can be lost: try again
        page.locator('[data-testid="stRadio"] label').filter(has_text="Local folder").click()
        try:
            box.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    box.fill(str(folder))
    box.press("Enter")
    page.get_by_text("Click an event's row", exact=False).wait_for(timeout=180_000)
    wait_for_app(page, 180_000)  # the heat map and what-if are drawn after the table
    slider = page.locator('[data-testid="stSliderThumbValue"]').first
    assert slider.inner_text() == "0"
    grid = page.locator('.st-key-tl_events_table [data-testid="stDataFrame"]')
    row_height = 35  # Streamlit's data grid: a header row, then rows of this height
    for _ in range(3):  # a click that lands while a rerun redraws the grid is lost: click again
        page.get_by_role("tab", name="Events").click()  # the table's tab, whichever tab a rerun left open
        grid.wait_for(state="visible", timeout=60_000)
        grid.scroll_into_view_if_needed()
        bounds = grid.bounding_box()
        page.mouse.click(bounds["x"] + 12, bounds["y"] + row_height * 3.5)  # the selection box of the third event
        try:
            page.wait_for_function("s => document.querySelector(s).innerText !== '0'",
                                   arg='[data-testid="stSliderThumbValue"]', timeout=60_000)
            break
        except PlaywrightTimeout:
            wait_for_app(page, 120_000)
    assert slider.inner_text() == str(events["frame"].iloc[2])
    assert_no_errors(page)


def test_a_broken_link_in_a_local_folder_and_an_unreadable_folder_are_said_not_raised(tmp_path):
    """A dangling symlink among the frames, or /proc/self, raised FileNotFoundError / OSError on the page."""
    from streamlit.testing.v1 import AppTest

    folder = write_frames(tmp_path / "seq", n=6)
    (folder / "embryo_RUN7.png").symlink_to(tmp_path / "gone.png")
    at = AppTest.from_file(str(ROOT / "app_pages" / "timelapse.py"), default_timeout=120)
    at.run()
    at.radio(key="tl_source").set_value("Local folder").run()
    at.text_input(key="tl_folder").input(str(folder)).run()
    assert not at.exception, at.exception
    assert any("6 frames" in c.value for c in at.caption)
    if Path("/proc/self").is_dir():
        at.text_input(key="tl_folder").input("/proc/self").run()
        assert not at.exception, at.exception
        assert at.error

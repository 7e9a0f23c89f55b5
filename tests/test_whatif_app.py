"""AppTest of the what-if panel on its harness page (numpy stand-in model: no training, no framework)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import whatif

PAGE = Path(__file__).resolve().parent / "whatif_harness" / "page.py"


@pytest.fixture
def at(monkeypatch):
    monkeypatch.delenv("WHATIF_WEIGHTS", raising=False)
    app = AppTest.from_file(str(PAGE), default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metric(app, output_label: str, which: int):
    """The value of the `which`-th (0 original, 1 modified) metric whose label starts with output_label."""
    values = [m for m in app.metric if m.label.startswith(output_label)]
    return values[which]


def caption_text(app) -> str:
    return " ".join(c.value for c in app.caption if c.value.startswith("Changes applied"))


def test_panel_shows_both_outputs_and_follows_a_slider(at):
    assert metric(at, "spot: present", 0).value == metric(at, "spot: present", 1).value
    assert "Changes applied: none" in caption_text(at)
    at.slider(key="harness-p-brightness").set_value(-100).run()
    assert not at.exception
    assert "Brightness -100 levels" in caption_text(at)
    modified = [m for m in at.metric if m.label.startswith("spot:")][1]
    assert modified.label == "spot: no spot"  # too dark now; read without "_"
    assert any("prediction changed from **present** to **no spot**" in w.value for w in at.warning)
    table = next(m.value for m in at.markdown if m.value.startswith("| output | label |"))
    assert "| spot | present |" in table and ":orange[▼" in table and ":blue[▲" in table  # down and up, coloured
    at.button(key="harness-reset").click().run()
    assert at.slider(key="harness-p-brightness").value == 0
    assert "Changes applied: none" in caption_text(at)


def test_a_models_wording_names_outputs_and_labels(monkeypatch):
    """A card's [display] wording ("Resembles: PCOS-labelled frames", not "pcos: pcos") reaches
    every place the panel names an output or a label."""
    monkeypatch.setenv("WHATIF_WORDING", "1")
    app = AppTest.from_file(str(PAGE), default_timeout=60)
    app.run()
    app.slider(key="harness-p-brightness").set_value(-100).run()
    assert not app.exception
    assert [m.label for m in app.metric if m.label.startswith("Bright spot:")] == ["Bright spot: spot present",
                                                                                  "Bright spot: no spot"]
    assert any("**Bright spot**: the prediction changed from **spot present** to **no spot**" in w.value
               for w in app.warning)
    assert "| Bright spot | spot present |" in next(m.value for m in app.markdown if m.value.startswith("| output |"))
    assert app.metric[0].help.startswith("Share for the label shown")


def test_the_label_shown_is_decided_by_the_cards_threshold(monkeypatch):
    """PCOS at 40.1 % is "PCOS-labelled frames" on its page (threshold 35.1 %), and the what-if panel called it
    healthy (the most probable label) and a change of prediction at 46.9 %."""
    monkeypatch.setenv("WHATIF_THRESHOLD", "0.999")  # the harness image scores 99.7 % "present"
    app = AppTest.from_file(str(PAGE), default_timeout=60)
    app.run()
    assert not app.exception
    shown = [m for m in app.metric if m.label.startswith("spot:")]
    assert [m.label for m in shown] == ["spot: no spot", "spot: no spot"]
    assert shown[0].value == "0.3%" and "“present” is shown from 99.9% on" in shown[0].help


def test_a_new_image_starts_unedited(at):
    """Sliders set on one patient's image must not silently apply to the next image uploaded."""
    from core import synthetic
    from core.imageio import encode_png

    at.slider(key="harness-p-brightness").set_value(-100).run()
    assert "Brightness -100 levels" in caption_text(at)
    other = synthetic.bright_spot(False, 192, seed=4, side=40)[0]
    at.file_uploader(key="harness-upload").upload("next.png", encode_png(other), "image/png").run()
    assert not at.exception
    assert at.slider(key="harness-p-brightness").value == 0 and "Changes applied: none" in caption_text(at)


def test_every_perturbation_control_runs(at):
    for p in whatif.perturbations():
        if p.choices:
            at.selectbox(key=f"harness-p-{p.name}").set_value(p.choices[-1])
        else:
            at.slider(key=f"harness-p-{p.name}").set_value(p.lo if p.name == "jpeg" else p.hi)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = caption_text(at)
    for p in whatif.perturbations():
        assert p.label.split(" (")[0] in text


def test_ultrasound_controls_appear_only_for_ultrasound(monkeypatch):
    monkeypatch.setenv("WHATIF_ULTRASOUND", "1")
    app = AppTest.from_file(str(PAGE), default_timeout=60)
    app.run()
    keys = {s.key for s in app.slider}
    assert {"harness-p-speckle", "harness-p-gain"} <= keys
    app.slider(key="harness-p-speckle").set_value(0.5).run()
    assert "Speckle 0.5" in caption_text(app)


def test_heat_map_occlusion_and_sensitivity_tabs(at):
    assert len(at.get("image")) == 3  # original, modified and the heat map of the original
    at.toggle(key="harness-heat-follow").set_value(True).run()
    assert not at.exception
    assert len(at.get("image")) == 4  # and the heat map of the modified image
    at.session_state["harness-tabs"] = "Occlusion map"
    at.run()
    at.button(key="harness-occ-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("largest drop of 'present'" in m.label for m in at.metric)
    at.session_state["harness-tabs"] = "Sensitivity curve"
    at.run()
    at.selectbox(key="harness-sens-name").set_value("blur").run()
    at.button(key="harness-sens-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("plotly_chart")


def test_experiment_save_and_load_restores_settings(at):
    from core import synthetic

    at.session_state["harness-tabs"] = "Save / load"
    at.run()
    assert at.get("download_button")
    image = synthetic.bright_spot(True, 192, seed=3, side=40)[0]  # the harness's default image
    settings = {**whatif.DEFAULT_SETTINGS, "brightness": -50, "rotation": 90}
    data = whatif.save_experiment(whatif.Experiment(image, settings, meta={"model": "stand-in@1"}))
    at.file_uploader(key="harness-load").upload("exp.zip", data, "application/zip").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="harness-p-brightness").value == -50
    assert at.slider(key="harness-p-rotation").value == 90
    assert any("the edited image on screen is the saved one, exactly" in s.value for s in at.success)
    assert "Rotation +90°, Brightness -50 levels" in caption_text(at)


def test_a_loaded_experiments_painted_region_is_applied_and_its_message_goes_with_its_file(at):
    """The canvas redraws a loaded drawing but returns no pixels until drawn on: the paint was dropped while the page
    said the edited image was reproduced exactly."""
    from core import synthetic

    at.session_state["harness-tabs"] = "Save / load"
    at.run()
    image = synthetic.bright_spot(True, 192, seed=3, side=40)[0]
    mask = np.zeros(image.shape[:2], bool)
    mask[40:120, 40:120] = True
    settings = {**whatif.DEFAULT_SETTINGS, "mask_mode": "mean"}
    data = whatif.save_experiment(whatif.Experiment(image, settings, mask, meta={"model": "stand-in@1"}))
    at.file_uploader(key="harness-load").upload("exp.zip", data, "application/zip").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("the edited image on screen is the saved one, exactly" in s.value for s in at.success)
    assert "painted" in caption_text(at).lower()
    at.session_state["harness-hide"] = True  # a run without the panel (a bad upload) forgets the uploader's file
    at.run()
    at.session_state["harness-hide"] = False
    at.run()
    assert not any("Experiment loaded" in s.value for s in at.success)


def test_bad_experiment_upload_is_a_clear_message(at):
    at.session_state["harness-tabs"] = "Save / load"
    at.run()
    at.file_uploader(key="harness-load").upload("exp.zip", b"not a zip", "application/zip").run()
    assert not at.exception
    assert any("not a what-if experiment" in e.value for e in at.error)
    assert at.slider(key="harness-p-brightness").value == 0


def test_settings_survive_a_run_without_the_panel(at):
    """A bad upload in between (a run that does not draw the panel) reset every slider: Streamlit forgets a widget's
    value when a run does not draw it."""
    at.slider(key="harness-p-brightness").set_value(-50).run()
    at.session_state["harness-hide"] = True
    at.run()
    at.session_state["harness-hide"] = False
    at.run()
    assert not at.exception
    assert at.slider(key="harness-p-brightness").value == -50 and "Brightness -50 levels" in caption_text(at)


@pytest.mark.parametrize("settings, drawing, says", [
    ({"zoom": -5}, None, "out of range"),
    ({"brightness": "abc"}, None, "out of range or of the wrong kind"),
    ({"rotation": None}, None, "wrong kind"),
    ({}, [1, 2, 3], "not a canvas drawing"),
])
def test_a_tampered_experiment_is_refused_with_its_reason_and_the_message_stays(at, settings, drawing, says):
    """Out-of-range or wrongly typed settings were restored into the sliders and crashed the panel; the messages
    vanished at the panel's own rerun."""
    import io
    import json
    import zipfile

    from core import synthetic

    image = synthetic.bright_spot(True, 192, seed=3, side=40)[0]
    data = io.BytesIO(whatif.save_experiment(whatif.Experiment(image, dict(whatif.DEFAULT_SETTINGS))))
    out = io.BytesIO()
    with zipfile.ZipFile(data) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("settings.json", json.dumps({"settings": settings}))
        if drawing is not None:
            dst.writestr("drawing.json", json.dumps(drawing))
    at.session_state["harness-tabs"] = "Save / load"
    at.run()
    at.file_uploader(key="harness-load").upload("exp.zip", out.getvalue(), "application/zip").run()
    at.run()  # the panel's next run: the message is still there
    assert not at.exception, [e.value for e in at.exception]
    assert any(says in e.value for e in at.error), [e.value for e in at.error]
    assert at.slider(key="harness-p-brightness").value == 0


def test_an_experiment_image_of_too_many_pixels_is_refused_before_decoding():
    """A 30 kB PNG of 20000 x 20000 pixels inside an experiment took the server to 18 GB."""
    import io
    import zipfile

    import cv2
    import numpy as np

    ok, png = cv2.imencode(".png", np.zeros((7000, 7000), np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("settings.json", '{"settings": {}}')
        z.writestr("original.png", png.tobytes())
    with pytest.raises(whatif.ExperimentError, match="more than this tool accepts"):
        whatif.load_experiment(buf.getvalue())

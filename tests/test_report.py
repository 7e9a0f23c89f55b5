"""Reports: one page, PDF text holds the disclaimer, outputs, case code and the model's measured metrics."""
from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pytest
from pypdf import PdfReader

from core import DISCLAIMER, records, registry, report, synthetic
from core.explain import overlay
from core.imageio import encode_png, read_image
from core.results import Prediction
from tests.test_batch import CARD


@pytest.fixture
def card(tmp_path, monkeypatch):
    folder = tmp_path / "weights" / "tiny-cls"
    folder.mkdir(parents=True)
    (folder / "card.toml").write_text(CARD.format(id="tiny-cls", sha="c" * 64))
    monkeypatch.setattr(registry, "card", registry.Registry(tmp_path / "weights").card)
    return registry.card("tiny-cls")


def _prediction(with_overlay=True):
    img, _ = synthetic.embryo("blastocyst", size=200, seed=3)
    image = read_image(encode_png(img), name="embryo-3.png")
    pred = Prediction("tiny-cls", "0.1", image.name, image.sha256, {"quality": {"not_good": 0.27, "good": 0.73}},
                      thresholds={"quality": 0.5}, extras={"cells": 6})
    if with_overlay:
        heat = synthetic.embryo(size=50, seed=1)[0][:, :, 0] / 255.0
        pred.images["heat_map"] = overlay(img, heat)
    return pred, image


def _pdf_text(data: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), " ".join(" ".join(p.extract_text().split()) for p in reader.pages)


def test_pdf_report_of_a_prediction_is_one_page_with_disclaimer_outputs_and_metrics(card):
    pred, image = _prediction()
    rep = report.from_prediction(pred, image=image, case_code="IVF-042", whatif={"blur_sigma": 2.0},
                                 created=datetime(2026, 3, 4, 10, 30, tzinfo=timezone.utc))
    assert [c for c, _ in rep.images] == ["Input image", "Heat map"]
    pages, text = _pdf_text(rep.pdf())
    assert pages == 1
    for needle in (" ".join(DISCLAIMER.split()[:8]), "IVF-042", "2026-03-04", "quality", "good 73.0%", "not good 27.0%",
                   "tiny-cls v0.1", "generated/heldout", "accuracy 0.875", "ROC-AUC 0.912", "blur_sigma = 2.0",
                   "Looks at mean colour only", "embryo-3.png", "cells: 6"):
        assert needle in text, needle
    assert rep.filename.startswith("report-IVF-042-20260304")


def test_html_report_is_self_contained_and_escaped(card):
    pred, image = _prediction()
    page = report.from_prediction(pred, image=image, case_code="<b>x</b>").html()
    assert page.count("data:image/png;base64,") == 2 and "src='http" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert DISCLAIMER in page and "good 73.0%" in page and "accuracy 0.875" in page


def test_report_from_a_record_shows_the_kept_image_and_warns_when_the_model_changed(card, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    pred, image = _prediction(with_overlay=False)
    kept = records.record(pred, task="embryo", card=card, case_code="C-7", user="ann", image=encode_png(image.pixels),
                          input_size=image.size, url=url)
    changed = records.record(pred, task="embryo", card={"id": "tiny-cls", "version": "0.0", "sha256": "d" * 64}, url=url)
    rep = report.from_record(records.get(kept, url=url))
    assert rep.record_id == kept and rep.case_code == "C-7" and len(rep.images) == 1 and not rep.notes
    pages, text = _pdf_text(rep.pdf())
    assert pages == 1 and "C-7" in text and f"#{kept}" in text and "200×200 px" in text and "good 73.0%" in text
    assert "Revised" not in text
    old = report.from_record(records.get(changed, url=url))
    assert not old.images and "differs from the model that made this prediction" in old.notes[0]
    records.amend(kept, case_code="C-8", url=url)  # revised after a first report: the next one says when
    pages, text = _pdf_text(report.from_record(records.get(kept, url=url)).pdf())
    assert "Revised" in text and "C-8" in text
    records.dispose(url)


def test_report_without_an_installed_card_or_unicode_font_still_renders(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "card", registry.Registry(tmp_path / "none").card)
    monkeypatch.setattr(report, "FONT_DIR", tmp_path / "no-fonts")
    pred, image = _prediction()
    rep = report.from_prediction(pred, image=image, case_code="Ünïcode–code …")
    assert "not installed" in rep.notes[0] and not rep.metrics
    pages, text = _pdf_text(rep.pdf())
    assert pages == 1 and "Research demonstration only" in text and "Ünïcode-code ..." in text


def test_training_data_line_names_a_dataset_given_as_dataset_and_threshold_keeps_its_decimal(card):
    """The PCOS card names its data under `dataset` (not `name`): its report's training-data line left it out; and a
    35.1 % threshold on the page read "35%" in the report."""
    line = report._data_line([{"dataset": "PCOSGen (Auto-PCOS challenge 2024)", "licence": "CC BY 4.0"}])
    assert line.startswith("PCOSGen (Auto-PCOS challenge 2024), CC BY 4.0")
    pred, image = _prediction(with_overlay=False)
    pred.thresholds = {"quality": 0.351}
    assert report.from_prediction(pred, image=image).details["decision threshold for “good”"] == "35.1%"


def test_a_field_report_lists_every_head_and_names_its_figures():
    """The sperm field report had an empty result table, figures under raw keys ("pct normal classifier 40.000",
    "below lower limit who True") and no per-head table although the record holds the heads."""
    from core.tasks import sperm

    try:
        registry.card(sperm.SEG)
    except (KeyError, registry.CardError):
        pytest.skip("weights/sperm-seg is not installed")
    field, _ = synthetic.sperm_field(n_heads=6, size=(1024, 1280), seed=5, um_per_px=0.048)
    image = read_image(encode_png(field), name="field.png")
    pred = sperm.analyse_field(image, 0.048)
    page = report.from_prediction(pred, image=image).html()
    heads = pred.extras["heads"]
    assert "<h2>Heads</h2>" in page and page.count("<tr><td>") >= len(heads)
    assert "<th>normal forms, classifier</th>" in page and "pct_normal" not in page and "pct normal" not in page
    assert "<th>against the 4 % limit</th><td>not judged: under the 200 heads" in page  # 6 heads: once, not per share
    assert page.count("200 heads") == 1
    assert "<th>Output</th>" not in page  # no empty probability table for a field
    captions = [c for c, _ in report.from_prediction(pred, image=image).images]
    assert captions[0] == "Input image" and captions[1].startswith("Heads: green normal") and len(captions) == 2  # not
    # head 1's crop as if it stood for the field, and the page's legend
    n_pages, text = _pdf_text(report.from_prediction(pred, image=image).pdf())
    assert n_pages == 1 and "length (µm)" in text
    # the shares rest on the head classifier: its measured figures are printed beside the segmenter's, each named
    if pred.extras.get("head_model"):
        assert "Measured metrics of the models" in page and "sperm-head: mhsma/valid" in page
        assert "sperm-seg: sperm_parsing_v2/heldout" in page and "sperm-head: mhsma/valid" in text


def test_a_pcos_report_reads_as_resemblance_not_a_diagnosis():
    """The PCOS report said "pcos | pcos 67.4%", which reads like a diagnosis; the card's [display] table words it
    as what the model measures: "Resembles | PCOS-labelled frames"."""
    try:
        card = registry.card("pcos")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"weights/pcos is not installed: {exc}")
    image = read_image(encode_png(synthetic.embryo(size=120, seed=2)[0]), name="frame.png")
    pred = Prediction("pcos", card.version, image.name, image.sha256, {"pcos": {"healthy": 0.326, "pcos": 0.674}},
                      thresholds={"pcos": 0.35})
    rep = report.from_prediction(pred, image=image)
    assert rep.outputs == [("Resembles", "PCOS-labelled frames",
                            [("PCOS-labelled frames", 0.674), ("healthy-labelled frames", 0.326)])]
    assert rep.details["decision threshold for “PCOS-labelled frames”"] == "35.0%"
    _, text = _pdf_text(rep.pdf())
    assert "PCOS-labelled frames 67.4%" in text


def test_a_long_output_name_wraps_in_the_pdf_instead_of_running_into_its_answer():
    """The PDF's Result rows were fixed 38 mm cells: "Head shape (HuSHeM classes)" was printed over "tapered"
    (extracted as "…classes)tapered"), and "**" was never bold."""
    try:
        card = registry.card("sperm-head")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"weights/sperm-head is not installed: {exc}")
    pred = Prediction("sperm-head", card.version, "h.png", "ab" * 32,
                      {"normal": {"abnormal": 0.7, "normal": 0.3},
                       "shape": {"normal": 0.1, "tapered": 0.6, "pyriform": 0.2, "amorphous": 0.1}})
    _, text = _pdf_text(report.from_prediction(pred).pdf())
    assert "Head shape (HuSHeM classes) tapered tapered 60.0%" in text and "**" not in text


def test_a_pcos_report_gives_the_criteria_as_the_page_reads_them_and_sizes_as_shown(tmp_path):
    """The report had no criteria line (nor "not judged"), and diameters to 2 decimals where the page shows and
    counts 1: "1.96 … 2–9 mm: yes" could be printed."""
    from core import follicles as fol
    from core.tasks import pcos

    try:
        registry.card(pcos.MODEL_ID)
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"weights/pcos is not installed: {exc}")
    pixels, truth = synthetic.ovary(n_follicles=13, seed=2)
    image = read_image(encode_png(pixels), name="ovary.png")
    for scale, says in ((None, "not judged"), (truth["mm_per_px"], "reached already in this frame")):
        pred = pcos.predict_images(pcos.MODEL_ID, [image], mm_per_px=scale)[0]
        review = pcos.reviewed(pred, pixels, {r["id"] for r in pred.extras["follicles"]})
        rep = report.from_prediction(review, image=image)
        assert says in rep.details["follicle-number criteria (per ovary)"]
    unticked = pcos.reviewed(pred, pixels, {r["id"] for r in pred.extras["follicles"]} - {2})
    rep_unticked = report.from_prediction(unticked, image=image)
    assert rep_unticked.details["follicles unticked by the reviewer"] == "2"
    assert any(c.startswith("Follicles: green counted") for c, _ in rep_unticked.images)
    assert _pdf_text(rep_unticked.pdf())[0] == 1  # one page, legend and criteria included
    url = f"sqlite:///{tmp_path / 'r.db'}"  # from History: the follicles redrawn on the kept image, ticks and all
    kept = records.record(unticked, task="pcos", image=encode_png(pixels), input_size=image.size, url=url)
    from_history = report.from_record(records.get(kept, url=url))
    assert [c for c, _ in from_history.images][1].startswith("Follicles: green counted")
    assert np.array_equal(from_history.images[1][1], unticked.images["follicles"])
    records.dispose(url)
    first = rep.table[2][0][1]
    assert first == f"{review.extras['follicles'][0]['diameter_mm']:.1f}"
    assert fol.count_in_range([fol.Follicle.from_row(r) for r in review.extras["follicles"]]) >= 12


def test_a_sequence_report_lists_its_events():
    """The time-lapse report said "single-image report" and held no event at all."""
    pred = Prediction("timelapse-stage", "3.0", "AB028-6", probabilities={"stage": {"cleavage": 0.9, "morula": 0.1}},
                      extras={"n_frames": 40, "time_zero": "first frame",
                              "events": [{"event": "t2", "frame": 12, "frame_name": "RUN13.jpeg", "hours": 3.0,
                                          "seen": True, "trained": True},
                                         {"event": "t3", "frame": 20, "frame_name": "RUN21.jpeg", "hours": 5.0,
                                          "seen": False, "trained": True}]})
    rep = report.from_prediction(pred)
    assert rep.title.endswith("sequence report")
    title, header, rows = rep.table
    assert title.startswith("Events") and "decoded as its own phase" in header
    assert rows[1][:5] == ["t3", "20", "RUN21", "5.00", "no"]  # the acquisition number: a whole name wrapped 4 lines
    assert rep.details["time (h) counted from"] == "first frame"


def test_a_reviewed_sequence_report_gives_the_reviewers_frames_and_the_intervals():
    from core.tasks import timelapse as task

    events = [{"event": "t2", "frame": 12, "frame_name": "RUN13.jpeg", "seen": True, "trained": True},
              {"event": "t3", "frame": 20, "frame_name": "RUN21.jpeg", "seen": True, "trained": True}]
    pred = task.retimed(Prediction("timelapse-stage", "3.0", "AB028-6", extras={
        "n_frames": 40, "events": events, "acquisitions": np.arange(40), "burst_strength": np.zeros(40)}), 15.0)
    rep = report.from_prediction(task.reviewed(pred, {"t3": 22, "t8": 30}))
    title, header, rows = rep.table
    assert "reviewer's frame (from 0)" in header and rows[1][header.index("reviewer's time (h)")] == "5.50"
    assert rows[2][:4] == ["t8", "", "", ""]  # set by the reviewer alone: no draft frame ("None" before)
    assert rep.details["cc2 (t3 − t2)"] == "2.5 h, from reviewed and draft times"
    assert rep.details["events set by the reviewer"] == "t3, t8"
    assert rep.details["s2 (t4 − t3)"] == "not given: t4 not reached"
    pages, text = _pdf_text(rep.pdf())
    assert pages == 1 and "cc2 (t3 − t2): 2.5 h, from reviewed and draft times" in text

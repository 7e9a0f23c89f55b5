"""Batch scoring: folders and zips, corrupt files listed and skipped, batches, progress, CSV/Excel, records, CLI."""
from __future__ import annotations

import importlib.machinery
import io
import os
import warnings
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import batch, records, registry, synthetic
from core.imageio import encode_png
from core.results import Prediction
from tests.conftest import zip_of

ROOT = Path(__file__).resolve().parent.parent

CARD = """
id = "{id}"
title = "Tiny test classifier"
task = "embryo"
framework = "torch"
format = "torchscript"
file = "model.pt"
sha256 = "{sha}"
version = "0.1"
train_command = "made by tests/test_batch.py"
data = [{{ name = "generated", licence = "none", split = "none" }}]
intended_use = "Tests of batch scoring and reports only."
limitations = "Looks at mean colour only."
[classes]
quality = ["not_good", "good"]
[input]
size = [32, 32]
channels = 3
normalise = "unit"
[metrics."generated/heldout"]
accuracy = 0.875
roc_auc = 0.912
n = 40
"""


def make_tiny_weights(root: Path, model_id: str = "tiny-cls") -> Path:
    """A real TorchScript classifier (mean colour -> 2 classes) with its card in root/<model_id>/."""
    import torch

    folder = root / model_id
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2),
                              torch.nn.Softmax(dim=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still what the backend loads
        torch.jit.script(net).save(str(folder / "model.pt"))
    (folder / "card.toml").write_text(CARD.format(id=model_id, sha=registry.file_sha256(folder / "model.pt")))
    return root


def write_inputs(folder: Path, n_good: int, corrupt: tuple[str, ...] = ()) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_good):
        img, _ = synthetic.embryo("cleavage" if i % 2 else "blastocyst", size=48 + i % 5 * 8, seed=i)
        p = folder / (f"img{i:03d}.png" if i % 3 else f"img{i:03d}.jpg")
        if p.suffix == ".png":
            p.write_bytes(encode_png(img))
        else:
            from PIL import Image
            Image.fromarray(img).save(p, quality=90)
        paths.append(p)
    for name in corrupt:
        p = folder / name
        if name.startswith("text"):
            p.write_text("this is not an image")
        elif name.startswith("empty"):
            p.write_bytes(b"")
        else:  # a truncated PNG
            p.write_bytes(encode_png(synthetic.embryo(size=64, seed=99)[0])[:120])
        paths.append(p)
    return paths


@pytest.fixture
def stub(tmp_path, monkeypatch):
    """A card in a temp weights folder and a stand-in task module; the database is a temp SQLite file."""
    (tmp_path / "weights" / "tiny-stub").mkdir(parents=True)  # the card only: the stand-in loads no weights
    (tmp_path / "weights" / "tiny-stub" / "card.toml").write_text(CARD.format(id="tiny-stub", sha="0" * 64))
    monkeypatch.setattr(registry, "card", registry.Registry(tmp_path / "weights").card)
    calls: list[int] = []

    def predict_images(model_id, images, device=None):
        calls.append(len(images))
        out = []
        for im in images:
            if im.name.endswith("poison.png"):
                raise RuntimeError("this image breaks the model")
            p = float(im.pixels.mean() / 255)
            out.append(Prediction(model_id, "0.1", im.name, im.sha256,
                                  {"quality": {"not_good": 1 - p, "good": p}}, extras={"mean": round(p, 4)}))
        return out

    module = types.ModuleType("core.tasks.stubtask")
    module.__spec__ = importlib.machinery.ModuleSpec("core.tasks.stubtask", None)
    module.predict_images = predict_images
    monkeypatch.setitem(sys.modules, "core.tasks.stubtask", module)
    from core import tasks
    monkeypatch.setitem(tasks.TASK_OF_MODEL, "tiny-stub", "stubtask")
    url = f"sqlite:///{tmp_path / 'records.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    yield types.SimpleNamespace(calls=calls, url=url, id="tiny-stub")
    records.dispose(url)


def test_fifty_images_three_corrupt_give_47_results_and_3_listed_errors(stub, tmp_path):
    inputs = tmp_path / "inputs"
    write_inputs(inputs / "plate1", 37, corrupt=("text.png", "truncated.png"))
    zdir = tmp_path / "z"
    write_inputs(zdir, 10, corrupt=("empty.png",))
    (inputs / "notes.txt").write_text("not an image, not listed")
    with zipfile.ZipFile(inputs / "more.zip", "w") as z:
        for p in sorted(zdir.iterdir()):
            z.write(p, f"more/{p.name}")
    out = tmp_path / "results.csv"
    logs: list[str] = []
    assert batch.predict_paths("tiny-stub", [inputs], out=str(out), log=logs.append) == 0
    table = pd.read_csv(out)
    assert len(table) == 50
    scored, skipped = table[table["error"].isna()], table[table["error"].notna()]
    assert len(scored) == 47 and len(skipped) == 3
    assert set(skipped["file"]) == {"inputs/plate1/text.png", "inputs/plate1/truncated.png", "inputs/more.zip/more/empty.png"}
    assert skipped.set_index("file").loc["inputs/plate1/text.png", "error"].startswith("not a readable image")
    assert "truncated" in skipped.set_index("file").loc["inputs/plate1/truncated.png", "error"]
    assert set(scored["quality"]) <= {"good", "not_good"} and scored["p_quality_good"].between(0, 1).all()
    assert max(stub.calls) <= 8 and sum(stub.calls) == 47  # in batches, each image once
    assert any("skipped inputs/plate1/text.png" in line for line in logs)
    assert any("47 scored, 3 skipped" in line for line in logs)
    rows = records.query(limit=None)
    assert len(rows) == 47 and {r.source for r in rows} == {"cli"} and {r.task for r in rows} == {"embryo"}
    assert set(scored["record"].astype(int)) == {r.id for r in rows}
    assert all(r.input_bytes > 0 and r.input_width >= 48 and not r.has_image for r in rows)


def test_progress_case_code_kept_images_and_one_bad_image_in_a_batch(stub, tmp_path):
    paths = write_inputs(tmp_path / "in", 11)
    (tmp_path / "in" / "poison.png").write_bytes(encode_png(synthetic.embryo(size=40)[0]))
    sources, errors = batch.expand([tmp_path / "in"])
    assert not errors and len(sources) == 12
    steps = list(batch.run("tiny-stub", sources, batch_size=5, case_code="IVF-9", user="ann", keep_images=True,
                           thumbnails=True))
    assert [s.done for s in steps] == [5, 10, 12] and all(s.total == 12 for s in steps)
    assert steps[-1].eta_s == 0 and steps[0].images_per_s > 0 and "images/s" in steps[0].line()
    assert steps[-1].scored == 11 and steps[-1].scored_per_s < steps[-1].images_per_s  # the poisoned one is not scored
    items = [i for s in steps for i in s.items]
    bad = [i for i in items if not i.ok]
    assert [i.name for i in bad] == ["in/poison.png"] and "breaks the model" in bad[0].error
    assert all(i.thumbnail[:2] == b"\xff\xd8" for i in items if i.ok)
    kept = records.get(items[0].record_id)
    assert kept.case_code == "IVF-9" and kept.username == "ann" and kept.image[:4] == b"\x89PNG"
    assert len(paths) == 11


def test_uploads_with_a_zip_and_a_broken_zip_and_excel_export(stub):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/one.png", encode_png(synthetic.embryo(size=40, seed=1)[0]))
        z.writestr("__MACOSX/a/._one.png", b"junk")
        z.writestr("readme.txt", b"hello")
    sources, errors = batch.uploads([("cases.zip", buf.getvalue()), ("broken.zip", b"PK\x03\x04 nope"),
                                     ("two.png", encode_png(synthetic.embryo(size=40, seed=2)[0]))])
    assert [s.name for s in sources] == ["cases.zip/a/one.png", "two.png"]
    assert [e.name for e in errors] == ["cases.zip/readme.txt", "broken.zip"]  # a zip's other files are listed
    assert errors[0].error.startswith("not an image file") and "zip" in errors[1].error
    assert batch.uploads([("notes.zip", zip_of({"readme.txt": b"hello"}))])[1][-1].error == \
        "the zip holds no image files"
    items = errors + [i for s in batch.run("tiny-stub", sources, record=False) for i in s.items]
    book = pd.read_excel(io.BytesIO(batch.to_excel(items)), sheet_name=None)
    assert list(book) == ["results", "skipped"]
    assert list(book["results"]["file"]) == ["cases.zip/a/one.png", "two.png"]
    assert list(book["skipped"]["file"]) == ["cases.zip/readme.txt", "broken.zip"]
    assert records.count() == 0  # record=False stores nothing
    table = pd.read_csv(io.BytesIO(batch.to_csv(items, "IVF-9")), dtype=str)
    assert set(table["case_code"].dropna()) == {"IVF-9"}
    scored = table[table["error"].isna()]
    assert scored["input_sha256"].str.len().eq(64).all()
    assert scored["model_sha256"].eq(registry.card("tiny-stub").sha256).all()


def test_cli_scores_with_a_plain_classifier_and_refuses_an_unknown_model(tmp_path):
    weights = make_tiny_weights(tmp_path / "weights")
    write_inputs(tmp_path / "in", 4, corrupt=("text.png",))
    env = {**os.environ, "REPRO_WEIGHTS_DIR": str(weights), "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out.xlsx"
    done = subprocess.run([sys.executable, "-m", "core", "predict", "tiny-cls", str(tmp_path / "in"), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = pd.read_excel(out, sheet_name="results")
    assert len(results) == 4 and np.allclose(results["p_quality_good"] + results["p_quality_not_good"], 1, atol=1e-3)
    assert "4 scored, 1 skipped" in done.stderr
    records_url = env["DATABASE_URL"]
    assert records.count(records_url) == 4
    records.dispose(records_url)
    bad = subprocess.run([sys.executable, "-m", "core", "predict", "tiny-clx", str(tmp_path / "in")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "tiny-cls" in bad.stderr  # names the close match
    # to stdout: the CSV alone (log lines and library warnings go to stderr)
    speaking = ("import sys, core.batch as b; expand = b.expand; "  # a library printing during the run
                "b.expand = lambda paths: (print('a library speaks'), expand(paths))[1]; "
                "from core.__main__ import main; sys.exit(main(sys.argv[1:]))")
    to_stdout = subprocess.run([sys.executable, "-c", speaking, "predict", "tiny-cls", str(tmp_path / "in")],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert "a library speaks" in to_stdout.stderr and to_stdout.stdout.startswith("file,")
    assert len(pd.read_csv(io.StringIO(to_stdout.stdout))) == 5  # 4 scored, text.png with its reason
    # a bad --out is said before any scoring, by name
    for out, says in ((tmp_path / "no-such" / "x.csv", "no such folder for --out"), (tmp_path / "x.txt", ".csv or .xlsx")):
        refused = subprocess.run([sys.executable, "-m", "core", "predict", "tiny-cls", str(tmp_path / "in"), "--out",
                                  str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and says in refused.stderr and "scored" not in refused.stderr


def test_batch_page_scores_a_folder_and_lists_the_skipped_files(stub, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(registry, "cards", registry.Registry(tmp_path / "weights").cards)
    write_inputs(tmp_path / "plate", 6, corrupt=("text.png",))
    at = AppTest.from_file(str(ROOT / "app_pages" / "batch.py"), default_timeout=60)
    at.session_state["case_code"] = "PLATE-7"
    at.run()
    assert not at.exception
    assert at.selectbox[0].value == "tiny-stub"
    at.radio(key="batch_images").set_value("Folder or zip on this machine").run()
    at.text_input[0].input(str(tmp_path / "plate")).run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "**6** scored, **1** skipped" in text
    results, skipped = at.dataframe[0].value, at.dataframe[1].value
    assert len(results) == 6 and results["image"].str.startswith("data:image/jpeg;base64,").all()
    assert list(skipped["file"]) == ["plate/text.png"] and "not a readable image" in skipped["reason"][0]
    assert {b.label for b in at.get("download_button")} == {"Download CSV", "Download Excel"}
    assert {r.case_code for r in records.query()} == {"PLATE-7"} and records.count() == 6
    at.run()  # a rerun (any click) keeps the results and records nothing twice
    assert len(at.dataframe[0].value) == 6 and records.count() == 6

    # a click during a run restarts the page mid-loop (Streamlit stops the script, no Exception): the images scored
    # so far stay on screen, said to be a part
    real_run = batch.run

    def interrupted(*args, **kwargs):
        import streamlit as st

        for n, progress in enumerate(real_run(*args, **kwargs, batch_size=2)):
            yield progress
            if n == 0:
                st.stop()

    monkeypatch.setattr(batch, "run", interrupted)
    at.button[0].click().run()
    at.run()
    assert not at.exception
    shown = [w.value for w in at.warning if "interrupted" in w.value]
    assert shown and "after 2 of 7 images" in shown[0] and len(at.dataframe[0].value) == 2  # 6 images and text.png
    assert records.count() == 6 + 2
    monkeypatch.setattr(batch, "run", real_run)
    # the rest, not the whole set again (Score would save the first two twice)
    resume = next(b for b in at.button if b.label.startswith("Score the remaining"))
    assert resume.label == "Score the remaining 5 images"
    resume.click().run()
    assert not at.exception and not [w for w in at.warning if "interrupted" in w.value]
    assert "**6** scored, **1** skipped" in " ".join(m.value for m in at.markdown) and records.count() == 6 + 6

    def stopped_after_the_last_group(*args, **kwargs):  # a click during the last group: nothing is left to score
        import streamlit as st

        yield from real_run(*args, **kwargs)
        st.stop()

    monkeypatch.setattr(batch, "run", stopped_after_the_last_group)
    at.button[0].click().run()
    assert not at.exception and not [w for w in at.warning if "interrupted" in w.value]
    monkeypatch.setattr(batch, "run", real_run)

    at.text_input[0].input(str(tmp_path / "no-such-plate")).run()
    at.button[0].click().run()  # a new run that finds nothing must not leave the old results on screen
    assert not at.exception and any("No images found" in e.value for e in at.error)
    assert not at.dataframe and "**6** scored" not in " ".join(m.value for m in at.markdown)


@pytest.mark.parametrize("model_id", ["pcos", "sperm-head", "timelapse-stage"])
def test_batch_refuses_an_image_the_page_refuses(model_id, tmp_path):
    """Batch and predict scored a 1 × 1 image ("healthy 20 %", "abnormal 98.5 %", "cleavage") that the pages refuse."""
    try:
        registry.load(model_id, "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"{model_id} is not installed: {exc}")
    (tmp_path / "dot.png").write_bytes(encode_png(np.full((1, 1, 3), 90, np.uint8)))
    sources, _ = batch.expand([tmp_path / "dot.png"])
    (item,) = [i for progress in batch.run(model_id, sources, record=False) for i in progress.items]
    assert not item.ok and "too small" in item.error
    assert "ValueError" not in item.error and "dot.png" not in item.error  # said as the page says it, once


def test_an_unreadable_path_is_listed_not_raised():
    if not Path("/proc/self/mem").exists():
        pytest.skip("no /proc on this system")
    sources, errors = batch.expand(["/proc/self/mem"])
    assert not sources and "cannot be read here" in errors[0].error


def test_downloads_never_hold_a_formula_and_give_intervals_and_warnings(tmp_path):
    """An upload named '=HYPERLINK(…).jpg' became a live formula cell in the Excel download; the batch CSV had no
    95 % intervals, which History's CSV has."""
    import openpyxl

    from core.batch import Item, to_csv, to_excel

    name = '=HYPERLINK("http://evil.example","open").jpg'
    pred = Prediction("sperm-seg", "2", name, "ab" * 32, extras={"ci95_normal_classifier": [12.5, 40.0], "n_heads": 7,
                                                                 "warnings": ["default calibration"]})
    items = [Item(name, prediction=pred), Item("-1+2.png", error="not a readable image"), Item("copy.png", prediction=Prediction("sperm-seg", "2", "copy.png", "ab" * 32))]
    table = pd.read_csv(io.BytesIO(to_csv(items)))
    assert table["same_image_as"].fillna("").tolist()[:2] == ["", "'" + name]  # the same bytes twice: said, not hidden
    assert table["file"].tolist() == ["'" + name, "copy.png", "'-1+2.png"]
    assert table.loc[0, "ci95_normal_classifier_low"] == 12.5 and table.loc[0, "ci95_normal_classifier_high"] == 40
    assert table.loc[0, "warnings"] == "default calibration" and table.loc[0, "n_heads"] == 7
    book = openpyxl.load_workbook(io.BytesIO(to_excel(items)))
    cells = [c for sheet in book for row in sheet.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert book["results"]["A2"].value == "'" + name


def test_utf8_names_in_a_zip_without_the_utf8_flag_read_as_written():
    """`zip` on Linux stores 'Müller Anna 2.JPG' in UTF-8 without the flag: it was listed as 'M├╝ller Anna 2.JPG'."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Müller Anna 2.png", encode_png(np.full((40, 40, 3), 90, np.uint8)))
    # Python's writer sets the UTF-8 flag (after "version needed" 20): clear it, as Info-ZIP leaves it
    raw = buf.getvalue().replace(b"\x14\x00\x00\x08", b"\x14\x00\x00\x00")
    assert zipfile.ZipFile(io.BytesIO(raw)).namelist() == ["M├╝ller Anna 2.png"]
    sources, errors = batch.uploads([("plate.zip", raw)])
    assert [s.name for s in sources] == ["plate.zip/Müller Anna 2.png"] and not errors
    assert sources[0].read({}).size == (40, 40)


def test_batch_says_when_the_model_trained_on_an_image(tmp_path):
    """The embryo page said a Hung Vuong training photo was no test of the model; Batch and predict gave the same
    answer with no warning, so History marked one record ⚠ and not the other."""
    from core import audit

    try:
        card = registry.card("pcos")
    except (KeyError, registry.CardError):
        pytest.skip("weights/pcos is not installed")
    train = audit.read_train_hashes(card.folder)
    seen = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcos" / "pcosgen"
    if train.empty or not seen.is_dir():
        pytest.skip("no training hashes or no PCOSGen here")
    path = seen / str(train["item"].iloc[0])  # e.g. images/100image13.jpg
    (progress,) = batch.run("pcos", [batch.Source(path.name, path=path)], record=False)
    (scored,) = progress.items
    assert any("was trained on this image" in w for w in scored.prediction.extras["warnings"])
    assert "was trained on this image" in batch.results_frame([scored])["warnings"].iloc[0]


def test_a_browser_that_may_not_read_server_files_is_not_offered_them(stub, tmp_path, monkeypatch):
    """The Batch intro invited a remote browser to 'give a folder on the machine running this app' it could not."""
    from streamlit.testing.v1 import AppTest

    import ui.records

    monkeypatch.setattr(registry, "cards", registry.Registry(tmp_path / "weights").cards)
    monkeypatch.setattr(ui.records, "may_read_server_files", lambda user: False)
    at = AppTest.from_file(str(ROOT / "app_pages" / "batch.py"), default_timeout=60).run()
    assert not at.exception
    assert at.radio(key="batch_images").options == ["Upload files"]
    assert "folder" not in at.markdown[0].value

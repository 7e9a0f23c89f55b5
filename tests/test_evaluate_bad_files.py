"""`python -m core evaluate` on a dataset with a corrupt and an empty image among good ones: every native evaluator
scores the good ones, lists the two bad files in meta.json and on stderr, and still prints one JSON object; an
unforeseen failure is one plain line on stderr; zips and class folders a native reader does not know are evaluated."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
import pytest

from core import PROJECT_ROOT, registry, synthetic

NAME = "pytest-bad-files"
CORRUPT, EMPTY = b"\xff\xd8\xff\xe0 not the rest of a JPEG", b""


def spoil(*paths: Path) -> list[str]:
    """A corrupt file, then an empty one; their names, as the evaluation must list them."""
    for path, data in zip(paths, (CORRUPT, EMPTY)):
        path.write_bytes(data)
    return [p.name for p in paths]


def embryo_folders(root: Path) -> tuple[Path, list[str]]:
    for k, stage in enumerate(("cleavage", "blastocyst")):
        (root / stage).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / stage / f"{i}.png"), synthetic.embryo(stage, size=160, seed=10 * k + i)[0])
    return root, spoil(root / "cleavage" / "broken.jpg", root / "blastocyst" / "empty.png")


def sperm_head_folders(root: Path) -> tuple[Path, list[str]]:
    for k, (folder, kind) in enumerate((("01_Normal", "normal"), ("02_Tapered", "tapered"))):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / folder / f"{i}.png"), synthetic.sperm_head(kind, seed=10 * k + i)[0])
    return root, spoil(root / "01_Normal" / "broken.jpg", root / "02_Tapered" / "empty.bmp")


def sperm_fields(root: Path) -> tuple[Path, list[str]]:
    from tests.test_sperm import tiny_parsing

    tiny_parsing(root)
    coco = json.loads((root / "annotations" / "train.json").read_text())  # a third field: a copy of the second
    shutil.copy(root / "train_img" / "000002.jpg", root / "train_img" / "000003.jpg")
    coco["images"].append({**coco["images"][1], "id": 3, "file_name": "000003.jpg"})
    coco["annotations"].append({**coco["annotations"][-1], "id": 99, "image_id": 3, "parsing": "000003-1.png"})
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    # the first field unreadable; the third's part map missing: its truth is unknown, so it is not scored either
    return root, spoil(root / "train_img" / "000001.jpg") + ["000003-1.png"]


def pcos_folders(root: Path) -> tuple[Path, list[str]]:
    from tests.test_pcos import write_folder_layout

    write_folder_layout(root, n=2)
    return root, spoil(root / "healthy" / "broken.jpg", root / "pcos" / "empty.png")


def gomez_sequence(root: Path) -> tuple[Path, list[str]]:
    from tests.test_timelapse import gomez_layout

    frames_dir = gomez_layout(root, "tPNa,1,4\nt2,5,8\n", n_frames=8, size=96)
    return root, spoil(frames_dir / "D2020_WELL1_RUN3.jpeg", frames_dir / "D2020_WELL1_RUN6.jpeg")


def yolo_dishes(root: Path) -> tuple[Path, list[str]]:
    """The common split layout: images/val/ with labels/val/ beside it."""
    images, labels = root / "images" / "val", root / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(2):
        img, truth = synthetic.embryo_dish(n_embryos=4, size=320, seed=i)
        cv2.imwrite(str(images / f"dish{i}.png"), img)
        (labels / f"dish{i}.txt").write_text("".join(
            f"0 {(x0 + x1) / 640} {(y0 + y1) / 640} {(x1 - x0) / 320} {(y1 - y0) / 320}\n"
            for x0, y0, x1, y1 in truth["boxes"]))
    (labels / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return root, spoil(images / "broken.jpg")


CASES = {  # model: (dataset builder, images the evaluation must still score)
    "embryo-grade": (embryo_folders, 4),
    "sperm-head": (sperm_head_folders, 4),
    "sperm-seg": (sperm_fields, 1),
    "pcos": (pcos_folders, 4),
    "timelapse-stage": (gomez_sequence, 6),
    "embryo-dish": (yolo_dishes, 2),
}


@pytest.mark.parametrize("nested", [False, True], ids=["as-given", "unpacked-one-level-down"])
@pytest.mark.parametrize("model_id", list(CASES))
def test_bad_files_are_skipped_listed_and_the_rest_scored(model_id, nested, tmp_path):
    """Nested: a download unpacked into its own folder (the Sperm Parsing, PCOSGen and YOLO sets were refused)."""
    try:
        card = registry.card(model_id)
        registry.load(model_id, "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"{model_id} is not installed: {exc}")
    build, n_scored = CASES[model_id]
    root, bad = build(tmp_path / "data" / "download" if nested else tmp_path / "data")
    root = tmp_path / "data" if nested else root
    try:
        # a real process: stdout must hold the JSON object alone (Ultralytics logs to sys.stdout)
        run = subprocess.run([sys.executable, "-m", "core", "evaluate", model_id, str(root), "--name", NAME, "--json"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        out, err = run.stdout, run.stderr
        assert run.returncode == 0, err[-2000:]
        result = json.loads(out)
        assert result["model"] == model_id and result["n"] == n_scored
        skipped = json.loads((card.folder / "eval" / NAME / "meta.json").read_text())["skipped"]
        assert len(skipped) == len(bad) and all(any(name in s for s in skipped) for name in bad), skipped
        assert f"skipped {len(bad)} unreadable image" in err
        if model_id == "embryo-dish":  # each image's boxes counted from its own label file
            assert result["metrics"]["embryos"]["n_boxes"] == 8
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)


def test_an_unforeseen_failure_is_one_plain_line_and_the_traceback_is_on_request(tmp_path, monkeypatch, capfd):
    import core.tasks
    from core.__main__ import main

    class Failing:
        @staticmethod
        def evaluate(*args, **kwargs):
            raise RuntimeError("the decoder gave up")

    monkeypatch.setattr(core.tasks, "task_module", lambda model_id: Failing)
    assert main(["evaluate", "pcos", str(tmp_path), "--json"]) == 1
    out, err = capfd.readouterr()
    assert out == "" and "error: RuntimeError: the decoder gave up" in err and "Traceback" not in err
    monkeypatch.setenv("CORE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["evaluate", "pcos", str(tmp_path)])


def test_a_zipped_class_folder_set_is_evaluated_like_the_folder(tmp_path):
    import zipfile

    card = registry.card("embryo-grade")
    try:
        registry.load("embryo-grade", "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"embryo-grade is not installed: {exc}")
    root, bad = embryo_folders(tmp_path / "set")
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as z:
        for p in root.rglob("*"):
            z.write(p, p.relative_to(tmp_path))
    try:
        run = subprocess.run([sys.executable, "-m", "core", "evaluate", "embryo-grade", str(tmp_path / "set.zip"),
                              "--name", NAME, "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout)
        assert result["n"] == 4 and result["metrics"]["stage"]["n_per_class"] == {"cleavage": 2, "blastocyst": 2}
        skipped = json.loads((card.folder / "eval" / NAME / "meta.json").read_text())["skipped"]
        assert sorted(s.split(":")[0].split("/")[-1] for s in skipped) == sorted(bad)
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)



def test_class_folders_the_native_reader_does_not_know_are_scored_image_by_image(tmp_path, capfd):
    """timelapse-stage's own reader wants a Gomez layout; stage folders of single frames are read as the Metrics
    page reads a labelled set."""
    from core.__main__ import main

    card = registry.card("timelapse-stage")
    try:
        registry.load("timelapse-stage", "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"timelapse-stage is not installed: {exc}")
    frames, _ = synthetic.timelapse_sequence(6, size=96)
    for stage, picked in (("cleavage", frames[:3]), ("blastocyst", frames[3:])):
        (tmp_path / "set" / stage).mkdir(parents=True)
        for i, f in enumerate(picked):  # blastocysts named as Gomez crops: read as crops, cleavage/ was dropped
            name = f"f{i}.png" if stage == "cleavage" else f"E2_EH309-8_phase_split_{i}.jpeg"
            cv2.imwrite(str(tmp_path / "set" / stage / name), f)
    try:
        assert main(["evaluate", "timelapse-stage", str(tmp_path / "set"), "--name", NAME, "--json"]) == 0
        result = json.loads(capfd.readouterr().out)
        assert result["n"] == 6 and result["metrics"]["stage"]["n_per_class"]["cleavage"] == 3
        assert main(["evaluate", "timelapse-stage", str(tmp_path / "set"), "--split", "heldout"]) == 2  # no splits
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)


def test_json_output_is_strict_json_and_train_names_a_missing_folder(tmp_path, capsys):
    """`evaluate sperm-seg … --json` on fields without annotated heads printed "mask_map50": NaN, which strict JSON
    parsers reject; `train timelapse-stage --data <missing>` said only "error: 2"."""
    import json

    import numpy as np

    from core.__main__ import main, strict_json

    assert strict_json({"a": float("nan"), "b": [np.float32(np.inf), 1.5], "c": np.int64(3)}) == \
        {"a": None, "b": [None, 1.5], "c": 3}
    json.loads(json.dumps(strict_json({"x": float("nan")}), allow_nan=False))
    assert main(["train", "timelapse-stage", "--data", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_a_dish_set_evaluated_on_one_of_its_splits_scores_that_split_only(tmp_path, capfd):
    """`evaluate embryo-dish SET --split val` ignored the flag without a word and scored images/train/ too."""
    from core.__main__ import main

    try:
        card = registry.card("embryo-dish")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"embryo-dish is not installed: {exc}")
    root, _ = yolo_dishes(tmp_path / "data")
    (root / "images" / "val" / "broken.jpg").unlink()
    shutil.copytree(root / "images" / "val", root / "images" / "train")
    shutil.copytree(root / "labels" / "val", root / "labels" / "train")
    (root / "images" / "train" / "dish0.png").rename(root / "images" / "train" / "dish9.png")
    try:
        assert main(["evaluate", "embryo-dish", str(root), "--split", "val", "--name", NAME, "--json"]) == 0
        out = capfd.readouterr().out.strip().splitlines()[-1]  # in-process, Ultralytics' own log lines come first
        assert json.loads(out)["metrics"]["embryos"]["n_images"] == 2
        assert main(["evaluate", "embryo-dish", str(root), "--split", "test", "--name", NAME]) == 2
        assert "no split 'test'; found train, val" in capfd.readouterr().err
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)


def test_a_roboflow_export_is_read_and_the_users_folder_is_left_as_it_was(tmp_path):
    """A Roboflow YOLO export (data.yaml with '../valid/images', valid/images + valid/labels) was refused as "not a
    YOLO detection layout"; and Ultralytics' labels cache was left in the user's set after every evaluation."""
    from core import dish

    try:
        card = registry.card("embryo-dish")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"embryo-dish is not installed: {exc}")
    built, _ = yolo_dishes(tmp_path / "built")
    root = tmp_path / "export"
    for part in ("images", "labels"):
        shutil.copytree(built / part / "val", root / "valid" / part)
    (root / "valid" / "images" / "broken.jpg").unlink()
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['embryo']\n")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert dish.yolo_layout(root) == root / "valid" / "images"
    with pytest.raises(ValueError, match="no split 'test'"):
        dish.yolo_layout(root, "test")
    try:
        result = dish.evaluate_dish(root, NAME, device="cpu")
        assert result["metrics"]["embryos"]["n_images"] == 2
        assert json.loads((card.folder / "eval" / NAME / "meta.json").read_text())["split"] == "valid"
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_zipped_native_layout_is_read_by_its_own_evaluator(tmp_path):
    """A zipped HuSHeM set went to the generic labelled reader first: shape only, no normal/abnormal output."""
    try:
        card = registry.card("sperm-head")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"sperm-head is not installed: {exc}")
    root, _ = sperm_head_folders(tmp_path / "HuSHeM")
    for bad in ("01_Normal/broken.jpg", "02_Tapered/empty.bmp"):
        (root / bad).unlink()
    archive = shutil.make_archive(str(tmp_path / "hushem"), "zip", tmp_path, "HuSHeM")
    run = subprocess.run([sys.executable, "-m", "core", "evaluate", "sperm-head", archive, "--name", NAME, "--json"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    try:
        assert run.returncode == 0, run.stderr[-2000:]
        assert set(json.loads(run.stdout)["metrics"]) == {"normal", "shape"}
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)


@pytest.mark.parametrize("model_id", ["embryo-grade", "pcos"])
def test_table_rows_naming_absent_files_are_listed_not_dropped_silently(model_id, tmp_path):
    """A Hung Vuong or PCOSGen table row whose image is not in the folder was left out without a word: n fell short
    of the table and nothing said why."""
    import pandas as pd

    from core.tasks import task_module

    try:
        registry.load(model_id, "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"{model_id} is not installed: {exc}")
    root = tmp_path / "set"
    if model_id == "embryo-grade":
        (root / "train").mkdir(parents=True)
        cv2.imwrite(str(root / "train" / "D3_001.png"), synthetic.embryo("cleavage", size=160, seed=1)[0])
        pd.DataFrame({"Image": ["D3_001.png", "D3_404.png"], "Class": [1, 0]}).to_csv(root / "train.csv", index=False)
    else:
        (root / "images").mkdir(parents=True)
        cv2.imwrite(str(root / "images" / "a.jpg"), synthetic.ovary(seed=1)[0])
        pd.DataFrame({"imagePath": ["a.jpg", "gone.jpg"], "Healthy": [0, 1]}).to_csv(root / "class_label.csv",
                                                                                   index=False)
    card = registry.card(model_id)
    try:
        result = task_module(model_id).evaluate(model_id, root, name=NAME, split=None, device="cpu")
        assert result["n"] == 1
        skipped = json.loads((card.folder / "eval" / NAME / "meta.json").read_text())["skipped"]
        assert any(("D3_404.png" if model_id == "embryo-grade" else "gone.jpg") in s and "not in" in s
                   for s in skipped), skipped
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)


def test_a_folder_holding_two_head_sets_pools_them_and_a_split_names_the_arrays(tmp_path, capfd):
    """`evaluate sperm-head` on a folder holding hushem/ and mhsma/ scored HuSHeM alone, without a word."""
    import numpy as np

    from core.__main__ import main

    try:
        card = registry.card("sperm-head")
        registry.load("sperm-head", "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"sperm-head is not installed: {exc}")
    sperm_head_folders(tmp_path / "hushem")
    heads = [cv2.cvtColor(synthetic.sperm_head(kind, seed=30 + i)[0], cv2.COLOR_BGR2GRAY)
             for i, kind in enumerate(("normal", "tapered", "normal"))]
    (tmp_path / "mhsma").mkdir()
    np.save(tmp_path / "mhsma" / "x_64_valid.npy", np.stack([cv2.resize(h, (64, 64)) for h in heads]))
    np.save(tmp_path / "mhsma" / "y_head_valid.npy", np.array([0, 1, 0], np.uint8))  # MHSMA: 0 is normal
    try:
        assert main(["evaluate", "sperm-head", str(tmp_path), "--name", NAME, "--json"]) == 0
        result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
        assert result["metrics"]["normal"]["n"] == 4 + 3 and result["metrics"]["shape"]["n"] == 4
        items = set(pd.read_csv(card.folder / "eval" / NAME / "predictions.csv")["item"])
        assert "hushem/01_Normal/0.png" in items and "mhsma/valid/2" in items
        assert main(["evaluate", "sperm-head", str(tmp_path), "--split", "valid", "--name", NAME, "--json"]) == 0
        assert json.loads(capfd.readouterr().out.strip().splitlines()[-1])["n"] == 3
        assert main(["evaluate", "sperm-head", str(tmp_path), "--split", "test", "--name", NAME]) == 2
        assert "no MHSMA split 'test'; found valid" in capfd.readouterr().err
    finally:
        shutil.rmtree(card.folder / "eval" / NAME, ignore_errors=True)


def test_an_outside_set_never_replaces_the_evaluation_the_card_cites(tmp_path, capfd):
    """An evaluator's own Gomez folder, named as the shared one and evaluated without --name, overwrote
    eval/gomez2022, the evidence behind the card's figures."""
    from core.__main__ import main

    try:
        card = registry.card("timelapse-stage")
        registry.load("timelapse-stage", "cpu")
    except (KeyError, registry.CardError) as exc:
        pytest.skip(f"timelapse-stage is not installed: {exc}")
    cited = card.folder / "eval" / "gomez2022"
    if not cited.is_dir():
        pytest.skip("the installed timelapse-stage has no eval/gomez2022")
    before = {p.name: p.read_bytes() for p in cited.iterdir()}
    gomez_sequence(tmp_path / "gomez2022")
    result = None
    try:
        assert main(["evaluate", "timelapse-stage", str(tmp_path / "gomez2022"), "--json"]) == 0
        result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
        assert result["dataset"].startswith("gomez2022-") and result["n"] == 6
        assert json.loads((card.folder / "eval" / result["dataset"] / "metrics.json").read_text())["n"] == 6
    finally:
        if result:
            shutil.rmtree(card.folder / "eval" / result["dataset"], ignore_errors=True)
    assert main(["evaluate", "timelapse-stage", str(tmp_path / "gomez2022"), "--name", "gomez2022"]) == 2
    assert "is the evaluation timelapse-stage's card cites" in capfd.readouterr().err
    assert {p.name: p.read_bytes() for p in cited.iterdir()} == before

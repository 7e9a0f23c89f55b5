"""core.metrics against scikit-learn on fixed inputs, bootstrap CIs, thresholds, the evaluation store, evaluating a
labelled set, and an AppTest of the Metrics page on a generated store."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from core import evaluation, metrics, synthetic
from core.registry import Registry
from core.results import Prediction

ROOT = Path(__file__).resolve().parent.parent


def binary_case(n=200, seed=1, signal=0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.round(np.clip(y * signal + rng.random(n) * (1 - signal), 0, 1), 2)  # rounded: ties on purpose
    return y, np.c_[1 - p, p]


def multiclass_case(n=240, k=4, seed=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += 0.3
    return y, p / p.sum(axis=1, keepdims=True)


def as_data(y, probs, labels=None, **cols):
    labels = labels or [f"c{i}" for i in range(probs.shape[1])]
    rows = pd.DataFrame({"item": [f"i{i}" for i in range(len(y))], "output": "o", "true": [labels[t] for t in y], **cols})
    for i, lab in enumerate(labels):
        rows[f"p:{lab}"] = probs[:, i]
    return metrics.output_data(rows, "o", labels)


def test_output_absent_from_an_evaluation_gives_no_rows_not_an_error():
    rows = pd.DataFrame({"item": ["a", "b"], "output": "normal", "true": ["normal", "abnormal"],
                         "p:abnormal": [0.2, 0.7], "p:normal": [0.8, 0.3]})
    shape = metrics.output_data(rows, "shape", ["normal", "tapered", "pyriform", "amorphous"])
    assert shape.n == 0 and shape.probs.shape == (0, 4)
    with pytest.raises(ValueError, match="lack the columns"):
        metrics.output_data(rows, "normal", ["normal", "tapered"])


# --- against scikit-learn -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.72])
def test_binary_metrics_match_sklearn(threshold):
    y, probs = binary_case()
    m = metrics.point_metrics(y, probs, threshold)
    pred = (probs[:, 1] >= threshold).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, probs[:, 1]))


def test_multiclass_metrics_match_sklearn_macro():
    y, probs = multiclass_case()
    m = metrics.point_metrics(y, probs)
    pred = probs.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(np.eye(4)[y], probs, average="macro"))


def test_weighted_auc_and_ap_match_sklearn_sample_weight():
    """A bootstrap resample is a weighting of the items: one resample against sklearn with those weights."""
    y, probs = binary_case(seed=5)
    w = metrics.bootstrap_weights(len(y), 3, seed=9)
    auc, ap = metrics._auc_ap(probs[:, 1], y.astype(float), w)
    for b in range(3):
        assert auc[b] == pytest.approx(skm.roc_auc_score(y, probs[:, 1], sample_weight=w[b]))
        assert ap[b] == pytest.approx(skm.average_precision_score(y, probs[:, 1], sample_weight=w[b]))


def test_agrees_with_the_stored_classification_metrics():
    y, probs = binary_case(seed=3)
    stored = evaluation.classification_metrics([("a", "b")[t] for t in y], probs, ["a", "b"], threshold=0.4)
    m = metrics.point_metrics(y, probs, 0.4)
    for key in ("accuracy", "balanced_accuracy", "precision", "f1", "roc_auc", "sensitivity", "specificity", "pr_auc"):
        assert m[key] == pytest.approx(stored[key]), key


def test_reliability_matches_sklearn_calibration_curve_and_ece():
    rng = np.random.default_rng(4)
    p = rng.random(3000)
    y = (rng.random(3000) < p).astype(float)  # calibrated by construction
    table, ece = metrics.reliability(p, y, n_bins=10)
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert np.allclose(table["observed"], observed) and np.allclose(table["mean_predicted"], predicted)
    assert ece < 0.04
    _, ece_bad = metrics.reliability(np.clip(p * 0.5 + 0.5, 0, 1), y)  # over-confident in the positive class
    assert ece_bad > 0.2


def test_per_class_recall_matches_sklearn():
    y, probs = multiclass_case()
    table = metrics.per_class(as_data(y, probs), n_boot=50)
    assert np.allclose(table["recall"], skm.recall_score(y, probs.argmax(axis=1), average=None))
    assert (table["recall_low"] <= table["recall"]).all() and (table["recall"] <= table["recall_high"]).all()


# --- bootstrap -----------------------------------------------------------------------------------------------------
def test_bootstrap_ci_covers_the_estimate_and_shrinks_with_n():
    widths = {}
    for n in (60, 600):
        y, probs = binary_case(n=n, seed=11)
        table = metrics.metrics_with_ci(as_data(y, probs), 0.5, n_boot=500).set_index("metric")
        for m in metrics.METRICS:
            assert table.loc[m, "low"] <= table.loc[m, "estimate"] <= table.loc[m, "high"], (n, m)
        widths[n] = (table["high"] - table["low"])[list(metrics.METRICS)]
    assert (widths[600] < widths[60]).all()
    assert widths[600].mean() < 0.6 * widths[60].mean()  # ~ 1/sqrt(10) in theory


def test_stratified_resamples_keep_the_class_counts():
    y = np.array([0] * 30 + [1] * 5)
    w = metrics.bootstrap_weights(len(y), 200, strata=y)
    assert np.allclose(w[:, y == 1].sum(axis=1), 5) and np.allclose(w[:, y == 0].sum(axis=1), 30)


def test_clustered_items_are_resampled_by_group_and_give_wider_intervals():
    """Frames of one embryo are not independent: resampling embryos widens the interval honestly."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 20)
    skill = rng.normal(0, 2.0, 12)[groups]  # some embryos easy, some hard
    y = rng.integers(0, 2, len(groups))
    p = 1 / (1 + np.exp(-(skill + 1.0) * (2 * y - 1) - rng.normal(0, 0.5, len(y))))
    data = as_data(y, np.c_[1 - p, p], embryo=[f"E{g}" for g in groups])
    grouped = metrics.metrics_with_ci(data, 0.5, n_boot=400).set_index("metric")
    items = metrics.metrics_with_ci(data, 0.5, n_boot=400, clustered=False).set_index("metric")
    assert grouped.attrs["resampled"] == "groups" and items.attrs["resampled"] == "items"
    width = lambda t: t.loc["accuracy", "high"] - t.loc["accuracy", "low"]  # noqa: E731
    assert width(grouped) > 1.3 * width(items)


def test_too_few_groups_give_no_interval_and_nan_values_drop_their_group():
    """Frames of 3 embryos are 3 independent units: no bootstrap interval is given, and the note says why.
    A NaN value (an image with no heads) leaves with its group id instead of misaligning them."""
    rng = np.random.default_rng(1)
    groups = np.repeat(["AB028-6", "AA83-7", "EH309-8"], 40)
    y = rng.integers(0, 2, len(groups))
    p = np.clip(y * 0.6 + rng.uniform(0, 0.4, len(y)), 0, 1)
    table = metrics.metrics_with_ci(as_data(y, np.c_[1 - p, p], embryo=groups), 0.5).set_index("metric")
    assert table.attrs["n_groups"] == 3 and np.isnan(table.loc["accuracy", "low"])
    assert not np.isnan(table.loc["accuracy", "estimate"])
    assert "3 embryos or patients" in metrics.bootstrap_note(table)
    assert metrics.format_ci(table.loc["accuracy"]).count("(") == 0
    # nor per label, nor per embryo (one embryo's frames were resampled as if independent: 0.986 (0.971–0.996))
    data = as_data(y, np.c_[1 - p, p], embryo=groups)
    assert metrics.per_class(data, 0.5)[["recall_low", "recall_high"]].isna().all().all()
    by_embryo = metrics.subgroup_table(data, "embryo", 0.5)
    assert not by_embryo[metrics.METRIC_NAMES["accuracy"]].str.contains("(", regex=False).any()

    values = rng.uniform(0, 1, 60)
    values[[3, 17]] = np.nan
    many = np.repeat(np.arange(12), 5)
    mean, lo, hi = metrics.mean_ci(values, groups=many)
    assert mean == pytest.approx(np.nanmean(values)) and lo < mean < hi
    assert np.isnan(metrics.mean_ci(values, groups=np.repeat(np.arange(3), 20))[1])


# --- threshold -----------------------------------------------------------------------------------------------------
def test_threshold_changes_the_confusion_matrix_as_expected():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.35, 0.55, 0.8, 0.2, 0.45, 0.6, 0.95])
    probs = np.c_[1 - p1, p1]
    cm = lambda t: metrics.confusion(y, metrics.decide(probs, t), 2)  # noqa: E731
    assert cm(0.5).tolist() == [[2, 2], [2, 2]]
    assert cm(0.3).tolist() == [[1, 3], [1, 3]]
    assert cm(0.9).tolist() == [[4, 0], [3, 1]]
    assert cm(0.05).tolist() == [[0, 4], [0, 4]]
    positives = [cm(t)[:, 1].sum() for t in np.linspace(0.01, 0.99, 30)]
    assert all(a >= b for a, b in zip(positives, positives[1:]))  # a higher threshold never calls more positives
    op = metrics.operating_point(as_data(y, probs), 0.5)
    assert (op["tp"], op["fp"], op["fn"], op["tn"]) == (2, 2, 2, 2) and op["tpr"] == 0.5


def test_multiclass_threshold_on_one_label():
    probs = np.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25], [0.1, 0.2, 0.7]])
    assert metrics.decide(probs).tolist() == [0, 0, 2]
    assert metrics.decide(probs, 0.3, 1).tolist() == [1, 1, 2]  # label 1 at >= 30 %, else the best other
    assert metrics.decide(probs, 0.9, 0).tolist() == [1, 1, 2]


def test_row_normalise():
    cm = np.array([[3, 1], [0, 0]])
    norm = metrics.row_normalise(cm)
    assert norm[0].tolist() == [0.75, 0.25] and np.isnan(norm[1]).all()


# --- store, subgroups, comparison, time-lapse ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    planted = synthetic.evaluation_store(root, n=40)
    return root, planted


def test_store_subgroups_compare_and_events(store):
    root, _ = store
    reg = Registry(root)
    card = reg.card("embryo-grade")
    assert evaluation.list_evaluations(card) == ["heldout", "heldout-v2"]
    _, meta, preds = evaluation.load_evaluation(card, "heldout")
    assert metrics.classification_outputs(preds) == ["stage", "quality"]
    assert metrics.subgroup_columns(preds) == ["scope"]
    data = metrics.output_data(preds, "stage", card.classes["stage"])
    table = metrics.subgroup_table(data, "scope", 0.5, n_boot=50)
    assert table["n"].sum() == data.n and set(table["scope"]) == {"scope A", "scope B"}

    _, _, preds2 = evaluation.load_evaluation(card, "heldout-v2")
    same = metrics.compare(data, data, 0.5, 0.5, n_boot=100)
    assert same.attrs["n_common"] == 40 and set(same.iloc[:8, -1]) == {"0.000 (0.000–0.000)"}
    other = metrics.compare(data, metrics.output_data(preds2, "stage", card.classes["stage"]), 0.5, 0.5, n_boot=100)
    assert other.columns[-1].startswith("B − A") and other.iloc[6, -1] != "0.000 (0.000–0.000)"

    tl = reg.card("timelapse-stage")
    result, meta, preds = evaluation.load_evaluation(tl, "heldout")
    events, note = metrics.event_table(tl.folder / "eval" / "heldout", meta)
    assert set(events["event"]) == {"tM", "tSB"} and (events["error_h"].abs() <= 0.5).all() and "15" in note
    tdata = metrics.output_data(preds, "stage", tl.classes["stage"])
    assert tdata.groups() is not None  # frames resampled by embryo

    seg = reg.card("sperm-seg")
    result, meta, preds = evaluation.load_evaluation(seg, "heldout")
    assert metrics.is_segmentation(result["metrics"]) and not metrics.classification_outputs(preds)
    err = metrics.count_errors(preds)
    mean, lo, hi = metrics.mean_ci(err.abs())
    assert lo <= mean <= hi and mean == pytest.approx(result["metrics"]["heads"]["count_mae"])


def test_resolve_items_finds_moved_names(store, tmp_path):
    root, _ = store
    (tmp_path / "set" / "train").mkdir(parents=True)
    f = tmp_path / "set" / "train" / "D3_001.jpg"
    f.write_bytes(b"x")
    found = metrics.resolve_items(["hungvuong/D3_001.jpg", "nowhere.png", str(f)], {"data_path": str(tmp_path / "set")})
    assert found["hungvuong/D3_001.jpg"] == f and found["nowhere.png"] is None and found[str(f)] == f


# --- evaluating a labelled set -------------------------------------------------------------------------------------
def fake_predict(card):
    def predict(images):
        out = []
        for im in images:
            blast = float(im.pixels.mean() > 150) * 0.6 + 0.2  # any deterministic rule
            out.append(Prediction(card.id, card.version, im.name,
                                  probabilities={"stage": {"cleavage": 1 - blast, "blastocyst": blast},
                                                 "quality": {"not_good": 0.5, "good": 0.5}}))
        return out
    return predict


def labelled_zip(csv: bool = False) -> bytes:
    buf = io.BytesIO()
    rows = []
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(6):
            stage = ("cleavage", "blastocyst")[i % 2]
            img = synthetic.embryo(stage, size=64, seed=i)[0]
            from core.imageio import encode_png

            name = f"imgs/x{i}.png" if csv else f"set/{'01_' if i == 0 else ''}{stage.title()}/x{i}.png"
            z.writestr(name, encode_png(img))
            rows.append(f"{Path(name).name},{stage}")
        z.writestr("set/readme.txt" if not csv else "labels.csv", "" if not csv else "path,label\n" + "\n".join(rows))
        z.writestr("set/Cleavage/broken.png" if not csv else "imgs/ignored.txt", b"not an image")
        z.writestr("loose.png", encode_png(img))  # no class folder: not part of the set
    return buf.getvalue()


@pytest.mark.parametrize("csv", [False, True])
def test_evaluate_labelled_zip_stores_an_evaluation(store, csv):
    root, _ = store
    reg = Registry(root)
    card = reg.card("embryo-grade")
    calls = []
    result = evaluation.evaluate_labelled("embryo-grade", labelled_zip(csv), name=f"upload-{csv}", registry=reg,
                                          predict=fake_predict(card), progress=lambda d, t: calls.append((d, t)),
                                          batch_size=4)
    assert result["n"] == 6 and set(result["metrics"]) == {"stage"}
    assert calls[-1][0] == calls[-1][1] and len(calls) >= 2
    _, meta, preds = evaluation.load_evaluation(card, f"upload-{csv}")
    assert meta["n_per_class"]["stage"] == {"cleavage": 3, "blastocyst": 3}
    assert [x.split(":")[0] for x in meta["skipped"]] == ([] if csv else ["set/Cleavage/broken.png"])
    assert meta["layout"] == ("CSV of paths and labels" if csv else "class-per-folder")
    assert preds["phash"].str.len().eq(16).all()
    assert (card.folder / "eval" / f"upload-{csv}" / "audit.json").is_file()  # the model has training hashes


def test_evaluate_labelled_folder_and_bad_input(store, tmp_path):
    root, _ = store
    reg = Registry(root)
    card = reg.card("embryo-grade")
    result = evaluation.evaluate_labelled("embryo-grade", root / "_data" / "heldout", name="folder", registry=reg,
                                          predict=fake_predict(card))
    assert result["n"] == 40
    again = evaluation.evaluate_labelled("embryo-grade", root / "_data" / "heldout", name="folder", registry=reg,
                                         predict=fake_predict(card), replace=False)  # as the Metrics page runs it
    assert again["dataset"] == "folder-2" and {"folder", "folder-2"} <= set(evaluation.list_evaluations(card))
    stale = card.folder / "eval" / "folder-2" / "audit.json"
    assert stale.is_file()
    evaluation.store(card, "folder-2", evaluation.load_evaluation(card, "folder-2")[2].drop(columns="phash"), {}, {})
    assert not stale.exists()  # replacing an evaluation without hashes drops the old audit
    with pytest.raises(evaluation.LabelledSetError, match="do not match"):
        bad = tmp_path / "wrong"
        for lab in ("cat", "dog"):
            (bad / lab).mkdir(parents=True)
            (bad / lab / "a.png").write_bytes(b"x")
        evaluation.evaluate_labelled("embryo-grade", bad, registry=reg, predict=fake_predict(card))
    with pytest.raises(evaluation.LabelledSetError, match="not a zip"):
        evaluation.evaluate_labelled("embryo-grade", b"plain text, not a zip", name="x.zip", registry=reg,
                                     predict=fake_predict(card))
    assert evaluation.normalise_label("01_Normal") == "normal" and evaluation.normalise_label("Not good") == "not_good"


# --- real data: the evaluation store of a shipped model (skips when absent) ----------------------------------------
def test_shipped_evaluations_are_readable():
    """Every stored evaluation in weights/ loads, and its classification outputs give finite estimates (and CIs
    where there are enough groups)."""
    from core import registry

    cards = [c for c in registry.cards() if evaluation.list_evaluations(c)]
    if not cards:
        pytest.skip("no stored evaluations in weights/ yet (python -m core evaluate MODEL PATH writes them)")
    for card in cards:
        for name in evaluation.list_evaluations(card):
            result, meta, preds = evaluation.load_evaluation(card, name)
            assert result["model"] == card.id and "model_sha256" in meta
            for output in metrics.classification_outputs(preds)[:1]:
                data = metrics.output_data(preds, output, card.classes[output])
                table = metrics.metrics_with_ci(data, None if not data.binary else 0.5, n_boot=100).set_index("metric")
                given = ["estimate"] if (table.attrs["n_groups"] or metrics.MIN_GROUPS) < metrics.MIN_GROUPS \
                    else ["estimate", "low", "high"]  # too few embryos: no interval, and the page says so
                assert np.isfinite(table.loc["accuracy", given].astype(float)).all()


def test_card_figures_that_name_their_evaluation_match_it():
    """The sperm-head card said MHSMA valid n = 240, accuracy 0.800 while its stored evaluation (2 heads seen in
    training left out) said 238 and 0.798: a card figure naming its evaluation must be that evaluation's (every card
    table copied from a stored evaluation names it)."""
    from core import registry

    checked = 0
    for card in registry.cards():
        for key, entry in card.metrics.items():
            if not isinstance(entry, dict) or "evaluation" not in entry:
                continue
            result, _, _ = evaluation.load_evaluation(card, entry["evaluation"])
            if "n" in entry:
                assert entry["n"] == result["n"], (card.id, key)
            outputs = result["metrics"]
            for name in ("n", "accuracy", "accuracy_viterbi", "balanced_accuracy", "roc_auc", "sensitivity",
                         "specificity"):
                stored = {f"{output}_{name}": m[name] for output, m in outputs.items()
                          if isinstance(m, dict) and m.get(name) is not None}  # e.g. stage_accuracy
                if name != "n" and len(outputs) == 1 and stored:
                    stored[name] = next(iter(stored.values()))  # a one-output card table may leave out its name
                for figure, value in stored.items():
                    if figure in entry:
                        assert entry[figure] == pytest.approx(value, abs=5e-4), (card.id, key, figure)
                        checked += 1
    if not checked:
        pytest.skip("no card figure names its evaluation")


def test_evaluations_by_other_models_say_so():
    """The HuSHeM cross-validation figures were captioned with the shipped file's sha256, which never made them."""
    from core import registry
    from ui.evaluations import Picked

    try:
        card = registry.card("sperm-head")
        result, meta, preds = evaluation.load_evaluation(card, "hushem-5fold-cv")
    except (KeyError, registry.CardError, FileNotFoundError) as exc:
        pytest.skip(f"no sperm-head cross-validation evaluation: {exc}")
    picked = Picked(card, "hushem-5fold-cv", result, meta, preds)
    assert "cross-validation models, not the shipped file" in picked.short_source()
    assert card.sha256[:10] not in picked.short_source() and picked.short_source(n=7).endswith("n = 7")
    assert "predictions by the 5 cross-validation models" in picked.source() and card.sha256[:16] not in picked.source()


# --- page ----------------------------------------------------------------------------------------------------------
def test_metrics_page_apptest(store, monkeypatch, tmp_path):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import registry

    root, _ = store
    monkeypatch.setattr(registry.REGISTRY, "root", root)
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app_pages" / "metrics.py"), default_timeout=90).run()
    assert not at.exception, at.exception[0].value
    table = at.dataframe[0].value
    assert table["Metric"].tolist()[0] == "Accuracy" and table["95 % CI"].str.contains("–").all()
    acc_05 = table["Estimate"][0]
    cm_05 = at.dataframe[1].value.to_numpy().tolist()
    at.slider(key="m_thr_stage").set_value(0.9).run()
    assert not at.exception
    cm_09 = at.dataframe[1].value.to_numpy().tolist()
    assert np.array(cm_09)[:, 1].sum() < np.array(cm_05)[:, 1].sum()  # fewer blastocyst calls at 0.9
    assert at.dataframe[0].value["Estimate"][0] != acc_05 or cm_09 != cm_05
    import json

    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    reliability = next(f for f in figures if "Reliability diagram" in f["layout"]["title"]["text"])
    assert "range" not in reliability["layout"]["yaxis2"]  # image counts, not squeezed onto the 0–1 frequency axis
    roc = next(f for f in figures if f["layout"]["xaxis"].get("title", {}).get("text", "").startswith("1 −")
               or "ROC" in f["layout"]["title"]["text"])
    stage_n = int(at.metric[0].value)
    assert f"n = {stage_n}" in roc["layout"]["title"]["text"]  # the output's n, not the evaluation's
    assert any("near-copies of training images" in e.value for e in at.error)  # the planted leak
    audit_table = next(d.value for d in at.dataframe if any("Without training" in c for c in d.value.columns))
    assert any("n = 38" in c for c in audit_table.columns)

    at.selectbox(key="m_model").set_value("sperm-seg").run()
    assert not at.exception
    assert {"mask mAP50", "mean Dice"} <= {m.label for m in at.metric}
    at.selectbox(key="m_model").set_value("timelapse-stage").run()
    assert not at.exception
    assert any("Morphokinetic" in h.value for h in at.subheader)
    assert any("5 of 6 divisions had a burst within 3 frames" in c.value for c in at.caption)

    # evaluate a local folder from the page (with the task's predict replaced by a deterministic rule)
    import core.tasks

    class FakeModule:
        @staticmethod
        def predict_images(model_id, images, device=None):
            return fake_predict(Registry(root).card(model_id))(images)

    monkeypatch.setattr(core.tasks, "task_module", lambda model_id: FakeModule)
    at.selectbox(key="m_model").set_value("embryo-grade").run()
    folder = tmp_path / "heldout"
    shutil.copytree(root / "_data" / "heldout", folder)
    first_class = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    (first_class / "half-copied.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    form_inputs = [t for t in at.text_input if "folder" in t.label]
    form_inputs[0].set_value(str(folder))
    next(t for t in at.text_input if "Name" in t.label).set_value("from-page")
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception[0].value
    assert "from-page" in evaluation.list_evaluations(Registry(root).card("embryo-grade"))
    assert at.selectbox(key="m_eval").value == "from-page"
    assert any("1 file(s) could not be read" in w.value and "half-copied.jpg" in w.value for w in at.warning)

    next(t for t in at.text_input if "folder" in t.label).set_value(str(root / "no-such-folder"))
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception and any("could not be evaluated" in e.value for e in at.error)


def test_metrics_page_empty_store(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import registry

    monkeypatch.setattr(registry.REGISTRY, "root", tmp_path)
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app_pages" / "metrics.py"), default_timeout=60).run()
    assert not at.exception
    assert any("No stored evaluations" in i.value for i in at.info)
    assert any("No models are installed" in i.value for i in at.info)


def test_ece_interval_note_only_when_the_interval_misses_the_estimate():
    import pandas as pd

    def table(est, lo, hi):
        return pd.DataFrame([{"metric": "ece", "estimate": est, "low": lo, "high": hi}])

    assert metrics.ece_interval_note(table(0.05, 0.03, 0.08)) == ""
    assert metrics.ece_interval_note(table(0.05, np.nan, np.nan)) == ""
    assert "biased upward" in metrics.ece_interval_note(table(0.017, 0.020, 0.066))


def test_headline_skips_generated_sets_and_names_each_outputs_main_figures():
    from types import SimpleNamespace

    card = SimpleNamespace(outputs=["stage", "quality"], metrics={
        "generated/heldout": {"stage_accuracy": 0.99},
        "real/heldout": {"stage_n": 85, "stage_accuracy": 0.8706, "stage_balanced_accuracy": 0.887,
                         "quality_roc_auc": 0.7022, "quality_D3_roc_auc": 0.2357, "note": "text"}})
    assert metrics.headline(card) == ("real/heldout", "stage balanced accuracy 0.887 · quality ROC-AUC 0.7022 · "
                                                      "stage accuracy 0.8706 · n = 85")
    assert metrics.headline(SimpleNamespace(outputs=["x"], metrics={"a": {"n": 3}})) is None
    # shown as the card keeps it: 0.99349 kept as 0.9935 read "0.994" on Home against the evaluation's 0.993
    assert "mAP50 0.9935" in metrics.headline(SimpleNamespace(outputs=[], metrics={"d": {"map50": 0.9935}}))[1]
    # the shipped file's own held-out set before a cross-validation by fold models, wherever the card lists it
    cv = SimpleNamespace(outputs=["shape"], metrics={"hushem/5fold-cv": {"shape_accuracy": 0.907},
                                                     "mhsma/valid": {"accuracy": 0.798, "n": 238}})
    assert metrics.headline(cv) == ("mhsma/valid", "accuracy 0.798 · n = 238")


def test_only_the_shared_data_refreshes_a_model_card(tmp_path):
    """`evaluate pcos THEIR_SET --split heldout` (and timelapse, sperm-seg, embryo-grade likewise) wrote the outside
    set's figures into the shipped card.toml; an evaluation is stored, and only the documented data touches the card."""
    from core import PROJECT_ROOT

    assert evaluation.documents_card(PROJECT_ROOT.parent / "shared" / "data" / "pcos" / "pcosgen")
    assert evaluation.documents_card(PROJECT_ROOT / "data_prepared" / "embryo-optics" / "relief")
    assert not evaluation.documents_card(tmp_path / "pcosgen")
    # and only an evaluation of the name that made the card's table (or a new table): not `--name audit-pcos`
    from types import SimpleNamespace

    shared = PROJECT_ROOT.parent / "shared" / "data" / "pcos" / "pcosgen"
    card = SimpleNamespace(metrics={"pcosgen/heldout-groups": {"evaluation": "pcosgen-heldout"}})
    assert evaluation.refreshes_card(card, "pcosgen/heldout-groups", "pcosgen-heldout", shared)
    assert not evaluation.refreshes_card(card, "pcosgen/heldout-groups", "audit-pcos", shared)
    assert evaluation.refreshes_card(card, "other/heldout-groups", "audit-pcos", shared)


def test_a_signed_in_user_who_is_no_admin_cannot_read_server_files_through_an_uploaded_csv(store, monkeypatch):
    """A CSV uploaded alone names images on the server's disk: the folder box is admin-only, and so is this."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import ui.records
    from core import auth, registry

    root, _ = store
    monkeypatch.setattr(registry.REGISTRY, "root", root)
    monkeypatch.setattr(ui.records, "require_login", lambda sidebar=True: auth.User("nurse"))
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app_pages" / "metrics.py"), default_timeout=90).run()
    assert not at.exception and not any("folder on this server" in t.label for t in at.text_input)
    uploader = next(u for u in at.get("file_uploader") if "Labelled zip" in u.label)
    uploader.upload("labels.csv", b"path,label\n/etc/passwd,good\n", "text/csv")  # in the form: sent on submit
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception and any("only an administrator (with sign-in on)" in e.value for e in at.error), (
        [e.value for e in at.error], [w.value for w in at.warning])

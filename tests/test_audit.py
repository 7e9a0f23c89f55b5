"""Leakage audit: perceptual-hash near-duplicates between an evaluation set and the training images (flips and
re-encoding included) and inside the evaluation set, with the metrics recomputed without them."""
from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import audit, evaluation, synthetic
from core.registry import Registry
from tests.conftest import shared_data


def texture(seed: int, size: int = 96) -> np.ndarray:
    """A distinct natural-looking image per seed (smooth random structure)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = 128 + 50 * base + rng.normal(0, 4, (size, size))
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def jpeg(image: np.ndarray, quality: int = 70) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_distances_match_python_hamming():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, 20, dtype=np.uint64)
    b = rng.integers(0, 2**63, (15, 4), dtype=np.uint64)
    d = audit.distances(a, b)
    for i in range(20):
        for j in range(15):
            assert d[i, j] == min(audit.hamming(int(a[i]), int(x)) for x in b[j])


def test_flipped_and_reencoded_copies_stay_close_and_distinct_images_far():
    originals = [texture(s) for s in range(30)]
    hashes = np.array([audit.phash(im) for im in originals], dtype=np.uint64)
    far = audit.distances(hashes, hashes[:, None])
    assert far[np.triu_indices(30, 1)].min() > audit.MAX_DISTANCE
    for im in originals[:10]:
        variants = np.array(audit.phash_variants(im), dtype=np.uint64)[None]
        for copy in (jpeg(im, 60), im[:, ::-1].copy(), jpeg(im[::-1], 70), cv2.resize(jpeg(im[:, ::-1]), (80, 80))):
            assert audit.distances(np.array([audit.phash(copy)], dtype=np.uint64), variants)[0, 0] <= 4


@pytest.fixture
def leaky(tmp_path):
    """A deliberately leaky split: three training images reappear in the evaluation set (an exact copy, a flipped
    JPEG, a re-encoded JPEG), and one evaluation image appears twice. A memorising model is right on the leaked
    images and guesses on the rest."""
    reg_root = tmp_path / "weights"
    store = synthetic.evaluation_store(reg_root, n=4)  # gives a card to write into
    card = Registry(reg_root).card("embryo-grade")
    for f in card.folder.glob("eval/*"):
        for x in f.iterdir():
            x.unlink()
        f.rmdir()
    train = [texture(1000 + i) for i in range(40)]
    audit.write_train_hashes(card.folder, [f"train/{i}.png" for i in range(40)], train)
    evaluated = [texture(2000 + i) for i in range(30)]
    evaluated[0] = train[5].copy()
    evaluated[1] = jpeg(train[7][:, ::-1], 70)
    evaluated[2] = jpeg(train[9], 60)
    evaluated[3] = jpeg(evaluated[4], 80)  # a duplicate inside the evaluation set
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 30)
    y[3] = y[4]
    p = np.where(rng.random(30) < 0.5, 0.8, 0.2)
    p[:3] = np.where(y[:3] == 1, 0.99, 0.01)  # memorised
    labels = card.classes["stage"]
    frame = evaluation.predictions_frame([f"eval/{i}.png" for i in range(30)], "stage", labels,
                                         [labels[t] for t in y], np.c_[1 - p, p],
                                         phash=[f"{audit.phash(im):016x}" for im in evaluated])
    evaluation.evaluate_classifier_outputs(card, "leaky", [frame], {"split": "by image (leaky on purpose)"})
    return card, store


def test_audit_finds_the_planted_duplicates_in_a_leaky_split(leaky):
    card, _ = leaky
    result = json.loads((card.folder / "eval" / "leaky" / audit.AUDIT_FILE).read_text())
    assert result["train_flips"] is True and result["n_items"] == 30 and result["n_train"] == 40
    assert sorted(result["train"]["items"]) == ["eval/0.png", "eval/1.png", "eval/2.png"]
    pairs = {p["item"]: p["train_item"] for p in result["train"]["pairs"]}
    assert pairs == {"eval/0.png": "train/5.png", "eval/1.png": "train/7.png", "eval/2.png": "train/9.png"}
    assert result["within"]["n_groups"] == 1 and result["within"]["removed"] == ["eval/4.png"]
    full = json.loads((card.folder / "eval" / "leaky" / "metrics.json").read_text())["metrics"]["stage"]
    clean = result["metrics_without"]["train"]["stage"]
    assert clean["n"] == 27 and result["metrics_without"]["train_and_within"]["stage"]["n"] == 26
    assert clean["accuracy"] < full["accuracy"]  # the leaked items flattered the model


def test_flips_are_missed_without_stored_flip_hashes(leaky):
    """Older hash files (original only) still work, and the audit says whether flips were checked."""
    card, _ = leaky
    train = audit.read_train_hashes(card.folder)[["item", "phash"]]
    _, _, preds = evaluation.load_evaluation(card, "leaky")
    result = audit.audit(preds, train)
    assert result["train_flips"] is False
    assert "eval/0.png" in result["train"]["items"] and "eval/2.png" in result["train"]["items"]


def test_an_image_close_to_many_training_images_is_counted_indistinct_not_a_copy():
    """Every held-out Gomez frame was 'a near-copy' of a training frame of another embryo: each was as close to
    hundreds of them, so the hash could not tell those frames apart."""
    preds = pd.DataFrame({"item": ["look-alike", "copy"], "output": "o", "true": ["x", "y"], "p:x": [0.2, 0.7],
                          "p:y": [0.8, 0.3], "phash": [f"{0:016x}", f"{0xFFFF_FFFF_0000_0000:016x}"]})
    many = [f"{1 << k:016x}" for k in range(audit.INDISTINCT_MATCHES + 5)]  # each 1 bit from the look-alike
    train = pd.DataFrame({"item": [f"t{k}" for k in range(len(many) + 1)],
                          "phash": many + [f"{0xFFFF_FFFF_0000_0001:016x}"]})
    result = audit.audit(preds, train)
    assert result["train"]["n_items"] == 2 and result["train"]["n_indistinct"] == 1


def test_audit_without_hashes_or_training_set():
    preds = pd.DataFrame({"item": ["a", "b"], "output": "o", "true": ["x", "y"], "p:x": [0.2, 0.7], "p:y": [0.8, 0.3]})
    result = audit.audit(preds, pd.DataFrame(columns=["item", "phash"]))
    assert result["n_items"] == 0 and result["train"]["n_items"] == 0 and result["within"]["n_groups"] == 0


def test_store_only_audits_when_hashes_exist(tmp_path):
    root = tmp_path / "w"
    synthetic.evaluation_store(root, n=6)
    tl = Registry(root).card("timelapse-stage")  # no training hashes, no phash column
    assert not (tl.folder / "eval" / "heldout" / audit.AUDIT_FILE).exists()
    assert audit.read_audit(tl.folder / "eval" / "heldout") is None


def test_real_hungvuong_exact_duplicates_are_found():
    """The data README lists 13 exact-duplicate pairs in Hung Vuong: the within-set audit must find them."""
    root = shared_data("embryo", "hungvuong")
    files = sorted((root / "train").glob("*.jpg"))
    hashes = [f"{audit.phash(np.asarray(Image.open(f).convert('RGB'))):016x}" for f in files]
    preds = pd.DataFrame({"item": [f.name for f in files], "output": "stage", "true": "x", "phash": hashes})
    result = audit.audit(preds, pd.DataFrame(columns=["item", "phash"]), max_distance=0)
    assert result["within"]["n_pairs"] >= 13
    near = audit.audit(preds, pd.DataFrame(columns=["item", "phash"]))
    assert near["within"]["n_items"] < 0.2 * len(files)  # distinct embryos are not flagged wholesale

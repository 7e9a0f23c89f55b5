"""Registry: discovery, checksum, path safety, caching, concurrency; each backend end to end with a tiny model."""
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core import synthetic
from core.registry import CardError, Registry, file_sha256
from tests import tiny_models

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    tiny_models.keras_model(root)
    tiny_models.torch_model(root)
    return root


def test_discovers_cards_without_loading(weights):
    reg = Registry(weights)
    assert reg.ids() == ["tiny-keras", "tiny-torch"]
    assert reg.card("tiny-keras").classes == {"stage": ["cleavage", "blastocyst"]}
    assert reg.status() == []  # reading cards loads nothing


def test_unknown_id_names_close_matches(weights):
    with pytest.raises(KeyError, match="tiny-keras"):
        Registry(weights).card("tiny-kera")
    with pytest.raises(KeyError):
        Registry(weights).card("../tiny-keras")


def test_sha_mismatch_is_refused(weights, tmp_path):
    shutil.copytree(weights / "tiny-torch", tmp_path / "tiny-torch")
    with open(tmp_path / "tiny-torch" / "model.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(CardError, match="sha256"):
        Registry(tmp_path).load("tiny-torch", "cpu")


def test_file_outside_weights_is_refused(weights, tmp_path):
    root = tmp_path / "weights"
    shutil.copytree(weights / "tiny-torch", root / "evil")
    outside = tmp_path / "outside.pt"
    shutil.copy(weights / "tiny-torch" / "model.pt", outside)
    card = (root / "evil" / "card.toml").read_text()
    card = card.replace('id = "tiny-torch"', 'id = "evil"').replace('file = "model.pt"', 'file = "../../outside.pt"')
    (root / "evil" / "card.toml").write_text(card)
    with pytest.raises(CardError, match="inside"):
        Registry(root).load("evil", "cpu")


def test_card_missing_keys_is_an_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "card.toml").write_text('id = "bad"\ntitle = "x"\n')
    with pytest.raises(CardError, match="lacks"):
        Registry(tmp_path).card("bad")


def test_a_cards_display_table_words_outputs_and_labels(weights, tmp_path):
    plain = Registry(weights).cards()[0].wording
    assert plain.title("cell_stage") == "cell stage" and plain.says("quality", "not_good") == "not good"
    folder = tmp_path / "worded"
    shutil.copytree(weights / "tiny-keras", folder / "tiny-keras")
    card = folder / "tiny-keras" / "card.toml"
    card.write_text(card.read_text() + '\n[display.titles]\nquality = "Quality grade"\n'
                    '[display.labels.quality]\ngood = "good (grade A/B)"\n')
    worded = Registry(folder).card("tiny-keras").wording
    assert worded.title("quality") == "Quality grade" and worded.says("quality", "good") == "good (grade A/B)"
    assert worded.says("quality", "not_good") == "not good" and worded.value == "probability"


def test_cache_hit_returns_same_object_and_bound_evicts(weights):
    reg = Registry(weights, cache_size=1)
    a = reg.load("tiny-torch", "cpu")
    assert reg.load("tiny-torch", "cpu") is a
    assert [s.model_id for s in reg.status()] == ["tiny-torch"]
    reg.load("tiny-keras", "cpu")
    assert [s.model_id for s in reg.status()] == ["tiny-keras"]  # LRU bound of 1 evicted the first
    assert reg.load("tiny-torch", "cpu") is not a


def test_concurrent_loads_load_once(weights, monkeypatch):
    from core.backends import torch as torch_backend

    calls = []
    original = torch_backend.TorchModel.__init__

    def counting_init(self, *args, **kw):
        calls.append(1)
        original(self, *args, **kw)

    monkeypatch.setattr(torch_backend.TorchModel, "__init__", counting_init)
    reg = Registry(weights)
    results = []
    threads = [threading.Thread(target=lambda: results.append(reg.load("tiny-torch", "cpu"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(r is results[0] for r in results)


@pytest.mark.parametrize("model_id", ["tiny-keras", "tiny-torch"])
def test_classifier_backends_predict_and_explain(weights, model_id):
    model = Registry(weights).load(model_id, "cpu")
    images, y = tiny_models.dataset(16, seed=1000)  # unseen generated embryos
    probs = model.predict(images)["stage"]
    assert probs.shape == (16, 2)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (probs.argmax(axis=1) == y).mean() >= 0.8
    heat = model.explain(images[1], "stage")
    assert heat.shape == (32, 32) and 0 <= heat.min() and heat.max() <= 1


def test_keras_model_runs_on_the_torch_backend_too(weights):
    """The same .keras file under KERAS_BACKEND=torch (how it runs on a GPU host without TensorFlow)."""
    images, _ = tiny_models.dataset(8, seed=2000)
    np.save(weights.parent / "x.npy", np.stack(images))
    code = f"""
import json, sys, numpy as np
from core.registry import Registry
m = Registry({str(weights)!r}).load("tiny-keras", "cpu")
imgs = list(np.load({str(weights.parent / "x.npy")!r}))
p = m.predict(imgs)["stage"]
h = m.explain(imgs[1], "stage")
import keras
print(json.dumps({{"backend": keras.backend.backend(), "probs": p.tolist(), "heat": list(h.shape)}}))
"""
    results = {}
    for backend in ("tensorflow", "torch"):
        env = {**os.environ, "KERAS_BACKEND": backend}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        results[backend] = json.loads(out.stdout.strip().splitlines()[-1])
        assert results[backend]["backend"] == backend
        assert results[backend]["heat"] == [32, 32]
    assert np.allclose(results["tensorflow"]["probs"], results["torch"]["probs"], atol=1e-4)


def test_yolo_backend_end_to_end(tmp_path):
    weights = tmp_path / "weights"
    tiny_models.yolo_model(weights, tmp_path)
    model = Registry(weights).load("tiny-yolo", "cpu")
    img, _ = synthetic.embryo("blastocyst", size=64, seed=0)
    (out,) = model.predict([img])
    assert set(out) >= {"boxes", "scores", "labels"}
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"])
    assert file_sha256(weights / "tiny-yolo" / "model.pt") == Registry(weights).card("tiny-yolo").sha256


def test_legacy_h5_keras_file_loads(weights, tmp_path):
    from core.backends.keras import import_keras
    from core.registry import write_card

    keras = import_keras()
    net = keras.saving.load_model(weights / "tiny-keras" / "model.keras")
    folder = tmp_path / "tiny-h5"
    folder.mkdir()
    net.save(folder / "model.h5")
    fields = {**Registry(weights).card("tiny-keras").raw, "id": "tiny-h5", "file": "model.h5"}
    write_card(folder, fields)
    images, _ = tiny_models.dataset(4, seed=3000)
    a = Registry(weights).load("tiny-keras", "cpu").predict(images)["stage"]
    b = Registry(tmp_path).load("tiny-h5", "cpu").predict(images)["stage"]
    assert np.allclose(a, b, atol=1e-5)


def test_dihedral_views_are_the_eight_turns_and_mirror_images():
    from core.preprocess import dihedral_views

    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    views = dihedral_views(x, 8)
    assert np.array_equal(views[0], x) and len({v.tobytes() for v in views}) == 8
    assert np.array_equal(views[1][0, :, :, 0], np.rot90(x[0, :, :, 0]))
    assert np.array_equal(views[4][0, :, :, 0], x[0, :, ::-1, 0])
    assert len(dihedral_views(x, 2)) == 2


def test_keras_grad_cam_follows_the_named_output_not_keras_list_order(tmp_path):
    """A two-output Keras model lists its outputs alphabetically (quality before stage) while the card lists stage
    first: the stage map must follow the stage head. Here the quality head's weights are zero, so its map is flat."""
    from core.backends.keras import import_keras
    from core.registry import write_card
    from tests.tiny_models import INPUT, SIZE, _card_fields, dataset

    keras = import_keras()
    inputs = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(inputs)
    stage = keras.layers.Dense(2, activation="softmax", name="stage")(keras.layers.GlobalAveragePooling2D()(h))
    quality = keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros", name="quality")(  # blind
        keras.layers.GlobalMaxPooling2D()(h))
    net = keras.Model(inputs, {"stage": stage, "quality": quality})
    folder = tmp_path / "two-heads"
    folder.mkdir()
    net.save(folder / "model.keras", include_optimizer=False)
    classes = {"stage": ["cleavage", "blastocyst"], "quality": ["not_good", "good"]}
    write_card(folder, {**_card_fields("two-heads", "keras", "model.keras", explain={"layer": "last_conv"}),
                                 "classes": classes, "input": INPUT})
    model = Registry(tmp_path).load("two-heads", "cpu")
    image = dataset(2)[0][0]
    assert np.ptp(model.explain(image, "stage", "blastocyst")) > 0
    assert np.ptp(model.explain(image, "quality", "good")) == 0

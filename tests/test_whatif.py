"""core.whatif: each perturbation's effect, masks, occlusion map, sensitivity curve, experiments; Grad-CAM and the
occlusion map on tiny Keras and PyTorch models trained here on generated images point at the deciding square."""
from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest

from core import synthetic, whatif
from core.registry import Registry


@pytest.fixture(scope="module")
def img():
    return synthetic.embryo("blastocyst", size=96, seed=1)[0]


def grey(a):
    return a.astype(np.float64).mean()


# --- perturbations ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(whatif.PERTURBATIONS))
def test_identity_value_is_identity_and_pure(img, name):
    p = whatif.PERTURBATIONS[name]
    before = img.copy()
    if name == "jpeg":  # 100 means "not recompressed" in the settings; the function itself always encodes
        out = whatif.apply_perturbations(img, {name: p.identity})
    else:
        out = p.fn(img, p.identity)
    assert np.array_equal(out, img)
    assert out is not img
    assert np.array_equal(img, before)  # input untouched


@pytest.mark.parametrize("name", [n for n in whatif.PERTURBATIONS if n != "flip"])
def test_every_perturbation_changes_the_image_at_its_extreme(img, name):
    p = whatif.PERTURBATIONS[name]
    before = img.copy()
    out = p.fn(img, p.lo if name == "jpeg" else p.hi)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert np.array_equal(img, before)


def test_brightness_shifts_the_mean(img):
    assert grey(whatif.brightness(img, 30)) == pytest.approx(grey(img) + 30, abs=2)
    assert grey(whatif.brightness(img, -30)) == pytest.approx(grey(img) - 30, abs=2)


def test_contrast_scales_spread_and_keeps_mean(img):
    out = whatif.contrast(img, 2.0)
    assert out.astype(float).std() > 1.7 * img.astype(float).std()
    assert grey(out) == pytest.approx(grey(img), abs=4)
    assert whatif.contrast(img, 0.5).astype(float).std() < 0.6 * img.astype(float).std()


def test_gamma_darkens_above_one_and_lifts_below(img):
    assert grey(whatif.gamma(img, 2.0)) < grey(img) < grey(whatif.gamma(img, 0.5))


def test_vignette_darkens_the_corners_and_keeps_the_centre():
    flat = np.full((100, 120, 3), 200, np.uint8)
    out = whatif.vignette(flat, 60)
    assert abs(int(out[50, 60, 0]) - 200) <= 1 and abs(int(out[0, 0, 0]) - 80) <= 3
    assert whatif.vignette(flat[..., 0], 60).shape == (100, 120)


def test_blur_lowers_high_frequency_energy(img):
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    assert lap(whatif.gaussian_blur(img, 2.0)) < 0.3 * lap(img)
    wide = whatif.gaussian_blur(img, 5.0)  # the downscaled fast path looks like a true wide Gaussian
    assert np.abs(wide.astype(int) - cv2.GaussianBlur(img, (0, 0), 0.05 * 96).astype(int)).mean() < 2


def test_noise_is_seeded_and_of_the_asked_strength(img):
    flat = np.full((200, 200, 3), 128, np.uint8)
    out = whatif.noise(flat, 10)
    assert out.astype(float).std() == pytest.approx(10, rel=0.1)
    assert np.array_equal(out, whatif.noise(flat, 10))


def test_rotation_by_360_is_identity_and_four_quarter_turns_too(img):
    assert np.array_equal(whatif.rotate(img, 360), img)
    assert np.array_equal(whatif.rotate(img, -720), img)
    out = img
    for _ in range(4):
        out = whatif.rotate(out, 90)
    assert np.array_equal(out, img)
    assert np.array_equal(whatif.rotate(img, 90), np.rot90(img))  # counter-clockwise
    assert not np.array_equal(whatif.rotate(img, 30), img)


def test_flip_twice_is_identity(img):
    for mode in ("horizontal", "vertical", "both"):
        assert np.array_equal(whatif.flip(whatif.flip(img, mode), mode), img)
    assert np.array_equal(whatif.flip(img, "horizontal"), img[:, ::-1])
    with pytest.raises(ValueError):
        whatif.flip(img, "sideways")


def test_zoom_two_enlarges_the_centre(img):
    out = whatif.zoom(img, 2.0)
    centre = img[24:72, 24:72]
    assert np.abs(cv2.resize(centre, (96, 96)).astype(int) - out.astype(int)).mean() < 6


def test_jpeg_quality_100_is_close_and_low_quality_is_not(img):
    assert np.abs(whatif.jpeg(img, 100).astype(int) - img).mean() < 1.0
    assert np.abs(whatif.jpeg(img, 5).astype(int) - img).mean() > 2 * np.abs(whatif.jpeg(img, 100).astype(int) - img).mean()


def test_ultrasound_gain_and_speckle(img):
    assert grey(whatif.gain(img, 6)) == pytest.approx(min(255, grey(img) * 2), rel=0.1)
    flat = np.full((100, 100, 3), 100, np.uint8)
    sp = whatif.speckle(flat, 0.3).astype(float)
    assert sp.std() == pytest.approx(30, rel=0.15)  # multiplicative: std = strength * level
    assert sp.mean() == pytest.approx(100, abs=3)
    assert {p.name for p in whatif.perturbations(True)} - {p.name for p in whatif.perturbations(False)} == {"gain", "speckle"}


def test_settings_apply_in_order_and_describe(img):
    s = {**whatif.DEFAULT_SETTINGS, "rotation": 90, "brightness": 20}
    assert whatif.changed(s) == {"rotation": 90, "brightness": 20}
    assert np.array_equal(whatif.apply_perturbations(img, s), whatif.brightness(whatif.rotate(img, 90), 20))
    assert whatif.describe(s) == "Rotation +90°, Brightness +20 levels"
    assert whatif.describe(whatif.DEFAULT_SETTINGS) == ""


def test_perturbation_matrix_maps_points_like_the_image():
    image = np.zeros((80, 120, 3), np.uint8)
    image[30:34, 40:44] = 255  # a dot centred at (41.5, 31.5)
    s = {**whatif.DEFAULT_SETTINGS, "rotation": 30, "zoom": 1.3, "flip": "horizontal"}
    out = whatif.apply_perturbations(image, s)
    ys, xs = np.nonzero(out[:, :, 0] > 60)
    m = whatif.perturbation_matrix(image.shape, s)
    x, y = m @ np.array([41.5, 31.5, 1.0])
    assert abs(xs.mean() - x) < 1.5 and abs(ys.mean() - y) < 1.5


# --- masks --------------------------------------------------------------------------------------------------------------
def _canvas_rgba(h, w):
    rgba = np.zeros((h, w, 4), np.uint8)
    cv2.circle(rgba, (w // 3, h // 2), h // 6, (255, 0, 255, 180), -1)
    return rgba


def test_canvas_mask_is_the_painted_pixels_scaled_to_the_image():
    rgba = _canvas_rgba(100, 150)
    mask = whatif.canvas_mask(rgba, (200, 300, 3))
    assert mask.shape == (200, 300)
    expected = cv2.resize((rgba[:, :, 3] > 0).astype(np.uint8), (300, 200), interpolation=cv2.INTER_NEAREST) > 0
    assert np.array_equal(mask, expected)
    assert whatif.canvas_mask(np.zeros((100, 150, 4), np.uint8), (200, 300)) is None
    assert whatif.canvas_mask(None, (200, 300)) is None


@pytest.mark.parametrize("mode", list(whatif.MASK_MODES))
def test_mask_changes_exactly_the_painted_pixels(img, mode):
    mask = np.zeros(img.shape[:2], bool)
    mask[30:50, 20:60] = True
    out = whatif.apply_mask(img, mask, mode, "#ff0000")
    diff = (out != img).any(axis=2)
    assert not diff[~mask].any()  # nothing outside the painting moves
    assert diff[mask].mean() > 0.5  # and the painting does
    if mode == "colour":
        assert (out[mask] == [255, 0, 0]).all()
    if mode == "mean":
        assert np.abs(out[mask].astype(int) - img.reshape(-1, 3).mean(axis=0)).max() <= 1


def test_background_fill_takes_the_surroundings():
    image = np.full((64, 64, 3), 90, np.uint8)
    image[20:30, 20:30] = 250  # an object on a flat background
    mask = np.zeros((64, 64), bool)
    mask[18:32, 18:32] = True
    out = whatif.apply_mask(image, mask, "background")
    assert np.abs(out[mask].astype(int) - 90).max() <= 3


def test_edit_applies_mask_then_perturbations(img):
    mask = np.zeros(img.shape[:2], bool)
    mask[:10] = True
    s = {**whatif.DEFAULT_SETTINGS, "mask_mode": "colour", "mask_colour": "#00ff00", "flip": "vertical"}
    out = whatif.apply_edit(img, s, mask)
    assert (out[-10:] == [0, 255, 0]).all()


# --- occlusion and sensitivity with a model-free predictor ----------------------------------------------------------
def spot_predict_batch(images):
    """'present' follows the brightest 6x6 patch: a stand-in classifier with a known deciding region."""
    out = []
    for im in images:
        peak = float(cv2.blur(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32), (6, 6)).max())
        p = 1 / (1 + np.exp(-(peak - 190) / 8))
        out.append({"spot": {"absent": 1 - p, "present": p}})
    return out


def test_occlusion_map_finds_the_square_in_batches_with_progress():
    image, truth = synthetic.bright_spot(True, 96, seed=5, side=16)
    calls, seen = [], []

    def predict(images):
        calls.append(len(images))
        return spot_predict_batch(images)

    result = whatif.occlusion_map(image, predict, patch=16, batch_size=8, progress=seen.append)
    assert max(calls) <= 8 and sum(calls) == result.n_patches + 1
    assert seen[-1] == 1.0 and seen == sorted(seen)
    r, c, drop = result.peak("spot")
    x0, y0, x1, y1 = truth["box"]
    assert x0 - 8 <= c < x1 + 8 and y0 - 8 <= r < y1 + 8
    assert drop > 0.2 and result.max_drop["spot"] > 0.5  # the map averages the patches covering each pixel
    heat = result.heat("spot")
    assert heat.shape == image.shape[:2] and heat.max() == 1.0 and heat.min() >= 0


def test_sensitivity_curve_is_batched_and_monotone_for_brightness():
    image, _ = synthetic.bright_spot(True, 64, seed=2)
    values = whatif.sweep_values("brightness", 9, -100, 0)
    seen = []
    curve = whatif.sensitivity_curve(image, spot_predict_batch, "brightness", values, whatif.DEFAULT_SETTINGS,
                                     batch_size=4, progress=seen.append)
    assert list(curve.columns) == ["value", "output", "label", "probability"]
    present = curve[curve.label == "present"].sort_values("value").probability.to_numpy()
    assert len(present) == 9 and np.all(np.diff(present) >= -1e-9) and present[-1] > present[0] + 0.5
    assert seen[-1] == 1.0 and len(seen) == 3
    assert whatif.sweep_values("flip") == list(whatif.FLIP_MODES)
    assert all(isinstance(v, int) for v in whatif.sweep_values("jpeg", 5))
    with pytest.raises(ValueError):
        whatif.sensitivity_curve(image, spot_predict_batch, "sharpness", [1])


def test_compare_tables():
    a = {"q": {"bad": 0.3, "good": 0.7}}
    b = {"q": {"bad": 0.6, "good": 0.4}}
    t = whatif.compare(a, b)
    assert t.set_index("label").change_pts.round(6).to_dict() == {"bad": 30.0, "good": -30.0}
    assert whatif.predicted(b) == {"q": "bad"}
    assert whatif.predicted(b, {"q": 0.35}) == {"q": "good"}  # 40 % is past the card's threshold of 35 %


def test_compare_objects_follows_geometry_and_class_changes():
    before = pd.DataFrame({"x": [10.0, 50.0, 90.0], "y": [10.0, 50.0, 20.0], "class": ["normal", "normal", "tapered"]})
    s = {**whatif.DEFAULT_SETTINGS, "flip": "horizontal"}  # image 100 wide: x -> 99 - x
    after = pd.DataFrame({"x": [89.0, 49.0, 9.0], "y": [10.0, 50.0, 20.0], "class": ["normal", "amorphous", "tapered"]})
    t = whatif.compare_objects(before, after, (100, 100), s)
    assert t.changed.tolist() == [False, True, False]
    t2 = whatif.compare_objects(before, after.iloc[:2], (100, 100), s)
    assert t2.class_modified.tolist()[2] == "not found"


# --- experiments --------------------------------------------------------------------------------------------------------
def test_experiment_round_trip_reproduces(img):
    mask = np.zeros(img.shape[:2], bool)
    mask[40:60, 30:50] = True
    settings = {**whatif.DEFAULT_SETTINGS, "rotation": 15, "noise": 8, "jpeg": 40, "mask_mode": "blur"}
    edited = whatif.apply_edit(img, settings, mask)
    preds = {"original": spot_predict_batch([img])[0], "modified": spot_predict_batch([edited])[0]}
    data = whatif.save_experiment(whatif.Experiment(img, settings, mask, edited, preds, {"objects": []},
                                                    {"model": "toy@1"}))
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"settings.json", "original.png", "mask.png", "edited.png", "predictions.json"} <= names
    exp = whatif.load_experiment(data)
    assert np.array_equal(exp.original, img) and np.array_equal(exp.mask, mask)
    assert np.array_equal(exp.edited, edited)
    assert np.array_equal(exp.reproduce(), edited)  # replaying the settings gives the same pixels
    assert exp.settings == settings and exp.meta["model"] == "toy@1" and exp.drawing == {"objects": []}
    assert exp.predictions == json.loads(json.dumps(preds))
    assert spot_predict_batch([exp.reproduce()])[0]["spot"] == pytest.approx(preds["modified"]["spot"])


def test_bad_experiment_files_give_plain_errors():
    with pytest.raises(whatif.ExperimentError, match="not a what-if experiment"):
        whatif.load_experiment(b"hello")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("settings.json", json.dumps({"settings": {"sharpen": 3}}))
        z.writestr("original.png", b"")
    with pytest.raises(whatif.ExperimentError, match="unknown settings"):
        whatif.load_experiment(buf.getvalue())


# --- Grad-CAM and occlusion on tiny trained models -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    from tests.whatif_harness import models

    root = tmp_path_factory.mktemp("whatif-weights")
    models.keras_model(root)
    models.torch_model(root)
    return Registry(root)


def _in_box(heat, image, box, margin=4):
    heat = cv2.resize(heat.astype(np.float32), image.shape[1::-1])
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    x0, y0, x1, y1 = box
    return x0 - margin <= c < x1 + margin and y0 - margin <= r < y1 + margin


@pytest.mark.parametrize("model_id", ["whatif-keras", "whatif-torch"])
def test_gradcam_and_occlusion_point_at_the_deciding_square(tiny_registry, model_id):
    model = tiny_registry.load(model_id)
    predict_batch = whatif.model_predict_batch(model)
    explain = whatif.model_explain(model)
    from tests.whatif_harness.models import dataset

    images, y, truths = dataset(24, seed=50_000)  # unseen seeds
    probs = np.array([o["spot"]["present"] for o in predict_batch(images)])
    assert ((probs > 0.5) == y).mean() >= 0.9, f"{model_id} did not learn the toy task"
    positives = [(im, t) for im, t in zip(images, truths) if t["spot"]][:8]
    cam_hits = sum(_in_box(explain(im, "spot"), im, t["box"]) for im, t in positives)
    assert cam_hits >= 7, f"Grad-CAM peak inside the bright square for only {cam_hits}/8 images"
    im, t = positives[0]
    occ = whatif.occlusion_map(im, predict_batch, patch=12)
    assert occ.labels == {"spot": "present"}
    assert _in_box(occ.heat("spot"), im, t["box"], margin=6)
    assert whatif.model_key(whatif.model_predict(model)).startswith(f"{model_id}@0.1#")

"""PCOS from ovarian ultrasound: a small CNN on the scanned region, and the follicle count in millimetres.

The classifier sees the ultrasound's scanned region only (core.ultrasound.roi: borders cropped, burned-in marks
painted over), grey, resized to the card's input size and standardised per image.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .. import PROJECT_ROOT, WEIGHTS_DIR, registry, ultrasound
from ..datasets import pcos as data
from ..imageio import InputImage, read_image, refuse_blank
from ..preprocess import normalise
from ..results import Prediction

MODEL_ID = "pcos"
OUTPUT = "pcos"
INPUT = {"size": [64, 64], "channels": 1, "normalise": "per_image"}
CACHE_SIZE = 80  # training crops are cut from the region at this size, then resized to INPUT["size"]
# Chosen on the inner validation groups (best-epoch ROC-AUC, 20 epochs, seed 0): scanned region without speckle
# 0.785; whole frame 0.784; scanned region + speckle/blur 0.769; whole frame + speckle/blur 0.763 -- differences
# within the noise of 113 validation groups (group bootstrap), so the region recipe was kept for robustness to exports.
RECIPE = {
    "width": 16, "epochs": 20, "batch": 32, "lr": 2e-3, "weight_decay": 1e-4, "label_smoothing": 0.1,
    "class_balance": True, "roi": True, "speckle": False, "dropout": 0.3,
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- inputs ---------------------------------------------------------------------------------------------------------
def region(image: np.ndarray, use_roi: bool = True) -> np.ndarray:
    """The grey picture the classifier looks at: the scanned region with marks removed, or the whole frame."""
    return model_view(image, use_roi)[0]


def model_view(image: np.ndarray, use_roi: bool) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(grey picture the classifier sees, its box x0, y0, x1, y1 in the image)."""
    if use_roi:
        r = ultrasound.roi(image)
        return r.grey, r.box
    return ultrasound.to_grey(image), (0, 0, image.shape[1], image.shape[0])


def uses_roi(card) -> bool:
    return card.input.get("region", "scan") == "scan"


def prepared_cache(items: list[data.Item], use_roi: bool) -> dict[str, np.ndarray]:
    """Regions at CACHE_SIZE (for augmentation) and at the input size through the inference path, cached on disk."""
    key = hashlib.sha256(("|".join(i.name for i in items) + f"|{use_roi}|{CACHE_SIZE}|{INPUT['size']}").encode())
    path = Path(os.environ.get("REPRO_PREPARED_DIR", PROJECT_ROOT / "data_prepared")) / "pcos"
    file = path / f"regions-{key.hexdigest()[:16]}.npz"
    if file.is_file():
        return dict(np.load(file))
    big, exact = [], []
    for item in items:
        grey = region(read_image(item.path).pixels, use_roi)
        big.append(cv2.resize(grey, (CACHE_SIZE, CACHE_SIZE), interpolation=cv2.INTER_AREA))
        exact.append(_resize_like_prepare(grey))
    path.mkdir(parents=True, exist_ok=True)
    arrays = {"big": np.stack(big), "exact": np.stack(exact)}
    np.savez(file, **arrays)
    return arrays


def _resize_like_prepare(grey: np.ndarray) -> np.ndarray:
    h, w = INPUT["size"]
    interp = cv2.INTER_AREA if grey.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(grey, (w, h), interpolation=interp)


def augment(crops: np.ndarray, rng: np.random.Generator, speckle: bool) -> np.ndarray:
    """Random scale/shift crop, left-right flip, gain and gamma, blur, multiplicative speckle; float 0-255 out."""
    h, w = INPUT["size"]
    out = np.empty((len(crops), h, w), np.float32)
    for k, img in enumerate(crops):
        s = CACHE_SIZE
        side = int(s * rng.uniform(0.75, 1.0))
        aspect = rng.uniform(0.85, 1.18)
        ch, cw = min(s, int(side * aspect)), min(s, int(side / aspect))
        y, x = rng.integers(0, s - ch + 1), rng.integers(0, s - cw + 1)
        im = cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        if rng.random() < 0.5:
            im = im[:, ::-1]
        if speckle:
            if rng.random() < 0.3:
                im = cv2.GaussianBlur(im, (0, 0), rng.uniform(0.5, 1.2))
            if rng.random() < 0.5:
                im = im * rng.gamma(8.0, 1 / 8.0, im.shape).astype(np.float32)
        im = 255.0 * (np.clip(im, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4) * rng.uniform(0.75, 1.25)
        out[k] = np.clip(im, 0, 255)
    return out


# --- model ----------------------------------------------------------------------------------------------------------
def build(width: int, dropout: float, seed: int):
    from ..backends.keras import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    h, w = INPUT["size"]
    x = inputs = keras.Input((h, w, 1), name="image")
    x = _conv(layers, x, width, "conv0", strides=2)
    x = _conv(layers, x, width * 2, "conv1")
    x = layers.MaxPooling2D(name="pool1")(x)
    x = _conv(layers, x, width * 4, "conv2a")
    x = _conv(layers, x, width * 4, "conv2b")
    x = layers.MaxPooling2D(name="pool2")(x)
    x = _conv(layers, x, width * 8, "features")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:  # training only: Keras 3.15 cannot load a saved Dropout on the torch backend
        x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(1, activation="sigmoid", name=OUTPUT)(x)
    return keras.Model(inputs, out, name="pcos_cnn")


def _conv(layers, x, filters: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name + "_conv")(x)
    x = layers.BatchNormalization(name=name + "_bn")(x)
    return layers.ReLU(name=name)(x)


def fit(items: list[data.Item], recipe: dict, seed: int, epochs: int | None = None, save_to: Path | None = None):
    """Train on the train groups, keep the epoch with the best inner-validation ROC-AUC; returns (model, history)."""
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cache = prepared_cache(items, recipe["roi"])
    y = np.array([data.LABELS.index(i.label) for i in items], np.float32)
    split = np.array([i.split for i in items])
    tr, va = np.nonzero(split == "train")[0], np.nonzero(split == "val")[0]
    x_val = normalise(cache["exact"][va][..., None].astype(np.float32), INPUT["normalise"])
    model = build(recipe["width"], recipe["dropout"], seed)
    epochs = epochs or recipe["epochs"]
    steps = int(np.ceil(len(tr) / recipe["batch"]))
    schedule = _cosine(recipe["lr"], epochs * steps)
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe["weight_decay"]),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=recipe["label_smoothing"]),
    )
    if recipe["class_balance"]:
        pos = y[tr].mean()
        weights = np.where(y[tr] == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    else:
        weights = np.ones(len(tr), np.float32)
    rng = np.random.default_rng(seed)
    best, history, best_weights = -1.0, [], None
    for epoch in range(epochs):
        t0 = time.time()
        order = rng.permutation(len(tr))
        losses = []
        for b in range(steps):
            idx = tr[order[b * recipe["batch"]:(b + 1) * recipe["batch"]]]
            xb = normalise(augment(cache["big"][idx], rng, recipe["speckle"])[..., None], INPUT["normalise"])
            losses.append(float(model.train_on_batch(xb, y[idx][:, None], sample_weight=weights[order[
                b * recipe["batch"]:(b + 1) * recipe["batch"]]])))
        p_val = model.predict_on_batch(x_val).ravel() if len(va) else np.zeros(0)
        auc = float(roc_auc_score(y[va], p_val)) if len(set(y[va])) == 2 else float("nan")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_auc": auc})
        log(f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f} val_auc {auc:.4f} ({time.time() - t0:.0f}s)")
        if auc > best:
            best, best_weights = auc, model.get_weights()
    if best_weights is not None:
        model.set_weights(best_weights)
    return model, history


def _cosine(lr: float, total_steps: int):
    import keras

    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1), warmup_target=None)


# --- the task interface ---------------------------------------------------------------------------------------------
def train(model_id: str, data_path: Path, device: str = "cpu", epochs: int | None = None, seed: int = 0) -> Path:
    from sklearn.metrics import roc_auc_score

    from ..audit import write_train_hashes

    items, layout, info = data.read_dataset(Path(data_path))
    log(f"{len(items)} items ({layout}): {info}")
    model, history = fit(items, RECIPE, seed, epochs)
    folder = Path(WEIGHTS_DIR) / model_id
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "pcos.keras"
    inference = build(RECIPE["width"], 0.0, seed)  # the same network without its dropout layer
    inference.set_weights(model.get_weights())
    inference.save(file)
    # the decision threshold: Youden's J on the inner validation groups (never on the held-out ones)
    val = [i for i in items if i.split == "val"]
    cache = prepared_cache(items, RECIPE["roi"])
    index = {i.name: k for k, i in enumerate(items)}
    x_val = normalise(cache["exact"][[index[i.name] for i in val]][..., None].astype(np.float32), INPUT["normalise"])
    p_val = model.predict_on_batch(x_val).ravel()
    y_val = np.array([data.LABELS.index(i.label) for i in val])
    threshold = youden_threshold(y_val, p_val)
    train_items = [i for i in items if i.split == "train"]
    write_train_hashes(folder, [i.name for i in train_items], (read_image(i.path).pixels for i in train_items))
    counts = {s: {lab: sum(1 for i in items if i.split == s and i.label == lab) for lab in data.LABELS}
              for s in data.SPLITS}
    write_card(folder, file, layout, info, counts, history, threshold,
               float(roc_auc_score(y_val, p_val)), epochs or RECIPE["epochs"], seed)
    return file


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thr[best], 0.01, 0.99))


# what a reader sees: a resemblance to the training labels, never a bare "pcos" that reads like a diagnosis
DISPLAY = {"titles": {OUTPUT: "Resembles"},
           "labels": {OUTPUT: {"healthy": "healthy-labelled frames", "pcos": "PCOS-labelled frames"}}}


def write_card(folder, file, layout, info, counts, history, threshold, val_auc, epochs, seed) -> None:
    card = {
        "id": MODEL_ID,
        "title": "PCOS from ovarian ultrasound (small CNN on the scanned region)",
        "task": "pcos",
        "framework": "keras",
        "file": file.name,
        "version": "1.0.0",
        "classes": {OUTPUT: list(data.LABELS)},
        # region "scan": core.ultrasound.roi (scanned region, burned-in marks painted over); "frame": whole frame
        "input": {**INPUT, "region": "scan" if RECIPE["roi"] else "frame"},
        "thresholds": {OUTPUT: round(threshold, 4)},
        "explain": {"layer": "features"},
        "display": DISPLAY,
        "train_command": "python -m core train pcos --data ../shared/data/pcos/pcosgen"
                         + (f" --epochs {epochs}" if epochs != RECIPE["epochs"] else "")
                         + (f" --seed {seed}" if seed else ""),
        "recipe": RECIPE,
        "data": [{
            "dataset": "PCOSGen (Auto-PCOS challenge 2024), ovarian ultrasound frames",
            "source": "Zenodo record 10430727",
            "licence": "see Zenodo record 10430727 (research use)",
            "layout": layout,
            "split": (
                "by video group: neardup_groups.csv groups joined wherever two frames correlate >= "
                f"{data.NEAR_CORRELATION} (64 px grey, flip-aware); group -> split by a stable hash "
                f"(heldout {data.HELDOUT_PERCENT} %, val {data.VAL_PERCENT} %, train the rest). "
                "Byte-identical copies kept once; copies with conflicting labels dropped."),
            "preparation": {k: v for k, v in info.items()},
            "images_per_split": counts,
        }],
        "intended_use": (
            "Research demonstration: an estimate of whether an ovarian ultrasound frame resembles the PCOS-labelled "
            "frames of PCOSGen, with a heat map, beside an assistive follicle count. Not for diagnosis: PCOS is a "
            "clinical diagnosis (Rotterdam criteria) that needs hormonal and cycle history."),
        "limitations": (
            "Trained from scratch on one public set whose frames come from few video sweeps with noisy per-frame "
            "labels; held-out performance is far below the seed project's validation figures (which were leaked). "
            "Decides on one 2-D frame; the threshold was chosen on inner validation groups for balanced errors. "
            "Untested on other machines, probes and populations."),
        "training": {"epochs": epochs, "seed": seed, "best_val_auc": round(val_auc, 4),
                     "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                                 for h in history]},
    }
    old = folder / "card.toml"
    if old.is_file():  # measured metrics survive retraining only if the weights did not change
        import tomllib

        previous = tomllib.loads(old.read_text())
        if previous.get("sha256") == registry.file_sha256(file) and "metrics" in previous:
            card["metrics"] = previous["metrics"]
    registry.write_card(folder, card)


def threshold(card) -> float:
    return float((card.get("thresholds") or {}).get(OUTPUT, 0.5))


UNCALIBRATED = "default, not calibrated"
MIN_SIDE = 64  # px; far below any ultrasound export, and the model reads a 128 px view of the scanned region


def refuse_unusable(image: InputImage) -> None:
    """A frame too small or flat to show an ovary is refused (a 5 × 5 image was "38 %, above the threshold")."""
    refuse_blank(image, MIN_SIDE, "an ovary")


def calibration(image: InputImage, user_mm_per_px: float | None = None) -> tuple[float, str]:
    """mm per pixel for follicle sizes, and where it came from: DICOM spacing, the user, or the stated default."""
    from ..follicles import default_mm_per_px

    if image.pixel_spacing_mm:
        return float(np.mean(image.pixel_spacing_mm)), "DICOM pixel spacing"
    if user_mm_per_px:
        return float(user_mm_per_px), "user calibration"
    return default_mm_per_px(image.pixels.shape), UNCALIBRATED


def predict_images(model_id: str, images: list[InputImage], device: str | None = None,
                   mm_per_px: float | None = None, follicles: bool = True) -> list[Prediction]:
    """PCOS probability per image (on its scanned region) and, with `follicles`, the follicles found."""
    from .. import follicles as fol

    for im in images:  # as the page refuses them (Batch and predict scored a 1 × 1 image)
        refuse_unusable(im)
    model = registry.load(model_id, device)
    t0 = time.perf_counter()
    views = [model_view(im.pixels, uses_roi(model.card)) for im in images]
    t1 = time.perf_counter()
    probs = model.predict([v[0] for v in views])[OUTPUT] if images else np.zeros((0, 2))
    t2 = time.perf_counter()
    out = []
    for im, (_, box), p in zip(images, views, probs):
        reasons = ultrasound.looks_like_ultrasound(im.pixels)
        pred = Prediction(model_id, model.card.version, im.name, im.sha256,
                          probabilities={OUTPUT: {lab: float(v) for lab, v in zip(data.LABELS, p)}},
                          thresholds={OUTPUT: threshold(model.card)},
                          extras={"model_box": list(box), "not_ultrasound_reasons": reasons,
                                  "warnings": [f"This may not be a B-mode ultrasound frame: {'; '.join(reasons)}. "
                                               "The model and the follicle finder are meaningful for ultrasound "
                                               "only."] if reasons else []},
                          timings_ms={"region_ms": (t1 - t0) * 1000 / len(images),
                                      "model_ms": (t2 - t1) * 1000 / len(images)})
        if follicles:
            scale, source = calibration(im, mm_per_px)
            t = time.perf_counter()
            found = fol.find(im.pixels, scale)
            pred.timings_ms["follicles_ms"] = (time.perf_counter() - t) * 1000
            pred.extras.update({
                "mm_per_px": scale, "mm_per_px_source": source,
                "follicles": [f.row() for f in found],
                "follicle_count_2_9mm": fol.count_in_range(found),
                "follicle_criteria": fol.criteria_reading(fol.count_in_range(found),
                                                          fol.GUESSED_SIZE if source == UNCALIBRATED else None),
            })
            pred.images["follicles"] = fol.draw(im.pixels, found)
        out.append(pred)
    return out


def reviewed(pred: Prediction, pixels: np.ndarray, ticked: set[int], size_questioned: bool = False) -> Prediction:
    """The prediction as the clinician left it: follicles they unticked leave the count. Only follicles of 2–9 mm
    count, so a tick on one outside that range changes nothing. The finder's own count stays beside it.
    size_questioned: the calibration was typed for a frame of another size: the criteria are not judged."""
    from .. import follicles as fol

    rows = pred.extras.get("follicles") or []
    in_range = {r["id"] for r in rows if r["in_2_9_mm"]}
    counted = set(ticked) & in_range
    extras = {**pred.extras, "follicles": [{**r, "counted": r["id"] in counted} for r in rows],
              "follicle_count_2_9mm": len(counted), "follicle_count_2_9mm_found": len(in_range),
              "follicles_unticked": sorted(in_range - counted),
              "follicle_criteria": fol.criteria_reading(len(counted), fol.GUESSED_SIZE if pred.extras.get(
                  "mm_per_px_source") == UNCALIBRATED else fol.QUESTIONED_SIZE if size_questioned else None)}
    images = {**pred.images, "follicles": fol.draw(pixels, [fol.Follicle.from_row(r) for r in rows], counted)}
    return dataclasses.replace(pred, extras=extras, images=images)


def heatmap(model, image: np.ndarray, label: str = "pcos") -> np.ndarray:
    """Grad-CAM for `label` on what the model sees, placed back at the image's size (0-1)."""
    grey, (x0, y0, x1, y1) = model_view(image, uses_roi(model.card))
    cam = model.explain(grey, OUTPUT, label)
    full = np.zeros(image.shape[:2], np.float32)
    full[y0:y1, x0:x1] = cv2.resize(cam.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return full


def example_images(model_id: str, n: int) -> list[np.ndarray]:
    from .. import synthetic

    return [synthetic.ovary(n_follicles=8 + i % 10, seed=i)[0] for i in range(n)]


def bench_case(model_id: str, device: str) -> dict:
    """Latency of the classifier path (region + model); the follicle finder is timed beside it."""
    from .. import follicles as fol
    from ..bench import time_calls

    batch = 16
    images = [InputImage(im, f"generated-{i}.png", "", 0, "PNG", "RGB", 8)
              for i, im in enumerate(example_images(model_id, batch))]
    fol_ms = time_calls(lambda: fol.find(images[0].pixels, 0.1), min_reps=10, budget_s=3)
    return {
        "run_one": lambda: predict_images(model_id, images[:1], device=device, follicles=False),
        "run_batch": lambda: predict_images(model_id, images, device=device, follicles=False),
        "batch": batch,
        "notes": {"follicles_p50_ms": round(float(np.median(fol_ms)), 2)},
    }


def evaluate(model_id: str, path: Path, name: str, split: str | None = None, device: str | None = None) -> dict:
    """Evaluate on a PCOSGen or class-per-folder root: every labelled item (pooled), or one split: `heldout`/`val`/
    `train` (video groups, as in training) or a top-level folder name (e.g. `test`)."""
    from ..audit import phash
    from ..datasets import in_folder
    from ..evaluation import classification_metrics, predictions_frame, refreshes_card, store
    from ..imageio import ImageInputError

    path = Path(path)
    missing: list[str] = []
    items, layout, info = data.read_dataset(path, missing)
    own = [i for i in items if split and in_folder(i.path, path, split)]
    if own:  # the set's own split (test/, or a PCOSGen-test/ beside PCOSGen-train/), before this project's
        items = own
    elif split in data.SPLITS:
        if info.get("sets", 1) > 1:  # groups are named after their items, which the sets' folders now prefix
            raise ValueError(f"{path}: this project's {split!r} groups are defined on one PCOSGen set: give that set's "
                             f"folder alone, or a folder name as --split")
        items = [i for i in items if i.split == split]
    elif split:
        folders = sorted({part for i in items for part in Path(i.name).parts[:-1]})
        raise ValueError(f"{path}: no split {split!r}: use {', '.join(data.SPLITS)} (this project's video groups) or "
                         f"a folder of the set ({', '.join(folders[:12]) or 'none'})")
    if not items:
        raise ValueError(f"{path}: no labelled images")
    model = registry.load(model_id, device)
    thr = threshold(model.card)
    rows, skipped = [], list(missing)
    for start in range(0, len(items), 64):
        chunk = []
        for item in items[start:start + 64]:
            try:
                chunk.append((item, read_image(item.path).pixels))
            except ImageInputError as exc:
                skipped.append(str(exc))
        if chunk:
            probs = model.predict([region(px, uses_roi(model.card)) for _, px in chunk])[OUTPUT]
            rows += [(item, f"{phash(px):016x}", p) for (item, px), p in zip(chunk, probs)]
        log(f"evaluated {min(start + 64, len(items))}/{len(items)}")
    probs = np.array([r[2] for r in rows])
    y = [r[0].label for r in rows]
    frame = predictions_frame([r[0].name for r in rows], OUTPUT, data.LABELS, y, probs,
                              phash=[r[1] for r in rows], group=[r[0].group for r in rows],
                              split=[r[0].split for r in rows])
    frame["pred"] = np.where(probs[:, 1] >= thr, data.LABELS[1], data.LABELS[0])
    metrics = {OUTPUT: classification_metrics(y, probs, data.LABELS, threshold=thr)}
    meta = {"data_path": str(path.resolve()), "layout": layout, "split": split or "all (pooled)", "n": len(rows),
            "preparation": info, "skipped": skipped, "threshold": thr,
            "groups": len({r[0].group for r in rows})}
    result = store(model.card, name, frame, metrics, meta)
    key = f"{path.resolve().name}/heldout-groups"
    if split == "heldout" and refreshes_card(model.card, key, name, path):
        record_card_metrics(model.card, key, metrics[OUTPUT], name)
    return result


def record_card_metrics(card, key: str, m: dict, evaluation: str) -> None:
    """Keep the held-out numbers in the card, keyed by the data they were measured on."""
    import tomllib

    import tomli_w

    path = card.folder / "card.toml"
    raw = tomllib.loads(path.read_text())
    raw.setdefault("metrics", {})[key] = {
        **{k: round(float(m[k]), 4) for k in ("accuracy", "balanced_accuracy", "precision", "recall", "f1",
                                                "roc_auc", "sensitivity", "specificity") if m.get(k) is not None},
        "n": m["n"], "threshold": m["threshold"], "evaluation": evaluation,
    }
    path.write_text(tomli_w.dumps(raw))


# --- for the what-if panel: one image in, plain values out ----------------------------------------------------------
def predict_outputs(image: np.ndarray) -> dict[str, dict[str, float]]:
    pred = predict_images(MODEL_ID, [_wrap(image)], follicles=False)[0]
    return pred.probabilities


def explain_on_image(image: np.ndarray, output: str = OUTPUT) -> np.ndarray:
    """Grad-CAM for the label shown (from the card's threshold), as the what-if panel's caption says."""
    pred = predict_images(MODEL_ID, [_wrap(image)], follicles=False)[0]
    return heatmap(registry.load(MODEL_ID), image, pred.label(OUTPUT))


def follicle_table(image: np.ndarray, mm_per_px: float | None = None) -> "pd.DataFrame":
    """One row per follicle found (id, diameter, class, centre), for the what-if panel's detail view."""
    import pandas as pd

    from .. import follicles as fol

    rows = [f.row() for f in fol.find(image, mm_per_px)]
    return pd.DataFrame([{"id": r["id"], "diameter_mm": r["diameter_mm"],
                          "class": "2–9 mm" if r["in_2_9_mm"] else "outside 2–9 mm", "x": r["x"], "y": r["y"]}
                         for r in rows], columns=["id", "diameter_mm", "class", "x", "y"])


def _wrap(image: np.ndarray) -> InputImage:
    return InputImage(image, "image.png", hashlib.sha256(image.tobytes()).hexdigest(), image.nbytes, "PNG", "RGB", 8)

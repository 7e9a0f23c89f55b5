"""Training of `embryo-grade`: a small two-headed CNN, from scratch, on every single-embryo image we have.

Recipe (a few hundred colour day-3/day-5 photos plus grey EmbryoScope frames of 9 training embryos; 2 more held out):
- input: the normalised embryo crop (core.tasks.embryo.embryo_crop), grey, 128 px, per-image standardised, so
  framing, colour and exposure of one microscope cannot become a shortcut for the stage; size, length and edge
  bands were chosen on an inner split of the training groups (`select_recipe`, never the held-out groups);
- augmentation on a wider cached crop: scale 0.8–1.25, any rotation, flips, shifts, gamma, blur, noise, and
  replicated-edge bands on any class (replicate_edges), so that a crop reaching past its photo is no stage cue;
- stage: trained on Hung Vuong day 3 (cleavage), good day 5 (blastocyst) and the Gomez frames; the loss is
  balanced per (image source, stage) so that neither the source nor its class mix predicts the stage;
  poor day-5 images (stage unknown) and Gomez frames (quality unknown) are masked out of that output's loss;
- quality: Hung Vuong only, balanced per (day, class) so the 14 good day-3 training images weigh as much as the rest;
- in near-duplicate groups whose labels disagree that output is masked; held-out groups (stable hash) are never seen.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from . import WEIGHTS_DIR
from .audit import write_train_hashes
from .datasets import embryo as ds
from .preprocess import mean_over_views, normalise
from .tasks.embryo import CROP_SIDE, GRADE_ID, OPTICS_TABLES, crop_square, embryo_crop, locate_embryo
from .whatif import vignette

INPUT = 128
CACHE = 160  # px of the cached training crop (wide enough for every compared input size)
CACHE_MARGIN = 1.2  # cached crop is this much wider than the nominal crop, room for zoom-out and rotation
GOMEZ_EVERY = 3  # consecutive time-lapse frames are near-identical: keep every third
CROPS_EVERY = 2  # blastocyst crops: every second
VERSION = "2.2.0"
# each crop is read in 4 of its turns and mirror images (card: input.test_views; training turns and mirrors every
# crop): 4 and 8 views beat 1 on the inner split in both seeds tried, 8 broke the 15 ms target (16.2 ms; README)
TEST_VIEWS = 4
EPOCHS = 80
INNER_VALIDATION_PERCENT = 20  # of the training groups, for choosing the recipe
EDGE_BAND_P = 0.3  # chance per side of a view of a replicated-edge band (see replicate_edges)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_model(keras, input_size: int = INPUT):
    """Plain Conv-BN-ReLU blocks and two softmax heads (standard layers only: loads on TF and torch backends)."""
    L = keras.layers
    x_in = keras.Input((input_size, input_size, 1), name="image")

    def block(x, filters, name, stride=1):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = L.BatchNormalization(name=f"{name}_bn")(x)
        return L.ReLU(name=f"{name}_relu")(x)

    x = block(x_in, 16, "stem", stride=2)  # 32
    x = L.MaxPooling2D(name="pool1")(block(x, 24, "b1"))  # 16
    x = block(x, 48, "b2a")
    x = L.MaxPooling2D(name="pool2")(block(x, 48, "b2b"))  # 8
    x = block(x, 96, "b3a")
    x = block(x, 96, "cam")  # Grad-CAM layer, 8x8
    x = L.MaxPooling2D(name="pool3")(x)  # 4
    x = block(x, 160, "b4")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.3, name="drop")(x)
    stage = L.Dense(2, activation="softmax", name="stage")(x)
    quality = L.Dense(2, activation="softmax", name="quality")(L.Dense(64, activation="relu", name="q_hidden")(x))
    return keras.Model(x_in, {"stage": stage, "quality": quality}, name="embryo_grade")


def extra_sources(data: Path) -> list[tuple[str, Path]]:
    """The Gomez EmbryoScope folders beside the Hung Vuong data (../shared/data/timelapse/...)."""
    shared = data.resolve().parent.parent
    return [("gomez", shared / "timelapse" / "gomez2022"),
            ("gomez-crops", shared / "timelapse" / "gomez2022_blastocyst_crops")]


def collect(data: Path) -> list[ds.Item]:
    items = ds.read_hungvuong(data)
    for kind, path in extra_sources(data):
        if not path.is_dir():
            log(f"note: {path} not found: training without it")
            continue
        items += ds.read_gomez(path, GOMEZ_EVERY) if kind == "gomez" else ds.read_gomez_crops(path, CROPS_EVERY)
    return items


def balanced_weights(keys: list, cap: float = 8.0) -> np.ndarray:
    """1 / count of each key (None: weight 0), scaled to mean 1 over the keyed items, capped."""
    counts = Counter(k for k in keys if k is not None)
    w = np.array([0.0 if k is None else 1.0 / counts[k] for k in keys])
    w *= (w > 0).sum() / max(w.sum(), 1e-12)
    return np.minimum(w, cap).astype(np.float32)


def replicate_edges(view: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Each side, with chance p, overwritten by a band (4-30 % of the side) repeating the row or column inside it.

    A crop that reaches past its photo has such bands (crop_square replicates edges). In the training crops they
    marked the stage: 75 % of Hung Vuong blastocysts have one, 47 % of its cleavage images, and day-3 photos that
    the embryo fills get them at prediction. Putting them on every class keeps them from standing for a stage."""
    n = view.shape[0]
    for side in range(4):
        if rng.random() < p:
            w = int(rng.uniform(0.04, 0.3) * n)
            v = np.rot90(view, side)  # a view: writing into it writes into `view`
            v[:w] = v[w]
    return view


def relief(x: np.ndarray, contrast: float = 0.35, strength: float = 1.5, angle: float = 0.0) -> np.ndarray:
    """x (float, 0–1) as a relief (modulation-contrast, Hoffman-like) microscope shows it: flattened contrast
    plus a directional derivative, so each edge is bright on one side and dark on the other."""
    b = cv2.GaussianBlur(x, (0, 0), 1.5)
    d = np.cos(angle) * cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=3) + np.sin(angle) * cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=3)
    return np.clip(0.5 + contrast * (x - x.mean()) + strength * d, 0, 1).astype(np.float32)


# photos as another microscope might show them (uint8 in, uint8 out): relief shading is grey, as modulation-contrast
# images are; the vignette's corners keep 40 % of their light
OPTICS_SETS = {"original": lambda image: image,
               "uneven-light": lambda image: vignette(image, 60),
               "relief": lambda image: np.uint8(relief(grey(image).astype(np.float32) / 255) * 255)}


def augment(crop: np.ndarray, rng: np.random.Generator, input_px: int = INPUT,
            edge_band_p: float = EDGE_BAND_P) -> np.ndarray:
    """One random view of a cached crop (grey uint8, CACHE_MARGIN × the nominal crop) as grey uint8 input_px²."""
    size = crop.shape[0]
    side = size / CACHE_MARGIN * rng.uniform(0.8, 1.25)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08, 2) * side
    out = crop_square(crop, cx, cy, side, input_px, angle=rng.uniform(0, 360))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if edge_band_p:
        out = replicate_edges(np.ascontiguousarray(out), rng, edge_band_p)
    x = out.astype(np.float32) / 255.0
    x = np.power(np.clip(x * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0, 1), rng.uniform(0.7, 1.4))
    if rng.random() < 0.35:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.6))
    elif rng.random() < 0.2:  # sharpened optics
        x = np.clip(x + 0.8 * (x - cv2.GaussianBlur(x, (0, 0), 1.5)), 0, 1)
    if rng.random() < 0.35:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape)
    return np.uint8(np.clip(x * 255, 0, 255))


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def nominal_view(crop: np.ndarray, input_px: int = INPUT) -> np.ndarray:
    """The un-augmented view of a cached crop: what prediction sees (embryo_crop at CROP_SIDE radii)."""
    size = crop.shape[0]
    return crop_square(crop, size / 2, size / 2, size / CACHE_MARGIN, input_px)


def cache_crops(items: list[ds.Item]) -> tuple[list[np.ndarray], np.ndarray]:
    """(the images, their grey CACHE² crops around the located embryo, CACHE_MARGIN wider than the graded crop).

    Training crops come from the classical locator alone, not from find_embryo's detector fallback that prediction
    uses: on the inner split, training on the fallback's crops made every seed call the EmbryoScope blastocyst
    crops cleavage (balanced accuracy 0.68 -> 0.42), while grading with it lifted Hung Vuong stage accuracy in
    every seed (0.936 -> 0.974, 4 seeds) and left the rest unchanged."""
    images = [ds.load_rgb(it.path) for it in items]
    return images, np.stack([grey(embryo_crop(im, CACHE, CROP_SIDE * CACHE_MARGIN, locate_embryo)[0]) for im in images])


def setup_keras(seed: int):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    threads = int(os.environ["OMP_NUM_THREADS"])
    from .backends.keras import import_keras

    keras = import_keras()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    return keras


def fit_grade(keras, items: list[ds.Item], cache: np.ndarray, input_px: int = INPUT, epochs: int = EPOCHS,
              seed: int = 0, edge_band_p: float = EDGE_BAND_P):
    """The two-headed model trained on `items` (their cached crops), with the balanced, masked losses above."""
    stage_y = np.array([ds.STAGES.index(it.stage) if it.stage else 0 for it in items])
    quality_y = np.array([ds.QUALITIES.index(it.quality) if it.quality else 0 for it in items])
    domain = ["hungvuong" if it.source == "hungvuong" else "embryoscope" for it in items]
    stage_w = balanced_weights([(d, it.stage) if it.stage and "stage" not in it.conflicts else None
                                for d, it in zip(domain, items)])
    quality_w = balanced_weights([(it.day, it.quality) if it.quality and "quality" not in it.conflicts else None
                                  for it in items])

    class Batches(keras.utils.PyDataset):
        def __init__(self, batch_size=32):
            super().__init__()
            self.batch_size = batch_size
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(cache))

        def __len__(self):
            return int(np.ceil(len(cache) / self.batch_size))

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(cache))

        def __getitem__(self, i):
            idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
            x = np.stack([augment(cache[j], self.rng, input_px, edge_band_p) for j in idx])
            x = normalise(x.astype(np.float32)[..., None], "per_image")
            ys = {"stage": keras.utils.to_categorical(stage_y[idx], 2),
                  "quality": keras.utils.to_categorical(quality_y[idx], 2)}
            return x, ys, {"stage": stage_w[idx], "quality": quality_w[idx]}

    batches = Batches()
    model = build_model(keras, input_px)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=epochs * len(batches), alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss={o: keras.losses.CategoricalCrossentropy(label_smoothing=0.05) for o in ("stage", "quality")},
        loss_weights={"stage": 1.0, "quality": 1.0},
    )
    model.fit(batches, epochs=epochs, verbose=2)
    return model


def train_grade(data: Path, device: str = "cpu", epochs: int | None = None, seed: int = 0) -> Path:
    keras = setup_keras(seed)
    epochs = epochs or EPOCHS

    items = collect(data)
    conflicts = sorted({f"{it.group} ({'/'.join(it.conflicts)})" for it in items if it.conflicts})
    train_items = [it for it in items if it.split == "train"]
    log(f"{len(items)} items; training on {len(train_items)} (held-out groups excluded; {len(conflicts)} duplicate "
        f"groups with conflicting labels masked for that output); by source: {Counter(it.source for it in train_items)}")
    images, cache = cache_crops(train_items)
    model = fit_grade(keras, train_items, cache, INPUT, epochs, seed, EDGE_BAND_P)

    folder = WEIGHTS_DIR / GRADE_ID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.keras"
    model.save(path)
    write_train_hashes(folder, [it.name for it in train_items], images)
    write_card(folder, path, data, epochs, seed, train_items, conflicts, model.count_params(), device)
    return path


def inner_validation(items: list[ds.Item]) -> np.ndarray:
    """True for the items of the inner validation groups (a stable hash of the group, apart from the held-out one)."""
    import zlib

    return np.array([zlib.crc32(f"inner:{it.group}".encode()) % 100 < INNER_VALIDATION_PERCENT for it in items])


def score_inner(model, val: list[ds.Item], val_cache: np.ndarray, input_px: int,
                views: int = TEST_VIEWS) -> tuple[dict, dict]:
    """(Hung Vuong stage, EmbryoScope stage and quality metrics on the inner validation items, their probabilities),
    each item read in `views` turns and mirror images as the card's model reads it."""
    from .evaluation import classification_metrics

    crops = [nominal_view(c, input_px) for c in val_cache]

    def predict(transform):
        x = normalise(np.stack([transform(c) for c in crops]).astype(np.float32)[..., None], "per_image")
        return mean_over_views(lambda b: model.predict(b, verbose=0, batch_size=64), x, views)

    probs = predict(OPTICS_SETS["original"])
    row = {"test_views": views}
    # stage under the optics of other microscopes (the same crops transformed), all stage items pooled
    staged = [k for k, it in enumerate(val) if it.stage and "stage" not in it.conflicts]
    for name, key in (("clean", "original"), ("uneven_light", "uneven-light"), ("relief", "relief")):
        p = probs if key == "original" else predict(OPTICS_SETS[key])
        m = classification_metrics([val[k].stage for k in staged], p["stage"][staged], ds.STAGES)
        row[f"stage_balanced_accuracy_{name}"] = m["balanced_accuracy"]
    for name, keep, output, labels in (
            ("hungvuong_stage", lambda it: it.source == "hungvuong", "stage", ds.STAGES),
            ("embryoscope_stage", lambda it: it.source != "hungvuong", "stage", ds.STAGES),
            ("quality", lambda it: True, "quality", ds.QUALITIES)):
        sel = [k for k, it in enumerate(val) if keep(it) and getattr(it, output) and output not in it.conflicts]
        m = classification_metrics([getattr(val[k], output) for k in sel], probs[output][sel], labels)
        row.update({f"{name}_accuracy": m["accuracy"], f"{name}_balanced_accuracy": m["balanced_accuracy"],
                    f"{name}_roc_auc": m["roc_auc"], f"{name}_n": len(sel)})
    return row, {o: np.asarray(p) for o, p in probs.items()}


def fit_and_score_inner(keras, items: list[ds.Item], cache: np.ndarray, input_px: int, epochs: int, seed: int,
                        edge_band_p: float, views=(TEST_VIEWS,)) -> list[tuple[dict, dict]]:
    """A model fitted on the training groups outside the inner validation split, scored on that split once per
    count of test views."""
    inner = inner_validation(items)
    model = fit_grade(keras, [it for it, v in zip(items, inner) if not v], cache[~inner], input_px, epochs, seed,
                      edge_band_p)
    return [score_inner(model, [it for it, v in zip(items, inner) if v], cache[inner], input_px, k) for k in views]


def parse_recipe(text: str) -> tuple[int, int, float]:
    """'128x40' or '128x40e0.3' -> (input px, epochs, edge band chance)."""
    size, rest = text.split("x")
    epochs, _, edge = rest.partition("e")
    return int(size), int(epochs), float(edge or 0.0)


def select_recipe(data: Path, recipes: list[tuple[int, int, float]], out: Path, seed: int = 0,
                  views=(TEST_VIEWS,)) -> list[dict]:
    """Train each (input px, epochs, edge band chance) recipe on the training groups outside an inner validation
    split and score it there with each count of test views; held-out groups are never read. One JSON line per
    recipe and view count is appended to `out`."""
    import json

    keras = setup_keras(seed)
    train_items = [it for it in collect(data) if it.split == "train"]
    inner = inner_validation(train_items)
    _, cache = cache_crops(train_items)
    rows = []
    for input_px, epochs, edge in recipes:
        for scores, _ in fit_and_score_inner(keras, train_items, cache, input_px, epochs, seed, edge, views):
            row = {"input_px": input_px, "epochs": epochs, "edge_band_p": edge, "seed": seed,
                   "n_fit": int((~inner).sum()), "n_validation": int(inner.sum()), **scores}
            log(json.dumps(row))
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def prepare_optics_sets(data: Path, out: Path) -> dict[str, int]:
    """The held-out stage-labelled photos and frames (Hung Vuong groups, Gomez embryos) as class-per-folder sets
    out/<set>/<stage>/, one set per OPTICS_SETS entry, so that `evaluate embryo-grade out/<set>` measures the whole
    pipeline (locator included) under other optics; each group (an embryo, a near-duplicate group) in a folder of
    its own, which the class-per-folder reader keeps together. Returns the count per stage."""
    items = [it for it in collect(data) if it.split == "heldout" and it.stage and "stage" not in it.conflicts]
    for it in items:
        image = ds.load_rgb(it.path)
        for name, transform in OPTICS_SETS.items():
            shown = transform(image)
            group = it.group.replace(":", "_").replace("/", "_")
            path = out / name / it.stage / group / (it.name.replace("/", "__").rsplit(".", 1)[0] + ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), shown if shown.ndim == 2 else shown[..., ::-1])
    return dict(Counter(it.stage for it in items))


def write_card(folder: Path, path: Path, data: Path, epochs: int, seed: int, train_items, conflicts,
               model_params: int, device: str = "cpu") -> None:
    from .backends.keras import keras_backend
    from .registry import file_sha256, write_card as write

    counts = Counter((it.source, it.stage or "-", it.quality or "-") for it in train_items)
    card = {
        "id": GRADE_ID,
        "title": "Embryo stage and quality (single embryo)",
        "task": "embryo",
        "framework": "keras",
        "file": path.name,
        "version": VERSION,
        "trained": dt.date.today().isoformat(),
        "train_command": f"python -m core train {GRADE_ID} --data {_rel(data)} --seed {seed}"
                         + (f" --epochs {epochs}" if epochs != EPOCHS else "")
                         + (" --device cuda" if device.startswith("cuda") else ""),
        "classes": {"stage": ds.STAGES, "quality": ds.QUALITIES},
        "thresholds": {"stage": 0.5, "quality": 0.5},
        "input": {"size": [INPUT, INPUT], "channels": 1, "normalise": "per_image", "test_views": TEST_VIEWS,
                  "crop": f"embryo located by core.tasks.embryo.embryo_crop, square of {CROP_SIDE} radii"},
        "explain": {"layer": "cam"},
        "architecture": f"7 Conv3x3-BN-ReLU layers (16→160 channels, 3 max-pools), global average pooling, "
                        f"softmax heads stage and quality; {model_params} parameters, trained from scratch",
        "intended_use": "Research demonstration: suggests the developmental stage (cleavage vs blastocyst) and a "
                        "good / not-good quality call for one embryo in a bright-field or time-lapse image, to "
                        "compare with an embryologist's own assessment. Not for clinical selection.",
        "limitations": "Quality was learned from one clinic's labels only (Hung Vuong; 14 good day-3 images in training), so it "
                       "carries that clinic's grading habits; for day-3 embryos it is no better than chance on the "
                       "held-out photos (see quality_D3 figures). Stage was learned from "
                       "two microscopes (Hung Vuong colour photos, EmbryoScope grey frames of 9 training embryos); morulae, "
                       "arrested or fragmented embryos and unusual optics may be mis-staged: on the held-out "
                       "photos a vignette (light falling off towards the corners) lowered stage balanced accuracy "
                       "(the heldout-pooled tables) from 0.93 to 0.67, and relief shading as modulation-contrast "
                       "microscopes show it to 0.69 (most cleavage embryos called blastocysts). It grades any image "
                       "as an embryo; the page flags a missing zona-like outline, which catches noise but few other "
                       "kinds of image. The embryo is located "
                       "by a classical detector that can be misled by debris or several embryos in one image (use "
                       "dish mode). EmbryoScope stage does not carry reliably across embryos: the training embryo "
                       "AB028-6, correctly located, is called blastocyst on 272 of its 276 cleavage-stage frames "
                       "(see README). Probabilities are not calibrated for any clinic's population.",
        "data": [
            {"name": "Hung Vuong Hospital day-3/day-5 embryos (Kaggle World Championship 2023)",
             "licence": "competition data, research only",
             "split": f"pHash near-duplicate groups (Hamming ≤ {ds.NEAR_DUP_BITS}, flips included); held-out = "
                      f"crc32('{ds.SPLIT_SALT}' + group) % 100 < {ds.HELDOUT_PERCENT}; in {len(conflicts)} groups "
                      "the members' labels disagree: that output is masked in training and left out of held-out "
                      "scoring (the other output is kept)"},
            {"name": "Gomez et al. 2022 time-lapse embryos (EmbryoScope), annotated frames, every "
                     f"{GOMEZ_EVERY}rd frame; stage only", "licence": "CC BY 4.0",
             "split": "by embryo, same hash rule (group = embryo id)"},
            {"name": f"Gomez 2022 blastocyst crops (6 embryos), every {CROPS_EVERY}nd crop; stage only",
             "licence": "CC BY 4.0",
             "split": "by embryo, same hash rule"},
        ],
        "recipe": {"input_px": INPUT, "epochs": epochs, "edge_band_p": EDGE_BAND_P, "batch": 32,
                   "optimiser": "AdamW 3e-3, cosine decay", "keras_backend": keras_backend(),
                   "device": device},
        "notes": {"recipe_selection": f"input size, epochs and edge bands chosen among the recipes in "
                                      f"recipe_selection.jsonl by the mean over seeds of (Hung Vuong stage accuracy "
                                      f"+ EmbryoScope stage balanced accuracy + quality ROC-AUC) on an inner "
                                      f"{INNER_VALIDATION_PERCENT} % of the training groups; held-out groups were "
                                      "not used"},
        "train_counts": {f"{s}/{st}/{q}": n for (s, st, q), n in sorted(counts.items())},
        "conflicting_duplicate_groups": conflicts,
    }
    old = folder / "card.toml"
    if old.is_file():  # keep measured metrics of earlier evaluations of the same file only
        import tomllib

        prev = tomllib.loads(old.read_text())
        if prev.get("sha256") == file_sha256(path) and "metrics" in prev:
            card["metrics"] = prev["metrics"]
    write(folder, card)


# stored evaluations (README commands) -> the card's [metrics."<label>"] tables
CARD_EVALUATIONS = {"hungvuong-heldout": "hungvuong/heldout-groups",
                    "timelapse-heldout": "gomez-embryoscope/heldout-embryos",
                    # prepare_optics_sets: the same held-out photos pooled, as taken and under other optics
                    **{f"optics-{name}-heldout": label for name, label in OPTICS_TABLES.items()}}


def update_card_metrics(keys=("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "n")) -> None:
    """Copy the CARD_EVALUATIONS stored for this model file (eval/<name>/) into the card; others are left out."""
    from .evaluation import copy_evaluations_to_card

    def table(name: str, metrics: dict) -> dict:
        out = {}
        for output, m in metrics.items():
            for k in keys:
                if m.get(k) is not None:
                    out[f"{output}_{k}"] = round(m[k], 4) if isinstance(m[k], float) else m[k]
            for day, dm in (m.get("by_day") or {}).items():
                out[f"{output}_{day}_n"] = dm["n"]
                out[f"{output}_{day}_balanced_accuracy"] = round(dm["balanced_accuracy"], 4)
                if dm.get("roc_auc") is not None:
                    out[f"{output}_{day}_roc_auc"] = round(dm["roc_auc"], 4)
        return out

    copy_evaluations_to_card(GRADE_ID, CARD_EVALUATIONS, table, skip_stale=True)


def _rel(path: Path) -> str:
    from . import PROJECT_ROOT

    try:
        return os.path.relpath(Path(path).resolve(), PROJECT_ROOT)
    except ValueError:
        return str(path)


if __name__ == "__main__":  # python -m core.embryo_training select DATA PXxEPOCHS[eEDGE] ... [--seed N] [--views 1,4]
    args, seed, views = sys.argv[1:], 0, (TEST_VIEWS,)
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i:i + 2]
    if "--views" in args:
        i = args.index("--views")
        views = tuple(int(k) for k in args[i + 1].split(","))
        del args[i:i + 2]
    if len(args) >= 3 and args[0] == "select":
        recipes = [parse_recipe(r) for r in args[2:]]
        select_recipe(Path(args[1]), recipes, WEIGHTS_DIR / GRADE_ID / "recipe_selection.jsonl", seed, views)
    else:
        print(__doc__)

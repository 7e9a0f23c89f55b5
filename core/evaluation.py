"""Evaluation store and classification metrics.

`python -m core evaluate` writes weights/<id>/eval/<name>/ with:
  predictions.csv  one row per (item, output): item, output, true, pred, p:<label>..., plus subgroup columns
  metrics.json     {"model", "dataset", "n", "metrics": {output: {...}}}  (the CLI --json contract)
  meta.json        what was measured: data path and layout, split, n per class, model sha256, date, code version
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from . import PROJECT_ROOT, audit


def classification_metrics(y_true, probs: np.ndarray, labels: list[str], threshold: float = 0.5) -> dict:
    """Metrics of one output. Binary: positive = labels[1], decided at `threshold`; multi-class: argmax, macro."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    idx = np.array([labels.index(t) for t in y_true], dtype=int)
    binary = len(labels) == 2
    pred = (probs[:, 1] >= threshold).astype(int) if binary else probs.argmax(axis=1)
    out = {
        "n": int(len(idx)),
        "n_per_class": {lab: int((idx == i).sum()) for i, lab in enumerate(labels)},
        "accuracy": float(skm.accuracy_score(idx, pred)) if len(idx) else float("nan"),
        "balanced_accuracy": _balanced_accuracy(idx, pred, len(labels)),
        "labels": list(labels),
        "confusion_matrix": skm.confusion_matrix(idx, pred, labels=list(range(len(labels)))).tolist(),
    }
    avg = "binary" if binary else "macro"
    kw = {"pos_label": 1} if binary else {"labels": list(range(len(labels)))}
    out["precision"] = float(skm.precision_score(idx, pred, average=avg, zero_division=0, **kw))
    out["recall"] = float(skm.recall_score(idx, pred, average=avg, zero_division=0, **kw))
    out["f1"] = float(skm.f1_score(idx, pred, average=avg, zero_division=0, **kw))
    present = np.unique(idx)
    if binary:
        out["threshold"] = threshold
        out["roc_auc"] = float(skm.roc_auc_score(idx, probs[:, 1])) if len(present) == 2 else None
        if len(present) == 2:
            tn, fp, fn, tp = skm.confusion_matrix(idx, pred, labels=[0, 1]).ravel()
            out["sensitivity"] = float(tp / (tp + fn))
            out["specificity"] = float(tn / (tn + fp))
            out["pr_auc"] = float(skm.average_precision_score(idx, probs[:, 1]))
    else:
        if len(present) == len(labels):
            p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
            out["roc_auc"] = float(skm.roc_auc_score(idx, p, multi_class="ovr", labels=list(range(len(labels)))))
        else:
            out["roc_auc"] = None
    return out


def _balanced_accuracy(idx, pred, n_labels) -> float:
    """Mean recall over the classes present in the truth (sklearn's definition, without its warning)."""
    recalls = [float((pred[idx == c] == c).mean()) for c in range(n_labels) if (idx == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def readable(things: list, read) -> tuple[list, list, list[str]]:
    """The things whose image `read(thing)` decodes, those images, and a message for each of the others: one corrupt
    or empty file is listed (meta "skipped", which store() also logs), not the end of an evaluation."""
    from .imageio import ImageInputError

    kept, images, skipped = [], [], []
    for thing in things:
        try:
            images.append(read(thing))
            kept.append(thing)
        except (ImageInputError, OSError) as exc:
            skipped.append(str(exc))
    return kept, images, skipped


def predictions_frame(items: list[str], output: str, labels: list[str], y_true, probs, **columns) -> pd.DataFrame:
    """Per-item rows of one output in the store's layout (extra keyword columns, e.g. subgroup=[...])."""
    probs = np.asarray(probs)
    frame = pd.DataFrame({"item": items, "output": output, "true": list(y_true)})
    frame["pred"] = [labels[i] for i in probs.argmax(axis=1)]
    for i, lab in enumerate(labels):
        frame[f"p:{lab}"] = probs[:, i]
    for key, values in columns.items():
        frame[key] = values
    return frame


def cited_evaluations(card) -> set[str]:
    """The stored evaluations behind the card's figures (its tables' `evaluation`)."""
    return {table["evaluation"] for table in card.metrics.values() if (table or {}).get("evaluation")}


def kept_name(card, name: str, meta: dict) -> str:
    """The name to store an evaluation under: `name`, unless that is an evaluation the card cites and this one is of
    data the card does not document; then `name-<data hash>`, so that someone's own set (their MHSMA folder,
    evaluated without --name) never replaces the evidence behind the card's figures."""
    data = next((meta[k] for k in ("data_path", "data", "path") if meta.get(k)), None)
    data = data[0] if isinstance(data, list) and data else data
    if name not in cited_evaluations(card) or not (card.folder / "eval" / name).is_dir() or not isinstance(data, str) \
            or documents_card(data):
        return name
    other = f"{name}-{hashlib.sha1(str(Path(data).resolve()).encode()).hexdigest()[:8]}"
    print(f"eval/{name} holds the evaluation the model card cites: this one, of {data}, is stored as eval/{other}",
          file=sys.stderr)
    return other


def store(card, name: str, predictions: pd.DataFrame, metrics: dict, meta: dict) -> dict:
    """Write one evaluation of `card`'s model; returns the CLI's JSON object."""
    name = kept_name(card, name, meta)
    folder = card.folder / "eval" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / audit.AUDIT_FILE).unlink(missing_ok=True)  # a replaced evaluation must not keep the old one's audit
    n_items = int(predictions["item"].nunique()) if len(predictions) else int(meta.get("n", 0))
    result = {"model": card.id, "dataset": name, "n": n_items, "metrics": metrics}
    meta = {
        "model": card.id,
        "model_file": card.file,
        "model_sha256": card.sha256,
        "model_version": card.version,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        **meta,
    }
    if meta.get("skipped"):
        print(f"skipped {len(meta['skipped'])} unreadable image(s) (listed in {folder / 'meta.json'}): "
              + "; ".join(meta["skipped"][:3]) + (" …" if len(meta["skipped"]) > 3 else ""), file=sys.stderr)
    predictions.to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    if "phash" in predictions and (card.folder / audit.HASHES_FILE).is_file():
        audit.write_audit(card.folder, folder, predictions, card.classes)
    return result


def evaluate_classifier_outputs(card, name: str, frames: list[pd.DataFrame], meta: dict) -> dict:
    """Compute metrics per output from prediction rows and store them."""
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    metrics = {}
    for output, rows in predictions.groupby("output", sort=False):
        labels = card.classes[output]
        probs = rows[[f"p:{lab}" for lab in labels]].to_numpy()
        metrics[output] = classification_metrics(rows["true"].tolist(), probs, labels)
    return store(card, name, predictions, metrics, meta)


def documents_card(path) -> bool:
    """Whether an evaluation of this data may refresh the model card: only the shared data the card documents (or a
    set prepared from it in data_prepared/). An evaluation of anyone's own data is stored, never written into the
    card: `evaluate --split heldout` on an outside set overwrote the shipped figures."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in (PROJECT_ROOT.parent / "shared" / "data",
                                                                     PROJECT_ROOT / "data_prepared"))


def refreshes_card(card, key: str, name: str, path) -> bool:
    """Whether the evaluation `name` of `path` may write the card's [metrics."<key>"] table: the documented data
    (documents_card), and the table is new or was made by an evaluation of that name (a throw-away
    `--name audit-pcos` run repointed the shipped card at itself)."""
    made_by = (card.metrics.get(key) or {}).get("evaluation")
    return documents_card(path) and made_by in (None, name)


def copy_evaluations_to_card(model_id: str, names: dict[str, str], table, skip_stale: bool = False) -> None:
    """Copy stored evaluations (weights/<model_id>/eval/<name>, measured on this model file) into the card's
    [metrics."<label>"] tables: `names` maps eval name -> card label, `table(name, metrics)` builds one table, to
    which the evaluation's name is added.
    An evaluation missing or measured on another file raises, or with skip_stale is left out of the card."""
    import tomllib

    from . import WEIGHTS_DIR
    from .registry import write_card

    folder = WEIGHTS_DIR / model_id
    card = tomllib.loads((folder / "card.toml").read_text())
    card["metrics"] = {}
    for name, label in names.items():
        meta_path = folder / "eval" / name / "meta.json"
        if not meta_path.is_file() or json.loads(meta_path.read_text()).get("model_sha256") != card["sha256"]:
            if skip_stale:
                continue
            raise ValueError(f"eval/{name} is missing or was measured on another model file: evaluate again")
        stored = json.loads((folder / "eval" / name / "metrics.json").read_text())
        card["metrics"][label] = table(name, stored["metrics"]) | {"evaluation": name}
    write_card(folder, card)


def list_evaluations(card) -> list[str]:
    root = card.folder / "eval"
    return sorted(p.name for p in root.iterdir() if (p / "metrics.json").is_file()) if root.is_dir() else []


def load_evaluation(card, name: str) -> tuple[dict, dict, pd.DataFrame]:
    folder = card.folder / "eval" / name
    metrics = json.loads((folder / "metrics.json").read_text())
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").is_file() else {}
    path = folder / "predictions.csv"
    preds = pd.read_csv(path, dtype={"item": str, "true": str, "pred": str, "phash": str}) if path.is_file() else pd.DataFrame()
    return metrics, meta, preds


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


# --- evaluating an uploaded or local labelled set (Metrics page) ---------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MAX_UNZIPPED = 2 << 30
PATH_COLUMNS = ("path", "image", "imagepath", "file", "filename", "item")


class LabelledSetError(ValueError):
    """The given data is not a labelled set this model can be evaluated on; str(e) is meant for the user."""


def normalise_label(text) -> str:
    """'01_Normal' -> 'normal', 'Not good' -> 'not_good'."""
    import re

    t = re.sub(r"^[\d\s._-]+", "", str(text).strip().lower())
    return re.sub(r"[\s-]+", "_", t)


def _output_for(labels: set[str], classes: dict[str, list[str]]) -> str:
    for output, known in classes.items():
        if labels <= set(known):
            return output
    known = "; ".join(f"{o}: {', '.join(ls)}" for o, ls in classes.items())
    raise LabelledSetError(f"the labels {', '.join(sorted(labels))} do not match this model's outputs ({known})")


class _Source:
    """Files of a folder or of a zip (bytes), by relative path."""

    def __init__(self, label: str, root: Path | None = None, archive=None, names: list[str] | None = None):
        self.label, self.root, self.zip = label, root, archive
        if names is not None:
            self.names = names
        elif archive is not None:
            self.names = sorted(n for n in archive.namelist()
                                if not n.endswith("/") and "__MACOSX" not in n and not Path(n).name.startswith("."))
        else:
            self.names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    @classmethod
    def open(cls, source, name: str | None = None) -> "_Source":
        import io
        import zipfile

        from .imageio import open_zip

        if isinstance(source, (str, Path)):
            path = Path(source).expanduser()
            if path.is_dir():
                return cls(str(path.resolve()), root=path.resolve())
            if not path.is_file():
                raise LabelledSetError(f"{path}: no such folder or file")
            data, label = path.read_bytes(), path.name
        else:
            data = bytes(source) if isinstance(source, (bytes, bytearray)) else source.getvalue()
            label = name or getattr(source, "name", "upload")
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise LabelledSetError(f"{label}: not a zip file, a CSV or a folder")
        archive = open_zip(io.BytesIO(data))
        if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED:
            raise LabelledSetError(f"{label}: unpacks to more than {MAX_UNZIPPED >> 30} GB; evaluate it as a folder")
        return cls(label, archive=archive)

    def bytes(self, name: str) -> bytes:
        return self.zip.read(name) if self.zip else (self.root / name).read_bytes()

    def read(self, name: str):
        return self.zip.read(name) if self.zip else self.root / name

    def item(self, name: str) -> str:
        return f"{self.label}!/{name}" if self.zip else str(self.root / name)


def labelled_items(source, classes: dict[str, list[str]], name: str | None = None) -> tuple[_Source, list[str], dict, str]:
    """Images of a labelled set and their truth: (source, names, {output: [label or None per image]}, layout).

    Class-per-folder (the folder holding each image is its label), or a CSV of image paths with a `label` column or
    one column per model output; a CSV may be given alone, with paths absolute or relative to it."""
    label = str(source) if isinstance(source, (str, Path)) else (name or getattr(source, "name", "upload"))
    if label.lower().endswith(".csv"):
        if isinstance(source, (str, Path)):
            path = Path(source).expanduser().resolve()
            if not path.is_file():
                raise LabelledSetError(f"{path}: no such file")
            data, root = path.read_bytes(), path.parent
        else:
            data, root = source.getvalue(), Path.cwd()
        return _from_csv(_Source(label, root=root, names=[]), data, "", classes)
    src = _Source.open(source, name)
    csvs = [n for n in src.names if n.lower().endswith(".csv")]
    images = [n for n in src.names if n.lower().endswith(IMAGE_SUFFIXES)]
    if len(csvs) == 1:
        parent = str(Path(csvs[0]).parent)
        try:
            return _from_csv(src, src.bytes(csvs[0]), "" if parent == "." else parent, classes)
        except LabelledSetError:
            if not images:
                raise
    if not images:
        raise LabelledSetError(f"{src.label}: no images found (accepted: {', '.join(IMAGE_SUFFIXES)})")
    images = [n for n in images if normalise_label(Path(n).parent.name)]  # loose files have no class folder
    folder_labels = [normalise_label(Path(n).parent.name) for n in images]
    if not images:
        raise LabelledSetError(f"{src.label}: images must sit in one folder per class (e.g. good/, not_good/), "
                               "or come with a CSV of paths and labels")
    output = _output_for(set(folder_labels), classes)
    return src, images, {output: folder_labels}, "class-per-folder"


def _from_csv(src: _Source, data: bytes, prefix: str, classes: dict) -> tuple[_Source, list[str], dict, str]:
    import io

    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LabelledSetError(f"the CSV could not be read ({exc})") from None
    lower = {c.lower().strip(): c for c in table.columns}
    path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), table.columns[0])
    label_cols = {o: lower[o.lower()] for o in classes if o.lower() in lower}
    if not label_cols:
        col = lower.get("label") or lower.get("class")
        if col is None or len(table.columns) < 2:
            raise LabelledSetError("the CSV needs a column of image paths and a `label` column (or one per output: "
                                   + ", ".join(classes) + ")")
        label_cols = {_output_for(set(table[col].dropna().map(normalise_label)), classes): col}
    names = [p if Path(p).is_absolute() or not prefix else f"{prefix}/{p}" for p in table[path_col].astype(str)]
    if src.zip:
        by_base = {Path(n).name: n for n in src.names}
        names = [n if n in src.names else by_base.get(Path(n).name, n) for n in names]
    truth = {}
    for output, col in label_cols.items():
        labels = [normalise_label(v) if isinstance(v, str) and v.strip() else None for v in table[col]]
        unknown = {lab for lab in labels if lab is not None} - set(classes[output])
        if unknown:
            raise LabelledSetError(f"unknown {output} labels {', '.join(sorted(unknown))}; expected "
                                   + ", ".join(classes[output]))
        truth[output] = labels
    return src, names, truth, "CSV of paths and labels"


def evaluate_labelled(model_id: str, source, name: str | None = None, progress=None, device: str | None = None,
                      predict=None, batch_size: int = 16, registry=None, replace: bool = True) -> dict:
    """Evaluate a classifier on a labelled zip, folder or CSV and store it like `python -m core evaluate`.

    progress(done, total) is called after each batch; `predict(images: list[InputImage]) -> list[Prediction]`
    defaults to the model's task module. Unreadable images are skipped and listed in meta.json.
    replace=False stores under a free name (name-2, name-3 …) instead of replacing an evaluation of that name."""
    from . import registry as default_registry
    from .imageio import ImageInputError, read_image

    card = (registry or default_registry).card(model_id)
    if predict is None:
        from .tasks import task_module

        module = task_module(model_id)
        predict = lambda images: module.predict_images(model_id, images, device=device)  # noqa: E731
    src, names, truth, layout = labelled_items(source, card.classes, name=getattr(source, "name", None))
    if not names:
        raise LabelledSetError(f"{src.label}: the set lists no images")
    name = _safe_name(name or Path(src.label).stem)
    name = name if replace else free_name(card, name)
    frames_rows: dict[str, list] = {o: [] for o in truth}
    skipped = []
    total = len(names)
    for start in range(0, total, batch_size):
        batch, idx = [], []
        for i in range(start, min(start + batch_size, total)):
            try:
                batch.append(read_image(src.read(names[i]), name=names[i]))
                idx.append(i)
            except (ImageInputError, KeyError, OSError) as exc:
                skipped.append(f"{names[i]}: {exc}")
        for i, image, pred in zip(idx, batch, predict(batch) if batch else []):
            hexhash = f"{audit.phash(image.pixels):016x}"
            for output, labels in truth.items():
                if labels[i] is not None and output in pred.probabilities:
                    probs = [pred.probabilities[output].get(lab, np.nan) for lab in card.classes[output]]
                    frames_rows[output].append((src.item(names[i]), labels[i], probs, hexhash))
        if progress:
            progress(min(start + batch_size, total), total)
    frames = []
    for output, rows in frames_rows.items():
        if rows:
            items, y, probs, hashes = zip(*rows)
            frames.append(predictions_frame(list(items), output, card.classes[output], list(y), np.array(probs),
                                            phash=list(hashes)))
    if not frames:
        raise LabelledSetError(f"{src.label}: none of the {total} images could be evaluated"
                               + (f" (first problem: {skipped[0]})" if skipped else ""))
    n_per_class = {o: {lab: int(sum(1 for r in rows if r[1] == lab)) for lab in card.classes[o]}
                   for o, rows in frames_rows.items() if rows}
    meta = {"data_path": src.label, "layout": layout, "split": "all (uploaded set)", "n_per_class": n_per_class,
            "skipped": skipped, "source": "labelled set evaluated from the Metrics page"}
    return evaluate_classifier_outputs(card, name, frames, meta)


def _safe_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "upload"


def free_name(card, name: str) -> str:
    """name, or the first of name-2, name-3 … that no stored evaluation of the card's model uses."""
    taken = set(list_evaluations(card))
    return name if name not in taken else next(f"{name}-{k}" for k in range(2, 10_000) if f"{name}-{k}" not in taken)


def evaluate_source(model_id: str, source, name: str | None = None, progress=None, device: str | None = None,
                    replace: bool = True) -> dict:
    """A folder or zip: first as a native dataset layout by the task's own evaluator (as `python -m core evaluate`
    reads a folder: a zipped HuSHeM set lost its normal/abnormal output and out-of-fold predictions in the generic
    reader), else as a labelled set (see evaluate_labelled; with progress). replace=False never overwrites a stored
    evaluation."""
    import tempfile

    from . import registry
    from .tasks import task_module

    module = task_module(model_id)

    def native(root: Path, label: str) -> dict:
        final = _safe_name(name or Path(label).stem)
        final = final if replace else free_name(registry.card(model_id), final)
        return module.evaluate(model_id, root, name=final, split=None, device=device)

    def either(root: Path, label: str, labelled) -> dict:
        native_error = "it has no evaluator of its own"
        try:
            if hasattr(module, "evaluate"):  # a model dropped into weights/ may have no task module of its own
                return native(root, label)
        except Exception as exc:  # noqa: BLE001 - not its layout (or it cannot run here): the labelled reader's turn
            native_error = str(exc.args[0] if exc.args else exc).replace(str(root), label)  # not a temp folder's path
        try:
            return evaluate_labelled(model_id, labelled, name=name, progress=progress, device=device, replace=replace)
        except LabelledSetError as exc:
            raise LabelledSetError(f"{exc}; nor is it a dataset layout the {model_id} evaluator reads "
                                   f"({native_error})") from None

    if isinstance(source, (str, Path)) and Path(source).expanduser().is_dir():
        path = Path(source).expanduser().resolve()
        result = either(path, path.name, source)
    else:
        try:
            src = _Source.open(source, getattr(source, "name", None))
        except LabelledSetError:  # not a zip: a CSV is read as a labelled set, anything else refused there
            return evaluate_labelled(model_id, source, name=name, progress=progress, device=device, replace=replace)
        with tempfile.TemporaryDirectory(prefix="eval-upload-") as tmp:
            src.zip.extractall(tmp)
            entries = [p for p in Path(tmp).iterdir() if not p.name.startswith((".", "__MACOSX"))]
            result = either(entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp), src.label, source)
    if progress:
        progress(1, 1)
    return result

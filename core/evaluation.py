"""Evaluation store and classification metrics.

`python -m core evaluate` writes weights/<id>/eval/<name>/ with:
  predictions.csv  one row per (item, output): item, output, true, pred, p:<label>..., plus subgroup columns
  metrics.json     {"model", "dataset", "n", "metrics": {output: {...}}}  (the CLI --json contract)
  meta.json        what was measured: data path and layout, split, n per class, model sha256, date, code version
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from . import PROJECT_ROOT


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


def store(card, name: str, predictions: pd.DataFrame, metrics: dict, meta: dict) -> dict:
    """Write one evaluation of `card`'s model; returns the CLI's JSON object."""
    folder = card.folder / "eval" / name
    folder.mkdir(parents=True, exist_ok=True)
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
    predictions.to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
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


def list_evaluations(card) -> list[str]:
    root = card.folder / "eval"
    return sorted(p.name for p in root.iterdir() if (p / "metrics.json").is_file()) if root.is_dir() else []


def load_evaluation(card, name: str) -> tuple[dict, dict, pd.DataFrame]:
    folder = card.folder / "eval" / name
    metrics = json.loads((folder / "metrics.json").read_text())
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").is_file() else {}
    preds = pd.read_csv(folder / "predictions.csv") if (folder / "predictions.csv").is_file() else pd.DataFrame()
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

"""One prediction object per input. summary() is its only serialisation; tables, CSV, JSON and records derive from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


# the keys summary() always writes; the rest of a summary are the task's own results (extras)
SUMMARY_FACTS = frozenset({"model", "version", "input", "input_sha256", "labels", "probabilities", "thresholds",
                           "timings_ms"})


@dataclass(frozen=True)
class Wording:
    """How a model's outputs and labels read to a clinician (a card's [display] table). Records, CSV and JSON keep
    the model's own names; only what people read is reworded."""
    titles: dict[str, str] = field(default_factory=dict)  # output -> title
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # output -> label -> wording
    value: str = "probability"  # what the output's numbers are

    def title(self, output: str) -> str:
        return self.titles.get(output, str(output).replace("_", " "))

    def says(self, output: str, label) -> str:
        """A label as a reader sees it: the card's wording, else "not_good" -> "not good"."""
        return self.labels.get(output, {}).get(label, str(label).replace("_", " "))


def decide(probs: dict[str, float], threshold: float | None = None) -> str:
    """The label shown: a binary output's second label from its decision threshold on, else the most probable."""
    labels = list(probs)
    if len(labels) == 2 and threshold is not None:
        return labels[1] if probs[labels[1]] >= threshold else labels[0]
    return max(probs, key=probs.get)


@dataclass
class Prediction:
    model_id: str
    model_version: str
    input_name: str
    input_sha256: str = ""
    # output -> label -> probability
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    # output -> decision threshold on the probability of the output's second label (binary outputs)
    thresholds: dict[str, float] = field(default_factory=dict)
    # task-specific JSON-able parts (boxes, heads, follicles, per-frame stages, events ...)
    extras: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # images for display only, never serialised (overlays, heat maps)
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def label(self, output: str) -> str:
        return decide(self.probabilities[output], self.thresholds.get(output))

    def labels(self) -> dict[str, str]:
        return {o: self.label(o) for o in self.probabilities}

    def summary(self) -> dict:
        return {
            "model": self.model_id,
            "version": self.model_version,
            "input": self.input_name,
            "input_sha256": self.input_sha256,
            "labels": self.labels(),
            "probabilities": {o: {k: round(float(v), 6) for k, v in p.items()} for o, p in self.probabilities.items()},
            "thresholds": self.thresholds,
            **_jsonable(self.extras),
            "timings_ms": {k: round(float(v), 2) for k, v in self.timings_ms.items()},
        }

    def flat(self) -> dict:
        """One flat row (for tables and CSV)."""
        row = {"input": self.input_name, "input_sha256": self.input_sha256, "model": self.model_id,
               "version": self.model_version}
        for output, probs in self.probabilities.items():
            row[output] = self.label(output)
            for label, p in probs.items():
                row[f"p_{output}_{label}"] = round(float(p), 4)
            if output in self.thresholds:
                row[f"threshold_{output}"] = self.thresholds[output]
        return row | flat_results(self.extras)


def flat_results(results: dict) -> dict:
    """A prediction's own results as columns: scalars as they are, each 95 % interval as _low and _high, and what the
    page warned of with it in one `warnings` column (lists of objects stay in the record's JSON)."""
    row = {k: v for k, v in results.items() if isinstance(v, (int, float, str, bool)) or v is None}
    for k, v in results.items():
        if k.startswith("ci95_") and isinstance(v, (list, tuple)) and len(v) == 2:
            row[f"{k}_low"], row[f"{k}_high"] = v
    notes = list(results.get("warnings") or []) + list((results.get("caveats") or {}).values())
    if notes:
        row["warnings"] = " | ".join(map(str, notes))
    return row


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_bytes(frame) -> bytes:
    """A table as the CSV every download gives: UTF-8, no index, formula-like cells quoted."""
    return spreadsheet_safe(frame).to_csv(index=False).encode("utf-8")


def spreadsheet_safe(frame):
    """The table with text cells a spreadsheet would run as a formula (an upload named '=HYPERLINK(…).jpg') quoted
    with a leading apostrophe."""
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START)).any():
            out[column] = out[column].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj

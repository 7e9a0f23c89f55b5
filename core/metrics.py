"""Metrics of stored evaluations with uncertainty: bootstrap 95 % CIs, ROC/PR curves, calibration (ECE),
decision thresholds, subgroups, segmentation/detection and time-lapse summaries.

Every metric is computed from per-item weights so one vectorised pass gives the point estimate (weights 1) and
all bootstrap resamples (weights = how often each item was drawn). Items are resampled within each true class
(stratified, as pROC does for AUC), or whole groups are resampled when items are clustered (frames of one embryo).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc")
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "ece": "Expected calibration error",
}
# Columns of predictions.csv that are never subgroups.
RESERVED = {"item", "output", "true", "pred", "decoded", "phash", "path", "name", "frame", "hours", "time_h", "split"}
N_BOOT = 1000
MIN_GROUPS = 10  # a cluster bootstrap over fewer groups (embryos, patients) gives no usable interval
GROUP_COLUMNS = ("embryo", "patient", "group")  # clustered items: resample these whole


@dataclass
class OutputData:
    """One classification output of an evaluation: truth as label indices, probabilities (N, K), items."""

    output: str
    labels: list[str]
    y: np.ndarray
    probs: np.ndarray
    rows: pd.DataFrame  # the predictions rows, aligned with y/probs

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    def groups(self) -> np.ndarray | None:
        """Cluster ids for the bootstrap when the rows carry one (e.g. the embryo of each frame), also when they all
        share one: the frames of one embryo must not be resampled as if independent."""
        for col in GROUP_COLUMNS:
            if col in self.rows and self.rows[col].nunique() > 0:
                return self.rows[col].astype(str).to_numpy()
        return None

    def subset(self, mask) -> "OutputData":
        mask = np.asarray(mask, dtype=bool)
        return OutputData(self.output, self.labels, self.y[mask], self.probs[mask], self.rows[mask].reset_index(drop=True))


def output_data(predictions: pd.DataFrame, output: str, labels: list[str] | None = None) -> OutputData:
    """The rows of one output; rows without a known true label (or a missing probability) are left out."""
    rows = predictions[predictions["output"] == output] if "output" in predictions else predictions
    if rows.empty:  # e.g. an evaluation set that labels only another output of the same model
        labels = list(labels or [])
        return OutputData(output, labels, np.zeros(0, int), np.zeros((0, len(labels))), rows.reset_index(drop=True))
    if labels is None:
        labels = [c[2:] for c in rows.columns if c.startswith("p:") and rows[c].notna().any()]
    cols = [f"p:{lab}" for lab in labels]
    missing = [c for c in cols if c not in rows]
    if missing:
        raise ValueError(f"predictions of {output!r} lack the columns {', '.join(missing)}")
    truth = rows["true"].astype(str)
    keep = truth.isin(labels) & rows[cols].notna().all(axis=1)
    rows = rows[keep].reset_index(drop=True)
    y = np.array([labels.index(t) for t in rows["true"].astype(str)], dtype=int)
    return OutputData(output, list(labels), y, rows[cols].to_numpy(dtype=np.float64), rows)


def classification_outputs(predictions: pd.DataFrame) -> list[str]:
    """Outputs of an evaluation that carry per-item probabilities (classification)."""
    if predictions.empty or "output" not in predictions or "true" not in predictions:
        return []
    pcols = [c for c in predictions.columns if c.startswith("p:")]
    return [o for o, rows in predictions.groupby("output", sort=False) if rows[pcols].notna().any().sum() >= 2]


# --- decisions ---------------------------------------------------------------------------------------------------
def decide(probs: np.ndarray, threshold: float | None = None, positive: int | None = None) -> np.ndarray:
    """Predicted label index per row.

    Binary: the second label when its probability >= threshold (default 0.5). Multi-class: the highest
    probability, or, with a threshold, `positive` when its probability >= threshold and otherwise the most
    probable of the other labels. For two labels both rules agree.
    """
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if k == 2:
        positive = 1 if positive is None else positive
        threshold = 0.5 if threshold is None else threshold
    if threshold is None or positive is None:
        return probs.argmax(axis=1)
    others = probs.copy()
    others[:, positive] = -np.inf
    return np.where(probs[:, positive] >= threshold, positive, others.argmax(axis=1))


def confusion(y: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    return skm.confusion_matrix(y, pred, labels=list(range(n_labels)))


def row_normalise(cm: np.ndarray) -> np.ndarray:
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.full(cm.shape, np.nan), where=sums > 0)


# --- weighted metrics (point estimate and bootstrap in one pass) ----------------------------------------------------
def _div(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b > 0)


def _auc_ap(score: np.ndarray, ybin: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC (ties count half) and average precision (sklearn's definition) for each row of weights W."""
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # groups of tied scores, descending
    Wo = W[:, order]
    pos = np.add.reduceat(Wo * ybin[order], starts, axis=1)
    neg = np.add.reduceat(Wo * (1 - ybin[order]), starts, axis=1)
    P, N = pos.sum(axis=1), neg.sum(axis=1)
    cum_neg = np.cumsum(neg, axis=1)
    auc = _div((pos * (N[:, None] - cum_neg + 0.5 * neg)).sum(axis=1), P * N)
    tp, fp = np.cumsum(pos, axis=1), cum_neg
    precision = _div(tp, tp + fp)
    ap = _div((np.nan_to_num(precision) * pos).sum(axis=1), P)  # sum of (R_k - R_{k-1}) * P_k
    return auc, ap


def _metric_rows(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, W: np.ndarray, positive: int | None) -> dict:
    """Every metric for each row of weights W (B, n) -> {metric: (B,) array}."""
    k = probs.shape[1]
    total = W.sum(axis=1)
    onehot_y = np.eye(k)[y]
    onehot_p = np.eye(k)[pred]
    support = W @ onehot_y  # (B, k) weighted count of each true class
    predicted = W @ onehot_p
    tp = W @ (onehot_y * onehot_p)
    fn, fp = support - tp, predicted - tp
    tn = total[:, None] - tp - fn - fp
    recall = _div(tp, support)
    spec = _div(tn, tn + fp)
    prec = _div(tp, tp + fp)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    present = support > 0
    out = {
        "accuracy": _div(tp.sum(axis=1), total),
        "balanced_accuracy": _div(np.where(present, np.nan_to_num(recall), 0).sum(axis=1), present.sum(axis=1)),
    }
    aucs, aps = zip(*(_auc_ap(probs[:, c], (y == c).astype(np.float64), W) for c in range(k)))
    aucs, aps = np.stack(aucs, axis=1), np.stack(aps, axis=1)
    if k == 2 or positive is not None:
        c = 1 if positive is None else positive
        out.update(sensitivity=recall[:, c], specificity=spec[:, c], precision=prec[:, c], f1=f1[:, c],
                   roc_auc=aucs[:, c], pr_auc=aps[:, c])
    else:  # macro averages over the labels (an absent class leaves its AUC undefined, as sklearn does)
        out.update(sensitivity=_nanmean(np.where(present, recall, np.nan)), specificity=_nanmean(spec),
                   precision=np.nan_to_num(prec).mean(axis=1), f1=np.nan_to_num(f1).mean(axis=1),
                   roc_auc=np.where(present.all(axis=1), aucs.mean(axis=1), np.nan),
                   pr_auc=np.where(present.all(axis=1), aps.mean(axis=1), np.nan))
    return out


def _nanmean(a: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(a)
    return _div(np.where(valid, a, 0).sum(axis=1), valid.sum(axis=1))


def point_metrics(y, probs, threshold: float | None = None, positive: int | None = None) -> dict[str, float]:
    """Each metric on the data as it is (binary: of the positive label; multi-class: macro, or one label vs rest)."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    pred = decide(probs, threshold, positive)
    rows = _metric_rows(y, probs, pred, np.ones((1, len(y))), positive if threshold is not None else None)
    return {m: float(v[0]) for m, v in rows.items()}


def bootstrap_weights(n: int, n_boot: int, seed: int = 0, strata=None, groups=None) -> np.ndarray:
    """(n_boot, n) draw counts: resample whole groups when given, otherwise items within each stratum."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        uniq, gidx = np.unique(np.asarray(groups), return_inverse=True)
        g = len(uniq)
        draws = rng.integers(0, g, (n_boot, g)) + g * np.arange(n_boot)[:, None]
        counts = np.bincount(draws.ravel(), minlength=n_boot * g).reshape(n_boot, g)
        return counts[:, gidx].astype(np.float64)
    strata = np.zeros(n, dtype=int) if strata is None else np.asarray(strata)
    W = np.zeros((n_boot, n))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        m = len(idx)
        draws = rng.integers(0, m, (n_boot, m)) + m * np.arange(n_boot)[:, None]
        W[:, idx] = np.bincount(draws.ravel(), minlength=n_boot * m).reshape(n_boot, m)
    return W


def _resamples(groups, n_boot: int) -> int:
    """No resamples (no interval) when the items come from fewer than MIN_GROUPS groups."""
    return 0 if groups is not None and len(np.unique(groups)) < MIN_GROUPS else n_boot


def metrics_with_ci(data: OutputData, threshold: float | None = None, positive: int | None = None,
                    n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95, clustered: bool = True) -> pd.DataFrame:
    """One row per metric: estimate and the percentile bootstrap CI at `level` (NaN where undefined)."""
    pos = positive if (threshold is not None or data.binary) else None
    pred = decide(data.probs, threshold, positive)
    groups = data.groups() if clustered else None
    n_groups = len(np.unique(groups)) if groups is not None else None
    n_boot = _resamples(groups, n_boot)
    W = np.vstack([np.ones(data.n), bootstrap_weights(data.n, n_boot, seed, strata=data.y, groups=groups)])
    values = _metric_rows(data.y, data.probs, pred, W, pos)
    conf, correct = calibration_inputs(data, threshold, positive)
    values["ece"] = _ece_rows(conf, correct, W)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    rows = []
    for m in (*METRICS, "ece"):
        v = values[m]
        boot = v[1:][~np.isnan(v[1:])]
        lo, hi = (np.percentile(boot, [lo_q, hi_q]) if len(boot) >= 20 else (np.nan, np.nan))
        rows.append({"metric": m, "name": METRIC_NAMES[m], "estimate": float(v[0]), "low": float(lo), "high": float(hi)})
    frame = pd.DataFrame(rows)
    frame.attrs.update(n=data.n, n_boot=n_boot, level=level, resampled="groups" if groups is not None else "items",
                       n_groups=n_groups)
    return frame


def bootstrap_note(table: pd.DataFrame) -> str:
    """How a metrics_with_ci table's intervals were made, in a sentence."""
    n_groups = table.attrs.get("n_groups")
    if n_groups is not None and n_groups < MIN_GROUPS:
        return (f"No intervals: the images come from {n_groups} embryos or patients, too few to resample "
                f"(at least {MIN_GROUPS} needed); frames of one embryo are not independent, so the estimates are "
                "much less certain than the number of images suggests. ")
    what = f"{n_groups} whole groups (embryos or patients)" if n_groups else "images within each true class"
    return f"Bootstrap over {what} ({table.attrs['n_boot']} resamples). "


def ece_interval_note(table: pd.DataFrame) -> str:
    """A sentence for tables whose ECE interval misses its estimate (else ""): a resample repeats items, which adds
    calibration noise, so bootstrapped ECE runs high."""
    row = table.set_index("metric").loc["ece"]
    if np.isnan(row["low"]) or row["low"] <= row["estimate"] <= row["high"]:
        return ""
    return ("The ECE interval lies above its estimate: ECE on a bootstrap resample (items repeated) is biased upward, "
            "so read that interval as the spread, not the location. ")


def format_ci(row) -> str:
    if np.isnan(row["estimate"]):
        return "—"
    if np.isnan(row["low"]):
        return f"{row['estimate']:.3f}"
    return f"{row['estimate']:.3f} ({row['low']:.3f}–{row['high']:.3f})"


# cards keep 4 decimals; shown as kept, since rounding them again can differ from the evaluation's own 3 decimals
HEADLINE = {"balanced_accuracy": "balanced accuracy {:.4g}", "roc_auc": "ROC-AUC {:.4g}", "accuracy": "accuracy {:.4g}",
            "mask_map50": "mask mAP50 {:.4g}", "mean_dice": "mean Dice {:.4g}", "map50": "mAP50 {:.4g}",
            "count_mae": "count error {:.2f} per image", "median_abs_error_frames_t2_t5": "t2–t5 median error {:g} frames"}
BY_FOLD_MODELS = ("fold", "-cv", "leave-one")  # cross-validation sets: made by fold models, not the shipped file


def headline(card, limit: int = 4) -> tuple[str, str] | None:
    """A model's headline: its first measured set that is real (not generated), preferring the shipped file's own
    held-out sets to cross-validation by fold models, with its main figures in HEADLINE's order (balanced accuracy
    before plain accuracy: a lopsided set flatters the latter) and n, e.g. ("hungvuong/heldout-groups",
    "stage balanced accuracy 0.887 · quality balanced accuracy 0.706 · …"). None when nothing fits."""
    tables = [(d, v) for d, v in card.metrics.items() if "generated" not in d and isinstance(v, dict)]
    tables.sort(key=lambda t: any(w in t[0] for w in BY_FOLD_MODELS))
    for dataset, values in tables:
        shown = [f"{output} {fmt.format(values[key])}".strip() for base, fmt in HEADLINE.items()
                 for output in ("", *card.outputs) if _number(values.get(key := f"{output}_{base}" if output else base))]
        if shown:
            counts = {k.removesuffix("_n"): values[k] for k in ("n", "n_images", *(f"{o}_n" for o in card.outputs))
                      if _number(values.get(k))}
            n = ("" if not counts else f" · n = {counts.popitem()[1]}" if len(set(counts.values())) == 1
                 else " · n = " + ", ".join(f"{v} ({o})" for o, v in counts.items()))
            return dataset, " · ".join(shown[:limit]) + n
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- curves and calibration ----------------------------------------------------------------------------------------
def positive_index(data: OutputData, positive: int | None) -> int:
    return 1 if positive is None and data.binary else (positive or 0)


def roc_curve(data: OutputData, positive: int | None = None) -> pd.DataFrame:
    c = positive_index(data, positive)
    fpr, tpr, thr = skm.roc_curve(data.y == c, data.probs[:, c])
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thr, 1.0)})


def pr_curve(data: OutputData, positive: int | None = None) -> pd.DataFrame:
    c = positive_index(data, positive)
    prec, rec, thr = skm.precision_recall_curve(data.y == c, data.probs[:, c])
    return pd.DataFrame({"recall": rec, "precision": prec, "threshold": np.r_[thr, np.nan]})


def operating_point(data: OutputData, threshold: float | None, positive: int | None = None) -> dict:
    """Sensitivity, 1 - specificity and precision of the positive label at the current decision rule."""
    c = positive_index(data, positive)
    pred = decide(data.probs, threshold, positive if positive is not None else (1 if data.binary else None))
    truth, called = data.y == c, pred == c
    tp, fp = int((truth & called).sum()), int((~truth & called).sum())
    fn, tn = int((truth & ~called).sum()), int((~truth & ~called).sum())
    return {"tpr": tp / (tp + fn) if tp + fn else np.nan, "fpr": fp / (fp + tn) if fp + tn else np.nan,
            "precision": tp / (tp + fp) if tp + fp else np.nan, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def calibration_inputs(data: OutputData, threshold: float | None = None, positive: int | None = None):
    """Binary (or one label vs rest): the positive label's probability against its truth.
    Multi-class: the confidence of the decided label against whether it was right."""
    if data.binary or (positive is not None and threshold is not None):
        c = positive_index(data, positive)
        return data.probs[:, c], (data.y == c).astype(np.float64)
    pred = decide(data.probs, threshold, positive)
    return data.probs[np.arange(data.n), pred], (pred == data.y).astype(np.float64)


def _bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip(np.digitize(conf, np.linspace(0, 1, n_bins + 1)[1:-1], right=True), 0, n_bins - 1)


def _ece_rows(conf, correct, W, n_bins: int = 10) -> np.ndarray:
    onehot = np.eye(n_bins)[_bins(conf, n_bins)]
    gap = np.abs(W @ (onehot * correct[:, None]) - W @ (onehot * conf[:, None])).sum(axis=1)
    return _div(gap, W.sum(axis=1))


def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> tuple[pd.DataFrame, float]:
    """Equal-width bins: count, mean predicted probability, observed frequency; and the ECE."""
    b = _bins(np.asarray(conf, dtype=np.float64), n_bins)
    edges = np.linspace(0, 1, n_bins + 1)
    frame = pd.DataFrame({"bin": b, "conf": conf, "correct": correct}).groupby("bin").agg(
        n=("conf", "size"), mean_predicted=("conf", "mean"), observed=("correct", "mean")).reset_index()
    frame["low"], frame["high"] = edges[frame["bin"]], edges[frame["bin"] + 1]
    ece = float((frame["n"] * (frame["observed"] - frame["mean_predicted"]).abs()).sum() / max(len(conf), 1))
    return frame, ece


# --- per class, subgroups ------------------------------------------------------------------------------------------
def per_class(data: OutputData, threshold: float | None = None, positive: int | None = None,
              n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per label: n, recall (for time-lapse: per-stage accuracy) with CI, precision, specificity, F1, one-vs-rest AUC."""
    pred = decide(data.probs, threshold, positive)
    groups = data.groups()
    n_boot = _resamples(groups, n_boot)
    W = np.vstack([np.ones(data.n), bootstrap_weights(data.n, n_boot, seed, strata=data.y, groups=groups)])
    rows = []
    for c, label in enumerate(data.labels):
        m = _metric_rows(data.y, data.probs, pred, W, c)
        boot = m["sensitivity"][1:][~np.isnan(m["sensitivity"][1:])]
        lo, hi = np.percentile(boot, [2.5, 97.5]) if len(boot) >= 20 else (np.nan, np.nan)
        rows.append({"label": label, "n": int((data.y == c).sum()), "recall": m["sensitivity"][0],
                     "recall_low": lo, "recall_high": hi, "precision": m["precision"][0],
                     "specificity": m["specificity"][0], "f1": m["f1"][0], "roc_auc": m["roc_auc"][0]})
    return pd.DataFrame(rows)


def subgroup_columns(predictions: pd.DataFrame) -> list[str]:
    """Columns that split the items into a few named groups (day, stain, embryo ...)."""
    cols = []
    for col in predictions.columns:
        if col in RESERVED or col.startswith("p:") or predictions[col].dtype.kind == "f":
            continue
        k = predictions[col].nunique(dropna=True)
        if 2 <= k <= 50 and k < len(predictions):
            cols.append(col)
    return cols


def subgroup_table(data: OutputData, column: str, threshold: float | None = None, positive: int | None = None,
                   n_boot: int = 300, seed: int = 0) -> pd.DataFrame:
    rows = []
    for value, idx in data.rows.groupby(column, sort=True).indices.items():
        sub = data.subset(np.isin(np.arange(data.n), idx))
        table = metrics_with_ci(sub, threshold, positive, n_boot=n_boot, seed=seed).set_index("metric")
        row = {column: value, "n": sub.n, **{lab: int((sub.y == i).sum()) for i, lab in enumerate(sub.labels)}}
        for m in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc"):
            row[METRIC_NAMES[m]] = format_ci(table.loc[m])
        rows.append(row)
    return pd.DataFrame(rows)


# --- comparing two evaluations ---------------------------------------------------------------------------------------
def compare(a: OutputData, b: OutputData, threshold_a=None, threshold_b=None, positive=None,
            n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Metrics of two evaluations side by side; where both scored the same items, the paired difference (B - A)
    with its bootstrap CI (same resamples for both)."""
    ta = metrics_with_ci(a, threshold_a, positive, n_boot=n_boot, seed=seed).set_index("metric")
    tb = metrics_with_ci(b, threshold_b, positive, n_boot=n_boot, seed=seed).set_index("metric")
    frame = pd.DataFrame({"metric": [METRIC_NAMES[m] for m in ta.index],
                          "A": [format_ci(ta.loc[m]) for m in ta.index],
                          "B": [format_ci(tb.loc[m]) for m in ta.index]})
    ia, ib = a.rows["item"].astype(str), b.rows["item"].astype(str)
    common = sorted(set(ia) & set(ib))
    frame.attrs["n_common"] = len(common)
    if len(common) >= 10 and a.labels == b.labels:
        pa = a.subset(ia.isin(common).to_numpy())
        pb = b.subset(ib.isin(common).to_numpy())
        oa, ob = np.argsort(pa.rows["item"].astype(str).to_numpy()), np.argsort(pb.rows["item"].astype(str).to_numpy())
        pa, pb = _reorder(pa, oa), _reorder(pb, ob)
        if np.array_equal(pa.y, pb.y):
            pos = positive if (threshold_a is not None or a.binary) else None
            groups = pa.groups()
            n_boot = _resamples(groups, n_boot)
            W = np.vstack([np.ones(pa.n), bootstrap_weights(pa.n, n_boot, seed, strata=pa.y, groups=groups)])
            va = _metric_rows(pa.y, pa.probs, decide(pa.probs, threshold_a, positive), W, pos)
            vb = _metric_rows(pb.y, pb.probs, decide(pb.probs, threshold_b, positive), W, pos)
            diffs = []
            for m in METRICS:
                d = vb[m] - va[m]
                boot = d[1:][~np.isnan(d[1:])]
                lo, hi = np.percentile(boot, [2.5, 97.5]) if len(boot) >= 20 else (np.nan, np.nan)
                diffs.append(format_ci({"estimate": d[0], "low": lo, "high": hi}))
            frame["B − A (paired, same items)"] = diffs + ["—"]
    return frame


def _reorder(d: OutputData, order: np.ndarray) -> OutputData:
    return OutputData(d.output, d.labels, d.y[order], d.probs[order], d.rows.iloc[order].reset_index(drop=True))


# --- segmentation / detection and time-lapse -----------------------------------------------------------------------
SEGMENTATION_KEYS = ("mask_map50", "mask_map50_95", "box_map50", "box_map50_95", "map50", "map50_95", "mean_dice",
                     "count_mae", "precision", "recall")


def is_segmentation(metrics: dict) -> bool:
    return any(k in m for m in metrics.values() if isinstance(m, dict) for k in ("mask_map50", "map50", "mean_dice"))


def mean_ci(values, n_boot: int = N_BOOT, seed: int = 0, groups=None) -> tuple[float, float, float]:
    """Mean of per-item values with its percentile bootstrap 95 % CI."""
    v = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(v)
    v = v[keep]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    if groups is not None:
        groups = np.asarray(groups)[keep]
        if len(np.unique(groups)) < MIN_GROUPS:
            return float(v.mean()), np.nan, np.nan
    W = bootstrap_weights(len(v), n_boot, seed, groups=groups)
    boot = _div(W @ v, W.sum(axis=1))
    return float(v.mean()), *map(float, np.nanpercentile(boot, [2.5, 97.5]))


def per_image_columns(predictions: pd.DataFrame) -> dict[str, str]:
    """Per-image numeric columns of a segmentation/detection evaluation: {column: display name}."""
    names = {}
    for col in predictions.columns:
        if predictions[col].dtype.kind not in "fiu" or col.startswith("p:"):
            continue
        low = col.lower()
        if "dice" in low or "iou" in low:
            names[col] = f"{col} (per image)"
        elif "count" in low or "error" in low or low.startswith("n_"):
            names[col] = col
    return names


def count_errors(predictions: pd.DataFrame) -> pd.Series | None:
    """Signed count error per image (predicted - true) from whichever columns the evaluation stored."""
    for err in ("count_error", "count_err"):
        if err in predictions:
            return predictions[err].astype(float)
    for t, p in (("count_true", "count_pred"), ("n_true", "n_pred"), ("true_count", "pred_count")):
        if t in predictions and p in predictions:
            return predictions[p].astype(float) - predictions[t].astype(float)
    return None


def event_table(folder: Path, meta: dict) -> tuple[pd.DataFrame | None, str]:
    """Time-lapse event times per embryo (true, predicted, error in hours) and a note on how hours were derived.

    Read from events.csv in the evaluation folder when present, else from meta["events"] ({embryo: {"events":
    {event: frame}, "true_events": {event: frame}, "hours": the same in recorded hours, when the set has time
    tables}}); an embryo without recorded hours has its frames `minutes_per_frame` apart."""
    path = Path(folder) / "events.csv"
    if path.is_file():
        return pd.read_csv(path), "as stored in events.csv"
    events = meta.get("events")
    if not isinstance(events, dict) or not events:
        return None, ""
    from .sequence import DEFAULT_MINUTES

    minutes = float(meta.get("minutes_per_frame", DEFAULT_MINUTES))
    rows, by_interval = [], 0
    for embryo, rep in events.items():
        recorded = rep.get("hours")
        if recorded:
            pred, true = recorded["events"], recorded["true_events"]
        else:
            by_interval += 1
            pred = {e: f * minutes / 60 for e, f in rep.get("events", {}).items()}
            true = {e: f * minutes / 60 for e, f in rep.get("true_events", {}).items()}
        for event, true_h in true.items():
            p = pred.get(event)
            rows.append({"embryo": embryo, "event": event, "true_h": true_h, "predicted_h": p,
                         "error_h": None if p is None else p - true_h})
    interval = (f"frame numbers converted at {minutes:g} min per frame"
                + (" (EmbryoScope's usual interval; the evaluation did not store one)"
                   if "minutes_per_frame" not in meta else ""))
    if by_interval == 0:
        note = "hours after insemination from each embryo's time table"
    elif by_interval == len(events):
        note = interval
    else:
        note = f"hours from the time tables; for {by_interval} embryo(s) without one, {interval}"
    return pd.DataFrame(rows), note


# --- where the evaluated images are ----------------------------------------------------------------------------------
def data_roots(meta: dict) -> list[Path]:
    roots = []
    for key in ("data_path", "data", "path"):
        value = meta.get(key)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v and "!/" not in v and Path(v).is_dir():
                roots.append(Path(v))
    return roots


def resolve_items(items, meta: dict, max_files: int = 200_000) -> dict[str, Path | None]:
    """Image file of each evaluated item when it can still be reached: the item itself, the data root joined with
    it, or the file under the data root whose path ends with the most of the item's path parts."""
    roots = data_roots(meta)
    index: dict[str, list[Path]] | None = None
    found = {}
    for item in map(str, items):
        path = Path(item)
        hit = path if path.is_absolute() and path.is_file() else next(
            (r / item for r in roots if (r / item).is_file()), None)
        if hit is None and roots:
            if index is None:
                index = {}
                for r in roots:
                    for n, f in enumerate(r.rglob("*")):
                        if n > max_files:
                            break
                        index.setdefault(f.name, []).append(f)
            candidates = [f for f in index.get(path.name, []) if f.is_file()]
            if candidates:
                parts = path.parts
                hit = max(candidates, key=lambda f: sum(1 for a, b in zip(reversed(f.parts), reversed(parts)) if a == b))
        found[item] = hit
    return found

"""Widgets shared by the Metrics and Confusion pages: pick a stored evaluation, say where it came from, choose the
decision rule. Choices persist across the two pages (plain session keys, not widget keys, survive a page switch)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import evaluation, metrics, registry
from ui.common import bullet_list

PENDING = "eval_pending"  # (model, evaluation) to select on the next run, e.g. after a new evaluation


@dataclass
class Picked:
    card: registry.Card
    name: str
    result: dict  # metrics.json
    meta: dict
    preds: pd.DataFrame

    @property
    def folder(self) -> Path:
        return self.card.folder / "eval" / self.name

    @property
    def stamp(self) -> float:
        return _stamp(self.folder)

    @property
    def sha(self) -> str:
        return str(self.meta.get("model_sha256") or "")

    @property
    def predicted_by(self) -> str | None:
        """Whose predictions these are when not the model file's (e.g. cross-validation models), else None."""
        return self.meta.get("predicted_by")

    def short_source(self, sep: str = " · ", n: int | None = None) -> str:
        """Model, version, file hash (or whose predictions), data set, split and n (for captions; sep="<br>" for
        figure titles; n: the output's count where outputs have different ones)."""
        split = self.meta.get("split", "split not recorded")
        made_by = self.predicted_by or f"{self.meta.get('model_file', self.card.file)} sha256 {self.sha[:10] or '?'}"
        n = self.result.get("n", len(self.preds)) if n is None else n
        return (f"{self.card.id} v{self.meta.get('model_version', self.card.version)} · {made_by}{sep}"
                f"data {self.name} · split {split} · n = {n}")

    def source(self) -> str:
        data = self.meta.get("data_path") or self.meta.get("data") or "not recorded"
        layout = self.meta.get("layout") or self.meta.get("layouts") or ""
        layout = ", ".join(layout) if isinstance(layout, list) else (layout if isinstance(layout, str) else "")
        made_by = (f"predictions by {self.predicted_by}" if self.predicted_by else  # not the shipped file's
                   f"file `{self.meta.get('model_file', self.card.file)}` (sha256 `{self.sha[:16] or 'not recorded'}…`)")
        return (f"**Source.** Model `{self.card.id}` v{self.meta.get('model_version', self.card.version)}, {made_by}; "
                f"data `{data}`{f' ({layout})' if layout else ''}; split **{self.meta.get('split', 'not recorded')}**; "
                f"{self.result.get('n', '?')} items{self.labelled_per_output()}; evaluated "
                f"{self.meta.get('date', '?')} with code `{self.meta.get('code_version', '?')}`.")

    def labelled_per_output(self) -> str:
        """" (stage known for 85, quality for 105)" where outputs have labels for different numbers of items."""
        counts = {o: m["n"] for o, m in (self.result.get("metrics") or {}).items()
                  if isinstance(m, dict) and isinstance(m.get("n"), int)}
        if len(set(counts.values())) <= 1:
            return ""
        return " (" + ", ".join(f"{o} known for {n}" for o, n in counts.items()) + ")"

    def stale(self) -> bool:
        return bool(self.sha) and self.sha != self.card.sha256


def _stamp(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.glob("*") if p.is_file()), default=0.0)


@st.cache_data(show_spinner=False, max_entries=32)
def _load(model_id: str, name: str, stamp: float):
    return evaluation.load_evaluation(registry.card(model_id), name)


def index() -> tuple[dict[str, list[str]], dict[str, registry.Card], list[str]]:
    """{model id: evaluation names} for models with stored evaluations, their cards, and card problems."""
    problems, cards = [], {}
    root = registry.REGISTRY.root
    for path in sorted(root.glob("*/card.toml")) if root.is_dir() else []:
        try:
            card = registry.card(path.parent.name)
            cards[card.id] = card
        except (KeyError, registry.CardError) as exc:
            problems.append(str(exc))
    found = {cid: evaluation.list_evaluations(card) for cid, card in cards.items()}
    return {k: v for k, v in found.items() if v}, cards, problems


def _has_classes(card: registry.Card, name: str) -> bool:
    try:
        return bool(metrics.classification_outputs(_load(card.id, name, _stamp(card.folder / "eval" / name))[2]))
    except (OSError, ValueError):
        return True  # listed, so that picking it says what is wrong with it


def pick(key: str, label: str = "Evaluation", exclude: tuple[str, str] | None = None,
         classes_only: bool = False) -> Picked | None:
    """Model and evaluation selectors; None (after saying why) when nothing is stored. classes_only: list only
    evaluations with per-image class probabilities (not detection or segmentation ones)."""
    evals, cards, problems = index()
    for p in problems:
        st.warning(f"A model card could not be read: {p}", icon=":material/warning:")
    if classes_only:
        evals = {m: kept for m, names in evals.items() if (kept := [n for n in names if _has_classes(cards[m], n)])}
    if not evals:
        st.info(f"No stored evaluations{' with class probabilities' if classes_only else ''} yet. Run `python -m "
                "core evaluate MODEL_ID PATH` for a model, or evaluate a labelled set on the Metrics page.",
                icon=":material/info:")
        return None
    pending = None if exclude else st.session_state.pop(PENDING, None)
    if pending and pending[0] in evals and pending[1] in evals[pending[0]]:
        st.session_state[f"{key}_model"], st.session_state[f"{key}_eval"] = pending
        st.session_state["eval_model"], st.session_state["eval_name"] = pending
    models = sorted(evals, key=lambda m: cards[m].framework == "ultralytics")  # classifiers (with CIs) first
    default_model, default_name = st.session_state.get("eval_model"), st.session_state.get("eval_name")
    if exclude:  # another evaluation of the same model first, else the first other one
        others = [(m, n) for m in models for n in evals[m] if (m, n) != tuple(exclude)]
        others.sort(key=lambda mn: mn[0] != exclude[0])
        default_model, default_name = others[0] if others else exclude
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model", models, key=f"{key}_model",
                         index=models.index(default_model) if default_model in models else 0,
                         format_func=lambda m: f"{m} · {cards[m].title}")
    names = evals[model]
    real = [n for n in names if "generated" not in n]  # open on real data, not a generated check
    default = default_name if default_name in names else (real or names)[0]
    name = c2.selectbox(label, names, key=f"{key}_eval", index=names.index(default) if default in names else 0,
                        help="Stored under weights/<model>/eval/<name>/ by `python -m core evaluate` or this page.")
    if not exclude:
        st.session_state["eval_model"], st.session_state["eval_name"] = model, name
    card = cards[model]
    try:
        result, meta, preds = _load(model, name, _stamp(card.folder / "eval" / name))
    except (OSError, ValueError) as exc:
        st.error(f"The evaluation {model}/{name} could not be read: {exc}", icon=":material/error:")
        return None
    return Picked(card, name, result, meta, preds)


def show_source(p: Picked) -> None:
    st.caption(p.source())
    if p.predicted_by:
        st.info(f"These predictions are by {p.predicted_by}: {p.meta.get('note', '')}.", icon=":material/info:")
    skipped = p.meta.get("skipped") or []
    if skipped:
        st.warning(f"{len(skipped)} file(s) could not be read and are not in these figures:\n\n"
                   + bullet_list(skipped, 5),
                   icon=":material/broken_image:")
    if p.stale():
        st.warning(f"This evaluation was made with a different model file (sha256 {p.sha[:12]}…) than the one "
                   f"installed now ({p.card.sha256[:12]}…): its numbers describe the older model.",
                   icon=":material/history:")


@dataclass
class Decision:
    threshold: float | None  # None: the most probable label
    positive: int | None  # the label the threshold applies to (binary: the second)
    curve_class: int  # the label whose ROC/PR curves and calibration are drawn

    def describe(self, labels: list[str]) -> str:
        if self.threshold is None:
            return "each item gets its most probable label"
        other = "the other label" if len(labels) == 2 else "the most probable other label"
        return (f"**{labels[self.positive]}** when its probability is at least {100 * self.threshold:.0f} %, "
                f"otherwise {other}")


def decision_ui(p: Picked, data: metrics.OutputData, key: str) -> Decision:
    """The decision rule of one output; the threshold is shared by both pages for the same model and output."""
    labels = data.labels
    store = f"thr::{p.card.id}::{data.output}"
    card_threshold = (p.card.get("thresholds") or {}).get(data.output)
    default = float(card_threshold if card_threshold is not None else data_threshold(p, data.output))
    value = float(st.session_state.get(store, default))
    origin = (f"The model's own threshold, used on the task pages, is {card_threshold:.4g} (from its card)."
              if card_threshold is not None else f"The stored metrics were computed at {default:.2f}.")

    if data.binary:
        t = st.slider(f"Decision threshold for **{labels[1]}** ({data.output})", 0.01, 0.99, value, 0.01,
                      key=f"{key}_thr_{data.output}", format="%.2f",
                      help=f"Items whose probability of {labels[1]} is at least this are called {labels[1]}. "
                           f"Every figure and table below is recomputed at this threshold. {origin} The value "
                           "you set here is kept for this output on the Metrics and Confusion pages.")
        st.session_state[store] = t
        return Decision(t, 1, 1)
    c1, c2 = st.columns([1, 2])
    present = [c for c in range(len(labels)) if (data.y == c).any()]  # a label with no images has no curve
    chosen = f"{key}_cls_{data.output}"
    if present and (st.session_state.get(chosen) not in labels or labels.index(st.session_state[chosen]) not in present):
        st.session_state[chosen] = labels[present[0]]  # new, or kept from an evaluation that had images of it
    cls = c1.selectbox(f"Label of interest ({data.output})", labels, key=chosen,
                       help="ROC and PR curves, calibration and the threshold are drawn for this label against the rest.")
    c = labels.index(cls)
    use = c2.toggle(f"Call {cls} above a probability threshold", key=f"{key}_use_{data.output}",
                    help="Off: each item gets its most probable label.")
    if not use:
        return Decision(None, None, c)
    t = c2.slider(f"Threshold for {cls}", 0.01, 0.99, value, 0.01, key=f"{key}_thrm_{data.output}", format="%.2f")
    st.session_state[store] = t
    return Decision(t, c, c)


def data_threshold(p: Picked, output: str) -> float:
    """The threshold the stored metrics were computed at, else 0.5."""
    m = p.result.get("metrics", {}).get(output, {})
    return float(m.get("threshold", 0.5)) if isinstance(m, dict) else 0.5


@st.cache_data(show_spinner=False, max_entries=64)
def _resolved(model_id: str, name: str, stamp: float, items: tuple[str, ...], roots: dict) -> dict:
    found = metrics.resolve_items(items, roots)
    return {k: (str(v) if v else None) for k, v in found.items()}


def item_paths(p: Picked, items) -> dict[str, str | None]:
    """Item -> image file (str) or None, for images that can still be reached on this machine."""
    roots = {k: p.meta[k] for k in ("data_path", "data", "path") if k in p.meta}
    return _resolved(p.card.id, p.name, p.stamp, tuple(map(str, items)), roots)


def thumbnail(path: str, side: int = 256) -> np.ndarray | None:
    from core.imageio import ImageInputError, read_image

    try:
        img = read_image(path).pixels
    except ImageInputError:
        return None
    scale = side / max(img.shape[:2])
    if scale < 1:
        import cv2

        img = cv2.resize(img, (max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    return img


def pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f} %"

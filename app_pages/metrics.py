"""Metrics of stored evaluations: estimates with 95 % bootstrap intervals, curves, calibration, threshold,
subgroups, segmentation and time-lapse summaries, comparison, leakage audit, and evaluating a new labelled set."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.errors import StreamlitAPIException

from core import audit, evaluation, metrics, registry
from core.imageio import ImageInputError
from ui import evaluations as ev
from ui.common import burst_counts, glossary
from ui.records import may_read_server_files, require_login

user = require_login(sidebar=False)

st.title("Model metrics")
st.markdown(
    "How each model performs on data it was **not trained on**, from its stored evaluations (one row per image: "
    "the truth and the model's probabilities). Every classifier estimate carries a 95 % confidence interval "
    f"from {metrics.N_BOOT} bootstrap resamples (within each true class, or whole embryos/groups when images are "
    "clustered); a wide interval means few cases, not a precise number. Detection and segmentation figures are "
    "the evaluation's point estimates, without an interval."
)
glossary()


# --- cached computations (keyed on the evaluation's files, so a new evaluation invalidates them) ------------------
@st.cache_data(show_spinner="Bootstrapping confidence intervals…", max_entries=128)
def ci_table(model_id, name, stamp, output, threshold, positive, drop: tuple = ()):
    data = _data(model_id, name, stamp, output, drop)
    return metrics.metrics_with_ci(data, threshold, positive) if data.n else None


@st.cache_data(show_spinner=False, max_entries=64)
def per_class_table(model_id, name, stamp, output, threshold, positive):
    return metrics.per_class(_data(model_id, name, stamp, output), threshold, positive)


@st.cache_data(show_spinner="Computing subgroup intervals…", max_entries=64)
def subgroups(model_id, name, stamp, output, column, threshold, positive):
    return metrics.subgroup_table(_data(model_id, name, stamp, output), column, threshold, positive)


@st.cache_data(show_spinner="Searching for near-duplicates…", max_entries=32)
def run_audit(model_id, name, stamp, max_distance):
    card = registry.card(model_id)
    _, _, preds = evaluation.load_evaluation(card, name)
    return audit.audit(preds, audit.read_train_hashes(card.folder), max_distance)


@st.cache_data(show_spinner="Comparing…", max_entries=32)
def compare_table(a: tuple, b: tuple, output, threshold, positive):
    return metrics.compare(_data(*a, output), _data(*b, output), threshold, threshold, positive)


def _data(model_id, name, stamp, output, drop: tuple = ()):
    card = registry.card(model_id)
    _, _, preds = ev._load(model_id, name, stamp)
    if drop:
        preds = preds[~preds["item"].astype(str).isin(set(drop))]
    return metrics.output_data(preds, output, card.classes.get(output))


# --- figures ---------------------------------------------------------------------------------------------------------
def titled(fig: go.Figure, title: str, source: str, height: int = 420) -> go.Figure:
    source = "<br>".join(f"<sup>{line}</sup>" for line in source.split("<br>"))
    fig.update_layout(title=dict(text=f"{title}<br>{source}", font=dict(size=15)), height=height,
                      margin=dict(l=10, r=10, t=90, b=10), template="plotly_white",
                      legend=dict(orientation="h", y=-0.18))
    return fig


def roc_figure(curves: list[tuple[str, pd.DataFrame, dict | None]], source: str, label: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance"))
    for name, roc, op in curves:
        fig.add_scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=name, customdata=roc["threshold"],
                        hovertemplate="1 − specificity %{x:.2f}<br>sensitivity %{y:.2f}<br>threshold %{customdata:.2f}")
        if op:
            fig.add_scatter(x=[op["fpr"]], y=[op["tpr"]], mode="markers", marker=dict(size=13, symbol="x"),
                            name="operating point" if len(curves) == 1 else f"operating point ({name})")
    fig.update_xaxes(title="1 − specificity (false-positive rate)", range=[0, 1])
    fig.update_yaxes(title=f"sensitivity for {label}", range=[0, 1.02])
    return titled(fig, f"ROC curve: {label} against the rest", source)


def pr_figure(curves: list[tuple[str, pd.DataFrame, dict | None]], prevalence: float, source: str, label: str):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", name=f"prevalence {prevalence:.0%}",
                               line=dict(dash="dot", color="grey")))
    for name, pr, op in curves:
        fig.add_scatter(x=pr["recall"], y=pr["precision"], mode="lines", name=name, customdata=pr["threshold"],
                        hovertemplate="recall %{x:.2f}<br>precision %{y:.2f}<br>threshold %{customdata:.2f}")
        if op and not np.isnan(op["precision"]):
            fig.add_scatter(x=[op["tpr"]], y=[op["precision"]], mode="markers", marker=dict(size=13, symbol="x"),
                            name="operating point" if len(curves) == 1 else f"operating point ({name})")
    fig.update_xaxes(title=f"recall (sensitivity) for {label}", range=[0, 1])
    fig.update_yaxes(title="precision (PPV)", range=[0, 1.02])
    return titled(fig, f"Precision–recall curve: {label}", source)


def reliability_figure(table: pd.DataFrame, ece: float, ece_ci: str, source: str, what: str, threshold):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                               name="perfect calibration"))
    fig.add_bar(x=(table["low"] + table["high"]) / 2, y=table["n"], name="images per bin", yaxis="y2",
                marker_color="rgba(120,120,120,0.25)", width=0.09)
    fig.add_scatter(x=table["mean_predicted"], y=table["observed"], mode="lines+markers", name="observed",
                    customdata=table["n"], hovertemplate="predicted %{x:.2f}<br>observed %{y:.2f}<br>n %{customdata}")
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="firebrick", annotation_text="threshold")
    # set on layout.yaxis only: update_yaxes would also give the image-count axis the 0–1 range
    fig.update_layout(yaxis=dict(title="observed frequency", range=[0, 1.02]),
                      yaxis2=dict(overlaying="y", side="right", showgrid=False, title="images", rangemode="tozero"))
    fig.update_xaxes(title=f"predicted {what}", range=[0, 1])
    return titled(fig, f"Reliability diagram · ECE {ece_ci}", source)


def metric_frame(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"Metric": table["name"], "Estimate": [f"{v:.3f}" if not np.isnan(v) else "—"
                                                               for v in table["estimate"]],
                         "95 % CI": [f"{r.low:.3f} – {r.high:.3f}" if not np.isnan(r.low) else "—"
                                     for r in table.itertuples()]})


# --- sections --------------------------------------------------------------------------------------------------------
def classification_section(p: ev.Picked, output: str) -> None:
    data = _data(p.card.id, p.name, p.stamp, output)
    if data.n == 0:
        st.warning(f"No labelled rows for {output} in this evaluation.")
        return
    labels = data.labels
    source, title = p.short_source(n=data.n), p.short_source("<br>", n=data.n)  # captions, figure titles
    cols = st.columns(len(labels) + 1)
    cols[0].metric("Images", data.n)
    for c, lab in enumerate(labels):
        cols[c + 1].metric(f"n {lab}", int((data.y == c).sum()))
    d = ev.decision_ui(p, data, "m")
    st.caption("Decision rule: " + d.describe(labels) + ".")
    absent = [lab for c, lab in enumerate(labels) if not (data.y == c).any()]
    if absent:
        st.info(f"No image of this evaluation is labelled {', '.join(absent)}. Figures that need those labels are "
                "undefined (ROC-AUC, PR-AUC) or count them as zero (precision, F1 and their macro averages, "
                "specificity of the present labels): read accuracy and per-label recall.", icon=":material/info:")
    table = ci_table(p.card.id, p.name, p.stamp, output, d.threshold, d.positive)
    pred = metrics.decide(data.probs, d.threshold, d.positive)
    cm = metrics.confusion(data.y, pred, len(labels))
    c1, c2 = st.columns([3, 2])
    with c1:
        scope = ("" if data.binary or d.threshold is not None else " (multi-class: macro averages over the labels)")
        st.markdown(f"**{output}: metrics at this threshold{scope}**")
        st.dataframe(metric_frame(table), hide_index=True, width="stretch")
        st.caption(f"Positive label: **{labels[1] if data.binary else labels[d.curve_class]}**. "
                   + metrics.bootstrap_note(table) + metrics.ece_interval_note(table) + source)
    with c2:
        st.markdown("**Confusion matrix** (rows: truth, columns: model)")
        st.dataframe(pd.DataFrame(cm, index=[f"true {x}" for x in labels], columns=[f"called {x}" for x in labels]),
                     width="stretch")
        try:
            st.page_link("app_pages/confusion.py", label="Images per cell: confusion-matrix page", icon=":material/grid_on:")
        except StreamlitAPIException:  # the page runs outside the app's navigation (tests)
            pass

    t_curves, t_cal, t_class, t_sub = st.tabs(["ROC & PR curves", "Calibration", "Per label", "Subgroups"])
    c = d.curve_class
    with t_curves:
        op = metrics.operating_point(data, d.threshold, c)
        auc = table.set_index("metric").loc["roc_auc"]
        ap = table.set_index("metric").loc["pr_auc"]
        a, b = st.columns(2)
        a.plotly_chart(roc_figure([(f"AUC {metrics.format_ci(auc)}" if data.binary else labels[c],
                                    metrics.roc_curve(data, c), op)], title, labels[c]),
                       width="stretch", key="roc")
        b.plotly_chart(pr_figure([(f"AP {metrics.format_ci(ap)}" if data.binary else labels[c],
                                   metrics.pr_curve(data, c), op)], float((data.y == c).mean()), title,
                                 labels[c]), width="stretch", key="pr")
        if op:
            rule = f"threshold {d.threshold:.2f}" if d.threshold is not None else "most probable label"
            st.caption(f"Operating point (×) for {labels[c]} at {rule}: sensitivity {ev.pct(op['tpr'])}, "
                       f"specificity {ev.pct(1 - op['fpr'])}, precision {ev.pct(op['precision'])} "
                       f"(TP {op['tp']}, FP {op['fp']}, FN {op['fn']}, TN {op['tn']}).")
    with t_cal:
        rel, ece = metrics.reliability(data.probs[:, c], (data.y == c).astype(float))
        same = data.binary or d.threshold is not None  # the table's ECE is of this label too
        ece_text = metrics.format_ci(table.set_index("metric").loc["ece"]) if same else f"{ece:.3f}"
        st.plotly_chart(reliability_figure(rel, ece, ece_text, title, f"probability of {labels[c]}",
                                           d.threshold), width="stretch", key="reliability")
        st.caption("Points on the diagonal mean that a predicted 30 % comes true about 30 % of the time. The ECE is "
                   "the image-weighted mean gap between predicted and observed over 10 equal-width bins.")
    with t_class:
        pc = per_class_table(p.card.id, p.name, p.stamp, output, d.threshold, d.positive)
        pc["recall (95 % CI)"] = [f"{r.recall:.3f} ({r.recall_low:.3f}–{r.recall_high:.3f})"
                                  if not np.isnan(r.recall_low) else "—" for r in pc.itertuples()]
        st.dataframe(pc[["label", "n", "recall (95 % CI)", "precision", "specificity", "f1", "roc_auc"]].round(3),
                     hide_index=True, width="stretch")
        st.caption("Recall of a label is the share of its images the model called correctly (for time-lapse: "
                   "per-stage accuracy). " + source)
    with t_sub:
        cols = metrics.subgroup_columns(data.rows)
        if not cols:
            st.info("This evaluation stores no subgroup column (such as day, stain, microscope or embryo).")
        else:
            column = st.selectbox("Break down by", cols, key="m_subgroup")
            st.dataframe(subgroups(p.card.id, p.name, p.stamp, output, column, d.threshold, d.positive),
                         hide_index=True, width="stretch")
            st.caption("Estimates with 95 % CIs (300 resamples) per subgroup; small subgroups give wide intervals. "
                       + source)
    audit_section(p, data, d)
    compare_section(p, data, d)


def segmentation_section(p: ev.Picked) -> None:
    names = {"mask_map50": "mask mAP50", "mask_map50_95": "mask mAP50–95", "box_map50": "box mAP50",
             "box_map50_95": "box mAP50–95", "map50": "mAP50", "map50_95": "mAP50–95", "mean_dice": "mean Dice",
             "count_mae": "count MAE (per image)", "precision": "precision", "recall": "recall"}
    for output, m in p.result.get("metrics", {}).items():
        if not isinstance(m, dict):
            continue
        shown = [(names[k], m[k]) for k in metrics.SEGMENTATION_KEYS if isinstance(m.get(k), (int, float))]
        if not shown:
            continue
        st.markdown(f"**{output}**")
        cols = st.columns(len(shown))
        for col, (label, v) in zip(cols, shown):
            col.metric(label, f"{v:.3f}")
    rows = p.preds
    if rows.empty:
        return
    groups = rows["embryo"].to_numpy() if "embryo" in rows else None
    dice_cols = [c for c in rows.columns if "dice" in c.lower() and rows[c].dtype.kind in "fiu"]
    err = metrics.count_errors(rows)
    a, b = st.columns(2)
    if dice_cols:
        col = dice_cols[0]
        mean, lo, hi = metrics.mean_ci(rows[col], groups=groups)
        fig = go.Figure(go.Histogram(x=rows[col], nbinsx=20, name="images"))
        fig.add_vline(x=mean, line_dash="dash",
                      annotation_text="mean " + metrics.format_ci({"estimate": mean, "low": lo, "high": hi}))
        fig.update_xaxes(title="Dice of matched heads, per image", range=[0, 1])
        fig.update_yaxes(title="images")
        a.plotly_chart(titled(fig, "Dice distribution", p.short_source("<br>")), width="stretch", key="dice")
    if err is not None:
        mae, lo, hi = metrics.mean_ci(err.abs(), groups=groups)
        fig = go.Figure(go.Histogram(x=err, name="images"))
        fig.update_xaxes(title="count error per image (model − truth)")
        fig.update_yaxes(title="images")
        mae_text = metrics.format_ci({"estimate": mae, "low": lo, "high": hi})
        b.plotly_chart(titled(fig, f"Count error · MAE {mae_text}", p.short_source("<br>")),
                       width="stretch", key="count")


def timelapse_section(p: ev.Picked) -> None:
    table, note = metrics.event_table(p.folder, p.meta)
    if table is None or table.empty:
        return
    st.subheader("Morphokinetic event times")
    if "error_h" in table:
        valid = table.dropna(subset=["error_h"])
        summary = valid.groupby("event", sort=False)["error_h"].agg(
            n="size", mean_error_h="mean", mae_h=lambda e: e.abs().mean()).reset_index()
        st.dataframe(summary.round(2), hide_index=True, width="stretch")
        fig = go.Figure(go.Box(x=valid["event"], y=valid["error_h"], boxpoints="all", name="embryos",
                               customdata=valid.get("embryo"), hovertemplate="%{customdata}: %{y:.2f} h"))
        fig.add_hline(y=0, line_dash="dot", line_color="grey")
        fig.update_yaxes(title="predicted − annotated time (hours)")
        st.plotly_chart(titled(fig, "Event-time errors per embryo", p.short_source("<br>")), width="stretch", key="events")
        missing = int(table["error_h"].isna().sum())
        if missing:
            st.caption(f"{missing} annotated events were not predicted at all.")
    else:
        st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"Hours: {note}.")
    bursts = p.meta.get("division_bursts")
    if bursts:
        st.caption(f"Bursts of change between frames (no model) on the {bursts['sequences']} complete annotated "
                   f"sequence(s): {burst_counts(bursts)}.")


def audit_section(p: ev.Picked, data: metrics.OutputData, d: ev.Decision) -> None:
    st.subheader("Leakage audit")
    if "phash" not in p.preds:
        st.info("This evaluation stored no image hashes (`phash` column), so it cannot be checked for "
                "near-duplicates. Re-run `python -m core evaluate` with a current task module.")
        return
    has_train = (p.card.folder / audit.HASHES_FILE).is_file()
    if not has_train:
        st.warning("No training-image hashes are stored with this model (`train_hashes.csv`): overlap with the "
                   "training set cannot be checked, only duplicates inside the evaluation set.",
                   icon=":material/warning:")
    max_d = st.slider("Near-duplicate when the perceptual hashes differ in at most … of 64 bits", 0, 16,
                      audit.MAX_DISTANCE, key="m_audit_d",
                      help="Measured here: flipped and re-encoded copies differ by ≤ 4 bits; distinct embryo images "
                           "by ≥ 12 bits in 99.9 % of pairs. Flips of training images are checked when their hashes "
                           "were stored.")
    r = run_audit(p.card.id, p.name, p.stamp, max_d)
    c = st.columns(4)
    c[0].metric("Evaluated images", r["n_items"])
    c[1].metric("Training images hashed", r["n_train"])
    c[2].metric("Near-copies of a training image", r["train"]["n_items"])
    groups = r["within"]["n_groups"]
    c[3].metric("In duplicate groups of the set", r["within"]["n_items"],
                help=f"Evaluated images in {groups} group{'s' if groups != 1 else ''} of near-copies of each other")
    indistinct = r["train"].get("n_indistinct", 0)
    if r["train"]["n_items"] and 2 * indistinct > r["train"]["n_items"]:
        st.warning(f"{r['train']['n_items']} evaluated images are within {max_d} bits of a training image, but "
                   f"{indistinct} of them are as close to more than {audit.INDISTINCT_MATCHES} training images each: "
                   "at this setting the fingerprint cannot tell these images apart (frames from one instrument look "
                   "alike to it), so most are look-alikes, not copies. Check the split (here: "
                   f"{p.meta.get('split', 'not recorded')}) and lower the setting before reading the columns below.",
                   icon=":material/help:")
    elif r["train"]["n_items"]:
        st.error(f"{r['train']['n_items']} evaluated images are near-copies of training images: scores on them say "
                 "little about new patients. Compare the columns below.", icon=":material/content_copy:")
    elif has_train:
        st.success("No evaluated image is a near-copy of a training image at this setting.", icon=":material/check:")
    drop_train = tuple(sorted(audit.clean_items(r, within=False)))
    drop_all = tuple(sorted(audit.clean_items(r)))
    full = ci_table(p.card.id, p.name, p.stamp, data.output, d.threshold, d.positive)
    cols = {"All images": (full, data.n)}
    if drop_train:
        t = ci_table(p.card.id, p.name, p.stamp, data.output, d.threshold, d.positive, drop_train)
        cols["Without training near-copies"] = (t, t.attrs["n"] if t is not None else 0)
    if drop_all != drop_train:
        t = ci_table(p.card.id, p.name, p.stamp, data.output, d.threshold, d.positive, drop_all)
        cols["… and one image per duplicate group"] = (t, t.attrs["n"] if t is not None else 0)
    if len(cols) > 1:
        frame = pd.DataFrame({"Metric": full["name"]})
        for title, (t, n) in cols.items():
            frame[f"{title} (n = {n})"] = [metrics.format_ci(r_) for _, r_ in t.iterrows()] if t is not None else "—"
        st.dataframe(frame, hide_index=True, width="stretch")
        st.caption(f"Metrics of {data.output} with the flagged images removed, at the same threshold. "
                   + p.short_source(n=data.n))  # the output's n: the evaluation's may count unlabelled items
    pairs = [("training", x["item"], x["train_item"], x["distance"]) for x in r["train"]["pairs"]]
    pairs += [("inside the set", x["item"], x["other"], x["distance"]) for x in r["within"]["pairs"]]
    if pairs:
        with st.expander(f"Examples ({min(len(pairs), 6)} of {len(pairs)} pairs)"):
            train_paths = metrics.resolve_items([x[2] for x in pairs[:6] if x[0] == "training"], p.meta)
            paths = ev.item_paths(p, [x[1] for x in pairs[:6]] + [x[2] for x in pairs[:6] if x[0] != "training"])
            for kind, a_item, b_item, dist in pairs[:6]:
                a_col, b_col = st.columns(2)
                for col, item, role in ((a_col, a_item, "evaluated"),
                                        (b_col, b_item, "training" if kind == "training" else "evaluated")):
                    path = train_paths.get(b_item) if role == "training" else paths.get(item)
                    img = ev.thumbnail(str(path)) if path else None
                    if img is not None:
                        col.image(img, caption=f"{role}: {item}", width=220)
                    else:
                        col.caption(f"{role}: `{item}` (image not reachable here)")
                st.caption(f"{kind}: {dist} bits apart")


def compare_section(p: ev.Picked, data: metrics.OutputData, d: ev.Decision) -> None:
    st.subheader("Compare with another evaluation")
    with st.expander("Two models on one set, or one model on two sets", expanded=False):
        other = ev.pick("cmp", label="Second evaluation", exclude=(p.card.id, p.name))
        if other is None:
            return
        if (other.card.id, other.name) == (p.card.id, p.name):
            st.info("Choose a different evaluation to compare.")
            return
        if data.output not in other.card.classes or other.card.classes[data.output] != data.labels:
            st.info(f"{other.card.id} has no output {data.output!r} with the labels {', '.join(data.labels)}.")
            return
        b = _data(other.card.id, other.name, other.stamp, data.output)
        if b.n == 0:
            st.info(f"{other.card.id}/{other.name} has no labelled rows for {data.output}.")
            return
        table = compare_table((p.card.id, p.name, p.stamp), (other.card.id, other.name, other.stamp), data.output,
                              d.threshold, d.positive)
        table = table.rename(columns={"A": f"A: {p.card.id}/{p.name}", "B": f"B: {other.card.id}/{other.name}"})
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(f"Same decision rule for both ({d.describe(data.labels)}). {table.attrs.get('n_common', 0)} "
                   "images are in both sets; where they carry the same truth, the last column is the paired "
                   "difference with its bootstrap 95 % CI.")
        c = d.curve_class
        curves = []
        for name, od in ((f"A: {p.card.id}/{p.name}", data), (f"B: {other.card.id}/{other.name}", b)):
            op = metrics.operating_point(od, d.threshold, c)
            curves.append((name, metrics.roc_curve(od, c), op))
        st.plotly_chart(roc_figure(curves, f"A: {p.short_source()}<br>B: {other.short_source()}", data.labels[c]),
                        width="stretch", key="cmp_roc")


def evaluate_new_section(default_model: str | None) -> None:
    st.subheader("Evaluate a labelled set")
    cards = [c for c in _cards() if c.task]
    if not cards:
        st.info("No models are installed, so nothing can be evaluated.")
        return
    ids = [c.id for c in cards]
    with st.form("evaluate_new"):
        model = st.selectbox("Model", ids, index=ids.index(default_model) if default_model in ids else 0)
        upload = st.file_uploader("Labelled zip (one folder per class, or a CSV of paths and labels inside), or a CSV",
                                  type=["zip", "csv"])
        folder = ""
        if may_read_server_files(user):
            folder = st.text_input("…or a folder on this server", placeholder="/data/hungvuong",
                                   help="Class-per-folder, or any layout the model's evaluator reads "
                                        "(as `python -m core evaluate`).")
        name = st.text_input("Name of the evaluation", placeholder="defaults to the file or folder name",
                             help="A name already in use gets -2, -3 …: stored evaluations are never replaced here.")
        go_ = st.form_submit_button("Evaluate", type="primary")
    if not go_:
        return
    source = upload if upload is not None else (folder.strip() or None)
    if source is None:
        st.warning("Upload a zip or CSV, or give a folder path.")
        return
    if upload is not None and upload.name.lower().endswith(".csv") and not may_read_server_files(user):
        st.error("A CSV on its own names images on this server's disk, which only an administrator (with sign-in on) "
                 "or a browser on the server itself may read: upload a zip with the CSV and its images inside.",
                 icon=":material/lock:")
        return
    bar = st.progress(0.0, text="Reading the labelled set…")

    def progress(done, total):
        bar.progress(done / max(total, 1), text=f"Evaluated {done} of {total} images")

    try:
        result = evaluation.evaluate_source(model, source, name=name.strip() or None, progress=progress, replace=False)
    except (evaluation.LabelledSetError, ImageInputError, FileNotFoundError, KeyError, ValueError,
            NotImplementedError, registry.CardError) as exc:
        bar.empty()
        st.error(f"The set could not be evaluated: {exc.args[0] if exc.args else exc}", icon=":material/error:")
        return
    except Exception as exc:  # a model that fails to load or run: say so, keep the page  # noqa: BLE001
        bar.empty()
        st.error(f"The evaluation failed while running {model}: {type(exc).__name__}: {exc}", icon=":material/error:")
        return
    bar.progress(1.0, text="Done")
    st.session_state[ev.PENDING] = (model, result["dataset"])
    st.success(f"Stored evaluation `{result['dataset']}` of {model} on {result['n']} images.")
    st.rerun()


def _cards():
    try:
        return registry.cards()
    except registry.CardError as exc:
        st.warning(f"A model card could not be read: {exc}")
        return []


# --- page ------------------------------------------------------------------------------------------------------------
picked = ev.pick("m")
if picked is not None:
    ev.show_source(picked)
    outputs = metrics.classification_outputs(picked.preds)
    if outputs:
        output = st.radio("Output", outputs, horizontal=True, key="m_output") if len(outputs) > 1 else outputs[0]
        classification_section(picked, output)
    if metrics.is_segmentation(picked.result.get("metrics", {})):
        st.subheader("Segmentation / detection")
        segmentation_section(picked)
    timelapse_section(picked)
    if not outputs and not metrics.is_segmentation(picked.result.get("metrics", {})):
        st.json(picked.result.get("metrics", {}))
st.divider()
evaluate_new_section(picked.card.id if picked else None)

"""Confusion matrices of stored evaluations at a chosen threshold; click a cell to see its images."""
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import PROJECT_ROOT, metrics
from core.tasks import TASK_OF_MODEL
from ui import evaluations as ev
from ui.common import hand_over
from ui.records import current_user, may_read_server_files

GALLERY = 12  # images shown per cell

st.title("Confusion matrices")
st.markdown(
    "Where each model's calls agree with the truth, per output, at the decision threshold you choose. **Click a "
    "cell** (or pick it below the matrices) to see its images, most confident first, with the model's "
    "probabilities; open one in the task page's what-if view to see what changes its call."
)


def heatmap(cm: np.ndarray, labels: list[str], normalised: bool, source: str, selected=None) -> go.Figure:
    """A heat map with one invisible marker per cell, so a click selects the cell (plotly point selection)."""
    shown = metrics.row_normalise(cm) if normalised else cm
    text = [[(f"{100 * v:.0f} %<br>({cm[i, j]})" if not np.isnan(v) else "–") if normalised else str(int(v))
             for j, v in enumerate(row)] for i, row in enumerate(shown)]
    fig = go.Figure(go.Heatmap(z=shown, x=labels, y=labels, text=text, texttemplate="%{text}", textfont=dict(size=15),
                               colorscale="Blues",
                               zmin=0, zmax=1 if normalised else max(int(cm.max()), 1), hoverinfo="skip",
                               showscale=False))  # every cell carries its number: the cells get the width
    ii, jj = np.meshgrid(range(len(labels)), range(len(labels)), indexing="ij")
    fig.add_scatter(x=[labels[j] for j in jj.ravel()], y=[labels[i] for i in ii.ravel()], mode="markers",
                    marker=dict(size=max(30, 240 // len(labels)), symbol="square", opacity=0.01, color="black"),
                    customdata=[[int(i), int(j)] for i, j in zip(ii.ravel(), jj.ravel())], showlegend=False, name="cells",
                    hovertemplate="true %{y} · called %{x}<br>click to see these images<extra></extra>")
    if selected is not None:  # a frame on the cell itself (a marker kept its pixel size, off the cell when narrow)
        i, j = selected
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=dict(color="firebrick", width=3))
    title = "Share of each true label" if normalised else "Counts"
    source = "<br>".join(f"<sup>{line}</sup>" for line in source.split("<br>"))
    fig.update_layout(title=dict(text=f"{title}<br>{source}", font=dict(size=15)), height=450,
                      margin=dict(l=10, r=10, t=90, b=10), template="plotly_white", clickmode="event+select",
                      dragmode=False)
    n = len(labels)  # fixed ranges: the click markers' pixel size must not stretch the axes on a narrow window
    fig.update_xaxes(title="called by the model", side="bottom", type="category", range=[-0.5, n - 0.5])
    fig.update_yaxes(title="truth", type="category", range=[n - 0.5, -0.5])
    return fig


def clicked_cell(event) -> tuple[int, int] | None:
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    for point in points:
        data = point.get("customdata")
        data = list(data.values()) if isinstance(data, dict) else data
        if isinstance(data, (list, tuple)) and len(data) == 2:
            try:
                return int(data[0]), int(data[1])
            except (TypeError, ValueError):
                continue
    return None


def task_page(model_id: str) -> str | None:
    page = f"app_pages/{TASK_OF_MODEL.get(model_id, '')}.py"
    return page if model_id in TASK_OF_MODEL and (PROJECT_ROOT / page).is_file() else None


def output_section(p: ev.Picked, output: str) -> None:
    data = metrics.output_data(p.preds, output, p.card.classes.get(output))
    if data.n == 0:
        st.warning(f"No labelled rows for {output} in this evaluation.")
        return
    labels = data.labels
    d = ev.decision_ui(p, data, f"c_{output}")
    pred = metrics.decide(data.probs, d.threshold, d.positive)
    cm = metrics.confusion(data.y, pred, len(labels))
    st.caption(f"Decision rule: {d.describe(labels)}. {data.n} images; {int(np.trace(cm))} called correctly "
               f"({ev.pct(np.trace(cm) / data.n)}).")

    cell_key, seen_key = f"c_cell::{p.card.id}::{p.name}::{output}", f"c_seen::{p.card.id}::{p.name}::{output}"
    cells = [(i, j) for i in range(len(labels)) for j in range(len(labels))]
    fmt = {c: f"true {labels[c[0]]} → called {labels[c[1]]} ({cm[c]} images)" for c in cells}
    current = st.session_state.get(cell_key)
    selected = tuple(current) if current in cells else None
    src = p.short_source("<br>", n=data.n)
    a, b = st.columns(2)
    events = [a.plotly_chart(heatmap(cm, labels, False, src, selected), on_select="rerun", selection_mode="points",
                             key=f"c_counts_{output}_{p.card.id}_{p.name}", width="stretch"),
              b.plotly_chart(heatmap(cm, labels, True, src, selected), on_select="rerun", selection_mode="points",
                             key=f"c_norm_{output}_{p.card.id}_{p.name}", width="stretch")]
    # a click counts once: remember the last selection of each chart and act only when it changes
    seen = st.session_state.setdefault(seen_key, {})
    for n, event in enumerate(events):
        cell = clicked_cell(event)
        if cell != seen.get(n):
            seen[n] = cell
            if cell is not None:
                st.session_state[cell_key] = cell
    if st.session_state.get(cell_key) not in cells:
        errors = [c for c in cells if c[0] != c[1] and cm[c] > 0]
        st.session_state[cell_key] = max(errors, key=lambda c: cm[c]) if errors else cells[0]
    if st.session_state[cell_key] != selected:
        st.rerun()  # redraw the outline on the chosen cell
    cell = st.selectbox("Images of the cell", cells, key=cell_key, format_func=fmt.get,
                        help="Clicking a cell of either matrix chooses it here too.")
    gallery(p, data, pred, cell)


def gallery(p: ev.Picked, data: metrics.OutputData, pred: np.ndarray, cell: tuple[int, int]) -> None:
    labels = data.labels
    i, j = cell
    idx = np.flatnonzero((data.y == i) & (pred == j))
    st.markdown(f"**True {labels[i]}, called {labels[j]}: {len(idx)} images**")
    if not len(idx):
        st.info("No image falls in this cell at this threshold.")
        return
    order = idx[np.argsort(-data.probs[idx, j])]
    rows = data.rows.iloc[order]
    table = pd.DataFrame({"image": rows["item"].astype(str).to_numpy()})
    for c, lab in enumerate(labels):
        table[f"P({lab})"] = [ev.pct(v) for v in data.probs[order, c]]
    extra = [c for c in metrics.subgroup_columns(data.rows) if c in rows]
    for c in extra:
        table[c] = rows[c].to_numpy()
    paths = ev.item_paths(p, table["image"][:GALLERY])
    reachable = [k for k, v in paths.items() if v]
    version = p.predicted_by or f"{p.card.id} v{p.meta.get('model_version', p.card.version)}"
    target = task_page(p.card.id)
    if reachable and not may_read_server_files(current_user()):  # the images are files of the server's disk
        st.caption("The images of this evaluation are files on the server: they are shown to an administrator (with "
                   "sign-in on) or a browser on the server itself; their names are listed below.")
    elif not reachable and not any(Path(str(i)).suffix for i in table["image"][:GALLERY]):
        st.caption("The images of this evaluation are rows of image arrays (MHSMA's .npy files), not files: only their "
                   "names are listed.")
    elif not reachable:
        folder = p.meta.get("data_path") or p.meta.get("data") or "?"
        st.caption(f"The images of this evaluation are not reachable from this server (the data folder `{folder}` "
                   "is absent), so only their names are listed."
                   + (" That folder is generated from the shared data: the README's *Reproduce* commands rebuild it."
                      if "data_prepared" in folder else ""))
    else:
        cols = st.columns(4)
        for n, (item, k) in enumerate(zip(table["image"][:GALLERY], order[:GALLERY])):
            col = cols[n % 4]
            path = paths.get(item)
            img = ev.thumbnail(path) if path else None
            if img is None:
                col.caption(f"`{shown_name(item)}`: not reachable")
                continue
            probs = " · ".join(f"{lab} {ev.pct(data.probs[k, c])}" for c, lab in enumerate(labels))
            col.image(img, caption=f"{shown_name(item)} — {probs} ({version})", width="stretch")
            if col.button("Open in what-if", key=f"c_whatif_{data.output}_{n}", disabled=target is None,
                          help=("The task page for this model is not installed." if target is None else
                                f"The task page runs the installed {p.card.file}, not {p.predicted_by}: it trained "
                                "on this image, so its answer can differ from the one shown here."
                                if p.predicted_by else None)):
                hand_over(p.card.id, path, p.meta.get("layout"))
                st.switch_page(target)
    with st.expander(f"All {len(table)} images of this cell"):
        st.dataframe(table, hide_index=True, width="stretch")


def shown_name(item: str) -> str:
    """The file with its folder: HuSHeM repeats image_004.BMP in every class folder."""
    return "/".join(Path(item).parts[-2:])


# --- page ------------------------------------------------------------------------------------------------------------
picked = ev.pick("c", classes_only=True)
if picked is not None:
    ev.show_source(picked)
    st.caption("Only classifiers are listed: detection and segmentation evaluations have no confusion matrix, "
               "their figures are on the Metrics page.")
    outputs = metrics.classification_outputs(picked.preds)
    output = st.radio("Output", outputs, horizontal=True, key="c_output") if len(outputs) > 1 else outputs[0]
    output_section(picked, output)

"""What-if testing shared by every task page: perturb, paint, occlude, explain, and watch the prediction move.

Task pages embed one call:

    from ui.whatif import whatif_panel
    whatif_panel(image.pixels, predict, key="embryo-whatif", explain=explain,
                 cache_key=f"{model.id}@{model.card.version}")

All image work lives in core.whatif (pure, tested without Streamlit); this module only draws widgets.
"""
from __future__ import annotations

import gc
import hashlib
import io
import json
from datetime import datetime, timezone
from functools import partial
from typing import Callable

import cv2
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core import whatif
from core.explain import overlay
from core.results import Wording

Outputs = dict[str, dict[str, float]]
DISPLAY_PX = 420  # images are drawn at most this wide; predictions always use the full image
CANVAS_PX = 280  # fits the controls column from a 1280 px wide window (380 was cut off there)
MAX_SIDE = 1600  # larger images are reduced first: bounded memory in the shared caches, and models see ≤ 640 px
DRAW_TOOLS = {"freedraw": "Brush", "rect": "Rectangle", "circle": "Circle", "polygon": "Polygon"}


def whatif_panel(
    image: np.ndarray,
    predict: Callable[[np.ndarray], Outputs],
    *,
    key: str,
    explain: Callable[[np.ndarray, str], np.ndarray | None] | None = None,
    ultrasound: bool = False,
    detail: Callable[[np.ndarray], pd.DataFrame] | None = None,
    cache_key: str | None = None,
    predict_batch: Callable[[list[np.ndarray]], list[Outputs]] | None = None,
    version: str | None = None,
    wording: Wording | None = None,
    thresholds: dict[str, float] | None = None,
) -> None:
    """Draw the what-if panel for one image (call it inside a tab or expander of a task page).

    Parameters
    ----------
    image
        The uploaded image as uint8 RGB, H x W x 3 (e.g. ``InputImage.pixels``).
    predict
        ``predict(image) -> {output: {label: probability}}`` for one uint8 RGB image of any size, probabilities in
        [0, 1]. Called on the original and on every modified image; results are cached (see ``cache_key``).
        For a registry model: ``core.whatif.model_predict(model)``.
    key
        Unique widget-key prefix for this panel on the page (e.g. ``"embryo-whatif"``).
    explain
        Optional ``explain(image, output) -> heat map in [0, 1]`` (any size; None when there is none) for the
        predicted label of one output, e.g. ``lambda im, out: model.explain(im, out)``. When given, the "Heat map"
        tab overlays it on the original image (and, when the user switches it on, on the modified image, then
        recomputed after every change) with an opacity slider, for every output.
        For a registry model: ``core.whatif.model_explain(model)`` (returns None where the backend cannot explain).
    ultrasound
        Adds the ultrasound perturbations (speckle noise, gain in dB) to the controls.
    detail
        Optional ``detail(image) -> pandas.DataFrame``, one row per object (e.g. per sperm head), shown under each
        image. The panel shows the row count for both images ("heads: 7 → 5"), and when both frames have a
        ``class`` column and centre columns ``x``, ``y`` (pixels), which objects changed class: objects are
        matched by nearest centre, after mapping original centres through the rotation/flip/zoom applied.
    cache_key
        A string naming the model and its version (e.g. ``"embryo-grade@1.2"``). Predictions are cached with
        st.cache_data keyed on (cache_key, image sha256, settings), so an unchanged setting never recomputes.
        Default: derived from a registry model found in ``predict`` (bound method or closure), else ``key``. Pass it
        whenever the same ``key`` can show different models.
    predict_batch
        Optional ``predict_batch(images) -> [outputs per image]``; used by the occlusion map and the sensitivity
        curve, which run batched. Default: ``predict`` called per image. For a registry model:
        ``core.whatif.model_predict_batch(model)``.
    version
        Model version shown beside probabilities (default: taken from ``cache_key`` after "@", if any).
    wording
        How outputs and labels read (for a registry model: ``card.wording``); by default the names ``predict``
        returns, "_" read as a space. Its ``value`` names what the numbers are (default "probability").
    thresholds
        Decision thresholds per binary output (a card's [thresholds]), so the label shown is the one the task page
        shows; without them the most probable label is shown.

    What the user gets
    ------------------
    - Adjust: brightness, contrast, gamma, vignette, Gaussian blur, noise, rotation, flip, zoom, JPEG quality (and
      speckle and gain with ``ultrasound=True``), each re-predicting at once; original and modified side by side
      with both outputs and the change (arrows, colour); a reset button.
    - Paint: draw on the image (streamlit-drawable-canvas, with its own undo/redo) and choose how painted pixels
      are filled: background, blur, image mean, or a colour; a reset button clears the drawing.
    - Heat map (when ``explain`` is given), occlusion map (patch size chosen by the user, batched, progress bar,
      overlay opacity), sensitivity curve (one perturbation over a range, batched, progress bar, Plotly).
    - Save / load: the experiment as one .zip (settings.json, original.png, mask.png, edited.png,
      predictions.json); loading it restores the settings and the drawing's effect and re-predicts.

    Nothing here raises into the page: a failing ``predict``/``explain``/``detail`` is shown as a message.
    """
    image = _rgb(image)
    if max(image.shape[:2]) > MAX_SIDE:
        scale = MAX_SIDE / max(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        st.caption(f"What-if works on a copy reduced to {image.shape[1]} × {image.shape[0]} pixels, so both sides "
                   "of every comparison are predicted at the same size.")
    ck = cache_key or whatif.model_key(predict) or key
    version = version or (ck.split("@", 1)[1].split("#")[0] if "@" in ck else None)
    _panel(image, predict, key, explain, ultrasound, detail, ck, predict_batch, version, wording or Wording(),
           thresholds or {})


# --- cached work (keyed on strings; the leading-underscore arguments are not hashed) ---------------------------------
@st.cache_data(max_entries=32, show_spinner=False)
def _edited(sha: str, settings_json: str, mask_sha: str | None, _image, _mask) -> tuple[np.ndarray, str]:
    out = whatif.apply_edit(_image, json.loads(settings_json), _mask)
    return out, _sha(out)


@st.cache_data(max_entries=512, show_spinner=False)
def _predicted(ck: str, sha: str, _image, _predict) -> whatif.Outputs:
    return _predict(_image)


@st.cache_data(max_entries=64, show_spinner=False)
def _explained(ck: str, sha: str, output: str, _image, _explain) -> np.ndarray | None:
    heat = _explain(_image, output)
    return None if heat is None else np.asarray(heat, np.float32)


@st.cache_data(max_entries=64, show_spinner=False)
def _detailed(ck: str, sha: str, _image, _detail) -> pd.DataFrame:
    return _detail(_image)


@st.cache_data(max_entries=32, show_spinner=False)
def _png_bytes(sha: str, _image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_image).save(buf, format="PNG")
    return buf.getvalue()


def _encode_jpeg(image: np.ndarray) -> bytes:
    """For drawing: st.image turns any other input into a JPEG itself, on every run (a PNG it decodes first)."""
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


@st.cache_data(max_entries=64, show_spinner=False)
def _display_jpeg(sha: str, _image) -> bytes:
    """The image as drawn (at most DISPLAY_PX wide), encoded once per distinct image."""
    return _encode_jpeg(_display(_image))


@st.cache_data(max_entries=64, show_spinner=False)
def _overlay_jpeg(ck: str, sha: str, output: str, opacity: float, _image, _heat) -> bytes:
    return _encode_jpeg(overlay(_display(_image), _heat, opacity))


def _sha(image: np.ndarray) -> str:
    h = hashlib.sha256(image.tobytes())
    h.update(str(image.shape).encode())
    return h.hexdigest()


def _rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"whatif_panel needs a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _display(image: np.ndarray, width: int = DISPLAY_PX) -> np.ndarray:
    """A copy at most `width` pixels wide, for drawing (what is predicted is always the full image)."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


_FROZEN: set[str] = set()


def _freeze_heap(ck: str) -> None:
    """Once per model, after it has run: move every object alive now (frameworks, model graphs) out of the cyclic
    garbage collector's reach. A full collection walks ~600k objects once TensorFlow and PyTorch are imported and
    took 0.3-3 s on this 2-core machine, stalling slider updates at random; frozen objects are never collected,
    which suits these long-lived ones."""
    if ck not in _FROZEN:
        _FROZEN.add(ck)
        gc.freeze()


def _batch(predict, predict_batch):
    return predict_batch or (lambda images: [predict(im) for im in images])


def _safe(what: str, fn, *args):
    """fn(*args), or None after telling the user what failed (never a traceback on the page)."""
    try:
        return fn(*args)
    except Exception as exc:  # the callables come from pages and models; any failure is shown, not raised
        st.error(f"{what} failed: {exc}", icon=":material/error:")
        return None


def _computed_on_click(store: dict, run_key, button: str, button_key: str, icon: str, progress: str, what: str,
                       compute):
    """A button that runs compute(progress_callback) under a progress bar and keeps its result for run_key (one
    result at a time); returns the kept result for run_key, None until it has been computed."""
    if st.button(button, key=button_key, icon=icon):
        bar = st.progress(0.0, text=f"{progress}…")
        result = _safe(what, compute, lambda f: bar.progress(f, text=f"{progress}… {f:.0%}"))
        bar.empty()
        if result is not None:
            store.clear()
            store[run_key] = result
    return store.get(run_key)


# --- the panel -------------------------------------------------------------------------------------------------------
@st.fragment
def _panel(image, predict, key, explain, ultrasound, detail, ck, predict_batch, version, wording, thresholds):
    ss = st.session_state
    sha = _sha(image)
    if ss.get(f"{key}-image") not in (None, sha):  # a new image starts unedited: no sliders or paint carried over
        _reset_settings(key)
        _reset_canvas(key)
        ss.pop(f"{key}-loaded", None)  # nor a loaded experiment's message
    ss[f"{key}-image"] = sha
    _handle_loaded(key, image, sha)
    loaded_slot = st.empty()  # filled once the edited image is known

    controls, results = st.columns([1.2, 2], gap="large")
    with controls:
        adjust_tab, paint_tab = st.tabs(["Adjust", "Paint & occlude"])
        with adjust_tab:
            settings = _adjust_controls(key, ultrasound)
        with paint_tab:
            mask, mask_mode, mask_colour = _paint_controls(key, image)
    settings = {**settings, "mask_mode": mask_mode, "mask_colour": mask_colour}
    settings_json = json.dumps(settings, sort_keys=True)
    mask_sha = None if mask is None else hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()
    edited, edited_sha = _edited(sha, settings_json, mask_sha, image, mask)
    _say_loaded(key, edited, loaded_slot)
    original_out = _safe("Prediction on the original image", _predicted, ck, sha, image, predict)
    _freeze_heap(ck)
    modified_out = _safe("Prediction on the modified image", _predicted, ck, edited_sha, edited, predict)
    with results:
        _comparison(image, edited, original_out, modified_out, settings, mask, version, sha, edited_sha, wording,
                    thresholds)
        if detail is not None:
            _detail_comparison(ck, image, sha, edited, edited_sha, detail, settings)

    ss[f"{key}-state"] = {"settings": settings, "mask": mask, "edited": edited,
                          "predictions": {"original": original_out, "modified": modified_out}}
    if original_out is None:
        return
    batch = _batch(predict, predict_batch)
    tabs = st.tabs(["Heat map", "Occlusion map", "Sensitivity curve", "Save / load"], key=f"{key}-tabs",
                   on_change="rerun")
    with tabs[0]:
        if tabs[0].open:
            _heatmap_tab(key, ck, image, sha, edited, edited_sha, explain, original_out, wording)
    with tabs[1]:
        if tabs[1].open:
            _occlusion_tab(key, ck, image, sha, edited, edited_sha, batch, wording, thresholds)
    with tabs[2]:
        if tabs[2].open:
            _sensitivity_tab(key, ck, image, sha, mask, settings, batch, ultrasound, wording)
    with tabs[3]:
        if tabs[3].open:
            _save_load_tab(key, image, ck)


def _slider_key(key: str, name: str) -> str:
    return f"{key}-p-{name}"


def _reset_settings(key: str) -> None:
    for p in whatif.PERTURBATIONS.values():
        st.session_state[_slider_key(key, p.name)] = p.identity
    st.session_state.pop(f"{key}-kept", None)


def _adjust_controls(key: str, ultrasound: bool) -> dict:
    ss = st.session_state
    # Streamlit forgets a widget's value after a run that did not draw it (a bad upload in between): the last
    # settings are kept aside and put back
    kept = ss.setdefault(f"{key}-kept", {})
    settings = {}
    cols = st.columns(2)
    for i, p in enumerate(whatif.perturbations(ultrasound)):
        k = _slider_key(key, p.name)
        if k not in ss:
            ss[k] = kept.get(p.name, p.identity)
        with cols[i % 2]:
            if p.choices:
                settings[p.name] = st.selectbox(p.label, p.choices, key=k)
            else:
                settings[p.name] = st.slider(p.label, p.lo, p.hi, step=p.step, key=k)
    st.button("Reset adjustments", key=f"{key}-reset", on_click=_reset_settings, args=(key,),
              icon=":material/restart_alt:")
    kept.update(settings)
    return {**whatif.DEFAULT_SETTINGS, **settings}


def _reset_canvas(key: str) -> None:
    ss = st.session_state
    ss[f"{key}-canvas-n"] = ss.get(f"{key}-canvas-n", 0) + 1
    ss.pop(f"{key}-drawing", None)
    ss.pop(f"{key}-loaded-mask", None)


def _paint_controls(key: str, image: np.ndarray) -> tuple[np.ndarray | None, str, str]:
    from streamlit_drawable_canvas import st_canvas  # raises outside a Streamlit runtime: import here only

    ss = st.session_state
    tool = st.selectbox("Tool", list(DRAW_TOOLS), format_func=DRAW_TOOLS.get, key=f"{key}-tool")
    mode = st.selectbox("Painted pixels are", list(whatif.MASK_MODES), format_func=whatif.MASK_MODES.get,
                        key=f"{key}-mask-mode")  # full width: in half a column its choices were cut to "Fil…"
    c1, c2 = st.columns([3, 1])
    stroke = c1.slider("Brush size (px)", 3, 60, 20, key=f"{key}-brush")
    ss.setdefault(f"{key}-mask-colour", "#000000")  # set here, not as the widget's default: a loaded experiment sets it
    colour = c2.color_picker("Colour", key=f"{key}-mask-colour", disabled=mode != "colour")
    h, w = image.shape[:2]
    shown = cv2.resize(image, (CANVAS_PX, max(1, round(h * CANVAS_PX / w))), interpolation=cv2.INTER_AREA)
    result = st_canvas(
        fill_color="rgba(255, 0, 255, 0.45)", stroke_width=stroke, stroke_color="rgba(255, 0, 255, 0.7)",
        background_image=_png_bytes(_sha(shown), shown), height=shown.shape[0], width=shown.shape[1],
        drawing_mode=tool, return_image_data=True, initial_drawing=ss.get(f"{key}-drawing"),
        key=f"{key}-canvas-{ss.get(f'{key}-canvas-n', 0)}",
    )
    st.button("Clear drawing", key=f"{key}-canvas-reset", on_click=_reset_canvas, args=(key,),
              icon=":material/ink_eraser:", help="Undo and redo are in the canvas toolbar.")
    mask = whatif.canvas_mask(result.image_data, image.shape)
    loaded = ss.get(f"{key}-loaded-mask")
    if mask is not None:
        ss.pop(f"{key}-loaded-mask", None)
    elif loaded is not None:  # the canvas redraws a loaded experiment's strokes but returns no pixels until drawn on
        mask = cv2.resize(loaded.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    ss[f"{key}-drawing-now"] = result.json_data
    if mask is None:
        st.caption("Draw over a region (e.g. a structure you think drives the answer) to see how the prediction "
                   "changes without it.")
    else:
        st.caption(f"Painted: {mask.mean():.1%} of the image.")
    return mask, mode, colour


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def _comparison(original, edited, original_out, modified_out, settings, mask, version, sha, edited_sha,
                wording: Wording, thresholds: dict[str, float]) -> None:
    left, right = st.columns(2)
    what = whatif.describe(settings)
    if mask is not None:
        fill = whatif.MASK_MODES[settings["mask_mode"]].lower()
        what = ", ".join(filter(None, [f"painted {mask.mean():.1%} ({fill})", what]))
    with left:
        st.image(_display_jpeg(sha, original), caption="Original", width="stretch", output_format="JPEG")
    with right:
        st.image(_display_jpeg(edited_sha, edited), caption="Modified", width="stretch", output_format="JPEG")
    if original_out is None or modified_out is None:
        return
    ver = f" · model v{version}" if version else ""
    before, after = whatif.predicted(original_out, thresholds), whatif.predicted(modified_out, thresholds)
    value = wording.value.capitalize()
    for output in original_out:
        title, says = wording.title(output), partial(wording.says, output)
        a, b = before[output], after.get(output)
        p0 = original_out[output][a]
        p1 = modified_out.get(output, {}).get(b, float("nan"))
        change = round(100 * (modified_out[output][a] - p0), 1) + 0.0 if a in modified_out.get(output, {}) else 0.0
        labels = list(original_out[output])
        rule = f"; “{says(labels[1])}” is shown from {_pct(thresholds[output])} on, as on the task page" \
            if output in thresholds and len(labels) == 2 else ""  # PCOS 40 % reads "PCOS" from its 35 % threshold
        with left:
            st.metric(f"{title}: {says(a)}", _pct(p0), help=f"{value} for the label shown{ver}{rule}")
        with right:
            colour = "gray" if abs(change) < 0.5 else ("blue" if change > 0 else "orange")
            st.metric(f"{title}: {says(b)}", _pct(p1), delta=f"{change:+.1f} pts for '{says(a)}'",
                      delta_color=colour, delta_arrow="auto" if abs(change) >= 0.05 else "off",
                      help=f"{value} for the label shown{ver}{rule}; the change is for the original's label")
        if b != a:
            st.warning(f"**{title}**: the prediction changed from **{says(a)}** to **{says(b)}**.",
                       icon=":material/swap_horiz:")
    st.markdown(_change_table(whatif.compare(original_out, modified_out), wording))
    st.caption(f"Changes applied: {what or 'none'}{ver}", help="The modified image is what the model saw.")


def _change_table(table: pd.DataFrame, wording: Wording) -> str:
    """whatif.compare's rows as a Markdown table, each change coloured by its direction (a pandas Styler through
    st.table cost about a sixth of every slider update)."""
    lines = ["| output | label | original | modified | change |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        c = round(row.change_pts, 1) + 0.0
        mark, colour = ("▲", "blue") if c > 0.05 else ("▼", "orange") if c < -0.05 else ("•", "gray")
        lines.append(f"| {wording.title(row.output)} | {wording.says(row.output, row.label)} | {_pct(row.original)} | "
                     f"{_pct(row.modified)} | :{colour}[{mark} {c:+.1f} pts] |")
    return "\n".join(lines)


def _detail_comparison(ck, image, sha, edited, edited_sha, detail, settings) -> None:
    before = _safe("Per-object detail (original)", _detailed, ck, sha, image, detail)
    after = _safe("Per-object detail (modified)", _detailed, ck, edited_sha, edited, detail)
    if before is None or after is None:
        return
    st.markdown(f"**Objects found: {len(before)} → {len(after)}**")
    try:
        matched = whatif.compare_objects(before, after, image.shape, settings)
    except ValueError:
        matched = None
    if matched is not None:
        n_changed = int(matched.changed.sum())
        st.caption(f"{n_changed} object(s) changed class or were not found again (matched by nearest centre).")
        if n_changed:
            st.dataframe(matched[matched.changed], hide_index=True, width="stretch")
    left, right = st.columns(2)
    left.dataframe(before, hide_index=True, width="stretch")
    right.dataframe(after, hide_index=True, width="stretch")


def _heatmap_tab(key, ck, image, sha, edited, edited_sha, explain, original_out, wording: Wording) -> None:
    if explain is None:
        st.info("This model has no gradient heat map; the occlusion map is a model-agnostic alternative.",
                icon=":material/info:")
        return
    c1, c2 = st.columns(2)
    opacity = c1.slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}-heat-opacity")
    follow = c2.toggle("Also for the modified image (recomputed after every change, slower)", key=f"{key}-heat-follow")
    st.caption("Grad-CAM: red areas raised the predicted label's probability most. It shows where the model looked, "
               "not why, and can be wrong.")
    shown = [(image, sha, "original")] + ([(edited, edited_sha, "modified")] if follow else [])
    for output in original_out:
        cols = st.columns(2)
        for col, (img, s, name) in zip(cols, shown):
            heat = _safe(f"Heat map ({output}, {name})", _explained, ck, s, output, img, explain)
            with col:
                if heat is None:
                    st.caption(f"No heat map for {wording.title(output)}.")
                else:
                    st.image(_overlay_jpeg(ck, s, output, opacity, img, heat),
                             caption=f"{wording.title(output)} · {name}", width="stretch", output_format="JPEG")


def _occlusion_tab(key, ck, image, sha, edited, edited_sha, batch, wording: Wording,
                   thresholds: dict[str, float]) -> None:
    ss = st.session_state
    st.caption("Covers one square at a time with the image's mean colour and re-predicts: warm areas are where "
               "covering lowers the predicted label's probability most. Model-agnostic, beside Grad-CAM.")
    c1, c2, c3 = st.columns(3)
    patch_pct = c1.slider("Patch size (% of image side)", 5, 50, 15, 1, key=f"{key}-occ-patch")
    target = c2.radio("Image", ["original", "modified"], horizontal=True, key=f"{key}-occ-target")
    opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}-occ-opacity")
    img, s = (image, sha) if target == "original" else (edited, edited_sha)
    patch = max(2, round(patch_pct / 100 * min(img.shape[:2])))
    stride = max(1, patch // 2)
    n = len(whatif._positions(img.shape[0], patch, stride)) * len(whatif._positions(img.shape[1], patch, stride))
    run_key = (ck, s, patch)
    result = _computed_on_click(
        ss.setdefault(f"{key}-occ", {}), run_key, f"Compute occlusion map ({n} predictions)", f"{key}-occ-run",
        ":material/grid_view:", "Occluding", "Occlusion map",
        lambda progress: whatif.occlusion_map(img, batch, patch, stride, "mean", None, progress, thresholds))
    if result is None:
        return
    for output, label in result.labels.items():
        cols = st.columns([1, 2])
        cols[0].image(overlay(_display(img), result.heat(output), opacity), width="stretch",
                      caption=f"{wording.title(output)}: where covering lowers '{wording.says(output, label)}' most")
        cols[1].metric(f"{wording.title(output)}: largest drop of '{wording.says(output, label)}' by one patch",
                       f"{100 * result.max_drop[output]:.1f} pts",
                       help=f"Patch {result.patch} px, stride {result.stride} px, {result.n_patches} patches; the map "
                            "shows the mean drop of the patches covering each pixel.")


def _sensitivity_tab(key, ck, image, sha, mask, settings, batch, ultrasound, wording: Wording) -> None:
    import plotly.express as px

    ss = st.session_state
    names = [p.name for p in whatif.perturbations(ultrasound)]
    c1, c2, c3 = st.columns([1, 2, 1])
    name = c1.selectbox("Perturbation", names, format_func=lambda n: whatif.PERTURBATIONS[n].label,
                        key=f"{key}-sens-name")
    p = whatif.PERTURBATIONS[name]
    if p.choices:
        values = whatif.sweep_values(name)
        c2.caption("Every flip mode is tried.")
    else:
        lo, hi = c2.slider("Range", p.lo, p.hi, (p.lo, p.hi), step=p.step, key=f"{key}-sens-range-{name}")
        n = c3.number_input("Steps", 3, 61, 21, key=f"{key}-sens-n")
        values = whatif.sweep_values(name, n, lo, hi)
    st.caption("The other adjustments and the painting are held as they are now.")
    run_key = (ck, sha, json.dumps(settings, sort_keys=True), None if mask is None else int(mask.sum()), name,
               json.dumps(values))
    curve = _computed_on_click(
        ss.setdefault(f"{key}-sens", {}), run_key, f"Compute curve ({len(values)} predictions)", f"{key}-sens-run",
        ":material/show_chart:", "Predicting", "Sensitivity curve",
        lambda progress: whatif.sensitivity_curve(
            whatif.apply_mask(image, mask, settings["mask_mode"], settings["mask_colour"]), batch, name, values,
            settings, None, progress))
    if curve is None:
        return
    for output, part in curve.groupby("output", sort=False):
        part = part.assign(label=part["label"].map(partial(wording.says, output)))
        fig = px.line(part, x="value", y="probability", color="label", markers=True,
                      labels={"value": p.label, "probability": wording.value.capitalize()}, title=wording.title(output))
        fig.update_yaxes(range=[0, 1], tickformat=".0%")
        current = settings.get(name)
        if not p.choices:
            fig.add_vline(x=current, line_dash="dot", annotation_text="current")
        fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key=f"{key}-sens-fig-{output}")


def _save_load_tab(key, image, ck) -> None:
    ss = st.session_state
    state = ss.get(f"{key}-state")
    if state and state["predictions"]["modified"] is not None:
        exp = whatif.Experiment(image, state["settings"], state["mask"], state["edited"], state["predictions"],
                                ss.get(f"{key}-drawing-now"),
                                {"model": ck, "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        st.download_button("Download this experiment (.zip)", whatif.save_experiment(exp),
                           file_name=f"{key}-whatif.zip", mime="application/zip", key=f"{key}-save",
                           icon=":material/download:", on_click="ignore")
        st.caption("One file: settings.json, original.png, mask.png (if painted), edited.png, predictions.json.")
    st.file_uploader("Load an experiment (.zip)", type=["zip"], key=f"{key}-load", on_change=_load_experiment,
                     args=(key,))


def _load_experiment(key: str) -> None:
    """Callback (runs before the rerun, so widget values may still be set): restore settings and drawing."""
    ss = st.session_state
    upload = ss.get(f"{key}-load")
    if upload is None:  # the file taken out of the uploader: its message goes with it
        ss.pop(f"{key}-loaded", None)
        return
    try:
        exp = whatif.load_experiment(upload.getvalue())
    except whatif.ExperimentError as exc:
        ss[f"{key}-loaded"] = {"error": str(exc)}
        return
    for p in whatif.PERTURBATIONS.values():
        ss[_slider_key(key, p.name)] = exp.settings.get(p.name, p.identity)
    ss.pop(f"{key}-kept", None)
    ss[f"{key}-mask-mode"] = exp.settings.get("mask_mode", "background")
    ss[f"{key}-mask-colour"] = exp.settings.get("mask_colour", "#000000")
    _reset_canvas(key)
    ss[f"{key}-drawing"] = exp.drawing
    ss[f"{key}-loaded-mask"] = exp.mask
    ss[f"{key}-loaded"] = {"experiment": exp}


def _handle_loaded(key: str, image: np.ndarray, sha: str) -> None:
    """Note what a loaded experiment is (was it made on this image?), once; _say_loaded says it."""
    ss = st.session_state
    loaded = ss.get(f"{key}-loaded")
    if loaded and ss.get(f"{key}-load") is None:  # its file is gone (taken out, or the uploader was not drawn)
        ss.pop(f"{key}-loaded")
    elif loaded and "experiment" in loaded:  # worked out once
        exp = loaded.pop("experiment")
        loaded["message"] = (f"Experiment loaded (model {exp.meta.get('model', 'unknown')}, saved "
                             f"{exp.meta.get('saved', '?')}): settings restored")
        loaded["edited_sha"] = _sha(exp.edited) if exp.edited is not None else None
        if _sha(exp.original) != sha:
            loaded["other_image"] = True


def _say_loaded(key: str, edited: np.ndarray, slot) -> None:
    """Said while the experiment's file stays in the uploader (the panel reruns at once after a load, and a message
    shown once was gone before it could be read); whether it reproduces is judged on the edited image on screen."""
    loaded = st.session_state.get(f"{key}-loaded")
    if not loaded:
        return
    if "error" in loaded:
        slot.error(f"Could not load the experiment: {loaded['error']}", icon=":material/error:")
        return
    if loaded.get("other_image"):
        slot.success(loaded["message"] + ". It was made on a different image than the one shown here: its settings "
                   "now apply to this image, and the painted strokes are redrawn at the same place.",
                   icon=":material/upload_file:")
    elif loaded.get("edited_sha") == _sha(edited):
        slot.success(loaded["message"] + "; the edited image on screen is the saved one, exactly.",
                   icon=":material/upload_file:")
    else:
        slot.warning(loaded["message"] + ", but the edited image on screen differs from the saved one (e.g. painted "
                   "strokes changed since): its predictions may differ.", icon=":material/upload_file:")

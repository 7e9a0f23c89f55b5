"""Batch scoring: many images, zips or a folder through one model; results table, CSV/Excel, skipped files."""
import base64
import time
from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from core import batch, records, registry, report
from ui.common import UPLOAD_TYPES, card_expander, escape_markdown
from ui.records import may_read_server_files, record_prediction, require_login

user = require_login(sidebar=False)
st.title("Batch scoring")
st.markdown(
    "Score a whole set of images with one model: upload image files or zips"
    + (", or give a folder or zip on the machine running this app" if may_read_server_files(user) else "")
    + ". Files that cannot be read are listed with the reason and skipped; the rest are scored in "
    "batches (on the GPU when there is one). Every result is saved in the case records with the case code from the "
    "sidebar, and can be downloaded as CSV or Excel."
)

try:
    cards = {c.id: c for c in registry.cards()}
except registry.CardError as exc:
    st.error(f"A model card could not be read: {exc}")
    st.stop()
if not cards:
    st.info("No models are installed in `weights/` yet. Train one with `python -m core train MODEL_ID --data PATH`.")
    st.stop()

# classifiers first: their table has the grades. A time-lapse model stages a whole recording: scored one still at a
# time it has no sequence to decode (a day-3 photo read "blastocyst, tHB"), so it stays on its own page.
ids = sorted((i for i in cards if cards[i].task != "timelapse"), key=lambda i: cards[i].framework == "ultralytics")
if not ids:
    st.info("Only time-lapse staging is installed: it stages whole recordings, on its own page.")
    st.stop()
model_id = st.selectbox("Model", ids, format_func=lambda i: f"{cards[i].title} ({i}, v{cards[i].version})",
                        help="Time-lapse staging is not here: it needs a whole recording (its own page).")
card = cards[model_id]
card_expander(card)

options = {}
if model_id == "sperm-seg":  # fields are measured: one calibration for the set, and pooled normal forms below
    from ui.sperm import field_settings

    options["um_per_px"], options["acrosome_criterion"] = field_settings("batch", where=st.columns([1, 2])[0])
if card.task == "embryo":  # a plate is graded on one culture day, which decides the quality caveat and the ranking
    from core.tasks.embryo import CULTURE_DAY_NAMES

    day_name = st.radio("Culture day", list(CULTURE_DAY_NAMES), horizontal=True, key="batch_day",
                        help="As on the Embryo grading page: day-3 quality is not reliable and a day-3 'blastocyst' is "
                             "questioned; not given, the model's stage decides.")
    if CULTURE_DAY_NAMES[day_name] is not None:
        options["day"] = CULTURE_DAY_NAMES[day_name]

choice = st.radio("Images", ["Upload files", "Folder or zip on this machine"] if may_read_server_files(user)
                  else ["Upload files"],
                  horizontal=True, key="batch_images")
if choice == "Upload files":
    uploads = st.file_uploader("Images or zip files of images", type=UPLOAD_TYPES + ["zip"], accept_multiple_files=True)
    ready = bool(uploads)
else:
    folder = st.text_input("Folder or zip file", placeholder="/data/plates/2026-03-04")
    ready = bool(folder.strip())


def gather() -> tuple[list, list]:
    """The chosen inputs: sources to score, and the files that cannot be used."""
    if choice == "Upload files":
        return batch.uploads((f.name, f.getvalue()) for f in uploads)
    return batch.expand([Path(folder.strip()).expanduser()])


def score(sources: list, result: dict) -> None:
    """Score the sources into `result`, which is kept in the session from the start: a click during the run restarts
    the page mid-loop (not an Exception), and what was scored (and saved) must still be shown."""
    loaded = any(s.model_id == model_id for s in registry.status())
    bar = st.progress(0.0, text=f"Scoring {len(sources)} images with {model_id}…" if loaded else
                      f"Loading {model_id} (once per server start), then scoring {len(sources)} images…")
    result["running"], start = True, time.perf_counter()
    try:
        for progress in batch.run(model_id, sources, case_code=result["case_code"], user=user.name if user else None,
                                  keep_images=bool(st.session_state.get("keep_image")), thumbnails=True,
                                  options=options):
            result["items"] = result["items"] + progress.items  # a new list: a page drawn meanwhile keeps its own
            result["record_error"] = result["record_error"] or progress.record_error
            result["rate"], result["done"] = progress.scored_per_s, result["done"] + len(progress.items)
            result["finished"] = result["done"] >= result["total"]  # before the bar: a click may stop the run there
            bar.progress(progress.done / progress.total, text=progress.line())
        result["finished"] = True
    except Exception as exc:  # noqa: BLE001 - e.g. the model cannot be loaded; keep what was scored
        st.error(f"Scoring stopped: {type(exc).__name__}: {exc}")
    finally:
        result["seconds"] += time.perf_counter() - start
        result["running"] = False


inputs_key = (model_id, choice, tuple(f.name for f in uploads) if choice == "Upload files" else folder.strip())
if st.button("Score", type="primary", disabled=not ready, icon=":material/play_arrow:"):
    st.session_state.pop("batch_result", None)  # a run that fails must not leave the last run's table on screen
    sources, skipped = gather()
    if not sources:
        st.error("No images found to score."
                 + (escape_markdown(f" {skipped[0].name}: {skipped[0].error}") if skipped else ""))
    else:
        result = st.session_state["batch_result"] = {
            "model": model_id, "items": list(skipped), "done": 0, "total": len(sources), "finished": False,
            "seconds": 0.0, "rate": 0.0, "record_error": None, "options": options, "inputs": inputs_key,
            "case_code": (st.session_state.get("case_code") or "").strip() or None}
        score(sources, result)

result = st.session_state.get("batch_result")
for _ in range(600):  # an interrupted run may still be finishing its last images in the background: wait for them
    if not (result and result.get("running")):
        break
    time.sleep(0.2)
if result and not result["finished"] and not result.get("running") and result.get("inputs") == inputs_key:
    done_names = {i.name for i in result["items"]}
    remaining = [s for s in gather()[0] if s.name not in done_names]
    if remaining and st.button(f"Score the remaining {len(remaining)} images", icon=":material/play_arrow:"):
        score(remaining, result)

result = st.session_state.get("batch_result")
if result:
    items = list(result["items"])  # one snapshot for every figure and table below
    scored = [i for i in items if i.ok]
    skipped = [i for i in items if not i.ok]
    st.subheader(f"Results: {result['model']}" + (f" · case {escape_markdown(result['case_code'])}" if result["case_code"] else ""))
    st.markdown(f"**{len(scored)}** scored, **{len(skipped)}** skipped, in {result['seconds']:.1f} s including "
                f"loading the model; scoring ran at {result['rate']:.1f} images/s.")
    if not result.get("finished", True):
        st.warning(f"Scoring was interrupted after {result['done']} of {result['total']} images (the page was used "
                   "while it ran): those are below, and the scored ones saved. Score the remaining ones with the "
                   "button above; Score would save the whole set again.", icon=":material/pause_circle:")
    if result["record_error"]:
        st.warning(result["record_error"], icon=":material/database:")
    elif ids := [i.record_id for i in scored if i.record_id is not None]:
        st.caption(f"Saved as {len(ids)} case record{'s' * (len(ids) != 1)} in {records.describe_url()}"
                   + (f" (from #{min(ids)} to #{max(ids)}; records made elsewhere meanwhile fall between them)."
                      if len(ids) > 1 else f" (#{ids[0]})."))
    if scored and result["model"] == "sperm-seg":
        from core.tasks.sperm import pooled_prediction, unique_fields
        from ui.sperm import summary_view

        fields = unique_fields([i.prediction for i in scored])
        st.markdown(f"**Normal forms pooled over the {len(fields)} field{'s' * (len(fields) != 1)}** (at "
                    f"{result.get('options', {}).get('um_per_px', 0):.4g} µm per pixel"
                    + (f"; {len(scored) - len(fields)} given twice, counted once" if len(fields) < len(scored) else "")
                    + "):")
        pooled = pooled_prediction([i.prediction for i in scored])  # says how many copies it left out
        summary_view(pooled.extras, [r for f in fields for r in f.extras.get("heads", [])])
        if result.get("finished") and len(fields) > 1:  # the sample's result: one record with its report, in the
            record_prediction(pooled, "sperm", revises=f"pooled@{pooled.input_sha256}",  # batch's case
                              case_code=result["case_code"])
    if scored:
        table = batch.results_frame(items)
        table = table.drop(columns=[c for c in table.columns  # kept for the downloads; the heading names the model
                                    if "sha256" in c or c.startswith("threshold_") or c in ("case_code", "model",
                                                                                            "version")])
        table.insert(0, "image", [f"data:image/jpeg;base64,{base64.b64encode(i.thumbnail).decode()}" if i.thumbnail
                                  else None for i in scored])
        if "warnings" in table:  # beside the file, not off to the right: the answer is in doubt
            table.insert(2, "⚠", table.pop("warnings"))
        table.insert(2, "same_image_as", table.pop("same_image_as"))
        config = {"image": st.column_config.ImageColumn("Image", width="small"),
                  "⚠": st.column_config.TextColumn("⚠ read with", width="medium",
                                                   help="What the task page would warn of with this result: its "
                                                        "answer is in doubt"),
                  "record": st.column_config.NumberColumn("Record", format="#%d"),
                  "same_image_as": st.column_config.TextColumn("Same image as", help="The same bytes were scored "
                                                               "already under this name: count them once")}
        scored_by = cards[result["model"]]
        wording = scored_by.wording
        for output, labels in scored_by.classes.items():
            if output in table:
                table[output] = table[output].map(partial(wording.says, output))
                threshold = scored[0].prediction.thresholds.get(output)  # a binary call's own cut-off, not 50 %
                config[output] = wording.title(output) + (
                    f" ({wording.says(output, labels[1])} from {threshold * 100:.3g} %)" if threshold is not None
                    and len(labels) == 2 else "")
            for label in labels:
                if (c := f"p_{output}_{label}") in table:
                    table[c] = table[c] * 100
                    config[c] = st.column_config.NumberColumn(f"{wording.title(output)} · {wording.says(output, label)}",
                                                              format="%.1f %%")
        config |= {c: heading for c, heading in report.DETAIL_NAMES.items() if c in table}  # e.g. "embryo radius (px)"
        st.dataframe(table, column_config=config, hide_index=True, width="stretch", row_height=60)
        st.caption("The downloads add each image's sha256, the decision thresholds, the case code and the model "
                   "file's sha256, and keep the model's own label names; their probabilities (`p_…` columns) run "
                   "from 0 to 1, not in %.")
        stamp = time.strftime("%Y%m%d-%H%M")
        left, right = st.columns(2)
        stem, code = f"batch-{result['model']}-{stamp}", result["case_code"]
        left.download_button("Download CSV", batch.to_csv(items, code), f"{stem}.csv", "text/csv",
                             icon=":material/download:", on_click="ignore", width="stretch")
        right.download_button("Download Excel", batch.to_excel(items, code), f"{stem}.xlsx",
                              "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                              icon=":material/table:", on_click="ignore", width="stretch")
    if skipped:
        st.markdown(f"**Skipped files ({len(skipped)})**: not scored, for the reason given.")
        st.dataframe(pd.DataFrame([{"file": i.name, "reason": i.error} for i in skipped]), hide_index=True,
                     width="stretch")

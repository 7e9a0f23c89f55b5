"""History: find stored predictions by date, task, model and case code; open one; reports; CSV of the selection."""
import hashlib
from datetime import date, datetime, timedelta
from functools import partial

import pandas as pd
import streamlit as st

from core import records, registry, report
from core.imageio import ImageInputError, read_image
from ui.common import escape_markdown
from ui.records import report_downloads, require_login

viewer = require_login(sidebar=False)
st.title("History")
st.markdown(
    "Every prediction made on the task pages, by batch scoring or by `python -m core predict` is kept here with its "
    "model version, the image's fingerprint and the case code. Images are stored only when \"keep images\" was ticked."
    + ("" if viewer is None or viewer.is_admin else " You see the records you made.")
)

try:
    tasks = records.distinct("task", viewer)
    models = records.distinct("model_id", viewer)
    if "sperm-seg" in models and "sperm-head" not in models:  # a field's heads were called by sperm-head (query())
        models = sorted([*models, "sperm-head"])
except Exception as exc:  # noqa: BLE001 - an unreachable or broken database: say which and why
    st.error(f"The case-records database ({records.describe_url()}) cannot be opened: {type(exc).__name__}: {exc}")
    st.stop()


def result_without_labels(summary: dict) -> str:
    """A field's or a sequence's headline figures, for records with no class labels (e.g. "heads found 12")."""
    shown = [f"{report.DETAIL_NAMES[k]} {report.fmt_number(summary[k], 1)}" for k in UNLABELLED_RESULTS
             if summary.get(k) is not None]
    return ", ".join(shown[:2])


ZONE = datetime.now().astimezone().tzname()
UNLABELLED_RESULTS = ["n_heads", "pct_normal_both", "current_stage", "n_frames", "n_embryos", "n_blastocysts"]


def shown_rows_key(shown) -> str:
    """The table's key changes with the rows it shows: Streamlit keeps a selection by row position, so after a filter
    change or a new record the same position would open another record (another patient's)."""
    return hashlib.sha256(",".join(str(r.id) for r in shown).encode()).hexdigest()[:16]


today = date.today()
c1, c2, c3, c4 = st.columns([1.3, 1, 1, 1])
days = c1.date_input("Dates", (today - timedelta(days=30), today), max_value=today, format="YYYY-MM-DD")
chosen_tasks = c2.multiselect("Task", tasks)
chosen_models = c3.multiselect("Model", models, help="A sperm field is listed under its segmenter and under the head "
                                                       "classifier that called its heads.")
case_code = c4.text_input("Case code contains", placeholder="e.g. IVF-2026")
start, end = (tuple(days) + (None, None))[:2] if isinstance(days, (tuple, list)) else (days, days)

rows = records.query(start=start, end=end or start, task=chosen_tasks, model=chosen_models, case_code=case_code,
                     viewer=viewer)
selected = []
if not rows:
    st.info("No records match these filters. Predictions made on the task pages and batch scoring appear here.")
else:
    table = records.frame(rows)
    wordings = {m: registry.wording(m) for m in {r.model_id for r in rows}}
    table["result"] = [("⚠ " if r.summary.get("warnings") else "")  # the page warned: open the record to read why
                       + (", ".join(f"{wordings[r.model_id].title(o)}: {wordings[r.model_id].says(o, label)}"
                                    for o, label in r.labels.items()) or result_without_labels(r.summary)) for r in rows]
    columns = ["id", "time", "revised", "input", "case_code", "task", "result", "model", "version", "image_kept",
               "source"]
    if viewer is not None and viewer.is_admin:  # with sign-in on, whose record it is
        columns.insert(4, "user")
    st.caption(f"{len(rows)} record{'' if len(rows) == 1 else 's'}{' (the newest 5000)' if len(rows) == 5000 else ''}"
               " · select a row to open it (⚠: the page warned with this result).")
    event = st.dataframe(table[columns], hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key=f"history_table_{shown_rows_key(rows)}",
                         column_config={"id": st.column_config.NumberColumn("Record", format="#%d"),
                                        "time": f"time ({ZONE})",  # the server's: reports say UTC
                                        "revised": f"revised ({ZONE})",
                                        "case_code": "Case code", "image_kept": "Image kept"})
    st.download_button(f"Download {'this record' if len(rows) == 1 else f'these {len(rows)} records'} (CSV)",
                       partial(records.to_csv, rows),  # built on click: 1.7 s of every rerun at 4,000 records
                       f"case-records-{today:%Y%m%d}.csv", "text/csv", icon=":material/download:", on_click="ignore")
    selected = event.selection.rows if event and event.selection else []

wanted = rows[selected[0]].id if selected else st.query_params.get("record")  # ?record=ID links to one record
if not wanted:
    st.stop()
record = records.get(int(wanted), viewer) if str(wanted).isdigit() else None
if record is None:
    st.warning(f"Record {wanted} does not exist or is not yours to see.")
    st.stop()

st.divider()
st.subheader(f"Record #{record.id} · " + (f"case {escape_markdown(record.case_code)} · " if record.case_code else "")
             + f"{record.model_id} v{record.model_version}")
left, right = st.columns([1, 1.4])
with left:
    if record.image:
        try:
            st.image(read_image(record.image, name=f"record-{record.id}").pixels, caption=record.input_name)
        except ImageInputError as exc:
            st.warning(f"The kept image cannot be shown: {exc}")
    else:
        st.info("The image was not kept with this record (privacy default); its sha256 fingerprint identifies it.",
                icon=":material/visibility_off:")
with right:
    for warning in record.summary.get("warnings") or []:  # as the page showed it with this result
        st.warning(warning, icon=":material/warning:")
    for caveat in (record.summary.get("caveats") or {}).values():
        st.caption(caveat)
    probabilities = record.summary.get("probabilities") or {}
    if probabilities:
        wording = registry.wording(record.model_id)
        st.markdown(f"**Outputs** (probabilities from {record.model_id} v{record.model_version})")
        for o, probs in probabilities.items():
            st.markdown(f"- **{wording.title(o)}: {wording.says(o, record.labels.get(o, ''))}** · "
                        + ", ".join(f"{wording.says(o, label)} {p:.1%}"
                                    for label, p in sorted(probs.items(), key=lambda kv: -kv[1])))
    extras = report.details_of(record.summary)
    facts = {"Time": record.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
             "Revised": record.revised_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if record.revised_at else "—",
             "Task": record.task,
             "Case code": record.case_code or "—", "User": record.username or "—", "Made by": record.source,
             "Input": record.input_name, "Input size": f"{record.input_width}×{record.input_height} px, "
             f"{record.input_bytes or 0:,} bytes" if record.input_width else "—",
             "Input sha256": record.input_sha256, "Model sha256": record.model_sha256 or "—", **extras}
    shown = [report.fmt_number(v) if isinstance(v, bool) else str(v) for v in facts.values()]  # yes / no, as reports
    st.table(pd.DataFrame({"Details": shown}, index=pd.Index(list(facts), name="")))
    if record.whatif:
        st.markdown("**What-if settings** used for this prediction")
        st.json(record.whatif, expanded=True)
    report_downloads(lambda: report.from_record(record), key=f"history-{record.id}", stem=f"report-record-{record.id}")
    with st.expander("Everything stored (JSON)"):
        st.json(record.summary, expanded=False)

"""One-page reports (HTML and PDF) of a single-image result or a stored case record.

A report holds the image and its overlays when available, the outputs as percentages with the model version,
a summary of the model card, the measured metrics of that model (each named by its data), the disclaimer, the date
and the case code. Build one with from_prediction() or from_record(), then call html() or pdf().
"""
from __future__ import annotations

import base64
import html as htmlmod
import io
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from . import DISCLAIMER, morphometry, registry
from .results import SUMMARY_FACTS, Wording
from .sequence import EVENTS, INTERVALS, interval_name

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
MAX_TEXT = 700  # characters of intended use / limitations, so the report stays on one page
MAX_METRICS = 5  # datasets; each with at most 10 numbers (_metrics)
IMAGE_CAPTIONS = {  # the page's legends, so a printed overlay can be read
    "follicles": "Follicles: green counted, orange outside 2–9 mm, grey unticked; numbers as in the table",
    "overlay": "Heads: green normal, red abnormal, blue not classified, grey not scored (cut by the border, or not a "
               "head by the reviewer); numbers as in the table",
    "head_marks": "Heads (ringed at their centres; outlines are not kept with the record): green normal, red abnormal, "
                  "blue not classified, grey not scored (cut by the border, or not a head by the reviewer); numbers "
                  "as in the table",
}
ONE_OF_MANY = re.compile(r"[a-z]+_\d+")  # a field's head_3: the page shows it; the report's table lists them all


@dataclass
class Report:
    title: str
    created: datetime
    model: dict  # id, version, sha256, and from the card when installed: title, framework, intended_use, limitations, data
    input_name: str
    input_sha256: str
    outputs: list[tuple[str, str, list[tuple[str, float]]]]  # (output, decided label, [(label, probability)])
    case_code: str | None = None
    user: str | None = None
    record_id: int | None = None
    input_size: tuple[int, int] | None = None
    details: dict = field(default_factory=dict)  # scalar task results (counts, sizes ...)
    whatif: dict | None = None
    metrics: dict = field(default_factory=dict)  # data name -> {metric: number}
    notes: list[str] = field(default_factory=list)
    images: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (caption, RGB uint8)
    table: tuple[str, list[str], list[list[str]]] | None = None  # per-object results: (title, header, rows)
    revised: datetime | None = None  # when the record was last revised

    def html(self) -> str:
        return _html(self)

    def pdf(self) -> bytes:
        return _pdf(self)

    @property
    def filename(self) -> str:
        stem = f"report-{self.case_code or self.model['id']}-{self.created.strftime('%Y%m%d-%H%M')}"
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)


def from_prediction(prediction, *, image=None, card=None, case_code: str | None = None, user: str | None = None,
                    whatif: dict | None = None, record_id: int | None = None, created: datetime | None = None) -> Report:
    """A report of a core.results.Prediction. image: the input (InputImage or RGB array); the prediction's own
    display images (overlays, heat maps) are added after it."""
    summary = prediction.summary()
    pixels = getattr(image, "pixels", image)
    images = [("Input image", pixels)] if pixels is not None else []
    images += [(IMAGE_CAPTIONS.get(name, name.replace("_", " ").capitalize()), im)
               for name, im in prediction.images.items() if not ONE_OF_MANY.fullmatch(name)]
    size = getattr(image, "size", None)  # an InputImage's (width, height); an array's .size is its element count
    size = size if isinstance(size, tuple) else (pixels.shape[1], pixels.shape[0]) if pixels is not None else None
    facts = {"id": prediction.model_id, "version": prediction.model_version, "sha256": ""}
    return _build(summary, facts, card, images=images, case_code=case_code, user=user, whatif=whatif,
                  record_id=record_id, created=created or datetime.now(timezone.utc), input_size=size)


def from_record(record, card=None) -> Report:
    """A report of a core.records.Record; its image is shown when it was kept, with the follicles redrawn from their
    stored outlines and a field's heads ringed and numbered at their stored centres (other overlays are not stored)."""
    images = []
    if record.image:
        from .imageio import ImageInputError, read_image

        try:
            pixels = read_image(record.image, name="kept image").pixels
        except ImageInputError:
            pixels = None
        if pixels is not None:
            images.append(("Input image (kept with the record)", pixels))
            rows = record.summary.get("follicles") or []
            if rows and all("contour" in r for r in rows):
                from .follicles import Follicle, draw

                counted = {r["id"] for r in rows if r.get("counted", r.get("in_2_9_mm"))}
                images.append((IMAGE_CAPTIONS["follicles"], draw(pixels, [Follicle.from_row(r) for r in rows], counted)))
            heads = record.summary.get("heads") or []
            if heads and all({"x", "y", "head"} <= set(r) for r in heads):
                from .tasks.sperm import mark_heads

                images.append((IMAGE_CAPTIONS["head_marks"], mark_heads(pixels, heads)))
    facts = {"id": record.model_id, "version": record.model_version, "sha256": record.model_sha256}
    size = (record.input_width, record.input_height) if record.input_width else None
    return replace(_build(record.summary, facts, card, images=images, case_code=record.case_code,
                          user=record.username, whatif=record.whatif, record_id=record.id, created=record.created_at,
                          input_size=size), revised=record.revised_at)


def details_of(summary: dict) -> dict:
    """A result's scalar details under the names readers know (DETAIL_NAMES), in the result's order; a share of
    normal forms is said once, with its interval and its reading of the 4 % limit. For reports and History."""
    details = {}
    for k, v in summary.items():
        if k in SUMMARY_FACTS or k in FOLDED:
            continue
        source = summary.get(f"{k.removesuffix('_h')}_from")
        if k.removesuffix("_h") in INTERVALS and source:  # an interval says whose times it comes from, or why none
            details[DETAIL_NAMES[k]] = f"{v:g} h, from {source} times" if v is not None else f"not given: {source}"
            continue
        by = k.removeprefix("pct_normal_")
        if by != k and v is not None and summary.get(f"ci95_normal_{by}"):  # a share, with its interval and reading
            low, high = summary[f"ci95_normal_{by}"]
            reading = summary.get(f"vs_lower_limit_{by}")
            name = DETAIL_NAMES.get(k, k).removesuffix(" (%)")
            if summary.get("n_called_by_reviewer") and by != "who":
                name += ", with the reviewer's calls"
            if reading == morphometry.UNDER_WHO_COUNT:  # said once for the three shares
                details["against the 4 % limit"], reading = reading, None
            details[name] = (f"{v:g} % (95 % interval {low:g}–{high:g} %"
                             + (f"; against the 4 % limit: {reading}" if reading else "") + ")")
        elif isinstance(v, (int, float, str, bool)):
            details[DETAIL_NAMES.get(k, k.replace("_", " "))] = v
    return details


def _build(summary: dict, facts: dict, card, *, images, case_code, user, whatif, record_id, created, input_size) -> Report:
    # what the page warned of with this result, and caveats on single outputs (e.g. day-3 quality)
    notes = list(summary.get("warnings") or []) + list((summary.get("caveats") or {}).values())
    if card is None:
        try:
            card = registry.card(facts["id"])
        except (KeyError, registry.CardError):
            notes.append(f"The model card of {facts['id']} is not installed here: no card summary or metrics.")
    model = dict(facts)
    metrics = {}
    if card is not None:
        model.update(title=card.title, framework=card.framework, intended_use=_cut(card.intended_use),
                     limitations=_cut(card.limitations), data=_data_line(card.data))
        model["sha256"] = model["sha256"] or card.sha256
        if facts["sha256"] and facts["sha256"] != card.sha256:
            notes.append(f"The installed {card.id} (v{card.version}) differs from the model that made this prediction "
                         f"(v{facts['version']}, sha256 {facts['sha256'][:12]}…): its metrics may not apply.")
        metrics = _metrics(card.metrics)
    if summary.get("head_model"):  # a field's heads were classified by a second model: its figures too, both named
        metrics = {f"{facts['id']}: {d}": m for d, m in metrics.items()} | _second_model(summary["head_model"], notes)
    probabilities = summary.get("probabilities") or {}
    labels = summary.get("labels") or {}
    wording = card.wording if card is not None else Wording()
    outputs = [(wording.title(o), wording.says(o, labels.get(o, max(p, key=p.get))),
                [(wording.says(o, k), v) for k, v in sorted(p.items(), key=lambda kv: -kv[1])])
               for o, p in probabilities.items()]
    details = details_of(summary)
    if summary.get("follicles_unticked"):  # the reviewer's changes, said in words
        details["follicles unticked by the reviewer"] = ", ".join(map(str, summary["follicles_unticked"]))
    if summary.get("thresholds"):
        for o, t in summary["thresholds"].items():  # on the probability of a binary output's second label
            details[f"decision threshold for “{wording.says(o, list(probabilities.get(o, [o]))[-1])}”"] = f"{t:.1%}"
    kind = ("sequence" if "n_frames" in summary else "dish embryo" if summary.get("mode") == "dish"
            else "pooled fields" if "n_fields" in summary else "single-image")
    title = f"{model.get('title') or facts['id']}: {kind} report"
    return Report(title, created, model, str(summary.get("input", "")), summary.get("input_sha256", ""), outputs,
                  case_code=case_code, user=user, record_id=record_id, input_size=input_size, details=details,
                  whatif=whatif or None, metrics=metrics, notes=notes, images=[(c, im) for c, im in images if im is not None],
                  table=_object_table(summary))


def _second_model(named: str, notes: list) -> dict:
    """The measured figures of the model named "sperm-head v3.1" in a result, each set named by that model."""
    model_id, _, version = named.partition(" v")
    try:
        card = registry.card(model_id)
    except (KeyError, registry.CardError):
        notes.append(f"The model card of {model_id} is not installed here: its metrics are not given.")
        return {}
    if version and version != card.version:
        notes.append(f"The installed {model_id} (v{card.version}) differs from the one in this result (v{version}): "
                     "its metrics may not apply.")
    return {f"{model_id}: {d}": m for d, m in _metrics(card.metrics, most=6).items()}


DETAIL_NAMES = {"follicle_count_2_9mm": "follicles of 2–9 mm counted",
                "follicle_count_2_9mm_found": "follicles of 2–9 mm the finder found",
                "follicle_criteria": "follicle-number criteria (per ovary)", "mm_per_px": "mm per pixel",
                "mm_per_px_source": "calibration", "um_per_px": "µm per pixel", "embryo_radius": "embryo radius (px)",
                "embryo_in_view": "share of the located embryo inside the photo",
                "embryo_detector_score": "embryo detector's best score",
                "embryo_size_share": "embryo radius / the photo's shorter side",
                "embryos_detected": "embryos the dish detector sees", "outline_score": "zona-like outline score",
                "culture_day": "culture day", "mode": "graded as", "n_fields": "fields pooled",
                "copies_left_out": "fields given twice, counted once", "fields_pooled": "fields", "n_heads": "heads found",
                "n_embryos": "embryos found", "n_blastocysts": "called blastocyst",
                "n_ranked": "ranked (blastocysts not in doubt)",
                "n_scored": "heads scored (not at the border, not left out)",
                "pct_normal_classifier": "normal forms, classifier (%)",
                "pct_normal_who": "within the WHO head ranges (%)", "pct_normal_both": "normal by both, strict (%)",
                "heads_called_by_reviewer": "the reviewer's calls, which replace the classifier's (head: call)",
                "vs_lower_limit_classifier": "against the 4 % limit (classifier)",
                "vs_lower_limit_who": "against the 4 % limit (WHO head ranges)",
                "vs_lower_limit_both": "against the 4 % limit (both)",
                "below_lower_limit_classifier": "below the 4 % lower reference limit (classifier)",
                "below_lower_limit_who": "below the 4 % lower reference limit (WHO head criteria)",
                "who_reference": "WHO reference", "acrosome_criterion": "acrosome criterion used",
                "head_model": "head classifier", "head_model_sha256": "head classifier's sha256", "time_zero": "time (h) counted from",
                "timed_by": "times from",
                "minutes_per_frame": "minutes between frames", "n_frames": "frames",
                "current_stage": "stage at the last frame", "current_phase": "phase at the last frame",
                "first_frame_hpi": "first frame at (hours after insemination)",
                "reviewed_events": "events set by the reviewer", "padded_as_crops": "frames padded as embryo crops",
                "events_out_of_order": "events out of biological order (check them)",
                **{f"{k}_h": interval_name(k) for k in INTERVALS}}
FOLDED = {"n_called_by_reviewer", "who_reference", "head_model_sha256", "time_table",  # said with another detail, or in the caveats
          "events_withheld", *(f"{event}_h" for event in EVENTS),  # in the events table
          *(f"{k}_from" for k in INTERVALS),  # said with the interval
          *(f"{kind}_{by}" for kind in ("ci95_normal", "vs_lower_limit") for by in ("classifier", "who", "both"))}
OBJECT_TABLES = {  # list-valued results shown as a table: key -> (title, [(column, heading)])
    "heads": ("Heads", [("head", "head"), ("class", "classifier"), ("p_normal", "P(normal)"), ("reviewer", "reviewer"),
                        ("shape", "shape"), ("length_um", "length (µm)"), ("width_um", "width (µm)"),
                        ("ratio", "length / width"), ("who_normal", "in WHO ranges"), ("who_outside", "outside them"),
                        ("at_border", "at border: not scored")]),
    "follicles": ("Follicles", [("id", "follicle"), ("diameter_mm", "diameter (mm)"), ("in_2_9_mm", "2–9 mm"),
                                ("counted", "counted")]),
    "events": ("Events (draft timings to check against the frames, and the reviewer's where set)",
               [("event", "event"), ("frame", "frame (from 0)"), ("frame_name", "frame"), ("hours", "time (h)"),
                ("after_hours", "after (h): a gap before"), ("reviewed_frame", "reviewer's frame (from 0)"),
                ("reviewed_hours", "reviewer's time (h)"), ("seen", "decoded as its own phase"), ("trained", "phase in training"),
                ("annotated_frame", "annotated frame (from 0)"), ("error_frames", "draft's error (acquisitions, + late)")]),
}
MAX_TABLE_ROWS = 30
TABLE_DIGITS = {"diameter_mm": 1}  # as the page shows it, and as it is counted (a "2.0" is in 2–9 mm)
TABLE_PERCENT = {"p_normal"}  # probabilities in %, as the page gives them


def _object_table(summary: dict) -> tuple[str, list[str], list[list[str]]] | None:
    for key, (title, columns) in OBJECT_TABLES.items():
        rows = summary.get(key)
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            columns = [(col, h) for col, h in columns if any(row.get(col) not in (None, "") for row in rows)]
            shown = [["" if row.get(col) is None  # e.g. the draft frame of an event only the reviewer set
                      else f"{row[col] * 100:.1f} %" if col in TABLE_PERCENT and isinstance(row[col], float)
                      else short_frame_name(row[col]) if col == "frame_name"
                      else fmt_number(row[col], TABLE_DIGITS.get(col, 2)) for col, _ in columns]
                     for row in rows[:MAX_TABLE_ROWS]]
            more = f" (the first {MAX_TABLE_ROWS} of {len(rows)}; all are in the CSV)" if len(rows) > MAX_TABLE_ROWS else ""
            return title + more, [heading for _, heading in columns], shown
    return None


def short_frame_name(name: str) -> str:
    """A frame file as the table has room for it: its acquisition number (RUN<k>) when the name has one (the whole
    name is in the record and the CSV)."""
    run = re.search(r"RUN\d+", name, re.IGNORECASE)
    return run.group(0) if run else name


def _cut(text: str, n: int = MAX_TEXT) -> str:
    """At most n characters, ending with a whole sentence where one ends past half of them."""
    text = " ".join(str(text).split())
    if len(text) <= n:
        return text
    head = text[: n - 30]
    end = head.rfind(". ")
    return head[: end + 1] + " (More in the model card.)" if end > n // 2 else head.rsplit(" ", 1)[0] + "…"


def _data_line(data) -> str:
    items = data if isinstance(data, list) else [data]
    parts = []
    for d in items:
        if isinstance(d, dict):
            parts.append(", ".join(str(d[k]) for k in ("name", "dataset", "licence", "split") if k in d) or str(d))
        else:
            parts.append(str(d))
    return _cut("; ".join(parts), 300)


def _metrics(raw: dict, most: int = 10) -> dict:
    """At most MAX_METRICS datasets, each with its `most` telling figures (balanced accuracy and ROC-AUC of every
    output before plain accuracy: the first 8 in card order left out the embryo grader's quality ROC-AUC)."""
    out = {}
    for dataset, values in list(raw.items())[:MAX_METRICS]:
        flat = {}
        _flatten(values, "", flat)
        if flat:
            ranked = sorted(flat, key=lambda k: next((i for i, end in enumerate(TELLING)
                                                      if k == end or k.endswith("_" + end)), len(TELLING)))
            out[dataset] = {k: flat[k] for k in ranked[:most]}
    return out


TELLING = ("balanced_accuracy", "roc_auc", "n", "sensitivity", "specificity", "mean_dice", "map50",
           "median_abs_error_frames_t2_t5")


def _flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}", out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value


def fmt_number(v, digits: int = 3) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _detail(name: str, value) -> str:
    if isinstance(value, float) and not name.endswith("(%)"):
        return f"{value:.4g}"  # as measured, without padding: "embryo radius (px) 126.2", not 126.200
    return fmt_number(value, 1)


def _metrics_line(values: dict) -> str:
    """A measured set's figures in words: "shape balanced accuracy 0.907, normal ROC-AUC 0.997, n 238"."""
    words = {"roc_auc": "ROC-AUC", "map50_95": "mAP50-95", "map50": "mAP50", "mae": "error", "_um": " (µm)"}

    def name(key: str) -> str:
        for raw, word in words.items():
            key = key.replace(raw, word)
        return key.replace("_", " ")

    # as the card keeps them (4 decimals): rounding them again can differ from the evaluation's own 3 decimals
    return ", ".join(f"{name(k)} {v:.4g}" if isinstance(v, float) else f"{name(k)} {fmt_number(v)}"
                     for k, v in values.items())


def _metrics_heading(r: Report) -> str:
    return "Measured metrics of the models" if any(": " in d for d in r.metrics) else "Measured metrics of this model"


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def _facts(r: Report) -> list[tuple[str, str]]:
    rows = [("Predicted", _when(r.created))] + ([("Revised", _when(r.revised))] if r.revised else []) \
        + [("Case code", r.case_code or "not given")]
    if r.record_id is not None:
        rows.append(("Record", f"#{r.record_id}"))
    if r.user:
        rows.append(("User", r.user))
    size = f", {r.input_size[0]}×{r.input_size[1]} px" if r.input_size else ""
    rows.append(("Input", f"{r.input_name}{size}"))
    if r.input_sha256:
        rows.append(("Input sha256", r.input_sha256[:16] + "…"))
    rows.append(("Model", f"{r.model['id']} v{r.model['version']}"
                 + (f" ({r.model['framework']})" if r.model.get("framework") else "")
                 + (f", sha256 {r.model['sha256'][:12]}…" if r.model.get("sha256") else "")))
    return rows


# --- HTML -------------------------------------------------------------------------------------------------------------
CSS = """
@page { size: A4; margin: 12mm; }
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 11px; color: #111; max-width: 190mm; margin: auto; }
h1 { font-size: 17px; margin: 0 0 6px; } h2 { font-size: 12.5px; margin: 10px 0 4px; border-bottom: 1px solid #ccc; }
.disclaimer { border: 1px solid #b45309; background: #fff7ed; padding: 5px 8px; margin: 6px 0; }
table { border-collapse: collapse; } td, th { padding: 2px 8px 2px 0; text-align: left; vertical-align: top; }
.figs { margin-top: 8px; display: flex; gap: 8px; flex-wrap: wrap; } figure { margin: 0; } figure img { height: 170px; }
figcaption { font-size: 10px; color: #555; } .note { color: #92400e; } .muted { color: #555; font-size: 10px; }
"""


def _html(r: Report) -> str:
    e = htmlmod.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(r.title)}</title><style>{CSS}</style>"
             "</head><body>", f"<h1>{e(r.title)}</h1>", f"<div class='disclaimer'>{e(DISCLAIMER)}</div>",
             "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _facts(r)) + "</table>"]
    parts += [f"<p class='note'>{e(n)}</p>" for n in r.notes]
    if r.images:
        parts.append("<div class='figs'>" + "".join(
            f"<figure><img alt='{e(c)}' src='data:image/png;base64,{base64.b64encode(_png(im, 600)).decode()}'>"
            f"<figcaption>{e(c)}</figcaption></figure>" for c, im in r.images[:3]) + "</div>")
    parts.append("<h2>Result</h2>")
    if r.outputs:
        parts.append("<table><tr><th>Output</th><th>Result</th><th>Probabilities</th></tr>")
        for output, label, probs in r.outputs:
            parts.append(f"<tr><td>{e(output)}</td><td><b>{e(label)}</b></td><td>"
                         + e(", ".join(f"{k} {p:.1%}" for k, p in probs)) + "</td></tr>")
        parts.append(f"</table><p class='muted'>Probabilities from {e(r.model['id'])} v{e(r.model['version'])}.</p>")
    if r.details:
        parts.append("<table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(_detail(k, v))}</td></tr>"
                                         for k, v in r.details.items()) + "</table>")
    if r.table:
        title, header, rows = r.table
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
    if r.whatif:
        parts.append("<h2>What-if settings</h2><p>" + e(", ".join(f"{k} = {v}" for k, v in r.whatif.items())) + "</p>")
    if r.model.get("title"):
        parts.append("<h2>Model</h2><table>" + "".join(
            f"<tr><th>{e(k)}</th><td>{e(r.model[key])}</td></tr>"
            for k, key in (("Intended use", "intended_use"), ("Limitations", "limitations"), ("Training data", "data"))
            if r.model.get(key)) + "</table>")
    if r.metrics:
        parts.append(f"<h2>{_metrics_heading(r)}</h2><table>")
        parts += [f"<tr><th>{e(d)}</th><td>" + e(_metrics_line(m)) + "</td></tr>" for d, m in r.metrics.items()]
        parts.append("</table>")
    parts.append(f"<p class='muted'>{e(DISCLAIMER)} Report made {e(_when(datetime.now(timezone.utc)))}.</p></body></html>")
    return "".join(parts)


def _png(image: np.ndarray, px: int) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(image))
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- PDF --------------------------------------------------------------------------------------------------------------
def _pdf(r: Report) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(True, margin=12)
    pdf.set_title(r.title)
    pdf.set_creator("reproductive-medicine image AI dashboard")
    family, clean = _font(pdf)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def text(size, s, style="", h=None, colour=(17, 17, 17)):
        pdf.set_font(family, style, size)
        pdf.set_text_color(*colour)
        pdf.multi_cell(width, h or size * 0.45, clean(s), align="L", new_x="LMARGIN", new_y="NEXT")

    def heading(s):
        pdf.ln(1.5)
        text(10.5, s, "B", 5.5)
        pdf.set_draw_color(200, 200, 200)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
        pdf.ln(1)

    text(15, r.title, "B", 7.5)
    pdf.set_fill_color(255, 247, 237)
    pdf.set_font(family, "", 8.5)
    pdf.set_text_color(120, 53, 15)
    pdf.multi_cell(width, 4.2, clean(DISCLAIMER), border=1, fill=True, new_x="LMARGIN", new_y="NEXT", padding=1.5)
    pdf.ln(1.5)
    for k, v in _facts(r):
        pdf.set_font(family, "B", 8.5)
        pdf.set_text_color(17, 17, 17)
        pdf.cell(28, 4.3, clean(k))
        pdf.set_font(family, "", 8.5)
        pdf.multi_cell(width - 28, 4.3, clean(v), new_x="LMARGIN", new_y="NEXT")
    for n in r.notes:
        text(8.5, n, colour=(146, 64, 14))
    if r.images:
        pdf.ln(2)
        shown = r.images[:3]
        box_w = min(62.0, (width - 4 * (len(shown) - 1)) / len(shown))
        top, x, tallest = pdf.get_y(), pdf.l_margin, 0.0
        # room for a table's rows, and for a second model's figures
        tallest_mm = max(26.0, 50.0 - 1.2 * len(r.table[2]) - 4.0 * max(0, len(r.metrics) - 1)) if r.table else 50.0
        for caption, im in shown:
            h_mm = min(box_w * im.shape[0] / im.shape[1], tallest_mm)
            w_mm = h_mm * im.shape[1] / im.shape[0]
            pdf.image(io.BytesIO(_png(im, 700)), x=x, y=top, w=w_mm, h=h_mm)
            pdf.set_xy(x, top + h_mm + 0.5)
            pdf.set_font(family, "", 7.5)
            pdf.set_text_color(85, 85, 85)
            pdf.multi_cell(box_w, 3.2, clean(caption), align="L")  # a legend wraps under its own image
            x += box_w + 4
            tallest = max(tallest, pdf.get_y() - top)
        pdf.set_xy(pdf.l_margin, top + tallest + 1.5)
    heading("Result")
    if r.outputs:  # a table: long output names ("Head shape (HuSHeM classes)") wrap instead of overprinting
        pdf.set_font(family, "", 9)
        pdf.set_text_color(17, 17, 17)
        with pdf.table(col_widths=(30, 28, 42), text_align="LEFT", line_height=4.4, first_row_as_headings=False,
                       borders_layout="NONE", markdown=True) as grid:
            for output, label, probs in r.outputs:
                cells = grid.row()
                cells.cell(clean(output).replace("*", ""))
                cells.cell(f"**{clean(label).replace('*', '')}**")
                cells.cell(clean(", ".join(f"{k} {p:.1%}" for k, p in probs)).replace("*", ""))
    if r.outputs:
        text(7.5, f"Probabilities from {r.model['id']} v{r.model['version']}.", colour=(85, 85, 85))
    if r.details:
        text(8.5, "; ".join(f"{k}: {_detail(k, v)}" for k, v in r.details.items()))
    if r.table:
        title, header, rows = r.table
        heading(title)
        pdf.set_font(family, "", 7)
        pdf.set_text_color(17, 17, 17)
        with pdf.table(text_align="LEFT", line_height=3.6, first_row_as_headings=True) as grid:
            for row in [header, *rows]:
                cells = grid.row()
                for c in row:
                    cells.cell(clean(c))
    if r.whatif:
        heading("What-if settings")
        text(8.5, ", ".join(f"{k} = {v}" for k, v in r.whatif.items()))
    if r.model.get("title"):
        heading(f"Model: {r.model['title']}")
        for label, key in (("Intended use", "intended_use"), ("Limitations", "limitations"), ("Training data", "data")):
            if r.model.get(key):
                text(8, f"{label}: {r.model[key]}")
    if r.metrics:
        heading(_metrics_heading(r))
        for dataset, values in r.metrics.items():
            text(8, f"{dataset}: " + _metrics_line(values))
    pdf.ln(2)
    text(7, f"{DISCLAIMER} Report made {_when(datetime.now(timezone.utc))}.", colour=(85, 85, 85))
    return bytes(pdf.output())


def _font(pdf):
    """DejaVu Sans when installed (full Unicode); otherwise Helvetica with the text folded to Latin-1."""
    regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
    if regular.is_file() and bold.is_file():
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
        return "DejaVu", str
    table = str.maketrans({"–": "-", "—": "-", "…": "...", "×": "x", "≥": ">=", "≤": "<=", "’": "'", "“": '"', "”": '"'})
    return "Helvetica", lambda s: str(s).translate(table).encode("latin-1", "replace").decode("latin-1")

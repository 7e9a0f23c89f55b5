"""Batch scoring: many images, folders and zips through one model, in batches, every prediction recorded.

Unreadable files are listed with their error and skipped; the rest are scored. `run()` yields progress after each
batch (for the Batch page); `predict_paths()` is `python -m core predict MODEL PATH... [--out results.csv|.xlsx]`.
"""
from __future__ import annotations

import importlib.util
import io
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from . import records, registry
from .audit import training_note
from .device import resolve
from .imageio import IMAGE_SUFFIXES, MAX_BYTES, ImageInputError, InputImage, encode_png, open_zip, read_image
from .results import Prediction, csv_bytes, spreadsheet_safe

ZIP_SUFFIXES = {".zip"}
NOT_AN_IMAGE = "not an image file (left out)"
THUMB_PX = 96


@dataclass(frozen=True)
class Source:
    """One input: a file, a member of a zip file, or bytes already in memory (an upload)."""

    name: str
    path: Path | None = None
    member: str | None = None
    data: bytes | None = None

    def read(self, zips: dict) -> InputImage:
        if self.data is not None:
            return read_image(self.data, name=self.name)
        if self.member is None:
            return read_image(self.path, name=self.name)
        archive = zips.get(self.path) or zips.setdefault(self.path, open_zip(self.path))
        if archive.getinfo(self.member).file_size > MAX_BYTES:
            raise ImageInputError(f"{self.name}: the file is larger than {MAX_BYTES // 2**20} MB.")
        return read_image(archive.read(self.member), name=self.name)


@dataclass
class Item:
    """The outcome for one input: a prediction, or the reason it was skipped."""

    name: str
    prediction: Prediction | None = None
    error: str | None = None
    record_id: int | None = None
    thumbnail: bytes | None = None  # small JPEG, when asked for

    @property
    def ok(self) -> bool:
        return self.prediction is not None


@dataclass
class Progress:
    done: int
    total: int
    elapsed_s: float
    items: list[Item] = field(default_factory=list)  # the inputs finished in this step
    record_error: str | None = None  # set when predictions could not be stored in the database
    scored: int = 0  # inputs scored so far (done also counts those skipped)

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def scored_per_s(self) -> float:
        """Throughput of the model: unreadable files are skipped in no time and would inflate images_per_s."""
        return self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.images_per_s if self.images_per_s > 0 else None

    def line(self) -> str:
        eta = self.eta_s
        left = f", about {_duration(eta)} left" if eta is not None and self.done < self.total else ""
        # the rate of scoring, as the summary gives it: skipped files take no time and would inflate it
        return f"{self.done}/{self.total} images · {self.scored_per_s:.1f} images/s scored{left}"


# --- inputs -----------------------------------------------------------------------------------------------------------
def expand(paths: Iterable[Path | str]) -> tuple[list[Source], list[Item]]:
    """Files, folders (recursively, image files only) and zips as a list of inputs, plus paths that cannot be used."""
    sources: list[Source] = []
    errors: list[Item] = []
    for path in map(Path, paths):
        try:
            _expand_one(path, sources, errors)
        except OSError as exc:  # e.g. /proc or a folder without permission: said, not raised
            errors.append(Item(str(path), error=f"cannot be read here ({exc.strerror or exc})"))
    return sources, errors


def _expand_one(path: Path, sources: list[Source], errors: list[Item]) -> None:
    """One path of expand(): a folder's image files and zips, a zip's images, or one file."""
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))):
            if f.suffix.lower() in ZIP_SUFFIXES:
                _expand_zip(f, str(f.relative_to(path.parent)), sources, errors)
            elif f.suffix.lower() in IMAGE_SUFFIXES:  # other files in a folder (notes, label tables) are
                sources.append(Source(str(f.relative_to(path.parent)), path=f))  # its own, not inputs
    elif path.is_file() and (path.suffix.lower() in ZIP_SUFFIXES or _looks_zip(path)):
        _expand_zip(path, path.name, sources, errors)
    elif path.is_file():
        sources.append(Source(path.name, path=path))
    else:
        errors.append(Item(str(path), error="no such file or folder"))


def uploads(files: Iterable[tuple[str, bytes]]) -> tuple[list[Source], list[Item]]:
    """Uploaded (name, bytes) pairs as inputs; zips are opened and their image files used."""
    sources: list[Source] = []
    errors: list[Item] = []
    for name, data in files:
        if name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
            try:
                with open_zip(io.BytesIO(data)) as archive:
                    for info in _zip_images(archive, name, errors):
                        if info.file_size > MAX_BYTES:
                            errors.append(Item(f"{name}/{info.filename}", error=f"larger than {MAX_BYTES // 2**20} MB"))
                        else:
                            sources.append(Source(f"{name}/{info.filename}", data=archive.read(info)))
            except (zipfile.BadZipFile, OSError, ValueError) as exc:  # also CRC errors in members
                errors.append(Item(name, error=f"not a readable zip file ({exc})"))
        else:
            sources.append(Source(name, data=data))
    return sources, errors


def _expand_zip(path: Path, name: str, sources: list[Source], errors: list[Item]) -> None:
    try:
        with open_zip(path) as archive:
            sources.extend(Source(f"{name}/{info.filename}", path=path, member=info.filename)
                           for info in _zip_images(archive, name, errors))
    except (zipfile.BadZipFile, OSError) as exc:
        errors.append(Item(name, error=f"not a readable zip file ({exc})"))


def _zip_images(archive: zipfile.ZipFile, name: str, errors: list[Item]) -> list[zipfile.ZipInfo]:
    """The archive's image members; its other files, or its having none, are listed in `errors`."""
    members = [i for i in archive.infolist() if not i.is_dir() and not _hidden(Path(i.filename))]
    images = [i for i in members if Path(i.filename).suffix.lower() in IMAGE_SUFFIXES]
    errors += [Item(f"{name}/{i.filename}", error=NOT_AN_IMAGE) for i in members if i not in images]
    if not images:
        errors.append(Item(name, error="the zip holds no image files"))
    return images


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _looks_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


# --- scoring -----------------------------------------------------------------------------------------------------------
def run(model_id: str, sources: list[Source], *, device: str | None = None, batch_size: int | None = None,
        record: bool = True, case_code: str | None = None, user: str | None = None, keep_images: bool = False,
        source: str = "batch", thumbnails: bool = False, url: str | None = None,
        options: dict | None = None) -> Iterator[Progress]:
    """Score the inputs batch by batch, yielding progress after each batch (its items carry the outcomes). `options`:
    the task's own settings (e.g. a sperm field's um_per_px), passed to its predict_images.

    Every prediction is recorded in the case-records database (with the case code and user given); the images are
    kept there only with keep_images. A database failure does not stop the scoring: Progress.record_error says so.
    """
    card = registry.card(model_id)  # an unknown model fails here, before any work
    device = resolve(device)
    batch_size = batch_size or (32 if device.startswith("cuda") else 8)
    if sources:
        try:  # loaded (and cached) before the clock starts, so the rate is the scoring's
            registry.load(model_id, device)
        except Exception:  # noqa: BLE001 - a model that cannot load fails each image below, with the reason
            pass
    start = time.perf_counter()
    done = scored = 0
    zips: dict = {}
    try:
        for first in range(0, len(sources), batch_size):
            chunk = sources[first:first + batch_size]
            items: dict[int, Item] = {}
            images: list[tuple[int, InputImage]] = []
            for k, src in enumerate(chunk):
                try:
                    images.append((k, src.read(zips)))
                except Exception as exc:  # noqa: BLE001 - any unreadable input is listed, never fatal
                    items[k] = Item(src.name, error=_reason(src.name, exc))
            for (k, image), outcome in zip(images, _predict(model_id, [im for _, im in images], device, options or {})):
                if not isinstance(outcome, str):
                    outcome.images.clear()  # overlays are for single-image pages; a batch keeps memory bounded
                    if note := training_note(card, image.pixels):  # as the pages say it
                        outcome.extras["warnings"] = [*outcome.extras.get("warnings", []), note]
                items[k] = Item(image.name, error=outcome) if isinstance(outcome, str) else \
                    Item(image.name, prediction=outcome, thumbnail=_thumbnail(image.pixels) if thumbnails else None)
            record_error = _record([items[k] for k, _ in images], [im for _, im in images], card, record, case_code,
                                   user, keep_images, source, url)
            done += len(chunk)
            scored += sum(items[k].ok for k, _ in images)
            yield Progress(done, len(sources), time.perf_counter() - start, [items[k] for k in sorted(items)],
                           record_error, scored)
    finally:
        for archive in zips.values():
            archive.close()


def _predict(model_id: str, images: list[InputImage], device: str, options: dict) -> list[Prediction | str]:
    """One prediction per image; when the batch fails, each image alone, so one bad input cannot sink the rest."""
    if not images:
        return []
    try:
        return list(predict_images(model_id, images, device, **options))
    except Exception as exc:  # noqa: BLE001
        if len(images) == 1:  # a task's refusal (ValueError: "5 × 5 pixels is too small") is said as it is
            return [_reason(images[0].name, ImageInputError(str(exc))) if isinstance(exc, ValueError)
                    else f"the model could not score this image ({_exc_text(exc)})"]
    return [_predict(model_id, [image], device, options)[0] for image in images]


def _task_of(model_id: str):
    """The model's task module, or None for a model without one (a classifier dropped into weights/)."""
    from .tasks import TASK_OF_MODEL, task_module

    known = model_id in TASK_OF_MODEL and importlib.util.find_spec(f"core.tasks.{TASK_OF_MODEL[model_id]}")
    return task_module(model_id) if known else None


def predict_images(model_id: str, images: list[InputImage], device: str | None = None, **options) -> list[Prediction]:
    """Through the model's task module (with its options); a classifier without one (a model dropped into weights/)
    gets plain per-output probabilities."""
    if (task := _task_of(model_id)) is not None:
        return task.predict_images(model_id, images, device=device, **options)
    model = registry.load(model_id, device)
    if model.card.framework == "ultralytics":
        raise ValueError(f"{model_id}: a detector needs its task module to turn boxes into results")
    t0 = time.perf_counter()
    probs = model.predict([im.pixels for im in images])
    ms = (time.perf_counter() - t0) * 1000 / len(images)
    return [Prediction(model_id, model.card.version, im.name, im.sha256,
                       {o: {label: float(p) for label, p in zip(model.classes[o], probs[o][i])} for o in model.classes},
                       timings_ms={"predict": ms})
            for i, im in enumerate(images)]


def _record(items, images, card, record, case_code, user, keep_images, source, url) -> str | None:
    done = [(item, image) for item, image in zip(items, images) if item.ok]
    if not record or not done:
        return None
    try:
        ids = records.record_many([dict(prediction=item.prediction, task=card.task, card=card, input_bytes=image.n_bytes,
                                        input_size=image.size, case_code=case_code, user=user, source=source,
                                        image=encode_png(image.pixels) if keep_images else None)
                                   for item, image in done], url=url)
    except Exception as exc:  # noqa: BLE001 - scoring goes on; the caller shows this
        return f"predictions could not be saved to the case records ({_exc_text(exc)})"
    for (item, _), new_id in zip(done, ids):
        item.record_id = new_id
    return None


def _reason(name: str, exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ImageInputError) else f"could not be read ({_exc_text(exc)})"
    return text[len(name) + 2:] if text.startswith(f"{name}: ") else text


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _thumbnail(pixels: np.ndarray, px: int = THUMB_PX) -> bytes:
    img = Image.fromarray(pixels)
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- tables ---------------------------------------------------------------------------------------------------------------
def results_frame(items: list[Item], case_code: str | None = None) -> pd.DataFrame:
    """One row per scored input: file and its sha256, per output its label, probabilities and decision threshold,
    the task's scalar results (counts, sizes), the case code, the record id and the model file's sha256. Per-object
    results (each head, follicle or embryo) are in the case records' JSON."""
    first: dict[str, str] = {}  # sha256 -> the first input with those bytes: a copy would be counted twice
    rows = []
    for item in (i for i in items if i.ok):
        sha = item.prediction.input_sha256
        rows.append({**item.prediction.flat(), "case_code": case_code or "", "record": item.record_id,
                     "model_sha256": _model_sha256(item.prediction.model_id),
                     "same_image_as": first[sha] if sha in first else ""})
        first.setdefault(sha, item.name)
    frame = pd.DataFrame(rows).convert_dtypes()
    if not frame.empty:
        frame = frame.rename(columns={"input": "file"})
    return frame


def _model_sha256(model_id: str) -> str:
    try:
        return registry.card(model_id).sha256
    except (KeyError, registry.CardError):
        return ""


def errors_frame(items: list[Item]) -> pd.DataFrame:
    return pd.DataFrame([{"file": i.name, "error": i.error} for i in items if not i.ok], columns=["file", "error"])


def to_csv(items: list[Item], case_code: str | None = None) -> bytes:
    """Scored rows, then skipped inputs with their error in the `error` column."""
    table = pd.concat([results_frame(items, case_code), errors_frame(items)], ignore_index=True).convert_dtypes()
    return csv_bytes(table)


def to_excel(items: list[Item], case_code: str | None = None) -> bytes:
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as xl:
        spreadsheet_safe(results_frame(items, case_code)).to_excel(xl, sheet_name="results", index=False)
        spreadsheet_safe(errors_frame(items)).to_excel(xl, sheet_name="skipped", index=False)
    return buf.getvalue()


# --- command line -----------------------------------------------------------------------------------------------------
def _recording(task, path: Path, device: str | None, options: dict) -> Item:
    name = str(path)
    try:
        return Item(name, prediction=task.predict_recording(path, device=device, **options))
    except (ValueError, OSError) as exc:  # SequenceInputError is a ValueError: said as it is, less the name
        return Item(name, error=_reason(path.name, exc) if isinstance(exc, OSError)
                    else str(exc).removeprefix(f"{path.name}: ").removeprefix(f"{path}: "))


def predict_paths(model_id: str, paths: list[Path], out: str | None = None, device: str | None = None, log=print,
                  emit=None, options: dict | None = None) -> int:
    """`python -m core predict`: score, record, write CSV (or Excel for .xlsx) to `out`, or hand the CSV's bytes to
    `emit` (default: stdout). Exit status 0 when at least one input was scored, 1 when none could be."""
    task = _task_of(model_id)
    held = {p: task.recordings(p) for p in paths} if hasattr(task, "recordings") else {}
    sources, items = expand([p for p in paths if not held.get(p)])
    for item in items:
        log(f"skipped {item.name}: {item.error}")
    warned = False
    for path in (r for p in paths for r in held.get(p) or []):  # a time-lapse recording: one sequence, one row
        item = _recording(task, path, device, options or {})
        items.append(item)
        if not item.ok:
            log(f"skipped {item.name}: {item.error}")
            continue
        log(f"{item.name}: {item.prediction.extras['n_frames']} frames staged")
        try:
            item.record_id = records.record(item.prediction, task=registry.card(model_id).task, source="cli")
        except Exception as exc:  # noqa: BLE001 - the result is still written; said once
            if not warned:
                log(f"warning: predictions could not be saved to the case records ({_exc_text(exc)})")
                warned = True
    for progress in run(model_id, sources, device=device, source="cli", options=options):
        for item in progress.items:
            if not item.ok:
                log(f"skipped {item.name}: {item.error}")
        if progress.record_error and not warned:
            log(f"warning: {progress.record_error}")
            warned = True
        log(progress.line())
        items.extend(progress.items)
    n_ok = sum(item.ok for item in items)
    if out and str(out).lower().endswith(".xlsx"):
        Path(out).write_bytes(to_excel(items))
    elif out:
        Path(out).write_bytes(to_csv(items))
    elif emit is not None:
        emit(to_csv(items))
    else:
        sys.stdout.write(to_csv(items).decode())
        sys.stdout.flush()
    log(f"{n_ok} scored, {len(items) - n_ok} skipped" + (f"; results in {out}" if out else "")
        + ("" if warned else f"; recorded in {records.describe_url()}"))
    return 0 if n_ok else 1

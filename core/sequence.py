"""Time-lapse sequences: read a video, a zip or folder of frames, or a Gomez embryo folder in time order; decode
per-frame probabilities with a left-to-right Viterbi (development never goes backwards); extract event times.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Callable

import cv2
import numpy as np

from .datasets import gomez
from .imageio import IMAGE_SUFFIXES, MAX_BYTES, ImageInputError, open_zip, read_image, shows_something

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg"}
MAX_SIDE = 320  # frames are kept at most this large: the model reads 160 px, the page shows ~300 px
MAX_FRAMES = 5000
MIN_RECORDING_FRAMES = 5  # a name shared by fewer frames is a stray file, not a second recording
DEFAULT_MINUTES = 15.0  # EmbryoScope's usual acquisition interval; the user sets the real one


class SequenceInputError(ValueError):
    """The input cannot be read as a sequence of frames; str(e) is a message for the user."""


@dataclass
class FrameSequence:
    frames: list[np.ndarray]  # H x W x 3 uint8 RGB, at most MAX_SIDE px
    names: list[str]
    source: str
    order_rule: str  # how the time order was decided, shown to the user
    skipped: list[str] = field(default_factory=list)  # "name: reason" for entries that were not usable frames
    true_phases: list[str | None] | None = None  # Gomez annotations, when given
    frame_numbers: list[int] | None = None  # acquisition numbers (RUN<k>, or a sampled video's frame numbers)
    notes: list[str] = field(default_factory=list)  # how the frames were taken from the input, for the user
    sha256: str = ""  # of the file it was read from (a video or zip), or of a folder's frames in order, for the record
    recorded_hours: list[float] | None = None  # hours after insemination per frame, from the instrument's time table
    time_table: str = ""  # the file they came from
    time_table_problem: str = ""  # why a time table that came with the frames was not used
    padded_as_crops: bool = False  # tight crops padded to a whole well's framing (the page's crops toggle)

    @property
    def order_unknown(self) -> bool:
        return self.order_rule.startswith("file name order")

    def __len__(self) -> int:
        return len(self.frames)


# --- time order ------------------------------------------------------------------------------------------
_DIGITS = re.compile(r"([0-9]+)")


def natural_key(name: str) -> tuple:
    """'frame9' < 'frame10': digit runs compare as numbers, the rest case-insensitively."""
    parts = _DIGITS.split(PurePosixPath(name).name.lower())
    return tuple((0, int(p), "") if _DIGITS.fullmatch(p) else (1, 0, p) for p in parts if p != "")


def order_frames(names: list[str]) -> tuple[list[int], str, list[int]]:
    """Indices of `names` in time order, the rule used, and the indices left out of the order: RUN<k> numbers, else
    numbers in the names, else name order. When most names carry a number, names without one (a stray `cover.png`)
    have no place in time and are left out rather than scrambling the order."""
    bases = [PurePosixPath(n.replace("\\", "/")).name for n in names]
    runs = [gomez.RUN_RE.search(b) for b in bases]
    if bases and all(runs):
        order = sorted(range(len(names)), key=lambda i: (int(runs[i].group(1)), natural_key(bases[i])))
        return order, "frame number RUN<k> in the file names", []
    numbered = [i for i, b in enumerate(bases) if _DIGITS.search(PurePosixPath(b).stem)]
    if bases and 2 * len(numbered) >= len(bases):
        order = sorted(numbered, key=lambda i: (natural_key(bases[i]), bases[i]))
        return order, "numbers in the file names", sorted(set(range(len(names))) - set(numbered))
    return sorted(range(len(names)), key=lambda i: bases[i].lower()), "file name order (no frame numbers found)", []


def recordings(names: list[str]) -> dict[str, int]:
    """Frames per recording. One recording's names differ only in numbers (frame number, time stamp); the words
    before its frame number that carry a letter name it ("E2_EA32-6_phase_split_270" -> EA32-6 phase split):
    several such names mean several embryos, wells or focal planes in one set of frames."""
    counts: dict[str, int] = {}
    for n in names:
        key = recording_name(n)
        counts[key] = counts.get(key, 0) + 1
    return counts


def recording_name(name: str) -> str:
    """The words before a frame's number that carry a letter: the recording it belongs to (see recordings)."""
    stem = PurePosixPath(name.replace("\\", "/")).stem
    numbers = list(gomez.RUN_RE.finditer(stem)) or list(_DIGITS.finditer(stem))
    before = stem[:numbers[-1].start()] if numbers else stem
    return " ".join(t for t in re.split(r"[\s_.]+", before) if re.search(r"[A-Za-z]", t))


# --- readers ---------------------------------------------------------------------------------------------
def _shrink(rgb: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def read_video(source, name: str = "video", max_frames: int = MAX_FRAMES) -> FrameSequence:
    """The frames of an MP4/AVI/... (path or bytes) through OpenCV, one per acquisition: a video exported at a
    playback frame rate repeats each acquisition, and the repeats are merged (else every time would be multiplied by
    the repeat count). A video declaring more than max_frames frames is scanned first for its acquisitions, so every
    acquisition is classified; only past max_frames acquisitions are they sampled evenly over the whole recording.
    Frames the file declares but that do not decode are reported."""
    tmp = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        fd, tmp = tempfile.mkstemp(suffix=Path(name).suffix or ".mp4")
        with os.fdopen(fd, "wb") as f:
            f.write(source)
        path = tmp
    else:
        path = str(source)
    try:
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise SequenceInputError(f"{name}: not a readable video (the file is corrupt or its codec is not supported). "
                                     "Try MP4 (H.264/MPEG-4) or AVI, or upload the frames as a zip.")
        declared = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        acquisitions = None  # video frame numbers of the acquisitions, when the video was scanned first
        if declared > max_frames:  # mostly videos padded to a playback rate: find the acquisitions first
            thumbs, video_numbers, scanned = [], [], 0
            while cap.grab():
                ok, bgr = cap.retrieve()
                if ok and bgr is not None and bgr.size:
                    thumbs.append(_thumbnail(bgr))
                    video_numbers.append(scanned)
                scanned += 1
            cap.release()
            cap = cv2.VideoCapture(path)
            acquisitions = [video_numbers[i] for i in distinct_frames(thumbs)] if thumbs else []
        stride = -(-len(acquisitions) // max_frames) if acquisitions else 1
        wanted = set(acquisitions[::stride]) if acquisitions else None
        frames, numbers, skipped, index = [], [], [], 0
        while len(frames) < max_frames:
            if not cap.grab():
                break
            if wanted is None or index in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None and bgr.size:
                    frames.append(_shrink(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                    numbers.append(index)
                else:
                    skipped.append(f"frame {index}: could not be decoded")
            index += 1
        more = wanted is None and cap.grab()
        cap.release()
    finally:
        if tmp:
            os.unlink(tmp)
    if not frames:
        raise SequenceInputError(f"{name}: no frame could be decoded from this video (corrupt or empty file).")
    if more:
        skipped.append(f"frames after video frame {index}: not read (limit of {max_frames} frames)")
    if declared and not more and index < declared * 0.98:
        skipped.append(f"the video declares {declared} frames but only {index} decoded: it is damaged or cut short, "
                       "so frames are missing and the times after a damaged part may be early")
    if acquisitions is None:
        kept = distinct_frames([_thumbnail(f, rgb=True) for f in frames])
        acquisitions, frames = [numbers[i] for i in kept], [frames[i] for i in kept]
        numbers = acquisitions
    notes = []
    if len(acquisitions) < index:
        notes.append(f"{index} video frames, each acquisition repeated about {index / len(acquisitions):.1f}× (a video "
                     f"exported at a playback frame rate): the repeats are merged into {len(acquisitions)} acquisitions")
    if stride > 1:
        notes.append(f"{len(acquisitions)} acquisitions, over the {max_frames}-frame limit: one in every {stride} "
                     "is classified, over the whole recording")
    rank = {n: k for k, n in enumerate(acquisitions)}
    return _usable(FrameSequence(frames, [f"{name}#{n}" for n in numbers], name, "video frame order", skipped,
                                 frame_numbers=[rank[n] for n in numbers] if stride > 1 else None, notes=notes))


def _thumbnail(image: np.ndarray, rgb: bool = False) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)


def distinct_frames(thumbnails: list[np.ndarray], min_repeats: float = 0.2) -> list[int]:
    """Indices of the frames that start a new acquisition, when at least `min_repeats` of the steps between frames
    are repeats (a padded video); else every index. A repeat differs from the frame before by under a tenth of the
    typical change between acquisitions (re-encoding leaves it nearly, not exactly, equal). The encoder can also
    leave the frame after a new acquisition a little further from it than that: of two starts closer than the
    video's usual repeat allows, the one with the smaller change is taken for such a repeat."""
    if len(thumbnails) < 3:
        return list(range(len(thumbnails)))
    change = np.array([np.abs(b - a).mean() for a, b in zip(thumbnails, thumbnails[1:])])
    typical = np.percentile(change, 90)
    repeat = change < 0.1 * typical
    if typical <= 0 or repeat.mean() < min_repeats:  # a still video, or one frame per acquisition
        return list(range(len(thumbnails)))
    starts = kept = np.flatnonzero(~repeat) + 1
    min_gap = 1
    for _ in range(10):  # the usual repeat, measured again once the starts that shortened it are gone
        gap = round(0.75 * np.median(np.diff(np.r_[0, kept, len(thumbnails)])))  # 3 repeats: starts ≥ 2 apart
        if gap <= min_gap:
            break
        min_gap, taken, chosen = gap, np.zeros(len(thumbnails) + gap, bool), []
        taken[:gap] = True  # frame 0 starts the first acquisition
        for s in starts[np.argsort(-change[starts - 1], kind="stable")]:  # the clearest changes first
            if not taken[s]:
                taken[max(0, s - gap + 1):s + gap] = True
                chosen.append(s)
        kept = np.sort(chosen)
    return [0, *map(int, kept)]


def _from_named_files(entries: list[tuple[str, Callable[[], bytes]]], source: str) -> FrameSequence:
    """Frames from (name, read) pairs; each file is read only when its turn comes, so a set is never all in memory
    at once."""
    frames, names, hashes, skipped, conversions = [], [], [], [], {}
    for entry, read in entries:
        base = PurePosixPath(entry).name
        if PurePosixPath(entry).suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{entry}: not an image file")
            continue
        try:
            image = read_image(read(), name=base)
        except ImageInputError as exc:
            skipped.append(str(exc))
            continue
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as exc:  # a file that cannot be read here
            skipped.append(f"{entry}: cannot be read ({exc})")
            continue
        frames.append(_shrink(image.pixels))
        names.append(entry)
        hashes.append(image.sha256)
        for note in image.notes:  # the same conversion is usually made on every frame: say it once, with a count
            conversions[note] = conversions.get(note, 0) + 1
    if not frames:
        raise SequenceInputError(f"{source}: no readable image frames found"
                                 + (f" ({len(skipped)} entries skipped, e.g. {skipped[0]})" if skipped else "") + ".")
    folders = sorted({str(PurePosixPath(n.replace("\\", "/")).parent) for n in names})
    if len(folders) > 1:
        shown = ", ".join(f or "(top level)" for f in folders[:4]) + (" …" if len(folders) > 4 else "")
        raise SequenceInputError(f"{source}: frames in {len(folders)} folders ({shown}). Give one embryo's frames, from "
                                 "one focal plane, per sequence: merged folders would make one nonsense timeline.")
    several = sorted((k or "(no name)", n) for k, n in recordings(names).items() if n >= MIN_RECORDING_FRAMES)
    if len(several) > 1:
        shown = ", ".join(f"{k} ({n} frames)" for k, n in several[:4]) + (" …" if len(several) > 4 else "")
        raise SequenceInputError(f"{source}: the frames' names show {len(several)} recordings ({shown}). Give one "
                                 "embryo's frames, from one focal plane, per sequence: joined, they would make one "
                                 "nonsense timeline.")
    order, rule, unordered = order_frames(names)
    skipped += [f"{names[i]}: no frame number, while the other frames have one (left out of the time order)"
                for i in unordered]
    frames = [frames[i] for i in order]
    names = [names[i] for i in order]
    notes = [f"{note} ({n} of {len(frames)} frames)" if n < len(frames) else f"every frame: {note}"
             for note, n in conversions.items()]
    # the same frames in the same order are the same input, wherever they are read from (a folder has no file hash)
    digest = hashlib.sha256("".join(f"{PurePosixPath(names[k]).name}:{hashes[i]}\n"
                                    for k, i in enumerate(order)).encode()).hexdigest()
    return _usable(FrameSequence(frames, names, source, rule, skipped, frame_numbers=_run_numbers(names), notes=notes,
                                 sha256=digest))


MIN_FRAME_SIDE = 32  # px; a frame smaller than this shows no embryo to stage


def _usable(seq: FrameSequence) -> FrameSequence:
    """A sequence with something to stage: not every frame flat or tiny (5000 black 2×2 frames were staged as
    'cleavage over 1250 h' and saved)."""
    if not any(shows_something(f, MIN_FRAME_SIDE) for f in seq.frames):
        raise SequenceInputError(f"{Path(seq.source).name}: none of its {len(seq.frames)} frames shows anything to "
                                 f"stage (each is one flat colour or under {MIN_FRAME_SIDE} pixels a side).")
    return seq


def _run_numbers(names: list[str]) -> list[int] | None:
    nums = [gomez.frame_number(Path(n)) for n in names]
    return nums if all(n is not None for n in nums) else None


TIME_TABLE_SUFFIX = "_timeelapsed.csv"  # Gomez's <embryo>_timeElapsed.csv


MAX_CULTURE_H = 7 * 24  # embryo culture lasts up to 7 days
MAX_STEP_H = 2.0  # instruments take a frame every 5 to 20 minutes: hours this far apart are minutes


def time_table_problem(numbers: list[int], times: dict[int, float]) -> str | None:
    """Why recorded times (hours after insemination by RUN number) cannot time these frames, or None when they can:
    a frame without a time, a negative time, times that do not rise, or times that look like minutes."""
    missing = [n for n in numbers if n not in times]
    if missing:
        return f"it has no time for {len(missing)} of the {len(numbers)} frames (e.g. RUN{missing[0]})"
    hours = [times[n] for n in numbers]
    if hours and hours[0] < 0:
        return f"it gives negative hours ({hours[0]:g} h at RUN{numbers[0]})"
    still = next((k for k in range(1, len(hours)) if hours[k] <= hours[k - 1]), None)
    if still is not None:
        return (f"its times do not increase from frame to frame (RUN{numbers[still - 1]} at {hours[still - 1]:g} h, "
                f"RUN{numbers[still]} at {hours[still]:g} h)")
    per_acquisition = np.diff(hours) / np.maximum(np.diff(numbers), 1)
    if len(hours) > 1 and (hours[-1] - hours[0] > MAX_CULTURE_H or np.median(per_acquisition) > MAX_STEP_H):
        return (f"its times span {hours[-1] - hours[0]:.0f} h, {np.median(per_acquisition):.1f} h an acquisition: are "
                "they in minutes? Hours after insemination are expected")
    return None


def with_time_table(seq: FrameSequence, text: str, table: str, embryo: str) -> FrameSequence:
    """The sequence with each frame's recorded hours when the time table is this embryo's (`<embryo>_timeElapsed.csv`)
    and can time its frames (time_table_problem); otherwise `time_table_problem` says why the minutes between frames
    are used instead."""
    named_for = table[: -len(TIME_TABLE_SUFFIX)]
    if named_for.lower() != embryo.lower():
        why = f"it is named for {named_for}, not for this embryo, {embryo}"
    elif seq.frame_numbers is None:
        why = "the frames' names carry no RUN numbers to look their times up by"
    else:
        times = gomez.parse_times(text)
        why = time_table_problem(seq.frame_numbers, times)
        if why is None:
            return replace(seq, recorded_hours=[times[n] for n in seq.frame_numbers], time_table=table)
    return replace(seq, time_table_problem=f"The time table {table} was not used: {why}. Event times come from the "
                                           "minutes between frames.")


def read_zip(source, name: str = "frames.zip", max_frames: int = MAX_FRAMES) -> FrameSequence:
    """Image frames of a zip (path or bytes); other entries are skipped and listed. A Gomez `<embryo>_phases.csv`
    inside brings the annotated phases, as in a Gomez folder."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    try:
        zf = open_zip(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise SequenceInputError(f"{name}: not a readable zip archive.") from None
    entries, skipped = [], []
    with zf:
        for info in zf.infolist():
            entry = info.filename
            parts = PurePosixPath(entry).parts
            if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
                continue
            if len(entries) >= max_frames:
                skipped.append(f"{entry}: not read (limit of {max_frames} frames)")
            elif info.file_size > MAX_BYTES:  # a zip bomb's entry unpacks to gigabytes from a few kilobytes
                skipped.append(f"{entry}: unpacks to {info.file_size / 2**20:.0f} MB, more than a frame may be")
            else:
                entries.append((entry, lambda info=info: zf.read(info)))
        tables = [(e, read) for e, read in entries if e.lower().endswith("_phases.csv")]
        try:
            phases = gomez.parse_phases(tables[0][1]().decode(errors="replace")) if len(tables) == 1 else []
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError):
            phases = []
        if phases:  # a zipped Gomez embryo folder with its annotation table
            entries = [(e, read) for e, read in entries if e != tables[0][0]]
        time_table = next(((e, read) for e, read in entries if e.lower().endswith(TIME_TABLE_SUFFIX)), None)
        if time_table:
            entries = [(e, read) for e, read in entries if e != time_table[0]]
        seq = _from_named_files(entries, name)
        if time_table:
            folders = {PurePosixPath(n).parent.name for n in seq.names}
            embryo = folders.pop() if len(folders) == 1 and "" not in folders else PurePosixPath(name).stem
            seq = with_time_table(seq, time_table[1]().decode(errors="replace"), PurePosixPath(time_table[0]).name,
                                  embryo)
    seq.skipped = skipped + seq.skipped
    if phases and seq.frame_numbers is not None:
        seq.true_phases = [gomez.phase_of(n, phases) for n in seq.frame_numbers]
    return seq


def folder_stamp(folder: Path) -> float:
    """The latest change to a folder's files or to the Gomez annotation and time table beside it (a cache key)."""
    beside = [gomez.annotations_path(folder), gomez.time_table_path(folder)]
    files = [*folder.iterdir(), *(p for p in beside if p is not None)]
    return max((p.lstat().st_mtime for p in files), default=0.0)  # lstat: a broken link too


def read_folder(folder, annotations: Path | None = None, recording_of: str | None = None) -> FrameSequence:
    """A folder of frames. A Gomez embryo folder (…/embryo_dataset/<embryo>) also brings its annotated phases.
    recording_of: a frame's file name; only the frames of its recording are read (a folder may hold several, as the
    Gomez blastocyst crops do)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SequenceInputError(f"{folder}: no such folder.")
    if annotations is None:
        annotations = gomez.annotations_path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    tables = sorted((p for p in files if p.name.lower().endswith(TIME_TABLE_SUFFIX)),  # this embryo's first
                    key=lambda p: (p.name.lower() != f"{folder.name.lower()}{TIME_TABLE_SUFFIX}", p.name))
    time_table = gomez.time_table_path(folder) or (tables[0] if tables else None)  # where Gomez has it, else beside
    files = [p for p in files if p not in tables]  # the frames
    if recording_of is not None:
        wanted = recording_name(recording_of)
        files = images = [p for p in images if recording_name(p.name) == wanted]
    if not images:
        inner = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                       and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir()))
        if inner:
            raise SequenceInputError(f"{folder}: no frames here, but {len(inner)} folder{'s' if len(inner) > 1 else ''} "
                                     f"of frames inside ({', '.join(inner[:5])}{' …' if len(inner) > 5 else ''}): "
                                     "give one embryo's folder.")
    order, _, unordered = order_frames([p.name for p in images])
    kept = set(order[:MAX_FRAMES]) | set(unordered)  # the first frames in time, not in name order
    over = [f"{images[i].name}: not read (limit of {MAX_FRAMES} frames)" for i in order[MAX_FRAMES:]]
    files = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES] + [images[i] for i in sorted(kept)]
    seq = _from_named_files([(p.name, p.read_bytes) for p in files], str(folder))
    seq.skipped += over
    if annotations is not None and seq.frame_numbers is not None:
        phases = gomez.read_phases(annotations)
        seq.true_phases = [gomez.phase_of(n, phases) for n in seq.frame_numbers]
    if time_table is not None:
        seq = with_time_table(seq, time_table.read_text(errors="replace"), time_table.name, folder.name)
    return seq


def read_sequence(source, name: str | None = None) -> FrameSequence:
    """A video, a zip or a folder (path), or an upload's bytes with its file name."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return read_folder(source)
    name = name or (Path(source).name if isinstance(source, (str, Path)) else "upload")
    suffix = Path(name).suffix.lower()
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise SequenceInputError(f"{name}: no such file or folder.")
        source = Path(source).read_bytes()
    data = bytes(source)
    if not data:
        raise SequenceInputError(f"{name}: the file is empty.")
    if suffix == ".zip" or data[:4] == b"PK\x03\x04":
        return replace(read_zip(data, name), sha256=hashlib.sha256(data).hexdigest())
    if suffix in VIDEO_SUFFIXES:
        return replace(read_video(data, name), sha256=hashlib.sha256(data).hexdigest())
    raise SequenceInputError(f"{name}: expected a video (MP4, AVI), a zip of frames or a folder of frames.")


# --- decoding --------------------------------------------------------------------------------------------
def viterbi_monotone(log_p: np.ndarray, switch_cost: float = 2.0, allowed: np.ndarray | None = None) -> np.ndarray:
    """Best state path of a left-to-right chain: states never decrease, any forward jump (skips allowed) costs
    `switch_cost` (in log units), staying is free. log_p: (T, K) log-probabilities; allowed: optional (T, K) mask.
    Returns the (T,) state indices maximising sum(log_p[t, s_t]) - switch_cost * (number of changes)."""
    log_p = np.asarray(log_p, np.float64)
    if allowed is not None:
        log_p = np.where(allowed, log_p, -np.inf)
    n, k = log_p.shape
    if n == 0:
        return np.zeros(0, int)
    score = log_p[0].copy()
    back = np.zeros((n, k), np.int64)
    idx = np.arange(k)
    for t in range(1, n):
        # best predecessor strictly before j: running max of score over states 0..j-1
        prev_best = np.maximum.accumulate(score)
        prev_arg = np.zeros(k, np.int64)
        for j in range(1, k):  # argmax of the running max, vectorisation not worth it for k <= 16
            prev_arg[j] = prev_arg[j - 1] if score[prev_arg[j - 1]] >= score[j - 1] else j - 1
        shifted = np.concatenate([[-np.inf], prev_best[:-1]]) - switch_cost
        move = shifted > score
        back[t] = np.where(move, prev_arg, idx)
        score = np.where(move, shifted, score) + log_p[t]
    path = np.empty(n, np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


# --- bursts of change between frames (where divisions, and also movements, show) -----------------------------
CHANGE_BLUR = 1.5  # px at the model's input size: frame-to-frame change ignores pixel noise
BURST_Z = 8.0  # robust z-score of a frame's change that counts as a full burst (strength 1)
MIN_FRAMES_FOR_CHANGE = 30  # shorter sequences are taken as sparse samples (frames hours apart): no bursts
MIN_CHANGE_SPREAD = 0.01  # floor of the MAD (in per-image standard deviations; real sequences: 0.017–0.035), so a
#                           nearly still video does not turn its noise into bursts


def frame_change(inputs: np.ndarray, previous: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute difference of each model input (N, H, W[, 1], standardised) from the frame before it, after a
    slight blur; `previous` is the last blurred frame of the batch before (the first frame's change is 0).
    Returns (changes (N,), last blurred frame)."""
    blurred = np.stack([cv2.GaussianBlur(np.asarray(x, np.float32).squeeze(), (0, 0), CHANGE_BLUR) for x in inputs])
    chain = blurred if previous is None else np.concatenate([previous[None], blurred])
    diffs = np.abs(np.diff(chain, axis=0)).mean(axis=(1, 2))
    changes = np.concatenate([[0.0], diffs]) if previous is None else diffs
    return changes, blurred[-1]


def burst_strength(changes: np.ndarray) -> np.ndarray:
    """Per frame, 0–1: how far the change into that frame stands out as a burst. A cleavage shows as a burst of
    change against an embryo that otherwise barely moves between frames (so do shifting blastomeres and a moving
    embryo); only the local maximum of a burst (± 2 frames) counts, scaled by its robust z-score (median / MAD of the
    sequence) up to BURST_Z."""
    c = np.asarray(changes, np.float64)
    moved = c[1:][c[1:] > 0]  # a repeated frame (a video padded to its frame rate) says nothing of the embryo's pace
    if len(moved) < MIN_FRAMES_FOR_CHANGE:
        return np.zeros(len(c))
    med = np.median(moved)
    z = (c - med) / max(float(np.median(np.abs(moved - med))), MIN_CHANGE_SPREAD)
    z[0] = 0.0
    padded = np.pad(z, 2, constant_values=-np.inf)
    peak = z >= np.max(np.lib.stride_tricks.sliding_window_view(padded, 5), axis=1)
    return np.where(peak, np.clip(z / BURST_Z, 0, 1), 0.0)


def decode(stage_p: np.ndarray, phase_p: np.ndarray, switch_cost: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Decoded stage and phase indices per frame: stage by Viterbi, then phase by Viterbi among the phases of the
    decoded stage, so both are monotone and agree."""
    eps = 1e-6
    stage_path = viterbi_monotone(np.log(stage_p + eps), switch_cost)
    stage_of = np.array([gomez.STAGES.index(gomez.STAGE_OF_PHASE[p]) for p in gomez.PHASES])
    allowed = stage_of[None, :] == stage_path[:, None]
    phase_path = viterbi_monotone(np.log(phase_p + eps), switch_cost, allowed)
    return stage_path, phase_path


EVENTS = gomez.PHASES[1:]  # tPNa … tHB: the first frame at or beyond each phase


def event_frames(phase_index, phases: list[str] = gomez.PHASES) -> dict[str, int]:
    """Event -> first frame index whose phase is that phase or a later one (a skipped phase shares the next one's
    time). Events already passed at the first frame are left out (they happened before the recording)."""
    idx = np.asarray([(-1 if p is None else p) for p in phase_index], dtype=float)
    known = np.where(idx >= 0)[0]
    events = {}
    if not len(known):
        return events
    first = idx[known[0]]
    for k, name in enumerate(phases):
        if name not in EVENTS or k <= first:
            continue
        hits = known[idx[known] >= k]
        if len(hits):
            events[name] = int(hits[0])
    return events


# Morphokinetic intervals (h) as the time-lapse nomenclature names them (Ciray et al. 2014, Hum Reprod 29:2650;
# t5 − t2 as Meseguer et al. 2011 use it): name -> (first event, second event, what it measures)
INTERVALS = {
    "cc2": ("t2", "t3", "second cell cycle"),
    "s2": ("t3", "t4", "synchrony of the divisions to 4 cells"),
    "cc3": ("t3", "t5", "third cell cycle"),
    "t5_t2": ("t2", "t5", "from 2 to 5 cells"),
    "s3": ("t5", "t8", "synchrony of the divisions to 8 cells"),
    "tb_tsb": ("tSB", "tB", "blastulation"),
}


def interval_name(key: str) -> str:
    """"cc2 (t3 − t2)"; an interval without a name of its own is its definition: "t5 − t2"."""
    first, second, _ = INTERVALS[key]
    return f"{second} − {first}" if "_" in key else f"{key} ({second} − {first})"


def interval_fields(events: list[dict]) -> dict:
    """What the events' times give, from the reviewer's times where set, else the draft's:
    - `<event>_h`: each event's time in hours;
    - `<name>_h` and `<name>_from`: each interval, and whose times it uses or why it is not given;
    - `intervals`: the same as rows (interval, meaning, hours, from);
    - `events_withheld`: draft times not used (an event skipped by the decoding takes the next one's frame; one after
      a gap in the recording, frames missing or a pause, happened somewhere in the gap);
    - `reviewed_events`, `events_out_of_order`.
    Every key is set, None where there is no value, so a re-timing keeps nothing stale."""
    times, why = {}, {}
    for e in events:
        if e.get("reviewed_hours") is not None:
            times[e["event"]] = (e["reviewed_hours"],
                                 "reviewed" if e.get("reviewed_after_hours") is None else "reviewed after a gap")
        elif not e.get("seen", True):
            why[e["event"]] = f"{e['event']} was skipped by the decoding"
        elif e.get("after_hours") is not None:
            why[e["event"]] = f"{e['event']} came after a gap in the recording"
        elif e.get("hours") is not None:
            times[e["event"]] = (e["hours"], "draft")
    rows = []
    for name, (first, second, meaning) in INTERVALS.items():
        if first in times and second in times:
            hours = round(times[second][0] - times[first][0], 2)
            source = " and ".join(sorted({times[first][1], times[second][1]}, reverse=True))
        else:
            hours = None
            source = "; ".join(why.get(e) or f"{e} not reached" for e in (first, second) if e not in times)
        rows.append({"key": name, "interval": interval_name(name), "meaning": meaning, "hours": hours, "from": source})
    timed = [(e, times[e]) for e in EVENTS if e in times]  # in biological order: their times must not go back
    backwards = [f"{later} ({t1:.1f} h, {s1}) is before {earlier} ({t0:.1f} h, {s0})"
                 for (earlier, (t0, s0)), (later, (t1, s1)) in zip(timed, timed[1:]) if t1 < t0]
    calls = [e["event"] for e in events if e.get("reviewed_frame") is not None]
    fields = {f"{event}_h": times[event][0] if event in times else None for event in EVENTS}
    for r in rows:
        key = r.pop("key")
        fields[f"{key}_h"], fields[f"{key}_from"] = r["hours"], r["from"]
    return fields | {"intervals": rows, "reviewed_events": ", ".join(calls) or None,
                     "events_withheld": "; ".join(why.values()) or None,
                     "events_out_of_order": "; ".join(backwards) or None}

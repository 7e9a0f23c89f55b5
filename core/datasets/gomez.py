"""Gomez et al. 2022 time-lapse layout: embryo_dataset/<embryo>/*RUN<k>.jpeg,
embryo_dataset_annotations/<embryo>_phases.csv (no header: phase,first_frame,last_frame; frame = RUN number) and, in
the full public set, embryo_dataset_time_elapsed/<embryo>_timeElapsed.csv (header frame_index,time: the RUN number and
its hours after insemination, as the instrument recorded them).

Also reads a bare embryo folder (frames only) and the blastocyst-crops folder (E2_<embryo>_phase_split_<n>.jpeg).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

PHASES = ["tPB2", "tPNa", "tPNf", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9+", "tM", "tSB", "tB", "tEB", "tHB"]
STAGES = ["pronuclear", "cleavage", "morula", "blastocyst"]
STAGE_OF_PHASE = {
    **{p: "pronuclear" for p in ("tPB2", "tPNa", "tPNf")},
    **{p: "cleavage" for p in ("t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9+")},
    "tM": "morula",
    **{p: "blastocyst" for p in ("tSB", "tB", "tEB", "tHB")},
}
# cells in each phase (9: nine or more): a phase change that adds cells is a division (core.tasks.timelapse.division_burst_check)
CELLS_OF_PHASE = {p: min(int(p[1:].rstrip("+")), 9) if p[1:2].isdigit() else (1 if STAGE_OF_PHASE[p] == "pronuclear" else 9)
                  for p in PHASES}
RUN_RE = re.compile(r"RUN(\d+)", re.IGNORECASE)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass
class Frame:
    path: Path
    number: int  # RUN<k>
    phase: str | None = None  # None: outside every annotated interval
    hours: float | None = None  # after insemination, from the time table when the set has one

    @property
    def stage(self) -> str | None:
        return STAGE_OF_PHASE.get(self.phase) if self.phase else None


@dataclass
class Embryo:
    name: str
    frames: list[Frame] = field(default_factory=list)


def frame_number(path: Path) -> int | None:
    m = RUN_RE.search(path.name)
    return int(m.group(1)) if m else None


def read_phases(csv_path: Path) -> list[tuple[str, int, int]]:
    return parse_phases(csv_path.read_text(errors="replace"))


def parse_phases(text: str) -> list[tuple[str, int, int]]:
    """(phase, first RUN, last RUN) rows of a Gomez `<embryo>_phases.csv`."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip().strip('"').strip() for p in line.split(",")]
        try:
            if len(parts) >= 3 and parts[0] in PHASES:
                rows.append((parts[0], int(float(parts[1])), int(float(parts[2]))))
        except ValueError:  # a row without frame numbers: not an interval
            continue
    return rows


def annotations_path(embryo_folder: Path) -> Path | None:
    """The phase annotations of a Gomez embryo folder (embryo_dataset/<embryo>), when the set has them."""
    path = embryo_folder.parent.parent / "embryo_dataset_annotations" / f"{embryo_folder.name}_phases.csv"
    return path if path.is_file() else None


def time_table_path(embryo_folder: Path) -> Path | None:
    """The instrument's time table of a Gomez embryo folder (embryo_dataset/<embryo>), when the set has one."""
    path = embryo_folder.parent.parent / "embryo_dataset_time_elapsed" / f"{embryo_folder.name}_timeElapsed.csv"
    return path if path.is_file() else None


def parse_times(text: str) -> dict[int, float]:
    """{RUN number: hours after insemination} of a `<embryo>_timeElapsed.csv` (a header row, if any, is skipped)."""
    times = {}
    for line in text.splitlines():
        parts = [p.strip().strip('"').strip() for p in line.split(",")]
        try:
            if len(parts) >= 2 and math.isfinite(hours := float(parts[1])):
                times[int(float(parts[0]))] = hours
        except ValueError:  # the header, or a row without numbers
            continue
    return times


def phase_of(number: int, phases: list[tuple[str, int, int]]) -> str | None:
    for phase, first, last in phases:
        if first <= number <= last:
            return phase
    return None


def is_gomez_root(path: Path) -> bool:
    return (path / "embryo_dataset").is_dir() and (path / "embryo_dataset_annotations").is_dir()


def read_embryo(folder: Path, annotations: Path | None = None, times: Path | None = None) -> Embryo:
    """One embryo's frames in time order, each with its annotated phase and recorded hours when their files are
    given."""
    phases = read_phases(annotations) if annotations and annotations.is_file() else []
    hours = parse_times(times.read_text(errors="replace")) if times and times.is_file() else {}
    frames = []
    for p in folder.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES and (n := frame_number(p)) is not None:
            frames.append(Frame(p, n, phase_of(n, phases), hours.get(n)))
    frames.sort(key=lambda f: f.number)
    return Embryo(folder.name, frames)


def read_dataset(root: Path) -> list[Embryo]:
    """Every embryo of a Gomez-layout root (the public full set has 704; the shared copy has 5)."""
    ann = root / "embryo_dataset_annotations"
    return [
        read_embryo(d, ann / f"{d.name}_phases.csv", time_table_path(d))
        for d in sorted((root / "embryo_dataset").iterdir()) if d.is_dir()
    ]


def read_blastocyst_crops(folder: Path) -> dict[str, list[Path]]:
    """E2_<embryo>_phase_split_<n>.jpeg files grouped by embryo (all blastocyst stage)."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*")):
        m = re.match(r"E2_(.+)_phase_split_(\d+)", p.stem)
        if m and p.suffix.lower() in IMAGE_SUFFIXES:
            groups.setdefault(m.group(1), []).append(p)
    return groups

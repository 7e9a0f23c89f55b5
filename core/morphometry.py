"""Sperm head morphometry in µm and WHO flags.

Every WHO figure used by the dashboard is here, in WHO_REFERENCE: WHO laboratory manual for the examination and
processing of human semen, 6th edition (2021), which keeps the 5th edition's (2010) description of a normal head
(Papanicolaou-stained): length 3.7–4.7 µm, width 2.5–3.2 µm, length/width 1.3–1.8, acrosome 40–70 % of the head
area, at most two small vacuoles covering at most 20 % of the head; lower reference limit of normal forms 4 %.

Length and width are the major and minor axes of the ellipse with the head mask's second moments (ImageJ's
"fit ellipse"), exact for elliptical heads and stable against a pixel of segmentation noise; ellipticity is
1 − width/length (0 for a circle).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

WHO_EDITION = "WHO laboratory manual for the examination and processing of human semen, 6th ed. (2021)"
WHO_REFERENCE = {
    "length_um": (3.7, 4.7),
    "width_um": (2.5, 3.2),
    "ratio": (1.3, 1.8),
    "acrosome_pct": (40.0, 70.0),
    "vacuole_count_max": 2,
    "vacuole_pct_max": 20.0,
    "normal_forms_lower_limit_pct": 4.0,
}
# Default calibration: chosen so that the median head of the Sperm Parsing v2 fields (1280×1024; fitted length
# ≈ 86 px, measured on 464 heads) measures the WHO median head length of 4.1 µm. It is an estimate, not a
# microscope calibration: users must set the µm per pixel of their own microscope and camera (stage micrometer).
DEFAULT_UM_PER_PX = 0.048
UM_PER_PX_RANGE = (0.005, 2.0)  # what a calibration may be: 100× oil objectives give about 0.03-0.1


@dataclass
class HeadMeasure:
    length_um: float
    width_um: float
    ratio: float
    area_um2: float
    perimeter_um: float
    ellipticity: float
    acrosome_pct: float | None = None
    vacuole_count: int | None = None
    vacuole_pct: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def outline_length(points: np.ndarray) -> float:
    """Length in pixels of the boundary traced through a region's edge pixels (a closed contour). The raw staircase
    reads ~4 % long on a head; a 3-point moving average removes the steps, and π adds back the half pixel between the
    edge pixels' centres and the region's edge (offsetting a closed curve by d lengthens it by 2πd). Within 1.5 % on
    ellipses of head size at 0.05–0.2 µm per pixel."""
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return float(np.pi)
    smooth = (np.roll(p, 1, 0) + p + np.roll(p, -1, 0)) / 3
    return float(np.linalg.norm(np.roll(smooth, -1, 0) - smooth, axis=1).sum() + np.pi)


def measure(mask: np.ndarray, um_per_px: float, parts: np.ndarray | None = None) -> HeadMeasure:
    """One head mask (bool H×W) in µm; `parts` (same size, 1 vacuole, 2 acrosome, 3 nucleus) adds the part figures."""
    if um_per_px <= 0:
        raise ValueError("the calibration (µm per pixel) must be positive")
    mask = np.asarray(mask, bool)
    n = int(mask.sum())
    if n < 5:
        raise ValueError("the head mask is too small to measure")
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(np.float64), bias=True) + np.eye(2) / 12.0  # a pixel's own extent
    minor, major = np.sqrt(np.clip(np.linalg.eigvalsh(cov), 0, None))
    length, width = 4 * major * um_per_px, 4 * minor * um_per_px
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(outline_length(c[:, 0, :]) for c in contours) * um_per_px
    out = HeadMeasure(
        length_um=float(length), width_um=float(width), ratio=float(length / max(width, 1e-9)),
        area_um2=float(n * um_per_px**2), perimeter_um=float(perimeter),
        ellipticity=float(1 - width / max(length, 1e-9)),
    )
    if parts is not None:
        parts = np.where(mask, parts, 0)
        vacuoles = (parts == 1).astype(np.uint8)
        out.acrosome_pct = float(100.0 * (parts == 2).sum() / n)
        out.vacuole_pct = float(100.0 * vacuoles.sum() / n)
        out.vacuole_count = int(cv2.connectedComponents(vacuoles)[0] - 1) if vacuoles.any() else 0
    return out


def who_flags(m: HeadMeasure) -> dict[str, bool]:
    """Which WHO criteria the head meets (True = within the reference range); part criteria only where measured."""
    ref = WHO_REFERENCE
    flags = {
        "length_ok": ref["length_um"][0] <= m.length_um <= ref["length_um"][1],
        "width_ok": ref["width_um"][0] <= m.width_um <= ref["width_um"][1],
        "ratio_ok": ref["ratio"][0] <= m.ratio <= ref["ratio"][1],
    }
    if m.acrosome_pct is not None:
        flags["acrosome_ok"] = ref["acrosome_pct"][0] <= m.acrosome_pct <= ref["acrosome_pct"][1]
    if m.vacuole_count is not None:
        flags["vacuoles_ok"] = m.vacuole_count <= ref["vacuole_count_max"] and m.vacuole_pct <= ref["vacuole_pct_max"]
    return flags


def who_normal(m: HeadMeasure, acrosome: bool = True) -> bool:
    """All WHO criteria met; `acrosome=False` leaves the acrosome-area criterion out (see ACROSOME_NOTE)."""
    return all(ok for k, ok in who_flags(m).items() if acrosome or k != "acrosome_ok")


# Sperm Parsing v2 outlines a smaller acrosome than WHO's stained-area definition (median 32 % of the head on 150
# of its annotated heads, quartiles 22–40 %), so the segmenter trained on it under-reads the acrosome share.
ACROSOME_NOTE = ("The acrosome share comes from a segmenter trained on Sperm Parsing v2, whose annotators outlined "
                 "a smaller acrosome than WHO's stained-area definition (median 32 % of the head in its fields), "
                 "so the 40–70 % criterion is off by default.")


def size_defects(row: dict, acrosome: bool = False) -> list[str]:
    """A measured head's departures from the WHO ranges, in an andrologist's words (short, long, narrow, ...); the
    acrosome's only when its criterion is used."""
    ref, out = WHO_REFERENCE, []
    for key, low, high in (("length_um", "short", "long"), ("width_um", "narrow", "wide"),
                           ("ratio", "round (low length/width)", "elongated (high length/width)")):
        value = row.get(key)
        if value is not None and value < ref[key][0]:
            out.append(low)
        elif value is not None and value > ref[key][1]:
            out.append(high)
    if row.get("vacuole_count") is not None and (row["vacuole_count"] > ref["vacuole_count_max"]
                                                 or (row.get("vacuole_pct") or 0) > ref["vacuole_pct_max"]):
        out.append("vacuolated")
    if acrosome and row.get("acrosome_pct") is not None and not (
            ref["acrosome_pct"][0] <= row["acrosome_pct"] <= ref["acrosome_pct"][1]):
        out.append(f"acrosome outside {ref['acrosome_pct'][0]:.0f}–{ref['acrosome_pct'][1]:.0f} % of the head")
    return out


def percent_normal(normal: list[bool]) -> float | None:
    return 100.0 * sum(normal) / len(normal) if normal else None


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % interval of a proportion k/n in % (Wilson score: sound for small n and for 0 or n)."""
    if n <= 0:
        return None
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1)


WHO_MIN_ASSESSED = 200  # spermatozoa WHO 2021 asks to assess for the share of normal forms
UNDER_WHO_COUNT = f"not judged: under the {WHO_MIN_ASSESSED} heads WHO asks for"


def limit_reading(interval: tuple[float, float] | None, n: int) -> str | None:
    """The share of normal forms of n heads against the lower reference limit: not judged under WHO's 200 (with
    0 normal, the interval's top only falls under 4 % from about 93 heads, so one field of at most a dozen could only
    ever reassure), else judged on its 95 % interval: "below", "at or above", or "too few heads to tell" while the
    interval still holds the limit."""
    if interval is None:
        return None
    if n < WHO_MIN_ASSESSED:
        return UNDER_WHO_COUNT
    limit = WHO_REFERENCE["normal_forms_lower_limit_pct"]
    return "below" if interval[1] < limit else "at or above" if interval[0] >= limit else "too few heads to tell"


def reference_line() -> str:
    """The ranges used, in one short line (for a record's report)."""
    r = WHO_REFERENCE
    return (f"Ranges used: WHO 2021 (6th ed.), Papanicolaou-stained heads: length {r['length_um'][0]}–"
            f"{r['length_um'][1]} µm, width {r['width_um'][0]}–{r['width_um'][1]} µm, length/width "
            f"{r['ratio'][0]}–{r['ratio'][1]}, acrosome {r['acrosome_pct'][0]:.0f}–{r['acrosome_pct'][1]:.0f} % of the "
            f"head, ≤ {r['vacuole_count_max']} vacuoles covering ≤ {r['vacuole_pct_max']:.0f} %.")


def reference_text() -> str:
    r = WHO_REFERENCE
    return (f"{WHO_EDITION}: normal head length {r['length_um'][0]}–{r['length_um'][1]} µm, width "
            f"{r['width_um'][0]}–{r['width_um'][1]} µm, length/width {r['ratio'][0]}–{r['ratio'][1]}, acrosome "
            f"{r['acrosome_pct'][0]:.0f}–{r['acrosome_pct'][1]:.0f} % of the head, ≤ {r['vacuole_count_max']} "
            f"vacuoles covering ≤ {r['vacuole_pct_max']:.0f} %; lower reference limit of normal forms "
            f"{r['normal_forms_lower_limit_pct']:.0f} %. The size ranges were measured on Papanicolaou-stained "
            "heads; other stains change the measured size (Diff-Quik heads measure larger), so read sizes against "
            "them only for Papanicolaou slides, and vacuoles are judged by count and area only (not their size or "
            "place).")

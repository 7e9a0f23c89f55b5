"""Embryo grading: stage (cleavage / blastocyst) and quality (not good / good) of each embryo in an image.

The grader never sees the raw framing: `embryo_crop` first finds the embryo (a classical detector on fine image
detail, so it works on a tight crop, a wide well view or a dish) and cuts a square of fixed size relative to the
embryo. The same function is used in training, evaluation and the page. In a dish image `embryo-dish` (YOLO)
finds each embryo and every box is graded the same way.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .. import registry
from ..imageio import InputImage, refuse_blank
from ..results import Prediction

GRADE_ID = "embryo-grade"
DISH_ID = "embryo-dish"
CROP_SIDE = 2.5  # crop side in embryo radii: the whole zona plus a margin
TRUSTED_IN_VIEW = 0.9  # least share of the classical locator's circle inside the photo for it to be trusted
MIN_LOCATED = 0.5  # least classical radius / the detected embryo's radius for the classical circle to be trusted
# Only a circle smaller than this share of the photo's shorter side is checked against the detector (35-50 ms):
# the 15 Hung Vuong photos whose circle was a patch had 0.04-0.20, the other 667 a median of 0.39 (10 below 0.25)
SUSPECT_RADIUS = 0.25
BOX_TO_RADIUS = 0.47  # located radius / longer side of embryo-dish's box (median over Hung Vuong training images)
# embryo-dish's best box scoring below this: probably no whole embryo in the photo (the 5 Hung Vuong training photos
# below it are empty, a pipette or cut off; at the detector's own 0.5, 4 of the 11 below were whole embryos)
NO_EMBRYO_SCORE = 0.3
# outline_score below this: no zona-like outline around the located object; 11 of the 1050 training images score
# lower (their 1st percentile), 0 of 270 held-out embryos, all of 100 noise images, 4 of 300 PCOSGen ultrasound frames
NO_OUTLINE = 0.18
LOW_CONF = 0.05  # detector threshold when only its best score is wanted
# dark_surround above this: a dark well or background around the embryo; of 573 training-set crops (Hung Vuong, Gomez
# frames and blastocyst crops) none reached 0.59, and a day-3 embryo put on a dark well read "good blastocyst" at 1.0
DARK_SURROUND = 0.8
# located radius / the photo's shorter side below this, with no whole embryo detected: not an embryo photo. 187
# training-set photos (Hung Vuong, Gomez frames and crops) had 0.16 or more, the page's generated blastocyst (which
# the detector does not see whole) 0.10, a sperm field's 'embryo' 0.03
SMALL_FOR_PHOTO = 0.06
CULTURE_DAYS = (3, 5)  # the day the user may give: 5 stands for day 5 or later
CULTURE_DAY_NAMES = {"not given": None, "day 3": 3, "day 5 or later": 5}
# the card's tables of stage on the held-out photos as taken and under other optics (embryo_training.OPTICS_SETS)
OPTICS_TABLES = {"original": "heldout-pooled/as-taken", "uneven-light": "heldout-pooled/vignetted",
                 "relief": "heldout-pooled/relief-shaded"}


# --- localisation and the normalised crop ---------------------------------------------------------------------

def locate_embryo(image: np.ndarray) -> tuple[float, float, float]:
    """(cx, cy, r) in pixels: the largest region of dense fine detail (cells), robust to well rims and vignettes.

    A second pass inside a crop of CROP_SIDE radii around the first estimate makes the result independent of how
    much of the frame the embryo fills (one pass over-estimates small embryos: its detail map has a fixed scale)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    cx, cy, r = _locate_once(grey)
    side = CROP_SIDE * r
    x, y, rr = _locate_once(crop_square(grey, cx, cy, side, 128))
    k = side / 128
    return cx + (x - 64) * k, cy + (y - 64) * k, rr * k


def _locate_once(grey: np.ndarray) -> tuple[float, float, float]:
    h, w = grey.shape
    s = 128 / max(h, w)
    g = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA).astype(np.float32)
    # fine detail relative to local brightness, so a bright smooth rim counts less than textured cells
    detail = np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.5)) / (cv2.GaussianBlur(g, (0, 0), 8) + 16)
    detail = cv2.medianBlur(detail, 3)
    coarse = cv2.GaussianBlur(detail, (0, 0), 12)
    cy, cx = np.unravel_index(int(np.argmax(coarse)), coarse.shape)
    fine = cv2.GaussianBlur(detail, (0, 0), 4)
    if fine[cy, cx] <= 1e-6:  # flat image: nothing to find, use the whole frame
        return w / 2, h / 2, min(h, w) / CROP_SIDE
    _, lab = cv2.connectedComponents((fine >= 0.4 * fine[cy, cx]).astype(np.uint8))
    ys, xs = np.nonzero(lab == lab[cy, cx])
    r = max(np.sqrt(len(xs) / np.pi), 4.0)
    return float(xs.mean() / s), float(ys.mean() / s), float(r / s)


def crop_square(image: np.ndarray, cx: float, cy: float, side: float, out: int, angle: float = 0.0) -> np.ndarray:
    """A side×side square centred at (cx, cy), rotated by `angle` degrees, resampled to out×out (edges replicated)."""
    scale = out / max(side, 1.0)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale)
    m[:, 2] += out / 2 - np.array([cx, cy])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(np.ascontiguousarray(image), m, (out, out), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def share_in_view(shape: tuple[int, ...], cx: float, cy: float, r: float) -> float:
    """The share of the circle (cx, cy, r) that lies inside an image of this shape."""
    yy, xx = np.mgrid[-1:1:41j, -1:1:41j]
    disc = xx**2 + yy**2 <= 1
    x, y = cx + xx[disc] * r, cy + yy[disc] * r
    return float(((x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])).mean())


def best_circle(found: dict, conf: float = 0.0) -> tuple[float, float, float] | None:
    """(cx, cy, r) of embryo-dish's most confident box scoring ≥ conf, in the classical locator's radius scale."""
    if not len(found["scores"]) or found["scores"].max() < conf:
        return None
    x0, y0, x1, y1 = found["boxes"][int(np.argmax(found["scores"]))]
    return float(x0 + x1) / 2, float(y0 + y1) / 2, BOX_TO_RADIUS * float(max(x1 - x0, y1 - y0))


def best_score(found: dict) -> float:
    return float(found["scores"].max()) if len(found["scores"]) else 0.0


def detected_circle(image: np.ndarray) -> tuple[tuple[float, float, float] | None, float]:
    """embryo-dish's most confident circle on the image (at the detector's own threshold) and its score."""
    found = registry.load(DISH_ID).predict([image])[0]
    return best_circle(found), best_score(found)


def find_embryo(image: np.ndarray, detect=None) -> tuple[float, float, float]:
    """(cx, cy, r): the classical locator (2 ms), unless embryo-dish's detector (35 ms; `detect(image)` gives its
    best circle and score, default detected_circle) does better: where the classical circle runs off the photo
    (debris at an edge, a well rim's ripples), or where it is small for the photo, the detector is confident and the
    classical circle is under half the size of its embryo (it locked on a cell edge or a piece of debris inside the
    photo: 15 of 682 Hung Vuong photos, e.g. D3_698, a 2-cell embryo graded as a blastocyst from a patch at its
    edge)."""
    cx, cy, r = locate_embryo(image)
    off_photo = share_in_view(image.shape, cx, cy, r) < TRUSTED_IN_VIEW
    small = r < SUSPECT_RADIUS * min(image.shape[:2])
    if not (off_photo or small) or (detect is None and not dish_available()):
        return cx, cy, r
    circle, score = (detect or detected_circle)(image)
    confident = score >= float(registry.card(DISH_ID).get("conf", 0.5))
    if circle and (off_photo or (confident and r < MIN_LOCATED * circle[2])):
        return circle
    return cx, cy, r


def locate_with(found: dict):
    """find_embryo for an image embryo-dish has already run on (at LOW_CONF): it reuses those boxes."""
    seen = best_circle(found, float(registry.card(DISH_ID).get("conf", 0.5))), best_score(found)
    return lambda image: find_embryo(image, detect=lambda _: seen)


def looks_time_lapse(pixels: np.ndarray) -> bool:
    """Grey pixels, as time-lapse incubators (EmbryoScope) record them; the colour photos of the training set are
    not grey."""
    return pixels.ndim == 2 or bool(np.abs(pixels[..., :3].astype(np.int16) - pixels[..., :1]).max() <= 2)


def whole_embryo_doubts(extras: dict) -> list[str]:
    """Why a single-embryo prediction's photo may not show one whole embryo (empty when nothing is in doubt)."""
    doubts = []
    if (extras.get("embryos_detected") or 0) > 1:  # None: embryo-dish is not installed
        doubts.append(f"the dish detector sees {extras['embryos_detected']} embryos in it (choose Dish mode to grade "
                      "each one)")
    if extras["embryo_in_view"] < TRUSTED_IN_VIEW:
        doubts.append(f"only {extras['embryo_in_view']:.0%} of the located embryo lies inside the picture")
    score = extras.get("embryo_detector_score")
    if score is not None and score < NO_EMBRYO_SCORE:
        doubts.append(f"the embryo detector does not recognise an embryo in it (score {score:.2f}; "
                      f"{NO_EMBRYO_SCORE:.2f} or more counts as found)")
    share = extras.get("embryo_size_share")
    if extras.get("embryos_detected") == 0 and share is not None and share < SMALL_FOR_PHOTO:
        doubts.append(f"the located object is small for the photo (its radius is {share:.0%} of the shorter side; "
                      "every training photo checked had 16 % or more) and the dish detector sees no whole embryo")
    outline = extras.get("outline_score")
    if outline is not None and outline < NO_OUTLINE:
        doubts.append(f"no round outline like a zona stands out around the located object (outline score "
                      f"{outline:.2f}; 99 of 100 training embryos score {NO_OUTLINE:.2f} or more), as with noise or "
                      "an image of something else")
    return doubts


def dark_surround(crop: np.ndarray) -> float:
    """Share of the crop's surround (beyond 1.25 radii of its centre) darker than half the embryo's median grey
    level: a dark well or background, which no training photo has (0-1)."""
    g = crop if crop.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(crop[:, :, :3]), cv2.COLOR_RGB2GRAY)
    side = g.shape[0]
    yy, xx = np.mgrid[:side, :side]
    radii = np.hypot(xx - (side - 1) / 2, yy - (side - 1) / 2) / (side / CROP_SIDE)
    inside, around = g[radii < 0.9], g[radii > 1.25]
    return float(np.mean(around < 0.5 * np.median(inside))) if around.size and inside.size else 0.0


def outline_score(crop: np.ndarray) -> float:
    """How much of a circle about the crop's centre has a strong edge across it: the zona's outline, which every
    embryo photo shows and noise, ultrasound frames and most other images do not. The best share over radii of
    0.28–0.5 crop sides and centres up to 5 % off the middle (0–1)."""
    g = crop if crop.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(crop[:, :, :3]), cv2.COLOR_RGB2GRAY)
    g = cv2.GaussianBlur(cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32), (0, 0), 1.5)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    strong_level = 1.5 * float(np.sqrt(gx**2 + gy**2).mean()) + 1e-6
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32) - 63.5
    best = 0.0
    for dx in (-6, 0, 6):
        for dy in (-6, 0, 6):
            rx, ry = xx - dx, yy - dy
            rr = np.sqrt(rx**2 + ry**2) + 1e-6
            strong = np.abs(gx * rx + gy * ry) / rr > strong_level
            ring = np.rint(rr).astype(int).ravel()
            band = np.ones(3)  # rings 3 px wide
            on_ring = np.convolve(np.bincount(ring, minlength=70), band, "same")[36:65]  # radii 0.28–0.5 of 128 px
            hits = np.convolve(np.bincount(ring, weights=strong.ravel(), minlength=70), band, "same")[36:65]
            best = max(best, float((hits / np.maximum(on_ring, 1)).max()))
    return best


def embryo_crop(image: np.ndarray, out: int = 128, side: float = CROP_SIDE,
                locate=find_embryo) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The normalised square crop around the embryo (side = `side` radii), and the located (cx, cy, r)."""
    cx, cy, r = locate(image)
    return crop_square(image, cx, cy, side * r, out), (cx, cy, r)


# --- prediction ---------------------------------------------------------------------------------------------

def optics_stage_accuracy(card) -> dict[str, float] | None:
    """Stage balanced accuracy per OPTICS_TABLES key from the card, or None where the card lacks any of them."""
    values = {k: card.metrics.get(label, {}).get("stage_balanced_accuracy") for k, label in OPTICS_TABLES.items()}
    return values if all(v is not None for v in values.values()) else None


def _thresholds(card) -> dict[str, float]:
    return {o: float(t) for o, t in (card.get("thresholds") or {}).items()}


def predict_images(model_id: str, images: list[InputImage], device: str | None = None,
                   locate=None, day: int | None = None) -> list[Prediction]:
    """One Prediction per image: embryo-grade grades the single embryo; embryo-dish finds and grades each one.
    Without `locate`, as the page grades one embryo (grade_image: located with the dish detector's help, its photo
    doubts and caveats said, for the culture `day` given); with it (a function of the pixels giving (cx, cy, r)), the
    batch is located by it and graded at once, with no photo checks."""
    if model_id == DISH_ID:
        return [grade_dish(im, device=device, day=day) for im in images]
    if locate is None:
        return [grade_image(im, "single", device, day=day)[0] for im in images]
    model = registry.load(GRADE_ID, device)
    t0 = time.perf_counter()
    crops, where = zip(*(embryo_crop(im.pixels, locate=locate) for im in images)) if images else ((), ())
    t1 = time.perf_counter()
    probs = model.predict(list(crops)) if images else {}
    t2 = time.perf_counter()
    out = []
    for i, im in enumerate(images):
        cx, cy, r = where[i]
        p = Prediction(
            GRADE_ID, model.card.version, im.name, im.sha256,
            probabilities={o: dict(zip(model.classes[o], map(float, probs[o][i]))) for o in model.classes},
            thresholds=_thresholds(model.card),
            extras={"embryo_center": [round(cx, 1), round(cy, 1)], "embryo_radius": round(r, 1),
                    "embryo_in_view": round(share_in_view(im.pixels.shape, cx, cy, r), 2)},
            timings_ms={"locate": (t1 - t0) * 1000 / len(images), "grade": (t2 - t1) * 1000 / len(images)},
        )
        p.images["crop"] = crops[i]
        out.append(p)
    return out


def dish_available() -> bool:
    try:
        registry.card(DISH_ID)
        return True
    except (KeyError, registry.CardError):
        return False


MIN_SIDE = 32  # px; smaller than any embryo photo, and below what the locator can work with




def embryo_boxes(found: dict) -> np.ndarray:
    """Which detections are embryos: confident (the card's conf) and at least 40 % of the largest one's side. Embryos
    of one dish are alike in size; the smaller confident boxes on single-embryo photos are debris (9 of 682 Hung
    Vuong photos had two or more confident boxes, and Automatic ranked the debris first)."""
    boxes, scores = found["boxes"], found["scores"]
    confident = scores >= float(registry.card(DISH_ID).get("conf", 0.5))
    if not confident.any():
        return confident
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return confident & (side >= 0.4 * side[confident].max())


def whole_in_view(boxes: np.ndarray, shape, least: float = 0.7) -> np.ndarray:
    """Boxes with at least `least` of their area inside the image (not a neighbour cut by the photo's edge)."""
    h, w = shape[:2]
    inside = ((np.clip(boxes[:, 2], 0, w) - np.clip(boxes[:, 0], 0, w))
              * (np.clip(boxes[:, 3], 0, h) - np.clip(boxes[:, 1], 0, h)))
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    return inside / area >= least


def grade_image(image: InputImage, mode: str = "auto", device: str | None = None,
                day: int | None = None) -> list[Prediction]:
    """Every embryo in one image, graded. mode: "single" (the image holds one embryo), "dish" (find each embryo
    with embryo-dish) or "auto" (dish when the detector finds more than one embryo). Each Prediction's
    extras["mode"] says which was used; dish predictions carry box, number and rank. day: the culture day the user
    gave (3, or 5 for day 5 or later), which decides the quality caveat and questions a day-3 'blastocyst'."""
    if day not in (None, *CULTURE_DAYS):
        raise ValueError(f"unknown culture day {day!r}")
    grey = looks_time_lapse(image.pixels)
    if mode not in ("auto", "single", "dish"):
        raise ValueError(f"unknown mode {mode!r}")
    refuse_blank(image, MIN_SIDE, "an embryo")  # a black or one-colour image was "Blastocyst 99 %, Good 84 %"
    found = None
    if dish_available():
        from ..dish import detect, graded

        found = detect(image.pixels, device, conf=LOW_CONF)  # low, so that its best score also says "no embryo"
        keep = embryo_boxes(found)
        whole = int((keep & whole_in_view(found["boxes"], image.pixels.shape)).sum())
        if mode == "dish" or (mode == "auto" and whole > 1):
            return graded(image, found["boxes"][keep], found["scores"][keep], device, day)
    elif mode == "dish":
        raise ValueError("the dish detector (embryo-dish) is not installed: only single-embryo mode is available")
    pred = predict_images(GRADE_ID, [image], device, locate=locate_with(found) if found else find_embryo)[0]
    pred.extras["mode"] = "single"
    pred.extras["embryo_detector_score"] = None if found is None else round(best_score(found), 3)
    pred.extras["embryos_detected"] = None if found is None else whole
    pred.extras["outline_score"] = round(outline_score(pred.images["crop"]), 3)
    pred.extras["embryo_size_share"] = round(pred.extras["embryo_radius"] / min(image.pixels.shape[:2]), 3)
    doubts = whole_embryo_doubts(pred.extras)
    pred.extras["warnings"] = [f"This photo may not show one whole embryo: {'; '.join(doubts)}. Stage and quality "
                               "may be meaningless: the model grades whatever it is given (an empty field, a pipette, a "
                               "cut-off embryo or another kind of image alike)."] if doubts else []
    return [judged(pred, grey, day)]


GREY_FRAME = ("A grey image, as time-lapse incubators record: from one such frame the stage call is unreliable for "
              "some embryos (one EmbryoScope embryo of the training set is called blastocyst from zygote to 6 cells; "
              "see the model card). For a time-lapse sequence, the Time-lapse staging page reads every frame in order.")


def judged(pred: Prediction, grey: bool, day: int | None) -> Prediction:
    """The prediction with what the page must say beside its answers: caveats on single outputs (quality by culture
    day, a day-3 'blastocyst', a grey frame) and a warning when the embryo sits on a dark surround."""
    caveats = dict(pred.extras.get("caveats") or {})
    if quality := quality_caveat(pred, grey, day):
        caveats["quality"] = quality
    held = registry.card(GRADE_ID).metrics.get("hungvuong/heldout-groups", {})
    if day == 3 and pred.label("stage") == "blastocyst":
        caveats["stage"] = ("Called blastocyst on day 3: the model never learnt compacting embryos (morulae) as a "
                            "class and calls some of them blastocysts"
                            + (f" (on held-out photos it called {1 - held['stage_specificity']:.0%} of day-3 embryos "
                               "blastocysts)" if "stage_specificity" in held else "") + ". Check the embryo.")
    if grey:
        caveats["grey_frame"] = GREY_FRAME
    warnings = list(pred.extras.get("warnings") or [])
    surround = dark_surround(pred.images["crop"])
    if surround > DARK_SURROUND:
        warnings.append(f"The embryo sits on a dark surround ({surround:.0%} of the area around it is dark), unlike "
                        "any photo the model learnt from: stage and quality can flip on such images (a day-3 embryo "
                        "on a dark well read as a good blastocyst). Grade a photo with a light background.")
    pred.extras.update(culture_day=day, caveats=caveats, warnings=warnings)
    return pred


def quality_caveat(pred: Prediction, grey: bool, day: int | None = None) -> str | None:
    """Why the quality call is not to be read as an answer on this image (None where it was tested on such): by the
    culture day when given, else by the stage the model calls."""
    if grey:
        return ("Quality was learned from colour day-3/day-5 photos only and never tested on grey time-lapse frames: "
                "read it as untested.")
    held = registry.card(GRADE_ID).metrics.get("hungvuong/heldout-groups", {})
    if day == 5 and pred.label("stage") == "cleavage":
        return ("Called cleavage on day 5 or later: an embryo still cleaving then is slow or arrested, and the quality "
                "call was never tested on such embryos: read it as untested.")
    day3 = day == 3 or (day is None and pred.label("stage") == "cleavage")
    if day3 and "quality_D3_roc_auc" in held:
        n = held.get("quality_D3_n")
        return ("For day-3 (cleavage-stage) embryos the quality call is not reliable: on held-out day-3 photos"
                + (f" (n = {n})" if n else "") + f" its ROC-AUC was {held['quality_D3_roc_auc']:.2f} and balanced "
                f"accuracy {held.get('quality_D3_balanced_accuracy', float('nan')):.2f} (0.5 is chance); it was "
                "learned from 14 good day-3 photos of one clinic.")
    return None


def explain(image: np.ndarray, output: str, device: str | None = None, located=None) -> tuple[np.ndarray, np.ndarray]:
    """(crop, Grad-CAM map in [0, 1] at the crop's size) for the predicted label of `output`; `located`: the
    (crop, (cx, cy, r)) of embryo_crop(image) when the caller already has it."""
    model = registry.load(GRADE_ID, device)
    crop, _ = located or embryo_crop(image)
    heat = model.explain(crop, output)
    return crop, cv2.resize(heat, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)


def explain_on_image(image: np.ndarray, output: str, device: str | None = None) -> np.ndarray:
    """The Grad-CAM map of `explain` placed back on the whole image (zero outside the graded crop)."""
    located = embryo_crop(image)
    crop, heat = explain(image, output, device, located)
    cx, cy, r = located[1]
    side, out = CROP_SIDE * r, crop.shape[0]
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), 0.0, out / side)
    m[:, 2] += out / 2 - np.array([cx, cy])
    return cv2.warpAffine(heat, m, image.shape[1::-1], flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def predict_outputs(image: np.ndarray, device: str | None = None) -> dict[str, dict[str, float]]:
    """{output: {label: probability}} for one single-embryo image (the what-if panel's predictor)."""
    model = registry.load(GRADE_ID, device)
    probs = model.predict([embryo_crop(image)[0]])
    return {o: dict(zip(model.classes[o], map(float, probs[o][0]))) for o in model.classes}


def grade_dish(image: InputImage, device: str | None = None, conf: float | None = None,
               day: int | None = None) -> Prediction:
    from ..dish import grade_dish as _grade

    return _grade(image, device=device, conf=conf, day=day)


def example_images(model_id: str, n: int) -> list[np.ndarray]:
    from .. import synthetic

    if model_id == DISH_ID:
        return [synthetic.embryo_dish(n_embryos=16, seed=i)[0] for i in range(n)]
    return [synthetic.embryo("cleavage" if i % 2 else "blastocyst", seed=i)[0] for i in range(n)]


def bench_case(model_id: str, device: str) -> dict:
    """embryo-grade at batch 1 is the grader with its classical locator, as the issue's target counts it; the notes
    give the page's whole path, whose photo check by the dish detector (embryo-dish, another model) costs more than
    the grading itself."""
    from ..bench import default_case, time_calls
    from ..imageio import InputImage

    case = default_case(model_id, device, sys.modules[__name__])
    if model_id != GRADE_ID:
        return case
    images = [InputImage(im, f"generated-{i}.png", "", 0, "PNG", "RGB", 8)
              for i, im in enumerate(example_images(model_id, case["batch"]))]
    page_ms = time_calls(lambda: predict_images(model_id, images[:1], device), min_reps=5, budget_s=4.0)
    return {"run_one": lambda: predict_images(model_id, images[:1], device, locate=find_embryo),
            "run_batch": lambda: predict_images(model_id, images, device, locate=find_embryo),
            "batch": case["batch"], "notes": {"page_path_p50_ms": round(float(np.median(page_ms)), 2)}}


# --- train / evaluate -----------------------------------------------------------------------------------------

def train(model_id: str, data: Path, device: str, epochs: int | None, seed: int) -> Path:
    if model_id == GRADE_ID:
        from ..embryo_training import train_grade

        return train_grade(Path(data), device=device, epochs=epochs, seed=seed)
    from ..dish import train_dish

    return train_dish(Path(data), device=device, epochs=epochs, seed=seed)


def evaluate(model_id: str, path: Path, name: str, split: str | None, device: str) -> dict:
    if model_id == DISH_ID:
        from ..dish import evaluate_dish

        return evaluate_dish(path, name=name, device=device, split=split)
    return evaluate_grade(path, name=name, split=split, device=device)


def evaluate_grade(path: Path, name: str, split: str | None, device: str | None = None) -> dict:
    import pandas as pd

    from ..audit import phash
    from ..datasets import in_folder
    from ..datasets.embryo import load_rgb, read_any
    from ..evaluation import classification_metrics, documents_card, predictions_frame, readable, store

    missing: list[str] = []
    items, layouts = read_any(Path(path), missing=missing)
    excluded = 0
    own = [it for it in items if split and in_folder(it.path, path, split)]
    if own:  # one of the layout's own splits: its folder (a Hung Vuong test.csv + test/), before this project's
        items = own
    elif split in ("heldout", "train"):  # this project's split of the groups
        items = [it for it in items if it.split == split]
        excluded = sum(1 for it in items if it.conflicts)
    elif split:
        folders = {p.name for p in Path(path).iterdir() if p.is_dir()} if Path(path).is_dir() else set()
        raise ValueError(f"no split {split!r}: use 'heldout' or 'train' (this project's held-out groups) or a "
                         f"folder of the set ({', '.join(sorted(folders)) or 'none'})")
    if not items:
        raise ValueError(f"{path}: no labelled embryo images{f' in split {split!r}' if split else ''}")
    model = registry.load(GRADE_ID, device)
    probs = {o: [] for o in model.classes}
    skipped = [m for m in missing if split in (None, "heldout", "train") or m.startswith(f"{split}.csv")]
    hashes, in_view, detector, loaded = [], [], [], []
    for start in range(0, len(items), 32):
        chunk, batch, bad = readable(items[start:start + 32], lambda it: load_rgb(it.path))
        loaded += chunk
        skipped += bad
        if not batch:
            continue
        hashes += [f"{phash(im):016x}" for im in batch]
        found = (registry.load(DISH_ID, device).predict(batch, conf=LOW_CONF) if dish_available()
                 else [None] * len(batch))
        crops, circles = zip(*(embryo_crop(im, locate=locate_with(f) if f else find_embryo)
                               for im, f in zip(batch, found)))
        in_view += [share_in_view(im.shape, *c) for im, c in zip(batch, circles)]
        detector += [None if f is None else best_score(f) for f in found]
        for o, p in model.predict(list(crops)).items():
            probs[o].append(p)
    if not loaded:
        raise ValueError(f"{path}: none of the {len(items)} images could be read ({skipped[0]})")
    items = loaded
    probs = {o: np.concatenate(p) for o, p in probs.items()}
    # the images the page shows without a "no whole embryo" warning
    whole = np.array([not whole_embryo_doubts({"embryo_in_view": v, "embryo_detector_score": d})
                      for v, d in zip(in_view, detector)])
    frames, metrics = [], {}
    for output, attr in (("stage", "stage"), ("quality", "quality")):
        # duplicate groups with conflicting labels have no trustworthy truth: left out of held-out scoring
        idx = [i for i, it in enumerate(items) if getattr(it, attr) is not None
               and not (split and output in it.conflicts)]
        if not idx:
            continue
        labels = model.classes[output]
        sel = [items[i] for i in idx]
        frame = predictions_frame(
            [it.name for it in sel], output, labels, [getattr(it, attr) for it in sel], probs[output][idx],
            source=[it.source for it in sel], day=[it.day or "" for it in sel], group=[it.group for it in sel],
            phash=[hashes[i] for i in idx], embryo_in_view=[round(in_view[i], 2) for i in idx],
            embryo_detector_score=[None if detector[i] is None else round(detector[i], 3) for i in idx],
        )
        frames.append(frame)
        thr = _thresholds(model.card).get(output, 0.5)
        m = classification_metrics(frame["true"].tolist(), probs[output][idx], labels, threshold=thr)
        kept = [k for k, i in enumerate(idx) if whole[i]]
        if 0 < len(kept) < len(idx):  # the images the page does not warn about
            m["without_whole_embryo_warning"] = classification_metrics(
                frame["true"].iloc[kept].tolist(), probs[output][np.array(idx)[kept]], labels, threshold=thr)
        if output == "quality":  # per day: the day-3 and day-5 good/not-good balance differ a lot
            m["by_day"] = {
                day: classification_metrics(rows["true"].tolist(), probs[output][idx][rows.index.to_numpy()],
                                            labels, threshold=thr)
                for day, rows in frame.groupby("day") if day
            }
        metrics[output] = m
    predictions = pd.concat(frames, ignore_index=True)
    meta = {"data_path": str(Path(path).resolve()), "layouts": layouts, "split": split or "all (pooled)",
            "n": len(items), "skipped": skipped, "items_in_conflicting_duplicate_groups": excluded,
            "crop": f"embryo_crop (classical localisation, embryo-dish where its circle is under "
                    f"{TRUSTED_IN_VIEW:.0%} in view; side {CROP_SIDE} radii)",
            "without_whole_embryo_warning": f"images with the located embryo ≥ {TRUSTED_IN_VIEW:.0%} in view and "
                                            f"embryo-dish's best score ≥ {NO_EMBRYO_SCORE} (the page warns about "
                                            "the others)"}
    result = store(model.card, name, predictions, metrics, meta)
    from ..embryo_training import CARD_EVALUATIONS, update_card_metrics

    if split == "heldout" and name in CARD_EVALUATIONS and documents_card(path):
        update_card_metrics()
    return result

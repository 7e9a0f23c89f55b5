"""Sperm heads: field segmentation (`sperm-seg`), head classification (`sperm-head`), WHO morphometry per head.

sperm-seg is a small PyTorch U-Net (parts + rim per pixel at 640 px long side) whose heads are separated by
connected components of the head interiors; a from-scratch Ultralytics YOLO-seg could not be trained to use on
this project's CPU (measured: ≈1.2 s per 640 px training image, ≈8 min per epoch). sperm-head is a small CNN on
64 px grey, per-image standardised crops framed at CROP_FACTOR head lengths, trained on HuSHeM (stained) and MHSMA
(unstained) together.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import WEIGHTS_DIR, morphometry, registry
from ..datasets import sperm as ds
from ..preprocess import mean_over_views
from ..results import Prediction

SEG, HEAD = "sperm-seg", "sperm-head"
CV_EVALUATION = "hushem-5fold-cv"  # out-of-fold predictions of the shipped recipe on HuSHeM, written by train
HEAD_SIZE = 64
SEG_LONG_SIDE = 640
CROP_FACTOR = 1.75  # a head crop's side, in head lengths (the classifier's framing: the head fills ~57 % of it)
MIN_HEAD_PX = 150  # smallest head interior kept, in segmenter pixels (the smallest annotated head has ~430)
AUTO_CROP_MAX_SIDE = 300  # "auto" mode treats smaller uploads as single-head crops


def _threads():
    # one thread: on the shared 2-core machine two threads ran ~10x slower (measured: 6.1 s vs 0.42 s per step)
    torch.set_num_threads(1)


# --- networks -----------------------------------------------------------------------------------------------

def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class HeadNet(nn.Module):
    """64 px grey head crop -> (P(abnormal, normal), P(normal, tapered, pyriform, amorphous)); 4×4 final features
    (strided early: this project trains on two shared CPU cores)."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(OrderedDict(
            stem=conv_bn(1, w, 2),
            block1=nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w)),
            block2=nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w)),
            block3=nn.Sequential(conv_bn(4 * w, 8 * w, 2), conv_bn(8 * w, 8 * w)),
        ))
        self.drop = nn.Dropout(0.3)
        self.normal = nn.Linear(8 * w, len(ds.NORMAL_LABELS))
        self.shape = nn.Linear(8 * w, len(ds.SHAPES))

    def logits(self, x):
        g = self.drop(self.features(x).mean(dim=(2, 3)))
        return self.normal(g), self.shape(g)

    def forward(self, x):
        a, b = self.logits(x)
        return a.softmax(1), b.softmax(1)


# Each head is read in its 8 turns and mirror images (card: input.test_views; training rotates and flips every crop):
# 8 beat 1 on HuSHeM and MHSMA-train out-of-fold accuracy in two H100 reruns (README)
HEAD_TEST_VIEWS = 8


def build_head_net(width: int = 16) -> HeadNet:
    return HeadNet(width)


class SegNet(nn.Module):
    """Light U-Net: RGB field -> per-pixel probabilities of ds.SEG_CLASSES at the input resolution."""

    def __init__(self, width: int = 8):
        super().__init__()
        w = width
        self.e0 = conv_bn(3, w)
        self.e1 = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))
        self.e2 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))
        self.e3 = nn.Sequential(conv_bn(4 * w, 8 * w, 2), conv_bn(8 * w, 8 * w), conv_bn(8 * w, 8 * w, dilation=2))
        self.p2, self.d2 = nn.Conv2d(8 * w, 4 * w, 1), conv_bn(4 * w, 4 * w)
        self.p1, self.d1 = nn.Conv2d(4 * w, 2 * w, 1), conv_bn(2 * w, 2 * w)
        self.p0, self.d0 = nn.Conv2d(2 * w, w, 1), conv_bn(w, w)
        self.out = nn.Conv2d(w, len(ds.SEG_CLASSES), 1)

    def logits(self, x):
        x0 = self.e0(x)
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        y = self.d2(x2 + self.p2(F.interpolate(x3, size=x2.shape[2:], mode="bilinear", align_corners=False)))
        y = self.d1(x1 + self.p1(F.interpolate(y, size=x1.shape[2:], mode="bilinear", align_corners=False)))
        y = self.d0(x0 + self.p0(F.interpolate(y, size=x0.shape[2:], mode="bilinear", align_corners=False)))
        return self.out(y)

    def forward(self, x):
        return self.logits(x).softmax(1)


def build_seg_net(width: int = 8) -> SegNet:
    return SegNet(width)


# --- head classifier: data, augmentation, training -----------------------------------------------------------

def log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def grey64(image: np.ndarray) -> np.ndarray:
    """A head crop as the classifier sees it before standardisation (the same steps as core.preprocess.prepare)."""
    from ..preprocess import to_channels

    g = to_channels(image, 1)[:, :, 0]
    interp = cv2.INTER_AREA if g.shape[0] > HEAD_SIZE else cv2.INTER_LINEAR
    return cv2.resize(g, (HEAD_SIZE, HEAD_SIZE), interpolation=interp)


def _central_blob(mask: np.ndarray) -> np.ndarray | None:
    """The component of a binary mask that is large and near the centre (area weighted by closeness)."""
    h, w = mask.shape
    n, lab, stats, cent = cv2.connectedComponentsWithStats(mask)
    best, score = 0, 0.0
    for i in range(1, n):
        closeness = max(0.05, 1 - np.hypot(cent[i][0] - w / 2, cent[i][1] - h / 2) / (0.5 * min(h, w)))
        area = stats[i, cv2.CC_STAT_AREA]
        if area >= 0.005 * h * w and area * closeness > score:
            best, score = i, area * closeness
    return (lab == best).astype(np.uint8) if best else None


MIN_HEAD_CONTRAST = 4  # grey levels from the background at which a head stands out: every HuSHeM crop is at 33 or
# more, every MHSMA crop at 7 or more; blank noise is at 0-1 (and Otsu splits it all the same)
MIN_STAINED_HEAD_CONTRAST = 20  # a stained crop below it shows no head: debris cut from a Sperm Parsing field measured
# 7 (and read "abnormal 76.7 %, pyriform" without a word), a stained head there 85


def head_contrast(image: np.ndarray) -> tuple[float, np.ndarray]:
    """How far (grey levels) what stands out of a crop is from its background, and the mask of it (Otsu)."""
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    g = cv2.GaussianBlur(g, (0, 0), max(1.0, min(g.shape) / 90)).astype(np.float32)
    deviation = np.uint8(np.clip(np.abs(g - np.median(g)), 0, 255))
    return cv2.threshold(deviation, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)


def locate_head(image: np.ndarray) -> tuple[float, float, float] | None:
    """Centre (x, y) and length in pixels of the head in a single-head crop: the central blob that stands out from
    the background, with the midpiece and tail opened away. None where nothing stands out."""
    level, mask = head_contrast(image)
    if level < MIN_HEAD_CONTRAST:
        return None
    blob = _central_blob(mask)
    if blob is None:
        return None
    width = min(cv2.minAreaRect(np.argwhere(blob)[:, ::-1].astype(np.float32))[1])
    k = max(3, int(0.5 * width) | 1)  # the midpiece and tail are thinner than half the head's width
    head = _central_blob(cv2.morphologyEx(blob, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))))
    (cx, cy), (a, b), _ = cv2.minAreaRect(np.argwhere(head if head is not None else blob)[:, ::-1].astype(np.float32))
    return float(cx), float(cy), float(max(a, b))


def frame_head(image: np.ndarray, found=...) -> np.ndarray:
    """A single-head crop re-framed as the classifier was trained: centred on the head, CROP_FACTOR head lengths
    wide. Only ever zooms in (to at least half the crop); a crop where no head stands out is returned unchanged.
    `found`: locate_head(image) when already known."""
    found = locate_head(image) if found is ... else found
    if found is None:
        return image
    cx, cy, length = found
    h, w = image.shape[:2]
    side = int(round(np.clip(CROP_FACTOR * length, 0.5 * min(h, w), min(h, w))))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])


def is_unstained(image: np.ndarray) -> bool:
    """Grey, as MHSMA's unstained heads: under 1 % of the pixels coloured (channels over 20 levels apart); a stained
    head (HuSHeM) is coloured, however small it is in the crop."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    r, g, b = cv2.split(np.ascontiguousarray(image[:, :, :3]))
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))  # uint8, no copy to int16
    return cv2.countNonZero(cv2.compare(spread, 20, cv2.CMP_GT)) < 0.01 * spread.size


def should_frame(image: np.ndarray, found=..., unstained: bool | None = None) -> bool:
    """Whether a single-head crop is re-framed on its head before classifying. The classifier learnt unstained heads
    (MHSMA) as given and stained ones (HuSHeM) re-framed; re-framing MHSMA's valid heads took their accuracy from
    0.80 to 0.67 (on the few whose located head looked small for the crop: 5 of 5 wrong), so grey crops are read as
    given."""
    found = locate_head(image) if found is ... else found
    return found is not None and not (is_unstained(image) if unstained is None else unstained)


def read_rgb(path: Path) -> np.ndarray:
    from ..imageio import read_image

    return read_image(path).pixels


def _folds(items: list[ds.HeadItem], n_folds: int = 5) -> np.ndarray:
    import hashlib

    folds = np.zeros(len(items), int)
    by_class: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_class.setdefault(it.path.parent.name, []).append(i)
    for idx in by_class.values():
        idx = sorted(idx, key=lambda i: hashlib.sha1(items[i].path.name.encode()).hexdigest())
        for rank, i in enumerate(idx):
            folds[i] = rank % n_folds
    return folds


def _standardise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / std.clamp_min(1.0)


def _augment_heads(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x: (B, 1, 64, 64) on the 0–255 scale: any rotation, flips, zoom, shift, contrast, blur and noise."""
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    angle, zoom = u(0, 2 * np.pi), torch.exp(u(np.log(0.8), np.log(1.4)))
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-0.1, 0.1)], 1),
                         torch.stack([sin * flip, cos, u(-0.1, 0.1)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.6, 1.4).view(b, 1, 1, 1) + mean + u(-25, 25).view(b, 1, 1, 1)
    blur = torch.rand(b, generator=gen) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = (k[:, None] * k[None, :] / 256.0).view(1, 1, 5, 5)
        x[blur] = F.conv2d(F.pad(x[blur], (2, 2, 2, 2), mode="reflect"), k)
    return x + torch.randn(x.shape, generator=gen) * u(0, 8).view(b, 1, 1, 1)


def fit_head(x: np.ndarray, y_normal: np.ndarray, y_shape: np.ndarray, epochs: int, seed: int,
             log=log, device: str = "cpu", width: int = 16) -> HeadNet:
    """x: (N, 64, 64) uint8 grey; y_shape -1 where the shape is unknown (MHSMA). Augmented on the CPU."""
    if device == "cpu":
        _threads()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_head_net(width).to(device)
    xt = torch.from_numpy(x.astype(np.float32)[:, None])
    yn = torch.from_numpy(y_normal.astype(np.int64)).to(device)
    ys = torch.from_numpy(y_shape.astype(np.int64)).to(device)
    batch = 64
    steps = epochs * int(np.ceil(len(x) / batch))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total, t0 = 0.0, time.perf_counter()
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            xb = _standardise(_augment_heads(xt[idx], gen).to(device))
            idx = idx.to(device)
            ln, ls = net.logits(xb)
            loss = F.cross_entropy(ln, yn[idx], label_smoothing=0.05)
            if (ys[idx] >= 0).any():
                loss = loss + F.cross_entropy(ls, ys[idx], ignore_index=-1, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 5 == 0 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}/{epochs} loss {total / len(x):.3f} ({time.perf_counter() - t0:.1f}s)")
    return net.eval().cpu()


def head_probs(net: HeadNet, grey: np.ndarray, views: int = HEAD_TEST_VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64, 64) uint8 grey -> (P normal output, P shape output), averaged over `views` as the card's model reads."""
    def probs(x):  # (N, 64, 64, 1) -> both outputs
        with torch.inference_mode():
            a, b = net(_standardise(torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2).copy())))
        return {"normal": a.numpy(), "shape": b.numpy()}

    out = mean_over_views(probs, grey[..., None], views)
    return out["normal"], out["shape"]


def _head_training_sets(root: Path):
    hushem_dir, mhsma_dir = root / "hushem", root / "mhsma"
    if not ds.is_class_folders(hushem_dir) or not ds.is_mhsma(mhsma_dir):
        raise FileNotFoundError(f"{root}: expected hushem/ (class folders) and mhsma/ (x_64_train.npy …) inside")
    items = ds.read_class_folders(hushem_dir)
    rgb = [read_rgb(it.path) for it in items]
    hx = np.stack([grey64(frame_head(im)) for im in rgb])
    h_normal = np.array([ds.NORMAL_LABELS.index(it.normal) for it in items])
    h_shape = np.array([ds.SHAPES.index(it.shape) for it in items])
    mx, my = ds.read_mhsma(mhsma_dir, "train")
    m_normal = 1 - my  # y_head: 0 normal, 1 abnormal
    return items, rgb, hx, h_normal, h_shape, mx, m_normal, mhsma_dir


def _mix(hx, h_normal, h_shape, mx, m_normal, hushem_repeat: int = 2):
    """HuSHeM repeated so the small stained set weighs about as much as MHSMA in each epoch."""
    x = np.concatenate([np.repeat(hx, hushem_repeat, 0), mx])
    yn = np.concatenate([np.repeat(h_normal, hushem_repeat), m_normal])
    ys = np.concatenate([np.repeat(h_shape, hushem_repeat), -np.ones(len(mx), int)])
    return x, yn, ys


# Recipes per training device: the CUDA ones are what the shipped weights used; the CPU ones fit this project's
# 2-core machine (same code, fewer and smaller steps).
HEAD_RECIPES = {"cpu": {"epochs": 100, "width": 16}, "cuda": {"epochs": 300, "width": 16}}
N_FOLDS = 5
PREDICTED_BY_CV = f"the {N_FOLDS} cross-validation models, not the shipped file"  # meta.json: whose predictions


def _metrics_row(m: dict) -> dict:
    keys = ("n", "accuracy", "balanced_accuracy", "f1", "roc_auc", "sensitivity", "specificity")
    return {k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys if m.get(k) is not None}


def mhsma_folds(n: int, n_folds: int = N_FOLDS) -> np.ndarray:
    """A fixed fold for each MHSMA training head (hash of its index: the file has no patient ids)."""
    import zlib

    return np.array([zlib.crc32(f"mhsma:{i}".encode()) % n_folds for i in range(n)])


def fit_head_fold(hx, hn, hs, mx, mn, folds, fold: int | None, recipe: dict, seed: int, device: str,
                  m_folds: np.ndarray | None = None) -> HeadNet:
    """One model of the cross-validation (trained without HuSHeM fold `fold`, and without MHSMA fold `fold` when
    `m_folds` is given), or the final one (fold None)."""
    train = folds != fold if fold is not None else np.ones(len(hx), bool)
    m_train = m_folds != fold if fold is not None and m_folds is not None else np.ones(len(mx), bool)
    return fit_head(*_mix(hx[train], hn[train], hs[train], mx[m_train], mn[m_train]), recipe["epochs"],
                    seed if fold is None else seed + 1 + fold, device=device, width=recipe["width"])


def _train_head(root: Path, recipe: dict, seed: int, out: Path, device: str, trained=None) -> Path:
    """`trained`: (out-of-fold P(normal), out-of-fold P(shape), final net) already fitted with this recipe
    elsewhere (scripts/gpu_train.py), to write the card and evaluations here."""
    from .. import audit
    from ..evaluation import classification_metrics, evaluate_classifier_outputs, predictions_frame

    items, rgb, hx, hn, hs, mx, mn, mhsma_dir = _head_training_sets(root)
    folds = _folds(items, N_FOLDS)
    epochs = recipe["epochs"]
    if trained is None:
        oof_n, oof_s = np.zeros((len(items), 2)), np.zeros((len(items), len(ds.SHAPES)))
        for k in range(N_FOLDS):
            log(f"sperm-head: HuSHeM fold {k + 1}/{N_FOLDS} ({int((folds == k).sum())} test heads; all MHSMA train)")
            net = fit_head_fold(hx, hn, hs, mx, mn, folds, k, recipe, seed, device)
            oof_n[folds == k], oof_s[folds == k] = head_probs(net, hx[folds == k])
            log(f"  fold {k + 1}: shape accuracy {(oof_s[folds == k].argmax(1) == hs[folds == k]).mean():.3f}")
        log("sperm-head: final model on all HuSHeM + MHSMA train")
        net = fit_head_fold(hx, hn, hs, mx, mn, folds, None, recipe, seed, device)
    else:
        oof_n, oof_s, net = trained
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "model.pt")
    names = [f"hushem/{it.path.parent.name}/{it.path.name}" for it in items]
    audit.write_train_hashes(out, names + [f"mhsma/train/{i}" for i in range(len(mx))], rgb + list(mx))

    vx, vy = ds.read_mhsma(mhsma_dir, "valid")
    unseen, _ = _unseen(out, list(vx))  # a few valid heads are copies of train heads: left out, as `evaluate` does
    vx, vy = vx[unseen], vy[unseen]
    v_n, _ = head_probs(net, np.stack([grey64(im) for im in vx]))
    m_valid = classification_metrics([ds.NORMAL_LABELS[1 - y] for y in vy], v_n, ds.NORMAL_LABELS)
    shape_true, normal_true = [ds.SHAPES[i] for i in hs], [ds.NORMAL_LABELS[i] for i in hn]
    m_cv_shape = classification_metrics(shape_true, oof_s, ds.SHAPES)
    m_cv_normal = classification_metrics(normal_true, oof_n, ds.NORMAL_LABELS)
    card = {
        "id": HEAD, "title": "Sperm head classifier (normal / abnormal, head shape)", "task": "sperm",
        "framework": "torch", "architecture": "core.tasks.sperm:build_head_net",
        "arch_kwargs": {"width": recipe["width"]},
        "file": "model.pt", "version": "3.1",
        "classes": {"normal": ds.NORMAL_LABELS, "shape": ds.SHAPES},
        "display": {"titles": {"normal": "Normal vs abnormal", "shape": "Head shape (HuSHeM classes)"}},
        "input": {"size": [HEAD_SIZE, HEAD_SIZE], "channels": 1, "normalise": "per_image",
                  "test_views": HEAD_TEST_VIEWS},
        "explain": {"layer": "features.block3"},
        "train_command": _train_command(HEAD, root, seed, device, epochs, HEAD_RECIPES),
        "recipe": {"epochs": epochs, "device": _kind(device), "batch": 64, "optimiser": "AdamW 3e-3 one-cycle",
                   "hushem_repeat": 2,
                   "augmentation": "any rotation, flips, zoom 0.8-1.4, shift, contrast, blur, noise",
                   "framing": f"HuSHeM crops re-framed on the head (frame_head: {CROP_FACTOR} head lengths wide); "
                              "MHSMA crops as given (already tight)",
                   "cv": f"{N_FOLDS} folds of HuSHeM by image, stratified by class (hash of the file name); "
                         "each fold model also trains on all MHSMA train"},
        "data": [
            {"name": "HuSHeM (Shaker et al. 2017)", "licence": "CC BY 4.0", "images": len(items),
             "split": f"all {len(items)} images train the shipped model; {N_FOLDS}-fold CV by image (one head "
                      "per image, no duplicates) for its figures"},
            {"name": "MHSMA (Javadi & Mirroshandel 2019)", "licence": "CC BY-NC-SA 4.0", "images": len(mx),
             "split": "x_64_train trains; the official x_64_valid (240) is never trained on and is scored as the test split (the published x_64_test is not in the shared copy)"},
        ],
        "intended_use": "Research demonstration: classify one sperm head crop (stained or unstained) as normal "
                        "or abnormal, and its head shape (normal, tapered, pyriform, amorphous), as an aid to "
                        "reviewing WHO morphology; not for diagnosis.",
        "limitations": "Trained from scratch (no pretraining) on 216 stained HuSHeM heads and 1000 unstained "
                       "MHSMA heads; shape is learnt from HuSHeM only (4 classes; no other WHO defect classes "
                       "such as neck, midpiece or tail defects). Inputs are reduced to 64 px grey, so stain "
                       f"colour is ignored. Expects a crop about {CROP_FACTOR} head lengths wide: single crops "
                       "are re-framed on the head first, which can miss on unstained, low-contrast crops. MHSMA "
                       "labels come from one lab; performance on other stains, magnifications and crop margins is "
                       "unknown.",
        "metrics": {
            "hushem/5fold-cv": {"shape_" + k: v for k, v in _metrics_row(m_cv_shape).items()}
            | {"normal_" + k: v for k, v in _metrics_row(m_cv_normal).items() if k != "n"}
            | {"evaluation": CV_EVALUATION},
            "mhsma/valid": _metrics_row(m_valid) | {"excluded_seen_in_training": int((~unseen).sum()),
                                                    "evaluation": "mhsma-valid"},
        },
    }
    written = registry.write_card(out, card)
    frames = [
        predictions_frame(names, "shape", ds.SHAPES, shape_true, oof_s, fold=folds + 1,
                          phash=[f"{audit.phash(im):016x}" for im in rgb]),
        predictions_frame(names, "normal", ds.NORMAL_LABELS, normal_true, oof_n, fold=folds + 1,
                          phash=[f"{audit.phash(im):016x}" for im in rgb]),
    ]
    evaluate_classifier_outputs(written, CV_EVALUATION, frames, {
        "data": str(root / "hushem"), "layout": "class-per-folder", "split": f"{N_FOLDS}-fold cross-validation",
        "predicted_by": PREDICTED_BY_CV,
        "note": f"out-of-fold predictions of {N_FOLDS} models trained with the shipped recipe, each without its "
                "test fold; not predictions of the shipped file (which trained on every HuSHeM image)",
    })
    log(f"sperm-head: HuSHeM CV shape accuracy {m_cv_shape['accuracy']:.3f}, normal accuracy "
        f"{m_cv_normal['accuracy']:.3f}; MHSMA valid normal accuracy {m_valid['accuracy']:.3f}")
    return out / "model.pt"


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _train_command(model_id: str, root: Path, seed: int, device: str, epochs: int, recipes: dict) -> str:
    kind = _kind(device)
    return (f"python -m core train {model_id} --data {root} --seed {seed}"
            + (" --device cuda" if kind == "cuda" else "")
            + (f" --epochs {epochs}" if epochs != recipes[kind]["epochs"] else ""))


def recipe_for(model_id: str, device: str, epochs: int | None = None) -> dict:
    recipe = dict((HEAD_RECIPES if model_id == HEAD else SEG_RECIPES)[_kind(device)])
    return recipe | ({"epochs": epochs} if epochs else {})


def train(model_id: str, data: Path, device: str = "cpu", epochs: int | None = None, seed: int = 0) -> Path:
    data = Path(data)
    if model_id == HEAD:
        return _train_head(data, recipe_for(HEAD, device, epochs), seed, WEIGHTS_DIR / HEAD, device)
    if model_id == SEG:
        return _train_seg(data, recipe_for(SEG, device, epochs), seed, WEIGHTS_DIR / SEG, device)
    raise KeyError(model_id)


# --- field segmenter: training ------------------------------------------------------------------------------

SEG_RECIPES = {"cpu": {"epochs": 8, "crop": 128, "batch": 8}, "cuda": {"epochs": 300, "crop": 256, "batch": 16}}
SEG_SCALE = 0.5  # Sperm Parsing fields (1280 px wide) are trained at 640 px, the segmenter's long side
SEG_CLASS_WEIGHTS = [1.0, 3.0, 2.0, 2.0, 3.0]


def _seg_training_set(root: Path, log=log):
    from .. import PROJECT_ROOT

    splits = ds.parsing_splits(root)
    if not splits:
        raise FileNotFoundError(f"{root}: expected annotations/<split>.json and <split>_img/ (Sperm Parsing layout)")
    images, labels, keys = [], [], []
    for split in splits:
        dest = ds.prepare_segmentation(root, PROJECT_ROOT / "data_prepared" / "sperm" / "seg_s50", split,
                                       SEG_SCALE, log=log)
        for rec in ds.read_parsing(root, split):
            if ds.heldout(rec.key):
                continue
            images.append(cv2.imread(str(dest / "images" / f"{rec.key}.png"))[:, :, ::-1].copy())
            labels.append(cv2.imread(str(dest / "labels" / f"{rec.key}.png"), cv2.IMREAD_GRAYSCALE))
            keys.append((split, rec))
    return images, labels, keys


def _seg_batch(images, labels, foregrounds, rng: np.random.Generator, crop: int, batch: int):
    """Random crops (mostly around a head: `foregrounds` holds each label map's flat foreground indices), rotated
    by 90° steps and mirrored: uint8 (B, 3, c, c) and labels."""
    xs, ys = [], []
    c = crop
    for _ in range(batch):
        i = int(rng.integers(len(images)))
        img, lab, fg = images[i], labels[i], foregrounds[i]
        h, w = lab.shape
        if fg.size and rng.random() < 0.7:
            cy, cx = divmod(int(fg[rng.integers(fg.size)]), w)
            y0 = int(np.clip(cy - rng.integers(c // 4, 3 * c // 4), 0, h - c))
            x0 = int(np.clip(cx - rng.integers(c // 4, 3 * c // 4), 0, w - c))
        else:
            y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        x, y = img[y0:y0 + c, x0:x0 + c], lab[y0:y0 + c, x0:x0 + c]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x)
        ys.append(y)
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(np.ascontiguousarray(np.stack(ys)).astype(np.int64))


def _seg_photometric(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float 0–1 with other stains (channel swaps, grey), contrast, brightness, colour gain
    and noise; runs on the training device."""
    b = x.shape[0]
    u = lambda lo, hi, *shape: lo + (hi - lo) * torch.rand(b, *shape, 1, 1, device=x.device)  # noqa: E731
    x = x.float()
    swap = torch.rand(b, device=x.device) < 0.3
    if swap.any():
        x[swap] = x[swap][:, torch.randperm(3, device=x.device)]
    grey = torch.rand(b, device=x.device) < 0.2
    if grey.any():
        x[grey] = x[grey].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.7, 1.3, 1) + mean * u(0.8, 1.2, 1) + torch.randn_like(x) * 4
    x = x * u(0.9, 1.1, 3)
    return x.clamp(0, 255) / 255.0


def fit_seg(images, labels, epochs: int, seed: int, log=log, device: str = "cpu", crop: int = 128,
            batch: int = 8) -> SegNet:
    if device == "cpu":
        _threads()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_seg_net().to(device)
    steps_per_epoch = max(1, len(images) // batch)
    steps = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.1)
    weights = torch.tensor(SEG_CLASS_WEIGHTS, device=device)
    foregrounds = [np.flatnonzero(lab) for lab in labels]
    net.train()
    t0, total = time.perf_counter(), 0.0
    for step in range(steps):
        x, y = _seg_batch(images, labels, foregrounds, rng, crop, batch)
        x, y = _seg_photometric(x.to(device)), y.to(device)
        logits = net.logits(x)
        fg = 1 - logits.softmax(1)[:, 0]
        truth = (y > 0).float()
        dice = 1 - (2 * (fg * truth).sum() + 1) / (fg.sum() + truth.sum() + 1)
        loss = F.cross_entropy(logits, y, weight=weights) + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach())
        if (step + 1) % steps_per_epoch == 0:
            epoch = (step + 1) // steps_per_epoch
            if epoch % 10 == 0 or epoch == epochs:
                log(f"  epoch {epoch}/{epochs} loss {total / steps_per_epoch:.3f} ({time.perf_counter() - t0:.0f}s)")
            total = 0.0
    return net.eval().cpu()


def _train_seg(root: Path, recipe: dict, seed: int, out: Path, device: str, trained: SegNet | None = None) -> Path:
    """`trained`: a net already fitted with this recipe elsewhere (scripts/gpu_train.py), to write the card here."""
    from .. import audit

    images, labels, keys = _seg_training_set(root)
    log(f"sperm-seg: {len(images)} training fields (held-out fields by image hash are left out)")
    epochs, batch = recipe["epochs"], recipe["batch"]
    net = trained or fit_seg(images, labels, epochs, seed, device=device, crop=recipe["crop"], batch=batch)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "model.pt")
    audit.write_train_hashes(out, [f"{split}/{rec.path.name}" for split, rec in keys],
                             (read_rgb(rec.path) for _, rec in keys))
    card = {
        "id": SEG, "title": "Sperm head segmenter (heads, acrosome, nucleus, vacuoles)", "task": "sperm",
        "framework": "torch", "architecture": "core.tasks.sperm:build_seg_net", "arch_kwargs": {"width": 8},
        "file": "model.pt", "version": "2.0",
        "classes": {"heads": ["head"]},
        "parts": ds.SEG_CLASSES,
        "input": {"size": [512, 640], "long_side": SEG_LONG_SIDE, "channels": 3, "normalise": "unit",
                  "note": "the field is resized to 640 px on its long side (aspect kept) and padded to 16 px"},
        "train_command": _train_command(SEG, root, seed, device, epochs, SEG_RECIPES),
        "recipe": {"epochs": epochs, "device": _kind(device), "steps_per_epoch": len(images) // batch,
                   "batch": batch, "crop": recipe["crop"],
                   "loss": "weighted cross-entropy over parts and rim + Dice on the head mask",
                   "why_not_yolo": "the page needs acrosome, nucleus and vacuole pixels inside each head, which a "
                                   "YOLO instance mask does not give; and yolo11n-seg, measured here, takes ≈1.2 s "
                                   "per 640 px training image on 2 CPU cores (≈8 min per epoch) and 218 ms per "
                                   "field at inference"},
        "data": [{"name": "Sperm Parsing v2 (Chen et al., CLPMnet)", "licence": "research use; cite the paper",
                  "images": len(images),
                  "split": "fields split by a stable hash of the image name: 20 % held out "
                           "(core.datasets.sperm.heldout), never trained on; evaluate with --split heldout"}],
        "intended_use": "Research demonstration: find every sperm head in a stained bright-field micrograph and "
                        "outline its acrosome, nucleus and vacuoles for morphometry; not for diagnosis.",
        "limitations": "Trained from scratch on 392 fields of one lab, stain and microscope (Sperm Parsing v2, "
                       "1280×1024). Other stains, magnifications and unstained fields are untested; heads "
                       "that overlap heavily may merge; parts (vacuoles especially) are small at 640 px.",
    }
    registry.write_card(out, card)
    return out / "model.pt"


# --- field analysis: segment, measure, classify ---------------------------------------------------------------

CLASS_COLOURS = {"normal": (40, 170, 60), "abnormal": (220, 60, 40), None: (40, 110, 230)}  # RGB
BORDER_COLOUR = (150, 150, 150)  # heads cut by the image border: measured, never scored


def seg_input(image: np.ndarray, long_side: int = SEG_LONG_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 field -> (1, 3, H16, W16) float32 at `long_side` px (aspect kept, padded to 16), unpadded size."""
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    nh, nw = max(16, round(h * s)), max(16, round(w * s))
    small = cv2.resize(image[:, :, :3], (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    small = cv2.copyMakeBorder(small, 0, (-nh) % 16, 0, (-nw) % 16, cv2.BORDER_REFLECT)
    return np.ascontiguousarray(small.transpose(2, 0, 1)[None], np.float32) / 255.0, (nh, nw)


def heads_from_probs(probs: np.ndarray, full_shape: tuple[int, int], min_px: int = MIN_HEAD_PX) -> list[dict]:
    """Per-pixel class probabilities (C, h, w) -> heads at full size: {box (x0, y0, x1, y1), mask, parts, score}.

    Head interiors (argmax a head part) are split into connected components, grown back over the rim, and each
    is cut out of the smooth full-size foreground (probability of not background ≥ 0.5).
    """
    cls = probs.argmax(0)
    fg = 1.0 - probs[0]
    n, lab, stats, _ = cv2.connectedComponentsWithStats(np.isin(cls, ds.HEAD_PARTS).astype(np.uint8), connectivity=4)
    keep = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_px]
    lut = np.zeros(n, np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1)
    lab = lut[lab]
    region = fg >= 0.5
    for _ in range(3):  # grow interiors over their rims
        grown = cv2.dilate(lab, np.ones((3, 3), np.uint8))
        lab = np.where((lab == 0) & region, grown, lab)
    h, w = fg.shape
    H, W = full_shape
    fy, fx = H / h, W / w
    fg_full = cv2.resize(fg, (W, H), interpolation=cv2.INTER_LINEAR)
    part_small = (probs[1:4].argmax(0) + 1).astype(np.uint8)
    heads = []
    for k in range(1, len(keep) + 1):
        ys, xs = np.nonzero(lab == k)
        y0, y1 = max(ys.min() - 2, 0), min(ys.max() + 3, h)
        x0, x1 = max(xs.min() - 2, 0), min(xs.max() + 3, w)
        own = lab[y0:y1, x0:x1]
        small = cv2.dilate((own == k).astype(np.uint8), np.ones((3, 3), np.uint8)) & ((own == 0) | (own == k))
        X0, Y0, X1, Y1 = int(x0 * fx), int(y0 * fy), min(int(np.ceil(x1 * fx)), W), min(int(np.ceil(y1 * fy)), H)
        size = (X1 - X0, Y1 - Y0)
        mask = cv2.resize(small, size, interpolation=cv2.INTER_NEAREST).astype(bool) & (fg_full[Y0:Y1, X0:X1] >= 0.5)
        if mask.sum() < min_px * fx * fy:
            continue
        parts = cv2.resize(part_small[y0:y1, x0:x1], size, interpolation=cv2.INTER_NEAREST)
        my, mx = np.nonzero(mask)
        box = (X0 + int(mx.min()), Y0 + int(my.min()), X0 + int(mx.max()) + 1, Y0 + int(my.max()) + 1)
        crop = (slice(box[1] - Y0, box[3] - Y0), slice(box[0] - X0, box[2] - X0))
        heads.append({"box": box, "mask": mask[crop], "parts": np.where(mask, parts, 0)[crop],
                      "score": float(fg[y0:y1, x0:x1][own == k].mean())})
    return heads


def segment(model, image: np.ndarray) -> list[dict]:
    x, (nh, nw) = seg_input(image, int(model.card.input.get("long_side", SEG_LONG_SIDE)))
    with torch.inference_mode():
        probs = model.net(torch.from_numpy(x).to(model.device))[0, :, :nh, :nw].cpu().numpy()
    return heads_from_probs(probs, image.shape[:2])


def head_crop(image: np.ndarray, head: dict, length_px: float) -> np.ndarray:
    """A square crop centred on the head, CROP_FACTOR head lengths wide (edges replicated beyond the field)."""
    x0, y0 = head["box"][:2]
    my, mx = np.nonzero(head["mask"])
    cx, cy = x0 + mx.mean(), y0 + my.mean()
    half = max(int(round(CROP_FACTOR * length_px / 2)), 16)
    pad = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REPLICATE)
    cx, cy = int(round(cx)) + half, int(round(cy)) + half
    return np.ascontiguousarray(pad[cy - half:cy + half, cx - half:cx + half])


REVIEW_CALLS = ("normal", "abnormal", "not a head")  # what an andrologist can say of a head instead of the classifier


def is_scored(row: dict) -> bool:
    return not row["at_border"] and row.get("reviewer") != "not a head"


def head_call(row: dict) -> str | None:
    """normal or abnormal: the reviewer's call where they made one, else the classifier's (None: not classified)."""
    return row["reviewer"] if row.get("reviewer") in ("normal", "abnormal") else row.get("class")


def head_colour(row: dict) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(head_call(row), CLASS_COLOURS[None]) if is_scored(row) else BORDER_COLOUR


def draw_field(image: np.ndarray, heads: list[dict], rows: list[dict]) -> np.ndarray:
    """Masks over the field, filled and outlined in their class colour (grey when cut by the border, so not
    scored), each numbered."""
    out = image[:, :, :3].copy()
    tint = out.copy()
    thick = max(1, round(max(image.shape[:2]) / 600))
    for head, row in zip(heads, rows):
        x0, y0, x1, y1 = head["box"]
        colour = head_colour(row)
        region = tint[y0:y1, x0:x1]
        region[head["mask"]] = colour
        contours, _ = cv2.findContours(head["mask"].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for c in contours:
            cv2.drawContours(out, [c + np.array([x0, y0])], -1, colour, thick)
    out = cv2.addWeighted(tint, 0.35, out, 0.65, 0)
    scale = max(0.5, max(image.shape[:2]) / 1400)
    for head, row in zip(heads, rows):
        x0, y0, x1, y1 = head["box"]
        org = (x1 + 3, max(y0 + 12, 12))
        cv2.putText(out, str(row["head"]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick + 2, cv2.LINE_AA)
        cv2.putText(out, str(row["head"]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def mark_heads(image: np.ndarray, rows: list[dict]) -> np.ndarray:
    """The field with each head's number in a ring of its class colour at its stored centre: the overlay of a record,
    whose masks are not kept."""
    out = np.ascontiguousarray(image[:, :, :3]).copy()
    thick = max(1, round(max(image.shape[:2]) / 600))
    radius, scale = max(12, round(max(image.shape[:2]) / 40)), max(0.5, max(image.shape[:2]) / 1400)
    for row in rows:
        colour = head_colour(row)
        centre = (int(row["x"]), int(row["y"]))
        cv2.circle(out, centre, radius, colour, thick + 1, cv2.LINE_AA)
        org = (centre[0] + radius + 2, centre[1])
        cv2.putText(out, str(row["head"]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick + 2, cv2.LINE_AA)
        cv2.putText(out, str(row["head"]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def _head_model(device):
    try:
        return registry.load(HEAD, device)
    except (KeyError, registry.CardError):
        return None


def analyse_field(image, um_per_px: float = morphometry.DEFAULT_UM_PER_PX, device: str | None = None,
                  acrosome_criterion: bool = False, heads: list[dict] | None = None) -> Prediction:
    """Segment every head of a field, measure it in µm, classify its crop; per-image % normal forms. `heads`:
    segment()'s result for this image when already known (it does not depend on the calibration)."""
    from ..imageio import InputImage

    name, sha = (image.name, image.sha256) if isinstance(image, InputImage) else ("image", "")
    pixels = image.pixels if isinstance(image, InputImage) else image
    seg = registry.load(SEG, device)
    head_model = _head_model(device)
    t0 = time.perf_counter()
    heads = segment(seg, pixels) if heads is None else heads
    t1 = time.perf_counter()
    H, W = pixels.shape[:2]
    rows, crops = [], []
    for i, head in enumerate(heads, start=1):
        m = morphometry.measure(head["mask"], um_per_px, head["parts"])
        flags = morphometry.who_flags(m)
        x0, y0, x1, y1 = head["box"]
        rows.append({
            "head": i, "x": (x0 + x1) // 2, "y": (y0 + y1) // 2,
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in m.as_dict().items()},
            "who_normal": morphometry.who_normal(m, acrosome_criterion),
            "who_outside": ", ".join(k[:-3] for k, ok in flags.items()
                                     if not ok and (acrosome_criterion or k != "acrosome_ok")) or "—",
            "at_border": x0 <= 1 or y0 <= 1 or x1 >= W - 1 or y1 >= H - 1,
            "seg_score": round(head["score"], 3),
        })
        crops.append(head_crop(pixels, head, m.length_um / um_per_px))
    t2 = time.perf_counter()
    if head_model is not None and crops:
        probs = head_model.predict(crops)
        for row, pn, ps in zip(rows, probs["normal"], probs["shape"]):
            row["class"] = ds.NORMAL_LABELS[int(pn.argmax())]
            row["p_normal"] = round(float(pn[1]), 4)
            row["shape"] = ds.SHAPES[int(ps.argmax())]
            row.update({f"p_shape_{s}": round(float(p), 4) for s, p in zip(ds.SHAPES, ps)})
            row["outputs_disagree"] = (row["class"] == "normal") != (row["shape"] == "normal")  # read it yourself
    t3 = time.perf_counter()
    summary = {"n_heads": len(rows), **normal_forms(rows), "um_per_px": um_per_px}
    summary |= {
        "who_reference": morphometry.WHO_EDITION, "acrosome_criterion": acrosome_criterion,
        "head_model": f"{HEAD} v{head_model.card.version}" if head_model else None,
        "head_model_sha256": head_model.card.sha256 if head_model else None,
        "warnings": [f"Sizes use the default calibration, {um_per_px} µm per pixel, an estimate for Sperm Parsing v2 "
                     "fields: set the microscope's value before reading sizes or the WHO figure."]
        if um_per_px == morphometry.DEFAULT_UM_PER_PX else [],
        "caveats": {"normal_forms": "The shares of normal forms judge the head only (not the neck, midpiece or "
                                    "tail); WHO asks for at least 200 assessed spermatozoa, more than one field "
                                    f"holds. {morphometry.reference_line()}"},
    }
    pred = Prediction(SEG, seg.card.version, name, sha, extras={**summary, "heads": rows},
                      timings_ms={"segment": (t1 - t0) * 1000, "measure": (t2 - t1) * 1000,
                                  "classify": (t3 - t2) * 1000})
    pred.images["overlay"] = draw_field(pixels, heads, rows)
    for row, crop in zip(rows, crops):
        pred.images[f"head_{row['head']}"] = crop
    return pred


def normal_forms(rows: list[dict]) -> dict:
    """The share of normal forms among heads (rows of analyse_field; those at the border or called "not a head" are not
    scored) by the classifier (or the reviewer's call where made), within the WHO head ranges and by both (strict:
    normal only when both say so), each with its 95 % interval (in %) and its reading against the lower reference
    limit."""
    scored = [r for r in rows if is_scored(r)]
    normal = {"who": [r["who_normal"] for r in scored]}
    if scored and all("class" in r for r in scored):
        normal["classifier"] = [head_call(r) == "normal" for r in scored]
        normal["both"] = [c and w for c, w in zip(normal["classifier"], normal["who"])]
    out = {"n_scored": len(scored)}
    for key in ("both", "who", "classifier"):  # the strict share first, as the page, reports and History give it
        pct = morphometry.percent_normal(normal[key]) if key in normal else None
        interval = morphometry.wilson_interval(sum(normal[key]), len(scored)) if key in normal else None
        out |= {f"pct_normal_{key}": None if pct is None else round(pct, 1), f"ci95_normal_{key}": interval,
                f"vs_lower_limit_{key}": morphometry.limit_reading(interval, len(scored))}
    return out


def defect_counts(rows: list[dict], acrosome: bool = False) -> list[dict]:
    """How many scored heads show each defect: the classifier's abnormal head shapes (where the reviewer did not
    call the head), the reviewer's abnormal calls, and the departures from the WHO head ranges (a head can show
    several), each with its share of the scored heads."""
    scored = [r for r in rows if is_scored(r)]
    counts: dict[tuple[str, str], int] = {}
    for r in scored:
        keys = [("WHO head ranges", d) for d in morphometry.size_defects(r, acrosome)]
        if r.get("reviewer") == "abnormal":
            keys.append(("your call", "abnormal"))
        elif not r.get("reviewer") and r.get("class") == "abnormal":
            keys.append(("classifier, abnormal head",
                         r["shape"] if r.get("shape") != "normal" else "abnormal, shape normal"))
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
    order = {"classifier, abnormal head": 0, "your call": 1, "WHO head ranges": 2}
    return [{"by": by, "defect": defect, "heads": n, "share (%)": round(100 * n / len(scored), 1)}
            for (by, defect), n in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], -kv[1]))]


def reviewed(pred: Prediction, calls: dict[int, str], pixels: np.ndarray | None = None,
             heads: list[dict] | None = None) -> Prediction:
    """The field as the andrologist left it: their call on a head (normal, abnormal, not a head) replaces the
    classifier's in every figure ("not a head" leaves it unscored); the classifier's own call stays in each row.
    `pixels` and `heads` (segment()'s result): to redraw the overlay in the reviewed colours."""
    import dataclasses

    numbers = {r["head"] for r in pred.extras["heads"] if not r["at_border"]}  # a head cut by the border is not scored
    calls = {int(h): c for h, c in calls.items() if c in REVIEW_CALLS and int(h) in numbers}
    rows = [{**r, "reviewer": calls.get(r["head"], "")} for r in pred.extras["heads"]]
    extras = {**pred.extras, "heads": rows, **normal_forms(rows), "n_called_by_reviewer": len(calls),
              "heads_called_by_reviewer": "; ".join(f"{h}: {c}" for h, c in sorted(calls.items()))}
    images = dict(pred.images)
    if pixels is not None and heads is not None:
        images["overlay"] = draw_field(pixels, heads, rows)
    return dataclasses.replace(pred, extras=extras, images=images)


def pooled_normal_forms(fields: list[dict]) -> dict:
    """normal_forms over the heads of several fields (analyse_field's extras): WHO assesses at least 200
    spermatozoa, more than one field holds."""
    rows = [r for f in fields for r in f.get("heads", [])]
    return {"n_fields": len(fields), "n_heads": len(rows), **normal_forms(rows),
            "n_called_by_reviewer": sum(bool(r.get("reviewer")) and not r["at_border"] for r in rows),
            "acrosome_criterion": any(f.get("acrosome_criterion") for f in fields)}


def unique_fields(fields: list[Prediction]) -> list[Prediction]:
    """The fields in order, each image once: a field given twice (two names, or loose and in a zip) counts once."""
    return list({f.input_sha256: f for f in reversed(fields)}.values())[::-1]


def pooled_prediction(fields: list[Prediction]) -> Prediction:
    """The sample's result over several fields (one batch), as one Prediction to record and report: the pooled
    shares, the fields it pooled and their calibration; its fingerprint is that of the fields' fingerprints."""
    import hashlib

    given = len(fields)
    fields = unique_fields(fields)
    first = fields[0]
    extras = {**pooled_normal_forms([f.extras for f in fields]), "um_per_px": first.extras.get("um_per_px"),
              **({"copies_left_out": given - len(fields)} if given > len(fields) else {}),
              "fields_pooled": "; ".join(f.input_name for f in fields[:20])
              + (f" and {len(fields) - 20} more" if len(fields) > 20 else ""), "who_reference": morphometry.WHO_EDITION,
              "head_model": first.extras.get("head_model"), "head_model_sha256": first.extras.get("head_model_sha256"),
              "warnings": sorted({w for f in fields for w in f.extras.get("warnings", [])  # each field's own
                                  if "was trained on this image" not in w}),
              "caveats": first.extras.get("caveats", {})}
    sha = hashlib.sha256("".join(sorted(f.input_sha256 for f in fields)).encode()).hexdigest()
    return Prediction(first.model_id, first.model_version, f"{len(fields)} fields pooled", sha, extras=extras)


def classify_heads(images, device: str | None = None, frame: bool | None = None) -> list[Prediction]:
    """Single-head crops to the classifier, each first re-framed around its head (frame_head) when frame=True, as given
    when False, and by should_frame (stained crops re-framed, unstained ones as given) when None; the crop the
    classifier saw is in prediction.images["crop"]."""
    from ..imageio import InputImage

    model = registry.load(HEAD, device)
    t0 = time.perf_counter()
    pixels = [im.pixels if isinstance(im, InputImage) else im for im in images]
    heads = [locate_head(p) for p in pixels]
    unstained = [is_unstained(p) for p in pixels]
    framed = [should_frame(p, h, u) if frame is None else frame for p, h, u in zip(pixels, heads, unstained)]
    pixels = [frame_head(p, h) if f else p for p, h, f in zip(pixels, heads, framed)]
    probs = model.predict(pixels)
    ms = (time.perf_counter() - t0) * 1000 / max(len(pixels), 1)
    preds = []
    for i, im in enumerate(images):
        name, sha = (im.name, im.sha256) if isinstance(im, InputImage) else (f"image-{i}", "")
        given = im.pixels if isinstance(im, InputImage) else im
        answer = {out: {lab: float(p) for lab, p in zip(model.classes[out], probs[out][i])} for out in model.card.outputs}
        preds.append(Prediction(HEAD, model.card.version, name, sha, timings_ms={"classify": ms}, probabilities=answer,
            extras={"framed_on_head": framed[i], "head_found": heads[i] is not None,
                    "warnings": crop_warnings(given, heads[i] is None or not unstained[i] and
                                              head_contrast(given)[0] < MIN_STAINED_HEAD_CONTRAST)
                    + output_warnings(answer, unstained[i]) + weak_normal_warning(model.card, answer, unstained[i])}))
        preds[-1].images["crop"] = pixels[i]
    return preds


def output_warnings(answer: dict[str, dict[str, float]], unstained: bool = False) -> list[str]:
    """Where the two outputs contradict each other (shape was learnt from HuSHeM only), or shape is read on an
    unstained head, a kind it never learnt."""
    warnings = []
    if "normal" in answer and "shape" in answer and not unstained:  # on an unstained head, shape is untested anyway
        normal, shape = max(answer["normal"], key=answer["normal"].get), max(answer["shape"], key=answer["shape"].get)
        if (normal == "normal") != (shape == "normal"):
            warnings.append(f"The two outputs disagree (normal/abnormal: {normal}; head shape: {shape}): read this "
                            "head yourself.")
    if unstained and "shape" in answer:
        warnings.append("Head shape was learnt from stained heads only (HuSHeM): on this unstained head it is "
                        "untested; normal/abnormal was also learnt from unstained heads (MHSMA).")
    return warnings


def weak_normal_warning(card, answer: dict[str, dict[str, float]], unstained: bool) -> list[str]:
    """A "normal" call on an unstained head, where the classifier passes most abnormal heads as normal (its measured
    specificity on MHSMA's held-out heads, from the card)."""
    normal = answer.get("normal", {})
    specificity = (card.metrics.get("mhsma/valid") or {}).get("specificity")
    if not unstained or specificity is None or max(normal, key=normal.get, default=None) != "normal":
        return []
    return [f"On unstained heads the classifier called only {specificity * 100:.0f} % of abnormal heads abnormal (MHSMA's "
            "held-out heads): a “normal” call here is weak evidence."]


def crop_warnings(image: np.ndarray, no_head: bool) -> list[str]:
    """What a single-head answer must be read with (kept with the record and printed in its report)."""
    warnings = []
    if not is_single_head(image):
        h, w = image.shape[:2]
        warnings.append(f"This image is {w} × {h} pixels, the size of a whole field: it was classified as if it held "
                        "one head. Treat it as a full field (or score it with sperm-seg) to find and measure every head.")
    if no_head:
        warnings.append("No sperm head stands out in this image: it was classified as it is, and the answer may be "
                        "meaningless. Upload a crop showing one head.")
    return warnings


MIN_CROP_SIDE = 32  # px; MHSMA's crops are 64 px


def refuse_blank_crop(image) -> None:
    """A crop too small or flat to show a head is refused (a plain grey square was "abnormal 98.5 %, tapered
    96.2 %")."""
    from ..imageio import refuse_blank

    refuse_blank(image, MIN_CROP_SIDE, "a sperm head")


def is_single_head(image: np.ndarray) -> bool:
    return max(image.shape[:2]) <= AUTO_CROP_MAX_SIDE


def predict_images(model_id: str, images, device: str | None = None,
                   um_per_px: float = morphometry.DEFAULT_UM_PER_PX, acrosome_criterion: bool = False) -> list[Prediction]:
    if model_id == HEAD:
        for im in images:  # as the page refuses them (Batch and predict scored a 1 × 1 image "abnormal 98.5 %")
            refuse_blank_crop(im)
        return classify_heads(images, device)
    if model_id == SEG:
        return [analyse_field(im, um_per_px, device, acrosome_criterion) for im in images]
    raise KeyError(model_id)


def example_images(model_id: str, n: int) -> list[np.ndarray]:
    from .. import synthetic

    if model_id == HEAD:
        kinds = ds.SHAPES
        return [synthetic.sperm_head(kinds[i % 4], seed=i)[0] for i in range(n)]
    return [synthetic.sperm_field(n_heads=8, size=(1024, 1280), seed=i, um_per_px=0.048)[0] for i in range(n)]


def bench_case(model_id: str, device: str) -> dict:
    """sperm-seg: one 1280×1024 field segmented, measured and classified (the page's path)."""
    if model_id != SEG:
        from ..bench import default_case

        return default_case(model_id, device, __import__(__name__, fromlist=["x"]))
    fields = example_images(SEG, 4)
    return {"run_one": lambda: predict_images(SEG, fields[:1], device),
            "run_batch": lambda: predict_images(SEG, fields, device), "batch": 4,
            "notes": {"input": "1280×1024 generated field with 8 heads: segment + measure + classify"}}


# --- evaluation ------------------------------------------------------------------------------------------------

def _unseen(folder: Path, images) -> tuple[np.ndarray, list[str]]:
    """Which images the model in `folder` never trained on (no exact perceptual-hash match with its training
    images), and their hashes."""
    from .. import audit

    seen = set(audit.read_train_hashes(folder)["phash"].astype(str))
    hashes = [f"{audit.phash(im):016x}" for im in images]
    keep = np.array([h not in seen for h in hashes], bool)
    return keep, hashes


def _out_of_fold_frames(card, names, hashes, normal, shape) -> list:
    """Prediction frames for images the shipped model trained on, from the stored cross-validation's out-of-fold
    rows with the same perceptual hash; [] when it has none of them."""
    import pandas as pd

    from ..evaluation import predictions_frame

    stored = card.folder / "eval" / CV_EVALUATION / "predictions.csv"
    if not stored.is_file():
        return []
    cv = pd.read_csv(stored, dtype={"phash": str})
    frames = []
    for output, truth in (("normal", normal), ("shape", shape)):
        rows = cv[cv["output"] == output].drop_duplicates("phash").set_index("phash")
        found = [i for i, h in enumerate(hashes) if h in rows.index and truth[i] is not None]
        if found:
            labels = card.classes[output]
            matched = rows.loc[[hashes[i] for i in found]]
            frames.append(predictions_frame([names[i] for i in found], output, labels, [truth[i] for i in found],
                                            matched[[f"p:{lab}" for lab in labels]].to_numpy(float),
                                            phash=matched.index.tolist(), fold=matched["fold"].tolist()))
    return frames


def _eval_name(name: str, path: Path, split: str | None) -> str:
    return f"{name}-{split}" if split and name == path.resolve().name else name


def _evaluate_head(path: Path, name: str, split: str | None, device: str) -> dict:
    from ..evaluation import evaluate_classifier_outputs, predictions_frame, readable

    model = registry.load(HEAD, device)
    card = model.card
    names, images, normal, shape, stained, skipped, layouts = [], [], [], [], [], [], []
    roots = ds.head_set_roots(path)
    if split:  # a split names MHSMA arrays; class folders have none
        with_split = [r for r in roots if ds.is_mhsma(r) and split in ds.mhsma_splits(r)]
        if not with_split:
            found = sorted({sp for r in roots if ds.is_mhsma(r) for sp in ds.mhsma_splits(r)})
            raise ValueError(f"{path}: no MHSMA split {split!r}" + (f"; found {', '.join(found)}" if found else
                                                                     " (a class-per-folder set has no splits)"))
        roots = with_split
    root_sizes = []  # images read per root
    for root in roots:  # several sets side by side (hushem/ beside mhsma/) are pooled
        within = f"{root.relative_to(path).as_posix()}/" if len(roots) > 1 else ""
        read_before = len(images)
        if ds.is_mhsma(root):
            for sp in [split] if split else ds.mhsma_splits(root):
                x, y = ds.read_mhsma(root, sp)
                names += [f"{within}{sp}/{i}" for i in range(len(x))]
                images += list(x)
                normal += [ds.NORMAL_LABELS[1 - v] for v in y]
                shape += [None] * len(x)
                stained += [False] * len(x)
            layouts.append("mhsma")
        elif ds.is_class_folders(root):
            items, read, bad = readable(ds.read_class_folders(root), lambda it: read_rgb(it.path))
            images += read
            skipped += bad
            for it in items:
                names.append(f"{within}{it.path.parent.name}/{it.path.name}")
                normal.append(it.normal)
                shape.append(it.shape)
                stained.append(True)
            layouts.append("class-per-folder")
        else:
            raise ValueError(f"{path}: not a sperm head layout (class folders such as 01_Normal/…, or MHSMA "
                             "x_64_<split>.npy + y_head_<split>.npy)")
        root_sizes.append(len(images) - read_before)
    layout = " + ".join(dict.fromkeys(layouts))
    data_root = roots[0] if len(roots) == 1 else Path(path)
    if not images:
        raise ValueError(f"{path}: no readable sperm head images" + (f" ({skipped[0]})" if skipped else ""))
    keep, hashes = _unseen(card.folder, images)
    excluded = int((~keep).sum())
    if not keep.any():
        frames = _out_of_fold_frames(card, names, hashes, normal, shape)
        if not frames:
            raise ValueError(f"{path}: all {len(names)} images were used to train {HEAD}")
        log(f"sperm-head: every image was used to train the shipped model; reporting the out-of-fold predictions of "
            f"its {CV_EVALUATION} (models that did not see them) for {frames[0]['item'].nunique()} of them")
        return evaluate_classifier_outputs(card, _eval_name(name, data_root, split), frames, {
            "data": str(data_root), "layout": layout, "split": "out-of-fold (5-fold cross-validation)",
            "predicted_by": PREDICTED_BY_CV,
            "note": f"every image was used to train {card.file}, so these are the stored out-of-fold predictions of "
                    f"eval/{CV_EVALUATION} (5 models of the shipped recipe, each without the image's fold), matched "
                    "by exact perceptual hash; not predictions of the shipped file",
            "excluded_seen_in_training": excluded, "skipped": skipped})
    if excluded:
        log(f"sperm-head: {excluded} of {len(names)} images were used in training and are left out")
        starts = np.cumsum([0, *root_sizes])
        for root, start, end in zip(roots, starts, starts[1:]):  # a whole set left out: its cross-validation is the
            if len(roots) > 1 and not keep[start:end].any():  # way to it
                log(f"sperm-head: every image of {root} trained the shipped model, so it is not in this evaluation; "
                    f"evaluate {root} alone for the stored {CV_EVALUATION} out-of-fold predictions")
    idx = np.flatnonzero(keep)
    images = [frame_head(im) if stained[i] else im for i, im in enumerate(images)]  # stained crops framed as in
    # training; MHSMA crops are already tight
    probs = {o: np.concatenate([model.predict([images[i] for i in idx[s:s + 256]])[o]
                                for s in range(0, len(idx), 256)]) for o in card.outputs}
    sel = lambda seq: [seq[i] for i in idx]  # noqa: E731
    frames = [predictions_frame(sel(names), "normal", card.classes["normal"], sel(normal), probs["normal"],
                                phash=sel(hashes))]
    labelled = [j for j, i in enumerate(idx) if shape[i] is not None]
    if labelled:
        frames.append(predictions_frame([names[idx[j]] for j in labelled], "shape", card.classes["shape"],
                                        [shape[idx[j]] for j in labelled], probs["shape"][labelled],
                                        phash=[hashes[idx[j]] for j in labelled]))
    return evaluate_classifier_outputs(card, _eval_name(name, data_root, split), frames, {
        "data": str(data_root), "layout": layout, "split": split or "all", "excluded_seen_in_training": excluded,
        "skipped": skipped})


def _iou(a: dict, b: dict) -> tuple[float, float]:
    """Mask IoU and Dice of two heads given as {box, mask (box-sized)}."""
    ax0, ay0, ax1, ay1 = a["box"]
    bx0, by0, bx1, by1 = b["box"]
    x0, y0, x1, y1 = min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1)
    ma = np.zeros((y1 - y0, x1 - x0), bool)
    mb = np.zeros_like(ma)
    ma[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = a["mask"]
    mb[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] = b["mask"]
    inter, sa, sb = (ma & mb).sum(), ma.sum(), mb.sum()
    return float(inter / max(sa + sb - inter, 1)), float(2 * inter / max(sa + sb, 1))


def _box_iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-9)


def average_precision(per_image: list[tuple[np.ndarray, np.ndarray]], n_true: int, threshold: float) -> float:
    """COCO-style AP (101-point interpolation) from (scores (P,), IoU matrix (P, T)) per image."""
    scores, hits = [], []
    for s, iou in per_image:
        used = np.zeros(iou.shape[1], bool)
        for p in np.argsort(-s, kind="stable"):
            cand = np.where(used, -1, iou[p]) if iou.shape[1] else np.array([])
            j = int(cand.argmax()) if cand.size else -1
            hit = j >= 0 and cand[j] >= threshold
            if hit:
                used[j] = True
            scores.append(s[p])
            hits.append(hit)
    if n_true == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits, float)[order])
    fp = np.cumsum(1 - np.asarray(hits, float)[order])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, 1e-9)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        above = np.flatnonzero(recall >= r)
        ap += precision[above[0]] if above.size else 0.0
    return float(ap / 101)


def truth_heads(rec: ds.ParsingImage) -> list[dict]:
    heads = []
    for m in ds.head_masks(rec):
        ys, xs = np.nonzero(m)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        heads.append({"box": box, "mask": m[box[1]:box[3], box[0]:box[2]]})
    return heads


def segmentation_metrics(results: list[tuple[list[dict], list[dict]]]) -> dict:
    """results: per image (predicted heads with score, true heads) -> the sperm-seg metric set."""
    mask_iou, box_iou, dices, counts, pairs = [], [], [], [], []
    n_true = 0
    for pred, truth in results:
        n_true += len(truth)
        counts.append(abs(len(pred) - len(truth)))
        s = np.array([p["score"] for p in pred])
        mi = np.zeros((len(pred), len(truth)))
        di = np.zeros_like(mi)
        bi = np.zeros_like(mi)
        for i, p in enumerate(pred):
            for j, t in enumerate(truth):
                bi[i, j] = _box_iou(p["box"], t["box"])
                if bi[i, j] > 0:
                    mi[i, j], di[i, j] = _iou(p, t)
        mask_iou.append((s, mi))
        box_iou.append((s, bi))
        used = set()
        for i in np.argsort(-s, kind="stable"):  # matched heads: greedy by score at mask IoU ≥ 0.5
            cand = [(mi[i, j], j) for j in range(len(truth)) if j not in used and mi[i, j] >= 0.5]
            if cand:
                _, j = max(cand)
                used.add(j)
                dices.append(di[i, j])
                pairs.append((pred[i]["mask"], truth[j]["mask"]))
    thresholds = np.arange(0.5, 0.96, 0.05)
    maps = [average_precision(mask_iou, n_true, t) for t in thresholds]
    return {
        "n_images": len(results), "n_true_heads": n_true, "n_pred_heads": int(sum(len(p) for p, _ in results)),
        "mask_map50": maps[0], "mask_map50_95": float(np.mean(maps)),
        "box_map50": average_precision(box_iou, n_true, 0.5),
        "mean_dice": float(np.mean(dices)) if dices else 0.0, "matched": len(dices),
        "count_mae": float(np.mean(counts)) if counts else float("nan"),
        **measurement_agreement(pairs),
    }


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def measurement_note(card) -> str:
    """How far the segmenter's sizes are from annotated outlines, from its card ("" when not measured)."""
    m = card.metrics.get("sperm_parsing_v2/heldout") or {}
    if "length_error_mean_um" not in m:
        return ""
    return (f"Sizes come from the segmenter's outlines: on {m['matched']} held-out Sperm Parsing heads they differed "
            f"from the annotated outlines by {m['length_error_mean_um']:+.3f} ± {m['length_error_sd_um']:.3f} µm in "
            f"length and {m['width_error_mean_um']:+.3f} ± {m['width_error_sd_um']:.3f} µm in width (at "
            f"{m['measured_at_um_per_px']:g} µm per pixel), and the WHO size verdict was the same for "
            f"{m['who_size_verdict_agreement'] * 100:.0f} % of them. ")


def measurement_agreement(pairs: list[tuple[np.ndarray, np.ndarray]],
                          um_per_px: float = morphometry.DEFAULT_UM_PER_PX) -> dict:
    """How the sizes measured on predicted masks agree with those on the annotated outlines of the same heads
    (matched pairs): mean and SD of the differences in length and width (µm, + = predicted larger) and the share of
    heads whose WHO size verdict (length, width, length/width) is the same, at `um_per_px`."""
    if not pairs:
        return {}
    measured = [(morphometry.measure(p, um_per_px), morphometry.measure(t, um_per_px)) for p, t in pairs]
    length = np.array([p.length_um - t.length_um for p, t in measured])
    width = np.array([p.width_um - t.width_um for p, t in measured])
    same = [all(morphometry.who_flags(p).values()) == all(morphometry.who_flags(t).values()) for p, t in measured]
    return {"length_error_mean_um": float(length.mean()), "length_error_sd_um": _sd(length),
            "width_error_mean_um": float(width.mean()), "width_error_sd_um": _sd(width),
            "who_size_verdict_agreement": float(np.mean(same)), "measured_at_um_per_px": um_per_px}


def _evaluate_seg(path: Path, name: str, split: str | None, device: str) -> dict:
    import pandas as pd

    from ..evaluation import readable, refreshes_card, store

    model = registry.load(SEG, device)
    path = ds.layout_root(path, ds.is_parsing_root)
    splits = ds.parsing_splits(path)
    if not splits:
        raise ValueError(f"{path}: not the Sperm Parsing layout (annotations/<split>.json + <split>_img/)")
    if split and split not in splits and split != "heldout":
        raise ValueError(f"{path}: no split {split!r}; found {', '.join(splits)} (or use 'heldout')")
    records = [r for sp in (splits if split in (None, "heldout") else [split]) for r in ds.read_parsing(path, sp)
               if split != "heldout" or ds.heldout(r.key)]
    records, fields, skipped = readable(records, lambda r: (read_rgb(r.path), truth_heads(r)))
    if not records:
        raise ValueError(f"{path}: no readable fields" + (f" ({skipped[0]})" if skipped else ""))
    keep, hashes = _unseen(model.card.folder, [image for image, _ in fields])
    excluded = int((~keep).sum())
    if excluded:
        log(f"sperm-seg: {excluded} of {len(records)} fields were used in training and are left out")
    if not keep.any():
        raise ValueError(f"{path}: every field was used to train {SEG}; evaluate with --split heldout")
    results, rows = [], []
    for rec, (image, truth), h, unseen in zip(records, fields, hashes, keep):
        if not unseen:
            continue
        pred = segment(model, image)
        one = segmentation_metrics([(pred, truth)])
        results.append((pred, truth))
        rows.append({"item": rec.path.name, "output": "heads", "n_true": len(truth), "n_pred": len(pred),
                     "mean_dice": one["mean_dice"], "mask_map50": one["mask_map50"], "phash": h})
    metrics = {"heads": segmentation_metrics(results)}
    eval_name = _eval_name(name, path, split)
    result = store(model.card, eval_name, pd.DataFrame(rows), metrics, {
        "data": str(path), "layout": "sperm-parsing", "split": split or "all",
        "excluded_seen_in_training": excluded, "n": len(rows), "skipped": skipped})
    if split == "heldout" and path.name == "sperm_parsing_v2" and refreshes_card(model.card, "sperm_parsing_v2/heldout",
                                                                                  eval_name, path):
        from ..evaluation import copy_evaluations_to_card

        copy_evaluations_to_card(SEG, {eval_name: "sperm_parsing_v2/heldout"}, lambda _, m: {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in m["heads"].items()})
    return result


def evaluate(model_id: str, path: Path, name: str, split: str | None = None, device: str = "cpu") -> dict:
    path = Path(path)
    if model_id == HEAD:
        return _evaluate_head(path, name, split, device)
    if model_id == SEG:
        return _evaluate_seg(path, name, split, device)
    raise KeyError(model_id)

"""Perceptual hashes for the leakage audit: stored with each model at training time, compared at evaluation."""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

HASHES_FILE = "train_hashes.csv"
AUDIT_FILE = "audit.json"
# an item this close to more training images than this is not a copy of one: the hash cannot tell such images apart
# (EmbryoScope frames of different embryos, same instrument, match hundreds of each other's frames)
INDISTINCT_MATCHES = 20
MAX_DISTANCE = 6  # bits of 64; measured on Hung Vuong: flipped + re-encoded copies <= 4, distinct embryos >= 12 (99.9 %)
# a single upload called a training image: exact and JPEG re-encoded copies are 0-1 bits; on 64 px MHSMA heads 2 bits
# already joins distinct heads (10 of 240 valid heads, against the 2 that are exact copies)
COPY_DISTANCE = 1
FLIP_COLUMNS = ("phash_fh", "phash_fv", "phash_fhv")
MAX_PAIRS = 200


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an image (grey, 32x32 DCT, top-left 8x8 against its median)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def phash_variants(image: np.ndarray) -> list[int]:
    """Hashes of the image and its flips, so a flipped copy is still found."""
    return [phash(image), phash(image[:, ::-1]), phash(image[::-1, :]), phash(image[::-1, ::-1])]


def hamming(a: int, b: int) -> int:
    return int(bin(a ^ b).count("1"))


def write_train_hashes(folder: Path, items: list[str], images) -> Path:
    """Store one hash per training image (item name, hash as 16 hex digits) beside the model, with the hashes of
    its flips (phash_fh, phash_fv, phash_fhv) so flipped copies in an evaluation set are found too."""
    rows = []
    for item, img in zip(items, images):
        hashes = [f"{h:016x}" for h in phash_variants(img)]
        rows.append({"item": item, "phash": hashes[0], **dict(zip(FLIP_COLUMNS, hashes[1:]))})
    path = Path(folder) / HASHES_FILE
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def read_train_hashes(folder: Path) -> pd.DataFrame:
    path = Path(folder) / HASHES_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["item", "phash"])
    frame = pd.read_csv(path, dtype={c: str for c in ("phash", *FLIP_COLUMNS)})
    frame["hash"] = frame["phash"].map(lambda h: int(h, 16))
    return frame


@functools.lru_cache(maxsize=8)
def _training_index(folder: str, sha256: str) -> tuple[pd.DataFrame, np.ndarray]:  # by model file: a new one re-reads
    train = read_train_hashes(Path(folder))
    return train, train_hash_matrix(train)


def training_note(card, image: np.ndarray) -> str | None:
    """What a result on this image must say when the installed model trained on it (or on a near-copy or flip of
    it): its answer is then no test of the model, however right it looks. None otherwise."""
    train, hashes = _training_index(str(card.folder), card.sha256)
    item = training_match(train, image, hashes=hashes)
    if not item:
        return None
    return (f"The installed {card.id} (v{card.version}) was trained on this image, or a near-copy of it (training "
            f"item {item}): its answer here is no test of the model.")


def training_match(train: pd.DataFrame, image: np.ndarray, max_distance: int = COPY_DISTANCE,
                   hashes: np.ndarray | None = None) -> str | None:
    """The training item (of read_train_hashes; `hashes`: its train_hash_matrix when already made) that an image is a
    near-copy of, or a flip of; None when there is none, or when the hash cannot tell (the image is as close to more
    than INDISTINCT_MATCHES training images)."""
    if train.empty:
        return None
    d = distances(np.array([phash(image)], dtype=np.uint64), train_hash_matrix(train) if hashes is None else hashes)[0]
    close = np.flatnonzero(d <= max_distance)
    if not len(close) or len(close) > INDISTINCT_MATCHES:
        return None
    return str(train["item"].iloc[close[d[close].argmin()]])


# --- evaluation-time audit -----------------------------------------------------------------------------------------


def train_hash_matrix(train: pd.DataFrame) -> np.ndarray:
    """(n_train, variants) uint64 hashes: the original and, where stored, its flips."""
    cols = ["phash", *[c for c in FLIP_COLUMNS if c in train]]
    if train.empty:
        return np.zeros((0, 1), dtype=np.uint64)
    return np.stack([train[c].astype(str).map(lambda h: int(h, 16)).to_numpy(dtype=np.uint64) for c in cols], axis=1)


def distances(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(len(a), len(b)) Hamming distance of hashes a (n,) to the closest variant of each b (m, variants)."""
    b = b.reshape(len(b), -1)
    out = np.empty((len(a), len(b)), dtype=np.uint8)
    for s in range(0, len(a), chunk):
        x = a[s:s + chunk, None, None] ^ b[None, :, :]
        out[s:s + chunk] = np.bitwise_count(x).min(axis=2)
    return out


def eval_hashes(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation item that has a hash: item, phash (hex), hash (uint64)."""
    if "phash" not in predictions:
        return pd.DataFrame(columns=["item", "phash", "hash"])
    items = predictions.dropna(subset=["phash"]).drop_duplicates("item")[["item", "phash"]].reset_index(drop=True)
    items["item"] = items["item"].astype(str)
    items["phash"] = items["phash"].astype(str).str.zfill(16)
    items["hash"] = items["phash"].map(lambda h: np.uint64(int(h, 16)))
    return items


def audit(predictions: pd.DataFrame, train: pd.DataFrame, max_distance: int = MAX_DISTANCE) -> dict:
    """Near-duplicates of the evaluation items among the training images and among themselves.

    Returns counts, example pairs (closest first), `train_items` (evaluation items to drop because a training image
    is a near-copy) and `within_removed` (all but one item of each near-duplicate group inside the evaluation set).
    """
    ev = eval_hashes(predictions)
    h = ev["hash"].to_numpy(dtype=np.uint64)
    result = {"max_distance": int(max_distance), "n_items": len(ev), "n_train": int(len(train)),
              "train_flips": all(c in train for c in FLIP_COLUMNS) if len(train) else False}
    # against training
    pairs = []
    if len(train) and len(ev):
        d = distances(h, train_hash_matrix(train))
        nearest = d.argmin(axis=1)
        dmin = d[np.arange(len(ev)), nearest]
        for i in np.flatnonzero(dmin <= max_distance):
            pairs.append({"item": ev["item"][i], "train_item": str(train["item"].iloc[nearest[i]]),
                          "distance": int(dmin[i]), "n_train_matches": int((d[i] <= max_distance).sum())})
    pairs.sort(key=lambda p: p["distance"])
    result["train"] = {"n_items": len(pairs), "items": [p["item"] for p in pairs], "pairs": pairs[:MAX_PAIRS],
                       "n_indistinct": sum(p["n_train_matches"] > INDISTINCT_MATCHES for p in pairs)}
    # within the evaluation set
    within = []
    links = []
    if len(ev) > 1:
        d = distances(h, h[:, None])
        ii, jj = np.nonzero(np.triu(d <= max_distance, k=1))
        for i, j in zip(ii, jj):
            links.append((int(i), int(j)))
            within.append({"item": ev["item"][i], "other": ev["item"][j], "distance": int(d[i, j])})
    groups = connected_groups(len(ev), links)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    within.sort(key=lambda p: p["distance"])
    result["within"] = {
        "n_items": int(sum(len(g) for g in dup_groups)), "n_groups": len(dup_groups), "n_pairs": len(within),
        "removed": [ev["item"][i] for g in dup_groups for i in sorted(g)[1:]], "pairs": within[:MAX_PAIRS],
    }
    return result


def connected_groups(n: int, links) -> dict[int, list[int]]:
    """Union-find: the members of each connected group of items 0..n-1 given linked pairs, keyed by a root index."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return groups


def clean_items(result: dict, within: bool = True) -> set[str]:
    """Items the audit would drop: near-copies of training images, and (within=True) duplicates inside the set."""
    drop = set(result["train"]["items"])
    if within:
        drop |= set(result["within"]["removed"])
    return drop


def write_audit(model_folder: Path, eval_folder: Path, predictions: pd.DataFrame, classes: dict[str, list[str]],
                max_distance: int = MAX_DISTANCE) -> dict:
    """Run the audit of one stored evaluation, with the metrics recomputed without the flagged items, and write
    audit.json beside it."""
    import json

    from .evaluation import classification_metrics

    result = audit(predictions, read_train_hashes(model_folder), max_distance)
    result["metrics_without"] = {}
    for key, drop in (("train", clean_items(result, within=False)), ("train_and_within", clean_items(result))):
        kept = predictions[~predictions["item"].astype(str).isin(drop)]
        per_output = {}
        for output, rows in kept.groupby("output", sort=False):
            labels = classes.get(output)
            if not labels or not all(f"p:{lab}" in rows for lab in labels):
                continue
            rows = rows[rows["true"].astype(str).isin(labels)]
            if len(rows):
                per_output[output] = classification_metrics(
                    rows["true"].astype(str).tolist(), rows[[f"p:{lab}" for lab in labels]].to_numpy(), labels)
        result["metrics_without"][key] = per_output
    (Path(eval_folder) / AUDIT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def read_audit(eval_folder: Path) -> dict | None:
    import json

    path = Path(eval_folder) / AUDIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None

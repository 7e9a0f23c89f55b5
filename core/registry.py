"""The one door to models: discover cards in weights/*/card.toml, verify, load through a backend, cache.

Cards are read without touching any framework, so listing models is cheap. Loading is lazy; loaded models are
cached per (model id, device) in a bounded LRU shared by every caller in the process (all browser sessions),
and concurrent requests for the same model load it once.
"""
from __future__ import annotations

import difflib
import hashlib
import threading
import time
import tomllib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import WEIGHTS_DIR
from . import device as devices
from .results import Wording

REQUIRED_KEYS = (
    "id", "title", "task", "framework", "file", "sha256", "version", "classes", "input",
    "train_command", "data", "intended_use", "limitations",
)
CACHE_SIZE = 8


class CardError(ValueError):
    """A card is missing, malformed, or does not match its weights."""


@dataclass(frozen=True)
class Card:
    id: str
    title: str
    task: str
    framework: str
    file: str
    sha256: str
    version: str
    classes: dict[str, list[str]]
    input: dict[str, Any]
    train_command: str
    data: Any
    intended_use: str
    limitations: str
    folder: Path
    raw: dict = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.folder / self.file

    @property
    def outputs(self) -> list[str]:
        return list(self.classes)

    @property
    def metrics(self) -> dict:
        """Measured metrics, keyed by the data they were measured on (e.g. "hungvuong/heldout-groups")."""
        return self.raw.get("metrics", {})

    @property
    def wording(self) -> Wording:
        """How outputs and labels read on pages and reports: the optional [display] table (titles, labels)."""
        display = self.raw.get("display", {})
        return Wording(titles=display.get("titles", {}), labels=display.get("labels", {}))

    def get(self, key: str, default=None):
        return self.raw.get(key, default)

    @classmethod
    def from_file(cls, path: Path) -> "Card":
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CardError(f"{path}: cannot read card: {exc}") from exc
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise CardError(f"{path}: card lacks {', '.join(missing)}")
        if not isinstance(raw["classes"], dict) or not all(
            isinstance(v, list) and v for v in raw["classes"].values()
        ):
            raise CardError(f"{path}: 'classes' must map each output name to its list of labels")
        return cls(**{k: raw[k] for k in REQUIRED_KEYS}, folder=path.parent, raw=raw)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_card(folder: Path, fields: dict) -> Card:
    """Write folder/card.toml from `fields` (every REQUIRED_KEYS entry but sha256, which is computed from the file)."""
    import tomli_w

    folder = Path(folder)
    fields = {**fields, "sha256": file_sha256(folder / fields["file"])}
    missing = [k for k in REQUIRED_KEYS if k not in fields]
    if missing:
        raise CardError(f"card for {fields.get('id')} lacks {', '.join(missing)}")
    ordered = {k: fields[k] for k in REQUIRED_KEYS} | {k: v for k, v in fields.items() if k not in REQUIRED_KEYS}
    (folder / "card.toml").write_text(tomli_w.dumps(ordered))
    return Card.from_file(folder / "card.toml")


@dataclass
class LoadStatus:
    model_id: str
    device: str
    load_s: float
    loaded_at: float


class Registry:
    def __init__(self, root: Path | str = WEIGHTS_DIR, cache_size: int = CACHE_SIZE):
        self.root = Path(root).resolve()
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._status: dict[tuple[str, str], LoadStatus] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    # --- cards (no framework import) -------------------------------------------------------------
    def cards(self) -> list[Card]:
        if not self.root.is_dir():
            return []
        return [Card.from_file(p) for p in sorted(self.root.glob("*/card.toml"))]

    def ids(self) -> list[str]:
        return [c.id for c in self.cards()]

    def card(self, model_id: str) -> Card:
        path = self.root / model_id / "card.toml"
        if "/" in model_id or "\\" in model_id or model_id.startswith(".") or not path.is_file():
            close = difflib.get_close_matches(model_id, self.ids(), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Known: {', '.join(self.ids()) or 'none'}."
            raise KeyError(f"Unknown model id {model_id!r}.{hint}")
        card = Card.from_file(path)
        if card.id != model_id:
            raise CardError(f"{path}: card id {card.id!r} does not match its folder {model_id!r}")
        return card

    def verify(self, card: Card) -> Path:
        """The weights file, after checking it lies inside the weights folder and matches the card's sha256."""
        path = card.path.resolve()
        if not path.is_relative_to(self.root):
            raise CardError(f"{card.id}: refusing to load {path}: model files must lie inside {self.root}")
        if not path.is_file():
            raise CardError(f"{card.id}: weights file {card.file!r} is missing")
        actual = file_sha256(path)
        if actual != card.sha256:
            raise CardError(
                f"{card.id}: sha256 of {card.file} is {actual[:12]}…, the card says {card.sha256[:12]}…: "
                "the weights changed without their card being updated"
            )
        return path

    # --- loading ------------------------------------------------------------------------------------
    def load(self, model_id: str, device: str | None = None):
        device = devices.resolve(device)
        key = (model_id, device)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one loader per key; others wait and then hit the cache
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            card = self.card(model_id)
            path = self.verify(card)
            from .backends import backend_for

            start = time.perf_counter()
            model = backend_for(card.framework)(card, path, device)
            load_s = time.perf_counter() - start
            with self._lock:
                self._cache[key] = model
                self._status[key] = LoadStatus(model_id, device, load_s, time.time())
                while len(self._cache) > self.cache_size:
                    old, _ = self._cache.popitem(last=False)
                    self._status.pop(old, None)
            return model

    def status(self) -> list[LoadStatus]:
        with self._lock:
            return list(self._status.values())

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._status.clear()

    def preload(self, model_ids: list[str], device: str | None = None) -> None:
        for model_id in model_ids:
            self.load(model_id, device)


REGISTRY = Registry()
cards = REGISTRY.cards
card = REGISTRY.card
load = REGISTRY.load
status = REGISTRY.status
preload = REGISTRY.preload


def wording(model_id: str) -> Wording:
    """How a model's outputs read; plain names for a model that is no longer installed (old records)."""
    try:
        return card(model_id).wording
    except (KeyError, CardError):
        return Wording()

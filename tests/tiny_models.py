"""Tiny models trained in tests on generated images, written as real weights folders with cards.

Each builder trains for a few seconds on core.synthetic embryos (cleavage vs blastocyst) so every backend is
exercised end to end: train, save, card, load through the registry, predict.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import synthetic
from core.preprocess import prepare
from core.registry import write_card

SIZE = 32
INPUT = {"size": [SIZE, SIZE], "channels": 1, "normalise": "per_image"}
CLASSES = {"stage": ["cleavage", "blastocyst"]}


def dataset(n: int = 64, seed: int = 0):
    images, y = [], []
    for i in range(n):
        stage = "blastocyst" if i % 2 else "cleavage"
        img, _ = synthetic.embryo(stage, size=96, seed=seed + i)
        images.append(img)
        y.append(i % 2)
    return images, np.array(y)


def _card_fields(model_id: str, framework: str, file: str, **extra) -> dict:
    return {
        "id": model_id, "title": f"Tiny {framework} test model", "task": "test", "framework": framework,
        "file": file, "version": "0.0.1", "classes": CLASSES, "input": INPUT,
        "train_command": "built by tests/tiny_models.py", "data": [{"name": "generated embryos", "licence": "n/a"}],
        "intended_use": "tests only", "limitations": "trained on generated images", **extra,
    }


def keras_model(root: Path, model_id: str = "tiny-keras", epochs: int = 8) -> Path:
    from core.backends.keras import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    images, y = dataset()
    x = prepare(images, INPUT)
    inputs = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(2, activation="softmax", name="stage")(h)
    net = keras.Model(inputs, out)
    net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    net.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    folder = root / model_id
    folder.mkdir(parents=True, exist_ok=True)
    net.save(folder / "model.keras")
    write_card(folder, _card_fields(model_id, "keras", "model.keras", explain={"layer": "last_conv"}))
    return folder


def torch_model(root: Path, model_id: str = "tiny-torch", epochs: int = 15) -> Path:
    import torch

    from core.nets import multi_head_cnn

    torch.manual_seed(0)
    images, y = dataset()
    x = torch.from_numpy(prepare(images, INPUT).transpose(0, 3, 1, 2).copy())
    kwargs = {"heads": {"stage": 2}, "channels": 1, "widths": [8, 16]}
    net = multi_head_cnn(**kwargs)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    target = torch.from_numpy(y)
    for _ in range(epochs):
        net.train()
        for i in range(0, len(x), 16):
            (probs,) = net(x[i:i + 16])
            loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-8), target[i:i + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
    folder = root / model_id
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    write_card(folder, _card_fields(model_id, "torch", "model.pt", architecture="core.nets:multi_head_cnn",
                                    arch_kwargs=kwargs, explain={"layer": "features"}))
    return folder


def yolo_dataset(root: Path, n: int = 8) -> Path:
    """Generated embryos in a YOLO detection layout (one box per image)."""
    import cv2

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n if split == "train" else 2):
            img, truth = synthetic.embryo("blastocyst", size=64, seed=i)
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), img[:, :, ::-1])
            (cx, cy), r = truth["center"], truth["radius"] + 2
            (root / "labels" / split / f"{i}.txt").write_text(f"0 {cx / 64:.4f} {cy / 64:.4f} {2 * r / 64:.4f} {2 * r / 64:.4f}\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: embryo\n")
    return yaml


def yolo_model(root: Path, work: Path, model_id: str = "tiny-yolo") -> Path:
    from ultralytics import YOLO

    data = yolo_dataset(work / "yolo_data")
    net = YOLO("yolov8n.yaml")
    net.train(data=str(data), epochs=1, imgsz=64, batch=4, device="cpu", workers=0, amp=False, plots=False,
              val=False, project=str(work / "runs"), name="tiny", exist_ok=True, verbose=False, seed=0)
    folder = root / model_id
    folder.mkdir(parents=True, exist_ok=True)
    best = Path(net.trainer.last)
    (folder / "model.pt").write_bytes(best.read_bytes())
    fields = _card_fields(model_id, "ultralytics", "model.pt", yolo_task="detect", conf=0.001)
    fields["classes"] = {"embryos": ["embryo"]}
    fields["input"] = {"size": [64, 64], "channels": 3, "normalise": "unit"}
    write_card(folder, fields)
    return folder

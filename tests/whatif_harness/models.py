"""Tiny what-if test models trained in seconds on core.synthetic.bright_spot images (class = a bright square is
present), written as real weights folders with cards, so the backends' explain() can be checked end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import synthetic
from core.preprocess import prepare
from core.registry import write_card

SIZE = 64  # generated image size; the models see 48 px (small enough to train in seconds on 2 busy cores)
INPUT = {"size": [48, 48], "channels": 3, "normalise": "unit"}
CLASSES = {"spot": ["absent", "present"]}


def dataset(n: int = 400, seed: int = 0):
    pairs = [synthetic.bright_spot(bool(i % 2), SIZE, seed + i) for i in range(n)]
    return [p[0] for p in pairs], np.array([i % 2 for i in range(n)]), [p[1] for p in pairs]


def _card(model_id: str, framework: str, file: str, **extra) -> dict:
    return {
        "id": model_id, "title": f"What-if toy ({framework})", "task": "test", "framework": framework, "file": file,
        "version": "0.1", "classes": CLASSES, "input": INPUT, "train_command": "tests/whatif_harness/models.py",
        "data": [{"name": "core.synthetic.bright_spot", "licence": "generated"}],
        "intended_use": "what-if tests and the latency benchmark only", "limitations": "generated images", **extra,
    }


def keras_model(root: Path, model_id: str = "whatif-keras", epochs: int = 6) -> Path:
    from core.backends.keras import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    images, y, _ = dataset(200)
    inputs = keras.Input((48, 48, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="cam")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    out = keras.layers.Dense(2, activation="softmax", name="spot")(h)
    net = keras.Model(inputs, out)
    net.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    net.fit(prepare(images, INPUT), y, epochs=epochs, batch_size=32, verbose=0)
    folder = Path(root) / model_id
    folder.mkdir(parents=True, exist_ok=True)
    net.save(folder / "model.keras")
    write_card(folder, _card(model_id, "keras", "model.keras", explain={"layer": "cam"}))
    return folder


def torch_model(root: Path, model_id: str = "whatif-torch", epochs: int = 8) -> Path:
    import torch

    from core.nets import multi_head_cnn

    torch.manual_seed(0)
    images, y, _ = dataset(120)
    x = torch.from_numpy(prepare(images, INPUT).transpose(0, 3, 1, 2).copy())
    kwargs = {"heads": {"spot": 2}, "channels": 3, "widths": [8]}
    net = multi_head_cnn(**kwargs)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    target = torch.from_numpy(y)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            (probs,) = net(x[idx])
            loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-8), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    folder = Path(root) / model_id
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    write_card(folder, _card(model_id, "torch", "model.pt", architecture="core.nets:multi_head_cnn",
                             arch_kwargs=kwargs, explain={"layer": "features"}))
    return folder

"""Train models on a lent CUDA machine that cannot read ../shared/data, then write their cards here.

The device tool carries at most 64 MiB, so the training arrays travel packed:

  python scripts/gpu_train.py pack .gpu                      # here: .gpu/sperm.npz (prepared fields, head crops)
  python scripts/gpu_train.py train .gpu $OUT [VARIANT...]   # there: the models in parallel -> $OUT/sperm_*.pt
  python scripts/gpu_train.py finish RESULTS_DIR VARIANT     # here: cards, hashes and evaluations
  python scripts/gpu_train.py heads .gpu $OUT VARIANT... [--cpu]  # there (or here on the CPU, 2 at a time): head
                                                              # recipes only, MHSMA-train folds held out too

  python scripts/gpu_train.py pack-timelapse .gpu_tl          # here: the images timelapse-stage trains on
  python scripts/gpu_train.py timelapse $OUT [--seeds 0,1,2] [--loeo-only] [VARIANT...]
                                                              # there, with ../shared/data linked to .gpu_tl/data:
                                                              # LOEO folds + final model per variant and seed

  python scripts/gpu_train.py pack-embryo .gpu_em             # here: embryo-grade's cached training crops
  python scripts/gpu_train.py embryo .gpu_em $OUT [VARIANT...]  # there (KERAS_BACKEND=torch): each variant, seed
                                                              # scored on the inner split, and trained on all
  python scripts/gpu_train.py finish-embryo RESULTS VARIANT SEED   # here: weights, hashes, card

The fitting functions are the ones `python -m core train sperm-seg|sperm-head --device cuda` runs; only the
transport differs (segmentation fields travel as JPEG q95 instead of PNG).
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path("../shared/data/sperm")  # run from the repository root, as the cards' train commands are
# head recipes compared by 5-fold CV on the GPU; e100_w16 is the CPU recipe. The later comparisons (`heads`) hold
# out MHSMA-train folds too; the stem-stride-1 and fixed-MHSMA-scale variants they tried lost and live in 70346c4.
HEAD_VARIANTS = {"e100_w16": {"epochs": 100, "width": 16}, "e300_w16": {"epochs": 300, "width": 16},
                 "e300_w32": {"epochs": 300, "width": 32}, "e600_w32": {"epochs": 600, "width": 32}}


def pack(out: Path) -> None:
    from core.tasks import sperm

    out.mkdir(parents=True, exist_ok=True)
    images, labels, _ = sperm._seg_training_set(DATA / "sperm_parsing_v2")
    jpegs = [cv2.imencode(".jpg", im[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for im in images]
    pngs = [cv2.imencode(".png", lab)[1].tobytes() for lab in labels]
    items, _, hx, hn, hs, mx, mn, _ = sperm._head_training_sets(DATA)
    np.savez(out / "sperm.npz", jpegs=np.array(jpegs, dtype=object), pngs=np.array(pngs, dtype=object),
             hx=hx, hn=hn, hs=hs, mx=mx, mn=mn, folds=sperm._folds(items, sperm.N_FOLDS))
    print(f"packed {len(images)} fields, {len(hx)} HuSHeM and {len(mx)} MHSMA heads: "
          f"{(out / 'sperm.npz').stat().st_size / 2**20:.1f} MiB")


def _load(folder: Path) -> dict:
    return dict(np.load(folder / "sperm.npz", allow_pickle=True))


def _seg_job(folder: str) -> dict:
    import torch

    from core.tasks import sperm

    d = _load(Path(folder))
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy() for b in d["jpegs"]]
    labels = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in d["pngs"]]
    torch.set_num_threads(4)
    r = sperm.SEG_RECIPES["cuda"]
    t0 = time.perf_counter()
    net = sperm.fit_seg(images, labels, r["epochs"], 0, device="cuda", crop=r["crop"], batch=r["batch"])
    return {"state": net.state_dict(), "seconds": time.perf_counter() - t0, "recipe": r}


def _head_job(folder: str, variant: str, fold: int | None, held_out_mhsma: bool = False,
              device: str = "cuda") -> tuple:
    import torch

    from core.tasks import sperm

    torch.set_num_threads(1)
    d = _load(Path(folder))
    m_folds = sperm.mhsma_folds(len(d["mx"])) if held_out_mhsma else None
    net = sperm.fit_head_fold(d["hx"], d["hn"], d["hs"], d["mx"], d["mn"], d["folds"], fold, HEAD_VARIANTS[variant],
                              0, device, m_folds)
    out = {"state": net.state_dict()}
    if fold is not None:
        test = d["folds"] == fold
        out["p_normal"], out["p_shape"] = sperm.head_probs(net, d["hx"][test])
        if held_out_mhsma:
            out["p_mhsma"] = sperm.head_probs(net, d["mx"][m_folds == fold])[0]
    return variant, fold, out


def train(folder: Path, out: Path, variants: list[str]) -> None:
    """The segmenter and each head variant's 5 fold models and final model, in parallel; returned files stay
    under the device tool's 16 MiB per file."""
    import multiprocessing as mp

    import torch

    out.mkdir(parents=True, exist_ok=True)
    packed = _load(folder)
    folds, hs = packed["folds"], packed["hs"]
    results: dict = {"head": {v: {} for v in variants}}
    with ProcessPoolExecutor(max_workers=14, mp_context=mp.get_context("spawn")) as pool:
        seg = pool.submit(_seg_job, str(folder))
        jobs = [pool.submit(_head_job, str(folder), v, f) for v in variants for f in [*range(5), None]]
        for job in jobs:
            variant, fold, r = job.result()
            results["head"][variant][fold] = r
        summary = {v: float((_out_of_fold(fits, folds)[1].argmax(1) == hs).mean())
                   for v, fits in results["head"].items()}
        print("HuSHeM 5-fold CV shape accuracy per variant:", json.dumps(summary), flush=True)
        for variant in variants:
            torch.save(results["head"][variant], out / f"sperm_head_{variant}.pt")
        torch.save(seg.result(), out / "sperm_seg.pt")
        print(f"sperm-seg trained in {seg.result()['seconds']:.0f} s", flush=True)


def train_heads(folder: Path, out: Path, variants: list[str], device: str = "cuda") -> None:
    """Head variants only, each fold model also without its MHSMA-train fold: HuSHeM 5-fold shape accuracy and
    MHSMA-train 5-fold normal/abnormal accuracy per variant (the official MHSMA valid split is not read).
    On the CPU two models train at a time, one thread each."""
    import multiprocessing as mp

    import torch

    from core.tasks import sperm

    out.mkdir(parents=True, exist_ok=True)
    packed = _load(folder)
    folds, hs, mn = packed["folds"], packed["hs"], packed["mn"]
    m_folds = sperm.mhsma_folds(len(mn))
    results: dict = {v: {} for v in variants}
    with ProcessPoolExecutor(max_workers=15 if device == "cuda" else 2, mp_context=mp.get_context("spawn")) as pool:
        jobs = [pool.submit(_head_job, str(folder), v, f, True, device) for v in variants for f in [*range(5), None]]
        for job in jobs:  # in submission order: each variant is reported once its 6 models are done
            variant, fold, r = job.result()
            fits = results[variant]
            fits[fold] = r
            if len(fits) < 6:
                continue
            p_mhsma = np.zeros((len(mn), 2))
            for f in range(5):
                p_mhsma[m_folds == f] = fits[f]["p_mhsma"]
            row = {"variant": variant, "hushem_shape_cv": float((_out_of_fold(fits, folds)[1].argmax(1) == hs).mean()),
                   "mhsma_train_normal_cv": float((p_mhsma.argmax(1) == mn).mean())}
            print(json.dumps(row), flush=True)
            torch.save(fits | {"p_mhsma_oof": p_mhsma}, out / f"sperm_head_{variant}.pt")


def _out_of_fold(fits: dict, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each HuSHeM head's P(normal) and P(shape) from the fold model that did not train on it."""
    oof_n, oof_s = np.zeros((len(folds), 2)), np.zeros((len(folds), 4))
    for f in range(5):
        oof_n[folds == f], oof_s[folds == f] = fits[f]["p_normal"], fits[f]["p_shape"]
    return oof_n, oof_s


def finish(results: Path, variant: str) -> None:
    import torch

    from core import WEIGHTS_DIR
    from core.tasks import sperm

    seg_fit = torch.load(results / "sperm_seg.pt", weights_only=False)
    seg = sperm.build_seg_net()
    seg.load_state_dict(seg_fit["state"])
    sperm._train_seg(DATA / "sperm_parsing_v2", seg_fit["recipe"], 0, WEIGHTS_DIR / sperm.SEG, "cuda",
                     trained=seg.eval())
    recipe = HEAD_VARIANTS[variant]
    fits = torch.load(results / f"sperm_head_{variant}.pt", weights_only=False)
    oof_n, oof_s = _out_of_fold(fits, _load(Path(".gpu"))["folds"])
    head = sperm.build_head_net(recipe["width"])
    head.load_state_dict(fits[None]["state"])
    sperm._train_head(DATA, recipe, 0, WEIGHTS_DIR / sperm.HEAD, "cuda", trained=(oof_n, oof_s, head.eval()))
    for model_id in (sperm.SEG, sperm.HEAD):
        _note_transport(WEIGHTS_DIR / model_id)


def _note_transport(folder: Path) -> None:
    import tomllib

    from core.registry import write_card

    card = tomllib.loads((folder / "card.toml").read_text())
    card["recipe"]["trained_with"] = ("scripts/gpu_train.py on an NVIDIA H100 (the fitting functions of the train "
                                      "command; segmentation fields carried as JPEG q95 of the prepared 640 px PNGs)")
    write_card(folder, card)


# (input px, load px, encoder epochs) compared by leave-one-embryo-out; s112_e60 was timelapse-stage 2.0's recipe.
TIMELAPSE_VARIANTS = {"s112_e60": (112, 140, 60), "s160_e60": (160, 200, 60), "s112_e150": (112, 140, 150),
                      "s160_e150": (160, 200, 150)}
LOEO_EMBRYOS = ("AB028-6", "AA83-7", "AAL839-6")


def pack_timelapse(out: Path) -> None:
    """The Gomez sequences and crops as they are, and the Hung Vuong images timelapse-stage trains on (day 3 and
    good day 5), under out/data in the ../shared/data layout."""
    import shutil

    import pandas as pd

    src = DATA.parent
    for name in ("gomez2022", "gomez2022_blastocyst_crops"):
        shutil.copytree(src / "timelapse" / name, out / "data" / "timelapse" / name, dirs_exist_ok=True)
    hv, dest = src / "embryo" / "hungvuong", out / "data" / "embryo" / "hungvuong"
    (dest / "train").mkdir(parents=True, exist_ok=True)
    shutil.copy(hv / "train.csv", dest / "train.csv")
    labels = pd.read_csv(hv / "train.csv")
    for image, cls in zip(labels["Image"], labels["Class"]):
        if image.startswith("D3_") or (image.startswith("D5_") and cls == 1):
            shutil.copy(hv / "train" / image, dest / "train" / image)


def _timelapse_job(variant: str, embryo: str | None, out: str, seed: int = 0) -> str:
    """One leave-one-embryo-out fold, or (embryo None) the final model with its card and held-out evaluation."""
    out = str(Path(out) / f"seed{seed}") if seed else out
    os.environ["REPRO_WEIGHTS_DIR"] = str(Path(out) / variant)
    import torch

    from core.tasks import timelapse

    torch.set_num_threads(1)
    timelapse.SIZE, timelapse.LOAD, epochs = TIMELAPSE_VARIANTS[variant]
    data = Path("../shared/data")
    folder = Path(out) / variant / timelapse.MODEL_ID
    if embryo is None:
        timelapse.train(timelapse.MODEL_ID, data, "cuda", epochs, seed)
    else:
        result = timelapse.leave_one_out(data, embryo, epochs, seed, "cuda", temporals=("none",))
        timelapse.save_fold(folder / "loeo", embryo, result)
    return f"{variant} {embryo or 'final'} seed {seed} done"


def train_timelapse(out: Path, variants: list[str], seeds: list[int], finals: bool = True) -> None:
    """The leave-one-embryo-out folds (and, if `finals`, the final model) of each recipe with each seed, all in
    out/timelapse.tar; several seeds show how far the figures move with the seed alone."""
    import multiprocessing as mp
    import shutil
    import tarfile

    from core.tasks import timelapse

    ends = [*LOEO_EMBRYOS, None] if finals else list(LOEO_EMBRYOS)
    # one job per process: core reads REPRO_WEIGHTS_DIR once, at import
    with ProcessPoolExecutor(max_workers=14, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        jobs = [pool.submit(_timelapse_job, v, e, str(out), s) for v in variants for s in seeds for e in ends]
        for job in jobs:
            print(job.result(), flush=True)
    with tarfile.open(out / "timelapse.tar", "w") as tar:
        for variant in variants:
            for seed in seeds:
                folder = (out / f"seed{seed}" if seed else out) / variant / timelapse.MODEL_ID
                for kind, row in timelapse.loeo_summary_to_card(folder).items():
                    print(f"{variant} seed {seed} LOEO {kind}", json.dumps(row), flush=True)
                tar.add(folder, arcname=f"{variant}/seed{seed}")
    for child in out.iterdir():
        if child.is_dir():
            shutil.rmtree(child)


# embryo-grade recipes (core.embryo_training.parse_recipe) compared on the inner split, several seeds each
EMBRYO_VARIANTS = {"base": "128x40", "edges15": "128x40e0.15", "edges30": "128x40e0.3", "edges30_e80": "128x80e0.3"}
EMBRYO_SEEDS = (0, 1, 2, 3)
EMBRYO_DATA = DATA.parent / "embryo" / "hungvuong"


def pack_embryo(out: Path) -> None:
    from core import embryo_training as et

    out.mkdir(parents=True, exist_ok=True)
    items = [it for it in et.collect(EMBRYO_DATA) if it.split == "train"]
    _, cache = et.cache_crops(items)
    meta = [{"name": it.name, "group": it.group, "source": it.source, "stage": it.stage, "quality": it.quality,
             "day": it.day, "conflicts": list(it.conflicts)} for it in items]
    np.savez_compressed(out / "embryo.npz", cache=cache, meta=json.dumps(meta))
    print(f"packed {len(items)} crops: {(out / 'embryo.npz').stat().st_size / 2**20:.1f} MiB")


def _embryo_items(folder: Path):
    from core.datasets import embryo as ds

    d = np.load(folder / "embryo.npz")
    items = [ds.Item(Path(m["name"]), m["name"], m["group"], m["source"], m["stage"], m["quality"], m["day"],
                     tuple(m["conflicts"])) for m in json.loads(str(d["meta"]))]
    return items, d["cache"]


def _embryo_job(folder: str, variant: str, seed: int, inner: bool, out: str):
    os.environ["KERAS_BACKEND"] = "torch"
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from core import embryo_training as et

    torch.set_num_threads(1)
    items, cache = _embryo_items(Path(folder))
    keras = et.setup_keras(seed)
    px, epochs, edge = et.parse_recipe(EMBRYO_VARIANTS[variant])
    t0 = time.perf_counter()
    if not inner:
        model = et.fit_grade(keras, items, cache, px, epochs, seed, edge)
        np.savez(Path(out) / f"embryo_{variant}_s{seed}.npz", *model.get_weights())  # 1.3 MB, no optimiser state
        return {"variant": variant, "seed": seed, "final": True, "seconds": time.perf_counter() - t0}
    scores, probs = et.fit_and_score_inner(keras, items, cache, px, epochs, seed, edge)[0]
    return {"variant": variant, "recipe": EMBRYO_VARIANTS[variant], "seed": seed, "seconds": time.perf_counter() - t0,
            **scores, "probs": {o: p.tolist() for o, p in probs.items()}}


def train_embryo(folder: Path, out: Path, variants: list[str]) -> None:
    """Every variant and seed on the inner split and on all training groups, in parallel; the inner rows (with
    their validation probabilities, for seed ensembles) go to embryo_inner.jsonl, the weights to embryo_<variant>.tar."""
    import multiprocessing as mp
    import tarfile

    out.mkdir(parents=True, exist_ok=True)
    models = out / "models"
    models.mkdir(exist_ok=True)  # one tar per variant keeps each returned file under the tool's 16 MiB
    with ProcessPoolExecutor(max_workers=15, mp_context=mp.get_context("spawn")) as pool:
        jobs = [pool.submit(_embryo_job, str(folder), v, s, inner, str(models))
                for v in variants for s in EMBRYO_SEEDS for inner in (True, False)]
        with open(out / "embryo_inner.jsonl", "w") as f:
            for job in jobs:
                row = job.result()
                print(json.dumps({k: v for k, v in row.items() if k != "probs"}), flush=True)
                if not row.get("final"):
                    f.write(json.dumps(row) + "\n")
    for variant in variants:
        with tarfile.open(out / f"embryo_{variant}.tar", "w") as tar:
            for f in sorted(models.glob(f"embryo_{variant}_s*")):
                tar.add(f, arcname=f.name)


def finish_embryo(results: Path, variant: str, seed: int) -> None:
    """The chosen model into weights/embryo-grade with its hashes and card, as `train embryo-grade` writes them."""
    import tarfile
    import tomllib

    from core import WEIGHTS_DIR
    from core import embryo_training as et
    from core.registry import write_card

    px, epochs, edge = et.parse_recipe(EMBRYO_VARIANTS[variant])
    assert (px, epochs, edge) == (et.INPUT, et.EPOCHS, et.EDGE_BAND_P), "set the chosen recipe in embryo_training"
    with tarfile.open(results / f"embryo_{variant}.tar") as tar:
        tar.extract(f"embryo_{variant}_s{seed}.npz", results / "unpacked", filter="data")
    keras = et.setup_keras(seed)
    model = et.build_model(keras, px)
    weights = np.load(results / "unpacked" / f"embryo_{variant}_s{seed}.npz")
    model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
    folder = WEIGHTS_DIR / et.GRADE_ID
    path = folder / "model.keras"
    model.save(path)
    items = [it for it in et.collect(EMBRYO_DATA) if it.split == "train"]
    images = [et.ds.load_rgb(it.path) for it in items]
    conflicts = sorted({f"{it.group} ({'/'.join(it.conflicts)})" for it in items if it.conflicts})
    et.write_train_hashes(folder, [it.name for it in items], images)
    et.write_card(folder, path, EMBRYO_DATA, epochs, seed, items, conflicts, model.count_params(), device="cuda")
    card = tomllib.loads((folder / "card.toml").read_text())
    card["recipe"] |= {"keras_backend": "torch", "trained_with": "scripts/gpu_train.py embryo on an NVIDIA H100: "
                       "fit_grade on the cached training crops, Keras 3 on torch; the weights saved here as .keras"}
    write_card(folder, card)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "pack":
        pack(Path(sys.argv[2]))
    elif cmd == "train":
        train(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:] or list(HEAD_VARIANTS))
    elif cmd == "heads":
        train_heads(Path(sys.argv[2]), Path(sys.argv[3]), [a for a in sys.argv[4:] if a != "--cpu"],
                    "cpu" if "--cpu" in sys.argv else "cuda")
    elif cmd == "pack-timelapse":
        pack_timelapse(Path(sys.argv[2]))
    elif cmd == "timelapse":  # OUT [--seeds 0,1,2] [--loeo-only] [VARIANT...]
        args = sys.argv[3:]
        seeds = [int(x) for x in args[args.index("--seeds") + 1].split(",")] if "--seeds" in args else [0]
        chosen = [a for a in args if a in TIMELAPSE_VARIANTS] or list(TIMELAPSE_VARIANTS)
        train_timelapse(Path(sys.argv[2]), chosen, seeds, finals="--loeo-only" not in args)
    elif cmd == "finish":
        finish(Path(sys.argv[2]), sys.argv[3])
    elif cmd == "pack-embryo":
        pack_embryo(Path(sys.argv[2]))
    elif cmd == "embryo":
        train_embryo(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:] or list(EMBRYO_VARIANTS))
    elif cmd == "finish-embryo":
        finish_embryo(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))

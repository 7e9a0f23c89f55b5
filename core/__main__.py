"""Command line: python -m core list | train | evaluate | predict | bench  (see README.md)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import morphometry


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_list(args) -> int:
    from . import registry

    rows = []
    for c in registry.cards():
        rows.append({"id": c.id, "title": c.title, "task": c.task, "framework": c.framework,
                     "version": c.version, "file": c.file, "outputs": c.classes})
    if args.json:
        args.result = rows
    else:
        for r in rows:
            outs = "; ".join(f"{o}: {'/'.join(labels)}" for o, labels in r["outputs"].items())
            print(f"{r['id']:<16} {r['framework']:<12} v{r['version']:<8} {r['title']}  [{outs}]")
        if not rows:
            print("no models in weights/")
    return 0


def cmd_train(args) -> int:
    from .device import resolve
    from .tasks import task_module

    if not Path(args.data).exists():  # "error: 2" or "need at least one array to stack" otherwise
        log(f"error: {args.data} does not exist")
        return 2
    path = task_module(args.model).train(args.model, Path(args.data), device=resolve(args.device),
                                         epochs=args.epochs, seed=args.seed)
    log(f"wrote {path}")
    return 0


def cmd_evaluate(args) -> int:
    from .device import resolve
    from .tasks import task_module

    path = Path(args.path)
    if not path.exists():
        log(f"error: {path} does not exist")
        return 2
    name = args.name or path.resolve().name
    if args.name:
        from . import registry
        from .evaluation import cited_evaluations, documents_card

        if args.name in cited_evaluations(registry.card(args.model)) and not documents_card(path):
            log(f"error: --name {args.name} is the evaluation {args.model}'s card cites: give this set another name")
            return 2
    if path.is_file():  # a labelled zip or CSV, or a zipped native layout: as the Metrics page reads uploads
        from .evaluation import evaluate_source

        if args.split:
            log("error: --split applies to a folder of a native layout, not to a zip or CSV")
            return 2
        result = evaluate_source(args.model, path, name=args.name or path.stem, device=resolve(args.device))
    else:
        try:
            result = task_module(args.model).evaluate(args.model, path, name=name, split=args.split,
                                                      device=resolve(args.device))
        except (ValueError, FileNotFoundError) as native_error:  # not a native layout: class folders or a CSV?
            from .evaluation import LabelledSetError, evaluate_labelled

            if args.split:
                raise
            try:
                result = evaluate_labelled(args.model, path, name=name, device=resolve(args.device))
            except LabelledSetError:
                raise native_error from None
    if args.json:
        args.result = result
    else:
        for output, m in result["metrics"].items():
            keys = [k for k in ("accuracy", "balanced_accuracy", "f1", "roc_auc", "mask_map50", "map50",
                                "mean_dice", "count_mae") if m.get(k) is not None]
            log(f"{result['model']} on {result['dataset']} (n={result['n']}) {output}: "
                + ", ".join(f"{k}={m[k]:.3f}" for k in keys))
    return 0


def cmd_predict(args) -> int:
    from .batch import predict_paths

    if args.out:  # said before any scoring, not after it (an OSError's bare errno "2" was the message)
        out = Path(args.out)
        if out.suffix.lower() not in (".csv", ".xlsx"):
            raise ValueError(f"{out}: --out takes a .csv or .xlsx file name")
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: no such folder for --out")
    options = {}
    if args.um_per_px is not None or args.acrosome:
        if args.model != "sperm-seg":
            raise ValueError("--um-per-px and --acrosome measure sperm fields: they go with sperm-seg")
        um = morphometry.DEFAULT_UM_PER_PX if args.um_per_px is None else args.um_per_px
        low, high = morphometry.UM_PER_PX_RANGE
        if not low <= um <= high:  # also NaN
            raise ValueError(f"--um-per-px {args.um_per_px}: a calibration is between {low} and {high} µm per pixel")
        options = {"um_per_px": um, "acrosome_criterion": args.acrosome}
    if args.minutes_per_frame is not None or args.first_frame_hpi is not None:
        if args.model != "timelapse-stage":
            raise ValueError("--minutes-per-frame and --first-frame-hpi time recordings: they go with timelapse-stage")
        if args.minutes_per_frame is not None:
            if not 0.5 <= args.minutes_per_frame <= 240:  # as the page allows; also NaN
                raise ValueError(f"--minutes-per-frame {args.minutes_per_frame}: between 0.5 and 240 minutes")
            options["minutes_per_frame"] = args.minutes_per_frame
        if args.first_frame_hpi is not None:
            if not 0 <= args.first_frame_hpi <= 200:
                raise ValueError(f"--first-frame-hpi {args.first_frame_hpi}: between 0 and 200 hours")
            options["first_frame_hpi"] = args.first_frame_hpi
    if args.culture_day is not None:
        if not args.model.startswith("embryo-"):
            raise ValueError("--culture-day grades embryos: it goes with embryo-grade or embryo-dish")
        options["day"] = args.culture_day
    return predict_paths(args.model, [Path(p) for p in args.paths], out=args.out, device=args.device, log=log,
                         emit=lambda data: setattr(args, "stdout_data", data), options=options)


def cmd_bench(args) -> int:
    from . import bench

    result = bench.run(args.models or None, args.device, references=not args.no_references, log=log)
    if args.json:
        args.result = result
    else:
        for group in ("references", "models"):
            for name, s in result[group].items():
                vs = " ".join(f"{k}×{v}" for k, v in s.get("vs", {}).items())
                print(f"{name:<18} load {s['load_s']:.2f}s  p50 {s['p50_ms']:.1f}ms  p95 {s['p95_ms']:.1f}ms  "
                      f"{s['throughput_ips']:.1f} img/s @batch {s['batch']}  {vs}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("list", help="registered models (reads cards only)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("train", help="train a model and write weights/<id>/ with its card")
    s.add_argument("model")
    s.add_argument("--data", required=True)
    s.add_argument("--device", default=None, choices=["cpu", "cuda"])
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_train)
    s = sub.add_parser("evaluate", help="evaluate on a labelled dataset in a native layout")
    s.add_argument("model")
    s.add_argument("path")
    s.add_argument("--name", default=None)
    s.add_argument("--split", default=None)
    s.add_argument("--device", default=None, choices=["cpu", "cuda"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("predict", help="predict images, folders or zips (timelapse-stage: recordings); writes a CSV")
    s.add_argument("model")
    s.add_argument("paths", nargs="+")
    s.add_argument("--out", default=None)
    s.add_argument("--device", default=None, choices=["cpu", "cuda"])
    s.add_argument("--um-per-px", type=float, default=None,
                   help=f"sperm-seg: your microscope's calibration (default {morphometry.DEFAULT_UM_PER_PX}, an estimate "
                        "for Sperm Parsing v2 fields)")
    s.add_argument("--acrosome", action="store_true", help="sperm-seg: use the acrosome criterion")
    s.add_argument("--culture-day", type=int, choices=[3, 5], default=None,
                   help="embryo-grade, embryo-dish: the culture day (5: day 5 or later), as on the Embryo page")
    s.add_argument("--minutes-per-frame", type=float, default=None,
                   help="timelapse-stage: minutes between acquisitions of a recording without a time table (default "
                        "15)")
    s.add_argument("--first-frame-hpi", type=float, default=None,
                   help="timelapse-stage: hours after insemination of a recording's first frame (without a time table)")
    s.set_defaults(func=cmd_predict)
    s = sub.add_parser("bench", help="load time, latency and throughput per model, against reference backbones")
    s.add_argument("models", nargs="*")
    s.add_argument("--device", default=None, choices=["cpu", "cuda"])
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-references", action="store_true", help="skip the ResNet101/InceptionV3 references")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    args.result = args.stdout_data = None
    # stdout must hold exactly one JSON object, or predict's CSV: everything else printed (Ultralytics writes its
    # warnings to stdout) goes to stderr
    json_out = getattr(args, "json", False)
    quiet = json_out or (args.func is cmd_predict and not args.out)
    saved = os.dup(1) if quiet else None
    if quiet:
        sys.stdout.flush()
        os.dup2(2, 1)
    try:
        code = args.func(args)
    except (KeyError, FileNotFoundError, NotImplementedError, ValueError) as exc:
        log(f"error: {exc.args[0] if exc.args else exc}")
        code = 2
    except OSError as exc:  # e.g. a file that cannot be written: its name and the reason, not a bare errno
        log(f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        code = 2
    except Exception as exc:  # noqa: BLE001  an unforeseen failure: one plain line; the traceback on request
        if os.environ.get("CORE_DEBUG"):
            raise
        log(f"error: {type(exc).__name__}: {exc} (set CORE_DEBUG=1 to see where)")
        code = 1
    finally:
        if quiet:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    if json_out and args.result is not None:
        print(json.dumps(strict_json(args.result), default=str, allow_nan=False), flush=True)
    if args.stdout_data is not None:
        sys.stdout.write(args.stdout_data.decode())
        sys.stdout.flush()
    return code


def strict_json(value):
    """NaN and infinities as null: json.dumps writes them as NaN, which strict JSON parsers reject (e.g. mAP on a
    set with no true heads)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy scalar
        return strict_json(value.item())
    return value


if __name__ == "__main__":
    sys.exit(main())

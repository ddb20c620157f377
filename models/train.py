"""Train, export, quantise and evaluate the walkout person + keypoint model in one command.

    .venv-train/bin/python -m models.train --out runs/pose [--epochs N] [--imgsz 416] [--images N] [--resume]

Steps (``--steps`` picks a subset, in this order):

1. ``data``      simulator frames -> YOLO pose dataset under ``OUT/data`` (skipped when the same plan exists);
2. ``train``     ``YOLO("yolov8n-pose.yaml")`` from scratch (no pretrained weights), or fine-tuned from an
                 exported model of ours (``--init-onnx``, see ``models/from_onnx.py``), offline, checkpoint every
                 epoch under ``OUT/train/weights`` (``--resume`` continues from ``last.pt``);
3. ``export``    ``best.pt`` -> ``OUT/person_pose.onnx`` (dynamic batch, fixed input size, onnxslim);
4. ``quantize``  static INT8 QDQ -> ``OUT/person_pose_int8.onnx`` (see ``models/quantize.py``; Percentile
                 calibration by default: on the 2026-11-29 model it lost 0.8 points of mAP50, MinMax 1.1);
5. ``evaluate``  both ONNX files through ``edge/detector.py`` on the held-out ``test`` split ->
                 ``OUT/metrics.json`` (see ``models/evaluate.py``);
6. ``card``      copies both ONNX files into ``models/`` and writes ``models/README.md``.

Runs offline: ``YOLO_OFFLINE=1`` and a private ``YOLO_CONFIG_DIR`` holding a local TTF as ``Arial.ttf`` (else
ultralytics fetches one), ``plots=False, amp=False``, ``workers=0`` unless ``--workers`` says otherwise.  Uses
GPU 0 when CUDA is available, else the CPU.  Ultralytics is imported only inside the train and export steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from models.dataset import Plan, generate, image_files, plan_matches
from models.quantize import CALIBRATION_METHODS

log = logging.getLogger("models.train")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
STEPS = ("data", "train", "export", "quantize", "evaluate", "card")
FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)


def offline_env(out: Path) -> Path:
    """Point ultralytics at a private settings folder with a local font, and forbid downloads."""
    cfg = out / "ultralytics_config"
    cfg.mkdir(parents=True, exist_ok=True)
    arial = cfg / "Arial.ttf"
    if not arial.exists():
        fonts = [Path(p) for p in FONT_CANDIDATES if Path(p).is_file()]
        fonts += sorted(Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() else []
        if not fonts:  # ultralytics needs matplotlib, which ships DejaVu
            import matplotlib

            mpl_fonts = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
            fonts = sorted(mpl_fonts.glob("DejaVuSans*.ttf"))
        if not fonts:
            import cv2  # its wheel ships Qt fonts in some builds
            fonts = sorted(Path(cv2.__file__).parent.rglob("*.ttf"))
        if not fonts:
            raise SystemExit("no TTF font found on this machine; put any .ttf at " + str(arial))
        shutil.copyfile(fonts[0], arial)
    for name in ("Arial.Unicode.ttf",):
        if not (cfg / name).exists():
            shutil.copyfile(arial, cfg / name)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    os.environ.setdefault("YOLO_VERBOSE", "True")
    return cfg


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------- steps
def step_data(args, out: Path) -> Path:
    plan = Plan(images=args.images, val_images=args.val_images, test_images=args.test_images,
                source=args.source, seed0=args.seed0, frames_per_seed=args.frames_per_seed)
    root = out / "data"
    if args.resume and (root / "data.yaml").is_file():
        log.info("resuming: keeping the dataset in %s", root)
    elif plan_matches(root, plan):
        log.info("dataset %s is complete for this plan; keeping it", root)
    else:
        t0 = time.perf_counter()
        manifest = generate(root, plan)
        log.info("dataset written in %.0f s: %s", time.perf_counter() - t0, json.dumps(manifest["splits"]))
    return root / "data.yaml"


def point_data_yaml(root: Path) -> Path:
    """``root/data.yaml`` with its ``path`` at ``root`` as it is now (a dataset packed by ``models.pack`` and
    unpacked on a training machine still names the folder it was made in)."""
    import yaml

    path = root / "data.yaml"
    data = yaml.safe_load(path.read_text())
    if data.get("path") != str(root.resolve()):
        data["path"] = str(root.resolve())
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_results_without_polars() -> None:
    """Where ``polars`` is not installed (a training machine with its own torch and no package index, see
    ``models.pack``), let ultralytics read its ``results.csv`` with the csv module: it reads it into every
    checkpoint it saves, and imports polars only for that during training."""
    try:
        import polars  # noqa: F401
        return
    except ImportError:
        pass
    import csv

    from ultralytics.engine.trainer import BaseTrainer

    def read_results_csv(self) -> dict:
        try:
            rows = list(csv.DictReader(self.csv.read_text().splitlines()))
        except (OSError, csv.Error):
            return {}
        return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}

    BaseTrainer.read_results_csv = read_results_csv
    log.info("polars is not installed: ultralytics' results.csv is read with the csv module")


def step_train(args, out: Path) -> Path:
    from ultralytics import YOLO

    read_results_without_polars()

    weights = out / "train" / "weights"
    last = weights / "last.pt"
    device = pick_device(args.device)
    if args.resume:
        if not last.is_file():
            raise SystemExit(f"--resume: no checkpoint at {last}")
        log.info("resuming from %s on %s", last, device)
        YOLO(str(last)).train(resume=True, device=device, workers=args.workers)
    else:
        (out / "train_command.txt").write_text(args.command_line + "\n")
        pretrained: bool | str = False
        if args.init_onnx:
            from models.from_onnx import write_checkpoint

            frames = image_files(out / "data" / "images" / "train")
            frames = frames[:: max(1, len(frames) // args.calib)][: args.calib]
            pretrained = str(write_checkpoint(args.init_onnx, frames, out / "init_from_onnx.pt", args.imgsz))
            log.info("fine-tuning from %s (unfused into %s)", args.init_onnx, pretrained)
        model = YOLO("yolov8n-pose.yaml")
        model.train(
            data=str(point_data_yaml(out / "data")), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
            device=device, workers=args.workers, amp=False, plots=False, pretrained=pretrained,
            project=str(out.resolve()), name="train", exist_ok=True, save_period=args.save_period, seed=0,
            deterministic=False, patience=args.patience, cache=args.cache, fliplr=0.5, flipud=0.0, degrees=0.0,
            scale=0.3, mosaic=1.0,
            close_mosaic=args.close_mosaic, time=args.time_hours, warmup_epochs=args.warmup_epochs,
            # from scratch the biases warm up from a high rate (ultralytics' default 0.1); fine-tuning, from 0
            warmup_bias_lr=0.0 if args.init_onnx else 0.1,
            verbose=True,
        )
    best = weights / "best.pt"
    return best if best.is_file() else last


def step_export(args, out: Path) -> Path:
    from ultralytics import YOLO

    from models.quantize import fix_input_size

    weights = out / "train" / "weights"
    src = args.weights or (weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt")
    model = YOLO(str(src))
    path = Path(model.export(format="onnx", imgsz=args.imgsz, dynamic=True, simplify=True, opset=args.opset,
                             batch=1, device="cpu"))
    dst = out / "person_pose.onnx"
    fix_input_size(path, dst, args.imgsz)
    log.info("exported %s -> %s (%.1f MB)", src, dst, dst.stat().st_size / 1e6)
    return dst


def step_quantize(args, out: Path) -> Path:
    from models.quantize import quantize

    dst = out / "person_pose_int8.onnx"
    images = image_files(out / "data" / "images" / "train")
    quantize(out / "person_pose.onnx", dst, images, n_calib=args.calib, method=args.calib_method)
    return dst


def step_evaluate(args, out: Path) -> dict:
    from models.evaluate import evaluate_models

    metrics = evaluate_models({"fp32": out / "person_pose.onnx", "int8": out / "person_pose_int8.onnx"},
                              out / "data", split="test")
    metrics["training"] = training_summary(out)
    metrics["calibration_frames"] = args.calib
    cmd = out / "train_command.txt"  # the command that started training (not a later --resume or --steps)
    metrics["command"] = cmd.read_text().strip() if cmd.is_file() else args.command_line
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def step_card(args, out: Path) -> None:
    from models.evaluate import history_entry, write_card

    metrics = json.loads((out / "metrics.json").read_text())
    dst = args.models_dir
    for name in ("person_pose.onnx", "person_pose_int8.onnx"):
        shutil.copyfile(out / name, dst / name)
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    hist_path = dst / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.is_file() else []
    entry = history_entry(metrics, manifest, time.strftime("%Y-%m-%d"))
    same = ("command", "date")  # the card step run again for the same run replaces its row
    history = [h for h in history if any(h.get(k) != entry[k] for k in same)] + [entry]
    hist_path.write_text(json.dumps(history, indent=1) + "\n")
    write_card(dst / "README.md", metrics, manifest, history)
    log.info("model card written to %s", dst / "README.md")


def training_summary(out: Path) -> dict:
    """Epochs done and the last row of ultralytics' results.csv."""
    csv = out / "train" / "results.csv"
    args_yaml = out / "train" / "args.yaml"
    summary: dict = {}
    if csv.is_file():
        lines = [line for line in csv.read_text().splitlines() if line.strip()]
        head = [h.strip() for h in lines[0].split(",")]
        last = [v.strip() for v in lines[-1].split(",")]
        summary["epochs_done"] = len(lines) - 1
        summary["last"] = dict(zip(head, last))
    if args_yaml.is_file():
        import yaml

        a = yaml.safe_load(args_yaml.read_text())
        keys = ("epochs", "imgsz", "batch", "device", "workers", "model", "optimizer", "lr0", "mosaic", "fliplr",
                "close_mosaic", "time")
        summary["args"] = {k: a.get(k) for k in keys}
    return summary


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/pose"), help="work folder (dataset, runs, ONNX)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--imgsz", type=int, default=416, choices=(320, 416, 480, 512, 640))
    p.add_argument("--images", type=int, default=3000, help="training images")
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--test-images", type=int, default=400, help="held-out images (hard preset, unseen seeds)")
    p.add_argument("--source", choices=("sim", "toy"), default="sim")
    p.add_argument("--seed0", type=int, default=1)
    p.add_argument("--frames-per-seed", type=int, default=40, help="frames taken from one simulated world")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--time-hours", type=float, default=None,
                   help="train for this long instead of --epochs (ultralytics re-plans the epochs after the first)")
    p.add_argument("--warmup-epochs", type=float, default=3.0)
    p.add_argument("--init-onnx", type=Path, default=None,
                   help="fine-tune from this exported model (e.g. models/person_pose.onnx) instead of from scratch; "
                        "see models/from_onnx.py")
    p.add_argument("--patience", type=int, default=100)
    p.add_argument("--save-period", type=int, default=1,
                   help="keep a checkpoint of every N-th epoch besides last.pt and best.pt (-1: none)")
    p.add_argument("--workers", type=int, default=0,
                   help="data loader processes (0: in the training process, as on a 2-core machine)")
    p.add_argument("--close-mosaic", type=int, default=10)
    p.add_argument("--cache", choices=("ram", "disk", "false"), default="ram")
    p.add_argument("--device", default="auto", help="auto (GPU 0 if CUDA is available, else cpu), cpu, 0, ...")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--calib", type=int, default=100, help="calibration frames for INT8")
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="Percentile",
                   help="how INT8 calibration sets activation ranges (ONNX Runtime's methods)")
    p.add_argument("--weights", type=Path, default=None,
                   help="checkpoint to export (default: OUT/train/weights/best.pt, else last.pt)")
    p.add_argument("--models-dir", type=Path, default=MODELS,
                   help="where the card step puts the ONNX files and README.md (default: this repo's models/)")
    p.add_argument("--resume", action="store_true", help="continue training from OUT/train/weights/last.pt")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    args = p.parse_args(argv)
    args.cache = False if args.cache == "false" else args.cache
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        p.error(f"unknown steps {bad}; choose from {STEPS}")
    args.command_line = " ".join(["python -m models.train", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                  else argv)])
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    offline_env(out)
    t0 = time.perf_counter()
    for step in STEPS:
        if step not in args.steps:
            continue
        t = time.perf_counter()
        log.info("step %s ...", step)
        result = globals()[f"step_{step}"](args, out)
        log.info("step %s done in %.0f s%s", step, time.perf_counter() - t,
                 f": {result}" if isinstance(result, Path) else "")
    log.info("all done in %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

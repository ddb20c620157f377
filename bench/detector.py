"""Detector speed: FP32 vs INT8, and our letterbox + decode + NMS overhead against the bare forward pass.

    python -m bench.detector [--fp32 models/person_pose.onnx] [--int8 models/person_pose_int8.onnx]
                             [--images DIR] [--runs 20] [--json]

1. Model forward (``session.run`` on a prepared blob), ms per frame for 1 and 2 intra-op threads and batches of
   1 and 4, FP32 and INT8 in the same process, runs interleaved (A, B, A, B ...), median; ratio FP32 / INT8.
2. Whole detector (``Detector.detect``: letterbox, forward, decode, NMS, mapping back) against the bare
   ``session.run`` of the same model on the same frames: ms per frame; our letterbox and decode stages timed
   on their own; the ratio (bare + ours) / bare, and the directly timed ratio detector / bare.
3. NMS: OpenCV's ``NMSBoxesBatched`` (what the detector runs) against our numpy reference.

Frames: JPEG/PNG files of ``--images`` (default: the held-out split of ``runs/pose/data`` if present), else
frames rendered by the simulator (or the toy renderer when the simulator is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge.detector import Detector

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warm: int = 2) -> dict[str, float]:
    """Median ms of each callable, run in turns so load changes on the machine hit them alike."""
    for f in fns.values():
        for _ in range(warm):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def load_frames(images: Path | None, n: int = 8) -> tuple[list[np.ndarray], str]:
    """Up to ``n`` BGR frames and where they came from."""
    if images is None:
        default = ROOT / "runs" / "pose" / "data" / "images" / "test"
        images = default if default.is_dir() else None
    if images is not None:
        paths = sorted([*images.glob("*.jpg"), *images.glob("*.png")])[:n]
        frames = [f for f in (cv2.imread(str(p)) for p in paths) if f is not None]
        if frames:
            return frames, str(images)
    from models.dataset import Plan, sim_source, toy_source

    for name, src in (("simulator", sim_source), ("toy renderer", toy_source)):
        try:
            it = src(20_000, "hard", Plan())
            return [next(it).image for _ in range(n)], name
        except (NotImplementedError, ImportError):
            continue
    raise SystemExit("no frames: pass --images DIR")


def measure(fp32: Path | None, int8: Path | None, runs: int = 20, threads: tuple[int, ...] = (1, 2),
            batches: tuple[int, ...] = (1, 4)) -> dict:
    """Forward-pass latency of the FP32 and INT8 models (ms per frame) and their ratio."""
    rows = []
    for t in threads:
        dets = {k: Detector(p, intra_op_threads=t, allow_spinning=False)
                for k, p in (("fp32", fp32), ("int8", int8)) if p is not None}
        for b in batches:
            h, w = next(iter(dets.values())).input_hw
            blob = np.random.default_rng(0).random((b, 3, h, w), dtype=np.float32)
            ms = interleaved({k: (lambda d=d, x=blob: d.forward(x)) for k, d in dets.items()}, runs)
            row = {"threads": t, "batch": b, **{f"{k}_ms": v / b for k, v in ms.items()}}
            if "fp32_ms" in row and "int8_ms" in row:
                row["speedup"] = row["fp32_ms"] / row["int8_ms"]
            rows.append(row)
    return {"rows": rows, "runs": runs, "onnxruntime": ort.__version__, "machine": machine(),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def overhead(model: Path, frames: list[np.ndarray], runs: int, threads: int = 2,
             batches: tuple[int, ...] = (1, 4)) -> list[dict]:
    """The whole detector against the bare ``session.run`` of the same model on the same frames.

    Both are timed (interleaved), and so are our two stages on their own -- letterbox + blob
    (``preprocess``) and decode + NMS + mapping back (``postprocess``) -- whose sum is the overhead figure
    that does not depend on subtracting two noisy totals."""
    det = Detector(model, intra_op_threads=threads)
    rows = []
    for b in batches:
        batch = [frames[i % len(frames)] for i in range(b)]
        blob, lbs = det.preprocess(batch)
        raw = det.forward(blob)
        ms = interleaved({"bare": lambda x=blob: det.forward(x), "detector": lambda f=batch: det.detect(f)},
                         runs)
        pre = _median_ms(lambda f=batch: det.preprocess(f), runs * 3)
        post = _median_ms(lambda r=raw, lb=lbs: det.postprocess(r, lb), runs * 3)
        n_det = sum(len(d) for d in det.postprocess(raw, lbs))
        rows.append({"model": model.name, "threads": threads, "batch": b, "bare_ms": ms["bare"] / b,
                     "detector_ms": ms["detector"] / b, "pre_ms": pre / b, "post_ms": post / b,
                     "overhead_ms": (pre + post) / b, "ratio": (ms["bare"] + pre + post) / ms["bare"],
                     "ratio_direct": ms["detector"] / ms["bare"], "detections": n_det})
    return rows


def nms_peer(runs: int, n: int = 300, seed: int = 0) -> dict:
    """The detector's NMS (OpenCV's ``cv2.dnn.NMSBoxesBatched``) against our numpy reference on ``n``
    candidate boxes clustered like a detector's raw output (several anchors per person); the kept sets are
    compared."""
    from edge.detector import batched_nms_numpy

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 400, (20, 2))
    pick = rng.integers(0, 20, n)
    xy = centres[pick] + rng.normal(0, 3, (n, 2))
    wh = np.array([30.0, 80.0]) + rng.normal(0, 4, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)
    scores = rng.uniform(0.25, 1.0, n).astype(np.float32)
    classes = np.zeros(n, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)

    def ocv():
        return cv2.dnn.NMSBoxesBatched(xywh, scores, classes, 0.0, 0.45)

    ours = batched_nms_numpy(boxes, scores, classes, 0.45, max_det=1000)
    same = ours.tolist() == np.asarray(ocv()).ravel().tolist()
    ms = interleaved({"numpy": lambda: batched_nms_numpy(boxes, scores, classes, 0.45), "opencv": ocv},
                     runs * 10)
    return {"candidates": n, "kept": len(ours), "numpy_ms": ms["numpy"], "opencv_ms": ms["opencv"],
            "same_boxes": same}


def machine() -> str:
    """The CPU, its core count and its widest vector instructions (INT8's speed-up hangs on them: 2-2.5x with
    AVX-512 VNNI, about 1.4x with AVX2 alone, measured here on two hosts of one machine type)."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in (platform.processor(), platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = next((name for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
                                        ("avx2", "AVX2")) if flag in flags), None)
    return f"{cpu}, {os.cpu_count()} logical cores" + (f", {isa}" if isa else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.detector", description=__doc__.split("\n\n")[0])
    p.add_argument("--fp32", type=Path, default=ROOT / "models" / "person_pose.onnx")
    p.add_argument("--int8", type=Path, default=ROOT / "models" / "person_pose_int8.onnx")
    p.add_argument("--images", type=Path, default=None, help="folder of frames (JPEG/PNG)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = p.parse_args(argv)
    for f in (args.fp32, args.int8):
        if not f.is_file():
            p.error(f"model {f} not found")
    frames, src = load_frames(args.images)
    lat = measure(args.fp32, args.int8, args.runs)
    over = overhead(args.fp32, frames, args.runs) + overhead(args.int8, frames, args.runs)
    nms_row = nms_peer(args.runs)
    result = {"forward": lat, "pipeline": over, "nms": nms_row, "frames": src}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"Forward pass, ms per frame (median of {args.runs}, interleaved; {lat['machine']}; "
          f"onnxruntime {lat['onnxruntime']}; load average {lat['load_avg_1min']} during the run)")
    print(f"{'threads':>7} {'batch':>5} {'FP32':>8} {'INT8':>8} {'FP32/INT8':>9}")
    for r in lat["rows"]:
        print(f"{r['threads']:>7} {r['batch']:>5} {r['fp32_ms']:>8.2f} {r['int8_ms']:>8.2f} {r['speedup']:>9.2f}")
    print(f"\nWhole detector vs bare session.run, ms per frame (frames: {src})")
    print(f"{'model':<24} {'thr':>3} {'batch':>5} {'bare':>8} {'detector':>9} {'letterbox':>9} {'decode':>7} "
          f"{'ratio':>6} {'direct':>6} {'dets':>5}")
    for r in over:
        print(f"{r['model']:<24} {r['threads']:>3} {r['batch']:>5} {r['bare_ms']:>8.2f} {r['detector_ms']:>9.2f} "
              f"{r['pre_ms']:>9.2f} {r['post_ms']:>7.2f} {r['ratio']:>6.3f} {r['ratio_direct']:>6.3f} "
              f"{r['detections']:>5}")
    print("ratio = (bare + letterbox + decode) / bare; direct = detector / bare, both timed (noisier)")
    n = nms_row
    print(f"\nNMS of {n['candidates']} candidates ({n['kept']} kept): numpy {n['numpy_ms']:.3f} ms, "
          f"cv2.dnn.NMSBoxesBatched (used) {n['opencv_ms']:.3f} ms, same boxes: {n['same_boxes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

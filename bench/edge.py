"""Edge camera pipeline speed and memory: the whole pipeline per frame against the bare forward pass.

    python -m bench.edge [--session DIR|session.mcap] [--cameras cam1,cam2] [--frames 60] [--skip 4]
                         [--runs 5] [--threads 2] [--fp32 models/person_pose.onnx]
                         [--int8 models/person_pose_int8.onnx] [--json]

1. Speed, per model (FP32 and INT8), on the same decoded frames of a simulator session, the cameras of each
   capture time batched as the process batches them:
   * ``bare``: ONNX Runtime's ``session.run`` alone on blobs prepared beforehand (letterbox outside the
     clock);
   * ``pipeline``: :meth:`edge.camera.CameraPipeline.process` (letterbox, forward, decode + NMS, tracker,
     floor projection, wire message models) plus the wire encoding of every message, on a fresh pipeline
     (new trackers) each run, built before the clock starts (its start-up -- calibrations, the fast-ray
     check -- is paid once per process and printed apart);
   the two alternate run by run (so load on the machine hits both alike); ms per frame is the median over
   ``--runs`` runs, and the ratio pipeline / bare (goal <= 1.2) is the median of the per-run ratios, in wall
   time and in the process's CPU time (less disturbed by other work on the machine).
   JPEG decoding is measured apart (``decode``), as are the stages after the detector fed with the
   simulator's true boxes and keypoints (``post``: tracker + projection + messages with real people in view,
   whatever the model finds).
2. Memory: peak RSS (``VmHWM`` of the child, read from ``/proc`` while it runs) of a ``walkout edge camera``
   process running the INT8 model on the session at full speed, publishing to a private Mosquitto when the
   binary is installed (else ``--dry-run``) -- goal <= 400 MB.

Without ``--session`` a short session is simulated first (easy preset, 4 shoppers, 10 s, the chosen cameras).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from calibration.store import load_store
from edge.camera import CameraPipeline
from edge.detector import Detections, Detector
from edge.sources import McapSource, SourceFrame, grouped
from wire.codec import encode

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "sim" / "stores" / "default" / "store.yaml"
GOAL_RATIO = 1.2
GOAL_RSS_MB = 400.0


# ---------------------------------------------------------------------------------------------- data
def simulate_session(out: Path, cameras: list[str], seed: int = 11) -> Path:
    from sim.run import simulate
    from sim.scenario import scenario_from_file

    scn = scenario_from_file(None, preset="easy", seed=seed, shoppers=4, duration_s=10.0)
    scn = scn.model_copy(update={"cameras": scn.cameras.model_copy(update={"only": cameras})})
    simulate(scn, out)
    return out / "session.mcap"


def load_batches(mcap: Path, cameras: list[str], n_frames: int, skip_s: float
                 ) -> tuple[list[list[SourceFrame]], float]:
    """Batches (one capture time, every camera) holding ``n_frames`` frames from ``skip_s`` seconds into the
    session on, and the median JPEG decode time per frame in ms (the payloads decoded again, timed)."""
    batches: list[list[SourceFrame]] = []
    count = 0
    src = McapSource(mcap, cameras)
    t_first = None
    for batch in grouped(src, 0.5 / src.fps):
        t_first = batch[0].ts if t_first is None else t_first
        batch = [f for f in batch if f.image is not None]
        if not batch or batch[0].ts < t_first + skip_s:
            continue
        batches.append(batch)
        count += len(batch)
        if count >= n_frames:
            break
    # decode alone: the JPEG payloads again, timed
    import base64
    import json as _json

    import cv2
    from mcap.reader import make_reader

    times = []
    with open(mcap, "rb") as f:
        for _s, ch, m in make_reader(f).iter_messages(topics=list(src.topics)):
            data = base64.b64decode(_json.loads(m.data)["data"])
            t0 = time.perf_counter()
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            times.append(time.perf_counter() - t0)
            if len(times) >= n_frames:
                break
    return batches, 1000 * statistics.median(times)


def truth_detections(session_dir: Path, cameras: list[str]) -> dict[tuple[str, int], Detections] | None:
    """The simulator's true boxes and keypoints per (camera, frame), if the session folder has them."""
    out: dict[tuple[str, int], list[list[float]]] = defaultdict(list)
    for cam in cameras:
        path = session_dir / "truth" / f"{cam}.txt"
        if not path.is_file():
            return None
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                r = [float(v) for v in line.split(",")]
                if r[6] >= 0.25:
                    out[(cam, int(r[0]))].append(r)
    dets = {}
    for key, rows in out.items():
        r = np.array(rows)
        boxes = np.stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]], axis=1).astype(np.float32)
        kps = np.stack([r[:, [7, 8, 9]], r[:, [10, 11, 12]], r[:, [13, 14, 15]]], axis=1).astype(np.float32)
        kps[..., 2] = np.where(kps[..., 2] > 0, 0.9, 0.05)
        dets[key] = Detections(boxes, np.full(len(r), 0.9, np.float32), np.zeros(len(r), np.int64), kps)
    return dets


# ---------------------------------------------------------------------------------------------- speed
def speed(model: Path, batches: list[list[SourceFrame]], cameras: list[str], threads: int, runs: int) -> dict:
    det = Detector(model, intra_op_threads=threads)
    store = load_store(STORE)
    blobs = [det.preprocess([f.image for f in b])[0] for b in batches]
    n = sum(len(b) for b in batches)
    sess, out_name, in_name = det.session, det.output_name, det.info.input_name

    def bare() -> None:
        for blob in blobs:
            sess.run([out_name], {in_name: blob})

    stats: dict = {}
    # a fresh pipeline (new trackers) per run, built before the clock starts: loading the calibrations and
    # checking the fast rays is the process's start-up, paid once, not per frame (timed apart)
    t0 = time.perf_counter()
    pipes = [CameraPipeline(store, cameras, det, device="bench-edge") for _ in range(runs + 1)]
    start_ms = 1000 * (time.perf_counter() - t0) / len(pipes)

    def pipeline() -> None:
        pipe = pipes.pop()
        for b in batches:
            for msg in pipe.process(b):
                encode(msg)
        stats["pipe"] = pipe

    def timed(fn) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    bare()
    pipeline()  # warm both
    bare_ms, pipe_ms, ratios, cpu_ratios, stages = [], [], [], [], []
    for _ in range(runs):
        bw, bc = timed(bare)
        pw, pc = timed(pipeline)
        bare_ms.append(1000 * bw / n)
        pipe_ms.append(1000 * pw / n)
        ratios.append(pw / bw)
        cpu_ratios.append(pc / bc)
        stages.append(stats["pipe"].times.as_dict())
    pipe = stats["pipe"]
    return {"model": model.name, "threads": threads, "frames": n, "batch": len(cameras),
            "bare_ms": statistics.median(bare_ms), "pipeline_ms": statistics.median(pipe_ms),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "cpu_ratio": statistics.median(cpu_ratios), "pipeline_start_ms": start_ms,
            "stages_ms": {k: 1000 * statistics.median(st[k] for st in stages) / n for k in stages[0]},
            "detections_per_frame": pipe.counters.detections / n,
            "tracks_per_frame": pipe.counters.tracks / n}


def post_detector(batches: list[list[SourceFrame]], cameras: list[str], truth: dict, runs: int) -> dict:
    """Tracker + projection + messages (+ encoding) fed the true detections: ms per frame."""
    store = load_store(STORE)
    dets = [[truth.get((f.camera, f.index), Detections.empty(3)) for f in b] for b in batches]
    n = sum(len(b) for b in batches)
    walls, stages, tracks = [], [], 0
    pipes = [CameraPipeline(store, cameras, None, device="bench-edge") for _ in range(runs + 1)]
    for pipe in pipes:  # the first run warms up
        t0 = time.perf_counter()
        for b, d in zip(batches, dets, strict=True):
            for msg in pipe.process_detections(b, d):
                encode(msg)
        walls.append(time.perf_counter() - t0)
        stages.append(pipe.times.as_dict())
        tracks = pipe.counters.tracks
    walls, stages = walls[1:], stages[1:]
    return {"post_ms": 1000 * statistics.median(walls) / n,
            "stages_ms": {k: 1000 * statistics.median(st[k] for st in stages) / n
                          for k in ("track", "project", "colour", "build")},
            "tracks_per_frame": tracks / n}


# ---------------------------------------------------------------------------------------------- memory
def peak_rss(mcap: Path, cameras: list[str], model: Path, threads: int, frames: int) -> dict:
    """Peak RSS (MB) of a camera process on the session."""
    broker = None
    cmd = [sys.executable, "-m", "walkout.cli", "edge", "camera", "--store", str(STORE),
           "--source", str(mcap), "--model", str(model), "--threads", str(threads), "--speed", "max",
           "--max-frames", str(frames)]
    for c in cameras:
        cmd += ["--camera", c]
    mode = "dry run (stdout)"
    if shutil.which("mosquitto"):
        from wire.broker import MosquittoProcess, MosquittoSettings

        broker = MosquittoProcess(MosquittoSettings()).start()
        cmd += ["--broker", f"{broker.host}:{broker.port}", "--device", f"bench-{uuid.uuid4().hex[:8]}"]
        mode = f"publishing to a private mosquitto on port {broker.port}"
    else:
        cmd += ["--dry-run"]
    try:
        with tempfile.TemporaryFile() as err_file:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file)
            t0 = time.perf_counter()
            hwm_kb = 0
            while proc.poll() is None:
                hwm_kb = max(hwm_kb, _vm_hwm_kb(proc.pid))
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            err_file.seek(0)
            err = err_file.read().decode(errors="replace")
    finally:
        if broker is not None:
            broker.close()
    if proc.returncode != 0:
        raise SystemExit(f"the camera process failed ({proc.returncode}):\n{err[-2000:]}")
    return {"peak_rss_mb": hwm_kb / 1024, "model": model.name, "frames": frames, "mode": mode,
            "wall_s": wall, "summary": err.strip().splitlines()[-1] if err.strip() else ""}


def _vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set (``VmHWM``, kB) so far; 0 once it is gone.

    (``ru_maxrss`` of a child is no good here: Linux carries the parent's peak into it across the
    fork/vfork + exec, so it reports at least this benchmark's own size.)"""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n\n")[0])
    p.add_argument("--session", type=Path, help="session folder or session.mcap (default: simulate one)")
    p.add_argument("--cameras", default="cam1,cam2", help="cameras of the process (default %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames per run, all cameras (default %(default)s)")
    p.add_argument("--skip", type=float, default=4.0,
                   help="seconds of the session to skip (shoppers walk in first; default %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="runs per model (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default %(default)s)")
    p.add_argument("--fp32", type=Path, default=ROOT / "models" / "person_pose.onnx")
    p.add_argument("--int8", type=Path, default=ROOT / "models" / "person_pose_int8.onnx")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = p.parse_args(argv)
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    for f in (args.fp32, args.int8):
        if not f.is_file():
            p.error(f"model {f} not found")
    tmp = None
    if args.session is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
        print(f"simulating a session in {tmp} ...", file=sys.stderr)
        mcap = simulate_session(tmp, cameras)
    else:
        mcap = args.session / "session.mcap" if args.session.is_dir() else args.session
    try:
        batches, decode_ms = load_batches(mcap, cameras, args.frames, args.skip)
        rows = [speed(m, batches, cameras, args.threads, args.runs) for m in (args.fp32, args.int8)]
        truth = truth_detections(mcap.parent, cameras)
        post = post_detector(batches, cameras, truth, args.runs) if truth else None
        mem = None if args.no_memory else peak_rss(mcap, cameras, args.int8, args.threads, args.frames)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus", "onnxruntime": ort.__version__,
              "session": str(mcap) if tmp is None else "simulated (easy, 4 shoppers, 10 s, seed 11)",
              "cameras": cameras, "decode_ms": decode_ms, "speed": rows, "post_detector": post, "memory": mem,
              "goals": {"ratio": GOAL_RATIO, "peak_rss_mb": GOAL_RSS_MB}}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"Edge pipeline vs bare forward pass, ms per frame (median of {args.runs} runs; "
          f"{result['machine']}; onnxruntime {ort.__version__}; cameras {','.join(cameras)} batched; "
          f"JPEG decode {decode_ms:.2f} ms apart)")
    print(f"{'model':<24} {'thr':>3} {'frames':>6} {'bare':>8} {'pipeline':>9} {'ratio':>6} {'range':>13} "
          f"{'cpu':>6} {'detect':>7} {'track':>6} {'proj':>6} {'colour':>6} {'build':>6} {'dets/f':>6}")
    for r in rows:
        s = r["stages_ms"]
        print(f"{r['model']:<24} {r['threads']:>3} {r['frames']:>6} {r['bare_ms']:>8.2f} "
              f"{r['pipeline_ms']:>9.2f} "
              f"{r['ratio']:>6.3f} {r['ratio_min']:>6.3f}-{r['ratio_max']:<6.3f} {r['cpu_ratio']:>6.3f} "
              f"{s['detect']:>7.2f} "
              f"{s['track']:>6.3f} {s['project']:>6.3f} {s['colour']:>6.3f} {s['build']:>6.3f} "
              f"{r['detections_per_frame']:>6.2f}")
    print(f"goal: ratio <= {GOAL_RATIO} (ratio: wall time, median of per-run ratios, with its range; "
          "cpu: the same in process CPU time, steadier on a busy machine)")
    print(f"pipeline start-up (calibrations, fast-ray check; once per process, not in the figures above): "
          f"{rows[0]['pipeline_start_ms']:.0f} ms")
    if post:
        s = post["stages_ms"]
        print(f"\nAfter the detector, fed the true people ({post['tracks_per_frame']:.2f} tracks per frame): "
              f"{post['post_ms']:.3f} ms per frame (track {s['track']:.3f}, projection {s['project']:.3f}, "
              f"colour {s['colour']:.3f}, messages {s['build']:.3f}, plus encoding)")
    if mem:
        print(f"\nPeak RSS of `walkout edge camera` ({mem['model']}, {mem['frames']} frames, {mem['mode']}): "
              f"{mem['peak_rss_mb']:.0f} MB (goal <= {GOAL_RSS_MB:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tracker benchmark on simulator truth: our tracker and its peers on the ONNX detector's boxes of a session.

    python -m bench.tracker_sim SESSION [--cameras cam1,cam2] [--model models/person_pose_int8.onnx]
                                [--conf 0.1] [--repeat 3] [--trackers NAME ...] [--out DIR] [--json]

SESSION is a rendered simulator session (``walkout sim`` without ``--no-frames``).  For each camera the detector
(``edge/detector.py``, the model the edge process runs, at ``--conf``, so the trackers' own second stages get the
low-score boxes) runs once over the session's frames; its boxes are written as a MOT detection file and every
tracker gets those identical detections frame by frame (:func:`bench.tracker_pets.bench_file`), scored against
the session's per-camera truth (``truth/{camera}.txt``, every labelled box) with :mod:`walkout.mot`.  Ours
runs twice: on the boxes alone as the peers (``walkout``), and given each detection's chest colour as the edge
process gives it (``walkout+colour``, measured on the frame when the detector ran).  The rows
are per camera, then pooled: HOTA, IDF1 and MOTA averaged over the cameras weighted by their true boxes, ID
switches summed.  The ultralytics peers need torch: run it with the training environment (``.venv-train``), as
``bench.tracker_pets``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path

import numpy as np

from bench.tracker_pets import OURS_COLOUR, TRACKERS, Result, bench_file, summary, table
from walkout.evaluate import read_mot_rows  # the session's truth files, as walkout eval reads them

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "person_pose_int8.onnx"


def detect_session(session: Path, cameras: list[str], model: Path, conf: float, out: Path
                   ) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Run the detector over every frame of ``cameras`` and write one MOT detection file per camera (rows in
    frame order); also each detection's chest colour as the edge pipeline gives it to the tracker (L*a*b* in
    units of :data:`edge.appearance.CAMERA_SD`, a row per detection line; NaN: not measured)."""
    from edge.appearance import CAMERA_SD
    from edge.camera import MIN_KEYPOINT_CONF, detection_colours, keypoint_slots
    from edge.detector import Detector
    from edge.sources import McapSource, frame_batches

    src = McapSource(session / "session.mcap" if session.is_dir() else session, cameras)
    detector = Detector(model, conf=conf)
    head = keypoint_slots(detector.keypoint_names).get("head")
    rows: dict[str, list[str]] = {c: [] for c in src.cameras}
    colours: dict[str, list[np.ndarray]] = {c: [] for c in src.cameras}
    try:
        for batch in frame_batches([src], threading.Event(), speed=0.0):
            frames = [f for f in batch if f.image is not None]
            for f, d in zip(frames, detector.detect([f.image for f in frames]), strict=True):
                for (x1, y1, x2, y2), s in zip(d.boxes.tolist(), d.scores.tolist(), strict=True):
                    rows[f.camera].append(f"{f.index},-1,{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},{s:.4f}")
                colours[f.camera].append(detection_colours(f.image, d.boxes, d.keypoints, head, MIN_KEYPOINT_CONF))
    finally:
        src.close()
    out.mkdir(parents=True, exist_ok=True)
    paths, feats = {}, {}
    for cam, lines in rows.items():
        paths[cam] = out / f"{cam}.txt"
        paths[cam].write_text("\n".join(lines) + "\n")
        feats[cam] = np.concatenate([np.zeros((0, 3)), *colours[cam]]) / np.asarray(CAMERA_SD)
    return paths, feats


def pooled(results: list[Result], weights: dict[str, int]) -> list[dict]:
    """Per tracker: HOTA, IDF1 and MOTA weighted by each camera's true boxes, ID switches summed."""
    out = []
    for name in dict.fromkeys(r.tracker for r in results):
        rs = [r for r in results if r.tracker == name and r.metrics is not None]
        if not rs:
            continue
        w = np.array([weights[r.dets] for r in rs], float)
        row = {"tracker": name, "cameras": len(rs)}
        for key in ("hota", "idf1", "mota"):
            row[key] = float(np.average([getattr(r.metrics, key) for r in rs], weights=w))
        row["id_switches"] = int(sum(r.metrics.id_switches for r in rs))
        row["ms_per_frame"] = float(np.mean([r.ms_per_frame for r in rs]))
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tracker_sim",
                                description="Our tracker and its peers on a simulator session's detections.")
    p.add_argument("session", type=Path, help="rendered session folder (or its session.mcap)")
    p.add_argument("--cameras", help="comma-separated camera ids (default: every camera with a truth file)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model (default: the INT8 one)")
    p.add_argument("--conf", type=float, default=0.1, help="detector score threshold (default 0.1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per tracker; speed is their median")
    p.add_argument("--trackers", nargs="+", choices=list(TRACKERS), default=list(TRACKERS),
                   help=f"{OURS_COLOUR}: ours given the detections' chest colours, as in the edge process")
    p.add_argument("--out", type=Path, help="keep the detection files and every tracker's output here")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folder = args.session if args.session.is_dir() else args.session.parent
    truth_dir = folder / "truth"
    cams = args.cameras.split(",") if args.cameras else sorted(
        f.stem for f in truth_dir.glob("cam*.txt")) if truth_dir.is_dir() else []
    missing = [c for c in cams if not (truth_dir / f"{c}.txt").is_file()]
    if not cams or missing:
        print(f"error: {folder}: no per-camera truth for {missing or 'any camera'} (a session rendered with "
              "frames has truth/{camera}.txt)", file=sys.stderr)
        return 2
    import tempfile

    work = args.out or Path(tempfile.mkdtemp(prefix="tracker_sim_"))
    det_paths, colours = detect_session(args.session, cams, args.model, args.conf, work / "dets")
    results: list[Result] = []
    weights: dict[str, int] = {}
    for cam in cams:
        gt = read_mot_rows(truth_dir / f"{cam}.txt")
        weights[det_paths[cam].name] = len(gt.frames)
        results += bench_file(det_paths[cam], gt, args.trackers, repeat=args.repeat,
                              out=work / "tracks" if args.out else None, score_map="raw",
                              fps=float(json.loads((folder / "truth.json").read_text())["session"]["fps"]),
                              features={OURS_COLOUR: colours[cam]})
    pool = pooled(results, weights)
    if args.json:
        print(json.dumps({"session": str(folder), "model": str(args.model), "conf": args.conf,
                          "results": [r.row() for r in results], "per_camera_summary": summary(results),
                          "pooled": pool}))
        return 0
    print(table(results))
    print("\npooled over cameras (weighted by true boxes):")
    print(f"{'tracker':<22} {'HOTA':>6} {'IDF1':>6} {'MOTA':>6} {'IDsw':>5} {'ms/frame':>8}")
    for r in pool:
        print(f"{r['tracker']:<22} {100 * r['hota']:>6.1f} {100 * r['idf1']:>6.1f} {100 * r['mota']:>6.1f} "
              f"{r['id_switches']:>5d} {r['ms_per_frame']:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

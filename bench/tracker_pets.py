"""Tracker benchmark on the real PETS2009 S2.L1 video: our tracker against the trackers a user would pick.

    python -m bench.tracker_pets [--dets FILE ...] [--gt FILE] [--out DIR] [--json] [--repeat N]
                                 [--scores {auto,raw,logistic,margin}] [--fps FPS] [--trackers NAME ...]

Every tracker gets the identical detections of each MOT-format file (by default both files in
``../shared/realdata/pets2009_s2l1/``) frame by frame, and its output is scored against the ground truth with
:mod:`walkout.mot` (HOTA as TrackEval computes it; IDF1, MOTA and ID switches as TrackEval's Identity and
CLEAR).  Speed is the median over ``--repeat`` runs of the time spent in each tracker's per-frame call
(building its input object from the arrays included): ``ms/frame`` is wall-clock, ``cpu ms`` the process CPU
time, which is the steadier figure on a shared machine.  ``--out DIR`` writes every tracker's output as MOT
text (``DIR/<dets-stem>/<tracker>.txt``).

Peers (imported lazily; a missing one is reported with its install hint instead of a row):

* ultralytics 8.4 ``BYTETracker`` and ``BOTSORT``, configured from their packaged yaml with
  ``gmc_method: none`` (a fixed camera: no camera-motion compensation) and ``with_reid: False``.  They need
  torch: run the benchmark with the training environment (``.venv-train``).
* Roboflow ``trackers`` 2.6 ``ByteTrackTracker`` and ``SORTTracker``, defaults except ``frame_rate=--fps``.

Scores: every tracker gets the same scores, mapped into 0..1 by :func:`normalise_scores` (the detector
adapter's job; the HOG file's scores are raw SVM margins, 0.05-6.4).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edge.tracker import Detections, Tracker, TrackerConfig
from walkout.mot import MotMetrics, MotSequence, evaluate, read_mot, write_mot

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PETS = (ROOT / ".." / "shared" / "realdata" / "pets2009_s2l1").resolve()
GT_FILE = "PETS09-S2L1_View001_gt_from_xml.txt"
DET_FILES = ("dets_gt_noisy.txt", "dets_hog_upscaled.txt")
PETS_FPS = 10.0
OURS = "walkout"
OURS_COLOUR = "walkout+colour"  # ours given each detection's chest colour (bench.tracker_sim; PETS has none)

# a frame step: (boxes (N, 4) xyxy, scores (N,), features (N, F) or None) -> (ids (M,), boxes (M, 4), scores (M,));
# only ours reads the features (the chest colours bench.tracker_sim measures); the peers take boxes and scores
Step = Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray, np.ndarray]]


class PeerMissing(RuntimeError):
    """A peer tracker's package cannot be imported; the message carries the install hint."""


SCORE_MAPS = ("auto", "raw", "logistic", "margin")


def normalise_scores(scores: np.ndarray, how: str = "auto") -> tuple[np.ndarray, str]:
    """Map detector scores into 0..1 for the trackers; returns the scores and the mapping used.

    ``raw`` leaves them; ``logistic`` is 1 / (1 + exp(-s)); ``margin`` is 1 / (1 + exp(-(s - 1))), for SVM
    margins: a linear SVM is trained to put positives at a margin >= 1, so margin 1 maps to 0.5 and the band
    0..1, which a detector run at hit threshold 0 (OpenCV's HOG default) still reports, maps below it.
    ``auto`` is ``raw`` when every score is already in 0..1, else ``margin``.
    """
    scores = np.asarray(scores, dtype=float)
    if how == "auto":
        in_range = scores.size == 0 or (scores.min() >= 0.0 and scores.max() <= 1.0)
        how = "raw" if in_range else "margin"
    if how == "raw":
        return scores, how
    if how == "logistic":
        return 1.0 / (1.0 + np.exp(-scores)), how
    if how == "margin":
        return 1.0 / (1.0 + np.exp(-(scores - 1.0))), how
    raise ValueError(f"unknown score mapping {how!r}; one of {', '.join(SCORE_MAPS)}")


# ------------------------------------------------------------------------------------------------ trackers
def _ours(fps: float) -> Step:
    tracker = Tracker(TrackerConfig())

    def step(boxes: np.ndarray, scores: np.ndarray, features: np.ndarray | None = None):
        out = tracker.update(Detections(boxes, scores, features=features))
        return out.ids, out.boxes, out.scores

    return step


class _UltralyticsBoxes:
    """The slice of ultralytics' ``Boxes`` its trackers read: conf, cls, xyxy, xywh (centre), len, mask."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray):
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls
        wh = xyxy[:, 2:] - xyxy[:, :2]
        self.xywh = np.concatenate([xyxy[:, :2] + wh / 2, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask) -> _UltralyticsBoxes:
        return _UltralyticsBoxes(self.xyxy[mask], self.conf[mask], self.cls[mask])


def _ultralytics(kind: str, fps: float) -> Step:
    try:
        from ultralytics.trackers import BOTSORT, BYTETracker
        from ultralytics.trackers.basetrack import BaseTrack
        from ultralytics.utils import ROOT as ULTRA_ROOT
        from ultralytics.utils import YAML
    except ImportError as exc:
        raise PeerMissing(
            f"not installed ({exc}): pip install ultralytics==8.4.190 torch torchvision"
        ) from None
    BaseTrack.reset_id()  # a class-level counter (older releases number every tracker's tracks from it)
    cfg = YAML.load(ULTRA_ROOT / "cfg" / "trackers" / f"{kind}.yaml")
    cfg.update(gmc_method="none", with_reid=False)
    tracker = (BOTSORT if kind == "botsort" else BYTETracker)(SimpleNamespace(**cfg))

    def step(boxes: np.ndarray, scores: np.ndarray, features: np.ndarray | None = None):
        res = tracker.update(_UltralyticsBoxes(boxes, scores.astype(np.float32), np.zeros(len(scores))))
        res = np.asarray(res, dtype=float).reshape(-1, 8)  # x1, y1, x2, y2, id, score, cls, det index
        return res[:, 4].astype(np.int64), res[:, :4], res[:, 5]

    return step


def _roboflow(kind: str, fps: float) -> Step:
    try:
        import supervision as sv
        from trackers import ByteTrackTracker, SORTTracker
    except ImportError as exc:
        raise PeerMissing(f"not installed ({exc}): pip install trackers==2.6.1") from None
    tracker = (ByteTrackTracker if kind == "bytetrack" else SORTTracker)(frame_rate=fps)
    tracker.reset()  # clears the tracks and the id counter

    def step(boxes: np.ndarray, scores: np.ndarray, features: np.ndarray | None = None):
        det = sv.Detections(xyxy=boxes.reshape(-1, 4), confidence=scores, class_id=np.zeros(len(scores), int))
        res = tracker.update(det)
        keep = res.tracker_id >= 0  # unconfirmed detections come back with id -1
        return res.tracker_id[keep].astype(np.int64), res.xyxy[keep], res.confidence[keep]

    return step


TRACKERS: dict[str, Callable[[float], Step]] = {
    OURS: _ours,
    OURS_COLOUR: _ours,
    "ultralytics-bytetrack": lambda fps: _ultralytics("bytetrack", fps),
    "ultralytics-botsort": lambda fps: _ultralytics("botsort", fps),
    "roboflow-bytetrack": lambda fps: _roboflow("bytetrack", fps),
    "roboflow-sort": lambda fps: _roboflow("sort", fps),
}


# -------------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Result:
    dets: str
    tracker: str
    scores: str
    metrics: MotMetrics | None = None
    ms_per_frame: float | None = None
    cpu_ms_per_frame: float | None = None
    error: str | None = None

    def row(self) -> dict:
        out = {
            "dets": self.dets,
            "tracker": self.tracker,
            "scores": self.scores,
            "ms_per_frame": self.ms_per_frame,
            "cpu_ms_per_frame": self.cpu_ms_per_frame,
            "error": self.error,
        }
        if self.metrics is not None:
            out.update(self.metrics.as_dict())
        return out


def run_once(step: Step, dets: MotSequence, last_frame: int, features: np.ndarray | None = None
             ) -> tuple[MotSequence, float, float]:
    """Feed ``dets`` (and ``features``, a row per detection, if given) frame by frame to ``step``; its output,
    and the mean wall and CPU ms per frame."""
    frames, ids, boxes, scores = [], [], [], []
    wall = cpu = 0.0
    for frame, rows in dets.per_frame(1, last_frame):
        b, s = dets.boxes[rows], dets.scores[rows]
        w0, c0 = time.perf_counter(), time.process_time()
        tid, tb, ts = step(b, s, None if features is None else features[rows])
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        frames.append(np.full(len(tid), frame))
        ids.append(np.asarray(tid))
        boxes.append(np.asarray(tb, dtype=float).reshape(-1, 4))
        scores.append(np.asarray(ts, dtype=float))
    seq = MotSequence.from_rows(
        np.concatenate(frames), np.concatenate(ids), np.concatenate(boxes), np.concatenate(scores)
    )
    n = max(1, last_frame)
    return seq, 1000.0 * wall / n, 1000.0 * cpu / n


def bench_file(
    det_path: Path,
    gt: MotSequence,
    names: list[str],
    *,
    repeat: int = 3,
    out: Path | None = None,
    score_map: str = "auto",
    fps: float = PETS_FPS,
    features: dict[str, np.ndarray] | None = None,
) -> list[Result]:
    """Run each named tracker ``repeat`` times on one detection file, the trackers taking turns (so a change in
    the machine's load hits them alike); one :class:`Result` per tracker, in the order of ``names``.
    ``features``: tracker name -> appearance features of the file's detections (a row per detection line, in
    the file's order, which must be by frame) for the trackers given them; the others get none."""
    raw = read_mot(det_path)
    for name, f in (features or {}).items():
        if len(f) != len(raw.frames):
            raise ValueError(f"{det_path}: {len(f)} feature rows for {len(raw.frames)} detections ({name})")
    scores, how = normalise_scores(raw.scores, score_map)
    dets = MotSequence(raw.frames, raw.ids, raw.boxes, scores)
    last = max(gt.last_frame, dets.last_frame)
    errors: dict[str, str] = {}
    outputs: dict[str, MotSequence] = {}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(max(1, repeat)):
        for name in names:
            if name in errors:
                continue
            try:
                seq, wall, cpu = run_once(TRACKERS[name](fps), dets, last, (features or {}).get(name))
            except PeerMissing as exc:
                errors[name] = str(exc)
                continue
            except ValueError as exc:  # e.g. ours refuses scores outside 0..1 (--scores raw on SVM margins)
                errors[name] = f"refused the detections: {exc}"
                continue
            outputs.setdefault(name, seq)
            times[name].append((wall, cpu))
    results = []
    for name in names:
        if name in errors:
            results.append(Result(det_path.name, name, how, error=errors[name]))
            continue
        seq = outputs[name]
        if out is not None:
            folder = out / det_path.stem
            folder.mkdir(parents=True, exist_ok=True)
            write_mot(folder / f"{name}.txt", seq)
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        results.append(Result(det_path.name, name, how, evaluate(gt, seq), wall, cpu))
    return results


def summary(results: list[Result]) -> list[dict]:
    """Per detection file: ours against the best peer (best HOTA and best IDF1 taken separately)."""
    out = []
    for dets in dict.fromkeys(r.dets for r in results):
        rows = [r for r in results if r.dets == dets and r.metrics is not None]
        ours = next((r for r in rows if r.tracker == OURS), None)
        peers = [r for r in rows if r.tracker not in (OURS, OURS_COLOUR)]
        if ours is None or not peers:
            continue
        hota = max(peers, key=lambda r: r.metrics.hota)
        idf1 = max(peers, key=lambda r: r.metrics.idf1)
        out.append(
            {
                "dets": dets,
                "ours_hota": ours.metrics.hota,
                "best_peer_hota": hota.metrics.hota,
                "best_peer_hota_by": hota.tracker,
                "ours_idf1": ours.metrics.idf1,
                "best_peer_idf1": idf1.metrics.idf1,
                "best_peer_idf1_by": idf1.tracker,
                "ours_ms_per_frame": ours.ms_per_frame,
                "cpu_ratio_vs_fastest_peer": ours.cpu_ms_per_frame / min(r.cpu_ms_per_frame for r in peers),
            }
        )
    return out


def table(results: list[Result]) -> str:
    head = (
        f"{'detections':22s} {'scores':7s} {'tracker':22s} {'HOTA':>5s} {'DetA':>5s} {'AssA':>5s} "
        f"{'IDF1':>5s} {'MOTA':>5s} {'IDSW':>4s} {'ids':>4s} {'ms/frame':>8s} {'cpu ms':>7s}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if r.metrics is None:
            lines.append(f"{r.dets:22s} {r.scores:7s} {r.tracker:22s} {r.error}")
            continue
        m = r.metrics
        lines.append(
            f"{r.dets:22s} {r.scores:7s} {r.tracker:22s} {100 * m.hota:5.1f} {100 * m.deta:5.1f} "
            f"{100 * m.assa:5.1f} {100 * m.idf1:5.1f} {100 * m.mota:5.1f} {m.id_switches:4d} "
            f"{m.num_pred_ids:4d} {r.ms_per_frame:8.3f} {r.cpu_ms_per_frame:7.3f}"
        )
    for s in summary(results):
        lines.append(
            f"{s['dets']}: ours HOTA {100 * s['ours_hota']:.1f} vs best peer {100 * s['best_peer_hota']:.1f} "
            f"({s['best_peer_hota_by']}), IDF1 {100 * s['ours_idf1']:.1f} vs {100 * s['best_peer_idf1']:.1f} "
            f"({s['best_peer_idf1_by']}); CPU time {s['cpu_ratio_vs_fastest_peer']:.2f}x the fastest peer's"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.tracker_pets",
        description="Our tracker and its peers on the PETS2009 S2.L1 video.",
    )
    p.add_argument(
        "--dets",
        type=Path,
        action="append",
        help=f"MOT-format detection file (repeatable); default: {', '.join(DET_FILES)} in {PETS}",
    )
    p.add_argument("--gt", type=Path, default=PETS / GT_FILE, help="MOT-format ground truth")
    p.add_argument("--out", type=Path, help="write each tracker's output here as MOT text")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument(
        "--repeat", type=int, default=3, help="runs per tracker; speed is their median (default 3)"
    )
    p.add_argument("--scores", choices=SCORE_MAPS, default="auto", help="score mapping, see normalise_scores")
    p.add_argument("--fps", type=float, default=PETS_FPS, help="video frame rate, for the peers that take it")
    p.add_argument("--trackers", nargs="+", choices=[t for t in TRACKERS if t != OURS_COLOUR],
                   default=[t for t in TRACKERS if t != OURS_COLOUR])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    det_paths = args.dets or [PETS / name for name in DET_FILES]
    for path in [args.gt, *det_paths]:
        if not path.is_file():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    gt = read_mot(args.gt)
    results = []
    for path in det_paths:
        results += bench_file(
            path, gt, args.trackers, repeat=args.repeat, out=args.out, score_map=args.scores, fps=args.fps
        )
    if args.json:
        print(
            json.dumps(
                {
                    "gt": str(args.gt),
                    "repeat": args.repeat,
                    "fps": args.fps,
                    "results": [r.row() for r in results],
                    "summary": summary(results),
                }
            )
        )
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Replay benchmark: how many times faster than real time a detection-level recording replays into fusion.

    python -m bench.replay [--session replay_data/sessions/hard-100s] [--runs 3] [--json]

The recording is made once (in a temporary folder) the way ``walkout record`` writes one: the committed
session's gate scans plus truth perception's tracks (6 cameras at 10 fps) and shelf events, each logged at
its publish time.  Then, median of ``--runs`` runs each, in this process:

* ``replay``: ``walkout.replay.replay --in-process`` of the recording at maximum speed: read, decoded and
  handed to the real fusion service (SQLite in a temporary folder: inbox commit per message, effects, carts,
  receipts, payments; its outputs on the in-process bus) -- the figure the replay issue's goal (>= 50x real
  time) is about;
* ``engine`` (the peer): ``FusionEngine.offer`` of the same decoded messages, no bus, no database;
* ``decode`` (floor): reading the recording and validating every message (``wire.codec.decode``).

Each row: wall seconds, the recording's span over the wall time (the multiple of real time) and messages/s.
``replay / engine`` says what the service, bus and database cost on top of the engine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 50.0


def make_recording(session_dir: Path, out: Path) -> tuple[Path, float, int]:
    """A detection-level recording of the session's inputs; returns (path, span in seconds, messages)."""
    from sim.session import Session
    from walkout.record import RecordingWriter, store_attachments
    from walkout.replay import KIND_OF
    from walkout.truth_perception import PerceptionConfig, perceive

    s = Session.open(session_dir)
    feed = sorted([(float(m.ts), m) for m in s.gate_entries()] + perceive(s, PerceptionConfig(seed=0)).feed(),
                  key=lambda x: x[0])
    w = RecordingWriter(out, s.store.store.id, store_attachments(s.store, None))
    for t, msg in feed:
        kind, field = KIND_OF[type(msg)]
        w.message(kind, getattr(msg, field), msg, t)
    w.close()
    return out, feed[-1][0] - feed[0][0], len(feed)


def run_replay(rec: Path, tmp: Path, k: int) -> float:
    from walkout.replay import ReplayOptions, replay

    t0 = time.perf_counter()
    replay(rec, tmp / f"run{k}", ReplayOptions(in_process=True))
    return time.perf_counter() - t0


def run_engine(rec: Path) -> float:
    from fusion.engine import FusionEngine
    from walkout.replay import open_source, recording_feed

    store = open_source(rec).store
    msgs = [m for _, m in recording_feed(rec)]
    eng = FusionEngine(store)
    t0 = time.perf_counter()
    for m in msgs:
        eng.offer(m)
    eng.finish()
    return time.perf_counter() - t0


def run_decode(rec: Path) -> float:
    from walkout.replay import recording_feed

    t0 = time.perf_counter()
    n = sum(1 for _ in recording_feed(rec))
    assert n
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--session", default=str(ROOT / "replay_data" / "sessions" / "hard-100s"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as d:
        tmp = Path(d)
        rec, span, n = make_recording(Path(args.session), tmp / "recording.mcap")
        rows = {}
        for name, fn in (("replay", lambda k: run_replay(rec, tmp, k)), ("engine", lambda k: run_engine(rec)),
                         ("decode", lambda k: run_decode(rec))):
            walls = [fn(k) for k in range(args.runs)]
            wall = statistics.median(walls)
            rows[name] = {"wall_s": round(wall, 3), "x_real_time": round(span / wall, 1),
                          "messages_per_s": round(n / wall), "runs": [round(w, 3) for w in walls]}
    result = {"session": args.session, "span_s": round(span, 1), "messages": n, "runs": args.runs, **rows,
              "replay_over_engine": round(rows["replay"]["wall_s"] / rows["engine"]["wall_s"], 2),
              "goal_x_real_time": GOAL, "meets_goal": rows["replay"]["x_real_time"] >= GOAL}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"recording: {args.session} ({n} messages over {span:.1f} s); median of {args.runs} runs")
    print(f"{'':8s} {'wall s':>8s} {'x real time':>12s} {'msg/s':>9s}")
    for name, r in rows.items():
        print(f"{name:8s} {r['wall_s']:8.2f} {r['x_real_time']:12.1f} {r['messages_per_s']:9d}")
    print(f"replay / engine: {result['replay_over_engine']:.2f}; goal >= {GOAL:.0f}x real time: "
          f"{'met' if result['meets_goal'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

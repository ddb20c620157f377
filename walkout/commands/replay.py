"""``walkout replay SESSION --out RUN_DIR``: replay a session (or a recording) through the edge and fusion.

SESSION is a simulator session (its folder or ``session.mcap``) or a detection-level recording (an MCAP from
``walkout record``).  Sessions are perceived with ``--perception truth`` (the true tracks and shelf events
with realistic noise) or ``--perception onnx`` (the real camera pipeline on the session's frames and the
real shelf gateway on its load cells); ``--shelf gateway`` runs the real shelf gateway with truth tracks.
Messages go through the broker (``--broker``; an embedded Mosquitto when none answers) or, with
``--in-process``, an in-process bus (deterministic), into fusion (SQLite in RUN_DIR, or ``--db``).  The run
folder then holds the receipts, published events and tracks, fused floor tracks and visits (see
``walkout/replay.py``); ``walkout eval SESSION RUN_DIR`` scores it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def speed(text: str) -> float:
    """``1``, ``10``, ``max`` -> a multiple of real time (0 = as fast as possible)."""
    if text.strip().lower() in ("max", "inf", "0"):
        return 0.0
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'max'") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"speed must be positive or 'max', got {text!r}")
    return v


def broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a session or recording through the edge and fusion",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", help="session folder, session.mcap, or a recording .mcap")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--store", help="store description YAML (default: the one attached to the session)")
    p.add_argument("--store-id", help="publish under this store id (default: the store's)")
    p.add_argument("--speed", type=speed, default=0.0, help="1, N (times real time) or max (default max)")
    p.add_argument("--in-process", action="store_true", help="in-process bus instead of a broker")
    p.add_argument("--broker", type=broker, default=("127.0.0.1", 1883), help="MQTT broker host:port")
    p.add_argument("--perception", choices=["truth", "onnx"], default="truth",
                   help="truth: true tracks and events with noise; onnx: the real edge pipelines")
    p.add_argument("--shelf", choices=["truth", "gateway"], default="truth",
                   help="shelf events with truth perception: noisy truth, or the real gateway on the load cells")
    p.add_argument("--model", help="ONNX model for --perception onnx (default models/person_pose_int8.onnx)")
    p.add_argument("--seed", type=int, default=0, help="truth perception's noise seed (default 0)")
    p.add_argument("--db", help="fusion database URL (default: SQLite fusion.db in the run folder)")
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from calibration.config import ConfigError
    from calibration.store import load_store
    from fusion.db import DatabaseError
    from walkout.replay import DEFAULT_MODEL, ReplayError, ReplayOptions, replay

    try:
        store = load_store(args.store) if args.store else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    opts = ReplayOptions(perception=args.perception, shelf=args.shelf, speed=args.speed,
                         in_process=args.in_process, db=args.db, broker=args.broker, seed=args.seed, store=store,
                         store_id=args.store_id, model=Path(args.model) if args.model else DEFAULT_MODEL,
                         progress=None if args.json else (lambda m: print(m, file=sys.stderr)))
    try:
        result = replay(args.session, args.out, opts)
    except (ReplayError, ConfigError, DatabaseError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.summary, sort_keys=True, default=str))
    else:
        for r in result.receipts:
            lines = ", ".join(f"{ln['qty']} x {ln['sku']}" for ln in r["lines"]) or "nothing"
            print(f"{r['visit']}  {r['account']}  {r['status']:16s} {r['total']:7d}  {lines}")
        s = result.summary
        print(f"{s['receipts']} receipts; {s['published']} messages in {s['wall_s']:.1f} s via {s['transport']}; "
              f"run folder {result.run_dir}")
    return 0

"""``walkout demo``: simulate a busy few minutes in the default store, run the real edge pipelines and fusion
on it through a broker, print each receipt as the shopper leaves, then the evaluation summary and where the
report, the recording and the ops app are (``make demo``).

The broker: the Mosquitto on 127.0.0.1:1883 when it answers, else an embedded Mosquitto started for the
demo (``--broker embedded`` asks for it; ``--broker HOST:PORT`` names one that must answer).  The session is
simulated into OUT/session and reused by the next demo with the same settings.  Exit status 0 when the chain
ran; 1 with the failing step's reason otherwise.  How it works: ``walkout/demo.py``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from walkout.commands.sim import _size


def register(sub: argparse._SubParsersAction) -> None:
    from walkout.demo import DemoOptions

    d = DemoOptions()
    p = sub.add_parser("demo", help="the whole store end to end: simulate, replay through the edge and "
                       "fusion, print receipts and the evaluation", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shoppers", type=int, default=d.shoppers, help="shoppers (default %(default)s)")
    p.add_argument("--duration", type=float, default=d.duration_s,
                   help="seconds simulated (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="simulation seed (default %(default)s)")
    p.add_argument("--preset", choices=["easy", "standard", "hard"], default=d.preset,
                   help="shopper behaviour (default %(default)s)")
    p.add_argument("--fps", type=float, default=d.fps, help="camera frame rate (default %(default)s)")
    p.add_argument("--size", type=_size, default=d.size,
                   help="camera image size WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--out", default=str(d.out), help="demo folder (default %(default)s)")
    p.add_argument("--perception", choices=["onnx", "truth"], default=d.perception,
                   help="onnx: the ONNX detector on the frames (default); truth: the true tracks with noise")
    p.add_argument("--model", help="ONNX model (default: walkout replay's, models/person_pose_int8.onnx)")
    p.add_argument("--broker", help="MQTT broker host:port (must answer) or 'embedded' (default: "
                   "127.0.0.1:1883 if it answers, else an embedded Mosquitto)")
    p.add_argument("--store-id", help="publish under this store id (default: the store's)")
    p.add_argument("--fresh", action="store_true", help="simulate again even if OUT/session matches")
    p.add_argument("--progress-every", type=float, default=d.progress_every_s,
                   help="seconds between progress lines (default %(default)s; 0: none)")
    p.add_argument("--recording-frames", type=float, default=d.recording_frames_hz,
                   help="camera frames per second copied into the recording (default %(default)s; 0: none)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from walkout.demo import DemoError, DemoOptions, run_demo

    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, flush=True)

    if args.recording_frames < 0 or args.progress_every < 0:
        print("error: --recording-frames and --progress-every must not be negative", file=sys.stderr)
        return 1
    opts = DemoOptions(out=Path(args.out), shoppers=args.shoppers, duration_s=args.duration, seed=args.seed,
                       preset=args.preset, fps=args.fps, size=args.size, perception=args.perception,
                       broker=args.broker, model=Path(args.model) if args.model else None,
                       store_id=args.store_id, fresh=args.fresh, progress_every_s=args.progress_every,
                       recording_frames_hz=args.recording_frames)
    try:
        run_demo(opts, say)
    except (DemoError, OSError) as exc:  # OSError: the demo folder or a file in it cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

"""``walkout sim [SCENARIO.yaml]``: simulate the store and write a session (MCAP + ground truth)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from calibration.config import ConfigError


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate the store: shoppers, cameras, load cells, gate; write a session",
                       description="Simulate a session and write session.mcap, truth.json and truth/ into --out. "
                       "Flags override the scenario file; the same seed gives the same session.")
    p.add_argument("scenario", nargs="?", help="scenario YAML (default: the preset's defaults)")
    p.add_argument("--preset", choices=["easy", "standard", "hard"], help="behaviour preset")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--shoppers", type=int, help="number of shoppers")
    p.add_argument("--duration", type=float, help="session length in seconds")
    p.add_argument("--out", default="sim_session", help="output folder (default: %(default)s)")
    p.add_argument("--store", help="store description YAML (default: sim/stores/default/store.yaml)")
    p.add_argument("--no-frames", action="store_true", help="write no camera frames (much faster)")
    p.add_argument("--fps", type=float, help="camera frame rate")
    p.add_argument("--size", type=_size, help="image size WIDTHxHEIGHT")
    p.add_argument("--preview", action="store_true", help="also write preview.png (every camera, busiest moment)")
    p.add_argument("--json", action="store_true", help="print the stats as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sim.run import simulate, stats_line
    from sim.scenario import scenario_from_file

    try:
        scn = scenario_from_file(args.scenario, preset=args.preset, seed=args.seed, shoppers=args.shoppers,
                                 duration_s=args.duration, store=args.store,
                                 frames=False if args.no_frames else None, fps=args.fps, size=args.size)
        result = simulate(scn, args.out, preview=args.preview,
                          progress=None if args.json else (lambda m: print(m, file=sys.stderr)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.stats, sort_keys=True))
    else:
        print(stats_line(result.stats))
        print(f"wrote {result.out_dir / 'session.mcap'}, {result.out_dir / 'truth.json'}")
    return 0

"""Receipt accuracy over many simulated seeds on truth perception: the figures fusion's issue is judged by.

    python -m bench.receipts [--preset standard|hard] [--seeds 221-232] [--sessions DIR] [--jobs 2]
                             [--set association.KEY=VALUE ...] [--json]

For each seed: ``walkout sim --preset P --seed S --shoppers N --duration 180 --no-frames`` (10 shoppers on
``standard``, 12 on ``hard``; kept in ``--sessions`` and reused when already there), then ``walkout replay
--in-process`` on truth perception (the session's true tracks, wrists and shelf events through realistic
noise, dropouts and id switches) and ``walkout eval``.  Prints a row per seed and the figures pooled over
all of them: receipt F1 over lines (a line is right only with the right product, quantity and shopper),
visits held for review, wrong charges (charged visits whose total is not the true one), the error causes
and exit -> receipt in event time (fusion's own waiting).

The association's settings were tuned by looking at seeds' events one by one (``docs/fusion_tuning.md`` lists
those seeds): judge a change on seeds it was not tuned on.  ``--set`` runs the same seeds under other fusion
settings (``association.min_margin=0.5``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from walkout.evaluate import _f1

SHOPPERS = {"standard": 10, "hard": 12, "easy": 6}
DURATION_S = 180.0


def parse_seeds(text: str) -> list[int]:
    """``"221-232,240"`` -> [221, ..., 232, 240]."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"--seeds {text!r}: expected numbers and ranges such as 221-232,240") from None
        if b < a:
            raise ValueError(f"--seeds {text!r}: range {part.strip()} runs backwards")
        out.extend(range(a, b + 1))
    return out


def session_for(preset: str, seed: int, sessions: Path) -> Path:
    """The simulated session of ``preset`` and ``seed`` under ``sessions`` (simulated when not there yet)."""
    from sim.run import simulate
    from sim.scenario import scenario_from_file

    out = sessions / f"{preset}-{seed}"
    if not (out / "truth.json").exists():
        scn = scenario_from_file(None, preset=preset, seed=seed, shoppers=SHOPPERS[preset],
                                 duration_s=DURATION_S, frames=False)
        simulate(scn, out)
    return out


def run_seed(args: tuple[str, int, str, dict[str, Any]]) -> dict[str, Any]:
    """Simulate (or reuse), replay and evaluate one seed; the evaluation's metrics."""
    from walkout.association_study import fusion_config
    from walkout.evaluate import evaluate
    from walkout.replay import ReplayOptions, replay

    preset, seed, sessions, overrides = args
    session = session_for(preset, seed, Path(sessions))
    with tempfile.TemporaryDirectory(prefix="bench-receipts-") as tmp:
        run_dir = Path(tmp) / "run"
        replay(session, run_dir, ReplayOptions(in_process=True, fusion_config=fusion_config(overrides)))
        m = evaluate(session, run_dir).metrics
    keep = ("receipt_f1", "lines_right", "lines_run", "lines_true", "visits_with_receipt", "visits_held",
            "visits_charged", "visits_wrong_charged", "exit_to_receipt_p50_s", "exit_to_receipt_p99_s",
            "error_causes")
    return {"seed": seed, **{k: m.get(k) for k in keep}}


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' figures pooled: over lines for F1, over visits for review and wrong charges."""
    right = sum(r["lines_right"] for r in rows)
    run = sum(r["lines_run"] for r in rows)
    true = sum(r["lines_true"] for r in rows)
    p = right / run if run else 1.0
    rc = right / true if true else 1.0
    receipts = sum(r["visits_with_receipt"] for r in rows)
    held = sum(r["visits_held"] for r in rows)
    charged = sum(r["visits_charged"] for r in rows)
    wrong = sum(r["visits_wrong_charged"] for r in rows)
    causes: Counter = Counter()
    for r in rows:
        causes.update(r.get("error_causes") or {})
    p99 = [r["exit_to_receipt_p99_s"] for r in rows if r["exit_to_receipt_p99_s"] is not None]
    p50 = [r["exit_to_receipt_p50_s"] for r in rows if r["exit_to_receipt_p50_s"] is not None]
    return {"seeds": len(rows), "receipt_precision": p, "receipt_recall": rc,
            "receipt_f1": _f1(p, rc),
            "lines_right": right, "lines_run": run, "lines_true": true,
            "visits": receipts, "visits_held": held, "review_rate": held / receipts if receipts else 0.0,
            "visits_charged": charged, "wrong_charges": wrong,
            "wrong_charge_rate": wrong / charged if charged else 0.0,
            "error_causes": dict(causes),
            "exit_to_receipt_p50_s_median": float(np.median(p50)) if p50 else None,
            "exit_to_receipt_p99_s_max": max(p99) if p99 else None}


def main(argv: list[str] | None = None) -> int:
    from walkout.association_study import parse_sets

    ap = argparse.ArgumentParser(prog="python -m bench.receipts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(SHOPPERS), default="standard")
    ap.add_argument("--seeds", default="221-232", help="seeds and ranges, e.g. 221-232,240 (default: 221-232)")
    ap.add_argument("--sessions", default=None,
                    help="folder for the simulated sessions, reused when there (default: a temporary one)")
    ap.add_argument("--jobs", type=int, default=2, help="seeds run at once")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a fusion setting for the replays (association.min_margin=0.5)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        seeds = parse_seeds(args.seeds)
        overrides = parse_sets(args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        sessions = Path(args.sessions or tmp)
        sessions.mkdir(parents=True, exist_ok=True)
        work = [(args.preset, s, str(sessions), overrides) for s in seeds]
        if args.jobs > 1:
            with ProcessPoolExecutor(max_workers=args.jobs) as ex:
                rows = list(ex.map(run_seed, work))
        else:
            rows = [run_seed(w) for w in work]
    total = pooled(rows)
    if args.json:
        print(json.dumps({"preset": args.preset, "overrides": overrides, "pooled": total, "per_seed": rows}))
        return 0
    print(f"truth perception, {args.preset}, {len(seeds)} seeds ({args.seeds})"
          + (f", with {args.set}" if args.set else ""))
    print(f"{'seed':>6} {'F1':>6} {'held':>5} {'wrong':>6} {'p50 s':>6} {'p99 s':>6}")
    for r in rows:
        print(f"{r['seed']:>6} {r['receipt_f1']:6.3f} {r['visits_held']:>5} {r['visits_wrong_charged']:>6} "
              f"{r['exit_to_receipt_p50_s'] or 0:6.2f} {r['exit_to_receipt_p99_s'] or 0:6.2f}")
    print(f"pooled: receipt F1 {total['receipt_f1']:.4f} ({total['lines_right']} of {total['lines_run']} lines "
          f"right, {total['lines_true']} true); held {total['visits_held']} of {total['visits']} visits "
          f"({100 * total['review_rate']:.1f} %); wrong charges {total['wrong_charges']} of "
          f"{total['visits_charged']} charged ({100 * total['wrong_charge_rate']:.1f} %)")
    p50, p99 = total["exit_to_receipt_p50_s_median"], total["exit_to_receipt_p99_s_max"]
    print(f"error causes (lines): {total['error_causes']}; exit -> receipt (event time): p50 median "
          f"{p50 if p50 is None else round(p50, 2)} s, p99 max {p99 if p99 is None else round(p99, 2)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

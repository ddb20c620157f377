"""``walkout eval SESSION RUN_DIR``: score a replay run against the session's ground truth.

Prints receipt precision, recall and F1 (a line is right only with the right product, quantity and visit),
exact carts, review and wrong-charge rates, shelf-event precision and recall, tracking HOTA/IDF1/MOTA per
camera and on the floor, and exit-to-receipt latency, then every visit that went wrong with the cause
(``--json``: one JSON object).  Writes the per-visit report to RUN_DIR/report/index.html (``--no-report``:
skip it).  How each figure is counted: ``walkout/evaluate.py``.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a replay run against the session's truth; write the report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", help="session folder (with truth.json) or its session.mcap")
    p.add_argument("run_dir", help="run folder written by walkout replay")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-report", action="store_true", help="do not write RUN_DIR/report/")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from walkout.evaluate import evaluate, summary_lines

    try:
        ev = evaluate(args.session, args.run_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.no_report:
        from walkout.replay import open_source
        from walkout.report import write_report

        store = open_source(args.session).store
        index = write_report(ev, args.session, args.run_dir, store)
        ev.metrics["report"] = str(index)
    if args.json:
        print(json.dumps(ev.metrics, sort_keys=True, default=str))
    else:
        print("\n".join(summary_lines(ev)))
        if "report" in ev.metrics:
            print(f"report: {ev.metrics['report']}")
    return 0

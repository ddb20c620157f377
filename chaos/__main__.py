"""``python -m chaos`` (``make chaos``): the whole fault suite on a simulator session; prints the table.

Each row is one scenario (see :mod:`chaos.scenarios` and :mod:`chaos.inputs`) with its target and what was
measured; the exit status is 0 only when every row met its target.  ``--json`` prints one JSON object instead
(rows with their figures).  Everything a run leaves (broker logs, fusion logs and databases, device logs) stays
in ``--out`` (default ``runs/chaos/latest``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from chaos import inputs, scenarios
from chaos.feed import ROOT, SESSIONS, load_feed
from chaos.live import reference
from chaos.scenarios import Row, Suite

GENERATED = ROOT / "runs" / "chaos" / "sessions"
# sessions the suite can make itself with the simulator (deterministic: same flags, same bytes)
RECIPES = {"standard-120": ["--preset", "standard", "--seed", "2", "--shoppers", "8", "--duration", "120",
                            "--no-frames"]}
SCENARIOS = ("baseline", "fusion-kills", "broker-kill", "camera-kill", "shelf-stall", "shelf-stall-exit",
             "shelf-cut", "dup-reorder-skew", "acl", "payload-fuzz", "config-fuzz")


def session_path(name: str) -> Path:
    """A committed session, a generated one (made on first use), or a folder."""
    for p in (Path(name), SESSIONS / name, GENERATED / name):
        if (p / "session.mcap").is_file():
            return p
    if name in RECIPES:
        out = GENERATED / name
        print(f"generating session {name} with the simulator ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "walkout.cli", "sim", *RECIPES[name], "--out", str(out)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
        return out
    raise SystemExit(f"error: no session {name!r} (a folder, a name under {SESSIONS}, or one of {list(RECIPES)})")


def print_table(rows: list[Row], out=sys.stdout) -> None:
    widths = (24, 46, 34, 60)
    head = ("scenario", "fault", "target", "measured")
    sep = "+-" + "-+-".join("-" * w for w in widths) + "-+------+"
    print(sep, file=out)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " | ok   |", file=out)
    print(sep, file=out)
    for r in rows:
        cols = [textwrap.wrap(str(x), w) or [""] for x, w in zip((r.scenario, r.fault, r.target, r.measured), widths,
                                                                 strict=True)]
        for i in range(max(len(c) for c in cols)):
            cells = [(c[i] if i < len(c) else "").ljust(w) for c, w in zip(cols, widths, strict=True)]
            ok = ("yes " if r.ok else "NO  ") if i == 0 else "    "
            print("| " + " | ".join(cells) + f" | {ok} |", file=out)
        print(sep, file=out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--session", default="standard-120", help="session name or folder (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=1.0, help="session pace, multiple of real time (default 1)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of fusion in one session (default 20)")
    p.add_argument("--cut-s", type=float, default=30.0, help="seconds the shelf gateway is cut off (default 30)")
    p.add_argument("--fuzz-per-topic", type=int, default=100_000, help="fuzzed payloads per topic (default 100000)")
    p.add_argument("--fuzz-lines", type=int, default=100_000, help="fuzzed load-cell lines (default 100000)")
    p.add_argument("--configs", type=int, default=10_000, help="fuzzed store configs (default 10000)")
    p.add_argument("--only", help=f"comma-separated scenarios of {', '.join(SCENARIOS)}")
    p.add_argument("--db", help="PostgreSQL URL for fusion (a schema per run); default SQLite in the run folder")
    p.add_argument("--out", default=str(ROOT / "runs" / "chaos" / "latest"), help="run folder (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("wire").setLevel(logging.ERROR)  # the fuzz makes the transports log every reject kind
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = only - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.monotonic()
    feed = load_feed(session_path(args.session), args.seed)

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    say(f"session {feed.name}: {len(feed.items)} messages over {feed.t1 - feed.t0:.0f} s, "
        f"{len(feed.devices())} devices")
    ref = reference(feed, out / "reference")
    say(f"reference: {len(ref.receipts)} receipts {dict(ref.statuses())}")
    db_url = None
    if args.db:
        base = args.db

        def db_url(name: str) -> str:
            sep = "&" if "?" in base else "?"
            return f"{base}{sep}schema=chaos_{name.replace('-', '_')}_{int(time.time())}"

    suite = Suite(feed, ref, out, speed=args.speed, seed=args.seed, db_url=db_url)
    plan = [
        ("baseline", lambda: scenarios.live_clean(suite)),
        ("fusion-kills", lambda: scenarios.fusion_kills(suite, args.kills)),
        ("broker-kill", lambda: scenarios.broker_kill(suite)),
        ("camera-kill", lambda: scenarios.camera_kill(suite)),
        ("shelf-stall", lambda: scenarios.shelf_stall(suite, seconds=args.cut_s)),
        ("shelf-stall-exit", lambda: scenarios.shelf_stall(suite, seconds=args.cut_s, across_exit=True)),
        ("shelf-cut", lambda: scenarios.shelf_cut(suite, seconds=args.cut_s)),
        ("dup-reorder-skew", lambda: scenarios.dup_reorder_skew(suite)),
        ("acl", lambda: inputs.acl_check(feed, out / "acl")),
        ("payload-fuzz", lambda: inputs.payload_fuzz(feed, out / "fuzz", args.fuzz_per_topic, args.fuzz_lines,
                                                     args.seed)),
        ("config-fuzz", lambda: inputs.config_fuzz(feed, args.configs, args.seed)),
    ]
    rows: list[Row] = []
    for name, fn in plan:
        if name not in only:
            continue
        say(f"{name} ...")
        try:
            row = fn()
        except Exception as exc:  # a scenario that breaks is a row that failed, not the end of the suite
            logging.getLogger("chaos").exception("scenario %s failed", name)
            row = Row(name, "(scenario did not complete)", "-", f"error: {type(exc).__name__}: {exc}"[:300], False)
        rows.append(row)
        say(f"{name}: {'at target' if row.ok else 'NOT at target'} ({row.seconds:.0f} s): {row.measured}")
    summary = {"session": feed.name, "messages": len(feed.items), "speed": args.speed, "seed": args.seed,
               "reference": dict(ref.statuses()), "seconds": round(time.monotonic() - t0, 1),
               "all_at_target": all(r.ok for r in rows),
               "rows": [{"scenario": r.scenario, "fault": r.fault, "target": r.target, "measured": r.measured,
                         "ok": r.ok, "seconds": round(r.seconds, 1), "figures": r.figures} for r in rows]}
    (out / "chaos.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(f"\nchaos suite: session {feed.name} ({len(feed.items)} messages, {feed.t1 - feed.t0:.0f} s at "
              f"{args.speed:g}x), reference {dict(ref.statuses())}, {summary['seconds']:.0f} s in all")
        print_table(rows)
        print(f"details: {out / 'chaos.json'}")
    return 0 if summary["all_at_target"] else 1


if __name__ == "__main__":
    sys.exit(main())

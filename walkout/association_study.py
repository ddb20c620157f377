"""Association study: record every shelf event's association evidence over simulated sessions once, then
re-decide every event offline under other association settings in seconds.

    python -m walkout.association_study record SESSION... --out DIR [--jobs 2] [--set KEY=VALUE ...]
                                               [--perception truth|onnx]
    python -m walkout.association_study score DIR [--set association.exclusion_weight=14 ...] [--json]

``record`` replays each session in-process on truth perception (``walkout replay --in-process``; with
``--perception onnx``, rendered sessions through the real camera pipeline and shelf gateway) with the engine
keeping each event's evidence (:class:`fusion.association.EventEvidence`: per candidate the body
distance and the wrists' per-instant distances), evaluates the run, and writes ``DIR/NAME.json``: per event the
evidence, who might have done it, what the engine decided, the true shopper and their visit's party, and for
each candidate the true shopper they were following at the event (the evaluation's :class:`Whereabouts`).

``score`` re-decides every event with :func:`fusion.association.weigh_among` and
:func:`fusion.association.weigh_siblings` -- the engine's own code -- under the recorded settings with the
``--set`` overrides applied, and prints per preset: events, held (margin below the threshold or no hand at
the lane), charged to the wrong shopper (confident and wrong), and the margins' bins; with overrides, also the
events whose outcome changed.  Only the association is re-made: settings that change what is gathered
(windows, approach, triangulation, the floor tracker) need a new ``record``; cart-level decisions (put-backs
matched by weight, product identification) are not modelled.  Receipt-level figures come from
``walkout eval``; these event-level ones are what the association alone decides.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.association import (
    PROFILE_S,
    Association,
    Candidate,
    EventEvidence,
    WristEvidence,
    busy,
    too_close_to_call,
    weigh_among,
    weigh_siblings,
)
from fusion.config import AssociationConfig, FusionConfig
from fusion.engine import EvidenceRecord
from walkout.evaluate import Whereabouts, evaluate

log = logging.getLogger(__name__)

FOLLOW_M = 0.6  # a fused shopper within this of a true shopper is following them ...
FOLLOW_AT_S = (-1.0, -0.5, 0.0, 0.5, 1.0)  # ... at most of these instants around the event
MARGIN_BINS = (0.0, 0.4, 0.6, 0.9, 1.0 + 1e-9)


# ------------------------------------------------------------------------------------------------ settings
def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["association.exclusion_weight=14", ...]`` as a nested dict (values parsed as JSON where they are)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. association.exclusion_weight=14")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def fusion_config(overrides: dict[str, Any]) -> FusionConfig:
    """The default settings with ``overrides`` (nested, as :func:`parse_sets` gives) applied and validated."""
    return FusionConfig.model_validate(_merge(FusionConfig().model_dump(), overrides))


# ------------------------------------------------------------------------------------------------ files
def _floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in a]


def record_to_dict(rec: EvidenceRecord) -> dict[str, Any]:
    ev, msg = rec.evidence, rec.event
    d = rec.decided
    return {
        "event_id": msg.event_id, "parent_id": msg.parent_id, "action": msg.action, "shelf": msg.shelf,
        "lanes": [ln.lane for ln in msg.lanes], "t_start": ev.t_start, "t_end": ev.t_end, "t_step": ev.t_step,
        "lanes_low_m": ev.lanes_low_m, "with_siblings": ev.siblings, "siblings": rec.siblings,
        "busy": rec.busy, "seq": rec.seq,
        "eligible": None if rec.eligible is None else sorted(rec.eligible),
        "decided": None if d is None else {"shopper": d.shopper, "p": d.p, "margin": d.margin,
                                           "uncertain": d.uncertain, "reason": d.reason},
        "candidates": [{"shopper": c.shopper, "body": c.body, "wrists": {
            "times": _floats(c.wrists.times), "triangulated": _floats(c.wrists.triangulated),
            "single": _floats(c.wrists.single), "cameras": list(c.wrists.cameras),
            "located": [int(x) for x in c.wrists.located], "at_lanes": _floats(c.wrists.at_lanes)},
            "profile": [None if math.isnan(x) else float(x) for x in c.profile],
            "heights": [None if math.isnan(x) else float(x) for x in c.heights]}
            for c in ev.candidates],
    }


def evidence_of(row: dict[str, Any]) -> EventEvidence:
    cands = []
    for c in row["candidates"]:
        w = c["wrists"]
        cands.append(Candidate(c["shopper"], float(c["body"]), WristEvidence(
            np.asarray(w["times"], float), np.asarray(w["triangulated"], float), np.asarray(w["single"], float),
            list(w["cameras"]), np.asarray(w["located"], int), np.asarray(w["at_lanes"], float)),
            np.array([np.nan if x is None else x for x in c.get("profile", [None] * len(PROFILE_S))], float),
            np.array([np.nan if x is None else x for x in c.get("heights", [None] * len(PROFILE_S))], float)))
    return EventEvidence(row["t_start"], row["t_end"], row["t_step"], row["lanes_low_m"], row["with_siblings"],
                         cands)


# ------------------------------------------------------------------------------------------------ record
def following(where: Whereabouts, fused: str, t: float) -> str | None:
    """The true shopper the fused one was following around ``t``: the nearest one (within ``FOLLOW_M``) at
    most of the instants ``FOLLOW_AT_S`` around it (the fused position lags and jitters by a few decimetres
    while a shopper bends into a shelf)."""
    votes = Counter()
    for dt in FOLLOW_AT_S:
        f = where.following(fused, t + dt)
        if f is not None and f[1] <= FOLLOW_M:
            votes[f[0]] += 1
    if not votes:
        return None
    who, n = votes.most_common(1)[0]
    return who if 2 * n > len(FOLLOW_AT_S) else None


def record_session(session: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None,
                   perception: str = "truth") -> Path:
    """Replay ``session`` in-process on ``perception`` (truth, or onnx for a rendered session) keeping the
    association evidence, label it with the truth, and write ``out_dir/NAME.json`` (NAME: the session folder's
    name)."""
    from walkout.replay import ReplayOptions, replay

    session = Path(session)
    if session.is_file():
        session = session.parent
    overrides = overrides or {}
    with tempfile.TemporaryDirectory(prefix="assoc-study-") as tmp:
        run_dir = Path(tmp) / "run"
        res = replay(session, run_dir, ReplayOptions(in_process=True, keep_evidence=True, perception=perception,
                                                     fusion_config=fusion_config(overrides)))
        ev = evaluate(session, run_dir)
        where = Whereabouts(ev.truth, session / "truth" / "trajectories.csv", run_dir / "floor_tracks.csv")
    true_events = {t["event_id"]: t for t in ev.truth.get("events", [])}
    party_of = {v["visit"]: list(v["party"]) for v in ev.truth.get("visits", [])}
    rows = []
    for eid, rec in sorted((res.evidence or {}).items()):
        row = record_to_dict(rec)
        tev = true_events.get(ev.event_match.get(eid, ""))
        row["true_shopper"] = tev["shopper"] if tev else None
        row["true_party"] = party_of.get(tev["visit"], [tev["shopper"]]) if tev else []
        t = float(tev.get("t_change", tev["t_start"])) if tev else rec.event.t_start
        for c in row["candidates"]:
            c["follows"] = following(where, c["shopper"], t)
        rows.append(row)
    m = ev.metrics
    out = Path(out_dir) / f"{session.name}.json"
    out.write_text(json.dumps({
        "session": str(session), "preset": ev.truth.get("session", {}).get("preset"), "overrides": overrides,
        "perception": perception,
        "receipts": {k: m.get(k) for k in ("receipt_f1", "review_rate", "wrong_charge_rate", "visits")},
        "events": rows}) + "\n")
    return out


# ------------------------------------------------------------------------------------------------ score
@dataclass
class Outcome:
    event_id: str
    shopper: str | None
    margin: float
    held: bool
    right: bool | None  # None: no true shopper to judge by (a spurious event)
    reason: str


def decide(rows: list[dict[str, Any]], cfg: AssociationConfig) -> dict[str, Association]:
    """Every event's association as the engine makes it: alone, or weighed with its siblings; then, in the
    order the engine decided them, those too close to call weighed against the events around them that the
    engine had decided by then (under other settings, an event the engine decided at once may now be too close
    to call: it is weighed against those decided before it, a subset of what the engine would wait for)."""
    first = _decide_first(rows, cfg)
    out = dict(first)
    if cfg.busy_window_s > 0:
        for r in sorted(rows, key=lambda r: r.get("seq", -1)):
            a = first[r["event_id"]]
            if too_close_to_call(a, cfg):
                out[r["event_id"]] = busy(a, [out[e] for e in r.get("busy", []) if e in out], cfg)
    return out


def _decide_first(rows: list[dict[str, Any]], cfg: AssociationConfig) -> dict[str, Association]:
    out: dict[str, Association] = {}
    by_id = {r["event_id"]: r for r in rows}
    for r in rows:
        if r["event_id"] in out:
            continue
        group = [by_id[e] for e in r["siblings"] if e in by_id] or [r]
        assocs = [weigh_among(evidence_of(g), cfg, None if g["eligible"] is None else set(g["eligible"]))
                  for g in group]
        if len(group) > 1:
            assocs = weigh_siblings(assocs, cfg)
        out.update({g["event_id"]: a for g, a in zip(group, assocs, strict=True)})
    return out


def outcomes(rows: list[dict[str, Any]], cfg: AssociationConfig) -> list[Outcome]:
    decided = decide(rows, cfg)
    out = []
    for r in rows:
        a = decided[r["event_id"]]
        follows = {c["shopper"]: c["follows"] for c in r["candidates"]}
        right = None
        if r["true_shopper"] is not None:
            right = a.shopper is not None and follows.get(a.shopper) in set(r["true_party"])
        out.append(Outcome(r["event_id"], a.shopper, a.margin, a.uncertain, right, a.reason))
    return out


def summarise(sessions: dict[str, dict[str, Any]], cfg: AssociationConfig) -> dict[str, Any]:
    """Per preset: events, held, right, charged to the wrong shopper, and the margins' bins; and each
    session's outcomes (for comparing settings)."""
    per: dict[str, Counter] = defaultdict(Counter)
    bins: dict[str, Counter] = defaultdict(Counter)
    detail: dict[str, list[Outcome]] = {}
    for name, s in sorted(sessions.items()):
        preset = s.get("preset") or "?"
        detail[name] = outs = outcomes(s["events"], cfg)
        multi = {r["event_id"] for r in s["events"] if len(r["candidates"]) >= 2}
        for o in outs:
            c = per[preset]
            c["events"] += 1
            c["held"] += o.held
            if o.right is None:
                c["spurious"] += 1
                continue
            c["right_charged"] += o.right and not o.held
            c["wrong_charged"] += (not o.right) and not o.held
            c["held_right"] += o.right and o.held
            c["held_wrong"] += (not o.right) and o.held
            if o.event_id in multi:
                b = int(np.searchsorted(MARGIN_BINS, o.margin, side="right")) - 1
                lo, hi = MARGIN_BINS[b], min(MARGIN_BINS[b + 1], 1.0)
                bins[preset][f"{lo:.1f}-{hi:.1f} {'right' if o.right else 'wrong'}"] += 1
    return {"presets": {p: dict(c) for p, c in sorted(per.items())},
            "margins": {p: dict(sorted(c.items())) for p, c in sorted(bins.items())},
            "detail": detail}


def load(dir_: str | Path) -> dict[str, dict[str, Any]]:
    files = sorted(Path(dir_).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{dir_}: no recorded sessions (python -m walkout.association_study record)")
    return {f.stem: json.loads(f.read_text()) for f in files}


def recorded_overrides(sessions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings the sessions were recorded with (all alike, or the study would compare apples and pears)."""
    seen = {json.dumps(s.get("overrides", {}), sort_keys=True) for s in sessions.values()}
    if len(seen) > 1:
        raise ValueError(f"sessions recorded with different settings: {sorted(seen)}")
    return json.loads(seen.pop())


def reproduced(sessions: dict[str, dict[str, Any]], cfg: AssociationConfig) -> tuple[int, int]:
    """(events re-decided as the engine decided them, events with a decision recorded) under ``cfg``."""
    same = total = 0
    for s in sessions.values():
        got = decide(s["events"], cfg)
        for r in s["events"]:
            d = r["decided"]
            if d is None:
                continue
            total += 1
            a = got[r["event_id"]]
            same += (a.shopper == d["shopper"] and a.uncertain == d["uncertain"]
                     and math.isclose(a.margin, d["margin"], abs_tol=1e-9))
    return same, total


def changes(before: dict[str, list[Outcome]], after: dict[str, list[Outcome]]) -> list[str]:
    def state(o: Outcome) -> str:
        what = "held" if o.held else "charged"
        judged = "?" if o.right is None else ("right" if o.right else "wrong")
        return f"{what} {judged} ({o.shopper}, margin {o.margin:.2f})"

    out = []
    for name in sorted(after):
        for b, a in zip(before[name], after[name], strict=True):
            if (b.shopper, b.held) != (a.shopper, a.held):
                out.append(f"{name} {a.event_id}: {state(b)} -> {state(a)}")
    return out


def _table(summary: dict[str, Any]) -> list[str]:
    lines = [f"{'preset':10} {'events':>7} {'held':>5} {'(right':>7} {'wrong)':>7} {'charged wrong':>14} {'spurious':>9}"]
    for p, c in summary["presets"].items():
        lines.append(f"{p:10} {c.get('events', 0):7d} {c.get('held', 0):5d} {c.get('held_right', 0):7d} "
                     f"{c.get('held_wrong', 0):7d} {c.get('wrong_charged', 0):14d} {c.get('spurious', 0):9d}")
    for p, c in summary["margins"].items():
        lines.append(f"{p} margins (events with 2+ candidates): "
                     + ", ".join(f"{k} {v}" for k, v in c.items()))
    return lines


# ------------------------------------------------------------------------------------------------ command
def _record_one(args: tuple[str, str, dict[str, Any], str]) -> str:
    return str(record_session(*args))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m walkout.association_study", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="replay sessions keeping each event's evidence, labelled with the truth")
    rec.add_argument("sessions", nargs="+", help="simulated session folders (walkout sim --out)")
    rec.add_argument("--out", required=True, help="folder for the recorded evidence (one JSON file per session)")
    rec.add_argument("--jobs", type=int, default=2, help="sessions replayed at once")
    rec.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="fusion setting for the replays, e.g. association.approach_m=0.1 (repeatable)")
    rec.add_argument("--perception", choices=("truth", "onnx"), default="truth",
                     help="truth perception (default) or the ONNX camera pipeline and the shelf gateway on a "
                          "rendered session's frames and load cells")
    sc = sub.add_parser("score", help="re-decide the recorded events under other association settings")
    sc.add_argument("dir", help="a folder written by record")
    sc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="association setting to try, e.g. association.exclusion_weight=14 (repeatable)")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = parse_sets(args.set)
        fusion_config(overrides)  # fail now, not in a worker
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "record":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        jobs = [(s, str(out), overrides, args.perception) for s in args.sessions]
        with ProcessPoolExecutor(max(1, args.jobs)) as pool:
            for path in pool.map(_record_one, jobs):
                print(path, flush=True)
        return 0
    sessions = load(args.dir)
    base = recorded_overrides(sessions)
    base_cfg = fusion_config(base).association
    cfg = fusion_config(_merge(base, overrides)).association
    same, total = reproduced(sessions, base_cfg)
    before = summarise(sessions, base_cfg)
    after = summarise(sessions, cfg) if overrides else before
    moved = changes(before["detail"], after["detail"])
    if args.json:
        print(json.dumps({"reproduced": same, "decided": total, "recorded": before["presets"],
                          "now": after["presets"], "margins": after["margins"], "changed": moved}))
        return 0
    print(f"{len(sessions)} sessions; the engine's decisions re-made under the recorded settings: "
          f"{same} of {total}")
    if overrides:
        print("recorded settings:")
        print("\n".join(_table(before)))
        print(f"with {' '.join(args.set)}:")
    print("\n".join(_table(after)))
    if moved:
        print(f"{len(moved)} events changed:")
        print("\n".join(moved))
    return 0


if __name__ == "__main__":
    sys.exit(main())

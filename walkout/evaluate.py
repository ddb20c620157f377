"""Compare a replay run (``walkout replay``'s run folder) with the session's ground truth.

``evaluate(session, run_dir)`` returns a :class:`Evaluation`: the figures (``metrics``, one flat dict) and,
per true visit, what went wrong and why (``visits``), which :mod:`walkout.report` draws.

How each figure is counted
--------------------------
* Visits are matched by account: each complete true visit (every shopper left) to the run's receipt for
  that account (nearest entry time when an account came more than once).  Receipts of incomplete true
  visits are left out; receipts for accounts that never visited count as wrong lines.
* ``receipt_precision`` / ``receipt_recall`` / ``receipt_f1``: a receipt line ``(sku, qty)`` is right only if
  the matched true visit's receipt has the same product with the same quantity; summed over visits.  Lines of
  receipts held for review count too (they are what fusion believed).  A true visit without a receipt
  contributes all its lines as misses.
* ``exact_cart_rate``: true visits whose receipt has exactly the true lines.
* ``review_rate``: receipts ``held_for_review`` / receipts (of complete true visits).
* ``wrong_charge_rate``: receipts ``charged`` with a total other than the true total / receipts charged.
* ``event_precision`` / ``event_recall``: a published shelf event and a true event correspond when they are
  on the same shelf, share a lane, overlap in time (padded by ``EVENT_PAD_S``) and are both picks or both
  puts; one-to-one, nearest in time first.  A corresponding pair is right when the event's best candidate
  has the true SKU and quantity.  Precision: right pairs / published events; recall: right pairs / true
  events.  ``event_detect_precision`` / ``event_detect_recall`` count every corresponding pair, right product
  or not (detection alone); ``events_by_kind`` gives, per true kind (``pick``, ``put_back``, ``misplace``,
  ``pick_of_misplaced``), how many true events were right of how many (``{"right": r, "true": n}``).
* ``hota``, ``idf1``, ``mota`` (and ``per_camera``): each camera's published tracks (``tracks/{camera}.txt``)
  against the session's MOT truth (``truth/{camera}.txt``), or, for a session without frames, against truth
  perception's projected truth (``truth_mot/``); IoU similarity (:mod:`walkout.mot`).  The headline figures
  are the cameras' figures weighted by their true boxes.  ``floor_hota``, ``floor_idf1``, ``floor_mota``:
  fused shoppers (``floor_tracks.csv``) against the true trajectories of shoppers inside the store, per
  camera frame, similarity ``max(0, 1 - d / FLOOR_D_M)`` (a match at d <= ``FLOOR_D_M / 2``).
* ``exit_to_receipt_p50_s`` / ``_p99_s``: per receipt (not those only produced by the end of input), its
  arrival against the visit's true exit.  Runs paced at ``speed`` > 0: arrival wall time minus the wall time
  the replay reached the exit's capture time (``w0 + (exit - t0) / speed``), in wall seconds -- at 1x the
  real latency of the whole chain.  Runs at maximum speed: the receipt's settle time (event time) minus the
  true exit, the part of the latency that is fusion's waiting in event time.  ``exit_to_receipt_basis``
  says which.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from walkout.mot import MotSequence
from walkout.mot import evaluate as mot_evaluate
from walkout.replay import read_jsonl

log = logging.getLogger(__name__)

EVENT_PAD_S = 1.0
FLOOR_D_M = 1.0
PICK_KINDS = ("pick", "pick_of_misplaced")
REQUIRED_KEYS = ("receipt_precision", "receipt_recall", "receipt_f1", "exact_cart_rate", "review_rate",
                 "wrong_charge_rate", "event_precision", "event_recall", "hota", "idf1", "mota",
                 "exit_to_receipt_p50_s", "exit_to_receipt_p99_s", "visits")


@dataclass
class VisitResult:
    """One true visit (or a receipt for an account that never visited) and what the run made of it."""

    visit: str  # true visit id ("" for a receipt without a true visit)
    account: str
    shoppers: list[str]
    run_visit: str | None
    status: str | None  # receipt status, None: no receipt
    true_lines: list[tuple[str, int]]
    run_lines: list[tuple[str, int]]
    true_total: int
    run_total: int | None
    exact: bool
    missing: list[tuple[str, int]]
    extra: list[tuple[str, int]]
    problems: list[str] = field(default_factory=list)  # why, one sentence each
    reasons: list[str] = field(default_factory=list)  # fusion's own reasons (held for review)
    run_shoppers: list[str] = field(default_factory=list)
    entered_at: float | None = None
    exited_at: float | None = None


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    visits: list[VisitResult]
    event_match: dict[str, str]  # run event id -> true event id (corresponding pairs)
    truth: dict
    run: dict


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def _lines(receipt_lines: list[dict]) -> list[tuple[str, int]]:
    return sorted((ln["sku"], int(ln["qty"])) for ln in receipt_lines)


# ------------------------------------------------------------------------------------------------ receipts
def match_visits(true_visits: list[dict], receipts: list[dict]) -> tuple[dict[str, dict], list[dict]]:
    """{true visit id: receipt} by account (nearest entry time), and the receipts left over."""
    by_acct: dict[str, list[dict]] = defaultdict(list)
    for r in receipts:
        by_acct[r["account"]].append(r)
    out: dict[str, dict] = {}
    for v in sorted(true_visits, key=lambda v: (v.get("scan_t") or v.get("entered_at") or 0.0, v["visit"])):
        cands = by_acct.get(v["account"])
        if not cands:
            continue
        t = v.get("scan_t") or v.get("entered_at") or 0.0
        best = min(range(len(cands)), key=lambda i: abs(cands[i]["entered_at"] - t))
        out[v["visit"]] = cands.pop(best)
    left = [r for rs in by_acct.values() for r in rs]
    return out, left


def receipt_metrics(truth: dict, receipts: list[dict]) -> tuple[dict[str, Any], list[VisitResult]]:
    complete = [v for v in truth.get("visits", []) if v.get("complete")]
    incomplete = [v for v in truth.get("visits", []) if not v.get("complete")]
    matched, left = match_visits(complete, receipts)
    _, left = match_visits(incomplete, left)  # receipts of visits still open at the end: not counted
    tp = n_run = n_true = exact = held = charged = wrong_charge = 0
    results = []
    for v in complete:
        r = matched.get(v["visit"])
        tl = _lines(v["receipt"]["lines"])
        rl = _lines(r["lines"]) if r else []
        common = sum((Counter(tl) & Counter(rl)).values())
        tp += common
        n_true += len(tl)
        n_run += len(rl)
        ok = r is not None and tl == rl
        exact += ok
        if r is not None:
            held += r["status"] == "held_for_review"
            if r["status"] == "charged":
                charged += 1
                wrong_charge += r["total"] != v["receipt"]["total"]
        results.append(VisitResult(
            v["visit"], v["account"], list(v["party"]), r["visit"] if r else None, r["status"] if r else None,
            tl, rl, v["receipt"]["total"], r["total"] if r else None, ok,
            sorted((Counter(tl) - Counter(rl)).elements()), sorted((Counter(rl) - Counter(tl)).elements()),
            reasons=list(r.get("reasons", [])) if r else [], entered_at=v.get("entered_at"),
            exited_at=v.get("exited_at")))
    for r in left:
        rl = _lines(r["lines"])
        n_run += len(rl)
        results.append(VisitResult("", r["account"], [], r["visit"], r["status"], [], rl, 0, r["total"], False,
                                   [], rl, reasons=list(r.get("reasons", []))))
    n_receipts = len(matched)
    p, rc = _ratio(tp, n_run), _ratio(tp, n_true)
    metrics = {
        "receipt_precision": p if p is not None else (1.0 if n_true == 0 else 0.0),
        "receipt_recall": rc if rc is not None else 1.0,
        "exact_cart_rate": _ratio(exact, len(complete)),
        "review_rate": _ratio(held, n_receipts),
        "wrong_charge_rate": _ratio(wrong_charge, charged) if charged else 0.0,
        "visits": len(complete),
        "visits_with_receipt": n_receipts,
        "visits_charged": charged,
        "visits_wrong_charged": wrong_charge,
        "visits_held": held,
        "receipts_without_visit": len(left),
        "lines_true": n_true,
        "lines_run": n_run,
        "lines_right": tp,
    }
    metrics["receipt_f1"] = _f1(metrics["receipt_precision"], metrics["receipt_recall"])
    return metrics, results


# ------------------------------------------------------------------------------------------------ events
def _action_of(kind: str) -> str:
    return "pick" if kind in PICK_KINDS else "put"


def match_events(true_events: list[dict], run_events: list[dict]) -> tuple[dict[str, str], set[str], set[str]]:
    """Corresponding pairs ``{run event id: true event id}`` and the sets of right run / true events."""
    pairs = []
    for i, r in enumerate(run_events):
        lanes = {ln["lane"] for ln in r["lanes"]}
        for j, t in enumerate(true_events):
            if t["shelf"] != r["shelf"] or not lanes & set(t["lanes"]) or _action_of(t["kind"]) != r["action"]:
                continue
            if r["t_start"] - EVENT_PAD_S > t["t_end"] or r["t_end"] + EVENT_PAD_S < t["t_start"]:
                continue
            gap = abs(r["t_start"] - t["t_start"]) + abs(r["t_end"] - t["t_end"])
            best = r["candidates"][0] if r.get("candidates") else None
            right = best is not None and best["sku"] == t["sku"] and int(best["qty"]) == int(t["qty"])
            pairs.append((not right, gap, i, j, right))
    pairs.sort()
    used_r, used_t = set(), set()
    out: dict[str, str] = {}
    right_r: set[str] = set()
    right_t: set[str] = set()
    for _, _, i, j, right in pairs:
        if i in used_r or j in used_t:
            continue
        used_r.add(i)
        used_t.add(j)
        rid, tid = run_events[i]["event_id"], true_events[j]["event_id"]
        out[rid] = tid
        if right:
            right_r.add(rid)
            right_t.add(tid)
    return out, right_r, right_t


def event_metrics(truth: dict, run_events: list[dict]) -> tuple[dict[str, Any], dict[str, str]]:
    true_events = truth.get("events", [])
    pairs, right_r, right_t = match_events(true_events, run_events)
    p = _ratio(len(right_r), len(run_events))
    r = _ratio(len(right_t), len(true_events))
    dp = _ratio(len(pairs), len(run_events))
    dr = _ratio(len(pairs), len(true_events))
    by_kind: dict[str, dict[str, int]] = {}
    for t in true_events:
        k = by_kind.setdefault(t.get("kind", "pick"), {"right": 0, "true": 0})
        k["true"] += 1
        k["right"] += t["event_id"] in right_t
    return {"event_precision": p if p is not None else 1.0, "event_recall": r if r is not None else 1.0,
            "event_detect_precision": dp if dp is not None else 1.0,
            "event_detect_recall": dr if dr is not None else 1.0,
            "events_true": len(true_events), "events_run": len(run_events),
            "events_right": len(right_t), "events_matched": len(pairs),
            "events_by_kind": dict(sorted(by_kind.items()))}, pairs


# ------------------------------------------------------------------------------------------------ tracking
def read_mot_rows(path: Path) -> MotSequence:
    """A MOT-style file (``#`` comments allowed; extra columns ignored) as a :class:`MotSequence`; rows with
    an empty box are left out."""
    rows = []
    for ln in Path(path).read_text().splitlines():
        if not ln.strip() or ln.startswith("#"):
            continue
        v = ln.split(",")
        rows.append((float(v[0]), float(v[1]), float(v[2]), float(v[3]), float(v[4]), float(v[5]),
                     float(v[6]) if len(v) > 6 else 1.0))
    if not rows:
        return MotSequence.empty()
    a = np.asarray(rows)
    a = a[(a[:, 4] > 0) & (a[:, 5] > 0)]
    boxes = np.column_stack([a[:, 2], a[:, 3], a[:, 2] + a[:, 4], a[:, 3] + a[:, 5]])
    return MotSequence.from_rows(a[:, 0].astype(int), a[:, 1].astype(int), boxes, a[:, 6])


def camera_metrics(session_dir: Path, run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    tracks = run_dir / "tracks"
    if not tracks.is_dir():
        return out
    for pred_path in sorted(tracks.glob("*.txt")):
        cam = pred_path.stem
        gt_path = session_dir / "truth" / f"{cam}.txt"
        basis = "session"
        if not gt_path.is_file():
            gt_path = run_dir / "truth_mot" / f"{cam}.txt"
            basis = "projected"
        if not gt_path.is_file():
            continue
        m = mot_evaluate(read_mot_rows(gt_path), read_mot_rows(pred_path))
        out[cam] = {"hota": m.hota, "idf1": m.idf1, "mota": m.mota, "id_switches": m.id_switches,
                    "num_gt": m.num_gt, "truth": basis}
    return out


def _weighted(per: dict[str, dict[str, Any]], key: str) -> float | None:
    w = sum(v["num_gt"] for v in per.values())
    if not w:
        return None
    return sum(v[key] * v["num_gt"] for v in per.values()) / w


def floor_metrics(truth: dict, traj_path: Path, floor_path: Path) -> dict[str, Any]:
    """Fused shoppers on the floor against the true trajectories (see the module docstring)."""
    from walkout import mot
    from walkout.truth_perception import read_trajectories, session_frames

    if not traj_path.is_file() or not floor_path.is_file():
        return {}
    start, fps, _ = session_frames(truth)
    tr = read_trajectories(traj_path)
    inside = {s["shopper"]: (s.get("entered_at"), s.get("exited_at")) for s in truth.get("shoppers", [])}
    keep = np.array([inside.get(s, (None, None))[0] is not None and inside[s][0] <= t
                     and (inside[s][1] is None or t <= inside[s][1])
                     for s, t in zip(tr.shopper, tr.t, strict=True)], bool)
    g_frame = np.rint((tr.t[keep] - start) * fps).astype(int)
    g_ids = np.unique(tr.shopper[keep], return_inverse=True)[1]
    g_xy = tr.xy[keep]
    rows = [ln.split(",") for ln in floor_path.read_text().splitlines()[1:] if ln.strip()]
    if rows:
        p_t = np.array([float(r[0]) for r in rows])
        p_ids = np.unique([r[1] for r in rows], return_inverse=True)[1]
        p_xy = np.array([[float(r[3]), float(r[4])] for r in rows])
        p_frame = np.rint((p_t - start) * fps).astype(int)
        # one position per shopper per frame (the last one)
        key = p_frame * (p_ids.max() + 1) + p_ids
        _, last = np.unique(key[::-1], return_index=True)
        sel = len(key) - 1 - last
        p_frame, p_ids, p_xy = p_frame[sel], p_ids[sel], p_xy[sel]
    else:
        p_frame = p_ids = np.zeros(0, int)
        p_xy = np.zeros((0, 2))
    frames = np.union1d(g_frame, p_frame)
    g_ord, p_ord = np.argsort(g_frame, kind="stable"), np.argsort(p_frame, kind="stable")
    gs, ps = g_frame[g_ord], p_frame[p_ord]
    g_lo, g_hi = np.searchsorted(gs, frames, "left"), np.searchsorted(gs, frames, "right")
    p_lo, p_hi = np.searchsorted(ps, frames, "left"), np.searchsorted(ps, frames, "right")
    gt_ids, pr_ids, sims = [], [], []
    for k in range(len(frames)):
        gi = g_ord[g_lo[k]:g_hi[k]]
        pi = p_ord[p_lo[k]:p_hi[k]]
        d = np.linalg.norm(g_xy[gi][:, None] - p_xy[pi][None], axis=2)
        gt_ids.append(g_ids[gi])
        pr_ids.append(p_ids[pi])
        sims.append(np.clip(1.0 - d / FLOOR_D_M, 0.0, 1.0))
    if not gt_ids:
        return {}
    fr = mot._Frames(gt_ids, pr_ids, sims, int(g_ids.max() + 1) if len(g_ids) else 0,
                     int(p_ids.max() + 1) if len(p_ids) else 0)
    h = mot._hota(fr)
    c = mot._clear(fr, 0.5)
    i = mot._identity(fr, 0.5)
    return {"floor_hota": h["hota"], "floor_idf1": i["idf1"], "floor_mota": c["mota"],
            "floor_id_switches": c["id_switches"], "floor_shoppers_true": int(fr.num_gt_ids),
            "floor_shoppers_fused": int(fr.num_pr_ids)}


# ------------------------------------------------------------------------------------------------ latency
def latency_metrics(truth: dict, run: dict, times: list[dict], matched: dict[str, str]) -> dict[str, Any]:
    """``matched``: run visit id -> true visit id."""
    exits = {v["visit"]: v.get("exited_at") for v in truth.get("visits", [])}
    speed = float(run.get("speed") or 0.0)
    t0, w0 = run.get("t0"), run.get("w0")
    lat = []
    at_end = 0
    for row in times:
        tv = matched.get(row["visit"])
        ex = exits.get(tv) if tv else None
        if ex is None:
            continue
        if row.get("at_end"):
            at_end += 1
            continue
        if speed > 0 and t0 is not None:
            lat.append(row["received_wall"] - (w0 + (ex - t0) / speed))
        else:
            lat.append(row["settled_at"] - ex)
    out: dict[str, Any] = {"exit_to_receipt_basis": "wall" if speed > 0 else "event",
                           "exit_to_receipt_n": len(lat), "receipts_at_end_of_input": at_end}
    out["exit_to_receipt_p50_s"] = float(np.percentile(lat, 50)) if lat else None
    out["exit_to_receipt_p99_s"] = float(np.percentile(lat, 99)) if lat else None
    return out


# ------------------------------------------------------------------------------------------------ why
class Whereabouts:
    """Who the fused shoppers were following: a fused shopper's position at a time against the true
    shoppers' positions then."""

    def __init__(self, truth: dict, traj_path: Path, floor_path: Path):
        from walkout.truth_perception import read_trajectories

        self.true: dict[str, np.ndarray] = {}
        self.fused: dict[str, np.ndarray] = {}
        if traj_path.is_file():
            tr = read_trajectories(traj_path)
            for sid in np.unique(tr.shopper):
                k = tr.shopper == sid
                self.true[str(sid)] = np.column_stack([tr.t[k], tr.xy[k]])
        if floor_path.is_file():
            rows = defaultdict(list)
            for ln in floor_path.read_text().splitlines()[1:]:
                t, sid, _, x, y = ln.split(",")
                rows[sid].append((float(t), float(x), float(y)))
            self.fused = {k: np.asarray(v) for k, v in rows.items()}

    @staticmethod
    def _at(path: np.ndarray, t: float, tol: float) -> np.ndarray | None:
        if path is None or not len(path):
            return None
        i = int(np.argmin(np.abs(path[:, 0] - t)))
        return path[i, 1:3] if abs(path[i, 0] - t) <= tol else None

    def following(self, fused: str | None, t: float) -> tuple[str, float] | None:
        """(true shopper nearest the fused shopper at ``t``, distance), or None when unknown."""
        p = self._at(self.fused.get(fused or ""), t, 1.0)
        if p is None:
            return None
        best = None
        for sid, path in self.true.items():
            q = self._at(path, t, 0.06)
            if q is not None:
                d = float(np.linalg.norm(p - q))
                if best is None or d < best[1]:
                    best = (sid, d)
        return best

    def first_t(self, fused: str | None) -> float | None:
        path = self.fused.get(fused or "")
        return None if path is None or not len(path) else float(path[0, 0])

    def distance(self, fused: str | None, shopper: str, t: float) -> float | None:
        p = self._at(self.fused.get(fused or ""), t, 1.0)
        q = self._at(self.true.get(shopper), t, 0.06)
        return None if p is None or q is None else float(np.linalg.norm(p - q))


def _why_wrong_shopper(where: Whereabouts | None, fused: str | None, tev: dict, party: list[str]) -> str:
    """Tell a floor-tracking identity error (at the gate or later) from an association error for an event
    given to fused shopper ``fused``, bound to a visit whose true shoppers are ``party``."""
    if where is None:
        return ""
    t = float(tev.get("t_change", tev["t_start"]))
    f = where.following(fused, t)
    if f is None:
        return ""
    sid, d = f
    if sid == tev["shopper"]:
        t0 = where.first_t(fused)
        s0 = where.following(fused, t0 + 0.5) if t0 is not None else None
        if s0 is not None and party and s0[0] not in party:
            return (f"; fused {fused} was on {tev['shopper']} then ({d:.2f} m); it started on {s0[0]} at the "
                    f"gate, who is not of the visit it was bound to ({', '.join(party)}) -- the gate bound the "
                    f"wrong shopper")
        return (f"; fused {fused} was on {tev['shopper']} then ({d:.2f} m) but started on a shopper of the visit "
                f"it was bound to -- the floor tracker mixed up identities on the way")
    d_true = where.distance(fused, tev["shopper"], t)
    far = f"{d_true:.2f} m" if d_true is not None else "?"
    return (f"; fused {fused} was on {sid} then ({d:.2f} m), {tev['shopper']} was {far} from it -- the "
            f"association chose the wrong shopper")


def explain(results: list[VisitResult], truth: dict, run_events: list[dict], event_match: dict[str, str],
            cart_lines: list[dict], run_visits: list[dict], review: list[dict],
            where: Whereabouts | None = None) -> None:
    """Fill each visit's ``problems``: for every wrong or missing line, the true events behind it and what
    the run did with them (event missed, product mistaken, given to another visit -- by a floor identity
    mix-up or by the association --, not assigned ...)."""
    true_events = {e["event_id"]: e for e in truth.get("events", [])}
    run_ev = {e["event_id"]: e for e in run_events}
    true_of_run = event_match
    run_of_true: dict[str, list[str]] = defaultdict(list)
    for rid, tid in event_match.items():
        run_of_true[tid].append(rid)
    line_of_event = {ln["event_id"]: ln for ln in cart_lines if ln.get("event_id")}
    visit_acct = {v["visit"]: v["account"] for v in run_visits}
    visit_shoppers = {v["visit"]: v.get("shoppers", []) for v in run_visits}
    true_visit_acct = {v["visit"]: v["account"] for v in truth.get("visits", [])}
    party_of_acct: dict[str, list[str]] = defaultdict(list)
    for v in truth.get("visits", []):
        party_of_acct[v["account"]].extend(v.get("party", []))
    unassigned = {r["event_id"]: r["reason"] for r in review if r.get("kind") == "event" and r.get("event_id")}
    for res in results:
        res.run_shoppers = list(visit_shoppers.get(res.run_visit or "", []))
        if res.exact and res.status != "held_for_review":
            continue
        skus = {s for s, _ in res.missing} | {s for s, _ in res.extra}
        # the true events of this visit that touch a wrong product
        for tev in (e for e in truth.get("events", []) if e["visit"] == res.visit and e["sku"] in skus):
            what = f"{tev['event_id']} ({tev['kind']} {tev['qty']} x {tev['sku']} by {tev['shopper']} at " \
                   f"{tev['lanes'][0]})"
            rids = run_of_true.get(tev["event_id"], [])
            if not rids:
                res.problems.append(f"{what}: no shelf event published for it (missed by the shelf)")
                continue
            for rid in rids:
                rev = run_ev[rid]
                best = rev["candidates"][0] if rev.get("candidates") else None
                if best is None or best["sku"] != tev["sku"] or int(best["qty"]) != int(tev["qty"]):
                    got = f"{best['qty']} x {best['sku']} (p={best['p']:.2f})" if best else "no candidate"
                    res.problems.append(f"{what}: shelf event {rid} identified it as {got} (wrong product)")
                ln = line_of_event.get(rid)
                if ln is None:
                    why = unassigned.get(rid)
                    res.problems.append(f"{what}: shelf event {rid} went to no cart" +
                                        (f" ({why})" if why else " (a put-back not matched in the cart, or "
                                                                 "not identified)"))
                elif visit_acct.get(ln["visit"]) != res.account:
                    res.problems.append(
                        f"{what}: shelf event {rid} went to visit {ln['visit']} (account "
                        f"{visit_acct.get(ln['visit'])}, shopper {ln.get('shopper')}) -- wrong shopper; "
                        f"margin {ln.get('margin')}"
                        + _why_wrong_shopper(where, ln.get("shopper"), tev,
                                             party_of_acct.get(visit_acct.get(ln["visit"], ""), [])))
        # cart lines of this run visit that come from another true visit, or from no true event
        for ln in (x for x in cart_lines if res.run_visit and x["visit"] == res.run_visit and x["sku"] in skus):
            tid = true_of_run.get(ln.get("event_id") or "")
            tev = true_events.get(tid) if tid else None
            if tev is None:
                res.problems.append(f"cart line {ln['line_id']} ({ln['qty']} x {ln['sku']}): shelf event with no "
                                    f"true event behind it (spurious)")
            elif true_visit_acct.get(tev["visit"]) != res.account:
                res.problems.append(
                    f"cart line {ln['line_id']} ({ln['qty']} x {ln['sku']}): true event {tid} was by "
                    f"{tev['shopper']} of visit {tev['visit']} -- wrong shopper (fused shopper "
                    f"{ln.get('shopper')}, margin {ln.get('margin')}, runner-up {ln.get('runner_up')})"
                    + _why_wrong_shopper(where, ln.get("shopper"), tev, party_of_acct.get(res.account, [])))
        if res.status is None:
            res.problems.append("no receipt: fusion never settled a visit for this account")
        if res.status == "held_for_review":
            res.problems.append("held for review: " + "; ".join(res.reasons))
        if not res.problems and not res.exact:
            res.problems.append("lines differ but no single event explains it (quantities summed from "
                                "several events)")


# ------------------------------------------------------------------------------------------------ all
def evaluate(session: str | Path, run_dir: str | Path) -> Evaluation:
    """Evaluate ``run_dir`` against the session at ``session`` (its folder, or its ``session.mcap``)."""
    session_dir = Path(session)
    if session_dir.is_file():
        session_dir = session_dir.parent
    run_dir = Path(run_dir)
    truth_path = session_dir / "truth.json"
    if not truth_path.is_file():
        raise FileNotFoundError(f"{truth_path}: the session's ground truth is missing")
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'run.json'}: not a replay run folder (walkout replay --out)")
    truth = json.loads(truth_path.read_text())
    run = json.loads((run_dir / "run.json").read_text())
    receipts = read_jsonl(run_dir / "receipts.jsonl")
    run_events = read_jsonl(run_dir / "shelf_events.jsonl")
    metrics, results = receipt_metrics(truth, receipts)
    em, pairs = event_metrics(truth, run_events)
    metrics.update(em)
    per_cam = camera_metrics(session_dir, run_dir)
    metrics["per_camera"] = per_cam
    for key in ("hota", "idf1", "mota"):
        metrics[key] = _weighted(per_cam, key)
    metrics["camera_truth"] = sorted({v["truth"] for v in per_cam.values()})
    metrics.update(floor_metrics(truth, session_dir / "truth" / "trajectories.csv", run_dir / "floor_tracks.csv"))
    run_to_true = {r.run_visit: r.visit for r in results if r.run_visit and r.visit}
    metrics.update(latency_metrics(truth, run, read_jsonl(run_dir / "receipt_times.jsonl"), run_to_true))
    where = Whereabouts(truth, session_dir / "truth" / "trajectories.csv", run_dir / "floor_tracks.csv")
    explain(results, truth, run_events, pairs, read_jsonl(run_dir / "cart_lines.jsonl"),
            read_jsonl(run_dir / "visits.jsonl"), read_jsonl(run_dir / "review.jsonl"), where)
    metrics["error_causes"] = error_causes(results)
    metrics["errors"] = [{"visit": r.visit, "account": r.account, "status": r.status, "missing": r.missing,
                          "extra": r.extra, "problems": r.problems}
                         for r in results if r.problems]
    metrics["run"] = {k: run.get(k) for k in ("perception", "shelf", "speed", "in_process", "transport", "seed",
                                              "published", "wall_s")}
    for k, v in list(metrics.items()):
        if isinstance(v, float) and not math.isfinite(v):
            metrics[k] = None
    return Evaluation(metrics, results, pairs, truth, run)


CAUSES = {
    "shelf missed": "no shelf event published",
    "wrong product": "(wrong product)",
    "floor identity": "floor tracker mixed up identities",
    "gate binding": "the gate bound the wrong shopper",
    "association": "association chose the wrong shopper",
    "unbound shopper": "shopper not bound to a visit",
    "uncertain, not assigned": "below 0.5)",
    "no shopper near": "no shopper near",
    "put-back not matched": "put-back not matched",
    "spurious event": "(spurious)",
    "no receipt": "no receipt:",
    "party not tracked": "shopper(s) tracked",
}


def error_causes(results: list[VisitResult]) -> dict[str, int]:
    """How many problem sentences name each cause (an event can appear in two visits: its missing side and
    its extra side)."""
    out: dict[str, int] = {}
    for r in results:
        for p in r.problems:
            for name, marker in CAUSES.items():
                if marker in p and not p.startswith("held for review"):
                    out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


def summary_lines(ev: Evaluation) -> list[str]:
    """The human-readable summary ``walkout eval`` prints."""
    m = ev.metrics

    def f(key: str, digits: int = 4) -> str:
        v = m.get(key)
        return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    out = [
        (f"visits {m['visits']} (receipts {m['visits_with_receipt']}, charged {m['visits_charged']}, "
         f"held {m['visits_held']})"),
        (f"receipt lines: precision {f('receipt_precision')}  recall {f('receipt_recall')}  "
         f"F1 {f('receipt_f1')}  ({m['lines_right']} right of {m['lines_run']} given, {m['lines_true']} true)"),
        (f"exact carts {f('exact_cart_rate')}  review rate {f('review_rate')}  "
         f"wrong charges {f('wrong_charge_rate')}"),
        (f"shelf events: precision {f('event_precision')}  recall {f('event_recall')}  "
         f"({m['events_right']} right, {m['events_run']} published, {m['events_true']} true)"),
        (f"  detected (any product): precision {f('event_detect_precision')}  "
         f"recall {f('event_detect_recall')};  right by kind: "
         + (", ".join(f"{k} {v['right']}/{v['true']}" for k, v in m.get("events_by_kind", {}).items())
            or "none")),
        (f"tracks ({', '.join(m.get('camera_truth') or []) or 'no'} truth): HOTA {f('hota', 3)}  "
         f"IDF1 {f('idf1', 3)}  MOTA {f('mota', 3)}"),
        (f"floor: HOTA {f('floor_hota', 3)}  IDF1 {f('floor_idf1', 3)}  MOTA {f('floor_mota', 3)}  "
         f"(id switches {m.get('floor_id_switches', 'n/a')})"),
        (f"exit -> receipt ({m.get('exit_to_receipt_basis')} time): p50 {f('exit_to_receipt_p50_s', 3)} s  "
         f"p99 {f('exit_to_receipt_p99_s', 3)} s  over {m.get('exit_to_receipt_n')} receipts"),
        "error causes: " + (", ".join(f"{k} {v}" for k, v in m.get("error_causes", {}).items()) or "none"),
    ]
    for cam, c in sorted(m.get("per_camera", {}).items()):
        out.append(f"  {cam}: HOTA {c['hota']:.3f}  IDF1 {c['idf1']:.3f}  MOTA {c['mota']:.3f}  "
                   f"id switches {c['id_switches']}")
    for r in ev.visits:
        if not r.problems:
            continue
        head = f"visit {r.visit or '(none)'} account {r.account}: {r.status or 'no receipt'}"
        if r.missing or r.extra:
            head += f"; missing {r.missing or '-'}; extra {r.extra or '-'}"
        out.append(head)
        out.extend(f"    - {p}" for p in r.problems)
    return out

"""The evaluation's counting rules (walkout/evaluate.py) on small hand-made truths and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walkout.evaluate import (
    REQUIRED_KEYS,
    event_metrics,
    floor_metrics,
    latency_metrics,
    match_events,
    receipt_metrics,
)

T0 = 1_767_225_600.0


def visit(vid: str, account: str, lines: dict[str, int], complete: bool = True, t: float = 10.0) -> dict:
    ls = [{"sku": s, "name": s, "qty": q, "unit_price": 100, "amount": 100 * q} for s, q in sorted(lines.items())]
    return {"visit": vid, "account": account, "party": [f"S{vid[1:]}"], "party_size": 1, "scan_t": T0 + t,
            "entered_at": T0 + t, "exited_at": T0 + t + 30 if complete else None, "complete": complete,
            "receipt": {"lines": ls, "total": sum(x["amount"] for x in ls), "currency": "USD"}}


def receipt(account: str, lines: dict[str, int], status: str = "charged", t: float = 10.0,
            total: int | None = None) -> dict:
    ls = [{"sku": s, "qty": q, "unit_price": 100, "amount": 100 * q} for s, q in sorted(lines.items())]
    return {"visit": f"gate-1-{account}", "account": account, "status": status, "lines": ls,
            "total": sum(x["amount"] for x in ls) if total is None else total, "entered_at": T0 + t,
            "exited_at": T0 + t + 30, "reasons": []}


TRUTH = {"visits": [visit("V1", "a1", {"P1": 1, "P2": 2}), visit("V2", "a2", {"P3": 1}),
                    visit("V3", "a3", {"P4": 1}, complete=False)]}


@pytest.mark.parametrize("receipts, expect", [
    pytest.param([receipt("a1", {"P1": 1, "P2": 2}), receipt("a2", {"P3": 1})],
                 {"receipt_precision": 1.0, "receipt_recall": 1.0, "receipt_f1": 1.0, "exact_cart_rate": 1.0,
                  "review_rate": 0.0, "wrong_charge_rate": 0.0, "visits": 2}, id="perfect"),
    pytest.param([receipt("a1", {"P1": 1, "P2": 1}), receipt("a2", {"P3": 1})],
                 {"receipt_precision": 2 / 3, "receipt_recall": 2 / 3, "exact_cart_rate": 0.5,
                  "wrong_charge_rate": 0.5}, id="wrong quantity is a wrong line"),
    pytest.param([receipt("a1", {"P1": 1, "P2": 2, "P3": 1}), receipt("a2", {})],
                 {"receipt_precision": 2 / 3, "receipt_recall": 2 / 3, "exact_cart_rate": 0.0},
                 id="line in the wrong visit"),
    pytest.param([receipt("a1", {"P1": 1, "P2": 2}, status="held_for_review"), receipt("a2", {"P3": 1})],
                 {"receipt_f1": 1.0, "review_rate": 0.5, "wrong_charge_rate": 0.0, "visits_charged": 1},
                 id="held visit counts its lines, not as a charge"),
    pytest.param([receipt("a1", {"P1": 1, "P2": 2}), receipt("a2", {"P3": 1}), receipt("zz", {"P9": 1})],
                 {"receipt_precision": 3 / 4, "receipt_recall": 1.0, "receipts_without_visit": 1},
                 id="receipt for an account that never visited"),
    pytest.param([receipt("a1", {"P1": 1, "P2": 2})],
                 {"receipt_precision": 1.0, "receipt_recall": 2 / 3, "visits_with_receipt": 1},
                 id="visit without a receipt"),
    pytest.param([receipt("a1", {"P1": 1, "P2": 2}), receipt("a2", {"P3": 1}), receipt("a3", {"P5": 3})],
                 {"receipt_precision": 1.0, "receipt_f1": 1.0, "visits": 2}, id="incomplete visits left out"),
])
def test_receipt_counting(receipts: list[dict], expect: dict) -> None:
    metrics, _ = receipt_metrics(TRUTH, receipts)
    for k, v in expect.items():
        assert metrics[k] == pytest.approx(v), k


def test_wrong_visit_is_reported_as_missing_and_extra() -> None:
    _, results = receipt_metrics(TRUTH, [receipt("a1", {"P1": 1, "P2": 2, "P3": 1}), receipt("a2", {})])
    by = {r.visit: r for r in results}
    assert by["V1"].extra == [("P3", 1)] and by["V1"].missing == []
    assert by["V2"].missing == [("P3", 1)] and not by["V2"].exact


def true_event(eid: str, lane: str, sku: str, t: float, kind: str = "pick", qty: int = 1) -> dict:
    return {"event_id": eid, "shelf": lane.rsplit("-", 1)[0], "lanes": [lane], "sku": sku, "qty": qty,
            "kind": kind, "t_start": T0 + t, "t_end": T0 + t + 2.0, "visit": "V1", "shopper": "S1"}


def run_event(eid: str, lane: str, sku: str, t: float, action: str = "pick", qty: int = 1) -> dict:
    return {"event_id": eid, "shelf": lane.rsplit("-", 1)[0], "lanes": [{"lane": lane, "delta_g": -100.0}],
            "action": action, "t_start": T0 + t, "t_end": T0 + t + 2.0,
            "candidates": [{"sku": sku, "qty": qty, "p": 0.99}]}


@pytest.mark.parametrize("run, right", [
    pytest.param(run_event("r1", "U1-S1-L1", "P1", 0.2), True, id="right"),
    pytest.param(run_event("r1", "U1-S1-L1", "P2", 0.2), False, id="wrong product"),
    pytest.param(run_event("r1", "U1-S1-L1", "P1", 0.2, qty=2), False, id="wrong quantity"),
    pytest.param(run_event("r1", "U1-S1-L2", "P1", 0.2), False, id="other lane"),
    pytest.param(run_event("r1", "U1-S1-L1", "P1", 10.0), False, id="other time"),
    pytest.param(run_event("r1", "U1-S1-L1", "P1", 0.2, action="put"), False, id="put is not a pick"),
])
def test_event_matching(run: dict, right: bool) -> None:
    truth = {"events": [true_event("E1", "U1-S1-L1", "P1", 0.0)]}
    m, _ = event_metrics(truth, [run])
    assert m["event_precision"] == m["event_recall"] == (1.0 if right else 0.0)


def test_event_matching_is_one_to_one_and_prefers_right_pairs() -> None:
    truth = [true_event("E1", "U1-S1-L1", "P1", 0.0), true_event("E2", "U1-S1-L1", "P1", 1.0)]
    run = [run_event("r1", "U1-S1-L1", "P1", 0.9), run_event("r2", "U1-S1-L1", "P2", 0.05)]
    pairs, right_r, right_t = match_events(truth, run)
    assert len(pairs) == 2 and right_r == {"r1"} and len(right_t) == 1


def test_events_are_counted_by_kind_and_detection_apart_from_identification() -> None:
    """A put-back found, a misplacement found but taken for another product, a pick of the misplaced item
    missed, and a spurious pick: detection counts the first two, identification only the first."""
    truth = {"events": [true_event("E1", "U1-S1-L1", "P1", 0.0, kind="put_back"),
                        true_event("E2", "U1-S1-L2", "P9", 10.0, kind="misplace"),
                        true_event("E3", "U1-S1-L2", "P9", 20.0, kind="pick_of_misplaced")]}
    run = [run_event("r1", "U1-S1-L1", "P1", 0.1, action="put"),
           run_event("r2", "U1-S1-L2", "P2", 10.1, action="put"),
           run_event("r3", "U1-S1-L3", "P3", 30.0)]
    m, _ = event_metrics(truth, run)
    assert (m["event_precision"], m["event_recall"]) == pytest.approx((1 / 3, 1 / 3))
    assert (m["event_detect_precision"], m["event_detect_recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert m["events_matched"] == 2
    assert m["events_by_kind"] == {"misplace": {"right": 0, "true": 1},
                                   "pick_of_misplaced": {"right": 0, "true": 1},
                                   "put_back": {"right": 1, "true": 1}}


def _floor_files(tmp_path: Path, shift: float, swap_at: int | None = None) -> tuple[dict, Path, Path]:
    truth = {"session": {"start_epoch": T0, "fps": 10.0, "duration_s": 10.0},
             "shoppers": [{"shopper": "S1", "entered_at": T0, "exited_at": T0 + 10},
                          {"shopper": "S2", "entered_at": T0, "exited_at": T0 + 10}]}
    traj = ["t,shopper,x,y,head_x,head_y,head_z,lw_x,lw_y,lw_z,rw_x,rw_y,rw_z"]
    fused = ["t,shopper,visit,x,y"]
    for k in range(100):
        t = T0 + k / 10
        for s, y in (("S1", 1.0), ("S2", 4.0)):
            x = 1 + k * 0.05
            traj.append(f"{t:.3f},{s},{x},{y},{x},{y},1.6,0,0,1,0,0,1")
            fid = {"S1": "s1", "S2": "s2"}[s]
            if swap_at is not None and k >= swap_at:
                fid = {"s1": "s2", "s2": "s1"}[fid]
            fused.append(f"{t:.3f},{fid},v,{x + shift},{y}")
    a, b = tmp_path / "traj.csv", tmp_path / "floor.csv"
    a.write_text("\n".join(traj) + "\n")
    b.write_text("\n".join(fused) + "\n")
    return truth, a, b


@pytest.mark.parametrize("shift, swap_at, hota, idf1, mota", [
    (0.0, None, 1.0, 1.0, 1.0),
    (0.2, None, 16 / 19, 1.0, 1.0),  # similarity 0.8: a match at 16 of HOTA's 19 thresholds
    (0.8, None, None, 0.0, -1.0),  # beyond the 0.5 m match distance: all misses and false positives
    (0.0, 50, None, 0.5, 0.99),  # one id swap half way: identity halves, MOTA loses the two switches
])
def test_floor_metrics(tmp_path: Path, shift: float, swap_at: int | None, hota, idf1: float, mota: float) -> None:
    truth, a, b = _floor_files(tmp_path, shift, swap_at)
    m = floor_metrics(truth, a, b)
    if hota is not None:
        assert m["floor_hota"] == pytest.approx(hota, abs=0.02)
    assert m["floor_idf1"] == pytest.approx(idf1, abs=0.01)
    assert m["floor_mota"] == pytest.approx(mota, abs=0.01)


def test_latency_wall_and_event_bases() -> None:
    truth = {"visits": [{"visit": "V1", "exited_at": T0 + 50.0}, {"visit": "V2", "exited_at": T0 + 60.0}]}
    times = [{"visit": "r1", "received_wall": 1000.0 + 50.0 + 0.4, "settled_at": T0 + 50.7, "at_end": False},
             {"visit": "r2", "received_wall": 1000.0 + 60.0 + 0.6, "settled_at": T0 + 60.9, "at_end": False},
             {"visit": "r3", "received_wall": 2000.0, "settled_at": T0 + 99, "at_end": True}]
    matched = {"r1": "V1", "r2": "V2", "r3": "V2"}
    wall = latency_metrics(truth, {"speed": 1.0, "t0": T0, "w0": 1000.0}, times, matched)
    assert wall["exit_to_receipt_basis"] == "wall" and wall["exit_to_receipt_n"] == 2
    assert wall["exit_to_receipt_p50_s"] == pytest.approx(0.5)
    assert wall["receipts_at_end_of_input"] == 1
    event = latency_metrics(truth, {"speed": 0.0, "t0": T0, "w0": 1000.0}, times, matched)
    assert event["exit_to_receipt_basis"] == "event"
    assert event["exit_to_receipt_p50_s"] == pytest.approx(0.8)


def test_required_keys_are_documented() -> None:
    doc = Path(__file__).resolve().parents[1].joinpath("walkout", "evaluate.py").read_text()
    for key in REQUIRED_KEYS:
        assert key in doc
    assert json.dumps(list(REQUIRED_KEYS))


def _paths(tmp_path: Path, true: dict[str, list[tuple[float, float]]], fused: dict[str, list[tuple[float, float]]]
           ) -> tuple[Path, Path]:
    """Trajectory files: shoppers standing at given x (y = 1) over time spans (t0, t1) in seconds from T0."""
    traj = ["t,shopper,x,y,head_x,head_y,head_z,lw_x,lw_y,lw_z,rw_x,rw_y,rw_z"]
    floor = ["t,shopper,visit,x,y"]
    for sid, spans in true.items():
        for t0, x in spans:
            for k in range(10):
                traj.append(f"{T0 + t0 + k / 10:.3f},{sid},{x},1,{x},1,1.6,0,0,1,0,0,1")
    for fid, spans in fused.items():
        for t0, x in spans:
            for k in range(10):
                floor.append(f"{T0 + t0 + k / 10:.3f},{fid},v,{x},1")
    a, b = tmp_path / "traj.csv", tmp_path / "floor.csv"
    a.write_text("\n".join(traj) + "\n")
    b.write_text("\n".join(floor) + "\n")
    return a, b


@pytest.mark.parametrize("fused_spans, cause", [
    # s1 (bound to A's visit) starts on SA, later follows SB when SB picks: identity mixed up on the way
    ({"s1": [(0.0, 1.0), (20.0, 5.0)]}, "mixed up identities on the way"),
    # s1 starts on SB at the gate: the gate bound the wrong shopper
    ({"s1": [(0.0, 5.0), (20.0, 5.0)]}, "the gate bound the wrong shopper"),
    # s1 is on SA when SB picks: the association chose the wrong shopper
    ({"s1": [(0.0, 1.0), (20.0, 1.0)]}, "association chose the wrong shopper"),
])
def test_explain_tells_where_a_wrong_shopper_came_from(tmp_path: Path, fused_spans: dict, cause: str) -> None:
    from walkout.evaluate import Whereabouts, explain

    truth = {"visits": [visit("VA", "a", {}), visit("VB", "b", {"P1": 1})],
             "events": [{**true_event("E1", "U1-S1-L1", "P1", 20.0), "visit": "VB", "shopper": "SB",
                         "t_change": T0 + 20.5}]}
    truth["visits"][0]["party"], truth["visits"][1]["party"] = ["SA"], ["SB"]
    a, b = _paths(tmp_path, {"SA": [(0.0, 1.0), (20.0, 1.0)], "SB": [(0.0, 5.0), (20.0, 5.0)]}, fused_spans)
    receipts = [receipt("a", {"P1": 1}), receipt("b", {})]
    _, results = receipt_metrics(truth, receipts)
    run_events = [run_event("r1", "U1-S1-L1", "P1", 20.0)]
    cart = [{"visit": "gate-1-a", "line_id": "r1", "event_id": "r1", "sku": "P1", "qty": 1, "shopper": "s1",
             "margin": 1.0, "runner_up": None, "lanes": ["U1-S1-L1"]}]
    visits = [{"visit": "gate-1-a", "account": "a", "shoppers": ["s1"]}, {"visit": "gate-1-b", "account": "b",
                                                                        "shoppers": []}]
    explain(results, truth, run_events, {"r1": "E1"}, cart, visits, [], Whereabouts(truth, a, b))
    text = " ".join(p for r in results for p in r.problems)
    assert cause in text and "E1" in text


def test_explain_names_a_missed_shelf_event() -> None:
    from walkout.evaluate import explain

    truth = {"visits": [visit("VB", "b", {"P1": 1})],
             "events": [{**true_event("E1", "U1-S1-L1", "P1", 20.0), "visit": "VB", "shopper": "SB"}]}
    _, results = receipt_metrics(truth, [receipt("b", {})])
    explain(results, truth, [], {}, [], [{"visit": "gate-1-b", "account": "b", "shoppers": ["s1"]}], [])
    assert any("no shelf event published" in p for p in results[0].problems)

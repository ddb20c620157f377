"""Binding shoppers to visits at the entry gate (fusion/visits.py), step by step: scans and shoppers appearing
at the gate on an event-time line."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.visits import Visits
from tests.fusion_scene import scene_store

GATE = np.array([0.5, 0.5])  # the scene store's gate G1 centre


def play(script: list[tuple[float, str, object]], until: float) -> dict[str, str]:
    """``script``: (t, "scan", (account, party)) or (t, "appear", shopper id), in time order; ``bind`` runs
    every 0.1 s as the floor tracker's frames would call it, with each shopper walking into the store at
    0.8 m/s from where they appeared at the gate.  Returns shopper -> account."""
    vs = Visits(scene_store())
    seen: list[tuple[str, float]] = []
    events = sorted(script, key=lambda e: e[0])
    k = 0
    for step in range(int(until * 10) + 1):
        now = step / 10
        while k < len(events) and events[k][0] <= now:
            t, what, arg = events[k]
            if what == "scan":
                vs.scan("G1", arg[0], arg[1], t)
            else:
                seen.append((arg, t))
            k += 1
        vs.bind(now, [(sid, t, GATE + 0.8 * (now - t)) for sid, t in seen if sid not in vs.by_shopper])
    return {sid: vs.visits[vid].account for sid, vid in vs.by_shopper.items()}


@pytest.mark.parametrize("script, want", [
    # a party of three, all through the gate with the scan
    ([(0.0, "scan", ("a", 3)), (0.2, "appear", "s1"), (0.5, "appear", "s2"), (1.0, "appear", "s3")],
     {"s1": "a", "s2": "a", "s3": "a"}),
    # the party's third member is never seen; the next shopper reaches the gate 2 s before scanning: theirs
    ([(0.0, "scan", ("a", 3)), (0.2, "appear", "s1"), (0.5, "appear", "s2"), (5.0, "appear", "s3"),
      (7.0, "scan", ("b", 1))],
     {"s1": "a", "s2": "a", "s3": "b"}),
    # ... and the one after that too: nobody is shifted to the visit before theirs
    ([(0.0, "scan", ("a", 3)), (0.2, "appear", "s1"), (0.5, "appear", "s2"), (5.0, "appear", "s3"),
      (7.0, "scan", ("b", 1)), (12.0, "appear", "s4"), (13.0, "scan", ("c", 1))],
     {"s1": "a", "s2": "a", "s3": "b", "s4": "c"}),
    # a real latecomer (no scan follows): joins the party once no scan can claim them any more
    ([(0.0, "scan", ("a", 2)), (0.2, "appear", "s1"), (5.0, "appear", "s2")],
     {"s1": "a", "s2": "a"}),
    # a latecomer and, 2 s later, the next scan with its own shopper at the gate: each to their own
    ([(0.0, "scan", ("a", 2)), (0.2, "appear", "s1"), (5.0, "appear", "s2"), (6.5, "appear", "s3"),
      (7.0, "scan", ("b", 1))],
     {"s1": "a", "s2": "a", "s3": "b"}),
], ids=["party", "lost-member-next-scan", "no-shift-down-the-line", "latecomer", "latecomer-and-next"])
def test_gate_binding(script, want):
    assert play(script, until=25.0) == want


def test_a_latecomer_waits_until_no_scan_can_claim_them():
    vs = Visits(scene_store())
    vs.scan("G1", "a", 2, 0.0)
    vs.bind(0.3, [("s1", 0.2, GATE)])
    assert vs.bind(5.5, [("s2", 5.0, GATE)]) == []  # 5 s after the scan: could be the next scan's
    assert vs.bind(11.0, [("s2", 5.0, GATE)]) == [("s2", vs.by_shopper["s1"])]  # bind_before_s later: the party's

"""Visits: an entry scan binds an account to the shopper(s) who pass the gate at that moment.

A scan with party size N binds the N shoppers nearest the gate at the scan that are not yet bound (counting
those that appeared up to ``bind_before_s`` before the scan), and, if fewer are there, the next ones who
appear at that gate within ``bind_after_s``.  One who appears more than ``prompt_s`` after the scan of a
party still short of shoppers is a latecomer to it or the early arrival of the next scan (people reach the
gate up to ``bind_before_s`` before they scan): it is bound to the party only once ``bind_before_s`` has
passed since it appeared without a scan claiming it, so a party that lost sight of a member does not take the
next shopper through the gate (and every visit after it the one after theirs).  A visit ends when all of its
shoppers have left through an exit.
Visit ids derive from the scan itself (gate, capture time), so a replay or a restart gives the same ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from calibration.store import Store

log = logging.getLogger(__name__)


@dataclass
class Visit:
    id: str
    account: str
    gate: str
    party_size: int
    entered_at: float
    shoppers: list[str] = field(default_factory=list)
    exited_at: float | None = None
    settled: bool = False

    @property
    def open_slots(self) -> int:
        return self.party_size - len(self.shoppers)


class Visits:
    prompt_s = 3.0  # (a class default too: snapshots from before it restore with it)

    def __init__(self, store: Store, bind_before_s: float = 6.0, bind_after_s: float = 30.0, prompt_s: float = 3.0):
        self.gates = {g.id: g.region for g in store.gates}
        self.bind_before_s = bind_before_s
        self.bind_after_s = bind_after_s
        self.prompt_s = prompt_s
        self.visits: dict[str, Visit] = {}
        self.by_shopper: dict[str, str] = {}
        self.unfilled: dict[str, Visit] = {}  # open visits with slots not yet bound to shoppers

    def visit_id(self, gate: str, ts: float, account: str) -> str:
        base = f"{gate}-{round(ts * 1000)}"
        vid, k = base, 1
        while vid in self.visits and self.visits[vid].account != account:
            k += 1
            vid = f"{base}-{k}"
        return vid

    def scan(self, gate: str, account: str, party_size: int, ts: float) -> Visit:
        vid = self.visit_id(gate, ts, account)
        if vid in self.visits:
            return self.visits[vid]
        v = Visit(vid, account, gate, party_size, ts)
        self.visits[vid] = v
        self.unfilled[vid] = v
        log.info("visit %s opened for account %s (party of %d) at gate %s", vid, account, party_size, gate)
        return v

    def _tidy(self) -> None:
        for vid in [vid for vid, v in self.unfilled.items() if v.open_slots <= 0 or v.exited_at is not None]:
            del self.unfilled[vid]

    def has_pending(self, now: float) -> bool:
        return bool(self.unfilled) and any(now - v.entered_at <= self.bind_after_s and v.open_slots > 0
                                           for v in self.unfilled.values())

    def pending(self, now: float) -> list[Visit]:
        """Visits still waiting for shoppers, oldest first."""
        self._tidy()
        return sorted((v for v in self.unfilled.values() if now - v.entered_at <= self.bind_after_s),
                      key=lambda v: v.entered_at)

    def bind(self, now: float, candidates: list[tuple[str, float, np.ndarray]]) -> list[tuple[str, str]]:
        """Fill open visits with unbound shoppers.

        ``candidates``: (shopper id, first-seen time, current floor position) of shoppers not yet bound and
        not left.  Returns the (shopper, visit) pairs bound now.
        """
        bound = []
        free = [c for c in candidates if c[0] not in self.by_shopper]
        for v in self.pending(now):
            region = self.gates.get(v.gate)
            centre = (np.asarray(region.min) + np.asarray(region.max)) / 2 if region else np.zeros(2)
            eligible = [c for c in free if c[1] >= v.entered_at - self.bind_before_s
                        and (c[1] <= v.entered_at + self.prompt_s or now >= c[1] + self.bind_before_s)]
            eligible.sort(key=lambda c: (float(np.hypot(*(c[2] - centre))), c[1], c[0]))
            for sid, _, _ in eligible[: v.open_slots]:
                v.shoppers.append(sid)
                self.by_shopper[sid] = v.id
                bound.append((sid, v.id))
                free = [c for c in free if c[0] != sid]
                log.info("shopper %s bound to visit %s", sid, v.id)
        return bound

    def adopt(self, sid: str, vid: str) -> None:
        """Add shopper ``sid`` to visit ``vid`` beyond its party (a member found again under a new id)."""
        v = self.visits[vid]
        v.shoppers.append(sid)
        self.by_shopper[sid] = vid

    def pending_close(self, now: float, wait_s: float) -> list[Visit]:
        """Open visits past their binding window that still lack shoppers (checked for closing)."""
        self._tidy()
        return [v for v in self.unfilled.values() if now - v.entered_at > wait_s]

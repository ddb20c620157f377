"""A hypothesis state machine drives the ledger against a model, on both backends.

Random holds, captures (against holds and direct), cancels, refunds, declining payment methods, retries of
earlier requests with their keys and reuses of keys for other requests.  After every step: nothing was charged
twice, the ledger's balances equal the model's, and they equal the sums of the append-only rows themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fusion.db import Database, payment_records
from fusion.payments import (
    Charge,
    Hold,
    IdempotencyConflict,
    InvalidState,
    LedgerGateway,
    Refund,
    RefundExceedsCapture,
)

AMOUNTS = st.integers(min_value=1, max_value=10_000)
REASONS = st.sampled_from(["mis_pick", "dispute", "ops_adjustment"])


@dataclass
class ModelHold:
    account: str
    amount: int
    state: str  # authorized, captured, cancelled, failed


@dataclass
class ModelCharge:
    account: str
    amount: int
    ok: bool
    refunded: int = 0


@dataclass
class ModelAccount:
    declining: bool
    held: int = 0
    captured: int = 0
    refunded: int = 0
    last_failed: bool = False


class LedgerMachine(RuleBasedStateMachine):
    gw: LedgerGateway  # set by the test (one gateway per backend)

    accounts = Bundle("accounts")
    holds = Bundle("holds")
    charges = Bundle("charges")

    def __init__(self) -> None:
        super().__init__()
        self.run = uuid.uuid4().hex[:12]  # every example has its own accounts and keys in the shared database
        self.n = 0
        self.acc: dict[str, ModelAccount] = {}
        self.hold_m: dict[str, ModelHold] = {}
        self.charge_m: dict[str, ModelCharge] = {}
        self.done: list[tuple[str, Callable[[], Any], Any]] = []  # (key, the call, its first result)
        self.dirty: set[str] = set()

    def _key(self, kind: str) -> str:
        self.n += 1
        return f"{kind}:{self.run}:{self.n}"

    def _did(self, key: str, call: Callable[[], Any]) -> Any:
        result = call()
        self.done.append((key, call, result))
        return result

    # ------------------------------------------------------------------------------------- rules
    @rule(target=accounts, declining=st.booleans())
    def open_account(self, declining: bool) -> str:
        self.n += 1
        account = f"{self.run}-a{self.n}"
        self.gw.ensure_account(account, declines=declining)
        self.acc[account] = ModelAccount(declining)
        self.dirty.add(account)
        return account

    @rule(account=accounts, declining=st.booleans())
    def switch_method(self, account: str, declining: bool) -> None:
        self.gw.mark_declining(account, declining)
        self.acc[account].declining = declining
        self.acc[account].last_failed = False  # a method attached after the failure
        self.dirty.add(account)

    @rule(target=holds, account=accounts, amount=AMOUNTS)
    def hold(self, account: str, amount: int) -> str:
        key = self._key("hold")
        got = self._did(key, lambda: self.gw.hold(account, amount=amount, key=key))
        a = self.acc[account]
        assert isinstance(got, Hold) and got.amount == amount
        assert got.failed == a.declining
        self.hold_m[got.id] = ModelHold(account, amount, "failed" if a.declining else "authorized")
        a.held += 0 if a.declining else amount
        a.last_failed = a.declining
        self.dirty.add(account)
        return got.id

    @rule(target=charges, hold=holds, amount=AMOUNTS)
    def capture(self, hold: str, amount: int) -> Any:
        h = self.hold_m[hold]
        a = self.acc[h.account]
        key = self._key("capture")
        if h.state != "authorized":
            try:
                self.gw.capture(hold, amount=amount, key=key)
            except InvalidState:
                return multiple()
            raise AssertionError(f"captured a {h.state} hold")
        got = self._did(key, lambda: self.gw.capture(hold, amount=amount, key=key))
        ok = amount <= h.amount or not a.declining
        assert isinstance(got, Charge) and got.succeeded == ok and got.hold_id == hold
        if ok:
            h.state = "captured"
            a.held -= h.amount
            a.captured += amount
        a.last_failed = not ok
        self.charge_m[got.id] = ModelCharge(h.account, amount, ok)
        self.dirty.add(h.account)
        return got.id

    @rule(target=charges, account=accounts, amount=AMOUNTS)
    def charge_account(self, account: str, amount: int) -> str:
        a = self.acc[account]
        key = self._key("capture")
        got = self._did(key, lambda: self.gw.capture(account=account, amount=amount, key=key))
        assert isinstance(got, Charge) and got.succeeded != a.declining
        a.captured += 0 if a.declining else amount
        a.last_failed = a.declining
        self.charge_m[got.id] = ModelCharge(account, amount, not a.declining)
        self.dirty.add(account)
        return got.id

    @rule(hold=holds)
    def cancel(self, hold: str) -> None:
        h = self.hold_m[hold]
        key = self._key("cancel")
        if h.state != "authorized":
            try:
                self.gw.cancel(hold, key=key)
            except InvalidState:
                return
            raise AssertionError(f"cancelled a {h.state} hold")
        got = self._did(key, lambda: self.gw.cancel(hold, key=key))
        assert got.amount == h.amount
        h.state = "cancelled"
        self.acc[h.account].held -= h.amount
        self.dirty.add(h.account)

    @rule(charge=charges, amount=st.none() | AMOUNTS, reason=REASONS)
    def refund(self, charge: str, amount: int | None, reason: str) -> None:
        c = self.charge_m[charge]
        key = self._key("refund")
        left = c.amount - c.refunded
        value = left if amount is None else amount
        if not c.ok or value <= 0 or value > left:
            try:
                self.gw.refund(charge, amount=amount, reason_code=reason, key=key)
            except (InvalidState, RefundExceedsCapture) as e:
                assert isinstance(e, RefundExceedsCapture) == c.ok
                return
            raise AssertionError(f"refunded {value} of {left} left on a charge that succeeded={c.ok}")
        got = self._did(key, lambda: self.gw.refund(charge, amount=amount, reason_code=reason, key=key))
        assert isinstance(got, Refund) and got.amount == value
        c.refunded += value
        self.acc[c.account].refunded += value
        self.dirty.add(c.account)

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A retry of an earlier request with its key: the original answer, and nothing recorded."""
        _key, call, first = data.draw(st.sampled_from(self.done))
        assert call() == first

    @precondition(lambda self: bool(self.done) and bool(self.acc))
    @rule(data=st.data())
    def reuse_key(self, data: st.DataObject) -> None:
        """An earlier key with a different request is refused."""
        key, _call, _first = data.draw(st.sampled_from(self.done))
        account = data.draw(st.sampled_from(sorted(self.acc)))
        try:
            self.gw.hold(account, amount=10**12, key=key)  # no earlier request asked for this amount
        except IdempotencyConflict:
            return
        raise AssertionError(f"key {key} was reused for a different request")

    # -------------------------------------------------------------------------------- invariants
    @invariant()
    def ledger_matches_model(self) -> None:
        for account in sorted(self.dirty):
            a = self.acc[account]
            s = self.gw.account_state(account)
            assert (s.held, s.captured, s.refunded, s.last_payment_failed) == (
                a.held,
                a.captured,
                a.refunded,
                a.last_failed,
            ), account
            assert s.method is not None and s.method.declines == a.declining
        self.dirty.clear()

    @invariant()
    def rows_add_up_and_nothing_is_charged_twice(self) -> None:
        pr = payment_records
        mine = pr.c.idempotency_key.like(f"%:{self.run}:%")
        with self.gw.db.read() as conn:
            rows = conn.execute(
                sa.select(pr.c.kind, pr.c.status, pr.c.amount, pr.c.account_id, pr.c.target_id).where(mine)
            ).all()
        assert len(rows) == len(self.done)  # one row per recorded request: retries added nothing
        settled: dict[str, int] = {}
        captured = refunded = 0
        for r in rows:
            if r.status != "succeeded":
                continue
            if r.kind in ("capture", "cancel") and r.target_id is not None:
                settled[r.target_id] = settled.get(r.target_id, 0) + 1
            captured += r.amount if r.kind == "capture" else 0
            refunded += r.amount if r.kind == "refund" else 0
        assert all(n == 1 for n in settled.values()), settled
        assert captured == sum(a.captured for a in self.acc.values())
        assert refunded == sum(a.refunded for a in self.acc.values())
        per_charge: dict[str, int] = {}
        for r in rows:
            if r.kind == "refund":
                per_charge[r.target_id] = per_charge.get(r.target_id, 0) + r.amount
        assert all(total <= self.charge_m[cid].amount for cid, total in per_charge.items())


def test_ledger_state_machine(db: Database) -> None:
    class Machine(LedgerMachine):
        gw = LedgerGateway(db)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

"""The ledger payment provider on both backends: flows, idempotency, limits, declines, races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from fusion.db import Database, payment_records
from fusion.payments import (
    Cancellation,
    Charge,
    Hold,
    IdempotencyConflict,
    InvalidAmount,
    InvalidRequest,
    InvalidState,
    LedgerGateway,
    NotFound,
    PaymentGateway,
    PaymentMethod,
    Refund,
    RefundExceedsCapture,
)
from tests.fixtures_db import DbFactory


@pytest.fixture
def gw(db: Database) -> LedgerGateway:
    gw = LedgerGateway(db, currency="EUR")
    gw.ensure_account("alice")
    return gw


@pytest.fixture
def vgw(sqlite_db: Database) -> LedgerGateway:
    """A gateway for input-validation tests: they fail before any storage, so one backend is enough."""
    gw = LedgerGateway(sqlite_db, currency="EUR")
    gw.ensure_account("alice")
    return gw


def _rows(db: Database, **where: Any) -> list[Any]:
    stmt = sa.select(payment_records).order_by(payment_records.c.seq)
    for col, value in where.items():
        stmt = stmt.where(payment_records.c[col] == value)
    with db.read() as conn:
        return list(conn.execute(stmt))


def _race(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Run ``fn`` in ``n`` threads released together; each outcome is a result or the exception raised."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - the outcome under test
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_ledger_is_a_payment_gateway(gw: LedgerGateway) -> None:
    assert isinstance(gw, PaymentGateway)


# ------------------------------------------------------------------------------------------------- flows
def test_visit_hold_capture_refund(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=5000, key="hold:v1", ts=1700000000.0)
    assert (hold.status, hold.amount, hold.currency) == ("authorized", 5000, "EUR")
    assert gw.account_state("alice").held == 5000

    charge = gw.capture(hold, amount=1234, key="capture:v1", ts=1700000600.0)
    assert (charge.status, charge.amount, charge.hold_id) == ("succeeded", 1234, hold.id)
    assert gw.get_hold(hold.id).status == "captured"

    refund = gw.refund(charge, amount=234, reason_code="mis_pick", key="refund:adj1")
    assert (refund.amount, refund.reason_code, refund.charge_id) == (234, "mis_pick", charge.id)
    assert gw.get_charge(charge.id).amount_refunded == 234
    assert gw.get_charge(charge.id).refundable == 1000

    state = gw.account_state("alice")
    assert (state.held, state.captured, state.refunded, state.net) == (0, 1234, 234, 1000)
    assert state.method == PaymentMethod("card", False) and not state.last_payment_failed
    assert [r.kind for r in gw.records("alice")] == ["hold", "capture", "refund"]
    assert [r.event_ts for r in gw.records("alice")] == [1700000000.0, 1700000600.0, None]


def test_cancel_when_the_cart_is_empty(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=5000, key="hold:v2")
    cancellation = gw.cancel(hold, key="cancel:v2")
    assert isinstance(cancellation, Cancellation) and cancellation.amount == 5000
    assert gw.get_hold(hold.id).status == "cancelled"
    state = gw.account_state("alice")
    assert (state.held, state.captured, state.refunded) == (0, 0, 0)
    with pytest.raises(InvalidState, match="cancelled"):
        gw.capture(hold, amount=100, key="capture:v2")
    with pytest.raises(InvalidState, match="cancelled"):
        gw.cancel(hold, key="cancel:v2:again")
    assert gw.cancel(hold, key="cancel:v2") == cancellation  # the retry is answered, not refused
    assert len(_rows(gw.db, account_id="alice")) == 2


def test_a_captured_hold_cannot_be_cancelled_or_captured_again(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=5000, key="hold:v3")
    gw.capture(hold.id, amount=4000, key="capture:v3")
    with pytest.raises(InvalidState, match="captured"):
        gw.cancel(hold, key="cancel:v3")
    with pytest.raises(InvalidState, match="captured"):
        gw.capture(hold, amount=4000, key="capture:v3:second")
    assert gw.account_state("alice").captured == 4000


def test_capture_without_a_hold(gw: LedgerGateway) -> None:
    charge = gw.capture(account="alice", amount=777, key="capture:v4")
    assert charge.succeeded and charge.hold_id is None
    assert gw.account_state("alice").captured == 777


@pytest.mark.parametrize(("hold", "account"), [(None, None), ("hold_x", "alice")], ids=["neither", "both"])
def test_capture_takes_exactly_one_source(vgw: LedgerGateway, hold: str | None, account: str | None) -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        vgw.capture(hold, account=account, amount=100, key="capture:x")


def test_capture_above_the_hold_authorises_the_difference(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=1000, key="hold:v5")
    charge = gw.capture(hold, amount=2500, key="capture:v5")
    assert charge.succeeded and charge.amount == 2500


def test_results_survive_a_restart(gw: LedgerGateway, db_factory: DbFactory) -> None:
    hold = gw.hold("alice", amount=5000, key="hold:v6")
    charge = gw.capture(hold, amount=1500, key="capture:v6")
    again = LedgerGateway(db_factory.reopen(gw.db))
    assert again.hold("alice", amount=5000, key="hold:v6") == hold
    assert again.capture(hold, amount=1500, key="capture:v6") == charge
    assert again.get_charge(charge.id) == charge
    assert len(_rows(gw.db)) == 2


def test_ids_come_from_the_keys(gw: LedgerGateway, db_factory: DbFactory) -> None:
    """A replayed session on another database names its holds and charges the same way."""
    other = LedgerGateway(db_factory.new())
    other.ensure_account("alice")
    for g in (gw, other):
        h = g.hold("alice", amount=100, key="hold:same")
        c = g.capture(h, amount=100, key="capture:same")
    assert gw.get_hold(h.id).id == h.id and gw.get_charge(c.id).id == c.id
    assert h.id.startswith("hold_") and c.id.startswith("ch_")


# ------------------------------------------------------------------------------------------ idempotency
def _do(gw: LedgerGateway, op: str) -> Any:
    """Perform ``op`` with a fixed key, on fixed prerequisites (made idempotently, so calling twice is fine)."""
    hold = gw.hold("alice", amount=5000, key="hold:i1")
    charge = gw.capture(hold, amount=3000, key="capture:i1")
    return {
        "hold": lambda: gw.hold("alice", amount=5000, key="hold:i1"),
        "capture": lambda: gw.capture(hold, amount=3000, key="capture:i1"),
        "capture-by-id": lambda: gw.capture(hold.id, amount=3000, key="capture:i1"),
        "charge": lambda: gw.capture(account="alice", amount=900, key="charge:i1"),
        "cancel": lambda: gw.cancel(gw.hold("alice", amount=100, key="hold:i2"), key="cancel:i2"),
        "refund": lambda: gw.refund(charge, amount=500, reason_code="mis_pick", key="refund:i1"),
        "full-refund": lambda: gw.refund(charge.id, amount=None, reason_code="dispute", key="refund:i2"),
        "failed-hold": lambda: gw.hold("nomethod", amount=100, key="hold:i3"),
    }[op]()


@pytest.mark.parametrize(
    "op", ["hold", "capture", "capture-by-id", "charge", "cancel", "refund", "full-refund", "failed-hold"]
)
def test_retry_with_the_same_key_returns_the_original_result(gw: LedgerGateway, op: str) -> None:
    gw.ensure_account("nomethod", method_label=None)
    first = _do(gw, op)
    rows = len(_rows(gw.db))
    for _ in range(3):
        assert _do(gw, op) == first
    assert len(_rows(gw.db)) == rows
    assert len(_rows(gw.db, idempotency_key=first.key)) == 1


def test_a_retry_returns_the_result_as_it_was_created(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=5000, key="hold:orig")
    charge = gw.capture(hold, amount=3000, key="capture:orig")
    gw.refund(charge, amount=1000, reason_code="mis_pick", key="refund:orig")
    assert gw.hold("alice", amount=5000, key="hold:orig").status == "authorized"
    assert gw.capture(hold, amount=3000, key="capture:orig").amount_refunded == 0
    assert gw.get_hold(hold.id).status == "captured" and gw.get_charge(charge.id).amount_refunded == 1000


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            lambda g, h, c: g.hold("alice", amount=5000, key="k1"),
            lambda g, h, c: g.hold("alice", amount=5001, key="k1"),
        ),
        (
            lambda g, h, c: g.hold("alice", amount=5000, key="k1"),
            lambda g, h, c: g.hold("bob", amount=5000, key="k1"),
        ),
        (
            lambda g, h, c: g.hold("alice", amount=5000, key="k1"),
            lambda g, h, c: g.capture(account="alice", amount=5000, key="k1"),
        ),
        (
            lambda g, h, c: g.capture(h, amount=100, key="k1"),
            lambda g, h, c: g.capture(h, amount=101, key="k1"),
        ),
        (
            lambda g, h, c: g.refund(c, amount=10, reason_code="mis_pick", key="k1"),
            lambda g, h, c: g.refund(c, amount=10, reason_code="dispute", key="k1"),
        ),
        (
            lambda g, h, c: g.refund(c, amount=10, reason_code="mis_pick", key="k1"),
            lambda g, h, c: g.refund(c, amount=None, reason_code="mis_pick", key="k1"),
        ),
        (lambda g, h, c: g.cancel(h, key="k1"), lambda g, h, c: g.hold("alice", amount=5000, key="k1")),
    ],
    ids=["amount", "account", "operation", "capture-amount", "reason", "partial-vs-full", "cancel-vs-hold"],
)
def test_same_key_with_a_different_request_is_an_error(gw: LedgerGateway, first: Any, second: Any) -> None:
    gw.ensure_account("bob")
    hold = gw.hold("alice", amount=5000, key="hold:c")
    charge = gw.capture(account="alice", amount=1000, key="capture:c")
    first(gw, hold, charge)
    rows = len(_rows(gw.db))
    with pytest.raises(IdempotencyConflict, match="'k1' was used for a different request"):
        second(gw, hold, charge)
    assert len(_rows(gw.db)) == rows


def _capture_race(gateways: list[LedgerGateway], hold: Hold, key: str) -> list[Any]:
    turn = iter(gateways)
    lock = threading.Lock()

    def capture() -> Charge:
        with lock:
            g = next(turn)
        return g.capture(hold, amount=4321, key=key)

    return _race(len(gateways), capture)


def test_concurrent_captures_with_one_key_charge_once(gw: LedgerGateway, db_factory: DbFactory) -> None:
    """Two threads (each with its own engine, as two processes would have) capture with the same key."""
    gateways = [gw, LedgerGateway(db_factory.reopen(gw.db))]
    rounds = 6
    for r in range(rounds):
        hold = gw.hold("alice", amount=5000, key=f"hold:race{r}")
        outcomes = _capture_race(gateways, hold, f"capture:race{r}")
        assert all(isinstance(o, Charge) for o in outcomes), outcomes
        assert outcomes[0] == outcomes[1]
        assert len(_rows(gw.db, kind="capture", target_id=hold.id)) == 1
    assert gw.account_state("alice").captured == 4321 * rounds


def test_concurrent_captures_with_different_keys_settle_the_hold_once(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=5000, key="hold:race")
    outcomes = _race(4, lambda: gw.capture(hold, amount=1000, key=f"capture:{threading.get_ident()}"))
    charges = [o for o in outcomes if isinstance(o, Charge)]
    assert len(charges) == 1 and all(isinstance(o, InvalidState) for o in outcomes if o not in charges)
    assert gw.account_state("alice").captured == 1000


def test_concurrent_refunds_never_exceed_the_capture(gw: LedgerGateway) -> None:
    charge = gw.capture(account="alice", amount=1000, key="capture:refund-race")
    outcomes = _race(
        6,
        lambda: gw.refund(charge, amount=300, reason_code="mis_pick", key=f"refund:{threading.get_ident()}"),
    )
    refunds = [o for o in outcomes if isinstance(o, Refund)]
    assert len(refunds) == 3
    assert all(isinstance(o, RefundExceedsCapture) for o in outcomes if not isinstance(o, Refund))
    assert gw.get_charge(charge.id).amount_refunded == 900


# -------------------------------------------------------------------------------------------- refunds
def test_refunds_add_up_to_at_most_the_capture(gw: LedgerGateway) -> None:
    charge = gw.capture(account="alice", amount=1000, key="capture:r1")
    gw.refund(charge, amount=400, reason_code="mis_pick", key="refund:r1")
    gw.refund(charge, amount=600, reason_code="dispute", key="refund:r2")
    with pytest.raises(RefundExceedsCapture, match="refundable 0"):
        gw.refund(charge, amount=1, reason_code="dispute", key="refund:r3")
    with pytest.raises(RefundExceedsCapture):
        gw.refund(charge, amount=None, reason_code="dispute", key="refund:r4")
    assert [r.amount for r in gw.refunds(charge.id)] == [400, 600]
    assert gw.get_charge(charge.id).refundable == 0


def test_a_single_refund_cannot_exceed_the_capture(gw: LedgerGateway) -> None:
    charge = gw.capture(account="alice", amount=1000, key="capture:r5")
    with pytest.raises(RefundExceedsCapture, match="captured 1000, refunded 0"):
        gw.refund(charge, amount=1001, reason_code="mis_pick", key="refund:r5")
    assert gw.refund(charge, amount=None, reason_code="mis_pick", key="refund:r6").amount == 1000


def test_a_failed_charge_cannot_be_refunded(gw: LedgerGateway) -> None:
    gw.mark_declining("alice")
    charge = gw.capture(account="alice", amount=1000, key="capture:r7")
    with pytest.raises(InvalidState, match="failed"):
        gw.refund(charge, amount=10, reason_code="mis_pick", key="refund:r7")


@pytest.mark.parametrize("reason", ["", "Mis Pick", "x" * 65, None, 5])
def test_refunds_need_a_reason_code(vgw: LedgerGateway, reason: Any) -> None:
    charge = vgw.capture(account="alice", amount=1000, key="capture:r8")
    with pytest.raises(InvalidRequest, match="reason code"):
        vgw.refund(charge, amount=10, reason_code=reason, key="refund:r8")


# --------------------------------------------------------------------------------------- failed payments
def test_a_declining_method_fails_the_hold_and_flags_the_account(gw: LedgerGateway) -> None:
    gw.mark_declining("alice")
    hold = gw.hold("alice", amount=5000, key="hold:d1")
    assert hold.failed and hold.failure_code == "card_declined"
    state = gw.account_state("alice")
    assert state.last_payment_failed and state.last_failure_code == "card_declined"
    assert state.held == 0 and state.method == PaymentMethod("card", True)
    with pytest.raises(InvalidState, match="failed"):
        gw.capture(hold, amount=100, key="capture:d1")
    with pytest.raises(InvalidState, match="failed"):
        gw.cancel(hold, key="cancel:d1")


def test_a_declined_charge_is_recorded_and_flags_the_account(gw: LedgerGateway) -> None:
    gw.mark_declining("alice")
    charge = gw.capture(account="alice", amount=1200, key="capture:d2")
    assert charge.status == "failed" and charge.failure_code == "card_declined" and charge.refundable == 0
    assert gw.capture(account="alice", amount=1200, key="capture:d2") == charge  # the failure is the result
    state = gw.account_state("alice")
    assert state.last_payment_failed and state.captured == 0


def test_capture_within_the_hold_succeeds_even_if_the_method_now_declines(gw: LedgerGateway) -> None:
    hold = gw.hold("alice", amount=2000, key="hold:d3")
    gw.mark_declining("alice")
    over = gw.capture(hold, amount=2500, key="capture:d3")
    assert over.failure_code == "card_declined" and gw.get_hold(hold.id).status == "authorized"
    assert gw.account_state("alice").last_payment_failed
    within = gw.capture(hold, amount=2000, key="capture:d3:retry1")
    assert within.succeeded and gw.get_hold(hold.id).status == "captured"
    assert not gw.account_state("alice").last_payment_failed


@pytest.mark.parametrize("recover", ["new-method", "method-pays-again"])
def test_the_flag_clears_with_a_new_method(gw: LedgerGateway, recover: str) -> None:
    gw.mark_declining("alice")
    gw.hold("alice", amount=5000, key="hold:d4")
    assert gw.account_state("alice").last_payment_failed
    if recover == "new-method":
        gw.set_payment_method("alice", label="card-4242")
    else:
        gw.mark_declining("alice", False)
    assert not gw.account_state("alice").last_payment_failed
    assert gw.hold("alice", amount=5000, key="hold:d5").status == "authorized"


def test_no_payment_method_fails(gw: LedgerGateway) -> None:
    gw.ensure_account("carol", method_label=None)
    assert gw.hold("carol", amount=100, key="hold:d6").failure_code == "no_payment_method"
    assert gw.account_state("carol").last_payment_failed
    with pytest.raises(InvalidState, match="no payment method"):
        gw.mark_declining("carol")


# ---------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize(
    "amount", [12.0, 12.5, float("nan"), True, Decimal(12), "1200", None, 0, -5, 10**12 + 1, np.float64(3)]
)
def test_amounts_must_be_positive_int_minor_units(vgw: LedgerGateway, amount: Any) -> None:
    hold = vgw.hold("alice", amount=5000, key="hold:a")
    charge = vgw.capture(account="alice", amount=5000, key="capture:a")
    rows = len(_rows(vgw.db))
    calls = {
        "hold": lambda: vgw.hold("alice", amount=amount, key="hold:b"),
        "capture": lambda: vgw.capture(hold, amount=amount, key="capture:b"),
        "charge": lambda: vgw.capture(account="alice", amount=amount, key="capture:c"),
        "refund": lambda: vgw.refund(charge, amount=amount, reason_code="mis_pick", key="refund:b"),
    }
    for op, call in calls.items():
        if op == "refund" and amount is None:
            continue  # None means a full refund there (tested elsewhere)
        with pytest.raises(InvalidAmount, match="amount"):
            call()
        assert len(_rows(vgw.db)) == rows, op


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), -1.0, "1700000000", True])
def test_event_times_must_be_finite_seconds(vgw: LedgerGateway, ts: Any) -> None:
    with pytest.raises(InvalidRequest, match="event time"):
        vgw.hold("alice", amount=100, key="hold:ts", ts=ts)


def test_numpy_integers_are_minor_units(gw: LedgerGateway) -> None:
    assert gw.hold("alice", amount=np.int64(4200), key="hold:np").amount == 4200


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, None, "ünicode"])
def test_keys_must_be_printable_ascii(vgw: LedgerGateway, key: Any) -> None:
    with pytest.raises(InvalidRequest, match="idempotency key"):
        vgw.hold("alice", amount=100, key=key)


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.hold("nobody", amount=100, key="hold:n"),
        lambda g: g.capture(account="nobody", amount=100, key="capture:n"),
        lambda g: g.capture("hold_nope", amount=100, key="capture:n"),
        lambda g: g.cancel("hold_nope", key="cancel:n"),
        lambda g: g.refund("ch_nope", amount=100, reason_code="x", key="refund:n"),
        lambda g: g.get_hold("hold_nope"),
        lambda g: g.get_charge("ch_nope"),
        lambda g: g.account_state("nobody"),
        lambda g: g.set_payment_method("nobody", label="card"),
    ],
)
def test_unknown_objects_are_not_found(gw: LedgerGateway, call: Callable[[LedgerGateway], Any]) -> None:
    with pytest.raises(NotFound):
        call(gw)
    assert _rows(gw.db) == []


def test_a_charge_id_is_not_a_hold(gw: LedgerGateway) -> None:
    charge = gw.capture(account="alice", amount=100, key="capture:h")
    with pytest.raises(NotFound, match="unknown hold"):
        gw.capture(charge.id, amount=100, key="capture:h2")
    hold = gw.hold("alice", amount=100, key="hold:h")
    with pytest.raises(NotFound, match="unknown charge"):
        gw.refund(hold.id, amount=100, reason_code="x", key="refund:h")


def test_ensure_account_is_idempotent(gw: LedgerGateway) -> None:
    gw.ensure_account("alice", method_label="other", declines=True)  # exists: left as it is
    assert gw.account_state("alice").method == PaymentMethod("card", False)


def test_money_rows_are_never_changed(gw: LedgerGateway) -> None:
    """Operations only append: the rows written by earlier operations stay exactly as they were."""
    hold = gw.hold("alice", amount=5000, key="hold:m")
    before = _rows(gw.db)
    charge = gw.capture(hold, amount=3000, key="capture:m")
    gw.refund(charge, amount=1000, reason_code="mis_pick", key="refund:m")
    after = _rows(gw.db)
    assert after[: len(before)] == before and len(after) == 3
    assert isinstance(gw.get_hold(hold.id), Hold)

"""Ops review actions on both backends: adjustments are append-only cart lines, approval captures the
corrected total once under the visit's capture key, refunds go through the ledger with ``refund:{adjustment}``
keys and the limit, disputes and unassigned events are resolved, every action is audited."""

# ruff: noqa: F811 - the fixtures come from tests/ops_fixtures.py (imported below)

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from fusion.db import (
    audit_log,
    cart_lines,
    disputes,
    ops_adjustments,
    payment_records,
    receipts,
    review_items,
    utcnow,
)
from fusion.ops.queue import QueueError, queue
from fusion.ops.review import Forbidden, Missing, ReviewError
from fusion.ops.shopper import shopper_receipt
from tests.ops_fixtures import ADMIN, REVIEWER, VIEWER, Env, adj, env  # noqa: F401 - fixtures


def _records(env: Env, kind: str) -> list[tuple]:
    with env.db.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(
                    payment_records.c.idempotency_key, payment_records.c.amount, payment_records.c.status
                )
                .where(payment_records.c.kind == kind)
                .order_by(payment_records.c.seq)
            )
        ]


def _receipt(env: Env, visit: str) -> sa.Row:
    with env.db.read() as conn:
        return conn.execute(sa.select(receipts).where(receipts.c.visit == visit)).one()


def _audit(env: Env, visit: str) -> list[sa.Row]:
    with env.db.read() as conn:
        return conn.execute(
            sa.select(audit_log).where(audit_log.c.entity_id == visit).order_by(audit_log.c.seq)
        ).all()


def test_remove_wrong_line_then_approve_captures_the_corrected_total(env: Env) -> None:
    v = env.visit([("P2", 1), ("P3", 1), ("P4", 1)])
    assert env.reviewer.visit_view(v).corrected_total == 900
    env.reviewer.remove(v, f"{v}-e2", actor=REVIEWER, reason_code="wrong_product", note="-150 g", adj=adj())
    view = env.reviewer.visit_view(v)
    assert view.corrected_total == 500
    assert [ln.remaining for ln in view.lines[:3]] == [1, 1, 0]
    assert (view.lines[-1].kind, view.lines[-1].sku, view.lines[-1].qty) == ("adjustment", "P4", -1)
    out = env.reviewer.approve(v, actor=REVIEWER)
    assert (out["status"], out["total"]) == ("charged", 500)
    assert _records(env, "capture") == [(f"capture:{v}", 500, "succeeded")]
    charge = env.ledger.get_charge(out["payment_id"])
    assert charge.hold_id is not None  # captured against the entry hold
    r = _receipt(env, v)
    assert (r.status, r.total, [ln["sku"] for ln in r.lines]) == ("charged", 500, ["P2", "P3"])
    with env.db.read() as conn:
        items = conn.execute(sa.select(review_items.c.state).where(review_items.c.visit == v)).scalars().all()
    assert items == ["resolved"]
    actions = [(a.actor, a.action) for a in _audit(env, v)]
    assert actions == [("rita", "remove_line"), ("rita", "approve")]
    approve = _audit(env, v)[-1]
    assert approve.before["total"] == 900 and approve.after["total"] == 500
    assert approve.after["key"] == f"capture:{v}"


def test_approving_twice_or_concurrently_captures_once(env: Env) -> None:
    v = env.visit([("P5", 1)])
    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda: results.append(env.reviewer.approve(v, actor=REVIEWER)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["again"] for r in results) == [False, True, True, True]
    assert _records(env, "capture") == [(f"capture:{v}", 500, "succeeded")]
    assert env.reviewer.approve(v, actor=REVIEWER)["again"] is True


def test_nothing_left_releases_the_hold(env: Env) -> None:
    v = env.visit([("P1", 1)])
    env.reviewer.remove(v, f"{v}-e0", actor=REVIEWER, reason_code="not_taken", adj=adj())
    out = env.reviewer.approve(v, actor=REVIEWER)
    assert out["status"] == "no_charge"
    assert _records(env, "cancel") == [(f"cancel:{v}", 5000, "succeeded")]
    assert _records(env, "capture") == []


def test_a_declined_visit_is_retried_with_a_new_key(env: Env) -> None:
    v = env.visit([("P6", 1)], account="acct-poor", hold=False, declines=True)
    first = env.reviewer.approve(v, actor=REVIEWER)
    assert (first["status"], first["failure_code"]) == ("payment_failed", "card_declined")
    assert env.ledger.account_state("acct-poor").last_payment_failed
    env.ledger.set_payment_method("acct-poor", label="new card")
    second = env.reviewer.approve(v, actor=REVIEWER)
    assert second["status"] == "charged"
    assert _records(env, "capture") == [
        (f"capture:{v}", 600, "failed"),
        (f"capture:{v}:retry1", 600, "succeeded"),
    ]


def test_a_form_sent_twice_changes_the_cart_once(env: Env) -> None:
    v = env.visit([("P2", 2)])
    a = adj()
    assert env.reviewer.remove(v, f"{v}-e0", actor=REVIEWER, reason_code="quantity", adj=a, qty=1) is True
    assert env.reviewer.remove(v, f"{v}-e0", actor=REVIEWER, reason_code="quantity", adj=a, qty=1) is False
    assert env.reviewer.visit_view(v).corrected_total == 200


def test_adjustments_are_append_only(env: Env) -> None:
    v = env.visit([("P2", 1)])
    env.reviewer.add(v, "P1", 2, actor=REVIEWER, reason_code="missed_pick", adj=adj())
    for table in (ops_adjustments, cart_lines):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), env.db.begin() as conn:
            conn.execute(table.update().values(qty=0))
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), env.db.begin() as conn:
            conn.execute(table.delete())


def test_move_a_line_to_the_shopper_who_took_it(env: Env) -> None:
    a = env.visit([("P2", 1), ("P4", 1)], account="acct-a")
    b = env.visit([("P1", 1)], account="acct-b")
    env.reviewer.move(a, f"{a}-e1", b, actor=REVIEWER, reason_code="wrong_shopper", adj=adj())
    assert env.reviewer.visit_view(a).corrected_total == 200
    assert env.reviewer.visit_view(b).corrected_total == 500
    assert [x.action for x in _audit(env, a)] == ["move_line"] == [x.action for x in _audit(env, b)]
    with pytest.raises(ReviewError, match="nothing left"):
        env.reviewer.move(a, f"{a}-e1", b, actor=REVIEWER, reason_code="wrong_shopper", adj=adj())
    c = env.charged([("P3", 1)])
    with pytest.raises(ReviewError, match="charged"):
        env.reviewer.move(a, f"{a}-e0", c, actor=REVIEWER, reason_code="wrong_shopper", adj=adj())


REFUSED = [  # (what, action on a charged visit, message)
    (
        "remove-charged",
        lambda r, v: r.remove(v, f"{v}-e0", actor=REVIEWER, reason_code="other", adj=adj()),
        "refund instead",
    ),
    (
        "add-charged",
        lambda r, v: r.add(v, "P1", 1, actor=REVIEWER, reason_code="missed_pick", adj=adj()),
        "no longer",
    ),
    (
        "unknown-sku",
        lambda r, v: r.add(v, "NOPE", 1, actor=REVIEWER, reason_code="missed_pick", adj=adj()),
        "catalogue",
    ),
    (
        "unknown-line",
        lambda r, v: r.refund(v, line_id="nope", actor=REVIEWER, reason_code="other", adj=adj()),
        "no line",
    ),
    ("bad-reason", lambda r, v: r.refund(v, actor=REVIEWER, reason_code="bogus", adj=adj()), "reason code"),
    ("stale-form", lambda r, v: r.refund(v, actor=REVIEWER, reason_code="other", adj="adj-x"), "stale"),
    (
        "too-many",
        lambda r, v: r.refund(v, actor=REVIEWER, reason_code="other", adj=adj(), line_id=f"{v}-e0", qty=3),
        "cannot refund 3",
    ),
    ("unknown-visit", lambda r, v: r.approve("nope", actor=REVIEWER), "no visit"),
]


def test_actions_that_do_not_apply_are_refused(env: Env) -> None:
    v = env.charged([("P2", 1)])
    for what, action, message in REFUSED:
        with pytest.raises(ReviewError, match=message):
            action(env.reviewer, v)
            pytest.fail(f"{what} was not refused")
    assert _records(env, "refund") == []
    assert [a.action for a in _audit(env, v)] == ["approve"]


def test_refund_a_line_then_the_rest(env: Env) -> None:
    v = env.charged([("P2", 2), ("P3", 1)])  # 700
    a1 = adj()
    out = env.reviewer.refund(
        v, actor=REVIEWER, reason_code="damaged", note="crushed", adj=a1, line_id=f"{v}-e0", qty=1
    )
    assert out["amount"] == 200
    assert env.reviewer.refund(v, actor=REVIEWER, reason_code="damaged", adj=a1, line_id=f"{v}-e0")["again"]
    a2 = adj()
    assert env.reviewer.refund(v, actor=REVIEWER, reason_code="goodwill", adj=a2)["amount"] == 500
    assert _records(env, "refund") == [(f"refund:{a1}", 200, "succeeded"), (f"refund:{a2}", 500, "succeeded")]
    view = env.reviewer.visit_view(v)
    assert view.charge is not None and view.charge.refundable == 0 and view.refunded == 700
    assert view.corrected_total == 0
    with pytest.raises(ReviewError, match="nothing"):
        env.reviewer.refund(v, actor=REVIEWER, reason_code="goodwill", adj=adj())
    assert [x.action for x in _audit(env, v)] == ["approve", "refund", "refund"]


def test_refunds_above_the_limit_need_an_admin(env: Env) -> None:
    v = env.charged([("P6", 2)])  # 1200 > limit 1000
    with pytest.raises(Forbidden, match="admin"):
        env.reviewer.refund(v, actor=REVIEWER, reason_code="goodwill", adj=adj())
    assert _records(env, "refund") == []
    assert (
        env.reviewer.refund(v, actor=REVIEWER, reason_code="goodwill", adj=adj(), line_id=f"{v}-e0", qty=1)[
            "amount"
        ]
        == 600
    )
    assert env.reviewer.refund(v, actor=ADMIN, reason_code="goodwill", adj=adj())["amount"] == 600


VIEWER_ACTIONS = [
    lambda r, v: r.confirm(v, f"{v}-e0", actor=VIEWER),
    lambda r, v: r.remove(v, f"{v}-e0", actor=VIEWER, reason_code="other", adj=adj()),
    lambda r, v: r.add(v, "P1", 1, actor=VIEWER, reason_code="missed_pick", adj=adj()),
    lambda r, v: r.move(v, f"{v}-e0", "other", actor=VIEWER, reason_code="wrong_shopper", adj=adj()),
    lambda r, v: r.approve(v, actor=VIEWER),
    lambda r, v: r.refund(v, actor=VIEWER, reason_code="other", adj=adj()),
    lambda r, v: r.reject_dispute(v, 1, actor=VIEWER, note="no no no"),
    lambda r, v: r.assign_event("e1", v, "P1", 1, actor=VIEWER, adj=adj()),
    lambda r, v: r.dismiss_event("e1", actor=VIEWER, note="restock"),
]


def test_a_viewer_can_change_nothing(env: Env) -> None:
    v = env.visit([("P2", 1)])
    for action in VIEWER_ACTIONS:
        with pytest.raises(Forbidden, match="needs the reviewer role"):
            action(env.reviewer, v)
    view = env.reviewer.visit_view(v)
    assert view.history == [] and view.adjustments == [] and view.status == "held_for_review"


def test_disputes_queue_the_visit_and_get_an_outcome(env: Env) -> None:
    v = env.charged([("P2", 1), ("P3", 1)], account="acct-d")
    d1 = env.reviewer.open_dispute(v, "acct-d", "P3", 1, "I never took this")
    d2 = env.reviewer.open_dispute(v, "acct-d", "P2", 1, "charged twice?")
    with pytest.raises(Missing):
        env.reviewer.open_dispute(v, "acct-other", "P3", 1, "not mine")
    with pytest.raises(ReviewError, match="not on this receipt"):
        env.reviewer.open_dispute(v, "acct-d", "P6", 1, "what")
    q = queue(env.db)
    assert q.counts["dispute"] == 2
    assert [i.key for i in q.items if i.category == "dispute"] == [f"dispute:{d1}", f"dispute:{d2}"]
    env.reviewer.refund(
        v, actor=REVIEWER, reason_code="not_taken", note="not on camera", adj=adj(), line_id=f"{v}-e1"
    )
    env.reviewer.reject_dispute(v, d2, actor=REVIEWER, note="the camera shows one P2 taken")
    with env.db.read() as conn:
        rows = conn.execute(sa.select(disputes).order_by(disputes.c.id)).all()
    assert [(r.outcome, r.refunded) for r in rows] == [("refunded", 300), ("rejected", 0)]
    assert queue(env.db).counts["dispute"] == 0
    seen = shopper_receipt(env.db, env.store, "acct-d", v)
    assert [(d["outcome"], d["outcome_note"]) for d in seen["disputes"]] == [
        ("refunded", "the product was not taken: not on camera"),
        ("rejected", "the camera shows one P2 taken"),
    ]
    assert (seen["refunded"], seen["net"]) == (300, 200)


def test_removing_a_disputed_line_before_payment_corrects_the_dispute(env: Env) -> None:
    v = env.visit([("P2", 1), ("P4", 1)], account="acct-e")
    d = env.reviewer.open_dispute(v, "acct-e", "P4", 1, "I put it back")
    env.reviewer.remove(v, f"{v}-e1", actor=REVIEWER, reason_code="put_back_missed", adj=adj())
    dispute = shopper_receipt(env.db, env.store, "acct-e", v)["disputes"][0]
    assert (dispute["dispute"], dispute["outcome"]) == (d, "corrected")


def test_queue_oldest_first_with_counts_categories_and_pages(env: Env) -> None:
    held = env.visit([("P2", 1)])
    offline = env.visit([("P2", 1)], reasons=("offline during the visit: c2",))
    with env.db.begin() as conn:
        conn.execute(
            review_items.insert().values(
                item_key="event:e9",
                kind="event",
                event_id="e9",
                reason="no shopper near the lanes",
                state="open",
                created_at=utcnow(),
            )
        )
    q = queue(env.db, per_page=2)
    assert q.counts == {"uncertain": 1, "dispute": 0, "offline": 1, "unassigned": 1}
    assert [i.visit or i.event_id for i in q.items] == [held, offline]
    assert q.pages == 2
    assert [i.event_id for i in queue(env.db, per_page=2, page=2).items] == ["e9"]
    assert [i.visit for i in queue(env.db, category="offline").items] == [offline]
    with pytest.raises(QueueError):
        queue(env.db, category="nope")


def test_unassigned_event_assigned_or_dismissed(env: Env) -> None:
    v = env.visit([("P2", 1)])
    with env.db.begin() as conn:
        for e in ("e7", "e8"):
            conn.execute(
                review_items.insert().values(
                    item_key=f"event:{e}",
                    kind="event",
                    event_id=e,
                    reason="no shopper",
                    state="open",
                    created_at=utcnow(),
                )
            )
    env.reviewer.assign_event("e7", v, "P6", 1, actor=REVIEWER, adj=adj())
    assert env.reviewer.visit_view(v).corrected_total == 800
    env.reviewer.dismiss_event("e8", actor=REVIEWER, note="restocking by staff")
    with pytest.raises(ReviewError, match="not open"):
        env.reviewer.dismiss_event("e8", actor=REVIEWER, note="again")
    assert queue(env.db).counts["unassigned"] == 0

"""The fusion process around the engine: messages in through a transport, state in the database, money
through a payment gateway, carts, receipts and account standing out.

Per message (the transport's handler, one at a time)::

    inbox row (insert if (source, seq) is new) -> COMMIT -> engine.offer(msg) -> effects, applied in order

The handler returns only after the inbox row is committed, so the transport acknowledges only committed
messages: a shelf event or a gate scan is never lost.  The engine's effects are applied idempotently:

* ``VisitOpened``: a ``visits`` row, then a payment hold with key ``hold:{visit}``; a declined hold blocks
  the account (retained ``accounts/{account}`` status, which the gate reads).
* ``CartChanged``: new cart lines (``(visit, line_id)`` is unique; the table is append-only) and a retained
  ``CartSnapshotMsg`` on ``carts/{visit}``.
* ``VisitSettled``: the receipt row (status ``pending``, with its charge key) and a review item for a held
  visit, committed before any money moves; then capture (``capture:{visit}``), cancel the hold
  (``cancel:{visit}``, empty cart) or leave the hold for review; the receipt's final status
  (``charged``, ``no_charge``, ``held_for_review``, ``payment_failed``); ``ReceiptMsg`` on
  ``receipts/{visit}``.
  A declined capture blocks the account; a later successful payment unblocks it.
* ``Unassigned``: a review item for the event.

An effect that cannot be applied (the database is away) stays queued, with everything after it, and is
retried before the next message and on :meth:`tick`; no snapshot is taken while effects are queued.

Recovery: every ``snapshot_every_s`` seconds of event time (and on a clean stop) the engine is pickled
into ``engine_snapshots`` with the inbox position it includes and the de-duplicator's state, after every
effect so far is applied and every message published so far was acknowledged by the broker; the inbox rows
it includes are deleted in the same transaction.  On start the latest snapshot is restored and the inbox
rows after it are fed again in their original order (the engine is deterministic, so it rebuilds the same
state and emits the same effects; their application is idempotent: nothing is charged twice and no row is
duplicated), then the transport subscribes (persistent session) and the broker delivers what it queued.

Durability: shelf events, gate scans and status messages commit with the database's full durability
(SQLite ``synchronous=FULL``).  Track messages (10+ per camera per second) commit with relaxed durability
(SQLite ``synchronous=NORMAL`` in WAL mode; PostgreSQL ``synchronous_commit=off``): a killed process loses
nothing (the commit is in the OS's hands before the handler returns), a power cut of the machine may lose the
last moments of track frames (already acknowledged to the broker), which changes at most the floor positions
of those instants, never a cart line, a scan or a payment.  Trajectory samples are written in batches (every
``trajectory_flush_s`` of event time and before each snapshot); the ones lost with a kill are sampled again
from the replayed messages.

Status messages: every one is recorded (``device_events``, which also tells their repeats) but a shelf gateway's
watermark heartbeats (inbox only, relaxed like track frames); only cameras' and
shelves' (``kind`` camera or shelf, not this process) go into the inbox and reach the engine (offline spans
hold visits), with their time clamped to the engine's clock, since a transport stamps its status with the
wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibration.config import read_yaml, validate
from calibration.store import Store
from fusion import store_db
from fusion.config import FusionConfig
from fusion.db import Database
from fusion.engine import CartChanged, Effect, FusionEngine, Unassigned, VisitOpened, VisitSettled
from fusion.metrics import FusionMetrics
from fusion.payments import InvalidState, NotFound, PaymentError, PaymentGateway
from wire.codec import WireError, decode, encode
from wire.messages import (
    AccountStatusMsg,
    CartLine,
    CartSnapshotMsg,
    GateEntryMsg,
    ReceiptLine,
    ReceiptMsg,
    ShelfEventMsg,
    StatusMsg,
    TracksMsg,
)
from wire.topics import Kind, TopicInfo, topic
from wire.transport import RateLimitedLog, Transport

log = logging.getLogger(__name__)

#: Device kinds whose status reaches the engine (an offline camera or shelf holds the visits it covered).
ENGINE_STATUS_KINDS = frozenset({"camera", "shelf"})
INPUT_KINDS = (Kind.TRACKS, Kind.SHELF_EVENTS, Kind.GATE_ENTRY, Kind.STATUS)
_RECORDED_ONLY = -1  # a status message kept in device_events only (the engine does not use it)
_MODEL_KIND = {
    TracksMsg: Kind.TRACKS,
    ShelfEventMsg: Kind.SHELF_EVENTS,
    GateEntryMsg: Kind.GATE_ENTRY,
    StatusMsg: Kind.STATUS,
}


def load_fusion_config(path: str | Path) -> FusionConfig:
    """A :class:`FusionConfig` from YAML; :class:`calibration.config.ConfigError` names the field on error."""
    data = read_yaml(path)
    return validate(FusionConfig, {} if data is None else data, path)


@dataclass(frozen=True)
class ServiceSettings:
    """How the process around the engine behaves (flags of ``walkout fusion``)."""

    device: str = "fusion"
    snapshot_every_s: float = 30.0  # event time between snapshots
    flush_timeout_s: float = 2.0  # wait for the broker's acknowledgements before a snapshot
    trajectory_hz: float = 2.0
    trajectory_flush_s: float = 1.0
    retention_days: float = 30.0  # trajectories and device events
    relaxed_tracks: bool = True  # track messages commit without fsync (see the module docstring)
    # track frames and watermark heartbeats go into the inbox (so a restart rebuilds the floor from them); a
    # replay turns it off: its input is a recording, and a replay that dies is run again from it
    inbox_relaxed: bool = True
    create_accounts: bool = False  # demo and simulator: unknown accounts get a paying card at entry


class FusionService:
    """Fusion for one store.  :meth:`start` recovers and subscribes; the transport calls :meth:`handle`."""

    def __init__(
        self,
        store: Store,
        db: Database,
        transport: Transport,
        payments: PaymentGateway,
        config: FusionConfig | None = None,
        settings: ServiceSettings | None = None,
        metrics: FusionMetrics | None = None,
    ):
        self.store = store
        self.db = db
        self.transport = transport
        self.payments = payments
        self.cfg = config or FusionConfig()
        self.settings = settings or ServiceSettings()
        self.metrics = metrics or FusionMetrics()
        self.metrics.watch_transport(transport.counters.as_dict)
        self.currency = store.store.currency
        self.engine = FusionEngine(store, self.cfg)
        self.counters: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._pending: deque[Effect] = deque()
        self._last_pos = 0
        self._snap_clock: float | None = None
        self._traj: list[dict[str, Any]] = []
        self._traj_bucket: dict[str, int] = {}
        self._traj_flushed = 0.0
        self._pruned_at = 0.0
        self._conn: Any = None  # the inbox's own connection
        self._sync_mode: str | None = None
        self._recovering = False
        self._started = False
        self._rlog = RateLimitedLog(log)
        self._msg_counters: dict[Kind, Any] = {}

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Migrate, recover from the latest snapshot and the inbox, subscribe, connect."""
        self.db.migrate()
        with self._lock:
            self._open_inbox()
            self.recover()
            self._started = True
        for kind in INPUT_KINDS:
            self.transport.subscribe(kind, self.handle)
        self.transport.start()
        self.refresh_gauges()

    def stop(self, state: str = "stopped", timeout: float = 5.0) -> None:
        """Apply what is queued, snapshot, publish ``state`` and disconnect."""
        with self._lock:
            if self._started:
                self._drain()
                if not self.snapshot():
                    log.warning("no snapshot at stop: the next start replays the inbox since the last one")
        self.transport.stop(state, timeout)
        with self._lock:
            self._close_inbox()
            self._started = False

    def recover(self) -> int:
        """Restore the latest snapshot and feed the inbox rows after it; returns how many were fed."""
        with self.db.read() as conn:
            snap = store_db.latest_snapshot(conn)
        if snap is not None:
            self.engine = FusionEngine.restore(self.store, self.cfg, snap.state)
            self.transport.dedup.import_state(snap.dedup)
            self._last_pos = snap.inbox_pos
            self._snap_clock = snap.event_ts
            log.info(
                "restored the engine snapshot at inbox position %d (event time %.3f)",
                snap.inbox_pos,
                snap.event_ts,
            )
        with self.db.read() as conn:
            rows = store_db.inbox_after(conn, self._last_pos)
        self._recovering = True
        try:
            for row in rows:
                try:
                    info, msg = decode(row.topic, row.payload)
                except WireError as exc:  # written by us after validation: only a newer schema gets here
                    log.error("inbox row %d cannot be read back (%s); skipped", row.pos, exc)
                    self._last_pos = row.pos
                    continue
                if info.kind is not Kind.STATUS:
                    self.transport.dedup.add(msg.source, msg.seq)  # type: ignore[attr-defined]
                self._last_pos = row.pos
                self._feed(info.kind, msg)
        finally:
            self._recovering = False
        self.counters["replayed"] += len(rows)
        if rows:
            log.info(
                "replayed %d inbox messages after the snapshot; %d effects queued",
                len(rows),
                len(self._pending),
            )
        return len(rows)

    # ------------------------------------------------------------------------------------------ input
    def handle(self, info: TopicInfo, msg: BaseModel) -> None:
        """The transport's handler: commit to the inbox, feed the engine, apply the effects.

        Raises (so the message stays unacknowledged and comes again) only when the inbox row could not be
        committed."""
        with self._lock:
            if self._pending:
                self._drain()
            pos = self._inbox_add(info, msg)
            if pos is None:
                self.counters["duplicates"] += 1
                self.metrics.duplicates.inc()
                return
            self.counters[f"messages_{info.kind.value}"] += 1
            self._message_counter(info.kind).inc()
            if pos == _RECORDED_ONLY:
                return
            self._last_pos = pos
            self._feed(info.kind, msg)
            self._after_message()

    def _message_counter(self, kind: Kind) -> Any:
        child = self._msg_counters.get(kind)
        if child is None:
            child = self._msg_counters[kind] = self.metrics.messages.labels(kind.value)
        return child

    def offer(self, msg: BaseModel) -> None:
        """Handle a message without a transport (tests, benchmarks), as if it had arrived on its topic: the
        transport's de-duplicator first (it remembers what older snapshots include), then :meth:`handle`."""
        kind = _MODEL_KIND[type(msg)]
        key = getattr(
            msg,
            {
                Kind.TRACKS: "camera",
                Kind.SHELF_EVENTS: "shelf",
                Kind.GATE_ENTRY: "gate",
                Kind.STATUS: "device",
            }[kind],
        )
        source, seq = msg.source, msg.seq  # type: ignore[attr-defined]
        if kind is not Kind.STATUS and not self.transport.dedup.add(source, seq):
            with self._lock:
                self.counters["duplicates"] += 1
                self.metrics.duplicates.inc()
            return
        self.handle(TopicInfo(kind, self.store.store.id, key), msg)

    def _inbox_add(self, info: TopicInfo, msg: BaseModel) -> int | None:
        # a shelf gateway's watermark heartbeat (a status with a watermark and no counters, several a second)
        # is like a track frame: in the inbox, not a device event, and a lost one is made good by the next
        beat = isinstance(msg, StatusMsg) and msg.watermark is not None and not msg.counters
        if (info.kind is Kind.TRACKS or beat) and not self.settings.inbox_relaxed:
            return self._last_pos  # fed to the engine without an inbox row (a replay's setting)
        durable = (info.kind is not Kind.TRACKS and not beat) or not self.settings.relaxed_tracks
        self._set_durability(durable)
        source, seq, ts = msg.source, msg.seq, float(msg.ts)  # type: ignore[attr-defined]
        try:
            with self._conn.begin():
                if not durable and self._conn.dialect.name == "postgresql":
                    self._conn.exec_driver_sql("SET LOCAL synchronous_commit TO off")
                if isinstance(msg, StatusMsg) and not beat:
                    fresh = store_db.device_event_add(
                        self._conn,
                        source=source,
                        seq=seq,
                        device=msg.device,
                        kind=msg.kind,
                        state=msg.state,
                        version=msg.version,
                        config_hash=msg.config_hash,
                        counters=msg.counters,
                        ts=ts,
                    )
                    if not fresh:
                        return None
                    if not self._engine_status(msg):
                        return _RECORDED_ONLY
                return store_db.inbox_add(
                    self._conn,
                    source=source,
                    seq=seq,
                    kind=info.kind.value,
                    topic=topic(info.kind, info.store, info.key),
                    ts=ts,
                    payload=encode(msg),
                )
        except Exception:
            self._sync_mode = None  # the connection may have been replaced: set the mode again next time
            raise

    def _engine_status(self, msg: StatusMsg) -> bool:
        return msg.kind in ENGINE_STATUS_KINDS and msg.device != self.settings.device

    def _feed(self, kind: Kind, msg: BaseModel) -> None:
        if isinstance(msg, StatusMsg):
            if not self._engine_status(msg):
                return
            clock = self.engine.clock
            if clock > 0 and msg.ts > clock:
                msg = msg.model_copy(update={"ts": clock})
        effects = self.engine.offer(msg)
        if kind is Kind.TRACKS:
            self._sample_trajectories()
        if effects:
            self._pending.extend(effects)
            self._drain()

    def _after_message(self) -> None:
        clock = self.engine.clock
        if self._snap_clock is None:
            self._snap_clock = clock
        if self._traj and clock - self._traj_flushed >= self.settings.trajectory_flush_s:
            self._flush_trajectories()
        if clock - self._snap_clock >= self.settings.snapshot_every_s:
            self.snapshot()

    # ------------------------------------------------------------------------------------------ effects
    def _drain(self) -> bool:
        """Apply queued effects in order; False (the rest stays queued) when one fails."""
        while self._pending:
            eff = self._pending[0]
            try:
                self._apply(eff)
            except Exception as exc:  # noqa: BLE001 - keep it (and what follows) queued; never drop money
                self.counters["effect_failures"] += 1
                self._rlog.warning(
                    "effect",
                    "could not apply %s (%s); %d effects queued, retrying later",
                    type(eff).__name__,
                    exc,
                    len(self._pending),
                    exc_info=True,
                )
                self.metrics.pending_effects.set(len(self._pending))
                return False
            self._pending.popleft()
            self.counters[f"effects_{type(eff).__name__}"] += 1
            self.metrics.effects.labels(type(eff).__name__).inc()
        self.metrics.pending_effects.set(0)
        return True

    def _apply(self, eff: Effect) -> None:
        if isinstance(eff, VisitOpened):
            self._on_opened(eff)
        elif isinstance(eff, CartChanged):
            self._on_cart(eff)
        elif isinstance(eff, VisitSettled):
            self._on_settled(eff)
        elif isinstance(eff, Unassigned):
            self._on_unassigned(eff)

    def _on_opened(self, eff: VisitOpened) -> None:
        with self.db.begin() as conn:
            store_db.visit_add(
                conn,
                visit=eff.visit,
                account=eff.account,
                gate=eff.gate,
                party_size=eff.party_size,
                entered_at=eff.ts,
            )
            row = store_db.visit_get(conn, eff.visit)
        if row is None or row.hold_status is None:
            # (a crash right after the hold: applied again, its key returns the original outcome)
            hold_id, status, code = self._hold(eff)
            with self.db.begin() as conn:
                store_db.visit_set_hold(conn, eff.visit, hold_id, status)
        else:  # applied before this restart: the standing may still need its message
            status, code = row.hold_status, None
        if status == "failed":
            self._account_outcome(
                eff.account,
                ok=False,
                code=code,
                visit=eff.visit,
                ts=eff.ts,
                reason="the entry hold was declined",
            )
        elif status == "authorized":
            self._account_outcome(eff.account, ok=True, code=None, visit=eff.visit, ts=eff.ts, reason="")

    def _hold(self, eff: VisitOpened) -> tuple[str | None, str, str | None]:
        """(hold id, authorized | failed | none, failure code) of the entry hold."""
        amount = self.cfg.checkout.hold_amount
        if amount <= 0:
            return None, "none", None
        key = f"hold:{eff.visit}"
        try:
            try:
                hold = self.payments.hold(eff.account, amount=amount, key=key, ts=eff.ts)
            except NotFound:
                ensure = getattr(self.payments, "ensure_account", None)
                if not (self.settings.create_accounts and ensure is not None):
                    raise
                ensure(eff.account)
                hold = self.payments.hold(eff.account, amount=amount, key=key, ts=eff.ts)
        except NotFound:
            log.warning("visit %s: account %s is unknown to the payment provider", eff.visit, eff.account)
            return None, "failed", "unknown_account"
        except PaymentError as exc:
            log.error("visit %s: hold refused: %s", eff.visit, exc)
            return None, "failed", "payment_error"
        if hold.failed:
            self.metrics.payment_failures.inc()
            log.warning(
                "visit %s: hold for account %s declined (%s)", eff.visit, eff.account, hold.failure_code
            )
            return hold.id, "failed", hold.failure_code
        return hold.id, "authorized", None

    def _on_cart(self, eff: CartChanged) -> None:
        with self.db.begin() as conn:
            store_db.cart_lines_add(conn, eff.visit, eff.lines)
            if eff.state == "settling":
                store_db.visit_advance(conn, eff.visit, "settling")
        self._publish_cart(eff.visit, eff.account, eff.state, eff.lines)

    def _on_settled(self, eff: VisitSettled) -> None:
        key = None if eff.decision == "no_charge" else f"capture:{eff.visit}"
        with self.db.begin() as conn:
            store_db.receipt_add(
                conn,
                visit=eff.visit,
                account=eff.account,
                decision=eff.decision,
                total=eff.total,
                currency=self.currency,
                lines=eff.lines,
                reasons=eff.reasons,
                charge_key=key,
                entered_at=eff.entered_at,
                exited_at=eff.exited_at,
                settled_at=eff.settled_at,
            )
            store_db.visit_advance(
                conn,
                eff.visit,
                "closed",
                exited_at=eff.exited_at,
                settled_at=eff.settled_at,
                shoppers=eff.shoppers,
            )
            if eff.decision == "hold":
                self._review(
                    conn,
                    f"visit:{eff.visit}",
                    "visit",
                    "; ".join(eff.reasons) or "held",
                    visit=eff.visit,
                    details={"account": eff.account, "total": eff.total, "reasons": list(eff.reasons)},
                    ts=eff.settled_at,
                )
            visit = store_db.visit_get(conn, eff.visit)
            receipt = store_db.receipt_get(conn, eff.visit)
        assert receipt is not None
        if receipt.status == "pending":
            status, payment_id, code, extra = self._settle_payment(eff, visit)
            reasons = list(eff.reasons) + extra
            with self.db.begin() as conn:
                first = store_db.receipt_finish(
                    conn,
                    eff.visit,
                    status,
                    payment_id=payment_id,
                    failure_code=code,
                    reasons=reasons if extra else None,
                )
                if extra:
                    self._review(
                        conn,
                        f"visit:{eff.visit}",
                        "visit",
                        "; ".join(extra),
                        visit=eff.visit,
                        details={"account": eff.account, "total": eff.total},
                        ts=eff.settled_at,
                    )
                receipt = store_db.receipt_get(conn, eff.visit)
            assert receipt is not None
            if first:
                self.metrics.receipts.labels(status).inc()
                self.counters[f"receipts_{status}"] += 1
                self.metrics.latency.observe(max(0.0, time.time() - eff.exited_at))
        # (again after a restart: the standing is idempotent, and its message may not have left before)
        if receipt.status == "payment_failed":
            self._account_outcome(
                eff.account,
                ok=False,
                code=receipt.failure_code,
                visit=eff.visit,
                ts=eff.settled_at,
                reason="payment for a visit failed",
            )
        elif receipt.status == "charged":
            self._account_outcome(
                eff.account, ok=True, code=None, visit=eff.visit, ts=eff.settled_at, reason=""
            )
        self._publish_cart(
            eff.visit,
            eff.account,
            "closed",
            self.engine.carts[eff.visit].lines if eff.visit in self.engine.carts else (),
        )
        self._publish_receipt(receipt)

    def _settle_payment(
        self, eff: VisitSettled, visit: store_db.VisitRow | None
    ) -> tuple[str, str | None, str | None, list[str]]:
        """(receipt status, payment record id, failure code, extra review reasons) for a settled visit."""
        hold_ok = visit is not None and visit.hold_status == "authorized" and visit.hold_id is not None
        if eff.decision == "hold":
            return "held_for_review", None, None, []
        if eff.decision == "no_charge":
            if not hold_ok:
                return "no_charge", None, None, []
            try:
                cancel = self.payments.cancel(visit.hold_id, key=f"cancel:{eff.visit}", ts=eff.settled_at)
            except InvalidState as exc:  # ops settled the hold meanwhile
                log.warning("visit %s: hold not cancelled: %s", eff.visit, exc)
                return "no_charge", None, None, []
            return "no_charge", cancel.id, None, []
        key = f"capture:{eff.visit}"
        try:
            if hold_ok:
                charge = self.payments.capture(visit.hold_id, amount=eff.total, key=key, ts=eff.settled_at)
            else:
                charge = self.payments.capture(
                    account=eff.account, amount=eff.total, key=key, ts=eff.settled_at
                )
        except NotFound as exc:
            log.warning("visit %s: capture impossible: %s", eff.visit, exc)
            return "payment_failed", None, "unknown_account", []
        except PaymentError as exc:  # a state or key conflict: a person must look at it
            log.error("visit %s: capture refused: %s", eff.visit, exc)
            return "held_for_review", None, None, [f"payment error: {exc}"]
        if charge.succeeded:
            return "charged", charge.id, None, []
        self.metrics.payment_failures.inc()
        log.warning(
            "visit %s: capture of %d for account %s declined (%s)",
            eff.visit,
            eff.total,
            eff.account,
            charge.failure_code,
        )
        return "payment_failed", charge.id, charge.failure_code, []

    def _on_unassigned(self, eff: Unassigned) -> None:
        details = {
            "shelf": eff.shelf,
            "shopper": eff.shopper,
            "candidates": [{"sku": s, "qty": q, "p": p} for s, q, p in eff.candidates],
        }
        with self.db.begin() as conn:
            self._review(
                conn,
                f"event:{eff.event_id}",
                "event",
                eff.reason,
                event_id=eff.event_id,
                details=details,
                ts=eff.ts,
            )

    def _review(
        self,
        conn: Any,
        key: str,
        kind: str,
        reason: str,
        *,
        visit: str | None = None,
        event_id: str | None = None,
        details: dict[str, Any] | None = None,
        ts: float | None = None,
    ) -> None:
        if store_db.review_add(
            conn,
            key=key,
            kind=kind,
            reason=reason,
            visit=visit,
            event_id=event_id,
            details=details,
            event_ts=ts,
        ):
            self.metrics.review_items.labels(kind).inc()
            self.counters[f"review_{kind}"] += 1

    def refresh_account(self, account: str) -> str | None:
        """Publish the account's standing as the payment provider now sees it (for the ops app, after a new
        payment method was attached: the ledger no longer counts the last failure).  Returns the state
        published, or None for an account that never failed (it has no standing)."""
        state = self.payments.account_state(account)
        with self._lock:
            with self.db.read() as conn:
                prev = store_db.standing_get(conn, account)
            if prev is None:
                return None
            ok = not state.last_payment_failed
            self._account_outcome(
                account,
                ok=ok,
                code=state.last_failure_code,
                visit=prev.visit,
                ts=max(self.engine.clock, prev.event_ts or 0.0),
                reason="" if ok else prev.reason,
            )
            return "ok" if ok else "blocked"

    def _account_outcome(
        self, account: str, *, ok: bool, code: str | None, visit: str | None, ts: float, reason: str
    ) -> None:
        """Record a payment's outcome in the account's standing and publish it (retained) when the account
        is or was blocked; accounts that never failed have no standing (the gate lets them in)."""
        with self.db.begin() as conn:
            prev = store_db.standing_get(conn, account)
            if ok and prev is None:
                return
            if not ok and code is None and prev is not None and prev.state == "blocked":
                code = prev.failure_code  # the same failure applied again after a restart
            new = store_db.Standing(
                account, "ok" if ok else "blocked", reason if not ok else "", None if ok else code, visit, ts
            )
            store_db.standing_set(conn, new)
        if prev is None or prev.state != new.state:
            log.warning(
                "account %s is now %s (visit %s%s)", account, new.state, visit, f", {code}" if code else ""
            )
        msg = AccountStatusMsg(
            source=self.transport.device,
            seq=self.transport.seq(),
            ts=ts,
            account=account,
            state=new.state,
            reason=new.reason,
            failure_code=new.failure_code,
            visit=visit,
        )
        self.transport.publish(Kind.ACCOUNT, account, msg)

    # ------------------------------------------------------------------------------------------ publishing
    def _publish_cart(self, visit: str, account: str, state: str, lines: Any) -> None:
        products = self.store.products
        out = [
            CartLine(
                line_id=ln.line_id,
                kind=ln.kind,
                sku=ln.sku,
                name=products[ln.sku].name if ln.sku in products else "",
                qty=ln.qty,
                unit_price=ln.unit_price,
                amount=ln.amount,
                confidence=_prob(ln.confidence),
                margin=_prob(ln.margin),
                uncertain=ln.uncertain,
                event_id=ln.event_id,
                shopper=ln.shopper,
                cameras=list(ln.cameras),
                t=ln.t,
            )
            for ln in lines
        ]
        msg = CartSnapshotMsg(
            source=self.transport.device,
            seq=self.transport.seq(),
            ts=max(self.engine.processed_until, 0.0),
            visit=visit,
            account=account,
            state=state,
            currency=self.currency,
            lines=out,
            total=sum(ln.amount for ln in out),
        )
        self.transport.publish(Kind.CART, visit, msg)

    def _publish_receipt(self, r: store_db.ReceiptRow) -> None:
        lines = [
            ReceiptLine(
                sku=ln["sku"],
                name=ln.get("name", ""),
                qty=ln["qty"],
                unit_price=ln["unit_price"],
                amount=ln["amount"],
                uncertain=bool(ln.get("uncertain", False)),
            )
            for ln in r.lines
        ]
        msg = ReceiptMsg(
            source=self.transport.device,
            seq=self.transport.seq(),
            ts=r.settled_at,
            visit=r.visit,
            account=r.account,
            status=r.status,
            currency=r.currency,
            lines=lines,
            total=r.total,
            charge_key=r.charge_key,
            reasons=[x[:256] for x in r.reasons[:64]],
            entered_at=r.entered_at,
            exited_at=max(r.exited_at, r.entered_at),
        )
        self.transport.publish(Kind.RECEIPT, r.visit, msg)

    # ------------------------------------------------------------------------------------------ trajectories
    def _sample_trajectories(self) -> None:
        floor = self.engine.floor
        hz = self.settings.trajectory_hz
        if hz <= 0:
            return
        for inf in floor.live():
            if inf.visit is None or not inf.path:
                continue
            t, x, y = inf.path[-1]
            bucket = int(t * hz)
            if self._traj_bucket.get(inf.id) == bucket:
                continue
            self._traj_bucket[inf.id] = bucket
            self._traj.append(
                {"visit": inf.visit, "shopper": inf.id, "bucket": bucket, "t": t, "x": x, "y": y}
            )

    def _flush_trajectories(self) -> None:
        if not self._traj:
            return
        self._set_durability(False)
        with self._conn.begin():
            store_db.trajectory_add(self._conn, self._traj)
        self._traj = []
        self._traj_flushed = self.engine.clock
        live = {inf.id for inf in self.engine.floor.info if inf.exited_t is None}
        for sid in [s for s in self._traj_bucket if s not in live]:
            del self._traj_bucket[sid]

    # ------------------------------------------------------------------------------------------ snapshots
    def snapshot(self) -> bool:
        """Write an engine snapshot now; False (and nothing written) while effects are queued or the broker
        has not acknowledged everything published so far."""
        with self._lock:
            if self._recovering or (self._pending and not self._drain()):
                return False
            self._flush_trajectories()
            if not self.transport.flush(self.settings.flush_timeout_s):
                self._rlog.warning(
                    "snapshot",
                    "snapshot postponed: %d published messages not yet acknowledged",
                    len(getattr(self.transport, "outbox", ())),
                )
                return False
            blob = self.engine.snapshot()
            with self.db.begin() as conn:
                store_db.write_snapshot(
                    conn,
                    inbox_pos=self._last_pos,
                    event_ts=self.engine.clock,
                    state=blob,
                    dedup=self.transport.dedup.export_state(),
                )
            self._snap_clock = self.engine.clock
            self.counters["snapshots"] += 1
            log.debug(
                "snapshot at inbox position %d, event time %.3f, %d bytes",
                self._last_pos,
                self.engine.clock,
                len(blob),
            )
            return True

    # ------------------------------------------------------------------------------------------ upkeep
    def tick(self) -> None:
        """Periodic upkeep (the process calls it every few seconds): retry queued effects, prune old
        trajectories and device events, refresh the gauges."""
        with self._lock:
            if self._pending:
                self._drain()
            clock = self.engine.clock
            if clock > 0 and clock - self._pruned_at > 3600:
                self._pruned_at = clock
                with self.db.begin() as conn:
                    gone = store_db.prune(conn, clock - self.settings.retention_days * 86400)
                if any(gone.values()):
                    log.info("retention: deleted %s", gone)
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        with self.db.read() as conn:
            self.metrics.visits_open.set(store_db.open_visits(conn))
            self.metrics.review_queue.set(store_db.review_open(conn))
            self.metrics.inbox_rows.set(store_db.inbox_size(conn))
        self.metrics.event_clock.set(self.engine.clock)
        self.metrics.late.set(self.engine.stats.late)
        self.metrics.pending_effects.set(len(self._pending))

    def status_counters(self) -> dict[str, int]:
        """Counters for the status message: the service's and the transport's."""
        out = {k: int(v) for k, v in self.counters.items()}
        out.update({f"transport_{k}": v for k, v in self.transport.counters.as_dict().items()})
        out["pending_effects"] = len(self._pending)
        out["late_messages"] = int(self.engine.stats.late)
        return out

    # -------------------------------------------------------------------------------------- inbox connection
    def _open_inbox(self) -> None:
        if self._conn is not None:
            return
        self._conn = self.db.engine.connect()
        self._sync_mode = None

    def _close_inbox(self) -> None:
        if self._conn is None:
            return
        try:
            self._set_durability(True)  # the connection goes back to the pool as it came
        finally:
            self._conn.close()
            self._conn = None

    def _set_durability(self, durable: bool) -> None:
        """SQLite: switch the inbox connection between synchronous FULL and NORMAL (outside a transaction;
        PostgreSQL relaxes a transaction with ``SET LOCAL`` instead)."""
        if self._conn.dialect.name != "sqlite":
            return
        mode = "FULL" if durable else "NORMAL"
        if self._sync_mode != mode:
            self._conn.connection.dbapi_connection.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode


def _prob(x: float) -> float:
    return min(1.0, max(0.0, float(x)))

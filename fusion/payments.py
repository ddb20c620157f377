"""Payments: the :class:`PaymentGateway` interface and the built-in :class:`LedgerGateway` provider.

The flow of a visit (the keys come from our own ids, so a retry or a restart never charges twice)::

    hold = gw.hold(account, amount=5000, key=f"hold:{visit}")            # at entry
    ...
    if cart_total > 0:                                                    # at exit
        charge = gw.capture(hold, amount=cart_total, key=f"capture:{visit}")
    else:
        gw.cancel(hold, key=f"cancel:{visit}")
    ...
    gw.refund(charge, amount=250, reason_code="mis_pick", key=f"refund:{adjustment}")   # ops

Contracts (every provider):

* Amounts are ``int`` minor units, > 0; a float (even ``12.0``), bool, Decimal or string is refused with
  :class:`InvalidAmount` before anything happens.
* Idempotency: the same key with the same request returns the original result (the object as it was
  created, also when it failed) and records nothing new; the same key with a different request raises
  :class:`IdempotencyConflict`.  A key names one operation for good: to try again after a decline, use a new
  key (``capture:{visit}:retry1``).  Event time ``ts`` is stored but is not part of the request.
* A declined payment is a result, not an exception: :class:`Hold` / :class:`Charge` with
  ``status == "failed"`` and a ``failure_code``; the account then reads ``last_payment_failed`` (the gate
  refuses such an account) until a later payment succeeds or a new payment method is attached.
* Requests that cannot be carried out raise and record nothing: unknown account/hold/charge
  (:class:`NotFound`), a hold already captured or cancelled (:class:`InvalidState`), refunds beyond what was
  captured (:class:`RefundExceedsCapture`).
* A capture settles its hold: at most one capture *or* cancel succeeds per hold.  A capture up to the held
  amount always succeeds (the funds are reserved); above it, the provider must authorise the difference now
  and may decline.  ``capture(account=...)`` charges an account without a hold.

The ledger provider keeps everything in the database (:mod:`fusion.db`): ``payment_accounts``,
``payment_methods`` (append-only: the current method is the latest row) and ``payment_records``, one
append-only journal row per operation (hold, capture, cancel, refund) with its idempotency key, a hash of the
request, the amount, status and reason.  Nothing is ever updated or deleted (the database refuses it);
balances and states are derived from the rows.  Each operation is one transaction that first locks the
account (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite write transactions are serialised by
``BEGIN IMMEDIATE``), then looks the key up again, so two racing requests with one key give one record.

Plugging in a real provider (Stripe-style; no network code lives here): subclass :class:`PaymentGateway`
and map

* ``hold`` → create a PaymentIntent with ``capture_method="manual"``, ``confirm=True``, the customer's
  default payment method, and ``idempotency_key=key``; a ``card_declined`` error becomes a failed
  :class:`Hold` (record it: ``last_payment_failed`` must survive restarts);
* ``capture(hold)`` → capture the PaymentIntent with ``amount_to_capture`` (or, above the authorised amount,
  an incremental authorisation first); ``capture(account=...)`` → a confirmed off-session PaymentIntent;
* ``cancel`` → cancel the PaymentIntent; ``refund`` → create a Refund on the PaymentIntent with
  ``amount``, the reason code in ``metadata`` and ``idempotency_key=key``.

Provider idempotency keys expire (Stripe's after 24 hours) while ours must hold for good, so a real
provider should also keep our key → provider id and request hash in its own append-only table (as the
ledger's journal does) and answer retries from it before calling out, and run :meth:`account_state` from
its own records plus provider webhooks.  Amounts stay integer minor units end to end.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from fusion.db import Database, payment_accounts, payment_methods, payment_records, utcnow

log = logging.getLogger(__name__)

MAX_AMOUNT = 10**12  # minor units; the wire contract's bound too
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_CODE_RE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")  # wire.messages.Ident
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_LABEL_RE = re.compile(r"^\S.{0,63}$")

HoldStatus = Literal["authorized", "captured", "cancelled", "failed"]
ChargeStatus = Literal["succeeded", "failed"]


# ------------------------------------------------------------------------------------------------ errors
class PaymentError(Exception):
    """Base of every payment error."""


class InvalidRequest(PaymentError, ValueError):
    """A malformed request (bad key, reason code, account id)."""


class InvalidAmount(InvalidRequest):
    """An amount that is not a positive ``int`` of minor units."""


class IdempotencyConflict(PaymentError):
    """The key was already used for a different request."""


class NotFound(PaymentError, LookupError):
    """Unknown account, hold or charge."""


class InvalidState(PaymentError):
    """The operation does not apply to the object's current state (e.g. capturing a cancelled hold)."""


class RefundExceedsCapture(InvalidState):
    """The refunds of a charge would add up to more than was captured."""


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Hold:
    """An authorisation: ``amount`` reserved on the account's payment method (or a failed attempt)."""

    id: str
    account: str
    amount: int
    currency: str
    status: HoldStatus
    failure_code: str | None
    key: str
    created_at: datetime

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class Charge:
    """Money taken: a capture of a hold (``hold_id``) or a direct charge of an account; or a failed attempt."""

    id: str
    account: str
    hold_id: str | None
    amount: int
    currency: str
    status: ChargeStatus
    failure_code: str | None
    key: str
    created_at: datetime
    amount_refunded: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def refundable(self) -> int:
        return self.amount - self.amount_refunded if self.succeeded else 0


@dataclass(frozen=True)
class Cancellation:
    """A hold released without capture (``amount`` is what it had reserved)."""

    id: str
    hold_id: str
    account: str
    amount: int
    key: str
    created_at: datetime


@dataclass(frozen=True)
class Refund:
    id: str
    charge_id: str
    account: str
    amount: int
    currency: str
    reason_code: str
    key: str
    created_at: datetime


@dataclass(frozen=True)
class PaymentMethod:
    label: str
    declines: bool


@dataclass(frozen=True)
class AccountState:
    """What the account's records add up to now."""

    account: str
    method: PaymentMethod | None
    held: int  # authorised and neither captured nor cancelled
    captured: int
    refunded: int
    last_payment_failed: bool
    last_failure_code: str | None

    @property
    def net(self) -> int:
        """Captured minus refunded: what the shopper has paid in total."""
        return self.captured - self.refunded


# --------------------------------------------------------------------------------------------- interface
class PaymentGateway(abc.ABC):
    """What the fusion engine and the ops app use; the ledger is the built-in implementation."""

    currency: str

    @abc.abstractmethod
    def hold(self, account: str, *, amount: int, key: str, ts: float | None = None) -> Hold:
        """Reserve ``amount`` on the account's payment method (at entry, ``key=f"hold:{visit}"``)."""

    def authorize(self, account: str, *, amount: int, key: str, ts: float | None = None) -> Hold:
        """Stripe's word for :meth:`hold`."""
        return self.hold(account, amount=amount, key=key, ts=ts)

    @abc.abstractmethod
    def capture(
        self,
        hold: Hold | str | None = None,
        *,
        account: str | None = None,
        amount: int,
        key: str,
        ts: float | None = None,
    ) -> Charge:
        """Take ``amount`` against ``hold`` (settling it), or from ``account`` directly; exactly one of them."""

    @abc.abstractmethod
    def cancel(self, hold: Hold | str, *, key: str, ts: float | None = None) -> Cancellation:
        """Release an authorised hold without taking anything (empty cart)."""

    @abc.abstractmethod
    def refund(
        self,
        charge: Charge | str,
        *,
        amount: int | None,
        reason_code: str,
        key: str,
        ts: float | None = None,
    ) -> Refund:
        """Give back ``amount`` of a succeeded charge (``None``: all that is left), never beyond the capture."""

    @abc.abstractmethod
    def get_hold(self, hold_id: str) -> Hold:
        """The hold with its current status (authorized, captured, cancelled or failed)."""

    @abc.abstractmethod
    def get_charge(self, charge_id: str) -> Charge:
        """The charge with the amount refunded so far."""

    @abc.abstractmethod
    def account_state(self, account: str) -> AccountState:
        """Balances and flags derived from the account's records."""


# --------------------------------------------------------------------------------------------- validation
def minor_units(amount: object, what: str = "amount") -> int:
    """``amount`` as an int of minor units in 1..MAX_AMOUNT; anything else raises :class:`InvalidAmount`."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Integral):
        raise InvalidAmount(
            f"{what} must be an int of minor units (e.g. 1250 for 12.50), got {type(amount).__name__} {amount!r}"
        )
    value = int(amount)
    if not 0 < value <= MAX_AMOUNT:
        raise InvalidAmount(f"{what} must be between 1 and {MAX_AMOUNT} minor units, got {value}")
    return value


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidRequest(f"bad {what} {value!r} (expected {pattern.pattern})")
    return value


def _ref(obj: Hold | Charge | str | None, what: str) -> str:
    if isinstance(obj, Hold | Charge):
        return obj.id
    if isinstance(obj, str) and obj:
        return obj
    raise InvalidRequest(f"{what} must be a {what} object or its id, got {obj!r}")


def _event_time(ts: object) -> float | None:
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, numbers.Real) or not math.isfinite(float(ts)) or ts < 0:
        raise InvalidRequest(f"event time ts must be finite seconds since the epoch, got {ts!r}")
    return float(ts)


def _request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_PREFIX = {"hold": "hold", "capture": "ch", "cancel": "hcx", "refund": "re"}


def _record_id(kind: str, key: str) -> str:
    """Deterministic ids (from the key), so a replayed session names its charges the same way."""
    return f"{_PREFIX[kind]}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


# ------------------------------------------------------------------------------------------------ ledger
@dataclass(frozen=True)
class PaymentRecord:
    """One journal row, as stored."""

    seq: int
    record_id: str
    key: str
    kind: str
    account: str
    target_id: str | None
    amount: int
    currency: str
    status: str
    failure_code: str | None
    reason_code: str | None
    event_ts: float | None
    created_at: datetime


class LedgerGateway(PaymentGateway):
    """The built-in provider: a ledger in our own database (no card network behind it).

    A payment method either pays or declines (:meth:`set_payment_method`, :meth:`mark_declining`), which is
    how tests and the demo exercise failed payments.
    """

    def __init__(
        self, db: Database, *, currency: str = "EUR", clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.currency = _check(_CURRENCY_RE, currency, "currency")
        self._clock = clock

    # ------------------------------------------------------------------------------- accounts
    def ensure_account(
        self, account: str, *, method_label: str | None = "card", declines: bool = False
    ) -> None:
        """Create the account (with a payment method, unless ``method_label`` is None) if it does not exist."""
        _check(_ACCOUNT_RE, account, "account id")
        with self.db.begin() as conn:
            created = Database.insert_if_absent(
                conn, payment_accounts, {"account_id": account, "created_at": self._clock()}
            )
            if created and method_label is not None:
                self._add_method(conn, account, method_label, declines)

    def set_payment_method(self, account: str, *, label: str, declines: bool = False) -> None:
        """Attach a new payment method (it replaces the current one; the old rows stay)."""
        with self.db.begin() as conn:
            self._lock_account(conn, account)
            self._add_method(conn, account, label, declines)

    def mark_declining(self, account: str, declines: bool = True) -> None:
        """Make the account's current payment method decline (or pay again) from now on."""
        with self.db.begin() as conn:
            self._lock_account(conn, account)
            method = self._current_method(conn, account)
            if method is None:
                raise InvalidState(f"account {account!r} has no payment method")
            self._add_method(conn, account, method[1].label, declines)

    def _add_method(self, conn: Connection, account: str, label: str, declines: bool) -> None:
        _check(_LABEL_RE, label, "payment method label")
        conn.execute(
            payment_methods.insert().values(
                account_id=account, label=label, declines=bool(declines), created_at=self._clock()
            )
        )

    @staticmethod
    def _current_method(conn: Connection, account: str) -> tuple[int, PaymentMethod] | None:
        row = conn.execute(
            sa.select(payment_methods.c.seq, payment_methods.c.label, payment_methods.c.declines)
            .where(payment_methods.c.account_id == account)
            .order_by(payment_methods.c.seq.desc())
            .limit(1)
        ).first()
        return None if row is None else (row.seq, PaymentMethod(row.label, bool(row.declines)))

    @staticmethod
    def _lock_account(conn: Connection, account: str) -> None:
        found = conn.execute(
            sa.select(payment_accounts.c.account_id)
            .where(payment_accounts.c.account_id == account)
            .with_for_update()
        ).first()
        if found is None:
            raise NotFound(f"unknown account {account!r}")

    # ----------------------------------------------------------------------------- operations
    def hold(self, account: str, *, amount: int, key: str, ts: float | None = None) -> Hold:
        amount = minor_units(amount)
        request = {"op": "hold", "account": account, "amount": amount, "currency": self.currency}

        def build(conn: Connection, _account: str) -> dict[str, Any]:
            method = self._current_method(conn, account)
            failure = _decline(method)
            return {
                "kind": "hold",
                "amount": amount,
                "method_seq": None if method is None else method[0],
                "status": "failed" if failure else "succeeded",
                "failure_code": failure,
            }

        row = self._execute(key, request, lambda _conn: account, build, ts)
        return self._hold(row)

    def capture(
        self,
        hold: Hold | str | None = None,
        *,
        account: str | None = None,
        amount: int,
        key: str,
        ts: float | None = None,
    ) -> Charge:
        amount = minor_units(amount)
        if (hold is None) == (account is None):
            raise InvalidRequest("capture takes exactly one of hold= and account=")
        hold_id = None if hold is None else _ref(hold, "hold")
        request = {
            "op": "capture",
            "hold": hold_id,
            "account": account,
            "amount": amount,
            "currency": self.currency,
        }

        def account_of(conn: Connection) -> str:
            if hold_id is None:
                assert account is not None
                return account
            return self._target(conn, hold_id, "hold").account_id

        def build(conn: Connection, acct: str) -> dict[str, Any]:
            method = self._current_method(conn, acct)
            failure = _decline(method)
            if hold_id is not None:
                target = self._target(conn, hold_id, "hold")
                status = self._hold_status(conn, target)
                if status != "authorized":
                    raise InvalidState(f"hold {hold_id} is {status}; it cannot be captured")
                if amount <= target.amount:
                    failure = None  # within the reservation: the funds are already there
            return {
                "kind": "capture",
                "target_id": hold_id,
                "amount": amount,
                "method_seq": None if method is None else method[0],
                "status": "failed" if failure else "succeeded",
                "failure_code": failure,
            }

        row = self._execute(key, request, account_of, build, ts)
        return self._charge(row, refunded=0)

    def cancel(self, hold: Hold | str, *, key: str, ts: float | None = None) -> Cancellation:
        hold_id = _ref(hold, "hold")
        request = {"op": "cancel", "hold": hold_id}

        def build(conn: Connection, _acct: str) -> dict[str, Any]:
            target = self._target(conn, hold_id, "hold")
            status = self._hold_status(conn, target)
            if status != "authorized":
                raise InvalidState(f"hold {hold_id} is {status}; it cannot be cancelled")
            return {"kind": "cancel", "target_id": hold_id, "amount": target.amount, "status": "succeeded"}

        row = self._execute(
            key, request, lambda conn: self._target(conn, hold_id, "hold").account_id, build, ts
        )
        return Cancellation(
            row.record_id, row.target_id, row.account_id, row.amount, row.idempotency_key, row.created_at
        )

    def refund(
        self,
        charge: Charge | str,
        *,
        amount: int | None,
        reason_code: str,
        key: str,
        ts: float | None = None,
    ) -> Refund:
        charge_id = _ref(charge, "charge")
        amount = None if amount is None else minor_units(amount)
        _check(_CODE_RE, reason_code, "reason code")
        request = {
            "op": "refund",
            "charge": charge_id,
            "amount": amount,
            "reason": reason_code,
            "currency": self.currency,
        }

        def build(conn: Connection, _acct: str) -> dict[str, Any]:
            target = self._target(conn, charge_id, "capture")
            if target.status != "succeeded":
                raise InvalidState(f"charge {charge_id} failed; there is nothing to refund")
            done = self._refunded(conn, charge_id)
            left = target.amount - done
            value = left if amount is None else amount
            if value <= 0 or value > left:
                raise RefundExceedsCapture(
                    f"refund of {value} on charge {charge_id}: captured {target.amount}, refunded {done}, "
                    f"refundable {left}"
                )
            return {
                "kind": "refund",
                "target_id": charge_id,
                "amount": value,
                "status": "succeeded",
                "reason_code": reason_code,
            }

        row = self._execute(
            key, request, lambda conn: self._target(conn, charge_id, "capture").account_id, build, ts
        )
        return self._refund(row)

    def _execute(
        self,
        key: str,
        request: dict[str, Any],
        account_of: Callable[[Connection], str],
        build: Callable[[Connection, str], dict[str, Any]],
        ts: float | None,
    ) -> Row[Any]:
        """Run one operation in one transaction: replay by key, else lock the account, decide, append."""
        _check(_KEY_RE, key, "idempotency key")
        ts = _event_time(ts)
        digest = _request_hash(request)
        with self.db.begin() as conn:
            row = self._by_key(conn, key)
            if row is not None:
                return self._replay(row, key, digest)
            account = account_of(conn)
            self._lock_account(conn, account)
            row = self._by_key(conn, key)  # a racing request with this key may have committed meanwhile
            if row is not None:
                return self._replay(row, key, digest)
            values = build(conn, account)
            values.update(
                record_id=_record_id(values["kind"], key),
                idempotency_key=key,
                request_hash=digest,
                account_id=account,
                currency=self.currency,
                event_ts=ts,
                created_at=self._clock(),
            )
            inserted = Database.insert_if_absent(conn, payment_records, values, ["idempotency_key"])
            row = self._by_key(conn, key)
            assert row is not None
            if not inserted:  # cannot happen under the account lock; answered as a replay all the same
                return self._replay(row, key, digest)
            log.info(
                "payment %s %s account=%s amount=%s status=%s key=%s",
                row.kind,
                row.record_id,
                account,
                row.amount,
                row.status,
                key,
            )
            return row

    @staticmethod
    def _replay(row: Row[Any], key: str, digest: str) -> Row[Any]:
        """The stored result for a key used before; a different request under the same key is refused."""
        if row.request_hash != digest:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was used for a different request "
                f"({row.kind} of {row.amount} on {row.target_id or row.account_id})"
            )
        log.debug("payment replay %s for key %s", row.record_id, key)
        return row

    # ---------------------------------------------------------------------------------- reads
    @staticmethod
    def _by_key(conn: Connection, key: str) -> Row[Any] | None:
        return conn.execute(
            sa.select(payment_records).where(payment_records.c.idempotency_key == key)
        ).first()

    @staticmethod
    def _target(conn: Connection, record_id: str, kind: str) -> Row[Any]:
        row = conn.execute(
            sa.select(payment_records).where(
                payment_records.c.record_id == record_id, payment_records.c.kind == kind
            )
        ).first()
        if row is None:
            raise NotFound(f"unknown {'charge' if kind == 'capture' else kind} {record_id!r}")
        return row

    @staticmethod
    def _hold_status(conn: Connection, hold: Row[Any]) -> HoldStatus:
        if hold.status == "failed":
            return "failed"
        settled = conn.execute(
            sa.select(payment_records.c.kind).where(
                payment_records.c.target_id == hold.record_id,
                payment_records.c.kind.in_(("capture", "cancel")),
                payment_records.c.status == "succeeded",
            )
        ).scalar()
        if settled == "capture":
            return "captured"
        return "cancelled" if settled == "cancel" else "authorized"

    @staticmethod
    def _refunded(conn: Connection, charge_id: str) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(payment_records.c.amount), 0)).where(
                    payment_records.c.target_id == charge_id,
                    payment_records.c.kind == "refund",
                    payment_records.c.status == "succeeded",
                )
            ).scalar_one()
        )

    @staticmethod
    def _hold(row: Row[Any], status: HoldStatus | None = None) -> Hold:
        if status is None:
            status = "authorized" if row.status == "succeeded" else "failed"
        return Hold(
            row.record_id,
            row.account_id,
            row.amount,
            row.currency,
            status,
            row.failure_code,
            row.idempotency_key,
            row.created_at,
        )

    @staticmethod
    def _charge(row: Row[Any], refunded: int) -> Charge:
        return Charge(
            row.record_id,
            row.account_id,
            row.target_id,
            row.amount,
            row.currency,
            row.status,
            row.failure_code,
            row.idempotency_key,
            row.created_at,
            refunded,
        )

    @staticmethod
    def _refund(row: Row[Any]) -> Refund:
        return Refund(
            row.record_id,
            row.target_id,
            row.account_id,
            row.amount,
            row.currency,
            row.reason_code,
            row.idempotency_key,
            row.created_at,
        )

    def get_hold(self, hold_id: str) -> Hold:
        with self.db.read() as conn:
            row = self._target(conn, hold_id, "hold")
            return self._hold(row, self._hold_status(conn, row))

    def get_charge(self, charge_id: str) -> Charge:
        with self.db.read() as conn:
            row = self._target(conn, charge_id, "capture")
            return self._charge(row, self._refunded(conn, charge_id))

    def refunds(self, charge_id: str) -> list[Refund]:
        """The refunds of a charge, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(payment_records)
                .where(payment_records.c.target_id == charge_id, payment_records.c.kind == "refund")
                .order_by(payment_records.c.seq)
            )
            return [self._refund(r) for r in rows]

    def records(self, account: str | None = None) -> list[PaymentRecord]:
        """The journal (of one account, or all), in order."""
        stmt = sa.select(payment_records).order_by(payment_records.c.seq)
        if account is not None:
            stmt = stmt.where(payment_records.c.account_id == account)
        with self.db.read() as conn:
            return [
                PaymentRecord(
                    r.seq,
                    r.record_id,
                    r.idempotency_key,
                    r.kind,
                    r.account_id,
                    r.target_id,
                    r.amount,
                    r.currency,
                    r.status,
                    r.failure_code,
                    r.reason_code,
                    r.event_ts,
                    r.created_at,
                )
                for r in conn.execute(stmt)
            ]

    def account_state(self, account: str) -> AccountState:
        pr, pm = payment_records, payment_methods
        mine = pr.c.account_id == account
        ok = pr.c.status == "succeeded"

        def total(*where: Any) -> Any:
            return (
                sa.select(sa.func.coalesce(sa.func.sum(pr.c.amount), 0))
                .where(mine, ok, *where)
                .scalar_subquery()
            )

        settle = pr.alias("settle")
        unsettled = ~sa.exists().where(
            settle.c.target_id == pr.c.record_id,
            settle.c.kind.in_(("capture", "cancel")),
            settle.c.status == "succeeded",
        )
        last = (
            sa.select(pr.c.status, pr.c.failure_code, pr.c.method_seq)
            .where(mine, pr.c.kind.in_(("hold", "capture")))
            .order_by(pr.c.seq.desc())
            .limit(1)
            .subquery("last")
        )
        method = (
            sa.select(pm.c.seq, pm.c.label, pm.c.declines)
            .where(pm.c.account_id == account)
            .order_by(pm.c.seq.desc())
            .limit(1)
            .subquery("method")
        )
        stmt = (  # one round trip: the account, its sums, its last attempt and its current method
            sa.select(
                total(pr.c.kind == "hold", unsettled).label("held"),
                total(pr.c.kind == "capture").label("captured"),
                total(pr.c.kind == "refund").label("refunded"),
                last.c.status,
                last.c.failure_code,
                last.c.method_seq,
                method.c.seq,
                method.c.label,
                method.c.declines,
            )
            .select_from(payment_accounts)
            .outerjoin(last, sa.true())
            .outerjoin(method, sa.true())
            .where(payment_accounts.c.account_id == account)
        )
        with self.db.read() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFound(f"unknown account {account!r}")
        failed = row.status == "failed" and row.method_seq == row.seq
        return AccountState(
            account=account,
            method=None if row.seq is None else PaymentMethod(row.label, bool(row.declines)),
            held=int(row.held),
            captured=int(row.captured),
            refunded=int(row.refunded),
            last_payment_failed=failed,
            last_failure_code=row.failure_code if failed else None,
        )


def _decline(method: tuple[int, PaymentMethod] | None) -> str | None:
    """Why the ledger's payment method refuses a new authorisation, or None when it pays."""
    if method is None:
        return "no_payment_method"
    return "card_declined" if method[1].declines else None

"""The shoppers' JSON API, under ``/api/v1``, authenticated by a bearer token per account
(``Authorization: Bearer wos_...``; cookies are not accepted here, so there is nothing to forge cross-site).

* ``POST /api/v1/entry-code`` ``{"party_size": 1}`` -> ``201 {"code", "expires_at", "store"}``: a signed,
  short-lived, single-use code for the entry gate (:func:`wire.entry_codes.issue`); ``403`` with
  ``"error": "payment_failed"`` when the account's last payment failed (or it has no payment method).
* ``GET /api/v1/visits`` -> the account's visits, newest first.
* ``GET /api/v1/visits/{visit}`` -> the receipt: lines, status, refunds with reason, disputes with outcome.
* ``POST /api/v1/visits/{visit}/disputes`` ``{"sku", "qty", "reason"}`` -> ``201 {"dispute"}``; the visit goes
  into the ops queue.

Another account's visit answers ``404`` exactly like a visit that does not exist.  Errors are JSON
``{"error": code, "detail": text}``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fusion.ops import shopper
from fusion.ops.app import context
from fusion.ops.review import Missing, ReviewError
from fusion.payments import NotFound
from wire.entry_codes import issue

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1")


class ApiError(Exception):
    """An API error: answered as JSON ``{"error": code, "detail": detail}`` (handler in the app factory)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.detail, self.headers = status, code, detail, headers
        super().__init__(detail)


def bearer_account(request: Request) -> str:
    """The account of the request's bearer token; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    account = context(request).tokens.account_of(token.strip()) if scheme.lower() == "bearer" else None
    if account is None:
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="walkout"'},
        )
    return account


ShopperAccount = Annotated[str, Depends(bearer_account)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntryCodeRequest(_Body):
    party_size: int = Field(1, ge=1, le=20, title="Party size", description="People entering on this code")


class DisputeRequest(_Body):
    sku: str = Field(min_length=1, max_length=64, title="SKU", description="The receipt line's product")
    qty: int = Field(1, ge=1, le=100, title="Quantity disputed")
    reason: str = Field(min_length=3, max_length=1000, title="Reason", description="What is wrong, in words")


@router.post("/entry-code", status_code=201)
def entry_code(request: Request, account: ShopperAccount, body: EntryCodeRequest | None = None) -> Any:
    ctx = context(request)
    if ctx.entry_secret is None:
        raise ApiError(503, "unavailable", "entry codes are not configured on this server")
    try:
        state = ctx.payments.account_state(account)
    except NotFound:
        raise ApiError(403, "payment_failed", "no payment method on file: add one in the app") from None
    if state.last_payment_failed or state.method is None:
        log.info("entry code refused for account %s: last payment failed", account)
        raise ApiError(
            403,
            "payment_failed",
            "your last payment failed"
            + (f" ({state.last_failure_code})" if state.last_failure_code else "")
            + ": update your payment method to enter",
        )
    now = ctx.clock()
    ttl = ctx.settings.entry_code_ttl_s or ctx.store.entry_codes.ttl_s
    party = body.party_size if body is not None else 1
    code = issue(ctx.entry_secret, ctx.store.store.id, account, now, party_size=party, ttl_s=ttl)
    log.info("entry code issued for account %s (party of %d)", account, party)
    return JSONResponse(
        {"code": code, "expires_at": round(now + ttl, 3), "store": ctx.store.store.id, "party_size": party},
        status_code=201,
    )


@router.get("/visits")
def my_visits(request: Request, account: ShopperAccount) -> Any:
    ctx = context(request)
    return {"account": account, "visits": shopper.shopper_visits(ctx.db, account, ctx.store.store.currency)}


@router.get("/visits/{visit}")
def my_receipt(request: Request, visit: str, account: ShopperAccount) -> Any:
    try:
        ctx = context(request)
        return shopper.shopper_receipt(ctx.db, ctx.store, account, visit)
    except Missing:
        raise ApiError(404, "not_found", "no such visit") from None


@router.post("/visits/{visit}/disputes", status_code=201)
def open_dispute(request: Request, visit: str, body: DisputeRequest, account: ShopperAccount) -> Any:
    try:
        did = context(request).reviewer.open_dispute(visit, account, body.sku, body.qty, body.reason)
    except Missing:
        raise ApiError(404, "not_found", "no such visit") from None
    except ReviewError as exc:
        raise ApiError(409, "refused", str(exc)) from None
    return JSONResponse({"dispute": did, "state": "open"}, status_code=201)

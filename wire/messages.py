"""Typed payload models of the wire contract.

Every payload is JSON with the envelope fields ``v`` (schema version), ``source`` (the publishing device),
``seq`` (per-source, monotonic) and ``ts`` (capture time, seconds since the epoch, UTC).  The models are
strict: unknown fields, wrong types, NaN/inf and out-of-range values are rejected, so a consumer can trust
what it gets.  The topic each model travels on is in :mod:`wire.topics`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

# Identifiers: store, camera, shelf, lane, gate, device, visit, account, sku.  They appear in topics, so they
# exclude MQTT wildcards, '/', and whitespace.
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Prob = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
# Capture times: seconds since the epoch; 0 .. year 2286.  Simulated sessions may start at any epoch.
Timestamp = Annotated[float, Field(ge=0.0, lt=1e10, allow_inf_nan=False)]
Seq = Annotated[int, Field(ge=0, lt=2**63)]
Minor = Annotated[int, Field(ge=-(10**12), le=10**12)]  # money in integer minor units
Count = Annotated[int, Field(ge=0, le=10**6)]
Text = Annotated[str, Field(max_length=256)]

# Geometry and weights are bounded as well as finite: a finite but absurd value (1e300 m) overflows the
# consumers' arithmetic (squares, covariances) into inf/NaN.  The bounds are far beyond any store.
Metres = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
SqMetres = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
Pixels = Annotated[float, Field(ge=-1e7, le=1e7, allow_inf_nan=False)]
Grams = Annotated[float, Field(ge=-1e7, le=1e7, allow_inf_nan=False)]
Lightness = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
Chroma = Annotated[float, Field(ge=-128.0, le=128.0, allow_inf_nan=False)]

Vec2 = tuple[Metres, Metres]
Vec3 = tuple[Metres, Metres, Metres]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Envelope(_Strict):
    """Fields every payload carries."""

    v: Literal[1] = Field(SCHEMA_VERSION, title="Schema version")
    source: Ident = Field(title="Publishing device id")
    seq: Seq = Field(title="Per-source sequence number, monotonic")
    ts: Timestamp = Field(title="Capture time, seconds since the epoch (UTC)")


# --------------------------------------------------------------------------------------------- camera tracks
class Ray(_Strict):
    """A ray in the store frame: ``origin`` (the camera centre, metres) and unit ``dir``."""

    origin: Vec3
    dir: Vec3

    @model_validator(mode="after")
    def _unit(self) -> Ray:
        x, y, z = self.dir
        n = math.sqrt(x * x + y * y + z * z)
        if not 0.99 <= n <= 1.01:
            raise ValueError(f"dir must be a unit vector, its norm is {n:.4g}")
        return self


class Keypoint(_Strict):
    """A body keypoint seen by one camera: pixel position, confidence and its ray in the store frame."""

    px: tuple[Pixels, Pixels]
    conf: Prob
    ray: Ray | None = None


class Track(_Strict):
    id: Annotated[int, Field(ge=0, lt=2**31)] = Field(title="Track id, unique per camera process")
    box: tuple[Pixels, Pixels, Pixels, Pixels] = Field(title="Box x1, y1, x2, y2 in pixels")
    conf: Prob
    floor: Vec2 = Field(title="Floor position x, y in metres (store frame)")
    floor_cov: tuple[SqMetres, SqMetres, SqMetres] = Field(
        title="Floor covariance", description="xx, xy, yy in square metres"
    )
    head: Keypoint | None = None
    lwrist: Keypoint | None = None
    rwrist: Keypoint | None = None
    colour: tuple[Lightness, Chroma, Chroma] | None = Field(
        None, title="Upper-body colour",
        description="Median colour of the chest, CIE L*a*b* (L 0..100; edge/appearance.py); none if not measured",
    )

    @model_validator(mode="after")
    def _geometry(self) -> Track:
        x1, y1, x2, y2 = self.box
        if x2 < x1 or y2 < y1:
            raise ValueError("box must have x2 >= x1 and y2 >= y1")
        xx, xy, yy = self.floor_cov
        if xx < 0 or yy < 0 or xy * xy > xx * yy * (1 + 1e-9) + 1e-12:
            raise ValueError("floor_cov is not a covariance (needs xx >= 0, yy >= 0, xy^2 <= xx*yy)")
        return self


class TracksMsg(Envelope):
    """One camera frame's tracks."""

    camera: Ident
    frame: Count
    tracks: list[Track] = Field(default_factory=list, max_length=256)
    dropped_frames: Count = Field(0, title="Frames the source dropped since the previous message")


# --------------------------------------------------------------------------------------------- shelf events
class LaneDelta(_Strict):
    lane: Ident
    delta_g: Grams = Field(title="Signed weight change of the lane in grams (negative: taken)")


class Candidate(_Strict):
    sku: Ident
    qty: Annotated[int, Field(ge=1, le=1000)] = Field(title="Number of items")
    p: Prob
    foreign: bool = Field(False, title="The product does not belong to the lane (misplaced put-back)")


class ShelfEventMsg(Envelope):
    """A pick or put-back on one shelf, emitted once the shelf is stable again.

    When one change spans lanes of several products, the gateway splits it into sub-events that share
    ``parent_id``.
    """

    shelf: Ident
    event_id: Ident
    parent_id: Ident | None = None
    action: Literal["pick", "put"]
    t_start: Timestamp
    t_end: Timestamp
    t_step: Timestamp | None = Field(
        None, title="When the weight stepped",
        description="Capture time at which the goods left (pick) or reached (put) the plates, between t_start "
                    "and t_end: the hand was in the lane then (added, issue 7; absent from older gateways)")
    lanes: list[LaneDelta] = Field(min_length=1, max_length=64)
    delta_g: Grams = Field(title="Total signed weight change in grams")
    candidates: list[Candidate] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _consistent(self) -> ShelfEventMsg:
        if self.t_end < self.t_start:
            raise ValueError("t_end must not be before t_start")
        if self.t_step is not None and not self.t_start <= self.t_step <= self.t_end:
            raise ValueError("t_step must lie between t_start and t_end")
        if (self.action == "pick") != (self.delta_g < 0):
            raise ValueError("action 'pick' needs delta_g < 0 and 'put' needs delta_g > 0")
        if len({ln.lane for ln in self.lanes}) != len(self.lanes):
            raise ValueError("lanes must not repeat")
        return self


# --------------------------------------------------------------------------------------------- gate
class GateEntryMsg(Envelope):
    gate: Ident
    account: Ident
    party_size: Annotated[int, Field(ge=1, le=20)] = 1
    code_id: Ident | None = Field(None, title="Id of the entry code that was scanned (single-use)")


# --------------------------------------------------------------------------------------------- device status
class StatusMsg(Envelope):
    device: Ident
    kind: Literal["camera", "shelf", "gate", "fusion", "ops", "recorder", "sim", "other"] = "other"
    state: Literal["online", "offline", "stopped"]
    version: Annotated[str, Field(max_length=64)] = ""
    config_hash: Annotated[str, Field(max_length=128)] = ""
    counters: dict[Ident, Count] = Field(default_factory=dict, max_length=64)
    watermark: Timestamp | None = Field(
        None, title="Event-time low watermark (shelf gateways)",
        description="Capture time before which every shelf event (by t_start) has been published; "
                    "fusion waits for it before settling a visit that exited after it")
    shelf_watermarks: dict[Ident, Timestamp] = Field(
        default_factory=dict, max_length=256, title="Per-shelf low watermarks (shelf gateways)",
        description="Each of the gateway's shelves' own watermark (``watermark`` is their minimum): fusion waits "
                    "only for the shelves a leaving shopper came near")


# --------------------------------------------------------------------------------------------- store clock
class ClockMsg(Envelope):
    """Fusion's clock beacon: ``ts`` is its wall clock when it sent the beacon.  Every edge device stamps
    capture times on this clock (:mod:`wire.clock`), so cameras, shelves and gates agree to a few ms."""

    period_s: Annotated[float, Field(gt=0.0, le=3600.0, allow_inf_nan=False)] = Field(
        1.0, title="Beacon period", description="Seconds between beacons")


# --------------------------------------------------------------------------------------------- carts
LineKind = Literal["pick", "put_back", "misplaced_return", "adjustment"]


class CartLine(_Strict):
    line_id: Ident
    kind: LineKind
    sku: Ident
    name: Text = ""
    qty: Annotated[int, Field(ge=-1000, le=1000)] = Field(title="Signed: positive adds to the cart")
    unit_price: Minor
    amount: Minor
    confidence: Prob = 1.0
    margin: Prob = 1.0
    uncertain: bool = False
    event_id: Ident | None = None
    shopper: Ident | None = None
    cameras: list[Ident] = Field(default_factory=list, max_length=64)
    t: Timestamp

    @model_validator(mode="after")
    def _amount(self) -> CartLine:
        if self.amount != self.qty * self.unit_price:
            raise ValueError("amount must equal qty * unit_price")
        return self


class CartSnapshotMsg(Envelope):
    visit: Ident
    account: Ident
    state: Literal["open", "settling", "closed"]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    lines: list[CartLine] = Field(default_factory=list, max_length=2000)
    total: Minor

    @model_validator(mode="after")
    def _total(self) -> CartSnapshotMsg:
        if self.total != sum(ln.amount for ln in self.lines):
            raise ValueError("total must equal the sum of the lines' amounts")
        return self


# --------------------------------------------------------------------------------------------- receipts
class ReceiptLine(_Strict):
    sku: Ident
    name: Text = ""
    qty: Annotated[int, Field(ge=1, le=1000)]
    unit_price: Minor
    amount: Minor
    uncertain: bool = False

    @model_validator(mode="after")
    def _amount(self) -> ReceiptLine:
        if self.amount != self.qty * self.unit_price:
            raise ValueError("amount must equal qty * unit_price")
        return self


class ReceiptMsg(Envelope):
    visit: Ident
    account: Ident
    status: Literal["charged", "no_charge", "held_for_review", "payment_failed"]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    lines: list[ReceiptLine] = Field(default_factory=list, max_length=2000)
    total: Minor
    charge_key: Annotated[str, Field(max_length=128)] | None = None
    reasons: list[Text] = Field(default_factory=list, max_length=64)
    entered_at: Timestamp
    exited_at: Timestamp

    @model_validator(mode="after")
    def _total(self) -> ReceiptMsg:
        if self.total != sum(ln.amount for ln in self.lines):
            raise ValueError("total must equal the sum of the lines' amounts")
        if self.exited_at < self.entered_at:
            raise ValueError("exited_at must not be before entered_at")
        return self


# --------------------------------------------------------------------------------------------- accounts
class AccountStatusMsg(Envelope):
    """An account's standing, retained per account: ``blocked`` after a failed payment (the entry gate
    refuses the account), ``ok`` again once a payment succeeds."""

    account: Ident
    state: Literal["ok", "blocked"]
    reason: Text = ""
    failure_code: Ident | None = Field(None, title="Payment provider's failure code, when blocked")
    visit: Ident | None = Field(None, title="Visit whose payment set this state")


# --------------------------------------------------------------------------------------------- load cells
class LoadCellMsg(Envelope):
    """A block of raw load-cell samples of one shelf: ``samples[i][j]`` is lane ``lanes[j]`` at
    ``ts + i / rate_hz`` (grams, uncalibrated raw readings are allowed)."""

    shelf: Ident
    rate_hz: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]
    lanes: list[Ident] = Field(min_length=1, max_length=256)
    samples: list[list[Finite]] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _shape(self) -> LoadCellMsg:
        n = len(self.lanes)
        for i, row in enumerate(self.samples):
            if len(row) != n:
                raise ValueError(f"samples[{i}] has {len(row)} values for {n} lanes")
        return self


# --------------------------------------------------------------------------------------------- helpers
def moved_times(msg: Envelope, dt: float) -> dict[str, float]:
    """The capture-time fields of ``msg`` moved by ``dt`` seconds, as a ``model_copy(update=...)`` dict: ``ts``,
    a shelf event's ``t_start``, ``t_end`` and ``t_step``, a status's ``watermark`` (one place that knows
    which fields are capture times: a replay on today's clock, a skewed device clock)."""
    upd = {"ts": float(msg.ts) + dt}
    if isinstance(msg, ShelfEventMsg):
        upd.update(t_start=msg.t_start + dt, t_end=msg.t_end + dt)
        if msg.t_step is not None:
            upd["t_step"] = msg.t_step + dt
    if isinstance(msg, StatusMsg) and msg.watermark is not None:
        upd["watermark"] = msg.watermark + dt
    return upd

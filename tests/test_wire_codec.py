"""The wire contract's codec and topics: every message kind round-trips (hypothesis-generated valid
messages), topics build and parse back, and a table of invalid payloads is rejected naming the field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire.codec import MAX_PAYLOAD, WireError, decode, encode
from wire.messages import (
    AccountStatusMsg,
    Candidate,
    CartLine,
    CartSnapshotMsg,
    ClockMsg,
    GateEntryMsg,
    Keypoint,
    LaneDelta,
    LoadCellMsg,
    Ray,
    ReceiptLine,
    ReceiptMsg,
    ShelfEventMsg,
    StatusMsg,
    Track,
    TracksMsg,
)
from wire.topics import TOPICS, Kind, TopicError, TopicInfo, parse_topic, subscription, topic

# --------------------------------------------------------------------------------------------- strategies
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# identifiers as in wire.messages.Ident: [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}
ids = st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(_ALNUM + "_.:-", max_size=63))
texts = st.text(max_size=40)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
prob = st.floats(min_value=0.0, max_value=1.0)
stamps = st.floats(min_value=0.0, max_value=9.9e9)
seqs = st.integers(min_value=0, max_value=2**63 - 1)


def envelope(draw: Any, source: str) -> dict[str, Any]:
    return {"source": source, "seq": draw(seqs), "ts": draw(stamps)}


@st.composite
def rays(draw: Any) -> Ray:
    v = draw(
        st.tuples(*[st.floats(min_value=-1, max_value=1)] * 3).filter(
            lambda d: math.sqrt(sum(c * c for c in d)) > 1e-3
        )
    )
    n = math.sqrt(sum(c * c for c in v))
    return Ray(origin=draw(st.tuples(finite, finite, finite)), dir=(v[0] / n, v[1] / n, v[2] / n))


keypoints = st.builds(Keypoint, px=st.tuples(finite, finite), conf=prob, ray=st.none() | rays())


@st.composite
def tracks(draw: Any) -> Track:
    x1, y1 = draw(finite), draw(finite)
    w, h = draw(st.floats(0, 1e4)), draw(st.floats(0, 1e4))
    xx, yy, r = draw(st.floats(0, 1e3)), draw(st.floats(0, 1e3)), draw(st.floats(-0.99, 0.99))
    return Track(
        id=draw(st.integers(0, 2**31 - 1)),
        box=(x1, y1, x1 + w, y1 + h),
        conf=draw(prob),
        floor=draw(st.tuples(finite, finite)),
        floor_cov=(xx, r * math.sqrt(xx * yy), yy),
        head=draw(st.none() | keypoints),
        lwrist=draw(st.none() | keypoints),
        rwrist=draw(st.none() | keypoints),
    )


@st.composite
def tracks_msgs(draw: Any) -> TracksMsg:
    cam = draw(ids)
    return TracksMsg(
        **envelope(draw, cam),
        camera=cam,
        frame=draw(st.integers(0, 10**6)),
        tracks=draw(st.lists(tracks(), max_size=4)),
        dropped_frames=draw(st.integers(0, 10**6)),
    )


@st.composite
def shelf_events(draw: Any) -> ShelfEventMsg:
    shelf = draw(ids)
    action = draw(st.sampled_from(["pick", "put"]))
    delta = draw(st.floats(1e-3, 1e4)) * (-1 if action == "pick" else 1)
    lanes = draw(st.lists(ids, min_size=1, max_size=5, unique=True))
    t0 = draw(st.floats(0, 9e9))
    dur = draw(st.floats(0, 1e3))
    return ShelfEventMsg(
        **envelope(draw, shelf),
        shelf=shelf,
        event_id=draw(ids),
        parent_id=draw(st.none() | ids),
        action=action,
        t_start=t0,
        t_end=t0 + dur,
        t_step=draw(st.none() | st.floats(0, 1).map(lambda u: min(t0 + u * dur, t0 + dur))),
        lanes=[LaneDelta(lane=ln, delta_g=draw(finite)) for ln in lanes],
        delta_g=delta,
        candidates=draw(
            st.lists(
                st.builds(Candidate, sku=ids, qty=st.integers(1, 1000), p=prob, foreign=st.booleans()),
                max_size=4,
            )
        ),
    )


@st.composite
def loadcell_msgs(draw: Any) -> LoadCellMsg:
    shelf = draw(ids)
    lanes = draw(st.lists(ids, min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(finite, min_size=len(lanes), max_size=len(lanes)), max_size=10))
    return LoadCellMsg(
        **envelope(draw, shelf), shelf=shelf, rate_hz=draw(st.floats(0.1, 10_000)), lanes=lanes, samples=rows
    )


@st.composite
def gate_msgs(draw: Any) -> GateEntryMsg:
    gate = draw(ids)
    return GateEntryMsg(
        **envelope(draw, gate),
        gate=gate,
        account=draw(ids),
        party_size=draw(st.integers(1, 20)),
        code_id=draw(st.none() | ids),
    )


@st.composite
def status_msgs(draw: Any) -> StatusMsg:
    dev = draw(ids)
    return StatusMsg(
        **envelope(draw, dev),
        device=dev,
        kind=draw(st.sampled_from(["camera", "shelf", "gate", "fusion", "ops", "recorder", "sim", "other"])),
        state=draw(st.sampled_from(["online", "offline", "stopped"])),
        version=draw(texts),
        config_hash=draw(texts),
        counters=draw(st.dictionaries(ids, st.integers(0, 10**6), max_size=8)),
        watermark=draw(st.none() | stamps),
    )


@st.composite
def cart_lines(draw: Any) -> CartLine:
    qty, price = draw(st.integers(-1000, 1000)), draw(st.integers(-(10**6), 10**6))
    return CartLine(
        line_id=draw(ids),
        kind=draw(st.sampled_from(["pick", "put_back", "misplaced_return", "adjustment"])),
        sku=draw(ids),
        name=draw(texts),
        qty=qty,
        unit_price=price,
        amount=qty * price,
        confidence=draw(prob),
        margin=draw(prob),
        uncertain=draw(st.booleans()),
        event_id=draw(st.none() | ids),
        shopper=draw(st.none() | ids),
        cameras=draw(st.lists(ids, max_size=3)),
        t=draw(stamps),
    )


@st.composite
def cart_msgs(draw: Any) -> CartSnapshotMsg:
    lines = draw(st.lists(cart_lines(), max_size=5))
    return CartSnapshotMsg(
        **envelope(draw, draw(ids)),
        visit=draw(ids),
        account=draw(ids),
        state=draw(st.sampled_from(["open", "settling", "closed"])),
        currency=draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)),
        lines=lines,
        total=sum(ln.amount for ln in lines),
    )


@st.composite
def receipt_msgs(draw: Any) -> ReceiptMsg:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        qty, price = draw(st.integers(1, 1000)), draw(st.integers(-(10**6), 10**6))
        lines.append(
            ReceiptLine(
                sku=draw(ids),
                name=draw(texts),
                qty=qty,
                unit_price=price,
                amount=qty * price,
                uncertain=draw(st.booleans()),
            )
        )
    t0 = draw(st.floats(0, 9e9))
    return ReceiptMsg(
        **envelope(draw, draw(ids)),
        visit=draw(ids),
        account=draw(ids),
        status=draw(st.sampled_from(["charged", "no_charge", "held_for_review", "payment_failed"])),
        lines=lines,
        total=sum(ln.amount for ln in lines),
        charge_key=draw(st.none() | texts),
        reasons=draw(st.lists(texts, max_size=3)),
        entered_at=t0,
        exited_at=t0 + draw(st.floats(0, 1e5)),
    )


@st.composite
def account_msgs(draw: Any) -> AccountStatusMsg:
    return AccountStatusMsg(
        **envelope(draw, draw(ids)),
        account=draw(ids),
        state=draw(st.sampled_from(["ok", "blocked"])),
        reason=draw(texts),
        failure_code=draw(st.none() | ids),
        visit=draw(st.none() | ids),
    )


@st.composite
def clock_msgs(draw: Any) -> ClockMsg:
    return ClockMsg(**envelope(draw, draw(ids)), period_s=draw(st.floats(0.01, 3600)))


STRATEGIES = {
    Kind.TRACKS: tracks_msgs(),
    Kind.SHELF_EVENTS: shelf_events(),
    Kind.LOADCELLS: loadcell_msgs(),
    Kind.GATE_ENTRY: gate_msgs(),
    Kind.STATUS: status_msgs(),
    Kind.CART: cart_msgs(),
    Kind.RECEIPT: receipt_msgs(),
    Kind.ACCOUNT: account_msgs(),
    Kind.CLOCK: clock_msgs(),
}


def test_every_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(TOPICS)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), store=ids)
def test_every_message_kind_round_trips(kind: Kind, data: st.DataObject, store: str) -> None:
    msg = data.draw(STRATEGIES[kind])
    key = getattr(msg, TOPICS[kind].key)
    info, back = decode(topic(kind, store, key), encode(msg))
    assert info == TopicInfo(kind, store, key)
    assert back == msg and type(back) is type(msg)
    assert encode(back) == encode(msg)


@pytest.mark.parametrize("watermark, on_wire", [(None, False), (1_767_261_600.25, True), (0.0, True)])
def test_status_watermark_is_optional_and_left_out_when_absent(watermark: float | None, on_wire: bool) -> None:
    """A shelf gateway's low watermark travels on its status; a status without one (older devices) encodes as
    before, without the field."""
    msg = StatusMsg(source="shelf-1", seq=3, ts=1_767_261_600.5, device="shelf-1", kind="shelf", state="online",
                    watermark=watermark)
    payload = encode(msg)
    assert ("watermark" in json.loads(payload)) is on_wire
    _, back = decode(topic(Kind.STATUS, "s1", "shelf-1"), payload)
    assert back == msg and back.watermark == watermark


# --------------------------------------------------------------------------------------------- topics
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
@settings(max_examples=50, deadline=None)
@given(store=ids, key=ids)
def test_topic_build_and_parse_round_trip(kind: Kind, store: str, key: str) -> None:
    name = topic(kind, store, key)
    assert parse_topic(name) == TopicInfo(kind, store, key)
    assert name.startswith("walkout/v1/" + store + "/")


@pytest.mark.parametrize(
    "store,key",
    [
        ("", "cam1"),
        ("s1", ""),
        ("s/1", "cam1"),
        ("s1", "cam+"),
        ("s1", "#"),
        ("s1", "a b"),
        ("s1", "x" * 65),
        ("-s1", "cam1"),
        ("s1", "kamera-ü"),
    ],
)
def test_topic_refuses_ids_that_cannot_be_in_a_topic(store: str, key: str) -> None:
    with pytest.raises(TopicError):
        topic(Kind.TRACKS, store, key)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "walkout/v1",
        "walkout/v2/s1/camera/cam1/tracks",
        "walkout/v1/s1/camera/cam1",
        "walkout/v1/s1/camera/+/tracks",
        "walkout/v1/s1/camera/cam1/tracks/extra",
        "walkout/v1/s1/shelf/sh1/weights",
        "/walkout/v1/s1/status/d1",
        "walkout/v1/s 1/status/d1",
        "walkout/v1/s1/status/",
    ],
)
def test_parse_topic_rejects_names_off_the_table(name: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(name)


def test_subscription_filters_use_wildcards() -> None:
    assert subscription(Kind.SHELF_EVENTS) == "walkout/v1/+/shelf/+/events"
    assert subscription(Kind.STATUS, "s1", "cam1") == "walkout/v1/s1/status/cam1"


# ------------------------------------------------------------------------------------------ invalid payloads
BASE: dict[Kind, tuple[str, dict[str, Any]]] = {}


def _base(kind: Kind) -> tuple[str, dict[str, Any]]:
    now = 1.7e9
    ray = {"origin": [1.0, 2.0, 3.0], "dir": [0.0, 0.0, -1.0]}
    msgs = {
        Kind.TRACKS: TracksMsg(
            source="cam1",
            seq=1,
            ts=now,
            camera="cam1",
            frame=7,
            tracks=[
                Track(
                    id=1,
                    box=(0, 0, 10, 20),
                    conf=0.9,
                    floor=(1.0, 2.0),
                    floor_cov=(0.1, 0.0, 0.1),
                    head=Keypoint(px=(5, 5), conf=0.8, ray=Ray(**ray)),
                )
            ],
        ),
        Kind.SHELF_EVENTS: ShelfEventMsg(
            source="sh1",
            seq=1,
            ts=now,
            shelf="sh1",
            event_id="e1",
            action="pick",
            t_start=now,
            t_end=now + 1,
            lanes=[LaneDelta(lane="l1", delta_g=-100.0)],
            delta_g=-100.0,
            candidates=[Candidate(sku="sku1", qty=1, p=0.9)],
        ),
        Kind.LOADCELLS: LoadCellMsg(
            source="sh1",
            seq=1,
            ts=now,
            shelf="sh1",
            rate_hz=50.0,
            lanes=["l1", "l2"],
            samples=[[1.0, 2.0], [1.5, 2.5]],
        ),
        Kind.GATE_ENTRY: GateEntryMsg(source="g1", seq=1, ts=now, gate="g1", account="a1"),
        Kind.STATUS: StatusMsg(
            source="d1", seq=1, ts=now, device="d1", state="online", counters={"received": 1}
        ),
        Kind.CART: CartSnapshotMsg(
            source="fusion",
            seq=1,
            ts=now,
            visit="v1",
            account="a1",
            state="open",
            lines=[CartLine(line_id="l1", kind="pick", sku="sku1", qty=2, unit_price=150, amount=300, t=now)],
            total=300,
        ),
        Kind.RECEIPT: ReceiptMsg(
            source="fusion",
            seq=1,
            ts=now,
            visit="v1",
            account="a1",
            status="charged",
            lines=[ReceiptLine(sku="sku1", qty=2, unit_price=150, amount=300)],
            total=300,
            entered_at=now,
            exited_at=now + 60,
        ),
        Kind.ACCOUNT: AccountStatusMsg(
            source="fusion",
            seq=1,
            ts=now,
            account="a1",
            state="blocked",
            reason="payment failed",
            failure_code="card_declined",
        ),
        Kind.CLOCK: ClockMsg(source="fusion", seq=1, ts=now),
    }
    msg = msgs[kind]
    return topic(kind, "s1", getattr(msg, TOPICS[kind].key)), json.loads(encode(msg))


def _edit(kind: Kind, path: str, value: Any) -> tuple[str, bytes]:
    """The base payload of ``kind`` with ``path`` (dots, [i]) set to ``value`` (``...``: deleted)."""
    name, obj = _base(kind)
    parts: list[Any] = []
    for part in path.replace("[", ".[").split("."):
        parts.append(int(part[1:-1]) if part.startswith("[") else part)
    parent = obj
    for p in parts[:-1]:
        parent = parent[p]
    if value is ...:
        del parent[parts[-1]]
    else:
        parent[parts[-1]] = value
    return name, json.dumps(obj, allow_nan=True).encode()


INVALID = [
    # (kind, path, value, field named in the WireError)
    (Kind.TRACKS, "tracks[0].conf", 1.5, "tracks[0].conf"),
    (Kind.TRACKS, "tracks[0].box", [10, 0, 5, 5], "tracks[0]"),
    (Kind.TRACKS, "tracks[0].floor_cov", [0.1, 0.5, 0.1], "tracks[0]"),
    (Kind.TRACKS, "tracks[0].head.ray.dir", [1.0, 1.0, 1.0], "tracks[0].head.ray"),
    (Kind.TRACKS, "tracks[0].floor", [1.0], "tracks[0].floor[1]"),
    (Kind.TRACKS, "camera", "cam2", "camera"),
    (Kind.TRACKS, "ts", -1.0, "ts"),
    (Kind.TRACKS, "ts", math.nan, "ts"),
    (Kind.TRACKS, "v", 2, "v"),
    (Kind.TRACKS, "seq", -1, "seq"),
    (Kind.TRACKS, "seq", 2**63, "seq"),
    (Kind.TRACKS, "seq", "5", "seq"),
    (Kind.TRACKS, "source", ..., "source"),
    (Kind.TRACKS, "frobnicate", 1, "frobnicate"),
    (Kind.SHELF_EVENTS, "delta_g", 100.0, "<payload>"),
    (Kind.SHELF_EVENTS, "lanes", [], "lanes"),
    (Kind.SHELF_EVENTS, "candidates[0].qty", 0, "candidates[0].qty"),
    (Kind.SHELF_EVENTS, "action", "grab", "action"),
    (Kind.SHELF_EVENTS, "t_end", 1.0, "<payload>"),
    (Kind.SHELF_EVENTS, "t_step", 1.0, "<payload>"),  # before t_start
    (Kind.SHELF_EVENTS, "t_step", 9e9, "<payload>"),  # after t_end
    (Kind.SHELF_EVENTS, "t_step", math.nan, "t_step"),
    (Kind.LOADCELLS, "samples[1]", [1.0], "<payload>"),
    (Kind.LOADCELLS, "rate_hz", 0, "rate_hz"),
    (Kind.LOADCELLS, "samples[0][0]", math.inf, "samples[0][0]"),
    (Kind.GATE_ENTRY, "party_size", 0, "party_size"),
    (Kind.GATE_ENTRY, "account", "", "account"),
    (Kind.GATE_ENTRY, "account", "a/b", "account"),
    (Kind.STATUS, "state", "sleeping", "state"),
    (Kind.STATUS, "counters", {"received": -1}, "counters.received"),
    (Kind.STATUS, "device", "d2", "device"),
    (Kind.STATUS, "watermark", -1.0, "watermark"),
    (Kind.STATUS, "watermark", 1e10, "watermark"),
    (Kind.STATUS, "watermark", math.inf, "watermark"),
    (Kind.STATUS, "watermark", "soon", "watermark"),
    (Kind.CART, "lines[0].amount", 301, "lines[0]"),
    (Kind.CART, "total", 299, "<payload>"),
    (Kind.CART, "currency", "usd", "currency"),
    (Kind.CART, "lines[0].unit_price", 1.5, "lines[0].unit_price"),
    (Kind.CART, "lines[0].unit_price", 10**13, "lines[0].unit_price"),
    (Kind.RECEIPT, "exited_at", 1.0, "<payload>"),
    (Kind.RECEIPT, "lines[0].qty", 0, "lines[0].qty"),
    (Kind.RECEIPT, "status", "paid", "status"),
    (Kind.ACCOUNT, "state", "frozen", "state"),
    (Kind.ACCOUNT, "account", "a2", "account"),
]


@pytest.mark.parametrize(
    "kind,path,value,field", INVALID, ids=[f"{k.value}-{p}-{v!r}"[:60] for k, p, v, _ in INVALID]
)
def test_invalid_payload_is_rejected_naming_the_field(kind: Kind, path: str, value: Any, field: str) -> None:
    name, payload = _edit(kind, path, value)
    with pytest.raises(WireError) as err:
        decode(name, payload)
    assert err.value.field == field, str(err.value)
    assert err.value.topic == name and err.value.reason


@pytest.mark.parametrize(
    "name,payload,field",
    [
        ("walkout/v1/s1/gate/g1/entry", b"", "<payload>"),
        ("walkout/v1/s1/gate/g1/entry", b"{", "<payload>"),
        ("walkout/v1/s1/gate/g1/entry", b"\xff\xfe", "<payload>"),
        ("walkout/v1/s1/gate/g1/entry", b"[1, 2]", "<payload>"),
        ("walkout/v1/s1/gate/g1/entry", b"[" * 10_000 + b"]" * 10_000, "<payload>"),
        ("walkout/v1/s1/gate/g1/entry", b" " * (MAX_PAYLOAD + 1), "<payload>"),
        ("walkout/v1/s1/gate/+/entry", b"{}", "<topic>"),
        ("elsewhere/g1", b"{}", "<topic>"),
    ],
)
def test_unparseable_input_is_rejected(name: str, payload: bytes, field: str) -> None:
    with pytest.raises(WireError) as err:
        decode(name, payload)
    assert err.value.field == field

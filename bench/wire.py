"""Wire codec benchmark and fuzz run.

    python -m bench.wire [--n 100000] [--per-kind 2000] [--repeat 5] [--seed 1] [--json]

1. Fuzz: decodes ``--n`` payloads, random valid messages of every kind and mutations of them (bit flips,
   truncations, type swaps, huge numbers, NaN/Infinity, deep nesting, non-UTF-8 bytes, wrong or mismatched
   ids, unknown and missing fields, random bytes, wrong topics) and counts how many were accepted and
   rejected with ``WireError``; anything else raised is a failure (exit status 1).
2. Speed per message kind: messages/s of ``encode`` and of ``decode`` (parse + validate + topic check) on
   ``--per-kind`` random messages, the median of ``--repeat`` runs, and the peer: plain ``json.loads`` of
   the same payloads in the same process (no validation), as the ratio decode / json.loads time.

The generators (:func:`random_message`, :func:`fuzz_cases`) are also used by ``tests/test_wire_fuzz.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from wire.codec import WireError, decode, encode
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
from wire.topics import TOPICS, Kind, topic

STORE = "store1"


# --------------------------------------------------------------------------------------------- valid messages
def _ident(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.randrange(1000)}"


def _ts(rng: random.Random) -> float:
    return 1.7e9 + rng.random() * 1e7


def _ray(rng: random.Random) -> Ray:
    d = [rng.gauss(0, 1) for _ in range(3)]
    n = math.sqrt(sum(c * c for c in d)) or 1.0
    return Ray(
        origin=(rng.uniform(0, 20), rng.uniform(0, 20), rng.uniform(2, 4)), dir=(d[0] / n, d[1] / n, d[2] / n)
    )


def _keypoint(rng: random.Random) -> Keypoint | None:
    if rng.random() < 0.2:
        return None
    return Keypoint(
        px=(rng.uniform(0, 1920), rng.uniform(0, 1080)),
        conf=rng.random(),
        ray=_ray(rng) if rng.random() < 0.8 else None,
    )


def _track(rng: random.Random, i: int) -> Track:
    x1, y1 = rng.uniform(0, 1800), rng.uniform(0, 1000)
    xx, yy = rng.uniform(0, 0.5), rng.uniform(0, 0.5)
    return Track(
        id=i,
        box=(x1, y1, x1 + rng.uniform(0, 120), y1 + rng.uniform(0, 80)),
        conf=rng.random(),
        floor=(rng.uniform(0, 20), rng.uniform(0, 20)),
        floor_cov=(xx, rng.uniform(-0.9, 0.9) * math.sqrt(xx * yy), yy),
        head=_keypoint(rng),
        lwrist=_keypoint(rng),
        rwrist=_keypoint(rng),
    )


def _envelope(rng: random.Random, source: str) -> dict[str, Any]:
    return {"source": source, "seq": rng.randrange(2**53), "ts": _ts(rng)}


def _cart_line(rng: random.Random, i: int) -> CartLine:
    qty = rng.choice([1, 1, 2, 3, -1])
    price = rng.randrange(50, 5000)
    return CartLine(
        line_id=f"l{i}",
        kind="pick" if qty > 0 else "put_back",
        sku=_ident(rng, "sku"),
        name="Sparkling water 0.5 l",
        qty=qty,
        unit_price=price,
        amount=qty * price,
        confidence=rng.random(),
        margin=rng.random(),
        uncertain=rng.random() < 0.1,
        event_id=_ident(rng, "e"),
        shopper=_ident(rng, "p"),
        cameras=["cam1", "cam2"],
        t=_ts(rng),
    )


def random_message(rng: random.Random, kind: Kind) -> tuple[str, BaseModel]:
    """A random valid message of ``kind`` and the topic it travels on."""
    if kind is Kind.TRACKS:
        cam = _ident(rng, "cam")
        msg: BaseModel = TracksMsg(
            **_envelope(rng, cam),
            camera=cam,
            frame=rng.randrange(10**6),
            tracks=[_track(rng, i) for i in range(rng.randrange(6))],
            dropped_frames=rng.randrange(3),
        )
        return topic(kind, STORE, cam), msg
    if kind is Kind.SHELF_EVENTS:
        shelf = _ident(rng, "shelf")
        lanes = [LaneDelta(lane=f"lane{j}", delta_g=-rng.uniform(1, 500)) for j in range(rng.randrange(1, 4))]
        sign = rng.choice([-1, 1])
        lanes = [LaneDelta(lane=ln.lane, delta_g=sign * abs(ln.delta_g)) for ln in lanes]
        t0 = _ts(rng)
        msg = ShelfEventMsg(
            **_envelope(rng, shelf),
            shelf=shelf,
            event_id=_ident(rng, "ev"),
            parent_id=_ident(rng, "ev") if rng.random() < 0.2 else None,
            action="pick" if sign < 0 else "put",
            t_start=t0,
            t_end=t0 + rng.uniform(0, 3),
            lanes=lanes,
            delta_g=sum(ln.delta_g for ln in lanes),
            candidates=[
                Candidate(
                    sku=_ident(rng, "sku"),
                    qty=rng.randrange(1, 4),
                    p=rng.random(),
                    foreign=rng.random() < 0.1,
                )
                for _ in range(rng.randrange(4))
            ],
        )
        return topic(kind, STORE, shelf), msg
    if kind is Kind.LOADCELLS:
        shelf = _ident(rng, "shelf")
        lanes = [f"lane{j}" for j in range(rng.randrange(1, 6))]
        msg = LoadCellMsg(
            **_envelope(rng, shelf),
            shelf=shelf,
            rate_hz=rng.choice([10.0, 50.0, 80.0]),
            lanes=lanes,
            samples=[[rng.uniform(-10, 5000) for _ in lanes] for _ in range(rng.randrange(1, 20))],
        )
        return topic(kind, STORE, shelf), msg
    if kind is Kind.GATE_ENTRY:
        gate = _ident(rng, "gate")
        msg = GateEntryMsg(
            **_envelope(rng, gate),
            gate=gate,
            account=_ident(rng, "acct"),
            party_size=rng.randrange(1, 5),
            code_id=_ident(rng, "code") if rng.random() < 0.5 else None,
        )
        return topic(kind, STORE, gate), msg
    if kind is Kind.STATUS:
        dev = _ident(rng, "dev")
        msg = StatusMsg(
            **_envelope(rng, dev),
            device=dev,
            kind=rng.choice(["camera", "shelf", "fusion"]),
            state=rng.choice(["online", "offline", "stopped"]),
            version="0.1.0",
            config_hash=f"{rng.getrandbits(64):016x}",
            counters={"received": rng.randrange(10**6), "published": rng.randrange(10**6)},
        )
        return topic(kind, STORE, dev), msg
    if kind is Kind.CART:
        visit = _ident(rng, "visit")
        lines = [_cart_line(rng, i) for i in range(rng.randrange(6))]
        msg = CartSnapshotMsg(
            **_envelope(rng, "fusion"),
            visit=visit,
            account=_ident(rng, "acct"),
            state=rng.choice(["open", "settling", "closed"]),
            lines=lines,
            total=sum(ln.amount for ln in lines),
        )
        return topic(kind, STORE, visit), msg
    if kind is Kind.RECEIPT:
        visit = _ident(rng, "visit")
        lines = []
        for _ in range(rng.randrange(5)):
            qty, price = rng.randrange(1, 4), rng.randrange(50, 5000)
            lines.append(
                ReceiptLine(
                    sku=_ident(rng, "sku"), name="Crisps", qty=qty, unit_price=price, amount=qty * price
                )
            )
        t0 = _ts(rng)
        msg = ReceiptMsg(
            **_envelope(rng, "fusion"),
            visit=visit,
            account=_ident(rng, "acct"),
            status=rng.choice(["charged", "no_charge", "held_for_review"]),
            lines=lines,
            total=sum(ln.amount for ln in lines),
            charge_key=f"capture:{visit}",
            entered_at=t0,
            exited_at=t0 + rng.uniform(0, 900),
        )
        return topic(kind, STORE, visit), msg
    if kind is Kind.ACCOUNT:
        account = _ident(rng, "acct")
        blocked = rng.random() < 0.5
        msg = AccountStatusMsg(
            **_envelope(rng, "fusion"),
            account=account,
            state="blocked" if blocked else "ok",
            reason="payment failed" if blocked else "",
            failure_code="card_declined" if blocked else None,
            visit=_ident(rng, "visit") if rng.random() < 0.8 else None,
        )
        return topic(kind, STORE, account), msg
    if kind is Kind.CLOCK:
        msg = ClockMsg(**_envelope(rng, "fusion"), period_s=rng.uniform(0.5, 5.0))
        return topic(kind, STORE, "fusion"), msg
    raise ValueError(f"no generator for {kind}")


# --------------------------------------------------------------------------------------------- mutations
_ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    "",
    "x",
    "a/b",
    "+",
    "#",
    " ",
    "é" * 70,
    [],
    {},
    [1, 2],
    {"a": 1},
    10**30,
    -(10**30),
    2**63,
    2**64,
    1e308,
    -1e308,
    5e-324,
    1e400,
    "NaN",
    "1e9999",
]
_BAD_IDS = ["", "a/b", "+", "#", "a b", "-lead", "x" * 65, "ä", "cam\u0000", "store1/camera/x"]


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


_PATHS: dict[bytes, list[tuple]] = {}


def _paths_of(payload: bytes, obj: Any) -> list[tuple]:
    """Every path into ``obj`` but the root, cached per payload (the seeds repeat)."""
    paths = _PATHS.get(payload)
    if paths is None:
        paths = list(_paths(obj))[1:] or [()]
        if len(_PATHS) < 10_000:
            _PATHS[payload] = paths
    return paths


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return obj


def _nested(depth: int, rng: random.Random) -> bytes:
    """JSON text nested ``depth`` levels, built as text (``json.dumps`` would hit the recursion limit)."""
    if rng.random() < 0.5:
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode()


def mutate(rng: random.Random, name: str, payload: bytes) -> tuple[str, bytes]:
    """One random mutation of a valid (topic, payload)."""
    how = rng.randrange(12)
    if how == 0:  # bit flips
        b = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return name, bytes(b)
    if how == 1:  # truncation
        return name, payload[: rng.randrange(len(payload))]
    if how == 2:  # random bytes
        return name, rng.randbytes(rng.randrange(0, 200))
    if how == 3:  # non-UTF-8 inside a string
        i = payload.find(b'"', rng.randrange(len(payload)))
        i = i if i >= 0 else len(payload) // 2
        return name, payload[: i + 1] + rng.choice(
            [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]
        ) + payload[i + 1 :]
    if how == 4:  # wrong topic: another kind, a bad one, or another id
        choice = rng.randrange(4)
        if choice == 0:  # a valid topic of another kind (or the same kind, another id)
            return topic(rng.choice(list(Kind)), STORE, rng.choice(["x1", "cam1", "shelf1"])), payload
        if choice == 1:
            return rng.choice(
                [
                    "",
                    "walkout/v1",
                    "walkout/v2/store1/status/x",
                    "walkout/v1/+/status/#",
                    "walkout/v1/store1/status/a/b",
                    name + "/extra",
                    "\udcff",
                ]
            ), payload
        parts = name.split("/")
        idx = 4 if len(parts) > 4 and parts[3] in ("camera", "shelf", "gate", "status") else len(parts) - 1
        parts[idx] = rng.choice(["other1", "x"])
        return "/".join(parts), payload
    obj = json.loads(payload)
    paths = _paths_of(payload, obj)
    path = rng.choice(paths)
    if how == 5:  # type swap / odd value
        return name, _dumps(_set(obj, path, rng.choice(_ODD_VALUES)))
    if how == 6:  # NaN / infinity on a number
        return name, _dumps(_set(obj, path, rng.choice([math.nan, math.inf, -math.inf])))
    if how == 7:  # deep nesting
        text = _dumps(_set(obj, path, "__NEST__"))
        return name, text.replace(b'"__NEST__"', _nested(rng.choice([50, 500, 5000]), rng), 1)
    if how == 8:  # wrong id (in a field that is an id)
        id_fields = [
            p
            for p in paths
            if p
            and p[-1]
            in (
                "source",
                "camera",
                "shelf",
                "gate",
                "device",
                "visit",
                "account",
                "sku",
                "lane",
                "event_id",
                "line_id",
            )
        ]
        if id_fields:
            path = rng.choice(id_fields)
        return name, _dumps(_set(obj, path, rng.choice(_BAD_IDS)))
    if how == 9:  # remove a field
        if len(path) and isinstance(obj, dict):
            parent = obj
            for p in path[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, list) and parent:
                parent.pop()
        return name, _dumps(obj)
    if how == 10:  # unknown field, or a duplicated key in the text
        if rng.random() < 0.5 and isinstance(obj, dict):
            obj["extra"] = 1
            return name, _dumps(obj)
        return name, payload[:-1] + b',"seq":1}'
    # huge or negative numbers on numeric fields
    num_paths = [
        p
        for p in paths
        if p and isinstance(_get(obj, p), (int, float)) and not isinstance(_get(obj, p), bool)
    ]
    if num_paths:
        path = rng.choice(num_paths)
    return name, _dumps(_set(obj, path, rng.choice([10**19, -(10**19), 1e300, -1e300, 2**63, -1, 10**6 + 1])))


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def fuzz_cases(
    rng: random.Random, n: int, valid_share: float = 0.15, pool: int = 40
) -> Iterator[tuple[str, bytes]]:
    """``n`` (topic, payload) pairs over every kind: about ``valid_share`` valid, the rest mutations of
    ``pool`` random valid messages per kind (generated once: building models is the slow part)."""
    kinds = list(TOPICS)
    seeds = {
        k: [(name, encode(m)) for name, m in (random_message(rng, k) for _ in range(pool))] for k in kinds
    }
    for i in range(n):
        name, payload = rng.choice(seeds[kinds[i % len(kinds)]])
        if rng.random() < valid_share:
            yield name, payload
        else:
            yield mutate(rng, name, payload)


def check_decode(name: str, payload: bytes) -> bool:
    """Decode one case: True accepted (and re-encodes to the same model), False rejected with WireError.
    Anything else propagates (the failure the fuzz run looks for)."""
    try:
        info, msg = decode(name, payload)
    except WireError:
        return False
    if not isinstance(msg, info.spec.model) or decode(name, encode(msg))[1] != msg:
        raise AssertionError(f"{name}: accepted payload does not round-trip: {payload[:200]!r}")
    return True


# --------------------------------------------------------------------------------------------- benchmark
def _rate(fn: Any, items: list, repeat: int) -> float:
    """Median items/s of ``fn`` over ``items`` across ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        times.append(time.perf_counter() - t0)
    return len(items) / statistics.median(times)


def run_fuzz(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    accepted = rejected = 0
    other: list[str] = []
    t0 = time.perf_counter()
    for name, payload in fuzz_cases(rng, n):
        try:
            ok = check_decode(name, payload)
        except Exception as exc:  # noqa: BLE001 - this is what the fuzz run counts
            other.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        accepted += ok
        rejected += not ok
    return {
        "n": n,
        "accepted": accepted,
        "rejected": rejected,
        "other": len(other),
        "other_examples": other[:5],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def run_speed(per_kind: int, repeat: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for kind in TOPICS:
        msgs = [random_message(rng, kind) for _ in range(per_kind)]
        cases = [(name, encode(m)) for name, m in msgs]
        models = [m for _, m in msgs]
        enc = _rate(encode, models, repeat)
        dec = _rate(lambda c: decode(c[0], c[1]), cases, repeat)
        peer = _rate(lambda c: json.loads(c[1]), cases, repeat)
        rows.append(
            {
                "kind": kind.value,
                "bytes": round(statistics.mean(len(p) for _, p in cases)),
                "encode_per_s": round(enc),
                "decode_per_s": round(dec),
                "json_loads_per_s": round(peer),
                "decode_vs_json_loads": round(peer / dec, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wire", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="payloads to fuzz-decode (default 100000)")
    ap.add_argument("--per-kind", type=int, default=2000, help="messages per kind for the speed runs")
    ap.add_argument("--repeat", type=int, default=5, help="runs per speed figure (the median is reported)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)

    fuzz = run_fuzz(args.n, args.seed)
    speed = run_speed(args.per_kind, args.repeat, args.seed)
    if args.json:
        print(json.dumps({"fuzz": fuzz, "speed": speed}))
    else:
        print(
            f"fuzz: {fuzz['n']} payloads in {fuzz['seconds']} s: accepted {fuzz['accepted']}, "
            f"rejected with WireError {fuzz['rejected']}, anything else {fuzz['other']}"
        )
        for ex in fuzz["other_examples"]:
            print("   ", ex)
        print(
            f"\nspeed (messages/s, median of {args.repeat} runs of {args.per_kind} messages per kind; "
            "peer: json.loads of the same payloads, no validation)"
        )
        print(
            f"{'kind':<14}{'bytes':>7}{'encode/s':>11}{'decode/s':>11}{'json.loads/s':>14}"
            f"{'decode slower':>15}"
        )
        for r in speed:
            print(
                f"{r['kind']:<14}{r['bytes']:>7}{r['encode_per_s']:>11}{r['decode_per_s']:>11}"
                f"{r['json_loads_per_s']:>14}{r['decode_vs_json_loads']:>14}x"
            )
    return 1 if fuzz["other"] else 0


if __name__ == "__main__":
    sys.exit(main())

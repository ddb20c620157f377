"""Fuzzed input: wire payloads for every topic, load-cell lines for the shelf gateway, store descriptions.

The generators are seeded and deterministic.  Payload mutations work on a valid message of the topic's kind:
structural ones on its JSON (drop or add a field, change a value's type, extreme numbers, long or hostile
strings, deep nesting, a topic/payload id mismatch) and byte-level ones on its encoding (truncation, flipped or
inserted bytes, invalid UTF-8, empty or random bytes); a small share stays valid with a fresh ``seq``.  What a
consumer should do with each payload is computed with the consumer's own :class:`wire.transport.Dispatcher`
(valid, rejected or duplicate), so a live run can be checked counter for counter.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Iterator
from typing import Any

from calibration.config import ConfigError
from calibration.store import store_from_dict
from wire.codec import encode
from wire.dedup import Deduplicator
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
from wire.topics import Kind, topic
from wire.transport import Counters, Dispatcher, Subscription

_HOSTILE = ["", " ", "a" * 70, "../../etc/passwd", "+", "#", "walkout/v1/#", "\u0000", "\ud800", "😀" * 40,
            "DROP TABLE inbox;--", "%s%s%n", "${jndi:ldap://x}", "<script>", "NaN", "-Infinity", "1e309"]
_EXTREME = [0, -1, 1, -(2**63), 2**63, 2**64 + 1, 10**400, 1e308, -1e308, 1e-320, 0.5, 3.7, True, False, None]


# ------------------------------------------------------------------------------------------------ seeds
def valid_message(kind: Kind, key: str, ts: float, seq: int, source: str) -> Any:
    """A valid message of ``kind`` for topic id ``key`` (the fuzzer's starting point)."""
    ray = Ray(origin=(1.0, 2.0, 3.0), dir=(0.0, 0.6, -0.8))
    if kind is Kind.TRACKS:
        kp = Keypoint(px=(10.0, 20.0), conf=0.9, ray=ray)
        tr = Track(id=7, box=(1.0, 2.0, 30.0, 60.0), conf=0.8, floor=(1.5, 2.5), floor_cov=(0.01, 0.0, 0.01),
                   head=kp, lwrist=kp, rwrist=None)
        return TracksMsg(source=source, seq=seq, ts=ts, camera=key, frame=12, tracks=[tr, tr])
    if kind is Kind.SHELF_EVENTS:
        return ShelfEventMsg(source=source, seq=seq, ts=ts, shelf=key, event_id=f"e{seq}", action="pick",
                             t_start=ts - 1, t_end=ts, lanes=[LaneDelta(lane="L1", delta_g=-120.0)],
                             delta_g=-120.0, candidates=[Candidate(sku="SKU1", qty=1, p=0.9)])
    if kind is Kind.LOADCELLS:
        return LoadCellMsg(source=source, seq=seq, ts=ts, shelf=key, rate_hz=60.0, lanes=["L1", "L2"],
                           samples=[[1.0, 2.0], [1.5, 2.5]])
    if kind is Kind.GATE_ENTRY:
        return GateEntryMsg(source=source, seq=seq, ts=ts, gate=key, account=f"fuzz-{seq % 50}", party_size=1)
    if kind is Kind.STATUS:
        return StatusMsg(source=source, seq=seq, ts=ts, device=key, kind="camera", state="online",
                         counters={"frames": 3})
    if kind is Kind.CART:
        line = CartLine(line_id="l1", kind="pick", sku="SKU1", qty=2, unit_price=150, amount=300, t=ts)
        return CartSnapshotMsg(source=source, seq=seq, ts=ts, visit=key, account="a1", state="open", lines=[line],
                               total=300)
    if kind is Kind.RECEIPT:
        line = ReceiptLine(sku="SKU1", qty=2, unit_price=150, amount=300)
        return ReceiptMsg(source=source, seq=seq, ts=ts, visit=key, account="a1", status="charged", lines=[line],
                          total=300, entered_at=ts - 60, exited_at=ts)
    if kind is Kind.ACCOUNT:
        return AccountStatusMsg(source=source, seq=seq, ts=ts, account=key, state="ok")
    if kind is Kind.CLOCK:
        return ClockMsg(source=key, seq=seq, ts=ts)
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------------ mutations
def _random_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.3:
        return rng.choice(_EXTREME)
    if r < 0.55:
        return rng.choice(_HOSTILE)
    if r < 0.7 and depth < 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if r < 0.85 and depth < 3:
        return {rng.choice(["x", "v", "ts", "seq", "id"]): _random_value(rng, depth + 1) for _ in range(2)}
    return rng.uniform(-1e6, 1e6)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _delete(obj: Any, path: tuple) -> None:
    for p in path[:-1]:
        obj = obj[p]
    if isinstance(obj, dict):
        obj.pop(path[-1], None)
    elif isinstance(obj, list) and obj:
        obj.pop(path[-1] if isinstance(path[-1], int) and path[-1] < len(obj) else -1)


def _dumps(data: Any, rng: random.Random) -> bytes:
    try:
        text = json.dumps(data, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    except (ValueError, RecursionError):
        return b"{}"
    return text.encode("utf-8", "surrogatepass")


def mutate_structure(raw: bytes, rng: random.Random) -> bytes:
    """A structural mutation of the JSON document ``raw``."""
    d = json.loads(raw)
    paths = _paths(d)
    op = rng.randrange(9)
    if op == 5 and rng.random() > 0.05:  # long lists are costly to generate and to check: keep them rare
        op = 2
    if op == 0 and paths:
        _delete(d, rng.choice(paths))
    elif op == 1:
        d[rng.choice(["extra", "V", "sequence", "ts ", "__proto__"])] = _random_value(rng)
    elif op == 2 and paths:
        _set(d, rng.choice(paths), _random_value(rng))
    elif op == 3 and paths:
        for p in rng.sample(paths, min(len(paths), rng.randint(2, 6))):
            try:
                _set(d, p, _random_value(rng))
            except (KeyError, IndexError, TypeError):
                pass
    elif op == 4:  # deep nesting
        inner: Any = 1
        for _ in range(rng.choice([10, 100, 300])):
            inner = [inner] if rng.random() < 0.5 else {"a": inner}
        d[rng.choice(list(d) or ["x"])] = inner
    elif op == 5:  # a long list where a short one belongs
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = v * rng.choice([20, 130])
                break
    elif op == 6:  # ids: wildcards, slashes, too long
        for k in ("source", "camera", "shelf", "gate", "device", "visit", "account", "event_id"):
            if k in d:
                d[k] = rng.choice(_HOSTILE + ["x" * 65])
                break
    elif op == 7:  # the whole payload as another JSON type
        return _dumps(rng.choice([[d], "text", 12, None, True, []]), rng)
    else:  # the topic's id and the payload's disagree
        for k in ("camera", "shelf", "gate", "device", "visit", "account"):
            if k in d:
                d[k] = d[k] + "x"
                break
    return _dumps(d, rng)


def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    op = rng.randrange(8)
    b = bytearray(raw)
    if op == 0:
        return bytes(b[: rng.randrange(len(b) + 1)])
    if op == 1:
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == 2:
        pos = rng.randrange(len(b) + 1)
        return bytes(b[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[pos:])
    if op == 3:
        return rng.choice([b"", b" ", b"null", b"{}", b"[]", b"\xff\xfe", b"\xc0\xaf", b'{"v":1', b"NaN"])
    if op == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 512)))
    if op == 5:  # NaN / Infinity tokens where numbers are
        text = raw.decode(errors="replace")
        for tok in ("1", "0", "2"):
            if tok in text:
                return text.replace(tok, rng.choice(["NaN", "Infinity", "-Infinity", "1e999"]), 1).encode()
        return raw
    if op == 6:  # duplicated keys: the later one wins in JSON parsers
        return raw[:-1] + b',"seq":-5}' if raw.endswith(b"}") else raw
    return raw + raw  # two documents


_SEQ0, _TS0 = 987654321, 1700000000.25


class PayloadFuzzer:
    """Fuzzed payloads for one topic: ``(topic, payload)``; ``valid_share`` of them valid with fresh seqs
    (a few repeat an earlier seq: duplicates).  Payloads stay under ``max_bytes`` (the broker's packet limit
    disconnects a client that sends more; the codec's own limit has its unit tests)."""

    def __init__(self, store_id: str, kind: Kind, key: str, source: str, seed: int = 0,
                 valid_share: float = 0.05, max_bytes: int = 200_000):
        self.store_id, self.kind, self.key, self.source = store_id, kind, key, source
        self.rng = random.Random(f"{seed}:{kind.value}:{key}")
        self.valid_share = valid_share
        self.max_bytes = max_bytes
        self.topic = topic(kind, store_id, key)
        self._template = encode(valid_message(kind, key, _TS0, _SEQ0, source))
        self._seq = int(time.time() * 1000) % 10**9
        self._ts = time.time()

    def _valid(self) -> bytes:
        self._seq += self.rng.choice((1, 1, 1, 2, 0, -3))  # mostly new, some repeats (duplicates)
        self._ts += 0.01
        ts = f"{self._ts:.3f}".encode()
        raw = self._template.replace(str(_SEQ0).encode(), str(max(0, self._seq)).encode())
        return raw.replace(repr(_TS0).encode(), ts).replace(repr(_TS0 - 1).encode(), repr(self._ts - 1).encode())

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while True:
            raw = self._valid()
            r = self.rng.random()
            if r < self.valid_share:
                out = raw
            elif r < 0.5:
                out = mutate_structure(raw, self.rng)
            else:
                out = mutate_bytes(raw, self.rng)
            yield self.topic, out[: self.max_bytes]


def expected_counts(store_id: str, kinds: list[Kind], messages: list[tuple[str, bytes]]) -> dict[str, int]:
    """What a consumer subscribed to ``kinds`` counts for ``messages``, computed with the transports' own
    :class:`Dispatcher` (``received``, ``rejected``, ``duplicate``; ``accepted`` reached the handler)."""
    counters = Counters()
    disp = Dispatcher(counters, Deduplicator(), "fuzz-expected")
    accepted = [0]

    def handler(info: Any, msg: Any) -> None:
        accepted[0] += 1

    for k in kinds:
        disp.add(Subscription(k, store_id, "+", handler))
    for name, payload in messages:
        disp.handle(name, payload)
    out = counters.as_dict()
    return {"received": out["received"], "rejected": out["rejected"], "duplicate": out["duplicate"],
            "accepted": accepted[0]}


# ------------------------------------------------------------------------------------------------ load cells
def loadcell_lines(lanes: list[str], n: int, seed: int = 0) -> Iterator[str]:
    """Line-protocol lines for the shelf gateway: a header, then good samples and frames mixed with fuzzed
    lines (garbled fields, unknown channels, non-finite values, binary junk, over-long lines)."""
    rng = random.Random(f"lines:{seed}")
    yield "# walkout-loadcells 1"
    yield "# lanes " + " ".join(lanes)
    t = time.time()
    for i in range(n):
        t += 1 / 60
        r = rng.random()
        if r < 0.5:
            yield f"{t:.4f} * " + " ".join(f"{1000 + rng.gauss(0, 0.7):.1f}" for _ in lanes)
        elif r < 0.6:
            yield f"{t:.4f} {rng.choice(lanes)} {1000 + rng.gauss(0, 0.7):.1f}"
        else:
            yield _bad_line(rng, lanes, t)


def _bad_line(rng: random.Random, lanes: list[str], t: float) -> str:
    op = rng.randrange(10)
    if op == 0:
        return f"{t:.4f} *"
    if op == 1:
        return f"{t:.4f} * " + " ".join("1" for _ in range(len(lanes) + rng.choice([-1, 1, 5])))
    if op == 2:
        return f"{t:.4f} no-such-lane {rng.uniform(-1e9, 1e9)}"
    if op == 3:
        return f"{rng.choice(['nan', 'inf', '-inf', 'x', '1e999', ''])} {rng.choice(lanes)} 5"
    if op == 4:
        return f"{t:.4f} {rng.choice(lanes)} {rng.choice(['nan', 'inf', 'abc', '--1', '1e999'])}"
    if op == 5:  # junk without line breaks (a break would make two lines of it)
        chars = (chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randint(1, 80)))
        return "".join(c for c in chars if len((c + "x").splitlines()) == 1) or "?"
    if op == 6:
        return f"{t:.4f} {len(lanes) + rng.randint(0, 99)} 3.0"
    if op == 7:
        return f"{t:.4f}," + ",".join("1" for _ in range(rng.randint(0, 3)))
    if op == 8:
        return f"{t:.4f} {'/' * rng.randint(1, 10)} 1"
    return f"{t:.4f} * " + " ".join(rng.choice(["1", "nan", "x", "1e999"]) for _ in lanes)


# ------------------------------------------------------------------------------------------------ stores
def small_store(data: dict) -> dict:
    """A small valid store cut from ``data`` (the first unit's first two shelves, its lanes' products, two
    cameras): fast to validate, so ten thousand mutations take seconds."""
    d = copy.deepcopy(data)
    unit = d["shelf_units"][0]
    unit["shelves"] = unit["shelves"][:2]
    d["shelf_units"] = [unit]
    skus = {ln.get("sku") for sh in unit["shelves"] for ln in sh["lanes"]}
    d["catalogue"] = [p for p in d["catalogue"] if p["sku"] in skus] or d["catalogue"][:1]
    d["cameras"] = []
    return d


def fuzz_stores(base: dict, n: int, seed: int = 0) -> Iterator[Any]:
    """``n`` mutated store descriptions (dicts, or now and then not a dict at all)."""
    rng = random.Random(f"stores:{seed}")
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            yield rng.choice([None, [], "store", 3, {"store": None}, {}])
            continue
        d = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            paths = _paths(d)
            op = rng.randrange(6)
            if not paths:
                break
            p = rng.choice(paths)
            try:
                if op == 0:
                    _delete(d, p)
                elif op == 1:
                    _set(d, p, _random_value(rng))
                elif op == 2:  # a duplicated list element (duplicate ids, overlapping lanes)
                    parent = d
                    for q in p[:-1]:
                        parent = parent[q]
                    if isinstance(parent, list) and parent:
                        parent.append(copy.deepcopy(parent[0]))
                elif op == 3:
                    _set(d, p, rng.choice([-1.0, 0.0, 1e12, math.nan, math.inf, "", "x" * 300]))
                elif op == 4:
                    parent = d
                    for q in p[:-1]:
                        parent = parent[q]
                    if isinstance(parent, dict):
                        parent[rng.choice(["unknown", "Store", "id ", "lanes"])] = _random_value(rng)
                else:
                    _set(d, p, copy.deepcopy(rng.choice([d, [d], {"a": [1, 2]}])) if rng.random() < 0.1
                         else [])
            except (KeyError, IndexError, TypeError, RecursionError):
                pass
        yield d


def check_store_configs(base: dict, n: int, seed: int = 0) -> dict[str, Any]:
    """Feed ``n`` fuzzed stores to :func:`calibration.store.store_from_dict`: each must give a Store or raise
    ConfigError naming a field; anything else is a crash (recorded with its type)."""
    out: dict[str, Any] = {"configs": 0, "accepted": 0, "rejected": 0, "crashes": 0, "crash_types": {}}
    for data in fuzz_stores(base, n, seed):
        out["configs"] += 1
        try:
            store_from_dict(data, "fuzz.yaml")
        except ConfigError as exc:
            out["rejected"] += 1
            if not exc.field or not exc.reason:
                out["crashes"] += 1
                out["crash_types"]["ConfigError without field or reason"] = 1
        except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
            out["crashes"] += 1
            name = type(exc).__name__
            out["crash_types"][name] = out["crash_types"].get(name, 0) + 1
        else:
            out["accepted"] += 1
    return out

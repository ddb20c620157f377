"""The whole wire in one table: every topic, who publishes it, its QoS, retention and payload model.

Topics are built with :func:`topic` and parsed with :func:`parse_topic`; nothing else in the project
formats or splits a topic string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from pydantic import BaseModel

from wire.messages import (
    AccountStatusMsg,
    CartSnapshotMsg,
    ClockMsg,
    GateEntryMsg,
    LoadCellMsg,
    ReceiptMsg,
    ShelfEventMsg,
    StatusMsg,
    TracksMsg,
)

PREFIX = "walkout/v1"
_ID = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}"


class Kind(str, Enum):
    TRACKS = "tracks"
    SHELF_EVENTS = "shelf_events"
    LOADCELLS = "loadcells"
    GATE_ENTRY = "gate_entry"
    STATUS = "status"
    CART = "cart"
    RECEIPT = "receipt"
    ACCOUNT = "account"
    CLOCK = "clock"


@dataclass(frozen=True)
class TopicSpec:
    kind: Kind
    pattern: str  # with {store} and one {key} placeholder
    key: str  # name of the id in the topic after the store (camera, shelf, gate, device, visit, account)
    model: type[BaseModel]
    publisher: str
    qos: int
    retained: bool
    description: str

    def regex(self) -> re.Pattern[str]:
        esc = re.escape(self.pattern).replace(r"\{store\}", f"(?P<store>{_ID})")
        return re.compile("^" + esc.replace(r"\{" + self.key + r"\}", f"(?P<key>{_ID})") + "$")


TOPICS: dict[Kind, TopicSpec] = {
    s.kind: s
    for s in (
        TopicSpec(Kind.TRACKS, PREFIX + "/{store}/camera/{camera}/tracks", "camera", TracksMsg,
                  "edge camera", 1, False, "one frame's tracks of one camera"),
        TopicSpec(Kind.SHELF_EVENTS, PREFIX + "/{store}/shelf/{shelf}/events", "shelf", ShelfEventMsg,
                  "edge shelf", 1, False, "pick/put events of one shelf, once it is stable again"),
        TopicSpec(Kind.LOADCELLS, PREFIX + "/{store}/shelf/{shelf}/loadcells", "shelf", LoadCellMsg,
                  "load-cell reader", 0, False, "raw load-cell sample blocks (recording and remote gateways)"),
        TopicSpec(Kind.GATE_ENTRY, PREFIX + "/{store}/gate/{gate}/entry", "gate", GateEntryMsg,
                  "entry gate", 1, False, "an accepted app scan at the entry gate"),
        TopicSpec(Kind.STATUS, PREFIX + "/{store}/status/{device}", "device", StatusMsg,
                  "every process", 1, True, "online / offline (last will) / stopped, version, config hash; "
                  "shelf gateways: low watermark (every event starting before it was published)"),
        TopicSpec(Kind.CART, PREFIX + "/{store}/carts/{visit}", "visit", CartSnapshotMsg,
                  "fusion", 1, True, "live cart snapshot of a visit"),
        TopicSpec(Kind.RECEIPT, PREFIX + "/{store}/receipts/{visit}", "visit", ReceiptMsg,
                  "fusion", 1, False, "final receipt of a visit: lines, totals, charge status"),
        TopicSpec(Kind.ACCOUNT, PREFIX + "/{store}/accounts/{account}", "account", AccountStatusMsg,
                  "fusion", 1, True, "account standing: blocked after a failed payment (the gate refuses)"),
        TopicSpec(Kind.CLOCK, PREFIX + "/{store}/clock/{source}", "source", ClockMsg,
                  "fusion", 0, False, "the store clock's beacon, every second: edge devices stamp capture "
                  "times on it (wire.clock)"),
    )
}

_REGEXES = [(spec, spec.regex()) for spec in TOPICS.values()]
_ID_RE = re.compile("^" + _ID + "$")


class TopicError(ValueError):
    """A topic string that is not on the wire table, or an id that cannot be put in a topic."""


@dataclass(frozen=True)
class TopicInfo:
    kind: Kind
    store: str
    key: str  # camera, shelf, gate, device or visit id
    retained: bool = False  # delivered from the broker's retained store: published before this subscription

    @property
    def spec(self) -> TopicSpec:
        return TOPICS[self.kind]


def topic(kind: Kind, store: str, key: str) -> str:
    """The topic string of ``kind`` for ``store`` and the topic's own id (camera, shelf, gate, ...)."""
    spec = TOPICS[kind]
    for name, value in (("store", store), (spec.key, key)):
        if not _ID_RE.match(value):
            raise TopicError(f"{name} id {value!r} cannot be used in a topic")
    return spec.pattern.replace("{store}", store).replace("{" + spec.key + "}", key)


def subscription(kind: Kind, store: str = "+", key: str = "+") -> str:
    """A subscription filter for ``kind`` (wildcards by default)."""
    spec = TOPICS[kind]
    return spec.pattern.replace("{store}", store).replace("{" + spec.key + "}", key)


@lru_cache(maxsize=4096)  # a store has a few hundred topics, each seen many times a second
def parse_topic(name: str) -> TopicInfo:
    if not name.startswith(PREFIX + "/"):
        raise TopicError(f"topic {name[:200]!r} is not under {PREFIX}/")
    for spec, rx in _REGEXES:
        m = rx.match(name)
        if m:
            return TopicInfo(spec.kind, m.group("store"), m.group("key"))
    raise TopicError(f"topic {name[:200]!r} is not on the wire table")

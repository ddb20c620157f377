"""The transport interface every process talks through.

Two implementations share it: :class:`wire.mqtt.MqttTransport` (paho-mqtt 2.x over a real broker) and
:class:`wire.bus.InProcessBus` clients (same topics, models and codec, no broker: deterministic replays and
bare machines).  Code above the wire (edge, fusion, replay) only sees this class.

Contract
--------
* ``publish(kind, key, msg)`` puts the message in the outbox and returns; QoS and the retained flag come from
  the topic table.  A QoS 1 message stays in the outbox until the broker acknowledged it, across
  disconnects (and across restarts where the outbox has a file), so nothing published is ever dropped.
* ``subscribe(kind, handler, key="+")`` calls ``handler(info, msg)`` for every valid message on matching
  topics, in arrival order, on the transport's delivery thread.  The message is acknowledged to the broker
  only after the handler returns; if it raises, it is not acknowledged (the broker delivers it again after a
  reconnect) and counted under ``failed``.  Invalid payloads are counted under ``rejected`` and logged,
  duplicates by (``source``, ``seq``) under ``duplicate``; neither reaches the handler.  Subscribe before
  ``start()``: a persistent session may deliver queued messages the moment it connects.  Several handlers
  matching one message run in subscription order; if one raises, all of them see the redelivery.
* De-duplication: a message is marked seen in ``transport.dedup`` *before* its handler runs and unmarked if
  the handler raises, so a handler that stores ``dedup.export_state()`` in the same transaction as its own
  work (e.g. fusion) restarts with exactly the messages it committed.  Status messages only get exact-repeat
  suppression (:class:`~wire.dedup.RecentSet`, not persisted): the last will's ``seq`` is fixed when its
  connection opens, so a window would take it for a stale duplicate.
* ``seq()`` hands out this source's next sequence number (monotonic, also across restarts).
* ``start()`` connects (retrying with backoff in the background) and publishes a retained ``online`` status;
  the last will is a retained ``offline``; ``stop()`` publishes ``stopped``, flushes and disconnects.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pydantic import BaseModel

from wire.codec import WireError, decode, encode
from wire.dedup import Deduplicator, RecentSet
from wire.messages import StatusMsg
from wire.topics import TOPICS, Kind, TopicError, TopicInfo, parse_topic, subscription, topic

log = logging.getLogger(__name__)

Handler = Callable[[TopicInfo, BaseModel], None]

COUNTER_NAMES = ("received", "rejected", "duplicate", "failed", "published", "queued", "delivered")


@dataclass
class Counters:
    """Message counters of one transport; ``queued`` is the outbox's current size, the rest are totals.

    Inbound: ``received`` (every message that arrived), ``rejected`` (invalid payload or topic),
    ``duplicate`` (already seen), ``failed`` (a handler raised, no handler matched, or, MQTT 5 only, the
    broker refused one of our publishes, e.g. by its ACL).  Outbound:
    ``published`` (accepted by ``publish()``), ``delivered`` (acknowledged by the broker, left the outbox).
    """

    received: int = 0
    rejected: int = 0
    duplicate: int = 0
    failed: int = 0
    published: int = 0
    queued: int = 0
    delivered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def set(self, name: str, value: int) -> None:
        with self._lock:
            setattr(self, name, value)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {k: getattr(self, k) for k in COUNTER_NAMES}


class Transport(ABC):
    """One process's connection to the store's message bus."""

    store: str
    device: str
    counters: Counters
    dedup: Deduplicator

    @property
    @abstractmethod
    def description(self) -> str:
        """What this transport is, for logs and the demo's output (e.g. ``mqtt://127.0.0.1:1883``)."""

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self, state: str = "stopped", timeout: float = 5.0) -> None: ...

    @abstractmethod
    def seq(self) -> int: ...

    @abstractmethod
    def publish(self, kind: Kind, key: str, msg: BaseModel) -> None: ...

    @abstractmethod
    def subscribe(self, kind: Kind, handler: Handler, key: str = "+") -> None: ...

    @abstractmethod
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox is empty (everything acknowledged); False on timeout."""

    @abstractmethod
    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until started, connected and the subscriptions are in place; False on timeout."""


# ----------------------------------------------------------------------------------- shared by transports
@dataclass(frozen=True)
class Outbound:
    """A message ready for the wire: topic, encoded payload, and QoS/retain from the topic table."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def prepare(kind: Kind, store: str, key: str, msg: BaseModel) -> Outbound:
    """Check that ``msg`` belongs on ``kind``'s topic for ``key`` and encode it.

    Raises ``TypeError`` for a model of the wrong type and :class:`WireError` for an id that does not match
    the topic (the receivers would reject it).
    """
    spec = TOPICS[kind]
    if type(msg) is not spec.model:
        raise TypeError(f"{kind.value} carries {spec.model.__name__}, not {type(msg).__name__}")
    name = topic(kind, store, key)
    if getattr(msg, spec.key) != key:
        raise WireError(name, spec.key, f"{getattr(msg, spec.key)!r} does not match the topic's {key!r}")
    return Outbound(name, encode(msg), spec.qos, spec.retained)


def status_message(device: str, kind: str, state: str, seq: int, version: str = "", config_hash: str = "",
                   counters: dict[str, int] | None = None, watermark: float | None = None,
                   ts: float | None = None, shelf_watermarks: dict[str, float] | None = None) -> StatusMsg:
    """The status a transport publishes (``online``, ``stopped``) or leaves as last will (``offline``).

    ``watermark``, ``shelf_watermarks``: a shelf gateway's event-time low watermark, overall and per shelf (see
    :class:`wire.messages.StatusMsg`); ``ts``: the capture time to stamp (default: the wall clock now)."""
    return StatusMsg(source=device, seq=seq, ts=time.time() if ts is None else ts, device=device, kind=kind,
                     state=state, version=version, config_hash=config_hash,
                     counters={k: min(v, 10**6) for k, v in (counters or {}).items()}, watermark=watermark,
                     shelf_watermarks=shelf_watermarks or {})


class RateLimitedLog:
    """Logs a warning at most once per ``interval`` seconds per key, then says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0):
        self.logger = logger
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, fmt: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-1e18, 0))
            if now - last < self.interval:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        if suppressed:
            fmt += " (%d similar suppressed)"
            args = (*args, suppressed)
        self.logger.warning(fmt, *args, exc_info=exc_info)


@dataclass(frozen=True)
class Subscription:
    kind: Kind
    store: str
    key: str  # an id or "+"
    handler: Handler

    @property
    def filter(self) -> str:
        return subscription(self.kind, self.store, self.key)

    def matches(self, info: TopicInfo) -> bool:
        return info.kind is self.kind and info.store == self.store and self.key in ("+", info.key)


class Dispatcher:
    """The inbound half of every transport: decode, de-duplicate, call the handlers, count.

    :meth:`handle` takes one raw message and returns whether it may be acknowledged; it never raises.
    Both transports feed it, so they count and filter identically.
    """

    def __init__(self, counters: Counters, dedup: Deduplicator, name: str):
        self.counters = counters
        self.dedup = dedup
        self.name = name
        self.recent_status = RecentSet()
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._log = RateLimitedLog(log)

    def add(self, sub: Subscription) -> bool:
        """Register a subscription; False if its filter was registered before (a new handler on it)."""
        with self._lock:
            known = any(s.filter == sub.filter for s in self._subs)
            self._subs.append(sub)
        return not known

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs)

    def handle(self, topic_name: str | None, payload: bytes, retained: bool = False,
               model: BaseModel | None = None) -> bool:
        """Process one arrival; True: acknowledge it (handled, duplicate or invalid), False: do not.
        ``retained``: the broker sent it from its retained store (the handlers see ``info.retained``);
        ``model``: the message ``payload`` encodes, from a publisher in this process that checked it against
        the topic table (:func:`prepare`): not decoded again."""
        self.counters.add("received")
        if topic_name is None:
            self.counters.add("rejected")
            self._log.warning("topic", "%s: rejected a message whose topic is not UTF-8", self.name)
            return True
        try:
            info, msg = decode(topic_name, payload) if model is None else (parse_topic(topic_name), model)
        except (WireError, TopicError) as exc:
            self.counters.add("rejected")
            self._log.warning(f"rejected:{topic_name}", "%s: rejected %s", self.name, exc)
            return True
        if retained:
            info = replace(info, retained=True)
        handlers = [s.handler for s in self.subscriptions() if s.matches(info)]
        if not handlers:
            self.counters.add("failed")
            self._log.warning(f"nohandler:{topic_name}", "%s: no handler for %s; left unacknowledged",
                              self.name, topic_name)
            return False
        seen = self.recent_status if info.kind is Kind.STATUS else self.dedup
        source, seq = msg.source, msg.seq  # type: ignore[attr-defined]
        if not seen.add(source, seq):
            self.counters.add("duplicate")
            return True
        for handler in handlers:
            try:
                handler(info, msg)
            except Exception:  # noqa: BLE001 - a handler's failure must not stop the transport
                self.counters.add("failed")
                seen.discard(source, seq)
                self._log.warning(f"failed:{topic_name}", "%s: handler for %s (source %s, seq %s) raised; "
                                  "left unacknowledged", self.name, topic_name, source, seq, exc_info=True)
                return False
        return True

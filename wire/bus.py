"""An in-process message bus with the MQTT transport's behaviour and no broker.

For deterministic replays, tests and bare machines.  Everything a message meets on the wire it meets here:
the topic table, the codec (every message is encoded on publish and decoded on delivery), retained
messages, the outbox, persistent sessions, duplicate suppression and the counters.  Delivery is synchronous
and in publish order: :meth:`BusClient.publish` returns after every subscriber's handler ran; a message a
handler publishes is delivered after the current one, to everyone (first in, first out).

``InProcessBus(share_models=True)`` skips the decoding of what a client of this bus published: each delivery
is the very message object the publisher passed in (still encoded on publish, for the outbox and the retained
store).  For replays, whose messages were decoded from a recording or built by our own pipelines, and must
not be changed by any handler; raw bytes (:meth:`InProcessBus.publish_raw`) are always decoded.

Like a broker, the bus keeps a session per client id: the subscriptions, the messages that arrived while
the client was stopped (QoS 1 only, as Mosquitto does), and the ones whose handler raised (redelivered when
the client starts again).  A client's subscriptions join its session when it starts, so, as with MQTT, a
subscriber sees nothing published before its first start.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel

from wire.dedup import Deduplicator
from wire.outbox import Outbox
from wire.topics import Kind, TopicError, TopicInfo, parse_topic, topic
from wire.transport import (
    Counters,
    Dispatcher,
    Handler,
    Subscription,
    Transport,
    prepare,
    status_message,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Msg:
    topic: str
    payload: bytes
    qos: int
    retained: bool = False  # a retained message queued for a new subscription
    model: BaseModel | None = None  # the message as published (a bus that shares models)


@dataclass
class _Session:
    """What the bus keeps for one client id, whether or not a client is attached."""

    subs: list[Subscription] = field(default_factory=list)
    queue: deque[_Msg] = field(default_factory=deque)  # waiting to be delivered
    unacked: list[_Msg] = field(default_factory=list)  # handler raised; redelivered on the next start
    client: BusClient | None = None  # attached and started

    def matches(self, info: TopicInfo) -> bool:
        return any(s.matches(info) for s in self.subs)


class InProcessBus:
    """A broker in the process for one store; :meth:`client` gives each device its :class:`Transport`."""

    def __init__(self, store: str, share_models: bool = False):
        self.store = store
        self.share_models = share_models
        self._lock = threading.RLock()  # held while routing, handlers included: one delivery at a time
        self._retained: dict[str, bytes] = {}
        self._sessions: dict[str, _Session] = {}
        self._pending: deque[tuple[_Msg, bool]] = deque()
        self._routing = False

    @property
    def description(self) -> str:
        return f"in-process bus (store {self.store}, no broker)"

    def client(self, device: str, kind: str = "other", *, client_id: str | None = None,
               outbox: Outbox | None = None, dedup: Deduplicator | None = None,
               version: str = "", config_hash: str = "") -> BusClient:
        """A transport for ``device``; a client id used before resumes that session (like a restart)."""
        return BusClient(self, device, kind, client_id=client_id or f"walkout-{self.store}-{device}",
                         outbox=outbox, dedup=dedup, version=version, config_hash=config_hash)

    def retained(self) -> dict[str, bytes]:
        """A copy of the retained messages by topic."""
        with self._lock:
            return dict(self._retained)

    def publish_raw(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Route raw bytes as if a client had published them (replays of recorded payloads, tests)."""
        self._submit(_Msg(topic, bytes(payload), qos), retain)

    # ------------------------------------------------------------------ sessions
    def _session(self, client_id: str) -> _Session:
        with self._lock:
            return self._sessions.setdefault(client_id, _Session())

    def _attach(self, client_id: str, client: BusClient, subs: list[Subscription]) -> None:
        """``client`` starts: join its subscriptions, queue the retained messages new ones match, then
        deliver the unacknowledged and queued messages."""
        with self._lock:
            session = self._session(client_id)
            session.client = client
            session.queue.extendleft(reversed(session.unacked))
            session.unacked.clear()
            for sub in subs:
                self._join(session, sub)
            self._drain()

    def _join(self, session: _Session, sub: Subscription) -> None:
        known = {s.filter for s in session.subs}
        session.subs.append(sub)
        if sub.filter in known:
            return
        for name, payload in self._retained.items():
            info = parse_topic(name)
            if sub.matches(info):
                session.queue.append(_Msg(name, payload, 1, retained=True))

    def _subscribe_live(self, client_id: str, sub: Subscription) -> None:
        with self._lock:
            self._join(self._session(client_id), sub)
            self._drain()

    def _detach(self, client_id: str) -> None:
        with self._lock:
            self._session(client_id).client = None

    # ------------------------------------------------------------------ routing
    def _submit(self, msg: _Msg, retain: bool) -> None:
        with self._lock:
            self._pending.append((msg, retain))
            self._drain()

    def _drain(self) -> None:
        """Route pending messages and deliver session queues until both are empty.  Re-entrant calls (a
        handler that publishes) only enqueue; the outermost call delivers, so order is first in, first out."""
        if self._routing:
            return
        self._routing = True
        try:
            while True:
                for session in list(self._sessions.values()):
                    self._deliver(session)
                if not self._pending:
                    break
                msg, retain = self._pending.popleft()
                self._route(msg, retain)
        finally:
            self._routing = False

    def _route(self, msg: _Msg, retain: bool) -> None:
        if retain:
            if msg.payload:
                self._retained[msg.topic] = msg.payload
            else:
                self._retained.pop(msg.topic, None)
        try:
            info = parse_topic(msg.topic)
        except TopicError:
            return  # no subscription can match a topic off the table
        for session in self._sessions.values():
            if (session.client is not None or msg.qos > 0) and session.matches(info):
                session.queue.append(msg)

    def _deliver(self, session: _Session) -> None:
        while session.queue and session.client is not None:
            msg = session.queue.popleft()
            if not session.client._dispatcher.handle(msg.topic, msg.payload, msg.retained, msg.model):
                session.unacked.append(msg)


class BusClient(Transport):
    """One device's :class:`Transport` on an :class:`InProcessBus`.  Not started, its publishes wait in
    its outbox (as while a broker is away); ``start()`` delivers them."""

    def __init__(self, bus: InProcessBus, device: str, kind: str = "other", *, client_id: str,
                 outbox: Outbox | None = None, dedup: Deduplicator | None = None,
                 version: str = "", config_hash: str = ""):
        self.bus = bus
        self.store = bus.store
        self.device = device
        self.kind = kind
        self.client_id = client_id
        self.version = version
        self.config_hash = config_hash
        self.counters = Counters()
        self.outbox = outbox if outbox is not None else Outbox()
        self.dedup = dedup if dedup is not None else Deduplicator()
        self._dispatcher = Dispatcher(self.counters, self.dedup, f"bus:{device}")
        self._started = False
        self._sending = False  # re-entrancy guard: a handler of ours may publish while we send
        self._models: dict[int, BaseModel] = {}  # outbox id -> the message as published (share_models)
        self._will: bytes | None = None
        self.counters.set("queued", len(self.outbox))

    @property
    def description(self) -> str:
        return self.bus.description

    @property
    def connected(self) -> bool:
        return self._started

    def seq(self) -> int:
        return self.outbox.next_seq(self.device)

    def start(self) -> None:
        """Attach to the bus: deliver what waits in the outbox and the session, publish ``online``."""
        if self._started:
            return
        will = status_message(self.device, self.kind, "offline", self.seq(), self.version, self.config_hash)
        self._will = prepare(Kind.STATUS, self.store, self.device, will).payload
        self._started = True
        self.bus._attach(self.client_id, self, self._dispatcher.subscriptions())
        self._publish_status("online")
        self._send_pending()

    def stop(self, state: str = "stopped", timeout: float = 5.0) -> None:
        if not self._started:
            return
        self._publish_status(state)
        self._started = False
        self.bus._detach(self.client_id)

    def kill(self) -> None:
        """Vanish without a goodbye, as a crashed process does: the bus publishes the last will."""
        if not self._started:
            return
        self._started = False
        self.bus._detach(self.client_id)
        if self._will is not None:
            self.bus.publish_raw(topic(Kind.STATUS, self.store, self.device), self._will, 1, retain=True)

    def publish(self, kind: Kind, key: str, msg: BaseModel) -> None:
        out = prepare(kind, self.store, key, msg)
        with self.bus._lock:  # the model is there before any thread's send can take the item
            item = self.outbox.put(out.topic, out.payload, out.qos, out.retain)
            if self.bus.share_models:
                self._models[item.oid] = msg
        self.counters.add("published")
        self._send_pending()

    def subscribe(self, kind: Kind, handler: Handler, key: str = "+") -> None:
        sub = Subscription(kind, self.store, key, handler)
        self._dispatcher.add(sub)
        if self._started:
            self.bus._subscribe_live(self.client_id, sub)

    def flush(self, timeout: float = 10.0) -> bool:
        return self.outbox.wait_empty(timeout)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._started  # attaching is synchronous: started means subscribed

    def _publish_status(self, state: str) -> None:
        msg = status_message(self.device, self.kind, state, self.seq(), self.version, self.config_hash,
                             self.counters.as_dict())
        self.publish(Kind.STATUS, self.device, msg)

    def _send_pending(self) -> None:
        """Hand the outbox to the bus in order, under the bus lock (one publishing thread at a time); a
        nested call from a handler only leaves its message for the outermost call (see ``_sending``)."""
        with self.bus._lock:
            if not self._sending:
                self._sending = True
                try:
                    self._send_all()
                finally:
                    self._sending = False
            self.counters.set("queued", len(self.outbox))

    def _send_all(self) -> None:
        while self._started:
            batch = self.outbox.pending(limit=64)
            if not batch:
                return
            for item in batch:
                self.bus._submit(_Msg(item.topic, item.payload, item.qos, model=self._models.pop(item.oid, None)),
                                 item.retain)
                if self.outbox.ack(item.oid):
                    self.counters.add("delivered")

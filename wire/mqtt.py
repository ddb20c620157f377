"""The MQTT transport: paho-mqtt 2.x (callback API version 2), MQTT 5 by default or MQTT 3.1.1.

Behaviour (the contract is in :mod:`wire.transport`):

* Publishing goes through the :class:`~wire.outbox.Outbox`: ``publish()`` stores the encoded message and
  returns; the sender thread hands stored messages to paho, at most ``window`` unacknowledged at a time; a
  message leaves the outbox only on its PUBACK.  On every (re)connect paho's own copies are dropped and the
  outbox is sent again from the start, so anything unacknowledged is resent with the same bytes and
  ``seq`` (receivers drop the duplicates) and nothing is lost while the broker is away.
* Subscribing uses a persistent session: a stable client id, ``clean_start=False`` and a session expiry
  (MQTT 3.1.1: ``clean_session=False``), and manual acknowledgements: a message is acknowledged only after
  its handler returned.  A handler that raises leaves its message unacknowledged; the transport then
  reconnects (after ``redeliver_after`` seconds, doubling up to 30 s while failures go on) so the broker
  delivers it again.
* The last will is a retained ``offline`` status; every connect publishes a retained ``online`` status
  (version, config hash, counters); ``stop()`` publishes ``stopped`` and disconnects cleanly.
* Lost connections are retried by paho's network thread with exponential backoff between ``backoff[0]``
  and ``backoff[1]`` seconds.

Threads (all daemons, named after the device):

* paho's network thread (``loop_start``): socket I/O, reconnects and the callbacks ``_on_connect``,
  ``_on_disconnect``, ``_on_publish`` (removes acknowledged messages from the outbox) and ``_on_message``
  (only queues the raw message for the delivery thread, so slow handlers never block the network).
* the sender thread (``_run_sender``): outbox -> paho, within the in-flight window.
* the delivery thread (``_run_delivery``): decode, de-duplicate, call handlers, acknowledge.

Locks: ``_send_lock`` (sender position and connection generation) is taken before paho's internal locks,
never after; ``_InFlight`` has its own lock that is never held while calling paho.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel

from wire.dedup import Deduplicator
from wire.outbox import Outbox, Outgoing
from wire.topics import TOPICS, Kind, topic
from wire.transport import (
    Counters,
    Dispatcher,
    Handler,
    RateLimitedLog,
    Subscription,
    Transport,
    prepare,
    status_message,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS: the CA that signed the broker's certificate, and this client's own pair."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class _Arrival:
    generation: int  # connection the message came in on
    topic: str | None  # None: not UTF-8
    payload: bytes
    mid: int
    qos: int
    retained: bool = False  # sent from the broker's retained store (a new subscription's first delivery)


class _InFlight:
    """Message ids handed to paho and not yet acknowledged, mapped to outbox ids.

    A PUBACK can race ahead of :meth:`track` (the network thread may read it before ``publish()`` returned
    the mid to the sender), so an unknown mid is remembered as acknowledged early.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_mid: dict[int, int] = {}
        self._early: set[int] = set()

    def track(self, mid: int, oid: int) -> bool:
        """Record ``mid`` -> ``oid``; True if its PUBACK already came (the caller acknowledges it)."""
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                return True
            self._by_mid[mid] = oid
            return False

    def acked(self, mid: int) -> int | None:
        """The outbox id of an acknowledged mid, or None if it is not tracked (yet)."""
        with self._lock:
            oid = self._by_mid.pop(mid, None)
            if oid is None:
                self._early.add(mid)
            return oid

    def clear(self) -> None:
        with self._lock:
            self._by_mid.clear()
            self._early.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_mid)


class MqttTransport(Transport):
    """One process's connection to the store's Mosquitto (see the module docstring for the behaviour).

    ``kind`` is the device kind in its status messages (camera, shelf, gate, fusion, ops, recorder, sim,
    other).  ``outbox`` defaults to an in-memory one; pass ``Outbox(path)`` to keep unsent messages across
    restarts.  ``dedup`` may be restored from a consumer's own database (:meth:`Deduplicator.from_state`).
    ``client_id`` defaults to ``walkout-{store}-{device}``: stable, so a restarted process resumes its
    session, and unique per device (two processes with one id keep pushing each other off the broker).
    ``window`` caps our unacknowledged publishes (and the broker's Receive Maximum caps it too);
    ``receive_maximum`` caps the broker's unacknowledged deliveries to us (MQTT 5).
    """

    def __init__(self, store: str, device: str, kind: str = "other", host: str = "127.0.0.1",
                 port: int = 1883, *, username: str | None = None, password: str | None = None,
                 tls: TlsFiles | None = None, client_id: str | None = None, protocol: int = 5,
                 outbox: Outbox | None = None, dedup: Deduplicator | None = None, session_expiry: int = 3600,
                 keepalive: int = 30,
                 window: int = 20, receive_maximum: int = 50, backoff: tuple[float, float] = (0.5, 30.0),
                 redeliver_after: float = 1.0, version: str = "", config_hash: str = ""):
        if protocol not in (5, 311):
            raise ValueError(f"protocol must be 5 or 311, not {protocol!r}")
        self.store, self.device, self.kind = store, device, kind
        self.host, self.port, self.protocol = host, port, protocol
        self.client_id = client_id or f"walkout-{store}-{device}"
        self.version, self.config_hash = version, config_hash
        self.label = ""  # extra words for ``description`` (e.g. where an embedded broker lives)
        self.session_expiry, self.keepalive, self.window = session_expiry, keepalive, max(1, window)
        self.receive_maximum = max(1, min(receive_maximum, 65535))
        self.redeliver_after = redeliver_after
        self.counters = Counters()
        self.outbox = outbox if outbox is not None else Outbox()
        self.dedup = dedup if dedup is not None else Deduplicator()
        self._dispatcher = Dispatcher(self.counters, self.dedup, f"mqtt:{device}")
        self._rlog = RateLimitedLog(log)
        self._status_topic = topic(Kind.STATUS, store, device)

        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                   protocol=paho.MQTTv5 if protocol == 5 else paho.MQTTv311,
                                   clean_session=None if protocol == 5 else False, manual_ack=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key)
        self._client.reconnect_delay_set(backoff[0], backoff[1])  # type: ignore[arg-type]  # floats work
        self._client.max_inflight_messages_set(self.window)
        self._client.suppress_exceptions = True  # our callbacks do not raise; if one did, keep the loop alive
        self._client.on_log = self._on_log
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_message = self._on_message

        self._inflight = _InFlight()
        self._send_lock = threading.Lock()
        self._generation = 0  # connections so far; an ack belongs to the connection its message came on
        self._cursor = 0  # highest outbox id handed to paho on the current connection
        self._window_now = self.window
        self._connected = threading.Event()
        self._ready = threading.Event()  # connected and the last SUBSCRIBE acknowledged
        self._sub_mid: int | None = None
        self._sub_lock = threading.Lock()
        self._wake = threading.Event()  # something for the sender: a publish, an ack, a connect
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()  # serialises connect / reconnect-for-redelivery / stop
        self._reconnecting = False  # a disconnect we asked for (no warning)
        self._inbox: queue.Queue[_Arrival] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._redeliver_at: float | None = None
        self._redeliver_delay = redeliver_after
        self._last_failure = -1e18
        self._started = False
        self.counters.set("queued", len(self.outbox))

    # ------------------------------------------------------------------ Transport
    @property
    def description(self) -> str:
        proto = "MQTT 5" if self.protocol == 5 else "MQTT 3.1.1"
        extra = f"; {self.label}" if self.label else ""
        return f"mqtt://{self.host}:{self.port} ({proto}, client id {self.client_id}{extra})"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def seq(self) -> int:
        return self.outbox.next_seq(self.device)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(min(0.05, max(0.0, deadline - time.monotonic()))) and self.connected:
                return True
        return False

    def start(self) -> None:
        """Start the threads and connect in the background (this does not wait for the broker)."""
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._run_sender, name=f"wire-send-{self.device}", daemon=True),
            threading.Thread(target=self._run_delivery, name=f"wire-deliver-{self.device}", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._connect()

    def stop(self, state: str = "stopped", timeout: float = 5.0) -> None:
        """Publish ``state``, wait up to ``timeout`` s for the outbox to empty, disconnect cleanly."""
        if not self._started:
            return
        self._publish_status(state)
        if not self.flush(timeout):
            where = f"kept in {self.outbox.path}" if self.outbox.persistent else "LOST (in-memory outbox)"
            log.warning("%s: stopping with %d unacknowledged messages, %s", self.device, len(self.outbox),
                        where)
        with self._lifecycle:
            self._stopping.set()
            self._wake.set()
            self._client.disconnect()
            self._client.loop_stop()
            self._connected.clear()
            self._ready.clear()
        for t in self._threads:
            t.join(timeout)
        self._started = False
        self.counters.set("queued", len(self.outbox))

    def publish(self, kind: Kind, key: str, msg: BaseModel) -> None:
        out = prepare(kind, self.store, key, msg)
        self.outbox.put(out.topic, out.payload, out.qos, out.retain)
        self.counters.add("published")
        self.counters.set("queued", len(self.outbox))
        self._wake.set()

    def subscribe(self, kind: Kind, handler: Handler, key: str = "+") -> None:
        sub = Subscription(kind, self.store, key, handler)
        if self._dispatcher.add(sub) and self.connected:
            self._subscribe([sub])

    def flush(self, timeout: float = 10.0) -> bool:
        return self.outbox.wait_empty(timeout)

    # ------------------------------------------------------------------ connection
    def _set_will(self) -> None:
        """A retained ``offline`` status as last will, with a fresh ``seq`` for each connection (receivers
        drop exact repeats of a status, so two wills in a row must differ)."""
        will = status_message(self.device, self.kind, "offline", self.seq(), self.version, self.config_hash)
        self._client.will_set(self._status_topic, prepare(Kind.STATUS, self.store, self.device, will).payload,
                              qos=1, retain=True)

    def _on_pre_connect(self, client: paho.Client, userdata: object) -> None:
        self._set_will()

    def _connect(self) -> None:
        props = None
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
            # At most this many unacknowledged messages on their way to us (the default is 65535).  Mosquitto
            # 2.0.11 stops holding to it once acknowledgements flow (its in-flight quota grows, see
            # eclipse-mosquitto issue 2301), so ``_inbox`` may still grow to the broker's backlog, and a
            # reconnect then redelivers what was not yet acknowledged (dropped as duplicates).
            props.ReceiveMaximum = self.receive_maximum
            self._client.connect_async(self.host, self.port, self.keepalive, clean_start=False,
                                       properties=props)
        else:
            self._client.connect_async(self.host, self.port, self.keepalive)
        self._client.loop_start()

    def _reconnect_for_redelivery(self) -> None:
        """Close the connection cleanly (no last will; the session stays) and open it again, so the broker
        resends the messages whose handlers failed.  Runs on the delivery thread."""
        log.info("%s: reconnecting so the broker redelivers unacknowledged messages", self.device)
        with self._lifecycle:
            if self._stopping.is_set():
                return
            self._reconnecting = True
            self._client.disconnect()
            self._client.loop_stop()
            self._connected.clear()
            self._ready.clear()
            self._reconnecting = False
            self._connect()

    def _subscribe(self, subs: list[Subscription]) -> None:
        if self.protocol == 5:
            # retainHandling=1: retained messages only for a subscription the session did not have yet
            pairs = [(s.filter, SubscribeOptions(qos=TOPICS[s.kind].qos, retainHandling=1)) for s in subs]
        else:
            pairs = [(s.filter, TOPICS[s.kind].qos) for s in subs]
        if not pairs:
            self._ready.set()
            return
        with self._sub_lock:  # the SUBACK callback waits until the mid is recorded
            self._ready.clear()
            _, self._sub_mid = self._client.subscribe(pairs)  # type: ignore[arg-type]

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("%s: the broker refused subscriptions: %s", self.device, ", ".join(refused))
        with self._sub_lock:
            if mid == self._sub_mid:
                self._ready.set()

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._rlog.warning("connect", "%s: %s refused the connection: %s", self.device, self.description,
                               reason_code)
            return
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        with self._send_lock:
            client.drop_out_messages()  # the outbox is the one copy; it is resent below from the start
            self._inflight.clear()
            self._cursor = 0
            self._generation += 1
            self._window_now = min(self.window, receive_max or self.window)
        self._connected.set()
        self._wake.set()
        log.info("%s: connected to %s (session present: %s)", self.device, self.description,
                 flags.session_present)
        self._subscribe(self._dispatcher.subscriptions())
        self._publish_status("online")

    def _on_log(self, client: paho.Client, userdata: object, level: int, buf: str) -> None:
        """paho's own log: exceptions it caught in our callbacks are errors, the rest is debug detail."""
        if buf.startswith("Caught exception"):
            log.error("%s: paho: %s", self.device, buf)
        else:
            log.debug("%s: paho: %s", self.device, buf)

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._connected.clear()
        self._ready.clear()
        if not (self._stopping.is_set() or self._reconnecting):
            self._rlog.warning("disconnect", "%s: connection to %s lost (%s); reconnecting", self.device,
                               self.description, reason_code)

    # ------------------------------------------------------------------ publishing
    def _publish_status(self, state: str) -> None:
        msg = status_message(self.device, self.kind, state, self.seq(), self.version, self.config_hash,
                             self.counters.as_dict())
        self.publish(Kind.STATUS, self.device, msg)

    def _run_sender(self) -> None:
        """Sender thread: hand outbox messages to paho in order while connected, ``window`` at a time."""
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            while self._connected.is_set() and not self._stopping.is_set():
                with self._send_lock:
                    generation, cursor = self._generation, self._cursor
                    free = self._window_now - len(self._inflight)
                batch = self.outbox.pending(after=cursor, limit=free) if free > 0 else []
                if not batch or not self._hand_over(batch, generation):
                    break

    def _hand_over(self, batch: list[Outgoing], generation: int) -> bool:
        """Publish ``batch`` through paho; False if the connection dropped or was replaced meanwhile."""
        for item in batch:
            with self._send_lock:
                if self._generation != generation or not self._connected.is_set():
                    return False  # the next connection starts again from the outbox's first message
                info = self._client.publish(item.topic, item.payload, item.qos, item.retain)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return False  # not connected after all
                self._cursor = item.oid
                acked_early = self._inflight.track(info.mid, item.oid)
            if acked_early:
                self._delivered(item.oid)
        return True

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        oid = self._inflight.acked(mid)
        if oid is None:
            return
        if reason_code.is_failure:  # MQTT 5 only: the broker refused it (e.g. not authorised by the ACL)
            self.counters.add("failed")
            self._rlog.warning("refused", "%s: the broker refused a message: %s; dropped from the outbox",
                               self.device, reason_code)
            self.outbox.ack(oid)
            self.counters.set("queued", len(self.outbox))
        else:
            self._delivered(oid)
        self._wake.set()

    def _delivered(self, oid: int) -> None:
        if self.outbox.ack(oid):
            self.counters.add("delivered")
        self.counters.set("queued", len(self.outbox))

    # ------------------------------------------------------------------ receiving
    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            name: str | None = message.topic
        except UnicodeDecodeError:
            name = None
        self._inbox.put(_Arrival(self._generation, name, message.payload, message.mid, message.qos,
                                  bool(message.retain)))

    def _run_delivery(self) -> None:
        """Delivery thread: each arrival through the dispatcher, then acknowledge it or, if its handler
        failed, schedule a reconnect so the broker sends it again."""
        while not self._stopping.is_set():
            try:
                arrival = self._inbox.get(timeout=0.1)
            except queue.Empty:
                arrival = None
            if arrival is not None:
                if self._dispatcher.handle(arrival.topic, arrival.payload, arrival.retained):
                    self._ack(arrival)
                else:
                    self._schedule_redelivery()
            if self._redeliver_at is not None and time.monotonic() >= self._redeliver_at:
                self._redeliver_at = None
                self._reconnect_for_redelivery()

    def _schedule_redelivery(self) -> None:
        """Reconnect after ``redeliver_after`` s, doubling (up to 30 s) while failures go on, so a message
        that always fails costs a reconnect every 30 s, not a storm."""
        now = time.monotonic()
        if self._redeliver_at is not None:
            return
        if now - self._last_failure > 60.0:  # a new failure, not one that persists
            self._redeliver_delay = self.redeliver_after
        self._last_failure = now
        self._redeliver_at = now + self._redeliver_delay
        self._redeliver_delay = min(self._redeliver_delay * 2, 30.0)

    def _ack(self, arrival: _Arrival) -> None:
        """Acknowledge on the connection the message came on; after a reconnect the broker redelivers it
        and the de-duplicator drops (and acknowledges) the copy."""
        if arrival.qos == 0 or arrival.generation != self._generation or not self._connected.is_set():
            return
        self._client.ack(arrival.mid, arrival.qos)

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
  duplicates by (``source``, ``seq``) under ``duplicate``; neither reaches the handler.
* ``seq()`` hands out this source's next sequence number (monotonic, also across restarts).
* ``start()`` connects (retrying with backoff in the background) and publishes a retained ``online`` status;
  the last will is a retained ``offline``; ``stop()`` publishes ``stopped``, flushes and disconnects.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from wire.topics import Kind, TopicInfo

Handler = Callable[[TopicInfo, BaseModel], None]

COUNTER_NAMES = ("received", "rejected", "duplicate", "failed", "published", "queued", "delivered")


@dataclass
class Counters:
    """Message counters of one transport; ``queued`` is the outbox's current size, the rest are totals."""

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

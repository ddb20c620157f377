"""The store clock: one time base for every capture time in the store.

Fusion orders everything by the capture times the edge devices stamp (event time, never its own wall
clock), so the devices' clocks must agree: a camera 30 ms off shifts a walking shopper by 4 cm against the
other cameras, and its frames land on the wrong side of the others'.  NTP on every edge box is the first
line; this is the second, inside the wire, so a store works with clocks that nobody set:

* fusion publishes a :class:`~wire.messages.ClockMsg` beacon on ``clock/{fusion}`` (QoS 0) every second,
  stamped with its wall clock (:class:`ClockBeacon`);
* every edge device keeps a :class:`StoreClock`: ``offset`` is the largest ``beacon.ts - arrival`` (arrival
  on the device's own clock) among the last ``window`` beacons, i.e. the beacon that travelled fastest.  The
  device's store time is its own clock plus that offset: behind fusion's by the fastest beacon's one-way
  delay (a fraction of a millisecond on a store LAN), the same for every device.  A beacon that was delayed
  (a busy broker, an outbox after a reconnect, a replayed copy) only gives a smaller difference, which the
  maximum ignores; a device that never heard a beacon uses its own clock (offset 0).

Only live capture stamps go through it (camera streams, load-cell readers, the entry gate); recorded
sources keep the times they were recorded with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from wire.messages import ClockMsg
from wire.topics import Kind, TopicInfo
from wire.transport import Transport

log = logging.getLogger(__name__)

BEACON_PERIOD_S = 1.0


class StoreClock:
    """A device's reading of the store clock.  ``local`` is the device's own clock (seconds since the epoch);
    :meth:`now` is the store time.  Thread-safe: beacons arrive on the transport's delivery thread."""

    def __init__(self, local: Callable[[], float] = time.time, window: int = 16):
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.local = local
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self.offset = 0.0
        self.beacons = 0

    @property
    def synced(self) -> bool:
        """At least one beacon heard (before that :meth:`now` is the local clock)."""
        return self._synced.is_set()

    def observe(self, beacon_ts: float, arrived: float) -> float:
        """Fold in one beacon sent at ``beacon_ts`` (store time) that arrived at ``arrived`` (local time);
        returns the new offset."""
        with self._lock:
            first = not self._samples
            self._samples.append(beacon_ts - arrived)
            self.offset = max(self._samples)
            self.beacons += 1
        if first:
            log.info("store clock: first beacon, this device's clock is %+.3f s off the store clock",
                     -self.offset)
        self._synced.set()
        return self.offset

    def now(self) -> float:
        """The store time now."""
        return self.local() + self.offset

    def to_store(self, local_ts: float) -> float:
        """A time read on the device's own clock, on the store clock."""
        return local_ts + self.offset

    def follow(self, transport: Transport) -> StoreClock:
        """Subscribe to the beacons on ``transport`` (before it starts); returns self."""
        transport.subscribe(Kind.CLOCK, self._on_beacon)
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def _on_beacon(self, info: TopicInfo, msg: BaseModel) -> None:
        arrived = self.local()
        if isinstance(msg, ClockMsg):
            self.observe(float(msg.ts), arrived)


class ClockBeacon:
    """Fusion's half: :meth:`beat` publishes a beacon when ``period_s`` has passed since the last one (call
    it from the process's loop), stamped with ``clock`` (the wall clock)."""

    def __init__(self, transport: Transport, period_s: float = BEACON_PERIOD_S,
                 clock: Callable[[], float] = time.time):
        self.transport = transport
        self.period_s = period_s
        self.clock = clock
        self._last = -float("inf")
        self.sent = 0

    def beat(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.period_s * 0.95:
            return False
        self._last = now
        dev = self.transport.device
        self.transport.publish(Kind.CLOCK, dev, ClockMsg(source=dev, seq=self.transport.seq(), ts=self.clock(),
                                                         period_s=self.period_s))
        self.sent += 1
        return True


def start_on_store_clock(transport: Transport, stamped: Iterable[Any] = (), wait_s: float = 3.0,
                         clock: StoreClock | None = None) -> StoreClock:
    """An edge process's start: follow the store clock on ``transport``, start the transport, point each of
    ``stamped`` (frame sources, load-cell readers: anything with a ``clock`` attribute that stamps live
    captures) at the store clock, and wait up to ``wait_s`` for the first beacon, so the first captures are
    already on it (without fusion running they stay on this machine's clock until a beacon comes).  With
    nothing to stamp (recorded sources keep their times) it only starts the transport."""
    stamped = list(stamped)
    clock = clock or StoreClock()
    if not stamped:  # a recording keeps its own times: nothing to wait for
        transport.start()
        return clock
    clock.follow(transport)
    transport.start()
    for s in stamped:
        s.clock = clock.now
    if transport.wait_ready(wait_s) and clock.wait_synced(wait_s):
        log.info("%s: on the store clock (this machine's clock %+.3f s off)", transport.device, -clock.offset)
    else:
        log.info("%s: no store clock beacon within %.0f s (is fusion running?): stamping with this machine's "
                 "clock until one comes", transport.device, wait_s)
    return clock

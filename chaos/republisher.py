"""A chaos republisher between an edge broker (where the devices publish) and the store broker (where fusion
reads): every message is published twice (same bytes, so the same ``source``/``seq``), and a fraction of
them (both copies) only after a random delay, which reorders them against the rest.  ``back_filter`` topics
(the store clock's beacons) go the other way, from the store broker to the edge broker, with the same fault.

Clock skew is not the republisher's job: each device process skews its own clock (:mod:`chaos.device`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import Counter

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)


class Republisher:
    """Subscribes ``topic_filter`` on ``edge`` and republishes to ``store`` (as ``username``) with
    ``copies`` copies of each message; a fraction ``delayed`` of the messages is held back by a uniform
    random delay up to ``max_delay`` seconds."""

    def __init__(self, edge: tuple[str, int], store: tuple[str, int], topic_filter: str, *,
                 username: str | None = None, password: str | None = None, copies: int = 2,
                 delayed: float = 0.1, max_delay: float = 0.3, seed: int = 0, back_filter: str | None = None):
        self.copies, self.delayed, self.max_delay = copies, delayed, max_delay
        self.counters: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, paho.Client, str, bytes, bool]] = []
        self._tie = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        self._out = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-republisher-out-{seed}",
                                protocol=paho.MQTTv5)
        if username:
            self._out.username_pw_set(username, password)
        self._out.max_inflight_messages_set(1000)
        self._out.max_queued_messages_set(0)
        self._out.on_publish = self._on_publish
        self._in = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-republisher-in-{seed}",
                               protocol=paho.MQTTv5)
        self._in.on_message = self._on_message
        self._subscribed = threading.Event()
        self._in.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, 1)
        self._in.on_subscribe = lambda *a: self._subscribed.set()
        self._edge, self._store = edge, store
        self._back: tuple[paho.Client, paho.Client] | None = None
        self._back_filter = back_filter
        if back_filter:  # store -> edge: the same fault on what devices read
            back_in = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-republisher-back-in-{seed}",
                                  protocol=paho.MQTTv5)
            if username:
                back_in.username_pw_set(username, password)
            back_in.on_connect = lambda c, u, f, rc, p: c.subscribe(back_filter, 0)
            back_out = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-republisher-back-out-{seed}",
                                   protocol=paho.MQTTv5)
            back_in.on_message = lambda c, u, m: self._forward(back_out, m, "back_")
            self._back = (back_in, back_out)
        self._thread = threading.Thread(target=self._run_delayed, name="chaos-republisher", daemon=True)

    def start(self, timeout: float = 10.0) -> Republisher:
        self._out.connect(*self._store)
        self._out.loop_start()
        self._in.connect(*self._edge)
        self._in.loop_start()
        if self._back is not None:
            self._back[1].connect(*self._edge)
            self._back[1].loop_start()
            self._back[0].connect(*self._store)
            self._back[0].loop_start()
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("republisher: no SUBACK from the edge broker")
        return self

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        self.counters["acked"] += 1
        if getattr(rc, "is_failure", False):
            self.counters["refused"] += 1

    def _send(self, out: paho.Client, topic: str, payload: bytes, retain: bool) -> None:
        back = "" if out is self._out else "back_"
        info = out.publish(topic, payload, 1 if not back else 0, retain)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self.counters[back + "sent"] += 1
        else:
            self.counters[back + "send_failed"] += 1

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if self._back_filter and paho.topic_matches_sub(self._back_filter, msg.topic):
            return  # a beacon this republisher brought to the edge broker: not sent round again
        self._forward(self._out, msg, "")

    def _forward(self, out: paho.Client, msg: paho.MQTTMessage, prefix: str) -> None:
        self.counters[prefix + "received"] += 1
        topic, payload, retain = msg.topic, bytes(msg.payload), bool(msg.retain)
        with self._cv:  # paho calls back on two threads (edge and store connections)
            late = self._rng.random() < self.delayed
            delays = [self._rng.uniform(0, self.max_delay) for _ in range(self.copies)] if late else []
        if late:
            self.counters[prefix + "delayed"] += 1
            now = time.monotonic()
            with self._cv:
                for d in delays:
                    heapq.heappush(self._heap, (now + d, next(self._tie), out, topic, payload, retain))
                self._cv.notify()
            return
        for _ in range(self.copies):
            self._send(out, topic, payload, retain)

    def _run_delayed(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = (self._heap[0][0] - time.monotonic()) if self._heap else 0.5
                    self._cv.wait(max(0.0, min(wait, 0.5)))
                if self._stop:
                    return
                _, _, out, topic, payload, retain = heapq.heappop(self._heap)
            self._send(out, topic, payload, retain)

    def idle(self) -> bool:
        """Nothing waiting in the delay queue and everything sent was acknowledged."""
        with self._cv:
            empty = not self._heap
        return empty and self.counters["acked"] >= self.counters["sent"]

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        for c in (self._in, self._out, *(self._back or ())):
            c.disconnect()
            c.loop_stop()

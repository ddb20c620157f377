"""A device process for the fault suite: plays one device's (or a few devices') messages of a session through
its own :class:`wire.mqtt.MqttTransport` (its credentials, its outbox, its last will), paced by the session clock.

``python -m chaos.device PLANS.pickle`` (the runner writes a list of :class:`DevicePlan`, one per device).
Protocol on the standard streams: prints ``ready`` once connected; reads ``go W0 T0 SPEED SHIFT`` (session time
``T0`` happens at wall time ``W0``, ``SPEED`` times real time; capture times move by ``SHIFT`` seconds);
publishes each message at ``W0 + (t - T0) / SPEED``; prints ``done N {DEVICE: [CLOCK_ERROR_S, BEACONS]}`` once
every message was acknowledged by the broker (meanwhile each device publishes an ``online`` status every
``status_every`` seconds, as the edge processes do); then keeps its connection (a live device) until ``stop`` or
end of input, when it stops cleanly.  SIGKILL it to kill the device: the broker publishes its last will.  A
device's own clock runs ``skew`` off; like the edge processes it follows the store clock (:mod:`wire.clock`:
fusion's beacons, waited for before ``ready``) and stamps capture times on it.
"""

from __future__ import annotations

import heapq
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chaos.feed import Item, restamp
from wire.clock import StoreClock
from wire.mqtt import MqttTransport
from wire.topics import Kind
from wire.transport import status_message

log = logging.getLogger(__name__)


@dataclass
class DevicePlan:
    store_id: str
    device: str
    kind: str
    host: str
    port: int
    password: str | None
    items: list[Item] = field(default_factory=list)
    skew: float = 0.0  # this device's clock error, seconds (added to every capture time)
    shift: float = 0.0  # session time -> today's clock (whole seconds; the runner sets it before ``go``)
    keepalive: int = 30
    status_every: float = 10.0  # wall seconds between ``online`` statuses, as the edge processes' default


def _transport(plan: DevicePlan) -> MqttTransport:
    return MqttTransport(plan.store_id, plan.device, plan.kind, plan.host, plan.port,
                         username=plan.device if plan.password is not None else None, password=plan.password,
                         keepalive=plan.keepalive, backoff=(0.2, 2.0))


def play(plans: list[DevicePlan], stdin=sys.stdin, stdout=sys.stdout, sync_s: float = 30.0) -> int:
    """Run the devices of ``plans`` in this process (each with its own transport), as described above."""
    transports = {p.device: _transport(p) for p in plans}
    # each device's own clock runs ``skew`` off; like the edge processes it stamps on the store clock
    plans_by = {p.device: p for p in plans}
    clocks = {p.device: StoreClock(_skewed(p.skew)).follow(transports[p.device]) for p in plans}
    for t in transports.values():
        t.start()
    for t in transports.values():
        if not t.wait_ready(60):
            print(f"error: {t.device} not connected after 60 s", file=sys.stderr, flush=True)
            return 2
    for dev, c in clocks.items():
        if not c.wait_synced(sync_s):
            log.warning("%s: no store clock beacon after %.0f s: stamping with its own (skewed) clock", dev,
                        sync_s)
    print("ready", file=stdout, flush=True)
    line = stdin.readline().split()
    if not line or line[0] != "go":
        for t in transports.values():
            t.stop(timeout=2)
        return 0
    w0, t0, speed, shift = float(line[1]), float(line[2]), float(line[3]), float(line[4])
    items = heapq.merge(*([(it.t, i, k, p) for k, it in enumerate(p.items)] for i, p in enumerate(plans)))
    n = 0
    beat = time.monotonic()
    for t_item, _, k, plan in items:
        while (ahead := w0 + (t_item - t0) / speed - time.time()) > 0:
            time.sleep(min(ahead, max(0.0, beat + plans[0].status_every - time.monotonic())))
            beat = _heartbeat(transports, plans, beat)
        beat = _heartbeat(transports, plans, beat)
        t = transports[plan.device]
        it = plan.items[k]
        # read on the device's clock (session time + shift + its skew), then put on the store clock
        t.publish(it.kind, it.key, restamp(it, plan.device, t.seq(), shift, clocks[plan.device].to_store(plan.skew)))
        n += 1
    for t in transports.values():
        while not t.flush(5.0):
            log.info("%s: %d messages not yet acknowledged", t.device, len(t.outbox))
    # how far each device's store time ended up from the true clock (its skew is known here), and beacons heard
    residual = {d: [round(c.to_store(plans_by[d].skew), 6), c.beacons] for d, c in clocks.items()}
    print(f"done {n} {json.dumps(residual)}", file=stdout, flush=True)
    for ln in stdin:
        if ln.strip() == "stop":
            break
    for t in transports.values():
        t.stop(timeout=5)
    return 0


def _skewed(skew: float) -> Callable[[], float]:
    return lambda: time.time() + skew


def _heartbeat(transports: dict[str, MqttTransport], plans: list[DevicePlan], beat: float) -> float:
    """Every ``status_every`` seconds each device publishes a retained ``online`` status with its counters, as
    ``walkout edge camera|shelf|gate`` do (the broker then hears from a quiet device at least that often)."""
    now = time.monotonic()
    if now - beat < plans[0].status_every:
        return beat
    for p in plans:
        t = transports[p.device]
        t.publish(Kind.STATUS, p.device, status_message(p.device, p.kind, "online", t.seq(),
                                                        counters=t.counters.as_dict()))
    return now


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args[0], "rb") as f:
        plans = pickle.load(f)
    return play(plans if isinstance(plans, list) else [plans])


if __name__ == "__main__":
    sys.exit(main())

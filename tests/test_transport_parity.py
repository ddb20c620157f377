"""The in-process bus behaves like the MQTT transport: one scenario (retained messages and their flag, duplicates,
malformed payloads, a failing handler and its redelivery after a reconnect, a clean stop) runs on the bus,
on Mosquitto over MQTT 5 and over MQTT 3.1.1, and the handlers see the same calls and the counters agree."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures_mqtt import RawClient, cart, settle, shelf_event, wait_for
from wire.bus import InProcessBus
from wire.codec import encode
from wire.topics import Kind, topic
from wire.transport import Transport


class BusEnv:
    def __init__(self, store: str, share_models: bool = False):
        self.bus = InProcessBus(store, share_models=share_models)

    def client(self, device: str, kind: str) -> Transport:
        return self.bus.client(device, kind)

    def inject(self, name: str, payload: bytes) -> None:
        self.bus.publish_raw(name, payload)

    def settle(self, *ts: Transport) -> None:
        """Delivery is synchronous: nothing to wait for."""


class MqttEnv:
    def __init__(self, store: str, protocol: int, make: Callable[..., Transport], raw: RawClient):
        self.store, self.protocol, self.make, self.raw = store, protocol, make, raw

    def client(self, device: str, kind: str) -> Transport:
        # redeliver_after: only the explicit stop/start of the scenario redelivers, as on the bus
        return self.make(self.store, device, kind, protocol=self.protocol, redeliver_after=60.0)

    def inject(self, name: str, payload: bytes) -> None:
        self.raw.publish(name, payload)

    def settle(self, *ts: Transport) -> None:
        for t in ts:
            if t.connected:
                assert t.flush(10)
        settle(lambda: [t.counters.as_dict() for t in ts])


def scenario(env: Any, store: str) -> tuple[list[tuple], dict[str, int], dict[str, int]]:
    calls: list[tuple] = []
    fail_once = {"e2"}

    def on_event(info, msg) -> None:
        if msg.event_id in fail_once:
            fail_once.discard(msg.event_id)
            raise RuntimeError("database is locked")  # not acknowledged: comes back after a reconnect
        calls.append(("event", info.key, msg.event_id))

    sub = env.client("fusion", "fusion")
    sub.subscribe(Kind.SHELF_EVENTS, on_event)
    # retained messages are marked as such only when they come from the broker's store (a new subscription)
    sub.subscribe(Kind.CART, lambda info, m: calls.append(("cart", info.key, m.total, info.retained)))
    sub.subscribe(Kind.STATUS, lambda info, m: calls.append(("status", info.key, m.state, info.retained)),
                  key="shelf1")

    pub = env.client("shelf1", "shelf")
    pub.start()  # retained "online"
    assert pub.wait_ready(10)
    pub.publish(Kind.CART, "v1", cart(pub, "v1", 250))  # retained, before the subscriber exists
    env.settle(pub)

    sub.start()
    assert sub.wait_ready(10)
    events = [shelf_event(pub, i) for i in range(4)]
    for e in events:
        pub.publish(Kind.SHELF_EVENTS, "shelf1", e)
    env.settle(pub, sub)
    shelf1 = topic(Kind.SHELF_EVENTS, store, "shelf1")
    env.inject(shelf1, encode(events[1]))  # an exact duplicate
    env.inject(shelf1, b'{"v": 1, "source": "shelf1", "seq": ')  # truncated JSON
    env.inject(topic(Kind.SHELF_EVENTS, store, "shelf2"), encode(events[0]))  # payload of another shelf
    env.settle(pub, sub)

    sub.stop()
    sub.start()  # the failed e2 comes again
    assert sub.wait_ready(10)
    env.settle(pub, sub)
    pub.publish(Kind.CART, "v1", cart(pub, "v1", 300))
    env.settle(pub, sub)
    pub.stop()
    env.settle(sub)
    return calls, sub.counters.as_dict(), pub.counters.as_dict()


EXPECTED_CALLS = [
    ("cart", "v1", 250, True),
    ("status", "shelf1", "online", True),  # retained, in subscription order
    ("event", "shelf1", "e0"),
    ("event", "shelf1", "e1"),
    ("event", "shelf1", "e3"),
    ("event", "shelf1", "e2"),  # redelivered after the reconnect
    ("cart", "v1", 300, False),  # published to a retained topic, delivered live
    ("status", "shelf1", "stopped", False),
]
# received: cart, status, 4 events, duplicate, truncated, wrong shelf, redelivered e2, cart, stopped = 12
EXPECTED_SUB = {
    "received": 12,
    "rejected": 2,
    "duplicate": 1,
    "failed": 1,
    "published": 3,
    "queued": 0,
    "delivered": 3,
}  # online, stopped, online
EXPECTED_PUB = {
    "received": 0,
    "rejected": 0,
    "duplicate": 0,
    "failed": 0,
    "published": 8,
    "queued": 0,
    "delivered": 8,
}  # online, 2 carts, 4 events, stopped


@pytest.mark.parametrize("share_models", [False, True])
def test_bus_runs_the_scenario(store_id: str, share_models: bool) -> None:
    calls, sub, pub = scenario(BusEnv(store_id, share_models), store_id)
    assert calls == EXPECTED_CALLS
    assert sub == EXPECTED_SUB
    assert pub == EXPECTED_PUB


@pytest.mark.parametrize("share_models", [False, True])
def test_a_bus_that_shares_models_delivers_the_published_object(store_id: str, share_models: bool) -> None:
    bus = InProcessBus(store_id, share_models=share_models)
    got: list = []
    sub = bus.client("fusion", "fusion")
    sub.subscribe(Kind.SHELF_EVENTS, lambda info, m: got.append(m))
    sub.start()
    pub = bus.client("shelf1", "shelf")
    pub.start()
    e = shelf_event(pub, 0)
    pub.publish(Kind.SHELF_EVENTS, "shelf1", e)
    bus.publish_raw(topic(Kind.SHELF_EVENTS, store_id, "shelf1"), encode(shelf_event(pub, 1)))  # bytes: decoded
    assert [m.event_id for m in got] == ["e0", "e1"] and got[0] == e
    assert (got[0] is e) == share_models
    assert sub.counters.received == 2 and sub.counters.rejected == 0


@pytest.mark.mosquitto
@pytest.mark.parametrize("protocol", [5, 311])
def test_mqtt_runs_the_same_scenario(
    protocol: int,
    mqtt_broker: tuple[str, int],
    store_id: str,
    transports: Callable[..., Transport],
    raw_client: Callable[..., RawClient],
) -> None:
    env = MqttEnv(store_id, protocol, transports, raw_client(*mqtt_broker))
    calls, sub, pub = scenario(env, store_id)
    assert calls == EXPECTED_CALLS
    assert pub == EXPECTED_PUB
    if protocol == 5:
        assert sub == EXPECTED_SUB
    else:
        # MQTT 3.1.1 has no "retained only for new subscriptions": re-subscribing after the reconnect
        # brings the retained cart and status again, and both are dropped as exact duplicates.
        assert sub == {**EXPECTED_SUB, "received": 14, "duplicate": 3}


def test_bus_handler_publishing_is_delivered_after_the_current_message(store_id: str) -> None:
    bus = InProcessBus(store_id)
    order: list[str] = []
    fusion = bus.client("fusion", "fusion")

    def on_event(info, msg) -> None:
        order.append(f"event {msg.event_id}")
        fusion.publish(Kind.CART, "v1", cart(fusion, "v1", 100))
        order.append(f"published cart for {msg.event_id}")

    fusion.subscribe(Kind.SHELF_EVENTS, on_event)
    fusion.subscribe(Kind.CART, lambda info, m: order.append(f"cart {m.total}"))
    fusion.start()
    shelf = bus.client("shelf1", "shelf")
    shelf.start()
    for i in range(2):
        shelf.publish(Kind.SHELF_EVENTS, "shelf1", shelf_event(shelf, i))
    assert order == [
        "event e0",
        "published cart for e0",
        "cart 100",
        "event e1",
        "published cart for e1",
        "cart 100",
    ]
    assert fusion.counters.as_dict()["delivered"] == 3  # online + 2 carts


def test_bus_kill_leaves_the_retained_last_will(store_id: str) -> None:
    bus = InProcessBus(store_id)
    cam = bus.client("cam1", "camera")
    cam.start()
    cam.kill()
    late = bus.client("ops", "ops")
    states: list[str] = []
    late.subscribe(Kind.STATUS, lambda info, m: states.append(m.state), key="cam1")
    late.start()
    assert states == ["offline"]
    assert not cam.connected


def test_bus_queues_for_a_stopped_subscriber_and_holds_publishes_until_start(store_id: str) -> None:
    bus = InProcessBus(store_id)
    got: list[str] = []
    sub = bus.client("fusion", "fusion")
    sub.subscribe(Kind.SHELF_EVENTS, lambda info, m: got.append(m.event_id))
    sub.start()
    sub.stop()
    pub = bus.client("shelf1", "shelf")
    pub.publish(Kind.SHELF_EVENTS, "shelf1", shelf_event(pub, 0))  # not started: waits in the outbox
    assert pub.counters.queued == 1 and not pub.flush(0.01)
    pub.start()
    assert pub.flush(0.01) and got == []  # queued in the stopped subscriber's session
    sub.start()
    wait_for(lambda: got == ["e0"], 1, "the queued event")


def test_bus_counts_malformed_payloads_and_logs_them_rate_limited(
    store_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = InProcessBus(store_id)
    sub = bus.client("fusion", "fusion")
    got: list[str] = []
    sub.subscribe(Kind.SHELF_EVENTS, lambda info, m: got.append(m.event_id))
    sub.start()
    name = topic(Kind.SHELF_EVENTS, store_id, "shelf1")
    with caplog.at_level("WARNING", logger="wire.transport"):
        for i in range(50):
            bus.publish_raw(name, b'{"v": 1, "seq": %d' % i)
    pub = bus.client("shelf1", "shelf")
    pub.start()
    pub.publish(Kind.SHELF_EVENTS, "shelf1", shelf_event(pub, 0))
    assert sub.counters.rejected == 50 and got == ["e0"]  # the transport goes on
    warnings = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(warnings) == 1 and name in warnings[0].getMessage()


def test_bus_publishing_from_threads_delivers_each_message_once(store_id: str) -> None:
    bus = InProcessBus(store_id)
    sub = bus.client("fusion", "fusion")
    got: list[int] = []
    sub.subscribe(Kind.SHELF_EVENTS, lambda info, m: got.append(m.seq))
    sub.start()
    pub = bus.client("shelf1", "shelf")
    pub.start()
    sent = [shelf_event(pub, i) for i in range(400)]

    def send(part: list) -> None:
        for e in part:
            pub.publish(Kind.SHELF_EVENTS, "shelf1", e)

    threads = [threading.Thread(target=send, args=(sent[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(e.seq for e in sent)
    assert pub.counters.delivered == 401 and pub.counters.queued == 0 and sub.counters.duplicate == 0

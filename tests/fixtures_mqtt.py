"""Fixtures for the wire's transports: the system Mosquitto, test-owned brokers, transports that stop
themselves, raw MQTT clients, and a poll-until helper.  Registered in ``tests/conftest.py``."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from wire.broker import MosquittoProcess, broker_answers
from wire.messages import CartLine, CartSnapshotMsg, LaneDelta, ShelfEventMsg
from wire.mqtt import MqttTransport
from wire.transport import Transport

ROOT = Path(__file__).resolve().parents[1]
TEST_CONF = ROOT / "deploy" / "mosquitto" / "test.conf"
SYSTEM_BROKER = ("127.0.0.1", 1883)
FAST = {"backoff": (0.05, 0.5)}  # reconnect quickly in tests


def shelf_event(t: Transport, i: int, shelf: str | None = None) -> ShelfEventMsg:
    """A valid pick event ``e{i}`` from ``t`` (its device is the shelf unless ``shelf`` is given)."""
    now = time.time()
    return ShelfEventMsg(
        source=t.device,
        seq=t.seq(),
        ts=now,
        shelf=shelf or t.device,
        event_id=f"e{i}",
        action="pick",
        t_start=now,
        t_end=now,
        lanes=[LaneDelta(lane="l1", delta_g=-120.0)],
        delta_g=-120.0,
    )


def cart(t: Transport, visit: str, unit_price: int, qty: int = 1) -> CartSnapshotMsg:
    """A valid open cart snapshot of ``visit`` with one line."""
    now = time.time()
    line = CartLine(
        line_id="l1", kind="pick", sku="sku1", qty=qty, unit_price=unit_price, amount=qty * unit_price, t=now
    )
    return CartSnapshotMsg(
        source=t.device,
        seq=t.seq(),
        ts=now,
        visit=visit,
        account="acct1",
        state="open",
        lines=[line],
        total=line.amount,
    )


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``cond`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def settle(counters_of: Callable[[], object], quiet: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until ``counters_of()`` stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = counters_of(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = counters_of()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError(f"counters kept changing for {timeout} s: {last}")


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The system Mosquitto on 127.0.0.1:1883 (use a unique store id per test)."""
    if not broker_answers(*SYSTEM_BROKER):
        pytest.fail("these tests need Mosquitto on 127.0.0.1:1883: install it and run scripts/services.sh")
    return SYSTEM_BROKER


@pytest.fixture
def store_id() -> str:
    """A store id no earlier run used, so topics and client ids are fresh on the shared broker."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A test-owned Mosquitto (crash-safe persistence, deliberate queue limit) on a free port."""
    if not shutil.which("mosquitto"):
        pytest.fail(
            "this test restarts a broker of its own and needs the `mosquitto` binary (apt install mosquitto)"
        )
    broker = MosquittoProcess(TEST_CONF, workdir=tmp_path / "broker")
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def transports() -> Iterator[Callable[..., MqttTransport]]:
    """Factory of MqttTransports (quick reconnects) that are all stopped at teardown."""
    made: list[MqttTransport] = []

    def make(
        store: str,
        device: str,
        kind: str = "other",
        host: str = "127.0.0.1",
        port: int = 1883,
        **options: object,
    ) -> MqttTransport:
        t = MqttTransport(store, device, kind, host, port, **{**FAST, **options})  # type: ignore[arg-type]
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop(timeout=1.0)


class RawClient:
    """A plain paho client: publishes raw bytes and records what it receives (topic, payload, retain)."""

    def __init__(self, host: str, port: int, client_id: str = ""):
        self.received: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self._subacked = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subacked.set()
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, msg.payload, bool(msg.retain)))

    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.received)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK."""
        self._subacked.clear()
        self.client.subscribe(topic_filter, qos)
        if not self._subacked.wait(5):
            raise AssertionError(f"no SUBACK for {topic_filter}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw_client() -> Iterator[Callable[[str, int], RawClient]]:
    made: list[RawClient] = []

    def make(host: str = "127.0.0.1", port: int = 1883) -> RawClient:
        c = RawClient(host, port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()

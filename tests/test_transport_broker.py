"""open_bus picks the broker that answers, else an embedded Mosquitto, else the in-process bus, and says
which; MosquittoProcess runs, restarts and kills a private broker and refuses configs it would clash with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures_mqtt import shelf_event, wait_for
from wire import broker as broker_module
from wire.broker import (
    EMBEDDED_CONF,
    MosquittoError,
    MosquittoProcess,
    broker_answers,
    close_embedded,
    free_port,
    open_bus,
)
from wire.bus import BusClient
from wire.mqtt import MqttTransport
from wire.topics import Kind
from wire.transport import Transport


@pytest.fixture
def opened() -> Iterator[list[Transport]]:
    made: list[Transport] = []
    yield made
    for t in made:
        t.stop(timeout=1.0)
    close_embedded()


def round_trip(pub: Transport, sub: Transport) -> list[str]:
    got: list[str] = []
    sub.subscribe(Kind.SHELF_EVENTS, lambda info, m: got.append(m.event_id))
    sub.start()
    assert sub.wait_ready(10)
    pub.start()
    pub.publish(Kind.SHELF_EVENTS, pub.device, shelf_event(pub, 0))
    wait_for(lambda: got, 10, "the event")
    return got


@pytest.mark.mosquitto
def test_open_bus_uses_the_broker_that_answers(
    mosquitto: MosquittoProcess, store_id: str, opened: list[Transport]
) -> None:
    t = open_bus(store_id, "shelf1", "shelf", mosquitto.host, mosquitto.port)
    opened.append(t)
    assert isinstance(t, MqttTransport) and t.description.startswith(f"mqtt://127.0.0.1:{mosquitto.port} ")
    assert "embedded" not in t.description


@pytest.mark.mosquitto
def test_open_bus_starts_an_embedded_mosquitto_when_nothing_answers(
    store_id: str, opened: list[Transport]
) -> None:
    port = free_port()
    pub = open_bus(store_id, "shelf1", "shelf", port=port)
    sub = open_bus(store_id, "fusion", "fusion", port=port)
    opened += [pub, sub]
    assert isinstance(pub, MqttTransport) and "embedded mosquitto" in pub.description
    assert (pub.host, pub.port) == (sub.host, sub.port) != ("127.0.0.1", port)  # one broker per process
    assert round_trip(pub, sub) == ["e0"]
    embedded_port = pub.port
    for t in (pub, sub):
        t.stop()
    close_embedded()
    assert not broker_answers("127.0.0.1", embedded_port)


def test_open_bus_falls_back_to_the_in_process_bus_without_mosquitto(
    store_id: str, opened: list[Transport], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(broker_module.shutil, "which", lambda name: None)
    port = free_port()
    with caplog.at_level("WARNING", logger="wire.broker"):
        pub = open_bus(store_id, "shelf1", "shelf", port=port, backoff=(0.1, 1.0))  # MQTT-only option ignored
        sub = open_bus(store_id, "fusion", "fusion", port=port)
    opened += [pub, sub]
    assert isinstance(pub, BusClient) and pub.description.startswith("in-process bus")
    assert "in-process bus" in caplog.text
    assert round_trip(pub, sub) == ["e0"]  # the two share one bus


def test_open_bus_without_fallbacks_says_nothing_answers(store_id: str) -> None:
    port = free_port()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        open_bus(store_id, "shelf1", port=port, allow_embedded=False)


@pytest.mark.mosquitto
def test_mosquitto_process_stop_kill_restart(tmp_path: Path) -> None:
    broker = MosquittoProcess(EMBEDDED_CONF, workdir=tmp_path / "b")
    try:
        broker.start()
        assert broker.running and broker_answers(broker.host, broker.port)
        broker.restart()
        assert broker_answers(broker.host, broker.port)
        broker.kill()
        assert not broker.running and not broker_answers(broker.host, broker.port)
        broker.start()
        broker.stop()
        assert (tmp_path / "b" / "mosquitto.db").exists()  # saved on SIGTERM
        assert "listener" in broker.conf_path.read_text() and "running" in broker.log_tail()
    finally:
        broker.close()
    assert (tmp_path / "b").exists()  # a folder it did not create is kept


@pytest.mark.parametrize(
    "line", ["listener 1884", "persistence_location /tmp/x", "user mosquitto", "log_dest stdout"]
)
def test_mosquitto_process_refuses_a_base_config_with_keys_it_sets(tmp_path: Path, line: str) -> None:
    conf = tmp_path / "base.conf"
    conf.write_text("allow_anonymous true\n" + line + "\n")
    with pytest.raises(MosquittoError, match=rf"base.conf:2: {line.split()[0]}: set by MosquittoProcess"):
        MosquittoProcess(conf, workdir=tmp_path / "b")


@pytest.mark.mosquitto
def test_mosquitto_process_reports_a_broker_that_does_not_start(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("no_such_option 1\n")
    broker = MosquittoProcess(conf, workdir=tmp_path / "b")
    with pytest.raises(MosquittoError, match="mosquitto exited"):
        broker.start(timeout=5)
    broker.close()

"""MqttTransport against a real Mosquitto: outbox while the broker is away, last will on SIGKILL,
redelivery of messages whose handler raised, exact counters, a file outbox across a restart, a broker
killed with SIGKILL, and bad input that must not escape."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures_mqtt import ROOT, RawClient, settle, shelf_event, wait_for
from wire.broker import MosquittoProcess, MosquittoSettings, free_port
from wire.codec import WireError, decode, encode
from wire.messages import StatusMsg
from wire.mqtt import MqttTransport, TlsFiles
from wire.outbox import Outbox
from wire.topics import Kind, subscription, topic

pytestmark = pytest.mark.mosquitto

Make = Callable[..., MqttTransport]


def recorder(t: MqttTransport, kind: Kind = Kind.SHELF_EVENTS, key: str = "+") -> list[tuple[str, int]]:
    """Subscribe ``t`` to ``kind`` and collect (source, seq) of what its handler gets."""
    got: list[tuple[str, int]] = []
    t.subscribe(kind, lambda info, m: got.append((m.source, m.seq)), key)
    return got


def test_publisher_started_while_the_broker_is_down_delivers_everything_once_it_is_up(
    mosquitto: MosquittoProcess, store_id: str, transports: Make
) -> None:
    sub = transports(store_id, "fusion", "fusion", port=mosquitto.port)
    got = recorder(sub)
    sub.start()
    assert sub.wait_ready(10)
    mosquitto.stop()  # the subscriber's session is saved with the broker's state
    pub = transports(store_id, "shelf1", "shelf", port=mosquitto.port)
    pub.start()
    sent = []
    for i in range(200):
        msg = shelf_event(pub, i)
        sent.append((msg.source, msg.seq))
        pub.publish(Kind.SHELF_EVENTS, "shelf1", msg)
    time.sleep(0.3)  # a few failed connection attempts
    assert not pub.connected and pub.counters.queued == 200 and pub.counters.delivered == 0
    mosquitto.start()
    assert pub.flush(20), f"{len(pub.outbox)} messages still unacknowledged"
    wait_for(lambda: len(got) >= 200, 20, "the subscriber to get all 200")
    settle(lambda: sub.counters.as_dict())
    assert got == sent  # every message once, in order
    assert pub.counters.as_dict()["delivered"] == 201  # and the "online" status


def test_sigkill_of_a_publisher_leaves_its_retained_last_will(
    mqtt_broker: tuple[str, int], store_id: str, raw_client: Callable[..., RawClient]
) -> None:
    watcher = raw_client(*mqtt_broker)
    watcher.subscribe(subscription(Kind.STATUS, store_id))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers_mqtt_pub",
            "--port",
            str(mqtt_broker[1]),
            "--store",
            store_id,
            "--device",
            "shelf7",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline().strip() == b"connected", proc.stderr.read()  # type: ignore
    finally:
        proc.kill()  # SIGKILL: no goodbye, the broker publishes the will
        proc.wait()

    def states() -> list[str]:
        return [decode(t, p)[1].state for t, p, _ in watcher.messages()]  # type: ignore[attr-defined]

    wait_for(lambda: "offline" in states(), 10, "the last will")
    assert states() == ["online", "offline"]
    late = raw_client(*mqtt_broker)
    late.subscribe(subscription(Kind.STATUS, store_id))
    wait_for(late.messages, 5, "the retained status")
    time.sleep(0.1)
    [(name, payload, retained)] = late.messages()
    info, will = decode(name, payload)
    assert isinstance(will, StatusMsg) and retained
    assert (info.key, will.state, will.kind, will.version, will.config_hash) == (
        "shelf7",
        "offline",
        "shelf",
        "test-1",
        "abc123",
    )


def test_clean_stop_publishes_stopped_with_counters(
    mqtt_broker: tuple[str, int], store_id: str, transports: Make, raw_client: Callable[..., RawClient]
) -> None:
    watcher = raw_client(*mqtt_broker)
    watcher.subscribe(subscription(Kind.STATUS, store_id))
    cam = transports(store_id, "shelf2", "shelf", version="1.2.3", config_hash="h1")
    cam.start()
    assert cam.wait_ready(10)
    for i in range(3):
        cam.publish(Kind.SHELF_EVENTS, "shelf2", shelf_event(cam, i))
    cam.stop()
    wait_for(lambda: len(watcher.messages()) >= 2, 5, "online and stopped")
    time.sleep(0.2)
    msgs = [decode(t, p)[1] for t, p, _ in watcher.messages()]
    assert [m.state for m in msgs] == ["online", "stopped"]  # type: ignore[attr-defined]
    assert msgs[1].version == "1.2.3" and msgs[1].config_hash == "h1"  # type: ignore[attr-defined]
    assert msgs[1].counters["published"] == 4  # type: ignore[attr-defined]  # online and 3 events, so far


@pytest.mark.parametrize("protocol", [5, 311])
def test_a_message_whose_handler_raised_is_redelivered_after_a_reconnect(
    protocol: int, mqtt_broker: tuple[str, int], store_id: str, transports: Make
) -> None:
    handled: list[str] = []
    attempts: list[str] = []

    def handler(info, msg) -> None:
        attempts.append(msg.event_id)
        if msg.event_id == "e2" and attempts.count("e2") == 1:
            raise RuntimeError("commit failed")
        handled.append(msg.event_id)

    sub = transports(store_id, "fusion", "fusion", protocol=protocol, redeliver_after=0.2)
    sub.subscribe(Kind.SHELF_EVENTS, handler)
    sub.start()
    assert sub.wait_ready(10)
    pub = transports(store_id, "shelf1", "shelf", protocol=protocol)
    pub.start()
    for i in range(5):
        pub.publish(Kind.SHELF_EVENTS, "shelf1", shelf_event(pub, i))
    wait_for(lambda: "e2" in handled, 15, "the redelivery of e2")
    settle(lambda: sub.counters.as_dict())
    assert handled == ["e0", "e1", "e3", "e4", "e2"]
    assert attempts == ["e0", "e1", "e2", "e3", "e4", "e2"]
    c = sub.counters.as_dict()
    assert (c["received"], c["failed"], c["duplicate"], c["rejected"]) == (6, 1, 0, 0)


def test_counters_count_every_kind_of_arrival(
    mqtt_broker: tuple[str, int], store_id: str, transports: Make, raw_client: Callable[..., RawClient]
) -> None:
    sub = transports(store_id, "fusion", "fusion")
    got = recorder(sub)
    sub.start()
    assert sub.wait_ready(10)
    pub = transports(store_id, "shelf1", "shelf")
    pub.start()
    events = [shelf_event(pub, i) for i in range(5)]
    for e in events:
        pub.publish(Kind.SHELF_EVENTS, "shelf1", e)
    assert pub.flush(10)
    raw = raw_client(*mqtt_broker)
    name = topic(Kind.SHELF_EVENTS, store_id, "shelf1")
    for payload in (
        encode(events[0]),
        encode(events[4]),  # duplicates
        b"\xff\xfe not utf-8",
        b"[]",
        b'{"v": 1}',
        encode(events[1]).replace(b'"pick"', b'"grab"'),
    ):
        raw.publish(name, payload)
    raw.publish(topic(Kind.SHELF_EVENTS, store_id, "shelf9"), encode(events[2]))  # id mismatch
    wait_for(lambda: sub.counters.received >= 12, 10, "12 arrivals")
    settle(lambda: sub.counters.as_dict())
    assert got == [(e.source, e.seq) for e in events]
    assert sub.counters.as_dict() == {
        "received": 12,
        "rejected": 5,
        "duplicate": 2,
        "failed": 0,
        "published": 1,
        "queued": 0,
        "delivered": 1,
    }
    assert pub.counters.as_dict() == {
        "received": 0,
        "rejected": 0,
        "duplicate": 0,
        "failed": 0,
        "published": 6,
        "queued": 0,
        "delivered": 6,
    }
    assert sub.connected  # nothing of that stopped the transport


def test_file_outbox_keeps_unsent_messages_and_seq_across_a_restart(
    mqtt_broker: tuple[str, int], store_id: str, transports: Make, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    nowhere = free_port()  # nothing listens here
    first = transports(store_id, "shelf1", "shelf", port=nowhere, outbox=Outbox(path))
    first.start()
    sent = []
    for i in range(30):
        msg = shelf_event(first, i)
        sent.append((msg.source, msg.seq))
        first.publish(Kind.SHELF_EVENTS, "shelf1", msg)
    first.stop(timeout=0.2)  # cannot deliver: they stay in the file
    first.outbox.close()
    outbox = Outbox(path)  # the restarted process opens the same file
    assert len(outbox) == 31  # 30 events and "stopped"; "online" is only published on connect
    sub = transports(store_id, "fusion", "fusion")
    got = recorder(sub)
    sub.start()
    assert sub.wait_ready(10)
    second = transports(store_id, "shelf1", "shelf", outbox=outbox)
    assert second.seq() > max(seq for _, seq in sent)
    second.start()
    assert second.flush(10)
    wait_for(lambda: len(got) >= 30, 10, "the 30 events of the first process")
    settle(lambda: sub.counters.as_dict())
    assert got == sent


def test_acknowledged_messages_survive_a_sigkill_of_the_broker(
    mosquitto: MosquittoProcess, store_id: str, transports: Make
) -> None:
    """The test broker saves after every change (deploy/mosquitto/test.conf), so what it acknowledged
    survives a SIGKILL; what is published while it is dead waits in the publisher's outbox."""
    sub = transports(store_id, "fusion", "fusion", port=mosquitto.port)
    got = recorder(sub)
    sub.start()
    assert sub.wait_ready(10)
    sub.stop()  # offline: the broker queues for its session
    pub = transports(store_id, "shelf1", "shelf", port=mosquitto.port)
    pub.start()
    sent = []
    for i in range(200):
        if i == 150:
            assert pub.flush(10)
            time.sleep(0.5)  # let the broker finish saving
            mosquitto.kill()
        msg = shelf_event(pub, i)
        sent.append((msg.source, msg.seq))
        pub.publish(Kind.SHELF_EVENTS, "shelf1", msg)
    mosquitto.start()
    sub.start()
    assert pub.flush(20)
    wait_for(lambda: len(got) >= 200, 20, "all 200 events")
    settle(lambda: sub.counters.as_dict())
    assert len(got) == len(set(got)) == 200 and set(got) == set(sent)


def test_publish_refuses_a_message_that_does_not_fit_its_topic(store_id: str) -> None:
    t = MqttTransport(store_id, "shelf1", "shelf")  # never started: no broker needed
    event = shelf_event(t, 0)
    with pytest.raises(TypeError, match="cart carries CartSnapshotMsg, not ShelfEventMsg"):
        t.publish(Kind.CART, "v1", event)
    with pytest.raises(WireError) as err:
        t.publish(Kind.SHELF_EVENTS, "shelf2", event)
    assert err.value.field == "shelf"
    assert len(t.outbox) == 0 and t.counters.published == 0


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=60)


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[MosquittoProcess, Path]]:
    """A test-owned broker with TLS only, passwords, and an ACL that lets a device publish only on its own
    topics; yields the broker and the CA certificate clients must trust."""
    d = tmp_path / "pki"
    d.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")  # quicker than RSA
    _run(
        "openssl",
        "req",
        "-x509",
        *ec,
        "-keyout",
        d / "ca.key",
        "-out",
        d / "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=walkout test CA",
    )
    _run(
        "openssl",
        "req",
        *ec,
        "-keyout",
        d / "server.key",
        "-out",
        d / "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    )
    _run(
        "openssl",
        "x509",
        "-req",
        "-in",
        d / "server.csr",
        "-CA",
        d / "ca.crt",
        "-CAkey",
        d / "ca.key",
        "-CAcreateserial",
        "-out",
        d / "server.crt",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
    )
    passwd = tmp_path / "passwd"
    _run("mosquitto_passwd", "-c", "-b", passwd, "fusion", "fusion-secret")
    _run("mosquitto_passwd", "-b", passwd, "shelf1", "shelf1-secret")
    acl = tmp_path / "acl"
    acl.write_text(
        "user fusion\ntopic read walkout/v1/#\n\n"
        "pattern write walkout/v1/+/status/%u\npattern write walkout/v1/+/shelf/%u/events\n"
    )
    settings = MosquittoSettings(
        allow_anonymous=False,
        password_file=str(passwd),
        acl_file=str(acl),
        extra=(f"cafile {d / 'ca.crt'}", f"certfile {d / 'server.crt'}", f"keyfile {d / 'server.key'}"),
    )
    broker = MosquittoProcess(settings, workdir=tmp_path / "broker")
    broker.start()
    yield broker, d / "ca.crt"
    broker.close()


def test_passwords_tls_and_the_acl(
    secured_broker: tuple[MosquittoProcess, Path], store_id: str, transports: Make
) -> None:
    broker, ca = secured_broker
    tls = TlsFiles(ca=str(ca))
    sub = transports(
        store_id, "fusion", "fusion", port=broker.port, username="fusion", password="fusion-secret", tls=tls
    )
    got = recorder(sub)
    sub.start()
    assert sub.wait_ready(10)
    pub = transports(
        store_id, "shelf1", "shelf", port=broker.port, username="shelf1", password="shelf1-secret", tls=tls
    )
    pub.start()
    own = shelf_event(pub, 0)
    pub.publish(Kind.SHELF_EVENTS, "shelf1", own)
    pub.publish(Kind.SHELF_EVENTS, "shelf2", shelf_event(pub, 1, shelf="shelf2"))  # not its topic: the ACL
    assert pub.flush(10)
    wait_for(lambda: got, 10, "the permitted event")
    settle(lambda: (sub.counters.as_dict(), pub.counters.as_dict()))
    assert got == [(own.source, own.seq)]
    assert pub.counters.as_dict() == {
        "received": 0,
        "rejected": 0,
        "duplicate": 0,
        "failed": 1,
        "published": 3,
        "queued": 0,
        "delivered": 2,
    }  # online + e0; e1 refused
    wrong = transports(
        store_id, "shelf9", "shelf", port=broker.port, username="shelf1", password="nope", tls=tls
    )
    plain = transports(
        store_id, "shelf8", "shelf", port=broker.port, username="shelf1", password="shelf1-secret"
    )
    wrong.start()
    plain.start()
    time.sleep(1.0)
    assert not wrong.connected and not plain.connected
    for t in (wrong, plain):
        t.stop(timeout=0.1)  # nothing can be delivered

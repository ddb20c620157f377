"""A chain of stores: the store's Mosquitto bridges its business topics to the central broker with the bridge
configuration the project ships (walkout/deploy.py ``Bridge``).  Two brokers on loopback, the link between
them through a proxy the test cuts: the store's receipts reach the central broker exactly once (after
de-duplication by source and seq), and the store keeps settling visits while the link is down, then catches up.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from chaos.broker import DeployedBroker, start_store_broker
from chaos.proxy import TcpProxy
from fusion import store_db
from fusion.service import FusionService, ServiceSettings
from tests.fixtures_db import DbFactory
from tests.fixtures_mqtt import wait_for
from tests.fusion_scene import T0
from tests.helpers_fusion_scene import ACCOUNTS, DECLINING, EXPECTED, scene_messages, scene_store_with_id
from tests.helpers_fusion_service import ledger_with_accounts, publish
from walkout.deploy import Bridge, broker_lines, write_central
from wire.messages import ReceiptMsg
from wire.mqtt import MqttTransport
from wire.topics import Kind

pytestmark = [pytest.mark.mosquitto]


class Collector:
    """A consumer that counts receipts as they arrive, raw and de-duplicated by (source, seq)."""

    def __init__(self, store_id: str, port: int, user: str, password: str, device: str):
        self.raw = 0
        self.unique: dict[tuple[str, int], ReceiptMsg] = {}
        self._lock = threading.Lock()
        self.t = MqttTransport(store_id, device, "other", "127.0.0.1", port, username=user, password=password,
                               backoff=(0.05, 0.5), client_id=f"{device}-{uuid.uuid4().hex[:6]}")
        self.t.dedup = _CountingDedup(self)  # see every copy, de-duplicate here
        self.t._dispatcher.dedup = self.t.dedup  # the dispatcher was built with the default
        self.t.subscribe(Kind.RECEIPT, self._on)
        self.t.start()
        assert self.t.wait_ready(15)

    def _on(self, info: Any, msg: Any) -> None:
        with self._lock:
            self.raw += 1
            self.unique.setdefault((msg.source, msg.seq), msg)

    def visits(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for m in self.unique.values():
                out[m.visit] = out.get(m.visit, 0) + 1
            return out


class _CountingDedup:
    """Lets every copy through (the collector de-duplicates itself, so it can count the copies)."""

    def __init__(self, owner: Collector):
        self.owner = owner

    def add(self, source: str, seq: int) -> bool:
        return True

    def discard(self, source: str, seq: int) -> None:
        pass


def test_receipts_reach_the_central_broker_once_and_the_store_works_while_the_bridge_is_down(
    db_factory: DbFactory, tmp_path: Path
) -> None:
    store_id = "b" + uuid.uuid4().hex[:10]
    store = scene_store_with_id(store_id)
    # the central broker (EMQX in production; a Mosquitto with the same ACL idea here)
    central_dep, central_pw = write_central(tmp_path / "central-etc", [store_id])
    central = DeployedBroker(broker_lines(central_dep), workdir=tmp_path / "central").start()
    link = TcpProxy(("127.0.0.1", central.port)).start()
    bridge_user = f"walkout-{store_id}"
    bridge = Bridge(f"127.0.0.1:{link.port}", store_id, cafile=None, username=bridge_user)
    sb = start_store_broker(store, tmp_path / "store", extra_users={"scene": [("write", f"walkout/v1/{store_id}/#")]},
                            start=False)
    sb.broker = DeployedBroker(broker_lines(sb.deployment) + bridge.lines(central_pw[bridge_user]),
                               workdir=tmp_path / "store" / "broker").start()
    db = db_factory.new()
    fusion_t = MqttTransport(store_id, "fusion", "fusion", "127.0.0.1", sb.port, backoff=(0.05, 0.5),
                             **sb.creds("fusion"))
    service = FusionService(store, db, fusion_t, ledger_with_accounts(db, ACCOUNTS, DECLINING),
                            settings=ServiceSettings(snapshot_every_s=3.0))
    central_ops = Collector(store_id, central.port, "central-ops", central_pw["central-ops"], "central-ops")
    local = Collector(store_id, sb.port, "recorder", sb.passwords["recorder"], "recorder")
    pub = MqttTransport(store_id, "scene", "sim", "127.0.0.1", sb.port, backoff=(0.05, 0.5), **sb.creds("scene"))
    service.start()
    pub.start()
    try:
        assert fusion_t.wait_ready(15) and pub.wait_ready(15)
        msgs = scene_messages(store_id)
        first = [m for m in msgs if m.ts < T0 + 13.0]  # alice has left and been charged by then
        for m in first:
            publish(pub, m)
        wait_for(lambda: len(central_ops.visits()) == 1, 60, "the first receipt at the central broker")

        link.cut()  # the store's uplink goes down
        for m in msgs[len(first):]:
            publish(pub, m)
        assert pub.flush(30)

        def settled() -> bool:
            with db.read() as conn:
                rows = store_db.all_receipts(conn)
            return len(rows) == len(EXPECTED) and all(r.status != "pending" for r in rows)

        wait_for(settled, 60, "every visit settled in the store while the bridge is down")
        wait_for(lambda: len(local.visits()) == len(EXPECTED), 30, "receipts on the store broker")
        assert len(central_ops.visits()) == 1, "nothing crosses a cut link"

        link.resume()  # the bridge reconnects (restart_timeout) and the store broker sends what it queued
        wait_for(lambda: len(central_ops.visits()) == len(EXPECTED), 90, "the central broker to catch up")
        wait_for(lambda: central_ops.raw >= len(EXPECTED), 5, "raw copies")
    finally:
        pub.stop(timeout=2)
        service.stop(timeout=2)
        for c in (central_ops, local):
            c.t.stop(timeout=2)
        link.close()
        sb.close()
        central.close()
    with db.read() as conn:
        in_store = {r.visit for r in store_db.all_receipts(conn)}
    assert set(central_ops.visits()) == in_store
    assert all(n == 1 for n in central_ops.visits().values()), central_ops.visits()  # once, after de-duplication
    assert {m.account: (m.status, m.total) for m in central_ops.unique.values()} == EXPECTED

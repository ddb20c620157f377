"""Scenarios on hostile input, through the deployed broker into running processes: fuzzed payloads on every
topic (fusion, the entry gate and a recorder consume them), fuzzed load-cell lines into the shelf gateway,
fuzzed store descriptions, and the ACL (devices publishing on each other's topics)."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from chaos.broker import StoreBroker, start_store_broker
from chaos.feed import SHELF_DEVICE, SessionFeed, chaos_devices
from chaos.fuzz import (
    PayloadFuzzer,
    check_store_configs,
    expected_counts,
    loadcell_lines,
    small_store,
    valid_message,
)
from chaos.live import ROOT, FusionProc, Watcher, _env
from chaos.scenarios import Row
from edge.shelf.readers import LineReader
from wire.codec import encode
from wire.mqtt import MqttTransport
from wire.topics import Kind, topic

log = logging.getLogger(__name__)

ENTRY_SECRET = "chaos-entry-secret-0123456789abcdef"


class RawPublisher:
    """A plain MQTT 5 client publishing bytes with QoS 1 as ``user``; counts PUBACK reason codes."""

    def __init__(self, port: int, user: str | None, password: str | None, client_id: str | None = None,
                 inflight: int = 100):
        self.acks: dict[str, int] = {}
        self.connected = threading.Event()
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._pending = threading.Semaphore(inflight)
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"chaos-{uuid.uuid4().hex[:8]}",
                             protocol=paho.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.max_inflight_messages_set(inflight)
        self.c.on_connect = self._on_connect
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.refused = str(rc)
        else:
            self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self.acks[str(rc)] = self.acks.get(str(rc), 0) + 1
        self._pending.release()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.refused is None:
            if self.connected.wait(0.05):
                return True
        return False

    def publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        self._pending.acquire()
        info = self.c.publish(name, payload, 1, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self._pending.release()
            raise ConnectionError(f"publish failed: {info.rc}")

    def acked(self) -> int:
        with self._lock:
            return sum(self.acks.values())

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# ------------------------------------------------------------------------------------------------ ACL
def acl_check(feed: SessionFeed, folder: Path) -> Row:
    """Every device tries every other device's topics (and fusion's): the broker must refuse each one
    (MQTT 5 PUBACK "Not authorized") and deliver none; each device's own topics still pass; anonymous and
    wrong-password logins are refused."""
    t0 = time.monotonic()
    store_id = "a" + uuid.uuid4().hex[:10]
    feed = feed.for_store(store_id)
    store = feed.store
    devices = chaos_devices(store)
    sb = start_store_broker(store, folder, devices=devices)
    got: list[str] = []
    listener = RawPublisher(sb.port, "recorder", sb.passwords["recorder"])
    listener.c.on_message = lambda c, u, m: got.append(m.topic)
    listener.wait_connected()
    listener.c.subscribe(f"walkout/v1/{store_id}/#", 1)
    time.sleep(0.3)
    own: dict[str, list[tuple[Kind, str]]] = {}
    for d in devices:
        if d.kind == "camera":
            own[d.id] = [(Kind.TRACKS, k) for k in d.keys]
        elif d.kind == "shelf":
            own[d.id] = [(Kind.SHELF_EVENTS, k) for k in d.keys[:3]] + [(Kind.LOADCELLS, d.keys[0])]
        elif d.kind == "gate":
            own[d.id] = [(Kind.GATE_ENTRY, k) for k in d.keys]
        elif d.kind == "fusion":
            own[d.id] = [(Kind.RECEIPT, "v1"), (Kind.CART, "v1"), (Kind.ACCOUNT, "a1"), (Kind.CLOCK, d.id)]
        else:
            own[d.id] = []
        own[d.id].append((Kind.STATUS, d.id))
    forbidden_sent, allowed_sent = [], []
    pubs = []
    try:
        for d in devices:
            pub = RawPublisher(sb.port, d.id, sb.passwords[d.id])
            pubs.append(pub)
            if not pub.wait_connected():
                raise RuntimeError(f"{d.id} could not log in: {pub.refused}")
            mine = set(own[d.id])
            for other, targets in own.items():
                for kind, key in targets:
                    name = topic(kind, store_id, key)
                    payload = encode(valid_message(kind, key, time.time(), 1, d.id))
                    if (kind, key) in mine or (kind in (Kind.RECEIPT, Kind.CART, Kind.ACCOUNT) and d.kind == "fusion"):
                        if other == d.id:
                            allowed_sent.append(name)
                            pub.publish(name, payload)
                    elif other != d.id:
                        forbidden_sent.append(name)
                        pub.publish(name, payload)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(p.acked() for p in pubs) < len(forbidden_sent) + len(allowed_sent):
            time.sleep(0.05)
        time.sleep(0.5)
        refused = sum(p.acks.get("Not authorized", 0) for p in pubs)
        delivered_forbidden = sum(1 for name in got if name in set(forbidden_sent) - set(allowed_sent))
        delivered_allowed = len({n for n in got if n in set(allowed_sent)})
        anon = RawPublisher(sb.port, None, None)
        bad = RawPublisher(sb.port, devices[0].id, "wrong-password")
        time.sleep(1.0)
        logins_refused = sum(1 for c in (anon, bad) if c.refused is not None and not c.connected.is_set())
        anon.close()
        bad.close()
    finally:
        for p in pubs:
            p.close()
        listener.close()
        sb.close()
    ok = (refused == len(forbidden_sent) and delivered_forbidden == 0 and delivered_allowed == len(set(allowed_sent))
          and logins_refused == 2)
    return Row("ACL", f"{len(devices)} devices publish on each other's topics ({len(forbidden_sent)} tries); "
               "anonymous and wrong-password logins", "every foreign publish refused, none delivered",
               f"refused {refused}/{len(forbidden_sent)} (PUBACK Not authorized), delivered {delivered_forbidden}; "
               f"own topics delivered {delivered_allowed}/{len(set(allowed_sent))}; logins refused {logins_refused}/2",
               ok, {"forbidden": len(forbidden_sent), "refused": refused, "delivered_forbidden": delivered_forbidden,
                    "allowed": len(set(allowed_sent)), "delivered_allowed": delivered_allowed},
               time.monotonic() - t0)


# ------------------------------------------------------------------------------------------------ payloads
class _LineServer:
    """A TCP server the shelf gateway reads load-cell lines from (``socket://127.0.0.1:PORT``)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.sent = threading.Event()
        self._conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        self._conn = conn
        time.sleep(1.0)  # pyserial drops what arrives while it opens the socket
        data = ("\n".join(self.lines) + "\n").encode("utf-8", "surrogatepass")
        for i in range(0, len(data), 1 << 16):
            conn.sendall(data[i:i + (1 << 16)])
        self.sent.set()

    def close(self) -> None:
        for s in (self._conn, self.srv):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def _expected_line_problems(lanes: list[str], lines: list[str]) -> dict[str, int]:
    reader = LineReader("socket://127.0.0.1:9", reconnect=False)
    out: tuple[list, list, list] = ([], [], [])
    for line in lines:
        reader.parse_line(line, time.time(), out)
    return dict(reader.problems)


def _proc(cmd: list[str], log_path: Path, env: dict[str, str], stdin: Any = subprocess.DEVNULL) -> subprocess.Popen:
    with log_path.open("ab") as f:
        return subprocess.Popen(cmd, cwd=ROOT, stdin=stdin, stdout=subprocess.DEVNULL, stderr=f, env=env)


def _last_json(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def payload_fuzz(feed: SessionFeed, folder: Path, per_topic: int, lines: int, seed: int = 0) -> Row:
    """``per_topic`` fuzzed payloads on each topic of the wire, through the deployed broker, each topic
    published by the device the ACL lets publish it, into the running consumers: fusion (tracks, shelf events,
    gate entries, status), the entry gate process (account standings), a recorder (carts, receipts, load
    cells); and ``lines`` fuzzed load-cell lines into the shelf gateway process.  Each consumer must stay up and
    count exactly what its dispatcher says about the payloads (rejects, duplicates)."""
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    store_id = "f" + uuid.uuid4().hex[:10]
    feed = feed.for_store(store_id)
    store = feed.store
    sb: StoreBroker = start_store_broker(store, folder, devices=chaos_devices(store))
    store_yaml = feed.write_store(folder / "store")
    db_url = f"sqlite:///{folder / 'fusion.db'}"
    fusion = FusionProc(store_yaml, db_url, sb.port, sb.passwords["fusion"], folder / "fusion.log")
    gate_id = store.gates[0].id
    cam = store.cameras[0].id
    shelf = next(iter(store.shelves))
    lanes = [ln.id for ln in store.shelves[shelf].lanes]
    env = {**_env(), "WALKOUT_ENTRY_SECRET": ENTRY_SECRET}
    gate = _proc([sys.executable, "-m", "walkout.cli", "edge", "gate", "--store", str(store_yaml), "--gate", gate_id,
                  "--source", "stdin", "--broker", f"127.0.0.1:{sb.port}", "--username", gate_id, "--json",
                  "--status-every", "1"], folder / "gate.log", {**env, "WALKOUT_MQTT_PASSWORD": sb.passwords[gate_id]},
                 stdin=subprocess.PIPE)
    line_list = list(loadcell_lines(lanes, lines, seed))
    server = _LineServer(line_list)
    shelf_gw = _proc([sys.executable, "-m", "walkout.cli", "edge", "shelf", "--source", f"socket://127.0.0.1:{server.port}",
                      "--store", str(store_yaml), "--device", SHELF_DEVICE, "--broker", f"127.0.0.1:{sb.port}",
                      "--username", SHELF_DEVICE, "--json", "--status-every", "1"], folder / "shelf.log",
                     {**env, "WALKOUT_MQTT_PASSWORD": sb.passwords[SHELF_DEVICE]})
    fusion.start()
    watcher = Watcher(store_id, sb.port, sb.creds("recorder"))
    recorder = MqttTransport(store_id, "recorder", "recorder", "127.0.0.1", sb.port, backoff=(0.1, 1.0),
                             client_id=f"walkout-{store_id}-recorder-fuzz", **sb.creds("recorder"))
    for k in (Kind.CART, Kind.RECEIPT, Kind.LOADCELLS):
        recorder.subscribe(k, lambda info, msg: None)
    recorder.start()
    recorder.wait_ready(30)
    time.sleep(2.0)  # the gate's subscription is in place (it prints nothing on stdout until a scan)
    plan = [  # kind, topic id, publishing user, consumer
        (Kind.TRACKS, cam, f"camera-{cam}", "fusion"),
        (Kind.SHELF_EVENTS, shelf, SHELF_DEVICE, "fusion"),
        (Kind.GATE_ENTRY, gate_id, gate_id, "fusion"),
        (Kind.STATUS, f"camera-{cam}", f"camera-{cam}", "fusion"),
        (Kind.ACCOUNT, "acct-fuzz", "fusion", "gate"),
        (Kind.CART, "visit-fuzz", "fusion", "recorder"),
        (Kind.RECEIPT, "visit-fuzz", "fusion", "recorder"),
        (Kind.LOADCELLS, shelf, SHELF_DEVICE, "recorder"),
    ]
    sent: dict[str, list[tuple[str, bytes]]] = {"fusion": [], "gate": [], "recorder": []}
    per_kind: dict[str, dict[str, int]] = {}
    crashed: list[str] = []
    try:
        for kind, key, user, consumer in plan:
            pub = RawPublisher(sb.port, user, sb.passwords[user])
            if not pub.wait_connected():
                raise RuntimeError(f"fuzz publisher {user}: {pub.refused}")
            msgs = list(itertools.islice(PayloadFuzzer(store_id, kind, key, user, seed), per_topic))
            base = _consumer_received(consumer, watcher, recorder)
            for i in range(0, len(msgs), 2000):
                for name, payload in msgs[i:i + 2000]:
                    pub.publish(name, payload)
                n = min(i + 2000, len(msgs))
                _wait_consumer(consumer, watcher, recorder, base + n, sent_rate_s=(n - i) / 3000)
            deadline = time.monotonic() + 60
            while pub.acked() < len(msgs) and time.monotonic() < deadline:
                time.sleep(0.05)
            pub.close()
            sent[consumer] += msgs
            per_kind[kind.value] = {"sent": len(msgs), "refused_by_broker": len(msgs) - pub.acks.get("Success", 0)}
            for name, p in (("fusion", fusion.proc), ("gate", gate), ("shelf gateway", shelf_gw)):
                if p is not None and p.poll() is not None and name not in crashed:
                    crashed.append(name)
        server.sent.wait(120)
        _wait_consumer("fusion", watcher, recorder, -1, settle=True)
        time.sleep(3.0)
    finally:
        for p in (gate, shelf_gw):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        fusion.stop()
        if gate.stdin is not None:
            gate.stdin.close()
        for p in (gate, shelf_gw):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                crashed.append(f"{p.args[4]} did not stop")
                p.kill()
        recorder.stop(timeout=2)
        time.sleep(0.5)
        gate_counters = watcher.last_counters(gate_id)
        watcher.close()
        server.close()
        sb.close()
    # what each consumer should have counted
    fusion_kinds = [Kind.TRACKS, Kind.SHELF_EVENTS, Kind.GATE_ENTRY, Kind.STATUS]
    want = {"fusion": expected_counts(store_id, fusion_kinds, sent["fusion"]),
            "gate": expected_counts(store_id, [Kind.ACCOUNT], sent["gate"]),
            "recorder": expected_counts(store_id, [Kind.CART, Kind.RECEIPT, Kind.LOADCELLS], sent["recorder"])}
    fc = fusion.final_counters
    got = {"fusion": {"rejected": fc.get("transport_rejected", -1), "failed": fc.get("transport_failed", -1)},
           "gate": {"rejected": gate_counters.get("rejected", -1), "failed": gate_counters.get("failed", -1)},
           "recorder": {"rejected": recorder.counters.rejected, "failed": recorder.counters.failed}}
    shelf_summary = _last_json(folder / "shelf.log")
    want_lines = _expected_line_problems(lanes, line_list)
    line_ok = shelf_summary.get("garbled", -1) == want_lines.get("garbled", 0)
    counted = all(got[c]["rejected"] == want[c]["rejected"] and got[c]["failed"] == 0 for c in want)
    total = sum(len(v) for v in sent.values())
    rejected = sum(want[c]["rejected"] for c in want)
    # a payload that passed validation must not poison a consumer's arithmetic (overflow -> inf -> NaN state)
    numeric = {name: _numeric_warnings(folder / f"{name}.log") for name in ("fusion", "gate", "shelf")}
    ok = (not crashed and counted and line_ok and gate.returncode == 0 and shelf_gw.returncode == 0
          and not any(numeric.values()))
    return Row("fuzzed payloads", f"{total:,} payloads ({per_topic:,} on each of {len(plan)} topics) into fusion, "
               f"gate, recorder; {lines:,} load-cell lines into the shelf gateway",
               "0 crashes, every reject counted",
               f"crashes {len(crashed)}; rejects counted fusion {got['fusion']['rejected']}/{want['fusion']['rejected']}, "
               f"gate {got['gate']['rejected']}/{want['gate']['rejected']}, recorder "
               f"{got['recorder']['rejected']}/{want['recorder']['rejected']}; garbled lines "
               f"{shelf_summary.get('garbled', 'n/a')}/{want_lines.get('garbled', 0)}; handler failures "
               f"{sum(max(0, g['failed']) for g in got.values())}; numeric warnings {sum(numeric.values())}",
               ok, {"sent": total, "numeric_warnings": numeric, "rejected_expected": rejected, "want": want,
                    "got": got, "crashed": crashed,
                    "per_kind": per_kind, "shelf_gateway": shelf_summary, "lines_expected": want_lines},
               time.monotonic() - t0)


def _numeric_warnings(path: Path) -> int:
    """numpy's RuntimeWarnings (overflow, invalid value, division by zero) in a process's log."""
    try:
        return path.read_text(errors="replace").count("RuntimeWarning")
    except OSError:
        return 0


def _consumer_received(consumer: str, watcher: Watcher, recorder: MqttTransport) -> int:
    if consumer == "fusion":
        return watcher.fusion_total()
    if consumer == "recorder":
        return recorder.counters.received
    return 0


def _wait_consumer(consumer: str, watcher: Watcher, recorder: MqttTransport, target: int, sent_rate_s: float = 0.0,
                   settle: bool = False, timeout: float = 120.0) -> None:
    """Keep the broker's queue for the consumer short: wait until it took ``target`` messages (fusion: from
    its status counters; the gate: a fixed pace, its transport counters show only at its stop)."""
    deadline = time.monotonic() + timeout
    if consumer == "gate":
        time.sleep(sent_rate_s)
        return
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        # settling: fusion's intake without status messages (its own come every second, forever)
        now = watcher.fusion_received if settle and consumer == "fusion" else _consumer_received(consumer, watcher,
                                                                                                  recorder)
        if not settle and now >= target:
            return
        if now != last:
            last, since = now, time.monotonic()
        elif settle and time.monotonic() - since > 3.0:
            return
        time.sleep(0.1)


def config_fuzz(feed: SessionFeed, n: int, seed: int = 0) -> Row:
    """``n`` fuzzed store descriptions through ``calibration.store.store_from_dict``."""
    t0 = time.monotonic()
    res = check_store_configs(small_store(feed.store_data), n, seed)
    ok = res["crashes"] == 0 and res["configs"] == n
    return Row("fuzzed store configs", f"{n:,} mutated store descriptions", "only ConfigError (file, field, reason)",
               f"rejected {res['rejected']:,} with ConfigError, accepted {res['accepted']:,}, crashes "
               f"{res['crashes']} {res['crash_types'] or ''}".strip(), ok, res, time.monotonic() - t0)

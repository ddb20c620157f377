"""One live run of a session for the fault suite: the store broker as deployed, ``walkout fusion`` as a
subprocess, one process per device (:mod:`chaos.device`), a receipt watcher, and hooks for the faults.

:func:`reference` gives the receipts of the same session through the in-process bus (no broker, no faults):
what every live run is compared with.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.broker import StoreBroker, start_store_broker
from chaos.compare import Outcome, outcome_of
from chaos.device import DevicePlan
from chaos.feed import SessionFeed, chaos_devices, restamp, wall_shift
from chaos.proxy import TcpProxy
from chaos.republisher import Republisher
from fusion.db import Database
from fusion.payments import LedgerGateway
from fusion.service import FusionService, ServiceSettings
from wire.broker import MosquittoProcess, MosquittoSettings
from wire.bus import InProcessBus
from wire.messages import ReceiptMsg, StatusMsg
from wire.mqtt import MqttTransport
from wire.topics import Kind, TopicInfo

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CHAOS_USER = "chaos"


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


# ------------------------------------------------------------------------------------------------ reference
def reference(feed: SessionFeed, folder: Path, snapshot_every: float = 3.0, skew: dict[str, float] | None = None,
              order: list[int] | None = None) -> Outcome:
    """The session through the in-process bus into the real fusion service: no broker, no faults.  ``skew``
    (device -> seconds) and ``order`` (a permutation of the items) replay faults deterministically, to tell a
    live scenario's causes apart."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "reference.db").exists():
        raise RuntimeError(f"{folder / 'reference.db'} exists already (a reference starts on an empty database)")
    db = Database(f"sqlite:///{folder / 'reference.db'}")
    db.migrate()
    bus = InProcessBus(feed.store_id)
    service = FusionService(feed.store, db, bus.client("fusion", "fusion"), LedgerGateway(db, currency="USD"),
                            settings=ServiceSettings(snapshot_every_s=1e9, create_accounts=True))
    service.start()
    clients = {}
    for dev in chaos_devices(feed.store):
        if dev.kind in ("camera", "shelf", "gate"):
            clients[dev.id] = bus.client(dev.id, dev.kind)
            clients[dev.id].start()
    shift = wall_shift(feed.t0)
    seqs = {d: c.seq() for d, c in clients.items()}
    stamped = []
    for it in feed.items:  # numbered in publish order, as the device does
        seqs[it.device] += 1
        stamped.append((it, seqs[it.device]))
    for k in order if order is not None else range(len(stamped)):
        it, seq = stamped[k]
        clients[it.device].publish(it.kind, it.key, restamp(it, it.device, seq, shift, (skew or {}).get(it.device, 0.0)))
    service.stop()
    out = outcome_of(db)
    out.offset = shift + feed.t0
    out.counters = dict(service.status_counters())
    db.dispose()
    return out


# ------------------------------------------------------------------------------------------------ processes
class FusionProc:
    """``walkout fusion`` as a subprocess with the fusion user's password in its environment."""

    def __init__(self, store_yaml_path: Path, db_url: str, port: int, password: str, log_path: Path,
                 snapshot_every: float = 3.0):
        self.cmd = [sys.executable, "-m", "walkout.cli", "fusion", "--store", str(store_yaml_path), "--db", db_url,
                    "--broker", f"127.0.0.1:{port}", "--username", "fusion", "--snapshot-every",
                    str(snapshot_every), "--status-every", "1", "--create-accounts"]
        self.password = password
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.final_counters: dict[str, int] = {}

    def start(self, timeout: float = 90.0) -> float:
        """Start and wait for ``fusion ready``; returns the seconds it took."""
        t = time.monotonic()
        self.spawn()
        self.wait_ready(timeout)
        return time.monotonic() - t

    def spawn(self) -> None:
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=logf,
                                         env={**_env(), "WALKOUT_MQTT_PASSWORD": self.password})
        self.starts += 1

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.startswith(b"fusion ready"):
            self.proc.kill()
            raise RuntimeError(f"fusion did not come up: {line!r}\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for line in reversed(self.log_tail(5).splitlines()):
            if line.startswith("{"):
                try:
                    self.final_counters = json.loads(line)
                except ValueError:
                    pass
                break

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class DeviceProc:
    """A :mod:`chaos.device` subprocess running one or more devices."""

    def __init__(self, name: str, plans: list[DevicePlan], folder: Path):
        self.name = name
        self.plans = plans
        self.plan_path = folder / f"{name}.plans.pickle"
        with self.plan_path.open("wb") as f:
            pickle.dump(plans, f)
        self.log_path = folder / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.published: int | None = None
        self.clocks: dict[str, list[float]] = {}  # device -> [store clock error (s), beacons heard]
        self.killed = False

    def start(self) -> None:
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "chaos.device", str(self.plan_path)], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True,
                                         env=_env())

    def wait_line(self, prefix: str, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith(prefix):
            raise RuntimeError(f"devices {self.name}: expected {prefix!r}, got {line!r}\n"
                               f"{self.log_path.read_text(errors='replace')[-2000:]}")
        return line

    def go(self, w0: float, t0: float, speed: float, shift: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"go {w0!r} {t0!r} {speed!r} {shift!r}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.killed = True

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class Watcher:
    """The recorder's view (read-only user): receipts and device statuses as they are published."""

    def __init__(self, store_id: str, port: int, creds: dict[str, str]):
        self.receipts: list[ReceiptMsg] = []
        self.status: dict[str, list[str]] = {}
        self.counters: dict[str, dict[str, int]] = {}  # device -> counters of its latest status
        self.fusion_received = -1  # messages fusion took in, from its status messages
        self.fusion_progress = time.monotonic()  # when that counter last moved
        self._lock = threading.Lock()
        self.t = MqttTransport(store_id, "recorder", "recorder", "127.0.0.1", port, backoff=(0.1, 1.0),
                               client_id=f"walkout-{store_id}-recorder-{uuid.uuid4().hex[:6]}", **creds)
        self.t.subscribe(Kind.RECEIPT, self._on)
        self.t.subscribe(Kind.STATUS, self._on)
        self.t.start()
        if not self.t.wait_ready(30):
            raise RuntimeError("the watcher did not connect")

    def _on(self, info: TopicInfo, msg: Any) -> None:
        with self._lock:
            if isinstance(msg, ReceiptMsg):
                self.receipts.append(msg)
            elif isinstance(msg, StatusMsg):
                self.status.setdefault(msg.device, []).append(msg.state)
                self.counters[msg.device] = dict(msg.counters)
                if msg.device == "fusion":  # its intake, not counting status messages (its own come every second)
                    got = sum(v for k, v in msg.counters.items()
                              if k.startswith("messages_") and k != "messages_status")
                    got += msg.counters.get("duplicates", 0) + msg.counters.get("transport_rejected", 0)
                    if got != self.fusion_received:
                        self.fusion_received, self.fusion_progress = got, time.monotonic()

    def states(self, device: str) -> list[str]:
        with self._lock:
            return list(self.status.get(device, []))

    def last_counters(self, device: str) -> dict[str, int]:
        with self._lock:
            return dict(self.counters.get(device, {}))

    def fusion_total(self) -> int:
        """Every message fusion's transport received, from its latest status."""
        return int(self.last_counters("fusion").get("transport_received", 0))

    def published(self) -> list[ReceiptMsg]:
        with self._lock:
            return list(self.receipts)

    def close(self) -> None:
        self.t.stop(timeout=2)


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class RunOptions:
    speed: float = 1.0
    db_url: str | None = None  # default: a SQLite file in the run folder
    snapshot_every: float = 3.0
    skew: dict[str, float] = field(default_factory=dict)  # device -> clock error (s)
    proxied: tuple[str, ...] = ()  # devices that reach the broker through a TcpProxy
    republish: dict[str, Any] | None = None  # Republisher options: devices publish to an edge broker
    alone: tuple[str, ...] | None = None  # devices in processes of their own (None: every device)
    catch_up_timeout: float = 180.0
    quiet_s: float = 3.0  # receipts unchanged this long after they are all there: the run is over
    idle_s: float = 20.0  # ... or neither receipts nor fusion's intake moved this long: give up waiting


class LiveRun:
    """Start with :meth:`start`, schedule faults with :meth:`at`, :meth:`play`, read :meth:`result`,
    :meth:`close`.  ``expected_receipts``: how many receipts mean the session is settled (the reference's)."""

    def __init__(self, feed: SessionFeed, folder: Path, expected_receipts: int, opts: RunOptions | None = None):
        self.opts = opts or RunOptions()
        self.store_id = "c" + uuid.uuid4().hex[:10]
        self.feed = feed.for_store(self.store_id)
        self.folder = folder
        self.expected = expected_receipts
        self.actions: list[tuple[float, str, Callable[[], None]]] = []
        self.events: list[tuple[float, str]] = []  # (session time, what happened)
        self.broker: StoreBroker | None = None
        self.edge: MosquittoProcess | None = None
        self.republisher: Republisher | None = None
        self.proxies: dict[str, TcpProxy] = {}
        self.fusion: FusionProc | None = None
        self.devices: dict[str, DeviceProc] = {}
        self.watcher: Watcher | None = None
        self.db_url = self.opts.db_url or f"sqlite:///{folder / 'fusion.db'}"
        self.w0 = self.t0 = self.shift = 0.0
        self.timings: dict[str, float] = {}
        self.busy: list[threading.Thread] = []  # fault threads the run waits for before it is over

    # ------------------------------------------------------------------ setup
    def start(self) -> LiveRun:
        if self.folder.exists():  # a run never starts on another's broker state or database
            raise RuntimeError(f"run folder {self.folder} exists already")
        self.folder.mkdir(parents=True)
        store = self.feed.store
        # the republisher writes what devices publish and carries the store clock's beacons back to them
        prefix = f"walkout/v1/{self.store_id}"
        extra = {CHAOS_USER: [("write", f"{prefix}/#"), ("read", f"{prefix}/clock/#")]}
        self.broker = start_store_broker(store, self.folder, devices=chaos_devices(store), extra_users=extra)
        db = Database(self.db_url)
        db.migrate()
        db.dispose()
        self.fusion = FusionProc(self.feed.write_store(self.folder / "store"), self.db_url, self.broker.port,
                                 self.broker.passwords["fusion"], self.folder / "fusion.log", self.opts.snapshot_every)
        t_fusion = time.monotonic()
        self.fusion.spawn()
        self.watcher = Watcher(self.store_id, self.broker.port, self.broker.creds("recorder"))
        target_port, anonymous = self.broker.port, False
        if self.opts.republish is not None:
            self.edge = MosquittoProcess(MosquittoSettings(), workdir=self.folder / "edge-broker").start()
            self.republisher = Republisher(("127.0.0.1", self.edge.port), ("127.0.0.1", self.broker.port),
                                           f"walkout/v1/{self.store_id}/#", username=CHAOS_USER,
                                           password=self.broker.passwords[CHAOS_USER],
                                           back_filter=f"walkout/v1/{self.store_id}/clock/#",
                                           **self.opts.republish).start()
            target_port, anonymous = self.edge.port, True
        plans = self.feed.devices()
        groups: dict[str, list[DevicePlan]] = {}
        for dev in chaos_devices(store):
            if dev.id not in plans:
                continue
            port = target_port
            if dev.id in self.opts.proxied:
                proxy = TcpProxy(("127.0.0.1", target_port)).start()
                self.proxies[dev.id] = proxy
                port = proxy.port
            plan = DevicePlan(self.store_id, dev.id, dev.kind, "127.0.0.1", port,
                              None if anonymous else self.broker.passwords[dev.id], plans[dev.id],
                              self.opts.skew.get(dev.id, 0.0))
            alone = self.opts.alone is None or dev.id in self.opts.alone or dev.id in self.opts.proxied
            groups.setdefault(dev.id if alone else "devices", []).append(plan)
        for name, group in groups.items():
            self.devices[name] = DeviceProc(name, group, self.folder)
        for d in self.devices.values():
            d.start()
        self.fusion.wait_ready()
        self.timings["fusion_start_s"] = round(time.monotonic() - t_fusion, 2)
        for d in self.devices.values():
            d.wait_line("ready", 90)
        return self

    def at(self, t: float, what: str, action: Callable[[], None]) -> None:
        """Run ``action`` at session time ``t`` (seconds from the session's first message)."""
        self.actions.append((t, what, action))

    def in_background(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` in a thread the run waits for (a fault that goes on while the session plays)."""
        t = threading.Thread(target=fn, name=name, daemon=True)
        self.busy.append(t)
        t.start()

    def rel(self, ts: float) -> float:
        """A capture time of this run as session time (seconds from the first message)."""
        return ts - self.shift - self.t0

    def session_now(self) -> float:
        return (time.time() - self.w0) * self.opts.speed

    # ------------------------------------------------------------------ run
    def play(self) -> None:
        """Release the devices, run the scheduled faults, wait until every device delivered its messages and
        fusion settled the visits (``expected`` receipts, then ``quiet_s`` without change)."""
        self.t0 = self.feed.t0
        self.shift = wall_shift(self.t0)
        self.w0 = self.t0 + self.shift
        for d in self.devices.values():
            d.go(self.w0, self.t0, self.opts.speed, self.shift)
        for t, what, action in sorted(self.actions, key=lambda a: a[0]):
            ahead = self.w0 + t / self.opts.speed - time.time()
            if ahead > 0:
                time.sleep(ahead)
            self.events.append((round(self.session_now(), 2), what))
            action()
        deadline = time.monotonic() + (self.feed.t1 - self.t0) / self.opts.speed + self.opts.catch_up_timeout
        for d in self.devices.values():
            if d.killed:
                continue
            line = d.wait_line("done", max(1.0, deadline - time.monotonic()))
            _, count, *rest = line.split(maxsplit=2)
            d.published = int(count)
            d.clocks = json.loads(rest[0]) if rest else {}
        self.timings["devices_done_s"] = round(self.session_now() / self.opts.speed, 2)
        self.wait_settled(deadline)

    def wait_settled(self, deadline: float) -> bool:
        """Wait for the expected receipts (then ``quiet_s`` without change); give up at ``deadline`` or when
        nothing moved for ``idle_s`` (a visit that never settles)."""
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            out = self.db_outcome()
            key = (len(out.receipts), out.pending, len(self.watcher.published()) if self.watcher else 0)
            if key != last:
                last, since = key, time.monotonic()
            busy = any(t.is_alive() for t in self.busy)
            progress = max(since, self.watcher.fusion_progress if self.watcher else since)
            if not busy and time.monotonic() - progress > self.opts.idle_s:
                break
            if (len(out.receipts) >= self.expected and not out.pending and not busy
                    and time.monotonic() - since >= self.opts.quiet_s
                    and (self.republisher is None or self.republisher.idle())):
                self.timings["settled_s"] = round(self.session_now() / self.opts.speed, 2)
                return True
            time.sleep(0.2)
        log.warning("run %s: not settled before the deadline (%s receipts of %d)", self.store_id,
                    last[0] if last else 0, self.expected)
        return False

    def db_outcome(self) -> Outcome:
        db = Database(self.db_url)
        try:
            return outcome_of(db)
        finally:
            db.dispose()

    def result(self) -> Outcome:
        out = self.db_outcome()
        out.offset = self.shift + self.t0
        out.published = self.watcher.published() if self.watcher else []
        out.counters = dict(self.fusion.final_counters) if self.fusion else {}
        return out

    # ------------------------------------------------------------------ teardown
    def stop_fusion(self) -> None:
        if self.fusion is not None:
            self.fusion.stop()

    def close(self) -> None:
        for d in self.devices.values():
            d.stop()
        if self.fusion is not None:
            self.fusion.stop()
        if self.watcher is not None:
            self.watcher.close()
        if self.republisher is not None:
            self.republisher.close()
        for p in self.proxies.values():
            p.close()
        if self.edge is not None:
            self.edge.close()
        if self.broker is not None:
            self.broker.close()

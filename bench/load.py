"""Load bench: a big store's traffic through the deployed broker into ``walkout fusion`` for minutes on end.

    python -m bench.load [--minutes 10] [--cameras 32] [--fps 15] [--lanes 500] [--shoppers 40] [--json]

* The store: ``--lanes`` lanes (shelf units of 4 shelves x 5 lanes in a grid), ``--cameras`` ceiling cameras in
  a grid over the floor (each sees its tile and a margin), one entry gate, one exit.
* The traffic, live (capture time = now): ``--shoppers`` shoppers in the store at any time, each scanning in at
  the gate, walking to a lane, reaching into it (wrist rays toward the lane), taking one item (a shelf event of
  that lane), walking to a second lane and taking another, and leaving through the exit; every camera publishes
  a track message per frame (``--fps``) with the shoppers on its tile, empty or not.  One generator process
  publishes for every device (raw MQTT, QoS 1; a ``bench`` user the ACL lets write the store's topics).
* The broker: the configuration the project ships (:mod:`walkout.deploy`: passwords, ACL, persistence, limits),
  test-owned, on a free port.  Fusion: ``walkout fusion`` as a subprocess (SQLite, or ``--db``), with its
  Prometheus metrics scraped every ``--sample-s`` seconds.

Printed: throughput (published and fused messages/s), backlog over time (messages published and not yet taken
in by fusion, and fusion's event-time lag behind the wall clock: both must stay flat), exit -> receipt
latency (p50, p99: wall time a receipt reaches a subscriber minus the shopper's exit), and memory over time
(fusion's and the broker's RSS: must stay flat), with a verdict on flatness from a linear fit over the second
half of the run.  ``--json``: one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from calibration.store import Store, store_from_dict
from chaos.broker import start_store_broker
from chaos.live import FusionProc, Watcher
from walkout.deploy import Device
from wire.broker import free_port
from wire.topics import Kind

log = logging.getLogger("bench.load")

LANE_W, UNIT_D, AISLE = 0.4, 0.6, 2.4
CAM_H = 3.2


# ------------------------------------------------------------------------------------------------ the store
def big_store(store_id: str, lanes: int) -> dict[str, Any]:
    """A store description with ``lanes`` lanes: units of 4 shelves x 5 lanes in rows along x."""
    units = math.ceil(lanes / 20)
    per_row = max(1, math.ceil(math.sqrt(units * 2)))
    rows = math.ceil(units / per_row)
    unit_w = 5 * LANE_W
    size_x = 2.0 + per_row * (unit_w + 1.0) + 2.0
    size_y = 2.0 + rows * (UNIT_D + AISLE) + 1.0
    catalogue = [{"sku": f"P{i:03d}", "name": f"Product {i}", "price": 99 + 10 * (i % 40),
                  "weight_g": 150.0 + 7 * i, "weight_sd_g": 2.0} for i in range(50)]
    shelf_units, n = [], 0
    for u in range(units):
        r, c = divmod(u, per_row)
        x0 = 2.0 + c * (unit_w + 1.0)
        y0 = 2.0 + AISLE + r * (UNIT_D + AISLE)
        shelves = []
        for s in range(4):
            z0 = 0.3 + 0.4 * s
            lanes_s = []
            for k in range(5):
                if n >= lanes:
                    break
                lanes_s.append({"id": f"L{n:04d}", "sku": f"P{n % 50:03d}",
                                "box": {"min": [x0 + k * LANE_W, y0, z0], "max": [x0 + (k + 1) * LANE_W, y0 + UNIT_D,
                                                                                  z0 + 0.3]}})
                n += 1
            if lanes_s:
                shelves.append({"id": f"U{u:02d}-S{s}", "lanes": lanes_s})
        if shelves:
            shelf_units.append({"id": f"U{u:02d}", "shelves": shelves})
    return {
        "store": {"id": store_id, "name": "load bench store", "size": [round(size_x, 2), round(size_y, 2)]},
        "catalogue": catalogue,
        "shelf_units": shelf_units,
        "gates": [{"id": "gate-1", "region": {"min": [0.0, 0.0], "max": [1.2, 1.2]}}],
        "exits": [{"id": "exit-1", "region": {"min": [round(size_x - 1.2, 2), 0.0], "max": [round(size_x, 2), 1.2]}}],
    }


@dataclass
class CameraTile:
    id: str
    lo: np.ndarray  # floor rectangle it sees (with the margin)
    hi: np.ndarray
    origin: np.ndarray  # camera centre, store frame


def camera_grid(size: tuple[float, float], n: int, margin: float = 0.75) -> list[CameraTile]:
    nx = max(1, round(math.sqrt(n * size[0] / size[1])))
    ny = math.ceil(n / nx)
    tiles = []
    for i in range(n):
        cx, cy = i % nx, i // nx
        w, h = size[0] / nx, size[1] / ny
        lo = np.array([cx * w - margin, cy * h - margin])
        hi = np.array([(cx + 1) * w + margin, (cy + 1) * h + margin])
        tiles.append(CameraTile(f"c{i:02d}", lo, hi, np.array([(cx + 0.5) * w, (cy + 0.5) * h, CAM_H])))
    return tiles


# ------------------------------------------------------------------------------------------------ shoppers
@dataclass
class Shopper:
    n: int
    account: str
    path: list[tuple[float, float, float]]  # (t, x, y) waypoints, wall time
    reaches: list[tuple[float, float, np.ndarray, str]]  # (t0, t1, lane centre, lane id)
    exit_t: float
    track_ids: dict[str, int] = field(default_factory=dict)

    def at(self, t: float) -> np.ndarray | None:
        w = self.path
        if t < w[0][0] or t > w[-1][0]:
            return None
        for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(w):
            if t0 <= t <= t1:
                k = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return np.array([x0 + k * (x1 - x0), y0 + k * (y1 - y0)])
        return None


class Population:
    """Shoppers arriving so that about ``target`` are in the store; each takes two items and leaves."""

    def __init__(self, store: Store, target: int, seed: int = 0, walk_mps: float = 1.1):
        self.store = store
        self.rng = random.Random(seed)
        self.target = target
        self.walk = walk_mps
        self.lanes = list(store.lanes.values())
        g = store.gates[0].region
        x = store.exits[0].region
        self.gate = np.array([(g.min[0] + g.max[0]) / 2, (g.min[1] + g.max[1]) / 2])
        self.exit = np.array([(x.min[0] + x.max[0]) / 2, (x.min[1] + x.max[1]) / 2])
        self.active: list[Shopper] = []
        self.count = 0
        self.visit_s = 0.0

    def _front(self, lane: Any) -> np.ndarray:
        b = lane.box
        return np.array([(b.min[0] + b.max[0]) / 2, b.min[1] - 0.55])

    def spawn(self, now: float) -> Shopper:
        self.count += 1
        t = now
        pos = self.gate
        path = [(t, *pos)]
        reaches = []
        for lane in self.rng.sample(self.lanes, 2):
            front = self._front(lane)
            corner = np.array([pos[0], front[1]])
            for p in (corner, front):
                t += float(np.linalg.norm(p - pos)) / self.walk + 0.01
                path.append((t, *p))
                pos = p
            b = lane.box
            centre = np.array([(b.min[0] + b.max[0]) / 2, (b.min[1] + b.max[1]) / 2, (b.min[2] + b.max[2]) / 2])
            reaches.append((t + 1.0, t + 2.5, centre, lane.id))
            t += 4.0
            path.append((t, *pos))
        corner = np.array([pos[0], self.exit[1]])
        for p in (corner, self.exit):
            t += float(np.linalg.norm(p - pos)) / self.walk + 0.01
            path.append((t, *p))
            pos = p
        sh = Shopper(self.count, f"acct-load-{self.count:06d}", path, reaches, t)
        self.active.append(sh)
        self.visit_s = t - now
        return sh


# ------------------------------------------------------------------------------------------------ payloads
def _f(x: float) -> str:
    return f"{x:.3f}"


def tracks_payload(cam: CameraTile, source: str, seq: int, ts: float, frame: int, seen: list[tuple[Shopper,
                   np.ndarray, np.ndarray | None]]) -> bytes:
    """A ``TracksMsg`` as JSON, written by hand (the generator must outrun fusion on a shared CPU)."""
    tracks = []
    for sh, xy, wrist in seen:
        tid = sh.track_ids.setdefault(cam.id, sh.n)
        u, v = 320 + 40 * (xy[0] - cam.origin[0]), 240 + 40 * (xy[1] - cam.origin[1])
        hand = ""
        if wrist is not None:
            d = wrist - cam.origin
            d = d / np.linalg.norm(d)
            hand = (f',"rwrist":{{"px":[{_f(u + 5)},{_f(v)}],"conf":0.9,"ray":{{"origin":[{_f(cam.origin[0])},'
                    f'{_f(cam.origin[1])},{_f(cam.origin[2])}],"dir":[{d[0]:.6f},{d[1]:.6f},{d[2]:.6f}]}}}}')
        tracks.append(f'{{"id":{tid},"box":[{_f(u - 20)},{_f(v - 40)},{_f(u + 20)},{_f(v + 40)}],"conf":0.9,'
                      f'"floor":[{_f(xy[0])},{_f(xy[1])}],"floor_cov":[0.0025,0.0,0.0025]{hand}}}')
    return (f'{{"v":1,"source":"{source}","seq":{seq},"ts":{ts:.6f},"camera":"{cam.id}","frame":{frame},'
            f'"tracks":[{",".join(tracks)}]}}').encode()


def event_payload(store: Store, source: str, seq: int, shelf: str, lane: str, sku: str, t0: float,
                  t1: float) -> bytes:
    grams = store.products[sku].weight_g
    return (f'{{"v":1,"source":"{source}","seq":{seq},"ts":{t1:.6f},"shelf":"{shelf}","event_id":"{lane}-'
            f'{round(t0 * 1000)}","action":"pick","t_start":{t0:.6f},"t_end":{t1:.6f},"lanes":[{{"lane":"{lane}",'
            f'"delta_g":{-grams:.1f}}}],"delta_g":{-grams:.1f},"candidates":[{{"sku":"{sku}","qty":1,"p":0.97}}]}}'
            ).encode()


def gate_payload(source: str, seq: int, ts: float, gate: str, account: str) -> bytes:
    return (f'{{"v":1,"source":"{source}","seq":{seq},"ts":{ts:.6f},"gate":"{gate}","account":"{account}",'
            f'"party_size":1}}').encode()


# ------------------------------------------------------------------------------------------------ generator
class Generator:
    """Publishes the store's traffic live from a thread; counts what it published."""

    def __init__(self, store: Store, tiles: list[CameraTile], port: int, password: str, fps: float, shoppers: int,
                 seed: int = 0):
        self.store, self.tiles, self.fps = store, tiles, fps
        self.pop = Population(store, shoppers, seed)
        self.sid = store.store.id
        self.lane_shelf = store.lane_shelf
        self.published = {"tracks": 0, "events": 0, "entries": 0}
        self.exits: dict[str, float] = {}  # account -> wall time of the exit
        self.behind_s = 0.0  # how late the generator ran (it must keep up for the figures to mean anything)
        self._seq = int(time.time() * 1e6)
        self._stop = threading.Event()
        self._events: list[tuple[float, Shopper, int]] = []
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-load-{uuid.uuid4().hex[:6]}",
                             protocol=paho.MQTTv5)
        self.c.username_pw_set("bench", password)
        self.c.max_inflight_messages_set(500)
        self.c.max_queued_messages_set(0)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.thread = threading.Thread(target=self._run, name="load-generator", daemon=True)

    def seq(self) -> int:
        self._seq += 1
        return self._seq

    def _pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(f"walkout/v1/{self.sid}/{topic}", payload, 1)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.c.disconnect()
        self.c.loop_stop()

    def _run(self) -> None:
        period = 1.0 / self.fps
        frame = 0
        next_t = time.time()
        spawn_gap = 0.0
        last_spawn = 0.0
        while not self._stop.is_set():
            now = time.time()
            if now < next_t:
                time.sleep(next_t - now)
                now = time.time()
            self.behind_s = max(self.behind_s, now - next_t)
            ts = next_t
            frame += 1
            # arrivals: keep about `target` shoppers inside
            if len(self.pop.active) < self.pop.target and ts - last_spawn >= spawn_gap:
                sh = self.pop.spawn(ts + 0.6)
                self._pub("gate/gate-1/entry", gate_payload("gate-1", self.seq(), ts, "gate-1", sh.account))
                self.published["entries"] += 1
                for k, (t0, t1, _c, lane) in enumerate(sh.reaches):
                    self._events.append((t1 + 1.0, sh, k))
                last_spawn = ts
                spawn_gap = max(0.5, self.pop.visit_s / max(1, self.pop.target))
            # positions and wrists of everyone inside
            seen: list[tuple[Shopper, np.ndarray, np.ndarray | None]] = []
            gone = []
            for sh in self.pop.active:
                xy = sh.at(ts)
                if xy is None:
                    if ts > sh.exit_t:
                        gone.append(sh)
                    continue
                wrist = None
                for t0, t1, centre, _lane in sh.reaches:
                    if t0 <= ts <= t1:
                        wrist = centre
                if wrist is None:
                    wrist = np.array([xy[0] + 0.2, xy[1], 0.9])
                seen.append((sh, xy, wrist))
            for sh in gone:
                self.pop.active.remove(sh)
                self.exits[sh.account] = sh.exit_t
            pts = np.array([s[1] for s in seen]) if seen else np.zeros((0, 2))
            for cam in self.tiles:
                inside = np.all((pts >= cam.lo) & (pts <= cam.hi), axis=1) if len(pts) else np.zeros(0, bool)
                mine = [seen[i] for i in np.nonzero(inside)[0]]
                self._pub(f"camera/{cam.id}/tracks", tracks_payload(cam, f"camera-{cam.id}", self.seq(), ts, frame,
                                                                    mine))
                self.published["tracks"] += 1
            # shelf events once the shelf is stable again
            due = [e for e in self._events if e[0] <= ts]
            for e in due:
                self._events.remove(e)
                _, sh, k = e
                t0, t1, _c, lane = sh.reaches[k]
                sku = self.store.lanes[lane].sku or "P000"
                self._pub(f"shelf/{self.lane_shelf[lane]}/events",
                          event_payload(self.store, "shelf-gateway", self.seq(), self.lane_shelf[lane], lane, sku,
                                        t0, t1))
                self.published["events"] += 1
            next_t += period


# ------------------------------------------------------------------------------------------------ sampling
def scrape(port: int) -> dict[str, float]:
    """Prometheus text of fusion's metrics as {name{labels}: value}."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than 3 points)."""
    if len(xs) < 3:
        return 0.0
    return float(np.polyfit(np.asarray(xs), np.asarray(ys, float), 1)[0])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


# ------------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="walkout-load-"))
    sid = "load" + uuid.uuid4().hex[:8]
    data = big_store(sid, args.lanes)
    store = store_from_dict(data)
    tiles = camera_grid(tuple(store.store.size), args.cameras)
    store_yaml = work / "store.yaml"
    store_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    devices = [Device("fusion", "fusion"), Device("recorder", "recorder")]
    sb = start_store_broker(store, work, devices=devices, extra_users={"bench": [("write", f"walkout/v1/{sid}/#")]})
    metrics_port = free_port()
    db = args.db or f"sqlite:///{work / 'fusion.db'}"
    fusion = FusionProc(store_yaml, db, sb.port, sb.passwords["fusion"], work / "fusion.log", snapshot_every=30.0)
    fusion.cmd += ["--metrics-port", str(metrics_port)]
    fusion.start()
    watcher = Watcher(sid, sb.port, sb.creds("recorder"))
    arrivals: dict[str, float] = {}
    lock = threading.Lock()

    def on_receipt(info: Any, msg: Any) -> None:
        with lock:
            arrivals.setdefault(msg.account, time.time())

    watcher.t.subscribe(Kind.RECEIPT, on_receipt)
    gen = Generator(store, tiles, sb.port, sb.passwords["bench"], args.fps, args.shoppers, args.seed)
    samples: list[dict[str, Any]] = []
    t_start = time.time()
    gen.start()
    broker_pid = sb.broker._proc.pid if sb.broker._proc else None  # for its RSS
    try:
        end = t_start + args.minutes * 60
        while time.time() < end:
            time.sleep(min(args.sample_s, max(0.0, end - time.time())))
            m = scrape(metrics_port)
            fused = sum(v for k, v in m.items()
                        if k.startswith("walkout_fusion_messages_total") and 'kind="status"' not in k)
            now = time.time()
            clock = m.get("walkout_fusion_event_clock_seconds", 0.0)
            pub_total = sum(gen.published.values())
            s = {"t": round(now - t_start, 1), "published": pub_total, "fused": int(fused),
                 "backlog": int(pub_total - fused), "lag_s": round(now - clock, 2) if clock else None,
                 "visits_open": m.get("walkout_fusion_visits_open"), "receipts": len(arrivals),
                 "fusion_rss_mb": rss_mb(fusion.proc.pid if fusion.proc else None), "broker_rss_mb": rss_mb(broker_pid),
                 "generator_behind_s": round(gen.behind_s, 3)}
            samples.append(s)
            if not args.json:
                print(f"  t={s['t']:6.0f}s published {pub_total:8d} fused {s['fused']:8d} backlog {s['backlog']:7d} "
                      f"lag {s['lag_s']} s  fusion {s['fusion_rss_mb']:.0f} MB  broker {s['broker_rss_mb']:.0f} MB "
                      f" receipts {s['receipts']}", file=sys.stderr, flush=True)
            if fusion.proc is not None and fusion.proc.poll() is not None:
                log.error("fusion exited: %s", fusion.log_tail())
                break
    finally:
        gen.stop()
        fusion.stop()
        watcher.close()
        sb.close()
    try:  # Mosquitto says so (once per episode) when a client's queue passed max_queued_messages
        drops = (work / "broker" / "mosquitto.log").read_text(errors="replace").count("are being dropped")
    except OSError:
        drops = -1
    lat = [arrivals[a] - gen.exits[a] for a in arrivals if a in gen.exits]
    dur = samples[-1]["t"] if samples else 0.0
    half = [s for s in samples if s["t"] >= dur / 2]
    xs = [s["t"] / 60 for s in half]
    backlog_slope = slope(xs, [s["backlog"] for s in half])  # messages per minute
    rss_slope = slope(xs, [s["fusion_rss_mb"] or 0 for s in half])  # MB per minute
    broker_slope = slope(xs, [s["broker_rss_mb"] or 0 for s in half])
    pub_rate = samples[-1]["published"] / dur if dur else 0.0
    fused_rate = samples[-1]["fused"] / dur if dur else 0.0
    backlog_flat = backlog_slope * (args.minutes / 2) < max(1000.0, 0.02 * (samples[-1]["published"] if samples else 0))
    memory_flat = rss_slope * (args.minutes / 2) < max(20.0, 0.1 * (half[0]["fusion_rss_mb"] or 1 if half else 1))
    return {
        "minutes": args.minutes, "cameras": args.cameras, "fps": args.fps, "lanes": len(store.lanes),
        "shoppers": args.shoppers, "db": "sqlite" if not args.db else "postgresql",
        "published_per_s": round(pub_rate, 1), "fused_per_s": round(fused_rate, 1),
        "published": gen.published, "generator_max_behind_s": round(gen.behind_s, 3),
        "backlog_end": samples[-1]["backlog"] if samples else None, "backlog_slope_per_min": round(backlog_slope, 1),
        "backlog_flat": bool(backlog_flat), "lag_end_s": samples[-1]["lag_s"] if samples else None,
        "fusion_rss_mb_start": samples[0]["fusion_rss_mb"] if samples else None,
        "fusion_rss_mb_end": samples[-1]["fusion_rss_mb"] if samples else None,
        "fusion_rss_slope_mb_per_min": round(rss_slope, 2), "broker_rss_slope_mb_per_min": round(broker_slope, 2),
        "memory_flat": bool(memory_flat), "broker_drop_notices": drops,
        "visits_exited": len(gen.exits), "receipts": len(arrivals),
        "exit_to_receipt_p50_s": round(statistics.median(lat), 3) if lat else None,
        "exit_to_receipt_p99_s": round(pct(lat, 99), 3) if lat else None,
        "samples": samples, "work": str(work),
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"load bench: {r['cameras']} cameras x {r['fps']:g} fps, {r['lanes']} lanes, ~{r['shoppers']} shoppers, "
          f"{r['minutes']:g} min, fusion on {r['db']}")
    print(f"{'t (s)':>7} {'published':>10} {'fused':>10} {'backlog':>8} {'lag (s)':>8} {'fusion MB':>10} "
          f"{'broker MB':>10} {'receipts':>9}")
    for s in r["samples"]:
        print(f"{s['t']:7.0f} {s['published']:10d} {s['fused']:10d} {s['backlog']:8d} {s['lag_s']!s:>8} "
              f"{(s['fusion_rss_mb'] or 0):10.1f} {(s['broker_rss_mb'] or 0):10.1f} {s['receipts']:9d}")
    print()
    rows = [
        ("throughput published", f"{r['published_per_s']} msg/s ({r['published']})"),
        ("throughput fused", f"{r['fused_per_s']} msg/s"),
        ("backlog at end", (f"{r['backlog_end']} messages; slope over the 2nd half {r['backlog_slope_per_min']} "
                            f"msg/min -> {'FLAT' if r['backlog_flat'] else 'GROWING'}")),
        ("fusion lag at end", f"{r['lag_end_s']} s behind the wall clock"),
        ("fusion RSS", (f"{r['fusion_rss_mb_start']} -> {r['fusion_rss_mb_end']} MB; slope "
                        f"{r['fusion_rss_slope_mb_per_min']} MB/min -> {'FLAT' if r['memory_flat'] else 'GROWING'}")),
        ("broker RSS slope", f"{r['broker_rss_slope_mb_per_min']} MB/min"),
        ("broker drops", ("none" if r["broker_drop_notices"] == 0 else
                          f"{r['broker_drop_notices']} notice(s): fusion's queue passed max_queued_messages and the "
                          "broker DROPPED messages (tracks, events and entries alike)")),
        ("exit -> receipt", (f"p50 {r['exit_to_receipt_p50_s']} s, p99 {r['exit_to_receipt_p99_s']} s over "
                             f"{r['receipts']} receipts ({r['visits_exited']} visits exited)")),
        ("generator", f"at most {r['generator_max_behind_s']} s behind its schedule"),
    ]
    for k, v in rows:
        print(f"  {k:22s} {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--cameras", type=int, default=32)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--lanes", type=int, default=500)
    p.add_argument("--shoppers", type=int, default=40, help="shoppers in the store at a time (default 40)")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--db", help="database URL for fusion (default SQLite in a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    r = run(args)
    if args.json:
        print(json.dumps(r))
    else:
        print_report(r)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())

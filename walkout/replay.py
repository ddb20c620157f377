"""Replay a recorded session through the edge and fusion, and keep what the run produced.

``replay(source, run_dir, options)`` takes a simulator session (its folder or ``session.mcap``) or a
detection-level recording (an MCAP of recorded topics, e.g. from ``walkout record``) and:

1. builds the feed, the messages the store's devices would publish, each with its publish time:

   * a session's gate scans, as recorded;
   * camera tracks: ``perception="truth"`` -- :mod:`walkout.truth_perception` (the true tracks with
     realistic noise); ``perception="onnx"`` -- the real edge camera pipeline (:class:`edge.camera.
     CameraPipeline`, the ONNX detector on the session's frames);
   * shelf events: truth perception's (``shelf="truth"``) or the real shelf gateway on the session's
     load-cell channels (``shelf="gateway"``, always with ``perception="onnx"``);
   * a recording: its input topics (tracks, shelf events, gate entries, status) at their log (receive) time;

2. publishes it, in publish-time order, from one replay client (so the order survives any broker), paced
   at ``speed`` times real time by publish time (0: as fast as possible), through the broker
   (:func:`wire.broker.open_bus`: the MQTT broker that answers, else an embedded Mosquitto) or, with
   ``in_process``, straight into fusion's handler (:meth:`fusion.service.FusionService.offer`, its
   de-duplication first, as a transport would), fusion's outputs on the deterministic
   :class:`wire.bus.InProcessBus`;

3. into the real fusion process (:class:`fusion.service.FusionService`: its database -- SQLite in the run
   folder, or the ``db`` URL -- the ledger payment gateway and the transport), which publishes carts and
   receipts; a recorder client keeps every receipt with the wall time it arrived.  Track frames skip
   fusion's inbox (``ServiceSettings.inbox_relaxed``) and the engine is not snapshotted while it runs (only
   when it stops): the recording is the replay's inbox, and a replay that dies is run again from it;

4. and writes the run folder:

   ============================  =============================================================================
   ``run.json``                  what ran: source, perception, speed, transport, pacing origin, counters
   ``receipts.jsonl``            every receipt message less ``seq``, sorted by visit (identical for identical
                                 inputs)
   ``receipt_times.jsonl``       per receipt: wall time it arrived, and whether it came only at end of input
   ``shelf_events.jsonl``        the shelf events published
   ``tracks/{camera}.txt``       published tracks, MOT style: ``frame,id,x,y,w,h,conf,floor_x,floor_y``
   ``truth_mot/{camera}.txt``    truth perception's per-frame truth (when projected: the session had no
                                 frames)
   ``floor_tracks.csv``          fused shoppers on the floor: ``t,shopper,visit,x,y`` (10 Hz)
   ``visits.jsonl``              fusion's visits: account, shoppers, entry, exit
   ``cart_lines.jsonl``          every cart line with its evidence (event, shopper, confidence, margin)
   ``review.jsonl``              the review queue (held visits, unassigned events)
   ``fusion.db``                 fusion's SQLite database (unless ``db`` is given)
   ============================  =============================================================================

Latency: the replay maps publish time to wall time (``w0 + (t - t0) / speed``, both in ``run.json``); the
evaluation compares a receipt's arrival with the wall time of the shopper's true exit.

At the end of input the engine is told so (:meth:`FusionEngine.finish`): visits whose shoppers left near the
end are settled then (their receipts are flagged ``at_end``).
"""

from __future__ import annotations

import gc
import heapq
import json
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibration.config import load_yaml_fast
from calibration.store import Store, store_from_dict
from fusion import store_db
from fusion.config import FusionConfig
from fusion.db import Database
from fusion.engine import EvidenceRecord
from fusion.floor import LEFT
from fusion.payments import LedgerGateway
from fusion.service import FusionService, ServiceSettings
from wire.messages import GateEntryMsg, ReceiptMsg, ShelfEventMsg, StatusMsg, TracksMsg
from wire.topics import Kind, TopicInfo
from wire.transport import Transport

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "person_pose_int8.onnx"
RECORDING_FORMAT = "walkout-recording/1"
KIND_OF: dict[type, tuple[Kind, str]] = {
    TracksMsg: (Kind.TRACKS, "camera"),
    ShelfEventMsg: (Kind.SHELF_EVENTS, "shelf"),
    GateEntryMsg: (Kind.GATE_ENTRY, "gate"),
    StatusMsg: (Kind.STATUS, "device"),
}
INPUT_KINDS = {Kind.TRACKS, Kind.SHELF_EVENTS, Kind.GATE_ENTRY, Kind.STATUS}
OUTPUT_FILES = ("run.json", "receipts.jsonl", "receipt_times.jsonl", "shelf_events.jsonl", "floor_tracks.csv",
                "visits.jsonl", "cart_lines.jsonl", "review.jsonl", "fusion.db", "fusion.db-wal", "fusion.db-shm")
OUTPUT_DIRS = ("tracks", "truth_mot", "report")
Feed = Iterator[tuple[float, BaseModel]]


class ReplayError(RuntimeError):
    """A replay that cannot run (bad source, database not empty, fusion never caught up)."""


@dataclass
class ReplayOptions:
    perception: str = "truth"  # truth | onnx
    shelf: str = "truth"  # truth | gateway (onnx perception always uses the gateway)
    speed: float = 0.0  # multiple of real time; 0 = as fast as possible
    in_process: bool = False
    db: str | None = None  # database URL (default: SQLite in the run folder)
    broker: tuple[str, int] = ("127.0.0.1", 1883)
    seed: int = 0
    perception_config: Any = None  # walkout.truth_perception.PerceptionConfig (its seed wins over ``seed``)
    store: Store | None = None  # the store description (default: the session's attachment)
    store_id: str | None = None  # publish under this store id instead (fresh topics: tests, shared brokers)
    model: Path = DEFAULT_MODEL
    detector_threads: int | None = 1
    fusion_config: FusionConfig | None = None
    keep_evidence: bool = False  # keep each shelf event's association evidence (ReplayResult.evidence)
    floor_hz: float = 10.0  # fused floor positions kept at this rate
    progress: Callable[[str], None] | None = None
    catch_up_timeout_s: float = 120.0


@dataclass
class ReplayResult:
    run_dir: Path
    receipts: list[dict]
    summary: dict = field(default_factory=dict)
    evidence: dict[str, EvidenceRecord] | None = None  # with ``keep_evidence``: event id -> its evidence


# ------------------------------------------------------------------------------------------------ sources
@dataclass
class Source:
    """What is being replayed: a simulator session, or a recording of topics."""

    kind: str  # "session" | "recording"
    path: Path  # the MCAP file
    store: Store
    session: Any = None  # sim.session.Session for a session
    metadata: dict = field(default_factory=dict)
    span: tuple[float, float] | None = None  # capture-time span of the input


def mcap_metadata(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, bytes]]:
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        reader = make_reader(f)
        meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        atts = {a.name: bytes(a.data) for a in reader.iter_attachments()}
    return meta, atts


def open_source(path: str | Path) -> Source:
    """A session folder or MCAP, or a recording MCAP.  Raises :class:`ReplayError` naming the problem."""
    path = Path(path)
    mcap = path / "session.mcap" if path.is_dir() else path
    if not mcap.is_file():
        raise ReplayError(f"{path}: no such session folder or MCAP file")
    try:
        meta, atts = mcap_metadata(mcap)
    except Exception as exc:  # noqa: BLE001 - the mcap reader raises many kinds on a bad file
        raise ReplayError(f"{mcap}: not a readable MCAP file: {exc}") from None
    if "walkout.session" in meta:
        from sim.session import Session

        session = Session.open(mcap)
        start = session.start_epoch
        return Source("session", mcap, session.store, session, meta["walkout.session"],
                      (start, start + float(session.metadata.get("duration_s", "0"))))
    if "store.yaml" not in atts:
        raise ReplayError(f"{mcap}: neither a simulator session nor a recording with a store.yaml attachment")
    store = store_from_dict(load_yaml_fast(atts["store.yaml"]), f"{mcap}!store.yaml")
    rec = meta.get("walkout.recording", {})
    span = None
    if "start" in rec and "end" in rec:
        span = (float(rec["start"]), float(rec["end"]))
    return Source("recording", mcap, store, None, rec, span)


def recording_feed(path: Path) -> Feed:
    """The input topics of a recording in log-time order: ``(log time, message)``; messages that do not
    decode are counted and skipped."""
    from sim.session import IMAGE_SCHEMA
    from walkout.mcap_scan import scan_messages
    from wire.codec import WireError, decode

    bad = 0
    # camera frames are kept for people to look at, not an input of fusion
    for m in scan_messages(path, lambda topic, schema: schema != IMAGE_SCHEMA):
        try:
            info, msg = decode(m.topic, m.data)
        except WireError:
            bad += 1
            continue
        if info.kind in INPUT_KINDS:
            yield m.log_time / 1e9, msg
    if bad:
        log.warning("%s: %d recorded messages are not wire messages of walkout (skipped)", path, bad)


def gate_feed(session) -> Feed:
    for msg in session.gate_entries():
        yield float(msg.ts), msg


def camera_feed(session, model: Path, cameras: list[str] | None = None, latency_s: float = 0.1,
                threads: int | None = 1) -> Feed:
    """The real edge camera pipeline on the session's frames: ONNX detector, tracker, projection.  Publish
    time: capture time + ``latency_s`` (a nominal processing latency; the replay is deterministic).
    ``threads``: ONNX Runtime's threads (1 by default: the replay runs fusion in the same process, and one
    thread was the fastest on a shared 2-core machine)."""
    from edge.camera import CameraPipeline
    from edge.detector import Detector
    from edge.sources import McapSource, frame_batches

    src = McapSource(session.path, cameras)
    detector = Detector(model, intra_op_threads=threads)
    pipeline = CameraPipeline(session.store, list(src.cameras), detector, device="camera-replay",
                              calibrations=session.cameras)
    stop = threading.Event()
    try:
        for batch in frame_batches([src], stop, speed=0.0):
            for msg in pipeline.process(batch):
                yield float(msg.ts) + latency_s, msg
    finally:
        src.close()
    log.info("camera pipeline: %s", pipeline.counters.as_dict())


def gateway_feed(session, device: str = "shelf-gateway", heartbeat_s: float = 0.25) -> Feed:
    """The real shelf gateway on the session's load-cell channels; publish time: when it emitted the event
    (capture time of the frame that found the shelf stable again).  Like ``walkout edge shelf``, it also
    publishes a watermark heartbeat (a status with the gateway's low watermark) every ``heartbeat_s`` of capture
    time, published at that time, and a last one at the end; the events and heartbeats are numbered together
    in publish order."""
    from edge.shelf.gateway import Layout, ShelfGateway
    from edge.shelf.planogram import Planogram
    from edge.shelf.readers import McapReader

    reader = McapReader(session.path)
    layout = Layout.from_store(session.store, reader.channels)
    rate = float(reader.rate_hz or 60.0)
    gw = ShelfGateway(layout, Planogram.from_store(session.store), device, lambda: 0, rate)
    gw.emit_times = {}
    seqs = iter(range(1 << 62))
    last = -float("inf")
    beat_at: float | None = None  # the next heartbeat's capture time (a multiple of heartbeat_s)

    def beat(t: float, marks: dict[str, float], later: Sequence[ShelfEventMsg] = ()) -> tuple[float, StatusMsg]:
        """A heartbeat at ``t``: each shelf's watermark now, or earlier, the start of its event emitted after t."""
        per = {sid: min([t, m] + [e.t_start for e in later if e.shelf == sid]) for sid, m in marks.items()}
        return t, StatusMsg(source=device, seq=next(seqs), ts=t, device=device, kind="shelf", state="online",
                            watermark=min(per.values(), default=t), shelf_watermarks=per)

    def out(msgs: list[ShelfEventMsg]) -> Iterator[tuple[float, BaseModel]]:
        """A block's events at their emit times and the heartbeats due up to the newest frame processed, in
        publish order.  A heartbeat at t: the watermark now, or earlier, the start of an event emitted after t."""
        nonlocal last, beat_at
        timed = []
        for msg in msgs:
            last = max(last, gw.emit_times.get(msg.event_id, float(msg.t_end)))
            timed.append((last, msg))
        until, marks = gw.processed_until, gw.watermarks()
        i = 0
        if heartbeat_s > 0 and until is not None and marks is not None:
            if beat_at is None:
                beat_at = math.ceil(until / heartbeat_s) * heartbeat_s
            while beat_at <= until:
                while i < len(timed) and timed[i][0] <= beat_at:
                    yield timed[i][0], timed[i][1].model_copy(update={"seq": next(seqs)})
                    i += 1
                yield beat(beat_at, marks, [m for _, m in timed[i:]])
                beat_at += heartbeat_s
        for t, msg in timed[i:]:
            yield t, msg.model_copy(update={"seq": next(seqs)})

    try:
        for block in reader.blocks():
            yield from out(gw.feed(block, reader.channels))
        yield from out(gw.finish())
        end, marks = gw.processed_until, gw.watermarks()
        if heartbeat_s > 0 and end is not None and marks is not None:  # everything is out: the last word
            yield beat(max(last, end), marks)
    finally:
        reader.close()
    log.info("shelf gateway: %s", gw.counters(reader))


def merged(feeds: Iterable[Feed]) -> Feed:
    """Feeds (each in publish-time order) merged by publish time; ties in feed order."""
    return heapq.merge(*feeds, key=lambda item: item[0])


# ------------------------------------------------------------------------------------------------ fusion
class ReplayFusion(FusionService):
    """The fusion service as a replay runs it: it also samples the fused shoppers' floor positions (for the
    evaluation), ignores what is not the replay's input -- messages the broker delivers from its retained
    store (leftovers of earlier runs or live devices on a shared broker: an earlier replay's last heartbeat
    would move the event clock to that session's end before this one starts) and status messages from outside
    the replayed time span (transports' own statuses, stamped with the wall clock) -- and can be told the
    input ended."""

    def __init__(self, *args: Any, floor_hz: float = 10.0, span: tuple[float, float] | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.floor_hz = floor_hz
        self.span = span
        self.floor_rows: list[tuple[float, str, str, float, float]] = []
        self._bucket: dict[str, int] = {}
        self._sampled = -1  # the last bucket sampled (all cameras' messages of one instant sample once)
        self.ignored_status = 0
        self.ignored_retained = 0
        self.engine.forgotten = []  # visits.jsonl lists every visit, also those fusion let go of

    def handle(self, info: TopicInfo, msg: BaseModel) -> None:
        if info.retained:
            self.ignored_retained += 1
            return
        if isinstance(msg, StatusMsg) and self.span is not None:
            lo, hi = self.span
            if not lo - 300.0 <= msg.ts <= hi + 300.0:
                self.ignored_status += 1
                return
        super().handle(info, msg)
        if isinstance(msg, TracksMsg):
            b = int(msg.ts * self.floor_hz)
            if b != self._sampled:
                self._sampled = b
                self._sample()

    def _sample(self) -> None:
        floor = self.engine.floor
        if not len(floor.state):
            return
        for i in (floor.state != LEFT).nonzero()[0]:
            inf = floor.info[int(i)]
            t = float(floor.t[i])
            b = round(t * self.floor_hz)
            if self._bucket.get(inf.id) == b:
                continue
            self._bucket[inf.id] = b
            self.floor_rows.append((t, inf.id, inf.visit or "", float(floor.X[i, 0]), float(floor.X[i, 1])))

    def caught_up(self, published: dict[str, int]) -> bool:
        """Whether every tracks, shelf-event and gate message published (counts by model name) was handled
        (status messages may come with or without the transport's own, so they are not counted)."""
        with self._lock:
            done = {name: self.counters[f"messages_{KIND_OF[model][0].value}"]
                    for model in (TracksMsg, ShelfEventMsg, GateEntryMsg) for name in [model.__name__]}
            dup = self.counters["duplicates"]
        return all(done[name] + dup >= published.get(name, 0) for name in done)

    def finish_input(self) -> int:
        """End of input: process everything buffered and settle what has ended; returns the effects."""
        with self._lock:
            effects = self.engine.finish()
            self._pending.extend(effects)
            self._drain()
        return len(effects)


class ReceiptRecorder:
    """Subscribes to the receipts and keeps each with the wall time it arrived."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self.receipts: dict[str, tuple[float, ReceiptMsg]] = {}
        self.lock = threading.Lock()
        self.at_end_from: float | None = None  # wall time the end of input was signalled
        transport.subscribe(Kind.RECEIPT, self._on_receipt)

    def _on_receipt(self, info: TopicInfo, msg: BaseModel) -> None:
        assert isinstance(msg, ReceiptMsg)
        with self.lock:
            self.receipts[msg.visit] = (time.time(), msg)

    def count(self) -> int:
        with self.lock:
            return len(self.receipts)


# ------------------------------------------------------------------------------------------------ outputs
class RunWriter:
    """The run folder's streams written while the feed is published."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        (run_dir / "tracks").mkdir(parents=True, exist_ok=True)
        self.events = (run_dir / "shelf_events.jsonl").open("w")
        self.tracks: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def message(self, msg: BaseModel) -> None:
        name = type(msg).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        if isinstance(msg, ShelfEventMsg):
            self.events.write(msg.model_dump_json(exclude_none=True) + "\n")
        elif isinstance(msg, TracksMsg):
            f = self.tracks.get(msg.camera)
            if f is None:
                f = self.tracks[msg.camera] = (self.dir / "tracks" / f"{msg.camera}.txt").open("w")
            for t in msg.tracks:
                x1, y1, x2, y2 = t.box
                f.write(f"{msg.frame},{t.id},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},{t.conf:.3f},"
                        f"{t.floor[0]:.4f},{t.floor[1]:.4f}\n")

    def close(self) -> None:
        self.events.close()
        for f in self.tracks.values():
            f.close()


def _jsonl(path: Path, rows: Iterable[dict]) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder, removing the outputs of an earlier run there (and nothing else)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in OUTPUT_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def with_store_id(store: Store, store_id: str) -> Store:
    if store_id == store.store.id:
        return store
    data = store.model_dump(mode="json")
    data["store"]["id"] = store_id
    return store_from_dict(data)


# ------------------------------------------------------------------------------------------------ the run
def session_feed(src: Source, opts: ReplayOptions, run_dir: Path, info: dict) -> Feed:
    """The feed of a simulator session (see the module docstring); writes truth perception's per-camera
    truth into ``run_dir/truth_mot`` when it was projected."""
    session = src.session
    feeds: list[Feed] = [gate_feed(session)]
    if opts.perception == "truth":
        from walkout.truth_perception import PerceptionConfig, perceive

        cfg = opts.perception_config or PerceptionConfig(seed=opts.seed)
        p = perceive(session, cfg, with_shelf=opts.shelf == "truth")
        tm = run_dir / "truth_mot"
        for cid, ct in p.truths.items():
            if ct.source == "projected":
                tm.mkdir(exist_ok=True)
                ct.write_mot(tm / f"{cid}.txt")
        info["perception_stats"] = {"tracks": {c: asdict(s) for c, s in p.track_stats.items()},
                                    "shelf": asdict(p.shelf_stats) if p.shelf_stats else None}
        feeds.append(iter(p.feed()))
    elif opts.perception == "onnx":
        if session.metadata.get("frames") != "true":
            raise ReplayError(f"{src.path}: the session has no camera frames; use --perception truth "
                              "(or regenerate it without --no-frames)")
        if not Path(opts.model).is_file():
            raise ReplayError(f"{opts.model}: ONNX model not found")
        feeds.append(camera_feed(session, Path(opts.model), threads=opts.detector_threads))
    else:
        raise ReplayError(f"unknown perception {opts.perception!r} (truth or onnx)")
    if opts.perception == "onnx" or opts.shelf == "gateway":
        feeds.append(gateway_feed(session))
    return merged(feeds)


def _transports(store_id: str, opts: ReplayOptions, run_tag: str) -> tuple[Transport, Transport, Transport, str]:
    """(fusion, publisher, recorder) transports and a description of the bus."""
    if opts.in_process:
        from wire.bus import InProcessBus

        bus = InProcessBus(store_id, share_models=True)  # the feed's messages are decoded or ours already
        return (bus.client("fusion", "fusion"), bus.client("replay", "sim"), bus.client("replay-recorder",
                                                                                          "recorder"),
                bus.description)
    from wire.broker import open_bus

    host, port = opts.broker
    made = [open_bus(store_id, dev, kind, host, port, client_id=f"walkout-{store_id}-{dev}-{run_tag}")
            for dev, kind in (("fusion", "fusion"), ("replay", "sim"), ("replay-recorder", "recorder"))]
    return made[0], made[1], made[2], made[0].description


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise ReplayError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.002)


@contextmanager
def _settled_heap() -> Iterator[None]:
    """Keep the objects alive before a replay (modules, schemas, the caller's data) out of the garbage
    collector's sight while it runs: a replay makes many small long-lived objects (tracks, paths), and every
    full collection would walk the whole heap again.  Undone at the end, so nothing is kept from collection."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def replay(source: str | Path, run_dir: str | Path, options: ReplayOptions | None = None) -> ReplayResult:
    """Replay ``source`` into fusion and write ``run_dir`` (see the module docstring)."""
    with _settled_heap():
        return _replay(source, run_dir, options)


def _replay(source: str | Path, run_dir: str | Path, options: ReplayOptions | None) -> ReplayResult:
    opts = options or ReplayOptions()
    say = opts.progress or (lambda s: None)
    run_dir = Path(run_dir)
    src = open_source(source)
    store = opts.store or src.store
    store = with_store_id(store, opts.store_id or store.store.id)
    store_id = store.store.id
    prepare_run_dir(run_dir)
    info: dict[str, Any] = {"source": str(src.path), "kind": src.kind, "store": store_id,
                            "perception": opts.perception if src.kind == "session" else "recorded",
                            "shelf": ("gateway" if opts.perception == "onnx" else opts.shelf)
                            if src.kind == "session" else "recorded",
                            "seed": opts.seed, "speed": opts.speed, "in_process": opts.in_process}
    if src.kind == "session":
        info["session"] = str(src.path.parent)
        feed = session_feed(src, opts, run_dir, info)
    else:
        feed = recording_feed(src.path)
    db = Database(opts.db or run_dir / "fusion.db")
    db.migrate()
    with db.read() as conn:
        if store_db.all_receipts(conn):
            raise ReplayError(f"database {db!r} already holds receipts: replay into an empty database")
    payments = LedgerGateway(db, currency=store.store.currency)
    run_tag = uuid.uuid4().hex[:8]
    ft, pub, rt, bus_desc = _transports(store_id, opts, run_tag)
    info["transport"] = bus_desc
    fusion = ReplayFusion(store, db, ft, payments, opts.fusion_config,
                          ServiceSettings(device="fusion", create_accounts=True, inbox_relaxed=False,
                                          snapshot_every_s=math.inf), floor_hz=opts.floor_hz,
                          span=src.span)
    if opts.keep_evidence:
        fusion.engine.evidence_log = {}
    recorder = ReceiptRecorder(rt)
    writer = RunWriter(run_dir)
    t_wall0 = time.time()
    fusion.start()
    rt.start()
    pub.start()
    try:
        for t in (ft, rt, pub):
            if not t.wait_ready(30.0):
                raise ReplayError(f"{t.description}: not connected after 30 s")
        base = ft.counters.as_dict()["received"]
        n_pub, t0, w0 = 0, None, None
        for pub_t, msg in feed:
            if t0 is None:
                t0, w0 = pub_t, time.time()
                say(f"replaying {src.path} from {t0:.3f} at {'max speed' if not opts.speed else f'{opts.speed:g}x'}"
                    f" through {bus_desc}")
            if opts.speed > 0:
                ahead = w0 + (pub_t - t0) / opts.speed - time.time()
                if ahead > 0:
                    time.sleep(ahead)
            if opts.in_process:
                try:
                    fusion.offer(msg)  # the bus would only encode it and hand the same model over
                except Exception as exc:  # what a transport would count as failed, and the end below report
                    log.exception("fusion failed on %s at %.3f", type(msg).__name__, pub_t)
                    raise ReplayError(f"fusion failed on a {type(msg).__name__} at {pub_t:.3f} (its handler "
                                      f"raised {exc!r}; see the log)") from exc
            else:
                kind, field_name = KIND_OF[type(msg)]
                pub.publish(kind, getattr(msg, field_name), msg)
            writer.message(msg)
            n_pub += 1
            if not opts.in_process and n_pub % 50 == 0:
                _wait(lambda sent=n_pub: sent - (ft.counters.as_dict()["received"] - base) < 400,
                      opts.catch_up_timeout_s, "fusion to catch up with the replay")
            if n_pub % 5000 == 0:
                say(f"{n_pub} messages, event time +{pub_t - t0:.0f} s")
        writer.close()
        if not pub.flush(30.0):
            raise ReplayError("the broker did not acknowledge every replayed message within 30 s")
        _wait(lambda: fusion.caught_up(writer.counts), opts.catch_up_timeout_s,
              "fusion to handle every replayed message")
        failed = ft.counters.as_dict()["failed"]
        if failed:
            raise ReplayError(f"fusion failed on {failed} messages (its handler raised; see the log)")
        t_end_wall = time.time()
        recorder.at_end_from = t_end_wall
        fusion.finish_input()
        with db.read() as conn:
            receipts_db = store_db.all_receipts(conn)
        _wait(lambda: recorder.count() >= len(receipts_db), 30.0, "the receipts to arrive")
        wall = time.time() - t_wall0
    finally:
        writer.close()
        pub.stop()
        rt.stop()
        fusion.stop()
    receipts = _write_outputs(run_dir, fusion, recorder, db)
    info.update({
        "t0": t0, "w0": w0, "published": n_pub, "messages": writer.counts, "wall_s": round(wall, 3),
        "t_end_wall": t_end_wall, "receipts": len(receipts), "fusion_counters": fusion.status_counters(),
        "ignored_status": fusion.ignored_status,
        "ignored_retained": fusion.ignored_retained, "db": db.url.render_as_string(hide_password=True),
    })
    (run_dir / "run.json").write_text(json.dumps(info, indent=1, sort_keys=True, default=_json_default) + "\n")
    db.dispose()
    say(f"{len(receipts)} receipts, {n_pub} messages in {wall:.1f} s -> {run_dir}")
    return ReplayResult(run_dir, receipts, info, fusion.engine.evidence_log)


def _write_outputs(run_dir: Path, fusion: ReplayFusion, recorder: ReceiptRecorder, db: Database) -> list[dict]:
    with recorder.lock:
        got = dict(recorder.receipts)
    # the receipt messages as published, less their sequence number (the transport's, not the run's)
    receipts = [got[v][1].model_dump(mode="json", exclude_none=True, exclude={"seq"}) for v in sorted(got)]
    _jsonl(run_dir / "receipts.jsonl", receipts)
    _jsonl(run_dir / "receipt_times.jsonl", (
        {"visit": v, "received_wall": round(got[v][0], 6), "settled_at": got[v][1].ts,
         "at_end": recorder.at_end_from is not None and got[v][0] >= recorder.at_end_from}
        for v in sorted(got)))
    with (run_dir / "floor_tracks.csv").open("w") as f:
        f.write("t,shopper,visit,x,y\n")
        for t, sid, vid, x, y in sorted(fusion.floor_rows, key=lambda r: (r[1], r[0])):
            f.write(f"{t:.3f},{sid},{vid},{x:.4f},{y:.4f}\n")
    visits = {**{v.id: v for v in fusion.engine.forgotten or ()}, **fusion.engine.visits.visits}
    _jsonl(run_dir / "visits.jsonl", (
        {"visit": v.id, "account": v.account, "gate": v.gate, "party_size": v.party_size,
         "shoppers": list(v.shoppers), "entered_at": v.entered_at, "exited_at": v.exited_at,
         "settled": v.settled} for v in sorted(visits.values(), key=lambda v: (v.entered_at, v.id))))
    with db.read() as conn:
        lines = [dict(ln, visit=vid) for vid in sorted(visits) for ln in store_db.cart_lines_of(conn, vid)]
        review = store_db.review_items_all(conn)
    for ln in lines:
        ln.pop("id", None)
        ln.pop("created_at", None)
    _jsonl(run_dir / "cart_lines.jsonl", lines)
    _jsonl(run_dir / "review.jsonl", review)
    return receipts


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

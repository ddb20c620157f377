"""``walkout demo``: the whole store end to end on one machine, in a few minutes.

1. **Simulate** a busy few minutes of the default store with camera frames (``sim.run.simulate``) into
   ``OUT/session/``.  A session simulated before with the same scenario (``OUT/session/scenario.yaml``,
   written last) is reused, so a second demo skips this step.
2. **Replay** it at maximum speed (:func:`walkout.replay.replay`) through a broker -- the Mosquitto on
   127.0.0.1:1883 when it answers, else an embedded Mosquitto started for the demo (else, without a
   ``mosquitto`` binary, the in-process bus) -- with the real edge pipelines: the ONNX detector, tracker and
   floor projection on the frames, the real shelf gateway on the load cells, into the real fusion service
   (SQLite in ``OUT/run/fusion.db``).  A :class:`walkout.demo_watch.Watcher` on the same bus prints a progress
   line every few seconds and each receipt as fusion publishes it, and records the run's topics to
   ``OUT/recording.mcap`` (plus a camera frame a second from the session), which opens in Foxglove.
3. **Evaluate** the run against the session's truth (:func:`walkout.evaluate.evaluate`), write the per-visit
   report (``OUT/run/report/index.html``) and ``OUT/summary.json``, and print the summary.
4. Prepare the **ops app** on the run's database: the store description and camera files in ``OUT/store/``
   and a staff user ``demo`` with a fresh password, and print the command that starts it.

Defaults (10 shoppers, 150 s, 6 cameras at 640x480 and 5 fps: 4,494 frames) were chosen so the whole demo
stays well under 10 minutes on 2 shared cores.  Measured on this project's 2-core machine with a training job
beside it (1-minute load 2.8-4.8): simulating ~8.5 ms per camera frame, the replay ~25 ms per frame (INT8
detector on one thread, tracker, shelf gateway, fusion, broker): 38 s + 112 s, 152 s in all; a second run
reuses the session.  10 fps would double both; 5 fps scored no worse than 10 fps with truth perception
(receipt F1 1.0 vs 0.86, seed 1, 10 shoppers, 150 s).
"""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_BROKER = ("127.0.0.1", 1883)
# third-party loggers held at WARNING (the project's own follow the root logger: WARNING unless -v)
QUIET_LOGGERS = ("paho", "mcap", "onnxruntime", "urllib3", "asyncio", "multipart", "uvicorn", "sqlalchemy",
                 "matplotlib", "PIL")


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    shoppers: int = 10
    duration_s: float = 150.0
    seed: int = 1
    preset: str = "standard"
    fps: float = 5.0
    size: tuple[int, int] = (640, 480)
    perception: str = "onnx"  # onnx | truth
    broker: str | None = None  # host:port, mqtt://host:port or "embedded"; None: 127.0.0.1:1883 or embedded
    model: Path | None = None  # ONNX model; None: walkout replay's default (models/person_pose_int8.onnx)
    store_id: str | None = None  # publish under this store id (tests on a shared broker)
    fresh: bool = False  # simulate again even when a matching session exists
    progress_every_s: float = 3.0
    recording_frames_hz: float = 1.0  # camera frames copied into the recording per second (0: none)
    ops_user: str = "demo"


@dataclass
class Bus:
    """Where the demo's messages go: ``host:port`` of a broker, or the in-process bus."""

    host: str
    port: int
    label: str
    broker: Any = None  # the wire.broker.MosquittoProcess the demo started, if any
    in_process: bool = False

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()
            self.broker = None
        if self.in_process:
            from wire.broker import close_embedded

            close_embedded()


@dataclass
class DemoResult:
    out: Path
    session_dir: Path
    run_dir: Path
    recording: Path
    report: Path
    summary_path: Path
    metrics: dict
    receipts: list[dict]
    printed_receipts: int
    reused_session: bool
    bus: str
    ops_command: str
    timings: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ steps
def quiet_logging() -> None:
    """Third-party libraries log at WARNING and above only (keeps the demo's output readable)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def parse_broker(spec: str) -> tuple[str, int]:
    """``host:port`` or ``mqtt://host:port`` -> ``(host, port)``; :class:`DemoError` naming --broker."""
    text = spec.strip()
    if text.startswith("mqtt://"):
        text = text[len("mqtt://"):].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DemoError(f"--broker {spec!r}: expected host:port, mqtt://host:port or 'embedded'")
    return host, int(port)


def choose_bus(spec: str | None) -> Bus:
    """The broker to use (see the module docstring); an explicit address must answer."""
    from wire.broker import EMBEDDED_CONF, MosquittoError, MosquittoProcess, broker_answers

    if spec is None or spec.strip().lower() == "embedded":
        host, port = DEFAULT_BROKER
        if spec is None and broker_answers(host, port):
            return Bus(host, port, f"Mosquitto at {host}:{port}")
        why = "asked for" if spec is not None else f"nothing answered on {host}:{port}"
        if shutil.which("mosquitto"):
            try:
                broker = MosquittoProcess(EMBEDDED_CONF if EMBEDDED_CONF.is_file() else None).start()
            except MosquittoError as exc:
                raise DemoError(f"could not start an embedded Mosquitto: {exc}") from None
            return Bus(broker.host, broker.port, f"embedded Mosquitto at {broker.host}:{broker.port}, {why}; "
                       "stopped at the end", broker)
        # open_bus gives every client of the store the same in-process bus when nothing answers and there is
        # no mosquitto binary; port 0 never answers
        return Bus("127.0.0.1", 0, f"the in-process bus: {why} and no mosquitto binary is installed",
                   in_process=True)
    host, port = parse_broker(spec)
    if not broker_answers(host, port):
        raise DemoError(f"--broker {spec}: no MQTT broker answers on {host}:{port} (leave --broker out to "
                        "use 127.0.0.1:1883 or an embedded Mosquitto, or pass --broker embedded)")
    return Bus(host, port, f"Mosquitto at {host}:{port}")


def check_model(path: Path) -> None:
    """The detector loads the model (fails before the simulation, not after it)."""
    from edge.detector import Detector, DetectorModelError

    if not path.is_file():
        raise DemoError(f"--model {path}: ONNX model not found")
    try:
        Detector(path, intra_op_threads=1, warmup=False)
    except DetectorModelError as exc:
        raise DemoError(f"--model: {exc}") from None


def scenario_for(opts: DemoOptions):
    """The demo's resolved scenario; :class:`DemoError` naming a bad value."""
    from calibration.config import ConfigError
    from sim.scenario import scenario_from_file

    try:
        scn = scenario_from_file(None, preset=opts.preset, seed=opts.seed, shoppers=opts.shoppers,
                                 duration_s=opts.duration_s, frames=True, fps=opts.fps, size=opts.size)
    except ConfigError as exc:
        raise DemoError(f"bad demo setting: {exc}") from None
    return scn.model_copy(update={"name": "demo"})


def ensure_session(opts: DemoOptions, say: Callable[[str], None]) -> tuple[Path, bool]:
    """``OUT/session``, simulated unless a session of the same scenario is there; (folder, reused)."""
    from sim.run import simulate, stats_line

    scn = scenario_for(opts)
    sdir = opts.out / "session"
    marker = sdir / "scenario.yaml"
    wanted = scn.to_yaml()
    complete = all((sdir / n).is_file() for n in ("session.mcap", "truth.json", "scenario.yaml"))
    if not opts.fresh and complete and marker.read_text() == wanted:
        say(f"reusing the session simulated before in {sdir} (same scenario; --fresh simulates again)")
        return sdir, True
    sdir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # written again last: a simulation cut short never looks complete
    w, h = scn.cameras.size
    say(f"simulating {scn.shoppers} shoppers for {scn.duration_s:g} s in the default store "
        f"(preset {scn.preset}, seed {scn.seed}; cameras {w}x{h} at {scn.cameras.fps:g} fps) -> {sdir}")
    try:
        result = simulate(scn, sdir, progress=lambda m: say(f"  sim: {m}"))
    except (ValueError, OSError) as exc:
        raise DemoError(f"the simulation failed: {exc}") from None
    say(f"  sim: {stats_line(result.stats)}")
    return sdir, False


def session_attachments(session_mcap: Path) -> dict[str, bytes]:
    from walkout.replay import mcap_metadata

    _, atts = mcap_metadata(session_mcap)
    return atts


def store_files(atts: dict[str, bytes]) -> dict[str, bytes]:
    """The store description and the camera and marker files it refers to, from a session's attachments."""
    data = yaml.safe_load(atts["store.yaml"])
    names = ["store.yaml", "markers.yaml"] + [c["file"] for c in data.get("cameras", [])]
    return {n: atts[n] for n in names if n in atts}


def write_store(out: Path, files: dict[str, bytes]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return out / "store.yaml"


def add_ops_user(db_path: Path, name: str) -> str:
    """A fresh admin user ``name`` in the run's database; returns its password."""
    from fusion.db import Database
    from fusion.ops.auth import Users

    password = secrets.token_urlsafe(12)
    db = Database(db_path)
    try:
        db.migrate()
        Users(db).create(name, "admin", password, actor="walkout-demo")
    finally:
        db.dispose()
    return password


def shown(p: Path) -> str:
    """A path as printed: relative to the working directory when under it."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p.resolve())


def walkout_exe() -> str:
    """How to call ``walkout`` from here: the virtual environment's script when it is not on PATH."""
    exe = Path(sys.executable).parent / "walkout"
    if exe.is_file() and shutil.which("walkout") != str(exe):
        return shown(exe)
    return "walkout"


def fmt(v: object, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def summary_text(m: dict) -> list[str]:
    """The evaluation summary the demo prints, one figure a line."""
    causes = ", ".join(f"{k} {v}" for k, v in m.get("error_causes", {}).items()) or "none"
    rows = [
        ("visits", (f"{m['visits']} (receipts {m['visits_with_receipt']}: charged {m['visits_charged']}, "
                   f"sent to review {m['visits_held']})")),
        ("receipt F1", (f"{fmt(m['receipt_f1'])}  (precision {fmt(m['receipt_precision'])}, recall "
                        f"{fmt(m['receipt_recall'])}; {m['lines_right']} right lines of {m['lines_run']} "
                        f"given, {m['lines_true']} true)")),
        ("exact-cart rate", fmt(m["exact_cart_rate"])),
        ("review rate", fmt(m["review_rate"])),
        ("wrong-charge rate", fmt(m["wrong_charge_rate"])),
        ("exit -> receipt", (f"p50 {fmt(m['exit_to_receipt_p50_s'], 2)} s  "
                             f"p99 {fmt(m['exit_to_receipt_p99_s'], 2)} s  ({m.get('exit_to_receipt_basis')} "
                             f"time, {m.get('exit_to_receipt_n')} receipts)")),
        ("shelf events", f"precision {fmt(m['event_precision'])}  recall {fmt(m['event_recall'])}"),
        ("camera tracks", (f"HOTA {fmt(m['hota'], 3)}  IDF1 {fmt(m['idf1'], 3)}  MOTA {fmt(m['mota'], 3)}  "
                           f"(floor: HOTA {fmt(m.get('floor_hota'), 3)}  "
                           f"IDF1 {fmt(m.get('floor_idf1'), 3)})")),
        ("error causes", causes),
    ]
    return [f"  {name:<20} {value}" for name, value in rows]


# ------------------------------------------------------------------------------------------------ the demo
def run_demo(opts: DemoOptions, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo (see the module docstring); raises :class:`DemoError` when a step fails."""
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    quiet_logging()
    if opts.model is None:
        from walkout.replay import DEFAULT_MODEL

        opts.model = DEFAULT_MODEL
    if opts.perception not in ("onnx", "truth"):
        raise DemoError(f"--perception {opts.perception!r}: expected onnx or truth")
    if opts.perception == "onnx":
        check_model(Path(opts.model))
    scenario_for(opts)  # bad settings fail before anything starts
    opts.out.mkdir(parents=True, exist_ok=True)
    bus = choose_bus(opts.broker)
    try:
        say("== 1/4 simulate")
        t = time.monotonic()
        session_dir, reused = ensure_session(opts, say)
        timings["simulate_s"] = time.monotonic() - t
        say(f"== 2/4 replay through the edge and fusion via {bus.label}")
        t = time.monotonic()
        run = replay_step(opts, session_dir, bus, say)
        timings["replay_s"] = time.monotonic() - t
    finally:
        bus.close()
    say("== 3/4 evaluate against the session's truth")
    t = time.monotonic()
    metrics, report = evaluate_step(session_dir, run["run_dir"])
    timings["evaluate_s"] = time.monotonic() - t
    for line in summary_text(metrics):
        say(line)
    summary_path = opts.out / "summary.json"
    timings["total_s"] = time.monotonic() - t_start
    metrics["demo"] = {"timings_s": {k: round(v, 1) for k, v in timings.items()}, "bus": bus.label,
                       "reused_session": reused, "perception": opts.perception,
                       "model": str(opts.model) if opts.perception == "onnx" else None}
    summary_path.write_text(json.dumps(metrics, indent=1, sort_keys=True, default=str) + "\n")
    say("== 4/4 where things are")
    files = store_files(session_attachments(session_dir / "session.mcap"))
    store_yaml = write_store(opts.out / "store", files)
    db_path = run["run_dir"] / "fusion.db"
    password = add_ops_user(db_path, opts.ops_user)
    ops_cmd = (f"{walkout_exe()} ops --store {shlex.quote(shown(store_yaml))} "
               f"--db {shlex.quote(shown(db_path))}")
    say(f"  report       {shown(report)}")
    say(f"  recording    {shown(run['recording'])}  (open it in Foxglove: tracks, shelf events, gate "
        "entries, carts, receipts, camera frames)")
    say(f"  session      {shown(session_dir / 'session.mcap')}  (all camera frames, load cells, gate scans)")
    say(f"  run folder   {shown(run['run_dir'])}  (receipts, events, tracks, fusion.db; summary in "
        f"{shown(summary_path)})")
    say(f"  ops app      {ops_cmd}")
    say(f"               then open http://127.0.0.1:8080 and log in as {opts.ops_user} / {password}")
    say(f"done in {timings['total_s']:.0f} s (simulate {timings['simulate_s']:.0f} s"
        f"{', reused' if reused else ''}, replay {timings['replay_s']:.0f} s, evaluate "
        f"{timings['evaluate_s']:.0f} s)")
    return DemoResult(opts.out, session_dir, run["run_dir"], run["recording"], report, summary_path, metrics,
                      run["receipts"], run["printed"], reused, bus.label, ops_cmd, timings)


def replay_step(opts: DemoOptions, session_dir: Path, bus: Bus, say: Callable[[str], None]) -> dict:
    """Replay the session through ``bus`` while a watcher prints progress and receipts and records."""
    broker_log = logging.getLogger("wire.broker")
    level = broker_log.level
    if bus.in_process:  # open_bus warns once per client that it fell back; the demo said so already
        broker_log.setLevel(logging.ERROR)
    try:
        return _replay_step(opts, session_dir, bus, say)
    finally:
        broker_log.setLevel(level)


def _replay_step(opts: DemoOptions, session_dir: Path, bus: Bus, say: Callable[[str], None]) -> dict:
    from calibration.config import ConfigError
    from fusion.db import DatabaseError
    from walkout.demo_watch import Watcher, copy_frames
    from walkout.record import RecordingWriter
    from walkout.replay import ReplayError, ReplayOptions, open_source, replay
    from wire.broker import open_bus

    session_mcap = session_dir / "session.mcap"
    truth = json.loads((session_dir / "truth.json").read_text())
    meta = truth["session"]
    store_id = opts.store_id or open_source(session_mcap).store.store.id
    run_dir = opts.out / "run"
    recording_path = opts.out / "recording.mcap"
    writer = RecordingWriter(recording_path, store_id, store_files(session_attachments(session_mcap)))
    transport = open_bus(store_id, "demo-watch", "recorder", bus.host, bus.port, session_expiry=0,
                         client_id=f"walkout-{store_id}-demo-watch-{secrets.token_hex(4)}")
    watcher = Watcher(transport, float(meta["start_epoch"]), float(meta["duration_s"]),
                      int(truth["stats"].get("frames", 0)), say, writer)
    transport.start()
    ok = False
    try:
        if not transport.wait_ready(30.0):
            raise DemoError(f"{transport.description}: not connected after 30 s")
        watcher.start_progress(opts.progress_every_s)
        ropts = ReplayOptions(perception=opts.perception, shelf="gateway", speed=0.0, in_process=False,
                              broker=(bus.host, bus.port), store_id=store_id, model=Path(opts.model),
                              progress=lambda m: say(f"  replay: {m}") if m.startswith("replaying") else None)
        try:
            result = replay(session_dir, run_dir, ropts)
        except (ReplayError, ConfigError, DatabaseError, OSError) as exc:
            raise DemoError(f"the replay failed: {exc}") from None
        deadline = time.monotonic() + 30.0
        while watcher.receipt_count() < len(result.receipts) and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = True
    finally:
        watcher.stop_progress()
        transport.stop()
        if not ok:
            writer.close()
    say(watcher.progress_line())
    every = max(1, round(opts.fps / opts.recording_frames_hz)) if opts.recording_frames_hz > 0 else 0
    frames = copy_frames(session_mcap, writer, every) if every else 0
    writer.close()
    printed = watcher.receipt_count()
    missed = len(result.receipts) - printed
    say(f"  replay: {len(result.receipts)} receipts, {result.summary['published']} messages in "
        f"{result.summary['wall_s']:.0f} s via {result.summary['transport']}"
        + (f"; {missed} receipts did not reach the watcher" if missed > 0 else ""))
    say(f"  recording: {watcher.recorded} messages and {frames} camera frames -> {shown(recording_path)}")
    return {"run_dir": run_dir, "recording": recording_path, "receipts": result.receipts, "printed": printed}


def evaluate_step(session_dir: Path, run_dir: Path) -> tuple[dict, Path]:
    from walkout.evaluate import evaluate
    from walkout.replay import open_source
    from walkout.report import write_report

    try:
        ev = evaluate(session_dir, run_dir)
        index = write_report(ev, session_dir, run_dir, open_source(session_dir).store)
    except (FileNotFoundError, ValueError) as exc:
        raise DemoError(f"the evaluation failed: {exc}") from None
    return ev.metrics, index

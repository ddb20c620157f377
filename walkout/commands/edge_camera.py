"""``walkout edge camera``: the camera process -- frames in, one tracks message per frame out.

Sources (``--source``, once per ``--camera`` in the same order, or one session MCAP for all cameras): a video
file, an RTSP/HTTP(S) URL or a ``/dev/video*`` device (reconnects with backoff; dropped frames reported), a
folder of images (``timestamps.csv`` sidecar or ``--fps``), or a session MCAP's camera channels.  Several
cameras of one process go through the detector in one forward pass.  Messages go to the broker (``--broker``,
QoS 1 through a transport with an outbox; a retained status ``online`` with the counters every
``--status-every`` seconds, ``offline`` as last will, ``stopped`` at the end) or, with ``--dry-run``, to
stdout (``--json``: one message a line).  ``--evidence DIR`` keeps low-rate whole frames for the ops app
(``--evidence-fps``, ``--retention-days``; purged at start and every ten minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from calibration.config import ConfigError
from walkout.commands.replay import speed
from walkout.signals import set_from_signal

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "models/person_pose_int8.onnx"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camera", help="camera pipeline: frames to per-frame tracks on the broker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="store description YAML (default: the one attached to a session MCAP)")
    p.add_argument("--camera", action="append", required=True, metavar="ID",
                   help="camera id from the store description (repeat for several cameras)")
    p.add_argument("--source", action="append", required=True, metavar="SRC",
                   help="video file, rtsp:// or http:// URL, /dev/videoN, image folder, or session .mcap "
                        "(repeat per camera, in --camera order; one .mcap serves every camera)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="ONNX detector (default %(default)s)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: every core)")
    p.add_argument("--conf", type=float, default=0.25,
                   help="detection confidence threshold (default %(default)s)")
    p.add_argument("--classes",
                   help="class names or ids to keep, comma-separated (e.g. person for a COCO model)")
    p.add_argument("--device", help="this process's device id (default camera-<camera ids>)")
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker host:port (default %(default)s)")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-env", default="WALKOUT_MQTT_PASSWORD",
                   help="environment variable holding the MQTT password (default %(default)s)")
    p.add_argument("--outbox", help="outbox file: unacknowledged messages survive a restart")
    p.add_argument("--speed", type=speed, default=1.0,
                   help="pace files at this multiple of real time, or 'max' "
                        "(default 1; live sources: ignored)")
    p.add_argument("--fps", type=float, help="frame rate of an image folder or a video without one")
    p.add_argument("--start-time", type=float, help="capture time of a file's first frame, seconds since the "
                                                    "epoch (default: now)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (all cameras)")
    p.add_argument("--dry-run", action="store_true", help="print messages instead of publishing them")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON message per line; "
                                                       "the summary as JSON")
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between status messages")
    p.add_argument("--evidence", metavar="DIR", help="keep low-rate evidence frames in this folder")
    p.add_argument("--evidence-fps", type=float, default=2.0, help="evidence frames per second per camera")
    p.add_argument("--retention-days", type=float, default=7.0, help="days evidence frames are kept")
    p.add_argument("--evidence-clock", choices=["wall", "capture"], default="wall",
                   help="clock retention is counted on: the wall clock, or the latest capture time (replays "
                        "of old recordings)")
    p.set_defaults(func=main)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def _model_path(text: str) -> Path:
    p = Path(text)
    if not p.is_file() and not p.is_absolute() and (ROOT / p).is_file():
        p = ROOT / p
    if not p.is_file():
        raise ConfigError("--model", "<model>", f"model file {text!r} not found")
    return p


def _store_and_cameras(args: argparse.Namespace, sources):
    """The store description and the calibrations: from ``--store``, else from a session MCAP's
    attachments."""
    from calibration.camera import Camera, CameraFile, load_cameras
    from calibration.config import validate
    from calibration.store import load_store, store_from_dict
    from edge.sources import McapSource

    if args.store:
        store = load_store(args.store)
        return store, load_cameras(store)
    mcap = next((s for s in sources if isinstance(s, McapSource)), None)
    if mcap is None:
        raise ConfigError("--store", "<store>",
                          "give the store description (only a session MCAP carries one)")
    import yaml

    att = mcap.attachments()
    where = f"{mcap.path}!store.yaml"
    if "store.yaml" not in att:
        raise ConfigError(where, "<file>", "no store description attached; give --store")
    store = store_from_dict(yaml.safe_load(att["store.yaml"]), where)
    cams = {}
    for ref in store.cameras:
        if ref.file in att:
            f = validate(CameraFile, yaml.safe_load(att[ref.file]), f"{mcap.path}!{ref.file}")
            cams[ref.id] = Camera.from_pose(f.id, f.model, f.image_size, f.K, f.dist, f.pose.rvec,
                                            f.pose.tvec, fps=f.fps)
    return store, cams


def _device_id(args: argparse.Namespace) -> str:
    if args.device:
        return args.device
    dev = "camera-" + "-".join(args.camera)
    return dev if len(dev) <= 64 else f"camera-{args.camera[0]}-and-{len(args.camera) - 1}"


def _config_hash(store_hash: str, model: Path, args: argparse.Namespace) -> str:
    text = json.dumps({"store": store_hash, "model": model.name, "model_bytes": model.stat().st_size,
                       "cameras": args.camera, "conf": args.conf, "classes": args.classes}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def counters(pipeline, sources, evidence) -> dict[str, int]:
    """The process's counters for its status messages."""
    out = pipeline.counters.as_dict()
    out["source_errors"] = sum(s.stats.errors for s in sources)
    out["reconnects"] = sum(s.stats.reconnects for s in sources)
    if evidence is not None:
        out["evidence_stored"] = evidence.counters["stored"]
        out["evidence_purged"] = evidence.counters["purged"]
    return out


def main(args: argparse.Namespace) -> int:
    from edge.camera import CameraPipeline, run
    from edge.detector import Detector, DetectorModelError
    from edge.evidence import EvidenceRecorder, EvidenceStore
    from edge.sources import SourceError, frame_batches, open_sources
    from walkout import __version__
    from wire.codec import encode
    from wire.topics import Kind
    from wire.transport import status_message

    device = _device_id(args)
    try:
        sources = open_sources(args.source, args.camera, fps=args.fps, start=args.start_time)
        store, calib = _store_and_cameras(args, sources)
        model = _model_path(args.model)
    except (ConfigError, SourceError) as exc:
        return _fail(str(exc))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        detector = Detector(model, conf=args.conf, classes=classes, intra_op_threads=args.threads)
    except (DetectorModelError, ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    config_hash = _config_hash(store.config_hash(), model, args)

    stop = threading.Event()

    def on_signal(signum, frame):
        set_from_signal(stop)
        for s in sources:
            s.close()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (tests)
            pass

    evidence = None
    if args.evidence:
        try:
            estore = EvidenceStore(args.evidence, retention_s=args.retention_days * 86400.0)
            evidence = EvidenceRecorder(estore, fps=args.evidence_fps)
        except (ValueError, OSError) as exc:
            return _fail(f"--evidence: {exc}")
        if args.evidence_clock == "capture":
            evidence.clock = evidence.capture_clock

    transport = None
    if args.dry_run:
        seq = None
    else:
        from wire.mqtt import MqttTransport

        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            return _fail(f"--broker: expected host:port, got {args.broker!r}")
        password = os.environ.get(args.password_env) if args.username else None
        outbox = None
        if args.outbox:
            from wire.outbox import Outbox

            outbox = Outbox(args.outbox)
        transport = MqttTransport(store.store.id, device, "camera", host, int(port), username=args.username,
                                  password=password, outbox=outbox, version=__version__,
                                  config_hash=config_hash)
        seq = transport.seq
    try:
        pipeline = CameraPipeline(store, args.camera, detector, device=device, seq=seq, calibrations=calib)
    except ValueError as exc:
        return _fail(str(exc))

    if transport is None:
        def sink(msg) -> None:
            if args.json:
                print(encode(msg).decode(), flush=True)
            else:
                where = "  ".join(f"#{t.id} ({t.floor[0]:.2f}, {t.floor[1]:.2f})" for t in msg.tracks)
                print(f"{msg.camera} frame {msg.frame} ts {msg.ts:.3f} dropped {msg.dropped_frames} "
                      f"tracks {len(msg.tracks)}  {where}", flush=True)
        tick = None
    else:
        from edge.sources import McapSource
        from wire.clock import start_on_store_clock

        start_on_store_clock(transport, [s for s in sources if not isinstance(s, McapSource)])

        def sink(msg) -> None:
            transport.publish(Kind.TRACKS, msg.camera, msg)

        def publish_status(state: str) -> None:
            transport.publish(Kind.STATUS, device, status_message(
                device, "camera", state, transport.seq(), __version__, config_hash,
                counters(pipeline, sources, evidence)))

        last = [time.monotonic()]

        def tick() -> None:
            if time.monotonic() - last[0] >= args.status_every:
                last[0] = time.monotonic()
                publish_status("online")

    log.info("camera process %s: %s; model %s; %s", device, ", ".join(s.description for s in sources),
             model.name, transport.description if transport else "dry run")
    try:
        run(pipeline, frame_batches(sources, stop, speed=args.speed), sink, stop, evidence=evidence,
            tick=tick, max_frames=args.max_frames)
    finally:
        for s in sources:
            s.close()
        if evidence is not None:
            evidence.close()
        if transport is not None:
            publish_status("online")  # the final counters, retained until the transport's "stopped"
            transport.stop()
    summary = {"device": device, "cameras": args.camera, "model": model.name,
               **counters(pipeline, sources, evidence)}
    print(json.dumps(summary) if args.json else "  ".join(f"{k}={v}" for k, v in summary.items()),
          file=sys.stderr)
    return 0

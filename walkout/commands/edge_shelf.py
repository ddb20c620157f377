"""``walkout edge shelf``: the shelf gateway — load cells in, pick/put events out.

Sources (``--source``): a folder of AiFi-style per-plate CSV files, a session MCAP (its load-cell topics), or a
serial port / TCP socket speaking the ``walkout-loadcells`` line protocol (``/dev/ttyUSB0``,
``socket://host:port``; see :mod:`edge.shelf.readers`).  The planogram comes from ``--store`` (a walkout store
description), from ``--planogram`` (an AiFi product CSV as it is), or from a store description attached to the
MCAP.  Events go to the broker (``--broker``, QoS 1 through a transport with an outbox, status with last will
and counters), or, with ``--dry-run``, to stdout (``--json``: one JSON event a line).  Every status carries the
gateway's event-time low watermark (every event starting before it was published), also sent on its own every
``--watermark-every`` seconds: fusion waits for it before settling a visit, so a stalled link's events reach
the receipt.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from calibration.config import ConfigError
from calibration.store import Store, load_store, store_from_dict
from edge.shelf.detector import DetectorConfig
from edge.shelf.gateway import Layout, ShelfGateway, run
from edge.shelf.planogram import Planogram
from edge.shelf.readers import CsvFolderReader, LineReader, McapReader, Reader, load_calibration
from walkout import __version__
from walkout.signals import set_from_signal
from wire.clock import start_on_store_clock
from wire.codec import encode
from wire.messages import ShelfEventMsg
from wire.topics import Kind

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shelf", help="shelf gateway: load-cell streams to pick/put events",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True,
                   help="FOLDER of gondola_G_shelf_S_plate_P.csv, SESSION.mcap, or a serial/socket URL")
    p.add_argument("--store", help="store description YAML (lanes, load cells, planogram, catalogue)")
    p.add_argument("--planogram", help="AiFi product CSV (Name,Gondola,Shelf,Plate,Weight,Price,Image)")
    p.add_argument("--calibration", help="per-channel tare/scale file (YAML or JSON)")
    p.add_argument("--lanes", help="channel ids of a line source without a '# lanes' header, comma-separated")
    p.add_argument("--device", help="this gateway's device id (default: shelf-<host>)")
    p.add_argument("--store-id", help="store id for the topics when no store description is given")
    p.add_argument("--rate-hz", type=float, default=0.0, help="frame rate (default: the source's, else 60)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="pace a recording at this multiple of real time (default 0: as fast as possible)")
    p.add_argument("--dry-run", action="store_true", help="print events instead of publishing them")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON event per line")
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker host:port (default %(default)s)")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-env", default="WALKOUT_MQTT_PASSWORD",
                   help="environment variable holding the MQTT password (default %(default)s)")
    p.add_argument("--outbox", help="outbox file: unacknowledged events survive a restart")
    p.add_argument("--status-every", type=float, default=10.0,
                   help="seconds between full status messages (retained, with counters and the watermark)")
    p.add_argument("--watermark-every", type=float, default=0.25,
                   help="seconds between watermark heartbeats: small status messages with the gateway's "
                        "event-time low watermark, so fusion settles a visit without waiting for the next "
                        "full status (0: only the full status carries it; default %(default)s)")
    p.set_defaults(func=main)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def open_source(args: argparse.Namespace, cal) -> Reader:
    src = args.source
    if "://" in src or src.startswith(("/dev/", "COM")):
        lanes = [x for x in (args.lanes or "").split(",") if x]
        return LineReader(src, channels=lanes, calibration=cal)
    path = Path(src)
    if path.is_dir():
        return CsvFolderReader(path, calibration=cal)
    if path.suffix.lower() == ".mcap" or path.is_file():
        return McapReader(path, calibration=cal)
    raise ConfigError(src, "<source>", "not a folder, an MCAP file or a serial/socket URL")


def _store_from_mcap(reader: Reader) -> Store | None:
    if not isinstance(reader, McapReader):
        return None
    text = reader.store_yaml()
    if text is None:
        return None
    import yaml

    return store_from_dict(yaml.safe_load(text), f"{reader.path}:store attachment")


def build(args: argparse.Namespace) -> tuple[Reader, Layout, Planogram, str, str]:
    """Reader, layout, planogram, store id and config hash from the arguments (ConfigError on bad input)."""
    cal = load_calibration(args.calibration) if args.calibration else None
    store = load_store(args.store) if args.store else None
    reader = open_source(args, cal)
    if store is None and not args.planogram:
        store = _store_from_mcap(reader)
    if store is None and not args.planogram:
        raise ConfigError(args.source, "<planogram>", "no planogram: give --store or --planogram")
    if store is not None:
        channels = None if isinstance(reader, LineReader) else reader.channels
        layout = Layout.from_store(store, channels)
        if not layout.shelves:
            raise ConfigError(args.store or args.source, "shelf_units",
                              "no lane of the store has a channel in the source")
    else:
        if not reader.channels:
            raise ConfigError(args.source, "<channels>", "the source names no channels (give --lanes)")
        layout = Layout.from_channels(reader.channels, reader.shelf_hint)
    if args.planogram:
        planogram = Planogram.from_aifi_csv(args.planogram, lanes=layout.lanes)
        if store is not None:  # the store's catalogue fills in products the CSV lacks
            for sku, prod in Planogram.from_store(store).products.items():
                planogram.products.setdefault(sku, prod)
    else:
        planogram = Planogram.from_store(store)
    store_id = store.store.id if store is not None else (args.store_id or "store")
    config_hash = store.config_hash() if store is not None else ""
    return reader, layout, planogram, store_id, config_hash


def _transport(args: argparse.Namespace, store_id: str, device: str, config_hash: str):
    from wire.mqtt import MqttTransport
    from wire.outbox import Outbox

    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--broker", "<broker>", f"expected host:port, got {args.broker!r}")
    password = os.environ.get(args.password_env) if args.username else None
    return MqttTransport(store_id, device, "shelf", host, int(port), username=args.username, password=password,
                         outbox=Outbox(args.outbox) if args.outbox else None, version=__version__,
                         config_hash=config_hash)


def main(args: argparse.Namespace) -> int:
    device = args.device or f"shelf-{socket.gethostname().split('.')[0]}"
    try:
        reader, layout, planogram, store_id, config_hash = build(args)
    except ConfigError as exc:
        return _fail(str(exc))
    rate = args.rate_hz or reader.rate_hz or 60.0
    rate = float(round(rate)) if abs(rate - round(rate)) < 0.05 * rate else rate
    stop = threading.Event()

    def on_signal(signum, frame):
        set_from_signal(stop)
        reader.close()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (tests)
            pass

    transport = None
    if args.dry_run:
        counter = iter(range(1 << 62))
        gateway = ShelfGateway(layout, planogram, device, lambda: next(counter), rate,
                               DetectorConfig(rate_hz=rate))

        def sink(msg: ShelfEventMsg) -> None:
            if args.json:
                print(encode(msg).decode(), flush=True)
            else:
                best = msg.candidates[0] if msg.candidates else None
                what = f"{best.qty} x {best.sku} (p={best.p:.2f}{', foreign' if best.foreign else ''})" \
                    if best else "unknown"
                lanes = " ".join(f"{ln.lane}:{ln.delta_g:+.1f}" for ln in msg.lanes)
                print(f"{msg.action:4s} shelf {msg.shelf} {msg.t_start:.2f}-{msg.t_end:.2f} "
                      f"{msg.delta_g:+.1f} g  {what}  [{lanes}]", flush=True)
        tick = None
    else:
        try:
            transport = _transport(args, store_id, device, config_hash)
        except ConfigError as exc:
            return _fail(str(exc))
        start_on_store_clock(transport, [reader] if isinstance(reader, LineReader) else [])
        gateway = ShelfGateway(layout, planogram, device, transport.seq, rate, DetectorConfig(rate_hz=rate))

        def sink(msg: ShelfEventMsg) -> None:
            transport.publish(Kind.SHELF_EVENTS, msg.shelf, msg)

        last = [time.monotonic(), time.monotonic()]  # full status, watermark heartbeat

        def tick() -> None:
            now = time.monotonic()
            if now - last[0] >= args.status_every:
                last[0] = last[1] = now
                publish_status(transport, device, config_hash, gateway, reader, "online")
            elif args.watermark_every > 0 and now - last[1] >= args.watermark_every:
                last[1] = now
                publish_watermark(transport, device, config_hash, gateway)

    log.info("shelf gateway %s: %s, %d shelves, %d lanes, %.0f Hz", device, reader.description,
             len(layout.shelves), len(layout.lanes), rate)
    try:
        run(reader, gateway, sink, stop, speed=args.speed, tick=tick)
    finally:
        reader.close()
        if transport is not None:
            publish_status(transport, device, config_hash, gateway, reader, "online")
            transport.stop()
    summary = {"device": device, "source": reader.description, "shelves": len(layout.shelves),
               "lanes": len(layout.lanes), "rate_hz": rate, **gateway.counters(reader)}
    print(json.dumps(summary) if args.json else "  ".join(f"{k}={v}" for k, v in summary.items()),
          file=sys.stderr)
    return 0


def publish_status(transport, device: str, config_hash: str, gateway: ShelfGateway, reader: Reader,
                   state: str) -> None:
    """A retained status with the gateway's counters (the transport publishes online/offline/stopped)."""
    from wire.transport import status_message

    msg = status_message(device, "shelf", state, transport.seq(), __version__, config_hash,
                         gateway.counters(reader), watermark=gateway.watermark(),
                         shelf_watermarks=gateway.watermarks())
    transport.publish(Kind.STATUS, device, msg)


def publish_watermark(transport, device: str, config_hash: str, gateway: ShelfGateway) -> None:
    """A small ``online`` status with the gateway's low watermark (no counters), stamped with the capture time
    of the newest frame processed: fusion settles a visit once every shelf gateway's watermark has passed its
    exit.  Nothing before the first frame (no watermark yet)."""
    from wire.transport import status_message

    wm = gateway.watermark()
    if wm is None:
        return
    msg = status_message(device, "shelf", "online", transport.seq(), __version__, config_hash, watermark=wm,
                         ts=gateway.processed_until, shelf_watermarks=gateway.watermarks())
    transport.publish(Kind.STATUS, device, msg)

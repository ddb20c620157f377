"""``walkout record --store STORE.yaml --out FILE.mcap``: record every topic of a store to MCAP.

Subscribes (through the broker at ``--broker``) to the store's tracks, shelf events, load cells, gate
entries, status, carts, receipts and account topics and writes each message as it arrives: receive time as
the log time, capture time as the publish time, JSON channels with their jsonschema (Foxglove opens the
file).  ``--frames-every N`` with ``--camera ID --source SRC`` pairs also keeps every Nth camera frame
(``foxglove.CompressedImage``).  The store description and its camera files are attached.  Stops on SIGINT
or SIGTERM (after writing what the broker already sent: until no message came for 0.3 s), or after
``--duration`` seconds; prints ``recording`` once subscribed.  ``walkout replay FILE.mcap``
replays the recording into fusion.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from walkout.commands.replay import broker
from walkout.signals import set_from_signal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record every topic of a store to an MCAP file (opens in Foxglove)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="store description YAML")
    p.add_argument("--out", required=True, help="MCAP file to write")
    p.add_argument("--store-id", help="record this store id's topics (default: the store's)")
    p.add_argument("--broker", type=broker, default=("127.0.0.1", 1883), help="MQTT broker host:port")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-env", default="WALKOUT_MQTT_PASSWORD",
                   help="environment variable holding the MQTT password (default %(default)s)")
    p.add_argument("--device", default="recorder", help="device id (default %(default)s)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--frames-every", type=int, default=0, help="also keep every Nth frame of each --source")
    p.add_argument("--camera", action="append", default=[], metavar="ID", help="camera id of the next --source")
    p.add_argument("--source", action="append", default=[], metavar="SRC",
                   help="frame source of a camera (video, URL, device, image folder), for --frames-every")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from calibration.config import ConfigError
    from calibration.store import load_store
    from walkout import __version__
    from walkout.record import FrameTap, Recorder, RecordingWriter, store_attachments
    from wire.mqtt import MqttTransport

    try:
        store = load_store(args.store)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.frames_every and (not args.source or len(args.source) != len(args.camera)):
        print("error: --frames-every needs one --camera per --source", file=sys.stderr)
        return 1
    sources = []
    if args.frames_every:
        from edge.sources import SourceError, open_sources

        try:
            sources = open_sources(args.source, args.camera)
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    store_id = args.store_id or store.store.id
    writer = RecordingWriter(args.out, store_id, store_attachments(store, Path(args.store)))
    host, port = args.broker
    password = os.environ.get(args.password_env) if args.username else None
    transport = MqttTransport(store_id, args.device, "recorder", host, port, username=args.username,
                              password=password, version=__version__, config_hash=store.config_hash())
    recorder = Recorder(transport, writer)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: set_from_signal(stop))
    transport.start()
    if not transport.wait_ready(30.0):
        print(f"error: no broker at {host}:{port} after 30 s", file=sys.stderr)
        transport.stop()
        writer.close()
        return 1
    tap = FrameTap(sources, writer, args.frames_every).start() if sources else None
    print(f"recording {store_id} from {transport.description} to {args.out}", flush=True)
    t_end = time.monotonic() + args.duration if args.duration else None
    while not stop.wait(0.2):
        if t_end is not None and time.monotonic() >= t_end:
            break
    if tap is not None:
        tap.close()
    # what the broker already sent is still arriving: keep writing until it has been quiet for a moment
    deadline = time.monotonic() + 10.0
    last = -1
    while recorder.received != last and time.monotonic() < deadline:
        last = recorder.received
        time.sleep(0.3)
    transport.stop()
    writer.close()
    print(json.dumps({"out": args.out, "received": recorder.received, "counts": writer.counts,
                      "frames": tap.kept if tap else 0}), file=sys.stderr)
    return 0

"""``walkout fusion``: the store's fusion process.

Subscribes (persistent MQTT session) to the store's tracks, shelf events, gate entries and device status;
keeps visits, carts, receipts and the payment ledger in the database (``--db``: a SQLite file by default,
``postgresql+psycopg://user@host/db[?schema=NAME]`` in production); publishes live carts, receipts and account
standings; recovers after a crash from its last snapshot and the messages it committed since.  Status with a
last will and counters on ``status/{device}``; Prometheus metrics on ``--metrics-port``.  SIGTERM or SIGINT
stop it cleanly (snapshot, ``stopped`` status).  Prints ``fusion ready`` on stdout once it is subscribed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from calibration.config import ConfigError
from calibration.store import load_store
from walkout import __version__
from walkout.signals import set_from_signal

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fusion",
        help="fusion: shoppers, visits, carts, receipts and charging",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", required=True, help="store description YAML")
    p.add_argument(
        "--db",
        default=os.environ.get("WALKOUT_DB", "walkout.db"),
        help="database URL or SQLite file (default $WALKOUT_DB or walkout.db)",
    )
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker host:port (default %(default)s)")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password", help="MQTT password (prefer --password-env: arguments are visible to ps)")
    p.add_argument(
        "--password-env",
        default="WALKOUT_MQTT_PASSWORD",
        help="environment variable holding the MQTT password (default %(default)s)",
    )
    p.add_argument("--tls-ca", help="CA file: connect with TLS")
    p.add_argument("--tls-cert", help="client certificate (TLS)")
    p.add_argument("--tls-key", help="client key (TLS)")
    p.add_argument("--config", help="fusion settings YAML (fusion.config.FusionConfig)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument(
        "--metrics-addr", default="127.0.0.1", help="address for the metrics (default %(default)s)"
    )
    p.add_argument("--device", default="fusion", help="device id in topics and status (default %(default)s)")
    p.add_argument("--outbox", help="outbox file: published messages not yet acknowledged survive a restart")
    p.add_argument(
        "--snapshot-every",
        type=float,
        default=30.0,
        help="seconds of event time between engine snapshots (default %(default)s)",
    )
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between status messages")
    p.add_argument(
        "--create-accounts",
        action="store_true",
        help="demo and simulator: give unknown accounts a paying card at entry",
    )
    p.set_defaults(func=main)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def main(args: argparse.Namespace) -> int:
    from fusion.config import FusionConfig
    from fusion.db import Database, DatabaseError
    from fusion.payments import LedgerGateway
    from fusion.service import FusionService, ServiceSettings, load_fusion_config
    from walkout.commands.edge_gate import broker_address
    from wire.clock import ClockBeacon
    from wire.mqtt import MqttTransport, TlsFiles
    from wire.outbox import Outbox
    from wire.topics import Kind
    from wire.transport import status_message

    try:
        store = load_store(args.store)
        cfg = load_fusion_config(args.config) if args.config else FusionConfig()
        host, port = broker_address(args.broker)
        if args.snapshot_every <= 0:
            raise ConfigError("--snapshot-every", "<flag>", "must be > 0")
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        db = Database(args.db)
        db.migrate()
    except DatabaseError as exc:
        return _fail(f"--db: {exc}")
    password = (
        args.password
        if args.password is not None
        else (os.environ.get(args.password_env) if args.username else None)
    )
    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    transport = MqttTransport(
        store.store.id,
        args.device,
        "fusion",
        host,
        port,
        username=args.username,
        password=password,
        tls=tls,
        outbox=Outbox(args.outbox) if args.outbox else None,
        version=__version__,
        config_hash=store.config_hash(),
    )
    payments = LedgerGateway(db, currency=store.store.currency)
    settings = ServiceSettings(
        device=args.device, snapshot_every_s=args.snapshot_every, create_accounts=args.create_accounts
    )
    service = FusionService(store, db, transport, payments, cfg, settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        set_from_signal(stop)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    if args.metrics_port is not None:
        service.metrics.serve(args.metrics_port, args.metrics_addr)

    def publish_status() -> None:
        msg = status_message(
            args.device,
            "fusion",
            "online",
            transport.seq(),
            __version__,
            store.config_hash(),
            service.status_counters(),
        )
        transport.publish(Kind.STATUS, args.device, msg)

    service.start()
    beacon = ClockBeacon(transport)
    ready = False
    waited = 0.0
    while not stop.is_set():
        if not ready and transport.wait_ready(0.2):
            ready = True
            print(f"fusion ready: store {store.store.id}, {db!r}, {transport.description}", flush=True)
        if ready:
            beacon.beat()  # the store clock (wire.clock): the edge devices stamp capture times on it
        if stop.wait(0.2 if not ready else beacon.period_s):
            break
        waited += 0.2 if not ready else beacon.period_s
        if waited >= args.status_every:
            waited = 0.0
            service.tick()
            publish_status()
    service.stop("stopped")
    db.dispose()
    print(json.dumps(service.status_counters()), file=sys.stderr)
    return 0

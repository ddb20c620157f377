"""``walkout edge gate``: the entry gate — scanned app codes in, entries out.

Reads one scanned code per line from the scanner (``--source stdin``, ``tcp://host:port`` or
``serial:///dev/ttyUSB0?baud=9600``), verifies it with the store's entry-code secret (``entry_codes`` in the
store description: ``secret_file``, else the variable named by ``secret_env``), refuses forged, expired and
replayed codes and accounts whose last payment failed (the retained account standing fusion publishes), and
publishes each accepted entry (QoS 1 through the outbox).  One line per scan on stdout (``--json``: one JSON
object); counters in the status message and on stderr at the end.  ``--used-codes FILE`` keeps used code ids
so a replay is refused across a restart of the gate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from calibration.config import ConfigError
from calibration.store import base_dir_of, load_store
from edge.gate import EntryGate, SourceError, scan_lines
from walkout import __version__
from walkout.signals import set_from_signal
from wire.clock import start_on_store_clock
from wire.entry_codes import UsedCodes, load_secret
from wire.topics import Kind

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate",
        help="entry gate: verify scanned app codes and publish entries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", required=True, help="store description YAML")
    p.add_argument("--gate", required=True, help="gate id (one of the store's gates)")
    p.add_argument(
        "--source", default="stdin", help="stdin, tcp://host:port or serial:///dev/PORT (default stdin)"
    )
    p.add_argument("--used-codes", help="SQLite file of used code ids (replays refused across restarts)")
    p.add_argument("--device", help="this gate's device id (default: the gate id)")
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker host:port (default %(default)s)")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument(
        "--password-env",
        default="WALKOUT_MQTT_PASSWORD",
        help="environment variable holding the MQTT password (default %(default)s)",
    )
    p.add_argument("--tls-ca", help="CA file: connect with TLS")
    p.add_argument("--tls-cert", help="client certificate (TLS)")
    p.add_argument("--tls-key", help="client key (TLS)")
    p.add_argument("--outbox", help="outbox file: entries not yet acknowledged survive a restart")
    p.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds to take in the retained account standings before reading scans",
    )
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between status messages")
    p.add_argument("--json", action="store_true", help="one JSON object per scan")
    p.set_defaults(func=main)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


class _Stop(Exception):
    pass


def broker_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--broker", "<broker>", f"expected host:port, got {value!r}")
    return host, int(port)


def main(args: argparse.Namespace) -> int:
    from wire.mqtt import MqttTransport, TlsFiles
    from wire.outbox import Outbox
    from wire.transport import status_message

    try:
        store = load_store(args.store)
        if args.gate not in {g.id for g in store.gates}:
            raise ConfigError(args.store, "gates", f"the store has no gate {args.gate!r}")
        settings = store.entry_codes
        secret_file = settings.secret_file
        if secret_file and not Path(secret_file).is_absolute() and base_dir_of(store) is not None:
            secret_file = str(base_dir_of(store) / secret_file)
        try:
            secret = load_secret(settings.secret_env, secret_file)
        except (ValueError, OSError) as exc:
            raise ConfigError(args.store, "entry_codes", str(exc)) from None
        host, port = broker_address(args.broker)
    except ConfigError as exc:
        return _fail(str(exc))
    device = args.device or args.gate
    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    password = os.environ.get(args.password_env) if args.username else None
    # session_expiry=0: a fresh session on every start, so the broker sends the retained standings again
    transport = MqttTransport(
        store.store.id,
        device,
        "gate",
        host,
        port,
        username=args.username,
        password=password,
        tls=tls,
        outbox=Outbox(args.outbox) if args.outbox else None,
        session_expiry=0,
        version=__version__,
        config_hash=store.config_hash(),
    )
    used = UsedCodes(args.used_codes)
    if not args.used_codes:
        log.warning("no --used-codes file: a code used before a restart of the gate would be accepted again")
    gate = EntryGate(store.store.id, args.gate, secret, transport, used)
    gate.attach()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        set_from_signal(stop)
        raise _Stop

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def publish_status() -> None:
        msg = status_message(
            device, "gate", "online", transport.seq(), __version__, store.config_hash(), dict(gate.counters)
        )
        transport.publish(Kind.STATUS, device, msg)

    def ticker() -> None:
        while not stop.wait(args.status_every):
            publish_status()

    start_on_store_clock(transport, [gate])  # entries are stamped (and codes checked) on the store clock
    try:
        if not transport.wait_ready(10.0):
            log.warning(
                "gate %s: broker %s not reachable yet; scans are queued in the outbox", device, args.broker
            )
        time.sleep(max(0.0, args.settle))
        threading.Thread(target=ticker, name="gate-status", daemon=True).start()
        print(f"gate {args.gate} ready ({transport.description})", file=sys.stderr, flush=True)
        for line in scan_lines(args.source, stop):
            result = gate.scan(line)
            if result is None:
                continue
            print(json.dumps(result.as_dict()) if args.json else result.line(), flush=True)
    except _Stop:
        pass
    except SourceError as exc:
        stop.set()
        transport.stop()
        return _fail(str(exc))
    finally:
        stop.set()
    publish_status()
    transport.stop()
    used.close()
    print(
        json.dumps(dict(gate.counters))
        if args.json
        else "  ".join(f"{k}={v}" for k, v in sorted(gate.counters.items())),
        file=sys.stderr,
    )
    return 0

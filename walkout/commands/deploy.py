"""``walkout deploy mosquitto``: render the store broker's files from the store description.

Writes into ``--out``: ``conf.d/walkout.conf`` (authentication, ACL file, persistence, limits),
``conf.d/listeners.conf`` (plain MQTT on loopback for the store server's own processes, TLS on ``--tls-port``
for the edge devices), ``conf.d/bridge.conf`` with ``--bridge HOST:PORT`` (a chain of stores: the store broker
bridged to the central cluster), ``acl`` (each device publishes only its own topics), ``devices.txt`` and
``README.txt``.  With ``--passwords``: a fresh random password per device, ``passwd`` hashed by
``mosquitto_passwd -U``, the plain ones in ``secrets/DEVICE.env`` (mode 0600) to hand to each device.
See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import sys

from calibration.config import ConfigError
from calibration.store import load_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="render deployment files (Mosquitto config, ACL, passwords, bridge)")
    verbs = p.add_subparsers(dest="deploy_verb", metavar="VERB", required=True)
    m = verbs.add_parser("mosquitto", help="the store broker's config, ACL and passwords",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--store", required=True, help="store description YAML")
    m.add_argument("--out", required=True, help="folder for the files")
    m.add_argument("--devices", help="devices file (YAML) instead of the default grouping")
    m.add_argument("--etc", default="/etc/mosquitto/walkout",
                   help="where passwd, acl and TLS files live on the broker host (default %(default)s)")
    m.add_argument("--tls-port", type=int, default=8883, help="TLS listener port (0: none; default %(default)s)")
    m.add_argument("--local-port", type=int, default=1883, help="loopback listener port (default %(default)s)")
    m.add_argument("--bridge", metavar="HOST:PORT", help="bridge to the chain's central broker")
    m.add_argument("--bridge-user", help="user name on the central broker (default walkout-STORE)")
    m.add_argument("--passwords", action="store_true",
                   help="generate passwd (hashed) and secrets/DEVICE.env with fresh random passwords")
    m.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from walkout.deploy import Bridge, TlsListener, load_devices, write_deployment, write_passwords

    try:
        store = load_store(args.store)
        devices = load_devices(args.devices, store) if args.devices else None
        tls = None
        if args.tls_port:
            tls = TlsListener(port=args.tls_port, cafile=f"{args.etc}/ca.crt", certfile=f"{args.etc}/server.crt",
                              keyfile=f"{args.etc}/server.key")
        bridge = None
        if args.bridge:
            host, _, port = args.bridge.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError("--bridge", "<flag>", f"expected host:port, got {args.bridge!r}")
            bridge = Bridge(args.bridge, store.store.id, cafile=f"{args.etc}/central-ca.crt",
                            username=args.bridge_user or f"walkout-{store.store.id}")
        dep = write_deployment(store, args.out, etc=args.etc, devices=devices, tls=tls, bridge=bridge,
                               local_port=args.local_port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.passwords:
        try:
            write_passwords(dep)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for name, path in sorted(dep.files.items()):
        print(f"{name:10s} {path}")
    print(f"{len(dep.devices)} devices; see {dep.files['readme']}")
    return 0

"""``walkout ops``: the ops review web app and the shopper API, and its user and token tools.

    walkout ops --store STORE.yaml [--db URL] [--host H] [--port P] [--evidence DIR] [--broker HOST:PORT]
    walkout ops add-user NAME --role viewer|reviewer|admin [--db URL]     (password from a prompt or stdin)
    walkout ops set-password NAME [--db URL]                                (password from a prompt or stdin)
    walkout ops issue-token ACCOUNT [--label L] [--db URL]                  (prints the shopper's API token once)

The app serves the review queue, visit pages with their evidence and the actions (confirm, remove, add or move
a line, approve, refund) on ``--host``/``--port``; ``--evidence`` is the edge cameras' evidence folder (frames
by camera and time); ``--broker`` subscribes to the store's tracks, load-cell blocks and shelf events and keeps
the evidence around each event (weight trace, boxes and wrists).  Passwords are never taken as arguments.
Entry codes are signed with the store's ``entry_codes`` secret (its file or environment variable); without
one the shopper API refuses to issue codes.  Serve it behind TLS and pass ``--secure-cookies``.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import threading
import time

from calibration.config import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ops",
        help="ops review web app, shopper API, users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _db_flag(p, default=os.environ.get("WALKOUT_DB", "walkout.db"))
    p.add_argument("--store", help="store description YAML (required to serve)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    p.add_argument(
        "--evidence", metavar="DIR", help="evidence frames folder (walkout edge camera --evidence)"
    )
    p.add_argument(
        "--evidence-max-dt",
        type=float,
        default=2.0,
        help="seconds a kept frame may be from the event moment (default %(default)s)",
    )
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (serve over HTTPS)")
    p.add_argument("--session-hours", type=float, default=12.0, help="login session lifetime (default 12)")
    p.add_argument(
        "--refund-limit",
        type=int,
        default=5000,
        help="largest refund (minor units) a reviewer may make; above it an admin (default 5000)",
    )
    p.add_argument("--broker", help="MQTT broker host:port: keep the evidence around shelf events")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument(
        "--password-env",
        default="WALKOUT_MQTT_PASSWORD",
        help="environment variable holding the MQTT password (default %(default)s)",
    )
    p.add_argument(
        "--retention-days",
        type=float,
        default=30.0,
        help="days the per-event evidence (weights, tracks) is kept (default 30)",
    )
    p.set_defaults(func=serve)
    verbs = p.add_subparsers(dest="ops_verb", metavar="VERB")
    a = verbs.add_parser("add-user", help="add a staff user (password from a prompt or stdin)")
    a.add_argument("name", help="user name")
    a.add_argument("--role", required=True, choices=["viewer", "reviewer", "admin"], help="the user's role")
    a.add_argument("--password", nargs="?", action=_NoPasswordArgument, help=argparse.SUPPRESS)
    _db_flag(a)
    a.set_defaults(func=add_user)
    s = verbs.add_parser("set-password", help="set a staff user's password (prompt or stdin)")
    s.add_argument("name", help="user name")
    s.add_argument("--password", nargs="?", action=_NoPasswordArgument, help=argparse.SUPPRESS)
    _db_flag(s)
    s.set_defaults(func=set_password)
    t = verbs.add_parser("issue-token", help="issue a shopper API token for an account (printed once)")
    t.add_argument("account", help="the shopper's account id")
    t.add_argument("--label", default="app", help="what the token is for (default %(default)s)")
    _db_flag(t)
    t.set_defaults(func=issue_token)


class _NoPasswordArgument(argparse.Action):
    """Refuses ``--password VALUE`` without echoing the value (argparse would print it back)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: object,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "passwords are not taken as arguments (shell history and ps would keep them): type it at "
            "the prompt or pipe it on standard input"
        )


def _db_flag(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument(
        "--db",
        default=default if default is not None else argparse.SUPPRESS,
        help="database URL or SQLite file (default $WALKOUT_DB or walkout.db)",
    )


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def _database(url: str):
    from fusion.db import Database

    db = Database(url)
    db.migrate()
    return db


def read_password(prompt: str = "Password: ") -> str:
    """From the terminal (asked twice, not echoed), or the first line of standard input when it is not one."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def add_user(args: argparse.Namespace) -> int:
    from fusion.db import DatabaseError
    from fusion.ops.auth import AuthError, Users

    try:
        password = read_password()
        db = _database(args.db)
        user = Users(db).create(args.name, args.role, password, actor=f"cli:{getpass.getuser()}")
    except (AuthError, ValueError, DatabaseError) as exc:
        return _fail(str(exc))
    print(f"user {user.name} added with role {user.role}")
    return 0


def set_password(args: argparse.Namespace) -> int:
    from fusion.db import DatabaseError
    from fusion.ops.auth import AuthError, Users

    try:
        password = read_password("New password: ")
        db = _database(args.db)
        Users(db).set_password(args.name, password, actor=f"cli:{getpass.getuser()}")
    except (AuthError, ValueError, DatabaseError) as exc:
        return _fail(str(exc))
    print(f"password of {args.name} changed; their sessions are closed")
    return 0


def issue_token(args: argparse.Namespace) -> int:
    from fusion.db import DatabaseError
    from fusion.ops.auth import AuthError, ShopperTokens

    try:
        db = _database(args.db)
        token = ShopperTokens(db).issue(args.account, label=args.label, actor=f"cli:{getpass.getuser()}")
    except (AuthError, DatabaseError) as exc:
        return _fail(str(exc))
    print(token)
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from calibration.camera import load_cameras
    from calibration.store import load_store
    from fusion.db import DatabaseError
    from fusion.ops import tap as tap_mod
    from fusion.ops.app import OpsSettings, create_app
    from fusion.ops.auth import AuthSettings
    from fusion.ops.review import ReviewSettings
    from fusion.payments import LedgerGateway
    from wire.entry_codes import load_secret

    if not args.store:
        return _fail(
            "--store is required to serve the app (or give a verb: add-user, set-password, issue-token)"
        )
    try:
        store = load_store(args.store)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.refund_limit < 0 or args.session_hours <= 0:
        return _fail("--refund-limit must be >= 0 and --session-hours > 0")
    try:
        db = _database(args.db)
    except DatabaseError as exc:
        return _fail(f"--db: {exc}")
    try:
        secret: bytes | None = load_secret(store.entry_codes.secret_env, store.entry_codes.secret_file)
    except (OSError, ValueError) as exc:
        log.warning("entry codes disabled: %s", exc)
        secret = None
    sizes: dict[str, tuple[int, int]] = {}
    try:
        sizes = {cid: cam.size for cid, cam in load_cameras(store).items()}
    except (OSError, ConfigError, ValueError) as exc:
        log.warning("camera files not read (%s): track boxes are drawn unscaled on evidence frames", exc)
    evidence = None
    if args.evidence:
        from edge.evidence import EvidenceStore  # walkout may import edge; fusion may not

        evidence = EvidenceStore(args.evidence)
    settings = OpsSettings(
        auth=AuthSettings(session_ttl_s=args.session_hours * 3600, secure_cookies=args.secure_cookies),
        review=ReviewSettings(refund_limit=args.refund_limit),
        frame_max_dt_s=args.evidence_max_dt,
    )
    payments = LedgerGateway(db, currency=store.store.currency)
    app = create_app(
        db, store, payments, settings=settings, evidence=evidence, entry_secret=secret, camera_sizes=sizes
    )
    transport = None
    tap = None
    if args.broker:
        from walkout import __version__
        from walkout.commands.edge_gate import broker_address
        from wire.mqtt import MqttTransport

        try:
            host, port = broker_address(args.broker)
        except ConfigError as exc:
            return _fail(str(exc))
        transport = MqttTransport(
            store.store.id,
            "ops",
            "ops",
            host,
            port,
            username=args.username,
            password=os.environ.get(args.password_env) if args.username else None,
            version=__version__,
            config_hash=store.config_hash(),
        )
        tap = tap_mod.EvidenceTap(db)
        tap.attach(transport)
        transport.start()
    stop = threading.Event()

    def upkeep() -> None:
        wait = 1.0
        while not stop.wait(wait):
            wait = 3600.0
            try:
                app.state.ops.users.prune()
                if tap is not None and tap.clock > 0:
                    with db.begin() as conn:
                        tap_mod.prune(conn, tap.clock - args.retention_days * 86400)
            except Exception:
                log.exception("ops upkeep failed")

    threading.Thread(target=upkeep, name="ops-upkeep", daemon=True).start()
    print(f"ops app on http://{args.host}:{args.port} for store {store.store.id}, {db!r}", flush=True)
    t0 = time.monotonic()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=True)
    finally:
        stop.set()
        if tap is not None:
            tap.flush()
        if transport is not None:
            transport.stop("stopped")
        db.dispose()
        log.info("ops app stopped after %.0f s", time.monotonic() - t0)
    return 0

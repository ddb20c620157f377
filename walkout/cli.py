"""The ``walkout`` command line.  Each verb lives in its own module under ``walkout/commands/`` with a
``register(subparsers)`` function that adds its parser and sets ``func``; ``COMMANDS`` lists them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from walkout import __version__

# Modules under walkout.commands, one per verb (or verb group).  Add a line to add a verb.
COMMANDS = [
    "walkout.commands.store",
    "walkout.commands.edge",
    "walkout.commands.calibrate",
    "walkout.commands.fusion",
    "walkout.commands.sim",
    "walkout.commands.replay",
    "walkout.commands.eval",
    "walkout.commands.record",
    "walkout.commands.ops",
    "walkout.commands.deploy",
    "walkout.commands.demo",
]

log = logging.getLogger("walkout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walkout", description="Just-walk-out checkout: cameras, shelves, "
                                     "fusion, simulator, replay and ops tools.")
    parser.add_argument("--version", action="version", version=f"walkout {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``walkout edge {camera,shelf,gate}``: the edge processes.  Each lives in its own module listed in
``EDGE_VERBS`` with a ``register(subparsers)`` function."""

from __future__ import annotations

import argparse
import importlib

EDGE_VERBS: list[str] = ["walkout.commands.edge_shelf", "walkout.commands.edge_gate",
                         "walkout.commands.edge_camera"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edge", help="edge processes: camera pipeline, shelf gateway, entry gate")
    verbs = p.add_subparsers(dest="edge_verb", metavar="VERB", required=True)
    for name in EDGE_VERBS:
        importlib.import_module(name).register(verbs)

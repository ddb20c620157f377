"""``walkout store check STORE.yaml``: validate a store description and print a summary."""

from __future__ import annotations

import argparse
import json
import sys

from calibration.config import ConfigError
from calibration.store import load_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="store description tools")
    verbs = p.add_subparsers(dest="store_verb", metavar="VERB", required=True)
    c = verbs.add_parser("check", help="validate a store description (exit 1 with the field on error)")
    c.add_argument("store", help="store YAML file")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    try:
        store = load_store(args.store)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {
        "store": store.store.id,
        "products": len(store.catalogue),
        "shelf_units": len(store.shelf_units),
        "shelves": len(store.shelves),
        "lanes": len(store.lanes),
        "gates": len(store.gates),
        "exits": len(store.exits),
        "cameras": len(store.cameras),
        "config_hash": store.config_hash(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print("  ".join(f"{k}={v}" for k, v in summary.items()))
    return 0

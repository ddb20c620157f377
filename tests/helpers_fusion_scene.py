"""The fusion service's scripted session: four shoppers, one after the other, each ending differently.

* alice picks a P2 from L2 and pays (``charged``, 200);
* bob picks a P5 from L5, but the shelf's product identification is unsure (p = 0.6): ``held_for_review``;
* dave's card declines: his entry hold fails and so does the capture of his P3 (``payment_failed``),
  which blocks his account;
* carol picks a P1 from L1 and puts it back (``no_charge``, the hold is cancelled);
* an event on L6 with nobody near it goes to review as ``Unassigned``.

Used by the in-process service tests, the kill test (published from the test through Mosquitto) and the
benchmark.  ``scene_yaml`` writes the store as a file for ``walkout fusion --store``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from calibration.store import Store, store_from_dict
from tests.fusion_scene import (
    ScriptedShopper,
    entry,
    lane_target,
    scene_cameras,
    scene_store,
    shelf_event,
    tracks_messages,
)
from wire.messages import Candidate

ACCOUNTS = {"alice": "acct-alice", "bob": "acct-bob", "dave": "acct-dave", "carol": "acct-carol"}
DECLINING = ("acct-dave",)
EXPECTED = {  # account -> (receipt status, total)
    "acct-alice": ("charged", 200),
    "acct-bob": ("held_for_review", 500),
    "acct-dave": ("payment_failed", 300),
    "acct-carol": ("no_charge", 0),
}
T_END = 27.0


def store_data(store_id: str = "t1") -> dict:
    """The scene's store description as a plain dict (what a YAML file holds)."""
    data = scene_store().model_dump(mode="json")
    data["store"]["id"] = store_id
    return data


def scene_store_with_id(store_id: str) -> Store:
    return store_from_dict(store_data(store_id))


def scene_yaml(path: Path, store_id: str) -> Path:
    path.write_text(yaml.safe_dump(store_data(store_id), sort_keys=False))
    return path


def _shoppers(store: Store) -> list[ScriptedShopper]:
    def spot(lane: str) -> tuple[float, float]:
        return (lane_target(store, lane)[0], 2.65)

    def target(lane: str) -> tuple[float, float, float]:
        return lane_target(store, lane)

    a, b, d, c = spot("L2"), spot("L5"), spot("L3"), spot("L1")
    return [
        ScriptedShopper(
            "alice",
            [
                (1.0, 0.5, 0.5),
                (2.0, 0.8, 1.2),
                (4.0, *a),
                (7.0, *a),
                (8.5, 3.2, 2.0),
                (10.5, 5.5, 0.5),
                (11.0, 5.6, 0.3),
            ],
            [(5.0, 6.0, target("L2"))],
        ),
        ScriptedShopper(
            "bob",
            [
                (5.0, 0.5, 0.5),
                (6.0, 0.8, 1.2),
                (8.5, *b),
                (12.0, *b),
                (13.0, 3.5, 2.0),
                (15.0, 5.5, 0.5),
                (15.5, 5.6, 0.3),
            ],
            [(10.0, 11.0, target("L5"))],
        ),
        ScriptedShopper(
            "dave",
            [
                (9.0, 0.5, 0.5),
                (10.0, 0.8, 1.2),
                (12.5, *d),
                (15.5, *d),
                (17.0, 3.2, 2.0),
                (19.0, 5.5, 0.5),
                (19.5, 5.6, 0.3),
            ],
            [(13.5, 14.5, target("L3"))],
        ),
        ScriptedShopper(
            "carol",
            [
                (13.0, 0.5, 0.5),
                (14.0, 0.8, 1.2),
                (16.5, *c),
                (22.0, *c),
                (23.5, 3.0, 2.0),
                (25.5, 5.5, 0.5),
                (26.0, 5.6, 0.3),
            ],
            [(17.5, 18.5, target("L1")), (20.0, 21.0, target("L1"))],
        ),
    ]


@lru_cache(maxsize=4)
def _scene(store_id: str) -> tuple:
    store = scene_store_with_id(store_id)
    msgs = list(tracks_messages(_shoppers(store), scene_cameras(), T_END))
    msgs += [
        entry(ACCOUNTS["alice"], 1.1, 1),
        entry(ACCOUNTS["bob"], 5.1, 2),
        entry(ACCOUNTS["dave"], 9.1, 3),
        entry(ACCOUNTS["carol"], 13.1, 4),
    ]
    unsure = shelf_event(store, "e2", "L5", 10.0, 11.0, 3)
    unsure = unsure.model_copy(update={"candidates": [Candidate(sku="P5", qty=1, p=0.6)]})
    msgs += [
        shelf_event(store, "e0", "L6", 0.2, 0.6, 1),
        shelf_event(store, "e1", "L2", 5.0, 6.0, 2),
        unsure,
        shelf_event(store, "e3", "L3", 13.5, 14.5, 4),
        shelf_event(store, "e4", "L1", 17.5, 18.5, 5),
        shelf_event(store, "e5", "L1", 20.0, 21.0, 6, action="put"),
    ]
    return tuple(sorted(msgs, key=lambda m: (m.ts, m.source, m.seq)))


def scene_messages(store_id: str = "t1") -> list:
    """The session's messages in capture-time order (cameras c1-c3 at 10 fps, gate G1, shelf gateway)."""
    return list(_scene(store_id))


CROWD_LANES = ("L1", "L4", "L2", "L5", "L3", "L6")


@lru_cache(maxsize=4)
def _crowd(store_id: str, shoppers: int, gap_s: float) -> tuple:
    store = scene_store_with_id(store_id)
    people, events, entries = [], [], []
    for i in range(shoppers):
        t0 = 1.0 + i * gap_s
        lane = CROWD_LANES[i % len(CROWD_LANES)]
        tgt = lane_target(store, lane)
        spot = (tgt[0], 2.65)
        people.append(
            ScriptedShopper(
                f"p{i}",
                [
                    (t0, 0.5, 0.5),
                    (t0 + 1.0, 0.8, 1.2),
                    (t0 + 3.0, *spot),
                    (t0 + 6.0, *spot),
                    (t0 + 7.5, 3.2, 2.0),
                    (t0 + 9.5, 5.5, 0.5),
                    (t0 + 10.0, 5.6, 0.3),
                ],
                [(t0 + 4.0, t0 + 5.0, tgt)],
            )
        )
        entries.append(entry(f"acct-{i}", t0 + 0.1, i + 1))
        events.append(shelf_event(store, f"e{i}", lane, t0 + 4.0, t0 + 5.0, i + 1))
    t_end = 1.0 + (shoppers - 1) * gap_s + 12.0
    msgs = list(tracks_messages(people, scene_cameras(), t_end)) + entries + events
    return tuple(sorted(msgs, key=lambda m: (m.ts, m.source, m.seq)))


def crowd_messages(store_id: str = "t1", shoppers: int = 12, gap_s: float = 3.0) -> list:
    """A longer session for the benchmark: ``shoppers`` people entering every ``gap_s`` seconds, each picking
    one product from a lane (L1, L4, L2, L5, L3, L6 in turn) and leaving ten seconds after entering."""
    return list(_crowd(store_id, shoppers, gap_s))

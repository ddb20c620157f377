"""What the store's devices publish during a simulator session: every message with its publish time and the
device (process) that publishes it.

Tracks, shelf events and the shelf gateway's watermark heartbeats come from truth perception
(:mod:`walkout.truth_perception`: the true tracks and events with realistic noise), gate scans from the session.  The devices follow the chaos store's grouping
(:func:`chaos_devices`): one camera process per camera, one shelf gateway for the whole store (so cutting it
off cuts every shelf), one entry gate per gate.  A device re-stamps ``source`` and ``seq`` when it publishes
(its transport's own numbering), exactly as a real device does; everything else in a payload stays as perceived.

The in-process reference (:func:`reference_receipts`) feeds the same messages, stamped by the same device ids,
in publish order through :class:`wire.bus.InProcessBus` into :class:`fusion.service.FusionService`: the
receipts every fault scenario is compared with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibration.store import Store, store_from_dict
from walkout.deploy import Device
from wire.messages import GateEntryMsg, ShelfEventMsg, StatusMsg, TracksMsg, moved_times
from wire.topics import Kind

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = ROOT / "replay_data" / "sessions"
CACHE = ROOT / "runs" / "chaos" / "cache"
FEED_VERSION = 4
SHELF_DEVICE = "shelf-gateway"


@dataclass(frozen=True)
class Item:
    """One message a device publishes at session time ``t`` on ``kind``/``key``."""

    t: float
    device: str
    kind: Kind
    key: str
    msg: BaseModel


@dataclass
class SessionFeed:
    """A session's messages in publish order, and the store they belong to (its id made unique per run by
    :meth:`for_store`)."""

    name: str
    store_data: dict[str, Any]
    items: list[Item]
    files: dict[str, bytes] = field(default_factory=dict)  # the store's camera files, relative to it
    truth: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # account -> what it really took

    @property
    def store(self) -> Store:
        return store_from_dict(self.store_data)

    @property
    def store_id(self) -> str:
        return str(self.store_data["store"]["id"])

    @property
    def t0(self) -> float:
        return self.items[0].t

    @property
    def t1(self) -> float:
        return self.items[-1].t

    def for_store(self, store_id: str) -> SessionFeed:
        data = {**self.store_data, "store": {**self.store_data["store"], "id": store_id}}
        return SessionFeed(self.name, data, self.items, self.files, self.truth)

    def write_store(self, folder: Path) -> Path:
        """The store description and its camera files in ``folder``; returns the store file."""
        import yaml

        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        path = folder / "store.yaml"
        path.write_text(yaml.safe_dump(self.store_data, sort_keys=False))
        return path

    def until(self, seconds: float) -> SessionFeed:
        """The first ``seconds`` of the session (shorter runs for the tests)."""
        end = self.t0 + seconds
        items = [it for it in self.items if it.t <= end]
        return SessionFeed(self.name, self.store_data, items, self.files, self.truth)

    def devices(self) -> dict[str, list[Item]]:
        out: dict[str, list[Item]] = {}
        for it in self.items:
            out.setdefault(it.device, []).append(it)
        return out

    def count(self, kind: Kind) -> int:
        return sum(1 for it in self.items if it.kind is kind)


def chaos_devices(store: Store) -> list[Device]:
    """The chaos store's processes: a camera process per camera, one shelf gateway for every shelf, a device
    per entry gate (named like the gate), fusion, ops and a recorder."""
    out = [Device(f"camera-{c.id}", "camera", (c.id,)) for c in store.cameras]
    out.append(Device(SHELF_DEVICE, "shelf", tuple(store.shelves)))
    out += [Device(g.id, "gate", (g.id,)) for g in store.gates]
    out += [Device("fusion", "fusion"), Device("ops", "ops"), Device("recorder", "recorder")]
    return out


def _items_of(session: Any, seed: int) -> list[Item]:
    from walkout.truth_perception import PerceptionConfig, perceive

    perceived = perceive(session, PerceptionConfig(seed=seed))
    items: list[tuple[float, int, str, int, Item]] = []
    n = 0
    for t, msg in perceived.feed():
        n += 1
        if isinstance(msg, TracksMsg):
            it = Item(t, f"camera-{msg.camera}", Kind.TRACKS, msg.camera, msg)
            rank = 1
        elif isinstance(msg, ShelfEventMsg):
            it = Item(t, SHELF_DEVICE, Kind.SHELF_EVENTS, msg.shelf, msg)
            rank = 2
        elif isinstance(msg, StatusMsg):  # the gateway's watermark heartbeat, about the gateway itself
            it = Item(t, SHELF_DEVICE, Kind.STATUS, SHELF_DEVICE, msg.model_copy(update={"device": SHELF_DEVICE}))
            rank = 3
        else:  # pragma: no cover - perceive yields only tracks, events and heartbeats
            continue
        items.append((t, rank, it.device, n, it))
    for msg in session.gate_entries():
        n += 1
        assert isinstance(msg, GateEntryMsg)
        items.append((float(msg.ts), 0, msg.gate, n, Item(float(msg.ts), msg.gate, Kind.GATE_ENTRY, msg.gate, msg)))
    items.sort(key=lambda x: x[:4])
    return [x[-1] for x in items]


def load_feed(session: str | Path = "hard-100s", seed: int = 0, cache: bool = True) -> SessionFeed:
    """The feed of a committed session (a name under ``replay_data/sessions``) or a session folder; cached in
    ``runs/chaos/cache`` by the session file's hash (truth perception of a 100 s session takes ~10 s)."""
    from sim.session import Session

    folder = Path(session)
    if not folder.exists():
        folder = SESSIONS / str(session)
    mcap = folder / "session.mcap" if folder.is_dir() else folder
    digest = hashlib.sha256(mcap.read_bytes()).hexdigest()[:16]
    path = CACHE / f"{mcap.parent.name}-{seed}-{digest}-v{FEED_VERSION}.pickle"
    if cache and path.is_file():
        try:
            with path.open("rb") as f:
                feed = pickle.load(f)
            if isinstance(feed, SessionFeed):
                return feed
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            log.warning("%s: unreadable feed cache (%s); rebuilding", path, exc)
    from walkout.replay import mcap_metadata

    s = Session.open(mcap)
    _, attachments = mcap_metadata(mcap)
    files = {name: data for name, data in attachments.items() if name.startswith("cameras/")}
    truth = {v["account"]: sorted((ln["sku"], int(ln["qty"])) for ln in v["receipt"]["lines"])
             for v in s.truth.get("visits", []) if v.get("complete")}
    feed = SessionFeed(mcap.parent.name, s.store.model_dump(mode="json"), _items_of(s, seed), files, truth)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel test workers may build the same feed
        with tmp.open("wb") as f:
            pickle.dump(feed, f)
        tmp.replace(path)
    return feed


def restamp(item: Item, source: str, seq: int, shift: float = 0.0, skew: float = 0.0) -> BaseModel:
    """The item's message as device ``source`` publishes it: its own ``source``/``seq``, and every capture
    time moved by ``shift`` (whole seconds: the session replayed on today's clock, so capture times and the
    transports' wall-clock status messages agree, as in a live store) plus the device clock's ``skew``."""
    upd: dict[str, Any] = {"source": source, "seq": seq}
    msg = item.msg
    dt = shift + skew
    if dt:
        upd.update(moved_times(msg, dt))  # type: ignore[arg-type]
    return msg.model_copy(update=upd)


def wall_shift(t0: float, lead_s: float = 1.0) -> float:
    """Whole seconds that put session time ``t0`` at least ``lead_s`` from now on the wall clock."""
    import math
    import time

    return float(math.ceil(time.time() + lead_s - t0))

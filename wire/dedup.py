"""Duplicate suppression by (``source``, ``seq``).

QoS 1 means "at least once": a broker redelivers what it did not see acknowledged, and a publisher resends
what it did not see acknowledged, so every consumer drops repeats.  A high-water mark alone would also drop
messages that merely arrive out of order (a redelivery overtaking a queued one), so each source keeps a
sliding window of the last ``window`` sequence numbers as a bit mask:

* ``seq`` above the source's highest seen: new; the window slides forward.
* ``seq`` inside the window: new unless its bit is set.
* ``seq`` older than the window: treated as a duplicate (it cannot be told apart from one).  Publishers
  number their messages monotonically (see :class:`wire.outbox.Outbox`), so this only hits a message
  delayed by more than ``window`` newer ones from the same source.

Memory is bounded: ``window`` bits per source and at most ``max_sources`` sources (the least recently
seen is forgotten first).  The state exports to a small JSON-able dict so a consumer can persist it in its
own database, in the same transaction as the work the messages caused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

STATE_VERSION = 1


@dataclass
class _Window:
    hi: int  # highest seq seen
    mask: int  # bit d set: seq ``hi - d`` seen (d < window)


class Deduplicator:
    """Remembers which (source, seq) pairs were seen; thread-safe."""

    def __init__(self, window: int = 4096, max_sources: int = 10_000):
        if window < 1 or max_sources < 1:
            raise ValueError("window and max_sources must be positive")
        self.window = window
        self.max_sources = max_sources
        self._full = (1 << window) - 1
        self._sources: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sources)

    def add(self, source: str, seq: int) -> bool:
        """Mark ``(source, seq)`` seen; True if it was new, False if seen before or older than the window."""
        with self._lock:
            w = self._sources.get(source)
            if w is None:
                self._sources[source] = _Window(seq, 1)
                if len(self._sources) > self.max_sources:
                    self._sources.popitem(last=False)
                return True
            self._sources.move_to_end(source)
            if seq > w.hi:
                shift = seq - w.hi
                w.mask = ((w.mask << shift) | 1) & self._full if shift < self.window else 1
                w.hi = seq
                return True
            d = w.hi - seq
            if d >= self.window:
                return False
            bit = 1 << d
            if w.mask & bit:
                return False
            w.mask |= bit
            return True

    def seen(self, source: str, seq: int) -> bool:
        """Whether ``add(source, seq)`` would report a duplicate (does not change the state)."""
        with self._lock:
            w = self._sources.get(source)
            if w is None or seq > w.hi:
                return False
            d = w.hi - seq
            return d >= self.window or bool(w.mask & (1 << d))

    def discard(self, source: str, seq: int) -> None:
        """Forget ``(source, seq)`` (its handler failed, so its redelivery must get through)."""
        with self._lock:
            w = self._sources.get(source)
            if w is not None and 0 <= w.hi - seq < self.window:
                w.mask &= ~(1 << (w.hi - seq))

    def export_state(self) -> dict[str, Any]:
        """The whole state as a JSON-able dict (``window`` bits per source as hex)."""
        with self._lock:
            return {
                "version": STATE_VERSION,
                "window": self.window,
                "sources": {s: [w.hi, format(w.mask, "x")] for s, w in self._sources.items()},
            }

    def import_state(self, state: dict[str, Any]) -> None:
        """Replace the state with an exported one (a different window size is converted).

        Raises ``ValueError`` naming the problem if ``state`` is not an exported state.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a de-duplication state of version {STATE_VERSION}")
        window, sources = state.get("window"), state.get("sources")
        if not isinstance(window, int) or window < 1 or not isinstance(sources, dict):
            raise ValueError("de-duplication state needs an integer 'window' and a 'sources' mapping")
        keep = (1 << min(window, self.window)) - 1
        loaded: OrderedDict[str, _Window] = OrderedDict()
        for source, entry in sources.items():
            try:
                hi, mask_hex = entry
                loaded[str(source)] = _Window(int(hi), int(mask_hex, 16) & keep)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"de-duplication state of source {source!r}: {exc}") from None
        while len(loaded) > self.max_sources:
            loaded.popitem(last=False)
        with self._lock:
            self._sources = loaded

    @classmethod
    def from_state(cls, state: dict[str, Any], max_sources: int = 10_000) -> Deduplicator:
        """A de-duplicator restored from :meth:`export_state` output, with the window it was saved with."""
        window = state.get("window") if isinstance(state, dict) else None
        dedup = cls(window if isinstance(window, int) and window > 0 else 4096, max_sources)
        dedup.import_state(state)
        return dedup


class RecentSet:
    """Exact-repeat suppression without a window: remembers the last ``per_source`` sequence numbers of
    each source, whatever their order.  For state messages (device status), where an old ``seq`` is
    legitimate: the last will's ``seq`` is fixed when its connection opened, long before it fires."""

    def __init__(self, per_source: int = 64, max_sources: int = 10_000):
        self.per_source = per_source
        self.max_sources = max_sources
        self._sources: OrderedDict[str, OrderedDict[int, None]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, source: str, seq: int) -> bool:
        """Remember ``(source, seq)``; True if it was not among the remembered ones."""
        with self._lock:
            seqs = self._sources.get(source)
            if seqs is None:
                seqs = self._sources[source] = OrderedDict()
                if len(self._sources) > self.max_sources:
                    self._sources.popitem(last=False)
            else:
                self._sources.move_to_end(source)
            if seq in seqs:
                return False
            seqs[seq] = None
            if len(seqs) > self.per_source:
                seqs.popitem(last=False)
            return True

    def discard(self, source: str, seq: int) -> None:
        with self._lock:
            seqs = self._sources.get(source)
            if seqs is not None:
                seqs.pop(seq, None)

"""The de-duplicator (reordering within a window, bounded memory, exportable state) and the outbox
(acknowledgement order, SQLite persistence, monotonic sequence numbers across restarts)."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import outbox as outbox_module
from wire.dedup import Deduplicator, RecentSet
from wire.outbox import SEQ_BLOCK, Outbox, OutboxFull


# --------------------------------------------------------------------------------------------- dedup
@st.composite
def arrivals(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    """A QoS 1 stream as it may arrive: per source a run of seqs, repeats, and local reordering (a message
    displaced by less than the window)."""
    window = draw(st.sampled_from([8, 64, 1024]))
    rnd = random.Random(draw(st.integers(0, 2**32)))  # bulk jitter from a drawn seed: much faster to generate
    out: list[tuple[float, str, int]] = []
    for source in draw(
        st.lists(st.sampled_from(["cam1", "cam2", "shelf1"]), min_size=1, max_size=3, unique=True)
    ):
        start = draw(st.integers(0, 2**40))
        for i in range(draw(st.integers(1, 80))):
            for _ in range(rnd.choice([1, 1, 1, 2, 3])):  # delivered once or repeated
                out.append((i + rnd.uniform(0, window / 2 - 1), source, start + i))
    out.sort(key=lambda t: t[0])
    return window, [(s, q) for _, s, q in out]


@settings(max_examples=100, deadline=None)
@given(arrivals())
def test_dedup_passes_each_message_once_despite_repeats_and_reordering(case: tuple[int, list]) -> None:
    window, stream = case
    dedup = Deduplicator(window=window)
    passed = [m for m in stream if dedup.add(*m)]
    assert sorted(passed) == sorted(set(stream))
    assert len(passed) == len(set(passed))


@settings(max_examples=60, deadline=None)
@given(arrivals(), st.integers(0, 200))
def test_dedup_state_export_import_continues_identically(case: tuple[int, list], cut: int) -> None:
    window, stream = case
    cut = min(cut, len(stream))
    a = Deduplicator(window=window)
    for m in stream[:cut]:
        a.add(*m)
    b = Deduplicator.from_state(json.loads(json.dumps(a.export_state())))  # through JSON, as a database would
    assert [a.add(*m) for m in stream[cut:]] == [b.add(*m) for m in stream[cut:]]


@pytest.mark.parametrize(
    "seqs,expected",
    [
        ([5, 5], [True, False]),
        ([5, 3, 4, 3], [True, True, True, False]),  # reordering inside the window
        ([100, 100 - 8], [True, False]),  # older than the window (8): taken for a duplicate
        ([100, 100 - 7], [True, True]),  # just inside
        ([1, 10**6, 1], [True, True, False]),  # a jump slides the window past 1
    ],
)
def test_dedup_window_table(seqs: list[int], expected: list[bool]) -> None:
    dedup = Deduplicator(window=8)
    assert [dedup.add("s", q) for q in seqs] == expected


def test_dedup_discard_lets_a_redelivery_through_and_seen_does_not_mark() -> None:
    dedup = Deduplicator(window=16)
    assert dedup.add("s", 10) and not dedup.seen("s", 11)
    dedup.discard("s", 10)  # its handler failed
    assert not dedup.seen("s", 10) and dedup.add("s", 10) and dedup.seen("s", 10)


def test_dedup_memory_is_bounded_by_sources_and_window() -> None:
    dedup = Deduplicator(window=64, max_sources=3)
    for s in ["a", "b", "c", "d"]:
        dedup.add(s, 1)
    assert len(dedup) == 3 and dedup.add("a", 1)  # "a" was forgotten first
    dedup.add("b", 10**12)
    state = dedup.export_state()
    assert all(int(mask, 16) < 2**64 for _, mask in state["sources"].values())


def test_dedup_import_converts_the_window_and_rejects_garbage() -> None:
    big = Deduplicator(window=128)
    for q in range(100):
        big.add("s", q)
    small = Deduplicator(window=16)
    small.import_state(big.export_state())
    assert not small.add("s", 99) and not small.add("s", 84) and not small.add("s", 50)  # 50: too old
    for bad in (
        {},
        {"version": 1, "window": 0, "sources": {}},
        {"version": 1, "window": 8, "sources": {"s": [1]}},
        {"version": 1, "window": 8, "sources": {"s": [1, "zz"]}},
        [1, 2],
    ):
        with pytest.raises(ValueError):
            small.import_state(bad)  # type: ignore[arg-type]


def test_recent_set_drops_exact_repeats_of_any_age() -> None:
    recent = RecentSet(per_source=3)
    assert recent.add("d", 100) and recent.add("d", 5) and not recent.add("d", 100)
    for q in (6, 7, 8):
        recent.add("d", q)
    assert recent.add("d", 100)  # forgotten after 3 newer ones
    recent.discard("d", 8)
    assert recent.add("d", 8)


# --------------------------------------------------------------------------------------------- outbox
def test_outbox_keeps_order_until_acknowledged() -> None:
    box = Outbox()
    items = [box.put(f"t/{i}", b"x%d" % i, 1, i == 0) for i in range(5)]
    assert [i.oid for i in box.pending()] == [1, 2, 3, 4, 5] and items[0].retain
    assert [i.oid for i in box.pending(after=2, limit=2)] == [3, 4]
    assert box.ack(2) and not box.ack(2) and len(box) == 4
    assert [i.topic for i in box.pending()] == ["t/0", "t/2", "t/3", "t/4"]


def test_outbox_wait_empty_and_limit() -> None:
    box = Outbox(max_messages=2)
    box.put("a", b"1", 1, False)
    box.put("b", b"2", 1, False)
    with pytest.raises(OutboxFull):
        box.put("c", b"3", 1, False)
    assert not box.wait_empty(0.01)
    threading.Timer(0.05, lambda: (box.ack(1), box.ack(2))).start()
    assert box.wait_empty(5)


def test_file_outbox_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    for i in range(4):
        box.put(f"t/{i}", bytes([i, 255]), 1, i == 3)
    box.ack(2)
    box.close()
    again = Outbox(path)
    assert [(i.oid, i.topic, i.payload, i.retain) for i in again.pending()] == [
        (1, "t/0", b"\x00\xff", False),
        (3, "t/2", b"\x02\xff", False),
        (4, "t/3", b"\x03\xff", True),
    ]
    assert again.put("t/new", b"", 0, False).oid == 5


def test_memory_seq_starts_at_the_wall_clock_and_increases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "_wall_clock_seq", lambda: 1_000_000)
    box = Outbox()
    assert [box.next_seq("a") for _ in range(3)] == [1_000_000, 1_000_001, 1_000_002]
    assert box.next_seq("b") == 1_000_000  # per source


def test_file_seq_never_goes_back_even_if_the_clock_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [5_000_000]
    monkeypatch.setattr(outbox_module, "_wall_clock_seq", lambda: clock[0])
    path = tmp_path / "o.db"
    box = Outbox(path)
    first = [box.next_seq("cam1") for _ in range(SEQ_BLOCK + 10)]  # crosses a reserved block
    box.close()
    clock[0] = 1  # the edge box rebooted without a real-time clock
    again = Outbox(path)
    nxt = again.next_seq("cam1")
    assert first == list(range(5_000_000, 5_000_000 + SEQ_BLOCK + 10))
    assert nxt > first[-1]


def test_seq_is_unique_across_threads() -> None:
    box = Outbox()
    seen: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [box.next_seq("s") for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2000


def test_random_put_ack_sequences_keep_the_unacknowledged_in_order() -> None:
    rng = random.Random(7)
    box = Outbox()
    model: list[int] = []
    for _ in range(2000):
        if model and rng.random() < 0.45:
            oid = rng.choice(model)
            model.remove(oid)
            assert box.ack(oid)
        else:
            model.append(box.put("t", b"p", 1, False).oid)
        assert [i.oid for i in box.pending()] == model

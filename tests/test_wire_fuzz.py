"""Fuzz the codec: ~20,000 random and mutated payloads on every topic (bit flips, truncations, type swaps,
huge numbers, NaN, deep nesting, non-UTF-8, wrong ids and topics).  Each must be rejected with WireError
or decode to a valid model that round-trips; nothing else may come out of ``decode``."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.wire import check_decode, fuzz_cases
from wire.topics import TOPICS, parse_topic

N = 20_000


@pytest.mark.slow  # about 3 s of CPU
def test_decode_accepts_valid_or_raises_wire_error_for_20000_fuzzed_payloads() -> None:
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for name, payload in fuzz_cases(random.Random(20_000), N):
        outcomes["accepted" if check_decode(name, payload) else "rejected"] += 1  # anything else fails here
        try:
            kinds[parse_topic(name).kind.value] += 1
        except ValueError:
            kinds["<bad topic>"] += 1
    assert sum(outcomes.values()) == N
    # both outcomes and every topic are exercised, so the run tested something
    assert outcomes["accepted"] > N * 0.1 and outcomes["rejected"] > N * 0.6, outcomes
    assert len(kinds) == len(TOPICS) + 1 and min(kinds.values()) > 300, kinds  # every kind and bad topics

"""Bad input never crashes the shelf gateway and never invents an event: it is counted instead."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.shelf.detector import ShelfDetector
from edge.shelf.gateway import Layout, ShelfGateway
from edge.shelf.planogram import Planogram
from edge.shelf.readers import CalibrationFile, ChannelCalibration, LineReader, SampleBlock
from tests.test_shelf_synthetic import LANES, PRODUCTS, make_store

T0 = 1_700_000_000.0
RATE = 60.0
IDS = [f"L{j + 1}" for j in range(len(LANES))]


def gateway() -> ShelfGateway:
    store = make_store()
    counter = iter(range(10_000))
    return ShelfGateway(Layout.from_store(store), Planogram.from_store(store), "bad-input", lambda: next(counter))


def stream(seconds: float = 12.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(int(seconds * RATE)) / RATE
    x = rng.uniform(800, 3000, len(IDS))[None, :] + rng.normal(0, 1.0, (ts.size, len(IDS)))
    return ts, x


def lines(ts: np.ndarray, x: np.ndarray, skip: np.ndarray | None = None) -> list[tuple[float, str]]:
    """Per-sample lines ``ts lane value``; ``skip[i, j]`` leaves a sample out."""
    out = []
    for i, t in enumerate(ts):
        for j, lane in enumerate(IDS):
            if skip is not None and skip[i, j]:
                continue
            out.append((t, f"{t:.4f} {lane} {x[i, j]:.3f}"))
    return out


def feed(gw: ShelfGateway, reader: LineReader, recs: list[tuple[float, str]], chunk_s: float = 0.25):
    msgs = []
    start = 0
    while start < len(recs):
        t_end = recs[start][0] + chunk_s
        stop = start
        while stop < len(recs) and recs[stop][0] < t_end:
            stop += 1
        stop = max(stop, start + 1)
        block = reader.feed_text("\n".join(r[1] for r in recs[start:stop]), now=T0)
        block.until = recs[stop - 1][0]
        msgs += gw.feed(block, reader.channels)
        start = stop
    return msgs + gw.finish()


def case_garbled(ts, x):
    recs = lines(ts, x)
    rng = np.random.default_rng(1)
    junk = ["#", "1 2", "abc def ghi", "\x00\x01\x02", "1e999 L1 5", "170000 L1 1,2,3", "nan nan nan"]
    for k in rng.integers(0, len(recs), 200):
        recs.insert(int(k), (recs[int(k)][0], str(rng.choice(junk))))
    return recs, None, {"garbled": 100}


def case_gap(ts, x):
    skip = np.zeros(x.shape, bool)
    skip[300:318, 2] = True  # 0.3 s hole on one lane
    return lines(ts, x, skip), None, {"gap": 1}


def case_saturates(ts, x):
    x = x.copy()
    x[240:360, 1] = 5000.0  # pinned at the top of the range for 2 s
    cal = CalibrationFile(default=ChannelCalibration(max_raw=5000.0))
    return lines(ts, x), cal, {"saturated": 100}


def case_silent_returns_offset(ts, x):
    x = x.copy()
    skip = np.zeros(x.shape, bool)
    skip[240:420, 4] = True  # 3 s without a word
    x[420:, 4] += 400.0  # and back with another offset (re-plugged, re-tared elsewhere)
    return lines(ts, x, skip), None, {"silent": 1, "rezeroed": 1}


def case_ts_back(ts, x):
    recs = lines(ts, x)
    replay = [r for r in recs if T0 + 2.0 <= r[0] < T0 + 2.5]
    k = next(i for i, r in enumerate(recs) if r[0] >= T0 + 6.0)
    recs[k:k] = [(T0 + 6.0, r[1]) for r in replay]  # half a second from 4 s ago arrives again
    return recs, None, {"ts_back": 100}


def case_wild_timestamp(ts, x):
    recs = lines(ts, x)
    k = next(i for i, r in enumerate(recs) if r[0] >= T0 + 5.0)
    recs.insert(k, (T0 + 5.0, f"{T0 + 86400 * 365:.4f} L3 1000"))
    recs.insert(k, (T0 + 5.0, f"{T0 - 86400:.4f} L3 1000"))
    return recs, None, {"ts_jump": 1, "ts_back": 1}


def case_non_finite(ts, x):
    recs = lines(ts, x)
    k = next(i for i, r in enumerate(recs) if r[0] >= T0 + 5.0)
    recs[k:k] = [(T0 + 5.0, f"{T0 + 5.0:.4f} L2 nan"), (T0 + 5.0, f"{T0 + 5.0:.4f} L2 inf"),
                 (T0 + 5.0, f"{T0 + 5.0:.4f} L2 -1e400")]
    return recs, None, {"non_finite": 3}


def case_dead_lane(ts, x):
    skip = np.zeros(x.shape, bool)
    skip[:, 7] = True  # never heard of
    return lines(ts, x, skip), None, {}


def case_unknown_lane(ts, x):
    recs = lines(ts, x)
    recs[100:100] = [(recs[100][0], f"{recs[100][0]:.4f} ZZ9 100")]
    return recs, None, {"unknown_channel": 1}


BAD = [case_garbled, case_gap, case_saturates, case_silent_returns_offset, case_ts_back, case_wild_timestamp,
       case_non_finite, case_dead_lane, case_unknown_lane]


@pytest.mark.parametrize("case", BAD, ids=[c.__name__[5:] for c in BAD])
def test_bad_input_is_counted_and_invents_nothing(case) -> None:
    ts, x = stream()
    recs, cal, expect = case(ts, x)
    reader = LineReader("loop://", channels=IDS, calibration=cal)
    gw = gateway()
    msgs = feed(gw, reader, recs)
    assert msgs == []
    counters = gw.counters(reader)
    for name, at_least in expect.items():
        assert counters.get(name, 0) >= at_least, (name, counters)
    assert gw.stats.frames > 600


@pytest.mark.parametrize("case", [case_silent_returns_offset, case_ts_back, case_garbled],
                         ids=["silent", "ts_back", "garbled"])
def test_a_real_pick_amid_bad_input_is_still_found(case) -> None:
    ts, x = stream()
    x = x.copy()
    x[400:, 0] -= PRODUCTS["A"]  # one A taken from L1 at about 6.7 s
    recs, cal, _ = case(ts, x)
    reader = LineReader("loop://", channels=IDS, calibration=cal)
    msgs = feed(gateway(), reader, recs)
    assert [(m.action, m.candidates[0].sku, m.candidates[0].qty) for m in msgs] == [("pick", "A", 1)]


# ------------------------------------------------------------------------------------------- properties
samples = st.lists(
    st.tuples(st.integers(0, len(IDS)), st.floats(-5.0, 40.0),
              st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 5000))),
    max_size=400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(samples, min_size=1, max_size=6))
def test_random_sample_streams_never_crash_the_gateway(blocks) -> None:
    gw = gateway()
    channels = [*IDS, "unknown"]
    for blk in blocks:
        if blk:
            lane, t, g = (np.array(v) for v in zip(*blk, strict=True))
        else:
            lane, t, g = np.zeros(0, int), np.zeros(0), np.zeros(0)
        g = np.where(np.isfinite(g) & (np.abs(g) < 1e7), g, np.nan)  # what the reader's calibration does
        block = SampleBlock(lane.astype(np.int32), T0 + t.astype(float), g.astype(float))
        for m in gw.feed(block, channels):
            assert m.action in ("pick", "put")
    gw.finish()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 1.5), st.floats(-3.0, 3.0), st.floats(6.0, 25.0),
       st.sampled_from([0.05, 0.1, 0.25, 0.5, 1.0]))
def test_a_stable_stream_yields_no_events(seed: int, noise: float, drift: float, seconds: float,
                                          block_s: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    ts = T0 + np.arange(n) / RATE
    base = rng.uniform(0, 5000, len(IDS))
    x = base + rng.normal(0, noise, (n, len(IDS))) + drift * (ts - T0)[:, None] / 60.0
    gw = gateway()
    per = max(1, int(block_s * RATE))
    lane_row = np.arange(len(IDS), dtype=np.int32)
    msgs = []
    for i in range(0, n, per):
        t = ts[i:i + per]
        block = SampleBlock(np.tile(lane_row, t.size), np.repeat(t, len(IDS)), x[i:i + per].ravel(), float(t[-1]))
        msgs += gw.feed(block, IDS)
    msgs += gw.finish()
    assert msgs == []
    assert gw.detector.counters["changes"] == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 90),
       st.floats(0.0, 0.5), st.floats(1.0, 1e4))
def test_detector_survives_arbitrary_frames(seed: int, n_lanes: int, block: int, nan_share: float,
                                            scale: float) -> None:
    rng = np.random.default_rng(seed)
    det = ShelfDetector([("S", [f"l{j}" for j in range(n_lanes)])])
    t = T0
    for _ in range(6):
        x = rng.standard_cauchy((block, n_lanes)) * scale
        x[rng.random(x.shape) < nan_share] = np.nan
        ts = t + np.arange(block) / RATE
        t = ts[-1] + 1 / RATE
        for ch in det.push(ts, x):
            assert np.isfinite(ch.delta).all() and ch.t_end >= ch.t_start
    det.finish()

"""The store clock (wire/clock.py): edge devices stamp capture times on fusion's clock, learnt from its
beacons; and fusion's instants (frames of different cameras a few ms apart are folded in together), which
make the last milliseconds of clock error irrelevant.  Through the real broker where a broker is involved."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.__main__ import session_path
from chaos.compare import Outcome, receipt_diffs, wrong_vs_truth
from chaos.feed import SessionFeed, load_feed
from chaos.live import reference
from tests.fixtures_mqtt import wait_for
from wire.bus import InProcessBus
from wire.clock import ClockBeacon, StoreClock, start_on_store_clock
from wire.messages import ClockMsg
from wire.topics import Kind


# ------------------------------------------------------------------------------------------------ the estimator
@pytest.mark.parametrize(
    ("samples", "window", "offset"),
    [
        ([(100.0, 100.2)], 16, -0.2),  # one beacon: 0.2 s ahead (plus its travel time)
        ([(100.0, 100.25), (101.0, 101.201), (102.0, 102.23)], 16, -0.201),  # the fastest beacon wins
        ([(100.0, 100.201), (101.0, 101.9)], 16, -0.201),  # a beacon held back 0.7 s changes nothing
        ([(100.0, 100.201), (101.0, 101.25), (102.0, 102.24)], 2, -0.24),  # the fast one left the window
        ([(100.0, 99.7)], 4, 0.3),  # a device clock behind the store's
    ],
    ids=["one", "fastest", "delayed", "window", "behind"],
)
def test_offset_is_the_fastest_beacon_in_the_window(samples: list[tuple[float, float]], window: int,
                                                     offset: float) -> None:
    c = StoreClock(local=lambda: 0.0, window=window)
    assert not c.synced and c.now() == 0.0
    for beacon, arrived in samples:
        c.observe(beacon, arrived)
    assert c.synced and c.beacons == len(samples)
    assert c.offset == pytest.approx(offset)
    assert c.to_store(50.0) == pytest.approx(50.0 + offset)


@settings(max_examples=200, deadline=None)
@given(skew=st.floats(-5.0, 5.0), delays=st.lists(st.floats(0.0002, 0.5), min_size=1, max_size=16))
def test_store_time_is_behind_by_the_fastest_delay_whatever_the_skew(skew: float, delays: list[float]) -> None:
    """Beacons sent each second, each taking its own delay to a device whose clock is ``skew`` off: the
    device's store time is behind the true clock by exactly the smallest delay (never ahead)."""
    c = StoreClock(local=lambda: 0.0, window=16)
    for i, d in enumerate(delays):
        sent = 1000.0 + i
        c.observe(sent, sent + d + skew)
    true_now = 2000.0
    error = c.to_store(true_now + skew) - true_now
    assert error == pytest.approx(-min(delays), abs=1e-6)


def test_window_must_hold_a_beacon() -> None:
    with pytest.raises(ValueError, match="window"):
        StoreClock(window=0)


# ------------------------------------------------------------------------------------------------ on the wire
def test_beacon_publishes_at_most_once_per_period_on_the_clock_topic() -> None:
    bus = InProcessBus("s1")
    fusion, cam = bus.client("fusion", "fusion"), bus.client("camera-cam1", "camera")
    got: list[ClockMsg] = []
    cam.subscribe(Kind.CLOCK, lambda info, msg: got.append(msg))
    for t in (fusion, cam):
        t.start()
    beacon = ClockBeacon(fusion, period_s=60.0, clock=lambda: 1234.5)
    assert beacon.beat() and not beacon.beat()  # the second comes a period later
    assert [(m.source, m.ts, m.period_s) for m in got] == [("fusion", 1234.5, 60.0)]


@pytest.mark.mosquitto
def test_a_skewed_device_lands_on_the_store_clock_through_the_broker(mqtt_broker, store_id, transports) -> None:
    """Fusion's beacons through the real Mosquitto: a device whose clock is 200 ms fast stamps within a few
    ms of fusion's clock, and so do the sources it was given."""
    host, port = mqtt_broker
    fusion = transports(store_id, "fusion", "fusion", host, port)
    device = transports(store_id, "camera-cam1", "camera", host, port)
    fusion.start()
    assert fusion.wait_ready(10)
    beacon = ClockBeacon(fusion, period_s=0.02)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.02):
            beacon.beat()

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()

    class Source:
        clock = staticmethod(time.time)

    src = Source()
    try:
        clock = start_on_store_clock(device, [src], wait_s=10.0, clock=StoreClock(lambda: time.time() + 0.2))
        assert clock.synced
        wait_for(lambda: clock.beacons >= 20, 10.0, "20 beacons")
    finally:
        stop.set()
        beater.join(2)
    assert abs(clock.offset + 0.2) < 0.01
    assert abs(clock.now() - time.time()) < 0.01
    assert abs(src.clock() - time.time()) < 0.01


def test_without_anything_to_stamp_the_transport_just_starts() -> None:
    bus = InProcessBus("s1")
    t = bus.client("shelf-1", "shelf")
    clock = start_on_store_clock(t, [], wait_s=5.0)
    assert t.connected and not clock.synced


# ------------------------------------------------------------------------------------------------ fusion instants
@pytest.mark.slow
@pytest.mark.parametrize("skews", [{"camera-cam1": 0.002},
                                   {"camera-cam1": 0.0018, "camera-cam2": 0.0018, "camera-cam3": -0.0018,
                                    "camera-cam4": -0.0017, "camera-cam5": 0.0013, "camera-cam6": 0.0009,
                                    "gate-1": 0.0007, "shelf-gateway": -0.0008}],
                         ids=["one-camera", "every-device"])
def test_clocks_a_few_ms_apart_change_no_receipt(standard_120, tmp_path: Path, skews: dict[str, float]) -> None:
    """The suite's ``standard-120`` session in process, devices' stamps moved by up to +-2 ms (what is left
    after the store clock): the same receipts.  Before fusion folded simultaneous frames in as one instant,
    cam1 1 microsecond late changed three of its six receipts (its frames went from first to last at every
    instant)."""
    feed, ref = standard_120
    assert set(skews) <= set(feed.devices())
    out = reference(feed, tmp_path / "skewed", skew=skews)
    assert receipt_diffs(ref, out) == []
    assert wrong_vs_truth(out, feed.truth) == wrong_vs_truth(ref, feed.truth)


@pytest.fixture(scope="module")
def standard_120(tmp_path_factory: pytest.TempPathFactory) -> tuple[SessionFeed, Outcome]:
    """``make chaos``'s session (made with the simulator on first use) and its in-process reference."""
    feed = load_feed(session_path("standard-120"), 0)
    return feed, reference(feed, tmp_path_factory.mktemp("reference"))

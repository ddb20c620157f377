"""Load-cell streams of the simulated shelves: one stream per lane (one load cell each) at 60 Hz, like the
AiFi store's plates.

A lane's reading is ``offset + contents + drift + transients + noise``, quantised to the ADC's step:

* ``offset`` — the tray's tare, never zeroed (only changes are meaningful, as in the real traces);
* ``contents`` — the exact sum of the weights of the items on the lane (each physical item keeps its own
  weight, so a put-back returns the same grams), stepping at each true event's change time;
* ``drift`` — a slow linear creep plus a random walk;
* ``transients`` — what a hand does: pressing on the goods while grasping, the jolt and swing of the lift or
  the placing (an under-damped second-order response), a long high-frequency ring of the shelf, a slow creep
  towards the new level, a little crosstalk into the lanes beside it, and presses without taking anything;
* ``noise`` — per lane (a few whole shelves are noisier, as in the real store), slightly anti-correlated
  from sample to sample, with rare spikes.

The parameters are fitted to ``../shared/realdata/aifi_autocheckout_2020/traces_test1`` (noise over stable
windows, drift per minute and the unsettled phase around a pick agree within 30 %, see
``tests/test_sim_loadcells.py``).  Nothing here depends on the wall clock; every random draw comes from the
generator passed in, one child generator per lane in lane order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from calibration.store import Store
from sim.world import Touch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadCellModel:
    rate_hz: float = 60.0
    quantum_g: float = 0.2411  # ADC step
    noise_g: float = 0.55  # median per-lane noise sd (before the noisy shelves)
    noise_spread: float = 0.30  # log-normal spread of the per-lane noise
    noisy_shelf_prob: float = 0.10  # a whole shelf noisier (loose mount, vibration)
    noisy_factor: tuple[float, float] = (3.0, 9.0)
    anti_corr: float = 0.3  # noise is e[k] - anti_corr * e[k-1]
    spike_rate_hz: float = 0.15  # rare spikes per second
    spike_g: float = 5.0
    drift_sd_g_per_min: float = 0.11  # sd of the per-lane linear drift
    wander_g_per_sqrt_min: float = 0.08  # random-walk part of the drift
    offset_g: tuple[float, float] = (150.0, 6000.0)
    # hand transients
    press_g: tuple[float, float] = (4.0, 30.0)  # hand pressing on the goods before lifting / after placing
    press_frac: float = 0.06  # ... plus this fraction of the item's weight (capped)
    handling_frac: float = 0.25  # swings while the item is being pulled out / set down
    swing_hz: tuple[float, float] = (3.0, 6.0)
    swing_damping: tuple[float, float] = (0.25, 0.55)
    ring_hz: tuple[float, float] = (15.0, 22.0)
    ring_frac: float = 0.05
    ring_g: tuple[float, float] = (1.0, 3.0)
    ring_tau_s: tuple[float, float] = (0.7, 1.4)
    creep_frac: float = 0.03
    creep_tau_s: tuple[float, float] = (0.3, 0.8)
    crosstalk: tuple[float, float] = (0.005, 0.025)
    press_only_g: tuple[float, float] = (40.0, 400.0)  # a hand leaning on the goods without taking anything
    settle_g: float = 0.8  # a lane is settled once what is left of the transient is below this ...
    settle_frac: float = 0.01  # ... or below this fraction of the change, whichever is larger


@dataclass
class LaneStream:
    lane: str
    shelf: str
    noise_g: float
    grams: np.ndarray  # raw readings (float64, quantised)


@dataclass
class LoadCellData:
    """All lanes' streams on one time base ``t`` (seconds from the session start)."""

    t: np.ndarray
    rate_hz: float
    lanes: dict[str, LaneStream]
    shelves: dict[str, list[str]]  # shelf -> lane ids in row order
    settled_at: dict[int, float] = field(default_factory=dict)  # touch index -> end of its unsettled phase

    def shelf_block(self, shelf: str, i0: int, i1: int) -> np.ndarray:
        """Samples ``[i0, i1)`` of a shelf's lanes, shape ``(i1 - i0, lanes)``."""
        return np.stack([self.lanes[ln].grams[i0:i1] for ln in self.shelves[shelf]], axis=1)


def _transient(model: LoadCellModel, touch: Touch, t: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """The hand's own effect on the touched lane (without the net step) over the times ``t`` (a window
    around the touch), the part that leaks to neighbours, and when the lane is settled again."""
    out = np.zeros_like(t)
    leak = np.zeros_like(t)
    delta = abs(touch.delta_g)
    tol = max(model.settle_g, model.settle_frac * delta)
    if touch.kind == "press":
        amp = float(rng.uniform(*model.press_only_g))
        t0, t1 = touch.t_contact, touch.t_release
        u = np.clip((t - t0) / max(t1 - t0, 1e-3), 0.0, 1.0)
        bump = np.sin(np.pi * u) ** 1.5 * ((t >= t0) & (t <= t1))
        wobble = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(4, 9) * (t - t0) + rng.uniform(0, 6.28))
        out += amp * bump * wobble
        leak += out
        ring_amp = 0.02 * amp + float(rng.uniform(*model.ring_g))
        t_ring = t1
    else:
        sign = -1.0 if touch.kind == "pick" else 1.0
        press = float(rng.uniform(*model.press_g)) + min(model.press_frac * delta, 40.0)
        # the hand on the goods: before the lift (pick) or after the placing (put)
        t0, t1 = (touch.t_contact, touch.t_change) if sign < 0 else (touch.t_change, touch.t_release)
        u = np.clip((t - t0) / max(t1 - t0, 1e-3), 0.0, 1.0)
        in_press = (t >= t0) & (t <= t1)
        jitter = np.sin(2 * np.pi * rng.uniform(7, 13) * (t - t0) + rng.uniform(0, 6.28))
        out += press * np.sin(np.pi * u) ** 0.7 * (1 + 0.4 * jitter) * in_press
        # the jolt and swing of the goods: an under-damped response to the step (overshoot)
        f = float(rng.uniform(*model.swing_hz))
        zeta = float(rng.uniform(*model.swing_damping))
        w = 2 * np.pi * f
        wd = w * math.sqrt(1 - zeta * zeta)
        tau = t - touch.t_change
        after = tau >= 0
        ta = np.where(after, tau, 0.0)
        env = np.exp(-zeta * w * ta)
        resp = -(env * (np.cos(wd * ta) + zeta * w / wd * np.sin(wd * ta)))  # step response minus 1
        out += sign * delta * resp * after
        # handling: the item bumps while it is pulled out / set down (until the hand lets go)
        th0, th1 = touch.t_change, max(touch.t_release, touch.t_change + 0.15)
        in_h = (t >= th0) & (t <= th1)
        hf = float(rng.uniform(5, 9))
        amp_h = model.handling_frac * min(delta, 250.0)
        out += amp_h * np.sin(2 * np.pi * hf * (t - th0) + rng.uniform(0, 6.28)) * np.sin(
            np.pi * np.clip((t - th0) / max(th1 - th0, 1e-3), 0, 1)) * in_h
        # slow creep towards the new level
        c_tau = float(rng.uniform(*model.creep_tau_s))
        creep = model.creep_frac * delta * float(rng.choice([-1.0, 1.0]))
        out += creep * np.exp(-ta / c_tau) * after
        leak += out - sign * delta * resp * after  # neighbours feel the hand, not this lane's swing
        ring_amp = model.ring_frac * delta + float(rng.uniform(*model.ring_g))
        t_ring = touch.t_change
        settle_swing = max(0.0, math.log(max(delta, 1e-3) / (tol * math.sqrt(1 - zeta * zeta))) / (zeta * w))
        settle_creep = c_tau * math.log(abs(creep) / tol) if abs(creep) > tol else 0.0
    r_f = float(rng.uniform(*model.ring_hz))
    r_tau = float(rng.uniform(*model.ring_tau_s))
    tr = np.clip(t - t_ring, 0.0, None)
    out += ring_amp * np.exp(-tr / r_tau) * np.sin(2 * np.pi * r_f * tr + rng.uniform(0, 6.28)) * (t >= t_ring)
    settle_ring = r_tau * math.log(ring_amp / tol) if ring_amp > tol else 0.0
    if touch.kind == "press":
        settled = t_ring + settle_ring
    else:
        settled = max(touch.t_change + max(settle_swing, settle_creep), t_ring + settle_ring)
    settled = max(settled, touch.t_release + 0.05)
    return out, leak, float(settled)


def synthesize(store: Store, touches: list[Touch], initial_g: dict[str, float], duration: float,
               rng: np.random.Generator, model: LoadCellModel | None = None) -> LoadCellData:
    """Streams of every lane of ``store`` over ``duration`` seconds.

    ``initial_g`` is each lane's starting contents (grams); ``touches`` the hands on lanes (their
    ``delta_g`` change the contents at ``t_change``).  Returns the streams and, per touch index, when its
    lane is settled again (the true event's end)."""
    m = model or LoadCellModel()
    n = round(duration * m.rate_hz) + 1
    t = np.arange(n) / m.rate_hz
    shelves = {s.id: [ln.id for ln in s.lanes] for s in store.shelves.values()}
    lane_shelf = store.lane_shelf
    lanes_in_order = [ln.id for _, _, ln in store.iter_lanes()]
    seeds = rng.spawn(len(lanes_in_order) + 1)
    touch_rng = seeds[-1]
    shelf_noise = {}
    shelf_rng = np.random.default_rng(rng.integers(2**63))
    for sid in shelves:
        noisy = shelf_rng.random() < m.noisy_shelf_prob
        shelf_noise[sid] = float(shelf_rng.uniform(*m.noisy_factor)) if noisy else 1.0
    by_lane: dict[str, list[int]] = {}
    for k, tc in enumerate(touches):
        by_lane.setdefault(tc.lane, []).append(k)
    # transients first (they leak into neighbours), in touch order with one generator
    trans: dict[str, np.ndarray] = {ln: np.zeros(n) for ln in lanes_in_order}
    settled: dict[int, float] = {}
    for k, tc in enumerate(touches):
        i0 = max(0, int((tc.t_contact - 0.5) * m.rate_hz))
        i1 = min(n, int((max(tc.t_release, tc.t_change) + 8.0) * m.rate_hz) + 1)
        if i0 >= i1:
            continue
        own, leak, end = _transient(m, tc, t[i0:i1], touch_rng)
        settled[k] = end
        trans[tc.lane][i0:i1] += own
        row = shelves[lane_shelf[tc.lane]]
        j = row.index(tc.lane)
        for nb in (j - 1, j + 1):
            if 0 <= nb < len(row):
                trans[row[nb]][i0:i1] += leak * float(touch_rng.uniform(*m.crosstalk)) * float(
                    touch_rng.choice([-1.0, 1.0]))
    out: dict[str, LaneStream] = {}
    minutes = t / 60.0
    for lane_id, g in zip(lanes_in_order, seeds[:-1], strict=True):
        sigma = m.noise_g * float(np.exp(g.normal(0, m.noise_spread))) * shelf_noise[lane_shelf[lane_id]]
        e = g.normal(0, sigma / math.sqrt(1 + m.anti_corr**2), n + 1)
        noise = e[1:] - m.anti_corr * e[:-1]
        spikes = g.random(n) < m.spike_rate_hz / m.rate_hz
        noise[spikes] += g.normal(0, m.spike_g, int(spikes.sum()))
        drift = g.normal(0, m.drift_sd_g_per_min) * minutes
        walk = np.cumsum(g.normal(0, m.wander_g_per_sqrt_min * math.sqrt(1 / (60 * m.rate_hz)), n))
        offset = float(g.uniform(*m.offset_g))
        contents = np.full(n, float(initial_g.get(lane_id, 0.0)))
        for k in by_lane.get(lane_id, []):
            tc = touches[k]
            if tc.delta_g:
                contents[t >= tc.t_change] += tc.delta_g
        raw = offset + contents + drift + walk + trans[lane_id] + noise
        grams = np.round(raw / m.quantum_g) * m.quantum_g
        out[lane_id] = LaneStream(lane_id, lane_shelf[lane_id], sigma, grams)
    return LoadCellData(t, m.rate_hz, out, shelves, settled)

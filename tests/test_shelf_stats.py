"""``trace_stats``: noise, drift and the unsettled phase of a load-cell trace, on traces with known values."""

from __future__ import annotations

import numpy as np
import pytest

from edge.shelf.stats import trace_stats


def trace(noise: float, drift_per_min: float, steps: list[tuple[float, float, float]], seconds: float = 120.0,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """60 Hz trace; ``steps`` are (time, grams, unsettled seconds of a decaying 5 Hz swing after the step)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / 60)
    g = 2000 + rng.normal(0, noise, t.size) + drift_per_min * t / 60
    for t0, dg, swing in steps:
        after = t >= t0
        g[after] += dg
        if swing > 0:
            u = t[after] - t0
            # amplitude falls to the noise band (4 sd) at ``swing`` seconds
            amp = 0.4 * abs(dg)
            tau = swing / np.log(amp / (4 * noise))
            g[after] += amp * np.exp(-u / tau) * np.sin(2 * np.pi * 5 * u)
    return t, g


@pytest.mark.parametrize("noise, drift, steps, unsettled", [
    (1.0, 0.0, [], None),
    (0.5, 3.0, [], None),
    (2.0, -1.0, [], None),
    (1.0, 0.5, [(40.3, -300.0, 0.0)], (0.0, 0.1)),
    (1.0, 0.5, [(40.3, -300.0, 0.6), (80.7, 150.0, 0.6)], (0.4, 0.8)),
    (3.0, 0.0, [(60.5, 500.0, 1.2)], (0.9, 1.5)),
])
def test_trace_stats_recovers_known_values(noise, drift, steps, unsettled) -> None:
    t, g = trace(noise, drift, steps)
    st = trace_stats(t, g)
    assert st["noise_g"] == pytest.approx(noise, rel=0.15)
    assert st["drift_g_per_min"] == pytest.approx(drift, abs=0.3 + 0.1 * abs(drift))
    if unsettled is None:
        assert st["unsettled_s"] is None
    else:
        lo, hi = unsettled
        assert lo <= st["unsettled_s"] <= hi


def test_trace_stats_survives_nan_and_tiny_input() -> None:
    t, g = trace(1.0, 0.0, [])
    g[::7] = np.nan
    assert trace_stats(t, g)["noise_g"] == pytest.approx(1.0, rel=0.2)
    tiny = trace_stats(np.arange(3.0), np.ones(3))
    assert np.isnan(tiny["noise_g"]) and tiny["unsettled_s"] is None

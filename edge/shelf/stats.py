"""Statistics of one load-cell trace, for fitting a load-cell model (the simulator's) to real recordings.

:func:`trace_stats` measures, on a trace ``(ts, grams)`` of one channel:

* ``noise_g`` — the noise sd while nothing happens: the median over 1 s windows of the sd about the window's
  own straight line (windows with a step or a shake in them are outliers the median ignores);
* ``drift_g_per_min`` — the slow change of the level while stable: a straight line through the means of the
  stable windows of each flat stretch between steps (the stretches share one slope), in grams per minute;
* ``unsettled_s`` — the length of the unsettled phase around a step (hand, item swinging, shelf vibrating): from
  the first sample that leaves the band around the level before to the last sample outside the band around
  the level after (bands of ``max(4 * noise_g, 2 g)``); the median over the trace's steps, ``None`` when it
  has none.  A clean jump measures 0; settling of the goods and creep after the step count as unsettled.
"""

from __future__ import annotations

import numpy as np


def trace_stats(ts: np.ndarray, grams: np.ndarray, window_s: float = 1.0, step_min_g: float = 10.0
                ) -> dict[str, float | None]:
    """``{noise_g, drift_g_per_min, unsettled_s}`` of one trace (see the module docstring).

    ``ts`` are capture times in seconds (any origin, about regular), ``grams`` the readings; NaN samples are
    ignored.  A step is a change of the level of at least ``max(step_min_g, 10 * noise_g)``.
    """
    ts = np.asarray(ts, np.float64)
    g = np.asarray(grams, np.float64)
    ok = np.isfinite(ts) & np.isfinite(g)
    ts, g = ts[ok], g[ok]
    order = np.argsort(ts, kind="stable")
    ts, g = ts[order], g[order]
    if ts.size < 8:
        return {"noise_g": float("nan"), "drift_g_per_min": float("nan"), "unsettled_s": None}
    dt = float(np.median(np.diff(ts))) or 1.0 / 60
    n = max(4, round(window_s / dt))
    k = ts.size // n
    tw = ts[: k * n].reshape(k, n)
    gw = g[: k * n].reshape(k, n)
    # per-window straight line: residual sd, mean, slope
    tc = tw - tw.mean(axis=1, keepdims=True)
    denom = (tc**2).sum(axis=1)
    denom[denom == 0] = 1.0
    slope = (tc * (gw - gw.mean(axis=1, keepdims=True))).sum(axis=1) / denom
    resid = gw - gw.mean(axis=1, keepdims=True) - slope[:, None] * tc
    sd = resid.std(axis=1, ddof=2)
    noise = float(np.median(sd))
    mean = gw.mean(axis=1)
    tmid = tw.mean(axis=1)
    # stable windows: no more spread than usual
    spread_ok = sd <= 2.0 * noise + 0.05
    step_g = max(step_min_g, 10.0 * noise)
    stable = np.flatnonzero(spread_ok)
    # flat stretches: consecutive stable windows whose means stay within step_g of each other
    segments: list[list[int]] = []
    steps: list[tuple[int, int]] = []  # (last stable window before, first stable window after)
    for w in stable:
        if segments and abs(mean[w] - mean[segments[-1][-1]]) < step_g:
            segments[-1].append(int(w))
        else:
            if segments:
                steps.append((segments[-1][-1], int(w)))
            segments.append([int(w)])
    drift = _common_slope([(tmid[s], mean[s]) for s in segments if len(s) >= 2])
    unsettled = []
    for a, b in steps:
        lo, hi = a * n, (b + 1) * n
        before, after = mean[a], mean[b]
        band = max(4.0 * noise, 2.0)
        seg_t, seg_g = ts[lo:hi], g[lo:hi]
        out_before = np.flatnonzero(np.abs(seg_g - before) > band)
        out_after = np.flatnonzero(np.abs(seg_g - after) > band)
        if out_before.size and out_after.size:
            t0 = seg_t[out_before[0]]
            t1 = seg_t[min(out_after[-1] + 1, seg_t.size - 1)]
            unsettled.append(max(0.0, float(t1 - t0)))
    return {
        "noise_g": noise,
        "drift_g_per_min": drift * 60.0,
        "unsettled_s": float(np.median(unsettled)) if unsettled else None,
    }


def _common_slope(stretches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Least-squares slope shared by several stretches, each with its own intercept (grams per second)."""
    num = den = 0.0
    for t, y in stretches:
        tc = t - t.mean()
        num += float((tc * (y - y.mean())).sum())
        den += float((tc**2).sum())
    return num / den if den > 0 else 0.0

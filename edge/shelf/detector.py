"""Event detection on load-cell frames, per shelf (its lanes together), vectorised over lanes and frames.

Input: frames on a regular grid (``ts (K,)``, ``x (K, L)`` grams, NaN for no reading) of lanes grouped by shelf.
Output: :class:`ShelfChange` — a shelf went from one stable level to another: start/end time, the signed
change per lane and the lanes that changed.

How it works
------------
* ``m`` is a trailing boxcar mean over ``smooth_s``; the step statistic ``d = m[t] - m[t - w]`` compares two
  adjacent boxcars.  A lane is *quiet* while ``|d|`` stays under ``max(activity_min_g, k_activity * sd_d)``,
  where ``sd_d`` is the lane's own noise of ``d``, learnt while its shelf is stable (robust median, slow EMA).
* **Stable** shelf: every lane quiet and within a band of its resting level.  The resting level follows the
  level while stable with a time constant of ``zero_tau_s`` (auto-zero: slow drift is absorbed), but a slow
  pick leaves the band faster than the level is followed, so it still starts an event.
* **Active** shelf: it becomes stable again once every lane has been quiet for ``settle_s`` and its level, smoothed
  twice (the fast ring of a knocked shelf averages out), moved over that window no more than ``spread_k`` times
  as much as on a calm shelf (a hand holding an item half on the shelf trembles slowly).  Then the new level
  (mean over the settled window) is compared with the level before the activity: lanes whose change is above
  ``max(lane_min_g, k_lane * sd)`` are involved.  No involved lane (a hand pressed and let go, a bump, a
  vibration): no event, the resting level re-zeroes.  Otherwise a :class:`ShelfChange` is emitted at once — the
  emission lags the true end of motion by about ``2 * smooth_s + settle_s``.  The change also says when each
  lane made its step (``t_step``: first and last time its smoothed level lay past half its change, from the
  level kept while the shelf was active): two lanes that step together moved one item between them.
* An ``explain(change)`` callback (the identifier) says which of the changed lanes a product explains.  The
  rest (a hand resting on the shelf, an item held half on it, half an item that straddles) is not emitted: it
  stays as a *residue* — the lane's resting level moves on, its reference does not — so when the rest of the
  motion comes (the item is lifted off), the whole change is measured against the old reference and explained
  then.  A later change is tried both with and without the residue, and the better explained one is emitted.
  A residue still there after ``hold_max_s`` (or at the end of the stream) is absorbed, and emitted as an
  unexplained change when it moved at least ``unexplained_min_g``, else dropped.
* Bad channels: a lane that reads NaN (silent, saturated) is held at its last value; when it has read again for
  ``settle_s`` its offset is re-zeroed to the hold value, so a channel that returns with another offset never
  invents an event (counted under ``rezeroed``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

log = logging.getLogger(__name__)

STABLE, ACTIVE, INIT = 0, 1, 2


@dataclass(frozen=True)
class DetectorConfig:
    rate_hz: float = 60.0
    smooth_s: float = 0.15  # boxcar of the level
    settle_s: float = 0.25  # quiet time that makes a shelf stable again
    k_activity: float = 6.0  # activity threshold in noise sds of d
    activity_min_g: float = 2.0
    band_k: float = 8.0  # allowed departure from the baseline while stable, in noise sds of the level
    band_min_g: float = 4.0
    k_lane: float = 6.0  # a lane is involved when |delta| >= max(lane_min_g, k_lane * sd of delta)
    lane_min_g: float = 3.0
    event_min_g: float = 8.0  # a change needs a same-signed group of lanes summing to at least this
    zero_tau_s: float = 5.0  # auto-zero time constant while stable
    noise_tau_s: float = 20.0  # time constant of the noise estimate
    noise_init_g: float = 0.5  # sd of d assumed before a lane's noise is measured
    noise_max_g: float = 50.0  # cap on the learnt sd of d
    warmup_s: float = 1.0  # frames a shelf watches before it detects (baseline and noise)
    spread_k: float = 3.0  # the smoothed level may move over a settle window this many times its calm spread
    spread_floor_g: float = 0.3
    hold_max_s: float = 30.0  # an unexplained change waits this long for the shelf to explain itself
    unexplained_min_g: float = 20.0  # after that it is emitted if it moved at least this much, else dropped
    trace_max_s: float = 30.0  # the smoothed level of an active shelf is kept this long (for step times)

    @property
    def w(self) -> int:
        return max(2, round(self.smooth_s * self.rate_hz))

    @property
    def n_settle(self) -> int:
        return max(3, round(self.settle_s * self.rate_hz))


@dataclass
class ShelfChange:
    """A shelf's move from one stable level to another.

    ``delta[j]`` is the signed change (grams) of the shelf's lane ``j`` (negative: weight taken), ``sd[j]`` its
    standard error, ``involved[j]`` whether the lane changed significantly.  ``t_start``/``t_end`` bound the
    motion; ``t_emit`` is the frame time at which the shelf was found stable again.  ``t_step[j]`` (when known)
    is when lane ``j`` made its step: the first and the last time of the activity its smoothed level lay past
    half of its change; NaN where the step is not in this activity's frames (most of it came before, a residue).
    """

    shelf: str
    lanes: list[str]
    t_start: float
    t_end: float
    t_emit: float
    delta: np.ndarray
    sd: np.ndarray
    involved: np.ndarray
    explained: bool = True
    t_step: np.ndarray | None = None  # (lanes, 2): first/last time the lane's level was past half its change

    @property
    def total_g(self) -> float:
        return float(self.delta[self.involved].sum())


Explain = Callable[[ShelfChange], np.ndarray]  # -> bool per lane of the shelf: explained by a product


@dataclass
class _Shelf:
    id: str
    lo: int
    hi: int
    state: int = INIT
    t_start: float = 0.0
    settled_run: int = 0
    last_active_t: float = 0.0
    seen: int = 0  # frames watched in INIT
    rest0: np.ndarray | None = None  # resting levels when the activity began
    resid0: np.ndarray | None = None  # residues then
    residue_since: float | None = None  # the shelf holds a residue since then
    warm: list = field(default_factory=list)  # (d, residual) frames collected during the warm-up
    trace: list = field(default_factory=list)  # (ts, m) chunks of the smoothed level while active
    trace_n: int = 0  # frames in trace


class ShelfDetector:
    """Detects :class:`ShelfChange` events on many shelves at once.

    ``shelves`` lists ``(shelf_id, [lane ids left to right])``; frames pushed carry the lanes in that order.
    """

    def __init__(self, shelves: list[tuple[str, list[str]]], config: DetectorConfig | None = None,
                 explain: Explain | None = None):
        self.cfg = config or DetectorConfig()
        self.explain = explain
        self.shelves: list[_Shelf] = []
        self.lane_ids: list[str] = []
        for sid, lanes in shelves:
            lo = len(self.lane_ids)
            self.lane_ids.extend(lanes)
            self.shelves.append(_Shelf(sid, lo, len(self.lane_ids)))
        n = self.L = len(self.lane_ids)
        self.starts = np.array([s.lo for s in self.shelves], np.intp)
        self.shelf_of = np.repeat(np.arange(len(self.shelves)), [s.hi - s.lo for s in self.shelves])
        c = self.cfg
        self.T = 2 * c.w + c.n_settle + 2  # frames kept from the previous block (enough for every window)
        self.tail = np.zeros((self.T, n))
        self.rest = np.zeros(n)  # resting level per lane (cleaned units); auto-zero follows it
        self.resid = np.zeros(n)  # residue: rest minus the reference changes are measured against
        self._thr = np.full(n, c.lane_min_g)  # the lane thresholds of the last decision
        self.sd_d = np.full(n, c.noise_init_g)
        self.noise_n = np.zeros(n, np.int64)  # frames the noise estimate rests on
        self.noise_w_n = np.zeros(n, np.int64)
        self._blocks = 0
        self.sd_w = np.full(n, c.noise_init_g)  # sd of the twice-smoothed level over a settle window
        self.ready = np.zeros(n, bool)  # lane has a level (was readable long enough once)
        self.usable = np.zeros(n, bool)  # lane was usable at the end of the last block
        self.run = np.zeros(n, np.int64)  # consecutive readable frames
        self.offset = np.zeros(n)  # raw - cleaned
        self.hold = np.full(n, np.nan)  # cleaned value held while unreadable
        self.counters: Counter = Counter()
        self.frames = 0
        self.t_last = 0.0

    # ------------------------------------------------------------------------------------- cleaning
    def _clean(self, x: np.ndarray) -> np.ndarray:
        """Cleaned copy of ``x``: offsets removed, unreadable stretches held, returning lanes re-zeroed."""
        W = self.cfg.n_settle
        nan = np.isnan(x)
        attention = nan.any(axis=0) | ~self.usable
        out = x - self.offset
        K = x.shape[0]
        # lanes seen for the first time with a full block of readings (the start of a stream): all at once
        fresh = attention & ~nan.any(axis=0) & ~self.ready & (self.run == 0)
        if K >= W and fresh.any():
            level = x[:W, fresh].mean(axis=0)
            out[:, fresh] = x[:, fresh]
            out[:W - 1, fresh] = level
            self.ready[fresh] = True
            self.usable[fresh] = True
            self.offset[fresh] = 0.0
            self.rest[fresh] = level
            self.resid[fresh] = 0.0
            self.tail[:, fresh] = level
            self.hold[fresh] = x[-1, fresh]
            self.run[fresh] = K
            attention &= ~fresh
        for j in np.flatnonzero(attention):
            out[:, j] = self._clean_lane(j, x[:, j], W)
        fine = ~attention
        if fine.any():
            self.run[fine] += x.shape[0]
        return out

    def _clean_lane(self, j: int, x: np.ndarray, W: int) -> np.ndarray:
        K = x.size
        t = np.arange(K)
        valid = ~np.isnan(x)
        last_bad = np.maximum.accumulate(np.where(valid, -1, t))
        run = np.where(last_bad >= 0, t - last_bad, t + 1 + self.run[j])
        usable = run >= W
        out = np.empty(K)
        prev = bool(self.usable[j])
        flips = np.flatnonzero(usable != np.r_[prev, usable[:-1]])
        bounds = [0, *flips.tolist(), K]
        hold = self.hold[j]
        for a, b in pairwise(bounds):
            if a == b:
                continue
            if usable[a]:
                if not prev:  # (re)joining: its level now corresponds to the held value
                    lo = max(0, a - W + 1)
                    seg = x[lo:a + 1]
                    level = float(np.nanmean(seg)) if np.isfinite(seg).any() else float(x[a])
                    if not self.ready[j]:
                        self.ready[j] = True
                        hold = level
                        self.offset[j] = 0.0
                        self.rest[j] = level
                        self.resid[j] = 0.0
                        self.tail[:, j] = level
                        out[:a] = level
                    else:
                        self.offset[j] = level - hold
                        self.counters["rezeroed"] += 1
                        log.warning("lane %s readable again; re-zeroed by %.1f g", self.lane_ids[j],
                                    self.offset[j])
                out[a:b] = x[a:b] - self.offset[j]
                hold = out[b - 1]
                prev = True
            else:
                if prev:
                    self.counters["lane_lost"] += 1
                    log.warning("lane %s unreadable; holding %.1f g", self.lane_ids[j], hold)
                out[a:b] = hold if self.ready[j] else 0.0
                prev = False
        self.hold[j] = hold
        self.usable[j] = prev
        self.run[j] = int(run[-1])
        if not np.isfinite(out).all():  # cannot happen, but never let NaN into the statistics
            out = np.nan_to_num(out, nan=0.0)
        return out

    # ------------------------------------------------------------------------------------- main loop
    def push(self, ts: np.ndarray, x: np.ndarray) -> list[ShelfChange]:
        """Process frames ``x (K, L)`` at times ``ts (K,)``; return the changes completed in them."""
        ts = np.asarray(ts, np.float64)
        x = np.asarray(x, np.float64)
        K = ts.size
        if K == 0:
            return []
        if x.shape != (K, self.L):
            raise ValueError(f"frames have shape {x.shape}, expected {(K, self.L)}")
        c = self.cfg
        w, n, T = c.w, c.n_settle, self.T
        xc = self._clean(x)
        y = np.vstack([self.tail, xc])
        m, d, m_all = _levels(y, w, T, K)
        thr = np.maximum(c.activity_min_g, c.k_activity * self.sd_d)
        quiet = np.abs(d) <= thr  # (K, L)
        near = np.abs(m - self.rest) <= self._band()
        not_ready = ~self.ready
        if not_ready.any():
            quiet[:, not_ready] = True
            near[:, not_ready] = True
        qa = np.logical_and.reduceat(quiet, self.starts, axis=1)  # (K, S): shelf quiet
        qs = qa & np.logical_and.reduceat(near, self.starts, axis=1)  # ... and at its resting level
        states = np.array([s.state for s in self.shelves])
        holding = np.array([s.residue_since is not None for s in self.shelves])
        calm = (states == STABLE) & ~holding & qs.all(axis=0)
        # the spread of the twice-smoothed level: for the shelves that need it, and for the calm ones now and
        # then (to learn it)
        self._blocks += 1
        learn_w = self._blocks % 4 == 0
        cols = np.ones(self.L, bool) if learn_w else ~calm[self.shelf_of]
        wv = np.zeros((K, self.L))
        if cols.any():
            wv[:, cols] = _window_var(m_all[:, cols], w, n, T, K)
        f = _Frames(ts, y, m, d, wv)
        if calm.any():  # the common case, all at once: stable shelves that stayed quiet the whole block
            lanes = np.flatnonzero(calm[self.shelf_of])
            self._follow(lanes, m, 0, K)
            self._learn_noise(lanes, d[:, lanes], wv[:, lanes] if learn_w else None)
        out: list[ShelfChange] = []
        for si in np.flatnonzero(~calm):
            out.extend(self._run_shelf(self.shelves[si], f, qa[:, si]))
        self.tail = y[-T:].copy()
        self.frames += K
        self.t_last = float(ts[-1])
        return out

    def _band(self) -> np.ndarray:
        c = self.cfg
        return np.maximum(c.band_min_g, c.band_k * self.sd_d / np.sqrt(2))

    def _follow(self, lanes: np.ndarray | slice, m: np.ndarray, a: int, b: int) -> None:
        """Auto-zero: the resting level follows the level over frames a..b-1 (EMA, closed form); small
        residues fade at the same pace."""
        k = b - a
        if k <= 0:
            return
        alpha = 1.0 / (self.cfg.zero_tau_s * self.cfg.rate_hz)
        keep = (1 - alpha) ** k
        wts = alpha * (1 - alpha) ** np.arange(k - 1, -1, -1)
        self.rest[lanes] = keep * self.rest[lanes] + wts @ m[a:b][:, lanes]
        self.resid[lanes] *= keep

    def _learn_noise(self, idx: np.ndarray, dd: np.ndarray, wv: np.ndarray | None, robust: bool = False
                     ) -> None:
        """Update the noise of lanes ``idx`` from frames of a quiet stretch: ``dd`` (the step statistic) and
        ``wv`` (the spread of the smoothed level over a settle window), both (frames, len(idx)).  The running
        mean of the variance (1/n weights until ``noise_tau_s`` of frames are in, then an EMA).  ``robust``
        (the first estimate, before any threshold exists) takes medians instead of means."""
        c = self.cfg
        k = dd.shape[0]
        if idx.size == 0 or k < 4:
            return
        if robust:
            var_d = (1.4826 * np.median(np.abs(dd), axis=0)) ** 2
        else:
            var_d = np.mean(dd * dd, axis=0)
        var_d = np.clip(var_d, 1e-6, c.noise_max_g**2)
        seen = self.noise_n[idx]
        alpha = k / np.minimum(seen + k, c.noise_tau_s * c.rate_hz)
        ready = self.ready[idx]
        self.sd_d[idx] = np.where(ready, np.sqrt((1 - alpha) * self.sd_d[idx] ** 2 + alpha * var_d), self.sd_d[idx])
        self.noise_n[idx] = np.where(ready, seen + k, seen)
        if wv is not None:
            var_w = np.clip(np.median(wv, axis=0) if robust else np.mean(wv, axis=0), 1e-8, c.noise_max_g**2)
            seen_w = self.noise_w_n[idx]
            alpha_w = k / np.minimum(seen_w + k, c.noise_tau_s * c.rate_hz)
            self.sd_w[idx] = np.where(ready, np.sqrt((1 - alpha_w) * self.sd_w[idx] ** 2 + alpha_w * var_w),
                                      self.sd_w[idx])
            self.noise_w_n[idx] = np.where(ready, seen_w + k, seen_w)

    def _steady(self, lanes: slice, wv: np.ndarray) -> np.ndarray:
        """Whether the smoothed level kept as still over the settle window as it does on a calm shelf
        (``wv``: frames x lanes of the shelf).  A hand still holding an item on the shelf trembles slowly;
        the fast ring of a shelf after a knock is smoothed away and does not count."""
        c = self.cfg
        limit2 = (c.spread_k * self.sd_w[lanes]) ** 2 + c.spread_floor_g**2
        return np.all((wv <= limit2) | ~self.ready[lanes], axis=-1)

    # ------------------------------------------------------------------------------------- per shelf
    def _run_shelf(self, s: _Shelf, f: _Frames, qa: np.ndarray) -> list[ShelfChange]:
        c = self.cfg
        K = f.ts.size
        lanes = slice(s.lo, s.hi)
        out: list[ShelfChange] = []
        i = 0
        if s.state == INIT:
            i = self._warm_up(s, f)
            if i is None:
                return out
        band = self._band()[lanes]
        while i < K:
            if s.state == STABLE:
                holding = s.residue_since is not None
                j_over = K
                if holding:
                    over = np.flatnonzero(f.ts[i:] >= s.residue_since + c.hold_max_s)
                    j_over = i + int(over[0]) if over.size else K
                # quiet and near the resting level (as it is now: a settle earlier in this block moved it)
                near = np.abs(f.m[i:, lanes] - self.rest[lanes]) <= band
                near |= ~self.ready[lanes]
                bad = np.flatnonzero(~(qa[i:] & near.all(axis=1)))
                j_bad = i + int(bad[0]) if bad.size else K
                if j_over < j_bad:
                    out.extend(self._give_up(s, float(f.ts[j_over])))
                    i = j_over
                    continue
                if holding:
                    # no auto-zero while a residue waits (a slow pick's tail would be absorbed); instead, once
                    # per block, see whether the quiet shelf now explains what it holds
                    k = j_bad - 1
                    if k - i + 1 >= c.n_settle and self._steady(lanes, f.wv[k, lanes]):
                        level = f.y[self.T + k - c.n_settle + 1:self.T + k + 1, lanes].mean(axis=0)
                        if np.abs(level - self.rest[lanes]).sum() >= c.lane_min_g:
                            s.t_start = s.residue_since
                            s.last_active_t = float(f.ts[k])
                            s.rest0 = self.rest[lanes].copy()
                            s.resid0 = self.resid[lanes].copy()
                            out.extend(self._decide(s, level, f.wv[k, lanes], float(f.ts[k])))
                if j_bad >= K:
                    if not holding:
                        self._follow(lanes, f.m, i, K)
                        if K - i >= K // 2:
                            self._learn_noise(np.arange(s.lo, s.hi), f.d[i:, lanes], f.wv[i:, lanes])
                    break
                if not holding:
                    self._follow(lanes, f.m, i, j_bad)
                s.state = ACTIVE
                s.trace, s.trace_n = [], 0
                s.t_start = float(f.ts[j_bad]) - 1.0 / c.rate_hz
                s.last_active_t = float(f.ts[j_bad])
                s.settled_run = 0
                s.rest0 = self.rest[lanes].copy()
                s.resid0 = self.resid[lanes].copy()
                i = j_bad
                continue
            # ACTIVE: stable again once every lane was quiet for settle_s and the level kept still over it
            q = qa[i:]
            idx = np.arange(q.size)
            last_loud = np.maximum.accumulate(np.where(q, -1, idx))
            run = np.where(last_loud >= 0, idx - last_loud, idx + 1 + s.settled_run)
            run = np.where(q, run, 0)
            loud = np.flatnonzero(~q)
            ok = run >= c.n_settle
            if ok.any():
                ok &= self._steady(lanes, f.wv[i:, lanes])
            hit = np.flatnonzero(ok)
            self._keep_trace(s, f, i, i + int(hit[0]) + 1 if hit.size else K)
            if hit.size == 0:
                if loud.size:
                    s.last_active_t = float(f.ts[i + int(loud[-1])])
                s.settled_run = int(run[-1])
                break
            j = i + int(hit[0])
            before = loud[loud < hit[0]]
            if before.size:
                s.last_active_t = float(f.ts[i + int(before[-1])])
            level = f.y[self.T + j - c.n_settle + 1:self.T + j + 1, lanes].mean(axis=0)
            out.extend(self._decide(s, level, f.wv[j, lanes], float(f.ts[j])))
            i = j + 1
        return out

    def _warm_up(self, s: _Shelf, f: _Frames) -> int | None:
        """Watch a new shelf for ``warmup_s`` (after its lanes' back-filled start) to learn its noise and
        level; the frame index where detection starts, or None while still warming up."""
        c = self.cfg
        lanes = slice(s.lo, s.hi)
        K = f.ts.size
        if not self.ready[lanes].any():
            return None
        n_warm = max(4, round(c.warmup_s * c.rate_hz))
        skip = c.n_settle + 2 * c.w
        need = skip + n_warm
        take = min(K, max(0, need - s.seen))
        lo = max(0, skip - s.seen)
        if lo < take:
            s.warm.append((f.d[lo:take, lanes].copy(), f.wv[lo:take, lanes].copy()))
        s.seen += take
        if s.seen < need:
            return None
        self.rest[lanes] = f.m[max(take - 1, 0), lanes]
        if s.warm:
            dd = np.vstack([a for a, _ in s.warm])
            wv = np.vstack([b for _, b in s.warm])
            self._learn_noise(np.arange(s.lo, s.hi), dd, wv, robust=True)
        s.warm = []
        s.state = STABLE
        return take

    def _keep_trace(self, s: _Shelf, f: _Frames, a: int, b: int) -> None:
        """Keep the active shelf's smoothed level over block frames a..b-1 (the last ``trace_max_s``)."""
        if b <= a:
            return
        s.trace.append((f.ts[a:b].copy(), f.m[a:b, s.lo:s.hi].copy()))
        s.trace_n += b - a
        cap = round(self.cfg.trace_max_s * self.cfg.rate_hz)
        while len(s.trace) > 1 and s.trace_n - s.trace[0][0].size >= cap:
            s.trace_n -= s.trace.pop(0)[0].size

    def _step_times(self, s: _Shelf, recent: np.ndarray) -> np.ndarray | None:
        """Per lane of the shelf, the first and the last time of this activity that its smoothed level lay
        past half of ``recent`` (its change since the activity began); NaN where it never did or did not stay.
        None without a trace (a residue decided on a quiet shelf)."""
        if not s.trace or s.rest0 is None:
            return None
        ts = np.concatenate([t for t, _ in s.trace])
        r = np.vstack([m for _, m in s.trace]) - s.rest0
        past = (np.sign(recent) * r >= 0.5 * np.abs(recent)) & (recent != 0)  # (frames, lanes)
        k = ts.size
        first = np.where(past.any(axis=0), ts[np.argmax(past, axis=0)], np.nan)
        # the last step: the frame after the last one not past half (the first frame when all are past)
        after = np.where(past.all(axis=0), 0, np.minimum(k - np.argmax(~past[::-1], axis=0), k - 1))
        last = np.where(past[-1], ts[after], np.nan)  # NaN: the level fell back before the shelf settled
        return np.column_stack([first, last])

    def _significant(self, delta: np.ndarray, inv: np.ndarray) -> bool:
        pos = delta[inv & (delta > 0)].sum()
        neg = -delta[inv & (delta < 0)].sum()
        return bool(inv.any()) and max(pos, neg) >= self.cfg.event_min_g

    def _decide(self, s: _Shelf, level: np.ndarray, wv: np.ndarray, t_now: float) -> list[ShelfChange]:
        """The shelf is stable again at ``level``: emit what products explain, keep the rest as residue."""
        c = self.cfg
        lanes = slice(s.lo, s.hi)
        ready = self.ready[lanes]
        recent = level - s.rest0  # since the activity began
        full = recent + s.resid0  # against the reference (residue included)
        # sd of a settled level is sd_d * sqrt(w / 2n) for white noise; the reference is one such level too.
        # A level that still moves a little over the window is trusted less
        sd_delta = np.maximum(self.sd_d[lanes] * np.sqrt(c.w / c.n_settle), np.sqrt(2.0 * wv))
        thr = np.maximum(c.lane_min_g, c.k_lane * sd_delta)
        t_end = max(s.t_start, s.last_active_t - c.w / c.rate_hz)
        steps = self._step_times(s, recent)
        s.trace, s.trace_n = [], 0
        options = [("full", full)]
        if np.any(np.abs(s.resid0) >= thr):  # a residue worth trying without
            options.append(("recent", recent))
        best = None
        for name, delta in options:
            inv = (np.abs(delta) >= thr) & ready
            if not self._significant(delta, inv):
                expl = np.zeros_like(inv)
            else:
                ch = ShelfChange(s.id, self.lane_ids[lanes], s.t_start, t_end, t_now, delta.copy(),
                                 sd_delta.copy(), inv, t_step=_own_steps(steps, recent, delta))
                expl = inv.copy() if self.explain is None else (np.asarray(self.explain(ch), bool) & inv)
            unexplained = float(np.abs(delta[inv & ~expl]).sum())
            if best is None or unexplained < best[0] - 1e-9:
                best = (unexplained, name, delta, inv, expl)
        _, name, delta, inv, expl = best
        # what was not emitted stays as residue against the old reference: a big residue holds the shelf (no
        # auto-zero) until it is explained or given up; a small one (a slow pick's first grams, a nudge)
        # fades with the auto-zero
        resid = np.where(expl, 0.0 if name == "full" else s.resid0, full)
        resid = np.where(ready, resid, 0.0)
        out: list[ShelfChange] = []
        if expl.any() and self._significant(delta, expl):
            self.counters["changes"] += 1
            out.append(ShelfChange(s.id, self.lane_ids[lanes], s.t_start, t_end, t_now, delta.copy(),
                                   sd_delta.copy(), expl.copy(), t_step=_own_steps(steps, recent, delta)))
        elif not inv.any():
            self.counters["transients"] += 1
        self.rest[lanes] = level
        self.resid[lanes] = resid
        self._thr[lanes] = thr
        if np.any(np.abs(resid) >= thr):
            if s.residue_since is None:
                s.residue_since = t_now
                self.counters["held"] += 1
        else:
            s.residue_since = None
        s.state = STABLE
        s.settled_run = 0
        return out

    def _give_up(self, s: _Shelf, t_now: float) -> list[ShelfChange]:
        """A residue nothing explained for ``hold_max_s``: absorbed; emitted when it is big, else dropped."""
        lanes = slice(s.lo, s.hi)
        resid = self.resid[lanes].copy()
        since = s.residue_since if s.residue_since is not None else t_now
        self.resid[lanes] = 0.0
        s.residue_since = None
        inv = np.abs(resid) >= self._thr[lanes]
        if not inv.any():
            return []
        moved = float(np.abs(resid[inv]).sum())
        if moved < self.cfg.unexplained_min_g:
            self.counters["unexplained_dropped"] += 1
            log.info("shelf %s: unexplained change of %.1f g dropped", s.id, float(resid[inv].sum()))
            return []
        self.counters["unexplained"] += 1
        log.info("shelf %s: change of %.1f g unexplained; emitted as is", s.id, float(resid[inv].sum()))
        sd = self.sd_d[lanes] * np.sqrt(self.cfg.w / self.cfg.n_settle)
        return [ShelfChange(s.id, self.lane_ids[lanes], since, since, t_now, np.where(inv, resid, 0.0), sd, inv,
                            explained=False)]

    def finish(self) -> list[ShelfChange]:
        """End of stream: residues are given up (emitted when big); a shelf still moving is dropped."""
        out = []
        for s in self.shelves:
            if s.state == ACTIVE:
                self.counters["unfinished"] += 1
                log.info("shelf %s was still moving when the stream ended", s.id)
                s.state = STABLE
            if s.residue_since is not None:
                out.extend(self._give_up(s, self.t_last))
        return out


@dataclass
class _Frames:
    """One block's frames and what is derived from them (all lanes): ``y`` the cleaned readings with the kept
    tail in front, ``m`` the boxcar level and ``d`` the step statistic per block frame, ``wv`` the variance of
    the twice-smoothed level over the settle window ending at each block frame."""

    ts: np.ndarray
    y: np.ndarray
    m: np.ndarray
    d: np.ndarray
    wv: np.ndarray


def _own_steps(steps: np.ndarray | None, recent: np.ndarray, delta: np.ndarray) -> np.ndarray | None:
    """The step times of the lanes whose change ``delta`` came mostly in this activity (``recent``); NaN for
    the others (their step lies in an earlier activity)."""
    if steps is None:
        return None
    own = np.abs(recent) >= 0.5 * np.abs(delta)
    return np.where(own[:, None], steps, np.nan)


def _levels(y: np.ndarray, w: int, T: int, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``m`` and ``d`` (see :class:`_Frames`) for the last ``K`` rows of ``y`` (``T`` kept rows in front), and
    ``m_all`` (the boxcar level ending at every row from ``w - 1``), with cumulative sums."""
    cs = np.empty((y.shape[0] + 1, y.shape[1]))
    cs[0] = 0.0
    np.cumsum(y, axis=0, out=cs[1:])
    m_all = (cs[w:] - cs[:-w]) / w  # m_all[k] = mean(y[k : k + w]): the level ending at row k + w - 1
    m = m_all[T - w + 1:]
    d = m - m_all[T - 2 * w + 1: T - 2 * w + 1 + K]
    return m, d, m_all


def _window_var(m_all: np.ndarray, w: int, n: int, T: int, K: int) -> np.ndarray:
    """``wv`` (see :class:`_Frames`): the level smoothed once more (a triangle of 2w - 1 frames: the fast ring
    of a knocked shelf is gone) for the frames -(n-1) .. K-1, then its variance over windows of n frames."""
    cm = np.empty((m_all.shape[0] + 1, m_all.shape[1]))
    cm[0] = 0.0
    np.cumsum(m_all, axis=0, out=cm[1:])
    m2 = (cm[w:] - cm[:-w]) / w  # m2[k] ends at row k + 2w - 2
    start = T - 2 * w + 2 - (n - 1)
    e = m2[start:start + K + n - 1]
    e = e - e[:1]  # centred, so the sums of squares keep their precision
    c1 = np.empty((e.shape[0] + 1, e.shape[1]))
    c2 = np.empty_like(c1)
    c1[0] = c2[0] = 0.0
    np.cumsum(e, axis=0, out=c1[1:])
    np.cumsum(e * e, axis=0, out=c2[1:])
    mean = (c1[n:] - c1[:-n]) / n
    return np.maximum((c2[n:] - c2[:-n]) / n - mean * mean, 0.0)

"""Who did it: for a shelf event, the probability of each shopper present having done it.

Evidence per shopper, over the event's window (padded for clock skew):
- wrists: every camera's wrist observation is a ray; the wrist lies on it within arm's reach of the shopper's
  body, so only that segment of the ray counts.  At one instant, several cameras' rays of the same wrist bound
  the wrist's distance to the lane from below (it lies on all of them); the largest of those bounds is taken,
  then the smallest over the window (the moment the hand was closest).
- body: the horizontal distance of the shopper's floor position to the lanes when the weight stepped (cheap
  prior; arms are short, and a shopper walking past the lane a second before the step was not at it).
- head: for a low lane, how much lower the head was at the step than the shopper stands (:func:`head_dip`,
  from the floor tracker's head height): a picker bends to a low shelf while the neighbour beside them, whose
  resting hand may be nearer the lane than the picker's hidden one, usually does not.
Scores are Gaussian in those distances; the probabilities are the normalised scores.  The winner's
probability is the line's confidence; the margin to the runner-up decides whether the line is uncertain.

A shelf change on several products' lanes at once comes as sibling events (one ``parent_id``).  A located
wrist nearer to a sibling's lanes is that sibling's hand and does not count here (``rivals``), and the
siblings are weighed together: one shopper doing two of them is taken as less likely than two shoppers doing
one each (:func:`sibling_factors`) -- two neighbours reaching into adjacent lanes at the same moment.  An
event too close to call is weighed the same way against the confident events of other shelf changes at the
same moment (:func:`busy`): a shopper busy at another shelf then is less likely to have done it too.

The evidence is gathered once per event (:func:`gather`) and weighed apart from the floor (:func:`weigh`), so
that kept evidence can be weighed again under other settings (``walkout.association_study``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from calibration.store import Box
from fusion.config import AssociationConfig
from fusion.floor import FloorTracker

INSTANT_S = 0.06  # observations this close in time count as one instant
PROFILE_S = np.arange(-3.0, 3.01, 0.25)  # offsets from the step (or the event's middle) of Candidate.profile


@dataclass
class Association:
    shopper: str | None
    p: float
    margin: float
    runner_up: str | None
    wrist_distance: float | None
    scores: dict[str, float]
    cameras: list[str]
    uncertain: bool
    reason: str = ""
    # per candidate: (wrist distance, body distance, cameras) -- what a re-weighing needs (:func:`reweigh`)
    evidence: dict[str, tuple[float, float, list[str]]] = field(default_factory=dict)


def box_frames(boxes: list[Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centres (B, 3), half sizes (B, 3), cos and sin of yaw (B,) of boxes."""
    c = np.array([b.center for b in boxes], float)
    h = np.array([b.half_size for b in boxes], float)
    yaw = np.radians([b.yaw_deg for b in boxes])
    return c, h, np.cos(yaw), np.sin(yaw)


def _signed(p: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Signed distance of points in box-local coordinates (..., 3) to boxes of half sizes ``h``: positive
    outside (Euclidean), negative inside (minus the depth to the nearest face)."""
    over = np.abs(p) - h
    outside = np.sqrt((np.maximum(over, 0.0) ** 2).sum(-1))
    inside = np.minimum(over.max(-1), 0.0)
    return outside + inside


def approach_boxes(boxes: list[Box], reach: float) -> list[Box]:
    """The lanes' boxes stretched along their depth (the longer horizontal side) by ``reach`` on both ends.

    A hand inside a lane is hidden by the goods; what cameras see is the hand entering and leaving through
    the lane's front, so the evidence is measured against the lane plus the space in front of it (its
    approach), which keeps the lane's width: a neighbour's hand in front of the next lane stays outside."""
    out = []
    for b in boxes:
        lo, hi = np.asarray(b.min, float), np.asarray(b.max, float)
        axis = 0 if hi[0] - lo[0] > hi[1] - lo[1] else 1
        lo[axis] -= reach
        hi[axis] += reach
        out.append(Box(min=tuple(lo), max=tuple(hi), yaw_deg=b.yaw_deg))
    return out


def segment_box_distance(a: np.ndarray, b: np.ndarray, boxes: list[Box], iters: int = 40) -> np.ndarray:
    """Smallest signed distance (negative inside) from segments ``a[i] -> b[i]`` (N, 3) to the nearest of
    ``boxes`` (N,).

    The signed distance to a convex box is convex along a segment, so a golden-section search on each
    segment (vectorised over segments and boxes) finds its minimum.
    """
    a = np.asarray(a, float).reshape(-1, 3)
    b = np.asarray(b, float).reshape(-1, 3)
    if len(a) == 0:
        return np.zeros(0)
    c, h, cs, sn = box_frames(boxes)

    def local(p: np.ndarray) -> np.ndarray:  # (N, 3) -> (N, B, 3) in each box's frame
        d = p[:, None, :] - c[None]
        x = d[..., 0] * cs + d[..., 1] * sn
        y = -d[..., 0] * sn + d[..., 1] * cs
        return np.stack([x, y, d[..., 2]], axis=-1)

    la, lb = local(a), local(b)

    def dist(s: np.ndarray) -> np.ndarray:  # s: (N, B)
        return _signed(la + (lb - la) * s[..., None], h[None])

    lo = np.zeros(la.shape[:2])
    hi = np.ones(la.shape[:2])
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = dist(x1), dist(x2)
    for _ in range(iters):
        left = f1 < f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        x2n = np.where(left, x1, lo + g * (hi - lo))
        x1n = np.where(left, hi - g * (hi - lo), x2)
        x1, x2 = x1n, x2n
        f1, f2 = dist(x1), dist(x2)
    best = np.minimum(np.minimum(f1, f2), np.minimum(dist(np.zeros_like(lo)), dist(np.ones_like(lo))))
    return best.min(axis=1)


def floor_box_distance(xy: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """Horizontal distance from floor points (N, 2) to the nearest box footprint (N,)."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    c, h, cs, sn = box_frames(boxes)
    d = xy[:, None, :] - c[None, :, :2]
    x = d[..., 0] * cs + d[..., 1] * sn
    y = -d[..., 0] * sn + d[..., 1] * cs
    q = np.maximum(np.abs(np.stack([x, y], -1)) - h[None, :, :2], 0.0)
    return np.sqrt((q * q).sum(-1)).min(axis=1)


def _path_at(path: list[tuple[float, float, float]], ts: np.ndarray) -> np.ndarray:
    arr = np.asarray(path, float)
    return np.stack([np.interp(ts, arr[:, 0], arr[:, 1]), np.interp(ts, arr[:, 0], arr[:, 2])], axis=1)


def wrist_distances(floor: FloorTracker, slot: int, t0: float, t1: float, boxes: list[Box],
                    cfg: AssociationConfig, rivals: list[Box] | None = None, lanes: list[Box] | None = None
                    ) -> WristEvidence:
    """Per-instant signed distance (negative inside) of this shopper's nearest wrist to the boxes, and of
    the nearest triangulated wrist to ``lanes`` (the lanes themselves when ``boxes`` are their approaches;
    default ``boxes``).

    At each instant the wrist rays of all cameras are grouped into wrists (rays of different cameras that
    pass within ``TRIANGULATE_M`` of each other, within reach of the body; left/right labels are not trusted
    across views); a wrist seen by two or more cameras is triangulated and its distance measured exactly, a
    wrist seen by one camera gives a lower bound (the nearest point of its ray segment within reach).
    A located wrist nearer to one of the ``rivals`` (the lanes of another event of the same shelf change:
    two people, or two hands, in neighbouring lanes at once) than to ``boxes`` is that event's hand: it never
    counts as at these lanes (its distance to ``lanes`` stays as it is: a hand in the next lane is not away,
    one shopper may do both).
    """
    info = floor.info[slot]
    obs = [w for w in info.wrists if t0 <= w[0] <= t1]
    none = WristEvidence(np.zeros(0), np.zeros(0), np.zeros(0), [])
    if not obs or not info.path:
        return none
    arr = np.array([(w[0], *w[3:9]) for w in obs], float)  # t, ox..dz
    cams = np.array([w[1] for w in obs])
    t = arr[:, 0]
    o, d = arr[:, 1:4], arr[:, 4:7]
    body = _path_at(info.path, t)
    s_lo, s_hi = _reach_interval(o, d, body, cfg.reach_m)
    ok = s_hi > s_lo
    if not ok.any():
        return none
    t, o, d, cams, body, s_lo, s_hi = t[ok], o[ok], d[ok], cams[ok], body[ok], s_lo[ok], s_hi[ok]
    bound = segment_box_distance(o + d * s_lo[:, None], o + d * s_hi[:, None], boxes)
    inst = np.round(t / INSTANT_S).astype(np.int64)
    order = np.argsort(inst, kind="stable")
    t, o, d, cams, body, bound, inst = (a[order] for a in (t, o, d, cams, body, bound, inst))
    cam_id = np.unique(cams, return_inverse=True)[1]
    # every pair of rays of one instant from different cameras, and how close the two rays pass
    starts = np.flatnonzero(np.r_[True, inst[1:] != inst[:-1]])
    ends = np.r_[starts[1:], len(inst)]
    pi, pj = [], []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a > 1:
            ii, jj = np.triu_indices(b - a, 1)
            pi.append(ii + a)
            pj.append(jj + a)
    groups_of = [[i] for i in range(len(inst))]
    if pi:
        pi, pj = np.concatenate(pi), np.concatenate(pj)
        keep = cam_id[pi] != cam_id[pj]
        pi, pj = pi[keep], pj[keep]
        gap = _ray_gaps(o[pi], d[pi], o[pj], d[pj])
        close = gap < TRIANGULATE_M
        groups_of = _group_pairs(len(inst), pi[close], pj[close], gap[close], cam_id)
    # triangulate the groups seen by two or more cameras, all at once
    multi = [g for g in groups_of if len(g) >= 2]
    multi_first = {g[0] for g in multi}
    lane_d: dict[int, float] = {}  # triangulated wrists within reach: distance to the lanes themselves
    # one camera's ray pins the hand to a line, and a ceiling camera's line to a hand on a low shelf passes
    # through the shelves above it: such a wrist only bounds the distance from below, never earns depth
    dist = {g[0]: max(float(bound[g[0]]), 0.0) for g in groups_of if len(g) == 1}
    if multi:
        pts = _triangulate_many(o, d, multi)
        heads = np.array([g[0] for g in multi])
        near = (np.hypot(pts[:, 0] - body[heads, 0], pts[:, 1] - body[heads, 1]) <= cfg.reach_m) & \
            (pts[:, 2] >= 0.2) & (pts[:, 2] <= 2.3)
        pd = points_box_distance(pts, boxes)
        pl = pd if lanes is None else points_box_distance(pts, lanes)
        if rivals:
            pd = np.where(points_box_distance(pts, rivals) < pd, np.maximum(pd, cfg.outside_cap_m), pd)
        for g, ok_, dv, lv in zip(multi, near.tolist(), pd.tolist(), pl.tolist(), strict=True):
            dist[g[0]] = dv if ok_ else np.inf
            if ok_:
                lane_d[g[0]] = lv
    tri: dict[int, float] = {}
    single: dict[int, float] = {}
    n_tri: dict[int, int] = {}  # wrists located (triangulated, within reach) per instant
    at_lane: dict[int, float] = {}
    for first, dv in dist.items():
        k = int(inst[first])
        into = tri if first in multi_first else single
        if dv < into.get(k, np.inf):
            into[k] = dv
        if first in lane_d:
            n_tri[k] = n_tri.get(k, 0) + 1
            at_lane[k] = min(at_lane.get(k, np.inf), lane_d[first])
    keys = sorted(set(tri) | set(single))
    return WristEvidence(np.array(keys, float) * INSTANT_S,
                         np.array([tri.get(k, np.inf) for k in keys]),
                         np.array([single.get(k, np.inf) for k in keys]),
                         sorted(set(cams.tolist())),
                         np.array([n_tri.get(k, 0) for k in keys], int),
                         np.array([at_lane.get(k, np.inf) for k in keys]))


@dataclass
class WristEvidence:
    """Per instant: the nearest triangulated wrist's signed distance to the lanes (inf if no wrist was seen
    by two cameras) and the nearest one-camera lower bound (inf if none)."""

    times: np.ndarray
    triangulated: np.ndarray
    single: np.ndarray
    cameras: list[str]
    located: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # wrists triangulated per instant
    at_lanes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # nearest of them to the lanes themselves

    def excluded(self, t0: float, t1: float, far: float, at_lanes: bool = False) -> float:
        """Fraction of the instants in [t0, t1] at which both wrists were located and both were farther
        than ``far`` from the lanes' approaches (``at_lanes``: from the lanes themselves): the shopper's hands
        were demonstrably elsewhere."""
        sel = (self.times >= t0) & (self.times <= t1)
        if not sel.any():
            return 0.0
        dist = self.at_lanes if at_lanes else self.triangulated
        out = (self.located[sel] >= 2) & (dist[sel] > far)
        return float(out.mean())

    def distance(self, k: int, mean: bool = False) -> float | None:
        """The k-th smallest distance over the instants (``mean``: the mean of the k smallest): from
        triangulated wrists when there are k of them (one-camera bounds are weak near stacked shelves), else
        from everything."""
        tri = np.sort(self.triangulated[np.isfinite(self.triangulated)])
        if tri.size >= k:
            return float(tri[:k].mean() if mean else tri[k - 1])
        both = np.sort(np.minimum(self.triangulated, self.single))
        both = both[np.isfinite(both)]
        return float(both[min(k, both.size) - 1]) if both.size else None


TRIANGULATE_M = 0.08  # rays of one wrist from different cameras pass this close


def _group_pairs(n: int, pi: np.ndarray, pj: np.ndarray, gap: np.ndarray, cam_id: np.ndarray
                 ) -> list[list[int]]:
    """Group rays into wrists: greedily join the closest pairs (rays of different cameras of one instant),
    never putting two rays of one camera in a group."""
    groups = [[i] for i in range(n)]
    where = list(range(n))
    for k in np.argsort(gap, kind="stable").tolist():
        gi, gj = where[int(pi[k])], where[int(pj[k])]
        if gi == gj:
            continue
        if {int(cam_id[r]) for r in groups[gi]} & {int(cam_id[r]) for r in groups[gj]}:
            continue
        groups[gi].extend(groups[gj])
        for r in groups[gj]:
            where[r] = gi
        groups[gj] = []
    return [sorted(g) for g in groups if g]


def _ray_gaps(o1: np.ndarray, d1: np.ndarray, o2: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Closest approach of pairs of rays (forward halves only), vectorised."""
    w = o1 - o2
    b = (d1 * d2).sum(1)
    den = 1.0 - b * b
    dd, e = (d1 * w).sum(1), (d2 * w).sum(1)
    par = den < 1e-9
    den = np.where(par, 1.0, den)
    s = np.maximum((b * e - dd) / den, 0.0)
    u = np.maximum((e - b * dd) / den, 0.0)
    gap = np.linalg.norm(w + s[:, None] * d1 - u[:, None] * d2, axis=1)
    return np.where(par, np.linalg.norm(np.cross(w, d1), axis=1), gap)


def _triangulate_many(o: np.ndarray, d: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Least-squares points nearest to each group's rays, (G, 3)."""
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (N, 3, 3)
    po = (proj @ o[:, :, None])[..., 0]  # (N, 3)
    gid = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    rows = np.concatenate([np.asarray(g) for g in groups])
    A = np.zeros((len(groups), 3, 3))
    B = np.zeros((len(groups), 3))
    np.add.at(A, gid, proj[rows])
    np.add.at(B, gid, po[rows])
    return np.linalg.solve(A, B[..., None])[..., 0]


def points_box_distance(p: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """Signed distance (negative inside) of points (N, 3) to the nearest of the boxes (N,)."""
    c, h, cs, sn = box_frames(boxes)
    dd = p[:, None, :] - c[None]
    x = dd[..., 0] * cs + dd[..., 1] * sn
    y = -dd[..., 0] * sn + dd[..., 1] * cs
    return _signed(np.stack([x, y, dd[..., 2]], -1), h[None]).min(axis=1)


def _reach_interval(o: np.ndarray, d: np.ndarray, body: np.ndarray, reach: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter interval [lo, hi] where the ray point is within ``reach`` horizontally of ``body`` and
    at a plausible hand height."""
    # horizontal: |o_xy + s d_xy - body|^2 <= reach^2
    p = o[:, :2] - body
    qa = (d[:, :2] ** 2).sum(1)
    qb = 2 * (p * d[:, :2]).sum(1)
    qc = (p ** 2).sum(1) - reach ** 2
    disc = qb * qb - 4 * qa * qc
    good = (disc >= 0) & (qa > 1e-12)
    sq = np.sqrt(np.where(good, disc, 0.0))
    qa_safe = np.where(qa > 1e-12, qa, 1.0)
    lo = np.where(good, (-qb - sq) / (2 * qa_safe), 0.0)
    hi = np.where(good, (-qb + sq) / (2 * qa_safe), -1.0)
    # vertical: 0.2 <= z <= 2.3
    dz = np.where(np.abs(d[:, 2]) > 1e-9, d[:, 2], 1e-9)
    z_a = (0.2 - o[:, 2]) / dz
    z_b = (2.3 - o[:, 2]) / dz
    lo = np.maximum(lo, np.maximum(np.minimum(z_a, z_b), 0.0))
    hi = np.minimum(hi, np.maximum(z_a, z_b))
    return lo, hi


def wrist_log_score(v: float, cfg: AssociationConfig) -> float:
    """Log-likelihood of a hand at signed distance ``v`` from the lanes having done the event: rising with
    the depth inside (up to ``inside_cap_m``, so a hand in the middle of a lane beats one at its edge),
    falling outside (at ``outside_scale_m``: a picking hand is often hidden, and a bystander's a little off the
    lane says little)."""
    depth = min(max(-v, 0.0), cfg.inside_cap_m)
    out = min(max(v, 0.0), cfg.outside_cap_m)  # beyond that: no hand seen at the lane, whatever the distance
    return depth / cfg.inside_scale_m - out / cfg.outside_scale_m - 0.5 * (out / cfg.wrist_sd_m) ** 2


def evidence_window(t_start: float, t_end: float, t_step: float | None, cfg: AssociationConfig
                    ) -> tuple[float, float, float, float]:
    """The times wrists are judged over, ``(t0, t1)``, and those the exclusion is judged over: the event's
    window padded; with a step time, only around it (the hand was in the lane then; a bystander's hand
    passing the lane while the shelf settles does not count), still within the padded window."""
    t0, t1 = t_start - cfg.window_pad_s, t_end + cfg.window_pad_s
    if t_step is None:
        return t0, t1, t_start, t_end
    return (max(t0, t_step - cfg.step_before_s), min(t1, t_step + cfg.step_after_s),
            t_step - cfg.step_exclusion_s, t_step + cfg.step_exclusion_s)


@dataclass
class Candidate:
    """One shopper present around an event, before any weighing: the body's nearest horizontal distance to the
    lanes over the window, and the wrists' evidence (:func:`wrist_distances`)."""

    shopper: str
    body: float
    wrists: WristEvidence
    # the body's horizontal distance to the lanes at PROFILE_S around the step (nan where not tracked)
    profile: np.ndarray = field(default_factory=lambda: np.full(len(PROFILE_S), np.nan))
    # the head's height at PROFILE_S around the step (nan where not tracked)
    heights: np.ndarray = field(default_factory=lambda: np.full(len(PROFILE_S), np.nan))


def history_at(history: list[tuple[float, ...]], ts: np.ndarray, width: int) -> np.ndarray:
    """A time-ordered history of ``(t, v1 .. v_width)`` rows at times ``ts`` (sorted), linearly interpolated,
    ``(len(ts), width)``; nan rows outside its times.  Only the stretch around ``ts`` (and a row either side)
    is read."""
    lo = max(bisect.bisect_left(history, (ts[0],)) - 1, 0)
    hi = bisect.bisect_right(history, (ts[-1], math.inf)) + 1
    part = np.asarray(history[lo:hi], float).reshape(-1, width + 1)
    out = np.full((len(ts), width), np.nan)
    if not len(part):
        return out
    inside = (ts >= part[0, 0]) & (ts <= part[-1, 0])
    for j in range(width):
        out[inside, j] = np.interp(ts[inside], part[:, 0], part[:, j + 1])
    return out


def height_profile(heights: list[tuple[float, float]], t_ref: float) -> np.ndarray:
    """The head's height at ``t_ref + PROFILE_S`` from its history ``(t, h)`` (nan outside its times)."""
    return history_at(heights, t_ref + PROFILE_S, 1)[:, 0]


DIP_STANDING_S = 1.5  # the head's standing height: from its heights this far or farther from the step ...
DIP_STANDING_Q = 75  # ... their upper quartile (bending only lowers the head; the evidence is gathered soon
# after the event, so mostly from before it, when the shopper may have bent for something else)


def head_dip(heights: np.ndarray, window_s: float) -> float:
    """How much lower the head was within ``window_s`` of the step than it stands (the upper quartile of its
    heights at offsets of ``DIP_STANDING_S`` or more): 0 when it was not lower or not tracked.  The low is
    the second-lowest height near the step where there are two: a bend lasts, while one odd height (a head
    ray the floor tracker read as a crouch for a frame) is a bystander's noise."""
    near = heights[np.abs(PROFILE_S) <= window_s]
    away = heights[np.abs(PROFILE_S) >= DIP_STANDING_S]
    near = near[np.isfinite(near)]
    if not (near.size and np.isfinite(away).any()):
        return 0.0
    low = float(np.partition(near, 1)[1]) if near.size >= 2 else float(near[0])
    return max(0.0, float(np.nanpercentile(away, DIP_STANDING_Q)) - low)


def body_profile(path: list[tuple[float, float, float]], boxes: list[Box], t_ref: float) -> np.ndarray:
    """The body's horizontal distance to ``boxes`` at ``t_ref + PROFILE_S`` (nan outside the path's times)."""
    xy = history_at(path, t_ref + PROFILE_S, 2)
    out = np.full(len(PROFILE_S), np.nan)
    inside = np.isfinite(xy[:, 0])
    if inside.any():
        out[inside] = floor_box_distance(xy[inside], boxes)
    return out


@dataclass
class EventEvidence:
    """Everything :func:`weigh` needs to decide an event, gathered once (:func:`gather`): the event's times,
    how low its lanes reach (for the hip-height rule), whether it has siblings, and its candidates.  Kept, it
    lets the decision be re-made under other settings without the floor (``walkout.association_study``)."""

    t_start: float
    t_end: float
    t_step: float | None
    lanes_low_m: float
    siblings: bool
    candidates: list[Candidate]


def gather(floor: FloorTracker, boxes: list[Box], t_start: float, t_end: float, cfg: AssociationConfig,
           rivals: list[Box] | None = None, t_step: float | None = None) -> EventEvidence:
    """The evidence of every shopper present around the event (within ``candidate_radius_m`` of its lanes;
    ``rivals``: the lanes of the other events of the same shelf change, see :func:`wrist_distances`;
    ``t_step``: when the weight stepped, see :func:`evidence_window`)."""
    t0, t1, _, _ = evidence_window(t_start, t_end, t_step, cfg)
    approach = approach_boxes(boxes, cfg.approach_m)
    rival_approach = approach_boxes(rivals, cfg.approach_m) if rivals else None
    t_ref = 0.5 * (t_start + t_end) if t_step is None else t_step
    out = []
    for slot, info in enumerate(floor.info):
        pts = [p for p in info.path if t0 <= p[0] <= t1]
        if not pts:
            continue
        body = float(floor_box_distance(np.asarray(pts)[:, 1:], boxes).min())
        if body > cfg.candidate_radius_m:
            continue
        out.append(Candidate(info.id, body, wrist_distances(floor, slot, t0, t1, approach, cfg, rival_approach,
                                                            boxes), body_profile(info.path, boxes, t_ref),
                             height_profile(info.heights, t_ref)))
    return EventEvidence(t_start, t_end, t_step, min(b.min[2] for b in boxes), bool(rivals), out)


def body_at_step(c: Candidate, cfg: AssociationConfig) -> float:
    """The body's distance to the lanes: its nearest within ``body_at_step_s`` of the step (a shopper walking
    past the lane a second before it was not at it), else over the whole evidence window."""
    near = c.profile[np.abs(PROFILE_S) <= cfg.body_at_step_s]
    return float(np.nanmin(near)) if cfg.body_at_step_s > 0 and np.isfinite(near).any() else c.body


def weigh(ev: EventEvidence, cfg: AssociationConfig, eligible: set[str] | None = None) -> Association:
    """Score every candidate (of ``eligible`` only, when given) and pick the most likely one."""
    _, _, x0, x1 = evidence_window(ev.t_start, ev.t_end, ev.t_step, cfg)
    # a hand resting by the hip lies in the approach of a lane that reaches down to it: when the weight
    # stepped, the picker's hand was in the lane, so for such lanes both hands must be near the lane itself
    strict = ev.t_step is not None and ev.lanes_low_m <= cfg.rest_height_m
    far = cfg.exclusion_rest_far_m if strict else cfg.exclusion_far_m
    bend = cfg.dip_weight > 0 and ev.lanes_low_m < cfg.dip_lanes_below_m
    scores: dict[str, float] = {}
    evidence: dict[str, tuple[float, float, list[str]]] = {}
    for c in ev.candidates:
        if eligible is not None and c.shopper not in eligible:
            continue
        # the hand stays at the lane for a while during a pick: the k closest instants, not one outlier
        d_k = c.wrists.distance(cfg.sibling_persist_instants if ev.siblings else cfg.persist_instants,
                                cfg.persist_mean)
        dw = cfg.no_wrist_distance_m if d_k is None else d_k
        body = body_at_step(c, cfg)
        evidence[c.shopper] = (dw, body, c.wrists.cameras)
        body_excess = max(0.0, body - cfg.body_free_m)
        # hands demonstrably elsewhere: both located away from the lane, or the body beyond arm's reach of it
        # all through the window (a hand the cameras did not see cannot have been in the lane either)
        excl = 1.0 if c.body > cfg.reach_m else c.wrists.excluded(x0, x1, far, at_lanes=strict)
        scores[c.shopper] = (wrist_log_score(dw, cfg) - 0.5 * (body_excess / cfg.body_sd_m) ** 2
                             - cfg.exclusion_weight * excl)
        if bend:  # the head lowered at the step: bending to the low shelf
            scores[c.shopper] += cfg.dip_weight * min(head_dip(c.heights, cfg.body_at_step_s) / cfg.dip_full_m,
                                                      1.0)
    if not scores:
        return Association(None, 0.0, 0.0, None, None, {}, [], True, "no shopper near the lanes")
    top = max(scores.values())
    return _decide({s: math.exp(v - top) for s, v in scores.items()}, evidence, cfg)


def associate(floor: FloorTracker, boxes: list[Box], t_start: float, t_end: float,
              cfg: AssociationConfig, eligible: set[str] | None = None, rivals: list[Box] | None = None,
              t_step: float | None = None) -> Association:
    """Score every shopper present around the event and pick the most likely one (:func:`gather`, then
    :func:`weigh`)."""
    return weigh(gather(floor, boxes, t_start, t_end, cfg, rivals, t_step), cfg, eligible)


def no_hand_at_lane(a: Association, cfg: AssociationConfig) -> bool:
    """Whether the association's shopper showed no hand within ``max_wrist_distance_m`` of the lane."""
    return a.wrist_distance is None or a.wrist_distance > cfg.max_wrist_distance_m


def weigh_among(ev: EventEvidence, cfg: AssociationConfig, eligible: set[str] | None) -> Association:
    """:func:`weigh` among the ``eligible`` shoppers (None: everyone); when none of them is near, or none of
    their hands was seen at the lane while another shopper's was, the event is that other shopper's (who,
    bound to no visit, takes it to review)."""
    a = weigh(ev, cfg, eligible)
    if eligible is None or not (a.shopper is None or no_hand_at_lane(a, cfg)):
        return a
    b = weigh(ev, cfg)
    return b if a.shopper is None or (b.shopper not in eligible and not no_hand_at_lane(b, cfg)) else a


def _decide(weights: dict[str, float], evidence: dict[str, tuple[float, float, list[str]]],
            cfg: AssociationConfig) -> Association:
    """The association from each candidate's (unnormalised) weight: the most likely, its probability, the
    margin to the runner-up and whether that is too unsure to charge."""
    ids = sorted(weights, key=lambda s: (-weights[s], s))
    total = sum(weights.values())
    probs = {s: weights[s] / total for s in ids}
    wdist = {s: e[0] for s, e in evidence.items()}
    bodies = {s: e[1] for s, e in evidence.items()}
    best = ids[0]
    p = probs[best]
    runner = ids[1] if len(ids) > 1 else None
    margin = p - (probs[runner] if runner else 0.0)
    reason = ""
    if margin < cfg.min_margin:
        reason = f"margin {margin:.2f} to {runner} below {cfg.min_margin}"
    elif wdist[best] > cfg.max_wrist_distance_m and bodies[best] > cfg.at_lane_m:
        reason = f"no wrist seen within {cfg.max_wrist_distance_m} m of the lane"
    return Association(best, p, margin, runner, wdist[best], probs, evidence[best][2], bool(reason), reason,
                       evidence)


def reweigh(a: Association, factor: dict[str, float], cfg: AssociationConfig) -> Association:
    """``a`` with each candidate's probability multiplied by ``factor`` (default 1) and renormalised."""
    if a.shopper is None or not a.scores:
        return a
    return _decide({s: p * factor.get(s, 1.0) for s, p in a.scores.items()}, a.evidence, cfg)


def others_factors(a: Association, others: list[Association], same_shopper: float) -> dict[str, float]:
    """With the prior that one shopper doing ``a``'s event as well as another at once is ``same_shopper``
    times as likely as two people doing one each, ``a``'s candidate y is weighed by the product over the
    ``others`` of (1 - (1 - same_shopper) x p_other(y)) -- the chance, under the others' own evidence, that y
    did not do them."""
    f: dict[str, float] = {}
    for y in a.scores:
        w = 1.0
        for b in others:
            w *= 1.0 - (1.0 - same_shopper) * b.scores.get(y, 0.0)
        f[y] = w
    return f


def sibling_factors(assocs: list[Association], same_shopper: float) -> list[dict[str, float]]:
    """Events of one shelf change split by product (two lanes at once) are more likely two people's than one
    person's: each weighed against the others (:func:`others_factors`)."""
    return [others_factors(a, assocs[:j] + assocs[j + 1:], same_shopper) for j, a in enumerate(assocs)]


def weigh_siblings(assocs: list[Association], cfg: AssociationConfig) -> list[Association]:
    """The associations of one shelf change's sibling events, weighed together (:func:`sibling_factors`)."""
    factors = sibling_factors(assocs, cfg.sibling_same_shopper)
    return [reweigh(a, f, cfg) for a, f in zip(assocs, factors, strict=True)]


def busy(a: Association, others: list[Association], cfg: AssociationConfig) -> Association:
    """An event too close to call, weighed against what its candidates were doing at the same moment: the
    confident decisions of ``others`` (events of other shelf changes whose weight stepped within
    ``busy_window_s`` of this one's).  A shopper whose hands were busy at another lane then is less likely to
    have done this one too (``busy_same_shopper``, :func:`others_factors`): a hand on its way to a shelf above
    or below passes this lane's front, and the picker's own hand is often hidden under the shelf above."""
    sure = [b for b in others if not b.uncertain and b.shopper is not None]
    if not sure or a.shopper is None:
        return a
    return reweigh(a, others_factors(a, sure, cfg.busy_same_shopper), cfg)


def too_close_to_call(a: Association, cfg: AssociationConfig) -> bool:
    """Whether ``a`` is uncertain for its margin to a runner-up (what :func:`busy` may settle)."""
    return a.uncertain and a.runner_up is not None and a.margin < cfg.min_margin

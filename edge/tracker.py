"""Per-camera multi-person tracker: Kalman motion model, two-stage association, lost-track buffer, re-update.

One :class:`Tracker` per camera stream.  Each frame, call :meth:`Tracker.update` with that frame's
:class:`Detections`; it returns the frame's :class:`Tracks`.  The design combines:

* a constant-velocity Kalman filter (``filterpy``) per track on the box centre, width and height
  ``[cx, cy, w, h, vcx, vcy, vw, vh]``, with noise proportional to the box size (as in BoT-SORT);
* ByteTrack's two-stage association (Zhang et al. 2022): confident detections are matched first, to every
  confirmed track (active or lost); then low-score detections, only to the confirmed tracks left over and only
  at a high overlap, so a partly occluded person with a weak detection keeps their track, but a weak detection
  never starts one.  Remaining confident detections then confirm tentative tracks or start new ones;
* OC-SORT's observation-centric ideas (Cao et al. 2023): a last-chance match of leftover detections against
  the *last observed* box of tracks lost for a few frames ("OCR": it catches a person who stopped or turned
  while unseen, where the prediction ran on), and, when a lost track is found again, a re-update of its filter
  along virtual observations interpolated between the last and the new observation ("ORU"), which repairs the
  velocity that drifted while the track coasted;
* a lost-track buffer: an unmatched confirmed track is kept (and predicted) for ``max_lost`` frames before it
  is dropped, and reported at its predicted box for the first ``coast_frames`` of them (``det_index == -1``),
  so one missed detection does not make a person vanish downstream;
* an optional appearance cue (as BoT-SORT's, but soft): where detections carry a feature vector (the camera
  pipeline gives each its chest colour, ``edge/appearance.py``), each track keeps a running mean of its
  matched features, and in every stage a pair's IoU gets a bonus for looking alike.  Where two people's
  boxes overlap, the overlap alone often points the wrong way for a frame (as they part, each prediction lies
  nearer the other's detection); the colours then keep each id.  It only re-ranks pairs the IoU allows: a
  colour patch that catches an arm or a neighbour now and then does not split a lone walker's track.
  Where one person hid another, the track may go on with the one left in view: a track whose matched
  detections look, ``appearance_split_frames`` times in a row, far from its own colour and like another track
  this camera knows (``appearance_split``), ends there, and the detection starts a new track -- a new id, so
  nothing downstream takes that person for the one the track followed before.

Contract of :meth:`Tracker.update`:

* input: :class:`Detections` with ``boxes`` (N, 4) ``x1, y1, x2, y2`` pixels, ``scores`` (N,) in 0..1 (a
  detector adapter maps other score scales, e.g. raw SVM margins, into 0..1 first), optional ``keypoints``
  (N, K, 3) ``x, y, conf``, optional ``features`` (N, F) in units of their spread (NaN rows: not measured).
  N may be 0 (a frame without detections still ages the tracks).  Non-finite
  values, scores outside 0..1, wrong shapes or empty boxes raise ``ValueError`` when the :class:`Detections`
  is built, before the tracker is touched.
* output: :class:`Tracks`, the confirmed tracks to report in this frame, ordered by id: ``ids`` (M,) int
  (stable over time, unique per tracker instance, counting up from ``first_id``), ``boxes`` (M, 4) (the
  filtered box), ``scores`` (M,) (the matched detection's score, halved for each frame coasted), ``keypoints``
  (M, K, 3) or ``None`` if no detection ever had keypoints (the matched detection's keypoints; while coasting
  the last ones moved with the box, confidence 0), and ``det_index`` (M,) int (the row of the input detection
  the track was updated with in this frame, -1 while coasting).
* deterministic: the same sequence of inputs gives the same outputs; no state is shared between instances.

Parameters are per frame; the defaults were chosen for people filmed at about 10 fps (the PETS2009 benchmark
in ``bench/tracker_pets.py``) and should hold at 5-30 fps; at high frame rates lower ``std_velocity``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from filterpy.kalman import KalmanFilter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.optimize import linear_sum_assignment

log = logging.getLogger(__name__)

_EPS = 1e-9


class TrackerConfig(BaseModel):
    """Tracker parameters (per frame).  The defaults are general-purpose; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_score: float = Field(0.6, ge=0.0, le=1.0, title="Confident detection score (first stage)")
    low_score: float = Field(
        0.1, ge=0.0, le=1.0, title="Lowest score of a detection used at all (second stage)"
    )
    new_track_score: float = Field(0.7, ge=0.0, le=1.0, title="Score a detection needs to start a track")
    match_iou: float = Field(0.1, gt=0.0, le=1.0, title="Least IoU of a confident detection and a prediction")
    low_match_iou: float = Field(
        0.5, gt=0.0, le=1.0, title="Least IoU of a low-score detection and a prediction"
    )
    tentative_match_iou: float = Field(0.3, gt=0.0, le=1.0, title="Least IoU to confirm a tentative track")
    recover_iou: float = Field(0.7, gt=0.0, le=1.0, title="Least IoU with the last observed box (OCR stage)")
    recover_max_lost: int = Field(3, ge=0, le=10_000, title="Frames unseen up to which the OCR stage applies")
    min_hits: int = Field(2, ge=1, le=100, title="Consecutive matches that confirm a new track")
    max_lost: int = Field(30, ge=0, le=10_000, title="Frames a lost track is kept for re-identification")
    coast_frames: int = Field(
        2, ge=0, le=10_000, title="Frames a lost track is still reported (predicted box)"
    )
    reupdate: bool = Field(True, title="Re-update a re-found track's filter over the gap (ORU)")
    std_position: float = Field(0.075, gt=0.0, le=10.0, title="Process noise of the box, per box size")
    std_velocity: float = Field(
        0.04, gt=0.0, le=10.0, title="Process noise of the box velocity, per box size"
    )
    std_measurement: float = Field(0.15, gt=0.0, le=10.0, title="Detection noise, per box size")
    first_id: int = Field(1, ge=0, lt=2**31 - 1, title="First track id of this tracker instance")
    appearance_range: float = Field(
        9.0, ge=0.0, le=1e6, title="Appearance range",
        description="Squared feature distance (Detections.features, in units of their spread) at which a track "
                    "and a detection look nothing alike; 0: features not used")
    appearance_weight: float = Field(
        0.3, ge=0.0, le=10.0, title="Appearance weight",
        description="IoU-equivalent a perfect feature match is worth over one at the range, in the assignment")
    appearance_veto: float = Field(
        0.0, ge=0.0, le=1e6, title="Appearance veto",
        description="Squared feature distance beyond which a detection cannot continue a track at all; 0: never "
                    "(one person's colour patch now and then catches an arm or a neighbour)")
    appearance_momentum: float = Field(
        0.8, ge=0.0, lt=1.0, title="Appearance momentum",
        description="Share of a track's feature kept at each update (a running mean: one odd patch does not "
                    "replace it)")
    appearance_split: float = Field(
        25.0, ge=0.0, le=1e6, title="Appearance split",
        description="Squared feature distance from a confirmed track's running mean beyond which a matched "
                    "detection counts as someone else; 0: never split")
    appearance_split_near: float = Field(
        6.0, ge=0.0, le=1e6, title="Appearance split: near another",
        description="A detection beyond appearance_split from its track's colour looks like someone else only "
                    "where another confirmed track's colour is within this squared distance of it ...")
    appearance_split_ratio: float = Field(
        0.1, gt=0.0, le=1.0, title="Appearance split: ratio",
        description="... and at most this share of its squared distance to its own track (a patch that caught the "
                    "floor or a shelf looks like nobody: it does not split)")
    appearance_split_frames: int = Field(
        5, ge=1, le=10_000, title="Appearance split frames",
        description="Consecutive matches that look like someone else after which the track ends and the "
                    "detection starts a new one (the tracker followed the wrong person out of a crossing)")

    @model_validator(mode="after")
    def _ordered(self) -> TrackerConfig:
        if not self.low_score <= self.high_score:
            raise ValueError(f"low_score {self.low_score} must be <= high_score {self.high_score}")
        if self.coast_frames > self.max_lost:
            raise ValueError(f"coast_frames {self.coast_frames} must be <= max_lost {self.max_lost}")
        return self


@dataclass(frozen=True)
class Detections:
    """One frame's detections: ``boxes`` (N, 4) x1, y1, x2, y2 px, ``scores`` (N,), ``keypoints`` (N, K, 3).

    Validated and converted to float arrays on construction; bad input raises ``ValueError``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None = None
    features: np.ndarray | None = None  # (N, F) appearance, in units of its spread; NaN rows: not measured

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=float)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = np.asarray(self.scores, dtype=float).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
        if scores.shape != (len(boxes),):
            raise ValueError(f"scores must have shape ({len(boxes)},), got {scores.shape}")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError("boxes and scores must be finite")
        if len(scores) and not (scores.min() >= 0.0 and scores.max() <= 1.0):
            raise ValueError(
                f"scores must be in 0..1 (map other scales first), got {scores.min():.3g}..{scores.max():.3g}"
            )
        if not ((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()):
            raise ValueError("every box needs x2 > x1 and y2 > y1")
        kps = self.keypoints
        if kps is not None:
            kps = np.asarray(kps, dtype=float)
            if kps.ndim != 3 or kps.shape[0] != len(boxes) or kps.shape[2] != 3:
                raise ValueError(f"keypoints must have shape ({len(boxes)}, K, 3), got {kps.shape}")
            if not np.isfinite(kps).all():
                raise ValueError("keypoints must be finite")
        feats = self.features
        if feats is not None:
            feats = np.asarray(feats, dtype=float)
            if feats.ndim != 2 or feats.shape[0] != len(boxes):
                raise ValueError(f"features must have shape ({len(boxes)}, F), got {feats.shape}")
            if np.isinf(feats).any():
                raise ValueError("features must be finite or NaN (not measured)")
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "keypoints", kps)

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class Tracks:
    """One frame's reported tracks, ordered by id (see the module docstring for each field)."""

    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None
    det_index: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), corner format; (N, M)."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, _EPS)


def _to_z(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes (N, 4) to measurements (N, 4) ``cx, cy, w, h``."""
    z = np.empty_like(boxes)
    z[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    z[:, :2] = boxes[:, :2] + z[:, 2:] / 2
    return z


def _to_boxes(z: np.ndarray) -> np.ndarray:
    """States or measurements (N, >=4) to corner boxes (N, 4); sizes below 1 px are raised to 1 px."""
    half = np.maximum(z[:, 2:4], 1.0) / 2
    out = np.empty((len(z), 4))
    out[:, :2] = z[:, :2] - half
    out[:, 2:] = z[:, :2] + half
    return out


def _assign(score: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most allowed pairs, then the highest total score, one-to-one; (rows, cols) of the allowed pairs."""
    if not allowed.any():
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols = linear_sum_assignment(np.where(allowed, score, -1e6), maximize=True)
    ok = allowed[rows, cols]
    return rows[ok], cols[ok]


class _BoxFilter(KalmanFilter):
    """filterpy's KalmanFilter on ``[cx, cy, w, h, vcx, vcy, vw, vh]`` with ``H = [I 0]``.

    ``update`` is specialised to that ``H``: filterpy's general one deep-copies the measurement and forms the
    Joseph-form covariance, about five times the cost; the result is the same up to rounding (tests check).
    """

    def __init__(self, z: np.ndarray, std_position: float, std_velocity: float):
        super().__init__(dim_x=8, dim_z=4)
        self.F = _F
        self.H = _H
        self.x = np.concatenate([z, np.zeros(4)])
        size = np.array([z[2], z[3], z[2], z[3]])
        self.P = np.diag(np.concatenate([2 * std_position * size, 10 * std_velocity * size]) ** 2)

    def update(self, z: np.ndarray, R: np.ndarray) -> None:
        P = self.P
        S = P[:4, :4] + R
        K = np.linalg.solve(S, P[:4]).T  # P H' S^-1 (S is symmetric)
        self.x = self.x + K @ (z - self.x[:4])
        self.P = P - K @ P[:4]


_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)
_TENTATIVE, _CONFIRMED = 0, 1


class _Track:
    """Internal state of one track."""

    __slots__ = ("feature", "hits", "id", "keypoints", "kf", "last_z", "odd", "saved", "score", "since_update",
                 "state")

    def __init__(self, tid: int, z: np.ndarray, score: float, kps: np.ndarray | None, cfg: TrackerConfig,
                 feature: np.ndarray | None = None):
        self.id = tid
        self.feature = feature  # running mean of the matched detections' features (None: none measured yet)
        self.odd = 0  # consecutive matches whose feature looked like someone else (appearance_split)
        self.kf = _BoxFilter(z, cfg.std_position, cfg.std_velocity)
        self.state = _TENTATIVE
        self.hits = 1
        self.since_update = 0
        self.score = score
        self.keypoints = kps
        self.last_z = z  # last observed measurement cx, cy, w, h
        self.saved = (self.kf.x, self.kf.P)  # filter state right after the last observation (for ORU)


class Tracker:
    """Tracks people in one camera's detections; see the module docstring for the contract."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._next_id = self.config.first_id
        self._tracks: list[_Track] = []
        self._frame = 0
        self._kp_dim: int | None = None
        self._feat_dim: int | None = None
        c = self.config
        self._q_scale = np.array([c.std_position] * 4 + [c.std_velocity] * 4)

    @property
    def frame(self) -> int:
        """Number of frames seen (calls of :meth:`update`)."""
        return self._frame

    # ------------------------------------------------------------------------------------------- filter steps
    # One track's steps go through its filterpy filter; a frame's predictions and corrections of all tracks
    # are the same equations stacked into one numpy call each (x = F x, P = F P F' + Q; gain and update).
    def _q(self, size: np.ndarray) -> np.ndarray:
        """Process noise (T, 8, 8) for box sizes (T, 2) ``w, h``."""
        q = np.zeros((len(size), 64))
        q[:, ::9] = (np.tile(size, 4) * self._q_scale) ** 2  # the diagonal
        return q.reshape(-1, 8, 8)

    def _r(self, z: np.ndarray) -> np.ndarray:
        """Measurement noise (K, 4, 4) for measurements (K, 4)."""
        r = np.zeros((len(z), 16))
        r[:, ::5] = (self.config.std_measurement * np.tile(z[:, 2:4], 2)) ** 2  # the diagonal
        return r.reshape(-1, 4, 4)

    def _predict_one(self, t: _Track) -> None:
        t.kf.predict(Q=self._q(np.maximum(t.kf.x[None, 2:4], 1.0))[0])

    def _predict_all(self, tracks: list[_Track]) -> np.ndarray:
        """Predict every track one frame ahead; returns the predicted states (T, 8)."""
        if not tracks:
            return np.zeros((0, 8))
        x = np.array([t.kf.x for t in tracks])
        p = np.array([t.kf.P for t in tracks])
        x = x @ _F.T
        p = _F @ p @ _F.T + self._q(np.maximum(x[:, 2:4], 1.0))
        for i, t in enumerate(tracks):
            t.kf.x, t.kf.P = x[i], p[i]
        return x

    def _correct_all(self, tracks: list[_Track], z: np.ndarray) -> None:
        """Update each of ``tracks`` with its row of ``z`` (K, 4)."""
        if not tracks:
            return
        x = np.array([t.kf.x for t in tracks])
        p = np.array([t.kf.P for t in tracks])
        s = p[:, :4, :4] + self._r(z)
        k = np.linalg.solve(s, p[:, :4, :]).transpose(0, 2, 1)  # P H' S^-1, (K, 8, 4)
        x = x + (k @ (z - x[:, :4])[:, :, None])[:, :, 0]
        p = p - k @ p[:, :4, :]
        for i, t in enumerate(tracks):
            t.kf.x, t.kf.P = x[i], p[i]

    def _reupdate(self, t: _Track, z: np.ndarray) -> None:
        """ORU: rewind ``t`` (lost for ``since_update`` frames) to its last observation and run the filter
        along virtual observations interpolated towards ``z``, ending at this frame's prediction."""
        gap = t.since_update
        t.kf.x, t.kf.P = t.saved
        for k in range(1, gap):
            self._predict_one(t)
            zk = t.last_z + (z - t.last_z) * (k / gap)
            t.kf.update(zk, self._r(zk[None])[0])
        self._predict_one(t)

    # ------------------------------------------------------------------------------------------------ update
    def update(self, dets: Detections) -> Tracks:
        """Advance one frame with ``dets`` and return the tracks to report (see the module docstring)."""
        if not isinstance(dets, Detections):
            raise TypeError(f"update() takes Detections, got {type(dets).__name__}")
        kps_all = dets.keypoints
        if kps_all is not None:
            if self._kp_dim is None:
                self._kp_dim = kps_all.shape[1]
            elif kps_all.shape[1] != self._kp_dim:
                raise ValueError(f"keypoints changed from {self._kp_dim} to {kps_all.shape[1]} per detection")
        feats = self._features(dets)
        c = self.config
        self._frame += 1
        tracks = self._tracks
        states = self._predict_all(tracks)
        for t in tracks:
            t.since_update += 1

        boxes, scores = dets.boxes, dets.scores
        n = len(boxes)
        det_z = _to_z(boxes)
        free = np.ones(n, bool)  # detections not used yet
        high = scores >= c.high_score
        low = (scores >= c.low_score) & ~high
        track_of: dict[int, int] = {}  # track position in `tracks` -> detection row
        open_t = np.ones(len(tracks), bool)  # tracks not matched yet

        pred = _to_boxes(states)
        info = np.array([(t.state, t.since_update) for t in tracks], dtype=np.int64).reshape(-1, 2)
        confirmed = info[:, 0] == _CONFIRMED
        iou = iou_matrix(pred, boxes)  # (T, N), every stage takes its block
        app_ok, app_bonus, app_d2 = self._appearance(tracks, feats)

        def match(rows_ok: np.ndarray, cols_ok: np.ndarray, least: float, sim: np.ndarray = iou) -> None:
            if not (rows_ok.any() and cols_ok.any()):
                return
            r_idx, c_idx = np.flatnonzero(rows_ok), np.flatnonzero(cols_ok)
            block = sim[r_idx][:, c_idx]
            allowed = block >= least
            if app_ok is not None:
                allowed &= app_ok[r_idx][:, c_idx]
            if app_bonus is not None:
                block = block + app_bonus[r_idx][:, c_idx]
            rows, cols = _assign(block, allowed)
            for r, k in zip(r_idx[rows], c_idx[cols], strict=True):
                track_of[int(r)] = int(k)
            open_t[r_idx[rows]] = False
            free[c_idx[cols]] = False

        # 1: confident detections vs every confirmed track (active or lost)
        match(confirmed, high, c.match_iou)
        # 2: low-score detections vs the confirmed tracks left, at a high overlap
        match(open_t & confirmed, low, c.low_match_iou)
        # 3: confident detections left vs tentative tracks
        match(open_t & ~confirmed, high & free, c.tentative_match_iou)
        # 4 (OCR): detections left vs the last observed box of tracks lost for at most recover_max_lost frames
        rest = open_t & confirmed & (info[:, 1] - 1 <= c.recover_max_lost)
        if rest.any() and (free & (high | low)).any():
            last = _to_boxes(np.array([t.last_z for t in tracks]))
            match(rest, free & (high | low), c.recover_iou, iou_matrix(last, boxes))

        # apply the matches; keep confirmed tracks for max_lost frames, drop unmatched tentative ones
        hit = [tracks[pos] for pos in track_of]
        rows = np.array(list(track_of.values()), dtype=int)
        for t, k in zip(hit, rows, strict=True):
            if t.since_update > 1 and c.reupdate:
                self._reupdate(t, det_z[k])
        self._correct_all(hit, det_z[rows])
        split: list[tuple[_Track, int]] = []
        for pos, t, k in zip(track_of, hit, rows, strict=True):
            t.saved = (t.kf.x, t.kf.P)
            t.since_update = 0
            t.hits += 1
            t.score = float(scores[k])
            t.keypoints = None if kps_all is None else kps_all[k].copy()
            t.last_z = det_z[k]
            if feats is not None and not np.isnan(feats[k]).any():
                if c.appearance_split > 0 and self._someone_else(app_d2, pos, int(k), confirmed):  # type: ignore[arg-type]
                    t.odd += 1  # someone else's colour: not learnt; after a few frames, a new track
                    if t.odd >= c.appearance_split_frames:
                        split.append((t, int(k)))
                    continue
                t.odd = 0
                m = c.appearance_momentum
                t.feature = feats[k].copy() if t.feature is None else m * t.feature + (1 - m) * feats[k]
            if t.state == _TENTATIVE and (t.hits >= c.min_hits or self._frame <= c.min_hits):
                t.state = _CONFIRMED
        keep = [
            t
            for t in tracks
            if t.since_update == 0 or (t.state == _CONFIRMED and t.since_update <= c.max_lost)
        ]
        if log.isEnabledFor(logging.DEBUG) and len(keep) < len(tracks):
            log.debug(
                "frame %d: dropped tracks %s",
                self._frame,
                sorted({t.id for t in tracks} - {t.id for t in keep}),
            )
        det_of: dict[int, int] = {tracks[pos].id: k for pos, k in track_of.items()}
        for t, k in split:  # the track followed someone else: it ends, the detection starts a new one
            keep.remove(t)
            del det_of[t.id]
            new = _Track(self._next_id, det_z[k], float(scores[k]),
                         None if kps_all is None else kps_all[k].copy(), c, feats[k].copy())  # type: ignore[index]
            new.state = _CONFIRMED
            log.debug("frame %d: track %d looks like someone else, split off as %d", self._frame, t.id, new.id)
            self._next_id += 1
            det_of[new.id] = k
            keep.append(new)
        # new tracks from confident detections left
        for k in np.flatnonzero(free & (scores >= max(c.high_score, c.new_track_score))):
            feature = None if feats is None or np.isnan(feats[k]).any() else feats[k].copy()
            t = _Track(
                self._next_id, det_z[k], float(scores[k]), None if kps_all is None else kps_all[k].copy(), c,
                feature,
            )
            self._next_id += 1
            if c.min_hits <= 1 or self._frame <= c.min_hits:
                t.state = _CONFIRMED
            det_of[t.id] = int(k)
            keep.append(t)
        self._tracks = keep
        return self._report(det_of)

    def _someone_else(self, d2: np.ndarray, pos: int, k: int, confirmed: np.ndarray) -> bool:
        """Detection ``k`` looks like someone else than confirmed track ``pos``: far from its colour and near
        another confirmed track's (one this camera knows, seen or lost).  ``d2`` (T, N): the frame's squared
        feature distances from :meth:`_appearance` (NaN where either is unknown)."""
        c = self.config
        col = d2[:, k]
        own = col[pos]
        if not (confirmed[pos] and own > c.appearance_split):  # (False where unknown)
            return False
        others = confirmed.copy()
        others[pos] = False
        others = col[others & np.isfinite(col)]
        if not others.size:
            return False
        near = float(others.min())
        return near <= c.appearance_split_near and near <= c.appearance_split_ratio * own

    def _features(self, dets: Detections) -> np.ndarray | None:
        """The detections' features if the tracker uses them (``appearance_range`` > 0 and some given)."""
        if self.config.appearance_range <= 0 or dets.features is None or not len(dets):
            return None
        if self._feat_dim is None:
            self._feat_dim = dets.features.shape[1]
        elif dets.features.shape[1] != self._feat_dim:
            raise ValueError(f"features changed from {self._feat_dim} to {dets.features.shape[1]} per detection")
        return dets.features

    def _appearance(self, tracks: list[_Track], feats: np.ndarray | None
                    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(allowed, bonus, d2), each (T, N), from the squared feature distance of every track and detection: a pair
        adds ``appearance_weight`` x (1 - d2 / ``appearance_range``, at least 0) to its IoU in the assignment,
        and is not allowed beyond ``appearance_veto`` (``allowed`` is None without a veto: every pair).  A track
        or detection without a feature: half the weight (no evidence either way).  Third, the distances themselves
        (NaN where either is unknown).  ``(None, None, None)`` when features are not in use this frame."""
        if feats is None or not tracks:
            return None, None, None
        c = self.config
        tf = np.array([np.full(feats.shape[1], np.nan) if t.feature is None else t.feature for t in tracks])
        d2 = np.square(tf[:, None, :] - feats[None, :, :]).sum(axis=2)  # NaN where either is unknown
        known = ~np.isnan(d2)
        d0 = np.where(known, d2, 0.0)
        ok = ~known | (d0 <= c.appearance_veto) if c.appearance_veto > 0 else None
        bonus = c.appearance_weight * np.where(known, 1.0 - np.minimum(d0 / c.appearance_range, 1.0), 0.5)
        return ok, bonus, d2

    def _report(self, det_of: dict[int, int]) -> Tracks:
        c = self.config
        # self._tracks is in id order: survivors keep their order, new tracks are appended with rising ids
        out = [t for t in self._tracks if t.state == _CONFIRMED and t.since_update <= c.coast_frames]
        m = len(out)
        ids = np.array([t.id for t in out], dtype=np.int64)
        boxes = _to_boxes(np.array([t.kf.x for t in out]).reshape(m, 8))
        lost = np.array([t.since_update for t in out], dtype=np.int64)
        det_index = np.array([det_of.get(t.id, -1) if t.since_update == 0 else -1 for t in out], dtype=np.int64)
        scores = np.array([t.score for t in out], dtype=float) * 0.5**lost
        kps = None
        if self._kp_dim is not None:
            kps = np.zeros((m, self._kp_dim, 3))
            for j, t in enumerate(out):
                if t.keypoints is None:
                    continue
                kps[j] = t.keypoints
                if lost[j]:
                    kps[j, :, :2] += t.kf.x[:2] - t.last_z[:2]
                    kps[j, :, 2] = 0.0
        return Tracks(ids=ids, boxes=boxes, scores=scores, keypoints=kps, det_index=det_index)

"""Multi-object tracking metrics (HOTA, CLEAR MOT, identity) on MOT-format sequences, in numpy.

The definitions follow TrackEval (Luiten et al., "HOTA: A Higher Order Metric for Evaluating Multi-Object
Tracking", IJCV 2020) with IoU as the similarity:

* **HOTA** = sqrt(DetA * AssA), averaged over the localisation thresholds alpha = 0.05, 0.10, ... 0.95; per
  alpha, detections are matched per frame by the Hungarian algorithm on IoU weighted by the global alignment
  score of the id pair; DetA = TP / (TP + FN + FP); AssA = mean over the TPs of the pair's
  TPA / (TPA + FNA + FPA).
* **CLEAR MOT** (Bernardin & Stiefelhagen 2008) at IoU >= 0.5: MOTA = 1 - (FN + FP + IDSW) / #gt, MOTP the
  mean IoU of matches; a match of the previous frame is kept while its IoU stays >= 0.5; an id switch is a gt
  id matched to a different tracker id than the last one it was matched to.  (motmetrics also carries a match
  over frames where the gt box was missed, so its switch count can differ by one in such places.)
* **Identity** (Ristani et al. 2016) at IoU >= 0.5: one global one-to-one assignment of gt ids to tracker
  ids that maximises the frames where the pair overlaps; IDF1 = 2 IDTP / (#gt + #tracker boxes).

The MOT text format is ``frame,id,x,y,w,h,score[,...]`` with 1-based frames and top-left boxes in pixels;
detection files carry id -1.  :func:`read_mot` converts to corner boxes ``x1,y1,x2,y2``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

log = logging.getLogger(__name__)

EPS = np.finfo(float).eps
HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)  # 19 thresholds, 0.05 .. 0.95


class MotFormatError(ValueError):
    """A MOT-format file that cannot be read; the message names the file, the line and the reason."""


@dataclass(frozen=True)
class MotSequence:
    """Boxes of one sequence, one row per box, sorted by frame.

    ``frames`` (N,) int, ``ids`` (N,) int (-1 for detections), ``boxes`` (N, 4) float ``x1, y1, x2, y2`` in
    pixels, ``scores`` (N,) float.
    """

    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.ids.shape != (n,) or self.boxes.shape != (n, 4) or self.scores.shape != (n,):
            raise ValueError(
                f"inconsistent shapes: frames {self.frames.shape}, ids {self.ids.shape}, "
                f"boxes {self.boxes.shape}, scores {self.scores.shape}"
            )

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def empty(cls) -> MotSequence:
        return cls(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def from_rows(cls, frames, ids, boxes, scores) -> MotSequence:
        """Build from array-likes (any order); rows are sorted by frame, stable."""
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        order = np.argsort(frames, kind="stable")
        return cls(
            frames[order],
            np.asarray(ids, dtype=np.int64).reshape(-1)[order],
            np.asarray(boxes, dtype=float).reshape(-1, 4)[order],
            np.asarray(scores, dtype=float).reshape(-1)[order],
        )

    @property
    def last_frame(self) -> int:
        return int(self.frames.max()) if len(self.frames) else 0

    def per_frame(self, first: int = 1, last: int | None = None) -> Iterator[tuple[int, slice]]:
        """Yield ``(frame, rows)`` for every frame ``first .. last`` (default: the last frame present), also
        the frames without boxes (an empty slice)."""
        last = self.last_frame if last is None else last
        starts = np.searchsorted(self.frames, np.arange(first, last + 2))
        for i, frame in enumerate(range(first, last + 1)):
            yield frame, slice(int(starts[i]), int(starts[i + 1]))


def read_mot(path: str | Path) -> MotSequence:
    """Read a MOT-format text file (``frame,id,x,y,w,h,score,...``; extra columns ignored, blank lines
    skipped).

    Raises :class:`MotFormatError` naming the file, line and reason for a short row, a non-number, a frame
    < 1, or a box with non-positive or non-finite size.
    """
    path = Path(path)
    rows: list[tuple[float, ...]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(",")
            if len(parts) < 6:
                raise MotFormatError(
                    f"{path}:{lineno}: expected at least 6 comma-separated fields, got {text!r}"
                )
            try:
                vals = [float(p) for p in parts[:7]]
            except ValueError as exc:
                raise MotFormatError(f"{path}:{lineno}: not a number in {text!r} ({exc})") from None
            frame, _, _, _, w, h = vals[:6]
            if not all(math.isfinite(v) for v in vals):
                raise MotFormatError(f"{path}:{lineno}: non-finite value in {text!r}")
            if frame < 1 or frame != int(frame):
                raise MotFormatError(f"{path}:{lineno}: frame must be an integer >= 1, got {parts[0]!r}")
            if w <= 0 or h <= 0:
                raise MotFormatError(f"{path}:{lineno}: box width and height must be > 0, got {w} x {h}")
            rows.append(tuple(vals) if len(vals) == 7 else (*vals, 1.0))
    if not rows:
        return MotSequence.empty()
    a = np.asarray(rows, dtype=float)
    boxes = np.column_stack([a[:, 2], a[:, 3], a[:, 2] + a[:, 4], a[:, 3] + a[:, 5]])
    return MotSequence.from_rows(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), boxes, a[:, 6])


def write_mot(path: str | Path, seq: MotSequence) -> None:
    """Write ``seq`` as MOT text: ``frame,id,x,y,w,h,score,-1,-1,-1`` (the MOTChallenge result format)."""
    b = seq.boxes
    with Path(path).open("w", encoding="utf-8") as f:
        f.writelines(
            f"{fr},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1\n"
            for fr, tid, (x1, y1, x2, y2), s in zip(seq.frames, seq.ids, b, seq.scores, strict=True)
        )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), corner format; (N, M)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > EPS, inter / np.maximum(union, EPS), 0.0)


@dataclass(frozen=True)
class MotMetrics:
    """Scores of one tracker output against the ground truth; fractions in 0..1 (MOTA may be negative)."""

    hota: float
    deta: float
    assa: float
    loca: float
    detre: float
    detpr: float
    assre: float
    asspr: float
    idf1: float
    idp: float
    idr: float
    mota: float
    motp: float
    id_switches: int
    tp: int
    fp: int
    fn: int
    idtp: int
    num_gt: int
    num_pred: int
    num_gt_ids: int
    num_pred_ids: int

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class _Frames:
    """Per-frame contiguous ids and IoU matrices shared by the three metric families."""

    gt_ids: list[np.ndarray]
    pr_ids: list[np.ndarray]
    sim: list[np.ndarray]
    num_gt_ids: int
    num_pr_ids: int


def _prepare(gt: MotSequence, pred: MotSequence) -> _Frames:
    gt_u, gt_c = np.unique(gt.ids, return_inverse=True)
    pr_u, pr_c = np.unique(pred.ids, return_inverse=True)
    last = max(gt.last_frame, pred.last_frame)
    gt_ids, pr_ids, sim = [], [], []
    pred_rows = dict(pred.per_frame(1, last))
    for frame, g in gt.per_frame(1, last):
        p = pred_rows[frame]
        gi, pi = gt_c[g].reshape(-1), pr_c[p].reshape(-1)
        if len(np.unique(gi)) != len(gi) or len(np.unique(pi)) != len(pi):
            raise ValueError(f"frame {frame}: an id appears twice in one frame")
        gt_ids.append(gi)
        pr_ids.append(pi)
        sim.append(iou_matrix(gt.boxes[g], pred.boxes[p]))
    return _Frames(gt_ids, pr_ids, sim, len(gt_u), len(pr_u))


def _hota(fr: _Frames) -> dict[str, float]:
    na = len(HOTA_ALPHAS)
    ng, npr = fr.num_gt_ids, fr.num_pr_ids
    # global alignment score: soft id-pair overlap over the whole sequence
    potential = np.zeros((ng, npr))
    gt_count = np.zeros(ng)
    pr_count = np.zeros(npr)
    for gi, pi, s in zip(fr.gt_ids, fr.pr_ids, fr.sim, strict=True):
        if len(gi) and len(pi):
            denom = s.sum(0)[None, :] + s.sum(1)[:, None] - s
            sim_iou = np.zeros_like(s)
            ok = denom > EPS
            sim_iou[ok] = s[ok] / denom[ok]
            potential[gi[:, None], pi[None, :]] += sim_iou
        gt_count[gi] += 1
        pr_count[pi] += 1
    gas = potential / np.maximum(gt_count[:, None] + pr_count[None, :] - potential, EPS)

    tp, fn, fp, loc = np.zeros(na), np.zeros(na), np.zeros(na), np.zeros(na)
    matches = np.zeros((na, ng, npr))
    for gi, pi, s in zip(fr.gt_ids, fr.pr_ids, fr.sim, strict=True):
        if not len(gi) or not len(pi):
            fn += len(gi)
            fp += len(pi)
            continue
        rows, cols = linear_sum_assignment(-(gas[gi[:, None], pi[None, :]] * s))
        ms = s[rows, cols]
        for a, alpha in enumerate(HOTA_ALPHAS):
            ok = ms >= alpha - EPS
            n = int(ok.sum())
            tp[a] += n
            fn[a] += len(gi) - n
            fp[a] += len(pi) - n
            if n:
                loc[a] += ms[ok].sum()
                matches[a, gi[rows[ok]], pi[cols[ok]]] += 1
    union = gt_count[None, :, None] + pr_count[None, None, :] - matches
    assa = (matches * matches / np.maximum(1, union)).sum((1, 2)) / np.maximum(1, tp)
    assre = (matches * matches / np.maximum(1, gt_count[None, :, None])).sum((1, 2)) / np.maximum(1, tp)
    asspr = (matches * matches / np.maximum(1, pr_count[None, None, :])).sum((1, 2)) / np.maximum(1, tp)
    deta = tp / np.maximum(1, tp + fn + fp)
    out = {
        "hota": np.sqrt(deta * assa),
        "deta": deta,
        "assa": assa,
        "loca": np.maximum(1e-10, loc) / np.maximum(1e-10, tp),
        "detre": tp / np.maximum(1, tp + fn),
        "detpr": tp / np.maximum(1, tp + fp),
        "assre": assre,
        "asspr": asspr,
    }
    return {k: float(v.mean()) for k, v in out.items()}


def _clear(fr: _Frames, threshold: float) -> dict[str, float]:
    tp = fp = fn = idsw = 0
    motp_sum = 0.0
    prev_tracker = np.full(fr.num_gt_ids, -1)  # last tracker id each gt id was matched to, ever
    prev_step = np.full(fr.num_gt_ids, -1)  # tracker id matched in the previous frame
    for gi, pi, s in zip(fr.gt_ids, fr.pr_ids, fr.sim, strict=True):
        if not len(gi) or not len(pi):
            fn += len(gi)
            fp += len(pi)
            continue
        score = s.copy()
        score[prev_step[gi][:, None] == pi[None, :]] += 1000.0  # keep last frame's matches that still hold
        score[s < threshold - EPS] = 0.0
        rows, cols = linear_sum_assignment(-score)
        ok = score[rows, cols] > EPS
        rows, cols = rows[ok], cols[ok]
        mg, mp = gi[rows], pi[cols]
        idsw += int(((prev_tracker[mg] >= 0) & (prev_tracker[mg] != mp)).sum())
        prev_tracker[mg] = mp
        prev_step[:] = -1
        prev_step[mg] = mp
        n = len(rows)
        tp += n
        fn += len(gi) - n
        fp += len(pi) - n
        motp_sum += float(s[rows, cols].sum())
    num_gt = tp + fn
    return {
        "mota": (tp - fp - idsw) / max(1, num_gt),
        "motp": motp_sum / max(1, tp),
        "id_switches": idsw,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _identity(fr: _Frames, threshold: float) -> dict[str, float]:
    overlap = np.zeros((fr.num_gt_ids, fr.num_pr_ids))
    num_gt = num_pr = 0
    for gi, pi, s in zip(fr.gt_ids, fr.pr_ids, fr.sim, strict=True):
        num_gt += len(gi)
        num_pr += len(pi)
        if len(gi) and len(pi):
            g, p = np.nonzero(s >= threshold - EPS)
            overlap[gi[g], pi[p]] += 1
    rows, cols = linear_sum_assignment(-overlap)
    idtp = int(overlap[rows, cols].sum())
    return {
        "idf1": 2 * idtp / max(1, num_gt + num_pr),
        "idp": idtp / max(1, num_pr),
        "idr": idtp / max(1, num_gt),
        "idtp": idtp,
        "num_gt": num_gt,
        "num_pred": num_pr,
    }


def evaluate(gt: MotSequence, pred: MotSequence, threshold: float = 0.5) -> MotMetrics:
    """Score ``pred`` against ``gt`` over frames 1 .. the last frame of either; ``threshold`` is the IoU for
    CLEAR MOT and identity matching (HOTA integrates over its own thresholds).  Ids need not be contiguous,
    but an id may appear only once per frame."""
    fr = _prepare(gt, pred)
    return MotMetrics(
        **_hota(fr),
        **_clear(fr, threshold),
        **_identity(fr, threshold),
        num_gt_ids=fr.num_gt_ids,
        num_pred_ids=fr.num_pr_ids,
    )

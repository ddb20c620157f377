"""How well the torso (or legs) colour measured on rendered frames tells shoppers apart, and its noise model.

    python -m bench.appearance SESSION [--every N] [--part torso|legs] [--json]

SESSION is a simulated session rendered with frames (``walkout sim ... --out D``, without ``--no-frames``).
For every ``N``-th frame of every camera, :func:`edge.appearance.torso_colours` runs on the true boxes of the
shoppers seen (visible fraction >= 0.4, the boxes a good detector finds) and the colour is compared with the
colour the simulator gave the shopper's shirt.  Printed:

* the residual (measured - shirt, CIE L*a*b*) per channel: median bias, robust sd (1.4826 x MAD), split into a
  per-camera part (the camera's exposure and white balance) and the rest, and the share of outliers (beyond 4
  robust sd in a channel: a box whose torso region shows mostly something else);
* how often two shoppers in the same frame with different shirts are further apart in colour than the same
  shopper seen by two cameras at the same instant (the cue's use for fusion), at the spreads fusion uses.

These figures set :class:`walkout.truth_perception.TrackNoise`'s colour noise and
:class:`fusion.config.FloorConfig`'s ``colour_sd``.  ``--part legs`` measures :func:`edge.appearance.leg_colours`
against the trousers' colours instead (``shirt`` in the figures then reads ``trousers``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge.appearance import bgr_to_lab, leg_colours, torso_colours
from sim.session import Session
from walkout.truth_perception import read_mot_truth, shopper_number


def _robust_sd(x: np.ndarray) -> np.ndarray:
    return 1.4826 * np.median(np.abs(x - np.median(x, axis=0)), axis=0)


_PARTS = {"torso": (torso_colours, "shirt_bgr"), "legs": (leg_colours, "trousers_bgr")}


def _rows(session_dir: Path, every: int, min_vis: float, part: str = "torso"
          ) -> tuple[list[tuple], dict[int, tuple]]:
    """(camera, frame, shopper, Lab) for the true boxes of every ``every``-th frame; and the shirts (or, for
    ``part`` legs, the trousers)."""
    measure_part, key = _PARTS[part]
    truth = json.loads((session_dir / "truth.json").read_text())
    shirts = {shopper_number(s["shopper"]): tuple(s[key]) for s in truth["shoppers"] if s.get(key)}
    if not shirts:
        raise SystemExit(f"{session_dir}: truth.json has no {key} colours (simulated before they were recorded)")
    cts = {c: read_mot_truth(session_dir / "truth" / f"{c}.txt", c, truth) for c in truth["session"]["cameras"]}
    rows = []
    for img in Session.open(session_dir).images():
        if (img.frame - 1) % every:
            continue
        ct = cts[img.camera]
        sel = np.flatnonzero((ct.frame == img.frame) & (ct.vis >= min_vis))
        if not len(sel):
            continue
        kp = ct.kp[sel, 0]
        heads = np.where(kp[:, 2:3] > 0.5, kp[:, :2], np.nan)
        lab = measure_part(img.decode(), ct.box[sel], heads)
        for k, i in enumerate(sel):
            if np.isfinite(lab[k, 0]) and int(ct.shopper[i]) in shirts:
                rows.append((img.camera, img.frame, int(ct.shopper[i]), lab[k]))
    return rows, shirts


def measure(sessions: list[Path], every: int = 5, min_vis: float = 0.4, part: str = "torso") -> dict:
    """The colour noise model fitted on rendered sessions, and the cue's separability (see the docstring)."""
    rows, shirt_of = [], {}
    for k, d in enumerate(sessions):
        r, shirts = _rows(d, every, min_vis, part)
        rows += [(f"{k}:{cam}", f"{k}:{fr}", (k, sh), lab) for cam, fr, sh, lab in r]
        shirt_of.update({(k, sh): v for sh, v in shirts.items()})
    if not rows:
        raise SystemExit("no frames with shoppers (rendered without frames?)")
    meas = np.array([r[3] for r in rows])
    who = [r[2] for r in rows]
    ids = sorted(set(who))
    med = {s: np.median(meas[[i for i, w in enumerate(who) if w == s]], axis=0) for s in ids}
    # base colour per shopper from the shirt: per channel, measured = scale * shirt + offset (least squares)
    shirt_lab = bgr_to_lab(np.array([shirt_of[s] for s in ids]))
    base = np.array([med[s] for s in ids])
    scale, offset, spread = np.zeros(3), np.zeros(3), np.zeros(3)
    for c in range(3):
        A = np.column_stack([shirt_lab[:, c], np.ones(len(ids))])
        (scale[c], offset[c]), *_ = np.linalg.lstsq(A, base[:, c], rcond=None)
        spread[c] = np.std(base[:, c] - A @ np.array([scale[c], offset[c]]))
    # per camera and shopper: the camera's offset; then what is left per detection
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r[0], r[2])].append(i)
    cam_off = np.array([np.median(meas[ix], axis=0) - med[rows[ix[0]][2]] for ix in groups.values() if len(ix) >= 5])
    res = np.concatenate([meas[ix] - np.median(meas[ix], axis=0) for ix in groups.values()])
    sd = _robust_sd(res)
    outlier = (np.abs(res) > 3.5 * sd).any(axis=1)
    within = np.concatenate([meas[[i for i, w in enumerate(who) if w == s]] - med[s] for s in ids])
    within_sd = _robust_sd(within)
    # separability at one instant: the same shopper on two cameras vs two shoppers with different shirts
    by_frame: dict[str, list[int]] = defaultdict(list)
    for k, r in enumerate(rows):
        by_frame[r[1]].append(k)
    same, diff = [], []
    w = 1.0 / np.maximum(within_sd, 1e-6)
    for ks in by_frame.values():
        for a in range(len(ks)):
            for b in range(a + 1, len(ks)):
                ra, rb = rows[ks[a]], rows[ks[b]]
                d = float(np.linalg.norm((meas[ks[a]] - meas[ks[b]]) * w))
                if ra[2] == rb[2]:
                    same.append(d)
                elif shirt_of[ra[2]] != shirt_of[rb[2]]:
                    diff.append(d)
    thr = float(np.percentile(same, 95)) if same else float("nan")
    return {
        "sessions": [str(d) for d in sessions], "part": part, "measurements": len(rows), "shoppers": len(ids), "every": every,
        "base_scale_lab": scale.round(3).tolist(), "base_offset_lab": offset.round(2).tolist(),
        "base_spread_lab": spread.round(2).tolist(),
        "camera_offset_sd_lab": np.std(cam_off, axis=0).round(2).tolist(),
        "detection_sd_lab": sd.round(2).tolist(), "outlier_share": round(float(outlier.mean()), 4),
        "outlier_sd_lab": np.std(res[outlier], axis=0).round(2).tolist() if outlier.any() else [0.0, 0.0, 0.0],
        "within_shopper_sd_lab": within_sd.round(2).tolist(),
        "same_shopper_pairs": len(same), "different_shirt_pairs": len(diff),
        "same_shopper_distance_p95_sd": round(thr, 2),
        "same_shopper_distance_median_sd": round(float(np.median(same)), 2) if same else None,
        "different_shirt_distance_median_sd": round(float(np.median(diff)), 2) if diff else None,
        "different_beyond_that": round(float(np.mean(np.array(diff) > thr)), 4) if diff and same else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.appearance", description=__doc__.split("\n\n")[0])
    ap.add_argument("sessions", type=Path, nargs="+", metavar="SESSION")
    ap.add_argument("--every", type=int, default=5, help="use every N-th frame (default 5)")
    ap.add_argument("--part", choices=sorted(_PARTS), default="torso",
                    help="torso (against the shirts, default) or legs (against the trousers)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    r = measure(a.sessions, a.every, part=a.part)
    if a.json:
        print(json.dumps(r))
        return 0
    print(f"{r['measurements']} {a.part} colours of {r['shoppers']} shoppers (every {r['every']}th frame)")
    print("colour model (CIE L*, a*, b*), as walkout.truth_perception.TrackNoise uses it:")
    print(f"  a shopper's colour = scale x shirt + offset: scale {r['base_scale_lab']}  offset {r['base_offset_lab']}"
          f"  spread between shoppers {r['base_spread_lab']}")
    print(f"  camera offset sd {r['camera_offset_sd_lab']}  per detection sd {r['detection_sd_lab']}  "
          f"outliers (> 3.5 sd) {100 * r['outlier_share']:.1f} % with sd {r['outlier_sd_lab']}")
    print(f"  a shopper's spread over cameras and time: sd {r['within_shopper_sd_lab']}")
    print(f"same shopper, two cameras, same instant: distance median {r['same_shopper_distance_median_sd']} sd, "
          f"p95 {r['same_shopper_distance_p95_sd']} sd "
          f"({r['same_shopper_pairs']} pairs)")
    if r["different_beyond_that"] is not None:
        print(f"two shoppers with different shirts: median {r['different_shirt_distance_median_sd']} sd; "
              f"beyond the same shopper's p95: {100 * r['different_beyond_that']:.1f} % "
              f"({r['different_shirt_pairs']} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

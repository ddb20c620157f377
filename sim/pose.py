"""Skeleton poses of simulated shoppers: standing, walking (legs and arm swing), crouching and leaning to reach
a shelf, and arms that extend to a point (a lane, a partner's hand) by two-link inverse kinematics.

Everything here is a pure function of its arguments, so the world can ask for a body at any instant and the
renderer and the ground truth get the very same joints.  Proportions follow :func:`sim.body.standing_skeleton`
(a 1.75 m person; ``s`` scales them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.body import JOINTS, J

UP = np.array([0.0, 0.0, 1.0])

PELVIS_H = 0.95
TORSO_TO_NECK = 0.53
TORSO_TO_HEAD = 0.69
TORSO_TO_SHOULDER = 0.47
SHOULDER_HALF = 0.19
HIP_HALF = 0.10
UPPER_ARM = 0.31
FOREARM = 0.28
THIGH = 0.45
SHIN = 0.43
ANKLE_H = 0.08


@dataclass(frozen=True)
class Posture:
    """Whole-body adjustment for a reach: ``crouch`` lowers the pelvis (m), ``lean`` pitches the torso
    forward (radians), ``step`` moves the body along its heading (m)."""

    crouch: float = 0.0
    lean: float = 0.0
    step: float = 0.0

    def scaled(self, w: float) -> Posture:
        return Posture(self.crouch * w, self.lean * w, self.step * w)


STAND = Posture()


def arm_length(s: float) -> float:
    return (UPPER_ARM + FOREARM) * s


def _frame(heading: float) -> tuple[np.ndarray, np.ndarray]:
    f = np.array([math.cos(heading), math.sin(heading), 0.0])
    left = np.array([-math.sin(heading), math.cos(heading), 0.0])
    return f, left


def shoulder_point(x: float, y: float, heading: float, s: float, posture: Posture, side: str) -> np.ndarray:
    f, left = _frame(heading)
    tdir = UP * math.cos(posture.lean) + f * math.sin(posture.lean)
    pelvis = np.array([x, y, 0.0]) + f * posture.step + UP * (PELVIS_H * s - posture.crouch)
    sgn = 1.0 if side == "l" else -1.0
    return pelvis + tdir * TORSO_TO_SHOULDER * s + left * sgn * SHOULDER_HALF * s


_LEANS = np.radians(np.arange(0, 50, 5.0))
_CROUCH = np.arange(0, 0.60, 0.05)
_STEPS = np.array([0.0, 0.05, 0.10, 0.15, -0.05, -0.10])


def solve_reach(x: float, y: float, heading: float, s: float, side: str, target: np.ndarray) -> Posture:
    """The least-effort posture that brings ``target`` within comfortable reach (93 % of the arm) of the
    ``side`` shoulder; the closest one if none does."""
    f, left = _frame(heading)
    sgn = 1.0 if side == "l" else -1.0
    lean, crouch, step = np.meshgrid(_LEANS, _CROUCH * s, _STEPS, indexing="ij")
    lean, crouch, step = lean.ravel(), crouch.ravel(), step.ravel()
    tdir = UP[None] * np.cos(lean)[:, None] + f[None] * np.sin(lean)[:, None]
    pelvis = (np.array([x, y, 0.0])[None] + f[None] * step[:, None]
              + UP[None] * (PELVIS_H * s - crouch)[:, None])
    shoulder = pelvis + tdir * TORSO_TO_SHOULDER * s + left[None] * sgn * SHOULDER_HALF * s
    d = np.linalg.norm(np.asarray(target)[None] - shoulder, axis=1)
    arm = arm_length(s)
    effort = lean / np.radians(45) + 1.2 * crouch / (0.55 * s) + 0.6 * np.abs(step) / 0.15
    ok = (d <= 0.93 * arm) & (d >= 0.3 * arm)
    k = int(np.argmin(np.where(ok, effort, np.inf))) if ok.any() else int(np.argmin(d))
    return Posture(float(crouch[k]), float(lean[k]), float(step[k]))


def _two_link(a: np.ndarray, c: np.ndarray, l1: float, l2: float, pole: np.ndarray) -> np.ndarray:
    """Middle joint of a two-link chain from ``a`` to ``c`` bending towards ``pole`` (a direction)."""
    d = c - a
    n = float(np.linalg.norm(d))
    if n < 1e-9:
        return a + pole / max(np.linalg.norm(pole), 1e-9) * l1
    u = d / n
    n_c = min(max(n, abs(l1 - l2) + 1e-6), l1 + l2 - 1e-9)
    x = (l1 * l1 - l2 * l2 + n_c * n_c) / (2 * n_c)
    h = math.sqrt(max(l1 * l1 - x * x, 0.0))
    p = pole - (pole @ u) * u
    pn = float(np.linalg.norm(p))
    if pn < 1e-9:
        alt = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        p = alt - (alt @ u) * u
        pn = float(np.linalg.norm(p))
    return a + u * x + p / pn * h


def skeleton(x: float, y: float, heading: float, s: float, posture: Posture = STAND,
             walk_phase: float = 0.0, walk_amp: float = 0.0,
             wrists: dict[str, tuple[np.ndarray, float]] | None = None) -> np.ndarray:
    """Joints ``(len(JOINTS), 3)`` of a person of scale ``s`` at floor point (x, y) facing ``heading``.

    ``walk_phase``/``walk_amp`` (0..1) animate legs and arm swing; ``wrists`` maps ``"l"``/``"r"`` to a
    target point and a weight 0..1 (0: arm at rest, 1: wrist at the target, clamped to the arm's length)."""
    f, left = _frame(heading)
    lean, crouch = posture.lean, posture.crouch
    tdir = UP * math.cos(lean) + f * math.sin(lean)
    base = np.array([x, y, 0.0]) + f * posture.step
    pelvis = base + UP * (PELVIS_H * s - crouch)
    out = np.empty((len(JOINTS), 3))
    out[J["pelvis"]] = pelvis
    out[J["neck"]] = pelvis + tdir * TORSO_TO_NECK * s
    out[J["head"]] = pelvis + tdir * TORSO_TO_HEAD * s
    swing = walk_amp * math.sin(walk_phase)
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        hip = pelvis - UP * 0.03 * s + left * sgn * HIP_HALF * s
        out[J[side + "hip"]] = hip
        leg_swing = swing * sgn
        lift = 0.07 * s * walk_amp * max(0.0, math.cos(walk_phase + (0 if sgn > 0 else math.pi)))
        ankle = base + left * sgn * HIP_HALF * s + f * (0.28 * s * leg_swing) + UP * (ANKLE_H * s + lift)
        if crouch > 0:
            ankle = ankle - f * 0.25 * crouch  # feet stay put while the hips sink back
        out[J[side + "ankle"]] = ankle
        out[J[side + "knee"]] = _two_link(hip, ankle, THIGH * s, SHIN * s, f + 0.05 * left * sgn)
        shoulder = pelvis + tdir * TORSO_TO_SHOULDER * s + left * sgn * SHOULDER_HALF * s
        out[J[side + "shoulder"]] = shoulder
        rest = (shoulder - tdir * 0.54 * s + f * (0.04 - 0.22 * s * leg_swing)
                + left * sgn * 0.03 * s)
        target, w = (wrists or {}).get(side, (None, 0.0))
        wrist = rest if target is None or w <= 0 else rest + (np.asarray(target, float) - rest) * min(w, 1.0)
        reach = wrist - shoulder
        arm = arm_length(s)
        n = float(np.linalg.norm(reach))
        if n > arm * 0.999:
            wrist = shoulder + reach * (arm * 0.999 / n)
        out[J[side + "wrist"]] = wrist
        pole = -UP * 0.5 - f * 0.35 + left * sgn * 0.6
        out[J[side + "elbow"]] = _two_link(shoulder, wrist, UPPER_ARM * s, FOREARM * s, pole)
    return out


def ease(u: float) -> float:
    """Smooth 0 -> 1 over ``u`` in [0, 1] (zero slope at both ends)."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)

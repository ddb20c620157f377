"""A shopper's body at one instant: the interface between the simulator's world (who is where, doing what)
and its renderer (what the cameras see).

Bodies are skeletons of named 3D joints in the store frame (metres, z up) with a radius per segment and an
appearance.  The world fills them in; the renderer draws each segment as a capsule and the head as a sphere;
the ground truth takes its head and wrist points from the same joints, so truth and pixels agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

JOINTS = (
    "head",        # centre of the head sphere
    "neck",
    "lshoulder", "rshoulder",
    "lelbow", "relbow",
    "lwrist", "rwrist",
    "pelvis",
    "lhip", "rhip",
    "lknee", "rknee",
    "lankle", "rankle",
)
J = {name: i for i, name in enumerate(JOINTS)}

# Segments drawn as capsules: (joint a, joint b, part) where part picks the colour and the radius.
SEGMENTS = (
    ("neck", "pelvis", "torso"),
    ("lshoulder", "rshoulder", "torso"),
    ("lhip", "rhip", "legs"),
    ("lshoulder", "lelbow", "arm"), ("lelbow", "lwrist", "forearm"),
    ("rshoulder", "relbow", "arm"), ("relbow", "rwrist", "forearm"),
    ("lhip", "lknee", "legs"), ("lknee", "lankle", "legs"),
    ("rhip", "rknee", "legs"), ("rknee", "rankle", "legs"),
)


@dataclass
class Appearance:
    """Colours are BGR uint8 triples; radii in metres."""

    shirt: tuple[int, int, int] = (60, 60, 160)
    trousers: tuple[int, int, int] = (50, 40, 30)
    skin: tuple[int, int, int] = (120, 150, 190)
    hair: tuple[int, int, int] = (30, 30, 40)
    head_radius: float = 0.11
    torso_radius: float = 0.17
    arm_radius: float = 0.05
    leg_radius: float = 0.08
    carries_basket: bool = False


@dataclass
class Body:
    """One shopper's pose.  ``joints`` is ``(len(JOINTS), 3)`` in the store frame."""

    shopper: str          # stable id of the shopper (truth id)
    joints: np.ndarray
    appearance: Appearance = field(default_factory=Appearance)
    holding: str | None = None  # SKU in hand, if any (drawn as a small box at the active wrist)

    def joint(self, name: str) -> np.ndarray:
        return self.joints[J[name]]

    @property
    def head(self) -> np.ndarray:
        return self.joints[J["head"]]

    @property
    def wrists(self) -> np.ndarray:
        return self.joints[[J["lwrist"], J["rwrist"]]]

    @property
    def floor_xy(self) -> np.ndarray:
        return self.joints[J["pelvis"], :2]

    def radius(self, part: str) -> float:
        a = self.appearance
        return {"torso": a.torso_radius, "arm": a.arm_radius, "forearm": a.arm_radius * 0.85,
                "legs": a.leg_radius, "head": a.head_radius}[part]

    def color(self, part: str) -> tuple[int, int, int]:
        a = self.appearance
        return {"torso": a.shirt, "arm": a.shirt, "forearm": a.skin, "legs": a.trousers,
                "head": a.hair}[part]


def standing_skeleton(x: float, y: float, heading: float, height: float = 1.75) -> np.ndarray:
    """Joints of a person standing upright at floor point (x, y) facing ``heading`` (radians from +x)."""
    s = height / 1.75
    f = np.array([np.cos(heading), np.sin(heading), 0.0])  # forward
    left = np.array([-np.sin(heading), np.cos(heading), 0.0])
    base = np.array([x, y, 0.0])
    up = np.array([0, 0, 1.0])
    pts = {
        "head": base + up * 1.64 * s,
        "neck": base + up * 1.48 * s,
        "lshoulder": base + up * 1.42 * s + left * 0.19 * s,
        "rshoulder": base + up * 1.42 * s - left * 0.19 * s,
        "lelbow": base + up * 1.12 * s + left * 0.22 * s,
        "relbow": base + up * 1.12 * s - left * 0.22 * s,
        "lwrist": base + up * 0.86 * s + left * 0.22 * s + f * 0.03,
        "rwrist": base + up * 0.86 * s - left * 0.22 * s + f * 0.03,
        "pelvis": base + up * 0.95 * s,
        "lhip": base + up * 0.92 * s + left * 0.10 * s,
        "rhip": base + up * 0.92 * s - left * 0.10 * s,
        "lknee": base + up * 0.50 * s + left * 0.10 * s,
        "rknee": base + up * 0.50 * s - left * 0.10 * s,
        "lankle": base + up * 0.08 * s + left * 0.10 * s,
        "rankle": base + up * 0.08 * s - left * 0.10 * s,
    }
    return np.stack([pts[n] for n in JOINTS])

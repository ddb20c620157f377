"""Simulator frames -> a YOLO pose dataset (class 0 ``person``; keypoints head, left wrist, right wrist).

Layout written under ``root``::

    data.yaml                 ultralytics data file (models/person_pose.yaml plus the split folders)
    manifest.json             the plan it was made with and counts per split (written last: a dataset
                              without it is incomplete and is made again)
    {split}_frames.json       per image: its source (seed, preset, camera, time, light) and the boxes of
                              persons too hidden to label (the evaluation ignores detections on them)
    images/{train,val,test}/  JPEG frames as the cameras deliver them
    labels/{train,val,test}/  one line per person: ``0 cx cy w h  hx hy hv  lx ly lv  rx ry rv`` (0-1)

Splits: ``train`` from many seeds of every preset, ``val`` (checkpoint selection during training) and ``test``
(the held-out set of the model card) from seeds never used for training, ``hard`` preset only.  Visibility
follows COCO: 0 not labelled (outside the image), 1 inside the image but occluded, 2 visible.

Frames come from a *source*: an iterator of :class:`Sample` for a seed and a preset.  The simulator source
renders the simulator's world through its renderer (no session written to disk); the toy source (bodies
drawn as capsules over a plain floor, ``--source toy``) is only a fast smoke test of the pipeline.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

log = logging.getLogger(__name__)

KEYPOINTS = ("head", "lwrist", "rwrist")
FLIP_IDX = (0, 2, 1)
OKS_SIGMAS = (0.05, 0.062, 0.062)  # head centre a little tighter than COCO's ears; wrists as COCO's
SPLITS = ("train", "val", "test")
MIN_BOX_PX = 4.0  # persons whose visible box is thinner than this are not labelled
MIN_VISIBLE_PX = 60  # persons with fewer visible pixels are not labelled; the evaluation ignores them


@dataclass
class Person:
    """One person's label in pixels: ``box`` x1 y1 x2 y2 (visible part), ``keypoints`` (3, 3) x y v."""

    box: np.ndarray
    keypoints: np.ndarray
    id: str = ""


@dataclass
class Sample:
    image: np.ndarray          # BGR uint8 (H, W, 3)
    persons: list[Person]
    source: dict = field(default_factory=dict)  # seed, preset, camera, t ...
    jpeg: bytes | None = None  # the camera's own JPEG of ``image``, written as is when given
    ignore: list[np.ndarray] = field(default_factory=list)  # boxes of persons too hidden to label


# ---------------------------------------------------------------------------------------------- labels
def label_lines(persons: Iterable[Person], width: int, height: int) -> list[str]:
    """YOLO pose label lines (normalised 0-1) for the persons of one ``width x height`` frame."""
    lines = []
    for p in persons:
        x1, y1, x2, y2 = np.clip(np.asarray(p.box, float), 0, [width, height, width, height])
        if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
            continue
        vals = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        for x, y, v in np.asarray(p.keypoints, float):
            v = int(v)
            inside = 0 <= x < width and 0 <= y < height
            if v == 0 or not inside:
                vals += [0.0, 0.0, 0]
            else:
                vals += [x / width, y / height, v]
        lines.append("0 " + " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in vals))
    return lines


def parse_label_file(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a label file back to pixels: boxes ``(N, 4)`` x1y1x2y2 and keypoints ``(N, 3, 3)``."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return np.zeros((0, 4)), np.zeros((0, len(KEYPOINTS), 3))
    a = np.asarray(rows, float)
    cx, cy, w, h = a[:, 1] * width, a[:, 2] * height, a[:, 3] * width, a[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kp = a[:, 5:].reshape(len(a), len(KEYPOINTS), 3).copy()
    kp[..., 0] *= width
    kp[..., 1] *= height
    return boxes, kp


LAYOUT_YAML = Path(__file__).with_name("person_pose.yaml")


def image_files(folder: Path) -> list[Path]:
    """The images of a dataset folder in name order, whatever their format (``models.pack`` writes WebP)."""
    from edge.sources import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def data_yaml(root: Path) -> dict:
    """The ultralytics data file: ``models/person_pose.yaml`` (keypoints, flips, names) plus the splits."""
    layout = yaml.safe_load(LAYOUT_YAML.read_text())
    if (layout.get("kpt_shape") != [len(KEYPOINTS), 3] or layout.get("flip_idx") != list(FLIP_IDX)
            or layout.get("kpt_oks_sigmas") != list(OKS_SIGMAS)):
        raise ValueError(f"{LAYOUT_YAML}: kpt_shape, flip_idx or kpt_oks_sigmas disagree with models.dataset")
    return {"path": str(root.resolve()), "train": "images/train", "val": "images/val", "test": "images/test",
            **layout}


# ---------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """What to generate.  Seeds: train uses ``seed0 ..``, val and test use disjoint ranges above 10 000."""

    images: int = 3000
    val_images: int = 200
    test_images: int = 400
    presets: tuple[str, ...] = ("easy", "standard", "hard")
    seed0: int = 1
    source: str = "sim"
    frames_per_seed: int = 40  # frames (over all cameras) taken from one world before a new seed

    def seeds(self, split: str) -> Iterator[tuple[int, str]]:
        """Endless (seed, preset) pairs for a split; the ranges never overlap."""
        if split == "train":
            i = 0
            while True:
                yield self.seed0 + i, self.presets[i % len(self.presets)]
                i += 1
        base = {"val": 10_000, "test": 20_000}[split]
        i = 0
        while True:
            yield base + i, "hard"
            i += 1


def generate(root: Path, plan: Plan, source: Callable[[int, str, Plan], Iterator[Sample]] | None = None,
             jpeg_quality: int = 92) -> dict:
    """Write the dataset under ``root`` (replacing its images and labels) and return the manifest."""
    source = source or SOURCES[plan.source]
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)  # incomplete until the end
    counts: dict[str, dict] = {}
    for split, n in (("train", plan.images), ("val", plan.val_images), ("test", plan.test_images)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        for d in (img_dir, lbl_dir):
            d.mkdir(parents=True, exist_ok=True)
            for old in d.iterdir():
                old.unlink()
        written, persons, seeds, cams = 0, 0, set(), set()
        ignored: dict[str, list] = {}
        sources: dict[str, dict] = {}
        seed_iter = plan.seeds(split)
        while written < n:
            seed, preset = next(seed_iter)
            seeds.add(seed)
            for k, sample in enumerate(source(seed, preset, plan)):
                if written >= n or k >= plan.frames_per_seed:
                    break
                h, w = sample.image.shape[:2]
                name = f"{split}_{written:06d}"
                if sample.jpeg is not None:
                    (img_dir / f"{name}.jpg").write_bytes(sample.jpeg)
                else:
                    cv2.imwrite(str(img_dir / f"{name}.jpg"), sample.image,
                                [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                lines = label_lines(sample.persons, w, h)
                (lbl_dir / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                ignored[name] = [[round(float(v), 1) for v in b] for b in sample.ignore]
                sources[name] = sample.source
                written += 1
                persons += len(lines)
                cams.add(str(sample.source.get("camera", "")))
            log.info("%s: %d/%d images (seed %d, %s)", split, written, n, seed, preset)
        counts[split] = {"images": written, "persons": persons, "seeds": sorted(seeds), "cameras": sorted(cams),
                         "ignored": sum(len(v) for v in ignored.values())}
        (root / f"{split}_frames.json").write_text(json.dumps({"sources": sources, "ignore": ignored}))
    (root / "data.yaml").write_text(yaml.safe_dump(data_yaml(root), sort_keys=False))
    manifest = {"plan": asdict(plan), "splits": counts}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def plan_matches(root: Path, plan: Plan) -> bool:
    """True if ``root`` holds a complete dataset made with ``plan``."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("plan") == json.loads(json.dumps(asdict(plan))) and (root / "data.yaml").is_file()


# ---------------------------------------------------------------------------------------------- sources
def toy_source(seed: int, preset: str, plan: Plan) -> Iterator[Sample]:
    """Bodies of ``sim.body`` drawn as capsules through a real camera model over a textured floor.

    Only for proving the training pipeline end to end; the model of record trains on the simulator."""
    from calibration.camera import Camera
    from sim.body import Appearance, Body, standing_skeleton

    rng = np.random.default_rng(seed)
    hard = {"easy": 0, "standard": 1, "hard": 2}.get(preset, 1)
    k = 0
    while True:
        fisheye = rng.random() < 0.3
        w, h = 640, 480
        if fisheye:
            K = [[220.0, 0, 320], [0, 220.0, 240], [0, 0, 1]]
            dist = list(rng.uniform(-0.05, 0.05, 4))
        else:
            f = rng.uniform(380, 520)
            K = [[f, 0, 320], [0, f, 240], [0, 0, 1]]
            dist = [rng.uniform(-0.15, 0.05), 0, 0, 0, 0]
        pos = [rng.uniform(0, 12), rng.uniform(0, 9), rng.uniform(2.8, 3.5)]
        tgt = [pos[0] + rng.uniform(-3, 3), pos[1] + rng.uniform(-3, 3), 0.0]
        if fisheye:
            tgt = [pos[0] + 0.01, pos[1] + 0.01, 0.0]
        try:
            cam = Camera.look_at("toy", "fisheye" if fisheye else "pinhole", (w, h), K, dist, pos, tgt,
                                 up=(0.0, 1.0, 0.0) if not fisheye else (1.0, 0.0, 0.0))
        except ValueError:
            continue
        base = rng.integers(60, 200, 3)
        img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        bodies = []
        n = rng.integers(1, 4 + 2 * hard)
        centre = np.asarray(tgt[:2])
        for i in range(n):
            xy = centre + rng.normal(0, 1.2 + 0.4 * hard, 2)
            j = standing_skeleton(xy[0], xy[1], rng.uniform(-np.pi, np.pi), rng.uniform(1.5, 1.95))
            for side in ("l", "r"):
                if rng.random() < 0.4:  # reach forward and up into a lane
                    sh = j[2 if side == "l" else 3]
                    reach = np.array([np.cos(rng.uniform(0, 6.3)), np.sin(rng.uniform(0, 6.3)), 0]) * 0.6
                    reach[2] = rng.uniform(-0.4, 0.3)
                    j[4 if side == "l" else 5] = sh + reach * 0.5
                    j[6 if side == "l" else 7] = sh + reach
            app = Appearance(shirt=tuple(int(c) for c in rng.integers(0, 255, 3)),
                             trousers=tuple(int(c) for c in rng.integers(0, 255, 3)))
            bodies.append(Body(f"p{i}", j, app))
        persons = _toy_draw(img, cam, bodies)
        gain = rng.uniform(0.6, 1.3) if hard else 1.0
        img = np.clip(img.astype(np.float32) * gain + rng.normal(0, 2 + 3 * hard, img.shape), 0, 255)
        yield Sample(img.astype(np.uint8), persons, {"seed": seed, "preset": preset, "camera": "toy", "t": k})
        k += 1


def _toy_draw(img: np.ndarray, cam, bodies) -> list[Person]:
    from sim.body import SEGMENTS, J

    order = sorted(bodies, key=lambda b: -np.linalg.norm(cam.position[:2] - b.floor_xy))
    persons = []
    for body in order:
        mask = np.zeros(img.shape[:2], np.uint8)
        for a, b, part in SEGMENTS:
            pts = np.linspace(body.joint(a), body.joint(b), 6)
            uv, ok = cam.project(pts)
            depth = cam.to_camera(pts)[:, 2]
            if not ok.any():
                continue
            r = max(1, int(body.radius(part) * cam.K[0, 0] / max(depth.mean(), 0.3)))
            poly = np.round(uv[ok]).astype(np.int32)
            cv2.polylines(img, [poly], False, body.color(part), thickness=2 * r, lineType=cv2.LINE_AA)
            cv2.polylines(mask, [poly], False, 255, thickness=2 * r)
        uv, ok = cam.project(body.head[None])
        d = cam.to_camera(body.head[None])[0, 2]
        if ok[0]:
            r = max(1, int(body.appearance.head_radius * cam.K[0, 0] / max(d, 0.3)))
            c = tuple(int(v) for v in np.round(uv[0]))
            cv2.circle(img, c, r, body.color("head"), -1, cv2.LINE_AA)
            cv2.circle(mask, c, r, 255, -1)
        ys, xs = np.nonzero(mask)
        if xs.size == 0:
            continue
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        kp_xyz = body.joints[[J["head"], J["lwrist"], J["rwrist"]]]
        uv, ok = cam.project(kp_xyz)
        kp = np.zeros((3, 3))
        kp[:, :2] = uv
        kp[:, 2] = np.where(ok, 2, 0)
        persons.append(Person(box, kp, body.shopper))
    return persons


def sim_source(seed: int, preset: str, plan: Plan) -> Iterator[Sample]:
    """Frames of the simulator's world through its renderer, in the default store.

    One world per seed (``preset``, 6-16 shoppers, 100 s); frames at random instants on random cameras.
    Training seeds vary the scene colours (the renderer's own variety), jitter the cameras' poses and lenses
    around the store's (half the seeds), the light level, and use the cheaper static anti-aliasing on half
    the seeds; held-out seeds (``seed >= 10 000``) use the store's own cameras and the default renderer."""
    from sim.render import Renderer, RenderOptions

    held_out = seed >= 10_000
    rng = np.random.default_rng([seed, 0xDA7A])
    store, cameras, markers = _default_store()
    if not held_out and rng.random() < 0.5:
        cameras = _jittered_cameras(rng)
    world = _world(store, preset, seed, int(rng.integers(6, 17)), 100.0)
    opts = RenderOptions() if held_out else RenderOptions(supersample=int(rng.choice([1, 2])))
    renderer = Renderer(store, cameras, markers, seed=seed, options=opts)
    ids = sorted(cameras)
    for k in itertools.count():
        if k > 20 * plan.frames_per_seed:  # a world with no one in view: give up on this seed
            return
        t = float(np.round(rng.uniform(6.0, world.duration - 2.0), 1))
        cam = ids[int(rng.integers(len(ids)))]
        light = None if held_out else float(rng.uniform(0.55, 1.35))
        frame = renderer.render(cam, t, world.bodies_at(t), lighting=light)
        if frame.dropped or (not frame.truth and rng.random() > 0.15):
            continue
        yield frame_sample(frame, {"seed": seed, "preset": preset, "camera": cam, "t": t, "lighting": light})


def frame_sample(frame, source: dict) -> Sample:
    """A rendered ``sim.render.Frame`` as a labelled sample (persons with fewer than ``MIN_VISIBLE_PX``
    visible pixels become ignored boxes)."""
    persons, ignore = [], []
    for bt in frame.truth:
        kps = np.array([[kp.x, kp.y, 0 if kp.occluder == "outside" else (2 if kp.visible else 1)]
                        for kp in (bt.head, bt.lwrist, bt.rwrist)], float)
        if bt.visible_px >= MIN_VISIBLE_PX:
            persons.append(Person(np.asarray(bt.box, float), kps, bt.shopper))
        else:
            ignore.append(np.asarray(bt.box, float))
    return Sample(frame.image, persons, source, jpeg=frame.jpeg, ignore=ignore)


def render_samples(seed: int, preset: str, camera_ids: Iterable[str], times: Iterable[float],
                   shoppers: int = 12, supersample: int = 1) -> list[Sample]:
    """Frames of one world of the default store on the given cameras at the given times (for tests and
    benchmarks: a handful of labelled frames without building a dataset)."""
    from sim.render import Renderer, RenderOptions

    times = list(times)
    store, cameras, markers = _default_store()
    cams = {c: cameras[c] for c in camera_ids}
    world = _world(store, preset, seed, shoppers, max(times) + 2.0)
    renderer = Renderer(store, cams, markers, seed=seed, options=RenderOptions(supersample=supersample))
    return [frame_sample(renderer.render(c, t, world.bodies_at(t)), {"seed": seed, "camera": c, "t": t})
            for c in cams for t in times]


_STORE_CACHE: dict = {}


def _default_store():
    """The simulator's default store, its cameras and floor markers (loaded once)."""
    if "default" not in _STORE_CACHE:
        from calibration.camera import load_cameras
        from calibration.markers import load_layout
        from calibration.store import load_store
        from sim.default_store import DEFAULT_DIR

        store = load_store(DEFAULT_DIR / "store.yaml")
        _STORE_CACHE["default"] = (store, load_cameras(store, DEFAULT_DIR), load_layout(DEFAULT_DIR / "markers.yaml"))
    return _STORE_CACHE["default"]


def _jittered_cameras(rng: np.random.Generator) -> dict:
    """The default store's cameras moved and re-aimed a little, with other lenses (unseen views)."""
    from sim.default_store import CAMERAS, make_camera

    out = {}
    for spec in CAMERAS:
        s = dict(spec)
        x, y, _ = spec["pos"]
        s["pos"] = (x + rng.uniform(-0.4, 0.4), y + rng.uniform(-0.4, 0.4), float(rng.uniform(2.8, 3.5)))
        tx, ty, tz = spec["target"]
        if spec["model"] == "pinhole":
            s["target"] = (tx + rng.uniform(-1.0, 1.0), ty + rng.uniform(-1.0, 1.0), tz)
            s["hfov"] = spec["hfov"] + rng.uniform(-14, 8)
            s["dist"] = [spec["dist"][0] + rng.uniform(-0.08, 0.08), spec["dist"][1], 0.0, 0.0, 0.0]
        else:
            s["target"] = (s["pos"][0] + rng.uniform(-0.02, 0.02), s["pos"][1] + rng.uniform(-0.02, 0.02), 0.0)
            s["corner_deg"] = spec["corner_deg"] + rng.uniform(-8, 6)
        try:
            out[s["id"]] = make_camera(s)
        except ValueError:
            out[s["id"]] = make_camera(spec)
    return out


def _world(store, preset: str, seed: int, shoppers: int, duration: float):
    """Run the simulator's world for a scenario of ``preset``."""
    from sim.director import make_cast
    from sim.floor import FloorMap
    from sim.scenario import scenario_from_file
    from sim.world import World

    scn = scenario_from_file(None, preset=preset, seed=seed, shoppers=shoppers, duration_s=duration)
    rng = np.random.default_rng(seed)
    floor = FloorMap(store)
    cast = make_cast(store, floor, scn, rng)
    return World(store, floor, cast.shoppers, cast.visits, cast.plans, cast.inventory, scn.duration_s, rng,
                 cast.bookings).run()


SOURCES: dict[str, Callable[[int, str, Plan], Iterator[Sample]]] = {"sim": sim_source, "toy": toy_source}


def draw_labels(image: np.ndarray, persons: Iterable[Person]) -> np.ndarray:
    """A copy of ``image`` with boxes and keypoints drawn (for checking a dataset by eye)."""
    out = image.copy()
    colours = ((0, 255, 255), (0, 255, 0), (0, 0, 255))
    for p in persons:
        x1, y1, x2, y2 = (round(v) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 0), 1)
        for (x, y, v), c in zip(p.keypoints, colours):
            if v > 0 and math.isfinite(x):
                cv2.circle(out, (round(x), round(y)), 3, c, -1 if v == 2 else 1)
    return out

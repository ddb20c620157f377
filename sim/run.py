"""Running a simulation: scenario -> world -> load cells -> frames -> session MCAP + ground truth.

``simulate(scenario, out_dir)`` writes ``session.mcap``, ``truth.json``, ``truth/`` and (with ``preview``)
``preview.png`` into ``out_dir`` and returns a :class:`SimResult`.  Random streams are separate numpy
Generators per subsystem, all derived from the scenario's seed, and every time is derived from the scenario's
start epoch, so the same scenario gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calibration.camera import Camera, load_cameras
from calibration.config import ConfigError
from calibration.markers import MarkerLayout, load_layout
from calibration.store import Store, base_dir_of, load_store
from sim.default_store import DEFAULT_DIR
from sim.director import make_cast
from sim.floor import FloorMap
from sim.loadcells import LoadCellData, synthesize
from sim.scenario import Resolved
from sim.session import SessionWriter
from sim.truth import TruthFiles, build_truth, frame_number, head_occlusions, write_truth_json
from sim.world import World

log = logging.getLogger(__name__)

# subsystem keys of the seeded generators: np.random.default_rng([seed, KEY])
RNG_CAST, RNG_WORLD, RNG_LOADCELLS = 1, 2, 3
DEFAULT_STORE = DEFAULT_DIR / "store.yaml"
OCCLUSION_EVERY_S = 0.5  # geometric head-occlusion count sampled at this period


@dataclass
class SimResult:
    out_dir: Path
    truth: dict
    stats: dict
    counts: dict
    world: World
    cells: LoadCellData


def scaled_camera(cam: Camera, size: tuple[int, int]) -> Camera:
    """The camera at another image size (intrinsics scaled; the same field of view and pose)."""
    w, h = size
    if (w, h) == (cam.width, cam.height):
        return cam
    sx, sy = w / cam.width, h / cam.height
    K = cam.K.copy()
    K[0] *= sx
    K[1] *= sy
    out = Camera(cam.id, cam.model, w, h, K, cam.dist.copy(), cam.R.copy(), cam.t.copy(), cam.fps, dict(cam.meta))
    return out


def _camera_yaml(cam: Camera) -> bytes:
    import yaml

    data = cam.to_file_model().model_dump(mode="json")
    data["K"] = [list(r) for r in data["K"]]
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None).encode()


def load_scene(scn: Resolved) -> tuple[Path, Store, dict[str, Camera], MarkerLayout | None]:
    store_path = Path(scn.store) if scn.store else DEFAULT_STORE
    store = load_store(store_path)
    cams = load_cameras(store)
    base = base_dir_of(store) or store_path.parent
    markers = load_layout(base / "markers.yaml") if (base / "markers.yaml").is_file() else None
    size = tuple(scn.cameras.size)
    cams = {cid: scaled_camera(c, size) for cid, c in cams.items()}
    for c in cams.values():
        c.fps = scn.cameras.fps
        c.meta.setdefault("calibrated_at", "2026-01-01")
    if scn.cameras.only:
        missing = set(scn.cameras.only) - set(cams)
        if missing:
            raise ConfigError(store_path, "cameras.only", f"unknown cameras {sorted(missing)}; the store has "
                              f"{sorted(cams)}")
        cams = {cid: c for cid, c in cams.items() if cid in scn.cameras.only}
    return store_path, store, cams, markers


def simulate(scn: Resolved, out_dir: str | Path, preview: bool = False,
             progress: Callable[[str], None] | None = None) -> SimResult:
    out = Path(out_dir)
    say = progress or (lambda msg: log.info("%s", msg))
    store_path, store, cams, markers = load_scene(scn)
    if (scn.cameras.frames or preview) and not cams:
        raise ConfigError(store_path, "cameras", "the store has no cameras to render: simulate it without "
                          "frames (--no-frames, or cameras.frames: false in the scenario) and without "
                          "--preview")
    out.mkdir(parents=True, exist_ok=True)
    start = float(scn.start_epoch)
    seed = scn.seed
    floor = FloorMap(store)
    cast = make_cast(store, floor, scn, np.random.default_rng([seed, RNG_CAST]))
    world = World(store, floor, cast.shoppers, cast.visits, cast.plans, cast.inventory, scn.duration_s,
                  np.random.default_rng([seed, RNG_WORLD]), cast.bookings, cast.pair_lanes)
    say(f"world: {len(cast.shoppers)} shoppers in {len(cast.visits)} parties over {scn.duration_s:g} s")
    world.run()
    initial = {lane: round(sum(world.items[i].weight_g for i in ids), 2) for lane, ids in world.initial.items()}
    cells = synthesize(store, world.touches, initial, scn.duration_s,
                       np.random.default_rng([seed, RNG_LOADCELLS]))
    say(f"load cells: {len(cells.lanes)} lanes at {cells.rate_hz:g} Hz, {len(world.events)} true events")

    renderer = None
    if scn.cameras.frames or preview:
        from sim.render import Renderer, RenderOptions

        q = scn.cameras.jpeg_quality
        renderer = Renderer(store, cams, markers, seed=seed,
                            options=RenderOptions(jpeg_quality=(max(10, q - 8), min(100, q + 7))))

    fps = scn.cameras.fps
    n_frames = math.floor(scn.duration_s * fps + 1e-9) + 1
    files = TruthFiles(out / "truth", list(cams), with_mot=scn.cameras.frames)
    writer = SessionWriter(out / "session.mcap", store.store.id, start, metadata={
        "store": store.store.id, "name": scn.name, "preset": scn.preset, "seed": str(seed),
        "start_epoch": repr(start), "duration_s": repr(scn.duration_s), "fps": repr(fps),
        "image_size": f"{scn.cameras.size[0]}x{scn.cameras.size[1]}", "frames": str(scn.cameras.frames).lower(),
    })
    _attach_inputs(writer, store_path, store, cams, markers, scn)

    # everything in log-time order: a merge of scans, load-cell blocks (logged at their end) and frames
    block = max(1, round(scn.loadcells.block_s * cells.rate_hz))
    n_samples = len(cells.t)
    blocks = [(i0, min(i0 + block, n_samples)) for i0 in range(0, n_samples, block)]
    scans = sorted(world.scans)
    si = bi = 0
    occluded = dropped = seen_views = low_vis = 0
    dropped_frames: dict[str, list[int]] = {c: [] for c in cams}
    occ_every = max(1, round(OCCLUSION_EVERY_S * fps))

    def flush_until(t_rel: float) -> None:
        nonlocal si, bi
        while True:
            t_scan = scans[si][0] if si < len(scans) else math.inf
            t_blk = blocks[bi][1] / cells.rate_hz if bi < len(blocks) else math.inf
            nxt = min(t_scan, t_blk)
            if nxt > t_rel or nxt == math.inf:
                return
            if t_scan <= t_blk:
                t, gate, _vid, account, size = scans[si]
                writer.gate_entry(start + t, gate, account, size)
                si += 1
            else:
                i0, i1 = blocks[bi]
                for shelf in sorted(cells.shelves):
                    writer.loadcells(start + cells.t[i0], shelf, cells.rate_hz, cells.shelves[shelf],
                                     cells.shelf_block(shelf, i0, i1))
                bi += 1

    for k in range(n_frames):
        t = k / fps
        flush_until(t)
        bodies = world.bodies_at(t)
        files.trajectory(start + t, bodies)
        if k % occ_every == 0:
            occluded += head_occlusions(cams, bodies)
        if scn.cameras.frames and renderer is not None:
            for cid in cams:
                frame = renderer.render(cid, t, bodies)
                fno = frame_number(t, fps)
                if frame.dropped:
                    dropped += 1
                    dropped_frames[cid].append(fno)
                    continue
                writer.image(start + t, cid, frame.jpeg_bytes(scn.cameras.jpeg_quality), fno)
                files.frame(cid, fno, frame.truth)
                seen_views += len(frame.truth)
                low_vis += sum(1 for bt in frame.truth if bt.visible_fraction < 0.5)
        if k and k % int(max(1, 30 * fps)) == 0:
            say(f"t={t:.0f}s: {writer.counts['image']} frames written")
    flush_until(math.inf)
    files.close()

    frame_stats = {"occluded_head_views": occluded}
    if scn.cameras.frames:
        frame_stats.update({"frames": writer.counts["image"], "dropped_frames": dropped,
                            "shopper_views": seen_views, "views_under_half_visible": low_vis})
    truth = build_truth(store, world, cells, scn, start, cast.script, frame_stats)
    truth["session"]["cameras"] = list(cams)
    truth["session"]["dropped_frames"] = dropped_frames
    truth_bytes = write_truth_json(truth, out / "truth.json")
    writer.attach("truth.json", truth_bytes, "application/json")
    writer.close()
    (out / "scenario.yaml").write_text(scn.to_yaml())
    if preview:
        write_preview(out / "preview.png", world, renderer, cams, fps, scn.duration_s)
    counts = dict(writer.counts)
    say(f"session: {out / 'session.mcap'} ({counts})")
    return SimResult(out, truth, truth["stats"], counts, world, cells)


def _attach_inputs(writer: SessionWriter, store_path: Path, store: Store, cams: dict[str, Camera],
                   markers: MarkerLayout | None, scn: Resolved) -> None:
    import yaml

    data = yaml.safe_load(store_path.read_text())
    if scn.cameras.only:  # the session's store lists only the cameras it has
        data["cameras"] = [c for c in data.get("cameras", []) if c["id"] in cams]
    writer.attach("store.yaml", yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110).encode())
    for ref in store.cameras:
        if ref.id in cams:
            writer.attach(ref.file, _camera_yaml(cams[ref.id]))
    if markers is not None:
        writer.attach("markers.yaml", yaml.safe_dump(markers.model_dump(mode="json"), sort_keys=False).encode())
    writer.attach("scenario.yaml", scn.to_yaml().encode())


def busiest_time(world: World, fps: float, duration: float) -> float:
    """The frame time with the most shoppers in the store (the earliest such)."""
    tr = world.track
    counts = tr.present.sum(axis=1)
    k = int(np.argmax(counts))
    return round(float(tr.t[k]) * fps) / fps if duration else 0.0


def write_preview(path: Path, world: World, renderer, cams: dict[str, Camera], fps: float,
                  duration: float) -> Path:
    """A contact sheet of every camera's view of the busiest moment, with the truth drawn on it."""
    from sim.preview import contact_sheet

    t = busiest_time(world, fps, duration)
    bodies = world.bodies_at(t)
    frames = {cid: renderer.render(cid, t, bodies) for cid in cams}
    sheet = contact_sheet(frames, title=f"t={t:.1f}s, {len(bodies)} shoppers")
    cv2.imwrite(str(path), sheet)
    return path


def stats_line(stats: dict) -> str:
    keys = ["shoppers", "visits", "groups", "events", "neighbour_simultaneous_picks", "put_backs",
            "misplacements", "picks_of_misplaced", "handoffs", "exit_crowd_max", "occluded_head_views"]
    return "  ".join(f"{k}={stats[k]}" for k in keys if k in stats)


def dump_stats(stats: dict) -> str:
    return json.dumps(stats, sort_keys=True)

"""Simulator benchmark: do rendering and writing keep up with 4 cameras x 10 fps in real time on one core?

    python -m bench.sim [--seconds 5] [--repeat 3] [--seed 1] [--json]

On the default store with the ``hard`` scenario (12 shoppers), OpenCV limited to one thread:

* the world and the load cells are simulated once (90 s of store time, no frames);
* then, per run, ``--seconds`` of the busiest stretch are rendered for 4 cameras (2 pinhole, 2 fisheye) at
  640x480 and 10 fps, JPEG-encoded and written with the session writer (plus the load-cell blocks and truth
  of that stretch): frames/s, ms per frame, and the real-time multiple (store seconds per second of this
  process's CPU time, i.e. of one core; >= 1 keeps up; the wall-clock multiple is printed too, it is lower
  on a shared machine), median of ``--repeat`` runs;
* peers in the same process: the same stretch without frames (world bodies, load-cell blocks, trajectories),
  and JPEG encoding alone of the same frames, as ratios;
* the one-off per-camera static precomputation.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sim.loadcells import synthesize
from sim.render import Renderer, RenderOptions
from sim.run import RNG_CAST, RNG_LOADCELLS, RNG_WORLD, load_scene
from sim.scenario import scenario_from_file
from sim.session import SessionWriter
from sim.truth import TruthFiles, frame_number

CAMERAS = ["cam1", "cam2", "cam5", "cam6"]


def build(seed: int):
    from sim.director import make_cast
    from sim.floor import FloorMap
    from sim.world import World

    scn = scenario_from_file(None, preset="hard", seed=seed, shoppers=12, duration_s=90)
    _, store, cams, markers = load_scene(scn)
    floor = FloorMap(store)
    cast = make_cast(store, floor, scn, np.random.default_rng([seed, RNG_CAST]))
    world = World(store, floor, cast.shoppers, cast.visits, cast.plans, cast.inventory, scn.duration_s,
                  np.random.default_rng([seed, RNG_WORLD]), cast.bookings, cast.pair_lanes).run()
    initial = {ln: sum(world.items[i].weight_g for i in ids) for ln, ids in world.initial.items()}
    cells = synthesize(store, world.touches, initial, scn.duration_s, np.random.default_rng([seed, RNG_LOADCELLS]))
    return scn, store, {c: cams[c] for c in CAMERAS}, markers, world, cells


def stretch(world, seconds: float) -> float:
    """Start of the busiest ``seconds`` (most shoppers present)."""
    tr = world.track
    counts = tr.present.sum(axis=1).astype(float)
    n = max(1, int(seconds / (tr.t[1] - tr.t[0])))
    window = np.convolve(counts, np.ones(n), "valid")
    return float(tr.t[int(np.argmax(window))])


def run_once(scn, store, cams, markers, world, cells, t0: float, seconds: float, frames: bool,
             renderer: Renderer | None) -> tuple[float, int, list[np.ndarray]]:
    fps = scn.cameras.fps
    buf = io.BytesIO()
    start = scn.start_epoch
    raws: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = TruthFiles(Path(tmp), list(cams), with_mot=frames)
        writer = SessionWriter(buf, store.store.id, start)
        block = round(scn.loadcells.block_s * cells.rate_hz)
        i_blk = int(t0 * cells.rate_hz) // block * block
        n = 0
        tic = time.perf_counter()
        cpu = time.process_time()
        for k in range(round(seconds * fps)):
            t = t0 + k / fps
            while (i_blk + block) / cells.rate_hz <= t:
                for shelf in sorted(cells.shelves):
                    writer.loadcells(start + cells.t[i_blk], shelf, cells.rate_hz, cells.shelves[shelf],
                                     cells.shelf_block(shelf, i_blk, i_blk + block))
                i_blk += block
            bodies = world.bodies_at(t)
            files.trajectory(start + t, bodies)
            if frames:
                for cid in cams:
                    fr = renderer.render(cid, t, bodies)
                    writer.image(start + t, cid, fr.jpeg_bytes(), frame_number(t, fps))
                    files.frame(cid, frame_number(t, fps), fr.truth)
                    if len(raws) < 40:
                        raws.append(fr.raw)
                    n += 1
        writer.close()
        files.close()
        wall = time.perf_counter() - tic
        cpu = time.process_time() - cpu
    return wall, cpu, n, raws


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    tic = time.perf_counter()
    scn, store, cams, markers, world, cells = build(args.seed)
    t_world = time.perf_counter() - tic
    t0 = stretch(world, args.seconds)
    renderer = Renderer(store, cams, markers, seed=args.seed, options=RenderOptions())
    tic = time.perf_counter()
    renderer.prepare()
    t_static = (time.perf_counter() - tic) / len(cams)
    walls, cpus, counts, peers = [], [], [], []
    raws: list[np.ndarray] = []
    for _ in range(args.repeat):
        w, c, n, raws = run_once(scn, store, cams, markers, world, cells, t0, args.seconds, True, renderer)
        walls.append(w)
        cpus.append(c)
        counts.append(n)
        _, pc, _, _ = run_once(scn, store, cams, markers, world, cells, t0, args.seconds, False, None)
        peers.append(pc)
    jpeg = []
    for _ in range(args.repeat):
        tic = time.process_time()
        for img in raws:
            cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        jpeg.append((time.process_time() - tic) / max(len(raws), 1))
    wall = statistics.median(walls)
    cpu = statistics.median(cpus)
    frames = statistics.median(counts)
    ms_frame = 1000 * cpu / max(frames, 1)
    shoppers = int(world.track.present[int(t0 / (world.track.t[1] - world.track.t[0]))].sum())
    result = {
        "cameras": len(cams), "fps": scn.cameras.fps, "size": list(scn.cameras.size), "store_seconds": args.seconds,
        "shoppers_in_view": shoppers, "frames_per_run": frames, "runs": args.repeat,
        "frames_per_s": round(frames / cpu, 1), "ms_per_frame": round(ms_frame, 2),
        "realtime_multiple": round(args.seconds / cpu, 2),
        "wall_realtime_multiple": round(args.seconds / wall, 2),
        "no_frames_realtime_multiple": round(args.seconds / statistics.median(peers), 1),
        "jpeg_only_ms_per_frame": round(1000 * statistics.median(jpeg), 2),
        "frame_vs_jpeg_only": round(ms_frame / max(1000 * statistics.median(jpeg), 1e-9), 1),
        "static_precompute_s_per_camera": round(t_static, 2), "world_and_loadcells_90s_s": round(t_world, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'measure':40s} value")
        for k, v in result.items():
            print(f"{k:40s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

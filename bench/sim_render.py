"""Camera renderer benchmark: can the simulator render and write 4 cameras at 10 fps in real time on one core?

    python -m bench.sim_render [--store DIR] [--seconds 2] [--repeat 5] [--seed 1]
                               [--preview docs/sim_preview.png] [--json]

On the default store (``sim/stores/default``, else a built-in demo store) at the busiest moment of a 40 s
``hard`` world with 12 shoppers (the simulator's own poses; the renderer's demo poses where the world is not
installed), OpenCV and BLAS limited to one thread:

* per camera model (pinhole, fisheye): ms per 640x480 frame — render (shadows, bodies with depth test,
  blur, exposure, noise) plus JPEG encode — and frames/s; median of ``--repeat`` runs;
* 4 cameras x 10 fps: ``--seconds`` of store time rendered, JPEG-encoded and written to an in-memory MCAP
  (one channel per camera), wall time per run, and the real-time multiple (store seconds per wall second;
  >= 1 keeps up), median of runs;
* peers in the same process on the same frames: OpenCV's JPEG encode alone (the floor any camera writer
  pays), and a plain full-frame ray cast of the static scene (what one frame costs without the per-camera
  precomputation), as ratios;
* every figure as wall time and as this process's CPU time: on a busy shared machine the wall figures
  (and the wall real-time multiple) are inflated by waiting for a core, the CPU ones are not;
* the one-off static precomputation per camera.

With ``--preview`` it also writes a contact sheet of 4 cameras (pinhole and fisheye) at a busy moment.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core: no BLAS helper threads (before numpy loads)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from calibration.camera import Camera, load_cameras
from calibration.markers import load_layout
from calibration.store import Store, load_store
from sim.render import Renderer, RenderOptions
from sim.render_demo import demo_bodies, demo_cameras, demo_markers, demo_store
from sim.render_static import trace

DEFAULT_STORE = Path(__file__).resolve().parents[1] / "sim" / "stores" / "default"


def load_scene(folder: Path | None) -> tuple[Store, dict[str, Camera], object, str]:
    folder = folder or DEFAULT_STORE
    if (folder / "store.yaml").is_file():
        store = load_store(folder / "store.yaml")
        markers = load_layout(folder / "markers.yaml") if (folder / "markers.yaml").is_file() else None
        return store, load_cameras(store), markers, str(folder)
    store = demo_store(size=(12.0, 9.0), units=4)
    return store, demo_cameras(store), demo_markers(store), "demo store (sim.render_demo)"


def pick_four(cameras: dict[str, Camera]) -> list[str]:
    """Four cameras, fisheye ones included (at most two), the rest pinhole, in store order."""
    fish = [c for c, cam in cameras.items() if cam.model == "fisheye"][:2]
    pin = [c for c, cam in cameras.items() if cam.model != "fisheye"]
    chosen = pin[: 4 - len(fish)] + fish
    return [c for c in cameras if c in chosen][:4]


def run(args: argparse.Namespace) -> dict:
    cv2.setNumThreads(1)
    store, cameras, markers, where = load_scene(Path(args.store) if args.store else None)
    renderer = Renderer(store, cameras, markers, seed=args.seed, options=RenderOptions())
    prep_ms = {}
    for cid in cameras:
        t0 = time.perf_counter()
        renderer.prepare([cid])
        prep_ms[cid] = (time.perf_counter() - t0) * 1e3
    fps = 10.0
    n = max(1, round(args.seconds * fps))
    scenes, t_start, poses = busy_scenes(store, args.seed, n, fps)
    # per camera model: ms per frame (render + JPEG), median over runs of the mean over frames
    per_model: dict[str, list[float]] = {}
    per_model_cpu: dict[str, list[float]] = {}
    for model in sorted({c.model for c in cameras.values()}):
        ids = [c for c, cam in cameras.items() if cam.model == model]
        runs, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            for k, bodies in enumerate(scenes):
                for cid in ids:
                    renderer.render(cid, t_start + k / fps, bodies)
            runs.append((time.perf_counter() - t0) * 1e3 / (n * len(ids)))
            cpu.append((time.process_time() - c0) * 1e3 / (n * len(ids)))
        per_model[model] = runs
        per_model_cpu[model] = cpu
    # 4 cameras x 10 fps, written to an in-memory MCAP
    four = pick_four(cameras)
    walls, cpus, frames_out = [], [], []
    for _ in range(args.repeat):
        buf = io.BytesIO()
        t0, c0 = time.perf_counter(), time.process_time()
        writer, channels = _mcap_writer(buf, four)
        for k, bodies in enumerate(scenes):
            t = t_start + k / fps
            for cid in four:
                f = renderer.render(cid, t, bodies)
                if not f.dropped:
                    ns = int(t * 1e9)
                    writer.add_message(channels[cid], log_time=ns, publish_time=ns, data=f.jpeg_bytes())
                if len(frames_out) < len(four) * 3:
                    frames_out.append(f.raw)
        writer.finish()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall = statistics.median(walls)
    cpu_s = statistics.median(cpus)
    # peers: JPEG encode alone, on the same frames; one full-frame static ray cast
    jpeg_runs, jpeg_cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for img in frames_out:
            cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        jpeg_runs.append((time.perf_counter() - t0) * 1e3 / len(frames_out))
        jpeg_cpu.append((time.process_time() - c0) * 1e3 / len(frames_out))
    cam0 = cameras[four[0]]
    rays = cam0.ray_map().reshape(-1, 3)
    trace_runs, trace_cpu = [], []
    for _ in range(min(args.repeat, 3)):
        t0, c0 = time.perf_counter(), time.process_time()
        trace(renderer.scene, cam0.position, rays)
        trace_runs.append((time.perf_counter() - t0) * 1e3)
        trace_cpu.append((time.process_time() - c0) * 1e3)
    ms_four = wall * 1e3 / (n * len(four))
    cpu_four = cpu_s * 1e3 / (n * len(four))
    out = {
        "store": where,
        "poses": poses,
        "shoppers_in_store": round(statistics.mean(len(b) for b in scenes), 1),
        "image": f"{cam0.width}x{cam0.height}",
        "cameras_4": four,
        "ms_per_frame": {m: round(statistics.median(v), 2) for m, v in per_model.items()},
        "cpu_ms_per_frame": {m: round(statistics.median(v), 2) for m, v in per_model_cpu.items()},
        "fps_per_camera": {m: round(1e3 / statistics.median(v), 1) for m, v in per_model.items()},
        "four_cameras_10fps": {
            "store_seconds": n / fps,
            "wall_s_median": round(wall, 3),
            "cpu_s_median": round(cpu_s, 3),
            "ms_per_frame": round(ms_four, 2),
            "cpu_ms_per_frame": round(cpu_s * 1e3 / (n * len(four)), 2),
            "realtime_multiple": round((n / fps) / wall, 2),
            "realtime_multiple_cpu": round((n / fps) / cpu_s, 2),
        },
        "load_average": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "peer_jpeg_encode_ms": round(statistics.median(jpeg_runs), 2),
        "peer_jpeg_encode_cpu_ms": round(statistics.median(jpeg_cpu), 2),
        "ratio_to_jpeg_encode": round(ms_four / statistics.median(jpeg_runs), 2),
        "ratio_to_jpeg_encode_cpu": round(cpu_four / statistics.median(jpeg_cpu), 2),
        "peer_full_frame_raycast_ms": round(statistics.median(trace_runs), 1),
        "peer_full_frame_raycast_cpu_ms": round(statistics.median(trace_cpu), 1),
        "speedup_vs_full_frame_raycast": round(statistics.median(trace_runs) / ms_four, 1),
        "speedup_vs_full_frame_raycast_cpu": round(statistics.median(trace_cpu) / cpu_four, 1),
        "static_precompute_ms": {c: round(v) for c, v in prep_ms.items()},
        "repeat": args.repeat,
    }
    if args.preview:
        out["preview"] = write_preview(renderer, four, Path(args.preview), scenes[0], t_start, poses)
    return out


def _mcap_writer(buf: io.BytesIO, cams: list[str]):
    from mcap.writer import Writer

    writer = Writer(buf)
    writer.start(profile="", library="walkout-bench")
    channels = {cid: writer.register_channel(topic=f"/camera/{cid}/jpeg", message_encoding="jpeg", schema_id=0)
                for cid in cams}
    return writer, channels


def busy_scenes(store: Store, seed: int, n: int, fps: float) -> tuple[list[list], float, str]:
    """Bodies at ``n`` frame instants from the busiest moment of a 40 s ``hard`` world of the simulator (its
    real poses: walking, crouching and leaning to reach, hand-overs), with the first instant; the renderer's
    demo scene (12 posed shoppers) where the simulator's world is not installed."""
    try:
        from sim.director import make_cast
        from sim.floor import FloorMap
        from sim.scenario import scenario_from_file
        from sim.world import World
    except ImportError:
        scenes = [demo_bodies(store, np.random.default_rng([seed, k]), 12, t=k / fps) for k in range(n)]
        return scenes, 0.0, "demo poses (sim.render_demo)"
    scn = scenario_from_file(None, preset="hard", seed=seed, shoppers=12, duration_s=40.0)
    rng = np.random.default_rng(seed)
    floor = FloorMap(store)
    cast = make_cast(store, floor, scn, rng)
    world = World(store, floor, cast.shoppers, cast.visits, cast.plans, cast.inventory, scn.duration_s, rng,
                  cast.bookings).run()
    busy = world.track.present.sum(axis=1)
    k = int(np.argmax(np.convolve(busy, np.ones(max(1, int(n / fps / 0.1))), mode="valid")))  # track: 0.1 s
    t0 = round(float(world.track.t[k]) * fps) / fps
    return [world.bodies_at(t0 + i / fps) for i in range(n)], t0, "sim.world, preset hard, 12 shoppers"


def write_preview(renderer: Renderer, cams: list[str], path: Path, bodies: list, t: float, source: str) -> str:
    """A contact sheet of ``cams`` at the busiest moment (see :func:`busy_scenes`)."""
    from sim.preview import contact_sheet

    frames = {cid: renderer.render(cid, t, bodies) for cid in cams}
    sheet = contact_sheet(frames, cols=2, title=f"walkout sim: {len(bodies)} shoppers at t={t:.1f}s "
                                                f"({source}); renderer seed {renderer.seed}")
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return f"{path} ({source})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim_render", description=__doc__.split("\n")[0])
    p.add_argument("--store", help="store folder (store.yaml, cameras, markers.yaml); default sim/stores/default")
    p.add_argument("--seconds", type=float, default=2.0, help="store seconds rendered per run")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--preview", help="write a contact sheet PNG of 4 cameras here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"store: {out['store']}   poses: {out['poses']} ({out['shoppers_in_store']} in the store)   "
          f"image: {out['image']}   one core   "
          f"(load average {out['load_average']} on {out['cpu_count']} CPUs: wall figures suffer when busy)")
    print(f"{'figure':44s} {'wall':>10s} {'cpu':>10s}")
    for m, v in out["ms_per_frame"].items():
        print(f"{'ms per frame (render + JPEG), ' + m:44s} {v:10.2f} {out['cpu_ms_per_frame'][m]:10.2f}")
        print(f"{'frames/s per camera, ' + m:44s} {out['fps_per_camera'][m]:10.1f}")
    f4 = out["four_cameras_10fps"]
    print(f"{'4 cams x 10 fps: ms per frame (+ MCAP write)':44s} {f4['ms_per_frame']:10.2f} "
          f"{f4['cpu_ms_per_frame']:10.2f}")
    print(f"{'4 cams x 10 fps: real-time multiple':44s} {f4['realtime_multiple']:10.2f} "
          f"{f4['realtime_multiple_cpu']:10.2f}")
    print(f"{'peer: OpenCV JPEG encode alone, ms':44s} {out['peer_jpeg_encode_ms']:10.2f} "
          f"{out['peer_jpeg_encode_cpu_ms']:10.2f}")
    print(f"{'ratio: our frame / JPEG encode':44s} {out['ratio_to_jpeg_encode']:10.2f} "
          f"{out['ratio_to_jpeg_encode_cpu']:10.2f}")
    print(f"{'peer: full-frame static ray cast, ms':44s} {out['peer_full_frame_raycast_ms']:10.1f} "
          f"{out['peer_full_frame_raycast_cpu_ms']:10.1f}")
    print(f"{'speed-up vs full-frame ray cast':44s} {out['speedup_vs_full_frame_raycast']:10.1f} "
          f"{out['speedup_vs_full_frame_raycast_cpu']:10.1f}")
    print(f"{'static precompute per camera, ms (median)':44s} "
          f"{statistics.median(out['static_precompute_ms'].values()):10.0f}")
    if "preview" in out:
        print(f"preview: {out['preview']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

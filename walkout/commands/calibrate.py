"""``walkout calibrate {intrinsics,extrinsics,check,render}`` and ``walkout store import-aifi``.

Every verb exits 0 on success and 1 with ``error: <reason>`` on stderr when the inputs cannot give a
trustworthy result; nothing is written in that case.  Results are printed as one line of ``key=value`` pairs,
or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from calibration.config import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="camera calibration: intrinsics, extrinsics, check, simulated "
                       "images")
    verbs = p.add_subparsers(dest="calibrate_verb", metavar="VERB", required=True)

    i = verbs.add_parser("intrinsics", help="lens calibration from ChArUco board images")
    i.add_argument("--images", required=True, help="folder of images or a glob pattern (quote it)")
    board_args(i)
    i.add_argument("--model", choices=["pinhole", "fisheye"], default="pinhole", help="lens model")
    i.add_argument("--id", help="camera id (default: the output file's stem)")
    i.add_argument("--min-views", type=int, default=5, help="least number of usable board views")
    i.add_argument("--out", required=True, help="camera file to write (YAML)")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(func=cmd_intrinsics)

    e = verbs.add_parser("extrinsics", help="camera pose from floor ArUco markers with known positions")
    e.add_argument("--camera", required=True, help="camera file with the intrinsics (YAML)")
    e.add_argument("--image", required=True, help="image of the floor markers from this camera")
    e.add_argument("--markers", required=True, help="marker file (YAML): ids and floor positions")
    e.add_argument("--holdout", type=float, default=0.25, help="fraction of markers kept back for the check")
    e.add_argument("--min-markers", type=int, default=3, help="least number of markers to fit the pose")
    e.add_argument("--max-rms", type=float, default=2.0, help="refuse a fit with a larger RMS (pixels)")
    e.add_argument("--out", required=True, help="camera file to write (may be the input file)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_extrinsics)

    c = verbs.add_parser("check", help="reprojection and floor error of markers, and an overlay PNG")
    c.add_argument("--camera", required=True, help="calibrated camera file (YAML)")
    c.add_argument("--image", required=True, help="image of the floor markers from this camera")
    c.add_argument("--markers", required=True, help="marker file (YAML)")
    c.add_argument("--store", help="store description: its lanes are drawn through the camera")
    c.add_argument("--ids", help="check only these marker ids (comma separated), e.g. the held-out ones")
    c.add_argument("--out", required=True, help="overlay PNG to write")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_check)

    r = verbs.add_parser("render", help="simulated board and floor-marker images for a camera file")
    r.add_argument("--camera", required=True, help="camera file: its lens, and its pose for the floor view")
    r.add_argument("--out", required=True, help="folder to write images (and board.yaml / markers.yaml)")
    board_args(r)
    r.add_argument("--markers", help="marker file (default: a grid, written to --out as markers.yaml)")
    r.add_argument("--store", help="store description: the default grid covers its floor, clear of shelves")
    r.add_argument("--spacing", type=float, default=1.0, help="default grid: metres between markers")
    r.add_argument("--marker-size", type=float, default=0.3, help="default grid: marker side, metres")
    r.add_argument("--views", type=int, default=12, help="number of board images")
    r.add_argument("--seed", type=int, default=0, help="random seed for poses and noise")
    r.set_defaults(func=cmd_render)

    _register_store_verbs(sub)


def board_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", help="ChArUco board file (YAML); or give the board with the flags below")
    p.add_argument("--squares", default="7x5", help="squares across x down (default 7x5)")
    p.add_argument("--square", type=float, default=0.04, help="square side in metres")
    p.add_argument("--marker", type=float, default=0.03, help="marker side in metres")
    p.add_argument("--dictionary", default="DICT_5X5_100", help="ArUco dictionary of the board")


def _register_store_verbs(sub: argparse._SubParsersAction) -> None:
    """Add ``import-aifi`` to the ``store`` verb group registered by :mod:`walkout.commands.store` (which must
    come earlier in ``COMMANDS``)."""
    store = sub.choices.get("store")
    verbs = None
    if store is not None:
        verbs = next((a for a in store._actions if isinstance(a, argparse._SubParsersAction)), None)
    if verbs is None:
        log.debug("no 'store' verb group to extend; 'walkout store import-aifi' is not available")
        return
    a = verbs.add_parser("import-aifi", help="import the AiFi NanoStore dataset as a store description")
    a.add_argument("realdata", help="the dataset folder (aifi_autocheckout_2020)")
    a.add_argument("--products", help="catalogue/planogram CSV (default: ground_truth/test1-all_product.csv)")
    a.add_argument("--out", required=True, help="folder to write store.yaml and cameras/")
    a.add_argument("--store-id", default="aifi-nanostore", help="store id")
    a.add_argument("--overlay", help="also write the plates drawn into the camera frames to this PNG")
    a.add_argument("--frames", help="frame=camera pairs, e.g. cam1=1,cam2=2 (default: the matched ones)")
    a.add_argument("--json", action="store_true", help="print the summary as JSON")
    a.set_defaults(func=cmd_import_aifi)


# ---------------------------------------------------------------------------------------------- helpers
def _fail(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        print("  ".join(f"{k}={v}" for k, v in result.items()))


def _board(args: argparse.Namespace):
    from calibration.intrinsics import BoardSpec, load_board

    if args.board:
        return load_board(args.board)
    try:
        sx, sy = (int(v) for v in args.squares.lower().split("x"))
    except ValueError:
        raise ConfigError(None, "--squares", f"expected e.g. 7x5, got {args.squares!r}") from None
    try:
        return BoardSpec(squares_x=sx, squares_y=sy, square_m=args.square, marker_m=args.marker,
                         dictionary=args.dictionary)
    except ValueError as exc:
        raise ConfigError(None, "--board flags", str(exc).splitlines()[-1].strip()) from None


def _read_image(path: str) -> np.ndarray:
    from calibration.intrinsics import CalibrationError

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CalibrationError(f"{path}: cannot read the image")
    return image


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename, so no half file is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)                 # mkstemp makes it private; give it the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _imwrite(path: Path, image: np.ndarray) -> None:
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if path.suffix.lower() == ".png" else []
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"cannot write the image {path} (unknown extension?)")


# ---------------------------------------------------------------------------------------------- verbs
def cmd_intrinsics(args: argparse.Namespace) -> int:
    from calibration.intrinsics import CalibrationError, calibrate_images, list_images

    try:
        spec = _board(args)
        paths = list_images(args.images)
        if not paths:
            return _fail(f"no images found at {args.images}")
        out = Path(args.out)
        result = calibrate_images(paths, spec, args.model, args.id or out.stem, args.min_views)
    except (CalibrationError, ConfigError) as exc:
        return _fail(exc)
    _write_atomic(out, result.camera.save)
    _print({"camera": result.camera.id, "model": args.model, "views": len(result.views),
            "skipped": len(result.skipped), "rms_px": round(result.rms_px, 4), "out": str(out)}, args.json)
    return 0


def cmd_extrinsics(args: argparse.Namespace) -> int:
    from calibration.camera import Camera
    from calibration.extrinsics import calibrate_image
    from calibration.intrinsics import CalibrationError
    from calibration.markers import load_layout

    try:
        camera = Camera.from_file(args.camera)
        layout = load_layout(args.markers)
        image = _read_image(args.image)
        result = calibrate_image(camera, image, layout, args.holdout, args.min_markers, args.max_rms)
    except (CalibrationError, ConfigError) as exc:
        return _fail(exc)
    out = Path(args.out)
    _write_atomic(out, result.camera.save)
    _print({**result.summary(), "out": str(out)}, args.json)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from calibration.camera import Camera
    from calibration.check import check_image, overlay
    from calibration.intrinsics import CalibrationError
    from calibration.markers import load_layout
    from calibration.store import load_store

    try:
        camera = Camera.from_file(args.camera)
        layout = load_layout(args.markers)
        store = load_store(args.store) if args.store else None
        image = _read_image(args.image)
        ids = None
        if args.ids:
            try:
                ids = [int(v) for v in args.ids.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(None, "--ids",
                                  f"expected comma-separated integers, got {args.ids!r}") from None
        report, detection = check_image(camera, image, layout, ids)
    except (CalibrationError, ConfigError) as exc:
        return _fail(exc)
    picture = overlay(image, camera, layout, detection, report, store)
    out = Path(args.out)
    _write_atomic(out, lambda p: _imwrite(p, picture))
    summary = report.summary()
    summary.pop("per_marker")
    _print({**summary, "out": str(out)}, args.json)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from calibration.camera import Camera
    from calibration.intrinsics import CalibrationError
    from calibration.markers import load_layout, save_layout
    from calibration.store import load_store
    from sim.targets import board_poses, render_board, render_floor

    try:
        camera = Camera.from_file(args.camera)
        spec = _board(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.markers:
            layout = load_layout(args.markers)
        else:
            store = load_store(args.store) if args.store else None
            layout = default_layout(camera, store, args.spacing, args.marker_size)
            save_layout(layout, out / "markers.yaml")
        rng = np.random.default_rng(args.seed)
        poses = board_poses(camera, spec, args.views, rng)
    except (CalibrationError, ConfigError, ValueError) as exc:
        return _fail(exc)
    (out / "board.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    boards = out / "board"
    boards.mkdir(exist_ok=True)
    for k, (rv, tv) in enumerate(poses):
        cv2.imwrite(str(boards / f"board_{k:03d}.png"), render_board(camera, spec, rv, tv, rng))
    cv2.imwrite(str(out / "floor.png"), render_floor(camera, layout, rng))
    _print({"camera": camera.id, "board_images": len(poses), "floor_image": str(out / "floor.png"),
            "markers": len(layout.markers), "out": str(out)}, False)
    return 0


def default_layout(camera, store, spacing: float, size: float):
    """A grid of floor markers: over the store's floor clear of its shelf units (half a marker of margin), or
    over the floor the camera sees when no store is given."""
    from calibration.geometry import StoreGeometry, floor_box_distance
    from calibration.markers import MarkerLayout, grid_layout

    if store is None:
        return grid_layout(_floor_guess(camera), spacing=spacing, marker_size=size, margin=0.5)
    grid = grid_layout(tuple(store.store.size), spacing=spacing, marker_size=size, margin=spacing / 2)
    units = StoreGeometry.from_store(store).units
    xy = np.array([m.center for m in grid.markers])
    clear = floor_box_distance(xy, units).min(axis=1) > size if len(units) else np.ones(len(xy), bool)
    keep = [m for m, ok in zip(grid.markers, clear, strict=True) if ok]
    if not keep:
        raise ValueError("no floor left for markers between the shelf units")
    return MarkerLayout(markers=[m.model_copy(update={"id": i}) for i, m in enumerate(keep[:250])])


def _floor_guess(camera) -> tuple[float, float]:
    """The floor area a default marker grid should cover: where the camera's image meets the floor."""
    u, v = np.meshgrid(np.linspace(0, camera.width, 9), np.linspace(0, camera.height, 7))
    pts, hit = camera.pixel_to_plane(np.stack([u.ravel(), v.ravel()], axis=1), 0.0)
    if not np.any(hit):
        return 8.0, 6.0
    hi = np.clip(pts[hit, :2].max(axis=0), 2.0, 12.0)
    return float(np.ceil(hi[0])), float(np.ceil(hi[1]))


def cmd_import_aifi(args: argparse.Namespace) -> int:
    from calibration.aifi import FRAME_CAMERAS, build_store, check_frames, overlay_frames, write_store

    realdata = Path(args.realdata)
    products = Path(args.products) if args.products else realdata / "ground_truth" / "test1-all_product.csv"
    frames = dict(FRAME_CAMERAS)
    if args.frames:
        try:
            frames = dict(pair.split("=", 1) for pair in args.frames.split(","))
        except ValueError:
            return _fail(f"--frames: expected name=camera pairs, got {args.frames!r}")
    for need in (realdata / "store_meta", products):
        if not need.exists():
            return _fail(f"{need} not found")
    try:
        data, cameras = build_store(realdata, products, args.store_id)
        if args.overlay:
            check_frames(realdata, cameras, frames)          # before anything is written
        store = write_store(data, cameras, Path(args.out))
    except (ConfigError, ValueError, KeyError, FileNotFoundError, json.JSONDecodeError) as exc:
        return _fail(exc)
    summary = {"store": store.store.id, "products": len(store.catalogue),
               "shelf_units": len(store.shelf_units), "shelves": len(store.shelves),
               "lanes": len(store.lanes),
               "planned_lanes": sum(1 for ln in store.lanes.values() if ln.sku),
               "cameras": len(store.cameras), "out": args.out}
    if args.overlay:
        try:
            picture, counts = overlay_frames(realdata, store, cameras, frames)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            return _fail(exc)
        _write_atomic(Path(args.overlay), lambda p: _imwrite(p, picture))
        summary["overlay"] = args.overlay
        summary["plates_drawn"] = sum(counts.values())
    _print(summary, args.json)
    return 0

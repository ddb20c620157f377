"""Importer for the AiFi NanoStore of the CPS-IoT Week 2020 AutoCheckout competition
(``walkout store import-aifi``): its gondolas, shelves and load-cell plates, its product catalogue and
planogram, and its camera calibrations become a walkout store description with one camera file per camera.

The dataset (``store_meta/*.json``, ``ground_truth/*-all_product.csv``, ``camera_frames/*.png``) is described
in ``store_meta/README.md``.  Its conventions, as worked out by drawing the plates into the real camera frames
(``docs/aifi_overlay.png``; the script is :func:`overlay_frames`):

* Cameras (``calibration.json``): ``K`` is normalised by the image size (multiply row 0 by the width, row 1
  by the height), ``dist_coeffs`` are OpenCV's k1 k2 p1 p2 k3, and ``Tw`` is the camera-to-world transform
  (its columns are the camera's x right, y down, z forward axes) with the translation in INCHES.
* Gondolas, shelves and plates are nested: a gondola's pose is in the world, a shelf's in its gondola, a
  plate's in its shelf, each a translation (metres) and a Rodrigues rotation; a box's translation is its
  corner and it extends by ``dim_x``, ``dim_y``, ``dim_z`` along its own axes.  The local frames are taken
  as mirrored in y relative to the world: a point ``p`` in a gondola's frame is at ``t_gondola + F R(rot) p``
  with ``F = diag(1, -1, 1)``.  Read unmirrored (the first thing one tries) the shelves of gondolas 1-4 lie
  0.41 m further into the aisle and the fifth, turned gondola on the far side of its own back; in the frames
  of cameras 5, 6 and 7 that puts the plates visibly in the aisle, while the mirrored reading puts them on
  the shelves.  It is the reading that fits best, not a perfect one: the residuals are up to about 0.3 m
  (the end gondola in cam5/cam6, the shelf fronts in cam4), and in cam6 and cam8 the plates lie on the
  shelves but about one gondola section (~1 m) off along the aisle, judged by the products (the water of
  gondola 1 sits under gondola 2's plates in cam8).  Camera 8's frame alone fits the unmirrored reading of
  gondolas 1-4 better.  The dataset documents neither reading.
* ``world_ltrb`` is the floor's extent (inches, left/top/right/bottom = x min, y min, x max, y max).  The
  walkout store frame is the AiFi world moved so that (left, top) is the origin: both are right-handed with
  z up, so nothing else changes.
* The eight frames ``camera_frames/cam1..8.png`` do not carry the dataset's camera ids.  Matching the store's
  structure (which end the TV wall and the end gondola are at, which side of the aisle the shelves are on)
  and triangulating the shopper seen at the same moment in cam5 and cam6 against each calibration gives
  cameras 1, 2, 5, 6, 7, 8, 9, 10 in that order (:data:`FRAME_CAMERAS`) - as if two cameras' videos were
  missing and the rest were numbered consecutively.  cam7 and cam8 are the least certain (9 or 11, 10 or 12).

Money: ``Price`` is in dollars and becomes integer cents.  Rows with zero weight are left out of the
catalogue (a lane planned with such a product stays without a SKU).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from calibration.camera import Camera
from calibration.config import ConfigError
from calibration.store import Box, Store, store_from_dict

log = logging.getLogger(__name__)

INCH = 0.0254
DATASET_MONTH = "2020-01"   # when the dataset was recorded; calibration.json carries no date of its own
MIRROR_Y = np.diag([1.0, -1.0, 1.0])
FRAME_CAMERAS: dict[str, str] = {"cam1": "1", "cam2": "2", "cam3": "5", "cam4": "6", "cam5": "7", "cam6": "8",
                                 "cam7": "9", "cam8": "10"}
GONDOLA_COLORS = {1: (60, 60, 255), 2: (60, 220, 60), 3: (255, 120, 40), 4: (40, 230, 255), 5: (255, 60, 255)}


# ---------------------------------------------------------------------------------------------- reading
def _transform(coords: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(translation (3,), rotation matrix (3, 3), dims (3,)) of a store_meta ``coordinates`` entry."""
    tr = coords["transform"]["translation"]
    rot = coords["transform"]["rotation"]
    t = np.array([float(tr.get(k, 0.0)) for k in "xyz"])
    r = np.array([float(rot.get(k, 0.0)) for k in "xyz"])
    R, _ = cv2.Rodrigues(r.reshape(3, 1))
    dims = np.array([float(coords.get(f"dim_{k}", 0.0)) for k in "xyz"])
    return t, R, dims


@dataclass(frozen=True)
class Plate:
    gondola: int
    shelf: int
    plate: int
    corners: np.ndarray     # (4, 3) the plate's rectangle in the AiFi world, metres
    height: float           # clearance above the plate (the shelf's dim_z), metres

    @property
    def key(self) -> tuple[int, int, int]:
        return self.gondola, self.shelf, self.plate


def read_plates(meta_dir: Path) -> list[Plate]:
    """Every plate's rectangle in the AiFi world frame (see the module docstring for the conventions)."""
    gondolas = {g["id"]["id"]: _transform(g["coordinates"])
                for g in json.loads((meta_dir / "Gondolas.json").read_text())["gondolas"]}
    shelves = {(s["id"]["gondola_id"]["id"], s["id"]["shelf_index"]): _transform(s["coordinates"])
               for s in json.loads((meta_dir / "Shelves.json").read_text())["shelves"]}
    plates = []
    for p in json.loads((meta_dir / "Plates.json").read_text())["plates"]:
        g = p["id"]["shelf_id"]["gondola_id"]["id"]
        s = p["id"]["shelf_id"]["shelf_index"]
        k = p["id"]["plate_index"]
        if g not in gondolas or (g, s) not in shelves:
            raise ConfigError(meta_dir / "Plates.json", f"plate {g}/{s}/{k}",
                              "its gondola or shelf is not listed")
        tg, Rg, _ = gondolas[g]
        ts, Rs, sdims = shelves[(g, s)]
        tp, Rp, pdims = _transform(p["coordinates"])
        local = np.array([[0, 0, 0], [pdims[0], 0, 0], [pdims[0], pdims[1], 0], [0, pdims[1], 0]], float)
        in_gondola = ts + (tp + local @ Rp.T) @ Rs.T        # plate -> shelf -> gondola frame
        world = tg + (in_gondola @ Rg.T) @ MIRROR_Y          # t_g + F R_g p: see the module docstring
        plates.append(Plate(g, s, k, world, float(sdims[2])))
    plates.sort(key=lambda p: p.key)
    return plates


def world_bounds(meta_dir: Path) -> tuple[float, float, float, float]:
    """The floor's extent in the AiFi world (metres): x min, y min, x max, y max."""
    ltrb = json.loads((meta_dir / "calibration.json").read_text())["world_ltrb"]
    left, top, right, bottom = (float(v) * INCH for v in ltrb)
    return min(left, right), min(top, bottom), max(left, right), max(top, bottom)


def read_cameras(meta_dir: Path, size: tuple[int, int] = (640, 360), origin: np.ndarray | None = None,
                 include_depth: bool = False) -> dict[str, Camera]:
    """Cameras keyed by the dataset's id, posed in the frame whose origin is ``origin`` (AiFi world,
    metres)."""
    data = json.loads((meta_dir / "calibration.json").read_text())["cameras"]
    o = np.zeros(3) if origin is None else np.asarray(origin, float)
    w, h = size
    out = {}
    for cid, c in data.items():
        if cid.endswith("depth") and not include_depth:
            continue
        K = np.array(c["K"], float) * np.array([[w], [h], [1.0]])
        Tw = np.array(c["Tw"], float)
        R_cw = Tw[:3, :3]
        centre = Tw[:3, 3] * INCH - o
        R = R_cw.T
        dist = [float(v) for v in c.get("dist_coeffs", [])] or [0.0] * 5
        out[str(cid)] = Camera(f"aifi-cam{cid}", "pinhole", w, h, K, dist, R, -R @ centre)
    return out


@dataclass(frozen=True)
class ProductRow:
    name: str
    gondola: int
    shelf: int
    plates: tuple[int, ...]
    weight_g: float
    price: str


def _plates_field(text: str) -> tuple[int, ...]:
    """``Plate``: one plate, a list (``4,5`` / ``4;5`` / ``[4, 5]``) or a range (``4-6``); ``-1`` = none."""
    s = text.strip().strip("[]()")
    if s in ("", "-1"):
        return ()
    out: list[int] = []
    for part in re.split(r"[,;/\s]+", s):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            out.extend(range(min(a, b), max(a, b) + 1))
        elif re.fullmatch(r"\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"bad plate list {text!r}")
    return tuple(sorted(set(out)))


def read_products(path: Path) -> list[ProductRow]:
    """The catalogue/planogram CSV (``Name,Gondola,Shelf,Plate,Weight,Price,Image``)."""
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"Name", "Gondola", "Shelf", "Plate", "Weight", "Price"}
        if not need <= set(reader.fieldnames or []):
            raise ConfigError(path, "<header>", f"expected columns {sorted(need)}, got {reader.fieldnames}")
        for line, r in enumerate(reader, start=2):
            try:
                rows.append(ProductRow(r["Name"].strip(), int(r["Gondola"]), int(r["Shelf"]),
                                       _plates_field(r["Plate"]), float(r["Weight"]), r["Price"].strip()))
            except ValueError as exc:
                raise ConfigError(path, f"line {line}", str(exc)) from None
    return rows


def sku_of(name: str) -> str:
    """A store id from a product name: lower case, runs of other characters as ``-``, at most 64 long."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (s or "product")[:64].rstrip("-")


def price_cents(text: str) -> int:
    value = float(text)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"bad price {text!r}")
    return round(value * 100)


# ---------------------------------------------------------------------------------------------- building
def _plate_box(plate: Plate, origin: np.ndarray) -> Box:
    c = plate.corners - origin
    ex = c[1] - c[0]
    yaw = float(np.degrees(np.arctan2(ex[1], ex[0])))
    yaw = (yaw + 180.0) % 360.0 - 180.0
    centre = c.mean(axis=0)
    a = np.radians(yaw)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])   # world -> box axes
    local = (c[:, :2] - centre[:2]) @ rot.T
    half = np.abs(local).max(axis=0)
    quarter_turns = round(yaw / 90.0)
    if abs(yaw - 90.0 * quarter_turns) < 0.01:       # a multiple of 90 degrees: an axis-aligned box
        yaw = 0.0
        if quarter_turns % 2:
            half = half[::-1]
    zc = centre[2] + plate.height / 2
    lo = [centre[0] - half[0], centre[1] - half[1], zc - plate.height / 2]
    hi = [centre[0] + half[0], centre[1] + half[1], zc + plate.height / 2]
    snapped = round(yaw, 6)
    return Box(min=tuple(round(v, 6) for v in lo), max=tuple(round(v, 6) for v in hi),
               yaw_deg=0.0 if abs(snapped) < 1e-6 else snapped)


def build_store(realdata: Path, products_csv: Path, store_id: str = "aifi-nanostore",
                image_size: tuple[int, int] = (640, 360),
                gate: tuple[float, float, float, float] | None = None,
                exit_region: tuple[float, float, float, float] | None = None,
                ) -> tuple[dict, dict[str, Camera]]:
    """The store description (as a dict, ready for YAML) and its cameras (posed in the store frame).

    ``gate`` and ``exit_region`` are floor rectangles (x0, y0, x1, y1) in the store frame; the dataset has
    none, so by default both are the floor just inside the glass door at the TV end of the aisle."""
    meta = realdata / "store_meta"
    x0, y0, x1, y1 = world_bounds(meta)
    origin = np.array([x0, y0, 0.0])
    plates = read_plates(meta)
    rows = read_products(products_csv)

    # catalogue: one product per name, keeping a row with a positive weight (placed rows first)
    catalogue: dict[str, dict] = {}
    sku_by_name: dict[str, str] = {}
    used_skus: set[str] = set()
    dropped = set()
    for r in sorted(rows, key=lambda r: (r.gondola < 0, r.name)):
        if r.name in sku_by_name or r.weight_g <= 0:
            if r.weight_g <= 0 and r.name not in sku_by_name:
                dropped.add(r.name)
            continue
        sku = sku_of(r.name)
        base, n = sku, 2
        while sku in used_skus:
            suffix = f"-{n}"
            sku = base[:64 - len(suffix)] + suffix
            n += 1
        used_skus.add(sku)
        sku_by_name[r.name] = sku
        dropped.discard(r.name)
        catalogue[sku] = {"sku": sku, "name": r.name[:200], "price": price_cents(r.price),
                          "weight_g": round(r.weight_g, 3)}
    if dropped:
        log.info("left out of the catalogue (zero weight): %s", sorted(dropped))

    planogram: dict[tuple[int, int, int], str] = {}
    for r in rows:
        if r.gondola < 0 or r.name not in sku_by_name:
            continue
        for k in r.plates:
            key = (r.gondola, r.shelf, k)
            if key in planogram and planogram[key] != sku_by_name[r.name]:
                log.warning("plate %s planned for two products; keeping %s", key, planogram[key])
                continue
            planogram[key] = sku_by_name[r.name]
    known_plates = {p.key for p in plates}
    for key in sorted(set(planogram) - known_plates):
        log.warning("planogram names plate %s which store_meta does not have", key)

    units = []
    for g in sorted({p.gondola for p in plates}):
        shelves = []
        for s in sorted({p.shelf for p in plates if p.gondola == g}):
            lanes = []
            for p in (p for p in plates if p.gondola == g and p.shelf == s):
                lane = {"id": f"g{g}-s{s}-p{p.plate}",
                        "load_cells": [f"gondola_{g}_shelf_{s}_plate_{p.plate}"],
                        "box": _plate_box(p, origin).model_dump(mode="json")}
                sku = planogram.get(p.key)
                if sku is not None:
                    lane["sku"] = sku
                lanes.append(lane)
            shelves.append({"id": f"g{g}-s{s}", "lanes": lanes})
        units.append({"id": f"gondola-{g}", "shelves": shelves})

    size = (round(x1 - x0, 4), round(y1 - y0, 4))
    door = (round(-0.5 - x0, 3), round(-1.5 - y0, 3), round(0.5 - x0, 3), round(-0.5 - y0, 3))
    g_reg = gate or door
    e_reg = exit_region or door
    cameras = read_cameras(meta, image_size, origin)
    data = {
        "store": {"id": store_id, "name": "AiFi NanoStore (CPS-IoT Week 2020 AutoCheckout)",
                  "currency": "USD",
                  "size": list(size), "ceiling_m": 2.7},
        "catalogue": list(catalogue.values()),
        "shelf_units": units,
        "gates": [{"id": "door", "region": {"min": list(g_reg[:2]), "max": list(g_reg[2:])}}],
        "exits": [{"id": "door", "region": {"min": list(e_reg[:2]), "max": list(e_reg[2:])}}],
        "cameras": [{"id": cam.id, "file": f"cameras/{cam.id}.yaml"}
                    for cam in sorted(cameras.values(), key=lambda c: _camera_order(c.id))],
    }
    return data, cameras


def _camera_order(camera_id: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", camera_id)
    return (int(digits) if digits else 10**6, camera_id)


def write_store(data: dict, cameras: dict[str, Camera], out_dir: Path) -> Store:
    """Validate, then write ``store.yaml`` and ``cameras/*.yaml`` under ``out_dir``; returns the loaded store.
    Nothing is written when validation fails."""
    path = out_dir / "store.yaml"
    store_from_dict(data, path)                     # structure and relations, before anything is written
    (out_dir / "cameras").mkdir(parents=True, exist_ok=True)
    for cam in cameras.values():
        cam.meta.setdefault("calibrated_at", DATASET_MONTH)
        cam.save(out_dir / "cameras" / f"{cam.id}.yaml")
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=None))
    return store_from_dict(data, path, out_dir)     # now with the camera files there to check


# ---------------------------------------------------------------------------------------------- overlay
def plate_quads(store: Store) -> list[tuple[str, int, np.ndarray]]:
    """(lane id, gondola number, the lane's floor-of-box rectangle (4, 3)) for every lane."""
    out = []
    for unit_id, _shelf, lane in store.iter_lanes():
        c = lane.box.corners()            # order: x -/+ outer, y -/+, z -/+ inner
        bottom = c[[0, 2, 6, 4]]          # z-min face, in order around the rectangle
        gondola = int(re.sub(r"\D", "", unit_id) or 0)
        out.append((lane.id, gondola, bottom))
    return out


def draw_plates(image: np.ndarray, camera: Camera, quads: list[tuple[str, int, np.ndarray]],
                alpha: float = 0.4) -> tuple[np.ndarray, int]:
    """Fill every plate's rectangle seen by ``camera`` (edges densified so the lens bends them), coloured by
    gondola; returns the image and how many plates were drawn."""
    fill = image.copy()
    edges = image.copy()
    drawn = 0
    if not quads:
        return image.copy(), 0
    t = np.linspace(0, 1, 6)[:-1]
    corners = np.stack([q for _, _, q in quads])                                    # (P, 4, 3)
    dense = (corners[:, :, None, :] + (np.roll(corners, -1, axis=1) - corners)[:, :, None, :]
             * t[None, None, :, None]).reshape(len(quads), -1, 3)                   # (P, 20, 3)
    flat = dense.reshape(-1, 3)
    uv, ok = camera.project(flat)
    Xc = camera.to_camera(flat)
    uv = uv.reshape(len(quads), -1, 2)
    ok = ok.reshape(len(quads), -1)
    z = Xc[:, 2].reshape(len(quads), -1)
    r = (np.hypot(Xc[:, 0], Xc[:, 1]) / np.maximum(Xc[:, 2], 1e-9)).reshape(len(quads), -1)
    usable = (z > 0.05).all(axis=1) & ok.any(axis=1) & (r < camera._r_max).all(axis=1)
    for k in np.nonzero(usable)[0]:
        pts = np.round((uv[k] - 0.5) * 16).astype(np.int32)
        color = GONDOLA_COLORS.get(quads[k][1], (255, 255, 255))
        cv2.fillPoly(fill, [pts], color, cv2.LINE_AA, 4)
        cv2.polylines(edges, [pts], True, color, 1, cv2.LINE_AA, 4)
        drawn += 1
    out = cv2.addWeighted(fill, alpha, image, 1 - alpha, 0)
    mask = np.any(edges != image, axis=2)
    out[mask] = edges[mask]
    return out, drawn


def check_frames(realdata: Path, cameras: dict[str, Camera], frames: dict[str, str]) -> dict[str, Camera]:
    """Check a frame -> camera map before anything is drawn or written; returns cameras by dataset id."""
    by_dataset_id = {re.sub(r"^aifi-cam", "", c.id): c for c in cameras.values()}
    for name, cid in frames.items():
        if cid not in by_dataset_id:
            raise ValueError(f"frame {name}: no camera {cid!r} in calibration.json "
                             f"(there are {', '.join(sorted(by_dataset_id, key=_camera_order))})")
        if not (realdata / "camera_frames" / f"{name}.png").is_file():
            raise FileNotFoundError(f"frame {name}: {realdata / 'camera_frames' / (name + '.png')} not found")
    return by_dataset_id


def overlay_frames(realdata: Path, store: Store, cameras: dict[str, Camera],
                   frames: dict[str, str] | None = None, tile: tuple[int, int] = (480, 270),
                   columns: int = 2) -> tuple[np.ndarray, dict[str, int]]:
    """The plates drawn into the real camera frames, tiled (frame name -> dataset camera id in ``frames``,
    default :data:`FRAME_CAMERAS`); returns the image and the number of plates drawn per frame."""
    frames = frames or FRAME_CAMERAS
    by_dataset_id = check_frames(realdata, cameras, frames)
    quads = plate_quads(store)
    tiles, counts = [], {}
    for name, cid in frames.items():
        path = realdata / "camera_frames" / f"{name}.png"
        image = cv2.imread(str(path))
        if image is None:
            raise FileNotFoundError(f"cannot read {path}")
        cam = by_dataset_id[cid]
        if (image.shape[1], image.shape[0]) != cam.size:
            raise ValueError(f"{path}: {image.shape[1]}x{image.shape[0]}, camera {cam.id} is "
                             f"{cam.width}x{cam.height}")
        drawn, n = draw_plates(image, cam, quads)
        counts[name] = n
        small = cv2.resize(drawn, tile, interpolation=cv2.INTER_AREA)
        label = f"{name}.png = camera {cid}: {n} plates"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        box = small[4:12 + th, 4:12 + tw]
        box[:] = (box * 0.35).astype(np.uint8)
        cv2.putText(small, label, (8, 8 + th), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(small)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    grid = np.vstack(rows)
    note = ("AiFi NanoStore (CPS-IoT Week 2020 AutoCheckout) frames; plates from store_meta, colour = "
            "gondola 1 red, 2 green, 3 blue, 4 yellow, 5 magenta")
    bar = np.full((24, grid.shape[1], 3), 30, np.uint8)
    cv2.putText(bar, note, (8, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (230, 230, 230), 1, cv2.LINE_AA)
    return np.vstack([grid, bar]), counts


__all__ = ["DATASET_MONTH", "FRAME_CAMERAS", "INCH", "Plate", "ProductRow", "build_store", "check_frames",
           "draw_plates", "overlay_frames", "plate_quads", "price_cents", "read_cameras", "read_plates",
           "read_products", "sku_of", "world_bounds", "write_store"]

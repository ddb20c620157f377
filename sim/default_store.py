"""The default simulated store, generated deterministically: ``python -m sim.default_store [DIR]`` writes
``store.yaml``, ``cameras/*.yaml`` and ``markers.yaml`` (committed under ``sim/stores/default/``).

A 12 m x 9 m convenience store: an entry gate at the bottom left, an exit at the bottom right, five shelf units
(two along the back wall, a double-sided island in the middle, one along the right wall) of 4-5 shelves, each
shelf a row of 0.3 m lanes on their own load cells, 56 products (some spanning several lanes, some pairs of
different products with nearly the same unit weight on neighbouring lanes), and six ceiling cameras at
3.0-3.3 m (four tilted pinhole cameras in the corners and two fisheye cameras looking straight down) placed so
every point of the walkable floor is seen by at least two cameras at the floor and at head height.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import yaml

from calibration.camera import Camera
from calibration.markers import FloorMarker, MarkerLayout, grid_layout, save_layout

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent / "stores" / "default"
STORE_ID = "sim-store-1"
SIZE = (12.0, 9.0)
CEILING = 3.4
LANE_W = 0.30
UNIT_DEPTH = 0.50
SHELF_LEVELS = {5: (0.12, 0.50, 0.88, 1.26, 1.62), 4: (0.15, 0.60, 1.05, 1.50)}
ITEM_HEIGHT = 0.28

# sku, name, price (cents), unit weight (g), weight spread (g)
CATALOGUE: list[tuple[str, str, int, float, float]] = [
    # drinks
    ("DRK-FIJI-500", "FIJI Water 500 ml", 249, 538.0, 3.0),
    ("DRK-DASANI-591", "Dasani Water 591 ml", 199, 610.0, 3.5),
    ("DRK-COKE-355", "Coca-Cola Classic 355 ml can", 149, 368.0, 2.0),
    ("DRK-SPRITE-355", "Sprite 355 ml can", 149, 370.5, 2.0),
    ("DRK-DIETCOKE-355", "Diet Coke 355 ml can", 149, 356.0, 2.0),
    ("DRK-REDBULL-250", "Red Bull Energy Drink 250 ml", 299, 275.0, 1.5),
    ("DRK-MONSTER-473", "Monster Energy 473 ml", 329, 515.0, 3.0),
    ("DRK-GATORADE-591", "Gatorade Cool Blue 591 ml", 229, 650.0, 4.0),
    ("DRK-POWERADE-591", "Powerade Mountain Berry 591 ml", 219, 652.0, 4.0),
    ("DRK-FRAP-281", "Starbucks Frappuccino Mocha 281 ml", 349, 405.0, 3.0),
    ("DRK-PURELEAF-547", "Pure Leaf Sweet Tea 547 ml", 249, 590.0, 3.5),
    ("DRK-TROP-340", "Tropicana Orange Juice 340 ml", 299, 385.0, 3.0),
    # snacks
    ("SNK-LAYS-28", "Lay's Classic 28 g", 179, 33.0, 1.0),
    ("SNK-DORITOS-28", "Doritos Nacho Cheese 28 g", 179, 33.8, 1.0),
    ("SNK-CHEETOS-35", "Cheetos Crunchy 35 g", 179, 40.0, 1.2),
    ("SNK-PRINGLES-OR", "Pringles Original 158 g", 349, 196.0, 2.0),
    ("SNK-PRINGLES-SC", "Pringles Sour Cream & Onion 158 g", 349, 197.5, 2.0),
    ("SNK-KIND-DC", "KIND Dark Chocolate Nuts & Sea Salt", 229, 45.0, 1.0),
    ("SNK-NATVAL-OH", "Nature Valley Oats 'n Honey 2-bar", 149, 46.5, 1.0),
    ("SNK-CLIF-CC", "Clif Bar Chocolate Chip", 199, 73.0, 1.5),
    ("SNK-PLANTERS-49", "Planters Salted Peanuts 49 g", 169, 55.0, 1.2),
    ("SNK-POPCORNERS", "PopCorners Sea Salt 142 g", 449, 152.0, 2.0),
    ("SNK-SMARTFOOD", "Smartfood White Cheddar Popcorn 28 g", 179, 32.0, 1.0),
    ("SNK-GOLDFISH", "Goldfish Cheddar 187 g", 399, 205.0, 2.5),
    # candy
    ("CND-SNICKERS", "Snickers 52.7 g", 159, 57.0, 0.8),
    ("CND-TWIX", "Twix 50.7 g", 159, 55.0, 0.8),
    ("CND-MMS-PNUT", "M&M's Peanut 49.3 g", 159, 53.5, 0.8),
    ("CND-REESES", "Reese's Peanut Butter Cups 42 g", 159, 46.0, 0.7),
    ("CND-KITKAT", "KitKat 42 g", 159, 46.8, 0.7),
    ("CND-SKITTLES", "Skittles Original 61.5 g", 159, 65.0, 0.9),
    ("CND-HERSHEY", "Hershey's Milk Chocolate 43 g", 149, 47.0, 0.7),
    ("CND-HARIBO", "Haribo Goldbears 142 g", 249, 148.0, 1.5),
    ("CND-TRIDENT", "Trident Spearmint Gum 14 ct", 179, 30.0, 0.6),
    ("CND-ALTOIDS", "Altoids Peppermint 50 g", 299, 62.0, 0.8),
    # household and personal care
    ("HH-ADVIL-24", "Advil Tablets 24 ct", 899, 40.0, 0.8),
    ("HH-TYLENOL-24", "Tylenol Extra Strength 24 ct", 849, 45.0, 0.8),
    ("HH-COLGATE-96", "Colgate Total Toothpaste 96 g", 499, 125.0, 1.5),
    ("HH-CREST-96", "Crest Pro-Health Toothpaste 96 g", 479, 123.5, 1.5),
    ("HH-KLEENEX-3", "Kleenex Pocket Packs 3 ct", 249, 60.0, 1.0),
    ("HH-DURACELL-AA4", "Duracell AA Batteries 4-pack", 699, 105.0, 1.2),
    ("HH-ENERGIZER-AA4", "Energizer AA Batteries 4-pack", 679, 103.5, 1.2),
    ("HH-PURELL-59", "Purell Hand Sanitizer 59 ml", 299, 70.0, 1.0),
    ("HH-CHAPSTICK", "ChapStick Classic Original", 249, 12.0, 0.4),
    ("HH-BANDAID-30", "Band-Aid Flexible Fabric 30 ct", 549, 75.0, 1.2),
    # fresh
    ("FR-CHOBANI-STR", "Chobani Greek Yogurt Strawberry 150 g", 199, 168.0, 2.0),
    ("FR-CHOBANI-BLU", "Chobani Greek Yogurt Blueberry 150 g", 199, 169.2, 2.0),
    ("FR-SAND-TURKEY", "Turkey & Swiss Sandwich", 699, 245.0, 6.0),
    ("FR-SAND-HAM", "Ham & Cheddar Sandwich", 649, 240.0, 6.0),
    ("FR-CAESAR", "Chicken Caesar Salad Bowl", 799, 310.0, 8.0),
    ("FR-FAIRLIFE-CH", "Fairlife Chocolate Milk 340 ml", 329, 380.0, 3.0),
    ("FR-BABYBEL-6", "Babybel Original 6-pack", 449, 130.0, 1.5),
    ("FR-EGGS-2", "Hard-Boiled Eggs 2-pack", 229, 110.0, 4.0),
    ("FR-SUSHI-CAL", "California Roll 8 pc", 899, 220.0, 7.0),
    ("FR-MANGO-CUP", "Mango Fruit Cup", 399, 200.0, 5.0),
    ("FR-BANANA", "Banana (each)", 39, 120.0, 15.0),
    ("FR-APPLE-GALA", "Gala Apple (each)", 99, 180.0, 22.0),
]

# Planograms: per unit, shelves bottom to top, each a list of (sku, lanes) filling 7 lanes left to right.
PLANOGRAM: dict[str, list[list[tuple[str, int]]]] = {
    "U1": [  # drinks, back wall left
        [("DRK-DASANI-591", 3), ("DRK-FIJI-500", 2), ("DRK-PURELEAF-547", 2)],
        [("DRK-GATORADE-591", 2), ("DRK-POWERADE-591", 2), ("DRK-MONSTER-473", 3)],
        [("DRK-COKE-355", 2), ("DRK-SPRITE-355", 2), ("DRK-DIETCOKE-355", 2), ("DRK-REDBULL-250", 1)],
        [("DRK-FRAP-281", 2), ("DRK-TROP-340", 2), ("DRK-REDBULL-250", 2), ("DRK-FIJI-500", 1)],
        [("DRK-COKE-355", 1), ("DRK-SPRITE-355", 1), ("DRK-FRAP-281", 2), ("DRK-TROP-340", 1), ("DRK-MONSTER-473", 2)],
    ],
    "U2": [  # snacks, back wall right
        [("SNK-GOLDFISH", 3), ("SNK-POPCORNERS", 2), ("SNK-PRINGLES-OR", 2)],
        [("SNK-PRINGLES-OR", 2), ("SNK-PRINGLES-SC", 2), ("SNK-POPCORNERS", 1), ("SNK-CLIF-CC", 2)],
        [("SNK-LAYS-28", 2), ("SNK-DORITOS-28", 2), ("SNK-CHEETOS-35", 2), ("SNK-SMARTFOOD", 1)],
        [("SNK-KIND-DC", 2), ("SNK-NATVAL-OH", 2), ("SNK-PLANTERS-49", 2), ("SNK-CLIF-CC", 1)],
        [("SNK-SMARTFOOD", 2), ("SNK-LAYS-28", 1), ("SNK-DORITOS-28", 1), ("SNK-PLANTERS-49", 1),
         ("SNK-KIND-DC", 2)],
    ],
    "U3": [  # candy, island front (faces the entrance)
        [("CND-HARIBO", 3), ("CND-SKITTLES", 2), ("CND-ALTOIDS", 2)],
        [("CND-SNICKERS", 2), ("CND-TWIX", 1), ("CND-MMS-PNUT", 1), ("CND-HERSHEY", 2), ("CND-TRIDENT", 1)],
        [("CND-REESES", 2), ("CND-KITKAT", 2), ("CND-SKITTLES", 1), ("CND-SNICKERS", 2)],
        [("CND-TRIDENT", 2), ("CND-ALTOIDS", 1), ("CND-TWIX", 2), ("CND-MMS-PNUT", 2)],
    ],
    "U4": [  # household, island back
        [("HH-KLEENEX-3", 3), ("HH-PURELL-59", 2), ("HH-BANDAID-30", 2)],
        [("HH-COLGATE-96", 2), ("HH-CREST-96", 2), ("HH-BANDAID-30", 1), ("HH-KLEENEX-3", 2)],
        [("HH-DURACELL-AA4", 2), ("HH-ENERGIZER-AA4", 2), ("HH-PURELL-59", 1), ("HH-CHAPSTICK", 2)],
        [("HH-ADVIL-24", 2), ("HH-TYLENOL-24", 2), ("HH-CHAPSTICK", 1), ("HH-DURACELL-AA4", 2)],
    ],
    "U5": [  # fresh, right wall
        [("FR-APPLE-GALA", 3), ("FR-BANANA", 2), ("FR-MANGO-CUP", 2)],
        [("FR-FAIRLIFE-CH", 2), ("FR-CAESAR", 2), ("FR-EGGS-2", 1), ("FR-MANGO-CUP", 2)],
        [("FR-SAND-TURKEY", 2), ("FR-SAND-HAM", 2), ("FR-SUSHI-CAL", 2), ("FR-EGGS-2", 1)],
        [("FR-CHOBANI-STR", 2), ("FR-CHOBANI-BLU", 2), ("FR-BABYBEL-6", 2), ("FR-FAIRLIFE-CH", 1)],
        [("FR-BABYBEL-6", 1), ("FR-CHOBANI-STR", 1), ("FR-CHOBANI-BLU", 1), ("FR-SAND-TURKEY", 2),
         ("FR-SUSHI-CAL", 2)],
    ],
}

# Unit geometry: (unit id, x0, y0, direction of the row of lanes left to right, front normal (towards the
# shopper)).  The unit occupies LANE_W * 7 along the row and UNIT_DEPTH behind the front face.
UNITS: list[tuple[str, tuple[float, float], tuple[int, int], tuple[int, int]]] = [
    # id, front-left corner (x, y), row direction, front normal
    ("U1", (1.20, 8.35), (1, 0), (0, -1)),   # back wall, faces -y; left is -x for a shopper facing +y
    ("U2", (5.70, 8.35), (1, 0), (0, -1)),
    ("U3", (3.40, 4.00), (1, 0), (0, -1)),   # island front, faces the entrance side
    ("U4", (5.50, 5.00), (-1, 0), (0, 1)),   # island back, faces the back wall
    ("U5", (11.40, 6.30), (0, -1), (-1, 0)),  # right wall, faces -x; left is +y for a shopper facing +x
]

GATE = {"id": "gate-1", "region": {"min": [0.60, 0.0], "max": [2.20, 0.80]}}
EXIT = {"id": "exit-1", "region": {"min": [9.60, 0.0], "max": [11.20, 0.80]}}

# Cameras: id, model, position, look-at target, horizontal field of view (pinhole) or f (fisheye px at 640)
CAMERAS: list[dict] = [
    {"id": "cam1", "model": "pinhole", "pos": (0.35, 0.35, 3.20), "target": (3.1, 2.9, 0.0), "hfov": 104.0,
     "dist": [-0.18, 0.03, 0.0, 0.0, 0.0]},
    {"id": "cam2", "model": "pinhole", "pos": (11.65, 0.35, 3.10), "target": (8.9, 2.9, 0.0), "hfov": 104.0,
     "dist": [-0.18, 0.03, 0.0, 0.0, 0.0]},
    {"id": "cam3", "model": "pinhole", "pos": (11.65, 8.65, 3.30), "target": (9.6, 6.6, 0.0), "hfov": 104.0,
     "dist": [-0.18, 0.03, 0.0, 0.0, 0.0]},
    {"id": "cam4", "model": "pinhole", "pos": (0.35, 8.65, 3.00), "target": (3.1, 6.1, 0.0), "hfov": 104.0,
     "dist": [-0.18, 0.03, 0.0, 0.0, 0.0]},
    {"id": "cam5", "model": "fisheye", "pos": (3.6, 4.5, 3.25), "target": (3.6, 4.5, 0.0), "corner_deg": 82.0,
     "dist": [0.02, -0.01, 0.003, -0.0005]},
    {"id": "cam6", "model": "fisheye", "pos": (9.0, 5.0, 3.25), "target": (9.0, 5.0, 0.0), "corner_deg": 82.0,
     "dist": [0.02, -0.01, 0.003, -0.0005]},
]
IMAGE_SIZE = (640, 480)


def _lane_rows() -> list[dict]:
    """Shelf units as store-description mappings."""
    units = []
    for uid, (x0, y0), row, normal in UNITS:
        shelves_spec = PLANOGRAM[uid]
        levels = SHELF_LEVELS[len(shelves_spec)]
        r = np.array(row, float)
        n = np.array(normal, float)
        origin = np.array([x0, y0])
        shelves = []
        for si, (spec, z0) in enumerate(zip(shelves_spec, levels, strict=True)):
            lanes = []
            k = 0
            for sku, count in spec:
                for _ in range(count):
                    a = origin + r * (k * LANE_W + 0.005)
                    b = origin + r * ((k + 1) * LANE_W - 0.005) - n * UNIT_DEPTH
                    lo, hi = np.minimum(a, b), np.maximum(a, b)
                    lanes.append({
                        "id": f"{uid}-S{si + 1}-L{k + 1}",
                        "sku": sku,
                        "capacity": 10 if sku.startswith(("DRK", "FR-SAND", "FR-CAESAR", "FR-APPLE")) else 14,
                        "box": {"min": [round(float(lo[0]), 3), round(float(lo[1]), 3), round(z0 + 0.02, 3)],
                                "max": [round(float(hi[0]), 3), round(float(hi[1]), 3),
                                        round(z0 + 0.02 + ITEM_HEIGHT, 3)]},
                    })
                    k += 1
            if k != 7:
                raise ValueError(f"{uid} shelf {si + 1} has {k} lanes, expected 7")
            shelves.append({"id": f"{uid}-S{si + 1}", "lanes": lanes})
        units.append({"id": uid, "shelves": shelves})
    return units


def store_dict() -> dict:
    return {
        "store": {"id": STORE_ID, "name": "walkout simulated store", "currency": "USD", "size": list(SIZE),
                  "ceiling_m": CEILING},
        "catalogue": [{"sku": s, "name": n, "price": p, "weight_g": w, "weight_sd_g": sd}
                      for s, n, p, w, sd in CATALOGUE],
        "shelf_units": _lane_rows(),
        "gates": [GATE],
        "exits": [EXIT],
        "cameras": [{"id": c["id"], "file": f"cameras/{c['id']}.yaml"} for c in CAMERAS],
    }


def make_camera(spec: dict, size: tuple[int, int] = IMAGE_SIZE) -> Camera:
    """A camera from a spec of :data:`CAMERAS` at image ``size`` (intrinsics scale with the width)."""
    w, h = size
    if spec["model"] == "pinhole":
        f = (w / 2) / np.tan(np.radians(spec["hfov"] / 2))
        up = (0.0, 0.0, 1.0)
    else:
        corner = np.hypot(w / 2, h / 2)
        th = np.radians(spec["corner_deg"])
        k1, k2, k3, k4 = spec["dist"]
        thd = th * (1 + k1 * th**2 + k2 * th**4 + k3 * th**6 + k4 * th**8)
        f = corner / thd
        up = (1.0, 0.0, 0.0)  # looking straight down: image up is +x... any horizontal vector works
    K = [[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]]
    cam = Camera.look_at(spec["id"], spec["model"], (w, h), K, spec["dist"], spec["pos"], spec["target"],
                         up=up if spec["model"] == "fisheye" else (0.0, 0.0, 1.0))
    cam.meta = {"calibrated_at": "2026-01-01", "rms_px": None, "extrinsic_rms_px": None, "floor_error_cm": None}
    return cam


def footprints(store_data: dict) -> list[tuple[float, float, float, float]]:
    """Floor rectangles (x0, y0, x1, y1) of the shelf units (from their lane boxes)."""
    out = []
    for unit in store_data["shelf_units"]:
        boxes = [ln["box"] for s in unit["shelves"] for ln in s["lanes"]]
        out.append((min(b["min"][0] for b in boxes), min(b["min"][1] for b in boxes),
                    max(b["max"][0] for b in boxes), max(b["max"][1] for b in boxes)))
    return out


def marker_layout(store_data: dict) -> MarkerLayout:
    """A 1.5 m grid of 0.3 m floor markers, leaving out those under or against a shelf unit or in a doorway."""
    grid = grid_layout(SIZE, spacing=1.5, marker_size=0.30, margin=0.75)
    keep = []
    blocked = footprints(store_data) + [
        (GATE["region"]["min"][0], 0.0, GATE["region"]["max"][0], GATE["region"]["max"][1]),
        (EXIT["region"]["min"][0], 0.0, EXIT["region"]["max"][0], EXIT["region"]["max"][1]),
    ]
    for m in grid.markers:
        x, y = m.center
        if any(x0 - 0.35 < x < x1 + 0.35 and y0 - 0.35 < y < y1 + 0.35 for x0, y0, x1, y1 in blocked):
            continue
        keep.append(FloorMarker(id=len(keep), center=(x, y), size=m.size))
    return MarkerLayout(markers=keep)


def write(out_dir: str | Path = DEFAULT_DIR) -> Path:
    """Write the default store into ``out_dir``; returns the store file's path."""
    out = Path(out_dir)
    (out / "cameras").mkdir(parents=True, exist_ok=True)
    data = store_dict()
    path = out / "store.yaml"
    header = "# Generated by `python -m sim.default_store`; edit sim/default_store.py, not this file.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))
    for spec in CAMERAS:
        make_camera(spec).save(out / "cameras" / f"{spec['id']}.yaml")
    save_layout(marker_layout(data), out / "markers.yaml")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="write the default simulated store")
    p.add_argument("out", nargs="?", default=str(DEFAULT_DIR))
    args = p.parse_args(argv)
    print(write(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

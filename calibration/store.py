"""The store description: one YAML file with the store's id, catalogue, shelf units, shelves, lanes, gates,
exits and cameras.

Structure is checked by the pydantic models (``extra="forbid"``); relations between fields (an unknown SKU on
a lane, overlapping lanes, a missing camera file, ...) by the small named checks in ``CHECKS``.  Every error
names the file, the field path and the reason (:class:`calibration.config.ConfigError`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from calibration.config import ConfigError, load_model, read_yaml, validate

Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
Metres = Annotated[float, Field(ge=-1000.0, le=1000.0, allow_inf_nan=False)]
Vec2 = tuple[Metres, Metres]
Vec3 = tuple[Metres, Metres, Metres]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Product(_Model):
    sku: Ident = Field(title="SKU", description="Stock-keeping unit id, unique in the catalogue")
    name: str = Field(title="Name", max_length=200, description="Name printed on the receipt")
    price: int = Field(title="Price", ge=0, le=10**9, description="Unit price in integer minor units (cents)")
    weight_g: float = Field(title="Unit weight", gt=0, le=100_000, description="Mean unit weight in grams")
    weight_sd_g: float = Field(
        2.0, title="Weight spread", ge=0, le=10_000, description="Standard deviation of the unit weight, grams"
    )


class Box(_Model):
    """A box in the store frame: axis-aligned between ``min`` and ``max``, then turned by ``yaw_deg`` about
    the vertical axis through its centre."""

    min: Vec3 = Field(title="Lower corner", description="x, y, z in metres before rotation")
    max: Vec3 = Field(title="Upper corner", description="x, y, z in metres before rotation")
    yaw_deg: float = Field(0.0, title="Yaw", ge=-360, le=360, description="Rotation about z, degrees")

    @field_validator("max")
    @classmethod
    def _ordered(cls, v: tuple[float, float, float], info) -> tuple[float, float, float]:
        lo = info.data.get("min")
        if lo is not None and any(b <= a for a, b in zip(lo, v, strict=True)):
            raise ValueError("max must be greater than min on every axis")
        return v

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.min) + np.asarray(self.max)) / 2

    @property
    def half_size(self) -> np.ndarray:
        return (np.asarray(self.max) - np.asarray(self.min)) / 2

    def corners(self) -> np.ndarray:
        """The 8 corners, shape (8, 3), in the store frame."""
        h = self.half_size
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        local = signs * h
        c, s = np.cos(np.radians(self.yaw_deg)), np.sin(np.radians(self.yaw_deg))
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        return local @ rot.T + self.center


class Region(_Model):
    """A floor rectangle (gate, exit) between ``min`` and ``max`` (x, y in metres)."""

    min: Vec2
    max: Vec2

    @field_validator("max")
    @classmethod
    def _ordered(cls, v: tuple[float, float], info) -> tuple[float, float]:
        lo = info.data.get("min")
        if lo is not None and any(b <= a for a, b in zip(lo, v, strict=True)):
            raise ValueError("max must be greater than min on both axes")
        return v

    def contains(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, float).reshape(-1, 2)
        return np.all((xy >= self.min) & (xy <= self.max), axis=1)


class Lane(_Model):
    id: Ident = Field(title="Lane id", description="Unique in the store")
    load_cells: list[Ident] = Field(
        default_factory=list, title="Load cells", max_length=16,
        description="Load-cell ids summed for this lane; empty means one cell named like the lane",
    )
    box: Box = Field(title="Lane box", description="The volume the lane's goods occupy, store frame")
    sku: Ident | None = Field(None, title="SKU", description="Product the planogram puts here; none if empty")
    capacity: int = Field(12, title="Capacity", ge=0, le=10_000, description="Items the lane holds when full")

    @property
    def cells(self) -> list[str]:
        return list(self.load_cells) or [self.id]


class Shelf(_Model):
    id: Ident = Field(title="Shelf id", description="Unique in the store; the shelf gateway's topic id")
    lanes: list[Lane] = Field(title="Lanes", min_length=1, max_length=256, description="Left to right")


class ShelfUnit(_Model):
    id: Ident = Field(title="Shelf unit id", description="A gondola or fixture")
    shelves: list[Shelf] = Field(title="Shelves", min_length=1, max_length=32, description="Bottom to top")


class Gate(_Model):
    id: Ident = Field(title="Gate id")
    region: Region = Field(title="Gate region", description="Floor area a shopper crosses when entering")


class Exit(_Model):
    id: Ident = Field(title="Exit id")
    region: Region = Field(title="Exit region", description="Floor area that ends a shopper's visit")


class CameraRef(_Model):
    id: Ident = Field(title="Camera id")
    file: str = Field(title="Calibration file", min_length=1, max_length=500,
                      description="Camera calibration YAML, relative to the store file")


class EntryCodes(_Model):
    secret_env: Ident = Field("WALKOUT_ENTRY_SECRET", title="Secret variable",
                              description="Environment variable holding the shared HMAC secret")
    secret_file: str | None = Field(None, title="Secret file", description="File holding the secret instead")
    ttl_s: float = Field(60.0, title="Code lifetime", gt=0, le=60.0, description="Seconds a code stays valid")


class StoreInfo(_Model):
    id: Ident = Field(title="Store id", description="Appears in every topic")
    name: str = Field("", title="Name", max_length=200)
    currency: str = Field("USD", title="Currency", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    size: Vec2 = Field(title="Floor size", description="Extent of the floor in x and y, metres from the origin")
    ceiling_m: float = Field(3.2, title="Ceiling height", gt=1.5, le=20)


class Store(_Model):
    """A whole store description.  ``base_dir`` (not in the file) is the folder camera files are relative to."""

    store: StoreInfo
    catalogue: list[Product] = Field(title="Catalogue", min_length=1, max_length=100_000)
    shelf_units: list[ShelfUnit] = Field(title="Shelf units", min_length=1, max_length=1000)
    gates: list[Gate] = Field(title="Entry gates", min_length=1, max_length=16)
    exits: list[Exit] = Field(title="Exits", min_length=1, max_length=16)
    cameras: list[CameraRef] = Field(default_factory=list, title="Cameras", max_length=512)
    entry_codes: EntryCodes = Field(default_factory=EntryCodes, title="Entry codes")
    _base_dir: Path | None = PrivateAttr(None)

    # ---- derived lookups (not part of the file)
    @cached_property
    def products(self) -> dict[str, Product]:
        return {p.sku: p for p in self.catalogue}

    @cached_property
    def shelves(self) -> dict[str, Shelf]:
        return {s.id: s for u in self.shelf_units for s in u.shelves}

    @cached_property
    def lanes(self) -> dict[str, Lane]:
        return {ln.id: ln for s in self.shelves.values() for ln in s.lanes}

    @cached_property
    def lane_shelf(self) -> dict[str, str]:
        return {ln.id: s.id for s in self.shelves.values() for ln in s.lanes}

    def iter_lanes(self) -> Iterator[tuple[str, Shelf, Lane]]:
        for u in self.shelf_units:
            for s in u.shelves:
                for ln in s.lanes:
                    yield u.id, s, ln

    def config_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- cross-field checks
Problem = tuple[str, str]  # (field path, reason)


def check_unique_ids(store: Store, base_dir: Path | None) -> Iterator[Problem]:
    seen: dict[str, dict[str, str]] = {}

    def once(kind: str, ident: str, path: str) -> Iterator[Problem]:
        prev = seen.setdefault(kind, {}).get(ident)
        if prev is not None:
            yield path, f"{kind} id {ident!r} is already used at {prev}"
        else:
            seen[kind][ident] = path

    for i, p in enumerate(store.catalogue):
        yield from once("sku", p.sku, f"catalogue[{i}].sku")
    for ui, u in enumerate(store.shelf_units):
        yield from once("shelf unit", u.id, f"shelf_units[{ui}].id")
        for si, s in enumerate(u.shelves):
            yield from once("shelf", s.id, f"shelf_units[{ui}].shelves[{si}].id")
            for li, ln in enumerate(s.lanes):
                path = f"shelf_units[{ui}].shelves[{si}].lanes[{li}]"
                yield from once("lane", ln.id, path + ".id")
                for ci, cell in enumerate(ln.cells):
                    yield from once("load cell", cell, path + (f".load_cells[{ci}]" if ln.load_cells else ".id"))
    for i, g in enumerate(store.gates):
        yield from once("gate", g.id, f"gates[{i}].id")
    for i, e in enumerate(store.exits):
        yield from once("exit", e.id, f"exits[{i}].id")
    for i, c in enumerate(store.cameras):
        yield from once("camera", c.id, f"cameras[{i}].id")


def check_lane_skus_known(store: Store, base_dir: Path | None) -> Iterator[Problem]:
    skus = {p.sku for p in store.catalogue}
    for ui, u in enumerate(store.shelf_units):
        for si, s in enumerate(u.shelves):
            for li, ln in enumerate(s.lanes):
                if ln.sku is not None and ln.sku not in skus:
                    yield (f"shelf_units[{ui}].shelves[{si}].lanes[{li}].sku",
                           f"SKU {ln.sku!r} is not in the catalogue")


def _footprint(box: Box) -> np.ndarray:
    return box.corners()[::2, :2][[0, 1, 3, 2]]  # the 4 floor corners, in order around the rectangle


def _rects_overlap(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Separating-axis test for two convex quadrilaterals (4x2); touching (within ``tol``) is not overlap."""
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]])
            n = np.linalg.norm(axis)
            if n == 0:
                continue
            axis /= n
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() + tol or pb.max() <= pa.min() + tol:
                return False
    return True


def check_lanes_do_not_overlap(store: Store, base_dir: Path | None, tol: float = 1e-3) -> Iterator[Problem]:
    entries = []
    for ui, u in enumerate(store.shelf_units):
        for si, s in enumerate(u.shelves):
            for li, ln in enumerate(s.lanes):
                entries.append((f"shelf_units[{ui}].shelves[{si}].lanes[{li}].box", ln))
    if not entries:
        return
    lo = np.array([ln.box.corners().min(axis=0) for _, ln in entries])
    hi = np.array([ln.box.corners().max(axis=0) for _, ln in entries])
    order = np.argsort(lo[:, 0])
    for a_pos, ia in enumerate(order):  # sweep on x, exact test on candidates only
        for ib in order[a_pos + 1:]:
            if lo[ib, 0] >= hi[ia, 0] - tol:
                break
            if np.any(lo[ia] >= hi[ib] - tol) or np.any(lo[ib] >= hi[ia] - tol):
                continue
            pa, la = entries[ia]
            pb, lb = entries[ib]
            if _rects_overlap(_footprint(la.box), _footprint(lb.box), tol):
                first, second = sorted([(pa, la.id), (pb, lb.id)])
                yield second[0], f"lane {second[1]!r} overlaps lane {first[1]!r}"


def check_regions_on_floor(store: Store, base_dir: Path | None) -> Iterator[Problem]:
    sx, sy = store.store.size
    for name, items in (("gates", store.gates), ("exits", store.exits)):
        for i, item in enumerate(items):
            (x0, y0), (x1, y1) = item.region.min, item.region.max
            if x0 < 0 or y0 < 0 or x1 > sx or y1 > sy:
                yield f"{name}[{i}].region", f"region lies outside the floor 0..{sx} x 0..{sy} m"


def check_camera_files_exist(store: Store, base_dir: Path | None) -> Iterator[Problem]:
    if base_dir is None:
        return
    for i, cam in enumerate(store.cameras):
        if not (base_dir / cam.file).is_file():
            yield f"cameras[{i}].file", f"camera file {cam.file!r} not found in {base_dir}"


CHECKS: list[Callable[[Store, Path | None], Iterator[Problem]]] = [
    check_unique_ids,
    check_lane_skus_known,
    check_lanes_do_not_overlap,
    check_regions_on_floor,
    check_camera_files_exist,
]


def problems(store: Store, base_dir: Path | None = None) -> list[Problem]:
    out: list[Problem] = []
    for check in CHECKS:
        out.extend(check(store, base_dir))
    return out


def store_from_dict(data: object, file: str | Path | None = None, base_dir: Path | None = None) -> Store:
    """Validate a parsed store description; raise :class:`ConfigError` naming the first bad field."""
    store = validate(Store, data, file)
    found = problems(store, base_dir)
    if found:
        path, reason = found[0]
        extra = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
        raise ConfigError(file, path, reason + extra)
    store._base_dir = base_dir
    return store


def load_store(path: str | Path) -> Store:
    path = Path(path)
    return store_from_dict(read_yaml(path), path, path.parent)


def base_dir_of(store: Store) -> Path | None:
    """The folder the store's camera files are relative to (None for a store built in memory)."""
    return store._base_dir


__all__ = [
    "Box", "CameraRef", "ConfigError", "EntryCodes", "Exit", "Gate", "Lane", "Product", "Region", "Shelf",
    "ShelfUnit", "Store", "StoreInfo", "load_model", "load_store", "problems", "store_from_dict",
]

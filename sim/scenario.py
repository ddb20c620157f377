"""Simulation scenarios: one YAML file (validated like the store description: unknown fields, wrong types and
out-of-range values fail with the file, the field and the reason) and three presets.

A scenario names a preset (``easy``, ``standard``, ``hard``) that supplies the shoppers' behaviour and the
scripted hard cases; the file may override any single field of either, and command-line flags override the
file.  :func:`resolve` merges the three layers into a :class:`Resolved` scenario with every value filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.config import load_model, validate

PresetName = Literal["easy", "standard", "hard"]
Seconds = Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
Prob = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
DEFAULT_START_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: sessions carry times as if recorded then


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _ordered(v: tuple, name: str) -> tuple:
    if v[0] > v[1]:
        raise ValueError(f"{name}: the first value must not exceed the second")
    return v


class Behaviour(_Model):
    """How randomly generated shoppers behave.  Ranges are (low, high), inclusive."""

    stops: tuple[Annotated[int, Field(ge=0, le=30)], Annotated[int, Field(ge=0, le=30)]] = Field(
        (2, 4), title="Stops per shopper", description="Shelves a shopper stops at (random part of the plan)")
    browse_s: tuple[Seconds, Seconds] = Field((1.0, 4.0), title="Browsing time at a stop, seconds")
    reaches: tuple[Annotated[int, Field(ge=0, le=10)], Annotated[int, Field(ge=0, le=10)]] = Field(
        (1, 2), title="Reaches per stop")
    qty2_prob: Prob = Field(0.15, title="Two-item pick probability", description="A pick takes two items")
    linger_prob: Prob = Field(0.15, title="Linger probability", description="A stop without touching anything")
    press_prob: Prob = Field(0.08, title="Press probability", description="A reach that only presses the goods")
    neighbour_lane_prob: Prob = Field(0.35, title="Neighbouring-lane probability",
                                      description="A reach goes to a lane beside or above/below the stop's")
    put_back_prob: Prob = Field(0.05, title="Put-back probability", description="A picked item is put back")
    misplace_prob: Prob = Field(0.0, title="Misplace probability",
                                description="A carried item is left on a wrong lane at the next stop")
    group_prob: Prob = Field(0.0, title="Group probability", description="A party is a group of 2-3")
    arrival_window: Annotated[float, Field(gt=0, le=1)] = Field(
        0.4, title="Arrival window", description="Parties arrive over this fraction of the duration")
    height_m: tuple[Annotated[float, Field(ge=1.2, le=2.2)], Annotated[float, Field(ge=1.2, le=2.2)]] = Field(
        (1.55, 1.95), title="Body heights, metres")
    speed_mps: tuple[Annotated[float, Field(ge=0.3, le=2.5)], Annotated[float, Field(ge=0.3, le=2.5)]] = Field(
        (0.9, 1.35), title="Walking speeds, m/s")

    @model_validator(mode="after")
    def _ranges(self) -> Behaviour:
        for name in ("stops", "browse_s", "reaches", "height_m", "speed_mps"):
            _ordered(getattr(self, name), name)
        return self


class Scripted(_Model):
    """Hard cases placed deliberately, on top of the random behaviour."""

    neighbour_pairs: Annotated[int, Field(ge=0, le=50)] = Field(
        0, title="Neighbour pairs", description="Two shoppers picking from neighbouring lanes within a second")
    groups: Annotated[int, Field(ge=0, le=20)] = Field(0, title="Groups", description="Parties of 2-3 shoppers")
    handoffs: Annotated[int, Field(ge=0, le=50)] = Field(0, title="Hand-offs within groups")
    put_backs: Annotated[int, Field(ge=0, le=50)] = Field(0, title="Put-backs")
    misplacements: Annotated[int, Field(ge=0, le=50)] = Field(0, title="Misplacements")
    picks_of_misplaced: Annotated[int, Field(ge=0, le=50)] = Field(
        0, title="Picks of misplaced items", description="Another shopper takes a misplaced item")
    exit_crowd: Annotated[int, Field(ge=0, le=50)] = Field(
        0, title="Exit crowd", description="Parties that head for the exit together")


class BehaviourPatch(_Model):
    """Any subset of :class:`Behaviour` fields (the rest come from the preset)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    stops: tuple[int, int] | None = None
    browse_s: tuple[float, float] | None = None
    reaches: tuple[int, int] | None = None
    qty2_prob: Prob | None = None
    linger_prob: Prob | None = None
    press_prob: Prob | None = None
    neighbour_lane_prob: Prob | None = None
    put_back_prob: Prob | None = None
    misplace_prob: Prob | None = None
    group_prob: Prob | None = None
    arrival_window: float | None = None
    height_m: tuple[float, float] | None = None
    speed_mps: tuple[float, float] | None = None


class ScriptedPatch(_Model):
    neighbour_pairs: int | None = None
    groups: int | None = None
    handoffs: int | None = None
    put_backs: int | None = None
    misplacements: int | None = None
    picks_of_misplaced: int | None = None
    exit_crowd: int | None = None


class Cameras(_Model):
    frames: bool = Field(True, title="Render frames", description="False writes no images (faster)")
    fps: Annotated[float, Field(gt=0, le=60)] = Field(10.0, title="Frame rate")
    size: tuple[Annotated[int, Field(ge=32, le=4096)], Annotated[int, Field(ge=32, le=4096)]] = Field(
        (640, 480), title="Image size", description="width, height in pixels")
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = Field(85, title="JPEG quality")
    only: list[str] | None = Field(None, title="Cameras", description="Render only these camera ids")


class LoadCells(_Model):
    rate_hz: Annotated[float, Field(gt=0, le=1000)] = Field(60.0, title="Sample rate")
    block_s: Annotated[float, Field(gt=0, le=10)] = Field(0.5, title="Seconds of samples per message")


class Scenario(_Model):
    """A scenario file."""

    name: str = Field("session", title="Name", max_length=100)
    preset: PresetName = Field("standard", title="Preset")
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(0, title="Seed")
    shoppers: Annotated[int, Field(ge=1, le=200)] = Field(6, title="Shoppers")
    duration_s: Annotated[float, Field(ge=5, le=3600)] = Field(120.0, title="Duration, seconds")
    start_epoch: Annotated[float, Field(ge=0, lt=1e10)] = Field(
        DEFAULT_START_EPOCH, title="Start time", description="Session start, seconds since the epoch (UTC)")
    store: str | None = Field(None, title="Store file",
                              description="Store description, relative to the scenario file; default store if none")
    cameras: Cameras = Field(default_factory=Cameras, title="Cameras")
    loadcells: LoadCells = Field(default_factory=LoadCells, title="Load cells")
    behaviour: BehaviourPatch = Field(default_factory=BehaviourPatch, title="Behaviour overrides")
    scripted: ScriptedPatch = Field(default_factory=ScriptedPatch, title="Scripted-case overrides")


PRESETS: dict[str, tuple[Behaviour, Scripted]] = {
    "easy": (
        Behaviour(stops=(1, 3), reaches=(1, 1), qty2_prob=0.0, linger_prob=0.1, press_prob=0.0,
                  neighbour_lane_prob=0.0, put_back_prob=0.0, arrival_window=0.5),
        Scripted(),
    ),
    "standard": (
        Behaviour(group_prob=0.2, put_back_prob=0.05, misplace_prob=0.03),
        Scripted(neighbour_pairs=1, put_backs=1, misplacements=1, handoffs=1),
    ),
    "hard": (
        Behaviour(stops=(2, 4), reaches=(1, 3), qty2_prob=0.2, linger_prob=0.2, press_prob=0.15,
                  neighbour_lane_prob=0.45, put_back_prob=0.08, misplace_prob=0.05, group_prob=0.0,
                  arrival_window=0.3),
        Scripted(neighbour_pairs=4, groups=2, handoffs=2, put_backs=4, misplacements=3, picks_of_misplaced=2,
                 exit_crowd=5),
    ),
}


class Resolved(_Model):
    """A scenario with every value decided (what a session records)."""

    name: str
    preset: PresetName
    seed: int
    shoppers: int
    duration_s: float
    start_epoch: float
    store: str | None
    cameras: Cameras
    loadcells: LoadCells
    behaviour: Behaviour
    scripted: Scripted

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def load_scenario(path: str | Path) -> Scenario:
    return load_model(Scenario, path)


_FLAG_FIELDS = {"preset": ("preset",), "seed": ("seed",), "shoppers": ("shoppers",),
                "duration_s": ("duration_s",), "store": ("store",), "frames": ("cameras", "frames"),
                "fps": ("cameras", "fps"), "size": ("cameras", "size")}


def apply_flags(scn: Scenario, **flags) -> Scenario:
    """The scenario with command-line values (``None``: not given) put in; validated like the file, so a bad
    flag fails naming its field."""
    data = scn.model_dump()
    for name, value in flags.items():
        if value is None:
            continue
        if name not in _FLAG_FIELDS:
            raise TypeError(f"unknown scenario flag {name!r}")
        *parents, leaf = _FLAG_FIELDS[name]
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = str(value) if name == "store" else value
    return validate(Scenario, data, "<command line>")


def resolve(scn: Scenario, base_dir: Path | None = None) -> Resolved:
    """Fill in the preset's behaviour and scripted cases under the scenario's overrides.  A relative
    ``store`` path is taken relative to ``base_dir`` (the scenario file's folder)."""
    beh, scr = PRESETS[scn.preset]
    where = f"preset {scn.preset}"
    behaviour = validate(Behaviour, {**beh.model_dump(), **scn.behaviour.model_dump(exclude_none=True)},
                         f"<behaviour of {where}>")
    scripted = validate(Scripted, {**scr.model_dump(), **scn.scripted.model_dump(exclude_none=True)},
                        f"<scripted cases of {where}>")
    store = scn.store
    if store is not None and base_dir is not None and not Path(store).is_absolute():
        store = str((base_dir / store).resolve())
    return Resolved(name=scn.name, preset=scn.preset, seed=scn.seed, shoppers=scn.shoppers,
                    duration_s=scn.duration_s, start_epoch=scn.start_epoch, store=store, cameras=scn.cameras,
                    loadcells=scn.loadcells, behaviour=behaviour, scripted=scripted)


def scenario_from_file(path: str | Path | None, **flags) -> Resolved:
    """Load (or default) a scenario, apply the command-line ``flags`` and resolve it; bad values raise
    :class:`calibration.config.ConfigError` naming the file (or ``<command line>``), the field and the
    reason."""
    scn = Scenario() if path is None else load_scenario(path)
    base = None if path is None else Path(path).resolve().parent
    flagged = apply_flags(scn, **flags)
    # a store given on the command line is relative to the working directory, not to the scenario file
    if flags.get("store") is not None:
        base = Path.cwd()
    return resolve(flagged, base)

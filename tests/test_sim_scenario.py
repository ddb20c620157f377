"""Scenario files: validation (file, field, reason), presets and command-line overrides."""

from __future__ import annotations

import pytest

from calibration.config import ConfigError
from sim.scenario import PRESETS, scenario_from_file


def write(tmp_path, text: str):
    p = tmp_path / "scn.yaml"
    p.write_text(text)
    return p


def test_defaults_resolve_to_the_standard_preset():
    scn = scenario_from_file(None)
    assert scn.preset == "standard"
    assert scn.behaviour == PRESETS["standard"][0]
    assert scn.cameras.size == (640, 480) and scn.cameras.fps == 10.0
    assert scn.loadcells.rate_hz == 60.0


def test_flags_override_the_file_and_the_file_overrides_the_preset(tmp_path):
    p = write(tmp_path, "preset: easy\nseed: 5\nshoppers: 3\nduration_s: 40\n"
                        "behaviour: {linger_prob: 0.5}\nscripted: {put_backs: 2}\ncameras: {fps: 5}\n")
    scn = scenario_from_file(p)
    assert (scn.preset, scn.seed, scn.shoppers, scn.duration_s) == ("easy", 5, 3, 40.0)
    assert scn.behaviour.linger_prob == 0.5 and scn.behaviour.stops == PRESETS["easy"][0].stops
    assert scn.scripted.put_backs == 2
    flagged = scenario_from_file(p, preset="hard", seed=9, shoppers=12, duration_s=180, frames=False,
                                 fps=2.0, size=(320, 240))
    assert (flagged.preset, flagged.seed, flagged.shoppers, flagged.duration_s) == ("hard", 9, 12, 180.0)
    assert flagged.behaviour.linger_prob == 0.5  # the file's override stays on top of the new preset
    assert flagged.scripted.put_backs == 2 and flagged.scripted.neighbour_pairs == 4
    assert (flagged.cameras.frames, flagged.cameras.fps, flagged.cameras.size) == (False, 2.0, (320, 240))


def test_store_path_is_relative_to_the_scenario_file(tmp_path):
    p = write(tmp_path, "store: stores/x.yaml\n")
    assert scenario_from_file(p).store == str((tmp_path / "stores" / "x.yaml").resolve())


@pytest.mark.parametrize("text, field", [
    ("shopers: 3\n", "shopers"),
    ("shoppers: 0\n", "shoppers"),
    ("duration_s: -1\n", "duration_s"),
    ("preset: medium\n", "preset"),
    ("cameras: {size: [640]}\n", "cameras.size[1]"),
    ("behaviour: {linger_prob: 2}\n", "behaviour.linger_prob"),
    ("scripted: {groups: many}\n", "scripted.groups"),
    ("loadcells: {rate_hz: 0}\n", "loadcells.rate_hz"),
])
def test_bad_scenarios_name_the_file_and_field(tmp_path, text, field):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        scenario_from_file(p)
    assert err.value.field == field
    assert err.value.file == str(p)


def test_bad_ranges_and_flags_are_config_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        scenario_from_file(write(tmp_path, "behaviour: {stops: [4, 2]}\n"))
    assert "stops" in err.value.reason
    with pytest.raises(ConfigError) as err:
        scenario_from_file(None, shoppers=0)
    assert err.value.file == "<command line>" and err.value.field == "shoppers"
    with pytest.raises(ConfigError) as err:
        scenario_from_file(tmp_path / "missing.yaml")
    assert err.value.field == "<file>"


def test_hard_preset_scripts_every_required_case():
    _, scr = PRESETS["hard"]
    assert scr.neighbour_pairs >= 3 and scr.groups >= 2 and scr.put_backs >= 3
    assert scr.misplacements >= 2 and scr.picks_of_misplaced >= 1 and scr.exit_crowd >= 3

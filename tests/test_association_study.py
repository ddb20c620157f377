"""The association study: the evidence an in-process replay keeps, re-decided offline by the engine's own
code, gives back exactly what the engine decided; other settings change the decisions they should; the
command line's settings are checked before any replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from walkout.association_study import (
    changes,
    fusion_config,
    load,
    main,
    parse_sets,
    record_session,
    recorded_overrides,
    reproduced,
    summarise,
)

SESSION = Path(__file__).resolve().parents[1] / "replay_data" / "sessions" / "hard-100s"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    record_session(SESSION, out)
    return out


@pytest.mark.slow
def test_recorded_evidence_gives_back_the_engines_decisions(study: Path) -> None:
    sessions = load(study)
    events = sessions["hard-100s"]["events"]
    assert len(events) >= 10
    assert any(len(r["candidates"]) >= 2 for r in events)
    assert any(len(r["siblings"]) >= 2 for r in events), "the session's neighbour picks come as sibling events"
    same, total = reproduced(sessions, fusion_config({}).association)
    assert total == len(events)
    assert same == total


@pytest.mark.slow
def test_events_are_labelled_with_who_did_them(study: Path) -> None:
    sessions = load(study)
    s = summarise(sessions, fusion_config({}).association)["presets"]["hard"]
    # every event of this session is a true one, and the engine charges most of them to the right shopper
    assert s.get("spurious", 0) == 0
    assert s["right_charged"] >= 0.8 * s["events"]
    for r in sessions["hard-100s"]["events"]:
        assert r["true_shopper"] in r["true_party"]
        assert any(c["follows"] in r["true_party"] for c in r["candidates"]), r["event_id"]


@pytest.mark.slow
def test_other_settings_change_the_decisions(study: Path) -> None:
    sessions = load(study)
    base = summarise(sessions, fusion_config({}).association)
    strict = summarise(sessions, fusion_config({"association": {"min_margin": 1.0}}).association)
    # a margin of 1 needs a runner-up of no weight at all: every event with a real runner-up is held
    contested = {o.event_id for o in base["detail"]["hard-100s"] if o.margin < 1.0}
    held = {o.event_id for o in strict["detail"]["hard-100s"] if o.held}
    assert held >= contested
    assert len(contested) > base["presets"]["hard"]["held"]
    moved = changes(base["detail"], strict["detail"])
    assert moved and all("-> held" in m for m in moved)


@pytest.mark.parametrize(("items", "expected"), [
    ([], {}),
    (["association.exclusion_weight=14"], {"association": {"exclusion_weight": 14}}),
    (["association.min_margin=0.5", "floor.link_bonus=0.3"],
     {"association": {"min_margin": 0.5}, "floor": {"link_bonus": 0.3}}),
    (["association.persist_mean=false"], {"association": {"persist_mean": False}}),
])
def test_settings_parse(items: list[str], expected: dict) -> None:
    assert parse_sets(items) == expected
    fusion_config(expected)


@pytest.mark.parametrize(("items", "error"), [
    (["association.exclusion_weight"], ValueError),
    (["=3"], ValueError),
    (["association.no_such_thing=1"], ValidationError),
    (["association.min_margin=-1"], ValidationError),
])
def test_bad_settings_are_refused(items: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        fusion_config(parse_sets(items))


def test_command_line_refuses_a_bad_setting_before_replaying(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["record", str(SESSION), "--out", str(tmp_path), "--set", "association.nope=1"])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_sessions_recorded_under_different_settings_are_not_compared(tmp_path: Path) -> None:
    for name, over in (("a", {}), ("b", {"association": {"min_margin": 0.5}})):
        (tmp_path / f"{name}.json").write_text(json.dumps({"overrides": over, "events": []}))
    with pytest.raises(ValueError, match="different settings"):
        recorded_overrides(load(tmp_path))


@pytest.mark.slow
def test_score_command_prints_the_table_and_json(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(study), "--set", "association.min_margin=1.0"]) == 0
    text = capsys.readouterr().out
    assert "re-made under the recorded settings" in text and "events changed" in text
    assert main(["score", str(study), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["reproduced"] == got["decided"] > 0
    assert set(got) >= {"recorded", "now", "margins", "changed"}


@pytest.mark.slow
def test_rendered_sessions_are_recorded_through_the_camera_pipeline(tmp_path: Path) -> None:
    """``--perception onnx``: the evidence of the real detector's wrists, re-decided as the engine decided."""
    smoke = SESSION.parent / "smoke"
    record_session(smoke, tmp_path, perception="onnx")
    sessions = load(tmp_path)
    assert sessions["smoke"]["perception"] == "onnx"
    events = sessions["smoke"]["events"]
    assert events and all(r["candidates"] for r in events)
    assert any(r["true_shopper"] for r in events)
    same, total = reproduced(sessions, fusion_config({}).association)
    assert same == total == len(events)

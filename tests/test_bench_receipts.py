"""bench.receipts: seeds parsed, figures pooled over lines and visits (not averaged over seeds), and a run on a
committed session reused from --sessions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import receipts

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("text", "seeds"), [
    ("221", [221]),
    ("221-224", [221, 222, 223, 224]),
    ("221-222,240, 250-251", [221, 222, 240, 250, 251]),
])
def test_seeds_are_numbers_and_ranges(text, seeds) -> None:
    assert receipts.parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "says"), [
    ("a-b", "expected numbers"),
    ("230-221", "runs backwards"),
    ("", "expected numbers"),
])
def test_bad_seeds_say_why(text, says) -> None:
    with pytest.raises(ValueError, match=says):
        receipts.parse_seeds(text)


def _row(seed, right, run, true, receipts_, held, charged, wrong, causes):
    return {"seed": seed, "receipt_f1": 0.0, "lines_right": right, "lines_run": run, "lines_true": true,
            "visits_with_receipt": receipts_, "visits_held": held, "visits_charged": charged,
            "visits_wrong_charged": wrong, "exit_to_receipt_p50_s": 0.4, "exit_to_receipt_p99_s": 1.5,
            "error_causes": causes}


def test_pooled_figures_count_lines_and_visits_over_all_seeds() -> None:
    """A seed with many lines weighs more than one with few: F1 over the pooled lines, not the mean of F1s."""
    rows = [_row(1, 9, 10, 10, 5, 1, 4, 1, {"association": 1}),
            _row(2, 30, 30, 32, 10, 0, 10, 0, {"shelf missed": 2, "association": 1})]
    p = receipts.pooled(rows)
    assert p["receipt_precision"] == pytest.approx(39 / 40)
    assert p["receipt_recall"] == pytest.approx(39 / 42)
    assert p["receipt_f1"] == pytest.approx(2 * (39 / 40) * (39 / 42) / (39 / 40 + 39 / 42))
    assert (p["visits"], p["visits_held"], p["visits_charged"], p["wrong_charges"]) == (15, 1, 14, 1)
    assert p["review_rate"] == pytest.approx(1 / 15)
    assert p["error_causes"] == {"association": 2, "shelf missed": 2}
    assert p["exit_to_receipt_p99_s_max"] == 1.5


def test_a_committed_session_is_replayed_and_scored(tmp_path, capsys) -> None:
    """The smoke session (easy preset, seed 2) placed where the bench looks for easy-2 is reused, not
    simulated again, and its figures are those of ``walkout eval`` on a replay of it."""
    from walkout.evaluate import evaluate
    from walkout.replay import ReplayOptions, replay

    smoke = ROOT / "replay_data" / "sessions" / "smoke"
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "easy-2").symlink_to(smoke, target_is_directory=True)
    assert receipts.main(["--preset", "easy", "--seeds", "2", "--sessions", str(sessions), "--jobs", "1",
                          "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in sessions.iterdir()) == ["easy-2"]
    replay(smoke, tmp_path / "run", ReplayOptions(in_process=True))
    m = evaluate(smoke, tmp_path / "run").metrics
    (row,) = out["per_seed"]
    assert row["receipt_f1"] == m["receipt_f1"]
    assert out["pooled"]["lines_right"] == m["lines_right"] and out["pooled"]["visits"] == m["visits_with_receipt"]
    assert receipts.main(["--seeds", "9-1"]) == 2

"""The CI gate of the whole chain: the committed sessions replayed in-process into the real fusion service,
scored against their truth with accuracy floors a little below what the chain measures; replays are
deterministic; recordings replay straight into fusion; bad input fails with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walkout.evaluate import REQUIRED_KEYS, evaluate
from walkout.replay import (
    DEFAULT_MODEL,
    ReplayError,
    ReplayOptions,
    open_source,
    read_jsonl,
    replay,
)

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = ROOT / "replay_data" / "sessions"
DETERMINISTIC = ("receipts.jsonl", "visits.jsonl", "cart_lines.jsonl", "shelf_events.jsonl", "floor_tracks.csv")

# Floors a little below what the chain measured when they were set (see the report of the replay issue).
# hard-100s, truth perception: 4 visits with neighbour picks, a group hand-off, put-backs and a misplacement.
# Measured (2026-11-29, fusion as of then): receipt F1 0.667, events 1.0 / 1.0, camera HOTA 0.678 IDF1 0.718,
# floor IDF1 0.862 MOTA 0.926.  Raise these as fusion improves (issue 7's goal is F1 >= 0.98 on hard).
HARD_FLOORS = {"receipt_f1": 0.6, "event_precision": 0.95, "event_recall": 0.95, "floor_idf1": 0.8,
               "floor_mota": 0.88, "hota": 0.62, "idf1": 0.65}
SMOKE_FLOORS = {"receipt_f1": 0.99, "exact_cart_rate": 0.99, "event_recall": 0.99}
# the real shelf gateway on the smoke session's load cells; the detector's floors (receipt_f1, hota) wait for
# the trained model (models/README.md: the committed one is a placeholder that detects nobody)
SMOKE_ONNX_FLOORS = {"event_precision": 0.99, "event_recall": 0.99}


@pytest.fixture(scope="module")
def hard_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("hard")
    replay(SESSIONS / "hard-100s", run, ReplayOptions(in_process=True))
    return run, evaluate(SESSIONS / "hard-100s", run).metrics


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("smoke")
    replay(SESSIONS / "smoke", run, ReplayOptions(in_process=True))
    return run


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(HARD_FLOORS))
def test_hard_session_floor(hard_run: tuple[Path, dict], key: str) -> None:
    _, m = hard_run
    assert m[key] >= HARD_FLOORS[key], json.dumps({k: m.get(k) for k in HARD_FLOORS})


@pytest.mark.slow
def test_hard_session_settles_every_visit(hard_run: tuple[Path, dict]) -> None:
    run, m = hard_run
    assert m["visits"] == 4 and m["visits_with_receipt"] == 4 and m["receipts_without_visit"] == 0
    assert set(REQUIRED_KEYS) <= set(m)
    assert m["camera_truth"] == ["projected"]  # no frames in this session: truth perception projected it
    assert sorted(p.name for p in (run / "tracks").iterdir()) == [f"cam{i}.txt" for i in range(1, 7)]


@pytest.mark.parametrize("key", sorted(SMOKE_FLOORS))
def test_smoke_session_floor(smoke_run: Path, key: str) -> None:
    m = evaluate(SESSIONS / "smoke", smoke_run).metrics
    assert m[key] >= SMOKE_FLOORS[key]


def test_replaying_twice_gives_identical_results(smoke_run: Path, tmp_path: Path) -> None:
    replay(SESSIONS / "smoke", tmp_path, ReplayOptions(in_process=True))
    for name in DETERMINISTIC:
        assert (tmp_path / name).read_text() == (smoke_run / name).read_text(), name
    assert read_jsonl(tmp_path / "receipts.jsonl")


def test_another_seed_changes_the_noise_not_the_receipts(smoke_run: Path, tmp_path: Path) -> None:
    replay(SESSIONS / "smoke", tmp_path, ReplayOptions(in_process=True, seed=7))
    assert (tmp_path / "tracks" / "cam1.txt").read_text() != (smoke_run / "tracks" / "cam1.txt").read_text()
    lines = [[(ln["sku"], ln["qty"]) for ln in r["lines"]] for r in read_jsonl(tmp_path / "receipts.jsonl")]
    assert lines == [[(ln["sku"], ln["qty"]) for ln in r["lines"]] for r in read_jsonl(smoke_run /
                                                                                       "receipts.jsonl")]


def test_a_recording_replays_into_fusion_with_the_same_receipts(smoke_run: Path, tmp_path: Path) -> None:
    """A detection-level recording of the smoke replay's inputs (written as `walkout record` writes) replays
    straight into fusion and gives the receipts the original run gave."""
    from sim.session import Session
    from walkout.record import RecordingWriter, store_attachments
    from walkout.replay import KIND_OF
    from walkout.truth_perception import PerceptionConfig, perceive

    s = Session.open(SESSIONS / "smoke")
    feed = sorted([(float(m.ts), m) for m in s.gate_entries()] + perceive(s, PerceptionConfig(seed=0)).feed(),
                  key=lambda x: x[0])
    rec = tmp_path / "rec.mcap"
    w = RecordingWriter(rec, "sim-store-1", store_attachments(s.store, None))
    for t, msg in feed:
        kind, field = KIND_OF[type(msg)]
        w.message(kind, getattr(msg, field), msg, t)
    w.close()
    src = open_source(rec)
    assert src.kind == "recording" and src.span is not None
    run = tmp_path / "run"
    replay(rec, run, ReplayOptions(in_process=True))
    assert (run / "receipts.jsonl").read_text() == (smoke_run / "receipts.jsonl").read_text()
    assert json.loads((run / "run.json").read_text())["perception"] == "recorded"


def test_paced_replay_takes_the_session_time(tmp_path: Path) -> None:
    r = replay(SESSIONS / "smoke", tmp_path, ReplayOptions(in_process=True, speed=40.0))
    span = 60.0 / 40.0
    assert r.summary["wall_s"] >= 0.9 * span  # paced by publish time (never faster than asked)
    times = read_jsonl(tmp_path / "receipt_times.jsonl")
    assert times and all("received_wall" in t for t in times)


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "no such session"),
    (lambda p: (p / "x.mcap").write_bytes(b"not an mcap") and p / "x.mcap", "not a readable MCAP"),
])
def test_bad_sources_fail_clearly(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(ReplayError, match=match):
        replay(make(tmp_path), tmp_path / "run", ReplayOptions(in_process=True))


def test_a_database_with_receipts_is_refused(smoke_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="already holds receipts"):
        replay(SESSIONS / "smoke", tmp_path, ReplayOptions(in_process=True, db=str(smoke_run / "fusion.db")))


def test_a_message_fusion_fails_on_stops_the_replay_with_a_clear_error(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fusion.engine import FusionEngine
    from wire.messages import ShelfEventMsg

    offer = FusionEngine.offer

    def broken(self, msg):
        if isinstance(msg, ShelfEventMsg):
            raise ZeroDivisionError("a bug in fusion")
        return offer(self, msg)

    monkeypatch.setattr(FusionEngine, "offer", broken)
    with pytest.raises(ReplayError, match=r"fusion failed on a ShelfEventMsg at \d+\.\d{3} .*a bug in fusion"):
        replay(SESSIONS / "smoke", tmp_path / "run", ReplayOptions(in_process=True))


def test_onnx_perception_needs_frames(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no camera frames"):
        replay(SESSIONS / "hard-100s", tmp_path, ReplayOptions(in_process=True, perception="onnx"))


@pytest.mark.slow
def test_onnx_chain_on_the_smoke_session(tmp_path: Path) -> None:
    """The full perception chain: session frames -> ONNX detector -> tracker -> projection, and the real shelf
    gateway on the load cells, into fusion."""
    assert DEFAULT_MODEL.is_file(), f"{DEFAULT_MODEL} is missing (models/README.md)"
    r = replay(SESSIONS / "smoke", tmp_path, ReplayOptions(in_process=True, perception="onnx"))
    m = evaluate(SESSIONS / "smoke", tmp_path).metrics
    for key, floor in SMOKE_ONNX_FLOORS.items():
        assert m[key] >= floor, (key, m[key])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["perception"] == "onnx" and run["shelf"] == "gateway"
    assert r.summary["messages"]["TracksMsg"] == 242  # one tracks message per delivered frame of both cameras
    assert m["visits_with_receipt"] == m["visits"] == 2


@pytest.mark.mosquitto
def test_a_second_replay_on_a_shared_broker_ignores_the_first_ones_leftovers(
        smoke_run: Path, tmp_path: Path, mqtt_broker: tuple[str, int], store_id: str) -> None:
    """Replaying a session twice through one broker under one store id: the first run leaves retained
    messages behind (its shelf gateway's last heartbeat, at the session's end); the second's fusion takes them
    for what they are -- not its input -- so its event clock does not start at the session's end and each
    visit settles when it did in process, not at the end (`make demo` run twice)."""
    opts = ReplayOptions(store_id=store_id, broker=mqtt_broker)
    replay(SESSIONS / "smoke", tmp_path / "first", opts)
    second = replay(SESSIONS / "smoke", tmp_path / "second", opts)
    assert second.summary["ignored_retained"] >= 1

    def settled(run: Path) -> list[tuple[str, float]]:
        return sorted((r["visit"], r["settled_at"]) for r in read_jsonl(run / "receipt_times.jsonl"))

    assert settled(tmp_path / "second") == settled(smoke_run)
    assert (tmp_path / "second" / "receipts.jsonl").read_text() == (smoke_run / "receipts.jsonl").read_text()


@pytest.mark.postgres
def test_replay_into_postgresql_gives_the_sqlite_receipts(smoke_run: Path, tmp_path: Path, pg_url: str,
                                                          pg_run_prefix: str) -> None:
    replay(SESSIONS / "smoke", tmp_path, ReplayOptions(in_process=True, db=f"{pg_url}?schema={pg_run_prefix}_rp"))
    assert (tmp_path / "receipts.jsonl").read_text() == (smoke_run / "receipts.jsonl").read_text()
    assert "postgresql" in json.loads((tmp_path / "run.json").read_text())["db"]


def test_cli_replay_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from walkout.cli import main

    run = tmp_path / "run"
    assert main(["replay", str(SESSIONS / "smoke"), "--out", str(run), "--in-process", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["receipts"] == 2 and summary["perception"] == "truth"
    assert main(["eval", str(SESSIONS / "smoke"), str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert set(REQUIRED_KEYS) <= set(m) and m["visits"] == 2
    report = run / "report"
    assert (report / "index.html").is_file() and (report / "overview.png").is_file()
    assert len(list(report.glob("visit_*.png"))) == 2
    assert "V01" in (report / "index.html").read_text()
    assert main(["eval", str(SESSIONS / "smoke"), str(tmp_path / "nothing")]) == 1  # not a run folder


def _truth_shelf_feed(session):
    from walkout.truth_perception import PerceptionConfig, perceive
    from wire.messages import TracksMsg

    return [(t, m) for t, m in perceive(session, PerceptionConfig(seed=0)).feed() if not isinstance(m, TracksMsg)]


@pytest.mark.parametrize("feed", ["gateway", "truth"])
def test_shelf_feeds_carry_a_watermark_no_later_event_starts_before(feed: str) -> None:
    """The replay feeds' shelf gateway (the real one, or truth perception's) publishes a watermark heartbeat
    every 0.25 s of capture time, with each shelf's own; no event published after a heartbeat starts before its
    watermark or its shelf's, and events and heartbeats are numbered together in publish order (one source, one
    sequence)."""
    from sim.session import Session
    from walkout.replay import gateway_feed
    from wire.messages import ShelfEventMsg, StatusMsg

    s = Session.open(SESSIONS / "hard-100s")
    items = list(gateway_feed(s)) if feed == "gateway" else _truth_shelf_feed(s)
    assert [t for t, _ in items] == sorted(t for t, _ in items)
    beats = [m for _, m in items if isinstance(m, StatusMsg)]
    events = [m for _, m in items if isinstance(m, ShelfEventMsg)]
    assert events and len(beats) >= 4 * 99  # a 100 s session
    assert all(b.kind == "shelf" and b.device == b.source and b.watermark <= b.ts for b in beats)
    assert all(t == m.ts for t, m in items if isinstance(m, StatusMsg))  # published at its capture time
    seqs = [m.seq for _, m in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    mark = 0.0
    per_shelf: dict[str, float] = {}
    for _, m in items:
        if isinstance(m, StatusMsg):
            mark = max(mark, m.watermark)
            for sid, t in m.shelf_watermarks.items():
                per_shelf[sid] = max(per_shelf.get(sid, 0.0), t)
        else:
            assert m.t_start >= mark, m.event_id
            assert m.t_start >= per_shelf.get(m.shelf, 0.0), m.event_id
    assert any(b.watermark < b.ts - 0.5 for b in beats)  # held back while a shelf was moving
    # both also say which shelf: one shelf's activity holds back only its own watermark
    assert all(b.shelf_watermarks and b.watermark == min(b.shelf_watermarks.values()) for b in beats)
    assert set(beats[0].shelf_watermarks) == set(s.store.shelves)
    assert any(max(b.shelf_watermarks.values()) == b.ts > b.watermark for b in beats)

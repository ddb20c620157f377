"""Load-cell readers (CSV folder, session MCAP, line protocol over a socket), calibration and the aligner."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcap.writer import Writer

from calibration.config import ConfigError
from edge.shelf.readers import (
    Aligner,
    CalibrationFile,
    ChannelCalibration,
    CsvFolderReader,
    LineReader,
    McapReader,
    load_calibration,
)
from tests.conftest import free_port
from wire.codec import encode
from wire.messages import LoadCellMsg
from wire.topics import Kind, topic

T0 = 1_700_000_000.0


# ------------------------------------------------------------------------------------------- CSV folder
def write_plate(folder: Path, g: int, s: int, p: int, ts: np.ndarray, grams: np.ndarray, extra: str = "") -> None:
    rows = "".join(f"{t:.6f},{v:.3f}\n" for t, v in zip(ts, grams, strict=True))
    (folder / f"gondola_{g}_shelf_{s}_plate_{p}.csv").write_text(rows + extra)


def test_csv_folder_reader(tmp_path: Path) -> None:
    ts = T0 + np.arange(120) / 60.0
    write_plate(tmp_path, 1, 2, 1, ts, np.full(120, 1000.0))
    write_plate(tmp_path, 1, 2, 10, ts + 0.003, np.full(120, 2000.0), extra="not,a,row\n12x,5\n")
    write_plate(tmp_path, 3, 1, 2, ts, np.full(120, 50.0))
    (tmp_path / "notes.csv").write_text("x\n")
    r = CsvFolderReader(tmp_path, block_s=0.5)
    assert r.channels == ["1.2.1", "1.2.10", "3.1.2"]
    assert r.shelf_hint == {"1.2.1": "1.2", "1.2.10": "1.2", "3.1.2": "3.1"}
    assert r.rate_hz == pytest.approx(60.0, rel=1e-3)
    assert r.problems["garbled"] == 2 and r.problems["unknown_file"] == 1
    blocks = list(r.blocks())
    assert len(blocks) == 4
    assert sum(len(b) for b in blocks) == 360
    for b in blocks:
        assert b.ts.max() - b.ts.min() < 0.5 + 0.01
    allg = np.concatenate([b.grams[b.lane == 1] for b in blocks])
    assert np.all(allg == 2000.0)


def test_csv_folder_without_traces_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no gondola_G_shelf_S_plate_P.csv"):
        CsvFolderReader(tmp_path)


# ------------------------------------------------------------------------------------------- line protocol
LINES = [
    # text, samples parsed, garbled lines
    ("# walkout-loadcells 1\n# lanes a b c\n", 0, 0),
    ("1.0 a 5.5\n", 1, 0),
    ("1.0,b,7\n", 1, 0),
    ("1.0 * 1 2 3\n", 3, 0),
    ("1.0 2 9.0\n", 1, 0),  # index into the declared lanes
    ("- a 3\n", 1, 0),  # arrival time
    ("garbage\n", 0, 1),
    ("1.0 a\n", 0, 1),
    ("1.0 a x\n", 0, 1),
    ("x a 1\n", 0, 1),
    ("1.0 * 1 2\n", 0, 1),  # frame with the wrong number of values
    ("1.0 7 1\n", 0, 1),  # index out of range
    ("1.0 a/b 1\n", 0, 1),  # not an id
    ("1.0 a 1 2\n", 0, 1),
    ("\n   \n", 0, 0),
]


@pytest.mark.parametrize("text, n, garbled", LINES)
def test_line_protocol_table(text: str, n: int, garbled: int) -> None:
    r = LineReader("loop://", channels=["a", "b", "c"])
    block = r.feed_text(text, now=T0)
    assert len(block) == n
    assert r.problems["garbled"] == garbled


def test_line_protocol_non_finite_values_are_counted_not_raised() -> None:
    r = LineReader("loop://", channels=["a"])
    block = r.feed_text("1.0 a nan\n1.0 a inf\n1.0 a 1e300\n1.0 a 5\n", now=T0)
    assert len(block) == 4
    assert np.isnan(block.grams[:3]).all() and block.grams[3] == 5.0
    assert r.problems["non_finite"] == 2 and r.problems["out_of_range"] == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_line_parser_never_raises(text: str) -> None:
    r = LineReader("loop://", channels=["a", "b"])
    block = r.feed_text(text, now=T0)
    assert block.lane.size == block.ts.size == block.grams.size
    assert np.all((block.lane >= 0) & (block.lane < len(r.channels)))


# ------------------------------------------------------------------------------------------- calibration
def test_calibration_applied_with_saturation(tmp_path: Path) -> None:
    cal_file = tmp_path / "cal.yaml"
    cal_file.write_text("default: {tare: 100, scale: 0.5}\nlanes:\n  b: {tare: 0, scale: 2, max_raw: 1000}\n")
    cal = load_calibration(cal_file)
    r = LineReader("loop://", channels=["a", "b"], calibration=cal)
    block = r.feed_text("1.0 a 300\n1.0 b 10\n1.0 b 1000\n1.0 b 2000\n", now=T0)
    assert block.grams[0] == 100.0 and block.grams[1] == 20.0
    assert np.isnan(block.grams[2:]).all()
    assert r.problems["saturated"] == 2


@pytest.mark.parametrize("text, field", [
    ("lanes:\n  a: {tare: 1, scael: 2}\n", "lanes.a.scael"),
    ("default: {scale: abc}\n", "default.scale"),
    ("- just a list\n", "<root>"),
])
def test_bad_calibration_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    f = tmp_path / "cal.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_calibration(f)
    assert err.value.field == field and err.value.file == str(f)


# ------------------------------------------------------------------------------------------- aligner
def _push_frames(al: Aligner, ts: np.ndarray, x: np.ndarray):
    lanes = np.broadcast_to(np.arange(x.shape[1]), x.shape).ravel()
    return al.push(lanes, np.repeat(ts, x.shape[1]), x.ravel())


def test_aligner_regular_frames_pass_through() -> None:
    al = Aligner(3, 60.0)
    ts = T0 + np.arange(60) / 60.0
    x = np.arange(180, dtype=float).reshape(60, 3)
    t1, f1 = _push_frames(al, ts[:30], x[:30])
    t2, f2 = _push_frames(al, ts[30:], x[30:])
    t3, f3 = al.flush()
    t = np.concatenate([t1, t2, t3])
    f = np.vstack([f1, f2, f3])
    assert np.allclose(t, ts) and np.array_equal(f, x)
    assert al.problems.total() == 0


def test_aligner_counts_back_jumps_gaps_silence_and_late_samples() -> None:
    al = Aligner(2, 60.0, silent_s=0.5, max_wait_s=0.1)
    ts = T0 + np.arange(120) / 60.0
    x = np.ones((120, 2))
    _push_frames(al, ts[:60], x[:60])
    # lane 1 goes quiet for 1 s, lane 0 carries on; one sample of lane 0 jumps 2 s back
    al.push(np.zeros(60, int), ts[60:], x[60:, 0])
    al.push(np.array([0]), np.array([ts[10]]), np.array([5.0]))
    _, f = al.push(np.zeros(0, int), np.zeros(0), np.zeros(0), until=ts[-1] + 0.3)
    assert al.problems["ts_back"] == 1
    assert al.problems["silent"] == 1
    assert np.isnan(f[-1, 1]) and f[-1, 0] == 1.0
    # lane 1 comes back: a gap, and it speaks again
    ts2 = T0 + np.arange(120, 150) / 60.0
    _push_frames(al, ts2, np.ones((30, 2)))
    al.flush()
    assert al.problems["gap"] >= 1 and al.problems["recovered"] == 1


def test_aligner_drops_a_lone_sample_far_ahead_and_skips_a_long_pause() -> None:
    al = Aligner(1, 60.0)
    ts = T0 + np.arange(60) / 60.0
    _push_frames(al, ts, np.ones((60, 1)))
    al.push(np.array([0]), np.array([T0 + 1e6]), np.array([1.0]))
    assert al.problems["ts_jump"] == 1
    # the whole stream resumes after an hour: skipped, not filled frame by frame
    ts2 = T0 + 3600 + np.arange(60) / 60.0
    t, _ = _push_frames(al, ts2, np.ones((60, 1)))
    t3, _ = al.flush()
    assert al.problems["time_skip"] == 1
    assert t.size + t3.size < 400


# ------------------------------------------------------------------------------------------- MCAP
def write_session(path: Path, store: str = "st1", shelf: str = "S1", lanes: tuple[str, ...] = ("L1", "L2"),
                  seconds: float = 10.0, pick_at: float | None = 5.0, pick_g: float = 300.0,
                  bad: bool = True, attach: str | None = None) -> None:
    rate = 60.0
    n = int(seconds * rate)
    rng = np.random.default_rng(1)
    x = 1000.0 + rng.normal(0, 1, (n, len(lanes)))
    if pick_at is not None:
        x[int(pick_at * rate):, 0] -= pick_g
    name = topic(Kind.LOADCELLS, store, shelf)
    with open(path, "wb") as f:
        w = Writer(f)
        w.start()
        sid = w.register_schema("walkout.LoadCellMsg", "jsonschema",
                                json.dumps(LoadCellMsg.model_json_schema()).encode())
        ch = w.register_channel(name, "json", sid)
        other = w.register_channel(topic(Kind.STATUS, store, "x"), "json", sid)
        w.add_message(other, log_time=1, publish_time=1, data=b"{}", sequence=0)
        for seq, i in enumerate(range(0, n, 6)):
            msg = LoadCellMsg(source="sim", seq=seq, ts=T0 + i / rate, shelf=shelf, rate_hz=rate,
                              lanes=list(lanes), samples=x[i:i + 6].tolist())
            t_ns = int((T0 + i / rate) * 1e9)
            w.add_message(ch, log_time=t_ns, publish_time=t_ns, data=encode(msg), sequence=seq)
            if bad and i == 60:
                w.add_message(ch, log_time=t_ns + 1, publish_time=t_ns + 1, data=b'{"v": 1, "broken"',
                              sequence=10_000)
        if attach is not None:
            w.add_attachment(create_time=0, log_time=0, name="store.yaml", media_type="application/yaml",
                             data=attach.encode())
        w.finish()


def test_mcap_reader(tmp_path: Path) -> None:
    path = tmp_path / "session.mcap"
    write_session(path)
    r = McapReader(path)
    assert r.channels == ["L1", "L2"] and r.shelf_hint == {"L1": "S1", "L2": "S1"}
    assert r.rate_hz == 60.0
    blocks = list(r.blocks())
    assert sum(len(b) for b in blocks) == 600 * 2
    assert r.problems["rejected"] == 1
    ts = np.concatenate([b.ts for b in blocks])
    assert ts.min() == pytest.approx(T0) and ts.max() == pytest.approx(T0 + 599 / 60)
    assert r.store_yaml() is None


def test_mcap_reader_rejects_a_non_mcap_file(tmp_path: Path) -> None:
    p = tmp_path / "x.mcap"
    p.write_bytes(b"not an mcap")
    with pytest.raises(ConfigError, match="MCAP"):
        McapReader(p)


# ------------------------------------------------------------------------------------------- socket
def serve_lines(port: int, payload: bytes, ready: threading.Event, delay: float = 0.3) -> None:
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(1)
        ready.set()
        srv.settimeout(10)
        conn, _ = srv.accept()
        with conn:
            time.sleep(delay)  # pyserial flushes what arrives while it opens the socket
            for k in range(0, len(payload), 997):  # lines cut across TCP segments
                conn.sendall(payload[k:k + 997])
                time.sleep(0.001)


def test_line_reader_over_a_socket_with_calibration() -> None:
    port = free_port()
    rate = 60.0
    lines = ["# walkout-loadcells 1", "# lanes L1 L2"]
    for i in range(300):
        raw0 = 10_000 + (0 if i < 150 else -3_000)  # 300 g taken at scale 0.1
        lines.append(f"{T0 + i / rate:.4f} * {raw0} 20000")
    lines.append("this line is garbled")
    payload = ("\n".join(lines) + "\n").encode()
    ready = threading.Event()
    th = threading.Thread(target=serve_lines, args=(port, payload, ready), daemon=True)
    th.start()
    ready.wait(5)
    cal = CalibrationFile(default=ChannelCalibration(tare=0.0, scale=0.1))
    r = LineReader(f"socket://127.0.0.1:{port}", calibration=cal, reconnect=False, block_s=0.05)
    blocks = list(r.blocks())
    th.join(5)
    got = np.concatenate([b.grams[b.lane == r.channels.index("L1")] for b in blocks])
    assert got.size == 300
    assert np.allclose(got[:150], 1000.0) and np.allclose(got[150:], 700.0)
    assert r.problems["garbled"] == 1 and r.problems["disconnects"] == 1
    assert any(b.until is not None for b in blocks)


def test_line_reader_gives_up_on_a_closed_port_without_reconnect() -> None:
    r = LineReader(f"socket://127.0.0.1:{free_port()}", reconnect=False)
    assert list(r.blocks()) == []
    assert r.problems["connect_failed"] == 1

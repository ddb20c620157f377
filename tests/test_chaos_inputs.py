"""The fault suite's input scenarios, small: the ACL of the deployed broker, fuzzed payloads through it into
the running fusion, entry gate and recorder (and fuzzed load-cell lines into the shelf gateway), fuzzed store
descriptions; and the fault injectors themselves (the TCP proxy, the fuzz generators)."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos import inputs
from chaos.feed import load_feed
from chaos.fuzz import PayloadFuzzer, expected_counts, fuzz_stores, loadcell_lines, mutate_bytes, small_store
from chaos.proxy import TcpProxy
from wire.codec import WireError, decode
from wire.topics import TOPICS, Kind


@pytest.fixture(scope="module")
def feed():
    return load_feed("smoke", cache=False)


@pytest.mark.mosquitto
def test_acl_refuses_every_foreign_publish(feed, tmp_path: Path) -> None:
    row = inputs.acl_check(feed, tmp_path)
    assert row.ok, row.measured
    assert row.figures["forbidden"] >= 50


@pytest.mark.mosquitto
@pytest.mark.slow
def test_fuzzed_payloads_crash_nothing_and_every_reject_is_counted(feed, tmp_path: Path) -> None:
    row = inputs.payload_fuzz(feed, tmp_path, per_topic=400, lines=3000)
    assert row.ok, json.dumps(row.figures, default=str)[:3000]
    assert row.figures["rejected_expected"] > 0.8 * row.figures["sent"]


def test_fuzzed_store_configs_only_raise_config_errors(feed) -> None:
    row = inputs.config_fuzz(feed, 1500)
    assert row.ok, row.measured
    assert row.figures["rejected"] > 0 and row.figures["accepted"] > 0


# ------------------------------------------------------------------------------------------------ generators
@pytest.mark.parametrize("kind", list(Kind))
def test_payload_fuzzer_mixes_valid_invalid_and_duplicate_payloads(kind: Kind) -> None:
    key = "k1"
    msgs = list(itertools.islice(PayloadFuzzer("st", kind, key, "src", seed=1), 600))
    counts = expected_counts("st", [kind], msgs)
    assert counts["received"] == 600
    assert counts["rejected"] > 300 and counts["accepted"] > 10 and counts["duplicate"] > 0
    assert all(t == msgs[0][0] for t, _ in msgs) and max(len(p) for _, p in msgs) <= 200_000
    assert TOPICS[kind].regex().match(msgs[0][0])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_tracks_the_wire_accepts_keep_the_floor_tracker_finite(feed, seed: int) -> None:
    """Found by the payload fuzz: finite but absurd geometry (1e308 m) passed validation and overflowed the
    floor tracker's arithmetic into inf/NaN; the wire now bounds it (each seed hit it within 3,000 payloads)."""
    import warnings

    from fusion.engine import FusionEngine

    store = feed.store
    cam = store.cameras[0].id
    engine = FusionEngine(store)
    accepted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for name, payload in itertools.islice(PayloadFuzzer(store.store.id, Kind.TRACKS, cam, "camera-x", seed), 3000):
            try:
                _, msg = decode(name, payload)
            except WireError:
                continue
            accepted += 1
            engine.offer(msg)
        engine.finish()
    assert accepted > 100


@pytest.mark.parametrize(("path", "value"), [(("floor", 0), 1e308), (("floor_cov", 0), 1e300), (("box", 2), 1e300),
                                             (("head", "ray", "origin", 1), -1e200), (("head", "px", 0), 1e300)])
def test_wire_rejects_absurd_geometry(feed, path: tuple, value: float) -> None:
    cam = feed.store.cameras[0].id
    track = {"id": 1, "box": [10.0, 10.0, 50.0, 90.0], "conf": 0.9, "floor": [2.0, 3.0],
             "floor_cov": [0.01, 0.0, 0.01],
             "head": {"px": [30.0, 20.0], "conf": 0.9, "ray": {"origin": [1.0, 1.0, 3.0], "dir": [0.0, 0.0, -1.0]}}}
    msg = {"v": 1, "source": f"camera-{cam}", "seq": 1, "ts": 1.7e9, "camera": cam, "frame": 1, "tracks": [track]}
    name = f"walkout/v1/{feed.store_id}/camera/{cam}/tracks"
    decode(name, json.dumps(msg))  # valid as written
    node = track
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(WireError, match=path[0]):
        decode(name, json.dumps(msg))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2**32))
def test_mutated_bytes_only_ever_raise_wire_errors(raw: bytes, seed: int) -> None:
    import random

    data = mutate_bytes(raw or b"{}", random.Random(seed))
    try:
        decode("walkout/v1/s/shelf/x/events", data)
    except WireError:
        pass


def test_loadcell_lines_are_single_lines_with_a_header() -> None:
    lines = list(loadcell_lines(["a", "b"], 3000, seed=2))
    assert lines[1] == "# lanes a b"
    assert all(len(ln.splitlines()) == 1 for ln in lines)


def test_fuzzed_stores_are_deterministic(feed) -> None:
    base = small_store(feed.store_data)
    a = list(itertools.islice(fuzz_stores(base, 50, seed=3), 50))
    b = list(itertools.islice(fuzz_stores(base, 50, seed=3), 50))
    assert json.dumps(a, default=str) == json.dumps(b, default=str)


# ------------------------------------------------------------------------------------------------ the proxy
def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket = c) -> None:
                while data := c.recv(4096):
                    c.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_proxy_stall_holds_bytes_and_cut_refuses_connections() -> None:
    srv, port = _echo_server()
    proxy = TcpProxy(("127.0.0.1", port)).start()
    try:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        c.sendall(b"one")
        assert c.recv(10) == b"one"
        proxy.stall()
        c.sendall(b"two")
        c.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.recv(10)  # held in the proxy, connection still open
        proxy.resume()
        c.settimeout(5)
        assert c.recv(10) == b"two"
        proxy.cut()
        c.settimeout(5)
        assert c.recv(10) == b""  # closed by the cut
        d = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert d.recv(10) == b""  # refused while cut
        proxy.resume()
        time.sleep(0.1)
        e = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        e.sendall(b"three")
        assert e.recv(10) == b"three"
        assert proxy.refused >= 1
    finally:
        proxy.close()
        srv.close()

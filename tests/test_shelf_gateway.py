"""The ``walkout edge shelf`` process: sources, planograms, dry run, publishing over MQTT."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.writer import Writer

from calibration.store import store_from_dict
from edge.shelf.gateway import Layout, event_id
from edge.shelf.planogram import Planogram, parse_plates, sku_from_name
from tests.fixtures_mqtt import wait_for
from tests.test_shelf_readers import write_session
from walkout.cli import main as walkout_main
from wire.codec import encode
from wire.messages import LoadCellMsg, ShelfEventMsg, StatusMsg
from wire.topics import Kind, topic

T0 = 1_700_000_000.0


def store_dict(store_id: str = "st1", cells: bool = False) -> dict:
    lanes = []
    for j, sku in enumerate(["A", "B"]):
        lane = {"id": f"L{j + 1}", "sku": sku, "box": {"min": [0.2 * j, 1, 1], "max": [0.2 * j + 0.2, 1.4, 1.3]}}
        if cells:
            lane["load_cells"] = [f"L{j + 1}a", f"L{j + 1}b"]
        lanes.append(lane)
    return {
        "store": {"id": store_id, "size": [5.0, 5.0]},
        "catalogue": [{"sku": "A", "name": "Apple juice", "price": 199, "weight_g": 300.0, "weight_sd_g": 3.0},
                      {"sku": "B", "name": "Bread", "price": 299, "weight_g": 520.0, "weight_sd_g": 5.0}],
        "shelf_units": [{"id": "U1", "shelves": [{"id": "S1", "lanes": lanes}]}],
        "gates": [{"id": "G1", "region": {"min": [0.0, 0.0], "max": [1.0, 0.5]}}],
        "exits": [{"id": "X1", "region": {"min": [2.0, 0.0], "max": [3.0, 0.5]}}],
    }


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = walkout_main(["edge", "shelf", *args])
    return rc, out.getvalue(), err.getvalue()


def test_session_mcap_with_its_store_attached_needs_no_other_file(tmp_path: Path) -> None:
    path = tmp_path / "session.mcap"
    write_session(path, attach=yaml.safe_dump(store_dict()))
    rc, out, err = cli("--source", str(path), "--dry-run", "--json", "--device", "gw-1")
    assert rc == 0, err
    msgs = [ShelfEventMsg.model_validate_json(ln) for ln in out.splitlines()]
    assert [(m.shelf, m.action, m.candidates[0].sku, m.candidates[0].qty) for m in msgs] == [("S1", "pick", "A", 1)]
    assert msgs[0].source == "gw-1" and msgs[0].lanes[0].lane == "L1"
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["events"] == 1 and summary["rejected"] == 1  # the broken message in the file


def test_load_cells_of_a_lane_are_summed(tmp_path: Path) -> None:
    store_file = tmp_path / "store.yaml"
    store_file.write_text(yaml.safe_dump(store_dict(cells=True)))
    path = tmp_path / "session.mcap"
    # four cells; L2's two cells each lose 260 g: one B (520 g) taken from lane L2
    rate = 60.0
    rng = np.random.default_rng(2)
    x = 1000.0 + rng.normal(0, 0.8, (600, 4))
    x[300:, 2:] -= 260.0
    with open(path, "wb") as f:
        w = Writer(f)
        w.start()
        sid = w.register_schema("walkout.LoadCellMsg", "jsonschema", b"{}")
        ch = w.register_channel(topic(Kind.LOADCELLS, "st1", "S1"), "json", sid)
        for i in range(0, 600, 12):
            m = LoadCellMsg(source="sim", seq=i, ts=T0 + i / rate, shelf="S1", rate_hz=rate,
                            lanes=["L1a", "L1b", "L2a", "L2b"], samples=x[i:i + 12].tolist())
            w.add_message(ch, log_time=int((T0 + i / rate) * 1e9), publish_time=0, data=encode(m), sequence=i)
        w.finish()
    rc, out, err = cli("--source", str(path), "--store", str(store_file), "--dry-run", "--json")
    assert rc == 0, err
    got = [ShelfEventMsg.model_validate_json(ln) for ln in out.splitlines()]
    assert [(m.action, m.candidates[0].sku, [ln.lane for ln in m.lanes]) for m in got] == [("pick", "B", ["L2"])]
    assert got[0].delta_g == pytest.approx(-520.0, abs=3.0)


@pytest.mark.parametrize("args, message", [
    (["--source", "{mcap}", "--dry-run"], "no planogram"),
    (["--source", "{mcap}", "--store", "{bad_store}", "--dry-run"], "catalogue[0].weight_g"),
    (["--source", "{tmp}/nothing-here", "--planogram", "{tmp}/p.csv", "--dry-run"], "<source>"),
    (["--source", "{mcap}", "--planogram", "{tmp}/missing.csv", "--dry-run"], "file not found"),
    (["--source", "{mcap}", "--store", "{store}", "--broker", "nohost"], "host:port"),
])
def test_bad_configuration_fails_with_file_field_and_reason(tmp_path: Path, args: list[str], message: str) -> None:
    mcap = tmp_path / "s.mcap"
    write_session(mcap)
    store = tmp_path / "store.yaml"
    store.write_text(yaml.safe_dump(store_dict()))
    bad = store_dict()
    bad["catalogue"][0]["weight_g"] = -5
    bad_store = tmp_path / "bad.yaml"
    bad_store.write_text(yaml.safe_dump(bad))
    fill = {"mcap": str(mcap), "store": str(store), "bad_store": str(bad_store), "tmp": str(tmp_path)}
    rc, out, err = cli(*[a.format(**fill) for a in args])
    assert rc == 1 and out == ""
    assert message in err and err.startswith("error: ")


@pytest.mark.mosquitto
def test_events_and_status_are_published_over_mqtt(tmp_path: Path, mqtt_broker, store_id: str, transports) -> None:
    host, port = mqtt_broker
    store_file = tmp_path / "store.yaml"
    store_file.write_text(yaml.safe_dump(store_dict(store_id)))
    path = tmp_path / "session.mcap"
    write_session(path, store=store_id)
    got: list[ShelfEventMsg] = []
    status: list[StatusMsg] = []
    sub = transports(store_id, "listener", "fusion")
    sub.subscribe(Kind.SHELF_EVENTS, lambda info, msg: got.append(msg))
    sub.subscribe(Kind.STATUS, lambda info, msg: status.append(msg), key="gw-mqtt")
    sub.start()
    assert sub.wait_ready(10)
    rc, _, err = cli("--source", str(path), "--store", str(store_file), "--broker", f"{host}:{port}",
                     "--device", "gw-mqtt", "--outbox", str(tmp_path / "outbox.db"))
    assert rc == 0, err
    wait_for(lambda: len(got) == 1 and any(s.state == "stopped" for s in status), 10, "event and status")
    msg = got[0]
    assert (msg.source, msg.shelf, msg.action, msg.candidates[0].sku) == ("gw-mqtt", "S1", "pick", "A")
    ours = [s for s in status if "events" in s.counters]  # the gateway's own counters (the transport adds its own)
    assert ours and ours[-1].counters["events"] == 1 and ours[-1].kind == "shelf"
    assert ours[-1].counters["samples_k"] >= 1 and ours[-1].counters["rejected"] == 1
    assert ours[-1].watermark is not None and T0 + 9.0 < ours[-1].watermark < T0 + 10.0  # all out at the end


# ------------------------------------------------------------------------------------------- planogram
@pytest.mark.parametrize("text, plates", [
    ("7", [7]), ("4,5", [4, 5]), ("4-6", [4, 5, 6]), ("[4, 5]", [4, 5]), ("-1", []), ("", []), ("5.0", [5]),
])
def test_aifi_plate_lists(text: str, plates: list[int]) -> None:
    assert parse_plates(text) == plates


@pytest.mark.parametrize("name, sku", [
    ("FIJI WATER .5 LTR", "FIJI_WATER_.5_LTR"),
    (" L'Oreal Paris Feria", "L_Oreal_Paris_Feria"),
    ("Kettle Brand Potato Chips, Sea Salt", "Kettle_Brand_Potato_Chips_Sea_Salt"),
    ("---", "P"),
])
def test_sku_from_name(name: str, sku: str) -> None:
    assert sku_from_name(name) == sku


def test_aifi_planogram_as_it_is(tmp_path: Path) -> None:
    csv = tmp_path / "products.csv"
    csv.write_text(
        "Name,Gondola,Shelf,Plate,Weight,Price,Image\n"
        "Cola,1,2,3,355.0,2,http://x\n"
        "Cola,1,2,4,355.0,2,http://x\n"
        '"Chips, salted",1,2,"5,6",150.0,3,http://y\n'
        "Ghost,1,2,7,0.0,1,http://z\n"
        "Spare,-1,-1,-1,99.5,1,http://w\n"
        "Broken,one,2,3,10,1,x\n")
    pg = Planogram.from_aifi_csv(csv, lanes=["1.2.1", "1.2.12"])
    assert set(pg.products) == {"Cola", "Chips_salted", "Spare"}
    assert pg.products["Cola"].weight_sd_g == pytest.approx(0.05 * 355.0)
    assert pg.products["Cola"].price == 200
    assert pg.shelves == {"1.2": ["1.2.1", "1.2.3", "1.2.4", "1.2.5", "1.2.6", "1.2.12"]}
    assert pg.holds("1.2.5") == {"Chips_salted": None} and pg.holds("1.2.1") == {}


def test_layout_and_event_ids() -> None:
    lay = Layout.from_channels(["2.1.10", "2.1.2", "1.5.1"], {"2.1.10": "2.1", "2.1.2": "2.1", "1.5.1": "1.5"})
    assert lay.shelves == [("1.5", ["1.5.1"]), ("2.1", ["2.1.2", "2.1.10"])]
    store = store_from_dict(store_dict(cells=True))
    lay = Layout.from_store(store, channels=["L1a", "L1b", "L2a"])
    assert lay.cells == ["L1a", "L1b", "L2a", "L2b"] and lay.cell_start.tolist() == [0, 2] and lay.summed
    assert event_id("S1", T0 + 1.2345) == "S1-1700000001234"
    assert len(event_id("x" * 64, T0)) <= 64


# ------------------------------------------------------------------------------------------- watermark
def _gateway_steps(x: np.ndarray, block: int, rate: float = 60.0):
    """Feed frames ``x`` (samples, lanes) of store_dict()'s shelf to a gateway ``block`` samples at a time;
    per block: (newest frame processed, watermark after it, events it emitted)."""
    from edge.shelf.gateway import ShelfGateway
    from edge.shelf.readers import SampleBlock

    store = store_from_dict(store_dict())
    layout = Layout.from_store(store)
    counter = iter(range(1 << 30))
    gw = ShelfGateway(layout, Planogram.from_store(store), "gw-wm", lambda: next(counter), rate)
    assert gw.watermark() is None  # nothing processed yet: no claim
    n, lanes = x.shape
    steps = []
    for i in range(0, n, block):
        rows = x[i:i + block]
        ts = np.repeat(T0 + np.arange(i, i + len(rows)) / rate, lanes)
        blk = SampleBlock(np.tile(np.arange(lanes, dtype=np.int32), len(rows)), ts, rows.ravel())
        msgs = gw.feed(blk, layout.cells)
        steps.append((gw.processed_until, gw.watermark(), msgs))
    return steps


@pytest.mark.parametrize("block, grams, action", [(6, -300.0, "pick"), (30, -300.0, "pick"), (6, 520.0, "put"),
                                                  (1, -300.0, "pick")])
def test_watermark_stays_at_an_activity_start_until_its_event_is_emitted(block: int, grams: float,
                                                                         action: str) -> None:
    """The gateway's low watermark follows the newest frame while the shelf is quiet, stops at the start of
    an activity while it is not emitted yet, and moves on once its event is out: no event ever starts before
    a watermark the gateway reported earlier."""
    rate, n = 60.0, 600
    rng = np.random.default_rng(4)
    x = 1000.0 + rng.normal(0, 0.8, (n, 2))
    lane = 0 if action == "pick" else 1
    x[300:330, lane] += np.linspace(0, grams, 30)  # a half-second step on one lane from 5 s
    x[330:, lane] += grams
    steps = _gateway_steps(x, block, rate)
    events = [(k, m) for k, (_, _, msgs) in enumerate(steps) for m in msgs]
    assert [m.action for _, m in events] == [action]
    k_emit, ev = events[0]
    first = next(k for k, (until, _, _) in enumerate(steps) if until is not None)  # the aligner's first frames
    assert all(wm is None for _, wm, _ in steps[:first])
    steps, k_emit = steps[first:], k_emit - first
    marks = [wm for _, wm, _ in steps]
    assert marks == sorted(marks)  # never goes back
    for k, (until, wm, _) in enumerate(steps):
        if k < k_emit:
            assert wm <= ev.t_start + 1e-9  # the event was not out: the watermark did not pass its start
        if wm < until - 1e-9:  # held back: by the activity in progress
            assert k < k_emit and wm == pytest.approx(ev.t_start)
    held = [k for k, (until, wm, _) in enumerate(steps) if wm < until - 1e-9]
    assert held and held[-1] == k_emit - 1  # held from the activity's start until the event was emitted
    assert steps[k_emit][1] == steps[k_emit][0]  # then it follows the newest frame again
    assert steps[0][1] == steps[0][0] < T0 + 1.0

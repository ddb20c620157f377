"""The shelf gateway on the real AiFi shelf recordings (cps-test-01): exactly the two labelled picks."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from edge.shelf.gateway import Layout, ShelfGateway, run
from edge.shelf.planogram import Planogram
from edge.shelf.readers import CsvFolderReader
from edge.shelf.stats import trace_stats
from walkout.cli import main as walkout_main
from wire.messages import ShelfEventMsg

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def aifi(realdata: Path) -> Path:
    root = realdata / "aifi_autocheckout_2020"
    if not (root / "traces_test1").is_dir() or not (root / "ground_truth" / "test1-all_product.csv").is_file():
        pytest.skip(f"AiFi traces or planogram absent under {root}")
    return root


@pytest.fixture(scope="module")
def events(aifi: Path) -> tuple[list[ShelfEventMsg], Planogram]:
    reader = CsvFolderReader(aifi / "traces_test1")
    layout = Layout.from_channels(reader.channels, reader.shelf_hint)
    planogram = Planogram.from_aifi_csv(aifi / "ground_truth" / "test1-all_product.csv", lanes=layout.lanes)
    counter = iter(range(1000))
    gateway = ShelfGateway(layout, planogram, "test-shelf", lambda: next(counter), 60.0)
    out: list[ShelfEventMsg] = []
    run(reader, gateway, out.append)
    assert gateway.stats.samples > 600_000 and reader.problems.total() == 0
    return out, planogram


def _name(planogram: Planogram, sku: str) -> str:
    return planogram.products[sku].name


def test_exactly_the_two_labelled_picks(events: tuple[list[ShelfEventMsg], Planogram]) -> None:
    msgs, planogram = events
    got = sorted(
        (m.shelf, m.action, _name(planogram, m.candidates[0].sku), m.candidates[0].qty,
         max(m.lanes, key=lambda ln: abs(ln.delta_g)).lane, frozenset(ln.lane for ln in m.lanes))
        for m in msgs
    )
    assert [g[:5] for g in got] == [
        ("1.5", "pick", "FIJI WATER .5 LTR", 1, "1.5.10"),
        ("2.5", "pick", "Taco Bell Fire", 1, "2.5.4"),
    ]
    assert {"2.5.4", "2.5.5"} <= got[1][5]  # the Taco Bell bag lay on plates 4-5
    fiji, taco = sorted(msgs, key=lambda m: m.shelf)
    assert -600 < fiji.delta_g < -520 and -115 < taco.delta_g < -90
    assert fiji.candidates[0].p > 0.8 and taco.candidates[0].p > 0.8
    assert not fiji.candidates[0].foreign and not taco.candidates[0].foreign
    # the labels: Taco Bell at 22:24:15, FIJI a little later; both emitted within a second of settling
    assert taco.t_end < fiji.t_start
    assert abs(taco.t_start - 1580250255.2) < 1.0 and abs(fiji.t_start - 1580250261.6) < 1.0
    for m in msgs:
        assert m.parent_id is None and m.source == "test-shelf"


def test_cli_dry_run_json_on_the_real_folder(aifi: Path) -> None:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = walkout_main(["edge", "shelf", "--source", str(aifi / "traces_test1"), "--planogram",
                           str(aifi / "ground_truth" / "test1-all_product.csv"), "--dry-run", "--json",
                           "--device", "cli-test"])
    assert rc == 0
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    msgs = [ShelfEventMsg.model_validate_json(ln) for ln in lines]
    assert sorted((m.shelf, m.action, m.candidates[0].sku, m.candidates[0].qty) for m in msgs) == [
        ("1.5", "pick", "FIJI_WATER_.5_LTR", 1), ("2.5", "pick", "Taco_Bell_Fire", 1)]
    assert [m.seq for m in msgs] == [0, 1]
    assert all(json.loads(ln)["v"] == 1 for ln in lines)


@pytest.mark.parametrize("plate, noise_max, step", [
    ("2.5.4", 1.5, True),    # quiet gondola, the Taco Bell pick
    ("1.5.10", 12.0, True),  # vibrating gondola, the FIJI pick
    ("3.5.3", 4.0, False),   # nothing happens
])
def test_trace_stats_on_real_plates(aifi: Path, plate: str, noise_max: float, step: bool) -> None:
    g, s, p = plate.split(".")
    a = np.loadtxt(aifi / "traces_test1" / f"gondola_{g}_shelf_{s}_plate_{p}.csv", delimiter=",")
    st = trace_stats(a[:, 0], a[:, 1])
    assert set(st) == {"noise_g", "drift_g_per_min", "unsettled_s"}
    assert 0.05 < st["noise_g"] < noise_max
    assert abs(st["drift_g_per_min"]) < 20.0
    if step:
        assert st["unsettled_s"] is not None and 0.1 < st["unsettled_s"] < 5.0
    else:
        assert st["unsettled_s"] is None

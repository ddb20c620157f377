"""``walkout sim`` beyond the default store: any store description can be simulated, ``--preview`` writes the
contact sheet, and what cannot be simulated (frames of a store without cameras, unknown cameras) is a clear
error, not a traceback or a half-written session."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import pytest
import yaml

from sim.preview import HEADER
from sim.session import Session
from walkout.cli import main


def tiny_store(tmp_path: Path) -> Path:
    """A store written by hand: two units (one turned 90 degrees), two products, a gate and an exit, and no
    cameras."""
    def lane(uid: str, k: int, sku: str, turned: bool) -> dict:
        lo = [4.0, 0.8 + 0.4 * k, 0.5] if turned else [1.0 + 0.4 * k, 2.0, 0.5]
        hi = [4.5, 1.19 + 0.4 * k, 0.8] if turned else [1.39 + 0.4 * k, 2.5, 0.8]
        return {"id": f"{uid}-L{k}", "sku": sku, "box": {"min": lo, "max": hi}}

    data = {"store": {"id": "tiny", "size": [6.0, 4.0]},
            "catalogue": [{"sku": "X", "name": "x", "price": 100, "weight_g": 50.0},
                          {"sku": "Y", "name": "y", "price": 250, "weight_g": 330.0}],
            "shelf_units": [
                {"id": "A", "shelves": [{"id": "A-S1",
                                         "lanes": [lane("A", k, "XXYY"[k], False) for k in range(4)]}]},
                {"id": "B", "shelves": [{"id": "B-S1",
                                         "lanes": [lane("B", k, "Y", True) for k in range(4)]}]}],
            "gates": [{"id": "g", "region": {"min": [0.2, 0.0], "max": [1.0, 0.6]}}],
            "exits": [{"id": "e", "region": {"min": [5.0, 0.0], "max": [5.8, 0.6]}}]}
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_any_store_description_can_be_simulated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "session"
    rc = main(["sim", "--store", str(tiny_store(tmp_path)), "--preset", "standard", "--seed", "3",
               "--shoppers", "3", "--duration", "60", "--no-frames", "--out", str(out), "--json"])
    assert rc == 0, capsys.readouterr().err
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["shoppers"] == 3 and stats["unfinished_shoppers"] == 0 and stats["events"] > 0
    s = Session.open(out)
    assert s.store.store.id == "tiny" and not s.cameras
    assert set(s.loadcell_arrays()) == set(s.store.lanes)
    assert {lane for ev in s.truth["events"] for lane in ev["lanes"]} <= set(s.store.lanes)
    prices = {p.sku: p.price for p in s.store.catalogue}
    for v in s.truth["visits"]:
        assert v["complete"]
        qty: Counter[str] = Counter()
        for ev in (e for e in s.truth["events"] if e["visit"] == v["visit"]):
            qty[ev["sku"]] += ev["qty"] if ev["kind"] in ("pick", "pick_of_misplaced") else -ev["qty"]
        assert {ln["sku"]: ln["qty"] for ln in v["receipt"]["lines"]} == {k: n for k, n in qty.items() if n}
        assert v["receipt"]["total"] == sum(n * prices[k] for k, n in qty.items())


def test_preview_writes_a_contact_sheet_of_every_camera(tmp_path: Path) -> None:
    rc = main(["sim", "--preset", "easy", "--seed", "2", "--shoppers", "2", "--duration", "20",
               "--size", "160x120", "--fps", "1", "--no-frames", "--preview", "--out", str(tmp_path)])
    assert rc == 0
    sheet = cv2.imread(str(tmp_path / "preview.png"))
    assert sheet is not None
    n = len(Session.open(tmp_path).store.cameras)  # the default store's six cameras: 3 x 2 tiles
    assert n == 6
    assert sheet.shape[1] == 3 * 160 + 2 * 4 and sheet.shape[0] >= 2 * (120 + HEADER)
    assert sheet.std() > 10  # rendered views, not a blank page


@pytest.mark.parametrize("extra, field", [
    pytest.param([], "cameras", id="frames of a store without cameras"),
    pytest.param(["--no-frames", "--preview"], "cameras", id="preview of a store without cameras"),
])
def test_a_store_without_cameras_is_refused_where_frames_are_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], field: str) -> None:
    out = tmp_path / "session"
    rc = main(["sim", "--store", str(tiny_store(tmp_path)), "--duration", "20", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and f": {field}: " in err
    assert not out.exists()


def test_unknown_cameras_in_the_scenario_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scn = tmp_path / "scn.yaml"
    scn.write_text("cameras: {only: [cam1, cam99]}\n")
    rc = main(["sim", str(scn), "--duration", "20", "--no-frames", "--out", str(tmp_path / "session")])
    err = capsys.readouterr().err
    assert rc == 1 and "cameras.only" in err and "cam99" in err
    assert not (tmp_path / "session").exists()

"""The AiFi NanoStore importer: a valid store description from the real dataset, its planogram and prices,
its cameras, and its plates projected into the real camera frames."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml

from calibration.aifi import (
    FRAME_CAMERAS,
    _plates_field,
    build_store,
    overlay_frames,
    price_cents,
    read_plates,
    sku_of,
    write_store,
)
from calibration.camera import Camera
from calibration.store import load_store, store_from_dict
from walkout.cli import main


@pytest.mark.parametrize("text,plates", [
    ("7", (7,)), ("-1", ()), ("", ()), ("4,5", (4, 5)), ("[4, 5]", (4, 5)), ("4;6", (4, 6)),
    ("3-5", (3, 4, 5)),
    ("5,4,4", (4, 5)),
])
def test_plate_lists(text, plates):
    assert _plates_field(text) == plates


@pytest.mark.parametrize("text", ["x", "4,a", "1.5"])
def test_bad_plate_lists(text):
    with pytest.raises(ValueError):
        _plates_field(text)


@pytest.mark.parametrize("name,sku", [
    ("FIJI WATER .5 LTR", "fiji-water-5-ltr"), ("Andy Capp's Cheddar Fries", "andy-capp-s-cheddar-fries"),
    ("***", "product"), ("a" * 80, "a" * 64),
])
def test_sku_of(name, sku):
    assert sku_of(name) == sku


@pytest.mark.parametrize("text,cents", [("1", 100), ("2.5", 250), ("0", 0), ("10000", 1000000), ("0.015", 2)])
def test_price_cents(text, cents):
    assert price_cents(text) == cents


@pytest.mark.parametrize("text", ["-1", "nan", "abc"])
def test_bad_prices(text):
    with pytest.raises(ValueError):
        price_cents(text)


# ---------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def aifi(realdata):
    root = realdata / "aifi_autocheckout_2020"
    if not (root / "store_meta").is_dir():
        pytest.skip(f"{root} has no store_meta (the AiFi dataset is not there)")
    data, cameras = build_store(root, root / "ground_truth" / "test1-all_product.csv")
    return root, data, cameras


@pytest.mark.realdata
def test_import_gives_a_valid_store(aifi):
    root, data, _ = aifi
    store = store_from_dict(data)
    assert [u.id for u in store.shelf_units] == [f"gondola-{g}" for g in range(1, 6)]
    assert len(store.shelves) == 30 and len(store.lanes) == 306
    planned = {ln.id: ln.sku for ln in store.lanes.values() if ln.sku}
    assert len(planned) == 294
    # the two picks of test case cps-test-01, as labelled in ground_truth/v14.json
    assert store.products[planned["g1-s5-p10"]].name == "FIJI WATER .5 LTR"
    assert store.products[planned["g1-s5-p10"]].weight_g == pytest.approx(538.0, abs=1.0)
    taco = {store.products[planned[lane]].name for lane in ("g2-s5-p4", "g2-s5-p5")}
    assert taco == {"Taco Bell Fire"}
    assert all(isinstance(p.price, int) and p.price >= 0 for p in store.catalogue)
    assert len({p.sku for p in store.catalogue}) == len(store.catalogue)
    # every lane reads its own plate, named like the recorded traces
    traces = {p.stem for p in (root / "traces_test1").glob("*.csv")}
    cells = [ln.cells[0] for ln in store.lanes.values()]
    assert sum(c in traces for c in cells) >= 290


@pytest.mark.realdata
def test_plates_lie_on_shelves_inside_the_floor(aifi):
    root, data, _ = aifi
    store = store_from_dict(data)
    sx, sy = store.store.size
    for _, shelf, lane in store.iter_lanes():
        c = lane.box.corners()
        assert (c[:, 0] > 0).all() and (c[:, 0] < sx).all() and (c[:, 1] > 0).all() and (c[:, 1] < sy).all()
        assert 0.3 < c[:, 2].min() < 1.8
    # plates of one shelf are 4 inches wide and adjacent, left to right
    plates = [p for p in read_plates(root / "store_meta") if (p.gondola, p.shelf) == (1, 1)]
    widths = [np.linalg.norm(p.corners[1] - p.corners[0]) for p in plates]
    np.testing.assert_allclose(widths, 4 * 0.0254, atol=1e-4)
    for a, b in itertools.pairwise(plates):
        np.testing.assert_allclose(a.corners[1], b.corners[0], atol=1e-4)


@pytest.mark.realdata
def test_cameras_are_ceiling_cameras_over_the_floor(aifi):
    _, data, cameras = aifi
    sx, sy = data["store"]["size"]
    assert len(cameras) == 17                                 # 12 ceiling + 5 shelf cameras, no depth streams
    for cam in cameras.values():
        x, y, z = cam.position
        assert 0 < x < sx and 0 < y < sy and 2.2 < z < 2.7
        # looking down
        assert (cam.R[2] @ np.array([0, 0, -1.0])) > 0.3


@pytest.mark.realdata
def test_plates_project_into_the_real_frames(aifi, tmp_path):
    root, data, cameras = aifi
    store = write_store(data, cameras, tmp_path / "store")
    image, counts = overlay_frames(root, store, cameras)
    assert set(counts) == set(FRAME_CAMERAS)
    assert min(counts.values()) >= 80, counts          # every frame sees many plates inside it
    assert image.shape[0] > 1000 and image.shape[1] == 960
    # the written files load back: the store with its camera files
    loaded = load_store(tmp_path / "store" / "store.yaml")
    cam = Camera.from_file(tmp_path / "store" / loaded.cameras[0].file)
    assert cam.size == (640, 360)


@pytest.mark.realdata
def test_cli_import_aifi(aifi, tmp_path, capsys):
    root, _, _ = aifi
    out = tmp_path / "aifi"
    overlay = tmp_path / "overlay.png"
    code = main(["store", "import-aifi", str(root), "--out", str(out), "--overlay", str(overlay), "--json"])
    assert code == 0, capsys.readouterr().err
    assert overlay.stat().st_size > 100_000
    printed = capsys.readouterr().out
    assert '"lanes": 306' in printed
    assert main(["store", "check", str(out / "store.yaml")]) == 0
    data = yaml.safe_load((out / "store.yaml").read_text())
    assert len(data["cameras"]) == len(list((out / "cameras").glob("*.yaml")))


def test_cli_import_aifi_missing_folder(tmp_path, capsys):
    out = tmp_path / "aifi"
    assert main(["store", "import-aifi", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


def test_cli_import_aifi_bad_csv(tmp_path, capsys, realdata):
    root = realdata / "aifi_autocheckout_2020"
    if not (root / "store_meta").is_dir():
        pytest.skip("the AiFi dataset is not there")
    bad = tmp_path / "products.csv"
    bad.write_text("Name,Gondola,Shelf,Plate,Weight,Price,Image\nX,1,1,seven,10,1,\n")
    out = tmp_path / "aifi"
    assert main(["store", "import-aifi", str(root), "--products", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "products.csv" in err and "line 2" in err
    assert not (out / "store.yaml").exists()


def test_frame_map_names_dataset_cameras():
    assert list(FRAME_CAMERAS) == [f"cam{i}" for i in range(1, 9)]
    assert len(set(FRAME_CAMERAS.values())) == 8


@pytest.mark.realdata
def test_cli_import_aifi_unknown_camera_in_frame_map(aifi, tmp_path, capsys):
    root, _, _ = aifi
    out = tmp_path / "aifi"
    code = main(["store", "import-aifi", str(root), "--out", str(out), "--overlay", str(tmp_path / "o.png"),
                 "--frames", "cam8=99"])
    assert code == 1
    assert "no camera '99'" in capsys.readouterr().err
    assert not out.exists()

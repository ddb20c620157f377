"""The simulator's camera renderer: geometry through the real camera models, occlusion, truth, determinism,
robustness and ArUco floor markers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.camera import Camera
from calibration.markers import ARUCO_DICT, grid_layout
from sim.body import Appearance, Body, standing_skeleton
from sim.render import Frame, Renderer, RenderOptions
from sim.render_demo import demo_bodies, demo_store, fisheye_K, lane_front, pinhole_K, reach

CLEAN = RenderOptions(supersample=1, noise=0, blur=0, jpeg_quality=None, lighting_drift=0, flicker_prob=0,
                      drop_prob=0, shadows=False, variety=False)
RED = (0, 0, 230)
DEFAULT_STORE = Path(__file__).resolve().parents[1] / "sim" / "stores" / "default" / "store.yaml"


def plain_id(prefix: str) -> str:
    """A shopper id the renderer dresses without a cap, long hair, jacket or long sleeves (so a red-headed
    test body has only its head, neck and hands red)."""
    from sim.render_bodies import _traits

    for k in range(200):
        t = _traits(f"{prefix}{k}")
        if not (t.cap or t.long_hair or t.jacket or t.long_sleeves or t.backpack):
            return f"{prefix}{k}"
    raise AssertionError("no plain id")


def red_head_body(shopper: str, x: float, y: float, heading: float = 0.0, height: float = 1.75) -> Body:
    app = Appearance(shirt=(200, 120, 40), trousers=(60, 160, 60), skin=RED, hair=RED)
    return Body(shopper, standing_skeleton(x, y, heading, height), app)


def is_red(px: np.ndarray) -> bool:
    b, g, r = (int(v) for v in px)
    return r > 60 and r > 2.5 * max(b, g, 1)


@pytest.fixture(scope="module")
def store():
    # one single-sided unit along x at y 0.6..1.1 (front at y = 1.1), floor 6 x 5 m
    return demo_store(size=(6.0, 5.0), units=1, shelves=4, lanes_per_shelf=6, unit_length=1.8)


CAMERAS = {
    "pinhole": lambda: Camera.look_at("pinhole", "pinhole", (640, 480), pinhole_K(640, 480, 80), [],
                                      (3.0, 3.2, 3.0), (3.4, 2.6, 0.0)),
    "distorted": lambda: Camera.look_at("distorted", "pinhole", (640, 480), pinhole_K(640, 480, 95),
                                        [-0.28, 0.07, 0.001, -0.001, 0.0], (3.0, 3.2, 3.0), (3.4, 2.6, 0.0)),
    "fisheye": lambda: Camera.look_at("fisheye", "fisheye", (640, 480), fisheye_K(640, 480, 185),
                                      [0.03, -0.01, 0.002, 0.0], (3.0, 3.0, 3.0), (3.0, 3.0, 0.0)),
}


@pytest.fixture(scope="module")
def clean_renderer(store):
    cams = {k: make() for k, make in CAMERAS.items()}
    return Renderer(store, cams, seed=3, options=CLEAN)


# ------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("cam_id", list(CAMERAS))
@pytest.mark.parametrize("xy", [(3.3, 2.9), (4.2, 2.0), (2.6, 2.4)])
def test_head_renders_at_its_projection(clean_renderer, cam_id, xy):
    body = red_head_body(plain_id("A"), *xy)
    frame = clean_renderer.render(cam_id, 0.0, [body])
    cam = clean_renderer.cameras[cam_id]
    uv, ok = cam.project(body.head[None])
    assert ok[0]
    u, v = uv[0]
    img = frame.image
    # the projected pixel and its neighbours show the head
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            assert is_red(img[int(v) + dy, int(u) + dx]), (cam_id, xy, dx, dy)
    # the head's blob is centred on the projection, to a pixel or two
    b, g, r = (img[..., k].astype(int) for k in range(3))
    mask = ((r > 60) & (r > 2.5 * np.maximum(np.maximum(b, g), 1))).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask)
    blob = labels == labels[int(v), int(u)]
    ys, xs = np.nonzero(blob)
    assert np.hypot(xs.mean() + 0.5 - u, ys.mean() + 0.5 - v) < 2.0
    # and its size is the sphere's: area ~ pi (f r / d)^2, with the lens's local scale
    d = np.linalg.norm(body.head - cam.position)
    step = cam.project(np.array([body.head, body.head + np.cross(cam.R[2], cam.R[0]) * 0.01]))[0]
    px_per_m = np.linalg.norm(step[1] - step[0]) / 0.01
    expect = np.pi * (px_per_m * body.appearance.head_radius) ** 2 * (1 + (body.appearance.head_radius / d) ** 2)
    assert 0.6 * expect < blob.sum() < 1.6 * expect
    # truth: the head keypoint is the projection, visible
    (t,) = frame.truth
    assert t.shopper == body.shopper and t.head.visible and t.head.occluder in ("", "self")
    assert (t.head.x, t.head.y) == pytest.approx((u, v))


def test_truth_boxes_contain_the_drawn_body(clean_renderer):
    body = red_head_body("A", 3.4, 3.0)
    frame = clean_renderer.render("pinhole", 0.0, [body])
    static = clean_renderer.render("pinhole", 0.0, []).image
    changed = np.any(frame.image != static, axis=2)
    ys, xs = np.nonzero(changed)
    (t,) = frame.truth
    x0, y0, x1, y1 = t.box
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    assert t.visible_fraction == pytest.approx(1.0)
    assert t.visible_px == changed.sum()


# ------------------------------------------------------------------------------------------ occlusion
@pytest.fixture(scope="module")
def aisle_camera():
    # in the aisle in front of the unit, looking at it across the aisle from 2.4 m up
    return Camera.look_at("aisle", "pinhole", (640, 480), pinhole_K(640, 480, 75), [], (2.1, 4.6, 2.4),
                          (2.1, 0.8, 0.9))


@pytest.fixture(scope="module")
def aisle(store, aisle_camera):
    return Renderer(store, {"aisle": aisle_camera}, seed=1, options=CLEAN)


def test_body_behind_shelf_is_occluded(aisle, aisle_camera):
    r = aisle
    # a child between the unit and the back wall: the unit stands between it and the camera
    hidden = Body("B", standing_skeleton(2.1, 0.35, np.pi / 2, 1.2), Appearance(shirt=(0, 255, 255)))
    frame = r.render("aisle", 0.0, [hidden])
    static = r.render("aisle", 0.0, []).image
    uv, ok = aisle_camera.project(hidden.wrists)
    assert ok.all()
    for (u, v) in uv:
        assert np.array_equal(frame.image[int(v), int(u)], static[int(v), int(u)])  # the shelf is drawn there
    for t in frame.truth:  # if any of it shows (above the unit), its wrists are still hidden by the shelf
        assert not t.lwrist.visible and not t.rwrist.visible
        assert t.lwrist.occluder == t.rwrist.occluder == "static"


def test_reaching_arm_is_visible_and_partly_hidden(store, aisle):
    r = aisle
    lane = "U0S1L2"
    tgt, nrm = lane_front(store, lane)
    stand = tgt + nrm * 0.45
    joints = reach(standing_skeleton(stand[0], stand[1], float(np.arctan2(-nrm[1], -nrm[0]))), "r",
                   tgt - nrm * 0.04)
    body = Body("R", joints, Appearance())
    frame = r.render("aisle", 0.0, [body])
    (t,) = frame.truth
    assert t.rwrist.visible or t.rwrist.occluder == "self"
    assert 0.3 < t.visible_fraction <= 1.0


def test_nearer_body_occludes_farther(aisle, aisle_camera):
    r = aisle
    near = red_head_body("near", 2.1, 3.3)
    # the far body stands on the ray from the camera through the near body's head, 1.2 m farther
    d = near.head - aisle_camera.position
    d /= np.linalg.norm(d)
    far_head = near.head + d * 1.2
    far = red_head_body("far", far_head[0], far_head[1], height=1.75 * far_head[2] / near.head[2])
    frames = {order: r.render("aisle", 0.0, bodies)
              for order, bodies in (("nf", [near, far]), ("fn", [far, near]))}
    for frame in frames.values():
        truth = {t.shopper: t for t in frame.truth}
        assert truth["near"].head.visible
        assert "far" not in truth or (not truth["far"].head.visible and truth["far"].head.occluder == "body")
        assert "far" not in truth or truth["far"].visible_fraction < 0.5
    assert np.array_equal(frames["nf"].image, frames["fn"].image)  # nearest wins whatever the order


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_different_seed_differs(store):
    cams = {"c": Camera.look_at("c", "pinhole", (320, 240), pinhole_K(320, 240, 80), [], (3.0, 3.2, 3.0),
                                (3.4, 2.6, 0.0)),
            "f": Camera.look_at("f", "fisheye", (320, 240), fisheye_K(320, 240, 185), [], (3.0, 3.0, 3.0),
                                (3.0, 3.0, 0.0))}
    opts = RenderOptions(supersample=1, drop_prob=0.2, flicker_prob=0.3)

    def run(seed):
        r = Renderer(store, cams, seed=seed, options=opts)
        out = []
        for k in range(4):
            bodies = demo_bodies(store, np.random.default_rng(k), 5, t=k * 0.1)
            for cid in ("c", "f"):
                f = r.render(cid, k * 0.1, bodies)
                out.append((f.jpeg, f.dropped, [t.to_dict() for t in f.truth]))
        return out

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert [x[0] for x in a] != [x[0] for x in c]


# ------------------------------------------------------------------------------------------ truth invariants
@pytest.mark.parametrize("seed", range(4))
def test_visible_box_inside_full_box(clean_renderer, store, seed):
    bodies = demo_bodies(store, np.random.default_rng(seed), 8)
    seen = 0
    for cid, cam in clean_renderer.cameras.items():
        frame = clean_renderer.render(cid, 0.0, bodies)
        for t in frame.truth:
            x0, y0, x1, y1 = t.box
            f0, g0, f1, g1 = t.full_box
            assert f0 <= x0 < x1 <= f1 and g0 <= y0 < y1 <= g1
            assert 0 <= x0 and x1 <= cam.width and 0 <= y0 and y1 <= cam.height
            assert 0 < t.visible_fraction <= 1.0 + 1e-9
            assert t.visible_px > 0
            for kp in (t.head, t.lwrist, t.rwrist):
                if kp.visible:
                    assert 0 <= kp.x <= cam.width and 0 <= kp.y <= cam.height
            seen += 1
    assert seen > 0


def test_bodies_outside_view_or_behind_camera_do_not_crash(store):
    # a camera at head height looking along +x: bodies behind it, straddling its image plane, far away
    cam = Camera.look_at("low", "pinhole", (320, 240), pinhole_K(320, 240, 90), [], (2.0, 2.5, 1.5),
                         (5.0, 2.5, 1.5), up=(0, 0, 1))
    fish = Camera.look_at("fish", "fisheye", (320, 240), fisheye_K(320, 240, 185), [], (2.0, 2.5, 1.5),
                          (5.0, 2.5, 1.5), up=(0, 0, 1))
    r = Renderer(store, {"low": cam, "fish": fish}, seed=0, options=CLEAN)
    bodies = [
        red_head_body("behind", 1.0, 2.5),
        red_head_body("straddle", 2.0, 2.5),        # the camera is inside this body's head/torso region
        red_head_body("beside", 2.05, 2.9),          # partly behind the image plane
        red_head_body("far", 5.5, 2.5),
        red_head_body("off", 2.5, -30.0),            # far off the floor, outside the view
    ]
    for cid in ("low", "fish"):
        frame = r.render(cid, 0.0, bodies)
        assert frame.image.shape == (240, 320, 3)
        ids = {t.shopper for t in frame.truth}
        assert "far" in ids and "off" not in ids and "behind" not in ids or cid == "fish"
        for t in frame.truth:
            assert t.box[0] < t.box[2] and t.box[1] < t.box[3]
    assert r.render("low", 0.0, []).truth == []


def test_options_validation_and_drops(store):
    with pytest.raises(ValueError):
        RenderOptions(jpeg_quality=(90, 80))
    with pytest.raises(ValueError):
        RenderOptions(unknown=1)
    cams = {"c": Camera.look_at("c", "pinhole", (160, 120), pinhole_K(160, 120, 80), [], (3, 3, 3), (3, 2.5, 0))}
    always = Renderer(store, cams, options=RenderOptions(supersample=1, drop_prob=1.0))
    never = Renderer(store, cams, options=RenderOptions(supersample=1, drop_prob=0.0))
    assert all(always.render("c", k / 10, []).dropped for k in range(5))
    assert not any(never.render("c", k / 10, []).dropped for k in range(5))
    with pytest.raises(KeyError):
        never.render("nope", 0.0, [])


def test_jpeg_frame_carries_compression(store):
    cams = {"c": CAMERAS["pinhole"]()}
    r = Renderer(store, cams, options=RenderOptions(supersample=1, jpeg_quality=(60, 60)))
    f: Frame = r.render("c", 0.0, demo_bodies(store, np.random.default_rng(1), 4))
    assert f.jpeg is not None and f.jpeg_bytes() == f.jpeg
    assert f.image.shape == f.raw.shape and f.image.dtype == np.uint8
    assert not np.array_equal(f.image, f.raw)
    assert np.abs(f.image.astype(int) - f.raw.astype(int)).mean() < 6


# ------------------------------------------------------------------------------------------ markers
@pytest.mark.parametrize("cam_id", ["pinhole", "fisheye"])
def test_floor_markers_are_detected_where_they_project(store, cam_id):
    layout = grid_layout(store.store.size, spacing=1.2)
    cams = {cam_id: CAMERAS[cam_id]()}
    r = Renderer(store, cams, markers=layout, seed=5, options=RenderOptions())  # noise, blur and JPEG on
    frame = r.render(cam_id, 12.0, [])
    gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
    det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(ARUCO_DICT), cv2.aruco.DetectorParameters())
    corners, ids, _ = det.detectMarkers(gray)
    assert ids is not None
    cam = cams[cam_id]
    by_id = {m.id: m for m in layout.markers}
    # every marker that lies wholly (with margin) in the image and on open floor is found
    visible = []
    for m in layout.markers:
        uv, ok = cam.project(m.corners())
        inside = ok.all() and np.all((uv > 20) & (uv < np.array([cam.width, cam.height]) - 20))
        if inside and np.ptp(uv[:, 0]) > 14 and not _under_shelf(store, m.center):
            visible.append(m.id)
    found = {int(i) for i in ids.ravel()}
    assert found <= set(by_id)
    assert len(visible) >= 3 and len(found & set(visible)) >= 0.8 * len(visible)
    assert len(found) >= 6
    # OpenCV reports corners with pixel centres at integer coordinates; Camera.project (like ray_map, which
    # the renderer casts from) puts them at +0.5.  With that half pixel, detection matches projection.
    errs = []
    for c, i in zip(corners, ids.ravel(), strict=True):
        uv, _ = cam.project(by_id[int(i)].corners())
        errs.append(np.abs(c.reshape(4, 2) + 0.5 - uv).max())
    assert np.median(errs) < 1.0 and max(errs) < 2.0
    if cam_id == "pinhole":  # the extrinsic calibration's use: the pose back from the detected corners
        obj = np.concatenate([by_id[int(i)].corners() for i in ids.ravel()])
        img = np.concatenate([c.reshape(4, 2) for c in corners]) + 0.5
        ok, rvec, tvec = cv2.solvePnP(obj, img, cam.K, cam.dist[:5])
        assert ok
        R, _ = cv2.Rodrigues(rvec)
        assert np.linalg.norm(-R.T @ tvec.ravel() - cam.position) < 0.03


def _under_shelf(store, xy, margin: float = 0.3) -> bool:
    for _, _, ln in store.iter_lanes():
        lo, hi = np.min(ln.box.corners()[:, :2], axis=0), np.max(ln.box.corners()[:, :2], axis=0)
        if np.all(np.asarray(xy) > lo - margin) and np.all(np.asarray(xy) < hi + margin):
            return True
    return False


# ------------------------------------------------------------------------------------------ default store
def test_default_store_renders_every_camera():
    if not DEFAULT_STORE.is_file():
        pytest.skip("sim/stores/default is generated by `python -m sim.default_store`")
    from calibration.camera import load_cameras
    from calibration.markers import load_layout
    from calibration.store import load_store

    store = load_store(DEFAULT_STORE)
    cams = load_cameras(store)
    layout = load_layout(DEFAULT_STORE.parent / "markers.yaml")
    small = {cid: _resized(c, 0.5) for cid, c in cams.items()}
    r = Renderer(store, small, layout, seed=1, options=RenderOptions(supersample=1))
    bodies = demo_bodies(store, np.random.default_rng(2), 12)
    seen = set()
    for cid, cam in small.items():
        f = r.render(cid, 0.0, bodies)
        assert f.image.shape == (cam.height, cam.width, 3)
        seen |= {t.shopper for t in f.truth}
    assert len(seen) >= 10  # the cameras cover the floor


def _resized(cam: Camera, s: float) -> Camera:
    K = cam.K.copy()
    K[:2] *= s
    return Camera(cam.id, cam.model, int(cam.width * s), int(cam.height * s), K, cam.dist, cam.R, cam.t)


# ------------------------------------------------------------------------------------------ rasteriser
@pytest.mark.parametrize("cam_id", ["pinhole", "distorted", "fisheye"])
def test_span_culling_never_clips_a_silhouette(clean_renderer, store, cam_id, monkeypatch):
    """The per-row spans are only a speed-up: the same frame with every part tested on far wider spans is
    identical (bodies all over the view, the lens's periphery included)."""
    import sim.render_bodies as rb

    bodies = demo_bodies(store, np.random.default_rng(11), 6)
    bodies.append(red_head_body("edge", 0.6, 4.5))  # far out in the lens's periphery
    fast = clean_renderer.render(cam_id, 0.0, bodies)
    discs = rb._discs

    def wider(view, parts):
        axis_uv, R, ok, partial, rad = discs(view, parts)
        return axis_uv, R * 1.6 + 8.0, ok, partial, rad

    monkeypatch.setattr(rb, "_discs", wider)
    slow = clean_renderer.render(cam_id, 0.0, bodies)
    assert np.array_equal(fast.image, slow.image)
    assert [t.box for t in fast.truth] == [t.box for t in slow.truth]
    assert len(fast.truth) >= 3

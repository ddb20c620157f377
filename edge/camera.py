"""The edge camera pipeline: frames -> detector -> per-camera tracker -> floor projection -> ``TracksMsg``.

:class:`CameraPipeline` serves one or more cameras of one process.  :meth:`CameraPipeline.process` takes a
batch of :class:`~edge.sources.SourceFrame` (at most one per camera, usually captured together), runs the
detector once over all of the batch's images (one forward pass), then for each frame updates that camera's
tracker, projects the tracks and builds one :class:`~wire.messages.TracksMsg`.

Message contract (``walkout/v1/{store}/camera/{camera}/tracks``):

* one message per frame that had an image; ``source`` is the process's device id, ``seq`` comes from the
  ``seq`` callable (the transport's), ``ts`` is the frame's capture time, ``frame`` its source frame number;
* ``dropped_frames``: frames of that camera lost since the previous message -- frames that arrived unusable
  (``image is None``) plus jumps in the frame number.  A short loss (a frame here and there, or a process
  that only keeps up with every other frame of a live stream) does not touch the tracker: it runs on the
  frames it gets.  An outage of ``outage_frames`` or more ages the tracks through it (with no detections),
  so the motion model crosses the gap and tracks lost for longer than the tracker keeps them end;
* ``tracks``: the tracker's confirmed tracks (including the ones it still reports for a couple of frames
  while they coast), each with its box (filtered, clipped to the image), confidence, floor position and
  covariance from the ray through the head keypoint (box centre when the head is not seen; see
  :mod:`edge.projection`), and the head and wrists as pixel, confidence and ray in the store frame when their
  confidence is at least ``min_keypoint_conf`` (a head the projection found at odds with its box is left out).
  A track whose ray misses the floor is left out and counted.

The detector is anything with ``detect(images) -> list[Detections]`` and ``keypoint_names`` (see
:class:`edge.detector.Detector`); :meth:`CameraPipeline.process_detections` takes detections made elsewhere
(a recorded detection file, the simulator's truth) so the rest of the pipeline can be measured on its own.

:func:`run` drives a pipeline from a feed of batches to a sink (the process in
:mod:`walkout.commands.edge_camera`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import cv2
import numpy as np
from pydantic import ValidationError

from calibration.camera import Camera, load_cameras
from calibration.store import Store
from edge.appearance import CAMERA_SD, torso_colours
from edge.detector import Detections
from edge.projection import ProjectionConfig, floor_positions
from edge.sources import RateLimitedWarning, SourceFrame
from edge.tracker import Detections as TrackerDetections
from edge.tracker import Tracker, TrackerConfig, Tracks
from wire.messages import Keypoint, Ray, Track, TracksMsg

log = logging.getLogger(__name__)

KEYPOINTS = ("head", "lwrist", "rwrist")
# keypoint names of known layouts -> our names
_ALIASES = {"head": "head", "nose": "head", "lwrist": "lwrist", "left_wrist": "lwrist",
            "rwrist": "rwrist", "right_wrist": "rwrist"}
_COCO17 = {"head": 0, "lwrist": 9, "rwrist": 10}  # COCO keypoint order (nose, ..., left/right wrist 9/10)


class FrameDetector(Protocol):
    """What the pipeline needs of a detector."""

    @property
    def keypoint_names(self) -> tuple[str, ...] | None: ...

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]: ...


def keypoint_slots(names: Sequence[str] | None) -> dict[str, int]:
    """Which keypoint of the model is the head, left and right wrist: by name (``head``/``nose``,
    ``lwrist``/``left_wrist``, ...), else by layout (3 unnamed: walkout's order; 17 unnamed: COCO's)."""
    if not names:
        return {}
    slots = {_ALIASES[n.lower()]: i for i, n in enumerate(names) if n.lower() in _ALIASES}
    if slots:
        return slots
    if len(names) == 3:
        return {k: i for i, k in enumerate(KEYPOINTS)}
    if len(names) == 17:
        return dict(_COCO17)
    return {}


def camera_for_size(cam: Camera, width: int, height: int) -> Camera:
    """The camera as it delivers ``width x height`` frames: intrinsics scaled from its calibrated size (the
    same lens and pose; the simulator renders other sizes the same way)."""
    if (width, height) == (cam.width, cam.height):
        return cam
    K = cam.K.copy()
    K[0] *= width / cam.width
    K[1] *= height / cam.height
    return Camera(cam.id, cam.model, width, height, K, cam.dist.copy(), cam.R.copy(), cam.t.copy(), cam.fps,
                  dict(cam.meta))


_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
FAST_RAY_TOLERANCE_RAD = 1e-6


class FastRayCamera(Camera):
    """The same camera with :meth:`pixel_to_ray` through OpenCV's ``undistortPoints`` (C++; about a hundred
    times faster on the few points of a frame than the exact numpy inversion, which matters per frame).
    Build it with :meth:`of`, which checks it against the exact model over the whole image and keeps the
    exact camera where they differ by more than ``FAST_RAY_TOLERANCE_RAD``."""

    @classmethod
    def of(cls, cam: Camera) -> Camera:
        if isinstance(cam, cls):
            return cam
        fast = cls(cam.id, cam.model, cam.width, cam.height, cam.K, cam.dist, cam.R, cam.t, cam.fps,
                   dict(cam.meta))
        u, v = np.meshgrid(np.linspace(0, cam.width, 33), np.linspace(0, cam.height, 25))
        grid = np.stack([u.ravel(), v.ravel()], axis=1)
        _, exact = Camera.pixel_to_ray(cam, grid)
        _, quick = fast.pixel_to_ray(grid)
        err = float(np.arccos(np.clip((exact * quick).sum(axis=1), -1.0, 1.0)).max())
        if not err <= FAST_RAY_TOLERANCE_RAD:
            log.info("camera %s: OpenCV's undistortion differs from the model by %.2g rad; using the exact "
                     "(slower) rays", cam.id, err)
            return cam
        return fast

    def pixel_to_ray(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # contiguous: cv2.fisheye.undistortPoints reads a strided view (a column slice) as if it were packed
        uv = np.ascontiguousarray(uv, float).reshape(-1, 2)
        if len(uv) == 0:
            return super().pixel_to_ray(uv)
        pts = uv.reshape(-1, 1, 2)
        if self.model == "fisheye":
            xy = cv2.fisheye.undistortPoints(pts, self.K, self.dist, criteria=_UNDISTORT_CRITERIA)
        else:
            xy = cv2.undistortPoints(pts, self.K, self.dist, None, None, None, _UNDISTORT_CRITERIA)
        d_cam = np.concatenate([xy.reshape(-1, 2), np.ones((len(uv), 1))], axis=1)
        d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
        dirs = d_cam @ self.R
        return np.broadcast_to(self.position, dirs.shape).copy(), dirs


@dataclass
class PipelineCounters:
    """Totals of a pipeline: ``frames`` processed (with an image), ``dropped`` (lost or unusable),
    ``detections``, ``tracks`` (tracks published, summed over messages), ``messages`` built, ``published``
    (handed to the transport by :func:`run`), ``unprojected`` (tracks left out: ray missed the floor),
    ``odd_heads`` (head keypoints not used: far from their box on the floor, see :mod:`edge.projection`),
    ``invalid`` (tracks or messages that failed the wire's validation), ``stale`` (frames older than one
    already processed, ignored), ``unknown_camera`` (frames of a camera this pipeline does not serve)."""

    frames: int = 0
    dropped: int = 0
    detections: int = 0
    tracks: int = 0
    messages: int = 0
    published: int = 0
    unprojected: int = 0
    odd_heads: int = 0
    invalid: int = 0
    stale: int = 0
    unknown_camera: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class StageTimes:
    """Seconds spent per stage (summed): ``detect`` (letterbox, forward, decode), ``track``, ``project``
    (rays and floor positions), ``colour`` (upper-body colours), ``build`` (message models)."""

    detect: float = 0.0
    track: float = 0.0
    project: float = 0.0
    colour: float = 0.0
    build: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _CameraState:
    camera: Camera
    tracker: Tracker
    last_index: int | None = None
    dropped: int = 0  # since the previous message
    sized: dict[tuple[int, int], Camera] = field(default_factory=dict)


MIN_KEYPOINT_CONF = 0.3  # least confidence of a published keypoint (CameraPipeline's default)


class CameraPipeline:
    """Detector + one tracker per camera + projection + message building for the cameras of one process.

    ``store``: the store description (its id goes in the topics; its camera files give the calibrations
    unless ``calibrations`` is passed); ``cameras``: the ids this process serves; ``detector``: see
    :class:`FrameDetector` (``None`` when only :meth:`process_detections` is used); ``device``: the
    ``source`` of every message; ``seq``: hands out message sequence numbers (the transport's ``seq``);
    ``min_keypoint_conf``: least confidence of a published keypoint; ``min_box_px``: detections narrower or
    lower than this are ignored; ``outage_frames``: a jump of this many lost frames or more is an outage (see
    the module docstring).
    """

    def __init__(self, store: Store, cameras: Sequence[str], detector: FrameDetector | None = None,
                 tracker_config: TrackerConfig | None = None,
                 projection_config: ProjectionConfig | None = None, *, device: str = "edge-camera",
                 seq: Callable[[], int] | None = None, calibrations: dict[str, Camera] | None = None,
                 min_keypoint_conf: float = MIN_KEYPOINT_CONF, min_box_px: float = 2.0, outage_frames: int = 5):
        if not cameras:
            raise ValueError("a camera pipeline needs at least one camera")
        calib = calibrations if calibrations is not None else load_cameras(store)
        missing = [c for c in cameras if c not in calib]
        if missing:
            raise ValueError(f"camera(s) {missing} not in the store description (it has {sorted(calib)})")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras repeat: {list(cameras)}")
        self.store_id = store.store.id
        self.device = device
        self.detector = detector
        self.tracker_config = tracker_config or TrackerConfig()
        self.projection_config = projection_config or ProjectionConfig()
        self.min_keypoint_conf = float(min_keypoint_conf)
        self.min_box_px = float(min_box_px)
        self.outage_frames = max(1, int(outage_frames))
        self.slots = keypoint_slots(detector.keypoint_names if detector is not None else KEYPOINTS)
        self.cameras = tuple(cameras)
        self._state = {c: _CameraState(FastRayCamera.of(calib[c]), Tracker(self.tracker_config))
                       for c in cameras}
        self.counters = PipelineCounters()
        self.times = StageTimes()
        self._warn = RateLimitedWarning(log)
        if seq is None:
            counter = iter(range(1 << 62))
            seq = lambda: next(counter)
        self.seq = seq

    # ------------------------------------------------------------------------------------------- processing
    def process(self, frames: Sequence[SourceFrame]) -> list[TracksMsg]:
        """Run a batch of frames (one forward pass for all their images); one message per usable frame."""
        if self.detector is None:
            raise RuntimeError("this pipeline has no detector; use process_detections()")
        images = [f.image for f in frames if f.image is not None and f.camera in self._state]
        t0 = time.perf_counter()
        dets = self.detector.detect(images) if images else []
        self.times.detect += time.perf_counter() - t0
        return self.process_detections(frames, dets)

    def process_detections(self, frames: Sequence[SourceFrame], detections: Sequence[Detections]
                           ) -> list[TracksMsg]:
        """The rest of the pipeline for frames whose detections were made already: ``detections`` holds one
        entry per frame that has an image and a known camera, in order."""
        usable = sum(1 for f in frames if f.image is not None and f.camera in self._state)
        if len(detections) != usable:
            raise ValueError(f"{len(detections)} detection sets for {usable} usable frames")
        out: list[TracksMsg] = []
        it = iter(detections)
        for f in frames:
            st = self._state.get(f.camera)
            if st is None:
                self.counters.unknown_camera += 1
                self._warn.warning(f"unknown:{f.camera}", "frame of camera %r, which this pipeline does not "
                                   "serve (%s)", f.camera, self.cameras)
                continue
            det = next(it) if f.image is not None else None
            if st.last_index is not None and f.index <= st.last_index:
                self.counters.stale += 1
                self._warn.warning(f"stale:{f.camera}", "camera %s: frame %d after frame %d; ignored",
                                   f.camera, f.index, st.last_index)
                continue
            gap = 0 if st.last_index is None else f.index - st.last_index - 1
            st.last_index = f.index
            if gap > 0:
                st.dropped += gap
                self.counters.dropped += gap
                if gap >= self.outage_frames:  # an outage: age the tracks through it (long ones end)
                    for _ in range(min(gap, self.tracker_config.max_lost + 1)):
                        st.tracker.update(_NO_DETECTIONS)
            if f.image is None or det is None:
                st.dropped += 1
                self.counters.dropped += 1
                continue
            msg = self._frame(st, f, det)
            if msg is not None:
                out.append(msg)
        return out

    def _frame(self, st: _CameraState, f: SourceFrame, det: Detections) -> TracksMsg | None:
        h, w = f.image.shape[:2]  # type: ignore[union-attr]
        cam = st.camera if (w, h) == (st.camera.width, st.camera.height) else self._sized(st, w, h)
        self.counters.frames += 1
        self.counters.detections += len(det)
        t0 = time.perf_counter()
        boxes, scores, kps = usable_detections(det, self.min_box_px)
        lab = features = None
        if self.tracker_config.appearance_range > 0 and len(boxes):
            lab, features = self._colours(boxes, kps, f.image)
            t0b = time.perf_counter()
            self.times.colour += t0b - t0
            t0 = t0b
        tracks = st.tracker.update(TrackerDetections(boxes, scores, kps, features))
        t1 = time.perf_counter()
        self.times.track += t1 - t0
        built = self._tracks(cam, tracks, w, h, f.image, lab)
        dropped, st.dropped = st.dropped, 0
        t2 = time.perf_counter()
        try:
            msg = TracksMsg(source=self.device, seq=self.seq(), ts=f.ts, camera=cam.id, frame=f.index,
                            tracks=built, dropped_frames=min(dropped, 10**6))
        except ValidationError as exc:
            self.counters.invalid += 1
            self._warn.warning("invalid", "camera %s frame %d: message not valid, not published: %s", cam.id,
                               f.index, exc)
            return None
        self.times.build += time.perf_counter() - t2
        self.counters.messages += 1
        self.counters.tracks += len(built)
        return msg

    def _colours(self, boxes: np.ndarray, keypoints: np.ndarray | None, image: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Each detection's chest colour in L*a*b* (published with the tracks matched to them) and as the
        tracker's appearance feature (in units of one person's spread in one camera,
        :data:`edge.appearance.CAMERA_SD`); NaN rows: not measured.  The feature keeps the tracker from
        swapping two people of different shirts whose boxes overlap."""
        lab = detection_colours(image, boxes, keypoints, self.slots.get("head"), self.min_keypoint_conf)
        return lab, lab / np.asarray(CAMERA_SD)

    def _sized(self, st: _CameraState, w: int, h: int) -> Camera:
        cam = st.sized.get((w, h))
        if cam is None:
            log.warning("camera %s delivers %dx%d frames, calibrated at %dx%d: scaling its intrinsics",
                        st.camera.id, w, h, st.camera.width, st.camera.height)
            cam = st.sized[(w, h)] = FastRayCamera.of(camera_for_size(st.camera, w, h))
        return cam

    def _tracks(self, cam: Camera, tracks: Tracks, w: int, h: int, image: np.ndarray | None = None,
                det_colours: np.ndarray | None = None) -> list[Track]:
        """Wire tracks for a frame's tracker output, with each track's upper-body colour: that of the detection
        it was matched to in this frame where ``det_colours`` (L*a*b*, one row per detection) has it, else
        measured on ``image`` at the track's box."""
        m = len(tracks)
        if m == 0:
            return []
        t0 = time.perf_counter()
        boxes = np.asarray(tracks.boxes, float).copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        kps = tracks.keypoints
        head = kps[:, self.slots["head"]] if kps is not None and "head" in self.slots else None
        proj = floor_positions(cam, boxes, head, self.projection_config)
        # every published keypoint (confident enough) gets its ray; all of a frame's in one call
        named = [(n, self.slots[n]) for n in KEYPOINTS if n in self.slots] if kps is not None else []
        kp_rows: dict[str, list] = {}
        if named:
            sel = np.stack([kps[:, k] for _, k in named], axis=1)  # type: ignore[index]  # (m, n, 3)
            sel[..., 2] = sel[..., 2].clip(0.0, 1.0)
            use = sel[..., 2] >= self.min_keypoint_conf
            rows, cols = np.nonzero(use)
            if len(rows):
                origins, dirs = cam.pixel_to_ray(sel[rows, cols, :2])
                px, conf = sel[rows, cols, :2].tolist(), sel[rows, cols, 2].tolist()
                for i, (j, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
                    kp_rows.setdefault(named[c][0], [None] * m)[j] = (px[i], conf[i], origins[i].tolist(),
                                                                       dirs[i].tolist())
        heads_px = None
        if head is not None:
            seen = head[:, 2] >= self.min_keypoint_conf
            if proj.head is not None:  # a head the projection found at odds with its box: not published
                odd = seen & (head[:, 2] >= self.projection_config.min_head_conf) & ~proj.head
                seen &= ~odd
                if "head" in kp_rows:
                    for j in np.flatnonzero(odd).tolist():
                        kp_rows["head"][j] = None
                self.counters.odd_heads += int(odd.sum())
            heads_px = np.where(seen[:, None], head[:, :2], np.nan)
        t1 = time.perf_counter()
        self.times.project += t1 - t0
        colours_np = np.full((m, 3), np.nan)
        measure = np.ones(m, bool)
        if det_colours is not None:
            matched = tracks.det_index >= 0
            colours_np[matched] = det_colours[tracks.det_index[matched]]
            measure = ~matched
        if measure.any():
            colours_np[measure] = torso_colours(image, boxes[measure],
                                                None if heads_px is None else heads_px[measure])
        colours = colours_np.round(1).tolist()  # NaN rows: not measured (or no image)
        t2 = time.perf_counter()
        self.times.colour += t2 - t1
        out: list[Track] = []
        ids = tracks.ids.tolist()
        scores = np.clip(np.asarray(tracks.scores, float), 0.0, 1.0).tolist()
        box_l, floor_l, cov_l, ok_l = boxes.tolist(), proj.floor.tolist(), proj.cov.tolist(), proj.ok.tolist()
        for j in range(m):
            if not ok_l[j]:
                self.counters.unprojected += 1
                continue
            try:
                kp_models = {name: Keypoint(px=r[j][0], conf=r[j][1], ray=Ray(origin=r[j][2], dir=r[j][3]))
                             for name, r in kp_rows.items() if r[j] is not None}
                colour = None if math.isnan(colours[j][0]) else colours[j]
                out.append(Track(id=int(ids[j]), box=box_l[j], conf=scores[j], floor=floor_l[j],
                                 floor_cov=cov_l[j], colour=colour, **kp_models))
            except ValidationError as exc:
                self.counters.invalid += 1
                self._warn.warning("invalid", "camera %s track %d not valid, left out: %s", cam.id, ids[j],
                                   exc)
        self.times.build += time.perf_counter() - t2
        return out


_NO_DETECTIONS = TrackerDetections(np.zeros((0, 4)), np.zeros(0))


def detection_colours(image: np.ndarray | None, boxes: np.ndarray, keypoints: np.ndarray | None,
                      head_slot: int | None, min_conf: float) -> np.ndarray:
    """Chest colour (L*a*b*, ``(n, 3)``, NaN rows: not measured) of each detection in ``image``, the patch
    placed from its head keypoint (slot ``head_slot`` of ``keypoints`` (n, K, 3)) where that is at least
    ``min_conf`` confident (:func:`edge.appearance.torso_colours`)."""
    heads = None
    if keypoints is not None and head_slot is not None:
        head = keypoints[:, head_slot]
        heads = np.where((head[:, 2] >= min_conf)[:, None], head[:, :2], np.nan)
    return torso_colours(image, boxes, heads)


def to_tracker_detections(det: Detections, min_box_px: float = 2.0) -> TrackerDetections:
    """Detector output -> the tracker's input (boxes smaller than ``min_box_px`` and non-finite rows left
    out: the tracker rejects them)."""
    return TrackerDetections(*usable_detections(det, min_box_px))


def usable_detections(det: Detections, min_box_px: float = 2.0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The rows of detector output the tracker takes: boxes ``(n, 4)``, scores clipped to 0..1 and keypoints
    (float), without boxes smaller than ``min_box_px`` and non-finite rows (the tracker rejects them)."""
    boxes = np.asarray(det.boxes, float).reshape(-1, 4)
    scores = np.asarray(det.scores, float).reshape(-1)
    kps = None if det.keypoints is None else np.asarray(det.keypoints, float)
    ok = (boxes[:, 2] - boxes[:, 0] >= min_box_px) & (boxes[:, 3] - boxes[:, 1] >= min_box_px)
    ok &= np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    if kps is not None:
        ok &= np.isfinite(kps).all(axis=(1, 2))
    if not ok.all():
        boxes, scores = boxes[ok], scores[ok]
        kps = None if kps is None else kps[ok]
    return boxes, np.clip(scores, 0.0, 1.0), kps


# ---------------------------------------------------------------------------------------------- the loop
def run(pipeline: CameraPipeline, batches: Iterable[list[SourceFrame]], sink: Callable[[TracksMsg], None],
        stop: threading.Event | None = None, *, evidence: object | None = None,
        tick: Callable[[], None] | None = None, max_frames: int | None = None) -> PipelineCounters:
    """Process ``batches`` until they end, ``stop`` is set or ``max_frames`` frames were processed; every
    message goes to ``sink`` (counted as ``published``).  ``evidence`` (an :class:`edge.evidence.
    EvidenceRecorder`) is offered every usable frame; ``tick`` runs after each batch (status messages)."""
    stop = stop or threading.Event()
    for batch in batches:
        if stop.is_set():
            break
        for msg in pipeline.process(batch):
            sink(msg)
            pipeline.counters.published += 1
        if evidence is not None:
            for f in batch:
                if f.image is not None and f.camera in pipeline.cameras:
                    evidence.offer(f.camera, f.ts, f.image)  # type: ignore[attr-defined]
        if tick is not None:
            tick()
        if max_frames is not None and pipeline.counters.frames >= max_frames:
            break
    return pipeline.counters

"""Person (and keypoint) detection on ONNX Runtime, for ultralytics-exported YOLO models.

Contract
--------
``Detector(model).detect(frames) -> list[Detections]``: ``frames`` are BGR ``uint8`` images ``(H, W, 3)`` as
OpenCV reads them (any sizes, mixed sizes allowed); they are letterboxed to the model's input (aspect kept,
padding value 114, RGB, 0-1 floats, NCHW) and run in as few forward passes as the model's batch allows (one
for a dynamic-batch model; chunks of its fixed batch otherwise).  Each frame gets a :class:`Detections` whose
boxes (``x1 y1 x2 y2``) and keypoints (``x y visibility``) are in that frame's own pixels.

Models understood (read from the graph's output shape and the ultralytics metadata: ``task``, ``names``,
``kpt_shape``, ``imgsz``, ``batch``):

- raw detection heads ``(B, 4 + nc, A)``: ``cx cy w h`` in input pixels, then per-class scores;
- raw pose heads ``(B, 4 + nc + K*3, A)``: the same, then ``x y v`` per keypoint (``v`` already a sigmoid);
- end-to-end heads ``(B, N, 6 [+ K*3])`` (ultralytics ``nms=True`` exports and YOLO26): ``x1 y1 x2 y2 score
  class`` [keypoints]; NMS has been done in the graph, the confidence threshold and class filter still apply.

A COCO detector a user brings is run with ``classes=["person"]``.  The runtime imports neither torch nor
ultralytics.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

PAD_VALUE = 114
STRIDES = (8, 16, 32)

# Keypoints of the walkout pose model (models/person_pose.onnx), in the model's order.
KEYPOINT_NAMES = ("head", "lwrist", "rwrist")


class DetectorInputError(ValueError):
    """A frame the detector cannot take (empty, wrong dtype, wrong number of channels)."""


class DetectorModelError(ValueError):
    """An ONNX model whose inputs, outputs or metadata the detector does not understand."""


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Detections:
    """One frame's detections, in that frame's pixels.

    ``boxes`` ``(N, 4)`` float32 ``x1 y1 x2 y2``; ``scores`` ``(N,)`` float32; ``classes`` ``(N,)`` int64;
    ``keypoints`` ``(N, K, 3)`` float32 ``x y visibility`` (visibility 0-1) for pose models, else ``None``.
    Rows are sorted by score, highest first.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, n_keypoints: int | None = None) -> Detections:
        kp = None if n_keypoints is None else np.zeros((0, n_keypoints, 3), np.float32)
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), kp)


# ---------------------------------------------------------------------------------------------- letterbox
@dataclass(frozen=True)
class Letterbox:
    """How one frame was placed in the model input: ``input = frame * (sx, sy) + (left, top)``.

    ``sx``/``sy`` are the exact ratios of the resized size to the frame size (they differ from the nominal
    scale by the rounding of the resized size), so mapping back is the exact inverse of the placement.
    """

    sx: float
    sy: float
    left: int
    top: int
    width: int   # original frame size
    height: int

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Input-pixel coordinates ``(..., 2k)`` (interleaved x, y) -> frame pixels, unclipped."""
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0::2] = (out[..., 0::2] - self.left) / self.sx
        out[..., 1::2] = (out[..., 1::2] - self.top) / self.sy
        return out

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixels ``(..., 2k)`` -> input pixels (the inverse of :meth:`to_frame`)."""
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0::2] = out[..., 0::2] * self.sx + self.left
        out[..., 1::2] = out[..., 1::2] * self.sy + self.top
        return out


def letterbox_geometry(width: int, height: int, in_w: int, in_h: int) -> tuple[Letterbox, tuple[int, int]]:
    """Placement of a ``width x height`` frame in an ``in_w x in_h`` input (ultralytics' ``LetterBox`` with
    ``auto=False, center=True``) and the resized size ``(w, h)``."""
    r = min(in_w / width, in_h / height)
    new_w, new_h = max(1, round(width * r)), max(1, round(height * r))
    dw, dh = (in_w - new_w) / 2, (in_h - new_h) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    return Letterbox(new_w / width, new_h / height, left, top, width, height), (new_w, new_h)


def letterbox_into(frame: np.ndarray, out: np.ndarray) -> Letterbox:
    """Letterbox ``frame`` into the pre-filled ``out`` (``(in_h, in_w, 3)`` uint8, already set to the pad
    value) and return the placement."""
    in_h, in_w = out.shape[:2]
    h, w = frame.shape[:2]
    lb, (new_w, new_h) = letterbox_geometry(w, h, in_w, in_h)
    resized = frame if (new_w, new_h) == (w, h) else cv2.resize(frame, (new_w, new_h),
                                                                interpolation=cv2.INTER_LINEAR)
    out[lb.top:lb.top + new_h, lb.left:lb.left + new_w] = resized
    return lb


def make_blob(frames: Sequence[np.ndarray], input_hw: tuple[int, int], dtype: type = np.float32
              ) -> tuple[np.ndarray, list[Letterbox]]:
    """BGR uint8 frames -> the model input ``(B, 3, H, W)`` (letterboxed, RGB, 0-1) and each placement.

    The training pipeline calibrates INT8 models with this same function, so calibration sees exactly what
    the runtime feeds."""
    h, w = input_hw
    canvas = np.full((len(frames), h, w, 3), PAD_VALUE, dtype=np.uint8)
    blob = np.empty((len(frames), 3, h, w), dtype=dtype)
    placements = []
    for i, f in enumerate(frames):
        placements.append(letterbox_into(check_frame(f, i), canvas[i]))
        # plane by plane, RGB from BGR: contiguous copies, a third faster than one strided transpose
        for ch, plane in enumerate(reversed(cv2.split(canvas[i]))):
            blob[i, ch] = plane
    blob *= dtype(1 / 255)
    return blob, placements


def check_frame(frame: object, index: int = 0) -> np.ndarray:
    """Raise :class:`DetectorInputError` unless ``frame`` is a non-empty BGR uint8 ``(H, W, 3)`` array."""
    where = f"frame {index}"
    if not isinstance(frame, np.ndarray):
        raise DetectorInputError(f"{where}: expected a numpy array (H, W, 3) uint8 BGR, got "
                                 f"{type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise DetectorInputError(f"{where}: expected dtype uint8 (BGR 0-255), got {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise DetectorInputError(f"{where}: grayscale image {frame.shape}; convert it to BGR first "
                                 "(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DetectorInputError(f"{where}: expected shape (H, W, 3) BGR, got {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise DetectorInputError(f"{where}: empty image {frame.shape}")
    return frame


# ---------------------------------------------------------------------------------------------- NMS
def box_iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``x1 y1 x2 y2`` box with ``(N, 4)`` boxes."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int = 300) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.  A box is dropped when
    its IoU with a kept, higher-scoring box exceeds ``iou_threshold`` (torchvision's and OpenCV's rule)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        if not rest.size:
            break
        order = rest[box_iou_one(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                max_det: int = 300, agnostic: bool = False) -> np.ndarray:
    """Class-aware NMS (boxes of different classes never suppress each other), highest score first.

    Runs OpenCV's ``cv2.dnn.NMSBoxesBatched`` (C++, about twice as fast as :func:`nms` on a few hundred
    candidates; the same kept set -- ``bench.detector`` and the tests check both)."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    if agnostic:
        keep = cv2.dnn.NMSBoxes(xywh, scores, 0.0, iou_threshold)
    else:
        keep = cv2.dnn.NMSBoxesBatched(xywh, scores, classes.astype(np.int32), 0.0, iou_threshold)
    return np.asarray(keep, dtype=np.int64).ravel()[:max_det]


def batched_nms_numpy(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                      max_det: int = 300, agnostic: bool = False) -> np.ndarray:
    """:func:`batched_nms` in numpy (the reference): :func:`nms` of each class, merged by score.  (Shifting
    the classes apart by a large offset and running one :func:`nms`, ultralytics' way, costs float32 boxes
    their last bits: an IoU at the threshold can flip.)"""
    if agnostic or boxes.shape[0] == 0:
        return nms(boxes, scores, iou_threshold, max_det)
    kept = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        kept.append(idx[nms(boxes[idx], scores[idx], iou_threshold, max_det)])
    keep = np.concatenate(kept)
    return keep[np.argsort(-scores[keep], kind="stable")][:max_det]


# ---------------------------------------------------------------------------------------------- metadata
def _literal(value: str | None):
    if value is None:
        return None
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


@dataclass(frozen=True)
class ModelInfo:
    """What the detector reads from an ONNX model."""

    input_name: str
    input_hw: tuple[int, int]
    input_dtype: type
    batch: int | None        # fixed batch size, or None for a dynamic batch
    task: str                # "detect" | "pose"
    names: dict[int, str]
    kpt_shape: tuple[int, int] | None
    kpt_names: tuple[str, ...] | None
    layout: str              # "raw" (B, C, A) | "end2end" (B, N, 6 [+K*3])


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def read_model_info(session: ort.InferenceSession, path: str | Path = "<model>") -> ModelInfo:
    meta = session.get_modelmeta().custom_metadata_map
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise DetectorModelError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    inp = inputs[0]
    if len(inp.shape) != 4:
        raise DetectorModelError(f"{path}: input {inp.name!r} has shape {inp.shape}, expected (B, 3, H, W)")
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type)
    if dtype is None:
        raise DetectorModelError(f"{path}: input {inp.name!r} has type {inp.type}, expected float or float16")
    h, w = _dim(inp.shape[2]), _dim(inp.shape[3])
    if h is None or w is None:
        imgsz = _literal(meta.get("imgsz"))
        if isinstance(imgsz, int):
            imgsz = [imgsz, imgsz]
        if not (isinstance(imgsz, (list, tuple)) and len(imgsz) == 2):
            raise DetectorModelError(f"{path}: dynamic input size and no 'imgsz' in the metadata")
        h, w = int(imgsz[0]), int(imgsz[1])
    batch = _dim(inp.shape[0])

    names = _literal(meta.get("names"))
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    kpt = _literal(meta.get("kpt_shape"))
    kpt_shape = (int(kpt[0]), int(kpt[1])) if isinstance(kpt, (list, tuple)) and len(kpt) == 2 else None
    task = str(meta.get("task") or ("pose" if kpt_shape else "detect"))
    if task not in ("detect", "pose"):
        raise DetectorModelError(f"{path}: task {task!r} is not supported (detect or pose)")
    if task == "pose" and kpt_shape is None:
        raise DetectorModelError(f"{path}: a pose model without 'kpt_shape' in its metadata")
    kpt_names = None
    if task == "detect":
        kpt_shape = None
    else:
        kn = _literal(meta.get("kpt_names"))
        kn = kn.get(0) if isinstance(kn, dict) else kn
        if isinstance(kn, (list, tuple)) and len(kn) == kpt_shape[0]:
            kpt_names = tuple(str(n) for n in kn)

    out = outputs[0].shape
    if len(out) != 3:
        raise DetectorModelError(f"{path}: output {outputs[0].name!r} has shape {out}, expected 3 dims")
    nk = kpt_shape[0] * kpt_shape[1] if kpt_shape else 0
    anchors = sum((h // s) * (w // s) for s in STRIDES)
    c1, c2 = _dim(out[1]), _dim(out[2])
    e2e_meta = str(meta.get("end2end", "")).lower() == "true"
    if c2 == anchors and not e2e_meta:
        layout = "raw"
    elif c2 == 6 + nk or e2e_meta:
        layout = "end2end"
    elif c1 is not None and c1 > 4 + nk:
        layout = "raw"
    else:
        raise DetectorModelError(f"{path}: output shape {out} is neither (B, 4+nc{'+K*3' if nk else ''}, "
                                 f"{anchors}) nor (B, N, {6 + nk})")
    if layout == "raw":
        nc = (c1 - 4 - nk) if c1 is not None else len(names or {})
        if nc < 1:
            raise DetectorModelError(f"{path}: output shape {out} leaves {nc} classes for task {task!r}")
        if not names or len(names) != nc:
            if names:
                log.warning("%s: metadata names %d classes, output has %d; naming them by index",
                            path, len(names), nc)
            names = {i: str(i) for i in range(nc)}
    elif not names:
        raise DetectorModelError(f"{path}: an end-to-end model without 'names' in its metadata")
    names = {int(k): str(v) for k, v in names.items()}
    return ModelInfo(inp.name, (h, w), dtype, batch, task, names, kpt_shape, kpt_names, layout)


# ---------------------------------------------------------------------------------------------- detector
class Detector:
    """An ONNX Runtime session with letterboxing, decoding and NMS around it.

    ``conf``: minimum score; ``iou``: NMS IoU threshold; ``classes``: class ids or names to keep (None: all);
    ``max_det``: most detections per frame; ``intra_op_threads``: ONNX Runtime's thread count for one operator
    (None: its default, every core); ``warmup``: run one dummy batch at start so the first real frame is not
    slow; ``agnostic_nms``: suppress across classes; ``allow_spinning``: let ONNX Runtime's idle threads
    spin for the next run (lowest latency for one session; turn it off when several sessions share the cores).
    """

    def __init__(self, model: str | Path, *, conf: float = 0.25, iou: float = 0.45,
                 classes: Sequence[int | str] | None = None, max_det: int = 100,
                 intra_op_threads: int | None = None, warmup: bool = True, agnostic_nms: bool = False,
                 allow_spinning: bool = True, providers: Sequence[str] = ("CPUExecutionProvider",)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"detector model {path} not found")
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"conf must be within 0..1, got {conf}")
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"iou must be within (0, 1], got {iou}")
        if max_det < 1:
            raise ValueError(f"max_det must be at least 1, got {max_det}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise ValueError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
            opts.intra_op_num_threads = int(intra_op_threads)
        opts.log_severity_level = 3
        if not allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise DetectorModelError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc
        self.path = path
        self.info = read_model_info(self.session, path)
        self.output_name = self.session.get_outputs()[0].name
        self.conf, self.iou, self.max_det, self.agnostic = float(conf), float(iou), int(max_det), agnostic_nms
        self.class_ids = self._class_ids(classes)
        log.info("detector %s: task=%s input=%s batch=%s classes=%d layout=%s threads=%s", path.name,
                 self.info.task, self.info.input_hw, self.info.batch or "dynamic", len(self.info.names),
                 self.info.layout, intra_op_threads or "default")
        if warmup:
            self.warmup()

    # ---- properties
    @property
    def names(self) -> dict[int, str]:
        return self.info.names

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def n_keypoints(self) -> int | None:
        return self.info.kpt_shape[0] if self.info.kpt_shape else None

    @property
    def keypoint_names(self) -> tuple[str, ...] | None:
        """Keypoint names from the metadata (``kpt_names``), else numbers; None for detection models."""
        k = self.n_keypoints
        if k is None:
            return None
        return self.info.kpt_names or tuple(str(i) for i in range(k))

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.info.input_hw

    def _class_ids(self, classes: Sequence[int | str] | None) -> np.ndarray | None:
        if classes is None:
            return None
        by_name = {v: k for k, v in self.info.names.items()}
        ids = []
        for c in classes:
            if isinstance(c, str) and not c.isdigit():
                if c not in by_name:
                    raise ValueError(f"class {c!r} is not in the model's names {sorted(by_name)}")
                ids.append(by_name[c])
            else:
                i = int(c)
                if i not in self.info.names:
                    raise ValueError(f"class id {i} is not in the model (0..{len(self.info.names) - 1})")
                ids.append(i)
        return np.unique(np.asarray(ids, dtype=np.int64))

    # ---- pipeline
    def warmup(self, runs: int = 1) -> None:
        """Run dummy batches so memory arenas and kernels are ready before the first frame."""
        h, w = self.info.input_hw
        blob = np.zeros((self.info.batch or 1, 3, h, w), dtype=self.info.input_dtype)
        for _ in range(runs):
            self.session.run([self.output_name], {self.info.input_name: blob})

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Frames -> the input blob ``(B, 3, H, W)`` and each frame's placement."""
        return make_blob(frames, self.info.input_hw, self.info.input_dtype)

    def forward(self, blob: np.ndarray) -> np.ndarray:
        """The bare model on a blob of any batch size (chunked and padded to a fixed-batch model's size)."""
        b = self.info.batch
        feed = self.info.input_name
        if b is None or blob.shape[0] == b:
            return self.session.run([self.output_name], {feed: blob})[0]
        outs = []
        for start in range(0, blob.shape[0], b):
            chunk = blob[start:start + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.session.run([self.output_name], {feed: chunk})[0][:n])
        return np.concatenate(outs)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for each frame (see the module's contract)."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            raise DetectorInputError("detect() takes a sequence of frames; use detect_one() for one frame")
        if len(frames) == 0:
            return []
        blob, boxes = self.preprocess(frames)
        return self.postprocess(self.forward(blob), boxes)

    def detect_one(self, frame: np.ndarray) -> Detections:
        return self.detect([frame])[0]

    __call__ = detect_one

    # ---- decoding
    def postprocess(self, raw: np.ndarray, letterboxes: Sequence[Letterbox]) -> list[Detections]:
        """Raw model output for a batch -> detections in each frame's pixels."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim != 3 or raw.shape[0] != len(letterboxes):
            raise DetectorModelError(f"{self.path}: output shape {raw.shape} does not match a batch of "
                                     f"{len(letterboxes)}")
        if self.info.layout == "raw":
            per_frame = decode_raw(raw, len(self.info.names), self.info.kpt_shape, self.conf, self.iou,
                                   self.class_ids, self.max_det, self.agnostic)
        else:
            per_frame = decode_end2end(raw, self.info.kpt_shape, self.conf, self.class_ids, self.max_det)
        return [to_frame(d, lb) for d, lb in zip(per_frame, letterboxes)]


def decode_raw(raw: np.ndarray, nc: int, kpt_shape: tuple[int, int] | None, conf: float, iou: float,
               class_ids: np.ndarray | None = None, max_det: int = 100, agnostic: bool = False,
               max_nms: int = 30000) -> list[Detections]:
    """Decode a raw ultralytics head ``(B, 4 + nc [+ K*kd], A)`` (coordinates in input pixels).

    Scores are the class scores restricted to ``class_ids`` (so a COCO model's person score counts even where
    another class scores higher); the best remaining class is each anchor's class."""
    B, C, _ = raw.shape
    nk = kpt_shape[0] * kpt_shape[1] if kpt_shape else 0
    if C != 4 + nc + nk:
        raise DetectorModelError(f"raw output has {C} channels, expected 4 + {nc} classes + {nk} keypoint values")
    cls = raw[:, 4:4 + nc, :]
    if class_ids is not None:
        cls = cls[:, class_ids, :]
    if cls.shape[1] == 1:
        score = cls[:, 0, :]
        best = np.zeros_like(score, dtype=np.int64)
    else:
        best = cls.argmax(axis=1)
        score = np.take_along_axis(cls, best[:, None, :], axis=1)[:, 0, :]
    if class_ids is not None:
        best = class_ids[best]
    bi, ai = np.nonzero(score > conf)
    rows = raw[bi, :, ai]  # (M, C)
    s, c = score[bi, ai], best[bi, ai]
    xy, wh = rows[:, 0:2], rows[:, 2:4] * 0.5
    boxes = np.concatenate([xy - wh, xy + wh], axis=1)
    kps = rows[:, 4 + nc:].reshape(-1, kpt_shape[0], kpt_shape[1]) if kpt_shape else None
    out = []
    splits = np.searchsorted(bi, np.arange(B + 1))  # bi is sorted by np.nonzero
    for b in range(B):
        lo, hi = splits[b], splits[b + 1]
        bb, ss, cc = boxes[lo:hi], s[lo:hi], c[lo:hi]
        if hi - lo > max_nms:
            top = np.argsort(-ss, kind="stable")[:max_nms]
            sel = lo + top
            bb, ss, cc = boxes[sel], s[sel], c[sel]
        else:
            sel = np.arange(lo, hi)
        keep = batched_nms(bb, ss, cc, iou, max_det, agnostic)
        kp = kps[sel[keep]] if kps is not None else None
        out.append(Detections(bb[keep], ss[keep], cc[keep], kp))
    return out


def decode_end2end(raw: np.ndarray, kpt_shape: tuple[int, int] | None, conf: float,
                   class_ids: np.ndarray | None = None, max_det: int = 100) -> list[Detections]:
    """Decode an end-to-end head ``(B, N, 6 [+ K*kd])``: ``x1 y1 x2 y2 score class [keypoints]``."""
    nk = kpt_shape[0] * kpt_shape[1] if kpt_shape else 0
    if raw.shape[2] != 6 + nk:
        raise DetectorModelError(f"end-to-end output has {raw.shape[2]} values per row, expected {6 + nk}")
    out = []
    for rows in raw:
        keep = rows[:, 4] > conf
        cls = rows[:, 5].round().astype(np.int64)
        if class_ids is not None:
            keep &= np.isin(cls, class_ids)
        idx = np.nonzero(keep)[0]
        idx = idx[np.argsort(-rows[idx, 4], kind="stable")][:max_det]
        kp = rows[idx, 6:].reshape(-1, kpt_shape[0], kpt_shape[1]) if kpt_shape else None
        out.append(Detections(rows[idx, :4], rows[idx, 4], cls[idx], kp))
    return out


def to_frame(d: Detections, lb: Letterbox) -> Detections:
    """Map detections from input pixels to the frame's pixels; boxes and keypoint coordinates are clipped to
    the frame."""
    boxes = lb.to_frame(d.boxes)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, lb.width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, lb.height)
    kp = None
    if d.keypoints is not None:
        kp = np.array(d.keypoints, dtype=np.float32, copy=True)
        kp[..., :2] = lb.to_frame(kp[..., :2])
        kp[..., 0] = kp[..., 0].clip(0, lb.width)
        kp[..., 1] = kp[..., 1].clip(0, lb.height)
    return Detections(boxes.astype(np.float32, copy=False), d.scores.astype(np.float32, copy=False),
                      d.classes.astype(np.int64, copy=False), kp)

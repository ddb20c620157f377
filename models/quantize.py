"""ONNX graph steps after the ultralytics export: fix the input size, and static INT8 quantisation.

INT8 recipe (checked on this CPU, see FIELD_NOTES "Detector training and runtime"): ``quant_pre_process``,
then ``quantize_static`` in QDQ format with per-channel QInt8 weights and QUInt8 activations, MinMax
calibration on ~100 real training frames fed exactly as the runtime feeds them (``edge.detector.make_blob``).
The backbone, neck, the head's conv towers (with their SiLU) and the DFL are quantised; the head's decode
(per-scale reshapes and concats, score and keypoint-visibility sigmoids, box and keypoint maths, the final
concat that mixes pixels with 0-1 scores) stays FP32 -- quantising that last concat in one uint8 scale is what
destroys the scores.

Needs ``onnx``, ``onnxslim`` and ``sympy`` (the ``train`` extra); never imported at run time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.detector import make_blob

log = logging.getLogger(__name__)

# Head nodes that stay quantised: the per-scale conv towers (cv2: box, cv3: class, cv4: keypoints) and the DFL.
_HEAD_QUANTISED = re.compile(r"/(cv[234]\.\d+|dfl)/")


def fix_input_size(src: str | Path, dst: str | Path, imgsz: int) -> None:
    """Make a dynamic ultralytics export's height and width fixed (batch stays dynamic) and re-slim it, so
    shape arithmetic folds into constants: fewer nodes, and a graph the quantiser can infer shapes for."""
    import onnx
    import onnxslim

    m = onnx.load(str(src))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i in (2, 3):
        dims[i].Clear()
        dims[i].dim_value = imgsz
    out = m.graph.output[0].type.tensor_type.shape.dim
    out[2].Clear()
    out[2].dim_value = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    m = onnxslim.slim(m)
    onnx.save(m, str(dst))


def head_prefix(model) -> str:
    """The name prefix (``/model.22/``) of the node that writes the graph's first output."""
    out = model.graph.output[0].name
    for node in model.graph.node:
        if out in node.output:
            m = re.match(r"(/model\.\d+/)", node.name)
            if m:
                return m.group(1)
    raise ValueError("cannot find the detection head (no /model.N/ node writes the output)")


def decode_nodes(model) -> list[str]:
    """Names of the head's decode nodes to keep in FP32."""
    prefix = head_prefix(model)
    return [n.name for n in model.graph.node
            if n.name.startswith(prefix) and not _HEAD_QUANTISED.search(n.name)]


class FrameReader:
    """Calibration batches (one frame each) from image files, letterboxed as the runtime does."""

    def __init__(self, images: Sequence[Path], input_name: str, imgsz: int):
        self.images, self.input_name, self.imgsz = list(images), input_name, imgsz
        self._i = 0

    def get_next(self) -> dict | None:
        while self._i < len(self.images):
            path = self.images[self._i]
            self._i += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("calibration: cannot read %s; skipped", path)
                continue
            blob, _ = make_blob([img], (self.imgsz, self.imgsz))
            return {self.input_name: blob}
        return None

    def rewind(self) -> None:
        self._i = 0


def pick_calibration(images: Sequence[Path], n: int, seed: int = 0) -> list[Path]:
    """``n`` frames spread over the training set (seeded)."""
    images = sorted(images)
    if len(images) <= n:
        return images
    rng = np.random.default_rng(seed)
    return sorted(images[i] for i in rng.choice(len(images), n, replace=False))


CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")


def quantize(src: str | Path, dst: str | Path, images: Sequence[Path], n_calib: int = 100,
             method: str = "MinMax") -> Path:
    """Static INT8 QDQ quantisation of ``src`` into ``dst`` calibrated on ``n_calib`` of ``images``
    (activation ranges by ``method``: one of :data:`CALIBRATION_METHODS`, ONNX Runtime's names)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not images:
        raise ValueError("quantize: no calibration images")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"quantize: calibration method {method!r} is not one of {CALIBRATION_METHODS}")
    pre = dst.with_name(dst.stem + "_pre.onnx")
    # ORT's symbolic shape inference stops at the dynamic batch; ONNX's own inference covers the graph
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    exclude = decode_nodes(model)
    inp = model.graph.input[0]
    imgsz = inp.type.tensor_type.shape.dim[2].dim_value
    if not imgsz:
        raise ValueError(f"{src}: input height is not fixed; run fix_input_size first")
    calib = pick_calibration(images, n_calib)
    log.info("quantising %s: %d calibration frames, %d decode nodes kept FP32", src.name, len(calib),
             len(exclude))
    quantize_static(
        str(pre), str(dst), FrameReader(calib, inp.name, imgsz), quant_format=QuantFormat.QDQ,
        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
        calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=exclude,
    )
    pre.unlink(missing_ok=True)
    # keep the ultralytics metadata (task, names, kpt_shape, imgsz) on the quantised graph
    src_meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    q = onnx.load(str(dst))
    have = {p.key for p in q.metadata_props}
    for k, v in src_meta.items():
        if k not in have:
            q.metadata_props.add(key=k, value=v)
    q.metadata_props.add(key="quantization", value="int8 static QDQ, per-channel QInt8 weights, QUInt8 "
                         f"activations, {method} on {len(calib)} training frames, head decode FP32")
    onnx.save(q, str(dst))
    log.info("INT8 model %s (%.1f MB)", dst, dst.stat().st_size / 1e6)
    return dst

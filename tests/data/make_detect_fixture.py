"""Write ``tests/data/coco_layout_64.onnx``: a tiny ONNX graph with the exact interface of an ultralytics
COCO detection export (input ``images (batch, 3, 64, 64)``, output ``output0 (batch, 84, 84)`` = cx cy w h and
80 class scores per anchor at strides 8/16/32, metadata ``task``, ``names``, ``imgsz``, ``stride``), whose
output is a fixed table of boxes (plus 0 x the input, so the batch follows the input).  It lets the tests run
the detector's "user brings a COCO model" path without shipping a 12 MB COCO model.

    .venv-train/bin/python tests/data/make_detect_fixture.py      (needs ``onnx``; the tests do not)
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COCO = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
        "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
        "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
        "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
        "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
        "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
        "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
        "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
        "scissors", "teddy bear", "hair drier", "toothbrush"]
IMGSZ = 64
ANCHORS = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))  # 84

# rows: anchor, cx, cy, w, h (input pixels), {class: score}
TABLE = [
    (0, 20.0, 30.0, 10.0, 20.0, {0: 0.90}),            # a person
    (1, 21.0, 30.0, 10.0, 20.0, {0: 0.80}),            # the same person again (NMS drops it)
    (2, 44.0, 30.0, 8.0, 16.0, {0: 0.40, 24: 0.70}),   # a person whose best class is 'backpack'
    (3, 50.0, 50.0, 12.0, 8.0, {2: 0.95}),             # a car
    (4, 10.0, 50.0, 6.0, 6.0, {0: 0.10}),              # a person below the threshold
]


def table() -> np.ndarray:
    out = np.zeros((1, 84, ANCHORS), np.float32)
    for a, cx, cy, w, h, scores in TABLE:
        out[0, :4, a] = (cx, cy, w, h)
        for c, s in scores.items():
            out[0, 4 + c, a] = s
    return out


def main() -> None:
    const = numpy_helper.from_array(table(), "table")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),   # (B, 1, 1, 1)
        helper.make_node("Squeeze", ["mean", "sq_axes"], ["m"]),                    # (B, 1, 1)
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Add", ["m0", "table"], ["output0"]),                      # (B, 84, 84)
    ]
    sq_axes = numpy_helper.from_array(np.array([3], np.int64), "sq_axes")
    graph = helper.make_graph(
        nodes, "coco_layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 84, ANCHORS])],
        initializer=[const, zero, sq_axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"task": "detect", "stride": "32", "batch": "1", "imgsz": str([IMGSZ, IMGSZ]),
            "names": str(dict(enumerate(COCO))), "author": "walkout tests", "end2end": "False"}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path = Path(__file__).with_name(f"coco_layout_{IMGSZ}.onnx")
    onnx.save(model, str(path))
    print(path, path.stat().st_size)


if __name__ == "__main__":
    main()

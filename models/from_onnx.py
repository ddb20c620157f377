"""A trainable ultralytics checkpoint from an exported ONNX model, to fine-tune the committed model.

Training on a CPU takes hours, and a session's processes end with it; the committed ONNX is the only state
that survives.  ``python -m models.train --init-onnx models/person_pose.onnx`` continues from it instead of
from scratch.

The export fused every convolution's batch norm into the convolution (``W, b``); the ONNX initialisers keep
the PyTorch names (``model.2.cv1.conv.weight``, ``...conv.bias``).  Unfusing: the convolution gets ``W`` and
its batch norm becomes ``x -> x + b`` with running statistics measured on training frames, so that the
network computes exactly the exported function in eval mode and nearly the same in train mode (the batch
statistics it normalises with are close to the running ones)::

    mean, var = per-channel statistics of W * x over the frames
    bn: running_mean = mean, running_var = var, weight = sqrt(var + eps), bias = b + mean

Imports torch and ultralytics (the ``train`` extra); never used at run time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


def letterboxed(paths: Sequence[Path], size: int) -> np.ndarray:
    """Frames as the network's input, (N, 3, size, size): the runtime's own letterbox (``make_blob``)."""
    from edge.detector import make_blob

    frames = [cv2.imread(str(p)) for p in paths]
    bad = [str(p) for p, f in zip(paths, frames, strict=True) if f is None]
    if bad:
        raise ValueError(f"not images: {bad[:3]}")
    return make_blob(frames, (size, size))[0]


def unfused_model(onnx_path: Path, frames: np.ndarray, kpt_shape: tuple[int, int] = (3, 3), nc: int = 1,
                  cfg: str = "yolov8n-pose.yaml"):
    """A ``PoseModel`` computing the function of ``onnx_path``, with batch norms calibrated on ``frames``
    ((N, 3, S, S) as :func:`letterboxed` gives).  Raises ``ValueError`` when a weight is missing or of
    another shape (a model of another architecture)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import PoseModel

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    model = PoseModel(cfg, nc=nc, data_kpt_shape=kpt_shape, verbose=False)

    def take(name: str, like: torch.Tensor) -> torch.Tensor:
        if name not in w:
            raise ValueError(f"{onnx_path}: no initialiser {name}")
        a = torch.from_numpy(np.array(w[name], np.float32))
        if tuple(a.shape) != tuple(like.shape):
            raise ValueError(f"{onnx_path}: {name} has shape {tuple(a.shape)}, the model {tuple(like.shape)}")
        return a

    convs = {name: m for name, m in model.named_modules() if isinstance(m, Conv)}
    done = set()
    for name, m in convs.items():
        m.conv.weight.data = take(f"{name}.conv.weight", m.conv.weight)
        bias = take(f"{name}.conv.bias", m.bn.bias)
        m.bn.weight.data.fill_(1.0)
        m.bn.bias.data = bias
        m.bn.running_mean.zero_()
        m.bn.running_var.fill_(1.0 - m.bn.eps)
        done.update(f"{name}.{k}" for k, _ in m.named_parameters())
    for name, p in model.named_parameters():  # plain convolutions (the head's last layers)
        if name not in done and name in w:
            p.data = take(name, p)
            done.add(name)
    missing = [n for n, p in model.named_parameters() if n not in done and p.requires_grad]
    if missing:
        raise ValueError(f"{onnx_path}: no weights for {missing[:5]}")

    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.conv.register_forward_hook(
        lambda mod, inp, out, name=name: stats.__setitem__(name, (out.mean((0, 2, 3)), out.var((0, 2, 3)))))
        for name, m in convs.items()]
    model.eval()
    with torch.no_grad():
        model(torch.from_numpy(frames))
    for h in hooks:
        h.remove()
    for name, m in convs.items():
        mean, var = stats[name]
        m.bn.running_mean.copy_(mean)
        m.bn.running_var.copy_(var)
        m.bn.weight.data = torch.sqrt(var + m.bn.eps)
        m.bn.bias.data = m.bn.bias.data + mean
    return model


def max_output_difference(model, onnx_path: Path, frames: np.ndarray) -> float:
    """Largest absolute difference of the model's (eval) output and ONNX Runtime's on ``frames``, relative to
    the largest output (boxes and keypoints in input pixels, scores 0..1)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: frames})[0]
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(frames))
    y = (out[0] if isinstance(out, (list, tuple)) else out).numpy()
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-9))


def write_checkpoint(onnx_path: Path, images: Sequence[Path], dst: Path, imgsz: int,
                     kpt_shape: tuple[int, int] = (3, 3)) -> Path:
    """Unfuse ``onnx_path`` (batch norms calibrated on ``images``), check it against ONNX Runtime, and save it
    as an ultralytics checkpoint ``dst`` that ``train(pretrained=dst)`` loads."""
    import torch

    frames = letterboxed(images, imgsz)
    model = unfused_model(onnx_path, frames, kpt_shape)
    diff = max_output_difference(model, onnx_path, frames[:8])
    log.info("%s unfused: largest output difference to ONNX Runtime %.2e (relative)", onnx_path, diff)
    if diff > 1e-3:
        raise ValueError(f"{onnx_path}: the unfused model differs from the ONNX model by {diff:.2e}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {}, "date": None, "version": None}, dst)
    return dst

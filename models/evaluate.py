"""Accuracy of ONNX person + keypoint models on a dataset split, through the runtime (``edge/detector.py``).

Metrics (``evaluate_model``):

- ``box_map50``, ``box_map50_95``: COCO-style average precision of the boxes (101-point interpolation, greedy
  matching in score order, IoU thresholds 0.50:0.95:0.05), detections at ``conf=0.001``;
- ``kpt_map50``, ``kpt_map50_95``: the same with object keypoint similarity (OKS) instead of IoU: ``OKS =
  mean over labelled keypoints of exp(-d^2 / (2 * area * (2*sigma)^2))``, ``area = 0.53 * box area``
  (ultralytics' convention), sigmas ``models.dataset.OKS_SIGMAS``; persons with no labelled keypoint are
  ignored;
- at the deployed operating point (``conf=0.25, iou=0.45``): precision and recall of boxes (IoU >= 0.5,
  one-to-one), and for keypoints labelled visible (v = 2) the fraction within 10 px (``wrist_within_10px``,
  ``head_within_10px``), distances scaled to a 640 px wide frame; a wrist of a missed person counts as a
  miss.  ``wrist_within_10px_any_side`` lets a predicted wrist of either side match (what a hand-in-lane test
  needs); ``wrist_median_px`` is the median distance of matched wrists.

Persons too hidden to label (fewer than ``models.dataset.MIN_VISIBLE_PX`` visible pixels; listed per image in
``{split}_frames.json``) are ignored: a detection that overlaps one (IoU >= 0.5) and no labelled person is
dropped before matching, so it counts neither as found nor as a false positive.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.detector import Detections, Detector
from models.dataset import KEYPOINTS, OKS_SIGMAS, image_files, parse_label_file

log = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
REF_WIDTH = 640.0
NEAR_PX = 10.0


# ---------------------------------------------------------------------------------------------- data
def load_split(data_root: Path, split: str = "test", limit: int | None = None
               ) -> list[tuple[Path, np.ndarray, np.ndarray, tuple[int, int], np.ndarray]]:
    """(image path, boxes (N, 4) px, keypoints (N, K, 3) px, (width, height), ignored boxes (M, 4)) for each
    image of a split.  Ignored boxes are persons too hidden to label (``{split}_frames.json``)."""
    images = image_files(Path(data_root) / "images" / split)[:limit]
    frames_json = Path(data_root) / f"{split}_frames.json"
    ignore = json.loads(frames_json.read_text()).get("ignore", {}) if frames_json.is_file() else {}
    out = []
    for img in images:
        im = cv2.imread(str(img))
        if im is None:
            raise ValueError(f"{img}: not a readable image")
        h, w = im.shape[:2]
        label = Path(data_root) / "labels" / split / (img.stem + ".txt")
        boxes, kps = parse_label_file(label, w, h)
        ign = np.asarray(ignore.get(img.stem, []), float).reshape(-1, 4)
        out.append((img, boxes, kps, (w, h), ign))
    return out


# ---------------------------------------------------------------------------------------------- similarity
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (D, 4) against ``b`` (G, 4), x1y1x2y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def oks_matrix(pred_kp: np.ndarray, gt_kp: np.ndarray, gt_boxes: np.ndarray,
               sigmas: Sequence[float] = OKS_SIGMAS) -> np.ndarray:
    """OKS of predicted keypoints (D, K, 3) against labelled ones (G, K, 3); NaN for persons without a
    labelled keypoint."""
    if len(pred_kp) == 0 or len(gt_kp) == 0:
        return np.zeros((len(pred_kp), len(gt_kp)))
    area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]) * 0.53
    k2 = (2 * np.asarray(sigmas)) ** 2
    d2 = ((pred_kp[:, None, :, :2] - gt_kp[None, :, :, :2]) ** 2).sum(-1)  # (D, G, K)
    e = d2 / (2 * k2[None, None, :] * (area[None, :, None] + 1e-9))
    lab = gt_kp[None, :, :, 2] > 0
    n = lab.sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, (np.exp(-e) * lab).sum(-1) / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------------------------------------- AP
def average_precision(per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """COCO AP per threshold from per-image ``(scores (D,), similarity (D, G) with NaN columns = ignored GT,
    n_gt)`` (101-point interpolated precision, greedy matching in score order to the most similar free GT)."""
    n_gt = sum(int(ng) for _, _, ng in per_image)
    scores = np.concatenate([s for s, _, _ in per_image]) if per_image else np.zeros(0)
    aps = np.zeros(len(thresholds))
    if n_gt == 0:
        return aps
    for ti, t in enumerate(thresholds):
        tp_all = []
        for s, sim, _ in per_image:
            order = np.argsort(-s, kind="stable")
            tp = np.zeros(len(s), bool)
            if sim.shape[0] and sim.shape[1]:
                ignored = np.isnan(sim[0])
                sim_v = np.where(np.isnan(sim), -1.0, sim)
                taken = np.zeros(sim.shape[1], bool)
                for d in order:
                    cand = np.where(taken | ignored, -1.0, sim_v[d])
                    g = int(np.argmax(cand))
                    if cand[g] >= t:
                        taken[g] = True
                        tp[d] = True
            tp_all.append(tp)
        tp = np.concatenate(tp_all)
        if not tp.any():
            continue  # AP 0 at this threshold
        order = np.argsort(-scores, kind="stable")
        tp = tp[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
        recall = ctp / n_gt
        precision = ctp / np.maximum(ctp + cfp, 1e-9)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        rs = np.linspace(0, 1, 101)
        idx = np.searchsorted(recall, rs, side="left")
        aps[ti] = np.mean(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0))
    return aps


def drop_in_ignored(dets: Detections, gt_boxes: np.ndarray, ignore: np.ndarray) -> Detections:
    """Detections of persons too hidden to label are neither right nor wrong: drop those that overlap an
    ignored person (IoU >= 0.5) and no labelled one (IoU < 0.5)."""
    if len(dets) == 0 or len(ignore) == 0:
        return dets
    near_ign = iou_matrix(dets.boxes, ignore).max(1) >= 0.5
    near_gt = iou_matrix(dets.boxes, gt_boxes).max(1) >= 0.5 if len(gt_boxes) else np.zeros(len(dets), bool)
    keep = ~(near_ign & ~near_gt)
    kp = dets.keypoints[keep] if dets.keypoints is not None else None
    return Detections(dets.boxes[keep], dets.scores[keep], dets.classes[keep], kp)


def _drop_ignored(dets: Detections, gt_boxes: np.ndarray, gt_kp: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint AP inputs: scores and the OKS matrix, with detections that overlap only an ignored person
    (no labelled keypoint) removed (COCO's crowd-style ignore)."""
    oks = oks_matrix(dets.keypoints, gt_kp, gt_boxes)
    if len(dets) == 0 or len(gt_boxes) == 0:
        return dets.scores, oks
    ignored = np.isnan(oks[0])
    if not ignored.any():
        return dets.scores, oks
    iou = iou_matrix(dets.boxes, gt_boxes)
    best = iou.argmax(1)
    drop = ignored[best] & (iou.max(1) >= 0.5)
    return dets.scores[~drop], oks[~drop]


# ---------------------------------------------------------------------------------------------- evaluation
def run_detector(det: Detector, paths: Sequence[Path], batch: int = 4) -> list[Detections]:
    out: list[Detections] = []
    for i in range(0, len(paths), batch):
        frames = [cv2.imread(str(p)) for p in paths[i:i + batch]]
        out.extend(det.detect(frames))
    return out


def operating_point(preds: list[Detections], data) -> dict:
    """Box precision/recall and keypoint distances at the deployed thresholds."""
    tp = fp = fn = 0
    wr_ok = wr_any_ok = wr_n = head_ok = head_n = 0
    wr_d: list[float] = []
    for dets, (_, gb, gk, (w, _h), ign) in zip(preds, data):
        dets = drop_in_ignored(dets, gb, ign)
        scale = REF_WIDTH / w
        iou = iou_matrix(dets.boxes, gb)
        rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
        good = iou[rows, cols] >= 0.5 if iou.size else np.zeros(0, bool)
        rows, cols = rows[good], cols[good]
        tp += len(rows)
        fp += len(dets) - len(rows)
        fn += len(gb) - len(rows)
        match = dict(zip(cols.tolist(), rows.tolist()))
        for g in range(len(gb)):
            d = match.get(g)
            if gk[g, 0, 2] == 2:
                head_n += 1
                if d is not None and np.hypot(*(dets.keypoints[d, 0, :2] - gk[g, 0, :2])) * scale <= NEAR_PX:
                    head_ok += 1
            for k in (1, 2):
                if gk[g, k, 2] != 2:
                    continue
                wr_n += 1
                if d is None:
                    continue
                dist = np.hypot(*(dets.keypoints[d, k, :2] - gk[g, k, :2])) * scale
                other = np.hypot(*(dets.keypoints[d, 3 - k, :2] - gk[g, k, :2])) * scale
                wr_d.append(float(dist))
                wr_ok += dist <= NEAR_PX
                wr_any_ok += min(dist, other) <= NEAR_PX
    return {
        "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
        "wrist_within_10px": wr_ok / max(wr_n, 1), "wrist_within_10px_any_side": wr_any_ok / max(wr_n, 1),
        "wrist_median_px": float(np.median(wr_d)) if wr_d else None, "visible_wrists": wr_n,
        "head_within_10px": head_ok / max(head_n, 1), "visible_heads": head_n,
    }


def evaluate_model(model: Path, data, threads: int | None = None) -> dict:
    paths = [d[0] for d in data]
    t0 = time.perf_counter()
    det = Detector(model, conf=0.001, iou=0.6, max_det=100, intra_op_threads=threads)
    preds = run_detector(det, paths)
    box_in, kpt_in = [], []
    for dets, (_, gb, gk, _, ign) in zip(preds, data):
        dets = drop_in_ignored(dets, gb, ign)
        box_in.append((dets.scores, iou_matrix(dets.boxes, gb), len(gb)))
        s, oks = _drop_ignored(dets, gb, gk)
        n_lab = int(np.sum(gk[:, :, 2].max(1) > 0)) if len(gk) else 0
        kpt_in.append((s, oks, n_lab))
    box_ap = average_precision(box_in)
    kpt_ap = average_precision(kpt_in)
    op = Detector(model, intra_op_threads=threads)  # deployed defaults: conf 0.25, iou 0.45
    quantization = op.session.get_modelmeta().custom_metadata_map.get("quantization")
    op_metrics = operating_point(run_detector(op, paths), data)
    return {
        "model": str(model), "images": len(data), "persons": int(sum(len(d[1]) for d in data)),
        "ignored_persons": int(sum(len(d[4]) for d in data)),
        "box_map50": float(box_ap[0]), "box_map50_95": float(box_ap.mean()),
        "kpt_map50": float(kpt_ap[0]), "kpt_map50_95": float(kpt_ap.mean()),
        **op_metrics, "eval_seconds": time.perf_counter() - t0, "quantization": quantization,
    }


def evaluate_models(models: dict[str, Path], data_root: Path, split: str = "test",
                    limit: int | None = None) -> dict:
    """Metrics of each model on one split, and the INT8 loss against FP32 where both are given."""
    data = load_split(data_root, split, limit)
    res: dict = {"split": split, "data": str(data_root), "keypoints": list(KEYPOINTS)}
    for name, path in models.items():
        res[name] = evaluate_model(Path(path), data)
        log.info("%s: %s", name, json.dumps({k: v for k, v in res[name].items() if k != "model"}))
    if "fp32" in res and "int8" in res:
        res["int8_loss_map50_points"] = 100 * (res["fp32"]["box_map50"] - res["int8"]["box_map50"])
    try:
        from bench.detector import measure

        res["latency"] = measure(models.get("fp32"), models.get("int8"), runs=20)
    except (OSError, RuntimeError, ValueError, ImportError) as exc:  # the card keeps the accuracy
        log.warning("latency not measured: %s", exc)
    return res


# ---------------------------------------------------------------------------------------------- card
def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def history_entry(metrics: dict, manifest: dict, date: str) -> dict:
    """This run as a row of ``models/history.json``: each training run that led to the committed model."""
    tr = metrics.get("training", {})
    train = manifest.get("splits", {}).get("train", {})
    seeds = train.get("seeds") or []
    return {"date": date, "origin": "fine-tuned" if "--init-onnx" in metrics.get("command", "") else "from scratch",
            "command": metrics.get("command", ""), "train_images": train.get("images"),
            "train_seeds": f"{min(seeds)}-{max(seeds)}" if seeds else None,
            "epochs": tr.get("epochs_done"), "hours": tr.get("args", {}).get("time"),
            "box_map50": metrics.get("fp32", {}).get("box_map50"),
            "box_map50_int8": metrics.get("int8", {}).get("box_map50"),
            "wrist_within_10px": metrics.get("fp32", {}).get("wrist_within_10px")}


def history_table(history: list[dict]) -> str:
    """The card's History section: one row per training run, oldest first."""
    rows = ["| date | from | train frames (seeds) | epochs | hours | box mAP50 FP32 / INT8 | wrists within 10 px |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for h in history:
        rows.append(f"| {h.get('date')} | {h.get('origin')} | {h.get('train_images')} ({h.get('train_seeds')}) | "
                    f"{h.get('epochs')} | {h.get('hours') if h.get('hours') is not None else '–'} | "
                    f"{_pct(h.get('box_map50'))} / {_pct(h.get('box_map50_int8'))} | "
                    f"{_pct(h.get('wrist_within_10px'))} |")
    return "\n".join(rows)


def write_card(path: Path, metrics: dict, manifest: dict, history: list[dict] | None = None) -> None:
    """Write the model card (Markdown) from the metrics, the dataset manifest and the training history."""
    tr = metrics.get("training", {})
    a = tr.get("args", {})
    f, q = metrics.get("fp32", {}), metrics.get("int8", {})
    lat = metrics.get("latency", {})
    # the INT8 model's own metadata says how it was calibrated
    m = re.search(r"(MinMax|Percentile|Entropy) on (\d+) training frames", q.get("quantization") or "")
    calib = metrics.get("calibration_frames", int(m.group(2)) if m else "?")
    method = m.group(1) if m else "MinMax"
    plan = manifest.get("plan", {})
    sp = manifest.get("splits", {})

    def row(name, key, fmt=_pct):
        return f"| {name} | {fmt(f.get(key))} | {fmt(q.get(key))} |"

    lat_rows = []
    for r in lat.get("rows", []):
        lat_rows.append(f"| {r['threads']} | {r['batch']} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | "
                        f"{r['speedup']:.2f}x |")
    px = lambda v: "–" if v is None else f"{v:.1f}"
    done, planned = tr.get("epochs_done"), a.get("epochs")
    status = ""
    if a.get("time"):  # a time budget: ultralytics re-plans the epochs to fit it, so what was done is the plan
        planned = done
    if isinstance(done, int) and isinstance(planned, int) and done < planned:
        status = (f"\n**Status: an early checkpoint — epoch {done} of the {planned} the training command plans.** "
                  "The figures below are this checkpoint's; the full run's model replaces it.\n")
    origin = ("trained **from scratch** (no pretrained weights)" if "--init-onnx" not in metrics.get("command", "")
              else "**fine-tuned** (`--init-onnx`, `models/from_onnx.py`) from the model this card described before "
                   "(the runs that led here: History below; no pretrained weights at any stage)")
    text = f"""# person_pose — person detector with head and wrist keypoints
{status}
`person_pose.onnx` (FP32) and `person_pose_int8.onnx` (INT8, static QDQ) find people in ceiling-camera frames
and three keypoints per person: **head** (centre of the head), **left wrist**, **right wrist**. The edge camera
pipeline runs them with `edge/detector.py` (ONNX Runtime; no torch, no ultralytics at run time).

## Model
- Architecture: YOLOv8n-pose (ultralytics `yolov8n-pose.yaml`), {origin}, one class `person`,
  `kpt_shape: [3, 3]` (x, y, visibility), `flip_idx: [0, 2, 1]`.
- Input: {a.get('imgsz', '?')}x{a.get('imgsz', '?')} RGB, letterboxed (pad 114), 0–1; dynamic batch.
- Output: `(B, 14, A)` = `cx cy w h score (x y v) x 3` per anchor, in input pixels (ultralytics pose head;
  `edge/detector.py` decodes it, runs NMS and maps boxes and keypoints back to the frame).
- Metadata (ONNX `metadata_props`): `task=pose`, `names`, `kpt_shape`, `kpt_names`, `imgsz`.

## Data
Frames rendered by the walkout simulator (`sim/`, source `{plan.get('source')}`): many seeds of the presets
{', '.join(plan.get('presets', []))}, every camera of the store (pinhole and fisheye, 640x480), with the
simulator's lighting changes, sensor noise and occlusions. Labels come from the simulator's ground truth: box =
visible part of the person, keypoints with visibility 0 (outside the frame / not labelled), 1 (occluded),
2 (visible).

| split | images | persons | seeds | use |
| --- | --- | --- | --- | --- |
| train | {sp.get('train', {}).get('images')} | {sp.get('train', {}).get('persons')} | {_seed_range(sp.get('train'))} | training, INT8 calibration ({calib} frames) |
| val | {sp.get('val', {}).get('images')} | {sp.get('val', {}).get('persons')} | {_seed_range(sp.get('val'))} (hard) | checkpoint selection |
| test | {sp.get('test', {}).get('images')} | {sp.get('test', {}).get('persons')} | {_seed_range(sp.get('test'))} (hard) | **held-out** figures below |

## Training
```
{metrics.get('command', 'python -m models.train')}
```
(from the repository root with the `train` extra installed: `pip install -e .[train]`; `--resume` continues an
interrupted run from its last checkpoint). Epochs: {planned} planned, {done if done is not None else '?'} done{
f" (a {a['time']} h budget)" if a.get('time') else ''};
batch {a.get('batch')}; device `{a.get('device')}`; optimizer `{a.get('optimizer')}` (ultralytics picks AdamW
for runs under 10k iterations); mosaic {a.get('mosaic')} (off for the last {a.get('close_mosaic')} epochs),
scale 0.3, HSV jitter, left-right flips {a.get('fliplr')} with the wrists swapped, no up-down flips. Offline:
`YOLO_OFFLINE=1`, a local font as `Arial.ttf`, `plots=False, amp=False`, {a.get('workers', 0)} data loader workers.
A GPU machine lent for minutes (`models/train_on_device.sh`) trains on `python -m models.pack`'s shrunk frames.

## History
Each run continues from the model the one before it exported (`--init-onnx`), so the committed model is the
sum of them (`models/history.json`; held-out figures as each run's card gave them):

{history_table(history or [])}

## Held-out accuracy (`test` split: `hard` preset, unseen seeds; through `edge/detector.py`)

| metric | FP32 | INT8 |
| --- | --- | --- |
{row('box mAP50', 'box_map50')}
{row('box mAP50-95', 'box_map50_95')}
{row('keypoint mAP50 (OKS)', 'kpt_map50')}
{row('keypoint mAP50-95 (OKS)', 'kpt_map50_95')}
{row('box precision @0.25', 'precision')}
{row('box recall @0.25', 'recall')}
{row('visible wrists within 10 px (same side)', 'wrist_within_10px')}
{row('visible wrists within 10 px (either side)', 'wrist_within_10px_any_side')}
{row('visible heads within 10 px', 'head_within_10px')}
| median wrist error, px | {px(f.get('wrist_median_px'))} | {px(q.get('wrist_median_px'))} |

Percentages. mAP: COCO-style (101-point), detections at conf 0.001 / NMS IoU 0.6; keypoint OKS with sigmas
head 0.05, wrists 0.062 and area = 0.53 x box area. OKS is strict for people this small: for a person
20x60 px, OKS 0.5 needs its keypoints within about 3 px, so the keypoint mAP stays far below the 10 px figures. Operating point: conf 0.25, NMS IoU 0.45. Distances at
640x480; a visible wrist of a person the detector missed counts as a miss. {f.get('persons', '?')} labelled
persons in {f.get('images', '?')} frames; {f.get('ignored_persons', '?')} persons with fewer than 60 visible
pixels are not labelled, and detections on them count neither way. {_int8_change(metrics.get('int8_loss_map50_points'))}
Reproduce: `.venv-train/bin/python -m models.train --out OUT --steps evaluate` (writes `OUT/metrics.json`).

## Latency (ONNX Runtime {lat.get('onnxruntime', '?')}, CPU, ms per frame, median of {lat.get('runs', '?')} interleaved runs)

| threads | batch | FP32 | INT8 | INT8 speed-up |
| --- | --- | --- | --- | --- |
{chr(10).join(lat_rows) or '| – | – | – | – | – |'}

Model forward only (`session.run`); `python -m bench.detector` adds the whole detector (letterbox, decode,
NMS) and its overhead. Machine: {lat.get('machine', '?')}, shared: 1-minute load average
{lat.get('load_avg_1min', '?')} while measuring (on a loaded machine the figures, and the 2-thread ones most,
are noisy; rerun `python -m bench.detector` on a quiet one).

## INT8
`models/quantize.py`: `quant_pre_process`, then ONNX Runtime `quantize_static` (QDQ), per-channel QInt8
weights, QUInt8 activations, {method} calibration on {calib} training frames letterboxed exactly as the runtime
does. The head's decode (reshapes, concats, sigmoids, box and keypoint maths, the final concat mixing pixels and
0–1 scores) stays FP32; backbone, neck, head conv towers and DFL are INT8.

## Limits
Trained and measured on simulator frames only: real cameras (real people, clothing, lighting) need fine-tuning
on real labelled frames before its figures mean anything there. Left and right wrists are told apart only by
the body's pose as rendered; the either-side figure is the one that matters for "whose hand is in the lane".

## Licence
The weights were trained with Ultralytics (AGPL-3.0) from scratch on walkout's own simulator data; they and
the project are licensed AGPL-3.0-or-later (see `LICENSE`).
"""
    path.write_text(text)


def _int8_change(loss: float | None) -> str:
    """The card's sentence on what quantisation did to box mAP50 (``loss`` in points; negative: a gain)."""
    if loss is None:
        return ""
    if loss < 0:
        return f"INT8 scores {-loss:.2f} points of box mAP50 above FP32 (quantisation moves scores a little either way)."
    return f"INT8 loses {loss:.2f} points of box mAP50."


def _seed_range(split: dict | None) -> str:
    seeds = (split or {}).get("seeds") or []
    return f"{min(seeds)}–{max(seeds)}" if seeds else "–"

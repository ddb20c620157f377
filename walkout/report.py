"""The per-visit report of an evaluation: ``RUN_DIR/report/index.html`` and PNGs drawn with OpenCV.

For every true visit (and every receipt for an account that never visited): the floor plan (lanes, entry
gates, exits), the true trajectory of each of the visit's shoppers (thick, light), the fused trajectory of
each shopper fusion bound to the visit (thin, dark, dotted; cut where it was lost for over a second), the visit's true shelf events at their lanes
(green when the run got them right, red when a problem names them), events of other visits that ended up
in this cart (red crosses), and beside it the true and charged lines and every problem the evaluation
found, each with its cause.  ``overview.png`` shows every shopper at once.
"""

from __future__ import annotations

import html
import json
import logging
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from calibration.store import Store
from walkout.evaluate import Evaluation, VisitResult
from walkout.replay import read_jsonl

log = logging.getLogger(__name__)

PX_PER_M = 60
MARGIN = 30
LABEL_ROOM = 230  # pixels right of the floor for the labels of lanes on the right wall
FONT = cv2.FONT_HERSHEY_SIMPLEX
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (120, 120, 255), (150, 200, 60), (255, 120, 200)]  # RGB, colour-blind friendly
GREEN, RED, GREY = (40, 160, 40), (30, 30, 220), (170, 170, 170)  # BGR


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (rgb[2], rgb[1], rgb[0])


def _dark(c: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(v * 0.55) for v in c)  # type: ignore[return-value]


class FloorPlan:
    """Store coordinates (metres, y up) to image pixels (y down)."""

    def __init__(self, store: Store, px_per_m: int = PX_PER_M):
        self.store = store
        self.s = px_per_m
        self.w_m, self.h_m = store.store.size
        self.size = (int(self.w_m * self.s) + 2 * MARGIN + LABEL_ROOM, int(self.h_m * self.s) + 2 * MARGIN + 24)

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, float).reshape(-1, 2)
        return np.column_stack([MARGIN + xy[:, 0] * self.s, MARGIN + (self.h_m - xy[:, 1]) * self.s]).astype(
            np.int32)

    def base(self) -> np.ndarray:
        img = np.full((self.size[1], self.size[0], 3), 255, np.uint8)
        cv2.rectangle(img, tuple(self.px([0, self.h_m])[0]), tuple(self.px([self.w_m, 0])[0]), (90, 90, 90), 2)
        for ln in self.store.lanes.values():
            fp = ln.box.corners()[::2, :2][[0, 1, 3, 2]]
            cv2.fillPoly(img, [self.px(fp)], (225, 225, 225))
            cv2.polylines(img, [self.px(fp)], True, (185, 185, 185), 1)
        for g in self.store.gates:
            self._region(img, g.region, (60, 170, 60), f"gate {g.id}")
        for e in self.store.exits:
            self._region(img, e.region, (60, 60, 200), f"exit {e.id}")
        return img

    def _region(self, img: np.ndarray, region, colour, label: str) -> None:
        a = tuple(self.px([region.min[0], region.max[1]])[0])
        b = tuple(self.px([region.max[0], region.min[1]])[0])
        cv2.rectangle(img, a, b, colour, 2)
        cv2.putText(img, label, (a[0] + 2, b[1] - 4), FONT, 0.35, colour, 1, cv2.LINE_AA)

    def lane_xy(self, lane: str) -> np.ndarray | None:
        ln = self.store.lanes.get(lane)
        return None if ln is None else ln.box.center[:2]


def _segments(path: np.ndarray, max_gap_s: float = 1.0) -> list[np.ndarray]:
    """A ``(N, 3)`` t, x, y path cut where samples are more than ``max_gap_s`` apart (the shopper was lost)."""
    if len(path) < 2:
        return [path]
    cuts = np.flatnonzero(np.diff(path[:, 0]) > max_gap_s) + 1
    return np.split(path, cuts)


def _path(img: np.ndarray, plan: FloorPlan, path: np.ndarray, colour, thickness: int, dotted: bool = False
          ) -> None:
    for seg in _segments(path):
        _polyline(img, plan.px(seg[:, 1:3]), colour, thickness, dotted)


def _polyline(img: np.ndarray, pts: np.ndarray, colour, thickness: int, dotted: bool = False) -> None:
    if len(pts) < 2:
        return
    if not dotted:
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, colour, thickness, cv2.LINE_AA)
        return
    for k in range(0, len(pts) - 1, 2):
        cv2.line(img, tuple(pts[k]), tuple(pts[k + 1]), colour, thickness, cv2.LINE_AA)


def _read_true_paths(session_dir: Path) -> dict[str, np.ndarray]:
    """{shopper: (N, 3) t, x, y} from ``truth/trajectories.csv``."""
    from walkout.truth_perception import read_trajectories

    path = session_dir / "truth" / "trajectories.csv"
    if not path.is_file():
        return {}
    tr = read_trajectories(path)
    out: dict[str, list] = defaultdict(list)
    for s, t, xy in zip(tr.shopper, tr.t, tr.xy, strict=True):
        out[s].append((t, xy[0], xy[1]))
    return {s: np.asarray(v) for s, v in out.items()}


def _read_fused_paths(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / "floor_tracks.csv"
    out: dict[str, list] = defaultdict(list)
    if path.is_file():
        for ln in path.read_text().splitlines()[1:]:
            t, sid, _visit, x, y = ln.split(",")
            out[sid].append((float(t), float(x), float(y)))
    return {s: np.asarray(v) for s, v in out.items()}


def _inside(path: np.ndarray, t0: float | None, t1: float | None) -> np.ndarray:
    keep = np.ones(len(path), bool)
    if t0 is not None:
        keep &= path[:, 0] >= t0
    if t1 is not None:
        keep &= path[:, 0] <= t1
    return path[keep]


def draw_visit(plan: FloorPlan, res: VisitResult, truth: dict, true_paths: dict[str, np.ndarray],
               fused_paths: dict[str, np.ndarray], cart_lines: list[dict], event_match: dict[str, str]
               ) -> np.ndarray:
    img = plan.base()
    shoppers = {s["shopper"]: s for s in truth.get("shoppers", [])}
    for k, sid in enumerate(res.shoppers):
        col = _bgr(PALETTE[k % len(PALETTE)])
        info = shoppers.get(sid, {})
        p = _inside(true_paths.get(sid, np.zeros((0, 3))), info.get("entered_at"), info.get("exited_at"))
        _path(img, plan, p, col, 5)
        if len(p):
            q = plan.px(p[-1:, 1:3])[0]
            cv2.putText(img, sid, (int(q[0]) + 4, int(q[1]) - 4), FONT, 0.45, col, 1, cv2.LINE_AA)
    for k, sid in enumerate(res.run_shoppers):
        col = _dark(_bgr(PALETTE[(k + 3) % len(PALETTE)]))
        p = fused_paths.get(sid, np.zeros((0, 3)))
        _path(img, plan, p, col, 2, dotted=True)
        if len(p):
            q = plan.px(p[:1, 1:3])[0]
            cv2.putText(img, f"fused {sid}", (int(q[0]) + 4, int(q[1]) + 12), FONT, 0.4, col, 1, cv2.LINE_AA)
    problems = " ".join(res.problems)
    stacked: dict[str, int] = defaultdict(int)  # labels at one lane go one under the other
    for ev in (e for e in truth.get("events", []) if e["visit"] == res.visit):
        xy = plan.lane_xy(ev["lanes"][0])
        if xy is None:
            continue
        bad = ev["event_id"] in problems
        q = plan.px(xy)[0]
        q[1] += 12 * stacked[ev["lanes"][0]]
        stacked[ev["lanes"][0]] += 1
        cv2.circle(img, (int(q[0]), int(q[1])), 7, RED if bad else GREEN, 2 if bad else -1, cv2.LINE_AA)
        label = f"{ev['event_id']} {'+' if ev['kind'] in ('pick', 'pick_of_misplaced') else '-'}{ev['qty']} " \
                f"{ev['sku']}"
        cv2.putText(img, label, (int(q[0]) + 9, int(q[1]) + 4), FONT, 0.33, RED if bad else (20, 110, 20), 1,
                    cv2.LINE_AA)
    true_events = {e["event_id"]: e for e in truth.get("events", [])}
    for ln in cart_lines:
        if not res.run_visit or ln["visit"] != res.run_visit:
            continue
        tev = true_events.get(event_match.get(ln.get("event_id") or "", ""))
        if tev is not None and tev["visit"] == res.visit:
            continue
        lanes = ln.get("lanes") or []
        xy = plan.lane_xy(lanes[0]) if lanes else None
        if xy is None:
            continue
        q = plan.px(xy)[0]
        q[1] += 12 * stacked[lanes[0]]
        stacked[lanes[0]] += 1
        cv2.drawMarker(img, (int(q[0]), int(q[1])), RED, cv2.MARKER_TILTED_CROSS, 14, 2, cv2.LINE_AA)
        who = f"(true: {tev['shopper']})" if tev else "(no true event)"
        cv2.putText(img, f"{ln['qty']} {ln['sku']} {who}", (int(q[0]) + 9, int(q[1]) + 14), FONT, 0.33, RED, 1,
                    cv2.LINE_AA)
    title = f"visit {res.visit or '(none)'}  account {res.account}  {res.status or 'no receipt'}"
    cv2.putText(img, title, (MARGIN, plan.size[1] - 10), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def draw_overview(plan: FloorPlan, truth: dict, true_paths: dict[str, np.ndarray],
                  fused_paths: dict[str, np.ndarray]) -> np.ndarray:
    img = plan.base()
    shoppers = {s["shopper"]: s for s in truth.get("shoppers", [])}
    for k, (sid, p) in enumerate(sorted(true_paths.items())):
        info = shoppers.get(sid, {})
        _path(img, plan, _inside(p, info.get("entered_at"), info.get("exited_at")), _bgr(PALETTE[k % len(PALETTE)]),
              4)
    for sid, p in sorted(fused_paths.items()):
        _path(img, plan, p, (60, 60, 60), 1, dotted=True)
    for ev in truth.get("events", []):
        xy = plan.lane_xy(ev["lanes"][0])
        if xy is not None:
            q = plan.px(xy)[0]
            cv2.circle(img, (int(q[0]), int(q[1])), 4, (0, 0, 0), -1, cv2.LINE_AA)
    cv2.putText(img, "all shoppers: true (colour), fused (dotted grey); dots: true shelf events",
                (MARGIN, plan.size[1] - 10), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _fmt(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def write_report(ev: Evaluation, session_dir: str | Path, run_dir: str | Path, store: Store) -> Path:
    """Write ``run_dir/report/`` and return the path of its ``index.html``."""
    session_dir, run_dir = Path(session_dir), Path(run_dir)
    if session_dir.is_file():
        session_dir = session_dir.parent
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plan = FloorPlan(store)
    true_paths = _read_true_paths(session_dir)
    fused_paths = _read_fused_paths(run_dir)
    cart_lines = read_jsonl(run_dir / "cart_lines.jsonl")
    cv2.imwrite(str(out / "overview.png"), draw_overview(plan, ev.truth, true_paths, fused_paths))
    m = ev.metrics
    keys = ["visits", "receipt_precision", "receipt_recall", "receipt_f1", "exact_cart_rate", "review_rate",
            "wrong_charge_rate", "event_precision", "event_recall", "hota", "idf1", "mota", "floor_hota",
            "floor_idf1", "floor_mota", "exit_to_receipt_p50_s", "exit_to_receipt_p99_s", "exit_to_receipt_basis"]
    rows = "".join(f"<tr><th>{k}</th><td>{_fmt(m.get(k))}</td></tr>" for k in keys)
    cams = "".join(f"<tr><th>{html.escape(c)}</th><td>{v['hota']:.3f}</td><td>{v['idf1']:.3f}</td>"
                   f"<td>{v['mota']:.3f}</td><td>{v['id_switches']}</td><td>{v['truth']}</td></tr>"
                   for c, v in sorted(m.get("per_camera", {}).items()))
    parts = [
        ("<!doctype html><html><head><meta charset='utf-8'><title>walkout evaluation</title><style>"
         "body{font-family:sans-serif;margin:20px;max-width:1500px} table{border-collapse:collapse;margin:6px 0}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}"
         ".bad{color:#b00} .ok{color:#070} .visit{border-top:2px solid #999;margin-top:18px;padding-top:8px}"
         ".row{display:flex;gap:16px;align-items:flex-start} img{border:1px solid #ddd}</style></head><body>"),
        f"<h1>Evaluation of {html.escape(str(run_dir))}</h1>",
        f"<p>session {html.escape(str(session_dir))}; run: {html.escape(json.dumps(m.get('run', {})))}</p>",
        f"<table>{rows}</table>",
        ("<h2>Cameras</h2><table><tr><th>camera</th><th>HOTA</th><th>IDF1</th><th>MOTA</th><th>id switches</th>"
         f"<th>truth</th></tr>{cams}</table>"),
        "<h2>All shoppers</h2><img src='overview.png'>",
        ("<h2>Visits</h2><p>Visits with problems first.  Thick light lines: true paths; thin dark dotted lines: "
         "the fused shoppers bound to the visit; green dots: true events the run got right; red circles: true "
         "events named in a problem; red crosses: lines of this cart that belong to another visit.</p>"),
    ]
    ordered = sorted(ev.visits, key=lambda r: (not r.problems, r.visit or "~"))
    for i, res in enumerate(ordered):
        name = f"visit_{i:03d}_{res.visit or 'none'}.png"
        img = draw_visit(plan, res, ev.truth, true_paths, fused_paths, cart_lines, ev.event_match)
        cv2.imwrite(str(out / name), img)
        cls = "ok" if res.exact and res.status in ("charged", "no_charge") else "bad"
        lines_t = ", ".join(f"{q} x {s}" for s, q in res.true_lines) or "(nothing)"
        lines_r = ", ".join(f"{q} x {s}" for s, q in res.run_lines) or "(nothing)"
        probs = "".join(f"<li>{html.escape(p)}</li>" for p in res.problems) or "<li>none</li>"
        parts.append(
            f"<div class='visit'><h3 class='{cls}'>visit {html.escape(res.visit or '(no true visit)')} -- "
            f"account {html.escape(res.account)} -- {html.escape(res.status or 'no receipt')}</h3>"
            f"<div class='row'><img src='{name}' width='{plan.size[0]}'><div>"
            f"<table><tr><th>true ({res.true_total})</th><td>{html.escape(lines_t)}</td></tr>"
            f"<tr><th>receipt ({_fmt(res.run_total)})</th><td>{html.escape(lines_r)}</td></tr>"
            f"<tr><th>missing</th><td>{html.escape(str(res.missing))}</td></tr>"
            f"<tr><th>extra</th><td>{html.escape(str(res.extra))}</td></tr>"
            f"<tr><th>true shoppers</th><td>{html.escape(', '.join(res.shoppers))}</td></tr>"
            f"<tr><th>fused shoppers</th><td>{html.escape(', '.join(res.run_shoppers))}</td></tr>"
            f"<tr><th>run visit</th><td>{html.escape(res.run_visit or '-')}</td></tr></table>"
            f"<b>problems</b><ul>{probs}</ul></div></div></div>")
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts))
    return index

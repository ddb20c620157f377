"""The fault scenarios on a live session.  Each returns a :class:`Row` of the table: what was done, the target,
what was measured and whether it met the target.

Every scenario runs the session through the store broker as deployed (passwords, ACL, persistence, limits),
the real ``walkout fusion`` process and one process per device, and compares the receipts with the
in-process reference (:func:`chaos.live.reference`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.compare import (
    Outcome,
    charges_per_visit_ok,
    double_charges,
    published_match,
    receipt_diffs,
    wrong_charges,
    wrong_vs_truth,
)
from chaos.feed import SHELF_DEVICE, SessionFeed
from chaos.live import LiveRun, RunOptions, reference
from wire.topics import Kind

log = logging.getLogger(__name__)


@dataclass
class Row:
    scenario: str
    fault: str
    target: str
    measured: str
    ok: bool
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Suite:
    """What every session scenario shares."""

    feed: SessionFeed
    reference: Outcome
    folder: Path
    speed: float = 1.0
    seed: int = 0
    alone: tuple[str, ...] | None = None  # devices in processes of their own (None: every device)
    db_url: Callable[[str], str] | None = None  # run name -> database URL (default SQLite in the run folder)
    quiet_s: float = 3.0
    idle_s: float = 20.0

    def run(self, name: str, **opts: Any) -> LiveRun:
        folder = self.folder / name
        db = self.db_url(name) if self.db_url else None
        ro = RunOptions(**{"speed": self.speed, "db_url": db, "alone": self.alone, "quiet_s": self.quiet_s,
                            "idle_s": self.idle_s, **opts})
        return LiveRun(self.feed, folder, len(self.reference.receipts), ro)

    @property
    def duration(self) -> float:
        return self.feed.t1 - self.feed.t0


def _finish(run: LiveRun) -> Outcome:
    try:
        run.play()
        run.stop_fusion()
        return run.result()
    finally:
        run.close()


def _identical(ref: Outcome, out: Outcome) -> tuple[bool, list[str]]:
    diffs = receipt_diffs(ref, out)
    problems = diffs + published_match(out)
    if not charges_per_visit_ok(out):
        problems.append(f"charges per visit: {dict(out.captures())}")
    return not problems, problems


def _summary(out: Outcome) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(out.statuses().items()))


# ------------------------------------------------------------------------------------------------ scenarios
def live_clean(s: Suite) -> Row:
    """No fault: the live run through the deployed broker equals the in-process reference."""
    t = time.monotonic()
    run = s.run("clean").start()
    out = _finish(run)
    ok, problems = _identical(s.reference, out)
    return Row("baseline", "none: live session through the deployed broker", "receipts = in-process reference",
               f"{len(out.receipts)} receipts ({_summary(out)}), "
               + ("identical" if ok else "; ".join(problems)), ok,
               {"receipts": len(out.receipts), "problems": problems, **run.timings}, time.monotonic() - t)


def fusion_kills(s: Suite, kills: int = 20, gap: tuple[float, float] = (0.2, 1.5)) -> Row:
    """``kills`` SIGKILLs of fusion at random moments while the session plays (each restart waits for
    ``fusion ready``; the devices keep publishing, the broker queues for fusion's persistent session)."""
    t = time.monotonic()
    rng = random.Random(s.seed)
    run = s.run("fusion-kills").start()
    during: list[float] = []

    def killer() -> None:
        assert run.fusion is not None
        time.sleep(rng.uniform(1.0, 3.0) / s.speed)
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))
            during.append(round(run.session_now(), 2))
            run.fusion.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            run.fusion.start()

    run.at(0.0, "start killing fusion", lambda: run.in_background("killer", killer))
    out = _finish(run)
    ok, problems = _identical(s.reference, out)
    in_session = sum(1 for x in during if x <= s.duration)
    dc = double_charges(out)
    ok = ok and len(during) == kills and dc == 0
    caps = out.captures()
    return Row("fusion kill -9", f"{len(during)} x SIGKILL of fusion ({in_session} while the devices published)",
               "receipts identical, exactly 1 charge per visit",
               f"{'identical' if not problems else '; '.join(problems)}; charges per visit "
               f"{sorted(set(caps.values())) or [0]}, double charges {dc}", ok,
               {"kills": len(during), "kill_times": during, "starts": run.fusion.starts if run.fusion else 0,
                "problems": problems, **run.timings}, time.monotonic() - t)


def broker_kill(s: Suite, at: float = 0.45, down_s: float = 2.0) -> Row:
    """SIGKILL of the broker at ``at`` of the session, restarted ``down_s`` later (session seconds)."""
    t = time.monotonic()
    run = s.run("broker-kill").start()

    def kill() -> None:
        assert run.broker is not None
        run.broker.broker.kill()
        time.sleep(down_s / s.speed)
        run.broker.broker.start()

    run.at(at * s.duration, "SIGKILL broker", lambda: run.in_background("broker", kill))
    out = _finish(run)
    ok, problems = _identical(s.reference, out)
    sent = s.feed.count(Kind.SHELF_EVENTS)
    got = int(out.counters.get("messages_shelf_events", -1))
    lost = sent - got
    ok = ok and lost == 0
    return Row("broker kill -9", f"broker SIGKILLed at {at * s.duration:.0f} s, back {down_s:.0f} s later",
               "0 shelf events lost, receipts identical",
               f"shelf events {got}/{sent} (lost {lost}), duplicates dropped "
               f"{out.counters.get('transport_duplicate', 0)}, "
               + ("receipts identical" if not problems else "; ".join(problems)), ok,
               {"shelf_events_sent": sent, "shelf_events_received": got, "problems": problems,
                "fusion_counters": out.counters, **run.timings}, time.monotonic() - t)


def _busiest_camera(feed: SessionFeed) -> str:
    counts: dict[str, int] = {}
    for it in feed.items:
        if it.kind is Kind.TRACKS and it.msg.tracks:  # type: ignore[attr-defined]
            counts[it.device] = counts.get(it.device, 0) + 1
    return max(sorted(counts), key=lambda d: counts[d])


def camera_kill(s: Suite, at: float | None = None, camera: str | None = None) -> Row:
    """SIGKILL of a camera's process (default the busiest) at session time ``at`` (default: between the middle
    two exits of the reference's visits, so some visits end before and some span it)."""
    t = time.monotonic()
    ref = s.reference
    if at is None:  # between the middle two exits of the reference's visits
        exits = sorted(ref.span(a)[1] for a in ref.receipts)
        k = len(exits) // 2
        at = (exits[k - 1] + exits[k]) / 2 if len(exits) >= 2 else s.duration / 2
    cam = camera or _busiest_camera(s.feed)
    run = s.run("camera-kill", alone=tuple({*(s.alone or ()), cam})).start()
    run.at(at, f"SIGKILL {cam}", lambda: run.devices[cam].kill())
    out = _finish(run)
    will = "offline" in (run.watcher.states(cam) if run.watcher else [])
    before = {a for a in ref.receipts if ref.span(a)[1] < at - 1.0}
    covered = {a for a in ref.receipts if ref.span(a)[1] > at + 1.0}
    same_before = not receipt_diffs(ref, out, before)
    held = [a for a in covered if out.receipts.get(a, {}).get("status") == "held_for_review"]
    wrong = wrong_charges(ref, out)
    truth_wrong = wrong_vs_truth(out, s.feed.truth)
    ok = will and same_before and len(held) == len(covered) and not wrong and charges_per_visit_ok(out)
    return Row("camera kill -9", f"{cam} SIGKILLed at {at:.0f} s",
               "last will offline; visits it covered held; 0 wrong charges",
               f"last will {'seen' if will else 'NOT seen'}; held {len(held)}/{len(covered)} covered visits"
               + (f" ({len(covered - set(out.receipts))} never settled)" if covered - set(out.receipts) else "")
               + f"; {len(before)} earlier visits {'identical' if same_before else 'DIFFERENT'}; "
               f"wrong charges {len(wrong)}", ok,
               {"camera": cam, "at": at, "will": will, "covered": sorted(covered), "held": sorted(held),
                "wrong": wrong, "wrong_vs_truth": truth_wrong, "unsettled": sorted(covered - set(out.receipts)),
                "statuses": dict(out.statuses()), **run.timings}, time.monotonic() - t)


def _shelf_link(s: Suite, mode: str, at: float, seconds: float, name: str | None = None
                ) -> tuple[LiveRun, Outcome, dict[str, Any]]:
    run = s.run(name or f"shelf-{mode}", proxied=(SHELF_DEVICE,)).start()
    proxy = run.proxies[SHELF_DEVICE]
    info: dict[str, Any] = {}

    def fault() -> None:
        getattr(proxy, mode)()
        time.sleep(seconds / s.speed)
        info["ended_at"] = round(run.session_now(), 2)
        proxy.resume()

    run.at(at, f"{mode} the shelf gateway's link", lambda: run.in_background("link", fault))
    out = _finish(run)
    info["refused_connections"] = proxy.refused
    return run, out, info


def _exits_within(ref: Outcome, t0: float, t1: float) -> list[str]:
    return sorted(a for a in ref.receipts if t0 <= ref.span(a)[1] <= t1)


def quiet_window(ref: Outcome, seconds: float, earliest: float, duration: float) -> float | None:
    """The first start >= ``earliest`` of a ``seconds`` window in which no visit of the reference exits (with
    a few seconds' margin for settling), or None."""
    exits = [ref.span(a)[1] for a in ref.receipts]
    t = earliest
    while t + seconds <= duration:
        if not any(t - 1.0 <= e <= t + seconds + 3.0 for e in exits):
            return t
        t += 0.5
    return None


def shelf_stall(s: Suite, at: float | None = None, seconds: float = 30.0, across_exit: bool = False) -> Row:
    """The shelf gateway's link stalls (nothing passes, nothing is closed) for ``seconds``: its outbox waits for
    acknowledgements, then delivers everything.  By default the stall falls where no visit exits (the first
    such window after 15 % of the session); ``across_exit``: it ends 3 s after a visit's exit, so fusion settles
    that visit before the events of its last moments arrive."""
    t = time.monotonic()
    ref = s.reference
    if at is None and across_exit:
        exits = sorted(ref.span(a)[1] for a in ref.receipts if ref.span(a)[1] > seconds)
        at = (exits[0] + 3.0 - seconds) if exits else 0.25 * s.duration
    elif at is None:
        at = quiet_window(ref, seconds, 0.15 * s.duration, s.duration)
        if at is None:
            at = 0.25 * s.duration
    run, out, info = _shelf_link(s, "stall", at, seconds, "shelf-stall-exit" if across_exit else "shelf-stall")
    ok, problems = _identical(ref, out)
    sent = s.feed.count(Kind.SHELF_EVENTS)
    got = int(out.counters.get("messages_shelf_events", -1))
    exits = _exits_within(ref, at, at + seconds)
    ok = ok and got == sent
    name = "shelf link stalled" + (" across an exit" if across_exit else "")
    return Row(name, f"shelf gateway's link stalled {seconds:.0f} s from {at:.0f} s ({len(exits)} visits exited "
               "meanwhile)", "outbox delivers every event, receipts identical",
               f"shelf events {got}/{sent}; " + ("receipts identical" if not problems else "; ".join(problems)),
               ok, {"at": at, "exits_during": exits, "problems": problems,
                    "wrong_vs_truth": wrong_vs_truth(out, s.feed.truth), **info, **run.timings},
               time.monotonic() - t)


def shelf_cut(s: Suite, at: float = 0.25, seconds: float = 30.0) -> Row:
    """The shelf gateway's connections are closed and refused for ``seconds``: the broker publishes its last
    will; the outbox delivers everything after reconnecting; fusion holds the visits that overlapped the
    outage for review (it cannot know what the gateway saw meanwhile until it is back)."""
    t = time.monotonic()
    start = at * s.duration
    run, out, info = _shelf_link(s, "cut", start, seconds)
    ref = s.reference
    sent = s.feed.count(Kind.SHELF_EVENTS)
    got = int(out.counters.get("messages_shelf_events", -1))
    will = "offline" in (run.watcher.states(SHELF_DEVICE) if run.watcher else [])
    end = start + seconds
    overlap = {a for a in ref.receipts if ref.span(a)[0] < end and ref.span(a)[1] > start}
    clear = {a for a in ref.receipts if ref.span(a)[1] < start - 1.0}
    same_clear = not receipt_diffs(ref, out, clear)
    wrong = wrong_charges(ref, out)
    held = sorted(a for a in overlap if out.receipts.get(a, {}).get("status") == "held_for_review")
    ok = got == sent and will and same_clear and not wrong and charges_per_visit_ok(out)
    return Row("shelf link cut", f"shelf gateway's connections closed and refused {seconds:.0f} s from "
               f"{start:.0f} s", "0 events lost; 0 wrong charges (visits overlapping the outage may be held)",
               f"shelf events {got}/{sent}; last will {'seen' if will else 'NOT seen'}; held "
               f"{len(held)}/{len(overlap)} overlapping visits; wrong charges {len(wrong)}", ok,
               {"overlap": sorted(overlap), "held": held, "wrong": wrong, **info, **run.timings},
               time.monotonic() - t)


def staggered_return(feed: SessionFeed, at: float, down_s: float = 2.0, backoff: tuple[float, float] = (0.2, 2.0),
                     seed: int = 0) -> list[int]:
    """Publish order of a broker restart replayed in process: the broker is away from session time ``at`` for
    ``down_s``; each device comes back after its own reconnect delay (uniform in ``backoff``) and only then
    delivers what it captured meanwhile (its outbox), in order.  For :func:`chaos.live.reference`'s ``order``."""
    rng = random.Random(seed)
    t_kill = feed.t0 + at
    back = {d: t_kill + down_s + rng.uniform(*backoff) for d in sorted(feed.devices())}
    keys = [((back[it.device] if t_kill <= it.t < back[it.device] else it.t), i) for i, it in enumerate(feed.items)]
    return [i for _, i in sorted(keys)]


def _order_with_delays(feed: SessionFeed, delayed: float, max_delay: float, seed: int) -> list[int]:
    """Publish order when a fraction ``delayed`` of the messages is held back up to ``max_delay`` s."""
    rng = random.Random(seed)
    keys = [(it.t + (rng.uniform(0, max_delay) if rng.random() < delayed else 0.0), i)
            for i, it in enumerate(feed.items)]
    return [i for _, i in sorted(keys)]


def attribute(s: Suite, skews: dict[str, float], delayed: float, max_delay: float) -> dict[str, Any]:
    """Which part of the duplicate/reorder/skew fault changes the receipts, replayed deterministically in
    process (no broker, same fusion): the reordering alone, the skew alone, each device's skew alone, and the
    same skew pattern at a quarter and at half its size."""
    ref = s.reference
    out: dict[str, Any] = {}

    def run(name: str, **kw: Any) -> None:
        o = reference(s.feed, s.folder / "attribution" / name, **kw)
        out[name] = {"diffs": len(receipt_diffs(ref, o)), "wrong_vs_reference": len(wrong_charges(ref, o)),
                     "wrong_vs_truth": len(wrong_vs_truth(o, s.feed.truth))}

    run("reorder", order=_order_with_delays(s.feed, delayed, max_delay, s.seed))
    run("skew", skew=skews)
    for frac in (0.25, 0.5):
        run(f"skew x{frac}", skew={d: v * frac for d, v in skews.items()})
    for d, v in sorted(skews.items()):
        run(f"{d} {v * 1000:+.0f} ms", skew={d: v})
    return out


def dup_reorder_skew(s: Suite, delayed: float = 0.1, max_delay: float = 0.3, skew: float = 0.2,
                     explain: bool = True) -> Row:
    """Every message duplicated, a fraction ``delayed`` of them held back up to ``max_delay`` s (reordered),
    and the edge devices' clocks spread over +-``skew`` s.  When the receipts differ, the fault is taken apart
    in process (:func:`attribute`)."""
    t = time.monotonic()
    rng = random.Random(s.seed + 1)
    devices = sorted(s.feed.devices())
    spread = [-skew + 2 * skew * i / max(1, len(devices) - 1) for i in range(len(devices))]
    rng.shuffle(spread)
    skews = {d: round(x, 3) for d, x in zip(devices, spread, strict=True)}
    run = s.run("dup-reorder-skew", skew=skews,
                republish={"copies": 2, "delayed": delayed, "max_delay": max_delay / s.speed, "seed": s.seed})
    run.start()
    out = _finish(run)
    ok, problems = _identical(s.reference, out)
    rp = dict(run.republisher.counters) if run.republisher else {}
    dups = int(out.counters.get("transport_duplicate", 0))
    wrong_truth = wrong_vs_truth(out, s.feed.truth)
    ref_truth = wrong_vs_truth(s.reference, s.feed.truth)
    clocks = {dev: c for d in run.devices.values() for dev, c in d.clocks.items()}
    errors_ms = [abs(c[0]) * 1000 for c in clocks.values()]
    figures: dict[str, Any] = {"skews": skews, "republisher": rp, "problems": problems,
                               "store_clock": clocks, "wrong_vs_truth": wrong_truth,
                               "reference_wrong_vs_truth": ref_truth, **run.timings}
    measured = (f"{rp.get('received', 0)} messages, {rp.get('delayed', 0)} delayed, {dups} duplicates dropped; "
                + (f"device clocks on the store clock to within {max(errors_ms):.1f} ms; " if errors_ms else "")
                + ("receipts identical" if ok else f"{len(receipt_diffs(s.reference, out))} receipts differ, "
                   f"wrong charges vs truth {len(wrong_truth)} (reference {len(ref_truth)})"))
    if not ok and explain:
        att = attribute(s, skews, delayed, max_delay)
        figures["attribution"] = att
        worst = [k for k, v in att.items() if " ms" in k and v["diffs"]]
        measured += (f". In process: reorder alone {att['reorder']['diffs']} differ; skew alone "
                     f"{att['skew']['diffs']} differ (x0.25: {att['skew x0.25']['diffs']}, x0.5: "
                     f"{att['skew x0.5']['diffs']}); single devices that change receipts: "
                     + (", ".join(worst) or "none"))
    return Row("duplicate + reorder + skew", f"every message x2, {delayed:.0%} delayed up to "
               f"{max_delay * 1000:.0f} ms, device clocks +-{skew * 1000:.0f} ms", "receipts identical",
               measured, ok, figures, time.monotonic() - t)

"""The entry gate: valid codes become entries on the wire; forged, expired, replayed, malformed, other-store
and blocked-account codes are refused with their reason and counted; a replay is refused across a restart of
the gate (used-codes file); the ``walkout edge gate`` process over the real Mosquitto; the scanner sources."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.gate import EntryGate, SourceError, scan_lines
from tests.fixtures_mqtt import ROOT, RawClient, wait_for
from tests.helpers_fusion_scene import scene_yaml
from wire.bus import InProcessBus
from wire.codec import decode, encode
from wire.entry_codes import UsedCodes, issue
from wire.messages import AccountStatusMsg, GateEntryMsg
from wire.topics import Kind, topic

STORE = "g1store"
SECRET = b"gate-test-secret-0123456789"
NOW = 1_800_000_000.0


class Bench:
    """A gate on an in-process bus with a watcher of its entries, at a clock the test sets."""

    def __init__(self, used: UsedCodes | None = None, bus: InProcessBus | None = None):
        self.bus = bus or InProcessBus(STORE)
        self.now = NOW
        self.entries: list[GateEntryMsg] = []
        watcher = self.bus.client("watcher")
        watcher.subscribe(Kind.GATE_ENTRY, lambda info, msg: self.entries.append(msg))
        watcher.start()
        self.client = self.bus.client("G1", "gate")
        self.gate = EntryGate(STORE, "G1", SECRET, self.client, used, clock=lambda: self.now)
        self.gate.attach()
        self.client.start()

    def standing(self, account: str, state: str) -> None:
        fusion = self.bus.client("fusion", "fusion")
        fusion.start()
        fusion.publish(
            Kind.ACCOUNT,
            account,
            AccountStatusMsg(
                source="fusion",
                seq=fusion.seq(),
                ts=self.now,
                account=account,
                state=state,
                reason="payment for a visit failed" if state == "blocked" else "",
                failure_code="card_declined" if state == "blocked" else None,
            ),
        )


def _tamper(code: str) -> str:
    head, payload, sig = code.split(".")
    return f"{head}.{payload}.{('A' if sig[0] != 'A' else 'B')}{sig[1:]}"


CASES = [
    # (what the scanner reads, seconds after issue when scanned, reason)
    (lambda: issue(SECRET, STORE, "acct-1", NOW, party_size=2), 1.0, "accepted"),
    (lambda: issue(b"another-secret-0123456789", STORE, "acct-1", NOW), 1.0, "forged"),
    (lambda: _tamper(issue(SECRET, STORE, "acct-1", NOW)), 1.0, "forged"),
    (lambda: issue(SECRET, STORE, "acct-1", NOW, ttl_s=30), 31.0, "expired"),
    (lambda: issue(SECRET, STORE, "acct-1", NOW + 60), 0.0, "not_yet_valid"),
    (lambda: issue(SECRET, "other-store", "acct-1", NOW), 1.0, "wrong_store"),
    (lambda: "hello scanner", 0.0, "malformed"),
    (lambda: "WO1.bm90LWpzb24", 0.0, "malformed"),
    (lambda: "WO1." + "A" * 5000 + ".x", 0.0, "malformed"),
]


@pytest.mark.parametrize(
    ("make", "after", "reason"),
    CASES,
    ids=[
        "valid",
        "other-secret",
        "tampered",
        "expired",
        "future",
        "other-store",
        "text",
        "two-parts",
        "too-long",
    ],
)
def test_each_code_is_accepted_or_refused_with_its_reason(make, after: float, reason: str) -> None:
    b = Bench()
    code = make()
    b.now = NOW + after
    result = b.gate.scan(code + "\r\n")
    assert result is not None and result.reason == reason, result
    assert result.accepted == (reason == "accepted")
    counters = b.gate.counters
    assert counters["scans"] == 1
    if reason == "accepted":
        assert counters["accepted"] == 1 and counters["refused"] == 0
        [entry] = b.entries
        assert (entry.account, entry.gate, entry.party_size, entry.ts) == ("acct-1", "G1", 2, NOW + after)
        assert entry.code_id == result.code_id and entry.source == "G1"
    else:
        assert counters["refused"] == 1 and counters[f"refused_{reason}"] == 1
        assert b.entries == []


def test_a_code_is_used_once() -> None:
    b = Bench()
    code = issue(SECRET, STORE, "acct-1", NOW)
    assert b.gate.scan(code).accepted
    again = b.gate.scan(code)
    assert (again.accepted, again.reason) == (False, "replayed")
    assert b.gate.counters["refused_replayed"] == 1 and len(b.entries) == 1
    assert b.gate.scan("   \n") is None  # a blank line is not a scan
    assert b.gate.counters["scans"] == 2


def test_blocked_account_is_refused_until_a_payment_succeeds() -> None:
    b = Bench()
    b.standing("acct-2", "blocked")
    refused = b.gate.scan(issue(SECRET, STORE, "acct-2", NOW))
    assert (refused.accepted, refused.reason, refused.account) == (False, "payment_failed", "acct-2")
    assert "card_declined" in refused.detail
    assert b.gate.scan(issue(SECRET, STORE, "acct-3", NOW)).accepted  # others still get in
    b.standing("acct-2", "ok")
    code = issue(SECRET, STORE, "acct-2", NOW)
    assert b.gate.scan(code).accepted
    assert b.gate.counters["refused_payment_failed"] == 1 and b.gate.counters["accepted"] == 2


def test_standing_retained_before_the_gate_started_is_known() -> None:
    bus = InProcessBus(STORE)
    fusion = bus.client("fusion", "fusion")
    fusion.start()
    fusion.publish(
        Kind.ACCOUNT,
        "acct-9",
        AccountStatusMsg(source="fusion", seq=fusion.seq(), ts=NOW, account="acct-9", state="blocked"),
    )
    b = Bench(bus=bus)
    assert b.gate.is_blocked("acct-9")
    assert b.gate.scan(issue(SECRET, STORE, "acct-9", NOW)).reason == "payment_failed"


def test_replay_is_refused_across_a_restart_of_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "used.db"
    code = issue(SECRET, STORE, "acct-1", NOW)
    first = Bench(UsedCodes(path))
    assert first.gate.scan(code).accepted
    first.gate.used.close()
    second = Bench(UsedCodes(path))  # a new process: fresh memory, the same file
    result = second.gate.scan(code)
    assert (result.accepted, result.reason) == (False, "replayed")
    assert second.entries == []


# ---------------------------------------------------------------------------------------------- the process
@pytest.mark.mosquitto
def test_walkout_edge_gate_over_mosquitto(
    tmp_path: Path, mqtt_broker: tuple[str, int], store_id: str
) -> None:
    store_yaml = scene_yaml(tmp_path / "store.yaml", store_id)
    used = tmp_path / "used.db"
    now = time.time()
    good, blocked = (issue(SECRET, store_id, a, now) for a in ("acct-1", "acct-dave"))
    forged = issue(b"not-the-store-secret-1234", store_id, "acct-1", now)
    raw = RawClient(*mqtt_broker)
    try:
        raw.subscribe(f"walkout/v1/{store_id}/gate/+/entry")
        raw.publish(
            topic(Kind.ACCOUNT, store_id, "acct-dave"),
            encode(
                AccountStatusMsg(
                    source="fusion",
                    seq=1,
                    ts=now,
                    account="acct-dave",
                    state="blocked",
                    reason="payment failed",
                    failure_code="card_declined",
                )
            ),
            retain=True,
        )

        def gate(lines: list[str]) -> list[dict]:
            env = {**os.environ, "WALKOUT_ENTRY_SECRET": SECRET.decode(), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "walkout.cli",
                    "edge",
                    "gate",
                    "--store",
                    str(store_yaml),
                    "--gate",
                    "G1",
                    "--used-codes",
                    str(used),
                    "--broker",
                    f"{mqtt_broker[0]}:{mqtt_broker[1]}",
                    "--json",
                    "--settle",
                    "0.5",
                ],
                input="\n".join(lines) + "\n",
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            counters = json.loads(proc.stderr.strip().splitlines()[-1])
            return [json.loads(x) for x in proc.stdout.splitlines()], counters

        results, counters = gate([good, forged, blocked])
        assert [(r["reason"], r["account"]) for r in results] == [
            ("accepted", "acct-1"),
            ("forged", None),
            ("payment_failed", "acct-dave"),
        ]
        assert counters == {
            "scans": 3,
            "accepted": 1,
            "refused": 2,
            "refused_forged": 1,
            "refused_payment_failed": 1,
        }
        wait_for(lambda: len(raw.messages()) >= 1, 10, "the published entry")
        ((name, payload, _),) = raw.messages()
        _, entry = decode(name, payload)
        assert isinstance(entry, GateEntryMsg) and (entry.account, entry.gate) == ("acct-1", "G1")

        results, counters = gate([good])  # a restarted gate, the same code: refused, nothing published
        assert [r["reason"] for r in results] == ["replayed"]
        time.sleep(0.3)
        assert len(raw.messages()) == 1
    finally:
        raw.publish(
            topic(Kind.ACCOUNT, store_id, "acct-dave"), b"", retain=True
        )  # clear the retained standing
        raw.close()


def test_bad_gate_configuration_fails_with_the_reason(tmp_path: Path) -> None:
    store_yaml = scene_yaml(tmp_path / "store.yaml", "s1")
    env = {k: v for k, v in os.environ.items() if k != "WALKOUT_ENTRY_SECRET"}
    for args, needle in ((["--gate", "G9"], "no gate 'G9'"), (["--gate", "G1"], "entry_codes")):
        proc = subprocess.run(
            [sys.executable, "-m", "walkout.cli", "edge", "gate", "--store", str(store_yaml), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
            input="",
            check=False,
        )
        assert proc.returncode == 1 and needle in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------- sources
def test_tcp_source_reads_lines_and_reconnects() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    stop = threading.Event()
    got: list[str] = []

    def scanner() -> None:
        for n in range(2):  # the scanner drops the connection once in the middle
            conn, _ = server.accept()
            conn.sendall(f"code-{n}a\r\ncode-{n}".encode())
            time.sleep(0.1)
            conn.sendall(b"b\n")
            conn.close()

    threading.Thread(target=scanner, daemon=True).start()

    def reader() -> None:
        for line in scan_lines(f"tcp://127.0.0.1:{port}", stop, reconnect_s=(0.05, 0.2)):
            got.append(line)  # noqa: PERF402 - the test watches the list grow

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_for(lambda: len(got) >= 4, 10, "four scanned lines")
    stop.set()
    t.join(5)
    server.close()
    assert got == ["code-0a", "code-0b", "code-1a", "code-1b"]


@pytest.mark.parametrize("source", ["ftp://x", "tcp://nohost", "serial://"])
def test_unknown_sources_are_refused(source: str) -> None:
    with pytest.raises(SourceError):
        list(scan_lines(source, threading.Event()))


def test_issued_code_ids_always_go_on_the_wire() -> None:
    """Every code the shopper API issues has an id the entry message can carry (a wire id starts with a letter
    or a digit), so an accepted entry always names its code."""
    from wire.entry_codes import parse

    for _ in range(400):
        code_id = parse(SECRET, issue(SECRET, STORE, "acct-1", NOW), STORE, NOW + 1).code_id
        assert code_id[0].isalnum(), code_id
    b = Bench()
    result = b.gate.scan(issue(SECRET, STORE, "acct-1", NOW, code_id="-starts-with-a-dash") + "\n")
    assert result.accepted and b.entries[0].code_id is None  # another issuer's odd id: the entry goes without it

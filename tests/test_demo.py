"""``walkout demo`` end to end on a tiny store day: simulate (once per module), replay through the system
Mosquitto with the ONNX detector and through an embedded Mosquitto with truth perception, print the
receipts as they are settled, the evaluation summary, and where the report, the recording and the ops app
are; bad settings fail before anything runs, with the setting named."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from mcap.reader import make_reader

from walkout.cli import main
from walkout.demo import DemoOptions, ensure_session
from walkout.demo_watch import money, receipt_text
from walkout.evaluate import REQUIRED_KEYS
from walkout.replay import read_jsonl
from wire.broker import broker_answers
from wire.messages import ReceiptLine, ReceiptMsg

# two shoppers, each taking something and leaving within 45 s; 2 fps at 320x240 keeps it to 540 frames
TINY = {"preset": "easy", "seed": 3, "shoppers": 2, "duration_s": 45.0, "fps": 2.0, "size": (320, 240)}
TINY_ARGS = ["--preset", "easy", "--seed", "3", "--shoppers", "2", "--duration", "45", "--fps", "2",
             "--size", "320x240", "--progress-every", "0.5"]
SUMMARY_LABELS = ("visits", "receipt F1", "precision", "recall", "exact-cart rate", "review rate",
                  "wrong-charge rate", "exit -> receipt", "p50", "p99")


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo folder holding the tiny session (simulated once; each test copies it)."""
    out = tmp_path_factory.mktemp("tiny")
    ensure_session(DemoOptions(out=out, **TINY), lambda m: None)
    return out / "session"


def demo_folder(tiny_session: Path, tmp_path: Path) -> Path:
    out = tmp_path / "demo"
    shutil.copytree(tiny_session, out / "session")
    return out


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["demo", *args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def check_demo_output(out_dir: Path, text: str) -> None:
    """What every demo must leave and print."""
    session = out_dir / "session"
    run_dir = out_dir / "run"
    truth = json.loads((session / "truth.json").read_text())
    receipts = read_jsonl(run_dir / "receipts.jsonl")
    ended = [v for v in truth["visits"] if v["complete"]]
    assert ended and len(receipts) >= len(ended)
    printed = re.findall(r"^RECEIPT visit (\S+)", text, re.MULTILINE)
    assert sorted(printed) == sorted(r["visit"] for r in receipts)  # each receipt printed once, as it came
    for r in receipts:
        block = text[text.index(f"RECEIPT visit {r['visit']}"):]
        assert f"total {money(r['total'], r['currency'])} {r['currency']}" in block
        for ln in r["lines"]:
            assert ln["name"] in block
    assert re.search(r"^\[\s*\d+ s\] store time .* frames \d+/\d+ .* visits open \d+", text, re.MULTILINE)
    for label in SUMMARY_LABELS:
        assert label in text, label
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(REQUIRED_KEYS) <= set(summary)
    assert summary["visits"] == len(ended)
    assert (run_dir / "report" / "index.html").is_file()
    with open(out_dir / "recording.mcap", "rb") as f:
        reader = make_reader(f)
        summ = reader.get_summary()
        schemas = {summ.schemas[c.schema_id].name for c in summ.channels.values()}
        attachments = {a.name for a in reader.iter_attachments()}
        recorded = [json.loads(m.data) for _s, c, m in reader.iter_messages()
                    if c.topic.split("/")[-2] == "receipts"]
    wanted = {"walkout.TracksMsg", "walkout.ReceiptMsg", "walkout.GateEntryMsg", "foxglove.CompressedImage"}
    assert wanted <= schemas
    assert "store.yaml" in attachments
    assert sorted(m["visit"] for m in recorded) == sorted(r["visit"] for r in receipts)
    cmd = re.search(r"^\s+ops app\s+(.+ ops --store .+)$", text, re.MULTILINE)
    assert cmd, "the ops command is printed"
    argv = shlex.split(cmd.group(1))
    assert Path(argv[argv.index("--store") + 1]).is_file()
    assert Path(argv[argv.index("--db") + 1]).resolve() == (run_dir / "fusion.db").resolve()


def check_ops_login(out_dir: Path, text: str) -> None:
    from fusion.db import Database
    from fusion.ops.auth import Users

    name, password = re.search(r"log in as (\S+) / (\S+)", text).groups()
    db = Database(out_dir / "run" / "fusion.db")
    try:
        assert Users(db).authenticate(name, password, "test") is not None
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.mosquitto
def test_demo_through_mosquitto_with_onnx(tiny_session: Path, tmp_path: Path, mqtt_broker: tuple[str, int],
                                          store_id: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = demo_folder(tiny_session, tmp_path)
    mcap_mtime = (out / "session" / "session.mcap").stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    host, port = mqtt_broker
    rc, text, err = run([*TINY_ARGS, "--out", "demo", "--broker", f"{host}:{port}", "--store-id", store_id],
                        capsys)
    assert rc == 0, err
    assert "reusing the session" in text
    assert (out / "session" / "session.mcap").stat().st_mtime_ns == mcap_mtime
    assert f"Mosquitto at {host}:{port}" in text
    assert json.loads((out / "run" / "run.json").read_text())["perception"] == "onnx"
    check_demo_output(out, text)
    check_ops_login(out, text)


@pytest.mark.mosquitto
def test_demo_with_embedded_broker(tiny_session: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    if not shutil.which("mosquitto"):
        pytest.fail("the embedded broker needs the `mosquitto` binary (apt install mosquitto)")
    out = demo_folder(tiny_session, tmp_path)
    rc, text, err = run([*TINY_ARGS, "--out", str(out), "--broker", "embedded", "--perception", "truth"],
                        capsys)
    assert rc == 0, err
    m = re.search(r"embedded Mosquitto at ([\d.]+):(\d+)", text)
    assert m, text[:2000]
    assert not broker_answers(m.group(1), int(m.group(2)))  # stopped at the end
    check_demo_output(out, text)


@pytest.mark.parametrize(("args", "reason"), [
    (["--shoppers", "0"], "shoppers"),
    (["--duration", "2"], "duration_s"),
    (["--fps", "0"], "fps"),
    (["--broker", "not-an-address"], "expected host:port"),
    (["--broker", "127.0.0.1:1"], "no MQTT broker answers on 127.0.0.1:1"),
    (["--model", "missing.onnx"], "ONNX model not found"),
    (["--model", str(Path(__file__))], "ONNX Runtime cannot load it"),
    (["--recording-frames", "-1"], "--recording-frames"),
])
def test_bad_settings_fail_before_running(args: list[str], reason: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc, _text, err = run(["--out", str(tmp_path / "demo"), *args], capsys)
    assert rc == 1
    assert err.startswith("error: ") and reason in err
    assert not (tmp_path / "demo" / "session").exists()


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (1234, "USD", "12.34"), (5, "EUR", "0.05"), (-250, "USD", "-2.50"), (0, "USD", "0.00"),
    (1234, "JPY", "1234"),
])
def test_money_from_minor_units(amount: int, currency: str, text: str) -> None:
    assert money(amount, currency) == text


@pytest.mark.parametrize(("status", "reasons", "tail"), [
    ("charged", [], "total 4.97 USD  -- charged"),
    ("held_for_review", ["two shoppers within 0.3 m"],
     "total 4.97 USD  -- sent to review: two shoppers within 0.3 m"),
    ("payment_failed", ["card declined"], "-- payment failed: card declined"),
])
def test_receipt_text(status: str, reasons: list[str], tail: str) -> None:
    lines = [ReceiptLine(sku="A", name="Apple", qty=2, unit_price=149, amount=298),
             ReceiptLine(sku="B", name="Bread", qty=1, unit_price=199, amount=199, uncertain=True)]
    r = ReceiptMsg(source="fusion", seq=1, ts=1030.0, visit="v1", account="acct-1", status=status,
                   lines=lines, total=497, reasons=reasons, entered_at=1010.0, exited_at=1029.5)
    text = receipt_text(r, 1000.0, ["s1"])
    assert text.splitlines()[0].startswith("RECEIPT visit v1  account acct-1 (s1)  in 00:10.0  out 00:29.5")
    assert "  2 x Apple" in text and "1.49" in text and "2.98" in text and "(uncertain)" in text
    assert text.rstrip().endswith(tail)

"""Recording (walkout/record.py, `walkout record`): a live exchange through the real Mosquitto is recorded to an
MCAP that Foxglove can read (schemas, encodings, attachments) and that replays into fusion with the same
receipts the live run produced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mcap.reader import make_reader

from walkout.record import FORMAT, Recorder, RecordingWriter, store_attachments
from walkout.replay import ReplayOptions, open_source, read_jsonl, replay
from wire.mqtt import MqttTransport

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "replay_data" / "sessions" / "smoke"


def _summary(path: Path) -> tuple[dict, dict, dict, list[str]]:
    with path.open("rb") as f:
        r = make_reader(f)
        s = r.get_summary()
        schemas = {sc.name: sc.encoding for sc in s.schemas.values()}
        channels = {ch.topic: (ch.message_encoding, s.schemas[ch.schema_id].name) for ch in s.channels.values()}
        meta = {m.name: dict(m.metadata) for m in r.iter_metadata()}
        atts = [a.name for a in r.iter_attachments()]
    return schemas, channels, meta, atts


def _receipt_view(rows: list[dict]) -> list[tuple]:
    return [(r["account"], r["status"], r["total"], tuple((ln["sku"], ln["qty"]) for ln in r["lines"]))
            for r in sorted(rows, key=lambda r: r["account"])]


def test_live_exchange_is_recorded_and_replays_into_fusion(mqtt_broker, store_id: str, tmp_path: Path) -> None:
    host, port = mqtt_broker
    session = open_source(SMOKE)
    store = session.store
    out = tmp_path / "live.mcap"
    writer = RecordingWriter(out, store_id, store_attachments(store, None) | {
        ref.file: session.session.attachments[ref.file] for ref in store.cameras})
    transport = MqttTransport(store_id, "recorder", "recorder", host, port, client_id=f"rec-{store_id}")
    Recorder(transport, writer)
    transport.start()
    assert transport.wait_ready(10)
    try:
        # the live exchange: the replay's devices publish the smoke session's inputs through Mosquitto, fusion
        # (its own MQTT client) answers with carts and receipts
        live = replay(SMOKE, tmp_path / "live-run", ReplayOptions(store_id=store_id, broker=(host, port)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and writer.counts.get("receipt", 0) < len(live.receipts):
            time.sleep(0.05)
    finally:
        transport.stop()
        writer.close()
    assert live.summary["transport"].startswith("mqtt://")
    assert writer.counts["tracks"] == live.summary["messages"]["TracksMsg"]
    assert writer.counts["receipt"] == len(live.receipts) == 2

    schemas, channels, meta, atts = _summary(out)
    assert set(schemas.values()) == {"jsonschema"}
    assert {"walkout.TracksMsg", "walkout.ShelfEventMsg", "walkout.GateEntryMsg", "walkout.ReceiptMsg",
            "walkout.CartSnapshotMsg", "walkout.StatusMsg"} <= set(schemas)
    assert all(enc == "json" for enc, _ in channels.values())
    assert f"walkout/v1/{store_id}/camera/cam1/tracks" in channels
    assert meta["walkout.recording"]["format"] == FORMAT and meta["walkout.recording"]["store"] == store_id
    assert {"store.yaml", "cameras/cam1.yaml", "cameras/cam5.yaml"} <= set(atts)
    with out.open("rb") as f:  # capture time as publish time, receive time as log time
        for _, ch, m in make_reader(f).iter_messages():
            if ch.topic.endswith("/tracks"):
                payload = json.loads(m.data)
                assert m.publish_time == round(payload["ts"] * 1e6) * 1000 and m.log_time >= m.publish_time
                break

    # the recording replays into a fresh fusion (in-process) with the live run's receipts
    again = replay(out, tmp_path / "again", ReplayOptions(in_process=True))
    assert _receipt_view(again.receipts) == _receipt_view(live.receipts)
    assert _receipt_view(read_jsonl(tmp_path / "again" / "receipts.jsonl")) == _receipt_view(live.receipts)


def test_record_command_writes_a_recording_until_stopped(mqtt_broker, store_id: str, tmp_path: Path) -> None:
    host, port = mqtt_broker
    store_file = tmp_path / "store.yaml"
    session = open_source(SMOKE)
    store_file.write_bytes(session.session.attachments["store.yaml"])
    for ref in session.store.cameras:
        (tmp_path / ref.file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ref.file).write_bytes(session.session.attachments[ref.file])
    out = tmp_path / "cmd.mcap"
    proc = subprocess.Popen([sys.executable, "-m", "walkout.cli", "record", "--store", str(store_file), "--out",
                             str(out), "--store-id", store_id, "--broker", f"{host}:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert "recording" in proc.stdout.readline()
        live = replay(SMOKE, tmp_path / "run", ReplayOptions(store_id=store_id, broker=(host, port)))
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    counts = json.loads(err.strip().splitlines()[-1])["counts"]
    assert counts["tracks"] == live.summary["messages"]["TracksMsg"] and counts["receipt"] == 2
    _, _, meta, atts = _summary(out)
    assert open_source(out).kind == "recording"
    assert "store.yaml" in atts and "cameras/cam5.yaml" in atts and meta["walkout.recording"]["store"] == store_id


def test_frame_tap_keeps_every_nth_frame_as_foxglove_images(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from edge.sources import ImageFolderSource
    from walkout.record import FrameTap

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    out = tmp_path / "frames.mcap"
    writer = RecordingWriter(out, "s1")
    tap = FrameTap([ImageFolderSource(folder, "cam1", fps=20.0, start=1_767_225_600.0)], writer, every=2).start()
    deadline = time.monotonic() + 10
    while tap.kept < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    tap.close()
    writer.close()
    assert tap.kept == 3
    _, channels, _, _ = _summary(out)
    assert channels == {"walkout/v1/s1/camera/cam1/image": ("json", "foxglove.CompressedImage")}
    with out.open("rb") as f:
        frames = [json.loads(m.data) for _, _, m in make_reader(f).iter_messages()]
    assert [fr["frame_id"] for fr in frames] == ["cam1"] * 3 and all(fr["format"] == "jpeg" for fr in frames)


def test_replaying_a_recording_skips_its_camera_frames_without_counting_them_bad(tmp_path: Path, caplog) -> None:
    from walkout.replay import recording_feed

    out = tmp_path / "mixed.mcap"
    writer = RecordingWriter(out, "s1")
    writer.image("cam1", 1_767_225_600.0, b"\xff\xd8 not really a jpeg", 0)
    writer.close()
    with caplog.at_level("WARNING", logger="walkout.replay"):
        assert list(recording_feed(out)) == []
    assert "not wire messages" not in caplog.text

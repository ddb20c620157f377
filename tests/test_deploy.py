"""The Mosquitto deployment the project ships (walkout/deploy.py, ``walkout deploy mosquitto``): the ACL
follows the store's devices, passwords are hashed and never left in plain text, the limits are set, and a
broker running that configuration enforces it (passwords, ACL, last will under the ACL, TLS)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from calibration.config import ConfigError
from calibration.store import Store, store_from_dict
from chaos.broker import start_store_broker
from chaos.pki import make_test_pki
from tests.fixtures_mqtt import ROOT, wait_for
from tests.helpers_fusion_scene import scene_store_with_id, scene_yaml
from walkout.deploy import (
    Bridge,
    BrokerLimits,
    Device,
    TlsListener,
    acl_rules,
    check_devices,
    default_devices,
    load_devices,
    render_acl,
    render_settings,
    write_deployment,
)
from wire.broker import free_port
from wire.messages import StatusMsg
from wire.mqtt import MqttTransport, TlsFiles
from wire.topics import Kind

pytestmark = pytest.mark.mosquitto

P = "walkout/v1/s1"
DEFAULT_STORE = ROOT / "sim" / "stores" / "default" / "store.yaml"


def default_store(store_id: str) -> Store:
    """The simulator's default store (cameras, shelf units, a gate) under ``store_id``."""
    data = yaml.safe_load(DEFAULT_STORE.read_text())
    data["store"]["id"] = store_id
    return store_from_dict(data, DEFAULT_STORE, DEFAULT_STORE.parent)


CLOCK = ("read", f"{P}/clock/#")


@pytest.mark.parametrize(
    ("device", "rules"),
    [
        (Device("camera-a", "camera", ("c1", "c2")),
         [("write", f"{P}/camera/c1/#"), ("write", f"{P}/camera/c2/#"), CLOCK, ("write", f"{P}/status/camera-a")]),
        (Device("shelf-u1", "shelf", ("S1",)),
         [("write", f"{P}/shelf/S1/#"), CLOCK, ("write", f"{P}/status/shelf-u1")]),
        (Device("G1", "gate", ("G1",)),
         [("write", f"{P}/gate/G1/#"), ("read", f"{P}/accounts/#"), CLOCK, ("write", f"{P}/status/G1")]),
        (Device("fusion", "fusion"),
         [("read", f"{P}/#"), ("write", f"{P}/carts/#"), ("write", f"{P}/receipts/#"), ("write", f"{P}/accounts/#"),
          ("write", f"{P}/clock/fusion"), ("write", f"{P}/status/fusion")]),
        (Device("ops", "ops"), [("read", f"{P}/#"), ("write", f"{P}/status/ops")]),
        (Device("recorder", "recorder"), [("read", f"{P}/#"), ("write", f"{P}/status/recorder")]),
    ],
)
def test_acl_rules_per_device_kind(device: Device, rules: list[tuple[str, str]]) -> None:
    assert acl_rules("s1", device) == rules


def test_default_devices_follow_the_store_description() -> None:
    store = default_store("s1")
    devices = default_devices(store)
    kinds = {d.kind for d in devices}
    assert kinds == {"camera", "shelf", "gate", "fusion", "ops", "recorder"}
    assert sorted(k for d in devices if d.kind == "camera" for k in d.keys) == sorted(c.id for c in store.cameras)
    assert sorted(k for d in devices if d.kind == "shelf" for k in d.keys) == sorted(store.shelves)
    acl = render_acl("s1", devices)
    for d in devices:
        assert f"\nuser {d.id}\n" in acl
    assert "topic write walkout/v1/s1/#" not in acl  # nobody may write everything


@pytest.mark.parametrize(
    ("devices", "field", "reason"),
    [
        ([Device("a", "camera", ("cam1",)), Device("a", "camera", ("cam2",))], "devices[1].id", "used twice"),
        ([Device("a", "camera", ("nope",))], "devices[0].keys[0]", "no camera 'nope'"),
        ([Device("a", "camera", ())], "devices[0].keys", "needs the ids"),
        ([Device("f", "fusion", ("cam1",))], "devices[0].keys", "publishes for no topic ids"),
        ([Device("x", "robot", ())], "devices[0].kind", "unknown kind"),
    ],
)
def test_bad_device_lists_fail_with_the_field(devices: list[Device], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_devices(devices, default_store("s1"))
    assert exc.value.field == field and reason in exc.value.reason


def test_devices_file_is_validated(tmp_path: Path) -> None:
    store = default_store("s1")
    cam = store.cameras[0].id
    good = tmp_path / "devices.yaml"
    good.write_text(yaml.safe_dump({"devices": [{"id": "cams", "kind": "camera", "keys": [cam]},
                                                {"id": "fusion", "kind": "fusion"}]}))
    assert [d.id for d in load_devices(good, store)] == ["cams", "fusion"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"devices": [{"id": "cams", "kind": "camera", "keys": [cam], "port": 1}]}))
    with pytest.raises(ConfigError) as exc:
        load_devices(bad, store)
    assert exc.value.field == "devices[0].port" and str(bad) in str(exc.value)


def test_settings_carry_the_documented_limits(tmp_path: Path) -> None:
    text = render_settings(tmp_path)
    lim = BrokerLimits()
    for line in ("allow_anonymous false", f"password_file {tmp_path / 'passwd'}", f"acl_file {tmp_path / 'acl'}",
                 "persistence true", f"max_queued_messages {lim.max_queued_messages}",
                 f"max_inflight_messages {lim.max_inflight_messages}", f"max_packet_size {lim.max_packet_size}",
                 f"max_keepalive {lim.max_keepalive}", "autosave_interval 1"):
        assert line in text.splitlines()
    assert not any(ln.startswith("listener") for ln in text.splitlines())  # listeners live in listeners.conf (the host or the test adds its own)


def test_cli_renders_files_and_hashed_passwords(tmp_path: Path) -> None:
    store_yaml = scene_yaml(tmp_path / "store.yaml", "s1")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "walkout.cli", "deploy", "mosquitto", "--store", str(store_yaml),
                          "--out", str(out), "--passwords", "--bridge", "central.example:8883"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    for name in ("conf.d/walkout.conf", "conf.d/listeners.conf", "conf.d/bridge.conf", "acl", "devices.txt",
                 "passwd", "README.txt"):
        assert (out / name).is_file(), name
    secrets = {p.stem: p.read_text().strip().split("=", 1)[1] for p in (out / "secrets").glob("*.env")}
    assert set(secrets) == {ln.split()[0] for ln in (out / "devices.txt").read_text().splitlines()}
    passwd = (out / "passwd").read_text()
    for user, pw in secrets.items():
        assert f"{user}:$" in passwd  # hashed ($7$: PBKDF2-SHA512)
        assert pw not in passwd
        assert pw not in res.stdout + res.stderr
    for p in (out / "secrets").glob("*.env"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    listeners = (out / "conf.d" / "listeners.conf").read_text()
    assert "listener 1883 127.0.0.1" in listeners and "listener 8883 0.0.0.0" in listeners
    assert "certfile /etc/mosquitto/walkout/server.crt" in listeners
    bridge = (out / "conf.d" / "bridge.conf").read_text()
    assert "address central.example:8883" in bridge and "cleansession false" in bridge
    assert "remote_password SET-ME" in bridge  # never a real password in a rendered file


def test_cli_reports_a_bad_store_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "store.yaml"
    bad.write_text("store: {id: 'a b'}\n")
    res = subprocess.run([sys.executable, "-m", "walkout.cli", "deploy", "mosquitto", "--store", str(bad), "--out",
                          str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 1 and str(bad) in res.stderr and "Traceback" not in res.stderr


def test_bridge_rendering_prefixes_every_topic() -> None:
    lines = Bridge("c:1883", "s1", cafile=None).lines()
    topics = [ln for ln in lines if ln.startswith("topic ")]
    assert topics and all(ln.endswith(" out 1 walkout/v1/s1/ walkout/v1/s1/") for ln in topics)
    assert not any("tracks" in ln or "loadcells" in ln for ln in topics)  # high-rate topics stay in the store


# --------------------------------------------------------------------------------------------- live broker
@pytest.fixture
def deployed(tmp_path: Path):
    store = default_store("d" + uuid.uuid4().hex[:8])
    pki = make_test_pki(tmp_path / "pki")
    tls = TlsListener(port=free_port(), address="127.0.0.1", cafile=str(pki.ca_cert), certfile=str(pki.server_cert),
                      keyfile=str(pki.server_key))
    sb = start_store_broker(store, tmp_path, tls=tls)
    yield store, sb, tls, pki
    sb.close()


def _transport(store_id: str, device: str, kind: str, port: int, **kw: object) -> MqttTransport:
    return MqttTransport(store_id, device, kind, "127.0.0.1", port, backoff=(0.05, 0.5),
                         client_id=f"walkout-{store_id}-{device}-{uuid.uuid4().hex[:6]}", **kw)  # type: ignore[arg-type]


def test_deployed_broker_enforces_passwords_acl_and_keeps_the_last_will(deployed) -> None:
    store, sb, _, _ = deployed
    sid = store.store.id
    cam = store.cameras[0].id
    seen: list[StatusMsg] = []
    fusion = _transport(sid, "fusion", "fusion", sb.port, **sb.creds("fusion"))
    fusion.subscribe(Kind.STATUS, lambda info, msg: seen.append(msg))
    fusion.start()
    assert fusion.wait_ready(10)
    camera = _transport(sid, f"camera-{cam}", "camera", sb.port, **sb.creds(f"camera-{cam}"))
    camera.start()
    assert camera.wait_ready(10)
    wait_for(lambda: any(m.device == f"camera-{cam}" and m.state == "online" for m in seen), 10, "online status")
    # a camera's connection dies without a goodbye: the broker publishes its will (allowed by the ACL)
    camera._client.socket().shutdown(socket.SHUT_RDWR)  # the abrupt end of a process, as with SIGKILL
    wait_for(lambda: any(m.device == f"camera-{cam}" and m.state == "offline" for m in seen), 10, "last will")
    camera.stop(timeout=1)
    intruder = _transport(sid, f"camera-{cam}", "camera", sb.port, username=f"camera-{cam}", password="nope")
    intruder.start()
    assert not intruder.wait_ready(2)
    intruder.stop(timeout=1)
    fusion.stop(timeout=2)


def test_tls_listener_takes_devices_with_the_ca_and_a_password(deployed) -> None:
    store, sb, tls, pki = deployed
    sid = store.store.id
    got: list[StatusMsg] = []
    fusion = _transport(sid, "fusion", "fusion", sb.port, **sb.creds("fusion"))
    fusion.subscribe(Kind.STATUS, lambda info, msg: got.append(msg))
    fusion.start()
    assert fusion.wait_ready(10)
    gate = store.gates[0].id
    device = _transport(sid, gate, "gate", tls.port, tls=TlsFiles(ca=str(pki.ca_cert)), **sb.creds(gate))
    device.start()
    assert device.wait_ready(10), "TLS login with the CA and the device's password"
    wait_for(lambda: any(m.device == gate and m.state == "online" for m in got), 10, "status over TLS")
    device.stop(timeout=2)
    # plain MQTT on the TLS port gets nowhere, and neither does TLS with the wrong password
    plain = _transport(sid, gate, "gate", tls.port, **sb.creds(gate))
    plain.start()
    wrong = _transport(sid, gate, "gate", tls.port, tls=TlsFiles(ca=str(pki.ca_cert)), username=gate, password="x")
    wrong.start()
    time.sleep(1.5)
    assert not plain.connected and not wrong.connected
    plain.stop(timeout=1)
    wrong.stop(timeout=1)
    fusion.stop(timeout=2)


def test_no_private_key_or_password_file_is_written_into_the_repository(tmp_path: Path) -> None:
    """Rendering and test certificates go where they are told; the repository's deploy/ has no secrets."""
    before = set(os.listdir(ROOT / "deploy" / "mosquitto"))
    dep = write_deployment(scene_store_with_id("s1"), tmp_path / "out")
    assert dep.folder == tmp_path / "out"
    assert set(os.listdir(ROOT / "deploy" / "mosquitto")) == before
    assert not list((ROOT / "deploy").rglob("*.key")) and not list((ROOT / "deploy").rglob("passwd"))


def test_committed_example_is_what_the_renderer_makes(tmp_path: Path) -> None:
    """deploy/mosquitto/example/ (the simulator's default store) stays in step with walkout/deploy.py."""
    example = ROOT / "deploy" / "mosquitto" / "example"
    res = subprocess.run([sys.executable, "-m", "walkout.cli", "deploy", "mosquitto", "--store", str(DEFAULT_STORE),
                          "--out", str(tmp_path), "--bridge", "central.example:8883"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    committed = sorted(p.relative_to(example) for p in example.rglob("*") if p.is_file())
    rendered = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == rendered
    for rel in committed:
        assert (example / rel).read_text() == (tmp_path / rel).read_text(), (
            f"{rel} is stale: re-render with `walkout deploy mosquitto --store sim/stores/default/store.yaml "
            "--out deploy/mosquitto/example --bridge central.example:8883`")

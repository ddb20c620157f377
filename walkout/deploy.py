"""Render a store's Mosquitto deployment: broker settings, listeners (plain on loopback, TLS for the LAN),
per-device ACL, the device list, passwords, and the bridge to a chain's central broker.

The ACL follows the wire table (:mod:`wire.topics`): every device logs in with its device id as user name and
may publish only its own topics::

    camera process  camera-{cam}     writes camera/{cam}/#  (each camera it serves)   and status/{device}
    shelf gateway   shelf-{unit}     writes shelf/{shelf}/# (each shelf of its units)  and status/{device}
    entry gate      {gate}           writes gate/{gate}/#                              and status/{device};
                                     reads accounts/# (the standings fusion publishes)
    (each of them)                   reads clock/# (the store clock's beacons, wire.clock)
    fusion          fusion           reads everything of the store; writes carts/#, receipts/#, accounts/#,
                                     clock/fusion and status/fusion
    ops, recorder   ops, recorder    read only (and their own status/{device}, like every process)

The default grouping (one camera process per camera, one shelf gateway per shelf unit, the CLI's default device
id for gates) can be replaced by a devices file (:class:`DevicesFile`).  Rendering is pure (strings in, strings
out); :func:`write_deployment` puts the files in a folder and :func:`write_passwords` makes a Mosquitto password
file with fresh random passwords (hashed in place with ``mosquitto_passwd -U``; the plain passwords go to
``secrets/{device}.env``, mode 0600, for each device's environment, and never into the repository).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from calibration.config import ConfigError, load_model
from calibration.store import Store
from wire.codec import MAX_PAYLOAD
from wire.messages import Ident
from wire.topics import PREFIX

log = logging.getLogger(__name__)

KINDS = ("camera", "shelf", "gate", "fusion", "ops", "recorder")
PASSWORD_ENV = "WALKOUT_MQTT_PASSWORD"


# ------------------------------------------------------------------------------------------------ limits
@dataclass(frozen=True)
class BrokerLimits:
    """The broker limits the project ships, with their reasons (also in ``docs/deployment.md``)."""

    max_queued_messages: int = 100_000  # per offline persistent client: a fusion restart of ~3 min at 500 msg/s
    max_queued_bytes: int = 0  # no byte cap: the message count is the one limit
    max_inflight_messages: int = 20  # QoS 1 messages on their way to one client before its acks
    max_packet_size: int = MAX_PAYLOAD + 1024  # the codec's 1 MiB payload plus topic and header room
    max_keepalive: int = 60  # clients use 30 s; a dead device is noticed within 1.5 x its keepalive
    persistent_client_expiration: str = "1d"  # a device gone for a day loses its queued messages
    # Save the in-memory state every second.  Saving after every change (autosave_on_changes true,
    # autosave_interval 1) also keeps what arrived in the last second across a SIGKILL, but caps the broker at
    # ~250 QoS 1 messages/s on our machines (a store's cameras alone send ~500/s); see docs/deployment.md.
    autosave_interval: int = 1
    autosave_on_changes: bool = False

    def lines(self) -> list[str]:
        return [
            "# limits (docs/deployment.md explains each)",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_packet_size {self.max_packet_size}",
            f"max_keepalive {self.max_keepalive}",
            f"persistent_client_expiration {self.persistent_client_expiration}",
            "# persistence: saved every second (and on a clean stop); docs/deployment.md says what a crash loses",
            "persistence true",
            f"autosave_on_changes {str(self.autosave_on_changes).lower()}",
            f"autosave_interval {self.autosave_interval}",
        ]


# ------------------------------------------------------------------------------------------------ devices
class DeviceEntry(BaseModel):
    """One process that logs in to the broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Ident = Field(title="Device id", description="MQTT user name, status topic id and transport device")
    kind: str = Field(title="Kind", pattern="^(camera|shelf|gate|fusion|ops|recorder)$")
    keys: list[Ident] = Field(default_factory=list, title="Topic ids",
                              description="Cameras, shelves or gates it publishes for (camera/shelf/gate)")


class DevicesFile(BaseModel):
    """A devices file (YAML): the processes of a store when the default grouping does not fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[DeviceEntry] = Field(title="Devices", min_length=1, max_length=10_000)


@dataclass(frozen=True)
class Device:
    id: str
    kind: str
    keys: tuple[str, ...] = ()


def default_devices(store: Store) -> list[Device]:
    """One camera process per camera, one shelf gateway per shelf unit, one device per gate (the gate id,
    as ``walkout edge gate`` names it), fusion, ops and a recorder."""
    out = [Device(f"camera-{c.id}", "camera", (c.id,)) for c in store.cameras]
    out += [Device(f"shelf-{u.id}", "shelf", tuple(s.id for s in u.shelves)) for u in store.shelf_units]
    out += [Device(g.id, "gate", (g.id,)) for g in store.gates]
    out += [Device("fusion", "fusion"), Device("ops", "ops"), Device("recorder", "recorder")]
    return out


def load_devices(path: str | Path, store: Store) -> list[Device]:
    """Devices from a devices file, checked against the store (ids unique, every key known)."""
    data = load_model(DevicesFile, path)
    devices = [Device(d.id, d.kind, tuple(d.keys)) for d in data.devices]
    check_devices(devices, store, path)
    return devices


def check_devices(devices: list[Device], store: Store, file: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` for a repeated device id or a key the store does not have."""
    known = {"camera": {c.id for c in store.cameras}, "shelf": set(store.shelves),
             "gate": {g.id for g in store.gates}}
    seen: set[str] = set()
    for i, d in enumerate(devices):
        if d.id in seen:
            raise ConfigError(file, f"devices[{i}].id", f"device id {d.id!r} is used twice")
        seen.add(d.id)
        if d.kind not in KINDS:
            raise ConfigError(file, f"devices[{i}].kind", f"unknown kind {d.kind!r}")
        if d.kind in known:
            if not d.keys:
                raise ConfigError(file, f"devices[{i}].keys", f"a {d.kind} device needs the ids it publishes for")
            for j, k in enumerate(d.keys):
                if k not in known[d.kind]:
                    raise ConfigError(file, f"devices[{i}].keys[{j}]", f"the store has no {d.kind} {k!r}")
        elif d.keys:
            raise ConfigError(file, f"devices[{i}].keys", f"a {d.kind} device publishes for no topic ids")


# ------------------------------------------------------------------------------------------------ ACL
def _topic_prefix(store_id: str) -> str:
    return f"{PREFIX}/{store_id}"


def acl_rules(store_id: str, device: Device) -> list[tuple[str, str]]:
    """``(access, topic filter)`` pairs of one device (access: ``read``, ``write``)."""
    p = _topic_prefix(store_id)
    status = ("write", f"{p}/status/{device.id}")
    clock = ("read", f"{p}/clock/#")  # the store clock's beacons (wire.clock)
    if device.kind == "camera":
        return [*(("write", f"{p}/camera/{k}/#") for k in device.keys), clock, status]
    if device.kind == "shelf":
        return [*(("write", f"{p}/shelf/{k}/#") for k in device.keys), clock, status]
    if device.kind == "gate":
        return [*(("write", f"{p}/gate/{k}/#") for k in device.keys), ("read", f"{p}/accounts/#"), clock, status]
    if device.kind == "fusion":
        return [("read", f"{p}/#"), ("write", f"{p}/carts/#"), ("write", f"{p}/receipts/#"),
                ("write", f"{p}/accounts/#"), ("write", f"{p}/clock/{device.id}"), status]
    return [("read", f"{p}/#"), status]  # ops, recorder: read only (and their own status)


def render_acl(store_id: str, devices: Iterable[Device], extra_users: dict[str, list[tuple[str, str]]] | None
               = None) -> str:
    """The Mosquitto ``acl_file``: one ``user`` block per device (anything not listed is denied)."""
    lines = [f"# walkout ACL of store {store_id} (rendered by `walkout deploy mosquitto`; do not edit by hand)",
             "# Each device logs in with its device id and may publish only its own topics.", ""]
    for d in devices:
        lines.append(f"# {d.kind}" + (f": {', '.join(d.keys)}" if d.keys else ""))
        lines.append(f"user {d.id}")
        lines += [f"topic {access} {flt}" for access, flt in acl_rules(store_id, d)]
        lines.append("")
    for user, rules in (extra_users or {}).items():
        lines.append(f"user {user}")
        lines += [f"topic {access} {flt}" for access, flt in rules]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class TlsListener:
    """A TLS listener: port, bind address and the broker's PEM files."""

    port: int = 8883
    address: str = "0.0.0.0"
    cafile: str = "/etc/mosquitto/walkout/ca.crt"
    certfile: str = "/etc/mosquitto/walkout/server.crt"
    keyfile: str = "/etc/mosquitto/walkout/server.key"
    require_certificate: bool = False

    def lines(self) -> list[str]:
        return [
            "# edge devices over the store LAN: TLS, user name and password",
            f"listener {self.port} {self.address}",
            f"cafile {self.cafile}",
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            "tls_version tlsv1.2",
            f"require_certificate {str(self.require_certificate).lower()}",
        ]


def render_settings(etc: str | Path, limits: BrokerLimits | None = None) -> str:
    """The broker settings without listeners and without persistence location or log (those belong to the
    host: ``/etc/mosquitto/mosquitto.conf`` on Debian, :class:`wire.broker.MosquittoProcess` in tests)."""
    etc = Path(etc)
    lines = [
        "# walkout broker settings (rendered by `walkout deploy mosquitto`)",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {etc / 'passwd'}",
        f"acl_file {etc / 'acl'}",
        *(limits or BrokerLimits()).lines(),
    ]
    return "\n".join(lines) + "\n"


def render_listeners(tls: TlsListener | None, local_port: int = 1883) -> str:
    lines = ["# walkout listeners (rendered by `walkout deploy mosquitto`)",
             "# processes on the store server (fusion, ops, recorder): plain MQTT on loopback only",
             f"listener {local_port} 127.0.0.1"]
    if tls is not None:
        lines += tls.lines()
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Bridge:
    """The store broker's bridge to the chain's central MQTT cluster."""

    address: str  # host:port of the central cluster (several, comma-separated, for round robin)
    store_id: str
    cafile: str | None = "/etc/mosquitto/walkout/central-ca.crt"
    username: str | None = None
    password_env: str = "WALKOUT_BRIDGE_PASSWORD"
    topics: tuple[str, ...] = ("shelf/+/events", "gate/+/entry", "status/#", "carts/#", "receipts/#",
                               "accounts/#")

    @property
    def name(self) -> str:
        return f"walkout-{self.store_id}"

    def lines(self, password: str | None = None) -> list[str]:
        """Bridge lines.  Mosquitto cannot read the password from the environment: ``password`` goes in the
        file (keep it 0600); without one, a placeholder tells the operator where it goes."""
        p = _topic_prefix(self.store_id)
        out = [
            f"# bridge of store {self.store_id} to the chain's central broker",
            f"connection {self.name}",
            f"address {self.address}",
            "bridge_protocol_version mqttv311",
            # a persistent session on both sides: nothing queued is lost while the link is down
            "cleansession false",
            f"remote_clientid {self.name}",
            f"local_clientid {self.name}-local",
            # the private-bridge flag is a Mosquitto extension that EMQX and HiveMQ refuse; only "out" topics
            # cross, so no loop needs it
            "try_private false",
            "start_type automatic",
            "restart_timeout 2 30",
            "keepalive_interval 30",
            "bridge_attempt_unsubscribe false",
            # messages wait in the store broker while the link is down (bounded by max_queued_messages)
            "queue_qos0_messages false",
            "notifications true",
            f"notification_topic {p}/bridge/{self.name}/state",
        ]
        if self.username:
            out.append(f"remote_username {self.username}")
            out.append(f"remote_password {password or 'SET-ME-from-' + self.password_env}")
        if self.cafile:
            out += [f"bridge_cafile {self.cafile}", "bridge_tls_version tlsv1.2"]
        out += [f"topic {t} out 1 {p}/ {p}/" for t in self.topics]
        return out


def render_bridge(bridge: Bridge, password: str | None = None) -> str:
    return "\n".join(bridge.lines(password)) + "\n"


def central_acl(store_ids: Iterable[str], readers: Iterable[str] = ("central-ops",)) -> str:
    """ACL of the central broker: each store's bridge user writes only its store's topics (and its own
    notification topic); central consumers read everything."""
    lines = ["# walkout central broker ACL (rendered by `walkout deploy mosquitto`)", ""]
    for sid in store_ids:
        lines += [f"user walkout-{sid}", f"topic write {_topic_prefix(sid)}/#", ""]
    for r in readers:
        lines += [f"user {r}", f"topic read {PREFIX}/#", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ files
@dataclass
class Deployment:
    """What :func:`write_deployment` wrote."""

    folder: Path
    devices: list[Device]
    files: dict[str, Path] = field(default_factory=dict)


def write_deployment(store: Store, out: str | Path, *, etc: str | Path | None = None,
                     devices: list[Device] | None = None, tls: TlsListener | None = None,
                     bridge: Bridge | None = None, limits: BrokerLimits | None = None,
                     local_port: int = 1883, extra_users: dict[str, list[tuple[str, str]]] | None = None
                     ) -> Deployment:
    """Write the broker files of ``store`` into ``out``: ``conf.d/walkout.conf`` (settings),
    ``conf.d/listeners.conf``, ``conf.d/bridge.conf`` (with ``bridge``), ``acl``, ``devices.txt`` (one
    ``id kind keys`` line per device) and ``README.txt``.  Paths inside the configs point at ``etc`` (default
    ``out`` itself; ``/etc/mosquitto/walkout`` for a real server).  Passwords: :func:`write_passwords`."""
    out = Path(out)
    etc = Path(etc) if etc is not None else out.resolve()
    devs = devices if devices is not None else default_devices(store)
    check_devices(devs, store)
    sid = store.store.id
    (out / "conf.d").mkdir(parents=True, exist_ok=True)
    files = {
        "settings": out / "conf.d" / "walkout.conf",
        "listeners": out / "conf.d" / "listeners.conf",
        "acl": out / "acl",
        "devices": out / "devices.txt",
        "readme": out / "README.txt",
    }
    files["settings"].write_text(render_settings(etc, limits))
    files["listeners"].write_text(render_listeners(tls, local_port))
    files["acl"].write_text(render_acl(sid, devs, extra_users))
    files["devices"].write_text("".join(f"{d.id} {d.kind} {','.join(d.keys)}\n" for d in devs))
    if bridge is not None:
        files["bridge"] = out / "conf.d" / "bridge.conf"
        files["bridge"].write_text(render_bridge(bridge))
    files["readme"].write_text(_readme(sid, etc))
    return Deployment(out, devs, files)


def _readme(store_id: str, etc: Path) -> str:
    return f"""Mosquitto files of store {store_id} (rendered by `walkout deploy mosquitto`).

  conf.d/*.conf   copy to /etc/mosquitto/conf.d/ (Debian's mosquitto.conf includes that folder and sets the
                  persistence location and the log)
  acl, passwd     copy to {etc}/ (owner mosquitto, mode 0640)
  devices.txt     the devices the ACL knows: id, kind, topic ids
  secrets/        with --passwords: one DEVICE.env per device ({PASSWORD_ENV}=...), mode 0600; give each
                  device its own file and delete the folder here.  Never commit it.

TLS: put ca.crt, server.crt and server.key in {etc}/ (docs/deployment.md shows how to make them).
"""


def write_passwords(deployment: Deployment, users: Iterable[str] = (), passwd_binary: str = "mosquitto_passwd"
                    ) -> dict[str, str]:
    """Fresh random passwords for every device (and ``users``): ``passwd`` hashed with ``mosquitto_passwd
    -U``, plain ones in ``secrets/{id}.env`` (0600).  Returns ``{user: password}`` for the caller (tests).

    Raises ``RuntimeError`` when ``mosquitto_passwd`` is missing or fails (a plain-text password file is never
    left behind)."""
    binary = shutil.which(passwd_binary)
    if binary is None:
        raise RuntimeError(f"{passwd_binary} not found: install mosquitto (it ships the tool)")
    names = [d.id for d in deployment.devices] + [u for u in users if u not in {d.id for d in deployment.devices}]
    creds = {name: secrets.token_urlsafe(24) for name in names}
    passwd = deployment.folder / "passwd"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{u}:{p}\n" for u, p in creds.items())
    res = subprocess.run([binary, "-U", str(passwd)], capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        passwd.unlink(missing_ok=True)
        raise RuntimeError(f"mosquitto_passwd -U failed ({res.returncode}): {res.stderr.strip()[:200]}")
    sec = deployment.folder / "secrets"
    sec.mkdir(mode=0o700, exist_ok=True)
    for u, p in creds.items():
        fd = os.open(sec / f"{u}.env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{PASSWORD_ENV}={p}\n")
    deployment.files["passwd"] = passwd
    return creds


def write_central(out: str | Path, store_ids: Iterable[str], readers: Iterable[str] = ("central-ops",),
                  etc: str | Path | None = None, limits: BrokerLimits | None = None) -> tuple[Deployment, dict[str, str]]:
    """The chain's central broker (a Mosquitto standing in for the EMQX/HiveMQ cluster in tests and small
    chains): settings, an ACL where each store's bridge user writes only its store's topics and ``readers``
    read everything, and fresh passwords for all of them.  Returns the files and ``{user: password}``."""
    out = Path(out)
    etc = Path(etc) if etc is not None else out.resolve()
    ids = list(store_ids)
    (out / "conf.d").mkdir(parents=True, exist_ok=True)
    files = {"settings": out / "conf.d" / "walkout.conf", "acl": out / "acl"}
    files["settings"].write_text(render_settings(etc, limits))
    files["acl"].write_text(central_acl(ids, readers))
    dep = Deployment(out, [], files)
    return dep, write_passwords(dep, users=[f"walkout-{sid}" for sid in ids] + list(readers))


def broker_lines(deployment: Deployment, tls: TlsListener | None = None) -> list[str]:
    """The settings (and a TLS listener) as base lines for :class:`wire.broker.MosquittoProcess`, which adds
    its own plain listener, persistence location and log: how tests and the chaos suite run this config."""
    lines = deployment.files["settings"].read_text().splitlines()
    return lines + (tls.lines() if tls is not None else [])

"""A test-owned Mosquitto running the configuration the project ships (:mod:`walkout.deploy`): passwords,
per-device ACL, crash-safe persistence, the documented limits, optionally the TLS listener."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from calibration.store import Store
from walkout.deploy import Deployment, Device, TlsListener, broker_lines, write_deployment, write_passwords
from wire.broker import MosquittoProcess


class DeployedBroker(MosquittoProcess):
    """:class:`MosquittoProcess` whose base config is the rendered deployment (settings, and a TLS listener
    when given), verbatim; the class adds its plain loopback listener, persistence folder and log."""

    def __init__(self, lines: list[str], port: int | None = None, workdir: str | Path | None = None):
        self._deployed_lines = list(lines)
        super().__init__(None, port, workdir)

    def _base_lines(self, config: object) -> list[str]:
        return list(self._deployed_lines)


@dataclass
class StoreBroker:
    """A store's broker as deployed, with the passwords of every device (for the test's clients)."""

    broker: DeployedBroker
    deployment: Deployment
    passwords: dict[str, str]

    @property
    def port(self) -> int:
        return self.broker.port

    def creds(self, user: str) -> dict[str, str]:
        """``username``/``password`` keyword arguments for :class:`wire.mqtt.MqttTransport`."""
        return {"username": user, "password": self.passwords[user]}

    def close(self) -> None:
        self.broker.close()


def start_store_broker(store: Store, folder: str | Path, *, devices: list[Device] | None = None,
                       tls: TlsListener | None = None, extra_users: dict[str, list[tuple[str, str]]] | None = None,
                       port: int | None = None, start: bool = True) -> StoreBroker:
    """Render the deployment of ``store`` into ``folder``, generate passwords (every device and each of
    ``extra_users``) and start the broker on a free loopback port."""
    if not shutil.which("mosquitto"):
        raise RuntimeError("the chaos suite needs the `mosquitto` binary (apt install mosquitto)")
    folder = Path(folder)
    dep = write_deployment(store, folder / "etc", devices=devices, extra_users=extra_users)
    passwords = write_passwords(dep, users=list(extra_users or {}))
    broker = DeployedBroker(broker_lines(dep, tls), port=port, workdir=folder / "broker")
    if start:
        broker.start()
    return StoreBroker(broker, dep, passwords)

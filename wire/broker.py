"""Finding a message bus to talk through, and running a private Mosquitto.

* :func:`open_bus` is for the demo and single-machine runs: the broker at ``host:port`` if one answers,
  else a Mosquitto started for this process (configured from ``deploy/mosquitto/embedded.conf``, on a free
  port, in a temporary folder, stopped at exit), else the in-process bus.  Each transport's
  ``description`` says which one it got, and a log line says so too.
* :class:`MosquittoProcess` runs one ``mosquitto`` with its own config, port and persistence folder; tests
  use it to restart or kill (``SIGKILL``) a broker without touching the system one.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from wire.bus import InProcessBus
from wire.mqtt import MqttTransport
from wire.transport import Transport

log = logging.getLogger(__name__)

EMBEDDED_CONF = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "embedded.conf"
# keys MosquittoProcess writes itself; a base config must leave them out
_OWN_KEYS = ("listener", "port", "persistence_location", "persistence_file", "log_dest", "pid_file", "user")
_BUS_OPTIONS = ("client_id", "outbox", "dedup", "version", "config_hash")


def broker_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class MosquittoSettings:
    """Broker settings for a private Mosquitto, rendered to config lines.

    Defaults favour not losing messages: persistence saved after every change (costly with long queues:
    each save rewrites the whole store) and a deliberate ``max_queued_messages`` (Mosquitto's default of
    1000 per offline client silently drops the rest).  ``extra`` lines go in as they are, after the
    listener, so listener options (``certfile``, ``keyfile``, ``cafile``) apply to it.
    """

    persistence: bool = True
    autosave_on_changes: bool = True
    autosave_interval: int = 1
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 20
    allow_anonymous: bool = True
    password_file: str | None = None
    acl_file: str | None = None
    extra: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        out = [
            f"allow_anonymous {str(self.allow_anonymous).lower()}",
            f"persistence {str(self.persistence).lower()}",
            f"autosave_on_changes {str(self.autosave_on_changes).lower()}",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight_messages}",
        ]
        if self.password_file:
            out.append(f"password_file {self.password_file}")
        if self.acl_file:
            out.append(f"acl_file {self.acl_file}")
        return out + list(self.extra)


class MosquittoError(RuntimeError):
    """A private Mosquitto did not start, or its config is unusable."""


class MosquittoProcess:
    """One private ``mosquitto``: its config, port, persistence and log live in ``workdir``.

    ``config`` is a :class:`MosquittoSettings` or the path of a base config file without the keys this
    class writes itself (listener, persistence location, log, pid file, user).  Started as root, the broker
    keeps running as root (``user root``) so it can write its folder.  ``stop()`` ends it with SIGTERM
    (Mosquitto saves its state), ``kill()`` with SIGKILL (only what autosave wrote survives).
    """

    def __init__(self, config: MosquittoSettings | str | Path | None = None, port: int | None = None,
                 workdir: str | Path | None = None, binary: str = "mosquitto", host: str = "127.0.0.1"):
        self.binary = shutil.which(binary) or binary
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="walkout-mqtt-")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        # the listener first: listener options in the base (certfile, keyfile, cafile ...) then apply to it
        self.conf_path.write_text("\n".join(self._own_lines() + self._base_lines(config)) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def _base_lines(self, config: MosquittoSettings | str | Path | None) -> list[str]:
        if config is None or isinstance(config, MosquittoSettings):
            return (config or MosquittoSettings()).lines()
        path = Path(config)
        try:
            text = path.read_text()
        except OSError as exc:
            raise MosquittoError(f"{path}: cannot read the broker config: {exc}") from None
        lines = []
        for n, line in enumerate(text.splitlines(), 1):
            key = line.split("#", 1)[0].strip().split(" ", 1)[0]
            if key in _OWN_KEYS:
                raise MosquittoError(f"{path}:{n}: {key}: set by MosquittoProcess; leave it out of the file")
            lines.append(line)
        return lines

    def _own_lines(self) -> list[str]:
        lines = [
            f"listener {self.port} {self.host}",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")
        return lines

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return self
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise MosquittoError(f"mosquitto exited with {self._proc.returncode}: {err.strip()} "
                                     f"{self.log_tail()}")
            if broker_answers(self.host, self.port, 0.2):
                return self
            time.sleep(0.02)
        self.kill()
        raise MosquittoError(f"mosquitto did not accept connections on {self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file on the way out."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, without saving."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()

    def restart(self, kill: bool = False) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def _close_pipes(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the broker and remove its folder if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- open_bus
_shared_lock = threading.Lock()
_embedded: MosquittoProcess | None = None
_buses: dict[str, InProcessBus] = {}


def _embedded_broker() -> MosquittoProcess:
    """This process's private Mosquitto, started on first use and stopped at exit."""
    global _embedded
    with _shared_lock:
        if _embedded is None or not _embedded.running:
            conf = EMBEDDED_CONF if EMBEDDED_CONF.is_file() else MosquittoSettings(autosave_on_changes=False,
                                                                                 autosave_interval=60)
            broker = MosquittoProcess(conf)
            broker.start()
            atexit.register(broker.close)
            _embedded = broker
        return _embedded


def close_embedded() -> None:
    """Stop the embedded broker and forget the in-process buses (tests, and the demo's shutdown)."""
    global _embedded
    with _shared_lock:
        if _embedded is not None:
            _embedded.close()
            _embedded = None
        _buses.clear()


def open_bus(store: str, device: str, kind: str = "other", host: str = "127.0.0.1", port: int = 1883, *,
             allow_embedded: bool = True, **options: Any) -> Transport:
    """A transport for ``device``: the broker on ``host:port`` if one answers, else (``allow_embedded``)
    a private Mosquitto if the binary is installed, else the in-process bus of ``store`` (shared by every
    caller in this process).  ``options`` go to :class:`MqttTransport` (the bus takes ``client_id``,
    ``outbox``, ``dedup``, ``version`` and ``config_hash``).  The transport is not started.

    Raises ``ConnectionError`` when nothing answers and ``allow_embedded`` is False.
    """
    if broker_answers(host, port):
        transport: Transport = MqttTransport(store, device, kind, host, port, **options)
        log.info("%s: using the MQTT broker at %s", device, transport.description)
        return transport
    if not allow_embedded:
        raise ConnectionError(f"no MQTT broker answers on {host}:{port} (and embedded brokers are off)")
    if shutil.which("mosquitto"):
        try:
            broker = _embedded_broker()
        except MosquittoError as exc:
            log.warning("%s: could not start an embedded mosquitto: %s", device, exc)
        else:
            transport = MqttTransport(store, device, kind, broker.host, broker.port, **options)
            transport.label = f"embedded mosquitto in {broker.workdir}, nothing answered on {host}:{port}"
            log.warning("%s: no broker on %s:%s; using %s", device, host, port, transport.description)
            return transport
    with _shared_lock:
        bus = _buses.setdefault(store, InProcessBus(store))
    transport = bus.client(device, kind, **{k: v for k, v in options.items() if k in _BUS_OPTIONS})
    log.warning("%s: no broker on %s:%s and no mosquitto binary; using the %s", device, host, port,
                bus.description)
    return transport

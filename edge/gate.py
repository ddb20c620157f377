"""The entry gate: a scanner gives one code per line; valid codes become ``GateEntryMsg`` on the wire.

Each scanned line is checked in this order, and refused with the first reason that applies:

1. the code itself (:func:`wire.entry_codes.parse`): ``malformed``, ``forged`` (bad signature),
   ``wrong_store``, ``too_long_lived``, ``not_yet_valid``, ``expired``;
2. the account's standing: ``payment_failed`` when the retained ``accounts/{account}`` status that fusion
   publishes says ``blocked`` (the code is not used up by this refusal);
3. single use: ``replayed`` when the code id was used before (:class:`wire.entry_codes.UsedCodes`; with a
   file, also across restarts of the gate).

An accepted code is published as ``GateEntryMsg`` (QoS 1, through the transport's outbox, so a scan while the
broker is away is delivered later) with the party size and the code id.  Every outcome is counted
(``scans``, ``accepted``, ``refused``, ``refused_<reason>``) and logged; refusals at WARNING level.

Scanner sources (:func:`scan_lines`): ``stdin``, ``tcp://host:port`` (the scanner's TCP server; reconnects),
``serial:///dev/ttyUSB0[?baud=9600]`` (pyserial).  Any line ending (``\\n``, ``\\r\\n``, ``\\r``) works.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel

from wire.entry_codes import EntryCodeError, UsedCodes, parse
from wire.messages import AccountStatusMsg, GateEntryMsg
from wire.topics import Kind, TopicInfo
from wire.transport import Transport

log = logging.getLogger(__name__)

REFUSALS = (
    "malformed",
    "forged",
    "wrong_store",
    "too_long_lived",
    "not_yet_valid",
    "expired",
    "payment_failed",
    "replayed",
)
MAX_LINE = 4096


@dataclass(frozen=True)
class ScanResult:
    """What the gate did with one scanned line."""

    accepted: bool
    reason: str  # "accepted" or one of REFUSALS
    detail: str = ""
    account: str | None = None
    code_id: str | None = None
    party_size: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "detail": self.detail,
            "account": self.account,
            "code_id": self.code_id,
            "party_size": self.party_size,
        }

    def line(self) -> str:
        if self.accepted:
            return f"accepted account={self.account} party={self.party_size} code={self.code_id}"
        who = f" account={self.account}" if self.account else ""
        return f"refused reason={self.reason}{who} ({self.detail})"


class EntryGate:
    """Verifies scanned entry codes for gate ``gate`` of store ``store_id`` and publishes the entries.

    Call :meth:`attach` before the transport starts (it subscribes to the account standings), then
    :meth:`scan` for each line.  Thread-safe.
    """

    def __init__(
        self,
        store_id: str,
        gate: str,
        secret: bytes,
        transport: Transport,
        used: UsedCodes | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not secret:
            raise ValueError("entry code secret is empty")
        self.store_id = store_id
        self.gate = gate
        self.transport = transport
        self.used = used if used is not None else UsedCodes()
        self.clock = clock
        self._secret = secret
        self.counters: Counter[str] = Counter()
        self.blocked: dict[str, AccountStatusMsg] = {}
        self._lock = threading.Lock()

    def attach(self) -> None:
        """Subscribe to the retained account standings (before ``transport.start()``)."""
        self.transport.subscribe(Kind.ACCOUNT, self._on_account)

    def _on_account(self, info: TopicInfo, msg: BaseModel) -> None:
        assert isinstance(msg, AccountStatusMsg)
        with self._lock:
            if msg.state == "blocked":
                self.blocked[msg.account] = msg
            else:
                self.blocked.pop(msg.account, None)
        log.info("account %s is %s%s", msg.account, msg.state, f" ({msg.reason})" if msg.reason else "")

    def is_blocked(self, account: str) -> bool:
        with self._lock:
            return account in self.blocked

    def scan(self, text: str) -> ScanResult | None:
        """Check one scanned line and publish the entry if it is valid; None for a blank line."""
        code = text.strip()
        if not code:
            return None
        now = self.clock()
        with self._lock:
            self.counters["scans"] += 1
        result = self._check(code, now)
        with self._lock:
            if result.accepted:
                self.counters["accepted"] += 1
            else:
                self.counters["refused"] += 1
                self.counters[f"refused_{result.reason}"] += 1
        if result.accepted:
            log.info("gate %s: %s", self.gate, result.line())
        else:
            log.warning("gate %s: %s", self.gate, result.line())
        return result

    def _check(self, code: str, now: float) -> ScanResult:
        if len(code) > MAX_LINE:
            return ScanResult(False, "malformed", "line too long")
        try:
            entry = parse(self._secret, code, self.store_id, now)
        except EntryCodeError as exc:
            return ScanResult(False, exc.reason, str(exc))
        with self._lock:
            standing = self.blocked.get(entry.account)
        if standing is not None:
            why = standing.reason or "last payment failed"
            return ScanResult(
                False,
                "payment_failed",
                f"{why} ({standing.failure_code or 'no code'})",
                entry.account,
                entry.code_id,
                entry.party_size,
            )
        try:
            self.used.use(entry, now)
        except EntryCodeError as exc:
            return ScanResult(False, exc.reason, str(exc), entry.account, entry.code_id, entry.party_size)
        msg = GateEntryMsg(
            source=self.transport.device,
            seq=self.transport.seq(),
            ts=now,
            gate=self.gate,
            account=entry.account,
            party_size=entry.party_size,
            code_id=entry.code_id if _is_ident(entry.code_id) else None,
        )
        self.transport.publish(Kind.GATE_ENTRY, self.gate, msg)
        return ScanResult(True, "accepted", "", entry.account, entry.code_id, entry.party_size)


def _is_ident(text: str) -> bool:
    return (
        0 < len(text) <= 64
        and text[0].isalnum()
        and text.isascii()
        and all(c.isalnum() or c in "_.:-" for c in text)
    )


# ---------------------------------------------------------------------------------------------- sources
class SourceError(ValueError):
    """A scanner source URL this gate cannot read."""


def scan_lines(
    source: str, stop: threading.Event, *, reconnect_s: tuple[float, float] = (0.2, 5.0)
) -> Iterator[str]:
    """Lines from the scanner at ``source`` until ``stop`` is set (stdin: until end of input)."""
    if source in ("stdin", "-"):
        yield from _stdin_lines(stop)
        return
    parts = urlsplit(source)
    if parts.scheme == "tcp":
        if not parts.hostname or not parts.port:
            raise SourceError(f"{source}: expected tcp://host:port")
        opener = _tcp_opener(parts.hostname, parts.port)
    elif parts.scheme == "serial":
        if not parts.path:
            raise SourceError(f"{source}: expected serial:///dev/ttyUSB0")
        try:
            baud = int(parse_qs(parts.query).get("baud", ["9600"])[0])
        except ValueError:
            raise SourceError(f"{source}: baud must be an integer") from None
        opener = _serial_opener(parts.path, baud)
    else:
        raise SourceError(f"{source}: the scanner source is stdin, tcp://host:port or serial:///dev/PORT")
    yield from _device_lines(source, opener, stop, reconnect_s)


def _stdin_lines(stop: threading.Event) -> Iterator[str]:
    for line in sys.stdin:
        if stop.is_set():
            return
        yield line


# An opener connects and returns (read, close): read() gives the bytes that arrived within a short timeout
# (b"" when none did) and raises OSError when the connection is gone.
Opener = Callable[[], tuple[Callable[[], bytes], Callable[[], None]]]


def _tcp_opener(host: str, port: int) -> Opener:
    def open_() -> tuple[Callable[[], bytes], Callable[[], None]]:
        sock = socket.create_connection((host, port), timeout=2.0)
        sock.settimeout(0.2)

        def read() -> bytes:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                return b""
            if not data:
                raise ConnectionError("the scanner closed the connection")
            return data

        return read, sock.close

    return open_


def _serial_opener(path: str, baud: int) -> Opener:
    def open_() -> tuple[Callable[[], bytes], Callable[[], None]]:
        import serial  # pyserial: only the serial source needs it

        try:
            port = serial.serial_for_url(path, baudrate=baud, timeout=0.2)
        except serial.SerialException as exc:
            raise OSError(str(exc)) from None

        def read() -> bytes:
            try:
                return port.read(max(1, port.in_waiting))
            except serial.SerialException as exc:
                raise OSError(str(exc)) from None

        return read, port.close

    return open_


def _device_lines(
    name: str, opener: Opener, stop: threading.Event, backoff: tuple[float, float]
) -> Iterator[str]:
    delay = backoff[0]
    while not stop.is_set():
        try:
            read, close = opener()
        except (OSError, ValueError) as exc:
            log.warning("scanner %s: cannot open (%s); retrying in %.1f s", name, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, backoff[1])
            continue
        log.info("scanner %s open", name)
        delay = backoff[0]
        buf = b""
        try:
            while not stop.is_set():
                chunk = read()
                if not chunk:
                    continue
                buf += chunk
                buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    yield raw.decode("utf-8", "replace")
                if len(buf) > MAX_LINE:
                    log.warning("scanner %s: %d bytes without a line end; dropped", name, len(buf))
                    buf = b""
        except OSError as exc:
            if buf.strip():
                yield buf.decode("utf-8", "replace")  # the last line, ended by the disconnect
            log.warning("scanner %s: connection lost (%s); reconnecting", name, exc)
        finally:
            close()

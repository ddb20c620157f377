"""Entry codes: the signed, short-lived, single-use token the shopper app shows at the gate.

The shopper API issues a code; the gate verifies it and publishes the entry.  Format (fits a QR code):
``WO1.<payload>.<signature>`` where payload is base64url JSON ``{"s": store, "a": account, "n": code id,
"p": party size, "iat": issued, "exp": expires}`` and signature is base64url HMAC-SHA256 over ``WO1.<payload>``
with the store's shared secret.  A code is valid for at most 60 s and only once: the gate remembers used code
ids until they expire (``UsedCodes``, in memory or in a SQLite file so a restarted gate still refuses a replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

PREFIX = "WO1"
MAX_TTL_S = 60.0
CLOCK_SKEW_S = 5.0
MAX_CODE_LEN = 1024


class EntryCodeError(ValueError):
    """A code the gate refuses; ``reason`` is one of: malformed, forged, wrong_store, expired, not_yet_valid,
    replayed, too_long_lived."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class EntryCode:
    store: str
    account: str
    code_id: str
    party_size: int
    issued_at: float
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(secret: bytes, store: str, account: str, now: float, party_size: int = 1,
          ttl_s: float = MAX_TTL_S, code_id: str | None = None) -> str:
    """A new entry code for ``account`` valid from ``now`` for ``ttl_s`` seconds (at most 60)."""
    if not secret:
        raise ValueError("entry code secret is empty")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
    if not 1 <= party_size <= 20:
        raise ValueError("party_size must be 1..20")
    # the id goes on the wire with the entry (an id there starts with a letter or digit: token_urlsafe alone
    # starts with "-" or "_" one time in 32, and the gate would then publish the entry without it)
    payload = {"s": store, "a": account, "n": code_id or "c" + secrets.token_urlsafe(12), "p": party_size,
               "iat": round(now, 3), "exp": round(now + ttl_s, 3)}
    body = f"{PREFIX}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    sig = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(sig)}"


def parse(secret: bytes, code: str, store: str, now: float) -> EntryCode:
    """Check signature, store and time window; raise :class:`EntryCodeError` otherwise.  Does not check
    single use (see :class:`UsedCodes`)."""
    code = code.strip()
    if len(code) > MAX_CODE_LEN:
        raise EntryCodeError("malformed", "code too long")
    parts = code.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise EntryCodeError("malformed", "not a walkout entry code")
    body = f"{parts[0]}.{parts[1]}"
    try:
        sig = _unb64(parts[2])
        raw = _unb64(parts[1])
    except (ValueError, UnicodeEncodeError):
        raise EntryCodeError("malformed", "bad base64") from None
    want = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(sig, want):
        raise EntryCodeError("forged", "signature does not match")
    try:
        p = json.loads(raw)
        c = EntryCode(str(p["s"]), str(p["a"]), str(p["n"]), int(p["p"]), float(p["iat"]), float(p["exp"]))
    except (ValueError, KeyError, TypeError):
        raise EntryCodeError("malformed", "bad payload") from None
    if c.store != store:
        raise EntryCodeError("wrong_store", f"code is for store {c.store!r}")
    if c.expires_at - c.issued_at > MAX_TTL_S + 1e-6:
        raise EntryCodeError("too_long_lived", "code lifetime exceeds 60 s")
    if now < c.issued_at - CLOCK_SKEW_S:
        raise EntryCodeError("not_yet_valid", "issued in the future")
    if now > c.expires_at:
        raise EntryCodeError("expired", f"expired {now - c.expires_at:.1f} s ago")
    return c


class UsedCodes:
    """Code ids already used, kept until they expire; in memory, or in a SQLite file that survives restarts."""

    def __init__(self, path: str | Path | None = None):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS used (code_id TEXT PRIMARY KEY, expires REAL)")

    def use(self, code: EntryCode, now: float) -> None:
        """Mark ``code`` used; raise ``EntryCodeError('replayed')`` if it was used before."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM used WHERE expires < ?", (now - CLOCK_SKEW_S,))
            cur = self._db.execute("INSERT OR IGNORE INTO used VALUES (?, ?)", (code.code_id, code.expires_at))
            if cur.rowcount == 0:
                raise EntryCodeError("replayed", "code already used")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM used").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def load_secret(env_name: str, file: str | Path | None = None, environ: dict | None = None) -> bytes:
    """The shared secret from a file (preferred) or an environment variable; empty secrets are refused."""
    if file:
        data = Path(file).read_bytes().strip()
    else:
        data = (environ if environ is not None else os.environ).get(env_name, "").encode()
    if len(data) < 16:
        raise ValueError(f"entry code secret ({file or '$' + env_name}) is missing or shorter than 16 bytes")
    return data

"""Who may use the ops app and the shopper API.

Staff (``ops_users``): a name, one role and an argon2id password hash (argon2-cffi).  Roles are ordered:

* ``viewer``: reads the queue, visits and evidence;
* ``reviewer``: also adjusts carts (confirm, remove, add, move a line), approves (captures) visits, resolves
  disputes and unassigned events, and refunds up to the configured limit;
* ``admin``: also refunds above the limit and manages users.

Sessions: a random token in an HttpOnly, SameSite=Lax cookie (Secure when configured); the database keeps only
its SHA-256, with an expiry; logging out revokes it.  CSRF: every form carries ``csrf``, an HMAC of the session
token (the login form, before there is a session, a random value that must match a cookie of its own); a
state-changing request without the right value is refused.  Login rate limit: after ``max_failures`` failed
attempts for one name or from one client within ``failure_window_s``, further attempts are refused without
checking the password until the window passes.

Shoppers: one or more bearer tokens per account (``wos_...``, 256 random bits); only their SHA-256 is stored
(a fast hash is enough for a random token; passwords, which people choose, get argon2).

Nothing here logs a password, a session token, a CSRF token or a bearer token: log lines name the user or the
account only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection

from fusion.db import (
    Database,
    ops_login_attempts,
    ops_sessions,
    ops_users,
    record_audit,
    shopper_tokens,
    utcnow,
)

log = logging.getLogger(__name__)

ROLES = ("viewer", "reviewer", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
SHOPPER_TOKEN_PREFIX = "wos_"
_CSRF_CONTEXT = b"walkout-ops-csrf-v1"


class AuthError(ValueError):
    """A request about users or tokens that cannot be carried out (bad name, weak password, unknown user)."""


class RateLimited(Exception):
    """Too many failed logins for this name or client; ``retry_after_s`` tells when to try again."""

    def __init__(self, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")


@dataclass(frozen=True)
class AuthSettings:
    """Security settings of the ops app (flags of ``walkout ops``)."""

    session_ttl_s: float = 12 * 3600.0
    secure_cookies: bool = False  # set Secure on cookies (serve over HTTPS)
    max_failures: int = 5
    failure_window_s: float = 900.0
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).  Tests lower them.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.argon2_time_cost,
            memory_cost=self.argon2_memory_kib,
            parallelism=self.argon2_parallelism,
        )


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    active: bool

    def can(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above."""
        return self.active and RANK[self.role] >= RANK[role]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AuthError(
            f"user name {name!r}: use 1-64 letters, digits and _ . @ - (starting with a letter/digit)"
        )
    return name


def _check_role(role: str) -> str:
    if role not in RANK:
        raise AuthError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    """A password fit to be set: MIN_PASSWORD..MAX_PASSWORD characters, not all one character."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if len(set(password)) < 3:
        raise AuthError("the password is too simple")
    return password


def _user(row: sa.Row) -> User:
    return User(int(row.id), row.name, row.role, bool(row.active))


# ------------------------------------------------------------------------------------------------ users
class Users:
    """Staff accounts and their sessions in one database."""

    def __init__(self, db: Database, settings: AuthSettings | None = None):
        self.db = db
        self.settings = settings or AuthSettings()
        self.hasher = self.settings.hasher()
        self._dummy = self.hasher.hash(secrets.token_hex(16))  # verified for unknown names (same cost)

    def create(self, name: str, role: str, password: str, *, actor: str) -> User:
        """A new user; :class:`AuthError` if the name is taken or a field is bad."""
        _check_name(name)
        _check_role(role)
        digest = self.hasher.hash(check_password(password))
        now = utcnow()
        with self.db.begin() as conn:
            inserted = Database.insert_if_absent(
                conn,
                ops_users,
                {
                    "name": name,
                    "role": role,
                    "password_hash": digest,
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                },
                ["name"],
            )
            if not inserted:
                raise AuthError(f"user {name!r} exists already")
            user = self._by_name(conn, name)
            assert user is not None
            record_audit(
                conn,
                actor=actor,
                action="create_user",
                entity="ops_user",
                entity_id=name,
                after={"role": role, "active": True},
            )
        log.info("ops user %s created with role %s by %s", name, role, actor)
        return user

    def set_role(self, name: str, role: str, *, actor: str) -> User:
        _check_role(role)
        return self._update(name, {"role": role}, actor, "set_role")

    def set_active(self, name: str, active: bool, *, actor: str) -> User:
        user = self._update(name, {"active": bool(active)}, actor, "set_active")
        if not active:
            with self.db.begin() as conn:
                conn.execute(
                    ops_sessions.update()
                    .where(ops_sessions.c.user_id == user.id, ops_sessions.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
        return user

    def set_password(self, name: str, password: str, *, actor: str) -> User:
        digest = self.hasher.hash(check_password(password))
        user = self._update(name, {"password_hash": digest}, actor, "set_password", audit_values=False)
        with self.db.begin() as conn:  # a new password ends every session of the user
            conn.execute(
                ops_sessions.update()
                .where(ops_sessions.c.user_id == user.id, ops_sessions.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return user

    def _update(self, name: str, values: dict, actor: str, action: str, *, audit_values: bool = True) -> User:
        with self.db.begin() as conn:
            before = self._by_name(conn, name)
            if before is None:
                raise AuthError(f"no user {name!r}")
            conn.execute(
                ops_users.update().where(ops_users.c.name == name).values(**values, updated_at=utcnow())
            )
            after = self._by_name(conn, name)
            assert after is not None
            record_audit(
                conn,
                actor=actor,
                action=action,
                entity="ops_user",
                entity_id=name,
                before={"role": before.role, "active": before.active},
                after=(
                    {"role": after.role, "active": after.active} if audit_values else {"password": "changed"}
                ),
            )
        log.info("ops user %s: %s by %s", name, action, actor)
        return after

    def get(self, name: str) -> User | None:
        with self.db.read() as conn:
            return self._by_name(conn, name)

    def all(self) -> list[User]:
        with self.db.read() as conn:
            return [_user(r) for r in conn.execute(sa.select(ops_users).order_by(ops_users.c.name))]

    @staticmethod
    def _by_name(conn: Connection, name: str) -> User | None:
        row = conn.execute(sa.select(ops_users).where(ops_users.c.name == name)).first()
        return None if row is None else _user(row)

    # ------------------------------------------------------------------------------------------- login
    def authenticate(
        self, name: str, password: str, client: str, *, now: datetime | None = None
    ) -> User | None:
        """The user when ``password`` is right (and the user active), else None; :class:`RateLimited` when
        this name or client failed too often lately (the password is not even checked then)."""
        now = now or utcnow()
        name = name[:64]
        client = client[:64] or "unknown"
        window = now - timedelta(seconds=self.settings.failure_window_s)
        la = ops_login_attempts
        with self.db.read() as conn:
            failures = conn.execute(
                sa.select(sa.func.count(), sa.func.min(la.c.at)).where(
                    la.c.ok.is_(False), la.c.at > window, sa.or_(la.c.name == name, la.c.client == client)
                )
            ).one()
            row = conn.execute(sa.select(ops_users).where(ops_users.c.name == name)).first()
        if failures[0] >= self.settings.max_failures:
            oldest = failures[1]
            retry = self.settings.failure_window_s - (now - oldest).total_seconds() if oldest else 60
            log.warning("login for %s from %s refused: %d failures in the window", name, client, failures[0])
            raise RateLimited(max(1, int(retry) + 1))
        ok = False
        if row is None:
            self._verify(self._dummy, password + "x")
        else:
            ok = self._verify(row.password_hash, password) and bool(row.active)
        with self.db.begin() as conn:
            conn.execute(la.insert().values(name=name, client=client, ok=ok, at=now))
            if ok and row is not None and self.hasher.check_needs_rehash(row.password_hash):
                conn.execute(
                    ops_users.update()
                    .where(ops_users.c.id == row.id)
                    .values(password_hash=self.hasher.hash(password), updated_at=now)
                )
        if not ok:
            log.warning("login failed for %s from %s", name, client)
            return None
        log.info("login: %s from %s", name, client)
        return _user(row)

    def _verify(self, digest: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(digest, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.error("a stored password hash cannot be verified (corrupt or unknown format)")
            return False

    # ------------------------------------------------------------------------------------------- sessions
    def open_session(self, user: User, *, now: datetime | None = None) -> str:
        """A new session for ``user``; returns the token for the cookie (stored only as a hash)."""
        now = now or utcnow()
        token = secrets.token_urlsafe(32)
        with self.db.begin() as conn:
            conn.execute(
                ops_sessions.insert().values(
                    token_hash=token_hash(token),
                    user_id=user.id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.settings.session_ttl_s),
                )
            )
        return token

    def session_user(self, token: str | None, *, now: datetime | None = None) -> User | None:
        """The active user of a live session, or None."""
        if not token or len(token) > 128:
            return None
        now = now or utcnow()
        s, u = ops_sessions, ops_users
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(u)
                .join(s, s.c.user_id == u.c.id)
                .where(
                    s.c.token_hash == token_hash(token),
                    s.c.revoked_at.is_(None),
                    s.c.expires_at > now,
                    u.c.active.is_(True),
                )
            ).first()
        return None if row is None else _user(row)

    def close_session(self, token: str | None) -> None:
        if not token:
            return
        with self.db.begin() as conn:
            conn.execute(
                ops_sessions.update()
                .where(ops_sessions.c.token_hash == token_hash(token), ops_sessions.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    def prune(self, *, now: datetime | None = None) -> int:
        """Delete login attempts older than the window (and a day) and sessions expired a day ago."""
        now = now or utcnow()
        cut = now - timedelta(seconds=max(self.settings.failure_window_s, 86400.0))
        with self.db.begin() as conn:
            a = conn.execute(
                ops_login_attempts.delete().where(ops_login_attempts.c.at < cut),
                execution_options={"preserve_rowcount": True},
            ).rowcount
            b = conn.execute(
                ops_sessions.delete().where(ops_sessions.c.expires_at < now - timedelta(days=1)),
                execution_options={"preserve_rowcount": True},
            ).rowcount
        return max(a, 0) + max(b, 0)


# ------------------------------------------------------------------------------------------------ CSRF
def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: an HMAC of its (secret, HttpOnly) token, so it needs no storage."""
    return hmac.new(session_token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_ok(session_token: str | None, given: str | None) -> bool:
    if not session_token or not given:
        return False
    return hmac.compare_digest(csrf_token(session_token).encode(), given.encode("utf-8", "replace"))


def login_csrf_ok(cookie_value: str | None, given: str | None) -> bool:
    """The login form's double-submit check (before there is a session)."""
    if not cookie_value or not given or len(cookie_value) < 16:
        return False
    return hmac.compare_digest(cookie_value.encode("utf-8", "replace"), given.encode("utf-8", "replace"))


# ------------------------------------------------------------------------------------------------ shoppers
class ShopperTokens:
    """Bearer tokens of the shopper API, one account each."""

    def __init__(self, db: Database):
        self.db = db

    def issue(self, account: str, *, label: str = "app", actor: str) -> str:
        """A new token for ``account``; returned once, stored only as a hash."""
        if not isinstance(account, str) or not ACCOUNT_RE.match(account):
            raise AuthError(f"account id {account!r} is not valid")
        if not isinstance(label, str) or not 1 <= len(label) <= 64:
            raise AuthError("the token label must have 1 to 64 characters")
        token = SHOPPER_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.begin() as conn:
            conn.execute(
                shopper_tokens.insert().values(
                    token_hash=token_hash(token), account=account, label=label, created_at=utcnow()
                )
            )
            record_audit(
                conn,
                actor=actor,
                action="issue_token",
                entity="shopper_account",
                entity_id=account,
                after={"label": label},
            )
        log.info("shopper token %r issued for account %s by %s", label, account, actor)
        return token

    def account_of(self, token: str | None) -> str | None:
        """The account a live token belongs to, or None."""
        if not token or not token.startswith(SHOPPER_TOKEN_PREFIX) or len(token) > 128:
            return None
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(shopper_tokens.c.account).where(
                    shopper_tokens.c.token_hash == token_hash(token), shopper_tokens.c.revoked_at.is_(None)
                )
            ).first()
        return None if row is None else row.account

    def revoke_all(self, account: str, *, actor: str) -> int:
        with self.db.begin() as conn:
            n = conn.execute(
                shopper_tokens.update()
                .where(shopper_tokens.c.account == account, shopper_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow()),
                execution_options={"preserve_rowcount": True},
            ).rowcount
            record_audit(
                conn,
                actor=actor,
                action="revoke_tokens",
                entity="shopper_account",
                entity_id=account,
                after={"revoked": n},
            )
        return max(n, 0)

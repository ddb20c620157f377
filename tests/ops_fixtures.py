"""Fixtures of the ops tests (imported by the test modules that use them): a store, a ledger and a
:class:`Reviewer` on the ``db`` fixture's database (both backends), users of each role, and synthetic visits."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from calibration.store import Store
from fusion.db import Database
from fusion.ops.app import OpsSettings, create_app
from fusion.ops.auth import AuthSettings, User
from fusion.ops.review import Reviewer, ReviewSettings, new_adjustment_id
from fusion.payments import LedgerGateway
from tests.fusion_scene import T0
from tests.helpers_ops import ops_store, synthetic_visit

FAST_HASH = AuthSettings(argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1)
SECRET = b"ops-test-entry-code-secret-0123"
REFUND_LIMIT = 1000
PASSWORDS = {"vera": "viewer-pass-1234", "rita": "reviewer-pass-5678", "adam": "admin-pass-91011"}
ROLES = {"vera": "viewer", "rita": "reviewer", "adam": "admin"}
_ids = itertools.count(1)

VIEWER = User(901, "vera", "viewer", True)
REVIEWER = User(902, "rita", "reviewer", True)
ADMIN = User(903, "adam", "admin", True)


@dataclass
class Env:
    db: Database
    store: Store
    ledger: LedgerGateway
    reviewer: Reviewer

    def visit(
        self,
        lines: list[tuple[str, int]],
        *,
        account: str = "acct-h",
        status: str = "held_for_review",
        reasons: tuple[str, ...] = ("product identification p=0.55",),
        hold: bool = True,
        declines: bool = False,
    ) -> str:
        """A settled visit (held for review by default) with an authorised entry hold."""
        vid = f"v{next(_ids)}"
        self.ledger.ensure_account(account, declines=declines)
        synthetic_visit(
            self.db,
            self.store,
            vid,
            account,
            lines,
            status=status,
            reasons=list(reasons),
            entered_at=T0 + 10 * next(_ids),
            hold=self.ledger if hold else None,
            queue=status == "held_for_review",
        )
        return vid

    def charged(self, lines: list[tuple[str, int]], account: str = "acct-c") -> str:
        """A visit approved (charged) through the reviewer."""
        vid = self.visit(lines, account=account)
        self.reviewer.approve(vid, actor=REVIEWER)
        return vid


@pytest.fixture
def env(db: Database) -> Env:
    store = ops_store()
    ledger = LedgerGateway(db, currency=store.store.currency)
    return Env(db, store, ledger, Reviewer(db, store, ledger, ReviewSettings(refund_limit=REFUND_LIMIT)))


def adj() -> str:
    return new_adjustment_id()


@dataclass
class Web:
    env: Env
    app: object

    def client(self, name: str | None = None) -> TestClient:
        """A client logged in as ``name`` (or anonymous)."""
        c = TestClient(self.app)  # type: ignore[arg-type]
        if name is not None:
            login(c, name, PASSWORDS[name])
        return c


def login(c: TestClient, name: str, password: str) -> object:
    import re

    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return c.post(
        "/login",
        data={"name": name, "password": password, "csrf": token, "next": "/queue"},
        follow_redirects=False,
    )


def csrf_of(c: TestClient, path: str = "/queue") -> str:
    import re

    page = c.get(path)
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text).group(1)  # type: ignore[union-attr]


@pytest.fixture
def web(env: Env) -> Iterator[Web]:
    app = create_app(
        env.db,
        env.store,
        env.ledger,
        settings=OpsSettings(auth=FAST_HASH, review=env.reviewer.settings),
        entry_secret=SECRET,
        clock=lambda: T0 + 5000,
    )
    users = app.state.ops.users
    for name, role in ROLES.items():
        users.create(name, role, PASSWORDS[name], actor="test")
    yield Web(env, app)

"""Shared fixtures.  Service fixtures live in their own plugin modules (listed in ``pytest_plugins``)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = (ROOT / ".." / "shared" / "realdata").resolve()

pytest_plugins: list[str] = ["tests.fixtures_db", "tests.fixtures_mqtt"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real third-party recordings; tests that need them skip with the reason where absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (it ships beside the repository, not in it)")
    return REALDATA

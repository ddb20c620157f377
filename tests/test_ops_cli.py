"""``walkout ops``: users and tokens from the command line (passwords from stdin, never an argument), and
the app served by ``walkout ops --store``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from fusion.db import Database
from fusion.ops.auth import ShopperTokens, Users
from tests.conftest import free_port
from tests.helpers_ops import ops_store

ROOT = Path(__file__).resolve().parents[1]


def _walkout(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "walkout.cli", *args],
        input=stdin,
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "stdin", "rc", "says"),
    [
        (
            ["add-user", "olga", "--role", "reviewer"],
            "olga-password-1\n",
            0,
            "user olga added with role reviewer",
        ),
        (["add-user", "olga", "--role", "reviewer"], "short\n", 1, "10 to 1024 characters"),
        (["add-user", "olga", "--role", "boss"], "olga-password-1\n", 2, "invalid choice"),
        (
            ["add-user", "olga", "--role", "admin", "--password", "olga-password-1"],
            "",
            2,
            "not taken as arguments",
        ),
        (["add-user", "bad name", "--role", "admin"], "olga-password-1\n", 1, "user name"),
    ],
)
def test_add_user(tmp_path: Path, args: list[str], stdin: str, rc: int, says: str) -> None:
    db_file = tmp_path / "ops.db"
    out = _walkout("ops", *args, "--db", str(db_file), stdin=stdin)
    assert out.returncode == rc, out.stderr
    assert says in out.stdout + out.stderr
    assert "olga-password-1" not in out.stdout + out.stderr
    if rc == 0:
        db = Database(db_file)
        assert Users(db).authenticate("olga", "olga-password-1", "cli-test") is not None
        again = _walkout("ops", *args, "--db", str(db_file), stdin=stdin)
        assert again.returncode == 1 and "exists already" in again.stderr
        db.dispose()


def test_issue_token_prints_one_that_works(tmp_path: Path) -> None:
    db_file = tmp_path / "ops.db"
    out = _walkout("ops", "issue-token", "acct-9", "--db", str(db_file))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("wos_")
    db = Database(db_file)
    assert ShopperTokens(db).account_of(token) == "acct-9"
    db.dispose()


def test_serve(tmp_path: Path) -> None:
    store_file = tmp_path / "store.yaml"
    data = ops_store().model_dump(mode="json")
    data["entry_codes"] = {"secret_env": "WALKOUT_TEST_OPS_SECRET"}
    store_file.write_text(yaml.safe_dump(data))
    port = free_port()
    env = {**os.environ, "WALKOUT_TEST_OPS_SECRET": "a-secret-of-enough-length"}
    assert _walkout("ops", "--db", str(tmp_path / "ops.db")).returncode == 1  # no --store
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "walkout.cli",
            "ops",
            "--store",
            str(store_file),
            "--db",
            str(tmp_path / "ops.db"),
            "--port",
            str(port),
            "--evidence",
            str(tmp_path / "ev"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the app did not start"
                time.sleep(0.2)
        assert r.json() == {"status": "ok"}
        login = httpx.get(
            f"http://127.0.0.1:{port}/queue", headers={"accept": "text/html"}, follow_redirects=True
        )
        assert login.status_code == 200 and "Log in" in login.text
        api = httpx.post(f"http://127.0.0.1:{port}/api/v1/entry-code")
        assert api.status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"ops app on http://127.0.0.1:{port}" in out

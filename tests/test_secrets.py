"""No secret where it does not belong: none in the repository's files, none in the logs of the processes that
hold one (MQTT passwords, a database URL's password, the entry-code secret), none on the ops app's error pages.
"""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chaos.broker import start_store_broker
from tests.fixtures_mqtt import ROOT
from tests.helpers_fusion_scene import scene_store_with_id, scene_yaml
from tests.ops_fixtures import SECRET, Web, env, web  # noqa: F401 - fixtures

# ------------------------------------------------------------------------------------------------ the repo
ANYWHERE = {
    "private key": re.compile(rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    "mosquitto password hash": re.compile(rb"\$[67]\$\d+\$[A-Za-z0-9+/=]{20,}"),
    "AWS access key": re.compile(rb"AKIA[0-9A-Z]{16}"),
    "GitHub token": re.compile(rb"gh[pousr]_[A-Za-z0-9]{36}"),
}
CONFIG_LIKE = re.compile(r"(\.(ya?ml|conf|ini|env|toml|cfg|json|service|sh)|Makefile|Dockerfile|passwd)$")
DOC_LIKE = re.compile(r"\.(md|txt|rst)$")
URL_PASSWORD = {
    "password in a URL": re.compile(rb"[a-z+]+://[^/\s:@]+:(?!\*\*\*|\$\{|PASSWORD|SECRET|\.\.\.)[^/\s@]{3,}@"),
}
IN_CONFIGS = {
    **URL_PASSWORD,
    "password setting": re.compile(rb"(?im)^\s*[\w.-]*(password|passwd|secret|token)"
                                   rb"(?![\w.-]*(_file|_env|-env|_path|_location))[\w.-]*[\"']?(\s*[:=]\s*|\s+)"
                                   rb"(?![\"']?(\$|/|SET-ME|<|null\b|~|\"\"|''|none\b|false\b|true\b))[^\s#]{6,}"),
}
BINARY = re.compile(r"\.(onnx|mcap|png|jpg|jpeg|pickle|db|gz|zip|pt)$")


def repo_files() -> list[Path]:
    """Files git tracks, and the untracked ones it would add (not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return [ROOT / p for p in sorted(set(out)) if not BINARY.search(p) and (ROOT / p).is_file()]


def scan(paths: list[Path]) -> list[str]:
    hits = []
    for path in paths:
        data = path.read_bytes()
        checks = dict(ANYWHERE)
        if CONFIG_LIKE.search(path.name):
            checks.update(IN_CONFIGS)
        elif DOC_LIKE.search(path.name):  # prose: only credentials in URLs (words like "wrong-password" abound)
            checks.update(URL_PASSWORD)
        for what, rx in checks.items():
            m = rx.search(data)
            if m:
                line = data[: m.start()].count(b"\n") + 1
                hits.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    return hits


@pytest.mark.parametrize(
    ("name", "text", "found"),
    [
        ("x.pem", "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE\n", True),  # (split: this file is scanned too)
        ("k.py", "KEY = '''-----BEGIN " + "PRIVATE KEY-----'''", True),
        ("passwd", "cam1:$7" + "$101$abcdefghijABCDEFGHIJ0123456789==$xyz", True),
        ("app.yaml", "db: postgresql://walkout:hunter22@db/walkout\n", True),
        ("app.yaml", "db: postgresql://walkout:${DB_PASSWORD}@db/walkout\n", False),
        ("bridge.conf", "remote_password s3cr3tpassw0rd\n", True),
        ("bridge.conf", "remote_password SET-ME-from-WALKOUT_BRIDGE_PASSWORD\n", False),
        ("a.env", "WALKOUT_MQTT_PASSWORD=abcdefgh12\n", True),
        ("store.yaml", "entry_codes: {secret_env: WALKOUT_ENTRY_SECRET}\n", False),
        ("walkout.conf", "password_file /etc/mosquitto/walkout/passwd\n", False),
        ("notes.py", "url = 'rtsp://user:secret@cam'  # a test's fake camera\n", False),
        ("deploy.md", "wrong-password logins are refused\n", False),
        ("deploy.md", "connect to mqtts://fusion:Xq9-real-pass@store-17:8883\n", True),
    ],
)
def test_the_scanner_finds_secrets_and_leaves_placeholders(tmp_path: Path, name: str, text: str, found: bool) -> None:
    p = ROOT / "runs" / f"scan-{uuid.uuid4().hex[:6]}" / name  # under ROOT so relative paths work
    p.parent.mkdir(parents=True)
    try:
        p.write_text(text)
        assert bool(scan([p])) is found
    finally:
        p.unlink()
        p.parent.rmdir()


def test_no_private_key_password_or_token_in_the_repository() -> None:
    files = repo_files()
    assert len(files) > 50
    assert scan(files) == []


# ------------------------------------------------------------------------------------------------ logs
def _run_until(cmd: list[str], environ: dict[str, str], ready: bytes, timeout: float = 60.0,
               stdin: bytes | None = None) -> tuple[int, str]:
    """Run ``cmd`` until it prints ``ready`` (or exits), then SIGTERM it; its stdout and stderr."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None and proc.stdin is not None
    if stdin:
        proc.stdin.write(stdin)
        proc.stdin.flush()
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ready not in out and proc.poll() is None:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            out += proc.stdout.read1(65536)
    time.sleep(1.0)
    proc.terminate()
    rest, _ = proc.communicate(timeout=30)
    return proc.returncode, (out + rest).decode(errors="replace")


@pytest.mark.mosquitto
def test_no_secret_in_the_logs_of_processes_that_hold_one(tmp_path: Path) -> None:
    """fusion, the entry gate and the shelf gateway at debug level, with their MQTT passwords, the entry-code
    secret and (fusion) a refused login and a database URL with a password: nothing secret in their output."""
    import os

    store_id = "s" + uuid.uuid4().hex[:8]
    store = scene_store_with_id(store_id)
    store_yaml = scene_yaml(tmp_path / "store.yaml", store_id)
    sb = start_store_broker(store, tmp_path / "mqtt")
    entry_secret = "entry-" + uuid.uuid4().hex
    db_password = "dbpw-" + uuid.uuid4().hex[:12]
    base = {**os.environ, "PYTHONUNBUFFERED": "1", "WALKOUT_ENTRY_SECRET": entry_secret}
    walkout = [sys.executable, "-m", "walkout.cli", "-vv"]
    outputs = []
    try:
        proc_env = {**base, "WALKOUT_MQTT_PASSWORD": sb.passwords["fusion"]}
        rc, out = _run_until(walkout + ["fusion", "--store", str(store_yaml), "--db", f"sqlite:///{tmp_path}/f.db",
                                        "--broker", f"127.0.0.1:{sb.port}", "--username", "fusion"], proc_env,
                             b"fusion ready")
        assert "fusion ready" in out, out[-2000:]
        outputs.append(out)
        wrong = {**base, "WALKOUT_MQTT_PASSWORD": "wrong-" + sb.passwords["fusion"]}
        rc, out = _run_until(walkout + ["fusion", "--store", str(store_yaml), "--db", f"sqlite:///{tmp_path}/g.db",
                                        "--broker", f"127.0.0.1:{sb.port}", "--username", "fusion"], wrong,
                             b"refused the connection", timeout=20)
        assert "refused" in out
        outputs.append(out)
        rc, out = _run_until(walkout + ["fusion", "--store", str(store_yaml), "--db",
                                        f"postgresql+psycopg://walkout:{db_password}@127.0.0.1:1/nowhere",
                                        "--broker", f"127.0.0.1:{sb.port}"], base, b"error", timeout=30)
        assert rc != 0 and "error" in out
        outputs.append(out)
        gate = store.gates[0].id
        proc_env = {**base, "WALKOUT_MQTT_PASSWORD": sb.passwords[gate]}
        rc, out = _run_until(walkout + ["edge", "gate", "--store", str(store_yaml), "--gate", gate, "--source",
                                        "stdin", "--broker", f"127.0.0.1:{sb.port}", "--username", gate], proc_env,
                             b"refused", stdin=b"not-a-code\n" + entry_secret.encode()[:8] + b"\n")
        outputs.append(out)
    finally:
        sb.close()
    secrets = [*sb.passwords.values(), entry_secret, db_password]
    for out in outputs:
        for s in secrets:
            assert s not in out


# ------------------------------------------------------------------------------------------------ error pages
def test_no_secret_or_traceback_on_error_pages(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """An ops page that fails shows a plain error, whatever the exception carried."""
    from fusion.ops import pages

    leaky = f"postgresql://ops:topsecretpw@db/walkout entry={SECRET.decode()}"

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"database gone: {leaky}")

    monkeypatch.setattr(pages, "_queue_data", boom)
    c = web.client("vera")
    c = TestClient(web.app, raise_server_exceptions=False, cookies=c.cookies)  # type: ignore[arg-type]
    for path, status in (("/queue", 500), ("/no-such-page", 404), ("/visits/..%2f..%2fetc", 404)):
        r = c.get(path, headers={"accept": "text/html"})
        assert r.status_code == status, path
        body = r.text
        for bad in ("topsecretpw", SECRET.decode(), "Traceback", 'File "', "RuntimeError", "sqlite:", "postgresql"):
            assert bad not in body, (path, bad)

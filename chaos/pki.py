"""Throw-away TLS certificates for tests and the fault suite, made with the ``openssl`` command at run time
(never committed): a CA, and a broker certificate for ``localhost`` / ``127.0.0.1`` signed by it.  The same
commands, with real names and lifetimes, are in ``docs/deployment.md``."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestPki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {res.stderr.strip()[:300]}")


def make_test_pki(folder: str | Path, days: int = 2) -> TestPki:
    """A CA and a server certificate (SAN ``DNS:localhost, IP:127.0.0.1``) in ``folder``; keys mode 0600."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make test certificates (apt install openssl)")
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days",
             str(days), "-subj", "/CN=walkout test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
             "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "server.crt", "-days", str(days), "-extfile", "san.ext", cwd=d)
    for key in ("ca.key", "server.key"):
        (d / key).chmod(0o600)
    return TestPki(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")

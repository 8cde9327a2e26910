"""The console of a real ``switchboard serve``: development mode turns it on with a one-time password
written to the log (one line), and ``switchboard admin-hash`` makes a hash the console accepts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from hub.admin.auth import ADMIN, PasswordHash, check_password, credentials
from tests.conftest import TIMEOUT, http_client


async def test_development_mode_logs_a_one_time_password_that_signs_in(
    server_process: Any, tmp_path: Any
) -> None:
    proc, port = await server_process("--data-dir", str(tmp_path))
    seen = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await proc.stdout.readline()).decode()
            seen.append(line)
            if "one-time password" in line:
                break
    password = line.rsplit(": ", 1)[1].strip()
    assert f"http://127.0.0.1:{port}/admin" in line and len(password) >= 16
    async with http_client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
        assert (await http.post("/admin/api/login", json={"password": "guess"})).status_code == 401
        r = await http.post("/admin/api/login", json={"password": password})
        assert r.status_code == 200 and r.json()["role"] == "admin"


def test_admin_hash_prints_a_hash_for_the_password_on_stdin() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hub", "admin-hash", "--scheme", "pbkdf2_sha256"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = done.stdout.strip()
    PasswordHash.parse(text)
    assert check_password(credentials(password_hash=text), "s3cret") == ADMIN
    assert check_password(credentials(password_hash=text), "s3cret ") is None

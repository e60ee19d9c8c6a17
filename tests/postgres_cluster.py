"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` on a free loopback port.

PostgreSQL refuses to run as root, and the test suite often runs as root (containers, CI), so
the cluster lives in a temp directory owned by the ``postgres`` account and its commands run
through ``runuser -u postgres`` there; as any other user they run directly. The server listens
on 127.0.0.1 only, its socket sits in the same temp directory, and it is stopped and deleted
at the end. ``KEYGATE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs the binaries)
turns "binaries absent" from a skip into a failure, so CI never silently skips.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vault_fixtures import free_port


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def require_binaries() -> Path:
    found = bin_dir()
    if found is None:
        if os.environ.get("KEYGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries are missing but KEYGATE_REQUIRE_POSTGRES=1")
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    return found


@dataclass(frozen=True)
class Postgres:
    port: int
    superuser: str
    password: str
    bin: Path

    def psql(self, user: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` over TCP as ``user`` (password auth), as a client would."""
        env = {"PGPASSWORD": password, "PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "5"}
        return subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                "postgres",
                "-tAc",
                sql,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    bin_path = require_binaries()
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs the 'postgres' account (created by the postgresql package)")
        owner = "postgres"
    base = Path(tempfile.mkdtemp(prefix="keygate-pg-"))
    data, pwfile = base / "data", base / "pw"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password)
    if owner:
        shutil.chown(base, owner, owner)
        shutil.chown(pwfile, owner, owner)
    pwfile.chmod(0o600)
    port = free_port()
    run = {"capture_output": True, "text": True, "timeout": 120, "check": True, "cwd": base}
    started = False
    try:
        subprocess.run(
            _as_owner(
                [
                    str(bin_path / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                ],
                owner,
            ),
            **run,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_owner(
                [
                    str(bin_path / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(base / "log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                owner,
            ),
            **run,
        )
        started = True
        yield Postgres(port, "postgres", password, bin_path)
    finally:
        if started:
            subprocess.run(
                _as_owner(
                    [str(bin_path / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], owner
                ),
                capture_output=True,
                timeout=60,
                check=False,
                cwd=base,
            )
        shutil.rmtree(base, ignore_errors=True)

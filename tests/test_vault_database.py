"""Vault's database secrets engine against a real PostgreSQL and a real OpenBao, through Mounts.

OpenBao's built-in ``postgresql-database-plugin`` creates a login role per lease; keygate
reuses one lease while most of it remains (no new database user every rotation poll) and
issues new credentials per Mount when ``vaultDynamicSecrets: per-mount``.
"""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.postgres_cluster import Postgres, postgres_cluster
from tests.test_vault import backend, do_mount, files, versions
from tests.vault_fixtures import Vault, vault  # noqa: F401

CREATE = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
    ' GRANT pg_read_all_data TO "{{name}}";'
)

DB_OBJECTS = """
- objectName: db-username
  secretPath: database/creds/app
  secretKey: username
- objectName: db-password
  secretPath: database/creds/app
  secretKey: password
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster() as pg:
        yield pg


@pytest.fixture(scope="module")
def database(vault: Vault, postgres: Postgres) -> Vault:
    """The database engine as the peer's bats setup configures it, pointed at the test cluster."""
    root = vault.root()
    if "database/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("database", path="database")
    root.write(
        "database/config/pg",
        plugin_name="postgresql-database-plugin",
        connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{postgres.port}/postgres?sslmode=disable",
        allowed_roles="app",
        username=postgres.superuser,
        password=postgres.password,
    )
    root.write("database/roles/app", db_name="pg", creation_statements=CREATE, default_ttl="1h", max_ttl="2h")
    return vault


def logs_in(postgres: Postgres, got: dict[str, bytes]) -> bool:
    user, password = got["db-username"].decode(), got["db-password"].decode()
    out = postgres.psql(user, password, "select current_user")
    return out.returncode == 0 and out.stdout.strip() == user


def test_db_creds_mount_and_log_in(start_daemon, database: Vault, postgres: Postgres):
    d = start_daemon()
    resp = do_mount(d, database.params(DB_OBJECTS), database.issuer.pod())
    got = files(resp)
    assert got["db-username"] and got["db-password"]
    assert logs_in(postgres, got)
    # Both objects come from one lease: one read, one database user.
    assert backend(d).stats["reads"] == 1
    assert set(versions(resp)) == {"vault/database/creds/app#username", "vault/database/creds/app#password"}
    assert got["db-password"].decode() not in json.dumps(versions(resp))


def test_rotation_poll_within_the_lease_reuses_the_same_user(
    start_daemon, database: Vault, postgres: Postgres
):
    d = start_daemon()
    pod = database.issuer.pod()
    first = do_mount(d, database.params(DB_OBJECTS), pod)
    second = do_mount(d, database.params(DB_OBJECTS), pod)
    assert files(first) == files(second) and versions(first) == versions(second)
    assert backend(d).stats["reads"] == 1 and backend(d).stats["lease_reuses"] == 1
    assert logs_in(postgres, files(second))


def test_per_mount_issues_new_credentials_each_time(start_daemon, database: Vault, postgres: Postgres):
    d = start_daemon()
    pod = database.issuer.pod()
    params = database.params(DB_OBJECTS, vaultDynamicSecrets="per-mount")
    a, b = do_mount(d, params, pod), do_mount(d, params, pod)
    first, second = files(a), files(b)
    assert first["db-username"] != second["db-username"] and versions(a) != versions(b)
    assert logs_in(postgres, first) and logs_in(postgres, second)
    assert backend(d).stats["reads"] == 2


def test_another_pod_gets_its_own_user(start_daemon, database: Vault):
    d = start_daemon()
    mine = files(do_mount(d, database.params(DB_OBJECTS), database.issuer.pod()))
    other = files(do_mount(d, database.params(DB_OBJECTS), database.issuer.pod(name="app-2", uid="u-2")))
    assert mine["db-username"] != other["db-username"]


def test_whole_answer_without_secret_key_names_the_lease_like_the_peer(
    start_daemon, database: Vault, postgres: Postgres
):
    """vault-csi-provider's vault-all SPC writes database creds without secretKey: the whole answer."""
    d = start_daemon()
    pod = database.issuer.pod()
    objects = "- {objectName: db, secretPath: database/creds/app}"
    first = files(do_mount(d, database.params(objects), pod))["db"]
    body = json.loads(first)
    assert list(body) == ["request_id", "lease_id", "lease_duration", "renewable", "data", "warnings"]
    assert body["lease_id"].startswith("database/creds/app/") and body["renewable"] is True
    assert 3000 < body["lease_duration"] <= 3600
    got = {"db-username": body["data"]["username"].encode(), "db-password": body["data"]["password"].encode()}
    assert logs_in(postgres, got)
    # The rotation poll reuses the lease: the same bytes, no new database user.
    assert files(do_mount(d, database.params(objects), pod))["db"] == first
    assert backend(d).stats["reads"] == 1

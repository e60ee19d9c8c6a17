"""Dynamic secrets that do not churn, against a real OpenBao (PKI) and a real PostgreSQL (database).

The driver re-mounts every rotation poll. With ``vaultDynamicSecrets: reuse`` (the default) the
same pod gets the same certificate or database user while most of its lease remains, counted at
the server (certificates in ``pki/certs``, leases under ``sys/leases/lookup``, login roles in
PostgreSQL); after that part a renewable lease is renewed (``sys/leases/renew``: same user, same
files, a longer lease), and anything else, or a lease at its max TTL, is issued anew.
"""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.postgres_cluster import Postgres, postgres_cluster
from tests.test_vault import backend, do_mount, files, versions
from tests.vault_fixtures import AUDIENCE, Vault, vault  # noqa: F401

DYN_POLICY = """
path "pki/issue/app" { capabilities = ["update"] }
path "database/creds/dyn-*" { capabilities = ["read"] }
"""
CREATE = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
    ' GRANT pg_read_all_data TO "{{name}}";'
)
PKI = """
- objectName: tls.crt
  secretPath: pki/issue/app
  method: POST
  secretArgs: {common_name: poll.example.com, ttl: 6s}
  secretKey: certificate
"""


def db_objects(role: str) -> str:
    return f"""
- objectName: user
  secretPath: database/creds/{role}
  secretKey: username
- objectName: password
  secretPath: database/creds/{role}
  secretKey: password
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster() as pg:
        yield pg


@pytest.fixture(scope="module")
def dyn(vault: Vault, postgres: Postgres) -> Vault:
    root = vault.root()
    root.sys.create_or_update_policy("dyn", DYN_POLICY)
    root.write(
        "auth/jwt/role/dyn",
        role_type="jwt",
        bound_audiences=[AUDIENCE],
        user_claim="sub",
        bound_subject="system:serviceaccount:default:app",
        token_policies=["dyn"],
        token_ttl="1h",
    )
    if "database/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("database", path="database")
    url = f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{postgres.port}/postgres?sslmode=disable"
    root.write(
        "database/config/pg-dyn",
        plugin_name="postgresql-database-plugin",
        connection_url=url,
        allowed_roles="dyn-*",
        username=postgres.superuser,
        password=postgres.password,
    )
    common = {"db_name": "pg-dyn", "creation_statements": CREATE}
    root.write("database/roles/dyn-renew", **common, default_ttl="6s", max_ttl="1m")
    root.write("database/roles/dyn-capped", **common, default_ttl="4s", max_ttl="4s")
    return vault


def certs(vault: Vault) -> int:
    return len(vault.root().list("pki/certs")["data"]["keys"])


def leases(vault: Vault, role: str) -> list[str]:
    try:
        listed = vault.root().list(f"sys/leases/lookup/database/creds/{role}")
    except Exception:  # hvac raises when there are none
        return []
    return list((listed or {}).get("data", {}).get("keys", []))


def ttl_of(vault: Vault, role: str, lease: str) -> int:
    answer = vault.root().write("sys/leases/lookup", lease_id=f"database/creds/{role}/{lease}")
    return int(answer["data"]["ttl"])


def logins(postgres: Postgres, user: str, password: str) -> bool:
    out = postgres.psql(user, password, "select current_user")
    return out.returncode == 0 and out.stdout.strip() == user


def test_rotation_polls_keep_one_certificate_until_most_of_it_passed(start_daemon, dyn: Vault):
    d = start_daemon()
    pod = dyn.issuer.pod()
    params = dyn.params(PKI, roleName="dyn")
    before = certs(dyn)
    first = do_mount(d, params, pod)
    polls = [do_mount(d, params, pod) for _ in range(3)]
    assert all(files(p) == files(first) and versions(p) == versions(first) for p in polls)
    assert certs(dyn) == before + 1  # one certificate issued at the server for four Mounts
    time.sleep(4.3)  # past two thirds of its 6 s: a PKI certificate cannot be renewed
    later = do_mount(d, params, pod)
    assert files(later) != files(first) and versions(later) != versions(first)
    assert certs(dyn) == before + 2


def test_concurrent_mounts_of_one_pod_share_one_issue(start_daemon, dyn: Vault):
    d = start_daemon()
    pod = dyn.issuer.pod(name="burst-0", uid="u-burst-0")
    params = dyn.params(PKI, roleName="dyn")
    before = certs(dyn)
    with ThreadPoolExecutor(4) as pool:
        got = [files(r) for r in pool.map(lambda _: do_mount(d, params, pod), range(4))]
    assert all(g == got[0] for g in got)
    assert certs(dyn) == before + 1


def test_a_renewable_lease_is_renewed_not_reissued(start_daemon, dyn: Vault, postgres: Postgres):
    d = start_daemon()
    pod = dyn.issuer.pod(name="db-0", uid="u-db-0")
    params = dyn.params(db_objects("dyn-renew"), roleName="dyn")
    before = set(leases(dyn, "dyn-renew"))
    first = do_mount(d, params, pod)
    assert files(do_mount(d, params, pod)) == files(first)  # a poll within the lease: reused
    (lease,) = set(leases(dyn, "dyn-renew")) - before
    time.sleep(4.5)  # past two thirds of 6 s
    left = ttl_of(dyn, "dyn-renew", lease)
    renewed = do_mount(d, params, pod)
    assert files(renewed) == files(first) and versions(renewed) == versions(first)  # same user
    assert backend(d).stats["lease_renewals"] == 1 and backend(d).stats["reads"] == 1
    assert set(leases(dyn, "dyn-renew")) - before == {lease}  # no second lease, no second user
    assert ttl_of(dyn, "dyn-renew", lease) > left + 2  # the lease really got longer
    got = files(renewed)
    assert logins(postgres, got["user"].decode(), got["password"].decode())


def test_a_lease_at_its_max_ttl_is_reissued(start_daemon, dyn: Vault, postgres: Postgres):
    d = start_daemon()
    pod = dyn.issuer.pod(name="db-1", uid="u-db-1")
    params = dyn.params(db_objects("dyn-capped"), roleName="dyn")
    first = files(do_mount(d, params, pod))
    time.sleep(3.0)  # past two thirds of 4 s; the renewal cannot extend it (max_ttl 4 s)
    second = files(do_mount(d, params, pod))
    assert second["user"] != first["user"]
    assert backend(d).stats["reads"] == 2
    assert logins(postgres, second["user"].decode(), second["password"].decode())


def test_the_lease_cache_is_bounded():
    from providers.vault.backend import VaultBackend

    cache = VaultBackend({})._leases._cache
    assert cache.max_entries <= 4096 and cache.max_bytes <= 64 * 1024 * 1024
    assert cache.max_entry_bytes <= 1024 * 1024

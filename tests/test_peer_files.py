"""Every peer SPC, mounted end to end, returns the files the peer's own tests expect.

For each SecretProviderClass in ``../shared/peers/spc/*/keygate/`` (the peers' files with only
``provider:`` changed), tests/peer_expectations.py says what the peer's own test setup loads
into its backend and which files (paths, contents, modes) its assertions expect. This test loads
the local servers the same way (OpenBao, moto, the Azure and GCP fakes speaking the real wire
protocol), gives the pod the identity the peer's cluster gives it (tests/test_agreement.py's
``Setup`` with ``seed=False``), mounts through a real daemon and compares the returned files.

Files meant to fail and files keygate refuses by design must be refused by lint and by the
daemon, with the message in the table. Files waiting for an issue-12 feature are
``xfail(strict=True)`` naming it, so they show up the day it lands.
``test_peer_table_is_current`` keeps docs/migration/peer-files.md equal to this table.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import grpc
import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from keygate_dev.driver_client import Pod, mount_request
from provider.errors import InvalidSPC
from tests import test_aws
from tests.azure_fake import FakeIMDS, make_cert
from tests.kubeapi import attest_settings, driver_pod, make_pod
from tests.peer_expectations import EXPECTED, Check, Expect, Load
from tests.postgres_cluster import Postgres, postgres_cluster
from tests.test_agreement import (  # noqa: F401 - fixtures
    PEERS,
    ROOT,
    Setup,
    Unavailable,
    _role,
    azure_env,
    gcp_env,
    gcp_settings,
    lint_errors,
    pod_identity_agent,
    spc_documents,
    vault_env,
)
from tests.test_aws import moto_url, sa_token  # noqa: F401 - fixtures
from tests.vault_fixtures import ISSUER

TABLE = ROOT / "docs" / "migration" / "peer-files.md"
SYSTEM_MI = "0a0a0a0a-1111-2222-3333-444444444444"  # the node VM's system-assigned identity
ADC_EMAIL = "keygate-node@my-project.iam.gserviceaccount.com"  # the daemon's own Google account
# The grant a cluster admin writes for the namespaces whose peer SPCs read as the node.
NODE_POLICY = """
default: allow
rules:
  - name: peer-node-identity
    namespaces: [{namespace}]
    nodeIdentity: [{backend}]
"""
# Our own creation statement for the peer's role test-role (a login role that can read).
DB_CREATE = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
    ' GRANT pg_read_all_data TO "{{name}}";'
)
Key = tuple[str, str, str, str]


def corpus() -> list[tuple[Path, dict[str, Any], Key]]:
    found = []
    for path in sorted(PEERS.glob("*/keygate/*.yaml")):
        for doc in spc_documents(path):
            meta = doc["metadata"]
            key = (path.parent.parent.name, path.name, meta["name"], meta.get("namespace") or "default")
            found.append((path, doc, key))
    return found


def params() -> list[Any]:
    out = []
    for path, doc, key in corpus():
        expect = EXPECTED.get(key)
        marks = [pytest.mark.xfail(strict=True, reason=expect.missing)] if expect and expect.missing else []
        out.append(pytest.param(path, doc, key, id=f"{key[0]}/{key[1]}:{key[3]}/{key[2]}", marks=marks))
    return out


@pytest.fixture(scope="module")
def peer_postgres() -> Any:
    with postgres_cluster() as pg:
        yield pg


def _load_database(setup: Setup, pg: Postgres) -> None:
    """As the peer's setup_postgres: the database engine, connection ``postgres``, role test-role."""
    root = setup.vault.root()
    if "database/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("database", path="database")
    root.write(
        "database/config/postgres",
        plugin_name="postgresql-database-plugin",
        allowed_roles="*",
        connection_url=f"postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}/postgres?sslmode=disable",
        username=pg.superuser,
        password=pg.password,
        verify_connection=False,
    )
    root.write(
        "database/roles/test-role",
        db_name="postgres",
        default_ttl="1h",
        max_ttl="24h",
        creation_statements=DB_CREATE,
    )


@dataclass
class Loaded:
    """What the loader created whose bytes the checks need (keys and certificates made here)."""

    key_pem: dict[str, bytes] = field(default_factory=dict)
    cert_pem: dict[str, bytes] = field(default_factory=dict)
    bundle: dict[str, bytes] = field(default_factory=dict)
    pfx: dict[str, bytes] = field(default_factory=dict)


def _vault_namespace(setup: Setup, namespace: str) -> None:
    """As the peer's setup: a namespace with its own kubernetes auth mount and kv-v2 ``secret``."""
    root = setup.vault.root()
    with contextlib.suppress(hvac.exceptions.InvalidRequest):  # made by an earlier test
        root.write(f"sys/namespaces/{namespace}")
    inner = hvac.Client(url=root.url, token=root.token, verify=setup.vault.ca_file, namespace=namespace)
    auths = inner.sys.list_auth_methods()
    if "kubernetes/" not in auths.get("data", auths):
        inner.sys.enable_auth_method("jwt", path="kubernetes")
        inner.write(
            "auth/kubernetes/config",
            jwt_validation_pubkeys=[setup.vault.issuer.public_pem],
            bound_issuer=ISSUER,
        )
    mounts = inner.sys.list_mounted_secrets_engines()
    if "secret/" not in mounts.get("data", mounts):
        inner.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})


def _load_vault(setup: Setup, load: Load) -> None:
    root = setup.vault.root()
    client = root
    if load.vault_namespace:
        client = hvac.Client(
            url=root.url, token=root.token, verify=setup.vault.ca_file, namespace=load.vault_namespace
        )
    for path, data in load.vault_kv.items():
        mount, _, name = path.partition("/")
        client.secrets.kv.v2.create_or_update_secret(name, dict(data), mount_point=mount)
    root.write("pki/roles/example-dot-com", allowed_domains=["example.com"], allow_subdomains=True)


def _load_aws(setup: Setup, load: Load) -> None:
    for service, region, name, value in load.aws:
        where = region or setup.parameters.get("region") or load.aws_node_region or test_aws.REGION
        client = boto3.client(
            "ssm" if service == "ssm" else "secretsmanager",
            endpoint_url=setup.moto,
            region_name=where,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        if service == "ssm":
            client.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
            continue
        try:
            client.create_secret(Name=name, SecretString=value)
        except client.exceptions.ResourceExistsException:
            client.put_secret_value(SecretId=name, SecretString=value)


def _load_azure(setup: Setup, load: Load, loaded: Loaded) -> None:
    fake = setup.azure.fake
    vault = str(setup.parameters.get("keyvaultName", "")).lower()
    for name, value in load.azure_secrets.items():
        fake.add_secret(vault, name, value)
    for name in load.azure_keys:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        fake.add_key(vault, name, key.public_key())
        loaded.key_pem[name] = _spki(key)
    for name in (*load.azure_certs, *load.azure_pfx):
        # Key Vault keeps a certificate as a certificate, a key and a secret of one name.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = make_cert(name, key, None, key, ca=True)
        fake.add_certificate(vault, name, cert)
        fake.add_key(vault, name, key.public_key())
        loaded.key_pem[name] = _spki(key)
        loaded.cert_pem[name] = cert.public_bytes(serialization.Encoding.PEM)
        if name in load.azure_pfx:
            der = pkcs12.serialize_key_and_certificates(
                name.encode(), key, cert, None, serialization.NoEncryption()
            )
            loaded.pfx[name] = der
            fake.add_secret(
                vault, name, base64.b64encode(der).decode(), content_type="application/x-pkcs12", kid=True
            )
        else:
            private = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            loaded.bundle[name] = private + loaded.cert_pem[name]
            fake.add_secret(
                vault, name, loaded.bundle[name].decode(), content_type="application/x-pem-file", kid=True
            )


def _load_gcp(setup: Setup, load: Load) -> None:
    principal = f"sa/{ADC_EMAIL}" if load.node_identity == "gcp" else f"ns/{setup.pod.namespace}/sa/app"
    for secret, value in load.gcp.items():
        regional = "/locations/" in secret
        server = setup.gcp.regional if regional else setup.gcp.sm
        server.versions.pop(secret, None)
        server.add(secret, value, grant=(principal,))
    for version, payload in load.gcp_parameters.items():
        # The rendered payload: what RenderParameterVersion answers once __REF__s are resolved.
        parameter, _, name = version.partition("/versions/")
        server = setup.gcp.pm if "/locations/global/" in version else setup.gcp.pm_regional
        server.add(parameter, name, payload, grant=(principal,))


def _spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check(path: str, got: bytes, want: bytes | Check, loaded: Loaded) -> None:
    if isinstance(want, bytes):
        assert got == want, f"{path}: {got[:80]!r} != {want[:80]!r}"
        return
    if want.kind == "nonempty":
        assert got.strip(), f"{path}: empty"
    elif want.kind == "vault-pki":
        data = json.loads(got)["data"]
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        x509.load_pem_x509_certificate(data["issuing_ca"].encode())
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        assert want.arg in names, f"{path}: certificate for {names}, want {want.arg}"
    elif want.kind == "azure-key":
        assert got.strip() == loaded.key_pem[want.arg].strip(), f"{path}: not the public key of {want.arg}"
    elif want.kind == "azure-cert":
        assert got.strip() == loaded.cert_pem[want.arg].strip(), f"{path}: not the certificate {want.arg}"
    elif want.kind == "azure-pem-bundle":
        assert got == loaded.bundle[want.arg], f"{path}: not the key and certificate of {want.arg}"
    elif want.kind == "azure-pfx-base64":
        assert got == base64.b64encode(loaded.pfx[want.arg]), f"{path}: not the base64 PFX of {want.arg}"
    elif want.kind == "azure-pfx":
        assert got == loaded.pfx[want.arg], f"{path}: not the PFX of {want.arg}"
    else:
        raise AssertionError(f"unknown check {want.kind}")


def mount(
    d: Any, name: str, setup: Setup, pod: Pod | None = None
) -> tuple[dict[str, tuple[int, bytes]], str | None]:
    pod = pod or Pod(namespace=setup.pod.namespace, tokens=setup.tokens)
    try:
        response = d.client.mount(mount_request(name, setup.parameters, pod, secrets=setup.secrets))
    except grpc.RpcError as exc:
        return {}, str(exc.details())
    return {f.path: (f.mode, f.contents) for f in response.files}, None


@pytest.mark.parametrize(("path", "doc", "key"), params())
def test_peer_file(
    path,
    doc,
    key,
    start_daemon,
    vault_env,  # noqa: F811
    moto_url,  # noqa: F811
    sa_token,  # noqa: F811
    azure_env,  # noqa: F811
    gcp_env,  # noqa: F811
    pod_identity_agent,  # noqa: F811
    request,
    short_tmp,
    monkeypatch,
):
    expect = EXPECTED.get(key)
    assert expect is not None, f"{key}: a peer SPC with no entry in tests/peer_expectations.py"
    name, namespace = key[2], key[3]
    raw = (doc.get("spec") or {}).get("parameters") or {}
    node = expect.load.node_identity
    overrides: dict[str, Any] = {}
    if node:
        # Attestation on, the namespace granted the node's identity, the node's identity served:
        # Azure IMDS (the VM's managed identities), GCP the daemon's own credentials (ADC).
        kube = request.getfixturevalue("kube")
        policy = short_tmp / "peer-policy.yaml"
        policy.write_text(NODE_POLICY.format(namespace=namespace, backend=node))
        overrides = attest_settings(kube, release_policy=str(policy))
        if node == "azure":
            user = str(raw.get("userAssignedIdentityID") or "")
            imds = FakeIMDS(azure_env.fake, SYSTEM_MI, (user,) if user else ()).start()
            request.addfinalizer(imds.stop)
            monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url)
            azure_env.fake.grant(user or SYSTEM_MI, str(raw.get("keyvaultName", "")).lower())
        else:
            adc = short_tmp / "adc.json"
            adc.write_text(gcp_env.auth.service_account_key(ADC_EMAIL))
            monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    d = start_daemon(
        **overrides,
        backends={
            "vault": {"address": vault_env.address},
            "aws": {
                "endpoint_url": moto_url,
                "region": expect.load.aws_node_region or test_aws.REGION,
                "role_resolver": _role,
                "pod_identity_endpoint_ipv4": pod_identity_agent.url,
            },
            "azure": {"ca_bundle": str(azure_env.ca.ca_path), "proxy": azure_env.proxy.url},
            "gcp": gcp_settings(gcp_env),
        },
    )
    errors = lint_errors(path, name)
    setup = Setup(
        vault_env,
        moto_url,
        azure_env,
        gcp_env,
        sa_token,
        pod_identity_agent,
        dict(raw),
        Pod(namespace=namespace),
        seed=False,
    )
    if expect.load.vault_namespace:
        _vault_namespace(setup, expect.load.vault_namespace)
    try:
        setup.prepare()
    except (InvalidSPC, Unavailable) as why:
        if expect.status == "mounts":
            raise AssertionError(f"{name}: the identity side cannot be set up: {why}") from None
    if expect.status != "mounts":
        files, refusal = mount(d, name, setup)
        assert refusal is not None, f"{name}: {expect.status}, but the daemon mounted {sorted(files)}"
        assert re.search(expect.refusal, refusal), f"{name}: refusal {refusal!r} lacks {expect.refusal!r}"
        assert any(re.search(expect.refusal, e) for e in errors), (
            f"{name}: lint does not say {expect.refusal!r}"
        )
        return
    pod = None
    if node:
        setup.secrets.clear()  # the peer's node-identity SPCs come with no node-publish secret
        spec = make_pod(kube, namespace=namespace, name=f"{namespace}-peer")
        pod = driver_pod(spec, kube.mint(spec))
    pg = request.getfixturevalue("peer_postgres") if expect.load.vault_database else None
    if pg is not None:
        _load_database(setup, pg)
    loaded = Loaded()
    if "secretPath" in str(raw.get("objects", "")):
        _load_vault(setup, expect.load)
    _load_aws(setup, expect.load)
    _load_azure(setup, expect.load, loaded)
    _load_gcp(setup, expect.load)
    assert not errors, f"{name}: lint errors:\n" + "\n".join(errors)
    files, refusal = mount(d, name, setup, pod)
    assert refusal is None, f"{name}: refused: {refusal}"
    assert sorted(files) == sorted(expect.files), f"{name}: files {sorted(files)} != {sorted(expect.files)}"
    for file, want in expect.files.items():
        check(file, files[file][1], want, loaded)
    for file, mode in expect.modes.items():
        assert files[file][0] == mode, f"{file}: mode {oct(files[file][0])} != {oct(mode)}"
    if pg is not None:  # as the peer's test: the issued user logs in
        user, password = files["dbUsername"][1].decode(), files["dbPassword"][1].decode()
        out = pg.psql(user, password, "select current_user")
        assert out.returncode == 0 and out.stdout.strip() == user, out.stderr


def test_every_expectation_names_a_peer_file():
    keys = {key for _, _, key in corpus()}
    assert keys, f"no peer SPCs under {PEERS}"
    assert set(EXPECTED) <= keys, f"entries for files that are gone: {sorted(set(EXPECTED) - keys)}"
    assert keys <= set(EXPECTED), f"peer SPCs without an entry: {sorted(keys - set(EXPECTED))}"


def status(expect: Expect) -> str:
    if expect.status == "meant_to_fail":
        return "meant to fail: refused"
    if expect.status == "refused":
        return "refused: literal placeholder"
    if expect.missing:
        return "strict xfail: differs from the peer"
    return "mounts, expected contents"


def render_table() -> str:
    lines = [
        "# Peer SPC files: what keygate does with each",
        "",
        "Generated from `tests/peer_expectations.py` and checked by `tests/test_peer_files.py`",
        "(`test_peer_table_is_current`): every SecretProviderClass the Vault, AWS, Azure and GCP",
        "providers and the Secrets Store CSI Driver ship in their examples and end-to-end tests",
        "(`shared/peers/spc/*/keygate/`, only `provider:` changed), mounted through a real keygate",
        "daemon against OpenBao, moto and the Azure/GCP fakes loaded as the peer's own test setup",
        "loads its backend, and compared with the files the peer's tests expect. Regenerate with",
        "`python -m tests.test_peer_files > docs/migration/peer-files.md`.",
        "",
    ]
    counts: dict[str, int] = {}
    rows = []
    for _, _, key in corpus():
        expect = EXPECTED[key]
        state = status(expect)
        counts[state] = counts.get(state, 0) + 1
        peer, file, name, namespace = key
        spc = name if namespace == "default" else f"{namespace}/{name}"
        if expect.status == "mounts":
            files = (
                ", ".join(f"`{f}`" for f in sorted(expect.files))
                if len(expect.files) <= 6
                else (f"{len(expect.files)} files")
            )
            note = files if not expect.missing else f"{files}; waits for {expect.missing}"
        else:
            note = f"refusal matches `{expect.refusal}`"
        rows.append(f"| {peer} | `{file}` | `{spc}` | {state} | {note} | {expect.source} |")
    lines.append("| Status | SPCs |")
    lines.append("|---|---|")
    for state in sorted(counts):
        lines.append(f"| {state} | {counts[state]} |")
    lines += [
        "",
        "| Peer | File | SPC | Status | Files / refusal | Facts from |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)


def test_peer_table_is_current():
    assert TABLE.read_text() == render_table(), (
        "docs/migration/peer-files.md is stale: python -m tests.test_peer_files > docs/migration/peer-files.md"
    )


if __name__ == "__main__":
    print(render_table(), end="")

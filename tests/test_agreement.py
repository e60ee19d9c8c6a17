"""``keygate lint`` and the daemon agree on every SPC file we have: a real Mount succeeds exactly
when lint reports no error.

The corpus is the repository's example SPCs (``daemonset/examples``) and the peer providers'
SPCs converted to keygate (``../shared/peers/spc/*/keygate``; override with
``KEYGATE_PEER_SPC``). Each SPC is linted from its file, then mounted through a real daemon
against the local servers: OpenBao, moto, and the Azure and GCP fakes speaking the real wire
protocol. What a file names but cannot exist here is provided, never the SPC's meaning changed:

* the secrets it lists are created in the local servers (with a value matching its
  ``secretKey``, ``jmesPath`` or ``extract*Key``), and the Vault roles it names are created;
* server addresses are the local ones: ``vaultAddress`` becomes the local OpenBao (the node's
  trust store is the local CA: ``vaultCACertPath``; OpenBao here has no mTLS, so client
  certificate paths are dropped), cloud endpoints come from daemon settings;
* the pod carries the tokens the CSIDriver would request, the service account's IAM role is
  resolved as the EKS annotation would (or, with ``usePodIdentity``, by the node's EKS Pod
  Identity Agent: the stand-in of tests/aws_pod_identity_agent.py, with an association for the
  pod's service account), and an SPC without an identity gets the node publish secret a user
  would reference.

A file that lint passes but that needs what no local server offers (a database engine, a Vault
namespace, a pinned version id, an ARN chosen by AWS, a value sealed for another key) is skipped
with that reason; a file lint refuses must be refused by the daemon too, with no such help.
The peer files among those are mounted anyway by tests/test_peer_files.py, which loads the
servers as each peer's own tests do (database engine, namespace, ARNs, Parameter Manager) and
compares the files with the peer tests' expectations.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import grpc
import hvac
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from keygate_dev.driver_client import Pod, mount_request
from provider import spc as spc_mod
from provider.errors import InvalidSPC
from provider.lint import Linter
from providers.registry import Registry
from providers.vault.params import secret_path
from tests import test_aws, test_gcp
from tests.aws_pod_identity_agent import AUDIENCE as POD_IDENTITY_AUDIENCE
from tests.aws_pod_identity_agent import AgentState, RunningAgent, running_agent
from tests.azure_fake import ConnectProxy, FakeAzure, TestCA, make_cert
from tests.azure_fake import pod_token as azure_pod_token
from tests.gcp_fake import Cluster, FakeGoogleAuth, FakeParameterManager, FakeSecretManager, Principals
from tests.test_aws import moto_url, sa_token  # noqa: F401 - fixtures
from tests.vault_fixtures import ISSUER, Issuer, Vault, configure, start_bao

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(os.environ.get("KEYGATE_PEER_SPC", ROOT.parent / "shared" / "peers" / "spc"))
CORPUS = sorted((ROOT / "daemonset" / "examples").glob("*.yaml")) + sorted(PEERS.glob("*/keygate/*.yaml"))

AZ_TENANT = "tid"
AZ_SP = "99999999-8888-7777-6666-555555555555"
AZ_SP_SECRET = "sp-agreement-secret-0123456789"
AZ_ISSUER = "https://oidc.cluster.test/issuer"
AZ_AUDIENCE = "api://AzureADTokenExchange"
AWS_AUDIENCE = "sts.amazonaws.com"
VAULT_POLICY = (
    'path "secret/data/*" { capabilities = ["read"] }\npath "pki/issue/*" { capabilities = ["update"] }\n'
    'path "database/creds/*" { capabilities = ["read"] }\n'
)
SIMPLE_JMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def encoded(encoding: str) -> str:
    """A sample value stored the way the SPC's ``encoding`` says it is stored."""
    raw = b"agreement-value"
    return {"base64": base64.b64encode(raw).decode(), "hex": raw.hex()}.get(encoding.lower(), raw.decode())


def spc_documents(path: Path) -> list[dict[str, Any]]:
    return [
        d
        for d in yaml.safe_load_all(path.read_text())
        if isinstance(d, dict) and d.get("kind") == "SecretProviderClass"
    ]


@dataclass
class Azure:
    fake: FakeAzure
    proxy: ConnectProxy
    ca: TestCA
    key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def azure_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    """One fake Key Vault for the module (the SDK caches a vault host's challenge process-wide)."""
    ca = TestCA(tmp_path_factory.mktemp("az"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake = FakeAzure(ca, key.public_key(), AZ_TENANT).start()
    fake.client_secrets[AZ_SP] = AZ_SP_SECRET
    proxy = ConnectProxy(fake.port).start()
    try:
        yield Azure(fake, proxy, ca, key)
    finally:
        proxy.stop()
        fake.stop()


@pytest.fixture(scope="module")
def vault_env() -> Iterator[Vault]:
    """An OpenBao of this module's own: the SPCs name auth mounts (``kubernetes``) that other
    tests configure differently. With no Kubernetes API here, every auth mount is the ``jwt``
    method checking the same issuer key, as the API server would."""
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = start_bao()
    try:
        configure(server, issuer)
        root = server.root()
        root.sys.enable_auth_method("jwt", path="kubernetes")
        root.write("auth/kubernetes/config", jwt_validation_pubkeys=[issuer.public_pem], bound_issuer=ISSUER)
        yield Vault(server, issuer)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcp_env() -> Iterator[test_gcp.GCP]:
    principals, cluster = Principals(), Cluster()
    auth = FakeGoogleAuth(principals, cluster, test_gcp.AUDIENCE, {test_gcp.POOL})
    with (
        FakeSecretManager(principals, "global") as sm,
        FakeSecretManager(principals, "regional") as regional,
        FakeParameterManager(principals, "global", secrets=sm) as pm,
        FakeParameterManager(principals, "regional", secrets=regional) as pm_regional,
        auth,
    ):
        servers = {"pm": pm, "pm_regional": pm_regional}
        known = {f.name for f in dataclasses.fields(test_gcp.GCP)}
        env = test_gcp.GCP(
            sm, regional, auth, principals, cluster, **{k: v for k, v in servers.items() if k in known}
        )
        env.pm, env.pm_regional = pm, pm_regional
        yield env


def gcp_settings(env: test_gcp.GCP) -> dict[str, Any]:
    """The daemon's gcp settings: Secret Manager and Parameter Manager at the local fakes."""
    return env.settings(
        parameter_endpoint=env.pm.address, parameter_regional_endpoint=env.pm_regional.address
    )


@pytest.fixture(scope="module")
def pod_identity_agent(vault_env: Vault, moto_url: str) -> Iterator[RunningAgent]:  # noqa: F811
    """The node's EKS Pod Identity Agent: checks pod tokens from the test issuer, assumes the
    association's role at moto (associations are added per SPC)."""
    state = AgentState(
        issuer=ISSUER,
        public_key=vault_env.issuer.key.public_key(),
        sts_url=moto_url,
        access_key=("testing", "testing"),
        associations={},
    )
    with running_agent(state) as agent:
        yield agent


class Unavailable(Exception):
    """The SPC needs something no local server can provide."""


@dataclass
class Setup:
    """What one Mount gets besides the SPC: adapted addresses, tokens, node secret, seeded data."""

    vault: Vault
    moto: str
    azure: Azure
    gcp: test_gcp.GCP
    aws_token: str
    agent: RunningAgent
    parameters: dict[str, str]
    pod: Pod
    tokens: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    seed: bool = True
    """False: only the identity side (roles, tokens, addresses, grants); the caller loads the
    values itself (tests/test_peer_files.py loads them as each peer's own test setup does)."""

    def prepare(self) -> None:
        params = self.parameters
        registry = Registry({})
        default = params.get("backend") or registry.infer_for_spc(params)
        for implied, item in spc_mod.raw_items(params):
            backend = item.get("backend") or implied or registry.infer_for_object(item) or default
            getattr(self, f"_{backend}")(item)

    # --- per backend ---

    def _sealed(self, item: dict[str, Any]) -> None:
        raise Unavailable("the sealed values are sealed for the example's key, not this node's")

    def _vault(self, item: dict[str, Any]) -> None:
        params = self.parameters
        namespace = params.get("vaultNamespace", "")
        if namespace and self.seed:
            raise Unavailable("needs a Vault namespace (tests/test_peer_files.py sets one up)")
        if params.get("vaultAddress"):
            params["vaultAddress"] = self.vault.address
        params["vaultCACertPath"] = self.vault.ca_file
        params.pop("vaultTLSClientCertPath", None)
        params.pop("vaultTLSClientKeyPath", None)
        audience = params.get("audience") or "vault"
        mount = (
            params.get("vaultAuthMountPath") or params.get("vaultKubernetesMountPath") or "kubernetes"
        ).strip("/")
        root = self.vault.root()
        if namespace:
            root = hvac.Client(url=root.url, token=root.token, verify=self.vault.ca_file, namespace=namespace)
        root.sys.create_or_update_policy("agreement", VAULT_POLICY)
        root.write(
            f"auth/{mount.removeprefix('auth/')}/role/{params.get('roleName', 'none')}",
            role_type="jwt",
            bound_audiences=[audience],
            user_claim="sub",
            bound_subject=f"system:serviceaccount:{self.pod.namespace}:app",
            token_policies=["agreement"],
            token_ttl="1h",
        )
        self.tokens[audience] = self.vault.issuer.mint(self.pod, audience)
        if not self.seed:
            return
        path = secret_path(str(item.get("secretPath", "")))
        if path.startswith("secret/data/"):
            name = path[len("secret/data/") :]
            key = str(item.get("secretKey") or "value")
            value = encoded(str(item.get("encoding") or "utf-8"))
            current: dict[str, str] = {}
            try:
                current = root.secrets.kv.v2.read_secret_version(name, mount_point="secret")["data"]["data"]
            except Exception:
                current = {}
            root.secrets.kv.v2.create_or_update_secret(name, {**current, key: value}, mount_point="secret")
        elif path.startswith("pki/issue/"):
            role = {
                "allowed_domains": ["example.com"],
                "allow_subdomains": True,
                "ttl": "1h",
                "key_type": "ec",
            }
            root.write(f"pki/roles/{path.rsplit('/', 1)[-1]}", **role)
        else:
            raise Unavailable(
                f"needs the Vault engine at {path.split('/')[0]!r} (tests/test_peer_files.py sets it up)"
            )

    def _aws(self, item: dict[str, Any]) -> None:
        if str(self.parameters.get("usePodIdentity", "")).strip().lower() == "true":
            associations = self.agent.state.associations
            assert isinstance(associations, dict)
            associations[(self.pod.namespace, self.pod.service_account)] = test_aws.ROLE
            self.tokens[POD_IDENTITY_AUDIENCE] = self.vault.issuer.mint(self.pod, POD_IDENTITY_AUDIENCE)
        self.tokens[AWS_AUDIENCE] = self.aws_token  # for the default pod; AWS checks only the role trust
        if not self.seed:
            return
        region = self.parameters.get("region") or test_aws.REGION
        self._aws_object(item, region)
        failover = item.get("failoverObject")
        if isinstance(failover, dict) and self.parameters.get("failoverRegion"):
            self._aws_object({**item, **failover}, self.parameters["failoverRegion"])

    def _aws_object(self, item: dict[str, Any], region: str) -> None:
        name = str(item.get("objectName", ""))
        if name.startswith("arn:"):
            raise Unavailable("names a secret by ARN, which AWS (and moto) chooses")
        if item.get("objectVersion") or item.get("objectVersionLabel"):
            raise Unavailable("pins a version id, which AWS (and moto) chooses")
        document: dict[str, Any] = {}
        for entry in item.get("jmesPath") or []:
            path = str(entry.get("path", "")) if isinstance(entry, dict) else ""
            if not SIMPLE_JMES.fullmatch(path):
                raise Unavailable(f"jmesPath {path!r} is not a plain key path to build a value for")
            node = document
            *parents, last = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = "agreement-value"
        value = json.dumps(document) if document else "agreement-value"
        kind = str(item.get("objectType", "")).lower()
        client = boto3.client(
            "ssm" if kind == "ssmparameter" else "secretsmanager",
            endpoint_url=self.moto,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        if kind == "ssmparameter":
            client.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
        else:
            try:
                client.create_secret(Name=name, SecretString=value)
            except client.exceptions.ResourceExistsException:
                client.put_secret_value(SecretId=name, SecretString=value)

    def _azure(self, item: dict[str, Any]) -> None:
        fake, params = self.azure.fake, self.parameters
        vault = str(params.get("keyvaultName", "")).lower()
        fake.tenant = str(params.get("tenantId") or params.get("tenantID") or "")
        client = params.get("clientID")
        if client:
            fake.federate(client, AZ_ISSUER, f"system:serviceaccount:{self.pod.namespace}:app", AZ_AUDIENCE)
            fake.grant(client, vault)
            self.tokens[AZ_AUDIENCE] = azure_pod_token(
                self.azure.key, AZ_ISSUER, AZ_AUDIENCE, namespace=self.pod.namespace
            )
        else:
            fake.grant(AZ_SP, vault)
            self.secrets.update({"clientid": AZ_SP, "clientsecret": AZ_SP_SECRET})
        if not self.seed:
            return
        if item.get("objectVersion"):
            raise Unavailable("pins a Key Vault version id, which Key Vault chooses")
        name, kind = str(item.get("objectName", "")), str(item.get("objectType", "")).lower()
        text = encoded(str(item.get("objectEncoding") or "utf-8"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "key":
            self.azure.fake.add_key(vault, name, key.public_key())
        elif kind == "cert":
            self.azure.fake.add_certificate(vault, name, make_cert(name, key, None, key, ca=True))
        else:
            self.azure.fake.add_secret(vault, name, text)

    def _gcp(self, item: dict[str, Any]) -> None:
        self.tokens[test_gcp.POOL] = self.gcp.cluster.pod_token(test_gcp.POOL, namespace=self.pod.namespace)
        if not self.seed:
            return
        name = str(item.get("resourceName") or item.get("objectName") or "")
        match = re.fullmatch(r"(projects/[^/]+/(?:locations/([^/]+)/)?secrets/[^/]+)/versions/([^/]+)", name)
        if not match:
            raise Unavailable(f"{name!r} is not a Secret Manager version")
        secret, location, version = match.groups()
        if not (version == "latest" or version.isdigit()):
            raise Unavailable(f"version alias {version!r} is not set up locally")
        value: bytes = b"agreement-value"
        if item.get("extractJSONKey"):
            value = json.dumps({item["extractJSONKey"]: "agreement-value"}).encode()
        elif item.get("extractYAMLKey"):
            value = yaml.safe_dump({item["extractYAMLKey"]: "agreement-value"}).encode()
        server = self.gcp.regional if location and location != "global" else self.gcp.sm
        count = 1 if version == "latest" else int(version)
        server.versions.pop(secret, None)
        server.add(secret, *([value] * count), grant=(f"ns/{self.pod.namespace}/sa/app",))


async def _role(pod: Any) -> str:
    return test_aws.ROLE


def lint_errors(path: Path, name: str, severity: str = "error") -> list[str]:
    report = Linter().run(str(path))
    return [
        p.render()
        for p in report.problems
        if p.severity == severity and p.context.split(",")[0] == f"SecretProviderClass {name}"
    ]


NODE_GRANT = re.compile(r"nodeIdentity: \[(azure|gcp)\]")


def mount(d: Any, name: str, setup: Setup) -> str | None:
    """None when the Mount succeeded, else the daemon's refusal."""
    pod = Pod(namespace=setup.pod.namespace, tokens=setup.tokens)
    try:
        d.client.mount(mount_request(name, setup.parameters, pod, secrets=setup.secrets))
    except grpc.RpcError as exc:
        return str(exc.details())
    return None


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_lint_and_the_daemon_agree(
    path,
    start_daemon,
    vault_env,
    moto_url,  # noqa: F811
    sa_token,  # noqa: F811
    azure_env,
    gcp_env,
    pod_identity_agent,
):
    docs = spc_documents(path)
    assert docs, f"{path}: no SecretProviderClass"
    d = start_daemon(
        backends={
            "vault": {"address": vault_env.address},
            "aws": {
                "endpoint_url": moto_url,
                "region": test_aws.REGION,
                "role_resolver": _role,
                "pod_identity_endpoint_ipv4": pod_identity_agent.url,
            },
            "azure": {"ca_bundle": str(azure_env.ca.ca_path), "proxy": azure_env.proxy.url},
            "gcp": gcp_settings(gcp_env),
        }
    )
    for doc in docs:
        name = doc["metadata"]["name"]
        raw = (doc.get("spec") or {}).get("parameters") or {}
        errors = lint_errors(path, name)
        if not all(isinstance(v, str) for v in raw.values()):
            assert errors, f"{path} {name}: a non-string parameter never reaches the daemon; lint must say so"
            continue
        namespace = doc["metadata"].get("namespace") or "default"
        setup = Setup(
            vault_env,
            moto_url,
            azure_env,
            gcp_env,
            sa_token,
            pod_identity_agent,
            dict(raw),
            Pod(namespace=namespace),
        )
        try:
            setup.prepare()
        except InvalidSPC:
            pass  # the object list does not parse: nothing to create, the daemon must refuse it
        except Unavailable as why:
            if not errors:
                pytest.skip(f"{name}: {why}")
        refusal = mount(d, name, setup)
        if errors:
            assert refusal is not None, (
                f"{path} {name}: lint reports errors the daemon does not:\n" + "\n".join(errors)
            )
        elif refusal and NODE_GRANT.search(refusal):
            # Node identity needs a release-policy grant this daemon lacks (test_peer_files
            # mounts these with one): lint must warn of the same grant.
            grant = NODE_GRANT.search(refusal)
            assert grant and any(grant[0] in w for w in lint_errors(path, name, "warning")), (
                f"{path} {name}: the daemon asks for {grant and grant[0]}, lint does not warn of it: {refusal}"
            )
        else:
            assert refusal is None, f"{path} {name}: lint passes it, the daemon refuses: {refusal}"

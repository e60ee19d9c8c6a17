"""What each peer SPC mounts, as the peer's own end-to-end tests load and check it.

One entry per SecretProviderClass in ``../shared/peers/spc/*/keygate/`` (keyed by peer, file,
SPC name and namespace). ``source`` names the peer test file the facts come from: the values its
setup writes into the backend (``load``) and the files and contents it asserts (``files``). Where
a peer ships an example without a test, the file names follow the peer's documented naming
(``objectAlias``, else ``objectName``; GCP ``path``/``fileName``) and the contents are what the
entry loads; ``source`` says so. Facts only: nothing here is copied from those projects.

``status`` is one of ``mounts`` (expected files, byte for byte or by ``Check``), ``meant_to_fail``
(the issue's four: broken on purpose, literal placeholders, AAD Pod Identity; keygate must refuse
it with a message matching ``refusal``) or ``refused`` (another value keygate cannot use, such
as a literal placeholder client id, refused with ``refusal``).
``missing`` names what a ``mounts`` file still waits for (a feature, or a keygate difference from
the peer): the test marks it ``xfail(strict=True)`` so it flips (and fails loudly) the day it lands.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

VAULT_BATS = "hashicorp/vault-csi-provider: test/bats/provider.bats"
DRIVER_VAULT = "kubernetes-sigs/secrets-store-csi-driver: test/bats/vault.bats"
DRIVER_AZURE = "kubernetes-sigs/secrets-store-csi-driver: test/bats/azure.bats"
DRIVER_GCP = "kubernetes-sigs/secrets-store-csi-driver: test/bats/gcp.bats"
DRIVER_AWS = "kubernetes-sigs/secrets-store-csi-driver: test/bats/aws.bats"
AWS_INTEG = "aws/secrets-store-csi-driver-provider-aws: tests/integration.bats.template"
GCP_SM = "GoogleCloudPlatform/secrets-store-csi-driver-provider-gcp: test/e2e/mount_secretmanager_test.go"
GCP_PM = "GoogleCloudPlatform/secrets-store-csi-driver-provider-gcp: test/e2e/mount_parametermanager_test.go"
EXAMPLE = "example without a peer test: file names by the peer's naming rule, contents as loaded here"


@dataclass(frozen=True)
class Check:
    """A content check where the bytes are not known in advance (issued certificates, keys)."""

    kind: str  # vault-pki | nonempty | azure-key | azure-cert | azure-pem-bundle
    arg: str = ""


@dataclass(frozen=True)
class Load:
    """Backend state the peer's setup creates before the mount."""

    vault_kv: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # "secret/kv1" -> data
    vault_namespace: str = ""
    # (service, region, name, value); region "" = the SPC's region
    aws: tuple[tuple[str, str, str, str], ...] = ()
    aws_node_region: str = ""  # the node's region where the SPC names none
    azure_secrets: Mapping[str, str] = field(default_factory=dict)
    azure_keys: tuple[str, ...] = ()
    azure_certs: tuple[str, ...] = ()  # certificate + its key + its PEM secret, as Key Vault keeps them
    azure_pfx: tuple[str, ...] = ()  # certificate whose secret is PKCS#12
    gcp: Mapping[str, bytes] = field(default_factory=dict)  # secret name (no version) -> latest
    gcp_parameters: Mapping[str, bytes] = field(default_factory=dict)  # version name -> rendered
    vault_database: bool = False  # the peer's setup_postgres: database engine, role test-role
    node_identity: str = ""  # azure | gcp: the SPC reads as the node (granted by release policy)


@dataclass(frozen=True)
class Expect:
    source: str
    status: str = "mounts"
    load: Load = field(default_factory=Load)
    files: Mapping[str, bytes | Check] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    refusal: str = ""
    missing: str = ""


def _b(**files: str) -> dict[str, bytes]:
    return {k: v.encode() for k, v in files.items()}


# --- hashicorp/vault-csi-provider ------------------------------------------------------------
# setup(): kv put secret/kv1 bar1=hello1, kv2 bar2=hello2, kv-sync1 bar1=hello-sync1,
# kv-sync2 bar2=hello-sync2, kv-sync3 bar3=aGVsbG8tc3luYzM= (base64 of hello-sync3),
# kv-custom-audience bar=hello-custom-audience; namespace acceptance: kv1-namespace
# greeting=hello-namespaces; pki/roles/example-dot-com allowed_domains=example.com, subdomains.
VAULT_KV = {
    "secret/kv1": {"bar1": "hello1"},
    "secret/kv2": {"bar2": "hello2"},
    "secret/kv-sync1": {"bar1": "hello-sync1"},
    "secret/kv-sync2": {"bar2": "hello-sync2"},
    "secret/kv-sync3": {"bar3": "aGVsbG8tc3luYzM="},
    "secret/kv-custom-audience": {"bar": "hello-custom-audience"},
}
PKI = Check("vault-pki", "test.example.com")

# --- secrets-store-csi-driver test/bats/vault.bats -------------------------------------------
# kv put secret/foo bar=hello, secret/foo1 bar1=hello1; rotation test: secret/rotation foo=start.
DRIVER_KV = {"secret/foo": {"bar": "hello"}, "secret/foo1": {"bar1": "hello1"}}
DRIVER_FOO = _b(bar="hello", bar1="hello1")

# --- AWS: values of the peer's setup (driver aws.bats setup_file, provider integration) ------
AWS_VALUES = {
    "ParameterStoreTest1": "ParameterStoreTest1Value",
    "ParameterStoreTestWithLongName": "ParameterStoreTest2Value",
    "ParameterStoreRotationTest": "BeforeRotation",
    "SecretsManagerRotationTest": "BeforeRotation",
    "SecretsManagerTest1": "SecretsManagerTest1Value",
    "SecretsManagerTest2": "SecretsManagerTest2Value",
    "SecretsManagerSync": "SecretUser",
}
SSM_JSON = '{"username": "ParameterStoreUser", "password": "PasswordForParameterStore"}'
SM_JSON = '{"username": "SecretsManagerUser", "password": "PasswordForSecretsManager"}'


def _aws_basic(suffix: str) -> Expect:
    """The AWS provider's BasicTestMountSPC (suffix '' or the template's '-x64-irsa')."""
    s = suffix
    ssm = ("ParameterStoreTest1", "ParameterStoreTestWithLongName", "ParameterStoreRotationTest")
    sm = ("SecretsManagerRotationTest", "SecretsManagerTest1", "SecretsManagerSync")
    # The peer's setup (tests/generate-test-files.py) creates every secret and parameter in both
    # the SPC's region and its failoverRegion, us-east-2: the provider reads both on every Mount.
    load = tuple(
        (service, region, name, value)
        for region in ("", "us-east-2")
        for service, name, value in (
            *(("ssm", f"{n}{s}", AWS_VALUES[n]) for n in ssm),
            *(("secretsmanager", f"{n}{s}", AWS_VALUES[n]) for n in sm),
            ("secretsmanager", f"SecretsManagerTest2{s}", AWS_VALUES["SecretsManagerTest2"]),
            ("ssm", f"jsonSsm{s}", SSM_JSON),
            ("secretsmanager", f"secretsManagerJson{s}", SM_JSON),
        )
    )
    files = {
        f"ParameterStoreTest1{s}": "ParameterStoreTest1Value",
        "ParameterStoreTest2": "ParameterStoreTest2Value",
        f"ParameterStoreRotationTest{s}": "BeforeRotation",
        f"SecretsManagerRotationTest{s}": "BeforeRotation",
        f"SecretsManagerTest1{s}": "SecretsManagerTest1Value",
        "SecretsManagerTest2": "SecretsManagerTest2Value",
        f"SecretsManagerSync{s}": "SecretUser",
        f"jsonSsm{s}": SSM_JSON,
        "ssmUsername": "ParameterStoreUser",
        "ssmPassword": "PasswordForParameterStore",
        f"secretsManagerJson{s}": SM_JSON,
        "secretsManagerUsername": "SecretsManagerUser",
        "secretsManagerPassword": "PasswordForSecretsManager",
    }
    return Expect(
        AWS_INTEG,
        load=Load(aws=load),
        files={k: v.encode() for k, v in files.items()},
    )


_DRIVER_AWS_NAMES = {
    "pm-test-1-name": ("ssm", "ParameterStoreTest1"),
    "pm-test-long-name": ("ssm", "ParameterStoreTestWithLongName"),
    "pm-rotation-test-name": ("ssm", "ParameterStoreRotationTest"),
    "sm-rot-test-name": ("secretsmanager", "SecretsManagerRotationTest"),
    "sm-test-1-name": ("secretsmanager", "SecretsManagerTest1"),
    "sm-test-2-name": ("secretsmanager", "SecretsManagerTest2"),
    "sm-sync-name": ("secretsmanager", "SecretsManagerSync"),
}
DRIVER_AWS_EXPECT = Expect(
    DRIVER_AWS,
    load=Load(
        aws=tuple((svc, "", name, AWS_VALUES[peer]) for name, (svc, peer) in _DRIVER_AWS_NAMES.items()),
        aws_node_region="us-west-2",
    ),
    files=_b(
        **{
            "pm-test-1-name": "ParameterStoreTest1Value",
            "ParameterStoreTest2": "ParameterStoreTest2Value",
            "pm-rotation-test-name": "BeforeRotation",
            "sm-rot-test-name": "BeforeRotation",
            "sm-test-1-name": "SecretsManagerTest1Value",
            "SecretsManagerTest2": "SecretsManagerTest2Value",
            "sm-sync-name": "SecretUser",
        }
    ),
)

# --- Azure -----------------------------------------------------------------------------------
# driver azure.bats: SECRET_NAME secret1 with SECRET_VALUE "test"; the file is secret1 or the
# objectAlias secretalias.
AZ_DRIVER = Load(azure_secrets={"secret1": "test"})
AZ_EXAMPLE_SK = Load(azure_secrets={"secret1": "secret1-value"}, azure_keys=("key1",))
AZ_EXAMPLE_SK_FILES: dict[str, bytes | Check] = {
    "secret1": b"secret1-value",
    "key1": Check("azure-key", "key1"),
}

# --- GCP Secret Manager suite: each secret's value is its own id; regional ones add -regional
GCP_G = "projects/my-project/secrets/"
GCP_R = "projects/my-project/locations/us-central1/secrets/"
GCP_TESTSECRET = {f"{GCP_G}testsecret": b"testsecret", f"{GCP_R}testsecret": b"testsecret-regional"}

# --- GCP Parameter Manager suite: rendered payloads (__REF__ already resolved by the service)
_PM_G = "projects/my-project/locations/global/parameters/"
_PM_R = "projects/my-project/locations/us-central1/parameters/"
G1, G2 = "pmReferenceGlobalSecret1-global-s3cr3t1", "pmReferenceGlobalSecret2-global-s3cr3tReplica2"
R1, R2 = "pmReferenceRegionalSecret1-regional-s3cr3t1", "pmReferenceRegionalSecret2-regional-s3cr3tReplica2"
PM_YAML = f"user: admin\nuser2: support\ndb_pwd: {G1}\nbackup_pwd: {G2}"
PM_JSON = json.dumps({"user": "admin", "user2": "support", "db_pwd": G1, "backup_pwd": G2}, indent="\t")
RPM_YAML = f"user: admin\nuser2: support\ndb_regional_pwd: {R1}\nbackup_regional_pwd: {R2}"
RPM_JSON = json.dumps(
    {"user": "admin", "user2": "support", "db_regional_pwd": R1, "backup_regional_pwd": R2}, indent="\t"
)
PM_LOAD = Load(
    gcp_parameters={
        f"{_PM_G}param-yaml/versions/v-yaml": PM_YAML.encode(),
        f"{_PM_G}param-json/versions/v-json": PM_JSON.encode(),
        f"{_PM_R}rparam-yaml/versions/rv-yaml": RPM_YAML.encode(),
        f"{_PM_R}rparam-json/versions/rv-json": RPM_JSON.encode(),
    }
)
PM_FILES = {
    "param-yaml/global/v-yaml": PM_YAML.encode(),
    "param-json/global/v-json": PM_JSON.encode(),
    "rparam-yaml/us-central1/rv-yaml": RPM_YAML.encode(),
    "rparam-json/us-central1/rv-json": RPM_JSON.encode(),
}

EXPECTED: dict[tuple[str, str, str, str], Expect] = {
    # ---- vault (hashicorp/vault-csi-provider test/bats/configs) ----
    ("vault", "test__bats__configs__vault-all-secretproviderclass.yaml", "vault-all", "default"): Expect(
        VAULT_BATS,
        load=Load(vault_kv=VAULT_KV, vault_database=True),
        files={
            "dbUsername": Check("nonempty"),
            "dbPassword": Check("nonempty"),
            "certs": PKI,
            "secret-1": b"hello1",
        },
    ),
    ("vault", "test__bats__configs__vault-db-secretproviderclass.yaml", "vault-db", "default"): Expect(
        VAULT_BATS,
        load=Load(vault_database=True),
        files={"dbUsername": Check("nonempty"), "dbPassword": Check("nonempty")},
    ),
    (
        "vault",
        "test__bats__configs__vault-kv-custom-audience-secretproviderclass.yaml",
        "vault-kv-custom-audience",
        "default",
    ): Expect(VAULT_BATS, load=Load(vault_kv=VAULT_KV), files=_b(secret="hello-custom-audience")),
    (
        "vault",
        "test__bats__configs__vault-kv-namespace-secretproviderclass.yaml",
        "vault-kv-namespace",
        "default",
    ): Expect(
        VAULT_BATS,
        load=Load(
            vault_kv={"secret/kv1-namespace": {"greeting": "hello-namespaces"}}, vault_namespace="acceptance"
        ),
        files={"secret-1": b"hello-namespaces"},
    ),
    (
        "vault",
        "test__bats__configs__vault-kv-secretproviderclass-jwt-auth.yaml",
        "vault-kv-jwt-auth",
        "default",
    ): Expect(
        VAULT_BATS, load=Load(vault_kv=VAULT_KV), files={"secret-1": b"hello1"}, modes={"secret-1": 0o644}
    ),
    ("vault", "test__bats__configs__vault-kv-secretproviderclass.yaml", "vault-kv", "default"): Expect(
        VAULT_BATS,
        load=Load(vault_kv=VAULT_KV),
        files={"secret-1": b"hello1", "secret-2": b"hello2"},
        modes={"secret-1": 0o624},
    ),
    (
        "vault",
        "test__bats__configs__vault-kv-sync-multiple-secretproviderclass.yaml",
        "vault-kv-sync-1",
        "default",
    ): Expect(VAULT_BATS, load=Load(vault_kv=VAULT_KV), files={"secret-1": b"hello-sync1"}),
    (
        "vault",
        "test__bats__configs__vault-kv-sync-multiple-secretproviderclass.yaml",
        "vault-kv-sync-2",
        "default",
    ): Expect(VAULT_BATS, load=Load(vault_kv=VAULT_KV), files={"secret-2": b"hello-sync2"}),
    (
        "vault",
        "test__bats__configs__vault-kv-sync-secretproviderclass.yaml",
        "vault-kv-sync",
        "default",
    ): Expect(
        VAULT_BATS,
        load=Load(vault_kv=VAULT_KV),
        files=_b(**{"secret-1": "hello-sync1", "secret-2": "hello-sync2", "secret-3": "hello-sync3"}),
    ),
    ("vault", "test__bats__configs__vault-pki-secretproviderclass.yaml", "vault-pki", "default"): Expect(
        VAULT_BATS, files={"certs": PKI}
    ),
    # ---- driver (kubernetes-sigs/secrets-store-csi-driver test/bats/tests) ----
    (
        "driver",
        "test__bats__tests__aws__BasicTestMountSPC.yaml",
        "basic-test-mount-spc",
        "default",
    ): DRIVER_AWS_EXPECT,
    (
        "driver",
        "test__bats__tests__azure__azure_synck8s_v1_secretproviderclass.yaml",
        "azure-sync",
        "default",
    ): Expect(DRIVER_AZURE, load=AZ_DRIVER, files={"secretalias": b"test"}),
    (
        "driver",
        "test__bats__tests__azure__azure_v1_multiple_secretproviderclass.yaml",
        "azure-spc-0",
        "default",
    ): Expect(DRIVER_AZURE, load=AZ_DRIVER, files={"secretalias": b"test"}),
    (
        "driver",
        "test__bats__tests__azure__azure_v1_multiple_secretproviderclass.yaml",
        "azure-spc-1",
        "default",
    ): Expect(DRIVER_AZURE, load=AZ_DRIVER, files={"secretalias": b"test"}),
    ("driver", "test__bats__tests__azure__azure_v1_secretproviderclass.yaml", "azure", "default"): Expect(
        DRIVER_AZURE, load=AZ_DRIVER, files={"secret1": b"test"}
    ),
    (
        "driver",
        "test__bats__tests__azure__azure_v1_secretproviderclass_ns.yaml",
        "azure-sync",
        "default",
    ): Expect(DRIVER_AZURE, load=AZ_DRIVER, files={"secretalias": b"test"}),
    (
        "driver",
        "test__bats__tests__azure__azure_v1_secretproviderclass_ns.yaml",
        "azure-sync",
        "test-ns",
    ): Expect(DRIVER_AZURE, load=AZ_DRIVER, files={"secretalias": b"test"}),
    ("driver", "test__bats__tests__gcp__gcp_v1_secretproviderclass.yaml", "gcp", "default"): Expect(
        DRIVER_GCP,
        load=Load(gcp={f"{GCP_G}testsecret": b"aHVudGVyMg=="}, node_identity="gcp"),
        files={"testsecret": b"aHVudGVyMg=="},
    ),
    ("driver", "test__bats__tests__vault__pod-vault-rotation.yaml", "vault-rotation", "default"): Expect(
        DRIVER_VAULT, load=Load(vault_kv={"secret/rotation": {"foo": "start"}}), files={"foo": b"start"}
    ),
    (
        "driver",
        "test__bats__tests__vault__vault_synck8s_v1_secretproviderclass.yaml",
        "vault-foo-sync",
        "default",
    ): Expect(DRIVER_VAULT, load=Load(vault_kv=DRIVER_KV), files={**DRIVER_FOO, "nested/bar": b"hello"}),
    (
        "driver",
        "test__bats__tests__vault__vault_v1_multiple_secretproviderclass.yaml",
        "vault-foo-sync-0",
        "default",
    ): Expect(DRIVER_VAULT, load=Load(vault_kv=DRIVER_KV), files=DRIVER_FOO),
    (
        "driver",
        "test__bats__tests__vault__vault_v1_multiple_secretproviderclass.yaml",
        "vault-foo-sync-1",
        "default",
    ): Expect(DRIVER_VAULT, load=Load(vault_kv=DRIVER_KV), files=DRIVER_FOO),
    ("driver", "test__bats__tests__vault__vault_v1_secretproviderclass.yaml", "vault-foo", "default"): Expect(
        DRIVER_VAULT, load=Load(vault_kv=DRIVER_KV), files=DRIVER_FOO
    ),
    (
        "driver",
        "test__bats__tests__vault__vault_v1_secretproviderclass_ns.yaml",
        "vault-foo-sync",
        "default",
    ): Expect(DRIVER_VAULT, load=Load(vault_kv=DRIVER_KV), files=DRIVER_FOO),
    (
        "driver",
        "test__bats__tests__vault__vault_v1_secretproviderclass_ns.yaml",
        "vault-foo-sync",
        "test-ns",
    ): Expect(DRIVER_VAULT, load=Load(vault_kv=DRIVER_KV), files=DRIVER_FOO),
    # ---- aws (aws/secrets-store-csi-driver-provider-aws) ----
    (
        "aws",
        "examples__ExampleSecretProviderClass-IRSA.yaml",
        "nginx-irsa-deployment-aws-secrets",
        "default",
    ): Expect(
        EXAMPLE,
        load=Load(aws=(("secretsmanager", "", "MySecret", "my-secret-value"),)),
        files={"MySecret": b"my-secret-value"},
    ),
    (
        "aws",
        "examples__ExampleSecretProviderClass-PodIdentity.yaml",
        "nginx-pod-identity-deployment-aws-secrets",
        "default",
    ): Expect(
        EXAMPLE,
        load=Load(aws=(("secretsmanager", "", "MySecret", "my-secret-value"),)),
        files={"MySecret": b"my-secret-value"},
    ),
    ("aws", "tests__BasicTestMountSPC.yaml", "basic-test-mount-spc", "default"): _aws_basic(""),
    ("aws", "tests__BasicTestMountSPC_template.yaml", "basic-test-mount-spc-x64-irsa", "default"): _aws_basic(
        "-x64-irsa"
    ),
    # ---- azure (Azure/secrets-store-csi-driver-provider-azure) ----
    (
        "azure",
        "examples__keyvault-certs__v1alpha1_secretproviderclass_certs.yaml",
        "azure-certs",
        "default",
    ): Expect(
        EXAMPLE,
        load=Load(azure_certs=("cert1",), azure_pfx=("cert2-pfx",)),
        files={
            "cert1": Check("azure-cert", "cert1"),
            "cert1-pub-key": Check("azure-key", "cert1"),
            "cert1-secret": Check("azure-pem-bundle", "cert1"),
            "cert2-secret-pfx": Check("azure-pfx-base64", "cert2-pfx"),
            "cert2-secret-pfx-binary": Check("azure-pfx", "cert2-pfx"),
        },
    ),
    (
        "azure",
        "examples__keyvault-keys__v1alpha1_secretproviderclass_keys.yaml",
        "azure-keys",
        "default",
    ): Expect(
        EXAMPLE,
        load=Load(azure_keys=("key1", "key2")),
        files={"key1": Check("azure-key", "key1"), "KEY_ALIAS": Check("azure-key", "key2")},
    ),
    (
        "azure",
        "examples__keyvault-secrets__v1alpha1_secretproviderclass_secrets.yaml",
        "azure-secrets",
        "default",
    ): Expect(EXAMPLE, status="meant_to_fail", refusal=r"objectEncoding must be utf-8, base64 or hex"),
    (
        "azure",
        "examples__pod-identity__v1alpha1_secretproviderclass_pod_identity.yaml",
        "azure-kvname-podid",
        "default",
    ): Expect(EXAMPLE, status="meant_to_fail", refusal=r"AAD Pod Identity is deprecated"),
    (
        "azure",
        "examples__service-principal__v1alpha1_secretproviderclass_service_principal.yaml",
        "azure-kvname",
        "default",
    ): Expect(EXAMPLE, load=AZ_EXAMPLE_SK, files=AZ_EXAMPLE_SK_FILES),
    (
        "azure",
        "examples__sync-as-kubernetes-secret__dockerconfigjson_synck8s_v1alpha1_secretproviderclass.yaml",
        "azure-docker-config",
        "default",
    ): Expect(
        EXAMPLE,
        load=Load(
            azure_secrets={"dockerconfigjson": '{"auths": {"registry.example": {"auth": "dXNlcjpwYXNz"}}}'}
        ),
        files={"dockerconfigjson": b'{"auths": {"registry.example": {"auth": "dXNlcjpwYXNz"}}}'},
    ),
    (
        "azure",
        "examples__sync-as-kubernetes-secret__synck8s_v1alpha1_secretproviderclass.yaml",
        "azure-sync",
        "default",
    ): Expect(EXAMPLE, status="meant_to_fail", refusal=r"objectVersion must be a Key Vault version id"),
    (
        "azure",
        "examples__sync-as-kubernetes-secret__tls_synck8s_v1alpha1_secretproviderclass.yaml",
        "azure-tls",
        "default",
    ): Expect(
        EXAMPLE,
        load=Load(azure_certs=("tls-cert",)),
        files={"tls-cert": Check("azure-pem-bundle", "tls-cert")},
    ),
    (
        "azure",
        "examples__system-assigned-managed-identity__v1alpha1_secretproviderclass_system_assigned_identity.yaml",
        "azure-kvname-system-msi",
        "default",
    ): Expect(EXAMPLE, load=replace(AZ_EXAMPLE_SK, node_identity="azure"), files=AZ_EXAMPLE_SK_FILES),
    (
        "azure",
        "examples__user-assigned-managed-identity__v1alpha1_secretproviderclass_user_assigned_identity.yaml",
        "azure-kvname-user-msi",
        "default",
    ): Expect(
        EXAMPLE,
        status="refused",
        refusal=r"userAssignedIdentityID' must be the managed identity's client id GUID",
    ),
    ("azure", "test__load__secret-provider-class-template.yaml", "load-spc", "default"): Expect(
        "Azure/secrets-store-csi-driver-provider-azure: test/load (no content check): contents as loaded here",
        load=Load(
            azure_secrets={"secret1": "secret1-value", "secret2": "secret2-value"}, node_identity="azure"
        ),
        files={"secret1": b"secret1-value", "secret2": b"secret2-value"},
    ),
    # ---- gcp (GoogleCloudPlatform/secrets-store-csi-driver-provider-gcp) ----
    ("gcp", "examples__app-parameters.yaml", "app-parameters", "default"): Expect(
        EXAMPLE,
        load=Load(gcp_parameters={f"{_PM_R}testparameter/versions/testversion": b"parameter-payload"}),
        files={"good1.txt": b"parameter-payload"},
    ),
    ("gcp", "examples__app-secrets-with-extract-key.yaml", "app-secrets-with-extract-key", "default"): Expect(
        EXAMPLE,
        load=Load(
            gcp={
                f"{GCP_G}testsecret": b'{"user":"admin", "password":"password@1234"}',
                f"{GCP_R}testsecret": b'{"user":"regional-admin"}',
            }
        ),
        files={"good1.txt": b"admin", "good2.txt": b"regional-admin"},
    ),
    ("gcp", "examples__app-secrets.yaml", "app-secrets", "default"): Expect(
        EXAMPLE,
        load=Load(gcp={f"{GCP_G}testsecret": b"testsecret"}),
        files={"good1.txt": b"testsecret", "good2.txt": b"testsecret"},
    ),
    ("gcp", "test__e2e__templates__load-many-secrets.yaml", "gcp-test-load-many-secrets", "default"): Expect(
        "GoogleCloudPlatform/secrets-store-csi-driver-provider-gcp: test/e2e load test (no content check): "
        "each secret holds its own id, as the Secret Manager suite loads testsecret",
        load=Load(gcp={f"{GCP_G}testsecret-{i}": f"testsecret-{i}".encode() for i in range(1, 51)}),
        files={f"secret-{i}": f"testsecret-{i}".encode() for i in range(1, 51)},
    ),
    ("gcp", "test__e2e__templates__load-one-secret.yaml", "gcp-test-load-one-secret", "default"): Expect(
        "GoogleCloudPlatform/secrets-store-csi-driver-provider-gcp: test/e2e load test (no content check): "
        "the secret holds its own id, as the Secret Manager suite loads it",
        load=Load(gcp={f"{GCP_G}testsecret": b"testsecret"}),
        files={"secret-01": b"testsecret"},
    ),
    ("gcp", "test__e2e__templates__test-extract-key.yaml", "gcp-test-secrets-extract", "default"): Expect(
        GCP_SM,
        load=Load(gcp={f"{GCP_G}testsecret-extract": b'{"user":"admin", "password":"password@1234"}'}),
        files={"extract": b"admin"},
    ),
    ("gcp", "test__e2e__templates__test-invalid.yaml", "gcp-test-secrets-invalid", "default"): Expect(
        GCP_SM, status="meant_to_fail", refusal=r"contains '\.\.'"
    ),
    ("gcp", "test__e2e__templates__test-mode.yaml", "gcp-test-secrets", "default"): Expect(
        GCP_SM,
        load=Load(gcp=GCP_TESTSECRET),
        files={"testsecret": b"testsecret", "testsecret-regional": b"testsecret-regional"},
        modes={"testsecret": 0o400, "testsecret-regional": 0o400},
    ),
    ("gcp", "test__e2e__templates__test-nested.yaml", "gcp-test-secrets-nested", "default"): Expect(
        GCP_SM, load=Load(gcp=GCP_TESTSECRET), files={"my/nested/path/testsecret": b"testsecret"}
    ),
    (
        "gcp",
        "test__e2e__templates__test-parameter-version-extract-keys.yaml",
        "gcp-test-parameter-version-keys",
        "default",
    ): Expect(
        GCP_PM,
        load=PM_LOAD,
        files=_b(
            **{
                "param-yaml/global/v-yaml": G1,
                "param-json/global/v-json": "admin",
                "rparam-yaml/us-central1/rv-yaml": "support",
                "rparam-json/us-central1/db_regional_pwd/rv-json": R1,
                "rparam-json/us-central1/backup_regional_pwd/rv-json": R2,
            }
        ),
    ),
    (
        "gcp",
        "test__e2e__templates__test-parameter-version-pod-mode.yaml",
        "gcp-test-parameter-version-mode",
        "default",
    ): Expect(
        GCP_PM,
        load=PM_LOAD,
        files=PM_FILES,
        modes={
            "param-yaml/global/v-yaml": 0o420,
            "param-json/global/v-json": 0o600,
            "rparam-yaml/us-central1/rv-yaml": 0o400,
            "rparam-json/us-central1/rv-json": 0o440,
        },
    ),
    (
        "gcp",
        "test__e2e__templates__test-parameter-version-pod.yaml",
        "gcp-test-parameter-version",
        "default",
    ): Expect(GCP_PM, load=PM_LOAD, files=PM_FILES),
    ("gcp", "test__e2e__templates__test-pod.yaml", "gcp-test-secrets", "default"): Expect(
        GCP_SM,
        load=Load(gcp=GCP_TESTSECRET),
        files={"testsecret": b"testsecret", "testsecret-regional": b"testsecret-regional"},
    ),
    ("gcp", "test__e2e__templates__test-rotate.yaml", "gcp-test-secrets-rotate", "default"): Expect(
        GCP_SM,
        load=Load(gcp={f"{GCP_G}testsecret-rotate": b"secreta", f"{GCP_R}testsecret-rotate": b"secreta"}),
        files={"rotate": b"secreta", "regional-rotate": b"secreta"},
    ),
    ("gcp", "test__e2e__templates__test-sync.yaml", "gcp-test-secrets-sync", "default"): Expect(
        GCP_SM, load=Load(gcp=GCP_TESTSECRET), files={"testsecret": b"testsecret"}
    ),
}


def pfx_base64(der: bytes) -> str:
    return base64.b64encode(der).decode()

"""The body of ``keygate demo``: the whole path, attestation included, with nothing to install or configure.

It makes a throw-away node key and seals two sample values for namespace ``demo``, starts an
in-process stand-in for the Kubernetes API (:mod:`keygate_dev.devcluster`: HTTPS with its own CA,
OIDC discovery + JWKS, Pod GET) that mints real RS256 pod-bound tokens, starts the daemon with
attestation ON against it, and sends driver-shaped Mounts: one from a digest-pinned pod (released),
one from a pod whose image is a tag (denied), one with a token stolen from another pod (denied).
It prints the SecretProviderClass it used and the audit records those mounts wrote, with the
audit file's path. Everything lives in a temporary directory removed at exit; ``keep`` copies the
SPC (lintable: ``keygate lint <dir>/spc.yaml``) and the audit file out first. File contents
are masked unless asked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import grpc

from keygate_dev.devcluster import PodSpec, pinned, running
from keygate_dev.driver_client import DriverClient, Pod, mount_request
from keygate_dev.embedded import daemon_thread
from provider.config import Config
from providers.sealed.envelope import generate_key, private_pem, seal

SAMPLES = {"db-password": b"correct horse battery staple", "api-token": b"tok_demo_0123456789"}
AUDIENCE = "keygate"
NODE = "demo-node"
DEMO_API_TOKEN = "demo-daemon-sa-token"  # noqa: S105 - the in-process API's bearer token, demo only


def _mask(value: bytes, show: bool) -> str:
    return value.decode("utf-8", "replace") if show else f"<{len(value)} bytes, masked>"


def _driver_pod(spec: PodSpec, token: str) -> Pod:
    return Pod(
        namespace=spec.namespace,
        name=spec.name,
        uid=spec.uid,
        service_account=spec.service_account,
        tokens={AUDIENCE: token},
    )


def spc_manifest(objects: str, *, short: bool = False) -> str:
    """The demo's SecretProviderClass as YAML; ``short`` elides the long sealed values for display."""
    lines = []
    for line in objects.splitlines():
        key, _, value = line.partition("sealed: ")
        if short and value:
            line = f"{key}sealed: {value[:24]}...({len(value)} chars)"
        lines.append("      " + line)
    return "\n".join(
        [
            "apiVersion: secrets-store.csi.x-k8s.io/v1",
            "kind: SecretProviderClass",
            "metadata:",
            "  name: demo-secrets",
            "  namespace: demo",
            "spec:",
            "  provider: keygate",
            "  parameters:",
            "    objects: |",
            *lines,
            "",
        ]
    )


def run_demo(show_values: bool = False, keep: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="keygate-demo-") as tmp_name:
        tmp = Path(tmp_name)
        key = generate_key()
        key_path = tmp / "node.key"
        key_path.write_bytes(private_pem(key))
        key_path.chmod(0o600)
        objects = "\n".join(
            [
                "- objectName: db-password",
                f"  sealed: {seal(SAMPLES['db-password'], 'demo', 'db-password', [key.public_key()])}",
                '  filePermission: "0400"',
                "- objectName: api-token",
                "  objectAlias: tokens/api",
                f"  sealed: {seal(SAMPLES['api-token'], 'demo', 'api-token', [key.public_key()])}",
            ]
        )
        with running(tmp, api_token=DEMO_API_TOKEN) as kube:
            web = kube.add_pod(
                PodSpec(
                    "demo",
                    "web-7d4b9",
                    "5b0c6f2e-1d4a-4e8b-9a61-0c2f3e4d5a6b",
                    "web",
                    {"web": pinned("ghcr.io/example/web", "v1.4.2")},
                    node_name=NODE,
                )
            )
            legacy = kube.add_pod(
                PodSpec(
                    "demo",
                    "legacy-5f6c",
                    "8e7d6c5b-4a39-4281-9f0e-d1c2b3a49586",
                    "web",
                    {"legacy": "nginx:1.27"},
                    node_name=NODE,
                )
            )
            audit_path = tmp / "audit.jsonl"
            config = Config(
                socket=str(tmp / "keygate.sock"),
                sealed_key=(str(key_path),),
                issuer=kube.issuer,
                kube_api_url=kube.url,
                kube_ca=str(kube.ca_file),
                kube_token_file=str(kube.token_file),
                node_name=NODE,
                audit_sink=str(audit_path),
                metrics_addr="",
            )
            print("keygate demo")
            print(f"  local Kubernetes API stand-in (in-process, HTTPS): {kube.url}")
            print("    serves OIDC discovery + JWKS (RS256 issuer key) and Pod GET; mints pod-bound tokens")
            print(
                f"  daemon on {config.socket}, attestation ON (issuer {kube.issuer}, audience {AUDIENCE!r})"
            )
            spc_path = tmp / "spc.yaml"
            spc_path.write_text(spc_manifest(objects))
            print(f"  audit file: {audit_path}" + ("" if keep else " (temporary: --keep DIR keeps a copy)"))
            print("\nSecretProviderClass used (sealed values shortened):")
            print("  " + spc_manifest(objects, short=True).rstrip("\n").replace("\n", "\n  "))
            with daemon_thread(config), DriverClient(config.socket) as client:
                version = client.version()
                print(f"\nVersion RPC: {version.runtime_name} {version.runtime_version}")

                print(f"\n1. pod demo/{web.name}, image {web.images['web'][:45]}... (pinned), own token")
                response = client.mount(
                    mount_request("demo-secrets", {"objects": objects}, _driver_pod(web, kube.mint(web)))
                )
                print(f"   RELEASED {len(response.files)} files:")
                for f in response.files:
                    print(f"     {f.path:<16} {oct(f.mode)[2:]:0>4}   {_mask(f.contents, show_values)}")
                for v in response.object_version:
                    print(f"     version {v.id:<20} {v.version}")

                print(f"\n2. pod demo/{legacy.name}, image {legacy.images['legacy']} (a tag), own token")
                denied = _expect_refusal(
                    client,
                    mount_request(
                        "demo-secrets", {"objects": objects}, _driver_pod(legacy, kube.mint(legacy))
                    ),
                )
                print(f"\n3. pod demo/{legacy.name} presenting the token of demo/{web.name}")
                denied += _expect_refusal(
                    client,
                    mount_request("demo-secrets", {"objects": objects}, _driver_pod(legacy, kube.mint(web))),
                )
                if denied != 2:
                    return 1
            print(f"\naudit records ({audit_path}; one JSON line per release or denial, never a value):")
            for line in audit_path.read_text().splitlines():
                print("  " + json.dumps(json.loads(line), separators=(", ", ": ")))
            if keep:
                out = Path(keep)
                out.mkdir(parents=True, exist_ok=True)
                for path in (spc_path, audit_path):
                    shutil.copyfile(path, out / path.name)
                print(f"\nkept {out / spc_path.name} and {out / audit_path.name}")
    return 0


def _expect_refusal(client: DriverClient, request: object) -> int:
    try:
        client.mount(request)  # type: ignore[arg-type]
    except grpc.RpcError as err:
        print(f"   DENIED {err.code().name}: {err.details()}")
        return 1
    print("   unexpectedly released")
    return 0

"""The body of ``keygate demo``: the whole path, attestation included, with nothing to install or configure.

It makes a throw-away node key and seals two sample values for namespace ``demo``, starts an
in-process stand-in for the Kubernetes API (:mod:`keygate_dev.devcluster`: HTTPS with its own CA,
OIDC discovery + JWKS, Pod GET) that mints real RS256 pod-bound tokens, and an in-process OCI
registry over HTTPS (:mod:`keygate_dev.oci_registry`) holding two images: one signed as
``cosign sign --key`` does with a throw-away key pair (:mod:`keygate_dev.signing`), one unsigned.
The daemon runs with attestation ON and a release policy that requires that key's signature.

Driver-shaped Mounts then show: the pod running the signed image released; the pod running the
unsigned one refused (``signature_missing``); a pod whose image is a tag refused; a token stolen
from another pod refused; and live revocation: the policy file is changed so the signed pod may no
longer have ``api-token``, and the driver's rotation Mount (``current_object_version`` = what the
pod holds) returns the rest, so the revoked file leaves the pod's volume. It prints the SPC and
policy it used and the audit records (shortened). Everything lives in a temporary directory
removed at exit; ``keep`` copies the SPC, the policy with its public key, and the audit file
out first (``keygate lint <dir>/spc.yaml --policy <dir>/policy.yaml``). Values are masked
unless asked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from keygate_dev.devcluster import DevCluster, PodSpec, running
from keygate_dev.driver_client import DriverClient, Pod, mount_request
from keygate_dev.embedded import daemon_thread
from keygate_dev.oci_registry import OCIRegistry, running_registry
from keygate_dev.signing import CosignKey, cosign_sign
from provider.config import Config
from provider.wire import service_pb2 as pb
from providers.sealed.envelope import generate_key, private_pem, seal

SAMPLES = {"db-password": b"correct horse battery staple", "api-token": b"tok_demo_0123456789"}
AUDIENCE = "keygate"
NODE = "demo-node"
DEMO_API_TOKEN = "demo-daemon-sa-token"  # noqa: S105 - the in-process API's bearer token, demo only
SIGNED_REPO, UNSIGNED_REPO = "example/web", "example/batch"
# Audit fields shown on screen; the file keeps whole records.
SHOWN = ("decision", "code", "denial_reason", "reason", "pod", "objects", "object", "outcome")


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


def policy_yaml(objects: list[str]) -> str:
    """The demo's release policy: pods of demo/web get ``objects``, and only from signed images."""
    return "\n".join(
        [
            "default: deny",
            "rules:",
            "  - name: demo-web",
            "    namespaces: [demo]",
            "    serviceAccounts: [web]",
            f"    objects: [{', '.join(objects)}]",
            "    images:",
            "      signatures:",
            "        - name: demo-release-key",
            "          publicKeys: [cosign.pub]",
            "",
        ]
    )


def _replace(path: Path, text: str) -> None:
    """Write ``path`` as a ConfigMap update does: a new file renamed over the old one."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


def _indent(text: str, prefix: str = "  ") -> str:
    return prefix + text.rstrip("\n").replace("\n", "\n" + prefix)


def _short_record(record: dict[str, Any]) -> str:
    shown: dict[str, Any] = {}
    for key in SHOWN:
        value = record.get(key)
        if value is None:
            continue
        if key == "pod":
            value = f"{value.get('namespace')}/{value.get('name')}"
        elif key == "objects":
            value = [o.get("name") for o in value]
        elif key == "object":
            value = value.get("name")
        elif key == "reason" and len(value) > 60:
            value = value[:57] + "..."
        shown[key] = value
    return json.dumps(shown, separators=(", ", ": "))


@dataclass
class _Scene:
    """What every step uses: the driver client, the API stand-in, the SPC and the audit file."""

    client: DriverClient
    kube: DevCluster
    objects: str
    audit_path: Path
    show_values: bool

    def request(self, pod: PodSpec, token_of: PodSpec | None = None, **kwargs: Any) -> pb.MountRequest:
        token = self.kube.mint(token_of or pod)
        return mount_request("demo-secrets", {"objects": self.objects}, _driver_pod(pod, token), **kwargs)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def refused(self, request: pb.MountRequest) -> bool:
        try:
            self.client.mount(request)
        except grpc.RpcError as err:
            print(f"   DENIED {err.code().name}: {err.details()}")
            return True
        print("   unexpectedly released")
        return False

    def released(self, request: pb.MountRequest) -> pb.MountResponse | None:
        """Send a Mount expected to succeed; print its files (masked) and object versions."""
        try:
            response = self.client.mount(request)
        except grpc.RpcError as err:
            print(f"   unexpectedly refused {err.code().name}: {err.details()}")
            return None
        count = len(response.files)
        print(f"   RELEASED {count} file{'' if count == 1 else 's'}:")
        for f in response.files:
            print(f"     {f.path:<16} {oct(f.mode)[2:]:0>4}   {_mask(f.contents, self.show_values)}")
        for v in response.object_version:
            note = "  (marks it revoked: later polls keep it out)" if v.id.startswith("revoked/") else ""
            print(f"     version {v.id:<20} {v.version}{note}")
        return response


def _push_images(registry: OCIRegistry, key: CosignKey) -> tuple[str, str]:
    """One image signed as ``cosign sign --key`` does, one unsigned; their pinned references."""
    signed = registry.push_image(SIGNED_REPO, "v1.4.2")
    cosign_sign(registry, SIGNED_REPO, signed, key)
    unsigned = registry.push_image(UNSIGNED_REPO, "v0.9.0")
    return f"{registry.host}/{SIGNED_REPO}@{signed}", f"{registry.host}/{UNSIGNED_REPO}@{unsigned}"


def _pods(kube: DevCluster, signed: str, unsigned: str) -> tuple[PodSpec, PodSpec, PodSpec]:
    def pod(name: str, uid: str, container: str, image: str) -> PodSpec:
        return kube.add_pod(PodSpec("demo", name, uid, "web", {container: image}, node_name=NODE))

    return (
        pod("web-7d4b9", "5b0c6f2e-1d4a-4e8b-9a61-0c2f3e4d5a6b", "web", signed),
        pod("batch-6c9d8", "3f1a2b4c-5d6e-4f70-8a91-b2c3d4e5f607", "batch", unsigned),
        pod("legacy-5f6c", "8e7d6c5b-4a39-4281-9f0e-d1c2b3a49586", "legacy", "nginx:1.27"),
    )


def _sealed_objects(tmp: Path) -> tuple[Path, str]:
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
    return key_path, objects


def run_demo(show_values: bool = False, keep: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="keygate-demo-") as tmp_name:
        tmp = Path(tmp_name)
        key_path, objects = _sealed_objects(tmp)
        cosign_key = CosignKey.generate("p256")
        cosign_key.write_public(tmp / "cosign.pub")
        policy_path, spc_path, audit_path = tmp / "policy.yaml", tmp / "spc.yaml", tmp / "audit.jsonl"
        policy = policy_yaml(["db-password", "api-token"])
        _replace(policy_path, policy)
        spc_path.write_text(spc_manifest(objects))
        with running(tmp, api_token=DEMO_API_TOKEN) as kube, running_registry(tmp) as registry:
            signed, unsigned = _push_images(registry, cosign_key)
            web, batch, legacy = _pods(kube, signed, unsigned)
            config = Config(
                socket=str(tmp / "keygate.sock"),
                sealed_key=(str(key_path),),
                issuer=kube.issuer,
                kube_api_url=kube.url,
                kube_ca=str(kube.ca_file),
                kube_token_file=str(kube.token_file),
                node_name=NODE,
                release_policy=str(policy_path),
                signature_registry_ca=str(registry.ca_file),
                audit_sink=str(audit_path),
                metrics_addr="",
            )
            print("keygate demo")
            print(f"  local Kubernetes API stand-in (in-process, HTTPS): {kube.url}")
            print("    serves OIDC discovery + JWKS (RS256 issuer key) and Pod GET; mints pod-bound tokens")
            print(f"  local OCI registry (in-process, HTTPS): {registry.host}")
            print(f"    {SIGNED_REPO}: signed with a throw-away cosign key (P-256; tag sha256-<hex>.sig)")
            print(f"    {UNSIGNED_REPO}: unsigned")
            print(
                f"  daemon on {config.socket}, attestation ON (issuer {kube.issuer}, audience {AUDIENCE!r})"
            )
            print(f"  audit file: {audit_path}" + ("" if keep else " (temporary: --keep DIR keeps a copy)"))
            print("\nSecretProviderClass used (sealed values shortened):")
            print(_indent(spc_manifest(objects, short=True)))
            print(f"\nrelease policy ({policy_path}, cosign.pub beside it; re-read when it changes):")
            print(_indent(policy))
            with daemon_thread(config), DriverClient(config.socket) as client:
                scene = _Scene(client, kube, objects, audit_path, show_values)
                version = client.version()
                print(f"\nVersion RPC: {version.runtime_name} {version.runtime_version}")
                ok = _steps(scene, web, batch, legacy, policy_path)
            print(
                f"\naudit records ({audit_path}; shortened here, the file has whole records, never a value):"
            )
            for record in scene.records():
                print("  " + _short_record(record))
            if keep:
                out = Path(keep)
                out.mkdir(parents=True, exist_ok=True)
                for path in (spc_path, audit_path, tmp / "cosign.pub"):
                    shutil.copyfile(path, out / path.name)
                (out / policy_path.name).write_text(policy)
                print(f"\nkept spc.yaml, policy.yaml (as first used), cosign.pub and audit.jsonl in {out}")
    return 0 if ok else 1


def _steps(scene: _Scene, web: PodSpec, batch: PodSpec, legacy: PodSpec, policy_path: Path) -> bool:
    """The five Mounts; true when each one ended as the demo says it should."""
    print(f"\n1. pod demo/{web.name}, image {web.images['web'][:48]}... (pinned, signed), own token")
    first = scene.released(scene.request(web))
    if first is None:
        return False

    print(f"\n2. pod demo/{batch.name}, image {batch.images['batch'][:48]}... (pinned, unsigned), own token")
    ok = scene.refused(scene.request(batch))
    reason = scene.records()[-1].get("denial_reason")
    print(f"   audit record: decision deny, denial_reason {reason}")
    ok = ok and reason == "signature_missing"

    print(f"\n3. pod demo/{legacy.name}, image {legacy.images['legacy']} (a tag), own token")
    ok = scene.refused(scene.request(legacy)) and ok
    print(f"\n4. pod demo/{legacy.name} presenting the token of demo/{web.name}")
    ok = scene.refused(scene.request(legacy, token_of=web)) and ok

    print("\n5. live revocation: the release policy now gives demo/web only db-password")
    print("   (objects: [db-password]); the driver's next rotation Mount for")
    print(f"   demo/{web.name} sends current_object_version = the versions the pod holds")
    _replace(policy_path, policy_yaml(["db-password"]))
    held = [(v.id, v.version) for v in first.object_version]
    again = scene.released(scene.request(web, current=held))
    if again is None:
        return False
    before, after = [f.path for f in first.files], [f.path for f in again.files]
    gone = [path for path in before if path not in after]
    print("   the pod's volume as the driver rewrites it from the Mount responses:")
    print(f"     before: {', '.join(before)}")
    print(f"     after:  {', '.join(after)}" + (f"   ({', '.join(gone)} removed)" if gone else ""))
    revoked = [r for r in scene.records() if r.get("decision") == "revoke"]
    for r in revoked:
        name, outcome = r.get("object", {}).get("name"), r.get("outcome")
        print(f"   audit record: decision revoke, reason {r.get('reason')}, object {name}, outcome {outcome}")
    return ok and gone == ["tokens/api"] and len(revoked) == 1

"""``keygate lint --policy``: the release policy's view of a pod, offline, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keygate_dev.signing import CosignKey
from provider.cli import main

HEX = "3f" * 32


def spc(sealed: str) -> str:
    return (
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata: {name: s, namespace: payments}\nspec:\n  provider: keygate\n"
        f"  parameters:\n    objects: |\n      - objectName: a\n        sealed: {sealed}\n"
    )


def pod(images: dict[str, str], init: dict[str, str] | None = None, sa: str = "api") -> dict[str, Any]:
    volume = {
        "name": "s",
        "csi": {
            "driver": "secrets-store.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": "s"},
        },
    }
    spec: dict[str, Any] = {
        "serviceAccountName": sa,
        "containers": [{"name": n, "image": i, "volumeMounts": [{"name": "s"}]} for n, i in images.items()],
        "volumes": [volume],
    }
    if init:
        spec["initContainers"] = [{"name": n, "image": i} for n, i in init.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "payments"},
        "spec": spec,
    }


def run(
    tmp_path: Path, capsys: Any, policy: dict[str, Any] | str, manifest: dict[str, Any]
) -> tuple[int, str]:
    from providers.sealed.envelope import generate_key, seal

    (tmp_path / "spc.yaml").write_text(spc(seal(b"v", "payments", "a", [generate_key().public_key()])))
    (tmp_path / "pod.json").write_text(json.dumps(manifest))
    path = tmp_path / "policy.yaml"
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy))
    code = main(["lint", str(tmp_path / "spc.yaml"), str(tmp_path / "pod.json"), "--policy", str(path)])
    return code, capsys.readouterr().out


def signed_policy(**images: Any) -> dict[str, Any]:
    return {
        "default": "deny",
        "rules": [
            {
                "name": "payments",
                "namespaces": ["payments"],
                "serviceAccounts": ["api"],
                "images": {"signatures": [{"name": "release-key", "publicKeys": ["cosign.pub"]}], **images},
            }
        ],
    }


def test_lists_images_that_need_signatures(tmp_path: Path, capsys):
    CosignKey.generate().write_public(tmp_path / "cosign.pub")
    app, migrate = f"ghcr.io/acme/app@sha256:{HEX}", f"ghcr.io/acme/migrate@sha256:{HEX}"
    code, out = run(tmp_path, capsys, signed_policy(), pod({"app": app}, {"migrate": migrate}))
    assert code == 0, out
    assert "release policy rule 'payments' covers service account 'api' in namespace 'payments'" in out
    assert (
        f"container 'app' image {app} needs signatures: 'release-key' (cosign key: {tmp_path / 'cosign.pub'})"
        in out
    )
    assert f"initContainer 'migrate' image {migrate} needs signatures" in out


def test_unreadable_key_is_an_error(tmp_path: Path, capsys):
    code, out = run(tmp_path, capsys, signed_policy(), pod({"app": f"ghcr.io/acme/app@sha256:{HEX}"}))
    assert code == 1
    assert "cannot read public key" in out and "rules[0].images.signatures[0].publicKeys" in out


def test_unparseable_trusted_root_is_an_error(tmp_path: Path, capsys):
    pytest.importorskip("sigstore")
    (tmp_path / "root.json").write_text("{}")
    policy = {
        "rules": [
            {
                "name": "r",
                "namespaces": ["*"],
                "images": {
                    "signatures": [
                        {"keyless": {"trustedRoot": "root.json", "issuer": "https://i", "subject": "s"}}
                    ]
                },
            }
        ]
    }
    code, out = run(tmp_path, capsys, policy, pod({"app": f"ghcr.io/acme/app@sha256:{HEX}"}))
    assert code == 1 and "not a usable Sigstore trusted root" in out


def test_default_deny_without_rule(tmp_path: Path, capsys):
    CosignKey.generate().write_public(tmp_path / "cosign.pub")
    code, out = run(
        tmp_path, capsys, signed_policy(), pod({"app": f"ghcr.io/acme/app@sha256:{HEX}"}, sa="batch")
    )
    assert code == 1 and "no release policy rule covers service account 'batch'" in out


def test_repository_outside_allowlist(tmp_path: Path, capsys):
    CosignKey.generate().write_public(tmp_path / "cosign.pub")
    policy = signed_policy(allowedRepositories=["ghcr.io/acme"])
    code, out = run(tmp_path, capsys, policy, pod({"app": f"quay.io/evil/app@sha256:{HEX}"}))
    assert code == 1 and "is not allowed by the release policy" in out


def test_commented_example_in_the_manifest_parses(tmp_path: Path):
    """The signatures example in daemonset/release-policy.yaml, uncommented, is a valid rule part."""
    pytest.importorskip("sigstore")
    import yaml

    from provider.attest.policy import parse_policy
    from tests.sigstore_fakes import FakeSigstore

    root = Path(__file__).resolve().parents[1]
    text = yaml.safe_load((root / "daemonset" / "release-policy.yaml").read_text())["data"]["policy.yaml"]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   signatures:"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "#")
    snippet = "\n".join("    " + line[1:] for line in lines[start:end])
    example = f"rules:\n- name: signed\n  namespaces: [payments]\n  images:\n{snippet}\n"
    CosignKey.generate().write_public(tmp_path / "cosign.pub")
    FakeSigstore().write_trusted_root(tmp_path / "trusted_root.json")
    policy = parse_policy(example, str(tmp_path / "policy.yaml"))
    names = [r.name for r in policy.rules[0].images.signatures]
    assert names == ["release-key", "release-workflow"]

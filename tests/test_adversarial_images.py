"""Hostile image references in the Pod spec, each through a real, attested Mount.

The Pod is whatever its author wrote, so the reference is matched as a whole string: a digest
followed by a newline, a space or anything else is not "pinned". ``keygate lint`` reads images
with the same function, so each case also checks that lint flags exactly what the daemon refuses.
"""

from __future__ import annotations

from typing import Any

import pytest

from provider.attest.images import reference_problem
from tests.adversarial import refused, released, request_for
from tests.kubeapi import DevCluster, make_pod

HEX = "3f" * 32
DENIED = "PermissionDenied"

REFUSED: list[tuple[str, str, str]] = [
    ("trailing_newline", f"ghcr.io/acme/app@sha256:{HEX}\n", "malformed digest"),
    ("trailing_crlf", f"ghcr.io/acme/app@sha256:{HEX}\r\n", "malformed digest"),
    ("trailing_space", f"ghcr.io/acme/app@sha256:{HEX} ", "malformed digest"),
    ("trailing_tab", f"ghcr.io/acme/app@sha256:{HEX}\t", "malformed digest"),
    ("leading_space", f" ghcr.io/acme/app@sha256:{HEX}", "is not a valid image reference"),
    ("newline_in_name", f"ghcr.io/acme/app\n@sha256:{HEX}", "is not a valid image reference"),
    ("upper_case_hex", f"ghcr.io/acme/app@sha256:{HEX.upper()}", "malformed digest"),
    ("upper_case_algorithm", f"ghcr.io/acme/app@SHA256:{HEX}", "malformed digest"),
    ("hex_63", f"ghcr.io/acme/app@sha256:{HEX[:63]}", "malformed digest"),
    ("hex_65", f"ghcr.io/acme/app@sha256:{HEX}a", "malformed digest"),
    ("hex_empty", "ghcr.io/acme/app@sha256:", "malformed digest"),
    ("non_hex_digit", f"ghcr.io/acme/app@sha256:{HEX[:63]}g", "malformed digest"),
    ("fullwidth_hex_digit", f"ghcr.io/acme/app@sha256:{HEX[:63]}\uff10", "malformed digest"),
    ("sha512", "ghcr.io/acme/app@sha512:" + "ab" * 64, "malformed digest"),
    ("sha384", "ghcr.io/acme/app@sha384:" + "ab" * 48, "malformed digest"),
    ("sha256_with_sha512_length", "ghcr.io/acme/app@sha256:" + "ab" * 64, "malformed digest"),
    ("no_algorithm", f"ghcr.io/acme/app@{HEX}", "malformed digest"),
    ("two_digests", f"ghcr.io/acme/app@sha256:{HEX}@sha256:{HEX}", "malformed digest"),
    ("digest_then_fragment", f"ghcr.io/acme/app@sha256:{HEX}#x", "malformed digest"),
    ("digest_then_tag", f"ghcr.io/acme/app@sha256:{HEX}:v1", "malformed digest"),
    ("at_in_tag", f"ghcr.io/acme/app:v@1@sha256:{HEX}", "malformed digest"),
    ("no_repository", f"@sha256:{HEX}", "is not a valid image reference"),
    ("empty_tag", f"ghcr.io/acme/app:@sha256:{HEX}", "is not a valid image reference"),
    ("tag_129_chars", f"ghcr.io/acme/app:{'t' * 129}@sha256:{HEX}", "is not a valid image reference"),
    ("tag_with_slash", f"ghcr.io/acme/app:v1/x@sha256:{HEX}", "is not a valid image reference"),
    ("upper_case_repository", f"ghcr.io/Acme/App@sha256:{HEX}", "is not a valid image reference"),
    ("unicode_repository", f"ghcr.io/acm\u00e9/app@sha256:{HEX}", "is not a valid image reference"),
    ("cyrillic_lookalike", f"ghcr.io/\u0430cme/app@sha256:{HEX}", "is not a valid image reference"),
    ("zero_width_space", f"ghcr.io/acme/app\u200b@sha256:{HEX}", "is not a valid image reference"),
    ("double_slash", f"ghcr.io//acme/app@sha256:{HEX}", "is not a valid image reference"),
    ("trailing_slash", f"ghcr.io/acme/app/@sha256:{HEX}", "is not a valid image reference"),
    ("leading_separator", f"ghcr.io/-acme/app@sha256:{HEX}", "is not a valid image reference"),
    ("scheme_prefix", f"https://ghcr.io/acme/app@sha256:{HEX}", "is not a valid image reference"),
    ("nul_byte", f"ghcr.io/acme/app\x00@sha256:{HEX}", "is not a valid image reference"),
    ("escape_sequence", f"ghcr.io/acme/app\x1b[2K@sha256:{HEX}", "is not a valid image reference"),
    ("name_over_255", "ghcr.io/" + "a" * 250 + f"@sha256:{HEX}", "longer than 255 characters"),
    ("reference_over_1024", "ghcr.io/acme/app:" + "x" * 1100 + f"@sha256:{HEX}", "longer than 1024"),
    ("empty", "", "is not a valid image reference"),
]


@pytest.mark.parametrize(("case", "image", "fragment"), REFUSED, ids=[c[0] for c in REFUSED])
def test_image_reference_refused(attest_daemon, kube: DevCluster, node_key, case, image, fragment):
    d = attest_daemon()
    pod = make_pod(kube, images={"app": image})
    details = refused(
        d, request_for(node_key, pod, kube.mint(pod)), DENIED, "container `app` image", fragment
    )
    assert "\n" not in details and "\x1b" not in details and "\x00" not in details, "raw control characters"
    assert reference_problem(image) is not None, "lint must flag what the daemon refuses"


def test_unpinned_init_container_with_trailing_newline(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube, init_images={"migrate": f"ghcr.io/acme/migrate@sha256:{HEX}\n"})
    refused(
        d, request_for(node_key, pod, kube.mint(pod)), DENIED, "initContainer `migrate`", "malformed digest"
    )


def test_hostile_container_name_is_escaped(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube, images={"app\nINFO forged log line": "nginx:1.27"})
    details = refused(d, request_for(node_key, pod, kube.mint(pod)), DENIED, "not pinned by digest")
    assert "\n" not in details


RELEASED: list[tuple[str, str]] = [
    ("short_name", f"nginx@sha256:{HEX}"),
    ("library_path", f"library/nginx@sha256:{HEX}"),
    ("tag_and_digest", f"ghcr.io/acme/app:v1.2.3@sha256:{HEX}"),
    ("registry_port", f"localhost:5000/app@sha256:{HEX}"),
    ("ipv6_registry", f"[::1]:5000/acme/app@sha256:{HEX}"),
    ("upper_case_registry", f"Registry.Example.com/acme/app@sha256:{HEX}"),
    ("deep_path", f"registry.example.com:443/a/b/c/d@sha256:{HEX}"),
    ("separators", f"ghcr.io/acme/my__app.v2-x--y@sha256:{HEX}"),
    ("tag_with_underscore_and_dots", f"ghcr.io/acme/app:_1.2-rc.3@sha256:{HEX}"),
    ("name_of_255", "ghcr.io/" + "a" * 247 + f"@sha256:{HEX}"),
]


@pytest.mark.parametrize(("case", "image"), RELEASED, ids=[c[0] for c in RELEASED])
def test_well_formed_pinned_references_release(attest_daemon, kube: DevCluster, node_key, case, image):
    d = attest_daemon()
    pod = make_pod(kube, images={"app": image})
    released(d, request_for(node_key, pod, kube.mint(pod)))
    assert reference_problem(image) is None


def _lint_flags(image: str, tmp_path: Any, capsys: Any) -> bool:
    from provider import lint

    spc = tmp_path / "spc.yaml"
    spc.write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata: {name: s, namespace: default}\nspec:\n  provider: keygate\n"
        "  parameters:\n    objects: |\n      - objectName: a\n        sealed: x\n"
    )
    import json

    pod = tmp_path / "pod.json"
    pod.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "containers": [{"name": "web", "image": image, "volumeMounts": [{"name": "s"}]}],
                    "volumes": [
                        {
                            "name": "s",
                            "csi": {
                                "driver": "secrets-store.csi.k8s.io",
                                "readOnly": True,
                                "volumeAttributes": {"secretProviderClass": "s"},
                            },
                        }
                    ],
                },
            }
        )
    )
    lint.main(str(spc), str(pod), namespace=None, recipients=(), strict=False)
    out = capsys.readouterr().out
    return f"image {image!r}" in out


@pytest.mark.parametrize(
    "image",
    [REFUSED[0][1], REFUSED[2][1], REFUSED[6][1], REFUSED[20][1], RELEASED[2][1], RELEASED[4][1]],
    ids=["newline", "space", "upper_hex", "at_in_tag", "tag_and_digest", "ipv6"],
)
def test_lint_agrees_with_the_daemon(image, tmp_path, capsys):
    assert _lint_flags(image, tmp_path, capsys) == (reference_problem(image) is not None)

"""Pod tokens in the node-publish secrets (``serviceAccountTokenInSecrets: true`` on the CSIDriver).

On Kubernetes 1.35 and later the driver's chart makes the kubelet hand the pod's tokens over in
the NodePublish secrets, which the driver forwards as ``MountRequest.secrets``. keygate must
attest with them when the attributes do not carry them, and never treat the token key as a
node-publish secret.
"""

from __future__ import annotations

import json

from keygate_dev.driver_client import mount_request
from provider.request import ATTR_TOKENS, MountInput, parse
from tests.kubeapi import AUDIENCE, DevCluster, driver_pod, make_pod
from tests.test_attest import SECRET, spc


def _tokens_json(token: str) -> str:
    return json.dumps({AUDIENCE: {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}})


def test_parse_takes_the_tokens_out_of_the_node_publish_secrets():
    attrs = {
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": "default",
        "csi.storage.k8s.io/pod.uid": "6a1c7e2b-0d4f-4c8e-9b3a-2f5e6d7c8b9a",
        "csi.storage.k8s.io/serviceAccount.name": "web",
    }
    secrets = {ATTR_TOKENS: _tokens_json("header.payload.signature"), "clientSecret": "node-side"}
    ctx = parse(MountInput(json.dumps(attrs), json.dumps(secrets), "/t", "420", {}))
    assert ctx.tokens == {AUDIENCE: "header.payload.signature"} and ctx.tokens_present
    assert dict(ctx.node_secrets) == {"clientSecret": "node-side"}
    both = {**attrs, ATTR_TOKENS: _tokens_json("from.attributes.token")}
    ctx = parse(MountInput(json.dumps(both), json.dumps(secrets), "/t", "420", {}))
    assert ctx.tokens == {AUDIENCE: "from.attributes.token"}, "the driver's attributes come first"
    assert ATTR_TOKENS not in ctx.node_secrets


def test_a_mount_attests_with_the_tokens_from_the_secrets_field(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    without_tokens = driver_pod(pod, None)
    request = mount_request(
        "app-secrets",
        spc(node_key, pod.namespace),
        without_tokens,
        secrets={ATTR_TOKENS: _tokens_json(kube.mint(pod))},
    )
    resp = d.client.mount(request)
    assert [(f.path, f.contents) for f in resp.files] == [("db-password", SECRET)]
    assert json.loads(request.attributes).get(ATTR_TOKENS) is None

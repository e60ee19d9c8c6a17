"""``keygate lint``: every class of problem, with its file:line, through the real CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from provider.cli import main
from providers.sealed.envelope import generate_key, public_pem

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example/shop/web:1.4@{DIGEST}"


def spc(objects: str, *, params: str = "", namespace: str | None = "shop", extra: str = "") -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    body = textwrap.indent(textwrap.dedent(objects).strip("\n"), " " * 6)
    return (
        "apiVersion: secrets-store.csi.x-k8s.io/v1\n"
        "kind: SecretProviderClass\n"
        f"metadata:\n  name: app-secrets{ns}\n"
        "spec:\n  provider: keygate\n  parameters:\n"
        + textwrap.indent(textwrap.dedent(params), "    ")
        + "    objects: |\n"
        + body
        + "\n"
        + extra
    )


def pod(
    image: str = IMAGE, *, spc_name: str = "app-secrets", read_only: str = "true", ns: str = "shop"
) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          namespace: {ns}
        spec:
          containers:
          - name: web
            image: {image}
            volumeMounts:
            - name: secrets
              mountPath: /mnt/secrets
              readOnly: true
          volumes:
          - name: secrets
            csi:
              driver: secrets-store.csi.k8s.io
              readOnly: {read_only}
              volumeAttributes:
                secretProviderClass: {spc_name}
        """
    )


def lint(tmp_path: Path, capsys, spc_text: str, pod_text: str | None = None, *args: str) -> tuple[int, str]:
    spc_file = tmp_path / "spc.yaml"
    spc_file.write_text(spc_text)
    argv = ["lint", str(spc_file)]
    if pod_text is not None:
        pod_file = tmp_path / "pod.yaml"
        pod_file.write_text(pod_text)
        argv.append(str(pod_file))
    code = main([*argv, *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def sealed_obj(node_key, name: str = "db-password", ns: str = "shop", sealed_name: str | None = None) -> str:
    return f"- objectName: {name}\n  sealed: {node_key.seal(b'pw-value-1', ns, sealed_name or name)}\n"


def test_a_clean_spc_and_pod_pass(tmp_path, capsys, node_key):
    code, out = lint(tmp_path, capsys, spc(sealed_obj(node_key) + '  filePermission: "0400"\n'), pod())
    assert code == 0, out
    assert "0 errors, 0 warnings" in out
    assert "1 of 1 object(s) resolved (1 sealed)" in out


def test_resource_shape_errors(tmp_path, capsys, node_key):
    text = (
        spc(sealed_obj(node_key))
        .replace("/v1\n", "/v1beta9\n")
        .replace("provider: keygate", "provider: vault")
    )
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert "spc.yaml:1: error: SecretProviderClass app-secrets: apiVersion must be" in out
    assert f"spc.yaml:{line_of(text, 'provider:')}: error" in out
    assert "sends this SPC to the 'vault' provider" in out


def test_parameters_must_be_strings_and_names_are_checked(tmp_path, capsys, node_key):
    params = "vaultSkipTLSVerify: true\nkeyVaultName: kv\nregoin: eu-west-1\nteam: payments\n"
    text = spc(sealed_obj(node_key), params=params)
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert f"spc.yaml:{line_of(text, 'vaultSkipTLSVerify')}: error" in out
    assert "parameters.vaultSkipTLSVerify must be a string" in out and "quote it" in out
    assert "unknown parameter 'keyVaultName'; did you mean 'keyvaultName'?" in out
    assert (
        f"spc.yaml:{line_of(text, 'regoin')}: error: SecretProviderClass app-secrets: "
        "unknown parameter 'regoin'; did you mean 'region'?" in out
    )
    assert f"spc.yaml:{line_of(text, 'team:')}: warning" in out and "'team'; keygate ignores it" in out


def test_unknown_object_fields_suggest_the_right_name(tmp_path, capsys, node_key):
    objects = (
        sealed_obj(node_key)
        + "  objectAlais: db\n"
        + "- objectName: cfg\n  backend: vault\n  secretpath: a/b\n"
    )
    text = spc(objects, params="vaultAddress: https://vault.example:8200\nroleName: app\n")
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert f"spc.yaml:{line_of(text, 'objectAlais')}: error" in out
    assert "objects[0] 'db-password': unknown field 'objectAlais'; did you mean 'objectAlias'?" in out
    assert "objects[1] 'cfg': unknown field 'secretpath'; did you mean 'secretPath'?" in out


def test_a_field_of_another_backend_is_named_as_such(tmp_path, capsys, node_key):
    code, out = lint(tmp_path, capsys, spc(sealed_obj(node_key) + "  secretPath: secret/data/x\n"))
    assert code == 1
    assert "field 'secretPath' is not used by sealed objects" in out


def test_object_list_syntax_errors_point_into_the_outer_file(tmp_path, capsys):
    text = spc("- objectName: a\n  sealed: [unclosed\n- objectName: b\n")
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert "parameter 'objects' is not valid YAML/JSON" in out
    reported = int(out.split("spc.yaml:")[1].split(":")[0])
    assert line_of(text, "unclosed") <= reported <= line_of(text, "objectName: b")

    code, out = lint(tmp_path, capsys, spc("objectName: a\n"))
    assert code == 1 and "must be a list of objects" in out
    code, out = lint(tmp_path, capsys, spc("- objectAlias: a\n  sealed: x\n"))
    assert code == 1 and "objects[0]: 'objectName' is required" in out


def test_paths_modes_and_duplicates(tmp_path, capsys, node_key):
    objects = (
        sealed_obj(node_key, "a")
        + "  objectAlias: /etc/passwd\n"
        + sealed_obj(node_key, "b")
        + "  path: ../up\n"
        + sealed_obj(node_key, "c")
        + '  filePermission: "0999"\n'
        + sealed_obj(node_key, "d")
        + "  objectAlias: same\n  filePermission: 400\n"
        + sealed_obj(node_key, "e")
        + "  objectAlias: same\n"
        + sealed_obj(node_key, "d")
        + "  objectAlias: other\n"
        + '  mode: "0666"\n'
    )
    text = spc(objects)
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert "objects[0] 'a': file name '/etc/passwd' is absolute" in out
    assert "objects[1] 'b': file name '../up' contains '..'" in out
    assert "objects[2] 'c': file mode '0999' is not an octal permission" in out
    assert f"spc.yaml:{line_of(text, 'filePermission: 400')}: warning" in out
    assert "400 is read as the decimal number 400, which is mode 0620" in out
    first = line_of(text, "objectName: d")
    assert f"file 'same' is also written by objects[3] 'd' (line {first})" in out
    assert "objectName 'd' is used twice for sealed values" in out
    assert "file mode 0666 lets any user write the file" in out

    text = spc(sealed_obj(node_key) + "  filePermission: 644\n")
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert f"spc.yaml:{line_of(text, 'filePermission: 644')}: error" in out
    assert (
        'file mode 644 is out of range (0 to 0777); an unquoted 644 is a decimal number in YAML: write "0644"'
        in out
    )


def test_sealed_values_are_checked_for_structure_and_binding(tmp_path, capsys, node_key):
    objects = (
        "- objectName: broken\n  sealed: keygate:v1:nothing-here\n"
        + sealed_obj(node_key, "wrong-ns", ns="other")
        + sealed_obj(node_key, "renamed", sealed_name="original")
    )
    text = spc(objects)
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert "objects[0] 'broken': sealed value is truncated" in out
    assert f"spc.yaml:{line_of(text, 'objectName: wrong-ns') + 1}: error" in out
    assert "sealed for namespace 'other', but this SPC serves pods in 'shop'" in out
    assert "keygate seal --namespace shop --name wrong-ns" in out
    assert "sealed for object name 'original', not 'renamed'" in out


def test_namespace_comes_from_the_pod_or_the_flag_or_is_flagged_unknown(tmp_path, capsys, node_key):
    text = spc(sealed_obj(node_key, ns="shop"), namespace=None)
    code, out = lint(tmp_path, capsys, text)
    assert code == 0 and "cannot check which namespace 1 sealed value(s) are bound to" in out
    code, out = lint(tmp_path, capsys, text, pod(ns="billing"))
    assert code == 1 and "serves pods in 'billing'" in out
    code, out = lint(tmp_path, capsys, text, None, "--namespace", "shop", "--strict")
    assert code == 0, out


def test_recipient_keys_are_checked(tmp_path, capsys, node_key):
    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(generate_key().public_key()))
    mine = tmp_path / "mine.pub"
    mine.write_bytes(public_pem(node_key.key.public_key()))
    text = spc(sealed_obj(node_key))
    assert lint(tmp_path, capsys, text, None, "--recipient", str(mine))[0] == 0
    code, out = lint(tmp_path, capsys, text, None, "--recipient", str(other))
    assert code == 1 and "none of the given node keys" in out


def test_pod_images_volumes_and_namespace(tmp_path, capsys, node_key):
    text = spc(sealed_obj(node_key))
    code, out = lint(tmp_path, capsys, text, pod(image="nginx:1.27"))
    assert code == 1
    pod_text = pod(image="nginx:1.27")
    assert (
        f"pod.yaml:{line_of(pod_text, 'image:')}: error: Pod web: "
        "container 'web': image 'nginx:1.27' is not pinned" in out
    )
    assert (
        "use `docker.io/library/nginx@sha256:<digest>` (`docker buildx imagetools inspect nginx:1.27`" in out
    )

    code, out = lint(tmp_path, capsys, text, pod(image="nginx@sha256:1234"))
    assert code == 1 and "malformed digest" in out
    code, out = lint(tmp_path, capsys, text, pod(read_only="false"))
    assert code == 1 and "'readOnly: true'" in out
    code, out = lint(tmp_path, capsys, text, pod(spc_name="app-secret"))
    assert code == 1 and "uses SecretProviderClass 'app-secret'; did you mean 'app-secrets'?" in out
    code, out = lint(tmp_path, capsys, text.replace("namespace: shop", "namespace: billing"), pod())
    assert "the pod is in namespace 'shop' but SecretProviderClass app-secrets is in 'billing'" in out


def test_workloads_init_containers_and_missing_volume(tmp_path, capsys, node_key):
    deployment = textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
          namespace: shop
        spec:
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web}}}}
            spec:
              initContainers:
              - name: migrate
                image: registry.example/migrate:2
              containers:
              - name: web
                image: {IMAGE}
        """
    )
    code, out = lint(tmp_path, capsys, spc(sealed_obj(node_key)), deployment)
    assert code == 1
    assert "Deployment web: container 'migrate': image 'registry.example/migrate:2' is not pinned" in out
    assert "no volume uses the secrets-store.csi.k8s.io driver" in out


def test_azure_array_form_locations(tmp_path, capsys):
    text = (
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata: {name: kv, namespace: shop}\n"
        "spec:\n  provider: keygate\n  parameters:\n    keyvaultName: kv1\n    tenantId: t\n"
        "    objects: |\n"
        "      array:\n"
        "        - |\n"
        "          objectName: db\n"
        "          objectType: secret\n"
        "        - |\n"
        "          objectName: cert\n"
        "          objectType: cert\n"
        "          objectVershun: abc\n"
    )
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert f"spc.yaml:{line_of(text, 'objectVershun')}: error" in out
    assert "objects[1] 'cert': unknown field 'objectVershun'; did you mean 'objectVersion'?" in out


def test_secret_objects_are_checked_and_discouraged(tmp_path, capsys, node_key):
    extra = (
        "  secretObjects:\n  - secretName: db\n    type: Opaque\n    data:\n"
        "    - objectName: db-pasword\n      key: password\n"
    )
    text = spc(sealed_obj(node_key), extra=extra)
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert f"spc.yaml:{line_of(text, 'db-pasword')}: error" in out
    assert "'db-pasword' is not a file this SPC mounts; did you mean 'db-password'?" in out
    assert "secretObjects copies the values into Kubernetes Secrets" in out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["lint", str(tmp_path / "missing.yaml")]) == 2
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["lint", str(tmp_path / "cm.yaml")]) == 2
    (tmp_path / "dup.yaml").write_text("kind: SecretProviderClass\nkind: Pod\n")
    assert main(["lint", str(tmp_path / "dup.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no SecretProviderClass found" in err and "dup.yaml:2: not valid YAML: duplicate key 'kind'" in err


def test_no_value_is_echoed(tmp_path, capsys):
    leak = "hunter2-plaintext-oops"
    text = spc(f"- objectName: a\n  sealed: {leak}\n  bad: [\n")
    code, out = lint(tmp_path, capsys, text)
    assert code == 1 and leak not in out
    code, out = lint(tmp_path, capsys, spc(f"- objectName: a\n  sealed: {leak}\n"))
    assert code == 1 and "does not start with 'keygate:v1:'" in out and leak not in out


@pytest.mark.parametrize(
    "objects",
    [
        "- objectName: a\n  sealed: keygate:v1:x\n",
        "- objectName: a\n  objectAlias: ../a\n  sealed: keygate:v1:x\n",
        "- objectName: a\n  filePermission: '9'\n  sealed: keygate:v1:x\n",
        "- objectName: a\n  backend: nosuch\n",
        "objectName: a\n",
    ],
)
def test_lint_and_daemon_agree(tmp_path, capsys, start_daemon, objects):
    d = start_daemon()
    with pytest.raises(grpc.RpcError) as err:
        d.client.mount(mount_request("app-secrets", {"objects": objects}, Pod(namespace="shop")))
    daemon_message = err.value.details().split("] ", 1)[1]
    code, out = lint(tmp_path, capsys, spc(objects))
    assert code == 1
    tail = daemon_message.split(": ", 1)[1] if daemon_message.startswith("objects[") else daemon_message
    assert tail in out, (tail, out)


@pytest.mark.parametrize(
    "image",
    [
        IMAGE,
        f"ghcr.io/acme/app@{DIGEST}",
        "nginx:1.27",
        "localhost:5000/app",
        f"nginx@{DIGEST.upper().replace('SHA256', 'sha256')}",
        "nginx@sha512:" + "ab" * 64,
        "nginx@sha256:abc",
    ],
)
def test_lint_and_the_daemon_agree_on_digest_pinning(image, tmp_path, capsys):
    """lint reads images with the attestation code's parser, so it flags exactly what is refused."""
    from provider.attest.images import ImageRules, check_images
    from provider.attest.kube import Container
    from provider.errors import PermissionDenied

    try:
        check_images([Container("container", "web", image)], ImageRules(), "pod shop/web")
        refused = False
    except PermissionDenied:
        refused = True
    _, out = lint(tmp_path, capsys, spc("- objectName: a\n  sealed: x\n"), pod(image))
    flagged = f"image {image!r}" in out
    assert flagged == refused, out

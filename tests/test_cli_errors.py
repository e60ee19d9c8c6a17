"""The ``keygate`` command never prints a traceback: missing extras, bad configuration and bugs
each end with one clear line and their own exit status (docs/cli.md).

"Without the extras" is real: the CLI runs in a subprocess whose interpreter refuses to import the
optional SDKs (a meta path finder installed before keygate loads, the same ImportError a venv
without ``keygate[aws]`` etc. raises). That blocker is test scaffolding; keygate runs unmodified.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from keygate_dev.driver_client import DriverClient, Pod, mount_request
from provider.attest.images import pin_hint
from provider.exit_codes import ExitCode
from providers.registry import BUILTIN, MissingExtra

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "daemonset" / "examples").glob("*.yaml"))
SHARED = Path(__file__).resolve().parents[2] / "shared"
PEER_SPCS = sorted(SHARED.glob("peers/spc/*/keygate/*.yaml"))

# Import names of the distributions only the extras bring (pip's view of keygate[aws,vault,azure,gcp]
# minus the base dependencies); google.protobuf and grpc stay, they are base dependencies.
BLOCKED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "aiohttp",
    "yarl",
    "hvac",
    "requests",
    "urllib3",
    "azure",
    "msal",
    "google.auth",
    "google.api_core",
    "google.cloud",
    "google_crc32c",
    "proto",
    "grpc_status",
)
BLOCKER = f"""
import sys
BLOCKED = {BLOCKED!r}
class _NoExtras:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NoExtras())
"""
RUN_CLI = "from provider.cli import main\nsys.exit(main(sys.argv[1:]))\n"
# Lints many files in one interpreter (one start-up instead of one per file) through the real main().
LINT_MANY = """
import contextlib, io, json, sys
from provider.cli import main
results = []
for path in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["lint", path])
    results.append({"path": path, "code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def keygate(*args: str, blocked: bool = False, env: dict[str, str | None] | None = None, stdin: str = ""):
    """Run the CLI in a fresh interpreter; ``env`` overrides the environment (None removes a name)."""
    code = (BLOCKER if blocked else "import sys\n") + RUN_CLI
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={k: v for k, v in environ.items() if v is not None},
        timeout=120,
        cwd=REPO,
    )


def lint_many(paths: list[Path], blocked: bool) -> dict[str, dict]:
    code = (BLOCKER if blocked else "") + LINT_MANY
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return {r["path"]: r for r in json.loads(done.stdout)}


def error_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if ": error: " in line}


def extra_message(backend: str) -> str:
    return f"backend '{backend}' needs {BUILTIN[backend].sdk} ("


def backends_of(result: dict) -> set[str]:
    """The backends an SPC's objects resolved to, from lint's own summary lines."""
    found: set[str] = set()
    for line in result["out"].splitlines():
        if "object(s) resolved (" in line:
            found |= {part.split()[-1] for part in line.rsplit("(", 1)[1].rstrip(")").split(", ")}
    return found - {"none"}


def test_examples_lint_with_and_without_the_extras():
    without = lint_many(EXAMPLES, blocked=True)
    with_extras = lint_many(EXAMPLES, blocked=False)
    for path in map(str, EXAMPLES):
        plain, bare = with_extras[path], without[path]
        assert plain["code"] == ExitCode.OK, plain["out"] + plain["err"]
        assert "Traceback" not in bare["out"] + bare["err"]
        used = backends_of(bare)
        missing = used - {"sealed"}
        for backend in missing:
            assert extra_message(backend) in bare["out"], (path, bare["out"])
            assert f"pip install 'keygate[{backend}]'" in bare["out"]
        # schema-level checks still ran: the same objects resolved, and no error appeared
        assert used == backends_of(plain) and not error_lines(bare["out"])
        assert bare["code"] == (ExitCode.MISSING_EXTRA if missing else ExitCode.OK), (path, bare)


@pytest.mark.skipif(not PEER_SPCS, reason=f"no peer SPCs under {SHARED}")
def test_peer_spcs_lint_without_a_traceback_with_and_without_the_extras():
    without = lint_many(PEER_SPCS, blocked=True)
    with_extras = lint_many(PEER_SPCS, blocked=False)
    for path in map(str, PEER_SPCS):
        plain, bare = with_extras[path], without[path]
        for result in (plain, bare):
            assert "Traceback" not in result["out"] + result["err"], path
            assert result["code"] in (ExitCode.OK, ExitCode.PROBLEMS, ExitCode.MISSING_EXTRA, ExitCode.USAGE)
        assert "needs the" not in plain["out"] and plain["code"] != ExitCode.MISSING_EXTRA
        # without the SDKs lint finds a subset of the same errors, never a different one
        assert error_lines(bare["out"]) <= error_lines(plain["out"]), path
        flagged = {b for b in BUILTIN if extra_message(b) in bare["out"]}
        assert flagged <= backends_of(bare) | backends_of(plain)
        if bare["code"] != ExitCode.USAGE:
            expected = (
                ExitCode.PROBLEMS
                if error_lines(bare["out"])
                else ExitCode.MISSING_EXTRA
                if flagged
                else ExitCode.OK
            )
            assert bare["code"] == expected, (path, bare)


def test_missing_extra_message_is_worded_once():
    message = MissingExtra("aws", "boto3").message
    assert message == "backend 'aws' needs the AWS SDK (boto3 is not installed): pip install 'keygate[aws]'"
    for backend in ("vault", "azure", "gcp"):
        assert f"pip install 'keygate[{backend}]'" in MissingExtra(backend, "x").message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_daemon_without_the_sdk_refuses_the_mount_with_the_extra_and_logs_sealed_key_ids(short_tmp, node_key):
    from providers.sealed.envelope import key_id

    sock = short_tmp / "k.sock"
    code = BLOCKER + RUN_CLI
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "serve",
            "--socket",
            str(sock),
            "--insecure-skip-attestation",
            "--sealed-key",
            str(node_key.path),
            "--metrics-addr",
            "",
            "--audit-sink",
            str(short_tmp / "audit.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.05)
        objects = json.dumps([{"objectName": "db", "objectType": "secretsmanager"}])
        with DriverClient(str(sock)) as client, pytest.raises(grpc.RpcError) as info:
            client.mount(mount_request("aws", {"region": "us-east-1", "objects": objects}, Pod()))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == f"[BackendUnavailable] {MissingExtra('aws', 'boto3').message}"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err
    loaded = [json.loads(line) for line in err.splitlines() if '"sealed keys loaded"' in line]
    assert loaded and loaded[0]["key_ids"] == [key_id(node_key.key.public_key())]
    assert node_key.path.read_text().split("\n")[1] not in err


def test_unexpected_error_is_one_line_with_a_debug_hint(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = keygate("keygen", "--out", str(blocker / "keys"))
    assert done.returncode == ExitCode.INTERNAL
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("keygate: unexpected error in 'keygen' (")
    assert "--debug" in done.stderr and "KEYGATE_DEBUG=1" in done.stderr
    for debug in (
        keygate("--debug", "keygen", "--out", str(blocker / "keys")),
        keygate("keygen", "--out", str(blocker / "keys"), env={"KEYGATE_DEBUG": "1"}),
    ):
        assert debug.returncode == ExitCode.INTERNAL and "Traceback (most recent call last)" in debug.stderr


def test_usage_and_input_errors_exit_2_without_a_traceback(tmp_path):
    done = keygate("lint", str(tmp_path / "absent.yaml"))
    assert done.returncode == ExitCode.USAGE and done.stderr.startswith("keygate: cannot read")
    done = keygate("seal", "--namespace", "a", "--name", "b", "--recipient", str(tmp_path / "none.pub"))
    assert done.returncode == ExitCode.USAGE and "Traceback" not in done.stderr
    done = keygate("nonsense")
    assert done.returncode == ExitCode.USAGE and "Traceback" not in done.stderr


def test_version_flag_and_command_agree():
    flag, command = keygate("--version"), keygate("version")
    assert flag.returncode == command.returncode == 0
    assert flag.stdout == command.stdout and flag.stdout.startswith("keygate ")


def test_serve_without_cluster_access_names_flags_env_keys_and_local_options(short_tmp):
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KEYGATE_")}
    env["KUBERNETES_SERVICE_HOST"] = None
    done = keygate("serve", "--socket", str(short_tmp / "s.sock"), env=env)
    assert done.returncode == ExitCode.USAGE and "Traceback" not in done.stderr
    for option in ("kube_api_url", "kube_ca", "kube_token_file"):
        flag, var = "--" + option.replace("_", "-"), "KEYGATE_" + option.upper()
        assert f"{flag} ({var}, config key {option})" in done.stderr
    for local in ("--issuer-key-file", "--insecure-skip-image-check", "--insecure-skip-attestation"):
        assert local in done.stderr
    assert "(set by" not in done.stderr, "defaults nobody set must not be blamed"
    bad = keygate("serve", "--socket", str(short_tmp / "s.sock"), env={"KEYGATE_MOUNT_TIMEOUT": "soon"})
    assert bad.returncode == ExitCode.USAGE
    assert "--mount-timeout (KEYGATE_MOUNT_TIMEOUT, config key mount_timeout)" in bad.stderr


def test_start_up_errors_name_the_option_that_set_the_value(short_tmp):
    missing = short_tmp / "absent.key"
    done = keygate(
        "serve",
        "--socket",
        str(short_tmp / "s.sock"),
        "--insecure-skip-attestation",
        "--metrics-addr",
        "",
        "--sealed-key",
        str(missing),
    )
    assert done.returncode == ExitCode.USAGE and "Traceback" not in done.stderr
    assert f"cannot read sealing key {missing}" in done.stderr
    assert "(set by --sealed-key (KEYGATE_SEALED_KEY, config key sealed_key))" in done.stderr
    not_a_socket = short_tmp / "plain-file"
    not_a_socket.write_text("")
    done = keygate(
        "serve", "--socket", str(not_a_socket), "--insecure-skip-attestation", "--metrics-addr", ""
    )
    assert done.returncode == ExitCode.USAGE
    assert "(set by --socket (KEYGATE_SOCKET, config key socket))" in done.stderr


def test_demo_prints_its_spc_and_audit_file_and_the_shared_digest_hint(tmp_path):
    done = keygate("demo", "--keep", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "SecretProviderClass used" in done.stdout and "provider: keygate" in done.stdout
    assert "audit file: " in done.stdout
    assert pin_hint("nginx:1.27") in done.stdout  # the daemon's denial
    kept = tmp_path / "spc.yaml"
    decisions = [json.loads(line)["decision"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert decisions == ["release", "deny", "deny", "deny", "release", "revoke"]
    assert keygate("lint", str(kept)).returncode == ExitCode.OK
    # the kept policy and its key lint as the daemon loads them; the pod's image needs the signature
    web = tmp_path / "web.yaml"
    web.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: demo}\nspec:\n  serviceAccountName: web\n"
        f"  containers: [{{name: web, image: 'registry.example/example/web@sha256:{'3f' * 32}', "
        "volumeMounts: [{name: s, mountPath: /s}]}]\n"
        "  volumes: [{name: s, csi: {driver: secrets-store.csi.k8s.io, readOnly: true, "
        "volumeAttributes: {secretProviderClass: demo-secrets}}}]\n"
    )
    checked = keygate("lint", str(kept), str(web), "--policy", str(tmp_path / "policy.yaml"))
    assert checked.returncode == ExitCode.OK, checked.stdout
    assert "needs signatures: 'demo-release-key' (cosign key: " in checked.stdout
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: legacy, namespace: demo}\nspec:\n"
        "  containers: [{name: legacy, image: 'nginx:1.27', volumeMounts: [{name: s, mountPath: /s}]}]\n"
        "  volumes: [{name: s, csi: {driver: secrets-store.csi.k8s.io, readOnly: true, "
        "volumeAttributes: {secretProviderClass: demo-secrets}}}]\n"
    )
    linted = keygate("lint", str(kept), str(pod))
    assert linted.returncode == ExitCode.PROBLEMS and pin_hint("nginx:1.27") in linted.stdout

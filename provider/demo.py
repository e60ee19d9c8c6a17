"""``keygate demo``: the whole path on an embedded default, with nothing to install or configure.

It makes a throw-away node key, seals two sample values for namespace ``demo``, starts the
daemon on a temporary socket, sends a Mount shaped exactly like the driver's, and prints the
files returned (contents masked unless asked) and their object versions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc

from provider.config import Config
from provider.driver_client import DriverClient, Pod, mount_request
from provider.embedded import daemon_thread
from providers.sealed_format import generate_key, private_pem, seal

SAMPLES = {"db-password": b"correct horse battery staple", "api-token": b"tok_demo_0123456789"}


def _mask(value: bytes, show: bool) -> str:
    return value.decode("utf-8", "replace") if show else f"<{len(value)} bytes, masked>"


def run_demo(show_values: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="keygate-demo-") as tmp:
        key = generate_key()
        key_path = Path(tmp) / "node.key"
        key_path.write_bytes(private_pem(key))
        key_path.chmod(0o600)
        pod = Pod(namespace="demo", name="web-7d4b9", service_account="web")
        objects = "\n".join(
            [
                "- objectName: db-password",
                f"  sealed: {seal(SAMPLES['db-password'], pod.namespace, 'db-password', [key.public_key()])}",
                '  filePermission: "0400"',
                "- objectName: api-token",
                "  objectAlias: tokens/api",
                f"  sealed: {seal(SAMPLES['api-token'], pod.namespace, 'api-token', [key.public_key()])}",
            ]
        )
        config = Config(socket=str(Path(tmp) / "keygate.sock"), sealed_key=(str(key_path),), metrics_addr="")
        print(f"keygate demo: daemon on {config.socket}, node key {key_path}")
        with daemon_thread(config), DriverClient(config.socket) as client:
            version = client.version()
            print(f"Version RPC: {version.runtime_name} {version.runtime_version}")
            request = mount_request("demo-secrets", {"objects": objects}, pod, permission=0o644)
            print(f'Mount for pod {pod.namespace}/{pod.name} (SPC demo-secrets, permission "420")')
            response = client.mount(request)
            print(f"{'path':<16} {'mode':<6} contents")
            for f in response.files:
                print(f"{f.path:<16} {oct(f.mode)[2:]:0>4}   {_mask(f.contents, show_values)}")
            print("object versions:")
            for v in response.object_version:
                print(f"  {v.id:<22} {v.version}")
            print("Mount of the same SPC from namespace 'other' (the sealed values are bound to 'demo'):")
            stranger = Pod(namespace="other", name="web-x", service_account="web")
            try:
                client.mount(mount_request("demo-secrets", {"objects": objects}, stranger))
                print("  unexpectedly allowed")
                return 1
            except grpc.RpcError as err:
                print(f"  refused: {err.code().name}: {err.details()}")
    return 0

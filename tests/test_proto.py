"""The committed stubs must be exactly what proto/service.proto generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generate(tmp_path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("kg_generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    return tmp_path / "provider" / "wire"


def test_generated_stubs_match_proto(tmp_path: Path) -> None:
    fresh = _generate(tmp_path)
    committed = ROOT / "provider" / "wire"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == ["service_pb2.py", "service_pb2.pyi", "service_pb2_grpc.py", "service_pb2_grpc.pyi"]
    for name in names:
        assert (committed / name).read_text() == (fresh / name).read_text(), (
            f"provider/wire/{name} drifted from proto/service.proto: run 'python proto/generate.py'"
        )


def test_field_numbers_follow_the_driver_contract() -> None:
    from provider.wire import service_pb2 as pb

    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert pb.DESCRIPTOR.package == "v1alpha1"
    assert numbers(pb.MountRequest) == {
        "attributes": 1,
        "secrets": 2,
        "target_path": 3,
        "permission": 4,
        "current_object_version": 5,
    }
    assert numbers(pb.MountResponse) == {"object_version": 1, "error": 2, "files": 3}
    assert numbers(pb.File) == {"path": 1, "mode": 2, "contents": 3}
    assert numbers(pb.VersionResponse) == {"version": 1, "runtime_name": 2, "runtime_version": 3}
    service = pb.DESCRIPTOR.services_by_name["CSIDriverProvider"]
    assert sorted(m.name for m in service.methods) == ["Mount", "Version"]

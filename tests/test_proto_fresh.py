"""The committed src/shoal/rpc/_gen/ must be what scripts/gen_proto.py makes from proto/ today.

Two checks: the descriptors embedded in the committed modules equal protoc's reading of proto/ (this
holds whatever generator versions are installed, and catches a proto edited without regenerating),
and, with the generator versions the committed tree names, a fresh run writes the very same files
(this also catches hand edits and comment-only changes that reach the .pyi docstrings).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "src" / "shoal" / "rpc" / "_gen"
sys.path.insert(0, str(ROOT / "scripts"))
import gen_proto  # noqa: E402


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _without_json_names(proto: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """protoc fills ``json_name`` in descriptor sets but leaves it out of the descriptors it embeds."""
    proto = descriptor_pb2.FileDescriptorProto.FromString(proto.SerializeToString())
    messages = list(proto.message_type)
    while messages:
        message = messages.pop()
        for field in [*message.field, *message.extension]:
            field.ClearField("json_name")
        messages.extend(message.nested_type)
    for field in proto.extension:
        field.ClearField("json_name")
    return proto


def test_committed_descriptors_match_proto_sources(tmp_path: Path) -> None:
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    include = Path(protoc.__file__).parent / "_proto"
    files = gen_proto.proto_files()
    assert files, "no .proto files found under proto/"
    code = protoc.main(["protoc", f"-I{gen_proto.PROTO_DIR}", f"-I{include}", f"--descriptor_set_out={out}", *files])
    assert code == 0, "protoc could not compile proto/"
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for proto in fresh.file:
        module_name = f"{gen_proto.GEN_PACKAGE}.{proto.name.removesuffix('.proto').replace('/', '.')}_pb2"
        module = importlib.import_module(module_name)
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        stale = _without_json_names(committed) != _without_json_names(proto)
        assert not stale, f"{module_name} is stale: run `python scripts/gen_proto.py`"
        importlib.import_module(module_name + "_grpc")


@pytest.mark.e2e
def test_regenerating_writes_the_committed_files(tmp_path: Path) -> None:
    committed = _tree(GEN)
    assert committed, "src/shoal/rpc/_gen/ is missing: run `python scripts/gen_proto.py`"
    versions = ", ".join(f"{k} {v}" for k, v in gen_proto.tool_versions().items())
    if versions not in committed["__init__.py"]:
        pytest.skip(f"_gen/ was made with other generator versions than the installed {versions}")
    out = tmp_path / "_gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(out)], check=True)
    fresh = _tree(out)
    assert sorted(fresh) == sorted(committed), "generated file list differs: run `python scripts/gen_proto.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `python scripts/gen_proto.py`"

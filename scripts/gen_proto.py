"""Regenerate src/shoal/rpc/_gen/ from proto/: messages, gRPC stubs and their type stubs.

    python scripts/gen_proto.py            # rewrite src/shoal/rpc/_gen/
    python scripts/gen_proto.py --out DIR  # write elsewhere (tests/test_proto_fresh.py compares the two)

protoc runs in-process from grpcio-tools; the .pyi files come from mypy-protobuf's plugins, found beside
the running Python. protoc names modules after the proto path (``shoal.v1.tasks_pb2``), which would
collide with the ``shoal`` package itself, so every reference to a generated module is rewritten to its
real place under ``shoal.rpc._gen``. The output depends only on proto/ and on the versions of the tools,
which are written into ``_gen/__init__.py`` so a stale or differently-built copy is easy to tell.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "src" / "shoal" / "rpc" / "_gen"
#: Where the generated tree lives as a Python package.
GEN_PACKAGE = "shoal.rpc._gen"
TOOLS = ("grpcio-tools", "mypy-protobuf")


def tool_versions() -> dict[str, str]:
    """The versions of the generators; different versions write (slightly) different code."""
    return {name: importlib.metadata.version(name) for name in TOOLS}


def proto_files(proto_dir: Path = PROTO_DIR) -> list[str]:
    """Every .proto under ``proto_dir``, relative to it, in a fixed order."""
    return sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed beside this Python (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install mypy-protobuf into this environment")
    return found


def run_protoc(proto_dir: Path, out: Path) -> None:
    """Run protoc with the python, grpc_python and mypy plugins over every proto file."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto shipped with grpcio-tools
    files = proto_files(proto_dir)
    if not files:
        raise SystemExit(f"no .proto files under {proto_dir}")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def _module_name(path: Path, out: Path) -> str:
    return ".".join(path.relative_to(out).with_suffix("").parts)


def fix_imports(out: Path) -> None:
    """Point every reference to a generated module at ``shoal.rpc._gen.<module>``."""
    sources = sorted(p for p in out.rglob("*") if p.suffix in (".py", ".pyi"))
    modules = sorted({_module_name(p, out) for p in sources}, key=len, reverse=True)
    if not modules:
        return
    names = "|".join(re.escape(m) for m in modules)
    # `from shoal.v1 import tasks_pb2 as x`: protoc's form for the grpc module.
    from_import = re.compile(r"^(\s*from )([\w.]+)( import )(\w+)", re.MULTILINE)
    # `import shoal.v1.tasks_pb2`, `shoal.v1.tasks_pb2.Task` in stubs, and the module name protoc
    # passes to the descriptor builder.
    dotted = re.compile(rf"(?<![\w.])({names})(?![\w])")
    generated = set(modules)

    def from_sub(m: re.Match[str]) -> str:
        if f"{m.group(2)}.{m.group(4)}" in generated:
            return f"{m.group(1)}{GEN_PACKAGE}.{m.group(2)}{m.group(3)}{m.group(4)}"
        return m.group(0)

    for path in sources:
        text = path.read_text()
        text = from_import.sub(from_sub, text)
        text = dotted.sub(lambda m: f"{GEN_PACKAGE}.{m.group(1)}", text)
        path.write_text(text)


def add_packages(out: Path) -> None:
    """Make every directory of the tree a package; the top one says where it came from."""
    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items())
    (out / "__init__.py").write_text(
        f'"""Generated from proto/ by scripts/gen_proto.py ({versions}); do not edit."""\n'
    )
    for directory in sorted(p for p in out.rglob("*") if p.is_dir()):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")


def generate(out: Path, proto_dir: Path = PROTO_DIR) -> None:
    """Write the whole generated tree into ``out``, replacing what was there."""
    with tempfile.TemporaryDirectory(prefix="shoal-proto-") as tmp:
        staging = Path(tmp) / "_gen"
        staging.mkdir()
        run_protoc(proto_dir, staging)
        fix_imports(staging)
        add_packages(staging)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GEN_DIR, help="output directory (default: src/shoal/rpc/_gen)")
    args = parser.parse_args(argv)
    generate(args.out.resolve())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

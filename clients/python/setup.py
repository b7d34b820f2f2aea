"""Build hook: generates the gRPC stubs from the agentd .proto files.

The stubs (``agentd/v1/*_pb2.py``, ``*_pb2_grpc.py`` and ``.pyi`` types) are
written straight into the build directory by grpcio-tools each time the
package is built, so they always match the protos and are never edited by
hand. They live in the top-level package ``agentd.v1``, mirroring the proto
package, because that is the import path protoc writes into them.

The proto directory is ``../../proto`` relative to this file, or
``$AGENTD_PROTO_DIR``.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def proto_dir() -> Path:
    root = Path(os.environ.get("AGENTD_PROTO_DIR", HERE.parent.parent / "proto"))
    if not (root / "agentd" / "v1").is_dir():
        raise SystemExit(f"agentd protos not found under {root}; set AGENTD_PROTO_DIR")
    return root


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    root = proto_dir()
    protos = sorted(str(p) for p in (root / "agentd" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed to generate the agentd stubs")
    for package in (out / "agentd", out / "agentd" / "v1"):
        init = package / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/agentd/v1 by grpcio-tools; do not edit."""\n')
        (package / "py.typed").write_text("")


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(Path(self.build_lib))


setup(cmdclass={"build_py": BuildWithStubs})

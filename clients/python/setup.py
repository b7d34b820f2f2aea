"""Build hook: generates the gRPC stubs from the agentd .proto files.

The stubs (``agentd/v1/*_pb2.py``, ``*_pb2_grpc.py`` and ``.pyi`` types) are
written straight into the build directory by grpcio-tools each time the
package is built, so they always match the protos and are never edited by
hand. They live in the top-level package ``agentd.v1``, mirroring the proto
package, because that is the import path protoc writes into them.

The protos come from ``$AGENTD_PROTO_DIR`` when set, else from ``proto/``
beside this file (where a source distribution carries them: the sdist
command copies them in, so an sdist builds anywhere), else from the
repository's ``../../proto``.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def proto_dir() -> Path:
    candidates = (
        [Path(os.environ["AGENTD_PROTO_DIR"])]
        if os.environ.get("AGENTD_PROTO_DIR")
        else [HERE / "proto", HERE.parent.parent / "proto"]
    )
    for root in candidates:
        if (root / "agentd" / "v1").is_dir():
            return root
    raise SystemExit(
        f"agentd protos not found under {', '.join(map(str, candidates))}; set AGENTD_PROTO_DIR"
    )


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


class SdistWithProtos(sdist):
    """Puts the .proto files the stubs are generated from into the source
    distribution, under proto/, so that building it needs no checkout."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        source = proto_dir() / "agentd" / "v1"
        target = Path(base_dir) / "proto" / "agentd" / "v1"
        target.mkdir(parents=True, exist_ok=True)
        for proto in sorted(source.glob("*.proto")):
            shutil.copy2(proto, target / proto.name)


setup(cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithProtos})

"""The package builds away from the repository: its source distribution
carries the .proto files the stubs are generated from, and a wheel built
from that sdist in an unrelated directory holds working stubs."""

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def backend(call: str, cwd: Path, out: Path) -> str:
    """Runs a PEP 517 hook of setuptools in `cwd`; returns the file it made."""
    script = (
        "import sys, setuptools.build_meta as b; "
        f"print(b.{call}(sys.argv[1]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENTD_PROTO_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def test_an_sdist_builds_a_working_wheel_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    sdist = dist / backend("build_sdist", HERE, dist)
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        assert any(n.endswith("proto/agentd/v1/memory.proto") for n in names), names
        archive.extractall(tmp_path / "unpacked", filter="data")
    (source,) = (tmp_path / "unpacked").iterdir()
    # Nothing of the repository is reachable from here.
    assert not (source.parent.parent / "proto").exists()

    wheels = tmp_path / "wheels"
    wheel = wheels / backend("build_wheel", source, wheels)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for stub in ("agentd/v1/memory_pb2.py", "agentd/v1/query_pb2_grpc.py", "agentd/v1/memory_pb2.pyi"):
        assert stub in names, names

    check = subprocess.run(
        [sys.executable, "-c",
         "from agentd.v1 import memory_pb2; print(memory_pb2.PutRequest(key='k').key)"],
        env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "k"

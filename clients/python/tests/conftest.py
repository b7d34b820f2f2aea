"""Starts the real agentd binary on a free loopback port for the tests.

The binary is ``$AGENTD_BIN``, else the release build under
``$CARGO_TARGET_DIR`` (``scripts/test`` builds it first).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fake_openai import FakeOpenAI


def agentd_binary() -> Path:
    explicit = os.environ.get("AGENTD_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/agentd/target"))
    return Path(target) / "release" / "agentd"


def model_dir() -> Path:
    """all-MiniLM-L6-v2, put under models/ by scripts/fetch-models."""
    explicit = os.environ.get("AGENTD_TEST_MODEL_DIR")
    path = Path(explicit) if explicit else Path(__file__).resolve().parents[3] / "models" / "all-MiniLM-L6-v2"
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"all-MiniLM-L6-v2 not found in {path}: run scripts/fetch-models")
    return path


def local_model() -> Path:
    """Gemma 3 270M (GGUF), put under models/ by scripts/fetch-models."""
    path = Path(__file__).resolve().parents[3] / "models" / "gemma-3-270m" / "gemma-3-270m-Q4_K_M.gguf"
    if not path.exists():
        raise RuntimeError(f"Gemma 3 270M not found at {path}: run scripts/fetch-models")
    return path


def write_config(directory: Path, openai_url: str) -> None:
    """agentd.toml in the server's working directory: two aliases of the
    local model, so sessions can switch model with no network, and `tools`,
    an OpenAI-compatible alias served by the fake at `openai_url`."""
    gguf = local_model()
    aliases = "".join(
        f'[[query.models]]\nalias = "{alias}"\nprovider = "local"\nmodel_id = "gemma-3-270m"\n'
        f'path = "{gguf}"\ncontext_window = 2048\n\n'
        for alias in ("local", "local-b")
    )
    aliases += (
        f'[[query.models]]\nalias = "tools"\nprovider = "openai"\nmodel_id = "fake-tools"\n'
        f'base_url = "{openai_url}"\n\n'
    )
    # Short worker leases, so that the worker tests see lapses in seconds.
    agents = (
        '[agents]\nworker_heartbeat_interval = "200ms"\nworker_lease_timeout = "1500ms"\n'
        'worker_grace = "500ms"\n\n'
    )
    (directory / "agentd.toml").write_text("[query]\nlocal_threads = 2\n\n" + agents + aliases)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, tmp: Path) -> None:
        binary = agentd_binary()
        self.fake_openai = FakeOpenAI()
        write_config(tmp, self.fake_openai.url)
        if not binary.exists():
            raise RuntimeError(f"agentd binary not found at {binary}; run cargo build --release or set AGENTD_BIN")
        # The port is free when chosen; another process could take it before
        # agentd binds, so retry a few times rather than flake.
        for _ in range(5):
            self.port = free_port()
            self.target = f"127.0.0.1:{self.port}"
            self.log = open(tmp / f"agentd-{self.port}.log", "wb")
            self.process = subprocess.Popen(
                [str(binary), "serve", "--listen", self.target, "--data-dir", str(tmp / "data"),
                 "--shutdown-grace", "1s", "--embedding-model-dir", str(model_dir()),
                 "--metrics-listen", "off"],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
            if self._wait_serving():
                return
            self.stop()
        raise RuntimeError("agentd did not become healthy; see its log under " + str(tmp))

    def _wait_serving(self, timeout: float = 60.0) -> bool:
        """Until the server and the embedding model (loaded in the
        background) are both SERVING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with grpc.insecure_channel(self.target) as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    statuses = [
                        stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=1).status
                        for s in ("", "agentd.v1.EmbeddingService")
                    ]
                    if all(s == health_pb2.HealthCheckResponse.SERVING for s in statuses):
                        return True
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    running = RunningServer(tmp_path_factory.mktemp("agentd"))
    yield running
    running.stop()
    running.fake_openai.stop()

"""TLS (with a client certificate) and API keys, from Python, against the
real binary started with --tls-cert/--tls-key/--tls-client-ca and
--api-keys-file. Certificates come from scripts/test-certs (openssl)."""

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from agentd.v1 import embedding_pb2, memory_pb2
from agentd_client import AsyncClient, Client, error_details

from conftest import agentd_binary, free_port

ROOT = Path(__file__).resolve().parents[3]


def create_key(binary: Path, keys: Path, *args: str) -> str:
    out = subprocess.run(
        [str(binary), "keys", "create", "--keys-file", str(keys), *args],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


class SecureServer:
    def __init__(self, tmp: Path) -> None:
        binary = agentd_binary()
        certs = tmp / "certs"
        subprocess.run([str(ROOT / "scripts" / "test-certs"), str(certs)], check=True)
        self.ca = (certs / "ca.pem").read_bytes()
        self.client_cert = (certs / "client.pem").read_bytes()
        self.client_key = (certs / "client-key.pem").read_bytes()
        keys = tmp / "keys.toml"
        self.writer = create_key(binary, keys, "--scope", "write")
        self.reader = create_key(binary, keys, "--scope", "read")
        self.slow = create_key(binary, keys, "--scope", "read", "--requests-per-second", "1")
        self.port = free_port()
        # The certificate names localhost and 127.0.0.1.
        self.target = f"localhost:{self.port}"
        self.log = open(tmp / "agentd-secure.log", "wb")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(tmp / "data"), "--disable", "query,agents",
             "--metrics-listen", "off", "--shutdown-grace", "1s",
             "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server-key.pem"),
             "--tls-client-ca", str(certs / "ca.pem"), "--api-keys-file", str(keys)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.client() as client:
                    if client.health(timeout=1) == "SERVING":
                        return
            except grpc.RpcError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the TLS server did not start; see {tmp}")
            time.sleep(0.05)

    def client(self, **kwargs) -> Client:
        return Client(self.target, root_certificates=self.ca, certificate_chain=self.client_cert,
                      private_key=self.client_key, **kwargs)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    server = SecureServer(tmp_path_factory.mktemp("agentd-tls"))
    yield server
    server.stop()


def put(key: str) -> memory_pb2.PutRequest:
    return memory_pb2.PutRequest(namespace="secure", key=key, value=b"v")


def test_calls_over_mutual_tls_with_a_key(secure):
    with secure.client(api_key=secure.writer) as client:
        client.memory.Put(put("a"))
        assert client.memory.Get(memory_pb2.GetRequest(namespace="secure", key="a")).entry.value == b"v"

    async def read_back():
        async with AsyncClient(secure.target, root_certificates=secure.ca,
                               certificate_chain=secure.client_cert, private_key=secure.client_key,
                               api_key=secure.reader) as client:
            got = await client.memory.Get(memory_pb2.GetRequest(namespace="secure", key="a"))
            return got.entry.value

    assert asyncio.run(read_back()) == b"v"


def test_missing_and_insufficient_keys_are_reported_clearly(secure):
    with secure.client() as client:
        with pytest.raises(grpc.RpcError) as err:
            client.memory.Put(put("b"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        details = error_details(err.value)
        assert details.reason == "UNAUTHENTICATED" and details.is_auth_error
        assert "authorization: Bearer" in err.value.details()
    with secure.client(api_key=secure.reader) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.memory.Put(put("b"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(err.value).reason == "PERMISSION_DENIED"
        assert "needs write" in err.value.details()


def test_a_rate_limited_key_is_told_when_to_retry(secure):
    with secure.client(api_key=secure.slow) as client:
        request = embedding_pb2.ListModelsRequest()
        client.embedding.ListModels(request)
        with pytest.raises(grpc.RpcError) as err:
            client.embedding.ListModels(request)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error_details(err.value)
        assert details.reason == "RATE_LIMITED" and not details.is_auth_error
        assert 0 < details.retry_delay <= 1.0
        time.sleep(details.retry_delay + 0.05)
        client.embedding.ListModels(request)


def test_tls_without_a_client_certificate_or_trust_is_refused(secure):
    with Client(secure.target, root_certificates=secure.ca, api_key=secure.writer) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.memory.Put(put("c"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ValueError):
        Client(secure.target, certificate_chain=secure.client_cert)

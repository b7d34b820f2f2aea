"""Channel set-up and the per-service stubs."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentd.v1 import (
    agent_pb2_grpc,
    embedding_pb2_grpc,
    memory_pb2_grpc,
    query_pb2_grpc,
)

from ._auth import AsyncApiKeyInterceptors, ApiKeyInterceptor

#: Full names of the four agentd services, as health and reflection report them.
SERVICES = (
    "agentd.v1.EmbeddingService",
    "agentd.v1.MemoryService",
    "agentd.v1.QueryControlService",
    "agentd.v1.AgentService",
)

ChannelOptions = Sequence[Tuple[str, object]]


def _credentials(
    tls: bool,
    root_certificates: Optional[bytes],
    certificate_chain: Optional[bytes],
    private_key: Optional[bytes],
):
    """TLS credentials when asked for (``tls``, or any certificate given)."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mutual TLS)")
    if not (tls or root_certificates or certificate_chain):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=private_key,
        certificate_chain=certificate_chain,
    )


def _attach_stubs(client, channel) -> None:
    """One stub per service on `channel`; blocking and aio stubs are the
    same generated classes."""
    client.channel = channel
    client.embedding = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    client.memory = memory_pb2_grpc.MemoryServiceStub(channel)
    client.query = query_pb2_grpc.QueryControlServiceStub(channel)
    client.agents = agent_pb2_grpc.AgentServiceStub(channel)
    client.health_stub = health_pb2_grpc.HealthStub(channel)


def _status_name(status: int) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


class Client:
    """A blocking client. Use as a context manager, or call ``close()``.

    Args:
        target: ``host:port`` of the server, default ``127.0.0.1:50051``.
        tls: connect with TLS (implied by any of the certificates below).
        root_certificates: PEM roots for TLS; system roots when omitted.
        certificate_chain: PEM client certificate, for servers that require
            one (``--tls-client-ca``: mutual TLS); with ``private_key``.
        private_key: PEM key of ``certificate_chain``.
        api_key: sent as ``authorization: Bearer <api_key>`` on every call.
            A server that requires keys answers UNAUTHENTICATED without one
            and PERMISSION_DENIED for a key whose scope or namespaces do not
            cover the call; :func:`error_details` gives the reason.
        options: extra gRPC channel options.
        compression: e.g. ``grpc.Compression.Gzip`` for every call.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        api_key: Optional[str] = None,
        options: ChannelOptions = (),
        compression: Optional[grpc.Compression] = None,
    ) -> None:
        credentials = _credentials(tls, root_certificates, certificate_chain, private_key)
        if credentials is None:
            channel = grpc.insecure_channel(target, options=options, compression=compression)
        else:
            channel = grpc.secure_channel(
                target, credentials, options=options, compression=compression
            )
        if api_key:
            channel = grpc.intercept_channel(channel, ApiKeyInterceptor(api_key))
        _attach_stubs(self, channel)

    def health(self, service: str = "", timeout: Optional[float] = 5.0) -> str:
        """The serving status of ``service`` ("" for the whole server), by
        name: "SERVING", "NOT_SERVING", ... Raises grpc.RpcError NOT_FOUND for a
        service the server does not serve."""
        response = self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
        return _status_name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """The same as :class:`Client` over ``grpc.aio``; every call is awaitable
    and streaming calls are async iterators. Use ``async with``."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        api_key: Optional[str] = None,
        options: ChannelOptions = (),
        compression: Optional[grpc.Compression] = None,
    ) -> None:
        interceptors = AsyncApiKeyInterceptors(api_key) if api_key else None
        credentials = _credentials(tls, root_certificates, certificate_chain, private_key)
        if credentials is None:
            channel = aio.insecure_channel(
                target, options=options, compression=compression, interceptors=interceptors
            )
        else:
            channel = aio.secure_channel(
                target,
                credentials,
                options=options,
                compression=compression,
                interceptors=interceptors,
            )
        _attach_stubs(self, channel)

    async def health(self, service: str = "", timeout: Optional[float] = 5.0) -> str:
        """See :meth:`Client.health`."""
        response = await self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
        return _status_name(response.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

"""Adds ``authorization: Bearer <key>`` to every call, for servers or proxies
that require an API key. Works on plaintext channels too, where gRPC call
credentials are refused."""

from __future__ import annotations

import collections

import grpc
from grpc import aio


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


def _with_key(details, key: str):
    metadata = list(details.metadata or [])
    metadata.append(("authorization", f"Bearer {key}"))
    return _CallDetails(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class ApiKeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Blocking-channel interceptor for all four call shapes."""

    def __init__(self, key: str) -> None:
        self._key = key

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_with_key(details, self._key), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_with_key(details, self._key), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(_with_key(details, self._key), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(_with_key(details, self._key), requests)


class _AioDetails(
    collections.namedtuple(
        "_AioDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")
    ),
    aio.ClientCallDetails,
):
    pass


def _aio_with_key(details, key: str):
    metadata = aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {key}")
    return _AioDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AioUnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_aio_with_key(details, self._key), request)


class _AioUnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_aio_with_key(details, self._key), request)


class _AioStreamUnary(aio.StreamUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_stream_unary(self, continuation, details, requests):
        return await continuation(_aio_with_key(details, self._key), requests)


class _AioStreamStream(aio.StreamStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_stream_stream(self, continuation, details, requests):
        return await continuation(_aio_with_key(details, self._key), requests)


def AsyncApiKeyInterceptors(key: str):
    """grpc.aio needs one interceptor object per call shape."""
    return [_AioUnaryUnary(key), _AioUnaryStream(key), _AioStreamUnary(key), _AioStreamStream(key)]

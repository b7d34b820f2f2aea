"""A thin, idiomatic wrapper over the generated agentd gRPC stubs.

``Client`` (blocking) and ``AsyncClient`` (``grpc.aio``) open one channel to an
agentd server and expose one stub per service:

- ``embedding``: ``agentd.v1.EmbeddingService``
- ``memory``: ``agentd.v1.MemoryService``
- ``query``: ``agentd.v1.QueryControlService``
- ``agents``: ``agentd.v1.AgentService``
- ``health_stub``: ``grpc.health.v1.Health``

Request and response messages are the generated ones, importable from
``agentd.v1`` (e.g. ``from agentd.v1 import memory_pb2``). ``tool`` and
``arguments`` build tool definitions from dicts and read a call's arguments
as one. ``Worker`` serves a spec as an external worker (see its docs).
"""

from ._client import AsyncClient, Client, SERVICES
from ._errors import ErrorDetails, error_details
from ._tools import arguments, tool
from ._worker import TaskContext, TaskFailed, Worker

__all__ = [
    "Client",
    "AsyncClient",
    "SERVICES",
    "ErrorDetails",
    "error_details",
    "tool",
    "arguments",
    "Worker",
    "TaskContext",
    "TaskFailed",
]

"""Tool calling helpers: tool definitions from plain dicts (a JSON Schema as
a ``dict``), and a call's arguments back as a ``dict``.

``google.protobuf.Struct`` is awkward to build by hand; these two functions
are the only places a tool loop needs it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct

from agentd.v1 import query_pb2

_LOCATIONS = {
    "client": query_pb2.TOOL_LOCATION_CLIENT,
    "server": query_pb2.TOOL_LOCATION_SERVER,
    "worker": query_pb2.TOOL_LOCATION_WORKER,
}


def tool(
    name: str,
    description: str = "",
    parameters: Optional[Dict[str, Any]] = None,
    location: str = "client",
    timeout_seconds: Optional[float] = None,
    worker_capability: str = "",
) -> query_pb2.ToolDefinition:
    """A ``ToolDefinition`` for ``StartCommand.tools``.

    Args:
        name: what the model calls it by.
        description: what it does, for the model (empty for server tools).
        parameters: JSON Schema of the arguments, as a dict (``None``: no
            arguments; leave it ``None`` for server tools).
        location: ``"client"`` (you run it and send the result),
            ``"server"`` (an agentd built-in: ``memory_search``,
            ``memory_get``, ``memory_put``, ``embed``) or ``"worker"``.
        timeout_seconds: how long a call may wait for its result.
        worker_capability: for worker tools, the capability needed.
    """
    if location not in _LOCATIONS:
        raise ValueError(f"location must be one of {sorted(_LOCATIONS)}, got {location!r}")
    definition = query_pb2.ToolDefinition(
        name=name,
        description=description,
        location=_LOCATIONS[location],
        worker_capability=worker_capability,
    )
    if parameters is not None:
        schema = Struct()
        schema.update(parameters)
        definition.parameters.CopyFrom(schema)
    if timeout_seconds is not None:
        duration = Duration()
        duration.FromNanoseconds(int(timeout_seconds * 1e9))
        definition.timeout.CopyFrom(duration)
    return definition


def arguments(call: Any) -> Dict[str, Any]:
    """The arguments of a ``ToolCallEvent`` or ``ToolCall`` as a dict.

    Raises ``ValueError`` for a call whose arguments were not a JSON object
    (``invalid_arguments`` is set; agentd answers such a call itself)."""
    if call.invalid_arguments:
        raise ValueError(f"the model's arguments were not a JSON object: {call.invalid_arguments!r}")
    return json_format.MessageToDict(call.arguments)

"""Decodes the google.rpc details agentd attaches to every error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class ErrorDetails:
    """What an agentd error says beyond its code and message."""

    #: ErrorInfo reason, an ``agentd.v1.ErrorReason`` name without its prefix
    #: (e.g. "INVALID_FIELD", "NOT_IMPLEMENTED"); empty if absent.
    reason: str = ""
    #: ErrorInfo domain ("agentd.dev").
    domain: str = ""
    #: ErrorInfo metadata (e.g. {"engine": "memory engine"}).
    metadata: Dict[str, str] = field(default_factory=dict)
    #: (field, description) of each invalid field.
    field_violations: List[Tuple[str, str]] = field(default_factory=list)
    #: Seconds to wait before retrying (google.rpc.RetryInfo), when the
    #: server says waiting is enough: a key over its rate ("RATE_LIMITED").
    retry_delay: Optional[float] = None

    @property
    def is_auth_error(self) -> bool:
        """The server refused the call's API key: none or an unknown one
        ("UNAUTHENTICATED"), or one that may not do this
        ("PERMISSION_DENIED": its scope or namespaces)."""
        return self.reason in ("UNAUTHENTICATED", "PERMISSION_DENIED")


def error_details(error: grpc.RpcError) -> Optional[ErrorDetails]:
    """The details of ``error``, or None when it carries none (e.g. an error
    raised by the transport rather than by agentd)."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    details = ErrorDetails()
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            details.reason = info.reason
            details.domain = info.domain
            details.metadata = dict(info.metadata)
        elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
            details.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
            details.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return details

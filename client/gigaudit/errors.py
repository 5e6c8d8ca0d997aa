"""`GigauditError`: a failed call or operation with the server's status code, message and `google.rpc` details."""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DETAIL_TYPES = (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo,
                error_details_pb2.PreconditionFailure, error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo,
                error_details_pb2.DebugInfo, error_details_pb2.Help, error_details_pb2.LocalizedMessage)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class GigauditError(Exception):
    """`code` (grpc.StatusCode), `message` and `details` (unpacked google.rpc detail messages)."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list | None = None):
        self.code, self.message, self.details = code, message, list(details or [])
        super().__init__(self.describe())

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "GigauditError":
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
        if status is not None:
            return cls.from_status(status)
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        message = error.details() if isinstance(error, grpc.Call) else str(error)
        return cls(code, message or "")

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> "GigauditError":
        return cls(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message,
                   [_unpack(d) for d in status.details])

    def describe(self) -> str:
        """One line for the code and message, then one line per detail."""
        lines = [f"{self.code.name}: {self.message}"]
        for d in self.details:
            if isinstance(d, error_details_pb2.BadRequest):
                lines += [f"  field {v.field}: {v.description}" for v in d.field_violations]
            elif isinstance(d, error_details_pb2.PreconditionFailure):
                lines += [f"  precondition {v.subject}: {v.description}" for v in d.violations]
            elif isinstance(d, error_details_pb2.QuotaFailure):
                lines += [f"  quota {v.subject}: {v.description}" for v in d.violations]
            elif isinstance(d, error_details_pb2.ResourceInfo):
                lines.append(f"  resource {d.resource_type} {d.resource_name}: {d.description}")
            elif isinstance(d, error_details_pb2.ErrorInfo):
                meta = ", ".join(f"{k}={v}" for k, v in sorted(d.metadata.items()))
                lines.append(f"  reason {d.reason} ({d.domain}){': ' + meta if meta else ''}")
            elif isinstance(d, any_pb2.Any):
                lines.append(f"  detail {d.type_url}")
            else:
                lines.append(f"  {type(d).__name__}: {str(d).strip()}")
        return "\n".join(lines)

    def one_line(self) -> str:
        """`describe()` on one line: the details follow the message, separated by "; ". What the message says
        already is left out (the server's message usually repeats its violation's description), and long lists
        (of keys, of architectures) are capped to a few items."""
        from gigaudit.suggest import cap_lists

        first, *rest = self.describe().splitlines()
        rest = [line.strip() for line in rest if not self._repeats_message(line)]
        return cap_lists(first + (" (" + "; ".join(rest) + ")" if rest else ""))

    def _repeats_message(self, line: str) -> bool:
        """Whether a detail line only repeats the message: its description is in the message, or it is the
        ErrorInfo whose reason is the status code and whose values the message names."""
        line = line.strip()
        for d in self.details:
            if isinstance(d, error_details_pb2.ErrorInfo) and line.startswith(f"reason {d.reason} "):
                return d.reason == self.code.name and all(str(v) in self.message for v in d.metadata.values())
        _, _, description = line.partition(": ")
        return bool(description) and description in self.message


def _unpack(detail: any_pb2.Any):
    for kind in DETAIL_TYPES:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return detail

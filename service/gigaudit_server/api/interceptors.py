"""Helpers for gRPC server interceptors: wrap a method's behaviour, or refuse the call with a rich status."""
from __future__ import annotations

from collections.abc import Callable

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gigaudit_server.api.errors import DOMAIN, ApiError

Behavior = Callable  # (request or request iterator, context) -> response or response iterator


def kind_of(handler: grpc.RpcMethodHandler) -> str:
    """``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``: the handler's behaviour field."""
    return (f"{'stream' if handler.request_streaming else 'unary'}_"
            f"{'stream' if handler.response_streaming else 'unary'}")


def wrap(handler: grpc.RpcMethodHandler | None, around: Callable[[Behavior], Behavior]):
    """The handler with its behaviour replaced by ``around(behaviour)``; None (unknown method) stays None."""
    if handler is None:
        return None
    kind = kind_of(handler)
    return handler._replace(**{kind: around(getattr(handler, kind))})


def abort(context: grpc.ServicerContext, error: ApiError) -> None:
    """End the call with ``error``'s status and details (raises)."""
    context.abort_with_status(rpc_status.to_status(error.status()))


def refuse(handler: grpc.RpcMethodHandler | None, error: ApiError):
    """The handler with a behaviour that only aborts with ``error`` (its requests are never read)."""
    def around(_behavior: Behavior) -> Behavior:
        def aborting(request, context):
            abort(context, error)
        return aborting
    return wrap(handler, around)


def refusal(code: grpc.StatusCode, message: str, reason: str, **metadata: str) -> ApiError:
    """An error with an ``ErrorInfo`` detail, for an interceptor to refuse a call with."""
    return ApiError(code, message, [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)])

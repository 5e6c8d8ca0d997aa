"""Exceptions → ``google.rpc.Status`` with details (BadRequest, ResourceInfo, PreconditionFailure, ErrorInfo).

Servicers raise :class:`ApiError` (built by the helpers below) or let library errors through; :func:`handle_errors`
turns either into a gRPC status with details: ``ValueError`` → INVALID_ARGUMENT, ``TimeoutError`` →
DEADLINE_EXCEEDED, Redis connection errors → UNAVAILABLE, anything else → INTERNAL (logged, not leaked). A missing
resource must be answered explicitly (:func:`not_found`): a stray ``KeyError`` is a bug and surfaces as INTERNAL.
"""
from __future__ import annotations

import functools
import inspect
import logging

import grpc
import redis.exceptions
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "gigaudit"
log = logging.getLogger(__name__)


MAX_TEXT = 512  # characters of a message or description: statuses travel in trailers, which have a size limit


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, cut to ``limit`` characters (a client may send huge names and tokens that errors quote)."""
    return text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text)} characters)"


class ApiError(Exception):
    """An error with its status code and ``google.rpc`` detail messages (texts clipped to :data:`MAX_TEXT`)."""

    def __init__(self, code: grpc.StatusCode, message: str, details=()):
        message = clip(message, 2 * MAX_TEXT)
        super().__init__(message)
        self.code, self.message, self.details = code, message, list(details)

    def status(self) -> status_pb2.Status:
        packed = []
        for detail in self.details:
            packed.append(any_pb2.Any())
            packed[-1].Pack(detail)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


def _info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)


def invalid_argument(violations: dict[str, str], message: str | None = None) -> ApiError:
    """INVALID_ARGUMENT with one BadRequest field violation per ``{field: description}``."""
    violations = {clip(f, 128): clip(d) for f, d in violations.items()}
    text = message or "; ".join(f"{f}: {d}" for f, d in violations.items())
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations.items()])
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, text, [bad, _info("INVALID_ARGUMENT")])


def not_found(resource_type: str, name: str) -> ApiError:
    name = clip(name)
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{resource_type} {name!r} not found", [
        error_details_pb2.ResourceInfo(resource_type=resource_type, resource_name=name, description="not found"),
        _info("RESOURCE_NOT_FOUND", name=name)])


def already_exists(resource_type: str, name: str, description: str | None = None) -> ApiError:
    name = clip(name)
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, description or f"{resource_type} {name!r} already exists", [
        error_details_pb2.ResourceInfo(resource_type=resource_type, resource_name=name,
                                       description=description or "exists"),
        _info("RESOURCE_EXISTS", name=name)])


def failed_precondition(subject: str, description: str, kind: str = "STATE") -> ApiError:
    subject, description = clip(subject), clip(description, 2 * MAX_TEXT)
    failure = error_details_pb2.PreconditionFailure(violations=[
        error_details_pb2.PreconditionFailure.Violation(type=kind, subject=subject, description=description)])
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"{subject}: {description}",
                    [failure, _info("FAILED_PRECONDITION", subject=subject)])


def unavailable(message: str, reason: str = "UNAVAILABLE") -> ApiError:
    """UNAVAILABLE: a retry later may succeed (no worker answered, a store refused a write)."""
    return ApiError(grpc.StatusCode.UNAVAILABLE, message, [_info(reason)])


def resource_exhausted(subject: str, description: str) -> ApiError:
    quota = error_details_pb2.QuotaFailure(violations=[
        error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)])
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{subject}: {description}",
                    [quota, _info("RESOURCE_EXHAUSTED", subject=subject)])


def to_status(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` an exception is reported as."""
    if isinstance(exc, ApiError):
        return exc.status()
    if isinstance(exc, ValueError):
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT, clip(str(exc)), [_info("INVALID_ARGUMENT")]).status()
    if isinstance(exc, TimeoutError):
        return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "timed out", [_info("TIMEOUT")]).status()
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return ApiError(grpc.StatusCode.UNAVAILABLE, "the job store (Redis) is unreachable",
                        [_info("BACKEND_UNAVAILABLE")]).status()
    log.exception("internal error", exc_info=exc)
    return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error ({type(exc).__name__})")


def handle_errors(method):
    """Decorate a servicer method (unary or server-streaming) so that exceptions become rich gRPC statuses."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                context.abort_with_status(rpc_status.to_status(to_status(exc)))
        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            context.abort_with_status(rpc_status.to_status(to_status(exc)))
    return unary

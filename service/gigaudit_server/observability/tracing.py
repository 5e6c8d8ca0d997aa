"""OpenTelemetry tracing from the API through the queue to the worker; off by default.

``setup(mode)`` installs this process's tracer provider: ``console`` prints spans, ``otlp`` exports them to an OTLP
collector (gRPC, ``--otlp-endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``), or any exporter (tests: the in-memory one).
It is kept here rather than as OpenTelemetry's global provider, which can be set only once per process.

The trace: :class:`ServerInterceptor` starts a server span per RPC (continuing a ``traceparent`` the client sent);
a job submitted inside it records :func:`current_traceparent` (W3C trace context); the worker continues that trace
with :func:`job_span` around the handler; :func:`trace_id` of the job's traceparent is ``OperationMetadata.trace_id``.
"""
from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

MODES = ("off", "console", "otlp")
UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                     "grpc.reflection.v1.ServerReflection")  # probes every few seconds: noise
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_TRACER = trace.NoOpTracer()
_provider: TracerProvider | None = None


def setup(mode: str, *, endpoint: str | None = None, service_name: str = "gigaudit",
          exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install the tracer provider for ``mode`` (``off``: none, spans cost nothing); ``exporter`` replaces the
    exporter of another mode (spans are then exported as they end, not batched). Replaces an earlier setup.
    ValueError on a bad mode."""
    if mode not in MODES:
        raise ValueError(f"tracing must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off" and exporter is not None:
        raise ValueError("tracing 'off' exports nothing: pass an exporter with another mode")
    shutdown()
    if mode == "off":
        return None
    global _provider
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _provider = provider
    log.info("tracing on: %s%s", "custom exporter" if exporter is not None else mode,
             f" to {endpoint}" if endpoint and exporter is None and mode == "otlp" else "")
    return provider


def shutdown() -> None:
    """Export what is pending and turn tracing off (no-op when off)."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _provider is not None


def tracer() -> trace.Tracer:
    """gigaudit's tracer (a no-op one while tracing is off)."""
    return _provider.get_tracer("gigaudit") if _provider is not None else _NO_TRACER


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (what a job submitted now carries); None when there is none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def trace_id(traceparent: str | None) -> str:
    """The 32 hex digits of a ``traceparent``'s trace id; empty for None or a malformed one."""
    match = _TRACEPARENT.fullmatch(traceparent or "")
    return match.group(1) if match else ""


@contextlib.contextmanager
def job_span(job, worker: str) -> Iterator[trace.Span]:
    """A consumer span for one attempt of ``job`` on ``worker``, child of the span that submitted it (its
    ``trace``). A handler's exception marks it ERROR; a cancel or hand-back (``JobAborted``) is recorded as an
    attribute, not an error."""
    parent = _PROPAGATOR.extract({"traceparent": job.trace}) if getattr(job, "trace", None) else None
    attributes = {"gigaudit.job.id": job.id, "gigaudit.job.kind": job.kind, "gigaudit.job.attempt": job.attempt,
                  "gigaudit.worker": worker}
    if job.parent:
        attributes.update({"gigaudit.job.parent": job.parent, "gigaudit.job.shard": job.shard_index})
    with tracer().start_as_current_span(f"job {job.reduce_kind or job.kind}", context=parent, kind=SpanKind.CONSUMER,
                                        attributes=attributes) as span:
        try:
            yield span
        except Exception:
            raise  # recorded, with status ERROR, by the span
        except BaseException as exc:
            span.set_attribute("gigaudit.job.aborted", type(exc).__name__)
            raise


class ServerInterceptor(grpc.ServerInterceptor):
    """A server span per RPC (``rpc.*`` attributes, the gRPC status code; ERROR unless OK), current while the
    method runs. Health checks and reflection are not traced."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        service, _, name = method.lstrip("/").rpartition("/")
        if handler is None or service in UNTRACED_SERVICES:
            return handler
        carrier = {key: value for key, value in handler_call_details.invocation_metadata or ()
                   if key in ("traceparent", "tracestate") and isinstance(value, str)}
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def start_span() -> trace.Span:
            return tracer().start_span(method.lstrip("/"), context=_PROPAGATOR.extract(carrier),
                                       kind=SpanKind.SERVER, attributes=attributes)

        def traced(request, context):
            span = start_span()
            try:
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    response = behavior(request, context)
            except BaseException:
                _record_status(span, context, grpc.StatusCode.UNKNOWN)
                raise
            else:
                _record_status(span, context)
                return response
            finally:
                span.end()

        def traced_stream(request, context):
            """The span lasts as long as the responses; it is current only while the method computes one (the
            generator may be closed from another thread)."""
            span, responses = start_span(), None
            try:
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    responses = iter(behavior(request, context))
                while True:
                    with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                        try:
                            response = next(responses)
                        except StopIteration:
                            break
                    yield response
            except GeneratorExit:
                _record_status(span, context, grpc.StatusCode.CANCELLED)
                raise
            except BaseException:
                _record_status(span, context, grpc.StatusCode.UNKNOWN)
                raise
            else:
                _record_status(span, context)
            finally:
                if hasattr(responses, "close"):  # a stream the client left: end the method's generator now
                    responses.close()
                span.end()

        behavior = getattr(handler, _kind(handler))
        return handler._replace(**{_kind(handler): traced_stream if handler.response_streaming else traced})


def _kind(handler: grpc.RpcMethodHandler) -> str:
    """The handler's behaviour field: ``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``."""
    return (f"{'stream' if handler.request_streaming else 'unary'}_"
            f"{'stream' if handler.response_streaming else 'unary'}")


def _record_status(span: trace.Span, context: grpc.ServicerContext,
                   unset: grpc.StatusCode = grpc.StatusCode.OK) -> None:
    """The call's status code on the span: what the method set or aborted with, else ``unset``; ERROR unless OK."""
    code = context.code() or unset
    if isinstance(code, int):  # grpc keeps the number when a method set one
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        details = context.details()
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {_text(details)}" if details else code.name))


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

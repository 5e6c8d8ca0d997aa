"""Structured logs: JSON lines (or plain text on a terminal) that carry the job, request and caller they belong to.

:func:`bind` puts fields (``job_id``, ``attempt``, ``request_id``, ``caller`` …) in a context variable for the code
inside it; :class:`ContextFilter` copies them, and the current trace and span ids, onto every record;
:class:`JsonFormatter` writes one JSON object per line, :class:`TextFormatter` the classic line with the fields
appended. :class:`LogContextInterceptor` binds ``request_id``, ``method`` and ``caller`` for each RPC; the worker
binds :func:`job_fields` around each job. :func:`setup` installs it all on the root logger.

Secrets never reach the output: tokens are not logged anywhere, and as a second line of defence every formatted
line has bearer tokens, ``authorization`` values and ``token=``/``password=``-style assignments masked.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO

import grpc

FORMATS = ("auto", "json", "text")
FIELDS = ("request_id", "method", "caller", "job_id", "kind", "attempt", "worker", "trace_id", "span_id")
REDACTED = "[redacted]"
_SECRETS = [  # (pattern, replacement); a credential is at least 8 characters, so "a bearer token" stays readable
    (re.compile(r"(?i)\b(bearer)\s+[^\s'\",;)\]}]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)\b((?:authorization|x-api-key|api[_-]?key|token|secret|password)"
                r"(?:\s*[:=]\s*|['\"]\s*[:=,]\s*)['\"]?)(?!\[redacted\]|bearer\s)[^\s'\",;)\]}]+"), rf"\1{REDACTED}"),
]
_REQUEST_ID_HEADER = "x-request-id"
_fields: contextvars.ContextVar[dict] = contextvars.ContextVar("gigaudit_log_fields", default={})


@contextlib.contextmanager
def bind(**fields) -> Iterator[None]:
    """Add ``fields`` (None and empty values are skipped) to every record logged inside, in this context."""
    token = _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None and v != ""}})
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a generator closed from another thread: not our context to reset
            _fields.reset(token)


def bound() -> dict:
    """The fields bound here."""
    return dict(_fields.get())


def job_fields(job, worker: str | None = None) -> dict:
    """The fields of a job's log lines: its id, kind and attempt, its caller (the owner) and the request id the
    caller gave (``request_id`` of the request that started it)."""
    request_id = (job.request_id or "").partition("|")[2] if job.request_id else ""
    return {"job_id": job.id, "kind": job.kind, "attempt": job.attempt, "caller": job.owner,
            "request_id": request_id, "worker": worker}


def redact(text: str) -> str:
    """``text`` with bearer tokens and secret-looking assignments masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    """Sets every :data:`FIELDS` attribute on a record: the bound fields, the current trace, else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        for name in FIELDS:
            if not hasattr(record, name) or getattr(record, name) is None:
                setattr(record, name, fields.get(name))
        if record.trace_id is None:
            record.trace_id, record.span_id = _current_trace()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the context
    fields that are set, ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _iso_time(record.created), "level": record.levelname, "logger": record.name,
                "message": redact(record.getMessage())}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                line[name] = value if isinstance(value, (int, float, bool)) else redact(str(value))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time logger LEVEL message [job_id=… attempt=… …]`` for people at a terminal."""

    def __init__(self):
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS
                           if name not in ("trace_id", "span_id") and getattr(record, name, None) not in (None, ""))
        head, newline, rest = text.partition("\n")  # the fields on the first line, before a traceback
        return redact(f"{head} [{context}]{newline}{rest}" if context else text)


def formatter(fmt: str, stream: IO | None = None) -> logging.Formatter:
    """The formatter for ``fmt``; ``auto`` is text when ``stream`` is a terminal, else JSON. ValueError else."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        fmt = "text" if _is_terminal(stream if stream is not None else sys.stderr) else "json"
    return TextFormatter() if fmt == "text" else JsonFormatter()


def setup(level: str | int = "INFO", fmt: str = "auto", stream: IO | None = None) -> logging.Handler:
    """Log to ``stream`` (default stderr) at ``level`` in ``fmt``, with the context fields; replaces the handlers
    a previous setup (or ``logging.basicConfig``) installed on the root logger."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, stream))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def add_format_flag(parser: argparse.ArgumentParser) -> None:
    """``--log-format auto|json|text`` (default: env GIGAUDIT_LOG_FORMAT, else auto)."""
    parser.add_argument("--log-format", default=os.environ.get("GIGAUDIT_LOG_FORMAT", "auto"), choices=FORMATS,
                        help="json: one JSON object per line, with job, request and caller fields; text: plain "
                             "lines; auto: text on a terminal, else json (default: auto; env GIGAUDIT_LOG_FORMAT)")


class LogContextInterceptor(grpc.ServerInterceptor):
    """Binds ``request_id`` (the client's ``x-request-id``, else the request's AIP-155 ``request_id``, else a new
    one), ``method`` and ``caller`` (``caller()``, read when the method starts) for each RPC. Place it after the
    authentication interceptor, so that the caller is known."""

    def __init__(self, caller: Callable[[], str | None] = lambda: None):
        self._caller = caller

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.lstrip("/")
        header = next((value for key, value in handler_call_details.invocation_metadata or ()
                       if key == _REQUEST_ID_HEADER and isinstance(value, str)), "")
        kind = f"{'stream' if handler.request_streaming else 'unary'}_" \
               f"{'stream' if handler.response_streaming else 'unary'}"
        behavior = getattr(handler, kind)

        def fields(request) -> dict:
            request_id = header[:128] or (getattr(request, "request_id", "") if not handler.request_streaming
                                          else "") or uuid.uuid4().hex[:16]
            return {"request_id": request_id, "method": method, "caller": self._caller()}

        def with_fields(request, context):
            with bind(**fields(request)):
                return behavior(request, context)

        def streaming_with_fields(request, context):
            with bind(**fields(request)):
                yield from behavior(request, context)

        return handler._replace(**{kind: streaming_with_fields if handler.response_streaming else with_fields})


def _current_trace() -> tuple[str | None, str | None]:
    try:
        from opentelemetry import trace
    except ImportError:  # tracing is optional for the log format
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _iso_time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

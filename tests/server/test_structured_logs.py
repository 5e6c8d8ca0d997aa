"""Structured logs: every line a JSON object; a job's lines carry its id, attempt, request id and caller, an RPC's
its request id, method and caller; tokens never appear; plain text on a terminal. Real gRPC, Redis, worker thread
and `python -m gigaudit_server serve`."""
from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import duration_pb2

import api_harness as h
from api_harness import store  # noqa: F401 (fixture)
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit_server.api import auth
from gigaudit_server.observability import logs

TOKEN = secrets.token_urlsafe(24)
WRONG_TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def captured():
    """Every record (DEBUG and up) as JSON lines in a buffer, through the filter and formatter the server uses."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]  # every line parses, or this fails


def test_a_jobs_log_lines_carry_job_attempt_request_and_caller(captured, redis_client, redis_url, store, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice auditor {auth.hash_token(TOKEN)}\n")
    server = h.start_server(redis_url, store, auth_tokens_file=str(tokens))
    thread, stop = h.start_worker(redis_url, store, name="log-worker")
    try:
        with h.channel(server) as channel:
            bearer = (("authorization", f"Bearer {TOKEN}"),)
            h.refused(lambda: probe_grpc.ProbeServiceStub(channel).SubmitProbe(
                probe_pb.SubmitProbeRequest(), metadata=(("authorization", f"Bearer {WRONG_TOKEN}"),), timeout=10),
                grpc.StatusCode.UNAUTHENTICATED)
            operation = probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest(
                sleep=duration_pb2.Duration(nanos=100_000_000), request_id="req-0042"), metadata=bearer, timeout=10)
            h.wait_operation(channel, operation.name, metadata=bearer)
            deadline = time.monotonic() + 10  # the worker logs the job's start before it settles it
            while operation.name.split("/")[1] not in captured.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        server.stop(0)
    lines = _lines(captured)
    job_id = operation.name.split("/")[1]
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    assert job_lines, f"no line of job {job_id} in {lines}"
    for line in job_lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert (line["attempt"], line["request_id"], line["caller"], line["kind"], line["worker"]) == \
            (1, "req-0042", "alice", "noop", "log-worker")
    assert any(f"job {job_id} (noop) attempt 1" in line["message"] for line in job_lines)
    text = captured.getvalue()
    assert TOKEN not in text and WRONG_TOKEN not in text  # no token, valid or not, is ever logged


def test_an_rpcs_lines_carry_its_request_id_method_and_caller(captured):
    interceptor = logs.LogContextInterceptor(lambda: "bob")

    def behavior(request, context):
        logging.getLogger("gigaudit_server.test").warning("inside %s", "the call")
        return "done"

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    def call(request, metadata=()):  # gRPC intercepts every call anew
        details = type("Details", (), {"method": "/gigaudit.v1.ProbeService/SubmitProbe",
                                       "invocation_metadata": metadata})()
        return interceptor.intercept_service(lambda _: handler, details).unary_unary(request, None)

    assert call(probe_pb.SubmitProbeRequest(), (("x-request-id", "client-7"),)) == "done"
    call(probe_pb.SubmitProbeRequest(request_id="aip-155"))
    call(probe_pb.SubmitProbeRequest())
    first, second, third = (line for line in _lines(captured) if line["message"] == "inside the call")
    assert (first["request_id"], first["method"], first["caller"]) == \
        ("client-7", "gigaudit.v1.ProbeService/SubmitProbe", "bob")
    assert second["request_id"] == "aip-155"
    assert len(third["request_id"]) == 16  # one made up for the call
    logging.getLogger("gigaudit_server.test").warning("outside")
    assert "request_id" not in _lines(captured)[-1]  # the fields end with the call


def test_exceptions_and_secrets_in_messages():
    record = logging.LogRecord("gigaudit_server.x", logging.ERROR, __file__, 1,
                               "call with ('authorization', 'Bearer %s') failed; token=%s", (TOKEN, TOKEN), None)
    try:
        raise RuntimeError(f"bad header Authorization: Bearer {TOKEN}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    with logs.bind(job_id="j1", attempt=2, caller=""):  # empty fields are left out
        logs.ContextFilter().filter(record)
    line = json.loads(logs.JsonFormatter().format(record))
    assert TOKEN not in json.dumps(line)
    assert line["message"] == "call with ('authorization', 'Bearer [redacted]') failed; token=[redacted]"
    assert "RuntimeError" in line["exception"] and (line["job_id"], line["attempt"]) == ("j1", 2)
    assert "caller" not in line
    assert logs.redact("refused: no valid bearer token") == "refused: no valid bearer token"


def test_plain_text_on_a_terminal_json_otherwise():
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        assert isinstance(logs.formatter("auto", terminal), logs.TextFormatter)
    os.close(primary)
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JsonFormatter)
    assert isinstance(logs.formatter("text", io.StringIO()), logs.TextFormatter)
    with pytest.raises(ValueError, match="log format must be one of auto, json, text"):
        logs.formatter("xml")
    record = logging.LogRecord("gigaudit_server.x", logging.INFO, __file__, 1, "started", (), None)
    with logs.bind(job_id="j1", attempt=1):
        logs.ContextFilter().filter(record)
    assert logs.TextFormatter().format(record).endswith("gigaudit_server.x INFO started [job_id=j1 attempt=1]")


def test_setup_replaces_the_root_handlers():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        buffer = io.StringIO()
        logs.setup("warning", "json", buffer)
        logs.setup("INFO", "json", buffer)  # twice: still one handler
        assert len(root.handlers) == 1 and root.level == logging.INFO
        logging.getLogger("gigaudit_server.x").info("hello")
        assert json.loads(buffer.getvalue())["message"] == "hello"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


def test_the_api_server_process_logs_json_lines(redis_client, redis_url, store):
    process = subprocess.Popen([sys.executable, "-m", "gigaudit_server", "serve", "--port", "0", "--redis-url",
                                redis_url, "--store", store, "--log-format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()  # "data in …", then the listening line
        process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)
    line = json.loads(first)
    assert line["level"] == "INFO" and line["logger"] == "gigaudit_server" and "artifact store" in line["message"]
    for later in process.stderr.read().splitlines():
        json.loads(later)

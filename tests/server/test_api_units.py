"""The API's small parts on their own: error mapping, catalog, safetensors sniffing, names, settings, codegen."""
from __future__ import annotations

import argparse
import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from gigaudit_server import config
from gigaudit_server.api import errors, names, uploads

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ errors
def test_library_errors_map_to_codes_with_error_info():
    # a stray KeyError is a bug, not a missing resource: it surfaces as INTERNAL (servicers answer NOT_FOUND explicitly)
    for exc, code in ((ValueError("bad"), code_pb2.INVALID_ARGUMENT), (KeyError("gone"), code_pb2.INTERNAL),
                      (TimeoutError(), code_pb2.DEADLINE_EXCEEDED), (RuntimeError("secret"), code_pb2.INTERNAL)):
        status = errors.to_status(exc)
        assert status.code == code
    assert "secret" not in errors.to_status(RuntimeError("secret")).message, "internal details are not leaked"


def test_invalid_argument_carries_one_violation_per_field():
    status = errors.invalid_argument({"a.b": "too big", "c": "missing"}).status()
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("a.b", "too big"), ("c", "missing")]
    info = error_details_pb2.ErrorInfo()
    assert status.details[1].Unpack(info) and info.domain == "gigaudit"


# ------------------------------------------------------------------ safetensors sniffing
def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@given(st.integers(1, 64), st.integers(1, 5000))
@settings(max_examples=30, deadline=None)
def test_valid_safetensors_pass_through_unchanged_in_any_chunking(chunk, n):
    data = _safetensors({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}, bytes(4 * n))
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    assert b"".join(uploads.checked_safetensors(chunks, len(data))) == data


@pytest.mark.parametrize("data, message", [
    (pickle.dumps([1, 2], protocol=2), "pickle"),
    (b"PK\x03\x04" + bytes(60), "zip archive"),
    (struct.pack("<Q", 10**9) + bytes(32), "header length"),
    (struct.pack("<Q", 4) + b"[1] " + bytes(8), "not a JSON object"),
    (_safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, bytes(8)), "inconsistent"),
    (_safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)), "inconsistent"),
    (_safetensors({"w": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)), "bad entry"),
])
def test_anything_but_safetensors_is_refused_with_its_name(data, message):
    with pytest.raises(ValueError, match=message):
        list(uploads.checked_safetensors([data], len(data)))


# ------------------------------------------------------------------ names, settings
def test_names_parse_and_refuse_with_the_field():
    assert names.concept_set("x", "models/m/conceptSets/c") == ("m", "c")
    assert names.operation("name", "operations/abc_1-2") == "abc_1-2"
    for bad in ("models/m", "models/M/conceptSets/c", "models/m/conceptGraphs/c", "", "models/m/conceptSets/c/x"):
        with pytest.raises(errors.ApiError) as info:
            names.concept_set("parent", bad)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "parent" in info.value.message
    for bad in ("", "Upper", "1x", "x" * 64, "index", "trailing-"):
        with pytest.raises(errors.ApiError):
            names.check_id("model_id", bad)


def test_settings_come_from_env_then_flags(monkeypatch):
    monkeypatch.setenv("GIGAUDIT_PORT", "7000")
    monkeypatch.setenv("GIGAUDIT_DATASET_URI_ALLOWLIST", '["s3://b/"]')
    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    assert config.from_flags(parser.parse_args([])).port == 7000
    settings = config.from_flags(parser.parse_args(["--port", "7001", "--redis-url", "redis://h:1/0"]))
    assert (settings.port, settings.redis_url, settings.dataset_uri_allowlist) == (7001, "redis://h:1/0", ["s3://b/"])
    with pytest.raises(ValueError, match="port"):
        config.from_flags(parser.parse_args(["--port", "70000"]))


def test_generated_code_is_current_and_protos_pass_buf_lint():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

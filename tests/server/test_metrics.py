"""Prometheus metrics scraped over HTTP (parsed with prometheus_client.parser) from a live API server after real gRPC
calls, and from a live worker process while a job runs (real Redis, real gRPC, real worker)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
import redis
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import api_harness as h
from api_harness import store  # noqa: F401 - fixture
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit_server.api import auth
from gigaudit_server.config import Settings
from gigaudit_server.observability.metrics import (GpuMemoryCollector, MetricsServer, QueueCollector, WorkerMetrics,
                                                   new_registry, stage_durations)
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.worker.loop import Worker

PROBE = {"grpc_service": "gigaudit.v1.ProbeService", "grpc_method": "SubmitProbe", "grpc_type": "unary_unary"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, list]:
    """``{sample name: [Sample]}`` of ``GET /metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels``; None when there is none."""
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def probe(channel, seconds: float = 0.0, metadata=None):
    return probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest(
        sleep=duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))), metadata=metadata,
        timeout=10)


def until(check, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:  # the port is not open yet
            result = None
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the worker exited with {process.returncode}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def test_metrics_are_off_unless_a_port_is_given(redis_client, redis_url, store):
    assert Settings(redis_url=redis_url).metrics_port is None
    server = h.start_server(redis_url, store)
    try:
        assert server.metrics is None
    finally:
        server.stop(0)


def test_api_counts_and_times_rpcs_by_method_and_code_and_reads_the_queue(redis_client, redis_url, store):
    server = h.start_server(redis_url, store, metrics_port=free_port())
    try:
        with h.channel(server) as channel:
            first = probe(channel)
            probe(channel)  # no worker: both wait in the queue
            h.refused(lambda: probe(channel, 61), grpc.StatusCode.INVALID_ARGUMENT)
            h.refused(lambda: lro_grpc.OperationsStub(channel).GetOperation(
                lro_pb.GetOperationRequest(name="operations/none"), timeout=10), grpc.StatusCode.NOT_FOUND)
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            time.sleep(0.05)
            started = time.perf_counter()
            samples = scrape(server.metrics.port)
            first_scrape_ms = 1000 * (time.perf_counter() - started)
        assert first.name
        assert value(samples, "grpc_server_started_total", **PROBE) == 3
        assert value(samples, "grpc_server_handled_total", **PROBE, grpc_code="OK") == 2
        assert value(samples, "grpc_server_handled_total", **PROBE, grpc_code="INVALID_ARGUMENT") == 1
        assert value(samples, "grpc_server_handled_total", grpc_service="google.longrunning.Operations",
                     grpc_method="GetOperation", grpc_code="NOT_FOUND") == 1
        assert value(samples, "grpc_server_handled_total", grpc_service="grpc.health.v1.Health", grpc_method="Check",
                     grpc_code="OK") == 1
        assert value(samples, "grpc_server_handling_seconds_count", **PROBE, grpc_code="OK") == 2
        assert 0 < value(samples, "grpc_server_handling_seconds_sum", **PROBE, grpc_code="OK") < 10
        assert value(samples, "grpc_server_handling_seconds_bucket", **PROBE, grpc_code="OK", le="+Inf") == 2
        # the queue, read from Redis at this scrape
        assert value(samples, "gigaudit_queue_up") == 1
        assert value(samples, "gigaudit_queue_depth") == 2
        assert value(samples, "gigaudit_queue_stream_length") == 2
        assert value(samples, "gigaudit_queue_pending") == 0
        assert 0.04 <= value(samples, "gigaudit_queue_oldest_wait_seconds") < 60
        assert value(samples, "gigaudit_dead_letters") == 0
        assert value(samples, "process_resident_memory_bytes") > 0
        assert "gigaudit_job_attempts_total" not in samples  # worker metrics live on the workers
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            scrape(server.metrics.port)
            timings.append(1000 * (time.perf_counter() - started))
        print(f"API scrape: first {first_scrape_ms:.1f} ms, median of 20 {sorted(timings)[10]:.1f} ms")
    finally:
        server.stop(0)
    with pytest.raises(OSError):  # stop() closes the metrics port
        scrape(server.metrics.port)


def test_calls_refused_by_auth_are_counted(redis_client, redis_url, store, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops admin {auth.hash_token('s3cret-token')}\n")
    server = h.start_server(redis_url, store, metrics_port=free_port(), auth_tokens_file=str(tokens))
    try:
        with h.channel(server) as channel:
            h.refused(lambda: probe(channel), grpc.StatusCode.UNAUTHENTICATED)
            probe(channel, metadata=(("authorization", "Bearer s3cret-token"),))
            samples = scrape(server.metrics.port)
        assert value(samples, "grpc_server_handled_total", **PROBE, grpc_code="UNAUTHENTICATED") == 1
        assert value(samples, "grpc_server_handled_total", **PROBE, grpc_code="OK") == 1
    finally:
        server.stop(0)


def test_a_scrape_survives_redis_being_down():
    registry = new_registry()
    registry.register(QueueCollector(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)))
    server = MetricsServer(registry, "127.0.0.1", 0).start()
    try:
        samples = scrape(server.port)
    finally:
        server.stop()
    assert value(samples, "gigaudit_queue_up") == 0
    assert "gigaudit_queue_depth" not in samples


@pytest.mark.slow
def test_worker_process_reports_jobs_stages_and_model_cache_while_a_job_runs(redis_client, redis_url, store):
    api_port, worker_port = free_port(), free_port()
    server = h.start_server(redis_url, store, metrics_port=api_port)
    worker = subprocess.Popen(
        [sys.executable, "-m", "gigaudit_server", "worker", "--redis-url", redis_url, "--store", store,
         "--name", "metrics-worker", "--threads", "1", "--metrics-port", str(worker_port),
         "--metrics-host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        until(lambda: scrape(worker_port), 120, "the worker's metrics port", worker)
        with h.channel(server) as channel:
            data = h.partsnet_bytes()
            h.registered_model(channel, "first", data)
            h.registered_model(channel, "second", data)  # the same weights: the resident model
            operation = probe(channel, 3.0)
            running = until(lambda: (s := scrape(worker_port)) and value(s, "gigaudit_worker_busy") == 1 and s,
                            30, "the probe job running", worker)
            api = scrape(api_port)
            assert value(api, "gigaudit_queue_pending") == 1
            assert value(api, "gigaudit_queue_depth") == 0
            assert value(api, "gigaudit_queue_oldest_wait_seconds") == 0
            assert value(api, "grpc_server_handled_total", grpc_service="gigaudit.v1.ModelService",
                         grpc_method="UploadModel", grpc_type="stream_unary", grpc_code="OK") == 2
            assert value(running, "gigaudit_job_attempts_total", kind="noop") is None  # not over yet
            assert value(running, "gigaudit_worker_info", device="cpu") == 1
            assert h.wait_operation(channel, operation.name).done
        done = until(lambda: (s := scrape(worker_port)) and value(s, "gigaudit_worker_busy") == 0 and s, 10,
                     "the worker idle again", worker)
        assert value(done, "gigaudit_job_attempts_total", kind="validate_model", outcome="succeeded") == 2
        assert value(done, "gigaudit_job_attempts_total", kind="noop", outcome="succeeded") == 1
        assert value(done, "gigaudit_job_duration_seconds_count", kind="noop", outcome="succeeded") == 1
        assert 3.0 <= value(done, "gigaudit_job_duration_seconds_sum", kind="noop", outcome="succeeded") < 20
        assert value(done, "gigaudit_job_stage_duration_seconds_count", kind="noop", stage="sleep") == 1
        assert 2.8 <= value(done, "gigaudit_job_stage_duration_seconds_sum", kind="noop", stage="sleep") < 20
        assert value(done, "gigaudit_job_stage_duration_seconds_count", kind="noop", stage="claimed") == 1
        assert value(done, "gigaudit_model_cache_misses_total") == 1
        assert value(done, "gigaudit_model_cache_hits_total") == 1
        assert value(done, "gigaudit_model_cache_resident") == 1
        assert value(done, "gigaudit_model_cache_evictions_total") == 0
        assert "gigaudit_job_reclaims_total" not in done and "gigaudit_job_dead_letters_total" not in done
        assert not [name for name in done if name.startswith("gigaudit_gpu_")]  # a CPU worker
        assert value(done, "process_cpu_seconds_total") > 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.stop(0)


def count(ctx) -> dict:
    ctx.progress("count", 0, 1)
    ctx.progress("count", 1, 1)
    return {"n": ctx.job.params["n"]}


def boom(ctx) -> dict:
    raise RuntimeError("a transient-looking failure")


def test_worker_counts_reclaims_retries_and_dead_letters(redis_client):
    queue = JobQueue(redis_client, max_attempts=2, heartbeat_ttl=0.5)  # the ghost's death is one failure
    taken = queue.submit("count", {"n": 1})
    assert queue.claim_next("ghost", 1000).job.id == taken.id  # a worker that dies at once: no heartbeat
    failing = queue.submit("boom", {})
    registry = new_registry()
    registry.register(QueueCollector(redis_client))
    metrics = WorkerMetrics(registry)
    served = MetricsServer(registry, "127.0.0.1", 0).start()
    worker = Worker(queue, {"count": count, "boom": boom}, name="live", poll_interval=0.05, metrics=metrics)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        until(lambda: queue.get(taken.id).state.finished and queue.get(failing.id).state.finished, 20,
              "both jobs finished")
        samples = until(lambda: (s := scrape(served.port)) and value(s, "gigaudit_worker_busy") == 0 and s, 5,
                        "the worker idle")
    finally:
        stop.set()
        thread.join(10)
        served.stop()
    assert queue.get(taken.id).result == {"n": 1}
    assert value(samples, "gigaudit_job_reclaims_total", kind="count") == 1
    assert value(samples, "gigaudit_job_attempts_total", kind="count", outcome="succeeded") == 1
    assert value(samples, "gigaudit_job_attempts_total", kind="boom", outcome="retry") == 2  # then dead
    assert value(samples, "gigaudit_job_dead_letters_total", kind="boom") == 1
    assert value(samples, "gigaudit_job_dead_letters_total", kind="count") is None
    assert value(samples, "gigaudit_job_stage_duration_seconds_count", kind="count", stage="count") == 1
    assert value(samples, "gigaudit_dead_letters") == 1  # the API's view of the same dead letter
    assert value(samples, "gigaudit_queue_depth") == 0 and value(samples, "gigaudit_queue_pending") == 0


def test_stage_durations_time_one_attempt_of_one_worker():
    history = [{"stage": "claimed", "time": 10.0, "worker": "w1", "attempt": 1},
               {"stage": "load", "time": 11.0, "worker": "w1", "attempt": 1},
               {"stage": "claimed", "time": 20.0, "worker": "w2", "attempt": 2},
               {"stage": "load", "time": 20.5, "worker": "w2", "attempt": 2},
               {"stage": "gig", "time": 22.0, "worker": "w2", "attempt": 2}]
    assert stage_durations(history, 2, "w2", 30.0) == [("claimed", 0.5), ("load", 1.5), ("gig", 8.0)]
    assert stage_durations(history, 1, "w1", 12.0) == [("claimed", 1.0), ("load", 1.0)]
    assert stage_durations(history, 3, "w2", 30.0) == []


def test_gpu_memory_is_reported_from_the_collector_reading():
    readings = {"allocated": 1.0, "reserved": 2.0, "peak_allocated": 3.0, "free": 4.0, "total": 5.0}
    registry = new_registry()
    registry.register(GpuMemoryCollector("cuda:1", read=lambda device: readings))
    server = MetricsServer(registry, "127.0.0.1", 0).start()
    try:
        samples = scrape(server.port)
    finally:
        server.stop()
    for name, expected in readings.items():
        assert value(samples, f"gigaudit_gpu_memory_{name}_bytes", device="cuda:1") == expected


@pytest.mark.gpu
def test_gpu_memory_of_a_cuda_worker():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    registry = new_registry()
    WorkerMetrics(registry, device="cuda:0")
    server = MetricsServer(registry, "127.0.0.1", 0).start()
    try:
        before = scrape(server.port)
        block = torch.empty(64 * 1024**2, dtype=torch.uint8, device="cuda:0")
        after = scrape(server.port)
    finally:
        server.stop()
    grown = value(after, "gigaudit_gpu_memory_allocated_bytes", device="cuda:0") - value(
        before, "gigaudit_gpu_memory_allocated_bytes", device="cuda:0")
    assert grown >= block.numel()
    total = value(after, "gigaudit_gpu_memory_total_bytes", device="cuda:0")
    assert 0 < value(after, "gigaudit_gpu_memory_free_bytes", device="cuda:0") < total
    assert value(after, "gigaudit_gpu_memory_reserved_bytes", device="cuda:0") >= block.numel()

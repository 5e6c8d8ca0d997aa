"""Prometheus metrics, served by each process (API, worker) from a registry of its own on a plaintext port.

- ``RpcMetrics``: a gRPC server interceptor counting and timing every RPC by service, method, type and status code.
- ``QueueCollector`` (API): queue depth, lag and pending entries, and dead letters, read from Redis at scrape time.
- ``WorkerMetrics`` (worker): job attempts by kind and outcome, job and stage durations, reclaims, dead letters,
  model-cache hits (``ModelCacheCollector``) and GPU memory (``GpuMemoryCollector``, CUDA workers only).

Metric names and their meaning are listed in docs/metrics.md; the chart's dashboard plots each family. This module
stays torch-free: the GPU collector imports torch only on a CUDA worker, when it is scraped.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import grpc
import redis as redis_lib
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gigaudit_server import keys

log = logging.getLogger(__name__)

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
# how a worker's attempt ended (``Worker._finish`` outcomes, plus the two where nothing was settled)
OUTCOMES = ("succeeded", "retry", "failed", "dead", "cancelled", "handback", "lost", "unsettled")


def new_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory and file-descriptor metrics and the Python version."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """Serves ``registry`` as ``GET /metrics`` (any path) on ``host:port`` (0: a free one, see ``.port``)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int):
        if not 0 <= port <= 65535:
            raise ValueError(f"metrics port must be in 0..65535, got {port}")
        self.registry, self.host, self.port = registry, host, port
        self._server = self._thread = None

    def start(self) -> MetricsServer:
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise ValueError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self.port = self._server.server_port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


# ---------------------------------------------------------------------------------------------------- RPCs
class RpcMetrics(grpc.ServerInterceptor):
    """``grpc_server_handled_total`` and ``grpc_server_handling_seconds`` (the grpc-prometheus names) by
    ``grpc_service``, ``grpc_method``, ``grpc_type`` and ``grpc_code``, plus ``grpc_server_started_total``.

    Put it first in the chain, so that calls refused by later interceptors (auth, limits) are counted too. Only
    methods the server knows are labelled (an unknown one is answered UNIMPLEMENTED by gRPC and not counted), so
    the label sets stay bounded. A stream's latency is its whole life."""

    def __init__(self, registry: CollectorRegistry):
        labels = ("grpc_service", "grpc_method", "grpc_type")
        self.started = Counter("grpc_server_started", "RPCs started on the server", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code",
                               (*labels, "grpc_code"), registry=registry)
        self.latency = Histogram("grpc_server_handling_seconds", "Time from the start of an RPC to its status",
                                 (*labels, "grpc_code"), buckets=RPC_BUCKETS, registry=registry)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        kind = _behaviour_field(handler)
        labels = (service or "unknown", method, kind)

        def observe(started: float, code: str) -> None:
            self.handled.labels(*labels, code).inc()
            self.latency.labels(*labels, code).observe(time.perf_counter() - started)

        def around(behavior):
            def timed(request, context):
                self.started.labels(*labels).inc()
                started, code = time.perf_counter(), None
                try:
                    response = behavior(request, context)
                except BaseException:
                    code = status_code(context, raised=True)
                    raise
                finally:
                    observe(started, code or status_code(context, raised=False))
                return response

            def timed_stream(request, context):
                self.started.labels(*labels).inc()
                started, code = time.perf_counter(), None
                try:
                    yield from behavior(request, context)
                except GeneratorExit:  # the client went away before the end of the stream
                    code = "CANCELLED"
                    raise
                except BaseException:
                    code = status_code(context, raised=True)
                    raise
                finally:
                    observe(started, code or status_code(context, raised=False))

            return timed_stream if handler.response_streaming else timed
        return handler._replace(**{kind: around(getattr(handler, kind))})  # (no import of the API package)


def _behaviour_field(handler: grpc.RpcMethodHandler) -> str:
    """``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream`` (also the ``grpc_type`` label)."""
    sides = ("stream" if streaming else "unary" for streaming in (handler.request_streaming,
                                                                   handler.response_streaming))
    return "_".join(sides)


def status_code(context: grpc.ServicerContext, *, raised: bool) -> str:
    """The status code a behaviour left on ``context`` (set_code, abort); unset: UNKNOWN after an exception (what
    gRPC answers), OK otherwise."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if raised else "OK"


# ---------------------------------------------------------------------------------------------------- the queue
class QueueCollector(Collector):
    """The job stream and its consumer group, read from Redis at every scrape (two round trips).

    ``gigaudit_queue_up`` is 0 when Redis could not be read; the other queue metrics are then absent."""

    def __init__(self, redis: redis_lib.Redis):
        self.redis = redis

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only: registering never touches Redis

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("gigaudit_queue_up", "1 when the job queue could be read from Redis at this scrape")
        try:
            snapshot = queue_snapshot(self.redis)
        except redis_lib.RedisError as exc:
            log.warning("metrics: cannot read the job queue from Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, help_ in (
                ("stream_length", "Entries in the job stream: queued deliveries plus those being run"),
                ("depth", "Deliveries waiting for a worker (the consumer group's lag)"),
                ("pending", "Deliveries claimed by a worker and not yet settled (running jobs)"),
                ("oldest_wait_seconds", "How long the oldest delivery waiting for a worker has waited (0: none)"),
                ("consumers", "Worker names known to the consumer group"),
        ):
            gauge = GaugeMetricFamily(f"gigaudit_queue_{name}", help_)
            gauge.add_metric([], snapshot[name])
            yield gauge
        dead = GaugeMetricFamily("gigaudit_dead_letters", "Dead letters kept (jobs that failed for good)")
        dead.add_metric([], snapshot["dead_letters"])
        yield dead


def queue_snapshot(redis: redis_lib.Redis) -> dict[str, float]:
    """``{stream_length, depth, pending, oldest_wait_seconds, consumers, dead_letters}`` of the job queue."""
    stream, group = keys.stream(), keys.consumer_group()
    with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.xlen(stream)
        pipe.xlen(keys.dead_letters())
        pipe.xinfo_groups(stream)
        now, length, dead, groups = pipe.execute(raise_on_error=False)
    for reply in (now, length, dead):
        if isinstance(reply, Exception):
            raise reply
    if isinstance(groups, redis_lib.ResponseError):  # no stream yet: nothing was ever queued
        groups = []
    elif isinstance(groups, Exception):
        raise groups
    info = next((g for g in groups if _text(g.get("name")) == group), None)
    now_s = now[0] + now[1] / 1e6
    if info is None:
        return {"stream_length": length, "depth": length, "pending": 0, "oldest_wait_seconds": 0.0,
                "consumers": 0, "dead_letters": dead}
    pending, last = int(info.get("pending") or 0), _text(info.get("last-delivered-id")) or "0-0"
    lag = info.get("lag")  # Redis 7+; None when Redis cannot tell (entries deleted past the last delivery)
    depth = int(lag) if lag is not None else max(0, length - pending)  # settled entries are deleted (queue.jobs)
    oldest = redis.xrange(stream, min="-" if last == "0-0" else f"({last}", max="+", count=1)
    wait = max(0.0, now_s - int(_text(oldest[0][0]).split("-")[0]) / 1000) if oldest and depth else 0.0
    return {"stream_length": length, "depth": depth, "pending": pending, "oldest_wait_seconds": wait,
            "consumers": int(info.get("consumers") or 0), "dead_letters": dead}


# ---------------------------------------------------------------------------------------------------- workers
class WorkerMetrics:
    """What a worker reports: call ``claimed`` when an attempt starts and ``ended`` when it is over.

    Stage durations come from the job's stage history (``queue.scripts``: an event, timed by the worker, whenever
    the stage changes), read once per attempt; the last stage ends when the attempt does."""

    def __init__(self, registry: CollectorRegistry, *, device: str = "cpu", models=None):
        self.registry = registry
        self.attempts = Counter("gigaudit_job_attempts", "Job attempts this worker ran, by kind and outcome",
                                ("kind", "outcome"), registry=registry)
        self.duration = Histogram("gigaudit_job_duration_seconds", "Duration of a job attempt, claim to settle",
                                  ("kind", "outcome"), buckets=JOB_BUCKETS, registry=registry)
        self.stage_duration = Histogram("gigaudit_job_stage_duration_seconds", "Time a job attempt spent in a stage",
                                        ("kind", "stage"), buckets=JOB_BUCKETS, registry=registry)
        self.reclaims = Counter("gigaudit_job_reclaims", "Jobs this worker took over from a worker that died",
                                ("kind",), registry=registry)
        self.dead_letters = Counter("gigaudit_job_dead_letters", "Jobs this worker dead-lettered", ("kind",),
                                    registry=registry)
        self.busy = Gauge("gigaudit_worker_busy", "1 while this worker runs a job", registry=registry)
        self.device = Gauge("gigaudit_worker_info", "The worker's device", ("device",), registry=registry)
        self.device.labels(device).set(1)
        if models is not None:
            registry.register(ModelCacheCollector(models))
        if device.startswith("cuda"):
            registry.register(GpuMemoryCollector(device))
        self._started: float | None = None
        self._lock = threading.Lock()

    def claimed(self, job, *, reclaimed: bool) -> None:
        with self._lock:
            self._started = time.time()
        self.busy.set(1)
        if reclaimed:
            self.reclaims.labels(job.kind).inc()

    def ended(self, job, outcome: str, *, dead_lettered: bool = False, history: list[dict] | None = None,
              worker: str = "") -> None:
        """Record an attempt that ended with ``outcome``; ``history``: the job's stage events (this attempt's by
        ``worker`` are timed)."""
        now = time.time()
        with self._lock:
            started, self._started = self._started, None
        self.busy.set(0)
        self.attempts.labels(job.kind, outcome).inc()
        if started is not None:
            self.duration.labels(job.kind, outcome).observe(max(0.0, now - started))
        if dead_lettered:
            self.dead_letters.labels(job.kind).inc()
        for stage, seconds in stage_durations(history or [], job.attempt, worker, now):
            self.stage_duration.labels(job.kind, stage).observe(seconds)

    def dead_lettered(self, job) -> None:
        """A job failed as hung while its handler still runs (its attempt ends later, as ``lost``)."""
        self.dead_letters.labels(job.kind).inc()


def stage_durations(history: list[dict], attempt: int, worker: str, ended: float) -> list[tuple[str, float]]:
    """``[(stage, seconds)]`` of one attempt's events (``claimed`` first), each lasting until the next one, the
    last until ``ended``."""
    events = [e for e in history if e.get("attempt") == attempt and (not worker or e.get("worker") == worker)]
    ends = [float(e.get("time", ended)) for e in events[1:]] + [ended]
    return [(str(e.get("stage") or "unknown"), max(0.0, end - float(e.get("time", end))))
            for e, end in zip(events, ends)]


def read_history(redis: redis_lib.Redis, job_id: str) -> list[dict]:
    """The stage events stored in a job's hash (``[]`` when none, or unreadable)."""
    raw = redis.hget(keys.job(job_id), "history")
    try:
        history = json.loads(raw) if raw else []
    except ValueError:
        return []
    return history if isinstance(history, list) else []  # Lua's cjson writes an empty list as {}


class ModelCacheCollector(Collector):
    """Hits, misses and evictions of a worker's ``ModelCache`` (its counters read at scrape time)."""

    def __init__(self, cache):
        self.cache = cache

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        stats = self.cache.stats()
        for name, help_ in (("hits", "Model lookups answered by a resident model"),
                            ("misses", "Model lookups that loaded the weights from the store"),
                            ("evictions", "Resident models dropped to make room (least recently used)")):
            yield CounterMetricFamily(f"gigaudit_model_cache_{name}", help_, value=stats[name])
        yield GaugeMetricFamily("gigaudit_model_cache_resident", "Models resident on the worker's device",
                                value=stats["resident"])
        yield GaugeMetricFamily("gigaudit_model_cache_capacity", "Models the cache keeps at most",
                                value=stats["capacity"])


class GpuMemoryCollector(Collector):
    """The CUDA memory of a worker's device, from torch's caching allocator and the driver, at scrape time."""

    def __init__(self, device: str, read: Callable[[str], Mapping[str, float]] | None = None):
        self.device = device
        self._read = read or cuda_memory

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        try:
            memory = self._read(self.device)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the driver did
            log.warning("metrics: cannot read the memory of %s: %s", self.device, exc)
            return
        for name, help_ in (("allocated", "Bytes held by tensors (torch.cuda.memory_allocated)"),
                            ("reserved", "Bytes held by torch's caching allocator (torch.cuda.memory_reserved)"),
                            ("peak_allocated", "Most bytes held by tensors since the worker started"),
                            ("free", "Free device memory, as the driver reports it"),
                            ("total", "Device memory, as the driver reports it")):
            gauge = GaugeMetricFamily(f"gigaudit_gpu_memory_{name}_bytes", help_, labels=("device",))
            gauge.add_metric([self.device], memory[name])
            yield gauge


def cuda_memory(device: str) -> dict[str, float]:
    import torch  # only on a CUDA worker, whose process has torch loaded already

    index = torch.device(device).index or 0
    free, total = torch.cuda.mem_get_info(index)
    return {"allocated": torch.cuda.memory_allocated(index), "reserved": torch.cuda.memory_reserved(index),
            "peak_allocated": torch.cuda.max_memory_allocated(index), "free": free, "total": total}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))

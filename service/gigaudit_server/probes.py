"""A plaintext port that serves only ``grpc.health.v1`` for Kubernetes probes (the API port may need TLS and
tokens, which kubelet's gRPC probes cannot present).

Besides the server's own statuses (``""`` and each API service: SERVING while a worker is alive), ``PROCESS``
reports whether this process serves at all: probe it for liveness and readiness, so that API pods stay up and
routable while workers are scaled to zero.
"""
from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

PROCESS = "gigaudit.process"


class ProbeServer:
    """Serves ``servicer`` on ``host:port`` (0: a free port, see ``.port``) until ``stop()``."""

    def __init__(self, servicer: health.HealthServicer, host: str, port: int):
        self.servicer = servicer
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe"))
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise ValueError(f"cannot listen on {host}:{port} for health probes")

    def start(self) -> ProbeServer:
        self.servicer.set(PROCESS, health_pb2.HealthCheckResponse.SERVING)
        self.server.start()
        return self

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING first, so that load balancers stop routing here while calls drain."""
        self.servicer.set(PROCESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()

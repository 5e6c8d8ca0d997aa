"""``/livez`` and ``/readyz`` over plain HTTP, for the kubelet's probes of a worker (``--health-port``).

``/livez``: the heartbeat thread runs and, while a job runs, its handler reported progress within the stall
timeout. A hung handler keeps its worker from taking any other job (its attempt was failed and fenced off), so it
fails liveness and the kubelet restarts the pod. A Redis outage does not: a restart would not help.
``/readyz``: Redis answers, and the architectures this worker serves are published for the API's checks.
Both answer 200 or 503 with a JSON body ``{"status": "ok" | "failing", "checks": {name: {"ok": bool, ...}}}``.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

import redis as redis_lib

from gigaudit_server.storage.catalog import Catalog
from gigaudit_server.worker.loop import Worker

log = logging.getLogger(__name__)


def liveness(worker: Worker) -> dict:
    """The checks of ``/livez``."""
    state = worker.health()
    checks = {"heartbeat": {"ok": state["heartbeat"]}}
    if state["job"] is not None:
        idle, limit = state["idle_s"], worker.stall_timeout_s
        checks["progress"] = {"ok": limit is None or idle < limit, "job": state["job"], "idle_s": round(idle, 1),
                              "stall_timeout_s": limit}
    return checks


def readiness(worker: Worker, architectures: Iterable[str]) -> dict:
    """The checks of ``/readyz``: Redis answers and ``architectures`` are all published."""
    expected = set(architectures)
    try:
        worker.queue.redis.ping()
        missing = sorted(expected - set(Catalog(worker.queue.redis).architectures()))
    except redis_lib.RedisError as e:
        return {"redis": {"ok": False, "error": type(e).__name__}}
    return {"redis": {"ok": True}, "architectures": {"ok": not missing, "missing": missing},
            "stopping": {"ok": not worker.stop_event.is_set()}}


class HealthServer:
    """Serves ``/livez`` and ``/readyz`` for ``worker`` on ``host:port`` (0: a free port, see ``.port``)."""

    def __init__(self, worker: Worker, architectures: Iterable[str], host: str, port: int):
        names = sorted(architectures)
        routes: dict[str, Callable[[], dict]] = {"/livez": lambda: liveness(worker),
                                                 "/readyz": lambda: readiness(worker, names)}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                check = routes.get(self.path.split("?", 1)[0])
                if check is None:
                    self._answer(404, {"status": "unknown path", "paths": sorted(routes)})
                    return
                checks = check()
                ok = all(c["ok"] for c in checks.values())
                self._answer(200 if ok else 503, {"status": "ok" if ok else "failing", "checks": checks})

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args) -> None:
                log.debug("health %s: " + fmt, self.address_string(), *args)

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port} for health probes: {exc.strerror}") from exc
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="worker-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


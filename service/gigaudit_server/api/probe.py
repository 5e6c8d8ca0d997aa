"""ProbeService: a no-op job through the whole control plane (API → Redis → worker → API)."""
from __future__ import annotations

from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit_server.api import errors, lifecycle
from gigaudit_server.queue import schemas

MAX_SLEEP_S = 60.0


class ProbeServicer(probe_grpc.ProbeServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def SubmitProbe(self, request, context):
        sleep = request.sleep.seconds + request.sleep.nanos / 1e9  # ToTimedelta overflows on huge values
        if not 0 <= sleep <= MAX_SLEEP_S:
            raise errors.invalid_argument({"sleep": f"must be between 0 and {MAX_SLEEP_S:g} seconds"})
        return lifecycle.start(self.backend, "/gigaudit.v1.ProbeService/SubmitProbe", request, "noop",
                               schemas.to_params(schemas.Noop(sleep=sleep)), [], [])

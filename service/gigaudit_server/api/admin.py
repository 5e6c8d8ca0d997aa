"""The ``gigaudit.v1.AdminService``: operators look at the queue and its workers (``GetStatus``), list the jobs
that failed for good and queue them again.

Only the admin role may call it (``api.auth``: it is not an auditor service). Thin: every call is one or two
``JobQueue`` methods.
"""
from __future__ import annotations

from google.rpc import code_pb2, status_pb2

from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit_server.api import errors, operations, resources
from gigaudit_server.queue.jobs import DeadLetter, WorkerState


def dead_letter(letter: DeadLetter) -> admin_pb.DeadLetter:
    code = letter.error.get("code", "INTERNAL")
    return admin_pb.DeadLetter(
        operation=f"operations/{letter.job_id}", kind=letter.kind, attempts=letter.attempts, worker=letter.worker,
        owner=letter.owner, dead_time=resources.timestamp(letter.dead_time),
        error=status_pb2.Status(code=code_pb2.Code.Value(code) if code in code_pb2.Code.keys() else code_pb2.INTERNAL,
                                message=letter.error.get("message", "the job failed")))


def worker_status(worker: WorkerState) -> admin_pb.WorkerStatus:
    status = admin_pb.WorkerStatus(name=worker.name, device=worker.device, alive=worker.alive,
                                   operation=f"operations/{worker.job_id}" if worker.job_id else "",
                                   stage=worker.stage, done=worker.done, total=worker.total or 0)
    if worker.heartbeat_time is not None:
        status.heartbeat_time.CopyFrom(resources.timestamp(worker.heartbeat_time))
    return status


class AdminServicer(admin_grpc.AdminServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def ListDeadLetters(self, request, context):
        if request.page_size < 0:
            raise errors.invalid_argument({"page_size": f"must be >= 0 (0 = 50), not {request.page_size}"})
        try:
            letters, token = self.backend.queue.list_dead_letters(page_size=min(request.page_size, 1000),
                                                                   page_token=request.page_token or None)
        except ValueError as exc:
            raise errors.invalid_argument({"page_token": str(exc)}) from None
        return admin_pb.ListDeadLettersResponse(dead_letters=[dead_letter(d) for d in letters],
                                                next_page_token=token or "")

    @errors.handle_errors
    def GetStatus(self, request, context):
        queue = self.backend.queue
        counts = queue.queue_status()
        return admin_pb.ServiceStatus(
            queue=admin_pb.QueueStatus(queued=counts.queued, running=counts.running, lag=counts.lag,
                                       pending=counts.pending),
            workers=[worker_status(w) for w in queue.worker_states()], dead_letters=counts.dead_letters)

    @errors.handle_errors
    def RetryDeadLetter(self, request, context):
        job = operations.get_job(self.backend, "operation", request.operation)
        try:
            job = self.backend.queue.retry_dead_letter(job.id)
        except KeyError:
            raise errors.not_found("operation", request.operation) from None
        except ValueError as exc:
            raise errors.failed_precondition(request.operation, str(exc)) from None
        return operations.to_operation(self.backend, job)

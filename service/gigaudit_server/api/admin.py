"""The ``gigaudit.v1.AdminService``: operators list the jobs that failed for good and queue them again.

Only the admin role may call it (``api.auth``: it is not an auditor service). Thin: every call is one
``JobQueue`` method.
"""
from __future__ import annotations

from google.rpc import code_pb2, status_pb2

from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit_server.api import errors, operations, resources
from gigaudit_server.queue.jobs import DeadLetter


def dead_letter(letter: DeadLetter) -> admin_pb.DeadLetter:
    code = letter.error.get("code", "INTERNAL")
    return admin_pb.DeadLetter(
        operation=f"operations/{letter.job_id}", kind=letter.kind, attempts=letter.attempts, worker=letter.worker,
        owner=letter.owner, dead_time=resources.timestamp(letter.dead_time),
        error=status_pb2.Status(code=code_pb2.Code.Value(code) if code in code_pb2.Code.keys() else code_pb2.INTERNAL,
                                message=letter.error.get("message", "the job failed")))


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
    def RetryDeadLetter(self, request, context):
        job = operations.get_job(self.backend, "operation", request.operation)
        try:
            job = self.backend.queue.retry_dead_letter(job.id)
        except KeyError:
            raise errors.not_found("operation", request.operation) from None
        except ValueError as exc:
            raise errors.failed_precondition(request.operation, str(exc)) from None
        return operations.to_operation(self.backend, job)

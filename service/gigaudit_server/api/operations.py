"""Jobs as ``google.longrunning.Operation``s (AIP-151) and the ``google.longrunning.Operations`` service."""
from __future__ import annotations

from google.longrunning import operations_proto_pb2 as lro_pb
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.protobuf import empty_pb2
from google.rpc import code_pb2, status_pb2

from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit_server.api import errors
from gigaudit_server.api import names, resources
from gigaudit_server.queue.jobs import Job, JobState

MAX_WAIT_S = 300.0
_FILTER_HELP = 'filter must be empty or "state=<QUEUED|RUNNING|SUCCEEDED|FAILED|CANCELLED>"'


def metadata(job: Job) -> metadata_pb.OperationMetadata:
    params = job.params
    return metadata_pb.OperationMetadata(
        kind=job.kind, state=metadata_pb.OperationState.Value(f"OPERATION_STATE_{job.state.value}"),
        stage=job.stage, done=job.done, total=job.total or 0, worker=job.worker or "", attempt=job.attempt,
        cancel_requested=job.cancel_requested, target=params.get("concept_graph") or params.get("concept_set") or "",
        create_time=resources.timestamp(job.created), update_time=resources.timestamp(job.updated))


def to_operation(backend, job: Job) -> lro_pb.Operation:
    operation = lro_pb.Operation(name=f"operations/{job.id}", done=job.finished)
    operation.metadata.Pack(metadata(job))
    if job.state is JobState.SUCCEEDED:
        operation.response.Pack(resources.operation_response(backend, job))
    elif job.state is JobState.FAILED:
        error = job.error or {}
        code = code_pb2.Code.Value(error.get("code", "INTERNAL")) if error.get("code") in code_pb2.Code.keys() \
            else code_pb2.INTERNAL
        operation.error.CopyFrom(status_pb2.Status(code=code, message=error.get("message", "the job failed")))
    elif job.state is JobState.CANCELLED:
        operation.error.CopyFrom(status_pb2.Status(code=code_pb2.CANCELLED, message="the operation was cancelled"))
    return operation


def get_job(backend, field: str, name: str) -> Job:
    try:
        return backend.queue.get(names.operation(field, name))
    except KeyError:
        raise errors.not_found("operation", name) from None


def watch(backend, name: str):
    """Operations on every change of the job until it is done (server-streaming)."""
    job = get_job(backend, "name", name)
    for job in backend.queue.watch(job.id):
        yield to_operation(backend, job)


class OperationsServicer(lro_grpc.OperationsServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def GetOperation(self, request, context):
        return to_operation(self.backend, get_job(self.backend, "name", request.name))

    @errors.handle_errors
    def ListOperations(self, request, context):
        if request.name not in ("", "operations"):
            raise errors.invalid_argument({"name": 'must be "operations" or empty'})
        state = None
        if request.filter:
            key, _, value = request.filter.replace(" ", "").partition("=")
            if key != "state" or value not in JobState.__members__:
                raise errors.invalid_argument({"filter": f"{_FILTER_HELP}, not {request.filter!r}"})
            state = JobState(value)
        jobs, token = self.backend.queue.list(page_size=request.page_size, page_token=request.page_token or None,
                                              filter_state=state)
        return lro_pb.ListOperationsResponse(operations=[to_operation(self.backend, j) for j in jobs],
                                             next_page_token=token or "")

    @errors.handle_errors
    def CancelOperation(self, request, context):
        job = get_job(self.backend, "name", request.name)
        self.backend.queue.cancel(job.id)
        return empty_pb2.Empty()

    @errors.handle_errors
    def DeleteOperation(self, request, context):
        job = get_job(self.backend, "name", request.name)
        if not job.finished:
            raise errors.failed_precondition(request.name, f"the operation is {job.state.value}; cancel it first")
        self.backend.queue.delete(job.id)
        return empty_pb2.Empty()

    @errors.handle_errors
    def WaitOperation(self, request, context):
        job = get_job(self.backend, "name", request.name)
        timeout = request.timeout.seconds + request.timeout.nanos / 1e9 if request.HasField("timeout") else MAX_WAIT_S
        if context.time_remaining() is not None:
            timeout = min(timeout, max(context.time_remaining() - 0.5, 0.0))
        return to_operation(self.backend, self.backend.queue.wait(job.id, min(timeout, MAX_WAIT_S)))

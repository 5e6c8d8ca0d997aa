"""Jobs as ``google.longrunning.Operation``s (AIP-151) and the ``google.longrunning.Operations`` service."""
from __future__ import annotations

from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import empty_pb2
from google.rpc import code_pb2, status_pb2

from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit_server.api import errors, names, ownership, resources
from gigaudit_server.observability import tracing
from gigaudit_server.queue.jobs import Job, JobState
from gigaudit_server.storage import settlement

MAX_WAIT_S = 300.0
_FILTER_HELP = ('filter must be empty, "state=<QUEUED|RUNNING|SUCCEEDED|FAILED|CANCELLED>", "owner=NAME" or '
                '"state=X AND owner=NAME"')


def metadata(job: Job, queue_position: int = 0) -> metadata_pb.OperationMetadata:
    """The job's metadata; ``queue_position`` (``JobQueue.queue_position``) is shown only while it is QUEUED."""
    message = metadata_pb.OperationMetadata(
        kind=job.kind, state=metadata_pb.OperationState.Value(f"OPERATION_STATE_{job.state.value}"),
        stage=job.stage, done=job.done, total=job.total or 0, worker=job.worker or "", attempt=job.attempt,
        cancel_requested=job.cancel_requested, target=_target(job), create_time=resources.timestamp(job.created),
        update_time=resources.timestamp(job.updated), owner=job.owner, failures=job.failures,
        queue_position=queue_position if job.state is JobState.QUEUED else 0, trace_id=tracing.trace_id(job.trace))
    for event in job.history:
        message.history.add(stage=str(event.get("stage", "")), start_time=resources.timestamp(
            float(event.get("time") or 0.0)), worker=str(event.get("worker") or ""),
            attempt=int(event.get("attempt") or 0), error=_event_error(event.get("error")))
    return message


def _event_error(error) -> str:
    """``CODE: message`` of a stage event's error (empty when none)."""
    if not error:
        return ""
    if isinstance(error, dict):
        return f"{error.get('code', 'INTERNAL')}: {error.get('message', '')}"
    return str(error)


def _target(job: Job) -> str:
    params = job.params
    if job.kind == "validate_model" and params.get("model_id"):
        return f"models/{params['model_id']}"
    if job.kind == "inspect_dataset" and params.get("dataset_id"):
        return f"datasets/{params['dataset_id']}"
    return params.get("concept_graph") or params.get("concept_set") or ""


def to_operation(backend, job: Job) -> lro_pb.Operation:
    """The Operation of a job; a finished one first settles what it creates (``storage.settlement``)."""
    if job.finished:
        settlement.settle_job(backend, job)
    operation = lro_pb.Operation(name=f"operations/{job.id}", done=job.finished)
    position = backend.queue.queue_position(job.id) if job.state is JobState.QUEUED else 0
    operation.metadata.Pack(metadata(job, position))
    if job.state is JobState.SUCCEEDED:
        try:
            operation.response.Pack(resources.operation_response(backend, job))
        except KeyError:  # what it created was deleted since
            operation.error.CopyFrom(status_pb2.Status(code=code_pb2.NOT_FOUND, message=(
                f"{_target(job) or 'the result'} was deleted after the operation succeeded")))
    elif job.state is JobState.FAILED:
        error = job.error or {}
        code = code_pb2.Code.Value(error.get("code", "INTERNAL")) if error.get("code") in code_pb2.Code.keys() \
            else code_pb2.INTERNAL
        operation.error.CopyFrom(status_pb2.Status(code=code, message=error.get("message", "the job failed")))
    elif job.state is JobState.CANCELLED:
        operation.error.CopyFrom(status_pb2.Status(code=code_pb2.CANCELLED, message="the operation was cancelled"))
    return operation


def get_job(backend, field: str, name: str) -> Job:
    """The job of ``operations/{id}``; NOT_FOUND when absent or another caller's (ownership)."""
    return job_of(backend, names.operation(field, name))


def job_of(backend, job_id: str) -> Job:
    """The job; NOT_FOUND when absent or another caller's (ownership)."""
    try:
        job = backend.queue.get(job_id)
    except KeyError:
        raise errors.not_found("operation", f"operations/{job_id}") from None
    ownership.check(job.owner, "operation", f"operations/{job_id}")
    return job


def cancel_quietly(backend, job_id: str) -> None:
    """Cancel a job if it still exists and runs (force deletes)."""
    try:
        backend.queue.cancel(job_id)
    except (KeyError, ValueError):
        pass


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
        terms = ownership.parse_filter(request.filter, ("state", "owner"), _FILTER_HELP)
        if terms.get("state", "QUEUED") not in JobState.__members__:
            raise errors.invalid_argument({"filter": f"{_FILTER_HELP}, not {request.filter!r}"})
        jobs, token = self.backend.queue.list(page_size=request.page_size, page_token=request.page_token or None,
                                              filter_state=terms.get("state"), owner=terms.get("owner"))
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
        settlement.settle_job(self.backend, job)  # what it created keeps its result
        self.backend.queue.delete(job.id)
        if job.request_id:
            method, _, request_id = job.request_id.partition("|")
            self.backend.idempotency.forget(job.owner, method, request_id)
        return empty_pb2.Empty()

    @errors.handle_errors
    def WaitOperation(self, request, context):
        job = get_job(self.backend, "name", request.name)
        timeout = request.timeout.seconds + request.timeout.nanos / 1e9 if request.HasField("timeout") else MAX_WAIT_S
        if context.time_remaining() is not None:
            timeout = min(timeout, max(context.time_remaining() - 0.5, 0.0))
        return to_operation(self.backend, self.backend.queue.wait(job.id, min(timeout, MAX_WAIT_S)))

"""Creating and deleting resources, for the servicers: operations that create concept sets and graphs, uploads
that register models and datasets, and deletes that respect references (AIP-135 ``force``).

Every create is validated by the servicer before it gets here, goes through :mod:`~gigaudit_server.api.idempotency`
and records the caller as owner. Nothing is left behind when a create fails half-way.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from gigaudit_server.api import errors, idempotency, operations, ownership
from gigaudit_server.observability import tracing
from gigaudit_server.queue.jobs import Job
from gigaudit_server.storage import settlement
from gigaudit_server.storage.catalog import AlreadyExists, InUse

NOUNS = {"models": "model", "datasets": "dataset", "conceptSets": "concept set", "conceptGraphs": "concept graph"}
Created = tuple[str, str, dict, list[tuple[str, str]]]  # (collection, id, record, parents)


def resource_name(collection: str, resource_id: str) -> str:
    """``models/m``, ``datasets/d``, ``models/m/conceptSets/s``, ``models/m/conceptGraphs/g``."""
    if collection in ("models", "datasets"):
        return f"{collection}/{resource_id}"
    model_id, child_id = resource_id.split("/", 1)
    return f"models/{model_id}/{collection}/{child_id}"


def start(backend, method: str, request, kind: str, params: dict, created: list[Created],
          uses: Iterable[tuple[str, str]], *, shards: int = 1, reduce_kind: str | None = None,
          on_submitted: Callable[[Job], None] | None = None):
    """Record the resources an operation creates (CREATING, owned by the caller, children of their parents), queue
    its job (then ``on_submitted(job)``) and return its Operation. A retry of the same request returns the same
    operation and does nothing else."""
    uses = list(uses)
    owner, request_id = ownership.owner(), getattr(request, "request_id", "")

    def work() -> str:
        try:
            backend.catalog.create_many([(c, i, {**record, "state": "CREATING", "operation": "", "owner": owner},
                                          parents) for c, i, record, parents in created])
        except AlreadyExists as exc:
            collection, resource_id = str(exc.args[0]).split("/", 1)
            raise errors.already_exists(NOUNS[collection], resource_name(collection, resource_id)) from None
        except KeyError as exc:  # a parent was deleted since the servicer read it
            collection, resource_id = str(exc.args[0]).split("/", 1)
            raise errors.not_found(NOUNS[collection], resource_name(collection, resource_id)) from None
        try:
            job = backend.queue.submit(kind, params, shards=shards, reduce_kind=reduce_kind, owner=owner,
                                       request_id=f"{method}|{request_id}" if request_id else None,
                                       trace=tracing.current_traceparent())
        except BaseException:
            for collection, resource_id, _, _ in created:
                _forget(backend, collection, resource_id)
            raise
        _attach(backend, job, created, uses)
        if on_submitted is not None:
            on_submitted(job)
        return job.id

    def replay(job_id: str):
        """The first call's operation; when what it created was deleted since, the request runs anew."""
        for collection, resource_id, _, _ in created:
            try:
                if backend.catalog.get(collection, resource_id).get("operation") == job_id:
                    continue
            except KeyError:
                pass
            raise idempotency.Gone(resource_id)
        return operations.to_operation(backend, operations.job_of(backend, job_id))

    return backend.idempotency.once(owner, method, request_id, idempotency.fingerprint(request), work, replay)


def register_upload(backend, collection: str, resource_id: str, sha: str, store_chunks: Callable[[], int],
                    make_record: Callable[[int], dict], after: Callable[[dict], dict] | None = None) -> dict:
    """Register an uploaded artifact as a model or dataset record.

    The announced ``sha`` is pinned first (so a concurrent delete of the same bytes cannot remove the file under
    this upload), then ``store_chunks()`` stores the stream and returns its size, ``make_record(size)`` checks it and
    builds the record, which is created owned by the caller; ``after(record)`` may queue follow-up work (returns the
    record). On any failure nothing stays: the record is removed and the pin dropped."""
    kind, _ = settlement.UPLOADED[collection]
    if _exists(backend, collection, resource_id):  # cheap refusal before reading the stream
        raise errors.already_exists(NOUNS[collection], resource_name(collection, resource_id))
    backend.catalog.pin_blob(kind, sha)
    created = False
    try:
        record = {**make_record(store_chunks()), "owner": ownership.owner()}
        try:
            record = backend.catalog.create(collection, resource_id, record)
        except AlreadyExists:
            raise errors.already_exists(NOUNS[collection], resource_name(collection, resource_id)) from None
        created = True
        return after(record) if after else record
    except BaseException:
        if created:
            settlement.remove_uploaded(backend, collection, resource_id)
        elif backend.catalog.unpin_blob(kind, sha):
            settlement.delete_artifact(backend, kind, sha)
        raise


def delete(backend, collection: str, resource_id: str, *, force: bool) -> None:
    """Delete a resource. Without ``force``, FAILED_PRECONDITION while it has children (concept sets, graphs) or
    unfinished operations, listing them; with it, the children are deleted first and the operations cancelled."""
    name = resource_name(collection, resource_id)
    for _ in range(8):  # children may be added between a cascade and the delete: go again
        try:
            record = backend.catalog.get(collection, resource_id)
        except KeyError:
            raise errors.not_found(NOUNS[collection], name) from None
        if collection in ("conceptSets", "conceptGraphs"):
            ownership.check(record.get("owner", ""), NOUNS[collection], name)
        blob = settlement.artifact_of(collection, record)
        users = backend.catalog.users(collection, resource_id) if force else []
        try:
            removed = backend.catalog.delete(collection, resource_id, blob=blob, ignore_users=force)
        except KeyError:
            raise errors.not_found(NOUNS[collection], name) from None
        except InUse as exc:
            if not force:
                raise _in_use(name, exc) from None
            for child in exc.children:  # one that vanished meanwhile no longer counts on the next round
                child_collection, child_id = child.split("/", 1)
                if _exists(backend, child_collection, child_id):
                    delete(backend, child_collection, child_id, force=True)
            continue
        for job_id in users:
            operations.cancel_quietly(backend, job_id)
        if removed.get("blob_unreferenced"):
            settlement.delete_artifact(backend, *blob)
        return
    raise errors.failed_precondition(name, "its children kept changing while it was being deleted; retry",
                                     kind="REFERENCES")


# ---------------------------------------------------------------------------------------------- internals
def _attach(backend, job: Job, created: list[Created], uses: Iterable[tuple[str, str]]) -> None:
    """Link a submitted job to what it uses and creates; cancel it when one of those was deleted meanwhile."""
    catalog, missing = backend.catalog, False
    for collection, resource_id in [*uses, *((c, i) for c, i, _, _ in created)]:
        catalog.add_user(collection, resource_id, job.id)
    for collection, resource_id, _, _ in created:
        try:
            catalog.update(collection, resource_id, operation=job.id)
        except KeyError:
            missing = True
    for collection, resource_id in uses:
        if not _exists(backend, collection, resource_id):
            missing = True
    if missing:
        operations.cancel_quietly(backend, job.id)


def _forget(backend, collection: str, resource_id: str) -> None:
    try:
        backend.catalog.delete(collection, resource_id, ignore_users=True)
    except (KeyError, InUse):
        pass


def _exists(backend, collection: str, resource_id: str) -> bool:
    try:
        backend.catalog.get(collection, resource_id)
        return True
    except KeyError:
        return False


def _in_use(name: str, exc: InUse) -> errors.ApiError:
    parts = []
    if exc.children:
        parts.append("made from it: " + ", ".join(resource_name(*c.split("/", 1)) for c in exc.children[:10])
                     + (f" and {len(exc.children) - 10} more" if len(exc.children) > 10 else ""))
    if exc.users:
        parts.append("unfinished operations: " + ", ".join(f"operations/{j}" for j in exc.users[:10]))
    return errors.failed_precondition(name, "still in use (" + "; ".join(parts) + "); delete those first, or pass "
                                      "force to delete them with it and cancel the operations", kind="REFERENCES")

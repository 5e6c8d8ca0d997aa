"""Catalog records ↔ API messages, and the resources that operations create.

A concept set or graph is recorded as CREATING when its operation is submitted and settled (ACTIVE with the job's
result, or FAILED) the first time it is read after the job finished, so no process has to stay up to register it.
The same holds for a concept set's on-demand exemplar renderings: the first read after a ``render_exemplars`` job
succeeded merges its PNGs into the set's exemplar bundle.
"""
from __future__ import annotations

import functools
import json

from google.protobuf import empty_pb2, json_format, struct_pb2, timestamp_pb2

from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import resource_state_pb2 as state_pb
from gigaudit_server.storage import catalog as catalog_lib
from gigaudit_server.storage import exemplars
from gigaudit_server.queue.jobs import Job, JobState

MAX_GRAPH_PAGE = 10_000
_STATES = {"CREATING": state_pb.RESOURCE_STATE_CREATING, "ACTIVE": state_pb.RESOURCE_STATE_ACTIVE,
           "FAILED": state_pb.RESOURCE_STATE_FAILED}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def to_struct(data: dict | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(json.loads(json.dumps(data or {})))  # JSON round trip: tuples, ints as numbers
    return message


# ---------------------------------------------------------------------------------------------- models, datasets
def model_message(record: dict) -> model_pb.Model:
    return model_pb.Model(
        name=record["name"], display_name=record.get("display_name", ""), architecture=record["architecture"],
        num_classes=record["num_classes"], class_names=record["class_names"], input_size=record["input_size"],
        mean=record["mean"], std=record["std"], size_bytes=record["size_bytes"], sha256=record["weights_sha256"],
        create_time=timestamp(record["create_time"]), default_layers=record.get("default_layers", []))


def dataset_message(record: dict) -> dataset_pb.Dataset:
    return dataset_pb.Dataset(
        name=record["name"], display_name=record.get("display_name", ""),
        format=dataset_pb.DatasetFormat.Value(f"DATASET_FORMAT_{record['format'].upper()}"),
        image_count=record["n_images"], class_names=record["class_names"], size_bytes=record["size_bytes"],
        sha256=record["sha256"], uri=record.get("uri", ""), create_time=timestamp(record["create_time"]))


# ---------------------------------------------------------------------------------------------- concept sets
def concept_set(backend, model_id: str, set_id: str) -> dict:
    """The concept set's record, settled against its operation and its finished exemplar renderings; ``KeyError``
    when absent."""
    record = backend.catalog.get("conceptSets", f"{model_id}/{set_id}")
    record = _settle(backend, "conceptSets", f"{model_id}/{set_id}", record, _concept_set_result)
    return _settle_renderings(backend, f"{model_id}/{set_id}", record)


def _concept_set_result(backend, result: dict) -> dict:
    stats = result.get("layers") or {
        layer: {k: v for k, v in values.items() if k in ("relative_error", "l0", "n_concepts")}
        for layer, values in (result.get("evidence") or {}).get("reconstruction", {}).items()}
    settled = {"concept_set_sha": result["concept_set_sha"], "exemplars_sha": result.get("exemplars_sha"),
               "layer_stats": stats, "rendered_concepts": result.get("rendered_concepts") or {}}
    if result.get("options"):  # the options gig used, its defaults included
        settled["used_options"] = result["options"]
    return settled


def add_render_operation(backend, model_id: str, set_id: str, job_id: str) -> dict:
    """Record a ``render_exemplars`` job of a concept set (atomically; adding it twice changes nothing)."""
    def add(record):
        return {**record, "render_operations": sorted({*record.get("render_operations", []), job_id})}
    return backend.catalog.modify("conceptSets", f"{model_id}/{set_id}", add)


def _settle_renderings(backend, resource_id: str, record: dict) -> dict:
    """Merge the PNGs of the concept set's finished ``render_exemplars`` jobs into its bundle, and forget them."""
    finished = {}
    for job_id in record.get("render_operations", []):
        try:
            job = backend.queue.get(job_id)
        except KeyError:  # deleted before it was read: nothing to merge
            finished[job_id] = None
            continue
        if job.finished:
            finished[job_id] = job.result.get("exemplars_sha") if job.state is JobState.SUCCEEDED else None
    if not finished:
        return record

    def merge(current):
        pending = current.get("render_operations", [])
        bundle = backend.store.read("exemplars", current["exemplars_sha"])
        for job_id in pending:
            if finished.get(job_id):
                bundle = exemplars.merge_bundles(bundle, backend.store.read("exemplars", finished[job_id]))
        return {**current, "exemplars_sha": backend.store.put_bytes("exemplars", bundle),
                "rendered_concepts": exemplars.rendered_concepts(bundle),
                "render_operations": [j for j in pending if j not in finished]}
    return backend.catalog.modify("conceptSets", resource_id, merge)


def concept_set_message(record: dict) -> audit_pb.ConceptSet:
    message = audit_pb.ConceptSet(
        name=record["name"], dataset=record["dataset"], state=_STATES[record["state"]],
        operation=f"operations/{record['operation']}", create_time=timestamp(record["create_time"]),
        options=_options_message(record))
    rendered = record.get("rendered_concepts") or {}
    for layer, stats in (record.get("layer_stats") or {}).items():
        message.layers.add(layer=layer, n_concepts=int(stats.get("n_concepts", 0)),
                           relative_error=float(stats.get("relative_error", 0.0)), l0=float(stats.get("l0", 0.0)),
                           rendered_concepts=rendered.get(layer, []))
    return message


def _options_message(record: dict) -> audit_pb.ConceptOptions:
    """The options gig used (its defaults filled in) once the set is made, else those the caller set."""
    requested = json_format.ParseDict(record["options"], audit_pb.ConceptOptions())
    try:
        return json_format.ParseDict({**record["options"], **record.get("used_options", {})},
                                     audit_pb.ConceptOptions(), ignore_unknown_fields=True)
    except json_format.ParseError:  # a value the message cannot carry (e.g. a non-numeric default)
        return requested


# ---------------------------------------------------------------------------------------------- concept graphs
def concept_graph(backend, model_id: str, graph_id: str) -> dict:
    """The concept graph's record, settled against its operation; ``KeyError`` when absent."""
    record = backend.catalog.get("conceptGraphs", f"{model_id}/{graph_id}")
    return _settle(backend, "conceptGraphs", f"{model_id}/{graph_id}", record, _concept_graph_result)


def _concept_graph_result(backend, result: dict) -> dict:
    graph = load_graph(backend.store, result["graph_sha"])
    return {"graph_sha": result["graph_sha"], "layers": graph["layers"], "classes": graph.get("classes", []),
            "image_count": graph["n_images"], "params": graph.get("params", {}),
            "evidence": result.get("evidence") or graph.get("evidence", {}),
            "node_count": len(graph["nodes"]), "edge_count": len(graph["edges"])}


@functools.lru_cache(maxsize=8)
def load_graph(store, sha: str) -> dict:
    """A stored graph dict (docs/graph-format.md; read-only); the last few are kept parsed."""
    return json.loads(store.read("graphs", sha))


def concept_graph_message(record: dict, *, graph: dict | None = None, page_size: int = 0,
                          page_token: str = "") -> audit_pb.ConceptGraph:
    """BASIC view without ``graph``; with it, one page of the sequence "all nodes, then all edges"."""
    message = audit_pb.ConceptGraph(
        name=record["name"], concept_set=record["concept_set"], dataset=record["dataset"],
        state=_STATES[record["state"]], operation=f"operations/{record['operation']}",
        layers=record.get("layers", []), classes=record.get("classes", []),
        image_count=record.get("image_count", 0), params=to_struct(record.get("params")),
        evidence=to_struct(record.get("evidence")), node_count=record.get("node_count", 0),
        edge_count=record.get("edge_count", 0), create_time=timestamp(record["create_time"]))
    if graph is None:
        return message
    if not 0 <= page_size <= MAX_GRAPH_PAGE:
        raise ValueError(f"page_size must be between 0 and {MAX_GRAPH_PAGE}, not {page_size}")
    scope = f"{record['name']}@{record['graph_sha']}"
    start = catalog_lib.decode_page_token(page_token, scope)
    stop = start + (page_size or 1000)
    nodes, edges = graph["nodes"], graph["edges"]
    for node in nodes[start:stop]:
        json_format.ParseDict(node, message.nodes.add(), ignore_unknown_fields=True)
    for edge in edges[max(0, start - len(nodes)):max(0, stop - len(nodes))]:
        _edge(edge, message.edges.add())
    if stop < len(nodes) + len(edges):
        message.next_page_token = catalog_lib.encode_page_token(stop, scope)
    return message


def _edge(edge: dict, message: audit_pb.ConceptEdge) -> None:
    json_format.ParseDict({k: v for k, v in edge.items() if k != "class_sums"}, message, ignore_unknown_fields=True)
    for class_id, (total, count) in (edge.get("class_sums") or {}).items():
        message.class_sums[int(class_id)].CopyFrom(audit_pb.ClassSum(sum=total, count=int(count)))


# ---------------------------------------------------------------------------------------------- operations
def operation_response(backend, job: Job):
    """The typed response of a SUCCEEDED operation."""
    params = job.params
    if job.kind in ("extract_concepts", "render_exemplars"):
        return concept_set_message(concept_set(backend, *_ids(params["concept_set"])))
    if job.kind == "build_graph":
        return concept_graph_message(concept_graph(backend, *_ids(params["concept_graph"])))
    if job.kind == "audit":
        return audit_pb.AuditResult(
            concept_set=concept_set_message(concept_set(backend, *_ids(params["concept_set"]))),
            concept_graph=concept_graph_message(concept_graph(backend, *_ids(params["concept_graph"]))),
            evidence=to_struct(job.result.get("evidence")))
    if job.kind == "validate_model":
        return model_pb.ListLayersResponse(layers=[model_pb.Layer(**layer) for layer in job.result["layers"]],
                                           default_layers=job.result["default_layers"])
    return empty_pb2.Empty()


def _ids(name: str) -> tuple[str, str]:
    _, model_id, _, child_id = name.split("/")
    return model_id, child_id


def _settle(backend, collection: str, resource_id: str, record: dict, from_result) -> dict:
    if record["state"] != "CREATING" or not record.get("operation"):
        return record
    try:
        job = backend.queue.get(record["operation"])
    except KeyError:  # the operation was deleted before it was ever read
        return backend.catalog.update(collection, resource_id, state="FAILED",
                                      error={"code": "ABORTED", "message": "its operation was deleted"})
    if job.state is JobState.SUCCEEDED:
        return backend.catalog.update(collection, resource_id, state="ACTIVE", **from_result(backend, job.result))
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        return backend.catalog.update(collection, resource_id, state="FAILED", error=job.error)
    return record

"""Catalog records ↔ API messages (records are settled by ``storage.settlement`` before they get here)."""
from __future__ import annotations

import json

from google.protobuf import empty_pb2, json_format, struct_pb2, timestamp_pb2

from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import resource_state_pb2 as state_pb
from gigaudit_server.queue.jobs import Job
from gigaudit_server.storage import catalog as catalog_lib
from gigaudit_server.storage import exemplars, settlement

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
def settled_page(plane, collection: str, settle, message, request) -> tuple[list, str]:
    """``(messages, next page token)``: one page of ``collection``, each record settled first (``settle(plane,
    id)``, e.g. ``settlement.model``); a record that settling removes (its check failed) is left out."""
    records, token = plane.catalog.list(collection, page_size=request.page_size, page_token=request.page_token)
    found = []
    for record in records:
        try:
            found.append(message(settle(plane, record["name"].split("/", 1)[1])))
        except KeyError:  # its check failed: removed
            continue
    return found, token


def model_message(record: dict) -> model_pb.Model:
    return model_pb.Model(
        name=record["name"], display_name=record.get("display_name", ""), architecture=record["architecture"],
        num_classes=record["num_classes"], class_names=record["class_names"], input_size=record["input_size"],
        mean=record["mean"], std=record["std"], size_bytes=record["size_bytes"], sha256=record["weights_sha256"],
        create_time=timestamp(record["create_time"]), default_layers=record.get("default_layers", []),
        state=_STATES[record.get("state", "ACTIVE")], owner=record.get("owner", ""),
        operation=f"operations/{record['operation']}" if record.get("operation") else "",
        preprocessing=preprocessing_message(record.get("preprocessing") or {}),
        architecture_options=to_struct(record.get("architecture_options")),
        tracer=model_pb.TracerOptions(**(record.get("tracer") or {})), family=record.get("family", ""))


def preprocessing_message(spec: dict) -> model_pb.Preprocessing:
    """A Preprocessing message of a ``PreprocessingSpec`` dict (``queue.schemas``)."""
    return model_pb.Preprocessing(
        height=spec.get("height", 0), width=spec.get("width", 0),
        resize_mode=f"RESIZE_MODE_{(spec.get('resize_mode') or 'unspecified').upper()}",
        crop_pct=spec.get("crop_pct", 0.0),
        interpolation=f"INTERPOLATION_{(spec.get('interpolation') or 'unspecified').upper()}",
        mean=spec.get("mean", []), std=spec.get("std", []), source=spec.get("source", ""))


def preprocessing_spec(message: model_pb.Preprocessing) -> dict:
    """The ``PreprocessingSpec`` dict of a Preprocessing message (unspecified enums: empty strings)."""
    resize = model_pb.ResizeMode.Name(message.resize_mode).removeprefix("RESIZE_MODE_").lower()
    interpolation = model_pb.Interpolation.Name(message.interpolation).removeprefix("INTERPOLATION_").lower()
    return {"height": message.height, "width": message.width,
            "resize_mode": "" if resize == "unspecified" else resize, "crop_pct": round(message.crop_pct, 6),
            "interpolation": "" if interpolation == "unspecified" else interpolation,
            "mean": list(message.mean), "std": list(message.std), "source": ""}


def dataset_message(record: dict) -> dataset_pb.Dataset:
    """A Dataset message of a dataset record (format unspecified while a worker inspects it)."""
    return dataset_pb.Dataset(
        name=record["name"], display_name=record.get("display_name", ""),
        format=dataset_pb.DatasetFormat.Value(f"DATASET_FORMAT_{(record['format'] or 'unspecified').upper()}"),
        image_count=record["n_images"], class_names=record["class_names"], size_bytes=record["size_bytes"],
        sha256=record["sha256"], uri=record.get("uri", ""), create_time=timestamp(record["create_time"]),
        owner=record.get("owner", ""), image_sizes=dataset_pb.ImageSizes(**(record.get("image_sizes") or {})),
        state=_STATES[record.get("state", "ACTIVE")],
        operation=f"operations/{record['operation']}" if record.get("operation") else "",
        image_column=record.get("image_column", ""), label_column=record.get("label_column", ""))


# ---------------------------------------------------------------------------------------------- concept sets
def concept_set_message(record: dict) -> audit_pb.ConceptSet:
    message = audit_pb.ConceptSet(
        name=record["name"], dataset=record["dataset"], state=_STATES[record["state"]],
        operation=f"operations/{record['operation']}", create_time=timestamp(record["create_time"]),
        options=_options_message(record), owner=record.get("owner", ""))
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
def concept_graph_message(record: dict, *, graph: dict | None = None, page_size: int = 0,
                          page_token: str = "") -> audit_pb.ConceptGraph:
    """BASIC view without ``graph``; with it, one page of the sequence "all nodes, then all edges"."""
    message = audit_pb.ConceptGraph(
        name=record["name"], concept_set=record["concept_set"], dataset=record["dataset"],
        state=_STATES[record["state"]], operation=f"operations/{record['operation']}",
        layers=record.get("layers", []), classes=record.get("classes", []),
        image_count=record.get("image_count", 0), params=to_struct(record.get("params")),
        evidence=to_struct(record.get("evidence")), node_count=record.get("node_count", 0),
        edge_count=record.get("edge_count", 0), create_time=timestamp(record["create_time"]),
        owner=record.get("owner", ""))
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
        return concept_set_message(settlement.concept_set(backend, *_ids(params["concept_set"])))
    if job.kind == "build_graph":
        return concept_graph_message(settlement.concept_graph(backend, *_ids(params["concept_graph"])))
    if job.kind == "audit":
        return audit_pb.AuditResult(
            concept_set=concept_set_message(settlement.concept_set(backend, *_ids(params["concept_set"]))),
            concept_graph=concept_graph_message(settlement.concept_graph(backend, *_ids(params["concept_graph"]))),
            evidence=to_struct(job.result.get("evidence")))
    if job.kind == "validate_model":
        return model_message(settlement.model(backend, params["model_id"]))
    if job.kind == "inspect_dataset":
        return dataset_message(settlement.dataset(backend, params["dataset_id"]))
    if job.kind == "explain_image":
        return image_explanation_message(job.result, backend.store.read("exemplars", job.result["overlays_sha"]))
    return empty_pb2.Empty()


def image_explanation_message(result: dict, overlays: bytes) -> audit_pb.ImageExplanation:
    """``ImageExplanation`` from an ``explain_image`` result and its overlay bundle (one iERF view per concept)."""
    explanation = result["explanation"]
    message = audit_pb.ImageExplanation(
        predicted_class=explanation["predicted_class"], predicted_label=explanation.get("predicted_label") or "",
        target_class=explanation["target_class"], probabilities=explanation["probabilities"],
        completeness=to_struct(explanation["completeness"]))
    for segment in explanation["layers"]:
        layer = message.layers.add(source=segment["source"], target=segment["target"])
        for c in segment["contributions"]:
            shots = exemplars.read_exemplars(overlays, c["layer"], c["concept"], 1)
            layer.contributions.add(node_id=c["node"], concept=c["concept"], label=c.get("label") or "",
                                    attribution=c["attribution"], coefficient=c["coefficient"],
                                    ierf_overlay=shots[0]["ierf_png"] if shots else b"")
    return message


def _ids(name: str) -> tuple[str, str]:
    _, model_id, _, child_id = name.split("/")
    return model_id, child_id

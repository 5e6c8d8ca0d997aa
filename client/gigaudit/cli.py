"""`gigaudit`: the command a pipeline calls to audit a model, plus resource management and reports.

Exit codes: 0 = audit done and policy passed, 1 = policy failed, 2 = usage, input or server error (the server's
status and details are printed to stderr).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format

from gigaudit.client import AuditClient, _archive, _file_digest, operation_result
from gigaudit.embedded import embedded_server
from gigaudit.errors import GigauditError
from gigaudit.policy import evaluate_policy, load_policy
from gigaudit.report import write_report
from gigaudit.results import ConceptGraph
from gigaudit.v1 import resource_state_pb2

EXIT_OK, EXIT_POLICY, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
MANAGED = {"models": ("list", "get", "delete"), "datasets": ("list", "get", "delete"),
           "operations": ("list", "get", "delete", "cancel", "wait"), "concept-sets": ("list", "get", "delete"),
           "graphs": ("list", "delete"), "dead-letters": ("list", "retry")}
RESOURCE_HELP = {"models": "list, get or delete models", "datasets": "list, get or delete datasets",
                 "operations": "list, get, delete or cancel operations, or wait for one with a progress bar",
                 "concept-sets": "list a model's concept sets, get or delete one",
                 "graphs": "list a model's concept graphs or delete one",
                 "dead-letters": "jobs that failed for good: list them or retry one (admin role)"}
ACTION_HELP = {"list": "list them (JSON)", "get": "show one (JSON)", "delete": "delete one",
               "cancel": "cancel one", "wait": "wait for one to finish", "retry": "queue a dead-lettered job again"}
NAME_HELP = {"models": "model id or models/ID", "datasets": "dataset id or datasets/ID",
             "operations": "operation id or operations/ID",
             "concept-sets": "models/MODEL/conceptSets/ID or MODEL/ID",
             "graphs": "models/MODEL/conceptGraphs/ID or MODEL/ID"}
FORCE_HELP = {"models": "also delete its concept sets and graphs and cancel its operations",
              "datasets": "also delete the concept sets and graphs made from it and cancel its operations",
              "concept-sets": "also delete the graphs built from it and cancel its operations",
              "graphs": "cancel its operation when it still runs"}
OPERATION_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["worker"]):  # this process becomes the server: signals reach it, flags untouched
        return _exec_server(argv)
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except GigauditError as exc:
        print(f"gigaudit: server error: {exc.one_line()}", file=sys.stderr)
    except grpc.RpcError as exc:
        print(f"gigaudit: server error: {GigauditError.from_rpc_error(exc).one_line()}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"gigaudit: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("gigaudit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _exec_server(argv: list[str]) -> int:
    """Replace this process with `python -m gigaudit_server serve|worker ...` (returns only when it cannot)."""
    if importlib.util.find_spec("gigaudit_server") is None:
        print(f"gigaudit: error: `gigaudit {argv[0]}` needs the server package: pip install 'gigaudit[server]'",
              file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gigaudit_server", *argv])
    return EXIT_ERROR  # not reached


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gigaudit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = sub.add_parser("audit", help="audit a model on a dataset, write the report, gate on a policy")
    audit.add_argument("--model", required=True, type=Path, help="weights (.safetensors)")
    audit.add_argument("--arch", required=True, help="architecture name (see `gigaudit architectures`)")
    audit.add_argument("--num-classes", required=True, type=int)
    audit.add_argument("--dataset", required=True, type=Path, help="folder (class/image.png) or tar/zip archive")
    audit.add_argument("--layers", nargs="+", default=[], help="analysed layers (default: the model's default)")
    audit.add_argument("--class-names", nargs="+", default=[])
    audit.add_argument("--input-size", type=int, default=224, help="side of the model's input images (224)")
    audit.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN, help="normalisation (ImageNet's)")
    audit.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD, help="normalisation (ImageNet's)")
    audit.add_argument("--n-concepts", type=int, default=0, help="concepts per layer (default: server default, gig's)")
    audit.add_argument("--steps", type=int, default=0, help="quadrature steps (default: server default, gig's)")
    audit.add_argument("--top-t", type=int, default=0,
                       help="targets per image and layer (default: server default, gig's)")
    audit.add_argument("--seed", type=int, default=0, help="random seed (default: server default, gig's)")
    audit.add_argument("--audit-id", default=None, help="id of the audit (default: derived from model, data and "
                       "options)")
    audit.add_argument("--exemplars", type=int, default=6, help="exemplars per concept in the report, for the "
                       "concepts the server rendered (the most relevant of every layer); 0: none")
    audit.add_argument("--out", required=True, type=Path, help="report folder")
    audit.add_argument("--policy", type=Path, help="policy YAML")
    audit.add_argument("--reference", type=Path, help="graph.json of an earlier audit, for drift checks")
    audit.add_argument("--timeout", type=float, default=None, help="seconds to wait for each operation")
    audit.add_argument("--no-progress", action="store_true")
    _connection(audit, embedded=True)
    audit.set_defaults(run=_audit)

    report = sub.add_parser("report", help="build the HTML report of a saved graph.json")
    report.add_argument("graph", type=Path)
    report.add_argument("--out", required=True, type=Path)
    report.add_argument("--policy", type=Path)
    report.add_argument("--reference", type=Path)
    report.set_defaults(run=_report)

    arch = sub.add_parser("architectures", help="list the server's architectures")
    _connection(arch)
    arch.set_defaults(run=_architectures)

    for resource, actions in MANAGED.items():
        group = sub.add_parser(resource, help=RESOURCE_HELP[resource])
        verbs = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action in actions:
            verb = verbs.add_parser(action, help=ACTION_HELP.get((resource, action), ACTION_HELP.get(action)))
            if action in ("list",) and resource in ("concept-sets", "graphs"):
                verb.add_argument("model", help="model id or models/ID")
            elif action == "retry":
                verb.add_argument("name", metavar="OPERATION", help="operation id or operations/ID")
            elif action != "list":
                verb.add_argument("name", help=NAME_HELP[resource])
            if action == "delete" and resource != "operations":
                verb.add_argument("--force", action="store_true", help=FORCE_HELP[resource])
            if action == "list" and resource in ("operations", "concept-sets", "graphs"):
                verb.add_argument("--owner", help="only those of this owner (a token name; admins)")
            if action == "list" and resource == "operations":
                verb.add_argument("--state", choices=OPERATION_STATES, type=str.upper, help="only those in this state")
            _connection(verb)
            verb.set_defaults(run=_manage, resource=resource)

    sub.add_parser("serve", help="run the server (becomes python -m gigaudit_server serve ...)")
    sub.add_parser("worker", help="run a worker (becomes python -m gigaudit_server worker ...)")
    return parser


def _connection(parser: argparse.ArgumentParser, embedded: bool = False) -> None:
    help_ = "host:port of the server" + (" (default: start an embedded server)" if embedded else "")
    parser.add_argument("--server", required=not embedded and "GIGAUDIT_SERVER" not in os.environ,
                        default=os.environ.get("GIGAUDIT_SERVER"), help=help_ + "; env GIGAUDIT_SERVER")
    parser.add_argument("--token", default=os.environ.get("GIGAUDIT_TOKEN"), help="bearer token; env GIGAUDIT_TOKEN")
    parser.add_argument("--tls-ca", type=Path, help="CA bundle (PEM): use TLS")


def _client(args) -> AuditClient:
    return AuditClient(args.server, token=args.token, tls=args.tls_ca)


def _audit(args) -> int:
    policy = load_policy(args.policy) if args.policy else None
    reference = ConceptGraph.load(args.reference) if args.reference else None
    if args.server:
        return _run_audit(args, _client(args), policy, reference)
    with embedded_server() as target:
        print(f"gigaudit: started an embedded server at {target}", file=sys.stderr)
        return _run_audit(args, AuditClient(target, token=args.token), policy, reference)


def _run_audit(args, client: AuditClient, policy, reference) -> int:
    progress = not args.no_progress
    with client:
        client.wait_ready()
        model = _register_model(args, client, progress)
        dataset = _register_dataset(args, client, progress)
        options = _audit_options(args, model.name, dataset.name)
        digest = _digest(options)
        audit_id = args.audit_id or f"audit-{digest[:16]}"
        concept_options = {"n_concepts": args.n_concepts, "seed": args.seed}
        graph_options = {"steps": args.steps, "top_t": args.top_t}
        try:
            op = client.audit(model.name, dataset.name, audit_id, layers=args.layers,
                              concept_options=concept_options, graph_options=graph_options,
                              request_id=f"cli-audit-{audit_id}-{digest[:32]}")
        except GigauditError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            if args.audit_id:
                raise ValueError(f"audit id {audit_id!r} is taken on {model.name} by another audit (other options, "
                                 "or one that was not started by this command); choose another --audit-id, or "
                                 "leave it out to derive one from the options") from None
            op = _earlier_audit(client, model.name, audit_id)  # same derived id: same model, data and options
        print(f"gigaudit: audit {audit_id}: operation {op.name}", file=sys.stderr)
        result = client.wait(op.name, timeout=args.timeout, progress=progress)
        graph = client.get_graph(result.concept_graph.name)
        exemplars = client.graph_exemplars(graph, result.concept_set.name, args.exemplars) if args.exemplars else {}
    return _write_outputs(args.out, graph, policy, reference, exemplars, title=f"gigaudit: {model.name}")


def _register_model(args, client: AuditClient, progress: bool):
    """Upload the weights under an id covering them and every setting that changes an audit; an existing model of
    that id is reused only when it has exactly those settings."""
    model_id, request_id, wanted = _model_registration(args)
    try:
        model = client.upload_model(args.model, model_id, architecture=args.arch, num_classes=args.num_classes,
                                    class_names=args.class_names, input_size=args.input_size, mean=args.mean,
                                    std=args.std, request_id=request_id, progress=progress, timeout=args.timeout)
    except GigauditError as exc:
        if exc.code != grpc.StatusCode.ALREADY_EXISTS:
            raise
        model = client.get_model(model_id)  # registered by another caller, or before its request id was forgotten
        if model.state == resource_state_pb2.RESOURCE_STATE_CREATING and model.operation:  # another run's upload
            client.wait(model.operation, timeout=args.timeout, progress=progress)
            model = client.get_model(model_id)
    differences = _model_differences(model, wanted)  # also after a replayed request id: the id may be reused
    if differences:
        raise ValueError(f"models/{model_id} is registered with other settings ({'; '.join(differences)}); "
                         "delete it (`gigaudit models delete`) or rename the weights file")
    return model


def _model_registration(args) -> tuple[str, str, dict]:
    """(model id, request id, settings): both ids cover the weights and every setting that changes an audit."""
    wanted = {"sha256": _file_digest(args.model)[1], "architecture": args.arch, "num_classes": args.num_classes,
              "class_names": list(args.class_names), "input_size": args.input_size,
              "mean": [float(v) for v in args.mean], "std": [float(v) for v in args.std]}
    digest = _digest(wanted)
    return f"{_stem(args.model)}-{digest[:12]}", f"cli-model-{digest[:32]}", wanted


def _register_dataset(args, client: AuditClient, progress: bool):
    """Upload the dataset (a folder packed into a tar once) under an id from its content; an existing dataset of
    that id is reused only when its content is the same."""
    with _archive(args.dataset) as (archive, _):
        sha = _file_digest(archive)[1]
        dataset_id = f"{_stem(args.dataset)}-{sha[:12]}"
        try:
            dataset = client.upload_dataset(archive, dataset_id, display_name=args.dataset.name,
                                            request_id=f"cli-dataset-{sha[:32]}", progress=progress)
        except GigauditError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            dataset = client.get_dataset(dataset_id)
    if dataset.sha256 != sha:  # also after a replayed request id: the id may have been deleted and reused
        raise ValueError(f"datasets/{dataset_id} holds other content (sha256 {dataset.sha256[:12]}…, this one "
                         f"{sha[:12]}…); delete it (`gigaudit datasets delete`) or rename the dataset")
    return dataset


def _earlier_audit(client: AuditClient, model: str, audit_id: str):
    """The operation of the audit `audit_id` that an earlier run started (its request id since forgotten)."""
    concept_set = client.get_concept_set(f"{model}/conceptSets/{audit_id}")
    if not concept_set.operation:
        raise ValueError(f"{model}/conceptSets/{audit_id} exists but names no operation; delete it "
                         "(`gigaudit concept-sets delete --force`) and run the audit again")
    op = client.get_operation(concept_set.operation)
    if op.done:
        operation_result(op)  # a failed earlier audit is reported, not reused as a success
    return op


def _report(args) -> int:
    policy = load_policy(args.policy) if args.policy else None
    reference = ConceptGraph.load(args.reference) if args.reference else None
    return _write_outputs(args.out, ConceptGraph.load(args.graph), policy, reference, {},
                          title=f"gigaudit: {args.graph}")


def _write_outputs(out: Path, graph: ConceptGraph, policy, reference, exemplars, title: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "graph.json").write_text(graph.to_json())
    result = evaluate_policy(policy, graph, reference) if policy else None
    if result is not None:
        (out / "policy.json").write_text(json.dumps(result.to_dict(), indent=2))
    path = write_report(out, graph, exemplars=exemplars, policy=result, title=title)
    print(f"gigaudit: report {path}", file=sys.stderr)
    if result is None:
        return EXIT_OK
    for check in result.failures:
        print(f"gigaudit: policy check failed: {check.name} = {check.value} (threshold {check.threshold}) "
              f"{check.detail}", file=sys.stderr)
    print(f"gigaudit: policy {result.policy}: {'passed' if result.passed else 'FAILED'} "
          f"({len(result.checks) - len(result.failures)}/{len(result.checks)} checks)", file=sys.stderr)
    return EXIT_OK if result.passed else EXIT_POLICY


def _architectures(args) -> int:
    with _client(args) as client:
        for arch in client.list_architectures():
            print(f"{arch.name}\t{arch.description}")
    return EXIT_OK


def _manage(args) -> int:
    resource, action = args.resource, args.action
    with _client(args) as client:
        if action == "list":
            if resource == "operations":
                items = client.list_operations(state=args.state, owner=args.owner)
            elif resource == "concept-sets":
                items = client.list_concept_sets(args.model, owner=args.owner)
            elif resource == "graphs":
                items = client.list_concept_graphs(args.model, owner=args.owner)
            else:
                items = getattr(client, f"list_{resource.replace('-', '_')}")()
            print(json.dumps([json_format.MessageToDict(i) for i in items], indent=2))
        elif action == "get":
            getter = {"models": client.get_model, "datasets": client.get_dataset,
                      "operations": client.get_operation, "concept-sets": client.get_concept_set}[resource]
            print(json.dumps(json_format.MessageToDict(getter(_full_name(resource, args.name))), indent=2))
        elif action == "wait":
            client.wait(args.name)
            print(json.dumps(json_format.MessageToDict(client.get_operation(args.name)), indent=2))
        elif action == "retry":
            op = client.retry_dead_letter(args.name)
            print(json.dumps(json_format.MessageToDict(op), indent=2))
            print(f"gigaudit: queued {op.name} again", file=sys.stderr)
        elif action == "delete" and resource != "operations":
            deleter = {"models": client.delete_model, "datasets": client.delete_dataset,
                       "concept-sets": client.delete_concept_set, "graphs": client.delete_concept_graph}[resource]
            deleter(args.name, force=args.force)
            print(f"gigaudit: deleted {_full_name(resource, args.name)}", file=sys.stderr)
        else:
            getattr(client, f"{action}_operation")(args.name)
            print(f"gigaudit: {action}{'ed' if action == 'cancel' else 'd'} {_full_name(resource, args.name)}",
                  file=sys.stderr)
    return EXIT_OK


def _full_name(resource: str, name: str) -> str:
    from gigaudit.client import _child, _named

    if resource == "concept-sets":
        return _child("conceptSets", name)
    if resource == "graphs":
        return _child("conceptGraphs", name)
    return _named(resource, name)


def _audit_options(args, model: str, dataset: str) -> dict:
    """Everything that decides an audit's result, for its derived id and request id."""
    return {"model": model, "dataset": dataset, "layers": list(args.layers), "n_concepts": args.n_concepts,
            "seed": args.seed, "steps": args.steps, "top_t": args.top_t}


def _model_differences(model, wanted: dict) -> list[str]:
    """'field: registered vs given' for each setting of `wanted` the registered model does not have."""
    found = []
    for field, value in wanted.items():
        have = getattr(model, field)
        have = list(have) if not isinstance(have, (str, int)) else have
        if field in ("mean", "std"):  # float32 on the wire
            same = len(have) == len(value) and all(abs(h - v) <= 1e-6 * max(1.0, abs(v)) for h, v in zip(have, value))
        else:
            same = have == value
        if not same:
            found.append(f"{field}: {_short(have)} registered vs {_short(value)} given")
    return found


def _short(value) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "…"
    if isinstance(value, list) and value and isinstance(value[0], float):
        return "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _stem(path: Path) -> str:
    """The lowercase [a-z0-9-] start of a resource id from a file or folder name, starting with a letter."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.name.split(".")[0].lower()).strip("-") or "x"
    if not stem[0].isalpha():
        stem = "r-" + stem
    return stem[:40].rstrip("-")


if __name__ == "__main__":
    sys.exit(main())

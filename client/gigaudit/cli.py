"""`gigaudit`: the command a pipeline calls to audit a model, plus resource management and reports.

Exit codes: 0 = audit done and policy passed, 1 = policy failed, 2 = usage, input or server error (the server's
status and details are printed to stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from google.protobuf import json_format

from gigaudit.client import AuditClient, _file_digest
from gigaudit.embedded import embedded_server
from gigaudit.errors import GigauditError
from gigaudit.policy import evaluate_policy, load_policy
from gigaudit.report import write_report
from gigaudit.results import ConceptGraph

EXIT_OK, EXIT_POLICY, EXIT_ERROR = 0, 1, 2
RESOURCES = ("models", "datasets", "operations")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["worker"]):  # forwarded untouched, flags included
        return subprocess.call([sys.executable, "-m", "gigaudit_server", *argv])
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except GigauditError as exc:
        print(f"gigaudit: server error: {exc.describe()}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"gigaudit: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


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
    audit.add_argument("--audit-id", default=None, help="id of the audit (default: derived from model and data)")
    audit.add_argument("--exemplars", type=int, default=6, help="exemplars per concept in the report, for the "
                       "concepts the server rendered (the most relevant of every layer); 0: none")
    audit.add_argument("--out", required=True, type=Path, help="report folder")
    audit.add_argument("--policy", type=Path, help="policy YAML")
    audit.add_argument("--reference", type=Path, help="graph.json of an earlier audit, for drift checks")
    audit.add_argument("--timeout", type=float, default=None, help="seconds to wait for the audit")
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

    for resource in RESOURCES:
        p = sub.add_parser(resource, help=f"list, get or delete {resource}"
                           + (" (also cancel, or wait for one with a progress bar)" if resource == "operations" else ""))
        p.add_argument("action", choices=["list", "get", "delete"] + (["cancel", "wait"] if resource == "operations" else []))
        p.add_argument("name", nargs="?", help=f"{resource[:-1]} id or resource name (get, delete)")
        _connection(p)
        p.set_defaults(run=_manage, resource=resource)

    sub.add_parser("serve", help="run the server (python -m gigaudit_server serve ...)")
    sub.add_parser("worker", help="run a worker (python -m gigaudit_server worker ...)")
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
        model_id = _resource_id(args.model)
        try:
            model = client.upload_model(args.model, model_id, architecture=args.arch, num_classes=args.num_classes,
                                        class_names=args.class_names, input_size=args.input_size, mean=args.mean,
                                        std=args.std, request_id=model_id, progress=progress)
        except GigauditError as exc:
            model = _existing(exc, lambda: client.get_model(model_id), args.model)
        archive_id = _resource_id(args.dataset)
        try:
            dataset = client.upload_dataset(args.dataset, archive_id, request_id=archive_id, progress=progress)
        except GigauditError as exc:
            dataset = _existing(exc, lambda: client.get_dataset(archive_id), None)
        audit_id = args.audit_id or _audit_id(model.name, dataset.name, args)
        concept_options = {"n_concepts": args.n_concepts, "seed": args.seed}
        graph_options = {"steps": args.steps, "top_t": args.top_t}
        op = client.audit(model.name, dataset.name, audit_id, layers=args.layers, concept_options=concept_options,
                          graph_options=graph_options, request_id=audit_id)
        print(f"gigaudit: audit {audit_id}: operation {op.name}", file=sys.stderr)
        result = client.wait(op.name, timeout=args.timeout, progress=progress)
        graph = client.get_graph(result.concept_graph.name)
        exemplars = client.graph_exemplars(graph, result.concept_set.name, args.exemplars) if args.exemplars else {}
    return _write_outputs(args.out, graph, policy, reference, exemplars, title=f"gigaudit: {model.name}")


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
    if args.action != "list" and not args.name:
        raise ValueError(f"`gigaudit {args.resource} {args.action}` needs a name")
    with _client(args) as client:
        noun = args.resource[:-1]
        if args.action == "list":
            items = getattr(client, f"list_{args.resource}")()
            print(json.dumps([json_format.MessageToDict(i) for i in items], indent=2))
        elif args.action == "wait":
            client.wait(args.name)
            print(json.dumps(json_format.MessageToDict(client.get_operation(args.name)), indent=2))
        elif args.action == "get":
            print(json.dumps(json_format.MessageToDict(getattr(client, f"get_{noun}")(args.name)), indent=2))
        else:
            getattr(client, f"{args.action}_{noun}")(args.name)
            print(f"{args.action}d {args.resource}/{args.name.split('/')[-1]}", file=sys.stderr)
    return EXIT_OK


def _resource_id(path: Path) -> str:
    """`<name>-<sha256[:12]>` of a file (or of a folder's listing and contents): same input, same id."""
    if path.is_file():
        sha = _file_digest(path)[1]
    elif path.is_dir():
        import hashlib

        digest = hashlib.sha256()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            digest.update(p.relative_to(path).as_posix().encode() + b"\0" + p.read_bytes())
        sha = digest.hexdigest()
    else:
        raise ValueError(f"no such file or folder: {path}")
    stem = re.sub(r"[^a-z0-9]+", "-", path.name.split(".")[0].lower()).strip("-") or "x"
    if not stem[0].isalpha():
        stem = "r-" + stem
    return f"{stem[:40].rstrip('-')}-{sha[:12]}"


def _audit_id(model: str, dataset: str, args) -> str:
    import hashlib

    key = json.dumps([model, dataset, args.layers, args.n_concepts, args.steps, args.top_t, args.seed])
    return "audit-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _existing(exc: GigauditError, get, weights: Path | None):
    """Reuse a resource that an earlier run registered under the same content-derived id."""
    import grpc

    if exc.code != grpc.StatusCode.ALREADY_EXISTS:
        raise exc
    resource = get()
    if weights is not None and resource.sha256 != _file_digest(weights)[1]:
        raise exc
    return resource


if __name__ == "__main__":
    sys.exit(main())

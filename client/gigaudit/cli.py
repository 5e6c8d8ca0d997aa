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
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

from gigaudit import explanations, preprocessing
from gigaudit.client import (
    DATASET_URI_SCHEMES,
    IMAGE_SUFFIXES,
    AuditClient,
    _archive,
    _file_digest,
    _model_file,
    operation_result,
)
from gigaudit.commands import completion, config, layers, resources, status
from gigaudit.commands.build_options import add_build_flags, architecture_options, build_settings, tracer_options
from gigaudit.commands.common import DefaultsFormatter, add_connection, add_output, client_for, connection, \
    output_format
from gigaudit.embedded import embedded_server
from gigaudit.errors import GigauditError
from gigaudit.policy import METRICS, evaluate_policy, expand_metrics, load_policy
from gigaudit.report import DEFAULT_MAX_BYTES, parse_size, write_report
from gigaudit.results import ConceptGraph
from gigaudit.suggest import capped
from gigaudit.v1 import resource_state_pb2

EXIT_OK, EXIT_POLICY, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


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


def _flag(parse):
    """An argparse type of a parser that raises ValueError: its message is the error shown."""
    def checked(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    checked.__name__ = parse.__name__
    return checked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gigaudit", description=__doc__, formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"gigaudit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = sub.add_parser("audit", help="audit a model on a dataset, write the report, gate on a policy",
                           formatter_class=DefaultsFormatter)
    audit.add_argument("--model", required=True, type=Path, help="weights: .safetensors; .onnx for --arch onnx; a "
                       "save_pretrained folder (or a tar/zip of it) for --arch huggingface")
    audit.add_argument("--arch", required=True, help="architecture name (see `gigaudit architectures`)")
    audit.add_argument("--num-classes", required=True, type=int)
    audit.add_argument("--dataset", required=True, type=_dataset_source,
                       help="folder (class/image.png, a saved Hugging Face dataset, WebDataset shards), tar/zip "
                            "archive or .parquet file (uploaded), or a URI (s3://, gs://, hf://, file://) on the "
                            "server's allow-list, read where it is (also CSV/JSONL manifests of image URIs)")
    audit.add_argument("--probes", type=Path, default=None, help="probe sets that name concepts: a folder (or "
                       "tar/zip) with one folder of images per name, e.g. watermark/, optional masks in "
                       "watermark/masks/ (same file names); images of the dataset's size and mode")
    audit.add_argument("--explain", nargs="+", type=Path, default=[], metavar="IMAGE",
                       help="after the audit, explain these images (the concepts that carried each prediction) in "
                       "the report")
    audit.add_argument("--layers", nargs="+", default=[], help="analysed layers (default: the model's default)")
    audit.add_argument("--class-names", nargs="+", default=[],
                       help="class names, index = class id (default: the dataset's class folders)")
    audit.add_argument("--input-size", type=_flag(preprocessing.parse_input_size), default=None, metavar="N|HxW",
                       help="input size in px: N (square) or HxW (default: the model's own configuration, else the "
                       "dataset's median image size)")
    audit.add_argument("--resize", choices=list(preprocessing.RESIZE_MODES), default=None,
                       help="shorter-side-crop: resize the shorter side, crop the centre (aspect ratio kept); exact: "
                       "resize to the input size (default: the model's configuration, else shorter-side-crop)")
    audit.add_argument("--crop-pct", type=_flag(preprocessing.parse_crop_pct), default=None,
                       help="fraction of the resized image the centre crop keeps, e.g. 0.875 (default: the model's "
                       "configuration, else 1)")
    audit.add_argument("--interpolation", choices=preprocessing.INTERPOLATIONS, default=None,
                       help="resampling filter (default: the model's configuration, else bilinear)")
    audit.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default: the model's "
                       "configuration, else ImageNet's, "
                       f"{' '.join(map(str, preprocessing.IMAGENET_MEAN))})")
    audit.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default: the model's "
                       "configuration, else ImageNet's, "
                       f"{' '.join(map(str, preprocessing.IMAGENET_STD))})")
    add_build_flags(audit)
    audit.add_argument("--n-concepts", type=int, default=0, help="concepts per layer (default: server default, gig's)")
    audit.add_argument("--steps", type=int, default=0, help="quadrature steps (default: server default, gig's)")
    audit.add_argument("--top-t", type=int, default=0,
                       help="targets per image and layer (default: server default, gig's)")
    audit.add_argument("--seed", type=int, default=0, help="random seed (default: server default, gig's)")
    audit.add_argument("--evaluation-images", type=int, default=0, help="images the evaluation uses (default: the "
                       "policy's evaluation.images, else gig.evaluate's, 16)")
    audit.add_argument("--metrics", nargs="+", default=[], metavar="METRIC", help="evaluation metrics: "
                       f"{', '.join(METRICS)}, or default (gig.evaluate's set); e.g. `--metrics default stability "
                       "sanity` (default: the policy's evaluation.metrics, else gig.evaluate's set)")
    audit.add_argument("--audit-id", default=None, help="id of the audit (default: derived from model, data and "
                       "options)")
    audit.add_argument("--exemplars", type=int, default=6, help="exemplars per concept in the report, for the "
                       "concepts the server rendered (the most relevant of every layer); 0: none")
    audit.add_argument("--out", required=True, type=Path, help="report folder")
    audit.add_argument("--report-size", type=parse_size, default=DEFAULT_MAX_BYTES, metavar="SIZE",
                       help="size budget of index.html, e.g. 5MB (default), 20MB; 0: none. Over it, exemplar "
                       "images are degraded, then left out, and the report says what it left out")
    audit.add_argument("--policy", type=Path, help="policy YAML")
    audit.add_argument("--reference", type=Path, help="graph.json of an earlier audit, for drift checks")
    audit.add_argument("--timeout", type=float, default=None,
                       help="seconds to wait for each operation (default: no limit)")
    audit.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_connection(audit, embedded=True)
    audit.set_defaults(run=_audit)

    report = sub.add_parser("report", help="build the HTML report of a saved graph.json",
                            formatter_class=DefaultsFormatter)
    report.add_argument("graph", type=Path)
    report.add_argument("--out", required=True, type=Path)
    report.add_argument("--report-size", type=parse_size, default=DEFAULT_MAX_BYTES, metavar="SIZE",
                       help="size budget of index.html, e.g. 5MB (default), 20MB; 0: none. Over it, exemplar "
                       "images are degraded, then left out, and the report says what it left out")
    report.add_argument("--policy", type=Path)
    report.add_argument("--reference", type=Path)
    report.set_defaults(run=_report)

    explain = sub.add_parser("explain", help="why the model classified one image as it did: the concepts that "
                             "carried its class at every analysed layer, with iERF overlays",
                             formatter_class=DefaultsFormatter)
    explain.add_argument("image", type=Path, help="the image (PNG, JPEG, BMP or WebP; at most 16 MiB)")
    explain.add_argument("--graph", required=True, help="concept graph: models/MODEL/conceptGraphs/ID or MODEL/ID")
    explain.add_argument("--target", default=None, help="class to explain, index or name (default: the predicted "
                         "class)")
    explain.add_argument("--top-k", type=int, default=5, help="concepts per layer, 1..64")
    explain.add_argument("--out", type=Path, help="folder for the iERF overlays (WebP) and explanation.json")
    explain.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: no limit)")
    add_output(explain)
    add_connection(explain)
    explain.set_defaults(run=_explain)

    layers.add_parsers(sub)
    resources.add_parsers(sub)
    status.add_parsers(sub)
    config.add_parsers(sub)
    completion.add_parsers(sub)
    sub.add_parser("serve", help="run the server (`gigaudit serve --help` for its flags and defaults)")
    sub.add_parser("worker", help="run a worker (`gigaudit worker --help` for its flags and defaults)")
    return parser


def _explain(args) -> int:
    """`gigaudit explain`: print the explanation (table or JSON); with --out, write its overlays and JSON too."""
    if not 1 <= args.top_k <= 64:
        raise ValueError(f"--top-k must be between 1 and 64, got {args.top_k}")
    target = int(args.target) if args.target is not None and args.target.isdigit() else args.target
    with client_for(args) as client:
        explanation = client.explain_image(args.graph, args.image, target=target, top_k=args.top_k,
                                           timeout=args.timeout)
    if args.out:
        explanations.write_overlays(explanation, args.out)
        print(f"gigaudit: overlays and explanation.json in {args.out}", file=sys.stderr)
    fmt, ready = output_format(args), explanations.to_json_ready(explanation, files=bool(args.out))
    if fmt == "table":
        print(explanations.table(explanation))
    elif fmt == "yaml":
        import yaml

        print(yaml.safe_dump(ready, sort_keys=False, allow_unicode=True).rstrip())
    else:
        print(json.dumps(ready, indent=2))
    return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gigaudit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _audit(args) -> int:
    policy = load_policy(args.policy) if args.policy else None
    reference = ConceptGraph.load(args.reference) if args.reference else None
    _evaluation_scope(args, policy)
    if args.timeout is not None:
        args.deadline = time.monotonic() + args.timeout
    if connection(args).server:
        return _run_audit(args, client_for(args), policy, reference)
    with embedded_server() as target:
        print(f"gigaudit: started an embedded server at {target}", file=sys.stderr)
        return _run_audit(args, client_for(args, target), policy, reference)


def _evaluation_scope(args, policy) -> None:
    """--evaluation-images and --metrics, else the policy's evaluation section, else the server's defaults."""
    scope = policy.evaluation if policy is not None and policy.evaluation is not None else None
    args.metrics = expand_metrics(args.metrics) or (list(scope.metrics or []) if scope else [])
    args.evaluation_images = args.evaluation_images or (scope.images or 0 if scope else 0)
    if args.evaluation_images < 0:
        raise ValueError(f"--evaluation-images must be positive, got {args.evaluation_images}")


def _left(args) -> float | None:
    """Seconds left of --timeout (None: no limit); DEADLINE_EXCEEDED once it has passed."""
    deadline = getattr(args, "deadline", None)
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise GigauditError(grpc.StatusCode.DEADLINE_EXCEEDED, f"--timeout {args.timeout:g} s passed")
    return left


def _run_audit(args, client: AuditClient, policy, reference) -> int:
    progress = not args.no_progress
    with client:
        layers.check_architecture(client, args.arch)  # cheap checks first: nothing is uploaded when they fail
        _check_weights(args)
        dataset = _register_dataset(args, client, progress)
        probes = _register_dataset(args, client, progress, _checked_probes(args.probes)) if args.probes else None
        _choose_preprocessing(args, dataset)
        model = _register_model(args, client, progress)
        options = _audit_options(args, model.name, dataset.name, probes.name if probes else "")
        digest = _digest(options)
        audit_id = args.audit_id or f"audit-{digest[:16]}"
        concept_options = {"n_concepts": args.n_concepts, "seed": args.seed}
        graph_options = {"steps": args.steps, "top_t": args.top_t}
        named = {"probes": probes.name} if probes else {}  # AuditClient.audit(probes=...): see docs/client.md
        try:
            op = client.audit(model.name, dataset.name, audit_id, layers=args.layers,
                              concept_options=concept_options, graph_options=graph_options,
                              metrics=args.metrics, evaluation_images=args.evaluation_images,
                              request_id=f"cli-audit-{audit_id}-{digest[:32]}", **named)
        except GigauditError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            if args.audit_id:
                raise ValueError(f"audit id {audit_id!r} is taken on {model.name} by another audit (other options, "
                                 "or one that was not started by this command); choose another --audit-id, or "
                                 "leave it out to derive one from the options") from None
            op = _earlier_audit(client, model.name, audit_id)  # same derived id: same model, data and options
        print(f"gigaudit: audit {audit_id}: operation {op.name}", file=sys.stderr)
        result = client.wait(op.name, timeout=_left(args), progress=progress)
        graph = client.get_graph(result.concept_graph.name)
        if probes:
            _print_naming(graph)
        exemplars = client.graph_exemplars(graph, result.concept_set.name, args.exemplars) if args.exemplars else {}
        explained = [client.explain_image(result.concept_graph.name, image, timeout=_left(args))
                     for image in getattr(args, "explain", [])]
    return _write_outputs(args.out, graph, policy, reference, exemplars, title=f"gigaudit: {model.name}",
                          max_bytes=args.report_size, explanations=explained)


def _register_model(args, client: AuditClient, progress: bool):
    """Upload the weights under an id covering them and every setting that changes an audit; an existing model of
    that id is reused only when it has exactly those settings."""
    model_id, request_id, wanted = _model_registration(args)
    transform = _transform(args)
    try:
        model = client.upload_model(args.model, model_id, architecture=args.arch, num_classes=args.num_classes,
                                    class_names=args.class_names, input_size=args.input_size, mean=args.mean,
                                    std=args.std, preprocessing=transform.request(),
                                    architecture_options=architecture_options(args), tracer=tracer_options(args),
                                    request_id=request_id, progress=progress, timeout=_left(args))
    except GigauditError as exc:
        if exc.code != grpc.StatusCode.ALREADY_EXISTS:
            raise
        model = client.get_model(model_id)  # registered by another caller, or before its request id was forgotten
        if model.state == resource_state_pb2.RESOURCE_STATE_CREATING and model.operation:  # another run's upload
            client.wait(model.operation, timeout=_left(args), progress=progress)
            model = client.get_model(model_id)
    differences = _model_differences(model, wanted)  # also after a replayed request id: the id may be reused
    if differences:
        raise ValueError(f"models/{model_id} is registered with other settings ({'; '.join(differences)}); "
                         "delete it (`gigaudit models delete`) or rename the weights file")
    resolved = preprocessing.resolved(model)
    if resolved and not (getattr(args, "transform_printed", False)
                         and preprocessing.same(transform.predicted(), resolved)):
        print(f"gigaudit: transform: {preprocessing.describe_model(model)}", file=sys.stderr)
    return model


def _weights_digest(path: Path) -> str:
    """sha256 of the file the upload sends: the weights file, or a model folder packed as `upload_model` packs it."""
    with _model_file(path) as sent:
        return _file_digest(sent)[1]


def _model_registration(args) -> tuple[str, str, dict]:
    """(model id, request id, settings): both ids cover the weights and every setting that changes an audit."""
    wanted = {"sha256": _weights_digest(args.model), "architecture": args.arch, "num_classes": args.num_classes,
              "class_names": list(args.class_names), "input_size": args.input_size,
              "mean": [float(v) for v in args.mean], "std": [float(v) for v in args.std]}
    requested = _transform(args).requested()  # --input-size, --resize, --crop-pct, --interpolation, --mean, --std
    if requested:
        wanted["preprocessing"] = requested
    wanted.update(build_settings(args))  # --arch-option, --leaf-module, --autowrap-function, --hooked-layer
    digest = _digest(wanted)
    return f"{_stem(args.model)}-{digest[:12]}", f"cli-model-{digest[:32]}", wanted


def _transform(args) -> preprocessing.Transform:
    """The transform _choose_preprocessing settled; without it (a caller's own settings), the one the settings
    ask for."""
    transform = getattr(args, "transform", None)
    return transform or preprocessing.choose(
        args.input_size, args.model, None, args.mean, args.std, resize=getattr(args, "resize", None),
        crop_pct=getattr(args, "crop_pct", None), interpolation=getattr(args, "interpolation", None))


def _choose_preprocessing(args, dataset) -> None:
    """Settle input size, normalisation and class names from the flags, the model and the dataset, and say which
    (before anything is uploaded or started)."""
    transform = preprocessing.choose(args.input_size, args.model, dataset, args.mean, args.std,
                                     resize=getattr(args, "resize", None), crop_pct=getattr(args, "crop_pct", None),
                                     interpolation=getattr(args, "interpolation", None))
    args.transform, args.input_size, args.mean, args.std = transform, transform.input_size, transform.mean, \
        transform.std
    # a model with its own configuration: the server resolves the transform; said once registered
    args.transform_printed = not preprocessing.has_own_config(args.arch)
    if args.transform_printed:
        print(f"gigaudit: transform: {transform.describe()}", file=sys.stderr)
    warning = preprocessing.upsampling_warning(transform, dataset)
    if warning:
        print(f"gigaudit: warning: {warning}", file=sys.stderr)
    if not args.class_names and dataset.class_names:
        if len(dataset.class_names) == args.num_classes:
            args.class_names = list(dataset.class_names)
            print(f"gigaudit: class names from the dataset's folders: {capped(args.class_names)}", file=sys.stderr)
        else:
            print(f"gigaudit: warning: the dataset has {len(dataset.class_names)} class folders and the model "
                  f"{args.num_classes} classes: classes are numbered (--class-names to name them)", file=sys.stderr)


def _check_weights(args) -> None:
    """ValueError when the weights' header fits another registered architecture (or class count) exactly."""
    from gigaudit.weights import check_fit

    problem = check_fit(args.model, args.arch, args.num_classes)
    if problem:
        raise ValueError(problem)


def _dataset_source(value: str) -> Path | str:
    """A --dataset value: a URI (kept as it is) or a local path."""
    return value if value.startswith(DATASET_URI_SCHEMES) else Path(value)


def _register_dataset(args, client: AuditClient, progress: bool, path: Path | None = None):
    """Upload the dataset (`path`, default --dataset; a folder packed into a tar once) under an id from its
    content; an existing dataset of that id is reused only when its content is the same. A URI is registered
    (read in place by the workers) under an id from the URI; an existing dataset of that id is reused when it
    has the same URI."""
    path = path or args.dataset
    if isinstance(path, str):
        return _register_dataset_uri(path, client, progress)
    with _archive(path) as (archive, _):
        sha = _file_digest(archive)[1]
        dataset_id = f"{_stem(path)}-{sha[:12]}"
        try:
            dataset = client.upload_dataset(archive, dataset_id, display_name=path.name,
                                            request_id=f"cli-dataset-{sha[:32]}", progress=progress)
        except GigauditError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            dataset = client.get_dataset(dataset_id)
    if dataset.sha256 != sha:  # also after a replayed request id: the id may have been deleted and reused
        raise ValueError(f"datasets/{dataset_id} holds other content (sha256 {dataset.sha256[:12]}…, this one "
                         f"{sha[:12]}…); delete it (`gigaudit datasets delete`) or rename the dataset")
    return dataset


def _register_dataset_uri(uri: str, client: AuditClient, progress: bool):
    digest = hashlib.sha256(uri.encode()).hexdigest()
    dataset_id = f"{_stem(Path(uri.rstrip('/').rsplit('/', 1)[-1]))}-{digest[:12]}"
    try:
        dataset = client.register_dataset(uri, dataset_id, display_name=uri.rstrip("/").rsplit("/", 1)[-1],
                                          request_id=f"cli-dataset-uri-{digest[:32]}", progress=progress)
    except GigauditError as exc:
        if exc.code != grpc.StatusCode.ALREADY_EXISTS:
            raise
        dataset = client.get_dataset(dataset_id)
        if dataset.state == resource_state_pb2.RESOURCE_STATE_CREATING and dataset.operation:
            dataset = client.wait(dataset.operation, progress=progress)
    if dataset.uri != uri:
        raise ValueError(f"datasets/{dataset_id} was registered from {dataset.uri!r}, not {uri!r}; delete it "
                         "(`gigaudit datasets delete`)")
    return dataset


def _checked_probes(path: Path) -> Path:
    """`path` when it is a probe archive, or a folder of probe folders that each hold images; ValueError naming an
    empty folder or loose images (the server checks sizes, modes and masks)."""
    if not path.is_dir():
        return path  # an archive: the upload and the audit check it
    images = {p.suffix.lower() for p in path.iterdir() if p.is_file()} & IMAGE_SUFFIXES
    if images:
        raise ValueError(f"--probes {path}: images lie loose in the folder; put them in one folder per named concept "
                         "(e.g. watermark/a.png)")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"--probes {path}: no probe folders (one folder of images per named concept)")
    for folder in folders:
        if not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            raise ValueError(f"--probes {path}: probe folder {folder.name!r} holds no images")
    return path


def _print_naming(graph: ConceptGraph) -> None:
    """Which concepts the probes named (with the held-out check), and which probes named nothing."""
    naming = graph.evidence.get("naming") or {}
    for probe, found in (naming.get("matches") or {}).items():
        for match in found:
            held = match.get("heldout_score")
            print(f"gigaudit: named {match['node']} {probe!r} (score {match['score']:.2f}"
                  + (f", held-out {held:.2f})" if held is not None else ")"), file=sys.stderr)
    for probe in naming.get("unmatched") or []:
        best = ((naming.get("probes") or {}).get(probe) or {}).get("best") or {}
        close = f" (best {best['node']}, score {best['score']:.2f})" if best.get("node") else ""
        print(f"gigaudit: warning: probe {probe!r} matched no concept{close}", file=sys.stderr)


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
                          title=f"gigaudit: {args.graph}", max_bytes=args.report_size)


def _write_outputs(out: Path, graph: ConceptGraph, policy, reference, exemplars, title: str,
                   max_bytes: int = DEFAULT_MAX_BYTES, explanations=()) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "graph.json").write_text(graph.to_json())
    result = evaluate_policy(policy, graph, reference) if policy else None
    if result is not None:
        (out / "policy.json").write_text(json.dumps(result.to_dict(), indent=2))
    path = write_report(out, graph, exemplars=exemplars, policy=result, title=title, max_bytes=max_bytes,
                        explanations=list(explanations))
    print(f"gigaudit: report {path}", file=sys.stderr)
    if result is None:
        return EXIT_OK
    for check in result.failures:
        print(f"gigaudit: policy check failed: {check.name} = {check.value} (threshold {check.threshold}) "
              f"{check.detail}", file=sys.stderr)
    print(f"gigaudit: policy {result.policy}: {'passed' if result.passed else 'FAILED'} "
          f"({len(result.checks) - len(result.failures)}/{len(result.checks)} checks)", file=sys.stderr)
    return EXIT_OK if result.passed else EXIT_POLICY


def _audit_options(args, model: str, dataset: str, probes: str = "") -> dict:
    """Everything that decides an audit's result, for its derived id and request id."""
    options = {"model": model, "dataset": dataset, "layers": list(args.layers), "n_concepts": args.n_concepts,
               "seed": args.seed, "steps": args.steps, "top_t": args.top_t}
    if probes:  # only when set: ids derived before probes existed stay the same
        options["probes"] = probes
    if getattr(args, "metrics", None):  # only when set: ids derived before these options existed stay the same
        options["metrics"] = list(args.metrics)
    if getattr(args, "evaluation_images", 0):
        options["evaluation_images"] = args.evaluation_images
    return options


def _model_differences(model, wanted: dict) -> list[str]:
    """'field: registered vs given' for each setting of `wanted` the registered model does not have."""
    found = []
    for field, value in wanted.items():
        if field == "preprocessing":  # what the flags set, against the resolved transform
            found += preprocessing.differences(preprocessing.resolved(model) or {}, value)
            continue
        if field in ("architecture_options", "tracer"):
            have = json_format.MessageToDict(getattr(model, field), preserving_proto_field_name=True)
            if field == "tracer":
                value = {k: v for k, v in value.items() if v}
            if have != value:
                found.append(f"{field}: {have} registered vs {value} given")
            continue
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

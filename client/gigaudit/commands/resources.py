"""`gigaudit models|datasets|operations|concept-sets|graphs|dead-letters ACTION`: list, get, delete (also forced),
cancel, wait, retry, and `operations describe|logs` (stage history, worker, attempts, errors)."""
from __future__ import annotations

import sys
import time

import grpc

from gigaudit.client import AuditClient, _child, _named, operation_metadata, operation_result
from gigaudit.commands.common import DefaultsFormatter, add_connection, add_output, client_for, output_format
from gigaudit.errors import GigauditError
from gigaudit.output import plain, render
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb

EXIT_OK = 0
SETTLE_S = 30.0  # how long a delete waits for cancelled operations to stop (they stop at their next batch)
MANAGED = {"models": ("list", "get", "layers", "delete"), "datasets": ("list", "get", "delete"),
           "operations": ("list", "get", "describe", "logs", "delete", "cancel", "wait"),
           "concept-sets": ("list", "get", "delete"), "graphs": ("list", "delete"), "dead-letters": ("list", "retry")}
RESOURCE_HELP = {"models": "list, get or delete models, or list a model's layers",
                 "datasets": "list, get or delete datasets",
                 "operations": "list, get, describe, delete or cancel operations, show their stage history, or "
                               "wait for one with a progress bar",
                 "concept-sets": "list a model's concept sets, get or delete one",
                 "graphs": "list a model's concept graphs or delete one",
                 "dead-letters": "jobs that failed for good: list them or retry one (admin role)"}
ACTION_HELP = {"list": "list them", "get": "show one", "delete": "delete one", "cancel": "cancel one",
               "wait": "wait for one to finish", "retry": "queue a dead-lettered job again",
               "describe": "one operation in full: state, stage, worker, attempts, error and stage history",
               "logs": "an operation's stage history: when each stage started, on which worker, which attempt, "
                       "and the errors of failed attempts",
               "layers": "a registered model's layers: analysable or not (and why), defaults marked"}
NAME_HELP = {"models": "model id or models/ID", "datasets": "dataset id or datasets/ID",
             "operations": "operation id or operations/ID",
             "concept-sets": "models/MODEL/conceptSets/ID or MODEL/ID",
             "graphs": "models/MODEL/conceptGraphs/ID or MODEL/ID"}
FORCE_HELP = {"models": "also delete its concept sets and graphs and cancel its operations",
              "datasets": "also delete the concept sets and graphs made from it and cancel its operations",
              "concept-sets": "also delete the graphs built from it and cancel its operations",
              "graphs": "cancel its operation when it still runs",
              "operations": "cancel it first when it still runs, wait for it to stop, then delete it"}
OPERATION_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


def add_parsers(sub) -> None:
    for resource, actions in MANAGED.items():
        group = sub.add_parser(resource, help=RESOURCE_HELP[resource], description=RESOURCE_HELP[resource],
                               formatter_class=DefaultsFormatter)
        verbs = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action in actions:
            verb = verbs.add_parser(action, help=ACTION_HELP[action], description=ACTION_HELP[action],
                                    formatter_class=DefaultsFormatter)
            if action == "list" and resource in ("concept-sets", "graphs"):
                verb.add_argument("model", help="model id or models/ID")
            elif action == "retry":
                verb.add_argument("name", metavar="OPERATION", help="operation id or operations/ID")
            elif action != "list":
                verb.add_argument("name", help=NAME_HELP[resource])
            if action == "delete":
                verb.add_argument("--force", action="store_true", help=FORCE_HELP[resource])
            if action == "list" and resource in ("operations", "concept-sets", "graphs"):
                verb.add_argument("--owner", help="only those of this owner (a token name; admins)")
            if action == "list" and resource == "operations":
                verb.add_argument("--state", choices=OPERATION_STATES, type=str.upper, help="only those in this state")
            if action in ("list", "get", "wait", "retry", "describe", "layers"):
                add_output(verb)
            if action == "logs":
                verb.add_argument("-f", "--follow", action="store_true", help="keep printing until it is done")
            if action == "wait":
                verb.add_argument("--timeout", type=float, help="seconds to wait (default: no limit)")
            add_connection(verb)
            verb.set_defaults(run=run, resource=resource)


def run(args) -> int:
    resource, action = args.resource, args.action
    if getattr(args, "name", None) is not None and action != "retry":
        full_name(resource, args.name)  # a malformed name is refused before connecting
    with client_for(args) as client:
        if action == "list":
            render(_list(client, args), output_format(args))
        elif action == "get":
            getter = {"models": client.get_model, "datasets": client.get_dataset,
                      "operations": client.get_operation, "concept-sets": client.get_concept_set}[resource]
            render(getter(full_name(resource, args.name)), output_format(args))
        elif action == "layers":
            from gigaudit.commands.layers import print_layers

            print_layers(client.list_layers(args.name), output_format(args), f"{full_name(resource, args.name)}")
        elif action == "describe":
            op = client.get_operation(args.name)
            if output_format(args) == "table":
                print(describe(op))
            else:
                render(op, output_format(args))
        elif action == "logs":
            _logs(client, args.name, args.follow)
        elif action == "wait":
            try:
                client.wait(args.name, timeout=args.timeout, progress=sys.stderr.isatty())
            finally:
                render(client.get_operation(args.name), output_format(args))
        elif action == "retry":
            op = client.retry_dead_letter(args.name)
            render(op, output_format(args))
            print(f"gigaudit: queued {op.name} again", file=sys.stderr)
        elif action == "cancel":
            client.cancel_operation(args.name)
            print(f"gigaudit: cancelled {full_name(resource, args.name)} (it stops at its next batch)",
                  file=sys.stderr)
        elif action == "delete":
            delete(client, resource, args.name, force=args.force)
            print(f"gigaudit: deleted {full_name(resource, args.name)}", file=sys.stderr)
    return EXIT_OK


def _list(client: AuditClient, args) -> list:
    resource = args.resource
    if resource == "operations":
        return client.list_operations(state=args.state, owner=args.owner)
    if resource == "concept-sets":
        return client.list_concept_sets(args.model, owner=args.owner)
    if resource == "graphs":
        return client.list_concept_graphs(args.model, owner=args.owner)
    return getattr(client, f"list_{resource.replace('-', '_')}")()


def delete(client: AuditClient, resource: str, name: str, *, force: bool, settle_s: float = SETTLE_S) -> None:
    """Delete a resource. An operation: with `force`, cancelled first when it still runs; one cancelled already
    (by `force` or an earlier `cancel`) is waited for, at most `settle_s`, until it stops at its next batch. Any
    other resource refused only because cancelled operations have not stopped yet is deleted once they have."""
    if resource == "operations":
        op = client.get_operation(name)
        meta = operation_metadata(op)
        if not op.done and force and not meta.cancel_requested:
            client.cancel_operation(name)
            meta.cancel_requested = True
        if not op.done and meta.cancel_requested:
            _settle(client, [op.name], settle_s)
        client.delete_operation(name)
        return
    deleter = {"models": client.delete_model, "datasets": client.delete_dataset,
               "concept-sets": client.delete_concept_set, "graphs": client.delete_concept_graph}[resource]
    try:
        deleter(name, force=force)
    except GigauditError as exc:
        if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        stopping = [op.name for op in client.list_operations(state="RUNNING") + client.list_operations(state="QUEUED")
                    if operation_metadata(op).cancel_requested]
        if not stopping:
            raise
        _settle(client, stopping, settle_s)
        deleter(name, force=force)


def _settle(client: AuditClient, names: list[str], settle_s: float) -> None:
    """Wait until the cancelled operations `names` are done (they stop at their next batch), at most `settle_s`."""
    deadline = time.monotonic() + settle_s
    for name in names:
        left = deadline - time.monotonic()
        try:
            client.wait(name, timeout=max(left, 0.1), progress=False)
        except GigauditError as exc:
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise GigauditError(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"{name} was cancelled but has not stopped within {settle_s:g} s (a batch "
                                    "still running); try again shortly") from None
            # a cancelled (or failed) end is what we waited for


def describe(op) -> str:
    """An operation for people: one `key: value` line each, then its stage history."""
    meta = operation_metadata(op)
    row = plain(meta)
    lines = [f"Name:        {op.name}", f"Kind:        {meta.kind}", f"State:       {row.get('state', '')}"
             + (" (cancel requested)" if meta.cancel_requested and not op.done else "")]
    if meta.state == metadata_pb.OPERATION_STATE_QUEUED:
        lines.append(f"Queue:       {meta.queue_position} ahead")
    if meta.stage:
        lines.append(f"Stage:       {meta.stage}" + (f" ({meta.done}/{meta.total})" if meta.total else ""))
    for label, value in (("Target", meta.target), ("Owner", meta.owner), ("Worker", meta.worker)):
        if value:
            lines.append(f"{label + ':':<13}{value}")
    lines.append(f"Attempt:     {meta.attempt or 0}" + (f" ({meta.failures} failed deliveries)" if meta.failures else ""))
    for label, key in (("Created", "create_time"), ("Updated", "update_time")):
        if row.get(key):
            lines.append(f"{label + ':':<13}{row[key]}")
    if op.done:
        try:
            operation_result(op)
            lines.append("Result:      succeeded")
        except GigauditError as exc:
            lines.append(f"Error:       {exc.one_line()}")
    lines.append("History:" if meta.history else "History:     (none recorded)")
    lines += ["  " + _event(event) for event in meta.history]
    return "\n".join(lines)


def _event(event) -> str:
    when = event.start_time.ToJsonString() if event.start_time.seconds else "-"
    text = f"{when}  {event.stage or '-':<14} worker={event.worker or '-'} attempt={event.attempt}"
    return text + (f"  error: {event.error}" if event.error else "")


def _logs(client: AuditClient, name: str, follow: bool) -> None:
    printed = 0
    ops = client.watch(name) if follow else [client.get_operation(name)]
    for op in ops:
        history = operation_metadata(op).history
        for event in history[printed:]:
            print(_event(event), flush=True)
        printed = max(printed, len(history))
        if op.done:
            try:
                operation_result(op)
                print(f"{op.name}: succeeded")
            except GigauditError as exc:
                print(f"{op.name}: {exc.one_line()}")


def full_name(resource: str, name: str) -> str:
    if resource == "concept-sets":
        return _child("conceptSets", name)
    if resource == "graphs":
        return _child("conceptGraphs", name)
    return _named(resource, name)

"""`gigaudit config set-context|use-context|get-contexts|current-context|delete-context`, like kubectl's.

Contexts live in a YAML file under the user's config directory (see gigaudit.contexts; `$GIGAUDIT_CONFIG` moves
it). Connection flags and GIGAUDIT_* variables override the context."""
from __future__ import annotations

import sys
from pathlib import Path

from gigaudit import contexts
from gigaudit.commands.common import DefaultsFormatter, add_output, output_format

EXIT_OK = 0


def add_parsers(sub) -> None:
    config = sub.add_parser("config", help="server contexts (server, token, TLS), like kubectl config",
                            description=__doc__, formatter_class=DefaultsFormatter)
    verbs = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_ = verbs.add_parser("set-context", help="create or update a context (the first one becomes current)",
                            formatter_class=DefaultsFormatter)
    set_.add_argument("name")
    set_.add_argument("--server", help="host:port")
    set_.add_argument("--token", help="bearer token (the file is written with mode 0600)")
    set_.add_argument("--tls", action="store_true", default=None, help="TLS with the system's roots")
    set_.add_argument("--tls-ca", type=Path, help="CA bundle (PEM): TLS with it")
    set_.add_argument("--use", action="store_true", help="also make it the current context")
    set_.set_defaults(run=_set)
    use = verbs.add_parser("use-context", help="make a context the current one")
    use.add_argument("name")
    use.set_defaults(run=_use)
    get = verbs.add_parser("get-contexts", help="list the contexts (* = current); tokens are not shown",
                           formatter_class=DefaultsFormatter)
    add_output(get)
    get.set_defaults(run=_get)
    current = verbs.add_parser("current-context", help="print the current context's name")
    current.set_defaults(run=_current)
    delete = verbs.add_parser("delete-context", help="remove a context")
    delete.add_argument("name")
    delete.set_defaults(run=_delete)


def _set(args) -> int:
    tls_ca = args.tls_ca.expanduser().resolve() if args.tls_ca else None
    path = contexts.set_context(args.name, server=args.server, token=args.token, tls=args.tls, tls_ca=tls_ca)
    if args.use:
        contexts.use_context(args.name)
    print(f"gigaudit: context {args.name} saved in {path}", file=sys.stderr)
    return EXIT_OK


def _use(args) -> int:
    contexts.use_context(args.name)
    print(f"gigaudit: switched to context {args.name}", file=sys.stderr)
    return EXIT_OK


def _rows() -> list[dict]:
    data = contexts.load()
    return [{"current": name == data["current-context"], "name": name, "server": ctx.get("server", ""),
             "tls": "ca " + ctx["tls-ca"] if ctx.get("tls-ca") else bool(ctx.get("tls")),
             "token": "set" if ctx.get("token") else ""}
            for name, ctx in sorted(data["contexts"].items())]


def _get(args) -> int:
    rows = _rows()
    fmt = output_format(args)
    if fmt == "table":
        from gigaudit.output import table

        columns = [("CURRENT", lambda r: "*" if r["current"] else ""), ("NAME", lambda r: r["name"]),
                   ("SERVER", lambda r: r["server"]), ("TLS", lambda r: r["tls"]), ("TOKEN", lambda r: r["token"])]
        print(table(rows, columns))
    elif fmt == "json":
        import json

        print(json.dumps(rows, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(rows, sort_keys=False).rstrip())
    return EXIT_OK


def _current(args) -> int:
    name = contexts.load()["current-context"]
    if not name:
        raise ValueError("no current context (`gigaudit config set-context NAME --server HOST:PORT`)")
    print(name)
    return EXIT_OK


def _delete(args) -> int:
    contexts.delete_context(args.name)
    print(f"gigaudit: deleted context {args.name}", file=sys.stderr)
    return EXIT_OK

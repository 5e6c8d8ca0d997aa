"""What every command shares: connection flags (flag, environment, context), `-o`, help that shows defaults."""
from __future__ import annotations

import argparse
from pathlib import Path

from gigaudit import contexts
from gigaudit.client import AuditClient
from gigaudit.output import FORMATS, default_format

CONNECT_TIMEOUT_S = 5.0


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Help lines end with "(default: X)" for every option that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if "%(default)" in help_ or "default:" in help_ or action.default in (None, False, [], argparse.SUPPRESS):
            return help_
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            value = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
            help_ += f" (default: {value})"
        return help_


def add_connection(parser: argparse.ArgumentParser, embedded: bool = False) -> None:
    group = parser.add_argument_group("connection (flag, else environment, else the current context)")
    group.add_argument("--server", help="host:port of the server; env GIGAUDIT_SERVER"
                       + ("; none anywhere: start an embedded server" if embedded else ""))
    group.add_argument("--token", help="bearer token; env GIGAUDIT_TOKEN")
    group.add_argument("--tls-ca", type=Path, help="CA bundle (PEM): use TLS with it; env GIGAUDIT_TLS_CA")
    group.add_argument("--tls", action="store_true", default=None,
                       help="use TLS with the system's roots; env GIGAUDIT_TLS=1")
    group.add_argument("--context", help="a context of `gigaudit config get-contexts`; env GIGAUDIT_CONTEXT "
                       "(default: the current context)")
    group.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, metavar="S",
                       help="seconds to wait for the server to answer before giving up")


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=FORMATS, default=None,
                        help="output format (default: table on a terminal, else json)")


def output_format(args) -> str:
    return args.output or default_format()


def connection(args) -> contexts.Connection:
    return contexts.resolve(args.server, args.token, args.tls_ca, args.tls, args.context)


def client_for(args, target: str | None = None) -> AuditClient:
    """A client of the resolved server (or `target`), once it answers within --connect-timeout."""
    conn = connection(args)
    if target is None and not conn.server:
        raise ValueError("no server: pass --server HOST:PORT, set GIGAUDIT_SERVER, or save one with "
                         "`gigaudit config set-context NAME --server HOST:PORT`")
    client = AuditClient(target or conn.server, token=conn.token, tls=None if target else conn.tls)
    try:
        client.wait_ready(args.connect_timeout, fail_fast=True)
    except BaseException:
        client.close()
        raise
    return client

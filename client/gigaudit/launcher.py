"""The `gigaudit` console script: runs the CLI, or says which extra to install when the client or server is missing.

`pip install gigaudit[core]` gives `gig` and the report without grpc; the CLI needs `gigaudit[client]`, `serve`
and `worker` need `gigaudit[server]`.
"""
from __future__ import annotations

import importlib.util
import sys

CLIENT_MODULES = frozenset({"grpc", "grpc_status", "google", "platformdirs"})  # top-level names of `client`
SERVER_MODULES = ("torch", "redis", "grpc_health", "pydantic_settings")  # a few of `server`'s, checked by name
SERVER_COMMANDS = (["serve"], ["worker"])
EXIT_ERROR = 2


def missing_client_module(exc: ImportError) -> str | None:
    """The module of the `client` extra whose import failed with `exc`, or None when it is another module."""
    name = exc.name or ""
    return name if name.split(".")[0] in CLIENT_MODULES else None


def install_hint(argv: list[str]) -> str:
    """The install line for the command `argv`: the server's extra for `serve` / `worker`, else the client's."""
    extra = "server" if argv[:1] in SERVER_COMMANDS else "client"
    return f"pip install 'gigaudit[{extra}]'"


def missing_server_module() -> str | None:
    """The first of :data:`SERVER_MODULES` that is not installed, or None."""
    for name in SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    """Run `gigaudit.cli.main`; exit 2 with the install line when a module of the extra the command needs is
    missing (`client`; `server` for `serve` / `worker`)."""
    argv = sys.argv[1:] if argv is None else argv
    missing = missing_server_module() if argv[:1] in SERVER_COMMANDS else None
    if missing is not None:
        print(f"gigaudit: error: `gigaudit {argv[0]}` needs the server ({missing} is not installed): "
              f"{install_hint(argv)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        from gigaudit.cli import main as cli_main
    except ImportError as exc:
        missing = missing_client_module(exc)
        if missing is None:
            raise
        print(f"gigaudit: error: the command line needs the gRPC client ({missing} is not installed): "
              f"{install_hint(argv)}", file=sys.stderr)
        return EXIT_ERROR
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m gigaudit_server serve [flags]`` (the API server) or ``python -m gigaudit_server worker [flags]``."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from gigaudit_server import config
from gigaudit_server.observability import logs


def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="gigaudit serve", description="Run the gigaudit gRPC API server (also "
                                     "`python -m gigaudit_server serve`). Every flag can also be set as "
                                     "GIGAUDIT_<FLAG> (e.g. GIGAUDIT_REDIS_URL).")
    config.add_flags(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    logs.add_format_flag(parser)
    args = parser.parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        settings = config.from_flags(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("gigaudit_server").info(  # the first line: where this server writes
        "data in %s (artifact store %s; %s)", settings.data_dir, settings.store,
        f"Redis {settings.redis_url}" if settings.redis_url else "embedded Redis in the data directory")
    from gigaudit_server.server import GigauditServer

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        if stop.is_set():  # a second signal: skip the grace
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    server = GigauditServer(settings).start()
    print(f"gigaudit API listening on {settings.host}:{server.port}", flush=True)
    stop.wait()
    logging.getLogger(__name__).info("stopping (grace %.1f s)", settings.shutdown_grace_s)
    server.stop()
    _exit_now()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"serve": serve, "worker": _worker}
    if not argv or argv[0] not in commands:
        sys.exit(f"usage: python -m gigaudit_server {{{'|'.join(commands)}}} [flags]  (--help after a command)")
    commands[argv[0]](argv[1:])


def _worker(argv: list[str]) -> None:
    from gigaudit_server.worker import main as worker_main  # imports torch

    worker_main.main(argv)  # returns after SIGTERM / SIGINT, its job handed back
    _exit_now()


def _exit_now() -> None:
    """Exit 0 without the interpreter's teardown of torch and gig (1-2 s): everything was stopped already."""
    from gigaudit_server.observability import tracing

    tracing.shutdown()  # spans still batched are exported first
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

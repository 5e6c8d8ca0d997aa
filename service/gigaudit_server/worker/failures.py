"""What a handler's exception means for its job: retried, or failed at once with a clear status and no server paths.

Bad input found by the worker (``ValueError``) is INVALID_ARGUMENT; a missing artifact or a store that refuses
access is FAILED_PRECONDITION; a full store is RESOURCE_EXHAUSTED; a Redis outage that escaped the handler is
UNAVAILABLE and the job is handed back. Anything else may be transient (a CUDA OOM, a flaky mount): INTERNAL,
retried up to the queue's ``max_attempts``. Messages go to clients, so absolute paths and URLs are removed from them.
"""
from __future__ import annotations

import errno
import os
import re

from gigaudit_server.queue.jobs import JobFailed
from gigaudit_server.queue.retry import TRANSIENT

_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z][\w+.-]*://[^\s'\"()\[\],;]*|/[^\s'\"()\[\],;]*)")
_MISSING_ARTIFACT = re.compile(r"no (weights|datasets|concepts|graphs|exemplars) object ([0-9a-f]{64})")
_REFUSED = {errno.EROFS: "is read-only", errno.EACCES: "refuses access", errno.EPERM: "refuses access"}
_FULL = (errno.ENOSPC, errno.EDQUOT)


def public_message(text: str) -> str:
    """``text`` with absolute paths and URLs replaced by ``<path>``."""
    return _PATH.sub("<path>", str(text))


def classify(exc: BaseException) -> tuple[str, dict]:
    """``(outcome, error)`` for ``JobQueue.settle``: ``failed`` (no retry), ``retry`` or ``handback``."""
    if isinstance(exc, JobFailed):
        return "failed", _error(exc.code, exc.message)
    if isinstance(exc, ValueError):
        return "failed", _error("INVALID_ARGUMENT", str(exc))
    if isinstance(exc, TRANSIENT):
        return "handback", _error("UNAVAILABLE", "the job store (Redis) was unreachable")
    if isinstance(exc, KeyError) and (found := _MISSING_ARTIFACT.search(str(exc))):
        return "failed", _error("FAILED_PRECONDITION", f"the artifact store has lost the {found[1]} object "
                                                       f"{found[2]} this job needs; upload it again")
    if isinstance(exc, OSError) and exc.errno in _REFUSED:
        return "failed", _error("FAILED_PRECONDITION", f"the worker's artifact store {_REFUSED[exc.errno]} "
                                                       f"({os.strerror(exc.errno)}); an operator must fix it")
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return "failed", _error("RESOURCE_EXHAUSTED", f"the worker's artifact store is full "
                                                      f"({os.strerror(exc.errno)})")
    if isinstance(exc, FileNotFoundError):
        return "failed", _error("FAILED_PRECONDITION", "a file this job needs is missing from the artifact store")
    return "retry", _error("INTERNAL", f"{type(exc).__name__}: {exc}")


def _error(code: str, message: str) -> dict:
    return {"code": code, "message": public_message(message)}

"""Storing an upload stream as an artifact, with its announced digest and size checked."""
from __future__ import annotations

import re

from gigaudit_server.api import errors
from gigaudit_server.storage import settlement

SHA256 = re.compile(r"[0-9a-f]{64}")


def store(backend, collection: str, chunks, sha256: str | None, size: int | None, max_bytes: int) -> tuple[str, int]:
    """``(sha256, size)`` of the stored chunks; a stream over the limit or off its digest is INVALID_ARGUMENT."""
    try:
        return backend.store.put_stream(settlement.UPLOADED[collection][0], chunks, expected_sha256=sha256,
                                        expected_size=size, max_bytes=max_bytes)
    except ValueError as exc:
        raise errors.invalid_argument({"chunk": str(exc)}, str(exc)) from None
    except OSError as exc:  # e.g. a read-only or full store: say what, not where
        raise errors.unavailable(f"the artifact store refused the write ({exc.strerror or type(exc).__name__}); "
                                 "nothing was registered", "STORE_UNAVAILABLE") from None

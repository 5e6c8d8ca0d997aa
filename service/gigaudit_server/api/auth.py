"""Bearer-token authentication with roles, as a gRPC server interceptor.

Clients send ``authorization: Bearer <token>``. The server knows only the SHA-256 of each token, read from a tokens
file (a mounted Secret), one ``<name> <role> <sha256 hex>`` per line (``#`` starts a comment); make a line with
``printf %s "$TOKEN" | sha256sum``. A presented token is hashed and compared with every known hash in constant time;
tokens are never logged. Roles: ``admin`` may do everything; ``auditor`` runs audits and reads (everything but
registering and deleting models and datasets). Health checks and reflection need no token.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from gigaudit_server.api import interceptors

log = logging.getLogger(__name__)

ROLES = ("admin", "auditor")
EXEMPT_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                   "grpc.reflection.v1.ServerReflection")
AUDITOR_METHODS = frozenset({
    "gigaudit.v1.ModelService/GetModel", "gigaudit.v1.ModelService/ListModels",
    "gigaudit.v1.ModelService/ListLayers", "gigaudit.v1.ModelService/ListArchitectures",
    "gigaudit.v1.DatasetService/GetDataset", "gigaudit.v1.DatasetService/ListDatasets",
})
AUDITOR_SERVICES = ("gigaudit.v1.AuditService", "gigaudit.v1.ProbeService", "google.longrunning.Operations")
_LINE = re.compile(r"(?P<name>[A-Za-z0-9_.@-]{1,128})\s+(?P<role>\S+)\s+(?P<digest>[0-9a-f]{64})")

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("gigaudit_principal", default=None)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# Without a tokens file there is one tenant, and it may do everything.
ANONYMOUS = Principal("", "admin")


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as stored in the tokens file."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: str | Path) -> list[tuple[str, Principal]]:
    """``[(sha256 hex, principal)]`` from a tokens file; ``ValueError`` naming the first bad line."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected '<name> <role> <sha256 hex of the token>'")
        if match["role"] not in ROLES:
            raise ValueError(f"{path}:{number}: unknown role {match['role']!r}; valid roles: {', '.join(ROLES)}")
        entries.append((match["digest"], Principal(match["name"], match["role"])))
    if not entries:
        raise ValueError(f"{path}: no tokens; every call would be refused")
    return entries


def allowed(role: str, method: str) -> bool:
    """Whether ``role`` may call ``method`` (``/package.Service/Method``)."""
    name = method.lstrip("/")
    return role == "admin" or name in AUDITOR_METHODS or name.rpartition("/")[0] in AUDITOR_SERVICES


def current_principal() -> Principal | None:
    """Who makes the call being served (set by :class:`AuthInterceptor`; None without authentication)."""
    return _principal.get()


def caller() -> Principal:
    """Who makes the call being served; :data:`ANONYMOUS` without authentication."""
    return _principal.get() or ANONYMOUS


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a known token (UNAUTHENTICATED) or whose role may not call the method
    (PERMISSION_DENIED); lets the others through with :func:`current_principal` set."""

    def __init__(self, tokens: list[tuple[str, Principal]]):
        if not tokens:
            raise ValueError("AuthInterceptor needs at least one token")
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: str | Path) -> AuthInterceptor:
        return cls(load_tokens(path))

    def authenticate(self, metadata) -> Principal | None:
        """The principal whose token the ``authorization`` metadata carries, else None."""
        header = next((value for key, value in metadata or () if key == "authorization"), None)
        if not isinstance(header, str) or not header.startswith("Bearer "):
            return None
        digest = hash_token(header[len("Bearer "):].strip())
        found = None
        for known, principal in self._tokens:  # no early exit: the time does not depend on which token matched
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if method.lstrip("/").rpartition("/")[0] in EXEMPT_SERVICES:
            return handler
        principal = self.authenticate(handler_call_details.invocation_metadata)
        if principal is None:
            log.info("refused %s: no valid bearer token", method)
            return interceptors.refuse(handler, interceptors.refusal(
                grpc.StatusCode.UNAUTHENTICATED, "a valid token is required: send 'authorization: Bearer <token>'",
                "UNAUTHENTICATED"))
        if not allowed(principal.role, method):
            log.info("refused %s for %s (role %s)", method, principal.name, principal.role)
            return interceptors.refuse(handler, interceptors.refusal(
                grpc.StatusCode.PERMISSION_DENIED, f"role {principal.role!r} may not call {method}; "
                "registering and deleting models and datasets needs the admin role", "PERMISSION_DENIED",
                role=principal.role))

        def around(behavior):
            def with_principal(request, context):
                token = _principal.set(principal)
                try:
                    return behavior(request, context)
                finally:
                    _principal.reset(token)

            def streaming_with_principal(request, context):  # the body runs while the stream is read
                token = _principal.set(principal)
                try:
                    yield from behavior(request, context)
                finally:
                    with contextlib.suppress(ValueError):  # closed from another thread: its context is not ours
                        _principal.reset(token)
            return streaming_with_principal if handler.response_streaming else with_principal
        return interceptors.wrap(handler, around)

"""Who may see what (docs/security.md): operations, concept sets and concept graphs belong to their creator.

Auditors see, wait on, cancel and delete only their own; anyone else's answer NOT_FOUND, so that their existence
does not leak. Admins see everything and may narrow lists with the filter ``owner=NAME``. Models and datasets are
shared: admins register and delete them, everyone reads them.
"""
from __future__ import annotations

import re

from gigaudit_server.api import auth, errors

_NAME = re.compile(r'"?[A-Za-z0-9_.@-]{1,128}"?')


def owner() -> str:
    """The owner recorded for what the current call creates."""
    return auth.caller().name


def visible(record_owner: str) -> bool:
    """Whether the current caller may see something owned by ``record_owner``."""
    principal = auth.caller()
    return principal.is_admin or record_owner == principal.name


def check(record_owner: str, resource_type: str, name: str) -> None:
    """NOT_FOUND unless the current caller may see the thing."""
    if not visible(record_owner):
        raise errors.not_found(resource_type, name)


def parse_filter(text: str, fields: tuple[str, ...], help_text: str) -> dict[str, str]:
    """``"a=x AND b=y"`` → ``{"a": "x", "b": "y"}`` for known ``fields``; INVALID_ARGUMENT otherwise. For an
    auditor, ``owner`` is always the caller (asking for another owner's gives an empty list)."""
    terms: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in (text or "").replace(" and ", " AND ").split(" AND "))):
        key, sep, value = (part.strip() for part in term.partition("="))
        if not sep or key not in fields or not _NAME.fullmatch(value) or key in terms:
            raise errors.invalid_argument({"filter": f"{help_text}, not {text!r}"})
        terms[key] = value.strip('"')
    principal = auth.caller()
    if "owner" in fields and not principal.is_admin:
        if terms.get("owner", principal.name) != principal.name:
            terms["owner"] = "\0nobody"  # matches nothing: another's things are not listed
        else:
            terms["owner"] = principal.name
    return terms

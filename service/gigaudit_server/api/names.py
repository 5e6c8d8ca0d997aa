"""Resource names and ids (AIP-122): parse and validate, with the offending request field named."""
from __future__ import annotations

import re

from gigaudit_server.api import errors

_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
_RESERVED = {"index"}  # keys.collection() uses it
ID_RULE = "1-63 characters of lowercase letters, digits and '-', starting with a letter"


def check_id(field: str, value: str) -> str:
    """A client-chosen resource id; INVALID_ARGUMENT naming ``field`` otherwise."""
    if not _ID.fullmatch(value or "") or value.endswith("-") or value in _RESERVED:
        raise errors.invalid_argument({field: f"{value!r} is not a valid id: use {ID_RULE} (not ending in '-', "
                                              f"not {', '.join(sorted(_RESERVED))})"})
    return value


def parse(field: str, name: str, *collections: str) -> list[str]:
    """The ids of ``name`` = ``c1/{id1}/c2/{id2}…`` for ``collections`` = (c1, c2, …)."""
    pattern = "/".join(f"{c}/{{{c[:-1]}}}" for c in collections)
    parts = (name or "").split("/")
    if len(parts) != 2 * len(collections) or any(parts[2 * i] != c for i, c in enumerate(collections)) \
            or not all(_ID.fullmatch(p) and p not in _RESERVED for p in parts[1::2]):
        raise errors.invalid_argument({field: f"{name!r} is not a resource name of the form {pattern} (ids: "
                                              f"{ID_RULE}, not {', '.join(sorted(_RESERVED))})"})
    return parts[1::2]


def model(field: str, name: str) -> str:
    return parse(field, name, "models")[0]


def dataset(field: str, name: str) -> str:
    return parse(field, name, "datasets")[0]


def concept_set(field: str, name: str) -> tuple[str, str]:
    model_id, set_id = parse(field, name, "models", "conceptSets")
    return model_id, set_id


def concept_graph(field: str, name: str) -> tuple[str, str]:
    model_id, graph_id = parse(field, name, "models", "conceptGraphs")
    return model_id, graph_id


def operation(field: str, name: str) -> str:
    """The job id of ``operations/{operation}``."""
    prefix = "operations/"
    if not (name or "").startswith(prefix) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name[len(prefix):]):
        raise errors.invalid_argument({field: f"{name!r} is not an operation name of the form operations/{{id}}"})
    return name[len(prefix):]

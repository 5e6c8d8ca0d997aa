"""Every public entry point of `gig` (and the report builder a notebook calls) annotates its parameters and return.

A new name in `gig.__all__` or `gigaudit.report.__all__` without annotations fails here.
"""
import inspect
import typing

import pytest

import gig
import gigaudit.report


def _entry_points(module) -> list[tuple[str, typing.Callable]]:
    """The module's public callables, and the public methods (with `__init__`, `__call__`) of its public classes."""
    out = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                member = member.fget if isinstance(member, property) else member
                member = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if inspect.isfunction(member):
                    out.append((f"{module.__name__}.{name}.{attr}", member))
        elif inspect.isfunction(obj):
            out.append((f"{module.__name__}.{name}", obj))
    return out


ENTRY_POINTS = _entry_points(gig) + _entry_points(gigaudit.report)


def test_the_entry_points_are_found():
    names = {name for name, _ in ENTRY_POINTS}
    assert {"gig.extract_concepts", "gig.build_graph", "gig.ConceptGraph.circuit", "gig.ConceptSet.decompose",
            "gigaudit.report.write_report", "gigaudit.report.build_report"} <= names


@pytest.mark.parametrize("name, function", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
def test_every_parameter_and_the_return_are_annotated(name, function):
    hints = typing.get_type_hints(function)  # also fails on an annotation that does not resolve
    parameters = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
    assert [p for p in parameters if p not in hints] == [], f"{name}: parameters without a type hint"
    if function.__name__ != "__init__":
        assert "return" in hints, f"{name}: no return type"

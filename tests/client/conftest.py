"""Fixtures of the client tests; the graph builders live in graph_factory.py."""
import pytest

from graph_factory import full_evidence, random_graph


@pytest.fixture
def graph() -> dict:
    return random_graph(evidence=full_evidence())

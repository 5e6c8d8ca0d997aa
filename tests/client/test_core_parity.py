"""The client's torch-free circuit and shares agree with the core's `gig.graph` on a graph the core built."""
import pytest

torch = pytest.importorskip("torch")
graph_module = pytest.importorskip("gig.graph")

from gigaudit.results import ConceptGraph  # noqa: E402


def core_graph(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sizes = {"features.0": 6, "features.1": 5}
    graph = graph_module.ConceptGraph(sizes, 3, ["a", "b", "c"])
    n = 24
    classes = torch.randint(0, 3, (n,), generator=g)
    graph.add_images(n)
    for layer, k in sizes.items():
        graph.add_presence(layer, torch.rand(n, 4, k, generator=g) - 0.3, classes, torch.arange(n))
    for source, target, k_target in (("features.0", "features.1", 5), ("features.1", "logits", 3)):
        t = 2 if target != "logits" else 1
        targets = classes.view(n, 1) if target == "logits" else torch.stack(
            [torch.randperm(k_target, generator=g)[:t] for _ in range(n)])
        values = torch.randn(n, sizes[source], t, generator=g) + 0.1  # mixed signs
        values[values.abs() < 0.3] = 0
        graph.add_attributions(source, target, values, targets, classes)
    return graph


@pytest.mark.parametrize("seed", [0, 1])
def test_circuits_and_shares_match_the_core(seed):
    core = core_graph(seed)
    view = ConceptGraph(core.to_dict())
    for cls in range(3):
        for coverage in (0.5, 0.8, 1.0):
            expected, got = core.circuit(cls, coverage), view.circuit(cls, coverage)
            assert got["nodes"] == expected["nodes"]
            assert sorted(got["edges"]) == sorted(expected["edges"])
            for node, r in expected["relevance"].items():
                assert got["relevance"][node] == pytest.approx(r)
        class_graph = core.class_graph(cls)
        for target in {e["target"] for e in class_graph.edges()}:
            expected = {e["source"]: e["share"] for e in class_graph.edges() if e["target"] == target}
            assert view.shares(target, cls) == pytest.approx(expected)


def test_the_shared_circuit_logic_imports_without_grpc_or_torch():
    import subprocess
    import sys

    code = "import sys, gigaudit.circuits; print(sorted({'grpc', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

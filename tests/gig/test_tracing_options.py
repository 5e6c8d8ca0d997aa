"""gig.layers TracerOptions: leaf_modules and autowrap_functions make untraceable models traceable, the options
reach every entry point through gig.configure_tracing, and bad options or untraceable models get clear errors."""
import copy

import pytest
import torch
from torch import nn

import gig
from gig.layers import LOGITS, TracerOptions, traced


class Gate(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        if x.mean() > 0:
            return x * 0.5
        return x * 2.0


def guard(x):
    """A module-level function with data-dependent control flow (for autowrap_functions)."""
    if x.abs().max() > 1e6:
        return x / 1e6
    return x


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU())
        self.gate = Gate()
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.GELU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.block(self.gate(self.stem(x))))


class GuardedNet(GatedNet):
    def forward(self, x):
        return self.head(self.block(guard(self.stem(x))))


def seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def images(n=2, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_untraceable_model_error_names_the_module_and_suggests_options():
    with pytest.raises(ValueError) as error:
        traced(seeded(GatedNet))
    message = str(error.value)
    assert "cannot be traced with torch.fx inside 'gate' (Gate)" in message
    assert "leaf_modules=['gate']" in message and "hooked_layers" in message
    assert "Top-level blocks: stem.0, stem.1, gate, block.0, block.1, head.0" in message


@pytest.mark.parametrize("leaf", ["gate", "Gate", f"{__name__}.Gate"])
def test_leaf_modules_by_path_or_class_make_the_model_traceable(leaf):
    model = gig.configure_tracing(seeded(GatedNet), TracerOptions(leaf_modules=(leaf,)))
    t = traced(model)
    assert t.capture == "fx" and {"stem", "gate", "block"} <= set(t.cuts)
    assert gig.default_layers(model) == ["gate", "block"]  # the parameter-free gate joins the stem (rule 2)
    x = images()
    with torch.no_grad():
        outputs = t.prefix(["stem", "gate", "block"])(x)
        assert torch.equal(outputs[LOGITS], model(x))
        assert torch.allclose(t.segment("stem", "block")(outputs["stem"]), outputs["block"], atol=1e-6)
        # the gate's branch is decided inside the segment, on the segment's own input
        flipped = -outputs["stem"]
        assert torch.allclose(t.segment("stem", "block")(flipped), model.block(model.gate(flipped)), atol=1e-6)


def test_submodules_of_a_leaf_are_listed_as_inside_it():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Conv2d(6, 6, 1)

        def forward(self, x):
            y = self.inner(x)
            return y if y.sum() > 0 else -y

    model = seeded(GatedNet)
    model.gate = Holder()
    gig.configure_tracing(model, {"leaf_modules": ["gate"]})
    info = {i.name: i for i in gig.list_layers(model)}
    assert info["gate"].is_cut and not info["gate.inner"].is_cut
    assert info["gate.inner"].reason == "inside leaf module 'gate' (fx keeps it whole)"


def test_autowrap_functions_make_a_guarded_forward_traceable():
    with pytest.raises(ValueError, match="cannot be traced with torch.fx"):
        traced(seeded(GuardedNet))
    model = gig.configure_tracing(seeded(GuardedNet), {"autowrap_functions": [f"{__name__}.guard"]})
    t = traced(model)
    assert {"stem", "block"} <= set(t.cuts)
    calls = [n for n in t.graph.nodes if n.op == "call_function" and n.target is guard]
    assert len(calls) == 1  # one opaque call, run on the segment's input
    x = images()
    with torch.no_grad():
        outputs = t.prefix(["stem"])(x)
        assert torch.allclose(t.segment("stem", LOGITS)(outputs["stem"]), model(x), atol=1e-6)


def test_options_reach_every_entry_point_and_can_be_removed():
    model = gig.configure_tracing(seeded(GatedNet), {"leaf_modules": ["Gate"]})
    x = images(4)
    concepts = gig.extract_concepts(model, [x], ["stem", "block"], n_concepts=2, pfvs_per_image=8, seed=0)
    graph = gig.build_graph(model, [x], concepts, steps=4, top_t=1)
    assert graph.layers[:2] == ["stem", "block"]
    gig.configure_tracing(model, None)  # back to plain fx: fails again
    with pytest.raises(ValueError, match="inside 'gate'"):
        gig.list_layers(model)


def test_copies_keep_their_options():
    model = gig.configure_tracing(seeded(GatedNet), {"leaf_modules": ["gate"]})
    assert "gate" in traced(copy.deepcopy(model)).cuts
    assert gig.layers.tracer_options(model).leaf_modules == ("gate",)


def test_unknown_leaf_module_lists_paths_and_classes():
    with pytest.raises(ValueError, match=r"unknown leaf module 'gat'.*e\.g\. stem\.0, .*gate.*\(.*GELU, Gate, Linear"):
        gig.configure_tracing(seeded(GatedNet), {"leaf_modules": ["gat"]})


@pytest.mark.parametrize("name, match", [
    ("guard", "must be written 'module.function'"),
    ("not_imported_module_xyz.f", "is not imported; .*never imports one"),
    (f"{__name__}.missing", "has no attribute 'missing'"),
    (f"{__name__}.Gate", "is a type, not a function"),
    (f"{__name__}.pytest", "is a module, not a function"),
])
def test_bad_autowrap_functions_say_why(name, match):
    with pytest.raises(ValueError, match=match):
        gig.configure_tracing(seeded(GuardedNet), {"autowrap_functions": [name]})


def test_autowrap_never_imports():
    import sys

    assert "xml.dom.minidom" not in sys.modules or pytest.skip("already imported")
    with pytest.raises(ValueError, match="not imported"):
        gig.configure_tracing(seeded(GuardedNet), {"autowrap_functions": ["xml.dom.minidom.parse"]})
    assert "xml.dom.minidom" not in sys.modules


@pytest.mark.parametrize("spec, match", [
    ({"leaf": ["gate"]}, r"unknown tracer options \['leaf'\]; valid options are: leaf_modules, "
                         "autowrap_functions, hooked_layers"),
    ({"leaf_modules": "gate"}, "must be a list of non-empty strings"),
    ({"leaf_modules": ["gate", "gate"]}, "duplicates"),
    ({"leaf_modules": ["gate"], "hooked_layers": ["stem"]}, "cannot be combined"),
])
def test_bad_option_dicts(spec, match):
    with pytest.raises(ValueError, match=match):
        TracerOptions.from_dict(spec)


def test_from_dict_of_a_tracer_spec():
    from gigaudit_server.queue.schemas import TracerSpec

    spec = TracerSpec(leaf_modules=["gate"]).model_dump()
    assert TracerOptions.from_dict(spec) == TracerOptions(leaf_modules=("gate",))
    assert not TracerOptions.from_dict(None) and not TracerOptions.from_dict(TracerSpec().model_dump())

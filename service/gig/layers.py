"""Layer names, cuts and network segments.

A model is traced once with :mod:`torch.fx`; every node remembers the module path that produced it
(``nn_module_stack``). A module's *output node* is the one node inside it that is used outside it. A layer is a
*cut* when every data path from the input to the logits passes through its output node (paths that only read a
tensor's shape do not count). Between two cuts ``a`` and ``b`` the :class:`TracedModel` builds a *segment*: a
small graph module that maps ``X^a`` to ``X^b`` (or to the logits) and runs nothing else.

No hooks are used: outputs are read from the traced graph itself.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import fx, nn

LOGITS = "logits"

# Nodes that only read metadata of a tensor: edges through them carry no data.
_SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda"}
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "get_device"}


@dataclass(frozen=True)
class LayerInfo:
    """One addressable module: its ``named_modules()`` path, class, and whether its output is a cut."""

    name: str
    type: str
    is_cut: bool
    reason: str = ""  # why it is not a cut (empty when it is)


def _is_shape_read(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
    return node.op == "call_method" and node.target in _SHAPE_METHODS


def _module_path(key: str) -> str:
    return key.split("@")[0]


class TracedModel:
    """A model traced once, with its layers' output nodes, cut checks and segments."""

    def __init__(self, model: nn.Module):
        self.model = model
        try:
            self.graph_module = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many kinds of errors for untraceable code
            raise ValueError(
                f"{type(model).__name__} cannot be traced with torch.fx ({type(exc).__name__}: {exc}); "
                "gig needs a traceable model to find layer outputs and run segments"
            ) from exc
        self.graph = self.graph_module.graph
        nodes = list(self.graph.nodes)
        self._order = {n: i for i, n in enumerate(nodes)}
        self._inputs = [n for n in nodes if n.op == "placeholder"]
        outputs = [n for n in nodes if n.op == "output"]
        self._output = outputs[0]
        logits = self._output.args[0]
        if not isinstance(logits, fx.Node):
            raise ValueError(f"{type(model).__name__} must return one tensor of logits, not {type(logits).__name__}")
        self._logits = logits
        self.layers: dict[str, LayerInfo] = {}
        self._out_node: dict[str, fx.Node] = {}
        self._index_layers(model, nodes)
        self._segments: dict[tuple[str, str], fx.GraphModule] = {}
        self._prefixes: dict[tuple[str, ...], fx.GraphModule] = {}

    # ------------------------------------------------------------------ layer discovery
    def _index_layers(self, model: nn.Module, nodes: list[fx.Node]) -> None:
        members: dict[str, list[fx.Node]] = {}
        calls: dict[str, set[str]] = {}
        for node in nodes:
            for key in node.meta.get("nn_module_stack", {}):
                path = _module_path(key)
                members.setdefault(path, []).append(node)
                calls.setdefault(path, set()).add(key)
        for name, module in model.named_modules():
            if not name:
                continue
            kind = type(module).__name__
            inside = members.get(name)
            if not inside:
                self.layers[name] = LayerInfo(name, kind, False, "never called in forward()")
                continue
            if len(calls[name]) > 1:
                self.layers[name] = LayerInfo(name, kind, False, f"called {len(calls[name])} times in forward()")
                continue
            inside_set = set(inside)
            exits = [n for n in inside if any(u not in inside_set for u in n.users) or n is self._logits]
            exits = [n for n in exits if not _is_shape_read(n)]
            if len(exits) != 1:
                self.layers[name] = LayerInfo(name, kind, False, f"has {len(exits)} outputs")
                continue
            out = exits[0]
            self._out_node[name] = out
            blocked = self._bypass(out)
            reason = "" if not blocked else "the logits are reachable without passing through it"
            self.layers[name] = LayerInfo(name, kind, not blocked, reason)

    def _bypass(self, node: fx.Node) -> bool:
        """True when the logits can be reached from the input by a data path that avoids ``node``."""
        seen, stack = set(), [n for n in self._inputs if n is not node]
        while stack:
            n = stack.pop()
            if n in seen or n is node or _is_shape_read(n):
                continue
            if n is self._logits:
                return True
            seen.add(n)
            stack.extend(n.users)
        return False

    # ------------------------------------------------------------------ validation
    @property
    def cuts(self) -> list[str]:
        return [info.name for info in self.layers.values() if info.is_cut]

    def check_layers(self, names) -> list[str]:
        """Validate analysed layer names and return them in forward order; ``ValueError`` lists valid names."""
        if isinstance(names, str):
            names = [names]
        names = list(names)
        if not names:
            raise ValueError("no layers given; valid cut layers are: " + ", ".join(self.cuts))
        for name in names:
            info = self.layers.get(name)
            if info is None:
                raise ValueError(f"unknown layer {name!r}; valid cut layers are: {', '.join(self.cuts)}")
            if not info.is_cut:
                raise ValueError(
                    f"layer {name!r} is not a cut ({info.reason}); valid cut layers are: {', '.join(self.cuts)}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate layers in {names}")
        return sorted(names, key=lambda n: self._order[self._out_node[n]])

    def check_target(self, name: str) -> str:
        if name == LOGITS:
            return name
        return self.check_layers([name])[0]

    def _node(self, name: str) -> fx.Node:
        return self._logits if name == LOGITS else self._out_node[name]

    # ------------------------------------------------------------------ graph builders
    def prefix(self, layers) -> fx.GraphModule:
        """A graph module ``images -> {layer: X^layer, ..., "logits": logits}`` (one forward for all layers)."""
        key = tuple(layers)
        if key not in self._prefixes:
            graph = fx.Graph()
            env: dict[fx.Node, fx.Node] = {}
            wanted = [self._out_node[n] for n in key] + [self._logits]
            needed = self._ancestors(wanted)
            captured: dict[fx.Node, fx.Node] = {}
            for node in self.graph.nodes:
                if node in needed:
                    env[node] = graph.node_copy(node, lambda n: env[n])
                    if node in wanted:
                        captured[node] = self._guard_inplace(graph, env[node], node)
            outputs = {name: captured[self._out_node[name]] for name in key}
            outputs[LOGITS] = captured[self._logits]
            graph.output(outputs)
            self._prefixes[key] = fx.GraphModule(self.graph_module, graph)
        return self._prefixes[key]

    def segment(self, source: str, target: str) -> fx.GraphModule:
        """A graph module ``X^source -> X^target`` (``target`` may be ``"logits"``)."""
        key = (source, target)
        if key not in self._segments:
            start, end = self._out_node[source], self._node(target)
            if self._order[end] <= self._order[start]:
                raise ValueError(f"target {target!r} does not come after source {source!r}")
            downstream = self._descendants([start])
            from_input = self._descendants(self._inputs)
            needed = self._ancestors([end], stop=start)
            graph = fx.Graph()
            env: dict[fx.Node, fx.Node] = {start: graph.placeholder("x")}
            for node in self.graph.nodes:
                if node is start or node not in needed:
                    continue
                if node not in downstream and node in from_input:
                    raise ValueError(
                        f"the segment {source!r} -> {target!r} reads the input through {node.name!r}; "
                        f"{source!r} is not a cut for it"
                    )
                env[node] = graph.node_copy(node, lambda n: env[n])
            graph.output(env[end])
            module = fx.GraphModule(self.graph_module, graph)
            module.graph.eliminate_dead_code()
            module.recompile()
            self._segments[key] = module
        return self._segments[key]

    @staticmethod
    def _ancestors(nodes, stop: fx.Node | None = None) -> set[fx.Node]:
        seen, stack = set(), list(nodes)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                if n is not stop:
                    stack.extend(n.all_input_nodes)
        return seen

    @staticmethod
    def _descendants(nodes) -> set[fx.Node]:
        seen, stack = set(), list(nodes)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(n.users)
        return seen

    def _guard_inplace(self, graph: fx.Graph, copy: fx.Node, node: fx.Node) -> fx.Node:
        """Clone a captured output that a later in-place module (``ReLU(inplace=True)``) would overwrite."""
        for user in node.users:
            if user.op == "call_module" and getattr(self.graph_module.get_submodule(user.target), "inplace", False):
                return graph.call_method("clone", (copy,))
        return copy


_CACHE: "weakref.WeakKeyDictionary[nn.Module, TracedModel]" = weakref.WeakKeyDictionary()


def traced(model: nn.Module) -> TracedModel:
    """The (cached) :class:`TracedModel` of ``model``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    found = _CACHE.get(model)
    if found is None:
        found = _CACHE[model] = TracedModel(model)
    return found


def list_layers(model: nn.Module) -> list[LayerInfo]:
    """Every named module of ``model`` with its class and whether its output is a cut."""
    return list(traced(model).layers.values())


def default_layers(model: nn.Module) -> list[str]:
    """Sensible analysed layers: ResNet block outputs, VGG ``features.N`` ReLUs, ViT encoder layers.

    For other models: every cut that is a direct child of an ``nn.Sequential``.
    """
    t = traced(model)
    cuts = set(t.cuts)
    names: list[str]
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):  # torchvision ResNet family
        names = [f"layer{i}.{j}" for i in range(1, 5) for j in range(len(getattr(model, f"layer{i}")))]
    elif isinstance(getattr(model, "features", None), nn.Sequential) and hasattr(model, "classifier"):  # VGG
        names = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]
    elif hasattr(model, "encoder") and isinstance(getattr(model.encoder, "layers", None), nn.Sequential):  # ViT
        names = [f"encoder.layers.{n}" for n, _ in model.encoder.layers.named_children()]
    else:
        parents = {n for n, m in model.named_modules() if isinstance(m, nn.Sequential)}
        names = [n for n in t.layers if n.rpartition(".")[0] in parents]
    names = [n for n in names if n in cuts]
    if not names:
        raise ValueError(f"no default layers found for {type(model).__name__}; pass layers, one of: {sorted(cuts)}")
    return t.check_layers(names)

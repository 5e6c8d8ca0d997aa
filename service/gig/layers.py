"""Layer names, cuts and network segments.

A model is traced once with :mod:`torch.fx`; every node remembers the module path that produced it
(``nn_module_stack``). A module's *output node* is the one node inside it that is used outside it. A layer is a
*cut* when every data path from the input to the logits passes through its output node (paths that only read a
tensor's shape do not count). Between two cuts ``a`` and ``b`` the :class:`TracedModel` builds a *segment*: a
small graph module that maps ``X^a`` to ``X^b`` (or to the logits) and runs nothing else. :func:`default_layers`
picks the stage or block outputs of any traceable model by the rules in its docstring.

No hooks are used: outputs are read from the traced graph itself. A model fx cannot trace as it is can be given
:class:`TracerOptions` with :func:`configure_tracing`: ``leaf_modules`` and ``autowrap_functions`` keep code out of
the trace (as torchvision's feature extraction does); ``hooked_layers`` skips fx and captures the named layers with
forward hooks (:class:`gig.hooks.HookedModel`, docs/tracing.md). Every gig entry point honours the options.
"""
from __future__ import annotations

import operator
import sys
import weakref
from dataclasses import dataclass, fields
from typing import Mapping

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
    capture: str = "fx"  # how its output is read: "fx" (a node of the traced graph) or "hook" (a forward hook)


@dataclass(frozen=True)
class TracerOptions:
    """How gig finds a model's layers when torch.fx cannot trace it as it is.

    ``leaf_modules``: module paths of the model (``"blocks.1"``) or class names (``"GatedBlock"``, or
    ``"package.module.GatedBlock"``) that fx keeps whole, as one node, instead of tracing inside them.
    ``autowrap_functions``: ``"module.function"`` names of functions in modules already imported
    (``sys.modules``; gig never imports one) that fx records as one call instead of tracing them.
    ``hooked_layers``: module paths captured with forward hooks; fx is not used at all
    (:class:`gig.hooks.HookedModel`), and each such layer is a cut only after a replace-and-compare test.
    """

    leaf_modules: tuple[str, ...] = ()
    autowrap_functions: tuple[str, ...] = ()
    hooked_layers: tuple[str, ...] = ()

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"TracerOptions.{field.name} must be a list of non-empty strings, got {value!r}")
            if len(set(value)) != len(value):
                raise ValueError(f"TracerOptions.{field.name} has duplicates: {list(value)}")
            object.__setattr__(self, field.name, tuple(value))
        if self.hooked_layers and (self.leaf_modules or self.autowrap_functions):
            raise ValueError("hooked_layers replace torch.fx, so they cannot be combined with leaf_modules or "
                             "autowrap_functions (which only steer fx); give either")

    @classmethod
    def from_dict(cls, spec: Mapping | None) -> "TracerOptions":
        """Options from a ``queue.schemas.TracerSpec`` dict (``None`` or ``{}``: plain fx)."""
        spec = dict(spec or {})
        valid = [field.name for field in fields(cls)]
        unknown = sorted(set(spec) - set(valid))
        if unknown:
            raise ValueError(f"unknown tracer options {unknown}; valid options are: {', '.join(valid)}")
        values = {name: spec.get(name) or () for name in valid}
        return cls(**{name: v if isinstance(v, str) else tuple(v) for name, v in values.items()})

    def __bool__(self) -> bool:
        return bool(self.leaf_modules or self.autowrap_functions or self.hooked_layers)


@dataclass(frozen=True)
class _Tracing:
    """What :func:`configure_tracing` attaches to a model."""

    options: TracerOptions
    input_size: tuple[int, ...] | None


_TRACING_ATTRIBUTE = "_gig_tracing"


def _is_shape_read(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
    return node.op == "call_method" and node.target in _SHAPE_METHODS


_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_GLOBAL_POOL_FUNCTIONS = {torch.nn.functional.adaptive_avg_pool1d, torch.nn.functional.adaptive_avg_pool2d,
                          torch.nn.functional.adaptive_avg_pool3d, torch.nn.functional.adaptive_max_pool1d,
                          torch.nn.functional.adaptive_max_pool2d, torch.nn.functional.adaptive_max_pool3d}
_REDUCTIONS = {"mean", "amax", "amin", "max", "sum"}


def _all_ones(size) -> bool:
    return all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,)))


def _arg(node: fx.Node, index: int, keyword: str, default=None):
    return node.args[index] if len(node.args) > index else node.kwargs.get(keyword, default)


def _is_global_reduction(node: fx.Node, root: nn.Module) -> bool:
    """True for an op that removes every position of its input: global pooling, a mean (max, sum) over
    non-batch dimensions, a flatten from dimension 0 or 1, a view/reshape to two dimensions, ``x[:, i]``."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        if isinstance(module, _GLOBAL_POOLS):
            return _all_ones(module.output_size)
        return isinstance(module, nn.Flatten) and module.start_dim in (0, 1) and module.end_dim == -1
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    if node.op not in ("call_method", "call_function") or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_function" and node.target in _GLOBAL_POOL_FUNCTIONS:
        return _all_ones(_arg(node, 1, "output_size"))
    if node.op == "call_function" and node.target is operator.getitem:
        index = node.args[1] if len(node.args) > 1 else None
        return (isinstance(index, tuple) and len(index) >= 2 and index[0] == slice(None)
                and any(isinstance(i, int) for i in index[1:]))
    if node.op == "call_function" and getattr(torch, str(name), None) is not node.target:
        return False  # only torch.mean / torch.flatten / ... and tensor methods of those names
    if name == "flatten":
        return _arg(node, 1, "start_dim", 0) in (0, 1) and _arg(node, 2, "end_dim", -1) == -1
    if name in ("view", "reshape"):
        shape = node.args[1:] if node.op == "call_method" else node.args[1:2]
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return len(shape) == 2
    if name in _REDUCTIONS:
        dim = _arg(node, 1, "dim")
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        return dim is None or (all(isinstance(d, int) for d in dims) and 0 not in dims)
    return False


def _module_path(key: str) -> str:
    return key.split("@")[0]


def _class_names(module: nn.Module) -> tuple[str, str]:
    kind = type(module)
    return kind.__name__, f"{kind.__module__}.{kind.__qualname__}"


def candidate_paths(model: nn.Module, limit: int = 12) -> list[str]:
    """Top-level blocks of ``model``: its children, a plain container child standing for its members; while
    fewer than ``MIN_DEFAULT_LAYERS`` are found (a wrapper), those that have children are opened."""

    def opened(prefix: str, module: nn.Module) -> list[str]:
        found = []
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if type(child) in _CONTAINERS and len(child):
                found.extend(f"{path}.{member}" for member, _ in child.named_children())
            else:
                found.append(path)
        return found

    found = opened("", model)
    while 0 < len(found) < MIN_DEFAULT_LAYERS:
        deeper = [p for name in found for p in (opened(name, model.get_submodule(name)) or [name])]
        if deeper == found:
            break
        found = deeper
    return found[:limit] + ([f"… ({len(found) - limit} more)"] if len(found) > limit else [])


def check_leaf_modules(model: nn.Module, leaf_modules) -> None:
    """``ValueError`` for a leaf module that is neither a module path of ``model`` nor a class name of one."""
    submodules = {name: module for name, module in model.named_modules() if name}  # the root is never a leaf
    classes = {n for module in submodules.values() for n in _class_names(module)}
    for leaf in leaf_modules:
        if leaf not in submodules and leaf not in classes:
            shown = sorted({_class_names(m)[0] for m in submodules.values()})[:_LISTED]
            raise ValueError(
                f"unknown leaf module {leaf!r}: it is neither a module path of {type(model).__name__} "
                f"(e.g. {', '.join(candidate_paths(model)) or 'none'}) nor a class name of one of its modules "
                f"({', '.join(shown)})"
            )


def resolve_function(name: str):
    """The function ``"module.function"`` names, looked up in ``sys.modules`` only (nothing is imported)."""
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"autowrap function {name!r} must be written 'module.function'")
    module = sys.modules.get(module_name)
    if module is None:
        raise ValueError(f"autowrap function {name!r}: module {module_name!r} is not imported; gig looks "
                         "autowrap_functions up in modules already imported (sys.modules) and never imports one")
    function = vars(module).get(attribute)  # vars(), not getattr(): a lazy module's __getattr__ could import
    if function is None:
        raise ValueError(f"autowrap function {name!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(function) or isinstance(function, type):
        raise ValueError(f"autowrap function {name!r} is a {type(function).__name__}, not a function")
    return function


class _Tracer(fx.Tracer):
    """An fx tracer that keeps the given modules whole and remembers the innermost module a failure came from."""

    def __init__(self, options: TracerOptions):
        super().__init__(autowrap_functions=tuple(resolve_function(f) for f in options.autowrap_functions))
        self.leaves = set(options.leaf_modules)
        self.leaf_paths: set[str] = set()  # user leaf modules met while tracing
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaves or any(n in self.leaves for n in _class_names(m)):
            self.leaf_paths.add(module_qualified_name)
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise


def _untraceable(model: nn.Module, exc: Exception, failed_in: tuple[str, str] | None) -> str:
    where = f" inside {failed_in[0]!r} ({failed_in[1]})" if failed_in and failed_in[0] else ""
    example = repr(failed_in[0]) if failed_in and failed_in[0] else "'<module path>'"
    return (
        f"{type(model).__name__} cannot be traced with torch.fx{where} ({type(exc).__name__}: {exc}). "
        f"Keep the untraceable code out of the trace with TracerOptions(leaf_modules=[{example}]) (module paths "
        "or class names; autowrap_functions=['module.function'] for a function), or capture layers with "
        f"forward hooks, TracerOptions(hooked_layers=[...]) (docs/tracing.md), set with gig.configure_tracing. "
        f"Top-level blocks: {', '.join(candidate_paths(model)) or 'none'}"
    )


def _optional_arguments(model: nn.Module) -> dict | None:
    """``forward``'s arguments after the image that have defaults (e.g. timm's ``attn_mask=None``), fixed at
    their defaults: traced as inputs, they would open paths to the logits that bypass every layer."""
    import inspect

    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    optional = {p.name: p.default for p in parameters[1:]
                if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return optional or None


class TracedModel:
    """A model traced once, with its layers' output nodes, cut checks and segments."""

    capture = "fx"

    def __init__(self, model: nn.Module, options: TracerOptions | None = None):
        self.model = model
        self.options = options or TracerOptions()
        check_leaf_modules(model, self.options.leaf_modules)
        tracer = _Tracer(self.options)
        try:
            graph = tracer.trace(model, concrete_args=_optional_arguments(model))
        except Exception as exc:  # fx raises many kinds of errors for untraceable code
            raise ValueError(_untraceable(model, exc, tracer.failed_in)) from exc
        self._leaf_paths = tracer.leaf_paths
        self.graph_module = fx.GraphModule(tracer.root, graph, type(model).__name__)
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
        self._head_start: fx.Node | None = None
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
                leaf = next((p for p in self._leaf_paths if name.startswith(p + ".")), None)
                reason = f"inside leaf module {leaf!r} (fx keeps it whole)" if leaf else "never called in forward()"
                self.layers[name] = LayerInfo(name, kind, False, reason)
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

    def _usable(self, name: str) -> bool:
        """A cut whose output comes before the network's head (see :meth:`head_start`)."""
        info = self.layers.get(name)
        return bool(info and info.is_cut) and self._order[self._out_node[name]] < self._order[self.head_start]

    @property
    def head_start(self) -> fx.Node:
        """The first node of the head: the first global reduction that is a cut (global pooling, a mean over
        positions, a flatten to ``(B, C)``, a class-token pick), else the logits. No analysed layer ends there
        or later by default: nothing after it has positions (spatial or tokens) to decompose."""
        if self._head_start is None:
            self._head_start = next((n for n in self.graph.nodes if _is_global_reduction(n, self.graph_module)
                                     and not self._bypass(n)), self._logits)
        return self._head_start

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

    def can_be_source(self, name: str) -> bool:
        """Whether a layer is a cut whose output comes before the logits (the classifier, whose output is the
        logits, is a cut but nothing follows it to attribute to)."""
        info, node = self.layers.get(name), self._out_node.get(name)
        return bool(info is not None and info.is_cut and node is not None
                    and self._order[node] < self._order[self._logits])

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
        first_name: dict[fx.Node, str] = {}
        for name in names:
            other = first_name.setdefault(self._out_node[name], name)
            if other != name:
                raise ValueError(f"layers {other!r} and {name!r} are the same tensor (one output node); "
                                 "analyse only one of them")
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
            env: dict[fx.Node, fx.Node] = {start: self._guard_inplace(graph, graph.placeholder("x"), start)}
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
        """Clone a captured output (or a segment's input) that a later in-place op would overwrite:
        ``ReLU(inplace=True)``, ``F.relu(x, inplace=True)``, ``x.relu_()``, ``torch.relu_(x)``."""
        if any(self._writes_in_place(user, node) for user in node.users):
            return graph.call_method("clone", (copy,))
        return copy

    def _writes_in_place(self, user: fx.Node, node: fx.Node) -> bool:
        if user.op == "call_module":
            return bool(getattr(self.graph_module.get_submodule(user.target), "inplace", False))
        if user.op not in ("call_function", "call_method") or not user.args or user.args[0] is not node:
            return False
        name = user.target if user.op == "call_method" else getattr(user.target, "__name__", "")
        return user.kwargs.get("inplace") is True or (name.endswith("_") and not name.startswith("_"))


_CACHE: "weakref.WeakKeyDictionary[nn.Module, TracedModel]" = weakref.WeakKeyDictionary()


def configure_tracing(model: nn.Module, options: TracerOptions | Mapping | None,
                      input_size: int | tuple[int, ...] | None = None) -> nn.Module:
    """Attach tracer ``options`` (or a ``TracerSpec`` dict; ``None``: plain fx) to ``model``; every gig entry
    point then finds its layers with them. Names are checked now (``ValueError`` listing valid ones); the trace,
    or for ``hooked_layers`` the replace-and-compare test, runs on first use.

    ``input_size`` (``S``, ``(H, W)`` or ``(C, H, W)``) is the input of the hooked layers' test; by default it is
    read from the model's timm ``pretrained_cfg`` or Hugging Face ``config``. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(options, TracerOptions):
        options = TracerOptions.from_dict(options)
    check_leaf_modules(model, options.leaf_modules)
    for name in options.autowrap_functions:
        resolve_function(name)
    if options.hooked_layers:
        from gig.hooks import check_hooked_names, input_shape

        check_hooked_names(model, options.hooked_layers)
        size = input_shape(model, input_size)
    else:
        size = None
    model.__dict__[_TRACING_ATTRIBUTE] = _Tracing(options, size)
    _CACHE.pop(model, None)
    return model


def tracer_options(model: nn.Module) -> TracerOptions:
    """The options :func:`configure_tracing` attached to ``model`` (empty ones by default)."""
    tracing = model.__dict__.get(_TRACING_ATTRIBUTE)
    return tracing.options if tracing else TracerOptions()


def traced(model: nn.Module) -> "TracedModel | HookedModel":
    """The (cached) :class:`TracedModel` of ``model``, or its :class:`gig.hooks.HookedModel` when its tracer
    options name ``hooked_layers``. Both offer the same interface to gig."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    found = _CACHE.get(model)
    if found is None:
        tracing = model.__dict__.get(_TRACING_ATTRIBUTE)
        if tracing is not None and tracing.options.hooked_layers:
            from gig.hooks import HookedModel

            found = HookedModel(model, tracing.options.hooked_layers, tracing.input_size)
        else:
            found = TracedModel(model, tracing.options if tracing else None)
        _CACHE[model] = found
    return found


def list_layers(model: nn.Module) -> list[LayerInfo]:
    """Every named module of ``model`` with its class and whether its output is a cut."""
    return list(traced(model).layers.values())


MIN_DEFAULT_LAYERS = 3  # below this many top-level layers, default_layers looks one level deeper
_LISTED = 12  # cut names shown in an error message before "and N more"
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def default_layers(model: nn.Module) -> list[str]:
    """Sensible analysed layers, in forward order, one name per tensor.

    torchvision ResNets: block outputs (``layer1.0`` …); VGG: the ``features.N`` ReLUs; ViT: the encoder layers.
    Any other traceable model:

    1. *Top level*: the model's children whose outputs are cuts. A plain container child (exactly
       ``nn.Sequential``/``ModuleList``/``ModuleDict`` holding blocks) stands for its members (``features`` →
       ``features.0`` …; ``stages`` → ``stages.0`` …, not opened further); a child that is not a cut (never
       called, several outputs, bypassed) is looked through, its own children taking its place.
    2. *Units*: a parameter-free module (activation, pooling, dropout, ``Identity``) is no layer of its own: it
       joins the layer before it (that unit's output becomes its output) and is dropped when nothing precedes it.
    3. *Head*: nothing from :attr:`TracedModel.head_start` (the first global reduction that every path passes:
       global/adaptive-1 pooling, a mean over positions, a flatten to ``(B, C)``, a class-token pick ``x[:, 0]``)
       to the logits, nor the logits; a module of plain layers that ends there (the classifier) is left out whole.
    4. *Depth*: while fewer than ``MIN_DEFAULT_LAYERS`` layers are found, the layers that hold blocks (a stage
       or a wrapper) are replaced by the layers inside them (by the same rules), else those that hold several
       layers; a layer's own output stays when none of its inner layers ends with it.
    5. *One name per tensor*: when several chosen names share one output node, the outermost (shortest) is kept;
       a container replaced by its members is named by them (``features.3``, not ``features``).

    ``ValueError`` (listing the cuts found) when no layer qualifies.
    """
    t = traced(model)
    if t.capture == "hook":
        return t.default_layers()
    names = _torchvision_defaults(model)
    if names is None:
        names = _general_defaults(t)
    else:
        names = _distinct(t, [n for n in names if t._usable(n)])
    if not names:
        cuts = t.cuts
        listed = ", ".join(cuts[:_LISTED]) + (f" and {len(cuts) - _LISTED} more" if len(cuts) > _LISTED else "")
        raise ValueError(
            f"no default layers found for {type(model).__name__}: none of its {len(cuts)} cut layers comes before "
            f"its global pooling / head ({listed or 'no cuts at all'}); pass the layers to analyse explicitly"
        )
    return t.check_layers(names)


def _torchvision_defaults(model: nn.Module) -> list[str] | None:
    """The hand-picked defaults of torchvision's ResNet, VGG and ViT families; ``None`` for other models."""
    stages = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(stage, nn.Sequential) for stage in stages):  # ResNet family
        return [f"layer{i}.{j}" for i, stage in enumerate(stages, 1) for j in range(len(stage))]
    features = getattr(model, "features", None)
    if (isinstance(features, nn.Sequential) and hasattr(model, "classifier")
            and all(not list(m.children()) for m in features) and any(isinstance(m, nn.ReLU) for m in features)):
        return [f"features.{i}" for i, m in enumerate(features) if isinstance(m, nn.ReLU)]  # VGG
    encoder = getattr(model, "encoder", None)
    if isinstance(getattr(encoder, "layers", None), nn.Sequential):  # ViT
        return [f"encoder.layers.{n}" for n, _ in encoder.layers.named_children()]
    return None


def _general_defaults(t: "TracedModel") -> list[str]:
    units = _units(t, "", t.model)
    while 0 < len(units) < MIN_DEFAULT_LAYERS:
        inner = {name: _inner_units(t, name) for name in units}
        deeper = {name: found for name, found in inner.items() if len(found) > 1}
        holds_blocks = {name for name, found in deeper.items()
                        if any(m != name and _has_children(t, m) for m in found)}
        chosen = holds_blocks or set(deeper)
        grown = _distinct(t, [m for name in units for m in (inner[name] if name in chosen else [name])])
        if grown == units:
            break
        units = grown
    return units


def _inner_units(t: "TracedModel", name: str) -> list[str]:
    """The units inside layer ``name``; the one that ends with ``name``'s output takes its name, else ``name``
    itself is added (a block whose output is computed after its last inner layer, e.g. a residual sum)."""
    found = _units(t, name, t.model.get_submodule(name))
    node = t._out_node[name]
    if not found:
        return [name]
    renamed = [name if t._out_node[n] is node else n for n in found]
    return renamed if name in renamed else renamed + [name]


def _units(t: "TracedModel", prefix: str, module: nn.Module) -> list[str]:
    """Rules 1-2 and 5 of :func:`default_layers` for the children of ``module`` (named ``prefix``)."""
    found = _candidates(t, prefix, module, open_containers=True)
    found.sort(key=lambda n: t._order[t._out_node[n]])
    units: list[str] = []
    for name in found:
        if next(t.model.get_submodule(name).parameters(), None) is None:  # parameter-free: joins the unit before
            if units:
                units[-1] = name
            continue
        units.append(name)
    return _distinct(t, units)


def _candidates(t: "TracedModel", prefix: str, module: nn.Module, open_containers: bool) -> list[str]:
    found: list[str] = []
    for child_name, child in module.named_children():
        name = f"{prefix}.{child_name}" if prefix else child_name
        if _is_classifier(t, name, child):
            continue
        if type(child) in _CONTAINERS and open_containers and (not t._usable(name) or _holds_blocks(child)):
            found.extend(_candidates(t, name, child, open_containers=False))
        elif t._usable(name):
            found.append(name)
        else:
            found.extend(_candidates(t, name, child, open_containers))
    return found


def _is_classifier(t: "TracedModel", name: str, module: nn.Module) -> bool:
    """A module of plain layers whose output is in the head (e.g. dropout → 1×1 conv → pool): skipped whole."""
    node = t._out_node.get(name)
    return node is not None and t._order[node] >= t._order[t.head_start] and not _holds_blocks(module)


def _holds_blocks(module: nn.Module) -> bool:
    return any(next(child.children(), None) is not None for child in module.children())


def _has_children(t: "TracedModel", name: str) -> bool:
    return next(t.model.get_submodule(name).children(), None) is not None


def _distinct(t: "TracedModel", names: list[str]) -> list[str]:
    """``names`` in forward order with one name per output node: the outermost (fewest dots, then shortest)."""
    best: dict[fx.Node, str] = {}
    for name in names:
        node = t._out_node[name]
        if node not in best or (name.count("."), len(name)) < (best[node].count("."), len(best[node])):
            best[node] = name
    return sorted(best.values(), key=lambda n: t._order[t._out_node[n]])


from gig.hooks import HookedModel  # noqa: E402  (after the names gig.hooks imports from here: the return type of traced)

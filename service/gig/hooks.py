"""Layers captured with forward hooks, for models that torch.fx cannot trace at all.

:class:`HookedModel` offers gig the interface of :class:`gig.layers.TracedModel` (``layers``, ``cuts``,
``can_be_source``, ``check_layers``, ``check_target``, ``prefix``, ``segment``, ``default_layers``) for the module
paths named in ``TracerOptions.hooked_layers``. ``prefix`` runs the model once and keeps the named layers' outputs;
``segment(a, b)`` runs the model on a placeholder input with a hook that *replaces* ``a``'s output by the segment's
input, and returns ``b``'s output (or the logits), stopping the forward as soon as ``b`` has run.

Without a graph, a cut cannot be read off: a hooked layer counts as a cut only after a *replace-and-compare* test
on two seeded random inputs ``x1``, ``x2``: replacing the layer's output on ``x2`` by its output on ``x1`` must
reproduce the logits of ``x1`` (and the other way round), to ``CUT_TOLERANCE``. A layer that a skip connection
bypasses fails it and is listed as no cut, with the reason. The test is finite evidence, not a proof; its limits
are in docs/tracing.md.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from gig.data import eval_mode
from gig.layers import LOGITS, LayerInfo, candidate_paths
from gig.quadrature import SCALE_INVARIANT_MODULES

CUT_TOLERANCE = 1e-5  # replaced logits may differ from the reference by this much, relative to max |logits|
PROBE_SEED = 0
PROBE_BATCH = 2  # images per test input
NOT_HOOKED = "not captured: fx is not used for this model, and only hooked_layers are captured"


class _Stop(Exception):
    """Raised by the target's hook to end a segment's forward once its output is known."""


def check_hooked_names(model: nn.Module, names) -> None:
    """``ValueError`` for a hooked layer that is not a module path of ``model`` (listing valid ones)."""
    modules = [name for name, _ in model.named_modules() if name]
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, modules, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise ValueError(f"unknown hooked layer {name!r}: not a module path of {type(model).__name__}; {hint}"
                             f"its top-level blocks are: {', '.join(candidate_paths(model)) or 'none'} "
                             "(any path of named_modules() can be hooked)")


def input_shape(model: nn.Module, input_size=None) -> tuple[int, int, int]:
    """``(C, H, W)`` of the test inputs: ``input_size`` (``S``, ``(H, W)`` or ``(C, H, W)``), else the
    ``input_size`` of a timm ``pretrained_cfg`` or the ``image_size`` (and ``num_channels``) of a Hugging Face
    ``config`` found on ``model`` or its submodules."""
    if input_size is None:
        input_size = _declared_input_size(model)
        if input_size is None:
            raise ValueError(f"cannot tell the input size of {type(model).__name__} for the hooked layers' "
                             "replace-and-compare test; pass input_size=(H, W) to gig.configure_tracing")
    size = (input_size,) * 2 if isinstance(input_size, int) else tuple(input_size)
    size = (3, *size) if len(size) == 2 else size
    if len(size) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"input_size must be S, (H, W) or (C, H, W) positive integers, got {input_size!r}")
    return size


def _declared_input_size(model: nn.Module):
    for module in model.modules():
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict) and len(cfg.get("input_size") or ()) == 3:
            return tuple(int(s) for s in cfg["input_size"])
        config = getattr(module, "config", None)
        image_size = getattr(config, "image_size", None)
        if image_size:
            size = (image_size,) * 2 if isinstance(image_size, int) else tuple(image_size)
            return (int(getattr(config, "num_channels", 3)), *size)
    return None


@dataclass
class _Run:
    """What one forward with hooks saw."""

    outputs: dict[str, object]  # each hooked layer's (last) output
    returned: dict[str, object]  # what its hook handed on instead: a clone, so that later in-place ops spare it
    calls: dict[str, int]
    order: list[str]  # hooked layers in the order their outputs were produced
    logits: object


class HookedModel:
    """Forward-hook capture of ``layers`` (module paths) of ``model``, with the interface of ``TracedModel``."""

    capture = "hook"

    def __init__(self, model: nn.Module, layers, input_size=None):
        self.model = model
        check_hooked_names(model, layers)
        if len(set(layers)) != len(layers):
            raise ValueError(f"duplicate hooked layers in {list(layers)}")
        self.hooked = list(layers)
        self.input_shape = input_shape(model, input_size)  # (C, H, W); prefix() updates it to the images it sees
        self._modules = dict(model.named_modules())
        self._segments: dict[tuple[str, str], HookSegment] = {}
        self._test()

    # ------------------------------------------------------------------ the replace-and-compare test
    def _probe_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        parameter = next(iter(self.model.parameters()), None)
        dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        device = parameter.device if parameter is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(PROBE_SEED)
        x = torch.randn(2, PROBE_BATCH, *self.input_shape, generator=generator, dtype=torch.float64)
        return x[0].to(device=device, dtype=dtype), x[1].to(device=device, dtype=dtype)

    def _test(self) -> None:
        x1, x2 = self._probe_inputs()
        with eval_mode(self.model), torch.no_grad():
            run1, run2 = self._run(x1), self._run(x2)
        self._probe = (x1, run1)
        self._order = {name: i for i, name in enumerate(run1.order)}
        self._is_logits = {name: out is run1.logits for name, out in run1.returned.items()}
        # one tensor, several names (a block and its last submodule): a later hook receives an earlier one's clone
        self._same: dict[str, str] = {}
        group: dict[int, str] = {}
        for name in run1.order:
            self._same[name] = group.get(id(run1.outputs[name]), name)
            group[id(run1.returned[name])] = self._same[name]
        self._positions = {name: isinstance(out, torch.Tensor) and out.dim() >= 3
                           for name, out in run1.outputs.items()}
        reasons = {name: self._cut_failure(name, x1, x2, run1, run2) for name in self.hooked}
        self.layers: dict[str, LayerInfo] = {}
        for name, module in self.model.named_modules():
            if name:
                reason = reasons.get(name, NOT_HOOKED)
                self.layers[name] = LayerInfo(name, type(module).__name__, not reason, reason, capture="hook")

    def _cut_failure(self, name: str, x1, x2, run1: _Run, run2: _Run) -> str:
        """Why ``name`` is not a cut, or ``""`` when it passes the replace-and-compare test."""
        calls = run1.calls[name]
        if calls == 0:
            return "never called in forward()"
        if calls > 1:
            return f"called {calls} times in forward()"
        out1, out2 = run1.outputs[name], run2.outputs[name]
        if not isinstance(out1, torch.Tensor):
            return (f"returns a {type(out1).__name__}, not one tensor; hooks capture single-tensor outputs only "
                    "(hook a submodule that returns a tensor)")
        if out1.shape == out2.shape and torch.equal(out1, out2):
            return "its output is the same on two different inputs, so the replace-and-compare test shows nothing"
        with eval_mode(self.model), torch.no_grad():
            worst = max(_relative_difference(self._replaced_logits(x2, name, out1), run1.logits),
                        _relative_difference(self._replaced_logits(x1, name, out2), run2.logits))
        if worst > CUT_TOLERANCE:
            return (f"replacing its output does not reproduce the logits (relative difference {worst:.2g} > "
                    f"{CUT_TOLERANCE:g} in the replace-and-compare test): the logits are reachable without "
                    "passing through it (e.g. a skip connection)")
        return ""

    def _replaced_logits(self, x, name: str, value):
        with self._hooks({name: _replace(value)}):
            return self.model(x)

    # ------------------------------------------------------------------ running with hooks
    @contextmanager
    def _hooks(self, hooks: dict):
        handles = [self._modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _run(self, images, names=None) -> _Run:
        """One forward that records the outputs (uncloned), calls and order of ``names`` (default: all hooked)."""
        names = self.hooked if names is None else names
        run = _Run({}, {}, dict.fromkeys(names, 0), [], None)

        def recorder(name):
            def hook(module, args, output):
                run.calls[name] += 1
                run.outputs[name] = output
                if name not in run.order:
                    run.order.append(name)
                run.returned[name] = output.clone() if isinstance(output, torch.Tensor) else output
                return run.returned[name]
            return hook

        with self._hooks({name: recorder(name) for name in names}):
            logits = self.model(images)
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"{type(self.model).__name__} must return one tensor of logits, not "
                             f"{type(logits).__name__}; wrap it so that forward() returns the logits")
        run.logits = logits
        return run

    # ------------------------------------------------------------------ the TracedModel interface
    @property
    def cuts(self) -> list[str]:
        return sorted((n for n in self.hooked if self.layers[n].is_cut), key=self._order.__getitem__)

    def can_be_source(self, name: str) -> bool:
        """A cut whose output is not the logits themselves (the classifier is a cut with nothing after it)."""
        info = self.layers.get(name)
        return bool(info is not None and info.is_cut and not self._is_logits.get(name, True))

    def check_layers(self, names) -> list[str]:
        """Validate analysed layer names and return them in forward order; ``ValueError`` lists valid names."""
        if isinstance(names, str):
            names = [names]
        names = list(names)
        valid = ", ".join(self.cuts) or "none"
        if not names:
            raise ValueError(f"no layers given; valid cut layers (hooked) are: {valid}")
        for name in names:
            info = self.layers.get(name)
            if info is None:
                raise ValueError(f"unknown layer {name!r}; valid cut layers (hooked) are: {valid}")
            if not info.is_cut:
                raise ValueError(f"layer {name!r} is not a cut ({info.reason}); valid cut layers (hooked) are: "
                                 f"{valid}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate layers in {names}")
        first: dict[str, str] = {}
        for name in names:
            other = first.setdefault(self._same[name], name)
            if other != name:
                raise ValueError(f"layers {other!r} and {name!r} are the same tensor (one output); "
                                 "analyse only one of them")
        return sorted(names, key=self._order.__getitem__)

    def check_target(self, name: str) -> str:
        return name if name == LOGITS else self.check_layers([name])[0]

    def default_layers(self) -> list[str]:
        """The hooked cuts that can be sources and have positions (an output of 3 or more dimensions), one name
        per tensor."""
        best: dict[str, str] = {}  # per tensor, the outermost name (fewest dots, then shortest), as fx does
        for name in (n for n in self.cuts if self.can_be_source(n) and self._positions[n]):
            kept = best.setdefault(self._same[name], name)
            if (name.count("."), len(name)) < (kept.count("."), len(kept)):
                best[self._same[name]] = name
        distinct = sorted(best.values(), key=self._order.__getitem__)
        if not distinct:
            raise ValueError(f"no default layers for {type(self.model).__name__}: none of its hooked layers "
                             f"({', '.join(self.hooked)}) is a cut with positions before the logits; hooked cuts: "
                             f"{', '.join(self.cuts) or 'none'}")
        return distinct

    def prefix(self, layers) -> "HookPrefix":
        """A callable ``images -> {layer: X^layer, ..., "logits": logits}`` (one forward for all layers)."""
        return HookPrefix(self, tuple(layers))

    def segment(self, source: str, target: str) -> "HookSegment":
        """A callable ``X^source -> X^target`` (``target`` may be ``"logits"``); each call runs the model."""
        key = (source, target)
        if key not in self._segments:
            self.check_layers([source])
            if target != LOGITS:
                self.check_layers([target])
                if self._order[target] <= self._order[source]:
                    raise ValueError(f"target {target!r} does not come after source {source!r}")
            segment = HookSegment(self, source, target)
            segment.check_on_probe()
            self._segments[key] = segment
        return self._segments[key]


class HookPrefix:
    """``images -> {layer: output, ..., "logits": logits}`` of a :class:`HookedModel`. Each hook keeps the layer's
    output and hands a clone on to the rest of the model, so that later in-place operations cannot change what was
    kept while gradients still flow from the logits to it; an output changed in place anyway (through another
    reference) is refused."""

    def __init__(self, owner: HookedModel, layers: tuple[str, ...]):
        owner.check_layers(layers)  # validates the names (forward order is not required of a prefix)
        self.owner, self.layers = owner, layers

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        owner = self.owner
        owner.input_shape = tuple(images.shape[1:])
        captured: dict[str, torch.Tensor] = {}
        versions: dict[str, int] = {}

        def keeper(name):
            def hook(module, args, output):
                if not isinstance(output, torch.Tensor):
                    raise ValueError(f"hooked layer {name!r} returned a {type(output).__name__}, not one tensor")
                if name in captured:
                    raise ValueError(f"hooked layer {name!r} ran more than once in this forward")
                captured[name], versions[name] = output, output._version
                return output.clone()
            return hook

        with owner._hooks({name: keeper(name) for name in self.layers}):
            logits = owner.model(images)
        missing = [name for name in self.layers if name not in captured]
        if missing:
            raise ValueError(f"hooked layers {missing} did not run in this forward")
        changed = [name for name, out in captured.items() if out._version != versions[name]]
        if changed:
            raise ValueError(f"the outputs of hooked layers {changed} were changed in place later in forward(); "
                             "hooks cannot capture them (hook the module that makes the change instead)")
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"{type(owner.model).__name__} must return one tensor of logits, not "
                             f"{type(logits).__name__}")
        return {**captured, LOGITS: logits}


class HookSegment:
    """``X^source -> X^target`` by running the whole model on a zero input of the last images' shape, with
    ``source``'s output replaced by ``X^source``; the forward stops once ``target`` has run. Only the part after
    ``source`` records gradients. ``scale_invariant``: whether a LayerNorm / GroupNorm / RMSNorm / InstanceNorm
    module ran between the two on the test input (functional normalisations are not seen)."""

    def __init__(self, owner: HookedModel, source: str, target: str):
        self.owner, self.source, self.target = owner, source, target
        self.scale_invariant = any(isinstance(m, SCALE_INVARIANT_MODULES) for m in self._modules_between())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.owner
        placeholder = torch.zeros(x.shape[0], *owner.input_shape, dtype=x.dtype, device=x.device)
        grad = torch.is_grad_enabled()
        result: dict[str, torch.Tensor] = {}

        def replace(module, args, output):
            if not isinstance(output, torch.Tensor) or output.shape != x.shape:
                raise ValueError(f"segment {self.source!r} -> {self.target!r}: the input has shape "
                                 f"{tuple(x.shape)} but {self.source!r} produced "
                                 f"{tuple(getattr(output, 'shape', ()))} on images of shape {owner.input_shape}")
            torch.set_grad_enabled(grad)  # record gradients from here on only
            return x.clone()  # a later in-place op must not write into the caller's tensor

        def stop(module, args, output):
            result["out"] = output
            raise _Stop

        hooks = {self.source: replace}
        if self.target != LOGITS:
            hooks[self.target] = stop
        try:
            with owner._hooks(hooks), torch.no_grad():
                result.setdefault("out", owner.model(placeholder))
        except _Stop:
            pass
        finally:
            torch.set_grad_enabled(grad)
        return result["out"]

    def check_on_probe(self) -> None:
        """``ValueError`` unless the segment reproduces the target on the test input (a target that reads the
        input around ``source``)."""
        owner = self.owner
        x1, run1 = owner._probe
        with eval_mode(owner.model), torch.no_grad():
            inputs = owner.input_shape
            owner.input_shape = tuple(x1.shape[1:])
            try:
                if self.target == LOGITS:
                    return  # the cut test itself
                out = self(run1.outputs[self.source])
            finally:
                owner.input_shape = inputs
        worst = _relative_difference(out, run1.outputs[self.target])
        if worst > CUT_TOLERANCE:
            raise ValueError(f"the segment {self.source!r} -> {self.target!r} does not reproduce {self.target!r} "
                             f"(relative difference {worst:.2g}): {self.target!r} reads the input around "
                             f"{self.source!r}, which is not a cut for it")

    def _modules_between(self) -> list[nn.Module]:
        """Modules whose forward starts after ``source``'s output and ends by ``target``'s, on the test input."""
        owner, events = self.owner, []
        x1, _ = owner._probe
        started: set[int] = set()

        def pre(module, args):
            events.append(("start", module))

        def post(module, args, output):
            events.append(("end", module))

        handles = [m.register_forward_pre_hook(pre) for m in owner.model.modules()]
        handles += [m.register_forward_hook(post) for m in owner.model.modules()]
        try:
            with eval_mode(owner.model), torch.no_grad():
                owner.model(x1)
        finally:
            for handle in handles:
                handle.remove()
        source, target = owner._modules[self.source], owner._modules.get(self.target)
        begin = next(i for i, (kind, m) in enumerate(events) if kind == "end" and m is source)
        end = next((i for i, (kind, m) in enumerate(events) if kind == "end" and m is target and i > begin),
                   len(events))
        inside = []
        for kind, module in events[begin + 1:end + 1]:
            if kind == "start":
                started.add(id(module))
            elif id(module) in started:
                inside.append(module)
        return inside


def _replace(value: torch.Tensor):
    def hook(module, args, output):
        return value.clone()
    return hook


def _relative_difference(a, b) -> float:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return float("inf")
    scale = b.abs().max().clamp_min(torch.finfo(b.dtype).tiny)
    return float((a - b).abs().max() / scale)

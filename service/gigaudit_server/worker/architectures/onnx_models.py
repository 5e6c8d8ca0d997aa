"""Family ``onnx``: an uploaded ``.onnx`` file, parsed as data and converted to torch with onnx2torch.

Before converting, the graph is normalised (``Identity`` of initializers and ``Constant`` nodes folded into
initializers, as torch.onnx.export emits them and onnx2torch does not resolve them) and every operator that
onnx2torch cannot convert is listed in one ``ValueError``. Tensors stored outside the file are refused.
"""
from __future__ import annotations

from torch import nn

from gigaudit_server.worker.architectures.options import no_options

FAMILY = "onnx"
WEIGHTS_FORMAT = "onnx"
NAME = "onnx"
_DEFAULT_DOMAINS = ("", "ai.onnx")
_FOLDED_CONSTANTS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def names() -> list[str]:
    """``["onnx"]`` where onnx and onnx2torch are installed (the server extra pins them), else none."""
    import importlib.util

    return [NAME] if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnx2torch") else []


def source(name: str) -> str:
    import importlib.metadata

    return f"onnx {importlib.metadata.version('onnx')}, onnx2torch {importlib.metadata.version('onnx2torch')}"


def describe(name: str) -> str:
    return "An ONNX model (the .onnx file, weights included), converted to torch with onnx2torch."


def build(name: str, num_classes: int, options: dict) -> nn.Module:
    raise ValueError("an onnx architecture is its uploaded .onnx file: register the model (UploadModel) and list "
                     "the layers of models/{model}")


def parse(data: bytes):
    """The ``onnx.ModelProto`` of ``data``, checked; ``ValueError`` "not an ONNX model" for anything else."""
    import onnx
    from google.protobuf.message import DecodeError

    if data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":
        raise ValueError("not an ONNX model: the file is a zip archive or a Python pickle (torch.save?); export "
                         "with torch.onnx.export")
    try:
        proto = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"not an ONNX model: the file does not parse as an ONNX ModelProto ({exc})") from None
    if not proto.graph.node or not proto.opset_import:
        raise ValueError("not an ONNX model: no graph nodes or operator sets in the file")
    external = [t.name for t in _tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ValueError(f"the ONNX model keeps tensors in external files ({', '.join(external[:5])}); save it with "
                         "every tensor inside the .onnx file (onnx.save(model, path, save_as_external_data=False))")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"not a valid ONNX model: {str(exc).splitlines()[0][:300]}") from None
    return proto


def normalise(proto):
    """Fold ``Constant`` nodes and ``Identity`` nodes of initializers into initializers (in a copy)."""
    import onnx
    from onnx import numpy_helper

    folded = onnx.ModelProto()
    folded.CopyFrom(proto)
    graph = folded.graph
    outputs = {o.name for o in graph.output}
    constants = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        target = node.output[0] if len(node.output) == 1 else None
        tensor = None
        if target and target not in outputs and node.op_type == "Identity" and node.domain in _DEFAULT_DOMAINS \
                and node.input and node.input[0] in constants:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(constants[node.input[0]])
        elif target and target not in outputs and node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS \
                and len(node.attribute) == 1 and node.attribute[0].name in _FOLDED_CONSTANTS:
            value = onnx.helper.get_attribute_value(node.attribute[0])
            tensor = onnx.TensorProto()
            if isinstance(value, onnx.TensorProto):
                tensor.CopyFrom(value)
            else:
                tensor.CopyFrom(numpy_helper.from_array(_array(value)))
        if tensor is None:
            kept.append(node)
            continue
        tensor.name = target
        constants[target] = tensor
        graph.initializer.append(tensor)
    del graph.node[:]
    graph.node.extend(kept)
    return folded


def unsupported_ops(proto) -> list[tuple[str, str, int]]:
    """``(domain, op_type, opset)`` of every operator (subgraphs included) that onnx2torch cannot convert."""
    from onnx2torch.node_converters import get_converter

    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    missing = set()
    for node in _nodes(proto.graph):
        domain = "" if node.domain == "ai.onnx" else node.domain
        version = opsets.get(domain, 0)
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            missing.add((domain, node.op_type, version))
    return sorted(missing)


def input_size(proto) -> dict | None:
    """``{height, width}`` of the first graph input when it is a static N x C x H x W image, else None."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].dim_value > 0 and dims[3].dim_value > 0:
        return {"height": int(dims[2].dim_value), "width": int(dims[3].dim_value)}
    return None


def convert(data: bytes) -> tuple[nn.Module, dict | None]:
    """``(module, input size)`` of an ONNX file; ``ValueError`` naming every unsupported operator."""
    import importlib.metadata

    import onnx2torch

    proto = normalise(parse(data))
    missing = unsupported_ops(proto)
    if missing:
        listed = ", ".join(f"{op} (domain {domain or 'ai.onnx'!r}, opset {opset})" for domain, op, opset in missing)
        hint = " (Identity from opset 19 on is among them: export with opset_version=17)" \
            if any(op == "Identity" and opset >= 19 for _, op, opset in missing) else \
            " (exporting with another opset_version, e.g. 17, or without those operators may help)"
        raise ValueError(f"the ONNX model uses operators that onnx2torch "
                         f"{importlib.metadata.version('onnx2torch')} cannot convert: {listed}{hint}")
    try:
        module = onnx2torch.convert(proto)
    except (NotImplementedError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(f"the ONNX model cannot be converted to torch ({type(exc).__name__}: {exc})") from None
    return module, input_size(proto)


def _nodes(graph):
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _nodes(sub)


def _tensors(proto):
    import onnx

    yield from proto.graph.initializer
    for node in _nodes(proto.graph):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from attribute.tensors


def _array(value):
    import numpy as np

    if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
        return np.asarray(value, dtype=np.float32)
    if isinstance(value, int) or isinstance(value, list):
        return np.asarray(value, dtype=np.int64)
    return np.asarray(value)

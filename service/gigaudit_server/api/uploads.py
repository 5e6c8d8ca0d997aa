"""Client-streaming uploads: the header message, then the chunks; and the torch-free checks of model files.

The safetensors check runs on the stream itself, before anything is stored: a file is 8 bytes of little-endian
header length, that many bytes of a JSON object ``{tensor: {dtype, shape, data_offsets}, "__metadata__": …}``, then
the tensor data. Pickles (``torch.save``) and zip archives (TorchScript, ``.pt2``, new ``torch.save``) are named as
such, since loading them runs code. Hugging Face archives (:func:`checked_hf_archive`) and ONNX files
(:func:`checked_onnx`) have their own checks; :func:`checked_weights` picks one by an architecture's weights format.
"""
from __future__ import annotations

import json
import math
import struct
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from gigaudit_server.api import errors
from gigaudit_server.storage.hf_archives import read_hf_archive

MAX_HEADER_BYTES = 32 * 1024**2  # the safetensors library allows 100 MB, the Hugging Face Hub 25 MB
MAX_HEADER_VALUES = 1_000_000  # JSON values in a header (~100 000 tensors): bounds what parsing it allocates
HF_MAX_EXPANSION = 8  # a zip's model.safetensors may declare at most this many times the archive's size
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def split_upload(requests: Iterable, header_field: str = "header") -> tuple[object, Iterator[bytes]]:
    """``(header, chunks)`` of an upload stream whose first message carries the header and the rest ``chunk``s."""
    requests = iter(requests)
    first = next(requests, None)
    if first is None or first.WhichOneof("payload") != header_field:
        raise errors.invalid_argument({header_field: "the first message of an upload must carry the header"})

    def chunks() -> Iterator[bytes]:
        for request in requests:
            if request.WhichOneof("payload") != "chunk":
                raise errors.invalid_argument({header_field: "only the first message may carry a header"})
            yield request.chunk

    return getattr(first, header_field), chunks()


def sniff_format(head: bytes) -> str | None:
    """A name for well-known non-safetensors formats (pickle, zip), else None."""
    if head[:1] == b"\x80" and head[1:2] in {bytes([v]) for v in range(2, 6)}:
        return "a Python pickle (torch.save)"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save, TorchScript or .pt2)"
    return None


def parse_safetensors_header(header: bytes | bytearray, data_size: int) -> dict[str, dict]:
    """The tensor table of a safetensors header; ``ValueError`` when it is malformed or points past the data."""
    values = header.count(b",") + header.count(b"{") + header.count(b"[") + 1  # at least the JSON values in it
    if values > MAX_HEADER_VALUES:
        raise ValueError(f"weights are not safetensors: the header holds up to {values} JSON values, more than the "
                         f"limit of {MAX_HEADER_VALUES}")
    try:
        table = json.loads(header)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, too many digits, nesting
        raise ValueError(f"weights are not safetensors: the header is not JSON ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
    if not isinstance(table, dict):
        raise ValueError("weights are not safetensors: the header is not a JSON object")
    tensors = {k: v for k, v in table.items() if k != "__metadata__"}
    for name, info in tensors.items():
        if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES \
                or not isinstance(info.get("shape"), list) or not isinstance(info.get("data_offsets"), list) \
                or not all(isinstance(d, int) and d >= 0 for d in info["shape"]) \
                or len(info["data_offsets"]) != 2 or not all(isinstance(o, int) for o in info["data_offsets"]):
            raise ValueError(f"weights are not safetensors: bad entry for tensor {name!r}")
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= data_size or end - begin != math.prod(info["shape"]) * DTYPE_BYTES[info["dtype"]]:
            raise ValueError(f"weights are not safetensors: tensor {name!r} has inconsistent data offsets "
                             f"{info['data_offsets']} (data section: {data_size} bytes)")
    return tensors


def checked_safetensors(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pass ``chunks`` (a file of ``size`` bytes) through, refusing with ``ValueError`` when it is not safetensors.

    The header is collected in one buffer that grows in place (linear in its size) and parsed once complete.
    """
    head, wanted = bytearray(), 8  # wanted: the 8-byte length, then the length and the header
    for chunk in chunks:
        if head is not None:
            view = memoryview(chunk)
            taken = min(len(view), wanted - len(head))
            head += view[:taken]
            if wanted == 8 and len(head) == 8:
                wanted = 8 + _header_length(bytes(head), size)
                head += view[taken:taken + wanted - 8]
            if len(head) == wanted > 8:
                del head[:8]
                parse_safetensors_header(head, size - wanted)
                head = None
        yield chunk
    if head is not None:
        raise ValueError(f"weights are not safetensors: the stream ended inside the header ({len(head)} bytes)")


def _header_length(first8: bytes, size: int) -> int:
    """The header length that a file of ``size`` bytes starts with; ``ValueError`` for other formats."""
    other = sniff_format(first8)
    if other:
        raise ValueError(f"weights are {other}; only safetensors is accepted (loading those runs code), "
                         "e.g. safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")
    (length,) = struct.unpack("<Q", first8)
    if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"weights are not safetensors: header length {length} does not fit the {size}-byte file "
                         f"(at most {MAX_HEADER_BYTES} bytes)")
    return length


def check_safetensors_file(stream: BinaryIO, size: int, what: str = "weights") -> None:
    """``ValueError`` when the ``size``-byte binary ``stream`` does not start with a valid safetensors header."""
    first8 = stream.read(8)
    if len(first8) < 8:
        raise ValueError(f"{what} are not safetensors: {len(first8)} bytes")
    length = _header_length(first8, size)
    header = stream.read(length)
    if len(header) < length:
        raise ValueError(f"{what} are not safetensors: the file ends inside the header")
    parse_safetensors_header(header, size - 8 - length)


def checked_hf_archive(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pass ``chunks`` through; at the end of the stream, ``ValueError`` unless they are a Hugging Face archive (an
    uncompressed tar or a zip of config.json and model.safetensors, optionally preprocessor_config.json;
    :mod:`gigaudit_server.storage.hf_archives`) whose model.safetensors has a valid header. The stream is spooled
    to a temporary file for the check (a zip's directory is at its end)."""
    with tempfile.TemporaryFile(prefix="gigaudit-upload-") as spool:
        for chunk in chunks:
            spool.write(chunk)
            yield chunk
        spool.seek(0)
        archive = read_hf_archive(spool)
        if archive.weights_size > size * HF_MAX_EXPANSION:
            raise ValueError(f"model.safetensors holds {archive.weights_size} bytes, more than {HF_MAX_EXPANSION} "
                             f"times the {size}-byte archive")
        with archive.open_weights() as weights:
            check_safetensors_file(weights, archive.weights_size, "model.safetensors")


def checked_onnx(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pass ``chunks`` through, refusing with ``ValueError`` ("not an ONNX model") a stream that does not start like
    an ONNX ModelProto (protobuf): zips and pickles are named. The worker parses the whole file."""
    head = bytearray()
    checked = False
    for chunk in chunks:
        if not checked:
            head += chunk[:16 - len(head)]
            if len(head) >= min(16, size):
                _check_onnx_head(bytes(head))
                checked = True
        yield chunk
    if not checked:
        _check_onnx_head(bytes(head))


# ModelProto's fields: number -> protobuf wire type (0 varint, 2 length-delimited)
_ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _check_onnx_head(head: bytes) -> None:
    other = sniff_format(head)
    if other:
        raise ValueError(f"not an ONNX model: the file is {other}; export with torch.onnx.export (and never upload "
                         "pickles: loading them runs code)")
    tag, shift = 0, 0
    for i, byte in enumerate(head[:5]):
        tag |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise ValueError("not an ONNX model: the file does not start with a protobuf field")
    field, wire = tag >> 3, tag & 7
    if _ONNX_MODEL_FIELDS.get(field) != wire:
        raise ValueError(f"not an ONNX model: the file starts with bytes {head[:8].hex()}, not an ONNX ModelProto "
                         "field")


def checked_weights(weights_format: str, chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The checking pass-through of ``chunks`` for an architecture's ``weights_format``."""
    checkers = {"safetensors": checked_safetensors, "huggingface": checked_hf_archive, "onnx": checked_onnx}
    if weights_format not in checkers:
        raise ValueError(f"unknown weights format {weights_format!r}; valid formats: {', '.join(checkers)}")
    return checkers[weights_format](chunks, size)

"""Client-streaming uploads: the header message, then the chunks; and the torch-free safetensors check.

The safetensors check runs on the stream itself, before anything is stored: a file is 8 bytes of little-endian
header length, that many bytes of a JSON object ``{tensor: {dtype, shape, data_offsets}, "__metadata__": …}``, then
the tensor data. Pickles (``torch.save``) and zip archives (TorchScript, ``.pt2``, new ``torch.save``) are named as
such, since loading them runs code.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator

from gigaudit_server.api import errors

MAX_HEADER_BYTES = 32 * 1024**2  # the safetensors library allows 100 MB, the Hugging Face Hub 25 MB
MAX_HEADER_VALUES = 1_000_000  # JSON values in a header (~100 000 tensors): bounds what parsing it allocates
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

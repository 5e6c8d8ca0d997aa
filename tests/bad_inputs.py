"""Bad inputs of issue 8 §4 and §7, shared by the adversarial suite (tests/security) and the fuzz suite: broken
archives, a class folder whose name is not UTF-8, forged page tokens, the reserved id ``index``."""
from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import zipfile


def png(side: int = 8) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def image_tar(n: int = 4) -> bytes:
    """A valid tar of ``n`` PNGs in two class folders."""
    return _tar({f"class{i % 2}/{i}.png": png() for i in range(n)})


def truncated_tar() -> bytes:
    """A tar cut inside its second member (each PNG is padded to 512-byte blocks, so the cut is inside data)."""
    data = image_tar(4)
    return data[:512 * 3 + 100]


def truncated_tar_gz() -> bytes:
    """A gzip-compressed tar cut in the middle of the compressed stream."""
    data = gzip.compress(image_tar(4), mtime=0)
    return data[:len(data) // 2]


def corrupt_zip() -> bytes:
    """A zip whose central directory is intact but whose second member's compressed data is overwritten."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("class0/0.png", png())
        archive.writestr("class1/1.png", png(64))
    data = bytearray(out.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        second = archive.infolist()[1]
    start = second.header_offset + 30 + len(second.filename.encode())  # the local header is 30 bytes + the name
    for i in range(start, start + min(second.compress_size, 40)):
        data[i] ^= 0x5A
    return bytes(data)


def truncated_zip() -> bytes:
    """A zip without its central directory."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("class0/0.png", png())
        archive.writestr("class1/1.png", png())
    data = out.getvalue()
    return data[:len(data) - 60]


def non_utf8_class_tar(compressed: bool = False) -> bytes:
    """A tar with a valid class folder and one whose name is the single byte 0xff (not UTF-8)."""
    data = _tar({"class0/0.png": png(), "\udcff/1.png": png()})  # surrogateescape: the raw byte 0xff
    assert b"\xff/1.png" in data
    return gzip.compress(data, mtime=0) if compressed else data


BAD_ARCHIVES = {
    "truncated-tar": truncated_tar,
    "truncated-tar-gz": truncated_tar_gz,
    "corrupt-zip": corrupt_zip,
    "truncated-zip": truncated_zip,
}


def _b64(text: str | bytes) -> str:
    return base64.urlsafe_b64encode(text.encode() if isinstance(text, str) else text).decode()


# Tokens no listing ever hands out: garbage, wrong types, negative or overflowing offsets, tokens shaped like those
# of another listing, non-UTF-8 bytes.
FORGED_PAGE_TOKENS = [
    "nonsense",
    "%%%",
    _b64("not json"),
    _b64("null"),
    _b64("[]"),
    _b64('"x"'),
    _b64("[null, null]"),
    _b64('[[1], {"a": 2}]'),
    _b64('{"o": -1, "s": "models"}'),
    _b64('{"o": 1e999, "s": "models"}'),
    _b64('{"o": [], "s": {}}'),
    _b64('{"o": 0, "s": "nope"}'),
    _b64('["x", "y"]'),
    _b64("[1, 2, 3]"),
    _b64(b"\xff\xfe\xfd"),
    "A" * 4000,
]

# The reserved id: it matches the id rule, but keys.collection() uses it.
RESERVED_ID = "index"


def forged_token_ids() -> list[str]:
    return [f"token{i}" for i in range(len(FORGED_PAGE_TOKENS))]


def json_token(value) -> str:
    return _b64(json.dumps(value))

"""Content-addressed artifact store on any fsspec URL (``file://`` by default, ``s3://…`` in a cluster).

An object lives at ``<root>/<kind>/<sha[:2]>/<sha>`` where ``sha`` is the sha256 of its bytes. Writes go to a
temporary object first and are moved into place only after their size and hash check out, so a failed or
truncated upload leaves nothing behind and an object already stored is never changed.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import IO

from fsspec.core import url_to_fs

KINDS = ("weights", "datasets", "concepts", "graphs", "exemplars")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TMP = ".tmp"


class ArtifactStore:
    """Objects by kind and sha256 under one fsspec URL."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.root = url_to_fs(url)
        self.root = self.root.rstrip("/")

    # ------------------------------------------------------------------ paths
    def path(self, kind: str, sha: str) -> str:
        """The object's path inside the filesystem; ``ValueError`` for an unknown kind or a malformed sha."""
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}; valid kinds are: {', '.join(KINDS)}")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ValueError(f"not a sha256 (64 lowercase hex digits): {sha!r}")
        return f"{self.root}/{kind}/{sha[:2]}/{sha}"

    def local_path(self, kind: str, sha: str) -> str:
        """The object's path on this machine (``file://`` stores only)."""
        if "file" not in _protocols(self.fs):
            raise ValueError(f"{self.url!r} is not a local store; read the object with open() instead")
        path = self.path(kind, sha)
        if not self.fs.exists(path):
            raise KeyError(f"no {kind} object {sha}")
        return path

    # ------------------------------------------------------------------ writes
    def put_stream(
        self,
        kind: str,
        chunks: Iterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[str, int]:
        """Store the concatenated ``chunks``; returns ``(sha256, size)``.

        ``ValueError`` when the data exceeds ``max_bytes``, or its size or hash differs from the expected one;
        then nothing is stored and no existing object is touched.
        """
        self.path(kind, "0" * 64)  # validates kind
        if expected_sha256 is not None:
            expected_sha256 = expected_sha256.lower()
            self.path(kind, expected_sha256)  # validates the format
        tmp_dir = f"{self.root}/{_TMP}"
        self.fs.makedirs(tmp_dir, exist_ok=True)
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open(tmp, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ValueError(f"{kind} object exceeds the limit of {max_bytes} bytes")
                    if expected_size is not None and size > expected_size:
                        raise ValueError(f"received more than the announced {expected_size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            if expected_size is not None and size != expected_size:
                raise ValueError(f"received {size} bytes but {expected_size} were announced (truncated upload?)")
            if expected_sha256 is not None and sha != expected_sha256:
                raise ValueError(f"sha256 mismatch: announced {expected_sha256}, received {sha} ({size} bytes)")
            final = self.path(kind, sha)
            if not self.fs.exists(final):  # same sha, same bytes: an existing object is left as it is
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(tmp, final)
            return sha, size
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def put_bytes(self, kind: str, data: bytes) -> str:
        return self.put_stream(kind, [data])[0]

    # ------------------------------------------------------------------ reads
    def open(self, kind: str, sha: str) -> IO[bytes]:
        path = self.path(kind, sha)
        if not self.fs.exists(path):
            raise KeyError(f"no {kind} object {sha}")
        return self.fs.open(path, "rb")

    def read(self, kind: str, sha: str) -> bytes:
        with self.open(kind, sha) as f:
            return f.read()

    def exists(self, kind: str, sha: str) -> bool:
        return self.fs.exists(self.path(kind, sha))

    def delete(self, kind: str, sha: str) -> None:
        """Remove an object; ``KeyError`` when absent."""
        path = self.path(kind, sha)
        if not self.fs.exists(path):
            raise KeyError(f"no {kind} object {sha}")
        self.fs.rm(path)


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)

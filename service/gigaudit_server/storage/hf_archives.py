"""Hugging Face model archives, torch-free: an uncompressed tar or a zip of what ``save_pretrained`` writes.

Members: ``config.json`` and ``model.safetensors``, optionally ``preprocessor_config.json``, all at the top or all in
one folder. Nothing else is accepted: no links, devices, other files, absolute paths or ``..``. A config that asks
for remote code (``auto_map``, ``trust_remote_code``, ``custom_pipelines``) is refused. The API checks an upload with
:func:`read_hf_archive` before registering it; workers read the stored artifact with it again.
"""
from __future__ import annotations

import json
import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

REQUIRED = ("config.json", "model.safetensors")
ALLOWED = (*REQUIRED, "preprocessor_config.json")
MAX_JSON_BYTES = 1024**2
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines")
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZ": "bzip2", b"\xfd7": "xz", b"(\xb5": "zstd"}


@dataclass(frozen=True)
class HfArchive:
    """The checked contents of an archive: both JSON files parsed, the weights left in the archive."""
    config: dict
    preprocessor: dict | None
    weights_size: int
    open_weights: Callable[[], BinaryIO]  # a binary stream of model.safetensors (valid while the archive file is)


def read_hf_archive(file: BinaryIO) -> HfArchive:
    """Check and read an archive from a seekable binary ``file``; ``ValueError`` saying what is wrong."""
    head = file.read(4)
    file.seek(0)
    if head[:2] in _COMPRESSED:
        raise ValueError(f"the Hugging Face archive is {_COMPRESSED[head[:2]]}-compressed; upload an uncompressed "
                         f"tar or a zip of {', '.join(REQUIRED)}")
    members = _zip_members(file) if head == b"PK\x03\x04" else _tar_members(file)
    missing = [name for name in REQUIRED if name not in members]
    if missing:
        raise ValueError(f"the Hugging Face archive lacks {', '.join(missing)} (it must hold {', '.join(REQUIRED)}, "
                         "as save_pretrained writes them)")
    config = _json(members["config.json"], "config.json")
    check_config(config)
    preprocessor = _json(members["preprocessor_config.json"], "preprocessor_config.json") \
        if "preprocessor_config.json" in members else None
    size, opener = members["model.safetensors"]
    return HfArchive(config, preprocessor, size, opener)


def check_config(config: dict) -> None:
    """``ValueError`` for a config that asks for remote code or names no ``model_type``."""
    remote = [key for key in REMOTE_CODE_KEYS if key in config]
    if remote:
        raise ValueError(f"config.json asks for remote code ({', '.join(remote)}): gigaudit never runs code from an "
                         "upload (trust_remote_code is always off); use a model type built into transformers")
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise ValueError("config.json names no model_type (e.g. \"vit\"); save it with save_pretrained")


def _member_name(name: str) -> str:
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        raise ValueError(f"the Hugging Face archive holds a member with an unsafe path: {name!r}")
    return posixpath.normpath(name)


def _canonical(files: dict[str, tuple[int, Callable[[], BinaryIO]]]) -> dict[str, tuple[int, Callable]]:
    """Members by their name within the archive's one optional top folder; ``ValueError`` for anything else."""
    folders = {posixpath.dirname(name) for name in files}
    if len(folders) > 1 or any("/" in folder for folder in folders):
        raise ValueError(f"the Hugging Face archive must hold its files at the top or in one folder, not "
                         f"{', '.join(sorted(files)[:5])}")
    named = {posixpath.basename(name): member for name, member in files.items()}
    extra = sorted(set(named) - set(ALLOWED))
    if extra:
        raise ValueError(f"the Hugging Face archive holds {', '.join(extra[:5])}; only {', '.join(ALLOWED)} are "
                         "accepted")
    return named


def _tar_members(file: BinaryIO) -> dict[str, tuple[int, Callable]]:
    try:
        archive = tarfile.open(fileobj=file, mode="r:")
        entries = archive.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(f"the Hugging Face upload is neither a tar nor a zip archive ({exc})") from None
    files = {}
    for entry in entries:
        name = _member_name(entry.name)
        if entry.isdir():
            continue
        if not entry.isreg():
            raise ValueError(f"the Hugging Face archive holds {name!r}, which is not a regular file (links and "
                             "devices are refused)")
        if name in files:
            raise ValueError(f"the Hugging Face archive holds {name!r} twice")
        files[name] = (entry.size, lambda entry=entry: archive.extractfile(entry))
    return _canonical(files)


def _zip_members(file: BinaryIO) -> dict[str, tuple[int, Callable]]:
    try:
        archive = zipfile.ZipFile(file)
        entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"the Hugging Face upload is not a valid zip archive ({exc})") from None
    files = {}
    for entry in entries:
        name = _member_name(entry.filename)
        if entry.is_dir():
            continue
        if stat.S_IFMT(entry.external_attr >> 16) not in (0, stat.S_IFREG):
            raise ValueError(f"the Hugging Face archive holds {name!r}, which is not a regular file (links are "
                             "refused)")
        if entry.flag_bits & 0x1:
            raise ValueError(f"the Hugging Face archive's {name!r} is encrypted")
        if name in files:
            raise ValueError(f"the Hugging Face archive holds {name!r} twice")
        files[name] = (entry.file_size, lambda entry=entry: archive.open(entry))
    return _canonical(files)


def _json(member: tuple[int, Callable[[], BinaryIO]], name: str) -> dict:
    size, opener = member
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{name} holds {size} bytes, more than the limit of {MAX_JSON_BYTES}")
    with opener() as stream:
        raw = stream.read(MAX_JSON_BYTES + 1)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{name} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not a JSON object")
    return value

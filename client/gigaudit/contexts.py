"""Named server contexts, like kubectl's: server, token and TLS in a YAML file under the user's config directory.

The file is `$GIGAUDIT_CONFIG`, else `<platformdirs user_config_dir>/gigaudit/config.yaml` (Linux:
`~/.config/gigaudit/config.yaml`), written with mode 0600 because it may hold tokens:

    current-context: prod
    contexts:
      prod: {server: audit.example.com:443, token: s3cr3t, tls: true}
      local: {server: 127.0.0.1:50051}

A connection setting comes from the flag, else the environment (GIGAUDIT_SERVER, GIGAUDIT_TOKEN, GIGAUDIT_TLS_CA,
GIGAUDIT_TLS), else the context named by `--context` / GIGAUDIT_CONTEXT / `current-context`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

FIELDS = ("server", "token", "tls", "tls-ca")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def config_path() -> Path:
    if os.environ.get("GIGAUDIT_CONFIG"):
        return Path(os.environ["GIGAUDIT_CONFIG"])
    import platformdirs

    return Path(platformdirs.user_config_dir("gigaudit")) / "config.yaml"


def load() -> dict:
    """The config file's content ({"contexts": {}, "current-context": None} when there is none)."""
    path = config_path()
    data = {}
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
            raise ValueError(f"{path}: expected 'contexts:' (a mapping) and 'current-context:'")
    data.setdefault("contexts", {})
    data.setdefault("current-context", None)
    return data


def save(data: dict) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(path.with_suffix(".tmp"), path)
    return path


def set_context(name: str, **fields) -> Path:
    """Create or update the context `name` with the given (non-None) fields; the first one becomes current."""
    if not NAME.match(name):
        raise ValueError(f"a context name is 1-63 characters of [A-Za-z0-9._-], got {name!r}")
    data = load()
    context = dict(data["contexts"].get(name) or {})
    for key, value in fields.items():
        key = key.replace("_", "-")
        if key not in FIELDS:
            raise ValueError(f"a context has {', '.join(FIELDS)}, not {key!r}")
        if value is not None:
            context[key] = str(value) if key == "tls-ca" else value
    data["contexts"][name] = context
    if not data["current-context"]:
        data["current-context"] = name
    return save(data)


def use_context(name: str) -> Path:
    data = load()
    if name not in data["contexts"]:
        raise ValueError(f"no context {name!r} in {config_path()}"
                         + (f"; there are: {', '.join(sorted(data['contexts']))}" if data["contexts"] else ""))
    data["current-context"] = name
    return save(data)


def delete_context(name: str) -> Path:
    data = load()
    if data["contexts"].pop(name, None) is None:
        raise ValueError(f"no context {name!r} in {config_path()}")
    if data["current-context"] == name:
        data["current-context"] = None
    return save(data)


@dataclass
class Connection:
    """Where and how to connect; `source` says where `server` came from (for messages)."""

    server: str | None
    token: str | None
    tls: bool | Path | None
    source: str = ""


def resolve(server: str | None = None, token: str | None = None, tls_ca: Path | None = None,
            tls: bool | None = None, context: str | None = None) -> Connection:
    """Flags over the environment over the context (see the module docstring)."""
    env = os.environ
    name = context or env.get("GIGAUDIT_CONTEXT")
    data = load() if (name or config_path().is_file()) else {"contexts": {}, "current-context": None}
    name = name or data["current-context"]
    ctx = {}
    if name:
        if name not in data["contexts"]:
            raise ValueError(f"no context {name!r} in {config_path()} (`gigaudit config get-contexts`)")
        ctx = data["contexts"][name] or {}
    source = "--server" if server else "GIGAUDIT_SERVER" if env.get("GIGAUDIT_SERVER") else \
        f"context {name}" if ctx.get("server") else ""
    server = server or env.get("GIGAUDIT_SERVER") or ctx.get("server")
    token = token or env.get("GIGAUDIT_TOKEN") or ctx.get("token")
    ca = tls_ca or (Path(env["GIGAUDIT_TLS_CA"]) if env.get("GIGAUDIT_TLS_CA") else None) \
        or (Path(ctx["tls-ca"]).expanduser() if ctx.get("tls-ca") else None)
    use_tls = tls if tls is not None else _truthy(env.get("GIGAUDIT_TLS")) if env.get("GIGAUDIT_TLS") else \
        bool(ctx.get("tls"))
    return Connection(server, token, ca if ca is not None else (True if use_tls else None), source)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")

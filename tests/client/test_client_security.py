"""AuditClient's token and TLS options against a server started with a tokens file and a certificate."""
import hashlib
import socket
import subprocess
import sys
import time

import grpc
import pytest

from gigaudit import AuditClient, GigauditError

pytest.importorskip("gigaudit_server")


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secure")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    tokens = {"admin": "admin-secret-token", "auditor": "auditor-secret-token"}
    (tmp / "tokens").write_text("".join(f"{role}-user {role} {hashlib.sha256(t.encode()).hexdigest()}\n"
                                        for role, t in tokens.items()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "gigaudit_server", "serve", "--host", "127.0.0.1", "--port",
                               str(port), "--store", (tmp / "store").as_uri(), "--data-dir", str(tmp / "redis"),
                               "--tls-cert-file", str(tmp / "cert.pem"), "--tls-key-file", str(tmp / "key.pem"),
                               "--auth-tokens-file", str(tmp / "tokens")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"localhost:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with AuditClient(target, token=tokens["auditor"], tls=tmp / "cert.pem", timeout=2) as c:
                    c.list_architectures()
                break
            except GigauditError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield target, tmp / "cert.pem", tokens
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_tokens_and_roles(secure_server):
    target, ca, tokens = secure_server
    for token in (None, "wrong-token"):
        with AuditClient(target, token=token, tls=ca) as c, pytest.raises(GigauditError) as exc:
            c.list_models()
        assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in exc.value.message
    with AuditClient(target, token=tokens["auditor"], tls=ca) as c:
        assert c.list_models() == []
        with pytest.raises(GigauditError) as exc:
            c.delete_model("anything")
        assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED
    with AuditClient(target, token=tokens["admin"], tls=ca) as c, pytest.raises(GigauditError) as exc:
        c.delete_model("anything")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND  # allowed, and there is no such model


def test_plaintext_client_cannot_talk_to_a_tls_server(secure_server):
    target, _, tokens = secure_server
    with AuditClient(target, token=tokens["admin"], timeout=3, retries=1) as c, pytest.raises(GigauditError) as exc:
        c.list_models()
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ValueError, match="tls must be"):
        AuditClient(target, tls=42)

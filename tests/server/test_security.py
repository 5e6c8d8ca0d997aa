"""Security over real gRPC on loopback and a real Redis: tokens and roles, TLS and mTLS, the probe port, limits."""
from __future__ import annotations

import logging
import secrets

import grpc
import pytest
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pki import CertificateAuthority

import api_harness as h
from api_harness import store  # noqa: F401 (fixture)
from gigaudit import AuditClient
from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit_server import probes, tls
from gigaudit_server.api import auth

ADMIN, AUDITOR, OTHER_AUDITOR = (secrets.token_urlsafe(24) for _ in range(3))


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# name role sha256\nops admin {auth.hash_token(ADMIN)}\n"
                    f"alice auditor {auth.hash_token(AUDITOR)}  # the audit team\n"
                    f"bob auditor {auth.hash_token(OTHER_AUDITOR)}\n")
    return str(path)


@pytest.fixture
def start(redis_client, redis_url, store):
    """Start API servers (no worker) with extra settings; all are stopped afterwards."""
    started = []

    def start_server(**settings):
        started.append(h.start_server(redis_url, store, **settings))
        return started[-1]

    yield start_server
    for server in started:
        server.stop(0)


def code_of(call, *args, **kwargs) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        call(*args, **kwargs)
    return failure.value.code()


def probe(channel, token: str, request_id: str = ""):
    return probe_grpc.ProbeServiceStub(channel).SubmitProbe(
        probe_pb.SubmitProbeRequest(sleep=duration_pb2.Duration(seconds=0), request_id=request_id),
        metadata=bearer(token), timeout=10)


# --- tokens and roles -------------------------------------------------------------------------------------------
def test_calls_without_a_valid_token_are_unauthenticated(start, tokens_file):
    server = start(auth_tokens_file=tokens_file)
    with h.channel(server) as channel:
        models = model_grpc.ModelServiceStub(channel)
        request = model_pb.ListModelsRequest()
        for metadata in ((), bearer("not-a-token"), (("authorization", ADMIN),), bearer(ADMIN + "x")):
            assert code_of(models.ListModels, request, metadata=metadata, timeout=10) == \
                grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as failure:
            models.ListModels(request, timeout=10)
        assert "Bearer" in failure.value.details()
        # an upload is refused before its stream is read
        data = h.partsnet_bytes()
        assert code_of(models.UploadModel, h.model_requests("m", data), timeout=10) == grpc.StatusCode.UNAUTHENTICATED
        assert len(models.ListModels(request, metadata=bearer(ADMIN), timeout=10).models) == 0


def test_auditors_read_and_audit_but_only_admins_register_and_delete(start, tokens_file):
    server = start(auth_tokens_file=tokens_file)
    with h.channel(server) as channel:
        models, datasets = model_grpc.ModelServiceStub(channel), dataset_grpc.DatasetServiceStub(channel)
        operations = lro_grpc.OperationsStub(channel)
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert code_of(models.UploadModel, h.model_requests("m", h.partsnet_bytes()), metadata=bearer(AUDITOR),
                       timeout=10) == denied
        assert code_of(models.DeleteModel, model_pb.DeleteModelRequest(name="models/m"), metadata=bearer(AUDITOR),
                       timeout=10) == denied
        assert code_of(datasets.UploadDataset, h.dataset_requests("d", b"x" * 10), metadata=bearer(AUDITOR),
                       timeout=10) == denied
        assert code_of(datasets.RegisterDataset, dataset_pb.RegisterDatasetRequest(dataset_id="d"),
                       metadata=bearer(AUDITOR), timeout=10) == denied
        assert code_of(datasets.DeleteDataset, dataset_pb.DeleteDatasetRequest(name="datasets/d"),
                       metadata=bearer(AUDITOR), timeout=10) == denied
        # the auditor reads and runs operations; the admin passes the role check of the admin methods
        models.ListModels(model_pb.ListModelsRequest(), metadata=bearer(AUDITOR), timeout=10)
        datasets.ListDatasets(dataset_pb.ListDatasetsRequest(), metadata=bearer(AUDITOR), timeout=10)
        operation = probe(channel, AUDITOR)
        operations.CancelOperation(lro_pb.CancelOperationRequest(name=operation.name), metadata=bearer(AUDITOR),
                                   timeout=10)
        assert code_of(models.DeleteModel, model_pb.DeleteModelRequest(name="models/m"), metadata=bearer(ADMIN),
                       timeout=10) == grpc.StatusCode.NOT_FOUND
        # dead letters are the admins' business; concept sets and graphs are listed by auditors
        dead = admin_grpc.AdminServiceStub(channel)
        assert code_of(dead.ListDeadLetters, admin_pb.ListDeadLettersRequest(), metadata=bearer(AUDITOR),
                       timeout=10) == denied
        assert code_of(dead.RetryDeadLetter, admin_pb.RetryDeadLetterRequest(operation=operation.name),
                       metadata=bearer(AUDITOR), timeout=10) == denied
        assert not dead.ListDeadLetters(admin_pb.ListDeadLettersRequest(), metadata=bearer(ADMIN),
                                        timeout=10).dead_letters
        audits = audit_grpc.AuditServiceStub(channel)
        assert code_of(audits.ListConceptSets, audit_pb.ListConceptSetsRequest(parent="models/Not_An_Id"),
                       metadata=bearer(AUDITOR), timeout=10) == grpc.StatusCode.INVALID_ARGUMENT


def test_health_and_reflection_need_no_token(start, tokens_file):
    server = start(auth_tokens_file=tokens_file)
    with h.channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING  # no worker yet
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        services = {s.name for s in next(answers).list_services_response.service}
        assert "gigaudit.v1.ModelService" in services


def test_tokens_are_never_logged(start, tokens_file, caplog):
    caplog.set_level(logging.DEBUG)
    server = start(auth_tokens_file=tokens_file)
    with h.channel(server) as channel:
        models = model_grpc.ModelServiceStub(channel)
        code_of(models.ListModels, model_pb.ListModelsRequest(), metadata=bearer("wrong-" + ADMIN), timeout=10)
        code_of(models.DeleteModel, model_pb.DeleteModelRequest(name="models/m"), metadata=bearer(AUDITOR),
                timeout=10)
        models.ListModels(model_pb.ListModelsRequest(), metadata=bearer(ADMIN), timeout=10)
    logged = caplog.text
    assert "refused" in logged  # the refusals are logged ...
    assert ADMIN not in logged and AUDITOR not in logged  # ... without the tokens
    assert auth.hash_token(ADMIN) not in logged


@pytest.mark.parametrize("line, problem", [
    ("ops root " + "0" * 64, "unknown role 'root'; valid roles: admin, auditor"),
    ("ops admin " + "0" * 63, "expected '<name> <role> <sha256"),
    ("ops admin " + "A" * 64, "expected '<name> <role> <sha256"),
    ("# nothing but a comment", "no tokens"),
])
def test_bad_token_files_are_refused_naming_the_line(tmp_path, line, problem):
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        auth.load_tokens(path)


# --- TLS --------------------------------------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path)
    server_cert, server_key = ca.issue("server", server=True)
    client_cert, client_key = ca.issue("client", server=False)
    return ca, server_cert, server_key, client_cert, client_key


def list_models(channel, token: str = ADMIN):
    return model_grpc.ModelServiceStub(channel).ListModels(model_pb.ListModelsRequest(), metadata=bearer(token),
                                                          timeout=5)


def test_tls_serves_encrypted_calls_and_refuses_plaintext(start, pki, tokens_file):
    ca, cert, key, _, _ = pki
    server = start(tls_cert_file=str(cert), tls_key_file=str(key), auth_tokens_file=tokens_file, health_port=0)
    target = f"localhost:{server.port}"
    with grpc.secure_channel(target, tls.channel_credentials(ca.pem)) as channel:
        list_models(channel)
    with grpc.insecure_channel(target) as channel:
        assert code_of(list_models, channel) == grpc.StatusCode.UNAVAILABLE
    other_ca = CertificateAuthority(ca.folder / "..", name="other-ca")
    with grpc.secure_channel(target, tls.channel_credentials(other_ca.pem)) as channel:
        assert code_of(list_models, channel) == grpc.StatusCode.UNAVAILABLE  # the server's certificate is untrusted
    # the thin client, with a token over TLS
    with AuditClient(target, token=AUDITOR, tls=str(ca.pem)) as client:
        assert client.list_models() == []
    # kubelet's probes reach the plaintext health port, which serves nothing else
    with grpc.insecure_channel(f"127.0.0.1:{server.probes.port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=probes.PROCESS),
                                                           timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert code_of(list_models, channel) == grpc.StatusCode.UNIMPLEMENTED


def test_mtls_needs_a_client_certificate_from_the_configured_ca(start, pki, tmp_path):
    ca, cert, key, client_cert, client_key = pki
    server = start(tls_cert_file=str(cert), tls_key_file=str(key), tls_client_ca_file=str(ca.pem))
    target = f"localhost:{server.port}"
    with grpc.secure_channel(target, tls.channel_credentials(ca.pem, client_cert, client_key)) as channel:
        list_models(channel)
    with grpc.secure_channel(target, tls.channel_credentials(ca.pem)) as channel:
        assert code_of(list_models, channel) == grpc.StatusCode.UNAVAILABLE
    rogue = CertificateAuthority(tmp_path / "..", name="rogue-ca")
    rogue_cert, rogue_key = rogue.issue("intruder", server=False)
    with grpc.secure_channel(target, tls.channel_credentials(ca.pem, rogue_cert, rogue_key)) as channel:
        assert code_of(list_models, channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(target) as channel:
        assert code_of(list_models, channel) == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_are_checked(pki):
    from gigaudit_server.config import Settings

    ca, cert, key, _, _ = pki
    with pytest.raises(ValueError, match="set both or neither"):
        Settings(tls_cert_file=str(cert))
    with pytest.raises(ValueError, match="needs TLS"):
        Settings(tls_client_ca_file=str(ca.pem))
    with pytest.raises(ValueError, match="cannot read the TLS private key"):
        tls.server_credentials(cert, ca.folder / "missing.key")
    with pytest.raises(ValueError, match="give both or neither"):
        tls.channel_credentials(ca.pem, cert_file=cert)


# --- limits -----------------------------------------------------------------------------------------------------
def test_unfinished_operations_per_client_are_limited(start, tokens_file):
    server = start(auth_tokens_file=tokens_file, max_jobs_per_client=2)
    with h.channel(server) as channel:
        first, second = probe(channel, AUDITOR, "r1"), probe(channel, AUDITOR, "r2")
        with pytest.raises(grpc.RpcError) as failure:
            probe(channel, AUDITOR, "r3")
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        quota = h.details_of(failure.value)["QuotaFailure"].violations[0]
        assert quota.subject == "user:alice" and "limit per client is 2" in quota.description
        probe(channel, OTHER_AUDITOR)  # another client has a quota of its own
        assert probe(channel, AUDITOR, "r2").name == second.name  # a retry starts nothing: let through
        lro_grpc.OperationsStub(channel).CancelOperation(lro_pb.CancelOperationRequest(name=first.name),
                                                         metadata=bearer(AUDITOR), timeout=10)
        probe(channel, AUDITOR, "r4")  # the cancelled one freed its slot
        assert code_of(probe, channel, AUDITOR, "r5") == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_without_tokens_the_limit_applies_per_peer_address(start):
    server = start(max_jobs_per_client=1)
    with h.channel(server) as channel:
        probe(channel, "ignored")
        assert code_of(probe, channel, "ignored") == grpc.StatusCode.RESOURCE_EXHAUSTED
    with h.channel(server) as channel:  # a new connection from the same host is the same client
        assert code_of(probe, channel, "ignored") == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_uploads_over_the_size_limit_are_resource_exhausted(start):
    data = h.partsnet_bytes()
    server = start(max_model_bytes=len(data) - 1)
    with h.channel(server) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            model_grpc.ModelServiceStub(channel).UploadModel(h.model_requests("m", data), timeout=10)
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "QuotaFailure" in h.details_of(failure.value)

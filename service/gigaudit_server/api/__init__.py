"""The gRPC servicers: thin, torch-free adapters from the gigaudit.v1 API onto the catalog, job queue and store."""
from __future__ import annotations

from google.longrunning import operations_pb2_grpc as lro_grpc

from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit_server.api.admin import AdminServicer
from gigaudit_server.api.audits import AuditServicer
from gigaudit_server.api.backend import Backend
from gigaudit_server.api.datasets import DatasetServicer
from gigaudit_server.api.models import ModelServicer
from gigaudit_server.api.operations import OperationsServicer
from gigaudit_server.api.probe import ProbeServicer

SERVICE_NAMES = ("gigaudit.v1.ModelService", "gigaudit.v1.DatasetService", "gigaudit.v1.AuditService",
                 "gigaudit.v1.ProbeService", "gigaudit.v1.AdminService", "google.longrunning.Operations")


def add_servicers(server, backend: Backend) -> None:
    model_grpc.add_ModelServiceServicer_to_server(ModelServicer(backend), server)
    dataset_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(backend), server)
    audit_grpc.add_AuditServiceServicer_to_server(AuditServicer(backend), server)
    probe_grpc.add_ProbeServiceServicer_to_server(ProbeServicer(backend), server)
    admin_grpc.add_AdminServiceServicer_to_server(AdminServicer(backend), server)
    lro_grpc.add_OperationsServicer_to_server(OperationsServicer(backend), server)

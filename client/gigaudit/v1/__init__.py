"""Generated gRPC code for the gigaudit.v1 API (scripts/gen_protos.py). Do not edit."""

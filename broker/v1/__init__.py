"""Generated gRPC stubs for the broker.v1 protos (see scripts/gen_protos.sh)."""

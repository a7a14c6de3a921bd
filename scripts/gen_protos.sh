#!/usr/bin/env bash
# Regenerates the committed Python stubs in broker/v1 from protos/.
# CI runs this and fails on any diff (drift check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
rm -f broker/v1/*_pb2*.py broker/v1/*_pb2*.pyi broker/v1/reasons.py
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  protos/broker/v1/*.proto
for f in broker/v1/*_pb2*.py broker/v1/*_pb2*.pyi; do
  { echo "# Generated from protos/ by scripts/gen_protos.sh; do not edit."; cat "$f"; } > "$f.tmp"
  mv "$f.tmp" "$f"
done
"$PY" scripts/gen_reasons.py broker/v1/reasons.py

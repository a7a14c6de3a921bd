#!/usr/bin/env bash
# Regenerates the committed Python stubs in broker/v1 and the TypeScript client's code in
# clients/typescript/src/gen from protos/: the one command for both.
# CI runs this and fails on any diff (drift check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
# The stubs are protoc's output: generate them only with the grpcio-tools pyproject.toml pins, so
# that a new release cannot change them (and turn the drift check red) on an untouched tree.
"$PY" - <<'EOF'
import re, sys, tomllib
from importlib.metadata import PackageNotFoundError, version
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
pinned = next(m[1] for d in dev if (m := re.fullmatch(r"grpcio-tools==(\S+)", d)))
try:
    installed = version("grpcio-tools")
except PackageNotFoundError:
    installed = "none"
if installed != pinned:
    sys.exit(f"gen_protos.sh: grpcio-tools {installed} is installed but pyproject.toml pins "
             f"{pinned}\nhint: pip install 'grpcio-tools=={pinned}'")
EOF
rm -f broker/v1/*_pb2*.py broker/v1/*_pb2*.pyi broker/v1/reasons.py
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  protos/broker/v1/*.proto
for f in broker/v1/*_pb2*.py broker/v1/*_pb2*.pyi; do
  # protoc names imports after the proto path (broker/v1); installed, they are lockgate.broker.v1
  sed -i.bak -e 's/^from broker\.v1 import/from lockgate.broker.v1 import/' \
    -e 's/^import broker\.v1\./import lockgate.broker.v1./' \
    -e "s/'broker\.v1\.\([a-z0-9_]*_pb2\)'/'lockgate.broker.v1.\1'/" "$f" && rm -f "$f.bak"
done
for f in broker/v1/*_pb2*.py broker/v1/*_pb2*.pyi; do
  { echo "# Generated from protos/ by scripts/gen_protos.sh; do not edit."; cat "$f"; } > "$f.tmp"
  mv "$f.tmp" "$f"
done
"$PY" scripts/gen_reasons.py broker/v1/reasons.py
# The TypeScript client's code (clients/typescript/src/gen) from the same protos, by buf with
# buf.gen.yaml and ts-proto from clients/typescript/package-lock.json (installed when missing).
BUF="${BUF:-$(command -v buf || echo "$(dirname "$PY")/buf")}"
if [ ! -x clients/typescript/node_modules/.bin/protoc-gen-ts_proto ]; then
  command -v npm >/dev/null || { echo "gen_protos.sh: npm is needed for the TypeScript client (Node 20)"; exit 1; }
  npm ci --prefix clients/typescript --silent --no-audit --no-fund
fi
rm -rf clients/typescript/src/gen
"$BUF" generate
for f in $(find clients/typescript/src/gen -name '*.ts'); do
  { echo "// Generated from protos/ by scripts/gen_protos.sh (buf.gen.yaml); do not edit."; cat "$f"; } > "$f.tmp"
  mv "$f.tmp" "$f"
done

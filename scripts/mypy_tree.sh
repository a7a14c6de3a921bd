#!/usr/bin/env bash
# Builds build/mypy/lockgate/{broker,policy,gateways,clients} -> the folders, so that mypy sees
# them under their installed names (it does not run setuptools' editable import finder).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/mypy/lockgate
for d in broker policy gateways clients; do
  ln -sfn "../../../$d" "build/mypy/lockgate/$d"
done

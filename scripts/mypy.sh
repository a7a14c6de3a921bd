#!/usr/bin/env bash
# mypy --strict on the code under its installed names (see scripts/mypy_tree.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/mypy_tree.sh
exec "${MYPY:-mypy}" "$@"

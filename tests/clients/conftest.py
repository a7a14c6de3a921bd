"""Client tests: make the repository root importable (``clients``, ``broker.v1``) and the helper
modules of this directory (``tcp_proxy``, ``status_kit``). Tests that need a broker start a real
one with ``broker.testing.run_broker``."""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, so `clients` and `broker.v1` import without an installed package.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

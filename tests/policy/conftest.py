"""Policy tests: make ``import policy`` find the package, not this directory.

``tests/policy`` shares its name with the ``policy`` package; with pytest's default import
mode the directory can be picked up as a namespace package first, so the repository root goes
to the front of ``sys.path`` (as tests/clients does) and a namespace stand-in is dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_mod = sys.modules.get("policy")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["policy"]

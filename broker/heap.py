"""The garbage collector's settings for a long-running broker.

CPython's cyclic collector walks every tracked object of the generations it collects. After
startup the heap holds tens of thousands of long-lived objects (modules, protobuf descriptors,
grpc, the policy grammar) that every full collection walked again: a gen-2 pass took 60-77 ms
on the loaded development machine, stalling the event loop and every delivery behind it.
:func:`settle` moves what startup built out of the collector's sight (``gc.freeze``), so a
full collection walks only what was allocated since. Young collections stay as they are: they
are frequent but short, and a larger threshold would make each one a visible pause.
"""

from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> None:
    """Collect once and freeze the survivors (startup's objects) out of later collections."""
    gc.collect()
    gc.freeze()

"""What a policy reads of an event, so a caller can decide a batch once per distinct input.

A batch's events share their principal, subject and time; when the covering policies read
only CloudEvents attributes (not the data), two events with equal values of those attributes
get equal decisions, and the broker decides each distinct combination once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import ast as A

__all__ = ["EventInputs", "event_inputs"]


@dataclass(frozen=True, slots=True)
class EventInputs:
    """``names``: the event attributes read (sorted); ``data``: whether ``event.data`` is."""

    names: tuple[str, ...]
    data: bool

    @property
    def memoizable(self) -> bool:
        """Decisions depend on ``names`` alone (given principal, subject and time)."""
        return not self.data


def _paths(node: object, out: list[A.Path]) -> None:
    if isinstance(node, A.Path):
        out.append(node)
        return
    if isinstance(node, tuple | list):
        for item in node:
            _paths(item, out)
        return
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _paths(getattr(node, f.name), out)


def event_inputs(policies: list[A.Policy]) -> EventInputs:
    """The event inputs read by any rule of ``policies``."""
    found: list[A.Path] = []
    for pol in policies:
        _paths(pol.rules, found)
    names: set[str] = set()
    data = False
    for p in found:
        if p.parts[0] != "event":
            continue
        if len(p.parts) < 2 or p.parts[1] == "data":
            data = True  # the whole event, or its data: nothing to share
        else:
            names.add(str(p.parts[1]))
    return EventInputs(tuple(sorted(names)), data)

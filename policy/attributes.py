"""The one rule for CloudEvents extension attribute names (pure, stdlib only).

CloudEvents 1.0 names are lower-case ASCII letters and digits. The spec says a name SHOULD
NOT exceed 20 characters; that is advice, and the broker's own attributes are longer
(``lockgateoriginalsubject``), so the hard limit is :data:`MAX_NAME_LENGTH`. ``id``,
``source``, ``specversion``, ``type`` and ``data`` are never extension names. The broker's
event checks (``broker.cloudevents``) and the policy checker (``event.<ext>``, ``tag``) both
use this module, so a name one accepts the other accepts too.

Names starting with :data:`BROKER_PREFIX` (``lockgate``) belong to the broker: it adds
``lockgateroutedfrom`` to routed events and ``lockgateoriginalsubject`` and its siblings to dead
letters after an event was checked. They are valid names (policies may test them, events carry
them out), but no ingress accepts them from a publisher (:func:`is_broker_name`).

>>> is_extension_name("traceparent"), is_extension_name("123"), is_extension_name("Ü")
(True, True, False)
>>> is_broker_name("lockgateroutedfrom"), is_broker_name("traceparent")
(True, False)
"""

from __future__ import annotations

import re

__all__ = [
    "BROKER_PREFIX",
    "MAX_NAME_LENGTH",
    "NAME_RULE",
    "RESERVED_NAMES",
    "is_broker_name",
    "is_extension_name",
]

MAX_NAME_LENGTH = 64
BROKER_PREFIX = "lockgate"
RESERVED_NAMES = frozenset({"id", "source", "specversion", "type", "data"})
NAME_RULE = f"lowercase ASCII letters and digits, at most {MAX_NAME_LENGTH}"
_NAME = re.compile(rf"[a-z0-9]{{1,{MAX_NAME_LENGTH}}}\Z")


def is_extension_name(name: str) -> bool:
    """True when ``name`` may name an extension attribute."""
    return _NAME.match(name) is not None and name not in RESERVED_NAMES


def is_broker_name(name: str) -> bool:
    """True when ``name`` is one of the broker's own attributes (``lockgate…``), which
    publishers may not set."""
    return name.startswith(BROKER_PREFIX)

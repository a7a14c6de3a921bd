"""Floors and caps of the delivery settings, checked in one place.

A subscriber or durable asks for ``max_in_flight``, ``ack_wait``, ``max_deliveries`` and a
nack delay; unbounded values let one caller grow the broker (a window of 2^32 deliveries)
or make it spin (a 1 ms ack wait redelivered 2^32 times). Every surface (gRPC, HTTP,
WebSocket, the in-process API) and the configured defaults go through :func:`check_setting`.

Example::

    check_setting("ack_wait", 30.0)  # raises InvalidArgument / INVALID_SETTING when out of range
"""

from __future__ import annotations

from lockgate.broker.errors import InvalidArgument

__all__ = ["BOUNDS", "MAX_EVENT_ID", "MAX_EVENT_SOURCE", "check_setting", "shown"]

HOUR = 3600.0

BOUNDS: dict[str, tuple[float, float]] = {
    "max_in_flight": (1, 100_000),
    "subscriber_write_deadline": (0.1, HOUR),
    "ack_wait": (0.1, 12 * HOUR),
    "max_deliveries": (1, 1000),
    "nack_delay": (0.0, 12 * HOUR),
    "webhook_secret_grace": (0.0, 7 * 24 * HOUR),
    # The config store's settings (broker.livesettings) beside the ones above.
    "publish_rate": (0.001, 1e9),
    "publish_burst": (1, 1e9),
    "subscriber_max_bytes": (1 << 20, 1 << 30),
    "backoff": (1, 64),
    "retention_max_age": (0.0, 100 * 365 * 24 * HOUR),
    "retention_max_events": (0, 1 << 53),
    "max_group_members": (2, 100_000),
}
"""Inclusive (lowest, highest) per setting; durations in seconds."""

_DURATIONS = {
    "ack_wait",
    "nack_delay",
    "webhook_secret_grace",
    "subscriber_write_deadline",
    "retention_max_age",
}

MAX_EVENT_ID = 1024
"""Characters of a CloudEvents ``id``: the dedup index keeps it for the window."""
MAX_EVENT_SOURCE = 1024
"""Characters of a CloudEvents ``source`` (kept by the dedup index too)."""


def shown(setting: str, value: float) -> str:
    if setting in _DURATIONS:
        return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"
    return f"{value:g}"


def check_setting(setting: str, value: float) -> None:
    """Raises INVALID_SETTING when ``value`` lies outside ``BOUNDS[setting]``."""
    low, high = BOUNDS[setting]
    if not low <= value <= high:
        raise InvalidArgument(
            f"{setting} {shown(setting, value)} is out of range",
            reason="INVALID_SETTING",
            hint=f"use {shown(setting, low)} to {shown(setting, high)}, or leave it unset",
            metadata={
                "setting": setting,
                "min": shown(setting, low),
                "max": shown(setting, high),
            },
        )

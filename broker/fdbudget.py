"""The process's file-descriptor budget.

Every open connection holds a descriptor. A flood of slow HTTP connections once took all
1,024 of a broker's, and then the gRPC port stopped answering too. So at start a process
raises its soft ``RLIMIT_NOFILE`` to the hard limit, and the HTTP/WebSocket listeners get a
share of it (``http_max_connections = 0``, the default: half); connections beyond that are
answered 503 and closed, leaving the rest for gRPC, the store and the backbone.

Example::

    soft = raise_open_file_limit()
    cap = gateway_connection_cap(config.http_max_connections, soft)
"""

from __future__ import annotations

import logging

__all__ = [
    "GATEWAY_SHARE",
    "UNKNOWN_LIMIT_CAP",
    "gateway_connection_cap",
    "open_file_limit",
    "raise_open_file_limit",
]

log = logging.getLogger("lockgate.fdbudget")

GATEWAY_SHARE = 0.5
"""The share of the open-file limit the gateway listeners may hold together."""
MIN_CAP = 16
UNKNOWN_LIMIT_CAP = 10_000
"""The cap where the limit cannot be read (Windows)."""


def open_file_limit() -> int:
    """The soft limit of open files, or 0 where it cannot be read."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else int(soft)


def raise_open_file_limit() -> int:
    """Raises the soft limit of open files to the hard limit (a process may, unprivileged);
    returns the soft limit in force afterwards (0 where it cannot be read)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # macOS: an infinite hard limit is refused
            log.info("fdbudget.keep: the open-file limit stays %d (%s)", soft, exc)
    return open_file_limit()


def gateway_connection_cap(configured: int, soft_limit: int) -> int:
    """The most connections the gateway listeners may hold: ``configured`` when set (> 0),
    else :data:`GATEWAY_SHARE` of ``soft_limit`` (at least 16).

    >>> gateway_connection_cap(0, 1024), gateway_connection_cap(300, 1024)
    (512, 300)
    """
    if configured > 0:
        if soft_limit and configured > soft_limit * GATEWAY_SHARE:
            log.warning(
                "fdbudget.over: http_max_connections = %d is more than %d%% of the open-file "
                "limit %d; a connection flood can starve the gRPC port",
                configured,
                int(GATEWAY_SHARE * 100),
                soft_limit,
            )
        return configured
    if not soft_limit:
        return UNKNOWN_LIMIT_CAP
    return max(MIN_CAP, int(soft_limit * GATEWAY_SHARE))

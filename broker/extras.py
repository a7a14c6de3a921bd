"""Optional extras: which ``pip install 'lockgate[...]'`` brings a module, and the one error
for a missing one.

Every place that can meet a missing optional package (the CLI's failure printer, the backend
factory, the Redis limiter, the gateways) names the extra through :func:`missing_extra`, so the
map below is the only copy of pyproject.toml's extras in code.

Example::

    try:
        import redis.asyncio
    except ImportError as exc:
        raise missing_extra("the Redis limiter", exc) from None
"""

from __future__ import annotations

from lockgate.broker.errors import FailedPrecondition, Reason

__all__ = ["EXTRAS", "extra_for", "missing_extra"]

EXTRAS: dict[str, str] = {
    # The broker itself (`lockgate serve`, `policy`, `keys`): pip install 'lockgate[server]'.
    "lark": "server",
    "re2": "server",
    "opentelemetry": "server",
    "prometheus_client": "server",
    "grpc_health": "server",
    "grpc_reflection": "server",
    "uvloop": "server",
    "cryptography": "server",
    "jwt": "server",
    "aiohttp": "gateways",
    "redis": "redis",
    "nats": "nats",
    "asyncpg": "postgres",
    "pydantic": "models",
    "nacl": "crypto",
}
"""Top-level module -> the extra of pyproject.toml that installs it."""


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (``"redis.asyncio"`` -> ``"redis"``), or None."""
    return EXTRAS.get((module or "").partition(".")[0])


def missing_extra(what: str, exc: ImportError) -> FailedPrecondition:
    """The error for ``what`` ("the Redis limiter") that cannot import an optional package.

    Re-raises ``exc`` when the missing module belongs to no extra: that is a bug, not a choice
    the user made when installing.
    """
    module = (exc.name or "").partition(".")[0]
    extra = extra_for(module)
    if extra is None:
        raise exc
    return FailedPrecondition(
        f"{what} needs the optional package {module!r}, which is not installed",
        reason=Reason.MISSING_EXTRA,
        hint=f"pip install 'lockgate[{extra}]'",
    )

"""The gateways' one JSON codec (HTTP, WebSocket, Redis, NATS, webhooks): msgspec.

msgspec rather than orjson because it keeps integers exact both ways: orjson decodes an
integer beyond 64 bits as a float (event data silently changed) and refuses to encode one,
where msgspec, like the standard library, keeps ``123456789012345678901234567890`` as is.
Its output is compact UTF-8 like ``json.dumps(separators=(",", ":"), ensure_ascii=False)``;
the one difference is the spelling of floats with an exponent (``1e16``, not ``1e+16``),
the same number.

Input that msgspec refuses is decoded again by the standard library, so that what was
accepted before still is (a lone ``\\ud800`` escape, which the CloudEvents codec then refuses
with its own reason) and every refusal says where the problem is (line and column).
``NaN`` and ``Infinity`` are not JSON and are refused: encoded again they would be ``null``.

Example::

    assert loads(dumps({"a": [1, 2.5]})) == {"a": [1, 2.5]}
"""

from __future__ import annotations

import json

import msgspec

from lockgate.gateways.errors import MalformedJson

__all__ = ["dumpb", "dumps", "loads"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def dumpb(value: object) -> bytes:
    """Compact UTF-8 JSON; raises ``TypeError`` for what has no JSON form and
    ``UnicodeEncodeError`` for a lone surrogate."""
    return _encode(value)


def dumps(value: object) -> str:
    """:func:`dumpb` as text."""
    return _encode(value).decode()


def loads(raw: bytes | str) -> object:
    """Parsed JSON; raises :class:`MalformedJson` with the position of the problem."""
    try:
        return _decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _loads_slow(raw)


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return value


def _loads_slow(raw: bytes | str) -> object:
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except UnicodeDecodeError:
        raise MalformedJson("it is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MalformedJson("it is nested too deeply") from None
    except ValueError as exc:  # NaN, Infinity, 1e400 (from the hooks above)
        raise MalformedJson(str(exc)) from None

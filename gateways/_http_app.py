"""What every HTTP route reads from its application: the broker API, the settings, and a
JSON request body.

Example::

    api, settings = request.app[API_KEY], request.app[SETTINGS]
    doc = await json_body(request)
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from lockgate.broker.api import BrokerAPI
from lockgate.gateways._guard import read_body
from lockgate.gateways._json import loads
from lockgate.gateways.errors import MalformedJson, UnsupportedMediaType

__all__ = ["API_KEY", "SETTINGS", "HttpSettings", "base_type", "json_body"]

API_KEY = web.AppKey("lockgate_api", BrokerAPI)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """``[gateways.http]`` settings."""

    max_body_bytes: int = 1 << 20
    max_wait: float = 60.0
    """Longest long poll (``wait=``) a client may ask for, in seconds."""


SETTINGS = web.AppKey("lockgate_http_settings", HttpSettings)


def base_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


async def json_body(request: web.Request) -> dict[str, object]:
    base = base_type(request)
    if base not in ("application/json", ""):
        raise UnsupportedMediaType(base, "application/json")
    doc = loads(await read_body(request, request.app[SETTINGS].max_body_bytes) or b"{}")
    if not isinstance(doc, dict):
        raise MalformedJson("expected a JSON object")
    return doc

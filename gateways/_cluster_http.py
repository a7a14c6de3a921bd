"""The HTTP gateway's routes for the backbone registry and the config store (the broker's
``admin`` role; the same calls as RegistryService and ConfigService)::

    GET    /v1/backbones                      {"backbones": [...]}
    POST   /v1/backbones                      a backbone's JSON -> 201 and the stored record
    GET    /v1/backbones/{id}
    PUT    /v1/backbones/{id}                 every field replaced (the id is the path's)
    DELETE /v1/backbones/{id}
    GET    /v1/config?version=N               {"version": {...}, "settings": {pattern: {...}}}
    PATCH  /v1/config                         {"changes": [{"pattern", "name", "value" |
                                              "unset": true}], "expected_version": N}
    GET    /v1/config/versions?limit=N        {"versions": [...]}, newest first
    POST   /v1/config/rollback                {"version": N} (none: the one before)

Times are RFC 3339 in UTC; errors are problem+json (a bad setting: reason INVALID_SETTING
with ``setting``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from lockgate.broker.api import BackboneRecord, BrokerAPI, ConfigChange, ConfigVersionRecord
from lockgate.gateways._cejson import JsonValue
from lockgate.gateways._web import api_key, json_response, parse_int, time_json
from lockgate.gateways.errors import InvalidParameter

__all__ = ["add_cluster_routes"]

Body = Callable[[web.Request], Awaitable[dict[str, object]]]


def backbone_json(r: BackboneRecord) -> dict[str, JsonValue]:
    return {
        "id": r.id,
        "endpoint": r.endpoint,
        "org_ids": list(r.orgs),
        "cluster_ids": list(r.clusters),
        "region": r.region,
        "version": r.version,
        "status": r.status,
        "created_time": time_json(r.created_ms),
        "updated_time": time_json(r.updated_ms),
    }


def version_json(v: ConfigVersionRecord | None, running: int) -> dict[str, JsonValue]:
    if v is None:
        return {"version": 0, "active": True}
    return {
        "version": v.version,
        "created_time": time_json(v.created_ms),
        "author": v.author,
        "origin": v.origin,
        "detail": v.detail,
        "active": v.version == running,
    }


def _text(doc: dict[str, object], name: str, *, required: bool = False) -> str:
    value = doc.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidParameter(name, str(value), "a string")
    return value


def _names(doc: dict[str, object], name: str) -> tuple[str, ...]:
    value = doc.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(name, str(value), "a list of strings")
    return tuple(value)


def _backbone(doc: dict[str, object], backbone_id: str) -> BackboneRecord:
    return BackboneRecord(
        backbone_id,
        _text(doc, "endpoint", required=True),
        _names(doc, "org_ids"),
        _names(doc, "cluster_ids"),
        _text(doc, "region"),
        _text(doc, "version"),
        _text(doc, "status") or "active",
    )


def _value(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise InvalidParameter("value", str(raw), "a string or a number")
    return str(raw)


def _changes(doc: dict[str, object]) -> list[ConfigChange]:
    raw = doc.get("changes")
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise InvalidParameter("changes", str(raw), 'a list of {"pattern", "name", "value"}')
    out = []
    for c in raw:
        unset = c.get("unset", False)
        if not isinstance(unset, bool):
            raise InvalidParameter("unset", str(unset), "true or false")
        out.append(
            ConfigChange(
                _text(c, "pattern"),
                _text(c, "name", required=True),
                "" if unset else _value(c.get("value")),
                unset,
            )
        )
    return out


def _version_number(doc: dict[str, object], name: str) -> int:
    raw = doc.get(name, 0)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidParameter(name, str(raw), "a version number")
    return raw


def add_cluster_routes(
    app: web.Application, api_of: Callable[[web.Request], BrokerAPI], body: Body
) -> None:
    """Adds the routes; ``api_of`` finds the app's API, ``body`` reads a JSON object body."""

    async def list_backbones(request: web.Request) -> web.Response:
        records = await api_of(request).list_backbones(api_key(request.headers))
        return json_response({"backbones": [backbone_json(r) for r in records]})

    async def create_backbone(request: web.Request) -> web.Response:
        doc = await body(request)
        rec = _backbone(doc, _text(doc, "id", required=True))
        stored = await api_of(request).put_backbone(api_key(request.headers), rec, create=True)
        return json_response(backbone_json(stored), status=201)

    async def get_backbone(request: web.Request) -> web.Response:
        rec = await api_of(request).get_backbone(api_key(request.headers), request.match_info["id"])
        return json_response(backbone_json(rec))

    async def update_backbone(request: web.Request) -> web.Response:
        doc = await body(request)
        rec = _backbone(doc, request.match_info["id"])
        stored = await api_of(request).put_backbone(api_key(request.headers), rec, create=False)
        return json_response(backbone_json(stored))

    async def delete_backbone(request: web.Request) -> web.Response:
        backbone_id = request.match_info["id"]
        await api_of(request).delete_backbone(api_key(request.headers), backbone_id)
        return json_response({"deleted": backbone_id})

    async def get_config(request: web.Request) -> web.Response:
        version = parse_int("version", request.query.get("version"), 0, 0, 1 << 62)
        api, key = api_of(request), api_key(request.headers)
        rec = await api.get_config(key, version)
        running = rec.version if rec is not None and not version else 0
        if version:
            newest = await api.get_config(key)
            running = newest.version if newest is not None else 0
        settings = {p: dict(s) for p, s in rec.settings.items()} if rec is not None else {}
        return json_response({"version": version_json(rec, running), "settings": settings})

    async def set_config(request: web.Request) -> web.Response:
        doc = await body(request)
        rec = await api_of(request).set_config(
            api_key(request.headers), _changes(doc), _version_number(doc, "expected_version")
        )
        return json_response({"version": version_json(rec, rec.version)})

    async def config_versions(request: web.Request) -> web.Response:
        limit = parse_int("limit", request.query.get("limit"), 100, 1, 1000)
        versions = await api_of(request).config_versions(api_key(request.headers), limit)
        running = versions[0].version if versions else 0
        return json_response({"versions": [version_json(v, running) for v in versions]})

    async def rollback_config(request: web.Request) -> web.Response:
        doc = await body(request)
        rec = await api_of(request).rollback_config(
            api_key(request.headers), _version_number(doc, "version")
        )
        return json_response({"version": version_json(rec, rec.version)})

    app.router.add_get("/v1/backbones", list_backbones)
    app.router.add_post("/v1/backbones", create_backbone)
    app.router.add_get("/v1/backbones/{id}", get_backbone)
    app.router.add_put("/v1/backbones/{id}", update_backbone)
    app.router.add_delete("/v1/backbones/{id}", delete_backbone)
    app.router.add_get("/v1/config", get_config)
    app.router.add_patch("/v1/config", set_config)
    app.router.add_get("/v1/config/versions", config_versions)
    app.router.add_post("/v1/config/rollback", rollback_config)

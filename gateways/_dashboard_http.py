"""The dashboard on the HTTP gateway of ``lockgate serve``: the built page and the admin
reads it needs (each authorized per call by ``broker.permissions``; errors problem+json)::

    GET  /dashboard/                          the page (static, public: it holds no data)
    GET  /v1/activity/subjects                events stored per subject, 5 s buckets   (admin)
    GET  /v1/activity/subscriptions           live subscriptions and durables, lag, pending (admin)
    GET  /v1/activity/denials?limit=N         the recent policy denials and their rule  (admin)
    GET  /v1/activity/nodes                   this node and the cluster's live roster   (admin)
    GET  /v1/deadletters?org=&durable=&limit= dead letters, oldest first     (org-admin of org)
    POST /v1/deadletters/redrive              {"org", "durable", "ids": [...]} (org-admin of org)
    GET  /v1/policies/versions?org=|global=true           policy versions    (org-admin of org)
    GET  /v1/policies/diff?org=|global=true&from=&to=     a unified diff     (org-admin of org)

The page is built from ``dashboard/`` (Vite) into ``gateways/dashboard_dist`` and shipped in
the package, so serving it needs no Node. ``org`` defaults to the caller's own org; another
org, or the global policy set, needs the broker's admin.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from lockgate.broker.admin_view import AdminView, DeadLetterView, SubscriptionView
from lockgate.broker.api import LocalAPI
from lockgate.broker.errors import NotFound
from lockgate.broker.roster import RosterEntry
from lockgate.gateways._cejson import JsonValue
from lockgate.gateways._web import (
    api_key,
    json_response,
    parse_id,
    parse_int,
    stored_json,
    time_json,
)
from lockgate.gateways.errors import InvalidParameter

__all__ = ["DIST", "add_dashboard_routes"]

DIST = Path(__file__).with_name("dashboard_dist")
"""The built page (generated: ``cd dashboard && npm ci && npm run build``)."""
Body = Callable[[web.Request], Awaitable[dict[str, object]]]
_HEADERS = {
    # The page reads only its own origin; no frame may hold it (its redrive is a button).
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _roster_entry(e: RosterEntry, this_node: str) -> dict[str, JsonValue]:
    doc: dict[str, JsonValue] = {
        "node_id": e.node_id,
        "this_node": e.node_id == this_node,
        "last_heard": time_json(e.last_heard_ms),
    }
    if e.card is not None:
        c = e.card
        doc |= {
            "worker_id": c.worker_id,
            "version": c.version,
            "listen": c.listen,
            "started": time_json(c.started_ms),
            "backbone": c.backbone,
            "events_per_second": c.events_per_second,
            "subscriptions": c.subscriptions,
            "durables": c.durables,
        }
    return doc


def _subscription(s: SubscriptionView) -> dict[str, JsonValue]:
    return {
        "kind": s.kind,
        "org": s.org,
        "name": s.name,
        "pattern": s.pattern,
        "pending": s.pending,
        "ready": s.ready,
        "lag": s.lag,
        "connected": s.connected,
        "endpoint_url": s.endpoint_url,
        "agent": s.agent,
    }


def _dead_letter(d: DeadLetterView) -> dict[str, JsonValue]:
    r = d.record
    return {
        "org": r.org,
        "id": str(r.id),
        "durable": r.durable,
        "attempts": r.attempts,
        "dead_time": time_json(r.dead_ms),
        "event": stored_json(d.event) if d.event is not None else None,
    }


def _policy_scope(request: web.Request) -> str | None:
    """``org`` (default: the caller's, as "") or None for ``global=true`` (the global set)."""
    q = request.query
    flag = q.get("global", "")
    if flag not in ("", "true", "false"):
        raise InvalidParameter("global", flag, "true or false")
    if flag == "true":
        if q.get("org"):
            raise InvalidParameter("org", q["org"], "no org with global=true")
        return None
    return q.get("org", "")


def _ids(raw: object) -> list[int]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidParameter("ids", str(raw)[:40], "a list of event ids")
    return [parse_id("ids", i) for i in raw]


def _text(doc: dict[str, object], name: str) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str):
        raise InvalidParameter(name, str(value)[:40], "a string")
    return value


async def _page(request: web.Request) -> web.StreamResponse:
    rel = request.match_info.get("path", "") or "index.html"
    root = DIST.resolve()
    try:  # a NUL byte or an over-long name is no file of ours either (not a 500)
        path = (root / rel).resolve()
        found = root in path.parents and path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise NotFound(f"the dashboard has no file {rel[:80]!r}", hint="open /dashboard/")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    resp = web.Response(body=path.read_bytes(), content_type=kind, headers=_HEADERS)
    # Bundles carry a content hash in their names; the page itself is always re-read.
    immutable = rel.startswith("assets/")
    resp.headers["Cache-Control"] = (
        "public, max-age=31536000, immutable" if immutable else "no-cache"
    )
    return resp


async def _to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


def add_dashboard_routes(app: web.Application, api: LocalAPI, body: Body) -> None:
    """Adds the page and its admin reads; ``body`` reads a JSON object body."""
    view = AdminView(api)

    async def subjects(request: web.Request) -> web.Response:
        r = await view.subject_rates(api_key(request.headers))
        return json_response(
            {
                "bucket_seconds": r.bucket_seconds,
                "buckets": r.buckets,
                "now_ms": r.now_ms,
                "subjects": [
                    {"org": s.org, "subject": s.subject, "counts": list(s.counts), "total": s.total}
                    for s in r.subjects
                ],
            }
        )

    async def subscriptions(request: web.Request) -> web.Response:
        subs = await view.subscriptions(api_key(request.headers))
        return json_response({"subscriptions": [_subscription(s) for s in subs]})

    async def denials(request: web.Request) -> web.Response:
        limit = parse_int("limit", request.query.get("limit"), 100, 1, 1000)
        found = await view.denials(api_key(request.headers), limit)
        return json_response(
            {
                "denials": [
                    {
                        "time": time_json(d.time_ms),
                        "org": d.org,
                        "agent": d.agent,
                        "action": d.action,
                        "subject": d.subject,
                        "count": d.count,
                        "reason": d.reason,
                        "rule": d.rule,
                        "effect": d.effect,
                        "message": d.message,
                        "policy_version": d.policy_version,
                    }
                    for d in found
                ]
            }
        )

    async def nodes(request: web.Request) -> web.Response:
        n = await view.nodes(api_key(request.headers))
        return json_response(
            {
                "node": {"node_id": n.node_id, "store": n.store, "history_lag": n.history_lag},
                "peers": [
                    {"node_id": e.node_id, "last_heard": time_json(e.last_heard_ms)}
                    for e in n.roster
                    if e.node_id != n.node_id
                ],
                "nodes": [_roster_entry(e, n.node_id) for e in n.roster],
            }
        )

    async def dead_letters(request: web.Request) -> web.Response:
        q = request.query
        found = await view.dead_letters(
            api_key(request.headers),
            q.get("org", ""),
            q.get("durable", ""),
            parse_int("limit", q.get("limit"), 100, 1, 1000),
        )
        return json_response({"dead_letters": [_dead_letter(d) for d in found]})

    async def redrive(request: web.Request) -> web.Response:
        doc = await body(request)
        durable = _text(doc, "durable")
        if not durable:
            raise InvalidParameter("durable", "", "the durable's name")
        n = await view.redrive(
            api_key(request.headers), _text(doc, "org"), durable, _ids(doc.get("ids"))
        )
        return json_response({"count": n})

    async def policy_versions(request: web.Request) -> web.Response:
        versions = await view.policy_versions(api_key(request.headers), _policy_scope(request))
        return json_response(
            {
                "versions": [
                    {
                        "version": v.version,
                        "created_time": time_json(v.created_ms),
                        "origin": v.origin,
                        "files": len(v.files),
                        "active": v.active,
                    }
                    for v in versions
                ]
            }
        )

    async def policy_diff(request: web.Request) -> web.Response:
        q = request.query
        d = await view.policy_diff(
            api_key(request.headers), _policy_scope(request), q.get("from", ""), q.get("to", "")
        )
        return json_response({"from": d.old, "to": d.new, "diff": d.diff})

    app.router.add_get("/dashboard", _to_page)
    app.router.add_get("/dashboard/{path:.*}", _page)
    app.router.add_get("/v1/activity/subjects", subjects)
    app.router.add_get("/v1/activity/subscriptions", subscriptions)
    app.router.add_get("/v1/activity/denials", denials)
    app.router.add_get("/v1/activity/nodes", nodes)
    app.router.add_get("/v1/deadletters", dead_letters)
    app.router.add_post("/v1/deadletters/redrive", redrive)
    app.router.add_get("/v1/policies/versions", policy_versions)
    app.router.add_get("/v1/policies/diff", policy_diff)

"""Every error answer of the HTTP gateway is ``application/problem+json`` with a reason.

:func:`problems` is the middleware for what reaches the routes: the broker's errors, aiohttp's
own refusals (no route, wrong method, ...) and, as INTERNAL, anything unforeseen.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from lockgate.broker.audit import enter
from lockgate.broker.errors import BrokerError, NotFound
from lockgate.gateways._web import problem
from lockgate.gateways.errors import BodyTimeout, BodyTooLarge, HttpRefusal, MethodNotAllowed

__all__ = ["problems"]

log = logging.getLogger("lockgate.gateways.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is problem+json with a reason: the broker's errors, aiohttp's own
    (no route, wrong method, ...) and, as INTERNAL, anything unforeseen."""
    enter("http", request.remote or "")  # where this request's audit records come from
    try:
        return await handler(request)
    except (BodyTimeout, BodyTooLarge) as err:
        resp = problem(err)
        resp.force_close()  # the rest of the body is not worth waiting for
        return resp
    except BrokerError as err:
        return problem(err)
    except web.HTTPMethodNotAllowed as exc:
        resp = problem(MethodNotAllowed(request.method, request.path, exc.allowed_methods))
        resp.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return resp
    except web.HTTPNotFound:
        where = f"{request.method} {request.path}"[:100]
        return problem(NotFound(f"no route for {where}", hint="see the HTTP API in the README"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(HttpRefusal(exc.status, exc.reason))
    except Exception:
        log.exception("gateway.http.failed: %s %s", request.method, request.path[:100])
        return problem(BrokerError("the gateway failed unexpectedly", hint="report this bug"))

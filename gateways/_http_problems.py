"""Every error answer of the HTTP gateway is ``application/problem+json`` with a reason.

:func:`problems` is the middleware for what reaches the routes: the broker's errors, aiohttp's
own refusals (no route, wrong method, ...) and, as INTERNAL, anything unforeseen.
:func:`answer_malformed_requests` covers what never reaches a middleware: a request head
aiohttp's parser refuses (a header over 8,190 bytes, a bad request line), which aiohttp
answers from ``RequestHandler.handle_error`` in plain text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from lockgate.broker.actor import enter
from lockgate.broker.errors import BrokerError, NotFound
from lockgate.gateways._web import problem
from lockgate.gateways.errors import (
    BodyTimeout,
    BodyTooLarge,
    HttpRefusal,
    MalformedRequest,
    MethodNotAllowed,
)

__all__ = ["answer_malformed_requests", "problems"]

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
        return problem(_failed())


class _ProblemHandler(web.RequestHandler):
    """aiohttp's connection handler, answering the requests it refuses with problem+json."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own first: it logs, and raises when an answer is already under way.
        super().handle_error(request, status, exc, message)
        err = MalformedRequest(status, message or str(exc or "")) if status < 500 else _failed()
        resp = problem(err)
        resp.force_close()
        return resp


def answer_malformed_requests(server: web.Server) -> None:
    """Makes every connection of ``server`` (a runner's, after ``setup()``) answer the
    requests aiohttp refuses before routing with problem+json, keeping aiohttp's status, its
    log line and its closing of the connection.

    aiohttp has no option for that answer's body and builds its connection handlers itself,
    so each one becomes a :class:`_ProblemHandler` (a subclass without state of its own) as
    its connection is made, before any byte is read.
    tests/gateways/test_http_protocol_errors.py fails if an aiohttp upgrade moves this."""
    made = server.connection_made

    def connection_made(handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if type(handler) is web.RequestHandler:
            handler.__class__ = _ProblemHandler
        made(handler, transport)

    server.connection_made = connection_made  # type: ignore[method-assign]


def _failed() -> BrokerError:
    return BrokerError("the gateway failed unexpectedly", hint="report this bug")

"""The JetStream log's stream and its API: the connection's state, JetStream requests, the
stream's creation and configuration, and the short-lived pull consumers every read uses.

:class:`JsStream` is the base the log's parts (``jetstream_append``, ``jetstream_tail``,
``jetstream_reads``, ``jetstream_retention``) build on;
:class:`~broker.store.jetstream.JetStreamLog` puts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from lockgate.broker.backbone.logformat import LOG_PREFIX, BadLogMessage, decode_batch
from lockgate.broker.errors import Unavailable
from lockgate.broker.store import Batch
from lockgate.broker.v1.reasons import Reason

__all__ = ["JsStream"]

log = logging.getLogger("lockgate.store.jetstream")

_MARGIN_MS = 2_000
"""How far before an id's time a search by time starts: ids are given by node clocks, the
stream's times by the server's, and batches commit moments out of id order."""
_PULL = 256
"""Messages one pull asks for when the caller's filter is not exact."""
_PULL_EXPIRES_NS = 500_000_000
"""A no-wait pull's expiry. nats-server 2.9 answers "no messages" at once only when its
count of the consumer's pending messages is 0; a filtered consumer's count can be ahead of
what is there (the last message said 1 pending, none came), and such a pull was never
answered (the read failed with "no answer to a pull" after ``timeout``). With an expiry
the server answers 408 then; messages that are there are delivered at once either way."""
_DEDUP_WINDOW_S = 120.0
_HINT = "check that the NATS server (with JetStream) is reachable; the publish may be retried"


def _unavailable(what: str, exc: BaseException | str) -> Unavailable:
    return Unavailable(
        f"the JetStream log could not {what}: {exc}",
        reason=Reason.STORE_UNAVAILABLE,
        hint=_HINT,
    )


def _parse_headers(raw: bytes) -> dict[str, str]:
    """Headers of a message read by the stream API (``NATS/1.0`` then ``Key: value``)."""
    out: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclass(slots=True)
class _Msg:
    subject: str
    headers: dict[str, str]
    data: bytes
    seq: int
    pending: int


class JsStream:
    """The stream ``stream`` on the NATS servers at ``url``, its subjects under ``root``."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = "LOCKGATE_LOG",
        root: str = LOG_PREFIX,
        replicas: int = 1,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.root = root
        self.replicas = replicas
        self.timeout = timeout
        self._nc: Any = None
        self._committed = 0
        self._inbox = ""
        self._max_age_s = -1.0

    async def _api(self, subject: str, body: dict[str, object] | None = None) -> dict[str, Any]:
        """One JetStream API request; its error (or no answer) is STORE_UNAVAILABLE."""
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            msg = await self._nc.request(f"$JS.API.{subject}", payload, timeout=self.timeout)
        except Exception as exc:
            raise _unavailable(f"reach JetStream ({subject.split('.')[0].lower()})", exc) from exc
        answer: dict[str, Any] = json.loads(msg.data or b"{}")
        return answer

    def _config(self, max_age_s: float) -> dict[str, object]:
        window = _DEDUP_WINDOW_S if not max_age_s else min(_DEDUP_WINDOW_S, max_age_s)
        return {
            "name": self.stream,
            "subjects": [f"{self.root}.>"],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": self.replicas,
            "max_age": int(max_age_s * 1e9),
            "duplicate_window": int(window * 1e9),
            "allow_direct": True,
        }

    async def _ensure_stream(self) -> None:
        """Creates the stream, or brings an existing one to these subjects and replicas
        (many nodes run this at once: it is idempotent)."""
        info = await self._api(f"STREAM.INFO.{self.stream}")
        if "error" in info:
            if info["error"].get("err_code") != 10059:  # stream not found
                raise _unavailable("read the stream", info["error"].get("description"))
            made = await self._api(f"STREAM.CREATE.{self.stream}", self._config(0))
            if "error" not in made:
                self._max_age_s = 0.0
                return
            info = await self._api(f"STREAM.INFO.{self.stream}")  # another node made it
            if "error" in info:
                raise _unavailable("create the stream", made["error"].get("description"))
        cfg = info.get("config", {})
        self._max_age_s = cfg.get("max_age", 0) / 1e9
        if cfg.get("subjects") != [f"{self.root}.>"] or cfg.get("num_replicas") != self.replicas:
            await self._update_stream(self._max_age_s)

    async def _update_stream(self, max_age_s: float) -> None:
        done = await self._api(f"STREAM.UPDATE.{self.stream}", self._config(max_age_s))
        if "error" in done:
            raise _unavailable("update the stream", done["error"].get("description"))
        self._max_age_s = max_age_s

    async def _last_seq(self) -> int:
        info = await self._api(f"STREAM.INFO.{self.stream}")
        if "error" in info:
            raise _unavailable("read the stream", info["error"].get("description"))
        return int(info["state"]["last_seq"])

    def committed_seq(self) -> int:
        return self._committed

    async def _consumer(
        self, filter_subject: str, start: dict[str, object], *, headers_only: bool = False
    ) -> tuple[str, int]:
        """A short-lived pull consumer from ``start``: its name and what it has pending."""
        config: dict[str, object] = {
            **start,
            "ack_policy": "none",
            "filter_subject": filter_subject,
            "inactive_threshold": int(10e9),
            "mem_storage": True,
            "num_replicas": 1,
            "headers_only": headers_only,
        }
        made = await self._api(
            f"CONSUMER.CREATE.{self.stream}", {"stream_name": self.stream, "config": config}
        )
        if "error" in made:
            raise _unavailable("read the log", made["error"].get("description"))
        return str(made["name"]), int(made.get("num_pending", 0))

    async def _drop(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._nc.publish(f"$JS.API.CONSUMER.DELETE.{self.stream}.{name}", b"")

    async def _pull(self, name: str, n: int) -> list[_Msg]:
        """Up to ``n`` messages the consumer has now (no waiting for new ones). Pulled
        messages keep their stored subject, so each pull has its own inbox."""
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def take(msg: Any) -> None:
            queue.put_nowait(msg)

        inbox = self._nc.new_inbox()
        try:
            sub = await self._nc.subscribe(inbox, cb=take)
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}",
                json.dumps({"batch": n, "no_wait": True, "expires": _PULL_EXPIRES_NS}).encode(),
                reply=inbox,
            )
        except Exception as exc:
            raise _unavailable("read the log", exc) from exc
        out: list[_Msg] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            while len(out) < n:
                left = deadline - loop.time()
                try:
                    msg = await asyncio.wait_for(queue.get(), max(left, 0))
                except TimeoutError:
                    raise _unavailable("read the log", "no answer to a pull") from None
                headers = dict(msg.headers or {})
                if "Status" in headers:  # 404 no messages, 408 expired: the pull is over
                    break
                meta = msg.metadata
                out.append(
                    _Msg(msg.subject, headers, msg.data, meta.sequence.stream, meta.num_pending)
                )
                if meta.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out

    async def _walk(
        self, filter_subject: str, start: dict[str, object], *, headers_only: bool = False
    ) -> AsyncGenerator[tuple[_Msg, Batch]]:
        """Every batch from ``start`` under ``filter_subject`` with its message, pulled
        ``_PULL`` at a time through one short-lived consumer (dropped when the walk ends:
        callers that may stop early close it with ``contextlib.aclosing``)."""
        name, pending = await self._consumer(filter_subject, start, headers_only=headers_only)
        try:
            while pending:
                msgs = await self._pull(name, _PULL)
                if not msgs:
                    return
                for m in msgs:
                    pending = m.pending
                    b = self._decode(m)
                    if b is not None:
                        yield m, b
        finally:
            await self._drop(name)

    def _decode(self, m: _Msg) -> Batch | None:
        """The batch of a pulled message (headers only: no events), or None for one this
        format did not write (logged and skipped: a reader must not stop on it)."""
        try:
            return decode_batch(m.subject, m.headers, m.data, m.seq, prefix=self.root)
        except BadLogMessage as exc:
            log.warning("store.jetstream.bad_message at %d: %s", m.seq, exc)
            return None

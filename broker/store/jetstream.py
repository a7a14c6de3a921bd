"""The cluster's log: a NATS JetStream stream, one message per stored batch.

``JetStreamLog`` is the tailing part of :class:`broker.store.EventLog` (append, the commit
sequence, reads in commit order, start positions, retention). History queries by id
(``read_batches``, ``scan_batches``, ``batch_containing``) are the message logger's, served
from PostgreSQL; the cluster store puts the two together.

- **append**: each batch is one message on ``<root>.<org>.<subject>`` (the format is
  ``broker.backbone.logformat``), ``Nats-Msg-Id`` its first id, so a retried batch is stored
  once. One writer task sends in call order and never waits for an ack before sending the
  next message: many batches are in flight, and the acks, arriving in order, settle the
  calls in call order. A batch whose ack does not come within ``timeout`` (NATS down, no
  stream leader) fails with STORE_UNAVAILABLE: it is never acknowledged unstored. The
  stream's sequence is ``Batch.seq``.
- **reads** create a short-lived pull consumer (no acks, in memory) filtered server-side by
  org, and by the subscription's pattern when the caller names it, and pull bounded steps.
- **committed_seq** follows every node's commits: its own acks, a push consumer tailing the
  stream, and a poll of the stream's last sequence every second behind it (at once after a
  reconnect, when the tail is replaced).
- **follow_commits**: the tail hands every batch it receives, with its events, to the listeners
  in stream order: a node's durable consumers take every node's commits from
  memory as they are stored, rather than each reading the log back through a consumer of
  its own per step. Without listeners the tail carries headers only. A batch the tail
  missed (a slow connection, the tail replaced) is a gap in the sequences the listeners
  see; they read what they missed from the log.
- **retention**: the stream's ``max_age`` is the longest rule's when a ``>`` rule bounds
  every subject; narrower rules purge per subject by filter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.broker.backbone.logformat import (
    LOG_PREFIX,
    BadLogMessage,
    decode_batch,
    encode_batch,
    log_filter,
)
from lockgate.broker.config import redact_url
from lockgate.broker.errors import BrokerError, InvalidArgument, Unavailable
from lockgate.broker.ids import id_for_time_ms, time_ms_of
from lockgate.broker.store import SCAN_BUDGET, Batch, LogPosition, LogScan, RetentionRule
from lockgate.broker.subjects import compile_pattern
from lockgate.broker.v1.reasons import Reason

__all__ = ["JetStreamLog", "events_past_age", "events_past_count"]

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
_POLL_S = 1.0
"""How often the newest stream sequence is read, so that ``committed_seq`` follows other
nodes' commits even when the tail (below) missed them. A reconnect, the usual way the tail
misses some, polls at once; at 250 ms the poll was an eighth of an idle node's CPU."""
_HEADER_ROOM = 1024
"""Bytes of a log message's max_payload kept for its headers."""
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


def events_past_age(counts: Sequence[tuple[int, int, int]], cutoff_id: int) -> tuple[int, int]:
    """For the batches ``(seq, last_id, count)`` of one subject in stream order: the first
    sequence to keep when everything whose ids all lie below ``cutoff_id`` goes, and how many
    events go (oldest first: the first batch with a newer event stops the cut)."""
    removed = 0
    for seq, last_id, count in counts:
        if last_id >= cutoff_id:
            return seq, removed
        removed += count
    return (counts[-1][0] + 1 if counts else 0), removed


def events_past_count(counts: Sequence[tuple[int, int, int]], max_events: int) -> tuple[int, int]:
    """Like :func:`events_past_age` for keeping at most ``max_events`` events: whole
    batches go, oldest first."""
    kept = 0
    for n in range(len(counts) - 1, -1, -1):
        kept += counts[n][2]
        if kept > max_events:
            return counts[n][0] + 1, sum(c for _, _, c in counts[: n + 1])
    return (counts[0][0] if counts else 0), 0


@dataclass(slots=True)
class _Append:
    future: asyncio.Future[list[int]]
    seqs: list[int]
    left: int
    error: BrokerError | None = None
    ids: list[int] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Msg:
    subject: str
    headers: dict[str, str]
    data: bytes
    seq: int
    pending: int


class JetStreamLog:
    """The log on a JetStream stream (see the module docstring).

    Example::

        log = JetStreamLog("nats://127.0.0.1:4222", stream="LOCKGATE_LOG", replicas=3)
        await log.open()
        (seq,) = await log.append([batch])
    """

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
        self._queue: deque[_Append] = deque()
        self._waiting: dict[int, tuple[_Append, int]] = {}
        self._outbox: deque[list[tuple[int, str, dict[str, str], bytes]]] = deque()
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._numbers = itertools.count(1)
        self._inbox = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._max_age_s = -1.0
        self._tail = ""
        self._tail_lost = False
        self._tail_seq = 0
        """The newest sequence the tail brought (or the stream's when it started)."""
        self._followers: list[Callable[[Batch, int], None]] = []

    # -- life cycle -------------------------------------------------------------------------

    @property
    def nc(self) -> Any:
        """The NATS connection (open): the message logger shares it."""
        return self._nc

    async def open(self) -> None:
        from nats.aio.client import Client

        nc = Client()
        try:
            # nats-py retries a first connect for ever with max_reconnect_attempts=-1:
            # the whole opening is bounded, as the backbone's is.
            await asyncio.wait_for(
                nc.connect(
                    servers=self.url.split(","),
                    name=f"lockgate-log-{self.stream}",
                    connect_timeout=max(1, int(self.timeout)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                ),
                self.timeout,
            )
        except Exception as exc:  # nats raises several kinds (OSError, NoServersError)
            with contextlib.suppress(Exception):
                await nc.close()
            shown = redact_url(self.url, user_is_secret=True)
            raise _unavailable(f"connect to {shown}", exc) from exc
        self._nc = nc
        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(self._inbox + ".a.*", cb=self._on_ack)
        await self._nc.subscribe(self._inbox + ".t", cb=self._on_tail)
        # A NATS cluster that has just started answers JetStream requests once it has
        # elected its meta leader: nodes started with it wait a little.
        deadline = asyncio.get_running_loop().time() + max(self.timeout, 15.0)
        while True:
            try:
                await self._ensure_stream()
                break
            except Unavailable as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("store.jetstream.waiting: %s", exc)
                await asyncio.sleep(0.25)
        self._committed = max(self._committed, await self._last_seq())
        with contextlib.suppress(Unavailable):  # the poll retries it
            await self._start_tail()
        self._tasks = [
            asyncio.create_task(self._writer(), name="jetstream-log-writer"),
            asyncio.create_task(self._poll(), name="jetstream-log-poll"),
        ]

    def follow_commits(self, listener: Callable[[Batch, int], None]) -> None:
        """Hands ``listener`` every batch the tail receives and its sequence, in stream order
        (called before :meth:`open`, so the tail carries the events)."""
        self._followers.append(listener)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for entry in list(self._queue):
            if entry.error is None and entry.left:
                entry.error = _unavailable("store a batch", "the log was closed")
        self._settle()
        if self._nc is not None and self._tail:
            await self._drop(self._tail)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    async def _on_error(self, exc: Exception) -> None:
        log.warning("store.jetstream.error: %s", exc)

    async def _on_disconnect(self) -> None:
        if self._tasks:  # not at close
            log.warning(
                "store.jetstream.disconnected from %s", redact_url(self.url, user_is_secret=True)
            )

    async def _on_reconnect(self) -> None:
        # What was stored while the connection was down never reached the tail: a new
        # tail, and the stream's last sequence, now rather than at the next poll.
        self._tail_lost = True
        self._poll_now.set()

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

    async def _start_tail(self) -> None:
        """A push consumer of every batch from now on (headers only when nobody follows):
        other nodes' commits move ``committed_seq`` as they are stored, and reach the
        followers. Replaced when the poll finds it behind (a reconnect, a NATS server
        lost)."""
        if self._tail:
            await self._drop(self._tail)
        made = await self._api(
            f"CONSUMER.CREATE.{self.stream}",
            {
                "stream_name": self.stream,
                "config": {
                    "deliver_policy": "new",
                    "ack_policy": "none",
                    "filter_subject": f"{self.root}.>",
                    "deliver_subject": self._inbox + ".t",
                    "headers_only": not self._followers,
                    "mem_storage": True,
                    "num_replicas": 1,
                    "inactive_threshold": int(10e9),
                },
            },
        )
        self._tail = str(made.get("name", ""))
        self._tail_seq = max(self._tail_seq, self._committed)  # it brings what comes next

    async def _on_tail(self, msg: Any) -> None:
        if not msg.reply:  # heartbeats and flow control carry no reply subject
            return
        try:
            seq = int(msg.metadata.sequence.stream)
        except Exception:  # not a JetStream delivery: nothing to learn from it
            return
        if seq > self._committed:
            self._committed = seq
        if seq > self._tail_seq:
            self._tail_seq = seq
        if self._followers:
            batch = self._decode(_Msg(msg.subject, msg.headers, msg.data, seq, 0))
            if batch is not None:
                for listener in self._followers:
                    listener(batch, seq)

    async def _poll(self) -> None:
        delay = _POLL_S
        seen = 0  # the stream's last sequence at the previous poll
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), delay)
            self._poll_now.clear()
            try:
                last = await self._last_seq()
                self._committed = max(self._committed, last)
                # A tail that has not brought, a whole poll later, what the stream held at
                # the previous poll has lost its way: a new one.
                if seen > self._tail_seq or not self._tail or self._tail_lost:
                    self._tail_lost = False
                    await self._start_tail()
                seen = last
                delay = _POLL_S
            except Unavailable as exc:
                log.warning("store.jetstream.poll: %s", exc)
                delay = min(delay * 2, 2.0)

    # -- append -----------------------------------------------------------------------------

    def append(self, batches: Sequence[Batch]) -> asyncio.Future[list[int]]:
        """Queues ``batches`` now, in call order; the future gives their stream sequences
        once JetStream has stored them all (STORE_UNAVAILABLE when one failed or timed out)."""
        loop = asyncio.get_running_loop()
        entry = _Append(loop.create_future(), [0] * len(batches), len(batches))
        self._queue.append(entry)
        if self._nc is None:
            entry.error = _unavailable("store a batch", "the log is not open")
            self._settle()
            return entry.future
        msgs = []
        room = self._nc.max_payload - _HEADER_ROOM
        for batch in batches:
            if len(batch.body) > room:
                # Not retryable: the same batch never fits (a NATS server's max_payload is
                # 1 MiB unless configured; a publish frame near max_message_bytes needs more).
                entry.error = InvalidArgument(
                    f"a batch of {len(batch.body)} bytes is larger than the NATS server's "
                    f"max_payload of {self._nc.max_payload} bytes",
                    reason=Reason.EVENT_TOO_LARGE,
                    hint="publish smaller frames, or raise max_payload in the NATS server's "
                    "configuration (8MB is usual) above max_message_bytes",
                    metadata={"size": str(len(batch.body)), "limit": str(room)},
                )
                self._settle()
                return entry.future
        for n, batch in enumerate(batches):
            number = next(self._numbers)
            self._waiting[number] = (entry, n)
            entry.ids.append(number)
            msgs.append((number, *encode_batch(batch, prefix=self.root)))
        if msgs:
            self._outbox.append(msgs)
            self._wake.set()
            entry.timer = loop.call_later(self.timeout, self._expire, entry)
        else:
            self._settle()
        return entry.future

    async def _writer(self) -> None:
        """Sends queued messages in call order, without waiting for their acks."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                for number, subject, headers, body in self._outbox.popleft():
                    waiting = self._waiting.get(number)
                    if waiting is None:
                        continue  # its call failed already (timed out)
                    try:
                        await self._nc.publish(
                            subject, body, reply=f"{self._inbox}.a.{number}", headers=headers
                        )
                    except Exception as exc:
                        self._fail(waiting[0], _unavailable("send a batch", exc))

    async def _on_ack(self, msg: Any) -> None:
        number = int(msg.subject.rpartition(".")[2])
        waiting = self._waiting.pop(number, None)
        if waiting is None:
            return
        entry, n = waiting
        status = (msg.headers or {}).get("Status")
        if status:  # 503: no stream takes these subjects (or none has a leader now)
            reason = f"no JetStream stream answered (status {status})"
            self._fail(entry, _unavailable("store a batch", reason))
            return
        try:
            ack = json.loads(msg.data)
        except ValueError:
            ack = {"error": {"description": "an unreadable acknowledgement"}}
        if "error" in ack or "seq" not in ack:
            error = ack.get("error", {}).get("description", "no sequence")
            self._fail(entry, _unavailable("store a batch", error))
            return
        seq = int(ack["seq"])
        entry.seqs[n] = seq
        if seq > self._committed:
            self._committed = seq
        entry.left -= 1
        if entry.left == 0:
            self._settle()

    def _fail(self, entry: _Append, error: Unavailable) -> None:
        if entry.error is None:
            entry.error = error
        for number in entry.ids:
            self._waiting.pop(number, None)
        self._settle()

    def _expire(self, entry: _Append) -> None:
        if entry.left and entry.error is None:
            waited = f"no acknowledgement within {self.timeout:g} s"
            self._fail(entry, _unavailable("store a batch", waited))

    def _settle(self) -> None:
        """Completes finished calls from the oldest, so callers hear in call order."""
        queue = self._queue
        while queue and (queue[0].left == 0 or queue[0].error is not None):
            entry = queue.popleft()
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.future.done():
                continue
            if entry.error is not None:
                entry.future.set_exception(entry.error)
            else:
                entry.future.set_result(entry.seqs)

    def committed_seq(self) -> int:
        return self._committed

    # -- reads ------------------------------------------------------------------------------

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

    def _start(self, seq: int) -> dict[str, object]:
        if seq <= 1:
            return {"deliver_policy": "all"}
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": seq}

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]:
        scan = await self.scan_log(org, start, _everything, limit=limit, budget=limit)
        return scan.batches

    async def scan_log(
        self,
        org: str,
        start: LogPosition,
        match: Callable[[str], bool],
        *,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
        pattern: str | None = None,
    ) -> LogScan:
        """Batches of ``org`` from ``start`` whose subject ``match`` accepts, in commit order:
        the consumer's filter holds the org (and ``pattern`` when given), so what it skips
        costs nothing here; ``budget`` bounds the messages looked at in this step."""
        name, pending = await self._consumer(
            log_filter(org, pattern or ">", prefix=self.root), self._start(start.seq)
        )
        found: list[Batch] = []
        nxt = start.seq
        looked = 0
        try:
            while pending and looked < budget and len(found) < limit:
                want = min(budget - looked, limit - len(found) if pattern else _PULL, pending)
                msgs = await self._pull(name, want)
                if not msgs:
                    pending = 0
                    break
                for m in msgs:
                    looked += 1
                    nxt = m.seq + 1
                    pending = m.pending
                    batch = self._decode(m)
                    if batch is not None and batch.org == org and match(batch.subject):
                        found.append(batch)
                        if len(found) >= limit:
                            break
        finally:
            await self._drop(name)
        return LogScan(found, nxt, pending == 0)

    def _decode(self, m: _Msg) -> Batch | None:
        """The batch of a pulled message (headers only: no events), or None for one this
        format did not write (logged and skipped: a reader must not stop on it)."""
        try:
            return decode_batch(m.subject, m.headers, m.data, m.seq, prefix=self.root)
        except BadLogMessage as exc:
            log.warning("store.jetstream.bad_message at %d: %s", m.seq, exc)
            return None

    async def position_after_id(self, event_id: int) -> LogPosition:
        """The first batch (by sequence) holding an id above ``event_id``, read from a little
        before that id's time; the reader skips its ids up to ``event_id``."""
        since = time_ms_of(event_id) - _MARGIN_MS
        when = datetime.datetime.fromtimestamp(max(since, 0) / 1000, datetime.UTC)
        name, pending = await self._consumer(
            log_filter(None, prefix=self.root),
            {"deliver_policy": "by_start_time", "opt_start_time": when.isoformat()},
            headers_only=True,
        )
        try:
            while pending:
                msgs = await self._pull(name, _PULL)
                if not msgs:
                    break
                for m in msgs:
                    b = self._decode(m)
                    if b is not None and b.last_id > event_id:
                        return LogPosition(m.seq, event_id)
                    pending = m.pending
        finally:
            await self._drop(name)
        return LogPosition(max(self._committed, await self._last_seq()) + 1, 0)

    async def batch_containing(self, org: str, event_id: int) -> Batch | None:
        """The batch of ``org`` holding ``event_id``, read from the log (for what the
        history has not logged yet): from the first batch holding an id at or above it, a
        bounded look at the org's next batches (another node's clock may order them a
        little differently)."""
        start = await self.position_after_id(max(0, event_id - 1))
        scan = await self.scan_log(org, LogPosition(start.seq), _everything, limit=64, budget=256)
        for b in scan.batches:
            if b.first_id <= event_id <= b.last_id:
                return b
        return None

    async def recent_batches(self, after_id: int) -> list[Batch]:
        """Every org's batches above ``after_id`` (at most 10,000, by id): the dedup window's
        rebuild. A cluster with the shared (Redis) window does not need it."""
        since = time_ms_of(after_id) - _MARGIN_MS if after_id else 0
        when = datetime.datetime.fromtimestamp(max(since, 0) / 1000, datetime.UTC)
        start: dict[str, object] = (
            {"deliver_policy": "by_start_time", "opt_start_time": when.isoformat()}
            if after_id
            else {"deliver_policy": "all"}
        )
        name, pending = await self._consumer(log_filter(None, prefix=self.root), start)
        out: list[Batch] = []
        try:
            while pending and len(out) < 10_000:
                msgs = await self._pull(name, _PULL)
                if not msgs:
                    break
                for m in msgs:
                    pending = m.pending
                    b = self._decode(m)
                    if b is not None and b.first_id > after_id:
                        out.append(b)
        finally:
            await self._drop(name)
        out.sort(key=lambda b: b.first_id)
        return out

    async def last_id(self) -> int:
        """The last id of the newest batch (the id generator's floor at start)."""
        seq = await self._last_seq()
        if not seq:
            return 0
        got = await self._api(f"STREAM.MSG.GET.{self.stream}", {"seq": seq})
        if "error" in got:
            return 0
        message = got["message"]
        headers = _parse_headers(base64.b64decode(message.get("hdrs", "")))
        b = self._decode(_Msg(message["subject"], headers, b"", seq, 0))
        return b.last_id if b is not None else 0

    # -- retention --------------------------------------------------------------------------

    async def _subjects(self) -> dict[str, int]:
        """Every stored NATS subject of the log and its message count."""
        out: dict[str, int] = {}
        offset = 0
        while True:
            info = await self._api(
                f"STREAM.INFO.{self.stream}",
                {"subjects_filter": f"{self.root}.>", "offset": offset},
            )
            if "error" in info:
                raise _unavailable("list the log's subjects", info["error"].get("description"))
            page = info.get("state", {}).get("subjects") or {}
            out.update(page)
            offset += len(page)
            if not page or offset >= int(info.get("total", 0)):
                return out

    async def _counts(self, nats_subject: str) -> list[tuple[int, int, int]]:
        """``(seq, last_id, count)`` of every batch of one subject, from its headers."""
        name, pending = await self._consumer(
            nats_subject, {"deliver_policy": "all"}, headers_only=True
        )
        out: list[tuple[int, int, int]] = []
        try:
            while pending:
                msgs = await self._pull(name, _PULL)
                if not msgs:
                    break
                for m in msgs:
                    pending = m.pending
                    b = self._decode(m)
                    if b is not None:
                        out.append((m.seq, b.last_id, b.count))
        finally:
            await self._drop(name)
        return out

    async def _purge(self, nats_subject: str, keep_from: int) -> None:
        done = await self._api(
            f"STREAM.PURGE.{self.stream}", {"filter": nats_subject, "seq": keep_from}
        )
        if "error" in done:
            raise _unavailable("purge the log", done["error"].get("description"))

    async def trim(self, rules: Sequence[RetentionRule], now_ms: int) -> int:
        """Applies ``rules``; returns the events removed by purges (what the stream's
        ``max_age`` removes on its own is not counted)."""
        wide = [r.max_age_ms for r in rules if r.pattern == ">" and r.max_age_ms]
        longest = max((r.max_age_ms for r in rules), default=0) if wide else 0
        if longest / 1000 != self._max_age_s:
            await self._update_stream(longest / 1000)
        subjects = await self._subjects()
        removed = 0
        for rule in rules:
            match = compile_pattern(rule.pattern)
            for nats_subject in subjects:
                # <prefix>.<org token>.<subject>: a token holds no ".".
                subject = nats_subject[len(self.root) + 1 :].partition(".")[2]
                if not match(subject):
                    continue
                counts = await self._counts(nats_subject)
                if rule.max_age_ms:
                    cut, gone = events_past_age(counts, id_for_time_ms(now_ms - rule.max_age_ms))
                    if gone:
                        await self._purge(nats_subject, cut)
                        removed += gone
                        counts = [c for c in counts if c[0] >= cut]
                if rule.max_events:
                    cut, gone = events_past_count(counts, rule.max_events)
                    if gone:
                        await self._purge(nats_subject, cut)
                        removed += gone
        return removed


def _everything(subject: str) -> bool:
    return True

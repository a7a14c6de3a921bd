"""The cluster log's message format, the one copy (pure: no I/O, no NATS import).

The cluster log is the JetStream stream ``LOCKGATE_LOG``: ONE message per stored batch, so
JetStream's per-message cost is shared by the whole batch. Its writer (the node that
commits a batch) and its readers (tailing nodes, the message logger that copies it into
PostgreSQL) agree on it through :func:`encode_batch` and :func:`decode_batch` alone:

* subject ``lglog.<org token>.<subject>``: the org as one NATS token (:func:`org_token`:
  ASCII letters, digits, ``_`` and ``-`` as they are, every other byte of its UTF-8 as
  ``%XX``, the empty org as ``~``), then the event subject as it is (a valid subject holds
  no whitespace and no wildcard, so it is valid NATS);
* body: the batch body (the events' delivery frames, ``broker.wire``), as stored;
* headers: ``Lg-First``, ``Lg-Last``, ``Lg-Count`` (decimal), ``Lg-Policy`` (the policy
  version that admitted it) and ``Lg-Publisher`` (``broker.publisher``'s text), both
  percent-encoded (a header holds ASCII only); ``Nats-Msg-Id`` = the first id, so a
  retried append is stored once (ids are unique across nodes).

``Batch.seq`` is the message's stream sequence, which only the stream knows: the reader
passes it to :func:`decode_batch`.

Example::

    subject, headers, body = encode_batch(batch)
    await js.publish(subject, body, headers=headers)
    ...
    batch = decode_batch(msg.subject, msg.headers, msg.data, msg.metadata.sequence.stream)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, unquote

from lockgate.broker.store import Batch

__all__ = [
    "LOG_PREFIX",
    "LOG_STREAM",
    "BadLogMessage",
    "decode_batch",
    "encode_batch",
    "log_filter",
    "log_subject",
    "org_of_token",
    "org_token",
]

LOG_STREAM = "LOCKGATE_LOG"
LOG_PREFIX = "lglog"

_H_FIRST = "Lg-First"
_H_LAST = "Lg-Last"
_H_COUNT = "Lg-Count"
_H_POLICY = "Lg-Policy"
_H_PUBLISHER = "Lg-Publisher"
_H_MSG_ID = "Nats-Msg-Id"

_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")
# JSON punctuation stays readable in the publisher header; the rest is escaped.
_HEADER_SAFE = "[]\",:{}|/@+=!*()'_.-~"


class BadLogMessage(ValueError):
    """A message on the log's subjects that is not a batch in this format (a foreign
    publisher, a damaged header): readers log it and skip it rather than stop."""


def org_token(org: str) -> str:
    """``org`` as one NATS subject token.

    >>> org_token("acme"), org_token("a.b c"), org_token("")
    ('acme', 'a%2Eb%20c', '~')
    """
    if _PLAIN_TOKEN.match(org):
        return org
    if not org:
        return "~"
    # quote() keeps "." and "~" (RFC 3986 unreserved): one splits tokens, one means "".
    return quote(org, safe="").replace(".", "%2E").replace("~", "%7E")


def org_of_token(token: str) -> str:
    """The org :func:`org_token` made ``token`` from."""
    return "" if token == "~" else unquote(token, errors="strict")


def log_subject(org: str, subject: str, *, prefix: str = LOG_PREFIX) -> str:
    """The log subject of ``subject`` in ``org``. ``prefix``: the setting
    ``backbone_prefix`` + ``log`` (two clusters, or two tests, on one NATS)."""
    return f"{prefix}.{org_token(org)}.{subject}"


def log_filter(org: str | None, pattern: str = ">", *, prefix: str = LOG_PREFIX) -> str:
    """The JetStream filter subject of a subject pattern of ``org`` (same ``*``/``>``;
    ``org`` None: every org). A pattern whose first token is a wildcard leaves out the
    broker's ``$`` subjects and NATS's does not: the filter is a superset, readers still
    match each subject."""
    return f"{prefix}.{'*' if org is None else org_token(org)}.{pattern}"


def encode_batch(batch: Batch, *, prefix: str = LOG_PREFIX) -> tuple[str, dict[str, str], bytes]:
    """The log message of ``batch``: subject, headers, body."""
    headers = {
        _H_FIRST: str(batch.first_id),
        _H_LAST: str(batch.last_id),
        _H_COUNT: str(batch.count),
        _H_POLICY: quote(batch.policy_version, safe=_HEADER_SAFE),
        _H_PUBLISHER: quote(batch.publisher, safe=_HEADER_SAFE),
        _H_MSG_ID: str(batch.first_id),
    }
    return log_subject(batch.org, batch.subject, prefix=prefix), headers, batch.body


def _int(headers: Mapping[str, str], name: str) -> int:
    text = headers.get(name, "")
    if not text.isascii() or not text.isdigit():
        raise BadLogMessage(f"header {name} is {text!r}, not a decimal number")
    return int(text)


def decode_batch(
    subject: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    seq: int = 0,
    *,
    prefix: str = LOG_PREFIX,
) -> Batch:
    """The batch of one log message (``seq``: its stream sequence); raises
    :class:`BadLogMessage` when it is not one. A headers-only message (``body`` empty)
    gives the batch's ids and count without its events."""
    head, _, rest = subject.partition(".")
    token, _, event_subject = rest.partition(".")
    if head != prefix or not token or not event_subject:
        raise BadLogMessage(f"subject {subject!r} is not {prefix}.<org>.<subject>")
    if headers is None:
        raise BadLogMessage(f"the message on {subject!r} has no headers")
    try:
        org = org_of_token(token)
        policy = unquote(headers.get(_H_POLICY, ""), errors="strict")
        publisher = unquote(headers.get(_H_PUBLISHER, ""), errors="strict")
    except UnicodeDecodeError as exc:
        raise BadLogMessage(f"the message on {subject!r} has a bad escape: {exc}") from None
    first, last, count = _int(headers, _H_FIRST), _int(headers, _H_LAST), _int(headers, _H_COUNT)
    if not 0 < first <= last or count < 1:
        raise BadLogMessage(f"the message on {subject!r} holds ids {first}..{last} ({count})")
    return Batch(
        first_id=first,
        last_id=last,
        org=org,
        subject=event_subject,
        count=count,
        policy_version=policy,
        body=body,
        publisher=publisher,
        seq=seq,
    )

"""What :class:`~broker.backbone.nats.NatsBackbone` puts on core NATS, the one copy (pure: no
I/O, no NATS import).

Subjects, with ``lg`` the default prefix:

* ``lgfan.<org>.<subject>``: a committed batch for the other nodes' ephemeral subscribers;
  ``lgreq.<org>.<subject>``: a request. A node subscribes the same shape with its patterns
  (``lgfan.acme.orders.>``), so NATS's wildcards do Lockgate's matching;
* the broker's own ``$`` subjects travel under ``lgsysfan`` / ``lgsysreq`` instead: a
  Lockgate pattern that starts with a wildcard never matches them (the ``$`` rule), and
  keeping them under another prefix makes NATS agree (``lgfan.acme.>`` cannot reach
  ``$dlq.orders``), which matters for queue groups: NATS must not pick a node whose member
  would refuse the event;
* ``lgreply.<node>.<org>.<inbox>``: a reply, to the node whose request waits on ``inbox``
  (inboxes are ``$inbox.<node id>.<random>``, so any node can tell where one waits);
* ``lgnode.<node>`` and ``lgnode.<node>.call``: a message or a call to one node (a
  durable's owner and its relays);
* ``lgnotice.<kind>``: a notice, headers ``Lg-Node`` (the node that sent it), ``Lg-Org``,
  ``Lg-Name`` (percent-escaped) and ``Lg-Origin``.

The org (and a node id, a queue group's name) is one NATS token by
:func:`~broker.backbone.logformat.org_token` (the cluster log's rule). A valid Lockgate
subject is already valid NATS as it is: its tokens hold no whitespace, no control
character and no wildcard (``policy.subjects``), and NATS refuses only those; a pattern's
``*`` and ``>`` are whole tokens, as in NATS. A queue group is ``<org>.<group>`` (both
tokens), so equal group names of two orgs are two NATS groups.

Headers of a batch or request: ``Lg-Ids`` (the ids as runs, ``41-43,47``), ``Lg-Count``,
``Lg-Origin`` (the publishing connection, so it skips its own batches: it delivered them
to its members directly).

Example::

    names = Names("lg")
    names.fan("acme", "orders.eu")          # 'lgfan.acme.orders.eu'
    names.parse("lgfan.acme.orders.eu")     # ('acme', 'orders.eu')
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from lockgate.broker.backbone.logformat import org_of_token, org_token
from lockgate.policy.subjects import is_system

__all__ = [
    "H_COUNT",
    "H_HEARD",
    "H_IDS",
    "H_NAME",
    "H_NODE",
    "H_ORG",
    "H_ORIGIN",
    "BadMessage",
    "Names",
    "decode_ids",
    "encode_ids",
    "header_text",
    "node_of_inbox",
    "text_of_header",
]

H_IDS = "Lg-Ids"
H_COUNT = "Lg-Count"
H_ORIGIN = "Lg-Origin"
H_HEARD = "Lg-Heard"
H_NODE = "Lg-Node"
H_ORG = "Lg-Org"
H_NAME = "Lg-Name"


class BadMessage(ValueError):
    """A message on the backbone's subjects that is not in this format (a foreign publisher,
    a damaged header): the receiver logs it and drops it."""


@dataclass(frozen=True, slots=True)
class Names:
    """The backbone's subjects under one prefix (tests take a fresh one each)."""

    prefix: str = "lg"

    def _kind(self, kind: str, subject: str) -> str:
        return f"{self.prefix}sys{kind}" if is_system(subject) else f"{self.prefix}{kind}"

    def fan(self, org: str, subject: str) -> str:
        """The subject of a batch of ``subject`` (or the filter of a pattern)."""
        return f"{self._kind('fan', subject)}.{org_token(org)}.{subject}"

    def req(self, org: str, subject: str) -> str:
        """The subject of a request to ``subject`` (or the filter of a pattern)."""
        return f"{self._kind('req', subject)}.{org_token(org)}.{subject}"

    def parse(self, nats_subject: str) -> tuple[str, str]:
        """``(org, subject)`` of a batch or request subject."""
        _, _, rest = nats_subject.partition(".")
        token, _, subject = rest.partition(".")
        if not token or not subject:
            raise BadMessage(f"subject {nats_subject!r} is not <kind>.<org>.<subject>")
        try:
            return org_of_token(token), subject
        except UnicodeDecodeError:
            raise BadMessage(f"subject {nats_subject!r} has a bad org escape") from None

    @staticmethod
    def queue(org: str, group: str) -> str:
        """The NATS queue group of the Lockgate queue group ``group`` of ``org``."""
        return f"{org_token(org)}.{org_token(group)}"

    def reply(self, node: str, org: str, inbox: str) -> str:
        return f"{self.prefix}reply.{org_token(node)}.{org_token(org)}.{inbox}"

    def replies(self, node: str) -> str:
        """The filter on which ``node`` receives the replies to its requests."""
        return f"{self.prefix}reply.{org_token(node)}.>"

    @staticmethod
    def parse_reply(nats_subject: str) -> tuple[str, str]:
        """``(org, inbox)`` of a reply subject."""
        parts = nats_subject.split(".", 3)
        if len(parts) != 4:
            raise BadMessage(f"subject {nats_subject!r} is not <kind>.<node>.<org>.<inbox>")
        try:
            return org_of_token(parts[2]), parts[3]
        except UnicodeDecodeError:
            raise BadMessage(f"subject {nats_subject!r} has a bad org escape") from None

    def node(self, node: str) -> str:
        """Where :meth:`~broker.backbone.Backbone.send` reaches ``node``."""
        return f"{self.prefix}node.{org_token(node)}"

    def node_call(self, node: str) -> str:
        """Where :meth:`~broker.backbone.Backbone.call` reaches ``node``."""
        return f"{self.prefix}node.{org_token(node)}.call"

    def notice(self, kind: str) -> str:
        return f"{self.prefix}notice.{kind}"

    def notices(self) -> str:
        return f"{self.prefix}notice.*"

    def kind_of_notice(self, nats_subject: str) -> str:
        return nats_subject[len(self.prefix) + len("notice.") :]


def node_of_inbox(inbox: str) -> str:
    """The node id an inbox names (``$inbox.<node>.<random>``), or "" for another shape."""
    parts = inbox.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "$inbox" else ""


def encode_ids(ids: list[int]) -> str:
    """Event ids as runs of consecutive ones (a batch's ids are one run, rarely two).

    >>> encode_ids([41, 42, 43, 47])
    '41-43,47'
    """
    if not ids:
        return ""
    first, last = ids[0], ids[-1]
    if last - first == len(ids) - 1:
        # Ids rise within a batch, so this is one run: no walk over every id per fan-out.
        return f"{first}-{last}" if last != first else str(first)
    runs: list[str] = []
    start = prev = ids[0]
    for i in ids[1:]:
        if i == prev + 1:
            prev = i
            continue
        runs.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = i
    runs.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(runs)


def decode_ids(text: str, limit: int) -> list[int]:
    """The ids :func:`encode_ids` wrote; at most ``limit`` of them (a header is untrusted
    input: ``1-99999999999`` must not become a list of that many)."""
    ids: list[int] = []
    if not text:
        return ids
    for run in text.split(","):
        first, sep, last = run.partition("-")
        if not _digits(first) or (sep and not _digits(last)):
            raise BadMessage(f"header {H_IDS} holds {run!r}, not an id or a run of ids")
        lo = int(first)
        hi = int(last) if sep else lo
        if hi < lo or len(ids) + hi - lo + 1 > limit:
            raise BadMessage(f"header {H_IDS} holds more ids than the batch ({limit})")
        ids.extend(range(lo, hi + 1))
    return ids


def _digits(text: str) -> bool:
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def header_text(text: str) -> str:
    """``text`` as a header value (ASCII without spaces: percent-escaped)."""
    return quote(text, safe="-_.~")


def text_of_header(value: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise BadMessage(f"header value {value!r} has a bad escape") from None

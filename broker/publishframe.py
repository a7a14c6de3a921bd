"""Publish frames read at the byte level: the Publish stream's fast path (pure, no I/O).

A ``PublishRequest`` is a subject, a batch id and the events as serialized ``CloudEvent`` s.
The broker stores and delivers each event's bytes as they came, so from each event it needs
only what validation, deduplication and the policies read: the id and the source (the type
for policies). Encoders write an event as its id (field 1), then the attributes most events
of a publisher share (source, specversion, type and the attribute map: the *head*), then
the data (field 6 or 7): the client's encoder does, and so does protobuf's serializer
(fields in number order). :class:`FrameReader` splits a frame into event slices, reads each
id, and recognises the head by comparing bytes with heads it checked before: one protobuf
parse and one CloudEvents check per distinct head, not per event.

A frame with anything else (another layout, an unknown field, an invalid or oversized
attribute, ``proto_data``, a truncated varint, invalid UTF-8) is not read here:
:meth:`FrameReader.read` answers None and the caller parses it with protobuf and checks
each event, so results and errors are exactly those of the general path.

Example::

    reader = FrameReader()
    frame = reader.read(raw)            # raw: the bytes of a PublishRequest
    if frame is not None:
        subject, batch_id, events = frame   # events: ScannedEvents (all valid)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat
from typing import overload

from google.protobuf.message import DecodeError

from lockgate.broker import cloudevents
from lockgate.broker.bounds import MAX_EVENT_SOURCE
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.broker.wire import encode_varint, read_varint

__all__ = ["FrameReader", "ScannedEvents", "Std"]

CloudEvent = cloudevent_pb2.CloudEvent

Std = tuple[str, str, str, str, object]
"""What validation read of an event: ``(id, source, type, specversion, attributes)``; the
attributes are the protobuf map on the general path, None here (already checked)."""

_HEAD_TAGS = frozenset((0x12, 0x1A, 0x22, 0x2A))  # source, spec_version, type, attributes
_DATA_TAGS = frozenset((0x32, 0x3A, 0x42))  # binary_data, text_data, proto_data
_MAX_HEADS = 256
_MAX_HEAD_BYTES = 2048  # larger heads (many attributes) take the general path
_MAX_U64 = (1 << 64) - 1
_ONE_BY_ONE = 8  # events parsed singly before the whole frame is
_MIN_RUN = 16
"""Events after the first that may be read as a run of alike ones: an expression costs about
100 us to compile (once per layout), the loop about 1 us per event."""


class ScannedEvents(Sequence[CloudEvent]):
    """The valid events of a frame :class:`FrameReader` read: their wire bytes
    (:attr:`raws`), ids and sources. Indexing parses events into ``CloudEvent`` s on use
    (telemetry reads the first one's trace context, policies may read every event's data):
    a few events one by one, then the whole frame in one protobuf parse, as the general
    path would have."""

    __slots__ = ("_all", "_frame", "_parsed", "_std", "ids", "raws", "sources", "types")

    def __init__(
        self,
        raws: list[bytes],
        ids: list[str],
        sources: list[str],
        types: list[str],
        frame: bytes = b"",
    ) -> None:
        self.raws = raws
        self.ids = ids
        self.sources = sources
        self.types = types
        self._frame = frame
        self._std: list[Std] | None = None
        self._parsed: dict[int, CloudEvent] = {}
        self._all: list[CloudEvent] | None = None

    def __len__(self) -> int:
        return len(self.raws)

    @overload
    def __getitem__(self, i: int) -> CloudEvent: ...

    @overload
    def __getitem__(self, i: slice) -> list[CloudEvent]: ...

    def __getitem__(self, i: int | slice) -> CloudEvent | list[CloudEvent]:
        if self._all is not None:
            return self._all[i]
        if isinstance(i, slice) or len(self._parsed) >= _ONE_BY_ONE:
            if self._frame:
                self._all = list(broker_pb2.PublishRequest.FromString(self._frame).events)
            else:
                self._all = list(map(CloudEvent.FromString, self.raws))
            return self._all[i]
        if i < 0:
            i += len(self.raws)
        ev = self._parsed.get(i)
        if ev is None:
            ev = self._parsed[i] = CloudEvent.FromString(self.raws[i])
        return ev

    @property
    def std(self) -> list[Std]:
        """``(id, source, type, specversion, None)`` per event, as the general path's
        validation gives them (built on first use: the policies read it)."""
        if self._std is None:
            n = len(self.raws)
            self._std = list(
                zip(
                    self.ids,
                    self.sources,
                    self.types,
                    repeat("1.0", n),
                    repeat(None, n),
                    strict=True,
                )
            )
        return self._std

    def keys(self, org: str) -> list[tuple[str, str, str]]:
        """The dedup key ``(org, source, id)`` of every event."""
        return list(zip(repeat(org, len(self.raws)), self.sources, self.ids, strict=True))


class FrameReader:
    """Reads ``PublishRequest`` frames whose events are all valid and laid out as
    id + head + data (see the module); remembers the heads it found valid. One per
    Publish stream: a publisher's events share few heads."""

    def __init__(self) -> None:
        self._heads: dict[bytes, tuple[str, str] | None] = {}
        self._layouts: dict[tuple[bytes, bytes, int], re.Pattern[bytes]] = {}

    def read(self, raw: bytes) -> tuple[str, int, ScannedEvents] | None:
        """``(subject, batch_id, events)``, or None: parse ``raw`` with protobuf."""
        try:
            return self._read(raw)
        except (IndexError, UnicodeDecodeError):
            return None  # truncated or not UTF-8: the parser gives the exact error

    def _read(self, raw: bytes) -> tuple[str, int, ScannedEvents] | None:
        # One pass over the frame, per event only index arithmetic, a bytes comparison and
        # two slices: this loop is the per-event cost of the Publish stream.
        subject = ""
        batch_id = 0
        raws: list[bytes] = []
        idbs: list[bytes] = []
        runs: list[tuple[int, str, str]] = []  # (first event, source, type) per head change
        add_raw = raws.append
        add_id = idbs.append
        head = b""
        hlen = -1  # no head recognised yet: the first event looks its head up
        end = len(raw)
        pos = 0
        while pos < end:
            tag = raw[pos]
            if tag != 0x12:
                if tag == 0x0A:
                    n, pos = read_varint(raw, pos + 1)
                    if pos + n > end:
                        return None
                    subject = raw[pos : pos + n].decode()
                    pos += n
                elif tag == 0x18:
                    batch_id, pos = read_varint(raw, pos + 1)
                    if batch_id > _MAX_U64:
                        return None
                else:
                    return None
                continue
            # An event: tag 0x12, its length, its bytes; the id first (field 1). Varints of
            # one and two bytes are read inline here and for the data below, not by
            # read_varint: a call per event would cost as much as the rest of this loop.
            n = raw[pos + 1]
            if n < 0x80:
                start = pos + 2
            elif raw[pos + 2] < 0x80:
                n = (n & 0x7F) | (raw[pos + 2] << 7)
                start = pos + 3
            else:
                n, start = read_varint(raw, pos + 1)
            stop = start + n
            m = raw[start + 1]
            if raw[start] != 0x0A or not 0 < m < 0x80 or stop > end:
                return None  # no id first, or an empty or long one (> 127 bytes, which
                # MAX_EVENT_ID may allow: the general path judges it)
            h = start + 2 + m
            # The head: the same bytes as the previous event's, or looked up.
            if hlen >= 0 and raw.startswith(head, h):
                q = h + hlen
            else:
                q = _head_end(raw, h, stop)
                if q < 0 or q - h > _MAX_HEAD_BYTES:
                    return None
                head = raw[h:q]
                known = self._check(head)
                if known is None:
                    return None
                runs.append((len(raws), *known))
                hlen = len(head)
            # The data, last and alone: binary_data or text_data (UTF-8, checked below).
            r = stop
            if q != stop:
                d = raw[q + 1]
                if d < 0x80:
                    r = q + 2
                elif raw[q + 2] < 0x80:
                    d = (d & 0x7F) | (raw[q + 2] << 7)
                    r = q + 3
                else:
                    d, r = read_varint(raw, q + 1)
                if r + d != stop:
                    return None
                d = raw[q]
                if d != 0x32:
                    if d != 0x3A:
                        return None
                    raw[r:stop].decode()
            add_raw(raw[start:stop])
            add_id(raw[start + 2 : h])
            pos = stop
            if len(raws) == 1:  # the first event: the next ones are often laid out alike
                pos = self._alike(
                    raw, start - 1 - len(encode_varint(n)), start, h, r, stop, raws, idbs
                )
        ids = _decode_all(idbs)
        n = len(raws)
        if len(runs) == 1:
            sources = [runs[0][1]] * n
            types = [runs[0][2]] * n
        else:
            sources, types = [], []
            for k, (first, source, type_) in enumerate(runs):
                upto = runs[k + 1][0] if k + 1 < len(runs) else n
                sources += [source] * (upto - first)
                types += [type_] * (upto - first)
        return subject, batch_id, ScannedEvents(raws, ids, sources, types, raw)

    def _alike(
        self,
        raw: bytes,
        at: int,
        start: int,
        h: int,
        r: int,
        stop: int,
        raws: list[bytes],
        idbs: list[bytes],
    ) -> int:
        """Reads the events after the one at ``raw[at:stop]`` that are laid out as it is
        (the same length, head and data size; ids of its id's length) and returns where
        they end: one regular expression matches them all, in C, and picks their ids out.
        The expression is exact (every byte but the id's and the data's is the first
        event's), so what it reads the loop would have read the same way; it reads nothing
        when the events differ, and the loop reads on."""
        size = stop - at
        count = (len(raw) - stop) // size
        if count < _MIN_RUN:
            return stop
        key = (raw[at : start + 2], raw[h:r], stop - r)
        like = self._layouts.get(key)
        if like is None:
            if len(self._layouts) >= _MAX_HEADS:
                self._layouts.clear()
            like = self._layouts[key] = re.compile(
                re.escape(key[0])
                + b"(.{%d})" % (h - start - 2)
                + re.escape(key[1])
                + b".{%d}" % key[2],
                re.DOTALL,
            )
        ids = like.findall(raw, stop, stop + count * size)
        if len(ids) != count:
            # Fewer: a batch id or unlike events after the run; the matches are the run only
            # if that many of them fill exactly its bytes (non-overlapping, of one length).
            count = len(ids)
            if not count or len(like.findall(raw, stop, stop + count * size)) != count:
                return stop
        end = stop + count * size
        skip = start - at  # an event's tag and length
        length = stop - start
        if r < stop and raw[r - 1 - len(encode_varint(stop - r))] == 0x3A:  # text_data
            data = length - (stop - r)
            for p in range(stop + skip + data, end, size):
                raw[p : p + stop - r].decode()
        raws += [raw[p : p + length] for p in range(stop + skip, end, size)]
        idbs += ids
        return end

    def _check(self, head: bytes) -> tuple[str, str] | None:
        heads = self._heads
        if head in heads:
            return heads[head]
        known = _check_head(head)
        if len(heads) >= _MAX_HEADS:
            heads.clear()
        heads[head] = known
        return known


def _decode_all(parts: list[bytes]) -> list[str]:
    """The UTF-8 text of each part, in one decode when no part holds a NUL."""
    ids = b"\x00".join(parts).decode().split("\x00")
    if len(ids) != len(parts):
        ids = [p.decode() for p in parts]
    return ids


def _head_end(raw: bytes, pos: int, stop: int) -> int:
    """Where the head starting at ``pos`` ends (the data field or the event's end); -1
    when a field there is not a head field (an id again, an unknown field)."""
    while pos < stop:
        tag = raw[pos]
        if tag in _DATA_TAGS:
            return pos
        if tag not in _HEAD_TAGS:
            return -1
        n, pos = read_varint(raw, pos + 1)
        pos += n
    return pos if pos == stop else -1


def _check_head(head: bytes) -> tuple[str, str] | None:
    """``(source, type)`` of a head whose attributes are valid, else None."""
    try:
        ev = CloudEvent.FromString(head)
    except DecodeError:
        return None
    if not (ev.spec_version == "1.0" and ev.type and 0 < len(ev.source) <= MAX_EVENT_SOURCE):
        return None
    if ev.attributes and cloudevents.check_attributes(ev.attributes) is not None:
        return None
    return ev.source, ev.type

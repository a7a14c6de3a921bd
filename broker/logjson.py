"""The broker's log lines: plain text (default) or JSON lines (``log_format = "json"``).

A JSON line carries a stable ``event`` name, so a log pipeline can count and alert on it
without matching prose. The house convention names the event at the start of the message
(``log.warning("history.logger.write_failed: %s", exc)``; tests/test_log_events.py holds
every call of ours to it); a line from another library gets ``"event": "unnamed"`` and its
unformatted ``template``, which is stable too. The
current span's trace and span ids come along when there is a recorded span.

>>> import logging
>>> r = logging.LogRecord("lockgate", logging.INFO, "f", 1, "tls.reloaded: %s", ("a",), None)
>>> JsonFormatter().format(r)  # doctest: +ELLIPSIS
'{"ts": "...", "level": "info", "logger": "lockgate", "event": "tls.reloaded", "message": "a"}'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys

from lockgate.broker.errors import InvalidArgument

__all__ = ["JsonFormatter", "setup_logging"]

_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# "history.logger.write_failed: ...", "gateway.ingest.error source=...", or only the name.
_NAMED = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)(?::\s*|\s+|$)")


def _trace_ids() -> tuple[str, str] | None:
    try:
        from opentelemetry import trace
    except ImportError:  # the client-only install logs without it
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, message (+ trace ids, exception)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        m = _NAMED.match(text)
        if isinstance(event, str):
            out["event"] = event
        elif m:
            out["event"] = m.group(1)
            text = text[m.end() :]
        else:
            out["event"] = "unnamed"
            out["template"] = str(record.msg)
        out["message"] = text
        ids = _trace_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Sends the process's log lines to stderr in ``fmt`` ("text" or "json")."""
    if fmt not in _FORMATS:
        raise InvalidArgument(
            f"log_format = {fmt!r} is not one of text, json",
            reason="INVALID_CONFIG",
            hint="json writes one object per line with a stable event name",
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler])

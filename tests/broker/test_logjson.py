"""JSON log lines (``log_format = "json"``): a stable event name, the unformatted template of a
line that has none yet, the current span's trace id, the exception; a real ``lockgate serve``
logs its start in JSON; an unknown format is refused in one sentence."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from lockgate.broker.logjson import JsonFormatter
from lockgate.broker.testing import run_broker


def _line(msg: str, *args: object, exc: bool = False) -> dict[str, object]:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    record = logging.LogRecord("lockgate.x", logging.WARNING, "f", 1, msg, args, info)
    out = json.loads(JsonFormatter().format(record))
    assert isinstance(out, dict)
    return out


def test_a_named_line_gives_its_event_and_the_rest_as_message() -> None:
    line = _line("history.logger.write_failed: %s", "disk full")
    assert line["event"] == "history.logger.write_failed"
    assert line["message"] == "disk full"
    assert line["level"] == "warning" and line["logger"] == "lockgate.x"
    assert "trace_id" not in line


def test_an_unnamed_line_keeps_its_template() -> None:
    line = _line("slow consumer %s on %s disconnected", "a", "b")
    assert line["event"] == "unnamed"
    assert line["template"] == "slow consumer %s on %s disconnected"
    assert line["message"] == "slow consumer a on b disconnected"


def test_the_current_span_gives_the_trace_id_and_an_exception_is_kept() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        line = _line("store.failed", exc=True)
    ctx = span.get_span_context()
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"
    assert line["event"] == "store.failed" and line["message"] == ""
    assert "ValueError: boom" in str(line["exception"])


@pytest.mark.e2e
async def test_serve_logs_json_lines() -> None:
    async with run_broker(extra_args=["--log-format", "json"]) as b:
        lines = [json.loads(x) for x in b.output if x.startswith(b"{")]
    events = [line["event"] for line in lines]
    assert "serve.listening" in events, b.output


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "lockgate.broker.cli", "serve"),
            *("--listen", "127.0.0.1:0", "--log-format", "xml", "--data-dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "log_format = 'xml' is not one of text, json" in out.stderr
    assert "Traceback" not in out.stderr

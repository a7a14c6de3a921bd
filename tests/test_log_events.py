"""Every log line of ours names its event first (``"area.thing.happened: detail"``), the
name a JSON log line carries in ``event`` (broker/logjson.py) for pipelines to count and
alert on. A line without one would log ``"event": "unnamed"``."""

from __future__ import annotations

import ast
from pathlib import Path

from lockgate.broker import logjson

ROOT = Path(__file__).resolve().parent.parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _template(call: ast.Call) -> str | None:
    """The call's message template as written; None when it is computed."""
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    if isinstance(first, ast.JoinedStr):
        head = first.values[0]
        if isinstance(head, ast.FormattedValue) and isinstance(head.value, ast.Name):
            # f"{event}: {text}": a helper that takes the event name as its argument
            return f"{head.value.id}.name: ..." if head.value.id == "event" else None
        return None
    return None


def _log_calls() -> list[tuple[str, int, str | None]]:
    found = []
    for folder in ("broker", "gateways", "clients", "policy"):
        for path in (ROOT / folder).rglob("*.py"):
            if "v1" in path.parts:
                continue  # generated stubs
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and node.args
                ):
                    continue
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                if "log" in name.lower():
                    found.append((str(path.relative_to(ROOT)), node.lineno, _template(node)))
    return found


def test_every_log_call_names_its_event() -> None:
    calls = _log_calls()
    assert len(calls) > 50  # the walk found the code base's log calls
    unnamed = [
        f"{path}:{line}: {template!r}"
        for path, line, template in calls
        if template is None or not logjson._NAMED.match(template)
    ]
    assert not unnamed, "log calls without an event name:\n" + "\n".join(unnamed)


def test_the_check_catches_a_line_without_a_name() -> None:
    call = ast.parse('log.info("broker %s unavailable", x)').body[0].value  # type: ignore[attr-defined]
    template = _template(call)
    assert template is not None and not logjson._NAMED.match(template)

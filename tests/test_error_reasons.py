"""One registry of error reasons: ``broker.v1.ErrorReason`` (protos/broker/v1/errors.proto).

The code may only use reasons from it, the Python ``Reason`` enum is generated from it, and the
README's table of reasons lists exactly its values, in its order.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.broker.v1 import errors_pb2
from lockgate.broker.v1.reasons import Reason

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("broker", "clients", "gateways", "policy")
PREFIX = "ERROR_REASON_"


def _registry() -> list[str]:
    return [
        v.name[len(PREFIX) :] for v in errors_pb2.ErrorReason.DESCRIPTOR.values if v.number != 0
    ]


def _strings(node: ast.AST) -> Iterator[str]:
    """String constants an expression can evaluate to (both arms of ``a if c else b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _strings(value)


def _reason_names(node: ast.AST) -> Iterator[str]:
    """``Reason.X`` attribute reads (mypy checks them too; this also covers untyped code)."""
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == "Reason"
            and not sub.attr.startswith("_")
        ):
            yield sub.attr


def _used_reasons(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        found: list[str] = []
        if isinstance(node, ast.keyword) and node.arg == "reason":
            found += _strings(node.value)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = getattr(target, "id", None) or getattr(target, "attr", "")
                if name == "default_reason":
                    found += _strings(node.value)
                if "REASON" in name.upper() and isinstance(node.value, ast.Dict):
                    for key in node.value.keys:
                        if key is not None:
                            found += _strings(key)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "reason" for s in sides):
                for side in sides:
                    found += _strings(side)
        found += _reason_names(node) if isinstance(node, ast.Attribute) else []
        for reason in found:
            yield getattr(node, "lineno", 0), reason


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "v1" not in path.relative_to(ROOT).parts:
                yield path


def test_the_python_enum_is_generated_from_the_proto() -> None:
    assert [r.value for r in Reason] == _registry()
    assert all(r.name == r.value for r in Reason)
    spec = importlib.util.spec_from_file_location("gen_reasons", ROOT / "scripts/gen_reasons.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render() == (ROOT / "broker/v1/reasons.py").read_text(encoding="utf-8")


def test_code_uses_only_registered_reasons() -> None:
    known = set(_registry())
    unknown = [
        f"{path.relative_to(ROOT)}:{line}: {reason}"
        for path in _sources()
        for line, reason in _used_reasons(ast.parse(path.read_text(encoding="utf-8")))
        if reason not in known
    ]
    assert not unknown, "reasons missing from protos/broker/v1/errors.proto:\n" + "\n".join(unknown)


def test_the_scan_sees_reasons() -> None:
    """Guards the scan itself: it finds the forms the code uses, and flags a stray one."""
    code = (
        'raise X("m", reason="NO_SUCH" if a else "POLICY_DENIED")\n'
        'class E:\n    default_reason = "RATE_LIMITED"\n'
        'if err.reason == "SLOW_CONSUMER": pass\n'
        'HTTP_BY_REASON = {"BODY_TOO_LARGE": 413}\n'
        "y = Reason.NOT_PENDING\n"
    )
    found = {reason for _, reason in _used_reasons(ast.parse(code))}
    assert found == {
        "NO_SUCH",
        "POLICY_DENIED",
        "RATE_LIMITED",
        "SLOW_CONSUMER",
        "BODY_TOO_LARGE",
        "NOT_PENDING",
    }
    total = sum(
        1 for p in _sources() for _ in _used_reasons(ast.parse(p.read_text(encoding="utf-8")))
    )
    assert total > 50


def _readme_table_reasons() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| status | reasons |")
    rows = text[start:].split("\n\n", 1)[0].splitlines()[2:]
    out: list[str] = []
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 2, row
        listed = re.sub(r"\([^)]*\)", "", cells[1])  # parenthesised notes name statuses
        out += re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", listed)
    return out


def test_readme_table_lists_the_registry_in_order() -> None:
    assert _readme_table_reasons() == _registry()


@pytest.mark.parametrize(
    "module", ["lockgate.broker.errors", "lockgate.clients._errors", "lockgate.gateways.errors"]
)
def test_error_classes_default_to_registered_reasons(module: str) -> None:
    mod = __import__(module, fromlist=["_"])
    classes = [
        v for v in vars(mod).values() if isinstance(v, type) and hasattr(v, "default_reason")
    ]
    assert classes
    for cls in classes:
        assert cls.default_reason in Reason.__members__, cls

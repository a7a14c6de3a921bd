"""policy/ stays pure: the helpers import without Lark, no parser lives at module level (the
caller owns one), and files are read only by policy.files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lark import Lark

import lockgate.policy.engine
import lockgate.policy.parser
from lockgate.policy.parser import PolicyParser
from tests.policy.policy_helpers import PARSER


def test_pure_helpers_import_without_lark() -> None:
    code = (
        "import sys, policy, policy.subjects, policy.durations, policy.model\n"
        "assert 'lark' not in sys.modules and 're2' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_process_wide_parser() -> None:
    for module in (lockgate.policy.parser, lockgate.policy.engine):
        assert not any(isinstance(v, Lark | PolicyParser) for v in vars(module).values())


def test_parsers_are_independent_and_reusable() -> None:
    text = 'policy a on "a.>" { allow publish }'
    assert PolicyParser().parse(text) == PARSER.parse(text) == PARSER.parse(text)


def test_engine_reads_no_files() -> None:
    source = Path(lockgate.policy.engine.__file__).read_text("utf-8")
    assert "open(" not in source and "read_text" not in source and "pathlib" not in source

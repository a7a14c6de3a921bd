"""The gateways' one JSON codec (gateways._json): the standard library's output and answers."""

from __future__ import annotations

import json

import pytest

from lockgate.gateways._json import dumpb, dumps, loads
from lockgate.gateways.errors import MalformedJson

VALUES: list[object] = [
    {"specversion": "1.0", "id": "a", "data": {"n": [1, 2.5, -0.0, True, None]}},
    ["é", "\u2028", "<script>", "\x00", 'quote " and \\'],
    {"nested": {"deep": [[[{}]]]}, "empty": "", "zero": 0},
    123456789012345678901234567890,  # beyond 64 bits: kept exact both ways
    -(2**63) - 1,
    0.1,
    123456789.12345679,
]


@pytest.mark.parametrize("value", VALUES)
def test_output_is_the_standard_librarys_compact_utf8(value: object) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected
    assert dumpb(value) == expected.encode()
    assert loads(expected) == value
    assert loads(expected.encode()) == value


def test_a_float_with_an_exponent_is_the_same_number() -> None:
    for value in (1e16, 1.5e300, 1e-7):
        assert float(dumps(value)) == value


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"a": 1,}', "line 1 column 9"),
        (b'{"a": 1}\n x', "Extra data at line 2 column 2"),
        (b"", "Expecting value at line 1 column 1"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b"[-Infinity]", "-Infinity is not a JSON value"),
        (b"[1e400]", "beyond a double's range"),
    ],
)
def test_bad_json_is_refused_with_where_or_why(raw: bytes, said: str) -> None:
    with pytest.raises(MalformedJson) as exc:
        loads(raw)
    assert exc.value.reason == "MALFORMED_JSON"
    assert said in exc.value.message


def test_a_lone_surrogate_escape_decodes_and_does_not_encode() -> None:
    # decoded as the standard library does, so that the CloudEvents codec refuses it with
    # its own INVALID_EVENT (test_cejson); encoding it raises what those paths catch
    assert loads(b'"\\ud800"') == "\ud800"
    with pytest.raises(UnicodeEncodeError):
        dumps("\ud800")


def test_what_has_no_json_form_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        dumps(object())

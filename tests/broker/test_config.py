from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.broker.config import ConfigError, parse_duration, redacted
from lockgate.broker.config_load import coerce, load_config


def test_precedence_flags_over_file_over_env(tmp_path: Path) -> None:
    f = tmp_path / "lockgate.toml"
    f.write_text('[broker]\nlisten = "127.0.0.1:7000"\nack_wait = "10s"\nmax_deliveries = 9\n')
    env = {
        "LOCKGATE_LISTEN": "127.0.0.1:6000",
        "LOCKGATE_FSYNC": "never",
        "LOCKGATE_ACK_WAIT": "1m",
    }
    cfg = load_config({"listen": "127.0.0.1:8000"}, config_file=str(f), env=env)
    assert cfg.listen == "127.0.0.1:8000"  # flag wins
    assert cfg.ack_wait == 10.0  # file beats env
    assert cfg.fsync == "never"  # env beats default
    assert cfg.max_deliveries == 9


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2h") == 7200
    assert parse_duration(3) == 3.0
    with pytest.raises(ConfigError):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1", "unknown setting"),
        ("max_deliveries = 'many'", "max_deliveries = 'many' is not an integer"),
        ("webhook_allow_private = 'maybe'", "is not true or false"),
        ("data_dir = 5", "data_dir = 5 is not a string"),
        ("listen = ", "not valid TOML"),
        ("fsync = 'sometimes'", "not one of always"),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config({}, config_file=str(f), env={})
    assert message in info.value.message


def test_retention_rules(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('retention_max_age = "7d"\n[[retention]]\npattern = "audit.>"\nmax_events = 5\n')
    rules = load_config({}, config_file=str(f), env={}).retention_rules()
    assert rules[0].pattern == ">" and rules[0].max_age_ms == 7 * 86400 * 1000
    assert rules[1].pattern == "$dlq.>" and rules[1].max_age_ms == 7 * 86400 * 1000
    assert rules[2].pattern == "audit.>" and rules[2].max_events == 5


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("30s", 0.0, 30.0),  # with duration=True below
        ("yes", False, True),
        ("0", True, False),
        (False, True, False),
        (" 7 ", 0, 7),
        (7, 0, 7),
        ("2.5", 1.0, 2.5),
        ({"a": 1}, {}, {"a": "1"}),
        ([{"pattern": ">"}], [], [{"pattern": ">"}]),
        ("x", "", "x"),
    ],
)
def test_coerce_one_rule_for_toml_env_and_flags(
    value: object, default: object, expected: object
) -> None:
    assert coerce(value, default, duration=value == "30s") == expected


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("soon", None, "a duration like 500ms or 30s"),
        ("maybe", False, "true or false"),
        (True, 0, "an integer"),
        ("1.5", 0, "an integer"),
        ("many", 1.0, "a number"),
        ("a=b", {}, "a table of strings"),
        ("x", [], "a list"),
        (5, "", "a string"),
    ],
)
def test_coerce_says_what_it_expected(value: object, default: object, expected: str) -> None:
    with pytest.raises(ValueError, match=f"^{expected}$"):
        coerce(value, default, duration=value == "soon")


def test_gateway_settings_use_the_same_rule() -> None:
    from lockgate.gateways.config import settings_for

    assert settings_for("redis", {"batch": "64"}).batch == 64  # as from a flag
    with pytest.raises(ConfigError, match=r"\[gateways.redis\] batch = 'many' is not an integer"):
        settings_for("redis", {"batch": "many"})
    with pytest.raises(ConfigError, match="backoff = 'x' is not a duration"):
        settings_for("webhook", {"secret": "s", "backoff": ["1s", "x"]})


def test_redacted_hides_secrets_and_url_passwords() -> None:
    shown = redacted(
        {
            "limiter": "redis://u:pw@h:6379/0",
            "gateways": {"webhook": {"secret": "s", "org_secrets": {"acme": "t"}, "timeout": 5}},
            "api_key": "",
        }
    )
    assert shown == {
        "limiter": "redis://u:<redacted>@h:6379/0",
        "gateways": {
            "webhook": {"secret": "<redacted>", "org_secrets": {"acme": "<redacted>"}, "timeout": 5}
        },
        "api_key": "",  # an unset secret stays visibly unset
    }


def test_global_retention_covers_dead_letters_too() -> None:
    from lockgate.broker.config import Config

    rules = Config(retention_max_events=10).retention_rules()
    assert [(r.pattern, r.max_events) for r in rules] == [(">", 10), ("$dlq.>", 10)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ack_wait", "1ms"),
        ("ack_wait", "13h"),
        ("max_deliveries", "0"),
        ("max_deliveries", "1001"),
        ("max_in_flight", "100001"),
        ("subscriber_write_deadline", "50ms"),
        ("subscriber_write_deadline", "2h"),
    ],
)
def test_delivery_defaults_are_bounded(name: str, value: str) -> None:
    """The configured defaults obey the same floors and caps as the values a caller asks
    for (broker/bounds.py), so a default can never be one the broker would refuse."""
    with pytest.raises(ConfigError) as info:
        load_config(env={f"LOCKGATE_{name.upper()}": value})
    assert name in str(info.value) and "out of range" in str(info.value)


def test_delivery_defaults_at_the_bounds_load() -> None:
    env = {"LOCKGATE_ACK_WAIT": "100ms", "LOCKGATE_MAX_DELIVERIES": "1000"}
    cfg = load_config(env={**env, "LOCKGATE_MAX_IN_FLIGHT": "100000"})
    assert (cfg.ack_wait, cfg.max_deliveries, cfg.max_in_flight) == (0.1, 1000, 100_000)


def test_redact_url_hides_passwords_and_nats_tokens() -> None:
    from lockgate.broker.config import redact_url

    assert redact_url("postgresql://u:pw@h:5432/d") == "postgresql://u:<redacted>@h:5432/d"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert redact_url("redis://:pw@h:6379/0") == "redis://:<redacted>@h:6379/0"
    # NATS takes a bare token as the user: all of it goes.
    assert redact_url("nats://s3cr3t@h:4222", user_is_secret=True) == "nats://<redacted>@h:4222"
    assert redact_url("nats://a:b@h:4222", user_is_secret=True) == "nats://<redacted>@h:4222"
    assert redact_url("nats://h:4222", user_is_secret=True) == "nats://h:4222"

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import ConfigError, load_config, parse_duration


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
        ("max_deliveries = 'many'", "not a valid int"),
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
    assert rules[1].pattern == "audit.>" and rules[1].max_events == 5

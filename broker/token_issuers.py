"""The trusted issuers of JWT bearer tokens: their settings, checked from ``[[auth.issuers]]``,
and the local issuer of ``lockgate tokens issue`` (verification is ``broker.tokens``).

>>> local_issuer("/var/lib/lockgate", 30.0).algorithms
('EdDSA',)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockgate.broker.config import ConfigError, parse_duration
from lockgate.broker.local_tokens import LOCAL_AUDIENCE, LOCAL_ISSUER

__all__ = ["ALGORITHMS", "KEY_FAMILY", "IssuerSettings", "local_issuer", "parse_issuers"]

ALGORITHMS = ("EdDSA", "ES256", "RS256")
"""The asymmetric algorithms every issuer accepts unless it lists fewer."""

KEY_FAMILY = {"EdDSA": "OKP", "ES256": "EC", "RS256": "RSA", "HS256": "oct"}
"""The JWK key type (``kty``) of each algorithm an issuer may accept."""


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    """One trusted issuer (a ``[[auth.issuers]]`` table)."""

    name: str
    issuer: str
    """The ``iss`` its tokens carry."""
    audience: tuple[str, ...]
    """Tokens must name one of these in ``aud``."""
    jwks_url: str = ""
    jwks_file: str = ""
    jwks_refresh: float = 300.0
    algorithms: tuple[str, ...] = ALGORITHMS
    hs256_secret: str = field(default="", repr=False)
    org_claim: str = "org"
    agent_claim: str = "sub"
    roles_claim: str = "roles"
    org: str = ""
    """A fixed org for every token of this issuer (then ``org_claim`` is not read)."""
    clock_skew: float = 30.0
    signing_key_dir: str = ""
    """The local issuer only: the data directory whose signing key it trusts."""


def local_issuer(data_dir: str, clock_skew: float) -> IssuerSettings:
    """The ``local`` issuer: tokens of ``lockgate tokens issue`` on this data directory."""
    return IssuerSettings(
        name="local",
        issuer=LOCAL_ISSUER,
        audience=(LOCAL_AUDIENCE,),
        algorithms=("EdDSA",),
        clock_skew=clock_skew,
        signing_key_dir=data_dir,
        jwks_refresh=60.0,
    )


_ISSUER_KEYS = {
    "name",
    "issuer",
    "audience",
    "jwks_url",
    "jwks_file",
    "jwks_refresh",
    "algorithms",
    "hs256_secret",
    "hs256_secret_file",
    "org_claim",
    "agent_claim",
    "roles_claim",
    "org",
    "clock_skew",
}


def _str(table: Mapping[str, object], name: str, where: str, default: str = "") -> str:
    value = table.get(name, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {name} = {value!r} is not a string")
    return value


def _strings(table: Mapping[str, object], name: str, where: str) -> tuple[str, ...]:
    value = table.get(name)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{where}: {name} = {value!r} is not a string or a list of strings",
            hint=f'for example {name} = ["lockgate"]',
        )
    return tuple(value)


def parse_issuers(raw: Sequence[object], *, clock_skew: float) -> list[IssuerSettings]:
    """The ``[[auth.issuers]]`` tables, checked; raises :class:`ConfigError` with the table
    and the setting at fault."""
    out: list[IssuerSettings] = []
    for i, table in enumerate(raw):
        where = f"[[auth.issuers]] #{i + 1}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} is not a table")
        unknown = sorted(set(table) - _ISSUER_KEYS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting {unknown[0]!r}",
                hint="see README, Security: " + ", ".join(sorted(_ISSUER_KEYS)),
            )
        name = _str(table, "name", where, f"issuer{i + 1}")
        where = f"[[auth.issuers]] {name!r}"
        issuer = _str(table, "issuer", where)
        if not issuer:
            raise ConfigError(f"{where}: issuer is required", hint="the iss its tokens carry")
        if issuer == LOCAL_ISSUER or name == "local":
            raise ConfigError(
                f"{where}: the name 'local' and the issuer {LOCAL_ISSUER!r} are the broker's own",
                hint="pick another name and issuer",
            )
        if "audience" not in table:
            raise ConfigError(
                f"{where}: audience is required",
                hint='a token for another service must not open this broker: audience = "lockgate"',
            )
        url, path = _str(table, "jwks_url", where), _str(table, "jwks_file", where)
        secret = _str(table, "hs256_secret", where)
        secret_file = _str(table, "hs256_secret_file", where)
        if secret_file:
            try:
                secret = Path(secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{where}: hs256_secret_file {secret_file} cannot be read: {exc.strerror}"
                ) from None
        if bool(url) == bool(path) and not secret:
            raise ConfigError(
                f"{where}: give exactly one of jwks_url and jwks_file",
                hint="jwks_url is re-fetched every jwks_refresh; jwks_file is re-read",
            )
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"{where}: jwks_url {url!r} is not an http(s) URL")
        if secret and len(secret.encode()) < 32:
            raise ConfigError(
                f"{where}: hs256_secret is shorter than 32 bytes",
                hint="use a random secret of at least 32 bytes (openssl rand -base64 48)",
            )
        algorithms = _strings(table, "algorithms", where) if "algorithms" in table else ALGORITHMS
        if secret and "algorithms" not in table:
            algorithms = (*algorithms, "HS256")
        for alg in algorithms:
            if alg not in KEY_FAMILY:
                raise ConfigError(
                    f"{where}: algorithm {alg!r} is not supported",
                    hint="use EdDSA, ES256, RS256 (and HS256 with hs256_secret)",
                )
        if "HS256" in algorithms and not secret:
            raise ConfigError(
                f"{where}: HS256 needs hs256_secret (or hs256_secret_file)",
                hint="HS256 is off unless an issuer is given its shared secret",
            )
        try:
            refresh = parse_duration(table.get("jwks_refresh", "5m"))
            skew = parse_duration(table.get("clock_skew", clock_skew))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
        if refresh < 1 or not 0 <= skew <= 300:
            raise ConfigError(
                f"{where}: jwks_refresh must be at least 1s and clock_skew at most 5m",
                hint="a minute of clock skew is plenty for machines that run NTP",
            )
        out.append(
            IssuerSettings(
                name=name,
                issuer=issuer,
                audience=_strings(table, "audience", where),
                jwks_url=url,
                jwks_file=path,
                jwks_refresh=refresh,
                algorithms=algorithms,
                hs256_secret=secret,
                org_claim=_str(table, "org_claim", where, "org"),
                agent_claim=_str(table, "agent_claim", where, "sub"),
                roles_claim=_str(table, "roles_claim", where, "roles"),
                org=_str(table, "org", where),
                clock_skew=skew,
            )
        )
    names = [s.name for s in out]
    issuers = [s.issuer for s in out]
    if len(set(names)) != len(names) or len(set(issuers)) != len(issuers):
        raise ConfigError(
            "[[auth.issuers]]: two issuers share a name or an issuer",
            hint="give each its own name and iss",
        )
    return out

"""The PostgreSQL metadata store's tables (component ``metadata`` of ``lockgate_schema``).

Each entry of :data:`STEPS` is one migration, applied once and in order by
``pg_engine.migrate`` (one transaction each, under an advisory lock). Never edit a step that
has shipped: append a new one (``ALTER TABLE ...``), as a database may hold any prefix.

The tables mirror SQLite's (``sqlite_schema.py``) with PostgreSQL types: event ids and times
are ``bigint``, a durable's configuration and an audit record's detail ``jsonb``, a key's
roles ``text[]``; the global policy set and the orgs' own share ``policy_versions`` (org ""
is the global one), ``n`` giving the order they were first saved in.
"""

from __future__ import annotations

__all__ = ["STEPS"]

_V1 = """
CREATE TABLE consumers (
    org text NOT NULL,
    name text NOT NULL,
    config jsonb NOT NULL,
    position_seq bigint NOT NULL,
    position_id bigint NOT NULL,
    delivered_id bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org, name)
);
CREATE TABLE consumer_pending (
    org text NOT NULL,
    name text NOT NULL,
    id bigint NOT NULL,
    attempt int NOT NULL,
    PRIMARY KEY (org, name, id)
);
CREATE TABLE dead_letters (
    org text NOT NULL,
    durable text NOT NULL,
    id bigint NOT NULL,
    attempts int NOT NULL,
    dead_ms bigint NOT NULL,
    PRIMARY KEY (org, durable, id)
);
CREATE INDEX dead_letters_org_time ON dead_letters (org, dead_ms, id);
CREATE TABLE policy_versions (
    org text NOT NULL,
    version text NOT NULL,
    n bigserial NOT NULL,
    created_ms bigint NOT NULL,
    origin text NOT NULL,
    files jsonb NOT NULL,
    active boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org, version)
);
CREATE INDEX policy_versions_active ON policy_versions (org) WHERE active;
CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    secret_hash text NOT NULL,
    org text NOT NULL,
    agent text NOT NULL,
    roles text[] NOT NULL,
    created_ms bigint NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    expires_ms bigint NOT NULL DEFAULT 0,
    replaced_by text NOT NULL DEFAULT ''
);
CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time_ms bigint NOT NULL,
    org text NOT NULL,
    agent text NOT NULL,
    credential text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    outcome text NOT NULL,
    surface text NOT NULL,
    peer text NOT NULL,
    count int NOT NULL,
    detail jsonb NOT NULL
);
CREATE INDEX audit_time ON audit (time_ms);
CREATE INDEX audit_org ON audit (org, id);
"""

STEPS: tuple[str, ...] = (_V1,)
"""The metadata schema's migrations, oldest first: the schema version is how many ran."""

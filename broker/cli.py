"""``lockgate``: serve, config, keys, policy, backbones, and the client and gateway commands.

The one composition root: it alone imports every package (lazily, so that the client commands
work with the client's dependencies only). Every command raises; :func:`main` prints a failure
as one sentence and a hint through :func:`broker.cli_errors.report`, never a traceback, and
exits with the codes listed there (1 failed, 2 usage, 78 configuration, 70 internal).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from lockgate.broker.cli_errors import report
from lockgate.broker.config import Config, redacted
from lockgate.broker.config_load import load_config

if TYPE_CHECKING:
    from lockgate.broker.store import MetadataStore
    from lockgate.clients._cli import TextSyntax

__all__ = ["client_syntax", "main"]

_SERVE_FLAGS = (
    ("listen", str, "host:port to listen on (default 127.0.0.1:50051)"),
    ("store", str, "sqlite (default, under --data-dir) | postgresql://USER@HOST/DB"),
    ("backbone", str, "local (default: one process) | nats://HOST:4222 (many nodes)"),
    ("data_dir", str, "directory of the embedded store (default ./lockgate-data)"),
    ("fsync", str, "os (default: survives a broker crash) | always (also power loss) | never"),
    ("worker_id", int, "0-1023, unique per node (default: leased in cluster mode, else 0)"),
    ("max_message_bytes", int, "largest gRPC message (default 1 MiB)"),
    ("max_event_bytes", int, "largest event (default 1 MiB)"),
    ("dedup_window", str, "window for (source, id) dedup (default 2m)"),
    ("ack_wait", str, "durable redelivery timeout (default 30s)"),
    ("max_deliveries", int, "deliveries before dead-lettering (default 5)"),
    ("max_in_flight", int, "unacked deliveries per durable (default 1000)"),
    ("subscriber_max_bytes", int, "bytes queued per ephemeral subscriber (default 64 MiB)"),
    ("subscriber_write_deadline", str, "cut an ephemeral subscriber that takes nothing (10s)"),
    ("retention_max_age", str, "drop events older than this (default: keep)"),
    ("retention_max_events", int, "keep at most this many events per subject (default: all)"),
    ("policy_dir", str, "directory of *.policy files (reloaded when they change)"),
    ("policy_reload_interval", str, "how often to look for changed policy files (default 1s)"),
    ("policy_default_deny", str, "'*' or org1,org2: subjects no policy covers are denied"),
    ("admin_org", str, "org whose admin keys administer the whole broker (default 'default')"),
    ("limiter", str, "local (default) | redis://HOST:PORT/DB to share limits between nodes"),
    ("limiter_prefix", str, "first letters of every Redis key (default 'lockgate:')"),
    ("backbone_stream", str, "JetStream stream of the log (default LOCKGATE_LOG)"),
    ("backbone_prefix", str, "first letters of the cluster's NATS subjects (default 'lg')"),
    ("backbone_replicas", int, "replicas of the log stream: 1 (default), 3 in production"),
    ("spam_max_per_minute", int, "events per sender per minute (default: off)"),
    ("spam_duplicate_window", str, "refuse the same content from one sender within (off)"),
    ("webhook_allow_private", str, "true to allow webhook URLs on private addresses"),
    ("tls_server_cert", str, "PEM certificate (chain) of every listener: TLS (re-read on change)"),
    ("tls_server_key", str, "PEM private key of --tls-server-cert"),
    ("tls_client_ca", str, "PEM CA file: require client certificates signed by it (mTLS)"),
    ("tls_client_identity", str, "SAN template naming the caller (lockgate://{org}/{agent})"),
    ("tls_client_orgs", str, "orgs a client certificate may name, comma-separated (any)"),
    ("tls_client_roles", str, "roles of client-certificate callers, comma-separated (none)"),
    ("audit_retention", str, "remove audit records older than this (default 90d; 0: keep)"),
    ("audit_window", str, "alike denials within it share one audit record (default 10s)"),
    ("heartbeat", str, "time between this node's heartbeats to the cluster's roster (5s)"),
    ("log_level", str, "debug | info | warning | error"),
    ("log_format", str, "text (default) | json: JSON lines with an event name and trace id"),
    ("telemetry", str, "off (default) | console: OpenTelemetry spans and metrics"),
    ("telemetry_interval", str, "how often metrics go to the console or OTLP (default 60s)"),
    ("metrics_listen", str, "loopback HOST:PORT serving Prometheus /metrics (default: none)"),
    ("otlp_endpoint", str, "OpenTelemetry collector for spans and metrics (default: none)"),
    ("otlp_protocol", str, "grpc (default, :4317) | http (http/protobuf, :4318)"),
    ("trace_sample_ratio", float, "share of new traces recorded, 0-1 (default 1)"),
)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", dest="config_file", help="TOML file ([broker] table)")
    for name, kind, text in _SERVE_FLAGS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    p.add_argument(
        "--insecure-plaintext",
        dest="insecure_plaintext",
        action="store_const",
        const="true",
        help="allow non-loopback listeners without TLS (keys and events in clear text)",
    )


def _config(args: argparse.Namespace) -> Config:
    flags = {name: getattr(args, name, None) for name, _, _ in _SERVE_FLAGS}
    flags["insecure_plaintext"] = getattr(args, "insecure_plaintext", None)
    return load_config(flags, config_file=getattr(args, "config_file", None))


def _cmd_serve(args: argparse.Namespace) -> int:
    from lockgate.broker.app import (  # needs lockgate[server]; a missing extra says so
        GatewayStarter,
        run,
    )
    from lockgate.broker.datadir import lock_data_dir

    config = _config(args)
    if args.http:  # the quick start's one flag for the HTTP + WebSocket gateway
        http = dict(config.gateways.get("http", {}))
        http["listen"] = args.http
        config.gateways = {**config.gateways, "http": http}
    starter: GatewayStarter | None = None
    if config.gateways:  # [gateways.*] tables: this process runs them (lockgate[gateways])
        from lockgate.gateways.embedded import start_gateways

        starter = start_gateways
    with lock_data_dir(config.data_dir):
        return run(config, start_gateways=starter)


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    print(json.dumps(redacted(cfg.as_dict()), indent=2))
    return 0


def _shown_ms(ms: int) -> str:
    """A Unix-ms time as RFC 3339 UTC, to the second ("never" for 0)."""
    import datetime as dt

    if not ms:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expires_ms(args: argparse.Namespace) -> int | None:
    """``--ttl`` or ``--expires`` as Unix ms (None: neither was given)."""
    import time

    from lockgate.broker.config import parse_duration
    from lockgate.broker.errors import InvalidArgument
    from lockgate.policy.durations import TimeError, parse_time

    if args.ttl and args.expires:
        raise InvalidArgument("give --ttl or --expires, not both", hint="--ttl 30d")
    if args.ttl:
        ttl = parse_duration(args.ttl)
        if ttl <= 0:
            raise InvalidArgument(f"--ttl {args.ttl} is not a positive duration", hint="--ttl 30d")
        return int((time.time() + ttl) * 1000)
    if args.expires:
        try:
            at = parse_time(args.expires)
        except TimeError as exc:
            raise InvalidArgument(f"--expires: {exc}", hint=exc.hint) from None
        if at <= time.time():
            raise InvalidArgument(
                f"--expires {args.expires} is in the past", hint="--expires 2027-01-01"
            )
        return int(at * 1000)
    return None


async def _cmd_keys(args: argparse.Namespace) -> int:
    import time

    from lockgate.broker.actor import cli_record
    from lockgate.broker.auth import create_key, rotate_key
    from lockgate.broker.config import parse_duration
    from lockgate.broker.errors import NotFound

    config = _config(args)
    store: MetadataStore
    if config.store == "sqlite":
        from lockgate.broker.store.sqlite import SqliteStore

        store = SqliteStore(config.data_dir, fsync="always")
    else:  # a cluster's keys live in its PostgreSQL database (the metadata store)
        from lockgate.broker.store.postgres import PgStore

        store = PgStore(config.store, max_size=2)
    await store.open()
    try:
        if args.keys_cmd == "create":
            expires = _expires_ms(args) or 0
            key, rec = await create_key(
                store, args.org, args.agent, args.role or [], expires_ms=expires
            )
            detail = {
                "org": rec.org,
                "agent": rec.agent,
                "roles": ",".join(rec.roles),
                "expires": _shown_ms(rec.expires_ms),
            }
            created = cli_record("key.create", target=rec.key_id, org=rec.org, detail=detail)
            await store.append_audit([created])
            print(key)
            print(
                f"created key {rec.key_id} for {rec.org}/{rec.agent} roles="
                f"{','.join(rec.roles) or '-'} expires={_shown_ms(rec.expires_ms)}; "
                "it is shown only once",
                file=sys.stderr,
            )
        elif args.keys_cmd == "rotate":
            grace = parse_duration(args.grace)
            expires_ms = _expires_ms(args)
            try:
                key, rec, old_ends = await rotate_key(
                    store, args.key_id, grace=grace, expires_ms=expires_ms
                )
            except NotFound:
                known = await store.get_key(args.key_id)
                failed = cli_record(
                    "key.rotate",
                    "failed",
                    target=args.key_id,
                    org=known.org if known is not None else "",
                )
                await store.append_audit([failed])
                raise
            detail = {
                "org": rec.org,
                "agent": rec.agent,
                "roles": ",".join(rec.roles),
                "new_key": rec.key_id,
                "old_key_until": _shown_ms(old_ends),
                "expires": _shown_ms(rec.expires_ms),
            }
            rotated = cli_record("key.rotate", target=args.key_id, org=rec.org, detail=detail)
            await store.append_audit([rotated])
            print(key)
            print(
                f"rotated key {args.key_id} to {rec.key_id} for {rec.org}/{rec.agent} "
                f"(expires={_shown_ms(rec.expires_ms)}); the old key works until "
                f"{_shown_ms(old_ends)}; the new key is shown only once",
                file=sys.stderr,
            )
        elif args.keys_cmd == "list":
            now = time.time() * 1000
            print("KEY_ID\tORG\tAGENT\tROLES\tSTATE\tEXPIRES\tREPLACED_BY")
            for k in await store.list_keys():
                state = "active"
                if k.revoked:
                    state = "revoked"
                elif k.expires_ms and k.expires_ms <= now:
                    state = "expired"
                elif k.replaced_by:
                    state = "rotating"  # works until its grace period ends
                print(
                    f"{k.key_id}\t{k.org}\t{k.agent}\t{','.join(k.roles) or '-'}\t{state}"
                    f"\t{_shown_ms(k.expires_ms)}\t{k.replaced_by or '-'}"
                )
        elif args.keys_cmd == "revoke":
            known = await store.get_key(args.key_id)
            revoked = await store.revoke_key(args.key_id)
            outcome = "ok" if revoked else "failed"
            org = known.org if known is not None else ""
            await store.append_audit(
                [cli_record("key.revoke", outcome, target=args.key_id, org=org)]
            )
            if not revoked:
                raise NotFound(
                    f"no key with id {args.key_id}", hint="list them with `lockgate keys list`"
                )
            print(f"revoked {args.key_id}")
    finally:
        await store.close()
    return 0


async def _cmd_tokens(args: argparse.Namespace) -> int:
    from lockgate.broker.actor import cli_record, credential_id
    from lockgate.broker.local_tokens import (
        LOCAL_ISSUER,
        issue_token,
        load_or_create_key,
        public_jwks,
    )
    from lockgate.broker.store.sqlite import SqliteStore

    data_dir = _config(args).data_dir
    if args.tokens_cmd == "issue":
        from lockgate.broker.config import parse_duration

        ttl = parse_duration(args.ttl)
        token = issue_token(data_dir, args.org, args.agent, args.role or [], ttl=ttl)
        # A credential was made: the audit log names it as the broker names it when used.
        detail = {
            "org": args.org,
            "agent": args.agent,
            "roles": ",".join(sorted(set(args.role or []))),
            "ttl": args.ttl,
        }
        store = SqliteStore(data_dir, fsync="always")
        await store.open()
        try:
            issued = cli_record(
                "token.issue", target=credential_id(token), org=args.org, detail=detail
            )
            await store.append_audit([issued])
        finally:
            await store.close()
        print(token)
        print(
            f"issued a token for {args.org}/{args.agent} roles={','.join(args.role or []) or '-'}"
            f" valid for {args.ttl} (issuer {LOCAL_ISSUER}, key in {data_dir})",
            file=sys.stderr,
        )
    elif args.tokens_cmd == "jwks":
        print(json.dumps(public_jwks(load_or_create_key(data_dir)), indent=2))
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    # replay reads the broker's log, so it lives in the broker rather than in the pure policy/;
    # push, versions and rollback talk to a broker with the client.
    from lockgate.broker.replay import replay_command
    from lockgate.clients._cli import POLICY_COMMANDS
    from lockgate.clients._progress import Progress
    from lockgate.policy.cli import ExtraCommand
    from lockgate.policy.cli import main as policy_main
    from lockgate.policy.files import read_policy_dir

    def runner(
        handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    ) -> Callable[[argparse.Namespace], int]:
        def run(ns: argparse.Namespace) -> int:
            if getattr(ns, "dir", None) is not None:
                ns.files = read_policy_dir(ns.dir)
            return asyncio.run(handler(ns))

        return run

    extra = {"replay": replay_command(Progress)}
    for name, (text, arguments, handler) in POLICY_COMMANDS.items():
        extra[name] = ExtraCommand(text, arguments, runner(handler))
    return int(policy_main(list(args.rest), extra))


def client_syntax() -> TextSyntax:
    """The one time and start syntax (policy.durations, broker.positions) for the client
    commands, as the client's own types: the client package may not import them itself."""
    import datetime as dt

    from lockgate.broker.errors import InvalidStart
    from lockgate.broker.positions import START_SYNTAX, parse_start
    from lockgate.broker.v1 import broker_pb2
    from lockgate.clients._cli import TextSyntax
    from lockgate.policy.durations import DurationError, TimeError, parse_duration, parse_time

    def time(text: str) -> dt.datetime:
        try:
            return dt.datetime.fromtimestamp(parse_time(text), dt.UTC)
        except TimeError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; {exc.hint}") from None

    def start(text: str) -> str | tuple[str, int] | dt.datetime:
        try:
            s = parse_start(text)
        except InvalidStart as exc:
            raise argparse.ArgumentTypeError(f"{exc.message}; write {START_SYNTAX}") from None
        if s.policy == broker_pb2.START_POLICY_ALL:
            return "all"
        if s.policy == broker_pb2.START_POLICY_AFTER_ID:
            return ("after", s.after_id)
        if s.policy == broker_pb2.START_POLICY_SINCE_TIME:
            return dt.datetime.fromtimestamp(s.since_ms / 1000, dt.UTC)
        return "new"

    def duration(text: str) -> float:
        try:
            return parse_duration(text)
        except DurationError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; {exc.hint}") from None

    return TextSyntax(time, start, duration, START_SYNTAX)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockgate", description="A gRPC-first message broker for AI agents."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the broker")
    _add_config_flags(p)
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the HTTP and WebSocket gateway here (pip install 'lockgate[gateways]')",
    )
    p.set_defaults(func=_cmd_serve)

    from lockgate.clients._cli_cluster import add_backbone_commands, add_config_commands
    from lockgate.clients._cli_deploy import add_deploy_commands

    p = sub.add_parser(
        "config",
        help="print the node's start-up settings; get|set|history|rollback: the config store",
        allow_abbrev=False,  # its subcommands' options (--limit) are not its own (--limiter)
    )
    _add_config_flags(p)
    p.set_defaults(func=_cmd_config)
    add_config_commands(p)
    add_deploy_commands(add_backbone_commands(sub))

    p = sub.add_parser("keys", help="create, list and revoke API keys")
    ks = p.add_subparsers(dest="keys_cmd", required=True)
    kc = ks.add_parser("create", help="create a key (printed once)")
    kc.add_argument("--org", required=True)
    kc.add_argument("--agent", required=True)
    kc.add_argument("--role", action="append", help="repeatable; 'admin' for admin RPCs")
    ks.add_parser("list", help="list keys (ids, state and expiry; never secrets)")
    kr = ks.add_parser("revoke", help="revoke a key")
    kr.add_argument("key_id")
    kt = ks.add_parser(
        "rotate", help="a new key for the same org, agent and roles; the old one works --grace"
    )
    kt.add_argument("key_id")
    kt.add_argument("--grace", default="1h", help="how long the old key keeps working (1h)")
    for q in (kc, kt):
        q.add_argument("--ttl", help="the key stops working after this long (e.g. 30d)")
        q.add_argument("--expires", help="the key stops working at this TIME (e.g. 2027-01-01)")
    for q in ks.choices.values():
        q.add_argument("--data-dir", dest="data_dir")
        q.add_argument("--store", dest="store", help="postgresql://…: a cluster's keys")
        q.add_argument("--config", dest="config_file")
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("tokens", help="issue short-lived JWTs signed by this broker's local key")
    ts = p.add_subparsers(dest="tokens_cmd", required=True)
    ti = ts.add_parser("issue", help="print a token (the broker trusts it as issuer 'local')")
    ti.add_argument("--org", required=True)
    ti.add_argument("--agent", required=True)
    ti.add_argument("--role", action="append", help="repeatable; 'admin' for admin RPCs")
    ti.add_argument("--ttl", default="1h", help="lifetime, 1s to 30d (default 1h)")
    ts.add_parser("jwks", help="print the public JWKS of the local signing key")
    for q in ts.choices.values():
        q.add_argument("--data-dir", dest="data_dir")
        q.add_argument("--config", dest="config_file")
    p.set_defaults(func=_cmd_tokens)

    p = sub.add_parser("policy", help="check, fmt, test, explain, replay policies", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_policy)

    from lockgate.clients._cli import add_commands
    from lockgate.gateways.cli import add_commands as add_gateway_commands

    add_commands(sub, client_syntax())
    add_gateway_commands(sub)  # their optional packages load when a gateway starts
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "policy":
            # It hands its arguments on whole (argparse's REMAINDER refuses leading options).
            rest = argv[1:]
            return _cmd_policy(argparse.Namespace(rest=rest[1:] if rest[:1] == ["--"] else rest))
        args = build_parser().parse_args(argv)
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except BaseException as exc:  # the one place that prints a failure
        return report(exc)


if __name__ == "__main__":
    sys.exit(main())

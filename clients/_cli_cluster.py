"""``lockgate backbones`` and ``lockgate config get|set|history|rollback``: the backbone
registry and the config store, from the command line (the broker's ``admin`` role).

``lockgate config`` without a subcommand still prints the node's own start-up settings
(``broker/cli.py``); ``backbones`` leaves room for ``deploy|update|remove`` (helm), which
register their own subcommands on the same parser.

Example::

    lockgate backbones create eu-1 --endpoint nats://eu.example:4222 --org acme --region eu
    lockgate config set publish_rate=100 --pattern 'orders.>'
    lockgate config rollback
"""

from __future__ import annotations

import argparse
import dataclasses

from lockgate.clients._cli_kit import client_of, common_arguments, guard, print_json, record_json
from lockgate.clients._cluster import Backbone, ConfigChange, ConfigVersion
from lockgate.clients._errors import InvalidArgument

__all__ = ["add_backbone_commands", "add_config_commands"]

_STATUSES = ("active", "degraded", "maintenance", "down")


def _backbone_fields(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument("id", help="the backbone's unique id")
    p.add_argument("--endpoint", required=create, help="its public nats:// or tls:// URL")
    p.add_argument("--org", action="append", dest="orgs", help="an org it carries (repeatable)")
    p.add_argument("--cluster", action="append", dest="clusters", help="a cluster it serves")
    p.add_argument("--region")
    p.add_argument("--version", dest="bb_version", help="the version it runs")
    p.add_argument("--status", choices=_STATUSES)
    if not create:
        p.add_argument("--no-orgs", action="store_true", help="it carries no org any more")


def add_backbone_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``lockgate backbones list|get|create|update|delete``; returns its subparsers (for
    ``deploy|update|remove`` to join)."""
    p = subparsers.add_parser("backbones", help="the backbone registry (admin role)")
    bs = p.add_subparsers(dest="backbones_cmd", required=True, metavar="COMMAND")
    common_arguments(bs.add_parser("list", help="list the registry's backbones"))
    for name, text in (("get", "show one backbone"), ("delete", "remove a backbone's record")):
        q = bs.add_parser(name, help=text)
        q.add_argument("id")
        common_arguments(q)
    q = bs.add_parser("create", help="add a backbone's record")
    _backbone_fields(q, create=True)
    common_arguments(q)
    q = bs.add_parser("update", help="change fields of a backbone's record (the rest stay)")
    _backbone_fields(q, create=False)
    common_arguments(q)
    p.set_defaults(func=guard(_backbones))
    return bs


async def _backbones(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        admin = c.admin
        cmd = args.backbones_cmd
        if cmd == "list":
            for b in await admin.list_backbones():
                print_json(record_json(b))
        elif cmd == "get":
            print_json(record_json(await admin.get_backbone(args.id)))
        elif cmd == "delete":
            await admin.delete_backbone(args.id)
            print_json({"deleted": args.id})
        elif cmd == "create":
            b = Backbone(
                args.id,
                args.endpoint,
                tuple(args.orgs or ()),
                tuple(args.clusters or ()),
                args.region or "",
                args.bb_version or "",
                args.status or "active",
            )
            print_json(record_json(await admin.create_backbone(b)))
        else:
            current = await admin.get_backbone(args.id)
            changes: dict[str, object] = {}
            for name, value in (
                ("endpoint", args.endpoint),
                ("cluster_ids", tuple(args.clusters) if args.clusters else None),
                ("region", args.region),
                ("version", args.bb_version),
                ("status", args.status),
            ):
                if value is not None:
                    changes[name] = value
            if args.no_orgs or args.orgs:
                changes["org_ids"] = tuple(args.orgs or ())
            b = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
            print_json(record_json(await admin.update_backbone(b)))
    return 0


def add_config_commands(config: argparse.ArgumentParser) -> None:
    """``lockgate config get|set|history|rollback`` under the ``config`` parser (which, with
    no subcommand, prints the node's start-up settings)."""
    cs = config.add_subparsers(dest="config_cmd", required=False, metavar="COMMAND")
    q = cs.add_parser("get", help="the config store's running settings (or a version's)")
    q.add_argument("--version", dest="cfg_version", type=int, default=0)
    common_arguments(q)
    q = cs.add_parser("set", help="change settings of the config store: a new version")
    q.add_argument("settings", nargs="*", metavar="NAME=VALUE", help="e.g. publish_rate=100")
    q.add_argument("--pattern", default="", help="the subject pattern they apply to (global)")
    q.add_argument("--unset", action="append", metavar="NAME", help="remove a setting")
    q.add_argument("--expect-version", type=int, default=0, help="refuse unless this version runs")
    common_arguments(q)
    q = cs.add_parser("history", help="the config store's versions, newest first")
    q.add_argument("--limit", type=int, default=100)
    common_arguments(q)
    q = cs.add_parser("rollback", help="make an earlier version's settings a new version")
    q.add_argument("to", nargs="?", type=int, default=0, help="default: the one before")
    common_arguments(q)
    for sub in cs.choices.values():
        sub.set_defaults(func=guard(_config))


def _version_json(v: ConfigVersion, *, settings: bool = False) -> dict[str, object]:
    out: dict[str, object] = {
        "version": v.version,
        "created_time": v.created_time.isoformat(),
        "author": v.author,
        "origin": v.origin,
        "detail": v.detail,
        "active": v.active,
    }
    if settings:
        scopes: dict[str, dict[str, str]] = {}
        for s in v.settings:
            scopes.setdefault(s.pattern, {})[s.name] = s.value
        out["settings"] = scopes
    return out


def _changes(args: argparse.Namespace) -> list[ConfigChange]:
    out = []
    for item in args.settings:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise InvalidArgument(
                f"{item!r} is not NAME=VALUE", hint="e.g. lockgate config set publish_rate=100"
            )
        out.append(ConfigChange(args.pattern, name.strip(), value))
    out += [ConfigChange(args.pattern, name, unset=True) for name in args.unset or ()]
    if not out:
        raise InvalidArgument("no setting to change", hint="give NAME=VALUE or --unset NAME")
    return out


async def _config(args: argparse.Namespace) -> int:
    if args.config_cmd == "set":
        changes = _changes(args)  # before connecting: a usage error needs no broker
    async with client_of(args) as c:
        admin = c.admin
        if args.config_cmd == "get":
            print_json(_version_json(await admin.get_config(args.cfg_version), settings=True))
        elif args.config_cmd == "set":
            v = await admin.set_config(changes, expected_version=args.expect_version)
            print_json(_version_json(v))
        elif args.config_cmd == "history":
            for v in await admin.list_config_versions(args.limit):
                print_json(_version_json(v))
        else:
            print_json(_version_json(await admin.rollback_config(args.to)))
    return 0

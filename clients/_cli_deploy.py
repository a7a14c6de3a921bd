"""``lockgate backbones deploy|upgrade|remove``: helm against a kube context, recorded in the
backbone registry (see :mod:`clients._deploy`). ``update`` stays the registry edit of a record;
``upgrade`` is helm's."""

from __future__ import annotations

import argparse

from lockgate.clients._cli_kit import client_of, common_arguments, guard, print_json, record_json
from lockgate.clients._cluster import Backbone
from lockgate.clients._deploy import BackboneDeployer, Deployment

__all__ = ["add_deploy_commands"]


def add_deploy_commands(
    backbones: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    for name, text in (
        ("deploy", "install a NATS JetStream backbone with helm and record it"),
        ("upgrade", "upgrade a recorded backbone with helm (its record follows)"),
        ("remove", "uninstall a recorded backbone with helm and delete its record"),
    ):
        q = backbones.add_parser(name, help=text)
        q.add_argument("id", help="the backbone's id in the registry")
        q.add_argument("--kube-context", default="", help="kubectl context (default: current)")
        q.add_argument("--namespace", default="lockgate")
        q.add_argument("--helm", default="helm", help="the helm binary (default: on PATH)")
        q.add_argument("--dry-run", action="store_true", help="render or show; change nothing")
        if name != "remove":
            q.add_argument("--chart", default="deploy/helm/nats-backbone")
            q.add_argument("--set", action="append", dest="values", metavar="KEY=VALUE")
            q.add_argument("--endpoint", default="", help="default: the chart's Service")
            q.add_argument("--org", action="append", dest="orgs", help="an org it carries")
            q.add_argument("--cluster", action="append", dest="clusters")
            q.add_argument("--region", default="")
        common_arguments(q)
        q.set_defaults(func=guard(_deploy))


def _json(d: Deployment) -> dict[str, object]:
    out: dict[str, object] = {"command": list(d.command)}
    if d.record is not None:
        out["backbone"] = record_json(d.record)
    if d.manifest:
        out["manifest"] = d.manifest
    return out


async def _deploy(args: argparse.Namespace) -> int:
    cmd = args.backbones_cmd
    async with client_of(args) as c:
        deployer = BackboneDeployer(c.admin, chart=getattr(args, "chart", "."), helm=args.helm)
        where = {"kube_context": args.kube_context, "namespace": args.namespace}
        if cmd == "remove":
            done = await deployer.remove(args.id, dry_run=args.dry_run, **where)
        else:
            b = Backbone(
                args.id,
                args.endpoint,
                tuple(args.orgs or ()),
                tuple(args.clusters or ()),
                args.region,
            )
            step = deployer.deploy if cmd == "deploy" else deployer.upgrade
            done = await step(b, values=args.values or (), dry_run=args.dry_run, **where)
        print_json(_json(done))
    return 0

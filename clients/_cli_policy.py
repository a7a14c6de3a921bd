"""``lockgate policy push | versions | rollback``: a broker's policy sets.

``lockgate policy`` belongs to the pure policy package; these three talk to a broker, so
``lockgate`` (the composition root) registers them there, and reads the directory for push
with the one policy-file reader (``args.files``).

Example::

    lockgate policy push policies/ --org acme
    lockgate policy rollback
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lockgate.clients._cli_kit import (
    Handler,
    client_of,
    common_arguments,
    guard,
    print_json,
    record_json,
)

__all__ = ["POLICY_COMMANDS"]
# ``lockgate policy`` belongs to the pure policy package; these three talk to a broker, so
# ``lockgate`` (the composition root) registers them there, and reads the directory for push
# with the one policy-file reader (``args.files``).


def _policy_org(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--org",
        default="",
        help="the org whose own set to act on (its org-admin may); default: the global set "
        "(the broker's admin)",
    )
    common_arguments(p)


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="directory of *.policy files: the whole set")
    p.add_argument("--validate-only", action="store_true", help="check only, do not run it")
    _policy_org(p)


def _rollback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", nargs="?", default="", help="default: the one before the running")
    _policy_org(p)


async def _push(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        update = await c.admin.put_policies(
            args.files, validate_only=args.validate_only, org=args.org
        )
    for problem in update.problems:
        print(f"{problem.file}:{problem.line}:{problem.column}: {problem.message}", file=sys.stderr)
    print_json({"version": update.version, "applied": update.applied, "org": args.org})
    return 0


async def _versions(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        for v in await c.admin.list_policy_versions(org=args.org):
            print_json(record_json(v))
    return 0


async def _rollback(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        print_json(record_json(await c.admin.rollback_policies(args.version or None, org=args.org)))
    return 0


#: ``lockgate policy`` subcommands that talk to a broker: name -> (help, arguments, handler).
POLICY_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "push": (
        "check a directory's set on the broker and run it (PutPolicies)",
        _push_arguments,
        guard(_push),
    ),
    "versions": (
        "list the versions of a policy set (ListPolicyVersions)",
        _policy_org,
        guard(_versions),
    ),
    "rollback": (
        "run an earlier version of a policy set again (RollbackPolicies)",
        _rollback_arguments,
        guard(_rollback),
    ),
}

"""How ``lockgate`` reports a failure: one sentence, a ``hint:`` line, an exit code.

The commands of every package (``broker/cli.py``, ``clients/_cli.py``, ``gateways/cli.py``,
``policy/cli.py``) raise; :func:`report`, called once by ``broker.cli.main``, alone prints.
A sub-command signals bad input found after parsing with the standard library's
``argparse.ArgumentTypeError``, so that packages which may not import each other share it.

Exit codes (documented in the README's CLI section):

====  =====================================================================================
0     success
1     the command ran and failed: the broker refused, a check or a test failed, a port is
      busy, the data directory is in use, the broker cannot be reached
2     usage: bad arguments or input (argparse's own code)
70    internal error, a bug of ours (``EX_SOFTWARE``); the sentence asks for a report
78    configuration or installation (``EX_CONFIG``): a bad setting, a missing config file, a
      missing optional extra
130   interrupted (Ctrl-C)
====  =====================================================================================

Example::

    try:
        return run(args)
    except BaseException as exc:  # noqa: BLE001 -- the one place that prints failures
        return report(exc)
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from lockgate.broker.errors import Reason
from lockgate.broker.extras import extra_for, missing_extra

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "report",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130


def _say(out: TextIO, message: str, hint: str = "") -> None:
    print(f"lockgate: {message}", file=out)
    if hint:
        print(f"hint: {hint}", file=out)


def report(exc: BaseException, out: TextIO | None = None) -> int:
    """Print ``exc`` as one sentence (and a hint) on ``out`` (stderr); return the exit code."""
    out = sys.stderr if out is None else out
    if isinstance(exc, SystemExit):  # argparse has printed its usage message
        return exc.code if isinstance(exc.code, int) else (EXIT_USAGE if exc.code else 0)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, argparse.ArgumentTypeError | argparse.ArgumentError):
        _say(out, str(exc), "see `lockgate COMMAND --help`")
        return EXIT_USAGE
    if isinstance(exc, ModuleNotFoundError) and extra_for(exc.name):
        exc = missing_extra("this command", exc)
    # Lazily, so that a failure of one package cannot hide another's error.
    from lockgate.broker.config import ConfigError
    from lockgate.broker.errors import BrokerError

    if isinstance(exc, BrokerError):
        _say(out, exc.message, exc.hint)
        setup = isinstance(exc, ConfigError) or exc.reason == Reason.MISSING_EXTRA
        return EXIT_CONFIG if setup else EXIT_FAILED
    code = _report_client_or_policy(exc, out)
    if code is not None:
        return code
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        _say(out, f"{where}{exc.strerror or exc}")
        return EXIT_FAILED
    _say(
        out,
        f"internal error ({type(exc).__name__}: {exc})",
        "this is a bug of Lockgate's; please report it with the command you ran",
    )
    return EXIT_INTERNAL


def _report_client_or_policy(exc: BaseException, out: TextIO) -> int | None:
    from lockgate.clients._errors import LockgateError

    if isinstance(exc, LockgateError):
        _say(out, exc.message, exc.hint)
        return EXIT_FAILED
    try:
        from lockgate.policy.errors import PolicyErrors
    except ImportError:  # the client alone is installed: no policy can have failed
        return None
    if isinstance(exc, PolicyErrors):
        for problem in (*exc.errors, *exc.warnings):
            print(problem.render(), file=out)
        n = len(exc.errors)
        _say(out, f"{n} error{'s' if n != 1 else ''}; the policies were not loaded")
        return EXIT_FAILED
    return None

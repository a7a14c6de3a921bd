"""The policy package's edge: ``*.policy`` files on disk and the parser's table cache.

The engine (:mod:`policy.engine`) only sees ``{file name: text}``; this module reads
directories into that form and builds parsers whose Lark tables are cached in a private
per-user directory.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.policy").write_text('policy a on "a.>" { allow publish }')
>>> load_policy_dir(d).policy_names
('a',)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lark

from .engine import PolicySet, compile_policies
from .errors import PolicyError, PolicyErrors
from .parser import PolicyParser

__all__ = ["load_policy_dir", "new_parser", "parser_cache_path", "read_policy_dir"]


def parser_cache_path() -> str | bool:
    """Where Lark keeps its parser tables: a private per-user directory, never the shared temp
    directory (the cache is a pickle, and loading one that another user planted runs code).
    False (no cache) when the directory cannot be made private."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "lockgate")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return False
    except (OSError, AttributeError):
        return False
    tag = f"{lark.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    return os.path.join(path, f"policy-grammar-{tag}.lark-cache")


def new_parser() -> PolicyParser:
    """A parser whose tables load from (or are saved to) :func:`parser_cache_path`."""
    return PolicyParser(cache=parser_cache_path())


def read_policy_dir(path: str | Path) -> dict[str, str]:
    """Every ``*.policy`` file under ``path`` (recursively) as ``{relative name: text}``;
    raises :class:`PolicyErrors` naming every file that cannot be read."""
    root = Path(path)
    if not root.is_dir():
        raise PolicyErrors(
            [
                PolicyError(
                    str(root),
                    1,
                    1,
                    "not a directory",
                    "give the directory that holds the *.policy files",
                )
            ]
        )
    sources: dict[str, str] = {}
    bad: list[PolicyError] = []
    for f in sorted(root.rglob("*.policy")):
        name = f.relative_to(root).as_posix()
        try:
            sources[name] = f.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            bad.append(PolicyError(name, 1, 1, f"cannot read the file: {exc}"))
    if bad:
        raise PolicyErrors(bad)
    return sources


def load_policy_dir(path: str | Path, parser: PolicyParser | None = None) -> PolicySet:
    """Load every ``*.policy`` file under ``path``; names are relative paths, so decisions name
    rules as ``sub/dir/file.policy:LINE``. Raises :class:`PolicyErrors` listing every error of
    every file; nothing is loaded then."""
    return compile_policies(read_policy_dir(path), parser or new_parser())

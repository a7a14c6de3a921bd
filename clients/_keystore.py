"""The local keystore of one agent: its Ed25519 identity key, its X25519 key pair and the
identity keys it pinned on first use, in one JSON file only its owner may read.

Example::

    ks = Keystore.open("~/.lockgate/ann.keys")   # created (mode 0600) when missing
    async with Client(target, api_key=key, keystore=ks) as c: ...

The file is created with mode 0600 and rewritten atomically (a temporary file in the same
folder, then a rename); a keystore file readable by its group or others is refused with
:class:`UnsafeKeystore`. Private keys never leave this file and the process.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lockgate.clients._errors import KeyMismatch, UnsafeKeystore

if TYPE_CHECKING:
    import nacl.public
    import nacl.signing

__all__ = ["Keystore"]

_VERSION = 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _crypto() -> None:
    try:
        import nacl  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the extra is part of [dev]
        from lockgate.clients._errors import FailedPrecondition

        raise FailedPrecondition(
            "end-to-end encryption needs pynacl",
            reason="MISSING_EXTRA",
            hint="pip install 'lockgate[crypto]'",
        ) from exc


class Keystore:
    """One agent's private keys and pinned identity keys (see the module's docstring)."""

    def __init__(
        self,
        path: Path,
        identity: nacl.signing.SigningKey,
        private: nacl.public.PrivateKey,
        agent: str = "",
        pins: dict[str, bytes] | None = None,
    ) -> None:
        self.path = path
        self.identity = identity
        self.private = private
        self.agent = agent
        """The agent the keys were published for (empty until the first publish)."""
        self.pins: dict[str, bytes] = dict(pins or {})

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Keystore:
        """Read the keystore at ``path``, or create it with fresh keys when there is none."""
        _crypto()
        import nacl.public
        import nacl.signing

        where = Path(path).expanduser()
        try:
            fd = os.open(where, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            ks = cls(where, nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())
            ks._write(create=True)
            return ks
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UnsafeKeystore(
                    f"the keystore {where} is readable by its group or others "
                    f"(mode {stat.S_IMODE(mode):04o}), so its private keys are not private",
                    hint=f"chmod 600 {where}, or create a new keystore elsewhere",
                )
            raw = f.read()
        try:
            doc = json.loads(raw)
            if doc.get("version") != _VERSION:
                raise ValueError(f"version {doc.get('version')!r}")
            return cls(
                where,
                nacl.signing.SigningKey(_unb64(doc["identity_key"])),
                nacl.public.PrivateKey(_unb64(doc["x25519_private_key"])),
                str(doc.get("agent", "")),
                {str(a): _unb64(k) for a, k in dict(doc.get("pins", {})).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UnsafeKeystore(
                f"the keystore {where} is not a keystore this client can read ({exc})",
                hint="restore it from a backup, or create a new one elsewhere",
            ) from exc

    @property
    def public_key(self) -> bytes:
        """The X25519 public key (32 bytes)."""
        return bytes(self.private.public_key)

    @property
    def identity_key(self) -> bytes:
        """The Ed25519 identity public key (32 bytes)."""
        return bytes(self.identity.verify_key)

    def bind(self, agent: str) -> None:
        """Record the agent these keys belong to; another agent's key is refused."""
        if self.agent and self.agent != agent:
            raise KeyMismatch(
                f"the keystore {self.path} holds the keys of {self.agent!r}, not of {agent!r}",
                hint="give each agent its own keystore file",
            )
        if not self.agent:
            self.agent = agent
            self._write()

    def pin(self, agent: str, identity_key: bytes) -> None:
        """Pin ``agent``'s identity key on first use; a different one is :class:`KeyMismatch`."""
        known = self.pins.get(agent)
        if known is None:
            self.pins[agent] = identity_key
            self._write()
        elif known != identity_key:
            raise KeyMismatch(
                f"the key directory gives {agent!r} an identity key other than the one "
                "pinned on first use",
                hint=f"if {agent} really made new keys, call conversations.forget_pin"
                f"({agent!r}); otherwise someone swapped its key",
            )

    def forget(self, agent: str) -> None:
        """Drop the pin of ``agent`` (after it really made new keys)."""
        if self.pins.pop(agent, None) is not None:
            self._write()

    def _write(self, *, create: bool = False) -> None:
        doc = {
            "version": _VERSION,
            "agent": self.agent,
            "identity_key": _b64(bytes(self.identity)),
            "x25519_private_key": _b64(bytes(self.private)),
            "pins": {a: _b64(k) for a, k in sorted(self.pins.items())},
        }
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 from the start: the keys are never readable
        # by others, not even for a moment.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            if create and self.path.exists():
                raise UnsafeKeystore(
                    f"the keystore {self.path} appeared while this client created it",
                    hint="open it again",
                )
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

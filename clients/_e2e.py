"""End-to-end encryption for conversations, pure (no I/O), on pynacl only.

- The key directory: an agent's X25519 public key signed by its Ed25519 identity key
  (:func:`sign_directory_entry`, :func:`verify_directory_entry`).
- Direct messages: one NaCl SealedBox to the recipient and one to the sender, concatenated
  (both have the same length, ``48 +`` the plaintext's), so the sender reads its history.
- Group messages: XChaCha20-Poly1305 (IETF AEAD, ``nacl.secret.Aead``) under the group key of
  an epoch, the 24-byte nonce first; the conversation, the epoch and the sender are the
  associated data, so a message moved to another conversation, epoch or sender (the broker
  sets the sender) does not decrypt.
- Group key envelopes: the 32-byte key sealed (SealedBox) to each member, signed by the sealer's
  identity key over the conversation, the epoch, the member and the sealed bytes, so that the
  broker cannot hand a member a key of its own making.

Every failure to open is :class:`DecryptionError`; every bad signature :class:`KeyMismatch`.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
import nacl.utils

from lockgate.clients._errors import DecryptionError, KeyMismatch

__all__ = [
    "DIRECT_SCHEME",
    "GROUP_KEY_SIZE",
    "GROUP_SCHEME",
    "new_group_key",
    "open_direct",
    "open_group",
    "open_group_key",
    "seal_direct",
    "seal_group",
    "seal_group_key",
    "sign_directory_entry",
    "verify_directory_entry",
]

DIRECT_SCHEME = "x25519-sealedbox"
GROUP_SCHEME = "xchacha20-poly1305"
GROUP_KEY_SIZE = nacl.secret.Aead.KEY_SIZE
_DIRECTORY = b"lockgate/key-directory/v1|"
_ENVELOPE = b"lockgate/group-key/v1|"
_MESSAGE = b"lockgate/group-message/v1|"


def sign_directory_entry(identity: nacl.signing.SigningKey, public_key: bytes) -> bytes:
    """The identity key's signature over an X25519 public key (64 bytes)."""
    return identity.sign(_DIRECTORY + public_key).signature


def verify_directory_entry(
    agent: str, public_key: bytes, identity_key: bytes, signature: bytes
) -> None:
    """Raise :class:`KeyMismatch` unless ``signature`` is ``identity_key``'s over
    ``public_key``."""
    try:
        nacl.signing.VerifyKey(identity_key).verify(_DIRECTORY + public_key, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
        raise KeyMismatch(
            f"the key directory's entry for {agent!r} is not signed by its identity key",
            hint="someone swapped the key in the directory; do not send to it",
        ) from exc


def seal_direct(recipient: bytes, sender: bytes, plaintext: bytes) -> bytes:
    """A SealedBox to the recipient's public key followed by one to the sender's."""
    return nacl.public.SealedBox(nacl.public.PublicKey(recipient)).encrypt(
        plaintext
    ) + nacl.public.SealedBox(nacl.public.PublicKey(sender)).encrypt(plaintext)


def open_direct(private: nacl.public.PrivateKey, data: bytes, what: str) -> bytes:
    """The plaintext of a direct message, from whichever copy is sealed to ``private``."""
    half = len(data) // 2
    if len(data) % 2 or half < nacl.bindings.crypto_box_SEALBYTES:
        raise DecryptionError(f"{what} is not a direct message of two sealed copies")
    box = nacl.public.SealedBox(private)
    for copy in (data[:half], data[half:]):
        try:
            return box.decrypt(copy)
        except nacl.exceptions.CryptoError:
            continue
    raise DecryptionError(
        f"{what} does not decrypt with your key (tampered, or sealed to other keys)"
    )


def _message_aad(conversation_id: str, epoch: int, sender: str) -> bytes:
    return b"%s%s|%d|%s" % (_MESSAGE, conversation_id.encode(), epoch, sender.encode())


def new_group_key() -> bytes:
    """A fresh random group key."""
    return nacl.utils.random(GROUP_KEY_SIZE)


def seal_group(
    key: bytes, conversation_id: str, epoch: int, sender: str, plaintext: bytes
) -> bytes:
    """The nonce and the XChaCha20-Poly1305 ciphertext of ``plaintext`` under ``key``."""
    return bytes(
        nacl.secret.Aead(key).encrypt(plaintext, _message_aad(conversation_id, epoch, sender))
    )


def open_group(
    key: bytes, conversation_id: str, epoch: int, sender: str, data: bytes, what: str
) -> bytes:
    """The plaintext of a group message (:class:`DecryptionError` when it does not open)."""
    try:
        return nacl.secret.Aead(key).decrypt(data, _message_aad(conversation_id, epoch, sender))
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError) as exc:
        raise DecryptionError(
            f"{what} does not decrypt under the group key of epoch {epoch} (tampered, "
            "or not what its sender, conversation or epoch say)"
        ) from exc


def _envelope_signed(conversation_id: str, epoch: int, agent: str, sealed: bytes) -> bytes:
    return b"%s%s|%d|%s|" % (_ENVELOPE, conversation_id.encode(), epoch, agent.encode()) + sealed


def seal_group_key(
    identity: nacl.signing.SigningKey,
    conversation_id: str,
    epoch: int,
    agent: str,
    public_key: bytes,
    key: bytes,
) -> tuple[bytes, bytes]:
    """``(sealed_key, signature)``: ``key`` sealed to ``agent``'s public key, signed."""
    sealed = nacl.public.SealedBox(nacl.public.PublicKey(public_key)).encrypt(key)
    signature = identity.sign(_envelope_signed(conversation_id, epoch, agent, sealed)).signature
    return bytes(sealed), signature


def open_group_key(
    private: nacl.public.PrivateKey,
    sealer_identity: bytes,
    conversation_id: str,
    epoch: int,
    agent: str,
    sealed: bytes,
    signature: bytes,
    sealed_by: str,
) -> bytes:
    """The group key of an envelope, after checking its sealer's signature."""
    try:
        nacl.signing.VerifyKey(sealer_identity).verify(
            _envelope_signed(conversation_id, epoch, agent, sealed), signature
        )
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
        raise KeyMismatch(
            f"the group key of epoch {epoch} of {conversation_id} is not signed by "
            f"{sealed_by!r}, who the broker says sealed it",
            hint="the envelope was swapped or forged; do not use it",
        ) from exc
    try:
        key = nacl.public.SealedBox(private).decrypt(sealed)
    except nacl.exceptions.CryptoError as exc:
        raise DecryptionError(
            f"the group key of epoch {epoch} of {conversation_id} does not open with your key"
        ) from exc
    if len(key) != GROUP_KEY_SIZE:
        raise DecryptionError(f"the group key of epoch {epoch} of {conversation_id} is malformed")
    return key

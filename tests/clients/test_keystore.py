"""The local keystore: created 0600, refused when others may read it, pins on first use; and
the pure crypto of clients._e2e (no broker)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lockgate.clients import DecryptionError, KeyMismatch, Keystore, UnsafeKeystore
from lockgate.clients import _e2e as e2e


def test_created_with_owner_only_permissions_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ann.keys"
    ks = Keystore.open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Keystore.open(path)
    assert (again.public_key, again.identity_key) == (ks.public_key, ks.identity_key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_group_or_world_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ann.keys"
    Keystore.open(path)
    os.chmod(path, mode)
    with pytest.raises(UnsafeKeystore) as err:
        Keystore.open(path)
    assert err.value.reason == "UNSAFE_KEYSTORE"
    assert str(path) in err.value.message and f"{mode:04o}" in err.value.message
    assert err.value.hint.startswith("chmod 600")


def test_unreadable_content_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "ann.keys"
    path.write_text("not json")
    path.chmod(0o600)
    with pytest.raises(UnsafeKeystore, match="not a keystore this client can read"):
        Keystore.open(path)


def test_pins_survive_and_a_changed_identity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ann.keys"
    ks = Keystore.open(path)
    bob = Keystore.open(tmp_path / "bob.keys")
    ks.pin("bob", bob.identity_key)
    reopened = Keystore.open(path)
    reopened.pin("bob", bob.identity_key)  # the same key: fine
    with pytest.raises(KeyMismatch, match="pinned on first use"):
        reopened.pin("bob", Keystore.open(tmp_path / "mallory.keys").identity_key)
    reopened.forget("bob")
    reopened.pin("bob", b"\x01" * 32)
    ks.bind("ann")
    with pytest.raises(KeyMismatch, match="holds the keys of 'ann'"):
        Keystore.open(path).bind("bob")


def test_directory_entry_signature(tmp_path: Path) -> None:
    ks = Keystore.open(tmp_path / "ann.keys")
    sig = e2e.sign_directory_entry(ks.identity, ks.public_key)
    e2e.verify_directory_entry("ann", ks.public_key, ks.identity_key, sig)
    with pytest.raises(KeyMismatch, match="not signed by its identity key"):
        e2e.verify_directory_entry("ann", b"\x07" * 32, ks.identity_key, sig)
    with pytest.raises(KeyMismatch):
        e2e.verify_directory_entry("ann", ks.public_key, ks.identity_key, b"short")


def test_group_messages_bind_conversation_epoch_and_sender() -> None:
    key = e2e.new_group_key()
    box = e2e.seal_group(key, "c1", 3, "ann", b"hi")
    assert e2e.open_group(key, "c1", 3, "ann", box, "m") == b"hi"
    for cid, epoch, sender in (("c2", 3, "ann"), ("c1", 4, "ann"), ("c1", 3, "bob")):
        with pytest.raises(DecryptionError):
            e2e.open_group(key, cid, epoch, sender, box, "m")
    with pytest.raises(DecryptionError):
        e2e.open_group(key, "c1", 3, "ann", box[:10], "m")  # truncated: no crash
    with pytest.raises(DecryptionError):
        e2e.open_group(e2e.new_group_key(), "c1", 3, "ann", box, "m")


def test_group_key_envelope_is_signed_by_its_sealer(tmp_path: Path) -> None:
    ann, bob = Keystore.open(tmp_path / "a"), Keystore.open(tmp_path / "b")
    key = e2e.new_group_key()
    sealed, sig = e2e.seal_group_key(ann.identity, "c1", 1, "bob", bob.public_key, key)
    got = e2e.open_group_key(bob.private, ann.identity_key, "c1", 1, "bob", sealed, sig, "ann")
    assert got == key
    with pytest.raises(KeyMismatch, match="not signed by 'ann'"):
        e2e.open_group_key(bob.private, bob.identity_key, "c1", 1, "bob", sealed, sig, "ann")
    with pytest.raises(KeyMismatch):  # moved to another epoch
        e2e.open_group_key(bob.private, ann.identity_key, "c1", 2, "bob", sealed, sig, "ann")
    with pytest.raises(DecryptionError):  # not sealed to ann
        e2e.open_group_key(ann.private, ann.identity_key, "c1", 1, "bob", sealed, sig, "ann")


def test_direct_copies_open_for_both_ends_only(tmp_path: Path) -> None:
    ann, bob, cy = (Keystore.open(tmp_path / n) for n in "abc")
    box = e2e.seal_direct(bob.public_key, ann.public_key, b"psst")
    assert e2e.open_direct(bob.private, box, "m") == b"psst"
    assert e2e.open_direct(ann.private, box, "m") == b"psst"
    with pytest.raises(DecryptionError):
        e2e.open_direct(cy.private, box, "m")
    with pytest.raises(DecryptionError, match="two sealed copies"):
        e2e.open_direct(bob.private, b"x" * 7, "m")

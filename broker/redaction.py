"""Credentials inside URLs (pure): hidden in what is shown, kept in what is stored.

One rule for every stored URL an admin reads back (a backbone's endpoint, a webhook durable's
``endpoint_url``): :func:`shown_url` is what reads, refusals, logs and the audit log carry;
the stored value, and the connection or POST made with it, keep the credentials; and
:func:`kept_url` turns a write that sends back exactly what was read into the stored value,
so a read-modify-write keeps them. :func:`redact_url` hides only a password, for settings
printed whole (``lockgate config``) and connection errors.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "kept_url", "redact_url", "shown_url"]

REDACTED = "<redacted>"
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]+(?=@)", re.IGNORECASE)
_URL_USER = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://)[^/@\s]+(?=@)", re.IGNORECASE)


def redact_url(url: str, *, user_is_secret: bool = False) -> str:
    """``url`` without its password, for messages and logs; with ``user_is_secret`` the
    whole user part goes too (NATS takes a bare token there: ``nats://TOKEN@host``).

    >>> redact_url("postgresql://u:pw@h:5432/d")
    'postgresql://u:<redacted>@h:5432/d'
    >>> redact_url("nats://s3cr3t@h:4222", user_is_secret=True)
    'nats://<redacted>@h:4222'
    """
    if user_is_secret:
        return _URL_USER.sub(rf"\g<head>{REDACTED}", url)
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", url)


def shown_url(url: str) -> str:
    """A stored URL as it is shown: the whole user part (a NATS token sits there alone),
    every query value (``?token=``, ``?sig=``, ``?code=``: no list of names is complete; a
    bare ``?TOKEN`` too) and the fragment read ``<redacted>``; scheme, host, port, path and
    the query's names stay.

    >>> shown_url("nats://u:s3cr3t@eu.example:4222")
    'nats://<redacted>@eu.example:4222'
    >>> shown_url("https://hooks.example/in?v=2&token=s3cr3t")
    'https://hooks.example/in?v=<redacted>&token=<redacted>'
    """
    rest, hash_, fragment = url.partition("#")
    rest, mark, query = rest.partition("?")
    shown = redact_url(rest, user_is_secret=True)
    if mark:
        shown += mark + "&".join(map(_shown_pair, query.split("&")))
    return shown + hash_ + (REDACTED if fragment else "")


def _shown_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if not eq:  # a bare value (``?s3cr3t``) may be a token itself
        return REDACTED if name else name
    return name + eq + (REDACTED if value else "")


def kept_url(sent: str, stored: str) -> str:
    """What a write of ``sent`` over ``stored`` stores: ``stored`` when ``sent`` is exactly
    how ``stored`` reads back (the credentials stay), else ``sent``.

    >>> kept_url("nats://<redacted>@h:4222", "nats://tok@h:4222")
    'nats://tok@h:4222'
    """
    return stored if stored and sent == shown_url(stored) else sent

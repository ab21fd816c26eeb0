"""Credentials in URLs (``http://user:password@host/v1``) kept out of messages, logs, caches.

The URL with its userinfo still goes to the SDK, so the server receives the credentials as
the SDK and httpx send them; only what bookrec prints or stores is masked.
"""

from __future__ import annotations

import re

__all__ = ["mask_urls_in", "mask_userinfo", "strip_userinfo"]

# scheme://userinfo@ : the userinfo ends at the netloc's last "@" (as ``urlsplit`` reads it).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def _masked(match: re.Match[str]) -> str:
    user, sep, _ = match["userinfo"].partition(":")
    # A lone user name is often a token: it is masked too.
    shown = f"{user}:***" if sep else "***"
    return f"{match['scheme']}{shown}@"


def mask_userinfo(url: str) -> str:
    """``url`` with its password shown as ``***`` (``http://user:***@host/v1``); a user name
    without a password is masked whole (``http://***@host/v1``). Other URLs are unchanged."""
    return _USERINFO.sub(_masked, url, count=1)


def mask_urls_in(text: str) -> str:
    """``text`` with the userinfo of every URL in it masked like :func:`mask_userinfo`."""
    return _USERINFO.sub(_masked, text)


def strip_userinfo(url: str) -> str:
    """``url`` without its userinfo (``http://host/v1``): the same server, whoever logs in."""
    return _USERINFO.sub(lambda m: m["scheme"], url, count=1)

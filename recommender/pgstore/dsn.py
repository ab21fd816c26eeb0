"""Connection strings shown without their password: :func:`mask_dsn`."""

from __future__ import annotations

import re

__all__ = ["mask_dsn"]

MASK = "***"

# postgresql://user:secret@host/db — the password runs to the last "@" of the authority.
_URI_PASSWORD = re.compile(r"(\bpostgres(?:ql)?://[^\s:/?#@]*:)[^\s/?#]*(@)", re.IGNORECASE)
# password=secret, password = 'with spaces', ?password=secret&... (keyword and query forms)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def mask_dsn(text: str) -> str:
    """``text`` with every password of a PostgreSQL connection string in it replaced by ***.

    Works on a DSN in URI or keyword form, or on any message that quotes one.
    """
    text = _URI_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", text)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", text)

"""Keep secrets out of the server's log.

Browsers cannot send headers on a WebSocket or on an OBS browser source URL, so the
overlay accepts the API key as ``?key=KEY``; uvicorn's access log (and its WebSocket lines
on ``uvicorn.error``) print the whole path with its query string. :class:`RedactSecrets` is
a :class:`logging.Filter` that rewrites the values of secret query parameters (``key``,
``api_key``, ``token``, ...) to ``[redacted]`` in every record, and :func:`install_redaction`
puts it on uvicorn's loggers. :func:`~avatarforge.serve.app.create_app` calls it, so any
uvicorn that runs the app -- ``avatarforge serve`` or ``uvicorn module:app`` -- logs
``GET /overlay?key=[redacted]&avatar=3``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "SECRET_PARAMS", "RedactSecrets", "install_redaction", "redact"]

#: Query parameters whose values never reach the log (case-insensitive).
SECRET_PARAMS = ("key", "api_key", "apikey", "api-key", "token", "access_token", "password")
REDACTED = "[redacted]"

#: Loggers that print request paths: uvicorn's access log and its WebSocket lines.
_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")

# A secret parameter after ? or & (or ; some clients use it), up to the next separator. The
# value may be percent-encoded; everything up to &, #, whitespace or a quote is the value.
_SECRET = re.compile(r"(?i)([?&;](?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=)[^&#\s\"']*")


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``[redacted]``."""
    return _SECRET.sub(lambda m: m.group(1) + REDACTED, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """A filter that redacts secret query values in a record's message and arguments.

    It never drops a record (returns True); it rewrites ``record.msg`` and ``record.args``
    in place, before any handler formats them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


def install_redaction(loggers: Iterable[str] = _LOGGERS) -> None:
    """Add one :class:`RedactSecrets` to each named logger (idempotent).

    A logger's filters survive uvicorn's ``logging.config.dictConfig`` (it replaces handlers,
    not filters), so installing before ``uvicorn.run`` is enough.
    """
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())

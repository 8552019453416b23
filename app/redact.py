"""Secrets never reach a log: one redaction rule for the audit log, uvicorn's access and error logs, harmspot's own
log records and error responses (docs/security.md#redaction).

The rule:

1. Anything shaped like a harmspot API key, ``hs_<8 hex>_<secret>``, wherever it appears (path, query string,
   message, error detail), becomes ``hs_<8 hex>_[REDACTED]``: the key id is public (it is in ``/keys`` and the
   audit log), the secret is not.
2. The value of a query parameter whose name says it is a credential (``api_key``, ``apikey``, ``key``,
   ``x-api-key``, ``token``, ``access_token``, ``auth``, ``authorization``, ``password``, ``secret``, ``sig``,
   ``signature``, any case, ``-`` or ``_``) becomes ``[REDACTED]``, whatever it looks like. Keys are only ever
   read from the ``X-API-Key`` header, so a credential in a URL is always refused (401) and never useful to log.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"
KEY_PATTERN = re.compile(r"hs_([0-9a-fA-F]{8})_[A-Za-z0-9_\-%]+")
_SECRET_NAME = re.compile(r"^(x[-_]?)?(api[-_]?key|apikey|key|token|access[-_]?token|auth|authorization|password|"
                          r"passwd|secret|client[-_]?secret|sig|signature)$", re.IGNORECASE)


def redact(text: str) -> str:
    """Rule 1: every harmspot key in ``text`` keeps its id and loses its secret."""
    return KEY_PATTERN.sub(lambda m: f"hs_{m.group(1)}_{REDACTED}", text) if "hs_" in text else text


def redact_query(query: str) -> str:
    """Rules 1 and 2 over a raw query string (``a=1&api_key=...``), keeping its order and encoding."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and _SECRET_NAME.match(unquote_plus(name).strip()):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return redact("&".join(parts))


def redact_target(target: str) -> str:
    """A request target ``/path?query`` (uvicorn's access-log field)."""
    path, q, query = target.partition("?")
    return redact(path) + (q + redact_query(query) if q else "")


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Apply the rule to a log record. uvicorn's access records keep their 5-tuple args (its access formatter
    unpacks them); any other record whose text holds a secret is rendered, redacted and stored as plain text."""
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        record.args = (args[0], args[1], redact_target(str(args[2])), args[3], args[4])
        return record
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler's own error reporting
        return record
    clean = redact_target(message) if "?" in message else redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and "hs_" in str(exc):
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))  # type: ignore[arg-type]
        record.exc_info = None
    return record


def install_log_redaction() -> None:
    """Redact every log record of the process when it is made (a LogRecord factory wrapping the current one), so
    no logger, handler or formatter - uvicorn's access and error logs included, whatever uvicorn's dictConfig
    installs later - ever sees a secret. Idempotent."""
    current = logging.getLogRecordFactory()
    if getattr(current, "harmspot_redacts", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        return redact_record(current(*args, **kwargs))

    factory.harmspot_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)

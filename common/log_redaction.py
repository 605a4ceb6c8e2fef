"""Customer PII out of the logs: every log record is redacted as it is made, whichever logger or handler
(the kit's, uvicorn's access log, a library's) later writes it.

A record factory rather than a handler filter, because uvicorn installs its own handlers after start-up and a
filter on today's handlers would miss them. The message (URL-decoded too, for request lines) and any traceback
text go through `common.redact`, the same code that cleans the demo's stored feedback.
"""

from __future__ import annotations

import logging
import traceback
from urllib.parse import unquote_plus

from common.redact import Redactor


def _clean(redactor: Redactor, text: str) -> str:
    redacted = redactor.redact(text)
    if "%" in redacted or "?" in redacted:  # URLs in access logs: jane%40example.com, ?phone=%2B33+6+12...
        decoded = unquote_plus(redacted)
        if (cleaned := redactor.redact(decoded)) != decoded:
            return cleaned
    return redacted


def _clean_arg(redactor: Redactor, value):
    if isinstance(value, str):
        return _clean(redactor, value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value  # numbers stay numbers: `%d` must still format them
    text = str(value)
    cleaned = _clean(redactor, text)
    return value if cleaned == text else cleaned


def install_log_redaction(redactor: Redactor | None = None) -> None:
    """Redact every log record created from now on in this process (idempotent).

    The message template and each argument are redacted separately, so that formatters that read
    `record.args` themselves (uvicorn's access log unpacks them) still find them in place."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redactor", None) is not None:
        previous.redactor = redactor or previous.redactor
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        r = factory.redactor
        if isinstance(record.msg, str):
            record.msg = _clean(r, record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean_arg(r, a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean_arg(r, v) for k, v in record.args.items()}
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            # Formatters use exc_text when set: exception messages can quote customer input.
            record.exc_text = r.redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    factory.redactor = redactor or Redactor()
    logging.setLogRecordFactory(factory)

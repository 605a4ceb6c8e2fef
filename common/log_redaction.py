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


def install_log_redaction(redactor: Redactor | None = None) -> None:
    """Redact every log record created from now on in this process (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redactor", None) is not None:
        previous.redactor = redactor or previous.redactor
        return
    chosen = redactor or Redactor()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        r = factory.redactor
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string: leave it to logging's own error report
            return record
        redacted = r.redact(message)
        if "%" in redacted or "?" in redacted:  # URLs in access logs: jane%40example.com, ?phone=%2B33+6+12...
            decoded = unquote_plus(redacted)
            if (cleaned := r.redact(decoded)) != decoded:
                redacted = cleaned
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            # Formatters use exc_text when set: exception messages can quote customer input.
            record.exc_text = r.redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    factory.redactor = chosen
    logging.setLogRecordFactory(factory)

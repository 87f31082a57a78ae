"""Logging for the service: a rotated file for the sysadmin, stderr for Apache/gunicorn.

Only the application configures handlers; library modules just use ``logging.getLogger``.
Passwords never reach the log: a filter masks anything that looks like one as a last guard.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
from typing import TextIO

from flask import Flask

from .files import create_private_file, make_private_dirs

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
_SECRET = re.compile(r"(?i)(password|пароль|passwd|authorization)(['\"]?\s*[:=]\s*['\"]?)([^\s'\",;}]+)")


class MaskSecrets(logging.Filter):
    """Replace values that follow password-like words with ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The formatted text replaces msg/args even when nothing was masked: the formatter would
        # otherwise format the same message a second time.
        record.msg, record.args = _SECRET.sub(r"\1\2***", record.getMessage()), None
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The log names buyers' contacts: the file, and each one after a rotation, is created 0640."""

    def _open(self) -> TextIO:
        create_private_file(self.baseFilename)
        return super()._open()


def configure_logging(app: Flask) -> None:
    """Attach a rotating file handler (LOG_FILE) to the package logger, once per process."""
    level = getattr(logging, str(app.config.get("LOG_LEVEL", "INFO")).upper(), logging.INFO)
    pkg = logging.getLogger("kktapp")
    pkg.setLevel(level)
    path = app.config.get("LOG_FILE")
    if not path:
        return
    for h in pkg.handlers:
        if isinstance(h, logging.handlers.RotatingFileHandler) and h.baseFilename == path:
            return
    make_private_dirs(os.path.dirname(os.path.abspath(path)))
    handler = PrivateRotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=10, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(MaskSecrets())
    pkg.addHandler(handler)

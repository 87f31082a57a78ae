"""Logging for the service: a rotated file for the sysadmin, stderr for Apache/gunicorn.

Only the application configures handlers; library modules just use ``logging.getLogger``.
Passwords never reach the log: a filter masks anything that looks like one as a last guard.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import stat
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
    """The log names buyers' contacts: the file, and each one after a rotation, is created 0640.

    Several processes (gunicorn workers, mod_wsgi daemons) append to one file. The size that
    decides a rotation is the file's own (fstat after the flush of each record), so every
    process sees what the others wrote; a process whose file another one has already rotated
    reopens the new file instead of rotating a second time (which would push a nearly empty
    file into the backups). Each record is formatted once (the stock handler formats it twice:
    once to measure it, once to write it).
    """

    def _open(self) -> TextIO:
        create_private_file(self.baseFilename)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            if self.maxBytes > 0 and self._full(len(text)):
                self._rotate()
            self.stream.write(text)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must never break the caller (stdlib's rule)
            self.handleError(record)

    def _full(self, adding: int) -> bool:
        st = os.fstat(self.stream.fileno())
        # Only a regular file rotates (LOG_FILE may be /dev/stderr or a pipe).
        return stat.S_ISREG(st.st_mode) and st.st_size > 0 and st.st_size + adding >= self.maxBytes

    def _rotate(self) -> None:
        try:
            current = os.stat(self.baseFilename)
        except FileNotFoundError:
            current = None
        if current is not None and not os.path.samestat(current, os.fstat(self.stream.fileno())):
            # Another process has rotated: write to the file now under the name.
            self.stream.close()
            self.stream = self._open()
            if not self._full(0):
                return
        self.doRollover()


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

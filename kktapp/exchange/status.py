"""What the exchange tells the operator: one line per store and register, kept for every process.

Stored in the exchange's SQLite file because the process that loads and writes files (the one
holding the exchange lock) is not always the one that renders the status page.
"""

from __future__ import annotations

import errno
import logging
import time

from .db import ExchangeDb

log = logging.getLogger(__name__)

OK, ERROR = "ok", "error"

#: OS error numbers of a file or folder → what the operator reads (the system's own words, in
#: English, follow in brackets for the sysadmin). EACCES and EPERM depend on the action.
_OS_ERRORS = {
    errno.ENOENT: "нет такого файла или папки",
    errno.ENOTDIR: "часть пути — не папка",
    errno.EISDIR: "по этому пути папка, а не файл",
    errno.ENOSPC: "нет места на диске",
    errno.EDQUOT: "превышена дисковая квота",
    errno.EROFS: "диск или общая папка открыты только для чтения",
    errno.EIO: "ошибка ввода-вывода (диск или сетевая папка)",
    errno.ESTALE: "сетевая папка отключилась",
    errno.ETIMEDOUT: "сетевая папка не отвечает",
    errno.EHOSTDOWN: "сервер с общей папкой недоступен",
    errno.EHOSTUNREACH: "сервер с общей папкой недоступен",
    errno.EBUSY: "файл занят другой программой",
    errno.ETXTBSY: "файл занят другой программой",
    errno.ENAMETOOLONG: "слишком длинное имя файла",
    errno.EMFILE: "у сервиса слишком много открытых файлов",
}


def os_error_text(exc: OSError, *, writing: bool = False) -> str:
    """A file error for the operator: Russian first, the system's words and the path kept."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        text = "нет прав на запись" if writing else "нет прав на чтение"
    else:
        text = _OS_ERRORS.get(exc.errno or 0, "")
    if not exc.strerror:
        return text or str(exc)
    out = f"{text} ({exc.strerror})" if text else exc.strerror
    return f"{out}: {exc.filename}" if exc.filename else out


class StatusBoard:
    """Status lines by key (``goods:<store>``, ``report:<register>``)."""

    def __init__(self, db: ExchangeDb) -> None:
        self.db = db
        #: The problem last logged per key in this process: a lasting one is logged once.
        self._logged: dict[str, str] = {}

    def ok(self, key: str, message: str) -> None:
        """A step went well (the problem before it, if any, is over)."""
        self._logged.pop(key, None)
        self._set(key, OK, message)

    def problem(self, key: str, message: str) -> None:
        """An error for the status page, and for the log once while it lasts, not every poll."""
        if self._logged.get(key) != message:
            self._logged[key] = message
            log.error("обмен с 1С: %s", message)
        self._set(key, ERROR, message)

    def _set(self, key: str, level: str, message: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO status (key, level, message, updated_at) VALUES (?, ?, ?, ?)"
                         " ON CONFLICT(key) DO UPDATE SET level=excluded.level, message=excluded.message,"
                         " updated_at=excluded.updated_at", (key, level, message, time.time()))

    def get(self, key: str) -> dict | None:
        """``{"level", "message"}`` of a key, or None when nothing happened yet."""
        row = self.db.conn().execute("SELECT level, message FROM status WHERE key=?", (key,)).fetchone()
        return {"level": row["level"], "message": row["message"]} if row else None

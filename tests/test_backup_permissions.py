"""Files with buyers' contacts and the cashier's INN are not world-readable: created 0640 / 0750.

The journal (and its -wal/-shm), the log (and each rotated one), backups, and the directories the
service creates for them; an administrator's own modes on existing files are left alone.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest

from kktapp import create_app
from kktapp.journal import Journal
from kktapp.logsetup import PrivateRotatingFileHandler

FORM = "application/x-www-form-urlencoded;charset=utf-8"
RECEIPT = (
    '{"DocNumber": "ТР00-perm", "DocDate": "06.10.2017", "DocSumm": 1950, "CustomerContact": "+79990000000",'
    ' "Goods": {"Position_1": {"Name": "Товар", "Price": 325.12, "Quantity": 6, "Tax": 22, "PositionSumm": 1950}}}'
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """Debian's default umask 022, which alone would leave the files world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_service_creates_journal_and_log_private(app_config, emulator, tmp_path, usual_umask):
    data, logs = tmp_path / "lib" / "kkt", tmp_path / "log" / "kkt"
    app_config.update(JOURNAL_PATH=str(data / "journal.sqlite3"), LOG_FILE=str(logs / "kkt.log"))
    app = create_app(app_config)
    try:
        answer = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"}).post(
            "/kkt", RECEIPT.encode("utf-8"), content_type=FORM
        ).json
        assert answer["result_code"] == 0
        # SQLite gives -wal and -shm the journal's mode; they go away when the last connection closes.
        for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
            assert mode(data / name) == 0o640, name
        handler = next(h for h in logging.getLogger("kktapp").handlers if isinstance(h, PrivateRotatingFileHandler)
                       and h.baseFilename == str(logs / "kkt.log"))
        handler.doRollover()
        logging.getLogger("kktapp").info("after rotation")
    finally:
        app.extensions["kkt"].stop()
        app.extensions["kkt"].journal.close()
        pkg = logging.getLogger("kktapp")
        for h in list(pkg.handlers):
            if getattr(h, "baseFilename", None) == str(logs / "kkt.log"):
                pkg.removeHandler(h)
                h.close()

    assert mode(data) == 0o750 and mode(data.parent) == 0o750
    assert mode(logs) == 0o750
    assert mode(data / "journal.sqlite3") == 0o640
    assert mode(logs / "kkt.log") == 0o640
    assert mode(logs / "kkt.log.1") == 0o640
    assert "ТР00-perm" in (logs / "kkt.log.1").read_text(encoding="utf-8")


def test_existing_modes_are_the_administrators(tmp_path, usual_umask):
    """A sysadmin who made the journal 0660 for a backup group keeps that."""
    data = tmp_path / "data"
    data.mkdir(mode=0o770)
    os.chmod(data, 0o770)
    path = data / "journal.sqlite3"
    path.touch()
    os.chmod(path, 0o660)
    Journal(str(path)).close()
    assert (mode(data), mode(path)) == (0o770, 0o660)


def test_the_service_other_sqlite_files_are_created_private(tmp_path, usual_umask):
    """Beside the journal: the compat segments (INCOME parts with the buyer's contact), the KKM
    Server registry (each command's body), the 1C exchange and the login throttle (logins and
    addresses). Each is opened the one way (sqlitefiles.connect_wal), which creates it 0640."""
    from kktapp.exchange.db import ExchangeDb, exchange_path
    from kktapp.web.auth import SharedThrottle, throttle_path
    from kktapp.web.compat import SegmentStore, segments_path
    from kktapp.web.kkmserver_store import CommandStore, store_path

    journal = str(tmp_path / "journal.sqlite3")
    opened = [SegmentStore(segments_path(journal)), CommandStore(store_path(journal)),
              ExchangeDb(exchange_path(journal)), SharedThrottle(throttle_path(journal), "login", 5)]
    opened[0].add("g", 1, 2, "eyJh", ttl=600)  # a write: the -wal and -shm files exist now
    paths = [segments_path(journal), store_path(journal), exchange_path(journal), throttle_path(journal)]
    for path in paths:
        for name in (path, f"{path}-wal", f"{path}-shm"):
            if os.path.exists(name):
                assert mode(Path(name)) == 0o640, name
    for store in opened:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    for path in paths:
        assert mode(Path(path)) == 0o640, path

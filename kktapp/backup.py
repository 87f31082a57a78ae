"""Online backup and restore of the receipt journal: ``python -m kktapp.backup DEST``.

The journal is SQLite in WAL mode: committed receipts may still sit in ``journal.sqlite3-wal``,
so ``cp journal.sqlite3`` can copy a torn or stale database. The backup here uses SQLite's
backup API from one read transaction: a consistent snapshot, taken while the service keeps
writing (WAL readers never block the writer). The copy is a single self-contained file
(rollback-journal mode, no -wal), checked with ``PRAGMA integrity_check`` before it gets its
final name, and created 0640 like the journal (buyers' contacts are in it).

``--restore BACKUP`` puts a copy back: only with the service stopped (no process holds a device
lock file), after checking the copy, keeping the current journal as
``<journal>.before-restore-<time>.bak``, and removing the old -wal/-shm, which SQLite would
otherwise replay onto the restored file. A copy from an older release is upgraded by the
service when it starts (kktapp.journal, "Schema version and upgrades").

The journal's path comes from ``--journal`` or from the settings, as the service reads them:
conf.py, then the file named by KKT_SETTINGS (default /etc/kkt/site.py, as kkt.wsgi does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import glob
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TextIO

from .files import create_private_file, make_private_dirs
from .journal import SCHEMA_VERSION, schema_version
from .sqlitefiles import BUSY_TIMEOUT

#: What kkt.wsgi reads when KKT_SETTINGS is not set.
DEFAULT_SETTINGS = "/etc/kkt/site.py"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message is for the administrator (Russian)."""


@dataclass(frozen=True)
class CopyInfo:
    """What a finished backup or restore reports."""

    path: str
    schema: int
    jobs: int
    size: int


def journal_path_from_settings() -> str:
    """JOURNAL_PATH as the service resolves it (conf.py, KKT_SETTINGS, instance/ default)."""
    from flask import Flask

    from . import ROOT, load_config

    settings = os.path.abspath(os.environ.get("KKT_SETTINGS") or DEFAULT_SETTINGS)
    if os.path.exists(settings):
        # Absolute: Flask would look for a relative name next to the package, not here.
        os.environ["KKT_SETTINGS"] = settings
    else:
        os.environ.pop("KKT_SETTINGS", None)  # as kkt.wsgi: no site file, conf.py alone
    app = Flask("kktapp", instance_path=os.path.join(ROOT, "instance"))
    load_config(app, None)
    return str(app.config["JOURNAL_PATH"])


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    return conn


def _check(conn: sqlite3.Connection, what: str) -> CopyInfo:
    """Integrity, a jobs table and a schema this code can read; raises BackupError."""
    result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{what}: база повреждена (integrity_check: {result})")
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone():
        raise BackupError(f"{what}: это не журнал чеков kkt (нет таблицы jobs)")
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise BackupError(
            f"{what}: журнал более новой версии сервиса (схема {version}, эта версия знает до {SCHEMA_VERSION})"
        )
    jobs = int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    return CopyInfo(path="", schema=version, jobs=jobs, size=0)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: sqlite3.Connection, target: str, what: str) -> CopyInfo:
    """SQLite backup of ``source`` into a new file ``target`` (0640), checked and synced."""
    create_private_file(target)
    dest = _connect(target)
    try:
        # pages=-1: the whole database in one step, i.e. from one read snapshot of the source.
        source.backup(dest, pages=-1)
        # One self-contained file: the copy must not depend on a -wal next to it.
        dest.execute("PRAGMA journal_mode=DELETE")
        info = _check(dest, what)
    finally:
        dest.close()
    _fsync(target)
    return CopyInfo(path=target, schema=info.schema, jobs=info.jobs, size=os.path.getsize(target))


def backup(journal: str, dest: str) -> CopyInfo:
    """Copy the journal to ``dest`` (a new file, or a directory for a dated name) while the service runs."""
    if not os.path.isfile(journal):
        raise BackupError(f"журнал {journal} не найден (JOURNAL_PATH в настройках или --journal)")
    if os.path.isdir(dest) or dest.endswith(os.sep):
        make_private_dirs(dest)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        dest = os.path.join(dest, f"journal-{stamp}.sqlite3")
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise BackupError(f"{dest} уже существует: укажите другое имя или каталог")
    make_private_dirs(os.path.dirname(dest))
    partial = f"{dest}.partial"
    with suppress(FileNotFoundError):
        os.unlink(partial)
    source = _connect(journal)
    try:
        info = _copy(source, partial, f"копия {dest}")
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    finally:
        source.close()
    os.replace(partial, dest)
    return CopyInfo(path=dest, schema=info.schema, jobs=info.jobs, size=info.size)


@contextmanager
def _service_stopped(journal: str) -> Iterator[None]:
    """Hold every device lock of this journal: proof that no service process owns a device."""
    fds = []
    try:
        for lock_path in sorted(glob.glob(glob.escape(journal) + ".device-*.lock")):
            fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupError(
                    f"сервис работает (кассой владеет процесс, блокировка {lock_path}): остановите его"
                    " (systemctl stop kkt, или для Apache — systemctl stop apache2) и повторите"
                ) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)


def restore(backup_path: str, journal: str) -> CopyInfo:
    """Replace the journal with a backup; the service must be stopped."""
    if not os.path.isfile(backup_path):
        raise BackupError(f"резервная копия {backup_path} не найдена")
    source = sqlite3.connect(f"file:{os.path.abspath(backup_path)}?mode=ro", uri=True, isolation_level=None)
    try:
        _check(source, f"резервная копия {backup_path}")
        make_private_dirs(os.path.dirname(journal))
        with _service_stopped(journal):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            if os.path.exists(journal):
                current = _connect(journal)
                try:
                    _copy(current, f"{journal}.before-restore-{stamp}.bak", "текущий журнал")
                finally:
                    current.close()
            partial = f"{journal}.restore-{stamp}.partial"
            info = _copy(source, partial, f"копия {partial}")
            if os.path.exists(journal):
                st = os.stat(journal)
                with suppress(PermissionError):  # not root: the file is already ours
                    os.chown(partial, st.st_uid, st.st_gid)
            # A -wal left from the old journal would be replayed onto the restored one.
            for suffix in ("-wal", "-shm"):
                with suppress(FileNotFoundError):
                    os.unlink(journal + suffix)
            os.replace(partial, journal)
    finally:
        source.close()
    return CopyInfo(path=journal, schema=info.schema, jobs=info.jobs, size=info.size)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``python -m kktapp.backup``; the report goes to ``out`` (stdout)."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m kktapp.backup",
        description="Резервная копия журнала чеков на ходу (сервис можно не останавливать) и восстановление.",
        epilog="Пример: python -m kktapp.backup /var/backups/kkt/ — копия с датой в имени в этом каталоге.",
    )
    parser.add_argument("dest", nargs="?", help="куда: новый файл или каталог (с / на конце или уже"
                        " существующий) — тогда копия journal-ДАТА-ВРЕМЯ.sqlite3 в нём")
    parser.add_argument("--restore", metavar="КОПИЯ", help="восстановить журнал из копии (сервис остановлен)")
    parser.add_argument("--journal", help="файл журнала; по умолчанию JOURNAL_PATH из настроек (KKT_SETTINGS)")
    args = parser.parse_args(argv)
    if bool(args.dest) == bool(args.restore):
        parser.error("укажите либо DEST (сделать копию), либо --restore КОПИЯ")
    journal = os.path.abspath(args.journal or journal_path_from_settings())
    try:
        if args.restore:
            info = restore(args.restore, journal)
            out.write(
                f"Журнал {info.path} восстановлен из {args.restore}: записей {info.jobs}, схема {info.schema}."
                f" Прежний журнал сохранён рядом (*.before-restore-*.bak). Запустите сервис.\n"
            )
        else:
            info = backup(journal, args.dest)
            out.write(
                f"Резервная копия журнала {journal}: {info.path} ({info.size} байт, записей {info.jobs},"
                f" схема {info.schema}, проверка целостности: ok)\n"
            )
    except (BackupError, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"Ошибка: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

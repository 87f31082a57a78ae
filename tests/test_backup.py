"""``python -m kktapp.backup``: a consistent copy while receipts are being fiscalised, and a restore.

The round trip is the administrator's: back up the running service's journal from another
process, stop the service, restore, start it again — every DocNumber in the copy then gets its
stored answer and nothing is printed twice.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import webtest

from kktapp import create_app, journal

REPO = Path(__file__).resolve().parent.parent
FORM = "application/x-www-form-urlencoded;charset=utf-8"


def body(doc_number: str) -> bytes:
    goods = '{"Position_1": {"Name": "Товар", "Price": 325.12, "Quantity": 6, "Tax": 22, "PositionSumm": 1950}}'
    return f'{{"DocNumber": "{doc_number}", "DocDate": "06.10.2017", "DocSumm": 1950, "Goods": {goods}}}'.encode()


def run_backup(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KKT_SETTINGS", None)
    return subprocess.run(
        [sys.executable, "-m", "kktapp.backup", *args], capture_output=True, text=True, env=env, timeout=120
    )


def stop(app) -> None:
    app.extensions["kkt"].stop()
    app.extensions["kkt"].journal.close()


def jobs_in(path: Path) -> dict[str, tuple[str, str | None]]:
    """DocNumber → (state, result) of every job (the journal keys 1C documents as "N от date")."""
    conn = sqlite3.connect(path)
    try:
        return {key.split(" от ")[0]: (state, result)
                for key, state, result in conn.execute("SELECT key, state, result FROM jobs")}
    finally:
        conn.close()


def test_backup_while_fiscalising_then_restore(app_config, emulator, tmp_path):
    journal_path = Path(app_config["JOURNAL_PATH"])
    app = create_app(app_config)
    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    answers: dict[str, dict] = {}
    stop_posting = threading.Event()

    def cashier() -> None:
        # Receipts keep coming while the backup runs: the copy must be a consistent snapshot.
        n = 0
        while not stop_posting.is_set() and n < 200:
            n += 1
            doc = f"ТР00-{n:06d}"
            answers[doc] = client.post("/kkt", body(doc), content_type=FORM).json

    poster = threading.Thread(target=cashier)
    try:
        answers["ТР00-first"] = client.post("/kkt", body("ТР00-first"), content_type=FORM).json
        poster.start()
        while len(answers) < 5:
            threading.Event().wait(0.05)
        done = run_backup("--journal", str(journal_path), str(tmp_path / "backups") + "/")
        stop_posting.set()
        poster.join(60)
        # The copy to restore is taken with the service idle but running: every row settled, so
        # the restore below brings back exactly what was fiscalised.
        more = run_backup("--journal", str(journal_path), str(tmp_path / "copy.sqlite3"))

        # While the service runs, a restore is refused: it would pull the journal from under it.
        refused = run_backup("--journal", str(journal_path), "--restore", str(tmp_path / "copy.sqlite3"))
        assert refused.returncode == 1
        assert "сервис работает" in refused.stderr
    finally:
        stop_posting.set()
        poster.join(60) if poster.is_alive() else None
        stop(app)

    assert done.returncode == 0, done.stderr
    assert more.returncode == 0, more.stderr
    assert "проверка целостности: ok" in done.stdout
    (copy_path,) = (tmp_path / "backups").iterdir()
    assert copy_path.name.startswith("journal-") and copy_path.suffix == ".sqlite3"
    # A self-contained file: no -wal beside it, readable alone, the current schema.
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [copy_path.name]
    conn = sqlite3.connect(copy_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert journal.schema_version(conn) == journal.SCHEMA_VERSION
    conn.close()
    assert copy_path.stat().st_mode & 0o777 == 0o640

    # Every row in the copy is a row of the live journal as it was at one moment: settled rows
    # are identical, and the copy holds a prefix of the receipts posted one after another.
    during, live = jobs_in(copy_path), jobs_in(journal_path)
    assert "ТР00-first" in during and 5 <= len(during) <= len(live)
    for key, (state, result) in during.items():
        if state in ("done", "failed"):
            assert live[key] == (state, result), key
    numbers = sorted(k for k in during if k != "ТР00-first")
    assert numbers == [f"ТР00-{n:06d}" for n in range(1, len(numbers) + 1)]
    copied = jobs_in(tmp_path / "copy.sqlite3")
    assert copied == live and {state for state, _ in copied.values()} == {"done"}

    # The service is stopped: restore the second copy, start again.
    printed_before = len(emulator.documents())
    restored = run_backup("--journal", str(journal_path), "--restore", str(tmp_path / "copy.sqlite3"))
    assert restored.returncode == 0, restored.stderr
    assert "восстановлен" in restored.stdout
    assert journal_path.stat().st_mode & 0o777 == 0o640
    assert list(journal_path.parent.glob(journal_path.name + ".before-restore-*.bak"))
    assert jobs_in(journal_path) == copied

    app = create_app(app_config)
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        for doc in copied:
            again = client.post("/kkt", body(doc), content_type=FORM).json
            assert again["check_number"] == answers[doc]["check_number"], doc
            assert again["fiscal_document_number"] == answers[doc]["fiscal_document_number"], doc
    finally:
        stop(app)
    assert len(emulator.documents()) == printed_before


def test_backup_refuses_a_missing_journal_and_an_existing_target(tmp_path):
    missing = run_backup("--journal", str(tmp_path / "nothing.sqlite3"), str(tmp_path / "out.sqlite3"))
    assert missing.returncode == 1 and "не найден" in missing.stderr
    journal.Journal(str(tmp_path / "j.sqlite3")).close()
    (tmp_path / "taken.sqlite3").write_bytes(b"keep me")
    taken = run_backup("--journal", str(tmp_path / "j.sqlite3"), str(tmp_path / "taken.sqlite3"))
    assert taken.returncode == 1 and "уже существует" in taken.stderr
    assert (tmp_path / "taken.sqlite3").read_bytes() == b"keep me"


def test_restore_refuses_a_file_that_is_not_a_journal(tmp_path):
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database at all" * 100)
    journal.Journal(str(tmp_path / "j.sqlite3")).close()
    result = run_backup("--journal", str(tmp_path / "j.sqlite3"), "--restore", str(tmp_path / "junk.sqlite3"))
    assert result.returncode == 1 and "Ошибка" in result.stderr


def test_journal_path_comes_from_the_settings_file(tmp_path):
    """Without --journal: JOURNAL_PATH of KKT_SETTINGS (a relative name too, from the current directory)."""
    journal.Journal(str(tmp_path / "lib" / "journal.sqlite3")).close()
    (tmp_path / "site.py").write_text(f"JOURNAL_PATH = {str(tmp_path / 'lib' / 'journal.sqlite3')!r}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), KKT_SETTINGS="site.py")
    done = subprocess.run([sys.executable, "-m", "kktapp.backup", "copy.sqlite3"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "lib" / "journal.sqlite3") in done.stdout
    assert (tmp_path / "copy.sqlite3").exists()

"""A journal written by release 0.1.0, opened by today's code: it upgrades itself and keeps every job.

The fixture tests/data/journal-0.1.0.sql was written by 0.1.0's own journal module (see
tests/data/make_journal_0_1_0.py) and holds a job in every state: done, failed, done with its
paper copy owed, sending, unknown, queued, and an operation, plus a status snapshot.
"""

from __future__ import annotations

import json
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
import webtest

from kktapp import create_app, journal
from kktapp.journal import DONE, FAILED, QUEUED, RECEIPT, SENDING, UNKNOWN, Journal, SchemaError

FIXTURE = Path(__file__).parent / "data" / "journal-0.1.0.sql"
FORM = "application/x-www-form-urlencoded;charset=utf-8"

#: DocNumber → (device, state, reprint owed) as 0.1.0 left them.
EXPECTED = {
    "ТР00-000001": (1, DONE, False),
    "ТР00-000002": (1, FAILED, False),
    "ТР00-000003": (2, DONE, True),
    "ТР00-000004": (2, SENDING, False),
    "ТР00-000005": (2, UNKNOWN, False),
    "ТР00-000006": (1, QUEUED, False),
}


def journal_0_1_0(path: Path) -> Path:
    """A journal file exactly as a 0.1.0 server leaves it (WAL mode, user_version 2)."""
    conn = sqlite3.connect(path)
    conn.executescript(FIXTURE.read_text(encoding="utf-8"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return path


def rows(path: Path | str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
    finally:
        conn.close()


def version_of(path: Path | str) -> int:
    conn = sqlite3.connect(path)
    try:
        return journal.schema_version(conn)
    finally:
        conn.close()


def onec_body(doc_number: str) -> bytes:
    """The 1C document the fixture's receipts were accepted from (make_journal_0_1_0.onec_body)."""
    return json.dumps({
        "DocNumber": doc_number, "DocDate": "01.11.2026", "DocSumm": 1950,
        "Goods": {"Position_1": {"Name": "Наименование товара", "Price": 325, "Quantity": 6, "Tax": 22,
                                 "PositionSumm": 1950}},
    }, ensure_ascii=False, indent="\t").encode("utf-8")


def test_fixture_is_a_version_2_journal(tmp_path):
    path = journal_0_1_0(tmp_path / "journal.sqlite3")
    assert version_of(path) == journal.BASE_VERSION == 2
    assert len(rows(path)) == 7


def test_0_1_0_journal_upgrades_and_keeps_every_job(tmp_path):
    path = journal_0_1_0(tmp_path / "journal.sqlite3")
    before = rows(path)

    j = Journal(str(path), retention_days=100_000)
    try:
        assert version_of(path) == journal.SCHEMA_VERSION > journal.BASE_VERSION
        # The rows themselves are untouched by the upgrade; step 6 adds fn_check, 0 for all of them.
        after = rows(path)
        assert [row[:-1] for row in after] == before and {row[-1] for row in after} == {0}
        for doc_number, (device, state, owed) in EXPECTED.items():
            job = j.find_by_key(RECEIPT, doc_number)
            assert job is not None, doc_number
            assert (job.device, job.state, job.reprint) == (device, state, owed), doc_number
            assert job.payload["receipt"]["positions"][0]["price"] == 32500
        done = j.find_by_key(RECEIPT, "ТР00-000001")
        assert done.fiscal_result().fiscal_document_number == 41
        assert done.fd_before == 40
        assert j.find_by_key(RECEIPT, "ТР00-000002").error == {"code": 103, "message": "Нет бумаги"}
        assert "сервис проверит ККТ" in j.find_by_key(RECEIPT, "ТР00-000005").reason
        assert [job.key for job in j.queued(1)] == ["ТР00-000006"]
        assert [job.key for job in j.unsettled(2)] == ["ТР00-000003", "ТР00-000004", "ТР00-000005"]
        assert j.load_snapshot(1)[0]["shift"] == {"number": 5, "state": "open"}
        # The upgraded journal takes new work.
        job, created = j.accept(device=1, kind=RECEIPT, key="ТР00-000007", fingerprint="f", payload={"receipt": {}})
        assert created and job.state == QUEUED
    finally:
        j.close()

    # The file as it was is kept next to it, still version 2.
    saved = Path(f"{path}.schema-v2.bak")
    assert saved.exists()
    assert version_of(saved) == 2 and rows(saved) == before
    assert saved.stat().st_mode & 0o777 == 0o640
    conn = sqlite3.connect(path)
    history = conn.execute("SELECT version, from_version FROM schema_history").fetchall()
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='jobs'")}
    conn.close()
    assert history == [(journal.SCHEMA_VERSION, 2)]
    # Step 5: the index every state change rewrote only for the hourly prune is gone; the
    # queue, the live keys and the operator's list keep theirs.
    assert "jobs_updated" not in indexes
    assert {"jobs_live_key", "jobs_key", "jobs_queue", "jobs_unsettled", "jobs_owed", "jobs_kind_seq"} <= indexes
    # Step 6: receipts settled by hand whose document the owner has still to read from the FN.
    assert "jobs_fn_check" in indexes

    # Opening it again changes nothing: no second copy, no second history row.
    Journal(str(path)).close()
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == [saved.name]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM schema_history").fetchone()[0] == 1
    conn.close()


def test_service_runs_on_an_upgraded_0_1_0_journal(app_config, emulator, tmp_path):
    """Repeats of 0.1.0's DocNumbers get 0.1.0's answers; its queued receipt is fiscalised now."""
    path = journal_0_1_0(tmp_path / "old.sqlite3")
    app_config.update(JOURNAL_PATH=str(path), RESULT_RETENTION_DAYS=100_000)
    app = create_app(app_config)
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        # Done under 0.1.0: the stored answer, nothing printed.
        answer = client.post("/kkt", onec_body("ТР00-000001"), content_type=FORM).json
        assert (answer["result_code"], answer["check_number"], answer["fiscal_document_number"]) == (0, 12, 41)
        # Queued under 0.1.0: the device owner prints it after the upgrade.
        service = app.extensions["kkt"]
        deadline = time.monotonic() + 20
        # Until it has an outcome: it passes through "sending" on the way.
        while not service.journal.find_by_key(RECEIPT, "ТР00-000006").finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.journal.find_by_key(RECEIPT, "ТР00-000006").state == DONE
        # Failed under 0.1.0 (no paper): the same DocNumber may be sent again and is fiscalised.
        answer = client.post("/kkt", onec_body("ТР00-000002"), content_type=FORM).json
        assert answer["result_code"] == 0 and answer["check_number"] > 0
        totals = [d["total"] for d in emulator.documents() if d["type"] == "receipt"]
        assert totals == [195000, 195000]
    finally:
        app.extensions["kkt"].stop()
        app.extensions["kkt"].journal.close()


def test_new_journal_starts_at_the_current_version_without_a_copy(tmp_path):
    path = tmp_path / "new" / "journal.sqlite3"
    Journal(str(path)).close()
    assert version_of(path) == journal.SCHEMA_VERSION
    assert not any(".bak" in p.name for p in path.parent.iterdir())


def test_journal_of_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite3"
    Journal(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={journal.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="более новой версией"):
        Journal(str(path))


def test_a_later_step_is_one_function(tmp_path, monkeypatch):
    """Appending a step upgrades existing journals by one version, once, keeping the rows."""
    path = tmp_path / "journal.sqlite3"
    j = Journal(str(path))
    j.accept(device=1, kind=RECEIPT, key="k1", fingerprint="f", payload={"sum": Decimal(1).to_eng_string()})
    j.close()

    def step_note(conn: sqlite3.Connection) -> None:
        journal.add_column(conn, "jobs", "note TEXT NOT NULL DEFAULT ''")

    monkeypatch.setattr(journal, "_STEPS", (*journal._STEPS, step_note))
    monkeypatch.setattr(journal, "SCHEMA_VERSION", journal.SCHEMA_VERSION + 1)
    Journal(str(path)).close()
    conn = sqlite3.connect(path)
    assert journal.schema_version(conn) == journal.SCHEMA_VERSION
    assert conn.execute("SELECT key, note FROM jobs").fetchall() == [("k1", "")]
    conn.close()
    assert Path(f"{path}.schema-v{journal.SCHEMA_VERSION - 1}.bak").exists()


def test_a_failing_step_leaves_the_journal_as_it_was(tmp_path, monkeypatch):
    path = journal_0_1_0(tmp_path / "journal.sqlite3")
    before = rows(path)

    def step_broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal, "_STEPS", (*journal._STEPS, step_broken))
    monkeypatch.setattr(journal, "SCHEMA_VERSION", journal.SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError):
        Journal(str(path))
    assert version_of(path) == 2 and rows(path) == before
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "half_done" not in tables and "schema_history" not in tables

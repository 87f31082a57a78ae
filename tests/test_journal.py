"""Journal: durable jobs, idempotency keys, FIFO order, recovery states, retention, snapshots."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from decimal import Decimal

import pytest
from fakes import in_threads, make_receipt

from kktapp.domain import (
    Correction,
    Payment,
    PaymentMethod,
    PaymentType,
    Position,
    Receipt,
    SettlementType,
    TaxationSystem,
    TextLine,
    VatRate,
)
from kktapp.errors import Conflict
from kktapp.journal import DONE, FAILED, QUEUED, SENDING, UNKNOWN, Journal, receipt_from_json, receipt_to_json


@pytest.fixture
def journal(tmp_path):
    j = Journal(str(tmp_path / "journal.sqlite3"))
    yield j
    j.close()


def accept(journal: Journal, key: str | None = "K1", fp: str = "fp1", device: int = 1, kind: str = "receipt"):
    return journal.accept(device=device, kind=kind, key=key, fingerprint=fp, payload={"n": key})


def test_receipt_json_round_trip_is_exact():
    receipt = Receipt(
        type=SettlementType.SELL_CORRECTION,
        positions=(
            Position("Молоко 3,2%", 8999, Decimal("1.500"), 13499, VatRate.VAT10, PaymentMethod.ADVANCE, 4, 11, 2, 50),
            Position("Хлеб", 4500, Decimal("2"), 9000, VatRate.VAT22),
        ),
        payments=(Payment(PaymentType.CASH, 20000), Payment(PaymentType.ELECTRONIC, 2499)),
        taxation=TaxationSystem.USN_INCOME,
        customer_contact="+79991234567",
        electronic_only=True,
        cashier_name="Иванова",
        cashier_inn="500100732259",
        header=(TextLine("Магазин", bold=True, align="center"),),
        footer=(TextLine("Спасибо!", double_height=True),),
        correction=Correction(by_order=True, date=dt.date(2025, 12, 30), order_number="ФНС-1"),
        test_mode=True,
        settlement_place="https://shop.example.ru",
        internet=True,
    )
    again = receipt_from_json(receipt_to_json(receipt))
    assert again == receipt
    assert str(again.positions[0].quantity) == "1.500"
    assert receipt_from_json(receipt_to_json(make_receipt())) == make_receipt()


def test_accept_stores_a_queued_job(journal):
    job, created = accept(journal)
    assert created
    assert job.state == QUEUED and job.key == "K1" and job.payload == {"n": "K1"}
    assert journal.get(job.id) == job
    assert journal.get("no-such-id") is None


def test_same_key_same_fingerprint_returns_the_stored_job(journal):
    first, _ = accept(journal)
    again, created = accept(journal)
    assert not created and again.id == first.id


def test_same_key_other_payload_or_device_is_a_conflict(journal):
    accept(journal)
    with pytest.raises(Conflict):
        accept(journal, fp="other")
    with pytest.raises(Conflict):
        accept(journal, device=2)


def test_keys_are_per_kind_and_null_keys_never_collide(journal):
    accept(journal, key="K1", kind="receipt")
    _, created = accept(journal, key="K1", kind="cash_in", fp="x")
    assert created
    a, _ = accept(journal, key=None)
    b, _ = accept(journal, key=None)
    assert a.id != b.id


def test_a_failed_key_may_be_tried_again(journal):
    first, _ = accept(journal)
    journal.mark_sending(first.id, 10)
    journal.finish(first.id, FAILED, error={"code": 103, "message": "Нет бумаги"})
    assert journal.find_by_key("receipt", "K1").id == first.id
    # Certainly not fiscalised: the same key runs again, even with a corrected payload.
    second, created = accept(journal, fp="corrected")
    assert created and second.id != first.id
    assert journal.find_by_key("receipt", "K1").id == second.id
    with pytest.raises(Conflict):
        accept(journal, fp="third")


def test_the_journal_survives_a_new_instance(journal, tmp_path):
    job, _ = accept(journal)
    journal.finish(job.id, DONE, result={"fiscal_document_number": 7})
    other = Journal(str(tmp_path / "journal.sqlite3"))
    try:
        again, created = other.accept(device=1, kind="receipt", key="K1", fingerprint="fp1", payload={})
        assert not created and again.state == DONE and again.result == {"fiscal_document_number": 7}
    finally:
        other.close()


def test_next_queued_is_fifo_per_device(journal):
    ids = [accept(journal, key=f"K{i}", device=1 + i % 2)[0].id for i in range(6)]
    # Even i go to device 1, odd i to device 2.
    assert journal.next_queued(1).id == ids[0]
    assert journal.next_queued(2).id == ids[1]
    journal.mark_sending(ids[0], 1)
    journal.finish(ids[0], DONE, result={})
    assert journal.next_queued(1).id == ids[2]
    assert journal.next_queued(2).id == ids[1]
    assert journal.next_queued(3) is None


def test_recovery_states_and_unsettled(journal):
    job, _ = accept(journal)
    journal.mark_sending(job.id, 42)
    got = journal.get(job.id)
    assert got.state == SENDING and got.fd_before == 42 and got.attempts == 1
    assert [j.id for j in journal.unsettled(1)] == [job.id]
    journal.mark_unknown(job.id, "связь прервалась", {"code": 1002, "message": "нет связи с ККТ"})
    got = journal.get(job.id)
    assert got.state == UNKNOWN and got.reason == "связь прервалась" and got.error["code"] == 1002
    assert journal.queue_counts(1) == {"queued": 0, "sending": 0, "unknown": 1}
    journal.requeue(job.id)
    got = journal.get(job.id)
    assert got.state == QUEUED and got.fd_before is None and got.reason == "" and got.error is None
    assert journal.unsettled() == []
    journal.mark_sending(job.id, 42)
    journal.finish(job.id, DONE, result={"printed": False}, reprint=True, reason="копия не напечатана")
    assert [j.id for j in journal.unsettled(1)] == [job.id]
    assert journal.unsettled(2) == []
    journal.reprinted(job.id, {"printed": True})
    got = journal.get(job.id)
    assert not got.reprint and got.result == {"printed": True} and journal.unsettled() == []
    with pytest.raises(ValueError):
        journal.finish(job.id, UNKNOWN)


def test_concurrent_accepts_of_one_key_create_one_job(tmp_path):
    path = str(tmp_path / "journal.sqlite3")
    Journal(path).close()
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def worker() -> None:
        j = Journal(path)
        try:
            job, created = j.accept(device=1, kind="receipt", key="same", fingerprint="fp", payload={})
            with lock:
                results.append((job.id, created))
        finally:
            j.close()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 12
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1


class CountingLock:
    """A lock that counts its acquisitions and checks nobody holds it twice at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquired = 0
        self.holders = 0
        self.max_holders = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        self.acquired += 1
        self.holders += 1
        self.max_holders = max(self.max_holders, self.holders)

    def __exit__(self, *exc: object) -> None:
        self.holders -= 1
        self._lock.release()


def test_every_write_goes_through_the_process_write_lock(journal):
    lock = CountingLock()
    journal._write_lock = lock
    job, _ = accept(journal)
    journal.mark_sending(job.id, 10)
    journal.mark_unknown(job.id, "нет связи")
    journal.requeue(job.id)
    journal.set_reason(job.id, "ждём")
    journal.finish(job.id, DONE, result={"fiscal_document_number": 11})
    journal.save_snapshot(1, {"link": "ok"})
    journal.prune()
    assert lock.acquired == 8


def test_a_forked_child_writes_although_the_parent_held_the_write_lock_at_the_fork(journal):
    """A lock held by a parent's thread at fork stays held forever in the child: the child must
    take fresh ones before its first write (the write lock and the commit queue)."""
    job, _ = accept(journal)
    journal._write_lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                signal.alarm(10)  # a deadlock fails the test instead of hanging it
                journal.mark_sending(job, 5)
                accept(journal, key="K2")
                journal.finish(job, DONE, result={"n": 1})
                code = 0
            finally:
                os._exit(code)
    finally:
        journal._write_lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert journal.get(job.id).state == DONE and journal.find_by_key("receipt", "K2") is not None


def test_many_threads_write_one_journal_in_turn(journal):
    """Sixteen owners and their callers writing at once: every write lands, none starves."""
    lock = CountingLock()
    journal._write_lock = lock
    ids: list[str] = []

    def worker(n: int) -> None:
        for i in range(15):
            job, _ = accept(journal, key=f"W-{n}-{i}", device=n)
            journal.mark_sending(job.id, i)
            journal.finish(job.id, DONE, result={"n": i})
            journal.save_snapshot(n, {"i": i})
            ids.append(job.id)

    assert not in_threads(worker, 16) and len(ids) == 16 * 15
    assert all(journal.get(job_id).state == DONE for job_id in ids)
    assert lock.max_holders == 1 and lock.acquired == 16 * 15 * 4


def test_prune_removes_only_old_finished_jobs(tmp_path):
    now = [1_800_000_000.0]
    journal = Journal(str(tmp_path / "j.sqlite3"), retention_days=30, clock=lambda: now[0])
    try:
        old_done, _ = accept(journal, key="old-done")
        journal.finish(old_done.id, DONE, result={})
        old_failed, _ = accept(journal, key="old-failed")
        journal.finish(old_failed.id, FAILED, error={})
        old_unknown, _ = accept(journal, key="old-unknown")
        journal.mark_sending(old_unknown.id, 1)
        journal.mark_unknown(old_unknown.id, "?")
        old_owed, _ = accept(journal, key="old-owed")
        journal.finish(old_owed.id, DONE, result={}, reprint=True)
        old_queued, _ = accept(journal, key="old-queued")
        now[0] += 29 * 86400
        fresh, _ = accept(journal, key="fresh")
        journal.finish(fresh.id, DONE, result={})
        assert journal.prune() == 0
        now[0] += 2 * 86400
        assert journal.prune() == 2
        left = {k for k in ("old-done", "old-failed", "old-unknown", "old-owed", "old-queued", "fresh")
                if journal.find_by_key("receipt", k)}
        assert left == {"old-unknown", "old-owed", "old-queued", "fresh"}
    finally:
        journal.close()


def test_snapshots(journal):
    assert journal.load_snapshot(1) is None
    journal.save_snapshot(1, {"link": "ok", "shift": {"number": 3}})
    journal.save_snapshot(1, {"link": "down"})
    data, when = journal.load_snapshot(1)
    assert data == {"link": "down"}
    assert isinstance(when, dt.datetime) and when.tzinfo is not None
    assert journal.load_snapshot(2) is None


def test_wal_mode(journal):
    assert journal._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


@pytest.mark.parametrize("zone", [
    "Europe/Berlin",  # DST both ways
    "Europe/Moscow",  # 2011: summer time kept; 2014: back by an hour for good
    "Asia/Kathmandu",  # +05:45
    "AAA-1BBB,M3.5.0/2:07,M10.5.0/3:07",  # a POSIX rule switching off the quarter-hours
])
def test_timestamps_read_back_as_the_c_library_says(monkeypatch, zone):
    """Journal times are aware datetimes in the server's zone, exactly as ``astimezone()``
    gives them, across DST switches (the zone per quarter-hour is cached)."""
    import time

    from kktapp import journal as journal_module

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    journal_module._quarter_zone.cache_clear()
    try:
        switches = [dt.datetime(2011, 3, 27, 1, 0, tzinfo=dt.timezone.utc), dt.datetime(2014, 10, 25, 22, 0,
                    tzinfo=dt.timezone.utc), dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.timezone.utc),
                    dt.datetime(2026, 10, 25, 1, 0, tzinfo=dt.timezone.utc)]
        for switch in switches:
            base = switch.timestamp()
            for delta in range(-3600, 3600, 53):
                value = base + delta + 0.123456
                expected = dt.datetime.fromtimestamp(value).astimezone()
                got = journal_module._ts(value)
                assert (got, got.utcoffset(), got.isoformat()) == (expected, expected.utcoffset(), expected.isoformat())
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        journal_module._quarter_zone.cache_clear()


def test_accept_returns_the_row_it_stored_and_writes_mirror_it(journal):
    job, created = accept(journal, "M1")
    assert created
    stored = journal.get(job.id)
    assert stored is not None and job.to_dict() == stored.to_dict() and job.seq == stored.seq
    assert (job.payload, job.fingerprint, job.attempts, job.fd_before) == (stored.payload, "fp1", 0, None)
    # Every write given the Job (not its id) leaves the object equal to the row.
    steps = [
        lambda: journal.mark_sending(job, 41),
        lambda: journal.mark_unknown(job, "почему", {"code": 1, "message": "x"}),
        lambda: journal.set_reason(job, "другая причина"),
        lambda: journal.requeue(job),
        lambda: journal.mark_sending(job, 42),
        lambda: journal.finish(job, DONE, result={"fiscal_document_number": 43}, reprint=True, reason="копия"),
        lambda: journal.reprinted(job, {"fiscal_document_number": 43, "printed": True}),
    ]
    for step in steps:
        step()
        row = journal.get(job.id)
        assert row is not None
        assert (job.to_dict(), job.fd_before, job.attempts, job.reprint) == (
            row.to_dict(), row.fd_before, row.attempts, row.reprint)


def test_queue_limit_refuses_new_documents_but_answers_repeats(journal):
    from kktapp.journal import QueueLimit

    first, _ = journal.accept(device=1, kind="receipt", key="L1", fingerprint="f", payload={}, queue_limit=2)
    journal.accept(device=1, kind="receipt", key=None, fingerprint="f", payload={}, queue_limit=2)
    with pytest.raises(QueueLimit) as full:
        journal.accept(device=1, kind="receipt", key="L3", fingerprint="f", payload={}, queue_limit=2)
    assert full.value.waiting == 2 and journal.find_by_key("receipt", "L3") is None
    again, created = journal.accept(device=1, kind="receipt", key="L1", fingerprint="f", payload={}, queue_limit=2)
    assert not created and again.id == first.id
    # Another device's queue is its own; a failed key is a retry, not a new document.
    journal.accept(device=2, kind="receipt", key="L4", fingerprint="f", payload={}, queue_limit=2)
    journal.finish(first.id, FAILED, error={"code": 1, "message": "нет"})
    journal.accept(device=1, kind="receipt", key="L5", fingerprint="f", payload={}, queue_limit=2)
    retry, created = journal.accept(device=1, kind="receipt", key="L1", fingerprint="f", payload={}, queue_limit=2)
    assert created and retry.id != first.id


def test_state_of_and_link_down(journal):
    job, _ = accept(journal, "S1")
    assert journal.state_of(job.id) == QUEUED and journal.state_of("nope") is None
    assert not journal.link_down(1)
    journal.save_snapshot(1, {"link": "down", "link_error": "нет связи"})
    assert journal.link_down(1) and not journal.link_down(2)
    journal.save_snapshot(1, {"link": "ok"})
    assert not journal.link_down(1)

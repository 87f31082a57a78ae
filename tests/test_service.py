"""FiscalService with the in-memory FakeDevice: idempotency, FIFO, ownership, shift policy,
recovery of unknown outcomes, waiting, snapshots."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sqlite3
import threading
from contextlib import closing

import pytest
from fakes import (
    NO_PAPER,
    PAID_LESS,
    SHIFT_EXPIRED,
    FakeDevice,
    FakeDriver,
    eventually,
    make_receipt,
)

from kktapp.domain import Payment, PaymentType
from kktapp.errors import Conflict, DeviceError, Disabled, LinkError, NotFound, ResultCode, ValidationFailed
from kktapp.journal import DONE, FAILED, QUEUED, UNKNOWN, Journal, receipt_to_json
from kktapp.owner import Reasons
from kktapp.owner import policy as owner_mod
from kktapp.service import DeviceConfig, FiscalService, fingerprint


@pytest.fixture
def make_service(tmp_path):
    """Build services over fake devices; all are stopped after the test."""
    services: list[FiscalService] = []

    def build(devices: dict[int, FakeDevice] | FakeDevice | None = None, *, path: str | None = None,
              **options) -> FiscalService:
        if devices is None:
            devices = FakeDevice()
        if isinstance(devices, FakeDevice):
            devices = {1: devices}
        options.setdefault("status_refresh", 0.2)
        configs = [DeviceConfig(number=n, name=f"Касса {n}", url=f"fake://{n}") for n in devices]
        service = FiscalService(
            path or str(tmp_path / "journal.sqlite3"),
            configs,
            driver_factory=lambda cfg: FakeDriver(devices[cfg.number]),
            **options,
        )
        services.append(service)
        return service

    yield build
    for service in services:
        service.stop()
        service.journal.close()


def sell(service: FiscalService, key: str | None, receipt=None, *, device: int = 1, wait: float = 10.0):
    receipt = receipt or make_receipt(name=f"Товар {key}")
    return service.submit_receipt(
        receipt, device=device, key=key, fingerprint=fingerprint({"k": key, "r": receipt}), source="test", wait=wait
    )


def settled(service: FiscalService, job_id: str):
    return lambda: service.get_job(job_id).finished


# ------------------------------------------------------------------ basics


def test_receipt_is_fiscalised_and_the_answer_is_the_document(make_service):
    device = FakeDevice()
    service = make_service(device)
    job = sell(service, "A-1")
    assert job.state == DONE and job.finished and job.error is None
    doc = device.receipts()[0]
    assert job.fiscal_result() == doc["result"]
    assert job.result == doc["result"].to_dict()
    data = job.to_dict()
    assert data["state"] == "done" and data["key"] == "A-1" and data["kind"] == "receipt"
    assert "payload" not in data
    # The closed shift was opened first.
    assert [d["type"] for d in device.documents] == ["open_shift", "receipt"]


def test_unknown_device_and_invalid_input(make_service):
    service = make_service()
    with pytest.raises(NotFound, match="ККТ № 7 не настроена"):
        sell(service, "x", device=7)
    with pytest.raises(NotFound):
        service.snapshot(7)
    bad = dataclasses.replace(make_receipt(), payments=(Payment(PaymentType.ELECTRONIC, 1),))
    with pytest.raises(ValidationFailed):
        sell(service, "bad", bad)
    with pytest.raises(ValidationFailed):
        service.submit("launch_rocket")
    with pytest.raises(ValidationFailed):
        service.submit("cash_in", {"amount": 10.5})
    with pytest.raises(ValidationFailed):
        service.submit("cash_in", {"amount": True})
    with pytest.raises(Disabled):
        service.submit("tech_reset")
    assert service.journal.unsettled() == [] and service.journal.next_queued(1) is None


def test_from_config_reads_the_settings(tmp_path):
    config = {
        "DEVICE_URL": "socket://127.0.0.1:5555", "ACCESS_PASSWORD": "1234", "OPERATOR_PASSWORD": "1",
        "JOURNAL_PATH": str(tmp_path / "j.sqlite3"), "TEST_MODE": True, "AUTO_CLOSE_TIME": "23:55",
        "STATUS_REFRESH_SECONDS": 3, "RESULT_RETENTION_DAYS": 7, "CASHIER_NAME": "Петрова",
        "CASHIER_INN": "500100732259", "DEVICES": None,
    }
    service = FiscalService.from_config(config)
    try:
        assert service.devices == {1: DeviceConfig(1, "Касса 1", "socket://127.0.0.1:5555", "1234", "1", 115200)}
        assert service.test_mode and service.auto_close_time == (23, 55) and service.status_refresh == 3
        assert service.journal.retention_days == 7 and service.cashier_name == "Петрова"
        assert service._started_pid is None  # no threads from the factory
    finally:
        service.journal.close()
    config["DEVICES"] = [{"number": 1, "url": "socket://a:5555"}, {"number": 3, "name": "Зал", "url": "/dev/ttyACM0",
                                                                      "operator_password": "5"}]
    service = FiscalService.from_config(config)
    try:
        assert sorted(service.devices) == [1, 3]
        assert service.devices[3].name == "Зал" and service.devices[3].operator_password == "5"
        assert service.devices[3].access_password == "1234"
    finally:
        service.journal.close()
    with pytest.raises(ValueError):
        FiscalService.from_config({**config, "AUTO_CLOSE_TIME": "25:00"})


# ------------------------------------------------------------------ idempotency


def test_same_key_returns_the_stored_answer_without_the_device(make_service, tmp_path):
    device = FakeDevice()
    service = make_service(device)
    receipt = make_receipt(name="Кофе")
    first = sell(service, "DOC-1", receipt)
    sells = device.count("sell")
    again = sell(service, "DOC-1", receipt)
    assert again.id == first.id and again.result == first.result
    # (status refreshes may run meanwhile; the receipt is not sent again)
    assert device.count("sell") == sells == 1
    with pytest.raises(Conflict):
        sell(service, "DOC-1", make_receipt(name="Чай"))
    service.stop()
    # A new service (a restart) on the same journal file answers from disk.
    other_device = FakeDevice()
    restarted = make_service(other_device)
    again = sell(restarted, "DOC-1", receipt)
    assert again.id == first.id and again.state == DONE and again.result == first.result
    assert other_device.count("sell") == 0
    assert len(device.receipts()) == 1


def test_a_failed_receipt_may_be_sent_again_with_the_same_key(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm-up")
    device.paper = False
    failed = sell(service, "DOC-2")
    assert failed.state == FAILED and failed.error["code"] == NO_PAPER
    assert failed.fiscal_result() is None
    device.paper = True
    retried = sell(service, "DOC-2")
    assert retried.state == DONE and retried.id != failed.id
    assert [d["name"] for d in device.receipts()] == ["Товар warm-up", "Товар DOC-2"]


def test_device_error_fails_cleanly_and_the_queue_goes_on(make_service):
    device = FakeDevice()
    service = make_service(device)
    # The device opens the receipt, then refuses the payment step: the receipt stays open.
    device.inject("sell", "open", DeviceError(PAID_LESS, "Вносимая сумма меньше суммы чека", step="оплата"))
    job = sell(service, "E-1")
    assert job.state == FAILED
    assert job.error == {"code": PAID_LESS, "message": "Вносимая сумма меньше суммы чека (шаг: оплата)",
                         "step": "оплата"}
    assert device.count("cancel_receipt") == 1 and not device.receipt_open
    assert sell(service, "E-2").state == DONE
    assert len(device.receipts()) == 1


# ------------------------------------------------------------------ queues


def test_fifo_order_per_device(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "first")
    gate = device.gate("sell")
    jobs = [sell(service, f"F{i}", wait=0) for i in range(8)]
    assert device.entered["sell"].wait(10)
    gate.set()
    assert eventually(lambda: all(service.get_job(j.id).finished for j in jobs))
    assert [d["name"] for d in device.receipts()] == ["Товар first"] + [f"Товар F{i}" for i in range(8)]


def test_back_to_back_jobs_share_a_commit_and_no_result_waits_in_memory_for_the_device(make_service, tmp_path):
    # The owner writes a job's final row in the commit that marks the next one "sending" (one
    # FULL commit between documents instead of two). What must hold: whenever the device is
    # called, the rows on disk show every earlier job as it ended (at most the job in hand is
    # "sending"), and a caller is answered only once its row is on disk.
    device = FakeDevice()
    service = make_service(device)
    sell(service, "first")
    path = str(tmp_path / "journal.sqlite3")
    on_disk: list[tuple[str, list[str]]] = []
    call = device.call

    def watched(driver: FakeDriver, method: str, *args: object) -> object:
        with closing(sqlite3.connect(path)) as conn:  # another connection: committed rows only
            rows = conn.execute("SELECT key FROM jobs WHERE state='sending'").fetchall()
        on_disk.append((method, sorted(str(key) for (key,) in rows)))
        return call(driver, method, *args)

    device.call = watched  # type: ignore[method-assign]
    carried: list[bool] = []
    mark_sending = service.journal.mark_sending

    def marking(job, fd_before, **kw):
        carried.append(kw.get("finished") is not None)
        return mark_sending(job, fd_before, **kw)

    service.journal.mark_sending = marking  # type: ignore[method-assign]
    gate = device.gate("sell")
    jobs = [sell(service, f"R{i}", wait=0) for i in range(3)]
    assert device.entered["sell"].wait(10)
    # A device read between two receipts: the receipt before it must be on disk first.
    jobs.append(service.submit("x_report", key="X", wait=0))
    jobs += [sell(service, f"R{i}", wait=0) for i in range(3, 6)]
    gate.set()
    for job in jobs:
        answer = service.wait_for(job, 10)
        assert answer.finished
        assert Journal(path).get(job.id).state == answer.state == DONE  # answered from the disk's row
    assert [d["name"] for d in device.receipts()][1:] == [f"Товар R{i}" for i in range(6)]
    for method, sending in on_disk:
        # Reads before a job's own mark_sending see nothing in flight; its own commands, itself.
        assert len(sending) <= (0 if method in ("quick_status", "shift_status", "last_document") else 1), on_disk
    assert sum(carried) >= 4  # R1, R2, R4, R5 at least: each carried the row of the job before


def test_a_failed_commit_between_two_documents_leaves_each_fiscalised_once(make_service, monkeypatch):
    # The commit that carries the last job's row and marks the next one "sending" fails, and so
    # does the row's last write on the worker's way out: the first job stays "sending" on disk,
    # nothing of the second was sent. The owner gives the link up; recovery settles the first
    # job from the FN, the second is fiscalised once, every caller gets its own document.
    device = FakeDevice()
    service = make_service(device)
    sell(service, "first")
    mark_sending = service.journal.mark_sending
    failures: list[str] = []

    def failing(job, fd_before, **kw):
        if kw.get("finished") is not None and not failures:
            failures.append(job.key)
            raise sqlite3.OperationalError("disk I/O error")
        return mark_sending(job, fd_before, **kw)

    write_finish = service.journal.write_finish

    def failing_too(finished):
        if len(failures) == 1:  # the worker's last try on its way out: the journal still fails
            failures.append(finished.job.key)
            raise sqlite3.OperationalError("disk I/O error")
        return write_finish(finished)

    service.journal.mark_sending = failing  # type: ignore[method-assign]
    service.journal.write_finish = failing_too  # type: ignore[method-assign]
    monkeypatch.setattr(owner_mod, "ELECTION_INTERVAL", 0.05)
    gate = device.gate("sell")
    jobs = [sell(service, f"S{i}", wait=0) for i in range(3)]
    assert device.entered["sell"].wait(10)
    gate.set()
    answers = [service.wait_for(job, 20) for job in jobs]
    assert failures == ["S1", "S0"]
    assert [a.state for a in answers] == [DONE] * 3
    assert [d["name"] for d in device.receipts()] == ["Товар first"] + [f"Товар S{i}" for i in range(3)]
    numbers = [a.result["fiscal_document_number"] for a in answers]
    assert len(set(numbers)) == 3


def test_a_slow_device_does_not_block_another(make_service):
    slow, fast = FakeDevice("slow"), FakeDevice("fast")
    service = make_service({1: slow, 2: fast})
    gate = slow.gate("sell")
    held = sell(service, "S-1", device=1, wait=0)
    assert slow.entered["sell"].wait(10)
    quick = sell(service, "Q-1", device=2)
    assert quick.state == DONE
    assert not service.get_job(held.id).finished
    gate.set()
    assert eventually(settled(service, held.id))
    assert service.get_job(held.id).state == DONE


def test_one_owner_per_device_among_services(make_service, tmp_path):
    """Two services on one journal (as two processes would be): one link, every job done once."""
    device = FakeDevice()
    a = make_service(device)
    b = make_service(device)
    jobs = []
    for i in range(10):
        jobs.append(sell(a if i % 2 else b, f"O-{i}", wait=0))
    assert eventually(lambda: all(a.get_job(j.id).finished for j in jobs))
    assert device.max_active == 1 and device.busy_refusals == 0
    assert sorted(d["name"] for d in device.receipts()) == sorted(f"Товар O-{i}" for i in range(10))
    # Stopping the owner hands the device over.
    owner = a if a._owners[1].is_owner else b
    other = b if owner is a else a
    owner.stop()
    job = sell(other, "O-after")
    assert job.state == DONE


def test_concurrent_clients_same_key_one_document(make_service):
    device = FakeDevice()
    service = make_service(device)
    receipt = make_receipt(name="Один")
    answers = []

    def client() -> None:
        answers.append(sell(service, "SAME", receipt))

    threads = [threading.Thread(target=client) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 10 and len({a.id for a in answers}) == 1
    assert all(a.state == DONE for a in answers)
    assert len(device.receipts()) == 1


# ------------------------------------------------------------------ waiting


def test_wait_returns_the_job_in_its_current_state(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    gate = device.gate("sell")
    job = sell(service, "W-1", wait=0.05)
    assert job.state in (QUEUED, "sending") and not job.finished
    gate.set()
    assert eventually(settled(service, job.id))
    assert service.get_job(job.id).state == DONE
    assert service.get_job("nope") is None


def test_device_off_keeps_the_job_queued_with_a_reason(make_service):
    device = FakeDevice()
    device.online = False
    service = make_service(device)
    job = sell(service, "OFF-1", wait=0.3)
    assert job.state == QUEUED and job.reason == Reasons.LINK_DOWN
    snap = service.snapshot()
    assert snap["link"] == "down" and snap["link_error"] == LinkError.message
    assert snap["queue"]["queued"] == 1
    # A non-fiscal operation does not wait for the link: it fails at the next connect attempt.
    status = service.submit("status", wait=10)
    assert status.state == FAILED and status.error["code"] == LinkError.code
    device.online = True
    assert eventually(settled(service, job.id))
    assert service.get_job(job.id).state == DONE
    assert eventually(lambda: service.snapshot()["link"] == "ok")


# ------------------------------------------------------------------ shift policy


def test_expired_shift_gets_z_report_and_a_new_shift(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "day-1")
    device.advance_clock(25)
    job = sell(service, "day-2")
    assert job.state == DONE
    assert [d["type"] for d in device.documents] == ["open_shift", "receipt", "close_shift", "open_shift", "receipt"]
    assert job.fiscal_result().shift_number == device.shift_number


def test_device_refusing_with_shift_expired_gets_z_and_retry(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "day-1")
    device.fn_says_expired = True  # state says open, the FN disagrees
    job = sell(service, "day-2")
    assert job.state == DONE
    assert [d["type"] for d in device.documents][-3:] == ["close_shift", "open_shift", "receipt"]
    assert len(device.receipts()) == 2


def test_test_mode_fiscalises_nothing(make_service):
    device = FakeDevice()
    service = make_service(device, test_mode=True)
    # A closed shift stays closed: opening it would be a fiscal document.
    refused = sell(service, "T-0")
    assert refused.state == FAILED and refused.error["code"] == ResultCode.DISABLED
    assert device.documents == []
    device.shift_open, device.shift_opened_at = True, dt.datetime.now()
    job = sell(service, "T-1")
    assert job.state == DONE and job.fiscal_result().test_mode
    assert device.receipts() == []
    assert device.documents == []


class _Clock(dt.datetime):
    """datetime whose now() is a settable instant, so the auto-close window never depends on the host clock."""

    instant = dt.datetime(2026, 3, 2, 23, 55, 30)

    @classmethod
    def now(cls, tz=None):
        return cls.instant


def test_auto_close_time_once_a_day(make_service, monkeypatch, tmp_path):
    monkeypatch.setattr(owner_mod.dt, "datetime", _Clock)
    _Clock.instant = dt.datetime(2026, 3, 2, 23, 55, 30)
    device = FakeDevice()
    path = str(tmp_path / "auto.sqlite3")
    service = make_service(device, path=path, auto_close_time="23:55")
    sell(service, "before-close")
    assert eventually(lambda: not device.shift_open)
    assert [d["type"] for d in device.documents][-1] == "close_shift"
    service.stop()
    # A new owner of the same journal within the same window: the once-a-day guard must hold,
    # so the shift it opens for the next sale stays open.
    again = make_service(device, path=path, auto_close_time="23:55")
    _Clock.instant = dt.datetime(2026, 3, 2, 23, 57, 0)
    sell(again, "after-close")
    assert device.shift_open
    closes = [d for d in device.documents if d["type"] == "close_shift"]
    assert not eventually(lambda: len([d for d in device.documents if d["type"] == "close_shift"]) > 1,
                          timeout=2.5)
    assert len(closes) == 1 and device.shift_open
    # Outside the window nothing happens; the next day's window closes it again.
    _Clock.instant = dt.datetime(2026, 3, 3, 12, 0, 0)
    assert not eventually(lambda: not device.shift_open, timeout=1.5)
    _Clock.instant = dt.datetime(2026, 3, 3, 23, 56, 0)
    assert eventually(lambda: not device.shift_open)


# ------------------------------------------------------------------ recovery


@pytest.mark.parametrize("phase", ["before", "open", "after"])
def test_link_drop_during_the_receipt_gives_exactly_one_document(make_service, phase):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    device.inject("sell", phase, LinkError())
    job = sell(service, "L-1")
    assert job.state == DONE
    names = [d["name"] for d in device.receipts()]
    assert names == ["Товар warm", "Товар L-1"]
    assert job.fiscal_result() == device.receipts()[-1]["result"]
    assert not device.receipt_open and device.printed_copies == 0
    if phase == "open":
        assert device.count("cancel_receipt") == 1


def test_lost_answer_settled_from_a_document_number_without_data(make_service):
    # The FN says a new document exists but its data cannot be read back: the job is done with
    # what is certain (its number, the receipt's own total), never sent a second time.
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    device.last_document_without_data = True
    device.inject("sell", "after", LinkError())
    job = sell(service, "N-1")
    assert job.state == DONE
    assert [d["name"] for d in device.receipts()] == ["Товар warm", "Товар N-1"]
    result = job.fiscal_result()
    assert result.fiscal_document_number == device.fd and result.fiscal_sign == ""
    assert result.total == make_receipt().total and result.shift_number == device.shift_number


def test_unknown_outcome_holds_the_queue_until_settled(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    device.inject("sell", "after", LinkError(), offline=True)
    first = sell(service, "U-1", wait=0)
    assert eventually(lambda: service.get_job(first.id).state == UNKNOWN)
    unknown = service.get_job(first.id)
    assert unknown.reason == Reasons.INTERRUPTED
    second = sell(service, "U-2", wait=0.2)
    assert second.state == QUEUED and second.reason == Reasons.HELD
    snap = service.snapshot()
    assert [u["id"] for u in snap["unsettled"]] == [first.id]
    assert snap["unsettled"][0]["reason"] == Reasons.INTERRUPTED
    assert [j.id for j in service.unsettled()] == [first.id]
    device.online = True
    assert eventually(settled(service, second.id))
    assert service.get_job(first.id).state == DONE
    assert [d["name"] for d in device.receipts()] == ["Товар warm", "Товар U-1", "Товар U-2"]
    assert service.unsettled() == []


def test_paper_out_while_printing_owes_a_copy_and_holds_the_queue(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    device.paper_out_while_printing = True
    job = sell(service, "P-1")
    assert job.state == DONE and job.result["printed"] is False
    assert job.reason == Reasons.REPRINT
    assert [j.id for j in service.unsettled()] == [job.id]
    later = sell(service, "P-2", wait=0.2)
    assert later.state == QUEUED and later.reason == Reasons.HELD
    device.paper = True
    assert eventually(settled(service, later.id))
    assert device.printed_copies == 1
    assert service.get_job(job.id).result["printed"] is True
    assert [d["name"] for d in device.receipts()] == ["Товар warm", "Товар P-1", "Товар P-2"]


@pytest.mark.parametrize("fiscalised", [True, False])
def test_job_left_sending_by_a_dead_owner_is_settled(make_service, tmp_path, fiscalised):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    service.stop()
    # What a process killed in the middle leaves behind: the row in "sending" with fd_before.
    journal = Journal(str(tmp_path / "journal.sqlite3"))
    receipt = make_receipt(name="Товар K-1")
    from kktapp.journal import receipt_to_json

    job, _ = journal.accept(device=1, kind="receipt", key="K-1", fingerprint=fingerprint({"k": "K-1", "r": receipt}),
                            payload={"receipt": receipt_to_json(receipt)})
    journal.mark_sending(job.id, device.fd)
    if fiscalised:
        with device.lock:
            device._commit("receipt", receipt.total, name="Товар K-1", receipt=receipt)
    journal.close()
    restarted = make_service(device)
    answer = sell(restarted, "K-1", receipt)
    assert answer.id == job.id and answer.state == DONE
    assert [d["name"] for d in device.receipts()] == ["Товар warm", "Товар K-1"]
    assert answer.fiscal_result() == device.receipts()[-1]["result"]


def test_link_drop_in_cash_in_is_not_repeated(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    device.inject("cash_in", "after", LinkError())
    job = service.submit("cash_in", {"amount": 50000}, key="CI-1", wait=10)
    assert job.state == DONE and job.fiscal_result().total == 50000
    assert [d["type"] for d in device.documents].count("cash_in") == 1


# ------------------------------------------------------------------ operations and status


def test_operations(make_service):
    device = FakeDevice()
    service = make_service(device, allow_device_reset=True)
    opened = service.submit("open_shift")
    assert opened.state == DONE and opened.fiscal_result().fiscal_document_number == device.fd
    again = service.submit("open_shift")
    assert again.state == FAILED and again.error["code"] == 0x9C
    assert service.submit("cash_in", {"amount": 100000}).state == DONE
    assert service.submit("cash_out", {"amount": 30000}).state == DONE
    assert device.cash == 70000
    assert service.submit("x_report").result == {}
    assert service.submit("print_text", {"lines": [{"text": "Привет", "bold": True}]}).state == DONE
    assert service.submit("reprint_last").state == DONE
    assert service.submit("cancel_receipt").state == DONE
    assert service.submit("reset_summary").state == DONE and device.cash == 0
    status = service.submit("status")
    assert status.state == DONE
    assert set(status.result) == {"status", "info", "shift", "fn", "totals"}
    assert status.result["shift"]["state"] == "open" and status.result["shift"]["expires_at"]
    closed = service.submit("close_shift")
    assert closed.state == DONE and not device.shift_open


def test_snapshot_never_touches_the_device(make_service):
    device = FakeDevice()
    service = make_service(device)
    device.online = False
    snap = service.snapshot()
    assert snap["device"] == 1 and snap["name"] == "Касса 1"
    assert snap["link"] in ("unknown", "down") and snap["last_document"] is None
    assert snap["queue"] == {"queued": 0, "sending": 0, "unknown": 0} and snap["unsettled"] == []
    device.online = True
    job = sell(service, "S-1")
    assert eventually(lambda: service.snapshot()["link"] == "ok"
                      and service.snapshot()["last_document"]["fd_number"] == device.fd)
    snap = service.snapshot()
    assert snap["shift"]["state"] == "open" and snap["shift"]["receipts"] == 1
    assert snap["shift"]["expires_at"] and snap["info"]["serial"] == device.serial
    assert snap["last_document"]["result"] == job.result
    assert snap["fn"]["last_fd_number"] == device.fd and snap["updated_at"]


def test_stop_releases_the_device_and_a_new_service_takes_over(make_service):
    device = FakeDevice()
    first = make_service(device)
    sell(first, "one")
    first.stop()
    assert not device.active
    second = make_service(device)
    assert sell(second, "two").state == DONE
    assert device.max_active == 1


def test_owner_constants_are_sane():
    assert owner_mod.POLL_INTERVAL <= 0.05 and owner_mod.ELECTION_INTERVAL <= 1.0
    assert SHIFT_EXPIRED in owner_mod.SHIFT_EXPIRED_CODES and NO_PAPER in owner_mod.PRINTER_CODES


def test_a_removed_lock_file_makes_the_owner_give_the_device_up(make_service, monkeypatch):
    monkeypatch.setattr(owner_mod, "LOCK_CHECK_INTERVAL", 0.05)
    device = FakeDevice()
    service = make_service(device)
    sell(service, "before")
    owner = service._owners[1]
    os.unlink(owner.lock_path)
    # The owner notices, closes the link and competes again for a new lock file.
    assert eventually(lambda: device.connects == 2)
    assert sell(service, "after").state == DONE
    assert device.max_active == 1 and os.path.exists(owner.lock_path)


def test_a_stale_open_receipt_is_cancelled_before_sending(make_service):
    device = FakeDevice()
    service = make_service(device)
    sell(service, "warm")
    with device.lock:
        device.receipt_open = True  # left by another program
    assert sell(service, "next").state == DONE
    assert device.count("cancel_receipt") == 1 and len(device.receipts()) == 2


# ------------------------------------------------------------------ what the owner remembers


def quiet(service: FiscalService, device: FakeDevice) -> None:
    """Wait until the owner refreshed its status after the last job (it is idle, state read)."""
    assert eventually(lambda: (service.snapshot().get("last_document") or {}).get("fd_number") == device.fd
                      and service.snapshot()["link"] == "ok")


def test_back_to_back_receipts_use_the_remembered_fd_and_shift(make_service, monkeypatch):
    """While the owner holds the link it reads neither the FN number nor the shift per receipt."""
    monkeypatch.setattr(owner_mod, "AFTER_JOB_REFRESH", 3600)
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "warm")
    reads = device.count("last_document"), device.count("shift_status")
    gate = device.gate("sell")
    jobs = [sell(service, f"B-{i}", wait=0) for i in range(5)]
    assert device.entered["sell"].wait(10)
    # In flight: fd_before is on disk, taken from memory, before the document goes out.
    in_flight = service.journal.get(jobs[0].id)
    assert in_flight.state == "sending" and in_flight.fd_before == device.fd
    gate.set()
    assert eventually(lambda: all(service.get_job(j.id).finished for j in jobs))
    assert (device.count("last_document"), device.count("shift_status")) == reads
    for job in jobs:
        done = service.get_job(job.id)
        assert done.state == DONE
        assert done.fd_before == done.fiscal_result().fiscal_document_number - 1
    assert len(device.receipts()) == 6


def after_sell(device: FakeDevice, name: str, action) -> None:
    """Run ``action`` on the device right after it fiscalised the receipt called ``name``."""
    original = device._sell

    def sell_then(receipt, **kwargs):
        result = original(receipt, **kwargs)
        if receipt.positions[0].name == name:
            action()
        return result

    device._sell = sell_then  # type: ignore[method-assign]


def back_to_back(service: FiscalService, device: FakeDevice, first: str, second: str):
    """Sell two receipts so that the second is queued before the first is done (no idle between)."""
    gate = device.gate("sell")
    one = sell(service, first, wait=0)
    assert device.entered["sell"].wait(10)
    two = sell(service, second, wait=0)
    gate.set()
    assert eventually(lambda: service.get_job(one.id).finished and service.get_job(two.id).finished)
    return service.get_job(one.id), service.get_job(two.id)


def test_remembered_shift_and_device_clock_advanced_25_hours(make_service):
    """The device clock jumps ahead between back-to-back receipts: the owner's memory says the
    shift is open, the device refuses with 'over 24 h': Z, new shift, exactly one receipt."""
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "day-0")
    quiet(service, device)
    after_sell(device, "Товар day-1", lambda: device.advance_clock(25))
    one, two = back_to_back(service, device, "day-1", "day-2")
    assert one.state == DONE and two.state == DONE
    assert [d["type"] for d in device.documents] == [
        "open_shift", "receipt", "receipt", "close_shift", "open_shift", "receipt"]
    assert device.count("sell") == 4  # day-2 was refused once, then retried
    assert [d["name"] for d in device.receipts()] == ["Товар day-0", "Товар day-1", "Товар day-2"]
    assert two.fiscal_result() == device.receipts()[-1]["result"]
    assert two.fiscal_result().shift_number == device.shift_number


def test_device_clock_advanced_25_hours_while_idle(make_service):
    """After an idle spell the owner checks the link and the device clock first: Z, new shift,
    exactly one receipt, and nothing refused."""
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "day-1")
    quiet(service, device)  # the owner now remembers an open shift
    device.advance_clock(25)
    job = sell(service, "day-2")
    assert job.state == DONE
    assert [d["type"] for d in device.documents] == ["open_shift", "receipt", "close_shift", "open_shift", "receipt"]
    assert [d["name"] for d in device.receipts()] == ["Товар day-1", "Товар day-2"]
    assert job.fiscal_result() == device.receipts()[-1]["result"]
    # And the next day again, now with the shift remembered from the owner's own documents.
    quiet(service, device)
    device.advance_clock(25)
    assert sell(service, "day-3").state == DONE
    assert [d["type"] for d in device.documents][-3:] == ["close_shift", "open_shift", "receipt"]
    assert len(device.receipts()) == 3


def test_shift_closed_behind_the_owners_back_is_opened_and_retried(make_service):
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "zero")
    quiet(service, device)

    def close() -> None:
        device.shift_open = False  # as if the FN had closed it

    after_sell(device, "Товар first", close)
    one, two = back_to_back(service, device, "first", "second")
    assert one.state == DONE and two.state == DONE
    assert [d["type"] for d in device.documents] == ["open_shift", "receipt", "receipt", "open_shift", "receipt"]
    assert device.count("sell") == 4 and len(device.receipts()) == 3


def test_a_device_switched_off_while_idle_keeps_the_receipt_queued(make_service):
    """The link is checked before the first document after an idle spell: no unknown outcome."""
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "on")
    quiet(service, device)
    device.online = False
    job = sell(service, "off", wait=0.5)
    assert job.state == QUEUED and job.reason == Reasons.LINK_DOWN
    assert service.unsettled() == []
    device.online = True
    assert eventually(settled(service, job.id))
    assert service.get_job(job.id).state == DONE and len(device.receipts()) == 2


def test_device_error_makes_the_owner_read_the_device_again(make_service, monkeypatch):
    monkeypatch.setattr(owner_mod, "AFTER_JOB_REFRESH", 3600)
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "warm")
    device.paper = False
    assert sell(service, "no-paper").state == FAILED
    device.paper = True
    reads = device.count("last_document"), device.count("shift_status")
    assert sell(service, "after").state == DONE
    # The failed job dropped the memory: the next job read the FN number and the shift.
    assert device.count("last_document") > reads[0] and device.count("shift_status") > reads[1]
    assert len(device.receipts()) == 2


def test_a_link_drop_makes_the_owner_read_the_device_again(make_service, monkeypatch):
    monkeypatch.setattr(owner_mod, "AFTER_JOB_REFRESH", 3600)
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    sell(service, "warm")
    device.inject("sell", "after", LinkError())
    assert sell(service, "dropped").state == DONE
    reads = device.count("last_document"), device.count("shift_status")
    assert sell(service, "next").state == DONE
    assert device.count("last_document") > reads[0] and device.count("shift_status") > reads[1]
    assert [d["name"] for d in device.receipts()] == ["Товар warm", "Товар dropped", "Товар next"]


def test_an_in_process_owner_hands_the_answer_to_the_waiter(make_service, monkeypatch):
    """The waiter in the owner's process never reads its job back: the owner hands it over."""
    service = make_service()
    assert sell(service, "warm").state == "done"
    assert eventually(lambda: service._owners[1].is_owner)
    reads: list[str] = []
    for name in ("get", "state_of"):
        original = getattr(service.journal, name)

        def counted(job_id, _original=original, _name=name):
            reads.append(_name)
            return _original(job_id)

        monkeypatch.setattr(service.journal, name, counted)
    for i in range(5):
        job = sell(service, f"handed-{i}")
        assert job.state == "done" and job.fiscal_result() is not None
        stored = service.journal.get(job.id)
        assert stored is not None and stored.to_dict() == job.to_dict()
        reads.clear()
    job = sell(service, "handed-last")
    assert job.state == "done" and reads == []


def test_the_link_of_a_device_owned_here_is_known_without_the_snapshot(make_service, monkeypatch):
    """Every 1C request asks whether the link is down; the process that holds a working link
    answers from memory, and falls back to the snapshot once the link has failed."""
    device = FakeDevice()
    service = make_service(device)
    assert sell(service, "warm").state == DONE
    assert eventually(lambda: service._owners[1].link_up)
    read: list[int] = []
    original = service.journal.link_down
    monkeypatch.setattr(service.journal, "link_down", lambda number: (read.append(number), original(number))[1])
    assert service.link_down(1) is False and read == []
    # The device goes away mid-receipt and does not come back: the snapshot decides again.
    device.inject("sell", "after", LinkError(), offline=True)
    job = service.submit_receipt(make_receipt(name="Товар lost"), key="lost", wait=0)
    assert eventually(lambda: service.link_down(1), 10), "the link never showed as down"
    assert read and not service._owners[1].link_up
    device.online = True
    assert eventually(lambda: service.get_job(job.id).finished, 20)
    assert eventually(lambda: service._owners[1].link_up, 10)
    read.clear()
    assert service.link_down(1) is False and read == []


def test_the_owner_asks_what_holds_its_queue_only_after_an_uncertain_job(make_service, monkeypatch):
    """Between clean jobs the owner knows nothing holds its queue; after an unknown outcome it
    asks the journal again (and settles the job) before anything else goes to the device."""
    device = FakeDevice()
    service = make_service(device, status_refresh=3600)
    assert sell(service, "warm").state == DONE
    asked: list[int] = []
    original = service.journal.unsettled

    def counted(number=None):
        if threading.current_thread().name.startswith("kkt-device-"):
            asked.append(number)
        return original(number)

    monkeypatch.setattr(service.journal, "unsettled", counted)
    for i in range(4):
        assert sell(service, f"clean-{i}").state == DONE
    assert asked == []
    device.inject("sell", "after", LinkError())
    assert sell(service, "lost").state == DONE  # settled from the FN after reconnecting
    assert asked and sell(service, "after").state == DONE
    assert [d["name"] for d in device.receipts()][-2:] == ["Товар lost", "Товар after"]


def test_a_driver_that_cannot_read_fn_documents_notes_the_hand_settled_check(make_service):
    """A driver without receipt_document (the fakes): the operator's result stays, and says why
    it was not checked; the check is not asked again."""
    service = make_service()
    journal = service.journal
    job, _ = journal.accept(device=1, kind="receipt", key="hand", fingerprint="f",
                            payload={"receipt": receipt_to_json(make_receipt())})
    journal.mark_sending(job.id, 1)
    journal.mark_unknown(job.id, "связь прервалась")
    settled = service.settle_by_hand(job.id, fiscalised=True, fd_number=2, who="admin")
    assert settled.state == "done"
    assert eventually(lambda: "fn_checked" in service.get_job(job.id).result["settled_by_hand"])
    mark = service.get_job(job.id).result["settled_by_hand"]
    assert mark["fn_checked"] is False and "не читает документы ФН" in mark["fn_note"]
    assert service.get_job(job.id).result["fiscal_document_number"] == 2
    assert not journal.fn_checks_due(1)

"""The owner's rarer paths against the ATOL emulator and the real driver, not against tests/fakes.py.

Each test drives a service (kktapp.service) through AtolDriver over TCP into an in-process
emulator (kktapp.atol.emulator) and checks the FN's own document log, so what is proven is
what the real driver does on the wire: automatic shift close, the device refusing a receipt
for a shift over 24 h, a shift closed behind the owner's back, a document formed although the
device answered with an error, a last document whose data the FN cannot give back, a cash job
behind a receipt another program left open, and the handover of a device after its lock file is
removed.

Device-side surprises are injected with the emulator's own hooks (``_before_command`` runs
under the device lock just before a command executes) or by wrapping one method of the
emulated device; every wait is a bounded poll.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fakes import eventually, make_receipt

from kktapp.atol.driver import AtolDriver
from kktapp.atol.emulator import Emulator
from kktapp.atol.emulator.device import DeviceFault
from kktapp.atol.errors import ErrorCode
from kktapp.atol.model import Mode
from kktapp.errors import ResultCode
from kktapp.journal import DONE, Job, Journal, receipt_to_json
from kktapp.owner import policy as owner_mod
from kktapp.owner import shift as owner_shift
from kktapp.owner.policy import Reasons
from kktapp.service import DeviceConfig, FiscalService

#: Bound of every wait for the owner (a loaded 2-core CI machine; never an expectation).
SETTLE = 30.0


class Bench:
    """One emulator, services on one journal; everything is stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.emu = Emulator(log_path=tmp / "fd.jsonl")
        self.emu.start("127.0.0.1", 0)
        self.journal = tmp / "journal.sqlite3"
        self.services: list[FiscalService] = []

    def service(self, **options: Any) -> FiscalService:
        service = FiscalService(
            str(self.journal), [DeviceConfig(number=1, name="Касса 1", url=self.emu.url)], status_refresh=3600,
            driver_factory=lambda cfg: AtolDriver(cfg.url, timeout=2.0), **options,
        )
        self.services.append(service)
        return service

    def docs(self, kind: str | None = None) -> list[dict[str, Any]]:
        docs = self.emu.documents()
        return [d for d in docs if kind is None or d["type"] == kind]

    def kinds(self) -> list[str]:
        return [d["type"] for d in self.emu.documents()]

    def receipts_named(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.docs("receipt") if d["items"][0]["name"] == name]

    def before_command(self, hook: Callable[[str], None]) -> None:
        """Run ``hook(name)`` (device lock held) after the emulator's own hook, before each command."""
        own = self.emu._before_command

        def chained(name: str) -> None:
            own(name)
            hook(name)

        self.emu._before_command = chained  # type: ignore[method-assign]

    def close(self) -> None:
        for service in self.services:
            service.stop()
            service.journal.close()
        self.emu.stop()


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    # Quick reconnects and holds: the emulator is back in milliseconds.
    monkeypatch.setattr(owner_mod, "RECONNECT_MIN", 0.02)
    monkeypatch.setattr(owner_mod, "RECONNECT_MAX", 0.2)
    monkeypatch.setattr(owner_mod, "HOLD_RETRY", 0.05)
    monkeypatch.setattr(owner_mod, "ELECTION_INTERVAL", 0.05)
    b = Bench(tmp_path)
    try:
        yield b
    finally:
        b.close()


def sell(service: FiscalService, key: str, *, wait: float = SETTLE) -> Job:
    return service.submit_receipt(make_receipt(name=f"Товар {key}", price=1000 + len(key)), key=key,
                                  source="owner-paths", wait=wait)


def finished(service: FiscalService, job_id: str) -> Job:
    """The job once finished and nothing holds the device (bounded)."""
    def done() -> bool:
        job = service.get_job(job_id)
        return job is not None and job.finished and not service.unsettled(1)

    assert eventually(done, SETTLE, 0.02), f"job {job_id} not settled: {service.get_job(job_id)}"
    job = service.get_job(job_id)
    assert job is not None
    return job


def assert_answer_is_document(job: Job, doc: dict[str, Any]) -> None:
    result = job.result or {}
    assert (result["fiscal_document_number"], result["fiscal_sign"], result["total"], result["shift_number"]) == (
        doc["fd_number"], str(doc["fiscal_sign"]), doc["total"], doc["shift_number"]), (result, doc)


def z_at_the_keyboard(emu: Emulator) -> None:
    """A Z report made on the device itself (device lock held): the owner does not see it."""
    device = emu.device
    s = device.state
    saved = (s.mode, s.submode, s.operator)
    s.mode = Mode.REPORT_Z
    device.close_shift()
    s.mode, s.submode, s.operator = saved
    device.progress = []


# ---------------------------------------------------------------------- automatic close


class Clock(dt.datetime):
    """The owner module's datetime: ``now()`` is a settable instant (the emulator keeps its own clock)."""

    instant = dt.datetime(2026, 3, 2, 12, 0)

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> Clock:  # type: ignore[override]
        return cls.instant  # type: ignore[return-value]


def test_auto_close_at_the_set_time_once_a_day(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the owner module's clock moves: the device and the journal keep the real one.
    monkeypatch.setattr(owner_shift, "dt", types.SimpleNamespace(datetime=Clock, timedelta=dt.timedelta))
    Clock.instant = dt.datetime(2026, 3, 2, 12, 0)
    service = bench.service(auto_close_time="23:00")
    assert sell(service, "noon").state == DONE
    owner = service._owners[1]
    checks = [0]
    check = owner.shift.auto_close

    def counted() -> None:
        checks[0] += 1
        check()

    monkeypatch.setattr(owner.shift, "auto_close", counted)

    def checked_twice_more() -> Callable[[], bool]:
        start = checks[0]
        return lambda: checks[0] >= start + 2

    # Before the window: checked, nothing closed.
    assert eventually(checked_twice_more(), SETTLE, 0.02)
    assert bench.emu.shift_state() == "open" and not bench.docs("close_shift")

    # In the window: a Z report on the device, recorded as the day's automatic close.
    Clock.instant = dt.datetime(2026, 3, 2, 23, 0, 30)
    assert eventually(lambda: len(bench.docs("close_shift")) == 1, SETTLE, 0.02)
    job = service.find_job("close_shift", "auto-close-1-2026-03-02")
    assert job is not None and eventually(lambda: service.get_job(job.id).finished, SETTLE, 0.02)
    job = service.get_job(job.id)
    assert job.state == DONE and job.result["fiscal_document_number"] == bench.docs("close_shift")[0]["fd_number"]
    assert bench.emu.shift_state() == "closed"

    # Later in the same window a sale opens a new shift; the once-a-day guard keeps it open.
    Clock.instant = dt.datetime(2026, 3, 2, 23, 10)
    assert sell(service, "late").state == DONE
    assert eventually(checked_twice_more(), SETTLE, 0.02)
    assert bench.emu.shift_state() == "open" and len(bench.docs("close_shift")) == 1

    # Next day, outside the window: nothing; in the window: closed again.
    Clock.instant = dt.datetime(2026, 3, 3, 12, 0)
    assert eventually(checked_twice_more(), SETTLE, 0.02)
    assert bench.emu.shift_state() == "open"
    Clock.instant = dt.datetime(2026, 3, 3, 23, 5)
    assert eventually(lambda: len(bench.docs("close_shift")) == 2, SETTLE, 0.02)

    # A day whose shift is already closed: the job reads the device and forms no document.
    fd = bench.emu.state.fd_number
    Clock.instant = dt.datetime(2026, 3, 4, 23, 5)
    assert eventually(lambda: (j := service.find_job("close_shift", "auto-close-1-2026-03-04")) is not None
                      and j.finished, SETTLE, 0.02)
    skipped = service.find_job("close_shift", "auto-close-1-2026-03-04")
    assert skipped.state == DONE and skipped.result == {}
    assert bench.emu.state.fd_number == fd and len(bench.docs("close_shift")) == 2


# ---------------------------------------------------------------------- the shift, refused


def test_receipt_refused_for_a_shift_over_24_hours_gets_z_new_shift_and_one_document(bench: Bench) -> None:
    """The owner remembers a fresh shift, but by the device clock it is over 24 h when the receipt
    opens (the clocks differ): 92 is refused with 0x88; Z report, new shift, the receipt once."""
    service = bench.service()
    warm = sell(service, "warm")
    assert warm.state == DONE
    armed = [True]

    def clock_jumps(name: str) -> None:
        # Between the owner's last look at the device and the receipt: no estimate can see it.
        if name == "open_receipt" and armed:
            armed.clear()
            bench.emu.device.advance_clock(25)

    bench.before_command(clock_jumps)
    job = finished(service, sell(service, "late", wait=0).id)
    assert not armed, "the receipt never reached the device"
    assert job.state == DONE, job
    assert bench.kinds() == ["open_shift", "receipt", "close_shift", "open_shift", "receipt"]
    (doc,) = bench.receipts_named("Товар late")
    assert_answer_is_document(job, doc)
    assert doc["shift_number"] == warm.result["shift_number"] + 1


def test_shift_closed_behind_the_owner_is_opened_by_the_receipt_itself(bench: Bench, caplog) -> None:
    """The owner's memory says open; a Z report at the device's keyboard closed the shift just
    before the receipt. The ATOL 92 opens a closed shift itself ([C K]): the receipt is
    fiscalised in the new shift, the FD number grew by two, and the owner stops trusting its
    memory (the next job reads the device) instead of recording a wrong document number."""
    service = bench.service()
    assert sell(service, "warm").state == DONE
    armed = [True]

    def z_first(name: str) -> None:
        if name == "open_receipt" and armed:
            armed.clear()
            z_at_the_keyboard(bench.emu)

    bench.before_command(z_first)
    caplog.set_level(logging.ERROR, logger="kktapp.owner")
    job = finished(service, sell(service, "after-z", wait=0).id)
    assert not armed and job.state == DONE, job
    assert bench.kinds() == ["open_shift", "receipt", "close_shift", "open_shift", "receipt"]
    (doc,) = bench.receipts_named("Товар after-z")
    assert_answer_is_document(job, doc)
    assert any("ожидался" in r.getMessage() for r in caplog.records), "the FD gap went unnoticed"
    # The next receipt goes into the same (new) shift: no further shift documents.
    nxt = sell(service, "next")
    assert nxt.state == DONE and bench.kinds()[-1] == "receipt" and len(bench.docs("open_shift")) == 2
    assert nxt.result["shift_number"] == doc["shift_number"]


# ---------------------------------------------------------------------- the FN cannot tell


def test_a_receipt_in_the_fn_that_is_not_the_job_leaves_it_to_the_operator(bench: Bench,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer to 4A is lost, and the receipt the FN holds after the journal's number is not
    the job's (another total): the FN cannot say whether the job's receipt exists. The job stays
    unknown with the reason for the operator, the queue holds, and nothing is sent again, however
    often the owner looks."""
    monkeypatch.setattr(owner_mod, "UNDECIDED_RECHECK", 0.05)
    service = bench.service()
    assert sell(service, "warm").state == DONE
    device = bench.emu.device
    close = device.close_receipt

    def close_as_another(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        doc = close(*args, **kwargs)
        if doc is not None and doc["items"][0]["name"] == "Товар other":
            doc["total"] += 100
            bench.emu.drop_after_tasks(1)  # this 4A's answer is lost
        return doc

    device.close_receipt = close_as_another  # type: ignore[method-assign]
    job = sell(service, "other", wait=0)

    def waits_for_operator() -> bool:
        got = service.get_job(job.id)
        return got is not None and got.state == "unknown" and "решает оператор" in got.reason

    assert eventually(waits_for_operator, SETTLE, 0.02)
    reads: list[str] = []
    bench.before_command(lambda name: reads.append(name) if name == "document_open" else None)
    assert eventually(lambda: len(reads) >= 3, SETTLE, 0.02), "the owner stopped looking at the FN"
    job = service.get_job(job.id)
    assert job is not None and job.state == "unknown" and job.error["code"] == ResultCode.UNKNOWN_OUTCOME, job
    assert service.unsettled(1) and len(bench.receipts_named("Товар other")) == 1
    assert bench.kinds() == ["open_shift", "receipt", "receipt"]


# ---------------------------------------------------------------------- formed despite an error


def test_cash_in_done_although_the_paper_ran_out(bench: Bench) -> None:
    """Paper runs out while 49 prints: the cash is in the drawer, the reply is 0x67 (the device's
    paper model of 4A applied to 49). The job is done, not failed and not sent again, and its
    result is the cash operation's, not the FN's last document: 49 forms none
    (model.DocType.CASH_IN), the drawer (4D) tells that it ran."""
    service = bench.service()
    assert sell(service, "warm").state == DONE
    device = bench.emu.device
    cash_in = device.cash_in
    drawer = device.state.cash

    def paper_ends_while_printing(amount: int) -> NoReturn:
        cash_in(amount)
        device.paper = False
        device.state.print_pending = True
        raise DeviceFault(ErrorCode.NO_PAPER, committed=True)

    device.cash_in = paper_ends_while_printing  # type: ignore[method-assign]
    job = service.submit("cash_in", {"amount": 50000}, wait=0)
    assert eventually(lambda: service.get_job(job.id).finished, SETTLE, 0.02)
    job = service.get_job(job.id)
    assert job.state == DONE, job
    result = job.result
    assert (result["fiscal_document_number"], result["fiscal_sign"], result["total"]) == (0, "", 50000)
    assert result["printed"] is False and result["shift_number"] == bench.emu.state.shift_number
    assert device.state.cash == drawer + 50000 and len(bench.emu.cash_operations()) == 1
    # No copy from the service (model.REPRINT_OWED_COPY): the operator is told, nothing holds.
    assert job.reason == Reasons.NO_COPY and not service.unsettled(1)


def test_cash_in_after_a_receipt_left_open_behind_the_owner(bench: Bench) -> None:
    """Another program left a receipt open while the owner held the link (its memory says none):
    49 is refused (0x9B) like a receipt would be. The owner reads the FN, annuls the stale
    receipt and sends the cash-in once more: the drawer moves once, the job is done, and the
    FN holds no receipt of it. Before, a cash job failed here where a receipt was cured."""
    service = bench.service()
    assert sell(service, "warm").state == DONE
    device = bench.emu.device
    drawer = device.state.cash
    armed = [True]

    def receipt_opened_first(name: str) -> None:
        if name == "cash_in" and armed:
            armed.clear()
            device.open_receipt(1)

    bench.before_command(receipt_opened_first)
    job = finished(service, service.submit("cash_in", {"amount": 30000}, wait=0).id)
    assert not armed and job.state == DONE, job
    assert device.state.cash == drawer + 30000 and len(bench.emu.cash_operations()) == 1
    assert device.state.receipt is None and bench.kinds() == ["open_shift", "receipt"]


def test_cash_in_first_after_a_restart_annuls_a_receipt_left_open(bench: Bench) -> None:
    """The service restarts while another program holds a receipt open; the first job is a
    cash-in. The owner reads the FN before it (its memory is empty), annuls the receipt and
    sends 49 once: no refusal reaches the cashier."""
    first = bench.service()
    assert sell(first, "warm").state == DONE
    first.stop()
    device = bench.emu.device
    with device.lock:
        device.state.mode, device.state.submode = Mode.REGISTRATION, 0
        device.open_receipt(1)
    drawer = device.state.cash
    service = bench.service()
    job = finished(service, service.submit("cash_in", {"amount": 12300}, wait=0).id)
    assert job.state == DONE and job.attempts == 1, job
    assert device.state.cash == drawer + 12300 and device.state.receipt is None


def test_receipt_printed_without_paper_tells_the_operator_instead_of_sending_95(bench: Bench) -> None:
    """Paper runs out at 4A: the receipt is fiscalised, its paper is not. What 95 prints on an FN
    device is not settled (model.REPRINT_OWED_COPY: A "the last document again", K "the deferred
    Z reports"), so the service never sends it on its own: the job is done with the operator
    told so, the queue does not wait for paper, and no 95 goes out when paper is back."""
    service = bench.service()
    assert sell(service, "warm").state == DONE
    sent: list[str] = []
    bench.before_command(lambda name: sent.append(name))
    bench.emu.paper_out(before="close_receipt")
    job = sell(service, "no-paper")
    assert job.state == DONE, job
    (doc,) = bench.receipts_named("Товар no-paper")
    assert_answer_is_document(job, doc)
    assert job.result["printed"] is False and job.reason == Reasons.NO_COPY
    assert not service.unsettled(1), "nothing may wait for a copy the service will not print"
    bench.emu.paper_in()
    assert sell(service, "after-paper").state == DONE
    assert "reprint_last" not in sent


def test_copy_owed_in_the_journal_is_told_to_the_operator_not_printed(bench: Bench) -> None:
    """A copy a previous run of the service left owed (journal reprint flag) on this device: the
    owner does not send 95 for it, it tells the operator and the queue moves on."""
    first = bench.service()
    job = sell(first, "owed")
    assert job.state == DONE
    first.stop()
    first.journal.finish(job.id, DONE, result={**job.result, "printed": False}, reprint=True,
                         reason=Reasons.REPRINT)
    sent: list[str] = []
    bench.before_command(lambda name: sent.append(name))
    service = bench.service()
    assert eventually(lambda: not service.unsettled(1), SETTLE, 0.02)
    job = service.get_job(job.id)
    assert job is not None and not job.reprint and job.reason == Reasons.NO_COPY
    assert job.result["printed"] is False and job.result["fiscal_document_number"] == 2
    assert sell(service, "next").state == DONE and "reprint_last" not in sent


def test_z_report_whose_read_back_fails_is_recorded_from_the_fn(bench: Bench) -> None:
    """5A forms the Z report, then the FN refuses the document read (0xBA) once: the driver
    raises after the document exists; the owner finds the FD number grown and records the Z
    with the FN's data (and tells the shift observers), never as failed."""
    service = bench.service()
    assert sell(service, "warm").state == DONE
    closed: list[int] = []
    service.shift_observers.append(lambda device, result, driver: closed.append(result.fiscal_document_number))
    device = bench.emu.device
    document = device.document
    refused: list[int] = []

    def refuse_once(fd_number: int) -> dict[str, Any]:
        if not refused and device.documents[-1]["type"] == "close_shift":
            refused.append(fd_number)
            raise DeviceFault(ErrorCode.FN_EXCHANGE)
        return document(fd_number)

    device.document = refuse_once  # type: ignore[method-assign]
    job = service.submit("close_shift", wait=0)
    job = finished(service, job.id)
    assert refused, "the read-back was never refused"
    assert job.state == DONE, job
    (doc,) = bench.docs("close_shift")
    assert refused == [doc["fd_number"]]
    assert job.result["fiscal_document_number"] == doc["fd_number"]
    assert job.result["fiscal_sign"] == str(doc["fiscal_sign"])
    assert closed == [doc["fd_number"]]
    assert bench.emu.shift_state() == "closed" and len(bench.docs("close_shift")) == 1


def test_document_without_data_is_recorded_with_what_is_certain(bench: Bench) -> None:
    """The FN's last document number grew, but the FN cannot give the document back (0xDA on
    every read): the Z report is done with the number and the shift, an empty fiscal sign, and
    is never made a second time. (A cash operation is no FN document: model.DocType.CASH_IN.)"""
    service = bench.service()
    assert sell(service, "warm").state == DONE
    device = bench.emu.device

    def no_data(fd_number: int) -> dict[str, Any]:
        raise DeviceFault(ErrorCode.FN_NO_DATA)

    device.document = no_data  # type: ignore[method-assign]
    job = service.submit("close_shift", wait=0)
    job = finished(service, job.id)
    assert job.state == DONE, job
    (doc,) = bench.docs("close_shift")
    result = job.result
    assert result["fiscal_document_number"] == doc["fd_number"] == bench.emu.state.fd_number
    assert result["fiscal_sign"] == "" and result["shift_number"] == doc["shift_number"]
    assert len(bench.docs("close_shift")) == 1


# ---------------------------------------------------------------------- lock file removed


def test_device_handed_over_after_its_lock_file_is_removed(bench: Bench, monkeypatch: pytest.MonkeyPatch,
                                                           caplog) -> None:
    """Someone deletes the lock file while process A owns the device; process B, started after,
    locks a new file and becomes owner, but the device refuses its second connection. A notices
    its file is gone, gives the link up, and B connects and fiscalises what A's clients send."""
    # A does not look at its lock file until the test says so.
    monkeypatch.setattr(owner_mod, "LOCK_CHECK_INTERVAL", 1e9)
    a = bench.service()
    assert sell(a, "via-a").state == DONE
    a_owner = a._owners[1]
    assert a_owner.is_owner and a_owner.driver is not None
    os.unlink(f"{bench.journal}.device-1.lock")
    caplog.set_level(logging.INFO, logger="kktapp.atol.emulator.server")
    b = bench.service()
    b.start()
    b_owner = b._owners[1]
    assert eventually(lambda: b_owner.is_owner, SETTLE, 0.02)

    def refused() -> bool:
        return any("refusing a second connection" in r.getMessage() for r in caplog.records)

    # Two owners now: the device itself keeps B out while A holds the link.
    assert eventually(refused, SETTLE, 0.02)
    assert a_owner.is_owner and a_owner.driver is not None
    caplog.clear()
    caplog.set_level(logging.ERROR, logger="kktapp.owner")
    monkeypatch.setattr(owner_mod, "LOCK_CHECK_INTERVAL", 0.05)

    def handed_over() -> bool:
        driver = b_owner.driver
        return not a_owner.is_owner and driver is not None and driver.connected

    assert eventually(handed_over, SETTLE, 0.02), "the device was not handed over"
    assert any("файл блокировки" in r.getMessage() for r in caplog.records)
    key = f"after-{uuid.uuid4().hex[:6]}"
    job = finished(a, sell(a, key, wait=0).id)
    assert job.state == DONE, job
    (doc,) = bench.receipts_named(f"Товар {key}")
    assert_answer_is_document(job, doc)
    assert not a_owner.is_owner and a_owner.driver is None and b_owner.is_owner
    assert int(Path(f"{bench.journal}.device-1.lock").read_text()) == os.getpid()


# ---------------------------------------------------------------------- a receipt settled by hand


def settled_by_hand_offline(journal_path: Path, key: str, fd: int) -> str:
    """A receipt whose outcome was unknown and that an operator settled as fiscalised with FD
    ``fd`` while no owner ran (the check is due for the next one); its job id."""
    journal = Journal(str(journal_path))
    try:
        job, _ = journal.accept(device=1, kind="receipt", key=key, fingerprint="f",
                                payload={"receipt": receipt_to_json(make_receipt(name=f"Товар {key}"))})
        journal.mark_sending(job.id, fd - 1)
        journal.mark_unknown(job.id, "связь прервалась")
        ok, _ = journal.settle_by_hand(job.id, result={"fiscal_document_number": fd, "receipt_number": 0,
                                                       "settled_by_hand": {"who": "admin"}}, fn_check=True)
        assert ok
    finally:
        journal.close()
    return job.id


def test_a_device_error_reading_a_hand_settled_document_is_noted_not_held(bench: Bench, caplog) -> None:
    """The FN answers the document read with an error other than "no data": the check is noted
    as failed (with the device's code), logged as an error, done once, and the queue goes on."""
    first = bench.service()
    fd = sell(first, "warm").result["fiscal_document_number"]
    first.stop()
    job_id = settled_by_hand_offline(bench.journal, "hand-1", fd)

    def broken(fd_number: int) -> dict[str, Any]:
        raise DeviceFault(ErrorCode.FN_EXCHANGE)

    bench.emu.device.document = broken  # type: ignore[method-assign]
    service = bench.service()
    assert eventually(lambda: "fn_checked" in service.get_job(job_id).result["settled_by_hand"], SETTLE)
    mark = service.get_job(job_id).result["settled_by_hand"]
    assert mark["fn_checked"] is False and f"ошибка {int(ErrorCode.FN_EXCHANGE)}" in mark["fn_note"], mark
    assert not service.journal.fn_checks_due(1)
    assert any(r.levelname == "ERROR" and "не сверен с ФН" in r.getMessage() for r in caplog.records)
    assert sell(service, "after").state == DONE

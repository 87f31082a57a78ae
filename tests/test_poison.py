"""The poison receipt (issue 11): a value the device's command cannot carry never stops a register.

Two depths: every contract refuses such values with 422 naming the field and the limit (the
limits come from the ATOL command layouts, :data:`kktapp.atol.commands.LIMITS`), and a job that
still cannot be encoded (an old journal, a bug) fails cleanly before its first byte is sent,
instead of becoming "outcome unknown" and being resent for ever. A document whose sends keep
ending without a document is given up after owner.MAX_SEND_ATTEMPTS and listed for the operator.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from decimal import Decimal
from typing import Any

import pytest
import webtest
from fakes import FakeDevice, FakeDriver

from kktapp import create_app
from kktapp.atol import commands
from kktapp.atol.driver import AtolDriver
from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate
from kktapp.errors import LinkError, ResultCode, ValidationFailed
from kktapp.journal import DONE, FAILED, RECEIPT, UNKNOWN, receipt_to_json
from kktapp.owner import policy as owner_mod
from kktapp.service import DeviceConfig, FiscalService

FORM = "application/x-www-form-urlencoded;charset=utf-8"
#: Commands that change or print something on the device (status reads are not counted).
DOCUMENT_COMMANDS = frozenset({
    "open_receipt", "register_position", "receipt_discount", "payment", "close_receipt", "cancel_receipt",
    "write_attribute", "cash_in", "cash_out", "print_string", "cut", "reprint_last", "open_shift",
    "close_shift", "x_report",
})


def count_commands(emulator: Any) -> list[str]:
    """Record the name of every command the emulator executes from now on."""
    seen: list[str] = []
    original = emulator._before_command

    def hook(name: str) -> None:
        seen.append(name)
        original(name)

    emulator._before_command = hook
    return seen


def onec(name: str = "Гвоздь", price: str = "0.01", qty: str = "100000000", number: str = "ЯД-1") -> bytes:
    amount = (Decimal(price) * Decimal(qty)).quantize(Decimal("0.01"))
    body = {"DocNumber": number, "DocDate": "06.10.2017", "DocSumm": str(amount),
            "Goods": {"Position_1": {"Name": name, "Price": price, "Quantity": qty, "Tax": 22,
                                     "PositionSumm": str(amount)}}}
    # Numbers as JSON numbers, the way 1C writes them.
    text = json.dumps(body, ensure_ascii=False)
    for value in (price, qty, str(amount)):
        text = text.replace(f'"{value}"', value)
    return text.encode("utf-8")


def fiscal_receipts(emulator: Any) -> list[dict]:
    return [d for d in emulator.documents() if d["type"] == "receipt"]


def poison_receipt() -> Receipt:
    """A receipt that passes the domain rules but whose quantity the E6 field cannot hold."""
    qty = Decimal(100_000_000)
    return Receipt(
        type=SettlementType.SELL,
        positions=(Position(name="Гвоздь", price=1, quantity=qty, amount=100_000_000, vat=VatRate.VAT22),),
        payments=(Payment(PaymentType.ELECTRONIC, 100_000_000),),
    )


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# --------------------------------------------------------------------------- limits from the layouts


def test_limits_come_from_the_command_layouts() -> None:
    limits = AtolDriver.limits
    assert limits is commands.LIMITS
    assert limits.max_quantity == Decimal(10 ** (2 * commands.codec.QUANTITY_BYTES) - 1) / 1000
    # Validation runs before the device's FFD path is known: the narrower of EB and E6 counts.
    money = min(commands.POSITION_MONEY_BYTES, commands.E6_MONEY_BYTES)
    assert limits.max_price == limits.max_position_sum == 10 ** (2 * money) - 1
    assert limits.max_payment == limits.max_cash == 10 ** (2 * commands.PAYMENT_SUM_BYTES) - 1
    assert limits.max_department == commands.SECTION_MAX
    # The largest allowed value encodes on both position paths; one more does not.
    e6, eb = commands.get("register_position"), commands.get("end_position")
    e6.encode(name="x", price=limits.max_price, quantity=limits.max_quantity, tax=1)
    eb.encode(name="x" * limits.name_bytes, price=limits.max_price, quantity=limits.max_quantity,
              sum=limits.max_position_sum, tax=1, section=limits.max_department)
    with pytest.raises(commands.codec.CodecError):
        e6.encode(name="x", price=1, quantity=limits.max_quantity + Decimal("0.001"), tax=1)
    with pytest.raises(commands.codec.CodecError):
        eb.encode(name="x", price=1, quantity=limits.max_quantity + Decimal("0.001"), sum=1, tax=1)
    with pytest.raises(commands.codec.CodecError):
        commands.get("payment").encode(payment_type=1, amount=limits.max_payment + 1)
    # Names are counted in device bytes: "…" is three of them.
    assert len(limits.encode("…")) == 3


# --------------------------------------------------------------------------- every contract refuses


def test_1c_refuses_the_poison_quantity_before_the_journal(testapp: webtest.TestApp, emulator: Any, app) -> None:
    seen = count_commands(emulator)
    res = testapp.post("/kkt", params=onec(), content_type=FORM, status=422)
    assert res.json["result_code"] == ResultCode.VALIDATION
    assert res.json["field"] == "Goods.Position_1.Quantity"
    assert "9999999.999" in res.json["result_description"]
    # Quantity one unit above the field, the sum well within every money limit.
    res = testapp.post("/kkt", params=onec(price="0.01", qty="10000000", number="ЯД-2"), content_type=FORM,
                       status=422)
    assert res.json["field"] == "Goods.Position_1.Quantity"
    assert app.extensions["kkt"].journal.queue_counts(1) == {"queued": 0, "sending": 0, "unknown": 0}
    assert app.extensions["kkt"].journal.find_by_key(RECEIPT, "ЯД-1 от 06.10.2017") is None
    assert not DOCUMENT_COMMANDS.intersection(seen)
    assert fiscal_receipts(emulator) == []


def test_api_and_compat_refuse_the_poison_quantity(testapp: webtest.TestApp, emulator: Any) -> None:
    seen = count_commands(emulator)
    body = {"items": [{"name": "Гвоздь", "price": "0.01", "quantity": "100000000", "tax": "vat22"}],
            "payments": [{"type": "electronic", "amount": "1000000"}]}
    res = testapp.post_json("/api/v1/receipts", body, status=422)
    assert res.json["error"]["field"] == "items.0.quantity"
    assert "9999999.999" in res.json["error"]["message"]
    income = {"atol_device_data": {"atol_device_number": 1}, "comand": "INCOME",
              "data": {"goods": [{"name": "Гвоздь", "price": "0.01", "kol": "100000000", "nds": 22}],
                       "check_sm": "1000000", "type_close": "tc1"}}
    res = testapp.post("/api/compat/atol-kkt-service", params=json.dumps(income, ensure_ascii=False).encode(),
                       content_type="application/json", status=422)
    assert res.json["error_code"] < 0 and "data.goods.0.kol" in res.json["error"]
    # A cash-in the 5-byte BCD cannot hold is refused by the service itself, whoever calls it.
    with pytest.raises(ValidationFailed) as err:
        testapp.app.extensions["kkt"].submit("cash_in", {"amount": commands.LIMITS.max_cash + 1}, wait=0)
    assert err.value.field == "amount"
    assert not DOCUMENT_COMMANDS.intersection(seen)
    assert fiscal_receipts(emulator) == []


# --------------------------------------------------------------------------- the owner's depth


def _journal_poison(service: FiscalService, key: str = "ЯД-старый") -> str:
    """Put the poison receipt into the journal as a pre-fix service would have (no validation)."""
    job, _ = service.journal.accept(device=1, kind=RECEIPT, key=key, fingerprint=key,
                                    payload={"receipt": receipt_to_json(poison_receipt())}, source="1c")
    return job.id


def test_a_journalled_poison_receipt_fails_and_the_register_goes_on_also_after_a_restart(
    app_config: dict, emulator: Any
) -> None:
    app = create_app(app_config)
    service = app.extensions["kkt"]
    try:
        job_id = _journal_poison(service)
        service.start()
        for owner in service._owners.values():
            owner.wake()
        wait_for(lambda: service.journal.get(job_id).state in (FAILED, DONE, UNKNOWN) and
                 service.journal.get(job_id).state != UNKNOWN)
        job = service.journal.get(job_id)
        assert job.state == FAILED, job
        assert job.error["code"] == ResultCode.VALIDATION
        assert "не отправлен" in job.error["message"]
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        res = client.post("/kkt", params=onec(qty="2", price="10.00", number="обычный-1"), content_type=FORM)
        assert res.json["result_code"] == 0, res.json
    finally:
        service.stop()
        service.journal.close()
    assert len(fiscal_receipts(emulator)) == 1
    # Restart on the same journal: the poison job stays failed and is not replayed.
    app = create_app(app_config)
    service = app.extensions["kkt"]
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        res = client.post("/kkt", params=onec(qty="1", price="5.00", number="обычный-2"), content_type=FORM)
        assert res.json["result_code"] == 0, res.json
        assert service.journal.get(job_id).state == FAILED
    finally:
        service.stop()
        service.journal.close()
    assert len(fiscal_receipts(emulator)) == 2


def test_a_stuck_unknown_poison_from_an_old_journal_is_settled(app_config: dict, emulator: Any) -> None:
    """The state the bug left behind: unknown, fd_before equal to the FN, hundreds of attempts."""
    app = create_app(app_config)
    service = app.extensions["kkt"]
    try:
        service.stop()
        job_id = _journal_poison(service)
        fd = max([d.get("fd_number", 0) for d in emulator.documents()] or [0])
        service.journal.mark_sending(job_id, fd)
        service.journal._write("UPDATE jobs SET attempts=700 WHERE id=?", (job_id,))
        service.journal.mark_unknown(job_id, "связь прервалась")
        service.start()
        wait_for(lambda: service.journal.get(job_id).state == FAILED)
        assert service.journal.get(job_id).error["code"] == ResultCode.GAVE_UP
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        res = client.post("/kkt", params=onec(qty="1", price="5.00", number="обычный-3"), content_type=FORM)
        assert res.json["result_code"] == 0, res.json
        # The operator sees it: status JSON and page name the document.
        snap = client.get("/kkt", headers={"Accept": "application/json"}).json["devices"][0]
        assert [a["key"] for a in snap["attention"]] == ["ЯД-старый"]
        assert "ЯД-старый" in client.get("/kkt", headers={"Accept": "text/html"}).text
        assert client.get("/api/v1/devices/1/snapshot").json["snapshot"]["attention"][0]["id"] == job_id
    finally:
        service.stop()
        service.journal.close()
    assert len(fiscal_receipts(emulator)) == 1


def test_an_unexpected_error_before_sending_is_a_failed_job_not_unknown(
    app_config: dict, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AtolDriver, receipt: Receipt) -> list:
        if receipt.positions[0].name == "сломано":
            raise RuntimeError("a bug while building the tasks")
        return original(self, receipt)

    original = AtolDriver.receipt_steps
    monkeypatch.setattr(AtolDriver, "receipt_steps", broken)
    app = create_app(app_config)
    service = app.extensions["kkt"]
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        res = client.post("/kkt", params=onec(name="сломано", qty="1", price="1.00", number="Б-1"),
                          content_type=FORM, status=422)
        assert res.json["result_code"] == ResultCode.VALIDATION, res.json
        assert service.journal.find_by_key(RECEIPT, "Б-1 от 06.10.2017").state == FAILED
        res = client.post("/kkt", params=onec(name="целое", qty="1", price="1.00", number="Б-2"), content_type=FORM)
        assert res.json["result_code"] == 0, res.json
    finally:
        service.stop()
        service.journal.close()


# --------------------------------------------------------------------------- giving up on a document


class ChokingDriver(FakeDriver):
    """Opens the receipt, then the link drops, every time, for receipts named "ЯД"."""

    def sell(self, receipt: Receipt) -> Any:
        if receipt.positions[0].name == "ЯД":
            self.device.inject("sell", "open", LinkError())
        return super().sell(receipt)


def test_a_document_that_breaks_the_link_every_time_is_given_up_safely(tmp_path: Any) -> None:
    device = FakeDevice()
    service = FiscalService(str(tmp_path / "j.sqlite3"), [DeviceConfig(1, "Касса", "fake://1")],
                            driver_factory=lambda cfg: ChokingDriver(device), status_refresh=0.2)
    try:
        poison = dataclasses.replace(poison_receipt(), positions=(
            Position(name="ЯД", price=100, quantity=Decimal(1), amount=100, vat=VatRate.VAT22),),
            payments=(Payment(PaymentType.CASH, 100),))
        first = service.submit_receipt(poison, key="яд", wait=0)
        ok = service.submit_receipt(dataclasses.replace(poison, positions=(
            dataclasses.replace(poison.positions[0], name="Хлеб"),)), key="хлеб", wait=30)
        assert ok.state == DONE, ok
        job = service.journal.get(first.id)
        assert job.state == FAILED and job.error["code"] == ResultCode.GAVE_UP
        assert job.attempts == owner_mod.MAX_SEND_ATTEMPTS
        assert len(device.receipts()) == 1  # the bread only: the poison was never fiscalised
        assert service.snapshot(1)["attention"][0]["id"] == first.id
        # Giving up freed the key: after fixing the cause the same key may be sent again.
        fixed = dataclasses.replace(poison, positions=(dataclasses.replace(poison.positions[0], name="ЯД исправлен"),))
        again = service.submit_receipt(fixed, key="яд", wait=30)
        assert again.state == DONE and len(device.receipts()) == 2
    finally:
        service.stop()
        service.journal.close()


def test_compat_segment_poison_is_refused_too(testapp: webtest.TestApp, emulator: Any) -> None:
    seen = count_commands(emulator)
    inner = {"atol_device_data": {"atol_device_number": 1}, "comand": "INCOME",
             "data": {"goods": [{"name": "Гвоздь", "price": "0.01", "kol": "100000000", "nds": 22}],
                      "check_sm": "1000000", "type_close": "tc1"}}
    text = base64.b64encode(json.dumps(inner).encode()).decode()
    seg = {"atol_device_data": {"atol_device_number": 1}, "comand": "SEGMENT",
           "data": {"segment_guid": "g1", "segment_num": 1, "segment_count": 1, "text": text}}
    res = testapp.post("/api/compat/atol-kkt-service", params=json.dumps(seg).encode(),
                       content_type="application/json", status=422)
    assert "kol" in res.json["error"]
    assert not DOCUMENT_COMMANDS.intersection(seen)


def test_an_unexpected_error_before_a_print_job_is_sent_fails_it_cleanly(
    testapp: webtest.TestApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AtolDriver, lines: Any) -> None:
        raise RuntimeError("a bug before sending")

    monkeypatch.setattr(AtolDriver, "print_text", broken)
    res = testapp.post_json("/api/v1/devices/1/print?wait=20", {"lines": [{"text": "строка"}]}, status="*")
    assert res.status_int == 422 and "не отправлен" in res.json["error"]["message"], res.json
    # The owner kept its link: the next job runs at once.
    monkeypatch.undo()
    res = testapp.post_json("/api/v1/devices/1/print?wait=20", {"lines": [{"text": "строка"}]})
    assert res.status_int == 200

"""The Shtrih-M driver against the Shtrih-M emulator: every Driver operation and its error paths."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from decimal import Decimal

import pytest

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
from kktapp.errors import DeviceBusy, DeviceError, LinkError, OutcomeUnknown
from kktapp.shtrih import model
from kktapp.shtrih.driver import CashBefore, ShtrihDriver
from kktapp.shtrih.emulator import Emulator
from kktapp.shtrih.emulator import device as emu_device
from kktapp.shtrih.errors import ErrorCode

H = bytes.fromhex


@pytest.fixture
def emu(tmp_path) -> Iterator[Emulator]:
    with Emulator(log_path=tmp_path / "fd.jsonl") as e:
        yield e


@pytest.fixture
def drv(emu: Emulator) -> Iterator[ShtrihDriver]:
    d = ShtrihDriver(emu.url, timeout=5)
    d.connect()
    try:
        yield d
    finally:
        d.close()


def receipt(kind: SettlementType = SettlementType.SELL, *, vat: VatRate = VatRate.VAT22, amount: int = 10000,
            pay: PaymentType = PaymentType.CASH, paid: int | None = None, **extra) -> Receipt:
    pos = Position("Товар", amount, Decimal(1), amount, vat)
    return Receipt(type=kind, positions=(pos,), payments=(Payment(pay, amount if paid is None else paid),), **extra)


def test_status_and_identity(drv: ShtrihDriver, emu: Emulator) -> None:
    st = drv.status()
    assert (st.mode, st.submode, st.shift_open, st.receipt_open, st.paper_present) == (4, 0, False, False, True)
    quick = drv.quick_status()
    assert (quick.shift_open, quick.receipt_open) == (False, False) and quick.datetime.year >= 2024
    info = drv.device_info()
    assert info.model_name == "ШТРИХ-М-01Ф" and info.serial == "123456"
    fn = drv.fn_status()
    assert fn.fn_number == emu.state.fn_number and fn.last_fd_number == 0 and fn.valid_until
    assert drv.shift_status().state == "closed"
    assert drv.totals().cash_in_drawer == 0


def test_shift_with_cashier_and_reports(drv: ShtrihDriver, emu: Emulator) -> None:
    res = drv.open_shift("Иванова И.И.", "500100732259")
    assert (res.fiscal_document_number, res.shift_number) == (1, 1)
    doc = emu.documents()[0]
    assert doc["type"] == "open_shift" and doc["attributes"] == {"1021": "Иванова И.И.", "1203": "500100732259"}
    assert res.fiscal_sign == doc["fiscal_sign"]
    assert drv.shift_status().state == "open"
    drv.x_report()
    z = drv.close_shift("Иванова И.И.")
    assert z.fiscal_document_number == 2 and emu.documents()[1]["type"] == "close_shift"
    assert drv.shift_status().state == "closed"
    with pytest.raises(DeviceError) as err:
        drv.close_shift()
    assert err.value.code == ErrorCode.SHIFT_CLOSED and "Смена не открыта" in err.value.message


def test_settlement_report_is_ff38_and_an_fn_document(drv: ShtrihDriver, emu: Emulator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    execute = emu_device.ShtrihDevice.execute

    def record(self: emu_device.ShtrihDevice, payload: bytes, *args: object, **kw: object) -> bytes:
        sent.append(payload[:2].hex(" ").upper() if payload[0] == 0xFF else f"{payload[0]:02X}")
        return execute(self, payload, *args, **kw)

    monkeypatch.setattr(emu_device.ShtrihDevice, "execute", record)
    # Without a cashier: FF38 alone, as opos, pyshtrih and the DrvFR 1C driver send it.
    res = drv.settlement_report()
    assert "FF 38" in sent and "FF 37" not in sent
    doc = emu.documents()[-1]
    assert doc["type"] == "settlement_report" and "attributes" not in doc
    assert (res.fiscal_document_number, res.fiscal_sign, res.total) == (1, doc["fiscal_sign"], 0)
    # With a cashier: FF37, the tags by FF0C, then FF38.
    sent.clear()
    res = drv.settlement_report("Иванова И.И.", "500100732259")
    reports = [c for c in sent if c in ("FF 37", "FF 0C", "FF 38")]
    assert reports == ["FF 37", "FF 0C", "FF 0C", "FF 38"]
    assert emu.documents()[-1]["attributes"] == {"1021": "Иванова И.И.", "1203": "500100732259"}
    assert res.fiscal_document_number == 2 and not emu.state.shift_open


def test_settlement_report_refusals_are_russian(drv: ShtrihDriver, emu: Emulator) -> None:
    emu.paper_out(before="settlement_report")
    with pytest.raises(DeviceError) as err:
        drv.settlement_report()
    assert err.value.code == ErrorCode.NO_PAPER and err.value.device_message
    assert emu.documents() == []


def test_cashier_password_cannot_take_the_settlement_report(emu: Emulator) -> None:
    # model.py: the sources send FF38 with the system administrator's password only.
    d = ShtrihDriver(emu.url, password=1, admin_password=1, timeout=5)
    d.connect()
    try:
        with pytest.raises(DeviceError) as err:
            d.settlement_report()
        assert err.value.code == ErrorCode.WRONG_PASSWORD and err.value.device_message == "Неверный пароль"
    finally:
        d.close()
    assert emu.documents() == []


@pytest.mark.parametrize("kind", list(SettlementType))
def test_every_settlement_type(drv: ShtrihDriver, emu: Emulator, kind: SettlementType) -> None:
    drv.open_shift()
    drv.cash_in(50000)  # returns and purchases pay cash out of the drawer
    corr = Correction(by_order=True, date=dt.date(2026, 1, 15), order_number="12-34") if "correction" in kind else None
    res = drv.sell(receipt(kind, correction=corr))
    doc = emu.documents()[-1]
    assert doc["receipt_type"] == kind.value
    assert (res.fiscal_document_number, res.fiscal_sign, res.total) == (doc["fd_number"], doc["fiscal_sign"], 10000)
    assert res.receipt_number == doc["receipt_number"] == 1 and res.shift_number == 1
    if corr:
        # 1178 and 1179 travel inside the composite 1174, kept whole as the ATOL core keeps it.
        assert doc["attributes"] == {"1173": 1, "1174": {"1178": "2026-01-15", "1179": "12-34"}}


def test_receipt_document_reads_back_a_receipt_by_its_fd(drv: ShtrihDriver, emu: Emulator) -> None:
    """An FD an operator gave for a receipt settled by hand: read from the FN and matched (FF0A
    has no receipt or shift number; the FN's last document takes them from FF40)."""
    drv.open_shift()
    first = drv.sell(receipt(amount=10000))
    last = drv.sell(receipt(amount=25000))
    older = drv.receipt_document(first.fiscal_document_number, receipt(amount=10000))
    assert (older.fiscal_document_number, older.fiscal_sign, older.total) == (
        first.fiscal_document_number, first.fiscal_sign, 10000)
    assert (older.receipt_number, older.shift_number) == (0, 0)
    newest = drv.receipt_document(last.fiscal_document_number, receipt(amount=25000))
    assert (newest.fiscal_sign, newest.receipt_number, newest.shift_number) == (last.fiscal_sign, 2, 1)
    refusals = {
        (first.fiscal_document_number, receipt(amount=25000)): "другой чек",
        (first.fiscal_document_number, receipt(SettlementType.SELL_RETURN, amount=10000)): "другой чек",
        (1, receipt(amount=10000)): "не чек",  # the shift-open report
        (last.fiscal_document_number + 1, receipt(amount=25000)): "нет документа",
    }
    for (fd, which), words in refusals.items():
        with pytest.raises(OutcomeUnknown, match=words):
            drv.receipt_document(fd, which)


def test_positions_taxes_tags_payments(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    positions = tuple(
        Position(f"Позиция {rate.value}", 1000, Decimal(1), 1000, rate) for rate in VatRate
    ) + (
        Position("Доставка", 30000, Decimal("0.5"), 15000, VatRate.VAT22, payment_method=PaymentMethod.ADVANCE,
                 payment_object=4, unit=11, department=3),
        # A spread discount: 3 × 13.33 = 39.99, amount 39.00.
        Position("Скидка", 1333, Decimal(3), 3900, VatRate.VAT10),
    )
    total = sum(p.amount for p in positions)
    payments = (Payment(PaymentType.CASH, 10000), Payment(PaymentType.ELECTRONIC, 5000),
                Payment(PaymentType.PREPAID, 1000), Payment(PaymentType.CREDIT, 1000),
                Payment(PaymentType.OTHER, total - 17000))
    r = Receipt(type=SettlementType.SELL, positions=positions, payments=payments, customer_contact="+79001234567",
                taxation=TaxationSystem.USN_INCOME, cashier_name="Петров", header=(TextLine("Магазин"),),
                footer=(TextLine("Спасибо!", align="center"),))
    res = drv.sell(r)
    doc = emu.documents()[-1]
    assert res.total == doc["total"] == total
    assert [i["tax"] for i in doc["items"][:len(VatRate)]] == [rate.value for rate in VatRate]
    delivery = doc["items"][len(VatRate)]
    assert delivery["payment_method"] == 3 and delivery["payment_object"] == 4 and delivery["unit"] == 11
    assert delivery["quantity"] == "0.5" and delivery["section"] == 3
    assert doc["items"][-1]["amount"] == 3900
    assert {p["type"]: p["amount"] for p in doc["payments"]} == {
        "cash": 10000, "electronic": 5000, "prepaid": 1000, "credit": 1000, "other": total - 17000}
    assert doc["customer_contact"] == "+79001234567"
    assert doc["attributes"]["1055"] == TaxationSystem.USN_INCOME and doc["attributes"]["1021"] == "Петров"


def test_an_internet_sale_writes_1187_and_1125_by_ff0c(drv: ShtrihDriver, emu: Emulator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # fiscal-rules.md §5: 1008, 1187 (the site) and 1125; receipt tags go by FF0C before FF45 (§4.6).
    sent: list[bytes] = []
    command = ShtrihDriver.command

    def record(self: ShtrihDriver, name: str, /, **kw: object) -> dict:
        if name == "write_tlv":
            sent.append(kw["tlv"])  # type: ignore[arg-type]
        return command(self, name, **kw)

    monkeypatch.setattr(ShtrihDriver, "command", record)
    drv.open_shift()
    drv.sell(receipt(customer_contact="a@b.ru", settlement_place="сайт.рф", internet=True))
    assert sent == [H("F0 03 06 00") + b"a@b.ru", H("A3 04 07 00 F1 E0 E9 F2 2E F0 F4"), H("65 04 01 00 01")]
    doc = emu.documents()[-1]
    assert doc["customer_contact"] == "a@b.ru" and doc["attributes"] == {"1187": "сайт.рф", "1125": 1}


def test_test_mode_forms_nothing(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    res = drv.sell(receipt(test_mode=True))
    assert res.test_mode and res.fiscal_document_number == 0
    assert [d["type"] for d in emu.documents()] == ["open_shift"] and not emu.state.receipt_open


def test_cash_and_printing(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    assert drv.cash_in(15000).total == 15000
    # No FN document for cash (model.DOC_CASH): FD 0, the operating document number instead.
    out = drv.cash_out(5000)
    assert (out.fiscal_document_number, out.receipt_number) == (0, 3) and emu.state.fd_number == 1
    assert drv.totals().cash_in_drawer == 10000
    with pytest.raises(DeviceError) as err:
        drv.cash_out(10001)
    assert err.value.code == ErrorCode.NO_CASH and err.value.device_message == "Не хватает наличности в кассе"
    drv.print_text([TextLine("Привет", bold=True), TextLine("справа", align="right")])
    drv.print_text([])
    drv.reprint_last()
    drv.cancel_receipt()  # nothing open: no-op
    drv.open_drawer()
    assert emu.device.drawer_openings == 1


@pytest.mark.parametrize("documents", [True, False], ids=["fn-document", "no-fn-document"])
def test_cash_settled_by_the_operating_document_number(drv: ShtrihDriver, emu: Emulator, documents: bool) -> None:
    """Cash in/out on a device that forms an FN document for them (the emulator's core) and on
    one that forms none (model.DOC_CASH): the result, and the counter a lost answer is settled by."""
    emu.shtrih.cash_documents = documents
    drv.open_shift()
    before = drv.document_counter()
    start = CashBefore.decode(before)
    assert start == (emu.shtrih.document_number(), 0)
    assert drv.counted_result(before, 700, kind="cash_in") is None
    done = drv.cash_in(700)
    assert CashBefore.decode(drv.document_counter()) == ((start.number + 1) & 0xFFFF, 700)
    settled = drv.counted_result(before, 700, kind="cash_in")
    assert settled is not None and settled.total == 700
    if documents:
        assert done.fiscal_document_number == settled.fiscal_document_number == emu.state.fd_number == 2
    else:
        assert done.fiscal_document_number == settled.fiscal_document_number == 0
        assert done.receipt_number == settled.receipt_number == start.number + 1
        assert emu.state.fd_number == 1  # the shift-open report only
    assert drv.counted_result(drv.document_counter(), 700, kind="cash_in") is None
    assert drv.cash_out(200).total == 200 and drv.totals().cash_in_drawer == 500


def test_counted_result_by_how_far_the_number_moved(drv: ShtrihDriver, emu: Emulator) -> None:
    """A lost cash answer is settled by 0x11's number since the job's "before": not moved →
    None (not done), moved by one → the cash document (done), moved by more → OutcomeUnknown
    for the operator (other documents were formed too: nobody can tell from the number)."""
    drv.open_shift()
    before = drv.document_counter()
    number = CashBefore.decode(before).number
    assert drv.counted_result(before, 1500, kind="cash_in") is None
    assert emu.state.cash == 0
    drv.cash_in(1500)
    done = drv.counted_result(before, 1500, kind="cash_in")
    assert done is not None and (done.fiscal_document_number, done.total) == (0, 1500)
    assert done.receipt_number == emu.shtrih.document_number() == number + 1
    # One more document besides the job's (a cash-out at the keyboard): +2.
    drv.cash_out(300)
    with pytest.raises(OutcomeUnknown) as err:
        drv.counted_result(before, 1500, kind="cash_in")
    message = err.value.message
    assert message.startswith("внесение 15.00 ₽: по ККТ нельзя установить, выполнена ли операция")
    assert f"был {number}, а сейчас {number + 2}" in message and "на 2 документа вместо одного" in message
    assert "Сервис её не повторяет" in message and "решите сами" in message
    drv.cash_in(100)
    drv.cash_in(100)
    drv.cash_in(100)
    with pytest.raises(OutcomeUnknown) as err:
        drv.counted_result(before, 300, kind="cash_out")
    assert err.value.message.startswith("выплата 3.00 ₽") and "на 5 документов вместо одного" in err.value.message


def test_counted_result_counts_modulo_the_two_byte_number(drv: ShtrihDriver, emu: Emulator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """0x11's number is 2 bytes: 0xFFFF → 0 is a move by one; a number below "before" did not
    move forward at all, and the operator is told so."""
    drv.open_shift()
    drv.cash_in(400)
    monkeypatch.setattr(drv, "operating_number", lambda: 0)
    assert drv.counted_result(0xFFFF, 400, kind="cash_in") is not None
    assert drv.counted_result(CashBefore(0xFFFF, 0).encode(), 400, kind="cash_in") is not None
    assert drv.counted_result(0, 400, kind="cash_in") is None
    monkeypatch.setattr(drv, "operating_number", lambda: 1)
    with pytest.raises(OutcomeUnknown) as err:
        drv.counted_result(0xFFFF, 400, kind="cash_in")
    assert "на 2 документа вместо одного" in err.value.message
    monkeypatch.setattr(drv, "operating_number", lambda: 5)
    with pytest.raises(OutcomeUnknown) as err:
        drv.counted_result(7, 400, kind="cash_out")
    assert "был 7, а сейчас 5 — стал меньше, чем был" in err.value.message


def test_one_document_that_is_not_the_cash_job_is_left_to_the_operator(drv: ShtrihDriver, emu: Emulator) -> None:
    """The number moved by exactly one, but the drawer not by the job's amount: the one document
    was someone else's (a cash-out at the keyboard while the answer was lost) and the job may
    never have run. The number alone took it for the job's: "done" for cash never taken in."""
    drv.open_shift()
    drv.cash_in(5000)
    before = drv.document_counter()
    drv.cash_out(300)  # at the keyboard; the job's cash-in of 15.00 never reached the device
    with pytest.raises(OutcomeUnknown) as err:
        drv.counted_result(before, 1500, kind="cash_in")
    message = err.value.message
    assert message.startswith("внесение 15.00 ₽: по ККТ нельзя установить, выполнена ли операция")
    assert "наличных в ККТ было 50.00 ₽, после неё было бы 65.00 ₽, а сейчас 47.00 ₽" in message
    # The same document as the job's own cash-out of 3.00 is the job's.
    done = drv.counted_result(before, 300, kind="cash_out")
    assert done is not None and done.total == 300
    # A "before" journalled by a version that kept the number alone is settled by the number.
    assert drv.counted_result(CashBefore.decode(before).number, 1500, kind="cash_in") is not None


def test_cash_before_keeps_the_number_and_the_drawer_in_one_integer() -> None:
    for number, drawer in [(0, 0), (0xFFFF, 0), (17, 123_456_78), (0xFFFF, (1 << 46) - 1)]:
        value = CashBefore(number, drawer).encode()
        assert CashBefore.decode(value) == (number, drawer) and value < 1 << 63
    # No drawer, or one the journal's integer cannot hold: the number alone, as before.
    assert CashBefore(42, None).encode() == 42 and CashBefore.decode(42) == (42, None)
    assert CashBefore.decode(CashBefore(42, 1 << 46).encode()) == (42, None)


def test_cancel_an_open_receipt(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    drv.command("open_receipt", receipt_type=0)
    assert drv.status().receipt_open
    drv.cancel_receipt()
    assert not drv.status().receipt_open and not emu.state.receipt_open
    last = drv.last_document()
    assert last.fd_number == 1 and not last.receipt_open


def test_shift_closed_and_expired_are_refused(drv: ShtrihDriver, emu: Emulator) -> None:
    with pytest.raises(DeviceError) as err:
        drv.sell(receipt())
    assert err.value.code == ErrorCode.SHIFT_CLOSED and not emu.state.receipt_open
    drv.open_shift()
    emu.advance_clock(25)
    assert drv.shift_status().state == "expired" and drv.status().mode == model.Mode.SHIFT_EXPIRED
    with pytest.raises(DeviceError) as err:
        drv.sell(receipt())
    assert err.value.code == ErrorCode.SHIFT_EXPIRED and "24" in err.value.message
    drv.close_shift()
    drv.open_shift()
    assert drv.sell(receipt()).shift_number == 2


def test_payments_short_of_the_total_cancel_the_receipt(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    with pytest.raises(DeviceError) as err:
        drv.sell(receipt(paid=9999))
    assert err.value.code == ErrorCode.PAYMENTS_LESS_THAN_TOTAL and err.value.step == "закрытие чека"
    assert not emu.state.receipt_open and len(emu.documents()) == 1


def test_device_total_differing_from_the_document_is_not_closed(drv: ShtrihDriver, emu: Emulator,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    drv.open_shift()
    real = emu_device.HANDLERS["subtotal"]
    monkeypatch.setitem(emu_device.HANDLERS, "subtotal", lambda dev, p: {**real(dev, p), "subtotal": 9999})
    with pytest.raises(DeviceError) as err:
        drv.sell(receipt())
    assert "не равен итогу документа" in err.value.message
    assert not emu.state.receipt_open and len(emu.documents()) == 1


def test_wrong_password(emu: Emulator) -> None:
    d = ShtrihDriver(emu.url, password=31, timeout=5)
    d._link.open()
    with pytest.raises(DeviceError) as err:
        d.command("short_status")
    assert err.value.code == ErrorCode.WRONG_PASSWORD and err.value.device_message == "Неверный пароль"
    d.close()


def test_cashier_password_cannot_take_a_z_report(emu: Emulator) -> None:
    d = ShtrihDriver(emu.url, password=1, admin_password=1, timeout=5)
    d.connect()
    with pytest.raises(DeviceError) as err:
        d.x_report()
    assert err.value.code == ErrorCode.WRONG_PASSWORD
    d.close()


def test_paper_out_before_the_receipt(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    emu.paper_out(before="operation")
    with pytest.raises(DeviceError) as err:
        drv.sell(receipt())
    assert err.value.code == ErrorCode.NO_PAPER and "позиция 1" in err.value.step
    assert not emu.state.receipt_open and len(emu.documents()) == 1
    assert not drv.status().paper_present
    emu.paper_in()
    assert drv.sell(receipt()).printed


def test_paper_out_while_printing_then_continue(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    emu.paper_out(before="close_receipt_ext")
    res = drv.sell(receipt())
    assert not res.printed and res.fiscal_document_number == 2  # fiscalised, copy owed
    st = drv.status()
    assert st.submode == model.Submode.PAPER_OUT_ACTIVE and not st.paper_present
    with pytest.raises(DeviceError):
        drv.reprint_last()  # still no paper
    emu.paper_in()
    assert drv.status().submode == model.Submode.AFTER_PAPER_OUT
    drv.reprint_last()  # 0xB0 continues the interrupted document
    assert drv.status().submode == 0 and not emu.state.print_pending


def test_submode_3_is_continued_by_the_wait(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    emu.paper_out(before="close_receipt_ext")
    drv.sell(receipt())
    emu.paper_in()
    # The next printing command meets 0x58 "waiting for 0xB0": the driver sends 0xB0 and goes on.
    drv.print_text([TextLine("после замены бумаги")])
    assert not emu.state.print_pending


def test_classic_fallback_when_ff46_is_not_supported(drv: ShtrihDriver, emu: Emulator,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(emu_device.HANDLERS, "operation")
    drv.open_shift()
    res = drv.sell(receipt(vat=VatRate.VAT10, pay=PaymentType.ELECTRONIC))
    doc = emu.documents()[-1]
    assert res.fiscal_document_number == doc["fd_number"] and doc["items"][0]["tax"] == "vat10"
    assert doc["payments"] == [{"type": "electronic", "amount": 10000}]
    with pytest.raises(DeviceError):
        drv.sell(receipt(vat=VatRate.VAT22))  # no classic tax group for 22 %
    assert not emu.state.receipt_open


def test_busy_answer_is_retried(drv: ShtrihDriver, emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = emu_device.HANDLERS["short_status"]

    def busy_once(dev, p):
        calls.append(1)
        if len(calls) == 1:
            raise emu_device.Fault(ErrorCode.PRINTING_PREVIOUS)
        return real(dev, p)

    monkeypatch.setitem(emu_device.HANDLERS, "short_status", busy_once)
    assert drv.command("short_status")["mode"] == 4 and len(calls) == 2


def test_lost_answer_is_read_back_with_enq(drv: ShtrihDriver, emu: Emulator) -> None:
    drv.open_shift()
    before = drv.last_document().fd_number
    emu.drop_after_tasks(1)  # 0x8D (the driver knows the FD number): its answer is lost
    with pytest.raises(LinkError):
        drv.sell(receipt())
    drv.close()
    drv.connect()  # ENQ → ACK: the device sends the 0x8D answer it kept
    assert [k[:2] for k in drv._link.kept] == [bytes.fromhex("8D 00")]
    assert drv.last_document().receipt_open
    drv.cancel_receipt()
    # Now lose the FF45 answer: the device keeps it, the next connection reads it with ENQ.
    emu.drop_after_tasks(4)  # 8D, FF46, 89, FF45 (FF01 was read by last_document above)
    with pytest.raises(LinkError):
        drv.sell(receipt())
    drv.close()
    drv.connect()
    assert drv._link.kept[-1][:3] == bytes.fromhex("FF 45 00")
    last = drv.last_document()
    assert last.fd_number == before + 1 and last.result and last.result.total == 10000
    assert not drv._link.kept  # compared with the FN's document and consumed
    assert [d["type"] for d in emu.documents()].count("receipt") == 1


def test_corrupt_answer_and_filler(drv: ShtrihDriver, emu: Emulator) -> None:
    emu.corrupt_next_byte()
    assert drv.status().mode == 4  # NAK + ENQ: the device sends it again
    assert drv.stats.bad_packets == 1
    emu.send_filler()
    drv.open_shift()
    assert drv.sell(receipt()).fiscal_document_number == 2


def test_half_frame_is_a_lost_link(drv: ShtrihDriver, emu: Emulator) -> None:
    emu.drop_mid_frame()
    with pytest.raises(LinkError):
        drv.status()
    assert not drv.connected


def test_power_off_and_second_client(emu: Emulator, drv: ShtrihDriver,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The refusal comes as soon as the emulator's accept thread runs. On a loaded machine that
    # once took longer than the link's whole ENQ wait (ENQ_ATTEMPTS × CONTROL_TIMEOUT = 3 s; the
    # driver's own timeout does not govern it), and ENQ timed out instead of the refusal.
    other = ShtrihDriver(emu.url, timeout=10)
    with monkeypatch.context() as patched, pytest.raises(DeviceBusy):
        patched.setattr(model, "CONTROL_TIMEOUT", 20.0)
        other.connect()
    emu.power_off()
    with pytest.raises(LinkError):
        drv.status()
    drv.close()
    with pytest.raises(LinkError):
        drv.connect()
    emu.power_on()
    drv.connect()
    assert drv.status().mode == 4


def test_no_device() -> None:
    with socket.socket() as s:
        # Bound and not listening for the whole test: the connection is refused, and no other
        # process can take the port meanwhile.
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(LinkError):
            ShtrihDriver(f"socket://127.0.0.1:{port}", timeout=1).connect()


def test_service_operations_are_refused_in_russian(drv: ShtrihDriver) -> None:
    for op in (drv.reset_summary, drv.tech_reset):
        with pytest.raises(DeviceError) as err:
            op()
        assert err.value.code == ErrorCode.NOT_SUPPORTED and "не поддерживается" in err.value.message

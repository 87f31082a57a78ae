"""The ATOL driver against the emulator (127.0.0.1, free port), every command and error path."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

import kktapp.atol.driver as driver_module
from kktapp.atol import commands, model, taskbuf
from kktapp.atol.driver import AtolDriver, step
from kktapp.atol.emulator import Emulator, handlers
from kktapp.atol.emulator.device import DeviceFault
from kktapp.atol.errors import ErrorCode
from kktapp.atol.framing import encode_packet
from kktapp.atol.link import Link, mask_secrets
from kktapp.device import Totals
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
from kktapp.errors import DeviceBusy, DeviceError, LinkError, NotSent, TaxationNotRegistered


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh in-memory emulator with no latency."""
    with Emulator() as e:
        yield e


@pytest.fixture
def driver(emu: Emulator) -> Iterator[AtolDriver]:
    """A connected driver; closed after the test."""
    d = AtolDriver(emu.url, timeout=5.0)
    d.connect()
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def wire_adds(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The command bytes (code first) of every task the driver's link Adds, in order."""
    sent: list[bytes] = []
    original = Link.send

    def record(self: Link, payloads: list[bytes]) -> list[int]:
        sent.extend(p[5:] for p in payloads if p[0] == 0xC1)
        return original(self, payloads)

    monkeypatch.setattr(Link, "send", record)
    return sent


@pytest.fixture
def shift(driver: AtolDriver) -> AtolDriver:
    """A driver whose device has an open shift and some cash."""
    driver.open_shift()
    driver.cash_in(100_000)
    return driver


def pos(name: str = "Молоко", price: int = 8990, qty: str = "1", amount: int | None = None, **kw) -> Position:
    quantity = Decimal(qty)
    if amount is None:
        amount = int((Decimal(price) * quantity).to_integral_value())
    return Position(name=name, price=price, quantity=quantity, amount=amount, vat=kw.pop("vat", VatRate.VAT22), **kw)


def receipt(*positions: Position, paid: int | None = None, pay: PaymentType = PaymentType.CASH, **kw) -> Receipt:
    positions = positions or (pos(),)
    total = sum(p.amount for p in positions)
    return Receipt(type=kw.pop("type", SettlementType.SELL), positions=positions,
                   payments=kw.pop("payments", (Payment(pay, total if paid is None else paid),)), **kw)


# --------------------------------------------------------------------------- queries


def test_connect_status_and_info(driver: AtolDriver, emu: Emulator):
    st = driver.status()
    assert st.mode == 0 and not st.receipt_open and st.paper_present and st.fiscal
    assert st.serial == emu.state.serial
    info = driver.device_info()
    assert info.serial == "00106201273705"
    assert info.model_code == 62 and info.model_name == "АТОЛ 55Ф" and info.protocol == 3
    assert info.firmware == "5.17.7000"  # [S Z] major.minor.build
    shift = driver.shift_status()
    assert shift.state == "closed" and shift.opened_at is None
    fn = driver.fn_status()
    assert fn.fn_number == emu.state.fn_number and fn.last_fd_number == 0 and fn.valid_until is not None
    assert driver.totals().cash_in_drawer == 0
    assert driver.last_document().fd_number == 0


def test_an_odd_byte_in_3f_does_not_stop_status(driver: AtolDriver, monkeypatch: pytest.MonkeyPatch):
    # The receipt sum is BCD for K and binary for Z: a value that is not BCD reads as 0.
    original = handlers.HANDLERS["status"]
    monkeypatch.setitem(handlers.HANDLERS, "status",
                        lambda device, cmd, p: original(device, cmd, p)[:23] + bytes.fromhex("00 00 00 01 2A") +
                        original(device, cmd, p)[28:])
    st = driver.status()
    assert st.receipt_sum == 0 and not st.receipt_open


def test_status_reads_the_serial_register_once_per_connection(driver: AtolDriver, emu: Emulator):
    # connect() read register 22 with its status; later status reads are 3F + 45 + 0x35 only.
    before = driver.stats.tasks
    assert driver.status().serial == "00106201273705"
    assert driver.stats.tasks - before == 3
    driver.close()
    driver.connect()
    assert driver.status().serial == "00106201273705"


def test_quick_status_is_one_task_and_agrees_with_the_full_status(driver: AtolDriver, emu: Emulator):
    # The owner's look before a document after an idle spell: 3F alone, not 3F + 45 + A4 10.
    def both() -> tuple:
        full = driver.status()
        before = driver.stats.tasks
        quick = driver.quick_status()
        assert driver.stats.tasks - before == 1
        assert abs(quick.datetime - full.datetime) <= dt.timedelta(minutes=1)
        return (full.shift_open, full.receipt_open), (quick.shift_open, quick.receipt_open)

    full, quick = both()
    assert full == quick == (False, False)
    driver.open_shift()
    full, quick = both()
    assert full == quick == (True, False)
    driver.execute([step("open_receipt", receipt_type=1)])
    full, quick = both()
    assert full == quick == (True, True)
    driver.cancel_receipt()


def test_serial_falls_back_to_status_digits_when_register_refused(
        emu: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    # A device without register 22 answers it as an unknown command: 3F's 8 digits, as they are.
    monkeypatch.delitem(handlers.HANDLERS, "serial_number")
    with caplog.at_level(logging.WARNING, logger="kktapp.atol.driver"), AtolDriver(emu.url) as d:
        assert d.device_info().serial == "01273705"
        assert d.device_info().model_code == 62
        before = d.stats.tasks
        assert d.status().serial == "01273705"
        assert d.stats.tasks - before == 3  # the refusal is remembered: no register read per status
    assert "refused the serial number register" in caplog.text


def test_connect_leaves_registration_mode(emu: Emulator):
    with AtolDriver(emu.url) as d:
        d.command("enter_mode", mode=1, password=30)
    with AtolDriver(emu.url) as d:
        assert d.status().mode == 0


def test_shift_cash_and_reports(driver: AtolDriver, emu: Emulator):
    opened = driver.open_shift()
    assert opened.fiscal_document_number == 1 and opened.shift_number == 1 and opened.receipt_number == 0
    shift = driver.shift_status()
    assert shift.state == "open" and shift.number == 1 and shift.opened_at is not None
    assert driver.cash_in(5000).total == 5000
    out = driver.cash_out(2000)
    # No FN document (model.DocType.CASH_IN): the emulator's log is not taken for one.
    assert out.fiscal_document_number == 0 and out.fiscal_sign == "" and out.total == 2000
    assert driver.totals().cash_in_drawer == 3000
    assert [d["type"] for d in emu.documents()] == ["open_shift"]
    assert [d["type"] for d in emu.cash_operations()] == ["cash_in", "cash_out"]
    driver.x_report()
    closed = driver.close_shift()
    assert closed.fiscal_document_number == 2 and closed.shift_number == 1
    assert driver.shift_status().state == "closed"
    assert emu.documents()[-1]["type"] == "close_shift"


def test_report_waits_are_at_least_k_s():
    # [S K] AtolFRConstants.h Timeouts: ZReportNoAnswer 120000 ms, XReportNoAnswer 30000 ms;
    # C and K poll every 500 ms (model.REPORT_POLL may be shorter, never longer).
    assert model.REPORT_WAIT[0x5A] >= 120 and model.REPORT_WAIT[0x67] >= 30
    assert model.TIMEOUTS[0x5A] >= 120 and model.TIMEOUTS[0x67] >= 30
    assert 0 < model.REPORT_POLL <= 0.5


@pytest.mark.parametrize("report", ["x_report", "close_shift"])
def test_an_unanswered_poll_during_a_report_is_not_a_link_error(driver: AtolDriver, emu: Emulator,
                                                                monkeypatch: pytest.MonkeyPatch, report: str):
    # [S K] K polls on through 45 queries the device leaves unanswered while it makes the report.
    driver.open_shift()
    original = handlers.HANDLERS["short_status"]
    unanswered = []

    def drop_while_busy(device, cmd, p):
        if device.busy() and not unanswered:
            unanswered.append(True)
            emu.drop_after_tasks(1)  # this 45 runs, its answer is not sent, the link closes
        return original(device, cmd, p)

    monkeypatch.setitem(handlers.HANDLERS, "short_status", drop_while_busy)
    emu.device.z_print_seconds = emu.device.x_print_seconds = 0.5
    result = getattr(driver, report)()
    assert unanswered
    if report == "close_shift":
        assert result.fiscal_document_number == emu.documents()[-1]["fd_number"]
        assert emu.documents()[-1]["type"] == "close_shift"


CASHIER = {str(model.TAG_CASHIER_NAME): "Иванова И.И.", str(model.TAG_CASHIER_INN): "500100732259"}


def test_shift_reports_carry_the_cashier(driver: AtolDriver, emu: Emulator):
    before = driver.stats.round_trips
    driver.open_shift("Иванова И.И.", "500100732259")
    assert driver.stats.round_trips - before == 2  # the cashier rides in the same batch
    driver.cash_in(1_000)
    driver.close_shift("Иванова И.И.", "500100732259")
    driver.open_shift()
    docs = emu.documents()
    # 49 forms no FN document (model.DocType.CASH_IN); the cashier stays off the next report.
    assert [d["type"] for d in docs] == ["open_shift", "close_shift", "open_shift"]
    assert [d["type"] for d in emu.cash_operations()] == ["cash_in"]
    assert docs[0]["attributes"] == CASHIER and docs[1]["attributes"] == CASHIER
    assert "attributes" not in docs[2]


def test_a_device_refusing_the_cashier_still_opens_the_shift(driver: AtolDriver, emu: Emulator,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture):
    write = emu.device.write_attribute

    def receipt_only(tag: int, value: object) -> None:
        if emu.device.state.receipt is None:  # firmware that takes E8 only inside a receipt
            raise DeviceFault(ErrorCode.RECEIPT_CLOSED)
        write(tag, value)

    monkeypatch.setattr(emu.device, "write_attribute", receipt_only)
    result = driver.open_shift("Иванова И.И.")
    assert result.fiscal_document_number == 1 and emu.state.shift_open
    assert "attributes" not in emu.documents()[0]
    assert "refused the cashier" in caplog.text
    driver.sell(receipt(cashier_name="Иванова И.И."))
    assert emu.documents()[-1]["attributes"] == {str(model.TAG_CASHIER_NAME): "Иванова И.И."}


def test_settlement_report_is_67_9_in_mode_2_and_an_fn_document(driver: AtolDriver, emu: Emulator,
                                                                  wire_adds: list[bytes]):
    # [C A,C] 67 carries the report type; [S A] type 9 is the FISCAL settlement-state report.
    emu.device.set_unsent(2)
    result = driver.settlement_report("Иванова И.И.", "500100732259")
    assert bytes([0x67, model.REPORT_SETTLEMENT_STATE]) in wire_adds
    assert bytes([0x56, model.Mode.REPORT_X]) in [b[:2] for b in wire_adds]
    doc = emu.documents()[-1]
    assert doc["type"] == "settlement_report" and doc["attributes"] == CASHIER and doc["unsent"] == 2
    assert result.fiscal_document_number == doc["fd_number"] == 1
    assert result.fiscal_sign == doc["fiscal_sign"] and result.total == 0
    # A4 45 names it FFD document type 21.
    assert driver.read_document(1)[0] == model.DocType.CALCULATION_STATE
    # The X report (67 1) still forms no document.
    driver.x_report()
    assert len(emu.documents()) == 1


def test_settlement_report_without_paper_is_a_device_error(driver: AtolDriver, emu: Emulator):
    emu.device.paper = False
    with pytest.raises(DeviceError) as exc:
        driver.settlement_report()
    assert exc.value.code == ErrorCode.NO_PAPER and "бумаг" in exc.value.message
    assert emu.documents() == []


def test_open_shift_twice_is_a_device_error(shift: AtolDriver):
    with pytest.raises(DeviceError) as info:
        shift.open_shift()
    assert info.value.code == ErrorCode.SHIFT_OPEN and info.value.step == "открытие смены"


def test_cash_is_not_reported_as_the_last_fn_document(shift: AtolDriver, emu: Emulator):
    """49/4F form no FN document (model.DocType.CASH_IN; the emulator forms none either): the FD
    number stays at the last receipt, and that receipt must not come back as the cash result."""
    sale = shift.sell(receipt())
    for cash in (shift.cash_in(5000), shift.cash_out(3000)):
        assert (cash.fiscal_document_number, cash.fiscal_sign, cash.receipt_number) == (0, "", 0)
        assert cash.shift_number == sale.shift_number and cash.fn_number == sale.fn_number
    assert (shift.cash_in(5000).total, shift.cash_out(3000).total) == (5000, 3000)
    assert emu.state.fd_number == sale.fiscal_document_number
    assert shift.totals().cash_in_drawer == 100_000 + 8990 + 2 * (5000 - 3000)


def test_cash_out_beyond_the_drawer(shift: AtolDriver):
    with pytest.raises(DeviceError) as info:
        shift.cash_out(10_000_000)
    assert info.value.code == ErrorCode.NO_CASH


def test_a_card_refund_does_not_depend_on_the_drawer(shift: AtolDriver, emu: Emulator):
    # [S C] EB flag 0x02: the device does not check the drawer for the position (model.py).
    assert emu.state.cash == 100_000
    r = receipt(pos("A", 500_000), type=SettlementType.SELL_RETURN, pay=PaymentType.ELECTRONIC)
    assert shift.sell(r).total == 500_000 and emu.documents()[-1]["receipt_type"] == "sell_return"


# --------------------------------------------------------------------------- receipts


def test_sell_pipelined(shift: AtolDriver, emu: Emulator):
    r = receipt(
        pos("Молоко", 8990, "2"),
        pos("Хлеб «Бородинский» №1", 5000, "0.5", vat=VatRate.VAT10, payment_object=4, unit=11,
            payment_method=PaymentMethod.PREPAYMENT),
        customer_contact="buyer@example.com", cashier_name="Иванова", header=(TextLine("Магазин", bold=True),),
        footer=(TextLine("Спасибо!", align="center"),),
    )
    before = shift.stats.round_trips
    result = shift.sell(r)
    # One write for the whole receipt; registers 0x33/0x35 and A4 30 in the same batch give
    # the new document (no timing involved).
    assert shift.stats.round_trips - before == 1
    doc = emu.documents()[-1]
    assert doc["type"] == "receipt" and doc["receipt_type"] == "sell" and doc["total"] == r.total == 20480
    assert result.fiscal_document_number == doc["fd_number"] and result.fiscal_sign == doc["fiscal_sign"]
    assert result.receipt_number == 1 and result.shift_number == 1 and result.total == 20480 and result.printed
    assert result.fn_number == emu.state.fn_number
    first, second = doc["items"]
    assert first == {"name": "Молоко", "price": 8990, "quantity": "2", "amount": 17980, "tax": "vat22"}
    assert second["name"] == 'Хлеб "Бородинский" №1' and second["tax"] == "vat10"
    assert (second["payment_object"], second["unit"], second["payment_method"]) == (4, 11, 2)
    assert doc["customer_contact"] == "buyer@example.com"
    assert doc["attributes"][str(model.TAG_CASHIER_NAME)] == "Иванова"
    assert shift.last_document().result == result


def test_positions_go_ea_tags_eb_with_128_byte_names(shift: AtolDriver, emu: Emulator):
    # [C Z,C,K] FFD 1.05+: EA, the position's tags, EB carrying the whole name (up to 128 bytes).
    long = ("Сыр Российский выдержанный, весовой, производитель ООО Молочные реки № 1; " * 2)[:128]
    r = receipt(pos(long, 1000, payment_object=4, unit=11), pos("Хлеб", 300))
    names = [s.command.name for s in shift.receipt_steps(r)]
    assert names[:7] == ["open_receipt", "begin_position", "write_attribute", "end_position",
                         "begin_position", "end_position", "close_receipt"]
    shift.sell(r)
    items = emu.documents()[-1]["items"]
    assert [i["name"] for i in items] == [long, "Хлеб"]
    assert (items[0]["payment_object"], items[0]["unit"]) == (4, 11)


def test_ffd_1_0_device_gets_e6_and_long_names_as_tag_1030():
    long = ("Сыр Российский выдержанный, весовой, производитель ООО Молочные реки № 1; " * 2)[:128]
    exact = "Ж" * commands.E6_NAME_BYTES
    with Emulator(ffd="1.0") as emu, AtolDriver(emu.url) as d:
        assert d.ffd == model.FFD_1_0
        d.open_shift()
        r = receipt(pos(long, 1000, payment_object=4), pos(exact, 500), pos("Хлеб", 300))
        steps = d.receipt_steps(r)
        e6 = [i for i, s in enumerate(steps) if s.command.name == "register_position"]
        assert len(e6) == 3 and not any(s.command.name in ("begin_position", "end_position") for s in steps)
        after = steps[e6[0] + 1]
        assert after.command.name == "write_attribute" and after.params["tag"] == model.TAG_ITEM_NAME
        assert steps[e6[0] + 2].params["tag"] == model.TAG_PAYMENT_OBJECT
        d.sell(r)
        assert [i["name"] for i in emu.documents()[-1]["items"]] == [long, exact, "Хлеб"]


@pytest.mark.parametrize("kind", [SettlementType.SELL_RETURN_CORRECTION, SettlementType.BUY_RETURN_CORRECTION])
def test_ffd_1_05_return_corrections_never_reach_the_device(kind):
    """FFD 1.05 corrections are of 1054 = 1 or 3 only (fiscal-rules.md §2): the others are refused before 92."""
    corr = Correction(by_order=False, date=dt.date(2026, 2, 1))
    with Emulator(ffd="1.05") as emu, AtolDriver(emu.url) as d:
        assert d.ffd == model.FFD_1_05
        d.open_shift()
        documents = len(emu.documents())
        with pytest.raises(NotSent) as info:
            d.sell(receipt(type=kind, correction=corr, pay=PaymentType.ELECTRONIC))
        assert "ФФД 1.05" in info.value.message and info.value.to_dict()["field"] == "type"
        assert len(emu.documents()) == documents and not d.status().receipt_open
        d.sell(receipt(type=SettlementType.SELL_CORRECTION, correction=corr))
        assert emu.documents()[-1]["receipt_type"] == "sell_correction"


def test_ffd_1_2_device_refuses_e6_and_1_0_refuses_ea():
    with Emulator() as emu, AtolDriver(emu.url) as d:
        assert d.ffd == model.FFD_1_2
        d.open_shift()
        d.execute([step("enter_mode", mode=1, password=30)]) if d.status().mode != 1 else None
        d.execute([step("open_receipt", receipt_type=1)])
        with pytest.raises(DeviceError) as info:
            d.execute([step("register_position", name="A", price=100, quantity=Decimal(1), tax=1)])
        assert info.value.code == ErrorCode.NOT_SUPPORTED


def test_position_amount_differs_from_price_times_quantity(shift: AtolDriver, emu: Emulator):
    # A receipt discount spread into positions: amount below price × quantity, and one above.
    r = receipt(pos("A", 1000, "3", amount=2900), pos("B", 333, "1", amount=334))
    assert shift.sell(r).total == 3234
    items = emu.documents()[-1]["items"]
    assert [i["amount"] for i in items] == [2900, 334]
    # [C C] the device takes price × quantity − sum for a discount and prints it; [U] a markup.
    assert (items[0]["discount"], items[1]["markup"]) == (100, 1)


@pytest.mark.parametrize("kind", list(SettlementType))
def test_every_settlement_type(shift: AtolDriver, emu: Emulator, kind: SettlementType):
    correction = None
    if kind.is_correction:
        correction = Correction(by_order=True, date=dt.date(2026, 2, 3), order_number="№ 12")
    result = shift.sell(receipt(type=kind, correction=correction))
    doc = emu.documents()[-1]
    assert doc["receipt_type"] == kind.value and result.fiscal_document_number == doc["fd_number"]
    if correction:
        attrs = doc["attributes"]
        assert attrs[str(model.TAG_CORRECTION_TYPE)] == 1
        # 1178 and 1179 inside the composite 1174 (model.py, correction receipts).
        assert attrs[str(model.TAG_CORRECTION_BASIS)] == {"1178": "2026-02-03", "1179": "№ 12"}


def test_several_payments_and_change(shift: AtolDriver, emu: Emulator):
    r = receipt(pos("A", 10000), payments=(Payment(PaymentType.ELECTRONIC, 4000), Payment(PaymentType.CASH, 10000)))
    shift.sell(r)
    doc = emu.documents()[-1]
    assert {p["type"]: p["amount"] for p in doc["payments"]} == {"electronic": 4000, "cash": 10000}
    assert doc["change"] == 4000


@pytest.mark.parametrize("answer", [
    lambda reply: b"\x55\x00\x00" + reply[2:],  # atol-real-device.md §3's 13-byte form
    lambda reply: reply[:4],  # fits no known form: logged, not used (model.py, "99 reply")
], ids=["doc-form", "unreadable"])
def test_the_payment_reply_never_fails_a_receipt(shift: AtolDriver, emu: Emulator,
                                                 monkeypatch: pytest.MonkeyPatch, answer):
    # 99 is read after 4A closed the receipt: a reply-decoding nicety must not report a
    # fiscalised receipt as a link error. The emulator answers C's 12 bytes ([C C,A]).
    original = handlers.HANDLERS["payment"]
    monkeypatch.setitem(handlers.HANDLERS, "payment", lambda device, cmd, p: answer(original(device, cmd, p)))
    r = receipt(pos("A", 10000), payments=(Payment(PaymentType.ELECTRONIC, 4000), Payment(PaymentType.CASH, 6000)))
    result = shift.sell(r)
    assert result.fiscal_document_number == emu.documents()[-1]["fd_number"] and result.total == 10000


def test_test_mode_fiscalises_nothing(shift: AtolDriver, emu: Emulator):
    before = len(emu.documents())
    result = shift.sell(receipt(test_mode=True))
    assert result.test_mode and result.fiscal_document_number == 0
    assert len(emu.documents()) == before
    assert not shift.status().receipt_open


def test_electronic_only_receipt(shift: AtolDriver, emu: Emulator):
    emu.paper_out()
    shift.sell(receipt(electronic_only=True, customer_contact="+79990001122"))
    assert emu.documents()[-1]["electronic"] is True


def test_hundred_positions(shift: AtolDriver, emu: Emulator):
    r = receipt(*[pos(f"Товар {i}", 100 + i) for i in range(100)])
    assert shift.sell(r).total == r.total
    assert len(emu.documents()[-1]["items"]) == 100


def test_not_pipelined_gives_the_same_document_with_more_round_trips(emu: Emulator):
    with AtolDriver(emu.url, pipeline=False) as d:
        d.open_shift()
        before = d.stats.round_trips
        result = d.sell(receipt(pos("A", 100), pos("B", 200)))
        assert d.stats.round_trips - before >= 7
    assert emu.documents()[-1]["total"] == result.total == 300


def test_answers_to_a_batch_are_gathered_while_several_are_due_but_not_the_results(
        monkeypatch: pytest.MonkeyPatch):
    # The device answers each Add as it takes it: reads wait GATHER_ANSWERS for the rest while
    # more than one answer is due. A slow device sends the results later, one by one: once no
    # Add answer is due, reads take what comes at once (the batch's end is not delayed).
    with Emulator(device_time=0.01) as emu, AtolDriver(emu.url) as d:
        d.open_shift()
        port = d._link._port
        assert port is not None
        lingers: list[float] = []
        read = port.read

        def recording(timeout: float, linger: float = 0.0) -> bytes:
            lingers.append(linger)
            return read(timeout, linger)

        monkeypatch.setattr(port, "read", recording)
        d.sell(receipt(pos("A", 100), pos("B", 200), pos("C", 300)))
    assert lingers[0] == driver_module.GATHER_ANSWERS
    assert set(lingers) == {0.0, driver_module.GATHER_ANSWERS} and lingers[-1] == 0.0


def test_async_results_when_the_device_is_slow():
    # With device time the emulator answers Add with A1 and pushes A6/A7 on packet ID F0.
    with Emulator(device_time=0.002) as emu, AtolDriver(emu.url) as d:
        d.open_shift()
        result = d.sell(receipt(pos("A", 100), pos("B", 200)))
        assert result.total == 300
        with pytest.raises(DeviceError) as info:
            d.sell(receipt(pos("A", 100), paid=50))
        assert info.value.code == ErrorCode.PAYMENTS_LESS_THAN_TOTAL
        assert not d.status().receipt_open
        assert d.sell(receipt(pos("C", 300))).fiscal_document_number == result.fiscal_document_number + 1


# --------------------------------------------------------------------------- receipt error paths


def test_receipt_opens_a_closed_shift_itself(driver: AtolDriver, emu: Emulator):
    # [C K] 92 opens a closed shift (no 0x9D exists): two documents, the shift report first.
    result = driver.sell(receipt())
    types = [d["type"] for d in emu.documents()]
    assert types == ["open_shift", "receipt"] and result.fiscal_document_number == 2
    assert result.shift_number == 1 and driver.status().shift_open

def test_shift_over_24_hours(shift: AtolDriver, emu: Emulator):
    emu.advance_clock(25)
    assert shift.shift_status().state == "expired"
    with pytest.raises(DeviceError) as info:
        shift.sell(receipt())
    assert info.value.code == ErrorCode.SHIFT_EXPIRED
    assert info.value.device_message == "Смена превысила 24 часа"
    shift.close_shift()
    shift.open_shift()
    assert shift.sell(receipt()).shift_number == 2


def test_no_paper_refuses_the_receipt(shift: AtolDriver, emu: Emulator):
    emu.paper_out()
    assert not shift.status().paper_present
    before = len(emu.documents())
    with pytest.raises(DeviceError) as info:
        shift.sell(receipt())
    assert info.value.code == ErrorCode.NO_PAPER and info.value.message.startswith("Нет бумаги")
    assert len(emu.documents()) == before and not shift.status().receipt_open


def test_paper_runs_out_while_closing(shift: AtolDriver, emu: Emulator, monkeypatch: pytest.MonkeyPatch):
    original = emu.device.close_receipt

    def close_without_paper(*args, **kwargs):
        emu.device.paper = False
        return original(*args, **kwargs)

    monkeypatch.setattr(emu.device, "close_receipt", close_without_paper)
    result = shift.sell(receipt())
    # Fiscalised (the FD number moved) but not printed: the result says so instead of an error.
    assert result.fiscal_document_number == emu.documents()[-1]["fd_number"] and not result.printed
    emu.paper_in()
    shift.reprint_last()


def test_payment_less_than_total(shift: AtolDriver, emu: Emulator):
    before = len(emu.documents())
    with pytest.raises(DeviceError) as info:
        shift.sell(receipt(pos("A", 10000), pos("B", 500), paid=9000))
    err = info.value
    assert err.code == ErrorCode.PAYMENTS_LESS_THAN_TOTAL and err.step == "закрытие чека"
    assert err.to_dict()["code"] == 0x72
    # The driver cancelled the receipt it had opened.
    assert emu.state.receipt is None and len(emu.documents()) == before
    assert shift.sell(receipt()).total == 8990


def test_failing_position_is_named_and_stops_the_rest(shift: AtolDriver, emu: Emulator,
                                                       monkeypatch: pytest.MonkeyPatch):
    before = len(emu.documents())
    original = handlers.HANDLERS["end_position"]

    def refuse_kefir(device, cmd, p):
        if p["name"] == "Кефир":
            raise DeviceFault(ErrorCode.BAD_PRICE)
        return original(device, cmd, p)

    monkeypatch.setitem(handlers.HANDLERS, "end_position", refuse_kefir)
    r = receipt(pos("A", 100), pos("Кефир", 100), pos("C", 100), paid=300)
    with pytest.raises(DeviceError) as info:
        shift.sell(r)
    assert info.value.step == "позиция 2: «Кефир»" and info.value.code == ErrorCode.BAD_PRICE
    assert emu.state.receipt is None and len(emu.documents()) == before


def test_a_position_below_zero_is_refused_before_anything_is_sent(shift: AtolDriver, emu: Emulator):
    # EB's sum is the position total (model.EB_SUM_IS_POSITION_TOTAL): BCD cannot carry it.
    before = len(emu.documents())
    with pytest.raises(NotSent) as info:
        shift.sell(receipt(pos("A", 100), pos("Кефир", 100, "1", amount=-50), paid=50))
    assert "позиция 2: «Кефир»" in str(info.value)
    assert emu.state.receipt is None and len(emu.documents()) == before


def test_receipt_already_open(shift: AtolDriver, emu: Emulator):
    shift.execute([step("open_receipt", receipt_type=1)])
    with pytest.raises(DeviceError) as info:
        shift.sell(receipt())
    assert info.value.code == ErrorCode.RECEIPT_OPEN
    # Not the driver's receipt: it is left for the service's recovery to decide.
    assert emu.state.receipt is not None
    assert shift.last_document().receipt_open
    shift.cancel_receipt()
    assert emu.state.receipt is None
    shift.cancel_receipt()  # nothing open: no-op


def test_wrong_mode(driver: AtolDriver):
    with pytest.raises(DeviceError) as info:
        driver.command("x_report", report_type=1)
    assert info.value.code == ErrorCode.WRONG_MODE
    assert info.value.device_message == "Команда не выполняется в этом режиме ККТ"


def test_wrong_operator_password(emu: Emulator):
    with AtolDriver(emu.url, operator_password="99") as d:
        with pytest.raises(DeviceError) as info:
            d.open_shift()
        assert info.value.code == ErrorCode.WRONG_PASSWORD and info.value.step == "вход в режим 1"
        assert info.value.device_message == "Неверный пароль"


def test_wrong_access_password(emu: Emulator):
    d = AtolDriver(emu.url, access_password="1234")
    with pytest.raises(DeviceError) as info:
        d.connect()
    assert info.value.code == ErrorCode.WRONG_PASSWORD
    assert not d.connected


def test_cashier_password_cannot_close_the_shift(emu: Emulator):
    with AtolDriver(emu.url, operator_password="3") as d:
        d.open_shift()
        with pytest.raises(DeviceError) as info:
            d.close_shift()
        assert info.value.code == ErrorCode.WRONG_PASSWORD


# --------------------------------------------------------------------------- link faults


def test_link_dropped_before_close_leaves_the_receipt_open(shift: AtolDriver, emu: Emulator):
    fd = emu.state.fd_number
    emu.drop_after_tasks(3)  # A4 30, open receipt, EA: the link drops before the close
    with pytest.raises(LinkError) as info:
        shift.sell(receipt())
    assert not isinstance(info.value, DeviceError)
    assert not shift.connected
    shift.connect()
    last = shift.last_document()
    assert last.fd_number == fd and last.receipt_open
    shift.cancel_receipt()
    assert not shift.last_document().receipt_open


def test_link_dropped_after_close_is_found_by_last_document(shift: AtolDriver, emu: Emulator):
    emu.drop_after_tasks(5)  # A4 30, 92, EA, EB and the close: fiscalised, answer lost
    with pytest.raises(LinkError):
        shift.sell(receipt())
    shift.connect()
    last = shift.last_document()
    doc = emu.documents()[-1]
    assert last.fd_number == doc["fd_number"] and not last.receipt_open
    assert last.result is not None and last.result.fiscal_sign == doc["fiscal_sign"]
    assert last.result.total == doc["total"] and last.result.receipt_number == doc["receipt_number"]


def test_link_dropped_mid_frame(driver: AtolDriver, emu: Emulator):
    emu.drop_mid_frame()
    with pytest.raises(LinkError):
        driver.status()
    driver.connect()
    assert driver.status().mode == 0


def test_corrupted_byte_is_asked_again(driver: AtolDriver, emu: Emulator):
    emu.corrupt_next_byte()
    assert driver.status().mode == 0
    assert driver.stats.bad_packets == 1 and driver.stats.resend_requests == 1


def test_second_client_is_told_the_device_is_busy(driver: AtolDriver, emu: Emulator):
    other = AtolDriver(emu.url)
    with pytest.raises(DeviceBusy):
        other.connect()
    assert driver.status().mode == 0


def test_device_switched_off(emu: Emulator):
    emu.power_off()
    with pytest.raises(LinkError) as info:
        AtolDriver(emu.url).connect()
    assert not isinstance(info.value, DeviceBusy)


# --------------------------------------------------------------------------- printing and service


def test_print_text_and_reprint(driver: AtolDriver, emu: Emulator):
    driver.print_text([TextLine("Заголовок", bold=True, double_height=True, align="center"), TextLine("$ и №")])
    with pytest.raises(DeviceError) as info:
        driver.reprint_last()
    assert info.value.code == ErrorCode.NO_DOCUMENT
    driver.open_shift()
    driver.reprint_last()
    emu.paper_out()
    with pytest.raises(DeviceError) as info:
        driver.print_text([TextLine("x")])
    assert info.value.code == ErrorCode.NO_PAPER


def test_totals_read_cash_shift_earnings_and_the_non_resettable_sum(shift: AtolDriver, emu: Emulator):
    before = shift.stats.round_trips
    assert shift.totals() == Totals(cash_in_drawer=100_000, shift_earnings=0, total_earnings=0)
    assert shift.stats.round_trips - before == 1
    shift.sell(receipt(pos("Молоко", 8990, "2")))  # приход 17 980 cash
    shift.sell(receipt(pos("Хлеб", 5000), pay=PaymentType.ELECTRONIC))  # приход 5 000
    shift.sell(receipt(pos("Молоко", 8990), type=SettlementType.SELL_RETURN))  # возврат 8 990 cash
    assert shift.totals() == Totals(cash_in_drawer=100_000 + 17_980 - 8_990, shift_earnings=22_980 - 8_990,
                                    total_earnings=22_980)
    shift.close_shift()
    # The Z report ends the shift's earnings; the non-resettable sum stays.
    assert shift.totals() == Totals(cash_in_drawer=108_990, shift_earnings=0, total_earnings=22_980)
    shift.open_shift()
    shift.sell(receipt(pos("Хлеб", 5000, "3"), type=SettlementType.SELL_RETURN))  # more out than in
    assert shift.totals().shift_earnings == -15_000
    assert shift.totals().total_earnings == 22_980


def test_service_resets(shift: AtolDriver, emu: Emulator):
    with pytest.raises(DeviceError) as info:
        shift.reset_summary()
    assert info.value.code == ErrorCode.SHIFT_OPEN
    shift.close_shift()
    assert shift.totals().cash_in_drawer == 100_000
    shift.reset_summary()
    assert shift.totals().cash_in_drawer == 0
    shift.tech_reset()
    assert shift.status().mode == 0


def test_passwords_never_reach_the_debug_log(emu: Emulator, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="kktapp.atol.link")
    with AtolDriver(emu.url, access_password="0000", operator_password="30") as d:
        d.open_shift()
    dumps = " ".join(r.getMessage() for r in caplog.records if ">>" in r.getMessage())
    assert "56 01 2a 2a 2a 2a" in dumps  # enter mode 1, password masked
    assert "00 00 00 30" not in dumps
    add = taskbuf.encode_request(taskbuf.Add(5, taskbuf.encode_task(1234, b"\x56\x01\x00\x00\x00\x30")))
    assert mask_secrets(add) == bytes.fromhex("C1 00 05") + b"**" + b"\x56\x01****"


# --------------------------------------------------------------------------- link over loop://


def test_link_serves_a_resend_request_over_loop():
    link = Link("loop://")
    link.open()
    try:
        (pid,) = link.send([b"\xc4"])
        port = link._port
        assert port is not None
        # The "device" (our own loopback) asks for packet pid again: the link resends it.
        port.write(encode_packet(pid, b""))
        assert link.receive(deadline=_soon()).data == b"\xc4"  # the original, echoed
        assert link.receive(deadline=_soon()).data == b"\xc4"  # the resent copy
        assert link.stats.resent == 1
    finally:
        link.close()


def test_link_times_out_and_refused_ports_are_link_errors():
    link = Link("loop://")
    link.open()
    with pytest.raises(LinkError):
        link.receive(deadline=_soon(0.05))
    assert not link.is_open  # a late answer must not meet the next exchange
    with pytest.raises(LinkError):
        Link("socket://127.0.0.1:1").open()


def _soon(seconds: float = 2.0) -> float:
    return time.monotonic() + seconds


# --------------------------------------------------------------------------- real-device model


def test_registration_data(driver: AtolDriver, emu: Emulator):
    # [S K] A4 43: the organisation's INN and the RNM (for the KKM Server API's INN).
    reg = driver.registration()
    assert reg.inn == handlers.ORGANISATION_INN and reg.rnm == emu.state.reg_number
    assert reg.tax_systems == emu.device.tax_systems == 0x37  # every current system


def test_the_receipt_carries_its_taxation_system(shift: AtolDriver, emu: Emulator):
    # Tag 1055 was never written: a register registered for several systems used its default.
    shift.sell(receipt(taxation=TaxationSystem.PATENT))
    assert emu.documents()[-1]["attributes"] == {"1055": 32}


def test_a_taxation_system_outside_the_registration_is_refused_before_the_receipt(
        shift: AtolDriver, emu: Emulator, wire_adds: list[bytes]):
    # [S K] K refuses a system the registration (A4 43 byte 39) lacks before the receipt; so
    # does kkt, with the field named: nothing of the receipt reaches the device.
    emu.device.tax_systems = int(TaxationSystem.OSN | TaxationSystem.USN_INCOME)
    documents = len(emu.documents())
    with pytest.raises(TaxationNotRegistered) as info:
        shift.sell(receipt(taxation=TaxationSystem.PATENT))
    err = info.value
    assert isinstance(err, NotSent) and err.to_dict()["field"] == "taxation"
    assert "«патент»" in err.message and "ОСН, УСН доход" in err.message and "TaxVariant" in err.message
    assert 0x92 not in [b[0] for b in wire_adds] and len(emu.documents()) == documents
    # Registered anew for the patent while connected: the refusal reads the registration again.
    emu.device.tax_systems |= int(TaxationSystem.PATENT)
    shift.sell(receipt(taxation=TaxationSystem.PATENT))
    assert emu.documents()[-1]["attributes"] == {"1055": 32}


def test_without_the_registration_the_device_has_the_last_word_on_1055(
        shift: AtolDriver, emu: Emulator, monkeypatch: pytest.MonkeyPatch):
    # A device that does not answer A4 43: 1055 is sent unchecked, and the emulator refuses a
    # system outside its registration ([U] K's ext 0x0103) at the tag, before any position.
    monkeypatch.delitem(handlers.HANDLERS, "registration")
    emu.device.tax_systems = int(TaxationSystem.OSN)
    with pytest.raises(DeviceError) as info:
        shift.sell(receipt(taxation=TaxationSystem.USN_INCOME))
    err = info.value
    assert err.ext == model.EXT_BAD_TAXATION and "налогообложения" in err.message and "1055" in err.step
    assert not emu.state.receipt_open and emu.documents()[-1]["type"] != "receipt"


def test_extended_error_is_read_from_register_0x37(shift: AtolDriver, emu: Emulator):
    # [S K] 0xEE: the driver reads register 0x37 and names the extended code in Russian.
    with pytest.raises(DeviceError) as info:
        shift.execute([step("open_receipt", receipt_type=1),
                       step("write_attribute", tag=model.TAG_UNIT, value=b"\x0b")])
    err = info.value
    assert err.code == ErrorCode.FN_SEE_REGISTER_55 and err.ext == model.EXT_NO_POSITION_STARTED
    assert "EAh" in err.device_message and err.step == "запись реквизита"
    shift.cancel_receipt()


def test_a_lost_push_is_fetched_with_req(emu: Emulator, monkeypatch: pytest.MonkeyPatch):
    # [S C] C falls back to Req when the A6 does not come: drop every push, the batch still ends.
    from kktapp.atol.emulator import server

    monkeypatch.setattr(model, "REQ_AFTER_SILENCE", 0.05)
    sent = server.Connection._send

    def no_push(self, packet_id: int, data: bytes) -> None:
        if packet_id != model.ASYNC_PACKET_ID:
            sent(self, packet_id, data)

    monkeypatch.setattr(server.Connection, "_send", no_push)
    emu.set_device_time(0.01)
    with AtolDriver(emu.url) as d:
        d.open_shift()
        assert d.sell(receipt()).total == 8990


def test_stopped_tasks_of_an_earlier_session_are_cleared(emu: Emulator):
    # [C Z,K] A5 TId for tasks stopped by an earlier failure; the driver recovers with Abort.
    with AtolDriver(emu.url) as d:
        d.open_shift()
        emu.set_device_time(0.01)
        with pytest.raises(DeviceError):
            d.sell(receipt(pos("A", 100), paid=50))
        assert not d.status().receipt_open
        assert d.sell(receipt(pos("B", 100))).total == 100

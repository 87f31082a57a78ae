"""In-memory cash register for the service's unit tests: a FakeDevice and its FakeDriver.

The device keeps what recovery cares about (FN last document number, open receipt, shift and
its clock, paper) and a log of fiscal documents to assert exactly-once against. Faults are
one-shot and placed precisely: a link drop *before* a command reaches the device, *after* the
FN closed the document (answer lost), or, for a receipt, *while it is open*. Only one driver may
be connected at a time, as with a real ATOL; a second one gets DeviceBusy and is counted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Sequence
from typing import Any

from kktapp.device import DeviceInfo, DeviceStatus, FnStatus, LastDocument, QuickStatus, ShiftStatus, Totals
from kktapp.domain import FiscalResult, Receipt, TextLine
from kktapp.errors import DeviceBusy, DeviceError, KKTError, LinkError

NO_PAPER = 0x67
PAID_LESS = 0x72
SHIFT_EXPIRED = 0x88
SHIFT_OPEN = 0x9C
SHIFT_CLOSED = 0x9D
RECEIPT_CLOSED = 0x9A
WRONG_PASSWORD = 0x8C


@dataclasses.dataclass
class Fault:
    """One-shot fault on the next call of ``method``."""

    method: str
    #: "before": the command never reaches the device; "after": it executed, the answer is lost;
    #: "open" (sell only): the receipt is opened, then the link drops.
    phase: str
    exc: KKTError
    #: The device also goes off (power cut): reconnecting fails until ``online`` is set again.
    offline: bool = False


class FakeDevice:
    """A cash register in memory, shared by the drivers that connect to it."""

    def __init__(self, serial: str = "00106700001234", *, latency: float = 0.0) -> None:
        self.serial = serial
        self.lock = threading.RLock()
        self.latency = latency
        self.online = True
        self.paper = True
        self.clock = dt.datetime(2026, 3, 2, 9, 0, 0)
        self.fd = 10
        self.shift_open = False
        self.shift_number = 5
        self.shift_opened_at: dt.datetime | None = None
        #: When True the device refuses receipts with 0x88 although its shift state says open
        #: (the FN's clock decides, atol-protocol.md §3.1).
        self.fn_says_expired = False
        self.receipt_number = 0
        self.receipt_open = False
        #: One-shot: the next receipt is fiscalised, then paper runs out while printing it.
        self.paper_out_while_printing = False
        #: last_document() answers the FD number without the document's data.
        self.last_document_without_data = False
        self.cash = 0
        self.printed_copies = 0
        self.documents: list[dict] = []
        self.calls: list[str] = []
        self.faults: list[Fault] = []
        self.active: set[int] = set()
        self.max_active = 0
        self.connects = 0
        self.busy_refusals = 0
        #: Per-method gates: a call waits until the event is set (to hold a job in flight).
        self.gates: dict[str, threading.Event] = {}
        #: Set when a gated call has reached the device.
        self.entered: dict[str, threading.Event] = {}

    # ------------------------------------------------------------------ test controls

    def inject(self, method: str, phase: str, exc: KKTError | None = None, *, offline: bool = False) -> None:
        """Arm a one-shot fault on ``method``."""
        self.faults.append(Fault(method, phase, exc or LinkError(), offline))

    def gate(self, method: str) -> threading.Event:
        """Hold every ``method`` call until the returned event is set."""
        event = threading.Event()
        self.gates[method] = event
        self.entered[method] = threading.Event()
        return event

    def advance_clock(self, hours: float) -> None:
        """Move the device clock."""
        with self.lock:
            self.clock += dt.timedelta(hours=hours)

    def receipts(self) -> list[dict]:
        """Fiscal receipts in the FN (test mode ones are never there)."""
        return [d for d in self.documents if d["type"] == "receipt"]

    def count(self, method: str) -> int:
        """How many times the device executed a command."""
        return self.calls.count(method)

    # ------------------------------------------------------------------ connections

    def connect(self, driver: FakeDriver) -> None:
        with self.lock:
            if not self.online:
                raise LinkError()
            if self.active - {id(driver)}:
                self.busy_refusals += 1
                raise DeviceBusy()
            self.active.add(id(driver))
            self.connects += 1
            self.max_active = max(self.max_active, len(self.active))
            # A fresh connection finds any stale receipt as it was (the service settles it).

    def disconnect(self, driver: FakeDriver) -> None:
        with self.lock:
            self.active.discard(id(driver))

    def call(self, driver: FakeDriver, method: str, *args: object) -> object:
        if self.latency:
            time.sleep(self.latency)
        gate = self.gates.get(method)
        if gate is not None:
            self.entered[method].set()
            gate.wait(30)
        with self.lock:
            if not self.online or id(driver) not in self.active:
                self.active.discard(id(driver))
                driver._connected = False
                raise LinkError()
            fault = next((f for f in self.faults if f.method == method), None)
            if fault is not None:
                self.faults.remove(fault)
            if fault is not None and fault.phase == "before":
                self._drop(driver, fault)
            self.calls.append(method)
            result = getattr(self, "_" + method)(*args, fault=fault, driver=driver)
            if fault is not None and fault.phase == "after":
                self._drop(driver, fault)
            return result

    def _drop(self, driver: FakeDriver, fault: Fault) -> None:
        if fault.offline:
            self.online = False
        if isinstance(fault.exc, LinkError):
            self.active.discard(id(driver))
            driver._connected = False
        raise fault.exc

    # ------------------------------------------------------------------ commands

    def _shift_state(self) -> str:
        if not self.shift_open:
            return "closed"
        if self.shift_opened_at and self.clock - self.shift_opened_at > dt.timedelta(hours=24):
            return "expired"
        return "open"

    def _shift_usable(self) -> None:
        state = self._shift_state()
        if state == "closed":
            raise DeviceError(SHIFT_CLOSED, "Смена закрыта")
        if state == "expired" or self.fn_says_expired:
            raise DeviceError(SHIFT_EXPIRED, "Смена превысила 24 часа")

    def _need_paper(self) -> None:
        if not self.paper:
            raise DeviceError(NO_PAPER, "Нет бумаги")

    def _commit(self, kind: str, total: int = 0, **extra: object) -> FiscalResult:
        self.fd += 1
        result = FiscalResult(
            fiscal_document_number=self.fd,
            fiscal_sign=str(1_000_000_000 + self.fd * 7919),
            receipt_number=self.receipt_number,
            shift_number=self.shift_number,
            datetime=self.clock,
            total=total,
            fn_number="9999078900001234",
        )
        self.documents.append({"fd": self.fd, "type": kind, "total": total, "result": result, **extra})
        return result

    def _status(self, **_: object) -> DeviceStatus:
        return DeviceStatus(
            datetime=self.clock, serial=self.serial, model_code=62, mode=1 if self.receipt_open else 0, submode=0,
            fiscal=True, shift_open=self.shift_open, shift_number=self.shift_number,
            receipt_number=self.receipt_number, receipt_state=1 if self.receipt_open else 0, receipt_sum=0,
            paper_present=self.paper,
        )

    def _quick_status(self, **kw: object) -> QuickStatus:
        return QuickStatus.of(self._status(**kw))

    def _device_info(self, **_: object) -> DeviceInfo:
        return DeviceInfo(model_code=62, model_name="АТОЛ 55Ф (fake)", firmware="5.8.0", serial=self.serial)

    def _shift_status(self, **_: object) -> ShiftStatus:
        return ShiftStatus(
            state=self._shift_state(), number=self.shift_number,
            opened_at=self.shift_opened_at if self.shift_open else None, receipts=self.receipt_number,
        )

    def _fn_status(self, **_: object) -> FnStatus:
        return FnStatus(fn_number="9999078900001234", last_fd_number=self.fd)

    def _totals(self, **_: object) -> Totals:
        return Totals(cash_in_drawer=self.cash)

    def _last_document(self, **_: object) -> LastDocument:
        result = self.documents[-1]["result"] if self.documents else None
        if self.last_document_without_data:
            # As a device whose FN archive read fails: the number is known, its data is not.
            result = None
        return LastDocument(fd_number=self.fd, receipt_open=self.receipt_open, result=result)

    def _open_shift(self, cashier_name: str = "", cashier_inn: str = "", **_: object) -> FiscalResult:
        if self.receipt_open:
            raise DeviceError(0x9B, "Чек открыт")
        if self.shift_open:
            raise DeviceError(SHIFT_OPEN, "Смена открыта")
        self._need_paper()
        self.shift_open = True
        self.shift_number += 1
        self.shift_opened_at = self.clock
        self.fn_says_expired = False
        self.receipt_number = 0
        return self._commit("open_shift")

    def _close_shift(self, cashier_name: str = "", cashier_inn: str = "", **_: object) -> FiscalResult:
        if self.receipt_open:
            raise DeviceError(0x9B, "Чек открыт")
        if not self.shift_open:
            raise DeviceError(SHIFT_CLOSED, "Смена закрыта")
        self._need_paper()
        self.shift_open = False
        self.shift_opened_at = None
        return self._commit("close_shift")

    def _sell(self, receipt: Receipt, *, fault: Fault | None = None, driver: FakeDriver, **_: object) -> FiscalResult:
        if self.receipt_open:
            raise DeviceError(0x9B, "Чек открыт")
        self._shift_usable()
        if not receipt.electronic_only:
            self._need_paper()
        self.receipt_open = True
        if fault is not None and fault.phase == "open":
            if not isinstance(fault.exc, LinkError):
                # As AtolDriver._after_failed_receipt: a device refusal inside an open receipt
                # is answered by cancelling it before the error reaches the owner.
                self.calls.append("cancel_receipt")
                self.receipt_open = False
            self._drop(driver, fault)
        if receipt.paid < receipt.total:
            self.calls.append("cancel_receipt")
            self.receipt_open = False
            raise DeviceError(PAID_LESS, "Вносимая сумма меньше суммы чека")
        self.receipt_open = False
        if receipt.test_mode:
            return FiscalResult(
                fiscal_document_number=0, fiscal_sign="", receipt_number=0, shift_number=self.shift_number,
                datetime=self.clock, total=receipt.total, test_mode=True,
            )
        self.receipt_number += 1
        self.cash += sum(p.amount for p in receipt.payments if p.type.value == "cash") - receipt.change
        result = self._commit("receipt", receipt.total, name=receipt.positions[0].name, receipt=receipt)
        if self.paper_out_while_printing:
            self.paper_out_while_printing = False
            self.paper = False
        if not receipt.electronic_only and not self.paper:
            # As the real driver: the document exists, so sell() answers it, marked unprinted,
            # instead of raising the printer's complaint.
            return dataclasses.replace(result, printed=False)
        return result

    def _cancel_receipt(self, **_: object) -> None:
        self.receipt_open = False

    def _cash_in(self, amount: int, **_: object) -> FiscalResult:
        self._shift_usable()
        self._need_paper()
        self.cash += amount
        return self._commit("cash_in", amount)

    def _cash_out(self, amount: int, **_: object) -> FiscalResult:
        self._shift_usable()
        if amount > self.cash:
            raise DeviceError(0x98, "Недостаточно наличности в кассе")
        self._need_paper()
        self.cash -= amount
        return self._commit("cash_out", amount)

    def _x_report(self, **_: object) -> None:
        self._need_paper()

    def _settlement_report(self, cashier_name: str = "", cashier_inn: str = "", **_: object) -> FiscalResult:
        if self.receipt_open:
            raise DeviceError(0x9B, "Чек открыт")
        self._need_paper()
        return self._commit("settlement_report")

    def _print_text(self, lines: Sequence[TextLine], **_: object) -> None:
        self._need_paper()

    def _reprint_last(self, **_: object) -> None:
        self._need_paper()
        self.printed_copies += 1

    def _reset_summary(self, **_: object) -> None:
        self.cash = 0

    def _tech_reset(self, **_: object) -> None:
        pass


class FakeDriver:
    """kktapp.device.Driver over a :class:`FakeDevice`."""

    def __init__(self, device: FakeDevice) -> None:
        self.device = device
        self._connected = False

    def _do(self, method: str, *args: object) -> object:
        if not self._connected:
            raise LinkError()
        return self.device.call(self, method, *args)

    def connect(self) -> None:
        self.device.connect(self)
        self._connected = True

    def close(self) -> None:
        self.device.disconnect(self)
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> DeviceStatus:
        return self._do("status")  # type: ignore[return-value]

    def quick_status(self) -> QuickStatus:
        return self._do("quick_status")  # type: ignore[return-value]

    def device_info(self) -> DeviceInfo:
        return self._do("device_info")  # type: ignore[return-value]

    def shift_status(self) -> ShiftStatus:
        return self._do("shift_status")  # type: ignore[return-value]

    def fn_status(self) -> FnStatus:
        return self._do("fn_status")  # type: ignore[return-value]

    def totals(self) -> Totals:
        return self._do("totals")  # type: ignore[return-value]

    def open_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        return self._do("open_shift", cashier_name, cashier_inn)  # type: ignore[return-value]

    def close_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        return self._do("close_shift", cashier_name, cashier_inn)  # type: ignore[return-value]

    def x_report(self) -> None:
        self._do("x_report")

    def settlement_report(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        return self._do("settlement_report", cashier_name, cashier_inn)  # type: ignore[return-value]

    def sell(self, receipt: Receipt) -> FiscalResult:
        return self._do("sell", receipt)  # type: ignore[return-value]

    def cancel_receipt(self) -> None:
        self._do("cancel_receipt")

    def cash_in(self, amount: int) -> FiscalResult:
        return self._do("cash_in", amount)  # type: ignore[return-value]

    def cash_out(self, amount: int) -> FiscalResult:
        return self._do("cash_out", amount)  # type: ignore[return-value]

    def print_text(self, lines: Sequence[TextLine]) -> None:
        self._do("print_text", list(lines))

    def reprint_last(self) -> None:
        self._do("reprint_last")

    def last_document(self) -> LastDocument:
        return self._do("last_document")  # type: ignore[return-value]

    def reset_summary(self) -> None:
        self._do("reset_summary")

    def tech_reset(self) -> None:
        self._do("tech_reset")


# ---------------------------------------------------------------------- helpers for the tests


def make_receipt(name: str = "Товар", price: int = 10000, quantity: str = "1", **changes: object) -> Receipt:
    """A valid one-position sell receipt paid electronically (kopecks)."""
    from decimal import Decimal

    from kktapp.domain import Payment, PaymentType, Position, SettlementType, VatRate, position_amount

    qty = Decimal(quantity)
    amount = position_amount(price, qty)
    receipt = Receipt(
        type=SettlementType.SELL,
        positions=(Position(name=name, price=price, quantity=qty, amount=amount, vat=VatRate.VAT22),),
        payments=(Payment(PaymentType.ELECTRONIC, amount),),
    )
    return dataclasses.replace(receipt, **changes) if changes else receipt


def eventually(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed (bounds a test, never times it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def in_threads(work, count: int, timeout: float = 60.0) -> list[BaseException]:
    """Run ``work(0)`` … ``work(count - 1)`` at once, each in its own thread; what they raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return errors


def cash_records(emu: Any) -> list[dict[str, Any]]:
    """Cash in/out as the emulator ran them, in order: neither emulator forms an FN document for
    them by default (kktapp/atol/model.py DocType.CASH_IN, kktapp/shtrih/model.py DOC_CASH), both
    list them in cash_operations(); one told to form them (Device.cash_documents) has them in
    documents()."""
    return [d for d in emu.documents() + emu.cash_operations() if d["type"] in ("cash_in", "cash_out")]

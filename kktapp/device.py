"""What the service needs from a cash register driver, independent of its protocol.

:class:`Driver` is the interface the service layer codes against; the ATOL implementation is
:class:`kktapp.atol.driver.AtolDriver`, and a Shtrih-M one can follow. The dataclasses here are
what drivers return: plain values, money in kopecks, Russian-free (texts live in the error tables).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Protocol

from .domain import DomainError, FiscalResult, Receipt, TextLine, check_device_text, format_rub, position_amount


@dataclass
class DeviceInfo:
    """Who the device is (ATOL A5 reply plus the full serial number, register 22)."""

    model_code: int
    model_name: str
    firmware: str
    serial: str = ""
    protocol: int = 3


@dataclass
class ShiftStatus:
    """State of the fiscal shift as the device reports it."""

    #: "closed", "open" or "expired" (open for more than 24 hours).
    state: str
    number: int
    opened_at: dt.datetime | None = None
    receipts: int = 0

    @property
    def expires_at(self) -> dt.datetime | None:
        """When the shift must be closed (24 hours after opening)."""
        return self.opened_at + dt.timedelta(hours=24) if self.opened_at else None


@dataclass
class FnStatus:
    """Fiscal storage (ФН) and OFD exchange state."""

    fn_number: str = ""
    last_fd_number: int = 0
    unsent_count: int = 0
    first_unsent_number: int = 0
    first_unsent_at: dt.datetime | None = None
    valid_until: dt.date | None = None
    #: FN warning bits (replace soon, resource exhausted, memory full, OFD timeout).
    warnings: int = 0
    phase: int = 0


@dataclass
class DeviceStatus:
    """One status read: 3F + 45 and the shift, with the receipt state used by recovery."""

    datetime: dt.datetime
    serial: str
    model_code: int
    mode: int
    submode: int
    fiscal: bool
    shift_open: bool
    shift_number: int
    receipt_number: int
    #: 0 closed; otherwise the open receipt's ATOL type (1 sell, 2 sell return, 4 buy, …).
    receipt_state: int
    receipt_sum: int
    paper_present: bool
    cover_open: bool = False
    drawer_open: bool = False
    fn_active: bool = True
    printer_error: bool = False
    #: The roll is nearly used up (still prints): the operator should load a new one.
    paper_near_end: bool = False

    @property
    def receipt_open(self) -> bool:
        """A receipt (or other document) is open on the device."""
        return self.receipt_state != 0


@dataclass(frozen=True)
class QuickStatus:
    """The device in its cheapest round trip: it answers, its clock, its shift and whether a
    receipt is open (the owner's look before a document after an idle spell)."""

    datetime: dt.datetime
    shift_open: bool
    #: As in :class:`DeviceStatus`: 0 closed, otherwise the open receipt's type.
    receipt_state: int

    @property
    def receipt_open(self) -> bool:
        """A receipt (or other document) is open on the device."""
        return self.receipt_state != 0

    @classmethod
    def of(cls, status: DeviceStatus) -> QuickStatus:
        """The quick part of a full status (for a device whose status is one command anyway)."""
        return cls(datetime=status.datetime, shift_open=status.shift_open, receipt_state=status.receipt_state)


@dataclass
class Totals:
    """Money counters for status reports (kopecks)."""

    cash_in_drawer: int = 0
    shift_earnings: int = 0
    total_earnings: int = 0


@dataclass
class LastDocument:
    """What recovery needs: the FN's last document and whether a receipt is still open."""

    fd_number: int
    receipt_open: bool
    result: FiscalResult | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceLimits:
    """What a document may hold so that every value fits the device's commands.

    A driver computes these from its own command layouts (for ATOL:
    :data:`kktapp.atol.commands.LIMITS`); the contracts check a receipt against them before it
    is journalled, so that no value can fail to encode halfway through a document. Money in
    kopecks, texts in the device's bytes (``encode`` is the device's text codec).
    """

    #: Largest price of one unit.
    max_price: int
    #: Largest quantity of a position.
    max_quantity: Decimal
    #: Largest price × quantity of a position (the device computes it; the line discount is the
    #: difference to the sum and travels in a field of this width).
    max_position_sum: int
    #: Largest single payment (and so the largest receipt total).
    max_payment: int
    #: Largest cash-in / cash-out amount.
    max_cash: int
    #: Longest position name, in device bytes.
    name_bytes: int
    #: Longest printed text line, in device bytes.
    text_line_bytes: int
    #: Most positions one receipt may carry (the FN's document size).
    max_positions: int
    #: Largest department (section) number.
    max_department: int
    #: The device's text codec: its length of a text is what counts.
    encode: Callable[[str], bytes]

    def check(self, receipt: Receipt) -> None:
        """Raise :class:`~kktapp.domain.DomainError` naming the first value that does not fit.

        Field names are the domain's (``positions[3].quantity``, 1-based); contracts rename them.
        """
        if len(receipt.positions) > self.max_positions:
            raise DomainError("positions", f"позиций в чеке больше, чем принимает ФН: не больше {self.max_positions}",
                              len(receipt.positions))
        for i, pos in enumerate(receipt.positions, 1):
            where = f"positions[{i}]"
            self.check_text(pos.name, f"{where}.name", self.name_bytes)
            if pos.quantity > self.max_quantity:
                raise DomainError(f"{where}.quantity",
                                  f"количество больше, чем вмещает ККТ: не больше {self.max_quantity}", pos.quantity)
            if pos.price > self.max_price:
                raise DomainError(f"{where}.price",
                                  f"цена больше, чем вмещает ККТ: не больше {format_rub(self.max_price)}",
                                  format_rub(pos.price))
            gross = position_amount(pos.price, pos.quantity)
            if gross > self.max_position_sum or abs(gross - pos.amount) > self.max_position_sum:
                raise DomainError(f"{where}.amount", "цена × количество больше, чем вмещает ККТ: не больше "
                                  f"{format_rub(self.max_position_sum)}", format_rub(gross))
            if pos.department > self.max_department:
                raise DomainError(f"{where}.department", f"номер секции не больше {self.max_department}",
                                  pos.department)
        for i, pay in enumerate(receipt.payments, 1):
            if pay.amount > self.max_payment:
                raise DomainError(f"payments[{i}].amount",
                                  f"сумма оплаты больше, чем вмещает ККТ: не больше {format_rub(self.max_payment)}",
                                  format_rub(pay.amount))
        for part, lines in (("header", receipt.header), ("footer", receipt.footer)):
            self.check_lines(lines, part)

    def check_lines(self, lines: Sequence[TextLine], field: str = "lines") -> None:
        """Every printed line fits one print command and holds no control characters."""
        for i, line in enumerate(lines, 1):
            self.check_text(line.text, f"{field}[{i}].text", self.text_line_bytes, allow_empty=True)

    def check_text(self, text: str, field: str, limit: int, *, allow_empty: bool = False) -> None:
        """No control characters, and at most ``limit`` bytes in the device's code page."""
        check_device_text(text, field)
        if not allow_empty and not text.strip():
            raise DomainError(field, "текст не может быть пустым")
        size = len(self.encode(text))
        if size > limit:
            raise DomainError(field, f"текст длиннее, чем вмещает ККТ: {size} байт в кодировке ККТ, не больше {limit}",
                              text)

    def check_cash(self, amount: int, field: str = "amount") -> None:
        """A cash-in or cash-out amount fits the command."""
        if amount > self.max_cash:
            raise DomainError(field, f"сумма больше, чем вмещает ККТ: не больше {format_rub(self.max_cash)}",
                              format_rub(amount))


class Driver(Protocol):
    """A connected cash register. Not thread-safe: exactly one owner calls it at a time.

    A driver raises :class:`~kktapp.errors.NotSent` for a document it refuses before sending
    anything. Its ``stats.bytes_sent`` (when it has one) lets the owner tell "nothing sent" from
    "may have reached the device" for any other failure.
    """

    #: The device limits every document is checked against before it is journalled.
    limits: DeviceLimits

    def connect(self) -> None:
        """Open the link, clear stale tasks, bring the device to select mode."""

    def close(self) -> None:
        """Close the link (idempotent)."""

    @property
    def connected(self) -> bool:
        """True while the link is believed to be up."""

    def status(self) -> DeviceStatus:
        """Status: modes, flags, paper, shift and the open receipt."""

    def quick_status(self) -> QuickStatus:
        """Clock, shift and receipt state in as few device tasks as possible."""

    def device_info(self) -> DeviceInfo:
        """Model, firmware, serial number."""

    def shift_status(self) -> ShiftStatus:
        """Shift state, number, opening time."""

    def fn_status(self) -> FnStatus:
        """FN and OFD exchange state."""

    def totals(self) -> Totals:
        """Cash in drawer and earnings."""

    def open_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Open a shift (fiscal document "отчёт об открытии смены")."""

    def close_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Z report: close the shift."""

    def x_report(self) -> None:
        """X report (no clearing)."""

    def settlement_report(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """«Отчёт о текущем состоянии расчётов»: an FN fiscal document (FFD type 21)."""

    def sell(self, receipt: Receipt) -> FiscalResult:
        """Fiscalise a receipt of any settlement type, pipelined; test mode if receipt.test_mode."""

    def cancel_receipt(self) -> None:
        """Cancel an open receipt (no-op when none is open)."""

    def cash_in(self, amount: int) -> FiscalResult:
        """Внесение наличных."""

    def cash_out(self, amount: int) -> FiscalResult:
        """Выплата наличных."""

    def print_text(self, lines: Sequence[TextLine]) -> None:
        """Print a non-fiscal document."""

    def reprint_last(self) -> None:
        """Print the last document again (after paper ran out)."""

    def open_drawer(self) -> None:
        """Open the cash drawer connected to the device."""

    def last_document(self) -> LastDocument:
        """The FN's last fiscal document number (with its data) and whether a receipt is open."""

    def reset_summary(self) -> None:
        """Clear the device's money counters (service command; admin only)."""

    def tech_reset(self) -> None:
        """Technological reset (service command; admin only)."""


def to_json(obj: object) -> dict:
    """Dataclass → JSON-ready dict (dates as ISO strings)."""
    def conv(v: object) -> object:
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(asdict(obj))  # type: ignore[arg-type]

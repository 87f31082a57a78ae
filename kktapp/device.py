"""What the service needs from a cash register driver, independent of its protocol.

:class:`Driver` is the interface the service layer codes against; the ATOL implementation is
:class:`kktapp.atol.driver.AtolDriver`, and a Shtrih-M one can follow. The dataclasses here are
what drivers return: plain values, money in kopecks, Russian-free (texts live in the error tables).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from .domain import FiscalResult, Receipt, TextLine


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


class Driver(Protocol):
    """A connected cash register. Not thread-safe: exactly one owner calls it at a time."""

    def connect(self) -> None:
        """Open the link, clear stale tasks, bring the device to select mode."""

    def close(self) -> None:
        """Close the link (idempotent)."""

    @property
    def connected(self) -> bool:
        """True while the link is believed to be up."""

    def status(self) -> DeviceStatus:
        """Quick status (3F + 45)."""

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

"""What the owner remembers about its device while it holds the link.

The device accepts one connection and that connection is the owner's, so nothing else can form
a document or open or close a shift behind its back: the FN's last document number and the
shift state need not be read before every job. The memory is filled only from device reads and
from the documents the owner itself just formed, and dropped on (re)connect, after a lost link,
an unknown outcome, an unexpected exception or any device error, and whenever a status read
refreshes it. Recovery never uses it: settling an unknown outcome always reads the FN.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from ..device import ShiftStatus
from ..domain import FiscalResult
from ..journal import RECEIPT
from . import policy


@dataclasses.dataclass
class DeviceState:
    """What the owner knows about its device while it holds the link.

    ``None`` means "not known, read the device". Times are the device's own clock.
    """

    #: The FN's last fiscal document number.
    fd_number: int | None = None
    #: "open" or "closed" (an expired shift is never remembered: it is handled at once).
    shift_state: str | None = None
    shift_number: int = 0
    shift_opened_at: dt.datetime | None = None
    #: Receipts in the shift (for the status page).
    shift_receipts: int = 0
    #: A device clock reading and ``time.monotonic()`` when it was taken: the device's "now" is
    #: estimated from these to close an expiring shift before the device refuses a receipt.
    clock: tuple[dt.datetime, float] | None = None

    def forget(self) -> None:
        """Nothing is known any more (the next job reads the device)."""
        self.fd_number = None
        self.shift_state = None
        self.shift_opened_at = None
        self.clock = None

    def device_now(self) -> dt.datetime | None:
        """The device clock now, estimated from the last reading; None when there was none."""
        if self.clock is None:
            return None
        when, mono = self.clock
        return when + dt.timedelta(seconds=time.monotonic() - mono)

    def shift_expiring(self) -> bool:
        """The remembered open shift is at (or near) its 24 hours by the device clock estimate."""
        now = self.device_now()
        if self.shift_state != "open" or self.shift_opened_at is None or now is None:
            return False
        return now >= self.shift_opened_at + dt.timedelta(hours=24) - policy.SHIFT_EXPIRY_MARGIN

    def note_shift(self, shift: ShiftStatus) -> None:
        """A shift status read from the device."""
        if shift.state == "expired":
            # Never reuse: the next job must close it first, and it reads the device for that.
            self.shift_state = None
            return
        self.shift_state = shift.state
        self.shift_number = shift.number
        self.shift_opened_at = shift.opened_at if shift.state == "open" else None
        self.shift_receipts = shift.receipts

    def note_document(self, kind: str, result: FiscalResult) -> None:
        """A document the owner itself just formed (its FiscalResult is the FN's answer)."""
        if result.test_mode or not result.fiscal_document_number:
            return  # test mode forms no document
        self.fd_number = result.fiscal_document_number
        self.clock = (result.datetime, time.monotonic())
        if kind == RECEIPT:
            self.shift_receipts = result.receipt_number
        elif kind == "open_shift":
            self.shift_state = "open"
            self.shift_number = result.shift_number
            self.shift_opened_at = result.datetime
            self.shift_receipts = 0
        elif kind == "close_shift":
            self.shift_state = "closed"
            self.shift_opened_at = None

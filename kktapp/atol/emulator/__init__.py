"""A wire-faithful ATOL 55Ф emulator for tests, the demo and the benchmarks.

It speaks protocol v3 over TCP exactly as the driver expects from a real device, reusing the
protocol layer (:mod:`kktapp.atol.framing`, :mod:`~kktapp.atol.taskbuf`,
:mod:`~kktapp.atol.commands`, the model choices in :mod:`~kktapp.atol.model`), and keeps a
fiscal storage of its own: counters, shift, documents, cash (:mod:`.device`, :mod:`.state`).

In-process use::

    from kktapp.atol.emulator import Emulator
    with Emulator(state_path=tmp / "kkt.json", log_path=tmp / "fd.jsonl") as emu:
        driver = AtolDriver(emu.url)
        ...
        emu.paper_out(); emu.drop_after_tasks(3); emu.advance_clock(25)
        assert emu.documents()[-1]["type"] == "receipt"

From a shell: ``python -m kktapp.atol.emulator --port 5555 --state kkt.json --log fd.jsonl``.

Choices the emulator makes where the sources are silent (beyond :mod:`kktapp.atol.model`):

* paper out: opening a printed receipt, a position, X/Z, open shift, cash in/out and text
  printing fail with 0x67 and change nothing (the receipt stays open); at close the document
  IS fiscalised and the reply is 0x67 with the print pending until reprint (95) succeeds;
  receipts with the "do not print" flag never need paper;
* power off / restart: counters, shift, cash, documents and an open receipt survive (the
  device comes back in registration mode with the receipt open), and so does a pending print
  (reprint 95 still finishes it); the task buffer and a task in progress do not;
* a killed emulator process (SIGKILL, crash) is not a power cut: the state file is
  checkpointed per fiscal document, not per position, so the open receipt is lost and the
  device comes back as after its last document, receipt closed (see Device.save);
* cash control: cash out (4F) and cash paid out by a return or purchase receipt cannot exceed
  the cash in the drawer (0x98), as with the device's cash control on; an EB without flag 0x02
  on such a receipt is checked against the drawer too, whatever the payment ([S C]);
* EB's sum is the position total, its difference to price × quantity logged as the printed
  discount (or markup); correction receipts need 1173 and the composite 1174 (1178, 1179), whose
  STLV is checked; 1178/1179 on their own are refused (model.py);
* the task buffer lives with the connection: a dropped link discards tasks not yet started;
* ``ffd`` ("1.0", "1.05", "1.2"; ``--ffd``): register 0x36 answers it; 1.05+ take positions as
  EA → E8 → EB and refuse E6, 1.0 takes E6 and refuses EA/EB (model.FIRST_EA_EB_FFD);
* cash in/out (49/4F) move the drawer and form no FN document, as the device ([C]
  model.DocType.CASH_IN): no FD number, nothing in A4 45/46, 0x33 or the document log;
  Emulator.cash_operations() lists them for tests. 4F with the shift closed opens it (a
  shift-open report, [S K]); 49 does too [U];
* a test-mode receipt (92 flag 0x01) opens no shift; a Z report shows modes 0x23 then 0x17,
  an X report 0x22, for a fraction of a second (Device.z_print_seconds …), answering only
  queries meanwhile (0x66 to anything else);
* 67 9, the settlement-state report ([S A] model.REPORT_SETTLEMENT_STATE), forms an FN
  document (A4 45 type 21) with the cashier written before it in mode 2, open or closed shift
  alike, and prints like an X report.
"""

from __future__ import annotations

import logging
import os

from .. import commands, model
from . import handlers
from .core_controls import CoreControls
from .device import Device
from .server import Server
from .state import DEFAULT_SERIAL, DeviceState, Store

__all__ = ["Emulator", "DeviceState", "DEFAULT_SERIAL"]

#: Commands that open or form a fiscal document (a receipt's own commands run with it open;
#: 67 9, the settlement-state report, forms one too, so 67 counts), and 49/4F: they form none
#: (model.DocType.CASH_IN) but move the drawer, and 4F may open the shift, so a fault while one
#: runs tests exactly-once all the same.
DOCUMENT_COMMANDS = frozenset({"open_receipt", "close_receipt", "open_shift", "close_shift", "x_report", "cash_in",
                               "cash_out"})

log = logging.getLogger(__name__)


def ffd_code(version: str) -> int:
    """FFD version text ("1.0", "1.05", "1.2") → register 0x36 code (model.py)."""
    codes = {name: code for code, name in model.FFD_NAMES.items()}
    if version not in codes:
        raise ValueError(f"unknown FFD version {version!r}: one of {', '.join(codes)}")
    return codes[version]


class Emulator(CoreControls):
    """One emulated ATOL 55Ф: a TCP server thread plus knobs for faults and time.

    Times are in seconds. ``state_path`` keeps the fiscal storage across restarts (None: in
    memory); ``log_path`` gets one JSON line per fiscal document. ``clock_offset`` (hours) sets
    the device clock ahead of the host clock, overriding the offset stored in the state.
    """

    document_commands = DOCUMENT_COMMANDS

    def __init__(
        self,
        state_path: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        device_time: float = 0.0,
        latency: float = 0.0,
        serial: str = DEFAULT_SERIAL,
        clock_offset: float | None = None,
        ffd: str = "1.2",
    ) -> None:
        device = Device(Store(state_path), serial, clock_offset_hours=clock_offset, ffd=ffd_code(ffd))
        self._init_controls(device, Server, log_path=log_path, device_time=device_time, latency=latency)

    # ------------------------------------------------------------------ faults and timing

    def paper_out(self, before: str | None = None) -> None:
        """The paper runs out: printing commands fail with 0x67 (see Device.close_receipt).

        ``before`` names a command (``"close_receipt"``, ``"register_position"``, …): the paper
        then runs out just before the next such command executes, which is how a test reaches
        "fiscalised but not printed" through a driver that sends the whole receipt at once.
        """
        with self.device.lock:
            if before is None:
                self.device.paper = False
                self._paper_out_before = None
            else:
                commands.get(before)  # KeyError for a name the protocol layer does not know
                self._paper_out_before = before

    def paper_near_end(self, near: bool = True) -> None:
        """The roll is nearly used up (45 reports it; printing still works)."""
        with self.device.lock:
            self.device.paper_near_end = near

    def paper_in(self) -> None:
        """Paper loaded again (a print left pending waits for the host's reprint, 95)."""
        with self.device.lock:
            self.device.paper = True
            self.device.paper_near_end = False
            self._paper_out_before = None


    # ------------------------------------------------------------------ internals
    # (inspection and timing controls: CoreControls)

    def _execute(self, task: bytes) -> tuple[bytes, bool]:
        return handlers.execute(self.device, task, self._before_command)

    def step_commands(self, step: str) -> frozenset[str]:
        """The command names that do ``step`` here (one per step on ATOL; a fault test aims
        with these at either family's emulator)."""
        return frozenset({step})

    def _before_command(self, name: str) -> None:
        # Called with the device lock held.
        self._command = name
        if self._paper_out_before == name:
            self._paper_out_before = None
            self.device.paper = False
            with self.faults.lock:
                self.faults.fire()

"""A Shtrih-M emulator (ШТРИХ-М-01Ф, protocol v1 over TCP) for tests, the demo and the benchmarks.

Same knobs as the ATOL emulator, same state file and the same JSON-lines document log
(:mod:`.device` shares the ATOL emulator's fiscal core)::

    from kktapp.shtrih.emulator import Emulator
    with Emulator(state_path=tmp / "kkt.json", log_path=tmp / "fd.jsonl") as emu:
        driver = ShtrihDriver(emu.url)
        ...
        emu.paper_out(); emu.drop_after_tasks(3); emu.advance_clock(25)

From a shell: ``python -m kktapp.shtrih.emulator --port 7778 --state kkt.json --log fd.jsonl``.

Choices where the sources are silent [U]:

* paper out: printing commands (text, cut, reports, shift, cash) and receipt items answer
  0x6B and change nothing; a receipt closed without paper IS fiscalised, FF45 answers
  normally and the device shows submode 2 until paper is back, then submode 3 until 0xB0;
* a "task" of the fault API is one executed command; a drop after it keeps the answer for
  ENQ on the next connection (a power cut loses it);
* passwords 1..30 are accepted, 29/30 only for X and Z reports;
* cash in/out form no FN document, as a device [S: kktapp.shtrih.model.DOC_CASH]: the drawer
  moves and the operating document number (0x11, 0x50's answer) grows by one; that count is in
  the saved state with the cash, so neither a power cut nor a restart takes the number back.
  ``cash_documents=True`` makes them form one (FF0A type 0), for tests of that path.

``power_cut_after_command`` (from an ``arm_at``-style hook as a command starts) cuts the power in
the connection's own thread once the command has run, its answer lost: a cut that scheduling
cannot move before or after the command.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...atol.emulator.core_controls import CoreControls
from ...atol.emulator.state import Store
from .. import commands
from .device import ShtrihDevice
from .server import Server

__all__ = ["Emulator", "DEFAULT_SERIAL", "STEP_ALIASES"]

#: The ATOL emulator's step names for ``paper_out(before=...)`` → the Shtrih commands that do
#: the same step, so that a fault test written for one family runs on the other.
STEP_ALIASES: dict[str, frozenset[str]] = {
    "open_receipt": frozenset({"open_receipt"}),
    "register_position": frozenset({"operation", "sale", "buy", "sale_return", "buy_return"}),
    "end_position": frozenset({"operation", "sale", "buy", "sale_return", "buy_return"}),
    "close_receipt": frozenset({"close_receipt", "close_receipt_ext"}),
}

#: Serial number of the emulated device: 0x11 carries it as a 4-byte number (fr_drv_ng #72 log).
#: Digits without leading zeros, at most 4294967295, so the driver reads back exactly this.
#: Commands that form a fiscal document (shift open/close, receipt open/close, cash in/out, the
#: settlement-state report): a fault while one of them runs or right after it tests exactly-once.
DOCUMENT_COMMANDS = frozenset({"open_receipt", "close_receipt", "close_receipt_ext", "open_shift", "z_report",
                               "settlement_report", "cash_in", "cash_out"})
DEFAULT_SERIAL = "123456"


class Emulator(CoreControls):
    """One emulated Shtrih-M: a TCP server thread plus knobs for faults and time (seconds)."""

    document_commands = DOCUMENT_COMMANDS
    #: Control-port and --fault commands beyond the shared ones (kktapp.atol.emulator.control).
    control_commands = {"filler": ("on|off", lambda emu, state: emu.send_filler(_on_off(state)))}

    def __init__(
        self,
        state_path: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        device_time: float = 0.0,
        latency: float = 0.0,
        serial: str = DEFAULT_SERIAL,
        clock_offset: float | None = None,
        cash_documents: bool = False,
    ) -> None:
        self.shtrih = ShtrihDevice(Store(state_path), serial, clock_offset_hours=clock_offset,
                                   cash_documents=cash_documents)
        #: The fiscal core (paper, documents, state), as on the ATOL emulator.
        self._init_controls(self.shtrih.core, Server, log_path=log_path, device_time=device_time, latency=latency)

    # ------------------------------------------------------------------ faults and timing

    def paper_out(self, before: str | None = None) -> None:
        """The paper runs out now, or just before the next command named ``before``
        (``"operation"``, ``"close_receipt_ext"``, … as in :mod:`kktapp.shtrih.commands`, or a
        step name of the ATOL emulator in :data:`STEP_ALIASES`)."""
        with self.device.lock:
            if before is None:
                self.device.paper = False
                self._paper_out_before = None
            else:
                if before not in STEP_ALIASES:
                    commands.get(before)  # KeyError for a name neither family knows
                self._paper_out_before = before

    def paper_in(self) -> None:
        """Paper loaded again (an interrupted print waits for 0xB0: submode 3)."""
        with self.device.lock:
            self.device.paper = True
            self._paper_out_before = None

    def send_filler(self, on: bool = True) -> None:
        """Send a 0xFF filler byte before every answer, as devices on TCP do at times."""
        self.server.filler = bool(on)

    def power_cut_after_command(self, then: Callable[[], None] | None = None) -> None:
        """Cut the power in the emulator's own thread as soon as a command has run: the one
        running now when called from an ``arm_at`` hook (the hook runs as the command starts),
        else the next one. The command is done and its answer is lost with the power (not sent,
        not kept for ENQ). ``then`` is called once the power is off (still in that thread).

        Deterministic where :meth:`power_off` from another thread is not: that thread may run
        only after the answer went out and the host moved on to its next command.
        """

        def cut() -> None:
            self.power_off()
            if then is not None:
                then()

        self.server.power_cut = cut

    def clear_faults(self) -> None:
        """Disarm the link faults, a paper-out and a power cut that have not happened yet."""
        super().clear_faults()
        self.server.power_cut = None

    def _power_lost(self) -> None:
        # The unACKed answer lives in the device's RAM: gone with the power.
        self.server.kept = None

    # ------------------------------------------------------------------ internals
    # (inspection and timing controls: CoreControls)

    def step_commands(self, step: str) -> frozenset[str]:
        """The Shtrih commands that do ``step`` (an ATOL step name in :data:`STEP_ALIASES`, or a
        command name of :mod:`kktapp.shtrih.commands`)."""
        return STEP_ALIASES.get(step, frozenset({step}))

    def _execute(self, payload: bytes) -> bytes:
        return self.shtrih.execute(payload, self._before_command)

    def _before_command(self, name: str) -> None:
        self._command = name
        before = self._paper_out_before
        if before is not None and name in self.step_commands(before):
            self._paper_out_before = None
            self.device.paper = False
            with self.faults.lock:
                self.faults.fired += 1


def _on_off(word: str) -> bool:
    if word not in ("on", "off"):
        raise ValueError(f"filler: on or off, not {word!r}")
    return word == "on"

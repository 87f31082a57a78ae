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
* passwords 1..30 are accepted, 29/30 only for X and Z reports.
"""

from __future__ import annotations

import json
import os
import threading
from types import TracebackType
from typing import Any

from ...atol.emulator.core_controls import CoreControls
from ...atol.emulator.server import Faults, Timing
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
#: Commands that form a fiscal document (shift open/close, receipt open/close, cash in/out):
#: a fault while one of them runs or right after it tests exactly-once.
DOCUMENT_COMMANDS = frozenset({"open_receipt", "close_receipt", "close_receipt_ext", "open_shift", "z_report",
                               "cash_in", "cash_out"})
DEFAULT_SERIAL = "123456"


class Emulator(CoreControls):
    """One emulated Shtrih-M: a TCP server thread plus knobs for faults and time (seconds)."""

    def __init__(
        self,
        state_path: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        device_time: float = 0.0,
        latency: float = 0.0,
        serial: str = DEFAULT_SERIAL,
        clock_offset: float | None = None,
    ) -> None:
        self.log_path = os.fspath(log_path) if log_path is not None else None
        self.shtrih = ShtrihDevice(Store(state_path), serial, clock_offset_hours=clock_offset)
        #: The fiscal core (paper, documents, state), as on the ATOL emulator.
        self.device = self.shtrih.core
        self.device.on_document = self._write_log
        self.timing = Timing(device_time=float(device_time), latency=float(latency))
        self.faults = Faults(in_flight=self.document_in_flight)
        #: The command running or run last (set under the device lock, read without it).
        self._command = ""
        self.server = Server(self._execute, self.faults, self.timing)
        self.host = "127.0.0.1"
        self.port = 0
        self._started = False
        self._powered = True
        self._log_lock = threading.Lock()
        self._paper_out_before: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = a free port); returns the address."""
        if self._started:
            return self.host, self.port
        self.host, self.port = self.server.listen(host, port)
        self._started = True
        self._powered = True
        return self.host, self.port

    def stop(self) -> None:
        """Close the listener and the connection, save everything. Idempotent."""
        self.server.close()
        with self.device.lock:
            self.device.save_all()
        self._started = False

    @property
    def url(self) -> str:
        """pyserial URL of the emulator: ``socket://127.0.0.1:PORT``."""
        return f"socket://{self.host}:{self.port}"

    def __enter__(self) -> Emulator:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

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

    def clear_faults(self) -> None:
        """Disarm the faults that have not happened yet."""
        self.faults.clear()
        with self.device.lock:
            self._paper_out_before = None

    def drop_after_tasks(self, n: int) -> None:
        """Close the link right after the n-th further command is executed (answer kept)."""
        with self.faults.lock:
            self.faults.drop_after = max(1, int(n))

    def drop_mid_frame(self) -> None:
        """Send only the first half of the next answer, then close the link."""
        with self.faults.lock:
            self.faults.drop_mid_frame = True

    def corrupt_next_byte(self) -> None:
        """Break the LRC of the next answer (the host answers NAK and asks again)."""
        with self.faults.lock:
            self.faults.corrupt_next = True

    def send_filler(self, on: bool = True) -> None:
        """Send a 0xFF filler byte before every answer, as devices on TCP do at times."""
        self.server.filler = bool(on)

    def drop_connection(self) -> None:
        """Close the current connection now (the device stays on)."""
        self.server.drop()

    def document_in_flight(self) -> bool:
        """A receipt is open, or the command running or run last forms a fiscal document."""
        return self.device.state.receipt is not None or self._command in DOCUMENT_COMMANDS

    def power_off(self) -> None:
        """Switch the device off: the link drops, connects are refused, the state is kept."""
        if not self._powered:
            return
        self._powered = False
        self.server.close()
        self.server.kept = None
        if self.document_in_flight():
            with self.faults.lock:
                self.faults.fired_in_flight += 1
        with self.device.lock:
            self.device.save_all()

    def power_on(self) -> None:
        """Switch it on again on the same address."""
        if self._powered:
            return
        with self.device.lock:
            self.device.power_cycle()
        self._powered = True
        if self._started:
            self.server.listen(self.host, self.port)

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

    def _write_log(self, doc: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        line = json.dumps(doc, ensure_ascii=False) + "\n"
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line)

"""Test controls that act on the shared fiscal core, timing, fault flags and counters.

Both emulators (ATOL here, Shtrih-M in :mod:`kktapp.shtrih.emulator`) keep their FN, shift and
documents in the same :class:`~kktapp.atol.emulator.device.Device`, their timing and faults in
the same :class:`~kktapp.atol.emulator.server.Timing` / ``Faults``, and a server with
``listen``/``close``/``drop``; the controls that only touch those (start and stop, power, link
faults, clock, documents) are defined once here, the protocol faces add their own (paper steps,
the command each executes, Shtrih's filler and kept answer).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .server import Faults, Timing

if TYPE_CHECKING:
    from .device import Device


class CoreControls:
    """Mixin: the emulator's ``__init__`` calls :meth:`_init_controls`; the face defines
    ``_execute`` (what its server runs per command) and ``document_commands``."""

    device: Device
    timing: Timing
    faults: Faults
    server: Any
    host: str
    port: int
    log_path: str | None
    _started: bool
    _powered: bool
    _log_lock: threading.Lock
    _command: str
    _paper_out_before: str | None
    #: Commands that open or form a fiscal document (a receipt's own commands run with it open).
    document_commands: frozenset[str] = frozenset()

    def _init_controls(self, device: Device, server: Callable[..., Any], *, log_path: str | os.PathLike[str] | None,
                       device_time: float, latency: float) -> None:
        """Wire the core, timing, faults and the protocol's ``server`` class (from __init__)."""
        self.log_path = os.fspath(log_path) if log_path is not None else None
        self.device = device
        device.on_document = self._write_log
        self.timing = Timing(device_time=float(device_time), latency=float(latency))
        self.faults = Faults(in_flight=self.document_in_flight)
        #: The command running or run last (set under the device lock, read without it).
        self._command = ""
        self.server = server(self._execute, self.faults, self.timing)
        self.host = "127.0.0.1"
        self.port = 0
        self._started = False
        self._powered = True
        self._log_lock = threading.Lock()
        self._paper_out_before = None

    def _execute(self, payload: bytes) -> Any:
        raise NotImplementedError

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = a free port) in background threads; returns the address."""
        if self._started:
            return self.host, self.port
        with self.device.lock:
            if self.device.state.receipt is not None:
                # Running again after stop(): a kill from now on must lose the open receipt.
                self.device.save()
        self.host, self.port = self.server.listen(host, port)
        self._started = True
        self._powered = True
        return self.host, self.port

    def power_off(self) -> None:
        """Switch the device off: the link drops, connects are refused, the state is kept."""
        if not self._powered:
            return
        self._powered = False
        self.server.close()
        self._power_lost()
        if self.document_in_flight():
            with self.faults.lock:
                self.faults.fired_in_flight += 1
        with self.device.lock:
            self.device.save_all()

    def power_on(self) -> None:
        """Switch it on again on the same address (see Device.power_cycle for what survives)."""
        if self._powered:
            return
        with self.device.lock:
            self.device.power_cycle()
            if self.device.state.receipt is not None:
                self.device.save()  # running again: the checkpoint forgets the receipt
        self._powered = True
        if self._started:
            self.server.listen(self.host, self.port)

    def _power_lost(self) -> None:
        """What the protocol face loses with the power besides the link (nothing by default)."""

    def _write_log(self, doc: dict[str, Any]) -> None:
        """One JSON line per fiscal document (the log both emulators write alike)."""
        if self.log_path is None:
            return
        line = json.dumps(doc, ensure_ascii=False) + "\n"
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def stop(self) -> None:
        """Close the listener and the connection, wait for the threads, save everything
        (the open receipt included: a clean stop is a power-off, not a kill). Idempotent."""
        self.server.close()
        with self.device.lock:
            self.device.save_all()
        self._started = False

    @property
    def url(self) -> str:
        """pyserial URL of the emulator: ``socket://127.0.0.1:PORT``."""
        return f"socket://{self.host}:{self.port}"

    def __enter__(self) -> Any:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def document_in_flight(self) -> bool:
        """A receipt is open, or the command running or run last forms a fiscal document.

        A fault now lands inside a document or between it and its answer; one between jobs,
        or during the reads after a document, does not.
        """
        return self.device.state.receipt is not None or self._command in self.document_commands

    def clear_faults(self) -> None:
        """Disarm the link faults and a paper-out that have not happened yet."""
        self.faults.clear()
        with self.device.lock:
            self._paper_out_before = None

    def drop_after_tasks(self, n: int) -> None:
        """Close the link right after the n-th further task (command) is executed; its answer is
        not sent."""
        with self.faults.lock:
            self.faults.drop_after = max(1, int(n))

    def drop_mid_frame(self) -> None:
        """Send only the first half of the next answer, then close the link."""
        with self.faults.lock:
            self.faults.drop_mid_frame = True

    def corrupt_next_byte(self) -> None:
        """Break the checksum of the next answer (the host sees a bad frame and asks again)."""
        with self.faults.lock:
            self.faults.corrupt_next = True

    def drop_connection(self) -> None:
        """Close the current connection now (the device stays on)."""
        self.server.drop()

    @property
    def faults_fired(self) -> int:
        """How many injected faults (drops, half frames, corrupted bytes, paper-out before a
        command) have actually happened so far."""
        with self.faults.lock:
            return self.faults.fired

    @property
    def faults_in_flight(self) -> int:
        """How many of the faults that fired, and of the power cuts, hit a fiscal document in
        flight (see ``document_in_flight``): the ones that test exactly-once at all."""
        with self.faults.lock:
            return self.faults.fired_in_flight

    def advance_clock(self, hours: float) -> None:
        """Move the device clock forward by ``hours`` (kept in the state file)."""
        with self.device.lock:
            self.device.advance_clock(hours)

    def set_unsent(self, n: int) -> None:
        """Pretend ``n`` documents wait for the OFD."""
        with self.device.lock:
            self.device.set_unsent(n)

    def set_device_time(self, seconds: float) -> None:
        """Time the device spends on every command from now on."""
        self.timing.device_time = max(0.0, float(seconds))

    def set_latency(self, seconds: float) -> None:
        """One-way delay of every transmission, both directions, from now on."""
        self.timing.latency = max(0.0, float(seconds))

    def documents(self) -> list[dict[str, Any]]:
        """Fiscal documents in the device's FN, oldest first (the same objects as the log lines)."""
        with self.device.lock:
            return [json.loads(json.dumps(d)) for d in self.device.documents]

    def cash_operations(self) -> list[dict[str, Any]]:
        """Cash in/out that formed no FN document, oldest first (Device.cash_operations)."""
        with self.device.lock:
            return [dict(d) for d in self.device.cash_operations]

    @property
    def state(self) -> Any:
        """The device state (shift_open, shift_number, fd_number, receipt, cash, …); read-only use."""
        return self.device.state

    def shift_state(self) -> str:
        """"closed", "open" or "expired" by the device clock."""
        with self.device.lock:
            return self.device.shift_state()

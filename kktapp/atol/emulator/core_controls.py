"""Test controls that act on the shared fiscal core, timing and fault counters.

Both emulators (ATOL here, Shtrih-M in :mod:`kktapp.shtrih.emulator`) keep their FN, shift and
documents in the same :class:`~kktapp.atol.emulator.device.Device` and their timing and fault
counters in the same :class:`~kktapp.atol.emulator.server.Timing` / ``Faults``; the controls
that only touch those are defined once here, the protocol faces add their own.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .device import Device
    from .server import Faults, Timing


class CoreControls:
    """Mixin: needs ``self.device`` (the fiscal core), ``self.timing`` and ``self.faults``."""

    device: Device
    timing: Timing
    faults: Faults

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

    @property
    def state(self) -> Any:
        """The device state (shift_open, shift_number, fd_number, receipt, cash, …); read-only use."""
        return self.device.state

    def shift_state(self) -> str:
        """"closed", "open" or "expired" by the device clock."""
        with self.device.lock:
            return self.device.shift_state()

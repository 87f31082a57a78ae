"""bench/multi_emulator.py: several emulated registers in one process, each its own device.

The 64-register efficiency figure (bench/bench_efficiency.py) rests on this launcher: every
register must answer on its own port with its own serial and fiscal storage, and stopping the
harness must stop the processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from common import Harness  # bench/common.py starts the launcher

from kktapp.atol.driver import AtolDriver


def test_fleet_registers_are_separate_devices() -> None:
    with Harness("fleet-test", keep=False) as h:
        fleet = h.start_emulator_fleet(3, per_process=2)
        procs = {e.proc.pid for e in fleet}
        assert [e.number for e in fleet] == [1, 2, 3]
        assert len(procs) == 2  # 2 + 1 registers
        assert len({e.port for e in fleet}) == 3
        serials = []
        for emu in fleet:
            driver = AtolDriver(emu.url)
            driver.connect()
            try:
                serials.append(driver.device_info().serial)
                driver.open_shift()
            finally:
                driver.close()
        assert len(set(serials)) == 3
        # Each register keeps its own fiscal storage and document log.
        for emu in fleet:
            assert [d["type"] for d in emu.documents(None)] == ["open_shift"]
        running = [e.proc for e in fleet]
    assert all(p.poll() is not None for p in running)

"""bench/multi_emulator.py: several emulated registers in one process, each its own device.

The 64-register efficiency figure (bench/bench_efficiency.py) rests on this launcher: every
register must answer on its own port with its own serial and fiscal storage, and stopping the
harness must stop the processes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from common import Harness, fleet_pace  # bench/common.py starts the launcher

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


def test_a_paced_fleet_accounts_for_its_idle_time_and_its_lateness() -> None:
    # 10 ms a task. Pauses of 1.2 s and 1.5 s before two reports: register 1 reports them as
    # idle time (counted when the next task starts, so both fall in the window), and each
    # report's last task as one the host waited for.
    with Harness("fleet-pace", keep=False) as h:
        fleet = h.start_emulator_fleet(2, per_process=2, device_time_ms=10)
        driver = AtolDriver(fleet[0].url)
        driver.connect()
        try:
            driver.open_shift()  # the first paced task of the link: nothing before it to idle after
            time.sleep(1.2)  # a pace line (one a second) falls between the two documents
            start = time.monotonic()
            driver.x_report()
            time.sleep(1.5)
            driver.x_report()
            time.sleep(1.2)  # and one after the second
            end = time.monotonic()
        finally:
            driver.close()
        pace = fleet_pace(fleet, start, end)
    assert pace is not None
    assert pace.tasks >= 2 and pace.ends >= 2
    # Two registers over a window of at least 2 s: up to a line's second lost at each end.
    assert 2 * 1.0 <= pace.register_seconds <= 2 * 6.0
    # Register 1: the two pauses, and the host's own pauses while it waited for each report to
    # print. Register 2 had no link and counts nothing: no task, nothing to be idle between.
    assert 2.5 <= pace.idle <= 5.0
    assert 0 <= pace.late < pace.ends * 1.0

"""Pipelined receipts vs one command at a time, against the emulator with network latency.

Starts ``python -m kktapp.atol.emulator`` as a separate process (5 ms one-way latency, so a
round trip costs 10 ms, like a device on a busy LAN or a USB-Ethernet hop), opens a shift, then
sells receipts of 1, 10 and 100 positions with ``AtolDriver(pipeline=True)`` and
``pipeline=False``. For each it prints the driver's round trips (times it waited for the
device) and the median wall time of a few receipts, as ``name: value unit`` lines on stdout.
A second emulator spends 1 ms per task, so that it answers each Add with A1 (pending) and the
results come as A6/A7 on packet 0xF0 (NeedResult tasks) or not at all (quiet tasks, flags 0):
the task-buffer path of a real device, pipelined ("busy_device" figures).

Run: ``.venv/bin/python bench/bench_pipelining.py`` (about half a minute).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Harness, result, setup_logging

from kktapp.atol.driver import AtolDriver
from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate

log = logging.getLogger("bench.pipelining")

LATENCY_MS = 5
BUSY_DEVICE_TIME_MS = 1
SIZES = (1, 10, 100)
REPEAT = 3


def make_receipt(positions: int) -> Receipt:
    """A sale of ``positions`` different items, paid in cash."""
    items = tuple(
        Position(name=f"Товар {i}", price=1000 + i, quantity=Decimal(1), amount=1000 + i, vat=VatRate.VAT22)
        for i in range(positions)
    )
    total = sum(p.amount for p in items)
    return Receipt(type=SettlementType.SELL, positions=items, payments=(Payment(PaymentType.CASH, total),))


def measure(driver: AtolDriver, receipt: Receipt) -> tuple[int, float]:
    """Round trips of one receipt (all alike) and the median wall time in milliseconds."""
    times = []
    trips = 0
    for _ in range(REPEAT):
        before = driver.stats.round_trips
        start = time.perf_counter()
        driver.sell(receipt)
        times.append((time.perf_counter() - start) * 1000)
        trips = driver.stats.round_trips - before
    return trips, statistics.median(times)


def main() -> int:
    """Run the comparison and print the figures."""
    setup_logging()
    with Harness("pipelining") as harness:
        (emu,) = harness.start_emulators(1, latency_ms=LATENCY_MS)
        (busy,) = harness.start_emulators(1, device_time_ms=BUSY_DEVICE_TIME_MS, latency_ms=LATENCY_MS)
        result("latency_one_way", LATENCY_MS, "ms")
        figures: dict[tuple[int, bool], tuple[int, float]] = {}
        # The device takes one client at a time: one driver, then the other.
        for pipelined in (True, False):
            with AtolDriver(emu.url, pipeline=pipelined) as driver:
                if pipelined:
                    driver.open_shift()
                for size in SIZES:
                    log.info("%d positions, %s", size, "pipelined" if pipelined else "one at a time")
                    figures[(size, pipelined)] = measure(driver, make_receipt(size))
        busy_figures: dict[int, tuple[int, float]] = {}
        with AtolDriver(busy.url) as driver:
            driver.open_shift()
            for size in SIZES:
                log.info("%d positions, pipelined, busy device", size)
                busy_figures[size] = measure(driver, make_receipt(size))
        for size in SIZES:
            fast_trips, fast_ms = figures[(size, True)]
            slow_trips, slow_ms = figures[(size, False)]
            result(f"receipt_{size}_pipelined_round_trips", fast_trips, "round trips")
            result(f"receipt_{size}_pipelined_wall", fast_ms, "ms")
            result(f"receipt_{size}_sequential_round_trips", slow_trips, "round trips")
            result(f"receipt_{size}_sequential_wall", slow_ms, "ms")
            result(f"receipt_{size}_speedup", slow_ms / fast_ms, "x", digits=1)
            busy_trips, busy_ms = busy_figures[size]
            result(f"receipt_{size}_busy_device_round_trips", busy_trips, "round trips")
            result(f"receipt_{size}_busy_device_wall", busy_ms, "ms")
        receipts = len(emu.documents())
        result("receipts_fiscalised", receipts, "receipts")
    return 0


if __name__ == "__main__":
    sys.exit(main())

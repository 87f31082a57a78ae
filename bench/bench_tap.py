"""What the wire tap adds to a round trip: the same exchange straight to the emulator and
through ``kktapp.atol.tap`` (which decodes and writes every packet to a trace).

The emulator runs in this process, the tap as its own ``python -m kktapp.atol.tap`` process
(as a user runs it). A client sends Abort (C4, the smallest task-buffer request) and waits for
its answer, ROUNDS times each way, then sells RECEIPTS 10-position receipts with the driver
each way. Prints the median, mean and p99 round trip and the median receipt wall time as
``name: value unit`` lines.

Run: ``.venv/bin/python bench/bench_tap.py`` (a few seconds).
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT, percentile, result, setup_logging

from kktapp.atol import taskbuf
from kktapp.atol.driver import AtolDriver
from kktapp.atol.emulator import Emulator
from kktapp.atol.framing import Decoder, Packet, encode_packet
from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate

log = logging.getLogger("bench.tap")

ROUNDS = 500
RECEIPTS = 20


def round_trips(address: tuple[str, int]) -> list[float]:
    """Milliseconds of ROUNDS Abort → answer exchanges on one connection."""
    times = []
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        decoder = Decoder()
        for i in range(ROUNDS):
            pid = i % 0xE0
            start = time.perf_counter()
            sock.sendall(encode_packet(pid, taskbuf.encode_request(taskbuf.Abort())))
            while not any(isinstance(e, Packet) and e.id == pid for e in decoder.feed(sock.recv(4096))):
                pass
            times.append((time.perf_counter() - start) * 1000)
    return times


def receipt_times(url: str) -> list[float]:
    """Milliseconds per 10-position receipt sold with the driver."""
    positions = tuple(Position(name=f"Товар {i}", price=1000, quantity=Decimal(1), amount=1000, vat=VatRate.VAT22)
                      for i in range(10))
    receipt = Receipt(type=SettlementType.SELL, positions=positions, payments=(Payment(PaymentType.CASH, 10_000),))
    times = []
    with AtolDriver(url, timeout=10.0) as driver:
        if not driver.shift_status().state == "open":
            driver.open_shift()
        for _ in range(RECEIPTS):
            start = time.perf_counter()
            driver.sell(receipt)
            times.append((time.perf_counter() - start) * 1000)
    return times


def start_tap(target: tuple[str, int], out: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """The tap as a separate process on a free port; returns it and its address."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "kktapp.atol.tap", "--listen", "127.0.0.1:0", "--to", f"{target[0]}:{target[1]}",
         "--out", str(out)], stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    line = proc.stderr.readline()
    marker = "жду клиента на 127.0.0.1:"
    if marker not in line:
        proc.kill()
        raise RuntimeError(f"the tap did not start: {line!r}")
    return proc, ("127.0.0.1", int(line.split(marker)[1].split(",")[0]))


def main() -> None:
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emu:
        direct = (emu.host, emu.port)
        trace = Path(tmp) / "bench.jsonl"
        proc, via = start_tap(direct, trace)
        try:
            log.info("round trips: %d direct, %d through the tap", ROUNDS, ROUNDS)
            plain, tapped = round_trips(direct), round_trips(via)
            time.sleep(0.5)  # the tap frees the device when the client has gone
            sale_plain = receipt_times(emu.url)
            time.sleep(0.5)
            sale_tapped = receipt_times(f"socket://{via[0]}:{via[1]}")
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        records = len(trace.read_text(encoding="utf-8").splitlines())
    result("tap_round_trip_direct_median", statistics.median(plain), "ms", 3)
    result("tap_round_trip_via_tap_median", statistics.median(tapped), "ms", 3)
    result("tap_round_trip_added_median", statistics.median(tapped) - statistics.median(plain), "ms", 3)
    result("tap_round_trip_added_mean", statistics.mean(tapped) - statistics.mean(plain), "ms", 3)
    result("tap_round_trip_direct_p99", percentile(plain, 99), "ms", 3)
    result("tap_round_trip_via_tap_p99", percentile(tapped, 99), "ms", 3)
    result("tap_receipt10_direct_median", statistics.median(sale_plain), "ms", 1)
    result("tap_receipt10_via_tap_median", statistics.median(sale_tapped), "ms", 1)
    result("tap_trace_records", records, "records")


if __name__ == "__main__":
    main()

"""ATOL protocol cost per 10-position receipt: encoding, parsing, and the driver's system calls.

What the service spends in kktapp/atol for one receipt, without HTTP, journal or device time:

* ``atol_steps_us_per_receipt`` — building the receipt's steps (the driver's ``receipt_steps``);
* ``atol_encode_us_per_receipt`` — the batch of a sale (FN status, the receipt, the three reads
  after it) from steps to wire bytes: command fields, task body, task-buffer Add, packet framing;
* ``atol_parse_us_per_receipt`` — the device's answers to that batch, recorded from a live sale
  and fed one packet at a time (as the emulator writes them; what one read brings varies from
  run to run): packet decoder, task-buffer answers, reply fields;
* ``atol_driver_cpu_us_per_receipt`` — CPU of the thread that runs ``AtolDriver.sell`` against an
  emulator process (zero device time, no latency): everything of kktapp/atol on the host side;
  ``atol_sale_wall_ms`` — the same sales' wall time (the emulator's work included): what reading
  a batch's answers together costs a receipt in time;
* ``atol_syscalls_per_receipt`` (and the waits, reads and writes among them) — system calls of
  that thread per sale, counted by ``strace -c`` attached to the thread alone (nan without strace);
  ``atol_wakeups_per_receipt`` — how many times the link got bytes meanwhile (the decoder's
  feeds): how often answers arrive is up to the device, the calls per wake-up are ours.

The emulator runs as its own process, so neither its CPU nor its system calls are counted.
Run: ``.venv/bin/python bench/bench_protocol.py`` (about 10–30 s on a loaded machine; ``make bench`` runs it too).
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Harness, result, setup_logging

from kktapp.atol import commands, framing, taskbuf
from kktapp.atol.driver import AtolDriver, step
from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate

log = logging.getLogger("bench.protocol")

POSITIONS = 10
#: The machine is shared: every figure is the best of REPEATS samples (of MICRO_ROUNDS encodes
#: or parses, of LIVE_SALES sales), the one least disturbed by other processes.
REPEATS = 8
MICRO_ROUNDS = 250
LIVE_SALES = 20
#: Sales under strace (system calls are counted, not timed).
TRACED_SALES = 30
#: System calls that wait for the socket, read it, write it.
WAITS = {"select", "pselect6", "poll", "ppoll", "epoll_wait", "epoll_pwait"}
READS = {"read", "recvfrom", "recvmsg", "readv"}
WRITES = {"write", "sendto", "sendmsg", "writev"}
#: Calls of this script stopping strace (and the summary's total line), not of the driver.
STRACE_OWN = {"total", "kill", "wait4"}


def make_receipt(positions: int = POSITIONS) -> Receipt:
    """A sale of ``positions`` goods as 1C sends them (bench/common.onec_receipt), paid in cash."""
    items = tuple(
        Position(name=f"Товар {i}", price=19500, quantity=Decimal(1), amount=19500, vat=VatRate.VAT22)
        for i in range(1, positions + 1)
    )
    total = sum(p.amount for p in items)
    return Receipt(type=SettlementType.SELL, positions=items, payments=(Payment(PaymentType.CASH, total),),
                   cashier_name="Иванова А. А.")


def sale_steps(driver: AtolDriver, receipt: Receipt) -> list:
    """The steps of one sale's batch, as :meth:`AtolDriver.sell` sends them (no mode change)."""
    return [step("fn_status"), *driver.receipt_steps(receipt),
            step("last_sale"), step("fn_shift"), step("fn_status")]


def encode_batch(steps: list, password: int = 0) -> bytes:
    """Steps → the bytes of one write, through the same calls as the driver and its link."""
    raw = bytearray()
    for i, s in enumerate(steps):
        task = taskbuf.encode_task(password, s.command.encode(**s.params))
        flags = taskbuf.Flags.NEED_RESULT if s.command.wants_result else taskbuf.Flags.NONE
        raw += framing.encode_packet(i, taskbuf.encode_request(taskbuf.Add(i, task, flags)))
    return bytes(raw)


def parse_stream(chunks: list[bytes], replies: list[tuple[commands.Command, bytes]]) -> int:
    """The driver's decoding of one sale: packets from the chunks, their answers, the reply fields."""
    decoder = framing.Decoder()
    count = 0
    for chunk in chunks:
        for event in decoder.feed(chunk):
            taskbuf.decode_answer(event.data)
            count += 1
    for cmd, data in replies:
        cmd.decode_reply(data)
    return count


def per_call_us(fn: Callable[[], object], rounds: int, clock: Callable[[], float] = time.thread_time) -> float:
    """Mean microseconds per call of ``fn`` (the best of REPEATS runs): CPU, or what ``clock`` tells."""
    best = float("inf")
    for _ in range(REPEATS):
        start = clock()
        for _ in range(rounds):
            fn()
        best = min(best, (clock() - start) / rounds * 1e6)
    return best


def record_sale(driver: AtolDriver, receipt: Receipt) -> tuple[list[bytes], list[tuple[commands.Command, bytes]]]:
    """One live sale, recording what the driver decoded: the socket's chunks and each reply."""
    chunks: list[bytes] = []
    replies: list[tuple[commands.Command, bytes]] = []
    feed, decode_reply = framing.Decoder.feed, commands.Command.decode_reply

    def recording_feed(self: framing.Decoder, chunk: bytes) -> list:
        chunks.append(bytes(chunk))
        return feed(self, chunk)

    def recording_reply(self: commands.Command, data: bytes, **kw: object) -> dict:
        replies.append((self, bytes(data)))
        return decode_reply(self, data, **kw)

    framing.Decoder.feed = recording_feed  # type: ignore[method-assign]
    commands.Command.decode_reply = recording_reply  # type: ignore[method-assign]
    try:
        driver.sell(receipt)
    finally:
        framing.Decoder.feed = feed  # type: ignore[method-assign]
        commands.Command.decode_reply = decode_reply  # type: ignore[method-assign]
    return chunks, replies


def count_syscalls(driver: AtolDriver, receipt: Receipt, sales: int) -> dict[str, int] | None:
    """System calls of this thread over ``sales`` sales (strace attached to the thread only),
    and the link's wake-ups with bytes as "wakeups"."""
    strace = shutil.which("strace")
    if strace is None:
        log.warning("no strace: system calls not counted")
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        proc = subprocess.Popen([strace, "-c", "-o", out.name, "-p", str(threading.get_native_id())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stderr is not None
        attached = proc.stderr.readline()
        if "attached" not in attached:
            proc.wait(5)
            log.warning("strace could not attach (%s): system calls not counted", attached.strip())
            return None
        feed = framing.Decoder.feed
        wakeups = 0

        def counting_feed(self: framing.Decoder, chunk: bytes) -> list:
            nonlocal wakeups
            wakeups += 1
            return feed(self, chunk)

        framing.Decoder.feed = counting_feed  # type: ignore[method-assign]
        try:
            for _ in range(sales):
                driver.sell(receipt)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
            framing.Decoder.feed = feed  # type: ignore[method-assign]
        counts: dict[str, int] = {"wakeups": wakeups}
        for line in out.read().splitlines():
            parts = line.split()
            if len(parts) >= 5 and re.fullmatch(r"\d+", parts[3]) and parts[-1] not in STRACE_OWN:
                counts[parts[-1]] = int(parts[3])
    return counts


def main() -> int:
    """Print the figures."""
    setup_logging()
    receipt = make_receipt()
    with Harness("protocol") as harness:
        (emu,) = harness.start_emulators(1)
        with AtolDriver(emu.url) as driver:
            driver.open_shift()
            for _ in range(3):
                driver.sell(receipt)
            steps = sale_steps(driver, receipt)
            chunks, replies = record_sale(driver, receipt)
            # One chunk per packet, whatever the socket delivered together this time.
            chunks = [framing.encode_packet(p.id, p.data) for p in framing.Decoder().feed(b"".join(chunks))]
            result("atol_steps_us_per_receipt", per_call_us(lambda: sale_steps(driver, receipt), MICRO_ROUNDS), "us")
            result("atol_encode_us_per_receipt", per_call_us(lambda: encode_batch(steps), MICRO_ROUNDS), "us")
            packets = parse_stream(chunks, replies)
            result("atol_parse_us_per_receipt", per_call_us(lambda: parse_stream(chunks, replies), MICRO_ROUNDS), "us")
            result("atol_packets_received_per_receipt", packets, "packets")

            sell = functools.partial(driver.sell, receipt)
            result("atol_driver_cpu_us_per_receipt", per_call_us(sell, LIVE_SALES), "us")
            result("atol_sale_wall_ms", per_call_us(sell, LIVE_SALES, time.perf_counter) / 1000, "ms", 2)

            counts = count_syscalls(driver, receipt, TRACED_SALES)
            nan = float("nan")
            if counts is None:
                for name in ("syscalls", "waits", "reads", "writes", "wakeups"):
                    result(f"atol_{name}_per_receipt", nan, "calls")
            else:
                log.info("system calls over %d sales: %s", TRACED_SALES, counts)
                wakeups = counts.pop("wakeups")
                result("atol_syscalls_per_receipt", sum(counts.values()) / TRACED_SALES, "calls")
                for name, group in (("waits", WAITS), ("reads", READS), ("writes", WRITES)):
                    calls = sum(n for call, n in counts.items() if call in group)
                    result(f"atol_{name}_per_receipt", calls / TRACED_SALES, "calls")
                result("atol_wakeups_per_receipt", wakeups / TRACED_SALES, "wakeups")
                result("atol_syscalls_per_wakeup", sum(counts.values()) / max(wakeups, 1), "calls")
        log.info("receipts fiscalised: %d", len(emu.documents()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

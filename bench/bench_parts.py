"""The least a receipt can cost on this stack: the chosen libraries' own work, measured alone.

kkt's CPU per receipt (bench_layers.py, bench_service.py) is compared with a target of 2.0 ms.
This script measures, in one process and one run, what the parts the service cannot do without
cost by themselves, before any of kkt's own logic, for the same 10-position 1C receipt:

* ``parts_floor_app_ms`` — bench/floor_app.py called in-process (no HTTP server): Flask routing,
  reading the body, JSON with Decimal fractions, one durable SQLite write (WAL, synchronous=FULL),
  a JSON answer. What bench_service.py calls the floor, without gunicorn;
* ``parts_schema_load_ms`` — a plain marshmallow schema with the 1C receipt's fields (no limits,
  no error texts, no domain rules): the library's own cost of reading the document field by field;
* ``parts_second_commit_ms`` — the one more durable commit exactly-once needs: the accepted
  receipt is on disk before the device is touched (the floor's write), its result after;
* ``parts_wire_ms`` — the ATOL sale batch (27 tasks: FN status, the receipt, three reads) encoded
  with kktapp/atol's codec, written to a socket in one write, and the device's answers, recorded
  from a live sale and sent back by a peer thread in as many chunks as the driver usually reads,
  received with poll + recv and decoded (packets, task answers, reply fields): the protocol
  without the driver's bookkeeping;
* ``parts_handoff_ms`` — a request thread handing a job to the device's thread and waiting
  for its result (the owner is one thread per register, the request another).

Beside each part, kkt's own code doing the same job, in the same run: ``kkt_validation_ms``
(the 1C view's ``parse_receipt``: schema, limits, the fiscal rules; against
``parts_schema_load_ms``), ``kkt_driver_sale_ms`` (``AtolDriver.sell``) and ``kkt_driver_probe_ms``
(the status round trip before a document after idle time, which a closed loop of one client
pays per receipt; both against ``parts_wire_ms``).

``parts_sum_ms`` adds the parts up: the least the service could cost in-process if every line of
its own (validation rules, journal states, recovery facts, logging, the owner) were free.
``kkt_in_process_ms`` is the service itself in the same run (bench_layers.py's plain pass), and
``parts_share_of_kkt`` the share of it the parts explain. Under gunicorn add the HTTP server's
part, bench_service.py's ``floor_cpu_ms_per_request`` minus ``parts_floor_app_ms``.

Run: ``.venv/bin/python bench/bench_parts.py [--receipts 200]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import queue
import select
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_layers import InProcess, bodies, post_all, post_wsgi
from bench_protocol import encode_batch, make_receipt, per_call_us, record_sale, sale_steps
from common import Harness, onec_receipt, result, run_id, setup_logging
from marshmallow import Schema, fields

from kktapp.atol import framing, taskbuf
from kktapp.atol.commands import LIMITS as ATOL_LIMITS
from kktapp.atol.driver import AtolDriver
from kktapp.web import kkt1c

log = logging.getLogger("bench.parts")

def best_ms(fn: Callable[[], object], rounds: int, clock: Callable[[], float] = time.thread_time) -> float:
    """Milliseconds of ``clock`` per call of ``fn``: the least disturbed of several windows."""
    return per_call_us(fn, rounds, clock) / 1000


def floor_app_ms(work: Path, body: bytes, rounds: int) -> float:
    """bench/floor_app.py's POST /kkt through its WSGI callable."""
    settings = work / "floor-settings.py"
    settings.write_text(f"JOURNAL_PATH = {str(work / 'floor.sqlite3')!r}\n")
    os.environ["KKT_SETTINGS"] = str(settings)
    from floor_app import create_app

    wsgi = create_app().wsgi_app

    def post() -> None:
        status, _answer = post_wsgi(wsgi, body)
        assert status.startswith("200"), status

    post()
    return best_ms(post, rounds)


class _Position(Schema):
    Name = fields.String(required=True)
    Price = fields.Decimal(required=True)
    Quantity = fields.Decimal(required=True)
    Tax = fields.Integer(required=True)
    PositionSumm = fields.Decimal(required=True)


class _Receipt(Schema):
    DocNumber = fields.String(required=True)
    DocDate = fields.String(required=True)
    DocSumm = fields.Decimal(required=True)
    Device = fields.Integer()
    PaymentType = fields.String()
    CustomerContact = fields.String()
    ElectronicOnly = fields.Boolean()
    Goods = fields.Dict(keys=fields.String(), values=fields.Nested(_Position), required=True)


def schema_load_ms(document: dict, rounds: int) -> float:
    """A plain marshmallow load of the 1C document (the JSON already parsed, as in the service)."""
    schema = _Receipt()
    return best_ms(lambda: schema.load(document), rounds)


def validation_ms(document: dict, rounds: int) -> float:
    """kkt's own reading of the same document: the 1C view's parse_receipt (schema, limits, rules)."""
    today = dt.date.today()
    return best_ms(lambda: kkt1c.parse_receipt(document, today, {}, ATOL_LIMITS), rounds)


def second_commit_ms(work: Path, body: bytes, rounds: int) -> float:
    """One more durable commit: the result written to the row the floor's write made."""
    db = sqlite3.connect(str(work / "commit.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, body TEXT NOT NULL, result TEXT)")
    row = db.execute("INSERT INTO jobs (body) VALUES (?)", (body.decode(),)).lastrowid
    numbers = itertools.count(611)

    def commit() -> None:
        # A new result each time, as each receipt's is: an UPDATE that leaves the row as it was
        # dirties no page, and SQLite then commits without writing or syncing anything (6 µs).
        answer = json.dumps({"fd": next(numbers), "fp": "1310518922", "shift": 1, "receipt": 17})
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE jobs SET result = ? WHERE id = ?", (answer, row))
        db.execute("COMMIT")

    try:
        return best_ms(commit, rounds)
    finally:
        db.close()


def wire_ms(emulator_url: str, rounds: int) -> tuple[float, int, dict[str, float]]:
    """One sale's batch out and its recorded answers back over a socket pair, encoded and decoded.

    Also returns the driver's own figures against the same emulator: ``sale`` (AtolDriver.sell)
    and ``probe`` (the status round trip the owner makes before a document after idle time).
    """
    receipt = make_receipt()
    with AtolDriver(emulator_url) as driver:
        driver.open_shift()
        driver.sell(receipt)
        steps = sale_steps(driver, receipt)
        chunks, replies = record_sale(driver, receipt)
        driver_ms = {"sale": best_ms(lambda: driver.sell(receipt), max(10, rounds // 4)),
                     "probe": best_ms(driver.quick_status, rounds)}
    answers = b"".join(chunks)
    # Sent back in the chunking the driver reads on average (bench_protocol's wakeups per receipt).
    parts = 5
    size = -(-len(answers) // parts)
    pieces = [answers[i:i + size] for i in range(0, len(answers), size)]
    host, peer = socket.socketpair()
    host.setblocking(False)
    stop = threading.Event()

    def device() -> None:
        # Reads a batch, answers it: what the register does, at no cost to the measured thread.
        while not stop.is_set():
            try:
                data = peer.recv(65536)
            except OSError:
                return
            if not data:
                return
            for piece in pieces:
                peer.sendall(piece)

    thread = threading.Thread(target=device, name="parts-device", daemon=True)
    thread.start()
    poller = select.poll()
    poller.register(host, select.POLLIN)
    packets = [0]

    def sale() -> None:
        host.sendall(encode_batch(steps))
        decoder = framing.Decoder()
        got = 0
        while got < len(answers):
            poller.poll(1000)
            chunk = host.recv(65536)
            got += len(chunk)
            for event in decoder.feed(chunk):
                taskbuf.decode_answer(event.data)
                packets[0] += 1
        for cmd, data in replies:
            cmd.decode_reply(data)

    try:
        sale()
        per_sale = packets[0]
        return best_ms(sale, rounds), per_sale, driver_ms
    finally:
        stop.set()
        host.close()
        peer.close()
        thread.join(5)


def handoff_ms(rounds: int) -> float:
    """A job put on a queue for another thread, which answers it; the caller waits (process CPU)."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def owner() -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            job.set()

    thread = threading.Thread(target=owner, name="parts-owner", daemon=True)
    thread.start()

    def one() -> None:
        done = threading.Event()
        jobs.put(done)
        done.wait()

    try:
        return best_ms(one, rounds, time.process_time)
    finally:
        jobs.put(None)
        thread.join(5)


def kkt_ms(h: Harness, fleet: list, receipts: int) -> float:
    """The service in-process, as bench_layers.py's plain pass: process CPU per receipt."""
    app = InProcess(h, fleet, "parts")
    prefix = run_id()
    try:
        post_all(app, bodies(f"{prefix}-warm", 5), 1, [fleet[0].number])
        start = time.process_time()
        post_all(app, bodies(prefix, receipts), 1, [fleet[0].number])
        return (time.process_time() - start) * 1000 / receipts
    finally:
        app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=200, help="calls per measuring window")
    args = parser.parse_args(argv)
    setup_logging()
    rounds = args.receipts
    document = onec_receipt("parts-1")
    body = json.dumps(document, ensure_ascii=False).encode()
    parsed = json.loads(body, parse_float=Decimal)
    with Harness("parts") as h, tempfile.TemporaryDirectory(prefix="kkt-parts-") as tmp:
        work = Path(tmp)
        (emu,) = h.start_emulators(1)
        parts = {
            "floor_app": floor_app_ms(work, body, rounds),
            "schema_load": schema_load_ms(parsed, rounds),
            "second_commit": second_commit_ms(work, body, rounds),
        }
        parts["wire"], packets, driver = wire_ms(emu.url, rounds)
        parts["handoff"] = handoff_ms(rounds)
        own = {"validation": validation_ms(parsed, rounds), "driver_sale": driver["sale"],
               "driver_probe": driver["probe"]}
        kkt = kkt_ms(h, [emu], rounds)
    for name, ms in parts.items():
        result(f"parts_{name}_ms", ms, "ms", 3)
    for name, ms in own.items():
        result(f"kkt_{name}_ms", ms, "ms", 3)
    log.info("wire: %d answer packets per sale", packets)
    total = sum(parts.values())
    result("parts_sum_ms", total, "ms", 2)
    result("kkt_in_process_ms", kkt, "ms", 2)
    result("parts_share_of_kkt", total / kkt, "", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

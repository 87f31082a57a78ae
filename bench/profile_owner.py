"""Per-receipt cost of the service's own layers, in one process, without HTTP or a protocol.

A :class:`~kktapp.service.FiscalService` with a zero-time in-memory device (the test suite's
fake driver) fiscalises receipts one after another through ``submit_receipt``: what is left is
the receipt check, the journal, the device owner and the waiting. Figures:

* ``owner_cpu_ms_per_receipt`` — process CPU (every thread) per receipt, and the part of it
  spent in the kernel (``owner_system_cpu_ms_per_receipt``: mostly the WAL writes and fsyncs);
* ``owner_sql_per_receipt`` — SQL statements the journal runs per receipt (all connections);
* ``owner_commits_per_receipt`` / ``owner_durable_commits_per_receipt`` — write transactions
  per receipt, and those on the ``synchronous=FULL`` connection (each is an fdatasync of the WAL);
* ``owner_reads_per_receipt`` — SELECT statements per receipt.

``owner_snapshot_cpu_ms`` / ``owner_link_down_cpu_ms``: what a request pays to learn whether the
link is down, from the whole status snapshot or from the link flag alone.

``--profile`` prints the cProfile top functions (all threads) to stderr. fsyncs themselves are
counted from outside: ``strace -f -c -e trace=fsync,fdatasync .venv/bin/python bench/profile_owner.py``.

``--clients 4``: four callers at once, so the owner always finds the next receipt queued (the
commits between back-to-back documents differ from those of a receipt followed by idle time).

Run: ``.venv/bin/python bench/profile_owner.py [--receipts 300] [--clients 1] [--profile]``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import dataclasses
import io
import logging
import pstats
import re
import resource
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(1, str(extra))

from fakes import FakeDevice, FakeDriver, in_threads, make_receipt  # noqa: E402

from kktapp.domain import Receipt  # noqa: E402
from kktapp.journal import _COLUMNS, Journal  # noqa: E402
from kktapp.service import DeviceConfig, FiscalService  # noqa: E402

log = logging.getLogger("bench.profile_owner")
#: Literals in traced SQL (the trace shows statements with their values bound).
_ROW = " ".join(_COLUMNS.split())
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


class SqlCounter:
    """Counts statements, reads and commits on every journal connection (sqlite3 trace hook)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        #: Also count each statement by its text (``q: <first words>``).
        self.by_statement = False

    def install(self) -> None:
        original = Journal._connect
        counter = self

        def connect(journal: Journal, *args: object, **kwargs: object) -> sqlite3.Connection:
            conn = original(journal, *args, **kwargs)
            durable = bool(args[0]) if args else bool(kwargs.get("durable", True))
            state = {"tx": False}
            conn.set_trace_callback(lambda sql: counter._seen(sql, durable, state))
            return conn

        Journal._connect = connect  # type: ignore[method-assign]

    def _seen(self, sql: str, durable: bool, state: dict) -> None:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        with self._lock:
            self.counts["sql"] += 1
            if self.by_statement:
                text = _LITERALS.sub("?", " ".join(sql.split())).replace(_ROW, "<row>")
                self.counts["q: " + text[:100]] += 1
            if head in ("SELECT", "WITH"):
                self.counts["reads"] += 1
            elif sql.startswith("INSERT INTO jobs "):
                self.counts["jobs"] += 1
            if head == "BEGIN":
                state["tx"] = True
            elif head in ("COMMIT", "END"):
                state["tx"] = False
                self._commit(durable)
            elif head == "ROLLBACK":
                state["tx"] = False
            elif head in ("INSERT", "UPDATE", "DELETE", "REPLACE") and not state["tx"]:
                self._commit(durable)

    def _commit(self, durable: bool) -> None:
        self.counts["commits"] += 1
        if durable:
            self.counts["durable_commits"] += 1

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)


def receipt(positions: int) -> Receipt:
    """A sell receipt of ``positions`` different items paid in one payment."""
    base = make_receipt()
    items = tuple(dataclasses.replace(base.positions[0], name=f"Товар {i}") for i in range(positions))
    payment = dataclasses.replace(base.payments[0], amount=sum(p.amount for p in items))
    return dataclasses.replace(base, positions=items, payments=(payment,))


class ThreadProfiles:
    """cProfile in every thread started from now on (the device owner's thread included)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self.active = False

    def install(self) -> None:
        original = threading.Thread.run
        profiles = self

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time)
            profiles.profiles.append(profile)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign]

    def report(self, main: cProfile.Profile, stream: io.StringIO) -> None:
        stats = pstats.Stats(main, stream=stream)
        for profile in self.profiles:
            profile.create_stats()
            stats.add(profile)
        stats.sort_stats("tottime").print_stats(35)


def cpu_ms(call: Callable[[], object], times: int) -> float:
    """Process CPU milliseconds of one call, averaged over ``times``."""
    start = time.process_time()
    for _ in range(times):
        call()
    return (time.process_time() - start) * 1000 / times


def submit_all(service: FiscalService, document: Receipt, receipts: int, clients: int) -> bool:
    """Fiscalise ``receipts`` receipts from ``clients`` threads at once; False if one did not end done."""
    keys = iter(range(receipts))
    lock = threading.Lock()
    failed: list[str] = []

    def client(_n: int) -> None:
        while not failed:
            with lock:
                i = next(keys, None)
            if i is None:
                return
            job = service.submit_receipt(document, key=f"r-{i}", wait=30)
            if job.state != "done":
                failed.append(f"receipt {i} ended {job.state}")

    failed += [f"a client failed: {exc!r}" for exc in in_threads(client, clients)]
    for message in failed[:1]:
        log.error("%s", message)
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=300)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--clients", type=int, default=1,
                        help="callers at once (2 or more: the next receipt is always queued, as under load)")
    parser.add_argument("--profile", action="store_true", help="cProfile top functions to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    counter = SqlCounter()
    counter.install()
    threads = ThreadProfiles()
    if args.profile:
        # Whole-run profiles of the other threads (warm-up included): for where, not how much.
        threads.install()
    document = receipt(args.positions)
    with tempfile.TemporaryDirectory(prefix="kkt-profile-") as tmp:
        device = FakeDevice()
        service = FiscalService(
            str(Path(tmp) / "journal.sqlite3"), [DeviceConfig(1, "bench", "fake://")],
            driver_factory=lambda _cfg: FakeDriver(device), status_refresh=3600,
        )
        try:
            for i in range(5):  # connect, open the shift, warm every code path
                service.submit_receipt(document, key=f"warm-{i}", wait=30)
            profiler = cProfile.Profile(time.thread_time) if args.profile else None
            if profiler is not None:
                profiler.enable()
            before = counter.snapshot()
            cpu0, wall0 = time.process_time(), time.monotonic()
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            if not submit_all(service, document, args.receipts, args.clients):
                return 1
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            usage = resource.getrusage(resource.RUSAGE_SELF)
            system = usage.ru_stime - usage0.ru_stime
            after = counter.snapshot()
            if profiler is not None:
                profiler.disable()
            # What a request pays to learn whether the link is down: the whole status snapshot
            # (what the 1C contract asks today) against the link flag alone.
            status_ms = {name: cpu_ms(call, args.receipts) for name, call in (
                ("snapshot", lambda: service.snapshot(1)),
                ("link_down", lambda: getattr(service, "link_down", lambda _d: None)(1)),
            )}
        finally:
            service.stop()
            service.journal.close()
    n = args.receipts
    print(f"owner_cpu_ms_per_receipt: {cpu * 1000 / n:.3f} ms")
    print(f"owner_system_cpu_ms_per_receipt: {system * 1000 / n:.3f} ms")
    print(f"owner_wall_ms_per_receipt: {wall * 1000 / n:.3f} ms")
    for name in ("sql", "reads", "commits", "durable_commits"):
        print(f"owner_{name}_per_receipt: {(after[name] - before[name]) / n:.2f} count")
    for name, ms in status_ms.items():
        print(f"owner_{name}_cpu_ms: {ms:.3f} ms")
    if profiler is not None:
        out = io.StringIO()
        threads.report(profiler, out)
        sys.stderr.write(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

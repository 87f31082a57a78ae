"""The exchange at work: a thread that looks at the exchange folder and writes the report files.

Every ``EXCHANGE_POLL_SECONDS`` (and at once after a Z report) the poller of one process — the
one holding ``<exchange file>.lock``, as device owners hold theirs — runs, per store, the goods
loader (:mod:`.loading`) and, per register, the shift exporter (:mod:`.export`).
The device owner's Z report hook (:meth:`Exchange.shift_closed`) only records the Z report with
the device's shift counters and wakes the poller: the file is written outside the owner's
thread, so the device queue never waits for a network share.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import weakref
from typing import Any

from ..domain import FiscalResult, VatRate
from .catalogue import Catalogue, SaleItem
from .db import ExchangeDb, exchange_path
from .export import ShiftExporter
from .ledger import Ledger
from .loading import GoodsLoader
from .settings import ExchangeSettings
from .status import StatusBoard

log = logging.getLogger(__name__)

#: Seconds stop() waits for the poller thread.
STOP_TIMEOUT = 10.0


class Exchange:
    """File exchange with 1C for the registers of one service (one per process)."""

    def __init__(self, settings: ExchangeSettings, service: Any) -> None:
        self.settings = settings
        self.service = service
        self.db = ExchangeDb(exchange_path(service.journal.path))
        self.catalogue = Catalogue(self.db)
        self.ledger = Ledger(self.db, service.journal.path, include_1c=settings.include_1c_receipts)
        self.lock_path = f"{self.db.path}.lock"
        #: Set by stop(): the thread is not started again (poll() still works when called).
        self._stopped = False
        self._init_runtime()
        _exchanges.add(self)

    def _init_runtime(self) -> None:
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        # One round at a time in this process: a poll() called while the thread's round runs
        # waits for it and then makes its own, instead of taking the held file lock for
        # another process's and returning at once.
        self._round_lock = threading.Lock()
        # Per-process memory (files seen, problems logged) starts afresh in a forked child.
        self.board = StatusBoard(self.db)
        self.loader = GoodsLoader(self.settings, self.catalogue, self.board)
        self.exporter = ShiftExporter(self.settings, self.ledger, self.board)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start this process's poller thread (idempotent; a forked child starts its own)."""
        if self._pid == os.getpid() or not self.settings.enabled or self._stopped:
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="kkt-exchange", daemon=True)
            self._thread.start()
            self._pid = os.getpid()
        log.info("обмен с 1С: кассы %s, магазины %s", sorted(self.settings.registers), sorted(self.settings.stores))

    def stop(self) -> None:
        """Stop the poller thread for good and close the files."""
        self._stopped = True
        if self._pid != os.getpid():
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self._pid = None
        self.ledger.close()
        self.db.close()

    def wake(self) -> None:
        """Look at the folder now (after a Z report)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the poller must outlive any bad file or full disk
                log.exception("обмен с 1С: сбой")
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()

    # ------------------------------------------------------------------ the Z report hook

    def shift_closed(self, device: int, result: FiscalResult, driver: Any) -> None:
        """Called in the device owner's thread right after a Z report: record it, wake the poller.

        The device's shift counters (income, outcome) still hold the shift just closed until the
        next shift opens, so they are read here, before the owner goes on: they are what the
        block's totals are reconciled with.
        """
        register = self.settings.registers.get(device)
        if register is None or not register.report_file or result.test_mode:
            return
        counters = None
        read = getattr(driver, "shift_totals", None)
        if read is not None:
            try:
                income, outcome = read()
                counters = {"income": income, "outcome": outcome}
            except Exception as exc:  # noqa: BLE001 - a refused read must not stop the device queue
                log.warning("ККТ %d: сменные итоги после Z-отчёта не прочитаны: %s", device, exc)
        self.ledger.record_z(device, result.fn_number, result.shift_number,
                             {"result": result.to_dict(), "counters": counters})
        log.info("ККТ %d: Z-отчёт, смена %d: отчёт для 1С будет записан в %s", device, result.shift_number,
                 register.report_file)
        self.wake()

    # ------------------------------------------------------------------ one round

    def poll(self) -> None:
        """One round over every store and register, if this process holds the exchange lock."""
        with self._round_lock:
            self._poll_round()

    def _poll_round(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return  # another process's poller is at it
                raise
            for store in self.settings.stores.values():
                self.loader.run(store)
            for register in self.settings.registers.values():
                if register.report_file:
                    snapshot = self.service.journal.load_snapshot(register.number)
                    self.exporter.run(register, snapshot[0] if snapshot else None)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ selling from the catalogue

    def sale_item(self, device: int, *, code: str | None = None, barcode: str | None = None
                  ) -> tuple[SaleItem, VatRate] | None:
        """The catalogue item of the register's store for a code or barcode, with the store's VAT."""
        store = self.settings.store_of(device)
        if store is None:
            return None
        item = self.catalogue.sale_item(store.name, code=code, barcode=barcode)
        return (item, store.vat_rate()) if item else None

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        """What the status page shows: per store and per register."""
        stores = []
        for store in self.settings.stores.values():
            stores.append({
                "name": store.name, "main": store.main.number if store.main else None,
                "warning": store.warning, "goods": self.catalogue.count(store.name),
                "vat": store.vat_rate().value, "load": self.board.get(f"goods:{store.name}"),
            })
        registers = []
        for register in self.settings.registers.values():
            registers.append({
                "number": register.number, "name": register.name, "store": register.store,
                "main": self.settings.stores[register.store].main is register,
                "goods_file": register.goods_file, "report_file": register.report_file,
                "report": self.board.get(f"report:{register.number}"),
                "exports": self.ledger.exports(register.number, 3),
            })
        return {"stores": stores, "registers": registers}


_exchanges: weakref.WeakSet[Exchange] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for exchange in list(_exchanges):
        exchange._init_runtime()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

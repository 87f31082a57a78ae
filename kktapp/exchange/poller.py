"""The exchange at work: a thread that looks at the exchange folder and writes the report files.

Every ``EXCHANGE_POLL_SECONDS`` (and at once after a Z report) the poller of one process — the
one holding ``<exchange file>.lock``, as device owners hold theirs — does, per store, the goods
file of the main register → catalogue (then line 2 ``@`` and the other registers' goods files
deleted), and per register, every closed shift not yet exported → a block in its report file.
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
import time
import weakref
from dataclasses import dataclass
from typing import Any

from ..domain import FiscalResult, VatRate, format_rub
from .catalogue import Catalogue, SaleItem
from .db import ExchangeDb, exchange_path
from .goods import GoodsFileError, mark_loaded, parse_goods_file
from .ledger import Ledger, ShiftDocs
from .report import Block, build_block, header_present, merged_content, write_atomically
from .settings import ExchangeSettings, Register, Store

log = logging.getLogger(__name__)

#: Seconds stop() waits for the poller thread.
STOP_TIMEOUT = 10.0

OK, WARN, ERROR = "ok", "warn", "error"


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


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
        #: Goods files seen with this size and time (the settle check), by path.
        self._seen: dict[str, _Seen] = {}
        #: What was last logged per goods file or status key (a problem is not logged every poll).
        self._reported: dict[str, object] = {}
        #: Goods files (size, mtime) known bad: not read again until they change.
        self._bad: dict[str, tuple[int, int]] = {}

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
            except Exception:  # noqa: BLE001 - the poller must outlive any bad file or full disk
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
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return  # another process's poller is at it
                raise
            for store in self.settings.stores.values():
                try:
                    self._goods(store)
                except OSError as exc:
                    # Unreadable folder or file (rights, a share gone): say so, go on with the rest.
                    self._problem(f"goods:{store.name}", f"Файл товаров магазина «{store.name}» не прочитан: "
                                  f"{exc.strerror or exc} ({exc.filename or ''}). Сервис повторит попытку.")
            for register in self.settings.registers.values():
                if register.report_file:
                    self._exports(register)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ goods

    def _ready(self, path: str, register: Register) -> os.stat_result | None:
        """The goods file's stat when it may be read: complete by the flag file, or settled."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._seen.pop(path, None)
            return None
        if register.flag_file:
            return st if os.path.exists(register.flag_file) else None
        seen = self._seen.get(path)
        now = time.monotonic()
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._seen[path] = _Seen(st.st_size, st.st_mtime_ns, now)
            if self.settings.settle_seconds > 0:
                return None
            return st
        return st if now - seen.since >= self.settings.settle_seconds else None

    def _goods(self, store: Store) -> None:
        main = store.main
        if main is None:
            return
        if main.goods_file:
            st = self._ready(main.goods_file, main)
            # A loaded file (line 2 "@") is only peeked at: a large catalogue is not re-read every poll.
            if (st is not None and self._bad.get(main.goods_file) != (st.st_size, st.st_mtime_ns)
                    and not _loaded_already(main.goods_file)):
                self._load(store, main, st)
        # Goods files of the other registers are never loaded; while one lies there, 1C refuses
        # the next partial export to that register ("товары предыдущей выгрузки ещё не получены").
        for other in store.registers:
            if other is not main and other.goods_file and os.path.exists(other.goods_file):
                _remove(other.goods_file)
                log.info("обмен с 1С: удалён файл товаров %s (касса %d не основная в магазине «%s»)",
                         other.goods_file, other.number, store.name)

    def _load(self, store: Store, main: Register, st: os.stat_result) -> None:
        path = main.goods_file
        with open(path, "rb") as f:
            data = f.read()
        version = (st.st_size, st.st_mtime_ns)
        try:
            parsed = parse_goods_file(data)
            if not parsed.pending:
                return
            after = os.stat(path)
            if (after.st_size, after.st_mtime_ns) != version or len(data) != st.st_size:
                return  # still being written: next round
            self.catalogue.load(store.name, parsed, path)
        except GoodsFileError as exc:
            self._bad[path] = version
            if self._reported.get(path) != version:
                self._reported[path] = version
                log.error("обмен с 1С: файл товаров %s не загружен, %s; каталог магазина «%s» не изменён",
                          path, exc, store.name)
            self._set_status(f"goods:{store.name}", ERROR,
                             f"Файл товаров {path} не загружен: строка {exc.line}: {exc.message}. "
                             "Каталог не изменён; исправьте выгрузку в 1С и выгрузите товары снова.")
            return
        self._reported.pop(path, None)
        with open(path, "r+b") as f:
            f.seek(mark_loaded(data))
            f.write(b"@")
            f.flush()
            os.fsync(f.fileno())
        self._seen.pop(path, None)
        self._bad.pop(path, None)
        if main.flag_file:
            _remove(main.flag_file)
        mode = "замена каталога ($$$CLR)" if parsed.replace else "добавление и изменение ($$$ADD)"
        goods = sum(1 for g in parsed.goods if not g.is_group)
        log.info("обмен с 1С: магазин «%s»: загружен %s, %s: товаров %d, групп %d, штрихкодов %d", store.name, path,
                 mode, goods, len(parsed.goods) - goods, len(parsed.barcodes))
        self._set_status(f"goods:{store.name}", OK,
                         f"Загружен {os.path.basename(path)}: {mode}, товаров {goods}, "
                         f"доп. штрихкодов {len(parsed.barcodes)}, {time.strftime('%d.%m.%Y %H:%M:%S')}")

    # ------------------------------------------------------------------ reports

    def _exports(self, register: Register) -> None:
        snapshot = self.service.journal.load_snapshot(register.number)
        snap = snapshot[0] if snapshot else None
        self.ledger.scan(register.number, snap)
        for fn, shift in self.ledger.owed(register.number, snap):
            try:
                self.export(register, fn, shift)
            except OSError as exc:
                self._problem(f"report:{register.number}", f"Отчёт о смене {shift} кассы {register.number} не "
                              f"записан в {register.report_file}: {exc.strerror or exc}. Сервис повторит запись.")
                return

    def export(self, register: Register, fn: str, shift: int) -> None:
        """Write one closed shift to the register's report file, exactly once."""
        device, path = register.number, register.report_file
        old = _read(path)
        pending = self.ledger.pending(device, fn, shift)
        if pending is not None and old is not None and header_present(old, device, shift):
            # Written before a crash, not yet recorded: record it, never write it twice.
            log.warning("ККТ %d: смена %d уже в %s (запись прервалась после файла); отмечаем выгруженной",
                        device, shift, path)
            self.ledger.finish(device, fn, shift, pending["export"], pending["last_txn"])
            return
        docs = self.ledger.shift_docs(device, fn, shift)
        z = self.ledger.z_report(device, fn, shift)
        closed_at = None
        if z and z.get("result"):
            closed_at = FiscalResult.from_dict(z["result"]).datetime.replace(tzinfo=None)
        block = build_block(kkm=device, shift=shift, docs=docs.docs, first_txn=self.ledger.last_txn(device),
                            fallback_code=self.settings.fallback_code, closed_at=closed_at)
        problems = reconcile(block, docs, (z or {}).get("counters"))
        export = {"file": path, "totals": block.totals.to_dict(), "mismatch": problems,
                  "counters": (z or {}).get("counters")}
        self.ledger.begin(device, fn, shift, {"export": export, "last_txn": block.last_txn})
        content, how = merged_content(old, block)
        if _read(path) != old:
            return  # 1C touched the file meanwhile (loaded it, marked it): next round reads it again
        write_atomically(path, content)
        self.ledger.finish(device, fn, shift, export, block.last_txn)
        _log_export(register, shift, block, how)
        if problems:
            text = "; ".join(problems)
            log.error("ККТ %d: сверка смены %d не сошлась: %s", device, shift, text)
            self._set_status(f"report:{register.number}", ERROR,
                             f"Смена {shift}: сверка с Z-отчётом не сошлась: {text}")
        else:
            t = block.totals
            self._set_status(f"report:{register.number}", OK,
                             f"Смена {shift} выгружена в {os.path.basename(path)} "
                             f"({time.strftime('%d.%m.%Y %H:%M')}): чеков {t.receipts}, продажи "
                             f"{format_rub(t.sales)} ₽, возвраты {format_rub(t.returns)} ₽; сверка с Z-отчётом сошлась")

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

    def _problem(self, key: str, message: str) -> None:
        """An error for the log (once while it lasts, not every poll) and the status page."""
        if self._reported.get(key) != message:
            self._reported[key] = message
            log.error("обмен с 1С: %s", message)
        self._set_status(key, ERROR, message)

    def _set_status(self, key: str, level: str, message: str) -> None:
        if level == OK:
            self._reported.pop(key, None)
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO status (key, level, message, updated_at) VALUES (?, ?, ?, ?)"
                         " ON CONFLICT(key) DO UPDATE SET level=excluded.level, message=excluded.message,"
                         " updated_at=excluded.updated_at", (key, level, message, time.time()))

    def status(self) -> dict:
        """What the status page shows: per store and per register, problems first."""
        rows = {r["key"]: dict(r) for r in self.db.conn().execute("SELECT * FROM status")}
        stores = []
        for store in self.settings.stores.values():
            goods = rows.get(f"goods:{store.name}")
            stores.append({
                "name": store.name, "main": store.main.number if store.main else None,
                "warning": store.warning, "goods": self.catalogue.count(store.name),
                "vat": store.vat_rate().value,
                "load": {"level": goods["level"], "message": goods["message"]} if goods else None,
            })
        registers = []
        for register in self.settings.registers.values():
            report = rows.get(f"report:{register.number}")
            registers.append({
                "number": register.number, "name": register.name, "store": register.store,
                "main": bool(register.main or (self.settings.stores[register.store].main is register)),
                "goods_file": register.goods_file, "report_file": register.report_file,
                "report": {"level": report["level"], "message": report["message"]} if report else None,
                "exports": self.ledger.exports(register.number, 3),
            })
        return {"stores": stores, "registers": registers}


def reconcile(block: Block, docs: ShiftDocs, counters: dict | None) -> list[str]:
    """Differences between the block and what the FN and the Z report's counters say (Russian)."""
    t = block.totals
    problems = []
    if (t.sales, t.returns) != (docs.fn_sales, docs.fn_returns):
        problems.append(f"в файле продажи {format_rub(t.sales)}, возвраты {format_rub(t.returns)}; по ФН "
                        f"{format_rub(docs.fn_sales)} и {format_rub(docs.fn_returns)}")
    if counters:
        sales = int(counters["income"]) - docs.left_out_income
        returns = int(counters["outcome"]) - docs.left_out_outcome
        if (t.sales, t.returns) != (sales, returns):
            problems.append(f"в файле продажи {format_rub(t.sales)}, возвраты {format_rub(t.returns)}; "
                            f"по сменным итогам ККТ (без чеков, не идущих в файл) {format_rub(sales)} и "
                            f"{format_rub(returns)}")
    return problems


def _log_export(register: Register, shift: int, block: Block, how: str) -> None:
    t = block.totals
    verb = {"created": "создан", "appended": "дописан", "replaced": "перезаписан"}[how]
    log.info("ККТ %d: смена %d выгружена, файл %s %s: чеков %d, продажи %s, возвраты %s, внесения %s, выплаты %s",
             register.number, shift, register.report_file, verb, t.receipts, format_rub(t.sales),
             format_rub(t.returns), format_rub(t.cash_in), format_rub(t.cash_out))


def _loaded_already(path: str) -> bool:
    """Line 2 of the goods file is "@" (read from the file's first bytes only)."""
    with open(path, "rb") as f:
        head = f.read(64)
    lines = head.split(b"\n")
    return len(lines) > 1 and lines[1].startswith(b"@")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_exchanges: weakref.WeakSet[Exchange] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for exchange in list(_exchanges):
        exchange._init_runtime()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

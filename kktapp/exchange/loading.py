"""Goods files → catalogue: when a file may be read, loading it, marking it, the other registers' files.

Per store: the main register's goods file is loaded once it is complete (its size and time
unchanged since the previous poll, and then 1C's flag file written after it when one is
configured, otherwise EXCHANGE_SETTLE_SECONDS of no change), then line 2 becomes ``@`` as a
register marks it; the goods files of the store's other registers are deleted, as the seed's
service does (1C refuses its next partial export while a previous file is still unloaded).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass, replace

from .catalogue import AppliedFile, Catalogue
from .goods import LOADED, GoodsFile, GoodsFileError, mark_loaded, parse_goods_file
from .settings import ExchangeSettings, Register, Store
from .status import StatusBoard, os_error_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass(frozen=True)
class _Applied:
    """A goods file taken into the catalogue whose "@" is not written yet."""

    version: tuple[int, int]
    summary: str


class GoodsLoader:
    """Loads the stores' goods files; keeps per-process memory of what it has seen."""

    def __init__(self, settings: ExchangeSettings, catalogue: Catalogue, status: StatusBoard) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.status = status
        #: Goods files seen with this size and time (the settle check), by path.
        self._seen: dict[str, _Seen] = {}
        #: Goods files (size, mtime) known bad: not read again until they change.
        self._bad: dict[str, tuple[int, int]] = {}
        #: Goods files taken in whose "@" could not be written yet, by path (size and time as read).
        self._applied: dict[str, _Applied] = {}
        #: Status keys of stores whose goods folder or file could not be reached last time.
        self._unreachable: set[str] = set()

    def run(self, store: Store) -> None:
        """One look at the store's goods files; unreadable files are shown, not raised."""
        key = f"goods:{store.name}"
        try:
            self._run(store, key)
        except OSError as exc:
            # Unreadable folder or file (rights, a share gone): say so, go on with the rest.
            self._unreachable.add(key)
            self.status.problem(key, f"Файл товаров магазина «{store.name}» не прочитан: {os_error_text(exc)}. "
                                "Сервис повторит попытку.")

    def _run(self, store: Store, key: str) -> None:
        main = store.main
        if main is None:
            return
        if main.goods_file and self._folder_there(main, key):
            path = main.goods_file
            applied = self._applied.get(path)
            if applied is not None and _version(path) == applied.version:
                # Taken in already, only its "@" could not be written: try that again, read nothing.
                self._mark(store, main, applied)
            else:
                st = self._ready(path, main)
                # A loaded file (line 2 "@") is only peeked at: a large catalogue is not re-read every poll.
                if (st is not None and self._bad.get(path) != (st.st_size, st.st_mtime_ns)
                        and not _loaded_already(path)):
                    self._load(store, main, st)
        # Goods files of the other registers are never loaded; while one lies there, 1C refuses
        # the next partial export to that register ("товары предыдущей выгрузки ещё не получены").
        for other in store.registers:
            if other is not main and other.goods_file and os.path.exists(other.goods_file):
                _remove(other.goods_file)
                log.info("обмен с 1С: удалён файл товаров %s (касса %d не основная в магазине «%s»)",
                         other.goods_file, other.number, store.name)

    def _folder_there(self, main: Register, key: str) -> bool:
        """Whether the goods file's folder exists; a missing one is an error on the status page.

        Without this check a wrong path or an unmounted share looks like "no goods file yet" forever.
        """
        folder = os.path.dirname(os.path.abspath(main.goods_file))
        if not os.path.isdir(folder):
            self._unreachable.add(key)
            self.status.problem(key, f"Папка {folder} не найдена: файл товаров {main.goods_file} кассы № "
                                f"{main.number} в ней не появится. Проверьте goods_file в DEVICES и что общая "
                                "папка подключена; товары не загружаются.")
            return False
        if key in self._unreachable:
            self._unreachable.discard(key)
            self._bad.pop(main.goods_file, None)  # a bad file seen before is read (and shown) again
            self.status.ok(key, f"Папка {folder} доступна; нового файла товаров в ней нет.")
        return True

    def _ready(self, path: str, register: Register) -> os.stat_result | None:
        """The goods file's stat when it may be read: unchanged since the previous poll, and then
        complete by a fresh flag file (when one is configured) or settled for EXCHANGE_SETTLE_SECONDS.

        The flag alone is not enough: one left from an earlier export (say, of a file that was
        refused and never marked, so the flag stayed) would let a file 1C is still writing be
        read. So a file is never read in the poll that first sees its size and time, and a flag
        counts only when it is not older than the file, as 1C writes it after the file.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._seen.pop(path, None)
            return None
        if stat.S_ISDIR(st.st_mode):
            # A wrong goods_file (the folder's path): shown at once, not a file that never settles.
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        seen = self._seen.get(path)
        now = time.monotonic()
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._seen[path] = _Seen(st.st_size, st.st_mtime_ns, now)
            return None
        if register.flag_file:
            return st if _flag_after(register.flag_file, st) else None
        return st if now - seen.since >= self.settings.settle_seconds else None

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
            this = AppliedFile(path, len(data), hashlib.sha256(data).hexdigest())
            last = self.catalogue.applied(store.name)
            if this.same_file(last):
                # Taken in before the "@" was written (a read-only file, then a restart; or a crash
                # between the two): applying it again would, with $$$CLR, empty and refill the
                # catalogue at every poll.
                summary = last.summary if last is not None else ""
                log.info("обмен с 1С: магазин «%s»: %s уже загружен (тот же файл), повторно не загружается",
                         store.name, path)
            else:
                summary = _summary(parsed)
                self.catalogue.load(store.name, parsed, path, replace(this, summary=summary))
                goods = sum(1 for g in parsed.goods if not g.is_group)
                log.info("обмен с 1С: магазин «%s»: загружен %s, %s: товаров %d, групп %d, штрихкодов %d",
                         store.name, path, _mode(parsed), goods, len(parsed.goods) - goods, len(parsed.barcodes))
        except GoodsFileError as exc:
            self._bad[path] = version
            self.status.problem(f"goods:{store.name}",
                                f"Файл товаров {path} не загружен: {exc}. Каталог "
                                "магазина не изменён; исправьте выгрузку в 1С и выгрузите товары снова.")
            return
        self._bad.pop(path, None)
        if main.flag_file:
            _remove(main.flag_file)
        self._mark(store, main, _Applied(version, summary))

    def _mark(self, store: Store, main: Register, applied: _Applied) -> None:
        """Write "@" into line 2 as a register does; a file that cannot be written is said so."""
        path, key = main.goods_file, f"goods:{store.name}"
        self._applied[path] = applied
        try:
            marked = write_mark(path, applied.version)
        except OSError as exc:
            self.status.problem(key, f"Файл товаров {path} загружен ({applied.summary}), но отметку @ записать "
                                f"не удалось: {os_error_text(exc, writing=True)}. Второй раз этот файл не "
                                "загружается; пока во второй строке файла #, 1С не разрешит следующую выгрузку "
                                "изменений: дайте пользователю сервиса право на запись в файл.")
            return
        del self._applied[path]
        if marked:
            self.status.ok(key, f"Загружен {os.path.basename(path)}: {applied.summary}")


def _mode(parsed: GoodsFile) -> str:
    return "замена каталога ($$$CLR)" if parsed.replace else "добавление и изменение ($$$ADD)"


def _summary(parsed: GoodsFile) -> str:
    """What a load did, for the status page."""
    goods = sum(1 for g in parsed.goods if not g.is_group)
    return (f"{_mode(parsed)}, товаров {goods}, доп. штрихкодов {len(parsed.barcodes)}, "
            f"{time.strftime('%d.%m.%Y %H:%M:%S')}")


def write_mark(path: str, version: tuple[int, int]) -> bool:
    """Line 2 of the goods file becomes "@"; False (nothing written) when the file is no longer
    the version read: 1C may have written its next export meanwhile, and an "@" there would mark
    an unread catalogue as loaded. The check and the write are on one open file.
    """
    with open(path, "r+b") as f:
        st = os.fstat(f.fileno())
        if (st.st_size, st.st_mtime_ns) != version:
            return False
        f.seek(mark_loaded(f.read(4096)))
        f.write(LOADED.encode())
        f.flush()
        os.fsync(f.fileno())
    return True


def _version(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _flag_after(flag: str, goods: os.stat_result) -> bool:
    """The flag file exists and was written no earlier than the goods file."""
    try:
        return os.stat(flag).st_mtime_ns >= goods.st_mtime_ns
    except FileNotFoundError:
        return False


def _loaded_already(path: str) -> bool:
    """Line 2 of the goods file is "@" (read from the file's first bytes only)."""
    with open(path, "rb") as f:
        head = f.read(64)
    lines = head.split(b"\n")
    return len(lines) > 1 and lines[1].startswith(b"@")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

"""FiscalService: what the web contracts call to fiscalise receipts and run device operations.

A request becomes a job in the durable :class:`~kktapp.journal.Journal` (with its idempotency
key and payload fingerprint) before anything touches a device; the device's single owner
(:mod:`kktapp.owner`, one per device across all processes) executes it in FIFO order; the caller
waits for the outcome up to ``wait`` seconds and gets the :class:`Job` in whatever state it is
then. A repeat with the same key returns the stored job without touching the device.

Retry after failure: a ``failed`` job was certainly not fiscalised (the device refused it before
forming a document), so the same key may be sent again and runs as a new attempt (a new job id),
with the same or a corrected payload. Only a live job (queued, sending, unknown, done) holds a
key; a different payload under a live key is a :class:`~kktapp.errors.Conflict`.

A job queued while the device is unreachable stays queued and is fiscalised when the link is
back (nothing accepted is lost); the caller sees state ``queued`` with the reason.

Waiting: the request listens under the new job's id before the job exists, so an owner in this
process (which holds the device's link) hands the changed job straight to it: nothing is read
back or decoded. A job whose device another process owns is found by polling its state alone,
backing off to WAIT_POLL_MAX; the whole row is read once, when it is the answer.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .device import DeviceLimits, Driver
from .domain import DomainError, FiscalResult, Receipt, TextLine, check_receipt, format_rub
from .errors import (
    Cancelled,
    Disabled,
    NotCancellable,
    NotFound,
    NotSettleable,
    QueueFull,
    ResultCode,
    SettledNotFiscalised,
    ValidationFailed,
)
from .journal import (
    CANCELLED_CODE,
    FAILED,
    FINISHED,
    QUEUED,
    RECEIPT,
    UNKNOWN,
    Job,
    Journal,
    QueueLimit,
    document_total,
    receipt_from_json,
    receipt_to_json,
)
from .owner import OPERATIONS, DeviceOwner, Reasons, kind_name
from .wakeup import Wakeups

__all__ = [
    "DeviceConfig", "FiscalService", "Job", "fingerprint", "receipt_from_json", "receipt_to_json",
]

log = logging.getLogger(__name__)

#: First and longest pause between journal polls while waiting for a job owned by another
#: process (an in-process owner wakes the waiter at once).
WAIT_POLL_MIN = 0.002
WAIT_POLL_MAX = 0.02
#: The fallback poll of a waiter that other processes' owners wake (a lost wake-up costs this).
WAIT_WOKEN_POLL = 0.25
#: While this process owns the device its owner hands every change to the waiter, which reads
#: the journal only this often anyway: the lock may pass to another process mid-wait.
WAIT_OWNED_CHECK = 1.0
#: What a waiting request reads from the journal before it waits again (FiscalService._wait).
_READ_NOTHING, _READ_STATE, _READ_ROW = 0, 1, 2
#: Seconds stop() waits for a device thread to finish its current job.
STOP_TIMEOUT = 15.0
#: Hours a document the owner gave up on stays listed for the operator (snapshot "attention").
ATTENTION_HOURS = 24
#: Why a receipt in this state cannot be cancelled (409), for the operator.
CANCEL_REFUSALS = {
    "sending": "чек уже отправляется в ККТ: отменить нельзя, дождитесь результата",
    "unknown": ("результат чека выясняется (он мог быть пробит): отменить нельзя; сервис завершит его сам, "
                "а если не может — проверьте ФН или кабинет ОФД и нажмите «Пробит» или «Не пробит»"),
    "done": "чек уже пробит: отменить нельзя, при необходимости оформите чек возврата",
    "failed": "чек не пробит (ошибка или уже отменён): отменять нечего",
}
#: Why a job cannot be settled by hand (409): only an unknown outcome is the operator's to decide.
SETTLE_REFUSALS = {
    "queued": "документ ещё в очереди и не отправлялся в ККТ: решать нечего (его можно отменить)",
    "sending": "документ сейчас отправляется в ККТ: дождитесь результата",
    "done": "результат уже установлен: документ пробит",
    "failed": "результат уже установлен: документ не пробит",
}
#: Largest fiscal document number and fiscal sign (both 32-bit in the FN).
MAX_FN_NUMBER = 0xFFFFFFFF
#: Seconds a client is told to wait (Retry-After) when a device's queue is full.
QUEUE_RETRY_AFTER = 30
#: Operations that wipe device data; refused unless ALLOW_DEVICE_RESET.
RESET_OPERATIONS = frozenset({"reset_summary", "tech_reset"})


@dataclass
class DeviceConfig:
    """One configured cash register."""

    number: int
    name: str
    url: str
    access_password: str = "0000"
    operator_password: str = "30"
    baudrate: int = 115200
    #: Protocol family: "atol" or "shtrih" (PROTOCOLS).
    protocol: str = "atol"


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # A field added later marks itself so: at its default it is left out, and what was
        # fingerprinted before it existed keeps its fingerprint (a retry is not a conflict).
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
                if not (f.metadata.get("fingerprint") == "omit_default" and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, Decimal as str)."""
    text = json.dumps(obj, default=_canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atol_driver_factory(config: DeviceConfig) -> Driver:
    """Production driver: ATOL protocol v3 over the configured URL (imported on first use)."""
    from .atol.driver import AtolDriver

    return AtolDriver(
        config.url,
        access_password=config.access_password,
        operator_password=config.operator_password,
        baudrate=config.baudrate,
    )


def _atol_limits() -> DeviceLimits:
    from .atol.commands import LIMITS

    return LIMITS


def shtrih_driver_factory(config: DeviceConfig) -> Driver:
    """Shtrih-M protocol v1 over the configured URL; the operator password serves every command."""
    from .shtrih.driver import ShtrihDriver

    return ShtrihDriver(config.url, password=config.operator_password, baudrate=config.baudrate)


def _shtrih_limits() -> DeviceLimits:
    from .shtrih.commands import LIMITS

    return LIMITS


#: Driver factory of each protocol a DEVICES entry may name, and the limits of its commands.
PROTOCOLS: dict[str, Callable[[DeviceConfig], Driver]] = {"atol": atol_driver_factory, "shtrih": shtrih_driver_factory}
PROTOCOL_LIMITS: dict[str, Callable[[], DeviceLimits]] = {"atol": _atol_limits, "shtrih": _shtrih_limits}


def protocol_driver_factory(config: DeviceConfig) -> Driver:
    """The driver for the device's protocol."""
    return PROTOCOLS[config.protocol](config)


def _protocol(value: object) -> str:
    name = str(value or "atol").strip().lower()
    if name not in PROTOCOLS:
        raise ValueError(f"DEVICES: protocol {value!r} неизвестен; допустимо: {', '.join(PROTOCOLS)}")
    return name


def _parse_hhmm(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        hour, minute = (int(x) for x in str(value).strip().split(":"))
    except ValueError:
        raise ValueError(f"AUTO_CLOSE_TIME: ожидается ЧЧ:ММ, получено {value!r}") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"AUTO_CLOSE_TIME: ожидается ЧЧ:ММ, получено {value!r}")
    return hour, minute


_services: weakref.WeakSet[FiscalService] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for service in list(_services):
        service._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FiscalService:
    """Journal, per-device queues and owners; one instance per process (``app.extensions["kkt"]``)."""

    def __init__(
        self,
        journal: Journal | str,
        devices: Iterable[DeviceConfig],
        *,
        driver_factory: Callable[[DeviceConfig], Driver] | None = None,
        test_mode: bool = False,
        auto_close_time: str | None = None,
        status_refresh: float = 10.0,
        retention_days: float = 30,
        cashier_name: str = "",
        cashier_inn: str = "",
        allow_device_reset: bool = False,
        queue_limit: int = 500,
    ) -> None:
        self.journal = journal if isinstance(journal, Journal) else Journal(journal, retention_days=retention_days)
        self.devices: dict[int, DeviceConfig] = {d.number: d for d in devices}
        self.driver_factory = driver_factory or protocol_driver_factory
        #: What a document may hold (from the driver's command layouts); a factory may carry its
        #: own ``limits``, test doubles of an ATOL device use the ATOL ones.
        self.limits: DeviceLimits = getattr(self.driver_factory, "limits", None) or _atol_limits()
        if self.driver_factory is protocol_driver_factory and self.devices:
            # The first device's protocol gives the service-wide limits; device_limits() is exact.
            self.limits = PROTOCOL_LIMITS[next(iter(self.devices.values())).protocol]()
        self.test_mode = bool(test_mode)
        self.auto_close_time = _parse_hhmm(auto_close_time)
        self.status_refresh = float(status_refresh)
        self.cashier_name = cashier_name or ""
        self.cashier_inn = cashier_inn or ""
        self.allow_device_reset = bool(allow_device_reset)
        #: Called as observer(device, z_result, driver) in the owner's thread after every Z report.
        self.shift_observers: list[Callable[[int, FiscalResult, Driver | None], None]] = []
        self.queue_limit = int(queue_limit)
        self._init_runtime()
        _services.add(self)

    def _init_runtime(self) -> None:
        self._owners: dict[int, DeviceOwner] = {}
        self._started_pid: int | None = None
        self._atexit_registered = False
        self._start_lock = threading.Lock()
        # Waiters of this process by job id: the owner wakes exactly the ones concerned.
        self._waiters: dict[str, list[_Waiter]] = {}
        self._waiters_lock = threading.Lock()
        # Owners in other processes wake this process's waiters through it, and processes that
        # queue a job for a device owned here wake its owner (listening starts with start()).
        self._wakeups = Wakeups(self.journal.path, self._woken, self._queued_elsewhere)

    @classmethod
    def from_config(cls, config: Mapping) -> FiscalService:
        """Build from Flask config (see conf.py); starts no threads and opens no device."""
        access = str(config.get("ACCESS_PASSWORD", "0000"))
        operator = str(config.get("OPERATOR_PASSWORD", "30"))
        baudrate = int(config.get("DEVICE_BAUDRATE", 115200))
        protocol = config.get("DEVICE_PROTOCOL", "atol")
        devices: list[DeviceConfig] = []
        listed = config.get("DEVICES")
        if listed:
            for item in listed:
                number = int(item["number"])
                devices.append(DeviceConfig(
                    number=number,
                    name=str(item.get("name") or f"Касса {number}"),
                    url=str(item["url"]),
                    access_password=str(item.get("access_password", access)),
                    operator_password=str(item.get("operator_password", operator)),
                    baudrate=int(item.get("baudrate", baudrate)),
                    protocol=_protocol(item.get("protocol", protocol)),
                ))
        elif config.get("DEVICE_URL"):
            devices.append(DeviceConfig(
                number=1, name=str(config.get("DEVICE_NAME") or "Касса 1"), url=str(config["DEVICE_URL"]),
                access_password=access, operator_password=operator, baudrate=baudrate,
                protocol=_protocol(protocol),
            ))
        path = config.get("JOURNAL_PATH") or os.path.join(os.getcwd(), "journal.sqlite3")
        return cls(
            str(path),
            devices,
            # Tests and special set-ups may inject a driver factory through the config.
            driver_factory=config.get("KKT_DRIVER_FACTORY"),
            test_mode=bool(config.get("TEST_MODE", False)),
            auto_close_time=config.get("AUTO_CLOSE_TIME"),
            status_refresh=float(config.get("STATUS_REFRESH_SECONDS", 10)),
            retention_days=float(config.get("RESULT_RETENTION_DAYS", 30)),
            cashier_name=str(config.get("CASHIER_NAME") or ""),
            cashier_inn=str(config.get("CASHIER_INN") or ""),
            allow_device_reset=bool(config.get("ALLOW_DEVICE_RESET", False)),
            queue_limit=int(config.get("DEVICE_QUEUE_LIMIT", 500)),
        )

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """Start the device owners of this process (idempotent; a forked child starts its own)."""
        pid = os.getpid()
        if self._started_pid == pid:
            return
        with self._start_lock:
            if self._started_pid == pid:
                return
            self._owners = {n: DeviceOwner(self, n, self._driver_opener(cfg)) for n, cfg in self.devices.items()}
            for owner in self._owners.values():
                owner.start()
            self._started_pid = pid
            # Listed before this process accepts any job: an owner elsewhere that finishes the
            # job finds this process's entry and wakes its waiter.
            self._wakeups.listen()
            if not self._atexit_registered:
                # A weak reference: the exit hook must not keep every service object alive
                # (tests create hundreds of them).
                atexit.register(_stop_at_exit, weakref.ref(self))
                self._atexit_registered = True
        log.info("сервис ККТ запущен в процессе %d: кассы %s", pid, sorted(self.devices))

    def stop(self) -> None:
        """Stop the device owners: each finishes its current job and releases its device."""
        if self._started_pid != os.getpid():
            return
        owners = list(self._owners.values())
        for owner in owners:
            owner.stop()
        for owner in owners:
            owner.join(STOP_TIMEOUT)
        self._owners = {}
        self._started_pid = None
        self._wakeups.close()

    def _driver_opener(self, config: DeviceConfig) -> Callable[[], Driver]:
        # driver_factory is read when the owner connects: tests and hooks may replace it.
        return lambda: self.driver_factory(config)

    def _forget_after_fork(self) -> None:
        # The parent's threads do not exist here and its locks may have been held at fork time.
        for owner in self._owners.values():
            owner.forget_after_fork()
        self._init_runtime()

    def shift_closed(self, device: int, result: FiscalResult, driver: Driver | None) -> None:
        """A device owner formed a Z report (any trigger): tell the observers (the 1C file exchange)."""
        for observer in list(self.shift_observers):
            try:
                observer(device, result, driver)
            except Exception:  # an observer must not break the device queue
                log.exception("ККТ %d: сбой обработчика Z-отчёта", device)

    def job_changed(self, job_id: str, job: Job | None = None) -> None:
        """Called by an in-process owner after a job's state changed: wake its waiters.

        ``job``: the row as it now is, handed over so the waiter need not read it back.
        """
        with self._waiters_lock:
            for waiter in self._waiters.get(job_id, ()):
                waiter.job = dataclasses.replace(job) if job is not None else None
                waiter.event.set()
        if job is None or job.finished:
            self._wakeups.announce(job_id)

    @property
    def owners_woken(self) -> bool:
        """Other processes that queue a job for a device owned here wake its owner (see
        :class:`~kktapp.owner.seat.OwnerHost`)."""
        return self._wakeups.listening

    def _queued_elsewhere(self, device: int) -> None:
        """Another process queued a job for ``device``: its owner here looks at the queue now."""
        owner = self._owners.get(device)
        if owner is not None:
            owner.wake()

    def _wake_owner(self, device: int) -> None:
        """The device's queue changed: its owner looks now, here or in another process."""
        owner = self._owners.get(device)
        if owner is not None:
            owner.wake()
        if owner is None or not owner.is_owner:
            # The owner may be in another process: a hint, its slow poll is the fallback.
            self._wakeups.announce_queued(device)

    def _woken(self, job_id: str) -> None:
        """Another process's owner changed ``job_id``: its waiters here read the journal now."""
        with self._waiters_lock:
            for waiter in self._waiters.get(job_id, ()):
                waiter.event.set()

    # ------------------------------------------------------------------ submitting

    def _device(self, device: int) -> DeviceConfig:
        try:
            return self.devices[int(device)]
        except (KeyError, TypeError, ValueError):
            raise NotFound(f"ККТ № {device} не настроена") from None

    def submit_receipt(
        self,
        receipt: Receipt,
        *,
        device: int = 1,
        key: str | None = None,
        fingerprint: str | None = None,
        source: str = "",
        wait: float = 30.0,
        extra: dict | None = None,
    ) -> Job:
        """Journal a receipt and wait up to ``wait`` seconds for its outcome.

        Same key and fingerprint → the stored job, without touching the device; same key with
        another fingerprint → :class:`~kktapp.errors.Conflict`. ``extra`` is kept with the job
        and never sent to the device (the catalogue codes and discounts the 1C report needs).
        """
        self._device(device)
        try:
            check_receipt(receipt)
            self.device_limits(device).check(receipt)
        except DomainError as exc:
            raise ValidationFailed(exc.field, exc.message, exc.value) from None
        payload = {"receipt": receipt_to_json(receipt)}
        if extra:
            payload["extra"] = extra
        return self._submit(RECEIPT, payload, device, key, fingerprint or _fingerprint(payload), source, wait)

    def submit(
        self,
        op: str,
        params: dict | None = None,
        *,
        device: int = 1,
        key: str | None = None,
        fingerprint: str | None = None,
        wait: float = 30.0,
    ) -> Job:
        """Journal a device operation (see :data:`kktapp.owner.policy.OPERATIONS`) and wait for it."""
        self._device(device)
        if op not in OPERATIONS:
            raise ValidationFailed("operation", "неизвестная операция", op)
        if op in RESET_OPERATIONS and not self.allow_device_reset:
            raise Disabled()
        try:
            params = _check_params(op, dict(params or {}), self.device_limits(device))
        except DomainError as exc:
            raise ValidationFailed(exc.field, exc.message, exc.value) from None
        payload = {"params": params}
        return self._submit(op, payload, device, key, fingerprint or _fingerprint({"op": op, **payload}), "", wait)

    def device_limits(self, device: int = 1) -> DeviceLimits:
        """The limits documents for this device are checked against (NotFound for an unknown one)."""
        config = self._device(device)
        if self.driver_factory is protocol_driver_factory:
            return PROTOCOL_LIMITS[config.protocol]()
        return self.limits

    def _submit(
        self, kind: str, payload: dict, device: int, key: str | None, fp: str, source: str, wait: float
    ) -> Job:
        # Listening before the job exists: an in-process owner may finish it before accept returns.
        waiter = self._listen(str(uuid.uuid4()))
        try:
            try:
                job, created = self.journal.accept(
                    device=int(device), kind=kind, key=key, fingerprint=fp, payload=payload, source=source,
                    job_id=waiter.job_id, queue_limit=self.queue_limit,
                )
            except QueueLimit as full:
                # A repeat is always answered from the journal; only new documents meet the limit.
                log.warning("ККТ %d: в очереди %d документов, новый отклонён", int(device), full.waiting)
                raise QueueFull(QUEUE_RETRY_AFTER) from None
            if not created:
                log.info("ККТ %d: повтор %s с ключом %s: ответ из журнала (%s)", job.device, kind, key, job.state)
                self._unlisten(waiter)
                waiter = self._listen(job.id)
            self.start()
            if created:
                self._wake_owner(job.device)
            return self._wait(job, wait, waiter, fresh=created)
        finally:
            self._unlisten(waiter)

    def _listen(self, job_id: str) -> _Waiter:
        waiter = _Waiter(job_id)
        with self._waiters_lock:
            self._waiters.setdefault(job_id, []).append(waiter)
        return waiter

    def _unlisten(self, waiter: _Waiter) -> None:
        with self._waiters_lock:
            waiters = self._waiters.get(waiter.job_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(waiter.job_id, None)

    def _owned_here(self, device: int) -> bool:
        owner = self._owners.get(device)
        return owner is not None and owner.is_owner

    def _wait(self, job: Job, wait: float, waiter: _Waiter, *, fresh: bool) -> Job:
        """Wait for ``job`` to finish; ``waiter`` listened before ``job`` was read (``fresh``:
        ``job`` is current, no state change can have been missed)."""
        deadline = time.monotonic() + max(0.0, float(wait or 0))
        if job.finished or deadline <= time.monotonic():
            return self._explain(job)
        # What to read before waiting (again): nothing, the state alone (a poll), or the row.
        read = _READ_NOTHING if fresh else _READ_STATE
        delay = WAIT_POLL_MIN
        while True:
            if read == _READ_ROW:
                latest = self.journal.get(job.id)
                if latest is None:  # pruned meanwhile: keep the last known state
                    break
                job = latest
            elif read == _READ_STATE:
                # The full row only when it is the answer; a poll asks for the state alone.
                state = self.journal.state_of(job.id)
                if state is None:
                    break
                if state in FINISHED:
                    job = self.journal.get(job.id) or job
            read = _READ_NOTHING
            remaining = deadline - time.monotonic()
            if job.finished:
                break
            if remaining <= 0:
                # Changes without a hand-over (or none at all) are not in ``job``: one last read.
                job = self.journal.get(job.id) or job
                break
            owned = self._owned_here(job.device)
            # An in-process owner hands the job over at once (a change between the read above
            # and this wait is not lost: the event stays set); an owner in another process sends
            # a wake-up, and polling backs off to WAIT_POLL_MAX (WAIT_WOKEN_POLL with wake-ups)
            # in case it is lost.
            if not owned and delay == WAIT_POLL_MIN and self._wakeups.listen():
                delay = WAIT_WOKEN_POLL
            woken = waiter.event.wait(min(WAIT_OWNED_CHECK if owned else delay, remaining))
            waiter.event.clear()
            if woken and waiter.job is not None:
                job, waiter.job = waiter.job, None
            elif woken:
                # Another process's owner announces a job once it has finished: the row is
                # the answer, read it at once instead of its state first.
                read = _READ_ROW
            else:
                read = _READ_STATE
            if not owned:
                delay = min(delay * 2, max(delay, WAIT_POLL_MAX))
        return self._explain(job)

    def wait_for(self, job: Job, wait: float) -> Job:
        """Wait up to ``wait`` seconds for a job already in the journal (a repeat or a poll)."""
        self.start()
        waiter = self._listen(job.id)
        try:
            return self._wait(job, wait, waiter, fresh=False)
        finally:
            self._unlisten(waiter)

    def find_job(self, kind: str, key: str) -> Job | None:
        """The live job under a key, else its latest failed attempt (which freed the key), else None."""
        return self.journal.find_by_key(kind, key)

    def find_jobs(self, kind: str, keys: Sequence[str]) -> dict[str, Job]:
        """:meth:`find_job` of several keys in one journal read: {key: job} for those that have one."""
        return self.journal.find_by_keys(kind, keys)

    def find_receipt(self, device: int, fd_number: int | None = None) -> Job | None:
        """A fiscalised receipt of a device by its FD number (None: the latest), from the journal."""
        self._device(device)
        return self.journal.find_receipt(device, fd_number)

    # ------------------------------------------------------------------ reading

    def get_job(self, job_id: str) -> Job | None:
        """A job by id (from any process), or None."""
        # A process that only answers polls must still take a device over if its owner died.
        self.start()
        job = self.journal.get(job_id)
        return self._explain(job) if job is not None else None

    def _explain(self, job: Job) -> Job:
        """A queued job says why it waits (no link, or the queue holds for an unknown outcome)."""
        if job.state != QUEUED or job.reason:
            return job
        if self.journal.unsettled(job.device):
            job.reason = Reasons.HELD
        elif self.link_down(job.device):
            job.reason = Reasons.LINK_DOWN
        return job

    def link_down(self, device: int) -> bool:
        """The device's link is known to be down (its snapshot says so); cheap enough per request:
        for a device whose working link this process holds, nothing is read."""
        owner = self._owners.get(int(device))
        if owner is not None and owner.link_up:
            return False
        return self.journal.link_down(int(device))

    def list_receipts(self, **filters: Any) -> tuple[list[Job], int]:
        """Receipts newest first and the total that match (see :meth:`Journal.list_jobs`)."""
        jobs, total = self.journal.list_jobs(kind=RECEIPT, **filters)
        return [self._explain(j) for j in jobs], total

    def cancel_receipt(self, job_id: str, who: str = "") -> Job:
        """Cancel a receipt that is still queued; it will never reach the device and its key is free.

        Raises NotFound for an unknown id and NotCancellable (409, with the reason) for a receipt
        that may already have reached the device or is finished.
        """
        job = self.journal.get(job_id)
        if job is None or job.kind != RECEIPT:
            raise NotFound(f"чек {job_id} не найден")
        error = Cancelled(Cancelled.message + (f" ({who})" if who else "")).to_dict()
        ok, job = self.journal.cancel(job_id, error)
        assert job is not None
        if not ok:
            raise NotCancellable(CANCEL_REFUSALS.get(job.state, NotCancellable.message))
        total = receipt_from_json(job.payload["receipt"]).total
        log.warning("ККТ %d: чек %s на %s ₽ отменён оператором %s", job.device, job.key or job.id,
                    format_rub(total), who or "-")
        self.job_changed(job_id)
        return job

    def settle_by_hand(self, job_id: str, *, fiscalised: bool, fd_number: object = None, fiscal_sign: object = "",
                       who: str = "") -> Job:
        """The operator's verdict on a job whose outcome the device cannot tell; its queue moves on.

        ``fiscalised``: the operator found the document in the FN or the OFD cabinet under FD
        ``fd_number`` (ФП ``fiscal_sign`` if given): the job is done with that result. The rest
        of the result is what is certain without the device: the document's total; the receipt
        and shift numbers are 0 (unknown), the time is when the service accepted the document,
        and ``settled_by_hand`` says who settled it, when, with which FD. A receipt's owner then
        reads that document from the FN and completes the result from it, or notes why it could
        not (:meth:`Recovery.check_hand_settled`). Otherwise the job is failed with
        :class:`SettledNotFiscalised`, which frees its key for a new attempt.

        Raises NotFound, ValidationFailed (the numbers) and NotSettleable (409) for a job that is
        not ``unknown`` (the owner may have settled it a moment ago: one compare-and-set decides).
        """
        job = self.journal.get(job_id)
        if job is None:
            raise NotFound(f"задание {job_id} не найдено (или уже удалено из журнала)")
        if job.state != UNKNOWN:
            raise NotSettleable(SETTLE_REFUSALS.get(job.state, NotSettleable.message))
        now = dt.datetime.now().astimezone().replace(microsecond=0)
        mark: dict[str, Any] = {"who": who, "at": now.isoformat()}
        result = error = None
        if fiscalised:
            fd = _fn_number("fiscal_document_number", fd_number, required=True)
            sign = _fn_number("fiscal_sign", fiscal_sign, required=False)
            mark["fiscal_document_number"] = fd
            result = FiscalResult(
                fiscal_document_number=fd, fiscal_sign=str(sign or ""), receipt_number=0, shift_number=0,
                datetime=job.created_at.replace(tzinfo=None, microsecond=0), total=document_total(job),
            ).to_dict() | {"settled_by_hand": mark}
            reason = f"пробит (ФД {fd}) — установил оператор {who or '-'} вручную"
        else:
            error = SettledNotFiscalised().to_dict() | {"settled_by_hand": mark}
            reason = ""
        ok, settled = self.journal.settle_by_hand(job_id, result=result, error=error, reason=reason,
                                                  fn_check=job.kind == RECEIPT)
        assert settled is not None
        if not ok:
            raise NotSettleable(SETTLE_REFUSALS.get(settled.state, NotSettleable.message))
        log.warning("ККТ %d: %s %s: оператор %s установил результат вручную — %s", settled.device,
                    kind_name(settled.kind), settled.key or settled.id, who or "-",
                    f"пробит, ФД {mark['fiscal_document_number']}" if fiscalised else "не пробит, ключ свободен")
        self.job_changed(job_id)
        # The owner sleeps while the job holds its queue: the queue is free now.
        self._wake_owner(settled.device)
        return settled

    def waiting(self, device: int) -> list[Job]:
        """Receipts of a device not finished yet or owing a copy, oldest first (status page)."""
        self._device(device)
        return [self._explain(j) for j in self.journal.waiting(device)]

    def unsettled(self, device: int | None = None) -> list[Job]:
        """Jobs whose outcome is not settled yet (or whose paper copy is owed), oldest first."""
        if device is not None:
            self._device(device)
        self.start()
        return self.journal.unsettled(device)

    def snapshot(self, device: int = 1) -> dict:
        """The device's last known status plus live queue data; never touches the device."""
        cfg = self._device(device)
        self.start()
        stored = self.journal.load_snapshot(cfg.number)
        data: dict[str, Any]
        if stored is None:
            data = {"link": "unknown", "link_error": None, "updated_at": None}
        else:
            data, updated = stored
            data = dict(data)
            data["updated_at"] = updated.isoformat(timespec="seconds")
            # An owner refreshes at least every status_refresh seconds when idle; much older
            # means no owner is working (a long job, or the owner is stuck).
            age = (dt.datetime.now().astimezone() - updated).total_seconds()
            if age > max(60.0, 3 * self.status_refresh) and data.get("link") == "ok":
                data["link"] = "unknown"
                data["link_error"] = Reasons.NO_OWNER
        for section in ("info", "status", "shift", "fn", "totals"):
            data.setdefault(section, {})
        data.setdefault("last_document", None)
        data["device"] = cfg.number
        data["name"] = cfg.name
        data["queue"] = self.journal.queue_counts(cfg.number)
        data["unsettled"] = [
            {"id": j.id, "key": j.key, "kind": j.kind, "state": j.state, "reason": j.reason,
             "since": j.updated_at.isoformat(timespec="seconds")}
            for j in self.journal.unsettled(cfg.number)
        ]
        # Documents the owner stopped retrying (see owner.policy.MAX_SEND_ATTEMPTS): not fiscalised, no
        # longer blocking, but someone has to look at the device and send them again.
        since = self.journal.clock() - ATTENTION_HOURS * 3600
        data["attention"] = [
            {"id": j.id, "key": j.key, "kind": j.kind, "state": j.state, "reason": (j.error or {}).get("message", ""),
             "since": j.updated_at.isoformat(timespec="seconds")}
            for j in self.journal.failed_with_code(cfg.number, ResultCode.GAVE_UP, since)
        ]
        return data


class _Waiter:
    """A request of this process waiting for a job: woken, and handed the job, by the owner."""

    __slots__ = ("event", "job", "job_id")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.event = threading.Event()
        #: The job as the owner last handed it over (None: read the journal).
        self.job: Job | None = None


def cancelled_by_operator(job: Job | None, fp: str) -> bool:
    """``job`` (the latest under its key) is a receipt with this fingerprint that an operator
    cancelled: a repeat of that document is answered with the cancellation, not printed."""
    return (job is not None and job.state == FAILED and job.fingerprint == fp
            and (job.error or {}).get("code") == CANCELLED_CODE)


def _fn_number(field: str, value: object, *, required: bool) -> int | None:
    """A fiscal document number or fiscal sign as the operator typed it (digits, 1..2³²−1)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationFailed(field, "укажите номер (ФД из отчёта ФН или кабинета ОФД)")
        return None
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not text.isdecimal() or not text.isascii() or not 1 <= int(text) <= MAX_FN_NUMBER:
        raise ValidationFailed(field, f"ожидается целое число от 1 до {MAX_FN_NUMBER}", value)
    return int(text)


def _fingerprint(payload: dict) -> str:
    return fingerprint(payload)


def _check_params(op: str, params: dict, limits: DeviceLimits) -> dict:
    """Validate operation parameters before they are journalled (DomainError for what the device
    cannot carry)."""
    if op in ("cash_in", "cash_out"):
        amount = params.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValidationFailed("amount", "сумма в копейках должна быть целым числом больше нуля", amount)
        limits.check_cash(amount)
        return {"amount": amount}
    if op == "print_text":
        lines = params.get("lines")
        if not isinstance(lines, list) or not lines:
            raise ValidationFailed("lines", "нужен непустой список строк")
        checked = []
        for i, line in enumerate(lines, 1):
            if isinstance(line, TextLine):
                line = dataclasses.asdict(line)
            try:
                checked.append(dataclasses.asdict(TextLine(**line)))
            except TypeError:
                raise ValidationFailed(f"lines[{i}]", "неверное описание строки", str(line)) from None
        limits.check_lines([TextLine(**line) for line in checked])
        if not any(line["text"].strip() for line in checked):
            raise ValidationFailed("lines", "нечего печатать: все строки пустые")
        return {"lines": checked}
    return params


def _stop_at_exit(ref: weakref.ref[FiscalService]) -> None:
    service = ref()
    if service is not None:
        service.stop()

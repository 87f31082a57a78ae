"""What every piece of one device's owner shares: the host, the link, the memory, the wake-ups.

The owner pieces (:mod:`.worker`, :mod:`.shift`, :mod:`.recovery`, :mod:`.status`) never see the
service: they get an :class:`OwnerHost`, the few settings and callbacks the service offers them,
so imports run one way (service → owner → driver → protocol).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from ..device import Driver
from ..domain import FiscalResult
from ..errors import LinkError
from ..journal import Finish, Job, Journal
from .memory import DeviceState


class OwnerHost(Protocol):
    """What the device owners need from the process's service, read at the moment of use
    (settings such as the auto-close time may change while the service runs)."""

    journal: Journal
    cashier_name: str
    cashier_inn: str
    test_mode: bool
    status_refresh: float
    auto_close_time: tuple[int, int] | None

    @property
    def owners_woken(self) -> bool:
        """A job queued by another process wakes this process's owner of its device, so an
        idle owner may look at the queue seldom (False: it polls at policy.POLL_INTERVAL)."""

    def job_changed(self, job_id: str, job: Job | None = None) -> None:
        """A job's state changed: wake this process's waiters (``job``: its new row, when known)."""

    def shift_closed(self, device: int, result: FiscalResult, driver: Driver | None) -> None:
        """A Z report was formed (any trigger): tell the observers."""


class Seat:
    """One device's owner state shared by its pieces: the link, the memory and the wake-ups."""

    def __init__(self, host: OwnerHost, number: int, open_driver: Callable[[], Driver]) -> None:
        self.host = host
        self.number = number
        self.journal = host.journal
        #: Builds a new (not yet connected) driver for this device.
        self.open_driver = open_driver
        #: FN document number and shift while this process holds the link.
        self.state = DeviceState()
        self.driver: Driver | None = None
        #: Nothing holds the queue (no job sending or unknown, no copy owed) as far as this owner
        #: knows for certain: set when recovery found nothing or a job ended cleanly, cleared
        #: before anything goes to the device and on every (re)connect or error. Spares the
        #: worker the journal's "what holds my queue?" between jobs; only the owner can make
        #: a job hold the queue, so nothing another process does can falsify it.
        self.settled = False
        self.stopping = threading.Event()
        self._wake = threading.Condition()
        self._woken = False
        #: The last job's final row, not yet on disk (see :meth:`finish`).
        self.unwritten: Finish | None = None

    def device(self) -> Driver:
        """The connected driver; LinkError when there is none.

        The last job's final row is written first: nothing reaches the device while a result
        it gave is known only in memory.
        """
        self.write_unwritten()
        if self.driver is None:
            raise LinkError()
        return self.driver

    def finish(self, finished: Finish) -> None:
        """A job's final row, written with the next job's :meth:`mark_sending` when nothing
        comes between: one FULL commit between two documents instead of two. Anything else
        writes it first: the device touched again (:meth:`device`), the worker idle, stopping
        or failing. Its waiters are woken once it is on disk.
        """
        self.write_unwritten()
        self.unwritten = finished

    def write_unwritten(self) -> None:
        """Put the last job's final row on disk now (if one waits) and wake its waiters."""
        finished = self.unwritten
        if finished is None:
            return
        self.journal.write_finish(finished)
        self.unwritten = None
        self._finished(finished)

    def mark_sending(self, job: Job, fd_before: int | None) -> bool:
        """:meth:`Journal.mark_sending` with the last job's final row in the same commit."""
        finished = self.unwritten
        sent = self.journal.mark_sending(job, fd_before, finished=finished)
        if finished is not None:
            self.unwritten = None
            self._finished(finished)
        return sent

    def holds(self, job: Job) -> bool:
        """Whether ``job``'s final row waits here to be written (its waiters wait for that)."""
        return self.unwritten is not None and self.unwritten.job is job

    def _finished(self, finished: Finish) -> None:
        job = finished.job
        if isinstance(job, str):
            self.notify(job)
        else:
            self.notify(job.id, job)

    def wake(self) -> None:
        """A job was queued in this process (or the owner should stop): stop sleeping now."""
        with self._wake:
            self._woken = True
            self._wake.notify_all()

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` unless woken or stopping."""
        with self._wake:
            if not self._woken and not self.stopping.is_set():
                self._wake.wait(seconds)
            self._woken = False

    def notify(self, job_id: str, job: Job | None = None) -> None:
        """Tell this process's waiters that a job changed."""
        self.host.job_changed(job_id, job)

"""DeviceOwner: one device's election thread and, while it holds the lock, its worker.

Assembles the pieces (:mod:`.election`, :mod:`.worker`, :mod:`.shift`, :mod:`.recovery`,
:mod:`.status`) around one :class:`~.seat.Seat`; the service creates one per device and process.
"""

from __future__ import annotations

from collections.abc import Callable

from ..device import Driver
from .election import DeviceLock, Election
from .outcome import Outcomes
from .recovery import Recovery
from .seat import OwnerHost, Seat
from .shift import ShiftPolicy
from .status import StatusPublisher
from .worker import Worker


class DeviceOwner:
    """Election thread and, while this process holds the lock, the device's only worker."""

    def __init__(self, host: OwnerHost, number: int, open_driver: Callable[[], Driver]) -> None:
        self.number = number
        self.seat = Seat(host, number, open_driver)
        self.lock = DeviceLock(f"{host.journal.path}.device-{number}.lock")
        self.status = StatusPublisher(self.seat)
        outcomes = Outcomes(self.seat)
        self.shift = ShiftPolicy(self.seat, outcomes)
        self.recovery = Recovery(self.seat, outcomes, self.shift, self.status)
        self.worker = Worker(self.seat, self.lock, outcomes, self.shift, self.recovery, self.status)
        self.election = Election(number, self.lock, self.seat.stopping, self.worker.serve, self.worker.disconnect)

    @property
    def lock_path(self) -> str:
        """The lock file whose holder owns the device."""
        return self.lock.path

    @property
    def is_owner(self) -> bool:
        """This process holds the device's link now."""
        return self.election.is_owner

    @property
    def link_up(self) -> bool:
        """This process holds the device's link, open and working as far as it knows (False
        says nothing: the link may be down, or just in another process's hands)."""
        # The worker clears status.up whenever it drops the driver, so up implies a driver.
        return self.election.is_owner and self.status.up

    @property
    def driver(self) -> Driver | None:
        """The open driver while this process holds the link."""
        return self.seat.driver

    def start(self) -> None:
        """Start the election thread."""
        self.election.start()

    def stop(self) -> None:
        """Ask the thread to finish its current job and release the device."""
        self.seat.stopping.set()
        self.seat.wake()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end."""
        self.election.join(timeout)

    def wake(self) -> None:
        """A job was queued in this process: look at the queue now."""
        self.seat.wake()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread is gone and its lock fd is not ours."""
        self.lock.forget_after_fork()

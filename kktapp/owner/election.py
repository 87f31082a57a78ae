"""Electing the one process that holds a device's link.

An ATOL device accepts one connection, yet Apache mod_wsgi and gunicorn run several processes.
Every process runs one election thread per device; it tries a non-blocking ``flock`` on
``<journal>.device-N.lock`` every :data:`~.policy.ELECTION_INTERVAL` seconds. The holder alone
opens the driver and serves that device's queue. The kernel drops the lock when its process
dies (even by ``kill -9``), so another process takes over within a second and starts by
settling whatever the dead owner left in flight.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable

from . import policy

log = logging.getLogger(__package__)


class LostLock(Exception):
    """The device's lock file was removed or replaced while this process owned the device."""


class DeviceLock:
    """The lock file of one device: who holds it owns the device's link."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._last_check = 0.0

    def try_lock(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        if not self.still_ours():
            # The file was replaced between open and flock: this lock guards nothing.
            self.unlock()
            return False
        # Who owns the device, for a person looking at the lock file.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def still_ours(self) -> bool:
        """The locked file is still the one at the lock path (nobody deleted or replaced it)."""
        if self._fd is None:
            return False
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except OSError:
            return False

    def check(self, now: float) -> None:
        """Every LOCK_CHECK_INTERVAL: LostLock when the file is no longer ours."""
        if now - self._last_check < policy.LOCK_CHECK_INTERVAL:
            return
        self._last_check = now
        if not self.still_ours():
            # Someone removed the lock file: another process may lock a new one and open a
            # second link. Give the device up and compete for it again.
            raise LostLock(self.path)

    def unlock(self) -> None:
        """Release the lock (the file stays for the next holder)."""
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's lock fd is not ours."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


class Election:
    """The thread that competes for a device's lock and, while holding it, runs ``serve``.

    ``serve`` returns when asked to stop; ``release`` closes the link before the lock goes.
    """

    def __init__(self, number: int, lock: DeviceLock, stopping: threading.Event,
                 serve: Callable[[], None], release: Callable[[], None]) -> None:
        self.number = number
        self.lock = lock
        self.stopping = stopping
        self.serve = serve
        self.release = release
        self.is_owner = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the election thread (daemon: it must not keep the process alive)."""
        self._thread = threading.Thread(target=self._run, name=f"kkt-device-{self.number}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not self.lock.try_lock():
                    self.stopping.wait(policy.ELECTION_INTERVAL)
                    continue
            except OSError:
                log.exception("ККТ %d: не удалось открыть файл блокировки %s", self.number, self.lock.path)
                self.stopping.wait(policy.ELECTION_INTERVAL * 4)
                continue
            self.is_owner = True
            log.info("ККТ %d: процесс %d стал владельцем связи", self.number, os.getpid())
            try:
                self.serve()
            except LostLock:
                log.error("ККТ %d: файл блокировки %s удалён; связь с ККТ закрыта, выбираем владельца заново",
                          self.number, self.lock.path)
            except Exception:
                # A bug must not leave the device without an owner: give the link up and let
                # this or another process take over after a pause.
                log.exception("ККТ %d: сбой обработчика очереди", self.number)
                self.stopping.wait(policy.ELECTION_INTERVAL * 2)
            finally:
                self.is_owner = False
                self.release()
                self.lock.unlock()


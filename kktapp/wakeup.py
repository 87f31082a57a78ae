"""Wake-ups between the processes that share one journal (gunicorn workers, mod_wsgi daemons).

A request waits for its job in whichever process received it, while the device's owner may run
in another. Without a signal that waiter can only poll the journal, and with many registers busy
the polls cost more CPU than the receipts. Each process that waits for a job owned elsewhere
binds a Linux abstract-namespace datagram socket and leaves an empty file named after it in
``<journal>.wake/``; an owner that finishes a job sends the job id to every such socket. The
other way round, a process that queues a job for a device it does not own sends the device's
number, so the owner elsewhere takes the job at once instead of at its next look at the queue.

A datagram is only a hint: the waiter still reads the state from the journal, so a lost, late or
forged datagram costs at most one poll (the waiter keeps a slow poll as the fallback). Anything
that fails here (another OS, a read-only directory) leaves the process polling as before.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable

from .sockets import shut

log = logging.getLogger(__name__)

_instances = itertools.count(1)

#: A datagram that starts with this names a device with a new job; any other names a job.
_QUEUED = "queued:"


class Wakeups:
    """The wake-up channel of one service instance: listen for job ids and devices with new
    jobs, announce finished jobs and newly queued ones."""

    def __init__(self, journal_path: str, on_wake: Callable[[str], None],
                 on_queued: Callable[[int], None] | None = None) -> None:
        self.directory = os.path.abspath(journal_path) + ".wake"
        self._prefix = "kkt-wake-" + hashlib.sha1(self.directory.encode()).hexdigest()[:16] + "-"
        self._on_wake = on_wake
        self._on_queued = on_queued
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._name = ""
        self._pid = 0
        self._failed = False
        self._sender: socket.socket | None = None
        self._listing: list[str] = []
        # The directory's mtime when it was listed: an entry added or removed changes it, so the
        # list is read again exactly when it changed (a stat per announce, no stale window).
        self._listed_mtime: int | None = None

    # ------------------------------------------------------------------ waiting side

    def listen(self) -> bool:
        """Be reachable from the other processes (idempotent per process); False when not."""
        if self.listening:
            return True
        with self._lock:
            if self.listening:
                return True
            if self._failed:
                return False
            name = f"{os.getpid()}-{next(_instances)}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                # Bound before the file exists: a sender that finds the file and gets
                # "refused" may take it for stale and remove it.
                sock.bind("\0" + self._prefix + name)
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                with open(os.path.join(self.directory, name), "w"):
                    pass
            except OSError as exc:
                sock.close()
                self._failed = True
                log.info("пробуждение между процессами недоступно (%s): ожидание опросом журнала", exc)
                return False
            self._sock, self._name, self._pid = sock, name, os.getpid()
            threading.Thread(target=self._receive, args=(sock,), name="kkt-wakeups", daemon=True).start()
            return True

    @property
    def listening(self) -> bool:
        """This process is reachable: the other processes' announcements arrive here."""
        return self._sock is not None and self._pid == os.getpid()

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(256)
            except OSError:
                return  # closed
            if not data:
                continue
            text = data.decode("ascii", "replace")
            if not text.startswith(_QUEUED):
                self._on_wake(text)
            elif self._on_queued is not None:
                try:
                    device = int(text[len(_QUEUED):])
                except ValueError:
                    continue  # not ours: a hint is never worth a crash of this thread
                self._on_queued(device)

    def close(self) -> None:
        """Stop listening and remove this process's entry."""
        with self._lock:
            sock, self._sock = self._sock, None
            if sock is None or self._pid != os.getpid():
                return
            try:
                os.unlink(os.path.join(self.directory, self._name))
            except OSError:
                pass
            shut(sock)

    # ------------------------------------------------------------------ owner side

    def announce(self, job_id: str) -> None:
        """Tell every other listening process that ``job_id`` changed (never blocks, never raises)."""
        self._send(job_id)

    def announce_queued(self, device: int) -> None:
        """Tell every other listening process that ``device`` has a new job (never blocks, never raises)."""
        self._send(f"{_QUEUED}{int(device)}")

    def _send(self, text: str) -> None:
        try:
            mtime = os.stat(self.directory).st_mtime_ns
            if mtime != self._listed_mtime:
                self._listing, self._listed_mtime = os.listdir(self.directory), mtime
        except OSError:
            self._listing, self._listed_mtime = [], None
        if not self._listing:
            return
        own = self._name if self._pid == os.getpid() else None
        data = text.encode("ascii", "replace")
        sender = self._sender
        if sender is None:
            try:
                sender = self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError:
                return
        for name in self._listing:
            if name == own:
                continue
            try:
                sender.sendto(data, socket.MSG_DONTWAIT, "\0" + self._prefix + name)
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    # Nobody bound it: a process that ended without removing its entry.
                    try:
                        os.unlink(os.path.join(self.directory, name))
                    except OSError:
                        pass
                    self._listed_mtime = None
                # EAGAIN and the rest: the receiver is busy; its fallback poll finds the job.

"""The listening side both emulators share: bind, accept on a thread, one client at a time.

A register serves one host at a time and closes a second one at once; what a connection does
once admitted (ATOL's packets and task buffer, Shtrih's ENQ/ACK frames) is the subclass's.
"""

from __future__ import annotations

import logging
import socket
import threading

from ...sockets import shut

#: Seconds to wait for a connection's threads on close.
JOIN_TIMEOUT = 2.0


class Listener:
    """A listening socket and its accept thread; :meth:`_admit` decides on each client."""

    #: The subclass module's logger: the refusal line is counted by the fault tests there.
    log = logging.getLogger(__name__)
    #: Name of the accept thread.
    thread_name = "emu-accept"

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        """True while connections are accepted (started and powered on)."""
        return self._listener is not None

    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Bind and start accepting; port 0 picks a free port (kept for power on)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        self.host, self.port = sock.getsockname()[:2]
        self._listener = sock
        self._accept_thread = threading.Thread(target=self._accept, args=(sock,), name=self.thread_name, daemon=True)
        self._accept_thread.start()
        self.log.info("emulator listening on %s:%d", self.host, self.port)
        return self.host, self.port

    def stop_listening(self) -> None:
        """Stop accepting (the current connection is the subclass's to drop)."""
        sock, self._listener = self._listener, None
        if sock is not None:
            try:
                # shutdown wakes a thread blocked in accept() on Linux; close alone may not.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def join_accept(self) -> None:
        """Wait for the accept thread to end (after :meth:`stop_listening`)."""
        if self._accept_thread is not None and self._accept_thread is not threading.current_thread():
            self._accept_thread.join(JOIN_TIMEOUT)
        self._accept_thread = None

    def stop_serving(self) -> None:
        """Stop accepting, then drop the connection (close and power off).

        The accept thread ends before the drop: a client it took just as the listener closed is
        admitted first and dropped with the rest. Dropped first, that late client outlived a
        power-off and was served by a device that was off.
        """
        self.stop_listening()
        self.join_accept()
        self.drop()

    def drop(self) -> None:
        """Close the current connection, if any."""
        raise NotImplementedError

    def _admit(self, sock: socket.socket) -> bool:
        """Take the accepted socket as the connection and start serving it; False when another
        client holds the device (the socket is then closed here)."""
        raise NotImplementedError

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, addr = listener.accept()
            except OSError:
                return
            if not self._admit(sock):
                # Like the device: one active connection; a second client is closed at once.
                self.log.info("emulator: refusing a second connection from %s:%d", *addr[:2])
                shut(sock)
                continue
            self.log.info("emulator: connection from %s:%d", *addr[:2])

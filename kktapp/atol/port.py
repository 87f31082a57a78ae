"""The byte pipe under the ATOL link: a TCP socket of its own for socket:// URLs, pyserial for the rest.

A register on the network answers a receipt in a few dozen packets. pyserial's socket:// reads
through ``select`` before every ``recv`` and learns about at most one waiting byte, so reading
what has arrived cost four system calls; here it is a ``poll`` and one ``recv`` of all there
is. Serial ports (/dev/ttyACM0, COM3) and the other pyserial URLs (loop://, rfc2217://,
socket:// with options) keep pyserial.

Both kinds raise OSError or serial.SerialException on failure; the end of a TCP stream is a
ConnectionResetError("socket disconnected"), as pyserial words it.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Protocol
from urllib.parse import urlsplit

import serial

#: Connecting to a network register may take this long (pyserial's socket:// waits as long).
CONNECT_TIMEOUT = 5.0
#: Largest read: more than a receipt's answers.
READ_SIZE = 65536
#: After closing a TCP link, before it may be opened again: the device frees its one session
#: with a delay, and a quick reconnect would be turned away (pyserial's socket:// pauses too).
CLOSE_PAUSE = 0.3


class Port(Protocol):
    """What the link needs of a port."""

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""

    def read(self, timeout: float, linger: float = 0.0) -> bytes:
        """What arrives within ``timeout`` seconds: all that is there once a byte is, b"" on silence.

        ``linger``: once the first byte is there, wait that long before taking what has come, so
        that answers the device sends one after another are read together.
        """

    def close(self) -> None:
        """Close (best effort)."""


def open_port(url: str, *, baudrate: int, write_timeout: float) -> Port:
    """Open ``url``: OSError, ValueError or serial.SerialException when it cannot be opened."""
    parts = urlsplit(url)
    if parts.scheme == "socket" and not parts.query:
        return SocketPort(url, (parts.hostname or "", parts.port or 0), write_timeout)
    return SerialPort(serial.serial_for_url(url, baudrate=baudrate, timeout=0.2, write_timeout=write_timeout))


class SocketPort:
    """A TCP connection, non-blocking, read and written with as few system calls as it takes."""

    def __init__(self, url: str, address: tuple[str, int], write_timeout: float) -> None:
        try:
            self._sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            # pyserial's wording, which the link puts in its "нет связи" error.
            raise serial.SerialException(f"Could not open port {url}: {exc}") from exc
        # Each write is a whole batch or an Ack: Nagle's algorithm would hold an Ack back until
        # the device acknowledged the previous segment (~40 ms per round trip on Linux).
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)
        self._write_timeout = write_timeout
        self._poll = _Waiter(self._sock)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self._write_timeout
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                # The device does not take the bytes as fast as we send them: wait for room.
                if not self._poll.wait(deadline - time.monotonic(), writing=True):
                    raise serial.SerialTimeoutException("Write timeout") from None

    def read(self, timeout: float, linger: float = 0.0) -> bytes:
        # Wait first: the link reads when it expects an answer, and a recv tried before the
        # answer is there would be one more system call (measured: bench/bench_protocol.py).
        if not self._poll.wait(timeout):
            return b""
        if linger > 0:
            time.sleep(linger)
        try:
            data = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            return b""  # woken for nothing (a spurious wake-up): the link reads again
        if not data:
            raise ConnectionResetError("socket disconnected")
        return data

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset by the peer
        self._sock.close()
        time.sleep(CLOSE_PAUSE)


class _Waiter:
    """Wait until a socket can be read (or written): poll(2), or select(2) where there is no poll."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._poll = select.poll() if hasattr(select, "poll") else None

    def wait(self, timeout: float, *, writing: bool = False) -> bool:
        if timeout <= 0:
            return False
        if self._poll is None:  # pragma: no cover - Windows
            ready = select.select([], [self._sock], [], timeout) if writing else select.select(
                [self._sock], [], [], timeout)
            return any(ready)
        self._poll.register(self._sock, select.POLLOUT if writing else select.POLLIN)
        return bool(self._poll.poll(timeout * 1000))


class SerialPort:
    """A pyserial port: block for the first byte, then take what else is waiting."""

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, timeout: float, linger: float = 0.0) -> bytes:
        port = self.port
        port.timeout = timeout
        chunk = port.read(1)
        if chunk:
            if linger > 0:
                time.sleep(linger)
            # pyserial's socket:// (with options) reports at most 1 byte in in_waiting: take
            # everything without blocking, as this link always did.
            port.timeout = 0
            chunk += port.read(READ_SIZE)
        return chunk

    def close(self) -> None:
        self.port.close()

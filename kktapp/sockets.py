"""Socket helpers shared by the emulators, the wire tap and the wake-up channel."""

from __future__ import annotations

import socket


def shut(sock: socket.socket) -> None:
    """Shut a socket down both ways and close it, whatever state it is in: a thread blocked in
    ``recv`` on it returns at once (close alone does not wake it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

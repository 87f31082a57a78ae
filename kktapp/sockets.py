"""Socket helpers shared by the emulators, the wire tap and the wake-up channel."""

from __future__ import annotations

import os
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


def peer_gone(sock: socket.socket) -> bool:
    """The other side has closed (end of stream waiting) or the socket is dead. Never waits.

    Python waits for readability before a ``recv`` on a socket with a timeout, MSG_DONTWAIT or
    not; another thread may take the waiting bytes first, and the peek would then hold its caller
    (an emulator's accept thread, under its lock) for the whole timeout. The peek goes through a
    duplicate of the descriptor, a socket object without a timeout of its own.
    """
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as probe:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True

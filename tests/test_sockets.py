"""kktapp/sockets.py: the emulators' "has the host gone?" check never waits."""

from __future__ import annotations

import socket
import time

from kktapp.sockets import peer_gone


def test_peer_gone_never_waits_on_a_socket_with_a_timeout():
    # The emulators set a send timeout on the host's socket; a peek through it would wait for
    # readability first (Python's timeout handling), holding the accept thread for 5 s.
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5)
        start = time.monotonic()
        assert peer_gone(a) is False
        assert time.monotonic() - start < 1.0
        b.sendall(b"x")
        assert peer_gone(a) is False
        assert a.recv(1) == b"x"  # the peek took nothing
        assert a.gettimeout() == 5
        b.close()
        assert peer_gone(a) is True


def test_peer_gone_on_a_blocking_socket_and_a_closed_one():
    a, b = socket.socketpair()
    with b:
        assert peer_gone(a) is False
        assert a.getblocking()  # the duplicate changed nothing of the original
        a.close()
        assert peer_gone(a) is True

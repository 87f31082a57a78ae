"""The byte pipe under the ATOL link: socket:// on a socket of its own, everything else on pyserial.

What the link relies on: all bytes written, everything waiting read at once, silence as b"",
the peer's close as ConnectionResetError("socket disconnected") (which the link turns into
DeviceBusy before the device said anything), pyserial's words for a refused connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import serial

from kktapp.atol import port as port_module
from kktapp.atol.framing import encode_packet
from kktapp.atol.link import Link
from kktapp.atol.port import SerialPort, SocketPort, open_port
from kktapp.errors import DeviceBusy, LinkError


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A listening TCP socket on a free loopback port."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


@pytest.fixture(autouse=True)
def no_close_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(port_module, "CLOSE_PAUSE", 0)


def _url(listener: socket.socket) -> str:
    return f"socket://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.contextmanager
def connected(listener: socket.socket, write_timeout: float = 1) -> Iterator[tuple[SocketPort, socket.socket]]:
    """Our port to ``listener`` and the accepted peer, both closed at the end."""
    pipe = open_port(_url(listener), baudrate=115200, write_timeout=write_timeout)
    assert isinstance(pipe, SocketPort)
    peer, _ = listener.accept()
    try:
        yield pipe, peer
    finally:
        peer.close()
        pipe.close()


def _later(delay: float, send: Callable[[bytes], object], data: bytes) -> threading.Thread:
    """``send(data)`` after ``delay`` seconds, in a thread (joined by the caller)."""
    thread = threading.Thread(target=lambda: (time.sleep(delay), send(data)))
    thread.start()
    return thread


def test_a_lingering_read_takes_what_follows_the_first_bytes_and_a_plain_one_does_not(server: socket.socket):
    with connected(server) as (pipe, peer):
        peer.sendall(b"first")
        later = _later(0.05, peer.sendall, b"second")
        assert pipe.read(5, linger=0.5) == b"firstsecond"
        later.join()
        peer.sendall(b"third")
        later = _later(0.3, peer.sendall, b"fourth")
        assert pipe.read(5) == b"third"
        later.join()
        assert pipe.read(5) == b"fourth"


def test_a_serial_port_lingers_after_its_first_byte_too():
    pipe = SerialPort(serial.serial_for_url("loop://", timeout=0.2))
    try:
        pipe.write(b"ab")
        later = _later(0.05, pipe.write, b"cd")
        assert pipe.read(5, linger=0.5) == b"abcd"
        later.join()
    finally:
        pipe.close()


def test_socket_urls_get_their_own_socket_and_others_pyserial(server: socket.socket):
    pipe = open_port(_url(server), baudrate=115200, write_timeout=1)
    try:
        assert isinstance(pipe, SocketPort)
    finally:
        pipe.close()
    loop = open_port("loop://", baudrate=115200, write_timeout=1)
    try:
        assert isinstance(loop, SerialPort)
        loop.write(b"\x01\x02\x03")
        assert loop.read(1.0) == b"\x01\x02\x03"  # the first byte, then all that waits
        assert loop.read(0.01) == b""
    finally:
        loop.close()


def test_socket_reads_everything_waiting_in_one_call(server: socket.socket):
    with connected(server) as (pipe, peer):
        pipe.write(b"\xfe\x01\x00\x05\xc4")
        assert peer.recv(100) == b"\xfe\x01\x00\x05\xc4"
        answers = encode_packet(5, b"\xa3") + encode_packet(0xF0, b"\xa6\x01\x55\x00\x00")
        peer.sendall(answers)
        got = b""
        while len(got) < len(answers):
            got += pipe.read(1.0)
        assert got == answers


def test_socket_silence_is_empty_after_the_timeout(server: socket.socket):
    with connected(server) as (pipe, _peer):
        start = time.monotonic()
        assert pipe.read(0.05) == b""
        assert time.monotonic() - start >= 0.04
        assert pipe.read(0) == b""  # no time left: no wait at all


def test_peer_close_is_disconnected_and_busy_before_the_device_spoke(server: socket.socket):
    pipe = open_port(_url(server), baudrate=115200, write_timeout=1)
    peer, _ = server.accept()
    peer.close()
    with pytest.raises(ConnectionResetError, match="^socket disconnected$"):
        pipe.read(1.0)
    pipe.close()
    # The link: a device that drops a second client before answering is busy with the first.
    link = Link(_url(server))
    link.open()
    peer, _ = server.accept()
    peer.close()
    with pytest.raises(DeviceBusy):
        link.receive(time.monotonic() + 2)
    assert not link.is_open


def test_refused_connection_is_worded_as_before():
    with pytest.raises(serial.SerialException, match=r"^Could not open port socket://127\.0\.0\.1:1: "):
        open_port("socket://127.0.0.1:1", baudrate=115200, write_timeout=1)
    with pytest.raises(LinkError, match=r"нет связи с ККТ \(socket://127\.0\.0\.1:1\)"):
        Link("socket://127.0.0.1:1").open()


def test_big_write_waits_for_room_and_arrives_whole(server: socket.socket):
    data = bytes(range(256)) * 40000  # 10 MB: more than the socket buffers hold
    received = bytearray()

    def drain() -> None:  # reads from ``peer`` once the connection below is made
        time.sleep(0.1)  # the writer meets a full buffer first
        while len(received) < len(data):
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    with connected(server, write_timeout=10) as (pipe, peer):
        reader = threading.Thread(target=drain)
        reader.start()
        pipe.write(data)
        reader.join(30)
        assert bytes(received) == data


def test_write_to_a_peer_that_never_reads_times_out(server: socket.socket):
    with connected(server, write_timeout=0.2) as (pipe, _peer), pytest.raises(
            serial.SerialTimeoutException, match="Write timeout"):
        pipe.write(bytes(50_000_000))


def test_socket_sends_small_writes_at_once(server: socket.socket):
    """An Ack written while the device still owes a TCP ack must not wait for it (Nagle)."""
    with connected(server) as (pipe, _peer):
        assert pipe._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

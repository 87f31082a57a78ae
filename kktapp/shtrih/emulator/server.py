"""TCP side of the Shtrih-M emulator: protocol v1 with the ENQ/ACK/NAK handshake, one
connection at a time, latency and faults.

The device behaviour is the one shtrih-protocol.md §1.2 tells an emulator to copy [C]:
ENQ is answered NAK when idle and ACK + the answer when the last answer was not ACKed; a good
frame is ACKed before the work starts and answered when it is done; a bad LRC gets NAK. The
unACKed answer is kept by the device, not the connection, so a host that lost it re-reads it
with ENQ after reconnecting; a power cut loses it.

One thread per connection reads and answers in order: the device does one thing at a time.
Faults and timing are the ATOL emulator's (:class:`~kktapp.atol.emulator.server.Faults`,
:class:`~kktapp.atol.emulator.server.Timing`); a "task" here is one executed command.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from ...atol.emulator.listener import JOIN_TIMEOUT, Listener
from ...atol.emulator.server import Faults, Timing
from ...sockets import peer_gone, shut
from ..framing import ACK, ENQ, FILLER, NAK, BadFrame, Control, Decoder, Frame, encode_frame

log = logging.getLogger(__name__)

Execute = Callable[[bytes], bytes]
#: Seconds a send may block before the connection is given up.
SEND_TIMEOUT = 5.0


def corrupt(raw: bytes) -> bytes:
    """Flip a bit of the LRC so the host sees a bad frame (length and STX stay intact)."""
    return raw[:-1] + bytes((raw[-1] ^ 0x01,))


class Server(Listener):
    """Listening socket serving one connection at a time; keeps the unACKed answer."""

    log = log
    thread_name = "shtrih-accept"

    def __init__(self, execute: Execute, faults: Faults, timing: Timing) -> None:
        super().__init__()
        self.execute = execute
        self.faults = faults
        self.timing = timing
        #: Send a 0xFF filler before every answer frame (tolerance tests; real devices do at times).
        self.filler = False
        #: The last answer payload the host has not ACKed yet (kept across connections).
        self.kept: bytes | None = None
        #: A power cut armed for the next executed command: called in the connection's thread
        #: once that command has run, instead of answering it (see Emulator.power_cut_after_command).
        self.power_cut: Callable[[], None] | None = None
        self._conn: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def close(self) -> None:
        """Stop accepting and drop the connection."""
        self.stop_serving()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(JOIN_TIMEOUT)
        self._threads = [t for t in self._threads if t.is_alive()]

    def drop(self) -> None:
        """Close the current connection, if any."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            shut(conn)

    def _admit(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._conn is not None and not peer_gone(self._conn):
                return False
            if self._conn is not None:
                shut(self._conn)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A host that stops reading must not hold the device for ever.
            sock.settimeout(SEND_TIMEOUT)
            self._conn = sock
        t = threading.Thread(target=self._serve, args=(sock,), name="shtrih-connection", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return True

    # ------------------------------------------------------------------ one connection

    def _send(self, sock: socket.socket, raw: bytes) -> None:
        if self.timing.latency:
            time.sleep(self.timing.latency)
        sock.sendall(raw)

    def _send_answer(self, sock: socket.socket, payload: bytes) -> bool:
        """Send an answer frame with the faults that apply; False when the link was dropped."""
        raw = encode_frame(payload)
        if self.faults.take("drop_mid_frame"):
            log.info("emulator: dropping the link in the middle of an answer")
            self._send(sock, raw[: max(1, len(raw) // 2)])
            return False
        if self.faults.take("corrupt_next"):
            log.info("emulator: corrupting an answer")
            raw = corrupt(raw)
        if self.filler:
            raw = bytes((FILLER,)) + raw
        self._send(sock, raw)
        return True

    def _serve(self, sock: socket.socket) -> None:
        decoder = Decoder()
        try:
            while True:
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue  # an idle host: the device just waits
                except OSError:
                    return
                if not chunk:
                    return
                if self.timing.latency:
                    time.sleep(self.timing.latency)
                for event in decoder.feed(chunk):
                    if not self._handle(sock, event):
                        return
        except OSError:
            return
        finally:
            with self._lock:
                if self._conn is sock:
                    self._conn = None
            shut(sock)

    def _handle(self, sock: socket.socket, event: Frame | BadFrame | Control) -> bool:
        """Answer one event; False ends the connection."""
        if isinstance(event, Control):
            if event.byte == ENQ:
                kept = self.kept
                if kept is None:
                    self._send(sock, bytes((NAK,)))
                    return True
                self._send(sock, bytes((ACK,)))
                return self._send_answer(sock, kept)
            if event.byte == ACK:
                self.kept = None  # the host has the answer
            return True  # NAK: the host follows it with ENQ
        if isinstance(event, BadFrame):
            log.info("emulator: %s", event.reason)
            self._send(sock, bytes((NAK,)))
            return True
        # A new command: an answer left unACKed is forgotten, as the host moved on.
        self.kept = None
        self._send(sock, bytes((ACK,)))
        if self.timing.device_time:
            time.sleep(self.timing.device_time)
        answer = self.execute(event.payload)
        self.kept = answer
        cut, self.power_cut = self.power_cut, None
        if cut is not None:
            # The command is done; the power goes before its answer leaves (and takes the kept
            # answer with it), in this thread, so no scheduling decides where the cut lands.
            log.info("emulator: power cut after a command (its answer lost)")
            cut()
            return False
        if self.faults.task_executed():
            log.info("emulator: dropping the link after a command (answer kept, not sent)")
            return False
        return self._send_answer(sock, answer)

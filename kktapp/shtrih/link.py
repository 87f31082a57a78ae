"""Protocol v1 over pyserial (``socket://host:7778``, ``/dev/ttyACM0``, ``COM3``): one command
at a time with the ENQ/ACK/NAK handshake of shtrih-protocol.md §1.2.

The flow is what opos ``PrinterProtocol1.Send`` and javapos ``PrinterProtocol_1.send`` both do
[C]: ENQ; NAK means idle, ACK means the device still holds an unread answer, which is read,
ACKed and kept in :attr:`Link.kept` (how a host recovers an answer the link lost); then the
frame, ACK/NAK for it, the answer frame, ACK (or NAK + ENQ to have it sent again). 0xFF filler
between frames is skipped by the decoder. Every OSError/serial error becomes LinkError; the
link knows nothing about commands.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque

import serial

from ..atol.link import LinkStats, _is_peer_close
from ..errors import DeviceBusy, FrameError, LinkError
from . import model
from .framing import ACK, ENQ, NAK, BadFrame, Control, Decoder, Event, Frame, encode_frame

log = logging.getLogger(__name__)

#: Longest single blocking read; deadlines are checked between reads.
POLL = 0.2


def mask_password(payload: bytes) -> str:
    """Hex dump with the 4 password bytes after the command code masked."""
    start = 2 if payload[:1] == b"\xff" else 1
    out = payload[:start].hex(" ")
    rest = payload[start:]
    if len(rest) >= 4:
        return f"{out} ** ** ** ** {rest[4:].hex(' ')}".rstrip()
    return f"{out} {rest.hex(' ')}".rstrip()


def _no_delay(port: serial.SerialBase) -> None:
    """TCP_NODELAY on a ``socket://`` port (pyserial leaves Nagle on).

    Every command ends with our ACK and the next begins with our ENQ: two one-byte writes
    with no answer between them. With Nagle on, the ENQ waits until the device acknowledges
    the ACK segment, which a peer with delayed ACKs does only after ~40 ms: every command
    cost 40 ms more than the device needed (measured against the emulator: 45 ms per 0x11,
    0.3 ms with this; the many-clients fault trial livelocked on it).
    """
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            log.debug("TCP_NODELAY refused", exc_info=True)


class Link:
    """One open port to one Shtrih-M device. Not thread-safe: the driver's owner serialises calls."""

    def __init__(self, url: str, *, baudrate: int = 115200, stats: LinkStats | None = None) -> None:
        self.url = url
        self.baudrate = baudrate
        self.stats = stats if stats is not None else LinkStats()
        self._port: serial.SerialBase | None = None
        self._decoder = Decoder()
        self._events: deque[Event] = deque()
        self._heard = False
        #: Answers the device still held when we asked with ENQ (oldest first); the driver
        #: takes them to settle a command whose answer the link lost.
        self.kept: list[bytes] = []

    @property
    def is_open(self) -> bool:
        """The port is open."""
        return self._port is not None

    def open(self) -> None:
        """Open the URL; refused connections and missing ports raise LinkError."""
        if self._port is not None:
            return
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=POLL, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"нет связи с ККТ ({self.url}): {exc}") from exc
        _no_delay(self._port)
        self._decoder = Decoder()
        self._events.clear()
        self._heard = False
        log.info("link open: %s", self.url)

    def close(self) -> None:
        """Close the port (idempotent, best effort)."""
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a dead port may fail in any way
                log.debug("error closing %s", self.url, exc_info=True)
            log.info("link closed: %s", self.url)

    def _fail(self, exc: BaseException, doing: str) -> LinkError:
        self.close()
        if not self._heard and _is_peer_close(exc):
            # Accepted and dropped before a single byte: the device serves another client.
            return DeviceBusy()
        return LinkError(f"связь с ККТ прервана ({doing}): {exc}")

    # ------------------------------------------------------------------ bytes

    def _write(self, raw: bytes) -> None:
        if self._port is None:
            raise LinkError("нет связи с ККТ (порт закрыт)")
        try:
            self._port.write(raw)
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise self._fail(exc, "запись") from exc
        self.stats.bytes_sent += len(raw)

    def _next(self, deadline: float) -> Event | None:
        """The next event before ``deadline`` (monotonic), None on timeout."""
        while not self._events:
            if self._port is None:
                raise LinkError("нет связи с ККТ (порт закрыт)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._port.timeout = min(POLL, remaining)
                chunk = self._port.read(1)
                if chunk:
                    self._port.timeout = 0
                    chunk += self._port.read(65536)
            except (serial.SerialException, OSError) as exc:
                raise self._fail(exc, "чтение") from exc
            if chunk:
                self._heard = True
                self.stats.bytes_received += len(chunk)
                self._events.extend(self._decoder.feed(chunk))
        return self._events.popleft()

    def _drain(self) -> None:
        """Forget what arrived unasked before a new exchange (opos and javapos do the same)."""
        self._events.clear()
        if self._port is None:
            return
        try:
            self._port.timeout = 0
            stale = self._port.read(65536)
        except (serial.SerialException, OSError) as exc:
            raise self._fail(exc, "чтение") from exc
        if stale:
            log.debug("%s: %d stale bytes dropped", self.url, len(stale))
        self._decoder.reset()

    def _control(self, timeout: float) -> int | None:
        """The next control byte within ``timeout`` (frames met meanwhile are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._next(deadline)
            if event is None:
                return None
            if isinstance(event, Control):
                return event.byte
            log.debug("%s: unexpected %s while waiting for a control byte", self.url, event)

    def _read_frame(self, timeout: float) -> Frame | BadFrame | None:
        """The next frame: ``timeout`` for its first byte, then the byte timeout [S javapos]."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._next(deadline)
            if event is None:
                if self._decoder.in_frame:
                    deadline = time.monotonic() + model.BYTE_TIMEOUT
                    event = self._next(deadline)
                    if event is None:
                        self._decoder.reset()
                        return None
                else:
                    return None
            if isinstance(event, (Frame, BadFrame)):
                return event
            # A stray ENQ/ACK/NAK here is noise.

    def _read_answer(self, timeout: float) -> bytes:
        """Read an answer frame and ACK it; a bad LRC gets NAK + ENQ, as the vendors do."""
        for _ in range(model.ANSWER_REREADS):
            frame = self._read_frame(timeout)
            if frame is None:
                raise self._timeout("ответ")
            if isinstance(frame, Frame):
                self._write(bytes((ACK,)))
                self.stats.packets_received += 1
                return frame.payload
            self.stats.bad_packets += 1
            log.info("%s: %s; asking for the answer again", self.url, frame.reason)
            self.stats.resend_requests += 1
            self._write(bytes((NAK,)))
            self._write(bytes((ENQ,)))
            if self._control(model.CONTROL_TIMEOUT) != ACK:
                raise self._timeout("повтор ответа")
            timeout = model.BYTE_TIMEOUT
        raise FrameError("ответ ККТ повреждён (ошибка LRC)")

    def _timeout(self, what: str) -> LinkError:
        # A late answer would land in the middle of the next exchange: start afresh.
        self.close()
        return LinkError(f"ККТ не ответила вовремя ({what})")

    # ------------------------------------------------------------------ handshake

    def ready(self) -> None:
        """ENQ until the device says NAK (idle); answers it still held go to :attr:`kept`."""
        self._drain()
        failures = 0
        while True:
            self._write(bytes((ENQ,)))
            byte = self._control(model.CONTROL_TIMEOUT)
            if byte == NAK:
                return
            if byte == ACK:
                answer = self._read_answer(model.BYTE_TIMEOUT)
                log.info("%s: the device held an unread answer %s", self.url, answer[:16].hex(" "))
                self.kept.append(answer)
                del self.kept[:-model.KEPT_ANSWERS]
                failures += 1  # a device that never stops answering ACK is as broken as a silent one
                if failures >= model.ENQ_ATTEMPTS + model.KEPT_ANSWERS:
                    raise self._timeout("ENQ: ККТ всё время отдаёт старый ответ")
                continue
            failures += 1
            if failures >= model.ENQ_ATTEMPTS:
                raise self._timeout("ENQ")

    def exchange(self, payload: bytes, timeout: float, name: str = "") -> bytes:
        """Send one command payload, return the answer payload (code echo, error, data);
        ``name`` only labels the trace."""
        self.ready()
        frame = encode_frame(payload)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s >> %s %s", self.url, name, mask_password(payload))
        for _ in range(model.COMMAND_RESENDS):
            self._write(frame)
            self.stats.packets_sent += 1
            byte = self._control(model.CONTROL_TIMEOUT)
            if byte == ACK:
                break
            if byte is None:
                raise self._timeout("подтверждение команды")
            self.stats.resent += 1
            log.info("%s: the device refused the frame (%02X); sending it again", self.url, byte)
        else:
            raise FrameError("ККТ не приняла команду (NAK)")
        self.stats.round_trips += 1
        answer = self._read_answer(timeout)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s << %s %s", self.url, name, answer.hex(" "))
        return answer

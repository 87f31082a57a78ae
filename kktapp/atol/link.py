"""The packet layer over one URL (socket://host:5555, /dev/ttyACM0, COM3, loop://; see :mod:`.port`).

:class:`Link` owns the port and the framing. It numbers outgoing packets (0x00..0xDF), keeps
the packets it sent so that it can answer the device's retransmission request (an empty packet
with that ID), asks for a packet again when one arrives broken (an empty packet with the
broken packet's ID), and wraps every OSError/serial error as :class:`~kktapp.errors.LinkError`.
Matching answers to tasks is the driver's job; the link names commands only for the DEBUG wire trace.

Hex dumps go to the DEBUG log with the passwords masked (the access password in every task,
the mode password of 56); nothing is printed.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import serial

from ..errors import DeviceBusy, LinkError
from . import masking, model
from .commands import describe
from .framing import BadPacket, Decoder, Packet, encode_packet
from .port import Port, open_port
from .taskbuf import Request, Status

log = logging.getLogger(__name__)

#: Longest single blocking read; the deadline is checked between reads.
POLL = 0.2


@dataclass
class LinkStats:
    """Counters for benchmarks and the status page."""

    #: Times the host waited for the device after writing (one per write→read turnaround).
    round_trips: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    #: Packets the device asked us to send again / we asked the device to send again.
    resent: int = 0
    resend_requests: int = 0
    bad_packets: int = 0
    #: Tasks (Add) the driver put into the device's buffer.
    tasks: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain dict (for JSON and logs)."""
        return asdict(self)

    def reset(self) -> None:
        """Zero all counters."""
        for name in asdict(self):
            setattr(self, name, 0)


def mask_secrets(data: bytes) -> bytes:
    """Packet DATA with the access password (and any password field of the command) as ``*``."""
    return masking.mask(data)


def _dump(data: bytes) -> str:
    return mask_secrets(data).hex(" ")


def _request_name(data: bytes) -> str:
    """What a host packet asks, with the command's name for an Add: the wire trace's words."""
    try:
        request = Request(data[0])
    except (ValueError, IndexError):
        return "?"
    if request == Request.ADD and len(data) >= 3:
        return f"Add tid={data[2]:02X} flags={data[1]:02X} {describe(data[3:])}"
    if request in (Request.ACK, Request.REQ) and len(data) >= 2:
        return f"{request.name.title()} tid={data[1]:02X}"
    return request.name.title()


def _answer_name(data: bytes) -> str:
    try:
        status = Status(data[0])
    except (ValueError, IndexError):
        return "?"
    return status.name.lower()


class Link:
    """One open port to one device. Not thread-safe: the driver's owner serialises calls."""

    def __init__(self, url: str, *, baudrate: int = 115200, stats: LinkStats | None = None) -> None:
        self.url = url
        self.baudrate = baudrate
        self.stats = stats if stats is not None else LinkStats()
        self._port: Port | None = None
        self._decoder = Decoder()
        self._inbox: deque[Packet] = deque()
        self._next_id = model.ID_MIN
        #: Last packet sent under each ID, for the device's retransmission requests.
        self._sent: dict[int, bytes] = {}
        self._wrote = False
        self._heard = False
        #: For the DEBUG wire trace: what each packet ID and task ID was about.
        self._names: dict[int, str] = {}
        self._task_names: dict[int, str] = {}

    # ------------------------------------------------------------------ open / close

    @property
    def is_open(self) -> bool:
        """The port is open."""
        return self._port is not None

    def open(self) -> None:
        """Open the URL. Refused TCP connections and missing ports raise LinkError."""
        if self._port is not None:
            return
        try:
            self._port = open_port(self.url, baudrate=self.baudrate, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"нет связи с ККТ ({self.url}): {exc}") from exc
        self._decoder = Decoder()
        self._inbox.clear()
        self._sent.clear()
        self._wrote = False
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
        """Close the port and build the error to raise for ``exc``."""
        self.close()
        if not self._heard and _is_peer_close(exc):
            # The device accepted the connection and dropped it before answering anything:
            # that is how a device that already serves a client turns a second one away.
            return DeviceBusy()
        return LinkError(f"связь с ККТ прервана ({doing}): {exc}")

    # ------------------------------------------------------------------ sending

    def _take_id(self) -> int:
        pid = self._next_id
        self._next_id = model.ID_MIN if pid >= model.ID_MAX else pid + 1
        return pid

    def send(self, payloads: Sequence[bytes]) -> list[int]:
        """Send packets with fresh IDs in ONE write; returns their IDs."""
        ids: list[int] = []
        raw = bytearray()
        trace = log.isEnabledFor(logging.DEBUG)
        for data in payloads:
            pid = self._take_id()
            packet = encode_packet(pid, data)
            self._sent[pid] = packet
            raw += packet
            ids.append(pid)
            if trace:
                name = _request_name(data)
                if data[0] == Request.ADD and len(data) >= 3:
                    self._task_names[data[2]] = describe(data[3:])
                self._names[pid] = name
                log.debug("%s >> id=%02X %s: %s", self.url, pid, name, _dump(data))
        self._write(bytes(raw), len(ids))
        return ids

    def _write(self, raw: bytes, packets: int) -> None:
        if self._port is None:
            raise LinkError("нет связи с ККТ (порт закрыт)")
        try:
            self._port.write(raw)
        except (serial.SerialException, OSError) as exc:
            raise self._fail(exc, "запись") from exc
        self._wrote = True
        self.stats.packets_sent += packets
        self.stats.bytes_sent += len(raw)

    # ------------------------------------------------------------------ receiving

    def receive(self, deadline: float) -> Packet:
        """The next good packet from the device; LinkError when ``deadline`` (monotonic) passes.

        Retransmission requests from the device are served here; broken packets are asked
        for again here; neither reaches the caller.
        """
        packet = self.poll(deadline, deadline)
        assert packet is not None
        return packet

    def poll(self, wake: float, deadline: float, linger: float = 0.0) -> Packet | None:
        """As :meth:`receive`, but None (link kept) when ``wake`` passes in silence first.

        ``linger``: when the caller expects several packets in a row, read them together
        (see :meth:`Port.read <kktapp.atol.port.Port.read>`).
        """
        if self._wrote:
            self.stats.round_trips += 1
            self._wrote = False
        while True:
            while self._inbox:
                packet = self._inbox.popleft()
                if packet.data:
                    return packet
                self._resend(packet.id)
            if wake < deadline and time.monotonic() >= wake:
                return None
            self._read_more(min(wake, deadline), deadline, linger)

    def _resend(self, pid: int) -> None:
        raw = self._sent.get(pid)
        if raw is None:
            log.warning("%s: device asked to resend unknown packet %02X", self.url, pid)
            return
        log.info("%s: device asked for packet %02X again", self.url, pid)
        self.stats.resent += 1
        self._write(raw, 1)
        self._wrote = False  # part of the same wait, not a new round trip

    def _read_more(self, until: float, deadline: float, linger: float = 0.0) -> None:
        """Read what arrives before ``until``; LinkError (link closed) once ``deadline`` passed."""
        if self._port is None:
            raise LinkError("нет связи с ККТ (порт закрыт)")
        remaining = until - time.monotonic()
        if remaining <= 0 and until < deadline:
            return
        if remaining <= 0:
            # A late answer would arrive in the middle of the next exchange: start afresh.
            self.close()
            raise LinkError("ККТ не ответила вовремя")
        try:
            chunk = self._port.read(min(POLL, remaining), min(linger, remaining))
        except (serial.SerialException, OSError) as exc:
            raise self._fail(exc, "чтение") from exc
        if not chunk:
            return
        self.stats.bytes_received += len(chunk)
        trace = log.isEnabledFor(logging.DEBUG)
        for event in self._decoder.feed(chunk):
            if isinstance(event, Packet):
                self._heard = True
                self.stats.packets_received += 1
                if trace:
                    if event.id == model.ASYNC_PACKET_ID and len(event.data) > 1:
                        about = self._task_names.get(event.data[1], "")
                    else:
                        about = self._names.get(event.id, "")
                    log.debug("%s << id=%02X %s %s: %s", self.url, event.id, _answer_name(event.data),
                              about, event.data.hex(" "))
                self._inbox.append(event)
            elif isinstance(event, BadPacket):
                self.stats.bad_packets += 1
                log.info("%s: broken packet from the device (id=%s, %s)", self.url,
                         "?" if event.id is None else f"{event.id:02X}", event.reason)
                if event.id is not None:
                    # An empty packet with the broken packet's ID asks the device to send it again.
                    self.stats.resend_requests += 1
                    self._write(encode_packet(event.id, b""), 1)
                    self._wrote = False


def _is_peer_close(exc: BaseException) -> bool:
    """The peer closed or reset the connection (as opposed to a timeout or a local error)."""
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return True
    text = str(exc).lower()
    return "disconnected" in text or "connection reset" in text or "broken pipe" in text

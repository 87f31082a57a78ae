"""ATOL protocol v3 packets, sans-I/O: bytes in, packets out, and back.

``FE | LEN0 | LEN1 | ID | DATA (escaped) | CRC (escaped)`` (atol-protocol.md §1.2):

* LEN counts the unescaped DATA bytes, split 7/7 (``LEN0 = len & 0x7F``, ``LEN1 = len >> 7``);
* inside DATA and CRC, 0xFE is sent as ``FD EE`` and 0xFD as ``FD ED``; LEN and ID never are;
* CRC8 (poly 0x31, init 0xFF, no reflection, no final XOR) covers ID + unescaped DATA.

An unescaped 0xFE therefore always starts a packet, which is how :class:`Decoder` finds its
way back after garbage or a broken packet. No sockets, no clocks: the link feeds bytes in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

STX = 0xFE  # start of packet
ESC = 0xFD  # escape: the next byte says which special byte was meant
ESC_STX = 0xEE  # FD EE stands for FE
ESC_ESC = 0xED  # FD ED stands for FD
#: LEN is 14 bits.
MAX_DATA = 0x3FFF

_ESCAPES = {STX: bytes((ESC, ESC_STX)), ESC: bytes((ESC, ESC_ESC))}
_UNESCAPES = {ESC_STX: STX, ESC_ESC: ESC}


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc8(data: bytes, crc: int = 0xFF) -> int:
    """CRC-8/NRSC-5 (poly 0x31, init 0xFF): "123456789" → 0xF7."""
    for byte in data:
        crc = _CRC_TABLE[crc ^ byte]
    return crc


def escape(data: bytes) -> bytes:
    """Replace FE and FD by their two-byte escapes."""
    if STX not in data and ESC not in data:
        return data
    return b"".join(_ESCAPES.get(b, bytes((b,))) for b in data)


def encode_packet(packet_id: int, data: bytes) -> bytes:
    """One packet on the wire for ``data`` under ``packet_id``."""
    if not 0 <= packet_id <= 0xFF or packet_id == STX:
        raise ValueError(f"bad packet id {packet_id!r}")
    if len(data) > MAX_DATA:
        raise ValueError(f"packet data too long: {len(data)} > {MAX_DATA}")
    crc = crc8(bytes((packet_id,)) + data)
    return bytes((STX, len(data) & 0x7F, len(data) >> 7, packet_id)) + escape(data) + escape(bytes((crc,)))


@dataclass(frozen=True)
class Packet:
    """A packet whose length, escaping and CRC were right. Empty ``data`` = resend request."""

    id: int
    data: bytes


@dataclass(frozen=True)
class BadPacket:
    """Bytes that began a packet but did not make a valid one.

    ``id`` is the packet ID when it was read (the receiver asks for that packet again by
    sending an empty packet with this ID), None when the packet broke before its ID.
    """

    id: int | None
    reason: str


Event = Packet | BadPacket

# Decoder states
_HUNT, _LEN0, _LEN1, _ID, _DATA, _CRC = range(6)


class Decoder:
    """Stream decoder: :meth:`feed` any chunking of the byte stream, get packets and errors back."""

    def __init__(self) -> None:
        self._state = _HUNT
        self._len = 0
        self._id: int | None = None
        self._data = bytearray()
        self._escaped = False
        #: Bytes thrown away while looking for a packet start (statistics, debugging).
        self.garbage = 0

    def _restart(self) -> None:
        self._state = _LEN0
        self._len = 0
        self._id = None
        self._data = bytearray()
        self._escaped = False

    def _fail(self, reason: str, events: list[Event]) -> None:
        log.debug("bad packet id=%s: %s", self._id, reason)
        events.append(BadPacket(self._id, reason))
        self._state = _HUNT

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume ``chunk``; return the packets (and broken packets) it completed, in order."""
        events: list[Event] = []
        for byte in chunk:
            state = self._state
            if byte == STX:
                # An unescaped FE always starts a packet: whatever was in progress is cut short.
                if state not in (_HUNT,):
                    self._fail("packet cut short by a new start byte", events)
                self._restart()
                continue
            if state == _HUNT:
                self.garbage += 1
            elif state == _LEN0:
                if byte & 0x80:
                    self._fail(f"bad length byte {byte:02X}", events)
                    continue
                self._len = byte
                self._state = _LEN1
            elif state == _LEN1:
                if byte & 0x80:
                    self._fail(f"bad length byte {byte:02X}", events)
                    continue
                self._len |= byte << 7
                self._state = _ID
            elif state == _ID:
                self._id = byte
                self._state = _DATA if self._len else _CRC
            else:
                if self._escaped:
                    self._escaped = False
                    if byte not in _UNESCAPES:
                        self._fail(f"bad escape FD {byte:02X}", events)
                        continue
                    byte = _UNESCAPES[byte]
                elif byte == ESC:
                    self._escaped = True
                    continue
                if state == _DATA:
                    self._data.append(byte)
                    if len(self._data) == self._len:
                        self._state = _CRC
                else:
                    assert self._id is not None
                    data = bytes(self._data)
                    if crc8(bytes((self._id,)) + data) != byte:
                        self._fail("bad CRC", events)
                        continue
                    events.append(Packet(self._id, data))
                    self._state = _HUNT
        return events

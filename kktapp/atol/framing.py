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
from typing import NamedTuple

log = logging.getLogger(__name__)

STX = 0xFE  # start of packet
ESC = 0xFD  # escape: the next byte says which special byte was meant
ESC_STX = 0xEE  # FD EE stands for FE
ESC_ESC = 0xED  # FD ED stands for FD
#: LEN is 14 bits.
MAX_DATA = 0x3FFF

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
    table = _CRC_TABLE
    for byte in data:
        crc = table[crc ^ byte]
    return crc


def escape(data: bytes) -> bytes:
    """Replace FE and FD by their two-byte escapes."""
    # FD first: the FD that escaping FE brings in must stay as it is.
    return data.replace(b"\xfd", b"\xfd\xed").replace(b"\xfe", b"\xfd\xee")


def encode_packet(packet_id: int, data: bytes) -> bytes:
    """One packet on the wire for ``data`` under ``packet_id``."""
    if not 0 <= packet_id <= 0xFF or packet_id == STX:
        raise ValueError(f"bad packet id {packet_id!r}")
    size = len(data)
    if size > MAX_DATA:
        raise ValueError(f"packet data too long: {size} > {MAX_DATA}")
    # The CRC runs over ID + DATA: start it from the ID's row instead of joining the two.
    crc = crc8(data, _CRC_TABLE[0xFF ^ packet_id])
    return bytes((STX, size & 0x7F, size >> 7, packet_id)) + escape(data + bytes((crc,)))


class Packet(NamedTuple):
    """A packet whose length, escaping and CRC were right. Empty ``data`` = resend request.

    Immutable like the frozen dataclass it was, at half its cost to build: a receipt reads
    about forty of these.
    """

    id: int
    data: bytes


class BadPacket(NamedTuple):
    """Bytes that began a packet but did not make a valid one.

    ``id`` is the packet ID when it was read (the receiver asks for that packet again by
    sending an empty packet with this ID), None when the packet broke before its ID.
    """

    id: int | None
    reason: str


Event = Packet | BadPacket

# Decoder states: between packets, the three header bytes, then DATA and CRC (escaped).
_HUNT, _LEN0, _LEN1, _ID, _BODY = range(5)


class Decoder:
    """Stream decoder: :meth:`feed` any chunking of the byte stream, get packets and errors back.

    The header goes byte by byte; DATA and CRC are taken a run at a time between escapes
    (``bytes.find``), which is what makes a receipt's answers cheap to read.
    """

    def __init__(self) -> None:
        self._state = _HUNT
        self._len = 0
        self._id: int | None = None
        #: DATA and CRC read so far, unescaped.
        self._data = bytearray()
        #: The last byte of the previous chunk was an ESC: its code comes first in the next one.
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
        chunk = bytes(chunk)
        pos, end = 0, len(chunk)
        # Each pass takes at least one byte, so ``end`` passes are enough: bounded this way, no
        # slip in the position arithmetic could ever spin the link's reader.
        for _ in range(end):
            if pos == end:
                return events
            state = self._state
            if state == _HUNT:
                start = chunk.find(STX, pos)
                if start < 0:
                    self.garbage += end - pos
                    return events
                self.garbage += start - pos
                self._restart()
                pos = start + 1
                if pos + 3 <= end and chunk[pos] < 0x80 and chunk[pos + 1] < 0x80 and chunk[pos + 2] != STX:
                    # The whole header is here (and no STX in it: the length bytes are below 0x80).
                    self._len = chunk[pos] | chunk[pos + 1] << 7
                    self._id = chunk[pos + 2]
                    self._state = _BODY
                    pos += 3
                continue
            byte = chunk[pos]
            if byte == STX:
                # An unescaped FE always starts a packet: whatever was in progress is cut short.
                self._fail("packet cut short by a new start byte", events)
                self._restart()
                pos += 1
            elif state == _BODY:
                pos = self._body(chunk, pos, end, events)
            else:
                pos += 1
                self._header(state, byte, events)
        return events

    def _header(self, state: int, byte: int, events: list[Event]) -> None:
        if state == _ID:
            self._id = byte
            self._state = _BODY
        elif byte & 0x80:
            self._fail(f"bad length byte {byte:02X}", events)
        elif state == _LEN0:
            self._len = byte
            self._state = _LEN1
        else:
            self._len |= byte << 7
            self._state = _ID

    def _body(self, chunk: bytes, pos: int, end: int, events: list[Event]) -> int:
        """Take DATA and CRC bytes from ``chunk[pos:end]`` (no STX at ``pos``); returns the new position."""
        data = self._data
        want = self._len + 1  # DATA, then the CRC byte
        if not data and not self._escaped:
            # The usual packet: all of it in this chunk, nothing escaped. One slice, no copying.
            body = chunk[pos:pos + want]
            if len(body) == want and ESC not in body and STX not in body:
                self._check(body, events)
                return pos + want
        if self._escaped:
            # The previous chunk ended with the ESC: its code comes first here.
            self._escaped = False
            return self._unescape(chunk[pos], pos + 1, want, events)
        # An STX ends the run: the caller reports the packet as cut short.
        stop = chunk.find(STX, pos)
        if stop < 0:
            stop = end
        for _ in range(end):  # a bound only, as in feed: each pass takes a byte or returns
            limit = min(stop, pos + want - len(data))
            esc = chunk.find(ESC, pos, limit)
            if esc < 0:
                data += chunk[pos:limit]
                pos = limit
            elif esc + 1 == stop:
                data += chunk[pos:esc]
                self._escaped = True  # its code is in the next chunk (or is the STX)
                return stop
            else:
                data += chunk[pos:esc]
                pos = self._unescape(chunk[esc + 1], esc + 2, want, events)
                if self._state != _BODY:
                    return pos  # a bad escape, or the packet's last byte
            if len(data) == want:
                self._check(bytes(data), events)
                return pos
            if pos == stop:
                return pos
        return pos  # pragma: no mutate - never reached: every pass takes a byte or returns

    def _unescape(self, code: int, pos: int, want: int, events: list[Event]) -> int:
        """The byte after an ESC (``code``), read before ``pos``: append what it stands for."""
        if code not in _UNESCAPES:
            self._fail(f"bad escape FD {code:02X}", events)
            return pos
        self._data.append(_UNESCAPES[code])
        if len(self._data) == want:
            self._check(bytes(self._data), events)
        return pos

    def _check(self, body: bytes, events: list[Event]) -> None:
        """A whole DATA + CRC: the packet if the CRC is right."""
        assert self._id is not None
        payload = body[:-1]
        if crc8(payload, _CRC_TABLE[0xFF ^ self._id]) != body[-1]:
            self._fail("bad CRC", events)
            return
        events.append(Packet(self._id, payload))
        self._state = _HUNT

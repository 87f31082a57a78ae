"""Shtrih-M frames, sans-I/O: protocol v1 (STX/LEN/LRC with ENQ/ACK/NAK) and protocol v2.

Protocol v1 (shtrih-protocol.md §1.1-1.2) [C: opos PrinterFrame.pas/PrinterProtocol1.pas,
javapos PrinterProtocol_1.java, pyshtrih protocol.py, e-kiosk ShtrihFR.cpp]::

    STX(02) | LEN | payload | LRC       LRC = XOR of LEN and every payload byte

The control bytes ENQ (05), ACK (06) and NAK (15) travel between frames. A 0xFF between frames
is filler that real devices send on TCP at times: it is skipped [C: opos ReadControlChar,
javapos readControlByte, e-kiosk "мусор в TCP-канале"].

Protocol v2 (§1.3) [C: opos PrinterProtocol2.pas; the log in fr_drv_ng #141]::

    8F | stuffed( LEN(2 LE) | FRAME_NO(2 LE) | payload | CRC16(2 LE) )

LEN = payload + 2 (it counts the frame number), CRC-16/CCITT-FALSE over LEN, FRAME_NO and the
payload before stuffing; 0x8F is sent as ``9F 81`` and 0x9F as ``9F 83``. No ENQ/ACK.

No sockets and no clocks here: :mod:`.link` and the emulator feed bytes in.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

STX = 0x02
ENQ = 0x05
ACK = 0x06
NAK = 0x15
#: [C] Filler some devices send on TCP between frames; never part of a frame start.
FILLER = 0xFF
#: [C] LEN is one byte: at most 255 payload bytes (javapos Frame rejects more).
MAX_PAYLOAD = 255
CONTROL_BYTES = frozenset({ENQ, ACK, NAK})


def lrc(data: bytes) -> int:
    """XOR of every byte (LEN and payload): the v1 check byte."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def encode_frame(payload: bytes) -> bytes:
    """One v1 frame for ``payload`` (command code + data, or an answer)."""
    if not payload:
        raise ValueError("empty payload")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload too long: {len(payload)} > {MAX_PAYLOAD}")
    body = bytes((len(payload),)) + bytes(payload)
    return bytes((STX,)) + body + bytes((lrc(body),))


@dataclass(frozen=True)
class Frame:
    """A v1 frame whose LRC was right."""

    payload: bytes


@dataclass(frozen=True)
class BadFrame:
    """A v1 frame with a wrong LRC (the receiver answers NAK)."""

    reason: str


@dataclass(frozen=True)
class Control:
    """A control byte between frames: ENQ, ACK or NAK."""

    byte: int


Event = Frame | BadFrame | Control

_IDLE, _LEN, _BODY, _LRC = range(4)


class Decoder:
    """v1 stream decoder: :meth:`feed` any chunking of bytes, get frames and control bytes back.

    Between frames, STX starts a frame, ENQ/ACK/NAK are reported, 0xFF filler and any other
    byte are skipped (counted in :attr:`skipped`). Inside a frame every byte is data: LEN says
    where it ends, since v1 has no escaping.
    """

    def __init__(self) -> None:
        self._state = _IDLE
        self._len = 0
        self._data = bytearray()
        #: Bytes skipped between frames (0xFF filler and noise).
        self.skipped = 0

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (the per-byte timeout applies)."""
        return self._state != _IDLE

    def reset(self) -> None:
        """Forget a frame in progress (after a timeout inside it)."""
        self._state = _IDLE
        self._data = bytearray()

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume ``chunk``; return what it completed, in order."""
        events: list[Event] = []
        for byte in chunk:
            state = self._state
            if state == _IDLE:
                if byte == STX:
                    self._state = _LEN
                    self._data = bytearray()
                elif byte in CONTROL_BYTES:
                    events.append(Control(byte))
                else:
                    self.skipped += 1
            elif state == _LEN:
                if byte == 0:
                    # No command has an empty payload: this STX was noise.
                    self._state = _IDLE
                    self.skipped += 2
                    continue
                self._len = byte
                self._state = _BODY
            elif state == _BODY:
                self._data.append(byte)
                if len(self._data) == self._len:
                    self._state = _LRC
            else:
                self._state = _IDLE
                body = bytes((self._len,)) + bytes(self._data)
                if lrc(body) == byte:
                    events.append(Frame(bytes(self._data)))
                else:
                    events.append(BadFrame(f"bad LRC {byte:02X}, expected {lrc(body):02X}"))
        return events


# --------------------------------------------------------------------------- protocol v2

V2_STX = 0x8F
V2_ESC = 0x9F
_V2_STUFF = {V2_STX: bytes((V2_ESC, 0x81)), V2_ESC: bytes((V2_ESC, 0x83))}
_V2_UNSTUFF = {0x81: V2_STX, 0x83: V2_ESC}


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): ``b"123456789"`` → 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_v2(frame_no: int, payload: bytes) -> bytes:
    """One v2 frame; an empty payload is the sync frame."""
    if not 0 <= frame_no <= 0xFFFF:
        raise ValueError(f"bad frame number {frame_no}")
    body = (len(payload) + 2).to_bytes(2, "little") + frame_no.to_bytes(2, "little") + bytes(payload)
    body += crc16(body).to_bytes(2, "little")
    return bytes((V2_STX,)) + b"".join(_V2_STUFF.get(b, bytes((b,))) for b in body)


@dataclass(frozen=True)
class V2Frame:
    """A v2 frame whose CRC was right."""

    frame_no: int
    payload: bytes


class V2Decoder:
    """v2 stream decoder. A bad CRC or escape yields a :class:`BadFrame` and a resync on 0x8F."""

    def __init__(self) -> None:
        self._body: bytearray | None = None
        self._escaped = False

    def feed(self, chunk: bytes) -> list[V2Frame | BadFrame]:
        """Consume ``chunk``; return the frames it completed."""
        events: list[V2Frame | BadFrame] = []
        for byte in chunk:
            if byte == V2_STX:
                if self._body:
                    events.append(BadFrame("frame cut short by a new start byte"))
                self._body = bytearray()
                self._escaped = False
                continue
            if self._body is None:
                continue
            if self._escaped:
                self._escaped = False
                if byte not in _V2_UNSTUFF:
                    events.append(BadFrame(f"bad escape 9F {byte:02X}"))
                    self._body = None
                    continue
                byte = _V2_UNSTUFF[byte]
            elif byte == V2_ESC:
                self._escaped = True
                continue
            self._body.append(byte)
            body = self._body
            if len(body) >= 2 and len(body) == 2 + int.from_bytes(body[:2], "little") + 2:
                self._body = None
                if crc16(bytes(body[:-2])) != int.from_bytes(body[-2:], "little"):
                    events.append(BadFrame("bad CRC"))
                else:
                    events.append(V2Frame(int.from_bytes(body[2:4], "little"), bytes(body[4:-2])))
        return events

"""The packet decoder against the protocol's rules read one byte at a time.

:class:`kktapp.atol.framing.Decoder` takes DATA a run at a time between escapes, for speed.
Here the same rules (atol-protocol.md §1.2) are written the plainest way, one byte and one
state at a time, and both must agree on ANY byte stream cut into ANY chunks: the same packets,
the same broken packets with the same IDs and reasons, in the same order, and the same count
of bytes thrown away. The streams mix good packets, their broken copies (cut, bit-flipped,
bad escapes, bad length bytes) and garbage, so that every path of the decoder is taken.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kktapp.atol.framing import BadPacket, Decoder, Packet, crc8, encode_packet

STX, ESC = 0xFE, 0xFD
UNESCAPE = {0xEE: STX, 0xED: ESC}


class ReferenceDecoder:
    """The rules, one byte at a time."""

    def __init__(self) -> None:
        self.state = "hunt"
        self.garbage = 0
        self.length = 0
        self.id: int | None = None
        self.data = bytearray()
        self.escaped = False

    def fail(self, reason: str, events: list) -> None:
        events.append(BadPacket(self.id, reason))
        self.state = "hunt"

    def feed(self, chunk: bytes) -> list:
        events: list = []
        for byte in chunk:
            if byte == STX:
                if self.state != "hunt":
                    self.fail("packet cut short by a new start byte", events)
                self.state, self.length, self.id, self.data, self.escaped = "len0", 0, None, bytearray(), False
            elif self.state == "hunt":
                self.garbage += 1
            elif self.state in ("len0", "len1"):
                if byte >= 0x80:
                    self.fail(f"bad length byte {byte:02X}", events)
                elif self.state == "len0":
                    self.length, self.state = byte, "len1"
                else:
                    self.length, self.state = self.length + byte * 128, "id"
            elif self.state == "id":
                self.id, self.state = byte, "body"
            elif self.escaped:
                self.escaped = False
                if byte in UNESCAPE:
                    self.take(UNESCAPE[byte], events)
                else:
                    self.fail(f"bad escape FD {byte:02X}", events)
            elif byte == ESC:
                self.escaped = True
            else:
                self.take(byte, events)
        return events

    def take(self, byte: int, events: list) -> None:
        self.data.append(byte)
        if len(self.data) == self.length + 1:
            body, crc = bytes(self.data[:-1]), self.data[-1]
            if crc8(bytes([self.id]) + body) == crc:
                events.append(Packet(self.id, body))
                self.state = "hunt"
            else:
                self.fail("bad CRC", events)


def _broken(raw: bytes, how: int, at: int) -> bytes:
    """A damaged copy of a packet on the wire."""
    at %= len(raw)
    if how == 0:
        return raw[:at]  # cut (the next start byte cuts it short)
    if how == 1:
        return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:]  # one bit flipped
    if how == 2:
        return raw[:max(at, 4)] + b"\xfd\x00" + raw[max(at, 4):]  # an escape that means nothing
    return raw[:1] + b"\x80" + raw[2:]  # a length byte with its high bit set


pieces = st.one_of(
    st.tuples(st.integers(0, 0xFD), st.binary(max_size=40)).map(lambda p: encode_packet(*p)),
    st.tuples(st.integers(0, 0xFD), st.lists(st.sampled_from([0xFE, 0xFD, 0xEE, 0xED, 0x00]), max_size=12))
    .map(lambda p: encode_packet(p[0], bytes(p[1]))),
    st.tuples(st.integers(0, 0xFD), st.binary(max_size=20), st.integers(0, 3), st.integers(0, 60))
    .map(lambda p: _broken(encode_packet(p[0], p[1]), p[2], p[3])),
    st.binary(max_size=12),
    st.lists(st.sampled_from([0xFE, 0xFD, 0xEE, 0xED, 0x80, 0x00]), max_size=8).map(bytes),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=10), st.lists(st.integers(1, 30), max_size=40))
def test_decoder_agrees_with_the_byte_by_byte_rules(parts, cuts):
    stream = b"".join(parts)
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(stream[pos:pos + size])
        pos += size
    chunks.append(stream[pos:])
    fast, slow = Decoder(), ReferenceDecoder()
    got = [event for chunk in chunks for event in fast.feed(chunk)]
    assert got == slow.feed(stream)
    assert fast.garbage == slow.garbage


def test_escape_split_across_chunks_then_a_start_byte():
    # FD ends one chunk, FE begins the next: the packet was cut short, the new one decodes.
    raw = encode_packet(5, b"\x01\x02")
    decoder = Decoder()
    assert decoder.feed(raw[:5] + b"\xfd") == []
    assert decoder.feed(raw) == [BadPacket(5, "packet cut short by a new start byte"), Packet(5, b"\x01\x02")]


def test_each_byte_alone():
    raw = encode_packet(0x21, b"\xfe\x10\xfd") + b"\x00\x01" + encode_packet(0x22, b"")
    decoder = Decoder()
    events = [event for byte in raw for event in decoder.feed(bytes([byte]))]
    assert events == [Packet(0x21, b"\xfe\x10\xfd"), Packet(0x22, b"")]
    assert decoder.garbage == 2


def test_long_packet_with_its_header_cut_byte_by_byte():
    # LEN1 counts 128s (7 + 7 bits): read the slow way when the header comes in pieces.
    raw = encode_packet(0x31, bytes(range(256)) + bytes(44))
    assert raw[1:3] == bytes((300 & 0x7F, 300 >> 7))
    decoder = Decoder()
    events = [event for i in range(0, len(raw), 2) for event in decoder.feed(raw[i:i + 2])]
    assert events == [Packet(0x31, bytes(range(256)) + bytes(44))]


def test_escaped_crc_split_between_the_escape_and_its_code():
    # [atol-protocol.md §1.2] FE 05 00 F0 A6 57 55 00 00 FD EE: the CRC is FE, sent escaped.
    raw = bytes.fromhex("FE 05 00 F0 A6 57 55 00 00 FD EE")
    decoder = Decoder()
    assert decoder.feed(raw[:-1]) == []
    assert decoder.feed(raw[-1:]) == [Packet(0xF0, bytes.fromhex("A6 57 55 00 00"))]
